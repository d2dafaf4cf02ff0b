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
 */
#include "ckpt_device.h"
#include "log.h"
#include "nbd_server.h"
#include "proto.h"
#include "qmp.h"
#include "replicator.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define QMP_TIMEOUT_MS    5000
#define CANCEL_WAIT_MS    10000
#define SYNC_LINK_HIGH    (64u << 20)  /* epoch 0: link backlog before we wait */
#define WRITER_WAIT_MAX_S 1            /* a writer waits this long for room at most */

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
	uint64_t size;
	char sock[108];
	struct nbd_server *srv;
	bool node_added;     /* blockdev-add of our nbd node done */
	bool job;            /* our mirror job exists */
	bool ready;          /* BLOCK_JOB_READY seen */
	unsigned gen;        /* of our job's id: a cancelled job's late events are not ours */
	uint64_t writes, bytes;
	uint64_t sync_bytes;  /* of the disk covered in this initial copy */
};

struct disk_device {
	struct replicator *r;
	struct disk disks[PROTO_MAX_DISKS];
	uint32_t n;
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
	ev_timer watch;            /* keeps may_wait true to the replicator's state */
	struct rec_list captured;  /* the epoch in flight, until committed */
	uint64_t captured_epoch;
	bool sync_open;            /* epoch 0 waits for READY */
	uint64_t early_epochs, stalls;
};

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
	k->writes++;
	k->bytes += dlen;
	if (d->streaming && (op == DISK_OP_WRITE || op == DISK_OP_WRITE_ZEROES))
		k->sync_bytes += len;
	/* Only data waits, and never across a barrier: QEMU's `stop` waits
	 * for this very write (and flushes), and only after `stop` does the
	 * loop take the epoch's writes. */
	if (dlen && d->pending.bytes + dlen > d->hard_cap && !d->overflow) {
		struct timespec until;
		bool timed_out = false;

		if (d->may_wait && !d->closing && !d->barrier)
			d->stalls++;
		/* Bounded: QEMU may drain its disks for a reason of its own (a
		 * `stop` not ours) and wait for this write while we wait. */
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_sec += WRITER_WAIT_MAX_S;
		while (d->pending.bytes && d->pending.bytes + dlen > d->hard_cap &&
		       d->may_wait && !d->closing && !d->barrier && !d->overflow && !timed_out)
			timed_out = pthread_cond_timedwait(&d->room, &d->mu, &until) == ETIMEDOUT;
		if (d->pending.bytes + dlen > d->hard_cap && (!d->may_wait || timed_out))
			overflow(d);
	}
	if (d->overflow) {
		pthread_mutex_unlock(&d->mu);
		return 0; /* the full resync to come copies it */
	}
	pthread_mutex_unlock(&d->mu);
	rec = malloc(sizeof(*rec) + dlen);
	if (!rec)
		return -ENOMEM;
	*rec = (struct disk_rec){ .disk = k->index, .op = op, .offset = off, .length = len };
	if (dlen)
		memcpy(rec->data, data, dlen);
	proto_encode_disk_hdr(rec->hdr, &(struct disk_op){ .disk = k->index, .op = op,
							   .offset = off, .length = len });
	pthread_mutex_lock(&d->mu);
	list_append(&d->pending, rec);
	wake = d->streaming || (d->pending.bytes > d->soft_cap && !d->early_asked);
	if (d->r->cfg.test_disk_unbuffered && !d->streaming) {
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
		ev_async_send(d->r->loop, &d->wake);
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

static int push_rec(struct replicator *r, struct epoch_tally *t, struct disk_rec *rec,
		    void *owned)
{
	struct iovec iov[2] = {
		{ .iov_base = rec->hdr, .iov_len = PROTO_DISK_HDR_SIZE },
		{ .iov_base = rec->data, .iov_len = rec->op == DISK_OP_WRITE ? rec->length : 0 },
	};

	return epoch_push_frame(r, t, FRAME_DISK, iov, iov[1].iov_len ? 2 : 1, owned);
}

/* Epoch 0: send what arrived (the frames own their records). */
static int stream_pending(struct disk_device *d)
{
	struct replicator *r = d->r;
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
			rc = push_rec(r, &r->sync_tally, rec, rec);
		else
			free(rec);
	}
	return rc;
}

