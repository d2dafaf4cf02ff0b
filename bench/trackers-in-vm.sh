#!/bin/bash
# Pause cost of the dirty-page trackers against guest RAM size, compare (1
# and 2 threads) and soft-dirty side by side in one VM booted with Debian's
# cloud kernel (it has CONFIG_MEM_SOFT_DIRTY; this host's kernel may not),
# under TCG, as tests/integration/test_softdirty.sh does. Then TRACKERS'
# compare and hash entries on the host. Prints markdown tables: the pauses,
# soft-dirty's breakdown by phase, and the host's rows.
#
# Usage: bench/trackers-in-vm.sh
# Environment: SIZES (default "128 512 1024 2048"), RATE (MB/s, 50),
# ROUNDS (30), EPOCH_MS (50), VM_MEM (5G), SMP (2), TIMEOUT (s, 1500),
# TRACKERS (default "compare1 compare2 soft-dirty1": each a tracker name,
# compare, hash or soft-dirty, and its thread count, 1 if left out; e.g.
# TRACKERS="soft-dirty1 soft-dirty2"), HOST (1; 0 skips the host part, which
# runs TRACKERS' compare and hash entries).
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
TRACKERS=${TRACKERS:-compare1 compare2 soft-dirty1}
HOST=${HOST:-1}

# tname TOKEN / tthreads TOKEN: "soft-dirty2" -> soft-dirty / 2.
tname() { sed 's/[0-9]*$//' <<< "$1"; }
tthreads() { local n; n=$(grep -o '[0-9]*$' <<< "$1"); echo "${n:-1}"; }
for tk in $TRACKERS; do
	case $(tname "$tk") in compare|hash|soft-dirty) ;; *)
		echo "trackers-in-vm: unknown tracker in TRACKERS: $tk" >&2; exit 1 ;;
	esac
done

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
gcc -static -O2 -std=gnu11 -D_GNU_SOURCE -DTRACKER_HASH_NO_DISPATCH -Wall -Wextra -Werror \
	-I"$ROOT/replicator" -o "$ROOTFS/bin/trackers" "$ROOT/bench/trackers.c" \
	"$ROOT/replicator/tracker_compare.c" "$ROOT/replicator/tracker_hash.c" \
	"$ROOT/replicator/tracker_softdirty.c" "$ROOT/replicator/lazy_clear.c" "$ROOT/replicator/scan_pool.c" \
	"$ROOT/replicator/ram_holes.c" -lxxhash -lpthread ||
	die "cannot build bench/trackers.c"

# --- compare and hash on the host (no soft-dirty here, most likely) ---
HOSTLOG=$T/host.log
: > "$HOSTLOG"
HOST_TRACKERS=
for tk in $TRACKERS; do
	[ "$(tname "$tk")" != soft-dirty ] && HOST_TRACKERS+=" $tk"
done
if [ "$HOST" = 0 ] || [ -z "$HOST_TRACKERS" ]; then
	log "host: skipped"
	HOST_TRACKERS=
else
	log "host:$HOST_TRACKERS, sizes $SIZES"
	for s in $SIZES; do
		for tk in $HOST_TRACKERS; do
			th=$(tthreads "$tk")
			"$ROOTFS/bin/trackers" "$s" "$RATE" "$ROUNDS" \
				"$EPOCH_MS" "$(tname "$tk")" "$th" >> "$HOSTLOG" ||
				log "host: $s MB $(tname "$tk") $th failed"
		done
	done
