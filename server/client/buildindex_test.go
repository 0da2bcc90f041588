package client

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/server/api"
	"github.com/krakenctl/krakenctl/server/registry"
	"github.com/krakenctl/krakenctl/server/registry/errcode"
)

// TestBuildIndexRequests checks the requests the client sends and how it reads the answers,
// against a stub server (the real server is tested with this client in server/buildindex).
func TestBuildIndexRequests(t *testing.T) {
	t.Parallel()
	d := digest.FromString("x")
	var got []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		got = append(got, r.Method+" "+r.URL.RequestURI()+" "+string(body))
		w.Header().Set("Content-Type", "application/json")
		switch {
		case r.URL.Path == "/repositories/team%2Fapp/tags/v1" || r.URL.EscapedPath() == "/repositories/team%2Fapp/tags/v1":
			if r.Method == http.MethodDelete {
				registry.WriteError(w, r, errcode.Errorf(http.StatusNotFound, errcode.CodeManifestUnknown, "tag unknown"))
				return
			}
			_ = json.NewEncoder(w).Encode(api.Tag{Repo: "team/app", Tag: "v1", Digest: d, Index: 7})
		case r.URL.Path == "/repositories/team/app/tags":
			if r.URL.Query().Get("last") == "" {
				w.Header().Set("Link", `</repositories/team%2Fapp/tags?last=b&n=2>; rel="next"`)
				_ = json.NewEncoder(w).Encode(api.TagList{Name: "team/app", Tags: []string{"a", "b"}})
				return
			}
			_ = json.NewEncoder(w).Encode(api.TagList{Name: "team/app", Tags: []string{"c"}})
		case r.URL.Path == "/repositories":
			_ = json.NewEncoder(w).Encode(api.Catalog{Repositories: []string{"team/app"}})
		case r.URL.Path == api.ClusterRestorePath:
			_ = json.NewEncoder(w).Encode(api.RestoreResult{Imported: 3, Skipped: 1})
		case strings.HasPrefix(r.URL.Path, api.ClusterPath):
			_ = json.NewEncoder(w).Encode(api.ClusterStatus{ID: "n1", LeaderID: "n1"})
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	c := NewBuildIndex(srv.URL, srv.Client())
	ctx := t.Context()

	tag, err := c.PutTag(ctx, "team/app", "v1", d)
	require.NoError(t, err)
	require.Equal(t, uint64(7), tag.Index)
	_, err = c.GetTag(ctx, "team/app", "v1", true)
	require.NoError(t, err)
	_, err = c.DeleteTag(ctx, "team/app", "v1")
	require.ErrorIs(t, err, ErrNotFound)
	var re *errcode.Error
	require.ErrorAs(t, err, &re)
	require.Equal(t, errcode.CodeManifestUnknown, re.Code)

	tags, next, err := c.ListTags(ctx, "team/app", "", 2)
	require.NoError(t, err)
	require.Equal(t, []string{"a", "b"}, tags)
	require.Equal(t, "b", next)
	tags, next, err = c.ListTags(ctx, "team/app", next, 2)
	require.NoError(t, err)
	require.Equal(t, []string{"c"}, tags)
	require.Empty(t, next)
	repos, next, err := c.ListRepositories(ctx, "", 0)
	require.NoError(t, err)
	require.Equal(t, []string{"team/app"}, repos)
	require.Empty(t, next)

	st, err := c.ClusterStatus(ctx)
	require.NoError(t, err)
	require.Equal(t, "n1", st.ID)
	_, err = c.Join(ctx, api.Member{ID: "n2", RaftAddr: "127.0.0.1:2", APIAddr: "127.0.0.1:3"})
	require.NoError(t, err)
	_, err = c.Remove(ctx, "n2", false)
	require.NoError(t, err)
	_, err = c.Remove(ctx, "n2", true)
	require.NoError(t, err)
	rr, err := c.Restore(ctx)
	require.NoError(t, err)
	require.Equal(t, api.RestoreResult{Imported: 3, Skipped: 1}, rr)

	require.Equal(t, []string{
		"PUT /repositories/team%2Fapp/tags/v1 " + `{"digest":"` + d.String() + `"}`,
		"GET /repositories/team%2Fapp/tags/v1?stale=true ",
		"DELETE /repositories/team%2Fapp/tags/v1 ",
		"GET /repositories/team%2Fapp/tags?n=2 ",
		"GET /repositories/team%2Fapp/tags?last=b&n=2 ",
		"GET /repositories ",
		"GET /cluster ",
		"POST /cluster/members " + `{"id":"n2","raft_addr":"127.0.0.1:2","api_addr":"127.0.0.1:3"}`,
		"DELETE /cluster/members/n2 ",
		"DELETE /cluster/members/n2?force=true ",
		"POST /cluster/restore ",
	}, got)
}

func TestNextLast(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		links   []string
		want    string
		wantErr bool
	}{
		{nil, "", false},
		{[]string{`</x?n=2&last=a%2Fb>; rel="next"`}, "a/b", false},
		{[]string{`</x?last=p>; rel="prev", </x?last=n>; rel="next"`}, "n", false},
		{[]string{`</x?n=2>; rel="next"`}, "", true},
		{[]string{`/x?last=a; rel="next"`}, "", true},
	} {
		got, err := nextLast(tc.links)
		if tc.wantErr {
			require.Error(t, err, tc.links)
			continue
		}
		require.NoError(t, err, tc.links)
		require.Equal(t, tc.want, got)
	}
}

