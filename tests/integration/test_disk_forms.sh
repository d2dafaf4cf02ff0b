#!/bin/bash
# A restored VM reads exactly the bytes it wrote, whatever form its disk
# takes on QEMU's command line. For each form of scripts/run-test-guest
# --disk-form: the guest checks its disk every 100 ms (disk_check=1),
# is replicated with short fixed epochs, its QEMU is SIGKILLed in the middle
# of an epoch, and the restored VM must go on saying "disk: ok" from where
# it was, never "disk: MISMATCH" or a read error, without booting again; the
# agent must have checked the restored block graph ("block graph
# verified"). Then a write at offset 0 through the restored disk (HMP
# qemu-io on the device, as the guest would write) and, the restored QEMU
# stopped, its overlay must still be a qcow2 image over the replica disk
# holding that write: a QEMU that opened the overlay as raw has written over
# its header.
# Two forms run under --disk-capture bitmap (BITMAP_FORMS): qcow2 images,
# whose epochs' blocks the replicator reads over QEMU's NBD server.
# Then the disks the replicator cannot restore faithfully must be refused at
# attach (non-zero exit, a 'refusing VM' line naming the disk), with nothing
# restored: a CD-ROM with a medium (accepted with --unprotected-disk), a disk
# on NBD, a vmdk image.
# Each case has its own guest, agent, replicator, directories and port, and
# a failed one shows the ends of its logs. FORMS="..." runs some forms,
# SKIP_REFUSALS=1 leaves the refusals out.
# Skips, with the reason, without qemu-img or qemu-nbd.
. "$(dirname "$0")/lib.sh"

skip() { log "skip - $*"; log "SKIP $(basename "$0")"; exit 0; }
command -v qemu-img > /dev/null || skip "no qemu-img (install qemu-utils)"
command -v qemu-nbd > /dev/null || skip "no qemu-nbd (install qemu-utils)"

EPOCH_MS=300
FORMS=${FORMS:-"drive-raw drive-qcow2 drive-virtio blockdev-file blockdev-raw blockdev-qcow2 blockdev-qcow2-backing blockdev-json"}
BITMAP_FORMS=${BITMAP_FORMS:-"blockdev-qcow2 blockdev-json"}
START_MS=$(now_ms)

# stop_pid PID: SIGTERM, SIGKILL after 5 s; true once it is gone.
stop_pid() {
	kill -TERM "$1" 2>/dev/null
	wait_for 5 process_gone "$1" && return 0
	kill -KILL "$1" 2>/dev/null
	wait_for 2 process_gone "$1"
}

# boot NAME RUN_TEST_GUEST_ARGS...: the test guest with disk_check=1, booted
# and checking its disk; sets GUEST_PID. Fails the case (returns 1) instead
# of ending the test, so that the other cases still run.
boot() {
	local name=$1
	shift
	"$ROOT/scripts/run-test-guest" --guest-dir "$GUEST" --name "$name" --run-dir "$T/$name" \
		--mem 128 --append "disk_check=1" --daemonize \
		${TEST_ACCEL:+--accel "$TEST_ACCEL"} ${TEST_SMP:+--smp "$TEST_SMP"} "$@" ||
		{ fail "$name: cannot start the guest"; return 1; }
	RAM_FILES+=("/dev/shm/remus-$name.ram")
	GUEST_PID=$(cat "$T/$name/qemu.pid")
	PIDS+=("$GUEST_PID")
	# GUEST_BOOT_TIMEOUT: as start_guest (lib.sh) takes it; test_kvm gives
	# a nested VM's KVM guest 120 s
	wait_for "${GUEST_BOOT_TIMEOUT:-60}" grep -qa 'guest: ready' "$T/$name/serial.log" ||
		{ fail "$name: the guest did not boot in ${GUEST_BOOT_TIMEOUT:-60} s (see" \
			"$T/$name/serial.log)"; return 1; }
	wait_for 30 grep -qa 'disk: ok' "$T/$name/serial.log" ||
		{ fail "$name: no 'disk: ok' from the guest in 30 s"; return 1; }
}

