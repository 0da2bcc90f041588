package tui

import (
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
)

func TestFormat(t *testing.T) {
	for in, want := range map[float64]string{
		0: "0 B", 512: "512 B", 1024: "1.00 KiB", 1536: "1.50 KiB", 10 * 1024: "10.0 KiB",
		412 * mib: "412 MiB", 3 << 30: "3.00 GiB", -2048: "-2.00 KiB", math.NaN(): "?",
	} {
		assert.Equal(t, want, FormatBytes(in), "%v", in)
	}
	assert.Equal(t, "45.0 MiB/s", FormatRate(45*mib))
	for in, want := range map[time.Duration]string{
		0: "-", -time.Second: "-", 400 * time.Millisecond: "<1s", 45 * time.Second: "45s",
		185 * time.Second: "3m05s", 2*time.Hour + 10*time.Minute: "2h10m", 76 * time.Hour: "3d4h",
	} {
		assert.Equal(t, want, FormatDuration(in), "%v", in)
	}
	assert.Equal(t, "1m35s", FormatSeconds(95))
	assert.Equal(t, "-", FormatSeconds(0))
	assert.Equal(t, "∞", FormatSeconds(1e300))
	assert.Equal(t, "dc383e6cb34a", ShortDigest(testDigest(3)))
	assert.Equal(t, "abc", ShortDigest("sha256:abc"))
	assert.Equal(t, "█████░░░░░", bar(0.5, 10))
	assert.Equal(t, "░░░░", bar(-1, 4))
	assert.Equal(t, "████", bar(7, 4))
	assert.Equal(t, "ab…", fit("abcdef", 3))
	assert.Equal(t, "ab  ", fit("ab", 4))
	assert.Empty(t, fit("ab", 0))
}
