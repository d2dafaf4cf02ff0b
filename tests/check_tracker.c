/* The compare and hash trackers on synthetic guest RAM: an anonymous
 * mapping the test writes into, checked against a brute-force reference
 * copy. Every generic test runs for both trackers, each with one scanning
 * thread, with a count that does not divide the pages evenly, and with more
 * than the tracker's maximum (clamped). The hash tracker stages only the
 * pages of the last scan (and the full copy's last pages): its own tests
 * check what page() keeps, for how long, and that staging shrinks again.
 * The soft-dirty tracker's threads, chunks and output order are checked the
 * same way on any kernel (with or without soft-dirty): see sd_open. */
#include "../replicator/tracker.h"
#include "ck_loop.h"

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define PAGE   4096u
#define NPAGES 1024u

struct fixture {
	uint8_t *ram;
	struct tracker *t;
	uint32_t *dirty;
	const struct tracker_ops *ops;
};

static const unsigned thread_counts[] = { 1, 3, 16, 100 };
#define NTHREAD_COUNTS (sizeof(thread_counts) / sizeof(thread_counts[0]))

/* The trackers that need nothing from the kernel. A generic test runs for
 * each of them with each thread count: loop index i picks both. */
static const struct tracker_ops *const generic_ops[] = { &compare_tracker_ops, &hash_tracker_ops };
#define NGENERIC (sizeof(generic_ops) / sizeof(generic_ops[0]))
#define OPS(i)     (generic_ops[(unsigned)(i) / NTHREAD_COUNTS])
#define THREADS(i) (thread_counts[(unsigned)(i) % NTHREAD_COUNTS])

/* compare keeps every page in its shadow; hash only the last scan's. */
static bool keeps_every_page(const struct tracker_ops *o)
{
	return o->full_copy_keep == 0;
}

