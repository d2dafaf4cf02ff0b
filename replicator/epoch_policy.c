#include "epoch_policy.h"

#include <stdio.h>
#include <string.h>

/* Weight of the newest epoch in the running averages: follows a change in
 * the workload within a few epochs without jumping at every outlier. */
#define EWMA_NEW 0.3

static const char *const names[] = {
	[POLICY_FIXED] = "fixed",
	[POLICY_DIRTY_RATE] = "dirty-rate",
	[POLICY_OUTPUT_AWARE] = "output-aware",
	[POLICY_HYBRID] = "hybrid",
};

const char *epoch_policy_name(enum epoch_policy_kind k)
{
	return names[k];
}

int epoch_policy_parse(const char *name, enum epoch_policy_kind *out)
{
	for (unsigned i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (!strcmp(name, names[i])) {
			*out = (enum epoch_policy_kind)i;
			return 0;
		}
	return -1;
}

static double clamp(double v, double lo, double hi)
{
	return v < lo ? lo : v > hi ? hi : v;
}

static double ewma(double old, double now, bool first)
{
	return first ? now : old + EWMA_NEW * (now - old);
}

void epoch_policy_init(struct epoch_policy *p, const struct epoch_policy_cfg *cfg)
{
	memset(p, 0, sizeof(*p));
	p->cfg = *cfg;
	p->vcpu_busy = 1;
	switch (cfg->kind) {
	case POLICY_OUTPUT_AWARE:
	case POLICY_HYBRID:
		p->length_ms = cfg->max_ms;
		snprintf(p->reason, sizeof(p->reason), "%s: while nothing waits, the longest epoch",
			 names[cfg->kind]);
		break;
	default:
		p->length_ms = clamp(cfg->fixed_ms, cfg->min_ms, cfg->max_ms);
		snprintf(p->reason, sizeof(p->reason), "%s: %s", names[cfg->kind],
			 cfg->kind == POLICY_FIXED ? "--epoch-ms" : "no epochs measured yet");
	}
	if (cfg->kind == POLICY_FIXED)
		p->length_ms = cfg->fixed_ms;
}

/* The dirty-rate choice:
 *  - the pause costs about pause_ms per epoch, whatever its length (the
 *    compare tracker scans all of RAM), so the pause's share of the VM's
 *    time is pause / (L + pause); keeping it under max_overhead needs
 *    L >= pause * (1 - f) / f;
 *  - the checkpoint of an epoch of length L holds about rate * L pages,
 *    which the link must carry within about one epoch or the next barrier
 *    waits for the ack: L >= bytes(L) / link, which holds for any L when
 *    the link outruns the dirty rate and for none when it does not; in
 *    that case the longest epoch makes the most of the hot pages written
 *    again and again.
 * The shortest length meeting both keeps output delays and the loss window
 * small. */
static void choose_dirty_rate(struct epoch_policy *p)
{
	const struct epoch_policy_cfg *c = &p->cfg;
	double f = c->max_overhead;
	double need = p->pause_ms * (1 - f) / f;
	double bytes_per_ms = p->dirty_pages_per_ms * p->bytes_per_page;

	if (p->link_bytes_per_ms > 0 && bytes_per_ms > p->link_bytes_per_ms) {
		p->length_ms = c->max_ms;
		snprintf(p->reason, sizeof(p->reason),
			 "dirty-rate: %.0f MB/s dirty outruns the link (%.0f MB/s): longest epoch",
			 bytes_per_ms / 1e3, p->link_bytes_per_ms / 1e3);
		return;
	}
	p->length_ms = clamp(need, c->min_ms, c->max_ms);
	snprintf(p->reason, sizeof(p->reason),
		 "dirty-rate: pause %.1f ms, %.0f%% overhead at most, %.0f MB/s dirty%s",
		 p->pause_ms, f * 100, bytes_per_ms / 1e3,
		 need < c->min_ms ? " (at the minimum)" : need > c->max_ms ? " (at the maximum)" : "");
}

/* Under output pressure an epoch of the hybrid runs at least as long as
 * its pause scaled by how saturated the vCPUs were while the VM ran: no
 * floor up to HYBRID_BUSY_FREE of their run time busy, the whole pause at
 * HYBRID_BUSY_FULL, in proportion between:
 *  - saturated vCPUs (a VM with work of its own, which each pause takes
 *    from it): epochs at least as long as the pause keep that to half of
 *    its time, as a fixed floor did;
 *  - vCPUs with time to spare: the VM does all of its work in the time it
 *    runs, and loses nothing to a pause but the pause itself, so a waiting
 *    reply ends the epoch at once and goes out after one pause and one ack.
 *    A server answering requests in short epochs is busy for a good part
 *    of each (the request's own work), hence the free band up to 3/4.
 *    As the VM gets busier its epochs lengthen with it (the simulation in
 *    tests/check_epoch_policy.c: a VM needing 40% of a CPU settles at about
 *    half of its time paused with all of its work done).
 * --epoch-min-ms plays no part here: it would add a minimum epoch to
 * every reply's wait (docs/EPOCHS.md). */
#define HYBRID_BUSY_FREE 0.75
#define HYBRID_BUSY_FULL 1.0

static double hybrid_floor(const struct epoch_policy *p)
{
	double scale = (p->vcpu_busy - HYBRID_BUSY_FREE) / (HYBRID_BUSY_FULL - HYBRID_BUSY_FREE);

	return p->pause_ms * clamp(scale, 0, 1);
}

void epoch_policy_observe(struct epoch_policy *p, const struct epoch_sample *s)
{
	bool first = !p->have_samples;

	if (s->run_ms <= 0)
		return;
	p->pause_ms = ewma(p->pause_ms, s->pause_ms, first);
	p->dirty_pages_per_ms = ewma(p->dirty_pages_per_ms, s->dirty_pages / s->run_ms, first);
	p->vcpu_busy = ewma(p->vcpu_busy, s->vcpu_busy_known ? clamp(s->vcpu_busy, 0, 1) : 1,
			    first);
	if (s->dirty_pages)
		p->bytes_per_page = ewma(p->bytes_per_page,
					 (double)s->checkpoint_bytes / (double)s->dirty_pages,
					 p->bytes_per_page == 0);
	if (s->link_bytes_per_s > 0)
		p->link_bytes_per_ms = ewma(p->link_bytes_per_ms, s->link_bytes_per_s / 1e3,
					    p->link_bytes_per_ms == 0);
	p->have_samples = true;
	switch (p->cfg.kind) {
	case POLICY_FIXED:
	case POLICY_OUTPUT_AWARE:
		break; /* their quiet length does not depend on the samples */
	case POLICY_DIRTY_RATE:
		choose_dirty_rate(p);
		break;
	case POLICY_HYBRID:
		/* Quiet, nobody waits for the epoch: the longest one pays the
		 * pause least often. Output cuts it short (see the deadline),
		 * not below hybrid_floor. */
		choose_dirty_rate(p);
		p->length_ms = p->cfg.max_ms;
		snprintf(p->reason, sizeof(p->reason),
			 "hybrid: %.0f ms while nothing waits; output ends it after %.1f ms at least "
			 "(pause %.1f ms, vCPUs %.0f%% busy)", p->length_ms, hybrid_floor(p),
			 p->pause_ms, p->vcpu_busy * 100);
		break;
	}
}

bool epoch_policy_output_driven(const struct epoch_policy *p)
{
	return p->cfg.kind == POLICY_OUTPUT_AWARE || p->cfg.kind == POLICY_HYBRID;
}

bool epoch_policy_reply_extends(const struct epoch_policy *p, double output_since_ms,
				double now_ms, double busy)
{
	if (output_since_ms < 0 || !epoch_policy_output_driven(p))
		return false; /* no reply ends their epochs */
	/* unknown load: end it, as a quiet VM would want */
	return busy >= EPOCH_REPLY_BUSY &&
	       now_ms + EPOCH_REPLY_QUIET_MS <= epoch_policy_deadline(p, output_since_ms, -1);
}

double epoch_policy_deadline(const struct epoch_policy *p, double output_since_ms,
			     double reply_at_ms)
{
	const struct epoch_policy_cfg *c = &p->cfg;
	double early;

	if (output_since_ms < 0 || !epoch_policy_output_driven(p))
		return p->length_ms;
	/* Output waits: end soon after it started waiting (sooner once a
	 * reply has gone quiet), but not before the floor (output-aware:
	 * --epoch-min-ms; hybrid: hybrid_floor), never later than the quiet
	 * length. */
	early = output_since_ms + c->output_delay_ms;
	if (reply_at_ms >= 0 && reply_at_ms + EPOCH_REPLY_QUIET_MS < early)
		early = reply_at_ms + EPOCH_REPLY_QUIET_MS;
	if (c->kind == POLICY_HYBRID && early < hybrid_floor(p))
		early = hybrid_floor(p);
	if (c->kind == POLICY_OUTPUT_AWARE && early < c->min_ms)
		early = c->min_ms;
	return early < p->length_ms ? early : p->length_ms;
}
