// Command imagebuild assembles the krakenctl container image from binaries already built, with
// go-containerregistry and without a Docker daemon or a base image: nothing is pulled, so it
// builds offline. scripts/image.sh builds the binaries and runs it; see that script for use.
//
//	go run ./scripts/imagebuild -out DIR -tag krakenctl:dev -version V -revision R \
//	    -created 2026-01-02T03:04:05Z -bin linux/amd64=bin/linux_amd64/krakenctl [-bin ...]
//
// It writes DIR/oci, an OCI image layout holding one image index (one manifest per -bin
// platform) named by the tag, and DIR/krakenctl_OS_ARCH.tar per platform, a `docker load`
// tarball tagged with -tag. The image is one layer FROM scratch: /krakenctl, /etc/passwd and
// /etc/group with the krakenctl user (uid and gid 65532), the build machine's CA bundle (the
// registry backend talks to https upstreams), an empty /tmp and /var/lib/krakenctl owned by
// 65532. There is no shell. Every time stamp is -created, so the same inputs give the same
// digests.
package main

import (
	"archive/tar"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// uid and gid of the krakenctl user: 65532, the "nonroot" of distroless images, so a cluster's
// PodSecurity policies written for those apply unchanged.
const (
	uid      = 65532
	gid      = 65532
	stateDir = "var/lib/krakenctl"
)

// options is the command line.
type options struct {
	out      string
	tag      string
	version  string
	revision string
	created  time.Time
	source   string
	licenses string
	caFile   string
	bins     []platformBin
}

// platformBin is one -bin flag: the linux binary for one platform.
type platformBin struct {
	platform v1.Platform
	path     string
}

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "imagebuild:", err)
		os.Exit(1)
	}
}

func run(args []string, stdout io.Writer) error {
	o, err := parse(args)
	if err != nil {
		return err
	}
	idx, imgs, err := build(o)
	if err != nil {
		return err
	}
	digest, err := write(o, idx, imgs)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(stdout, "%s %s\n", filepath.Join(o.out, "oci"), digest)
	return err
}

func parse(args []string) (options, error) {
	var o options
	var created string
	fs := flag.NewFlagSet("imagebuild", flag.ContinueOnError)
	fs.StringVar(&o.out, "out", "", "output directory (required)")
	fs.StringVar(&o.tag, "tag", "krakenctl:dev", "image name and tag of the docker load tarballs and the layout")
	fs.StringVar(&o.version, "version", "", "org.opencontainers.image.version (required)")
	fs.StringVar(&o.revision, "revision", "", "org.opencontainers.image.revision: the source commit")
	fs.StringVar(&created, "created", "", "RFC 3339 build time, for the config and every file (required; the commit time makes builds reproducible)")
	fs.StringVar(&o.source, "source", "https://github.com/krakenctl/krakenctl", "org.opencontainers.image.source")
	fs.StringVar(&o.licenses, "licenses", "NOASSERTION", "org.opencontainers.image.licenses (an SPDX expression)")
	fs.StringVar(&o.caFile, "ca-certificates", "/etc/ssl/certs/ca-certificates.crt", "CA bundle to install at /etc/ssl/certs/ca-certificates.crt; empty for none")
	fs.Func("bin", "OS/ARCH=PATH: the static binary for one platform (repeatable; OS must be linux)", func(s string) error {
		plat, path, ok := strings.Cut(s, "=")
		osName, arch, ok2 := strings.Cut(plat, "/")
		if !ok || !ok2 || path == "" || arch == "" {
			return fmt.Errorf("%q is not OS/ARCH=PATH", s)
		}
		if osName != "linux" {
			return fmt.Errorf("%q: the image is linux only", s)
		}
		for _, b := range o.bins {
			if b.platform.Architecture == arch {
				return fmt.Errorf("%q: platform %s given twice", s, plat)
			}
		}
		o.bins = append(o.bins, platformBin{platform: v1.Platform{OS: osName, Architecture: arch}, path: path})
		return nil
	})
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	var missing []string
	for flagName, v := range map[string]string{"out": o.out, "version": o.version, "created": created} {
		if v == "" {
			missing = append(missing, "-"+flagName)
		}
	}
	if len(o.bins) == 0 {
		missing = append(missing, "-bin")
	}
	if len(missing) > 0 {
		slices.Sort(missing)
		return o, fmt.Errorf("missing %s", strings.Join(missing, ", "))
	}
	t, err := time.Parse(time.RFC3339, created)
	if err != nil {
		return o, fmt.Errorf("-created: %w", err)
	}
	o.created = t.UTC()
	if _, err := name.NewTag(o.tag); err != nil {
		return o, fmt.Errorf("-tag: %w", err)
	}
	return o, nil
}

