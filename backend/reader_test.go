package backend_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/krakenctl/krakenctl/backend"
)

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("disk full") }

// After a failed copy, Err names the reading side's failure (the body's or the cancel) and is
// nil when the writer failed; a whole read leaves it nil.
func TestContextReaderTellsWhichSideFailed(t *testing.T) {
	body := &backend.ContextReader{Ctx: t.Context(), R: strings.NewReader("abc")}
	var out bytes.Buffer
	if n, err := io.Copy(&out, body); err != nil || n != 3 || body.Err != nil {
		t.Fatalf("whole read: n=%d err=%v Err=%v", n, err, body.Err)
	}

	broken := errors.New("connection reset")
	body = &backend.ContextReader{Ctx: t.Context(), R: io.MultiReader(strings.NewReader("ab"), iotestErr{broken})}
	if _, err := io.Copy(io.Discard, body); !errors.Is(err, broken) || !errors.Is(body.Err, broken) {
		t.Fatalf("body failed: err=%v Err=%v", err, body.Err)
	}

	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	body = &backend.ContextReader{Ctx: ctx, R: strings.NewReader("abc")}
	if _, err := io.Copy(io.Discard, body); !errors.Is(err, context.Canceled) || !errors.Is(body.Err, context.Canceled) {
		t.Fatalf("cancelled: err=%v Err=%v", err, body.Err)
	}

	body = &backend.ContextReader{Ctx: t.Context(), R: strings.NewReader("abc")}
	if _, err := io.Copy(failingWriter{}, body); err == nil || body.Err != nil {
		t.Fatalf("writer failed: err=%v Err=%v (want nil)", err, body.Err)
	}
}

type iotestErr struct{ err error }

func (r iotestErr) Read([]byte) (int, error) { return 0, r.err }
