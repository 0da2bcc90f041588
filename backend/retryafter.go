package backend

import (
	"net/http"
	"strconv"
	"strings"
	"time"
)

// maxRetryAfter bounds what ParseRetryAfter returns: a store asking for more is asking for
// something no retry policy here waits for, and the bound keeps the arithmetic from overflowing.
const maxRetryAfter = 24 * time.Hour

// ParseRetryAfter reads an HTTP Retry-After header value (RFC 9110 §10.2.3: delay-seconds or
// an HTTP-date, taken relative to now) for Throttled.RetryAfter. It returns 0 for an empty,
// malformed or past value, and at most 24 hours.
func ParseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	var d time.Duration
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs <= 0 {
			return 0
		}
		if secs > int64(maxRetryAfter/time.Second) {
			return maxRetryAfter
		}
		d = time.Duration(secs) * time.Second
	} else if t, err := http.ParseTime(v); err == nil {
		d = t.Sub(now)
	}
	return min(max(d, 0), maxRetryAfter)
}

// ThrottledStatus reports whether an HTTP status is a store asking to slow down: 429 Too Many
// Requests, and 503 Service Unavailable, which RFC 9110 defines as a temporary overload that
// "will likely be alleviated after some delay" (and which S3 answers as SlowDown).
func ThrottledStatus(status int) bool {
	return status == http.StatusTooManyRequests || status == http.StatusServiceUnavailable
}
