#!/usr/bin/env bash
# k8s-lab.sh: a real single-node Kubernetes, offline, inside a network namespace of its own, and
# the chart's end-to-end run on it (make k8s-e2e). Why: `helm template` and kubeconform say the
# chart renders; only a kubelet, a CNI and kube-proxy say its pods start, find each other by DNS,
# and that a node's containerd really pulls through its agent.
#
#   scripts/k8s-lab.sh install   apt packages + build k8s, CoreDNS, helm, the pause image (cached)
#   scripts/k8s-lab.sh e2e       install, up, the chart's run (pass/fail + timings), down (trap)
#   K8S_LAB_TLS=1 ... e2e        the same run with the chart's mutual TLS (make k8s-e2e-tls)
#   scripts/k8s-lab.sh up        install, then start the node and leave it running (debugging)
#   scripts/k8s-lab.sh down      end what up started (by PID), unmount, remove the netns
#
# Network rule: everything runs in the netns $NS (node IP $NODE_IP, host end $HOST_IP of a /24 on
# a veth pair), which has no default route: nothing can leave the machine. kubectl, helm and
# docker on the host reach the API server on $NODE_IP:6443 over the pair, and the proxy through
# a socat forwarder on the host's loopback into the netns (to its ClusterIP). CoreDNS serves cluster.local only (no forward).
# Images are never pulled from a network: the krakenctl image is built by scripts/image.sh and
# imported, the sandbox image is a tiny static Go program (scripts/k8slab/pause) packaged
# offline (scripts/k8slab/pauseimage), and pods pull registry.kk.test/... only through the
# node's agent (hosts.toml written by the chart's init container, fallback off).
#
# What it installs (root, Debian 12): etcd-server, containerd, runc, containernetworking-plugins,
# iptables, nftables, conntrack, docker.io (apt, services not started); kube-apiserver,
# kube-controller-manager, kube-scheduler, kubelet, kube-proxy and kubectl built from
# k8s.io/kubernetes $K8S_VERSION through a generated wrapper module (its 31 staging modules can
# only be replaced that way; go install refuses); CoreDNS with only the plugins the lab uses;
# helm by scripts/helm-check.sh install. Builds are cached in $CACHE (outside the repository).
#
# Everything the lab starts is recorded in $LAB/pids and ended by PID; the kubelet's bind mount of
# its root dir and the pods' mounts under $LAB are unmounted; the netns, the veth pair and the
# lab's cgroups are removed. containerd's shims outlive it: down ends the ones whose arguments
# name the lab's own containerd socket, by PID. docker is the private daemon of
# scripts/docker-up.sh (or the one that already answers, left alone). A failed e2e keeps the
# daemons' and the pods' logs in $LAB-failed.
#
# TLS (K8S_LAB_TLS=1): scripts/k8slab/tlscerts makes a new CA and the chart's existingSecrets
# (one kubernetes.io/tls Secret per role, one per build-index node) for each run, offline, and an
# admin certificate (O=admin) for the script's own reads of the roles' /metrics and the swarm
# list; the chart is installed with scripts/k8slab/values-tls.yaml on top of values.yaml.
#
# Settings: K8S_LAB_TLS=1 (the chart's TLS), K8S_LAB_PROXY_MODE (iptables, or nftables), K8S_LAB_PUSH_PORT (25400, the host
# loopback port of the forwarder to the proxy), K8S_LAB_SETTLE=0 (push without waiting for every role to
# know both origins), K8S_LAB_DIR (/var/tmp/krakenctl-k8slab), K8S_LAB_NS (kk-k8slab),
# KRAKENCTL_TESTINFRA_CACHE (~/.cache/krakenctl-testinfra), K8S_VERSION, COREDNS_VERSION.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
export PATH=/usr/local/go/bin:/usr/sbin:/sbin:$PATH
PATH=$(go env GOPATH 2>/dev/null || echo "$HOME/go")/bin:$PATH # helm, from scripts/helm-check.sh

K8S_VERSION=${K8S_VERSION:-v1.34.2}
COREDNS_VERSION=${COREDNS_VERSION:-v1.12.4}
CACHE=${KRAKENCTL_TESTINFRA_CACHE:-$HOME/.cache/krakenctl-testinfra}
K8S_BIN=$CACHE/k8s-$K8S_VERSION/bin
COREDNS_BIN=$CACHE/coredns-$COREDNS_VERSION/bin/coredns
LAB=${K8S_LAB_DIR:-/var/tmp/krakenctl-k8slab}
NS=${K8S_LAB_NS:-kk-k8slab}
HOST_IF=kk8s0
NODE_IF=kk8s1
HOST_IP=10.214.0.1
NODE_IP=10.214.0.2
NODE_NAME=kk-node
POD_CIDR=10.214.128.0/24
POD_GW=10.214.128.1
SVC_CIDR=10.214.64.0/24
BRIDGE=kkbr0
API=https://$NODE_IP:6443
RELEASE=kk
KNS=krakenctl
IMAGE_TAG=k8slab
REGISTRY=registry.kk.test
PAUSE_IMAGE=$REGISTRY/k8slab/pause:1
# kube-proxy's mode: iptables (default) or nftables.
PROXY_MODE=${K8S_LAB_PROXY_MODE:-iptables}
HELPERS=$ROOT/scripts/k8slab
# K8S_LAB_TLS=1: the chart with tls.enabled (existingSecrets), and every call of the script to a
# role over https.
TLS=${K8S_LAB_TLS:-0}

log() { echo "k8s-lab: $*" >&2; }
die() { log "FAIL: $*"; exit 1; }

# shellcheck source=scripts/service.sh
. "$ROOT/scripts/service.sh" # as_root, apt_install_quiet, terminate

# ---------------------------------------------------------------------------------------------
# install

