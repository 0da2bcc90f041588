package webhdfs_test

import (
	"bytes"
	"io"
	"testing"

	"github.com/krakenctl/krakenctl/backend/webhdfs/webhdfstest"
)

// BenchmarkUpload measures an upload's whole path against the spec server: CREATE, the redirect,
// the bytes to the datanode, the length check and the rename. The server keeps files in memory,
// so this is the backend's overhead, not HDFS's speed.
func BenchmarkUpload(b *testing.B) {
	s := webhdfstest.Start(b, webhdfstest.Options{})
	be := newBackendTB(b, config(s, "/bench"))
	data := bytes.Repeat([]byte("krakenctl"), (8<<20)/9)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if err := be.Upload(b.Context(), "bench", "obj", bytes.NewReader(data), int64(len(data))); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDownload measures OPEN through the redirect, with the length check.
func BenchmarkDownload(b *testing.B) {
	s := webhdfstest.Start(b, webhdfstest.Options{})
	be := newBackendTB(b, config(s, "/bench"))
	data := bytes.Repeat([]byte("krakenctl"), (8<<20)/9)
	if err := be.Upload(b.Context(), "bench", "obj", bytes.NewReader(data), int64(len(data))); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if err := be.Download(b.Context(), "bench", "obj", io.Discard); err != nil {
			b.Fatal(err)
		}
	}
}
