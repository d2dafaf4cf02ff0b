/* The disk device's state, shared by dev_disk.c (the records and the
 * epoch pipeline), disk_qemu.c (what it asks of QEMU: the disks, their
 * mirror jobs, our NBD nodes) and disk_bitmap.c (--disk-capture bitmap:
 * an epoch's writes found by QEMU's dirty bitmaps, read at the barrier). */
#ifndef REMUS_DEV_DISK_H
#define REMUS_DEV_DISK_H

#include "ckpt_device.h"
#include "disk_delta.h"
#include "proto.h"

#include <ev.h>
#include <json-c/json.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

/* Epochs whose bitmap exports may wait for their ack (disk_bitmap.c). */
#define DISK_RELEASE_BACKLOG 4

struct disk_rec {
	struct disk_rec *next;
	uint32_t disk, op;
	uint64_t offset, length;
	uint8_t hdr[PROTO_DISK_HDR_SIZE];
	uint8_t data[];                    /* WRITE only */
};

struct rec_list {
	struct disk_rec *head, **tail;
	size_t bytes;
	uint64_t n;
};

struct disk_device;

struct disk {
	struct disk_device *dev;
	uint32_t index;
	char *name;          /* query-block's device, or its node name */
	char *node;          /* the node blockdev-mirror starts from */
	char *file;          /* the image on this host, for the log */
	char *qdev;          /* the guest device on it, for the restore's check */
	uint64_t size;
	char sock[108];
	struct nbd_server *srv;
	bool node_added;     /* blockdev-add of our nbd node done */
	bool job;            /* our mirror job exists */
	bool ready;          /* BLOCK_JOB_READY seen */
	/* of our job's id: a cancelled job's late events are not ours. It
	 * starts at random, so that the events a SIGKILLed replicator's job
	 * sent before we cancelled it, read by us, are not taken for ours. */
	unsigned gen;
	bool retired;        /* our job was cancelled without waiting (bitmaps took over) */
	uint64_t writes, bytes;
	uint64_t sync_bytes;  /* of the disk covered in this initial copy */
	int image_fd;        /* bitmap capture: the raw image QEMU has open, or -1 (NBD) */
	struct disk_delta delta; /* delta resync: the backup's base, in epoch 0 */
	uint64_t resync_in, resync_sent; /* the last delta resync's bytes: copied, sent */
	/* resuming (disk_track.c): chunks written since the lineage's epoch
	 * and held in no record, one bit each (under the device's mu) */
	uint8_t *track;
	uint64_t track_chunks;
	int resume_fd;           /* the image, while a resumed copy reads it; -1 */
	uint64_t resume_next;    /* the next chunk it looks at */
	uint64_t resume_read;    /* bytes the last resumed copy read */
};

/* A replicated disk, as remusctl verify reads it (disk_verify_sources
 * fills it, verify.c reads the image). */
struct verify_disk {
	uint32_t index;           /* in the HELLO's "disks": the target is index + 1 */
	uint64_t size;
	char name[64];
	int fd;                   /* its image, read-only; -1: not compared */
	char why[96];             /* ... and why */
};

