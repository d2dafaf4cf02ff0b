/* Online verify (`remusctl verify`): compare the backup's replica with the
 * VM, page by page, while protection goes on, and resend what differs
 * (as `drbdadm verify` does for a block device). At each barrier, with the
 * VM paused, a slice of guest RAM (VERIFY_SLICE_PAGES pages, well under a
 * millisecond of hashing) is hashed as that epoch leaves it; the hashes go
 * after the epoch's EPOCH_END, the backup compares them with its replica
 * once it has committed that epoch and answers which pages differ; those
 * are sent again at the next barrier. One slice at a time; a pass ends when
 * every page was compared, and the waiting remusctl gets the figures.
 * Disks are not compared (the replicator holds no copy of them). */
#ifndef REMUS_VERIFY_H
#define REMUS_VERIFY_H

#include "proto.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct replicator;
struct epoch_tally;

/* A slice's pages: the first 1024 (4 MiB, about 0.3 ms of XXH3), then as
 * many as hash in VERIFY_SLICE_TARGET_MS on this host, within bounds. */
#define VERIFY_SLICE_PAGES     1024u
#define VERIFY_SLICE_MIN_PAGES 64u
#define VERIFY_SLICE_TARGET_MS 0.5
#define VERIFY_MAX_RESEND  PROTO_VERIFY_MAX_BAD
/* A slice the backup has not answered by then ends the pass. */
#define VERIFY_ANSWER_MS   30000

struct verify {
	bool active;
	int client_fd;            /* remusctl verify waiting for the figures; -1 */
	uint64_t seed;            /* this pass's, for page_hash */
	uint64_t npages, next;    /* the next slice starts at next */
	bool slice_out;           /* a slice is on its way or being answered */
	double slice_sent_ms;
	uint8_t *pending;         /* the slice's VERIFY payload, until its EPOCH_END is queued */
	uint32_t pending_len;
	uint64_t pending_epoch;
	uint64_t checked, differ, skipped;
	double started_ms, slice_ms_max, slice_ms_sum;
	uint64_t slices;
	uint32_t slice_pages;
	/* pages the next barrier sends again, then their content as that
	 * barrier left them (kept for a resend of the epoch after a NACK) */
	uint32_t resend[VERIFY_MAX_RESEND];
	size_t nresend;
	uint32_t resend_idx[VERIFY_MAX_RESEND];
	uint8_t *resend_pages;
	size_t nresend_pages;
	uint64_t resent;          /* pages sent again, this pass */
};

void verify_init(struct replicator *r);
void verify_free(struct replicator *r);
/* "verify": start a pass; NULL when the answer comes later on fd (then
 * *keep), else the error reply. */
char *verify_start(struct replicator *r, int fd, bool *keep);
/* VM paused at the barrier of epoch: copy the pages to resend, hash the
 * next slice. ram: guest RAM. */
void verify_at_barrier(struct replicator *r, const uint8_t *ram, size_t npages, uint64_t epoch);
/* Queue the pages to resend as part of epoch t (memory_send). */
int verify_send_resends(struct replicator *r, struct epoch_tally *t);
/* Epoch's EPOCH_END is queued: its slice goes next. */
void verify_after_epoch_end(struct replicator *r, uint64_t epoch);
/* FRAME_VERIFY_RESULT from the backup. */
void verify_on_result(struct replicator *r, const struct frame_hdr *h, const uint8_t *payload);
/* The backup is gone: a pass in progress ends, without a result. */
void verify_abort(struct replicator *r, const char *why);

#endif
