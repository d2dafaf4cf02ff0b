#include "ring.h"

#include <stdlib.h>
#include <string.h>

void ring_add(struct sample_ring *r, double v)
{
	r->v[r->next] = v;
	r->next = (r->next + 1) % STATS_RING;
	if (r->n < STATS_RING)
		r->n++;
}

void ring_clear(struct sample_ring *r)
{
	r->n = 0;
	r->next = 0;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

double ring_quantile(const struct sample_ring *r, double q)
{
	double sorted[STATS_RING];
	size_t i;

	if (!r->n)
		return 0;
	memcpy(sorted, r->v, r->n * sizeof(double));
	qsort(sorted, r->n, sizeof(double), cmp_double);
	i = (size_t)(q * (double)(r->n - 1) + 0.5);
	return sorted[i < r->n ? i : r->n - 1];
}

double ring_max(const struct sample_ring *r)
{
	double m = 0;

	for (size_t i = 0; i < r->n; i++)
		if (r->v[i] > m)
			m = r->v[i];
	return m;
}

double ring_mean(const struct sample_ring *r)
{
	double s = 0;

	for (size_t i = 0; i < r->n; i++)
		s += r->v[i];
	return r->n ? s / (double)r->n : 0;
}
