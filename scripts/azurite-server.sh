#!/usr/bin/env bash
# azurite-server.sh: install (once per machine, cached) and run Azurite, Microsoft's Azure
# Storage emulator, as a real Blob service on loopback for the backend tests (backend/azure).
#
#   scripts/azurite-server.sh install                start nothing; npm-install Azurite into the cache
#   scripts/azurite-server.sh start PORT [CONTAINER] start azurite-blob on 127.0.0.1:PORT, print exports
#   scripts/azurite-server.sh stop PORT              stop the server started on PORT (by PID)
#
# `start` returns once a SharedKey-signed List Blobs of CONTAINER (default krakenctl-test)
# answers 200, creating the container if it is missing, and the same request signed with a
# wrong key answers 403; it then prints export lines:
#
#   eval "$(scripts/azurite-server.sh start 19400 krakenctl-test)"
#
#   AZURE_BLOB_ENDPOINT    http://127.0.0.1:PORT/devstoreaccount1 (path-style service URL)
#   AZURE_STORAGE_ACCOUNT  devstoreaccount1
#   AZURE_STORAGE_KEY      the emulator's well-known account key (public, in Microsoft's docs)
#   AZURE_CONTAINER        CONTAINER
#
# Azurite is an npm package installed with `npm install --prefix` into
# $KRAKEN_TEST_CACHE/azurite-VERSION (default ~/.cache/krakenctl-testinfra), never globally.
# AZURITE_VERSION defaults to 3.35.0, the newest release that runs on Node 20: 3.36.0 needs
# Node 21 and 3.37.0 Node 22 (their package.json engines). Telemetry is off.
#
# State (data, log, pid) lives in $AZURITE_STATE_DIR/PORT (default /tmp/krakenctl-azurite/PORT);
# data survives a stop, so tests use a random key prefix per run.
set -euo pipefail

# shellcheck source=scripts/service.sh
. "$(dirname "${BASH_SOURCE[0]}")/service.sh" # stop_pidfile

AZURITE_VERSION=${AZURITE_VERSION:-3.35.0}
CACHE=${KRAKEN_TEST_CACHE:-$HOME/.cache/krakenctl-testinfra}
DIR=$CACHE/azurite-$AZURITE_VERSION
BIN=$DIR/node_modules/.bin/azurite-blob
STATE=${AZURITE_STATE_DIR:-/tmp/krakenctl-azurite}
ACCOUNT=devstoreaccount1
# The emulator's fixed, published key: not a secret.
KEY=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==
API_VERSION=2021-08-06

log() { echo "azurite-server: $*" >&2; }

install() {
  [ -x "$BIN" ] && return 0
  command -v npm >/dev/null || { log "npm is missing (scripts/install-test-deps.sh installs nodejs and npm)"; return 1; }
  log "installing azurite@$AZURITE_VERSION into $DIR (one time, ~1 min)"
  local tmp=$DIR.tmp.$$
  rm -rf "$tmp"
  # Into a temporary prefix first, so an interrupted install never looks complete.
  npm install --prefix "$tmp" --no-audit --no-fund --omit=dev --loglevel=error "azurite@$AZURITE_VERSION" >&2
  rm -rf "$DIR"
  mv "$tmp" "$DIR"
  # npm's .bin links are relative, so they survive the move.
  [ -x "$BIN" ] || { log "install did not produce $BIN"; return 1; }
}

