/* The dirty ranges of a disk built from the extents QEMU's NBD server
 * reports for a dirty bitmap (replicator/dirty_ranges.c): adjacent dirty
 * extents merge, clean ones leave gaps, the disk's end cuts, and replies
 * that do not follow on, empty extents, half pairs or extents past the end
 * are refused. Then random replies against a brute-force block map, and
 * the cut of a range into an image's holes and data (disk_bitmap.c). */
#include "../replicator/dev_disk.h"
#include "../replicator/dirty_ranges.h"

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

START_TEST(test_merge_and_gaps)
{
	struct dirty_ranges rg;
	/* [len, flags]: 4K dirty, 4K dirty, 8K clean, 4K dirty */
	const uint32_t a[] = { 4096, 1, 4096, 1, 8192, 0, 4096, 1 };
	/* the next reply goes on: 4K dirty (adjacent), then clean to the end */
	const uint32_t b[] = { 4096, 3, 1u << 20, 0 };

	dirty_ranges_init(&rg, 64 << 10);
	ck_assert_int_eq(dirty_ranges_add(&rg, 0, a, 8), 0);
	ck_assert_uint_eq(rg.n, 2);
	ck_assert_uint_eq(rg.v[0].off, 0);
	ck_assert_uint_eq(rg.v[0].len, 8192);
	ck_assert_uint_eq(rg.v[1].off, 16384);
	ck_assert_uint_eq(rg.next, 20480);
	ck_assert_int_eq(dirty_ranges_add(&rg, 20480, b, 4), 0);
	ck_assert_uint_eq(rg.n, 2);
	ck_assert_uint_eq(rg.v[1].len, 8192);
	ck_assert_uint_eq(rg.bytes, 16384);
	ck_assert_uint_eq(rg.next, 64 << 10); /* cut at the disk's end */
	dirty_ranges_free(&rg);
}
END_TEST

START_TEST(test_end_cuts_a_dirty_extent)
{
	struct dirty_ranges rg;
	const uint32_t a[] = { 1u << 30, 1 };

	dirty_ranges_init(&rg, 12288);
	ck_assert_int_eq(dirty_ranges_add(&rg, 0, a, 2), 0);
	ck_assert_uint_eq(rg.n, 1);
	ck_assert_uint_eq(rg.v[0].len, 12288);
	ck_assert_uint_eq(rg.bytes, 12288);
	dirty_ranges_free(&rg);
}
END_TEST

START_TEST(test_refused)
{
	const uint32_t ok[] = { 4096, 1 }, empty[] = { 0, 1 }, half[] = { 4096, 1, 4096 };
	struct dirty_ranges rg;

	dirty_ranges_init(&rg, 8192);
	ck_assert_int_eq(dirty_ranges_add(&rg, 4096, ok, 2), -EPROTO); /* not where it left off */
	dirty_ranges_free(&rg);
	ck_assert_int_eq(dirty_ranges_add(&rg, 0, empty, 2), -EPROTO);
	dirty_ranges_free(&rg);
	ck_assert_int_eq(dirty_ranges_add(&rg, 0, half, 3), -EPROTO);
	dirty_ranges_free(&rg);
	ck_assert_int_eq(dirty_ranges_add(&rg, 0, ok, 0), -EPROTO); /* says nothing */
	dirty_ranges_free(&rg);
	/* past the end: the first reply ends it, a second starts beyond */
	ck_assert_int_eq(dirty_ranges_add(&rg, 0, (const uint32_t[]){ 8192, 0, 4096, 1 }, 4),
			 -EPROTO);
	/* an error sticks */
	ck_assert_int_eq(dirty_ranges_add(&rg, 8192, ok, 2), -EPROTO);
	dirty_ranges_free(&rg);
}
END_TEST

static uint32_t rnd(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return (uint32_t)(*s >> 11);
}

/* Random replies of random extents over a 1 MiB disk of 4 KiB blocks: the
 * ranges are sorted, disjoint, not touching (touching ones merge), inside
 * the disk, and mark exactly the blocks the extents said were dirty. */
START_TEST(test_random_against_block_map)
{
	enum { BLOCKS = 256, BLK = 4096 };
	uint64_t seed = 0x9e3779b97f4a7c15ull;

	for (int round = 0; round < 2000; round++) {
		bool want[BLOCKS] = { false }, got[BLOCKS] = { false };
		struct dirty_ranges rg;
		uint64_t at = 0, bytes = 0;

		dirty_ranges_init(&rg, (uint64_t)BLOCKS * BLK);
		while (at < rg.size) {
			uint32_t e[16];
			size_t n = 2 * (1 + rnd(&seed) % 8);
			uint64_t off = at;

			for (size_t i = 0; i < n; i += 2) {
				e[i] = (1 + rnd(&seed) % 12) * BLK;
				e[i + 1] = rnd(&seed) % 3 == 0 ? 1 : 0;
				for (uint64_t b = off / BLK; e[i + 1] && b < BLOCKS &&
				     b < (off + e[i]) / BLK; b++)
					want[b] = true;
				off += e[i];
				if (off >= rg.size) {
					n = i + 2;
					break;
				}
			}
			ck_assert_int_eq(dirty_ranges_add(&rg, at, e, n), 0);
			at = rg.next;
		}
		for (size_t i = 0; i < rg.n; i++) {
			ck_assert(rg.v[i].len > 0);
			ck_assert(rg.v[i].off + rg.v[i].len <= rg.size);
			if (i)
				ck_assert(rg.v[i - 1].off + rg.v[i - 1].len < rg.v[i].off);
			for (uint64_t b = rg.v[i].off / BLK; b < (rg.v[i].off + rg.v[i].len) / BLK; b++)
				got[b] = true;
			bytes += rg.v[i].len;
		}
		ck_assert_uint_eq(bytes, rg.bytes);
		ck_assert_mem_eq(want, got, sizeof(want));
		dirty_ranges_free(&rg);
	}
}
END_TEST

