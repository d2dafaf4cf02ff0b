#!/bin/bash
# Replicate a libvirt-managed TCG domain and fail it over to a libvirt
# domain of the same name on the backup: two private libvirtds stand in for
# the two hosts. The replicator attaches with --domain (QMP through
# libvirt's passthrough), QEMU is SIGKILLed, and the agent restores into
# the backup's libvirt; the serial counter goes on, without a reboot.
# Also: a domain with private RAM, or with a NIC the net buffer cannot
# own, is refused with the XML to change.
. "$(dirname "$0")/lib.sh"

command -v libvirtd > /dev/null || die "libvirtd is not installed (scripts/install-deps)"
NAME=remus-lvfo-$$
libvirt_host pri; PRI_URI=$LIBVIRT_URI
libvirt_host bak; BAK_URI=$LIBVIRT_URI

# --- refusals, on a real, booted domain each. 128 MiB, not less: the test
# kernel cannot even decompress in 64 MiB (it resets at once, and libvirt,
# told <on_reboot>destroy</on_reboot>, kills such a domain within a second
# or two: a refusal check then raced its death and lost under host load).
refused() { # NAME RAM_SOURCE EXPECTED_TEXT
	local out
	guest_domain_xml "$1" 128 "" "$T/$1.serial" "$2" > "$T/$1.xml"
	virsh -c "$PRI_URI" create "$T/$1.xml" > /dev/null || die "cannot start domain $1"
	wait_for 60 grep -qa 'guest: ready' "$T/$1.serial" ||
		die "domain $1 did not boot: $(domain_gone_why "$PRI_URI" "$1")"
	out=$(timeout 20 "$BIN/remus-replicator" --key-file "$KEY" --connect "$PRI_URI" --domain "$1" \
		--backup 127.0.0.1:9 2>&1)
	EXIT_CODE=$?
	# A refused domain is left alone: never stopped, paused or destroyed.
	domain_is_running "$PRI_URI" "$1" &&
		pass "$1 still runs after the refusal" ||
		fail "$1 is not running after the refusal: $(domain_gone_why "$PRI_URI" "$1")"
	virsh -c "$PRI_URI" destroy "$1" > /dev/null
	if [ "$EXIT_CODE" = 2 ] && grep -qF "$3" <<< "$out"; then
		pass "refused $1 (exit 2) showing $3"
	else
		fail "$1: exit $EXIT_CODE, expected 2 and '$3' in: $out"
	fi
}
refused "$NAME-anon" none "<access mode='shared'/>"
DOMAIN_EXTRA_DEVICES="<interface type='user'><mac address='52:54:00:aa:bb:01'/><model type='virtio'/></interface>" \
	refused "$NAME-usernet" memfd "<interface type='udp'>"

# --- replicate and fail over, with a virtio disk the guest checks
truncate -s 64M "$T/disk0.img"
DOMAIN_EXTRA_DEVICES="<disk type='file' device='disk'><driver name='qemu' type='raw'/><source file='$T/disk0.img'/><target dev='vda' bus='virtio'/></disk>" \
	guest_domain_xml "$NAME" 128 "dirty_mb_s=20 disk_check=1" "$T/primary-serial.log" memfd > "$T/domain.xml"
virsh -c "$PRI_URI" create "$T/domain.xml" > /dev/null || die "cannot start domain $NAME"
wait_for 60 grep -qa 'guest: ready' "$T/primary-serial.log" || die "domain $NAME did not boot"

PORT=$(free_port)
start_agent "$PORT" "$T/backup" --connect "$BAK_URI" --control "$T/agent.ctl"
"$BIN/remus-replicator" --key-file "$KEY" --connect "$PRI_URI" --domain "$NAME" --backup "127.0.0.1:$PORT" \
	--control "$T/ctl.sock" --epoch-policy fixed --epoch-ms 50 >> "$T/replicator.log" 2>&1 &
REPLICATOR_PID=$!
PIDS+=("$REPLICATOR_PID")
wait_for 90 committed_at_least 50 || die "fewer than 50 epochs committed in 90 s"
pass "replicating through libvirt: $(status_field epochs_committed) epochs, pause p50 $(status_field pause_p50_ms) ms p99 $(status_field pause_p99_ms) ms"
grep -q 'through libvirt' "$T/replicator.log" && pass "attached through libvirt" ||
	fail "replicator log does not say it attached through libvirt"

# --- test-failover: a clone of the replica runs as a transient domain of
# its own name in the backup's libvirt, cut off, and is destroyed; the
# pair stays protected and keeps committing meanwhile.
test_failover_passes "a libvirt replica"
vm_uuid=$(virsh -c "$PRI_URI" domuuid "$NAME" | head -n 1)
clone_uuid=$(json_field "$T/tf.json" uuid)
[ "$(json_field "$T/tf.json" domain)" = "$NAME-test-failover" ] && [ -n "$clone_uuid" ] &&
	[ "$clone_uuid" != "$vm_uuid" ] &&
	pass "the clone ran as domain $NAME-test-failover, UUID $clone_uuid (the VM's: $vm_uuid)" ||
	fail "the clone's identity: domain $(json_field "$T/tf.json" domain), UUID $clone_uuid, the VM's $vm_uuid"
