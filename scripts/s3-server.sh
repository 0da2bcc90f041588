#!/usr/bin/env bash
# s3-server.sh: build (once per machine, cached) and run SeaweedFS as a real S3-compatible
# server on loopback for the backend tests.
#
#   scripts/s3-server.sh install            build weed into the cache if it is not there
#   scripts/s3-server.sh start PORT BUCKET  start it on 127.0.0.1:PORT.. (PORT..PORT+14), print exports
#   scripts/s3-server.sh stop PORT          stop the server started on PORT (by PID)
#
# `start` returns once a SigV4-signed ListObjectsV2 of BUCKET answers 200 and the same request
# with a wrong secret answers 403, then prints export lines for S3_ENDPOINT, S3_BUCKET,
# AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY (default AKIAKRAKENTEST / kraken-test-secret, or the
# values already in the environment) and AWS_REGION=us-east-1:
#
#   eval "$(scripts/s3-server.sh start 19000 krakenctl-test)"
#
# State (data, log, pid) lives in $S3_STATE_DIR/PORT (default /tmp/krakenctl-s3/PORT); data
# survives a stop, so tests use a random key prefix per run.
#
# The build takes about 6 minutes of 2 cores the first time; it runs in a throw-away module
# and build cache so the ~5 GB of intermediate files do not stay on the machine.
set -euo pipefail

# shellcheck source=scripts/service.sh
. "$(dirname "${BASH_SOURCE[0]}")/service.sh" # stop_pidfile

WEED_VERSION=${WEED_VERSION:-v0.0.0-20261109003541-7506e5f91cd6}
CACHE=${KRAKEN_TEST_CACHE:-$HOME/.cache/krakenctl-testinfra}
WEED=$CACHE/weed-$WEED_VERSION/weed
log() { echo "s3-server: $*" >&2; }
STATE=${S3_STATE_DIR:-/tmp/krakenctl-s3}
export AWS_ACCESS_KEY_ID=${AWS_ACCESS_KEY_ID:-AKIAKRAKENTEST}
export AWS_SECRET_ACCESS_KEY=${AWS_SECRET_ACCESS_KEY:-kraken-test-secret}

install() {
  [ -x "$WEED" ] && return 0
  echo "s3-server: building SeaweedFS $WEED_VERSION (one time, several minutes)" >&2
  local tmp; tmp=$(mktemp -d)
  # The trap clears itself: a RETURN trap set in a function stays set and fires again when the
  # caller returns, where $tmp is unset (set -u ended start on a machine that had just built).
  trap 'chmod -R u+w "$tmp" 2>/dev/null; rm -rf "$tmp"; trap - RETURN' RETURN
  local dir
  # Its go.mod carries a replace directive, so `go install pkg@v` is refused; build it as the
  # main module from the downloaded source instead.
  dir=$(GOMODCACHE=$tmp/mod GOFLAGS=-modcacherw go mod download -json "github.com/seaweedfs/seaweedfs@$WEED_VERSION" |
        sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  [ -n "$dir" ] || { echo "s3-server: download of seaweedfs failed" >&2; return 1; }
  mkdir -p "$(dirname "$WEED")"
  (cd "$dir" && GOMODCACHE=$tmp/mod GOCACHE=$tmp/cache GOFLAGS=-modcacherw CGO_ENABLED=0 \
     go build -trimpath -ldflags='-s -w' -o "$WEED.tmp" ./weed)
  mv "$WEED.tmp" "$WEED"
}

# s3curl METHOD URL [curl args...]: a SigV4-signed request; prints the HTTP status code.
s3curl() {
  local method=$1 url=$2; shift 2
  curl -sS -o /dev/null -w '%{http_code}' -X "$method" --aws-sigv4 "aws:amz:us-east-1:s3" "$@" "$url" 2>/dev/null || true
}

start() {
  local port=${1:?port} bucket=${2:-krakenctl-test}
  install
  local dir=$STATE/$port
  mkdir -p "$dir/data"
  if [ -f "$dir/pid" ] && kill -0 "$(cat "$dir/pid")" 2>/dev/null; then
    echo "s3-server: already running on $port" >&2
  else
    cat >"$dir/s3.json" <<JSON
{"identities":[{"name":"test","credentials":[{"accessKey":"$AWS_ACCESS_KEY_ID","secretKey":"$AWS_SECRET_ACCESS_KEY"}],"actions":["Admin","Read","Write","List","Tagging"]}]}
JSON
    # Every TCP listener on 127.0.0.1 in PORT..PORT+14 (HTTP at +0..+4, gRPC at +10..+14);
    # WebDAV, the admin UI, Iceberg, Lance and telemetry off; unix sockets inside $dir.
    "$WEED" mini -dir="$dir/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 -metricsIp=127.0.0.1 \
      -s3.port="$port" -s3.port.grpc=$((port+13)) -s3.port.iceberg=0 -s3.port.lance=0 \
      -s3.config="$dir/s3.json" -s3.localSocket="$dir/s3.sock" -bucket="$bucket" \
      -master.port=$((port+1)) -master.port.grpc=$((port+10)) -master.telemetry=false \
      -volume.port=$((port+2)) -volume.port.grpc=$((port+11)) \
      -filer.port=$((port+3)) -filer.port.grpc=$((port+12)) -filer.localSocket="$dir/filer.sock" \
      -admin.port=$((port+4)) -admin.port.grpc=$((port+14)) -admin.port.legacy=0 -admin.ui=false \
      -webdav=false </dev/null >"$dir/log" 2>&1 &
    echo $! >"$dir/pid"
  fi
  local url=http://127.0.0.1:$port/$bucket status i
  # Ready when a signed ListObjectsV2 of the bucket succeeds; create the bucket if the server
  # is up but has not made it yet.
  for i in $(seq 1 300); do
    status=$(s3curl GET "$url?list-type=2" --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY")
    [ "$status" = 200 ] && break
    if [ "$status" = 404 ]; then
      s3curl PUT "$url" --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" >/dev/null
    fi
    kill -0 "$(cat "$dir/pid")" 2>/dev/null || { echo "s3-server: weed exited; log:" >&2; tail -30 "$dir/log" >&2; return 1; }
    sleep 0.2
  done
  if [ "$status" != 200 ]; then
    echo "s3-server: bucket $bucket not ready after 60 s (last status $status); log: $dir/log" >&2
    stop "$port"; return 1
  fi
  # Refuse to hand out a server that does not check signatures.
  status=$(s3curl GET "$url?list-type=2" --user "$AWS_ACCESS_KEY_ID:wrong-$AWS_SECRET_ACCESS_KEY")
  if [ "$status" != 403 ]; then
    echo "s3-server: a wrong secret got HTTP $status, not 403: credentials are not enforced" >&2
    stop "$port"; return 1
  fi
  echo "export S3_ENDPOINT=http://127.0.0.1:$port"
  echo "export S3_BUCKET=$bucket"
  echo "export AWS_ACCESS_KEY_ID=$AWS_ACCESS_KEY_ID"
  echo "export AWS_SECRET_ACCESS_KEY=$AWS_SECRET_ACCESS_KEY"
  echo "export AWS_REGION=us-east-1"
}

stop() {
  local port=${1:?port} dir=$STATE/${1:-}
  stop_pidfile "$dir/pid" SeaweedFS 10
}

cmd=${1:-}; shift || true
case "$cmd" in
  install) install ;;
  start) start "$@" ;;
  stop) stop "$@" ;;
  *) echo "usage: $0 install | start PORT [BUCKET] | stop PORT" >&2; exit 2 ;;
esac