struct pieces {
	int n;
	uint64_t off[16], len[16];
	bool hole[16];
};

static int note_piece(void *opaque, uint64_t off, uint64_t len, bool hole)
{
	struct pieces *p = opaque;

	ck_assert_int_lt(p->n, 16);
	p->off[p->n] = off;
	p->len[p->n] = len;
	p->hole[p->n++] = hole;
	return 0;
}

/* A sparse file, 64 KiB data, 128 KiB hole, 64 KiB data, 64 KiB hole at
 * the end (a size past the last write): the bitmap capture's reading
 * splits a dirty range where the image's holes start and end. */
START_TEST(test_image_segments)
{
	char path[] = "/tmp/check_dirty_ranges.XXXXXX";
	static char block[64 << 10];
	struct image_extents x = { 0 };
	struct pieces p = { 0 };
	int fd = mkstemp(path);

	ck_assert_int_ge(fd, 0);
	unlink(path);
	memset(block, 0x5a, sizeof(block));
	ck_assert_int_eq(pwrite(fd, block, sizeof(block), 0), (ssize_t)sizeof(block));
	ck_assert_int_eq(pwrite(fd, block, sizeof(block), 192 << 10), (ssize_t)sizeof(block));
	ck_assert_int_eq(ftruncate(fd, 320 << 10), 0);
	/* from inside the first data to inside the trailing hole */
	ck_assert_int_eq(disk_image_segments(fd, 4096, (300 << 10) - 4096, &x, note_piece, &p), 0);
	if (p.n == 1) {
		/* a file system without holes here says all is data: allowed */
		ck_assert(!p.hole[0]);
		ck_assert_uint_eq(p.len[0], (300 << 10) - 4096);
		close(fd);
		return;
	}
	ck_assert_int_eq(p.n, 4);
	ck_assert(!p.hole[0] && p.off[0] == 4096 && p.len[0] == (64 << 10) - 4096);
	ck_assert(p.hole[1] && p.off[1] == 64 << 10 && p.len[1] == 128 << 10);
	ck_assert(!p.hole[2] && p.off[2] == 192 << 10 && p.len[2] == 64 << 10);
	ck_assert(p.hole[3] && p.off[3] == 256 << 10 && p.len[3] == 44 << 10);
	close(fd);
}
END_TEST

/* Every lseek of the process (the Makefile links this test with
 * --wrap=lseek). */
off_t __real_lseek(int fd, off_t off, int whence);
off_t __wrap_lseek(int fd, off_t off, int whence);
static unsigned g_lseeks;

off_t __wrap_lseek(int fd, off_t off, int whence)
{
	g_lseeks++;
	return __real_lseek(fd, off, whence);
}

/* One walk over many ranges of an epoch, in order, asks the file system
 * about each of its holes once, not about each range: an image with no
 * hole left (a guest that wrote all of it) is two lseeks, however many
 * ranges; and the pieces are those that fresh lseeks for each range give. */
START_TEST(test_image_segments_ask_once_per_extent)
{
	char path[] = "/tmp/check_dirty_ranges.XXXXXX";
	static char block[64 << 10];
	struct image_extents x = { 0 };
	int fd = mkstemp(path);

	ck_assert_int_ge(fd, 0);
	unlink(path);
	memset(block, 0x5a, sizeof(block));
	for (int i = 0; i < 16; i++)
		ck_assert_int_eq(pwrite(fd, block, sizeof(block), (off_t)i << 16), (ssize_t)sizeof(block));
	g_lseeks = 0;
	for (uint64_t off = 0; off < (1 << 20); off += 8192) {
		struct pieces p = { 0 };

		ck_assert_int_eq(disk_image_segments(fd, off, 4096, &x, note_piece, &p), 0);
		ck_assert(p.n == 1 && !p.hole[0] && p.off[0] == off && p.len[0] == 4096);
	}
	ck_assert_uint_le(g_lseeks, 2);
	/* punch holes (where the file system can): the same answers as a
	 * cursor that starts afresh for every range */
	if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 3 << 16, 2 << 16) == 0 &&
	    fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 9 << 16, 1 << 16) == 0) {
		x = (struct image_extents){ 0 };
		for (uint64_t off = 0; off < (1 << 20); off += 12288) {
			struct image_extents fresh = { 0 };
			struct pieces p = { 0 }, q = { 0 };

			ck_assert_int_eq(disk_image_segments(fd, off, 20480, &x, note_piece, &p), 0);
			ck_assert_int_eq(disk_image_segments(fd, off, 20480, &fresh, note_piece, &q), 0);
			ck_assert_int_eq(p.n, q.n);
			for (int i = 0; i < p.n; i++)
				ck_assert(p.off[i] == q.off[i] && p.len[i] == q.len[i] &&
					  p.hole[i] == q.hole[i]);
		}
	}
	close(fd);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("dirty_ranges");
	TCase *tc = tcase_create("dirty_ranges");
	SRunner *sr;
	int failed;

	tcase_add_test(tc, test_merge_and_gaps);
	tcase_add_test(tc, test_end_cuts_a_dirty_extent);
	tcase_add_test(tc, test_refused);
	tcase_add_test(tc, test_random_against_block_map);
	tcase_add_test(tc, test_image_segments);
	tcase_add_test(tc, test_image_segments_ask_once_per_extent);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
