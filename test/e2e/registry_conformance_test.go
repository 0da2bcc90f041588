package e2e

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// conformancePkg is the OCI distribution-spec conformance suite, pinned in go.mod as a tool.
const conformancePkg = "github.com/opencontainers/distribution-spec/conformance"

// conformanceResult is what the suite reported.
type conformanceResult struct {
	status string         // "OCI Conformance Result: <status>"
	counts map[string]int // Pass, Skip, Disabled, FAIL, Error -> checks
	apis   map[string]string
	// problems are the leaf tests that did not pass or were skipped, with their errors.
	problems []string
	exitErr  error
	out      string
}

var (
	treeLine   = regexp.MustCompile(`^( *)(.+): (Pass|Skip|Disabled|FAIL|Error|Unknown)$`)
	errLine    = regexp.MustCompile(`^ *- (.*)$`)
	countLine  = regexp.MustCompile(`^  (Pass|Skip|Disabled|FAIL|Error)\.+: +(\d+)$`)
	apiLine    = regexp.MustCompile(`^  (.+?)\.+: +(\S+)$`)
	resultLine = regexp.MustCompile(`^OCI Conformance Result: (\S+)$`)
)

// runConformance runs the suite against the plain-HTTP registry at addr with the given OCI_*
// settings (on top of the 1.1 profile) and parses its report.
func runConformance(t *testing.T, addr string, settings map[string]string) conformanceResult {
	t.Helper()
	tool := goTool(t, conformancePkg)
	cmd := exec.CommandContext(t.Context(), tool)
	// No OCI_* setting of the environment leaks in: the run is what this test says.
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "OCI_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	// The suite reads oci-conformance.yaml from its working directory if there is one: give it
	// an empty directory.
	cmd.Dir = t.TempDir()
	cmd.Env = append(cmd.Env, "OCI_REGISTRY="+addr, "OCI_TLS=disabled", "OCI_VERSION=1.1",
		"OCI_RESULTS_DIR="+t.TempDir(), "OCI_LOG=warn")
	for k, v := range settings {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	out, err := cmd.CombinedOutput()
	r := parseConformance(string(out))
	r.exitErr = err
	if err != nil && r.status == "Pass" && settings["OCI_API_PUSH"] == "false" &&
		strings.Contains(r.out, "panic: runtime error") && strings.Contains(r.out, "main.(*runner).ReportResultsYAML") {
		// A bug of the suite at the pinned version: with push disabled it records a status for
		// test data it never created, and writing results.yaml dereferences that nil entry. The
		// report on stdout, printed before, is complete; the exit status is the panic's.
		t.Logf("conformance: ignoring the suite's known panic in ReportResultsYAML after a complete report (%v)", err)
		r.exitErr = nil
	}
	t.Logf("conformance against %s: result %s, %v", addr, r.status, r.counts)
	return r
}

func parseConformance(out string) conformanceResult {
	r := conformanceResult{counts: map[string]int{}, apis: map[string]string{}, out: out}
	var path []string // test names by depth
	section := "tree"
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	lastProblem := -1
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "Test results":
			section = "tree"
			continue
		case line == "Configuration:":
			section = "config"
			continue
		case line == "API conformance:":
			section = "api"
			continue
		case line == "Data conformance:":
			section = "data"
			continue
		}
		if m := resultLine.FindStringSubmatch(line); m != nil {
			r.status, section = m[1], "counts"
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
					r.problems = append(r.problems, m[3]+": "+strings.Join(path, " / "))
					lastProblem = len(r.problems) - 1
				}
			} else if m := errLine.FindStringSubmatch(line); m != nil && lastProblem >= 0 {
				r.problems[lastProblem] += "\n      " + m[1]
			}
		case "counts":
			if m := countLine.FindStringSubmatch(line); m != nil {
				n, _ := strconv.Atoi(m[2])
				r.counts[m[1]] = n
			}
		case "api":
			if m := apiLine.FindStringSubmatch(line); m != nil {
				r.apis[m[1]] = m[2]
			}
		}
	}
	return r
}

// report is the failure message: the problems and the counts, or the whole output when the
// suite did not get as far as its report.
func (r conformanceResult) report() string {
	if r.status == "" {
		return fmt.Sprintf("the conformance suite printed no result (exit: %v):\n%s", r.exitErr, r.out)
	}
	// Only leaves: a parent's status repeats its children's.
	var leaves []string
	for i, p := range r.problems {
		if i+1 < len(r.problems) && strings.HasPrefix(strings.SplitN(r.problems[i+1], ": ", 2)[1], strings.SplitN(p, ": ", 2)[1]+" / ") {
			continue
		}
		leaves = append(leaves, p)
	}
	msg := fmt.Sprintf("result %s, counts %v, exit %v\nAPIs: %v\nproblems (%d):\n  %s",
		r.status, r.counts, r.exitErr, r.apis, len(leaves), strings.Join(leaves, "\n  "))
	if r.exitErr != nil && r.status == "Pass" {
		msg += "\noutput (last 8 KiB):\n" + string(tail([]byte(r.out), 8<<10))
	}
	return msg
}

