/* The epoch pipeline. At each barrier: stop the VM, let every checkpoint
 * device capture its part, resume the VM, then queue the captured data and
 * close the epoch with EPOCH_END. One epoch is in flight at a time: the
 * next barrier waits for the backup's ack, so the staged data of epoch N
 * stays untouched (and can be sent again on a NACK) until N commits. */
#include "clock.h"
#include "ckpt_device.h"
#include "log.h"
#include "qmp.h"
#include "replicator.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define QMP_BARRIER_TIMEOUT_MS 5000
#define MAX_RESENDS            5

static const struct ckpt_device_ops *const device_table[] = {
	&memory_device_ops,
	&qemu_state_device_ops,
	&disk_device_ops,      /* writes of the epoch, taken with the VM stopped */
	&netbuf_device_ops,    /* after the capture: drains and seals the epoch's output */
};

void epoch_ctx_init(struct replicator *r)
{
	r->ckpt = (struct ckpt_ctx){
		.loop = r->loop,
		.qmp = r->qmp,
		.cfg = &r->cfg,
		.vm = &r->vm,
		.runtime_dir = r->runtime_dir,
		.sync_tally = &r->sync_tally,
		.compress = &r->compress,
		.delta = &r->delta,
	};
}

int epoch_devices_setup(struct replicator *r)
{
	size_t n = sizeof(device_table) / sizeof(device_table[0]);

	epoch_ctx_init(r);

	r->devices = calloc(n, sizeof(*r->devices));
	if (!r->devices)
		return -ENOMEM;
	r->ndevices = (int)n;
	for (size_t i = 0; i < n; i++) {
		int rc;
		r->devices[i].ops = device_table[i];
		rc = device_table[i]->setup(&r->ckpt, &r->devices[i].state);
		if (rc) {
			log_err("checkpoint device %s: setup failed: %s",
				device_table[i]->name, strerror(-rc));
			return rc;
		}
	}
	return 0;
}

void *epoch_device_state(const struct replicator *r, const struct ckpt_device_ops *ops)
{
	for (int i = 0; i < r->ndevices; i++)
		if (r->devices[i].ops == ops)
			return r->devices[i].state;
	return NULL;
}

void epoch_devices_teardown(struct replicator *r)
{
	for (int i = 0; r->devices && i < r->ndevices; i++)
		if (r->devices[i].ops)
			r->devices[i].ops->teardown(r->devices[i].state);
	free(r->devices);
	r->devices = NULL;
	r->ndevices = 0;
}

/* Test hook (--test-corrupt-epoch): send one frame of the epoch with a
 * flipped byte after its CRC was computed, as a bad link would. The frame
 * goes from a private copy: the staged pages stay intact for the resend. */
static int push_corrupted(struct replicator *r, unsigned type, uint64_t epoch,
			  const struct iovec *iov, int iovcnt, void *owned, uint32_t *crc)
{
	size_t len = 0, off = 0;
	uint8_t *copy;
	struct iovec one;
	int rc;

	for (int i = 0; i < iovcnt; i++)
		len += iov[i].iov_len;
	copy = malloc(len ? len : 1);
	if (!copy) {
		free(owned);
		return -ENOMEM;
	}
	for (int i = 0; i < iovcnt; i++) {
		memcpy(copy + off, iov[i].iov_base, iov[i].iov_len);
		off += iov[i].iov_len;
	}
	free(owned);
	one = (struct iovec){ .iov_base = copy, .iov_len = len };
	rc = link_push(r, type, epoch, &one, 1, copy, crc);
	if (!rc && len)
		copy[len - 1] ^= 0x5a;
	log_warn("epoch %llu: test hook corrupted a %s frame on purpose",
		 (unsigned long long)epoch, frame_type_name(type));
	return rc;
}

