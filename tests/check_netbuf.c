/* The output-commit buffer (net-buffer/netbuf.c) driven through a fake
 * output: which frames go out, in which order, and when, for protected and
 * unprotected operation, a blocked or failing output, and bad frames. */
#include "netbuf.h"

#include <check.h>
#include <endian.h>
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- frames: be32 id, be32 epoch marker, then a pattern from the id ---- */

static uint8_t pattern(uint32_t id, size_t i)
{
	return (uint8_t)(id * 31u + i * 7u);
}

/* A malloc'd frame of len bytes (len >= 8 for the header to fit). */
static uint8_t *make_frame(uint32_t id, uint32_t marker, size_t len)
{
	uint8_t *f = malloc(len);
	uint32_t v;

	ck_assert_ptr_nonnull(f);
	for (size_t i = 0; i < len; i++)
		f[i] = pattern(id, i);
	if (len >= 8) {
		v = htobe32(id);
		memcpy(f, &v, 4);
		v = htobe32(marker);
		memcpy(f + 4, &v, 4);
	}
	return f;
}

static uint32_t get_be32(const uint8_t *p)
{
	uint32_t v;

	memcpy(&v, p, 4);
	return be32toh(v);
}

/* ---- the fake output ---- */

#define MAX_SENT 64

struct sent {
	uint32_t id, marker;
	size_t len;
};

struct fake_out {
	struct sent sent[MAX_SENT];
	int nsent;
	int calls;        /* every call, whatever it returned */
	int budget;       /* frames taken before -EAGAIN; < 0: no limit */
	uint32_t fail_id; /* this frame fails for good (-EIO); 0: none */
};

static void fake_init(struct fake_out *o)
{
	memset(o, 0, sizeof(*o));
	o->budget = -1;
}

static int fake_output(void *opaque, const uint8_t *frame, size_t len)
{
	struct fake_out *o = opaque;
	uint32_t id;

	o->calls++;
	ck_assert_uint_ge(len, NETBUF_MIN_FRAME);
	id = get_be32(frame);
	/* The frame arrives exactly as pushed. */
	for (size_t i = 8; i < len; i++)
		ck_assert_msg(frame[i] == pattern(id, i), "frame %u byte %zu changed", id, i);
	if (o->budget == 0)
		return -EAGAIN;
	if (id == o->fail_id)
		return -EIO;
	if (o->budget > 0)
		o->budget--;
	ck_assert_int_lt(o->nsent, MAX_SENT);
	o->sent[o->nsent].id = id;
	o->sent[o->nsent].marker = get_be32(frame + 4);
	o->sent[o->nsent].len = len;
	o->nsent++;
	return 0;
}

/* Push frame id of len bytes, tagged with the epoch the test believes is
 * open, at time now; expect rc. */
static void push_len(struct netbuf *nb, uint32_t id, uint32_t marker, size_t len,
		     double now, int rc)
{
	uint8_t *f = make_frame(id, marker, len);

	ck_assert_int_eq(netbuf_push(nb, f, len, now), rc);
	free(f);
}

static void push(struct netbuf *nb, uint32_t id, uint32_t marker)
{
	push_len(nb, id, marker, 60, 0, 0);
}

/* What went out is exactly ids[0..n), in this order, each with the epoch
 * marker it was pushed with. */
static void assert_sent(const struct fake_out *o, const uint32_t *ids,
			const uint32_t *markers, int n)
{
	char got[512] = "", want[512] = "";
	size_t gl = 0, wl = 0;

	for (int i = 0; i < o->nsent && gl < sizeof(got) - 24; i++)
		gl += (size_t)snprintf(got + gl, sizeof(got) - gl, "%u@%u ",
				       o->sent[i].id, o->sent[i].marker);
	for (int i = 0; i < n && wl < sizeof(want) - 24; i++)
		wl += (size_t)snprintf(want + wl, sizeof(want) - wl, "%u@%u ", ids[i], markers[i]);
	ck_assert_str_eq(got, want);
}

#define SENT(o, ...) do { \
	const uint32_t ids_[] = { __VA_ARGS__ }; \
	uint32_t m_[sizeof(ids_) / sizeof(ids_[0])]; \
	for (size_t i_ = 0; i_ < sizeof(ids_) / sizeof(ids_[0]); i_++) \
		m_[i_] = marker_of(ids_[i_]); \
	assert_sent((o), ids_, m_, (int)(sizeof(ids_) / sizeof(ids_[0]))); \
} while (0)

