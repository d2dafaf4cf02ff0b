#!/bin/bash
# The replicator with KVM guests, which this host cannot run itself: inside
# scripts/nested-vm --kvm (Debian's cloud kernel under TCG, with a working
# /dev/kvm), the test guest runs under KVM with 2 vCPUs and
#  1. test_replica_exact.sh: the default tracker (auto) must choose
#     soft-dirty for the KVM guest; after a planned failover the replica
#     equals the primary's final RAM in every byte; the VM, protected in
#     turn, sees a second writer of guest RAM and survives a SIGKILL of its
#     QEMU with its counter going on, no reboot;
#  2. test_disk_forms.sh with a -drive and a -blockdev disk: a SIGKILL in
#     the middle of an epoch in which the guest wrote its disk, and the
#     restored VM's disk matches its memory, its block graph verified;
#  3. test_output_commit.sh: a TCP client on the test network (namespaces,
#     a bridge, veth and TAP in the nested VM: scripts/nested-vm --net)
#     talks to the KVM guest across a SIGKILL failover: no reset, every
#     reply consecutive, replies held until their checkpoint commits.
# The nested VM runs on QEMU 10 from bookworm-backports (make nested-qemu,
# scripts/nested-host-qemu): KVM nested in Debian 12's own TCG (7.2) was
# not steady (of 4 runs on 2026-12-04, in two a 2-vCPU KVM guest reset
# itself, in one the nested kernel locked up; docs/SOFT-DIRTY.md, "With
# KVM"). Skips, with the reason, without it (NESTED_VM_QEMU names another
# emulator to run it on anyway), the cloud kernel, its KVM modules,
# busybox-static or QEMU.
# run-all timeout: 1500
. "$(dirname "$0")/lib.sh"

skip() { log "skip - $*"; log "SKIP $(basename "$0")"; exit 0; }
[ -n "${NESTED_VM_QEMU:-}" ] || "$ROOT/scripts/nested-host-qemu" --check > /dev/null ||
	skip "no QEMU 10 for the nested host (make nested-qemu could not fetch it from" \
	"bookworm-backports); KVM nested in this host's QEMU 7.2 is not steady enough to test on"

