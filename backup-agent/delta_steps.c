/* Delta resync on the backup: the replica's RAM and disks become the base
 * of the new session's initial copy, hashed in steps between turns of
 * the loop; the primary then sends only what differs. */
#include "agent.h"

#include "clock.h"
#include "log.h"

#include <stdio.h>
#include <string.h>

/* Delta resync: the base of the initial copy (the replica's RAM, then each
 * disk's replica) is copied into ram.sync (disk-N.sync) and hashed in
 * steps, one RAM_HASHES (DISK_HASHES) frame each, between turns of the
 * loop: a large RAM or disk takes seconds, during which heartbeats and the
 * control socket must go on. The primary sends nothing of epoch 0 before
 * the last hash (a primary that does is dropped, on_frame). */
#define DELTA_STEP_PAGES  16384u /* 64 MiB */
/* of a disk: read and written here, so a slow disk must not keep the loop
 * (and the heartbeats) past the primary's patience */
#define DELTA_STEP_BYTES  (16ull << 20)

static bool ram_base_pending(const struct agent *a)
{
	return a->replica.delta && a->delta_next < a->replica.npages;
}

/* The next disk whose base is still to hash, from delta_disk on; false
 * when none is left. */
static bool next_disk_base(struct agent *a)
{
	const struct replica *rp = &a->replica;

	for (; a->delta_disk < rp->ndisks && a->delta_disk < DISKFILE_MAX; a->delta_disk++) {
		if (a->delta_disk_next < rp->disk_base_chunks[a->delta_disk])
			return true;
		a->delta_disk_next = 0;
	}
	return false;
}

/* One step: pages of RAM first, then chunks of the disks. */
static uint8_t *delta_step_payload(struct agent *a, unsigned *type, uint32_t *len)
{
	const struct replica *rp = &a->replica;
	uint64_t left;
	uint32_t n;
	uint8_t *payload;

	if (ram_base_pending(a)) {
		left = rp->npages - a->delta_next;
		n = left < DELTA_STEP_PAGES ? (uint32_t)left : DELTA_STEP_PAGES;
		*type = FRAME_RAM_HASHES;
		payload = replica_ram_hashes(rp, a->delta_next, n, len);
		a->delta_next += n;
		return payload;
	}
	left = rp->disk_base_chunks[a->delta_disk] - a->delta_disk_next;
	n = left < DELTA_STEP_BYTES / rp->disk_base_chunk ?
		    (uint32_t)left : (uint32_t)(DELTA_STEP_BYTES / rp->disk_base_chunk);
	*type = FRAME_DISK_HASHES;
	payload = replica_disk_hashes(rp, a->delta_disk, a->delta_disk_next, n, len);
	a->delta_disk_next += n;
	return payload;
}

/* Still copying a base: nothing of epoch 0 may land in a .sync file yet. */
bool agent_delta_base_pending(struct agent *a)
{
	return ram_base_pending(a) || next_disk_base(a);
}

void agent_on_delta_wait(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct agent *a = w->data;

	ev_idle_start(loop, &a->delta_step);
}

void agent_on_delta_step(struct ev_loop *loop, ev_idle *w, int revents)
{
	struct agent *a = w->data;
	uint8_t *payload;
	unsigned type;
	uint32_t len;
	struct iovec iov;

	if (!a->primary || !agent_delta_base_pending(a)) {
		ev_idle_stop(loop, w);
		return;
	}
	if (a->primary->out.bytes_queued > AGENT_DELTA_BACKLOG_BYTES) {
		/* at the link's pace, not into memory (and no spinning idle) */
		ev_idle_stop(loop, w);
		ev_timer_start(loop, &a->delta_wait);
		return;
	}
	payload = delta_step_payload(a, &type, &len);
	iov = (struct iovec){ .iov_base = payload, .iov_len = len };
	if (!payload) {
		ev_idle_stop(loop, w);
		a->replica.base_unusable = true;
		agent_lose_stream(a, "the base of a delta resync could not be read or copied; the next "
			    "session copies in full");
		return;
	}
	if (peer_link_push(a->primary, type, 0, &iov, 1, payload, NULL)) {
		ev_idle_stop(loop, w);
		agent_lose_stream(a, "the hashes of a delta resync's base could not be queued");
		return;
	}
	if (type == FRAME_RAM_HASHES && !ram_base_pending(a))
		log_info("delta resync: the initial copy starts from the replica's RAM; its %llu "
			 "pages copied and hashed in %.0f ms", (unsigned long long)a->replica.npages,
			 mono_ms() - a->delta_started_ms);
	if (type == FRAME_DISK_HASHES &&
	    a->delta_disk_next == a->replica.disk_base_chunks[a->delta_disk])
		log_info("delta resync: disk %s starts from its replica; %llu chunks copied and "
			 "hashed, %.0f ms since the HELLO", a->replica.disks[a->delta_disk].id,
			 (unsigned long long)a->replica.disk_base_chunks[a->delta_disk],
			 mono_ms() - a->delta_started_ms);
	if (!agent_delta_base_pending(a))
		ev_idle_stop(loop, w);
}

void agent_delta_start(struct agent *a)
{
	a->delta_next = 0;
	a->delta_disk = 0;
	a->delta_disk_next = 0;
	a->delta_started_ms = mono_ms();
	ev_idle_start(a->loop, &a->delta_step);
}

/* The HELLO_REPLY's "disk_hashes": per disk, the chunks whose hashes follow. */
void agent_add_disk_hashes(const struct replica *rp, char *reply, size_t size)
{
	if (!replica_disk_base_any(rp))
		return;
	snprintf(reply + strlen(reply), size - strlen(reply), ",\"disk_hashes\":[");
	for (unsigned i = 0; i < rp->ndisks; i++)
		snprintf(reply + strlen(reply), size - strlen(reply), "%s%llu", i ? "," : "",
			 (unsigned long long)(i < DISKFILE_MAX ? rp->disk_base_chunks[i] : 0));
	snprintf(reply + strlen(reply), size - strlen(reply), "]");
}