/* Tests give frame ids as epoch * 100 + n: the marker is the epoch. */
static uint32_t marker_of(uint32_t id)
{
	return id / 100;
}

static void assert_nothing_sent(const struct fake_out *o)
{
	ck_assert_int_eq(o->nsent, 0);
}

static void setup_protected(struct netbuf *nb, struct fake_out *o, size_t cap,
			    uint64_t first_epoch)
{
	fake_init(o);
	netbuf_init(nb, cap, fake_output, o);
	netbuf_set_protected(nb, true, first_epoch, 0);
}

/* ---- output commit ---- */

START_TEST(test_barrier_releases_only_the_sealed_epoch)
{
	struct netbuf nb;
	struct fake_out o;

	setup_protected(&nb, &o, 1 << 20, 1);
	push(&nb, 101, 1);
	push(&nb, 102, 1);
	assert_nothing_sent(&o);
	netbuf_seal(&nb, 1);
	push(&nb, 201, 2);
	assert_nothing_sent(&o);
	ck_assert_int_eq(o.calls, 0);

	ck_assert_int_eq(netbuf_release(&nb, 1, 10), 1);
	SENT(&o, 101, 102);
	ck_assert_uint_eq(nb.held_frames, 1);
	ck_assert_uint_eq(nb.held_bytes, 60);
	ck_assert_uint_eq(nb.frames, 1);

	netbuf_seal(&nb, 2);
	ck_assert_int_eq(netbuf_release(&nb, 2, 20), 1);
	SENT(&o, 101, 102, 201);
	ck_assert_uint_eq(nb.held_frames, 0);
	ck_assert_uint_eq(nb.held_bytes, 0);
	ck_assert_uint_eq(nb.frames, 0);
	ck_assert_uint_eq(nb.bytes, 0);
	netbuf_free(&nb);
}
END_TEST

/* Frames the VM sends after the barrier of N, while N is on its way to
 * the backup, belong to N+1: N's ack must not let them out. */
START_TEST(test_frames_pushed_while_epoch_in_flight_wait_for_next_ack)
{
	struct netbuf nb;
	struct fake_out o;

	setup_protected(&nb, &o, 1 << 20, 5);
	push(&nb, 501, 5);
	netbuf_seal(&nb, 5);
	push(&nb, 601, 6);
	push(&nb, 602, 6);
	ck_assert_int_eq(netbuf_release(&nb, 5, 1), 1);
	SENT(&o, 501);
	ck_assert_uint_eq(nb.held_frames, 2);

	netbuf_seal(&nb, 6);
	push(&nb, 701, 7);
	ck_assert_int_eq(netbuf_release(&nb, 6, 2), 1);
	SENT(&o, 501, 601, 602);
	ck_assert_uint_eq(nb.held_frames, 1);
	/* Releasing 6 again changes nothing: 7 is not acknowledged. */
	ck_assert_int_eq(netbuf_release(&nb, 6, 3), 1);
	SENT(&o, 501, 601, 602);
	netbuf_free(&nb);
}
END_TEST

START_TEST(test_release_order_kept_across_epochs)
{
	struct netbuf nb;
	struct fake_out o;

	setup_protected(&nb, &o, 1 << 20, 1);
	for (uint32_t e = 1; e <= 5; e++) {
		for (uint32_t i = 1; i <= e; i++)
			push(&nb, e * 100 + i, e);
		netbuf_seal(&nb, e);
	}
	ck_assert_uint_eq(nb.held_frames, 15);
	ck_assert_int_eq(netbuf_release(&nb, 1, 1), 1);
	SENT(&o, 101);
	/* Acks can cover several epochs at once (2 and 3 here). */
	ck_assert_int_eq(netbuf_release(&nb, 3, 2), 1);
	SENT(&o, 101, 201, 202, 301, 302, 303);
	ck_assert_int_eq(netbuf_release(&nb, 4, 3), 1);
	SENT(&o, 101, 201, 202, 301, 302, 303, 401, 402, 403, 404);
	ck_assert_int_eq(netbuf_release(&nb, 5, 4), 1);
	SENT(&o, 101, 201, 202, 301, 302, 303, 401, 402, 403, 404,
	     501, 502, 503, 504, 505);
	ck_assert_uint_eq(nb.frames, 0);
	netbuf_free(&nb);
}
END_TEST

