/* A one-shot timer on a libev loop that keeps sub-millisecond delays.
 *
 * libev's epoll backend waits whole milliseconds and rounds every timeout
 * up to one (its backend_mintime), so an ev_timer of 0.5 ms fires after
 * about 1.2 ms. A reply's quiet (EPOCH_REPLY_QUIET_MS) is that short on
 * purpose: every reply waits for it before its pause. This timer is a
 * timerfd on CLOCK_MONOTONIC watched by an ev_io, which epoll wakes for
 * when the kernel's hrtimer fires. */
#ifndef REMUS_FINE_TIMER_H
#define REMUS_FINE_TIMER_H

#include <ev.h>
#include <stdbool.h>

struct fine_timer {
	ev_io io; /* on the timerfd; active while armed */
	bool open; /* has a timerfd: a zeroed timer is safe to stop and close */
	void (*cb)(struct fine_timer *t);
	void *data;
};

/* -errno if no timerfd can be made. */
int fine_timer_init(struct fine_timer *t, void (*cb)(struct fine_timer *t), void *data);
/* (Re)arms it to fire once, `after_ms` from now (0 or less: at the
 * loop's next turn); an expiry not yet handed out is dropped. Does
 * nothing to a timer whose init failed or that is closed. */
void fine_timer_start(struct ev_loop *loop, struct fine_timer *t, double after_ms);
void fine_timer_stop(struct ev_loop *loop, struct fine_timer *t);
/* Armed: it has not expired since it was started (an expiry queued in
 * this turn of the loop, its callback not run yet, is not armed). */
bool fine_timer_armed(const struct fine_timer *t);
/* Armed, or fired with its callback still to run in this turn. */
bool fine_timer_scheduled(const struct fine_timer *t);
/* Stops it and closes its timerfd; init may run again. */
void fine_timer_close(struct ev_loop *loop, struct fine_timer *t);

#endif
