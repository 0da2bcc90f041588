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
	// leaves import nothing internal outside themselves. server/api and the error vocabulary
	// are leaves so that clients of the servers can use them without linking a server.
	// swarm/snapshot (the swarm API's documents) is one for the same reason.
	leaves = []string{"swarm/castore", "swarm/metainfo", "swarm/wire", "swarm/snapshot", "server/api", "server/registry/errcode"}
	// forbiddenBelowCLI are external packages only cli/ and cmd/ may use.
	forbiddenBelowCLI = []string{"github.com/spf13/cobra", "github.com/spf13/pflag", "os/signal"}
	// forbiddenNames are package names that say nothing about what a package does.
	forbiddenNames = []string{"util", "utils", "common", "helpers"}
)

// serverStorage are the libraries behind the servers' state: Raft and its bolt store (tags)
// and the AWS SDK (the S3 backend). They are prefixes of import paths.
var serverStorage = []string{
	"github.com/hashicorp/raft", "github.com/hashicorp/raft-boltdb", "go.etcd.io/bbolt", "github.com/boltdb/bolt",
	"github.com/aws",
}

// depRule is a per-package allow- or deny-list over everything the package links (its Deps,
// transitively, tests excluded), in the manner of go-containerregistry's depcheck_test.go. The
// layer rules above say which way imports may point; these say how much a package may carry.
type depRule struct {
	pkg string // module-relative
	// never lists import-path prefixes, internal (module-relative) or external, that pkg must
	// not reach.
	never []string
	// stdlibOnly says pkg links nothing but the standard library.
	stdlibOnly bool
	why        string
}

// clientNever is what the HTTP clients must not reach: the servers' storage, and the swarm
// engine (they read its reports through swarm/snapshot).
var clientNever = append([]string{"swarm/scheduler"}, serverStorage...)

var depRules = []depRule{
	{pkg: "server/client", never: clientNever,
		why: "the typed clients speak HTTP; they must not link the swarm engine or the servers' storage"},
	{pkg: "cli/blob", never: clientNever,
		why: "push and pull are HTTP clients; they must not link the swarm engine or the servers' storage"},
	{pkg: "cli/endpoints", never: clientNever,
		why: "every command resolves addresses here; it must not link the swarm engine or the servers' storage"},
	{pkg: "server/registry/errcode", stdlibOnly: true, never: serverStorage,
		why: "the error vocabulary is a leaf of the standard library, as distribution's errcode"},
}

// isStdlib reports whether importPath is in the standard library: its first element has no
// dot (this covers the standard library's internal/ and vendor/ packages too).
func isStdlib(importPath string) bool {
	first, _, _ := strings.Cut(importPath, "/")
	return !strings.Contains(first, ".")
}

// underPrefix is under for import paths, internal ones given module-relative in prefixes.
func underPrefix(importPath string, prefixes []string) (string, bool) {
	rel, isInternal := internal(importPath)
	for _, pre := range prefixes {
		if under(importPath, pre) || isInternal && under(rel, pre) {
			return pre, true
		}
	}
	return "", false
}

// checkDeps returns one line per depRule that pkg (module-relative p) breaks. depsOf holds the
// Deps of the module's packages, to name the direct imports a forbidden dependency comes
// through.
func checkDeps(p string, pkg goPackage, depsOf map[string][]string) []string {
	var out []string
	for _, r := range depRules {
		if p != r.pkg {
			continue
		}
		// One line per forbidden prefix (the AWS SDK alone is over a hundred packages).
		found := map[string][]string{}
		var order []string
		for _, dep := range pkg.Deps {
			key, bad := underPrefix(dep, r.never)
			if !bad && r.stdlibOnly && !isStdlib(dep) {
				key, bad = dep, true
			}
			if !bad {
				continue
			}
			if _, seen := found[key]; !seen {
				order = append(order, key)
			}
			found[key] = append(found[key], dep)
		}
		for _, key := range order {
			deps := found[key]
			what := deps[0]
			if len(deps) > 1 {
				what = fmt.Sprintf("%s and %d more under %s", deps[0], len(deps)-1, key)
			}
			out = append(out, fmt.Sprintf("links %s%s: %s", what, through(pkg, deps[0], depsOf), r.why))
		}
	}
	return out
}

