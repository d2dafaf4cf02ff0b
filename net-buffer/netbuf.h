/* The output-commit buffer: every frame the VM sends in epoch N waits here
 * until the backup has acknowledged checkpoint N, so nobody outside ever
 * sees state that a failover could take back (Remus's output commit).
 *
 * Frames are kept in arrival order and tagged with the open epoch. At the
 * barrier (VM stopped, its socket drained) netbuf_seal(N) closes epoch N:
 * later frames belong to N+1. netbuf_release(N) lets every frame of epoch
 * N and before go out, in order. Unprotected (no backup), frames go out at
 * once. Frames are only ever dropped for being malformed or oversized, or
 * when the output fails for good, and every drop is counted.
 *
 * Pure bookkeeping: I/O is the caller's (an output callback), so the
 * ordering rules can be tested without sockets. */
#ifndef REMUS_NETBUF_H
#define REMUS_NETBUF_H

#include "ring.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define NETBUF_MIN_FRAME 14u     /* an Ethernet header */
#define NETBUF_MAX_FRAME 65536u

/* Send one frame: 0 sent, -EAGAIN try again later (the frame stays first
 * in line), any other negative value: the frame is dropped and counted. */
typedef int netbuf_output_fn(void *opaque, const uint8_t *frame, size_t len);

struct netbuf_frame;

struct netbuf_stats {
	uint64_t frames_in, bytes_in;
	uint64_t frames_out, bytes_out;
	uint64_t dropped_malformed, dropped_oversized, dropped_output;
	size_t high_water_bytes;
	struct sample_ring delay_ms;  /* queued -> sent, per frame */
};

struct netbuf {
	struct netbuf_frame *head, **tail;
	struct netbuf_frame *held;  /* first frame not yet released (NULL: none) */
	uint64_t open_epoch;        /* tag of frames arriving now */
	bool protected;
	size_t frames, bytes;       /* queued, released or not */
	size_t held_frames, held_bytes;
	size_t cap_bytes;
	netbuf_output_fn *out;
	void *opaque;
	struct netbuf_stats st;
};

void netbuf_init(struct netbuf *nb, size_t cap_bytes, netbuf_output_fn *out, void *opaque);
void netbuf_free(struct netbuf *nb);

/* A frame from the VM. 0 queued (and sent, if unprotected), -EINVAL
 * malformed, -EMSGSIZE oversized (both dropped and counted), -ENOMEM. */
int netbuf_push(struct netbuf *nb, const uint8_t *frame, size_t len, double now_ms);
/* Queued output (held, or released behind a blocked port) reached the
 * cap: read no more from the VM (its NIC backs off) and, if protected, end
 * the epoch early so that the held part can go. */
bool netbuf_full(const struct netbuf *nb);
/* Barrier: every frame pushed so far belongs to epoch (or earlier). */
void netbuf_seal(struct netbuf *nb, uint64_t epoch);
/* Backup acknowledged epoch: release its frames and earlier ones. Returns
 * 1 when everything released is out, 0 when the output would block (call
 * netbuf_flush when it can take more). */
int netbuf_release(struct netbuf *nb, uint64_t epoch, double now_ms);
int netbuf_flush(struct netbuf *nb, double now_ms);
/* Protection on: frames from now on wait for epoch next_epoch's ack.
 * Off: everything held goes out now, and new frames at once. */
void netbuf_set_protected(struct netbuf *nb, bool on, uint64_t next_epoch, double now_ms);
/* Forget the recent figures (remusctl reset-stats): the frames' delays and
 * the high-water mark start again from now; the counts stay. */
void netbuf_forget_recent(struct netbuf *nb);

#endif
