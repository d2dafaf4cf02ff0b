/* Online verify (`remusctl verify`): compare the backup's replica with the
 * VM, page by page, while protection goes on, and resend what differs
 * (as `drbdadm verify` does for a block device). At each barrier, with the
 * VM paused, a slice of guest RAM (VERIFY_SLICE_PAGES pages, well under a
 * millisecond of hashing) is hashed as that epoch leaves it; the hashes go
 * after the epoch's EPOCH_END, the backup compares them with its replica
 * once it has committed that epoch and answers which pages differ; those
 * are sent again at the next barrier. One slice at a time; a pass ends when
 * every page was compared, and the waiting remusctl gets the figures.
 *
 * Then the disks, where the agent can compare them ("verify-disk"), in
 * 4 KiB blocks read from each image at the barrier (the VM is stopped
 * and QEMU has drained its writes, so the image is as that epoch leaves
 * it): one pread a slice, its size aimed at the same time. A block that
 * differs goes again as a DISK write of the next epoch. A disk whose
 * image cannot be read here as the guest sees it (not a raw image in a
 * regular file QEMU has open, see disk_open_image) is not compared, and
 * the answer says why. */
#ifndef REMUS_VERIFY_H
#define REMUS_VERIFY_H

#include "dev_disk.h"
#include "proto.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct replicator;
struct epoch_tally;

/* A slice's pages: the first 256 (1 MiB, 0.1 to 0.3 ms of XXH3), then as
 * many as hash in VERIFY_SLICE_TARGET_MS on this host, within bounds,
 * growing at most twofold a slice. */
#define VERIFY_SLICE_PAGES     256u
#define VERIFY_SLICE_MIN_PAGES 64u
#define VERIFY_SLICE_TARGET_MS 0.5
/* ... and whatever its size, a slice stops hashing once this much time has
 * gone since it started (checked every VERIFY_SLICE_CHECK_PAGES pages, at
 * least VERIFY_SLICE_MIN_DONE done): the same pages take up to five times
 * as long at times on a busy host, and no pause may grow by more than
 * about 1 ms. */
#define VERIFY_SLICE_BUDGET_MS  0.8
#define VERIFY_SLICE_CHECK_PAGES 8u
#define VERIFY_SLICE_MIN_DONE   16u
#define VERIFY_MAX_RESEND  PROTO_VERIFY_MAX_BAD
/* A disk slice reads at most this many 4 KiB blocks (4 MiB), into a
 * buffer kept from the first pass with disks on. */
#define VERIFY_DISK_MAX_BLOCKS 1024u
/* ... in reads of this many blocks, between which the time box is asked */
#define VERIFY_READ_STEP       16u
/* A slice the backup has not answered by then ends the pass. */
#define VERIFY_ANSWER_MS   30000
/* A slice done again (unreadable here, or skipped by the backup) this
 * many times in a row: its disk is given up, or, for RAM, the pass ends. */
#define VERIFY_MAX_REDO    10

struct ram_holes;

struct verify {
	bool active;
	int client_fd;            /* remusctl verify waiting for the figures; -1 */
	uint64_t seed;            /* this pass's, for page_hash */
	uint64_t npages;
	/* guest RAM's believed holes, read with pread (set at each barrier) */
	const struct ram_holes *holes;
	uint8_t hole_page[4096];
	/* what is compared now: RAM (cur -1) or disks[cur]; its items (pages
	 * or 4 KiB blocks); the next slice starts at next */
	int cur;
	uint64_t nitems, next;
	struct verify_disk disks[PROTO_MAX_DISKS];
	uint32_t ndisks;
	const char *disks_skipped_why; /* none compared at all, and why; NULL */
	uint8_t *block_buf;       /* VERIFY_DISK_MAX_BLOCKS blocks, for a slice's read */
	bool slice_out;           /* a slice is on its way or being answered */
	uint32_t slice_count;     /* ... of this many items */
	unsigned redo;            /* times in a row the current slice was done again */
	double slice_sent_ms;
	uint8_t *pending;         /* the slice's VERIFY payload, until its EPOCH_END is queued */
	uint32_t pending_len;
	uint64_t pending_epoch;
	uint64_t checked, differ, skipped;          /* RAM pages */
	uint64_t blocks_checked, blocks_differ, blocks_resent; /* disk blocks */
	double started_ms, slice_ms_max, slice_ms_sum;
	double slice_cpu_ms_max;  /* the same, in this thread's CPU time: without preemption */
	uint64_t slices;
	uint32_t slice_pages;
	/* items the next barrier sends again (of resend_cur, as cur), then
	 * their content as that barrier left them (kept for a resend of the
	 * epoch after a NACK) */
	uint64_t resend[VERIFY_MAX_RESEND];
	size_t nresend;
	int resend_cur, pages_cur;
	uint64_t resend_idx[VERIFY_MAX_RESEND];
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
 * next slice. ram: guest RAM; holes: its pages known to be holes, read as
 * zeroes without touching them (NULL: none). */
void verify_at_barrier(struct replicator *r, const uint8_t *ram, const struct ram_holes *holes,
		       size_t npages, uint64_t epoch);
/* Queue the pages or disk blocks to resend as part of epoch t (memory_send). */
int verify_send_resends(struct replicator *r, struct epoch_tally *t);
/* Epoch's EPOCH_END is queued: its slice goes next. */
void verify_after_epoch_end(struct replicator *r, uint64_t epoch);
/* FRAME_VERIFY_RESULT from the backup. */
void verify_on_result(struct replicator *r, const struct frame_hdr *h, const uint8_t *payload);
/* The backup is gone: a pass in progress ends, without a result. */
void verify_abort(struct replicator *r, const char *why);

#endif
