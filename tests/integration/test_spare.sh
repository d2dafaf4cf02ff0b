#!/bin/bash
# A pair with a spare host (issue #19: "the old primary when it comes back,
# or a spare named in the config"). One file with three [host] sections,
# a, b and c, one daemon per host, all on loopback; the guest has a disk
# and checks, every 100 ms, that it reads back what it last wrote there.
#
#   0. A replicator whose file calls its host zeta is refused by c's
#      agent: the host a primary names is one the fence command can power
#      off, a host of the agent's own file.
#   1. The VM starts on a, protected by b (the first other host).
#   2. Host a dies (its daemon and the VM's QEMU SIGKILLed). b's agent
#      fences a (the fence command hears REMUS_PEER_HOST=a), restores the
#      VM and protects it to the spare c, as a stays down.
#   3. a comes back: its daemon finds no VM, starts no copy and waits as
#      an agent; the VM stays protected by c.
#   4. The link b-c is reset (ss -K) while both hosts live, and c's fence
#      is slow (14 s: a power switch that takes its time). c takes b for
#      dead and fences it; meanwhile c's agent cannot be reached (its loop
#      waits for its fence), but b must not protect the VM to a: a backup
#      with a commit would restore the VM too once c has fenced b, and two
#      copies would run. b asks c alone until c's takeover window (its
#      timeout plus its fence's limit) has passed; c powers b off within it,
#      restores the VM from its replica and protects it to a. (Shown
#      failing once with the binding left out: two QEMUs ran.)
# Throughout, the console's ticks go on without a reboot, the restored
# disks agree with the restored memory, and in the end one QEMU runs.
#
# run-all timeout: 420
. "$(dirname "$0")/lib.sh"

PORTS=("$(free_port)" "$(free_port)" "$(free_port)")
HOSTS=(a b c)
TIMEOUT_MS=5000   # the agents' heartbeat timeout
FENCE_LOG=$T/fence.log

for h in "${HOSTS[@]}"; do mkdir -p "$T/host-$h"; done

# The fence command, a stand-in for a power switch: it "powers off" host
# $REMUS_PEER_HOST by SIGKILLing the QEMU that runs there (by its pid
# file, checked to be a QEMU), and logs who asked to fence whom.
cat > "$T/fence" <<EOF
#!/bin/sh
printf '%s %s\n' "\$REMUS_PEER_HOST" "\$*" >> '$FENCE_LOG'
[ -e '$T/fence-slow' ] && sleep 14 # a power switch that takes its time
case \$REMUS_PEER_HOST in
	a) files='$T/vm/qemu.pid $T/host-a/qemu.pid' ;;
	b|c) files=$T/host-\$REMUS_PEER_HOST/qemu.pid ;;
	*) exit 1 ;;
esac
for f in \$files; do
	p=\$(cat \$f 2>/dev/null) || continue
	[ "\$(cat /proc/\$p/comm 2>/dev/null)" = qemu-system-x86 ] && kill -KILL \$p
done
exit 0
EOF
chmod 755 "$T/fence"

start_guest vm 128 "disk_check=1 dirty_mb_s=5" --disk "$T/disk.img"
wait_for 30 grep -qa 'disk: ok' "$T/vm/serial.log" || die "no disk check runs in the guest"

cat > "$T/pair.conf" <<EOF
[pair]
name = spare-test
[vm]
qmp = $T/vm/qmp.sock
[host a]
address = 127.0.0.1:${PORTS[0]}
state-dir = $T/host-a
control-socket = $T/a.ctl
[host b]
address = 127.0.0.1:${PORTS[1]}
state-dir = $T/host-b
control-socket = $T/b.ctl
[host c]
address = 127.0.0.1:${PORTS[2]}
state-dir = $T/host-c
control-socket = $T/c.ctl
[epoch]
policy = fixed
length-ms = 100
[heartbeat]
timeout-ms = $TIMEOUT_MS
[hooks]
fence = $T/fence
fence-timeout-ms = 20000
[link]
key-file = $KEY
EOF

declare -A DAEMON
# start_daemon HOST PROGRAM: host HOST's one daemon, as its unit runs it.
start_daemon() {
	"$BIN/$2" --config "$T/pair.conf" --host "$1" >> "$T/host-$1.log" 2>&1 &
	DAEMON[$1]=$!
	PIDS+=("${DAEMON[$1]}")
}

# field HOST KEY: from host HOST's daemon's status, whichever role.
field() {
	"$BIN/remusctl" --control "$T/$1.ctl" status --json 2>/dev/null |
		python3 -c "import json,sys; print(json.load(sys.stdin).get('$2'))" 2>/dev/null
}

# protected_by HOST BACKUP: HOST runs the VM, protected by BACKUP.
protected_by() {
	[ "$(field "$1" daemon)" = replicator ] && [ "$(field "$1" protection)" = protected ] &&
		[ "$(field "$1" backup_host)" = "$2" ]
}

# host_dies HOST QEMU-PID-FILE: its daemon and the VM's QEMU, SIGKILLed.
host_dies() {
	local qemu
	qemu=$(cat "$2")
	kill -KILL "${DAEMON[$1]}" "$qemu"
	wait_exit "${DAEMON[$1]}" 5
	log "host $1 died (daemon ${DAEMON[$1]} and QEMU $qemu SIGKILLed)"
}

# no_reboot OLD-SERIAL NEW-SERIAL WHAT: the restored VM's ticks go on from
# the killed one's (at most the uncommitted ticks again), one by one.
no_reboot() {
	local last first
	wait_for 20 sh -c "grep -qa '^tick' '$2'"
	last=$(last_tick "$1") first=$(first_tick "$2")
	if [ "$first" -gt 1 ] && [ "$first" -le $((last + 1)) ] && ticks_consecutive "$2"; then
		pass "$3: ticks go on from $first (the killed VM printed up to $last), no reboot"
	else
		fail "$3: ticks: killed VM up to $last, restored from $first"
	fi
}

