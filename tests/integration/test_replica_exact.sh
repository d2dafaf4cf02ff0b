#!/bin/bash
# The dirty-page tracker misses no page, checked two ways on one guest:
#  1. The replica is the primary, byte for byte. The guest dirties a 32 MiB
#     working set while it is replicated; a planned failover (remusctl
#     failover) takes a final checkpoint with the VM stopped and the primary
#     QEMU then quits without running again, so its RAM file holds exactly
#     the state of that checkpoint. The backup's replica RAM must equal it in
#     every byte: a tracker that lost one write leaves a page that differs.
#  2. The VM, now running on the backup, is replicated in turn to a second
#     backup and its QEMU is SIGKILLed: the second backup resumes it from
#     its last checkpoint, the serial counter goes on without a reboot.
#     With soft-dirty, a second process maps guest RAM writable before the
#     kill: the replicator must see it and give the log up for compare.
# TEST_TRACKER=KIND runs it with --tracker KIND; EXPECT_TRACKER=KIND checks
# which tracker the default (auto) chose (test_softdirty_failover.sh expects
# soft-dirty, in a VM whose kernel has it); EXPECT_LOG_READ=PAGEMAP_SCAN or
# pagemap checks how soft-dirty read the log. DIRTY_MB_S (default 20) is how
# fast the guest writes: under TCG nested in TCG, where the link's
# encryption is emulated too, 20 MiB/s outruns the link and every epoch
# grows to the whole working set.
# Part 1 sends its pages compressed (--compress on: XOR deltas against the
# backup's copy, LZ4), so the byte-for-byte check covers the decoder and
# its bases too; TEST_COMPRESS=off|auto runs it otherwise. Part 2 runs
# with the default (auto).
. "$(dirname "$0")/lib.sh"

CTL=("$BIN/remusctl" --control "$T/ctl.sock")
PORT=$(free_port)
start_guest primary 128 "dirty_mb_s=${DIRTY_MB_S:-20} dirty_mb=32"
start_agent "$PORT" "$T/backup"
start_replicator "$T/primary/qmp.sock" "$PORT" --epoch-policy fixed --epoch-ms 50 \
	--compress "${TEST_COMPRESS:-on}"
# Three passes over the working set (8192 pages) and more: every page of it
# written again and again since the initial copy (about 5 s at 20 MiB/s).
dirty_at_least() { [ "$(status_field dirty_pages_total)" -ge "$1" ] 2>/dev/null; }
wait_for 90 committed_at_least 40 || die "fewer than 40 epochs committed in 90 s"
wait_for 180 dirty_at_least 24000 ||
	die "the tracker found fewer than 24000 dirty pages in 180 s ($(status_field dirty_pages_total))"
grep -qa 'Killed process' "$T/primary/serial.log" && die "the guest's kernel killed a workload"
tracker=$(status_field tracker)
pass "replicated with the $tracker tracker ($(status_field tracker_reason)):" \
	"$(status_field epochs_committed) epochs, $(status_field dirty_pages_total) dirty pages sent," \
	"pause p50 $(printf %.1f "$(status_field pause_p50_ms)") ms"
if [ -n "${TEST_ACCEL:-}" ]; then
	accel=$(echo "$TEST_ACCEL" | tr a-z A-Z)
	grep -q "attached to VM primary: .*, $accel, " "$T/replicator.log" &&
		pass "the guest runs under $accel with ${TEST_SMP:-1} vCPU(s), as asked" ||
		fail "the replicator does not report a $accel guest: $(grep -m1 'attached to VM' "$T/replicator.log")"
fi
want=${EXPECT_TRACKER:-${TEST_TRACKER:-}}
if [ -n "$want" ]; then
	[ "$tracker" = "$want" ] && pass "the tracker is $want, as expected" ||
		fail "the tracker is $tracker, not $want"
fi
# Soft-dirty: the full copy read guest RAM through QEMU's mapping, so every
# page is in QEMU's page tables and the pauses compare only what the log
# flags, not the RAM the guest never used (docs/SOFT-DIRTY.md, rule 2).
if [ "$tracker" = soft-dirty ]; then
	pages=$(( $(stat -c %s /dev/shm/remus-primary.ram) / 4096 ))
	populated=$(status_field softdirty_populated_pages)
	scans=$(status_field softdirty_scans)
	[ "${scans:-0}" -gt 0 ] || die "soft-dirty ran no scan"
	absent=$(( $(status_field softdirty_absent_pages) / scans ))
	[ "$populated" = "$pages" ] && pass "the full copy mapped all $pages pages into QEMU" ||
		fail "the full copy mapped $populated of $pages pages into QEMU" \
			"($(status_field softdirty_populate_error))"
	[ "$absent" -le $(( pages / 100 )) ] &&
		pass "pages not in QEMU's page tables, compared per pause: $absent" ||
		fail "$absent pages per pause not in QEMU's page tables (more than 1% of RAM)"
	read_by=$(status_field softdirty_log_read)
	if [ -n "${EXPECT_LOG_READ:-}" ]; then
		[ "$read_by" = "$EXPECT_LOG_READ" ] &&
			pass "the log was read by $read_by, as expected on Linux $(uname -r)" ||
			fail "the log was read by $read_by, not $EXPECT_LOG_READ (Linux $(uname -r))"
	fi
