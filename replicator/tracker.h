/* Dirty-page trackers: which guest pages changed since the last checkpoint.
 * A tracker also keeps the checkpointed content of those pages until the
 * backup has acknowledged the epoch: the sender reads from tracker_page(). */
#ifndef REMUS_TRACKER_H
#define REMUS_TRACKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct tracker;

struct tracker_ops {
	const char *name;
	/* threads: how many may scan at once (a tracker may use fewer). */
	int (*init)(struct tracker **t, const uint8_t *ram, size_t npages, unsigned threads);
	/* For trackers that watch the process writing guest RAM (soft-dirty):
	 * init with QEMU's pid and the RAM file it maps (for memfd
	 * /proc/PID/fd/N). NULL for trackers that need neither (compare);
	 * a tracker that has it may have no init. */
	int (*init_proc)(struct tracker **t, const uint8_t *ram, size_t npages, unsigned threads,
			 pid_t pid, const char *ram_path);
	/* A full copy while the VM runs, in steps so that the caller's loop
	 * keeps its heartbeats going (a large RAM takes seconds): begin, then
	 * copy_pages over every page, in any number of calls. Every page
	 * counts as sent; a page written during the copy is found by the
	 * first scan. begin may be called again to start over. */
	int (*begin_full_copy)(struct tracker *t);
	void (*copy_pages)(struct tracker *t, size_t first, size_t n);
	/* How long page() keeps a page of the full copy: until copy_pages has
	 * copied this many more pages (its slot then holds another page), or
	 * the next begin_full_copy or scan. The caller must not let the sender
	 * fall further behind. 0: every page, until the next scan (compare and
	 * soft-dirty keep a whole shadow). */
	size_t full_copy_keep;
	/* VM paused: write the index of each changed page into dirty (room for
	 * npages), make its content current, return how many. */
	size_t (*scan)(struct tracker *t, uint32_t *dirty);
	/* Checkpointed content of page idx: every page (compare, soft-dirty),
	 * or only the pages the last scan reported, or the full copy's last
	 * full_copy_keep pages (hash; NULL for any other page). Unchanged until
	 * the next scan or begin_full_copy. */
	const uint8_t *(*page)(const struct tracker *t, uint32_t idx);
	void (*fini)(struct tracker *t);
};

/* The whole full copy in one call (tests, benchmarks). */
static inline int tracker_full_copy(const struct tracker_ops *ops, struct tracker *t, size_t npages)
{
	int rc = ops->begin_full_copy(t);

	if (!rc)
		ops->copy_pages(t, 0, npages);
	return rc;
}

extern const struct tracker_ops compare_tracker_ops;
/* tracker_hash.c, docs/TRACKERS.md */
extern const struct tracker_ops hash_tracker_ops;

struct hash_stats {
	uint64_t scans;
	uint64_t dirty;            /* pages reported (and staged), all scans */
	/* Pages whose copy in staging hashed unlike guest RAM a moment before,
	 * in the same pause: something wrote guest RAM with the VM stopped.
	 * The copy is what is sent and hashed, so this costs nothing; it
	 * should stay 0. */
	uint64_t changed_in_pause;
	uint64_t staging_pages;    /* staging slots that may be resident now */
	uint64_t staging_peak;     /* the most there have been */
	uint64_t staged_pages;     /* pages the last scan staged */
	uint64_t shrinks;          /* scans that dropped staging they no longer needed */
	/* Cumulative nanoseconds (CLOCK_MONOTONIC, wall): ns_hash, hashing all
	 * of RAM (round 1); ns_copy, copying and hashing the dirty pages
	 * (round 2); ns_total, the whole scan. */
	uint64_t ns_hash, ns_copy, ns_total;
	/* Holes (hash_skip_holes): whether it skips them; the pages believed
	 * holes now; holes found written since (they are data now); lseek
	 * calls; and the nanoseconds the scans spent asking (ns_holes, part
	 * of ns_total). hole_checks_failed: scans after which the file held
	 * more pages than were read, which then read every hole and stopped
	 * skipping them (ram_holes.h); holes_capped: refreshes cut at their
	 * lseek budget. */
	bool skips_holes;
	uint64_t hole_pages, holes_found, hole_lseeks, ns_holes;
	uint64_t hole_checks_failed, holes_capped;
};
/* t must come from hash_tracker_ops. */
void hash_get_stats(const struct tracker *t, struct hash_stats *s);
/* Guest RAM is the tmpfs file fd (a /dev/shm file, a memfd; the tracker
 * keeps a duplicate): from the next full copy on, its holes, the pages
 * nobody has written, are sent as zeroes and then neither read nor hashed
 * until something writes them (replicator/ram_holes.h), so that they stay
 * holes. Call before the full copy. 0; -ENOTSUP if fd is not on tmpfs;
 * -errno. Without it every page is read. */
