#!/bin/bash
# What reading the soft-dirty log costs against guest RAM size, by
# PAGEMAP_SCAN (Linux 6.7+) and by the pagemap read, side by side:
#  1. natively on this host, whose kernel keeps no soft-dirty log: the
#     reads and clears walk the page tables all the same, so they time the
#     part of a scan that grows with RAM (TRK_SOFTDIRTY_ANYWAY=1; nothing
#     is flagged, nothing compared);
#  2. the whole scan in scripts/nested-vm (TCG), booted with the kernel
#     scripts/nested-host-qemu fetched (6.12, which has the log and the
#     ioctl): the same writer at RATE MB/s, its flagged pages compared.
# Both with bench/trackers (the real replicator/tracker_softdirty.c), built
# static here. Prints one markdown table per part.
#
# Usage: bench/softdirty-read.sh
# Environment: SIZES (default "128 512 1024 2048"), RATE (MB/s, 50),
# ROUNDS (30), EPOCH_MS (50), THREADS (2), VM (1; 0 skips part 2).
set -eu

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SIZES=${SIZES:-128 512 1024 2048}
RATE=${RATE:-50} ROUNDS=${ROUNDS:-30} EPOCH_MS=${EPOCH_MS:-50} THREADS=${THREADS:-2}
BIN=$ROOT/build/bin/bench-trackers-static
trap 'rm -f "$BIN" "$ROOT/build/bin/softdirty-read-vm.sh"' EXIT

gcc -static -O2 -std=gnu11 -D_GNU_SOURCE -DTRACKER_HASH_NO_DISPATCH -Wall -Wextra -Werror \
	-I"$ROOT/replicator" -o "$BIN" "$ROOT/bench/trackers.c" "$ROOT/replicator/tracker_compare.c" \
	"$ROOT/replicator/tracker_hash.c" "$ROOT/replicator/tracker_softdirty.c" \
	"$ROOT/replicator/lazy_clear.c" "$ROOT/replicator/scan_pool.c" "$ROOT/replicator/ram_holes.c" -lxxhash -lpthread

# runs KIND_ENV: one line per size and way of reading, "mode line"
runs() {
	local s m
	for s in $SIZES; do
		for m in ioctl pagemap; do
			echo "$m $(env "$@" TRK_SOFTDIRTY_READ=$m "$BIN" "$s" "$RATE" "$ROUNDS" "$EPOCH_MS" \
				soft-dirty "$THREADS" 2>/dev/null)"
		done
	done
}
field() { grep -o " $2=[^ ]*" <<< "$1" | cut -d= -f2; }
# table FILE COLUMNS...: a row per size, for each way the given fields
table() {
	local f=$1 s m l row
	shift
	for s in $SIZES; do
		row="| $s MB |"
		for m in ioctl pagemap; do
			l=$(grep -a "^$m .*size_mb=$s " "$f" | tail -n 1)
			for c in "$@"; do
				row+=" $(field "$l" "$c") |"
			done
		done
		echo "$row"
	done
}

OUT=$(mktemp)
trap 'rm -f "$BIN" "$ROOT/build/bin/softdirty-read-vm.sh" "$OUT" "$OUT.vm"' EXIT
runs TRK_SOFTDIRTY_ANYWAY=1 > "$OUT"
echo "On this host ($(uname -r), natively), $THREADS threads; ms per scan:"
echo
echo "| guest RAM | PAGEMAP_SCAN: scan p50 | its walk | clear_refs | pagemap read: scan p50 | its read | clear_refs |"
echo "|---|---|---|---|---|---|---|"
table "$OUT" scan_p50_ms pagemap_ms clear_ms

[ "${VM:-1}" = 1 ] || exit 0
cat > "$ROOT/build/bin/softdirty-read-vm.sh" <<EOF
for s in $SIZES; do for m in ioctl pagemap; do
	echo "\$m \$(TRK_SOFTDIRTY_READ=\$m TRK_FILE=/dev/shm/trk build/bin/$(basename "$BIN") \$s $RATE $ROUNDS $EPOCH_MS soft-dirty $THREADS)"
done; done
EOF
KROOT=$("$ROOT/scripts/nested-host-qemu" --kernel)
NESTED_VM_KERNEL_ROOT=$KROOT "$ROOT/scripts/nested-vm" --cpu qemu64 --mem 6G --shm 5G --timeout 1500 -- \
	bash build/bin/softdirty-read-vm.sh > "$OUT.vm" 2>&1 || true
echo
echo "In $(grep -ao 'nested-vm: kernel [^,]*' "$OUT.vm" | cut -d' ' -f3) under TCG (scripts/nested-vm --cpu qemu64), $THREADS threads, $RATE MB/s random writes, ${EPOCH_MS} ms epochs, $ROUNDS rounds; ms per scan (p50, mean, thread time of the loop), pages compared and the share of scans that cleared the log, per scan:"
echo
echo "| guest RAM | PAGEMAP_SCAN: scan p50 | mean | its walk | loop | compared | cleared | pagemap read: scan p50 | mean | its read | loop | compared | cleared |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
table "$OUT.vm" scan_p50_ms total_ms pagemap_ms loop_ms compared cleared
