#!/bin/bash
# A corrupt epoch on the wire is discarded, the last good replica is kept,
# and the epoch sent again commits; a replicator that detaches on purpose
# (SIGTERM) leaves the backup without failing over, and the replica it left
# restores to a running VM.
. "$(dirname "$0")/lib.sh"

PORT=$(free_port)
start_guest primary 128 "dirty_mb_s=10"
start_agent "$PORT" "$T/backup" -v
# --compress on: the epoch sent again after the NACK goes with whole pages
# (the first send's deltas may have been what was wrong) and commits.
start_replicator "$T/primary/qmp.sock" "$PORT" --epoch-policy fixed --epoch-ms 50 --test-corrupt-epoch 20 \
	--compress on
wait_for 90 committed_at_least 30 || die "fewer than 30 epochs committed in 90 s"

grep -q 'epoch 20 discarded: .*checksum mismatch; replica stays at epoch 19' "$T/agent.log" &&
	pass "corrupt epoch 20 discarded, replica kept at epoch 19" ||
	fail "agent log does not show epoch 20 discarded with the replica at 19"
awk '/epoch 20 discarded/ { d = 1 } d && /epoch 20 committed/ { c = 1 } d && c && /epoch 21 committed/ { ok = 1 } END { exit !ok }' \
	"$T/agent.log" && pass "epoch 20 sent again and committed, then epoch 21" ||
	fail "epoch 20 was not committed after the discard (or 21 did not follow)"
resent=$(status_field epochs_resent)
[ "$resent" = 1 ] && pass "replicator resent exactly one epoch" || fail "epochs_resent = $resent, expected 1"

kill -TERM "$REPLICATOR_PID"
wait_exit "$REPLICATOR_PID" 10 && [ "$EXIT_CODE" = 0 ] && pass "replicator detached on SIGTERM (exit 0)" ||
	fail "replicator did not detach cleanly (exit ${EXIT_CODE:-none})"
grep -q 'detached on purpose' "$T/agent.log" && pass "agent saw the detach" || fail "agent did not log the detach"
sleep 3
kill -0 "$AGENT_PID" 2>/dev/null && pass "agent did not fail over after a detach" || fail "agent exited after a detach"
[ -e "$T/backup/qemu.pid" ] && fail "agent started a VM after a detach" || pass "no VM started on the backup"
kill -0 "$GUEST_PID" && pass "primary VM still running after the detach" || fail "primary VM died on detach"
epoch=$(python3 -c "import json; print(json.load(open('$T/backup/vm.json'))['epoch'])")
[ "$epoch" -ge 30 ] && pass "replica holds epoch $epoch" || fail "replica epoch $epoch < 30"

# The replica left behind is good: restore it by hand while the primary
# still runs (a separate copy of RAM, its own serial log).
kill -TERM "$AGENT_PID"; wait_exit "$AGENT_PID" 10
# A replica committed before the host last started may have RAM and journal
# older than its disks (only the disks are synced at commit): refused.
python3 -c 'import json, sys
p = sys.argv[1]; v = json.load(open(p)); v["host_boot_id"] = "00000000-0000-0000-0000-000000000000"
json.dump(v, open(p, "w"))' "$T/backup/vm.json"
out=$("$BIN/remus-agent" --key-file "$KEY" --restore --state-dir "$T/backup" 2>&1)
rc=$?
[ "$rc" = 1 ] && [[ $out == *"before this host last started"*"--after-host-restart"* ]] &&
	[ ! -e "$T/backup/qemu.pid" ] &&
	pass "a replica from an earlier boot of the host is not restored (exit 1)" ||
	fail "a replica from an earlier boot: exit $rc: $out"
# The operator knows the host went down cleanly: --after-host-restart.
"$BIN/remus-agent" --key-file "$KEY" --restore --after-host-restart --state-dir "$T/backup" >> "$T/agent.log" 2>&1 &&
	pass "remus-agent --restore brought the replica up" || fail "remus-agent --restore failed"
wait_for 30 sh -c "[ \$(tr -d '\r' < '$T/backup/serial.log' | grep -c '^tick') -ge 5 ]" &&
	pass "restored replica runs (ticks from $(first_tick "$T/backup/serial.log"))" ||
	fail "restored replica prints no ticks"
grep -qa 'guest: ready' "$T/backup/serial.log" && fail "restored replica booted again" ||
	pass "restored replica did not reboot"
finish
