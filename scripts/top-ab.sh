#!/usr/bin/env bash
# top-ab.sh: what watching a cluster costs its data plane. Runs `krakenctl bench swarm` ROUNDS
# times without a watcher and ROUNDS times with a real `krakenctl top` attached (in a tmux pane
# of 160x50, as an operator would run it, refreshing every second), alternated ABBA so that the
# machine's load falls on both alike. Prints one JSON line per run on stdout; progress on stderr.
#
#   scripts/top-ab.sh bin/krakenctl 3 -- --agents 8 --size 256MiB --rate 25MiB
#
# Each line: {"label": "plain"|"top", "load", "result" (bench swarm's JSON), "top_cpu_s" (the
# top process's own user+system CPU seconds, null for plain runs), "top_screens" (how many
# distinct screens top drew, read with capture-pane once a second: proof that it was live)}.
set -euo pipefail

if [ $# -lt 3 ] || [ "$3" != "--" ]; then
  echo "usage: $0 KRAKENCTL ROUNDS -- BENCH-SWARM-ARGS..." >&2
  exit 2
fi
bin=$(realpath "$1") rounds=$2
shift 3
for c in jq tmux; do
  command -v "$c" >/dev/null || { echo "$0: needs $c (scripts/install-test-deps.sh)" >&2; exit 2; }
done

work=$(mktemp -d)
sock="$work/tmux.sock"
T() { tmux -S "$sock" -f /dev/null "$@"; }
cleanup() {
  T kill-server 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

load1() { cut -d' ' -f1 /proc/loadavg; }

# cpu_of PID: user+system CPU seconds of a live process, from /proc/PID/stat.
cpu_of() {
  local tck
  tck=$(getconf CLK_TCK)
  awk -v t="$tck" '{ printf "%.2f", ($14 + $15) / t }' "/proc/$1/stat"
}

run_plain() {
  local load out
  load=$(load1)
  echo "top-ab: plain: bench swarm $* (load $load)" >&2
  out=$("$bin" bench swarm -o json "$@")
  jq -c -n --arg load "$load" --argjson r "$out" '{label: "plain", load: ($load|tonumber), result: $r, top_cpu_s: null, top_screens: null}'
}

run_top() {
  local load ep out pid cpu screens last sc
  load=$(load1)
  ep="$work/endpoints.yaml"
  rm -f "$ep"
  echo "top-ab: top: bench swarm $* (load $load)" >&2
  "$bin" bench swarm -o json --endpoints-file "$ep" "$@" >"$work/out.json" &
  local bench=$!
  # top starts once the cluster is up (the file is written when every server is ready).
  while [ ! -s "$ep" ]; do
    if ! kill -0 "$bench" 2>/dev/null; then
      wait "$bench"
      echo "top-ab: bench swarm ended before its cluster was up" >&2
      return 1
    fi
    sleep 0.05
  done
  T new-session -d -s top -x 160 -y 50 "$bin" top --endpoints-file "$ep" --interval 1s
  T set-option -t top remain-on-exit on >/dev/null
  pid=$(T display-message -p -t top '#{pane_pid}')
  screens=0 last="" cpu=0
  while kill -0 "$bench" 2>/dev/null; do
    sc=$(T capture-pane -p -t top 2>/dev/null | md5sum)
    if [ "$sc" != "$last" ]; then
      screens=$((screens + 1))
      last=$sc
    fi
    if kill -0 "$pid" 2>/dev/null; then
      cpu=$(cpu_of "$pid")
    fi
    sleep 1
  done
  wait "$bench"
  T send-keys -t top q
  T kill-server 2>/dev/null || true
  out=$(cat "$work/out.json")
  jq -c -n --arg load "$load" --argjson r "$out" --arg cpu "$cpu" --arg s "$screens" \
    '{label: "top", load: ($load|tonumber), result: $r, top_cpu_s: ($cpu|tonumber), top_screens: ($s|tonumber)}'
}

for ((i = 0; i < rounds; i++)); do
  if ((i % 2 == 0)); then
    run_plain "$@"
    run_top "$@"
  else
    run_top "$@"
    run_plain "$@"
  fi
done
