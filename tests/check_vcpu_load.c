/* The vCPU load the epoch policy reads: schedstat parsing, the thread list
 * from query-cpus-fast, and the busy fraction of real threads of ours
 * (one that spins, one that sleeps), checked against the kernel's own
 * per-thread CPU clock. */
#include "../replicator/vcpu_load.h"

#include <check.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static double mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

START_TEST(test_schedstat_first_field)
{
	uint64_t ns = 1;

	ck_assert_int_eq(vcpu_load_parse_schedstat("4049939 5706714 4\n", &ns), 0);
	ck_assert_uint_eq(ns, 4049939);
	ck_assert_int_eq(vcpu_load_parse_schedstat("0 0 0\n", &ns), 0);
	ck_assert_uint_eq(ns, 0);
	ck_assert_int_eq(vcpu_load_parse_schedstat("", &ns), -EINVAL);
	ck_assert_int_eq(vcpu_load_parse_schedstat("-5 1 1\n", &ns), -EINVAL);
	ck_assert_int_eq(vcpu_load_parse_schedstat("12x 1 1\n", &ns), -EINVAL);
	ck_assert_int_eq(vcpu_load_parse_schedstat("99999999999999999999999 1 1\n", &ns), -EINVAL);
	ck_assert_int_eq(vcpu_load_parse_schedstat(NULL, &ns), -EINVAL);
}
END_TEST

START_TEST(test_threads_from_query_cpus_fast)
{
	struct vcpu_load l;
	struct json_object *cpus = json_tokener_parse(
		"[{\"cpu-index\": 0, \"thread-id\": 101}, {\"cpu-index\": 1, \"thread-id\": 102},"
		" {\"cpu-index\": 2, \"thread-id\": 101}, {\"cpu-index\": 3, \"thread-id\": \"x\"},"
		" {\"cpu-index\": 4, \"thread-id\": -3}, {\"cpu-index\": 5}, 7]");

	ck_assert_ptr_nonnull(cpus);
	ck_assert_int_eq(vcpu_load_init(&l, 42, cpus), 0);
	/* TCG thread=single: one thread for several vCPUs, counted once;
	 * entries without a usable id are passed over */
	ck_assert_int_eq(l.nthreads, 2);
	ck_assert_int_eq(l.tids[0], 101);
	ck_assert_int_eq(l.tids[1], 102);
	json_object_put(cpus);

	cpus = json_tokener_parse("{\"return\": []}");
	ck_assert_int_eq(vcpu_load_init(&l, 42, cpus), -EINVAL);
	json_object_put(cpus);
	ck_assert_int_eq(vcpu_load_init(&l, 42, NULL), -EINVAL);
	/* unknown: no busy fraction, ever */
	vcpu_load_mark(&l, mono_ms());
	ck_assert(vcpu_load_busy(&l, mono_ms() + 10) < 0);
}
END_TEST

static atomic_bool stop_spinning;
static atomic_int spinner_tid;

static void *spin(void *arg)
{
	(void)arg;
	atomic_store(&spinner_tid, (int)syscall(SYS_gettid));
	while (!atomic_load(&stop_spinning))
		;
	return NULL;
}

static double thread_cpu_ms(clockid_t c)
{
	struct timespec ts;

	clock_gettime(c, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* One spinning thread and this one, sleeping: the spinner's busy fraction
 * equals what its CPU clock says (whatever share of a core the machine
 * gives it), this thread's is near 0. */
START_TEST(test_busy_fraction_of_real_threads)
{
	struct json_object *cpus;
	struct vcpu_load spinner, sleeper;
	pthread_t th;
	clockid_t clock;
	double t0, c0, t1, c1, busy;
	char json[128];

	if (access("/proc/self/schedstat", R_OK)) {
		/* CONFIG_SCHED_INFO off: the replicator then treats the vCPUs
		 * as busy (unknown), which the policy tests cover */
		printf("test_busy_fraction_of_real_threads: skipped: no /proc/self/schedstat "
		       "in this kernel\n");
		return;
	}
	atomic_store(&stop_spinning, false);
	ck_assert_int_eq(pthread_create(&th, NULL, spin, NULL), 0);
	while (!atomic_load(&spinner_tid))
		usleep(1000);
	ck_assert_int_eq(pthread_getcpuclockid(th, &clock), 0);

	snprintf(json, sizeof(json), "[{\"thread-id\": %d}]", atomic_load(&spinner_tid));
	cpus = json_tokener_parse(json);
	ck_assert_int_eq(vcpu_load_init(&spinner, getpid(), cpus), 0);
	json_object_put(cpus);
	snprintf(json, sizeof(json), "[{\"thread-id\": %d}]", (int)syscall(SYS_gettid));
	cpus = json_tokener_parse(json);
	ck_assert_int_eq(vcpu_load_init(&sleeper, getpid(), cpus), 0);
	json_object_put(cpus);

	ck_assert(vcpu_load_busy(&spinner, mono_ms()) < 0); /* no mark yet */
	t0 = mono_ms();
	c0 = thread_cpu_ms(clock);
	vcpu_load_mark(&spinner, t0);
	vcpu_load_mark(&sleeper, t0);
	usleep(200 * 1000);
	t1 = mono_ms();
	c1 = thread_cpu_ms(clock);
	busy = vcpu_load_busy(&spinner, t1);
	ck_assert_msg(busy > 0.05 && busy <= 1, "spinner busy %.3f", busy);
	ck_assert_msg(busy > (c1 - c0) / (t1 - t0) - 0.1 && busy < (c1 - c0) / (t1 - t0) + 0.1,
		      "spinner busy %.3f, its CPU clock says %.3f", busy, (c1 - c0) / (t1 - t0));
	busy = vcpu_load_busy(&sleeper, t1);
	ck_assert_msg(busy >= 0 && busy < 0.1, "sleeper busy %.3f", busy);

	atomic_store(&stop_spinning, true);
	ck_assert_int_eq(pthread_join(th, NULL), 0);
	/* the thread is gone: unknown, not 0 */
	ck_assert(vcpu_load_busy(&spinner, mono_ms() + 10) < 0);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("vcpu_load");
	TCase *tc = tcase_create("vcpu_load");
	SRunner *sr;
	int failed;

	tcase_set_timeout(tc, 10);
	tcase_add_test(tc, test_schedstat_first_field);
	tcase_add_test(tc, test_threads_from_query_cpus_fast);
	tcase_add_test(tc, test_busy_fraction_of_real_threads);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
