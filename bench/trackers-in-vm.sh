#!/bin/bash
# Pause cost of the dirty-page trackers against guest RAM size, compare (1
# and 2 threads) and soft-dirty side by side in one VM booted with Debian's
# cloud kernel (it has CONFIG_MEM_SOFT_DIRTY; this host's kernel may not),
# under TCG, as tests/integration/test_softdirty.sh does. Then compare alone
# on the host. Prints two markdown tables.
#
# Usage: bench/trackers-in-vm.sh
# Environment: SIZES (default "128 512 1024 2048"), RATE (MB/s, 50),
# ROUNDS (30), EPOCH_MS (50), VM_MEM (5G), SMP (2), TIMEOUT (s, 1500).
# Figures inside TCG are not absolute: only ratios measured in the same VM
# mean something.
set -u

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SIZES=${SIZES:-128 512 1024 2048}
RATE=${RATE:-50}
ROUNDS=${ROUNDS:-30}
EPOCH_MS=${EPOCH_MS:-50}
VM_MEM=${VM_MEM:-5G}
SMP=${SMP:-2}
TIMEOUT=${TIMEOUT:-1500}

T=$(mktemp -d /tmp/trackers-bench.XXXXXX)
QEMU_PID=
cleanup() {
	if [ -n "$QEMU_PID" ] && kill -0 "$QEMU_PID" 2>/dev/null; then
		kill -TERM "$QEMU_PID" 2>/dev/null
		sleep 0.5
		kill -0 "$QEMU_PID" 2>/dev/null && kill -KILL "$QEMU_PID" 2>/dev/null
	fi
	if [ -n "${KEEP:-}" ]; then
		echo "kept $T" >&2
	else
		rm -rf "$T"
	fi
}
trap cleanup EXIT
die() { echo "trackers-in-vm: $*" >&2; exit 1; }
log() { echo "$(date +%T) $*" >&2; }

KERNEL=$(find /boot -maxdepth 1 -name "vmlinuz-*-cloud-amd64" 2>/dev/null | sort -V | tail -n 1)
[ -n "$KERNEL" ] || die "no /boot/vmlinuz-*-cloud-amd64 (install linux-image-cloud-amd64)"
grep -q '^CONFIG_MEM_SOFT_DIRTY=y' "/boot/config-${KERNEL#/boot/vmlinuz-}" 2>/dev/null ||
	die "${KERNEL}'s config lacks CONFIG_MEM_SOFT_DIRTY"
BUSYBOX=/bin/busybox
[ -x "$BUSYBOX" ] && ! ldd "$BUSYBOX" >/dev/null 2>&1 || die "no static $BUSYBOX (busybox-static)"
command -v qemu-system-x86_64 >/dev/null || die "no qemu-system-x86_64"

ROOTFS=$T/root
mkdir -p "$ROOTFS"/{bin,proc,sys,dev,mnt}
gcc -static -O2 -std=gnu11 -D_GNU_SOURCE -Wall -Wextra -Werror -I"$ROOT/replicator" \
	-o "$ROOTFS/bin/trackers" "$ROOT/bench/trackers.c" "$ROOT/replicator/tracker_compare.c" \
	"$ROOT/replicator/tracker_softdirty.c" -lpthread || die "cannot build bench/trackers.c"

# --- compare on the host (no soft-dirty here, most likely) ---
HOSTLOG=$T/host.log
log "host: compare, sizes $SIZES"
for s in $SIZES; do
	for th in 1 2; do
		TRK_FILE=/dev/shm/trk-bench.$$ "$ROOTFS/bin/trackers" "$s" "$RATE" "$ROUNDS" \
			"$EPOCH_MS" compare "$th" >> "$HOSTLOG" || log "host: $s MB compare $th failed"
	done
done
rm -f /dev/shm/trk-bench.$$

# --- all three in the VM ---
cp "$BUSYBOX" "$ROOTFS/bin/busybox"
cat > "$ROOTFS/init" <<EOF
#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev
/bin/busybox --install -s /bin
exec </dev/console >/dev/console 2>&1
export PATH=/bin
echo "guest: kernel \$(uname -r), \$(nproc) cpus, \$(grep MemTotal /proc/meminfo)"
mkdir -p /mnt/ram
mount -t tmpfs -o size=2300m tmpfs /mnt/ram
export TRK_FILE=/mnt/ram/trk
for s in $SIZES; do
    trackers \$s $RATE $ROUNDS $EPOCH_MS compare 1
    trackers \$s $RATE $ROUNDS $EPOCH_MS compare 2
    trackers \$s $RATE $ROUNDS $EPOCH_MS soft-dirty
    echo "guest: size \$s done at \$(cut -d' ' -f1 /proc/uptime) s"
