/* Compressed pages (common/page_codec.c) and the replicator's use of them
 * (replicator/compress.c): round trips whole and as deltas, every kind of
 * corrupt or mismatched frame refused, the delta cache, the auto rule. */
#include "../replicator/compress.h"
#include "page_codec.h"
#include "proto.h"

#include <check.h>
#include <endian.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define PS PROTO_PAGE_SIZE

static uint32_t rng_state = 2463534242u;

static uint32_t rng(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 17;
	rng_state ^= rng_state << 5;
	return rng_state;
}

static void fill_random(uint8_t *p, size_t len)
{
	for (size_t i = 0; i < len; i++)
		p[i] = (uint8_t)rng();
}

/* n pages: "now" random, "base" the same with one byte changed per page
 * (a dirtier's write), so the deltas are nearly all zeros. */
struct pages {
	size_t n;
	uint8_t *now, *base;
	struct page_ref ref[PROTO_PAGES_PER_FRAME];
};

static void make_pages(struct pages *p, size_t n, bool with_base)
{
	p->n = n;
	p->now = malloc(n * PS);
	p->base = malloc(n * PS);
	ck_assert_ptr_nonnull(p->now);
	ck_assert_ptr_nonnull(p->base);
	fill_random(p->base, n * PS);
	memcpy(p->now, p->base, n * PS);
	for (size_t i = 0; i < n; i++) {
		p->now[i * PS + (i * 37) % PS] ^= 0x5a;
		p->ref[i] = (struct page_ref){ .index = 1000 + 3 * i, .data = p->now + i * PS,
					       .base = with_base ? p->base + i * PS : NULL };
	}
}

static void free_pages(struct pages *p)
{
	free(p->now);
	free(p->base);
}

/* The decoder's base: the test's base pages, by index. */
static const uint8_t *test_base(void *ctx, uint64_t idx)
{
	struct pages *p = ctx;

	for (size_t i = 0; i < p->n; i++)
		if (p->ref[i].index == idx)
			return p->base + i * PS;
	return NULL;
}

static size_t plain_len(size_t n)
{
	return 8 + n * (8 + PS);
}

static int decode(const uint8_t *buf, size_t len, uint8_t *out, struct pages *p)
{
	struct pages_z_view v;
	char err[160];

	if (page_parse_z(buf, len, &v))
		return -EBADMSG;
	return page_decode(&v, out, test_base, p, err, sizeof(err));
}

START_TEST(test_delta_round_trip_is_small_and_exact)
{
	struct page_encoder e = { 0 };
	struct pages p;
	struct pages_z_view v;
	uint8_t *buf, *out = malloc(PROTO_PAGES_PER_FRAME * PS);
	size_t len;
	char err[160];

	make_pages(&p, PROTO_PAGES_PER_FRAME, true);
	ck_assert_int_eq(page_encode(&e, p.ref, p.n, plain_len(p.n), &buf, &len), 0);
	/* one changed byte per page: far less than a tenth of the pages */
	ck_assert_uint_lt(len, plain_len(p.n) / 20);
	ck_assert_int_eq(page_parse_z(buf, len, &v), 0);
	ck_assert_uint_eq(v.count, p.n);
	for (uint32_t i = 0; i < v.count; i++) {
		ck_assert_uint_eq(page_z_index(&v, i), p.ref[i].index);
		ck_assert_uint_eq(v.kind[i], PAGE_KIND_XOR);
	}
	ck_assert_int_eq(page_decode(&v, out, test_base, &p, err, sizeof(err)), 0);
	ck_assert_mem_eq(out, p.now, p.n * PS);
	free(buf);
	free(out);
	free_pages(&p);
	page_encoder_free(&e);
}
END_TEST

START_TEST(test_raw_round_trip_of_compressible_pages)
{
	struct page_encoder e = { 0 };
	struct pages p;
	uint8_t *buf, *out = malloc(8 * PS);
	size_t len;

	make_pages(&p, 8, false);
	for (size_t i = 0; i < 8; i++)
		memset(p.now + i * PS + 1024, 0, 2048);  /* half of each page zero */
	ck_assert_int_eq(page_encode(&e, p.ref, 8, plain_len(8), &buf, &len), 0);
	ck_assert_uint_lt(len, plain_len(8));
	ck_assert_int_eq(decode(buf, len, out, &p), 0);
	ck_assert_mem_eq(out, p.now, 8 * PS);
	free(buf);
	free(out);
	free_pages(&p);
	page_encoder_free(&e);
}
END_TEST