static bool all_ready(const struct disk_device *d)
{
	for (uint32_t i = 0; i < d->n; i++)
		if (!d->disks[i].ready)
			return false;
	return true;
}

/* Epoch 0 ends when every mirror is READY: the last of its writes go out,
 * arriving writes belong to epoch 1 from here on, and the pipeline closes
 * epoch 0. */
static void finish_sync(struct disk_device *d)
{
	struct replicator *r = d->r;
	int rc;

	if (!link_up(&r->link))
		return; /* the backup went meanwhile: the next session copies again */
	pthread_mutex_lock(&d->mu);
	d->streaming = false;
	d->tag = 1;
	pthread_mutex_unlock(&d->mu);
	/* what arrived before the switch is epoch 0's */
	rc = stream_pending(d);
	d->sync_open = false;
	ev_timer_stop(r->loop, &d->retry);
	if (rc) {
		link_drop_alive(r, "disk sync could not be queued; resyncing");
		return;
	}
	log_info("disks: %u mirror(s) ready; initial disk copy queued", d->n);
	epoch_sync_device_ready(r);
}

/* Will something make room for waiting writers? In the initial copy the
 * link does; after it, a barrier, which needs a protected, unpaused VM
 * and a backup. */
static bool room_coming(const struct disk_device *d)
{
	const struct replicator *r = d->r;

	if (!link_up(&r->link) || r->stopping)
		return false;
	if (d->streaming)
		return true;
	/* SYNCING: epoch 0 is closed and epoch 1 is on its way. */
	return (r->prot == PROT_PROTECTED || r->prot == PROT_SYNCING) &&
	       r->pause == PAUSE_OFF && r->handover == HO_NONE;
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

static void on_watch(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct disk_device *d = w->data;

	/* A barrier runs start to end inside one callback of this loop: if
	 * `barrier` is still set here, that barrier failed half-way. */
	pthread_mutex_lock(&d->mu);
	d->barrier = false;
	pthread_mutex_unlock(&d->mu);
	refresh_may_wait(d);
	/* Events QEMU sent while a command waited (a job's end, say). */
	replicator_qemu_events(d->r);
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
		if (!link_up(&d->r->link))
			free(rec);
		else /* frees rec itself if it cannot queue it */
			link_push(d->r, FRAME_DISK, PROTO_EPOCH_TEST_UNBUFFERED, iov,
				  iov[1].iov_len ? 2 : 1, rec, NULL);
	}
}

static void on_wake(struct ev_loop *loop, ev_async *w, int revents)
{
	struct disk_device *d = w->data;
	struct replicator *r = d->r;
	bool stream, early;

	pthread_mutex_lock(&d->mu);
	stream = d->streaming;
	early = !stream && d->early_asked;
	pthread_mutex_unlock(&d->mu);
	refresh_may_wait(d);
	if (r->cfg.test_disk_unbuffered)
		send_unbuffered(d);
	if (stream && d->sync_open && link_up(&r->link)) {
		/* The bulk copy goes at the link's pace, not into memory. */
		if (r->link.out.bytes_queued > SYNC_LINK_HIGH) {
			if (!ev_is_active(&d->retry))
				ev_timer_start(loop, &d->retry);
			return;
		}
		if (stream_pending(d))
			link_drop_alive(r, "disk sync could not be queued; resyncing");
	} else if (early) {
		d->early_epochs++;
		epoch_request_early(r, "disk writes over the epoch's cap");
	}
}

static void on_retry(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct disk_device *d = w->data;

	ev_timer_stop(loop, w);
	on_wake(loop, &d->wake, 0);
}

/* --- QMP ------------------------------------------------------------------- */

static int qmp_simple(struct replicator *r, const char *cmd, struct json_object *args)
{
	int rc = qmp_execute(r->qmp, cmd, args, NULL, QMP_TIMEOUT_MS);

	json_object_put(args);
	return rc;
}

static void job_name(const struct disk *k, char *out, size_t len)
{
	snprintf(out, len, "remus-mirror%u-%u", k->index, k->gen);
}