// labels are the OCI annotation keys, on the config (what `docker inspect` shows) and on the
// manifests and the index (what registries show).
func labels(o options) map[string]string {
	return map[string]string{
		"org.opencontainers.image.title":       "krakenctl",
		"org.opencontainers.image.description": "P2P container image distribution: agent, origin, tracker, proxy and build-index in one binary",
		"org.opencontainers.image.source":      o.source,
		"org.opencontainers.image.version":     o.version,
		"org.opencontainers.image.revision":    o.revision,
		"org.opencontainers.image.created":     o.created.Format(time.RFC3339),
		"org.opencontainers.image.licenses":    o.licenses,
	}
}

// build returns the index and its images, in -bin order.
func build(o options) (v1.ImageIndex, []v1.Image, error) {
	var ca []byte
	if o.caFile != "" {
		var err error
		if ca, err = os.ReadFile(o.caFile); err != nil {
			return nil, nil, fmt.Errorf("read the CA bundle (-ca-certificates \"\" builds without one): %w", err)
		}
	}
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	var imgs []v1.Image
	for _, b := range o.bins {
		img, err := image(o, b, ca)
		if err != nil {
			return nil, nil, fmt.Errorf("%s/%s: %w", b.platform.OS, b.platform.Architecture, err)
		}
		plat := b.platform
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &plat}})
		imgs = append(imgs, img)
	}
	idx, ok := mutate.Annotations(idx, labels(o)).(v1.ImageIndex)
	if !ok {
		return nil, nil, errors.New("annotate the index: mutate.Annotations returned no index")
	}
	return idx, imgs, nil
}

