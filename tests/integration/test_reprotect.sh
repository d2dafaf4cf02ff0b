#!/bin/bash
# A pair whose roles move (issue #19): one daemon per host from one config
# file with two [host] sections. scripts/failover-drill --cycles kills the
# VM's current host again and again; each time the restored VM must be
# protected again to the host it left, without a manual step, and a
# planned failback (remusctl failover) ends it, protected once more. One
# TCP connection runs through everything: its counter must never go back,
# repeat or skip, the console's ticks must go on without a reboot.
#
#   1. --cycles 3 --kill qemu --disk: A -> B -> A -> B, failback B -> A.
#      The daemon whose VM died becomes the backup by itself; the guest's
#      disk, replicated with every epoch, must agree with its memory after
#      every move, and each re-protection after the first must be a delta
#      resync of the disk too.
#   2. --cycles 1 --kill host --cold-start: the whole host dies; it comes
#      back (its daemon starts, as at boot) while the VM runs on the other
#      host: it finds no VM, starts no copy of its own and becomes the
#      backup. At the end every process of both hosts dies at once and the
#      daemons start again (the kernel does not reboot: after a real reboot
#      no replica is restored on its own): the agents ask each other, and
#      the one with the newer replica (the last backup) restores the VM;
#      the other waits and is its backup again.
#   3. --libvirt --cycles 2 --kill host --disk --cold-start: the same pair
#      with the VM a libvirt domain ([vm] domain), each host a private
#      libvirtd with its own libvirt-uri: A -> B -> A, failback A -> B,
#      then both hosts down and up. A host that comes back starts its
#      libvirtd first, which finds the domain defined (restored there
#      before) and not running: the daemon must not start it. The restored
#      domain keeps its UDP NIC for the net buffer of its new host, so the
#      one TCP connection goes on through every move. The failback is a
#      handover while the old QEMU of the domain still runs (paused) on
#      the same machine: the new one's RAM must be found in the new QEMU,
#      not by the domain's UUID, which both carry.
. "$(dirname "$0")/lib.sh"

PREFIX=rp$(( $$ % 10000 ))

# drill NAME ARGS...: run the drill, its JSON report in $T/NAME.json.
drill() {
	local name=$1
	shift
	log "failover-drill $* (namespaces $PREFIX-*)"
	"$ROOT/scripts/failover-drill" --json --prefix "$PREFIX" --duration 2 "$@" \
		> "$T/$name.json" 2> "$T/$name.err"
	DRILL_RC=$?
	if [ -s "$T/$name.json" ]; then
		log "report: $(cat "$T/$name.json")"
	else
		log "no report; the drill said:"
		tail -n 30 "$T/$name.err"
	fi
	[ "$DRILL_RC" = 0 ] && pass "$name: the drill exits 0" || {
		fail "$name: the drill exits $DRILL_RC"
		tail -n 30 "$T/$name.err"
		drill_logs "$T/$name.json"
	}
}

# drill_logs REPORT: a failed drill keeps its logs (logs_dir): show the
# ends of the hosts' daemon logs, which a fresh machine does not keep.
drill_logs() {
	local dir f
	dir=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1])).get("logs_dir") or "")' \
		"$1" 2>/dev/null)
	[ -n "$dir" ] && [ -d "$dir" ] || return 0
	for f in "$dir"/host-*.log; do
		[ -f "$f" ] || continue
		echo "--- last lines of $f"
		grep -av 'epoch [0-9]* committed$' "$f" | tail -n 40
	done
}

# check NAME PYTHON-EXPRESSION DESCRIPTION: over the report r.
check() {
	local name=$1 expr=$2 what=$3
	if python3 -c "
import json, sys
r = json.load(open(sys.argv[1]))
c = r['cycles']
sys.exit(0 if ($expr) else 1)" "$T/$name.json" 2>/dev/null; then
		pass "$name: $what"
	else
		fail "$name: $what ($expr)"
	fi
}

