/* A ring of the most recent samples (pause times, delays), with
 * quantiles: figures for status output. */
#ifndef REMUS_RING_H
#define REMUS_RING_H

#include <stddef.h>

#define STATS_RING 1024

struct sample_ring {
	double v[STATS_RING];
	size_t n, next;
};

void ring_add(struct sample_ring *r, double v);
/* Forget every sample. */
void ring_clear(struct sample_ring *r);
/* q in [0,1]; 0 when empty. */
double ring_quantile(const struct sample_ring *r, double q);
double ring_max(const struct sample_ring *r);
double ring_mean(const struct sample_ring *r);

#endif
