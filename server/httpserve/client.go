package httpserve

import (
	"context"
	"net"
	"net/http"
	"time"
)

// Client defaults.
const (
	// DefaultDialTimeout bounds connecting to another component, so an unreachable one is
	// given up on (and the next one tried) promptly.
	DefaultDialTimeout = 5 * time.Second
	// DefaultTLSHandshakeTimeout bounds the TLS handshake once TLS is configured.
	DefaultTLSHandshakeTimeout = 10 * time.Second
	// DefaultResponseHeaderTimeout bounds the wait for a response's headers after the request
	// was sent. Calls that legitimately wait longer (an origin pulling a blob from storage
	// before it answers) raise it in ClientOptions.
	DefaultResponseHeaderTimeout = 60 * time.Second
	// DefaultExpectContinueTimeout is how long a request with "Expect: 100-continue" waits for
	// the server's go-ahead before sending its body anyway.
	DefaultExpectContinueTimeout = 5 * time.Second
	// DefaultIdleConnTimeout closes kept-alive connections nobody used for this long.
	DefaultIdleConnTimeout = 90 * time.Second
	// DefaultMaxIdleConnsPerHost caps the kept-alive connections to one peer.
	DefaultMaxIdleConnsPerHost = 16
	// DefaultMaxIdleConns caps the kept-alive connections in all.
	DefaultMaxIdleConns = 256
)

// ClientOptions tune NewClient; the zero value gives the defaults above. A negative duration
// disables that timeout (ResponseHeaderTimeout < 0: wait for headers as long as the request's
// context allows).
type ClientOptions struct {
	DialTimeout           time.Duration
	TLSHandshakeTimeout   time.Duration
	ResponseHeaderTimeout time.Duration
	ExpectContinueTimeout time.Duration
	IdleConnTimeout       time.Duration
	MaxIdleConnsPerHost   int
	MaxIdleConns          int
	// DialTLS, when set, makes the client speak TLS to every component: it dials every
	// connection (with DialTimeout as its net.Dialer's timeout; pki.Provider.Dialer fits), and
	// a request for an http:// URL goes out as https://. Links between components are all TLS
	// or all plain text, so no URL built anywhere can leak a request in plain text.
	DialTLS func(d *net.Dialer) func(ctx context.Context, network, addr string) (net.Conn, error)
	// LocalAddr, when set, is the source address of every connection (a host with several
	// addresses talking from the one it announces).
	LocalAddr net.Addr
}

// NewClient returns the HTTP client for calls between components. It has no overall timeout,
// because bodies can be large; dials, handshakes and response headers are bounded, and so is
// the pool of idle connections. Whoever builds a client closes its idle connections when done
// (CloseIdleConnections); a role's skeleton does that at shutdown.
func NewClient(o ClientOptions) *http.Client {
	if o.MaxIdleConnsPerHost <= 0 {
		o.MaxIdleConnsPerHost = DefaultMaxIdleConnsPerHost
	}
	if o.MaxIdleConns <= 0 {
		o.MaxIdleConns = DefaultMaxIdleConns
	}
	dialer := &net.Dialer{
		Timeout:   pick(o.DialTimeout, DefaultDialTimeout),
		KeepAlive: 30 * time.Second,
		LocalAddr: o.LocalAddr,
	}
	tr := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           dialer.DialContext,
		TLSHandshakeTimeout:   pick(o.TLSHandshakeTimeout, DefaultTLSHandshakeTimeout),
		ResponseHeaderTimeout: pick(o.ResponseHeaderTimeout, DefaultResponseHeaderTimeout),
		ExpectContinueTimeout: pick(o.ExpectContinueTimeout, DefaultExpectContinueTimeout),
		IdleConnTimeout:       pick(o.IdleConnTimeout, DefaultIdleConnTimeout),
		MaxIdleConns:          o.MaxIdleConns,
		MaxIdleConnsPerHost:   o.MaxIdleConnsPerHost,
	}
	if o.DialTLS == nil {
		return &http.Client{Transport: tr}
	}
	// Through an HTTP proxy the TLS dial would be bypassed; components talk directly.
	tr.Proxy = nil
	tr.DialTLSContext = o.DialTLS(dialer)
	return &http.Client{Transport: &upgrade{tr}}
}

// upgrade sends http:// requests as https://.
type upgrade struct{ *http.Transport }

func (u *upgrade) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.URL.Scheme == "http" {
		// A shallow copy with its own URL: RoundTrip must not change the caller's request, and
		// a deep Clone (headers included) on every call between components costs for nothing.
		u := *r.URL
		u.Scheme = "https"
		shallow := *r
		shallow.URL = &u
		r = &shallow
	}
	return u.Transport.RoundTrip(r)
}