START_TEST(test_stale_release_is_a_noop)
{
	struct netbuf nb;
	struct fake_out o;

	setup_protected(&nb, &o, 1 << 20, 1);
	push(&nb, 101, 1);
	netbuf_seal(&nb, 1);
	push(&nb, 201, 2);
	netbuf_seal(&nb, 2);
	push(&nb, 301, 3);
	push(&nb, 302, 3);

	ck_assert_int_eq(netbuf_release(&nb, 2, 1), 1);
	SENT(&o, 101, 201);
	ck_assert_int_eq(netbuf_release(&nb, 1, 2), 1);
	SENT(&o, 101, 201);
	ck_assert_uint_eq(nb.held_frames, 2);

	netbuf_seal(&nb, 3);
	push(&nb, 401, 4);
	ck_assert_int_eq(netbuf_release(&nb, 1, 3), 1);
	ck_assert_int_eq(netbuf_release(&nb, 2, 3), 1);
	SENT(&o, 101, 201);
	ck_assert_int_eq(netbuf_release(&nb, 3, 4), 1);
	SENT(&o, 101, 201, 301, 302);
	ck_assert_uint_eq(nb.held_frames, 1);
	netbuf_free(&nb);
}
END_TEST

START_TEST(test_full_exactly_at_cap_and_clear_after_release)
{
	struct netbuf nb;
	struct fake_out o;

	setup_protected(&nb, &o, 300, 1);
	ck_assert(!netbuf_full(&nb));
	push_len(&nb, 101, 1, 100, 0, 0);
	ck_assert(!netbuf_full(&nb));
	push_len(&nb, 102, 1, 100, 0, 0);
	ck_assert(!netbuf_full(&nb));
	push_len(&nb, 103, 1, 86, 0, 0);
	ck_assert_uint_eq(nb.held_bytes, 286);
	ck_assert(!netbuf_full(&nb));
	push_len(&nb, 104, 1, 14, 0, 0);
	ck_assert_uint_eq(nb.held_bytes, 300);
	ck_assert(netbuf_full(&nb));
	netbuf_seal(&nb, 1);
	/* Beyond the cap (the caller may push what it already read). */
	push_len(&nb, 201, 2, 14, 0, 0);
	ck_assert(netbuf_full(&nb));

	ck_assert_int_eq(netbuf_release(&nb, 1, 1), 1);
	ck_assert_uint_eq(nb.held_bytes, 14);
	ck_assert(!netbuf_full(&nb));
	SENT(&o, 101, 102, 103, 104);
	netbuf_free(&nb);
}
END_TEST

/* Released frames the output cannot take yet are not held output: they do
 * not keep the buffer full. */
/* Released frames stuck behind a blocked output still take memory: they
 * count toward the cap, protected or not, so the reader stops (the VM's
 * NIC backs off) instead of queueing without bound. */
START_TEST(test_released_but_blocked_frames_count_as_full)
{
	struct netbuf nb;
	struct fake_out o;

	setup_protected(&nb, &o, 100, 1);
	push_len(&nb, 101, 1, 100, 0, 0);
	ck_assert(netbuf_full(&nb));
	netbuf_seal(&nb, 1);
	o.budget = 0;
	ck_assert_int_eq(netbuf_release(&nb, 1, 1), 0);
	ck_assert(netbuf_full(&nb));
	ck_assert_uint_eq(nb.frames, 1);
	ck_assert_uint_eq(nb.held_frames, 0);
	o.budget = -1;
	ck_assert_int_eq(netbuf_flush(&nb, 2), 1);
	ck_assert(!netbuf_full(&nb));
	netbuf_free(&nb);
}
END_TEST

START_TEST(test_unprotected_blocked_output_counts_as_full)
{
	struct netbuf nb;
	struct fake_out o;

	fake_init(&o);
	netbuf_init(&nb, 100, fake_output, &o);
	o.budget = 0;
	push_len(&nb, 101, 1, 100, 0, 0);
	ck_assert(netbuf_full(&nb));
	o.budget = -1;
	ck_assert_int_eq(netbuf_flush(&nb, 1), 1);
	ck_assert(!netbuf_full(&nb));
	SENT(&o, 101);
	netbuf_free(&nb);
}
END_TEST

/* ---- protection on and off ---- */

