// Package test holds krakenctl's end-to-end tests, and the check that imports flow one way
// (DESIGN §3, house style §3.2): cmd → cli → {server, tui} → {swarm, ring, tagstore, backend}.
package test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"path"
	"slices"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

const module = "github.com/krakenctl/krakenctl"

// goPackage is the part of `go list -json` the checks read.
type goPackage struct {
	ImportPath   string
	Name         string
	Doc          string
	GoFiles      []string
	Imports      []string // direct imports of the non-test files
	Deps         []string // transitive imports of the non-test files
	TestImports  []string // imports of _test.go files in the package
	XTestImports []string // imports of _test.go files in package foo_test
}

// Layers and roles, as paths relative to the module.
var (
	lowerLayers = []string{"swarm", "ring", "tagstore", "backend"}
	roles       = []string{"agent", "origin", "tracker", "proxy", "buildindex"}
	// leaves import nothing internal outside themselves.
	leaves = []string{"swarm/castore", "swarm/metainfo", "swarm/wire"}
	// forbiddenBelowCLI are external packages only cli/ and cmd/ may use.
	forbiddenBelowCLI = []string{"github.com/spf13/cobra", "github.com/spf13/pflag", "os/signal"}
	// forbiddenNames are package names that say nothing about what a package does.
	forbiddenNames = []string{"util", "utils", "common", "helpers"}
)

// under reports whether the module-relative path p is dir or inside it.
func under(p, dir string) bool { return p == dir || strings.HasPrefix(p, dir+"/") }

func underAny(p string, dirs []string) bool {
	return slices.ContainsFunc(dirs, func(d string) bool { return under(p, d) })
}

// internal returns the module-relative path of an import, or ok=false for one from elsewhere.
func internal(importPath string) (rel string, ok bool) {
	if importPath == module {
		return ".", true
	}
	rel, ok = strings.CutPrefix(importPath, module+"/")
	return rel, ok
}

// role returns the role under server/ that p belongs to, or "".
func role(p string) string {
	for _, r := range roles {
		if under(p, "server/"+r) {
			return r
		}
	}
	return ""
}

// isHelperTestPackage reports whether p is an xxxtest helper package (backendtest, ringtest...).
func isHelperTestPackage(p string) bool {
	base := path.Base(p)
	return len(base) > len("test") && strings.HasSuffix(base, "test") && !under(p, "test")
}

// helperTestRule is the rule for xxxtest helper packages. A helper may also import what its
// parent package imports itself (cmdutiltest builds a cmdutil.Factory, which holds
// iostreams.IOStreams): that reaches no further than the parent already does.
const helperTestRule = "an xxxtest package imports only its parent's tree"

// importViolation returns why package p (module-relative) must not import imp, or "" if it may.
// inTest says the import comes from a _test.go file: tests may reach sideways (a leaf's test can
// use a fake, backend's tests can use backend/memory) but never upward across layers.
func importViolation(p, imp string, inTest bool) string {
	t, isInternal := internal(imp)
	if !isInternal {
		if (underAny(p, lowerLayers) || under(p, "tui")) && underAny(imp, forbiddenBelowCLI) {
			return "swarm, ring, tagstore, backend and tui never use cobra, pflag or os/signal"
		}
		return ""
	}
	switch {
	case under(t, "test") && !under(p, "test"):
		return "nothing imports test/"
	case under(t, "cmd"):
		return "nothing imports cmd/"
	case under(p, "cmd") && !under(t, "cli") && !inTest:
		return "cmd/ only calls into cli/"
	case underAny(p, lowerLayers) && (under(t, "cli") || under(t, "server") || under(t, "tui")):
		return "swarm, ring, tagstore and backend never import cli, server or tui"
	case under(p, "tui") && (under(t, "cli") || under(t, "server")):
		return "tui never imports cli or server"
	case under(p, "tui") && !under(t, "tui") && !inTest:
		return "tui imports nothing internal outside tui/ (cli adapts data to tui's interfaces)"
	case under(p, "server") && (under(t, "cli") || under(t, "tui")):
		return "server never imports cli or tui"
	case role(p) != "" && role(t) != "" && role(p) != role(t) && !inTest:
		// Tests may: a role's tests assemble the real roles it talks to (origins behind a
		// proxy, a build-index behind an agent) rather than fakes of their APIs.
		return "a server role never imports another role; share server/{api,client,registry,...}"
	case (under(p, "ring") || under(p, "tagstore")) && under(t, "swarm"):
		return "ring and tagstore don't import swarm"
	case p == "backend" && t != "backend" && under(t, "backend") && !inTest:
		return "backend does not import its implementations"
	}
	if inTest {
		return ""
	}
	for _, leaf := range leaves {
		if under(p, leaf) && !under(t, leaf) {
			return leaf + " imports nothing internal"
		}
	}
	if isHelperTestPackage(p) && !under(t, path.Dir(p)) {
		return helperTestRule
	}
	return ""
}

