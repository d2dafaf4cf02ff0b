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
# The pair key of this test's agent and replicators (docs/SECURITY.md).
KEY=$T/pair.key
"$BIN/remusctl" keygen "$KEY" > /dev/null || { echo "cannot make a pair key" >&2; exit 1; }

log() { printf '%s %s\n' "$(date +%T.%3N)" "$*"; }
pass() { log "ok - $*"; }
fail() { log "not ok - $*"; FAILS=$((FAILS + 1)); }
die() { fail "$*"; exit 1; }

cleanup() {
	local p
	libvirt_cleanup
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
	# ... also while the daemons stopped (after finish had looked)
	local late_bugs=
	if [ "$FAILS" -eq 0 ]; then
		late_bugs=$(daemon_bugs)
		[ -z "$late_bugs" ] || fail "a daemon logged a bug of ours as it stopped: $late_bugs"
	fi
	if [ "$FAILS" -gt 0 ] || [ -n "${KEEP:-}" ]; then
		log "logs kept in $T (agent.log, replicator.log, */serial.log)"
		# Small logs go to the CI output so a red run explains itself.
		for f in "$T"/agent.log "$T"/replicator.log; do
			[ -f "$f" ] && { echo "--- tail of $f"; tail -n 25 "$f"; }
		done
		# A QEMU that aborted says why on its stderr (run-test-guest -D).
		for f in "$T"/*/qemu.log; do
			[ -s "$f" ] && { echo "--- tail of $f"; tail -n 12 "$f"; }
		done
		# A guest that died says why on its console (a nested VM's
		# logs vanish with it).
		for f in "$T"/*/serial.log; do
			[ -f "$f" ] && { echo "--- tail of $f"; tail -n 12 "$f" | tr -d '\r'; }
		done
	else
		rm -rf "$T"
	fi
	[ -z "$late_bugs" ] || exit 1
}
trap cleanup EXIT

# --- libvirt: each "host" is a private libvirtd (scripts/libvirt-host).
LIBVIRT_HOSTS=()

# libvirt_host NAME: start one; sets LIBVIRT_URI. Its first domain start
# probes QEMU's capabilities (seconds): done here, so timings later are a
# warm host's.
libvirt_host() {
	local dir=$T/$1-libvirt
	LIBVIRT_URI=$("$ROOT/scripts/libvirt-host" start "$dir") || die "cannot start libvirtd for $1"
	LIBVIRT_HOSTS+=("$dir")
	virsh -c "$LIBVIRT_URI" domcapabilities --virttype qemu > /dev/null ||
		die "libvirtd for $1 cannot probe QEMU"
}

# Domains outlive libvirtd: destroy them first, then stop the daemons.
libvirt_cleanup() {
	local dir uri d
	for dir in "${LIBVIRT_HOSTS[@]}"; do
		uri="qemu+unix:///system?socket=$dir/sock/libvirt-sock"
		for d in $(virsh -c "$uri" list --name 2>/dev/null); do
			virsh -c "$uri" destroy "$d" > /dev/null 2>&1
		done
		"$ROOT/scripts/libvirt-host" stop "$dir"
	done
}

