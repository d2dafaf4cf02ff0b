#include "frame_queue.h"

#include <endian.h>
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

struct out_frame {
	struct out_frame *next;
	void *owned;
	int iovcnt;          /* entries left in iov, from first */
	int first;
	bool started;        /* some of it is on the wire: it must go out whole */
	uint8_t hdr[PROTO_HDR_SIZE];
	struct iovec iov[];  /* [0] header, then the payload pieces */
};

void frame_queue_init(struct frame_queue *q)
{
	memset(q, 0, sizeof(*q));
	q->tail = &q->head;
}

int frame_queue_push(struct frame_queue *q, unsigned type, uint64_t epoch,
		     const struct iovec *payload, int iovcnt, void *owned,
		     uint32_t *crc_out)
{
	struct out_frame *f = malloc(sizeof(*f) + sizeof(struct iovec) * (iovcnt + 1));

	if (!f) {
		free(owned);
		return -ENOMEM;
	}
	proto_encode_hdr(f->hdr, type, epoch, payload, iovcnt);
	f->next = NULL;
	f->owned = owned;
	f->first = 0;
	f->started = false;
	f->iovcnt = iovcnt + 1;
	f->iov[0].iov_base = f->hdr;
	f->iov[0].iov_len = PROTO_HDR_SIZE;
	if (iovcnt)
		memcpy(f->iov + 1, payload, sizeof(struct iovec) * iovcnt);
	for (int i = 0; i < f->iovcnt; i++)
		q->bytes_queued += f->iov[i].iov_len;
	if (crc_out) {
		uint32_t crc;
		memcpy(&crc, f->hdr + 20, 4);
		*crc_out = be32toh(crc);
	}
	*q->tail = f;
	q->tail = &f->next;
	q->frames++;
	return 0;
}

static void frame_free(struct out_frame *f)
{
	free(f->owned);
	free(f);
}

static void pop_head(struct frame_queue *q)
{
	struct out_frame *f = q->head;

	q->head = f->next;
	if (!q->head)
		q->tail = &q->head;
	q->frames--;
	frame_free(f);
}

/* Advance the head frame's iovecs past n written bytes, and past empty
 * pieces, which sendmsg never reports as written. */
static void consume(struct out_frame *f, size_t n)
{
	while (f->iovcnt) {
		struct iovec *v = &f->iov[f->first];
		if (n < v->iov_len) {
			v->iov_base = (char *)v->iov_base + n;
			v->iov_len -= n;
			return;
		}
		n -= v->iov_len;
		f->first++;
		f->iovcnt--;
	}
}

int frame_queue_flush(struct frame_queue *q, int fd)
{
	struct link_io io;

	link_io_plain(&io, &fd);
	return frame_queue_flush_io(q, &io);
}

int frame_queue_flush_io(struct frame_queue *q, const struct link_io *io)
{
	while (q->head) {
		struct out_frame *f = q->head;
		ssize_t n = io->send(io->ctx, f->iov + f->first, f->iovcnt);

		if (n == -EAGAIN)
			return 0;
		if (n < 0)
			return (int)n;
		q->bytes_queued -= (size_t)n;
		q->bytes_sent += (size_t)n;
		f->started = f->started || n > 0;
		consume(f, (size_t)n);
		if (!f->iovcnt)
			pop_head(q);
	}
	return 1;
}

void frame_queue_drop_unsent(struct frame_queue *q, bool keep_head)
{
	bool head_stays = q->head && (q->head->started || keep_head);
	struct out_frame **keep = head_stays ? &q->head->next : &q->head;

	while (*keep) {
		struct out_frame *f = *keep;

		*keep = f->next;
		for (int i = f->first; i < f->first + f->iovcnt; i++)
			q->bytes_queued -= f->iov[i].iov_len;
		q->frames--;
		frame_free(f);
	}
	q->tail = keep;
}

void frame_queue_clear(struct frame_queue *q)
{
	while (q->head)
		pop_head(q);
	q->bytes_queued = 0;
}