[ -z "$(virsh -c "$BAK_URI" list --all --name | grep -x -- "$NAME-test-failover")" ] &&
	! virsh -c "$BAK_URI" dominfo "$NAME" > /dev/null 2>&1 &&
	pass "the clone is gone, defined nowhere, and the VM's name is free on the backup" ||
	fail "the backup's libvirt still knows the clone or the VM: $(virsh -c "$BAK_URI" list --all --name)"
# ... and a test that dies (its process killed, as at its deadline) leaves
# no clone: libvirt destroys the domain with the connection that made it.
"$BIN/remusctl" --control "$T/agent.ctl" --json test-failover > "$T/tf2.json" 2>&1 &
TF_PID=$!
PIDS+=("$TF_PID")
clone_runs() { virsh -c "$BAK_URI" list --name | grep -qx -- "$NAME-test-failover"; }
if wait_for 60 clone_runs; then
	tf_child=$(ps -o pid= --ppid "$AGENT_PID" | head -n 1 | tr -d ' ')
	[ -n "$tf_child" ] && kill -KILL "$tf_child"
	wait_exit "$TF_PID" 30
	grep -q "without a report" "$T/tf2.json" &&
		pass "a test killed with its clone running fails: $(cut -c1-100 "$T/tf2.json")" ||
		fail "the killed test's answer: $(cat "$T/tf2.json")"
	wait_for 20 sh -c "! virsh -c '$BAK_URI' list --all --name | grep -qx -- '$NAME-test-failover'" &&
		pass "libvirt destroyed the killed test's clone" ||
		fail "the killed test's clone is left: $(virsh -c "$BAK_URI" list --all --name)"
else
	fail "the second test's clone never ran: $(cat "$T/tf2.json")"
fi

qemu_pid=$(sed -n 's/.*through libvirt: QEMU pid \([0-9]*\).*/\1/p' "$T/replicator.log" | head -n 1)
[ -n "$qemu_pid" ] || die "no QEMU pid in the replicator's log"
# a tick survives once a checkpoint after it has committed: two more
seen=$(last_tick "$T/primary-serial.log")
n=$(status_field epochs_committed)
wait_for 30 committed_at_least $((n + 2)) || die "no commits after epoch $n in 30 s"
kill -KILL "$qemu_pid"
last=$(last_tick "$T/primary-serial.log")
log "primary QEMU $qemu_pid killed; primary printed tick $last last (tick $seen seen two commits before)"

wait_exit "$REPLICATOR_PID" 10 || fail "replicator did not exit after QEMU died"
[ "${EXIT_CODE:-}" = 1 ] && pass "replicator saw the primary die (exit 1)" ||
	fail "replicator exit code ${EXIT_CODE:-none}, expected 1"
wait_exit "$AGENT_PID" 30 || die "agent did not fail over within 30 s"
[ "$EXIT_CODE" = 0 ] && pass "agent restored the VM (exit 0)" || fail "agent exit code $EXIT_CODE"
grep -a 'restored from epoch' "$T/agent.log" | tail -n 1

domain_is_running "$BAK_URI" "$NAME" &&
	pass "domain $NAME runs in the backup's libvirt" || fail "domain $NAME is not running on the backup"
virsh -c "$BAK_URI" dominfo "$NAME" | grep -q '^Persistent: *yes' &&
	pass "and is defined there (persistent)" || fail "restored domain is not persistent"
restored=$T/backup/serial.log
wait_for 30 sh -c "[ \$(tr -d '\r' < '$restored' | grep -c '^tick') -ge 10 ]" ||
	die "restored VM printed fewer than 10 ticks in 30 s"
first=$(first_tick "$restored")
[ "$first" -ge "$seen" ] && pass "counter continues: restored at tick $first >= $seen seen before the kill" ||
	fail "counter went back: restored at tick $first, but tick $seen was seen before the kill"
[ "$first" -le $((last + 1)) ] && pass "no ticks skipped: restored at $first, primary's last $last" ||
	fail "restored tick $first is beyond the primary's last tick $last + 1"
gaps=$(ticks_consecutive "$restored") && pass "restored ticks are consecutive" || fail "restored ticks: $gaps"
grep -qa 'guest: ready' "$restored" && fail "the restored guest booted again" ||
	pass "restored guest did not reboot"
grep -q 'disk .* is replicated' "$T/replicator.log" && pass "the domain's disk was replicated" ||
	fail "the replicator did not replicate the domain's disk"
