#!/bin/bash
# Fencing and notify hooks of the agent, on loopback: without a fence choice
# the agent warns at start; a fence command that does not answer in time is
# killed with its process group, the VM is NOT restored, the operator is
# told (fence-failed), the agent keeps its replica and waits; a restore by
# hand then brings the VM back.
. "$(dirname "$0")/lib.sh"

NAME=fence$$
EVENTS=$T/events

# start_quiet_agent ARGS...: an agent that nobody connects to, for 1 s; its
# log in $T/quiet.log.
start_quiet_agent() {
	local port pid
	port=$(free_port)
	"$BIN/remus-agent" --key-file "$KEY" --listen "127.0.0.1:$port" --state-dir "$T/quiet" "$@" > "$T/quiet.log" 2>&1 &
	pid=$!
	PIDS+=("$pid")
	sleep 1
	kill -TERM "$pid"
	wait_exit "$pid" 5 || fail "quiet agent did not stop"
}

start_quiet_agent
grep -q 'NO FENCING CONFIGURED' "$T/quiet.log" &&
	pass "without --fence or --no-fence the agent warns at start" ||
	fail "no warning without a fence choice: $(cat "$T/quiet.log")"
start_quiet_agent --no-fence
! grep -q 'NO FENCING' "$T/quiet.log" && pass "--no-fence: no warning" ||
	fail "--no-fence still warns"
"$BIN/remus-agent" --key-file "$KEY" --listen 127.0.0.1:1 --state-dir "$T/quiet" --fence /nonexistent/pdu \
	> "$T/refused.log" 2>&1
rc=$?
[ "$rc" = 2 ] && grep -q "'/nonexistent/pdu': No such file" "$T/refused.log" &&
	pass "a missing fence command is refused at start (exit 2)" ||
	fail "missing fence command: exit $rc, $(cat "$T/refused.log")"

# The hooks: the fence hangs (a background child included), the notify
# hook logs every event.
cat > "$T/fence" <<EOF
#!/bin/sh
sleep 30 &
echo \$! > '$T/fence-child.pid'
echo "\$*" > '$T/fence-args'
wait
EOF
chmod 755 "$T/fence"
event_log_hook "$T/notify" "$EVENTS"

PORT=$(free_port)
start_guest "$NAME" 128 "dirty_mb_s=5"
start_agent "$PORT" "$T/backup" --fence "$T/fence" --fence-timeout-ms 500 \
	--notify "$T/notify" --pair drill-pair
start_replicator "$T/$NAME/qmp.sock" "$PORT" --notify "$T/notify"
wait_for 60 committed_at_least 5 || die "fewer than 5 epochs committed in 60 s"
wait_for 5 grep -q '^backup backup' "$EVENTS" && pass "the agent notified 'backup'" ||
	fail "no 'backup' event: $(cat "$EVENTS")"
wait_for 5 grep -q '^protected primary' "$EVENTS" && pass "the replicator notified 'protected'" ||
	fail "no 'protected' event: $(cat "$EVENTS")"

kill -KILL "$GUEST_PID"
log "primary QEMU $GUEST_PID killed; the fence command will hang"
wait_for 20 grep -q '^fence-failed' "$EVENTS" ||
	die "no fence-failed event within 20 s: $(cat "$EVENTS")"
pass "the operator is told: $(grep '^fence-failed' "$EVENTS")"
grep -q 'no end within 500 ms' "$EVENTS" && pass "fence-failed says the fence timed out" ||
	fail "fence-failed does not say why"
[ "$(cat "$T/fence-args" 2>/dev/null)" = "drill-pair $NAME fencing backup" ] &&
	pass "the fence command got PAIR VM fencing backup" ||
	fail "fence arguments: '$(cat "$T/fence-args" 2>/dev/null)'"
child=$(cat "$T/fence-child.pid" 2>/dev/null)
wait_for 3 sh -c "! kill -0 $child 2>/dev/null || grep -q '^State:.*Z' /proc/$child/status" &&
	pass "the fence's process group was killed (its child $child too)" ||
	fail "the fence's child $child survived the timeout"
grep -q 'FENCING FAILED' "$T/agent.log" && pass "the agent logs FENCING FAILED" ||
	fail "no FENCING FAILED in the agent's log"
grep -q "fence command 'fencing': no end within 500 ms" "$T/agent.log" &&
	pass "one log line for the fence run with its outcome" || fail "no log line for the fence run"
sleep 1
[ ! -e "$T/backup/qemu.pid" ] && pass "the VM was not restored" || fail "the VM was restored without fencing"
! grep -q '^master' "$EVENTS" && pass "no 'master' event" || fail "'master' notified without fencing"
kill -0 "$AGENT_PID" 2>/dev/null && pass "the agent keeps running, waiting for the primary" ||
	fail "the agent exited after a failed fence"
grep -q '^vm-lost primary' "$EVENTS" && pass "the replicator notified 'vm-lost'" ||
	fail "no 'vm-lost' event"

# The operator powers the primary off by hand, then restores.
kill -TERM "$AGENT_PID"
wait_exit "$AGENT_PID" 10 || die "the agent did not stop on SIGTERM"
"$BIN/remus-agent" --key-file "$KEY" --restore --state-dir "$T/backup" >> "$T/agent.log" 2>&1 &&
	pass "remus-agent --restore brings the kept replica back" || fail "restore by hand failed"
wait_for 20 sh -c "tr -d '\r' < '$T/backup/serial.log' | grep -q '^tick'" &&
	pass "the restored VM runs (tick $(last_tick "$T/backup/serial.log"))" ||
	fail "the restored VM prints nothing"
finish
