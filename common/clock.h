/* Monotonic time in milliseconds, for pause times, deadlines and delays. */
#ifndef REMUS_CLOCK_H
#define REMUS_CLOCK_H

#include <time.h>

static inline double mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

#endif