// image is the image of one platform.
func image(o options, b platformBin, ca []byte) (v1.Image, error) {
	bin, err := os.ReadFile(b.path)
	if err != nil {
		return nil, fmt.Errorf("read the binary: %w", err)
	}
	layerTar, err := rootfs(bin, ca, o.created)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, fmt.Errorf("make the layer: %w", err)
	}
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	img, err = mutate.Append(img, mutate.Addendum{Layer: layer, History: v1.History{
		Created:   v1.Time{Time: o.created},
		CreatedBy: "scripts/image.sh",
		Comment:   "krakenctl " + o.version,
	}})
	if err != nil {
		return nil, fmt.Errorf("append the layer: %w", err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("read the config: %w", err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Variant = b.platform.OS, b.platform.Architecture, b.platform.Variant
	cf.Created = v1.Time{Time: o.created}
	cf.Config = v1.Config{
		User:       fmt.Sprintf("%d:%d", uid, gid),
		Entrypoint: []string{"/krakenctl"},
		// Kubernetes does not set HOME from /etc/passwd as docker does; dev up's default state
		// directory derives from it.
		Env:        []string{"HOME=/" + stateDir},
		WorkingDir: "/" + stateDir,
		Labels:     labels(o),
	}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, fmt.Errorf("set the config: %w", err)
	}
	img, ok := mutate.Annotations(img, labels(o)).(v1.Image)
	if !ok {
		return nil, errors.New("annotate the manifest: mutate.Annotations returned no image")
	}
	return img, nil
}

// rootfs is the layer's tar: every entry owned by root but the state directory, every time
// stamp at created.
func rootfs(bin, ca []byte, created time.Time) ([]byte, error) {
	passwd := fmt.Sprintf("root:x:0:0:root:/root:/sbin/nologin\nkrakenctl:x:%d:%d:krakenctl:/%s:/sbin/nologin\n", uid, gid, stateDir)
	group := fmt.Sprintf("root:x:0:\nkrakenctl:x:%d:\n", gid)
	type entry struct {
		name     string
		mode     int64
		data     []byte
		dir      bool
		uid, gid int
	}
	entries := []entry{
		{name: "etc/", mode: 0o755, dir: true},
		{name: "etc/group", mode: 0o644, data: []byte(group)},
		// Go's resolver reads it: files first, so /etc/hosts (which the runtime writes) wins.
		{name: "etc/nsswitch.conf", mode: 0o644, data: []byte("hosts: files dns\n")},
		{name: "etc/passwd", mode: 0o644, data: []byte(passwd)},
	}
	if ca != nil {
		entries = append(entries,
			entry{name: "etc/ssl/", mode: 0o755, dir: true},
			entry{name: "etc/ssl/certs/", mode: 0o755, dir: true},
			entry{name: "etc/ssl/certs/ca-certificates.crt", mode: 0o644, data: ca})
	}
	entries = append(entries,
		entry{name: "krakenctl", mode: 0o755, data: bin},
		entry{name: "tmp/", mode: 0o1777, dir: true},
		entry{name: "var/", mode: 0o755, dir: true},
		entry{name: "var/lib/", mode: 0o755, dir: true},
		entry{name: stateDir + "/", mode: 0o750, dir: true, uid: uid, gid: gid},
	)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{
			Name: e.name, Mode: e.mode, Uid: e.uid, Gid: e.gid,
			ModTime: created, Format: tar.FormatPAX,
		}
		if e.dir {
			h.Typeflag = tar.TypeDir
		} else {
			h.Typeflag, h.Size = tar.TypeReg, int64(len(e.data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, fmt.Errorf("layer: %s: %w", e.name, err)
		}
		if _, err := tw.Write(e.data); err != nil {
			return nil, fmt.Errorf("layer: %s: %w", e.name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("layer: %w", err)
	}
	return buf.Bytes(), nil
}

// write replaces DIR/oci and the tarballs, and returns the index's digest.
func write(o options, idx v1.ImageIndex, imgs []v1.Image) (v1.Hash, error) {
	tag, err := name.NewTag(o.tag)
	if err != nil {
		return v1.Hash{}, fmt.Errorf("-tag: %w", err)
	}
	dir := filepath.Join(o.out, "oci")
	// A layout appended to would keep the blobs and the index entry of an older build.
	if err := os.RemoveAll(dir); err != nil {
		return v1.Hash{}, fmt.Errorf("remove the old layout: %w", err)
	}
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return v1.Hash{}, fmt.Errorf("write the layout: %w", err)
	}
	if err := p.AppendIndex(idx, layout.WithAnnotations(map[string]string{
		"org.opencontainers.image.ref.name": tag.TagStr(),
	})); err != nil {
		return v1.Hash{}, fmt.Errorf("write the layout: %w", err)
	}
	for i, img := range imgs {
		plat := o.bins[i].platform
		file := filepath.Join(o.out, fmt.Sprintf("krakenctl_%s_%s.tar", plat.OS, plat.Architecture))
		if err := tarball.WriteToFile(file, tag, img); err != nil {
			return v1.Hash{}, fmt.Errorf("write %s: %w", file, err)
		}
	}
	d, err := idx.Digest()
	if err != nil {
		return v1.Hash{}, fmt.Errorf("digest the index: %w", err)
	}
	return d, nil
}