int epoch_push_frame(struct ckpt_ctx *cx, struct epoch_tally *t, unsigned type,
		     const struct iovec *iov, int iovcnt, void *owned)
{
	struct replicator *r = replicator_of(cx);
	uint32_t crc;
	int rc;

	if (r->cfg.test_corrupt_epoch >= 0 && t->id == (uint64_t)r->cfg.test_corrupt_epoch) {
		r->cfg.test_corrupt_epoch = -1;
		rc = push_corrupted(r, type, t->id, iov, iovcnt, owned, &crc);
	} else {
		rc = link_push(r, type, t->id, iov, iovcnt, owned, &crc);
	}
	if (rc)
		return rc;
	t->frames++;
	t->crc = proto_epoch_crc_add(t->crc, crc);
	return 0;
}

static int close_epoch(struct replicator *r, struct epoch_tally *t)
{
	struct epoch_end e = {
		.pages = t->pages,
		.devstate_bytes = t->devstate_bytes,
		.frames = t->frames,
		.epoch_crc = t->crc,
	};
	uint8_t *buf = malloc(PROTO_EPOCH_END_SIZE);
	struct iovec iov;

	if (!buf)
		return -ENOMEM;
	proto_encode_epoch_end(buf, &e);
	iov = (struct iovec){ .iov_base = buf, .iov_len = PROTO_EPOCH_END_SIZE };
	r->inflight = true;
	r->epoch_sent_ms = mono_ms();
	if (link_push(r, FRAME_EPOCH_END, t->id, &iov, 1, buf, NULL))
		return -ENOMEM;
	verify_after_epoch_end(r, t->id);
	return 0;
}

/* Queue the captured epoch t->id (again, after a NACK). */
static int send_epoch(struct replicator *r, uint64_t id, uint64_t *pages, bool resend)
{
	struct epoch_tally t = { .id = id, .resend = resend };
	int rc;

	for (int i = 0; i < r->ndevices; i++) {
		const struct ckpt_device *d = &r->devices[i];
		if (d->ops->send && (rc = d->ops->send(d->state, &r->ckpt, &t)))
			return rc;
	}
	rc = close_epoch(r, &t);
	if (pages)
		*pages = t.pages;
	return rc;
}

static void on_release_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct replicator *r = w->data;

	/* Protected again meanwhile (a new backup committed): nothing to do. */
	if (prot_is_protected(&r->state))
		return;
	log_warn("the backup did not take over within %u ms: releasing held output",
		 r->backup_silence_ms);
	protect_devices(r, false, 0);
}

/* Release held output now, or, when the backup may still take over (the
 * link broke without our GOODBYE), once it would have: output released
 * earlier could be rolled back by its takeover from the last commit. */
static void release_output(struct replicator *r)
{
	double waited = boot_ms() - r->link.last_rx_ms;
	double hold = r->backup_may_take_over && r->link.last_rx_ms > 0 ?
		r->backup_silence_ms - waited : 0;

	r->backup_may_take_over = false;
	ev_timer_stop(r->loop, &r->release_timer);
	if (hold <= 0 || r->stopping) {
		protect_devices(r, false, 0);
		return;
	}
	log_warn("holding the VM's output %.0f ms more: the backup may still take over "
		 "from its last commit", hold);
	ev_timer_init(&r->release_timer, on_release_timer, hold / 1e3, 0);
	r->release_timer.data = r;
	ev_timer_start(r->loop, &r->release_timer);
}

void epoch_start_sync(struct replicator *r)
{
	struct epoch_tally *t = &r->sync_tally;
	double t0 = mono_ms();
	int rc = 0;

	/* The backup is talking to us again, so it is not taking over: output
	 * held for that case goes out now, before the new session's epochs
	 * (numbered from 0 again) would confuse the net buffer. */
	if (ev_is_active(&r->release_timer)) {
		ev_timer_stop(r->loop, &r->release_timer);
		protect_devices(r, false, 0);
	}
	r->epoch = 0;
	r->session_synced = false;
	r->stats.resyncs++;
	r->sync_pending = 0;
	*t = (struct epoch_tally){ .id = 0 };
	prot_set(&r->state, PROT_PART_LINK, PROT_SYNCING, "initial copy to backup %s started",
		 r->cfg.backup.text);
	for (int i = 0; i < r->ndevices && rc >= 0; i++) {
		const struct ckpt_device *d = &r->devices[i];
		if (!d->ops->sync)
			continue;
		rc = d->ops->sync(d->state, &r->ckpt, t);
		if (rc == CKPT_SYNC_PENDING) {
			r->sync_pending++;
			rc = 0;
		}
	}
	if (!rc && !r->sync_pending)
		rc = close_epoch(r, t);
	if (rc) {
		epoch_on_backup_lost(r, "initial sync could not be queued");
		return;
	}
	log_info("initial sync started (VM running): %llu pages queued in %.1f ms%s",
		 (unsigned long long)t->pages, mono_ms() - t0,
		 r->sync_pending ? "; epoch 0 ends when RAM and disks are copied" : "");
}