START_TEST(test_unprotected_frames_go_out_at_once)
{
	struct netbuf nb;
	struct fake_out o;

	fake_init(&o);
	netbuf_init(&nb, 100, fake_output, &o);
	push_len(&nb, 101, 1, 100, 0, 0);
	SENT(&o, 101);
	push_len(&nb, 102, 1, 100, 0, 0);
	SENT(&o, 101, 102);
	push_len(&nb, 103, 1, 100, 0, 0);
	SENT(&o, 101, 102, 103);
	ck_assert_uint_eq(nb.frames, 0);
	ck_assert_uint_eq(nb.held_frames, 0);
	ck_assert_uint_eq(nb.held_bytes, 0);
	ck_assert(!netbuf_full(&nb));
	ck_assert_uint_eq(nb.st.high_water_bytes, 0);
	ck_assert_uint_eq(nb.st.frames_out, 3);
	netbuf_free(&nb);
}
END_TEST

START_TEST(test_protection_off_releases_everything_in_order)
{
	struct netbuf nb;
	struct fake_out o;

	setup_protected(&nb, &o, 1 << 20, 1);
	push(&nb, 101, 1);
	push(&nb, 102, 1);
	netbuf_seal(&nb, 1);
	push(&nb, 201, 2);
	netbuf_seal(&nb, 2);
	push(&nb, 301, 3);
	assert_nothing_sent(&o);

	netbuf_set_protected(&nb, false, 0, 5);
	SENT(&o, 101, 102, 201, 301);
	ck_assert_uint_eq(nb.held_frames, 0);
	ck_assert_uint_eq(nb.held_bytes, 0);
	ck_assert_uint_eq(nb.frames, 0);
	ck_assert(!netbuf_full(&nb));
	push(&nb, 401, 4);
	SENT(&o, 101, 102, 201, 301, 401);
	ck_assert_uint_eq(nb.held_frames, 0);
	netbuf_free(&nb);
}
END_TEST

/* Frames queued only because the output blocked, tagged with an older
 * backup's epoch numbers (3 here), must not wait for the new backup's
 * acks: a new numbering from 1 applies to new frames only. */
START_TEST(test_protection_on_does_not_hold_blocked_backlog)
{
	struct netbuf nb;
	struct fake_out o;

	setup_protected(&nb, &o, 1 << 20, 3);
	o.budget = 0;
	push(&nb, 301, 3);
	netbuf_set_protected(&nb, false, 0, 1);   /* the backup is lost */
	push(&nb, 302, 3);
	ck_assert_uint_eq(nb.frames, 2);
	assert_nothing_sent(&o);

	netbuf_set_protected(&nb, true, 1, 2);    /* a new backup */
	push(&nb, 101, 1);
	push(&nb, 102, 1);
	ck_assert_uint_eq(nb.held_frames, 2);
	assert_nothing_sent(&o);

	o.budget = -1;
	ck_assert_int_eq(netbuf_flush(&nb, 3), 1);
	SENT(&o, 301, 302);
	ck_assert_uint_eq(nb.frames, 2);

	netbuf_seal(&nb, 1);
	push(&nb, 201, 2);
	ck_assert_int_eq(netbuf_release(&nb, 1, 4), 1);
	SENT(&o, 301, 302, 101, 102);
	ck_assert_uint_eq(nb.held_frames, 1);
	netbuf_free(&nb);
}
END_TEST

/* ---- a blocked or failing output ---- */

START_TEST(test_eagain_keeps_frame_first_and_flush_resumes)
{
	struct netbuf nb;
	struct fake_out o;

	setup_protected(&nb, &o, 1 << 20, 1);
	push(&nb, 101, 1);
	push(&nb, 102, 1);
	push(&nb, 103, 1);
	netbuf_seal(&nb, 1);
	push(&nb, 201, 2);

	o.budget = 1;
	ck_assert_int_eq(netbuf_release(&nb, 1, 1), 0);
	SENT(&o, 101);
	ck_assert_int_eq(o.calls, 2);
	ck_assert_uint_eq(nb.frames, 3);
	ck_assert_uint_eq(nb.st.frames_out, 1);

	/* Still blocked: the same frame is offered again, nothing lost. */
	ck_assert_int_eq(netbuf_flush(&nb, 2), 0);
	SENT(&o, 101);
	ck_assert_int_eq(o.calls, 3);

	o.budget = -1;
	ck_assert_int_eq(netbuf_flush(&nb, 3), 1);
	SENT(&o, 101, 102, 103);
	ck_assert_uint_eq(nb.frames, 1);
	ck_assert_uint_eq(nb.held_frames, 1);
	ck_assert_uint_eq(nb.st.frames_out, 3);
	ck_assert_uint_eq(nb.st.dropped_output, 0);

	/* A blocked output while unprotected: the frame waits too. */
	netbuf_seal(&nb, 2);
	ck_assert_int_eq(netbuf_release(&nb, 2, 4), 1);
	netbuf_set_protected(&nb, false, 0, 4);
	o.budget = 0;
	push(&nb, 901, 9);
	push(&nb, 902, 9);
	SENT(&o, 101, 102, 103, 201);
	o.budget = -1;
	ck_assert_int_eq(netbuf_flush(&nb, 5), 1);
	SENT(&o, 101, 102, 103, 201, 901, 902);
	netbuf_free(&nb);
}
END_TEST