common_checks() {
	local name=$1 n=$2
	check "$name" "r['ok'] is True and len(c) == $n + 1" \
		"$n failovers and a failback, each protected again"
	check "$name" "[x['from'] for x in c] == (['a', 'b'] * 6)[:$n + 1]" \
		"the VM moved back and forth between the hosts"
	check "$name" "all(x['restore_ms'] and x['failover_ms'] for x in c)" \
		"each move restored the VM from a committed checkpoint"
	check "$name" "all(x['reprotected_ms'] and x['reprotected_ms'] < 120000 for x in c)" \
		"each time protected again without a manual step, within 2 min"
	# pages, not bytes: compressed checkpoints (--compress auto) make a
	# full copy of a guest with little in its RAM small on the wire too
	check "$name" "c[0]['resync_pages'] and c[0]['resync_pages'] >= (128 << 20) // 4096" \
		"the first re-protection copied all of the VM's RAM (the host it left had no replica)"
	check "$name" "all(x['resync_pages'] is not None and x['resync_pages'] < c[0]['resync_pages'] / 2 for x in c[1:])" \
		"every later one was a delta resync from the host's old replica: under half of a full copy"
	check "$name" "r['continuity_ok'] is True and r['continuity_problems'] == []" \
		"one TCP connection through it all: never back, repeated or skipped"
	check "$name" "r['probe_counter'] == r['counter_last'] + 1 and r['requests'] >= 100" \
		"a new connection afterwards gets the next number"
	check "$name" "all(x['serial_ticks_ok'] and not x['vm_rebooted'] for x in c)" \
		"the console's ticks go on at every move, no reboot"
	check "$name" "c[-1]['kind'] == 'failback' and c[-1]['outage_ms'] < 5000" \
		"the planned failback costs the client less than 5 s"
	left=$(ip netns list | grep -E "^$PREFIX-" || true)
	[ -z "$left" ] && pass "$name: the drill removed its namespaces" ||
		fail "$name: namespaces left behind: $left"
}

drill cycles --cycles 3 --kill qemu --disk
common_checks cycles 3
check cycles "all(x['disk_ok'] is True for x in c)" \
	"the replicated disk agrees with the restored memory after every move"
# the drill's disk holds 16 MiB of data; between moves only the check's
# sector changes
check cycles "c[0]['resync_disk_bytes'] is not None and c[0]['resync_disk_bytes'] >= (16 << 20)" \
	"the first re-protection sent all of the disk's data (the host it left had no replica)"
check cycles "all(x['resync_disk_bytes'] is not None and x['resync_disk_bytes'] < (1 << 20) for x in c[1:])" \
	"every later one sent only the disk chunks that differ from the host's old replica (< 1 MiB)"
check cycles "r['disk_data_ok'] is True" \
	"the last backup's replica disk holds the 16 MiB the guest never wrote, byte for byte"
check cycles "all(x['overlay_chain'] == 2 for x in c)" \
	"each restore runs on one overlay over its host's own replica: overlays never stack"
check cycles "all(x['detection_ms'] is not None and x['detection_ms'] < 5000 for x in c[:-1])" \
	"a dead QEMU is detected within 5 s each time"

drill hostback --cycles 1 --kill host --cold-start
common_checks hostback 1
check hostback "c[0]['left_host_runs_qemu'] is False" \
	"the host that came back started no copy of its own"
check hostback "c[0]['detection_ms'] is not None and 1500 <= c[0]['detection_ms'] < 10000" \
	"a dead host is detected by the heartbeat timeout"
check hostback "r['cold_start']['restored_host'] == r['cold_start']['expected_host']" \
	"both hosts down and up: the host with the newer replica restores the VM, the other waits"
check hostback "r['cold_start']['serial_ticks_ok'] and r['cold_start']['reprotected_ms'] < 120000" \
	"after the cold start the VM goes on from the newer replica, protected again"

if command -v libvirtd > /dev/null; then
	drill libvirt --libvirt --cycles 2 --kill host --disk --cold-start
	common_checks libvirt 2
	check libvirt "r['backend'] == 'libvirt'" "the VM was a libvirt domain on each host"
	check libvirt "all(x['left_host_runs_qemu'] is False for x in c[:-1])" \
		"a host that came back, its libvirt holding the domain, started no copy of its own"
	check libvirt "all(x['disk_ok'] is True for x in c)" \
		"the replicated disk agrees with the restored memory after every move"
	check libvirt "all(x['overlay_chain'] == 2 for x in c)" \
		"each restored domain runs on one overlay over its host's own replica"
	check libvirt "r['disk_data_ok'] is True" \
		"the last backup's replica disk holds the 16 MiB the guest never wrote, byte for byte"
	check libvirt "r['cold_start']['restored_host'] == r['cold_start']['expected_host'] and r['cold_start']['ok']" \
		"both hosts down and up: the newer replica is restored into its host's libvirt, protected again"
else
	fail "libvirtd is not installed (scripts/install-deps): the libvirt pair is not tested"
fi
finish
