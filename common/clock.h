/* Monotonic time in milliseconds, for pause times, deadlines and delays;
 * wall-clock milliseconds for times shared with other processes. */
#ifndef REMUS_CLOCK_H
#define REMUS_CLOCK_H

#include <time.h>

static inline double mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* Milliseconds on CLOCK_BOOTTIME: monotonic, and running on while the
 * host is suspended, for how long this process did not run. */
static inline double boot_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_BOOTTIME, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* CPU time of the calling thread in milliseconds: what a piece of work
 * cost, however often the thread was preempted meanwhile. */
static inline double thread_cpu_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* Wall-clock time in milliseconds since the epoch, for times that other
 * processes compare (hook environments, drill reports). */
static inline long long unix_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* CLOCK_MONOTONIC `ms` from now, for pthread_cond_clockwait(...,
 * CLOCK_MONOTONIC, ...): a step of the wall clock moves no deadline. */
static inline struct timespec mono_deadline(unsigned ms)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	ts.tv_sec += ms / 1000;
	ts.tv_nsec += (long)(ms % 1000) * 1000000;
	if (ts.tv_nsec >= 1000000000) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000;
	}
	return ts;
}

#endif
