/* Operator controls, driven by remusctl over the control socket.
 *
 * Pause: no more checkpoints. The epoch in flight is acked first, then the
 * backup is told (PAUSE) and only once it has answered (PAUSE_ACK: it will
 * not take over any more) is the held output released; from then on output
 * goes out at once. Resume restarts the checkpoints: the dirty trackers
 * compare with (compare, hash: its hashes) or log writes since
 * (soft-dirty) the last epoch sent, and none runs while paused, so the
 * first epoch after resume carries everything written meanwhile; a backup
 * that missed the session's initial sync gets it then.
 *
 * Failover (planned handover): the epoch in flight is acked, a final
 * checkpoint is taken with the VM stopped, and the VM is not resumed. When
 * the backup has committed it (its output is released), HANDOVER asks the
 * backup to start the VM. HANDOVER_DONE: the primary QEMU quits and the
 * replicator exits 0. HANDOVER_FAILED: the VM resumes here, still
 * protected. The link lost after the VM stopped: the backup may have
 * started the VM (and takes over anyway when it loses a committed
 * primary), so the VM stays stopped here, its last output held, until the
 * operator decides (remusctl resume).
 *
 * Park (a cluster manager's demote) is a failover whose HANDOVER says
 * "park": the backup keeps the final epoch, the VM does not start there
 * until the manager promotes that host. In a pair whose roles move the
 * QEMU here stays paused at that epoch (parked.h), for a promote of this
 * host again; elsewhere it quits. */
#include "log.h"
#include "parked.h"
#include "procfs.h"
#include "qmp.h"
#include "replicator.h"
#include "virt.h"

#include <errno.h>
#include <json-c/json.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define QUIT_TIMEOUT_MS 5000
#define QUIT_WAIT_ROUNDS 100   /* of 50 ms: QEMU gone within 5 s */

static const char *pause_name(const struct replicator *r)
{
	return prot_part_value_name(PROT_PART_PAUSE, prot_pause(&r->state));
}

static const char *handover_name(const struct replicator *r)
{
	return prot_part_value_name(PROT_PART_HANDOVER, prot_handover(&r->state));
}

/* {"ok":..., "state":..., "message" or "error": text} */
static struct json_object *answer_text(const struct replicator *r, bool ok, const char *text)
{
	struct json_object *o = json_object_new_object();

	json_object_object_add(o, "ok", json_object_new_boolean(ok));
	json_object_object_add(o, "state", json_object_new_string(prot_name(&r->state)));
	json_object_object_add(o, ok ? "message" : "error", json_object_new_string(text));
	return o;
}

static struct json_object *answer(const struct replicator *r, bool ok, const char *fmt, va_list ap)
{
	char text[512];

	vsnprintf(text, sizeof(text), fmt, ap);
	return answer_text(r, ok, text);
}

static char *to_text(struct json_object *o)
{
	char *text = strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));

	json_object_put(o);
	return text;
}

