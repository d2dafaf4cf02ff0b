#!/bin/bash
# Output commit, end to end: a client on the LAN talks to the VM's TCP
# counter over ONE connection while the VM is replicated; the primary QEMU is
# SIGKILLed and the backup takes over. Because no packet leaves the primary
# before the checkpoint that produced it has committed, the client never sees
# anything the restored VM does not remember: its connection survives, with
# no reset, no timeout, and every reply exactly one more than the last.
#
# With --no-output-commit (test_output_commit_off.sh) the replicator lets
# packets out at once, and the same run must show the client a failure (a
# repeat, gap or step back, a timeout or a reset): the proof that this test
# can fail.
#
# Topology (scripts/testnet): the client in CLI_NS, the primary's QEMU,
# replicator and AF_PACKET port lan0 in PRI_NS, the agent and the restored
# VM (on tap0) in BAK_NS, all on the bridge in LAN_NS; the replication link
# is PRI_NS rep0 <-> BAK_NS rep0.
. "$(dirname "$0")/lib.sh"

MODE=on
case ${1:-} in
	'') ;;
	--no-output-commit) MODE=off ;;
	*) echo "usage: $0 [--no-output-commit]" >&2; exit 2 ;;
esac

AGENT_PORT=7700
VM_PORT=7777
EPOCH_MS=50
if [ "$MODE" = on ]; then
	# compressed checkpoints: output commit holds with them too
	REPL_EXTRA=(--compress on)
	# A failover (a few hundred ms here, TCP's retransmission back-off
	# included) must fit well inside the per-request timeout.
	CLIENT_ARGS=(--max-requests 600 --max-seconds 90 --interval-ms 20 --timeout-s 30)
else
	REPL_EXTRA=(--no-output-commit)
	# Requests back to back: the output of the epoch lost with the primary
	# is then all but sure to hold replies the client already has (at 20 ms
	# intervals a kill can fall where none was sent, and nothing shows).
	# A stalled connection shows as a timeout: 5 s is far above a failover
	# (a few hundred ms here).
	CLIENT_ARGS=(--max-requests 100000 --max-seconds 60 --interval-ms 1 --timeout-s 5)
	OFF_ATTEMPTS=3
fi

# status_net: the net buffer's figures from `remusctl status --json`.
status_net() {
	"$BIN/remusctl" --control "$T/ctl.sock" status --json 2>/dev/null | python3 -c '
import json, sys
s = json.load(sys.stdin)
nics = s.get("net") or []
def fmt(v):
    return "%.1f" % v if isinstance(v, float) else str(v)
print("; ".join("%s: " % n.get("netdev", "?") + " ".join(
    "%s=%s" % (k, fmt(v)) for k, v in n.items() if k != "netdev") for n in nics) or "none")' 2>/dev/null
}

# answered_since NAME MS: client NAME has had a reply after MS (unix ms), or
# it has ended (then there is nothing more to wait for).
answered_since() {
	[ "$(client_last_reply_ms "$1")" -gt "$2" ] || ! kill -0 "$CLIENT" 2>/dev/null
}

