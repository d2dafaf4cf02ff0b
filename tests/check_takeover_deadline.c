/* When a backup may still take over (backup-agent/takeover_deadline.c):
 * the loop's own stalls, the time a takeover's window counts from, and
 * what is left of it. The end-to-end check, a backup stopped past the
 * primary's hold that must not take over when it runs again, is
 * tests/integration/test_backup_stall.sh. */
#include "../backup-agent/takeover_deadline.h"
#include "../common/proto.h"

#include <check.h>
#include <stdlib.h>

#define HEARTBEAT_MS 100u
#define TIMEOUT_MS   2000u
#define T0           1000000.0 /* an arbitrary boot_ms() */

static struct takeover_deadline ticking(void)
{
	struct takeover_deadline d;

	takeover_deadline_init(&d, HEARTBEAT_MS, TIMEOUT_MS);
	return d;
}

START_TEST(test_a_loop_that_ticks_on_time_never_stalls)
{
	struct takeover_deadline d = ticking();
	double t;

	/* every heartbeat, then late by up to half a second: timer jitter */
	for (t = T0; t < T0 + 10000; t += HEARTBEAT_MS)
		ck_assert(!takeover_deadline_tick(&d, t));
	ck_assert(!takeover_deadline_tick(&d, t + 500));
	ck_assert_double_eq(d.stall_to_ms, 0);
	/* a primary heard at any of those times counts from then */
	ck_assert_double_eq(takeover_deadline_anchor(&d, T0 + 4321), T0 + 4321);
}
END_TEST

START_TEST(test_a_gap_longer_than_a_heartbeat_and_500_ms_is_a_stall)
{
	struct takeover_deadline d = ticking();
	double last;

	ck_assert(!takeover_deadline_tick(&d, T0)); /* the first tick: nothing to compare */
	ck_assert(takeover_deadline_tick(&d, T0 + HEARTBEAT_MS + 501));
	ck_assert_double_eq(d.stall_from_ms, T0);
	ck_assert_double_eq(d.stall_to_ms, T0 + HEARTBEAT_MS + 501);
	/* said once: the next tick on time ends nothing */
	ck_assert(!takeover_deadline_tick(&d, T0 + 2 * HEARTBEAT_MS + 501));
	/* caught up, and long after: a later stall is a stall of its own */
	takeover_deadline_drained(&d, T0 + 2 * HEARTBEAT_MS + 501);
	for (last = T0 + 2 * HEARTBEAT_MS + 501; last < T0 + 50000; last += HEARTBEAT_MS)
		ck_assert(!takeover_deadline_tick(&d, last));
	ck_assert(takeover_deadline_tick(&d, T0 + 60000));
	ck_assert_double_eq(d.stall_from_ms, last - HEARTBEAT_MS);
	ck_assert_double_eq(d.stall_to_ms, T0 + 60000);
}
END_TEST

/* SIGSTOP for a minute: what is read as it ends, and an EOF behind it,
 * may have waited since the stall began; and the primary's kernel may
 * still hold more, which comes in once our socket has room again. */
START_TEST(test_heard_while_catching_up_after_a_stall_counts_from_its_start)
{
	struct takeover_deadline d = ticking();
	const double from = T0, to = T0 + 60000;

	takeover_deadline_tick(&d, from);
	takeover_deadline_drained(&d, from - 5); /* before the stall: not a catch-up */
	ck_assert(takeover_deadline_tick(&d, to));
	takeover_deadline_drained(&d, from - 5);
	ck_assert_double_eq(takeover_deadline_anchor(&d, to), from);
	/* a backlog that takes longer than the timeout to handle (a commit in
	 * it): still catching up until the link is found drained */
	ck_assert_double_eq(takeover_deadline_anchor(&d, to + 3 * TIMEOUT_MS), from);
	takeover_deadline_drained(&d, to + 3 * TIMEOUT_MS);
	ck_assert_double_eq(takeover_deadline_anchor(&d, to + 4 * TIMEOUT_MS), from);
	/* past the catch-up the primary spoke to us live: then */
	ck_assert_double_eq(takeover_deadline_anchor(&d, to + 4 * TIMEOUT_MS + 1),
			    to + 4 * TIMEOUT_MS + 1);
	/* heard before the stall: then, the stall included in its silence */
	ck_assert_double_eq(takeover_deadline_anchor(&d, from - 700), from - 700);
}
END_TEST

