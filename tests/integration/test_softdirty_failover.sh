#!/bin/bash
# The replicator end to end with the soft-dirty tracker, against a real
# QEMU: test_replica_exact.sh (a byte-exact replica after a planned
# failover, then a SIGKILL failover) with the default tracker (auto), which
# must choose soft-dirty there, inside a VM booted with Debian's cloud
# kernel, which keeps the soft-dirty log (scripts/nested-vm; the test
# guest runs nested, TCG inside TCG, so it boots in minutes, not seconds).
# The VM boots bookworm-backports' 6.12 where scripts/nested-host-qemu has
# fetched it (make check does): the tracker then reads the log by
# PAGEMAP_SCAN, which the test checks; else this host's kernel (Debian 12's
# 6.1), where it reads pagemap (test_kvm.sh runs there).
# Skips, with the reason, when the kernel, its config, busybox-static or
# QEMU is missing.
. "$(dirname "$0")/lib.sh"

skip() { log "skip - $*"; log "SKIP $(basename "$0")"; exit 0; }

# the kernel the VM boots: 6.12 where it was fetched, else this host's
KROOT=$("$ROOT/scripts/nested-host-qemu" --check --kernel 2>/dev/null) || KROOT=
KERNEL=$(cloud_kernel "$KROOT")
[ -n "$KERNEL" ] || skip "no $KROOT/boot/vmlinuz-*-cloud-amd64 (install linux-image-cloud-amd64)"
KVERSION=${KERNEL##*/vmlinuz-}
grep -q '^CONFIG_MEM_SOFT_DIRTY=y' "$KROOT/boot/config-$KVERSION" 2>/dev/null ||
	skip "$KERNEL's config lacks CONFIG_MEM_SOFT_DIRTY"
LOG_READ=$(log_read_on "$KVERSION")
[ -x /bin/busybox ] && ! ldd /bin/busybox >/dev/null 2>&1 || skip "no static /bin/busybox (busybox-static)"
command -v qemu-system-x86_64 >/dev/null || skip "no qemu-system-x86_64"

start=$(now_ms)
NESTED_VM_KERNEL_ROOT=$KROOT "$ROOT/scripts/nested-vm" --mem 3G --timeout 540 -- \
	env EXPECT_TRACKER=soft-dirty EXPECT_LOG_READ=$LOG_READ \
	GUEST_BOOT_TIMEOUT=400 DIRTY_MB_S=5 tests/integration/test_replica_exact.sh > "$T/vm.log" 2>&1
rc=$?
log "the VM ran $(( ($(now_ms) - start) / 1000 )) s; test_replica_exact.sh inside it:"
grep -a -e ' ok - ' -e 'not ok - ' -e 'PASS ' -e 'FAIL ' -e '^nested-vm:' "$T/vm.log" | sed 's/^/    /'
[ "$rc" = 124 ] && die "scripts/nested-vm could not build the VM: $(tail -n 1 "$T/vm.log")"
grep -qa 'ok - the tracker is soft-dirty, as expected' "$T/vm.log" &&
	pass "the replicator in the VM chose the soft-dirty tracker by itself (auto)" ||
	fail "the replicator in the VM did not say it ran the soft-dirty tracker"
if [ "$rc" = 0 ]; then
	pass "test_replica_exact.sh passed with the soft-dirty tracker"
else
	fail "test_replica_exact.sh with the soft-dirty tracker: exit $rc; the VM's last lines:"
	tail -n 40 "$T/vm.log" | sed 's/^/    /'
fi
finish
