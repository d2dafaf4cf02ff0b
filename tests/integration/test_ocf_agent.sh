#!/bin/bash
# ocf:remus:remus (scripts/ocf/remus) under Debian's ocf-tester (issue #20),
# against a real pair on loopback: host a is the instance under test, with
# the VM started on it; host b's agent runs beside it (started through the
# same resource agent). ocf-tester starts, promotes (the replicator
# attaches to the VM started on a), demotes (remusctl park: b keeps the
# final epoch, a's QEMU stays paused), promotes again (b still holds that
# epoch unused, so the parked VM resumes on a), demotes again and stops
# (the parked QEMU goes with a's agent). Then:
# the guest's counter went on through all of it (no reboot, no tick lost),
# and b's agent holds the last parked epoch, ready to be promoted, even
# after a restart of that agent. Host a, holding nothing newer, is then
# refused a promote; host b's promote restores the VM from the parked
# epoch, the counter going on from its last tick on host a, and protects it
# to host a; stopping both parks it there.
. "$(dirname "$0")/lib.sh"

skip() { log "skip - $*"; log "SKIP $(basename "$0")"; exit 0; }
command -v ocf-tester > /dev/null || skip "no ocf-tester (apt-get install resource-agents)"

RA=$ROOT/scripts/ocf/remus
PA=$(free_port)
PB=$(free_port)
start_guest g1 128 ""
cat > "$T/pair.conf" <<EOF
[pair]
name = vm1
[vm]
qmp = $T/g1/qmp.sock
[host a]
address = 127.0.0.1:$PA
state-dir = $T/host-a
control-socket = $T/a.ctl
[host b]
address = 127.0.0.1:$PB
state-dir = $T/host-b
control-socket = $T/b.ctl
[backup]
takeover = manual
[link]
key-file = $KEY
EOF

ra() { ocf_ra "$@"; }

ra b meta-data | python3 -c 'import sys, xml.etree.ElementTree as E; E.fromstring(sys.stdin.read())' &&
	pass "meta-data is well-formed XML" || fail "meta-data is not XML"
ra b start && PIDS+=("$(cat "$T/rsc-b/remus-vm1-b.pid")") && pass "host b's agent started" ||
	die "host b's agent did not start: $(tail -n 5 "$T/b.log")"
BEFORE=$(last_tick "$T/g1/serial.log")

HA_RSCTMP=$T/rsc-a ocf-tester -n vm1-a -o config="$T/pair.conf" -o host=a -o control="$T/a.ctl" \
	-o sbindir="$BIN" -o remusctl="$BIN/remusctl" -o log="$T/a.log" "$RA" > "$T/ocf-tester.out" 2>&1
rc=$?
p=$(cat "$T/rsc-a/remus-vm1-a.pid" 2>/dev/null) && PIDS+=("$p")
sed 's/^/    /' "$T/ocf-tester.out"
[ $rc = 0 ] && grep -q "passed all tests" "$T/ocf-tester.out" &&
	pass "ocf-tester passes" || fail "ocf-tester exits $rc"

# The VM: parked twice on a, resumed once; b holds it now.
PARKS=$(grep -c "park complete" "$T/a.log")
RESUMES=$(grep -c "takeover: the VM parked here resumes" "$T/a.log")
[ "$PARKS" -ge 2 ] && pass "each demote of the promoted VM parked it on host b ($PARKS)" ||
	fail "parks: $PARKS"
[ "$RESUMES" -ge 1 ] && [ "$RESUMES" -lt "$PARKS" ] &&
	pass "each promote after a demote resumed the parked QEMU ($RESUMES): host b still held its epoch unused" ||
	fail "parked VM resumed $RESUMES time(s)"
st=$("$BIN/remusctl" --control "$T/b.ctl" --json status)
python3 -c "import json,sys; o=json.loads(sys.argv[1]); sys.exit(0 if o['state']=='ready' and o['takeover_ready'] else 1)" "$st" &&
	pass "host b holds the VM's last state, ready to be promoted" || fail "host b: $st"
AFTER=$(last_tick "$T/g1/serial.log")
[ "$AFTER" -gt "$BEFORE" ] && ticks_consecutive "$T/g1/serial.log" &&
	[ "$(grep -ac 'guest: ready' "$T/g1/serial.log")" = 1 ] &&
	pass "the guest's counter went on ($BEFORE -> $AFTER), every tick once, no reboot" ||
	fail "the guest's counter: $BEFORE -> $AFTER"
# The parked state outlives an agent restart; the host without it is not
# promoted; the one with it restores the VM exactly where it stopped.
ra b stop && ra b start && PIDS+=("$(cat "$T/rsc-b/remus-vm1-b.pid")") ||
	die "host b's agent did not restart"
st=$("$BIN/remusctl" --control "$T/b.ctl" --json status)
python3 -c "import json,sys; o=json.loads(sys.argv[1]); sys.exit(0 if o['state']=='ready' and o['takeover_ready'] else 1)" "$st" &&
	pass "restarted, host b's agent still holds the parked epoch, ready" || fail "host b after a restart: $st"
ra a start && PIDS+=("$(cat "$T/rsc-a/remus-vm1-a.pid")") || die "host a's agent did not start"
ra a promote 2> "$T/promote-a.err" && fail "host a was promoted without the VM's newest state" ||
	pass "host a, holding nothing newer, is not promoted: $(tail -n 1 "$T/promote-a.err")"
LAST=$(last_tick "$T/g1/serial.log")
ra b promote && pass "host b promoted" || fail "host b not promoted: $(tail -n 5 "$T/b.log")"
wait_for 30 sh -c "[ \$(tr -d '\r' < '$T/host-b/serial.log' 2>/dev/null | grep -ac '^tick') -ge 3 ]"
FIRST=$(first_tick "$T/host-b/serial.log")
[ "$FIRST" = $((LAST + 1)) ] && ticks_consecutive "$T/host-b/serial.log" &&
	! grep -qa 'guest: ready' "$T/host-b/serial.log" &&
	pass "restored on host b, the guest goes on from its last tick on host a ($LAST -> $FIRST)" ||
	fail "on host b the guest's first tick is $FIRST after $LAST"
wait_for 60 sh -c "'$BIN/remusctl' --control '$T/b.ctl' --json status | grep -q '\"protection\":\"protected\"'" &&
	pass "host b protects the VM to host a" || fail "host b's VM is not protected"
ra b stop && ra a stop && pass "both stopped (host b parked the VM on host a first)" ||
	fail "stopping: a $(tail -n 2 "$T/a.log") b $(tail -n 2 "$T/b.log")"
finish