struct disk_device {
	struct ckpt_ctx *cx;
	struct disk disks[PROTO_MAX_DISKS];
	uint32_t n;
	char sock_dir[208];        /* our NBD sockets: RUNTIME_DIR/nbd */
	bool sock_dir_made;
	/* shared with the NBD threads */
	pthread_mutex_t mu;
	pthread_cond_t room;
	uint64_t tag;              /* epoch that arriving writes belong to */
	struct rec_list pending;   /* arrived, of epoch `tag` */
	bool streaming;            /* epoch 0: pending goes out as it comes */
	bool early_asked;
	bool closing;              /* teardown: writers must not wait */
	bool barrier;              /* stop under way: writers must not wait */
	bool may_wait;             /* a barrier (or the link, in epoch 0) will make room */
	bool overflow;             /* writes were dropped: only a full resync helps */
	uint64_t overflows;
	struct rec_list test_unbuffered; /* --test-disk-unbuffered copies */
	size_t soft_cap, hard_cap;
	/* main loop only */
	ev_async wake;
	ev_timer retry;            /* epoch 0: the link was full */
	ev_timer watch;            /* a barrier failed half-way; bitmap mode's dirty counts */
	ev_timer release;          /* bitmap capture: QEMU's leftovers of a barrier go */
	struct rec_list captured;  /* the epoch in flight, until committed */
	uint64_t captured_epoch;
	bool sync_open;            /* epoch 0 waits for READY */
	uint64_t early_epochs, stalls;
	/* --disk-capture bitmap (disk_bitmap.c) */
	bool capture_bitmap;       /* configured: bitmaps take over after epoch 0 */
	bool bitmaps_on;           /* epochs are captured by bitmaps now */
	bool mirror_retiring;      /* under mu: the mirror's writes are not ours any more */
	bool retire_pending;       /* a mirror's cancel to send again once the VM runs */
	bool nbd_server_ours;      /* we started QEMU's NBD server */
	uint64_t bm_epoch;         /* the epoch whose bitmaps record now */
	/* Captured epochs whose exports go after their ack (at most
	 * DISK_RELEASE_BACKLOG wait: more, and a barrier releases them), and
	 * released ones whose bitmaps go at the next release (QEMU lets go
	 * of a bitmap a moment after its export). */
	uint64_t release_epochs[DISK_RELEASE_BACKLOG];
	uint64_t unremoved_epochs[DISK_RELEASE_BACKLOG];
	unsigned nrelease, nunremoved;
	uint64_t bitmap_bytes;     /* read at barriers */
	char qemu_sock[128];       /* QEMU's NBD server listens here */
	uint32_t hash_chunk;       /* delta resync: the HELLO's disk_hash_chunk */
	/* Resuming (disk_track.c). Under mu: */
	bool track_valid;          /* every write since (track_session, track_epoch) is
				    * in a record held or sent, or in the maps */
	bool track_broken;         /* a write was dropped with no lineage to mark it in */
	uint64_t track_session, track_epoch;
	/* Main loop only: */
	uint32_t track_chunk;      /* bytes a bit (= the delta resync's chunk) */
	uint64_t session;          /* this connection's disk_session */
	bool session_committed;    /* ... has had an epoch committed */
	bool resume_offered, resuming, resume_started;
	bool resume_pumping;       /* epoch 0 reads marked chunks */
	uint32_t resume_disk;      /* ... of this disk now */
	unsigned resume_failures;  /* resumed sessions in a row that ended uncommitted */
	bool unreadable_said;      /* "cannot be resumed" logged once */
};

/* Resumed sessions in a row that may end before a commit before the
 * next copies in full (against the backup's hashes). */
#define DISK_RESUME_TRIES 2
/* A resumed copy's reads hold the loop this long at most per turn. */
#define DISK_RESUME_STEP_MS 20

/* disk_qemu.c */
/* Every writable disk but those the operator declared shared, into d. */
int disk_find(struct disk_device *d);
/* Cancel mirror jobs and remove NBD nodes a dead replicator left. */
void disk_clean_leftovers(struct ckpt_ctx *cx);
int disk_add_nbd_node(struct ckpt_ctx *cx, struct disk *k);
void disk_del_nbd_node(struct ckpt_ctx *cx, struct disk *k);
int disk_start_mirror(struct ckpt_ctx *cx, struct disk *k);
/* Cancel k's job and wait (bounded) until QEMU dropped it; on failure the
 * job stays ours, to be cancelled again. */
int disk_stop_mirror(struct ckpt_ctx *cx, struct disk *k);
/* The same, waiting max_ms at most (in a pause). */
int disk_stop_mirror_within(struct ckpt_ctx *cx, struct disk *k, int max_ms);
/* disk_stop_mirror for each of the n disks, with the VM stopped meanwhile
 * if any has a job (a VM found paused stays so). */
void disk_stop_mirrors_stopped(struct ckpt_ctx *cx, struct disk *disks, uint32_t n);
/* Cancel k's job without waiting (the VM runs on); disk_stop_mirror
 * waits for it to go before a new job may start. */
void disk_retire_mirror(struct ckpt_ctx *cx, struct disk *k);
const char *disk_json_str(struct json_object *o, const char *key);
/* A QMP command whose reply carries nothing; consumes args. */
int disk_qmp(struct ckpt_ctx *cx, const char *cmd, struct json_object *args);
/* The same without waiting for the reply (qmp_send): clean-up that must
 * not hold the loop. An error is logged when the reply is read past. */
int disk_qmp_send(struct ckpt_ctx *cx, const char *cmd, struct json_object *args);

/* dev_disk.c */
/* remusctl verify: the replicated disks (HELLO order) of the disk
 * device's state, each with its image opened for reading here
 * (disk_open_image) or why not. 0 disks for a NULL state (no disk device). */
uint32_t disk_verify_sources(const void *state, struct verify_disk *out, uint32_t max);
/* A record of one operation; for DISK_OP_WRITE, len bytes of data to fill. */
struct disk_rec *disk_rec_new(uint32_t disk, uint32_t op, uint64_t off, uint64_t len);
void disk_rec_list_append(struct rec_list *l, struct disk_rec *rec);
/* Queue rec as a DISK frame of t's epoch; the frame owns rec (freed also
 * when it cannot be queued). */
int disk_push_rec(struct ckpt_ctx *cx, struct epoch_tally *t, struct disk_rec *rec);

/* disk_resync.c: delta resync (ckpt_device.h's hello_reply, backup_frame
 * and sync_waits hooks, and epoch 0's records through the filter). */