# failover_run N: boot a primary, replicate it, run the client, SIGKILL the
# primary's QEMU, let the agent restore the VM, and read what the client and
# a later probe connection saw into C_* and PROBE.
failover_run() {
	local n=$1 guest=primary$1 backup=$T/backup$1 client=client$1 probe=probe$1
	local t_kill t_over t_back summary

	rm -f "$T/ctl.sock"
	start_guest "$guest" 128 "ip_addr=$VM_IP/24 tcp_port=$VM_PORT" --net --netns "$PRI_NS"
	start_agent_in "$BAK_NS" "$BACKUP_ADDR:$AGENT_PORT" "$backup" --tap "n0=$BAK_TAP"
	start_replicator_in "$PRI_NS" "$T/$guest/qmp.sock" "$BACKUP_ADDR:$AGENT_PORT" \
		--epoch-ms "$EPOCH_MS" --net-out "n0=packet:$PRI_LAN_IF" "${REPL_EXTRA[@]}"
	wait_for 60 committed_at_least 20 || die "fewer than 20 epochs committed in 60 s"
	pass "replicating over $PRI_NS rep0 -> $BACKUP_ADDR: $(status_field epochs_committed) epochs committed"

	start_client "$CLI_NS" "$client" "$VM_IP" "$VM_PORT" --stop-file "$T/$client.stop" "${CLIENT_ARGS[@]}"
	CLIENT=$CLIENT_PID
	wait_for 30 sh -c "[ \"\$(cat '$T/$client.progress' 2>/dev/null)\" ]" ||
		die "the client had no reply from $VM_IP:$VM_PORT within 30 s ($(cat "$T/$client.log"))"
	pass "the client talks to the VM through the primary's net buffer"
	# Only QEMU's end feeds the net buffer (our socket is connected to
	# it): a frame from any other socket, root's here, never gets in.
	injected=$(python3 - "$T/$guest/n0.buf.sock" <<'EOF'
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
sent, why = 0, ""
for _ in range(20):
    try:
        s.sendto(b"\xff" * 64, sys.argv[1])
        sent += 1
    except OSError as e:
        why = e.strerror
print(sent, why)
EOF
	)
	[[ $injected == "0 "* ]] && pass "frames sent to the net buffer's socket by another: refused (${injected#0 })" ||
		fail "another socket fed the net buffer: $injected of 20 frames taken"
	sleep 3
	log "net buffer: $(status_net)"
	PAUSE_P50=$(printf '%.1f' "$(status_field pause_p50_ms)") ACK_P50=$(printf '%.1f' "$(status_field ack_p50_ms)")
	log "epochs: $(status_field epoch_reason); pause p50 $PAUSE_P50 ms, ack p50 $ACK_P50 ms"
	log "client: $(client_replies "$client") replies so far; killing the primary"

	kill -KILL "$GUEST_PID"
	t_kill=$(now_ms)
	log "primary QEMU $GUEST_PID killed"
	wait_exit "$REPLICATOR_PID" 10 && log "replicator exited ($EXIT_CODE)" ||
		fail "replicator still running 10 s after its QEMU died"
	wait_exit "$AGENT_PID" 30 || die "the agent did not fail over within 30 s"
	[ "$EXIT_CODE" = 0 ] || die "agent exit code $EXIT_CODE, expected 0 (failover)"
	t_over=$(now_ms)
	RESTORED_PID=$(cat "$backup/qemu.pid" 2>/dev/null)
	pass "the agent restored the VM in $BAK_NS ($(( t_over - t_kill )) ms after the kill)"

	# Every reply after the agent is done comes from the restored VM.
	wait_for 40 answered_since "$client" "$t_over"
	t_back=$(client_last_reply_ms "$client")
	if [ "$t_back" -gt "$t_over" ]; then
		log "the restored VM answers the client $(( t_back - t_kill )) ms after the kill"
		sleep 5
	fi
	touch "$T/$client.stop"
	wait_exit "$CLIENT" 45 || die "the client did not stop"
	CLIENT_EXIT=$EXIT_CODE
	log "$(cat "$T/$client.log")"
	[ -s "$T/$client.json" ] || die "the client wrote no result"

	# What the client saw, as shell assignments.
	summary=$(python3 - "$T/$client.json" "$t_kill" <<'EOF'
import json, statistics, sys
d = json.load(open(sys.argv[1]))
t_kill_rel = int(sys.argv[2]) - d["start_unix"] * 1000
after = sum(1 for t in d["recv_ms"] if t > t_kill_rel)
fb = d["first_bad"]
saw = []
if d["reset"]: saw.append("the connection was reset")
if d["timeout"]: saw.append("no reply for %.0f ms (timeout)" % d["max_gap_ms"])
if d["error"]: saw.append("error: " + d["error"])
if fb: saw.append("a %s: %d after %d (reply #%d)" % (fb["kind"], fb["value"], fb["prev"], fb["index"]))
print("C_REQUESTS=%d C_AFTER=%d C_RESET=%d C_TIMEOUT=%d C_CONSEC=%d" % (
    d["requests"], after, d["reset"], d["timeout"], d["consecutive"]))
print("C_ERROR=%s" % json.dumps(d["error"] or ""))
# Latency while protected: replies received before the kill (the restored VM
# runs unreplicated, its replies are not held).
lat = [l for l, t in zip(d["latencies_ms"], d["recv_ms"]) if t < t_kill_rel]
print("C_GAP=%.0f C_MEDIAN=%.1f" % (d["max_gap_ms"], statistics.median(lat) if lat else 0))
print("C_FIRST=%d C_LAST=%d" % ((d["values"][0], d["values"][-1]) if d["values"] else (-1, -1)))
print("C_SAW=%s" % json.dumps("; ".join(saw)))
print("C_STOPPED=%s" % json.dumps(d["stopped_by"] or "failure"))
EOF
	) || die "cannot read $T/$client.json"
	eval "$summary"
	log "client: $C_REQUESTS replies ($C_FIRST..$C_LAST), $C_AFTER after the kill, median latency before it $C_MEDIAN ms, longest wait (client-visible outage) $C_GAP ms, ended by $C_STOPPED"

	# A new connection, once the first one is closed (the counter is shared:
	# a second client in between would put a gap into the first one's).
	start_client "$CLI_NS" "$probe" "$VM_IP" "$VM_PORT" --max-requests 3 --timeout-s 10
	wait_exit "$CLIENT_PID" 20 || fail "probe client did not finish"
	PROBE=$(json_field "$T/$probe.json" values 2>/dev/null |
		python3 -c 'import json,sys; v=json.load(sys.stdin); print(v[0] if v else -1)' 2>/dev/null)
	PROBE=${PROBE:--1}
}

