#!/bin/bash
# A local unprivileged user against the replicator (issue 14). The
# replicator runs as root on a VM with a disk (so that the NBD sockets
# exist); `nobody` tries what the attacker's probe did:
#  1. made /tmp/remus-PID.nbd and /dev/shm/remus-devstate-RPID-QPID first,
#     for the PIDs to come: the replicator must use neither; its runtime
#     files are in a fresh directory under /run/remus, mode 0700, that
#     nobody can neither enter nor add to, and that is gone at exit;
#  2. remusctl pause on the control socket: refused (the socket is 0600),
#     and refused again by the peer check when the socket is opened wide
#     by mistake; protection stays as it was;
#  3. a runtime parent owned by another user, a symlink, or one others may
#     write, is refused;
#  4. with --control-group, a member may use the socket, others not;
#  5. QEMU running as another user (-runas nobody) still reaches its NBD
#     socket and its device-state file, and other users do not.
. "$(dirname "$0")/lib.sh"

AS_NOBODY=(setpriv --reuid=nobody --regid=nogroup --clear-groups)
AS_DAEMON_GROUP=(setpriv --reuid=nobody --regid=daemon --clear-groups)
# nobody must reach the control socket's directory: $T is 0700
PUB=$(mktemp -d /tmp/remus-lu.XXXXXX)
chmod 0755 "$PUB"
CTL_SOCK=$PUB/ctl.sock
# nobody runs remusctl from here too: the checkout may live under a
# directory only root may enter (a CI's mktemp -d is 0700)
install -m 0755 "$BIN/remusctl" "$PUB/remusctl"
CTL=("$PUB/remusctl" --control "$CTL_SOCK")
TRAPS=()
# Only what nobody made here and nothing uses: a replicator of another
# worktree (old code) may have its own /tmp/remus-PID.nbd in the range.
remove_traps() {
	[ ${#TRAPS[@]} -eq 0 ] || find "${TRAPS[@]}" -maxdepth 0 -user nobody -empty -delete 2>/dev/null
	TRAPS=()
}
trap 'cleanup; rm -rf "$PUB"; remove_traps' EXIT

mode_of() { stat -c %a "$1"; }
ctl_field() {
	"${CTL[@]}" status --json 2>/dev/null |
		python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])" 2>/dev/null
}
committed() { local n; n=$(ctl_field epochs_committed) && [ "${n:-0}" -ge "$1" ]; }
runtime_dir() { sed -n 's/.*runtime files in \(.*\)$/\1/p' "$T/replicator.log" | tail -n 1; }

# rep [ARGS...]: the replicator on the guest, control socket $CTL_SOCK.
rep() {
	"$BIN/remus-replicator" --key-file "$KEY" --qmp "$T/$VM/qmp.sock" --backup "127.0.0.1:$PORT" \
		--control "$CTL_SOCK" --epoch-policy fixed --epoch-ms 100 "$@" \
		>> "$T/replicator.log" 2>&1 &
	REPLICATOR_PID=$!
	PIDS+=("$REPLICATOR_PID")
}

VM=luser
PORT=$(free_port)
start_guest luser 128 "disk_check=1" --disk "$T/luser.img"
RAM_FILES+=("$T/luser.img")
start_agent "$PORT" "$T/backup" --no-fence

# --- 1. the old predictable paths, laid as traps for the next PIDs --------
# the next 500 PIDs, wrapping at pid_max to 300 as the kernel does
read -r last < /proc/sys/kernel/ns_last_pid
read -r max < /proc/sys/kernel/pid_max
for i in $(seq 1 500); do
	p=$((last + i))
	[ "$p" -lt "$max" ] || p=$((300 + p - max))
	TRAPS+=("/tmp/remus-$p.nbd" "/dev/shm/remus-devstate-$p-$GUEST_PID")
