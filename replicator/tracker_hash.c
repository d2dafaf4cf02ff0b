/* The hash tracker: a 128-bit hash (XXH3, libxxhash) of every page of guest
 * RAM instead of compare's full shadow copy. A pause reads guest RAM once
 * (compare reads it and the shadow), and the replicator keeps 16 bytes per
 * page plus the pages it stages for the sender. docs/TRACKERS.md has the
 * soundness argument and what a hash collision would cost.
 *
 * The invariant everything rests on: hash[i] is the hash of the content of
 * page i that the backup has (or will have once the epoch in flight
 * commits). Every hash is taken of the bytes that are sent, never of a
 * second read of guest RAM: the full copy hashes the private copy it
 * hands the sender, and the scan hashes a dirty page again after copying
 * it into staging. A scan then reports page i iff the live page hashes
 * differently, i.e. iff it differs from what the backup has, save for a
 * collision of 128-bit hashes.
 *
 * Staging: the sender reads a dirty page with page() from the end of the
 * scan until the backup acks the epoch, and again after a NACK (the epoch
 * is sent again, from the same staging). The replicator has one epoch in
 * flight at a time and takes the next barrier, so the next scan, only
 * after the ack (replicator/epoch.c: epoch_checkpoint and
 * epoch_final_checkpoint return while r->inflight; epoch_on_ack clears it).
 * An ack comes after the backup read the epoch's EPOCH_END, which the link
 * writes after every frame before it, so when a scan starts no queued frame
 * refers to staging any more. A lost link clears the queue
 * (peer_link_close) and the next session starts with a full copy. So
 * staging holds the last scan's pages only: slot k holds the k-th page of
 * the sorted list that scan returned, and page(idx) finds idx in that list
 * by binary search.
 *
 * Staging is one range of guest RAM's size, reserved at init and never
 * moved (MAP_NORESERVE: address space, not memory). Only the slots a scan
 * writes become resident; when the last scans (SHRINK_WINDOW) all needed
 * far fewer slots than are resident (SHRINK_FACTOR), the rest are dropped
 * (MADV_DONTNEED), so a burst of dirty pages does not keep its memory
 * forever. Since the range never
 * moves, a pointer page() returned stays valid memory whatever happens;
 * what must not happen is a slot overwritten while a frame still refers to
 * it, which the paragraph above rules out for scans and the next one for
 * the full copy.
 *
 * Full copy (VM running): copy_pages copies each page into a slot of a
 * ring of FULL_COPY_KEEP slots, hashes that copy, and page() returns the
 * slot. Staging all of RAM for the sender would cost as much memory as
 * compare's shadow; instead the tracker says, in ops->full_copy_keep, how
 * many pages later a slot is reused, and the caller lets the sender fall no
 * further behind (replicator/dev_memory.c waits for the link to write a
 * step before it copies over it). Soundness: the page the backup gets is
 * the copy that was hashed. A guest write after the page's copy makes the
 * live page differ from it, so the first scan hashes it differently and
 * sends it (a write before the copy is in the copy). Guest writes that
 * leave the page as it was copied need not be sent.
 *
 * Threads: the scan runs in two rounds of replicator/scan_pool.c, like
 * compare's: first every thread hashes its slice of RAM (two runs of it at
 * once, STREAMS) and writes the indexes of the pages that hash differently
 * at each run's own offset of the output (the caller then closes the gaps,
 * in order, so the list is sorted); then the threads share the list
 * evenly, each copying its pages into their slots and hashing the copies. */
#include "log.h"
#include "ram_holes.h"
#include "scan_pool.h"
#include "tracker.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <time.h>

#include <xxhash.h>
#if defined(__x86_64__) && !defined(TRACKER_HASH_NO_DISPATCH)
/* XXH3 with the widest vector unit this CPU has (AVX2, AVX-512), chosen
 * at run time: twice as fast as the plain functions, built for baseline
 * SSE2; same results. Debian's shared libxxhash has them, its static one
 * does not (a static build defines TRACKER_HASH_NO_DISPATCH). */
#include <xxh_x86dispatch.h>
#endif

#define PAGE 4096u
/* Ring of the full copy: two of dev_memory.c's steps of 16 MiB, so one
 * step can be copied while the link still writes the one before. */
