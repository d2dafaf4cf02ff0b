/* Checkpoint device "disk": every writable disk of the VM, mirrored into
 * the replicator and shipped with the epoch its writes belong to.
 *
 * QEMU mirrors each disk (blockdev-mirror, sync=full, copy-mode=
 * write-blocking) to an NBD export this device serves on a unix socket
 * (common/nbd_server.c, a thread per disk: at the barrier this loop waits
 * in QMP `stop` while QEMU drains the mirror's writes, which wait for NBD
 * replies). A guest write completes only once the server has it, and
 * `stop` returns only once every write issued before it completed; so
 * every write that arrived before the barrier belongs to the epoch that
 * barrier closes. The server threads tag each write with the epoch in
 * progress; at the barrier, with the VM stopped, this device takes the
 * epoch's writes and moves the tag on. The writes then travel inside the
 * epoch on the one replication stream, before its EPOCH_END, so the backup
 * never has to guess which epoch a write belongs to (docs/PROTOCOL.md).
 *
 * Epoch 0, the initial sync, is the mirror's bulk copy plus what the guest
 * writes meanwhile: it streams to the backup as it comes (a disk does not
 * fit in memory) and epoch 0 ends once every mirror is READY. From epoch
 * 1 on, an epoch's writes stay here until the backup commits it, for a
 * resend after a NACK; their bytes are capped: past the soft cap the
 * epoch ends early, past the hard cap a writer waits (the guest's write
 * stalls) until the barrier has taken the epoch. When no barrier can come
 * (the backup is lost, protection is paused) or a writer has waited a
 * second, the device drops what it holds instead of stalling the guest,
 * and the next barrier or session copies the disks again in full: the
 * guest's I/O never hangs on the replicator, and the backup never gets a
 * disk with a hole in it.
 *
 * With --disk-capture bitmap the mirror serves epoch 0 and the first
 * epoch only: at that barrier QEMU's dirty bitmaps take over (one per disk
 * and epoch, disk_bitmap.c), the mirror is cancelled while the VM is still
 * stopped, and each later barrier reads the blocks the epoch's bitmaps
 * mark. The
 * guest's writes then never wait for the replicator.
 */
#include "ckpt_device.h"
#include "clock.h"
#include "dev_disk.h"
#include "log.h"
#include "nbd_server.h"
#include "proto.h"
#include "qmp.h"
#include "runtime_dir.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define SYNC_LINK_HIGH    (64u << 20)  /* epoch 0: link backlog before we wait */
#define WRITER_WAIT_MAX_MS 1000       /* a writer waits this long for room at most */
#define HANDOVER_CANCEL_MS 200       /* the bitmaps' handover waits this long for the mirror */
#define RESUME_STEP_BYTES (16u << 20)  /* a resumed copy reads this much per loop turn */

static void list_init(struct rec_list *l)
{
	l->head = NULL;
	l->tail = &l->head;
	l->bytes = 0;
	l->n = 0;
}

static void list_free(struct rec_list *l)
{
	while (l->head) {
		struct disk_rec *d = l->head;
		l->head = d->next;
		free(d);
	}
	list_init(l);
}

static void list_append(struct rec_list *l, struct disk_rec *d)
{
	d->next = NULL;
	*l->tail = d;
	l->tail = &d->next;
	l->bytes += sizeof(*d) + (d->op == DISK_OP_WRITE ? d->length : 0);
	l->n++;
}

struct disk_rec *disk_rec_new(uint32_t disk, uint32_t op, uint64_t off, uint64_t len)
{
	size_t dlen = op == DISK_OP_WRITE ? (size_t)len : 0;
	struct disk_rec *rec = malloc(sizeof(*rec) + dlen);

	if (!rec)
		return NULL;
	*rec = (struct disk_rec){ .disk = disk, .op = op, .offset = off, .length = len };
	proto_encode_disk_hdr(rec->hdr, &(struct disk_op){ .disk = disk, .op = op,
							   .offset = off, .length = len });
	return rec;
}

void disk_rec_list_append(struct rec_list *l, struct disk_rec *rec)
{
	list_append(l, rec);
}

/* Move all of from to the end of to. */
static void list_take(struct rec_list *to, struct rec_list *from)
{
	if (!from->head)
		return;
	*to->tail = from->head;
	to->tail = from->tail;
	to->bytes += from->bytes;
	to->n += from->n;
	list_init(from);
}

/* --- the NBD threads ----------------------------------------------------- */

/* Record one operation of the guest's disk (any thread). Waits while the
 * epoch's writes are over the hard cap: the guest's write then stalls
 * until the barrier takes them, which is the backpressure we want. */
/* Over the hard cap with no checkpoint coming to take the writes (backup
 * lost, protection paused, link down in the initial copy): drop what is
 * held and keep nothing more. The guest's I/O goes on; the next barrier
 * (or the next session) sees `overflow` and starts a full resync, which
 * copies every disk again. Called with mu held. */
