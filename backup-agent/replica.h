/* The backup's replica of one VM in its state directory:
 *   vm.json    identity from the primary's HELLO + the committed epoch
 *   ram        guest RAM as of the committed epoch
 *   devstate   QEMU device state of the committed epoch
 *   ram.sync   a new primary's initial copy, until its first commit
 *   disk-N.img each disk of the HELLO's "disks" (raw), as of the committed epoch
 *   disk-N.sync its initial copy, until the first commit (like ram.sync)
 *   journal    an epoch committed but not yet applied (journal.h)
 *   pair.json  the VM and the peer this directory belongs to (pair.h)
 * An epoch is staged in memory and committed only when it is complete and
 * its checksums match; a torn, truncated or corrupt epoch is dropped and the
 * committed replica stays as it was. */
#ifndef REMUS_REPLICA_H
#define REMUS_REPLICA_H

#include "diskfile.h"
#include "journal.h"
#include "proto.h"

#include <json-c/json.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Most disk bytes (data + 24 per op) staged for one epoch: the primary
 * ends epochs well before (a heavy writer makes epochs short); beyond this
 * the epoch is dropped rather than the agent run out of memory. */
#define REPLICA_MAX_STAGED_DISK_BYTES (1ull << 30)

/* What one primary may make this agent hold ([backup] max-ram-mb,
 * max-disk-gb, max-epoch-mb): a HELLO over a bound is refused before
 * anything in the state dir changes, an epoch staging more than
 * max_epoch_bytes in memory is dropped (NACK). */
struct replica_limits {
	uint64_t max_ram_bytes;    /* the HELLO's ram_size */
	uint64_t max_disk_bytes;   /* each disk's size */
	uint64_t max_epoch_bytes;  /* staged per epoch >= 1: pages with their index,
				    * device state, disk ops (data + 24 each) */
};
#define REPLICA_DEFAULT_MAX_RAM_MB   65536u
#define REPLICA_DEFAULT_MAX_DISK_GB  4096u
#define REPLICA_DEFAULT_MAX_EPOCH_MB 16384u
/* Free space a HELLO needs in the state dir beyond the new RAM copy and
 * the disks' (replica_begin_session): room for the journals of the first
 * epochs and the device state. */
#define REPLICA_SPACE_MARGIN (256ull << 20)
/* Staging buffers larger than this are freed after each epoch: one large
 * epoch must not keep its peak in the heap for the rest of the session. */
#define REPLICA_STAGE_KEEP_BYTES (1u << 20)
/* One PAGES_Z frame's pages, decoded. */
#define REPLICA_ZBUF_BYTES ((size_t)PROTO_PAGES_PER_FRAME * PROTO_PAGE_SIZE)

/* One disk of the HELLO's "disks" array; index = position in it. */
struct replica_disk {
	char *id;                /* "id": the primary's name for the disk */
	char *node;              /* "node": the primary's block node, or NULL */
	char *format;            /* "format" as the primary said it, or NULL */
	uint64_t size;           /* bytes; > 0, a multiple of 512 */
	char *path;              /* replica_load_info only: DIR/disk-N.img */
};

