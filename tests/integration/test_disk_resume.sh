#!/bin/bash
# Resuming the disks after an agent restart (issue #19, "Delta resync";
# docs/PROTOCOL.md, "Resuming the disks"). The guest writes random 4 KiB
# blocks of its disk. The backup's agent is SIGKILLed and started again on
# the same state dir: its replica is the one the replicator last had
# committed, so the new session reads only the chunks written since from
# the image (the mirror goes on), not the whole disk. remusctl verify then
# compares the replica with the VM block by block: a write the resumed
# copy missed is a difference (shown once by a replicator that forgot the
# epoch in flight). Then the replicator restarts: it tracked nothing, so
# the next session compares the whole disk against the backup's hashes,
# as before; and a SIGKILL of the primary fails over onto a replica whose
# disk and memory are in step. Then the same on XFS, where the backup
# clones its replica instead of copying it (skipped without xfsprogs or a
# loop device). Last, a qcow2 image, which the replicator cannot read as
# the guest sees it: no resume, a full copy.
. "$(dirname "$0")/lib.sh"

PORT=$(free_port)
DISK_MB=64

start_guest rsm 128 "disk_check=1 disk_write_mb_s=1" --disk "$T/rsm.img"
RAM_FILES+=("$T/rsm.img")
start_agent "$PORT" "$T/backup" --no-fence
start_replicator "$T/rsm/qmp.sock" "$PORT"
wait_for 90 committed_at_least 5 || die "fewer than 5 epochs committed in 90 s"
grep -q 'disks: mirroring 1 disk' "$T/replicator.log" &&
	pass "the first session copies the disk in full" || fail "no full copy logged"

# resumed_sessions: how many sessions the replicator resumed so far.
resumed_sessions() { grep -c 'disks: resuming the backup' "$T/replicator.log"; }
# protected_again N: the N-th session since the start committed an epoch.
protected_again() {
	[ "$(grep -c 'initial sync acknowledged' "$T/replicator.log")" -ge "$1" ] &&
		[ "$(status_field protection)" = protected ]
}

kill -KILL "$AGENT_PID"
wait_exit "$AGENT_PID" 5
log "agent SIGKILLed; the guest writes on for 3 s"
sleep 3
start_agent "$PORT" "$T/backup" --no-fence
wait_for 60 protected_again 2 || die "not protected again within 60 s of the agent's restart"
[ "$(resumed_sessions)" = 1 ] && pass "the second session resumed: $(grep -m1 'disks: resuming' "$T/replicator.log" | sed 's/.*disks: //')" ||
	fail "the second session did not resume the disk"
grep -q 'disk resume: this replica is the one the primary committed' "$T/agent.log" &&
	pass "the agent accepted its replica as the resumed one" ||
	fail "the agent did not say it resumes"
read_bytes=$("$BIN/remusctl" --control "$T/ctl.sock" status --json |
	python3 -c "import json,sys; print(json.load(sys.stdin)['disks'][0]['resume_read_bytes'])")
[ "${read_bytes:-0}" -gt 0 ] && [ "$read_bytes" -lt $(( (DISK_MB << 20) / 4 )) ] &&
	pass "the resumed copy read $read_bytes bytes of the ${DISK_MB} MiB image" ||
	fail "the resumed copy read ${read_bytes:-?} bytes (expected some, under a quarter of the disk)"
grep -q 'mirroring 1 disk' <(sed -n '/disks: resuming/,$p' "$T/replicator.log") &&
	fail "the mirror was restarted in the resumed session" ||
	pass "the mirror went on: no second full copy"

# The replica against the VM, block by block, at a common epoch.
wait_for 30 committed_at_least $(( $(status_field epochs_committed) + 3 )) ||
	die "no commits after the resume"
"$BIN/remusctl" --control "$T/ctl.sock" --json verify > "$T/verify.json" 2> "$T/verify.err"
log "verify: $(cat "$T/verify.json" "$T/verify.err")"
[ "$(json_field "$T/verify.json" disks_checked)" = 1 ] &&
	[ "$(json_field "$T/verify.json" disk_blocks_checked)" = $(( (DISK_MB << 20) / 4096 )) ] &&
	pass "verify compared the whole disk" ||
	fail "verify compared $(json_field "$T/verify.json" disks_checked) disk(s), $(json_field "$T/verify.json" disk_blocks_checked) blocks"
[ "$(json_field "$T/verify.json" disk_blocks_differ)" = 0 ] &&
	pass "verify: no disk block of the replica differs from the VM's" ||
	fail "verify: $(json_field "$T/verify.json" disk_blocks_differ) disk block(s) differ after the resumed copy"
