/* When a soft-dirty scan should clear the log (tracker_softdirty.c).
 *
 * clear_refs walks all of QEMU's page tables, so its cost grows with RAM.
 * Leaving it out is sound: the log then holds every page written since
 * the last clear, and each flagged page is compared with the shadow. What
 * not clearing costs is compares of flagged pages that did not change
 * this epoch (written in an earlier one): the waste. Some pages are
 * flagged and unchanged even in a log cleared at the last scan (rewritten
 * with the bytes they held, as a guest kernel does with its own state):
 * that base is no waste of laziness, a clear would not save it. For a
 * writer that spreads its writes over more pages than an epoch rewrites,
 * the waste over the base grows scan by scan until the next clear: the
 * m-th scan after a clear wastes about (m - 1) * g more, g the waste a
 * scan adds.
 *
 * Clearing every T scans then costs C / T + g * (T - 1) / 2 a scan (C: one
 * clear), least at T = sqrt(2 C / g). So a scan clears when clearing now
 * costs less a scan than clearing at the next one: when the waste paid
 * since the last clear, this scan's and the next scan's (had this one not
 * cleared) add up to C. The base and g are learnt from what each scan
 * shows (the base from the first scan after a clear); while g is unknown
 * the rule is rent or buy (clear once the waste paid reaches C), which
 * never pays more than twice the best choice in hindsight.
 *
 * A writer that rewrites the same pages every epoch wastes nothing over
 * the base, so it never pays for a clear (and under KVM, where a clear
 * drops every guest mapping, its pages are not faulted in again). A
 * writer so spread that the log is cleared at every scan shows only the
 * base (g is not seen), so after LAZY_CLEAR_PROBE_AFTER such scans in a
 * row one scan leaves the log, to measure g again.
 *
 * Costs are measured by the tracker as it goes and smoothed; until both
 * are known every scan clears. */
#ifndef REMUS_LAZY_CLEAR_H
#define REMUS_LAZY_CLEAR_H

#include <stdbool.h>
#include <stdint.h>

#define LAZY_CLEAR_PROBE_AFTER 16

struct lazy_clear {
	double clear_ns;   /* one clear_refs, smoothed; 0 until measured */
	double compare_ns; /* one page compare, smoothed; 0 until measured */
	double base_ns;    /* the waste of the first scan after a clear, smoothed */
	double growth_ns;  /* g: the waste a scan adds, smoothed; 0 until seen */
	double waste_ns;   /* waste over the base since the last clear */
	unsigned scans;    /* since the last clear */
	unsigned cleared_at_once; /* clears in a row, each at the first scan after the last */
	bool cleared_by_scan; /* a scan cleared the log (else only the full copy did) */
};

/* Should this scan clear the log? */
bool lazy_clear_due(const struct lazy_clear *m);

/* What a scan measured. cleared: it cleared the log, which took clear_ns
 * (ignored otherwise). compared pages took compare_ns in all (0 pages: no
 * sample); flagged_same of them were flagged and found unchanged. A full
 * scan (every page compared, whatever the log said) is no sample of
 * compares. */
struct lazy_clear_sample {
	bool cleared, full;
	double clear_ns, compare_ns;
	uint64_t compared, flagged_same;
};
void lazy_clear_learn(struct lazy_clear *m, const struct lazy_clear_sample *s);

/* The log was cleared outside a scan (the full copy of a resync): the
 * costs stay, the count of scans since a clear starts again. */
void lazy_clear_restart(struct lazy_clear *m);

#endif
