/* Copies that keep holes (backup-agent/sparse_copy.h), on tmpfs files
 * (memfds): the copy reads like the source in every byte, and a page of
 * zeroes is left a hole only where the destination had one; a destination
 * holding other data there gets the zeroes written. */
#include "../backup-agent/sparse_copy.h"

#include <check.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define PAGE 4096u

static int memfd(size_t size)
{
	int fd = memfd_create("sparse-copy-test", MFD_CLOEXEC);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(ftruncate(fd, (off_t)size), 0);
	return fd;
}

static void fill(int fd, size_t page, size_t npages, int byte)
{
	uint8_t *p = malloc(npages * PAGE);

	memset(p, byte, npages * PAGE);
	ck_assert_int_eq(pwrite(fd, p, npages * PAGE, (off_t)(page * PAGE)), (ssize_t)(npages * PAGE));
	free(p);
}

static size_t allocated_pages(int fd)
{
	struct stat st;

	ck_assert_int_eq(fstat(fd, &st), 0);
	return (size_t)st.st_blocks * 512 / PAGE;
}

static void same_bytes(int a, int b, size_t size)
{
	uint8_t *x = malloc(size), *y = malloc(size);

	ck_assert_int_eq(pread(a, x, size, 0), (ssize_t)size);
	ck_assert_int_eq(pread(b, y, size, 0), (ssize_t)size);
	ck_assert(!memcmp(x, y, size));
	free(x);
	free(y);
}

/* A source with data, written zeroes and holes, over more than one chunk
 * (1 MiB), with a short last page. */
static int source(size_t size)
{
	int in = memfd(size);

	fill(in, 0, 3, 0x11);
	fill(in, 10, 20, 0);     /* written, but zeroes: allocated in the source */
	fill(in, 300, 1, 0x22);  /* past the first chunk */
	fill(in, 600, 50, 0x33);
	ck_assert_int_eq(pwrite(in, "x", 1, (off_t)size - 1), 1); /* the short last page */
	return in;
}

START_TEST(test_new_file_keeps_holes)
{
	const size_t size = 700 * PAGE + 100;
	int in = source(size), out = memfd(0);
	struct sparse_copy_stats st;

	ck_assert_int_eq(sparse_copy(in, out, (off_t)size, &st), 0);
	same_bytes(in, out, size);
	ck_assert_uint_eq(st.pages, 701);
	/* data: 3 + 1 + 50 + the last page; the 20 written zero pages are not */
	ck_assert_uint_eq(allocated_pages(out), 3 + 1 + 50 + 1);
	ck_assert_uint_eq(st.skipped, 701 - 55);
	close(in);
	close(out);
}
END_TEST

START_TEST(test_zeroes_overwrite_old_data)
{
	const size_t size = 700 * PAGE + 100;
	int in = source(size), out = memfd(size);
	struct sparse_copy_stats st;

	fill(out, 0, 700, 0x5a); /* a destination full of something else */
	ck_assert_int_eq(sparse_copy(in, out, (off_t)size, &st), 0);
	same_bytes(in, out, size);
	ck_assert_uint_eq(st.skipped, 0);
	close(in);
	close(out);
}
END_TEST

START_TEST(test_mixed_destination)
{
	const size_t size = 512 * PAGE;
	int in = memfd(size), out = memfd(size);
	struct sparse_copy_stats st;

	fill(out, 100, 10, 0x77); /* where the source is a hole: must be zeroed */
	fill(in, 200, 1, 0x01);
	ck_assert_int_eq(sparse_copy(in, out, (off_t)size, &st), 0);
	same_bytes(in, out, size);
	ck_assert_uint_eq(st.skipped, 512 - 10 - 1);
	ck_assert_uint_eq(allocated_pages(out), 10 + 1);
	close(in);
	close(out);
}
END_TEST

START_TEST(test_short_source_fails)
{
	int in = memfd(4 * PAGE), out = memfd(0);

	ck_assert_int_lt(sparse_copy(in, out, 8 * PAGE, NULL), 0);
	close(in);
	close(out);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("sparse_copy");
	TCase *tc = tcase_create("sparse_copy");
	SRunner *sr;
	int failed;

	tcase_add_test(tc, test_new_file_keeps_holes);
	tcase_add_test(tc, test_zeroes_overwrite_old_data);
	tcase_add_test(tc, test_mixed_destination);
	tcase_add_test(tc, test_short_source_fails);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
