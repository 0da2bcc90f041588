package gcs_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain checks that no goroutine outlives the tests, above all the writers of abandoned
// uploads. The client's HTTP transport is its own (it carries the credentials and Google's
// mTLS and HTTP/2 settings) and storage.Client.Close does not close its idle keep-alive
// connections, whose loops end with the idle timeout; those are ignored.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreAnyFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
	)
}
