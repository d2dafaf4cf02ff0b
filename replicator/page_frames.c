/* Guest pages onto the link (page_frames.h). */
#include "page_frames.h"
#include "clock.h"
#include "proto.h"

#include <endian.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* A PAGES frame: its header in a buffer of ours, the page data referenced
 * where it is (no copy). */
static int push_plain(struct ckpt_ctx *cx, struct epoch_tally *t, const struct page_list *l,
		      size_t first, size_t k)
{
	struct iovec iov[1 + PROTO_PAGES_PER_FRAME];
	uint8_t *head = malloc(8 + 8 * k);
	uint32_t be_count = htobe32((uint32_t)k);

	if (!head)
		return -ENOMEM;
	memcpy(head, &be_count, 4);
	memset(head + 4, 0, 4);
	for (size_t i = 0; i < k; i++) {
		proto_put_be64(head + 8 + 8 * i, l->index(l->ctx, first + i));
		iov[1 + i].iov_base = (void *)l->data(l->ctx, first + i);
		iov[1 + i].iov_len = PROTO_PAGE_SIZE;
	}
	iov[0] = (struct iovec){ .iov_base = head, .iov_len = 8 + 8 * k };
	return epoch_push_frame(cx, t, FRAME_PAGES, iov, (int)(k + 1), head);
}

/* A PAGES_Z frame if it comes out smaller, else a PAGES frame. */
static int push_compressed(struct ckpt_ctx *cx, struct epoch_tally *t,
			   const struct page_list *l, size_t first, size_t k)
{
	struct page_ref p[PROTO_PAGES_PER_FRAME];
	size_t plain_len = 8 + k * (8 + PROTO_PAGE_SIZE), len;
	struct iovec iov;
	uint8_t *buf;
	int rc;

	for (size_t i = 0; i < k; i++)
		p[i] = (struct page_ref){ .index = l->index(l->ctx, first + i),
					  .data = l->data(l->ctx, first + i) };
	rc = compress_frame(cx->compress, p, k, l->no_delta || t->resend, plain_len, &buf, &len);
	if (rc == -E2BIG)
		return push_plain(cx, t, l, first, k);
	if (rc)
		return rc;
	iov = (struct iovec){ .iov_base = buf, .iov_len = len };
	return epoch_push_frame(cx, t, FRAME_PAGES_Z, &iov, 1, buf);
}

/* Pages past the budget go plainly, their cached copies forgotten. */
static int push_past_budget(struct ckpt_ctx *cx, struct epoch_tally *t,
			    const struct page_list *l, size_t first, size_t k)
{
	for (size_t i = 0; i < k; i++)
		compress_forget(cx->compress, l->index(l->ctx, first + i));
	return push_plain(cx, t, l, first, k);
}

/* Queuing a large list (a step of the initial copy, a large epoch,
 * compressed) can hold the loop for seconds on a slow or loaded host, and
 * the backup takes a primary it does not hear from for --timeout-ms as
 * dead: what is queued goes out this often meanwhile. */
#define PULSE_MS 200

int page_frames_push(struct ckpt_ctx *cx, struct epoch_tally *t, const struct page_list *l)
{
	bool z = cx->compress->active;
	double pulse_at = mono_ms() + PULSE_MS;

	for (size_t done = 0; done < l->n;) {
		size_t k = l->n - done < PROTO_PAGES_PER_FRAME ? l->n - done : PROTO_PAGES_PER_FRAME;
		int rc;

		if (!z)
			rc = push_plain(cx, t, l, done, k);
		else if (done < PAGE_FRAMES_COMPRESS_MAX)
			rc = push_compressed(cx, t, l, done, k);
		else
			rc = push_past_budget(cx, t, l, done, k);
		if (rc)
			return rc;
		t->pages += k;
		done += k;
		if (mono_ms() >= pulse_at) {
			ckpt_link_pulse(cx);
			pulse_at = mono_ms() + PULSE_MS;
		}
	}
	return 0;
}
