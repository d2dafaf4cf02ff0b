#!/bin/bash
# remusctl speaks to the agent too (issue 20). An agent with --control:
#  1. before any primary: status says waiting, no peer, no replica; the
#     replicator's verbs are refused with a reason;
#  2. a replicator connects and commits: the agent says backup, with the
#     primary's address and TLS identity, its replica's epoch advancing and
#     young; --prometheus of both daemons is the text format with
#     remus_epochs_committed_total; list over the two directories shows
#     both sockets; someone else than root is refused by the agent's peer
#     check;
#  3. the primary QEMU is SIGKILLed: the agent restores the VM and exits
#     (it does not stay as master: see remus-agent(8), STATES). A status
#     asked while it restored is answered "master" with the restored QEMU's
#     pid; then its socket is gone.
. "$(dirname "$0")/lib.sh"

# The agent's socket in a directory others may enter (the peer check is
# tested through a socket opened wider), the replicator's in $T (lib.sh).
PUB=$(mktemp -d /tmp/remus-as.XXXXXX)
chmod 0755 "$PUB"
install -m 0755 "$BIN/remusctl" "$PUB/remusctl"
trap 'cleanup; rm -rf "$PUB"' EXIT
A=$PUB/vm.agent.ctl
R=$T/ctl.sock
actl() { "$BIN/remusctl" --control "$A" "$@"; }
# afield KEY: one value of the agent's status --json ("null" for null)
afield() {
	actl status --json 2>/dev/null | python3 -c "
import json, sys
v = json.load(sys.stdin)['$1']
print('null' if v is None else v)" 2>/dev/null
}
agent_state_is() { [ "$(afield state)" = "$1" ]; }
epoch_above() { local e; e=$(afield replica_epoch); [ "$e" != null ] && [ "${e:-0}" -gt "$1" ]; }

# prom_ok FILE: the text exposition format, as the unit test's checker
# (tests/check_remusctl.c) reads it, in short.
prom_ok() {
	python3 - "$1" <<'EOF'
import re, sys
text = open(sys.argv[1]).read()
assert text.endswith("\n"), "no final newline"
help_, type_, series, cur = set(), {}, set(), None
sample = re.compile(r'^(remus_[a-zA-Z0-9_]+)\{((?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)+)\} (\S+)$')
for line in text.splitlines():
    if line.startswith("# HELP "):
        name = line.split()[2]; assert name not in help_, "HELP twice: " + name; help_.add(name)
    elif line.startswith("# TYPE "):
        _, _, name, kind = line.split()
        assert name in help_ and name not in type_, "TYPE of " + name
        assert kind in ("counter", "gauge") and (kind == "gauge" or name.endswith("_total")), line
        type_[name] = kind; cur = name
    else:
        m = sample.match(line)
        assert m, "not name{labels} value: " + line
        assert m.group(1) == cur, "sample away from its HELP/TYPE: " + line
        assert 'vm="' in m.group(2) and 'daemon="' in m.group(2), "labels: " + line
        float(m.group(3).replace("+Inf", "inf").replace("-Inf", "-inf"))
        key = m.group(1) + "{" + m.group(2) + "}"
        assert key not in series, "series twice: " + key; series.add(key)
EOF
}

# --- 1. waiting ------------------------------------------------------------
PORT=$(free_port)
start_guest vmstat 128 "dirty_mb_s=5"
start_agent "$PORT" "$T/backup" --no-fence --control "$A"
wait_for 10 test -S "$A" || die "the agent made no control socket at $A"
[ "$(stat -c %a "$A")" = 600 ] && pass "agent's control socket is 0600" ||
	fail "agent's control socket mode $(stat -c %a "$A")"
out=$(actl status 2>&1)
[ "$(head -n 1 <<< "$out")" = "VM ? <- no primary: waiting" ] &&
	pass "status before any primary: '$(head -n 1 <<< "$out")'" || fail "status: $out"
[ "$(afield daemon)" = agent ] && [ "$(afield peer)" = null ] &&
	[ "$(afield replica_epoch)" = null ] && [ "$(afield failover_armed)" = False ] &&
	[ "$(afield fence)" = none ] &&
	pass "--json: daemon agent, no peer, no replica, failover not armed, fence none" ||
	fail "--json: $(actl status --json)"
out=$(actl pause 2>&1); rc=$?
[ "$rc" = 1 ] && [[ $out == *"'pause' is a verb of remus-replicator, not of the agent"* ]] &&
	pass "pause refused by the agent: $out" || fail "pause on the agent: exit $rc: $out"
out=$(actl failover --timeout 5 2>&1); rc=$?
[ "$rc" = 1 ] && [[ $out == *"'failover' is a verb of remus-replicator"* ]] &&
	pass "failover refused by the agent" || fail "failover on the agent: exit $rc: $out"
actl reset-stats && pass "reset-stats on the agent" || fail "reset-stats on the agent"

# --- 2. backup ---------------------------------------------------------------
start_replicator "$T/vmstat/qmp.sock" "$PORT" --epoch-policy fixed --epoch-ms 50
wait_for 90 committed_at_least 10 || die "fewer than 10 epochs committed in 90 s"
wait_for 10 agent_state_is backup || fail "agent state $(afield state), not backup"
out=$(actl status 2>&1)
first=$(head -n 1 <<< "$out")
[[ $first == "VM vmstat <- primary 127.0.0.1 (psk:remus:vmstat): backup" ]] &&
	pass "status: '$first'" || fail "status: $out"