static void overflow(struct disk_device *d)
{
	if (!d->overflow)
		d->overflows++;
	d->overflow = true;
	disk_track_mark_list(d, &d->pending); /* a resumed copy reads them */
	list_free(&d->pending);
	list_free(&d->test_unbuffered);
}

/* Record one operation of the guest's disk (an NBD thread). Over the hard
 * cap it waits, for a second at most, while a barrier is sure to come and
 * take the epoch's writes: the guest's write then stalls until the
 * barrier, which is the backpressure we want. Only -ENOMEM fails it; QEMU
 * then treats the mirror write as failed and ends the job (we resync). */
static int record(struct disk *k, uint32_t op, uint64_t off, uint64_t len, const void *data)
{
	struct disk_device *d = k->dev;
	size_t dlen = op == DISK_OP_WRITE ? (size_t)len : 0;
	struct disk_rec *rec;
	bool wake;

	pthread_mutex_lock(&d->mu);
	if (d->mirror_retiring) {
		/* Bitmaps capture the writes now; the cancelled job's last ones
		 * are in them too. */
		pthread_mutex_unlock(&d->mu);
		return 0;
	}
	k->writes++;
	k->bytes += dlen;
	if (d->streaming && (op == DISK_OP_WRITE || op == DISK_OP_WRITE_ZEROES))
		k->sync_bytes += len;
	/* Only data waits, and never across a barrier: QEMU's `stop` waits
	 * for this very write (and flushes), and only after `stop` does the
	 * loop take the epoch's writes. */
	if (dlen && d->pending.bytes + dlen > d->hard_cap && !d->overflow) {
		struct timespec until = mono_deadline(WRITER_WAIT_MAX_MS);
		bool timed_out = false;

		if (d->may_wait && !d->closing && !d->barrier)
			d->stalls++;
		/* Bounded: QEMU may drain its disks for a reason of its own (a
		 * `stop` not ours) and wait for this write while we wait. */
		while (d->pending.bytes && d->pending.bytes + dlen > d->hard_cap &&
		       d->may_wait && !d->closing && !d->barrier && !d->overflow && !timed_out)
			timed_out = pthread_cond_clockwait(&d->room, &d->mu, CLOCK_MONOTONIC,
							   &until) == ETIMEDOUT;
		if (d->pending.bytes + dlen > d->hard_cap && (!d->may_wait || timed_out))
			overflow(d);
	}
	if (d->overflow) {
		if (op != DISK_OP_FLUSH)
			disk_track_mark(d, k->index, off, len);
		pthread_mutex_unlock(&d->mu);
		return 0; /* the resync to come copies it */
	}
	/* Epoch 0 sends it at once: if that session ends before its first
	 * commit, a resumed copy must still read it. */
	if (d->streaming && d->track_valid && op != DISK_OP_FLUSH)
		disk_track_mark(d, k->index, off, len);
	pthread_mutex_unlock(&d->mu);
	rec = disk_rec_new(k->index, op, off, len);
	if (!rec)
		return -ENOMEM;
	if (dlen)
		memcpy(rec->data, data, dlen);
	pthread_mutex_lock(&d->mu);
	if (d->overflow) { /* dropped meanwhile (a new session began) */
		if (op != DISK_OP_FLUSH)
			disk_track_mark(d, k->index, off, len);
		pthread_mutex_unlock(&d->mu);
		free(rec);
		return 0;
	}
	list_append(&d->pending, rec);
	wake = d->streaming || (d->pending.bytes > d->soft_cap && !d->early_asked);
	if (d->cx->cfg->test_disk_unbuffered && !d->streaming) {
		struct disk_rec *copy = malloc(sizeof(*rec) + dlen);

		if (copy) {
			memcpy(copy, rec, sizeof(*rec) + dlen);
			list_append(&d->test_unbuffered, copy);
			wake = true;
		}
	}
	if (!d->streaming && d->pending.bytes > d->soft_cap)
		d->early_asked = true;
	pthread_mutex_unlock(&d->mu);
	if (wake)
		ev_async_send(d->cx->loop, &d->wake);
	return 0;
}

/* Larger writes are split so that no frame carries more than 1 MiB. */
static int nbd_write(void *opaque, uint64_t off, const void *data, uint32_t len, bool fua)
{
	for (uint32_t done = 0; done < len;) {
		uint32_t n = len - done > PROTO_DISK_MAX_WRITE ? PROTO_DISK_MAX_WRITE : len - done;
		int rc = record(opaque, DISK_OP_WRITE, off + done, n, (const uint8_t *)data + done);
		if (rc)
			return rc;
		done += n;
	}
	return fua ? record(opaque, DISK_OP_FLUSH, 0, 0, NULL) : 0;
}

static int nbd_zeroes(void *opaque, uint64_t off, uint32_t len, bool may_trim, bool fua)
{
	int rc = record(opaque, DISK_OP_WRITE_ZEROES, off, len, NULL);

	return !rc && fua ? record(opaque, DISK_OP_FLUSH, 0, 0, NULL) : rc;
}

