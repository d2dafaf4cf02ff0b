#include "netbuf.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct netbuf_frame {
	struct netbuf_frame *next;
	uint64_t epoch;
	double queued_ms;
	size_t len;
	uint8_t data[];
};

void netbuf_init(struct netbuf *nb, size_t cap_bytes, netbuf_output_fn *out, void *opaque)
{
	memset(nb, 0, sizeof(*nb));
	nb->tail = &nb->head;
	nb->cap_bytes = cap_bytes;
	nb->out = out;
	nb->opaque = opaque;
	nb->open_epoch = 1;
}

static void pop_head(struct netbuf *nb)
{
	struct netbuf_frame *f = nb->head;

	nb->head = f->next;
	if (!nb->head)
		nb->tail = &nb->head;
	nb->frames--;
	nb->bytes -= f->len;
	free(f);
}

void netbuf_free(struct netbuf *nb)
{
	while (nb->head)
		pop_head(nb);
	nb->held = NULL;
	nb->held_frames = 0;
	nb->held_bytes = 0;
}

/* Mark frames releasable from `held` on while they belong to an epoch up
 * to `epoch`. */
static void unhold(struct netbuf *nb, uint64_t epoch)
{
	while (nb->held && nb->held->epoch <= epoch) {
		nb->held_frames--;
		nb->held_bytes -= nb->held->len;
		nb->held = nb->held->next;
	}
}

int netbuf_flush(struct netbuf *nb, double now_ms)
{
	while (nb->head && nb->head != nb->held) {
		struct netbuf_frame *f = nb->head;
		int rc = nb->out(nb->opaque, f->data, f->len);

		if (rc == -EAGAIN)
			return 0;
		if (rc < 0) {
			nb->st.dropped_output++;
		} else {
			nb->st.frames_out++;
			nb->st.bytes_out += f->len;
			ring_add(&nb->st.delay_ms, now_ms - f->queued_ms);
		}
		pop_head(nb);
	}
	return 1;
}

int netbuf_push(struct netbuf *nb, const uint8_t *frame, size_t len, double now_ms)
{
	struct netbuf_frame *f;

	if (len < NETBUF_MIN_FRAME) {
		nb->st.dropped_malformed++;
		return -EINVAL;
	}
	if (len > NETBUF_MAX_FRAME) {
		nb->st.dropped_oversized++;
		return -EMSGSIZE;
	}
	f = malloc(sizeof(*f) + len);
	if (!f)
		return -ENOMEM;
	memcpy(f->data, frame, len);
	f->len = len;
	f->epoch = nb->open_epoch;
	f->queued_ms = now_ms;
	f->next = NULL;
	*nb->tail = f;
	nb->tail = &f->next;
	nb->frames++;
	nb->bytes += len;
	nb->st.frames_in++;
	nb->st.bytes_in += len;
	if (nb->protected) {
		if (!nb->held)
			nb->held = f;
		nb->held_frames++;
		nb->held_bytes += len;
		if (nb->held_bytes > nb->st.high_water_bytes)
			nb->st.high_water_bytes = nb->held_bytes;
		return 0;
	}
	netbuf_flush(nb, now_ms);
	return 0;
}

bool netbuf_full(const struct netbuf *nb)
{
	/* Released frames behind a blocked output take memory too. */
	return nb->bytes >= nb->cap_bytes;
}

void netbuf_seal(struct netbuf *nb, uint64_t epoch)
{
	nb->open_epoch = epoch + 1;
}

int netbuf_release(struct netbuf *nb, uint64_t epoch, double now_ms)
{
	unhold(nb, epoch);
	return netbuf_flush(nb, now_ms);
}

void netbuf_set_protected(struct netbuf *nb, bool on, uint64_t next_epoch, double now_ms)
{
	if (on && nb->protected)
		return; /* what is held still waits for its own epoch */
	nb->protected = on;
	/* Whatever waits was produced before this change: with protection
	 * gone it must not wait for acks that will never come, and with a new
	 * backup its epoch numbers mean nothing any more. */
	unhold(nb, UINT64_MAX);
	nb->open_epoch = next_epoch;
	netbuf_flush(nb, now_ms);
}

void netbuf_forget_recent(struct netbuf *nb)
{
	ring_clear(&nb->st.delay_ms);
	nb->st.high_water_bytes = nb->held_bytes;
}
