/* Holes in guest RAM (replicator/ram_holes.h) and the hash tracker that
 * skips them, on a real tmpfs file (a memfd): which pages are believed
 * holes, that a hole written later is found, that holes nobody writes stay
 * holes however often the tracker scans, and, against brute force, that
 * skipping them loses no page: the replica built from what the tracker
 * sends equals guest RAM after every scan, with pages written into holes
 * and data punched out again between scans. The brute force reads the file
 * with pread, which does not allocate holes (a read through a mapping
 * would). */
#include "../replicator/ram_holes.h"
#include "../replicator/tracker.h"

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define PAGE 4096u

struct file {
	int fd;
	size_t npages;
	uint8_t *guest; /* read-write: the "guest" */
	uint8_t *ram;   /* read-only: what the tracker reads, as the replicator maps it */
};

static void file_open(struct file *f, size_t npages)
{
	f->npages = npages;
	f->fd = memfd_create("ram-holes-test", MFD_CLOEXEC);
	ck_assert_int_ge(f->fd, 0);
	ck_assert_int_eq(ftruncate(f->fd, (off_t)(npages * PAGE)), 0);
	f->guest = mmap(NULL, npages * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, f->fd, 0);
	f->ram = mmap(NULL, npages * PAGE, PROT_READ, MAP_SHARED, f->fd, 0);
	ck_assert_ptr_ne(f->guest, MAP_FAILED);
	ck_assert_ptr_ne(f->ram, MAP_FAILED);
}

static void file_close(struct file *f)
{
	munmap(f->guest, f->npages * PAGE);
	munmap(f->ram, f->npages * PAGE);
	close(f->fd);
}

/* The guest writes pages [from, to), each with its own non-zero bytes. */
static void write_pages(struct file *f, size_t from, size_t to, uint8_t salt)
{
	for (size_t i = from; i < to; i++)
		memset(f->guest + i * PAGE, (int)((i * 7 + salt) | 1), PAGE);
}

static void punch(struct file *f, size_t from, size_t to)
{
	ck_assert_int_eq(fallocate(f->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
				   (off_t)(from * PAGE), (off_t)((to - from) * PAGE)), 0);
}

/* Pages of the file that hold memory. */
static size_t allocated_pages(const struct file *f)
{
	struct stat st;

	ck_assert_int_eq(fstat(f->fd, &st), 0);
	return (size_t)st.st_blocks * 512 / PAGE;
}

/* Is [from, to) of the file a hole, all of it? */
static bool is_hole(const struct file *f, size_t from, size_t to)
{
	off_t d = lseek(f->fd, (off_t)(from * PAGE), SEEK_DATA);

	return (d < 0 && errno == ENXIO) || (d >= 0 && (size_t)d >= to * PAGE);
}

static void check_bits(const struct ram_holes *h, size_t from, size_t to, bool data)
{
	for (size_t i = from; i < to; i++)
		ck_assert_msg(ram_holes_is_data(h, i) == data, "page %zu: %s, expected %s", i,
			      ram_holes_is_data(h, i) ? "data" : "hole", data ? "data" : "hole");
}

