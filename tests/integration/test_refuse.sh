#!/bin/bash
# A VM that cannot be replicated safely is refused at attach, with the
# reason and what to change; a memfd-backed VM is accepted.
. "$(dirname "$0")/lib.sh"

# vm NAME QEMU_ARGS...: a firmware-only QEMU, stopped (-S): attach needs no OS.
vm() {
	local name=$1
	shift
	mkdir -p "$T/$name"
	qemu-system-x86_64 -accel tcg -machine pc -m 64M -nodefaults -display none -S \
		-qmp "unix:$T/$name/qmp.sock,server=on,wait=off" -pidfile "$T/$name/qemu.pid" \
		-daemonize "$@" || die "cannot start QEMU for $name"
	PIDS+=("$(cat "$T/$name/qemu.pid")")
}

# attach NAME: run the replicator against a port nobody listens on.
attach() {
	timeout 10 "$BIN/remus-replicator" --key-file "$KEY" --qmp "$T/$1/qmp.sock" --backup "127.0.0.1:$(free_port)" \
		"${@:2}" > "$T/$1.log" 2>&1
}

expect_refusal() {
	local name=$1 pattern=$2 what=$3
	shift 3
	attach "$name" "$@"
	local rc=$?
	if [ "$rc" = 2 ] && grep -q -- "$pattern" "$T/$name.log"; then
		pass "$what refused: $(grep -o 'refusing.*' "$T/$name.log" | head -c 160)"
	else
		fail "$what: exit $rc, log: $(tail -n 2 "$T/$name.log")"
	fi
}

vm plain -vga none
expect_refusal plain "memory backend .pc.ram. is not shared.*memory-backend-file" "RAM on QEMU's private default backend"

vm private -vga none -object memory-backend-file,id=ram0,size=64M,mem-path="$T/private.ram",share=off \
	-machine memory-backend=ram0
expect_refusal private "is not shared (share=off)" "RAM backend with share=off"

vm vga -vga std -object memory-backend-file,id=ram0,size=64M,mem-path="$T/vga.ram",share=on \
	-machine memory-backend=ram0
expect_refusal vga "RAM block '.*vga.vram'.*-vga none" "guest-writable VGA RAM outside the backend"

vm wrongfile -vga none -object memory-backend-file,id=ram0,size=64M,mem-path="$T/wrongfile.ram",share=on \
	-machine memory-backend=ram0
truncate -s 32M "$T/other.ram"
expect_refusal wrongfile "$T/other.ram is not a file QEMU (pid [0-9]*) has open" \
	"a --ram-file QEMU does not use" --ram-file "$T/other.ram"

# The guest RAM file must be QEMU's (or root's) alone: a file another
# user made before QEMU opened it lets them write guest memory.
ram_vm() {
	vm "$1" -vga none -object memory-backend-file,id=ram0,size=64M,mem-path="$T/$1.ram",share=on \
		-machine memory-backend=ram0
}
install -m 0600 -o nobody /dev/null "$T/theirs.ram" && truncate -s 64M "$T/theirs.ram"
ram_vm theirs
expect_refusal theirs "belongs to uid [0-9]*, neither root nor QEMU's user" \
	"a guest RAM file another user made"
install -m 0666 /dev/null "$T/open.ram" && truncate -s 64M "$T/open.ram"
ram_vm open
expect_refusal open "anyone may write guest RAM file" "a guest RAM file anyone may write"
# ... and one others can read is made private (QEMU makes it 0640 under
# umask 022), with a warning
old_umask=$(umask)
umask 022
ram_vm readable
umask "$old_umask"
timeout 3 "$BIN/remus-replicator" --key-file "$KEY" --qmp "$T/readable/qmp.sock" \
	--backup "127.0.0.1:$(free_port)" > "$T/readable.log" 2>&1
grep -q "guest RAM file $T/readable.ram was readable by others (mode 06[0-7][0-7]): made it mode 0600" \
	"$T/readable.log" && [ "$(stat -c %a "$T/readable.ram")" = 600 ] &&
	pass "a guest RAM file others could read was made 0600, with a warning" ||
	fail "readable RAM file: mode $(stat -c %a "$T/readable.ram"), log: $(grep -m1 'RAM file' "$T/readable.log")"