[ "$(json_field "$T/verify.json" pages_differ)" = 0 ] &&
	pass "verify: no page differs" || fail "verify: $(json_field "$T/verify.json" pages_differ) page(s) differ"

# A new replicator tracked nothing: it offers no resume, and the backup's
# hashes decide what goes (the disk is read whole once more).
kill -TERM "$REPLICATOR_PID"
wait_exit "$REPLICATOR_PID" 20 || die "the replicator did not stop"
sessions=$(grep -c 'initial sync acknowledged' "$T/replicator.log")
lines=$(wc -l < "$T/replicator.log")
start_replicator "$T/rsm/qmp.sock" "$PORT"
wait_for 60 protected_again $((sessions + 1)) || die "the new replicator did not protect the VM"
since_restart() { tail -n +"$((lines + 1))" "$T/replicator.log"; }
! since_restart | grep -q 'disks: resuming' && since_restart | grep -q 'disks: mirroring 1 disk' &&
	since_restart | grep -q 'delta resync: disk .* went to the backup' &&
	pass "a new replicator copies the disk again, against the backup's hashes" ||
	fail "a new replicator: no full copy against the backup's hashes logged"

# Failover onto a replica that has seen a resumed session: disk and memory
# in step. Kill the agent again, so that the failover's replica is a
# resumed one, then the primary.
kill -KILL "$AGENT_PID"
wait_exit "$AGENT_PID" 5
sleep 2
start_agent "$PORT" "$T/backup" --no-fence
wait_for 60 protected_again $((sessions + 2)) || die "not protected again after the second agent restart"
[ "$(resumed_sessions)" = 2 ] && pass "the new replicator's next session resumed" ||
	fail "the new replicator's next session did not resume"
n=$(status_field epochs_committed)
wait_for 20 committed_at_least $((n + 2)) || die "no commits after the second resume"
kill -KILL "$GUEST_PID"
log "primary QEMU killed (tick $(last_tick "$T/rsm/serial.log"))"
wait_exit "$AGENT_PID" 30 || die "the agent did not fail over within 30 s"
[ "$EXIT_CODE" = 0 ] || die "agent exit code $EXIT_CODE"
RESTORED=$T/backup/serial.log
wait_for 20 sh -c "grep -qa 'disk: ok\|disk: MISMATCH' '$RESTORED'" || fail "the restored VM checks no disk"
sleep 1.5
grep -qa 'disk: MISMATCH' "$RESTORED" && fail "restored VM: $(grep -a -m1 'disk: MISMATCH' "$RESTORED")" ||
	pass "restored VM: its disk matches its memory"
grep -qa 'guest: ready' "$RESTORED" && fail "the restored guest booted again" ||
	pass "the restored guest did not reboot"
kill -TERM "$(cat "$T/backup/qemu.pid")" 2>/dev/null
wait_exit "$REPLICATOR_PID" 20

