/* The delta resync of a disk (replicator/disk_delta.c): what the filter
 * lets through, applied to the backup's base, must leave exactly what the
 * unfiltered operations leave. Checked against brute force over random
 * operation streams on a disk whose last chunk is short, and on the shape
 * of QEMU's mirror (zero all, copy all): nothing goes out when the base is
 * already the disk, only the changed chunks when some differ. */
#include "../replicator/disk_delta.h"
#include "../common/page_hash.h"
#include "../common/proto.h"

#include <check.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Each test runs with the smallest chunk and a larger one (_i). */
static const uint32_t chunk_sizes[] = { PROTO_DISK_HASH_CHUNK_MIN, 65536 };
static uint32_t g_chunk;
#define CHUNK    ((uint64_t)g_chunk)
#define TAIL     (CHUNK / 4 + 512)                      /* the last chunk is short */
#define NCHUNKS  6
#define DISK     ((NCHUNKS - 1) * CHUNK + TAIL)
#define SEED     0x5eedull

/* A disk image in memory and what the filter sent to it. */
struct target {
	uint8_t *img;
	uint64_t ops_out;
};

static int apply(void *opaque, uint32_t op, uint64_t off, uint64_t len, const uint8_t *data)
{
	struct target *t = opaque;

	ck_assert_uint_le(off + len, DISK);
	if (op == DISK_OP_WRITE)
		memcpy(t->img + off, data, len);
	else if (op == DISK_OP_WRITE_ZEROES || op == DISK_OP_TRIM)
		memset(t->img + off, 0, len); /* the agent zeroes a TRIM too */
	t->ops_out++;
	return 0;
}

/* Hashes of base's chunks, as the agent sends them. */
static void load_hashes(struct disk_delta *dd, const uint8_t *base)
{
	uint8_t *h = malloc(NCHUNKS * PAGE_HASH_SIZE);

	for (uint64_t c = 0; c < NCHUNKS; c++) {
		uint64_t len = c + 1 < NCHUNKS ? CHUNK : DISK - c * CHUNK;
		block_hash(base + c * CHUNK, len, SEED, h + c * PAGE_HASH_SIZE);
	}
	ck_assert_int_eq(disk_delta_init(dd, DISK, g_chunk, SEED), 0);
	ck_assert_uint_eq(dd->nchunks, NCHUNKS);
	ck_assert(!disk_delta_complete(dd));
	ck_assert_int_eq(disk_delta_add_hashes(dd, 0, 2, h), 0);
	ck_assert_int_eq(disk_delta_add_hashes(dd, 2, NCHUNKS - 2, h + 2 * PAGE_HASH_SIZE), 0);
	ck_assert(disk_delta_complete(dd));
	free(h);
}

static uint8_t *random_image(unsigned *seed)
{
	uint8_t *img = malloc(DISK);

	for (uint64_t i = 0; i < DISK; i++)
		img[i] = (uint8_t)rand_r(seed);
	return img;
}

START_TEST(test_hashes_in_order_only)
{
	struct disk_delta dd;
	uint8_t h[3 * PAGE_HASH_SIZE] = { 0 };

	g_chunk = chunk_sizes[_i];
	ck_assert_int_eq(disk_delta_init(&dd, DISK, g_chunk, SEED), 0);
	ck_assert_int_eq(disk_delta_add_hashes(&dd, 1, 1, h), -EPROTO);  /* not next */
	ck_assert_int_eq(disk_delta_add_hashes(&dd, 0, NCHUNKS + 1, h), -EPROTO);
	ck_assert_int_eq(disk_delta_add_hashes(&dd, 0, 3, h), 0);
	ck_assert_int_eq(disk_delta_add_hashes(&dd, 0, 1, h), -EPROTO);  /* again */
	ck_assert_int_eq(disk_delta_add_hashes(&dd, 3, 3, h), 0);
	ck_assert(disk_delta_complete(&dd));
	ck_assert_int_eq(disk_delta_add_hashes(&dd, 6, 1, h), -EPROTO);  /* past the end */
	disk_delta_free(&dd);
	ck_assert(!disk_delta_on(&dd));
	ck_assert_int_eq(disk_delta_init(&dd, 0, g_chunk, SEED), -EINVAL);
	ck_assert_int_eq(disk_delta_init(&dd, DISK, 3 * 4096, SEED), -EINVAL);
	ck_assert_int_eq(disk_delta_init(&dd, DISK, 2048, SEED), -EINVAL);
	ck_assert(!disk_delta_on(&dd));
}
END_TEST