# NICs: the net buffer must own the VM's output.
shared_ram() { echo "-object memory-backend-file,id=ram0,size=64M,mem-path=$T/$1.ram,share=on -machine memory-backend=ram0"; }
# shellcheck disable=SC2046
vm usernet -vga none $(shared_ram usernet) -netdev user,id=u0 -device virtio-net-pci,netdev=u0
expect_refusal usernet "backend 'u0' is of type user.*-netdev dgram" "a NIC on -netdev user"
# shellcheck disable=SC2046
vm dgram -vga none $(shared_ram dgram) -device virtio-net-pci,netdev=n0 \
	-netdev dgram,id=n0,local.type=unix,local.path="$T/n0.q",remote.type=unix,remote.path="$T/n0.b"
expect_refusal dgram "netdev n0 is a datagram socket the net buffer must own.*--net-out n0=" \
	"a datagram NIC without --net-out"
# shellcheck disable=SC2046
vm udp -vga none $(shared_ram udp) -device e1000,netdev=s0 \
	-netdev socket,id=s0,udp=127.0.0.1:"$(free_port)",localaddr=127.0.0.1:"$(free_port)"
"$BIN/remus-replicator" --key-file "$KEY" --qmp "$T/udp/qmp.sock" --backup "127.0.0.1:$(free_port)" \
	--net-out s0=tap:rmt$$ > "$T/udp.log" 2>&1 &
rpid=$!
PIDS+=("$rpid")
wait_for 10 grep -qs "retrying every second" "$T/udp.log"
grep -q "netdev s0: output held for its checkpoint, then out through tap:rmt$$" "$T/udp.log" &&
	pass "a NIC on -netdev socket,udp (libvirt's kind) is owned by the net buffer" ||
	fail "socket,udp NIC not taken: $(head -n 4 "$T/udp.log")"
kill -TERM "$rpid"; wait_exit "$rpid" 10

# A writable disk is replicated; a read-only one is refused unless the
# operator says both hosts see it (a restore without it would lose a disk);
# one that cannot be protected (here: one disk too many) is refused
# unless the operator says both hosts share it.
truncate -s 8M "$T/disk.img" "$T/cdrom.img"
# shellcheck disable=SC2046
vm disk -vga none $(shared_ram disk) -drive file="$T/disk.img",format=raw,if=virtio,id=disk0 \
	-drive file="$T/cdrom.img",format=raw,if=virtio,readonly=on,id=disk1
expect_refusal disk "disk 'disk1' .* is read-only.*--unprotected-disk disk1" \
	"a read-only disk not declared shared"
"$BIN/remus-replicator" --key-file "$KEY" --qmp "$T/disk/qmp.sock" --backup "127.0.0.1:$(free_port)" \
	--unprotected-disk disk1 > "$T/disk.log" 2>&1 &
rpid=$!
PIDS+=("$rpid")
wait_for 10 grep -qs "retrying every second" "$T/disk.log"
grep -q "disk disk0 ($T/disk.img, 8 MiB) is replicated through" "$T/disk.log" &&
	grep -q "attached to VM" "$T/disk.log" &&
	grep -q "disk 'disk1' .* is not replicated (--unprotected-disk)" "$T/disk.log" &&
	pass "a writable disk is replicated; a read-only one declared shared is left alone" ||
	fail "writable disk: $(head -n 4 "$T/disk.log")"
kill -TERM "$rpid"; wait_exit "$rpid" 10
[ "${EXIT_CODE:-}" = 0 ] && pass "detaching from a VM with a replicated disk exits 0" ||
	fail "detach with a disk: exit ${EXIT_CODE:-?}"

# 17 writable disks: one more than the replicator protects.
many=()
for i in $(seq 0 16); do
	truncate -s 1M "$T/many$i.img"
	many+=(-drive "file=$T/many$i.img,format=raw,if=none,id=m$i")
done
# shellcheck disable=SC2046
vm many -vga none $(shared_ram many) "${many[@]}"
expect_refusal many "more than 16 writable disks" "a disk that cannot be replicated"
"$BIN/remus-replicator" --key-file "$KEY" --qmp "$T/many/qmp.sock" --backup "127.0.0.1:$(free_port)" \
	--unprotected-disk m16 > "$T/shared.log" 2>&1 &
rpid=$!
PIDS+=("$rpid")
wait_for 10 grep -qs "retrying every second" "$T/shared.log"
grep -q "disk 'm16' .* is not replicated (--unprotected-disk)" "$T/shared.log" &&
	grep -q "attached to VM" "$T/shared.log" &&
	pass "a disk the operator declares shared is accepted with a warning" ||
	fail "--unprotected-disk: $(head -n 4 "$T/shared.log")"
kill -TERM "$rpid"; wait_exit "$rpid" 10

