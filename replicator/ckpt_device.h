/* The epoch pipeline fans out over checkpoint devices, after libxl's
 * checkpoint device ops: guest memory, QEMU's device state, and later the
 * net buffer and the disks. Adding a device adds a file and a table entry,
 * not branches in the pipeline. A NULL hook means "nothing to do". */
#ifndef REMUS_CKPT_DEVICE_H
#define REMUS_CKPT_DEVICE_H

#include <json-c/json.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

struct replicator;

/* What one epoch amounts to on the wire; devices add to it as they queue
 * frames, and the pipeline closes the epoch with it (FRAME_EPOCH_END). */
struct epoch_tally {
	uint64_t id;
	uint64_t pages;
	uint64_t devstate_bytes;
	uint64_t disk_bytes;  /* data of its DISK writes (not in EPOCH_END) */
	uint32_t frames;
	uint32_t crc;
	bool resend;          /* queued again after a NACK */
};

struct ckpt_device_ops {
	const char *name;
	/* At attach. */
	int (*setup)(struct replicator *r, void **state);
	/* Always runs, also after a failed setup (state may be NULL). */
	void (*teardown)(void *state);
	/* A new backup: queue a full copy while the VM runs (epoch 0). May
	 * return CKPT_SYNC_PENDING: the copy goes on (frames pushed to
	 * r->sync_tally) and epoch 0 ends when the device calls
	 * epoch_sync_device_ready(). */
	int (*sync)(void *state, struct replicator *r, struct epoch_tally *t);
	/* The barrier is next (`stop`): nothing may wait for this loop now. */
	void (*presuspend)(void *state, struct replicator *r);
	/* ... but there is no barrier: the VM was not running (`stop` found it
	 * paused by someone else, or it could not be stopped). Undo presuspend. */
	void (*barrier_skipped)(void *state, struct replicator *r);
	/* VM stopped at the barrier: capture what this epoch changed. Keep it
	 * short: the guest is not running. */
	int (*postsuspend)(void *state, struct replicator *r, struct epoch_tally *t);
	/* VM running again: queue the captured data (called again, for the same
	 * data, if the backup asks for the epoch once more). */
	int (*send)(void *state, struct replicator *r, struct epoch_tally *t);
	/* The backup committed the epoch: release what waited for it. */
	void (*commit)(void *state, struct replicator *r, uint64_t epoch);
	/* Protection starts (the initial sync is in, next_epoch is the first
	 * checkpoint) or ends (the backup is lost): hold or release output. */
	void (*protect)(void *state, struct replicator *r, bool on, uint64_t next_epoch);
	/* The protection state changed (prot_state.h): a device whose
	 * writers wait for barriers asks whether they are still coming. */
	void (*state_changed)(void *state, struct replicator *r);
	/* Figures for `remusctl status`: add keys to out. */
	void (*status)(void *state, struct json_object *out);
	/* A QMP event from QEMU (BLOCK_JOB_READY, ...). */
	void (*event)(void *state, struct replicator *r, const char *event,
		      struct json_object *data);
	/* What the backup must know of this device: add keys to HELLO. */
	void (*hello)(void *state, struct json_object *hello);
	/* The backup accepted the HELLO: what its reply offers this device (a
	 * delta resync's base). Non-zero refuses the reply, with err. */
	int (*hello_reply)(void *state, struct json_object *reply, uint64_t seed, char *err,
			   size_t errlen);
	/* A frame from the backup that is this device's (FRAME_DISK_HASHES):
	 * 1 when it completed what the device waited for, 0 when more is to
	 * come, <0 when it was not expected or is malformed (the link drops). */
	int (*backup_frame)(void *state, unsigned type, const uint8_t *payload, uint32_t len);
	/* Does the initial copy still wait for the backup (its hashes)? */
	bool (*sync_waits)(void *state);
};

#define CKPT_SYNC_PENDING 1

struct ckpt_device {
	const struct ckpt_device_ops *ops;
	void *state;
};

extern const struct ckpt_device_ops memory_device_ops;
extern const struct ckpt_device_ops qemu_state_device_ops;
extern const struct ckpt_device_ops netbuf_device_ops;
extern const struct ckpt_device_ops disk_device_ops;

/* A device whose sync returned CKPT_SYNC_PENDING has queued all of
 * epoch 0: close it once every such device has said so. */
void epoch_sync_device_ready(struct replicator *r);

/* A device needs a barrier now (e.g. its output buffer is full): take the
 * checkpoint at once, or as soon as the one in flight is acknowledged. */
void epoch_request_early(struct replicator *r, const char *why);

/* Queue a frame that belongs to epoch t and account for it in the tally. */
int epoch_push_frame(struct replicator *r, struct epoch_tally *t, unsigned type,
		     const struct iovec *iov, int iovcnt, void *owned);

#endif
