#!/bin/bash
# The agent against peers that do not speak its protocol: a newer version
# is refused with the reason, garbage is dropped, and the agent carries on.
# These are checks of the framing and the HELLO, under TLS or not: the
# agent runs cleartext here so that a plain python peer can speak to it
# (test_security.sh covers the TLS link itself).
. "$(dirname "$0")/lib.sh"

PORT=$(free_port)
start_agent "$PORT" "$T/backup" --insecure-cleartext-link
wait_for 10 grep -qs "listening on" "$T/agent.log" || die "agent did not start"

# peer VERSION PAYLOAD [HOLD_S]: send one HELLO frame, print the reply's JSON
# (or EOF); with HOLD_S, keep the connection that long after the reply.
peer() {
	python3 - "$PORT" "$1" "$2" "${3:-0}" <<'PY'
import socket, struct, sys
def crc32c(data, crc=0):
    crc ^= 0xffffffff
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82f63b78 if crc & 1 else 0)
    return crc ^ 0xffffffff
import time
port, version, payload, hold = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3].encode(), float(sys.argv[4])
if version >= 0:
    hdr = struct.pack(">IBBHQII I", 0x524d5553, version, 1, 0, 0, len(payload), crc32c(payload), 0)
    frame = hdr + struct.pack(">I", crc32c(hdr)) + payload
else:
    frame = b"GET / HTTP/1.0\r\n\r\n" + bytes(range(14))
s = socket.create_connection(("127.0.0.1", port), timeout=5)
s.sendall(frame)
data = b""
if hold:
    data = s.recv(4096)
    print(data[32:].decode(errors="replace"), flush=True)
    time.sleep(hold)
    sys.exit(0)
try:
    while True:
        chunk = s.recv(4096)
        if not chunk:
            break
        data += chunk
except socket.timeout:
    pass
print(data[32:].decode(errors="replace") if len(data) > 32 else "EOF")
PY
}

reply=$(peer 2 '{"protocol":2}')
echo "$reply" | grep -q '"ok":false,"error":"it speaks protocol version 2; this agent speaks version 1' &&
	pass "newer protocol version refused with the reason: $reply" || fail "version 2 reply: $reply"
grep -q "refusing primary .*protocol version 2" "$T/agent.log" && pass "agent logged the refusal" ||
	fail "agent did not log the refusal"

reply=$(peer 1 '{"protocol":1,"name":"x"}')
echo "$reply" | grep -q '"ok":false.*HELLO' && pass "incomplete HELLO refused: $reply" ||
	fail "incomplete HELLO reply: $reply"

reply=$(peer -1 '')
[ "$reply" = EOF ] && pass "garbage dropped without a reply" || fail "garbage got: $reply"
kill -0 "$AGENT_PID" 2>/dev/null && pass "agent still running" || fail "agent died"
[ ! -e "$T/backup/qemu.pid" ] && pass "no failover from a peer that never said HELLO" ||
	fail "agent started a VM"
# One primary at a time: a second one hears why it is refused. The first
# then vanishes before any checkpoint: nothing to fail over to.
hello='{"protocol":1,"name":"first","ram_size":65536,"page_size":4096,"ram_backend":"ram0","machine_type":"pc-i440fx-7.2","qemu_argv":["qemu-system-x86_64","-object","memory-backend-ram,id=ram0,size=64K"]}'
peer 1 "$hello" 3 > "$T/first.out" &
first=$!
wait_for 5 grep -qs '"ok":true' "$T/first.out" || fail "a valid HELLO was not accepted: $(cat "$T/first.out")"
reply=$(peer 1 "${hello/first/second}")
echo "$reply" | grep -q '"ok":false,"error":"busy: another primary is connected' &&
	pass "second primary refused: $reply" || fail "second primary reply: $reply"
wait "$first"
wait_for 5 grep -q "primary lost (.*) before any checkpoint of this session committed" "$T/agent.log" &&
	pass "first primary gone before a commit: no failover" || fail "agent did not log the uncommitted loss"
kill -0 "$AGENT_PID" 2>/dev/null && [ ! -e "$T/backup/qemu.pid" ] && pass "agent still listening, no VM started" ||
	fail "agent exited or started a VM"
finish
