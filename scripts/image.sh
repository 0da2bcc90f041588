#!/usr/bin/env bash
# image.sh: build the krakenctl container image, offline (nothing is pulled: the image is FROM
# scratch, assembled by scripts/imagebuild with go-containerregistry, no Docker daemon needed).
#
#   scripts/image.sh build [--platform linux/amd64,linux/arm64] [--tag krakenctl:dev] [--out DIR] [--no-load]
#
# For each platform it builds a static binary (CGO_ENABLED=0, -trimpath, the same -ldflags as
# goreleaser.yaml) into DIR/bin/OS_ARCH/krakenctl, then writes
#   DIR/oci                        an OCI image layout: one index (every platform), named by the tag
#   DIR/krakenctl_OS_ARCH.tar      a `docker load` tarball of each platform, tagged with --tag
# and, when a Docker daemon answers (DOCKER_HOST, or the default socket) and the machine's
# platform was built, loads that platform into it as --tag. --no-load skips the daemon.
# It prints the layout's path and the index digest last.
#
# Defaults: both platforms, krakenctl:dev, DIR=bin/image. Labels (org.opencontainers.image.*):
# version from $VERSION or `git describe --tags --always --dirty`, revision from $REVISION or
# the HEAD commit, created from $SOURCE_DATE_EPOCH or the HEAD commit's time (so a rebuild of
# one commit gives the same digests), licenses from $IMAGE_LICENSES (NOASSERTION: the tree has
# no LICENSE file yet). The CA bundle is the build machine's /etc/ssl/certs/ca-certificates.crt
# ($CA_CERTIFICATES overrides; empty for none): the registry backend verifies https upstreams
# against it.
#
# Why not goreleaser's dockers_v2: it drives `docker buildx`, whose multi-platform builds need the
# docker-container driver (a moby/buildkit image pulled from Docker Hub) or the containerd image
# store; neither works offline here. goreleaser keeps building the archives.
set -euo pipefail

cd "$(dirname "$0")/.."
export PATH=/usr/local/go/bin:$PATH

log() { echo "image.sh: $*" >&2; }

usage() {
	echo "usage: $0 build [--platform linux/amd64,linux/arm64] [--tag krakenctl:dev] [--out DIR] [--no-load]" >&2
	exit 2
}

[ "${1:-}" = build ] || usage
shift
platforms=linux/amd64,linux/arm64
tag=krakenctl:dev
out=bin/image
load=1
while [ $# -gt 0 ]; do
	case $1 in
	--platform) [ $# -ge 2 ] || usage; platforms=$2; shift 2 ;;
	--tag) [ $# -ge 2 ] || usage; tag=$2; shift 2 ;;
	--out) [ $# -ge 2 ] || usage; out=$2; shift 2 ;;
	--no-load) load=0; shift ;;
	*) usage ;;
	esac
done

git_ok() { git rev-parse --is-inside-work-tree >/dev/null 2>&1; }
version=${VERSION:-}
if [ -z "$version" ]; then
	version=$(git_ok && git describe --tags --always --dirty 2>/dev/null || echo dev)
fi
revision=${REVISION:-$(git_ok && git rev-parse HEAD 2>/dev/null || true)}
epoch=${SOURCE_DATE_EPOCH:-$(git_ok && git log -1 --format=%ct 2>/dev/null || date +%s)}
created=$(date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ)
ca=${CA_CERTIFICATES-/etc/ssl/certs/ca-certificates.crt}

mkdir -p "$out"
bins=()
IFS=, read -r -a plats <<<"$platforms"
for p in "${plats[@]}"; do
	goos=${p%%/*} goarch=${p#*/}
	if [ "$goos" != linux ] || [ -z "$goarch" ] || [ "$goarch" = "$p" ]; then
		log "platform $p: the image is linux/ARCH only"
		exit 2
	fi
	b=$out/bin/${goos}_$goarch/krakenctl
	log "go build $p -> $b (version $version)"
	CGO_ENABLED=0 GOOS=$goos GOARCH=$goarch go build -trimpath \
		-ldflags "-s -w -X github.com/krakenctl/krakenctl/cli/root.buildVersion=$version -X github.com/krakenctl/krakenctl/cli/root.buildCommit=$revision -X github.com/krakenctl/krakenctl/cli/root.buildDate=$created" \
		-o "$b" ./cmd/krakenctl
	bins+=(-bin "$p=$b")
done

log "assemble $tag for $platforms into $out"
result=$(go run ./scripts/imagebuild -out "$out" -tag "$tag" -version "$version" -revision "$revision" \
	-created "$created" -licenses "${IMAGE_LICENSES:-NOASSERTION}" -ca-certificates "$ca" "${bins[@]}")

host=linux/$(go env GOARCH)
hosttar=$out/krakenctl_linux_$(go env GOARCH).tar
if [ "$load" = 1 ]; then
	if ! command -v docker >/dev/null; then
		log "no docker client: not loaded (load $hosttar with docker load -i)"
	elif ! timeout 10 docker version --format '{{.Server.Version}}' >/dev/null 2>&1; then
		log "no Docker daemon answers${DOCKER_HOST:+ at $DOCKER_HOST}: not loaded"
	elif [ ! -f "$hosttar" ]; then
		log "this machine's platform $host was not built: nothing to load"
	else
		docker load -i "$hosttar" >&2
		log "loaded $host as $tag"
	fi
fi
echo "$result"
