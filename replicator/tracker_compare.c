/* The portable tracker: compare every page of guest RAM with a shadow copy
 * of the last checkpoint. Costs a full RAM scan per pause, but needs nothing
 * from the kernel. The scan is split over worker threads (one per core by
 * default): while the VM is stopped its vCPUs leave the cores to us.
 * The shadow doubles as the staging buffer: a changed page is copied into
 * it during the pause and sent from there, so the pause does one copy per
 * dirty page and no more. */
#include "scan_pool.h"
#include "tracker.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define PAGE 4096u

struct slice {
	struct tracker *t;
	size_t start, end;  /* pages [start, end) */
	size_t n;           /* dirty pages found, written at dirty[start...] */
};

struct tracker {
	const uint8_t *ram;
	uint8_t *shadow;
	size_t npages;
	uint32_t *dirty;          /* output of the running scan */
	unsigned nslices;
	struct slice slices[SCAN_POOL_MAX_THREADS];
	/* thread idx runs slice idx; the caller runs slice 0 */
	struct scan_pool pool;
};

static void scan_slice(struct slice *s)
{
	struct tracker *t = s->t;
	uint32_t *out = t->dirty + s->start;
	size_t n = 0;

	for (size_t i = s->start; i < s->end; i++) {
		const uint8_t *live = t->ram + i * PAGE;
		uint8_t *saved = t->shadow + i * PAGE;

		if (memcmp(live, saved, PAGE)) {
			memcpy(saved, live, PAGE);
			out[n++] = (uint32_t)i;
		}
	}
	s->n = n;
}

/* One thread's part of a scan (scan_pool: idx 0 is the caller). */
static void scan_index(void *ctx, unsigned idx)
{
	struct tracker *t = ctx;

	scan_slice(&t->slices[idx]);
}

static void cut_slices(struct tracker *t, unsigned nslices)
{
	size_t per = (t->npages + nslices - 1) / nslices;

	t->nslices = nslices;
	for (unsigned i = 0; i < nslices; i++) {
		size_t start = i * per;
		t->slices[i] = (struct slice){
			.t = t,
			.start = start < t->npages ? start : t->npages,
			.end = start + per < t->npages ? start + per : t->npages,
		};
	}
}

static int compare_init(struct tracker **out, const uint8_t *ram, size_t npages,
			unsigned threads)
{
	struct tracker *t = calloc(1, sizeof(*t));
	int rc;

	if (!t)
		return -ENOMEM;
	t->shadow = mmap(NULL, npages * PAGE, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (t->shadow == MAP_FAILED) {
		free(t);
		return -ENOMEM;
	}
	/* Huge pages, where the kernel gives them, spare the scan most of its
	 * TLB misses. */
	madvise(t->shadow, npages * PAGE, MADV_HUGEPAGE);
	t->ram = ram;
	t->npages = npages;
	threads = scan_pool_threads(threads);
	cut_slices(t, threads);
	rc = scan_pool_init(&t->pool, threads, scan_index, t);
	if (rc) {
		munmap(t->shadow, npages * PAGE);
		free(t);
		return rc;
	}
	*out = t;
	return 0;
}

static int compare_begin_full_copy(struct tracker *t)
{
	(void)t;
	return 0;
}

static void compare_copy_pages(struct tracker *t, size_t first, size_t n)
{
	memcpy(t->shadow + first * PAGE, t->ram + first * PAGE, n * PAGE);
}

static size_t compare_scan(struct tracker *t, uint32_t *dirty)
{
	size_t n;

	t->dirty = dirty;
	scan_pool_run(&t->pool);

	/* Each slice wrote its pages at its own offset: close the gaps, in
	 * order, so the list stays sorted. */
	n = t->slices[0].n;
	for (unsigned i = 1; i < t->nslices; i++) {
		memmove(dirty + n, dirty + t->slices[i].start, t->slices[i].n * sizeof(*dirty));
		n += t->slices[i].n;
	}
	return n;
}

static const uint8_t *compare_page(const struct tracker *t, uint32_t idx)
{
	return t->shadow + (size_t)idx * PAGE;
}

static void compare_fini(struct tracker *t)
{
	if (!t)
		return;
	scan_pool_fini(&t->pool);
	munmap(t->shadow, t->npages * PAGE);
	free(t);
}

const struct tracker_ops compare_tracker_ops = {
	.name = "compare",
	.init = compare_init,
	.begin_full_copy = compare_begin_full_copy,
	.copy_pages = compare_copy_pages,
	.scan = compare_scan,
	.page = compare_page,
	.fini = compare_fini,
};