int disk_resync_hello_reply(void *state, struct json_object *reply, uint64_t seed, char *err,
			    size_t errlen);
int disk_resync_frame(void *state, unsigned type, const uint8_t *payload, uint32_t len);
bool disk_resync_waits(void *state);
/* An operation of epoch 0 goes out, or the part of it the backup lacks;
 * takes rec. */
int disk_resync_push(struct disk_device *d, struct disk_rec *rec);
/* Epoch 0's operations are all out: the owed zeroes follow; frees the
 * deltas. */
int disk_resync_finish(struct disk_device *d);
void disk_resync_free(struct disk_device *d);

/* disk_track.c: resuming the backup's replica (docs/PROTOCOL.md). */
int disk_track_setup(struct disk_device *d);
void disk_track_free(struct disk_device *d);
/* With mu held: the chunks of a write that no record will carry. */
void disk_track_mark(struct disk_device *d, uint32_t disk, uint64_t off, uint64_t len);
void disk_track_mark_list(struct disk_device *d, const struct rec_list *l);
/* With mu held: a full copy starts. */
void disk_track_reset(struct disk_device *d);
void disk_track_commit(struct disk_device *d, uint64_t epoch);
/* No write passes through us any more (a mirror ended, bitmaps took over). */
void disk_track_lose(struct disk_device *d);
/* can_read: can every disk's image be read here (disk_open_image)? */
void disk_track_hello(struct disk_device *d, struct json_object *hello,
		      bool (*can_read)(struct disk_device *d));
void disk_track_reply(struct disk_device *d, struct json_object *reply);
/* Epoch 0 resumes: the images are open. False: copy in full. */
bool disk_track_resume_start(struct disk_device *d);
/* Marked chunks into d->pending, up to budget bytes: 1 more, 0 done, -errno. */
int disk_track_pump(struct disk_device *d, uint64_t budget);
void disk_track_resume_stop(struct disk_device *d);

/* disk_bitmap.c */
/* Start QEMU's NBD server for us, take back one a dead replicator left,
 * find how each disk's blocks can be read. */
int disk_bitmap_setup(struct ckpt_ctx *cx, struct disk_device *d);
void disk_bitmap_teardown(struct ckpt_ctx *cx, struct disk_device *d);
/* VM stopped after the mirror's last epoch: every disk's bitmap for
 * epoch `next` starts recording (one transaction). */
int disk_bitmap_begin(struct ckpt_ctx *cx, struct disk_device *d, uint64_t next);
/* VM stopped: close the recording epoch's bitmaps, start `next`'s, and
 * read every block they mark into out. -ENOSPC past 8 disk caps. */
int disk_bitmap_capture(struct ckpt_ctx *cx, struct disk_device *d, uint64_t next,
			struct rec_list *out);
/* After a barrier (the loop's next turn, or the next barrier if none came
 * between): remove the captured epoch's exports and the bitmaps of the
 * one before (an export lets go of its bitmap a moment later). */
void disk_bitmap_release(struct ckpt_ctx *cx, struct disk_device *d);
/* Every remus-x export and remus-b bitmap in QEMU, ours or a dead
 * replicator's: a new session copies the disks in full. */
void disk_bitmap_drop_all(struct ckpt_ctx *cx, struct disk_device *d);
/* What the image's holes are around the last place looked at: a hole from
 * hole_start up to data_start, then data up to data_end (UINT64_MAX: a
 * hole to the end of the file). One per walk over an epoch's ranges in
 * order, zeroed before it: SEEK_HOLE on tmpfs walks the page cache up to
 * the next hole, and in an image with none that is the whole file, for
 * every range (64 MiB, 1,100 ranges: 330 ms of pause). The VM is paused
 * while it is used, so the image does not change under it. */
struct image_extents {
	uint64_t hole_start, data_start, data_end;
	bool known;
};
/* The range [off, off+len) of the image fd cut where its holes start and
 * end: fn is called for each piece in order, hole or data (SEEK_DATA and
 * SEEK_HOLE, asked only past what x already knows; a file system without
 * them reports all data). Stops at fn's first non-zero return, which it
 * returns. */
typedef int segment_fn(void *opaque, uint64_t off, uint64_t len, bool hole);
int disk_image_segments(int fd, uint64_t off, uint64_t len, struct image_extents *x,
			segment_fn *fn, void *opaque);
/* The bytes the recording bitmaps mark so far, or -1 (for early epochs). */
int64_t disk_bitmap_dirty_bytes(struct ckpt_ctx *cx, struct disk_device *d);
/* k's image opened read-only here, if it is what the guest sees: a raw
 * image in a regular file of the disk's size that QEMU has open. The
 * descriptor, or -1 with *why (a constant string). */
int disk_open_image(struct ckpt_ctx *cx, const struct disk *k, const char **why);

#endif
