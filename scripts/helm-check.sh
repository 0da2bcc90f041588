#!/usr/bin/env bash
# helm-check.sh: the chart's CI. Lints and renders charts/krakenctl for the default values and
# every charts/krakenctl/examples/*.yaml, validates what it renders with kubeconform -strict
# against schemas generated offline from Kubernetes' own OpenAPI spec, checks that bad values
# fail, and renders each role's config through `krakenctl config validate` (test/helmchart).
#
#   scripts/helm-check.sh            check (installs helm and kubeconform once if missing)
#   scripts/helm-check.sh install    only install helm, kubeconform and the schemas
#
# helm and kubeconform come from the Go module proxy (`go install`, cached in GOPATH/bin; helm
# takes ~4 min cold). `helm lint` does not fail on `required`, so `helm template` runs too.
set -euo pipefail

cd "$(dirname "$0")/.."
export PATH=/usr/local/go/bin:$PATH
PATH=$(go env GOPATH)/bin:$PATH

HELM_VERSION=${HELM_VERSION:-v3.22.0}
KUBECONFORM_VERSION=${KUBECONFORM_VERSION:-v0.8.0}
K8S_VERSION=${K8S_VERSION:-1.34.2}
CHART=charts/krakenctl
CACHE=${KRAKENCTL_HELM_CACHE:-$(go env GOPATH)/krakenctl-helm}
SCHEMAS=$CACHE/schemas/v$K8S_VERSION-standalone-strict
# helm's state stays out of HOME.
export HELM_CACHE_HOME=$CACHE/helm/cache HELM_CONFIG_HOME=$CACHE/helm/config HELM_DATA_HOME=$CACHE/helm/data

log() { echo "helm-check: $*" >&2; }

# tool_ok BIN MODULE VERSION: BIN is on PATH and was built from MODULE at VERSION.
tool_ok() {
  local bin; bin=$(command -v "$1" 2>/dev/null) || return 1
  go version -m "$bin" 2>/dev/null | awk -v m="$2" -v v="$3" '$1 == "mod" && $2 == m && $3 == v { ok = 1 } END { exit !ok }'
}

install_tool() {
  local name=$1 module=$2 version=$3 pkg=$4
  tool_ok "$name" "$module" "$version" && return 0
  log "go install $pkg@$version (one time)"
  local start=$SECONDS
  # Outside the repository, so the project's go.mod is neither read nor touched.
  (cd / && CGO_ENABLED=0 go install "$pkg@$version")
  log "built $name in $((SECONDS - start))s"
}

