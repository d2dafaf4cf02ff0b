/* Outgoing frames waiting for a non-blocking socket. Page payloads are
 * referenced in place (the sender guarantees they stay put until written),
 * so a checkpoint is never copied twice. */
#ifndef REMUS_FRAME_QUEUE_H
#define REMUS_FRAME_QUEUE_H

#include "proto.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

struct out_frame;

struct frame_queue {
	struct out_frame *head, **tail;
	size_t frames;
	uint64_t bytes_queued; /* not yet written */
	uint64_t bytes_sent;   /* total written, for throughput */
};

void frame_queue_init(struct frame_queue *q);
/* Queue one frame. owned (may be NULL) is freed once the frame is written
 * or dropped. The payload CRC goes to *crc_out if not NULL. 0 or -ENOMEM
 * (owned is freed then too). */
int frame_queue_push(struct frame_queue *q, unsigned type, uint64_t epoch,
		     const struct iovec *payload, int iovcnt, void *owned,
		     uint32_t *crc_out);
/* Write as much as fd takes. 1: queue empty; 0: fd would block; -errno. */
int frame_queue_flush(struct frame_queue *q, int fd);
/* The same, writing through io. */
int frame_queue_flush_io(struct frame_queue *q, const struct link_io *io);
/* Drop every frame not yet begun (a frame partly written stays: the peer
 * must not see half of it followed by something else; keep_head: the head
 * stays anyway, a writer below holds some of it). For last words that
 * must not wait behind a checkpoint nobody needs any more. */
void frame_queue_drop_unsent(struct frame_queue *q, bool keep_head);
void frame_queue_clear(struct frame_queue *q);

#endif
