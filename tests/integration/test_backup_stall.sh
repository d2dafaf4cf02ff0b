#!/bin/bash
# A backup whose own process stood still (SIGSTOP here; a suspended host or
# a starved process alike) past the time it promised to take over in must
# not take over when it runs again. Meanwhile the primary heard nothing
# from it, released its held output after the backup's window and ran on
# unprotected: a takeover now would fence a primary that lives and roll
# the VM back behind what clients saw (with a spare host, run a second
# copy). The agent reads, on waking, the checkpoint bytes that waited in
# its socket and then the primary's close, which looks like a primary that
# died a moment ago; it must count from when it stopped
# (backup-agent/takeover_deadline.h): drop the session, or refuse the
# takeover as too late, say why, and take the primary back as a backup
# when it reconnects.
#
# The guest rewrites 48 MiB as fast as it can, with 1 s epochs and no
# compression (about 48 MB a checkpoint), and the agent is stopped in the
# middle of a checkpoint: one that fills its socket and the replicator's, so that the replicator's GOODBYE (which would tell
# the waking agent that the primary lives) cannot get through, as on a cut
# link. Stopped between two, it would read that GOODBYE and not take over,
# with or without its own check.
. "$(dirname "$0")/lib.sh"

NAME=stall$$
EVENTS=$T/events
STOP_S=9

killing_fence "$T/fence" "$T/primary.pids" "$T/fence-ran"
event_log_hook "$T/notify" "$EVENTS"

PORT=$(free_port)
start_guest "$NAME" 128 "work_mb=48"
# takeover_after_ms 1000 + 1500: the primary holds output about 3.7 s
start_agent "$PORT" "$T/backup" --timeout-ms 1000 --fence "$T/fence" --fence-timeout-ms 1500 \
	--notify "$T/notify"
start_replicator "$T/$NAME/qmp.sock" "$PORT" --epoch-policy fixed --epoch-ms 1000 --compress off \
	--notify "$T/notify"
echo "$GUEST_PID $REPLICATOR_PID" > "$T/primary.pids"
wait_for 90 committed_at_least 5 || die "fewer than 5 epochs committed in 90 s"
grep -q 'counts as lost after 3700 ms of silence' "$T/replicator.log" &&
	pass "the replicator holds output 3.7 s for this backup (takeover_after_ms + margin)" ||
	fail "the replicator's hold is not the one expected: $(grep 'counts as lost' "$T/replicator.log")"

# stop_in_a_checkpoint: SIGSTOP the agent until it stops with the
# replicator's socket full behind its own (each try stops it 1 s, well
# within the hold).
stop_in_a_checkpoint() {
	local try queued unsent
	for try in $(seq 1 40); do
		kill -STOP "$AGENT_PID"
		sleep 1
		queued=$(ss -tnH state established "( sport = :$PORT )" | awk '{ print $1 }' |
			sort -n | tail -n 1)
		unsent=$(ss -tnH state established "( dport = :$PORT )" | awk '{ print $2 }' |
			sort -n | tail -n 1)
		log "try $try: ${queued:-0} bytes wait in the agent's socket, ${unsent:-0} in the replicator's"
		if [ "${unsent:-0}" -gt 1000000 ]; then
			log "agent $AGENT_PID stopped with $queued bytes waiting in its socket (try $try)"
			return 0
		fi
		kill -CONT "$AGENT_PID"
		sleep "0.$((RANDOM % 5))"
	done
	return 1
}

before=$(status_field epochs_committed)
stop_in_a_checkpoint || die "the agent never stopped in the middle of a checkpoint in 40 tries"
log "agent $AGENT_PID stopped at $before committed epochs, for $STOP_S s"
wait_for 20 grep -q 'runs UNPROTECTED' "$T/replicator.log" ||
	fail "the replicator did not give up on the silent backup"
# What it closed lingers, its unsent bytes behind the agent's full socket:
# reset it, as a primary's kernel that gives up on it, or a cut link, may.
sleep 0.5
killed=$(ss -K state fin-wait-1 state fin-wait-2 state closing state last-ack "( dport = :$PORT )" |
	grep -c ":$PORT")
log "the replicator's closed connection reset ($killed socket(s))"
sleep $((STOP_S - 4))
kill -CONT "$AGENT_PID"
log "agent $AGENT_PID continued"

# Which comes first on waking, the agent's heartbeat timer (it sees its
# own stall past the primary's hold and drops the session) or the read of
# the reset (it refuses the takeover as too late), is libev's to choose.
wait_for 10 grep -q 'too late to take over\|past the time the primary holds its output' \
	"$T/agent.log" &&
	pass "the waking agent does not take over: $(grep -o 'too late to take over: [^,]*\|did not run for [0-9]* ms, past the time the primary holds its output for it' "$T/agent.log" | head -n 1)" ||
	fail "the agent neither refused a late takeover nor dropped the session"
grep -q "this agent's loop did not run for" "$T/agent.log" &&
	pass "it says its own loop stood still: $(grep -o "this agent's loop did not run for [0-9]* ms" "$T/agent.log" | head -n 1)" ||
	fail "the agent did not notice its own stall"
sleep 2
[ ! -e "$T/fence-ran" ] && pass "the fence did not run" ||
	fail "the fence ran against a primary that lives: $(cat "$T/fence-ran")"
[ ! -e "$T/backup/qemu.pid" ] && pass "no VM restored on the backup" ||
	fail "the backup restored the VM from its last commit"
kill -0 "$GUEST_PID" && kill -0 "$REPLICATOR_PID" && pass "the primary's QEMU and replicator run on" ||
	fail "the primary is gone"
! grep -q '^fencing\|^master' "$EVENTS" && pass "no fencing or master event" ||
	fail "events of a takeover: $(cat "$EVENTS")"

# The primary reconnects; the agent takes it back and commits again.
wait_for 60 committed_at_least $((before + 5)) &&
	pass "protection resumed: $(status_field epochs_committed) epochs committed" ||
	fail "no commits after the agent continued"
kill -0 "$AGENT_PID" && pass "the agent runs on" || fail "the agent exited"
finish