# domain_gone_why URI NAME: why a domain of a libvirt_host is not running,
# for a failure message: its state and reason, and the last lines of its
# QEMU log (libvirt writes there who stopped QEMU and why).
domain_gone_why() {
	local dir=${1#*socket=}
	dir=${dir%/sock/libvirt-sock}
	printf 'state %s; QEMU log: %s' \
		"$(virsh -c "$1" domstate --reason "$2" 2>&1 | head -n 1)" \
		"$(tail -n 2 "$dir/log/qemu/$2.log" 2>/dev/null | tr '\n' ' ')"
}

# domain_state URI NAME: what virsh domstate says, or "no such domain".
domain_state() {
	virsh -c "$1" domstate "$2" 2>/dev/null | head -n 1 | grep . || echo "no such domain"
}

# domain_runs URI NAME: the domain is running within 5 s. A protected
# domain reads "paused" during each checkpoint (libvirt follows QEMU's STOP
# and RESUME events), so one look may catch it paused.
domain_runs() { wait_for 5 domain_is_running "$1" "$2"; }
domain_is_running() { [ "$(domain_state "$1" "$2")" = running ]; }

# guest_domain_xml NAME MEM_MB KERNEL_ARGS SERIAL_LOG [RAM_SOURCE]: the test
# guest as a TCG libvirt domain (scripts/guest-domain-xml); RAM_SOURCE memfd
# (default), file, or none (anonymous RAM, which the replicator must
# refuse). Extra devices XML in $DOMAIN_EXTRA_DEVICES.
guest_domain_xml() {
	"$ROOT/scripts/guest-domain-xml" "$1" "$2" "$3" "$4" --ram "${5:-memfd}" \
		--devices "${DOMAIN_EXTRA_DEVICES:-}"
}

# cloud_kernel ROOT: the newest Debian cloud kernel in ROOT/boot ("" for
# this host's), its path; nothing if there is none.
cloud_kernel() {
	find "$1/boot" -maxdepth 1 -name "vmlinuz-*-cloud-amd64" 2>/dev/null | sort -V | tail -n 1
}

# log_read_on KERNEL_VERSION: how the soft-dirty tracker reads the log on
# that kernel: PAGEMAP_SCAN from Linux 6.7 on, pagemap before.
log_read_on() {
	local major=${1%%.*} minor=${1#*.}
	minor=${minor%%[!0-9]*}
	if [ "$major" -gt 6 ] || { [ "$major" = 6 ] && [ "${minor:-0}" -ge 7 ]; }; then
		echo PAGEMAP_SCAN
	else
		echo pagemap
	fi
}

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

# start_guest NAME MEM_MB KERNEL_ARGS [RUN_TEST_GUEST_ARGS...]: boots the test
# guest, sets GUEST_PID. Further arguments go to scripts/run-test-guest
# (e.g. --net --netns NS, or -- QEMU_ARGS...). GUEST_BOOT_TIMEOUT (seconds,
# default 60) bounds the boot: a nested VM (scripts/nested-vm) needs more.
# TEST_ACCEL (tcg or kvm) and TEST_SMP (vCPUs) in the environment choose the
# guest's accelerator and vCPUs (tests/integration/test_kvm.sh).
start_guest() {
	local name=$1 mem=$2 append=$3
	shift 3
	"$ROOT/scripts/run-test-guest" --guest-dir "$GUEST" --name "$name" \
		--run-dir "$T/$name" --mem "$mem" --append "$append" --daemonize \
		${TEST_ACCEL:+--accel "$TEST_ACCEL"} ${TEST_SMP:+--smp "$TEST_SMP"} "$@" ||
		die "cannot start guest $name"
	RAM_FILES+=("/dev/shm/remus-$name.ram")
	GUEST_PID=$(cat "$T/$name/qemu.pid")
	PIDS+=("$GUEST_PID")
	wait_for "${GUEST_BOOT_TIMEOUT:-60}" grep -qa 'guest: ready' "$T/$name/serial.log" ||
		die "guest $name did not boot (see $T/$name/serial.log)"
}

# last_tick FILE: the newest "tick N" the guest printed, or -1. QEMU writes
# the console a character at a time: a last line still being written (or
# cut by a kill), "tick 22" of "tick 2214", counts as the tick after the
# last whole one.
last_tick() {
	local data whole partial n
	data=$(tr -d '\r\0' 2>/dev/null < "$1"; echo .) # the dot keeps a last newline
	data=${data%.}
	case $data in
	*$'\n'*) whole=${data%$'\n'*} partial=${data##*$'\n'} ;;
	*) whole= partial=$data ;;
	esac
	n=$(printf '%s\n' "$whole" | grep -ao '^tick [0-9]*' | tail -n 1 | cut -d' ' -f2)
	case $partial in
	t | ti | tic | tick | tick\ *) [ -n "$n" ] && n=$((n + 1)) ;;
	esac
	echo "${n:--1}"
}

# first_tick FILE: the oldest "tick N" in FILE, or -1.
first_tick() {
	local n
	n=$(tr -d '\r' < "$1" 2>/dev/null | grep -ao '^tick [0-9]*' | head -n 1 | cut -d' ' -f2)
	echo "${n:--1}"
}

# ticks_consecutive FILE: every tick is the previous one plus one. A
# last line the guest is still writing ("tick 22" of "tick 2214") is not
# a tick yet: the file is read once, and a line without its newline left out.
ticks_consecutive() {
	local data
	data=$(tr -d '\r\0' < "$1"; echo .) # the dot keeps a last newline
	data=${data%.}
	case $data in
	*$'\n') ;;
	*$'\n'*) data=${data%$'\n'*}$'\n' ;;
	*) data= ;;
	esac
	printf '%s' "$data" | grep -ao '^tick [0-9]*' | cut -d' ' -f2 |
		awk 'NR > 1 && $1 != prev + 1 { print "gap: " prev " -> " $1; bad = 1 } { prev = $1 } END { exit bad }'
}