done
# one process for all (a mkdir each would use up the PIDs trapped)
"${AS_NOBODY[@]}" /usr/bin/python3 -c '
import os, sys
for d in sys.argv[1:]:
    try:
        if d.startswith("/tmp/"):
            os.mkdir(d, 0o777); os.chmod(d, 0o777)
        else:
            os.close(os.open(d, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
    except OSError:
        pass' "${TRAPS[@]}"
rep
wait_for 90 committed 3 || die "fewer than 3 epochs committed in 90 s"
pass "protected: $(ctl_field epochs_committed) epochs committed, VM with a disk"
old_nbd=/tmp/remus-$REPLICATOR_PID.nbd old_dev=/dev/shm/remus-devstate-$REPLICATOR_PID-$GUEST_PID
if [ "$(stat -c %U "$old_nbd" 2>/dev/null)" = nobody ]; then
	[ -z "$(ls -A "$old_nbd")" ] && pass "nobody's $old_nbd is there and unused" ||
		fail "$old_nbd: $(ls -la "$old_nbd" 2>&1)"
	[ -f "$old_dev" ] && [ ! -s "$old_dev" ] && pass "nobody's $old_dev is there and unused" ||
		fail "$old_dev: $(ls -la "$old_dev" 2>&1)"
else
	log "replicator pid $REPLICATOR_PID is past the 500 trapped: traps not hit"
fi
remove_traps
grep -q '/tmp/remus-\|/dev/shm/remus-devstate' "$T/replicator.log" &&
	fail "the old paths appear in the log: $(grep -m1 '/tmp/remus-\|/dev/shm/remus-devstate' "$T/replicator.log")" ||
	pass "the log names neither /tmp/remus-PID.nbd nor /dev/shm/remus-devstate-*"

RD=$(runtime_dir)
case $RD in
/run/remus/replicator-"$REPLICATOR_PID".??????) pass "runtime directory $RD" ;;
*) fail "runtime directory '$RD' is not /run/remus/replicator-PID.XXXXXX" ;;
esac
[ "$(mode_of "$RD")" = 700 ] && [ "$(stat -c %U "$RD")" = root ] &&
	pass "runtime directory is 0700, root's (QEMU runs as root)" ||
	fail "runtime directory: $(stat -c '%a %U' "$RD")"
[ "$(mode_of /run/remus)" = 755 ] && [ "$(stat -c %U /run/remus)" = root ] &&
	pass "/run/remus is 0755, root's" || fail "/run/remus: $(stat -c '%a %U' /run/remus)"
grep -q "disk disk0 .* is replicated through $RD/nbd/nbd0.sock" "$T/replicator.log" &&
	pass "the NBD socket is in it: $RD/nbd/nbd0.sock" ||
	fail "NBD socket: $(grep -m1 'is replicated through' "$T/replicator.log")"
[ -f "$RD/devstate" ] && [ "$(stat -c '%a %U' "$RD/devstate")" = "600 root" ] &&
	pass "the device-state file is in it, 0600" ||
	fail "device-state file: $(ls -la "$RD" 2>&1)"
"${AS_NOBODY[@]}" ls "$RD" > /dev/null 2>&1 && fail "nobody can list $RD" ||
	pass "nobody cannot list the runtime directory"
"${AS_NOBODY[@]}" mkdir "$RD/x" 2> /dev/null && fail "nobody made $RD/x" ||
	pass "nobody cannot add to the runtime directory"
"${AS_NOBODY[@]}" mkdir "/run/remus/replicator-$((REPLICATOR_PID + 1)).AAAAAA" 2> /dev/null &&
	fail "nobody made a directory in /run/remus" || pass "nobody cannot make a directory in /run/remus"

# --- 2. the control socket -------------------------------------------------
[ "$(mode_of "$CTL_SOCK")" = 600 ] && pass "control socket is 0600" ||
	fail "control socket mode $(mode_of "$CTL_SOCK")"
out=$("${AS_NOBODY[@]}" "${CTL[@]}" pause 2>&1) && fail "nobody paused: $out" ||
	{ [[ $out == *"permission denied"* ]] && pass "remusctl pause as nobody: '$out'" ||
	  fail "remusctl pause as nobody failed unclearly: '$out'"; }
chmod 0666 "$CTL_SOCK" # a mistake of the operator's: the peer check still holds
out=$("${AS_NOBODY[@]}" "${CTL[@]}" pause 2>&1) && fail "nobody paused through a 0666 socket: $out" ||
	{ [[ $out == *"refused by the replicator: permission denied: uid 65534"* ]] &&
	  pass "through a 0666 socket, the peer check refuses: '$out'" || fail "0666 socket: '$out'"; }
grep -q "control socket: refused 'pause' from uid 65534" "$T/replicator.log" &&
	pass "the replicator logged the refusal" || fail "no log line for the refusal"
sleep 0.5
[ "$(ctl_field protection)" = protected ] && [ "$(ctl_field pause_state)" = off ] &&
	pass "as root: still protected, not paused" ||
	fail "as root: protection $(ctl_field protection), pause_state $(ctl_field pause_state)"

kill -TERM "$REPLICATOR_PID"
wait_exit "$REPLICATOR_PID" 20 && [ "$EXIT_CODE" = 0 ] && pass "replicator stopped (exit 0)" ||
	fail "replicator exit ${EXIT_CODE:-none} after SIGTERM"
[ ! -e "$RD" ] && pass "runtime directory removed at exit" || fail "$RD left: $(ls -la "$RD")"
process_gone "$GUEST_PID" && die "QEMU $GUEST_PID is gone after the replicator detached"

