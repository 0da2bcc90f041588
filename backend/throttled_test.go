package backend_test

import (
	"errors"
	"testing"
	"time"

	"github.com/krakenctl/krakenctl/backend"
)

func TestThrottledMatchesBothErrors(t *testing.T) {
	store := errors.New("s3: PUT library/x/abc: 503 SlowDown")
	err := error(&backend.Throttled{RetryAfter: 2 * time.Second, Err: store})
	if !errors.Is(err, backend.ErrThrottled) || !errors.Is(err, store) {
		t.Fatalf("errors.Is: throttled %v, store's error %v", errors.Is(err, backend.ErrThrottled), errors.Is(err, store))
	}
	var th *backend.Throttled
	if !errors.As(err, &th) || th.RetryAfter != 2*time.Second {
		t.Fatalf("errors.As: %v", th)
	}
	if got, want := err.Error(), "s3: PUT library/x/abc: 503 SlowDown (throttled; retry after 2s)"; got != want {
		t.Fatalf("Error() = %q, want %q", got, want)
	}
	if errors.Is(errors.New("other"), backend.ErrThrottled) {
		t.Fatal("an unrelated error matched ErrThrottled")
	}
}
