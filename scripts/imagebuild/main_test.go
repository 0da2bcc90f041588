package main

import (
	"archive/tar"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/stretchr/testify/require"
)

// fakeBins writes a stand-in binary per platform (the layer does not care what it holds) and
// returns the -bin flags.
func fakeBins(t *testing.T, archs ...string) []string {
	t.Helper()
	dir := t.TempDir()
	var args []string
	for _, a := range archs {
		p := filepath.Join(dir, a)
		require.NoError(t, os.WriteFile(p, []byte("binary for "+a), 0o755))
		args = append(args, "-bin", "linux/"+a+"="+p)
	}
	return args
}

func buildArgs(t *testing.T, out string, bins []string) []string {
	t.Helper()
	ca := filepath.Join(t.TempDir(), "ca.crt")
	require.NoError(t, os.WriteFile(ca, []byte("-----BEGIN CERTIFICATE-----\nfake\n"), 0o644))
	return append([]string{"-out", out, "-tag", "krakenctl:t1", "-version", "v1.2.3", "-revision", "abc123",
		"-created", "2026-01-02T03:04:05Z", "-ca-certificates", ca}, bins...)
}

// files reads the single layer of img: name -> header, and the contents of regular files.
func files(t *testing.T, img v1.Image) (map[string]*tar.Header, map[string]string) {
	t.Helper()
	layers, err := img.Layers()
	require.NoError(t, err)
	require.Len(t, layers, 1)
	rc := mutate.Extract(img)
	defer func() { require.NoError(t, rc.Close()) }()
	hdrs, data := map[string]*tar.Header{}, map[string]string{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err)
		n := strings.TrimSuffix(h.Name, "/")
		hdrs[n] = h
		if h.Typeflag == tar.TypeReg {
			b, err := io.ReadAll(tr)
			require.NoError(t, err)
			data[n] = string(b)
		}
	}
	return hdrs, data
}

// TestBuildMultiArch reads back what a two-platform build wrote: an index with one manifest per
// platform, each image non-root with the labels, its own binary, the user's entries and a
// state directory the user owns, no shell; and a docker tarball per platform with the tag.
func TestBuildMultiArch(t *testing.T) {
	out := t.TempDir()
	var stdout strings.Builder
	require.NoError(t, run(buildArgs(t, out, fakeBins(t, "amd64", "arm64")), &stdout))

	p, err := layout.FromPath(filepath.Join(out, "oci"))
	require.NoError(t, err)
	top, err := p.ImageIndex()
	require.NoError(t, err)
	topm, err := top.IndexManifest()
	require.NoError(t, err)
	require.Len(t, topm.Manifests, 1, "the layout holds one index")
	require.Equal(t, "t1", topm.Manifests[0].Annotations["org.opencontainers.image.ref.name"])
	require.Contains(t, stdout.String(), topm.Manifests[0].Digest.String(), "the printed digest is the index's")

	idx, err := top.ImageIndex(topm.Manifests[0].Digest)
	require.NoError(t, err)
	im, err := idx.IndexManifest()
	require.NoError(t, err)
	require.Equal(t, "v1.2.3", im.Annotations["org.opencontainers.image.version"])
	require.Len(t, im.Manifests, 2)
	for i, arch := range []string{"amd64", "arm64"} {
		d := im.Manifests[i]
		require.Equal(t, &v1.Platform{OS: "linux", Architecture: arch}, d.Platform)
		img, err := idx.Image(d.Digest)
		require.NoError(t, err)
		cf, err := img.ConfigFile()
		require.NoError(t, err)
		require.Equal(t, arch, cf.Architecture)
		require.Equal(t, "65532:65532", cf.Config.User)
		require.Equal(t, []string{"/krakenctl"}, cf.Config.Entrypoint)
		for k, want := range map[string]string{
			"title": "krakenctl", "version": "v1.2.3", "revision": "abc123", "created": "2026-01-02T03:04:05Z",
			"licenses": "NOASSERTION", "source": "https://github.com/krakenctl/krakenctl",
		} {
			require.Equal(t, want, cf.Config.Labels["org.opencontainers.image."+k], k)
		}
		require.NotEmpty(t, cf.Config.Labels["org.opencontainers.image.description"])

		hdrs, data := files(t, img)
		require.Equal(t, "binary for "+arch, data["krakenctl"])
		require.Equal(t, int64(0o755), hdrs["krakenctl"].Mode)
		require.Contains(t, data["etc/passwd"], "krakenctl:x:65532:65532:")
		require.Contains(t, data["etc/group"], "krakenctl:x:65532:")
		require.Contains(t, data["etc/ssl/certs/ca-certificates.crt"], "BEGIN CERTIFICATE")
		st := hdrs["var/lib/krakenctl"]
		require.NotNil(t, st)
		require.Equal(t, byte(tar.TypeDir), st.Typeflag)
		require.Equal(t, []int{65532, 65532}, []int{st.Uid, st.Gid}, "the state directory is the user's")
		require.Equal(t, int64(0o1777), hdrs["tmp"].Mode)
		for n := range hdrs {
			require.False(t, strings.HasPrefix(n, "bin") || strings.HasSuffix(n, "/sh"), "no shell: %s", n)
		}

		// The docker load tarball of this platform is the same image, under the tag.
		tb, err := tarball.ImageFromPath(filepath.Join(out, "krakenctl_linux_"+arch+".tar"), nil)
		require.NoError(t, err)
		want, err := img.ConfigName()
		require.NoError(t, err)
		got, err := tb.ConfigName()
		require.NoError(t, err)
		require.Equal(t, want, got)
		m, err := tarball.LoadManifest(func() (io.ReadCloser, error) {
			return os.Open(filepath.Join(out, "krakenctl_linux_"+arch+".tar"))
		})
		require.NoError(t, err)
		require.Equal(t, []string{"krakenctl:t1"}, m[0].RepoTags)
	}
}

