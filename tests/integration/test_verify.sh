#!/bin/bash
# remusctl verify (issue #19): the backup's replica compared with the
# running VM page by page, then its disk block by block, while protection
# goes on; what differs is sent again. A page and a disk block of the
# replica are corrupted behind the agent's back (the test's hook: writes
# into the state dir's RAM image, in low memory the guest kernel never
# uses, and into its disk image, which this guest never writes, so that no
# later epoch heals them by chance): the next pass must find exactly that
# page and that block, and the pass after it none. Each slice adds about
# VERIFY_SLICE_TARGET_MS to a pause.
. "$(dirname "$0")/lib.sh"

PORT=$(free_port)
CORRUPT_PAGE=9     # 0x9000: Linux reserves the first 64 KiB (X86_RESERVE_LOW)
CORRUPT_BLOCK=1000 # of the 16384 blocks of 4 KiB of the 64 MiB disk

start_guest vfy 128 "dirty_mb_s=20" --disk "$T/vfy.img"
start_agent "$PORT" "$T/backup" --control "$T/agent.ctl"
start_replicator "$T/vfy/qmp.sock" "$PORT"
wait_for 90 committed_at_least 10 || die "fewer than 10 epochs committed in 90 s"

# verify NAME: one pass, its JSON reply in $T/NAME.json.
verify() {
	"$BIN/remusctl" --control "$T/ctl.sock" --json verify > "$T/$1.json" 2> "$T/$1.err"
	VERIFY_RC=$?
	log "verify $1 (exit $VERIFY_RC): $(cat "$T/$1.json" "$T/$1.err")"
}
field() { json_field "$T/$1.json" "$2"; }

verify clean
[ "$VERIFY_RC" = 0 ] && pass "a pass over a consistent replica exits 0" || fail "verify exits $VERIFY_RC"
[ "$(field clean pages_checked)" = 32768 ] && pass "every page of 128 MiB compared (32768)" ||
	fail "pages_checked is $(field clean pages_checked), want 32768"
[ "$(field clean pages_differ)" = 0 ] && pass "no page differs on a consistent replica" ||
	fail "$(field clean pages_differ) page(s) differ without any corruption"
[ "$(field clean disks_checked)" = 1 ] && [ "$(field clean disk_blocks_checked)" = 16384 ] &&
	pass "the disk compared too: every block of 64 MiB (16384)" ||
	fail "disks_checked $(field clean disks_checked), disk_blocks_checked $(field clean disk_blocks_checked)"
[ "$(field clean disk_blocks_differ)" = 0 ] && pass "no disk block differs on a consistent replica" ||
	fail "$(field clean disk_blocks_differ) block(s) differ without any corruption"
python3 -c "import json,sys; r=json.load(open(sys.argv[1])); sys.exit(0 if r['slice_hash_ms_mean'] < 1.0 else 1)" \
	"$T/clean.json" && pass "hashing a slice adds under 1 ms to a pause on average (max $(field clean slice_hash_ms_max) ms, of CPU $(field clean slice_hash_cpu_ms_max) ms)" ||
	fail "a slice's hashing took $(field clean slice_hash_ms_mean) ms on average"

# The hook: garbage into the replica's RAM image, one page, and into its
# disk image, 100 bytes of one block, in place.
head -c 4096 /dev/urandom | dd of="$T/backup/ram" bs=4096 seek="$CORRUPT_PAGE" conv=notrunc \
	status=none || die "cannot write into the replica"
head -c 100 /dev/urandom | dd of="$T/backup/disk-0.img" bs=1 seek=$((CORRUPT_BLOCK * 4096 + 7)) \
	conv=notrunc status=none || die "cannot write into the replica's disk"
verify corrupt
[ "$VERIFY_RC" = 0 ] && pass "the pass over a corrupted replica completes" || fail "verify exits $VERIFY_RC"
[ "$(field corrupt pages_differ)" = 1 ] && pass "it finds the one corrupted page" ||
	fail "pages_differ is $(field corrupt pages_differ), want 1"
grep -q "verify: 1 page(s) of the replica differ" "$T/agent.log" &&
	pass "the agent logs the difference" || fail "no difference in the agent's log"
[ "$(field corrupt disk_blocks_differ)" = 1 ] && pass "it finds the one corrupted disk block" ||
	fail "disk_blocks_differ is $(field corrupt disk_blocks_differ), want 1"

verify healed
[ "$(field healed pages_differ)" = 0 ] && pass "the page was sent again: the next pass finds none" ||
	fail "$(field healed pages_differ) page(s) still differ after the resend"
cmp -s <(dd if="$T/backup/ram" bs=4096 skip="$CORRUPT_PAGE" count=1 status=none) \
	<(dd if=/dev/shm/remus-vfy.ram bs=4096 skip="$CORRUPT_PAGE" count=1 status=none) &&
	pass "the replica's page equals the VM's again" || fail "the replica's page still differs"
[ "$(field healed disk_blocks_differ)" = 0 ] && [ "$(field corrupt disk_blocks_resent)" = 1 ] &&
	pass "the block was sent again: the next pass finds none" ||
	fail "disk blocks: $(field corrupt disk_blocks_resent) resent, $(field healed disk_blocks_differ) still differ"
cmp -s <(dd if="$T/backup/disk-0.img" bs=4096 skip="$CORRUPT_BLOCK" count=1 status=none) \
	<(dd if="$T/vfy.img" bs=4096 skip="$CORRUPT_BLOCK" count=1 status=none) &&
	pass "the replica's disk block equals the VM's again" || fail "the replica's disk block still differs"
[ "$(status_field protection)" = protected ] && pass "the VM stayed protected throughout" ||
	fail "protection is $(status_field protection)"

# test-failover: a clone of the replica runs on the backup, cut off, and
# is discarded; the pair stays protected and keeps committing meanwhile.
test_failover_passes "a plain QEMU replica"
clone_gone() { [ ! -e "$T/backup/test-failover" ] && ! pgrep -f -- "$T/backup/test-failover" > /dev/null; }
wait_for 10 clone_gone && pass "the clone and its QEMU are gone" || fail "the clone is left behind"
"$BIN/remusctl" --control "$T/ctl.sock" test-failover > /dev/null 2> "$T/tf-rep.err" &&
	fail "the replicator accepted test-failover" ||
	{ grep -q "the agent's" "$T/tf-rep.err" && pass "the replicator refuses test-failover, naming the agent" ||
		fail "the replicator's refusal: $(cat "$T/tf-rep.err")"; }
finish