static int nbd_trim(void *opaque, uint64_t off, uint32_t len)
{
	return record(opaque, DISK_OP_TRIM, off, len, NULL);
}

static int nbd_flush(void *opaque)
{
	return record(opaque, DISK_OP_FLUSH, 0, 0, NULL);
}

static const struct nbd_export_ops nbd_ops = {
	.write = nbd_write,
	.zeroes = nbd_zeroes,
	.trim = nbd_trim,
	.flush = nbd_flush,
	/* no read: a mirror target is only written */
};

/* --- frames ---------------------------------------------------------------- */

static int push_rec(struct ckpt_ctx *cx, struct epoch_tally *t, struct disk_rec *rec,
		    void *owned)
{
	struct iovec iov[2] = {
		{ .iov_base = rec->hdr, .iov_len = PROTO_DISK_HDR_SIZE },
		{ .iov_base = rec->data, .iov_len = rec->op == DISK_OP_WRITE ? rec->length : 0 },
	};

	return epoch_push_frame(cx, t, FRAME_DISK, iov, iov[1].iov_len ? 2 : 1, owned);
}

int disk_push_rec(struct ckpt_ctx *cx, struct epoch_tally *t, struct disk_rec *rec)
{
	uint64_t data = rec->op == DISK_OP_WRITE ? rec->length : 0;
	int rc = push_rec(cx, t, rec, rec);

	if (!rc)
		t->disk_bytes += data;
	return rc;
}

/* Epoch 0: send what arrived (the frames own their records), or, in a
 * delta resync, what the backup's replica lacks of it. */
static int stream_pending(struct disk_device *d)
{
	struct rec_list out;
	int rc = 0;

	list_init(&out);
	pthread_mutex_lock(&d->mu);
	list_take(&out, &d->pending);
	pthread_cond_broadcast(&d->room);
	pthread_mutex_unlock(&d->mu);
	while (out.head) {
		struct disk_rec *rec = out.head;
		out.head = rec->next;
		if (!rc)
			rc = disk_resync_push(d, rec);
		else
			free(rec);
	}
	return rc;
}

/* Epoch 0 of the current session is under way, so its records may go
 * out. Between a reconnect and the new session's sync (the backup still
 * hashes its base for a delta resync), records a lost session's mirror
 * left must not reach the new link: the new sync drops them. */
static bool sync_streaming_now(const struct disk_device *d)
{
	return d->sync_open && ckpt_initial_sync_running(d->cx);
}

static bool all_ready(const struct disk_device *d)
{
	for (uint32_t i = 0; i < d->n; i++)
		if (!d->disks[i].ready)
			return false;
	return true;
}

/* Will something make room for waiting writers? In the initial copy the
 * link does; after it, a barrier, which needs a protected, unpaused VM
 * and a backup. Asked again whenever the answer may change: the
 * protection state (disk_state_changed), the copy's end (finish_sync),
 * a wake-up from the writers (on_wake). */
static bool room_coming(const struct disk_device *d)
{
	if (d->streaming) /* not while a new session's hashes come */
		return sync_streaming_now(d) && !ckpt_stopping(d->cx);
	/* SYNCING: epoch 0 is closed and epoch 1 is on its way. */
	return ckpt_barriers_coming(d->cx);
}

static void refresh_may_wait(struct disk_device *d)
{
	bool coming = room_coming(d);

	pthread_mutex_lock(&d->mu);
	if (d->may_wait && !coming)
		pthread_cond_broadcast(&d->room); /* waiters: overflow instead */
	d->may_wait = coming;
	pthread_mutex_unlock(&d->mu);
}

/* Epoch 0 ends when every mirror is READY: the last of its writes go out,
 * arriving writes belong to epoch 1 from here on, and the pipeline closes
 * epoch 0. */
static void finish_sync(struct disk_device *d)
{
	struct ckpt_ctx *cx = d->cx;
	int rc;

	if (!sync_streaming_now(d))
		return; /* the backup went meanwhile: the next session copies again */
	pthread_mutex_lock(&d->mu);
	d->streaming = false;
	d->tag = 1;
	pthread_mutex_unlock(&d->mu);
	/* what arrived before the switch is epoch 0's */
	rc = stream_pending(d);
	if (!rc)
		rc = disk_resync_finish(d);
	d->sync_open = false;
	ev_timer_stop(cx->loop, &d->retry);
	if (rc) {
		ckpt_resync(cx, "disk sync could not be queued; resyncing");
		return;
	}
	log_info("disks: %u mirror(s) ready; initial disk copy queued", d->n);
	refresh_may_wait(d); /* from here barriers make room, not the link */
	epoch_sync_device_ready(cx);
}

/* Waiting writers learn at once when barriers stop coming (a pause, a
 * handover, the backup lost), not at the next watch tick. */
static void disk_state_changed(void *state, struct ckpt_ctx *cx)
{
	if (state)
		refresh_may_wait(state);
}

/* Bitmap capture: no write passes through us, so ask QEMU how much the
 * epoch has written, and end it early past the soft cap. */
