package client

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/opencontainers/go-digest"

	"github.com/krakenctl/krakenctl/server/api"
)

// ErrFeedEnded means the server closed a change feed (it shut down or lost the subscriber's
// place); the caller resumes from the last index it saw.
var ErrFeedEnded = errors.New("change feed ended")

// maxTagResponse bounds a JSON answer of the build-index (a page of 10,000 long tags fits).
const maxTagResponse = 64 << 20

// BuildIndex is a client of one build-index node's API. Any node accepts every request: writes
// and linearizable reads sent to a follower are forwarded to the leader. It is safe for
// concurrent use.
//
// Errors wrap *errcode.Error with the server's status and code (TAG_INVALID, NAME_INVALID,
// DIGEST_INVALID, MANIFEST_UNKNOWN, MANIFEST_BLOB_UNKNOWN, UNAVAILABLE, ...), and ErrNotFound
// as well when the status is 404.
type BuildIndex struct {
	addr string
	base string
	hc   *http.Client
	// leader is the leader's API address as the last answer named it (api.HeaderLeader). Writes
	// go straight there, saving the follower's forwarding hop; reads stay on addr, which serves
	// them itself.
	leader atomic.Pointer[string]
}

// NewBuildIndex returns a client of the build-index node at addr ("host:port" or a full http(s)
// URL). hc may be nil for http.DefaultClient; it is shared, not closed.
func NewBuildIndex(addr string, hc *http.Client) *BuildIndex {
	if hc == nil {
		hc = http.DefaultClient
	}
	base := addr
	if !strings.HasPrefix(base, "http://") && !strings.HasPrefix(base, "https://") {
		base = "http://" + addr
	}
	return &BuildIndex{addr: addr, base: strings.TrimRight(base, "/"), hc: hc}
}

// Addr returns the address the client was built with.
func (c *BuildIndex) Addr() string { return c.addr }

// PutTag points repo:tag at d and returns the stored value (with the Raft index that set it).
// The server accepts it only when d exists in the origin cluster under namespace repo, and, when
// d is a manifest it can parse, every blob and manifest it references.
func (c *BuildIndex) PutTag(ctx context.Context, repo, tag string, d digest.Digest) (api.Tag, error) {
	return entry[api.Tag](ctx, c, http.MethodPut, api.TagPath(repo, tag), d, false, "put tag "+repo+":"+tag)
}

// GetTag returns the value of repo:tag. With stale false the read is linearizable (it reflects
// every write acknowledged before it started); with stale true the answering node reads its own
// state, which may lag. A missing tag wraps ErrNotFound.
func (c *BuildIndex) GetTag(ctx context.Context, repo, tag string, stale bool) (api.Tag, error) {
	return entry[api.Tag](ctx, c, http.MethodGet, api.TagPath(repo, tag), "", stale, "get tag "+repo+":"+tag)
}

// GetStoredTag is a linearizable GetTag answered from the build-index's own store only: a tag
// that only the upstream registry of a registry-backed repository has wraps ErrNotFound.
func (c *BuildIndex) GetStoredTag(ctx context.Context, repo, tag string) (api.Tag, error) {
	var v api.Tag
	err := c.call(ctx, http.MethodGet, api.TagPath(repo, tag)+"?"+api.QueryUpstream+"=false", nil, http.StatusOK, &v, "get stored tag "+repo+":"+tag)
	return v, err
}

// DeleteTag removes repo:tag and returns the value it had. A missing tag wraps ErrNotFound.
func (c *BuildIndex) DeleteTag(ctx context.Context, repo, tag string) (api.Tag, error) {
	return entry[api.Tag](ctx, c, http.MethodDelete, api.TagPath(repo, tag), "", false, "delete tag "+repo+":"+tag)
}

// entry runs one request on the tag or link at path: a PUT of d, a GET (linearizable unless
// stale) or a DELETE, each answered 200 with the entry's value.
func entry[T api.Tag | api.Link](ctx context.Context, c *BuildIndex, method, path string, d digest.Digest, stale bool, op string) (T, error) {
	var v T
	var body []byte
	if method == http.MethodPut {
		var err error
		if body, err = json.Marshal(api.PutTagRequest{Digest: d}); err != nil {
			return v, fmt.Errorf("%s: %w", op, err)
		}
	}
	if stale {
		path += "?stale=true"
	}
	err := c.call(ctx, method, path, body, http.StatusOK, &v, op)
	return v, err
}