# Two QMP sockets: a second replicator could reach the VM beside the first.
vm memfd -vga none -object memory-backend-memfd,id=ram0,size=64M,share=on -machine memory-backend=ram0 \
	-qmp "unix:$T/memfd/qmp2.sock,server=on,wait=off"
"$BIN/remus-replicator" --key-file "$KEY" --qmp "$T/memfd/qmp.sock" --backup "127.0.0.1:$(free_port)" > "$T/memfd.log" 2>&1 &
rpid=$!
PIDS+=("$rpid")
wait_for 10 grep -qs "retrying every second" "$T/memfd.log"
grep -q "attached to VM .* 64 MiB RAM in /proc/[0-9]*/fd/[0-9]* (backend ram0)" "$T/memfd.log" &&
	pass "memfd-backed VM accepted (RAM found through QEMU's descriptor)" ||
	fail "memfd-backed VM not attached: $(head -n 3 "$T/memfd.log")"
# One replicator per VM: a second one, through the second QMP socket, is
# refused while the first is attached (and the first keeps going).
timeout 10 "$BIN/remus-replicator" --key-file "$KEY" --qmp "$T/memfd/qmp2.sock" --backup "127.0.0.1:$(free_port)" \
	> "$T/memfd2.log" 2>&1
rc=$?
[ "$rc" = 2 ] && grep -q "another remus-replicator is attached to VM" "$T/memfd2.log" &&
	pass "a second replicator on the same VM refused: $(grep -o 'another.*' "$T/memfd2.log" | head -c 120)" ||
	fail "a second replicator on the same VM: exit $rc: $(tail -n 2 "$T/memfd2.log")"
kill -0 "$rpid" 2>/dev/null && pass "the first replicator still runs" || fail "the first replicator is gone"
kill -TERM "$rpid"
wait_exit "$rpid" 10 && [ "$EXIT_CODE" = 0 ] && pass "detached on SIGTERM while waiting for the backup" ||
	fail "replicator did not exit 0 on SIGTERM (${EXIT_CODE:-still running})"
# ...and the lock goes with the first one.
"$BIN/remus-replicator" --key-file "$KEY" --qmp "$T/memfd/qmp2.sock" --backup "127.0.0.1:$(free_port)" > "$T/memfd3.log" 2>&1 &
rpid=$!
PIDS+=("$rpid")
wait_for 10 grep -qs "retrying every second" "$T/memfd3.log" &&
	pass "once the first replicator is gone, another may attach" ||
	fail "no replicator could attach after the first left: $(tail -n 2 "$T/memfd3.log")"
kill -TERM "$rpid"
wait_exit "$rpid" 10

# One agent per state directory.
port=$(free_port)
"$BIN/remus-agent" --key-file "$KEY" --listen "127.0.0.1:$port" --state-dir "$T/agentdir" --no-fence > "$T/agent1.log" 2>&1 &
apid=$!
PIDS+=("$apid")
wait_for 10 grep -qs "listening on" "$T/agent1.log" || fail "agent did not start: $(tail -n 2 "$T/agent1.log")"
timeout 10 "$BIN/remus-agent" --key-file "$KEY" --listen "127.0.0.1:$(free_port)" --state-dir "$T/agentdir" --no-fence \
	> "$T/agent2.log" 2>&1
rc=$?
[ "$rc" = 2 ] && grep -q "state-dir $T/agentdir is in use" "$T/agent2.log" &&
	pass "a second agent on the same state dir refused (exit 2)" ||
	fail "a second agent on the same state dir: exit $rc: $(tail -n 2 "$T/agent2.log")"
timeout 10 "$BIN/remus-agent" --key-file "$KEY" --restore --state-dir "$T/agentdir" > "$T/agent3.log" 2>&1
rc=$?
[ "$rc" = 2 ] && grep -q "is in use" "$T/agent3.log" &&
	pass "--restore on a state dir an agent runs on refused (exit 2)" ||
	fail "--restore beside a running agent: exit $rc: $(tail -n 2 "$T/agent3.log")"
kill -0 "$apid" 2>/dev/null && pass "the first agent still runs" || fail "the first agent is gone"
kill -TERM "$apid"
wait_exit "$apid" 10

"$BIN/remus-replicator" --key-file "$KEY" --qmp "$T/nothing.sock" --backup 127.0.0.1:1 > "$T/nosock.log" 2>&1
rc=$?
[ "$rc" = 2 ] && grep -q "cannot attach to QMP socket $T/nothing.sock" "$T/nosock.log" &&
	pass "missing QMP socket: clear error" || fail "missing QMP socket: exit $rc: $(cat "$T/nosock.log")"
finish