#define FULL_COPY_KEEP 8192u
/* Staging slots kept resident whatever the scans need (512 KiB); beyond
 * that, at most SHRINK_FACTOR times the most any of the last SHRINK_WINDOW
 * scans needed: past it, the slots above that most are dropped. A burst's
 * memory goes back SHRINK_WINDOW scans later, while a steady dirty rate
 * keeps its slots (dropping them would cost a page fault per slot in the
 * next pause that needs them again). */
#define STAGING_MIN    128u
#define SHRINK_FACTOR  2u
#define SHRINK_WINDOW  16u
#define NO_PAGE       UINT32_MAX
/* XXH3's own default size; withSecret wants at least XXH3_SECRET_SIZE_MIN
 * random-looking bytes. */
#define SECRET_SIZE   192
_Static_assert(SECRET_SIZE >= XXH3_SECRET_SIZE_MIN, "XXH3 secret too short");

/* Round 1: a thread hashes two halves of its slice of RAM in turns, a
 * page of one, then a page of the other. A single run of pages is bound
 * by how many reads one stream keeps in flight (the hardware prefetchers
 * stop at every 4 KiB page): two at once read about 1.6x faster here
 * (512 MiB, one thread: 14 ms against 24; a whole next page prefetched in
 * software gave 21). Each half writes its pages at its own offset. */
#define STREAMS 2
/* Round 2 wakes the other threads only for this many pages or more (about
 * half a millisecond of copying); fewer, the caller copies them alone. */
#define COPY_SPLIT_MIN 512u

struct slice {
	struct tracker *t;
	size_t start[STREAMS], end[STREAMS];  /* round 1: pages [start, end) */
	size_t n[STREAMS];  /* round 1: pages found, written at dirty[start...] */
	uint64_t changed;   /* round 2: pages whose copy hashed unlike round 1 */
};

struct tracker {
	const uint8_t *ram;
	size_t npages;
	XXH128_hash_t *hash;   /* npages: of the content the backup has */
	uint8_t *stage;        /* npages slots reserved, [0, resident) touched */
	size_t stage_bytes;
	size_t resident;       /* slots that may hold memory */
	size_t need[SHRINK_WINDOW]; /* pages the last scans staged, need_at % SHRINK_WINDOW next */
	unsigned need_at;
	/* Scan: staged[k] is the page in slot k, sorted, nstaged of them.
	 * Full copy: staged[slot] is the page copied into that ring slot. */
	uint32_t *staged;
	size_t nstaged;
	bool full_copy;        /* page() reads the ring */
	size_t ring;           /* min(FULL_COPY_KEEP, npages) */
	/* A random key: a guest cannot aim for a collision with a hash it
	 * cannot compute. */
	uint8_t secret[SECRET_SIZE];
	uint32_t *dirty;       /* output of the running scan */
	unsigned round;        /* 1: hash and compare, 2: copy and hash */
	size_t ndirty;         /* round 2: pages to copy */
	unsigned nslices;
	struct slice slices[SCAN_POOL_MAX_THREADS];
	/* thread idx runs slice idx; the caller runs slice 0 */
	struct scan_pool pool;
	/* Guest RAM on tmpfs: its holes are neither read nor hashed
	 * (hash_skip_holes; docs/TRACKERS.md, "Holes"). Without, no page is
	 * a hole. */
	struct ram_holes holes;
	XXH128_hash_t zero_hash; /* of a page of zeroes, what a hole reads */
	struct hash_stats st;
};

static const uint8_t zero_page[PAGE];

static XXH128_hash_t page_hash(const struct tracker *t, const uint8_t *p)
{
	return XXH3_128bits_withSecret(p, PAGE, t->secret, sizeof(t->secret));
}

static uint64_t ns_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Round 1: which pages of the slice hash unlike what the backup has. A
 * hole is skipped: it reads as zeroes, which the backup has (see
 * hash_copy_pages), and reading it would allocate it. */