static void watch_bitmaps(struct disk_device *d)
{
	int64_t dirty;

	if (!d->bitmaps_on || d->early_asked || !room_coming(d))
		return;
	dirty = disk_bitmap_dirty_bytes(d->cx, d);
	if (dirty > (int64_t)d->soft_cap) {
		d->early_asked = true;
		d->early_epochs++;
		epoch_request_early(d->cx, "disk writes over the epoch's cap");
	}
}

static void on_watch(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct disk_device *d = w->data;

	/* A barrier runs start to end inside one callback of this loop: if
	 * `barrier` is still set here, that barrier failed half-way. */
	pthread_mutex_lock(&d->mu);
	d->barrier = false;
	pthread_mutex_unlock(&d->mu);
	watch_bitmaps(d);
	/* Events QEMU sent while a command waited (a job's end, say). */
	ckpt_read_qemu_events(d->cx);
}

/* Test hook (--test-disk-unbuffered): every write also goes out at once,
 * outside any epoch, for an agent that applies such frames on arrival:
 * the naive design whose disk runs ahead of its memory checkpoint, which
 * the disk failover test must catch. */
static void send_unbuffered(struct disk_device *d)
{
	struct rec_list out;

	list_init(&out);
	pthread_mutex_lock(&d->mu);
	list_take(&out, &d->test_unbuffered);
	pthread_mutex_unlock(&d->mu);
	while (out.head) {
		struct disk_rec *rec = out.head;
		struct iovec iov[2] = {
			{ .iov_base = rec->hdr, .iov_len = PROTO_DISK_HDR_SIZE },
			{ .iov_base = rec->data, .iov_len = rec->op == DISK_OP_WRITE ? rec->length : 0 },
		};

		out.head = rec->next;
		if (!ckpt_link_up(d->cx))
			free(rec);
		else /* frees rec itself if it cannot queue it */
			ckpt_push_unbuffered(d->cx, FRAME_DISK, PROTO_EPOCH_TEST_UNBUFFERED, iov,
					     iov[1].iov_len ? 2 : 1, rec);
	}
}

static void on_wake(struct ev_loop *loop, ev_async *w, int revents)
{
	struct disk_device *d = w->data;
	struct ckpt_ctx *cx = d->cx;
	bool stream, early;

	pthread_mutex_lock(&d->mu);
	stream = d->streaming;
	early = !stream && d->early_asked;
	pthread_mutex_unlock(&d->mu);
	refresh_may_wait(d);
	if (cx->cfg->test_disk_unbuffered)
		send_unbuffered(d);
	if (stream && sync_streaming_now(d)) {
		int more = 0;

		/* The bulk copy goes at the link's pace, not into memory. */
		if (ckpt_link_queued(cx) > SYNC_LINK_HIGH) {
			if (!ev_is_active(&d->retry))
				ev_timer_start(loop, &d->retry);
			return;
		}
		/* a step's reads are queued as pending writes: half the hard cap
		 * at most, or the guest's writers would wait for them */
		if (d->resume_pumping &&
		    (more = disk_track_pump(d, RESUME_STEP_BYTES < d->hard_cap / 2 ?
					       RESUME_STEP_BYTES : d->hard_cap / 2)) < 0) {
			ckpt_resync(cx, "a resumed disk copy could not read an image; copying in full");
			return;
		}
		if (stream_pending(d)) {
			ckpt_resync(cx, "disk sync could not be queued; resyncing");
			return;
		}
		if (more)
			ev_async_send(loop, &d->wake); /* the next step, after other events */
		else if (d->resuming && d->sync_open && !d->resume_pumping) {
			d->resuming = false;
			finish_sync(d);
		}
	} else if (early) {
		d->early_epochs++;
		epoch_request_early(cx, "disk writes over the epoch's cap");
	}
}

/* The loop's turn after an ack: a mirror whose cancel QEMU refused at the
 * handover to bitmaps, and the acknowledged barriers' exports and bitmaps,
 * go now (disk_commit). */
static void on_release(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct disk_device *d = w->data;

	if (d->retire_pending) {
		for (uint32_t i = 0; i < d->n; i++)
			disk_retire_mirror(d->cx, &d->disks[i]);
		d->retire_pending = false;
	}
	disk_bitmap_release(d->cx, d);
}

static void on_retry(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct disk_device *d = w->data;

	ev_timer_stop(loop, w);
	on_wake(loop, &d->wake, 0);
}

/* --- ops ------------------------------------------------------------------- */

/* Only QEMU may connect to the exports: anyone else could write into the
 * replica. The sockets are made in a folder of our private runtime
 * directory (never one that existed before: a folder someone else made
 * could hold their server), which only we can enter, handed to QEMU's user
 * (it may be libvirt's libvirt-qemu) with mode 0600, and only then is the
 * folder opened for QEMU's user to pass through. */
