package registry

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/krakenctl/krakenctl/server/registry/errcode"
)

// Native fuzz tests of the parsers that see untrusted input. Run one with e.g.
// go test -run '^$' -fuzz FuzzParseManifest ./server/registry/

func FuzzParseManifest(f *testing.F) {
	cfg := `{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"` + digest.FromString("c").String() + `","size":1}`
	for _, s := range []struct{ ct, body string }{
		{"", `{"schemaVersion":2,"config":` + cfg + `,"layers":[]}`},
		{MediaTypeOCIManifest, `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":` + cfg + `,"layers":[` + cfg + `],"subject":` + cfg + `}`},
		{"", `{"schemaVersion":2,"manifests":[` + cfg + `]}`},
		{MediaTypeDockerList, `{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.list.v2+json","manifests":[]}`},
		{"", `{"schemaVersion":2,"config":{"mediaType":"a/b","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2,"data":"e30="}}`},
		{"a/b; x=y", `null`},
		{"", `[]`},
	} {
		f.Add(s.ct, []byte(s.body))
	}
	f.Fuzz(func(t *testing.T, ct string, body []byte) {
		m, err := ParseManifest(ct, body)
		if err != nil {
			var e *errcode.Error
			if !errors.As(err, &e) || e.Code != errcode.CodeManifestInvalid || (e.Status != http.StatusBadRequest && e.Status != http.StatusRequestEntityTooLarge) {
				t.Fatalf("error is not MANIFEST_INVALID 400/413: %#v", err)
			}
			return
		}
		if !IsManifestMediaType(m.MediaType) {
			t.Fatalf("accepted media type %q", m.MediaType)
		}
		if m.Digest != digest.FromBytes(body) {
			t.Fatalf("digest %s is not the body's", m.Digest)
		}
		for _, d := range append(append(m.Blobs, m.Manifests...), m.Descriptor()) {
			if err := d.Digest.Validate(); err != nil || d.Size < 0 || d.MediaType == "" {
				t.Fatalf("accepted descriptor %+v", d)
			}
		}
		if IsIndexMediaType(m.MediaType) != (m.Config == nil) || (m.Config != nil && (len(m.Blobs) == 0 || m.Blobs[0].Digest != m.Config.Digest)) {
			t.Fatalf("config %+v and blobs %+v of a %s", m.Config, m.Blobs, m.MediaType)
		}
		if m.Subject != nil && m.Subject.Digest.Validate() != nil {
			t.Fatalf("accepted subject %+v", m.Subject)
		}
	})
}

func FuzzParseReference(f *testing.F) {
	for _, s := range []string{"latest", "v1.0_rc-1", "sha256:" + strings.Repeat("a", 64), "sha512:" + strings.Repeat("0", 128), "sha256:baddigeststring", ".x", "md5:abc", "a:b:c", ""} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ref, err := ParseReference(s)
		if err != nil {
			if st := FromError(err).Status; st != http.StatusBadRequest {
				t.Fatalf("status %d for %q", st, s)
			}
			return
		}
		if (ref.Tag == "") == (ref.Digest == "") {
			t.Fatalf("%q: want exactly one of tag and digest, got %+v", s, ref)
		}
		if ref.String() != s {
			t.Fatalf("%q parsed as %q", s, ref.String())
		}
		if ref.Digest != "" {
			if alg := ref.Digest.Algorithm(); alg != digest.SHA256 && alg != digest.SHA512 || ref.Digest.Validate() != nil {
				t.Fatalf("accepted digest %q", s)
			}
		} else if len(s) > MaxTagLength || strings.ContainsAny(s, "/:@ ") || s[0] == '.' || s[0] == '-' {
			t.Fatalf("accepted tag %q", s)
		}
	})
}