static int add_nbd_node(struct replicator *r, struct disk *k)
{
	struct json_object *a = json_object_new_object(), *srv = json_object_new_object();
	char node[64], export[32];
	int rc;

	snprintf(node, sizeof(node), "remus-nbd%u", k->index);
	snprintf(export, sizeof(export), "disk%u", k->index);
	json_object_object_add(srv, "type", json_object_new_string("unix"));
	json_object_object_add(srv, "path", json_object_new_string(k->sock));
	json_object_object_add(a, "driver", json_object_new_string("nbd"));
	json_object_object_add(a, "node-name", json_object_new_string(node));
	json_object_object_add(a, "server", srv);
	json_object_object_add(a, "export", json_object_new_string(export));
	rc = qmp_simple(r, "blockdev-add", a);
	if (rc)
		log_err("disk %s: QEMU cannot reach our NBD export at %s: %s", k->name, k->sock,
			qmp_last_error(r->qmp));
	k->node_added = !rc;
	return rc;
}

static int start_mirror(struct replicator *r, struct disk *k)
{
	struct json_object *a = json_object_new_object();
	char job[64], node[64];
	int rc;

	k->gen++;
	job_name(k, job, sizeof(job));
	snprintf(node, sizeof(node), "remus-nbd%u", k->index);
	json_object_object_add(a, "job-id", json_object_new_string(job));
	json_object_object_add(a, "device", json_object_new_string(k->node));
	json_object_object_add(a, "target", json_object_new_string(node));
	json_object_object_add(a, "sync", json_object_new_string("full"));
	json_object_object_add(a, "copy-mode", json_object_new_string("write-blocking"));
	/* If the replicator dies, the guest's writes must go on: a target
	 * error marks the region dirty instead of failing the guest's I/O. */
	json_object_object_add(a, "on-target-error", json_object_new_string("ignore"));
	/* Not done until we say so: the job stays READY, mirroring. */
	json_object_object_add(a, "auto-finalize", json_object_new_boolean(false));
	json_object_object_add(a, "auto-dismiss", json_object_new_boolean(true));
	rc = qmp_simple(r, "blockdev-mirror", a);
	if (rc)
		log_err("disk %s: cannot start its mirror: %s", k->name, qmp_last_error(r->qmp));
	k->job = !rc;
	k->ready = false;
	return rc;
}

/* Is our job for disk k still listed? 1 yes, 0 no, <0 error. */
static int job_listed(struct replicator *r, const struct disk *k)
{
	struct json_object *ret = NULL, *v;
	char job[64];
	int rc, found = 0;

	job_name(k, job, sizeof(job));
	rc = qmp_execute(r->qmp, "query-block-jobs", NULL, &ret, QMP_TIMEOUT_MS);
	if (rc)
		return rc;
	for (size_t i = 0; i < json_object_array_length(ret); i++)
		if (json_object_object_get_ex(json_object_array_get_idx(ret, i), "device", &v) &&
		    !strcmp(json_object_get_string(v), job))
			found = 1;
	json_object_put(ret);
	return found;
}

/* Stop mirroring disk k: the guest's writes then stay on its own disk.
 * Waits (bounded) until QEMU has dropped the job. */
static int stop_mirror(struct replicator *r, struct disk *k)
{
	struct json_object *a = json_object_new_object();
	char job[64];
	int rc;

	if (!k->job)
		return 0;
	job_name(k, job, sizeof(job));
	json_object_object_add(a, "device", json_object_new_string(job));
	json_object_object_add(a, "force", json_object_new_boolean(true));
	rc = qmp_simple(r, "block-job-cancel", a);
	for (int i = 0; !rc && i < CANCEL_WAIT_MS / 20; i++) {
		rc = job_listed(r, k);
		if (rc == 0)
			break;
		if (rc < 0)
			break;
		rc = i + 1 < CANCEL_WAIT_MS / 20 ? 0 : -ETIMEDOUT;
		usleep(20000);
	}
	if (rc) {
		log_warn("disk %s: cancelling its mirror %s: %s", k->name, job,
			 rc == -ETIMEDOUT ? "still listed after 10 s" : qmp_last_error(r->qmp));
		return rc; /* still ours: the next attempt cancels it again */
	}
	k->job = false;
	k->ready = false;
	return 0;
}