static int make_sock_dir(struct disk_device *d)
{
	int rc = runtime_subdir_make(d->cx->runtime_dir, "nbd", d->sock_dir, sizeof(d->sock_dir));

	if (rc)
		return rc;
	d->sock_dir_made = true;
	/* room for "/nbdN.sock" in a sun_path */
	if (strlen(d->sock_dir) + 12 > sizeof(((struct disk *)0)->sock))
		return -ENAMETOOLONG;
	return 0;
}

static int disk_setup(struct ckpt_ctx *cx, void **state)
{
	struct disk_device *d = calloc(1, sizeof(*d));
	int rc;

	if (!d)
		return -ENOMEM;
	*state = d;
	d->cx = cx;
	pthread_mutex_init(&d->mu, NULL);
	pthread_cond_init(&d->room, NULL);
	list_init(&d->pending);
	list_init(&d->captured);
	list_init(&d->test_unbuffered);
	d->soft_cap = cx->cfg->disk_cap_bytes;
	d->hard_cap = 2 * cx->cfg->disk_cap_bytes;
	ev_async_init(&d->wake, on_wake);
	ev_timer_init(&d->retry, on_retry, 0.01, 0);
	ev_timer_init(&d->watch, on_watch, 0.1, 0.1);
	ev_timer_init(&d->release, on_release, 0, 0);
	d->wake.data = d->retry.data = d->watch.data = d->release.data = d;
	ev_async_start(cx->loop, &d->wake);
	rc = make_sock_dir(d);
	if (rc)
		log_err("cannot make %s/nbd for the disks' NBD sockets: %s", cx->runtime_dir,
			strerror(-rc));
	if (!rc)
		rc = disk_find(d);
	if (!rc)
		rc = disk_track_setup(d);
	cx->protected_disks = (int)d->n;
	if (!rc && d->n)
		disk_clean_leftovers(cx);
	for (uint32_t i = 0; !rc && i < d->n; i++) {
		struct disk *k = &d->disks[i];
		char export[32];

		snprintf(export, sizeof(export), "disk%u", i);
		rc = nbd_server_start(k->sock, export, k->size, &nbd_ops, k, &k->srv);
		if (rc)
			log_err("disk %s: cannot serve its mirror at %s: %s", k->name, k->sock,
				strerror(-rc));
		else if ((rc = ckpt_give_to_qemu(cx, k->sock)))
			log_err("disk %s: cannot give %s to QEMU's user: %s", k->name, k->sock,
				strerror(-rc));
	}
	/* every socket is QEMU's alone now: let QEMU's user pass through */
	if (!rc && d->n && chmod(d->sock_dir, 0711) < 0)
		rc = -errno;
	for (uint32_t i = 0; !rc && i < d->n; i++) {
		struct disk *k = &d->disks[i];

		rc = disk_add_nbd_node(cx, k);
		if (!rc)
			log_info("disk %s (%s, %llu MiB) is replicated through %s", k->name, k->file,
				 (unsigned long long)(k->size >> 20), k->sock);
	}
	if (!rc && cx->cfg->disk_capture_bitmap)
		rc = disk_bitmap_setup(cx, d);
	return rc;
}

static void disk_teardown(void *state)
{
	struct disk_device *d = state;
	struct ckpt_ctx *cx;

	if (!d)
		return;
	cx = d->cx;
	/* Writers waiting for room go on (a cancel waits for them), then QEMU
	 * stops writing to us, then the servers go. */
	pthread_mutex_lock(&d->mu);
	d->closing = true;
	pthread_cond_broadcast(&d->room);
	pthread_mutex_unlock(&d->mu);
	disk_bitmap_teardown(cx, d);
	for (uint32_t i = 0; i < d->n && cx->qmp && !ckpt_vm_gone(cx); i++) {
		disk_stop_mirror(cx, &d->disks[i]);
		disk_del_nbd_node(cx, &d->disks[i]);
	}
	for (uint32_t i = 0; i < d->n; i++) {
		struct disk *k = &d->disks[i];

		if (k->srv)
			nbd_server_stop(k->srv);
		unlink(k->sock);
		free(k->name);
		free(k->node);
		free(k->file);
		free(k->qdev);
	}
	if (d->sock_dir_made)
		rmdir(d->sock_dir);
	ev_async_stop(cx->loop, &d->wake);
	ev_timer_stop(cx->loop, &d->retry);
	ev_timer_stop(cx->loop, &d->watch);
	ev_timer_stop(cx->loop, &d->release);
	list_free(&d->pending);
	list_free(&d->captured);
	list_free(&d->test_unbuffered);
	disk_resync_free(d);
	disk_track_free(d);
	pthread_cond_destroy(&d->room);
	pthread_mutex_destroy(&d->mu);
	free(d);
}

/* A new backup: copy every disk, against the backup's hashes of its
 * replica if it has one (disk_resync.c). A mirror left from an earlier
 * backup is cancelled first: only a full copy is known to match. Unless
 * the backup resumes the replica last committed here: then the mirrors go
 * on and only the chunks written since are read (disk_track.c). */
