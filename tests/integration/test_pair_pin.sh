#!/bin/bash
# A state dir belongs to one pair: once vm1's replica is committed, the
# agent refuses vm2's primary without touching vm1's replica, until the
# operator runs --forget-pair; and a VM over --max-ram-mb is refused by
# name of the bound.
. "$(dirname "$0")/lib.sh"

PORT=$(free_port)
DIR=$T/backup
start_guest vm1 128 ""
VM1_PID=$GUEST_PID
start_agent "$PORT" "$DIR" --no-fence --no-failover
start_replicator "$T/vm1/qmp.sock" "$PORT" --epoch-policy fixed --epoch-ms 50
wait_for 60 committed_at_least 3 || die "vm1: fewer than 3 epochs committed in 60 s"
[ "$(json_field "$DIR/pair.json" vm_name)" = vm1 ] && pass "the first commit pinned the state dir to vm1" ||
	fail "pair.json: $(cat "$DIR/pair.json" 2>&1)"
kill -TERM "$REPLICATOR_PID"
wait_exit "$REPLICATOR_PID" 10 || die "vm1's replicator did not detach"
kill -TERM "$VM1_PID"
sum_before=$(md5sum "$DIR/ram" "$DIR/vm.json" "$DIR/devstate" "$DIR/pair.json")

start_guest vm2 128 ""
start_replicator "$T/vm2/qmp.sock" "$PORT" --epoch-policy fixed --epoch-ms 50
wait_for 15 grep -q "state dir belongs to VM vm1 (uuid none), not vm2" "$T/agent.log" &&
	pass "vm2's primary refused: $(grep -o 'refusing primary.*' "$T/agent.log" | tail -n 1)" ||
	fail "vm2's primary was not refused"
wait_for 10 grep -q "backup refused: state dir belongs to VM vm1" "$T/replicator.log" &&
	pass "the replicator was told why" || fail "no refusal in the replicator's log"
[ "$(md5sum "$DIR/ram" "$DIR/vm.json" "$DIR/devstate" "$DIR/pair.json")" = "$sum_before" ] &&
	[ ! -e "$DIR/ram.sync" ] && pass "vm1's replica untouched" || fail "vm1's replica changed"
kill -TERM "$REPLICATOR_PID"
wait_exit "$REPLICATOR_PID" 10 || die "vm2's replicator did not stop"

"$BIN/remus-agent" --forget-pair --state-dir "$DIR" > "$T/forget.out" 2>&1 &&
	fail "--forget-pair while the agent runs: $(cat "$T/forget.out")" ||
	pass "--forget-pair refused while the agent runs: $(cat "$T/forget.out")"
kill -TERM "$AGENT_PID"
wait_exit "$AGENT_PID" 10 || die "agent did not stop"
"$BIN/remus-agent" --forget-pair --state-dir "$DIR" > "$T/forget.out" 2>&1 &&
	grep -q "removed $DIR/pair.json (VM vm1" "$T/forget.out" &&
	pass "--forget-pair: $(cat "$T/forget.out")" || fail "--forget-pair: $(cat "$T/forget.out")"

start_agent "$PORT" "$DIR" --no-fence --no-failover --max-ram-mb 64
start_replicator "$T/vm2/qmp.sock" "$PORT" --epoch-policy fixed --epoch-ms 50
wait_for 15 grep -q "ram_size 128 MiB exceeds max-ram-mb 64" "$T/agent.log" &&
	pass "a VM over --max-ram-mb refused" || fail "no max-ram-mb refusal"
kill -TERM "$REPLICATOR_PID" "$AGENT_PID"
wait_exit "$REPLICATOR_PID" 10 && wait_exit "$AGENT_PID" 10 || die "replicator or agent did not stop"

start_agent "$PORT" "$DIR" --no-fence --no-failover
start_replicator "$T/vm2/qmp.sock" "$PORT" --epoch-policy fixed --epoch-ms 50
wait_for 60 committed_at_least 3 && [ "$(json_field "$DIR/pair.json" vm_name)" = vm2 ] &&
	pass "after --forget-pair vm2 replicates and pins the state dir" ||
	fail "vm2 after --forget-pair: $(cat "$DIR/pair.json" 2>&1)"

finish