fi

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
$(for tk in $TRACKERS; do
	echo "    trackers \$s $RATE $ROUNDS $EPOCH_MS $(tname "$tk") $(tthreads "$tk")"
done)
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
# line FILE TRACKER SIZE THREADS: the result line, or nothing.
line() { tr -d '\r' < "$1" | grep -a "^tracker=$2 size_mb=$3 threads=$4 " | tail -n 1; }
# result FILE TRACKER SIZE THREADS: "p50 p99 dirty", or "- - -".
result() {
	local l
	l=$(line "$@")
	if [ -n "$l" ]; then
		echo "$(field "$l" scan_p50_ms) $(field "$l" scan_p99_ms) $(field "$l" dirty_p50)"
	else
		echo "- - -"
	fi
}
fmt() { [ -z "$1" ] || [ "$1" = - ] && echo - || printf '%.2f' "$1"; }
ratio() { { [ "$1" = - ] || [ "$2" = - ]; } && echo - || awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'; }
# label TOKEN: "compare 2 threads"
label() { local n; n=$(tthreads "$1"); echo "$(tname "$1") $n thread$([ "$n" = 1 ] || echo s)"; }

echo
echo "In the VM ($(basename "$KERNEL"), TCG, -smp $SMP -m $VM_MEM), $RATE MB/s, ${EPOCH_MS} ms epochs, $ROUNDS rounds; scan p50 / p99 in ms (p50 vs 128 MB: that tracker's p50 over its own at 128 MB):"
echo
hdr="| guest RAM | dirty pages/epoch (p50) |"; sep="|---|---|"
for tk in $TRACKERS; do
	hdr+=" $(label "$tk") | p50 vs 128 MB |"; sep+="---|---|"
done
if grep -qw compare1 <<< "$TRACKERS"; then
	for tk in $TRACKERS; do
		[ "$(tname "$tk")" = soft-dirty ] || continue
		hdr+=" $(label "$tk") / compare 1 thread (p50) |"; sep+="---|"
	done
fi
echo "$hdr"; echo "$sep"
declare -A base
for s in $SIZES; do
	row="| $s MB |"; dn=
	cells=
	for tk in $TRACKERS; do
		read -r a b n <<< "$(result "$LOG" "$(tname "$tk")" "$s" "$(tthreads "$tk")")"
		[ -z "$dn" ] && [ "$n" != - ] && dn=$n
		[ "$s" = 128 ] && base[$tk]=$a
		cells+=" $(fmt "$a") / $(fmt "$b") | $(ratio "$a" "${base[$tk]:--}") |"
	done
	# With compare1 in TRACKERS: each soft-dirty entry's p50 over it.
	if grep -qw compare1 <<< "$TRACKERS"; then
		read -r c1 _ <<< "$(result "$LOG" compare "$s" 1)"
		for tk in $TRACKERS; do
			[ "$(tname "$tk")" = soft-dirty ] || continue
			read -r a _ <<< "$(result "$LOG" soft-dirty "$s" "$(tthreads "$tk")")"
			cells+=" $(ratio "$a" "$c1") |"
		done
	fi
	echo "$row ${dn:--} |$cells"
done

SD=
for tk in $TRACKERS; do [ "$(tname "$tk")" = soft-dirty ] && SD+=" $tk"; done
if [ -n "$SD" ]; then
	echo
	echo "soft-dirty, where a scan's time goes (ms, average per scan; the phases may overlap, total is the whole scan; pages per scan):"
	echo
	echo "| guest RAM | threads | maps re-read | pagemap read | clear_refs | entry loop + compares | total | p50 | flagged | absent |"
	echo "|---|---|---|---|---|---|---|---|---|---|"
	for s in $SIZES; do
		for tk in $SD; do
			l=$(line "$LOG" soft-dirty "$s" "$(tthreads "$tk")")
			[ -n "$l" ] || continue
			echo "| $s MB | $(tthreads "$tk") | $(fmt "$(field "$l" maps_ms)") |" \
				"$(fmt "$(field "$l" pagemap_ms)") | $(fmt "$(field "$l" clear_ms)") |" \
				"$(fmt "$(field "$l" loop_ms)") | $(fmt "$(field "$l" total_ms)") |" \
				"$(fmt "$(field "$l" scan_p50_ms)") | $(field "$l" flagged) | $(field "$l" absent) |"
		done
	done
fi

if [ -n "$HOST_TRACKERS" ]; then
	echo
	echo "On the host (no soft-dirty), same rate, epochs and rounds; scan p50 / p99 in ms:"
	echo
	hdr="| guest RAM | dirty pages/epoch (p50) |"; sep="|---|---|"
	for tk in $HOST_TRACKERS; do hdr+=" $(label "$tk") |"; sep+="---|"; done
	echo "$hdr"; echo "$sep"
	for s in $SIZES; do
		dn=; cells=
		for tk in $HOST_TRACKERS; do
			read -r a b n <<< "$(result "$HOSTLOG" "$(tname "$tk")" "$s" "$(tthreads "$tk")")"
			[ -z "$dn" ] && [ "$n" != - ] && dn=$n
			cells+=" $(fmt "$a") / $(fmt "$b") |"
		done
		echo "| $s MB | ${dn:--} |$cells"
	done
fi
