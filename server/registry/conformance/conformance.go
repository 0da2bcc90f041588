// Package conformance runs the OCI distribution-spec conformance suite (the version pinned in
// go.mod as a tool) against a registry and parses its report. It is for tests: the registry
// handler's, the proxy's, the agent's and the end-to-end ones all run the suite through it.
package conformance

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// Pkg is the suite's package, pinned in go.mod as a tool.
const Pkg = "github.com/opencontainers/distribution-spec/conformance"

// Build returns the path of the suite's binary: $OCI_CONFORMANCE_BIN when set, else the pinned
// version built into dir (cached by the go build cache). It fails when the go command is not
// on PATH.
func Build(ctx context.Context, dir string) (string, error) {
	if bin := os.Getenv("OCI_CONFORMANCE_BIN"); bin != "" {
		return bin, nil
	}
	gobin, err := exec.LookPath("go")
	if err != nil {
		return "", fmt.Errorf("build the conformance suite (or set OCI_CONFORMANCE_BIN): %w", err)
	}
	bin := filepath.Join(dir, "conformance")
	cmd := exec.CommandContext(ctx, gobin, "build", "-o", bin, Pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %w\n%s", Pkg, err, out)
	}
	return bin, nil
}

// Binary is Build for a test, into a temporary directory of t. Without the go command it skips
// the test, or fails it when KRAKENCTL_REQUIRE_REAL_SERVERS=1 (as in CI); any other failure to
// build fails the test.
func Binary(t testing.TB) string {
	t.Helper()
	bin, err := Build(t.Context(), t.TempDir())
	if err != nil {
		if _, lookErr := exec.LookPath("go"); lookErr != nil && os.Getenv("KRAKENCTL_REQUIRE_REAL_SERVERS") != "1" {
			t.Skip(err.Error())
		}
		t.Fatal(err)
	}
	return bin
}

// Result is what a run of the suite reported.
type Result struct {
	Status string         // "OCI Conformance Result: <Status>"; empty when it printed none
	Counts map[string]int // Pass, Skip, Disabled, FAIL, Error -> checks
	APIs   map[string]string
	// Problems are the tests that did not pass or were skipped, each as "<status>: <path>",
	// followed by its error lines.
	Problems []string
	// ExitErr is the suite's exit error, nil after IgnoredPanic.
	ExitErr error
	// IgnoredPanic says the suite panicked in ReportResultsYAML after a complete report: a bug
	// of the pinned version with push disabled (it records a status for test data it never
	// created), which Run does not count as a failure.
	IgnoredPanic bool
	Output       string
}

// Run runs the suite at bin against the plain-HTTP registry at addr with the given settings
// ("OCI_X=value"). No OCI_* variable of the environment leaks in. dir is a scratch directory:
// the suite's working directory (it would read an oci-conformance.yaml there) and where it
// writes its results.
func Run(ctx context.Context, bin, dir, addr string, settings ...string) Result {
	cmd := exec.CommandContext(ctx, bin)
	cmd.Dir = dir
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "OCI_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, "OCI_REGISTRY="+addr, "OCI_TLS=disabled", "OCI_RESULTS_DIR="+dir)
	cmd.Env = append(cmd.Env, settings...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	r := Parse(out.String())
	r.ExitErr = err
	if err != nil && r.Status == "Pass" && strings.Contains(r.Output, "panic: runtime error") &&
		strings.Contains(r.Output, "ReportResultsYAML") {
		r.ExitErr, r.IgnoredPanic = nil, true
	}
	return r
}

var (
	treeLine   = regexp.MustCompile(`^( *)(.+): (Pass|Skip|Disabled|FAIL|Error|Unknown)$`)
	errLine    = regexp.MustCompile(`^ *- (.*)$`)
	countLine  = regexp.MustCompile(`^\s+(Pass|Skip|Disabled|FAIL|Error)\.*:\s+(\d+)$`)
	apiLine    = regexp.MustCompile(`^  (.+?)\.+: +(\S+)$`)
	resultLine = regexp.MustCompile(`^OCI Conformance Result: (\S+)$`)
)

// Parse reads the suite's report: its test tree, result, counts and per-API verdicts.
func Parse(out string) Result {
	r := Result{Counts: map[string]int{}, APIs: map[string]string{}, Output: out}
	var path []string // test names by depth
	section := "tree"
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	lastProblem := -1
	for sc.Scan() {
		line := sc.Text()
		switch line {
		case "Test results":
			section = "tree"
			continue
		case "Configuration:":
			section = "config"
			continue
		case "API conformance:":
			section = "api"
			continue
		case "Data conformance:":
			section = "data"
			continue
		}
		if m := resultLine.FindStringSubmatch(line); m != nil {
			r.Status, section = m[1], "counts"
			continue
		}
		switch section {
		case "tree":
			if m := treeLine.FindStringSubmatch(line); m != nil {
				depth := len(m[1]) / 2
				if depth < len(path) {
					path = path[:depth]
				}
				path = append(path, m[2])
				lastProblem = -1
				if m[3] != "Pass" && m[3] != "Disabled" {
					r.Problems = append(r.Problems, m[3]+": "+strings.Join(path, " / "))
					lastProblem = len(r.Problems) - 1
				}
			} else if m := errLine.FindStringSubmatch(line); m != nil && lastProblem >= 0 {
				r.Problems[lastProblem] += "\n      " + m[1]
			}
		case "counts":
			if m := countLine.FindStringSubmatch(line); m != nil {
				n, _ := strconv.Atoi(m[2])
				r.Counts[m[1]] = n
			}
		case "api":
			if m := apiLine.FindStringSubmatch(line); m != nil {
				r.APIs[m[1]] = m[2]
			}
		}
	}
	return r
}

// Report is a failure message: the problems and the counts, or the whole output when the suite
// did not get as far as its report.
func (r Result) Report() string {
	if r.Status == "" {
		return fmt.Sprintf("the conformance suite printed no result (exit: %v):\n%s", r.ExitErr, r.Output)
	}
	// Only leaves: a parent's status repeats its children's.
	var leaves []string
	for i, p := range r.Problems {
		if i+1 < len(r.Problems) && strings.HasPrefix(pathOf(r.Problems[i+1]), pathOf(p)+" / ") {
			continue
		}
		leaves = append(leaves, p)
	}
	msg := fmt.Sprintf("result %s, counts %v, exit %v\nAPIs: %v\nproblems (%d):\n  %s",
		r.Status, r.Counts, r.ExitErr, r.APIs, len(leaves), strings.Join(leaves, "\n  "))
	if r.ExitErr != nil && r.Status == "Pass" {
		out := r.Output
		if len(out) > 8<<10 {
			out = out[len(out)-8<<10:]
		}
		msg += "\noutput (last 8 KiB):\n" + out
	}
	return msg
}

// pathOf returns a problem's test path: what follows "<status>: " on its first line.
func pathOf(problem string) string {
	first, _, _ := strings.Cut(problem, "\n")
	_, path, _ := strings.Cut(first, ": ")
	return path
}