START_TEST(test_learn_and_refresh)
{
	struct file f;
	struct ram_holes h;

	file_open(&f, 1024);
	write_pages(&f, 0, 10, 0);
	write_pages(&f, 20, 30, 0);   /* a hole of 10 pages between: too short */
	write_pages(&f, 300, 301, 0); /* holes of 270 and 723 pages around it */
	ck_assert_int_eq(ram_holes_init(&h, f.fd, f.npages), 0);
	check_bits(&h, 0, f.npages, true); /* nothing learned yet: all data */
	ck_assert_int_eq(ram_holes_learn(&h, 0, f.npages), 0);
	check_bits(&h, 0, 30, true);
	check_bits(&h, 30, 300, false);
	check_bits(&h, 300, 301, true);
	check_bits(&h, 301, f.npages, false);
	ck_assert_uint_eq(ram_holes_count(&h), 270 + 723);
	ck_assert_uint_eq(ram_holes_next_data(&h, 30, f.npages), 300);
	ck_assert_uint_eq(ram_holes_next_data(&h, 301, f.npages), f.npages);

	/* written since: found by the refresh; what is left of the hole
	 * stays a hole where it is long enough, and becomes data where not */
	write_pages(&f, 100, 101, 1);
	write_pages(&f, 40, 41, 1);
	write_pages(&f, 800, 802, 1);
	ck_assert_int_eq(ram_holes_refresh(&h), 0);
	check_bits(&h, 30, 101, true);  /* holes of 10 and 59 pages left: short */
	check_bits(&h, 101, 300, false);
	check_bits(&h, 301, 800, false);
	check_bits(&h, 800, 802, true);
	check_bits(&h, 802, f.npages, false);
	ck_assert_uint_eq(h.found, 1 + 1 + 2);
	/* a believed hole is read with pread: what the file holds, even
	 * where the bitmap is wrong (written behind its back) */
	{
		uint8_t buf[PAGE], zero[PAGE] = { 0 };

		ck_assert_ptr_eq(ram_holes_read(&h, f.ram, 100, buf), f.ram + 100 * PAGE);
		ck_assert_ptr_eq(ram_holes_read(&h, f.ram, 500, buf), buf);
		ck_assert(!memcmp(buf, zero, PAGE));
		write_pages(&f, 500, 501, 7);
		ck_assert_ptr_eq(ram_holes_read(&h, f.ram, 500, buf), buf);
		ck_assert(!memcmp(buf, f.guest + 500 * PAGE, PAGE));
	}
	/* the file holds one page the bitmap calls a hole: the count says so */
	ck_assert_int_eq(ram_holes_check(&h), 1);
	ck_assert_int_eq(ram_holes_refresh(&h), 0);
	ck_assert_int_eq(ram_holes_check(&h), 1); /* data pages never read: holes in the file */
	ram_holes_give_up(&h);
	ck_assert_uint_eq(ram_holes_count(&h), 0);
	ram_holes_fini(&h);
	file_close(&f);
}
END_TEST

START_TEST(test_refuses_what_is_not_tmpfs)
{
	struct ram_holes h;
	int p[2];

	ck_assert_int_eq(pipe(p), 0);
	ck_assert_int_eq(ram_holes_init(&h, p[0], 16), -ENOTSUP);
	ck_assert(ram_holes_is_data(&h, 3));
	ck_assert_uint_eq(ram_holes_count(&h), 0);
	ram_holes_fini(&h);
	close(p[0]);
	close(p[1]);
}
END_TEST

/* The hash tracker with holes against brute force. */
struct run {
	struct file f;
	const struct tracker_ops *ops;
	struct tracker *t;
	uint32_t *dirty;
	uint8_t *replica; /* built from page() only */
	uint8_t *now;     /* the file as pread reads it */
};

static void read_file(struct run *r)
{
	ck_assert_int_eq(pread(r->f.fd, r->now, r->f.npages * PAGE, 0),
			 (ssize_t)(r->f.npages * PAGE));
}

static void check_replica(struct run *r, const char *when)
{
	read_file(r);
	for (size_t i = 0; i < r->f.npages; i++)
		ck_assert_msg(!memcmp(r->replica + i * PAGE, r->now + i * PAGE, PAGE),
			      "%s: replica page %zu differs from guest RAM", when, i);
}

static void run_open(struct run *r, size_t npages, unsigned threads)
{
	file_open(&r->f, npages);
	r->ops = &hash_tracker_ops;
	r->dirty = calloc(npages, sizeof(*r->dirty));
	r->replica = calloc(npages, PAGE);
	r->now = malloc(npages * PAGE);
	ck_assert(r->dirty && r->replica && r->now);
	ck_assert_int_eq(r->ops->init(&r->t, r->f.ram, npages, threads), 0);
	ck_assert_int_eq(hash_skip_holes(r->t, r->f.fd), 0);
}

/* The full copy, all of it kept by the ring (npages <= 8192), into the
 * replica; the replica starts as garbage so a hole not sent shows. */
static void run_full_copy(struct run *r)
{
	memset(r->replica, 0xa5, r->f.npages * PAGE);
	ck_assert_int_eq(tracker_full_copy(r->ops, r->t, r->f.npages), 0);
	for (uint32_t i = 0; i < r->f.npages; i++) {
		const uint8_t *p = r->ops->page(r->t, i);

		ck_assert_msg(p, "full copy: no page %u", i);
		memcpy(r->replica + (size_t)i * PAGE, p, PAGE);
	}
	check_replica(r, "after the full copy");
}

