/* The epoch pipeline fans out over checkpoint devices, after libxl's
 * checkpoint device ops: guest memory, QEMU's device state, the disks and
 * the net buffer. Adding a device adds a file and a table entry, not
 * branches in the pipeline. A NULL hook means "nothing to do".
 *
 * A device sees the replicator only through struct ckpt_ctx and the
 * functions declared here: what it needs to capture and queue, a way to
 * ask for an early epoch or a resync, and a few questions about the link
 * and the protection state. Device files include this header, not
 * replicator.h, so the replicator's own state stays out of their reach. */
#ifndef REMUS_CKPT_DEVICE_H
#define REMUS_CKPT_DEVICE_H

#include "replicator_config.h"

#include <json-c/json.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

struct compress;
struct ev_loop;
struct qmp;

/* Delta resync of this connection (link.c fills it, proto.h): its
 * HELLO's seed, and the backup's page hashes for epoch 0 (dev_memory.c
 * sends only the pages that differ). hashes NULL: a full copy. */
struct ram_delta {
	uint64_t seed;
	uint8_t *hashes;     /* expect * PAGE_HASH_SIZE */
	uint64_t expect, received;
	uint64_t pages_same; /* pages of epoch 0 not sent: the backup has them */
};

/* What a checkpoint device is given (epoch.c fills it before setup). */
struct ckpt_ctx {
	struct ev_loop *loop;
	struct qmp *qmp;
	const struct replicator_config *cfg;
	const struct vm_info *vm;
	const char *runtime_dir;       /* for our sockets and files (runtime_dir.h) */
	struct epoch_tally *sync_tally; /* epoch 0 while devices still copy */
	struct compress *compress;     /* --compress: how pages go on the wire */
	struct ram_delta *delta;       /* the RAM delta resync's hashes */
	/* Reported by the disk device at setup: the disks it replicates (the
	 * HELLO and verify need to know). */
	int protected_disks;
};

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
	int (*setup)(struct ckpt_ctx *cx, void **state);
	/* Always runs, also after a failed setup (state may be NULL). */
	void (*teardown)(void *state);
	/* A new backup: queue a full copy while the VM runs (epoch 0). May
	 * return CKPT_SYNC_PENDING: the copy goes on (frames pushed to
	 * cx->sync_tally) and epoch 0 ends when the device calls
	 * epoch_sync_device_ready(). */
	int (*sync)(void *state, struct ckpt_ctx *cx, struct epoch_tally *t);
	/* The barrier is next (`stop`): nothing may wait for this loop now. */
	void (*presuspend)(void *state, struct ckpt_ctx *cx);
	/* ... but there is no barrier: the VM was not running (`stop` found it
	 * paused by someone else, or it could not be stopped). Undo presuspend. */
	void (*barrier_skipped)(void *state, struct ckpt_ctx *cx);
	/* VM stopped at the barrier: capture what this epoch changed. Keep it
	 * short: the guest is not running. */
	int (*postsuspend)(void *state, struct ckpt_ctx *cx, struct epoch_tally *t);
	/* VM running again: queue the captured data (called again, for the same
	 * data, if the backup asks for the epoch once more). */
	int (*send)(void *state, struct ckpt_ctx *cx, struct epoch_tally *t);
	/* The backup committed the epoch: release what waited for it. */
	void (*commit)(void *state, struct ckpt_ctx *cx, uint64_t epoch);
	/* Protection starts (the initial sync is in, next_epoch is the first
	 * checkpoint) or ends (the backup is lost): hold or release output. */
	void (*protect)(void *state, struct ckpt_ctx *cx, bool on, uint64_t next_epoch);
	/* The protection state changed (prot_state.h): a device whose
	 * writers wait for barriers asks whether they are still coming. */
	void (*state_changed)(void *state, struct ckpt_ctx *cx);
	/* Figures for `remusctl status`: add keys to out. */
	void (*status)(void *state, struct json_object *out);
	/* `remusctl reset-stats`: forget the recent figures (totals stay). */
	void (*reset_stats)(void *state);
	/* A QMP event from QEMU (BLOCK_JOB_READY, ...). */
	void (*event)(void *state, struct ckpt_ctx *cx, const char *event,
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

/* ---- what a device may ask of the replicator (epoch.c, ckpt_ctx.c) ---- */

/* A device whose sync returned CKPT_SYNC_PENDING has queued all of
 * epoch 0: close it once every such device has said so. */
void epoch_sync_device_ready(struct ckpt_ctx *cx);

/* A device needs a barrier now (e.g. its output buffer is full): take the
 * checkpoint at once, or as soon as the one in flight is acknowledged. */
void epoch_request_early(struct ckpt_ctx *cx, const char *why);

/* A device holds output produced in the running epoch (reply: more than a
 * bare TCP ACK): the epoch policy may end the epoch sooner. */
void epoch_output_waiting(struct ckpt_ctx *cx, bool reply);

/* Queue a frame that belongs to epoch t and account for it in the tally. */
int epoch_push_frame(struct ckpt_ctx *cx, struct epoch_tally *t, unsigned type,
		     const struct iovec *iov, int iovcnt, void *owned);

/* Queue a frame outside any epoch (the test mode of unbuffered disk
 * writes): 0, or <0 when the link cannot take it. */
int ckpt_push_unbuffered(struct ckpt_ctx *cx, unsigned type, uint64_t epoch,
			 const struct iovec *iov, int iovcnt, void *owned);

/* What the device sent cannot be trusted to arrive whole (a frame could
 * not be queued, a mirror ended): drop the link; the next session copies
 * again. */
void ckpt_resync(struct ckpt_ctx *cx, const char *why);

/* The initial copy's RAM hashes are used up: free them. */
void ckpt_delta_done(struct ckpt_ctx *cx);

/* Is the backup connected? How many bytes does the link still hold, and
 * how many has it sent in this session (a device paces its copy by them)? */
bool ckpt_link_up(const struct ckpt_ctx *cx);
uint64_t ckpt_link_queued(const struct ckpt_ctx *cx);
uint64_t ckpt_link_sent(const struct ckpt_ctx *cx);
/* Queuing takes long (a large epoch, compressed): write what the link
 * holds now, so that the backup keeps hearing from us (peer_link_pulse). */
void ckpt_link_pulse(struct ckpt_ctx *cx);

/* Will barriers be taken (the backup is up, protection runs or its initial
 * sync does, we are not stopping)? A device whose writers wait for the
 * next barrier lets them go when not. */
bool ckpt_barriers_coming(const struct ckpt_ctx *cx);
/* Is the replicator on its way out (SIGTERM, the VM gone)? */
bool ckpt_stopping(const struct ckpt_ctx *cx);
/* Does the initial sync of this session run now (and the backup is up)? */
bool ckpt_initial_sync_running(const struct ckpt_ctx *cx);
/* Has QEMU exited (nothing more to ask it)? */
bool ckpt_vm_gone(const struct ckpt_ctx *cx);
/* Does the backup decode compressed pages (FRAME_PAGES_Z)? */
bool ckpt_backup_takes_lz4(const struct ckpt_ctx *cx);

/* Give path (a socket or file made for QEMU) to QEMU's user. */
int ckpt_give_to_qemu(struct ckpt_ctx *cx, const char *path);
/* Read QEMU's events now (libvirt: they queue until asked). */
void ckpt_read_qemu_events(struct ckpt_ctx *cx);

/* remusctl verify (verify.c) rides on the memory device's barrier and
 * send: the RAM as it stands at the barrier, and the pages to send again. */
struct ram_holes;
void ckpt_verify_at_barrier(struct ckpt_ctx *cx, const uint8_t *ram,
			    const struct ram_holes *holes, size_t npages, uint64_t epoch);
int ckpt_verify_resends(struct ckpt_ctx *cx, struct epoch_tally *t);

#endif