func TestBuildIndexChanges(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("from") == "9" {
			registry.WriteError(w, r, errcode.Errorf(http.StatusBadRequest, errcode.CodeUnsupported, "bad from"))
			return
		}
		w.Header().Set("Content-Type", "application/x-ndjson")
		for i := 1; i <= 3; i++ {
			_, _ = fmt.Fprintf(w, `{"index":%d,"op":"put","tag":{"repo":"a","tag":"t%d"}}`+"\n", i, i)
		}
		if r.URL.Query().Get("from") == "1" {
			_, _ = fmt.Fprintln(w, "not json")
		}
	}))
	defer srv.Close()
	c := NewBuildIndex(srv.URL, srv.Client())

	var seen []uint64
	err := c.Changes(t.Context(), 0, func(ch api.TagChange) error { seen = append(seen, ch.Index); return nil })
	require.ErrorIs(t, err, ErrFeedEnded)
	require.Equal(t, []uint64{1, 2, 3}, seen)

	stop := errors.New("stop")
	err = c.Changes(t.Context(), 0, func(ch api.TagChange) error { return stop })
	require.Equal(t, stop, err)

	err = c.Changes(t.Context(), 1, func(api.TagChange) error { return nil })
	require.ErrorContains(t, err, "decode change")

	err = c.Changes(t.Context(), 9, func(api.TagChange) error { return nil })
	var re *errcode.Error
	require.ErrorAs(t, err, &re)
	require.Equal(t, http.StatusBadRequest, re.Status)

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	require.ErrorIs(t, c.Changes(ctx, 0, func(api.TagChange) error { return nil }), context.Canceled)
}

// TestBuildIndexWritesGoToTheLeader: once an answer names the leader, writes go straight to it
// while reads stay on the node the client was built for; when the leader is gone, writes fall
// back to that node.
func TestBuildIndexWritesGoToTheLeader(t *testing.T) {
	t.Parallel()
	var leaderWrites, followerWrites, followerReads atomic.Int32
	tagJSON := `{"repo":"a","tag":"t","digest":"sha256:` + strings.Repeat("0", 64) + `","index":1}`
	leader := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		leaderWrites.Add(1)
		_, _ = io.WriteString(w, tagJSON)
	}))
	var leaderAddr atomic.Value
	leaderAddr.Store(strings.TrimPrefix(leader.URL, "http://"))
	follower := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(api.HeaderLeader, leaderAddr.Load().(string))
		if r.Method == http.MethodGet {
			followerReads.Add(1)
		} else {
			followerWrites.Add(1)
		}
		_, _ = io.WriteString(w, tagJSON)
	}))
	defer follower.Close()
	c := NewBuildIndex(strings.TrimPrefix(follower.URL, "http://"), nil)
	d := digest.Digest("sha256:" + strings.Repeat("0", 64))

	_, err := c.PutTag(t.Context(), "a", "t", d) // learns the leader
	require.NoError(t, err)
	for range 3 {
		_, err = c.PutTag(t.Context(), "a", "t", d)
		require.NoError(t, err)
		_, err = c.GetTag(t.Context(), "a", "t", false)
		require.NoError(t, err)
	}
	require.EqualValues(t, 1, followerWrites.Load())
	require.EqualValues(t, 3, leaderWrites.Load())
	require.EqualValues(t, 3, followerReads.Load(), "reads stay on the configured node")

	// The leader goes away: the next write is refused at dial and retried on the follower.
	leader.Close()
	leaderAddr.Store(strings.TrimPrefix(follower.URL, "http://"))
	_, err = c.PutTag(t.Context(), "a", "t", d)
	require.NoError(t, err)
	require.EqualValues(t, 2, followerWrites.Load())
}

