#!/bin/bash
# The soft-dirty tracker is sound: tests/softdirty/soundness.c (the real
# replicator/tracker_softdirty.c against a child writing a shared tmpfs
# mapping, checked by brute force) runs in a VM booted with Debian's cloud
# kernel, which has CONFIG_MEM_SOFT_DIRTY (this host's kernel may not). Six
# runs: a plain tmpfs with one scanning thread and with two (the VM has two
# vCPUs), with two and the log cleared only every third scan (lazy
# clearing: the bits pile up, every flagged page is compared), a tmpfs with huge=always (THP, 2 MiB entries), and the plain tmpfs
# under memory pressure (a memory cgroup limit below the test's size, zram
# swap: pages of the file go to swap and come back while the tracker runs),
# then two threads with the log read the pre-6.7 way.
# The kernel is bookworm-backports' 6.12 (scripts/nested-host-qemu, which
# make check runs) where it has been fetched: the runs then read the log by
# PAGEMAP_SCAN, and the last by the pagemap read; else this host's /boot
# one (Debian 12's 6.1, no PAGEMAP_SCAN): every run reads pagemap.
# Skips, with the reason, when the kernel, its config, busybox-static or a
# static libc is missing.
. "$(dirname "$0")/lib.sh"

skip() { log "skip - $*"; log "SKIP $(basename "$0")"; exit 0; }

# With that kernel the VM runs on the QEMU 10 fetched beside it (7.2's
# default CPU model does not boot 6.12), on its default CPU model
# (SOFTDIRTY_VM_CPU picks another; with max the VM took 238 s, not 162,
# glibc's AVX2 memcmp being slow to emulate); with /boot's kernel, on this
# host's QEMU. NESTED_VM_KERNEL_ROOT=/ picks this host's kernel and QEMU.
VM_QEMU=qemu-system-x86_64 VM_QEMU_ARGS=()
if [ "${NESTED_VM_KERNEL_ROOT-}" != / ] &&
	KROOT=$("$ROOT/scripts/nested-host-qemu" --check --kernel 2>/dev/null); then
	VM_QEMU=$("$ROOT/scripts/nested-host-qemu" --check)
	VM_QEMU_ARGS=(-L "$ROOT/build/nested-qemu/data" ${SOFTDIRTY_VM_CPU:+-cpu "$SOFTDIRTY_VM_CPU"})
else
	KROOT=