static void fx_open_ops(struct fixture *fx, const struct tracker_ops *ops, unsigned threads)
{
	fx->ops = ops;
	fx->ram = mmap(NULL, (size_t)NPAGES * PAGE, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	ck_assert_ptr_ne(fx->ram, MAP_FAILED);
	/* Distinct content per page, so a page mix-up shows. */
	for (size_t i = 0; i < NPAGES; i++)
		for (size_t j = 0; j < PAGE; j += 64)
			fx->ram[i * PAGE + j] = (uint8_t)(i * 31 + j / 64);
	fx->dirty = calloc(NPAGES, sizeof(*fx->dirty));
	ck_assert_ptr_nonnull(fx->dirty);
	ck_assert_int_eq(fx->ops->init(&fx->t, fx->ram, NPAGES, threads), 0);
	ck_assert_ptr_nonnull(fx->t);
	ck_assert_int_eq(tracker_full_copy(fx->ops, fx->t, NPAGES), 0);
}

/* Loop index i of a generic test: its tracker and thread count. */
static void fx_open(struct fixture *fx, int i)
{
	fx_open_ops(fx, OPS(i), THREADS(i));
}

/* After a scan that reported dirty[0..n): page() of each holds the page as
 * it is now; compare's other pages too, while hash has no other page. */
static void check_pages_current(const struct fixture *fx, size_t n, const char *when)
{
	size_t k = 0;

	for (uint32_t i = 0; i < NPAGES; i++) {
		const uint8_t *p = fx->ops->page(fx->t, i);
		bool reported = k < n && fx->dirty[k] == i;

		k += reported;
		if (reported || keeps_every_page(fx->ops)) {
			ck_loop_assert_msg(p && !memcmp(p, fx->ram + (size_t)i * PAGE, PAGE),
					   "%s, %s: page %u not current after scan", fx->ops->name,
					   when, i);
		} else {
			ck_loop_assert_msg(!p, "%s, %s: page() of page %u, not reported, is not NULL",
					   fx->ops->name, when, i);
		}
	}
	ck_assert_uint_eq(k, n);
}

static void fx_close(struct fixture *fx)
{
	fx->ops->fini(fx->t);
	free(fx->dirty);
	munmap(fx->ram, (size_t)NPAGES * PAGE);
}

START_TEST(test_ops_are_named_and_complete)
{
	const struct tracker_ops *o = OPS(_i);

	ck_assert_str_eq(o->name, o == &compare_tracker_ops ? "compare" : "hash");
	ck_assert_ptr_null(o->init_proc);
	ck_assert_ptr_nonnull(o->init);
	ck_assert_ptr_nonnull(o->begin_full_copy);
	ck_assert_ptr_nonnull(o->copy_pages);
	ck_assert_ptr_nonnull(o->scan);
	ck_assert_ptr_nonnull(o->page);
	ck_assert_ptr_nonnull(o->fini);
}
END_TEST

START_TEST(test_scan_after_full_copy_finds_nothing)
{
	struct fixture fx;

	fx_open(&fx, _i);
	/* page() holds the full copy (hash: the test's RAM is smaller than
	 * the pages it keeps of the copy). */
	for (uint32_t i = 0; i < NPAGES; i++)
		ck_assert_mem_eq(fx.ops->page(fx.t, i), fx.ram + (size_t)i * PAGE, PAGE);
	ck_assert_uint_eq(fx.ops->scan(fx.t, fx.dirty), 0);
	check_pages_current(&fx, 0, "after the full copy");
	fx_close(&fx);
}
END_TEST

START_TEST(test_full_copy_is_a_copy_not_a_view)
{
	struct fixture fx;
	uint8_t before;

	fx_open(&fx, _i);
	before = fx.ops->page(fx.t, 5)[100];
	fx.ram[5 * PAGE + 100] = (uint8_t)(before + 1);
	/* The checkpointed content stays until the next scan. */
	ck_assert_uint_eq(fx.ops->page(fx.t, 5)[100], before);
	ck_assert_ptr_ne(fx.ops->page(fx.t, 5), fx.ram + 5 * PAGE);
	fx_close(&fx);
}
END_TEST

/* The replicator copies in steps with the VM running (its loop must keep
 * its heartbeats): a page written after its step was copied is found by the
 * next scan, one written before is in the copy. */
START_TEST(test_full_copy_in_steps_with_writes_between)
{
	struct fixture fx;
	size_t n;

	fx_open(&fx, _i);
	ck_assert_int_eq(fx.ops->begin_full_copy(fx.t), 0);
	fx.ops->copy_pages(fx.t, 0, 100);
	fx.ram[10 * PAGE + 1] ^= 0x5a;   /* copied already: a change */
	fx.ram[500 * PAGE + 2] ^= 0x5a;  /* not copied yet: in the copy */
	fx.ops->copy_pages(fx.t, 100, 700);
	fx.ops->copy_pages(fx.t, 800, NPAGES - 800);
	n = fx.ops->scan(fx.t, fx.dirty);
	ck_assert_uint_eq(n, 1);
	ck_assert_uint_eq(fx.dirty[0], 10);
	check_pages_current(&fx, n, "after the copy in steps");
	fx_close(&fx);
}
END_TEST

START_TEST(test_scan_reports_exactly_the_written_pages_in_order)
{
	static const uint32_t pages[] = { 1023, 0, 7 }; /* written out of order */
	struct fixture fx;
	size_t n;

	fx_open(&fx, _i);
	for (size_t k = 0; k < 3; k++) {
		size_t off = (size_t)pages[k] * PAGE + 4000 + k; /* not the first byte */
		fx.ram[off] ^= 0xa5;
	}
	n = fx.ops->scan(fx.t, fx.dirty);
	ck_assert_uint_eq(n, 3);
	ck_assert_uint_eq(fx.dirty[0], 0);
	ck_assert_uint_eq(fx.dirty[1], 7);
	ck_assert_uint_eq(fx.dirty[2], 1023);
	for (size_t k = 0; k < n; k++)
		ck_assert_mem_eq(fx.ops->page(fx.t, fx.dirty[k]),
				 fx.ram + (size_t)fx.dirty[k] * PAGE, PAGE);
	/* Nothing changed since: the second scan is empty. */
	ck_assert_uint_eq(fx.ops->scan(fx.t, fx.dirty), 0);
	fx_close(&fx);
}
END_TEST

START_TEST(test_last_byte_of_page_counts)
{
	struct fixture fx;

	fx_open(&fx, _i);
	fx.ram[(size_t)512 * PAGE + PAGE - 1] ^= 1;
	ck_assert_uint_eq(fx.ops->scan(fx.t, fx.dirty), 1);
	ck_assert_uint_eq(fx.dirty[0], 512);
	ck_assert_uint_eq(fx.ops->page(fx.t, 512)[PAGE - 1], fx.ram[(size_t)512 * PAGE + PAGE - 1]);
	fx_close(&fx);
}
END_TEST

START_TEST(test_restoring_old_value_after_scan_is_a_change)
{
	struct fixture fx;
	uint8_t orig;

	fx_open(&fx, _i);
	orig = fx.ram[42 * PAGE + 10];
	fx.ram[42 * PAGE + 10] = (uint8_t)(orig ^ 0xff);
	ck_assert_uint_eq(fx.ops->scan(fx.t, fx.dirty), 1);
	ck_assert_uint_eq(fx.dirty[0], 42);
	ck_assert_uint_eq(fx.ops->page(fx.t, 42)[10], (uint8_t)(orig ^ 0xff));

	/* Back to the value of the full copy: relative to the last checkpoint
	 * this is a change, and the backup must get it. */
	fx.ram[42 * PAGE + 10] = orig;
	ck_assert_uint_eq(fx.ops->scan(fx.t, fx.dirty), 1);
	ck_assert_uint_eq(fx.dirty[0], 42);
	ck_assert_uint_eq(fx.ops->page(fx.t, 42)[10], orig);
	ck_assert_uint_eq(fx.ops->scan(fx.t, fx.dirty), 0);
	fx_close(&fx);
}
END_TEST

START_TEST(test_write_of_same_value_is_not_a_change)
{
	struct fixture fx;

	fx_open(&fx, _i);
	fx.ram[3 * PAGE + 64] = fx.ram[3 * PAGE + 64];
	memmove(fx.ram + 9 * PAGE, fx.ram + 9 * PAGE, PAGE);
	ck_assert_uint_eq(fx.ops->scan(fx.t, fx.dirty), 0);
	fx_close(&fx);
}
END_TEST

START_TEST(test_every_page_dirty)
{
	struct fixture fx;

	fx_open(&fx, _i);
	for (size_t i = 0; i < NPAGES; i++)
		fx.ram[i * PAGE + 1] ^= 0x3c;
	ck_assert_uint_eq(fx.ops->scan(fx.t, fx.dirty), NPAGES);
	for (uint32_t i = 0; i < NPAGES; i++)
		ck_assert_uint_eq(fx.dirty[i], i);
	ck_assert_uint_eq(fx.ops->scan(fx.t, fx.dirty), 0);
	fx_close(&fx);
}
END_TEST

/* Deterministic generator (xorshift64*), so a failure replays. */
static uint64_t rng_state;

static uint64_t rng(void)
{
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 0x2545f4914f6cdd1dull;
}

START_TEST(test_random_rounds_match_reference)
{
	struct fixture fx;
	uint8_t *ref = malloc((size_t)NPAGES * PAGE);
	uint32_t *expect = calloc(NPAGES, sizeof(*expect));
	size_t total_dirty = 0;

	ck_assert_ptr_nonnull(ref);
	ck_assert_ptr_nonnull(expect);
	rng_state = 0x9e3779b97f4a7c15ull;
	fx_open(&fx, _i);
	memcpy(ref, fx.ram, (size_t)NPAGES * PAGE);

	for (int round = 0; round < 50; round++) {
		unsigned writes = (unsigned)(rng() % 200);
		size_t n, ne = 0;

		for (unsigned w = 0; w < writes; w++) {
			size_t page = (size_t)(rng() % NPAGES);
			size_t off = (size_t)(rng() % PAGE);
			/* Random values: some writes leave the byte as it was. */
			fx.ram[page * PAGE + off] = (uint8_t)(rng() % 4);
		}
		/* Brute force: which pages differ from the reference. */
		for (uint32_t i = 0; i < NPAGES; i++)
			if (memcmp(fx.ram + (size_t)i * PAGE, ref + (size_t)i * PAGE, PAGE))
				expect[ne++] = i;

		n = fx.ops->scan(fx.t, fx.dirty);
		ck_assert_msg(n == ne, "%s, %u threads, round %d: scan found %zu pages, reference %zu",
			      fx.ops->name, THREADS(_i), round, n, ne);
		for (size_t k = 0; k < n; k++)
			ck_loop_assert_msg(fx.dirty[k] == expect[k],
					   "%s, %u threads, round %d: dirty[%zu] = %u, expected %u",
					   fx.ops->name, THREADS(_i), round, k, fx.dirty[k], expect[k]);
		check_pages_current(&fx, n, "a random round");
		memcpy(ref, fx.ram, (size_t)NPAGES * PAGE);
		total_dirty += n;
	}
	/* The generator did produce work, and writes that kept the value. */
	ck_assert_uint_gt(total_dirty, 1000);
	fx_close(&fx);
	free(expect);
	free(ref);
}
END_TEST

/* RAM of 5 pages: with 16 or more threads most slices are empty and must
 * report nothing. */
START_TEST(test_fewer_pages_than_threads)
{
	const size_t npages = 5;
	uint8_t *ram = mmap(NULL, npages * PAGE, PROT_READ | PROT_WRITE,
			    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	uint32_t dirty[5];
	struct tracker *t = NULL;
	const struct tracker_ops *o = OPS(_i);

	ck_assert_ptr_ne(ram, MAP_FAILED);
	ck_assert_int_eq(o->init(&t, ram, npages, THREADS(_i)), 0);
	ck_assert_int_eq(tracker_full_copy(o, t, npages), 0);
	ck_assert_uint_eq(o->scan(t, dirty), 0);
	ram[4 * PAGE] = 1;
	ram[1 * PAGE + 5] = 2;
	ck_assert_uint_eq(o->scan(t, dirty), 2);
	ck_assert_uint_eq(dirty[0], 1);
	ck_assert_uint_eq(dirty[1], 4);
	ck_assert_uint_eq(o->page(t, 4)[0], 1);
	ck_assert_uint_eq(o->page(t, 1)[5], 2);
	ck_assert_uint_eq(o->scan(t, dirty), 0);
	o->fini(t);
	munmap(ram, npages * PAGE);
}
END_TEST

/* A page changed and changed back within one epoch is as the backup has
 * it: nothing to send. */
START_TEST(test_change_and_change_back_within_epoch_is_not_reported)
{
	struct fixture fx;
	uint8_t orig;

	fx_open(&fx, _i);
	orig = fx.ram[77 * PAGE + 300];
	fx.ram[77 * PAGE + 300] = (uint8_t)(orig + 1);
	memset(fx.ram + 78 * PAGE, 0xee, PAGE);
	fx.ram[77 * PAGE + 300] = orig;
	ck_assert_uint_eq(fx.ops->scan(fx.t, fx.dirty), 1);
	ck_assert_uint_eq(fx.dirty[0], 78);
	check_pages_current(&fx, 1, "change and change back");
	fx_close(&fx);
}
END_TEST

/* The sender's side of the full copy in test_replica_built_...: read the
 * pages of step j with page() into the backup, then undo the guest's
 * writes made to them after their copy (toggled bits), so that the
 * page is again as it was copied. */
struct replica_run {
	const struct tracker_ops *o;
	struct tracker *t;
	uint8_t *ram, *backup;
	size_t npages, step;
	size_t toggled[16][8];  /* per step: offsets toggled after its copy */
};

static void replica_send_step(struct replica_run *rr, size_t j)
{
	for (size_t i = j * rr->step; i < (j + 1) * rr->step && i < rr->npages; i++) {
		const uint8_t *p = rr->o->page(rr->t, (uint32_t)i);

		ck_assert_msg(p, "%s: page %zu gone before it was sent", rr->o->name, i);
		memcpy(rr->backup + i * PAGE, p, PAGE);
	}
	for (int w = 0; w < 8; w++)
		rr->ram[rr->toggled[j][w]] ^= 0x80;
}

/* The whole path of a page to the backup, as the replicator runs it: a full
 * copy in steps with the guest writing between them, each step's pages read
 * with page() as late as the tracker allows (hash: just before its slots are
 * reused; compare keeps them all, so at the end), then rounds of scan, guest
 * writes (the VM runs again before the sender is done) and page() of each
 * reported page, read twice as a NACK's resend would. The backup so built
 * must equal guest RAM as it was at each scan, in every byte. Some writes
 * to a step's pages after its copy are undone once the sender has read
 * them: a tracker that sent the live page instead of the copy it hashed
 * would leave the backup with a value the scan has no reason to resend.
 * With more pages than hash keeps of the full copy, its ring wraps. */
START_TEST(test_replica_built_from_page_matches_ram_at_each_scan)
{
	const struct tracker_ops *o = OPS(_i);
	size_t keep = o->full_copy_keep;
	size_t step = keep ? keep / 2 : 1024, window = keep ? keep / step : 0;
	size_t npages = (keep ? keep : 2048) + 1000, nsteps = (npages + step - 1) / step;
	size_t size = npages * PAGE, sent = 0, total_dirty = 0;
	uint8_t *ram = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	uint8_t *backup = malloc(size), *snap = malloc(size);
	uint32_t *dirty = calloc(npages, sizeof(*dirty));
	struct replica_run rr = { .o = o, .ram = ram, .backup = backup, .npages = npages,
				  .step = step };

	ck_assert_ptr_ne(ram, MAP_FAILED);
	ck_assert_ptr_nonnull(backup);
	ck_assert_ptr_nonnull(snap);
	ck_assert_ptr_nonnull(dirty);
	ck_assert_uint_le(nsteps, 16);
	for (size_t i = 0; i < npages; i++)
		memset(ram + i * PAGE, (int)(i * 7), PAGE);
	memset(backup, 0x55, size);
	rng_state = 0x5851f42d4c957f2dull + (uint64_t)_i;
	ck_assert_int_eq(o->init(&rr.t, ram, npages, THREADS(_i)), 0);
	ck_assert_int_eq(o->begin_full_copy(rr.t), 0);
	for (size_t j = 0; j < nsteps; j++) {
		size_t first = j * step, n = first + step < npages ? step : npages - first;

		/* The sender is as far behind as it may be: step j - window is
		 * written before step j overwrites its slots. */
		for (; window && sent + window <= j; sent++)
			replica_send_step(&rr, sent);
		o->copy_pages(rr.t, first, n);
		/* The guest writes meanwhile: copied pages, pages still to come,
		 * changes undone at once; and toggles in the pages just copied,
		 * undone once the sender has read them. */
		for (int w = 0; w < 50; w++) {
			size_t pg = (size_t)(rng() % npages), off = (size_t)(rng() % PAGE);
			uint8_t old = ram[pg * PAGE + off];

			ram[pg * PAGE + off] = (uint8_t)(old + 1 + rng() % 255);
			if (w % 5 == 0)
				ram[pg * PAGE + off] = old;
		}
		for (int w = 0; w < 8; w++) {
			rr.toggled[j][w] = (first + (size_t)(rng() % n)) * PAGE + rng() % PAGE;
			ram[rr.toggled[j][w]] ^= 0x80;
		}
	}
	for (; sent < nsteps; sent++)
		replica_send_step(&rr, sent);

	for (int round = 0; round < 8; round++) {
		size_t n;

		memcpy(snap, ram, size);
		n = o->scan(rr.t, dirty);
		total_dirty += n;
		/* The VM runs again before the sender reads the staged pages. */
		for (int w = 0; w < 300; w++)
			ram[(size_t)(rng() % npages) * PAGE + rng() % PAGE] = (uint8_t)(rng() % 3);
		for (int resend = 0; resend < 2; resend++)
			for (size_t k = 0; k < n; k++) {
				const uint8_t *p = o->page(rr.t, dirty[k]);

				ck_assert_msg(p, "%s: reported page %u has no content", o->name, dirty[k]);
				if (resend)
					ck_assert_mem_eq(backup + (size_t)dirty[k] * PAGE, p, PAGE);
				memcpy(backup + (size_t)dirty[k] * PAGE, p, PAGE);
			}
		for (size_t i = 0; i < npages; i++)
			ck_loop_assert_msg(!memcmp(backup + i * PAGE, snap + i * PAGE, PAGE),
					   "%s, %u threads, round %d: the backup's page %zu differs "
					   "from guest RAM at the scan", o->name, THREADS(_i), round, i);
	}
	ck_assert_uint_gt(total_dirty, 1000);
	o->fini(rr.t);
	munmap(ram, size);
	free(dirty);
	free(snap);
	free(backup);
}
END_TEST

/* Hash: what the sender reads with page() is the page as it was at the
 * scan, however the guest writes after it, for as long as the epoch may be
 * sent again; a page the scan did not report has no content (NULL). The
 * next scan stages anew. */
START_TEST(test_hash_staging_holds_the_scan_until_the_next)
{
	struct fixture fx;
	uint8_t *at_scan = malloc(3 * PAGE);

	ck_assert_ptr_nonnull(at_scan);
	fx_open_ops(&fx, &hash_tracker_ops, THREADS(_i));
	fx.ram[2 * PAGE + 9] ^= 1;
	fx.ram[600 * PAGE + 4095] ^= 1;
	fx.ram[1000 * PAGE] ^= 1;
	ck_assert_uint_eq(fx.ops->scan(fx.t, fx.dirty), 3);
	for (size_t k = 0; k < 3; k++)
		memcpy(at_scan + k * PAGE, fx.ram + (size_t)fx.dirty[k] * PAGE, PAGE);
	/* The guest runs: the same pages again, and others. */
	memset(fx.ram + 2 * PAGE, 0x11, PAGE);
	memset(fx.ram + 600 * PAGE, 0x22, PAGE);
	memset(fx.ram + 3 * PAGE, 0x33, PAGE);
	for (int resend = 0; resend < 3; resend++)
		for (size_t k = 0; k < 3; k++)
			ck_assert_mem_eq(fx.ops->page(fx.t, fx.dirty[k]), at_scan + k * PAGE, PAGE);
	ck_assert_ptr_null(fx.ops->page(fx.t, 3));
	ck_assert_ptr_null(fx.ops->page(fx.t, 0));
	ck_assert_ptr_null(fx.ops->page(fx.t, NPAGES - 1));
	/* The next scan: pages 2, 3 and 600 changed since; 1000 did not. */
	ck_assert_uint_eq(fx.ops->scan(fx.t, fx.dirty), 3);
	ck_assert_uint_eq(fx.dirty[0], 2);
	ck_assert_uint_eq(fx.dirty[1], 3);
	ck_assert_uint_eq(fx.dirty[2], 600);
	check_pages_current(&fx, 3, "the scan after");
	ck_assert_ptr_null(fx.ops->page(fx.t, 1000));
	free(at_scan);
	fx_close(&fx);
}
END_TEST

/* Pages of [p, p + n) resident, as the kernel says (mincore). */
static size_t resident_pages(const uint8_t *p, size_t n)
{
	unsigned char *vec = calloc(n, 1);
	size_t r = 0;

	ck_assert_ptr_nonnull(vec);
	ck_assert_int_eq(mincore((void *)p, n * PAGE, vec), 0);
	for (size_t i = 0; i < n; i++)
		r += vec[i] & 1;
	free(vec);
	return r;
}

/* Hash: a burst of dirty pages makes staging grow; quiet scans after it
 * give the memory back (checked with mincore, not only the tracker's
 * word), and the next burst grows it again. */
START_TEST(test_hash_staging_shrinks_after_a_burst)
{
	struct fixture fx;
	struct hash_stats st;
	const uint8_t *base;
	size_t n, quiet;

	fx_open_ops(&fx, &hash_tracker_ops, THREADS(_i));
	/* The full copy's ring (all 1024 pages here) is given back at the
	 * first scan. */
	hash_get_stats(fx.t, &st);
	ck_assert_uint_eq(st.staging_pages, NPAGES);
	ck_assert_uint_eq(fx.ops->scan(fx.t, fx.dirty), 0);
	hash_get_stats(fx.t, &st);
	ck_assert_uint_lt(st.staging_pages, NPAGES / 4);
	ck_assert_uint_eq(st.shrinks, 1);
	for (size_t i = 0; i < NPAGES; i++)
		fx.ram[i * PAGE + 17] ^= 0x81;
	ck_assert_uint_eq(fx.ops->scan(fx.t, fx.dirty), NPAGES);
	check_pages_current(&fx, NPAGES, "the burst");
	/* Slot 0 holds the first page reported: the start of staging. */
	base = fx.ops->page(fx.t, 0);
	hash_get_stats(fx.t, &st);
	ck_assert_uint_eq(st.staging_pages, NPAGES);
	ck_assert_uint_eq(st.staged_pages, NPAGES);
	ck_assert_uint_eq(resident_pages(base, NPAGES), NPAGES);

	/* Quiet: 3 pages per scan. Within a few dozen scans staging is back
	 * to its minimum, far less than 1024. */
	for (quiet = 1; quiet <= 32; quiet++) {
		fx.ram[5 * PAGE] ^= 1;
		fx.ram[6 * PAGE] ^= 1;
		fx.ram[900 * PAGE] ^= 1;
		n = fx.ops->scan(fx.t, fx.dirty);
		ck_assert_uint_eq(n, 3);
		check_pages_current(&fx, n, "a quiet scan");
		hash_get_stats(fx.t, &st);
		if (st.shrinks == 2)
			break;
	}
	ck_assert_uint_le(quiet, 32);
	ck_assert_uint_eq(st.staged_pages, 3);
	ck_assert_uint_lt(st.staging_pages, NPAGES / 4);
	ck_assert_uint_eq(st.staging_peak, NPAGES);
	ck_assert_uint_eq(st.shrinks, 2);
	ck_assert_uint_le(resident_pages(base, NPAGES), st.staging_pages);
	ck_assert_uint_eq(st.changed_in_pause, 0);

	/* Another burst: staging grows again, content right. */
	for (size_t i = 0; i < NPAGES; i += 2)
		fx.ram[i * PAGE + 1] ^= 0x42;
	n = fx.ops->scan(fx.t, fx.dirty);
	ck_assert_uint_eq(n, NPAGES / 2);
	check_pages_current(&fx, n, "the second burst");
	hash_get_stats(fx.t, &st);
	ck_assert_uint_eq(st.staging_pages, NPAGES / 2);
	ck_assert_uint_eq(st.scans, 3 + quiet);
	ck_assert_uint_eq(st.dirty, NPAGES + 3 * quiet + NPAGES / 2);
	fx_close(&fx);
}
END_TEST

/* Hash, guest RAM larger than what it keeps of the full copy (its ring of
 * full_copy_keep pages): copied in steps of half that, as dev_memory.c
 * does. A page written after its step is found by the first scan; one
 * written before its step is in the copy; one written after its step and
 * back before the scan is as the backup has it. page() keeps a page of the
 * copy until full_copy_keep more pages were copied, then says NULL (its
 * slot holds another page); after the scan, only what the scan reported. */
START_TEST(test_hash_full_copy_ring_and_writes_during_the_copy)
{
	const struct tracker_ops *o = &hash_tracker_ops;
	size_t keep = o->full_copy_keep, step = keep / 2, npages = keep + 1000;
	uint8_t *ram = mmap(NULL, npages * PAGE, PROT_READ | PROT_WRITE,
			    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	uint32_t *dirty = calloc(npages, sizeof(*dirty));
	struct tracker *t = NULL;
	uint8_t orig;

	ck_assert_uint_ge(keep, 2);
	ck_assert_ptr_ne(ram, MAP_FAILED);
	ck_assert_ptr_nonnull(dirty);
	for (size_t i = 0; i < npages; i++)
		memset(ram + i * PAGE, (int)(i * 13), PAGE);
	ck_assert_int_eq(o->init(&t, ram, npages, THREADS(_i)), 0);
	ck_assert_int_eq(o->begin_full_copy(t), 0);
	o->copy_pages(t, 0, step);
	ram[5 * PAGE + 100] ^= 0xff;            /* after its copy */
	orig = ram[7 * PAGE + 200];
	ram[7 * PAGE + 200] = (uint8_t)~orig;   /* after its copy, then back */
	ram[(keep + 500) * PAGE] ^= 0xff;       /* before its copy */
	ck_assert_uint_ne(o->page(t, 5)[100], ram[5 * PAGE + 100]);
	o->copy_pages(t, step, step);
	ram[7 * PAGE + 200] = orig;
	ck_assert_ptr_nonnull(o->page(t, 0));
	ck_assert_ptr_nonnull(o->page(t, (uint32_t)(keep - 1)));
	o->copy_pages(t, keep, npages - keep);
	/* Slots of pages [0, 1000) now hold pages [keep, keep + 1000). */
	ck_assert_ptr_null(o->page(t, 0));
	ck_assert_ptr_null(o->page(t, 999));
	ck_assert_ptr_nonnull(o->page(t, 1000));
	ck_assert_mem_eq(o->page(t, (uint32_t)(keep + 500)), ram + (keep + 500) * PAGE, PAGE);
	ck_assert_mem_eq(o->page(t, 1000), ram + 1000 * PAGE, PAGE);

	ck_assert_uint_eq(o->scan(t, dirty), 1);
	ck_assert_uint_eq(dirty[0], 5);
	ck_assert_mem_eq(o->page(t, 5), ram + 5 * PAGE, PAGE);
	ck_assert_ptr_null(o->page(t, 1000));
	ck_assert_ptr_null(o->page(t, 7));
	ck_assert_uint_eq(o->scan(t, dirty), 0);
	/* begin starts over: a new session's copy. */
	ck_assert_int_eq(o->begin_full_copy(t), 0);
	ck_assert_ptr_null(o->page(t, 5));
	o->copy_pages(t, 0, 10);
	ck_assert_mem_eq(o->page(t, 5), ram + 5 * PAGE, PAGE);
	o->fini(t);
	free(dirty);
	munmap(ram, npages * PAGE);
}
END_TEST

/* A child that maps path shared with prot and waits; its pid. */
static pid_t start_mapper(const char *path, int prot)
{
	int go[2];
	char c;
	pid_t pid;

	ck_assert_int_eq(pipe(go), 0);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (!pid) {
		int fd = open(path, prot & PROT_WRITE ? O_RDWR : O_RDONLY);

		if (fd < 0 || mmap(NULL, 4 * PAGE, prot, MAP_SHARED, fd, 0) == MAP_FAILED)
			_exit(1);
		if (write(go[1], "x", 1) != 1)
			_exit(1);
		pause();
		_exit(0);
	}
	close(go[1]);
	ck_assert_int_eq(read(go[0], &c, 1), 1);
	close(go[0]);
	return pid;
}

static void stop_mapper(pid_t pid)
{
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
}

/* soft-dirty reads QEMU's page tables only: another process that maps guest
 * RAM writable must be found (the replicator then will not use soft-dirty);
 * QEMU itself and read-only mappings do not count. */
START_TEST(test_softdirty_finds_another_writer)
{
	char path[] = "/tmp/check-tracker-XXXXXX";
	int fd = mkstemp(path);
	pid_t writer, reader;

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(ftruncate(fd, 4 * PAGE), 0);
	close(fd);
	writer = start_mapper(path, PROT_READ | PROT_WRITE);
	reader = start_mapper(path, PROT_READ);
	ck_assert_int_eq(softdirty_other_writer(reader, path), writer);
	ck_assert_int_eq(softdirty_other_writer(writer, path), 0);  /* the writer is QEMU */
	stop_mapper(writer);
	ck_assert_int_eq(softdirty_other_writer(reader, path), 0);
	stop_mapper(reader);
	unlink(path);
}
END_TEST

/* Soft-dirty, on any kernel: a child plays QEMU with the test's shared
 * memfd mapping, inherited at fork. The full copy reads every page through
 * the child's mapping, which maps them all into the child (checked by
 * test_softdirty_full_copy_maps_pages_into_qemu); then the child drops its
 * PTEs (MADV_DONTNEED, on SIGUSR1), as reclaim would, so each of its
 * pagemap entries is not present and the tracker must compare every page
 * (docs/SOFT-DIRTY.md rule 2). It must then find exactly what a
 * brute-force comparison finds, in ascending order, whatever the thread
 * count. The test writes through its own mapping, which the tracker reads. */
struct sd_fixture {
	uint8_t *ram;
	size_t npages;
	int memfd;
	pid_t child;
	int dropped[2];  /* the child writes a byte when its PTEs are gone */
	unsigned keep_every; /* 0: the child drops every PTE; N: all but every N-th */
	struct tracker *t;
	uint32_t *dirty;
};

static void sd_child(struct sd_fixture *fx, const sigset_t *usr1)
{
	int sig;

	close(fx->dropped[0]);
	for (int i = 0; i < 100 && !sigwait(usr1, &sig); i++) {
		for (size_t p = 0; p < fx->npages; p++) {
			size_t run = fx->keep_every ? 1 : fx->npages;

			if (fx->keep_every && p % fx->keep_every == 0)
				continue;
			if (madvise(fx->ram + p * PAGE, run * PAGE, MADV_DONTNEED))
				_exit(1);
			p += run - 1;
		}
		if (write(fx->dropped[1], "d", 1) != 1)
			_exit(1);
	}
	_exit(0);
}

/* The child, the tracker on it and the full copy; the child's PTEs kept. */
static void sd_start(struct sd_fixture *fx, size_t npages, unsigned threads)
{
	sigset_t usr1, old;
	char path[64];

	fx->npages = npages;
	fx->memfd = memfd_create("check-tracker-softdirty", MFD_CLOEXEC);
	ck_assert_int_ge(fx->memfd, 0);
	ck_assert_int_eq(ftruncate(fx->memfd, (off_t)(npages * PAGE)), 0);
	fx->ram = mmap(NULL, npages * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fx->memfd, 0);
	ck_assert_ptr_ne(fx->ram, MAP_FAILED);
	for (size_t i = 0; i < npages; i++)
		for (size_t j = 0; j < PAGE; j += 64)
			fx->ram[i * PAGE + j] = (uint8_t)(i * 31 + j / 64);
	ck_assert_int_eq(pipe(fx->dropped), 0);
	/* Blocked before the fork, so no SIGUSR1 can reach the child early. */
	sigemptyset(&usr1);
	sigaddset(&usr1, SIGUSR1);
	ck_assert_int_eq(sigprocmask(SIG_BLOCK, &usr1, &old), 0);
	fx->child = fork();
	ck_assert_int_ge(fx->child, 0);
	if (fx->child == 0)
		sd_child(fx, &usr1);
	ck_assert_int_eq(sigprocmask(SIG_SETMASK, &old, NULL), 0);
	close(fx->dropped[1]);
	fx->dirty = calloc(npages, sizeof(*fx->dirty));
	ck_assert_ptr_nonnull(fx->dirty);
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fx->memfd);
	ck_assert_int_eq(softdirty_tracker_ops.init_proc(&fx->t, fx->ram, npages, threads,
							 fx->child, path), 0);
	ck_assert_int_eq(tracker_full_copy(&softdirty_tracker_ops, fx->t, npages), 0);
}

/* The child's PTEs dropped: every entry not present from now on. */
static void sd_drop_child_ptes(struct sd_fixture *fx)
{
	char c;

	ck_assert_int_eq(kill(fx->child, SIGUSR1), 0);
	ck_assert_int_eq(read(fx->dropped[0], &c, 1), 1);
}

static void sd_open(struct sd_fixture *fx, size_t npages, unsigned threads)
{
	fx->keep_every = 0;
	sd_start(fx, npages, threads);
	sd_drop_child_ptes(fx);
}

/* How many of the child's pages are present in its pagemap. */
static size_t sd_child_present(struct sd_fixture *fx)
{
	char path[64];
	uint64_t *pm = calloc(fx->npages, sizeof(*pm));
	size_t present = 0;
	int fd;

	ck_assert_ptr_nonnull(pm);
	snprintf(path, sizeof(path), "/proc/%d/pagemap", (int)fx->child);
	fd = open(path, O_RDONLY);
	ck_assert_int_ge(fd, 0);
	/* The child's mapping is at the same address as ours (fork). */
	ck_assert_int_eq(pread(fd, pm, fx->npages * sizeof(*pm),
			       (off_t)((uintptr_t)fx->ram / PAGE * sizeof(*pm))),
			 (ssize_t)(fx->npages * sizeof(*pm)));
	close(fd);
	for (size_t i = 0; i < fx->npages; i++)
		present += !!(pm[i] & (1ull << 63));
	free(pm);
	return present;
}

static void sd_close(struct sd_fixture *fx)
{
	softdirty_tracker_ops.fini(fx->t);
	close(fx->dropped[0]);
	kill(fx->child, SIGKILL);
	waitpid(fx->child, NULL, 0);
	munmap(fx->ram, fx->npages * PAGE);
	close(fx->memfd);
	free(fx->dirty);
}

/* Pages the child (QEMU) never touched are mapped into it by the full
 * copy, so the scans can trust their entries instead of comparing them.
 * (Fork copies no PTEs of a shared file mapping, and the child never
 * touches it: dropped, they stay absent until the next copy.) */
START_TEST(test_softdirty_full_copy_maps_pages_into_qemu)
{
	struct sd_fixture fx = { 0 };
	struct softdirty_stats st;

	sd_start(&fx, NPAGES, thread_counts[_i]);
	softdirty_get_stats(fx.t, &st);
	ck_assert_int_eq(st.populate_error, 0);
	ck_assert_uint_eq(st.populated, NPAGES);
	ck_assert_uint_eq(sd_child_present(&fx), NPAGES);
	sd_drop_child_ptes(&fx);
	ck_assert_uint_eq(sd_child_present(&fx), 0);
	/* A new session's copy maps them again. */
	ck_assert_int_eq(tracker_full_copy(&softdirty_tracker_ops, fx.t, NPAGES), 0);
	ck_assert_uint_eq(sd_child_present(&fx), NPAGES);
	sd_close(&fx);
}
END_TEST

/* A writer outside the watched process (here the test itself, through its
 * own mapping; in life a vhost-user back-end) is not in that process's log:
 * with the child's entries present and clean its write is missed. After
 * softdirty_give_up every page is compared, so the next scan finds it,
 * and so do the ones after. */
START_TEST(test_softdirty_give_up_compares_every_page)
{
	struct sd_fixture fx = { 0 };
	struct softdirty_stats st;

	sd_start(&fx, NPAGES, thread_counts[_i]);
	fx.ram[7 * PAGE] ^= 1;
	ck_assert_uint_eq(softdirty_tracker_ops.scan(fx.t, fx.dirty), 0);
	softdirty_give_up(fx.t);
	ck_assert_uint_eq(softdirty_tracker_ops.scan(fx.t, fx.dirty), 1);
	ck_assert_uint_eq(fx.dirty[0], 7);
	ck_assert_mem_eq(softdirty_tracker_ops.page(fx.t, 7), fx.ram + 7 * PAGE, PAGE);
	fx.ram[900 * PAGE + 3] ^= 1;
	ck_assert_uint_eq(softdirty_tracker_ops.scan(fx.t, fx.dirty), 1);
	ck_assert_uint_eq(fx.dirty[0], 900);
	softdirty_get_stats(fx.t, &st);
	ck_assert_uint_eq(st.full_scans, 2);
	sd_close(&fx);
}
END_TEST

/* Guest RAM on hugetlbfs (here an MFD_HUGETLB memfd) is refused: huge TLB
 * pages keep no soft-dirty bit, every page would read as unwritten. */
START_TEST(test_softdirty_refuses_hugetlbfs)
{
	struct tracker *t = NULL;
	char path[64];
	int fd = memfd_create("check-tracker-hugetlb", MFD_CLOEXEC | MFD_HUGETLB);

	if (fd < 0) {
		printf("test_softdirty_refuses_hugetlbfs: skipped: no hugetlbfs memfd here (%s)\n",
		       strerror(errno));
		return;
	}
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	ck_assert_int_eq(softdirty_tracker_ops.init_proc(&t, NULL, 512, 1, getpid(), path),
			 -EMEDIUMTYPE);
	ck_assert_ptr_null(t);
	close(fd);
}
END_TEST

START_TEST(test_softdirty_untouched_pages_match_reference)
{
	struct sd_fixture fx;
	struct softdirty_stats st;
	uint8_t *ref = malloc((size_t)NPAGES * PAGE);
	uint32_t *expect = calloc(NPAGES, sizeof(*expect));
	size_t total_dirty = 0;
	const int rounds = 30;

	ck_assert_ptr_nonnull(ref);
	ck_assert_ptr_nonnull(expect);
	rng_state = 0x2545f4914f6cdd1dull;
	sd_open(&fx, NPAGES, thread_counts[_i]);
	memcpy(ref, fx.ram, (size_t)NPAGES * PAGE);
	for (int round = 0; round < rounds; round++) {
		unsigned writes = (unsigned)(rng() % 200);
		size_t n, ne = 0;

		for (unsigned w = 0; w < writes; w++)
			fx.ram[(size_t)(rng() % NPAGES) * PAGE + rng() % PAGE] = (uint8_t)(rng() % 4);
		for (uint32_t i = 0; i < NPAGES; i++)
			if (memcmp(fx.ram + (size_t)i * PAGE, ref + (size_t)i * PAGE, PAGE))
				expect[ne++] = i;
		n = softdirty_tracker_ops.scan(fx.t, fx.dirty);
		ck_assert_msg(n == ne, "%u threads, round %d: scan found %zu pages, reference %zu",
			      thread_counts[_i], round, n, ne);
		for (size_t k = 0; k < n; k++)
			ck_loop_assert_msg(fx.dirty[k] == expect[k],
					   "%u threads, round %d: dirty[%zu] = %u, expected %u",
					   thread_counts[_i], round, k, fx.dirty[k], expect[k]);
		for (uint32_t i = 0; i < NPAGES; i++)
			ck_loop_assert_msg(!memcmp(softdirty_tracker_ops.page(fx.t, i),
						   fx.ram + (size_t)i * PAGE, PAGE),
					   "round %d: page %u not current after scan", round, i);
		memcpy(ref, fx.ram, (size_t)NPAGES * PAGE);
		total_dirty += n;
	}
	ck_assert_uint_gt(total_dirty, 1000);
	softdirty_get_stats(fx.t, &st);
	ck_assert_uint_eq(st.scans, rounds);
	ck_assert_uint_eq(st.full_scans, 0);
	ck_assert_uint_eq(st.absent, (uint64_t)rounds * NPAGES);
	ck_assert_uint_eq(st.compared, (uint64_t)rounds * NPAGES);
	ck_assert_uint_eq(st.copied, total_dirty);
	sd_close(&fx);
	free(expect);
	free(ref);
}
END_TEST

/* PAGEMAP_SCAN's ranges against the pagemap read, page for page, on any
 * kernel that has the ioctl (6.7+; soft-dirty or not): the child keeps
 * every third page mapped (present: trusted) and drops the rest (not
 * present: compared). The scans alternate between the two ways of reading
 * and must each find exactly the changed pages, in order; only pages not
 * present are written (a write through our mapping, which is not the
 * child's, would leave a present page unflagged, and the shadow stale if
 * reclaim ever dropped that entry). With one thread the chunk's 1,024
 * ranges overflow its first buffers (256, 512, then 1,024 with the
 * kernel's own 512-range bounce buffer filled twice): those scans read
 * pagemap, the buffer grows, and the scans after it use the ranges. */
#define RANGES_NPAGES 3072u
START_TEST(test_softdirty_ranges_agree_with_pagemap_read)
{
	struct sd_fixture fx = { .keep_every = 3 };
	struct softdirty_stats st;
	uint8_t *ref = malloc((size_t)RANGES_NPAGES * PAGE);
	uint32_t *expect = calloc(RANGES_NPAGES, sizeof(*expect));
	const int rounds = 20;
	size_t total = 0, absent_pages = 0;
	int rc, ioctl_scans = 0;

	ck_assert_ptr_nonnull(ref);
	ck_assert_ptr_nonnull(expect);
	rng_state = 0x9e3779b97f4a7c15ull;
	sd_start(&fx, RANGES_NPAGES, thread_counts[_i]);
	sd_drop_child_ptes(&fx);
	rc = softdirty_set_log_read(fx.t, true);
	if (rc == -ENOTTY) {
		printf("test_softdirty_ranges_agree_with_pagemap_read: skipped: no PAGEMAP_SCAN "
		       "in this kernel (before 6.7)\n");
		goto out;
	}
	ck_assert_int_eq(rc, 0);
	for (uint32_t i = 0; i < RANGES_NPAGES; i++)
		absent_pages += i % 3 != 0;
	memcpy(ref, fx.ram, (size_t)RANGES_NPAGES * PAGE);
	for (int round = 0; round < rounds; round++) {
		unsigned writes = 20 + (unsigned)(rng() % 200);
		bool by_ioctl = round % 4 != 3;
		size_t n, ne = 0;

		ioctl_scans += by_ioctl;
		ck_assert_int_eq(softdirty_set_log_read(fx.t, by_ioctl), 0);
		for (unsigned w = 0; w < writes; w++) {
			size_t pg = (size_t)(rng() % RANGES_NPAGES);

			pg += pg % 3 == 0;  /* a page the child does not map */
			fx.ram[pg * PAGE + rng() % PAGE] ^= (uint8_t)(1 + rng() % 255);
		}
		for (uint32_t i = 0; i < RANGES_NPAGES; i++)
			if (memcmp(fx.ram + (size_t)i * PAGE, ref + (size_t)i * PAGE, PAGE))
				expect[ne++] = i;
		n = softdirty_tracker_ops.scan(fx.t, fx.dirty);
		ck_assert_msg(n == ne, "%u threads, round %d (%s): scan found %zu pages, reference %zu",
			      thread_counts[_i], round, by_ioctl ? "ioctl" : "read", n, ne);
		for (size_t k = 0; k < n; k++)
			ck_assert_msg(fx.dirty[k] == expect[k],
				      "%u threads, round %d: dirty[%zu] = %u, expected %u",
				      thread_counts[_i], round, k, fx.dirty[k], expect[k]);
		memcpy(ref, fx.ram, (size_t)RANGES_NPAGES * PAGE);
		total += n;
	}
	ck_assert_uint_gt(total, 500);
	softdirty_get_stats(fx.t, &st);
	ck_assert_uint_eq(st.full_scans, 0);
	ck_assert_uint_eq(st.absent, (uint64_t)rounds * absent_pages);
	ck_assert_uint_eq(st.flagged, 0);
	/* The ranges served most scans: overflows stop once a buffer has grown. */
	ck_assert_uint_gt(st.ioctl_reads, 0);
	if (thread_counts[_i] == 1) {
		ck_assert_uint_ge(st.ioctl_overflows, 1);
		ck_assert_msg(st.ioctl_overflows <= 3, "%llu overflows in %d scans by the ioctl",
			      (unsigned long long)st.ioctl_overflows, ioctl_scans);
		ck_assert_uint_eq(st.ioctl_reads + st.ioctl_overflows, (uint64_t)ioctl_scans);
	}
out:
	sd_close(&fx);
	free(expect);
	free(ref);
}
END_TEST

/* Tiny RAM: 13 pages in 12 chunks (3 threads) leaves chunks empty; they
 * get a buffer too, and the ranges find the written pages. */
START_TEST(test_softdirty_ranges_tiny_ram)
{
	struct sd_fixture fx;
	struct softdirty_stats st;
	int rc;

	sd_open(&fx, 13, thread_counts[_i]);
	rc = softdirty_set_log_read(fx.t, true);
	if (rc == -ENOTTY) {
		printf("test_softdirty_ranges_tiny_ram: skipped: no PAGEMAP_SCAN in this kernel\n");
		goto out;
	}
	ck_assert_int_eq(rc, 0);
	ck_assert_uint_eq(softdirty_tracker_ops.scan(fx.t, fx.dirty), 0);
	fx.ram[12 * PAGE + 7] ^= 1;
	fx.ram[1 * PAGE] ^= 4;
	ck_assert_uint_eq(softdirty_tracker_ops.scan(fx.t, fx.dirty), 2);
	ck_assert_uint_eq(fx.dirty[0], 1);
	ck_assert_uint_eq(fx.dirty[1], 12);
	softdirty_get_stats(fx.t, &st);
	ck_assert_uint_gt(st.ioctl_reads, 0);
	ck_assert_uint_eq(st.ioctl_overflows, 0);
out:
	sd_close(&fx);
}
END_TEST

/* Lazy clearing forced to every third scan: the scans in between leave
 * the log as it is, and the pages written are still found exactly (here
 * every entry is absent, so every page is compared whatever the log says;
 * the log's side is test_softdirty.sh's lazy-clear run, in a VM whose
 * kernel keeps it). By cost, absent pages are compared whether or not the
 * log is cleared, so they never make a clear pay (lazy_clear.h): after the
 * first scan, which clears to measure, every scan leaves the log. */
START_TEST(test_softdirty_lazy_clear)
{
	struct sd_fixture fx;
	struct softdirty_stats st;

	sd_open(&fx, 16384, thread_counts[_i]);
	for (int round = 0; round < 6; round++)
		ck_assert_uint_eq(softdirty_tracker_ops.scan(fx.t, fx.dirty), 0);
	softdirty_get_stats(fx.t, &st);
	ck_assert_uint_eq(st.clears_skipped, 5);
	ck_assert_uint_eq(st.flagged_same, 0);
	softdirty_set_clear_every(fx.t, 3);
	for (int round = 0; round < 9; round++) {
		fx.ram[(size_t)(round * 1001 % 16384) * PAGE + 9] ^= 1;
		ck_assert_uint_eq(softdirty_tracker_ops.scan(fx.t, fx.dirty), 1);
		ck_assert_uint_eq(fx.dirty[0], round * 1001 % 16384);
	}
	softdirty_get_stats(fx.t, &st);
	ck_assert_uint_eq(st.scans, 15);
	ck_assert_uint_eq(st.clears_skipped, 5 + 6); /* and scans 7, 8, 10, 11, 13, 14 */
	ck_assert_uint_eq(st.full_scans, 0);
	sd_close(&fx);
}
END_TEST

START_TEST(test_softdirty_fewer_pages_than_threads)
{
	struct sd_fixture fx;

	sd_open(&fx, 5, thread_counts[_i]);
	ck_assert_uint_eq(softdirty_tracker_ops.scan(fx.t, fx.dirty), 0);
	fx.ram[4 * PAGE] ^= 1;
	fx.ram[1 * PAGE + 5] ^= 2;
	ck_assert_uint_eq(softdirty_tracker_ops.scan(fx.t, fx.dirty), 2);
	ck_assert_uint_eq(fx.dirty[0], 1);
	ck_assert_uint_eq(fx.dirty[1], 4);
	ck_assert_mem_eq(softdirty_tracker_ops.page(fx.t, 4), fx.ram + 4 * PAGE, PAGE);
	ck_assert_mem_eq(softdirty_tracker_ops.page(fx.t, 1), fx.ram + 1 * PAGE, PAGE);
	ck_assert_uint_eq(softdirty_tracker_ops.scan(fx.t, fx.dirty), 0);
	sd_close(&fx);
}
END_TEST

/* Each test runs once per entry of thread_counts (_i indexes it); a
 * generic one once per tracker of generic_ops and thread count (OPS(_i),
 * THREADS(_i)). */
static void add(Suite *s, const char *name, const TTest *t, double timeout, unsigned trackers)
{
	TCase *tc = tcase_create(name);

	tcase_set_timeout(tc, timeout);
	tcase_add_loop_test(tc, t, 0, (int)(trackers * NTHREAD_COUNTS));
	suite_add_tcase(s, tc);
}

#define ADD(s, t, to) add((s), #t, t, (to), 1)
#define ADD_GENERIC(s, t, to) add((s), #t, t, (to), NGENERIC)

static Suite *tracker_suite(void)
{
	Suite *s = suite_create("tracker");
	TCase *tc;

	ADD_GENERIC(s, test_ops_are_named_and_complete, 5);
	ADD_GENERIC(s, test_scan_after_full_copy_finds_nothing, 5);
	ADD_GENERIC(s, test_full_copy_is_a_copy_not_a_view, 5);
	ADD_GENERIC(s, test_full_copy_in_steps_with_writes_between, 5);
	ADD_GENERIC(s, test_scan_reports_exactly_the_written_pages_in_order, 5);
	ADD_GENERIC(s, test_last_byte_of_page_counts, 5);
	ADD_GENERIC(s, test_restoring_old_value_after_scan_is_a_change, 5);
	ADD_GENERIC(s, test_write_of_same_value_is_not_a_change, 5);
	ADD_GENERIC(s, test_change_and_change_back_within_epoch_is_not_reported, 5);
	ADD_GENERIC(s, test_every_page_dirty, 5);
	ADD_GENERIC(s, test_random_rounds_match_reference, 60);
	ADD_GENERIC(s, test_fewer_pages_than_threads, 5);
	ADD_GENERIC(s, test_replica_built_from_page_matches_ram_at_each_scan, 60);
	ADD(s, test_hash_staging_holds_the_scan_until_the_next, 5);
	ADD(s, test_hash_staging_shrinks_after_a_burst, 5);
	ADD(s, test_hash_full_copy_ring_and_writes_during_the_copy, 10);
	ADD(s, test_softdirty_full_copy_maps_pages_into_qemu, 5);
	ADD(s, test_softdirty_give_up_compares_every_page, 5);
	ADD(s, test_softdirty_untouched_pages_match_reference, 60);
	ADD(s, test_softdirty_lazy_clear, 5);
	ADD(s, test_softdirty_ranges_agree_with_pagemap_read, 30);
	ADD(s, test_softdirty_ranges_tiny_ram, 5);
	tc = tcase_create("softdirty_hugetlbfs");
	tcase_add_test(tc, test_softdirty_refuses_hugetlbfs);
	suite_add_tcase(s, tc);
	ADD(s, test_softdirty_fewer_pages_than_threads, 5);
	tc = tcase_create("softdirty_other_writer");
	tcase_add_test(tc, test_softdirty_finds_another_writer);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(tracker_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