START_TEST(test_hard_output_error_drops_that_frame_only)
{
	struct netbuf nb;
	struct fake_out o;

	setup_protected(&nb, &o, 1 << 20, 1);
	push_len(&nb, 101, 1, 50, 0, 0);
	push_len(&nb, 102, 1, 70, 0, 0);
	push_len(&nb, 103, 1, 90, 0, 0);
	netbuf_seal(&nb, 1);
	o.fail_id = 102;
	ck_assert_int_eq(netbuf_release(&nb, 1, 1), 1);
	SENT(&o, 101, 103);
	ck_assert_uint_eq(nb.st.dropped_output, 1);
	ck_assert_uint_eq(nb.st.frames_out, 2);
	ck_assert_uint_eq(nb.st.bytes_out, 140);
	ck_assert_uint_eq(nb.st.delay_ms.n, 2);
	ck_assert_uint_eq(nb.frames, 0);
	ck_assert_uint_eq(nb.bytes, 0);

	/* Unprotected the same. */
	netbuf_set_protected(&nb, false, 0, 2);
	o.fail_id = 901;
	push(&nb, 901, 9);
	push(&nb, 902, 9);
	SENT(&o, 101, 103, 902);
	ck_assert_uint_eq(nb.st.dropped_output, 2);
	ck_assert_uint_eq(nb.st.dropped_malformed, 0);
	ck_assert_uint_eq(nb.st.dropped_oversized, 0);
	netbuf_free(&nb);
}
END_TEST

/* ---- bad frames ---- */

START_TEST(test_malformed_frame_is_einval_and_counted)
{
	struct netbuf nb;
	struct fake_out o;
	uint8_t small[NETBUF_MIN_FRAME] = { 0 };

	setup_protected(&nb, &o, 1 << 20, 1);
	ck_assert_int_eq(netbuf_push(&nb, small, NETBUF_MIN_FRAME - 1, 0), -EINVAL);
	ck_assert_int_eq(netbuf_push(&nb, small, 0, 0), -EINVAL);
	ck_assert_uint_eq(nb.st.dropped_malformed, 2);
	ck_assert_uint_eq(nb.frames, 0);
	ck_assert_uint_eq(nb.held_frames, 0);
	ck_assert_uint_eq(nb.held_bytes, 0);
	ck_assert_uint_eq(nb.st.frames_in, 0);
	ck_assert_uint_eq(nb.st.bytes_in, 0);

	/* The smallest frame is accepted. */
	push_len(&nb, 101, 1, NETBUF_MIN_FRAME, 0, 0);
	ck_assert_uint_eq(nb.held_frames, 1);
	netbuf_seal(&nb, 1);
	ck_assert_int_eq(netbuf_release(&nb, 1, 1), 1);
	SENT(&o, 101);
	ck_assert_uint_eq(o.sent[0].len, NETBUF_MIN_FRAME);

	/* Unprotected: not sent either. */
	netbuf_set_protected(&nb, false, 0, 1);
	ck_assert_int_eq(netbuf_push(&nb, small, 5, 0), -EINVAL);
	ck_assert_int_eq(o.calls, 1);
	ck_assert_uint_eq(nb.st.dropped_malformed, 3);
	netbuf_free(&nb);
}
END_TEST

