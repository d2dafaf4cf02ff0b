/* libvirt's event loop hooks on the daemon's own libev loop.
 *
 * A libvirt client needs an event loop for its keepalive pings, for
 * noticing that libvirtd went away, and for domain events (the QMP events
 * we subscribe to). libvirt lets the application supply the loop
 * (virEventRegisterImpl); doing that keeps one loop per daemon instead of
 * a second thread running libvirt's default loop.
 *
 * Rules from libvirt's docs that shape this file: handle and timer ids are
 * positive ints chosen by us; a timeout of -1 disables a timer, 0 fires it
 * on every loop iteration, N > 0 every N ms; and the free callback of a
 * removed handle or timer must not run inside the remove call (libvirt may
 * hold a lock there), so it runs from the next loop iteration. libvirt's
 * client only calls these from the thread that calls its API, which is
 * the loop's thread here.
 */
#include "virt.h"
#include "log.h"

#include <ev.h>
#include <libvirt/libvirt.h>
#include <stdbool.h>
#include <stdlib.h>

#define VIRT_EV_MAX 64

struct virt_handle {
	bool used, removed;
	int fd;
	ev_io io;
	virEventHandleCallback cb;
	void *opaque;
	virFreeCallback ff;
};

struct virt_timer {
	bool used, removed;
	int ms;
	ev_timer t;
	virEventTimeoutCallback cb;
	void *opaque;
	virFreeCallback ff;
};

static struct ev_loop *loop;
static struct virt_handle handles[VIRT_EV_MAX];
static struct virt_timer timers[VIRT_EV_MAX];
static ev_prepare reaper;

static int to_ev(int events)
{
	return (events & VIR_EVENT_HANDLE_READABLE ? EV_READ : 0) |
	       (events & VIR_EVENT_HANDLE_WRITABLE ? EV_WRITE : 0);
}

static void on_io(struct ev_loop *l, ev_io *w, int revents)
{
	struct virt_handle *h = w->data;
	int events = (revents & EV_READ ? VIR_EVENT_HANDLE_READABLE : 0) |
		     (revents & EV_WRITE ? VIR_EVENT_HANDLE_WRITABLE : 0);

	h->cb((int)(h - handles) + 1, h->fd, events, h->opaque);
}

static void on_timer(struct ev_loop *l, ev_timer *w, int revents)
{
	struct virt_timer *t = w->data;

	t->cb((int)(t - timers) + 1, t->opaque);
}

/* Free callbacks of removed entries, one iteration after their removal. */
static void reap(struct ev_loop *l, ev_prepare *w, int revents)
{
	for (int i = 0; i < VIRT_EV_MAX; i++) {
		if (handles[i].used && handles[i].removed) {
			if (handles[i].ff)
				handles[i].ff(handles[i].opaque);
			handles[i].used = false;
		}
		if (timers[i].used && timers[i].removed) {
			if (timers[i].ff)
				timers[i].ff(timers[i].opaque);
			timers[i].used = false;
		}
	}
}

static int add_handle(int fd, int events, virEventHandleCallback cb, void *opaque,
		      virFreeCallback ff)
{
	for (int i = 0; i < VIRT_EV_MAX; i++) {
		struct virt_handle *h = &handles[i];

		if (h->used)
			continue;
		*h = (struct virt_handle){ .used = true, .fd = fd, .cb = cb,
					   .opaque = opaque, .ff = ff };
		ev_io_init(&h->io, on_io, fd, to_ev(events));
		h->io.data = h;
		if (to_ev(events))
			ev_io_start(loop, &h->io);
		return i + 1;
	}
	log_err("libvirt wants more than %d file watches", VIRT_EV_MAX);
	return -1;
}

static struct virt_handle *handle_of(int watch)
{
	if (watch < 1 || watch > VIRT_EV_MAX || !handles[watch - 1].used ||
	    handles[watch - 1].removed)
		return NULL;
	return &handles[watch - 1];
}

static void update_handle(int watch, int events)
{
	struct virt_handle *h = handle_of(watch);

	if (!h)
		return;
	ev_io_stop(loop, &h->io);
	ev_io_set(&h->io, h->fd, to_ev(events));
	if (to_ev(events))
		ev_io_start(loop, &h->io);
}

static int remove_handle(int watch)
{
	struct virt_handle *h = handle_of(watch);

	if (!h)
		return -1;
	ev_io_stop(loop, &h->io);
	h->removed = true;
	return 0;
}

static void arm_timer(struct virt_timer *t, int ms)
{
	ev_timer_stop(loop, &t->t);
	t->ms = ms;
	if (ms < 0)
		return;
	/* 0 means "every iteration": a 1 ms period is close enough and does
	 * not spin; libvirt sets it back to -1 once its queue is empty. */
	ev_timer_set(&t->t, ms ? ms / 1e3 : 1e-3, ms ? ms / 1e3 : 1e-3);
	ev_timer_start(loop, &t->t);
}

static int add_timeout(int ms, virEventTimeoutCallback cb, void *opaque, virFreeCallback ff)
{
	for (int i = 0; i < VIRT_EV_MAX; i++) {
		struct virt_timer *t = &timers[i];

		if (t->used)
			continue;
		*t = (struct virt_timer){ .used = true, .cb = cb, .opaque = opaque, .ff = ff };
		ev_init(&t->t, on_timer);
		t->t.data = t;
		arm_timer(t, ms);
		return i + 1;
	}
	log_err("libvirt wants more than %d timers", VIRT_EV_MAX);
	return -1;
}

static struct virt_timer *timer_of(int id)
{
	if (id < 1 || id > VIRT_EV_MAX || !timers[id - 1].used || timers[id - 1].removed)
		return NULL;
	return &timers[id - 1];
}

static void update_timeout(int id, int ms)
{
	struct virt_timer *t = timer_of(id);

	if (t)
		arm_timer(t, ms);
}

static int remove_timeout(int id)
{
	struct virt_timer *t = timer_of(id);

	if (!t)
		return -1;
	ev_timer_stop(loop, &t->t);
	t->removed = true;
	return 0;
}

void virt_events_init(struct ev_loop *l)
{
	if (loop)
		return;
	loop = l;
	ev_prepare_init(&reaper, reap);
	ev_prepare_start(loop, &reaper);
	/* The reaper alone must not keep ev_run() from returning. */
	ev_unref(loop);
	virEventRegisterImpl(add_handle, update_handle, remove_handle,
			     add_timeout, update_timeout, remove_timeout);
}

bool virt_events_ready(void)
{
	return loop != NULL;
}
