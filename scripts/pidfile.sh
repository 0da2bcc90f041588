# shellcheck shell=bash
# pidfile.sh is sourced by the scripts that start a server in the background and keep its PID in
# a file (docker-up.sh, registry-server.sh): how they tell it runs and how they stop it. The
# sourcing script defines log.

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