static void hash_slice(struct slice *s)
{
	struct tracker *t = s->t;
	size_t i[STREAMS], n[STREAMS] = { 0 };
	bool more = true;

	for (unsigned k = 0; k < STREAMS; k++)
		i[k] = ram_holes_next_data(&t->holes, s->start[k], s->end[k]);
	while (more) {
		more = false;
		for (unsigned k = 0; k < STREAMS; k++) {
			XXH128_hash_t h;

			if (i[k] >= s->end[k])
				continue;
			h = page_hash(t, t->ram + i[k] * PAGE);
			if (!XXH128_isEqual(h, t->hash[i[k]])) {
				t->hash[i[k]] = h;
				t->dirty[s->start[k] + n[k]++] = (uint32_t)i[k];
			}
			i[k] = ram_holes_next_data(&t->holes, i[k] + 1, s->end[k]);
			more |= i[k] < s->end[k];
		}
	}
	for (unsigned k = 0; k < STREAMS; k++)
		s->n[k] = n[k];
}

/* Round 2: slice idx of the sorted list: copy each page into its slot and
 * keep the hash of the copy, the bytes the sender sends. With the VM
 * stopped the copy equals what round 1 hashed; should it not, the copy
 * wins (it is what the backup gets) and the stats say so. */
static void copy_part(struct tracker *t, unsigned idx, unsigned nparts)
{
	size_t per = (t->ndirty + nparts - 1) / nparts;
	size_t k = (size_t)idx * per, end = k + per < t->ndirty ? k + per : t->ndirty;
	uint64_t changed = 0;

	for (; k < end; k++) {
		uint32_t i = t->staged[k];
		uint8_t *slot = t->stage + k * PAGE;
		XXH128_hash_t h;

		memcpy(slot, t->ram + (size_t)i * PAGE, PAGE);
		h = page_hash(t, slot);
		if (!XXH128_isEqual(h, t->hash[i])) {
			t->hash[i] = h;
			changed++;
		}
	}
	t->slices[idx].changed = changed;
}

/* One thread's part of a round (scan_pool: idx 0 is the caller). */
static void scan_index(void *ctx, unsigned idx)
{
	struct tracker *t = ctx;

	if (t->round == 1)
		hash_slice(&t->slices[idx]);
	else
		copy_part(t, idx, t->nslices);
}

/* Thread i's slice, cut in STREAMS runs: part k is [i * STREAMS + k) of
 * nslices * STREAMS equal parts, in order. */
static void cut_slices(struct tracker *t, unsigned nslices)
{
	size_t nparts = (size_t)nslices * STREAMS, per = (t->npages + nparts - 1) / nparts;

	t->nslices = nslices;
	for (unsigned i = 0; i < nslices; i++) {
		t->slices[i] = (struct slice){ .t = t };
		for (unsigned k = 0; k < STREAMS; k++) {
			size_t start = ((size_t)i * STREAMS + k) * per;

			t->slices[i].start[k] = start < t->npages ? start : t->npages;
			t->slices[i].end[k] = start + per < t->npages ? start + per : t->npages;
		}
	}
}

static void hash_free(struct tracker *t)
{
	if (t->stage && t->stage != MAP_FAILED)
		munmap(t->stage, t->stage_bytes);
	free(t->hash);
	free(t->staged);
	ram_holes_fini(&t->holes);
	free(t);
}