/* The mirror's shape: zero the whole target, then copy every chunk. */
static void mirror_copy(struct disk_delta *dd, const uint8_t *disk, struct target *t)
{
	ck_assert_int_eq(disk_delta_op(dd, DISK_OP_WRITE_ZEROES, 0, DISK, NULL, apply, t), 0);
	for (uint64_t off = 0; off < DISK; off += 2 * CHUNK) {
		uint64_t len = DISK - off < 2 * CHUNK ? DISK - off : 2 * CHUNK;
		ck_assert_int_eq(disk_delta_op(dd, DISK_OP_WRITE, off, len, disk + off, apply, t), 0);
	}
	ck_assert_int_eq(disk_delta_finish(dd, apply, t), 0);
}

START_TEST(test_mirror_same_disk_sends_nothing)
{
	unsigned seed = (g_chunk = chunk_sizes[_i], 1);
	uint8_t *disk = random_image(&seed);
	struct target t = { .img = malloc(DISK) };
	struct disk_delta dd;

	memset(disk + CHUNK, 0, CHUNK); /* one zero chunk in the base too */
	memcpy(t.img, disk, DISK);
	load_hashes(&dd, disk);
	mirror_copy(&dd, disk, &t);
	ck_assert_uint_eq(t.ops_out, 0);
	ck_assert_uint_eq(dd.bytes_out, 0);
	ck_assert_uint_eq(dd.bytes_in, 2 * DISK);
	ck_assert(!memcmp(t.img, disk, DISK));
	disk_delta_free(&dd);
	free(disk);
	free(t.img);
}
END_TEST

START_TEST(test_mirror_sends_changed_chunks)
{
	unsigned seed = (g_chunk = chunk_sizes[_i], 2);
	uint8_t *base = random_image(&seed), *disk = malloc(DISK);
	struct target t = { .img = malloc(DISK) };
	struct disk_delta dd;

	memcpy(disk, base, DISK);
	disk[3 * CHUNK + 7] ^= 1;                   /* one byte of chunk 3 */
	memset(disk + 4 * CHUNK, 0, CHUNK);         /* chunk 4 zeroed */
	disk[DISK - 1] ^= 0x80;                     /* the short last chunk */
	memcpy(t.img, base, DISK);
	load_hashes(&dd, base);
	mirror_copy(&dd, disk, &t);
	ck_assert(!memcmp(t.img, disk, DISK));
	/* chunk 3 and the last as data, chunk 4 as owed zeroes */
	ck_assert_uint_eq(dd.bytes_out, CHUNK + TAIL + CHUNK);
	disk_delta_free(&dd);
	free(base);
	free(disk);
	free(t.img);
}
END_TEST

/* One random operation: offsets and lengths in 512-byte sectors, often
 * whole chunks, data random, all zero, or copied from the base. */