wait_for 10 grep -qa 'disk: ok' "$restored" && ! grep -qa 'disk: MISMATCH' "$restored" &&
	pass "restored domain: its disk matches its memory ($(grep -a 'disk: ok' "$restored" | tail -n 1))" ||
	fail "restored domain: disk check $(grep -a -m1 'disk: MISMATCH' "$restored" || echo 'not running')"
virsh -c "$BAK_URI" dumpxml "$NAME" | grep -q "disk-0.qcow2" &&
	pass "restored domain runs on an overlay over the replica disk" ||
	fail "restored domain's disk is not the overlay"

# --- the block graph check (backup-agent/restore_verify.c): the restore
# above verified the overlay. With the test hook
# REMUS_TEST_RESTORE_OVERLAY_AS_RAW=1 the overlay is opened as raw: a restore
# by hand is then refused before the guest runs, the domain destroyed, the
# replica kept; without the hook the same replica comes back.
# (the failover's restore, not the test-failover clone's before it)
grep -v "/test-failover/" "$T/agent.log" | grep -q "disk '[^']*' block graph verified" &&
	pass "agent log: $(grep -v "/test-failover/" "$T/agent.log" |
		grep -m1 -o "disk '[^']*' block graph verified: qcow2 overlay [^ ]*")" ||
	fail "the agent did not verify the restored domain's block graph"
virsh -c "$BAK_URI" destroy "$NAME" > /dev/null && virsh -c "$BAK_URI" undefine "$NAME" > /dev/null ||
	fail "cannot remove the restored domain"
replica_sum=$(sha256sum < "$T/backup/disk-0.img")
env REMUS_TEST_RESTORE_OVERLAY_AS_RAW=1 "$BIN/remus-agent" --key-file "$KEY" --restore \
	--state-dir "$T/backup" --connect "$BAK_URI" > "$T/restore-hook.log" 2>&1
rc=$?
[ "$rc" != 0 ] && grep -q 'block graph check failed' "$T/restore-hook.log" &&
	pass "overlay opened as raw: restore refused (exit $rc), $(grep -m1 -o 'block graph check failed.*' \
		"$T/restore-hook.log" | cut -c1-120)" ||
	fail "overlay opened as raw: exit $rc, $(tail -n 2 "$T/restore-hook.log")"
! domain_is_running "$BAK_URI" "$NAME" &&
	pass "the refused domain is not running" || fail "the refused domain runs"
[ "$(sha256sum < "$T/backup/disk-0.img")" = "$replica_sum" ] &&
	pass "the replica disk is unchanged by the refused restore" || fail "the replica disk changed"
"$BIN/remus-agent" --key-file "$KEY" --restore --state-dir "$T/backup" --connect "$BAK_URI" \
	> "$T/restore.log" 2>&1 && grep -q "disk '[^']*' block graph verified" "$T/restore.log" &&
	pass "without the hook the replica is restored again, block graph verified" ||
	fail "restore by hand without the hook: $(tail -n 2 "$T/restore.log")"

# --- the restored domain is a primary in turn; then its libvirtd dies:
# no checkpoint can be taken any more, so the replicator detaches (exit 3,
# output released, the backup told not to take over) and the VM runs on.
PORT2=$(free_port)
"$BIN/remus-agent" --key-file "$KEY" --listen "127.0.0.1:$PORT2" --state-dir "$T/backup2" --no-fence \
	>> "$T/agent2.log" 2>&1 &
AGENT2_PID=$!
PIDS+=("$AGENT2_PID")
"$BIN/remus-replicator" --key-file "$KEY" --connect "$BAK_URI" --domain "$NAME" --backup "127.0.0.1:$PORT2" \
	--control "$T/ctl2.sock" >> "$T/replicator2.log" 2>&1 &
REPLICATOR2_PID=$!
PIDS+=("$REPLICATOR2_PID")
wait_for 60 grep -q 'is protected' "$T/replicator2.log" &&
	pass "the restored domain is protected in turn (its overlay disk replicated too)" ||
	die "the restored domain could not be replicated: $(tail -n 3 "$T/replicator2.log")"
restored_pid=$(sed -n 's/.*through libvirt: QEMU pid \([0-9]*\).*/\1/p' "$T/replicator2.log" | head -n 1)
"$ROOT/scripts/libvirt-host" stop "$T/bak-libvirt"
wait_exit "$REPLICATOR2_PID" 15 || fail "the replicator did not notice that libvirtd died"
[ "${EXIT_CODE:-}" = 3 ] && pass "libvirtd died: the replicator detached (exit 3)" ||
	fail "replicator exit ${EXIT_CODE:-none} after libvirtd died, expected 3"
wait_for 10 grep -q 'detached on purpose' "$T/agent2.log" &&
	pass "and told its backup not to take over" || fail "the backup was not told: $(tail -n 2 "$T/agent2.log")"
kill -0 "$restored_pid" 2>/dev/null && pass "the VM runs on without libvirtd" ||
	fail "the VM died with libvirtd"
[ -n "$restored_pid" ] && kill -KILL "$restored_pid" 2>/dev/null
finish
