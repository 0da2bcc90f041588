#!/usr/bin/env bash
# lab-net.sh gives the tests one address that is not loopback, on a network of their own: a
# network namespace and a veth pair whose host end carries LAB_ADDR/30 (default
# 10.213.255.254). Nothing routes beyond the pair, so a process that dials the address reaches
# only what the tests started on it.
#
#   scripts/lab-net.sh up      create the namespace and the pair (idempotent), print exports
#   scripts/lab-net.sh down    remove them
#
# Why: dockerd treats every registry on 127.0.0.0/8 as insecure whatever its configuration — it
# skips certificate verification and never reads /etc/docker/certs.d for one — so "docker trusts
# the cluster CA through certs.d" can only be shown on another address.
#
# up prints `export KRAKENCTL_LAB_ADDR=...`. Needs root and iproute2.
set -euo pipefail

NS=${LAB_NS:-krakenctl-lab}
HOST_IF=${LAB_IF:-kklab0}
PEER_IF=kklab1
ADDR=${LAB_ADDR:-10.213.255.254}
PEER_ADDR=${LAB_PEER_ADDR:-10.213.255.253}

log() { echo "lab-net: $*" >&2; }

up() {
	command -v ip >/dev/null || { log "needs ip (apt-get install iproute2)"; exit 1; }
	ip netns list | grep -qw "^$NS" || ip netns add "$NS"
	if ! ip link show "$HOST_IF" >/dev/null 2>&1; then
		ip link add "$HOST_IF" type veth peer name "$PEER_IF" netns "$NS"
		ip addr add "$ADDR/30" dev "$HOST_IF"
		ip -n "$NS" addr add "$PEER_ADDR/30" dev "$PEER_IF"
		ip -n "$NS" link set lo up
		ip -n "$NS" link set "$PEER_IF" up
	fi
	ip link set "$HOST_IF" up
	# The address answers locally even before the peer end is up; wait until it can be bound.
	for _ in $(seq 50); do
		ip -4 addr show dev "$HOST_IF" | grep -q "inet $ADDR/" && break
		sleep 0.1
	done
	ip -4 addr show dev "$HOST_IF" | grep -q "inet $ADDR/" || { log "$ADDR did not come up on $HOST_IF"; exit 1; }
	log "$ADDR on $HOST_IF (peer $PEER_ADDR in netns $NS)"
	echo "export KRAKENCTL_LAB_ADDR=$ADDR"
}

down() {
	ip link del "$HOST_IF" 2>/dev/null || true
	ip netns del "$NS" 2>/dev/null || true
}

case "${1:-}" in
up) up ;;
down) down ;;
*)
	echo "usage: $0 up | down" >&2
	exit 2
	;;
esac