void epoch_sync_device_ready(struct ckpt_ctx *cx)
{
	struct replicator *r = replicator_of(cx);

	if (!r->sync_pending || --r->sync_pending || !peer_link_up(&r->link))
		return;
	if (close_epoch(r, &r->sync_tally))
		link_drop_alive(r, "initial sync could not be closed; resyncing");
}

static void set_timer(struct replicator *r, double ms)
{
	fine_timer_start(r->loop, &r->epoch_timer, ms);
}

void epoch_arm_timer(struct replicator *r)
{
	r->epoch_started_ms = mono_ms();
	r->output_since_ms = -1;
	r->reply_at_ms = -1;
	r->reply_marked = false;
	vcpu_load_mark(&r->vcpu_load, r->epoch_started_ms);
	set_timer(r, epoch_policy_deadline(&r->policy, -1, -1));
}

void epoch_output_waiting(struct ckpt_ctx *cx, bool reply)
{
	struct replicator *r = replicator_of(cx);
	double now = mono_ms(), into = now - r->epoch_started_ms;

	if (r->output_since_ms >= 0 && !reply)
		return; /* a bare ACK changes nothing once output waits */
	if (r->output_since_ms < 0)
		r->output_since_ms = into;
	if (reply)
		r->reply_at_ms = into;
	if (reply && !r->reply_marked && epoch_policy_output_driven(&r->policy)) {
		/* how busy the vCPUs are from here decides whether the reply's
		 * quiet ends the epoch (epoch_timer_expired) */
		vcpu_load_mark_at(&r->vcpu_load, &r->reply_mark, now);
		r->reply_marked = true;
	}
	if (!fine_timer_armed(&r->epoch_timer))
		return; /* the barrier is already due (waiting for an ack) */
	/* Every later reply may move the end on, within the policy's bounds:
	 * the timer holds nothing else while output waits. */
	set_timer(r, epoch_policy_deadline(&r->policy, r->output_since_ms, r->reply_at_ms) -
		     into);
}

void epoch_timer_expired(struct replicator *r)
{
	double now = mono_ms(), into = now - r->epoch_started_ms;

	/* A reply's quiet ran out, but the vCPUs kept working: the VM is
	 * answering more requests, whose replies may join this epoch. */
	if (r->reply_marked &&
	    epoch_policy_reply_extends(&r->policy, r->output_since_ms, into,
				       vcpu_load_busy_since(&r->vcpu_load, &r->reply_mark, now))) {
		r->stats.reply_waits++;
		set_timer(r, EPOCH_REPLY_QUIET_MS);
		return;
	}
	epoch_checkpoint(r);
}

/* Nothing goes to the backup while the VM is paused: the loop is busy
 * capturing. A pause as long as the backup's --timeout-ms reads to it as a
 * dead primary, and it takes over while the primary lives. Warn well
 * before (half the timeout), at most once a minute. */
static void warn_long_pause(struct replicator *r, uint64_t epoch, double pause_ms)
{
	double now = mono_ms();

	if (pause_ms * 2 < r->cfg.timeout_ms ||
	    (r->long_pause_warned_ms && now - r->long_pause_warned_ms < 60000))
		return;
	r->long_pause_warned_ms = now;
	log_warn("epoch %llu: the VM was paused %.0f ms, over half of --timeout-ms (%u ms): "
		 "the backup (with its own --timeout-ms) takes a primary silent that long for "
		 "dead; raise --timeout-ms on both hosts (remusctl status shows where the pause "
		 "goes)", (unsigned long long)epoch, pause_ms, r->cfg.timeout_ms);
}