struct replica {
	char *dir;
	/* the session with the current primary */
	struct json_object *hello;
	char *peer;              /* the link's identity of the primary, or NULL */
	struct replica_limits lim;
	uint64_t ram_size, npages;
	uint8_t *ram;            /* mapping of ram.sync or ram */
	bool syncing;            /* ram.sync not yet committed */
	bool synced;             /* epoch 0, the initial copy, is complete */
	bool session_committed;  /* a checkpoint of this session is on disk */
	/* The session's place in the VM's history (vm.json "generation"):
	 * above the HELLO's and above this directory's last replica, so that
	 * of two replicas the one written later has the higher generation. */
	uint64_t generation;
	/* delta resync: ram.sync starts as a copy of the replica's RAM, whose
	 * page hashes (with the HELLO's seed) the primary compares against;
	 * the agent copies and hashes it in steps (replica_ram_hashes) */
	bool delta;
	uint64_t delta_seed;
	/* ... and each disk's disk-N.sync a copy of disk-N.img, hashed in
	 * chunks (disk_base.c): the number of chunks, 0 for a full copy */
	uint64_t disk_base_chunks[DISKFILE_MAX];
	uint32_t disk_base_chunk;  /* bytes a chunk (the HELLO's disk_hash_chunk) */
	uint64_t disk_base_seed;
	/* ... and those bases are the replica the primary last had committed
	 * (the HELLO's disk_resume): it sends only what it wrote since */
	bool disk_resume;
	/* a base could not be read or copied: full copies until a commit
	 * writes new images (else every reconnect would fail the same way) */
	bool base_unusable;
	uint64_t session_epoch;  /* last epoch committed (or synced) in this session */
	/* called during a long commit (journal_view.pulse), or NULL */
	void (*pulse)(void *ctx);
	void *pulse_ctx;
	struct replica_disk *disks;
	unsigned ndisks;
	int sync_fd[DISKFILE_MAX];  /* disk-N.sync while syncing; the first nsync_fd are open */
	unsigned nsync_fd;
	/* Syncing an initial copy to this host's storage failed: the session
	 * cannot commit (a second sync would say nothing of what was lost)
	 * and must start again with a new copy. */
	bool copy_lost;
	/* the epoch being received */
	bool staging;
	uint64_t stage_epoch;
	char bad[160];           /* why the staged epoch is dropped, "" if fine */
	uint64_t *stage_idx;
	uint8_t *stage_pages;
	size_t stage_n, stage_cap;
	uint8_t *stage_dev;
	size_t stage_dev_len, stage_dev_cap;
	uint32_t stage_frames, stage_crc;
	struct journal_disk_op *stage_dops;  /* disk ops in arrival order */
	size_t stage_dops_n, stage_dops_cap;
	uint8_t *stage_ddata;                /* their WRITE data, in the same order */
	size_t stage_ddata_len, stage_ddata_cap;
	uint64_t stage_disk_bytes;           /* data + 24 per op, for the cap */
	uint64_t stage_bytes;                /* everything staged, for lim.max_epoch_bytes */
	uint8_t *zbuf;                       /* a PAGES_Z frame decoded (REPLICA_ZBUF_BYTES) */
	/* totals */
	uint64_t commits, discards;
	uint64_t disk_ops;       /* disk ops applied: initial copy + committed */
};

void replica_init(struct replica *rp, const char *dir);
void replica_free(struct replica *rp);
/* The defaults above, in bytes. */
void replica_default_limits(struct replica_limits *lim);
/* A HELLO's text parsed and checked (JSON, protocol, sizes, names, disks),
 * with no side effects: *out is the HELLO object (json_object_put), or
 * NULL and -errno with the reason in err. */
int replica_parse_hello(const char *hello_json, struct json_object **out, char *err,
			size_t errlen);
/* A primary said HELLO: check it and prepare ram.sync. 0, or -errno with
 * the reason in err (sent back to the primary). peer_identity: who the
 * link layer says the primary is (NULL or "": nobody in particular); with
 * the HELLO's VM it must match the state dir's pin (pair.h). lim NULL: the
 * defaults. A HELLO over a bound, of another pair, or that does not fit in
 * the file system's free space is refused before any file is created,
 * truncated or replayed. */
int replica_begin_session(struct replica *rp, const char *hello_json,
			  const char *peer_identity, const struct replica_limits *lim,
			  char *err, size_t errlen);
/* Delta resync (proto.h): after replica_begin_session with rp->delta,
 * one step of the base: pages [first, first + n) of the replica's RAM
 * copied into ram.sync, and their hashes as one FRAME_RAM_HASHES payload
 * (malloc'd, *len bytes); n at most PROTO_RAM_HASHES_PER_FRAME. NULL
 * without delta, out of range, or when a read or write fails. The caller
 * takes the steps in order, between turns of its loop, before any page of
 * the initial copy may arrive. */
uint8_t *replica_ram_hashes(const struct replica *rp, uint64_t first, uint32_t n, uint32_t *len);
/* disk_base.c: the same for disks. Which disks start from their replica
 * (rp->disk_base_chunks; called by replica_begin_session), whether any
 * does, and one step: chunks [first, first + n) of disk-N.img copied into
 * disk-N.sync and hashed, as one FRAME_DISK_HASHES payload (malloc'd, *len
 * bytes), or NULL (no base, out of range, a read or write failed). */
void replica_choose_disk_base(struct replica *rp);
/* Is every base the replica the HELLO's "disk_resume" names (that
 * session's disk_session, at its epoch or later, the HELLO's disks)? Only
 * commits write disk-N.img (a restore runs on overlays over it).
 * Sets rp->disk_resume; called after replica_choose_disk_base. */