# azcurl PORT METHOD PATH QUERY KEY [curl args...]: a SharedKey-signed request to
# http://127.0.0.1:PORT/$ACCOUNT/PATH?QUERY (QUERY as name=value&..., names in lexical order);
# prints the HTTP status code.
azcurl() {
  local port=$1 method=$2 path=$3 query=$4 key=$5; shift 5
  local date; date=$(LC_ALL=C TZ=GMT date '+%a, %d %b %Y %H:%M:%S GMT')
  # String to sign: verb, eleven empty standard headers (no body, so no Content-Length), the
  # x-ms- headers, then the resource: /account + URL path, and one "name:value" line per query
  # parameter.
  local resource="/$ACCOUNT/$ACCOUNT/$path" q
  if [ -n "$query" ]; then
    local IFS='&'
    for q in $query; do resource+=$'\n'"${q%%=*}:${q#*=}"; done
    unset IFS
  fi
  local sts
  sts=$(printf '%s\n\n\n\n\n\n\n\n\n\n\n\nx-ms-date:%s\nx-ms-version:%s\n%s' "$method" "$date" "$API_VERSION" "$resource")
  local hexkey sig
  hexkey=$(printf '%s' "$key" | base64 -d | od -An -tx1 | tr -d ' \n')
  sig=$(printf '%s' "$sts" | openssl dgst -sha256 -mac HMAC -macopt "hexkey:$hexkey" -binary | base64 -w0)
  curl -sS -o /dev/null -w '%{http_code}' -X "$method" \
    -H "x-ms-date: $date" -H "x-ms-version: $API_VERSION" -H "Content-Length: 0" \
    -H "Authorization: SharedKey $ACCOUNT:$sig" "$@" \
    "http://127.0.0.1:$port/$ACCOUNT/$path${query:+?$query}" 2>/dev/null || true
}

check_port() {
  if ! [[ $1 =~ ^[0-9]+$ ]] || ! ((1 <= $1 && $1 <= 65535)); then
    log "invalid port '$1'"; exit 2
  fi
}

start() {
  local port=${1:?port} container=${2:-krakenctl-test}
  check_port "$port"
  [[ $container =~ ^[a-z0-9]([a-z0-9]|-[a-z0-9]){2,62}$ ]] || { log "invalid container name '$container'"; exit 2; }
  install
  local dir=$STATE/$port
  mkdir -p "$dir/data"
  if [ -f "$dir/pid" ] && kill -0 "$(cat "$dir/pid")" 2>/dev/null; then
    log "already running on $port"
  else
    # --skipApiVersionCheck: the Go SDK may send a newer x-ms-version than this Azurite knows.
    # --loose: ignore headers it does not implement instead of failing the request.
    "$BIN" --blobHost 127.0.0.1 --blobPort "$port" --location "$dir/data" \
      --skipApiVersionCheck --loose --disableTelemetry --silent </dev/null >"$dir/log" 2>&1 &
    echo $! >"$dir/pid"
  fi
  local status
  for _ in $(seq 1 150); do
    status=$(azcurl "$port" GET "$container" "comp=list&restype=container" "$KEY")
    [ "$status" = 200 ] && break
    if [ "$status" = 404 ]; then
      azcurl "$port" PUT "$container" "restype=container" "$KEY" >/dev/null
    fi
    kill -0 "$(cat "$dir/pid")" 2>/dev/null || { log "azurite exited; log:"; tail -30 "$dir/log" >&2; return 1; }
    sleep 0.2
  done
  if [ "$status" != 200 ]; then
    log "container $container not ready after 30 s (last status $status); log: $dir/log"
    stop "$port"; return 1
  fi
  # Refuse to hand out a server that does not check signatures.
  local wrong; wrong=$(printf 'wrong-%s' "$KEY" | head -c 64 | base64 -w0)
  status=$(azcurl "$port" GET "$container" "comp=list&restype=container" "$wrong")
  if [ "$status" != 403 ]; then
    log "a wrong key got HTTP $status, not 403: credentials are not enforced"
    stop "$port"; return 1
  fi
  echo "export AZURE_BLOB_ENDPOINT=http://127.0.0.1:$port/$ACCOUNT"
  echo "export AZURE_STORAGE_ACCOUNT=$ACCOUNT"
  echo "export AZURE_STORAGE_KEY=$KEY"
  echo "export AZURE_CONTAINER=$container"
}

stop() {
  local port=${1:?port}
  check_port "$port"
  local dir=$STATE/$port
  stop_pidfile "$dir/pid" Azurite 10
}

cmd=${1:-}; shift || true
case "$cmd" in
  install) install ;;
  start) start "$@" ;;
  stop) stop "$@" ;;
  *) echo "usage: $0 install | start PORT [CONTAINER] | stop PORT" >&2; exit 2 ;;
esac
