/* Crash-safe commit of one epoch to the replica in the state dir.
 *
 * A verified epoch is first written whole to DIR/journal.tmp and renamed to
 * DIR/journal: that rename is the commit point. Then it is applied (pages
 * into the RAM image, disk ops into the disk files in their order, then
 * fdatasync of those files, device state and vm.json replaced by rename,
 * ram.sync and disk-N.sync promoted to ram and disk-N.img after an initial
 * sync) and the journal is removed. An initial copy is not in the journal:
 * the caller syncs disk-N.sync before the commit point.
 * Whoever finds a journal (the agent at start, before a new session, before
 * a restore) applies it again: applying is idempotent. So an agent killed at
 * any point leaves the replica at exactly the previous epoch (no journal) or
 * exactly the new one (journal replayed), never in between. */
#ifndef REMUS_JOURNAL_H
#define REMUS_JOURNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* One staged disk op (enum disk_op_code); a WRITE's data is the next
 * length bytes of journal_view.disk_data. Host byte order, 24 bytes. */
struct journal_disk_op {
	uint32_t disk, op;
	uint64_t offset, length;
};

struct journal_view {
	uint64_t epoch;
	bool promote;            /* ram.sync becomes ram, disk-N.sync disk-N.img
				  * (first commit of a session) */
	uint64_t npages;
	const uint64_t *idx;     /* page indexes */
	const uint8_t *pages;    /* npages * 4096 bytes, in idx order */
	const uint8_t *devstate;
	size_t devstate_len;
	const char *vm_json;
	size_t vm_json_len;
	/* disks 0..ndisks-1 (diskfile.h); ops in the order they are applied */
	uint32_t ndisks;
	uint64_t ndisk_ops;
	const struct journal_disk_op *disk_ops;
	const uint8_t *disk_data;  /* the WRITEs' data, in op order */
	uint64_t disk_data_len;
	/* Called after every JOURNAL_PULSE_BYTES hashed, written or applied
	 * (NULL: never): a large epoch holds the caller's loop for seconds on
	 * a slow host, and its peer must keep hearing from it meanwhile. */
	void (*pulse)(void *ctx);
	void *pulse_ctx;
};
#define JOURNAL_PULSE_BYTES (32u << 20)

/* Write the journal and commit it (rename). 0 or -errno; on error the
 * replica is untouched. */
int journal_write(const char *dir, const struct journal_view *j);
/* Apply a committed journal. ram: a writable mapping of the target RAM file
 * (ram.sync while promoting, else ram) of ram_size bytes, or NULL to map it
 * here. Disk files are opened here (disk-N.sync while promoting and still
 * there, else disk-N.img). Removes the journal when done. 0 or -errno. */
int journal_apply(const char *dir, const struct journal_view *j, uint8_t *ram, uint64_t ram_size);
/* If DIR/journal exists, verify and apply it; remove journal.tmp.
 * 1 replayed, 0 nothing to do, -errno (reason in err). */
int journal_recover(const char *dir, char *err, size_t errlen);

#endif