START_TEST(test_random_pages_do_not_pay)
{
	struct page_encoder e = { 0 };
	struct pages p;
	uint8_t *buf = NULL;
	size_t len;

	make_pages(&p, 16, false);
	ck_assert_int_eq(page_encode(&e, p.ref, 16, plain_len(16), &buf, &len), -E2BIG);
	ck_assert_ptr_null(buf);
	ck_assert_int_eq(page_encode(&e, p.ref, 0, plain_len(16), &buf, &len), -EINVAL);
	ck_assert_int_eq(page_encode(&e, p.ref, PROTO_PAGES_PER_FRAME + 1, 1u << 30, &buf, &len),
			 -EINVAL);
	free_pages(&p);
	page_encoder_free(&e);
}
END_TEST

/* A delta decoded against another base than the encoder's (the backup's
 * copy is not what the primary thought) is refused by the page check. */
START_TEST(test_delta_against_another_base_is_refused)
{
	struct page_encoder e = { 0 };
	struct pages p;
	struct pages_z_view v;
	uint8_t *buf, *out = malloc(4 * PS);
	size_t len;
	char err[160] = "";

	make_pages(&p, 4, true);
	ck_assert_int_eq(page_encode(&e, p.ref, 4, plain_len(4), &buf, &len), 0);
	p.base[2 * PS + 7] ^= 1;
	ck_assert_int_eq(page_parse_z(buf, len, &v), 0);
	ck_assert_int_eq(page_decode(&v, out, test_base, &p, err, sizeof(err)), -EBADMSG);
	ck_assert_ptr_nonnull(strstr(err, "another base"));
	/* no base at all */
	ck_assert_int_eq(page_decode(&v, out, NULL, NULL, err, sizeof(err)), -EBADMSG);
	ck_assert_ptr_nonnull(strstr(err, "without a base"));
	free(buf);
	free(out);
	free_pages(&p);
	page_encoder_free(&e);
}
END_TEST

/* Every truncation, every flipped byte: refused, or (a flip in the LZ4
 * block that LZ4 still accepts) caught by the checks; never a wrong page
 * and never a read or write out of bounds (ASan). */
START_TEST(test_every_corruption_is_refused)
{
	struct page_encoder e = { 0 };
	struct pages p;
	uint8_t *buf, *bad, *out = malloc(3 * PS);
	size_t len;

	make_pages(&p, 3, true);
	p.ref[1].base = NULL;  /* one page whole */
	ck_assert_int_eq(page_encode(&e, p.ref, 3, plain_len(3), &buf, &len), 0);
	for (size_t cut = 0; cut < len; cut++) {
		bad = malloc(cut ? cut : 1);
		memcpy(bad, buf, cut);
		ck_assert_int_eq(decode(bad, cut, out, &p), -EBADMSG);
		free(bad);
	}
	bad = malloc(len);
	for (size_t i = 0; i < len; i++) {
		memcpy(bad, buf, len);
		bad[i] ^= 0x41;
		if (decode(bad, len, out, &p) == 0)
			ck_abort_msg("byte %zu flipped: frame accepted", i);
	}
	free(bad);
	free(buf);
	free(out);
	free_pages(&p);
	page_encoder_free(&e);
}
END_TEST

START_TEST(test_parse_refuses_bad_kinds_padding_and_counts)
{
	uint8_t buf[8 + 8 + 8 + 8 + 16] = { 0 };
	struct pages_z_view v;

	/* count 1, zlen 16: head, index, kinds (padded to 8), check, block */
	buf[3] = 1;
	buf[7] = 16;
	ck_assert_int_eq(page_parse_z(buf, sizeof(buf), &v), 0);
	buf[16] = 2;  /* unknown kind */
	ck_assert_int_eq(page_parse_z(buf, sizeof(buf), &v), -EBADMSG);
	buf[16] = 0;
	buf[17] = 1;  /* padding not zero */
	ck_assert_int_eq(page_parse_z(buf, sizeof(buf), &v), -EBADMSG);
	buf[17] = 0;
	buf[3] = 0;   /* count 0 */
	ck_assert_int_eq(page_parse_z(buf, sizeof(buf), &v), -EBADMSG);
	buf[2] = 1;   /* count 256 + 0 */
	ck_assert_int_eq(page_parse_z(buf, sizeof(buf), &v), -EBADMSG);
	buf[2] = 0;
	buf[3] = 1;
	buf[7] = 0;   /* zlen 0 */
	ck_assert_int_eq(page_parse_z(buf, sizeof(buf), &v), -EBADMSG);
}
END_TEST

/* Send one page whole through c, as a frame would: the cache learns it. */
static void send_whole(struct compress *c, uint64_t index, const uint8_t *data)
{
	struct page_ref ref = { .index = index, .data = data };
	uint8_t *buf = NULL;
	size_t len;
	int rc = compress_frame(c, &ref, 1, true, 1u << 20, &buf, &len);

	ck_assert(rc == 0 || rc == -E2BIG);
	free(buf);
}

