#!/bin/bash
# bench/bench.py inside a VM booted with Debian's cloud kernel, which keeps
# the soft-dirty log (scripts/nested-vm): the test guest runs nested,
# under TCG inside TCG, so only ratios between runs of one invocation mean
# something, never the milliseconds.
#
# Usage: bench/in-vm.sh BENCH_ARGS...      e.g. bench/in-vm.sh trackers
# Environment: VM_MEM (default 10G: a 2 GB guest needs its RAM file, the
# replicator's copy and the backup's replica), VM_SHM (tmpfs for /dev/shm,
# default 7G), TIMEOUT (seconds, default 5400); KVM=1 runs the guests under
# KVM inside the VM (scripts/nested-vm --kvm), with SMP vCPUs (default 2);
# BENCH_CLEARTEXT=1 replicates over the cleartext link (TLS under TCG makes
# each initial copy of a large guest take minutes; pauses do not use it).
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
[ $# -ge 1 ] || { sed -n '2,/^set -u/{/^set -u/d;s/^# \{0,1\}//;p}' "$0" >&2; exit 2; }
KVM_ARGS=() ACCEL=tcg
[ "${KVM:-0}" = 1 ] && KVM_ARGS=(--kvm) ACCEL=kvm
exec "$ROOT/scripts/nested-vm" "${KVM_ARGS[@]}" --mem "${VM_MEM:-10G}" --shm "${VM_SHM:-7G}" \
	--timeout "${TIMEOUT:-5400}" -- env PYTHONUNBUFFERED=1 GUEST_BOOT_TIMEOUT=900 BENCH_WARMUP_TIMEOUT=600 \
	BENCH_ACCEL=$ACCEL BENCH_SMP="${SMP:-$([ "$ACCEL" = kvm ] && echo 2 || echo 1)}" \
	BENCH_CLEARTEXT="${BENCH_CLEARTEXT:-0}" python3 bench/bench.py "$@"