# disk_agrees SERIAL WHAT: the restored VM's disk check goes on.
disk_agrees() {
	wait_for 20 sh -c "grep -qa 'disk: ok\|disk: MISMATCH' '$1'"
	if grep -qa 'disk: MISMATCH' "$1"; then
		fail "$2: $(grep -a -m1 'disk: MISMATCH' "$1")"
	elif grep -qa 'disk: ok' "$1"; then
		pass "$2: the disk agrees with the restored memory ($(grep -a 'disk: ok' "$1" | tail -n 1))"
	else
		fail "$2: no disk check output"
	fi
}

hellos_to() { grep -c "replicating VM" "$T/host-$1.log"; }

log "0. a primary on a host the pair's file does not name"
start_daemon b remus-agent
start_daemon c remus-agent
wait_for 10 sh -c "[ -S '$T/b.ctl' ] && [ -S '$T/c.ctl' ]" || die "the agents did not start"
sed -e 's/^\[host a\]$/[host zeta]/' -e '/^\[host b\]$/,/^control-socket/d' \
	-e "s|$T/a.ctl|$T/zeta.ctl|" "$T/pair.conf" > "$T/zeta.conf"
"$BIN/remus-replicator" --config "$T/zeta.conf" --host zeta >> "$T/zeta.log" 2>&1 &
zeta=$!
PIDS+=("$zeta")
wait_for 20 grep -q "runs on host 'zeta', which is none of the \[host\] sections" \
	"$T/host-c.log" && pass "c refuses a primary on host zeta, not in its file" ||
	fail "c: $(grep -a refusing "$T/host-c.log" | tail -n 1)"
kill -TERM "$zeta"
wait_exit "$zeta" 10

log "1. the VM starts on a"
start_daemon a remus-replicator
wait_for 90 protected_by a b && pass "a protects the VM to b, the first other host" ||
	die "a not protected by b: $(field a protection) to $(field a backup_host)"
[ "$(field c state)" = waiting ] && [ "$(hellos_to c)" = 0 ] &&
	pass "the spare c waits, with no primary" || fail "c: $(field c state), $(hellos_to c) HELLOs"
sleep 2

log "2. host a dies"
host_dies a "$T/vm/qemu.pid"
wait_for 90 protected_by b c && pass "b restored the VM and protects it to the spare c" ||
	die "b: $(field b daemon) $(field b protection) to $(field b backup_host)"
grep -q '^a ' "$FENCE_LOG" && pass "b fenced host a (REMUS_PEER_HOST=a)" ||
	fail "fence log: $(cat "$FENCE_LOG" 2>/dev/null)"
no_reboot "$T/vm/serial.log" "$T/host-b/serial.log" "a -> b"
disk_agrees "$T/host-b/serial.log" "a -> b"
[ "$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["host"])' \
	"$T/host-b/backup-host.json" 2>/dev/null)" = c ] &&
	pass "b recorded c as the host that may take over" || fail "b's record: $(cat "$T/host-b/backup-host.json" 2>/dev/null)"

log "3. host a comes back"
start_daemon a remus-replicator
wait_for 30 sh -c "[ \"\$('$BIN/remusctl' --control '$T/a.ctl' status --json 2>/dev/null |
	python3 -c 'import json,sys; print(json.load(sys.stdin).get(\"daemon\"))' 2>/dev/null)\" = agent ]" &&
	pass "a found no VM and came back as an agent" || fail "a: $(field a daemon), $(field a state)"
[ -e "$T/host-a/qemu.pid" ] && fail "a started a copy of the VM" ||
	pass "a started no copy of its own"
sleep 3
protected_by b c && pass "the VM stays protected by c" || fail "b: $(field b protection) to $(field b backup_host)"

log "4. the link b-c is reset while c's fence is slow"
a_hellos=$(hellos_to a)
touch "$T/fence-slow"
ss -K dst 127.0.0.1 dport = :"${PORTS[2]}" > /dev/null ||
	fail "ss -K could not reset the link"
wait_for 30 grep -q '^b ' "$FENCE_LOG" && pass "c found its primary gone and fences b" ||
	fail "c did not fence b"
sleep 4
[ "$(field b backup_bound)" = c ] && [ "$(hellos_to a)" = "$a_hellos" ] &&
	pass "meanwhile b asks c alone, which may still take over" ||
	fail "b: bound to $(field b backup_bound), $(( $(hellos_to a) - a_hellos )) HELLOs to a"
wait_for 90 protected_by c a && pass "c restored the VM and protects it to a" ||
	die "c: $(field c daemon) $(field c protection) to $(field c backup_host)"
[ "$(grep -c 'replicating VM' "$T/host-a.log")" = $((a_hellos + 1)) ] &&
	pass "a got one HELLO since, c's: none from b" ||
	fail "a got $(( $(hellos_to a) - a_hellos )) HELLOs"
no_reboot "$T/host-b/serial.log" "$T/host-c/serial.log" "b -> c"
disk_agrees "$T/host-c/serial.log" "b -> c"

running=0
for f in "$T/vm/qemu.pid" "$T"/host-?/qemu.pid; do
	p=$(cat "$f" 2>/dev/null) || continue
	[ "$(cat /proc/"$p"/comm 2>/dev/null)" = qemu-system-x86 ] && running=$((running + 1))
done
[ "$running" = 1 ] && pass "one QEMU runs the VM, on c" || fail "$running QEMUs run"
finish
