#!/bin/bash
# A step of the wall clock is no silence. NTP's first sync, chrony's
# makestep or an operator's `date -s` move CLOCK_REALTIME by seconds at
# once; the agent and the replicator count heartbeats on a monotonic clock,
# so that:
#  1. the backup's clock stepping a minute forward does not make it take
#     the primary for dead (it would fence a live primary and restore the
#     VM from its last commit), nor does the primary's make it drop its
#     backup;
#  2. the backup's replica does not grow younger (or older) by a step: with
#     checkpoints paused, its clock stepped two minutes back, `status`
#     still gives the replica's age in seconds since its last commit;
#  3. the backup's clock stepping two minutes back does not make it wait
#     two minutes more to see a primary that then falls silent.
# Each daemon runs under tests/preload/clock_step.so, which steps its own
# wall clock by what a file holds: stepping this host's would move every
# process on it.
. "$(dirname "$0")/lib.sh"

NAME=clock$$
SHIM=$ROOT/build/tests/clock_step.so
[ -f "$SHIM" ] || die "no $SHIM (make all builds it)"

killing_fence "$T/fence" "$T/primary.pids" "$T/fence-ran"

# step FILE SECONDS: from now, that daemon's wall clock reads SECONDS later
step() { echo "$2" > "$1.tmp" && mv "$1.tmp" "$1"; }

PORT=$(free_port)
start_guest "$NAME" 128 "dirty_mb_s=5"
LD_PRELOAD=$SHIM REMUS_TEST_CLOCK_STEP=$T/agent.step \
	start_agent "$PORT" "$T/backup" --timeout-ms 1000 --fence "$T/fence" --fence-timeout-ms 2000 \
	--control "$T/agent.sock"
LD_PRELOAD=$SHIM REMUS_TEST_CLOCK_STEP=$T/replicator.step \
	start_replicator "$T/$NAME/qmp.sock" "$PORT"
echo "$GUEST_PID $REPLICATOR_PID" > "$T/primary.pids"
wait_for 60 committed_at_least 5 || die "fewer than 5 epochs committed in 60 s"

# 1. Forward, on both hosts in turn.
resyncs=$(status_field resyncs)
step "$T/agent.step" 60
log "the backup's wall clock stepped 60 s forward"
sleep 3
before=$(status_field epochs_committed)
step "$T/replicator.step" 60
log "the primary's wall clock stepped 60 s forward"
sleep 3
[ ! -e "$T/fence-ran" ] && [ ! -e "$T/backup/qemu.pid" ] &&
	pass "the backup did not take over: no fence, no VM restored" ||
	fail "a clock step made the backup take over: $(cat "$T/fence-ran" 2>/dev/null)"
! grep -q 'no heartbeat' "$T/agent.log" "$T/replicator.log" &&
	pass "neither side saw a heartbeat missing" ||
	fail "a clock step read as silence: $(grep -h 'no heartbeat' "$T/agent.log" "$T/replicator.log")"
[ "$(status_field protection)" = protected ] && [ "$(status_field resyncs)" = "$resyncs" ] &&
	committed_at_least $((before + 5)) &&
	pass "the VM stays protected, in the same session ($(status_field epochs_committed) epochs committed)" ||
	fail "after the steps: $(status_field protection), resyncs $resyncs -> $(status_field resyncs), $(status_field epochs_committed) committed"

# 2. No commits for a while, and the backup's clock a minute back.
"$BIN/remusctl" --control "$T/ctl.sock" pause > /dev/null || die "remusctl pause failed"
step "$T/agent.step" -60
log "checkpoints paused; the backup's wall clock stepped 120 s back (60 s behind the true time)"
sleep 2
age=$("$BIN/remusctl" --control "$T/agent.sock" status --json |
	python3 -c "import json, sys; print(json.load(sys.stdin)['replica_age_s'])")
python3 -c "import sys; sys.exit(not 1.5 <= float(sys.argv[1]) < 30)" "$age" 2>/dev/null &&
	pass "the replica's age is still its time since the last commit ($age s), not shifted by the step" ||
	fail "the replica's age after a 120 s step back is $age s, not the 2-30 s since its last commit"
"$BIN/remusctl" --control "$T/ctl.sock" resume > /dev/null || die "remusctl resume failed"
before=$(status_field epochs_committed)
wait_for 30 committed_at_least $((before + 5)) || die "no commits within 30 s of the resume"

# 3. The primary dies.
start=$(now_ms)
kill -STOP "$REPLICATOR_PID"
log "the primary's replicator stopped: its link falls silent (no close)"
wait_for 20 test -e "$T/backup/qemu.pid" &&
	pass "the backup fenced the primary and restored the VM $(( $(now_ms) - start )) ms after it fell silent" ||
	fail "no takeover within 20 s of the primary's silence"
finish