static void learn(struct replicator *r, double run_ms, double pause_ms, uint64_t pages,
		  uint64_t bytes, double vcpu_busy)
{
	struct epoch_sample s = {
		.run_ms = run_ms,
		.pause_ms = pause_ms,
		.dirty_pages = pages,
		.checkpoint_bytes = bytes,
		.link_bytes_per_s = r->stats.link_bytes_per_s,
		.vcpu_busy_known = vcpu_busy >= 0,
		.vcpu_busy = vcpu_busy,
	};

	epoch_policy_observe(&r->policy, &s);
}

/* Resume the guest whatever went wrong before: a VM left stopped by the
 * replicator is an outage the replicator caused. */
static int resume_vm(struct replicator *r)
{
	int rc = qmp_execute(r->qmp, "cont", NULL, NULL, QMP_BARRIER_TIMEOUT_MS);

	if (rc)
		log_err("cannot resume the VM: %s", qmp_last_error(r->qmp));
	else
		r->vm_stopped_by_us = false;
	return rc;
}

/* Before the barrier: 1 the VM may be running (go on and stop it), 0 it
 * is not (skip this barrier), -EPIPE QEMU is gone. */
static int vm_may_run(struct replicator *r)
{
	int rc;

	if (r->vm_shutdown)
		return 0;
	/* Our own `cont` failed last time: the VM is ours to resume. */
	if (r->vm_stopped_by_us && (rc = resume_vm(r)))
		return rc == -EPIPE ? rc : 0;
	return 1;
}

/* The VM stands still, and not by our `stop`: no checkpoint until it runs
 * again, which we do not do. Said once per stretch: a replicator that died
 * inside a pause (or a handover) leaves the VM paused, and nothing else
 * would tell the operator why it stays so. */
static void say_paused(struct replicator *r, struct json_object *status)
{
	struct json_object *v;
	const char *st = json_object_object_get_ex(status, "status", &v) ?
		json_object_get_string(v) : "?";

	log_warn("VM %s is not running (QEMU status %s), and not by this replicator: no "
		 "checkpoint until it runs again. If a replicator before this one died during "
		 "a checkpoint or a handover, it left the VM so: check that the backup does "
		 "not run the VM, then resume it (QMP cont, virsh resume)", r->vm.name, st);
}

/* Ask QEMU (one more round trip while the guest runs). 1 running, 0 not. */
static int query_running(struct replicator *r)
{
	struct json_object *ret = NULL, *v;
	int rc, running = 0;

	rc = qmp_execute(r->qmp, "query-status", NULL, &ret, QMP_BARRIER_TIMEOUT_MS);
	if (rc == -EPIPE)
		return rc;
	if (rc)
		log_warn("epoch %llu: query-status failed (%s): checkpoint skipped",
			 (unsigned long long)r->epoch + 1, qmp_last_error(r->qmp));
	else if (json_object_object_get_ex(ret, "running", &v))
		running = json_object_get_boolean(v);
	if (!rc && !running && !r->vm_paused_said)
		say_paused(r, ret);
	r->vm_paused_said = !rc && !running;
	json_object_put(ret);
	return running;
}

/* `stop`, and whether it was this stop that paused the VM: 1 stopped by
 * us, 0 it was not running (paused by someone else: our `cont` must not
 * wake it), <0 failed. Over a QMP socket one round trip says both, as
 * QEMU sends STOP before the reply when, and only when, it paused a
 * running VM; that round trip is on every reply's path (output commit).
 * Where the VM may stand still (not seen running since attach, or the
 * last barrier found it paused or could not stop it), and through
 * libvirt (no socket: its events come apart from the replies), ask
 * first: a `stop` of a VM that is not running is not free (QEMU drains
 * and flushes its disks; during an incoming migration it keeps the VM
 * from starting at the end). */