int hash_skip_holes(struct tracker *t, int fd);
struct ram_holes;
/* What the tracker believes a hole, for other readers of guest RAM (with
 * the VM stopped, after a scan: current). */
const struct ram_holes *hash_holes(const struct tracker *t);
/* tracker_softdirty.c, docs/SOFT-DIRTY.md */
extern const struct tracker_ops softdirty_tracker_ops;

/* 0 if this kernel keeps a working soft-dirty log (and, pid > 0, the
 * pagemap and clear_refs of pid can be opened); else -ENOTSUP (or -errno)
 * and the reason in why. */
int softdirty_supported(pid_t pid, char *why, size_t len);

/* Another process (not qemu, not us) with a shared writable mapping of
 * ram_path: its pid, else 0. Its writes would not be in QEMU's log. */
pid_t softdirty_other_writer(pid_t qemu, const char *ram_path);

struct softdirty_stats {
	uint64_t scans;
	uint64_t flagged;      /* pages with the soft-dirty bit set */
	uint64_t absent;       /* pages not present (or swap/migration entries) */
	uint64_t compared;     /* flagged + absent: compared with the shadow */
	uint64_t copied;       /* of those, changed: copied and reported */
	uint64_t full_scans;   /* scans that fell back to comparing all pages */
	uint64_t clears_skipped; /* scans that left the log uncleared (cheaper) */
	uint64_t flagged_same; /* flagged but unchanged (lazy_clear.h: the waste and its base) */
	/* Where the scans' time went, cumulative nanoseconds (CLOCK_MONOTONIC).
	 * Wall time: ns_maps, re-reading /proc/QEMU/maps (find_mapping);
	 * ns_pagemap, from then until every thread's pagemap read is over;
	 * ns_clear, the clear_refs write; ns_total, the whole scan. Thread time,
	 * summed over the threads: ns_loop, the entry loops with their compares
	 * and copies (and full scans' compare of every page); with T threads
	 * they take about ns_loop / T of wall time, alongside ns_clear. */
	uint64_t ns_maps, ns_pagemap, ns_clear, ns_loop, ns_total;
	/* The full copy: pages read through QEMU's mapping, which maps them
	 * into QEMU's page tables (copy_pages); the errno that stopped it
	 * (0: none), after which pages were copied through ours. */
	uint64_t populated;
	int populate_error;
	/* How the log is read: by the PAGEMAP_SCAN ioctl (Linux 6.7+: only the
	 * ranges to compare), else the pagemap read of every page's entry; how
	 * many chunk reads the ioctl served, and how many times a chunk's
	 * ranges overflowed their buffer (that chunk was read the old way in
	 * that scan). */
	bool read_by_ioctl;
	uint64_t ioctl_reads, ioctl_overflows;
};
/* t must come from softdirty_tracker_ops. */
void softdirty_get_stats(const struct tracker *t, struct softdirty_stats *s);
/* Stop trusting the log: from the next scan on, every page is compared
 * with the shadow (as compare does), which also finds every page changed
 * since the last scan, however it was written. For a writer found late
 * (another process mapping guest RAM). */
void softdirty_give_up(struct tracker *t);
/* Tests and benchmarks: clear the log at every n-th scan only (1: every
 * scan), instead of once the compares a clear would have saved cost as
 * much as one (0, the default; lazy_clear.h). */
void softdirty_set_clear_every(struct tracker *t, unsigned n);
/* Tests and benchmarks: read the log by PAGEMAP_SCAN (by_ioctl) or by the
 * pagemap read, whatever init chose: to test or measure either path on a
 * kernel with PAGEMAP_SCAN (the unit tests force it on a kernel without
 * soft-dirty, where only pages not present are untrusted). 0, or -errno if
 * the kernel lacks the ioctl (ENOTTY) or memory; the choice is then kept. */
int softdirty_set_log_read(struct tracker *t, bool by_ioctl);

#endif
