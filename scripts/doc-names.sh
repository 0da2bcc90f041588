#!/usr/bin/env bash
# doc-names.sh: check that the code a document names exists. Run it by hand after editing a
# document that walks through the code (docs/architecture.md), or after renaming what one names:
#
#   scripts/doc-names.sh docs/architecture.md [more.md ...]
#
# It looks at every `backticked` span:
#   - A path inside the module (its first element is a top-level entry of the repository) must
#     exist; "<...>" placeholders are skipped.
#   - A Go name (Name, Type.Method, pkg.Name, pkg.Type.Method; a trailing "(...)" is dropped)
#     must be declared somewhere in the module: a func, a method of that type, a type, a var or
#     const, or a field or interface method of that type. A name qualified by a package is
#     looked for in the directories of that name.
#   - Stricter, where a document says where a name lives: in a table row whose second column
#     names .go files, each name of the third column must be declared in one of those files;
#     in prose, "`Name` in `file.go`" must hold as written.
# Spans that are neither (flags, URLs, snake_case YAML keys, OCI error codes, HTTP methods) are
# skipped, and so are names of the standard library and other modules (listed in external).
# It prints one line per problem and exits 1 if there is any.
set -euo pipefail

cd "$(dirname "$0")/.."

[ $# -gt 0 ] || { echo "usage: scripts/doc-names.sh FILE.md..." >&2; exit 2; }

# Packages outside this module whose names documents use.
external='^(os|io|fmt|errors|http|net|context|slog|raft|json|time|sync|errgroup|prometheus|cobra|bolt|digest|ocispec)\.'

index=$(mktemp)
trap 'rm -f "$index"' EXIT

# One line per declaration: FILE KIND OWNER NAME, where OWNER is the receiver type of a method
# and the enclosing type of a field or interface method, "-" otherwise.
git ls-files '*.go' | xargs awk '
  FNR == 1 { typ = ""; block = "" }
  /^func \(/ {
    s = $0; sub(/^func \([A-Za-z_]* ?\*?/, "", s); recv = s; sub(/[[) ].*/, "", recv)
    sub(/^[^)]*\) /, "", s); name = s; sub(/[[(].*/, "", name)
    print FILENAME, "method", recv, name; next
  }
  /^func [A-Za-z_]/ { s = $2; sub(/[[(].*/, "", s); print FILENAME, "func", "-", s; next }
  /^type [A-Za-z_]+ (struct|interface) *\{ *$/ { print FILENAME, "type", "-", $2; typ = $2; next }
  /^type [A-Za-z_]/ { print FILENAME, "type", "-", $2; next }
  /^(var|const) \($/ { block = $1; next }
  /^(var|const) [A-Za-z_]/ { s = $2; sub(/[^A-Za-z0-9_].*/, "", s); print FILENAME, "var", "-", s; next }
  /^[)}]/ { typ = ""; block = ""; next }
  typ != "" && /^\t[A-Za-z_][A-Za-z0-9_]*/ {
    s = $1; sub(/[^A-Za-z0-9_].*/, "", s); print FILENAME, "member", typ, s; next
  }
  block != "" && /^\t[A-Za-z_][A-Za-z0-9_]*/ {
    s = $1; sub(/[^A-Za-z0-9_].*/, "", s); print FILENAME, "var", "-", s; next
  }
' >"$index"

# declared TOKEN [FILE...]: is TOKEN declared (in one of FILES, when given)?
declared() {
  local tok=$1
  shift
  local parts pkg="" owner="" name
  IFS=. read -r -a parts <<<"$tok"
  name=${parts[-1]}
  if [ ${#parts[@]} -ge 3 ]; then
    pkg=${parts[-3]} owner=${parts[-2]}
  elif [ ${#parts[@]} -eq 2 ]; then
    owner=${parts[0]}
    # pkg.Name inside given files: the files are that package's.
    if [ $# -gt 0 ] && ispkg "$owner"; then
      owner=""
    fi
    # A package qualifier: a directory of that name holds the declaration.
    if [ $# -eq 0 ] && awk -v p="$owner" -v n="$name" '$4 == n && $3 == "-" { k = split($1, a, "/"); if (k > 1 && a[k-1] == p) f = 1 } END { exit !f }' "$index"; then
      return 0
    fi
  fi
  awk -v pkg="$pkg" -v owner="$owner" -v n="$name" -v files="$*" '
    BEGIN { nf = split(files, fl, " "); for (i = 1; i <= nf; i++) want[fl[i]] = 1 }
    $4 != n { next }
    nf > 0 && !($1 in want) { next }
    owner != "" && $3 != owner { next }
    pkg != "" { k = split($1, a, "/"); if (k < 2 || a[k-1] != pkg) next }
    { found = 1 }
    END { exit !found }
  ' "$index"
}

# ispkg WORD: is WORD the name of a package directory of the module?
ispkg() {
  awk -v p="$1" '{ k = split($1, a, "/"); if (k > 1 && a[k-1] == p) f = 1 } END { exit !f }' "$index"
}

# inmodule PATH: does PATH start with a top-level entry of the repository?
inmodule() {
  local first=${1%%/*}
  [ -n "$first" ] && [ -e "$first" ]
}

# isname TOKEN: is TOKEN a Go name worth checking?
isname() {
  local t=$1
  [[ $t =~ ^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$ ]] || return 1
  [[ $t =~ ^[A-Z0-9_]+$ ]] && return 1   # OCI error codes, HTTP methods
  [[ $t =~ $external ]] && return 1
  [[ $t =~ ^(ctx|Range)$ ]] && return 1  # a parameter, a header
  [[ $t =~ ^[a-z0-9_]*_[a-z0-9_]*$ ]] && return 1  # a YAML key or URL element (peer_listen, _catalog)
  # A bare lower-case word naming a directory of the module (cli, swarm, tagstore).
  if [[ $t =~ ^[a-z0-9]+$ ]] && [ -n "$(git ls-files -- "$t/" "*/$t/*" | head -1)" ]; then
    return 1
  fi
  return 0
}

# clean TOKEN: TOKEN without a trailing call "(...)" and a leading "*".
clean() {
  local t=${1%%(*}
  echo "${t#\*}"
}

status=0
fail() { echo "$1"; status=1; }

for doc in "$@"; do
  lineno=0
  while IFS= read -r line; do
    lineno=$((lineno + 1))
    where="$doc:$lineno"
    mapfile -t toks < <(grep -oE '`[^`]+`' <<<"$line" | tr -d '`' || true)
    [ ${#toks[@]} -gt 0 ] || continue

    # Every span: paths exist, names are declared somewhere.
    for t in "${toks[@]}"; do
      t=$(clean "$t")
      if [[ $t == */* || $t =~ \.(go|md)$ ]]; then
        [[ $t == *"<"* ]] && continue
        [[ $t =~ ^[A-Za-z0-9_./-]+$ ]] || continue
        inmodule "$t" || continue
        [ -e "${t%/}" ] || fail "$where: path \`$t\` does not exist"
        continue
      fi
      isname "$t" || continue
      declared "$t" || fail "$where: \`$t\` is not declared anywhere"
    done

    # A table row: names of column 3 live in the .go files of column 2.
    if [[ $line == \|* ]]; then
      IFS='|' read -r -a cols <<<"$line"
      if [ ${#cols[@]} -ge 4 ]; then
        mapfile -t files < <(grep -oE '`[^`]+\.go`' <<<"${cols[2]}" | tr -d '`' || true)
        if [ ${#files[@]} -gt 0 ]; then
          for f in "${files[@]}"; do [ -f "$f" ] || fail "$where: file \`$f\` does not exist"; done
          mapfile -t names < <(grep -oE '`[^`]+`' <<<"${cols[3]}" | tr -d '`' || true)
          for t in "${names[@]+"${names[@]}"}"; do
            t=$(clean "$t")
            isname "$t" || continue
            # pkg.Name points into another package: checked above.
            [[ $t == *.* ]] && ispkg "${t%%.*}" && continue
            declared "$t" "${files[@]}" || fail "$where: \`$t\` is not declared in ${files[*]}"
          done
        fi
      fi
    fi

    # Prose: "`Name` in `file.go`".
    while read -r pair; do
      [ -n "$pair" ] || continue
      t=$(clean "$(sed -E 's/^`([^`]+)` in `.*/\1/' <<<"$pair")")
      f=$(sed -E 's/.* in `([^`]+)`$/\1/' <<<"$pair")
      isname "$t" || continue
      [[ $f == *"<"* ]] && continue
      [ -f "$f" ] || { fail "$where: file \`$f\` does not exist"; continue; }
      declared "$t" "$f" || fail "$where: \`$t\` is not declared in $f"
    done < <(grep -oE '`[^`]+` in `[^`]+\.go`' <<<"$line" || true)
  done <"$doc"
done
exit $status