/* The replicator's side: the cache gives the last content sent as the
 * base, a resend goes whole, and what the backup decodes is the page. */
START_TEST(test_cache_bases_follow_what_was_sent)
{
	struct compress c;
	struct pages p;
	struct page_ref ref[2];
	uint8_t *buf, *out = malloc(2 * PS);
	size_t len;
	struct pages_z_view v;
	char err[160];

	ck_assert_int_eq(compress_init(&c, COMPRESS_ON, 64 * PS), 0);
	compress_session(&c, true);
	ck_assert(c.active);
	make_pages(&p, 2, false);
	/* first send: no base known, whole pages (the cache learns them) */
	send_whole(&c, p.ref[0].index, p.base);
	send_whole(&c, p.ref[1].index, p.base + PS);
	/* second: both pages changed in one byte, deltas against the first */
	memcpy(ref, p.ref, sizeof(ref));
	ck_assert_int_eq(compress_frame(&c, ref, 2, false, plain_len(2), &buf, &len), 0);
	ck_assert_uint_eq(c.delta_pages, 2);
	ck_assert_int_eq(page_parse_z(buf, len, &v), 0);
	ck_assert_uint_eq(v.kind[0], PAGE_KIND_XOR);
	p.ref[0].base = p.base;  /* the backup holds the first content */
	p.ref[1].base = p.base + PS;
	ck_assert_int_eq(page_decode(&v, out, test_base, &p, err, sizeof(err)), 0);
	ck_assert_mem_eq(out, p.now, 2 * PS);
	free(buf);
	/* a resend after a NACK: no deltas */
	memcpy(ref, p.ref, sizeof(ref));
	ck_assert_int_eq(compress_frame(&c, ref, 2, true, 1u << 20, &buf, &len), 0);
	ck_assert_int_eq(page_parse_z(buf, len, &v), 0);
	ck_assert_uint_eq(v.kind[0], PAGE_KIND_RAW);
	ck_assert_uint_eq(v.kind[1], PAGE_KIND_RAW);
	free(buf);
	/* a new session forgets every base */
	compress_session(&c, true);
	memcpy(ref, p.ref, sizeof(ref));
	ck_assert_int_eq(compress_frame(&c, ref, 2, false, 1u << 20, &buf, &len), 0);
	ck_assert_int_eq(page_parse_z(buf, len, &v), 0);
	ck_assert_uint_eq(v.kind[0], PAGE_KIND_RAW);
	free(buf);
	/* two pages on one slot: the later one holds it */
	send_whole(&c, 5, p.now);
	send_whole(&c, 5 + 64, p.now + PS);
	ref[0] = (struct page_ref){ .index = 5, .data = p.now };
	ck_assert_int_eq(compress_frame(&c, ref, 1, false, 1u << 20, &buf, &len), 0);
	ck_assert_int_eq(page_parse_z(buf, len, &v), 0);
	ck_assert_uint_eq(v.kind[0], PAGE_KIND_RAW);
	free(buf);
	free(out);
	free_pages(&p);
	compress_free(&c);
}
END_TEST

START_TEST(test_an_older_agent_gets_plain_pages)
{
	struct compress c;

	ck_assert_int_eq(compress_init(&c, COMPRESS_ON, 16 * PS), 0);
	compress_session(&c, false);
	ck_assert(!c.active);
	ck_assert_ptr_nonnull(strstr(c.why, "older agent"));
	compress_free(&c);
	ck_assert_int_eq(compress_init(&c, COMPRESS_OFF, 16 * PS), 0);
	ck_assert_uint_eq(c.cache.nslots, 0);  /* off: no cache at all */
	compress_session(&c, true);
	ck_assert(!c.active);
	compress_free(&c);
}
END_TEST

START_TEST(test_auto_rule)
{
	struct compress_estimates e = { 0 };
	char why[160];

	ck_assert(!compress_pays(&e, false, why, sizeof(why)));  /* nothing measured */
	/* 100 Mbit/s (12500 bytes/ms), codec 1 GB/s to 5%: pays */
	e = (struct compress_estimates){ .link_rate = 12500, .codec_rate = 1e6, .ratio = 0.05 };
	ck_assert(compress_pays(&e, false, why, sizeof(why)));
	/* a 10 GB/s link, the same codec: does not */
	e.link_rate = 1e7;
	ck_assert(!compress_pays(&e, true, why, sizeof(why)));
	/* incompressible pages: never, whatever the link */
	e = (struct compress_estimates){ .link_rate = 12500, .codec_rate = 1e6, .ratio = 1.0 };
	ck_assert(!compress_pays(&e, true, why, sizeof(why)));
	/* between 1.0x and 1.25x: stays as it is */
	e = (struct compress_estimates){ .link_rate = 1e5, .codec_rate = 1e6, .ratio = 0.8 };
	ck_assert(compress_pays(&e, true, why, sizeof(why)));
	ck_assert(!compress_pays(&e, false, why, sizeof(why)));
}
END_TEST

