#!/bin/bash
# Operator controls with real QEMU guests (remusctl pause / resume /
# failover) and the daemons' sd_notify messages.
#  1. pause: status says paused, the backup is told; then the primary QEMU
#     is SIGKILLed and the agent must NOT restore the stale replica.
#  2. a failover the backup refuses (--no-failover): the VM resumes on the
#     primary, still protected. Someone else pauses the VM (a second QMP
#     socket): the replicator's barriers leave it paused and checkpoint
#     nothing; continued, it is checkpointed again. Then, with a new agent: resume after a
#     pause (the agent restarted meanwhile: a delta resync that waits for
#     resume), epochs commit again; then a planned failover: the VM runs on
#     the backup from the final checkpoint, the serial counter goes on
#     without going back, the primary QEMU has quit, remusctl exits 0.
. "$(dirname "$0")/lib.sh"

CTL=("$BIN/remusctl" --control "$T/ctl.sock")

# notify_listen NAME: a unix datagram socket $T/NAME.notify standing in for
# systemd; every message it receives is appended to $T/NAME.notify.log.
notify_listen() {
	python3 -c '
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
out = open(sys.argv[2], "a", buffering=1)
while True:
    msg = s.recv(4096).decode(errors="replace")
    out.write(msg.replace("\n", " | ") + "\n")
' "$T/$1.notify" "$T/$1.notify.log" &
	PIDS+=($!)
	touch "$T/$1.notify.log"
	wait_for 5 test -S "$T/$1.notify" || die "notify listener $1 did not start"
}

protection_is() { [ "$(status_field protection)" = "$1" ]; }
agent_said() { grep -qa "$1" "$T/agent.log"; }
resynced_since() { protection_is protected && [ "$(status_field resyncs)" -gt "$1" ]; }

# --- 1. pause, then the primary dies: no failover -------------------------
PORT=$(free_port)
notify_listen agent1
notify_listen repl1
start_guest ctlpause 128 "dirty_mb_s=20"
NOTIFY_SOCKET=$T/agent1.notify start_agent "$PORT" "$T/backup1"
NOTIFY_SOCKET=$T/repl1.notify start_replicator "$T/ctlpause/qmp.sock" "$PORT" \
	--epoch-policy fixed --epoch-ms 50
wait_for 90 committed_at_least 20 || die "fewer than 20 epochs committed in 90 s"
pass "replicating: $(status_field epochs_committed) epochs committed"

wait_for 5 grep -q '^READY=1' "$T/agent1.notify.log" && pass "agent sent READY=1 (listening)" ||
	fail "agent sent no READY=1: $(cat "$T/agent1.notify.log")"
wait_for 5 grep -q '^READY=1' "$T/repl1.notify.log" && pass "replicator sent READY=1 (attached)" ||
	fail "replicator sent no READY=1: $(cat "$T/repl1.notify.log")"
wait_for 5 grep -q '^STATUS=VM ctlpause: protected, epoch' "$T/repl1.notify.log" &&
	pass "replicator STATUS= says protected" || fail "no 'protected' STATUS= from the replicator"
wait_for 5 grep -q 'STATUS=VM ctlpause from .*: protected, epoch' "$T/agent1.notify.log" &&
	pass "agent STATUS= says protected" || fail "no 'protected' STATUS= from the agent"

out=$("${CTL[@]}" pause 2>&1) && pass "remusctl pause: exit 0 ($out)" || fail "remusctl pause failed: $out"
protection_is paused && pass "status says paused" || fail "status says $(status_field protection), not paused"
"${CTL[@]}" status | grep -q '^VM ctlpause .*: paused' && pass "human status says paused" ||
	fail "human status: $("${CTL[@]}" status | head -n 2)"
out=$("${CTL[@]}" pause 2>&1) && [[ $out == *"already paused"* ]] &&
	pass "pause again: '$out', exit 0" || fail "pause again: '$out'"