static int disk_sync(void *state, struct ckpt_ctx *cx, struct epoch_tally *t)
{
	struct disk_device *d = state;
	bool resume;
	int rc = 0;

	if (!d->n)
		return 0;
	disk_track_resume_stop(d);
	/* Waiting writers go on first: a cancel waits for their writes. What
	 * the lost session held is not sent again: a resumed copy reads it. */
	pthread_mutex_lock(&d->mu);
	d->may_wait = false;
	overflow(d);
	disk_track_mark_list(d, &d->captured);
	pthread_cond_broadcast(&d->room);
	pthread_mutex_unlock(&d->mu);
	list_free(&d->captured);
	resume = disk_track_resume_start(d);
	if (!resume) {
		disk_stop_mirrors_stopped(cx, d->disks, d->n);
		if (d->capture_bitmap)
			disk_bitmap_drop_all(cx, d);
	}
	d->retire_pending = false;
	pthread_mutex_lock(&d->mu);
	disk_track_mark_list(d, &d->pending);
	list_free(&d->pending);
	if (!resume)
		disk_track_reset(d);
	d->mirror_retiring = false;
	d->overflow = false;
	d->may_wait = true;
	for (uint32_t i = 0; i < d->n; i++)
		d->disks[i].sync_bytes = 0;
	d->tag = 0;
	d->streaming = true;
	d->early_asked = false;
	pthread_cond_broadcast(&d->room);
	pthread_mutex_unlock(&d->mu);
	d->sync_open = true;
	for (uint32_t i = 0; !resume && !rc && i < d->n; i++)
		rc = disk_start_mirror(cx, &d->disks[i]);
	if (rc)
		return rc;
	if (!ev_is_active(&d->watch))
		ev_timer_start(cx->loop, &d->watch);
	if (resume)
		ev_async_send(cx->loop, &d->wake); /* on_wake reads the chunks */
	else
		log_info("disks: mirroring %u disk(s) to the backup; epoch 0 ends when all are "
			 "ready", d->n);
	return CKPT_SYNC_PENDING;
}

/* `stop` is next: writers waiting for room go on now, or stop would wait
 * for them while they wait for us. */
static void disk_presuspend(void *state, struct ckpt_ctx *cx)
{
	struct disk_device *d = state;

	pthread_mutex_lock(&d->mu);
	d->barrier = true;
	pthread_cond_broadcast(&d->room);
	pthread_mutex_unlock(&d->mu);
}

static void disk_barrier_skipped(void *state, struct ckpt_ctx *cx)
{
	struct disk_device *d = state;

	pthread_mutex_lock(&d->mu);
	d->barrier = false;
	pthread_mutex_unlock(&d->mu);
}

/* Bitmap capture, VM stopped: the epoch's blocks, read now. */
static int capture_bitmaps(struct disk_device *d, struct epoch_tally *t)
{
	int rc;

	pthread_mutex_lock(&d->mu);
	d->barrier = false;
	pthread_mutex_unlock(&d->mu);
	d->early_asked = false;
	rc = disk_bitmap_capture(d->cx, d, t->id + 1, &d->captured);
	if (rc)
		list_free(&d->captured);
	d->captured_epoch = t->id;
	return rc;
}

/* The mirror has taken its last epoch (VM stopped): from here on the
 * bitmaps record. If they cannot start, the mirror goes on, and the next
 * barrier tries again. The mirror goes now, while the VM is stopped and
 * no guest write is in flight through the job: QEMU 7.2 died once (cause
 * not found) when the write-blocking mirror was cancelled after resume,
 * under a guest writing flat out; with the VM stopped that race cannot
 * happen. It costs this one pause a few milliseconds (each disk's wait
 * bounded by HANDOVER_CANCEL_MS). */
static void hand_over_to_bitmaps(struct disk_device *d, uint64_t next)
{
	double t0 = mono_ms();

	if (disk_bitmap_begin(d->cx, d, next))
		return;
	pthread_mutex_lock(&d->mu);
	d->mirror_retiring = true;
	list_free(&d->pending);
	pthread_mutex_unlock(&d->mu);
	disk_track_lose(d); /* writes no longer pass through us */
	d->bitmaps_on = true;
	/* Not gone in time: the next disk_sync waits for it; a cancel QEMU
	 * refused is sent again at release. */
	for (uint32_t i = 0; i < d->n; i++)
		if (disk_stop_mirror_within(d->cx, &d->disks[i], HANDOVER_CANCEL_MS))
			d->retire_pending = true;
	log_info("disks: dirty bitmaps capture the writes from epoch %llu on (handover in the "
		 "pause: %.1f ms)", (unsigned long long)next, mono_ms() - t0);
}