static const char *member(struct json_object *o, const char *key)
{
	struct json_object *v;

	return json_object_object_get_ex(o, key, &v) ? json_object_get_string(v) : NULL;
}

/* A replicator that died (SIGKILL, a crash) left its mirror jobs and NBD
 * nodes in QEMU: they hold the disk and the node names. Cancel and remove
 * them before adding ours; nothing else in QEMU is called remus-*. */
static void clean_leftovers(struct replicator *r)
{
	struct json_object *ret = NULL;

	if (!qmp_execute(r->qmp, "query-block-jobs", NULL, &ret, QMP_TIMEOUT_MS)) {
		for (size_t i = 0; i < json_object_array_length(ret); i++) {
			const char *id = member(json_object_array_get_idx(ret, i), "device");
			struct json_object *a;

			if (!id || strncmp(id, "remus-mirror", 12))
				continue;
			log_warn("cancelling mirror job %s left by an earlier replicator", id);
			a = json_object_new_object();
			json_object_object_add(a, "device", json_object_new_string(id));
			json_object_object_add(a, "force", json_object_new_boolean(true));
			qmp_simple(r, "block-job-cancel", a);
		}
		json_object_put(ret);
		/* a cancelled job lets go of its target within moments */
		for (int i = 0; i < CANCEL_WAIT_MS / 20; i++) {
			bool left = false;

			ret = NULL;
			if (qmp_execute(r->qmp, "query-block-jobs", NULL, &ret, QMP_TIMEOUT_MS))
				break;
			for (size_t k = 0; k < json_object_array_length(ret); k++) {
				const char *id = member(json_object_array_get_idx(ret, k), "device");
				left |= id && !strncmp(id, "remus-mirror", 12);
			}
			json_object_put(ret);
			if (!left)
				break;
			usleep(20000);
		}
	}
	ret = NULL;
	if (qmp_execute(r->qmp, "query-named-block-nodes", NULL, &ret, QMP_TIMEOUT_MS))
		return;
	for (size_t i = 0; i < json_object_array_length(ret); i++) {
		const char *node = member(json_object_array_get_idx(ret, i), "node-name");
		struct json_object *a;

		if (!node || strncmp(node, "remus-nbd", 9))
			continue;
		log_warn("removing NBD node %s left by an earlier replicator", node);
		a = json_object_new_object();
		json_object_object_add(a, "node-name", json_object_new_string(node));
		qmp_simple(r, "blockdev-del", a);
	}
	json_object_put(ret);
}

/* --- discovery ------------------------------------------------------------- */

static bool listed_unprotected(const struct replicator *r, const char *name)
{
	for (int i = 0; i < r->cfg.n_unprotected_disks; i++)
		if (!strcmp(r->cfg.unprotected_disks[i], name))
			return true;
	return false;
}


static int add_disk(struct disk_device *d, const char *name, const char *node,
		    const char *file, uint64_t size)
{
	struct disk *k;

	if (d->n == PROTO_MAX_DISKS) {
		log_err("refusing VM %s: more than %d writable disks; list those that both "
			"hosts share with --unprotected-disk NAME", d->r->vm.name,
			PROTO_MAX_DISKS);
		return -EPERM;
	}
	if (!size || size % 512) {
		log_err("refusing VM %s: disk '%s' has a size of %llu bytes, not a multiple of "
			"512", d->r->vm.name, name, (unsigned long long)size);
		return -EPERM;
	}
	k = &d->disks[d->n];
	*k = (struct disk){ .dev = d, .index = d->n, .size = size };
	k->name = strdup(name);
	k->node = strdup(node);
	k->file = strdup(file ? file : "?");
	snprintf(k->sock, sizeof(k->sock), "/tmp/remus-%d-nbd%u.sock", (int)getpid(), d->n);
	d->n++;
	return k->name && k->node && k->file ? 0 : -ENOMEM;
}

/* Every writable disk is protected, but those the operator declared
 * shared storage (--unprotected-disk). */
