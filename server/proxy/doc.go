// Package proxy implements the proxy role: the OCI distribution API (spec v1.1) for builders,
// with the full push API (monolithic, chunked and streamed uploads, cross-repository mounts,
// manifests, tags, deletes) and the pull side (manifests, blobs with Range, tags, catalog,
// referrers). The protocol is server/registry's Handler; this package supplies its storage,
// Registry, which keeps nothing itself:
//
//   - Blob and manifest bytes live on the origins, in namespace = repository, always under
//     their SHA-256 digest. An upload session is the session of one origin, relayed chunk by
//     chunk; its id names that origin, so any proxy configured with the same origins can
//     continue it. The committing origin verifies the digest (sha256 or sha512) and copies
//     the blob to its owners before the proxy answers.
//   - What a repository holds is recorded on the build-index as per-repository links next to
//     the tags (registry.BlobLink and friends): blob/<d> and manifest/<d> map the digest the
//     client used to the SHA-256 the bytes are stored under, and referrer/<subject>/<d> lists
//     the manifests whose subject is <subject>. Links are read linearizably, so a blob or
//     manifest is visible through every proxy as soon as its push is acknowledged.
//   - Links are positive: a blob never pushed to (or mounted into) repository R answers 404 in
//     R even when the origins hold it for another repository, and a manifest is accepted only
//     when R holds everything it references (MANIFEST_BLOB_UNKNOWN otherwise, with nothing
//     stored).
//   - Deletes remove links (and, for a manifest, its referrer link and the tags pointing at
//     it); the bytes stay on the origins and in storage, where other repositories may share
//     them, until `krakenctl gc` (server/gc) collects what nothing references.
//   - Before a manifest is linked, every blob it references is touched on its first owner
//     (marked used now, pulled back from storage if need be), so a garbage collection that
//     started earlier keeps it; a blob collected meanwhile fails the push with
//     MANIFEST_BLOB_UNKNOWN before anything is linked (docs/gc.md).
//
// A mount without from= mounts nothing: it starts an upload, as the spec allows, rather than
// link a blob of whatever repository holds it.
//
// With an auth: section in its config, every request passes server/auth's Guard first: htpasswd
// users and tokens, per-repository rules, 401 UNAUTHORIZED and 403 DENIED, a catalog filtered
// to what the caller may pull. Without one, the API is open to anyone who reaches it.
//
// With a seed: section, the proxy preheats images (server/seed): every manifest pushed (with
// seed.on_push) and every manifest push announced by a registry notification (POST
// /notifications, distribution's envelope) queues a seed of repo@digest. The queue is bounded
// and drained by one worker in Run; a full queue drops the seed and counts it, so seeding never
// slows or fails a push and a flood of notifications grows neither memory nor work. Behind
// auth, a notification needs push on every repository whose manifest it announces.
//
// A tag that points at a sha256 manifest without a manifest/ link (set with `krakenctl tag
// put` on content pushed without the proxy) is served by reading the manifest from the origins
// directly.
package proxy