/* VM stopped: every write of this epoch has arrived (stop drained them). */
static int disk_postsuspend(void *state, struct ckpt_ctx *cx, struct epoch_tally *t)
{
	struct disk_device *d = state;

	if (!d->n)
		return 0;
	/* Normally committed and freed already; if not, its writes are in
	 * no epoch the backup holds, and a resumed copy must read them. */
	pthread_mutex_lock(&d->mu);
	disk_track_mark_list(d, &d->captured);
	pthread_mutex_unlock(&d->mu);
	list_free(&d->captured);
	if (d->bitmaps_on)
		return capture_bitmaps(d, t);
	pthread_mutex_lock(&d->mu);
	d->barrier = false;
	if (d->overflow) {
		pthread_mutex_unlock(&d->mu);
		log_err("disks: writes were dropped while no checkpoint could take them "
			"(over %zu MiB held): the disks are copied again (resumed: only what was "
			"written since the last commit)",
			d->hard_cap >> 20);
		return -ENOSPC;
	}
	if (d->tag != t->id)
		log_warn("disks: writes tagged for epoch %llu taken at barrier %llu",
			 (unsigned long long)d->tag, (unsigned long long)t->id);
	list_take(&d->captured, &d->pending);
	d->tag = t->id + 1;
	d->early_asked = false;
	pthread_cond_broadcast(&d->room);
	pthread_mutex_unlock(&d->mu);
	d->captured_epoch = t->id;
	if (d->capture_bitmap)
		hand_over_to_bitmaps(d, t->id + 1);
	return 0;
}

static int disk_send(void *state, struct ckpt_ctx *cx, struct epoch_tally *t)
{
	struct disk_device *d = state;
	int rc = 0;

	if (d->captured_epoch != t->id)
		return 0;
	for (struct disk_rec *rec = d->captured.head; rec && !rc; rec = rec->next)
		rc = push_rec(cx, t, rec, NULL);
	return rc;
}

/* What the barrier left in QEMU (the epoch's export and bitmap, a mirror
 * still to retire) goes on the loop's turn after the ack, once the ack
 * has released the VM's output: started when the epoch is queued, its
 * QMP commands (2-3 ms) held up an ack that came back meanwhile, and
 * with it every reply of the epoch. Without acks (a lost link), the
 * fifth barrier or the session's end runs it. */
static void disk_commit(void *state, struct ckpt_ctx *cx, uint64_t epoch)
{
	struct disk_device *d = state;

	if (d->captured_epoch == epoch)
		list_free(&d->captured);
	disk_track_commit(d, epoch);
	if (d->retire_pending || d->nrelease)
		ev_timer_start(cx->loop, &d->release);
}

static void disk_event(void *state, struct ckpt_ctx *cx, const char *event,
		       struct json_object *data)
{
	struct disk_device *d = state;
	const char *job = data ? disk_json_str(data, "device") : NULL;
	unsigned idx, gen;

	if (!job || sscanf(job, "remus-mirror%u-%u", &idx, &gen) != 2 || idx >= d->n ||
	    gen != d->disks[idx].gen)
		return; /* not ours, or a job we cancelled */
	if (!strcmp(event, "BLOCK_JOB_READY")) {
		d->disks[idx].ready = true;
		log_info("disk %s: mirror ready", d->disks[idx].name);
		if (d->sync_open && all_ready(d) && !d->resume_pumping)
			finish_sync(d);
	} else if (!strcmp(event, "BLOCK_JOB_COMPLETED") || !strcmp(event, "BLOCK_JOB_CANCELLED") ||
		   !strcmp(event, "BLOCK_JOB_ERROR")) {
		const char *err = data ? disk_json_str(data, "error") : NULL;

		if (!d->disks[idx].job)
			return; /* our own cancel */
		/* An error leaves the job running (on-target-error: ignore) but
		 * a write missed the backup: resync, cancelling the job first. */
		if (strcmp(event, "BLOCK_JOB_ERROR"))
			d->disks[idx].job = false;
		d->disks[idx].ready = false;
		disk_track_lose(d);
		log_err("disk %s: its mirror ended (%s%s%s): writes no longer reach the "
			"backup; resyncing", d->disks[idx].name, event, err ? ": " : "",
			err ? err : "");
		ckpt_resync(cx, "a disk mirror ended");
	}
}