# agent_for NAME [ARGS...]: an agent (--no-fence) for case NAME, state dir
# $T/NAME-backup, log $T/NAME-agent.log; sets PORT and AGENT_PID.
agent_for() {
	local name=$1
	shift
	PORT=$(free_port)
	"$BIN/remus-agent" --listen "127.0.0.1:$PORT" --state-dir "$T/$name-backup" --key-file "$KEY" \
		--no-fence "$@" > "$T/$name-agent.log" 2>&1 &
	AGENT_PID=$!
	PIDS+=("$AGENT_PID")
}

# replicator_for NAME [ARGS...]: the replicator of case NAME to the agent on
# PORT, control socket $T/NAME.ctl, log $T/NAME-replicator.log.
replicator_for() {
	local name=$1
	shift
	"$BIN/remus-replicator" --key-file "$KEY" --qmp "$T/$name/qmp.sock" --backup "127.0.0.1:$PORT" \
		--control "$T/$name.ctl" --epoch-policy fixed --epoch-ms "$EPOCH_MS" "$@" \
		> "$T/$name-replicator.log" 2>&1 &
	REPLICATOR_PID=$!
	PIDS+=("$REPLICATOR_PID")
}

# disk_bad SERIAL_LOG: the first line of the disk check, after its first
# read, that is not "disk: ok N"; fails if there is none.
disk_bad() {
	tr -d '\r' < "$1" | grep -a '^disk: ' | grep -av '^disk: \(ok\|first read\)' | head -n 1 | grep .
}

# disk_settled SERIAL_LOG: two "disk: ok" lines, or a bad one.
disk_settled() {
	[ "$(grep -ac 'disk: ok' "$1")" -ge 2 ] || disk_bad "$1" > /dev/null
}

# committed NAME: epochs committed by the replicator of case NAME (no
# python here: polled every 0.1 s, and its start-up costs a second on a
# loaded machine).
committed() {
	"$BIN/remusctl" --control "$T/$1.ctl" status --json 2>/dev/null |
		grep -o '"epochs_committed": *[0-9]*' | grep -o '[0-9]*$'
}

committed_at() {
	local n
	n=$(committed "$1") || return 1
	[ "${n:-0}" -ge "$2" ]
}

# bitmap_state NAME: the replicator's disk capture, disk0's state and how
# its blocks are read, e.g. "bitmap bitmaps nbd".
bitmap_state() {
	"$BIN/remusctl" --control "$T/$1.ctl" status --json 2>/dev/null | python3 -c '
import json, sys
s = json.load(sys.stdin)
print(s["disk_capture"], s["disks"][0]["state"], s["disks"][0].get("bitmap_reads", "-"))'
}

# protected_or_refused NAME: 3 epochs committed, or the replicator has
# stopped, or the backup refused the VM (the replicator then retries for
# ever: no point waiting).
protected_or_refused() {
	committed_at "$1" 3 || process_gone "$REPLICATOR_PID" ||
		grep -q 'backup refused' "$T/$1-replicator.log"
}

# past_attach NAME: the replicator has stopped, or it has got past its
# attach-time checks (it runs epochs, or talks to the backup, which comes
# after them).
past_attach() {
	process_gone "$REPLICATOR_PID" ||
		grep -q 'committed on the backup\|backup refused' "$T/$1-replicator.log"
}

# hmp QMP_SOCKET COMMAND: one HMP command through QMP; prints its output
# (or the error).
hmp() {
	python3 - "$1" "$2" <<'PY'
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(10)
s.connect(sys.argv[1])
f = s.makefile('rw')
def cmd(c):
    f.write(json.dumps(c) + '\n')
    f.flush()
    while True:
        r = json.loads(f.readline())
        if 'return' in r or 'error' in r:
            return r
f.readline()  # the greeting
cmd({'execute': 'qmp_capabilities'})
r = cmd({'execute': 'human-monitor-command', 'arguments': {'command-line': sys.argv[2]}})
print(r['return'] if 'return' in r else 'error: ' + r['error'].get('desc', ''))
PY
}