/* A second stall in the catch-up of the first (a commit's fsync on a host
 * still starved) must not make what follows look fresh. */
START_TEST(test_a_stall_while_catching_up_extends_the_one_before)
{
	struct takeover_deadline d = ticking();
	const double from = T0, to = T0 + 40000;

	takeover_deadline_tick(&d, from);
	takeover_deadline_tick(&d, to);
	takeover_deadline_tick(&d, to + 50);
	ck_assert(takeover_deadline_tick(&d, to + 800)); /* 750 ms more, not caught up */
	ck_assert_double_eq(d.stall_from_ms, from);
	ck_assert_double_eq(d.gap_from_ms, to + 50);
	ck_assert_double_eq(takeover_deadline_anchor(&d, to + 810), from);
	/* caught up, then a stall within the timeout after: still the first */
	takeover_deadline_drained(&d, to + 820);
	takeover_deadline_tick(&d, to + 900);
	ck_assert(takeover_deadline_tick(&d, to + 1700));
	ck_assert_double_eq(d.stall_from_ms, from);
	ck_assert_double_eq(takeover_deadline_anchor(&d, to + 1710), from);
}
END_TEST

START_TEST(test_the_deadline_counts_the_promise_the_margin_and_our_heartbeats)
{
	struct takeover_deadline d = ticking();
	const unsigned after = TIMEOUT_MS + 10000; /* timeout plus the fence's limit */

	ck_assert_double_eq(takeover_deadline_by(&d, T0, after),
			    T0 + after + PROTO_TAKEOVER_MARGIN_MS - 2 * HEARTBEAT_MS);
	/* the usual failover, the timeout run out at the next heartbeat:
	 * the whole fence's limit is left */
	ck_assert(takeover_deadline_by(&d, T0, after) - (T0 + TIMEOUT_MS + HEARTBEAT_MS) >= 10000);
}
END_TEST

/* The whole case the module is for: an agent stopped for a minute wakes to
 * the primary's last heartbeats and its EOF: past the deadline. */
START_TEST(test_an_agent_stopped_past_the_window_is_past_the_deadline)
{
	struct takeover_deadline d = ticking();
	const unsigned after = TIMEOUT_MS + 1500;
	const double wake = T0 + 60000;
	double anchor;

	for (double t = T0 - 1000; t <= T0; t += HEARTBEAT_MS)
		takeover_deadline_tick(&d, t);
	takeover_deadline_tick(&d, wake);
	anchor = takeover_deadline_anchor(&d, wake + 3); /* the backlog, read at once */
	ck_assert_double_eq(anchor, T0);
	ck_assert(takeover_deadline_by(&d, anchor, after) < wake);
	/* the same backlog after a stall of 1 s: the window holds */
	d = ticking();
	takeover_deadline_tick(&d, T0);
	takeover_deadline_tick(&d, T0 + 1000);
	anchor = takeover_deadline_anchor(&d, T0 + 1003);
	ck_assert_double_eq(anchor, T0);
	ck_assert(takeover_deadline_by(&d, anchor, after) - (T0 + 1005) > 1500);
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("takeover_deadline");
	TCase *tc = tcase_create("deadline");

	tcase_add_test(tc, test_a_loop_that_ticks_on_time_never_stalls);
	tcase_add_test(tc, test_a_gap_longer_than_a_heartbeat_and_500_ms_is_a_stall);
	tcase_add_test(tc, test_heard_while_catching_up_after_a_stall_counts_from_its_start);
	tcase_add_test(tc, test_a_stall_while_catching_up_extends_the_one_before);
	tcase_add_test(tc, test_the_deadline_counts_the_promise_the_margin_and_our_heartbeats);
	tcase_add_test(tc, test_an_agent_stopped_past_the_window_is_past_the_deadline);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
