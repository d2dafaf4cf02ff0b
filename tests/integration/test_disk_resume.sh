#!/bin/bash
# Resuming the disks after an agent restart (issue #19, "Delta resync";
# docs/PROTOCOL.md, "Resuming the disks"). The guest writes random 4 KiB
# blocks of its disk. The backup's agent is SIGKILLed and started again on
# the same state dir: its replica is the one the replicator last had
# committed, so the new session reads only the chunks written since from
# the image (the mirror goes on), not the whole disk; the backup, on tmpfs,
# copies and hashes its replica. remusctl verify then compares the replica
# with the VM block by block: a write the resumed copy missed is a
# difference (shown once by a replicator that forgot the epochs it held).
# Then the replicator restarts: it tracked nothing, so the next session
# compares the whole disk against the backup's hashes, as before; and a
# SIGKILL of the primary fails over onto a replica whose disk and memory
# are in step. Then the same on XFS, where the backup clones its replica
# instead of copying it (skipped, saying why, without xfsprogs or a loop
# mount). Last, a qcow2 image, which the replicator cannot read as the
# guest sees it: no resume, a full copy.
. "$(dirname "$0")/lib.sh"

DISK_MB=64
# short fixed epochs: verify hashes one slice per pause, so a pass is short
EPOCHS="--epoch-policy fixed --epoch-ms 100"

# Each case reads its own part of the daemons' logs (new_case); the logs
# stay whole for lib.sh's look for bugs of ours.
R0=0 A0=0
new_case() { R0=$(wc -l < "$T/replicator.log"); A0=$(wc -l < "$T/agent.log"); }
rlog() { tail -n +"$((R0 + 1))" "$T/replicator.log"; }
alog() { tail -n +"$((A0 + 1))" "$T/agent.log"; }
# resumed_sessions: the sessions of this case that resumed the disk.
resumed_sessions() { rlog | grep -c 'disks: resuming the backup'; }
# protected_again N: N sessions of this case committed an epoch.
protected_again() {
	[ "$(rlog | grep -c 'initial sync acknowledged')" -ge "$1" ] &&
		[ "$(status_field protection)" = protected ]
}

# restart_agent DIR SECONDS: SIGKILL the agent, let the guest write on,
# start it again on the same state dir.
restart_agent() {
	kill -KILL "$AGENT_PID"
	wait_exit "$AGENT_PID" 5
	log "agent SIGKILLed; the guest writes on for $2 s"
	sleep "$2"
	start_agent "$PORT" "$1" --no-fence
}

# verify_disk NAME: after a few more commits, remusctl verify compares the
# whole disk and finds no block and no page of the replica that differs.
verify_disk() {
	local out=$T/verify-$1.json
	wait_for 30 committed_at_least $(( $(status_field epochs_committed) + 3 )) ||
		{ fail "$1: no commits after the resume"; return 1; }
	"$BIN/remusctl" --control "$T/ctl.sock" --json verify > "$out" 2> "$T/verify-$1.err"
	log "$1: verify: $(cat "$out" "$T/verify-$1.err")"
	[ "$(json_field "$out" disks_checked)" = 1 ] &&
		[ "$(json_field "$out" disk_blocks_checked)" = $(( (DISK_MB << 20) / 4096 )) ] &&
		pass "$1: verify compared the whole disk" ||
		fail "$1: verify compared $(json_field "$out" disks_checked) disk(s)," \
			"$(json_field "$out" disk_blocks_checked) blocks"
	[ "$(json_field "$out" disk_blocks_differ)" = 0 ] &&
		pass "$1: verify: no disk block of the replica differs from the VM's" ||
		fail "$1: verify: $(json_field "$out" disk_blocks_differ) disk block(s) differ"
	[ "$(json_field "$out" pages_differ)" = 0 ] && pass "$1: verify: no page differs" ||
		fail "$1: verify: $(json_field "$out" pages_differ) page(s) differ"
}