wait_for 5 agent_said "PAUSED protection" && pass "agent knows it is paused" ||
	fail "agent did not log the pause"
wait_for 5 grep -q 'STATUS=VM ctlpause: paused' "$T/repl1.notify.log" &&
	pass "replicator STATUS= says paused" || fail "no 'paused' STATUS= from the replicator"
n1=$(status_field epochs_committed)
sleep 1
n2=$(status_field epochs_committed)
[ "$n1" = "$n2" ] && pass "no checkpoints while paused ($n1 committed)" ||
	fail "epochs committed while paused: $n1 -> $n2"

kill -KILL "$GUEST_PID"
log "primary QEMU $GUEST_PID killed while paused"
wait_exit "$REPLICATOR_PID" 10 && [ "$EXIT_CODE" = 1 ] && pass "replicator saw QEMU die (exit 1)" ||
	fail "replicator exit code ${EXIT_CODE:-none}, expected 1"
wait_for 15 agent_said "while the operator had PAUSED protection" &&
	pass "agent logged why it does not restore: $(grep -ao 'primary lost ([^)]*) while the operator had PAUSED' "$T/agent.log" | tail -n 1)" ||
	fail "agent did not log a paused primary loss"
sleep 3 # well past its 2 s timeout: a restore would have started
kill -0 "$AGENT_PID" 2>/dev/null && pass "agent still listening, no failover" ||
	fail "agent exited after the primary died while paused"
[ ! -e "$T/backup1/qemu.pid" ] && [ ! -e "$T/backup1/serial.log" ] &&
	pass "no VM was started on the backup" || fail "a VM was started on the backup while paused"
kill -TERM "$AGENT_PID"
wait_exit "$AGENT_PID" 10 || fail "agent did not stop on SIGTERM"
wait_for 5 grep -q '^STOPPING=1' "$T/agent1.notify.log" && pass "agent sent STOPPING=1" ||
	fail "agent sent no STOPPING=1"

# qmp2 COMMAND: run COMMAND on the guest's second QMP socket (someone else
# than the replicator: an operator's tool) and print its "return".
qmp2() {
	python3 -c '
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(10)
s.connect(sys.argv[1])
f = s.makefile("rw")
f.readline()
for cmd in ("qmp_capabilities", sys.argv[2]):
    f.write(json.dumps({"execute": cmd, "id": 1}) + "\n")
    f.flush()
    while True:
        msg = json.loads(f.readline())
        if "id" in msg:
            break
print(json.dumps(msg.get("return", msg)))
' "$T/ctlhand/qmp2.sock" "$1"
}
vm_running() { qmp2 query-status | grep -q '"running": true'; }
# stays_paused N: not running at N looks 0.1 s apart (one look could fall
# in one of the replicator's own pauses).
stays_paused() {
	local i
	for ((i = 0; i < $1; i++)); do
		vm_running && return 1
		sleep 0.1
	done
}
# A `stop` that lands inside one of the replicator's pauses changes nothing
# in QEMU (no event), and the replicator's `cont` then resumes the VM: no
# one can tell (remus-replicator(8): pause protection first). Try again.
pause_from_outside() {
	local attempt
	for attempt in 1 2 3 4 5 6; do
		qmp2 stop >/dev/null || return 1
		sleep 0.3
		stays_paused 5 && return 0
		log "the outside stop fell in a barrier's pause (attempt $attempt)"
	done
	return 1
}

# --- 2. a refused handover, resume, then a planned failover ---------------
PORT=$(free_port)
start_guest ctlhand 128 "dirty_mb_s=20" -- -qmp "unix:$T/ctlhand/qmp2.sock,server=on,wait=off"
start_agent "$PORT" "$T/backup2" --no-failover
start_replicator "$T/ctlhand/qmp.sock" "$PORT" --epoch-policy fixed --epoch-ms 50
wait_for 90 committed_at_least 10 || die "fewer than 10 epochs committed in 90 s"
out=$("${CTL[@]}" failover --timeout 30 2>&1)
rc=$?
[ "$rc" = 1 ] && [[ $out == *"--no-failover"* ]] && pass "failover refused by the backup: exit 1 ($out)" ||
	fail "failover to a --no-failover agent: exit $rc: $out"
