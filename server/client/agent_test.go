package client

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/stretchr/testify/require"
)

// flakyAgent serves one blob, breaking off the first `breaks` responses after half of what
// they promised, as an agent does when its download fails mid-stream. It records the Range
// header of every request.
type flakyAgent struct {
	data   []byte
	mu     sync.Mutex
	breaks int
	ranges []string
}

func (f *flakyAgent) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	f.ranges = append(f.ranges, r.Header.Get("Range"))
	brk := f.breaks > 0
	if brk {
		f.breaks--
	}
	f.mu.Unlock()
	if !brk {
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(f.data))
		return
	}
	off := int64(0)
	if v := r.Header.Get("Range"); v != "" {
		_, err := fmt.Sscanf(v, "bytes=%d-", &off)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", off, len(f.data)-1, len(f.data)))
	}
	rest := f.data[off:]
	w.Header().Set("Content-Length", strconv.Itoa(len(rest)))
	if off > 0 {
		w.WriteHeader(http.StatusPartialContent)
	}
	_, _ = w.Write(rest[:len(rest)/2])
	panic(http.ErrAbortHandler)
}

func newFlakyAgent(t *testing.T, size, breaks int) (*flakyAgent, *Agent) {
	t.Helper()
	data := make([]byte, size)
	_, err := rand.Read(data)
	require.NoError(t, err)
	f := &flakyAgent{data: data, breaks: breaks}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return f, NewAgent(srv.URL, srv.Client())
}

func TestAgentPullResumes(t *testing.T) {
	t.Parallel()
	f, c := newFlakyAgent(t, 1<<20, 2)
	d := digest.FromBytes(f.data)
	var got bytes.Buffer
	var last [2]int64
	n, err := c.Pull(t.Context(), "ns", d, &got, func(done, total int64) { last = [2]int64{done, total} })
	require.NoError(t, err)
	require.Equal(t, int64(len(f.data)), n)
	require.True(t, bytes.Equal(f.data, got.Bytes()))
	require.Equal(t, [2]int64{n, n}, last)
	half := len(f.data) / 2
	require.Equal(t, []string{"", fmt.Sprintf("bytes=%d-", half), fmt.Sprintf("bytes=%d-", half+(len(f.data)-half)/2)}, f.ranges,
		"each attempt starts where the last one broke off")
}

func TestAgentPullGivesUp(t *testing.T) {
	t.Parallel()
	f, c := newFlakyAgent(t, 64<<10, 100)
	_, err := c.Pull(t.Context(), "ns", digest.FromBytes(f.data), io.Discard, nil)
	require.ErrorIs(t, err, io.ErrUnexpectedEOF)
	require.Len(t, f.ranges, AgentResumes+1)
}

type failingWriter struct{ n int }

func (w *failingWriter) Write(p []byte) (int, error) {
	if w.n+len(p) > 1000 {
		return 0, errors.New("disk full")
	}
	w.n += len(p)
	return len(p), nil
}

func TestAgentPullWriteErrorIsFinal(t *testing.T) {
	t.Parallel()
	f, c := newFlakyAgent(t, 64<<10, 0)
	_, err := c.Pull(t.Context(), "ns", digest.FromBytes(f.data), &failingWriter{}, nil)
	require.ErrorContains(t, err, "disk full")
	require.Len(t, f.ranges, 1, "a failure to write is not retried")
}

func TestAgentPullDigestMismatch(t *testing.T) {
	t.Parallel()
	f, c := newFlakyAgent(t, 10<<10, 0)
	want := digest.FromString("other")
	_, err := c.Pull(t.Context(), "ns", want, io.Discard, nil)
	var dm *DigestMismatchError
	require.ErrorAs(t, err, &dm)
	require.Equal(t, want, dm.Want)
	require.Equal(t, digest.FromBytes(f.data), dm.Got)
	require.ErrorIs(t, err, ErrDigestMismatch)
	require.ErrorContains(t, err, "expected "+want.String()+", got "+digest.FromBytes(f.data).String())
}
