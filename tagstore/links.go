package tagstore

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
)

// Links are per-repository records (repository, name) -> digest kept next to the tags: which
// blobs and manifests an OCI repository holds, and the referrers of its manifests. They are
// replicated, snapshotted, exported, imported and fed to Changes exactly as tags are, but
// never appear in Tags. A link's name is "<kind>/<key>":
//
//	blob/<digest>
//	manifest/<digest>
//	referrer/<subject digest>/<digest>
//
// where every digest is a sha256 or sha512 digest (ValidateDigest). The store checks only this
// grammar; what the value means is the caller's business.
//
// Inside the store a link is an entry of the tag tree whose name is LinkPrefix followed by the
// link's name. No tag can start with LinkPrefix, and it sorts after every character a tag may
// hold, so a repository's links are one range right after its tags. Export, Import and Changes
// carry links in that stored form (LinkKey, LinkName convert).

// Link kinds (the part of a link name before the first "/").
const (
	LinkKindBlob     = "blob"
	LinkKindManifest = "manifest"
	LinkKindReferrer = "referrer"
)

// LinkPrefix starts the stored name of every link (see LinkKey). "~" is not in the tag grammar
// and sorts after every character that is.
const LinkPrefix = "~"

// MaxLinkNameLen is the longest link name accepted (a referrer link between two sha512
// digests is 281 characters).
const MaxLinkNameLen = 300

// Link is a link's current value.
type Link struct {
	Repo string
	// Name is the link's name ("blob/sha256:...").
	Name   string
	Digest digest.Digest
	// Index is the Raft log index of the change that set this value; it only grows.
	Index uint64
	// Updated is the leader's clock when the value was set (for an imported link, the time
	// recorded where it was imported from).
	Updated time.Time
}

// LinkKey returns the name under which the link called name is stored, and under which
// Export, Import and Changes carry it in Tag.Name.
func LinkKey(name string) string { return LinkPrefix + name }

// LinkName reports whether key, a Tag.Name from Export or Changes, is a stored link, and
// returns the link's name.
func LinkName(key string) (string, bool) { return strings.CutPrefix(key, LinkPrefix) }

// IsLink reports whether t, from Export or Changes, is a link rather than a tag.
func (t Tag) IsLink() bool { return strings.HasPrefix(t.Name, LinkPrefix) }

// AsLink converts a stored link (t.IsLink()) to a Link.
func (t Tag) AsLink() Link {
	name, _ := LinkName(t.Name)
	return Link{Repo: t.Repo, Name: name, Digest: t.Digest, Index: t.Index, Updated: t.Updated}
}

// linkKinds maps each kind to the number of digests its key holds.
var linkKinds = map[string]int{LinkKindBlob: 1, LinkKindManifest: 1, LinkKindReferrer: 2}

// LinkDigests returns how many digests the key of a link of kind holds: one, two for a
// referrer, 0 for an unknown kind.
func LinkDigests(kind string) int { return linkKinds[kind] }

// ParseLinkName splits a link name into its kind and the digests of its key (one, or two for a
// referrer: subject, then referrer). The error wraps ErrInvalid and names the bad part; when
// the bad part is a digest of a name of the right shape, ErrInvalidDigest too.
func ParseLinkName(name string) (kind string, keys []digest.Digest, err error) {
	if name == "" {
		return "", nil, fmt.Errorf("%w link name: empty", ErrInvalid)
	}
	if len(name) > MaxLinkNameLen {
		return "", nil, fmt.Errorf("%w link name %.40q...: %d characters, the limit is %d", ErrInvalid, name, len(name), MaxLinkNameLen)
	}
	kind, rest, slash := strings.Cut(name, "/")
	want, ok := linkKinds[kind]
	if !ok {
		return "", nil, fmt.Errorf("%w link name %q: kind %q is not blob, manifest or referrer", ErrInvalid, name, kind)
	}
	parts := strings.Split(rest, "/")
	if !slash || len(parts) != want {
		return "", nil, fmt.Errorf("%w link name %q: a %s link is %s", ErrInvalid, name, kind, linkShape(kind))
	}
	keys = make([]digest.Digest, len(parts))
	for i, p := range parts {
		if err := ValidateDigest(digest.Digest(p)); err != nil {
			return "", nil, fmt.Errorf("link name %q: %w", name, err)
		}
		keys[i] = digest.Digest(p)
	}
	return kind, keys, nil
}

func linkShape(kind string) string {
	if kind == LinkKindReferrer {
		return "referrer/<subject digest>/<digest>"
	}
	return kind + "/<digest>"
}

// ValidateLinkName reports whether name is a link name (see ParseLinkName).
func ValidateLinkName(name string) error {
	_, _, err := ParseLinkName(name)
	return err
}