// ListTags returns one page of repo's tags in lexical order, starting after last ("" for the
// first page), at most n of them (n <= 0 lets the server choose its default page size). next is
// the last to pass for the following page, or "" when this page is the end. A repository with
// no tags wraps ErrNotFound.
func (c *BuildIndex) ListTags(ctx context.Context, repo, last string, n int) ([]string, string, error) {
	var tl api.TagList
	next, err := c.page(ctx, api.TagsPath(repo), last, n, &tl, "list tags of "+repo)
	if err != nil {
		return nil, "", err
	}
	return tl.Tags, next, nil
}

// TagsOf returns one page of repo's tags that point at d, like ListTags, read through the
// build-index's reverse index (its cost does not grow with the repository's other tags). None
// is an empty list. A server that predates the filter answers the whole list: that wraps
// ErrUnsupported.
func (c *BuildIndex) TagsOf(ctx context.Context, repo string, d digest.Digest, last string, n int) ([]string, string, error) {
	var tl api.TagList
	op := "list tags of " + repo + " pointing at " + d.String()
	next, err := c.page(ctx, api.TagsPath(repo)+"?"+api.QueryDigest+"="+url.QueryEscape(d.String()), last, n, &tl, op)
	if errors.Is(err, ErrNotFound) {
		// An older server's answer for a repository without tags: none point at d either.
		return []string{}, "", nil
	}
	if err != nil {
		return nil, "", err
	}
	if tl.Digest != d {
		return nil, "", fmt.Errorf("%s: %w", op, ErrUnsupported)
	}
	return tl.Tags, next, nil
}

// ListRepositories returns one page of repository names, like ListTags.
func (c *BuildIndex) ListRepositories(ctx context.Context, last string, n int) ([]string, string, error) {
	var cat api.Catalog
	next, err := c.page(ctx, api.RepositoriesPath, last, n, &cat, "list repositories")
	if err != nil {
		return nil, "", err
	}
	return cat.Repositories, next, nil
}

func (c *BuildIndex) page(ctx context.Context, path, last string, n int, out any, op string) (string, error) {
	q := url.Values{}
	if n > 0 {
		q.Set("n", strconv.Itoa(n))
	}
	if last != "" {
		q.Set("last", last)
	}
	if len(q) > 0 {
		sep := "?"
		if strings.Contains(path, "?") {
			sep = "&"
		}
		path += sep + q.Encode()
	}
	resp, err := c.do(ctx, http.MethodGet, path, nil) //nolint:bodyclose // decodeResponse drains and closes it
	if err != nil {
		return "", fmt.Errorf("%s: %w", op, err)
	}
	if err := decodeResponse(resp, http.StatusOK, out, op); err != nil {
		return "", err
	}
	next, err := nextLast(resp.Header.Values("Link"))
	if err != nil {
		return "", fmt.Errorf("%s: %w", op, err)
	}
	return next, nil
}

// nextLast returns the last parameter of the rel="next" Link, or "" without one.
func nextLast(links []string) (string, error) {
	for _, h := range links {
		for _, l := range strings.Split(h, ",") {
			target, params, ok := strings.Cut(strings.TrimSpace(l), ";")
			if !ok || !strings.Contains(strings.ReplaceAll(params, " ", ""), `rel="next"`) {
				continue
			}
			target = strings.TrimSpace(target)
			if !strings.HasPrefix(target, "<") || !strings.HasSuffix(target, ">") {
				return "", fmt.Errorf("bad Link header %q", h)
			}
			u, err := url.Parse(target[1 : len(target)-1])
			if err != nil {
				return "", fmt.Errorf("bad Link header %q: %w", h, err)
			}
			next := u.Query().Get("last")
			if next == "" {
				return "", fmt.Errorf("link header %q has no last parameter", h)
			}
			return next, nil
		}
	}
	return "", nil
}

// PutLink sets link name of repo (registry.BlobLink and friends build names) to d and returns
// the stored value. Links replicate as tags do, and never appear in tag listings. The server
// refuses a value the registry contract forbids (a blob/ or manifest/ value that is not the
// sha256 digest the content is stored under; a referrer/ value other than the referrer's own
// digest) with DIGEST_INVALID, and, with its content check on, a blob/ or manifest/ value that
// the origins do not hold under namespace repo (BLOB_UNKNOWN, MANIFEST_BLOB_UNKNOWN) or a
// referrer/ value without a manifest/ link in repo (MANIFEST_UNKNOWN).
func (c *BuildIndex) PutLink(ctx context.Context, repo, name string, d digest.Digest) (api.Link, error) {
	return entry[api.Link](ctx, c, http.MethodPut, api.LinkPath(repo, name), d, false, "put link "+repo+" "+name)
}

