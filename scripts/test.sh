#!/usr/bin/env bash
# test.sh: the whole test suite, as `make test` and CI (.ci/run) run it on a Debian 12 machine.
#
#   scripts/test.sh
#
# 1. installs what is missing (scripts/install-test-deps.sh; ~10 min on a cold machine, seconds
#    on a warm one),
# 2. starts the real servers the tests use, on loopback, and stops them on exit:
#      SeaweedFS S3   scripts/s3-server.sh start $KRAKENCTL_S3_PORT $KRAKENCTL_S3_BUCKET
#                     -> S3_ENDPOINT S3_BUCKET AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_REGION
#      fake-gcs-server scripts/gcs-server.sh start $KRAKENCTL_GCS_PORT $KRAKENCTL_GCS_BUCKET
#                     -> GCS_ENDPOINT GCS_BUCKET
#      Azurite        scripts/azurite-server.sh start $KRAKENCTL_AZURITE_PORT $KRAKENCTL_AZURE_CONTAINER
#                     -> AZURE_BLOB_ENDPOINT AZURE_STORAGE_ACCOUNT AZURE_STORAGE_KEY AZURE_CONTAINER
#      registry       scripts/registry-server.sh start $KRAKENCTL_REGISTRY_PORT USER PASS
#                     -> REGISTRY_ADDR REGISTRY_USERNAME REGISTRY_PASSWORD (htpasswd auth on)
#      Docker         scripts/docker-up.sh start $KRAKENCTL_DOCKER_DIR (the daemon that answers,
#                     else a private dockerd, logging to $KRAKENCTL_TEST_LOG_DIR/dockerd.log)
#                     -> DOCKER_HOST CONTAINERD_ADDRESS
#      lab address    scripts/lab-net.sh up (a veth pair in a network namespace of its own:
#                     dockerd reads certs.d only for registries off loopback)
#                     -> KRAKENCTL_LAB_ADDR
#    (a server whose variables are already set in the environment is used as is, not started),
# 3. sets KRAKENCTL_REQUIRE_REAL_SERVERS=1: tests that need one of these servers fail instead
#    of skipping when its variable is missing,
# 4. runs the static checks (scripts/check.sh: gofmt, go vet, pure-Go build, golangci-lint,
#    generated docs up to date, goreleaser check, the image build), and
# 5. runs go test -race over every package, last, so the closing lines are go test's own.
#    The output is also written to $KRAKENCTL_TEST_LOG_DIR/go-test.log.
#
# Exit status: 0 only if every check and every test passed.
#
# Environment: KRAKENCTL_S3_PORT (19100; uses PORT..PORT+14), KRAKENCTL_S3_BUCKET
# (krakenctl-test), KRAKENCTL_GCS_PORT (19300), KRAKENCTL_GCS_BUCKET (krakenctl-test),
# KRAKENCTL_AZURITE_PORT (19400), KRAKENCTL_AZURE_CONTAINER (krakenctl-test),
# KRAKENCTL_REGISTRY_PORT (19200), KRAKENCTL_REGISTRY_USER (kraken),
# KRAKENCTL_REGISTRY_PASSWORD (kraken-test-pass), KRAKENCTL_DOCKER_DIR (a private dockerd's
# state, ${TMPDIR:-/tmp}/krakenctl-docker), KRAKENCTL_SKIP_DEPS=1 (skip step 1),
# KRAKENCTL_TEST_LOG_DIR (/tmp/krakenctl-test), GO_TEST_FLAGS (extra go test flags),
# GO_TEST_PACKAGES (./...).
set -euo pipefail

cd "$(dirname "$0")/.."
export PATH=/usr/local/go/bin:$PATH

S3_PORT=${KRAKENCTL_S3_PORT:-19100}
S3_BUCKET_NAME=${KRAKENCTL_S3_BUCKET:-krakenctl-test}
GCS_PORT=${KRAKENCTL_GCS_PORT:-19300}
GCS_BUCKET_NAME=${KRAKENCTL_GCS_BUCKET:-krakenctl-test}
AZURITE_PORT=${KRAKENCTL_AZURITE_PORT:-19400}
AZURE_CONTAINER_NAME=${KRAKENCTL_AZURE_CONTAINER:-krakenctl-test}
REGISTRY_PORT=${KRAKENCTL_REGISTRY_PORT:-19200}
REGISTRY_USER=${KRAKENCTL_REGISTRY_USER:-kraken}
REGISTRY_PASS=${KRAKENCTL_REGISTRY_PASSWORD:-kraken-test-pass}
DOCKER_DIR=${KRAKENCTL_DOCKER_DIR:-${TMPDIR:-/tmp}/krakenctl-docker}
LOG_DIR=${KRAKENCTL_TEST_LOG_DIR:-${TMPDIR:-/tmp}/krakenctl-test}
mkdir -p "$LOG_DIR"

log() { echo "test.sh: $*" >&2; }

if [ "${KRAKENCTL_SKIP_DEPS:-}" != 1 ]; then
  scripts/install-test-deps.sh
fi
PATH=$PATH:$(go env GOPATH)/bin

