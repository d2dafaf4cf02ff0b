/* Dirty-page trackers: which guest pages changed since the last checkpoint.
 * A tracker also keeps the checkpointed content of those pages until the
 * backup has acknowledged the epoch: the sender reads from tracker_page(). */
#ifndef REMUS_TRACKER_H
#define REMUS_TRACKER_H

#include <stddef.h>
#include <stdint.h>

struct tracker;

struct tracker_ops {
	const char *name;
	/* threads: how many may scan at once (a tracker may use fewer). */
	int (*init)(struct tracker **t, const uint8_t *ram, size_t npages, unsigned threads);
	/* Copy all of RAM (VM running); every page counts as sent. */
	int (*full_copy)(struct tracker *t);
	/* VM paused: write the index of each changed page into dirty (room for
	 * npages), make its content current, return how many. */
	size_t (*scan)(struct tracker *t, uint32_t *dirty);
	/* Checkpointed content of page idx. */
	const uint8_t *(*page)(const struct tracker *t, uint32_t idx);
	void (*fini)(struct tracker *t);
};

extern const struct tracker_ops compare_tracker_ops;

#endif
