package blob

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"

	"github.com/krakenctl/krakenctl/cli/cmdutil"
)

// RegistryPushResult is what `push --registry` prints with -o json.
type RegistryPushResult struct {
	Digest     digest.Digest `json:"digest"`
	Size       int64         `json:"size"`
	Registry   string        `json:"registry"`
	Repository string        `json:"repository"`
}

// pushToRegistry uploads the blob into repository opts.Namespace of reg with the distribution
// API (go-containerregistry's client: it skips a blob the repository already holds, and
// answers the registry's challenge with reg's credentials).
func pushToRegistry(ctx context.Context, opts *PushOptions, reg *cmdutil.Registry, src *source) (RegistryPushResult, error) {
	repo, err := reg.Repository(opts.Namespace)
	if err != nil {
		return RegistryPushResult{}, cmdutil.FlagErrorf("invalid --namespace %q for the registry: %w", opts.Namespace, err)
	}
	l, err := partial.CompressedToLayer(&fileLayer{f: src.f, digest: src.digest, size: src.size})
	if err != nil {
		return RegistryPushResult{}, err
	}
	bar := newProgress(opts.IO, src.size, "pushing", false)
	updates := make(chan v1.Update, 16)
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		for u := range updates {
			if u.Error == nil {
				bar.set(u.Complete, src.size)
			}
		}
	}()
	err = remote.WriteLayer(repo, l, append(reg.Options(ctx, opts.HTTPClient()), remote.WithProgress(updates))...)
	<-drained
	bar.done(err == nil)
	if err != nil {
		return RegistryPushResult{}, reg.Explain(fmt.Errorf("push to %s: %w", repo, err))
	}
	return RegistryPushResult{Digest: src.digest, Size: src.size, Registry: reg.Name.RegistryStr(), Repository: opts.Namespace}, nil
}

// fileLayer is a blob in a file, as go-containerregistry's layer: its bytes are uploaded as
// they are (a blob, not necessarily a compressed layer).
type fileLayer struct {
	f      *os.File
	digest digest.Digest
	size   int64
}

func (l *fileLayer) Digest() (v1.Hash, error) { return v1.NewHash(l.digest.String()) }
func (l *fileLayer) Size() (int64, error)     { return l.size, nil }
func (l *fileLayer) MediaType() (types.MediaType, error) {
	return types.MediaType("application/octet-stream"), nil
}

// Compressed reads the file from its start; every call (a retried upload) gets its own reader.
func (l *fileLayer) Compressed() (io.ReadCloser, error) {
	return io.NopCloser(io.NewSectionReader(l.f, 0, l.size)), nil
}

// registryPullSource pulls blob opts.Digest of repository opts.Namespace from reg with the
// distribution API; go-containerregistry verifies the bytes against the digest as they come,
// and fails at the end when they do not match.
func registryPullSource(opts *PullOptions, reg *cmdutil.Registry) (pullSource, error) {
	repo, err := reg.Repository(opts.Namespace)
	if err != nil {
		return pullSource{}, cmdutil.FlagErrorf("invalid --namespace %q for the registry: %w", opts.Namespace, err)
	}
	ref := repo.Digest(opts.Digest.String())
	return pullSource{
		pull: func(ctx context.Context, w io.Writer, progress func(done, total int64)) (int64, error) {
			l, err := remote.Layer(ref, reg.Options(ctx, opts.HTTPClient())...)
			if err != nil {
				return 0, err
			}
			size, err := l.Size()
			if err != nil {
				return 0, err
			}
			rc, err := l.Compressed()
			if err != nil {
				return 0, err
			}
			defer func() { _ = rc.Close() }() // read to the end, or failed
			return io.Copy(w, &readCounter{r: rc, fn: func(n int64) { progress(n, size) }})
		},
		explain: func(err error, _ bool) error {
			var te *transport.Error
			if errors.As(err, &te) && te.StatusCode == http.StatusNotFound {
				return &NotFoundError{Digest: opts.Digest, Namespace: opts.Namespace, Registry: reg.Name.RegistryStr()}
			}
			return reg.Explain(fmt.Errorf("pull %s: %w", ref, err))
		},
	}, nil
}