[ "$(afield peer)" = 127.0.0.1 ] && [ "$(afield peer_identity)" = psk:remus:vmstat ] &&
	[ "$(afield failover_armed)" = True ] && [ "$(afield vm)" = vmstat ] &&
	pass "--json: peer 127.0.0.1, identity psk:remus:vmstat, failover armed" ||
	fail "--json: $(actl status --json)"
e1=$(afield replica_epoch)
wait_for 10 epoch_above "$e1" && pass "replica epoch advances: $e1 -> $(afield replica_epoch)" ||
	fail "replica epoch stays at $e1"
age=$(afield replica_age_s)
python3 -c "import sys; sys.exit(0 if 0 <= float('$age') < 5 else 1)" &&
	pass "replica age ${age} s" || fail "replica age '$age'"
for who in agent replicator; do
	c=$A; [ "$who" = replicator ] && c=$R
	"$BIN/remusctl" --control "$c" status --prometheus > "$T/$who.prom" ||
		fail "status --prometheus of the $who failed"
	err=$(prom_ok "$T/$who.prom" 2>&1) && pass "the $who's --prometheus is valid text format" ||
		fail "the $who's --prometheus: $err"
	grep -Eq "^remus_epochs_committed_total\{vm=\"vmstat\",daemon=\"$who\"\} [1-9][0-9]*$" "$T/$who.prom" &&
		pass "$(grep '^remus_epochs_committed_total' "$T/$who.prom")" ||
		fail "no remus_epochs_committed_total for the $who: $(head -c 600 "$T/$who.prom")"
done
grep -q '^remus_state{vm="vmstat",daemon="agent",state="backup"} 1$' "$T/agent.prom" &&
	grep -q '^remus_state{vm="vmstat",daemon="replicator",state="protected"} 1$' "$T/replicator.prom" &&
	pass "remus_state: agent backup, replicator protected" || fail "remus_state lines"
list=$("$BIN/remusctl" list "$PUB" "$T" 2>&1)
[ "$(wc -l <<< "$list")" = 2 ] &&
	grep -Eq "^$A +agent +vmstat +backup +[0-9]+$" <<< "$list" &&
	grep -Eq "^$R +replicator +vmstat +protected +[0-9]+$" <<< "$list" &&
	pass "list shows both sockets: $(tr '\n' ';' <<< "$list")" || fail "list: $list"
n=$("$BIN/remusctl" --json list "$PUB" "$T" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
[ "$n" = 2 ] && pass "list --json: 2 sockets" || fail "list --json: $n"
chmod 0666 "$A" # opened wider by mistake: the peer check still holds
out=$(setpriv --reuid=nobody --regid=nogroup --clear-groups "$PUB/remusctl" --control "$A" status 2>&1) &&
	fail "nobody read the agent's status: $out" ||
	{ [[ $out == *"refused by the agent: permission denied: uid 65534 is not root"* ]] &&
	  pass "nobody refused by the agent: '$out'" || fail "nobody: '$out'"; }
grep -q "control socket: refused 'status' from uid 65534" "$T/agent.log" &&
	pass "the agent logged the refusal" || fail "no log line for the refusal"
chmod 0600 "$A"

# --- 3. failover -------------------------------------------------------------
# Ask for status over and over while the primary dies: the agent's loop
# stands still while it restores, and answers what waited once it runs
# the VM (then it exits and its socket goes).
(
	while [ -S "$A" ]; do
		"$BIN/remusctl" --control "$A" status --json >> "$T/agent-status.jsonl" 2>/dev/null
		echo >> "$T/agent-status.jsonl"
		sleep 0.05
	done
) &
POLL_PID=$!
PIDS+=("$POLL_PID")
sleep 0.3
kill -KILL "$GUEST_PID"
log "primary QEMU $GUEST_PID killed"
wait_exit "$AGENT_PID" 30 || die "the agent did not fail over within 30 s"
[ "$EXIT_CODE" = 0 ] && pass "agent restored the VM and exited 0" || fail "agent exit $EXIT_CODE"
wait_for 10 process_gone "$POLL_PID" || fail "the status poller did not end"
rpid=$(cat "$T/backup/qemu.pid" 2>/dev/null)
states=$(python3 -c '
import json, sys
for line in open(sys.argv[1]):
    if line.strip():
        o = json.loads(line)
        print(o["state"], o.get("qemu_pid", "-"))' "$T/agent-status.jsonl" | uniq)
log "states the poller saw: $(tr '\n' ';' <<< "$states")"
[ "$(tail -n 1 <<< "$states")" = "master $rpid" ] &&
	pass "the last status said master, QEMU pid $rpid (the restored one)" ||
	fail "last status: '$(tail -n 1 <<< "$states")', restored QEMU '$rpid'"
[ -n "$rpid" ] && kill -0 "$rpid" 2>/dev/null && pass "restored QEMU $rpid runs" ||
	fail "restored QEMU is not running"
grep -qa "VM vmstat: [a-z]* -> restoring (primary lost" "$T/agent.log" &&
	grep -qa "VM vmstat: restoring -> master (primary lost: VM restored from epoch" "$T/agent.log" &&
	pass "the agent logged its way to master: $(grep -a ' -> ' "$T/agent.log" | sed 's/.*VM vmstat: //' | cut -d' ' -f1-3 | tr '\n' ';')" ||
	fail "state changes in the log: $(grep -a ' -> ' "$T/agent.log" | tail -n 4)"
[ ! -e "$A" ] && pass "the agent's control socket is removed at exit" || fail "$A is left"
wait_exit "$REPLICATOR_PID" 10
list=$("$BIN/remusctl" list "$PUB" "$T" 2>&1)
[ -z "$list" ] && pass "list: nothing answers any more" || fail "list after exit: $list"
finish
