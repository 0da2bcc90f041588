#!/usr/bin/env bash
# docker-up.sh makes a Docker daemon available for the real-client registry tests (test/e2e:
# docker push and pull through the proxy and the agents).
#
#   scripts/docker-up.sh install        install Debian's docker.io (apt), without starting it
#   scripts/docker-up.sh start [DIR]    use the daemon that answers, or start a private one
#   scripts/docker-up.sh stop [DIR]     stop the daemon that start started (by PID), if any
#
# start prints shell `export` lines on stdout, so CI can do:
#
#   eval "$(scripts/docker-up.sh start)"
#   go test -race -count=1 -run Docker ./test/e2e/
#   scripts/docker-up.sh stop
#
# Exports DOCKER_HOST, the socket of the daemon to use, and CONTAINERD_ADDRESS, the socket of the
# containerd it runs on, when one is found (the containerd mirror test pulls with ctr there). When a daemon already answers (at
# $DOCKER_HOST, or at Docker's default socket), start uses it, starts nothing, and stop leaves it
# alone. Otherwise start runs a private dockerd with everything under DIR (default
# ${TMPDIR:-/tmp}/krakenctl-docker): its socket (DIR/docker.sock), data root, exec root,
# pidfile and log (DIR/dockerd.log; DOCKER_UP_LOG overrides the log's path). The private daemon
# has no bridge network and does not touch iptables: the tests build, push and pull images but
# run no containers with networking. It listens on no TCP port.
#
# dockerd treats 127.0.0.0/8 as insecure registries by itself, so pushing to and pulling from
# plain-HTTP registries on 127.0.0.1 needs no daemon configuration.
#
# Installing and starting need root (or sudo for the install) on Debian 12. The machine image
# may ship a newer docker client in /usr/local/bin that shadows Debian's /usr/bin/docker; it
# works against Debian's 20.10 daemon (API 1.41).
set -euo pipefail

log() { echo "docker-up: $*" >&2; }

usage() {
	echo "usage: $0 install | start [DIR] | stop [DIR]" >&2
	exit 2
}

default_dir=${TMPDIR:-/tmp}/krakenctl-docker

# shellcheck source=scripts/service.sh
. "$(dirname "${BASH_SOURCE[0]}")/service.sh"

# install installs docker.io when dockerd is missing, without letting apt start its service.
install() {
	if command -v dockerd >/dev/null; then
		return 0
	fi
	apt_install_quiet docker.io
	command -v dockerd >/dev/null || { log "docker.io installed but dockerd is not on PATH"; return 1; }
}

# answers HOST: a daemon answers `docker version` at HOST (a unix:// URL) within 5 s.
answers() {
	DOCKER_HOST=$1 timeout 5 docker version --format '{{.Server.Version}}' >/dev/null 2>&1
}


# export_containerd SOCKET...: print the export line of the first containerd socket that exists.
export_containerd() {
	local s
	for s in "$@"; do
		if [[ -S $s ]]; then
			printf 'export CONTAINERD_ADDRESS=%q\n' "$s"
			return 0
		fi
	done
	log "no containerd socket found (looked at $*); the containerd test will not run"
}

start() {
	local dir=${1:-$default_dir}
	command -v docker >/dev/null || { log "no docker client on PATH; run $0 install"; return 1; }
	local h
	for h in ${DOCKER_HOST:-} unix:///var/run/docker.sock; do
		if answers "$h"; then
			log "using the daemon that answers at $h (not started here, so stop leaves it alone)"
			printf 'export DOCKER_HOST=%q\n' "$h"
			# Debian's dockerd uses the system containerd; a dockerd on its own runs one under
			# its exec root; a private one of this script under $dir/exec.
			export_containerd /run/containerd/containerd.sock /var/run/docker/containerd/containerd.sock \
				"$dir/exec/containerd/containerd.sock"
			return 0
		fi
	done
	install
	local sock=unix://$dir/docker.sock logfile=${DOCKER_UP_LOG:-$dir/dockerd.log}
	if alive "$dir/dockerd.pid"; then
		if answers "$sock"; then # left by an interrupted run: use it; stop will end it
			log "using dockerd $(cat "$dir/dockerd.pid"), started earlier by this script, at $sock"
			printf 'export DOCKER_HOST=%q\n' "$sock"
			export_containerd "$dir/exec/containerd/containerd.sock"
			return 0
		fi
		log "a dockerd started by this script already runs from $dir (pid $(cat "$dir/dockerd.pid")) but does not answer; stop it first"
		return 1
	fi
	stop_in "$dir" >/dev/null 2>&1 || true # leftovers of an interrupted run
	mkdir -p "$dir/data" "$dir/exec"
	mkdir -p "$(dirname "$logfile")"
	# setsid + nohup: the daemon outlives this script and ignores the terminal's signals; stop
	# ends it by PID.
	setsid nohup dockerd \
		--host "$sock" \
		--data-root "$dir/data" \
		--exec-root "$dir/exec" \
		--pidfile "$dir/dockerd.pid.daemon" \
		--bridge none --iptables=false --ip-masq=false \
		</dev/null >"$logfile" 2>&1 &
	echo $! >"$dir/dockerd.pid"
	local start=$SECONDS
	until answers "$sock"; do
		if ! alive "$dir/dockerd.pid"; then
			log "dockerd exited during start; its log ($logfile):"
			tail -30 "$logfile" >&2
			return 1
		fi
		if ((SECONDS - start > 60)); then
			log "dockerd did not answer at $sock within 60 s; its log ($logfile):"
			tail -30 "$logfile" >&2
			stop_in "$dir" || true
			return 1
		fi
		sleep 0.1
	done
	log "dockerd $(cat "$dir/dockerd.pid") answering at $sock (state in $dir, log $logfile)"
	printf 'export DOCKER_HOST=%q\n' "$sock"
	export_containerd "$dir/exec/containerd/containerd.sock"
}

# stop_in DIR stops the dockerd that start left in DIR, then removes DIR.
stop_in() {
	local dir=$1 pidfile=$1/dockerd.pid
	if alive "$pidfile"; then
		local pid
		pid=$(cat "$pidfile")
		terminate "$pid" dockerd 30
		log "stopped dockerd $pid"
	elif [[ -d $dir ]]; then
		log "no dockerd started by this script runs from $dir"
	fi
	[[ -d $dir ]] || return 0
	# A killed daemon can leave mounts (overlay layers, its exec root) under its directories;
	# unmount them, deepest first, before deleting anything.
	local m
	while read -r m; do
		umount -l "$m" 2>/dev/null || true
	done < <(awk -v d="$dir/" 'index($2, d) == 1 { print $2 }' /proc/self/mounts | sort -r)
	rm -rf "$dir"
}

case ${1:-} in
install) (($# == 1)) || usage; install ;;
start) (($# <= 2)) || usage; start "${2:-}" ;;
stop) (($# <= 2)) || usage; stop_in "${2:-$default_dir}" ;;
*) usage ;;
esac
