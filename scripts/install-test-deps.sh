#!/usr/bin/env bash
# install-test-deps.sh: install everything `make test` needs on a Debian 12 machine, and nothing
# that is already there. Safe to run again: a warm machine skips apt and the Go builds.
#
#   scripts/install-test-deps.sh
#
# What it installs:
#   apt   curl, git, make, gcc + libc6-dev (go test -race needs cgo), ca-certificates, iproute2 (scripts/lab-net.sh)
#   Go    the toolchain named by GO_VERSION into /usr/local/go, only if `go` is missing
#   tools goreleaser (pinned, `go install`) into $(go env GOPATH)/bin; golangci-lint (pinned,
#         `go install`) by scripts/golangci-lint.sh into its own versioned directory
#   helm  helm and kubeconform (pinned, `go install`) and Kubernetes' JSON schemas, by
#         scripts/helm-check.sh install (helm ~4 min cold)
#   S3    SeaweedFS, built once per machine by scripts/s3-server.sh install (~6 min cold)
#   GCS   fake-gcs-server, built once per machine by scripts/gcs-server.sh install (~2 min cold)
#   Azure  nodejs + npm (apt, when node is missing) and openssl (its start signs requests), then
#         Azurite, npm-installed once per machine by scripts/azurite-server.sh install (~1 min)
#   registry  docker-registry + htpasswd, by scripts/registry-server.sh install (apt, without
#         letting the package start its own service)
#   docker  docker.io (dockerd, containerd, runc) by scripts/docker-up.sh install (apt, without
#         starting it), and skopeo (apt): the real clients of the registry e2e tests. crane
#         and the OCI conformance suite are Go tools pinned in go.mod (`go tool crane`).
#
# Runs as root (apt-get); as another user it uses sudo when it has to install packages.
set -euo pipefail

cd "$(dirname "$0")/.."

GO_VERSION=${GO_VERSION:-1.26.8}
GORELEASER_MODULE=github.com/goreleaser/goreleaser/v2
GORELEASER_VERSION=${GORELEASER_VERSION:-v2.15.1}

log() { echo "install-test-deps: $*" >&2; }

# shellcheck source=scripts/service.sh
. "$(dirname "${BASH_SOURCE[0]}")/service.sh" # as_root

# apt_install installs the packages that dpkg does not report as installed. apt-get update runs
# at most once, and only when something is missing.
apt_install() {
  local missing=() p
  for p in "$@"; do
    [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" = "install ok installed" ] || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "apt-get install ${missing[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
}

install_go() {
  export PATH=/usr/local/go/bin:$PATH
  if command -v go >/dev/null 2>&1; then
    return 0
  fi
  local arch
  case "$(uname -m)" in
    x86_64) arch=amd64 ;;
    aarch64) arch=arm64 ;;
    *) log "no Go toolchain and no download for $(uname -m): install Go $GO_VERSION by hand"; return 1 ;;
  esac
  log "installing Go $GO_VERSION into /usr/local/go"
  local tmp; tmp=$(mktemp -d)
  curl -fsSL -o "$tmp/go.tgz" "https://go.dev/dl/go$GO_VERSION.linux-$arch.tar.gz"
  as_root rm -rf /usr/local/go
  as_root tar -C /usr/local -xzf "$tmp/go.tgz"
  rm -rf "$tmp"
  go version
}

# go_tool_ok BIN MODULE VERSION: BIN exists and was built from MODULE at VERSION.
go_tool_ok() {
  local bin=$1 module=$2 version=$3
  [ -x "$bin" ] || return 1
  go version -m "$bin" 2>/dev/null | awk -v m="$module" -v v="$version" '$1 == "mod" && $2 == m && $3 == v { ok = 1 } END { exit !ok }'
}

install_go_tool() {
  local name=$1 module=$2 version=$3 pkg=${4:-$2}
  local bindir; bindir=$(go env GOBIN)
  [ -n "$bindir" ] || bindir=$(go env GOPATH)/bin
  if go_tool_ok "$bindir/$name" "$module" "$version"; then
    return 0
  fi
  log "go install $pkg@$version (one time; goreleaser takes ~5 min cold)"
  local start=$SECONDS
  # Outside the repository, so the project's go.mod is neither read nor touched.
  (cd / && CGO_ENABLED=0 go install "$pkg@$version")
  log "built $name in $((SECONDS - start))s"
}

apt_install ca-certificates curl git make gcc libc6-dev skopeo iproute2 tmux
install_go
install_go_tool goreleaser "$GORELEASER_MODULE" "$GORELEASER_VERSION"
scripts/golangci-lint.sh install >/dev/null
scripts/helm-check.sh install
scripts/s3-server.sh install
scripts/gcs-server.sh install
command -v node >/dev/null 2>&1 || apt_install nodejs npm
apt_install openssl
scripts/azurite-server.sh install
scripts/registry-server.sh install
scripts/docker-up.sh install
log "all test dependencies present"