// GetLink returns the value of link name of repo, linearizably unless stale (as GetTag). A
// missing link wraps ErrNotFound (code BLOB_UNKNOWN for a blob/ link, MANIFEST_UNKNOWN for
// the others).
func (c *BuildIndex) GetLink(ctx context.Context, repo, name string, stale bool) (api.Link, error) {
	return entry[api.Link](ctx, c, http.MethodGet, api.LinkPath(repo, name), "", stale, "get link "+repo+" "+name)
}

// DeleteLink removes link name of repo and returns the value it had. A missing link wraps
// ErrNotFound.
func (c *BuildIndex) DeleteLink(ctx context.Context, repo, name string) (api.Link, error) {
	return entry[api.Link](ctx, c, http.MethodDelete, api.LinkPath(repo, name), "", false, "delete link "+repo+" "+name)
}

// ListLinks returns every link of repo whose name starts with prefix, in lexical order of name,
// linearizably unless stale. prefix must start a link name: at least a kind and "/" ("blob/",
// registry.ReferrersPrefix(subject)). No match is an empty list, not an error.
func (c *BuildIndex) ListLinks(ctx context.Context, repo, prefix string, stale bool) ([]api.Link, error) {
	q := url.Values{"prefix": {prefix}}
	if stale {
		q.Set("stale", "true")
	}
	var ll api.LinkList
	err := c.call(ctx, http.MethodGet, api.LinksPath(repo)+"?"+q.Encode(), nil, http.StatusOK, &ll, "list links of "+repo)
	if err != nil {
		return nil, err
	}
	if ll.Links == nil {
		ll.Links = []api.Link{}
	}
	return ll.Links, nil
}

// ClusterStatus returns the answering node's view of the Raft group.
func (c *BuildIndex) ClusterStatus(ctx context.Context) (api.ClusterStatus, error) {
	var st api.ClusterStatus
	err := c.call(ctx, http.MethodGet, api.ClusterPath, nil, http.StatusOK, &st, "get cluster status")
	return st, err
}

// Join adds m to the Raft group (through the leader) and returns the status after the change.
// A member whose ID or address is already in the group is refused with 409.
func (c *BuildIndex) Join(ctx context.Context, m api.Member) (api.ClusterStatus, error) {
	body, err := json.Marshal(m)
	if err != nil {
		return api.ClusterStatus{}, fmt.Errorf("join member: %w", err)
	}
	var st api.ClusterStatus
	err = c.call(ctx, http.MethodPost, api.ClusterMembersPath, body, http.StatusOK, &st, "join member "+m.ID)
	return st, err
}

// Remove takes the member with id out of the Raft group and returns the status after the
// change. An unknown id wraps ErrNotFound. Unless force is set, the build-index refuses (409
// QUORUM_AT_RISK) a removal that would leave the voters without a quorum of live ones.
func (c *BuildIndex) Remove(ctx context.Context, id string, force bool) (api.ClusterStatus, error) {
	var st api.ClusterStatus
	path := api.ClusterMemberPath(id)
	if force {
		path += "?force=true"
	}
	err := c.call(ctx, http.MethodDelete, path, nil, http.StatusOK, &st, "remove member "+id)
	return st, err
}

// ReplicationStatus returns the node's replication queues.
func (c *BuildIndex) ReplicationStatus(ctx context.Context) (api.ReplicationStatus, error) {
	var st api.ReplicationStatus
	err := c.call(ctx, http.MethodGet, api.ReplicationPath, nil, http.StatusOK, &st, "get replication status")
	return st, err
}

// ReplicationRetry queues the node's parked replication items that req selects again.
func (c *BuildIndex) ReplicationRetry(ctx context.Context, req api.RetryRequest) (api.RetryResult, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return api.RetryResult{}, fmt.Errorf("retry replication: %w", err)
	}
	var rr api.RetryResult
	err = c.call(ctx, http.MethodPost, api.ReplicationRetry, body, http.StatusOK, &rr, "retry replication")
	return rr, err
}