# case_end NAME FAILS_BEFORE: stop what the case left running; on a failed
# case, show the ends of its logs.
case_end() {
	local name=$1 before=$2 f p
	for p in "$REPLICATOR_PID" "$AGENT_PID" "$GUEST_PID"; do
		[ -n "$p" ] && stop_pid "$p"
	done
	f=$T/$name-backup/qemu.pid
	if [ -s "$f" ] && p=$(cat "$f") && [ "$(cat "/proc/$p/comm" 2>/dev/null)" = qemu-system-x86 ]; then
		stop_pid "$p"
	fi
	if [ "$FAILS" -gt "$before" ]; then
		for f in "$T/$name-replicator.log" "$T/$name-agent.log" "$T/$name-backup/serial.log"; do
			[ -f "$f" ] && { echo "--- tail of $f"; tail -n 12 "$f" | tr -d '\r'; }
		done
	fi
	REPLICATOR_PID='' AGENT_PID='' GUEST_PID=''
	log "$name: done after $(( ($(now_ms) - START_MS) / 1000 )) s"
}

# failover FORM: replicate a guest whose disk is in FORM, kill its QEMU in
# the middle of an epoch, check the restored VM and its disk.
failover() {
	local form=$1 name=f-$1 before=$FAILS n dir restored qpid info fmt backing last first bad dev out
	local capture state
	dir=$T/$name-backup
	REPLICATOR_PID='' AGENT_PID='' GUEST_PID=''
	log "=== $form"
	if ! boot "$name" --disk "$T/$name.img" --disk-form "$form"; then
		case_end "$name" "$before"
		return
	fi
	capture=mirror
	case " $BITMAP_FORMS " in *" $form "*) capture=bitmap ;; esac
	agent_for "$name"
	replicator_for "$name" --disk-capture "$capture"
	wait_for 60 protected_or_refused "$name"
	if ! committed_at "$name" 3; then
		fail "$form: not protected, fewer than 3 epochs committed: $(grep -m1 'backup refused\|error' "$T/$name-replicator.log" || echo 'in 60 s')"
		case_end "$name" "$before"
		return
	fi
	if [ "$capture" = bitmap ]; then
		state=$(bitmap_state "$name")
		[ "$state" = "bitmap bitmaps nbd" ] &&
			pass "$form: epochs captured by dirty bitmaps, blocks read over NBD" ||
			fail "$form: bitmap capture not in use (capture, state, reads: $state)"
	fi
	# Just after a commit, half an epoch into the next: the guest has
	# written a value or two that the backup has not committed.
	n=$(committed "$name")
	wait_for 10 committed_at "$name" $((n + 1)) || fail "$form: no commit within 10 s"
	sleep 0.15
	kill -KILL "$GUEST_PID"
	log "$form: primary QEMU killed mid-epoch ($(grep -a 'disk: ok' "$T/$name/serial.log" | tail -n 1 | tr -d '\r'))"
	if ! wait_exit "$AGENT_PID" 30; then
		fail "$form: the agent did not fail over within 30 s"
		case_end "$name" "$before"
		return
	fi
	AGENT_PID=''
	if [ "$EXIT_CODE" != 0 ]; then
		fail "$form: agent exit code $EXIT_CODE: $(grep -a -m1 'ERROR\|error\|cannot\|refus' "$T/$name-agent.log")"
		case_end "$name" "$before"
		return
	fi
	restored=$dir/serial.log
	last=$(grep -a 'disk: ok' "$T/$name/serial.log" | tail -n 1 | tr -dc '0-9')
	# The check prints "disk: ok N" every tenth check (1 s); anything else
	# it prints after its first read (MISMATCH, read or write error) is a
	# disk that is not the one the guest wrote.
	wait_for 20 disk_settled "$restored" ||
		fail "$form: restored VM: fewer than 2 disk checks in 20 s"
	bad=$(disk_bad "$restored")
	if [ -n "$bad" ]; then
		n=$(grep -a 'disk: ' "$restored")
		fail "$form: restored VM: '$bad' ($(echo "$n" | grep -c .) disk lines, $(echo "$n" | grep -vc 'disk: ok') of them bad)"
	else
		pass "$form: restored VM: no disk MISMATCH or error"
	fi
	first=$(grep -a -m1 'disk: ok' "$restored" | tr -dc '0-9')
	if [ -n "$first" ] && [ "$first" -ge "${last:-0}" ]; then
		pass "$form: restored VM: the disk check goes on ($(grep -ac 'disk: ok' "$restored") x 'disk: ok', from $first; the primary's last: $last)"
	else
		fail "$form: restored VM: no 'disk: ok' carrying on from the primary's 'disk: ok $last' (first: '${first}')"
	fi
	grep -qa 'guest: ready' "$restored" && fail "$form: the restored guest booted again" ||
		pass "$form: the restored guest did not reboot"
	if grep -q 'block graph verified' "$T/$name-agent.log" &&
		! grep -q 'block graph check failed' "$T/$name-agent.log"; then
		pass "$form: agent: $(grep -m1 'block graph verified' "$T/$name-agent.log" | sed 's/^.*block graph/block graph/')"
	else
		fail "$form: agent: no 'block graph verified'$(grep -m1 'block graph check failed' "$T/$name-agent.log" | sed 's/^.*block graph/: block graph/')"
	fi
	# The overlay, once its QEMU is stopped: still qcow2 over the replica.
	# The guest's check writes at 1 MiB: write at offset 0 too, through the
	# device, as the guest would, so that a QEMU that opens the overlay as
	# raw overwrites its header (a qcow2 node takes it as guest data).
	# (QEMU 7.2's HMP qemu-io prints its result on QEMU's stdout, which the
	# agent sends to the state dir's qemu.log, not in the reply.)
	if [ "$form" = drive-virtio ]; then
		dev=virtio0 # -drive if=virtio: a named drive, a device without id
	else
		dev="-d /machine/peripheral/vdisk0/virtio-backend"
	fi
	out=$(hmp "$dir/qmp.sock" "qemu-io $dev \"write -P 0x5a 0 64k\"" 2>&1)
	if [ -n "$(echo "$out" | tr -d '\r\n')" ]; then
		fail "$form: cannot write through the restored disk: $(echo "$out" | head -c 200 | tr '\r\n' '  ')"
	elif ! wait_for 5 grep -q 'wrote 65536/65536 bytes at offset 0' "$dir/qemu.log"; then
		fail "$form: the write through the restored disk did not happen: $(tail -n 2 "$dir/qemu.log" | tr '\n' ' ')"
	fi
	qpid=$(cat "$dir/qemu.pid" 2>/dev/null)
	if [ -n "$qpid" ] && [ "$(cat "/proc/$qpid/comm" 2>/dev/null)" = qemu-system-x86 ]; then
		stop_pid "$qpid" || fail "$form: the restored QEMU (pid $qpid) would not stop"
	else
		fail "$form: no restored QEMU running (qemu.pid '${qpid}')"
	fi
	info=$(qemu-img info -U --output=json "$dir/disk-0.qcow2" 2>&1)
	fmt=$(echo "$info" | sed -n 's/^ *"format": *"\([^"]*\)".*/\1/p' | head -n 1)
	backing=$(echo "$info" | sed -n 's/^ *"full-backing-filename": *"\([^"]*\)".*/\1/p' | head -n 1)
	if [ "$fmt" = qcow2 ] && [ -n "$backing" ] &&
		[ "$(readlink -f "$backing")" = "$(readlink -f "$dir/disk-0.img")" ]; then
		pass "$form: the restored overlay is qcow2 over the replica ($(basename "$backing"))"
		out=$(qemu-io -r -U -f qcow2 -c 'read -P 0x5a 0 64k' "$dir/disk-0.qcow2" 2>&1)
		case $out in
			*'read 65536/65536'*) pass "$form: a write through the restored disk is guest data in the overlay" ;;
			*) fail "$form: the write through the restored disk is not in the overlay: $(echo "$out" | head -n 2 | tr '\n' ' ')" ;;
		esac
	else
		fail "$form: the restored overlay disk-0.qcow2: format '${fmt:-?}', backing '${backing:-none}' (qemu-img: $(echo "$info" | head -c 200 | tr '\n' ' '))"
	fi
	wait_exit "$REPLICATOR_PID" 10 && REPLICATOR_PID=''
	case_end "$name" "$before"
}