static void random_op(unsigned *seed, const uint8_t *base, uint8_t *buf, uint32_t *op,
		      uint64_t *off, uint64_t *len)
{
	const uint64_t sectors = DISK / 512;
	int kind = rand_r(seed) % 10;

	if (rand_r(seed) % 2) {
		uint64_t c = (uint64_t)rand_r(seed) % NCHUNKS, n = 1 + rand_r(seed) % 2;
		*off = c * CHUNK;
		*len = (c + n) * CHUNK < DISK ? n * CHUNK : DISK - *off;
	} else {
		*off = (uint64_t)(rand_r(seed) % sectors) * 512;
		*len = (uint64_t)(1 + rand_r(seed) % 300) * 512;
		if (*off + *len > DISK)
			*len = DISK - *off;
	}
	*op = kind < 5 ? DISK_OP_WRITE : kind < 7 ? DISK_OP_WRITE_ZEROES :
	      kind < 9 ? DISK_OP_TRIM : DISK_OP_FLUSH;
	if (*op == DISK_OP_FLUSH) {
		*off = *len = 0;
		return;
	}
	if (*op != DISK_OP_WRITE)
		return;
	switch (rand_r(seed) % 3) {
	case 0:
		for (uint64_t i = 0; i < *len; i++)
			buf[i] = (uint8_t)rand_r(seed);
		break;
	case 1:
		memset(buf, 0, *len);
		break;
	default:
		memcpy(buf, base + *off, *len);
	}
}

START_TEST(test_random_streams_match_brute_force)
{
	unsigned seed = (g_chunk = chunk_sizes[_i], 42);
	uint8_t *buf = malloc(DISK);

	for (int round = 0; round < 400; round++) {
		uint8_t *base = random_image(&seed), *want = malloc(DISK);
		struct target got = { .img = malloc(DISK) };
		struct target plain = { .img = want };
		struct disk_delta dd;
		int nops = 1 + rand_r(&seed) % 40;

		/* some chunks of the base zero, as in a sparse replica */
		for (int c = 0; c < NCHUNKS; c++)
			if (rand_r(&seed) % 3 == 0)
				memset(base + (uint64_t)c * CHUNK, 0,
				       c + 1 < NCHUNKS ? CHUNK : DISK - (uint64_t)c * CHUNK);
		memcpy(want, base, DISK);
		memcpy(got.img, base, DISK);
		load_hashes(&dd, base);
		for (int i = 0; i < nops; i++) {
			uint32_t op;
			uint64_t off, len;

			random_op(&seed, base, buf, &op, &off, &len);
			apply(&plain, op, off, len, buf);
			ck_assert_int_eq(disk_delta_op(&dd, op, off, len, buf, apply, &got), 0);
		}
		ck_assert_int_eq(disk_delta_finish(&dd, apply, &got), 0);
		ck_assert_msg(!memcmp(want, got.img, DISK), "round %d: the backup's disk differs",
			      round);
		ck_assert_uint_le(dd.bytes_out, dd.bytes_in + DISK);
		disk_delta_free(&dd);
		free(base);
		free(want);
		free(got.img);
	}
	free(buf);
}
END_TEST

START_TEST(test_out_of_range_refused)
{
	struct disk_delta dd;
	struct target t = { .img = NULL };

	g_chunk = chunk_sizes[_i];
	ck_assert_int_eq(disk_delta_init(&dd, DISK, g_chunk, SEED), 0);
	ck_assert_int_eq(disk_delta_op(&dd, DISK_OP_WRITE_ZEROES, DISK - 512, 1024, NULL, apply,
				       &t), -ERANGE);
	ck_assert_int_eq(disk_delta_op(&dd, DISK_OP_WRITE_ZEROES, UINT64_MAX - 10, 512, NULL,
				       apply, &t), -ERANGE);
	ck_assert_int_eq(disk_delta_op(&dd, DISK_OP_WRITE, 0, 512, NULL, apply, &t), -ERANGE);
	ck_assert_uint_eq(t.ops_out, 0);
	disk_delta_free(&dd);
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("disk_delta");
	TCase *tc = tcase_create("core");

	tcase_set_timeout(tc, 60);
	tcase_add_loop_test(tc, test_hashes_in_order_only, 0, 2);
	tcase_add_loop_test(tc, test_mirror_same_disk_sends_nothing, 0, 2);
	tcase_add_loop_test(tc, test_mirror_sends_changed_chunks, 0, 2);
	tcase_add_loop_test(tc, test_random_streams_match_brute_force, 0, 2);
	tcase_add_loop_test(tc, test_out_of_range_refused, 0, 2);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
