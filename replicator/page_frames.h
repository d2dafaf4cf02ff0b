/* Guest pages onto the link: PAGES frames, or PAGES_Z while --compress is
 * active (compress.h). The memory device's epochs and initial copy and
 * verify's resends all go through here. */
#ifndef REMUS_PAGE_FRAMES_H
#define REMUS_PAGE_FRAMES_H

#include "ckpt_device.h"

#include <stddef.h>
#include <stdint.h>

struct ckpt_ctx;

/* Page i of the n to send: its number and its data, which stays untouched
 * until the frame is written (the tracker's staging). */
struct page_list {
	size_t n;
	uint64_t (*index)(const void *ctx, size_t i);
	const uint8_t *(*data)(const void *ctx, size_t i);
	const void *ctx;
	/* Send every page whole: the backup's copy may not be the one the
	 * delta cache holds (a resend after a NACK; a page sent twice). */
	bool no_delta;
};

/* Pages one call compresses at most (64 MiB, some 50 ms of the loop at
 * LZ4's speed here): a huge epoch must not keep the loop, and with it the
 * heartbeats and the net buffer, from turning; the rest goes plainly. */
#define PAGE_FRAMES_COMPRESS_MAX (16384u)

/* 0, or -ENOMEM / the link's error: the epoch cannot be queued. */
int page_frames_push(struct ckpt_ctx *cx, struct epoch_tally *t, const struct page_list *l);

#endif