install_schemas() {
  [ -f "$SCHEMAS/_definitions.json" ] && return 0
  log "generating Kubernetes $K8S_VERSION schemas into $SCHEMAS"
  local dir
  dir=$(cd / && GOFLAGS=-mod=mod go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" |
    sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  [ -n "$dir" ] || { log "go mod download k8s.io/kubernetes@v$K8S_VERSION gave no directory"; return 1; }
  rm -rf "$SCHEMAS.tmp"
  go run ./scripts/k8s-schemas "$dir/api/openapi-spec/swagger.json" "$SCHEMAS.tmp"
  mv "$SCHEMAS.tmp" "$SCHEMAS"
}

install() {
  install_tool helm helm.sh/helm/v3 "$HELM_VERSION" helm.sh/helm/v3/cmd/helm
  install_tool kubeconform github.com/yannh/kubeconform "$KUBECONFORM_VERSION" github.com/yannh/kubeconform/cmd/kubeconform
  install_schemas
}

failed=()
fail() { log "FAIL: $*"; failed+=("$1"); }

# check_values NAME [helm args...]: lint, render and validate the chart with these values.
check_values() {
  local name=$1; shift
  local out; out=$(mktemp)
  helm lint --strict "$CHART" "$@" >"$out" 2>&1 || { cat "$out" >&2; fail "$name: helm lint --strict"; }
  if helm template krakenctl "$CHART" --namespace krakenctl "$@" >"$out"; then
    # Operator kinds have no schema in Kubernetes' spec: skip them rather than ignore every
    # missing schema.
    kubeconform -strict -summary -skip ServiceMonitor,Certificate \
      -schema-location "$SCHEMAS/{{ .ResourceKind }}{{ .KindSuffix }}.json" - <"$out" ||
      fail "$name: kubeconform -strict"
  else
    fail "$name: helm template"
  fi
  rm -f "$out"
}

# check_rejects NAME WANT [helm args...]: helm template AND helm lint must both fail with a
# message containing WANT, the value at fault.
check_rejects() {
  local name=$1 want=$2; shift 2
  local out rc
  for cmd in template lint; do
    set +e
    if [ $cmd = template ]; then out=$(helm template krakenctl "$CHART" "$@" 2>&1); else out=$(helm lint --strict "$CHART" "$@" 2>&1); fi
    rc=$?
    set -e
    if [ $rc -eq 0 ]; then
      fail "bad values ($name): helm $cmd accepted them"
    elif ! grep -qF -- "$want" <<<"$out"; then
      echo "$out" >&2
      fail "bad values ($name): helm $cmd failed without naming $want"
    fi
  done
}

main() {
  install
  [ "${1:-}" = install ] && return 0

  check_values default
  local f
  for f in "$CHART"/examples/*.yaml; do
    check_values "$f" -f "$f"
  done

  check_rejects "non-numeric agent.port" "/agent/port" --set agent.port=abc
  check_rejects "unknown key" "'bogus' not allowed" --set origin.bogus=1
  check_rejects "unknown backend kind" "'gcs' not allowed" \
    --set-json 'origin.backends=[{"namespace":".*","gcs":{"bucket":"b"}}]'
  check_rejects "missing S3 Secret name" "/origin/backends/0/s3/credentials_secret" \
    --set-json 'origin.backends=[{"namespace":".*","s3":{"bucket":"b","credentials_secret":{"access_key_id_key":"k"}}}]'
  check_rejects "missing TLS Secret name" "/tls/existingSecrets/origin" \
    --set tls.enabled=true --set tls.existingSecrets.tracker=t --set tls.existingSecrets.proxy=p --set tls.existingSecrets.buildIndex=b
  check_rejects "cert-manager without an issuer" "/tls/certManager/issuerRef/name" \
    --set tls.enabled=true --set tls.mode=certManager
  check_rejects "a containerd registry that is not a host" "/agent/containerd/registries/0" \
    --set agent.containerd.enabled=true --set 'agent.containerd.registries[0]=../../etc'
  # Cross-field rules live in templates (`fail`), which only helm template runs; lint says INFO.
  local out
  if out=$(helm template krakenctl "$CHART" -f "$CHART/examples/tls-cert-manager.yaml" --set agent.hostNetwork=false 2>&1); then
    fail "bad values (containerd over TLS to a hostPort agent): helm template accepted them"
  elif ! grep -qF "agent.containerd.enabled with tls.enabled needs agent.hostNetwork" <<<"$out"; then
    echo "$out" >&2; fail "bad values (containerd over TLS to a hostPort agent): no message naming agent.hostNetwork"
  fi
  if out=$(helm template krakenctl "$CHART" --set origin.replicas=2 2>&1); then
    fail "bad values (ringReplicas > replicas): helm template accepted them"
  elif ! grep -qF "origin.ringReplicas" <<<"$out"; then
    echo "$out" >&2; fail "bad values (ringReplicas > replicas): no message naming origin.ringReplicas"
  fi

  # Each rendered role config, through the binary's own validation.
  KRAKENCTL_HELM="$(command -v helm)" go test -count=1 ./test/helmchart || fail "krakenctl config validate of the rendered configs"

  if [ ${#failed[@]} -gt 0 ]; then
    log "FAILED: ${#failed[@]} check(s)"
    return 1
  fi
  log "ok"
}

main "$@"