# --- 3. a runtime parent others control is refused ----------------------
refused_parent() { # WHAT PATH
	local n new
	n=$(wc -l < "$T/replicator.log")
	RUNTIME_DIRECTORY=$2 rep
	wait_exit "$REPLICATOR_PID" 30
	new=$(tail -n +$((n + 1)) "$T/replicator.log")
	[ "${EXIT_CODE:-}" = 2 ] && [[ $new == *"cannot make our runtime directory in $2"* ]] &&
		pass "$1 parent refused (exit 2): $(grep -o 'cannot make our runtime.*' <<< "$new")" ||
		fail "$1 parent: exit ${EXIT_CODE:-none}: $(tail -n 2 <<< "$new")"
	[ -z "$(ls -A "$2" 2>/dev/null)" ] || fail "$1 parent: something was made in it: $(ls -A "$2")"
}
mkdir -m 0755 "$T/evil" && chown nobody "$T/evil"
refused_parent "a nobody-owned" "$T/evil"
mkdir -m 0755 "$T/real" && ln -s "$T/real" "$T/link"
refused_parent "a symlink" "$T/link"
mkdir "$T/open" && chmod 0777 "$T/open"
refused_parent "a world-writable" "$T/open"

# --- 4. --control-group: a member may, others may not ----------------------
rep --control-group nogroup
wait_for 90 committed 1 || die "with --control-group: nothing committed in 90 s"
[ "$(stat -c '%a %G' "$CTL_SOCK")" = "660 nogroup" ] && pass "control socket 0660, group nogroup" ||
	fail "control socket: $(stat -c '%a %G' "$CTL_SOCK")"
out=$("${AS_NOBODY[@]}" "${CTL[@]}" status 2>&1) && pass "a member of nogroup may: $(head -n 1 <<< "$out")" ||
	fail "member of the control group refused: $out"
chmod 0666 "$CTL_SOCK"
out=$("${AS_DAEMON_GROUP[@]}" "${CTL[@]}" pause 2>&1) && fail "a non-member paused: $out" ||
	{ [[ $out == *"not root nor in group nogroup"* ]] && pass "a non-member is refused: '$out'" ||
	  fail "non-member: '$out'"; }
[ "$(ctl_field pause_state)" = off ] && pass "still not paused" || fail "pause_state $(ctl_field pause_state)"
RD=$(runtime_dir)
kill -TERM "$REPLICATOR_PID"
wait_exit "$REPLICATOR_PID" 20
process_gone "$GUEST_PID" && log "note: QEMU $GUEST_PID is gone after the replicator detached"
[ -n "$RD" ] && [ ! -e "$RD" ] && pass "second runtime directory removed at exit" ||
	fail "runtime directory '$RD' left"

# --- 5. QEMU as another user ----------------------------------------------
kill -TERM "$GUEST_PID"
VM=lrunas
PORT=$(free_port)
start_guest lrunas 128 "disk_check=1" --disk "$T/lrunas.img" -- -runas nobody
RAM_FILES+=("$T/lrunas.img")
[ "$(awk '/^Uid:/ { print $3 }' "/proc/$GUEST_PID/status")" = 65534 ] ||
	die "QEMU -runas nobody runs as uid $(awk '/^Uid:/ { print $3 }' "/proc/$GUEST_PID/status")"
start_agent "$PORT" "$T/backup2" --no-fence
rep
wait_for 90 committed 3 || die "QEMU as nobody: fewer than 3 epochs committed in 90 s"
pass "QEMU as nobody: protected, $(ctl_field epochs_committed) epochs committed (device state and disk mirror reached us)"
RD=$(runtime_dir)
[ "$(stat -c '%a %U %G' "$RD")" = "710 root nogroup" ] &&
	pass "runtime directory 0710, root's, group nogroup (QEMU's): QEMU may pass, not list" ||
	fail "runtime directory: $(stat -c '%a %U %G' "$RD")"
[ "$(stat -c '%a %U' "$RD/devstate")" = "600 nobody" ] && [ -S "$RD/nbd/nbd0.sock" ] &&
	[ "$(stat -c '%a %U' "$RD/nbd/nbd0.sock")" = "600 nobody" ] &&
	pass "device-state file and NBD socket are QEMU's user's, 0600" ||
	fail "devstate $(stat -c '%a %U' "$RD/devstate"), socket $(stat -c '%a %U' "$RD/nbd/nbd0.sock")"
setpriv --reuid=daemon --regid=daemon --clear-groups stat "$RD/devstate" > /dev/null 2>&1 &&
	fail "user daemon reaches $RD/devstate" || pass "another user (daemon) cannot reach into it"
kill -TERM "$REPLICATOR_PID"
wait_exit "$REPLICATOR_PID" 20
[ ! -e "$RD" ] && pass "runtime directory removed at exit" || fail "$RD left"
finish
