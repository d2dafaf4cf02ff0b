/* Epoch policies against synthetic traces: dirty-rate steps, a link that
 * cannot keep up, idle periods and output arriving mid-epoch. */
#include "../replicator/epoch_policy.h"

#include <check.h>
#include <stdlib.h>
#include <string.h>

static struct epoch_policy_cfg cfg(enum epoch_policy_kind kind)
{
	return (struct epoch_policy_cfg){
		.kind = kind, .fixed_ms = 50, .min_ms = 10, .max_ms = 200,
		.max_overhead = 0.25, .output_delay_ms = 2,
	};
}

/* n epochs of a steady workload: pause ms, dirty MB/s, link MB/s. */
static void feed(struct epoch_policy *p, int n, double pause, double dirty_mb_s, double link_mb_s)
{
	for (int i = 0; i < n; i++) {
		double run = p->length_ms;
		struct epoch_sample s = {
			.run_ms = run,
			.pause_ms = pause,
			.dirty_pages = (uint64_t)(dirty_mb_s * 1e6 / 4096 * run / 1e3),
			.link_bytes_per_s = link_mb_s * 1e6,
		};
		s.checkpoint_bytes = s.dirty_pages * 4136;
		epoch_policy_observe(p, &s);
	}
}

START_TEST(test_fixed_ignores_everything)
{
	struct epoch_policy_cfg c = cfg(POLICY_FIXED);
	struct epoch_policy p;

	epoch_policy_init(&p, &c);
	feed(&p, 20, 40, 500, 10);
	ck_assert_double_eq(p.length_ms, 50);
	ck_assert_double_eq(epoch_policy_deadline(&p, 1, -1), 50);
	ck_assert_double_eq(epoch_policy_deadline(&p, -1, -1), 50);
}
END_TEST

START_TEST(test_dirty_rate_keeps_pause_overhead_under_target)
{
	struct epoch_policy_cfg c = cfg(POLICY_DIRTY_RATE);
	struct epoch_policy p;

	epoch_policy_init(&p, &c);
	ck_assert_double_eq(p.length_ms, 50); /* --epoch-ms until measured */
	feed(&p, 30, 10, 20, 1000);
	/* 10 ms pause at <= 25 %: 30 ms epochs */
	ck_assert_double_eq_tol(p.length_ms, 30, 0.5);
	ck_assert_msg(strstr(p.reason, "pause 10.0 ms"), "reason: %s", p.reason);
	/* output does not change a dirty-rate epoch */
	ck_assert_double_eq_tol(epoch_policy_deadline(&p, 1, -1), 30, 0.5);
}
END_TEST

START_TEST(test_dirty_rate_follows_a_step_within_a_few_epochs)
{
	struct epoch_policy_cfg c = cfg(POLICY_DIRTY_RATE);
	struct epoch_policy p;

	epoch_policy_init(&p, &c);
	feed(&p, 30, 10, 20, 1000);
	feed(&p, 1, 40, 20, 1000);
	ck_assert_msg(p.length_ms > 30 && p.length_ms < 120, "one outlier: %.1f", p.length_ms);
	feed(&p, 15, 40, 20, 1000);
	ck_assert_double_eq_tol(p.length_ms, 120, 1.5);
	/* and back */
	feed(&p, 15, 10, 20, 1000);
	ck_assert_double_eq_tol(p.length_ms, 30, 1.5);
}
END_TEST

START_TEST(test_dirty_rate_bounded_by_min_and_max)
{
	struct epoch_policy_cfg c = cfg(POLICY_DIRTY_RATE);
	struct epoch_policy p;

	epoch_policy_init(&p, &c);
	feed(&p, 30, 1, 20, 1000);
	ck_assert_double_eq(p.length_ms, 10);
	ck_assert_msg(strstr(p.reason, "minimum"), "reason: %s", p.reason);
	feed(&p, 40, 500, 20, 1000);
	ck_assert_double_eq(p.length_ms, 200);
	ck_assert_msg(strstr(p.reason, "maximum"), "reason: %s", p.reason);
}
END_TEST

