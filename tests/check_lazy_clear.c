/* When the soft-dirty tracker clears its log (replicator/lazy_clear.h):
 * scans simulated with set costs, the model's choices against the best
 * fixed clearing interval found by trying every one. */
#include "../replicator/lazy_clear.h"

#include <check.h>
#include <stdlib.h>

#define CLEAR_NS   2e6 /* a clear: 2 ms */
#define COMPARE_NS 1e3 /* a compare: 1 us */

/* Of the pages rewritten every epoch, how many keep their bytes (as a
 * guest kernel's own state does): flagged and unchanged in every scan. */
static unsigned same_bytes;

/* One scan of a writer that writes `fresh` pages no earlier epoch wrote
 * and rewrites `same` pages every epoch, with the log last cleared
 * `since` scans ago (1: by the last scan), and a clear that costs
 * clear_ns. Returns what the scan cost and advances *since. */
static double scan_at(struct lazy_clear *m, unsigned *since, unsigned fresh, unsigned same,
		      double clear_ns)
{
	bool clear = lazy_clear_due(m);
	/* the log holds every page written since its clear: this epoch's
	 * fresh and rewritten pages, and the fresh pages of the epochs before */
	uint64_t flagged = (uint64_t)fresh * *since + same;
	struct lazy_clear_sample s = {
		.cleared = clear,
		.clear_ns = clear_ns,
		.compare_ns = (double)flagged * COMPARE_NS,
		.compared = flagged,
		.flagged_same = (uint64_t)fresh * (*since - 1) + same_bytes,
	};

	lazy_clear_learn(m, &s);
	*since = clear ? 1 : *since + 1;
	return s.compare_ns + (clear ? clear_ns : 0);
}

static double scan(struct lazy_clear *m, unsigned *since, unsigned fresh, unsigned same)
{
	return scan_at(m, since, fresh, same, CLEAR_NS);
}

/* Cost per scan of clearing every `every` scans, for the same writer. */
static double fixed_interval_cost(unsigned every, unsigned fresh, unsigned same)
{
	double sum = CLEAR_NS;

	for (unsigned k = 1; k <= every; k++)
		sum += ((double)fresh * k + same) * COMPARE_NS;
	return sum / every;
}

START_TEST(test_clears_until_both_costs_are_known)
{
	struct lazy_clear m = { 0 };
	struct lazy_clear_sample cleared_no_compares = { .cleared = true, .clear_ns = CLEAR_NS };

	ck_assert(lazy_clear_due(&m));
	lazy_clear_learn(&m, &cleared_no_compares);
	ck_assert(lazy_clear_due(&m)); /* a compare's cost is still unknown */
}
END_TEST

/* Pages rewritten every epoch are compared whether or not the log was
 * cleared: no clear ever pays, however many scans. */
START_TEST(test_the_same_pages_every_epoch_never_pay_for_a_clear)
{
	struct lazy_clear m = { 0 };
	unsigned since = 1, clears = 0;

	same_bytes = _i ? 100 : 0; /* (a clear would not save those) */

	for (int i = 0; i < 10000; i++) {
		clears += lazy_clear_due(&m);
		scan(&m, &since, 0, 5000);
	}
	same_bytes = 0;
	ck_assert_uint_eq(clears, 1); /* the first, to measure */
}
END_TEST

/* A writer that spreads its writes: the log grows by `fresh` pages a scan
 * until a clear (and, in the second half of the runs, 100 of its rewritten
 * pages keep their bytes). The model must pay within 10% of the best fixed interval
 * in hindsight, from a clear every 20 scans (10 fresh pages) to one at
 * every scan (20000), where it still leaves the log once in a while to
 * see whether the writer changed. */