# Servers started here are stopped on exit, quietly, so go test's lines stay the last ones.
stops=()
cleanup() {
  local s
  for s in "${stops[@]}"; do
    eval "$s" >>"$LOG_DIR/servers.log" 2>&1 || true
  done
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# start_server NAME VAR CMD...: run CMD (a `start` that prints export lines) and eval its output,
# unless VAR is already set.
start_server() {
  local name=$1 var=$2; shift 2
  if [ -n "${!var:-}" ]; then
    log "$name: using $var=${!var} from the environment"
    return 0
  fi
  log "$name: $*"
  local exports
  exports=$("$@" 2>>"$LOG_DIR/servers.log") || {
    log "$name: failed to start; see $LOG_DIR/servers.log:"
    tail -20 "$LOG_DIR/servers.log" >&2
    return 1
  }
  eval "$exports"
  [ -n "${!var:-}" ] || { log "$name: its start command did not set $var"; return 1; }
  log "$name: $var=${!var}"
}

: >"$LOG_DIR/servers.log"
[ -n "${S3_ENDPOINT:-}" ] || stops+=("scripts/s3-server.sh stop $S3_PORT")
start_server "S3 (SeaweedFS)" S3_ENDPOINT scripts/s3-server.sh start "$S3_PORT" "$S3_BUCKET_NAME"
[ -n "${GCS_ENDPOINT:-}" ] || stops+=("scripts/gcs-server.sh stop $GCS_PORT")
start_server "GCS (fake-gcs-server)" GCS_ENDPOINT scripts/gcs-server.sh start "$GCS_PORT" "$GCS_BUCKET_NAME"
[ -n "${AZURE_BLOB_ENDPOINT:-}" ] || stops+=("scripts/azurite-server.sh stop $AZURITE_PORT")
start_server "Azure Blob (Azurite)" AZURE_BLOB_ENDPOINT \
  scripts/azurite-server.sh start "$AZURITE_PORT" "$AZURE_CONTAINER_NAME"
if [ -z "${REGISTRY_ADDR:-}" ]; then
  # A registry left by an interrupted run on this port would refuse a second start.
  scripts/registry-server.sh stop "$REGISTRY_PORT" >>"$LOG_DIR/servers.log" 2>&1 || true
  stops+=("scripts/registry-server.sh stop $REGISTRY_PORT")
fi
start_server "registry" REGISTRY_ADDR \
  scripts/registry-server.sh start "$REGISTRY_PORT" "$REGISTRY_USER" "$REGISTRY_PASS"
# A daemon already answering is used and left running; a private one started here is stopped.
[ -n "${DOCKER_HOST:-}" ] || stops+=("scripts/docker-up.sh stop $(printf %q "$DOCKER_DIR")")
start_server "Docker" DOCKER_HOST \
  env DOCKER_UP_LOG="$LOG_DIR/dockerd.log" scripts/docker-up.sh start "$DOCKER_DIR"
# One address that is not loopback, on a veth pair of our own, for docker's certs.d test.
[ -n "${KRAKENCTL_LAB_ADDR:-}" ] || stops+=("scripts/lab-net.sh down")
start_server "lab address" KRAKENCTL_LAB_ADDR scripts/lab-net.sh up
export KRAKENCTL_LAB_ADDR
export S3_ENDPOINT S3_BUCKET AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_REGION
export GCS_ENDPOINT GCS_BUCKET
export AZURE_BLOB_ENDPOINT AZURE_STORAGE_ACCOUNT AZURE_STORAGE_KEY AZURE_CONTAINER
# The containerd under the Docker daemon (for the containerd mirror test): docker-up.sh exports
# it; with a daemon given in the environment, look where Debian's and Docker's own put it.
if [ -z "${CONTAINERD_ADDRESS:-}" ]; then
  for s in /run/containerd/containerd.sock /var/run/docker/containerd/containerd.sock; do
    if [ -S "$s" ]; then CONTAINERD_ADDRESS=$s; break; fi
  done
fi
log "containerd: CONTAINERD_ADDRESS=${CONTAINERD_ADDRESS:-(none found)}"
export REGISTRY_ADDR REGISTRY_USERNAME REGISTRY_PASSWORD DOCKER_HOST CONTAINERD_ADDRESS
export KRAKENCTL_REQUIRE_REAL_SERVERS=${KRAKENCTL_REQUIRE_REAL_SERVERS:-1}

status=0
if ! scripts/check.sh; then
  status=1
  log "static checks failed (see above); running the tests anyway"
fi

log "go test -race -count=1 -timeout 30m ${GO_TEST_FLAGS:-} ${GO_TEST_PACKAGES:-./...}"
set +e
# shellcheck disable=SC2086 # GO_TEST_FLAGS and GO_TEST_PACKAGES are word lists
CGO_ENABLED=1 go test -race -count=1 -timeout 30m ${GO_TEST_FLAGS:-} ${GO_TEST_PACKAGES:-./...} 2>&1 |
  tee "$LOG_DIR/go-test.log"
test_status=${PIPESTATUS[0]}
set -e
[ "$test_status" -eq 0 ] || status=$test_status
exit "$status"