// checkPackages returns one line per rule broken by pkgs.
func checkPackages(pkgs []goPackage) []string {
	var out []string
	internalImports := map[string][]string{} // module-relative package -> its internal imports
	for _, pkg := range pkgs {
		if p, ok := internal(pkg.ImportPath); ok {
			for _, imp := range pkg.Imports {
				if t, ok := internal(imp); ok {
					internalImports[p] = append(internalImports[p], t)
				}
			}
		}
	}
	report := func(pkg, format string, a ...any) {
		out = append(out, pkg+": "+fmt.Sprintf(format, a...))
	}
	for _, pkg := range pkgs {
		p, ok := internal(pkg.ImportPath)
		if !ok {
			continue
		}
		names := strings.Split(p, "/")
		if pkg.Name != path.Base(p) {
			names = append(names, pkg.Name)
		}
		for _, name := range names {
			if slices.Contains(forbiddenNames, name) {
				report(pkg.ImportPath, "package named %q: name it after what it provides", name)
			}
		}
		check := func(imports []string, inTest bool, kind string) {
			for _, imp := range imports {
				why := importViolation(p, imp, inTest)
				if t, _ := internal(imp); why == helperTestRule && slices.Contains(internalImports[path.Dir(p)], t) {
					why = ""
				}
				if why != "" {
					report(pkg.ImportPath, "%s %s: %s", kind, imp, why)
				}
			}
		}
		check(pkg.Imports, false, "imports")
		check(pkg.TestImports, true, "test imports")
		check(pkg.XTestImports, true, "external test imports")
		// cobra and pflag must not creep in through a library either.
		if underAny(p, lowerLayers) || under(p, "tui") {
			for _, dep := range pkg.Deps {
				if underAny(dep, forbiddenBelowCLI[:2]) && !slices.Contains(pkg.Imports, dep) {
					report(pkg.ImportPath, "depends on %s through its imports: cobra and pflag belong to cli/", dep)
				}
			}
		}
	}
	return out
}

// listPackages runs `go list` over the whole module.
func listPackages(t *testing.T) []goPackage {
	t.Helper()
	goBin, err := exec.LookPath("go")
	require.NoError(t, err, "find the go command")
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(t.Context(), goBin, "list", "-e",
		"-json=ImportPath,Name,Doc,GoFiles,Imports,Deps,TestImports,XTestImports", module+"/...")
	cmd.Dir = ".."
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	require.NoError(t, cmd.Run(), "go list: %s", stderr.String())

	var pkgs []goPackage
	dec := json.NewDecoder(&stdout)
	for {
		var pkg goPackage
		err := dec.Decode(&pkg)
		if errors.Is(err, io.EOF) {
			break
		}
		require.NoError(t, err, "decode go list output")
		pkgs = append(pkgs, pkg)
	}
	require.NotEmpty(t, pkgs, "go list found no packages")
	return pkgs
}

