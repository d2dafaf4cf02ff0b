/* The trackers' thread pool: every index runs exactly once per round, index
 * 0 on the caller's thread and the others each on a thread of its own; run
 * returns only once every index is done; fini and a failed init join every
 * thread they started.
 *
 * To see threads start and end, and to make thread creation fail on demand,
 * this file defines pthread_create and pthread_join, which take precedence
 * over libc's (and the sanitizers') for the whole test binary and call them
 * through dlsym(RTLD_NEXT). */
#include "../replicator/scan_pool.h"

#include <check.h>
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAXN   16
#define ROUNDS 1000

static atomic_uint created, joined;
/* pthread_create calls left before one fails with EAGAIN; -1: never. */
static atomic_int fail_in = -1;

struct tramp {
	void *(*start)(void *);
	void *arg;
};

/* Threads the pool started and joined are as expected (plain values, so
 * that a failure message reads well). */
static void check_threads(unsigned want_created, unsigned want_joined)
{
	unsigned c = atomic_load(&created), j = atomic_load(&joined);

	ck_assert_msg(c == want_created && j == want_joined,
		      "threads created %u, joined %u; expected %u and %u", c, j,
		      want_created, want_joined);
}

static void *trampoline(void *a)
{
	struct tramp tr = *(struct tramp *)a;

	free(a);
	return tr.start(tr.arg);
}

int pthread_create(pthread_t *th, const pthread_attr_t *attr, void *(*start)(void *), void *arg)
{
	static int (*real)(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *);
	struct tramp *tr;
	int r;

	if (!real)
		real = (int (*)(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *))
			dlsym(RTLD_NEXT, "pthread_create");
	if (!real)
		abort();
	if (atomic_load(&fail_in) >= 0 && atomic_fetch_sub(&fail_in, 1) == 0)
		return EAGAIN;
	tr = malloc(sizeof(*tr));
	if (!tr)
		return EAGAIN;
	*tr = (struct tramp){ start, arg };
	r = real(th, attr, trampoline, tr);
	if (r)
		free(tr);
	else
		atomic_fetch_add(&created, 1);
	return r;
}

int pthread_join(pthread_t th, void **ret)
{
	static int (*real)(pthread_t, void **);
	int r;

	if (!real)
		real = (int (*)(pthread_t, void **))dlsym(RTLD_NEXT, "pthread_join");
	if (!real)
		abort();
	r = real(th, ret);
	if (!r)
		atomic_fetch_add(&joined, 1);
	return r;
}

/* What each index saw. Plain (not atomic) on purpose: each slot has one
 * writer, and the pool must make it visible to the caller after run, as
 * it must make round (written by the caller) visible to every index. */
struct record {
	unsigned round;            /* written by the caller before each run */
	unsigned nthreads;
	unsigned count[MAXN];      /* times idx ran */
	unsigned seen[MAXN];       /* round as idx saw it, last time it ran */
	pthread_t by[MAXN];        /* the thread that ran idx */
	atomic_uint bad_idx;       /* calls with idx >= nthreads */
};

static void record_fn(void *ctx, unsigned idx)
{
	struct record *rec = ctx;

	if (idx >= rec->nthreads) {
		atomic_fetch_add(&rec->bad_idx, 1);
		return;
	}
	/* Now and then one index is slow: run must still wait for it. */
	if (rec->round % 64 == 0 && idx == rec->round / 64 % rec->nthreads)
		usleep(2000);
	rec->by[idx] = pthread_self();
	rec->seen[idx] = rec->round;
	rec->count[idx]++;
}

static const unsigned thread_counts[] = { 1, 2, 16 };
#define NCOUNTS (sizeof(thread_counts) / sizeof(thread_counts[0]))

static void check_round(const struct record *rec, unsigned r)
{
	unsigned n = rec->nthreads;

	ck_assert_msg(atomic_load(&rec->bad_idx) == 0, "%u threads, round %u: fn called with idx >= %u",
		      n, r, n);
	for (unsigned i = 0; i < n; i++) {
		ck_assert_msg(rec->count[i] == r && rec->seen[i] == r,
			      "%u threads, round %u: index %u ran %u times, last in round %u",
			      n, r, i, rec->count[i], rec->seen[i]);
		for (unsigned j = 0; j < i; j++)
			ck_assert_msg(!pthread_equal(rec->by[i], rec->by[j]),
				      "%u threads, round %u: indexes %u and %u on one thread",
				      n, r, j, i);
	}
	ck_assert_msg(pthread_equal(rec->by[0], pthread_self()),
		      "%u threads, round %u: index 0 not run by the caller", n, r);
}