static int stop_vm(struct replicator *r)
{
	bool passthrough = qmp_fd(r->qmp) < 0, stopped_it = true;
	int rc;

	if (!r->vm_seen_running || passthrough) {
		rc = query_running(r);
		if (rc <= 0)
			return rc;
	}
	if (passthrough)
		rc = qmp_execute(r->qmp, "stop", NULL, NULL, QMP_BARRIER_TIMEOUT_MS);
	else
		rc = qmp_execute_watch(r->qmp, "stop", NULL, "STOP", &stopped_it,
				       QMP_BARRIER_TIMEOUT_MS);
	r->vm_seen_running = !rc && stopped_it;
	if (rc) {
		log_err("epoch %llu: cannot stop the VM: %s", (unsigned long long)r->epoch + 1,
			qmp_last_error(r->qmp));
		return rc;
	}
	if (stopped_it)
		r->vm_stopped_by_us = true;
	r->vm_paused_said = r->vm_paused_said && !stopped_it; /* it ran: say it again */
	return stopped_it;
}

static int capture(struct replicator *r, struct epoch_tally *t)
{
	for (int i = 0; i < r->ndevices; i++) {
		const struct ckpt_device *d = &r->devices[i];
		if (d->ops->postsuspend) {
			int rc = d->ops->postsuspend(d->state, &r->ckpt, t);
			if (rc)
				return rc;
		}
	}
	return 0;
}

/* The devices get ready, the VM stops: stop_vm's answer. *t0 is when the
 * pause began, *vcpu_busy how busy the vCPUs were in the epoch. */
static int begin_barrier(struct replicator *r, double *t0, double *vcpu_busy)
{
	int rc;

	for (int i = 0; i < r->ndevices; i++)
		if (r->devices[i].ops->presuspend)
			r->devices[i].ops->presuspend(r->devices[i].state, &r->ckpt);
	*t0 = mono_ms();
	*vcpu_busy = vcpu_load_busy(&r->vcpu_load, *t0);
	rc = stop_vm(r);
	if (rc > 0)
		return rc;
	for (int i = 0; i < r->ndevices; i++)
		if (r->devices[i].ops->barrier_skipped)
			r->devices[i].ops->barrier_skipped(r->devices[i].state, &r->ckpt);
	return rc;
}

/* One barrier: stop, capture, resume (not if final: the handover keeps the
 * VM stopped), queue. 0 queued, 1 skipped (VM not running), <0 failed
 * (handled here: the link dropped, or QEMU trouble reported). */
static int checkpoint(struct replicator *r, bool final)
{
	struct epoch_tally t = { .id = r->epoch + 1 };
	uint64_t pages = 0, pushed_before;
	double t0 = 0, t1, t2, pause, vcpu_busy = -1;
	int rc, resume_rc = 0;

	rc = vm_may_run(r);
	if (rc > 0)
		rc = begin_barrier(r, &t0, &vcpu_busy);
	if (rc < 0) {
		replicator_primary_trouble(r, rc);
		return rc;
	}
	if (!rc) {
		/* Stopped by someone else (or shut down): nothing changes while it
		 * stands still, and our `cont` must not wake it. Look again later. */
		if (!final)
			epoch_arm_timer(r);
		return 1;
	}
	t1 = mono_ms();
	rc = capture(r, &t);
	t2 = mono_ms();
	/* A failed final capture hands nothing over: the VM must run again. */
	if (!final || rc)
		resume_rc = resume_vm(r);
	pause = mono_ms() - t0;
	if (rc == -EPIPE) {
		/* QEMU died in the middle: a failover, not a resync. */
		replicator_primary_trouble(r, rc);
		return rc;
	}
	if (rc) {
		/* The trackers moved on but nothing was sent: only a full
		 * resync gives the backup a consistent picture again. */
		link_drop_alive(r, "capture failed; resyncing");
		goto out;
	}
	/* ev_now() is still the time before the pause: timestamps taken from
	 * here on (the epoch's send time for ack latency) must not include it. */
	ev_now_update(r->loop);
	r->epoch = t.id;
	/* sent + queued: a pulse (peer_link_pulse) may send some of the
	 * epoch's bytes while it is being queued */
	pushed_before = r->link.out.bytes_sent + r->link.out.bytes_queued;
	compress_epoch_begin(&r->compress);
	if (send_epoch(r, t.id, &pages, false)) {
		link_drop_alive(r, "epoch could not be queued; resyncing");
		rc = -EIO;
		goto out;
	}
	r->stats.dirty_pages_total += pages;
	r->epoch_wire_bytes = r->link.out.bytes_sent + r->link.out.bytes_queued - pushed_before;
	if (final)
		goto out; /* no pause to learn from: the VM stays stopped */
	ring_add(&r->stats.stop_ms, t1 - t0);
	ring_add(&r->stats.capture_ms, t2 - t1);
	ring_add(&r->stats.resume_ms, t0 + pause - t2);
	ring_add(&r->stats.pause_ms, pause);
	warn_long_pause(r, t.id, pause);
	ring_add(&r->stats.checkpoint_bytes, (double)r->epoch_wire_bytes);
	learn(r, t0 - r->epoch_started_ms, pause, pages, r->epoch_wire_bytes,
	      vcpu_busy);
	ring_add(&r->stats.dirty_pages, (double)pages);
	epoch_arm_timer(r);
out:
	/* A captured epoch is on its way even if the VM could not be resumed:
	 * if QEMU died, the backup may still commit it. */
	if (resume_rc)
		replicator_primary_trouble(r, resume_rc);
	return rc;
}

