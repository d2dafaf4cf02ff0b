/* The blocks one disk's dirty bitmap marks for one epoch, as sorted,
 * disjoint ranges, built from the extents QEMU's NBD server reports for
 * the bitmap (NBD_CMD_BLOCK_STATUS with the qemu:dirty-bitmap: meta
 * context; disk_bitmap.c). The extents come from outside: checked, not
 * trusted. */
#ifndef REMUS_DIRTY_RANGES_H
#define REMUS_DIRTY_RANGES_H

#include <stddef.h>
#include <stdint.h>

struct dirty_range {
	uint64_t off, len;
};

struct dirty_ranges {
	struct dirty_range *v;
	size_t n, cap;
	uint64_t bytes;   /* sum of the ranges */
	uint64_t size;    /* of the disk: nothing past it */
	uint64_t next;    /* where the next reply must start */
	int err;          /* the first error; every later add fails with it */
};

void dirty_ranges_init(struct dirty_ranges *rg, uint64_t size);
/* One reply: nr_entries / 2 extents [length, flags] from offset on, each
 * dirty if bit 0 of its flags is set. A reply must start where the last
 * one ended, be whole pairs and describe something; an extent may not be
 * empty; one reaching past the disk's end is cut there. 0, -EPROTO (and
 * the ranges kept so far are not to be used) or -ENOMEM. */
int dirty_ranges_add(struct dirty_ranges *rg, uint64_t offset, const uint32_t *entries,
		     size_t nr_entries);
void dirty_ranges_free(struct dirty_ranges *rg);

#endif