START_TEST(test_dirty_rate_beyond_the_link_takes_the_longest_epoch)
{
	struct epoch_policy_cfg c = cfg(POLICY_DIRTY_RATE);
	struct epoch_policy p;

	epoch_policy_init(&p, &c);
	feed(&p, 30, 10, 300, 100);
	ck_assert_double_eq(p.length_ms, 200);
	ck_assert_msg(strstr(p.reason, "outruns the link"), "reason: %s", p.reason);
	feed(&p, 30, 10, 20, 100);
	ck_assert_double_eq_tol(p.length_ms, 30, 1.5);
}
END_TEST

START_TEST(test_output_aware_stretches_when_quiet_and_cuts_on_output)
{
	struct epoch_policy_cfg c = cfg(POLICY_OUTPUT_AWARE);
	struct epoch_policy p;

	epoch_policy_init(&p, &c);
	feed(&p, 10, 10, 20, 1000);
	ck_assert_double_eq(epoch_policy_deadline(&p, -1, -1), 200);
	/* output 40 ms into the epoch: end 2 ms later */
	ck_assert_double_eq(epoch_policy_deadline(&p, 40, -1), 42);
	/* output at once: not before the minimum */
	ck_assert_double_eq(epoch_policy_deadline(&p, 0.5, -1), 10);
	/* never later than the quiet length */
	ck_assert_double_eq(epoch_policy_deadline(&p, 199.5, -1), 200);
}
END_TEST

START_TEST(test_hybrid_cut_short_runs_at_least_its_pause)
{
	struct epoch_policy_cfg c = cfg(POLICY_HYBRID);
	struct epoch_policy p;

	epoch_policy_init(&p, &c);
	feed(&p, 30, 15, 20, 1000);
	ck_assert_double_eq(epoch_policy_deadline(&p, -1, -1), 200);
	ck_assert_double_eq_tol(epoch_policy_deadline(&p, 0.5, -1), 15, 0.01);
	ck_assert_double_eq_tol(epoch_policy_deadline(&p, 30, -1), 32, 0.01);
	/* a small pause: no minimum epoch on top (--epoch-min-ms is 10) */
	feed(&p, 40, 3, 20, 1000);
	ck_assert_double_eq_tol(epoch_policy_deadline(&p, 0.5, -1), 3, 0.01);
	ck_assert_msg(strstr(p.reason, "hybrid"), "reason: %s", p.reason);
}
END_TEST

/* n epochs of pause ms whose vCPUs were busy `busy` of their run time. */
static void feed_busy(struct epoch_policy *p, int n, double run, double pause, double busy)
{
	for (int i = 0; i < n; i++) {
		struct epoch_sample s = {
			.run_ms = run, .pause_ms = pause, .dirty_pages = 10,
			.checkpoint_bytes = 41360, .link_bytes_per_s = 1e9,
			.vcpu_busy_known = true, .vcpu_busy = busy,
		};
		epoch_policy_observe(p, &s);
	}
}

START_TEST(test_hybrid_floor_follows_the_vcpus_load)
{
	struct epoch_policy_cfg c = cfg(POLICY_HYBRID);
	struct epoch_policy p;

	epoch_policy_init(&p, &c);
	/* not measured yet: taken for busy, the full pause */
	feed(&p, 10, 12, 1, 1000);
	ck_assert_double_eq_tol(epoch_policy_deadline(&p, 0.5, -1), 12, 0.01);
	/* waiting for requests: the reply waits --output-delay-ms, no more */
	feed_busy(&p, 40, 3, 12, 0.02);
	ck_assert_double_eq_tol(epoch_policy_deadline(&p, 0.5, -1), 2.5, 0.01);
	ck_assert_double_eq_tol(epoch_policy_deadline(&p, 5, -1), 7, 0.01);
	ck_assert_msg(strstr(p.reason, "2% busy"), "reason: %s", p.reason);
	/* busy, but not all the time they run (a server answering requests
	 * in short epochs): still no floor */
	feed_busy(&p, 40, 3, 12, 0.6);
	ck_assert_double_eq_tol(epoch_policy_deadline(&p, 0.5, -1), 2.5, 0.01);
	/* nearly saturated: part of the pause */
	feed_busy(&p, 40, 6, 12, 0.875);
	ck_assert_double_eq_tol(epoch_policy_deadline(&p, 0.5, -1), 6, 0.01);
	/* saturated: the whole pause */
	feed_busy(&p, 40, 12, 12, 1);
	ck_assert_double_eq_tol(epoch_policy_deadline(&p, 0.5, -1), 12, 0.01);
	/* one saturated epoch among idle ones does not set a floor */
	feed_busy(&p, 40, 3, 12, 0);
	feed_busy(&p, 1, 3, 12, 1);
	ck_assert_double_eq_tol(epoch_policy_deadline(&p, 0, -1), 2, 0.01);
	/* output-aware keeps its --epoch-min-ms */
	c = cfg(POLICY_OUTPUT_AWARE);
	epoch_policy_init(&p, &c);
	feed_busy(&p, 40, 3, 12, 0);
	ck_assert_double_eq_tol(epoch_policy_deadline(&p, 0.5, -1), 10, 0.01);
}
END_TEST