static int find_disks(struct disk_device *d)
{
	struct replicator *r = d->r;
	struct json_object *ret = NULL;
	int rc = qmp_execute(r->qmp, "query-block", NULL, &ret, QMP_TIMEOUT_MS);

	if (rc) {
		log_err("cannot list the VM's disks: %s", qmp_last_error(r->qmp));
		return rc;
	}
	for (size_t i = 0; !rc && i < json_object_array_length(ret); i++) {
		struct json_object *b = json_object_array_get_idx(ret, i), *ins, *img, *v;
		const char *name, *node;

		if (!json_object_object_get_ex(b, "inserted", &ins) ||
		    (json_object_object_get_ex(ins, "ro", &v) && json_object_get_boolean(v)))
			continue;
		node = member(ins, "node-name");
		/* -drive names the device; -blockdev leaves it empty */
		name = member(b, "device");
		if (!name || !name[0])
			name = node;
		if (!name || !node) {
			log_err("refusing VM %s: a writable disk without a node name", r->vm.name);
			rc = -EPERM;
			break;
		}
		if (listed_unprotected(r, name)) {
			log_warn("disk '%s' (%s) is not replicated (--unprotected-disk): both hosts "
				 "must see the same storage", name, member(ins, "file"));
			continue;
		}
		v = NULL;
		json_object_object_get_ex(ins, "image", &img);
		if (img)
			json_object_object_get_ex(img, "virtual-size", &v);
		rc = add_disk(d, name, node, member(ins, "file"),
			      v ? (uint64_t)json_object_get_int64(v) : 0);
	}
	json_object_put(ret);
	return rc;
}

/* --- ops ------------------------------------------------------------------- */

/* Only QEMU may connect to the export: anyone else could write into the
 * replica. QEMU may run as another user (libvirt's libvirt-qemu). */
static int restrict_socket(const char *sock, pid_t qemu)
{
	char path[64];
	struct stat st;

	snprintf(path, sizeof(path), "/proc/%d", (int)qemu);
	if (stat(path, &st) < 0)
		return -errno;
	if (chown(sock, st.st_uid, st.st_gid) < 0 || chmod(sock, 0600) < 0)
		return -errno;
	return 0;
}

static int disk_setup(struct replicator *r, void **state)
{
	struct disk_device *d = calloc(1, sizeof(*d));
	int rc;

	if (!d)
		return -ENOMEM;
	*state = d;
	d->r = r;
	pthread_mutex_init(&d->mu, NULL);
	pthread_cond_init(&d->room, NULL);
	list_init(&d->pending);
	list_init(&d->captured);
	list_init(&d->test_unbuffered);
	d->soft_cap = r->cfg.disk_cap_bytes;
	d->hard_cap = 2 * r->cfg.disk_cap_bytes;
	ev_async_init(&d->wake, on_wake);
	ev_timer_init(&d->retry, on_retry, 0.01, 0);
	ev_timer_init(&d->watch, on_watch, 0.1, 0.1);
	d->wake.data = d->retry.data = d->watch.data = d;
	ev_async_start(r->loop, &d->wake);
	rc = find_disks(d);
	r->protected_disks = (int)d->n;
	if (!rc && d->n)
		clean_leftovers(r);
	for (uint32_t i = 0; !rc && i < d->n; i++) {
		struct disk *k = &d->disks[i];
		char export[32];

		snprintf(export, sizeof(export), "disk%u", i);
		unlink(k->sock);
		rc = nbd_server_start(k->sock, export, k->size, &nbd_ops, k, &k->srv);
		if (rc)
			log_err("disk %s: cannot serve its mirror at %s: %s", k->name, k->sock,
				strerror(-rc));
		else if ((rc = restrict_socket(k->sock, r->vm.pid)))
			log_err("disk %s: cannot give %s to QEMU's user: %s", k->name, k->sock,
				strerror(-rc));
		else
			rc = add_nbd_node(r, k);
		if (!rc)
			log_info("disk %s (%s, %llu MiB) is replicated through %s", k->name, k->file,
				 (unsigned long long)(k->size >> 20), k->sock);
	}
	return rc;
}

