# Shared helpers for the integration tests: real QEMU (TCG) guests, a real
# agent and replicator on loopback. Every process a test starts is recorded
# and stopped by pid in cleanup; nothing is killed by name.
set -u

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN=$ROOT/build/bin
GUEST=$ROOT/build/guest
T=$(mktemp -d /dev/shm/remus-it.XXXXXX)
PIDS=()
RAM_FILES=()
FAILS=0

log() { printf '%s %s\n' "$(date +%T.%3N)" "$*"; }
pass() { log "ok - $*"; }
fail() { log "not ok - $*"; FAILS=$((FAILS + 1)); }
die() { fail "$*"; exit 1; }

cleanup() {
	local p
	for p in "${PIDS[@]}"; do
		kill -0 "$p" 2>/dev/null && kill -TERM "$p" 2>/dev/null
	done
	sleep 0.2
	for p in "${PIDS[@]}"; do
		kill -0 "$p" 2>/dev/null && kill -KILL "$p" 2>/dev/null
	done
	for f in "$T"/*/qemu.pid; do
		[ -f "$f" ] || continue
		p=$(cat "$f" 2>/dev/null) || continue
		[ -n "$p" ] && [ "$(cat /proc/"$p"/comm 2>/dev/null)" = qemu-system-x86 ] && kill -KILL "$p" 2>/dev/null
	done
	rm -f "${RAM_FILES[@]}"
	if [ "$FAILS" -gt 0 ] || [ -n "${KEEP:-}" ]; then
		log "logs kept in $T (agent.log, replicator.log, */serial.log)"
		# Small logs go to the CI output so a red run explains itself.
		for f in "$T"/agent.log "$T"/replicator.log; do
			[ -f "$f" ] && { echo "--- tail of $f"; tail -n 25 "$f"; }
		done
	else
		rm -rf "$T"
	fi
}
trap cleanup EXIT

# A free TCP port on loopback.
free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# wait_for SECONDS CMD...: poll CMD every 0.1 s until it succeeds.
wait_for() {
	local deadline=$(( $(date +%s%N) / 1000000 + $1 * 1000 ))
	shift
	while [ $(( $(date +%s%N) / 1000000 )) -lt $deadline ]; do
		"$@" && return 0
		sleep 0.1
	done
	return 1
}

# start_guest NAME MEM_MB KERNEL_ARGS: boots the test guest, sets GUEST_PID.
start_guest() {
	local name=$1 mem=$2 append=$3
	"$ROOT/scripts/run-test-guest" --guest-dir "$GUEST" --name "$name" \
		--run-dir "$T/$name" --mem "$mem" --append "$append" --daemonize ||
		die "cannot start guest $name"
	RAM_FILES+=("/dev/shm/remus-$name.ram")
	GUEST_PID=$(cat "$T/$name/qemu.pid")
	PIDS+=("$GUEST_PID")
	wait_for 60 grep -qa 'guest: ready' "$T/$name/serial.log" ||
		die "guest $name did not boot (see $T/$name/serial.log)"
}

# last_tick FILE: the newest "tick N" the guest printed, or -1.
last_tick() {
	local n
	n=$(tr -d '\r' < "$1" 2>/dev/null | grep -ao '^tick [0-9]*' | tail -n 1 | cut -d' ' -f2)
	echo "${n:--1}"
}

# first_tick FILE: the oldest "tick N" in FILE, or -1.
first_tick() {
	local n
	n=$(tr -d '\r' < "$1" 2>/dev/null | grep -ao '^tick [0-9]*' | head -n 1 | cut -d' ' -f2)
	echo "${n:--1}"
}

# ticks_consecutive FILE: every tick is the previous one plus one.
ticks_consecutive() {
	tr -d '\r' < "$1" | grep -ao '^tick [0-9]*' | cut -d' ' -f2 |
		awk 'NR > 1 && $1 != prev + 1 { print "gap: " prev " -> " $1; bad = 1 } { prev = $1 } END { exit bad }'
}

start_agent() {
	local port=$1 dir=$2
	shift 2
	"$BIN/remus-agent" --listen "127.0.0.1:$port" --state-dir "$dir" "$@" >> "$T/agent.log" 2>&1 &
	AGENT_PID=$!
	PIDS+=("$AGENT_PID")
}

start_replicator() {
	local qmp=$1 port=$2
	shift 2
	"$BIN/remus-replicator" --qmp "$qmp" --backup "127.0.0.1:$port" \
		--control "$T/ctl.sock" "$@" >> "$T/replicator.log" 2>&1 &
	REPLICATOR_PID=$!
	PIDS+=("$REPLICATOR_PID")
}

# status_field KEY: one number/string from `remusctl status --json`.
status_field() {
	"$BIN/remusctl" --control "$T/ctl.sock" status --json 2>/dev/null |
		python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])" 2>/dev/null
}

committed_at_least() {
	local n
	n=$(status_field epochs_committed) || return 1
	[ "${n:-0}" -ge "$1" ]
}

# wait_exit PID SECONDS: wait for a background child; sets EXIT_CODE.
wait_exit() {
	local pid=$1 secs=$2
	wait_for "$secs" sh -c "! kill -0 $pid 2>/dev/null" || return 1
	wait "$pid"
	EXIT_CODE=$?
	return 0
}

finish() {
	if [ "$FAILS" -eq 0 ]; then
		log "PASS $(basename "$0")"
		exit 0
	fi
	log "FAIL $(basename "$0"): $FAILS check(s) failed"
	exit 1
}