func FuzzValidateName(f *testing.F) {
	for _, s := range []string{"a", "library/ubuntu", "a__b/c---d/e.f", "A", "a//b", "-a", "a/", strings.Repeat("a", 300)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if err := ValidateName(s); err != nil {
			if FromError(err).Code != errcode.CodeNameInvalid {
				t.Fatalf("code %s for %q", FromError(err).Code, s)
			}
			return
		}
		if len(s) > MaxNameLength || strings.Trim(s, "abcdefghijklmnopqrstuvwxyz0123456789._/-") != "" {
			t.Fatalf("accepted name %q", s)
		}
		for _, c := range strings.Split(s, "/") {
			if c == "" || strings.Trim(c[:1]+c[len(c)-1:], "abcdefghijklmnopqrstuvwxyz0123456789") != "" || strings.Contains(c, "___") || strings.Contains(c, "..") {
				t.Fatalf("accepted name %q with component %q", s, c)
			}
		}
		// Every accepted name routes back to itself.
		for _, p := range []string{"/v2/" + s + "/manifests/latest", "/v2/" + s + "/blobs/uploads/", "/v2/" + s + "/tags/list"} {
			rt, ok := parseRoute(p)
			if !ok || rt.name != s {
				t.Fatalf("route %q: %+v %v", p, rt, ok)
			}
		}
	})
}

// FuzzParseRange: whatever a client sends as Range, the answer is a 416 RANGE_INVALID, the
// whole blob, or one range inside the blob that parses back to itself when written as a
// single "bytes=FIRST-LAST" (so every role serves it the same way).
func FuzzParseRange(f *testing.F) {
	for _, s := range []string{"bytes=0-0", "bytes=500-1499", "bytes=-500", "bytes=500-", "bytes=500-0", "bytes=5000-10000",
		"bytes=0-1,3-4", "bytes=0-1,2-3", "bytes=0-0,0-0,0-0", "bytes=-0,0-0", "items=1-2", "bytes=-0", "bytes=99999999999999999999-",
		"bytes= 1 - 2 ", "bytes=--1", "BYTES=1-", "bytes=,", "bytes=1-2,,", "bytes"} {
		f.Add(s, int64(2048))
		f.Add(s, int64(0))
	}
	f.Add("bytes=0-", int64(0))
	f.Add(strings.Repeat("0-0,", 20000)+"0-0", int64(1<<20))
	f.Fuzz(func(t *testing.T, h string, size int64) {
		if size < 0 {
			size = -size
		}
		if size < 0 {
			return
		}
		br, err := ParseRange(h, size)
		switch {
		case err != nil:
			if e := FromError(err); e.Status != http.StatusRequestedRangeNotSatisfiable || e.Code != errcode.CodeRangeInvalid {
				t.Fatalf("%q: error %v", h, err)
			}
			if br != nil {
				t.Fatalf("%q: range and error", h)
			}
		case br != nil:
			if br.Start < 0 || br.Length < 1 || br.Start+br.Length > size || br.Start+br.Length < br.Start {
				t.Fatalf("%q of %d bytes: range %+v outside the blob", h, size, *br)
			}
			again, err := ParseRange(fmt.Sprintf("bytes=%d-%d", br.Start, br.Start+br.Length-1), size)
			if err != nil || again == nil || *again != *br {
				t.Fatalf("%q of %d bytes: %+v does not parse back to itself: %+v, %v", h, size, *br, again, err)
			}
		}
	})
}

func FuzzParseRoute(f *testing.F) {
	for _, s := range []string{"/v2/", "/v2/_catalog", "/v2/a/b/manifests/x", "/v2/a/blobs/uploads/", "/v2/a/blobs/uploads/id", "/v2/a/blobs/sha256:x", "/v2/a/referrers/d", "/v2/a/tags/list", "/v2//blobs/x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		rt, ok := parseRoute(p)
		if !ok {
			return
		}
		if !strings.HasPrefix(p, "/v2") {
			t.Fatalf("routed %q", p)
		}
		if rt.kind != routePing && rt.kind != routeCatalog && !strings.HasPrefix(p, "/v2/"+rt.name+"/") {
			t.Fatalf("%q: name %q is not the path's prefix", p, rt.name)
		}
		if strings.Contains(rt.arg, "/") {
			t.Fatalf("%q: argument %q has a slash", p, rt.arg)
		}
	})
}