install_apt() {
	local missing=() p
	for p in etcd-server containerd runc containernetworking-plugins iptables nftables conntrack docker.io iproute2 openssl curl procps util-linux kmod socat; do
		[ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" = "install ok installed" ] || missing+=("$p")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	local start=$SECONDS
	apt_install_quiet "${missing[@]}"
	log "apt: ${missing[*]} in $((SECONDS - start))s"
}

# k8s_ok: every binary exists and says it is K8S_VERSION (without the -X flags it would say
# v0.0.0-master+$Format:%H$, which kubectl and helm cannot parse).
k8s_ok() {
	local b
	for b in kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl; do
		[ -x "$K8S_BIN/$b" ] || return 1
	done
	# Not `kubectl ... | grep -q`: with pipefail, grep's early exit can SIGPIPE kubectl and fail
	# the check at random.
	local v
	v=$("$K8S_BIN/kubectl" version --client 2>/dev/null) || return 1
	grep -q "Client Version: $K8S_VERSION" <<<"$v"
}

# build_k8s: a wrapper module requiring k8s.io/kubernetes with every staging module replaced by
# its published version, as Kubernetes' consumers do; then one go build of the six commands.
build_k8s() {
	k8s_ok && return 0
	local start=$SECONDS mod=$CACHE/k8s-$K8S_VERSION/mod staging=v0${K8S_VERSION#v1}
	log "building Kubernetes $K8S_VERSION from the Go module proxy into $K8S_BIN (cold: ~8-15 min on 2 cores)"
	mkdir -p "$mod" "$K8S_BIN"
	local gomod
	gomod=$(cd / && GOFLAGS=-mod=mod go mod download -json "k8s.io/kubernetes@$K8S_VERSION" |
		sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p')
	[ -f "$gomod" ] || die "go mod download k8s.io/kubernetes@$K8S_VERSION gave no go.mod"
	{
		echo "// Generated by scripts/k8s-lab.sh: builds Kubernetes $K8S_VERSION's commands."
		echo "module krakenctl.test/k8slab"
		echo
		echo "go 1.24.0"
		echo
		echo "require k8s.io/kubernetes $K8S_VERSION"
		echo
		sed -n 's|^[[:space:]]*\(k8s.io/[^ ]*\) => ./staging/.*|replace \1 => \1 '"$staging"'|p' "$gomod"
	} >"$mod/go.mod"
	cat >"$mod/tools.go" <<-'EOF'
		//go:build tools

		// Package tools pins the Kubernetes commands the lab builds.
		package tools

		import (
			_ "k8s.io/kubernetes/cmd/kube-apiserver"
			_ "k8s.io/kubernetes/cmd/kube-controller-manager"
			_ "k8s.io/kubernetes/cmd/kube-proxy"
			_ "k8s.io/kubernetes/cmd/kube-scheduler"
			_ "k8s.io/kubernetes/cmd/kubectl"
			_ "k8s.io/kubernetes/cmd/kubelet"
		)
	EOF
	local v=k8s.io/component-base/version minor
	minor=${K8S_VERSION#v1.}
	minor=${minor%%.*}
	(
		cd "$mod"
		GOFLAGS=-mod=mod go mod tidy
		CGO_ENABLED=0 nice -n 10 go build -trimpath -o "$K8S_BIN/" \
			-ldflags "-s -w -X $v.gitVersion=$K8S_VERSION -X $v.gitMajor=1 -X $v.gitMinor=$minor -X $v.gitTreeState=clean -X k8s.io/client-go/pkg/version.gitVersion=$K8S_VERSION -X k8s.io/client-go/pkg/version.gitMajor=1 -X k8s.io/client-go/pkg/version.gitMinor=$minor" \
			k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
			k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubelet \
			k8s.io/kubernetes/cmd/kube-proxy k8s.io/kubernetes/cmd/kubectl
	)
	k8s_ok || die "the Kubernetes build did not give $K8S_VERSION binaries in $K8S_BIN"
	log "built Kubernetes $K8S_VERSION in $((SECONDS - start))s"
}

# build_coredns: CoreDNS with only errors, log, cache and kubernetes compiled in (the lab serves
# cluster.local and nothing else, so forward is not even in the binary), from a generated main.
build_coredns() {
	[ -x "$COREDNS_BIN" ] && return 0
	local start=$SECONDS mod=$CACHE/coredns-$COREDNS_VERSION/mod
	log "building CoreDNS $COREDNS_VERSION (kubernetes plugin only) into $COREDNS_BIN"
	mkdir -p "$mod"
	cat >"$mod/go.mod" <<-EOF
		// Generated by scripts/k8s-lab.sh: CoreDNS with the lab's plugins only.
		module krakenctl.test/k8slab-coredns

		go 1.24.0

		require github.com/coredns/coredns $COREDNS_VERSION
	EOF
	cat >"$mod/main.go" <<-'EOF'
		// Command coredns is CoreDNS with the plugins the krakenctl Kubernetes lab needs: it serves
		// cluster.local from the API server and forwards nothing.
		package main

		import (
			"github.com/coredns/coredns/core/dnsserver"
			"github.com/coredns/coredns/coremain"

			_ "github.com/coredns/coredns/plugin/cache"
			_ "github.com/coredns/coredns/plugin/errors"
			_ "github.com/coredns/coredns/plugin/kubernetes"
			_ "github.com/coredns/coredns/plugin/log"
		)

		// The order plugins run in, as CoreDNS's plugin.cfg has them.
		func init() {
			dnsserver.Directives = []string{"errors", "log", "cache", "kubernetes"}
		}

		func main() { coremain.Run() }
	EOF
	(
		cd "$mod"
		GOFLAGS=-mod=mod go mod tidy
		CGO_ENABLED=0 nice -n 10 go build -trimpath -ldflags "-s -w" -o "$COREDNS_BIN" .
	)
	log "built CoreDNS in $((SECONDS - start))s"
}

# build_pause: the sandbox image, a static Go pause packaged as a docker tarball (no pull).
build_pause() {
	local out=$CACHE/pause
	[ -f "$out/pause.tar" ] && [ "$out/pause.tar" -nt "$HELPERS/pause/main.go" ] && return 0
	mkdir -p "$out"
	CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$out/pause" ./scripts/k8slab/pause
	go run ./scripts/k8slab/pauseimage -bin "$out/pause" -tag "$PAUSE_IMAGE" -out "$out/pause.tar"
}

install() {
	local start=$SECONDS
	[ "$(id -u)" = 0 ] || die "needs root (netns, mounts, kubelet)"
	command -v go >/dev/null || die "no Go toolchain: scripts/install-test-deps.sh installs it"
	install_apt
	build_k8s
	build_coredns
	scripts/helm-check.sh install
	build_pause
	log "install done in $((SECONDS - start))s"
}


# ---------------------------------------------------------------------------------------------
# the node

KUBECTL=$K8S_BIN/kubectl
export KUBECONFIG=$LAB/admin.kubeconfig
export HELM_CACHE_HOME=$LAB/helm/cache HELM_CONFIG_HOME=$LAB/helm/config HELM_DATA_HOME=$LAB/helm/data

# lab_net: the veth pair is there. Every call from the host to $NODE_IP checks it first: without
# the pair, 10.214.0.0/24 is not on-link any more and the machine's default route would carry the
# connection out of the machine.
lab_net() { ip link show "$HOST_IF" >/dev/null 2>&1; }

k() {
	lab_net || die "no $HOST_IF: the lab's network is down (kubectl $*)"
	"$KUBECTL" "$@"
}

# in_ns CMD...: CMD in the lab's network namespace only. Not `ip netns exec`: that also gives the
# command a mount namespace of its own, and the kubelet's volume mounts (the projected token's
# tmpfs) must be seen by containerd and runc, and unmounted by down, in the host's.
in_ns() { nsenter --net="/run/netns/$NS" -- "$@"; }

# start NAME CMD...: run CMD in the netns in the background, its output in $LAB/log/NAME.log,
# its PID recorded in $LAB/pids (down ends exactly these).
start() {
	local name=$1
	shift
	# nsenter itself, not the in_ns function: a function would run in a forked shell and $! would
	# be that shell's PID, not the daemon's. nsenter execs CMD (it forks only for a PID namespace).
	nsenter --net="/run/netns/$NS" -- "$@" >"$LAB/log/$name.log" 2>&1 &
	echo "$name $!" >>"$LAB/pids"
}

# wait_for WHAT SECONDS CMD...: poll CMD every 0.2 s until it succeeds.
wait_for() {
	local what=$1 secs=$2 t0=$SECONDS
	shift 2
	until "$@" >/dev/null 2>&1; do
		[ $((SECONDS - t0)) -lt "$secs" ] || die "$what: not after ${secs}s"
		sleep 0.2
	done
}

net_up() {
	ip netns add "$NS"
	ip link add "$HOST_IF" type veth peer name "$NODE_IF" netns "$NS"
	ip addr add "$HOST_IP/24" dev "$HOST_IF"
	ip link set "$HOST_IF" up
	ip -n "$NS" link set lo up
	ip -n "$NS" addr add "$NODE_IP/24" dev "$NODE_IF"
	ip -n "$NS" link set "$NODE_IF" up
	# The pods' bridge, made here rather than by the CNI plugin so that the Service range can be
	# routed to it before the first pod: the node's own processes (hostNetwork agents, CoreDNS)
	# need a route for a ClusterIP before kube-proxy's DNAT rewrites it, and there is no default
	# route to lean on (nor a dummy interface in this kernel).
	ip -n "$NS" link add "$BRIDGE" type bridge
	ip -n "$NS" addr add "$POD_GW/24" dev "$BRIDGE"
	ip -n "$NS" link set "$BRIDGE" up
	ip -n "$NS" route add "$SVC_CIDR" dev "$BRIDGE"
	# Pod -> ClusterIP -> pod on the same bridge is routed through the node, and bridged frames
	# must pass kube-proxy's rules (br_netfilter; built into some kernels, a module on Debian's).
	modprobe -q br_netfilter 2>/dev/null || true
	in_ns sysctl -qw net.ipv4.ip_forward=1
	in_ns sysctl -qw net.bridge.bridge-nf-call-iptables=1 2>/dev/null || log "bridge-nf-call-iptables is not per-netns here: left alone"
	# Forwarding is for pods among themselves: nothing is forwarded to or from the host's end.
	in_ns iptables -w -I FORWARD -o "$NODE_IF" -j DROP
	in_ns iptables -w -I FORWARD -i "$NODE_IF" -j DROP
	local default
	default=$(ip -n "$NS" route show default)
	[ -z "$default" ] || die "the lab netns has a default route: $default"
}

# pki: a CA, the API server's certificate (its IP, the kubernetes Service IP and names), the
# service-account key pair, one admin token (system:masters) for every client of the lab.
pki() {
	local d=$LAB/pki svc_ip
	mkdir -p "$d"
	svc_ip=${SVC_CIDR%.*}.1
	openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=kk-lab-ca -keyout "$d/ca.key" -out "$d/ca.crt" 2>/dev/null
	openssl req -newkey rsa:2048 -nodes -subj /CN=kube-apiserver -keyout "$d/apiserver.key" -out "$d/apiserver.csr" 2>/dev/null
	printf 'subjectAltName=IP:%s,IP:%s,IP:127.0.0.1,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local\nextendedKeyUsage=serverAuth\n' \
		"$NODE_IP" "$svc_ip" >"$d/apiserver.ext"
	openssl x509 -req -in "$d/apiserver.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial -days 2 \
		-extfile "$d/apiserver.ext" -out "$d/apiserver.crt" 2>/dev/null
	openssl genrsa -out "$d/sa.key" 2048 2>/dev/null
	openssl rsa -in "$d/sa.key" -pubout -out "$d/sa.pub" 2>/dev/null
	local token
	token=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
	echo "$token,admin,admin,system:masters" >"$d/tokens.csv"
	chmod 600 "$d"/*.key "$d/tokens.csv"
	cat >"$LAB/admin.kubeconfig" <<-KC
		apiVersion: v1
		kind: Config
		clusters:
		- name: kk
		  cluster: {server: "$API", certificate-authority: "$d/ca.crt"}
		users:
		- name: admin
		  user: {token: "$token"}
		contexts:
		- name: kk
		  context: {cluster: kk, user: admin}
		current-context: kk
	KC
	chmod 600 "$LAB/admin.kubeconfig"
}

write_configs() {
	local c=$LAB/containerd
	mkdir -p "$c/certs.d" "$LAB/cni/net.d" "$LAB/kubelet" "$LAB/pod-logs"
	cat >"$c/config.toml" <<-TOML
		# The lab's own containerd: its own root, state, socket and runc root, nothing on TCP.
		version = 2
		root = "$c/root"
		state = "$c/state"
		disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
		[grpc]
		  address = "$c/containerd.sock"
		[ttrpc]
		  address = "$c/containerd.sock.ttrpc"
		[debug]
		  address = ""
		[metrics]
		  address = ""
		[plugins."io.containerd.internal.v1.opt"]
		  path = "$c/opt"
		[plugins."io.containerd.grpc.v1.cri"]
		  sandbox_image = "$PAUSE_IMAGE"
		  # CRI sets oom_score_adj -998 on sandboxes, which needs CAP_SYS_RESOURCE.
		  restrict_oom_score_adj = true
		  # Pod network namespaces under our state dir, not the machine's /run/netns.
		  netns_mounts_under_state_dir = true
		  stream_server_address = "127.0.0.1"
		  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
		    runtime_type = "io.containerd.runc.v2"
		    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
		      Root = "$c/runc"
		  [plugins."io.containerd.grpc.v1.cri".cni]
		    bin_dir = "/usr/lib/cni"
		    conf_dir = "$LAB/cni/net.d"
		  [plugins."io.containerd.grpc.v1.cri".registry]
		    # Where the chart's init container writes registry.kk.test/hosts.toml.
		    config_path = "$c/certs.d"
	TOML
	cat >"$LAB/cni/net.d/10-kklab.conflist" <<-JSON
		{
		  "cniVersion": "0.4.0",
		  "name": "kklab",
		  "plugins": [
		    {
		      "type": "bridge",
		      "bridge": "$BRIDGE",
		      "isGateway": true,
		      "ipMasq": false,
		      "hairpinMode": true,
		      "ipam": {
		        "type": "host-local",
		        "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$POD_GW"}]],
		        "routes": [{"dst": "0.0.0.0/0"}],
		        "dataDir": "$LAB/cni/ipam"
		      }
		    }
		  ]
		}
	JSON
	# Pods and hostNetwork pods ask CoreDNS on the node IP; nothing upstream.
	echo "nameserver $NODE_IP" >"$LAB/resolv.conf"
	cat >"$LAB/kubelet/config.yaml" <<-YAML
		apiVersion: kubelet.config.k8s.io/v1beta1
		kind: KubeletConfiguration
		address: $NODE_IP
		port: 10250
		readOnlyPort: 0
		healthzBindAddress: 127.0.0.1
		healthzPort: 10248
		cgroupDriver: cgroupfs
		cgroupsPerQOS: false
		# This machine has cgroup v1 only (kubelet 1.34 still runs on it when told to).
		failCgroupV1: false
		enforceNodeAllocatable: []
		failSwapOn: false
		evictionHard: {}
		imageGCHighThresholdPercent: 100
		containerRuntimeEndpoint: unix://$c/containerd.sock
		podLogsDir: $LAB/pod-logs
		clusterDNS: [$NODE_IP]
		clusterDomain: cluster.local
		resolvConf: $LAB/resolv.conf
		podCIDR: $POD_CIDR
		serializeImagePulls: false
		maxPods: 40
		authentication:
		  anonymous: {enabled: true}
		  webhook: {enabled: false}
		authorization: {mode: AlwaysAllow}
	YAML
	cat >"$LAB/kube-proxy.yaml" <<-YAML
		apiVersion: kubeproxy.config.k8s.io/v1alpha1
		kind: KubeProxyConfiguration
		clientConnection: {kubeconfig: $LAB/admin.kubeconfig}
		hostnameOverride: $NODE_NAME
		mode: $PROXY_MODE
		clusterCIDR: $POD_CIDR
		metricsBindAddress: 127.0.0.1:10249
		healthzBindAddress: 127.0.0.1:10256
		nodePortAddresses: [$NODE_IP/32]
		# Leave the machine-wide conntrack table size alone.
		conntrack: {maxPerCore: 0, min: 0}
		iptables: {localhostNodePorts: false}
	YAML
	cat >"$LAB/Corefile" <<-CORE
		# cluster.local only, from the API server: every other name is refused, nothing is forwarded.
		cluster.local:53 {
		    errors
		    kubernetes cluster.local {
		        kubeconfig $LAB/admin.kubeconfig kk
		        pods insecure
		    }
		    cache 30
		}
	CORE
}

up() {
	[ "$(id -u)" = 0 ] || die "needs root (netns, mounts, kubelet)"
	if [ -e "/run/netns/$NS" ] || [ -s "$LAB/pids" ]; then
		log "a lab is still up ($NS / $LAB/pids): taking it down first"
		down
	fi
	rm -rf "$LAB"
	mkdir -p "$LAB/log" "$LAB/etcd"
	: >"$LAB/pids"
	local t0=$SECONDS
	net_up
	pki
	write_configs

	start etcd etcd --name kk --data-dir "$LAB/etcd" \
		--listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
		--listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
		--initial-cluster kk=http://127.0.0.1:2380 --listen-metrics-urls=
	start containerd containerd --config "$LAB/containerd/config.toml"
	wait_for "etcd" 30 in_ns curl -sf http://127.0.0.1:2379/health

	start kube-apiserver "$K8S_BIN/kube-apiserver" --etcd-servers=http://127.0.0.1:2379 \
		--bind-address="$NODE_IP" --advertise-address="$NODE_IP" --secure-port=6443 \
		--tls-cert-file="$LAB/pki/apiserver.crt" --tls-private-key-file="$LAB/pki/apiserver.key" \
		--client-ca-file="$LAB/pki/ca.crt" --token-auth-file="$LAB/pki/tokens.csv" \
		--service-account-issuer=https://kubernetes.default.svc.cluster.local \
		--service-account-key-file="$LAB/pki/sa.pub" --service-account-signing-key-file="$LAB/pki/sa.key" \
		--authorization-mode=AlwaysAllow --service-cluster-ip-range="$SVC_CIDR" \
		--kubelet-preferred-address-types=InternalIP --allow-privileged=true --profiling=false
	wait_for "containerd" 30 ctr --address "$LAB/containerd/containerd.sock" version
	ctr --address "$LAB/containerd/containerd.sock" -n k8s.io images import "$CACHE/pause/pause.tar" >/dev/null
	wait_for "kube-apiserver /readyz" 90 k get --raw /readyz
	log "API server ready at $API ($((SECONDS - t0))s)"

	start kube-controller-manager "$K8S_BIN/kube-controller-manager" --kubeconfig="$KUBECONFIG" \
		--leader-elect=false --bind-address=127.0.0.1 --service-account-private-key-file="$LAB/pki/sa.key" \
		--root-ca-file="$LAB/pki/ca.crt" --use-service-account-credentials=false --profiling=false
	start kube-scheduler "$K8S_BIN/kube-scheduler" --kubeconfig="$KUBECONFIG" --leader-elect=false \
		--bind-address=127.0.0.1 --profiling=false
	start kubelet "$K8S_BIN/kubelet" --config="$LAB/kubelet/config.yaml" --kubeconfig="$KUBECONFIG" \
		--root-dir="$LAB/kubelet/root" --cert-dir="$LAB/kubelet/pki" --hostname-override="$NODE_NAME" \
		--node-ip="$NODE_IP"
	start kube-proxy "$K8S_BIN/kube-proxy" --config="$LAB/kube-proxy.yaml"
	start coredns "$COREDNS_BIN" -conf "$LAB/Corefile"
	wait_for "node $NODE_NAME Ready" 120 k wait --for=condition=Ready "node/$NODE_NAME" --timeout=2s
	log "node $NODE_NAME Ready ($((SECONDS - t0))s since up)"

	# No provisioner runs: static hostPath volumes of a storage class of the lab, owned by the
	# pods' uid (fsGroup does not apply to hostPath).
	k apply -f - >/dev/null <<-YAML
		apiVersion: storage.k8s.io/v1
		kind: StorageClass
		metadata: {name: kk-lab}
		provisioner: kubernetes.io/no-provisioner
		volumeBindingMode: WaitForFirstConsumer
	YAML
	local i
	for i in 0 1 2 3 4 5; do
		mkdir -p "$LAB/pv/$i"
		chown 65532:65532 "$LAB/pv/$i"
		chmod 0750 "$LAB/pv/$i"
		k apply -f - >/dev/null <<-YAML
			apiVersion: v1
			kind: PersistentVolume
			metadata: {name: kk-lab-$i}
			spec:
			  storageClassName: kk-lab
			  capacity: {storage: 1Gi}
			  accessModes: [ReadWriteOnce]
			  persistentVolumeReclaimPolicy: Retain
			  hostPath: {path: "$LAB/pv/$i", type: Directory}
		YAML
	done
	log "lab up in $((SECONDS - t0))s: kubectl --kubeconfig $KUBECONFIG (API $API)"
}

# down ends what up started, by the PIDs it recorded, in reverse order; then what containerd
# started for it (shims, found by our containerd's socket in their arguments), the mounts under
# $LAB, the netns and the veth pair.
down() {
	local c=$LAB/containerd sock=$LAB/containerd/containerd.sock
	if [ -s "$LAB/pids" ]; then
		# Pods first, while the kubelet runs, so their sandboxes are torn down through CNI.
		if grep -q '^kubelet ' "$LAB/pids" && lab_net && timeout 5 "$KUBECTL" get --raw /readyz >/dev/null 2>&1; then
			# Namespaces, not pods: controllers would recreate deleted pods at once.
			local nss
			nss=$("$KUBECTL" get ns -o name | grep -vE '^namespace/(default|kube-system|kube-public|kube-node-lease)$' || true)
			# shellcheck disable=SC2086 # one word per namespace
			[ -z "$nss" ] || timeout 90 "$KUBECTL" delete $nss --wait=true >/dev/null 2>&1 ||
				log "deleting the namespaces did not finish; killing the pods' tasks instead"
			timeout 30 "$KUBECTL" delete pods --all --all-namespaces --grace-period=1 --wait=true >/dev/null 2>&1 || true
		fi
		local name pid
		while read -r name pid; do
			case $name in
			containerd)
				# Whatever task remains, killed through containerd before it stops.
				if [ -S "$sock" ]; then
					local t
					for t in $(ctr --address "$sock" -n k8s.io tasks ls -q 2>/dev/null); do
						ctr --address "$sock" -n k8s.io tasks kill -s SIGKILL "$t" >/dev/null 2>&1 || true
					done
					sleep 1
				fi
				;;
			esac
			if kill -0 "$pid" 2>/dev/null; then terminate "$pid" "$name" 15; fi
		done < <(tac "$LAB/pids")
		: >"$LAB/pids"
	fi
	# containerd-shim-runc-v2 processes outlive containerd; ours name our socket.
	local p
	for p in $(pgrep -f -- "-address $sock" 2>/dev/null || true); do
		grep -qF -- "$sock" "/proc/$p/cmdline" 2>/dev/null && terminate "$p" shim 5
	done
	if [ -d "$LAB" ]; then
		local m
		while read -r m; do
			umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || log "could not unmount $m"
		done < <(awk -v lab="$LAB" 'index($2, lab) == 1 { print $2 }' /proc/mounts | sort -r)
	fi
	# The kubelet's links to the pods' logs (its fixed /var/log/containers) that point into the lab.
	local l
	for l in /var/log/containers/*.log; do
		if [ -L "$l" ]; then
			case $(readlink "$l") in "$LAB"/*) rm -f "$l" ;; esac
		fi
	done
	ip link del "$HOST_IF" 2>/dev/null || true
	ip netns del "$NS" 2>/dev/null || true
	# Containers' cgroups (runc's default parent k8s.io for pods without a cgroup parent).
	local cg
	for cg in /sys/fs/cgroup/*/k8s.io; do
		[ -d "$cg" ] || continue
		find "$cg" -depth -type d -exec rmdir {} + 2>/dev/null || true
	done
}

# ---------------------------------------------------------------------------------------------
# the e2e run

FULL=$RELEASE-krakenctl
PUSH_PORT=${K8S_LAB_PUSH_PORT:-25400}
IMAGE_DIR=$ROOT/bin/k8slab-image
RESULTS=()
CURRENT=""
STEP_T0=0
DOCKER_STARTED=0

now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

step() {
	CURRENT=$1
	STEP_T0=$(now)
	log "=== $CURRENT"
}
pass() {
	local dt
	dt=$(elapsed "$STEP_T0")
	RESULTS+=("PASS ${dt}s $CURRENT${1:+ ($1)}")
	log "PASS ${dt}s $CURRENT${1:+ ($1)}"
	CURRENT=""
}

summary() {
	echo
	echo "k8s-lab e2e ($K8S_VERSION, kube-proxy $PROXY_MODE$([ "$TLS" = 1 ] && echo ", chart TLS")):"
	local r
	for r in "${RESULTS[@]}"; do echo "  $r"; done
}

on_exit() {
	local rc=$?
	set +e
	if [ -n "$CURRENT" ]; then
		RESULTS+=("FAIL $(elapsed "$STEP_T0")s $CURRENT")
		log "FAIL in: $CURRENT; the lab's logs: $LAB/log (copied to ${LAB}-failed/log)"
		mkdir -p "${LAB}-failed" && cp -r "$LAB/log" "${LAB}-failed/" 2>/dev/null
		if lab_net; then
			timeout 10 "$KUBECTL" get pods -A -o wide >"${LAB}-failed/pods.txt" 2>&1
			timeout 10 "$KUBECTL" get events -A >"${LAB}-failed/events.txt" 2>&1
			local p
			for p in $(timeout 10 "$KUBECTL" -n "$KNS" get pods -o name 2>/dev/null); do
				timeout 10 "$KUBECTL" -n "$KNS" logs "$p" --all-containers >"${LAB}-failed/${p#pod/}.log" 2>&1
				timeout 10 "$KUBECTL" -n "$KNS" logs "$p" --all-containers --previous >"${LAB}-failed/${p#pod/}.previous.log" 2>/dev/null
			done
		fi
	fi
	local t0
	t0=$(now)
	down
	[ "$DOCKER_STARTED" = 1 ] && scripts/docker-up.sh stop "$LAB-docker" >/dev/null 2>&1
	RESULTS+=("done $(elapsed "$t0")s cleanup (down: pods, processes, mounts, netns)")
	summary
	[ $rc = 0 ] && [ -z "$CURRENT" ] && echo "k8s-lab e2e: PASS" || echo "k8s-lab e2e: FAIL"
	exit $rc
}

# restarts: every pod of the release that restarted, with why its last container ended and the
# end of that container's log: a restart at install is a role that exited, and the run says so.
restarts() {
	local name n
	while read -r name n; do
		if [ -z "$name" ] || [ "${n:-0}" = 0 ]; then continue; fi
		log "$name restarted $n times; last ended: $(k -n "$KNS" get pod "$name" -o jsonpath='{.status.containerStatuses[0].lastState.terminated.reason} exit {.status.containerStatuses[0].lastState.terminated.exitCode}')"
		k -n "$KNS" logs "$name" --previous 2>&1 | tail -n 5 | sed 's/^/    /' >&2 || true
	done < <(k -n "$KNS" get pods -o jsonpath='{range .items[*]}{.metadata.name} {.status.containerStatuses[0].restartCount}{"\n"}{end}')
}

# pod_uids SELECTOR: the UIDs of the pods SELECTOR matches.
pod_uids() { k -n "$KNS" get pods -l "$1" -o jsonpath='{range .items[*]}{.metadata.uid}{"\n"}{end}'; }

# replaced SELECTOR COUNT OLD: COUNT pods match SELECTOR, none of them in OLD, all Ready.
replaced() {
	local sel=$1 count=$2 old=$3 lines n=0 uid ready
	lines=$(k -n "$KNS" get pods -l "$sel" -o jsonpath='{range .items[*]}{.metadata.uid} {.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}') || return 1
	while read -r uid ready; do
		[ -n "$uid" ] || continue
		grep -qx "$uid" <<<"$old" && return 1
		[ "$ready" = True ] || return 1
		n=$((n + 1))
	done <<<"$lines"
	[ "$n" = "$count" ]
}

# role_curl [--ns] HOST:PORT/PATH [CURL-ARGS...]: curl -sf of a role's admin listener, by IP
# (http:// without TLS), from the host or (--ns) from the lab's netns. With TLS: https, presenting the admin certificate (/metrics needs a
# cluster certificate), and -k: the script reaches the roles by pod and node IP, which their
# certificates do not name (they name what the roles dial: stable pod names, 127.0.0.1). The
# roles' own links verify names; this is the operator's read of a number.
role_curl() {
	local pre=()
	if [ "$1" = --ns ]; then
		pre=(nsenter --net="/run/netns/$NS" --)
		shift
	fi
	local rest=$1
	shift
	if [ "$TLS" = 1 ]; then
		"${pre[@]}" curl -sf -k --cert "$LAB/tls/admin.crt" --key "$LAB/tls/admin.key" "$@" "https://$rest"
	else
		"${pre[@]}" curl -sf "$@" "http://$rest"
	fi
}

agent_metric() {
	lab_net || die "no $HOST_IF: the lab's network is down"
	role_curl "$NODE_IP:16002/metrics" | awk -v m="$1" '$1 == m { print $2 }'
}

# origins_known N: every role that finds the origins by DNS knows all N of them: the origins
# themselves (krakenctl_members_addresses{list="ring.members"} on their /metrics) and the proxy,
# tracker and build-index pods ({list="origins"}), read from the node. An origin starts with
# only itself in its ring when the headless Service lists no Ready origin yet, and every role
# keeps a partial answer until its next re-resolve (members.DefaultInterval, 30 s). In that
# window the origins disagree on who owns a blob: one push in this lab failed with
# MANIFEST_BLOB_UNKNOWN ("... is not in the origin cluster") when helm's --wait returned 28 s
# after the origins started (the build-index asks an origin for the blob's owners).
origins_known() {
	local want=$1 comp ip port list n
	while read -r comp ip port; do
		[ -n "$ip" ] || continue
		list=origins
		[ "$comp" = origin ] && list=ring.members
		if [ "$comp" = origin ] && [ "$TLS" = 1 ]; then
			# With TLS the ring's members are the pods' stable names, a static list with no
			# address count: the origin's own health checks of each member say it reaches both.
			n=$(role_curl --ns "$ip:$port/metrics" | awk '$1 ~ /^krakenctl_ring_member_healthy[{]/ && $2 == 1 { n++ } END { print n + 0 }')
		else
			n=$(role_curl --ns "$ip:$port/metrics" | awk -v m="krakenctl_members_addresses{list=\"$list\"}" '$1 == m { print $2 }')
		fi
		[ "$n" = "$want" ] || return 1
	done < <(k -n "$KNS" get pods -l 'app.kubernetes.io/component in (origin,proxy,tracker,build-index)' \
		-o jsonpath='{range .items[*]}{.metadata.labels.app\.kubernetes\.io/component} {.status.podIP} {.spec.containers[0].ports[?(@.name=="admin")].containerPort}{"\n"}{end}')
}

# port_forward: the host's 127.0.0.1:$PUSH_PORT to the proxy Service's ClusterIP inside the lab
# netns (socat on the host, one `ip netns exec ... socat` per connection), so the push crosses
# kube-proxy's Service rules as a pod's would. Not `kubectl port-forward`: kubectl ends the whole
# forward when one forwarded connection is reset ("lost connection to pod";
# kubernetes/kubectl#1169, kubernetes/kubernetes#111825), and docker resets a TLS connection it
# closes with the server's post-handshake session tickets unread: TLS pushes failed
# mid-push with "connection reset by peer" while kubectl restarted.
port_forward() {
	local ip=$1
	exec socat "TCP-LISTEN:$PUSH_PORT,bind=127.0.0.1,fork,reuseaddr" \
		"SYSTEM:exec ip netns exec $NS socat STDIO TCP\:$ip\:15400"
}

# run_pod NAME: a pod of registry.kk.test/library/lab:1 running `krakenctl version`, Completed.
run_pod() {
	local name=$1
	k apply -f - >/dev/null <<-YAML
		apiVersion: v1
		kind: Pod
		metadata: {name: $name, namespace: $KNS}
		spec:
		  restartPolicy: Never
		  securityContext: {runAsNonRoot: true, runAsUser: 65532, runAsGroup: 65532}
		  containers:
		    - name: lab
		      image: $REGISTRY/library/lab:1
		      imagePullPolicy: IfNotPresent
		      args: [version]
	YAML
	if ! k -n "$KNS" wait --for=jsonpath='{.status.phase}'=Succeeded "pod/$name" --timeout=180s >/dev/null; then
		k -n "$KNS" describe pod "$name" >&2 || true
		die "pod $name did not complete"
	fi
	log "pod $name Completed; its output:"
	k -n "$KNS" logs "$name" | sed 's/^/    /' >&2
	k -n "$KNS" get events --field-selector "involvedObject.name=$name" -o custom-columns=REASON:.reason,MESSAGE:.message | grep -i pull | sed 's/^/    /' >&2 || true
}

e2e() {
	rm -rf "${LAB}-failed"
	trap on_exit EXIT
	step "install (apt, k8s $K8S_VERSION, CoreDNS, helm, pause image; cached after the first run)"
	install
	# apt_install_quiet (scripts/service.sh) sets and clears an EXIT trap of its own, which
	# drops ours: set it again, or a failure later would leave the lab running.
	trap on_exit EXIT
	pass

	step "krakenctl image (scripts/image.sh build --platform linux/amd64 --no-load)"
	scripts/image.sh build --platform linux/amd64 --no-load --tag "krakenctl:$IMAGE_TAG" --out "$IMAGE_DIR" >/dev/null
	pass

	step "node up (netns $NS, node $NODE_IP, etcd, apiserver, kcm, scheduler, containerd, kubelet, kube-proxy $PROXY_MODE, CoreDNS)"
	up
	ctr --address "$LAB/containerd/containerd.sock" -n k8s.io images import "$IMAGE_DIR/krakenctl_linux_$(go env GOARCH).tar" >/dev/null
	pass "krakenctl:$IMAGE_TAG imported"

	local values=(-f scripts/k8slab/values.yaml) scheme=http
	if [ "$TLS" = 1 ]; then
		step "certificates: a new CA, the chart's existingSecrets and an admin certificate (scripts/k8slab/tlscerts)"
		go run ./scripts/k8slab/tlscerts -out "$LAB/tls" -release "$RELEASE" -namespace "$KNS" -build-index 3
		k create namespace "$KNS" >/dev/null
		k apply -f "$LAB/tls/secrets.yaml" >/dev/null
		values+=(-f scripts/k8slab/values-tls.yaml)
		scheme=https
		pass "$(grep -c '^kind: Secret' "$LAB/tls/secrets.yaml") Secrets"
	fi

	step "helm install --wait (every pod Ready)"
	helm install "$RELEASE" charts/krakenctl -n "$KNS" --create-namespace "${values[@]}" \
		--set agent.containerd.dir="$LAB/containerd/certs.d" --wait --timeout 10m >/dev/null
	k -n "$KNS" wait --for=condition=Ready pods --all --timeout=60s >/dev/null
	k -n "$KNS" get pods -o wide >&2
	restarts
	local hosts=$LAB/containerd/certs.d/$REGISTRY/hosts.toml
	[ -f "$hosts" ] || die "the init container wrote no $hosts"
	grep -q "^server = \"$scheme://127.0.0.1:16000\"" "$hosts" || { cat "$hosts" >&2; die "$hosts: the agent is not containerd's only server"; }
	if [ "$TLS" = 1 ]; then
		# containerd checks the agent's certificate against the cluster CA the init container
		# copied from the agent's Secret.
		local ca
		ca=$(sed -n 's/^ca = "\(.*\)"$/\1/p' "$hosts")
		[ -n "$ca" ] || { cat "$hosts" >&2; die "$hosts: no ca = for the agent's https"; }
		cmp -s "$ca" "$LAB/tls/ca.crt" || die "$ca is not this run's CA"
	fi
	sed 's/^/    /' "$hosts" >&2
	pass "$(k -n "$KNS" get pods --no-headers | wc -l) pods"

	if [ "$TLS" = 1 ]; then
		step "the links are TLS: an origin refuses plain HTTP and a client without a certificate; the roles started with their certificates"
		local o0 out
		o0=$(k -n "$KNS" get pod "$FULL-origin-0" -o jsonpath='{.status.podIP}')
		# Go's TLS listener answers a plain-HTTP request with 400 and nothing else.
		out=$(in_ns curl -s -w ' HTTP %{http_code}' "http://$o0:15000/v2/" || true)
		log "plain HTTP to origin-0 $o0:15000: $out"
		grep -q 'HTTP 400' <<<"$out" || die "origin-0 answered plain HTTP: $out"
		# client_auth require: no handshake without a client certificate of the cluster CA.
		if in_ns curl -s -o /dev/null --cacert "$LAB/tls/ca.crt" --resolve "$FULL-origin-0.$FULL-origin-headless.$KNS.svc.cluster.local:15000:$o0" \
			"https://$FULL-origin-0.$FULL-origin-headless.$KNS.svc.cluster.local:15000/v2/"; then
			die "origin-0 completed a request from a client without a certificate"
		fi
		log "https to origin-0 by its stable name, server verified against the CA, no client certificate: refused"
		local p line
		for p in $(k -n "$KNS" get pods -o name); do
			# The role's "started" line names its certificate ("tls": the common name); a role
			# without one warns "tls is off" instead.
			line=$(k -n "$KNS" logs "$p" 2>/dev/null | grep -m1 '"tls_not_after"' || true)
			[ -n "$line" ] || die "$p: no start line with its certificate (\"tls\": ...) in its log"
			if k -n "$KNS" logs "$p" 2>/dev/null | grep -q 'tls is off'; then die "$p: says tls is off"; fi
			log "${p#pod/}: $(grep -o '"msg":"[^"]*"' <<<"$line") $(grep -o '"tls":"[^"]*","tls_not_after":"[^"]*"' <<<"$line")"
		done
		pass
	fi

	if [ "${K8S_LAB_SETTLE:-1}" = 1 ]; then
		step "every origin, proxy, tracker and build-index pod knows both origins (K8S_LAB_SETTLE=0 skips)"
		wait_for "every role's origin list complete" 90 origins_known 2
		pass
	fi

	step "docker push through the proxy Service (127.0.0.1:$PUSH_PORT forwarded into the netns by socat)"
	local exports
	exports=$(scripts/docker-up.sh start "$LAB-docker")
	eval "$exports"
	grep -q "$LAB-docker" <<<"$exports" && DOCKER_STARTED=1
	docker load -i "$IMAGE_DIR/krakenctl_linux_$(go env GOARCH).tar" >/dev/null
	local ctx=$LAB/docker-build
	mkdir -p "$ctx"
	head -c $((4 << 20)) /dev/urandom >"$ctx/random.bin"
	printf 'FROM krakenctl:%s\nCOPY random.bin /lab/random.bin\n' "$IMAGE_TAG" >"$ctx/Dockerfile"
	DOCKER_BUILDKIT=0 docker build -q -t "127.0.0.1:$PUSH_PORT/library/lab:1" "$ctx" >/dev/null
	local svc
	svc=$(k -n "$KNS" get svc "$FULL-proxy" -o jsonpath='{.spec.clusterIP}')
	port_forward "$svc" >"$LAB/log/port-forward.log" 2>&1 &
	echo "port-forward $!" >>"$LAB/pids"
	if [ "$TLS" = 1 ]; then
		# The proxy's certificate names 127.0.0.1: verified here. dockerd treats 127.0.0.0/8 as an
		# insecure registry and does not verify it.
		wait_for "port-forward to the proxy" 30 curl -sf --cacert "$LAB/tls/ca.crt" "https://127.0.0.1:$PUSH_PORT/v2/"
	else
		wait_for "port-forward to the proxy" 30 curl -sf "http://127.0.0.1:$PUSH_PORT/v2/"
	fi
	docker push "127.0.0.1:$PUSH_PORT/library/lab:1" >&2
	pass "through the Service's ClusterIP $svc"

	step "pod pulls $REGISTRY/library/lab:1 through the node's agent and Completes"
	local before after
	before=$(agent_metric krakenctl_agent_served_bytes_total)
	run_pod lab-pull-1
	after=$(agent_metric krakenctl_agent_served_bytes_total)
	log "agent served bytes: ${before:-0} -> $after"
	awk -v a="${before:-0}" -v b="$after" 'BEGIN { exit !(b - a >= 4194304) }' || die "the agent did not serve the 4 MiB layer"
	pass "agent served $(awk -v a="${before:-0}" -v b="$after" 'BEGIN { printf "%d", b - a }') bytes"

	step "Services: the node reaches ClusterIPs, a pod-network pod resolves and reaches the tracker Service"
	local ip
	ip=$(k -n "$KNS" get svc "$FULL-proxy" -o jsonpath='{.spec.clusterIP}')
	role_curl --ns "$ip:15402/health" -o /dev/null || die "node -> proxy ClusterIP $ip:15402 (kube-proxy $PROXY_MODE)"
	# The swarm of the pull above, as the tracker (reached by its Service's cluster.local name,
	# so CoreDNS and kube-proxy from the pod network) knows it: the node's agent is in it. With
	# TLS, by tracker-0's stable name (the name its certificate carries; members are dialled so)
	# with the admin certificate from its Secret.
	local trackers="$FULL-tracker.$KNS.svc.cluster.local:16100" tlsargs="" tlsvol="" tlsmount=""
	if [ "$TLS" = 1 ]; then
		trackers="$FULL-tracker-0.$FULL-tracker-headless.$KNS.svc.cluster.local:16100"
		tlsargs=", --tls-ca-file, /tls/ca.crt, --tls-cert-file, /tls/tls.crt, --tls-key-file, /tls/tls.key"
		tlsvol="volumes: [{name: tls, secret: {secretName: kk-lab-admin-tls}}]"
		tlsmount="volumeMounts: [{name: tls, mountPath: /tls, readOnly: true}]"
	fi
	k apply -f - >/dev/null <<-YAML
		apiVersion: v1
		kind: Pod
		metadata: {name: lab-swarm, namespace: $KNS}
		spec:
		  restartPolicy: Never
		  securityContext: {runAsNonRoot: true, runAsUser: 65532, runAsGroup: 65532}
		  containers:
		    - name: swarm
		      image: krakenctl:$IMAGE_TAG
		      imagePullPolicy: Never
		      args: [swarm, list, --trackers, "$trackers"$tlsargs]
		      $tlsmount
		  $tlsvol
	YAML
	if ! k -n "$KNS" wait --for=jsonpath='{.status.phase}'=Succeeded pod/lab-swarm --timeout=120s >/dev/null; then
		k -n "$KNS" logs lab-swarm >&2 || true
		die "krakenctl swarm list from a pod-network pod did not succeed"
	fi
	k -n "$KNS" logs lab-swarm | sed 's/^/    /' >&2
	k -n "$KNS" delete pod lab-swarm --wait=false >/dev/null
	pass "proxy ClusterIP $ip from the node; tracker Service by name from a pod"

	step "delete the origin, build-index and agent pods; all Ready again"
	k -n "$KNS" delete pod lab-pull-1 --wait=true >/dev/null
	local sel_o="app.kubernetes.io/component=origin" sel_b="app.kubernetes.io/component=build-index" sel_a="app.kubernetes.io/component=agent"
	local old
	old=$(pod_uids "$sel_o"; pod_uids "$sel_b"; pod_uids "$sel_a")
	k -n "$KNS" delete pod -l "$sel_o" --wait=false >/dev/null
	k -n "$KNS" delete pod -l "$sel_b" --wait=false >/dev/null
	k -n "$KNS" delete pod -l "$sel_a" --wait=false >/dev/null
	wait_for "new origin pods Ready" 300 replaced "$sel_o" 2 "$old"
	wait_for "new build-index pods Ready" 300 replaced "$sel_b" 3 "$old"
	wait_for "a new agent pod Ready" 300 replaced "$sel_a" 1 "$old"
	k -n "$KNS" get pods -o wide >&2
	restarts
	pass

	step "remove the image from the node's containerd; the pod pulls again and Completes"
	local sock=$LAB/containerd/containerd.sock
	# CRI keeps three names for one image (the tag, repo@digest and the image id sha256:...),
	# all with the same target: remove every name of that manifest, then garbage-collect (--sync).
	local digest refs layer id
	digest=$(ctr --address "$sock" -n k8s.io images ls | awk -v r="$REGISTRY/library/lab:1" '$1 == r { print $3 }')
	[ -n "$digest" ] || die "$REGISTRY/library/lab:1 is not in the node's containerd"
	# The lab's own layer (the manifest's last): the one the second pull must fetch again.
	layer=$(ctr --address "$sock" -n k8s.io content get "$digest" | grep -o 'sha256:[0-9a-f]\{64\}' | tail -1)
	# The kubelet keeps the exited container of the deleted pod until its garbage collection,
	# and that container keeps the layer's content and snapshot: remove it first.
	for id in $(ctr --address "$sock" -n k8s.io containers ls | awk -v r="$REGISTRY/library/lab:1" '$2 == r { print $1 }'); do
		ctr --address "$sock" -n k8s.io tasks delete -f "$id" >/dev/null 2>&1 || true
		ctr --address "$sock" -n k8s.io containers rm "$id" >/dev/null
	done
	refs=$(ctr --address "$sock" -n k8s.io images ls | awk -v d="$digest" '$3 == d { print $1 }')
	# shellcheck disable=SC2086 # one word per name
	ctr --address "$sock" -n k8s.io images rm --sync $refs >/dev/null
	if ctr --address "$sock" -n k8s.io images ls | awk -v d="$digest" '$3 == d { found = 1 } END { exit !found }'; then
		die "the image is still in containerd"
	fi
	local blob content
	content=$(ctr --address "$sock" -n k8s.io content ls -q)
	for blob in "$digest" "$layer"; do
		if grep -qx "$blob" <<<"$content"; then
			die "$blob is still in containerd's content store"
		fi
	done
	log "removed $(wc -w <<<"$refs") names of $digest, its container, and its content (lab layer $layer) from the node's containerd"
	before=$(agent_metric krakenctl_agent_served_bytes_total)
	run_pod lab-pull-2
	after=$(agent_metric krakenctl_agent_served_bytes_total)
	log "agent served bytes: ${before:-0} -> $after"
	awk -v a="${before:-0}" -v b="$after" 'BEGIN { exit !(b - a >= 4194304) }' || die "the agent did not serve the 4 MiB layer again"
	pass "agent served $(awk -v a="${before:-0}" -v b="$after" 'BEGIN { printf "%d", b - a }') bytes"
}

case "${1:-}" in
install) install ;;
up) install && up ;;
e2e) e2e ;;
down) down ;;
*)
	echo "usage: $0 install | e2e | up | down" >&2
	exit 2
	;;
esac
