package bench

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"go.uber.org/goleak"

	"github.com/krakenctl/krakenctl/tagstore/tagstoretest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	if binDir != "" {
		_ = os.RemoveAll(binDir) // a temporary directory: the OS cleans up after a failure
	}
	if code == 0 {
		if err := goleak.Find(tagstoretest.IgnoreLeftovers()); err != nil {
			fmt.Fprintln(os.Stderr, "goleak: errors on successful test run:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// binDir holds the krakenctl binary the separate-process tests run, built by the first test
// that needs it; "" until then.
var binDir string

// krakenctlBinary builds cmd/krakenctl once for the package and returns its path: the
// separate-process runs start `krakenctl serve` and `krakenctl bench swarm-client`, which the
// test binary is not. Built without -race, so that its processes run at a speed that a
// 2-core machine shared with the test can bear.
var krakenctlBinary = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "krakenctl-bench-bin-")
	if err != nil {
		return "", err
	}
	binDir = dir
	bin := filepath.Join(dir, "krakenctl")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/krakenctl/krakenctl/cmd/krakenctl")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build krakenctl: %w\n%s", err, out)
	}
	return bin, nil
})

func binary(t *testing.T) string {
	t.Helper()
	bin, err := krakenctlBinary()
	if err != nil {
		t.Fatal(err)
	}
	return bin
}