/* A scan, applied to the replica; checked against brute force. */
static size_t run_scan(struct run *r, const char *when)
{
	size_t n, expect = 0;

	read_file(r);
	for (size_t i = 0; i < r->f.npages; i++)
		expect += memcmp(r->replica + i * PAGE, r->now + i * PAGE, PAGE) != 0;
	n = r->ops->scan(r->t, r->dirty);
	for (size_t k = 0; k < n; k++) {
		const uint8_t *p = r->ops->page(r->t, r->dirty[k]);

		ck_assert(k == 0 || r->dirty[k] > r->dirty[k - 1]);
		ck_assert_ptr_nonnull(p);
		memcpy(r->replica + (size_t)r->dirty[k] * PAGE, p, PAGE);
	}
	ck_assert_msg(n == expect, "%s: scan reported %zu pages, %zu differ", when, n, expect);
	check_replica(r, when);
	return n;
}

static void run_close(struct run *r)
{
	r->ops->fini(r->t);
	free(r->dirty);
	free(r->replica);
	free(r->now);
	file_close(&r->f);
}

static uint64_t rng_state;
static uint64_t rng(void)
{
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 0x2545f4914f6cdd1dull;
}

static const unsigned thread_counts[] = { 1, 3 };

START_TEST(test_hash_tracker_skips_holes_and_misses_nothing)
{
	/* not a multiple of 64: the bitmap's last word is partly used */
	const size_t npages = 4133, untouched = 3584; /* [untouched, npages): never written */
	struct run r;
	struct hash_stats st;
	size_t before, written_into_holes = 0;

	rng_state = 0x9e3779b97f4a7c15ull + (uint64_t)_i;
	run_open(&r, npages, thread_counts[_i]);
	write_pages(&r.f, 0, 200, 0);
	write_pages(&r.f, 1000, 1100, 0);
	write_pages(&r.f, 2000, 2001, 0);
	before = allocated_pages(&r.f);
	ck_assert_uint_eq(before, 301);
	run_full_copy(&r);
	ck_assert_uint_eq(allocated_pages(&r.f), before); /* the copy read no hole */

	for (int round = 0; round < 40; round++) {
		char when[64];

		for (unsigned w = (unsigned)(rng() % 30); w > 0; w--) {
			size_t page = (size_t)(rng() % untouched);

			written_into_holes += is_hole(&r.f, page, page + 1);
			/* some writes are of zeroes: a hole written with
			 * zeroes changes nothing the backup has */
			memset(r.f.guest + page * PAGE + rng() % PAGE, (int)(rng() % 3), 1);
		}
		if (round % 5 == 4) { /* a balloon gives pages back */
			size_t from = (size_t)(rng() % (untouched - 8));

			punch(&r.f, from, from + 1 + rng() % 8);
		}
		snprintf(when, sizeof(when), "%u threads, round %d", thread_counts[_i], round);
		run_scan(&r, when);
	}
	ck_assert_uint_gt(written_into_holes, 100);
	hash_get_stats(r.t, &st);
	ck_assert(st.skips_holes);
	ck_assert_uint_gt(st.holes_found, 0);
	ck_assert_uint_gt(st.hole_pages, npages - untouched);
	/* never written, never read: still a hole, after 40 scans */
	ck_assert(is_hole(&r.f, untouched, npages));
	ck_assert_uint_le(allocated_pages(&r.f), untouched);
	ck_assert_uint_eq(st.hole_checks_failed, 0);
	run_close(&r);
}
END_TEST

/* The full copy in steps (the replicator's), the guest writing between
 * them: into holes already learned and sent as zeroes, and into holes not
 * learned yet. */
START_TEST(test_hash_full_copy_in_steps_with_writes_into_holes)
{
	const size_t npages = 3000, step = 700;
	struct run r;

	run_open(&r, npages, 2);
	write_pages(&r.f, 0, 100, 0);
	write_pages(&r.f, 1500, 1600, 0);
	memset(r.replica, 0xa5, npages * PAGE);
	ck_assert_int_eq(r.ops->begin_full_copy(r.t), 0);
	for (size_t first = 0; first < npages; first += step) {
		size_t n = first + step < npages ? step : npages - first;

		r.ops->copy_pages(r.t, first, n);
		for (size_t i = first; i < first + n; i++)
			memcpy(r.replica + i * PAGE, r.ops->page(r.t, (uint32_t)i), PAGE);
		write_pages(&r.f, first + 300, first + 301, 3);  /* copied already */
		if (first + step + 300 < npages)
			write_pages(&r.f, first + step + 300, first + step + 301, 4); /* not yet */
	}
	run_scan(&r, "the first scan after a copy in steps");
	write_pages(&r.f, 2900, 2901, 5);
	run_scan(&r, "the next");
	run_close(&r);
}
END_TEST