func TestImportDirection(t *testing.T) {
	t.Parallel()
	pkgs := listPackages(t)
	var seenCLI, seenCmd bool
	for _, pkg := range pkgs {
		seenCLI = seenCLI || pkg.ImportPath == module+"/cli/root"
		seenCmd = seenCmd || pkg.ImportPath == module+"/cmd/krakenctl"
	}
	require.True(t, seenCLI && seenCmd, "go list did not list cli/root and cmd/krakenctl: is it run from the module?")
	if v := checkPackages(pkgs); len(v) > 0 {
		t.Errorf("imports against the dependency direction (DESIGN §3):\n%s", strings.Join(v, "\n"))
	}
}

func TestPackageDocs(t *testing.T) {
	t.Parallel()
	var missing []string
	for _, pkg := range listPackages(t) {
		if len(pkg.GoFiles) > 0 && pkg.Doc == "" {
			missing = append(missing, pkg.ImportPath)
		}
	}
	require.Empty(t, missing, "packages without a package doc comment")
}

// TestCheckPackages proves the checker fails on each kind of forbidden import, and lets through
// the imports the design allows.
func TestCheckPackages(t *testing.T) {
	t.Parallel()
	m := func(p string) string { return module + "/" + p }
	tests := []struct {
		name    string
		pkg     goPackage
		wantBad []string    // substrings of the expected violations, one per violation
		others  []goPackage // more packages in the module, checked too
	}{
		{
			name: "allowed chain",
			pkg: goPackage{ImportPath: m("cli/serve"), Name: "serve",
				Imports: []string{m("server/origin"), m("backend"), m("cli/cmdutil"), "github.com/spf13/cobra"}},
		},
		{
			name: "server role uses shared server packages and lower layers",
			pkg: goPackage{ImportPath: m("server/agent"), Name: "agent",
				Imports: []string{m("server/client"), m("server/registry"), m("swarm/scheduler"), m("ring"), "os/signal"}},
		},
		{
			name:    "backend imports server",
			pkg:     goPackage{ImportPath: m("backend/s3"), Name: "s3", Imports: []string{m("server/config")}},
			wantBad: []string{"never import cli, server or tui"},
		},
		{
			name:    "swarm imports cli and cobra",
			pkg:     goPackage{ImportPath: m("swarm/scheduler"), Name: "scheduler", Imports: []string{m("cli/cmdutil"), "github.com/spf13/cobra"}},
			wantBad: []string{"never import cli, server or tui", "never use cobra"},
		},
		{
			name:    "ring uses os/signal",
			pkg:     goPackage{ImportPath: m("ring"), Name: "ring", Imports: []string{"os/signal"}},
			wantBad: []string{"never use cobra, pflag or os/signal"},
		},
		{
			name:    "tagstore pulls in pflag through a library",
			pkg:     goPackage{ImportPath: m("tagstore"), Name: "tagstore", Deps: []string{"example.com/lib", "github.com/spf13/pflag"}},
			wantBad: []string{"through its imports"},
		},
		{
			name:    "tui imports server",
			pkg:     goPackage{ImportPath: m("tui"), Name: "tui", Imports: []string{m("server/client")}},
			wantBad: []string{"tui never imports cli or server"},
		},
		{
			name:    "tui imports swarm",
			pkg:     goPackage{ImportPath: m("tui"), Name: "tui", Imports: []string{m("swarm/peer")}},
			wantBad: []string{"tui imports nothing internal"},
		},
		{
			name:    "server imports cli",
			pkg:     goPackage{ImportPath: m("server/config"), Name: "config", Imports: []string{m("cli/cmdutil")}},
			wantBad: []string{"server never imports cli"},
		},
		{
			name:    "role imports another role (its tests may)",
			pkg:     goPackage{ImportPath: m("server/agent"), Name: "agent", Imports: []string{m("server/origin")}, TestImports: []string{m("server/tracker/trackerpb")}},
			wantBad: []string{"another role"},
		},
		{
			name:    "backend imports its implementation",
			pkg:     goPackage{ImportPath: m("backend"), Name: "backend", Imports: []string{m("backend/s3")}},
			wantBad: []string{"backend does not import its implementations"},
		},
		{
			name: "backend's tests may use an implementation",
			pkg:  goPackage{ImportPath: m("backend"), Name: "backend", XTestImports: []string{m("backend/memory"), m("backend/backendtest")}},
		},
		{
			name:    "backendtest imports a sibling tree",
			pkg:     goPackage{ImportPath: m("backend/backendtest"), Name: "backendtest", Imports: []string{m("backend"), m("ring")}},
			wantBad: []string{"xxxtest package imports only its parent"},
		},
		{
			name: "cmdutiltest imports what its parent imports",
			pkg:  goPackage{ImportPath: m("cli/cmdutil/cmdutiltest"), Name: "cmdutiltest", Imports: []string{m("cli/cmdutil"), m("cli/iostreams")}},
			others: []goPackage{
				{ImportPath: m("cli/cmdutil"), Name: "cmdutil", Imports: []string{m("cli/iostreams")}},
				{ImportPath: m("cli/iostreams"), Name: "iostreams"},
			},
		},
		{
			name:    "cmdutiltest imports what its parent does not",
			pkg:     goPackage{ImportPath: m("cli/cmdutil/cmdutiltest"), Name: "cmdutiltest", Imports: []string{m("cli/cmdutil"), m("server/client")}},
			others:  []goPackage{{ImportPath: m("cli/cmdutil"), Name: "cmdutil", Imports: []string{m("cli/iostreams")}}},
			wantBad: []string{"xxxtest package imports only its parent"},
		},
		{
			name:    "metainfo imports another internal package",
			pkg:     goPackage{ImportPath: m("swarm/metainfo"), Name: "metainfo", Imports: []string{m("swarm/wire"), "github.com/opencontainers/go-digest"}},
			wantBad: []string{"swarm/metainfo imports nothing internal"},
		},
		{
			name: "wire's own subpackage and a test fake are fine",
			pkg:  goPackage{ImportPath: m("swarm/wire"), Name: "wire", Imports: []string{m("swarm/wire/internalframe")}, XTestImports: []string{m("swarm/swarmtest")}},
		},
		{
			name:    "ring imports swarm",
			pkg:     goPackage{ImportPath: m("ring"), Name: "ring", Imports: []string{m("swarm/metainfo")}},
			wantBad: []string{"ring and tagstore don't import swarm"},
		},
		{
			name:    "something imports test/",
			pkg:     goPackage{ImportPath: m("server/origin"), Name: "origin", TestImports: []string{m("test/cluster")}},
			wantBad: []string{"nothing imports test/"},
		},
		{
			name: "test/ may import its own helpers and every layer",
			pkg:  goPackage{ImportPath: m("test/testscript"), Name: "testscript", Imports: []string{m("test/cluster"), m("server/origin"), m("cli/root")}},
		},
		{
			name:    "cmd does more than call cli",
			pkg:     goPackage{ImportPath: m("cmd/krakenctl"), Name: "main", Imports: []string{m("cli/root"), m("server/origin")}},
			wantBad: []string{"cmd/ only calls into cli/"},
		},
		{
			name:    "cli imports cmd",
			pkg:     goPackage{ImportPath: m("cli/root"), Name: "root", Imports: []string{m("cmd/krakenctl")}},
			wantBad: []string{"nothing imports cmd/"},
		},
		{
			name:    "util and helpers packages",
			pkg:     goPackage{ImportPath: m("server/util"), Name: "helpers"},
			wantBad: []string{`"util"`, `"helpers"`},
		},
		{
			name:    "one report for a util directory holding package util",
			pkg:     goPackage{ImportPath: m("backend/util"), Name: "util"},
			wantBad: []string{`"util"`},
		},
		{
			name: "packages outside the module are not checked",
			pkg:  goPackage{ImportPath: "example.com/util", Name: "util", Imports: []string{m("cli/root")}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := checkPackages(append([]goPackage{tt.pkg}, tt.others...))
			require.Len(t, got, len(tt.wantBad), "violations: %q", got)
			for i, want := range tt.wantBad {
				require.Contains(t, got[i], want)
			}
		})
	}
}