START_TEST(test_oversized_frame_is_emsgsize_and_counted)
{
	struct netbuf nb;
	struct fake_out o;

	setup_protected(&nb, &o, 1 << 20, 1);
	push_len(&nb, 101, 1, NETBUF_MAX_FRAME + 1, 0, -EMSGSIZE);
	push_len(&nb, 102, 1, 4 * NETBUF_MAX_FRAME, 0, -EMSGSIZE);
	ck_assert_uint_eq(nb.st.dropped_oversized, 2);
	ck_assert_uint_eq(nb.st.dropped_malformed, 0);
	ck_assert_uint_eq(nb.frames, 0);
	ck_assert_uint_eq(nb.held_bytes, 0);
	ck_assert_uint_eq(nb.st.frames_in, 0);

	push_len(&nb, 103, 1, NETBUF_MAX_FRAME, 0, 0);
	ck_assert_uint_eq(nb.held_bytes, NETBUF_MAX_FRAME);
	netbuf_seal(&nb, 1);
	ck_assert_int_eq(netbuf_release(&nb, 1, 1), 1);
	SENT(&o, 103);
	ck_assert_uint_eq(o.sent[0].len, NETBUF_MAX_FRAME);

	netbuf_set_protected(&nb, false, 0, 1);
	push_len(&nb, 104, 1, NETBUF_MAX_FRAME + 1, 0, -EMSGSIZE);
	ck_assert_int_eq(o.calls, 1);
	ck_assert_uint_eq(nb.st.dropped_oversized, 3);
	netbuf_free(&nb);
}
END_TEST

/* ---- statistics ---- */

START_TEST(test_stats_count_frames_bytes_and_delays)
{
	struct netbuf nb;
	struct fake_out o;

	setup_protected(&nb, &o, 1 << 20, 1);
	push_len(&nb, 101, 1, 20, 10, 0);
	push_len(&nb, 102, 1, 30, 15, 0);
	netbuf_seal(&nb, 1);
	push_len(&nb, 201, 2, 40, 22, 0);
	push_len(&nb, 202, 2, 13, 23, -EINVAL);
	ck_assert_uint_eq(nb.st.frames_in, 3);
	ck_assert_uint_eq(nb.st.bytes_in, 90);
	ck_assert_uint_eq(nb.st.frames_out, 0);
	ck_assert_uint_eq(nb.st.delay_ms.n, 0);

	ck_assert_int_eq(netbuf_release(&nb, 1, 40), 1);
	ck_assert_uint_eq(nb.st.frames_out, 2);
	ck_assert_uint_eq(nb.st.bytes_out, 50);
	ck_assert_uint_eq(nb.st.delay_ms.n, 2);
	ck_assert_double_eq_tol(nb.st.delay_ms.v[0], 30, 1e-9);
	ck_assert_double_eq_tol(nb.st.delay_ms.v[1], 25, 1e-9);

	/* Released at 50, blocked, out at 70: the delay runs until it is sent. */
	netbuf_seal(&nb, 2);
	o.budget = 0;
	ck_assert_int_eq(netbuf_release(&nb, 2, 50), 0);
	ck_assert_uint_eq(nb.st.delay_ms.n, 2);
	o.budget = -1;
	ck_assert_int_eq(netbuf_flush(&nb, 70), 1);
	ck_assert_uint_eq(nb.st.frames_out, 3);
	ck_assert_uint_eq(nb.st.bytes_out, 90);
	ck_assert_uint_eq(nb.st.delay_ms.n, 3);
	ck_assert_double_eq_tol(nb.st.delay_ms.v[2], 48, 1e-9);
	ck_assert_double_eq_tol(ring_max(&nb.st.delay_ms), 48, 1e-9);
	ck_assert_uint_eq(nb.st.frames_in, 3);
	ck_assert_uint_eq(nb.st.dropped_malformed, 1);

	/* reset-stats: the delays and the high-water mark start again from
	 * what is held now; the counts stay. */
	push_len(&nb, 301, 3, 17, 80, 0);
	ck_assert_uint_eq(nb.st.high_water_bytes, 90);
	netbuf_forget_recent(&nb);
	ck_assert_uint_eq(nb.st.delay_ms.n, 0);
	ck_assert_double_eq(ring_quantile(&nb.st.delay_ms, 0.5), 0);
	ck_assert_uint_eq(nb.st.high_water_bytes, 17);
	ck_assert_uint_eq(nb.st.frames_out, 3);
	ck_assert_uint_eq(nb.st.bytes_out, 90);
	ck_assert_uint_eq(nb.st.frames_in, 4);
	netbuf_seal(&nb, 3);
	ck_assert_int_eq(netbuf_release(&nb, 3, 85), 1);
	ck_assert_uint_eq(nb.st.delay_ms.n, 1);
	ck_assert_double_eq_tol(nb.st.delay_ms.v[0], 5, 1e-9);
	netbuf_free(&nb);
}
END_TEST