fi
KERNEL=$(cloud_kernel "$KROOT")
[ -n "$KERNEL" ] || skip "no /boot/vmlinuz-*-cloud-amd64 (install linux-image-cloud-amd64)"
KVERSION=${KERNEL##*/vmlinuz-}
CONFIG=$KROOT/boot/config-$KVERSION
[ -f "$CONFIG" ] || skip "no $CONFIG to check for CONFIG_MEM_SOFT_DIRTY"
grep -q '^CONFIG_MEM_SOFT_DIRTY=y' "$CONFIG" || skip "$CONFIG lacks CONFIG_MEM_SOFT_DIRTY"
BUSYBOX=/bin/busybox
# ldd refuses a static executable ("not a dynamic executable"); `file` is
# not on a minimal machine.
[ -x "$BUSYBOX" ] && ! ldd "$BUSYBOX" >/dev/null 2>&1 ||
	skip "no static $BUSYBOX (install busybox-static)"
command -v qemu-system-x86_64 >/dev/null || skip "no qemu-system-x86_64"

ROOTFS=$T/root
mkdir -p "$ROOTFS"/{bin,proc,sys,dev,mnt}
gcc -static -O2 -std=gnu11 -D_GNU_SOURCE -Wall -Wextra -Werror -I"$ROOT/replicator" \
	-o "$ROOTFS/bin/soundness" "$ROOT/tests/softdirty/soundness.c" \
	"$ROOT/replicator/tracker_softdirty.c" "$ROOT/replicator/lazy_clear.c" "$ROOT/replicator/scan_pool.c" > "$T/gcc.log" 2>&1 || {
	# no static libc is a missing tool; any other error is ours
	[ -e "$(gcc -print-file-name=libc.a)" ] || skip "no static libc (libc6-dev's libc.a)"
	die "the static soundness test does not build: $(head -c 600 "$T/gcc.log")"
}
pass "built the static soundness test"
cp "$BUSYBOX" "$ROOTFS/bin/busybox"
# zram swap for the pressure run: the kernel's own reclaim path.
# zram and the modules it needs (modinfo's depends, which differ between
# kernels: 6.1's lzo-rle, 6.12's lz4), loaded in order from modules/order;
# 6.12's are compressed and busybox insmod wants them plain.
MODDIR=$KROOT/lib/modules/$KVERSION/kernel
mkdir -p "$ROOTFS/modules"
: > "$ROOTFS/modules/order"
add_module() {
	local f dep
	grep -qx "$1" "$ROOTFS/modules/order" && return 0
	f=$(find "$MODDIR" -name "$1.ko" -o -name "$1.ko.xz" | head -n 1)
	[ -n "$f" ] || return 1
	for dep in $(/sbin/modinfo -F depends "$f" | tr ',' ' '); do
		add_module "$dep" || return 1
	done
	case $f in *.xz) xz -dc "$f" > "$ROOTFS/modules/$1.ko" ;; *) cp "$f" "$ROOTFS/modules/$1.ko" ;; esac
	echo "$1" >> "$ROOTFS/modules/order"
}
add_module zram || log "no zram module (or one it needs) in $MODDIR: the pressure run will skip"
cat > "$ROOTFS/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev
/bin/busybox --install -s /bin
exec </dev/console >/dev/console 2>&1
export PATH=/bin
echo "guest: kernel $(uname -r)"
mkdir -p /mnt/plain /mnt/thp
mount -t tmpfs -o size=48m tmpfs /mnt/plain
echo "=== run plain"
/bin/soundness /mnt/plain/ram 32 200
rm -f /mnt/plain/ram
echo "=== run plain-2threads"
SOUNDNESS_THREADS=2 /bin/soundness /mnt/plain/ram 32 100
rm -f /mnt/plain/ram
echo "=== run lazy-clear"
SOUNDNESS_CLEAR_EVERY=3 SOUNDNESS_THREADS=2 /bin/soundness /mnt/plain/ram 32 100
rm -f /mnt/plain/ram
if mount -t tmpfs -o size=24m,huge=always tmpfs /mnt/thp; then
    echo "=== run thp"
    /bin/soundness /mnt/thp/ram 16 100
else
    echo "=== run thp: tmpfs huge=always not supported"
fi
umount /mnt/thp 2>/dev/null
# Memory pressure: the test runs in a memory cgroup whose limit (44 MiB)
# is below what it uses (the 16 MiB file, its copy and the tracker's: about
# 50 MiB), with zram swap: the kernel's own reclaim swaps pages of the file
# out and back in all through the rounds, as it would for a QEMU in a
# memory-limited cgroup.
mods=1
for m in $(cat /modules/order); do insmod /modules/$m.ko || mods=0; done
if [ "$mods" = 1 ] && [ -s /modules/order ] &&
   echo 256M > /sys/block/zram0/disksize && mkswap /dev/zram0 >/dev/null && swapon /dev/zram0 &&
   mount -t cgroup2 none /sys/fs/cgroup && echo +memory > /sys/fs/cgroup/cgroup.subtree_control &&
   mkdir /sys/fs/cgroup/pressure && echo 44M > /sys/fs/cgroup/pressure/memory.max; then
    echo "=== run pressure"
    SOUNDNESS_PRESSURE=1 sh -c 'echo $$ > /sys/fs/cgroup/pressure/cgroup.procs &&
        exec /bin/soundness /mnt/plain/ram 16 24'
    echo "softdirty: cgroup memory.events: $(tr '\n' ' ' < /sys/fs/cgroup/pressure/memory.events)"
    swapoff /dev/zram0
else
    echo "=== run pressure: no zram swap or memory cgroup in this kernel"
fi
echo "=== run pagemap-read"
SOUNDNESS_PAGEMAP_READ=1 SOUNDNESS_THREADS=2 /bin/soundness /mnt/plain/ram 32 100
rm -f /mnt/plain/ram
echo "guest: done"
poweroff -f
EOF
chmod 755 "$ROOTFS/init"
( cd "$ROOTFS" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet ) |
	gzip -1 > "$T/initrd.img" || die "cannot build the initramfs"