# stop_restored: stop the VM the last failover restored (by its pid file).
stop_restored() {
	[ -n "${RESTORED_PID:-}" ] || return 0
	if [ "$(cat /proc/"$RESTORED_PID"/comm 2>/dev/null)" = qemu-system-x86 ]; then
		kill -KILL "$RESTORED_PID"
		wait_for 10 sh -c "! kill -0 $RESTORED_PID 2>/dev/null" || die "restored QEMU $RESTORED_PID does not go"
	fi
	RESTORED_PID=
}

log "output commit $MODE"
testnet_up
log "testnet $TESTNET_PREFIX: client $CLI_NS, primary $PRI_NS, backup $BAK_NS"

if [ "$MODE" = on ]; then
	failover_run 1
	[ "$C_RESET" = 0 ] && pass "the connection was never reset" || fail "the connection was reset"
	[ "$C_TIMEOUT" = 0 ] && pass "no request went unanswered (longest wait $C_GAP ms)" ||
		fail "a request went unanswered for $C_GAP ms"
	[ -z "$C_ERROR" ] && pass "no client error" || fail "client error: $C_ERROR"
	[ "$C_CONSEC" = 1 ] && pass "all $C_REQUESTS replies consecutive across the failover ($C_FIRST..$C_LAST)" ||
		fail "replies not consecutive: $C_SAW"
	[ "$C_AFTER" -ge 10 ] && pass "the restored VM answered $C_AFTER requests on the same connection" ||
		fail "only $C_AFTER replies after the kill"
	[ "$CLIENT_EXIT" = 0 ] || fail "counter_client exit $CLIENT_EXIT"
	# Held output: a reply waits for the end of its epoch, its pause and the
	# backup's ack (the default policy ends the epoch once a reply waits,
	# so pause + ack is also about what it should wait).
	python3 -c "import sys; sys.exit(not $C_MEDIAN >= ${PAUSE_P50:-10})" &&
		pass "replies waited for their checkpoint (median latency before the kill $C_MEDIAN ms, pause p50 $PAUSE_P50 ms + ack p50 $ACK_P50 ms, default epoch policy)" ||
		fail "median reply latency $C_MEDIAN ms, below the pause ($PAUSE_P50 ms): are replies really held until their epoch commits?"
	[ "$PROBE" = $((C_LAST + 1)) ] &&
		pass "a new connection gets $PROBE: the restored VM remembers exactly what the client saw" ||
		fail "a new connection got $PROBE, expected $((C_LAST + 1))"
	log "client-visible outage: $C_GAP ms; $C_REQUESTS requests"
else
	# Even without output commit, a kill that falls while the VM is paused
	# for a checkpoint (once its device state is saved: the checkpoint still
	# commits, its RAM outlives QEMU), or just after, before the VM has
	# answered anything, loses no reply the client has: about one failover
	# in ten here shows nothing. So up to OFF_ATTEMPTS of them.
	seen=''
	for attempt in $(seq 1 "$OFF_ATTEMPTS"); do
		log "attempt $attempt of $OFF_ATTEMPTS"
		stop_restored
		failover_run "$attempt"
		if [ "$PROBE" -ge 0 ] && [ "$PROBE" -le "$C_LAST" ]; then
			log "a new connection gets $PROBE, while the client already had $C_LAST: the restored VM forgot replies that had left the primary"
		else
			log "a new connection gets $PROBE (the client's last reply was $C_LAST)"
		fi
		if [ -n "$C_SAW" ]; then
			seen=$C_SAW
			break
		fi
		log "attempt $attempt: the client saw nothing wrong ($C_REQUESTS consecutive replies); the kill fell where no released reply was lost"
	done
	if [ -n "$seen" ]; then
		pass "without output commit the client sees the failure: $seen"
	else
		fail "without output commit the client saw nothing wrong in $OFF_ATTEMPTS failovers"
	fi
fi
finish