# event_log_hook FILE EVENTS: a notify hook at FILE that appends "EVENT
# ROLE REASON" to EVENTS for each event.
event_log_hook() {
	cat > "$1" <<EOF
#!/bin/sh
echo "\$3 \$4 \${REMUS_REASON:-}" >> '$2'
EOF
	chmod 755 "$1"
}

# killing_fence FILE PIDS RAN: a fence command at FILE that does what a real
# one does to the primary's host: the processes whose pids PIDS holds are
# SIGKILLed, and its arguments are appended to RAN.
killing_fence() {
	cat > "$1" <<EOF
#!/bin/sh
echo "\$*" >> '$3'
kill -KILL \$(cat '$2')
EOF
	chmod 755 "$1"
}

start_agent() {
	local port=$1 dir=$2
	shift 2
	"$BIN/remus-agent" --listen "127.0.0.1:$port" --state-dir "$dir" --key-file "$KEY" "$@" \
		>> "$T/agent.log" 2>&1 &
	AGENT_PID=$!
	PIDS+=("$AGENT_PID")
}

# TEST_TRACKER=KIND (environment) runs the replicators of a test with
# --tracker KIND (tests/integration/test_softdirty_failover.sh).
start_replicator() {
	local qmp=$1 port=$2
	shift 2
	"$BIN/remus-replicator" --qmp "$qmp" --backup "127.0.0.1:$port" --key-file "$KEY" \
		--control "$T/ctl.sock" ${TEST_TRACKER:+--tracker "$TEST_TRACKER"} "$@" \
		>> "$T/replicator.log" 2>&1 &
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

# process_gone PID: the process has exited (possibly a zombie its parent
# has not reaped yet).
process_gone() { ! kill -0 "$1" 2>/dev/null || [ "$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null)" = Z ]; }

# --- Network tests: the topology of scripts/testnet, in namespaces of their
# own. Every daemon, QEMU and client runs inside one of them.

# testnet_up: builds the topology for this test (PREFIX from the shell's pid),
# sets the variables of `scripts/testnet env` (CLI_NS, PRI_NS, BAK_NS, VM_IP,
# ...) and removes it at exit, after cleanup has stopped the processes.
testnet_up() {
	local prefix
	prefix=$(printf 'r%05d' $(( $$ % 100000 )))
	"$ROOT/scripts/testnet" up "$prefix" || die "scripts/testnet up $prefix failed"
	eval "$("$ROOT/scripts/testnet" env "$prefix")"
	trap 'cleanup; testnet_down' EXIT
	# Namespaces outlive the test: make a signal (run-all's timeout) exit
	# through the EXIT trap too.
	trap 'exit 143' TERM
	trap 'exit 130' INT
}

testnet_down() {
	[ -n "${TESTNET_PREFIX:-}" ] || return 0
	# Processes killed by cleanup may take a moment to go.
	wait_for 3 testnet_empty
	"$ROOT/scripts/testnet" down "$TESTNET_PREFIX"
	TESTNET_PREFIX=
}

testnet_empty() {
	local ns
	for ns in "$LAN_NS" "$CLI_NS" "$PRI_NS" "$BAK_NS"; do
		[ -z "$(ip netns pids "$ns" 2>/dev/null)" ] || return 1
	done
}

# start_agent_in NS ADDR:PORT STATE_DIR [ARGS...]: remus-agent inside NS.
start_agent_in() {
	local ns=$1 listen=$2 dir=$3
	shift 3
	"$ROOT/scripts/in-netns" "$ns" "$BIN/remus-agent" --listen "$listen" --state-dir "$dir" \
		--key-file "$KEY" "$@" \
		>> "$T/agent.log" 2>&1 &
	AGENT_PID=$!
	PIDS+=("$AGENT_PID")
}

# start_replicator_in NS QMP ADDR:PORT [ARGS...]: remus-replicator inside NS,
# control socket $T/ctl.sock (status_field works from here).
start_replicator_in() {
	local ns=$1 qmp=$2 backup=$3
	shift 3
	"$ROOT/scripts/in-netns" "$ns" "$BIN/remus-replicator" --qmp "$qmp" --backup "$backup" \
		--key-file "$KEY" --control "$T/ctl.sock" "$@" >> "$T/replicator.log" 2>&1 &
	REPLICATOR_PID=$!
	PIDS+=("$REPLICATOR_PID")
}

# start_client NS NAME HOST PORT [ARGS...]: counter_client.py inside NS, in
# the background; results in $T/NAME.json, progress in $T/NAME.progress,
# output in $T/NAME.log. Sets CLIENT_PID.
start_client() {
	local ns=$1 name=$2 host=$3 port=$4
	shift 4
	rm -f "$T/$name.json" "$T/$name.progress"
	"$ROOT/scripts/in-netns" "$ns" python3 "$ROOT/tests/integration/counter_client.py" "$host" "$port" \
		--out "$T/$name.json" --progress "$T/$name.progress" "$@" > "$T/$name.log" 2>&1 &
	CLIENT_PID=$!
	PIDS+=("$CLIENT_PID")
}

# client_replies NAME: replies the client has received so far (0 if none).
client_replies() {
	local n=0
	[ -f "$T/$1.progress" ] && read -r n _ < "$T/$1.progress"
	echo "${n:-0}"
}

# client_last_reply_ms NAME: when the newest reply came (unix ms; 0 if none).
client_last_reply_ms() {
	local t=0
	[ -f "$T/$1.progress" ] && read -r _ _ t < "$T/$1.progress"
	echo "${t:-0}"
}

# ocf_ra HOST ACTION: the resource agent (scripts/ocf/remus) as Pacemaker
# would run it on HOST of the pair $T/pair.conf: instance vm1-HOST, its
# runtime files in $T/rsc-HOST, control socket $T/HOST.ctl, daemon log
# $T/HOST.log.
ocf_ra() {
	env OCF_ROOT=/usr/lib/ocf OCF_RESOURCE_INSTANCE="vm1-$1" HA_RSCTMP="$T/rsc-$1" \
		OCF_RESKEY_config="$T/pair.conf" OCF_RESKEY_host="$1" OCF_RESKEY_control="$T/$1.ctl" \
		OCF_RESKEY_sbindir="$BIN" OCF_RESKEY_remusctl="$BIN/remusctl" \
		OCF_RESKEY_log="$T/$1.log" "$ROOT/scripts/ocf/remus" "$2"
}

# json_field FILE KEY: one value from a JSON object (JSON text for lists,
# objects and null).
json_field() {
	python3 -c '
import json, sys
v = json.load(open(sys.argv[1]))[sys.argv[2]]
print(v if isinstance(v, (str, int, float)) and not isinstance(v, bool) else json.dumps(v))' "$1" "$2"
}

now_ms() { echo $(( $(date +%s%N) / 1000000 )); }

# A state machine refusing a transition (prot_set, agent_set_state)
# logs "BUG:": the daemon did something its table says it cannot.
# test_failover_passes WHAT: remusctl test-failover on the agent at
# $T/agent.ctl while the replicator at $T/ctl.sock protects the VM (report
# in $T/tf.json): it passes, the clone's guest ran, its one disk read 4096
# bytes through the restored graph, and checkpoints went on meanwhile.
test_failover_passes() {
	local what=$1 rc before after
	before=$(status_field epochs_committed)
	"$BIN/remusctl" --control "$T/agent.ctl" --json test-failover > "$T/tf.json" 2> "$T/tf.err"
	rc=$?
	log "test-failover (exit $rc): $(cat "$T/tf.json" "$T/tf.err")"
	after=$(status_field epochs_committed)
	[ "$rc" = 0 ] && [ "$(json_field "$T/tf.json" ok)" = true ] &&
		pass "test-failover of $what passes: the clone ran" || fail "test-failover exits $rc"
	[ "$(json_field "$T/tf.json" guest_alive)" = true ] &&
		pass "the clone's guest ran ($(json_field "$T/tf.json" guest_alive_detail))" ||
		fail "the clone's guest did not run"
	[ "$(json_field "$T/tf.json" disks)" = 1 ] &&
		json_field "$T/tf.json" disks_detail | grep -q "^1 of 1 disk(s) read 4096 bytes" &&
		pass "the clone's disk read ($(json_field "$T/tf.json" disks_detail))" ||
		fail "disks: $(json_field "$T/tf.json" disks) ($(json_field "$T/tf.json" disks_detail))"
	[ "${after:-0}" -gt "${before:-0}" ] && [ "$(status_field protection)" = protected ] &&
		pass "protection went on meanwhile (epochs $before -> $after committed)" ||
		fail "epochs $before -> $after, protection $(status_field protection)"
}

daemon_bugs() {
	grep -rh --include='*.log' 'error: BUG:' "$T" 2>/dev/null | head -n 3
}

finish() {
	local bugs
	bugs=$(daemon_bugs)
	[ -z "$bugs" ] || fail "a daemon logged a bug of ours: $bugs"
	if [ "$FAILS" -eq 0 ]; then
		log "PASS $(basename "$0")"
		exit 0
	fi
	log "FAIL $(basename "$0"): $FAILS check(s) failed"
	exit 1
}
