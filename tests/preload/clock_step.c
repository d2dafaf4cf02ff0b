/* LD_PRELOAD shim for the integration tests: a wall clock that steps, as
 * NTP's first sync, chrony's makestep or an operator's `date -s` make it
 * step, for one daemon alone (stepping this host's clock would move every
 * process on it).
 *
 * While the file named by REMUS_TEST_CLOCK_STEP holds a number of
 * seconds, CLOCK_REALTIME (and gettimeofday, time) reads that much later
 * (earlier, if negative). Read at most every 50 ms, so that the clock the
 * daemon reads steps once, not by a little at every call. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/time.h>
#include <time.h>

typedef int (*clock_gettime_fn)(clockid_t, struct timespec *);

static clock_gettime_fn real_clock_gettime(void)
{
	static clock_gettime_fn real;

	if (!real)
		real = (clock_gettime_fn)dlsym(RTLD_NEXT, "clock_gettime");
	return real;
}

/* The step now in force, in seconds. */
static double step_s(void)
{
	static double step, checked;
	const char *path = getenv("REMUS_TEST_CLOCK_STEP");
	struct timespec mono;
	FILE *f;

	if (!path || !*path || real_clock_gettime()(CLOCK_MONOTONIC, &mono))
		return 0;
	if (mono.tv_sec + mono.tv_nsec / 1e9 - checked < 0.05)
		return step;
	checked = mono.tv_sec + mono.tv_nsec / 1e9;
	step = 0;
	f = fopen(path, "re");
	if (f) {
		if (fscanf(f, "%lf", &step) != 1)
			step = 0;
		fclose(f);
	}
	return step;
}

static void shift(struct timespec *ts, double s)
{
	long long ns = ts->tv_nsec + (long long)((s - (long long)s) * 1e9);

	ts->tv_sec += (time_t)s + (ns >= 1000000000 ? 1 : ns < 0 ? -1 : 0);
	ts->tv_nsec = (long)(ns >= 1000000000 ? ns - 1000000000 : ns < 0 ? ns + 1000000000 : ns);
}

int clock_gettime(clockid_t clk, struct timespec *ts)
{
	int rc = real_clock_gettime()(clk, ts);

	if (!rc && (clk == CLOCK_REALTIME || clk == CLOCK_REALTIME_COARSE))
		shift(ts, step_s());
	return rc;
}

int gettimeofday(struct timeval *restrict tv, void *restrict tz)
{
	struct timespec ts;

	(void)tz;
	if (clock_gettime(CLOCK_REALTIME, &ts))
		return -1;
	tv->tv_sec = ts.tv_sec;
	tv->tv_usec = ts.tv_nsec / 1000;
	return 0;
}

time_t time(time_t *t)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	if (t)
		*t = ts.tv_sec;
	return ts.tv_sec;
}