static void disk_teardown(void *state)
{
	struct disk_device *d = state;
	struct replicator *r;

	if (!d)
		return;
	r = d->r;
	/* Writers waiting for room go on (a cancel waits for them), then QEMU
	 * stops writing to us, then the servers go. */
	pthread_mutex_lock(&d->mu);
	d->closing = true;
	pthread_cond_broadcast(&d->room);
	pthread_mutex_unlock(&d->mu);
	for (uint32_t i = 0; i < d->n; i++) {
		struct disk *k = &d->disks[i];
		char node[64];

		if (r->qmp && k->job && !r->vm_gone)
			stop_mirror(r, k);
		if (r->qmp && k->node_added && !r->vm_gone) {
			struct json_object *a = json_object_new_object();

			snprintf(node, sizeof(node), "remus-nbd%u", k->index);
			json_object_object_add(a, "node-name", json_object_new_string(node));
			qmp_simple(r, "blockdev-del", a);
		}
	}
	pthread_mutex_lock(&d->mu);
	d->closing = true;
	pthread_cond_broadcast(&d->room);
	pthread_mutex_unlock(&d->mu);
	for (uint32_t i = 0; i < d->n; i++) {
		struct disk *k = &d->disks[i];

		if (k->srv)
			nbd_server_stop(k->srv);
		unlink(k->sock);
		free(k->name);
		free(k->node);
		free(k->file);
	}
	ev_async_stop(r->loop, &d->wake);
	ev_timer_stop(r->loop, &d->retry);
	ev_timer_stop(r->loop, &d->watch);
	list_free(&d->pending);
	list_free(&d->captured);
	list_free(&d->test_unbuffered);
	pthread_cond_destroy(&d->room);
	pthread_mutex_destroy(&d->mu);
	free(d);
}

/* A new backup: copy every disk from scratch. A mirror left from an
 * earlier backup is cancelled first: only a full copy is known to match. */
static int disk_sync(void *state, struct replicator *r, struct epoch_tally *t)
{
	struct disk_device *d = state;
	int rc = 0;

	if (!d->n)
		return 0;
	/* Waiting writers go on first: a cancel waits for their writes. */
	pthread_mutex_lock(&d->mu);
	d->may_wait = false;
	overflow(d);
	pthread_cond_broadcast(&d->room);
	pthread_mutex_unlock(&d->mu);
	for (uint32_t i = 0; i < d->n; i++)
		stop_mirror(r, &d->disks[i]);
	list_free(&d->captured);
	pthread_mutex_lock(&d->mu);
	list_free(&d->pending);
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
	for (uint32_t i = 0; !rc && i < d->n; i++)
		rc = start_mirror(r, &d->disks[i]);
	if (rc)
		return rc;
	if (!ev_is_active(&d->watch))
		ev_timer_start(r->loop, &d->watch);
	log_info("disks: mirroring %u disk(s) to the backup; epoch 0 ends when all are ready",
		 d->n);
	return CKPT_SYNC_PENDING;
}

/* `stop` is next: writers waiting for room go on now, or stop would wait
 * for them while they wait for us. */
static void disk_presuspend(void *state, struct replicator *r)
{
	struct disk_device *d = state;

	pthread_mutex_lock(&d->mu);
	d->barrier = true;
	pthread_cond_broadcast(&d->room);
	pthread_mutex_unlock(&d->mu);
}

