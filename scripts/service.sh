# shellcheck shell=bash
# service.sh is sourced by the scripts that install a test server from Debian and run it in the
# background with its PID in a file (docker-up.sh, registry-server.sh, s3-server.sh,
# gcs-server.sh, azurite-server.sh; install-test-deps.sh uses as_root): how they get root,
# install without starting services, tell the server runs and stop it. The sourcing script
# defines log.

# as_root CMD...: run CMD as root, through sudo when not root already.
as_root() {
	if [[ $(id -u) == 0 ]]; then
		"$@"
	elif command -v sudo >/dev/null 2>&1; then
		sudo "$@"
	else
		log "need root to run: $*"
		return 1
	fi
}

# apt_install_quiet PACKAGE...: install Debian packages without letting their maintainer
# scripts start services (a packaged daemon on a public port, or one that fights ours).
apt_install_quiet() {
	local guard=""
	if [[ ! -e /usr/sbin/policy-rc.d ]]; then
		guard=/usr/sbin/policy-rc.d
		printf '#!/bin/sh\nexit 101\n' | as_root tee "$guard" >/dev/null
		as_root chmod 755 "$guard"
		trap 'as_root rm -f /usr/sbin/policy-rc.d' EXIT
	fi
	log "installing $* with apt-get"
	as_root apt-get update -qq >&2
	as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2
	if [[ -n $guard ]]; then
		as_root rm -f "$guard"
		trap - EXIT
	fi
}

# alive PIDFILE: the process whose PID PIDFILE holds is running.
alive() { [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

# terminate PID NAME SECONDS: SIGTERM, then SIGKILL if PID still runs after SECONDS.
terminate() {
	local pid=$1 name=$2 secs=$3
	kill -TERM "$pid" 2>/dev/null || true
	for _ in $(seq $((secs * 10))); do
		kill -0 "$pid" 2>/dev/null || return 0
		sleep 0.1
	done
	log "$name $pid ignored SIGTERM for $secs s; killing it"
	kill -KILL "$pid" 2>/dev/null || true
}

# stop_pidfile PIDFILE NAME SECONDS: end the process whose PID PIDFILE holds, if it runs
# (terminate), and remove PIDFILE.
stop_pidfile() {
	local file=$1 name=$2 secs=$3
	[[ -f $file ]] || return 0
	if alive "$file"; then
		terminate "$(cat "$file")" "$name" "$secs"
	fi
	rm -f "$file"
}
