#!/usr/bin/env bash
# gen-docs.sh: regenerate the committed shell completions (completions/) and man pages (man/)
# from the cobra command tree. CI reruns it and fails if the result differs from what is
# committed, so run it (or `make docs`) after adding, renaming or documenting a command.
#
#   scripts/gen-docs.sh
#
# The output is reproducible: man pages carry the date in SOURCE_DATE_EPOCH (a fixed default
# below, in UTC), never today's date. Files of deleted commands disappear because both
# directories are rebuilt from scratch; nothing is replaced unless generation succeeded.
set -euo pipefail

cd "$(dirname "$0")/.."

# The month printed in man pages' .TH line. Bump it when cutting a release if you like; CI only
# needs it to be stable.
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1795176000} # 2026-11-20 12:00 UTC
export TZ=UTC

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

CGO_ENABLED=0 go build -o "$tmp/krakenctl" ./cmd/krakenctl

mkdir -p "$tmp/completions" "$tmp/man"
"$tmp/krakenctl" completion bash >"$tmp/completions/krakenctl.bash"
"$tmp/krakenctl" completion zsh >"$tmp/completions/krakenctl.zsh"
"$tmp/krakenctl" completion fish >"$tmp/completions/krakenctl.fish"
"$tmp/krakenctl" completion powershell >"$tmp/completions/krakenctl.ps1"
"$tmp/krakenctl" man --dir "$tmp/man" 2>/dev/null

for f in "$tmp"/completions/* "$tmp"/man/*; do
  [ -s "$f" ] || { echo "gen-docs: $f is empty" >&2; exit 1; }
done
[ -f "$tmp/man/krakenctl.1" ] || { echo "gen-docs: man/krakenctl.1 was not generated" >&2; exit 1; }

rm -rf completions man
mv "$tmp/completions" completions
mv "$tmp/man" man
echo "gen-docs: wrote completions/ ($(ls completions | wc -l) files) and man/ ($(ls man | wc -l) pages)" >&2
