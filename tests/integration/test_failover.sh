#!/bin/bash
# The core promise: replicate the test guest while it dirties memory, SIGKILL
# its QEMU, and the backup resumes the VM from its last committed checkpoint.
# The serial counter goes on from where the primary was, without a reboot.
# (Before the kill, a SIGHUP to both daemons must change nothing.)
. "$(dirname "$0")/lib.sh"

PORT=$(free_port)
start_guest primary 128 "dirty_mb_s=20"
start_agent "$PORT" "$T/backup"
start_replicator "$T/primary/qmp.sock" "$PORT" --epoch-policy fixed --epoch-ms 50
wait_for 90 committed_at_least 50 || die "fewer than 50 epochs committed in 90 s"
pass "replicating: $(status_field epochs_committed) epochs committed, pause p99 $(status_field pause_p99_ms) ms"

# A habitual SIGHUP (log rotation, an operator's reload) must not end
# protection: both daemons log it and go on replicating.
before=$(status_field epochs_committed)
kill -HUP "$AGENT_PID" "$REPLICATOR_PID"
wait_for 20 committed_at_least $(( before + 20 )) &&
	kill -0 "$AGENT_PID" 2>/dev/null && kill -0 "$REPLICATOR_PID" 2>/dev/null &&
	grep -q 'remus-agent: SIGHUP ignored' "$T/agent.log" &&
	grep -q 'remus-replicator: SIGHUP ignored' "$T/replicator.log" &&
	pass "SIGHUP to both daemons: logged, ignored, $(( $(status_field epochs_committed) - before )) more epochs committed" ||
	fail "SIGHUP stopped a daemon or protection (agent: $(tail -n 2 "$T/agent.log"))"

# The serial console is not output-committed: a tick is sure to survive
# only once a checkpoint taken after it has committed, so two more commits
# after reading it, however slow the epochs.
seen=$(last_tick "$T/primary/serial.log")
n=$(status_field epochs_committed)
wait_for 30 committed_at_least $((n + 2)) || die "no commits after epoch $n in 30 s"
kill -KILL "$GUEST_PID"
t_kill=$(date +%s%N)
last=$(last_tick "$T/primary/serial.log")
log "primary QEMU $GUEST_PID killed; primary printed tick $last last (tick $seen seen two commits before)"

wait_exit "$REPLICATOR_PID" 10 || fail "replicator did not exit after QEMU died"
[ "${EXIT_CODE:-}" = 1 ] && pass "replicator saw the primary die (exit 1)" ||
	fail "replicator exit code ${EXIT_CODE:-none}, expected 1"
wait_exit "$AGENT_PID" 30 || die "agent did not fail over within 30 s"
[ "$EXIT_CODE" = 0 ] && pass "agent restored the VM (exit 0)" || fail "agent exit code $EXIT_CODE"

restored=$T/backup/serial.log
wait_for 30 sh -c "[ \$(tr -d '\r' < '$restored' | grep -c '^tick') -ge 10 ]" ||
	die "restored VM printed fewer than 10 ticks in 30 s"
t_tick=$(date +%s%N)
first=$(first_tick "$restored")
log "restored VM: first tick $first, failover to 10 ticks in $(( (t_tick - t_kill) / 1000000 )) ms"

[ "$first" -ge "$seen" ] && pass "counter continues: restored at tick $first >= $seen seen before the kill" ||
	fail "counter went back: restored at tick $first, but tick $seen was seen before the kill"
[ "$first" -le $((last + 1)) ] && pass "no ticks skipped: restored at $first, primary's last $last" ||
	fail "restored tick $first is beyond the primary's last tick $last + 1"
gaps=$(ticks_consecutive "$restored") && pass "restored ticks are consecutive" || fail "restored ticks: $gaps"
grep -qa 'guest: ready' "$restored" && fail "the restored guest booted again" ||
	pass "restored guest did not reboot"
rpid=$(cat "$T/backup/qemu.pid" 2>/dev/null)
[ -n "$rpid" ] && kill -0 "$rpid" 2>/dev/null && pass "restored QEMU $rpid is running" ||
	fail "restored QEMU is not running"
cmp -s "$T/backup/ram" "$T/backup/vm.ram" && fail "restored VM did not write its RAM copy?" ||
	pass "replica RAM untouched by the running VM (it runs on a copy)"
# The state dir stays locked while the VM restored from it runs: a new agent
# there would rewrite the files the VM came from.
timeout 10 "$BIN/remus-agent" --key-file "$KEY" --listen "127.0.0.1:$(free_port)" --state-dir "$T/backup" --no-fence \
	> "$T/agent-again.log" 2>&1
rc=$?
[ "$rc" = 2 ] && grep -q "a VM restored from it still runs" "$T/agent-again.log" &&
	pass "no new agent on the state dir while the restored VM runs (exit 2)" ||
	fail "a new agent on the restored VM's state dir: exit $rc: $(tail -n 2 "$T/agent-again.log")"
finish