void epoch_checkpoint(struct replicator *r)
{
	if (!peer_link_up(&r->link) || r->stopping)
		return;
	/* Paused, or a failover takes its own last checkpoint. */
	if (!prot_checkpoints_run(&r->state))
		return;
	/* sync_pending: epoch 0, the initial copy, is still being queued (a
	 * disk's early barrier can come meanwhile); its ack takes the first
	 * checkpoint. */
	if (r->inflight || r->sync_pending) {
		r->checkpoint_due = true;
		return;
	}
	r->checkpoint_due = false;
	checkpoint(r, false);
	/* QEMU's events that came while the barrier's commands waited (STOP,
	 * RESUME, a block job's end) are queued: hand them out now, not
	 * whenever the socket next has something to read. */
	if (!r->stopping)
		replicator_qemu_events(r);
}

int epoch_final_checkpoint(struct replicator *r)
{
	if (!peer_link_up(&r->link) || r->stopping || r->inflight)
		return -EAGAIN;
	r->checkpoint_due = false;
	fine_timer_stop(r->loop, &r->epoch_timer);
	return checkpoint(r, true);
}

int epoch_resume_vm(struct replicator *r)
{
	return resume_vm(r);
}

void protect_devices(struct replicator *r, bool on, uint64_t next_epoch)
{
	for (int i = 0; i < r->ndevices; i++)
		if (r->devices[i].ops->protect)
			r->devices[i].ops->protect(r->devices[i].state, &r->ckpt, on, next_epoch);
}

void epoch_request_early(struct ckpt_ctx *cx, const char *why)
{
	struct replicator *r = replicator_of(cx);

	log_debug("epoch %llu ends early: %s", (unsigned long long)r->epoch + 1, why);
	r->stats.early_epochs++;
	if (r->inflight)
		r->checkpoint_due = true;
	else
		epoch_checkpoint(r);
}


/* Protected (again): what it took, for the operator and drills. */
static void notify_protected(struct replicator *r)
{
	struct hook_event ev = {
		.pair = r->cfg.pair_name ? r->cfg.pair_name : r->vm.name,
		.vm = r->vm.name,
		.event = "protected",
		.role = "primary",
		.epoch = r->stats.last_acked_epoch,
		.peer = r->cfg.backup.text,
		.reason = "a checkpoint committed on the backup",
	};
	char v[48], p[48], d[48];

	/* everything sent on this connection: the sync and the first epoch */
	hook_event_var(&ev, v, sizeof(v), "SYNC_BYTES", "%llu",
		       (unsigned long long)r->link.out.bytes_sent);
	/* what the initial copy sent of RAM, however it was encoded */
	hook_event_var(&ev, p, sizeof(p), "SYNC_PAGES", "%llu",
		       (unsigned long long)r->sync_tally.pages);
	/* ... and of the disks' data (a delta resync: only what differed) */
	hook_event_var(&ev, d, sizeof(d), "SYNC_DISK_BYTES", "%llu",
		       (unsigned long long)r->sync_tally.disk_bytes);
	hook_notify(&r->hooks, &ev);
}

