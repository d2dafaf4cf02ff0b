/* Holes in guest RAM (ram_holes.h). */
#include "ram_holes.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#define PAGE 4096u

/* Tests only (ram_holes_test_blind): refresh finds nothing. */
static bool test_blind;

static void set_bits(uint64_t *map, size_t from, size_t to, bool on)
{
	for (size_t i = from; i < to;) {
		if (i % 64 == 0 && to - i >= 64) {
			map[i / 64] = on ? ~0ull : 0;
			i += 64;
			continue;
		}
		if (on)
			map[i / 64] |= 1ull << (i % 64);
		else
			map[i / 64] &= ~(1ull << (i % 64));
		i++;
	}
}

/* Trust nothing: every page of the range is data. */
static int give_up(struct ram_holes *h, size_t first, size_t n, int err)
{
	set_bits(h->data, first, first + n, true);
	return err;
}

static size_t next_hole(const struct ram_holes *h, size_t i, size_t end);

int ram_holes_init(struct ram_holes *h, int fd, size_t npages)
{
	struct statfs fs;

	memset(h, 0, sizeof(*h));
	h->fd = -1;
	if (fstatfs(fd, &fs) < 0)
		return -errno;
	if (fs.f_type != TMPFS_MAGIC)
		return -ENOTSUP;
	h->data = calloc((npages + 63) / 64 ? (npages + 63) / 64 : 1, sizeof(*h->data));
	if (!h->data)
		return -ENOMEM;
	h->fd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
	if (h->fd < 0) {
		int rc = -errno;

		ram_holes_fini(h);
		return rc;
	}
	h->npages = npages;
	set_bits(h->data, 0, npages, true);
	return 0;
}

void ram_holes_fini(struct ram_holes *h)
{
	if (h->fd >= 0)
		close(h->fd);
	free(h->data);
	h->data = NULL;
	h->fd = -1;
}

/* whence SEEK_DATA: the first byte at or after off that holds data;
 * SEEK_HOLE: the end of the data that starts at off. At most end (ENXIO:
 * nothing up to the end of the file); -errno on any other failure. */
static int64_t seek(struct ram_holes *h, uint64_t off, uint64_t end, int whence)
{
	off_t at;

	h->lseeks++;
	at = lseek(h->fd, (off_t)off, whence);
	if (at < 0)
		return errno == ENXIO ? (int64_t)end : -errno;
	return (uint64_t)at < end ? at : (int64_t)end;
}

/* Walk the file over pages [first, end): set the bit of every page that
 * holds data (rounded outwards to whole pages). Bits of the holes are not
 * touched (the caller cleared them, or they are clear). Returns the pages
 * found, or -errno. */
static int64_t mark_data(struct ram_holes *h, size_t first, size_t end)
{
	uint64_t off = (uint64_t)first * PAGE, stop = (uint64_t)end * PAGE;
	int64_t found = 0;

	while (off < stop) {
		int64_t d = seek(h, off, stop, SEEK_DATA), e;
		size_t p, q;

		if (d < 0)
			return d;
		if ((uint64_t)d >= stop)
			break;
		p = (size_t)((uint64_t)d / PAGE);
		e = seek(h, (uint64_t)d, stop, SEEK_HOLE);
		if (e < 0)
			return e;
		q = (size_t)(((uint64_t)e + PAGE - 1) / PAGE);
		if (q <= p)
			q = p + 1; /* the file changed between the two calls */
		set_bits(h->data, p, q, true);
		found += (int64_t)(q - p);
		off = (uint64_t)q * PAGE;
	}
	return found;
}

/* Every hole in [first, end) shorter than RAM_HOLES_MIN_PAGES becomes
 * data: read rather than sought at every pause. */
static void fill_short_holes(struct ram_holes *h, size_t first, size_t end)
{
	size_t i = next_hole(h, first, end);

	while (i < end) {
		size_t j = ram_holes_next_data(h, i, end);

		if (j - i < RAM_HOLES_MIN_PAGES)
			set_bits(h->data, i, j, true);
		i = next_hole(h, j, end);
	}
}

int ram_holes_learn(struct ram_holes *h, size_t first, size_t n)
{
	int64_t rc;

	if (!h->data || first >= h->npages)
		return 0;
	if (n > h->npages - first)
		n = h->npages - first;
	set_bits(h->data, first, first + n, false);
	rc = mark_data(h, first, first + n);
	if (rc < 0)
		return give_up(h, first, n, (int)rc);
	fill_short_holes(h, first, first + n);
	return 0;
}

int ram_holes_refresh(struct ram_holes *h)
{
	uint64_t lseeks = h->lseeks;
	size_t i;

	if (!h->data)
		return 0;
	if (test_blind)
		return 0;
	for (i = next_hole(h, 0, h->npages); i < h->npages;
	     i = next_hole(h, i, h->npages)) {
		size_t end = ram_holes_next_data(h, i, h->npages);
		int64_t found;

		if (h->lseeks - lseeks >= RAM_HOLES_MAX_LSEEKS) {
			/* the pause is not for seeking: the holes left are
			 * read as data (allocated) from now on */
			set_bits(h->data, i, h->npages, true);
			h->capped++;
			return 0;
		}
		found = mark_data(h, i, end);

		if (found < 0)
			return give_up(h, 0, h->npages, (int)found);
		if (found) {
			h->found += (uint64_t)found;
			fill_short_holes(h, i, end);
		}
		i = end;
	}
	return 0;
}

/* The first page in [i, end) whose bit is set (flip 0) or clear (flip
 * ~0), else end. */
static size_t next_bit(const struct ram_holes *h, size_t i, size_t end, uint64_t flip)
{
	while (i < end) {
		uint64_t w = (h->data[i / 64] ^ flip) >> (i % 64);

		if (w) {
			size_t j = i + (size_t)__builtin_ctzll(w);

			return j < end ? j : end;
		}
		i = (i / 64 + 1) * 64;
	}
	return end;
}

/* The first page in [i, end) believed a hole, else end. */
static size_t next_hole(const struct ram_holes *h, size_t i, size_t end)
{
	return next_bit(h, i, end, ~0ull);
}

size_t ram_holes_next_data(const struct ram_holes *h, size_t i, size_t end)
{
	if (!h->data)
		return i < end ? i : end;
	return next_bit(h, i, end, 0);
}

int ram_holes_check(struct ram_holes *h)
{
	size_t holes = ram_holes_count(h);
	struct stat st;

	if (!holes)
		return 0; /* nothing was skipped */
	if (fstat(h->fd, &st) < 0)
		return -errno;
	return (uint64_t)st.st_blocks * 512 / PAGE == h->npages - holes ? 0 : 1;
}

void ram_holes_give_up(struct ram_holes *h)
{
	if (h->data)
		set_bits(h->data, 0, h->npages, true);
}

const uint8_t *ram_holes_read(const struct ram_holes *h, const uint8_t *ram, size_t i,
			      uint8_t *buf)
{
	if (ram_holes_is_data(h, i) ||
	    pread(h->fd, buf, PAGE, (off_t)(i * PAGE)) != (ssize_t)PAGE)
		return ram + i * PAGE;
	return buf;
}

void ram_holes_test_blind(bool blind)
{
	test_blind = blind;
}

size_t ram_holes_count(const struct ram_holes *h)
{
	size_t data = 0;

	if (!h->data)
		return 0;
	for (size_t w = 0; w < h->npages / 64; w++)
		data += (size_t)__builtin_popcountll(h->data[w]);
	for (size_t i = h->npages / 64 * 64; i < h->npages; i++)
		data += ram_holes_is_data(h, i);
	return h->npages - data;
}

