#!/usr/bin/env bash
# gcs-server.sh: build (once per machine, cached) and run fake-gcs-server, a Google Cloud
# Storage emulator, on loopback for the GCS backend tests.
#
#   scripts/gcs-server.sh install            build fake-gcs-server into the cache if it is not there
#   scripts/gcs-server.sh start PORT BUCKET  start it on 127.0.0.1:PORT, create BUCKET, print exports
#   scripts/gcs-server.sh stop PORT          stop the server started on PORT (by PID)
#
# `start` returns once the JSON API answers for BUCKET (creating it if needed), then prints
# export lines for GCS_ENDPOINT and GCS_BUCKET:
#
#   eval "$(scripts/gcs-server.sh start 19300 krakenctl-test)"
#
# The emulator keeps objects in memory and checks no credentials: the backend's permission
# errors are tested in-process. Its resumable-upload URLs point at -external-url, which is set
# to the loopback address so the client's chunked uploads come back to it.
# State (log, pid) lives in $GCS_STATE_DIR/PORT (default /tmp/krakenctl-gcs/PORT).
set -euo pipefail

# shellcheck source=scripts/service.sh
. "$(dirname "${BASH_SOURCE[0]}")/service.sh" # stop_pidfile

FAKE_GCS_VERSION=${FAKE_GCS_VERSION:-v1.56.1}
CACHE=${KRAKEN_TEST_CACHE:-$HOME/.cache/krakenctl-testinfra}
BIN=$CACHE/fake-gcs-server-$FAKE_GCS_VERSION/fake-gcs-server
log() { echo "gcs-server: $*" >&2; }
STATE=${GCS_STATE_DIR:-/tmp/krakenctl-gcs}

install() {
  [ -x "$BIN" ] && return 0
  echo "gcs-server: building fake-gcs-server $FAKE_GCS_VERSION (one time, a few minutes)" >&2
  local tmp; tmp=$(mktemp -d)
  # The trap clears itself: a RETURN trap set in a function stays set and fires again when the
  # caller returns, where $tmp is unset (set -u ended start on a machine that had just built).
  trap 'chmod -R u+w "$tmp" 2>/dev/null; rm -rf "$tmp"; trap - RETURN' RETURN
  mkdir -p "$(dirname "$BIN")"
  # Outside the repository, so the project's go.mod is neither read nor touched; in a
  # throw-away module and build cache so the intermediate files do not stay on the machine.
  (cd / && GOBIN=$tmp/bin GOMODCACHE=$tmp/mod GOCACHE=$tmp/cache GOFLAGS=-modcacherw CGO_ENABLED=0 \
     go install -trimpath -ldflags='-s -w' "github.com/fsouza/fake-gcs-server@$FAKE_GCS_VERSION")
  mv "$tmp/bin/fake-gcs-server" "$BIN"
}

# status URL [curl args...]: the HTTP status code of a request, 000 when nothing answers.
status() {
  local url=$1; shift
  curl -sS -o /dev/null -w '%{http_code}' "$@" "$url" 2>/dev/null || true
}

start() {
  local port=${1:?port} bucket=${2:-krakenctl-test}
  install
  local dir=$STATE/$port
  mkdir -p "$dir"
  if [ -f "$dir/pid" ] && kill -0 "$(cat "$dir/pid")" 2>/dev/null; then
    echo "gcs-server: already running on $port" >&2
  else
    "$BIN" -scheme http -host 127.0.0.1 -port "$port" -backend memory \
      -external-url "http://127.0.0.1:$port" -public-host "127.0.0.1:$port" \
      -log-level warn </dev/null >"$dir/log" 2>&1 &
    echo $! >"$dir/pid"
  fi
  local base=http://127.0.0.1:$port code
  for _ in $(seq 1 150); do
    code=$(status "$base/storage/v1/b/$bucket")
    [ "$code" = 200 ] && break
    if [ "$code" = 404 ]; then
      status "$base/storage/v1/b" -X POST -H 'Content-Type: application/json' \
        --data "{\"name\":\"$bucket\"}" >/dev/null
    fi
    if ! kill -0 "$(cat "$dir/pid")" 2>/dev/null; then
      echo "gcs-server: fake-gcs-server exited (port $port taken?); log:" >&2; tail -30 "$dir/log" >&2
      rm -f "$dir/pid"; return 1
    fi
    sleep 0.2
  done
  if [ "$code" != 200 ]; then
    echo "gcs-server: bucket $bucket not ready after 30 s (last status $code); log: $dir/log" >&2
    stop "$port"; return 1
  fi
  echo "export GCS_ENDPOINT=$base"
  echo "export GCS_BUCKET=$bucket"
}

stop() {
  local port=${1:?port} dir=$STATE/${1:-}
  stop_pidfile "$dir/pid" fake-gcs-server 10
}

cmd=${1:-}; shift || true
case "$cmd" in
  install) install ;;
  start) start "$@" ;;
  stop) stop "$@" ;;
  *) echo "usage: $0 install | start PORT [BUCKET] | stop PORT" >&2; exit 2 ;;
esac
