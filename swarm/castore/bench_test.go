//go:build unix

package castore_test

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/krakenctl/krakenctl/swarm/castore"
)

// benchSize is the blob size of the ingest benchmarks: 256 MiB, or 16 MiB with -short.
func benchSize() int64 {
	if testing.Short() {
		return 16 << 20
	}
	return 256 << 20
}

var (
	benchFileOnce sync.Once
	benchFilePath string
	benchFileDgst digest.Digest
	benchFileErr  error
)

// benchFile writes one random file of benchSize bytes for all the benchmarks of the run, so
// each reads the same bytes from the same (warm) page cache. It lives in the system temporary
// directory, which must be on a real disk for the fsyncs to mean anything.
func benchFile(b *testing.B) (string, digest.Digest) {
	b.Helper()
	benchFileOnce.Do(func() {
		dir, err := os.MkdirTemp("", "castore-bench-")
		if err != nil {
			benchFileErr = err
			return
		}
		benchFilePath = filepath.Join(dir, "blob")
		f, err := os.Create(benchFilePath)
		if err != nil {
			benchFileErr = err
			return
		}
		h := sha256.New()
		w := bufio.NewWriterSize(io.MultiWriter(f, h), 1<<20)
		if _, err := io.CopyN(w, rand.Reader, benchSize()); err != nil {
			benchFileErr = err
			return
		}
		if err := w.Flush(); err != nil {
			benchFileErr = err
			return
		}
		benchFileErr = f.Close()
		benchFileDgst = digest.NewDigest(digest.SHA256, h)
	})
	if benchFileErr != nil {
		b.Fatal(benchFileErr)
	}
	return benchFilePath, benchFileDgst
}

// removeBenchFile removes the benchmarks' shared file, if one was made; TestMain calls it.
func removeBenchFile() {
	if benchFilePath != "" {
		_ = os.RemoveAll(filepath.Dir(benchFilePath))
	}
}

// cpuTime returns the CPU time (user + system) this process has used so far.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// reportCPU reports the CPU time per op, which unlike the wall time hardly depends on what else
// runs on the machine.
func reportCPU(b *testing.B, cpu time.Duration) {
	b.ReportMetric(float64(cpu.Milliseconds())/float64(b.N), "cpu-ms/op")
}

// BenchmarkIngest measures Store.Ingest of a file: read, hash, write, fsync, rename, fsync the
// directory. Compare with BenchmarkSha256sumBaseline, which only reads and hashes.
func BenchmarkIngest(b *testing.B) {
	path, d := benchFile(b)
	s, err := castore.Open(b.TempDir(), castore.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer func() {
		if err := s.Close(); err != nil {
			b.Error(err)
		}
	}()
	b.SetBytes(benchSize())
	var cpu time.Duration
	b.ResetTimer()
	for range b.N {
		f, err := os.Open(path)
		if err != nil {
			b.Fatal(err)
		}
		before := cpuTime(b)
		if _, err := s.Ingest(context.Background(), d, f); err != nil {
			b.Fatal(err)
		}
		cpu += cpuTime(b) - before
		b.StopTimer()
		_ = f.Close()
		if err := s.Delete(d); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
	}
	reportCPU(b, cpu)
}

// BenchmarkSha256sumBaseline runs coreutils' sha256sum on the same file: the speed of reading
// and hashing alone, with the machine's best SHA-256, to compare Ingest against.
func BenchmarkSha256sumBaseline(b *testing.B) {
	path, d := benchFile(b)
	bin, err := exec.LookPath("sha256sum")
	if err != nil {
		b.Skip("sha256sum not installed")
	}
	b.SetBytes(benchSize())
	var cpu time.Duration
	b.ResetTimer()
	for range b.N {
		cmd := exec.Command(bin, path)
		out, err := cmd.Output()
		if err != nil {
			b.Fatal(err)
		}
		cpu += cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
		if got := strings.Fields(string(out)); len(got) == 0 || got[0] != d.Encoded() {
			b.Fatalf("sha256sum says %q, want %s", out, d.Encoded())
		}
	}
	reportCPU(b, cpu)
}

// BenchmarkSha256Go reads and hashes the same file with Go's crypto/sha256, separating the
// hash's speed from the store's writes.
func BenchmarkSha256Go(b *testing.B) {
	path, d := benchFile(b)
	b.SetBytes(benchSize())
	var cpu time.Duration
	b.ResetTimer()
	for range b.N {
		f, err := os.Open(path)
		if err != nil {
			b.Fatal(err)
		}
		before := cpuTime(b)
		got, err := digest.SHA256.FromReader(f)
		cpu += cpuTime(b) - before
		_ = f.Close()
		if err != nil {
			b.Fatal(err)
		}
		if got != d {
			b.Fatalf("got %s, want %s", got, d)
		}
	}
	reportCPU(b, cpu)
}