// Restore rebuilds the tags from the storage backend's copies (tags already present with a
// value at least as new are skipped) and says how many were imported and skipped.
func (c *BuildIndex) Restore(ctx context.Context) (api.RestoreResult, error) {
	var rr api.RestoreResult
	err := c.call(ctx, http.MethodPost, api.ClusterRestorePath, nil, http.StatusOK, &rr, "restore tags")
	return rr, err
}

// Changes streams the tag changes the node applies after index from, in index order, calling fn
// for each. Op is "put" or "delete"; a change with Op "resync" (and nothing else set) means the
// node no longer holds the changes the caller missed: rebuild from a full listing, then follow
// again from the current applied index (the stream ends right after it). Changes returns only
// with an error: ctx's when it ends, fn's own error as is, or one wrapping ErrFeedEnded when the
// server closes the stream; the caller resumes after the last index fn saw.
func (c *BuildIndex) Changes(ctx context.Context, from uint64, fn func(api.TagChange) error) error {
	resp, err := c.do(ctx, http.MethodGet, api.ChangesPath+"?from="+strconv.FormatUint(from, 10), nil)
	if err != nil {
		return fmt.Errorf("follow changes: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return responseError("follow changes", resp)
	}
	defer func() { _ = resp.Body.Close() }() // read side
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		var ch api.TagChange
		if err := json.Unmarshal(line, &ch); err != nil {
			return fmt.Errorf("follow changes: decode change: %w", err)
		}
		if err := fn(ch); err != nil {
			return err
		}
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("follow changes: %w: %w", ErrFeedEnded, err)
	}
	return fmt.Errorf("follow changes from %s: %w", c.addr, ErrFeedEnded)
}

// Ready reports whether the node answers /readyz with 200 (it knows a leader).
func (c *BuildIndex) Ready(ctx context.Context) error {
	resp, err := c.do(ctx, http.MethodGet, "/readyz", nil)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		_ = resp.Body.Close()
		return fmt.Errorf("build-index %s not ready: %s", c.addr, bytes.TrimSpace(body))
	}
	drain(resp)
	return nil
}

// scheme is the scheme of the address the client was built with, for the leader it learns: a
// client given an https:// URL keeps speaking TLS to the leader (one given host:port relies
// on its http.Client to upgrade, as the components' client does).
func (c *BuildIndex) scheme() string {
	if strings.HasPrefix(c.base, "https://") {
		return "https://"
	}
	return "http://"
}

func (c *BuildIndex) do(ctx context.Context, method, path string, body []byte) (*http.Response, error) {
	if method != http.MethodGet && method != http.MethodHead {
		if l := c.leader.Load(); l != nil && *l != c.addr {
			resp, err := c.send(ctx, c.scheme()+*l, *l, method, path, body)
			if err == nil && resp.StatusCode != http.StatusServiceUnavailable {
				return resp, nil
			}
			// The leader we knew is gone or busy electing: forget it and ask addr, which
			// forwards to whoever leads now. Only a request that never reached the node
			// (refused dial) or that it refused with 503 is retried, so a write is not applied
			// twice.
			c.leader.CompareAndSwap(l, nil)
			if err != nil && !NotSent(err) {
				return nil, err
			}
			if resp != nil {
				drain(resp)
			}
		}
	}
	return c.send(ctx, c.base, c.addr, method, path, body)
}

func (c *BuildIndex) send(ctx context.Context, base, addr, method, path string, body []byte) (*http.Response, error) {
	var rd io.Reader = http.NoBody
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, base+path, rd)
	if err != nil {
		return nil, fmt.Errorf("build request: %w", err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, addr, err)
	}
	if l := resp.Header.Get(api.HeaderLeader); l != "" {
		if cur := c.leader.Load(); cur == nil || *cur != l {
			c.leader.Store(&l)
		}
	}
	return resp, nil
}

func (c *BuildIndex) call(ctx context.Context, method, path string, body []byte, want int, out any, op string) error {
	resp, err := c.do(ctx, method, path, body) //nolint:bodyclose // decodeResponse drains and closes it
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	return decodeResponse(resp, want, out, op)
}

// decodeResponse decodes a want-status JSON answer into out, or returns the error the response
// carries. It consumes and closes the body.
func decodeResponse(resp *http.Response, want int, out any, op string) error {
	if resp.StatusCode != want {
		return responseError(op, resp)
	}
	defer drain(resp)
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxTagResponse)).Decode(out); err != nil {
		return fmt.Errorf("%s: decode answer: %w", op, err)
	}
	return nil
}
