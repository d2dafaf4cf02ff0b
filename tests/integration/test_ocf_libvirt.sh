#!/bin/bash
# ocf:remus:remus (scripts/ocf/remus) with the VM a libvirt domain ([vm]
# domain, [backup] takeover = manual): two private libvirtds stand in for
# the hosts' libvirts, and the resource agent's actions run as Pacemaker
# would run them on each host.
#
#   - a probe on host a, where the domain was started by hand and no
#     daemon runs yet, says "not running" (7): the started VM is not an
#     orphan, so the cluster does not fence the host it was started on;
#   - start on both hosts: host a's agent starts beside the running domain;
#     promote a attaches its replicator (the domain is protected to b);
#   - demote a parks the VM on b (the domain is destroyed on a: a libvirt
#     domain is never kept parked); a promote of a is refused, b's
#     restores the domain into b's libvirt, the counter going on from its
#     last tick on a, and protects it back to a;
#   - b's daemon dies while its restored domain runs: monitor on b says
#     error (1) and stop fails, so that Pacemaker would fence b rather than
#     run the VM twice; with b's libvirtd down as well, the QEMU of the
#     domain still counts (whether it was restored cannot be told);
#   - the restored domain's definition started again by hand runs on the
#     state dir's files: an orphan too, and no agent starts beside it; the
#     VM's own domain started by hand is none.
. "$(dirname "$0")/lib.sh"

command -v libvirtd > /dev/null || die "libvirtd is not installed (scripts/install-deps)"
command -v virsh > /dev/null || die "virsh is not installed (scripts/install-deps)"

NAME=remus-ocflv-$$
libvirt_host a; A_URI=$LIBVIRT_URI
libvirt_host b; B_URI=$LIBVIRT_URI
PA=$(free_port)
PB=$(free_port)

cat > "$T/pair.conf" <<EOF
[pair]
name = vm1
[vm]
domain = $NAME
[host a]
address = 127.0.0.1:$PA
state-dir = $T/host-a
control-socket = $T/a.ctl
libvirt-uri = $A_URI
[host b]
address = 127.0.0.1:$PB
state-dir = $T/host-b
control-socket = $T/b.ctl
libvirt-uri = $B_URI
[backup]
takeover = manual
[link]
key-file = $KEY
EOF

# ra HOST ACTION: ocf_ra, its stderr (what Pacemaker logs) in
# $T/ra-HOST-ACTION.err.
ra() { ocf_ra "$@" 2> "$T/ra-$1-$2.err"; }
ra_pid() { cat "$T/rsc-$1/remus-vm1-$1.pid"; }
status_of() { "$BIN/remusctl" --control "$T/$1.ctl" --json status 2>/dev/null; }
protected_on() { status_of "$1" | grep -q '"protection":"protected"'; }
# status_key HOST KEY: one field of the host's daemon's status.
status_key() {
	status_of "$1" | python3 -c "import json,sys; print(json.load(sys.stdin).get('$2'))" 2>/dev/null
}
domstate() { domain_state "$1" "$NAME"; }

guest_domain_xml "$NAME" 128 "" "$T/serial-a.log" memfd > "$T/domain.xml"
virsh -c "$A_URI" create "$T/domain.xml" > /dev/null || die "cannot start domain $NAME"
wait_for 60 grep -qa 'guest: ready' "$T/serial-a.log" ||
	die "domain $NAME did not boot: $(domain_gone_why "$A_URI" "$NAME")"

# --- the probe before anything runs: the domain started here is no orphan
ra a monitor
rc=$?
[ $rc = 7 ] && pass "probe on host a with the started domain and no daemon: not running (7)" ||
	fail "probe on host a: $rc, expected 7: $(cat "$T/ra-a-monitor.err")"

ra b start && PIDS+=("$(ra_pid b)") && pass "host b's agent started" ||
	die "host b's agent did not start: $(tail -n 5 "$T/b.log")"
ra a start && PIDS+=("$(ra_pid a)") && pass "host a's agent started beside the running domain" ||
	die "host a's agent did not start: $(cat "$T/ra-a-start.err"; tail -n 5 "$T/a.log")"
[ "$(status_key a vm_started_here)" = True ] &&
	pass "host a's agent sees the domain started there" ||
	fail "host a's agent: $(status_of a)"
ra a promote && pass "host a promoted" || die "host a not promoted: $(cat "$T/ra-a-promote.err")"
wait_for 60 protected_on a && pass "the domain is protected to host b" ||
	die "not protected: $(tail -n 5 "$T/a.log")"
ra a monitor
[ $? = 8 ] && pass "monitor on host a: promoted (8)" || fail "monitor on host a: not promoted"

# --- demote a: parked on b; a cannot come back, b restores it
ra a demote && pass "host a demoted" || fail "demote of host a: $(cat "$T/ra-a-demote.err")"
LAST=$(last_tick "$T/serial-a.log")
[ "$(domstate "$A_URI")" != running ] && [ "$(domstate "$A_URI")" != paused ] &&
	pass "the domain is gone from host a's libvirt ($(domstate "$A_URI"))" ||
	fail "the domain still runs on host a: $(domstate "$A_URI")"
ra a promote && fail "host a was promoted without the VM's newest state" ||
	pass "host a, holding nothing newer, is not promoted: $(tail -n 1 "$T/ra-a-promote.err")"
ra b promote && pass "host b promoted" || die "host b not promoted: $(cat "$T/ra-b-promote.err"; tail -n 5 "$T/b.log")"
domain_runs "$B_URI" "$NAME" && pass "the domain runs in host b's libvirt" ||
	fail "the domain on host b: $(domstate "$B_URI")"
