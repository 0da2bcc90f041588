#!/usr/bin/env bash
# ab-bench.sh: compare two krakenctl binaries on the same benchmark, alternated, in one session,
# so that the machine's load falls on both alike. Prints one JSON document per run, each
# labelled with the binary it came from, on stdout; progress goes to stderr.
#
#   scripts/ab-bench.sh BEFORE AFTER ROUNDS -- bench swarm --agents 8 --size 512MiB
#   scripts/ab-bench.sh /tmp/krakenctl-base bin/krakenctl 3 -- bench tags
#
# Each round runs BEFORE then AFTER, and the next round the other way round (ABBA...), so
# neither binary always runs on a warmer page cache. `-o json` is added to the command.
set -euo pipefail

if [ $# -lt 5 ] || [ "$4" != "--" ]; then
  echo "usage: $0 BEFORE AFTER ROUNDS -- COMMAND..." >&2
  exit 2
fi
before=$1 after=$2 rounds=$3
shift 4
command -v jq >/dev/null || { echo "$0: needs jq (apt-get install jq)" >&2; exit 2; }
for b in "$before" "$after"; do
  [ -x "$b" ] || { echo "$0: $b is not an executable" >&2; exit 2; }
done

run() {
  local label=$1 bin=$2
  local load
  load=$(cut -d' ' -f1 /proc/loadavg)
  echo "ab-bench: $label ($bin) $* (load $load)" >&2
  "$bin" "${@:3}" -o json | jq -c --arg which "$label" --arg load "$load" '{"binary": $which, "load": ($load|tonumber), "result": .}'
}

for ((i = 1; i <= rounds; i++)); do
  if ((i % 2)); then
    run before "$before" "$@"
    run after "$after" "$@"
  else
    run after "$after" "$@"
    run before "$before" "$@"
  fi
done