// ValidateLinkPrefix reports whether prefix can start a link name: a kind and "/", then the
// beginning of a key ("blob/", "blob/sha256:ab", "referrer/<digest>/" are all valid). The error
// wraps ErrInvalid, and ErrInvalidDigest when the bad part is a digest or its beginning.
func ValidateLinkPrefix(prefix string) error {
	kind, rest, ok := strings.Cut(prefix, "/")
	want, known := linkKinds[kind]
	if !ok || !known {
		return fmt.Errorf("%w link prefix %q: must start with blob/, manifest/ or referrer/", ErrInvalid, prefix)
	}
	if len(prefix) > MaxLinkNameLen {
		return fmt.Errorf("%w link prefix %.40q...: %d characters, the limit is %d", ErrInvalid, prefix, len(prefix), MaxLinkNameLen)
	}
	parts := strings.Split(rest, "/")
	if len(parts) > want {
		return fmt.Errorf("%w link prefix %q: a %s link is %s", ErrInvalid, prefix, kind, linkShape(kind))
	}
	for _, p := range parts[:len(parts)-1] {
		if err := ValidateDigest(digest.Digest(p)); err != nil {
			return fmt.Errorf("link prefix %q: %w", prefix, err)
		}
	}
	if last := parts[len(parts)-1]; !isDigestPrefix(last) {
		return digestError{fmt.Errorf("%w link prefix %q: %q does not start a sha256 or sha512 digest", ErrInvalid, prefix, last)}
	}
	return nil
}

// isDigestPrefix reports whether s starts some valid sha256 or sha512 digest.
func isDigestPrefix(s string) bool {
	alg, hex, colon := strings.Cut(s, ":")
	if !colon {
		return strings.HasPrefix(string(digest.SHA256), alg) || strings.HasPrefix(string(digest.SHA512), alg)
	}
	var size int
	switch digest.Algorithm(alg) {
	case digest.SHA256:
		size = 64
	case digest.SHA512:
		size = 128
	default:
		return false
	}
	if len(hex) > size {
		return false
	}
	for _, c := range []byte(hex) {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// validateLink checks a repository and link name together.
func validateLink(repo, name string) error {
	if err := ValidateRepository(repo); err != nil {
		return err
	}
	return ValidateLinkName(name)
}

// validateEntry checks an entry of Import: a tag, or a link in its stored form.
func validateEntry(repo, name string) error {
	if link, ok := LinkName(name); ok {
		return validateLink(repo, link)
	}
	return validateRef(repo, name)
}

// PutLink sets link name of repo to d and returns the new value. Only the leader accepts it;
// the write has the guarantees and errors of Put.
func (s *Store) PutLink(ctx context.Context, repo, name string, d digest.Digest) (Link, error) {
	if err := validateLink(repo, name); err != nil {
		return Link{}, fmt.Errorf("put link: %w", err)
	}
	if err := ValidateDigest(d); err != nil {
		return Link{}, fmt.Errorf("put link %s %s: %w", repo, name, err)
	}
	// A put command with the stored name: the log format is unchanged.
	res, err := s.apply(ctx, cmdPut, "put", putCmd{Repo: repo, Tag: LinkKey(name), Digest: d, Time: time.Now().UTC()})
	if err != nil {
		return Link{}, fmt.Errorf("put link %s %s: %w", repo, name, err)
	}
	return res.tag.AsLink(), nil
}

// DeleteLink removes link name of repo and returns the value it had; ErrNotFound when it does
// not exist at the moment the delete is applied. Only the leader accepts it.
func (s *Store) DeleteLink(ctx context.Context, repo, name string) (Link, error) {
	if err := validateLink(repo, name); err != nil {
		return Link{}, fmt.Errorf("delete link: %w", err)
	}
	res, err := s.apply(ctx, cmdDelete, "delete", deleteCmd{Repo: repo, Tag: LinkKey(name), Time: time.Now().UTC()})
	if err != nil {
		return Link{}, fmt.Errorf("delete link %s %s: %w", repo, name, err)
	}
	if !res.found {
		return Link{}, fmt.Errorf("delete link %s %s: %w", repo, name, ErrNotFound)
	}
	return res.tag.AsLink(), nil
}

// GetLink returns the value of link name of repo, or ErrNotFound.
func (s *Store) GetLink(ctx context.Context, repo, name string, c Consistency) (Link, error) {
	if err := validateLink(repo, name); err != nil {
		return Link{}, fmt.Errorf("get link: %w", err)
	}
	if err := s.beginRead(ctx, c); err != nil {
		return Link{}, fmt.Errorf("get link %s %s: %w", repo, name, err)
	}
	s.mu.RLock()
	t, ok := s.st.get(repo, LinkKey(name))
	s.mu.RUnlock()
	if !ok {
		return Link{}, fmt.Errorf("get link %s %s: %w", repo, name, ErrNotFound)
	}
	return t.AsLink(), nil
}

// Links returns every link of repo whose name starts with prefix (ValidateLinkPrefix), in
// lexical order of name. A repository without such links returns none, and no error.
func (s *Store) Links(ctx context.Context, repo, prefix string, c Consistency) ([]Link, error) {
	if err := ValidateRepository(repo); err != nil {
		return nil, fmt.Errorf("list links: %w", err)
	}
	if err := ValidateLinkPrefix(prefix); err != nil {
		return nil, fmt.Errorf("list links of %s: %w", repo, err)
	}
	if err := s.beginRead(ctx, c); err != nil {
		return nil, fmt.Errorf("list links of %s: %w", repo, err)
	}
	s.mu.RLock()
	links := s.st.links(repo, prefix)
	s.mu.RUnlock()
	return links, nil
}
