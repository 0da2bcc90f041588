package buildindex

// WaitObject exposes waitObject to the package's external tests (the Raft cluster tests, which
// assemble their nodes with server/cluster and so cannot live in this package).
var WaitObject = waitObject