// TestBuildIndexWritesGoToTheLeaderOverTLS: a client built with an https:// URL and a plain
// TLS http.Client (no upgrading dialer) sends its writes to the leader it learns over TLS too.
func TestBuildIndexWritesGoToTheLeaderOverTLS(t *testing.T) {
	t.Parallel()
	tagJSON := `{"repo":"a","tag":"t","digest":"sha256:` + strings.Repeat("0", 64) + `","index":1}`
	var leaderWrites atomic.Int32
	leader := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		leaderWrites.Add(1)
		_, _ = io.WriteString(w, tagJSON)
	}))
	defer leader.Close()
	follower := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(api.HeaderLeader, strings.TrimPrefix(leader.URL, "https://"))
		_, _ = io.WriteString(w, tagJSON)
	}))
	defer follower.Close()
	c := NewBuildIndex(follower.URL, follower.Client()) // both servers share httptest's certificate
	d := digest.Digest("sha256:" + strings.Repeat("0", 64))
	for range 3 {
		_, err := c.PutTag(t.Context(), "a", "t", d)
		require.NoError(t, err)
	}
	require.EqualValues(t, 2, leaderWrites.Load(), "writes after the first went to the leader, over TLS")
}

// TestBuildIndexLinks checks the link requests (the name is one escaped path segment) and
// answers, against a stub server; the real server is tested with this client in
// server/buildindex.
func TestBuildIndexLinks(t *testing.T) {
	t.Parallel()
	d := digest.FromString("x")
	blob := "blob/" + d.String()
	var got []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		got = append(got, r.Method+" "+r.URL.RequestURI()+" "+string(body))
		w.Header().Set("Content-Type", "application/json")
		switch {
		case r.URL.EscapedPath() == "/repositories/team%2Fapp/links":
			if r.URL.Query().Get("prefix") == "manifest/" {
				_, _ = io.WriteString(w, `{"links":null}`)
				return
			}
			_ = json.NewEncoder(w).Encode(api.LinkList{Links: []api.Link{{Repo: "team/app", Name: blob, Digest: d, Index: 3}}})
		case r.URL.EscapedPath() == "/repositories/team%2Fapp/links/blob%2F"+d.String():
			_ = json.NewEncoder(w).Encode(api.Link{Repo: "team/app", Name: blob, Digest: d, Index: 3})
		default:
			registry.WriteError(w, r, errcode.Errorf(http.StatusNotFound, errcode.CodeManifestUnknown, "no link"))
		}
	}))
	defer srv.Close()
	c := NewBuildIndex(srv.URL, srv.Client())
	ctx := t.Context()
	want := api.Link{Repo: "team/app", Name: blob, Digest: d, Index: 3}

	l, err := c.PutLink(ctx, "team/app", blob, d)
	require.NoError(t, err)
	require.Equal(t, want, l)
	l, err = c.GetLink(ctx, "team/app", blob, false)
	require.NoError(t, err)
	require.Equal(t, want, l)
	_, err = c.GetLink(ctx, "team/app", blob, true)
	require.NoError(t, err)
	l, err = c.DeleteLink(ctx, "team/app", blob)
	require.NoError(t, err)
	require.Equal(t, want, l)

	_, err = c.GetLink(ctx, "team/app", "manifest/"+d.String(), false)
	require.ErrorIs(t, err, ErrNotFound)
	var re *errcode.Error
	require.ErrorAs(t, err, &re)
	require.Equal(t, errcode.CodeManifestUnknown, re.Code)
	_, err = c.DeleteLink(ctx, "team/app", "manifest/"+d.String())
	require.ErrorIs(t, err, ErrNotFound)

	links, err := c.ListLinks(ctx, "team/app", "blob/", false)
	require.NoError(t, err)
	require.Equal(t, []api.Link{want}, links)
	links, err = c.ListLinks(ctx, "team/app", "manifest/", true)
	require.NoError(t, err)
	require.NotNil(t, links, "no match is an empty list")
	require.Empty(t, links)

	require.Equal(t, []string{
		"PUT /repositories/team%2Fapp/links/blob%2F" + d.String() + ` {"digest":"` + d.String() + `"}`,
		"GET /repositories/team%2Fapp/links/blob%2F" + d.String() + " ",
		"GET /repositories/team%2Fapp/links/blob%2F" + d.String() + "?stale=true ",
		"DELETE /repositories/team%2Fapp/links/blob%2F" + d.String() + " ",
		"GET /repositories/team%2Fapp/links/manifest%2F" + d.String() + " ",
		"DELETE /repositories/team%2Fapp/links/manifest%2F" + d.String() + " ",
		"GET /repositories/team%2Fapp/links?prefix=blob%2F ",
		"GET /repositories/team%2Fapp/links?prefix=manifest%2F&stale=true ",
	}, got)
}