// TestConformanceProxy runs the whole OCI distribution-spec 1.1 conformance suite against the
// proxy: pull, push, content discovery and content management, sha512 content, referrers,
// and the optional checks (Docker-Content-Digest on blobs and manifests, upload cancel, tags
// as parameters of a push by digest). Every check must pass; none may be skipped as
// unsupported except one the spec leaves to the registry: an anonymous mount (no from=) of a
// sha512 blob. The proxy finds a blob's storage through the source repository's link; with no
// repository named it can mount only by SHA-256, so it answers 202 and the client uploads,
// which the spec allows ("it SHOULD return a 202" when it cannot mount).
func TestConformanceProxy(t *testing.T) {
	t.Parallel()
	c := devUp(t, 0)
	r := runConformance(t, c.proxy(), map[string]string{
		"OCI_DATA_SHA512":                 "true",
		"OCI_API_REFERRER":                "true",
		"OCI_API_BLOBS_DIGEST_HEADER":     "true",
		"OCI_API_MANIFESTS_DIGEST_HEADER": "true",
		"OCI_API_BLOBS_UPLOAD_CANCEL":     "true",
		"OCI_API_MANIFESTS_TAG_PARAM":     "true",
	})
	require.Equal(t, "Pass", r.status, r.report())
	require.NoError(t, r.exitErr, r.report())
	require.Zero(t, r.counts["FAIL"], r.report())
	require.Zero(t, r.counts["Error"], r.report())
	var skipped []string
	for _, p := range r.problems {
		first, _, _ := strings.Cut(p, "\n") // the test's path; its errors follow
		if strings.HasPrefix(first, "Skip: ") && !strings.HasSuffix(first, "/sha512 blobs/mount anonymous/blob-mount-anonymous") {
			skipped = append(skipped, p)
		}
	}
	require.Empty(t, skipped, "checks skipped as unsupported:\n%s", r.report())
	require.LessOrEqual(t, r.counts["Skip"], 1, "only the sha512 anonymous mount may be skipped:\n%s", r.report())
	require.Positive(t, r.counts["Pass"], r.report())
	for _, api := range []string{
		"Ping", "Tag listing", "Tag delete", "Blob upload cancel", "Blob push", "Blob post only",
		"Blob post put", "Blob chunked", "Blob streaming", "Blob mount", "Blob anonymous mount",
		"Blob get", "Blob get range", "Blob head", "Blob delete", "Manifest put by digest",
		"Manifest put by tag", "Manifest put with tag params", "Manifest put with subject", "Manifest get by digest",
		"Manifest get by tag", "Manifest head by digest", "Manifest head by tag",
		"Manifest delete", "Referrers",
	} {
		require.Equal(t, "Pass", r.apis[api], "API %q: %s", api, r.report())
	}
}

// TestConformanceAgentPull runs the suite's pull category against an agent in read-only mode,
// on an image, an artifact that refers to it, and their blobs, pushed through the proxy.
func TestConformanceAgentPull(t *testing.T) {
	t.Parallel()
	c := devUp(t, 1)
	const repo, tag = "e2e/conformance-seed", "seed"
	img := seedImage(t, c.proxy(), repo, tag)
	r := runConformance(t, c.ep.Agents[0], map[string]string{
		"OCI_REPO1":                repo,
		"OCI_API_PUSH":             "false",
		"OCI_API_TAGS_DELETE":      "false",
		"OCI_API_MANIFESTS_DELETE": "false",
		"OCI_API_BLOBS_DELETE":     "false",
		"OCI_RO_DATA_TAGS":         tag,
		"OCI_RO_DATA_MANIFESTS":    img.manifest.String() + " " + img.referrer.String(),
		"OCI_RO_DATA_BLOBS":        strings.Join(img.blobStrings(), " "),
		"OCI_RO_DATA_REFERRERS":    img.manifest.String(),
		// Not OCI_API_*_DIGEST_HEADER: with read-only data the suite (at this version) checks the
		// header on a response it never recorded and always fails. requireIntact checks the
		// agent's Docker-Content-Digest on GET and HEAD instead.
	})
	require.Equal(t, "Pass", r.status, r.report())
	require.NoError(t, r.exitErr, r.report())
	require.Zero(t, r.counts["FAIL"], r.report())
	require.Zero(t, r.counts["Error"], r.report())
	require.Positive(t, r.counts["Pass"], r.report())
	for _, api := range []string{
		// Not "Blob get range": the suite does not try ranges on read-only data; requireIntact
		// (TestBadInputLeavesStoreIntact) does, through the agent.
		"Ping", "Tag listing", "Blob get", "Blob head", "Manifest get by digest",
		"Manifest get by tag", "Manifest head by digest", "Manifest head by tag", "Referrers",
	} {
		require.Equal(t, "Pass", r.apis[api], "API %q: %s", api, r.report())
	}
}