// through names the direct imports of pkg that bring dep in, as " (through a, b)".
func through(pkg goPackage, dep string, depsOf map[string][]string) string {
	var via []string
	for _, imp := range pkg.Imports {
		if imp == dep || slices.Contains(depsOf[imp], dep) {
			via = append(via, imp)
		}
	}
	if len(via) == 0 || len(via) == 1 && via[0] == dep {
		return ""
	}
	return " (through " + strings.Join(via, ", ") + ")"
}

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
	case under(p, "tui") && !under(t, "tui") && t != "swarm/snapshot" && !inTest:
		// swarm/snapshot is a leaf of documents (the cluster snapshot among them): the view
		// reads the same values the servers serve, without linking anything that does I/O.
		return "tui imports nothing internal outside tui/ but the snapshot documents (cli adapts data to tui's interfaces)"
	case under(p, "server") && (under(t, "cli") || under(t, "tui")):
		return "server never imports cli or tui"
	case role(p) != "" && role(t) != "" && role(p) != role(t) && !inTest:
		// Tests may: a role's tests assemble the real roles it talks to (origins behind a
		// proxy, a build-index behind an agent) rather than fakes of their APIs.
		return "a server role never imports another role; share server/{api,client,registry,...}"
	case (under(p, "ring") || under(p, "tagstore")) && under(t, "swarm"):
		return "ring and tagstore don't import swarm"
	case under(p, "backend") && (under(t, "swarm") || under(t, "tagstore") || under(t, "ring")):
		// Not even in tests: the conformance suite is the whole contract.
		return "backend knows nothing of the swarm, the tags or the ring: it stores bytes by name"
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
	depsOf := map[string][]string{}          // import path -> Deps, for the module's packages
	for _, pkg := range pkgs {
		depsOf[pkg.ImportPath] = pkg.Deps
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
		for _, line := range checkDeps(p, pkg, depsOf) {
			report(pkg.ImportPath, "%s", line)
		}
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
	// A rule about a package that moved would hold forever without checking anything.
	for _, r := range depRules {
		require.True(t, slices.ContainsFunc(pkgs, func(pkg goPackage) bool { return pkg.ImportPath == module+"/"+r.pkg }),
			"depRules names %s, which go list does not list: update the rule", r.pkg)
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
			// (backendtest importing ring was this case until backend -> ring was forbidden.)
			name:    "schedulertest imports a sibling tree",
			pkg:     goPackage{ImportPath: m("swarm/scheduler/schedulertest"), Name: "schedulertest", Imports: []string{m("swarm/scheduler"), m("ring")}},
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
			name:    "backend imports swarm, tagstore or ring, even in tests",
			pkg:     goPackage{ImportPath: m("backend/s3"), Name: "s3", Imports: []string{m("swarm/castore"), m("backend")}, XTestImports: []string{m("ring/ringtest")}},
			others:  []goPackage{{ImportPath: m("backend"), Name: "backend", Imports: []string{m("tagstore")}}, {ImportPath: m("backend/backendtest"), Name: "backendtest", Imports: []string{m("backend"), m("ring")}}},
			wantBad: []string{"s3: imports " + m("swarm/castore") + ": backend knows nothing of the swarm", "s3: external test imports " + m("ring/ringtest") + ": backend knows nothing", "backend: imports " + m("tagstore") + ": backend knows nothing", "backendtest: imports " + m("ring") + ": backend knows nothing"},
		},
		{
			name: "the client links only light libraries",
			pkg: goPackage{ImportPath: m("server/client"), Name: "client", Imports: []string{m("server/api"), m("server/registry/errcode")},
				Deps: []string{"net/http", "github.com/opencontainers/go-digest", "github.com/prometheus/client_golang/prometheus", m("server/api"), m("server/registry/errcode"), m("swarm/castore")}},
		},
		{
			name: "the client reaches raft and bbolt through the registry",
			pkg: goPackage{ImportPath: m("server/client"), Name: "client", Imports: []string{m("server/registry")},
				Deps: []string{"github.com/hashicorp/raft", "github.com/hashicorp/raft-boltdb/v2", "go.etcd.io/bbolt", m("tagstore"), m("server/registry")}},
			others: []goPackage{{ImportPath: m("server/registry"), Name: "registry", Imports: []string{m("tagstore")},
				Deps: []string{"github.com/hashicorp/raft", "github.com/hashicorp/raft-boltdb/v2", "go.etcd.io/bbolt", m("tagstore")}}},
			wantBad: []string{
				"client: links github.com/hashicorp/raft (through " + m("server/registry") + "): the typed clients speak HTTP",
				"client: links github.com/hashicorp/raft-boltdb/v2 (through " + m("server/registry") + ")",
				"client: links go.etcd.io/bbolt (through " + m("server/registry") + ")",
			},
		},
		{
			name: "push and pull link the AWS SDK, one report for the whole SDK",
			pkg: goPackage{ImportPath: m("cli/blob"), Name: "blob", Imports: []string{m("cli/endpoints")},
				Deps: []string{"github.com/aws/aws-sdk-go-v2/service/s3", "github.com/aws/aws-sdk-go-v2/aws", "github.com/aws/smithy-go", m("backend/s3"), m("cli/endpoints")}},
			wantBad: []string{"blob: links github.com/aws/aws-sdk-go-v2/service/s3 and 2 more under github.com/aws: push and pull are HTTP clients"},
		},
		{
			name:    "address resolution links bolt",
			pkg:     goPackage{ImportPath: m("cli/endpoints"), Name: "endpoints", Deps: []string{"github.com/boltdb/bolt"}},
			wantBad: []string{"endpoints: links github.com/boltdb/bolt: every command resolves addresses here"},
		},
		{
			name: "errcode links only the standard library",
			pkg: goPackage{ImportPath: m("server/registry/errcode"), Name: "errcode", Imports: []string{"encoding/json", "net/http"},
				Deps: []string{"encoding/json", "internal/abi", "net/http", "vendor/golang.org/x/net/http/httpguts"}},
		},
		{
			name: "errcode imports a library and a package of the module",
			pkg: goPackage{ImportPath: m("server/registry/errcode"), Name: "errcode", Imports: []string{"github.com/opencontainers/go-digest", m("server/api")},
				Deps: []string{"fmt", "github.com/opencontainers/go-digest", m("server/api")}},
			wantBad: []string{
				"errcode: imports " + m("server/api") + ": server/registry/errcode imports nothing internal",
				"errcode: links github.com/opencontainers/go-digest: the error vocabulary is a leaf of the standard library",
				"errcode: links " + m("server/api") + ": the error vocabulary is a leaf",
			},
		},
		{
			name:    "server/api imports a server package",
			pkg:     goPackage{ImportPath: m("server/api"), Name: "api", Imports: []string{m("server/registry")}},
			wantBad: []string{"server/api imports nothing internal"},
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
