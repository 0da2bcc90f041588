// Package agent implements the agent role: one agent runs on every host, downloads blobs
// through the peer-to-peer swarm (swarm/scheduler, with the trackers found through
// swarm/announce) into its local content-addressed store, serves them to the host's clients
// while they are still downloading, and then seeds them to other hosts for a while.
//
// A Server is built with New from a Config and Deps (its listeners, logger, metrics registry)
// and run with Run. It serves three APIs on one listener: the blob API (blobs.go, the shape of
// the origins' blob API), the pull side of the OCI distribution API at /v2/ (server/registry's
// Handler over ociReader, in oci.go: content through the swarm, tags and links through the
// build-index), and the swarm's statistics and events (swarm.go). What each answers, including
// every error status, is specified in docs/agent.md.
package agent