static void disk_status(void *state, struct json_object *out)
{
	struct disk_device *d = state;
	struct json_object *arr = json_object_new_array();
	uint64_t early, stalls;

	pthread_mutex_lock(&d->mu);
	early = d->early_epochs;
	stalls = d->stalls;
	for (uint32_t i = 0; i < d->n; i++) {
		struct json_object *o = json_object_new_object();
		const struct disk *k = &d->disks[i];

		json_object_object_add(o, "name", json_object_new_string(k->name));
		json_object_object_add(o, "size_bytes", json_object_new_int64((int64_t)k->size));
		json_object_object_add(o, "state", json_object_new_string(
			d->bitmaps_on ? "bitmaps" : !k->job ? "idle" : k->ready ? "mirroring" :
			"syncing"));
		if (d->capture_bitmap)
			json_object_object_add(o, "bitmap_reads", json_object_new_string(
				k->image_fd >= 0 ? "image" : "nbd"));
		json_object_object_add(o, "sync_percent", json_object_new_double(
			k->ready ? 100.0 : k->size ? 100.0 * (double)(k->sync_bytes > k->size ?
								  k->size : k->sync_bytes) / (double)k->size : 0));
		json_object_object_add(o, "writes", json_object_new_int64((int64_t)k->writes));
		json_object_object_add(o, "written_bytes", json_object_new_int64((int64_t)k->bytes));
		/* the last delta resync: what the copy wrote, what of it went out */
		json_object_object_add(o, "resync_copied_bytes",
				       json_object_new_int64((int64_t)k->resync_in));
		json_object_object_add(o, "resync_sent_bytes",
				       json_object_new_int64((int64_t)k->resync_sent));
		/* ... and of a resumed copy, what it read of the image */
		json_object_object_add(o, "resume_read_bytes",
				       json_object_new_int64((int64_t)k->resume_read));
		json_object_array_add(arr, o);
	}
	json_object_object_add(out, "disk_pending_bytes", json_object_new_int64((int64_t)d->pending.bytes));
	pthread_mutex_unlock(&d->mu);
	json_object_object_add(out, "disks", arr);
	json_object_object_add(out, "disk_early_epochs", json_object_new_int64((int64_t)early));
	json_object_object_add(out, "disk_write_stalls", json_object_new_int64((int64_t)stalls));
	json_object_object_add(out, "disk_overflows", json_object_new_int64((int64_t)d->overflows));
	json_object_object_add(out, "disk_capture", json_object_new_string(
		d->capture_bitmap ? "bitmap" : "mirror"));
	json_object_object_add(out, "disk_bitmap_bytes", json_object_new_int64(
		(int64_t)d->bitmap_bytes));
}

/* A resumed copy reads the images: can it, for every disk? Else the
 * HELLO offers no resume (a qcow2 image, a block device, no access). */
static bool images_readable(struct disk_device *d)
{
	for (uint32_t i = 0; i < d->n; i++) {
		const char *why;
		int fd = disk_open_image(d->cx, &d->disks[i], &why);

		if (fd < 0) {
			if (!d->unreadable_said)
				log_info("disks: disk %s cannot be resumed (%s): each reconnect "
					 "compares it whole", d->disks[i].name, why);
			d->unreadable_said = true;
			return false;
		}
		close(fd);
	}
	return true;
}

/* HELLO: the disks the backup keeps a replica of, in index order. */
static void disk_hello(void *state, struct json_object *hello)
{
	struct disk_device *d = state;
	struct json_object *arr = json_object_new_array();
	uint64_t largest = 0;

	for (uint32_t i = 0; i < d->n; i++) {
		struct json_object *o = json_object_new_object();
		const struct disk *k = &d->disks[i];

		json_object_object_add(o, "id", json_object_new_string(k->name));
		json_object_object_add(o, "node", json_object_new_string(k->node));
		json_object_object_add(o, "file", json_object_new_string(k->file));
		json_object_object_add(o, "qdev", json_object_new_string(k->qdev));
		json_object_object_add(o, "size", json_object_new_int64((int64_t)k->size));
		json_object_object_add(o, "format", json_object_new_string("raw"));
		json_object_array_add(arr, o);
		if (k->size > largest)
			largest = k->size;
	}
	d->hash_chunk = proto_disk_hash_chunk_for(largest);
	json_object_object_add(hello, "disks", arr);
	if (d->n)
		disk_track_hello(d, hello, images_readable);
	/* a delta resync of the disks may start from the backup's replica;
	 * chunks as small as the hashes' size allows, so that scattered
	 * writes while unprotected cost little */
	if (d->n)
		json_object_object_add(hello, "disk_hash_chunk",
				       json_object_new_int64(d->hash_chunk));
}

uint32_t disk_verify_sources(const void *state, struct verify_disk *out, uint32_t max)
{
	const struct disk_device *d = state;
	uint32_t n = 0;

	for (uint32_t i = 0; d && i < d->n && n < max; i++, n++) {
		const struct disk *k = &d->disks[i];
		const char *why;

		out[n] = (struct verify_disk){ .index = k->index, .size = k->size };
		snprintf(out[n].name, sizeof(out[n].name), "%s", k->name);
		out[n].fd = disk_open_image(d->cx, k, &why);
		if (why)
			snprintf(out[n].why, sizeof(out[n].why), "%s", why);
	}
	return n;
}

const struct ckpt_device_ops disk_device_ops = {
	.name = "disk",
	.setup = disk_setup,
	.teardown = disk_teardown,
	.sync = disk_sync,
	.presuspend = disk_presuspend,
	.barrier_skipped = disk_barrier_skipped,
	.postsuspend = disk_postsuspend,
	.send = disk_send,
	.commit = disk_commit,
	.state_changed = disk_state_changed,
	.event = disk_event,
	.status = disk_status,
	.hello = disk_hello,
	.hello_reply = disk_resync_hello_reply,
	.backup_frame = disk_resync_frame,
	.sync_waits = disk_resync_waits,
};
