package limit_test

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/krakenctl/krakenctl/backend"
	"github.com/krakenctl/krakenctl/backend/azure"
	"github.com/krakenctl/krakenctl/backend/gcs"
	"github.com/krakenctl/krakenctl/backend/limit"
	"github.com/krakenctl/krakenctl/backend/webhdfs"
	"github.com/krakenctl/krakenctl/backend/webhdfs/webhdfstest"
)

// BenchmarkWriteback measures write-back throughput into each of the three newer stores, as an
// origin's write-back runs it: writebackWorkers uploads of distinct 8 MiB blobs at a time, with
// and without an upload_rate cap on the route. fake-gcs-server and Azurite are the processes
// scripts/gcs-server.sh and scripts/azurite-server.sh start (GCS_* and AZURE_* in the
// environment, as scripts/test.sh exports them); the WebHDFS spec server runs in this process.
// Each iteration writes writebackWorkers blobs; b.SetBytes makes Go report MB/s.
//
//	eval "$(scripts/gcs-server.sh start 19300 krakenctl-test)"
//	eval "$(scripts/azurite-server.sh start 19400 krakenctl-test)"
//	go test -run '^$' -bench BenchmarkWriteback -benchtime 20x ./backend/limit/
func BenchmarkWriteback(b *testing.B) {
	const (
		writebackWorkers = 4
		blobSize         = 8 << 20
		capRate          = 32 << 20
	)
	stores := map[string]func(b *testing.B, prefix string) backend.Backend{
		"gcs": func(b *testing.B, prefix string) backend.Backend {
			if os.Getenv("GCS_ENDPOINT") == "" {
				b.Skip("GCS_ENDPOINT is not set: eval \"$(scripts/gcs-server.sh start 19300 krakenctl-test)\"")
			}
			be, err := gcs.New(b.Context(), gcs.Config{Bucket: os.Getenv("GCS_BUCKET"), Endpoint: os.Getenv("GCS_ENDPOINT"), Prefix: prefix})
			if err != nil {
				b.Fatal(err)
			}
			return be
		},
		"azure": func(b *testing.B, prefix string) backend.Backend {
			if os.Getenv("AZURE_BLOB_ENDPOINT") == "" {
				b.Skip("AZURE_BLOB_ENDPOINT is not set: eval \"$(scripts/azurite-server.sh start 19400 krakenctl-test)\"")
			}
			cfg := azure.Config{Account: os.Getenv("AZURE_STORAGE_ACCOUNT"), Container: os.Getenv("AZURE_CONTAINER"),
				Endpoint: os.Getenv("AZURE_BLOB_ENDPOINT"), AccountKeyEnv: "AZURE_STORAGE_KEY", Prefix: prefix}
			cfg.Defaults()
			be, err := azure.New(cfg)
			if err != nil {
				b.Fatal(err)
			}
			return be
		},
		"webhdfs": func(b *testing.B, prefix string) backend.Backend {
			s := webhdfstest.Start(b, webhdfstest.Options{})
			cfg := webhdfs.Config{Namenodes: s.NamenodeURLs(), Root: "/" + prefix, UserName: "krakenctl"}
			cfg.Defaults()
			be, err := webhdfs.New(cfg)
			if err != nil {
				b.Fatal(err)
			}
			return be
		},
	}
	blobs := make([][]byte, writebackWorkers)
	for i := range blobs {
		blobs[i] = make([]byte, blobSize)
		if _, err := rand.Read(blobs[i]); err != nil {
			b.Fatal(err)
		}
	}
	for _, kind := range []string{"gcs", "azure", "webhdfs"} {
		for _, rate := range []int64{0, capRate} {
			name := kind + "/uncapped"
			if rate > 0 {
				name = fmt.Sprintf("%s/upload_rate=%dMiB", kind, rate>>20)
			}
			b.Run(name, func(b *testing.B) {
				inner := stores[kind](b, fmt.Sprintf("bench-writeback-%d", rate))
				lb, err := limit.New(inner, limit.Config{UploadRate: rate}, limit.Deps{Route: kind})
				if err != nil {
					b.Fatal(err)
				}
				b.SetBytes(writebackWorkers * blobSize)
				var seq atomic.Int64
				for b.Loop() {
					var wg sync.WaitGroup
					errs := make([]error, writebackWorkers)
					for w := range writebackWorkers {
						wg.Go(func() {
							n := fmt.Sprintf("%064x", seq.Add(1))
							errs[w] = lb.Upload(b.Context(), "bench/writeback", n, bytes.NewReader(blobs[w]), blobSize)
						})
					}
					wg.Wait()
					for _, err := range errs {
						if err != nil {
							b.Fatal(err)
						}
					}
				}
			})
		}
	}
}
