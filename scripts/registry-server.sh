#!/usr/bin/env bash
# registry-server.sh runs Debian's docker-registry (distribution 2.8) on loopback for the
# upstream-registry backend tests (backend/registry, TestRealRegistry).
#
#   scripts/registry-server.sh install                  install docker-registry and htpasswd (apt)
#   scripts/registry-server.sh start PORT [USER PASS]   install if needed, start, wait, print exports
#   scripts/registry-server.sh stop PORT                stop it (by PID) and delete its data
#
# start prints shell `export` lines on stdout, so CI can do:
#
#   eval "$(scripts/registry-server.sh start 5123 kraken kraken-pass)"
#   go test -race -count=1 -run TestRealRegistry ./backend/registry/
#   scripts/registry-server.sh stop 5123
#
# Exports: REGISTRY_ADDR=127.0.0.1:PORT, and with USER/PASS (htpasswd basic authentication)
# REGISTRY_USERNAME and REGISTRY_PASSWORD. The registry listens on 127.0.0.1 only, stores
# blobs under $REGISTRY_STATE_DIR/PORT (default ${TMPDIR:-/tmp}/krakenctl-registry/PORT) and
# logs there to registry.log. Installing needs root (or sudo) on Debian 12 (apt-get); it never
# lets apt start the packaged registry service.
set -euo pipefail

usage() {
	echo "usage: $0 install | start PORT [USER PASS] | stop PORT" >&2
	exit 2
}

log() { echo "registry-server: $*" >&2; }

state_root=${REGISTRY_STATE_DIR:-${TMPDIR:-/tmp}/krakenctl-registry}
registry_bin=/usr/bin/docker-registry

check_port() {
	[[ $1 =~ ^[0-9]+$ ]] && ((1 <= $1 && $1 <= 65535)) || { log "invalid port '$1'"; exit 2; }
}

# shellcheck source=scripts/service.sh
. "$(dirname "${BASH_SOURCE[0]}")/service.sh"

# apt_install PACKAGE... installs Debian packages without starting their services, not even
# at the next boot.
apt_install() {
	# Keep apt from starting the packaged registry service on :5000 (all interfaces).
	apt_install_quiet "$@"
	if [[ " $* " == *" docker-registry "* ]] && command -v systemctl >/dev/null; then
		# Nor start it at the next boot.
		as_root systemctl disable docker-registry.service >/dev/null 2>&1 || true
	fi
}

# install_missing [auth] installs docker-registry, and htpasswd with auth, if missing.
install_missing() {
	local pkgs=()
	[[ -x $registry_bin ]] || pkgs+=(docker-registry)
	[[ -z ${1:-} ]] || command -v htpasswd >/dev/null || pkgs+=(apache2-utils)
	((${#pkgs[@]} == 0)) || apt_install "${pkgs[@]}"
}


# probe PORT prints the status code of GET /v2/, using only bash.
probe() {
	local status=""
	if { exec 3<>"/dev/tcp/127.0.0.1/$1"; } 2>/dev/null; then
		printf 'GET /v2/ HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' >&3
		read -r -t 2 _ status _ <&3 || true
		exec 3<&- 3>&-
	fi
	echo "$status"
}

start() {
	local port=$1 user=${2:-} pass=${3:-}
	check_port "$port"
	if [[ -n $user && -z $pass ]] || [[ $user == *:* ]]; then
		log "give USER and PASS together; USER may not contain ':'"
		exit 2
	fi
	local dir=$state_root/$port
	if alive "$dir/registry.pid"; then
		log "a registry started by this script already runs on port $port (pid $(cat "$dir/registry.pid")); stop it first"
		exit 1
	fi

	install_missing "$user"

	rm -rf "$dir"
	mkdir -p "$dir/data"
	local auth=""
	if [[ -n $user ]]; then
		htpasswd -Bbn "$user" "$pass" >"$dir/htpasswd"
		auth="auth:
  htpasswd:
    realm: krakenctl-test
    path: $dir/htpasswd"
	fi
	cat >"$dir/config.yml" <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $dir/data
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
http:
  addr: 127.0.0.1:$port
  secret: krakenctl-test-$RANDOM$RANDOM
health:
  storagedriver:
    enabled: false
$auth
EOF

	setsid "$registry_bin" serve "$dir/config.yml" </dev/null >"$dir/registry.log" 2>&1 &
	echo $! >"$dir/registry.pid"

	local want=200 status=""
	[[ -z $user ]] || want=401
	for _ in $(seq 300); do
		if ! alive "$dir/registry.pid"; then
			log "docker-registry exited; its log:"
			cat "$dir/registry.log" >&2
			exit 1
		fi
		status=$(probe "$port")
		[[ $status == "$want" ]] && break
		sleep 0.1
	done
	if [[ $status != "$want" ]]; then
		log "no answer $want from http://127.0.0.1:$port/v2/ after 30 s (last: '${status}'); its log:"
		cat "$dir/registry.log" >&2
		stop "$port"
		exit 1
	fi
	log "docker-registry $(cat "$dir/registry.pid") serving http://127.0.0.1:$port (data in $dir)"
	echo "export REGISTRY_ADDR=127.0.0.1:$port"
	if [[ -n $user ]]; then
		printf 'export REGISTRY_USERNAME=%q\n' "$user"
		printf 'export REGISTRY_PASSWORD=%q\n' "$pass"
	fi
}

stop() {
	local port=$1
	check_port "$port"
	local dir=$state_root/$port pidfile=$state_root/$port/registry.pid
	if alive "$pidfile"; then
		local pid
		pid=$(cat "$pidfile")
		terminate "$pid" docker-registry 10
		log "stopped docker-registry $pid on port $port"
	else
		log "no registry started by this script runs on port $port"
	fi
	rm -rf "$dir"
}

case ${1:-} in
install) (($# == 1)) || usage; install_missing auth ;;
start) (($# == 2 || $# == 4)) || usage; start "$2" "${3:-}" "${4:-}" ;;
stop) (($# == 2)) || usage; stop "$2" ;;
*) usage ;;
esac
