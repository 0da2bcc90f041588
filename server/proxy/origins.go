package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/opencontainers/go-digest"

	"github.com/krakenctl/krakenctl/ring"
	"github.com/krakenctl/krakenctl/server/client"
	"github.com/krakenctl/krakenctl/server/registry"
	"github.com/krakenctl/krakenctl/server/registry/errcode"
)

// origins is the proxy's side of the origin cluster: the ring (for ranking and health) and the
// HTTP calls of the origins' blob and upload API. It is safe for concurrent use.
type origins struct {
	ring      *ring.Ring
	hc        *http.Client
	failovers func()
}

func (o *origins) client(addr string) *client.Origin { return client.NewOrigin(addr, o.hc) }

// each calls fn with the candidates for key in turn until one succeeds or fails in a way
// another origin would repeat (a client fault). notFound reports, when every origin that
// answered said 404, that the content is missing rather than the origins unavailable.
func (o *origins) each(ctx context.Context, key string, fn func(addr string) error) (notFound bool, err error) {
	var errs []error
	answered404 := 0
	cands := o.ring.RankHealthyFirst(key)
	if len(cands) == 0 {
		// No origin known yet (their DNS name has no address): unavailable, not "not found".
		return false, unavailable("no origin known yet", nil)
	}
	for i, a := range cands {
		if i > 0 {
			o.failovers()
		}
		err := fn(a)
		if err == nil {
			return false, nil
		}
		if ctx.Err() != nil {
			return false, ctx.Err()
		}
		if client.IsNotFound(err) {
			answered404++
		} else if client.IsClientFault(err) {
			return false, err
		}
		errs = append(errs, fmt.Errorf("%s: %w", a, err))
	}
	if answered404 == len(cands) {
		return true, errors.Join(errs...)
	}
	return false, unavailable("no origin could answer", errors.Join(errs...))
}

func unavailable(msg string, err error) *errcode.Error {
	return &errcode.Error{Status: http.StatusServiceUnavailable, Code: errcode.CodeUnavailable, Message: msg + "; retry", Err: err}
}

// stat returns the size of stored blob s (a sha256 digest) in namespace ns.
func (o *origins) stat(ctx context.Context, ns string, s digest.Digest) (int64, error) {
	var size int64
	notFound, err := o.each(ctx, s.String(), func(a string) (err error) {
		size, err = o.client(a).Stat(ctx, ns, s)
		return err
	})
	if notFound {
		return 0, fmt.Errorf("stat %s: %w", s, registry.ErrBlobUnknown)
	}
	return size, err
}

// open starts reading stored blob s at off from the first origin that serves it.
func (o *origins) open(ctx context.Context, ns string, s digest.Digest, off int64) (io.ReadCloser, error) {
	var body io.ReadCloser
	notFound, err := o.each(ctx, s.String(), func(a string) (err error) {
		body, _, err = o.client(a).Open(ctx, ns, s, off)
		return err
	})
	if notFound {
		return nil, fmt.Errorf("open %s: %w", s, registry.ErrBlobUnknown)
	}
	return body, err
}

// readSmall reads stored blob s whole, when it is at most limit bytes, checking its SHA-256. An
// origin that sends corrupt bytes is skipped.
func (o *origins) readSmall(ctx context.Context, ns string, s digest.Digest, limit int64) ([]byte, error) {
	var data []byte
	notFound, err := o.each(ctx, s.String(), func(a string) error {
		body, size, err := o.client(a).Open(ctx, ns, s, 0)
		if err != nil {
			return err
		}
		defer func() { _ = body.Close() }() // read side
		if size > limit {
			return errcode.Errorf(http.StatusBadRequest, errcode.CodeManifestInvalid, "%s is %d bytes, over the limit of %d", s, size, limit)
		}
		b, err := io.ReadAll(io.LimitReader(body, limit+1))
		if err != nil {
			return fmt.Errorf("read %s: %w", s, err)
		}
		if int64(len(b)) > limit {
			return errcode.Errorf(http.StatusBadRequest, errcode.CodeManifestInvalid, "%s is over the limit of %d bytes", s, limit)
		}
		if got := digest.FromBytes(b); got != s {
			return fmt.Errorf("read %s: origin %s sent bytes with digest %s", s, a, got)
		}
		data = b
		return nil
	})
	if notFound {
		return nil, fmt.Errorf("read %s: %w", s, registry.ErrManifestUnknown)
	}
	return data, err
}

// upload stores data (whose SHA-256 is s) in namespace ns.
func (o *origins) upload(ctx context.Context, ns string, s digest.Digest, data []byte) error {
	_, err := o.each(ctx, s.String(), func(a string) error {
		return o.client(a).Upload(ctx, ns, s, bytes.NewReader(data), int64(len(data)))
	})
	return err
}

// mount adds stored blob s to namespace ns (from names the namespace it was stored under, ""
// for ns itself) on the origins, so it is written back under ns too. ok is false when no origin
// and no storage backend has it: the first origin that answers has already asked the others and
// the storage, so its 404 is final.
func (o *origins) mount(ctx context.Context, ns, from string, s digest.Digest) (bool, error) {
	found := false
	_, err := o.each(ctx, s.String(), func(a string) (err error) {
		found, err = o.client(a).Mount(ctx, ns, from, s)
		return err
	})
	if err != nil {
		return false, err
	}
	return found, nil
}

// sessionError maps the error of an upload-session call to the origin holding the session: the
// client's mapping of the origin's answer (404 unknown session, 416 wrong offset, digest
// mismatch, other client faults with their status and code) stands, server faults other than
// 507 become 503, and no answer is 503 too: the session is not lost, only unavailable until the
// origin is back.
func sessionError(err error) error {
	var re *errcode.Error
	switch {
	case err == nil:
		return nil
	case errors.Is(err, client.ErrNoAnswer):
		return unavailable("the origin holding the upload cannot be reached", err)
	case errors.As(err, &re) && re.Status >= 500 && re.Status != http.StatusInsufficientStorage:
		return unavailable("the origin holding the upload failed", err)
	}
	return err
}