# refused NAME DISK AGENT_ARGS [REPLICATOR_ARGS...]: the guest NAME is up; its
# replicator must refuse it at attach, within 30 s, with a non-zero status
# and a log line 'refusing VM ...' that names DISK; the agent restores
# nothing. (The wording beyond 'refusing VM' is the replicator's own.)
refused() {
	local name=$1 disk=$2 aargs=$3 what
	shift 3
	agent_for "$name" $aargs
	replicator_for "$name" "$@"
	wait_for 30 past_attach "$name"
	sleep 1 # a refusal may come just after such a line
	if wait_exit "$REPLICATOR_PID" 1; then
		REPLICATOR_PID=''
		[ "$EXIT_CODE" != 0 ] && pass "$name: the replicator exits with status $EXIT_CODE" ||
			fail "$name: the replicator exits with status 0"
		what=$(grep 'refusing VM' "$T/$name-replicator.log" | grep -F -m1 "$disk")
		[ -n "$what" ] && pass "$name: the replicator says: ${what#*refusing}" ||
			fail "$name: no 'refusing VM' line naming '$disk' (last line: $(tail -n 1 "$T/$name-replicator.log"))"
	else
		fail "$name: not refused at attach: the replicator runs on ($(committed "$name") epochs committed; $(grep -m1 -o 'backup refused.*' "$T/$name-replicator.log" || echo 'the backup took it'))"
		stop_pid "$REPLICATOR_PID" # SIGTERM: a detach, not a failover
		wait "$REPLICATOR_PID" 2>/dev/null
		REPLICATOR_PID=''
	fi
	# A lost primary counts after --timeout-ms (2 s): give it the time.
	sleep 2.5
	if grep -q 'restoring the VM\|VM restored' "$T/$name-agent.log" || [ -e "$T/$name-backup/qemu.pid" ]; then
		fail "$name: the agent restored the VM: $(grep -m1 'restoring the VM\|VM restored' "$T/$name-agent.log")"
	else
		pass "$name: the agent restored nothing"
	fi
}

