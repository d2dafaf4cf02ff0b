#!/bin/bash
# The operator's failover drill (scripts/failover-drill), end to end: a kill
# of the primary QEMU, a cut replication link where the agent must fence
# the still-running primary before it takes over, and a kill of a libvirt
# domain's QEMU. Each run builds its own
# namespaces (prefix dt + this shell's pid) and must remove them.
. "$(dirname "$0")/lib.sh"

PREFIX=dt$(( $$ % 10000 ))

# drill NAME KILL [ARGS...]: run the drill, its JSON report in $T/NAME.json;
# sets DRILL_RC.
drill() {
	local mode=$1 kill=$2
	shift 2
	log "failover-drill --kill $kill $* (namespaces $PREFIX-*)"
	"$ROOT/scripts/failover-drill" --kill "$kill" --json --prefix "$PREFIX" --duration 6 "$@" \
		> "$T/$mode.json" 2> "$T/$mode.err"
	DRILL_RC=$?
	if [ -s "$T/$mode.json" ]; then
		log "report: $(cat "$T/$mode.json")"
	else
		log "no report; the drill said:"
		tail -n 20 "$T/$mode.err"
	fi
}

# check MODE PYTHON-EXPRESSION DESCRIPTION: the expression over the report r.
# A failure names the report's values the expression read: CI keeps only
# the end of the log.
check() {
	local mode=$1 expr=$2 what=$3 seen
	if python3 -c "
import json, sys
r = json.load(open(sys.argv[1]))
sys.exit(0 if ($expr) else 1)" "$T/$mode.json" 2>/dev/null; then
		pass "$mode: $what"
	else
		seen=$(python3 -c '
import json, re, sys
try:
    r = json.load(open(sys.argv[1]))
except (OSError, ValueError) as e:
    sys.exit("no report: %s" % e)
keys = dict.fromkeys(re.findall(r"r\[.(\w+).\]", sys.argv[2]))
print(", ".join("%s=%s" % (k, json.dumps(r.get(k))) for k in keys))' "$T/$mode.json" "$expr" 2>&1)
		fail "$mode: $what ($expr; seen: $seen)"
	fi
}

# Nothing of the drill may be left behind.
check_clean() {
	local left
	left=$(ip netns list | grep -E "^$PREFIX-" || true)
	[ -z "$left" ] && pass "$1: the drill removed its namespaces" ||
		fail "$1: namespaces left behind: $left"
	[ ! -e "/dev/shm/remus-drill-$PREFIX.ram" ] && pass "$1: the drill removed the guest's RAM file" ||
		fail "$1: /dev/shm/remus-drill-$PREFIX.ram left behind"
}

common_checks() {
	local mode=$1
	[ "$DRILL_RC" = 0 ] && pass "$mode: the drill exits 0" || fail "$mode: the drill exits $DRILL_RC"
	check "$mode" 'r["ok"] is True and r["vm_restored"] is True' "the VM came back on the backup"
	check "$mode" 'r["continuity_ok"] is True and r["continuity_problems"] == []' \
		"counter continuity across the failover"
	check "$mode" 'r["requests_before_kill"] >= 50 and r["requests_after_kill"] >= 10' \
		"the client was answered before and after the kill"
	check "$mode" 'r["probe_counter"] == r["counter_last"] + 1' \
		"a new connection gets the next number"
	check "$mode" 'r["serial_ticks_ok"] is True and r["vm_rebooted"] is False' \
		"the console's tick counter goes on, no reboot"
	check "$mode" 'isinstance(r["restore_ms"], int) and 0 < r["restore_ms"] < 30000' \
		"restore_ms is plausible"
	check "$mode" 'isinstance(r["epochs_committed"], int) and r["epochs_committed"] >= 10' \
		"epochs were committed before the kill"
	check "$mode" 'r["failover_ms"] >= r["detection_ms"] + r["restore_ms"] - 50' \
		"failover_ms covers detection and restore"
	check "$mode" '[e["event"] for e in r["events"] if e["event"] in ("fencing", "master")] == ["fencing", "master"]' \
		"the notify hook saw fencing, then master"
	check_clean "$mode"
}

# 1. The primary QEMU dies: the agent sees the connection close at once.
drill qemu qemu
common_checks qemu
check qemu 'isinstance(r["detection_ms"], int) and 0 <= r["detection_ms"] < 3000' \
	"detection_ms is plausible for a closed connection"
check qemu 'r["outage_ms"] is not None and r["outage_ms"] < 15000' "the outage is below 15 s"
check qemu 'r["fence_ran"] and r["fence_ok"]' "the fence command ran (the QEMU was already dead)"

# 2. Only the replication link is cut: the primary lives on and must be
# fenced (its QEMU killed by the drill's fence command) before the backup
# takes over; its output stays held meanwhile, so continuity holds.
drill link link
common_checks link
check link 'isinstance(r["detection_ms"], int) and 1500 <= r["detection_ms"] < 10000' \
	"detection_ms is about the agent's 2 s heartbeat timeout"
check link 'r["fence_ran"] and r["fence_ok"] and isinstance(r["fence_ms"], int)' \
	"the agent fenced the live primary before restoring"
check link '[e["event"] for e in r["events"] if e["event"] in ("fence-done", "master")] == ["fence-done", "master"]' \
	"the fence finished before the VM was restored"
check link 'r["outage_ms"] is not None and r["outage_ms"] < 30000' "the outage is below 30 s"

# 3. The same as 1 with libvirt on both hosts: the replicator attaches to a
# domain, its NIC a UDP socket the net buffer owns; the agent restores it
# into the backup's libvirt, on the backup's TAP.
drill libvirt qemu --libvirt
common_checks libvirt
check libvirt 'r["outage_ms"] is not None and r["outage_ms"] < 15000' "the outage is below 15 s"
finish
