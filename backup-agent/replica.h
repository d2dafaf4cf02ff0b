/* The backup's replica of one VM in its state directory:
 *   vm.json    identity from the primary's HELLO + the committed epoch
 *   ram        guest RAM as of the committed epoch
 *   devstate   QEMU device state of the committed epoch
 *   ram.sync   a new primary's initial copy, until its first commit
 *   journal    an epoch committed but not yet applied (journal.h)
 * An epoch is staged in memory and committed only when it is complete and
 * its checksums match; a torn, truncated or corrupt epoch is dropped and the
 * committed replica stays as it was. */
#ifndef REMUS_REPLICA_H
#define REMUS_REPLICA_H

#include "proto.h"

#include <json-c/json.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct replica {
	char *dir;
	/* the session with the current primary */
	struct json_object *hello;
	uint64_t ram_size, npages;
	uint8_t *ram;            /* mapping of ram.sync or ram */
	bool syncing;            /* ram.sync not yet committed */
	bool synced;             /* epoch 0, the initial copy, is complete */
	bool session_committed;  /* a checkpoint of this session is on disk */
	uint64_t session_epoch;  /* last epoch committed (or synced) in this session */
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
	/* totals */
	uint64_t commits, discards;
};

void replica_init(struct replica *rp, const char *dir);
void replica_free(struct replica *rp);
/* A primary said HELLO: check it and prepare ram.sync. 0, or -errno with
 * the reason in err (sent back to the primary). */
int replica_begin_session(struct replica *rp, const char *hello_json,
			  char *err, size_t errlen);
void replica_end_session(struct replica *rp);
/* A PAGES or DEVSTATE frame; payload_ok says whether its CRC matched. */
void replica_add_frame(struct replica *rp, const struct frame_hdr *h,
		       const uint8_t *payload, bool payload_ok);
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
};
/* 0, -ENOENT when there is no committed replica. */
int replica_load_info(const char *dir, struct replica_info *out);
void replica_info_free(struct replica_info *info);

#endif