# forged_shared_header NAME: the shared CD image of case NAME, which the
# VM reads as qcow2, gets a qcow2 header naming a host file as its backing
# file (what the primary's host can write into the shared storage); the
# primary dies: the agent refuses to restore, with the reason, and keeps
# the replica. With the image mended, `remus-agent --restore` restores
# that replica. (A raw shared image is not looked into, whatever its
# bytes: check_shared_image's raw_bytes_are_data.)
forged_shared_header() {
	local name=$1 qpid
	cp "$ISO" "$ISO.orig"
	python3 - "$ISO" <<'PY'
import struct, sys
hdr = bytearray(1024)
hdr[0:4] = b"QFI\xfb"
name = b"/etc/hostname"
struct.pack_into(">IQII", hdr, 4, 3, 512, len(name), 16)
struct.pack_into(">I", hdr, 100, 104)
hdr[512:512 + len(name)] = name
with open(sys.argv[1], "r+b") as f:
    f.write(hdr)
PY
	kill -KILL "$GUEST_PID"
	if ! wait_exit "$AGENT_PID" 30; then
		fail "$name: the agent neither restored nor gave up within 30 s"
		return
	fi
	AGENT_PID=''
	if [ "$EXIT_CODE" = 1 ] && grep -q "refusing to restore: shared disk $ISO: its qcow2 header names the backing file '/etc/hostname'" "$T/$name-agent.log" &&
		grep -q "FAILOVER FAILED: the replica in .* is intact" "$T/$name-agent.log"; then
		pass "$name: a shared image whose header names /etc/hostname: restore refused, replica kept"
	else
		fail "$name: forged header on the shared CD image: agent exit $EXIT_CODE, $(grep -m1 'shared disk\|FAILOVER\|restored' "$T/$name-agent.log")"
	fi
	[ -e "$T/$name-backup/qemu.pid" ] && fail "$name: a QEMU was started on the forged image" ||
		pass "$name: no QEMU started on the forged image"
	cp "$ISO.orig" "$ISO"
	if "$BIN/remus-agent" --restore --state-dir "$T/$name-backup" --shared-disk "$ISO" \
		> "$T/$name-restore.log" 2>&1 && [ -s "$T/$name-backup/qemu.pid" ]; then
		qpid=$(cat "$T/$name-backup/qemu.pid")
		PIDS+=("$qpid")
		wait_for 20 grep -qa 'disk: ok' "$T/$name-backup/serial.log" &&
			pass "$name: the image mended, remus-agent --restore restores the kept replica" ||
			fail "$name: restored by hand, but no 'disk: ok' in 20 s"
	else
		fail "$name: remus-agent --restore after the image was mended: $(tail -n 2 "$T/$name-restore.log")"
	fi
}