# On a file system with reflinks (XFS, on a loop device of the test's own)
# the backup clones the resumed replica instead of copying and hashing it;
# the VM then fails over onto it with disk and memory in step.
xfs_resume() {
	command -v mkfs.xfs > /dev/null || { log "skip - XFS: no mkfs.xfs (install xfsprogs)"; return 0; }
	# room for the agent's space check: two RAM copies, the disks, a margin
	truncate -s 2G "$T/xfs.img" && mkfs.xfs -q "$T/xfs.img" && mkdir -p "$T/xfs" ||
		{ fail "XFS: cannot make the file system"; return 0; }
	mount -o loop "$T/xfs.img" "$T/xfs" 2> "$T/mount.err" ||
		{ log "skip - XFS: no loop mount here ($(head -c 200 "$T/mount.err"))"; return 0; }
	XFS_MOUNTED=1
	PORT=$(free_port)
	: > "$T/replicator.log"
	: > "$T/agent.log"
	start_guest x3 128 "disk_check=1 disk_write_mb_s=1" --disk "$T/x3.img"
	RAM_FILES+=("$T/x3.img")
	start_agent "$PORT" "$T/xfs/backup" --no-fence
	start_replicator "$T/x3/qmp.sock" "$PORT"
	wait_for 90 committed_at_least 5 || { fail "XFS: fewer than 5 epochs committed in 90 s"; return 1; }
	kill -KILL "$AGENT_PID"
	wait_exit "$AGENT_PID" 5
	sleep 2
	start_agent "$PORT" "$T/xfs/backup" --no-fence
	wait_for 60 protected_again 2 || { fail "XFS: not protected again after the agent's restart"; return 1; }
	[ "$(resumed_sessions)" = 1 ] &&
		grep -q "disk resume: disk disk0's copy is a clone of its replica" "$T/agent.log" &&
		! grep -q 'delta resync: disk disk0 starts from its replica' "$T/agent.log" &&
		pass "XFS: resumed, and the backup cloned its replica (no copy, no hashes)" ||
		fail "XFS: $(resumed_sessions) resumed session(s); no clone logged, or the replica was hashed"
	n=$(status_field epochs_committed)
	wait_for 20 committed_at_least $((n + 2)) || { fail "XFS: no commits after the resume"; return 1; }
	kill -KILL "$GUEST_PID"
	wait_exit "$AGENT_PID" 30 && [ "$EXIT_CODE" = 0 ] ||
		{ fail "XFS: the agent did not fail over (exit ${EXIT_CODE:-?})"; return 1; }
	wait_for 20 sh -c "grep -qa 'disk: ok\|disk: MISMATCH' '$T/xfs/backup/serial.log'"
	sleep 1.5
	! grep -qa 'disk: MISMATCH\|guest: ready' "$T/xfs/backup/serial.log" &&
		grep -qa 'disk: ok' "$T/xfs/backup/serial.log" &&
		pass "XFS: the restored VM's disk matches its memory, no reboot" ||
		fail "XFS: restored VM: $(grep -a -m1 'disk: MISMATCH\|guest: ready' "$T/xfs/backup/serial.log")"
	kill -TERM "$(cat "$T/xfs/backup/qemu.pid")" 2>/dev/null
	wait_exit "$REPLICATOR_PID" 20
}
# Before lib.sh's cleanup: the restored QEMU of the XFS state dir (below
# the depth cleanup looks at), then the loop mount.
xfs_cleanup() {
	local p
	p=$(cat "$T/xfs/backup/qemu.pid" 2>/dev/null) &&
		[ "$(cat /proc/"$p"/comm 2>/dev/null)" = qemu-system-x86 ] && kill -KILL "$p"
	[ -z "$XFS_MOUNTED" ] || umount "$T/xfs" 2>/dev/null || umount -l "$T/xfs"
}
XFS_MOUNTED=
trap 'xfs_cleanup; cleanup' EXIT
REPLICATOR_PID= GUEST_PID=
# a case that failed half-way leaves its daemons: they go before the next
xfs_resume || for p in $REPLICATOR_PID $GUEST_PID $AGENT_PID; do kill -TERM "$p" 2>/dev/null; done

# A qcow2 image cannot be read here as the guest sees it: the HELLO offers
# no resume, and the reconnect copies the disk again against the backup's
# hashes, its epoch 0 ending only once the restarted mirror is ready.
PORT=$(free_port)
: > "$T/replicator.log"
start_guest q2 128 "disk_check=1 disk_write_mb_s=1" --disk "$T/q2.qcow2" --disk-form blockdev-qcow2
RAM_FILES+=("$T/q2.qcow2")
start_agent "$PORT" "$T/backup-q2" --no-fence
start_replicator "$T/q2/qmp.sock" "$PORT"
wait_for 90 committed_at_least 5 || die "qcow2: fewer than 5 epochs committed in 90 s"
kill -KILL "$AGENT_PID"
wait_exit "$AGENT_PID" 5
sleep 2
start_agent "$PORT" "$T/backup-q2" --no-fence
wait_for 60 protected_again 2 || die "qcow2: not protected again within 60 s of the agent's restart"
grep -q 'disk disk0 cannot be resumed (not a raw image in a file)' "$T/replicator.log" &&
	[ "$(resumed_sessions)" = 0 ] && pass "qcow2: no resume offered, and the replicator says why" ||
	fail "qcow2: $(resumed_sessions) resumed session(s); no reason logged"
second=$(awk '/disks: mirroring 1 disk/ { n++ } n == 2' "$T/replicator.log")
ready=$(grep -n 'disk disk0: mirror ready' <<< "$second" | head -n 1 | cut -d: -f1)
queued=$(grep -n 'initial disk copy queued' <<< "$second" | head -n 1 | cut -d: -f1)
[ -n "$ready" ] && [ -n "$queued" ] && [ "$ready" -lt "$queued" ] &&
	pass "qcow2: the second session's epoch 0 ended after its mirror was ready" ||
	fail "qcow2: the second session's copy: mirror ready at line ${ready:-none}, queued at ${queued:-none}"
finish
