package client

import (
	"bytes"
	"crypto/sha512"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/server/api"
	"github.com/krakenctl/krakenctl/server/registry"
	"github.com/krakenctl/krakenctl/server/registry/errcode"
)

// fakeSession is an origin's upload API with one session, "s1" in namespace "ns". The first
// `busy` PATCH, PUT and DELETE requests are refused with 409, as a session busy with another
// request is. It records the headers of each PATCH.
type fakeSession struct {
	mu      sync.Mutex
	busy    int
	data    []byte
	gone    bool
	patches []http.Header
	bodies  int // PATCH bodies read
}

func (f *fakeSession) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fail := func(status int, code errcode.Code) {
		registry.WriteError(w, r, errcode.Errorf(status, code, "fake %d", status))
	}
	if r.Method == http.MethodPost {
		if r.URL.Path != api.UploadsPath("ns") {
			fail(http.StatusNotFound, errcode.CodeNameUnknown)
			return
		}
		if m := r.URL.Query().Get("mount"); m != "" {
			if digest.Digest(m) == digest.FromBytes(f.data) && r.URL.Query().Get("from") == "src" {
				w.WriteHeader(http.StatusCreated)
				return
			}
			fail(http.StatusNotFound, errcode.CodeBlobUnknown)
			return
		}
		w.Header().Set(api.HeaderUploadUUID, "s1")
		w.WriteHeader(http.StatusAccepted)
		return
	}
	if r.URL.Path != api.UploadPath("ns", "s1") || f.gone {
		fail(http.StatusNotFound, errcode.CodeBlobUploadUnknown)
		return
	}
	if r.Method != http.MethodGet && f.busy > 0 {
		f.busy--
		fail(http.StatusConflict, errcode.CodeBlobUploadInvalid)
		return
	}
	switch r.Method {
	case http.MethodGet:
		w.Header().Set(api.HeaderUploadOffset, strconv.Itoa(len(f.data)))
		w.WriteHeader(http.StatusNoContent)
	case http.MethodPatch:
		f.patches = append(f.patches, r.Header.Clone())
		start := r.Header.Get(api.HeaderUploadOffset)
		if cr := r.Header.Get(api.HeaderContentRange); cr != "" {
			start, _, _ = strings.Cut(cr, "-")
		}
		if start != strconv.Itoa(len(f.data)) {
			fail(http.StatusRequestedRangeNotSatisfiable, errcode.CodeRangeInvalid)
			return
		}
		b, err := io.ReadAll(r.Body)
		if err != nil {
			fail(http.StatusBadRequest, errcode.CodeBlobUploadInvalid)
			return
		}
		f.bodies++
		f.data = append(f.data, b...)
		w.Header().Set(api.HeaderUploadOffset, strconv.Itoa(len(f.data)))
		w.WriteHeader(http.StatusAccepted)
	case http.MethodPut:
		d := digest.Digest(r.URL.Query().Get("digest"))
		if d.Algorithm().FromBytes(f.data) != d {
			f.gone = true
			fail(http.StatusBadRequest, errcode.CodeDigestInvalid)
			return
		}
		f.gone = true
		w.Header().Set(api.HeaderContentDigest, digest.FromBytes(f.data).String())
		w.WriteHeader(http.StatusCreated)
	case http.MethodDelete:
		f.gone = true
		w.WriteHeader(http.StatusNoContent)
	default:
		fail(http.StatusMethodNotAllowed, errcode.CodeUnsupported)
	}
}

func newSessionOrigin(t *testing.T, f *fakeSession) *Origin {
	t.Helper()
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	tr := &http.Transport{ExpectContinueTimeout: 5 * time.Second}
	t.Cleanup(tr.CloseIdleConnections)
	return NewOrigin(srv.URL, &http.Client{Transport: tr})
}