# The nested host's kernel: this host's (Debian 12's 6.1, where soft-dirty
# reads pagemap), or NESTED_VM_KERNEL_ROOT's. Not bookworm-backports' 6.12
# (PAGEMAP_SCAN): KVM nested in it was not steady (its first run, on
# 2026-12-06: the 2-vCPU guest reset itself, then the nested kernel's CPU 0
# stalled); test_softdirty_failover.sh runs the replicator on 6.12.
KROOT=${NESTED_VM_KERNEL_ROOT:-}
KROOT=${KROOT%/}
KERNEL=$(cloud_kernel "$KROOT")
[ -n "$KERNEL" ] || skip "no $KROOT/boot/vmlinuz-*-cloud-amd64 (make nested-qemu, or linux-image-cloud-amd64)"
KVERSION=${KERNEL##*/vmlinuz-}
compgen -G "$KROOT/lib/modules/$KVERSION/kernel/arch/x86/kvm/kvm-amd.ko*" > /dev/null ||
	skip "no kvm-amd module for $KVERSION"
LOG_READ=$(log_read_on "$KVERSION")
[ -x /bin/busybox ] && ! ldd /bin/busybox >/dev/null 2>&1 || skip "no static /bin/busybox (busybox-static)"
command -v qemu-system-x86_64 >/dev/null || skip "no qemu-system-x86_64"

# run_vm LOG: the three tests in a fresh nested VM; its exit status.
run_vm() {
	NESTED_VM_KERNEL_ROOT=$KROOT "$ROOT/scripts/nested-vm" --kvm --net --mem 3G --timeout 420 -- \
		env TEST_ACCEL=kvm TEST_SMP=2 GUEST_BOOT_TIMEOUT=120 EXPECT_LOG_READ=$LOG_READ \
		bash -c 'EXPECT_TRACKER=soft-dirty DIRTY_MB_S=5 \
		bash tests/integration/test_replica_exact.sh; a=$?;
		FORMS="drive-qcow2 blockdev-raw" SKIP_REFUSALS=1 bash tests/integration/test_disk_forms.sh; b=$?;
		bash tests/integration/test_output_commit.sh; c=$?;
		echo "test_kvm: test_replica_exact.sh exit $a, test_disk_forms.sh exit $b, test_output_commit.sh exit $c";
		[ $a = 0 ] && [ $b = 0 ] && [ $c = 0 ]' > "$1" 2>&1
}

start=$(now_ms)
run_vm "$T/vm.log"
rc=$?
# KVM nested in TCG is not always steady (docs/SOFT-DIRTY.md, "With KVM":
# on 2026-12-06, after 15 clean runs, a KVM guest's QEMU vanished in the
# middle of an epoch, which the backup rightly took for a failure; in
# another run a replicator stopped answering its control socket; not
# diagnosed). A run that failed is run again in a fresh VM, twice at
# most, its failures logged: a fault that shows every time fails all
# three. A passing run takes about 4 min, each is cut at 7 (the
# "run-all timeout" above leaves room for three).
for attempt in 2 3; do
	[ "$rc" != 0 ] && [ "$rc" != 124 ] || break
	log "run $((attempt - 1)) failed (exit $rc) after $(( ($(now_ms) - start) / 1000 )) s:"
	grep -a -e 'not ok - ' -e 'FAIL ' -e '^test_kvm:' -e ' error: ' -e '^nested-vm:' \
		"$T/vm.log" | sed 's/^/    /'
	# what the failed test kept (its daemons' and guests' last lines): the
	# nested VM's files go with it
	sed -n '/logs kept in/,/^test_kvm:/p' "$T/vm.log" | head -n 150 | sed 's/^/    | /'
	log "running the nested VM again (run $attempt of 3)"
	mv "$T/vm.log" "$T/vm.$((attempt - 1)).log"
	start=$(now_ms)
	run_vm "$T/vm.log"
	rc=$?
done
log "the VM ran $(( ($(now_ms) - start) / 1000 )) s:"
grep -a -e ' ok - ' -e 'not ok - ' -e 'PASS ' -e 'FAIL ' -e '^nested-vm:' -e '^test_kvm:' "$T/vm.log" |
	sed 's/^/    /'
[ "$rc" = 124 ] && die "scripts/nested-vm --kvm: no KVM here: $(grep -a 'nested-vm:' "$T/vm.log" | tail -n 2)"
grep -qa '^nested-vm: /dev/kvm ready' "$T/vm.log" && pass "the nested VM has a working /dev/kvm" ||
	fail "the nested VM did not say /dev/kvm is ready"
grep -qa 'ok - the guest runs under KVM with 2 vCPU(s)' "$T/vm.log" &&
	pass "the guest ran under KVM with 2 vCPUs (the replicator says KVM at attach)" ||
	fail "the replicator did not report a KVM guest"
grep -qa 'ok - the tracker is soft-dirty, as expected' "$T/vm.log" &&
	pass "auto chose soft-dirty for the KVM guest" ||
	fail "the replicator did not run soft-dirty for the KVM guest by itself"
grep -qa 'test_kvm: test_replica_exact.sh exit 0' "$T/vm.log" &&
	pass "KVM, 2 vCPUs: byte-exact replica, protected in turn, SIGKILL failover" ||
	fail "test_replica_exact.sh under KVM failed"
grep -qa 'test_kvm: .*test_disk_forms.sh exit 0' "$T/vm.log" &&
	pass "KVM, 2 vCPUs: disk and memory consistent across a SIGKILL failover (-drive qcow2, -blockdev raw)" ||
	fail "test_disk_forms.sh under KVM failed"
grep -qa 'test_kvm: .*test_output_commit.sh exit 0' "$T/vm.log" &&
	pass "KVM, 2 vCPUs: a TCP client saw no reset and consecutive replies across a SIGKILL failover" ||
	fail "test_output_commit.sh under KVM failed"
[ "$rc" = 0 ] || tail -n 40 "$T/vm.log" | sed 's/^/    /'
finish
