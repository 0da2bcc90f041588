#!/usr/bin/env bash
# bench-replicate.sh: replication throughput between two local clusters, against a plain
# `crane copy` between the same two, in one session.
#
#   scripts/bench-replicate.sh [ROUNDS]        (default 3; `make bench-replicate`)
#
# Starts two `krakenctl dev up --agents 0` clusters (A and B, 3 origins each, every blob on all
# three) and, for each round and each of two shapes, pushes two fresh images of that shape to
# A's proxy with crane (not measured) and copies them to B: one with `krakenctl replicate run
# --endpoints-file A --to B` (origins of A to origins of B, the tag through B's build-index),
# the other with `crane copy` from A's proxy to B's proxy (the registry API on both sides). The
# shapes: "big", one image of 8 layers of 16 MiB of random data; "small", one image of 200
# layers of 4 KiB (202 blobs with its config and manifest). Fresh images every time, so that
# neither side finds a blob at the destination. Within a round the two copies alternate order
# (replicate first for big, crane first for small, then the other way round in the next round),
# so the page cache and the machine's load fall on both alike.
#
# Measured: the wall time of each command, a process start included (both pay one). Bytes and
# blobs are the image's: the manifest, the config and every layer as pushed. Prints one JSON
# line per copy on stdout ({"round","shape","tool","blobs","bytes","seconds","load"}) and a
# summary table on stderr. Binaries are built (without -race) into a temporary directory.
# Both move 4 blobs at once: replicate's default --parallel, and crane copy --jobs 4 (its default
# is GOMAXPROCS, 2 on a 2-core machine).
# Needs: go, jq, tar, head; 127.0.0.1 ports.
set -euo pipefail

rounds=${1:-3}
cd "$(dirname "$0")/.."
export PATH=/usr/local/go/bin:$PATH

work=$(mktemp -d "${TMPDIR:-/tmp}/bench-replicate.XXXXXX")
pids=()
cleanup() {
  for p in "${pids[@]}"; do
    kill -TERM "$p" 2>/dev/null || true
  done
  for p in "${pids[@]}"; do
    wait "$p" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT
trap "exit 130" INT TERM

log() { echo "bench-replicate $(date +%T): $*" >&2; }

log "building krakenctl and crane into $work"
go build -o "$work/krakenctl" ./cmd/krakenctl
go build -o "$work/crane" github.com/google/go-containerregistry/cmd/crane
k=$work/krakenctl
crane() { DOCKER_CONFIG=$work/docker "$work/crane" "$@"; }

# up NAME starts a dev cluster and waits for its endpoints file.
up() {
  local name=$1
  "$k" dev up --port 0 --agents 0 --dir "$work/$name" --endpoints-file "$work/$name.json" \
    >"$work/$name.out" 2>&1 &
  pids+=($!)
  for _ in $(seq 600); do
    [ -s "$work/$name.json" ] && return 0
    sleep 0.1
  done
  log "dev up $name did not start:"; cat "$work/$name.out" >&2
  exit 1
}
up a
up b
proxy_a=$(jq -r '.proxy[0]' "$work/a.json")
proxy_b=$(jq -r '.proxy[0]' "$work/b.json")
log "A: proxy $proxy_a; B: proxy $proxy_b"

# image SHAPE REF builds a fresh image of SHAPE from random layers and pushes it to REF.
image() {
  local shape=$1 ref=$2 dir n size args=()
  dir=$(mktemp -d "$work/img.XXXXXX")
  case $shape in
    big) n=8 size=16M ;;
    small) n=200 size=4K ;;
  esac
  for i in $(seq "$n"); do
    head -c "$size" /dev/urandom >"$dir/f$i"
    tar -C "$dir" -cf "$dir/l$i.tar" "f$i"
    args+=(-f "$dir/l$i.tar")
  done
  crane append --insecure "${args[@]}" -t "$ref" >/dev/null 2>&1
  rm -rf "$dir"
}

# sizeof REF prints "blobs bytes" of the image at REF: manifest, config and layers.
sizeof() {
  local m
  m=$(crane manifest --insecure "$1")
  echo "$(jq '.layers | length + 2' <<<"$m") $(( ${#m} + $(jq '.config.size + ([.layers[].size] | add)' <<<"$m") ))"
}

now() { date +%s.%N; }
load() { cut -d' ' -f1 /proc/loadavg; }

# measure ROUND SHAPE TOOL TAG copies tag TAG of bench/SHAPE from A to B with TOOL.
measure() {
  local round=$1 shape=$2 tool=$3 tag=$4 start end blobs bytes ld
  read -r blobs bytes < <(sizeof "$proxy_a/bench/$shape:$tag")
  ld=$(load)
  start=$(now)
  case $tool in
    replicate) "$k" replicate run "bench/$shape:$tag" --endpoints-file "$work/a.json" --to "$work/b.json" -o json >"$work/rep.json" ;;
    crane) crane copy --insecure --jobs 4 "$proxy_a/bench/$shape:$tag" "$proxy_b/bench/$shape:$tag" 2>/dev/null ;;
  esac
  end=$(now)
  if [ "$tool" = replicate ] && [ "$(jq '.copied' "$work/rep.json")" != "$blobs" ]; then
    log "replicate copied $(jq '.copied' "$work/rep.json") blobs of $blobs"; exit 1
  fi
  jq -cn --argjson round "$round" --arg shape "$shape" --arg tool "$tool" --argjson blobs "$blobs" \
    --argjson bytes "$bytes" --argjson seconds "$(echo "$end - $start" | bc -l)" --argjson load "$ld" \
    '{round:$round, shape:$shape, tool:$tool, blobs:$blobs, bytes:$bytes, seconds:$seconds, load:$load}' | tee -a "$work/results.jsonl"
}

for r in $(seq "$rounds"); do
  for shape in big small; do
    log "round $r: pushing two fresh $shape images to A"
    image "$shape" "$proxy_a/bench/$shape:r$r-replicate"
    image "$shape" "$proxy_a/bench/$shape:r$r-crane"
    idx=0; [ "$shape" = small ] && idx=1
    order="replicate crane"
    [ $(( (r + idx) % 2 )) -eq 0 ] && order="crane replicate"
    for tool in $order; do
      measure "$r" "$shape" "$tool" "r$r-$tool"
    done
  done
done

# The summary: per shape and tool, the median of the rounds' blobs/s and MiB/s, and the ratio.
jq -rs '
  def median: sort | if length % 2 == 1 then .[length/2|floor] else (.[length/2-1] + .[length/2]) / 2 end;
  def r2: . * 100 | round / 100;
  group_by(.shape) | map(
    (map(select(.tool == "replicate"))) as $rep | (map(select(.tool == "crane"))) as $cr |
    ($rep | map(.blobs / .seconds) | median) as $rb | ($cr | map(.blobs / .seconds) | median) as $cb |
    ($rep | map(.bytes / 1048576 / .seconds) | median) as $rm | ($cr | map(.bytes / 1048576 / .seconds) | median) as $cm |
    "\(.[0].shape)\t\(.[0].blobs) blobs, \(.[0].bytes / 1048576 | r2) MiB\treplicate \($rb | r2) blobs/s \($rm | r2) MiB/s (s: \($rep | map(.seconds | r2) | join(", ")))\tcrane \($cb | r2) blobs/s \($cm | r2) MiB/s (s: \($cr | map(.seconds | r2) | join(", ")))\tratio \($rm / $cm | r2)"
  ) | .[]' "$work/results.jsonl" >&2