void epoch_on_ack(struct replicator *r, uint64_t id)
{
	if (!r->inflight || id != r->epoch) {
		log_warn("ack for epoch %llu, but epoch %llu is in flight: ignored",
			 (unsigned long long)id, (unsigned long long)r->epoch);
		return;
	}
	r->inflight = false;
	r->nacks_in_a_row = 0;
	ring_add(&r->stats.ack_ms, mono_ms() - r->epoch_sent_ms);
	compress_epoch_acked(&r->compress, id ? r->epoch_wire_bytes : 0,
			     mono_ms() - r->epoch_sent_ms);
	if (id == 0) {
		r->session_synced = true;
		/* it may take over from now on (backup_choice.h), paused or not */
		backup_choice_committed(&r->backups, r->backup_silence_ms);
		if (operator_after_ack(r, id))
			return;
		log_info("initial sync acknowledged; taking the first checkpoint");
		protect_devices(r, true, 1);
		epoch_checkpoint(r);
		replicator_notify_state(r);
		return;
	}
	bool news = !prot_is_protected(&r->state);

	r->stats.epochs_committed++;
	r->stats.last_acked_epoch = id;
	if (news) {
		log_info("epoch %llu committed on the backup: VM %s is protected",
			 (unsigned long long)id, r->vm.name);
		prot_set(&r->state, PROT_PART_LINK, PROT_PROTECTED, "epoch %llu committed",
			 (unsigned long long)id);
		notify_protected(r);
	}
	for (int i = 0; i < r->ndevices; i++)
		if (r->devices[i].ops->commit)
			r->devices[i].ops->commit(r->devices[i].state, &r->ckpt, id);
	/* The epoch number in STATUS= is refreshed once a second (stats timer). */
	if (operator_after_ack(r, id))
		return;
	if (r->checkpoint_due)
		epoch_checkpoint(r);
}

/* An epoch's frames all written this long ago, and no ack: the backup
 * answers heartbeats, so it is not lost, but the VM's output stays held
 * for as long as the ack does not come. Only once protected: a session's
 * first commit may sync whole disks and take minutes (the agent's
 * heartbeats go on meanwhile), and an epoch's later commits write at
 * most what it sent, in far less than this plus a second per 20 MB. */
#define ACK_STALL_MS 60000.0
#define ACK_STALL_BYTES_PER_MS 20000.0

/* Watchdog (1): the epoch in flight, written whole for too long. Counts
 * from the first look that found the link's queue empty. */
static bool ack_stalled(struct replicator *r, double now)
{
	if (!r->inflight || r->link.out.bytes_queued || !prot_is_protected(&r->state) ||
	    prot_handover(&r->state) != HO_NONE || prot_paused(&r->state)) {
		r->drained_at_ms = 0;
		return false;
	}
	if (!r->drained_at_ms || r->drained_epoch != r->epoch) {
		r->drained_at_ms = now;
		r->drained_epoch = r->epoch;
		return false;
	}
	return now - r->drained_at_ms >
	       ACK_STALL_MS + (double)r->epoch_wire_bytes / ACK_STALL_BYTES_PER_MS;
}

/* Watchdog (2): protected, and nothing will take the next barrier:
 * neither an ack in flight (checkpoint_due alone waits for one) nor the
 * timer (pending: it expired in this turn of the loop, its callback not
 * run yet). A turn of the loop may stop the timer for a moment (a QEMU
 * whose death libvirt is telling): seen for a second at least. */