static int hash_init(struct tracker **out, const uint8_t *ram, size_t npages, unsigned threads)
{
	struct tracker *t = calloc(1, sizeof(*t));
	int rc;

	if (!t)
		return -ENOMEM;
	t->ram = ram;
	t->npages = npages;
	t->holes.fd = -1;
	t->ring = npages < FULL_COPY_KEEP ? (npages ? npages : 1) : FULL_COPY_KEEP;
	/* Zero hashes: every page counts as changed until the full copy (or
	 * a scan) hashed it; a page whose hash is 0 is as likely as any
	 * other collision. */
	t->hash = calloc(npages ? npages : 1, sizeof(*t->hash));
	t->staged = malloc((npages ? npages : 1) * sizeof(*t->staged));
	t->stage_bytes = (npages ? npages : 1) * (size_t)PAGE;
	t->stage = mmap(NULL, t->stage_bytes, PROT_READ | PROT_WRITE,
			MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (!t->hash || !t->staged || t->stage == MAP_FAILED) {
		hash_free(t);
		return -ENOMEM;
	}
	if (getrandom(t->secret, sizeof(t->secret), 0) != (ssize_t)sizeof(t->secret)) {
		rc = -errno;
		hash_free(t);
		return rc ? rc : -EIO;
	}
	t->zero_hash = page_hash(t, zero_page);
	threads = scan_pool_threads(threads);
	cut_slices(t, threads);
	rc = scan_pool_init(&t->pool, threads, scan_index, t);
	if (rc) {
		hash_free(t);
		return rc;
	}
	*out = t;
	return 0;
}

static int hash_begin_full_copy(struct tracker *t)
{
	t->full_copy = true;
	t->nstaged = 0;
	for (size_t s = 0; s < t->ring; s++)
		t->staged[s] = NO_PAGE;
	return 0;
}

/* On the replicator's loop, VM running: one thread (the vCPUs need the
 * cores). Copy first, then hash the copy: hash[i] is of what is sent. A
 * hole is sent as the zeroes it reads as, without reading it: so from
 * here on the backup has zeroes for every page believed a hole, which is
 * why a scan may skip them (a page written after the holes were learned
 * is found by the scan's refresh). */
static void hash_copy_pages(struct tracker *t, size_t first, size_t n)
{
	if (!t->full_copy)
		hash_begin_full_copy(t);
	/* an error leaves every page of the range data: it is read */
	ram_holes_learn(&t->holes, first, n);
	for (size_t i = first; i < first + n; i++) {
		size_t slot = i % t->ring;
		uint8_t *dst = t->stage + slot * PAGE;

		if (ram_holes_is_data(&t->holes, i)) {
			memcpy(dst, t->ram + i * PAGE, PAGE);
			t->hash[i] = page_hash(t, dst);
		} else {
			memset(dst, 0, PAGE);
			t->hash[i] = t->zero_hash;
		}
		t->staged[slot] = (uint32_t)i;
	}
	if (n && t->resident < t->ring)
		t->resident = t->ring;
	if (t->resident > t->st.staging_peak)
		t->st.staging_peak = t->resident;
}

/* After a scan that staged n pages: drop the slots far beyond the need of
 * the last scans. */
static void maybe_shrink(struct tracker *t, size_t n)
{
	size_t keep = STAGING_MIN;

	t->need[t->need_at++ % SHRINK_WINDOW] = n;
	for (unsigned i = 0; i < SHRINK_WINDOW; i++)
		if (t->need[i] > keep)
			keep = t->need[i];
	if (keep > t->npages)
		keep = t->npages;
	if (t->resident <= keep * SHRINK_FACTOR)
		return;
	/* Cannot fail on a private anonymous range of ours; if it did, the
	 * memory would just stay. */
	if (!madvise(t->stage + keep * PAGE, (t->resident - keep) * PAGE, MADV_DONTNEED)) {
		t->resident = keep;
		t->st.shrinks++;
	}
}

/* Round 1 on every thread, into dirty: how many pages, sorted. */
static size_t hash_round(struct tracker *t, uint32_t *dirty)
{
	size_t n = 0;

	t->dirty = dirty;
	t->round = 1;
	scan_pool_run(&t->pool);
	/* Each part wrote its pages at its own offset: close the gaps, in
	 * order, so the list stays sorted. */
	for (unsigned i = 0; i < t->nslices; i++)
		for (unsigned k = 0; k < STREAMS; k++) {
			const struct slice *sl = &t->slices[i];

			memmove(dirty + n, dirty + sl->start[k], sl->n[k] * sizeof(*dirty));
			n += sl->n[k];
		}
	return n;
}

/* Merge the sorted list more[0..m) into the sorted dirty[0..n), in place
 * from the back (dirty has room for npages), a page in both once. */
static size_t merge_pages(uint32_t *dirty, size_t n, const uint32_t *more, size_t m)
{
	size_t i = n, j = m, k = n + m, dups;

	while (j > 0) {
		if (i > 0 && dirty[i - 1] >= more[j - 1]) {
			j -= dirty[i - 1] == more[j - 1];
			dirty[--k] = dirty[--i];
		} else {
			dirty[--k] = more[--j];
		}
	}
	dups = k - i; /* dirty[0..i) belongs at [k - i, k) */
	if (dups) {
		memmove(dirty + dups, dirty, i * sizeof(*dirty));
		memmove(dirty, dirty + dups, (n + m - dups) * sizeof(*dirty));
	}
	return n + m - dups;
}

/* Round 1 read every page believed data, yet the file holds other pages
 * too (ram_holes.h): a page believed a hole was written without SEEK_DATA
 * saying so, or cannot be told. Believe no hole until the next full copy,
 * and hash every page again now, before this epoch is sent: the pages
 * round 1 reported have their new hash and are not reported twice; the
 * holes that differ from the backup's zeroes are. */
static size_t hash_the_holes(struct tracker *t, uint32_t *dirty, size_t n)
{
	size_t m;

	ram_holes_give_up(&t->holes);
	if (!t->st.hole_checks_failed++)
		log_warn("memory: guest RAM holds more pages than the pause read: a page believed "
			 "a hole was written (or something else allocated it); every page is read "
			 "from now on, this pause included, until the next full copy");
	/* the previous epoch is acked: staged is free until round 2 */
	m = hash_round(t, t->staged);
	if (n + m <= t->npages)
		return merge_pages(dirty, n, t->staged, m);
	/* only a page reported twice can make it longer: report every page,
	 * all copied again, which is never wrong */
	for (size_t i = 0; i < t->npages; i++)
		dirty[i] = (uint32_t)i;
	return t->npages;
}

static size_t hash_scan(struct tracker *t, uint32_t *dirty)
{
	uint64_t t0 = ns_now(), th, t1, t2;
	size_t n;

	/* the holes' news since the last scan, VM stopped: a hole written
	 * since is data now (an error makes every page data) */
	ram_holes_refresh(&t->holes);
	th = ns_now();
	n = hash_round(t, dirty);
	if (ram_holes_check(&t->holes))
		n = hash_the_holes(t, dirty, n);
	t1 = ns_now();

	/* The previous epoch is acked (see the top): its slots are free. */
	t->full_copy = false;
	memcpy(t->staged, dirty, n * sizeof(*dirty));
	t->nstaged = n;
	t->ndirty = n;
	t->round = 2;
	if (n >= COPY_SPLIT_MIN && t->nslices > 1)
		scan_pool_run(&t->pool);
	else if (n)
		copy_part(t, 0, 1);
	t2 = ns_now();

	if (n > t->resident)
		t->resident = n;
	if (t->resident > t->st.staging_peak)
		t->st.staging_peak = t->resident;
	maybe_shrink(t, n);
	t->st.scans++;
	t->st.dirty += n;
	for (unsigned i = 0; i < t->nslices; i++) {
		t->st.changed_in_pause += t->slices[i].changed;
		t->slices[i].changed = 0;
	}
	t->st.ns_holes += th - t0;
	t->st.ns_hash += t1 - th;
	t->st.ns_copy += t2 - t1;
	t->st.ns_total += ns_now() - t0;
	return n;
}

static const uint8_t *hash_page(const struct tracker *t, uint32_t idx)
{
	size_t lo = 0, hi = t->nstaged;

	if (t->full_copy) {
		size_t slot = idx % t->ring;

		return t->staged[slot] == idx ? t->stage + slot * PAGE : NULL;
	}
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (t->staged[mid] < idx)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < t->nstaged && t->staged[lo] == idx ? t->stage + lo * PAGE : NULL;
}

static void hash_fini(struct tracker *t)
{
	if (!t)
		return;
	scan_pool_fini(&t->pool);
	hash_free(t);
}

void hash_get_stats(const struct tracker *t, struct hash_stats *s)
{
	*s = t->st;
	s->staging_pages = t->resident;
	s->staged_pages = t->full_copy ? 0 : t->nstaged;
	s->hole_pages = ram_holes_count(&t->holes);
	s->skips_holes = s->hole_pages > 0;
	s->holes_found = t->holes.found;
	s->hole_lseeks = t->holes.lseeks;
	s->holes_capped = t->holes.capped;
}

int hash_skip_holes(struct tracker *t, int fd)
{
	if (t->holes.data)
		return 0;
	return ram_holes_init(&t->holes, fd, t->npages);
}

const struct ram_holes *hash_holes(const struct tracker *t)
{
	return &t->holes;
}

const struct tracker_ops hash_tracker_ops = {
	.name = "hash",
	.init = hash_init,
	.begin_full_copy = hash_begin_full_copy,
	.copy_pages = hash_copy_pages,
	.full_copy_keep = FULL_COPY_KEEP,
	.scan = hash_scan,
	.page = hash_page,
	.fini = hash_fini,
};
