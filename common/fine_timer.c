/* A one-shot sub-millisecond timer on a libev loop: fine_timer.h. */
#include "fine_timer.h"

#include <errno.h>
#include <stdint.h>
#include <sys/timerfd.h>
#include <unistd.h>

static void on_expired(struct ev_loop *loop, ev_io *w, int revents)
{
	struct fine_timer *t = w->data;
	uint64_t expirations;

	/* Nothing to read: it was re-armed or stopped after it became
	 * readable in this turn (timerfd_settime clears the count). */
	if (read(w->fd, &expirations, sizeof(expirations)) != (ssize_t)sizeof(expirations))
		return;
	ev_io_stop(loop, w);
	t->cb(t);
}

int fine_timer_init(struct fine_timer *t, void (*cb)(struct fine_timer *t), void *data)
{
	int fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);

	if (fd < 0)
		return -errno;
	ev_io_init(&t->io, on_expired, fd, EV_READ);
	t->io.data = t;
	t->open = true;
	t->cb = cb;
	t->data = data;
	return 0;
}

static void set(const struct fine_timer *t, long long ns)
{
	struct itimerspec when = {
		.it_value = { .tv_sec = ns / 1000000000, .tv_nsec = ns % 1000000000 },
	};

	/* Cannot fail on a timerfd of ours with a valid time. */
	(void)timerfd_settime(t->io.fd, 0, &when, NULL);
}

void fine_timer_start(struct ev_loop *loop, struct fine_timer *t, double after_ms)
{
	/* an it_value of zero would disarm it: 1 ns is "now" */
	long long ns = after_ms > 0 ? (long long)(after_ms * 1e6) : 0;

	if (!t->open)
		return;
	set(t, ns > 0 ? ns : 1);
	ev_clear_pending(loop, &t->io);
	ev_io_start(loop, &t->io);
}

void fine_timer_stop(struct ev_loop *loop, struct fine_timer *t)
{
	if (!t->open)
		return;
	set(t, 0);
	ev_io_stop(loop, &t->io); /* drops a queued expiry too */
}

bool fine_timer_armed(const struct fine_timer *t)
{
	/* the io stays active while its expiry waits in this turn's queue */
	return ev_is_active(&t->io) && !ev_is_pending(&t->io);
}

bool fine_timer_scheduled(const struct fine_timer *t)
{
	return ev_is_active(&t->io) || ev_is_pending(&t->io);
}

void fine_timer_close(struct ev_loop *loop, struct fine_timer *t)
{
	if (!t->open)
		return;
	fine_timer_stop(loop, t);
	close(t->io.fd);
	t->open = false;
}
