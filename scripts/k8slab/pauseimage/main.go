// Command pauseimage packages the lab's pause binary (scripts/k8slab/pause) as a one-layer image
// FROM scratch and writes it as a `docker load` / `ctr images import` tarball, with
// go-containerregistry and no daemon: the Kubernetes lab (scripts/k8s-lab.sh) imports it into
// its containerd as the sandbox image, so nothing is pulled.
//
//	go run ./scripts/k8slab/pauseimage -bin PAUSE -tag registry.kk.test/k8slab/pause:1 -out pause.tar
package main

import (
	"archive/tar"
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

func main() {
	bin := flag.String("bin", "", "the static pause binary (required)")
	tag := flag.String("tag", "", "image reference of the tarball (required)")
	out := flag.String("out", "", "tarball to write (required)")
	flag.Parse()
	if *bin == "" || *tag == "" || *out == "" {
		fmt.Fprintln(os.Stderr, "pauseimage: -bin, -tag and -out are required")
		os.Exit(2)
	}
	if err := run(*bin, *tag, *out); err != nil {
		fmt.Fprintln(os.Stderr, "pauseimage:", err)
		os.Exit(1)
	}
}

func run(bin, tag, out string) error {
	ref, err := name.NewTag(tag)
	if err != nil {
		return err
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		return err
	}
	// A fixed time stamp: the same binary gives the same image digest on every build.
	epoch := time.Unix(0, 0).UTC()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	if err := tw.WriteHeader(&tar.Header{Name: "pause", Mode: 0o755, Size: int64(len(data)), ModTime: epoch, Typeflag: tar.TypeReg}); err != nil {
		return err
	}
	if _, err := tw.Write(data); err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(buf.Bytes())), nil
	})
	if err != nil {
		return err
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return err
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return err
	}
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture, cfg.Created = "linux", runtime.GOARCH, v1.Time{Time: epoch}
	// 65535, the upstream pause's user: the sandbox needs no privilege.
	cfg.Config.Entrypoint = []string{"/pause"}
	cfg.Config.User = "65535:65535"
	if img, err = mutate.ConfigFile(img, cfg); err != nil {
		return err
	}
	return tarball.WriteToFile(out, ref, img)
}