fi
# Hash: guest RAM on tmpfs keeps its holes, the pages the guest never
# wrote: the tracker neither reads them (a read would allocate them) nor
# hashes them, and the byte compare below shows nothing was missed.
if [ "$tracker" = hash ]; then
	pages=$(( $(stat -c %s /dev/shm/remus-primary.ram) / 4096 ))
	allocated=$(( $(stat -c '%b * %B' /dev/shm/remus-primary.ram) / 4096 ))
	holes=$(status_field hash_hole_pages)
	[ "$(status_field hash_skips_holes)" = True ] && [ "${holes:-0}" -gt 0 ] &&
		[ "$allocated" -le $(( pages - holes + 256 )) ] &&
		pass "guest RAM keeps its holes: $holes of $pages pages never read, $allocated allocated" ||
		fail "holes not kept: skips ${holes:-?} pages ($(status_field hash_skips_holes)), $allocated of $pages allocated"
	# after every pause the file held exactly the pages read: no hole
	# was written behind SEEK_DATA's back (ram_holes.h)
	failed=$(status_field hash_hole_checks_failed)
	[ "$failed" = 0 ] && pass "every pause's count of allocated pages agreed with the holes" ||
		fail "$failed pause(s) found guest RAM holding pages believed holes"
fi

if [ "${TEST_COMPRESS:-on}" = on ]; then
	raw=$(status_field compress_raw_bytes_total)
	wire=$(status_field compress_wire_bytes_total)
	deltas=$(status_field compress_delta_pages_total)
	[ "$(status_field compress_epochs_total)" -gt 0 ] && [ "${deltas:-0}" -gt 0 ] &&
		pass "pages sent compressed: $deltas as deltas, $(( raw >> 20 )) MiB in" \
			"$(( wire >> 20 )) MiB on the wire" ||
		fail "no compressed epochs or no deltas ($(status_field compress_reason))"
fi

# One session from the start: neither side ever took the other for dead
# (a loop too busy to send heartbeats during the initial copy would).
drops=$(grep -ac -e 'backup lost' -e 'primary lost' "$T/replicator.log" "$T/agent.log" | awk -F: '{ n += $2 } END { print n }')
[ "$drops" = 0 ] && pass "the link never dropped" || fail "the link dropped $drops time(s): see the logs"

out=$("${CTL[@]}" failover --timeout 120 2>&1)
rc=$?
[ "$rc" = 0 ] && pass "remusctl failover: exit 0 ($out)" || die "remusctl failover: exit $rc: $out"
wait_for 10 process_gone "$GUEST_PID" && pass "primary QEMU $GUEST_PID has quit" ||
	die "primary QEMU $GUEST_PID still runs"
wait_exit "$REPLICATOR_PID" 10 && [ "$EXIT_CODE" = 0 ] && pass "replicator exited 0" ||
	fail "replicator exit code ${EXIT_CODE:-none}, expected 0"
wait_exit "$AGENT_PID" 30 && [ "$EXIT_CODE" = 0 ] && pass "agent exited 0 after the handover" ||
	fail "agent exit code ${EXIT_CODE:-none}, expected 0"

primary=/dev/shm/remus-primary.ram
replica=$T/backup/ram
[ -s "$replica" ] || die "no replica RAM at $replica"
if cmp -s "$primary" "$replica"; then
	pass "replica RAM equals the primary's final RAM: $(( $(stat -c %s "$primary") >> 20 )) MiB, every byte"
else
	# Name the pages that differ (the first few): a missed write shows here.
	diffs=$(cmp -l "$primary" "$replica" 2>&1 | awk '{ print int(($1 - 1) / 4096) }' | uniq | head -n 8 | tr '\n' ' ')
	fail "replica RAM differs from the primary's, first pages: $diffs"
fi
restored=$T/backup/serial.log
wait_for 60 sh -c "[ \$(tr -d '\r' < '$restored' | grep -c '^tick') -ge 5 ]" ||
	die "the restored VM printed fewer than 5 ticks in 60 s"
pass "the VM runs on the backup"

