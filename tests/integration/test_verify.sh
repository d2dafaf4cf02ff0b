#!/bin/bash
# remusctl verify (issue #19): the backup's replica compared with the
# running VM page by page while protection goes on; what differs is sent
# again. A page of the replica is corrupted behind the agent's back (the
# test's hook: a write into the state dir's RAM image, in low memory the
# guest kernel never uses, so that no later epoch heals it by chance):
# the next pass must find exactly that page, and the pass after it none.
# Each pass adds at most about VERIFY_SLICE_TARGET_MS of hashing to a
# pause.
. "$(dirname "$0")/lib.sh"

PORT=$(free_port)
CORRUPT_PAGE=9     # 0x9000: Linux reserves the first 64 KiB (X86_RESERVE_LOW)

start_guest vfy 128 "dirty_mb_s=20"
start_agent "$PORT" "$T/backup"
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
python3 -c "import json,sys; r=json.load(open(sys.argv[1])); sys.exit(0 if r['slice_hash_ms_mean'] < 1.0 else 1)" \
	"$T/clean.json" && pass "hashing a slice adds under 1 ms to a pause on average (max $(field clean slice_hash_ms_max) ms)" ||
	fail "a slice's hashing took $(field clean slice_hash_ms_mean) ms on average"

# The hook: garbage into the replica's RAM image, one page, in place.
head -c 4096 /dev/urandom | dd of="$T/backup/ram" bs=4096 seek="$CORRUPT_PAGE" conv=notrunc \
	status=none || die "cannot write into the replica"
verify corrupt
[ "$VERIFY_RC" = 0 ] && pass "the pass over a corrupted replica completes" || fail "verify exits $VERIFY_RC"
[ "$(field corrupt pages_differ)" = 1 ] && pass "it finds the one corrupted page" ||
	fail "pages_differ is $(field corrupt pages_differ), want 1"
grep -q "verify: 1 page(s) of the replica differ" "$T/agent.log" &&
	pass "the agent logs the difference" || fail "no difference in the agent's log"

verify healed
[ "$(field healed pages_differ)" = 0 ] && pass "the page was sent again: the next pass finds none" ||
	fail "$(field healed pages_differ) page(s) still differ after the resend"
cmp -s <(dd if="$T/backup/ram" bs=4096 skip="$CORRUPT_PAGE" count=1 status=none) \
	<(dd if=/dev/shm/remus-vfy.ram bs=4096 skip="$CORRUPT_PAGE" count=1 status=none) &&
	pass "the replica's page equals the VM's again" || fail "the replica's page still differs"
[ "$(status_field protection)" = protected ] && pass "the VM stayed protected throughout" ||
	fail "protection is $(status_field protection)"
finish