START_TEST(test_reply_ends_epoch_sooner_than_bare_ack)
{
	struct epoch_policy_cfg c = cfg(POLICY_HYBRID);
	struct epoch_policy p;

	epoch_policy_init(&p, &c);
	feed_busy(&p, 40, 3, 12, 0.02);
	/* a bare ACK at 5 ms: --output-delay-ms (2) for a reply to join it */
	ck_assert_double_eq_tol(epoch_policy_deadline(&p, 5, -1), 7, 0.01);
	/* the reply came at 5.2 ms: it ends quiet 0.5 ms after */
	ck_assert_double_eq_tol(epoch_policy_deadline(&p, 5, 5.2), 5.2 + EPOCH_REPLY_QUIET_MS,
				0.01);
	/* a burst of replies pushes the end on, never past the output delay */
	ck_assert_double_eq_tol(epoch_policy_deadline(&p, 5, 6.3), 6.8, 0.01);
	ck_assert_double_eq_tol(epoch_policy_deadline(&p, 5, 6.9), 7, 0.01);
	/* the quiet ran out at 5.7 ms: a VM still busy answering gets another
	 * quiet interval, within the output delay; an idle or unknown one not */
	ck_assert(epoch_policy_reply_extends(&p, 5, 5.7, 0.9));
	ck_assert(epoch_policy_reply_extends(&p, 5, 5.7, EPOCH_REPLY_BUSY));
	ck_assert(!epoch_policy_reply_extends(&p, 5, 6.6, 0.9));
	ck_assert(!epoch_policy_reply_extends(&p, 5, 5.7, 0.2));
	ck_assert(!epoch_policy_reply_extends(&p, 5, 5.7, -1));
	/* the floor still holds for a saturated VM */
	feed_busy(&p, 40, 12, 12, 1);
	ck_assert_double_eq_tol(epoch_policy_deadline(&p, 0.1, 0.1), 12, 0.01);
	/* fixed ignores output of any kind */
	c = cfg(POLICY_FIXED);
	epoch_policy_init(&p, &c);
	ck_assert_double_eq(epoch_policy_deadline(&p, 1, 1), 50);
	ck_assert(!epoch_policy_reply_extends(&p, 1, 1.5, 1));
}
END_TEST

/* A VM that needs `demand` of one CPU's time, served by the hybrid with
 * output waiting in every epoch (a trickle of packets): simulated in
 * 0.1 ms steps. Its vCPUs are busy while they have backlog. Returns the
 * share of the time it was paused; *done the work done / the work asked. */
static double simulate_trickle(double demand, double pause, double *done)
{
	struct epoch_policy_cfg c = cfg(POLICY_HYBRID);
	struct epoch_policy p;
	double backlog = 0, asked = 0, worked = 0, paused = 0, t = 0;

	epoch_policy_init(&p, &c);
	while (t < 20000) {
		double run = 0, busy = 0, len;

		/* output waits from the start of every epoch */
		len = epoch_policy_deadline(&p, 0, -1);
		for (; run < len; run += 0.1) {
			backlog += demand * 0.1;
			asked += demand * 0.1;
			if (backlog > 0) {
				double w = backlog < 0.1 ? backlog : 0.1;
				backlog -= w;
				worked += w;
				busy += w;
			}
		}
		backlog += demand * pause;
		asked += demand * pause;
		paused += pause;
		t += run + pause;
		feed_busy(&p, 1, run, pause, run > 0 ? busy / run : 1);
	}
	*done = worked / asked;
	return paused / t;
}