/* One epoch of auto: begin, the frame of pages p compressed if auto says
 * so, the ack at the link's rate (bytes/ms) after 1 ms of latency. */
static void auto_epoch(struct compress *c, struct page_ref *p, size_t n, double link_rate)
{
	size_t plain = plain_len(n), wire = plain, len;
	struct page_ref ref[PROTO_PAGES_PER_FRAME];
	uint8_t *buf;

	compress_epoch_begin(c);
	if (c->active) {
		memcpy(ref, p, n * sizeof(*ref));
		if (compress_frame(c, ref, n, false, plain, &buf, &len) == 0) {
			wire = len;
			free(buf);
		}
	}
	compress_epoch_acked(c, wire, 1.0 + wire / link_rate);
}

/* auto starts compressing to measure the codec, keeps on while pages
 * shrink, turns off (emptying the cache) when they stop shrinking, and
 * over a slow link turns on again once its probe sees pages that do. */
START_TEST(test_auto_follows_the_pages_and_the_link)
{
	struct compress c;
	struct pages zeroish, random;
	int epochs = 0;

	ck_assert_int_eq(compress_init(&c, COMPRESS_AUTO, 1024 * PS), 0);
	compress_session(&c, true);
	ck_assert_msg(c.active, "auto does not measure at first: %s", c.why);
	make_pages(&zeroish, PROTO_PAGES_PER_FRAME, false);
	for (size_t i = 0; i < zeroish.n; i++)
		memset(zeroish.now + i * PS + PS / 4, 0, PS * 3 / 4);
	make_pages(&random, PROTO_PAGES_PER_FRAME, false);
	auto_epoch(&c, zeroish.ref, zeroish.n, 12500);
	compress_epoch_begin(&c);
	ck_assert_msg(c.active, "pages that shrink, link unknown: %s", c.why);
	/* pages that do not shrink: off, the cache emptied. New random bytes
	 * in every epoch: the same pages sent again would shrink, as deltas
	 * against their cached selves (and whether auto then stays on would
	 * depend on how fast this machine runs the codec). */
	while (c.active && epochs++ < 50) {
		fill_random(random.now, random.n * PS);
		auto_epoch(&c, random.ref, random.n, 1e7);
	}
	ck_assert_msg(!c.active, "still on with incompressible pages: %s", c.why);
	ck_assert_uint_eq(c.cache.tag[zeroish.ref[0].index % c.cache.nslots], 0);
	/* a 100 Mbit/s link, and pages that shrink again: a probe sees them */
	epochs = 0;
	while (!c.active && epochs++ < 200)
		auto_epoch(&c, zeroish.ref, zeroish.n, 12500);
	for (int i = 0; i < 10; i++)
		auto_epoch(&c, zeroish.ref, zeroish.n, 12500);
	compress_epoch_begin(&c);
	ck_assert_msg(c.active, "not compressing over a slow link: %s", c.why);
	ck_assert_msg(strstr(c.why, "auto: link "), "%s", c.why);
	/* a fast link, with pages that shrink only to 75%: off */
	for (size_t i = 0; i < random.n; i++)
		memset(random.now + i * PS, 0, PS / 4);
	for (int i = 0; i < 30; i++)
		auto_epoch(&c, random.ref, random.n, 1e7);
	compress_epoch_begin(&c);
	ck_assert_msg(!c.active, "still compressing over a fast link: %s", c.why);
	free_pages(&zeroish);
	free_pages(&random);
	compress_free(&c);
}
END_TEST

static Suite *codec_suite(void)
{
	Suite *s = suite_create("page_codec");
	TCase *tc = tcase_create("codec");

	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_delta_round_trip_is_small_and_exact);
	tcase_add_test(tc, test_raw_round_trip_of_compressible_pages);
	tcase_add_test(tc, test_random_pages_do_not_pay);
	tcase_add_test(tc, test_delta_against_another_base_is_refused);
	tcase_add_test(tc, test_every_corruption_is_refused);
	tcase_add_test(tc, test_parse_refuses_bad_kinds_padding_and_counts);
	suite_add_tcase(s, tc);
	tc = tcase_create("compress");
	tcase_add_test(tc, test_cache_bases_follow_what_was_sent);
	tcase_add_test(tc, test_an_older_agent_gets_plain_pages);
	tcase_add_test(tc, test_auto_rule);
	tcase_add_test(tc, test_auto_follows_the_pages_and_the_link);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(codec_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
