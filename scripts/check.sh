#!/usr/bin/env bash
# check.sh: the static checks of `make test`, runnable one by one. Every named check runs even
# when an earlier one fails; the exit status is 1 if any failed, and the failures are listed last.
#
#   scripts/check.sh [CHECK...]     default: fmt vet build lint docs release helm image
#
# Checks:
#   fmt      gofmt -l reports no file
#   vet      go vet ./...
#   build    CGO_ENABLED=0 go build ./... (the project is pure Go)
#   lint     golangci-lint (pinned in scripts/golangci-lint.sh, built there on first use) with
#            .golangci.yml reports nothing
#   docs     scripts/gen-docs.sh leaves completions/ and man/ as committed, and every file and
#            function docs/architecture.md and docs/agent.md name exists (scripts/doc-names.sh)
#   release  goreleaser check (pinned version) on goreleaser.yaml, and no other goreleaser
#            config that would shadow it
#   helm     scripts/helm-check.sh: helm lint --strict, helm template and kubeconform -strict of
#            charts/krakenctl (defaults and examples/), bad values refused, role configs validated
#   cross    CGO_ENABLED=0 builds of cmd/krakenctl for linux|darwin x amd64|arm64 into bin/
#   image    scripts/image.sh builds the container image for linux/amd64 and arm64 into bin/image
#            (not loaded into Docker: test/e2e TestImage builds, loads and runs its own)
set -euo pipefail

cd "$(dirname "$0")/.."
export PATH=/usr/local/go/bin:$PATH
PATH=$PATH:$(go env GOPATH)/bin

GORELEASER_VERSION=${GORELEASER_VERSION:-v2.15.1}
PLATFORMS="linux/amd64 linux/arm64 darwin/amd64 darwin/arm64"

failed=()

# go_files lists the Go files of the tree (tracked and new, not ignored, not testdata).
go_files() {
  if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    git ls-files -z --cached --others --exclude-standard -- '*.go' | tr '\0' '\n'
  else
    find . -name '*.go' -not -path './.git/*'
  fi | grep -v -e '/testdata/' -e '^testdata/' | while read -r f; do [ -f "$f" ] && echo "$f"; done
}

check_fmt() {
  local bad
  bad=$(go_files | xargs -r gofmt -l)
  if [ -n "$bad" ]; then
    echo "gofmt: these files need formatting (run gofmt -w):" >&2
    echo "$bad" >&2
    return 1
  fi
}

check_vet() { go vet ./...; }

check_build() { CGO_ENABLED=0 go build ./...; }

check_lint() { scripts/golangci-lint.sh run ./...; }

check_docs() {
  scripts/gen-docs.sh
  local changes
  changes=$(git status --porcelain -- completions man)
  if [ -n "$changes" ]; then
    echo "docs: completions/ or man/ are out of date; run 'make docs' and commit the result:" >&2
    echo "$changes" >&2
    git --no-pager diff --stat -- completions man >&2 || true
    return 1
  fi
  # The documents that walk through the code name files and functions; renaming one must not
  # leave them pointing at nothing.
  scripts/doc-names.sh docs/architecture.md docs/agent.md
}

check_release() {
  local shadow
  shadow=$(ls -d .goreleaser.yml .goreleaser.yaml .config/goreleaser.yml .config/goreleaser.yaml goreleaser.yml 2>/dev/null || true)
  if [ -n "$shadow" ]; then
    echo "release: remove $shadow: goreleaser.yaml must be the only goreleaser config" >&2
    return 1
  fi
  if ! command -v goreleaser >/dev/null 2>&1; then
    echo "release: goreleaser not installed; run scripts/install-test-deps.sh" >&2
    return 1
  fi
  local have
  have=$(go version -m "$(command -v goreleaser)" | awk '$1 == "mod" { print $3 }')
  if [ "$have" != "$GORELEASER_VERSION" ]; then
    echo "release: goreleaser is $have, want $GORELEASER_VERSION; run scripts/install-test-deps.sh" >&2
    return 1
  fi
  # rc 2 means valid but deprecated: that fails too. (goreleaser forces colour when CI is set;
  # keep the CI log plain.)
  env -u CI goreleaser check -f goreleaser.yaml
}

check_helm() { scripts/helm-check.sh; }

check_cross() {
  local p os arch rc=0
  mkdir -p bin
  for p in $PLATFORMS; do
    os=${p%/*} arch=${p#*/}
    echo "cross: $os/$arch" >&2
    CGO_ENABLED=0 GOOS=$os GOARCH=$arch go build -trimpath -ldflags='-s -w' \
      -o "bin/krakenctl-$os-$arch" ./cmd/krakenctl || rc=1
  done
  return $rc
}

check_image() { scripts/image.sh build --no-load --out bin/image; }

checks=("$@")
[ ${#checks[@]} -gt 0 ] || checks=(fmt vet build lint docs release helm image)
for c in "${checks[@]}"; do
  case "$c" in
    fmt | vet | build | lint | docs | release | helm | cross | image) ;;
    *) echo "check.sh: unknown check $c (want fmt vet build lint docs release helm cross image)" >&2; exit 2 ;;
  esac
  echo "==> check $c" >&2
  if ! "check_$c"; then
    echo "check.sh: FAIL $c" >&2
    failed+=("$c")
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "check.sh: FAILED: ${failed[*]}" >&2
  exit 1
fi
