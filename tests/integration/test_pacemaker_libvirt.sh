#!/bin/bash
# Pacemaker moves a replicated libvirt domain: the two-node Pacemaker +
# Corosync cluster of test_pacemaker.sh (tests/integration/pacemaker.sh),
# each node with a private libvirtd of its own (scripts/libvirt-host) in
# the node's namespaces, so that a fence of the node ("power off":
# every process of its namespace killed) takes its libvirtd and the
# domain's QEMU with it. The pair's file names the domain ([vm] domain),
# each host's libvirt ([host] libvirt-uri) and takeover = manual.
#
# The domain is started by hand in node1's libvirt; the resource is then
# created: its probe on node1 must not take the started domain for a
# restored one left without its daemon (that would fence node1), so the
# clone is promoted on node1 (the replicator attaches to the domain) and
# protected to node2. Then the domain's QEMU is killed: Pacemaker fences
# node1 (or demotes it cleanly, see test_pacemaker.sh) and promotes node2,
# whose agent restores the domain into node2's libvirt from the last
# committed checkpoint: its console counter goes on without a reboot.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/pacemaker.sh"
trap 'pcmk_cleanup; libvirt_cleanup; cleanup' EXIT
trap 'exit 143' TERM
trap 'exit 130' INT

skip() { log "skip - $*"; log "SKIP $(basename "$0")"; exit 0; }
for c in pacemakerd corosync crm_mon cibadmin; do
	command -v "$c" > /dev/null || skip "no $c (apt-get install pacemaker corosync pacemaker-cli-utils)"
done
command -v libvirtd > /dev/null || die "libvirtd is not installed (scripts/install-deps)"

RA_DIR=$PCMK_DIR/ocf/remus
PAIR=vm1
DOMAIN=remus-pklv-$$

# node_libvirt NODE: the node's own libvirtd, started inside the node as
# its init would (its namespaces: QEMU must see the node's /run, where the
# replicator gives it its files); prints its URI.
node_libvirt() {
	local dir=$T/$1-libvirt uri
	uri=$(pcmk_on "$1" "$ROOT/scripts/libvirt-host" start "$dir") || die "cannot start $1's libvirtd"
	LIBVIRT_HOSTS+=("$dir")
	virsh -c "$uri" domcapabilities --virttype qemu > /dev/null || die "$1's libvirtd cannot probe QEMU"
	echo "$uri"
}

# domain_qemu URI: the pid of the domain's QEMU (the node's libvirt runs
# it; its command line names the domain as guest=NAME).
domain_qemu() {
	local p
	for p in $(pgrep -f -- "guest=$DOMAIN,"); do
		case $(readlink "/proc/$p/exe") in */qemu-system-*) echo "$p"; return 0 ;; esac
	done
	return 1
}

mkdir -p "$RA_DIR"
install -m 0755 "$ROOT/scripts/ocf/remus" "$RA_DIR/remus"
pcmk_start node1 node2
pcmk_setup_fencing || die "cannot configure the stonith device"
pcmk_wait_fence_device node1 30 && pcmk_wait_fence_device node2 30 ||
	die "the fencers did not register the stand-in power switch"
pass "two-node cluster up in ${PCMK_UP_MS} ms, stonith device registered on both nodes"
URI1=$(node_libvirt node1)
URI2=$(node_libvirt node2)

cat > "$T/$PAIR.conf" <<EOF
# $PAIR, a libvirt domain managed by Pacemaker (ocf:remus:remus)
[pair]
name = $PAIR
[vm]
domain = $DOMAIN
[host node1]
address = $PCMK_NET.1:7701
state-dir = $T/node1-$PAIR
libvirt-uri = $URI1
[host node2]
address = $PCMK_NET.2:7701
state-dir = $T/node2-$PAIR
libvirt-uri = $URI2
[backup]
takeover = manual
[link]
key-file = $KEY
EOF

guest_domain_xml "$DOMAIN" 128 "" "$T/serial-node1.log" memfd > "$T/domain.xml"
virsh -c "$URI1" create "$T/domain.xml" > /dev/null || die "cannot start domain $DOMAIN on node1"
wait_for 60 grep -qa 'guest: ready' "$T/serial-node1.log" ||
	die "domain $DOMAIN did not boot: $(domain_gone_why "$URI1" "$DOMAIN")"
QEMU1=$(domain_qemu) || die "no QEMU of domain $DOMAIN"
ip netns identify "$QEMU1" | grep -qx "$(pcmk_ns node1)" &&
	pass "domain $DOMAIN runs in node1's libvirt, its QEMU (pid $QEMU1) in node1's namespace" ||
	die "the domain's QEMU runs outside node1: $(ip netns identify "$QEMU1")"

pcmk_cib_apply resources "$(remus_clone_xml $PAIR)" || die "cannot add the resource"
pcmk_wait_promoted $PAIR node1 90 &&
	pass "promoted on node1, where the domain was started (its probe found no orphan)" ||
	die "not promoted on node1: $(pcmk_on node1 crm_mon -1 2>&1 | tail -n 20); fence log: $(cat "$PCMK_DIR/fence.log" 2>/dev/null)"
[ ! -s "$PCMK_DIR/fence.log" ] && pass "no node was fenced on the way" ||
	fail "a node was fenced: $(cat "$PCMK_DIR/fence.log")"
wait_for 90 remus_protected $PAIR node1 && pass "the domain is protected to node2" ||
	die "not protected: $(remus_status $PAIR node1 protection); $(tail -n 5 "$PCMK_DIR/node1/log-pacemaker/remus-$PAIR.log")"
[ "$(remus_status $PAIR node2 state)" = backup ] && [ "$(remus_status $PAIR node2 takeover)" = manual ] &&
	pass "node2's agent is the backup, takeover = manual" ||
	fail "node2's agent: state $(remus_status $PAIR node2 state)"

# --- the domain's QEMU dies on node1
sleep 3
KILL_MS=$(now_ms)
kill -KILL "$QEMU1"
TICK=$(last_tick "$T/serial-node1.log")
log "domain $DOMAIN's QEMU killed on node1 at tick $TICK"
remus_fenced_or_demoted $PAIR node1 node2 "$QEMU1"
pcmk_wait_promoted $PAIR node2 90 && PROMOTE_MS=$(now_ms) && pass "promoted on node2" ||
	fail "not promoted on node2: $(pcmk_on node2 crm_mon -1 2>&1 | tail -n 20)"

domain_runs "$URI2" "$DOMAIN" && pass "domain $DOMAIN runs in node2's libvirt" ||
	fail "domain $DOMAIN on node2: $(domain_gone_why "$URI2" "$DOMAIN")"
remus_carries_on "$T/node2-$PAIR/serial.log" "$TICK" "the domain on node2"
[ "$(remus_status $PAIR node2 daemon)" = replicator ] &&
	pass "node2's daemon is the domain's replicator now" ||
	fail "node2's daemon: $(remus_status $PAIR node2 daemon)"
# node2's monitor keeps it promoted: the restored domain runs with its daemon
sleep 5
[ "$(pcmk_mon promoted $PAIR on node2)" = node2 ] && pass "still promoted on node2 5 s later" ||
	fail "no longer promoted on node2: $(pcmk_on node2 crm_mon -1 2>&1 | tail -n 10)"
log "timings: QEMU killed -> promoted on node2 $(( ${PROMOTE_MS:-0} - KILL_MS )) ms"
# Domains first (a fenced node's libvirtd is gone already), then the
# cluster: the EXIT trap does the rest.
virsh -c "$URI2" destroy "$DOMAIN" > /dev/null 2>&1
finish
