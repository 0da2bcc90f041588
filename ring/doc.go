// Package ring places content-addressed blobs on the origin cluster.
//
// Every origin, proxy and tracker that knows the same member list computes the same placement
// without talking to anyone: for a key (by convention the blob's full digest string,
// "sha256:…"), Rank orders the members by rendezvous (highest random weight) hashing, and the
// first R members of that order are the key's nominal locations. Rendezvous hashing is stable:
// adding or removing one member moves only the keys whose top R that member enters or leaves,
// and every member owns an even share of the key space.
//
// A Ring adds health on top of the pure placement. It actively checks every member every
// HealthInterval (see Checker and HTTPChecker), marks a member down after FailThreshold
// consecutive failed checks and up again after PassThreshold consecutive successes, and
// answers Owners(key) with the first R healthy members in rank order, so a dead member's share
// moves to the members ranked right after it and comes back when it recovers. Subscribers are
// told about every flip so an origin can repair a returning member.
//
// The weight function (FNV-1a 64 over member+"\x00"+key, finished with the MurmurHash3 64-bit
// finalizer) is part of the cluster's contract: all processes must agree on it, and changing it
// reshuffles every key. The package's tests pin it.
package ring