START_TEST(test_every_index_once_per_round)
{
	struct record rec = { .nthreads = thread_counts[_i] };
	struct scan_pool p;

	ck_assert_int_eq(scan_pool_init(&p, rec.nthreads, record_fn, &rec), 0);
	check_threads(rec.nthreads - 1, 0);
	for (unsigned r = 1; r <= ROUNDS; r++) {
		rec.round = r;
		scan_pool_run(&p);
		check_round(&rec, r);
	}
	scan_pool_fini(&p);
	check_threads(rec.nthreads - 1, rec.nthreads - 1);
}
END_TEST

START_TEST(test_fini_after_zero_rounds)
{
	struct record rec = { .nthreads = thread_counts[_i] };
	struct scan_pool p;

	ck_assert_int_eq(scan_pool_init(&p, rec.nthreads, record_fn, &rec), 0);
	scan_pool_fini(&p);
	check_threads(rec.nthreads - 1, rec.nthreads - 1);
	for (unsigned i = 0; i < rec.nthreads; i++)
		ck_assert_uint_eq(rec.count[i], 0);
}
END_TEST

START_TEST(test_init_refuses_bad_arguments)
{
	struct record rec = { .nthreads = 1 };
	struct scan_pool p;

	ck_assert_int_eq(scan_pool_init(&p, 0, record_fn, &rec), -EINVAL);
	ck_assert_int_eq(scan_pool_init(&p, 4, NULL, &rec), -EINVAL);
	check_threads(0, 0);
}
END_TEST

/* The k-th thread creation fails (k = _i): init says so and joins the k
 * threads it had started; none of them ever ran fn. */
START_TEST(test_init_failure_joins_what_it_started)
{
	struct record rec = { .nthreads = MAXN };
	struct scan_pool p;

	atomic_store(&fail_in, _i);
	ck_assert_int_eq(scan_pool_init(&p, MAXN, record_fn, &rec), -EAGAIN);
	atomic_store(&fail_in, -1);
	check_threads((unsigned)_i, (unsigned)_i);
	for (unsigned i = 0; i < MAXN; i++)
		ck_assert_uint_eq(rec.count[i], 0);
}
END_TEST

static void reset_counts(void)
{
	atomic_store(&created, 0);
	atomic_store(&joined, 0);
	atomic_store(&fail_in, -1);
}

static Suite *scan_pool_suite(void)
{
	Suite *s = suite_create("scan_pool");
	TCase *tc;

	tc = tcase_create("every_index_once_per_round");
	tcase_add_checked_fixture(tc, reset_counts, NULL);
	tcase_set_timeout(tc, 60);
	tcase_add_loop_test(tc, test_every_index_once_per_round, 0, (int)NCOUNTS);
	suite_add_tcase(s, tc);

	tc = tcase_create("fini_after_zero_rounds");
	tcase_add_checked_fixture(tc, reset_counts, NULL);
	tcase_add_loop_test(tc, test_fini_after_zero_rounds, 0, (int)NCOUNTS);
	suite_add_tcase(s, tc);

	tc = tcase_create("init_refuses_bad_arguments");
	tcase_add_checked_fixture(tc, reset_counts, NULL);
	tcase_add_test(tc, test_init_refuses_bad_arguments);
	suite_add_tcase(s, tc);

	/* Failing the first, second, a middle and the last creation. */
	tc = tcase_create("init_failure_joins_what_it_started");
	tcase_add_checked_fixture(tc, reset_counts, NULL);
	tcase_add_loop_test(tc, test_init_failure_joins_what_it_started, 0, 2);
	tcase_add_loop_test(tc, test_init_failure_joins_what_it_started, 7, 8);
	tcase_add_loop_test(tc, test_init_failure_joins_what_it_started, MAXN - 2, MAXN - 1);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(scan_pool_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