# --- Every form fails over with the guest's disk intact.
for form in $FORMS; do
	failover "$form"
done

# --- Forms the replicator must refuse at attach.
[ -n "${SKIP_REFUSALS:-}" ] && finish

# (a) A CD-ROM with a medium (a qcow2 image), next to a normal disk:
# refused, then accepted with --unprotected-disk (the agent sees the
# medium as shared either way, so that the refusal is the replicator's own).
ISO=$T/cd.qcow2
qemu-img create -q -f qcow2 "$ISO" 1M
for c in cdrom cdrom-unprotected; do
	before=$FAILS
	REPLICATOR_PID='' AGENT_PID='' GUEST_PID=''
	log "=== $c"
	if boot "$c" --disk "$T/$c.img" -- -drive "file=$ISO,format=qcow2,media=cdrom,if=ide"; then
		if [ "$c" = cdrom ]; then
			refused cdrom ide0-cd0 "--shared-disk $ISO"
		else
			agent_for "$c" --shared-disk "$ISO"
			replicator_for "$c" --unprotected-disk ide0-cd0
			if wait_for 60 committed_at "$c" 3; then
				pass "$c: with --unprotected-disk ide0-cd0 the VM is replicated ($(committed "$c") epochs committed)"
				forged_shared_header "$c"
			else
				fail "$c: with --unprotected-disk ide0-cd0, fewer than 3 epochs committed in 60 s"
			fi
		fi
	fi
	case_end "$c" "$before"
done

# (b) A disk on NBD (served by qemu-nbd on a unix socket).
before=$FAILS
REPLICATOR_PID='' AGENT_PID='' GUEST_PID=''
log "=== nbd"
truncate -s 64M "$T/nbd.img"
qemu-nbd --socket="$T/nbd.sock" --format=raw "$T/nbd.img" > "$T/qemu-nbd.log" 2>&1 &
NBD_PID=$!
PIDS+=("$NBD_PID")
if ! wait_for 10 test -S "$T/nbd.sock"; then
	fail "nbd: qemu-nbd did not listen on $T/nbd.sock in 10 s: $(head -c 200 "$T/qemu-nbd.log")"
elif boot nbd -- -blockdev "driver=nbd,server.type=unix,server.path=$T/nbd.sock,node-name=disk0" \
	-device virtio-blk-pci,drive=disk0,id=vdisk0; then
	refused nbd disk0 ""
fi
case_end nbd "$before"
stop_pid "$NBD_PID"

# (c) A vmdk image.
before=$FAILS
REPLICATOR_PID='' AGENT_PID='' GUEST_PID=''
log "=== vmdk"
qemu-img create -q -f vmdk "$T/vmdk.vmdk" 64M || fail "vmdk: qemu-img cannot create a vmdk image"
if boot vmdk -- -blockdev "driver=file,filename=$T/vmdk.vmdk,node-name=disk0-file" \
	-blockdev driver=vmdk,file=disk0-file,node-name=disk0 -device virtio-blk-pci,drive=disk0,id=vdisk0; then
	refused vmdk disk0 ""
fi
case_end vmdk "$before"

log "whole test: $(( ($(now_ms) - START_MS) / 1000 )) s"
finish