done
echo "guest: done"
poweroff -f
EOF
chmod 755 "$ROOTFS/init"
( cd "$ROOTFS" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet ) |
	gzip -1 > "$T/initrd.img" || die "cannot build the initramfs"

LOG=$T/serial.log
log "VM: $KERNEL, TCG, -m $VM_MEM -smp $SMP, timeout $TIMEOUT s"
start=$(date +%s)
qemu-system-x86_64 -accel tcg,thread=multi -smp "$SMP" -m "$VM_MEM" -kernel "$KERNEL" \
	-initrd "$T/initrd.img" -append "console=ttyS0 quiet panic=-1" -nodefaults \
	-display none -serial "file:$LOG" -no-reboot > "$T/qemu.log" 2>&1 &
QEMU_PID=$!
while kill -0 "$QEMU_PID" 2>/dev/null; do
	if [ $(( $(date +%s) - start )) -ge "$TIMEOUT" ]; then
		log "VM: timeout after $TIMEOUT s, stopping QEMU (pid $QEMU_PID); results so far follow"
		kill -TERM "$QEMU_PID" 2>/dev/null
		break
	fi
	sleep 1
done
wait "$QEMU_PID" 2>/dev/null
QEMU_PID=
log "VM: ran $(( $(date +%s) - start )) s"
tr -d '\r' < "$LOG" | grep -a -e '^guest:' -e '^trackers:' -e '^tracker=' | sed 's/^/    /' >&2

# field LINE KEY
field() { grep -o "$2=[^ ]*" <<< "$1" | cut -d= -f2; }
# result FILE TRACKER SIZE THREADS: "p50 p99", or "- -".
result() {
	local line
	line=$(tr -d '\r' < "$1" | grep -a "^tracker=$2 size_mb=$3 threads=$4 " | tail -n 1)
	if [ -n "$line" ]; then
		echo "$(field "$line" scan_p50_ms) $(field "$line" scan_p99_ms) $(field "$line" dirty_p50)"
	else
		echo "- - -"
	fi
}
fmt() { [ "$1" = - ] && echo - || printf '%.2f' "$1"; }
ratio() { { [ "$1" = - ] || [ "$2" = - ]; } && echo - || awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'; }

echo
echo "In the VM ($(basename "$KERNEL"), TCG, -smp $SMP -m $VM_MEM), $RATE MB/s, ${EPOCH_MS} ms epochs, $ROUNDS rounds; scan p50 / p99 in ms:"
echo
echo "| guest RAM | dirty pages/epoch (p50) | compare 1 thread | compare 2 threads | soft-dirty | soft-dirty / compare 1 thread (p50) | soft-dirty p50 vs 128 MB |"
echo "|---|---|---|---|---|---|---|"
base=-
for s in $SIZES; do
	read -r c1a c1b c1n <<< "$(result "$LOG" compare "$s" 1)"
	read -r c2a c2b _ <<< "$(result "$LOG" compare "$s" 2)"
	read -r sda sdb sdn <<< "$(result "$LOG" soft-dirty "$s" 1)"
	[ "$s" = 128 ] && base=$sda
	echo "| $s MB | $c1n / $sdn | $(fmt "$c1a") / $(fmt "$c1b") | $(fmt "$c2a") / $(fmt "$c2b") |" \
		"$(fmt "$sda") / $(fmt "$sdb") | $(ratio "$sda" "$c1a") | $(ratio "$sda" "$base") |"
done
echo
echo "On the host (compare only), same rate, epochs and rounds; scan p50 / p99 in ms:"
echo
echo "| guest RAM | dirty pages/epoch (p50) | compare 1 thread | compare 2 threads |"
echo "|---|---|---|---|"
for s in $SIZES; do
	read -r c1a c1b c1n <<< "$(result "$HOSTLOG" compare "$s" 1)"
	read -r c2a c2b _ <<< "$(result "$HOSTLOG" compare "$s" 2)"
	echo "| $s MB | $c1n | $(fmt "$c1a") / $(fmt "$c1b") | $(fmt "$c2a") / $(fmt "$c2b") |"
done
