package backend_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/krakenctl/krakenctl/backend"
)

func TestParseRetryAfter(t *testing.T) {
	now := time.Date(2026, 12, 8, 3, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		v    string
		want time.Duration
	}{
		{"", 0},
		{"7", 7 * time.Second},
		{" 120 ", 2 * time.Minute},
		{"0", 0},
		{"-3", 0},
		{"soon", 0},
		{"99999999999999999", 24 * time.Hour},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second},
		{now.Add(-time.Minute).Format(http.TimeFormat), 0},
		{now.Add(72 * time.Hour).Format(http.TimeFormat), 24 * time.Hour},
	} {
		if got := backend.ParseRetryAfter(tc.v, now); got != tc.want {
			t.Errorf("ParseRetryAfter(%q) = %s, want %s", tc.v, got, tc.want)
		}
	}
}

func TestThrottledStatus(t *testing.T) {
	for status, want := range map[int]bool{429: true, 503: true, 500: false, 502: false, 404: false, 200: false} {
		if got := backend.ThrottledStatus(status); got != want {
			t.Errorf("ThrottledStatus(%d) = %v", status, got)
		}
	}
}
