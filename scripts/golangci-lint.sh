#!/usr/bin/env bash
# golangci-lint.sh: run the pinned golangci-lint on the tree, building it first if this machine
# does not have that exact version yet. Configuration: .golangci.yml.
#
#   scripts/golangci-lint.sh [ARGS...]    golangci-lint ARGS (default: run ./...)
#   scripts/golangci-lint.sh install      build it if missing and print its path
#
# The binary is built with `go install` from the Go module proxy (the toolchain that lints is
# the one that builds it, so it understands this module's Go version) into a directory of its
# own version, next to the test servers built once per machine (scripts/s3-server.sh):
# $KRAKEN_TEST_CACHE/golangci-lint-VERSION (default ~/.cache/krakenctl-testinfra). So it neither
# replaces nor is shadowed by another golangci-lint on PATH. The first build takes a few
# minutes; later runs reuse it, and golangci-lint's own cache (~/.cache/golangci-lint) makes a
# run over an unchanged tree take seconds.
#
# Environment: GOLANGCI_LINT_VERSION (the pin below), KRAKEN_TEST_CACHE.
set -euo pipefail

cd "$(dirname "$0")/.."
export PATH=/usr/local/go/bin:$PATH

MODULE=github.com/golangci/golangci-lint/v2
VERSION=${GOLANGCI_LINT_VERSION:-v2.15.0}
CACHE=${KRAKEN_TEST_CACHE:-$HOME/.cache/krakenctl-testinfra}
BINDIR=$CACHE/golangci-lint-$VERSION
BIN=$BINDIR/golangci-lint

log() { echo "golangci-lint.sh: $*" >&2; }

# built: BIN exists and go reports it was built from MODULE at VERSION (a build cut short
# leaves no such binary).
built() {
  [ -x "$BIN" ] &&
    go version -m "$BIN" 2>/dev/null | awk -v m="$MODULE" -v v="$VERSION" '$1 == "mod" && $2 == m && $3 == v { ok = 1 } END { exit !ok }'
}

if ! built; then
  log "building golangci-lint $VERSION into $BINDIR (one time; a few minutes cold)"
  start=$SECONDS
  mkdir -p "$BINDIR"
  # Outside the repository, so the project's go.mod is neither read nor touched; GOFLAGS is
  # cleared so a -mod setting meant for this module does not apply to the tool's build.
  (cd / && CGO_ENABLED=0 GOFLAGS= GOBIN=$BINDIR go install "$MODULE/cmd/golangci-lint@$VERSION")
  built || { log "$BIN is not golangci-lint $VERSION after the build"; exit 1; }
  log "built in $((SECONDS - start))s"
fi

if [ "${1:-}" = install ]; then
  echo "$BIN"
  exit 0
fi
[ $# -gt 0 ] || set -- run ./...
exec "$BIN" "$@"
