/* When a backup may still take over from a lost primary, counted on a
 * clock that keeps running while this agent does not.
 *
 * The agent tells the primary (HELLO_REPLY "takeover_after_ms") how long
 * after it last heard from it it may fence it and restore the VM; the
 * primary holds its output that long, plus two of its heartbeats and
 * PROTO_TAKEOVER_MARGIN_MS, after it last heard from us, then releases it
 * and runs on unprotected. A takeover later than that rolls back output
 * that clients have seen, and with a spare host, may run a second copy of
 * the VM.
 *
 * Our silence counts too: while this agent's loop does not run (SIGSTOP,
 * a suspended host, starvation, or a long piece of work of its own), the
 * primary hears no heartbeat from us and its clock runs, while ours sees
 * nothing. Bytes read when the loop runs again may have waited in the
 * socket since any time in that gap, and an EOF behind them may be a
 * primary that gave up on us long ago. So a gap in the loop longer than a
 * heartbeat and 500 ms is a stall, and a primary heard while catching up
 * after it (until the link was first found drained after the stall, and
 * the agent's timeout more: what the primary's kernel still held comes in
 * right after) counts as heard when the stall began. A stall that starts
 * before the last one was caught up on extends it. Times are
 * CLOCK_BOOTTIME milliseconds (clock.h boot_ms): they run on through a
 * suspend and never step. */
#ifndef REMUS_TAKEOVER_DEADLINE_H
#define REMUS_TAKEOVER_DEADLINE_H

#include <stdbool.h>

struct takeover_deadline {
	unsigned heartbeat_ms, timeout_ms;
	double seen_ms;                  /* the loop last ran; 0: not yet */
	double gap_from_ms;              /* where the latest stall's own gap began */
	double stall_from_ms, stall_to_ms; /* the latest stall; 0, 0: none */
	double caught_up_ms;             /* the link first drained after it; 0: not yet */
};

void takeover_deadline_init(struct takeover_deadline *d, unsigned heartbeat_ms,
			    unsigned timeout_ms);
/* The loop runs at now. True when this ends a stall (stall_from_ms,
 * stall_to_ms say which): the caller says so. */
bool takeover_deadline_tick(struct takeover_deadline *d, double now);
/* The primary's link was last found with nothing to read at drained. */
void takeover_deadline_drained(struct takeover_deadline *d, double drained);
/* The time to count a takeover's window from, for a primary last heard at
 * heard: heard, or the start of a stall that heard came in the catch-up
 * of. */
double takeover_deadline_anchor(const struct takeover_deadline *d, double heard);
/* The time by which a takeover counted from anchor must be done, the
 * fence included, before the primary may release output: takeover_after_ms
 * plus PROTO_TAKEOVER_MARGIN_MS, less two of our heartbeats (how long
 * before anchor our last one may have gone out; the primary's own two
 * heartbeats of margin are not counted on, so the sides' intervals may
 * differ). */
double takeover_deadline_by(const struct takeover_deadline *d, double anchor,
			    unsigned takeover_after_ms);

#endif
