/* When the soft-dirty log pays for a clear (lazy_clear.h). */
#include "lazy_clear.h"

bool lazy_clear_due(const struct lazy_clear *m)
{
	double n = m->scans, g = m->growth_ns;

	if (m->clear_ns <= 0 || m->compare_ns <= 0)
		return true; /* nothing to weigh yet */
	if (m->cleared_at_once >= LAZY_CLEAR_PROBE_AFTER)
		return false; /* once, to see g again */
	/* this is scan n + 1 since the clear: it wastes n * g whatever it
	 * does, the next (n + 1) * g unless this one clears */
	return m->waste_ns + n * g + (n + 1) * g >= m->clear_ns;
}

static double smooth(double old, double now)
{
	return old <= 0 ? now : old + 0.3 * (now - old);
}

void lazy_clear_learn(struct lazy_clear *m, const struct lazy_clear_sample *s)
{
	double waste, excess;

	if (!s->full && s->compared)
		m->compare_ns = smooth(m->compare_ns, s->compare_ns / (double)s->compared);
	waste = (double)s->flagged_same * m->compare_ns;
	m->scans++;
	/* (the first scan's log ran from before the full copy: no base) */
	if (!s->full && m->scans == 1 && m->cleared_by_scan)
		m->base_ns = smooth(m->base_ns, waste);
	/* what not clearing cost: over what a fresh log wastes too */
	excess = waste > m->base_ns ? waste - m->base_ns : 0;
	/* the m-th scan since the clear wastes (m - 1) * g more */
	if (!s->full && m->scans >= 2)
		m->growth_ns = smooth(m->growth_ns, excess / (m->scans - 1));
	if (!s->cleared) {
		m->waste_ns += excess;
		m->cleared_at_once = 0;
		return;
	}
	m->clear_ns = smooth(m->clear_ns, s->clear_ns);
	m->cleared_by_scan = true;
	m->cleared_at_once = m->scans == 1 ? m->cleared_at_once + 1 : 0;
	/* this scan's compares came before its clear: the new log is empty */
	m->waste_ns = 0;
	m->scans = 0;
}

void lazy_clear_restart(struct lazy_clear *m)
{
	m->waste_ns = 0;
	m->scans = 0;
	m->cleared_at_once = 0;
	/* the first scan's log runs from before the copy: no base */
	m->cleared_by_scan = false;
}