LOG=$T/serial.log
start=$(now_ms)
"$VM_QEMU" "${VM_QEMU_ARGS[@]}" -accel tcg,thread=multi -smp 2 -m 256M -kernel "$KERNEL" -initrd "$T/initrd.img" \
	-append "console=ttyS0 quiet panic=-1" -nodefaults -display none \
	-serial "file:$LOG" -no-reboot > "$T/qemu.log" 2>&1 &
QEMU_PID=$!
PIDS+=("$QEMU_PID")
if ! wait_exit "$QEMU_PID" 300; then
	fail "the VM did not power off within 300 s (see $LOG)"
	kill -KILL "$QEMU_PID" 2>/dev/null
fi
log "VM ran $(( ($(now_ms) - start) / 1000 )) s"
tr -d '\r' < "$LOG" | grep -a -e '^softdirty:' -e '^SOUNDNESS' -e '^=== run' -e '^guest:' |
	sed 's/^/    /'

# check_run NAME MIN_CHANGED: the run's verdict and numbers.
check_run() {
	local name=$1 min=$2 out line changed missed
	out=$(tr -d '\r' < "$LOG" | sed -n "/^=== run $name\$/,/^SOUNDNESS/p")
	line=$(grep -a '^softdirty: rounds=' <<< "$out")
	changed=$(grep -ao 'changed=[0-9]*' <<< "$line" | cut -d= -f2)
	missed=$(grep -ao 'missed=[0-9]*' <<< "$line" | cut -d= -f2)
	if grep -qa '^SOUNDNESS PASS' <<< "$out" && [ "${missed:-x}" = 0 ] &&
		[ "${changed:-0}" -ge "$min" ]; then
		pass "$name: $line"
	else
		fail "$name: ${line:-no result} (want SOUNDNESS PASS, missed=0, changed>=$min)"
	fi
}
check_run plain 1000
check_run plain-2threads 500
check_run lazy-clear 500
skipped=$(tr -d '\r' < "$LOG" | sed -n '/^=== run lazy-clear$/,/^SOUNDNESS/s/.*clears_skipped=\([0-9]*\).*/\1/p')
[ "${skipped:-0}" -ge 50 ] && pass "lazy-clear: $skipped of the scans left the log uncleared, none missed a page" ||
	fail "lazy-clear: only ${skipped:-no} scans skipped the clear: the run did not test it"
if tr -d '\r' < "$LOG" | grep -qa '^=== run thp$'; then
	check_run thp 500
else
	log "thp run not done: $(tr -d '\r' < "$LOG" | grep -a '^=== run thp' | head -n 1)"
fi
if tr -d '\r' < "$LOG" | grep -qa '^=== run pressure$'; then
	check_run pressure 300
	swapped=$(tr -d '\r' < "$LOG" | sed -n 's/^softdirty: file pages in swap: up to \([0-9]*\) kB.*/\1/p')
	[ "${swapped:-0}" -gt 0 ] && pass "pressure: up to $swapped kB of the file was in swap during the rounds" ||
		fail "pressure: no page of the file went to swap (${swapped:-no figure}): the run proves nothing"
else
	log "skip - pressure run: $(tr -d '\r' < "$LOG" | grep -a '^=== run pressure' | head -n 1)"
fi
check_run pagemap-read 500
# Which way each run read the log: PAGEMAP_SCAN on a kernel that has it
# (6.7+), except the run told to read pagemap; pagemap everywhere before.
reads=$(tr -d '\r' < "$LOG" | awk '/^=== run /{run=$3} /^softdirty: log read by/{print run "=" $5}' |
	tr '\n' ' ')
by=$(log_read_on "$KVERSION")
want="plain=$by plain-2threads=$by lazy-clear=$by"
[[ " $reads" == *" $want "* && "$reads" == *"pagemap-read=pagemap"* ]] &&
	pass "Linux $KVERSION: the log was read as it should be: $reads" ||
	fail "Linux $KVERSION: want $want ... pagemap-read=pagemap; the runs read: $reads"
finish