void replica_choose_disk_resume(struct replica *rp);
bool replica_disk_base_any(const struct replica *rp);
uint8_t *replica_disk_hashes(const struct replica *rp, unsigned disk, uint64_t first,
			     uint32_t n, uint32_t *len);
/* FRAME_VERIFY of epoch (proto.h): compare the replica, as committed at
 * that epoch, with the primary's page or disk block hashes (differences
 * are logged). The VERIFY_RESULT payload
 * (malloc'd, *outlen bytes; SKIPPED when the replica is not at that
 * epoch), or NULL for a malformed frame or no memory (why says which). */
uint8_t *replica_verify(struct replica *rp, uint64_t epoch, const uint8_t *payload, uint32_t len,
			uint32_t *outlen, char *why, size_t whylen);
/* A plain copy of from at to (mode 0600, replaced if there). 0 or -errno. */
int replica_copy_file(const char *from, const char *to);
/* Copies of the committed replica's files (vm.json, devstate, ram,
 * disk-N.img) in dir (which must exist), as of the last commit, its
 * journal applied first: clones (FICLONE) where the file system makes
 * them, else copies, refused with -EFBIG when they would copy more than
 * max_copy bytes (the loop does not commit meanwhile). 0 or -errno (why). */
int replica_snapshot(struct replica *rp, const char *dir, uint64_t max_copy, char *why,
		     size_t whylen);
/* Ends the session: drops what was not committed and frees the staging
 * buffers. */
void replica_end_session(struct replica *rp);
/* Heap the staging buffers hold now (their capacity), in bytes. */
size_t replica_staged_heap(const struct replica *rp);
/* A PAGES, DEVSTATE or DISK frame; payload_ok says whether its CRC
 * matched. Epoch 0's pages and disk ops go straight into ram.sync and
 * disk-N.sync; later epochs are staged until their EPOCH_END. */
void replica_add_frame(struct replica *rp, const struct frame_hdr *h,
		       const uint8_t *payload, bool payload_ok);
/* Test hook (--test-disk-apply-on-arrival): apply a DISK frame to the
 * replica disk at once, in no epoch: the naive design that lets the disk
 * run ahead of the memory checkpoint. */
void replica_apply_unbuffered(struct replica *rp, const uint8_t *payload, uint32_t len);
/* EPOCH_END (payload_ok: its CRC matched): 0 when the epoch is committed
 * (or, for epoch 0, the sync is complete); -EBADMSG when it was dropped,
 * staging and all, with the reason in why. */
int replica_end_epoch(struct replica *rp, const struct frame_hdr *h,
		      const uint8_t *payload, bool payload_ok, char *why, size_t whylen);

/* After a crash of the agent: replay a committed journal, drop an initial
 * copy that never committed. 1 replayed, 0 nothing to do, -errno (err). */
int replica_recover(const char *dir, char *err, size_t errlen);

/* What a restore needs, read back from vm.json. */
struct replica_info {
	struct json_object *vm;  /* the HELLO object */
	uint64_t epoch;
	char *committed_at;
	char *host_boot_id;      /* the host's boot when committed ("" or NULL: unknown) */
	struct replica_disk *disks;  /* ndisks, in HELLO order, path = DIR/disk-N.img */
	unsigned ndisks;
};
/* 0, -ENOENT when there is no committed replica. */
int replica_load_info(const char *dir, struct replica_info *out);
/* DIR/restored: the VM went on from this replica (a VM was restored from
 * it, or its primary detached on purpose: the VM runs on unprotected, or
 * was shut down), until a new session commits over it. Such a replica is
 * behind what clients saw, or a VM meant to stay down: a cold start never
 * restores it. */
void replica_mark_restored(const char *dir);
bool replica_was_restored(const char *dir);
/* A HELLO's or vm.json's "generation" (0 when absent or not a count; at
 * most REPLICA_MAX_GENERATION, so that one more never wraps). */
#define REPLICA_MAX_GENERATION (1ull << 62)
uint64_t replica_generation(struct json_object *vm);
void replica_info_free(struct replica_info *info);
/* -ESTALE (reason in err) if dir's replica was committed in an earlier
 * boot of this host: its RAM and journal may have lost writes its disks
 * kept. 0 otherwise (also without a replica, or an older one that does not
 * say). */
int replica_check_host_restart(const char *dir, char *err, size_t errlen);

#endif
