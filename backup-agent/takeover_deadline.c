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

bool takeover_deadline_tick(struct takeover_deadline *d, double now)
{
	bool stalled = d->seen_ms > 0 && now - d->seen_ms > d->heartbeat_ms + STALL_SLACK_MS;

	if (stalled) {
		d->stall_from_ms = d->seen_ms;
		d->stall_to_ms = now;
	}
	if (now > d->seen_ms)
		d->seen_ms = now;
	return stalled;
}

double takeover_deadline_anchor(const struct takeover_deadline *d, double heard)
{
	/* Heard after the stall began, while catching up on what waited in
	 * the socket: it may have waited there since the stall began. Nothing
	 * is read during a stall, so heard cannot fall inside it. */
	if (d->stall_to_ms > 0 && heard >= d->stall_from_ms &&
	    heard <= d->stall_to_ms + d->timeout_ms)
		return d->stall_from_ms;
	return heard;
}

double takeover_deadline_left(double anchor, double now, unsigned takeover_after_ms)
{
	return anchor + takeover_after_ms + PROTO_TAKEOVER_MARGIN_MS - now;
}
