/* Dirty ranges from a bitmap's extents: see dirty_ranges.h. */
#include "dirty_ranges.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

void dirty_ranges_init(struct dirty_ranges *rg, uint64_t size)
{
	memset(rg, 0, sizeof(*rg));
	rg->size = size;
}

void dirty_ranges_free(struct dirty_ranges *rg)
{
	free(rg->v);
	dirty_ranges_init(rg, rg->size);
}

static int append(struct dirty_ranges *rg, uint64_t off, uint64_t len)
{
	struct dirty_range *last = rg->n ? &rg->v[rg->n - 1] : NULL;

	rg->bytes += len;
	if (last && last->off + last->len == off) {
		last->len += len; /* adjacent extents, one range */
		return 0;
	}
	if (!rg->v || rg->n == rg->cap) {
		size_t cap = rg->n ? 2 * rg->n : 64;
		struct dirty_range *v = realloc(rg->v, cap * sizeof(*v));

		if (!v)
			return -ENOMEM;
		rg->v = v;
		rg->cap = cap;
	}
	rg->v[rg->n++] = (struct dirty_range){ off, len };
	return 0;
}

int dirty_ranges_add(struct dirty_ranges *rg, uint64_t offset, const uint32_t *entries,
		     size_t nr_entries)
{
	if (rg->err)
		return rg->err;
	if (offset != rg->next || !nr_entries || nr_entries % 2)
		return rg->err = -EPROTO;
	for (size_t i = 0; i < nr_entries; i += 2) {
		uint64_t len = entries[i];

		if (!len || offset >= rg->size)
			return rg->err = -EPROTO;
		if (len > rg->size - offset)
			len = rg->size - offset;
		if ((entries[i + 1] & 1) && append(rg, offset, len))
			return rg->err = -ENOMEM;
		offset += len;
	}
	rg->next = offset;
	return 0;
}