/* VM stopped: every write of this epoch has arrived (stop drained them). */
static int disk_postsuspend(void *state, struct replicator *r, struct epoch_tally *t)
{
	struct disk_device *d = state;

	if (!d->n)
		return 0;
	list_free(&d->captured);
	pthread_mutex_lock(&d->mu);
	d->barrier = false;
	if (d->overflow) {
		pthread_mutex_unlock(&d->mu);
		log_err("disks: writes were dropped while no checkpoint could take them "
			"(over %zu MiB held): the backup's disks need a full copy",
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
	return 0;
}

static int disk_send(void *state, struct replicator *r, struct epoch_tally *t)
{
	struct disk_device *d = state;
	int rc = 0;

	if (d->captured_epoch != t->id)
		return 0;
	for (struct disk_rec *rec = d->captured.head; rec && !rc; rec = rec->next)
		rc = push_rec(r, t, rec, NULL);
	return rc;
}

static void disk_commit(void *state, struct replicator *r, uint64_t epoch)
{
	struct disk_device *d = state;

	if (d->captured_epoch == epoch)
		list_free(&d->captured);
}

static void disk_event(void *state, struct replicator *r, const char *event,
		       struct json_object *data)
{
	struct disk_device *d = state;
	const char *job = data ? member(data, "device") : NULL;
	unsigned idx, gen;

	if (!job || sscanf(job, "remus-mirror%u-%u", &idx, &gen) != 2 || idx >= d->n ||
	    gen != d->disks[idx].gen)
		return; /* not ours, or a job we cancelled */
	if (!strcmp(event, "BLOCK_JOB_READY")) {
		d->disks[idx].ready = true;
		log_info("disk %s: mirror ready", d->disks[idx].name);
		if (d->sync_open && all_ready(d))
			finish_sync(d);
	} else if (!strcmp(event, "BLOCK_JOB_COMPLETED") || !strcmp(event, "BLOCK_JOB_CANCELLED") ||
		   !strcmp(event, "BLOCK_JOB_ERROR")) {
		const char *err = data ? member(data, "error") : NULL;

		if (!d->disks[idx].job)
			return; /* our own cancel */
		/* An error leaves the job running (on-target-error: ignore) but
		 * a write missed the backup: resync, cancelling the job first. */
		if (strcmp(event, "BLOCK_JOB_ERROR"))
			d->disks[idx].job = false;
		d->disks[idx].ready = false;
		log_err("disk %s: its mirror ended (%s%s%s): writes no longer reach the "
			"backup; resyncing", d->disks[idx].name, event, err ? ": " : "",
			err ? err : "");
		link_drop_alive(r, "a disk mirror ended");
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
			!k->job ? "idle" : k->ready ? "mirroring" : "syncing"));
		json_object_object_add(o, "sync_percent", json_object_new_double(
			k->ready ? 100.0 : k->size ? 100.0 * (double)(k->sync_bytes > k->size ?
								  k->size : k->sync_bytes) / (double)k->size : 0));
		json_object_object_add(o, "writes", json_object_new_int64((int64_t)k->writes));
		json_object_object_add(o, "written_bytes", json_object_new_int64((int64_t)k->bytes));
		json_object_array_add(arr, o);
	}
	json_object_object_add(out, "disk_pending_bytes", json_object_new_int64((int64_t)d->pending.bytes));
	pthread_mutex_unlock(&d->mu);
	json_object_object_add(out, "disks", arr);
	json_object_object_add(out, "disk_early_epochs", json_object_new_int64((int64_t)early));
	json_object_object_add(out, "disk_write_stalls", json_object_new_int64((int64_t)stalls));
	json_object_object_add(out, "disk_overflows", json_object_new_int64((int64_t)d->overflows));
}

/* HELLO: the disks the backup keeps a replica of, in index order. */
static void disk_hello(void *state, struct json_object *hello)
{
	struct disk_device *d = state;
	struct json_object *arr = json_object_new_array();

	for (uint32_t i = 0; i < d->n; i++) {
		struct json_object *o = json_object_new_object();
		const struct disk *k = &d->disks[i];

		json_object_object_add(o, "id", json_object_new_string(k->name));
		json_object_object_add(o, "node", json_object_new_string(k->node));
		json_object_object_add(o, "file", json_object_new_string(k->file));
		json_object_object_add(o, "size", json_object_new_int64((int64_t)k->size));
		json_object_object_add(o, "format", json_object_new_string("raw"));
		json_object_array_add(arr, o);
	}
	json_object_object_add(hello, "disks", arr);
}

const struct ckpt_device_ops disk_device_ops = {
	.name = "disk",
	.setup = disk_setup,
	.teardown = disk_teardown,
	.sync = disk_sync,
	.presuspend = disk_presuspend,
	.postsuspend = disk_postsuspend,
	.send = disk_send,
	.commit = disk_commit,
	.event = disk_event,
	.status = disk_status,
	.hello = disk_hello,
};
