/* When a backup may still take over from a lost primary (takeover_deadline.h). */
#include "takeover_deadline.h"
#include "proto.h"

/* A gap in the loop's ticks this much longer than the heartbeat that
 * drives them is a stall: below it, timer jitter on a loaded host. */
#define STALL_SLACK_MS 500.0

void takeover_deadline_init(struct takeover_deadline *d, unsigned heartbeat_ms,
			    unsigned timeout_ms)
{
	*d = (struct takeover_deadline){ .heartbeat_ms = heartbeat_ms, .timeout_ms = timeout_ms };
}

/* Still catching up on the stall before at: what is heard then may have
 * waited since it began. */
static bool catching_up(const struct takeover_deadline *d, double at)
{
	return d->stall_to_ms > 0 && at >= d->stall_from_ms &&
	       (d->caught_up_ms == 0 || at <= d->caught_up_ms + d->timeout_ms);
}

bool takeover_deadline_tick(struct takeover_deadline *d, double now)
{
	bool stalled = d->seen_ms > 0 && now - d->seen_ms > d->heartbeat_ms + STALL_SLACK_MS;

	if (stalled) {
		d->gap_from_ms = d->seen_ms;
		/* a stall in the catch-up of the one before only makes it longer */
		if (!catching_up(d, d->seen_ms))
			d->stall_from_ms = d->seen_ms;
		d->stall_to_ms = now;
		d->caught_up_ms = 0;
	}
	if (now > d->seen_ms)
		d->seen_ms = now;
	return stalled;
}

void takeover_deadline_drained(struct takeover_deadline *d, double drained)
{
	if (d->stall_to_ms > 0 && d->caught_up_ms == 0 && drained >= d->stall_to_ms)
		d->caught_up_ms = drained;
}

double takeover_deadline_anchor(const struct takeover_deadline *d, double heard)
{
	/* Nothing is read during a stall, so heard cannot fall inside it. */
	return catching_up(d, heard) ? d->stall_from_ms : heard;
}

double takeover_deadline_by(const struct takeover_deadline *d, double anchor,
			    unsigned takeover_after_ms)
{
	return anchor + takeover_after_ms + PROTO_TAKEOVER_MARGIN_MS - 2.0 * d->heartbeat_ms;
}