# fail_over NAME DIR: SIGKILL the primary QEMU a couple of commits on; the
# agent restores the VM from DIR, whose disk must match its memory.
fail_over() {
	local n restored=$2/serial.log
	n=$(status_field epochs_committed)
	wait_for 20 committed_at_least $((n + 2)) || { fail "$1: no commits before the kill"; return 1; }
	kill -KILL "$GUEST_PID"
	log "$1: primary QEMU killed (tick $(last_tick "$T/$1/serial.log"))"
	GUEST_PID=
	wait_exit "$AGENT_PID" 30 && [ "$EXIT_CODE" = 0 ] ||
		{ fail "$1: the agent did not fail over (exit ${EXIT_CODE:-?})"; return 1; }
	AGENT_PID=
	wait_for 20 sh -c "grep -qa 'disk: ok\|disk: MISMATCH' '$restored'"
	sleep 1.5
	grep -qa 'disk: MISMATCH' "$restored" && fail "$1: restored VM: $(grep -a -m1 'disk: MISMATCH' "$restored")" ||
		pass "$1: restored VM: its disk matches its memory"
	grep -qa 'guest: ready' "$restored" && fail "$1: the restored guest booted again" ||
		pass "$1: the restored guest did not reboot"
	kill -TERM "$(cat "$2/qemu.pid")" 2>/dev/null
	wait_exit "$REPLICATOR_PID" 20 || { fail "$1: the replicator did not stop with its QEMU"; return 1; }
	REPLICATOR_PID=
}

# --- a raw image, the backup on tmpfs -------------------------------------
PORT=$(free_port)
start_guest rsm 128 "disk_check=1 disk_write_mb_s=1" --disk "$T/rsm.img"
RAM_FILES+=("$T/rsm.img")
start_agent "$PORT" "$T/backup" --no-fence
start_replicator "$T/rsm/qmp.sock" "$PORT" $EPOCHS
wait_for 90 committed_at_least 5 || die "fewer than 5 epochs committed in 90 s"
rlog | grep -q 'disks: mirroring 1 disk' &&
	pass "the first session copies the disk in full" || fail "no full copy logged"

restart_agent "$T/backup" 3
wait_for 60 protected_again 2 || die "not protected again within 60 s of the agent's restart"
[ "$(resumed_sessions)" = 1 ] &&
	pass "the second session resumed: $(rlog | grep -m1 'disks: resuming' | sed 's/.*disks: //')" ||
	fail "the second session did not resume the disk"
alog | grep -q 'disk resume: this replica is the one the primary committed' &&
	alog | grep -q 'delta resync: disk disk0 starts from its replica; .* copied and hashed' &&
	pass "the agent resumed its replica, copied and hashed (no reflinks on tmpfs)" ||
	fail "the agent did not say it resumes a copied replica"
read_bytes=$("$BIN/remusctl" --control "$T/ctl.sock" status --json |
	python3 -c "import json,sys; print(json.load(sys.stdin)['disks'][0]['resume_read_bytes'])")
[ "${read_bytes:-0}" -gt 0 ] && [ "$read_bytes" -lt $(( (DISK_MB << 20) / 4 )) ] &&
	pass "the resumed copy read $read_bytes bytes of the ${DISK_MB} MiB image" ||
	fail "the resumed copy read ${read_bytes:-?} bytes (expected some, under a quarter of the disk)"
rlog | sed -n '/disks: resuming/,$p' | grep -q 'mirroring 1 disk' &&
	fail "the mirror was restarted in the resumed session" ||
	pass "the mirror went on: no second full copy"
verify_disk rsm

# A new replicator tracked nothing: it offers no resume, and the backup's
# hashes decide what goes (the disk is read whole once more).
kill -TERM "$REPLICATOR_PID"
wait_exit "$REPLICATOR_PID" 20 || die "the replicator did not stop"
new_case
start_replicator "$T/rsm/qmp.sock" "$PORT" $EPOCHS
wait_for 60 protected_again 1 || die "the new replicator did not protect the VM"
[ "$(resumed_sessions)" = 0 ] && rlog | grep -q 'disks: mirroring 1 disk' &&
	rlog | grep -q 'delta resync: disk .* went to the backup' &&
	pass "a new replicator copies the disk again, against the backup's hashes" ||
	fail "a new replicator: no full copy against the backup's hashes logged"

# Its next session resumes; then a failover onto that resumed replica.
restart_agent "$T/backup" 2
wait_for 60 protected_again 2 || die "not protected again after the second agent restart"
[ "$(resumed_sessions)" = 1 ] && pass "the new replicator's next session resumed" ||
	fail "the new replicator's next session did not resume"
fail_over rsm "$T/backup"

