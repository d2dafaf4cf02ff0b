/* Copies that keep holes: a page of zeroes is not written where the
 * destination already reads as zeroes (a hole), so it holds no memory.
 *
 * Why: the replica's RAM file is reserved whole (posix_fallocate), but
 * guest RAM usually is not: the pages a guest never wrote are holes of its
 * tmpfs file, and the primary's replicator leaves them so
 * (docs/TRACKERS.md, "Holes"). A restore that copied every page would make
 * the restored VM's RAM resident in full on its new host, and the next
 * replicator there would find no hole to skip. */
#ifndef REMUS_SPARSE_COPY_H
#define REMUS_SPARSE_COPY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct sparse_copy_stats {
	uint64_t pages;    /* pages copied or skipped */
	uint64_t skipped;  /* of them, zeroes left as holes */
};

/* Copy size bytes of in to out, both from offset 0, page by page: a page
 * of zeroes is skipped where out has a hole there (lseek SEEK_DATA; where
 * out cannot say, every page is written), any other page is written. out
 * is grown to size if it is shorter. Nothing writes out meanwhile (a new
 * file; a QEMU that waits for its state). 0 or -errno; st may be NULL. */
int sparse_copy(int in, int out, off_t size, struct sparse_copy_stats *st);

/* Are the len bytes at p all zero (a page or chunk to leave a hole)? */
bool sparse_all_zero(const uint8_t *p, size_t len);

#endif