# --- 2. protect the VM where it now runs, then lose that host's QEMU -------
GUEST_PID=$(cat "$T/backup/qemu.pid")
PIDS+=("$GUEST_PID")
PORT2=$(free_port)
start_agent "$PORT2" "$T/backup2"
start_replicator "$T/backup/qmp.sock" "$PORT2" --epoch-policy fixed --epoch-ms 50
wait_for 180 committed_at_least 20 ||
	die "fewer than 20 epochs of the restored VM committed in 180 s: $(status_field epochs_committed)," \
		"pause p50 $(status_field pause_p50_ms) ms, tracker $(status_field tracker)"
tick_protected=$(last_tick "$T/backup/serial.log")
wait_for 60 dirty_at_least 8192 ||
	die "the restored VM's dirtier seems stopped: $(status_field dirty_pages_total) dirty pages" \
		"in $(status_field epochs_committed) epochs (tracker $(status_field tracker)); the" \
		"guest's tick was $tick_protected when protected, $(last_tick "$T/backup/serial.log") now"
pass "the restored VM is protected in turn ($(status_field tracker)):" \
	"$(status_field epochs_committed) epochs, $(status_field dirty_pages_total) dirty pages"
# The restore left the replica's pages of zeroes unallocated (the replica
# is reserved whole): the restored VM's RAM has holes for its replicator
# to skip in turn.
if [ "$(status_field tracker)" = hash ]; then
	holes=$(status_field hash_hole_pages)
	[ "${holes:-0}" -gt 0 ] &&
		pass "the restored VM's RAM keeps the holes of the replica's zeroes: $holes pages skipped" ||
		fail "the restored VM's RAM has no hole (hash_hole_pages ${holes:-?})"
fi
# Soft-dirty: a process that maps guest RAM writable after attach writes
# outside QEMU's log; the replicator must notice (it looks every 5 s) and
# compare every page from then on (docs/SOFT-DIRTY.md, rule 4).
tracker_is() { [ "$(status_field tracker)" = "$1" ]; }
if tracker_is soft-dirty; then
	[ -f "$T/backup/vm.ram" ] || die "no $T/backup/vm.ram: where does the restored VM keep its RAM?"
	python3 -c 'import mmap, sys, time
f = open(sys.argv[1], "r+b")
m = mmap.mmap(f.fileno(), 0)  # shared, writable: another writer
time.sleep(120)' "$T/backup/vm.ram" &
	writer=$!
	PIDS+=("$writer")
	wait_for 30 tracker_is compare &&
		pass "a second writer of guest RAM seen: $(status_field tracker_reason)" ||
		fail "a second writer of guest RAM not seen in 30 s (tracker $(status_field tracker))"
	grep -qa "now maps guest RAM writable" "$T/replicator.log" &&
		pass "the replicator logged it" || fail "the replicator did not log the second writer"
	kill "$writer"
	n=$(status_field epochs_committed)
	wait_for 60 committed_at_least $((n + 3)) && pass "checkpoints go on, comparing every page" ||
		die "no checkpoints after giving soft-dirty up"
fi
# The serial console is not output-committed: a tick is sure to survive
# only once a checkpoint taken after it has committed. Two more commits
# after reading it make sure, however slow the epochs (a nested VM).
seen=$(last_tick "$restored")
n=$(status_field epochs_committed)
wait_for 60 committed_at_least $((n + 2)) || die "no commits after epoch $n in 60 s"
kill -KILL "$GUEST_PID"
last=$(last_tick "$restored")
log "QEMU $GUEST_PID killed; it printed tick $last last (tick $seen seen two commits before)"
wait_exit "$REPLICATOR_PID" 20 && [ "$EXIT_CODE" = 1 ] && pass "replicator saw QEMU die (exit 1)" ||
	fail "replicator exit code ${EXIT_CODE:-none}, expected 1"
wait_exit "$AGENT_PID" 60 && [ "$EXIT_CODE" = 0 ] && pass "second backup restored the VM (exit 0)" ||
	die "second backup: exit code ${EXIT_CODE:-none}, expected 0 within 60 s"
again=$T/backup2/serial.log
wait_for 60 sh -c "[ \$(tr -d '\r' < '$again' | grep -c '^tick') -ge 5 ]" ||
	die "the VM restored again printed fewer than 5 ticks in 60 s"
first=$(first_tick "$again")
[ "$first" -ge "$seen" ] && [ "$first" -le $((last + 1)) ] &&
	pass "counter goes on: restored at tick $first (seen $seen two commits before the kill, last $last)" ||
	fail "restored at tick $first; seen $seen before the kill, last $last"
gaps=$(ticks_consecutive "$again") && pass "ticks consecutive" || fail "ticks: $gaps"
grep -qa 'guest: ready' "$again" && fail "the VM booted again" || pass "no reboot"
rpid=$(cat "$T/backup2/qemu.pid" 2>/dev/null)
[ -n "$rpid" ] && PIDS+=("$rpid")
finish