grep -qa "HANDOVER FAILED" "$T/replicator.log" && pass "replicator logged the failed handover" ||
	fail "replicator did not log HANDOVER FAILED"
n1=$(status_field epochs_committed)
t1=$(last_tick "$T/ctlhand/serial.log")
wait_for 30 committed_at_least $((n1 + 10)) && protection_is protected &&
	pass "still protected after the refused handover ($n1 -> $(status_field epochs_committed))" ||
	fail "not protected after the refused handover: $(status_field protection)"
[ "$(last_tick "$T/ctlhand/serial.log")" -gt "$t1" ] && pass "the VM runs on the primary" ||
	fail "the primary VM does not tick after the refused handover"
[ ! -e "$T/backup2/qemu.pid" ] && pass "no VM started on the backup" || fail "a VM was started on the backup"

# Someone else pauses the VM: the replicator's barriers (a `stop` that
# finds it paused) must not wake it with their `cont`, and take no
# checkpoint; they go on when it is continued.
pause_from_outside || fail "the VM could not be paused through the second QMP socket"
n1=$(status_field epochs_committed)
t1=$(last_tick "$T/ctlhand/serial.log")
stays_paused 20 && pass "a VM paused by someone else stays paused through 40 barriers" ||
	fail "the replicator woke a VM someone else paused"
n2=$(status_field epochs_committed)
[ "$n2" -le $((n1 + 1)) ] && [ "$(last_tick "$T/ctlhand/serial.log")" -le $((t1 + 1)) ] &&
	pass "no checkpoints while paused by someone else ($n1 -> $n2)" ||
	fail "checkpoints or ticks while paused by someone else: epochs $n1 -> $n2, ticks $t1 -> $(last_tick "$T/ctlhand/serial.log")"
qmp2 cont >/dev/null || fail "continuing the VM through the second QMP socket failed"
wait_for 30 committed_at_least $((n2 + 10)) && protection_is protected &&
	pass "checkpoints go on after the VM is continued" ||
	fail "no checkpoints after the VM was continued: $(status_field protection)"

# A backup that takes over: the replicator reconnects to it and resyncs.
n0=$(status_field resyncs)
kill -TERM "$AGENT_PID"
wait_exit "$AGENT_PID" 10 || fail "agent did not stop on SIGTERM"
start_agent "$PORT" "$T/backup2"
wait_for 60 resynced_since "$n0" || die "not protected by the new agent within 60 s: $(status_field protection)"
pass "protected again by a new agent (a delta resync from its replica)"
"${CTL[@]}" pause >/dev/null || fail "pause before resume failed"
protection_is paused || fail "not paused: $(status_field protection)"
# Paused, the backup restarts: its new session is a delta resync (the
# replica it kept is the base); the PAUSE the replicator sends at once
# must not cost the session, and no sync may start before resume.
n0=$(status_field resyncs)
based=$(grep -c "delta resync: the initial copy starts from the replica's RAM" "$T/agent.log")
paused=$(grep -c "PAUSED protection" "$T/agent.log")
kill -TERM "$AGENT_PID"
wait_exit "$AGENT_PID" 10 || fail "agent did not stop on SIGTERM"
start_agent "$PORT" "$T/backup2"
# this new agent's own lines: its base hashed, the PAUSE taken
wait_for 30 sh -c "[ \$(grep -c \"delta resync: the initial copy starts from the replica's RAM\" '$T/agent.log') -gt $based ] &&
	[ \$(grep -c 'PAUSED protection' '$T/agent.log') -gt $paused ]" ||
	fail "the restarted agent hashed no base or took no PAUSE"