START_TEST(test_a_spreading_writer_pays_near_the_best_interval)
{
	static const unsigned fresh[] = { 10, 100, 1000, 20000 };
	unsigned f = fresh[_i % 4], since = 1, best_every = 1;
	struct lazy_clear m = { 0 };
	double best = fixed_interval_cost(1, f, 200), sum = 0;
	int scans = 0;

	for (unsigned every = 2; every < 1000; every++)
		if (fixed_interval_cost(every, f, 200) < best) {
			best = fixed_interval_cost(every, f, 200);
			best_every = every;
		}
	same_bytes = _i >= 4 ? 100 : 0; /* of the 200 rewritten pages */
	for (int i = 0; i < 200; i++) /* settle */
		scan(&m, &since, f, 200);
	for (; scans < 5000; scans++)
		sum += scan(&m, &since, f, 200);
	same_bytes = 0;
	ck_assert_msg(sum / scans <= best * 1.10,
		      "%u fresh pages a scan: %.0f ns a scan, the best interval (%u) %.0f", f,
		      sum / scans, best_every, best);
}
END_TEST

/* The interval follows sqrt(2 C / g): a clear 100 times dearer is done
 * about 10 times less often. */
START_TEST(test_a_dearer_clear_is_done_less_often)
{
	static const double cost[] = { 1e6, 1e8 };
	unsigned clears[2] = { 0, 0 };

	for (int c = 0; c < 2; c++) {
		struct lazy_clear m = { 0 };
		unsigned since = 1;

		for (int i = 0; i < 20000; i++) {
			clears[c] += lazy_clear_due(&m);
			scan_at(&m, &since, 100, 0, cost[c]);
		}
	}
	/* g = 100 pages of 1 us: every sqrt(20) = 4.5 and sqrt(2000) = 44.7
	 * scans */
	ck_assert_msg(clears[0] >= 20000 / 5.5 && clears[0] <= 20000 / 3.5, "%u clears", clears[0]);
	ck_assert_msg(clears[1] >= 20000 / 50.0 && clears[1] <= 20000 / 40.0, "%u clears", clears[1]);
}
END_TEST

/* A log cleared at every scan shows no waste: only a scan that leaves it
 * now and then sees that the writer stopped spreading its writes. */
START_TEST(test_clearing_every_scan_still_sees_the_writer_change)
{
	struct lazy_clear m = { 0 };
	unsigned since = 1, late_clears = 0;

	for (int i = 0; i < 500; i++)
		scan(&m, &since, 20000, 200);
	for (int i = 0; i < 1000; i++) {
		late_clears += i >= 500 && lazy_clear_due(&m);
		scan(&m, &since, 0, 5000);
	}
	ck_assert_uint_eq(late_clears, 0);
}
END_TEST

/* A full scan compares every page whatever the log says: its compares say
 * nothing of what the log's flagged pages cost. */
START_TEST(test_a_full_scan_is_no_sample_of_compares)
{
	struct lazy_clear m = { 0 };
	struct lazy_clear_sample s = { .cleared = true, .clear_ns = CLEAR_NS,
				       .compared = 100, .compare_ns = 100 * COMPARE_NS };

	lazy_clear_learn(&m, &s);
	ck_assert(m.compare_ns == COMPARE_NS);
	s.full = true;
	s.compared = 1000000;
	s.compare_ns = 1e12;
	lazy_clear_learn(&m, &s);
	ck_assert(m.compare_ns == COMPARE_NS);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("lazy_clear");
	TCase *tc = tcase_create("lazy_clear");
	SRunner *sr;
	int failed;

	tcase_add_test(tc, test_clears_until_both_costs_are_known);
	tcase_add_loop_test(tc, test_the_same_pages_every_epoch_never_pay_for_a_clear, 0, 2);
	tcase_add_loop_test(tc, test_a_spreading_writer_pays_near_the_best_interval, 0, 8);
	tcase_add_test(tc, test_a_dearer_clear_is_done_less_often);
	tcase_add_test(tc, test_clearing_every_scan_still_sees_the_writer_change);
	tcase_add_test(tc, test_a_full_scan_is_no_sample_of_compares);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