static bool barrier_unscheduled(struct replicator *r, double now)
{
	bool scheduled = r->inflight || r->sync_pending || fine_timer_scheduled(&r->epoch_timer);

	if (scheduled || !r->session_synced || !prot_checkpoints_run(&r->state) ||
	    prot_handover(&r->state) != HO_NONE) {
		r->unscheduled_since_ms = 0;
		return false;
	}
	if (!r->unscheduled_since_ms)
		r->unscheduled_since_ms = now;
	return now - r->unscheduled_since_ms >= 1000;
}

void epoch_watchdog(struct replicator *r)
{
	double now = mono_ms();

	if (!peer_link_up(&r->link) || r->stopping) {
		r->drained_at_ms = r->unscheduled_since_ms = 0;
		return;
	}
	if (ack_stalled(r, now)) {
		r->stats.stalls++;
		log_err("epoch %llu was written whole %.0f s ago and the backup, which answers "
			"heartbeats, never acknowledged it: VM %s's output is held meanwhile; "
			"starting over with a new session", (unsigned long long)r->epoch,
			(now - r->drained_at_ms) / 1000, r->vm.name);
		r->drained_at_ms = 0;
		link_drop_alive(r, "no ack for an epoch sent whole; resyncing");
		return;
	}
	if (barrier_unscheduled(r, now)) {
		r->unscheduled_since_ms = 0;
		r->stats.stalls++;
		log_err("BUG: VM %s is protected but no checkpoint was scheduled: scheduling one",
			r->vm.name);
		epoch_arm_timer(r);
	}
}

void epoch_on_nack(struct replicator *r, uint64_t id, const char *why)
{
	if (!r->inflight || id != r->epoch) {
		log_warn("nack for epoch %llu, but epoch %llu is in flight: ignored",
			 (unsigned long long)id, (unsigned long long)r->epoch);
		return;
	}
	r->stats.epochs_nacked++;
	r->inflight = false;
	if (++r->nacks_in_a_row > MAX_RESENDS) {
		/* The backup cannot take this epoch (its disk, say): a fresh
		 * session tells us why, or recovers. */
		log_err("backup discarded epoch %llu %u times (%s): starting over",
			(unsigned long long)id, r->nacks_in_a_row, why);
		link_drop_alive(r, "epoch refused again and again; resyncing");
		return;
	}
	log_warn("backup discarded epoch %llu (%s): sending it again",
		 (unsigned long long)id, why);
	if (id == 0) {
		epoch_start_sync(r);
		return;
	}
	compress_epoch_resent(&r->compress);
	if (send_epoch(r, id, NULL, true))
		link_drop_alive(r, "epoch could not be queued again; resyncing");
}

void epoch_on_backup_lost(struct replicator *r, const char *why)
{
	epoch_backup_gone(r, why, peer_link_up(&r->link));
}

void epoch_backup_gone(struct replicator *r, const char *why, bool link_was_up)
{
	/* Say it once per loss, not at every failed reconnect. */
	bool announce = link_was_up || prot_link(&r->state) != PROT_UNPROTECTED;

	if (link_was_up)
		backup_choice_link_lost(&r->backups, r->backup_may_take_over, mono_ms() / 1e3);
	peer_link_close(&r->link);
	r->session_synced = false;
	operator_on_backup_lost(r, why);
	verify_abort(r, "the backup was lost; verify again once protected");
	r->nacks_in_a_row = 0;
	r->inflight = false;
	r->checkpoint_due = false;
	fine_timer_stop(r->loop, &r->epoch_timer);
	if (prot_is_protected(&r->state))
		replicator_notify(r, "unprotected", why);
	prot_set(&r->state, PROT_PART_LINK, PROT_UNPROTECTED, "backup lost: %s", why);
	/* A handover of unknown outcome: the backup may run the VM now. Its
	 * last output stays held and nothing reconnects until the operator
	 * decides (remusctl resume, or stop this replicator). */
	if (prot_left_paused(&r->state))
		return;
	release_output(r);
	if (r->stopping)
		return;
	if (announce)
		log_err("backup lost (%s): VM %s runs UNPROTECTED; reconnecting to %s",
			why, r->vm.name, r->cfg.backup.text);
	if (!ev_is_active(&r->reconnect_timer))
		ev_timer_start(r->loop, &r->reconnect_timer);
}