# --- XFS: the backup clones its replica ---------------------------------
# On a file system with reflinks (XFS, on a loop device of the test's own)
# the backup clones the resumed replica instead of copying and hashing it.
xfs_resume() {
	command -v mkfs.xfs > /dev/null || { log "skip - XFS: no mkfs.xfs (install xfsprogs)"; return 0; }
	# room for the agent's space check: two RAM copies, the disks, a margin
	truncate -s 2G "$T/xfs.img" && mkdir -p "$T/xfs" || { fail "XFS: no room for the image"; return 0; }
	mkfs.xfs -q -m reflink=1 "$T/xfs.img" 2> "$T/mkfs.err" ||
		{ log "skip - XFS: mkfs.xfs -m reflink=1 refused ($(head -c 200 "$T/mkfs.err"))"; return 0; }
	mount -o loop "$T/xfs.img" "$T/xfs" 2> "$T/mount.err" ||
		{ log "skip - XFS: no loop mount here ($(head -c 200 "$T/mount.err"))"; return 0; }
	XFS_MOUNTED=1
	PORT=$(free_port)
	new_case
	start_guest x3 128 "disk_check=1 disk_write_mb_s=1" --disk "$T/x3.img"
	RAM_FILES+=("$T/x3.img")
	start_agent "$PORT" "$T/xfs/backup" --no-fence
	start_replicator "$T/x3/qmp.sock" "$PORT" $EPOCHS
	wait_for 90 committed_at_least 5 || { fail "XFS: fewer than 5 epochs committed in 90 s"; return 1; }
	restart_agent "$T/xfs/backup" 2
	wait_for 60 protected_again 2 || { fail "XFS: not protected again after the agent's restart"; return 1; }
	[ "$(resumed_sessions)" = 1 ] &&
		alog | grep -q "disk resume: disk disk0's copy is a clone of its replica" &&
		! alog | grep -q 'delta resync: disk disk0 starts from its replica' &&
		pass "XFS: resumed, and the backup cloned its replica (no copy, no hashes)" ||
		fail "XFS: $(resumed_sessions) resumed session(s); no clone logged, or the replica was hashed"
	verify_disk x3
	fail_over x3 "$T/xfs/backup"
}
# Before lib.sh's cleanup removes $T: the daemons of a case cut short and
# the restored QEMU of the XFS state dir (below where cleanup looks), then
# the loop mount.
xfs_cleanup() {
	local p
	[ -n "$XFS_MOUNTED" ] || return 0
	for p in $REPLICATOR_PID $GUEST_PID $AGENT_PID; do kill -KILL "$p" 2>/dev/null; done
	p=$(cat "$T/xfs/backup/qemu.pid" 2>/dev/null) &&
		[ "$(cat /proc/"$p"/comm 2>/dev/null)" = qemu-system-x86 ] && kill -KILL "$p"
	sleep 0.2
	umount "$T/xfs" 2>/dev/null || umount -l "$T/xfs"
}
XFS_MOUNTED=
trap 'xfs_cleanup; cleanup' EXIT
# a case cut short leaves its daemons: they go before the next case's
xfs_resume || for p in $REPLICATOR_PID $GUEST_PID $AGENT_PID; do kill -TERM "$p" 2>/dev/null; done

# --- qcow2: not resumable -------------------------------------------------
# A qcow2 image cannot be read here as the guest sees it: the HELLO offers
# no resume, and the reconnect copies the disk again against the backup's
# hashes, its epoch 0 ending only once the restarted mirror is ready.
PORT=$(free_port)
new_case
start_guest q2 128 "disk_check=1 disk_write_mb_s=1" --disk "$T/q2.qcow2" --disk-form blockdev-qcow2
RAM_FILES+=("$T/q2.qcow2")
start_agent "$PORT" "$T/backup-q2" --no-fence
start_replicator "$T/q2/qmp.sock" "$PORT" $EPOCHS
wait_for 90 committed_at_least 5 || die "qcow2: fewer than 5 epochs committed in 90 s"
restart_agent "$T/backup-q2" 2
wait_for 60 protected_again 2 || die "qcow2: not protected again within 60 s of the agent's restart"
rlog | grep -q 'disk disk0 cannot be resumed (not a raw image in a file)' &&
	[ "$(resumed_sessions)" = 0 ] && pass "qcow2: no resume offered, and the replicator says why" ||
	fail "qcow2: $(resumed_sessions) resumed session(s); no reason logged"
second=$(rlog | awk '/disks: mirroring 1 disk/ { n++ } n == 2')
ready=$(grep -n 'disk disk0: mirror ready' <<< "$second" | head -n 1 | cut -d: -f1)
queued=$(grep -n 'initial disk copy queued' <<< "$second" | head -n 1 | cut -d: -f1)
[ -n "$ready" ] && [ -n "$queued" ] && [ "$ready" -lt "$queued" ] &&
	pass "qcow2: the second session's epoch 0 ended after its mirror was ready" ||
	fail "qcow2: the second session's copy: mirror ready at line ${ready:-none}, queued at ${queued:-none}"
finish