START_TEST(test_hybrid_bounds_what_pauses_take_from_a_busy_vm)
{
	double done, share;

	/* idle: paused most of the time, and loses nothing */
	share = simulate_trickle(0.02, 12, &done);
	ck_assert_msg(share > 0.7 && done > 0.99, "idle: paused %.2f, done %.3f", share, done);
	/* a quarter of a CPU: paused more than half of the time, all its
	 * work done; 40%: about half paused, still all done */
	share = simulate_trickle(0.25, 12, &done);
	ck_assert_msg(share < 0.75 && done > 0.99, "quarter: paused %.2f, done %.3f", share, done);
	share = simulate_trickle(0.4, 12, &done);
	ck_assert_msg(share < 0.6 && done > 0.99, "40%%: paused %.2f, done %.3f", share, done);
	/* CPU-bound: never more than half of its time paused */
	share = simulate_trickle(1.0, 12, &done);
	ck_assert_msg(share <= 0.51 && done >= 0.49, "busy: paused %.2f, done %.3f", share, done);
}
END_TEST

START_TEST(test_idle_then_burst_of_requests)
{
	struct epoch_policy_cfg c = cfg(POLICY_HYBRID);
	struct epoch_policy p;
	double t = 0, longest_wait = 0;

	epoch_policy_init(&p, &c);
	feed(&p, 5, 10, 1, 1000);
	/* a request every 7 ms for 200 ms: each epoch ends once output waits */
	for (int i = 0; i < 30; i++) {
		double start = t, a = 0, end;
		while (a < start)
			a += 7; /* the first request of this epoch */
		end = start + epoch_policy_deadline(&p, a - start, -1);
		if (end - a > longest_wait)
			longest_wait = end - a;
		t = end + 10; /* the pause */
	}
	ck_assert_msg(longest_wait <= 10.01, "output waited %.1f ms for its barrier", longest_wait);
}
END_TEST

START_TEST(test_policy_names)
{
	enum epoch_policy_kind k;

	ck_assert_int_eq(epoch_policy_parse("hybrid", &k), 0);
	ck_assert_int_eq(k, POLICY_HYBRID);
	ck_assert_int_eq(epoch_policy_parse("dirty-rate", &k), 0);
	ck_assert_int_eq(k, POLICY_DIRTY_RATE);
	ck_assert_int_eq(epoch_policy_parse("adaptive", &k), -1);
	ck_assert_str_eq(epoch_policy_name(POLICY_OUTPUT_AWARE), "output-aware");
}
END_TEST

static void add(Suite *s, const char *name, const TTest *t)
{
	TCase *tc = tcase_create(name);

	tcase_set_timeout(tc, 5);
	tcase_add_test(tc, t);
	suite_add_tcase(s, tc);
}

#define ADD(s, t) add((s), #t, t)

int main(void)
{
	Suite *s = suite_create("epoch_policy");
	SRunner *sr;
	int failed;

	ADD(s, test_fixed_ignores_everything);
	ADD(s, test_dirty_rate_keeps_pause_overhead_under_target);
	ADD(s, test_dirty_rate_follows_a_step_within_a_few_epochs);
	ADD(s, test_dirty_rate_bounded_by_min_and_max);
	ADD(s, test_dirty_rate_beyond_the_link_takes_the_longest_epoch);
	ADD(s, test_output_aware_stretches_when_quiet_and_cuts_on_output);
	ADD(s, test_hybrid_cut_short_runs_at_least_its_pause);
	ADD(s, test_hybrid_floor_follows_the_vcpus_load);
	ADD(s, test_reply_ends_epoch_sooner_than_bare_ack);
	ADD(s, test_hybrid_bounds_what_pauses_take_from_a_busy_vm);
	ADD(s, test_idle_then_burst_of_requests);
	ADD(s, test_policy_names);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