func TestUploadSession(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	f := &fakeSession{busy: 2}
	o := newSessionOrigin(t, f)

	id, err := o.StartUpload(ctx, "ns")
	require.NoError(t, err)
	require.Equal(t, "s1", id)

	// A busy session refuses the chunk before its body is sent; it is sent again.
	n, err := o.AppendUpload(ctx, "ns", id, 0, strings.NewReader("hello "), 6)
	require.NoError(t, err)
	require.Equal(t, int64(6), n)
	require.Equal(t, 1, f.bodies)
	require.Equal(t, "0-5", f.patches[0].Get(api.HeaderContentRange))
	require.Equal(t, "100-continue", f.patches[0].Get("Expect"))

	// A chunk of unknown length carries its offset in Upload-Offset.
	n, err = o.AppendUpload(ctx, "ns", id, 6, strings.NewReader("world"), -1)
	require.NoError(t, err)
	require.Equal(t, int64(11), n)
	require.Equal(t, "6", f.patches[1].Get(api.HeaderUploadOffset))
	require.Empty(t, f.patches[1].Get(api.HeaderContentRange))

	// A chunk at the wrong offset is registry.ErrUploadOffset.
	_, err = o.AppendUpload(ctx, "ns", id, 3, strings.NewReader("x"), 1)
	require.ErrorIs(t, err, registry.ErrUploadOffset)
	require.Equal(t, http.StatusRequestedRangeNotSatisfiable, registry.FromError(err).Status)
	require.True(t, IsClientFault(err))

	n, err = o.UploadOffset(ctx, "ns", id)
	require.NoError(t, err)
	require.Equal(t, int64(11), n)

	// A sha512 commit answers the SHA-256 the blob is stored under.
	sum := sha512.Sum512([]byte("hello world"))
	d512 := digest.NewDigestFromBytes(digest.SHA512, sum[:])
	stored, err := o.CommitUpload(ctx, "ns", id, d512)
	require.NoError(t, err)
	require.Equal(t, digest.FromString("hello world"), stored)

	// The session is gone: 404 is an unknown upload.
	_, err = o.UploadOffset(ctx, "ns", id)
	require.ErrorIs(t, err, registry.ErrUploadUnknown)
	require.ErrorIs(t, err, ErrNotFound)
	require.Equal(t, errcode.CodeBlobUploadUnknown, registry.FromError(err).Code)
	require.ErrorIs(t, o.CancelUpload(ctx, "ns", id), registry.ErrUploadUnknown)
}

func TestUploadSessionErrors(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	f := &fakeSession{data: []byte("abc")}
	o := newSessionOrigin(t, f)

	// Content that does not match the digest.
	_, err := o.CommitUpload(ctx, "ns", "s1", digest.FromString("other"))
	require.ErrorIs(t, err, registry.ErrDigestMismatch)
	require.Equal(t, errcode.CodeDigestInvalid, registry.FromError(err).Code)

	// A session that stays busy answers 409 once the retries are spent.
	f.gone, f.busy = false, busyRetries+1
	err = o.CancelUpload(ctx, "ns", "s1")
	require.Equal(t, http.StatusConflict, registry.FromError(err).Status)
	require.False(t, IsClientFault(err))
	f.busy = 0
	require.NoError(t, o.CancelUpload(ctx, "ns", "s1"))

	// Mount: 201 is mounted, 404 is not there (no error).
	ok, err := o.Mount(ctx, "ns", "src", digest.FromString("abc"))
	require.NoError(t, err)
	require.True(t, ok)
	ok, err = o.Mount(ctx, "ns", "", digest.FromString("abc"))
	require.NoError(t, err)
	require.False(t, ok)

	// A server that cannot be reached is ErrNoAnswer.
	dead := httptest.NewServer(http.NotFoundHandler())
	dead.Close()
	_, err = NewOrigin(dead.URL, nil).UploadOffset(ctx, "ns", "s1")
	require.ErrorIs(t, err, ErrNoAnswer)
	require.False(t, IsClientFault(err))
}

func TestUploadChunkedOnSessions(t *testing.T) {
	t.Parallel()
	f := &fakeSession{busy: 1}
	o := newSessionOrigin(t, f)
	data := bytes.Repeat([]byte("0123456789"), 10)
	var progress []int64
	err := o.UploadChunked(t.Context(), "ns", digest.FromBytes(data), bytes.NewReader(data), int64(len(data)),
		UploadOptions{ChunkSize: 30, Progress: func(n int64) { progress = append(progress, n) }})
	require.NoError(t, err)
	require.Equal(t, data, f.data)
	require.Equal(t, []int64{30, 60, 90, 100}, progress)
	require.True(t, f.gone, "committed")

	// A wrong digest fails the commit, as a client fault.
	f2 := &fakeSession{}
	err = newSessionOrigin(t, f2).UploadChunked(t.Context(), "ns", digest.FromString("x"), bytes.NewReader(data), int64(len(data)), UploadOptions{})
	require.ErrorIs(t, err, registry.ErrDigestMismatch)
	require.True(t, IsClientFault(err))
}

func TestValidUploadID(t *testing.T) {
	t.Parallel()
	for id, ok := range map[string]bool{
		"s1": true, "a-B_9": true, strings.Repeat("x", 128): true,
		"": false, strings.Repeat("x", 129): false, "a/b": false, "a.b": false, "a%2F": false,
	} {
		require.Equal(t, ok, ValidUploadID(id), id)
	}
}