// TestBuildReproducible: the same inputs give the same index digest, and a rebuild replaces
// the layout rather than adding to it.
func TestBuildReproducible(t *testing.T) {
	out := t.TempDir()
	bins := fakeBins(t, "amd64")
	args := buildArgs(t, out, bins)
	var first, second strings.Builder
	require.NoError(t, run(args, &first))
	require.NoError(t, run(args, &second))
	require.Equal(t, first.String(), second.String())
	p, err := layout.FromPath(filepath.Join(out, "oci"))
	require.NoError(t, err)
	top, err := p.ImageIndex()
	require.NoError(t, err)
	topm, err := top.IndexManifest()
	require.NoError(t, err)
	require.Len(t, topm.Manifests, 1, "a rebuild replaces the layout's index")

	var other strings.Builder
	require.NoError(t, run(append(args, "-version", "v9"), &other))
	require.NotEqual(t, first.String(), other.String(), "another version is another image")
}

// TestParseRejects: bad flags are refused with an error naming them, before anything is written.
func TestParseRejects(t *testing.T) {
	bins := fakeBins(t, "amd64")
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"missing", []string{"-out", "x"}, "missing -bin, -created, -version"},
		{"darwin", append(buildArgs(t, "x", nil), "-bin", "darwin/arm64=/bin/true"), "linux only"},
		{"twice", append(buildArgs(t, "x", bins), bins...), "given twice"},
		{"not a pair", append(buildArgs(t, "x", nil), "-bin", "linux/amd64"), "not OS/ARCH=PATH"},
		{"bad time", append(buildArgs(t, "x", bins), "-created", "yesterday"), "-created"},
		{"bad tag", append(buildArgs(t, "x", bins), "-tag", "Krakenctl:UPPER"), "-tag"},
		{"missing binary", append(buildArgs(t, t.TempDir(), nil), "-bin", "linux/amd64=/nonexistent/krakenctl"), "read the binary"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := run(tc.args, io.Discard)
			require.ErrorContains(t, err, tc.want)
		})
	}
}
