#!/bin/bash
# A backup that does not answer must not slow the VM down. The replicator
# points at an address of the replication subnet that nobody holds: its
# connects get no answer (no ARP reply: each attempt waits seconds before
# it fails), and it tries again every second, all on the loop the VM's net
# buffer runs on. A client on the LAN makes requests back to back over one
# connection meanwhile. Its reply latency p99 must stay within 2 ms of the
# same VM's with a backup that refuses at once (nothing listens on its
# port): a connect or handshake that waited on the loop would show as a
# stall of up to a second per attempt (issue #15), which p99 may hide (one
# request in thousands) but not the longest wait, which must stay under
# 250 ms. Each case runs twice, alternated, and the better figure of each
# counts (the host is shared).
#
# Topology (scripts/testnet): the client in CLI_NS, the VM, its replicator
# and its AF_PACKET port in PRI_NS; PRI_NS rep0 is on 192.168.78.0/24, where
# BACKUP_ADDR answers (nothing listens on port 1) and .9 is nobody.
. "$(dirname "$0")/lib.sh"

VM_PORT=7777
SILENT_ADDR=192.168.78.9
SECONDS_PER_RUN=6

testnet_up
start_guest unreach 128 "ip_addr=$VM_IP/24 tcp_port=$VM_PORT" --net --netns "$PRI_NS"

# run_case NAME BACKUP: the replicator with that backup, a client run; sets
# P99 and MAX (latency, ms) and REPLIES.
run_case() {
	local name=$1 backup=$2 out
	rm -f "$T/ctl.sock"
	start_replicator_in "$PRI_NS" "$T/unreach/qmp.sock" "$backup" \
		--net-out "n0=packet:$PRI_LAN_IF"
	wait_for 10 test -S "$T/ctl.sock" || die "replicator ($name) did not start"
	sleep 1.5 # a connect attempt or two under way
	start_client "$CLI_NS" "$name" "$VM_IP" "$VM_PORT" --max-seconds "$SECONDS_PER_RUN" \
		--max-requests 1000000 --interval-ms 0 --timeout-s 10
	wait_exit "$CLIENT_PID" $((SECONDS_PER_RUN + 20)) || die "client $name did not finish"
	[ "$EXIT_CODE" = 0 ] || die "client $name failed: $(cat "$T/$name.log")"
	out=$(python3 - "$T/$name.json" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
lat = sorted(d["latencies_ms"])
print("%.2f %.1f %d" % (lat[min(len(lat) - 1, int(len(lat) * 0.99))], lat[-1], len(lat)))
EOF
	) || die "cannot read $T/$name.json"
	read -r P99 MAX REPLIES <<< "$out"
	log "$name: $REPLIES replies, latency p99 $P99 ms, max $MAX ms, protection $(status_field protection)"
	kill -TERM "$REPLICATOR_PID"
	wait_exit "$REPLICATOR_PID" 10 || die "replicator ($name) did not stop"
}

silent_failures() { grep -ac "$SILENT_ADDR:7700: cannot connect" "$T/replicator.log" || true; }
best() { python3 -c 'import sys; print(min(float(a) for a in sys.argv[1:]))' "$@"; }

refusing=() silent=() silent_max=()
for round in 1 2; do
	run_case "refusing$round" "$BACKUP_ADDR:1"
	refusing+=("$P99")
	failed_before=$(silent_failures)
	run_case "silent$round" "$SILENT_ADDR:7700"
	silent+=("$P99")
	silent_max+=("$MAX")
	[ "$REPLIES" -ge 100 ] || fail "only $REPLIES replies in ${SECONDS_PER_RUN} s with a silent backup"
	# Each replicator says its first failure (after ARP gives up, ~3 s).
	[ "$(silent_failures)" -gt "$failed_before" ] &&
		pass "round $round: connects to $SILENT_ADDR went unanswered while the client ran" ||
		fail "round $round: no failed connect to $SILENT_ADDR was logged"
done

# p99 hides a stall of the loop once per attempt (one request in
# thousands); the longest wait shows it.
m=$(best "${silent_max[@]}")
python3 -c 'import sys; sys.exit(0 if float(sys.argv[1]) < 250 else 1)' "$m" &&
	pass "no reply waited 250 ms with an unreachable backup (longest $m ms)" ||
	fail "a reply waited $m ms with an unreachable backup: the loop stalled"
r=$(best "${refusing[@]}") s=$(best "${silent[@]}")
python3 -c 'import sys; sys.exit(0 if float(sys.argv[2]) <= float(sys.argv[1]) + 2 else 1)' "$r" "$s" &&
	pass "reply latency p99 with an unreachable backup $s ms, with a refusing one $r ms (within 2 ms)" ||
	fail "reply latency p99 with an unreachable backup $s ms, with a refusing one $r ms: more than 2 ms apart"

finish