wait_for 30 sh -c "[ \$(tr -d '\r' < '$T/host-b/serial.log' 2>/dev/null | grep -ac '^tick') -ge 3 ]"
FIRST=$(first_tick "$T/host-b/serial.log")
[ "$FIRST" = $((LAST + 1)) ] && ticks_consecutive "$T/host-b/serial.log" &&
	! grep -qa 'guest: ready' "$T/host-b/serial.log" &&
	pass "restored on host b, the guest goes on from its last tick on host a ($LAST -> $FIRST)" ||
	fail "on host b the guest's first tick is $FIRST after $LAST"
wait_for 60 protected_on b && pass "host b protects the domain to host a" ||
	fail "host b's domain is not protected: $(tail -n 5 "$T/b.log")"
virsh -c "$B_URI" dumpxml "$NAME" | grep -q "state-dir=\"$T/host-b\"" &&
	pass "its live XML says it was restored into host b's state dir" ||
	fail "the restored domain's live XML has no mark"
ra b monitor
[ $? = 8 ] && pass "monitor on host b: promoted (8)" || fail "monitor on host b: not promoted"

# --- b's daemon dies under its restored domain: an orphan
B_DAEMON=$(ra_pid b)
kill -KILL "$B_DAEMON"
wait_for 10 process_gone "$B_DAEMON" || die "host b's daemon (pid $B_DAEMON) did not die"
ra b monitor
rc=$?
[ $rc = 1 ] && grep -q "a restored VM runs here (libvirt domain $NAME) without its daemon" \
	"$T/ra-b-monitor.err" &&
	pass "monitor on host b: error (1), $(tail -n 1 "$T/ra-b-monitor.err")" ||
	fail "monitor on host b with its daemon killed: $rc, $(cat "$T/ra-b-monitor.err")"
ra b stop
rc=$?
[ $rc = 1 ] && pass "stop on host b fails (1): Pacemaker would fence host b" ||
	fail "stop on host b with the restored domain running: $rc"
# paused if the daemon died between a checkpoint's stop and cont
case $(domstate "$B_URI") in
running | paused) pass "the restored domain is still there, $(domstate "$B_URI") (not ours to kill)" ;;
*) fail "the restored domain on host b: $(domstate "$B_URI")" ;;
esac
ra b start
rc=$?
[ $rc != 0 ] && grep -q "runs on this host" "$T/b.log" &&
	pass "start on host b fails ($rc): no agent writes under the restored domain" ||
	fail "start on host b beside its restored domain: $rc, $(tail -n 2 "$T/b.log")"
rm -f "$T/rsc-b/remus-vm1-b.pid"

# libvirtd down too: the domain's QEMU still counts
B_QEMU=
for p in $(pgrep -f -- "guest=$NAME,"); do
	case $(readlink "/proc/$p/exe") in */qemu-system-*) B_QEMU=$p ;; esac
done
[ -n "$B_QEMU" ] || die "no QEMU of domain $NAME found on host b"
"$ROOT/scripts/libvirt-host" stop "$T/b-libvirt"
ra b monitor
rc=$?
[ $rc = 1 ] && grep -q "does not answer" "$T/ra-b-monitor.err" &&
	pass "with host b's libvirtd down, its QEMU still counts: $(tail -n 1 "$T/ra-b-monitor.err" | cut -c1-140)" ||
	fail "monitor on host b with libvirtd down: $rc, $(cat "$T/ra-b-monitor.err")"
# The restored domain goes. Its definition, started again by hand (or by
# autostart, libvirt-guests), runs on the state dir's files (the overlay,
# the serial log) with no mark: still an orphan. The VM's own domain,
# started by hand from its own files, is not.
kill -KILL "$B_QEMU"
B_URI=$("$ROOT/scripts/libvirt-host" start "$T/b-libvirt") || die "cannot start host b's libvirtd again"
shut_off() { [ "$(domstate "$B_URI")" = "shut off" ]; }
wait_for 20 shut_off ||
	die "the killed domain on host b: $(domstate "$B_URI")"
virsh -c "$B_URI" start "$NAME" > /dev/null || die "cannot start the restored domain's definition on host b"
ra b monitor
rc=$?
[ $rc = 1 ] && grep -q "(libvirt domain $NAME) without its daemon" "$T/ra-b-monitor.err" &&
	pass "the restored domain's definition started by hand on host b is an orphan too (1)" ||
	fail "monitor on host b with the definition started by hand: $rc, $(cat "$T/ra-b-monitor.err")"
ra b start
rc=$?
[ $rc != 0 ] && pass "and host b's agent does not start beside it ($rc)" ||
	fail "host b's agent started beside the restored domain's definition"
rm -f "$T/rsc-b/remus-vm1-b.pid"
virsh -c "$B_URI" destroy "$NAME" > /dev/null && virsh -c "$B_URI" undefine "$NAME" > /dev/null ||
	die "cannot remove the domain from host b"
guest_domain_xml "$NAME" 128 "" "$T/serial-b-by-hand.log" memfd > "$T/domain-b.xml"
virsh -c "$B_URI" create "$T/domain-b.xml" > /dev/null || die "cannot start the VM's own domain on host b"
ra b monitor
rc=$?
[ $rc = 7 ] && pass "the VM's own domain started by hand on host b is no orphan (7)" ||
	fail "monitor on host b with the VM's own domain started by hand: $rc, $(cat "$T/ra-b-monitor.err")"
virsh -c "$B_URI" destroy "$NAME" > /dev/null
ra a stop || fail "host a's stop: $(cat "$T/ra-a-stop.err")"
finish