START_TEST(test_high_water_tracks_most_held_bytes)
{
	struct netbuf nb;
	struct fake_out o;

	setup_protected(&nb, &o, 1 << 20, 1);
	ck_assert_uint_eq(nb.st.high_water_bytes, 0);
	push_len(&nb, 101, 1, 100, 0, 0);
	push_len(&nb, 102, 1, 200, 0, 0);
	ck_assert_uint_eq(nb.st.high_water_bytes, 300);
	netbuf_seal(&nb, 1);
	ck_assert_int_eq(netbuf_release(&nb, 1, 1), 1);
	ck_assert_uint_eq(nb.st.high_water_bytes, 300);
	push_len(&nb, 201, 2, 50, 0, 0);
	ck_assert_uint_eq(nb.st.high_water_bytes, 300);
	push_len(&nb, 202, 2, 300, 0, 0);
	ck_assert_uint_eq(nb.st.high_water_bytes, 350);
	/* Rejected frames do not count. */
	push_len(&nb, 203, 2, NETBUF_MAX_FRAME + 1, 0, -EMSGSIZE);
	ck_assert_uint_eq(nb.st.high_water_bytes, 350);
	netbuf_free(&nb);
}
END_TEST

/* Held, released-but-blocked and sealed frames are all freed (ASan's leak
 * check fails the test otherwise), and nothing is sent on the way. */
START_TEST(test_free_with_frames_queued_frees_them)
{
	struct netbuf nb;
	struct fake_out o;

	setup_protected(&nb, &o, 1 << 20, 1);
	push_len(&nb, 101, 1, NETBUF_MAX_FRAME, 0, 0);
	push_len(&nb, 102, 1, 1500, 0, 0);
	netbuf_seal(&nb, 1);
	push_len(&nb, 201, 2, 9000, 0, 0);
	push_len(&nb, 202, 2, NETBUF_MIN_FRAME, 0, 0);
	o.budget = 0;
	ck_assert_int_eq(netbuf_release(&nb, 1, 1), 0);
	ck_assert_uint_eq(nb.frames, 4);
	ck_assert_uint_eq(nb.held_frames, 2);
	netbuf_free(&nb);
	ck_assert_ptr_null(nb.head);
	ck_assert_ptr_null(nb.held);
	ck_assert_uint_eq(nb.frames, 0);
	ck_assert_uint_eq(nb.bytes, 0);
	assert_nothing_sent(&o);
	ck_assert_int_eq(o.calls, 1);
}
END_TEST

static void add(Suite *s, const char *name, const TTest *t, double timeout)
{
	TCase *tc = tcase_create(name);

	tcase_set_timeout(tc, timeout);
	tcase_add_test(tc, t);
	suite_add_tcase(s, tc);
}

#define ADD(s, t, to) add((s), #t, t, (to))

static Suite *netbuf_suite(void)
{
	Suite *s = suite_create("netbuf");

	ADD(s, test_barrier_releases_only_the_sealed_epoch, 5);
	ADD(s, test_frames_pushed_while_epoch_in_flight_wait_for_next_ack, 5);
	ADD(s, test_release_order_kept_across_epochs, 5);
	ADD(s, test_stale_release_is_a_noop, 5);
	ADD(s, test_full_exactly_at_cap_and_clear_after_release, 5);
	ADD(s, test_released_but_blocked_frames_count_as_full, 5);
	ADD(s, test_unprotected_blocked_output_counts_as_full, 5);
	ADD(s, test_unprotected_frames_go_out_at_once, 5);
	ADD(s, test_protection_off_releases_everything_in_order, 5);
	ADD(s, test_protection_on_does_not_hold_blocked_backlog, 5);
	ADD(s, test_eagain_keeps_frame_first_and_flush_resumes, 5);
	ADD(s, test_hard_output_error_drops_that_frame_only, 5);
	ADD(s, test_malformed_frame_is_einval_and_counted, 5);
	ADD(s, test_oversized_frame_is_emsgsize_and_counted, 5);
	ADD(s, test_stats_count_frames_bytes_and_delays, 5);
	ADD(s, test_high_water_tracks_most_held_bytes, 5);
	ADD(s, test_free_with_frames_queued_frees_them, 5);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(netbuf_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
