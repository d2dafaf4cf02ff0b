#!/bin/bash
# The network test topology (scripts/testnet) comes up in namespaces of its
# own, carries traffic across the LAN and the replication link, refuses to
# build over itself, and goes away without a trace.
. "$(dirname "$0")/lib.sh"

P=$(printf 't%05d' $(( $$ % 100000 )))
if "$ROOT/scripts/testnet" selftest "$P" > "$T/selftest.log" 2>&1; then
	pass "scripts/testnet selftest $P"
else
	fail "scripts/testnet selftest $P:"
	cat "$T/selftest.log"
fi

testnet_up
Q=$TESTNET_PREFIX
"$ROOT/scripts/testnet" up "$TESTNET_PREFIX" > "$T/again.log" 2>&1 &&
	fail "a second 'testnet up $TESTNET_PREFIX' succeeded" ||
	pass "a second 'testnet up $TESTNET_PREFIX' is refused"
for ns in "$LAN_NS" "$CLI_NS" "$PRI_NS" "$BAK_NS"; do
	[ -e "/run/netns/$ns" ] || fail "namespace $ns missing after the refused 'up'"
done
testnet_down
left=$(ip netns list | grep -c "^$P-\|^$Q-")
[ "$left" = 0 ] && pass "testnet down left no namespace" || fail "$left namespaces left"
"$ROOT/scripts/testnet" down "$Q" && pass "testnet down is idempotent" || fail "a second down failed"
finish
