// Package agent implements the agent role: one agent runs on every host, downloads blobs
// through the peer-to-peer swarm (swarm/scheduler, with the trackers found through
// swarm/announce) into its local content-addressed store, serves them to the host's clients
// while they are still downloading, and then seeds them to other hosts for a while.
//
// # Blob API
//
// GET and HEAD /namespace/{ns}/blobs/{digest} have the shape of the origins' blob API
// (server/api.BlobPath), so the same clients work against either. The first request for a blob
// starts its download; concurrent and later requests join it (one download per blob however
// many clients ask). HEAD answers the size from the blob's metainfo without waiting for any
// bytes. GET sends the response headers as soon as the first requested byte is verified and
// then streams each piece as it is verified, in order, straight from the file (sendfile);
// the last byte of the blob is released only after the whole blob's digest is checked.
//
// GET honours one byte range (Range: bytes=a-b, a- or -n) with 206 and Content-Range, and
// answers a range that starts past the end with 416 and Content-Range: bytes */SIZE. A Range
// header with several ranges, or a unit other than bytes, is ignored and the whole blob is sent
// with 200, as RFC 9110 allows.
//
// Errors use the OCI error body (server/registry): a malformed digest is 400 DIGEST_INVALID,
// a malformed namespace 400 NAME_INVALID, a blob the trackers do not know 404 BLOB_UNKNOWN,
// no reachable tracker 503 UNAVAILABLE. A download that fails after the response headers were
// sent aborts the connection, so a client sees a truncated transfer, never a short 200 that
// looks complete.
//
// # Registry API
//
// /v2/ serves the pull side of the OCI distribution API (server/registry's handler), for docker
// (docker pull 127.0.0.1:16000/repo:tag) and for containerd as a mirror
// (GET /v2/<repo>/manifests/<ref>?ns=docker.io). The repository is the swarm namespace.
//
//   - Blobs and manifests by sha256 digest come through the swarm, exactly as the blob API's;
//     blob GETs honour Range and stream while the download runs, HEAD starts the download.
//   - Tags are resolved on the build-index (the config's build_index, tried in order) with a
//     linearizable read on every request, never cached: a pull sees the tag the last
//     acknowledged push set. Manifest bytes are verified against their digest and kept in a
//     small in-memory cache by digest (content is immutable).
//   - sha512 digests are resolved to the SHA-256 the content is stored under through the
//     repository's blob/ and manifest/ links on the build-index (registry.BlobLink); tags/list,
//     _catalog and referrers read the build-index as well.
//   - Every write method answers 405 UNSUPPORTED: agents are read-only; push to the proxy.
//
// Without build_index, by-digest (sha256) pulls still work, and every request that needs the
// build-index (a tag, a sha512 digest, a listing, referrers) answers 503 UNAVAILABLE with a
// message naming the build_index key. A build-index that cannot be reached, or whose every
// node answers 5xx, is 503 UNAVAILABLE too; an unknown tag or manifest is 404 MANIFEST_UNKNOWN,
// an unknown blob 404 BLOB_UNKNOWN.
//
// # Swarm API
//
// GET /swarm/torrents returns the scheduler's per-blob statistics as a JSON array
// (api.TorrentStats); GET /swarm/events streams scheduler events (api.Event) until
// the client goes away, as newline-delimited JSON, or as server-sent events when the request
// accepts text/event-stream. Both take an optional ?digest= filter.
//
// Every agent also serves /health, /readyz, /metrics and /debug/pprof (server/admin).
package agent
