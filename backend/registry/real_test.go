package registry_test

import (
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/stretchr/testify/require"

	"github.com/krakenctl/krakenctl/backend"
	"github.com/krakenctl/krakenctl/backend/backendtest"
	"github.com/krakenctl/krakenctl/backend/registry"
)

// TestRealRegistry runs the read-only suite against a real distribution registry (Debian's
// docker-registry, started by scripts/registry-server.sh) at REGISTRY_ADDR, reached over plain
// HTTP, with REGISTRY_USERNAME and REGISTRY_PASSWORD when it requires htpasswd logins. Without
// REGISTRY_ADDR it skips, or fails when KRAKENCTL_REQUIRE_REAL_SERVERS=1 (as scripts/test.sh sets).
func TestRealRegistry(t *testing.T) {
	addr := os.Getenv("REGISTRY_ADDR")
	if addr == "" {
		const msg = "REGISTRY_ADDR is not set; start a registry with `eval \"$(scripts/registry-server.sh start PORT [USER PASS])\"`"
		if os.Getenv("KRAKENCTL_REQUIRE_REAL_SERVERS") == "1" {
			t.Fatal(msg + " (KRAKENCTL_REQUIRE_REAL_SERVERS=1 forbids skipping)")
		}
		t.Skip(msg)
	}
	user, pass := os.Getenv("REGISTRY_USERNAME"), os.Getenv("REGISTRY_PASSWORD")
	var auth authn.Authenticator
	if user != "" {
		auth = &authn.Basic{Username: user, Password: pass}
	}
	p := newPusher(t, addr, auth)
	cfg := registry.Config{Address: addr, Insecure: true, Username: user, Password: pass, Timeout: time.Minute}

	t.Run("suite", func(t *testing.T) {
		backendtest.RunReadOnly(t, func(t *testing.T) backend.Backend { return newBackend(t, cfg) }, p.seed)
	})

	t.Run("image", func(t *testing.T) {
		t.Parallel()
		repo := "krakenctl-test/image-" + strconv.FormatInt(time.Now().UnixNano(), 36)
		img := p.image(t, repo, "v1")
		p.image(t, repo, "latest")
		b := newBackend(t, cfg)
		requireImage(t, b, repo, img)
		tags, err := b.Tags(t.Context(), repo)
		require.NoError(t, err)
		require.Equal(t, []string{"latest", "v1"}, tags)
	})

	if user != "" {
		t.Run("wrong password", func(t *testing.T) {
			t.Parallel()
			bad := cfg
			bad.Password += "-wrong"
			_, err := newBackend(t, bad).Stat(t.Context(), "krakenctl-test/any", hexDigest([]byte("x")))
			require.ErrorIs(t, err, registry.ErrUnauthorized)
		})
	}
}