sleep 2
! agent_said "before the delta resync's base was ready" && protection_is paused &&
	[ "$(status_field resyncs)" = "$n0" ] &&
	pass "paused, a restarted backup hashed its base and waits: no sync, no dropped session" ||
	fail "paused with a delta resync: protection $(status_field protection), resyncs $n0 -> $(status_field resyncs), agent: $(tail -n 2 "$T/agent.log")"
out=$("${CTL[@]}" failover 2>&1)
rc=$?
[ "$rc" = 1 ] && [[ $out == *"paused"* ]] && pass "failover while paused refused: $out" ||
	fail "failover while paused: exit $rc: $out"
n1=$(status_field epochs_committed)
sleep 1
out=$("${CTL[@]}" resume 2>&1) && pass "remusctl resume: exit 0 ($out)" || fail "remusctl resume: $out"
out=$("${CTL[@]}" resume 2>&1) && [[ $out == *"not paused"* ]] && pass "resume again: '$out'" ||
	fail "resume again: '$out'"
wait_for 60 committed_at_least $((n1 + 10)) && pass "epochs commit again after resume ($n1 -> $(status_field epochs_committed))" ||
	die "fewer than 10 epochs committed within 60 s of resume"
protection_is protected && pass "status says protected after resume" ||
	fail "status says $(status_field protection) after resume"
wait_for 5 agent_said "protected again, failover armed" && pass "agent left the paused state" ||
	fail "agent did not log leaving the paused state"

seen=$(last_tick "$T/ctlhand/serial.log")
t0=$(now_ms)
out=$("${CTL[@]}" failover --timeout 60 2>&1)
rc=$?
log "remusctl failover ($(( $(now_ms) - t0 )) ms): exit $rc: $out"
[ "$rc" = 0 ] && pass "remusctl failover: exit 0" || fail "remusctl failover exit $rc"
last=$(last_tick "$T/ctlhand/serial.log")
wait_for 10 process_gone "$GUEST_PID" && pass "primary QEMU $GUEST_PID has quit" ||
	fail "primary QEMU $GUEST_PID still runs"
wait_exit "$REPLICATOR_PID" 10 && [ "$EXIT_CODE" = 0 ] && pass "replicator exited 0" ||
	fail "replicator exit code ${EXIT_CODE:-none}, expected 0"
wait_exit "$AGENT_PID" 10 && [ "$EXIT_CODE" = 0 ] && pass "agent exited 0 after the handover" ||
	fail "agent exit code ${EXIT_CODE:-none}, expected 0"
grep -qa "handover complete" "$T/agent.log" && pass "agent logged the handover" ||
	fail "agent did not log a completed handover"

restored=$T/backup2/serial.log
wait_for 30 sh -c "[ \$(tr -d '\r' < '$restored' | grep -c '^tick') -ge 10 ]" ||
	die "restored VM printed fewer than 10 ticks in 30 s"
first=$(first_tick "$restored")
log "primary: tick $seen before the failover, $last at the end; backup: first tick $first"
[ "$first" -ge "$seen" ] && pass "counter continues: restored at tick $first >= $seen seen before" ||
	fail "counter went back: restored at tick $first, but tick $seen was seen before"
# Nothing ran after the final checkpoint: no tick repeats, none is skipped.
[ "$first" -eq $((last + 1)) ] && pass "restored at tick $first = the primary's last tick $last + 1" ||
	fail "restored at tick $first, the primary's last tick was $last"
gaps=$(ticks_consecutive "$restored") && pass "restored ticks are consecutive" || fail "restored ticks: $gaps"
grep -qa 'guest: ready' "$restored" && fail "the restored guest booted again" ||
	pass "restored guest did not reboot"
rpid=$(cat "$T/backup2/qemu.pid" 2>/dev/null)
[ -n "$rpid" ] && kill -0 "$rpid" 2>/dev/null && pass "restored QEMU $rpid is running" ||
	fail "restored QEMU is not running"
finish
