/* Copies that keep holes (sparse_copy.h). */
#include "sparse_copy.h"
#include "diskfile.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define PAGE  4096u
#define CHUNK (1u << 20)  /* read 256 pages at a time */

bool sparse_all_zero(const uint8_t *p, size_t len)
{
	return len == 0 || (p[0] == 0 && !memcmp(p, p + 1, len - 1));
}

/* Mark which pages of out's [off, off + n) are holes, into hole[] (one per
 * page). An lseek that fails leaves every page data: it is written. */
static void find_holes(int out, off_t off, size_t n, bool *hole)
{
	off_t at = off, end = off + (off_t)n;
	size_t npages = (n + PAGE - 1) / PAGE;

	for (size_t i = 0; i < npages; i++)
		hole[i] = false;
	while (at < end) {
		off_t d = lseek(out, at, SEEK_DATA), e;

		if (d < 0 && errno != ENXIO)
			return; /* cannot tell: write them all */
		if (d < 0 || d > end)
			d = end;
		for (off_t p = at; p + (off_t)PAGE <= d; p += PAGE)
			hole[(p - off) / PAGE] = true;
		if (d >= end)
			return;
		e = lseek(out, d, SEEK_HOLE);
		if (e < 0)
			return;
		at = (e + PAGE - 1) / PAGE * PAGE;
	}
}

static int pread_full(int fd, uint8_t *buf, size_t n, off_t off)
{
	while (n) {
		ssize_t r = pread(fd, buf, n, off);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return r < 0 ? -errno : -EIO;
		buf += r;
		n -= (size_t)r;
		off += r;
	}
	return 0;
}

/* One chunk: write each run of pages that must be written at once. */
static int copy_chunk(int out, const uint8_t *buf, size_t n, off_t off, const bool *hole,
		      struct sparse_copy_stats *st)
{
	size_t npages = (n + PAGE - 1) / PAGE, run = 0;

	for (size_t i = 0; i <= npages; i++) {
		bool skip = i < npages && hole[i] && i * PAGE + PAGE <= n &&
			    sparse_all_zero(buf + i * PAGE, PAGE);
		int rc;

		if (i < npages && !skip)
			continue;
		if (i > run) {
			size_t len = (i * PAGE < n ? i * PAGE : n) - run * PAGE;

			rc = diskfile_pwrite_all(out, buf + run * PAGE, len,
						 (uint64_t)off + run * PAGE);
			if (rc)
				return rc;
		}
		st->skipped += skip;
		run = i + 1;
	}
	st->pages += npages;
	return 0;
}

int sparse_copy(int in, int out, off_t size, struct sparse_copy_stats *st_out)
{
	struct sparse_copy_stats st = { 0 };
	uint8_t *buf = malloc(CHUNK);
	bool *hole = malloc(CHUNK / PAGE * sizeof(*hole));
	struct stat ost;
	int rc = 0;

	if (!buf || !hole)
		rc = -ENOMEM;
	else if (fstat(out, &ost) < 0)
		rc = -errno;
	else if (ost.st_size < size && ftruncate(out, size) < 0)
		rc = -errno;
	for (off_t off = 0; !rc && off < size; off += CHUNK) {
		size_t n = size - off < (off_t)CHUNK ? (size_t)(size - off) : CHUNK;

		rc = pread_full(in, buf, n, off);
		if (!rc) {
			find_holes(out, off, n, hole);
			rc = copy_chunk(out, buf, n, off, hole, &st);
		}
	}
	free(buf);
	free(hole);
	if (st_out)
		*st_out = st;
	return rc;
}