static char *reply(const struct replicator *r, bool ok, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static char *reply(const struct replicator *r, bool ok, const char *fmt, ...)
{
	struct json_object *o;
	va_list ap;

	va_start(ap, fmt);
	o = answer(r, ok, fmt, ap);
	va_end(ap);
	return to_text(o);
}

/* --- pause ------------------------------------------------------------- */

static void pause_on(struct replicator *r, const char *why)
{
	prot_set(&r->state, PROT_PART_PAUSE, PAUSE_ON, "%s", why);
	protect_devices(r, false, 0); /* held output goes out now */
	log_warn("protection of VM %s PAUSED by the operator after epoch %llu: no checkpoints, "
		 "output goes out at once, the backup will not take over (remusctl resume ends it)",
		 r->vm.name, (unsigned long long)r->stats.last_acked_epoch);
}

/* Nothing in flight: tell the backup, release output once it knows. */
static void send_pause(struct replicator *r)
{
	if (!peer_link_up(&r->link) || !r->agent_operator) {
		pause_on(r, "no backup to tell");
		return;
	}
	if (link_push(r, FRAME_PAUSE, r->epoch, NULL, 0, NULL, NULL)) {
		link_drop_alive(r, "PAUSE could not be queued");
		return;
	}
	prot_set(&r->state, PROT_PART_PAUSE, PAUSE_SENT,
		 "epoch %llu acknowledged: telling the backup that protection pauses",
		 (unsigned long long)r->epoch);
}

char *operator_pause(struct replicator *r)
{
	if (prot_handing_over(&r->state) || prot_left_paused(&r->state))
		return reply(r, false, "a handover to the backup is under way or undecided "
			     "(state %s): pause refused", prot_name(&r->state));
	if (prot_pause(&r->state) == PAUSE_ON)
		return reply(r, true, "already paused");
	if (prot_paused(&r->state))
		return reply(r, true, "already pausing (%s)", pause_name(r));
	if (peer_link_up(&r->link) && !r->agent_operator)
		return reply(r, false, "the backup agent at %s does not know PAUSE (an older "
			     "version): it would take over from a stale replica; upgrade it, or "
			     "stop the replicator instead", r->cfg.backup.text);
	r->checkpoint_due = false;
	fine_timer_stop(r->loop, &r->epoch_timer);
	prot_set(&r->state, PROT_PART_PAUSE, PAUSE_DRAIN, "remusctl pause");
	if (!peer_link_up(&r->link))
		pause_on(r, "no backup connected");
	else if (!r->inflight)
		send_pause(r);
	else
		log_info("pause requested: waiting for epoch %llu to be acknowledged",
			 (unsigned long long)r->epoch);
	if (prot_pause(&r->state) == PAUSE_ON)
		return reply(r, true, "paused: no checkpoints, output is not held%s",
			     peer_link_up(&r->link) ? "" : " (the backup is not connected)");
	return reply(r, true, "pausing: the backup is told once epoch %llu is acknowledged",
		     (unsigned long long)r->epoch);
}

/* The operator resumes a VM that an undecided handover left stopped. */
static char *resume_left_paused(struct replicator *r)
{
	int rc = epoch_resume_vm(r);

	if (rc) {
		char *text = reply(r, false, "cannot resume VM %s: %s", r->vm.name,
				   qmp_last_error(r->qmp));
		if (rc == -EPIPE)
			replicator_primary_trouble(r, rc);
		return text;
	}
	prot_set(&r->state, PROT_PART_LEFT_PAUSED, 0, "remusctl resume: VM resumed here");
	protect_devices(r, false, 0); /* the primary goes on: its output is real */
	log_warn("operator resumed VM %s on the primary after an undecided handover; "
		 "reconnecting to backup %s for a full resync", r->vm.name, r->cfg.backup.text);
	replicator_reconnect(r);
	return reply(r, true, "VM %s resumed on the primary; reconnecting to the backup "
		     "(full resync)", r->vm.name);
}

char *operator_resume(struct replicator *r)
{
	enum pause_phase was = prot_pause(&r->state);

	if (prot_handing_over(&r->state))
		return reply(r, false, "a handover to the backup is under way (%s): wait for "
			     "its outcome", handover_name(r));
	if (prot_left_paused(&r->state))
		return resume_left_paused(r);
	if (was == PAUSE_OFF)
		return reply(r, true, "not paused");
	prot_set(&r->state, PROT_PART_PAUSE, PAUSE_OFF, "remusctl resume");
	if (was == PAUSE_DRAIN) {
		/* Nothing was released or told: carry on as before. */
		if (r->inflight)
			r->checkpoint_due = true;
		else
			epoch_arm_timer(r);
		return reply(r, true, "pause cancelled before it took effect");
	}
	if (!peer_link_up(&r->link)) {
		return reply(r, true, "resumed; the backup is not connected: a full sync "
			     "starts when it is");
	}
	if (!r->session_synced && prot_link(&r->state) == PROT_SYNCING) {
		/* This session's initial sync is under way (the pause held back
		 * only the checkpoints after it): it goes on, and its ack takes
		 * the first checkpoint. Starting it again would meet a backup
		 * that already holds part of it, and a delta resync's hashes
		 * would then skip pages the backup no longer holds as hashed. */
		log_info("protection of VM %s resumed: the initial sync goes on", r->vm.name);
		return reply(r, true, "resumed: the initial sync to the backup goes on");
	}
	if (!r->session_synced && link_sync_waits(r)) {
		/* the last hash starts it (link.c) */
		log_info("protection of VM %s resumed: the sync to the backup starts once its "
			 "delta resync hashes are in", r->vm.name);
		return reply(r, true, "resumed: the sync starts once the backup's hashes are in");
	}
	if (!r->session_synced) {
		log_info("protection of VM %s resumed: full sync to the backup", r->vm.name);
		epoch_start_sync(r);
		return reply(r, true, "resumed: full sync to the backup started");
	}
	/* Output waits from here for the first epoch after the pause, which
	 * the backup must commit before it arms its failover again. */
	protect_devices(r, true, r->epoch + 1);
	prot_set(&r->state, PROT_PART_LINK, PROT_SYNCING, "resumed: protected once the backup "
		 "commits epoch %llu", (unsigned long long)r->epoch + 1);
	log_info("protection of VM %s resumed: checkpoints from epoch %llu; protected once "
		 "the backup commits it", r->vm.name, (unsigned long long)r->epoch + 1);
	epoch_checkpoint(r);
	return reply(r, true, "resumed: checkpoints from epoch %llu", (unsigned long long)r->epoch);
}

/* --- failover ---------------------------------------------------------- */

/* Answer the waiting remusctl (if still there) and close its connection. */
static void answer_waiter(struct replicator *r, struct json_object *o)
{
	if (r->handover_fd >= 0) {
		control_reply(r->handover_fd, json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
		close(r->handover_fd);
		r->handover_fd = -1;
	}
	json_object_put(o);
}

static void handover_end(struct replicator *r, bool ok, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void handover_end(struct replicator *r, bool ok, const char *fmt, ...)
{
	struct json_object *o;
	char why[512];
	va_list ap;

	ev_timer_stop(r->loop, &r->handover_timer);
	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	prot_set(&r->state, PROT_PART_HANDOVER, HO_NONE, "%s", why);
	o = answer_text(r, ok, why);
	json_object_object_add(o, "outcome", json_object_new_string(
		ok ? "done" : prot_left_paused(&r->state) ? "unknown" : "failed"));
	answer_waiter(r, o);
}

static void final_checkpoint(struct replicator *r)
{
	int rc;

	prot_set(&r->state, PROT_PART_HANDOVER, HO_FINAL, "nothing in flight: the final checkpoint");
	rc = epoch_final_checkpoint(r);
	if (!rc) {
		r->handover_epoch = r->epoch;
		log_info("epoch %llu: final checkpoint of VM %s taken; the VM stays stopped "
			 "until the backup has it", (unsigned long long)r->epoch, r->vm.name);
		return;
	}
	if (!prot_handing_over(&r->state))
		return; /* the link went, and that ended it */
	handover_end(r, false, rc > 0 ? "VM %s is not running (stopped by someone else, or "
		     "shutting down): nothing to hand over" : "the final checkpoint of VM %s "
		     "failed (see the replicator's log): failover cancelled, the VM runs on "
		     "here", r->vm.name);
	if (!r->stopping && peer_link_up(&r->link) && !r->inflight)
		epoch_arm_timer(r);
}

static void send_handover(struct replicator *r)
{
	static char park[] = PROTO_HANDOVER_PARK;
	struct iovec iov = { .iov_base = park, .iov_len = strlen(park) };

	if (link_push(r, FRAME_HANDOVER, r->handover_epoch, r->handover_park ? &iov : NULL,
		      r->handover_park ? 1 : 0, NULL, NULL)) {
		/* The backup has not heard of it: the VM may run here again. */
		if (!epoch_resume_vm(r))
			epoch_arm_timer(r);
		handover_end(r, false, "HANDOVER could not be queued (out of memory): VM %s "
			     "resumed here", r->vm.name);
		return;
	}
	prot_set(&r->state, PROT_PART_HANDOVER, HO_WAIT_DONE,
		 "epoch %llu committed with VM %s stopped: HANDOVER sent, the backup %s",
		 (unsigned long long)r->handover_epoch, r->vm.name,
		 r->handover_park ? "keeps it as the VM's last state (park)" : "starts the VM");
}

static void on_handover_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct replicator *r = w->data;

	switch (prot_handover(&r->state)) {
	case HO_DRAIN:
		/* The ack will take the next checkpoint as usual. */
		r->checkpoint_due = true;
		handover_end(r, false, "epoch %llu was not acknowledged in time: failover "
			     "cancelled, VM %s runs on here, protected",
			     (unsigned long long)r->epoch, r->vm.name);
		break;
	case HO_FINAL:
		/* The backup has not been asked to take over: resume here. The
		 * final epoch stays in flight as an ordinary one. */
		r->checkpoint_due = true;
		if (epoch_resume_vm(r))
			log_err("VM %s could not be resumed after the cancelled failover", r->vm.name);
		handover_end(r, false, "the backup did not commit the final epoch %llu in time: "
			     "failover cancelled, VM %s resumed here",
			     (unsigned long long)r->handover_epoch, r->vm.name);
		break;
	case HO_WAIT_DONE: {
		/* Still starting the VM, or stuck: say so, keep waiting. */
		struct json_object *o = json_object_new_object();
		json_object_object_add(o, "ok", json_object_new_boolean(0));
		json_object_object_add(o, "outcome", json_object_new_string("pending"));
		json_object_object_add(o, "state", json_object_new_string(prot_name(&r->state)));
		json_object_object_add(o, "error", json_object_new_string(
			"the backup has not answered HANDOVER in time; it may still be starting "
			"the VM, which stays stopped here meanwhile: see remusctl status"));
		log_warn("handover of VM %s: no answer from the backup yet; still waiting", r->vm.name);
		answer_waiter(r, o);
		break;
	}
	case HO_NONE:
		break;
	}
}

static char *handover_start(struct replicator *r, int fd, unsigned timeout_ms, bool park)
{
	if (prot_handing_over(&r->state))
		return reply(r, false, "a failover is already under way (%s)", handover_name(r));
	if (prot_left_paused(&r->state))
		return reply(r, false, "an earlier handover left VM %s stopped with an unknown "
			     "outcome: check the backup, then remusctl resume or stop the "
			     "replicator", r->vm.name);
	if (prot_paused(&r->state))
		return reply(r, false, "protection is paused, so the backup's replica is stale: "
			     "remusctl resume first, then fail over once it is protected");
	if (!peer_link_up(&r->link) || !prot_is_protected(&r->state))
		return reply(r, false, "VM %s is %s, so the backup holds no current checkpoint: "
			     "failover refused", r->vm.name, prot_name(&r->state));
	if (!r->agent_operator)
		return reply(r, false, "the backup agent at %s cannot take a handover (an older "
			     "version): upgrade it", r->cfg.backup.text);
	if (park && !r->agent_park)
		return reply(r, false, "the backup agent at %s does not keep a parked VM: its "
			     "pair's file must say [backup] takeover = manual (a cluster manager "
			     "promotes it), and it must know park (this version)",
			     r->cfg.backup.text);
	if (r->vm_shutdown)
		return reply(r, false, "VM %s is shutting down", r->vm.name);
	r->handover_fd = fd;
	r->handover_park = park;
	ev_timer_init(&r->handover_timer, on_handover_timer, timeout_ms / 1000.0, 0);
	r->handover_timer.data = r;
	ev_timer_start(r->loop, &r->handover_timer);
	fine_timer_stop(r->loop, &r->epoch_timer);
	prot_set(&r->state, PROT_PART_HANDOVER, HO_DRAIN, "remusctl %s",
		 park ? "park" : "failover");
	log_info("planned %s of VM %s to %s requested (%u ms)%s", park ? "park" : "failover",
		 r->vm.name,
		 r->cfg.backup.text, timeout_ms, r->inflight ? ": waiting for the epoch in flight" : "");
	if (!r->inflight)
		final_checkpoint(r);
	return NULL;
}

char *operator_failover(struct replicator *r, int fd, unsigned timeout_ms)
{
	return handover_start(r, fd, timeout_ms, false);
}

char *operator_park(struct replicator *r, int fd, unsigned timeout_ms)
{
	return handover_start(r, fd, timeout_ms, true);
}

/* --- events from the pipeline and the link ------------------------------ */

bool operator_after_ack(struct replicator *r, uint64_t epoch)
{
	if (prot_pause(&r->state) == PAUSE_DRAIN) {
		send_pause(r);
		return true;
	}
	if (prot_paused(&r->state))
		return true;
	switch (prot_handover(&r->state)) {
	case HO_DRAIN:
		final_checkpoint(r);
		return true;
	case HO_FINAL:
		if (epoch == r->handover_epoch)
			send_handover(r);
		return true;
	case HO_WAIT_DONE:
		return true;
	case HO_NONE:
		break;
	}
	return false;
}

bool operator_on_connected(struct replicator *r)
{
	if (!prot_paused(&r->state))
		return false;
	log_info("protection of VM %s is paused: the backup's initial sync waits for "
		 "remusctl resume", r->vm.name);
	/* The backup of this new session must not take over either. */
	if (r->agent_operator && link_push(r, FRAME_PAUSE, 0, NULL, 0, NULL, NULL))
		log_warn("PAUSE could not be queued for the new backup session");
	return true;
}

void operator_on_backup_lost(struct replicator *r, const char *why)
{
	if (prot_paused(&r->state))
		/* output goes out anyway: no backup */
		prot_set(&r->state, PROT_PART_PAUSE, PAUSE_ON, "backup lost: %s", why);
	switch (prot_handover(&r->state)) {
	case HO_NONE:
		return;
	case HO_DRAIN:
		handover_end(r, false, "backup lost (%s) before the final checkpoint: failover "
			     "cancelled, VM %s runs on here, unprotected", why, r->vm.name);
		return;
	case HO_FINAL:
	case HO_WAIT_DONE:
		if (!r->vm_stopped_by_us) {
			/* The final capture failed and the VM runs again. */
			handover_end(r, false, "backup lost (%s) during the final checkpoint: "
				     "failover cancelled, VM %s runs on here, unprotected",
				     why, r->vm.name);
			return;
		}
		/* Our next barrier must not `cont` it either. */
		r->vm_stopped_by_us = false;
		prot_set(&r->state, PROT_PART_LEFT_PAUSED, 1, "backup lost during the handover: %s",
			 why);
		log_err("backup lost (%s) during the handover of VM %s at epoch %llu: the backup "
			"may be running the VM, or takes over as it lost its primary; VM %s stays "
			"PAUSED here, its last output held, so that it never runs twice. Check the "
			"backup: if it does not run the VM, remusctl resume resumes it here; if it "
			"does, stop this replicator and quit this QEMU (pid %d)", why, r->vm.name,
			(unsigned long long)r->handover_epoch, r->vm.name, (int)r->vm.pid);
		handover_end(r, false, "backup lost (%s) before it answered HANDOVER: it may be "
			     "running VM %s; the VM is left paused here (remusctl resume resumes "
			     "it if the backup does not run it)", why, r->vm.name);
		return;
	}
}


/* QMP quit (a libvirt domain: destroyed through libvirt, so that libvirt
 * knows why it stopped), then wait (bounded) until the process is gone. */
static int quit_primary(struct replicator *r)
{
	int rc = r->virt ? virt_destroy(r->virt) :
			   qmp_execute(r->qmp, "quit", NULL, NULL, QUIT_TIMEOUT_MS);

	/* QEMU answers quit and resets the connection: -EPIPE is success. */
	if (rc && rc != -EPIPE && r->virt) {
		return rc; /* logged */
	} else if (rc && rc != -EPIPE) {
		log_err("QMP quit of QEMU pid %d failed: %s", (int)r->vm.pid, qmp_last_error(r->qmp));
		return rc;
	}
	for (int i = 0; i < QUIT_WAIT_ROUNDS; i++) {
		if (proc_exited(r->vm.pid))
			return 0;
		usleep(50000);
	}
	log_err("QEMU pid %d has not exited 5 s after quit", (int)r->vm.pid);
	return -ETIMEDOUT;
}

/* A park in a pair whose roles move: the QEMU stays, paused at the final
 * epoch, for the agent we become (parked.h). 0, or the QEMU must quit. A
 * VM the agent restored here quits: it runs on the state directory's
 * files, which it keeps locked, and the agent we become needs them. */
static int keep_parked(struct replicator *r)
{
	struct parked_vm p = { .pid = r->vm.pid, .generation = r->generation,
			       .epoch = r->handover_epoch };
	int rc;

	if (!r->cfg.host || r->virt ||
	    (r->cfg.state_qmp_path && !strcmp(r->cfg.qmp_path, r->cfg.state_qmp_path)))
		return -ENOTSUP;
	snprintf(p.qmp, sizeof(p.qmp), "%s", r->cfg.qmp_path);
	rc = proc_starttime(r->vm.pid, &p.starttime);
	if (!rc)
		rc = parked_save(r->cfg.host->state_dir, &p);
	if (rc)
		log_warn("cannot record the parked VM in %s (%s): its QEMU quits instead",
			 r->cfg.host->state_dir, strerror(-rc));
	else
		log_info("QEMU pid %d stays here, paused at epoch %llu: it resumes if this host is "
			 "promoted again before the VM runs anywhere else", (int)r->vm.pid,
			 (unsigned long long)r->handover_epoch);
	return rc;
}

static void on_handover_done(struct replicator *r, const struct frame_hdr *h,
			     const uint8_t *payload)
{
	bool kept = false;
	struct handover_done d = { 0 };
	struct json_object *o;
	int rc;

	/* a park starts nothing there: no QEMU pid to read */
	if (!r->handover_park && proto_parse_handover_done(payload, h->len, &d))
		log_warn("HANDOVER_DONE from the backup has a malformed payload (%u bytes)", h->len);
	if (r->handover_park)
		log_info("park complete: the backup keeps VM %s at epoch %llu, its last state",
			 r->vm.name, (unsigned long long)r->handover_epoch);
	else
		log_info("handover complete: VM %s runs on the backup from epoch %llu (QEMU pid "
			 "%u there, started in %u ms); quitting the primary QEMU (pid %d)",
			 r->vm.name, (unsigned long long)r->handover_epoch, d.qemu_pid,
			 d.restore_ms, (int)r->vm.pid);
	ev_io_stop(r->loop, &r->qmp_watch);
	kept = r->handover_park && !keep_parked(r);
	rc = kept ? 0 : quit_primary(r);
	prot_set(&r->state, PROT_PART_HANDOVER, HO_NONE, "HANDOVER_DONE: the backup %s",
		 r->handover_park ? "keeps the VM parked" : "runs the VM");
	ev_timer_stop(r->loop, &r->handover_timer);
	o = json_object_new_object();
	json_object_object_add(o, "ok", json_object_new_boolean(1));
	json_object_object_add(o, "outcome", json_object_new_string("done"));
	json_object_object_add(o, "epoch", json_object_new_uint64(r->handover_epoch));
	json_object_object_add(o, "backup_qemu_pid", json_object_new_int64(d.qemu_pid));
	json_object_object_add(o, "restore_ms", json_object_new_int64(d.restore_ms));
	json_object_object_add(o, "primary_qemu_quit", json_object_new_boolean(rc == 0 && !kept));
	json_object_object_add(o, "primary_qemu_paused", json_object_new_boolean(kept));
	json_object_object_add(o, "parked", json_object_new_boolean(r->handover_park));
	json_object_object_add(o, "message", json_object_new_string(
		r->handover_park ? (kept ? "the backup keeps the VM's last state; the primary QEMU "
				    "stays here, paused, in case this host is promoted again" :
				    rc ? "the backup keeps the VM's last state; the primary QEMU "
				    "did not quit (it stays stopped): kill it" :
				    "the backup keeps the VM's last state; the primary QEMU has "
				    "quit") :
		rc ? "VM runs on the backup; the primary QEMU did not quit (it stays stopped): "
		     "kill it" : "VM runs on the backup; the primary QEMU has quit"));
	answer_waiter(r, o);
	if (rc)
		log_err("VM %s %s on the backup, but its stopped primary QEMU pid %d did not "
			"quit: kill it", r->vm.name, r->handover_park ? "waits" : "runs",
			(int)r->vm.pid);
	else
		log_info("primary QEMU pid %d %s; VM %s now %s on the backup: exiting",
			 (int)r->vm.pid, kept ? "is parked" : "has quit", r->vm.name,
			 r->handover_park ? "waits" : "lives");
	/* with QEMU gone, this host can be the new primary's backup */
	r->become_backup = r->cfg.host && !rc;
	replicator_leave(r, rc ? 1 : 0);
}

static void on_handover_failed(struct replicator *r, const struct frame_hdr *h,
			       const uint8_t *payload)
{
	char why[200];
	int rc;

	snprintf(why, sizeof(why), "%.*s", (int)(h->len < 180 ? h->len : 180),
		 (const char *)payload);
	rc = epoch_resume_vm(r);
	log_err("HANDOVER FAILED: the backup did not start VM %s (%s); %s", r->vm.name, why,
		rc ? "and the VM cannot be resumed here" : "VM resumed here, still protected");
	handover_end(r, false, "the backup did not start the VM: %s; VM %s %s", why, r->vm.name,
		     rc ? "could not be resumed here either" : "resumed here, still protected");
	if (rc)
		replicator_primary_trouble(r, rc);
	else
		epoch_arm_timer(r);
}

void operator_on_frame(struct replicator *r, const struct frame_hdr *h, const uint8_t *payload)
{
	switch (h->type) {
	case FRAME_PAUSE_ACK:
		if (prot_pause(&r->state) == PAUSE_SENT)
			pause_on(r, "the backup answered PAUSE");
		else
			log_debug("PAUSE_ACK while %s: nothing to do", pause_name(r));
		return;
	case FRAME_HANDOVER_DONE:
	case FRAME_HANDOVER_FAILED:
		if (prot_handover(&r->state) != HO_WAIT_DONE) {
			log_warn("backup sent %s, but no handover is waiting for it: ignored",
				 frame_type_name(h->type));
			return;
		}
		if (h->type == FRAME_HANDOVER_DONE)
			on_handover_done(r, h, payload);
		else
			on_handover_failed(r, h, payload);
		return;
	}
}

void operator_status(const struct replicator *r, struct json_object *o)
{
	json_object_object_add(o, "pause_state", json_object_new_string(pause_name(r)));
	json_object_object_add(o, "handover", json_object_new_string(handover_name(r)));
	json_object_object_add(o, "vm_left_paused",
			       json_object_new_boolean(prot_left_paused(&r->state)));
	json_object_object_add(o, "backup_operator", json_object_new_boolean(r->agent_operator));
}

void operator_close(struct replicator *r)
{
	if (r->handover_fd >= 0)
		handover_end(r, false, "the replicator stopped before the handover of VM %s "
			     "finished", r->vm.name ? r->vm.name : "?");
	if (r->loop)
		ev_timer_stop(r->loop, &r->handover_timer);
}
