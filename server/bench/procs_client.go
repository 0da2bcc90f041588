package bench

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"sync/atomic"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/krakenctl/krakenctl/server/client"
	"github.com/krakenctl/krakenctl/server/httpserve"
)

// SwarmClientConfig is one client process of a separate-process swarm benchmark
// (`krakenctl bench swarm-client`): what it reads, from where, and how it checks it.
type SwarmClientConfig struct {
	// Agent is the address of the agent's blob API (host:port).
	Agent string
	// Digest and Size are the blob's; it is read from the benchmark's namespace.
	Digest digest.Digest
	Size   int64
	// Verify checks every byte read against CRC32C, the CRC-32C (Castagnoli) of the blob: the
	// agent has checked every piece and the blob's SHA-256 before it releases the last byte,
	// so the client needs only to catch a wrong or missing byte, and a CRC does that for a
	// tenth of the CPU another SHA-256 would take, CPU that the run counts.
	Verify bool
	CRC32C uint32
}

// SwarmClientResult is what a client process reports on stdout, as one JSON line: wall-clock
// times (every process of a run shares the host's clock) of the moment it saw the release,
// its first byte and its last, and how many bytes it read.
type SwarmClientResult struct {
	ReleasedUnixNano  int64 `json:"released_unix_nano"`
	FirstByteUnixNano int64 `json:"first_byte_unix_nano"`
	LastByteUnixNano  int64 `json:"last_byte_unix_nano"`
	Bytes             int64 `json:"bytes"`
}

// clientBuffer is what a client reads per call: fewer read calls per byte than io.Copy's
// 32 KiB, on CPU the run counts.
const clientBuffer = 256 << 10

// SwarmClient is the body of one client process. It connects to its agent (a GET /health,
// so that the pull goes out on a warm connection, as the in-process clients' do), writes the
// line "ready" to out, and waits until release yields a byte or ends: the benchmark releases
// every client at once by closing the one pipe they all read. It then GETs the blob from the
// agent's blob API, checks its length and (cfg.Verify) its CRC-32C, and writes its
// SwarmClientResult to out as one JSON line. Any failure is its error, and nothing more is
// written.
func SwarmClient(ctx context.Context, cfg SwarmClientConfig, release io.Reader, out io.Writer) error {
	if cfg.Agent == "" || cfg.Size < 1 {
		return fmt.Errorf("%w: want an agent address and a size of at least 1 byte", ErrInvalidConfig)
	}
	if err := cfg.Digest.Validate(); err != nil {
		return fmt.Errorf("%w: digest: %w", ErrInvalidConfig, err)
	}
	hc := httpserve.NewClient(httpserve.ClientOptions{ResponseHeaderTimeout: -1, MaxIdleConnsPerHost: 1})
	defer hc.CloseIdleConnections()
	if err := get(ctx, hc, "http://"+cfg.Agent+"/health"); err != nil {
		return fmt.Errorf("connect to the agent: %w", err)
	}
	if _, err := fmt.Fprintln(out, clientReadyLine); err != nil {
		return fmt.Errorf("say ready: %w", err)
	}
	// A read of a pipe cannot be cancelled: wait for it beside ctx, so that SIGTERM (which
	// ends ctx) still ends a client that was never released. The goroutine ends with the
	// process.
	released := make(chan error, 1)
	go func() {
		_, err := release.Read(make([]byte, 1))
		released <- err
	}()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case err := <-released:
		if err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("wait for the release: %w", err)
		}
	}
	start := time.Now()
	body, n, err := client.NewAgent(cfg.Agent, hc).Open(ctx, swarmNamespace, cfg.Digest, 0)
	if err != nil {
		return fmt.Errorf("pull %s: %w", cfg.Digest, err)
	}
	defer func() { _ = body.Close() }() // read side
	if n != cfg.Size {
		return fmt.Errorf("pull %s: the agent announced %d bytes, want %d", cfg.Digest, n, cfg.Size)
	}
	w := &clientWriter{start: start, got: new(atomic.Int64)}
	if cfg.Verify {
		w.h = crc32.New(castagnoli)
	}
	if _, err := io.CopyBuffer(w, body, make([]byte, clientBuffer)); err != nil {
		return fmt.Errorf("pull %s: read blob: %w", cfg.Digest, err)
	}
	last := time.Now()
	if w.n != cfg.Size {
		return fmt.Errorf("pull %s: read %d bytes, want %d", cfg.Digest, w.n, cfg.Size)
	}
	if cfg.Verify {
		if sum := w.h.Sum32(); sum != cfg.CRC32C {
			return fmt.Errorf("pull %s: %w: CRC-32C of the bytes read is %08x, the blob's is %08x", cfg.Digest, errWrongBytes, sum, cfg.CRC32C)
		}
	}
	r := SwarmClientResult{ReleasedUnixNano: start.UnixNano(), FirstByteUnixNano: start.Add(w.first).UnixNano(), LastByteUnixNano: last.UnixNano(), Bytes: w.n}
	if err := json.NewEncoder(out).Encode(r); err != nil {
		return fmt.Errorf("write result: %w", err)
	}
	return nil
}
