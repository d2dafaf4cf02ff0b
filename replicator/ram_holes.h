/* Holes in guest RAM: pages of a tmpfs file (a /dev/shm file, a memfd)
 * that nobody ever wrote. They read as zeroes and hold no memory, until
 * something touches them: a read through a shared mapping allocates the
 * page as surely as a write (shmem's fault path), so a tracker that reads
 * every page at every pause would make all of guest RAM resident on the
 * primary, however little of it the guest uses, and would hash megabytes
 * of zeroes besides.
 *
 * This keeps one bit per page, "may hold data": a page whose bit is clear
 * is a hole of the file, checked again with the VM stopped before any scan
 * trusts it (ram_holes_refresh), and is neither read nor hashed. The rule
 * that makes skipping sound: a page is only ever believed a hole after
 * lseek(SEEK_DATA) found no data there, and a hole turns into data only by
 * a write, which ram_holes_refresh finds at the next pause. A page with
 * its bit set may be a hole again (punched by a balloon, say): reading it
 * then allocates a page of zeroes, which costs memory, never correctness.
 *
 * lseek(SEEK_DATA) counts swapped-out tmpfs pages as data (mincore() does
 * not: they would look like holes), so swap cannot hide a write. What it
 * can hide for a moment: a page the kernel is moving (compaction, a huge
 * page collapse) sits in the file not yet marked up to date, which
 * SEEK_DATA takes for a hole. So the lseeks are not trusted alone: after
 * the scan has read every page believed data (a read allocates a hole), the
 * file must hold exactly that many pages (ram_holes_check, st_blocks);
 * one more means a page believed a hole holds memory, and the scan then
 * reads every page believed a hole too, in the same pause, and gives
 * skipping up until the next full copy. */
#ifndef REMUS_RAM_HOLES_H
#define REMUS_RAM_HOLES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A hole shorter than this many pages (256 KiB) is read like data: every
 * hole costs one lseek per pause, and a guest's free memory in thousands
 * of tiny holes would cost more in lseeks than its pages cost to hash. */
#define RAM_HOLES_MIN_PAGES 64u
/* At most this many lseeks per refresh (about 2 ms): the holes not asked
 * by then are read as data from then on. A guest's RAM cut into more holes
 * than that (at least 256 KiB each) costs memory, not pause time. */
#define RAM_HOLES_MAX_LSEEKS 4096u

struct ram_holes {
	int fd;            /* our own descriptor of the RAM file; -1: none */
	size_t npages;
	uint64_t *data;    /* bit i set: page i may hold data, and is read */
	uint64_t lseeks;   /* lseek calls so far */
	uint64_t found;    /* pages that were holes and were found written */
	uint64_t capped;   /* refreshes cut at RAM_HOLES_MAX_LSEEKS */
};

/* Track the holes of the tmpfs file fd (duplicated; the caller keeps
 * its own) of npages pages. Every page counts as data until
 * ram_holes_learn says otherwise. 0; -ENOTSUP if the file is not on
 * tmpfs (only tmpfs's SEEK_DATA and st_blocks are relied on here); -errno. */
int ram_holes_init(struct ram_holes *h, int fd, size_t npages);
void ram_holes_fini(struct ram_holes *h);

/* Ask the file afresh which pages of [first, first + n) hold data; holes
 * of at least RAM_HOLES_MIN_PAGES lose their bit, all else gets it. The
 * caller must then give the backup zeroes for every page left a hole (the
 * hash tracker's full copy does). May run while the VM runs: a page
 * written right after is found by the next refresh. 0, or -errno, and
 * then every page of the range counts as data. */
int ram_holes_learn(struct ram_holes *h, size_t first, size_t n);

/* VM stopped, before a scan: every page believed a hole that holds data
 * now gets its bit (and any hole left between two written pages that is
 * shorter than RAM_HOLES_MIN_PAGES). 0, or -errno, and then every page
 * counts as data. */
int ram_holes_refresh(struct ram_holes *h);

/* May page i hold data? Always true without tracking. */
static inline bool ram_holes_is_data(const struct ram_holes *h, size_t i)
{
	return !h->data || (h->data[i / 64] >> (i % 64) & 1);
}

/* The first page in [i, end) that may hold data, else end. */
size_t ram_holes_next_data(const struct ram_holes *h, size_t i, size_t end);

/* Pages believed holes now. */
size_t ram_holes_count(const struct ram_holes *h);

/* VM stopped, after every page believed data was read (so allocated):
 * does the file hold exactly those pages? 0 yes (or no page is believed a
 * hole), 1 no (a page believed a hole holds memory), -errno if it cannot
 * tell. */
int ram_holes_check(struct ram_holes *h);

/* Believe no hole from now on (until the next ram_holes_learn). */
void ram_holes_give_up(struct ram_holes *h);

/* Page i of ram as a reader that must not allocate holes sees it: the page
 * itself, or for a page believed a hole what the file holds there, read
 * into buf with pread (which does not allocate; not the bitmap's word, so
 * remusctl verify checks the tracker's holes too). */
const uint8_t *ram_holes_read(const struct ram_holes *h, const uint8_t *ram, size_t i,
			      uint8_t *buf);

/* Tests only: ram_holes_refresh finds nothing (a SEEK_DATA that missed a
 * write), to show ram_holes_check catching it. */
void ram_holes_test_blind(bool blind);

#endif
