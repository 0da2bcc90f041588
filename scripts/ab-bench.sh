#!/usr/bin/env bash
# ab-bench.sh: compare two sides of a benchmark, alternated, in one session, so that the
# machine's load falls on both alike: two krakenctl binaries on the same command, or one binary
# with and without some flags (-a/-b add arguments to one side). Prints one JSON document per
# run on stdout; progress goes to stderr.
#
#   scripts/ab-bench.sh BEFORE AFTER ROUNDS -- bench swarm --agents 8 --size 512MiB
#   scripts/ab-bench.sh /tmp/krakenctl-base bin/krakenctl 3 -- bench tags
#   scripts/ab-bench.sh -l plain,tls -b --tls bin/krakenctl bin/krakenctl 3 -- bench tags
#
# Options (before BEFORE):
#   -a ARG   append ARG to the first side's command (repeat for several)
#   -b ARG   append ARG to the second side's command (repeat for several)
#   -l A,B   the two sides' labels in the output (default before,after)
#
# Each round runs the first side then the second, and the next round the other way round
# (ABBA...), so neither always runs on a warmer page cache. `-o json` is added to the command.
# Each line is {"label", "binary", "args", "started" (UTC), "load" and "load_end" (the 1-minute
# load average when the run started and ended), "result" (the command's JSON)}.
set -euo pipefail

usage() {
  echo "usage: $0 [-a ARG]... [-b ARG]... [-l A,B] BEFORE AFTER ROUNDS -- COMMAND..." >&2
  exit 2
}

extra_a=() extra_b=() label_a=before label_b=after
while getopts "a:b:l:" opt; do
  case $opt in
    a) extra_a+=("$OPTARG") ;;
    b) extra_b+=("$OPTARG") ;;
    l)
      IFS=, read -r label_a label_b <<<"$OPTARG"
      [ -n "$label_a" ] && [ -n "$label_b" ] || usage
      ;;
    *) usage ;;
  esac
done
shift $((OPTIND - 1))

if [ $# -lt 5 ] || [ "$4" != "--" ]; then
  usage
fi
bin_a=$1 bin_b=$2 rounds=$3
shift 4
command -v jq >/dev/null || { echo "$0: needs jq (apt-get install jq)" >&2; exit 2; }
for b in "$bin_a" "$bin_b"; do
  [ -x "$b" ] || { echo "$0: $b is not an executable" >&2; exit 2; }
done

load1() { cut -d' ' -f1 /proc/loadavg; }

# run LABEL BINARY ARG...: runs BINARY ARG... -o json and prints its labelled line.
run() {
  local label=$1 bin=$2
  shift 2
  local load started out args
  load=$(load1)
  started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  echo "ab-bench: $started $label: $bin $* (load $load)" >&2
  out=$("$bin" "$@" -o json)
  # The arguments as a JSON array (jq 1.6 would read --args' "--tls" as its own option).
  args=$(printf '%s\n' "$@" | jq -R . | jq -sc .)
  jq -c --arg side "$label" --arg bin "$bin" --argjson args "$args" --arg started "$started" \
    --arg load "$load" --arg load_end "$(load1)" \
    '{"label": $side, "binary": $bin, "args": $args, "started": $started,
      "load": ($load|tonumber), "load_end": ($load_end|tonumber), "result": .}' <<<"$out"
}

side_a() { run "$label_a" "$bin_a" "$@" ${extra_a[@]+"${extra_a[@]}"}; }
side_b() { run "$label_b" "$bin_b" "$@" ${extra_b[@]+"${extra_b[@]}"}; }

for ((i = 1; i <= rounds; i++)); do
  if ((i % 2)); then
    side_a "$@"
    side_b "$@"
  else
    side_b "$@"
    side_a "$@"
  fi
done
