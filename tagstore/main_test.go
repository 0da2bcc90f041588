package tagstore_test

import (
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// awaitFuture waits on a Raft future. Raft leaves a future unresolved when it shuts down
	// with the entry committed but still queued for the FSM; the waiting goroutine then stays
	// blocked (documented on awaitFuture). Tests that kill nodes under load can hit that.
	goleak.VerifyTestMain(m, goleak.IgnoreAnyFunction("github.com/krakenctl/krakenctl/tagstore.awaitFuture"))
}
