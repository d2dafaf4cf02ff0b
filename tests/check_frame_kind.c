/* Which frames from the VM are bare TCP ACKs (net-buffer/frame_kind.c):
 * real header layouts for IPv4, IPv6 and a VLAN tag, every TCP flag that
 * makes a segment more than an ACK, payload, padding, fragments, and
 * every truncation of each frame (a reply, never a read past the end). */
#include "frame_kind.h"

#include <check.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define TCP_ACK 0x10
#define TCP_PSH 0x08

struct frame {
	uint8_t b[256];
	size_t len;
};

static void put16(uint8_t *p, unsigned v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

static size_t eth(uint8_t *b, unsigned type, bool vlan)
{
	memset(b, 0x52, 12); /* MACs */
	if (!vlan) {
		put16(b + 12, type);
		return 14;
	}
	put16(b + 12, 0x8100);
	put16(b + 14, 42);
	put16(b + 16, type);
	return 18;
}

/* A TCP header of 20 bytes (32 with options) and payload bytes after it. */
static size_t tcp(uint8_t *t, unsigned flags, bool options, size_t payload)
{
	size_t hl = options ? 32 : 20;

	memset(t, 0, hl + payload);
	put16(t, 5555);
	put16(t + 2, 40000);
	t[12] = (uint8_t)((hl / 4) << 4);
	t[13] = (uint8_t)flags;
	memset(t + hl, 'x', payload);
	return hl + payload;
}

static struct frame ipv4(unsigned flags, size_t payload, bool vlan)
{
	struct frame f = { { 0 }, 0 };
	size_t off = eth(f.b, 0x0800, vlan), seg;
	uint8_t *ip = f.b + off;

	seg = tcp(ip + 20, flags, true, payload);
	ip[0] = 0x45;
	put16(ip + 2, (unsigned)(20 + seg));
	put16(ip + 6, 0x4000); /* DF */
	ip[8] = 64;
	ip[9] = 6;
	f.len = off + 20 + seg;
	return f;
}

static struct frame ipv6(unsigned flags, size_t payload)
{
	struct frame f = { { 0 }, 0 };
	size_t off = eth(f.b, 0x86dd, false), seg;
	uint8_t *ip = f.b + off;

	seg = tcp(ip + 40, flags, false, payload);
	ip[0] = 0x60;
	put16(ip + 4, (unsigned)seg);
	ip[6] = 6;
	ip[7] = 64;
	f.len = off + 40 + seg;
	return f;
}

/* Every cut of a bare ACK short of its IP length is no bare ACK, and no
 * cut reads past its end (ASan watches the heap copy). */
static void assert_truncations_refused(const struct frame *f)
{
	for (size_t n = 0; n < f->len; n++) {
		uint8_t *cut = malloc(n ? n : 1);

		ck_assert_ptr_nonnull(cut);
		memcpy(cut, f->b, n);
		ck_assert_msg(!frame_is_bare_tcp_ack(cut, n), "cut to %zu of %zu bytes", n, f->len);
		free(cut);
	}
}

START_TEST(test_bare_acks)
{
	struct frame f = ipv4(TCP_ACK, 0, false);

	ck_assert(frame_is_bare_tcp_ack(f.b, f.len));
	assert_truncations_refused(&f);
	/* padded to Ethernet's minimum: the IP length counts, not the frame's */
	ck_assert(frame_is_bare_tcp_ack(f.b, 60 > f.len ? 60 : f.len));
	f = ipv4(TCP_ACK, 0, true);
	ck_assert(frame_is_bare_tcp_ack(f.b, f.len));
	f = ipv6(TCP_ACK, 0);
	ck_assert(frame_is_bare_tcp_ack(f.b, f.len));
	assert_truncations_refused(&f);
	/* PSH without data is still nothing for a client to wait on */
	f = ipv4(TCP_ACK | TCP_PSH, 0, false);
	ck_assert(frame_is_bare_tcp_ack(f.b, f.len));
}
END_TEST

START_TEST(test_replies)
{
	static const unsigned more_than_ack[] = { 0x01, 0x02, 0x04, 0x20 }; /* FIN SYN RST URG */
	struct frame f = ipv4(TCP_ACK | TCP_PSH, 1, false);

	ck_assert(!frame_is_bare_tcp_ack(f.b, f.len));
	f = ipv6(TCP_ACK, 100);
	ck_assert(!frame_is_bare_tcp_ack(f.b, f.len));
	f = ipv4(TCP_ACK, 7, true);
	ck_assert(!frame_is_bare_tcp_ack(f.b, f.len));
	for (size_t i = 0; i < sizeof(more_than_ack) / sizeof(more_than_ack[0]); i++) {
		f = ipv4(TCP_ACK | more_than_ack[i], 0, false);
		ck_assert_msg(!frame_is_bare_tcp_ack(f.b, f.len), "flags 0x%x", more_than_ack[i]);
		f = ipv6(TCP_ACK | more_than_ack[i], 0);
		ck_assert_msg(!frame_is_bare_tcp_ack(f.b, f.len), "v6 flags 0x%x", more_than_ack[i]);
	}
	/* no ACK flag at all */
	f = ipv4(0, 0, false);
	ck_assert(!frame_is_bare_tcp_ack(f.b, f.len));
}
END_TEST

START_TEST(test_not_understood_is_a_reply)
{
	struct frame f = ipv4(TCP_ACK, 0, false);
	struct frame g;

	g = f; /* UDP */
	g.b[14 + 9] = 17;
	ck_assert(!frame_is_bare_tcp_ack(g.b, g.len));
	g = f; /* a fragment: more fragments follow */
	put16(g.b + 14 + 6, 0x2000);
	ck_assert(!frame_is_bare_tcp_ack(g.b, g.len));
	g = f; /* a later fragment */
	put16(g.b + 14 + 6, 0x0010);
	ck_assert(!frame_is_bare_tcp_ack(g.b, g.len));
	g = f; /* IP length past the frame */
	put16(g.b + 14 + 2, (unsigned)(g.len + 1));
	ck_assert(!frame_is_bare_tcp_ack(g.b, g.len));
	g = f; /* header length under 20 */
	g.b[14] = 0x44;
	ck_assert(!frame_is_bare_tcp_ack(g.b, g.len));
	g = f; /* IPv4 ethertype, IPv6 inside */
	g.b[14] = 0x65;
	ck_assert(!frame_is_bare_tcp_ack(g.b, g.len));
	g = f; /* TCP data offset under 20 bytes */
	g.b[14 + 20 + 12] = 0x40;
	ck_assert(!frame_is_bare_tcp_ack(g.b, g.len));
	g = f; /* ARP */
	put16(g.b + 12, 0x0806);
	ck_assert(!frame_is_bare_tcp_ack(g.b, g.len));
	g = ipv6(TCP_ACK, 0); /* an extension header before TCP */
	g.b[14 + 6] = 0; /* hop-by-hop */
	ck_assert(!frame_is_bare_tcp_ack(g.b, g.len));
}
END_TEST

int main(void)
{
	Suite *s = suite_create("frame_kind");
	TCase *tc = tcase_create("frame_kind");
	SRunner *sr;
	int failed;

	tcase_add_test(tc, test_bare_acks);
	tcase_add_test(tc, test_replies);
	tcase_add_test(tc, test_not_understood_is_a_reply);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