/* A refresh that misses a written hole (what SEEK_DATA does for a page
 * the kernel is moving): the file then holds more pages than the scan
 * read, and the same scan reads every hole and reports the write. */
START_TEST(test_hash_missed_hole_is_caught_by_the_count)
{
	struct run r;
	struct hash_stats st;

	run_open(&r, 2111, 2);
	write_pages(&r.f, 0, 300, 0);
	write_pages(&r.f, 1000, 1010, 0);
	run_full_copy(&r);
	write_pages(&r.f, 5, 8, 2);       /* data pages: reported by round 1 */
	write_pages(&r.f, 600, 601, 2);   /* believed holes the refresh will miss */
	write_pages(&r.f, 2100, 2101, 2);
	ram_holes_test_blind(true);
	ck_assert_uint_eq(run_scan(&r, "a refresh blind to two written holes"), 5);
	ram_holes_test_blind(false);
	hash_get_stats(r.t, &st);
	ck_assert_uint_eq(st.hole_checks_failed, 1);
	ck_assert(!st.skips_holes);
	write_pages(&r.f, 1700, 1701, 3);
	run_scan(&r, "every page read since");
	run_close(&r);
}
END_TEST

/* A new full copy (a new session) learns the holes again: pages punched
 * since are no longer read. (Between two full copies, a page punched out
 * is read, which allocates it again: ram_holes.h.) */
START_TEST(test_hash_full_copy_learns_punched_pages)
{
	struct run r;
	struct hash_stats st0, st1;

	run_open(&r, 2048, 2);
	write_pages(&r.f, 0, 1024, 0);
	run_full_copy(&r);
	hash_get_stats(r.t, &st0);
	ck_assert_uint_eq(st0.hole_pages, 1024);
	punch(&r.f, 256, 768);
	run_full_copy(&r);
	hash_get_stats(r.t, &st1);
	ck_assert_uint_eq(st1.hole_pages, 1024 + 512);
	write_pages(&r.f, 100, 110, 9);
	run_scan(&r, "after the second copy");
	ck_assert(is_hole(&r.f, 256, 768)); /* the scan did not read them back in */
	ck_assert_uint_eq(allocated_pages(&r.f), 512);
	run_close(&r);
}
END_TEST

/* The tracker without holes on a file that has them (not asked to skip):
 * every page read, as before. */
START_TEST(test_hash_without_skip_reads_every_page)
{
	struct run r;

	file_open(&r.f, 512);
	r.ops = &hash_tracker_ops;
	r.dirty = calloc(512, sizeof(*r.dirty));
	r.replica = calloc(512, PAGE);
	r.now = malloc(512 * PAGE);
	ck_assert_int_eq(r.ops->init(&r.t, r.f.ram, 512, 1), 0);
	write_pages(&r.f, 0, 10, 0);
	run_full_copy(&r);
	ck_assert_uint_eq(allocated_pages(&r.f), 512);
	run_close(&r);
}
END_TEST

static Suite *ram_holes_suite(void)
{
	Suite *s = suite_create("ram_holes");
	TCase *tc = tcase_create("ram_holes");

	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_learn_and_refresh);
	tcase_add_test(tc, test_refuses_what_is_not_tmpfs);
	tcase_add_loop_test(tc, test_hash_tracker_skips_holes_and_misses_nothing, 0,
			    (int)(sizeof(thread_counts) / sizeof(thread_counts[0])));
	tcase_add_test(tc, test_hash_full_copy_learns_punched_pages);
	tcase_add_test(tc, test_hash_full_copy_in_steps_with_writes_into_holes);
	tcase_add_test(tc, test_hash_missed_hole_is_caught_by_the_count);
	tcase_add_test(tc, test_hash_without_skip_reads_every_page);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(ram_holes_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
