/* The agent's event loop: one primary at a time; stage, verify, commit and
 * acknowledge its epochs; restore the VM when the primary is lost. */
#include "agent.h"

#include "clock.h"
#include "log.h"
#include "netaddr.h"
#include "notify.h"
#include "restore_domain.h"
#include "restore.h"
#include "sighup.h"
#include "virt.h"

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

#define HANDOVER_FLUSH_MS 2000

const char *agent_vm_name(const struct agent *a)
{
	const char *n = a->replica.hello ?
		json_object_get_string(json_object_object_get(a->replica.hello, "name")) : NULL;

	return n ? n : "?";
}

/* The one place the state changes: logged as "old -> new (reason)". The
 * hooks keep their own events (notify), which name the same moments. A
 * transition outside the table (agent_state.c) is a bug of ours: logged
 * and refused, so that status never shows a state the agent cannot be in
 * (the integration tests fail on any BUG line). */
void agent_set_state(struct agent *a, enum agent_state st, const char *fmt, ...)
{
	enum agent_state old = a->state;
	char reason[sizeof(a->state_reason)];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(reason, sizeof(reason), fmt, ap);
	va_end(ap);
	if (!agent_state_may(old, st)) {
		log_err("BUG: VM %s: the agent may not go from %s to %s: refused (%s)",
			a->vm_name[0] ? a->vm_name : "?", agent_state_name(old),
			agent_state_name(st), reason);
		return;
	}
	memcpy(a->state_reason, reason, sizeof(reason));
	if (st == AGENT_PAUSED)
		a->session_paused = true;
	else if (st == AGENT_SYNCING || st == AGENT_BACKUP)
		a->session_paused = false;
	if (old == st && a->state_since_ms > 0)
		return; /* the same state, a newer reason */
	a->state = st;
	a->state_since_ms = mono_ms();
	if (a->state_since_ms <= 0)
		a->state_since_ms = 1e-3; /* "started" even at the clock's start */
	if (old == st) /* the first: agent_run */
		log_info("VM %s: starts %s (%s)", a->vm_name[0] ? a->vm_name : "?",
			 agent_state_name(st), a->state_reason);
	else
		log_info("VM %s: %s -> %s (%s)", a->vm_name[0] ? a->vm_name : "?",
			 agent_state_name(old), agent_state_name(st), a->state_reason);
}

/* The common part of every hook event of this agent. */
void agent_hook_event(const struct agent *a, struct hook_event *ev, const char *event,
		      const char *reason)
{
	*ev = (struct hook_event){
		.pair = a->cfg.pair_name ? a->cfg.pair_name : a->vm_name,
		.vm = a->vm_name,
		.event = event,
		.role = "backup",
		.epoch = a->replica.session_epoch,
		.peer = a->peer,
		.peer_host = a->peer_host[0] ? a->peer_host : NULL,
		.reason = reason,
	};
}

void agent_notify(struct agent *a, const char *event, const char *reason)
{
	struct hook_event ev;

	agent_hook_event(a, &ev, event, reason);
	hook_notify(&a->hooks, &ev);
}

/* The loop is about to stand still (a fence, a restore) or to end: answer
 * whoever asked meanwhile, in the state we are in now. */
void agent_answer_waiting(struct agent *a)
{
	control_socket_serve_pending(&a->control);
}

/* A checkpoint is committed in the state dir: what status says of it. */
static void replica_committed(struct agent *a, uint64_t epoch)
{
	a->replica_known = true;
	a->replica_epoch = epoch;
	a->replica_generation = a->replica.generation;
	a->replica_committed_ms = unix_ms();
	a->replica_committed_boot_ms = boot_ms();
}

static void send_on(struct peer_link *l, unsigned type, uint64_t epoch, const char *text)
{
	char *copy = text ? strdup(text) : NULL;
	struct iovec iov = { .iov_base = copy, .iov_len = copy ? strlen(copy) : 0 };

	if (!text || copy)
		peer_link_push(l, type, epoch, &iov, copy ? 1 : 0, copy, NULL);
}

/* To the primary, if one is connected. */
static void send_frame(struct agent *a, unsigned type, uint64_t epoch, const char *text)
{
	if (a->primary)
		send_on(a->primary, type, epoch, text);
}

/* A long commit holds the loop (replica.pulse, journal_view.pulse): the
 * primary, which hears nothing from us meanwhile, would drop the link for
 * a dead backup after its timeout, and the session would start over, with
 * the same long commit at its end. So a heartbeat goes out now and then
 * meanwhile, straight onto the socket. */
static void commit_pulse(void *opaque)
{
	struct agent *a = opaque;
	struct peer_link *p = a->primary;

	agent_loop_ran(a);
	if (!p || !peer_link_up(p) || mono_ms() - a->pulse_ms < a->cfg.heartbeat_ms)
		return;
	a->pulse_ms = mono_ms();
	if (!p->out.frames)
		send_frame(a, FRAME_HEARTBEAT, a->replica.session_epoch, NULL);
	peer_link_pulse(p);
}

bool agent_loop_ran(struct agent *a)
{
	struct takeover_deadline *d = &a->deadline;
	double now = boot_ms();
	bool stalled = takeover_deadline_tick(d, now);

	/* with no link to catch up on, there is nothing to catch up on */
	takeover_deadline_drained(d, a->primary ? a->primary->drained_ms : now);
	/* without a primary it changes nothing worth a line */
	if (stalled && a->primary)
		log_warn("this agent's loop did not run for %.0f ms (long work of its own, or the "
			 "process stopped, suspended or starved): the primary heard nothing from it "
			 "meanwhile, and what the primary sent then is read only now",
			 now - d->gap_from_ms);
	return stalled;
}

void agent_drop_primary(struct agent *a)
{
	if (a->primary) {
		agent_loop_ran(a);
		a->primary_heard_ms = takeover_deadline_anchor(&a->deadline,
							       a->primary->last_rx_ms);
		peer_link_close(a->primary);
	}
	a->primary = NULL;
	replica_end_session(&a->replica);
}

/* We cannot read the stream any more, but the primary may well be alive:
 * drop it and give it the heartbeat timeout to come back before taking
 * over (a reconnecting primary says HELLO and resyncs). */
void agent_lose_stream(struct agent *a, const char *why)
{
	log_warn("primary %s: %s; dropped, waiting %u ms for it to reconnect",
		 a->peer, why, a->cfg.timeout_ms);
	agent_set_state(a, AGENT_RECONNECTING, "%s: waiting %u ms for the primary to reconnect", why,
		  a->cfg.timeout_ms);
	agent_drop_primary(a);
	/* from now: a long commit may have held the loop before */
	a->grace_until_ms = boot_ms() + a->cfg.timeout_ms;
}

/* Tell a peer that is not our primary why it is refused (HELLO_REPLY, in
 * our protocol version), then close once that is written. */
static void refuse_peer(struct agent *a, struct peer_link *l, const char *why)
{
	struct json_object *o = json_object_new_object();

	json_object_object_add(o, "ok", json_object_new_boolean(0));
	json_object_object_add(o, "error", json_object_new_string(why));
	log_err("refusing primary %s: %s", l->peer, why);
	send_on(l, FRAME_HELLO_REPLY, 0, json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
	json_object_put(o);
	peer_link_close_when_sent(l);
}

/* How long after it last heard from the primary this agent may restore the
 * VM: its timeout, plus the fence's limit. The primary holds output at
 * least that long on a silent link (see its set_backup_silence). */
unsigned agent_takeover_after_ms(const struct agent *a)
{
	if (a->cfg.takeover_manual)
		return a->cfg.takeover_window_ms; /* a lost primary's replica is ready that long */
	return a->cfg.timeout_ms + (a->cfg.fence_cmd ? a->cfg.fence_timeout_ms : 0);
}

/* The primary's host, which the fence command powers off: one of the
 * file's other hosts, or none named (a replicator given --backup). */
static int pair_host_check(const struct agent *a, struct json_object *vm, char *err,
			   size_t errlen)
{
	struct json_object *host;
	const struct config_host *h;

	if (!json_object_object_get_ex(vm, "host", &host))
		return 0;
	h = json_object_is_type(host, json_type_string) ?
		config_host_find(&a->cfg.file, json_object_get_string(host)) : NULL;
	if (h && h != a->cfg.host)
		return 0;
	snprintf(err, errlen, "the primary says it runs on host '%.64s', which is %s of %s",
		 json_object_get_string(host), h ? "this host, not another" :
		 "none of the [host] sections", a->cfg.file.path);
	return -EPERM;
}

/* A pair whose roles move runs the VM its file names on either host: a
 * libvirt domain of that name ([vm] domain), or a plain QEMU ([vm] qmp).
 * Another would be restored here, then taken for absent by the
 * replicator this daemon becomes, and run unprotected. */
static int pair_vm_check(const struct agent *a, struct json_object *vm, char *err,
			 size_t errlen)
{
	const char *domain = a->cfg.file.vm_domain;
	struct json_object *name;
	bool libvirt = json_object_object_get_ex(vm, "libvirt_xml", NULL);

	if (!a->cfg.host)
		return 0;
	if (domain && (!libvirt || !json_object_object_get_ex(vm, "name", &name) ||
		       !json_object_is_type(name, json_type_string) ||
		       strcmp(json_object_get_string(name), domain))) {
		snprintf(err, errlen, "this pair's VM is libvirt domain %s ([vm] domain of %s), "
			 "not the one this primary replicates", domain, a->cfg.file.path);
		return -EPERM;
	}
	if (!domain && libvirt) {
		snprintf(err, errlen, "this pair's VM is a plain QEMU ([vm] qmp of %s), not a "
			 "libvirt domain", a->cfg.file.path);
		return -EPERM;
	}
	return pair_host_check(a, vm, err, errlen);
}

/* Is this VM one this backup would run? Refused now, with the option
 * named, before the state dir is touched, not when the primary dies. */
static int check_vm(struct agent *a, const char *text, char *err, size_t errlen)
{
	struct json_object *vm = json_tokener_parse(text);
	int rc = vm ? pair_vm_check(a, vm, err, errlen) : 0;

	if (!rc && vm)
		rc = restore_check_hello(&a->cfg.restore, vm, err, errlen);
	json_object_put(vm);
	return rc;
}

/* The HELLO's "host", checked by pair_host_check. */
static void peer_host_name(struct agent *a)
{
	struct json_object *host;

	a->peer_host[0] = 0;
	if (a->cfg.host && json_object_object_get_ex(a->replica.hello, "host", &host))
		snprintf(a->peer_host, sizeof(a->peer_host), "%s", json_object_get_string(host));
}

/* An authenticated peer's HELLO: it becomes the primary, or is told why
 * not. */
static void on_hello(struct agent *a, struct peer_link *l, const uint8_t *payload, uint32_t len)
{
	char err[256] = "out of memory", *text;
	char reply[1024];
	const char *name;
	int rc;

	if (a->primary) {
		/* One primary per agent: a second one would fight the first. */
		refuse_peer(a, l, "busy: another primary is connected");
		return;
	}
	text = strndup((const char *)payload, len);
	rc = text ? check_vm(a, text, err, sizeof(err)) : -ENOMEM;
	if (!rc)
		rc = replica_begin_session(&a->replica, text, l->identity, &a->cfg.limits, err,
					   sizeof(err));
	free(text);
	if (rc) {
		refuse_peer(a, l, err);
		return;
	}
	a->primary = l;
	peer_link_established(l);
	snprintf(a->peer, sizeof(a->peer), "%s", l->peer);
	peer_host_name(a);
	a->backup_notified = false;
	name = json_object_get_string(json_object_object_get(a->replica.hello, "name"));
	snprintf(a->vm_name, sizeof(a->vm_name), "%s", name ? name : "?");
	a->grace_until_ms = 0; /* the primary is back */
	agent_ready_clear(a); /* its new session decides */
	agent_parked_discard(a, "a primary connected: the VM runs there");
	log_info("primary %s (%s, %s): replicating VM %s (%llu MiB, %u disk%s); initial sync "
		 "started", a->peer, l->identity, l->session, agent_vm_name(a),
		 (unsigned long long)(a->replica.ram_size >> 20), a->replica.ndisks,
		 a->replica.ndisks == 1 ? "" : "s");
	agent_set_state(a, AGENT_SYNCING, "primary %s (%s) connected: initial sync", a->peer, l->identity);
	notify_status("VM %s from %s: syncing", agent_vm_name(a), a->peer);
	snprintf(reply, sizeof(reply), "{\"ok\":true,\"features\":[\"" PROTO_FEATURE_OPERATOR
		 "\",\"" PROTO_FEATURE_DISK "\",\"" PROTO_FEATURE_VERIFY
		 "\",\"" PROTO_FEATURE_VERIFY_DISK "\",\"" PROTO_FEATURE_PAGES_LZ4
		 "\"%s],\"takeover_after_ms\":%u,"
		 "\"generation\":%llu",
		 /* a park is kept only where a cluster manager promotes */
		 a->cfg.takeover_manual ? ",\"" PROTO_FEATURE_PARK "\"" : "",
		 agent_takeover_after_ms(a), (unsigned long long)a->replica.generation);
	if (a->replica.delta)
		snprintf(reply + strlen(reply), sizeof(reply) - strlen(reply),
			 ",\"ram_hashes\":%llu", (unsigned long long)a->replica.npages);
	agent_add_disk_hashes(&a->replica, reply, sizeof(reply));
	snprintf(reply + strlen(reply), sizeof(reply) - strlen(reply), "%s}",
		 a->replica.disk_resume ? ",\"disk_resume\":true" : "");
	send_frame(a, FRAME_HELLO_REPLY, 0, reply);
	if (a->replica.delta || replica_disk_base_any(&a->replica))
		agent_delta_start(a);
}

#define NACK_REASON_MAX 199 /* bytes: docs/PROTOCOL.md, "Limits" */

/* false: the stream is dropped */
static bool on_epoch_end(struct agent *a, const struct frame_hdr *h, const uint8_t *payload,
			 bool payload_ok)
{
	char why[300];
	double t0 = mono_ms();
	bool was_paused = a->session_paused;

	if (replica_end_epoch(&a->replica, h, payload, payload_ok, why, sizeof(why))) {
		if (a->replica.copy_lost) {
			/* A NACK would have the epoch sent again onto a copy
			 * that is not there: the primary starts a new session. */
			a->copies_lost++;
			log_err("epoch %llu not committed: %s; check this host's storage (%u "
				"session%s in a row lost their initial copy)",
				(unsigned long long)h->epoch, why, a->copies_lost,
				a->copies_lost == 1 ? "" : "s");
			agent_lose_stream(a, "the initial copy did not reach this host's storage");
			return false;
		}
		log_warn("epoch %llu discarded: %s; replica stays at epoch %llu",
			 (unsigned long long)h->epoch, why,
			 (unsigned long long)a->replica.session_epoch);
		why[NACK_REASON_MAX] = 0;
		send_frame(a, FRAME_NACK, h->epoch, why);
		return true;
	}
	if (h->epoch > 0) {
		ring_add(&a->commit_ms, mono_ms() - t0);
		replica_committed(a, h->epoch);
		a->copies_lost = 0;
	}
	if (h->epoch > 0 && was_paused)
		log_info("epoch %llu committed after the pause: VM %s is protected again, "
			 "failover armed", (unsigned long long)h->epoch, agent_vm_name(a));
	if (h->epoch > 0 && a->state != AGENT_BACKUP)
		agent_set_state(a, AGENT_BACKUP, was_paused ? "epoch %llu committed after the pause" :
			  "epoch %llu committed: failover armed", (unsigned long long)h->epoch);
	/* Epochs commit many times a second: the manager hears of one a second. */
	if (h->epoch > 0 && (a->replica.commits == 1 || mono_ms() - a->status_at_ms >= 1000)) {
		a->status_at_ms = mono_ms();
		notify_status("VM %s from %s: protected, epoch %llu committed", agent_vm_name(a),
			      a->peer, (unsigned long long)h->epoch);
	}
	if (h->epoch == 0)
		log_info("initial sync complete");
	else if (a->replica.commits == 1 || h->epoch % 100 == 0)
		log_info("epoch %llu committed", (unsigned long long)h->epoch);
	else
		log_debug("epoch %llu committed", (unsigned long long)h->epoch);
	send_frame(a, FRAME_ACK, h->epoch, NULL);
	if (a->replica.session_committed && !a->backup_notified) {
		a->backup_notified = true;
		agent_notify(a, "backup", "primary connected, first checkpoint committed");
	}
	return true;
}

static void on_pause(struct agent *a, const struct frame_hdr *h)
{
	if (!a->session_paused)
		log_warn("primary %s PAUSED protection of VM %s: the replica stays at epoch %llu "
			 "and will not be restored if the primary is lost, until a checkpoint "
			 "commits after it resumes", a->peer, agent_vm_name(a),
			 (unsigned long long)a->replica.session_epoch);
	agent_set_state(a, AGENT_PAUSED, "the operator paused protection on the primary: replica stays "
		  "at epoch %llu, no failover", (unsigned long long)a->replica.session_epoch);
	notify_status("VM %s from %s: paused by the operator (epoch %llu)", agent_vm_name(a), a->peer,
		      (unsigned long long)a->replica.session_epoch);
	send_frame(a, FRAME_PAUSE_ACK, h->epoch, NULL);
}

/* Why a HANDOVER or a park at epoch cannot be taken, or NULL. */
static const char *handover_refusal_common(const struct agent *a, uint64_t epoch, bool ok,
					   char *buf, size_t len)
{
	if (!ok)
		return "HANDOVER frame: payload checksum mismatch";
	if (!a->replica.session_committed)
		return "no checkpoint of this session is committed";
	if (a->replica.staging) {
		snprintf(buf, len, "epoch %llu is still being received",
			 (unsigned long long)a->replica.stage_epoch);
		return buf;
	}
	if (epoch != a->replica.session_epoch) {
		snprintf(buf, len, "handover at epoch %llu, but the replica holds epoch %llu",
			 (unsigned long long)epoch, (unsigned long long)a->replica.session_epoch);
		return buf;
	}
	if (a->session_paused)
		return "protection is paused";
	return NULL;
}

/* Why a HANDOVER (the VM to run here now) cannot be taken, or NULL. */
static const char *handover_refusal(const struct agent *a, uint64_t epoch, bool ok,
				    char *buf, size_t len)
{
	const char *why = handover_refusal_common(a, epoch, ok, buf, len);

	if (why)
		return why;
	if (a->cfg.no_failover)
		return "this agent runs with --no-failover";
	if (a->cfg.takeover_manual)
		return "this agent's pair has takeover = manual: the cluster manager moves the VM "
		       "(with Pacemaker: crm_resource --move), not remusctl failover";
	return NULL;
}

/* HANDOVER's payload "park" (PROTO_HANDOVER_PARK): the primary stops its
 * VM at a committed epoch and does not run it again (a cluster manager's
 * demote); the VM resumes from this replica when this host is promoted. */
static bool is_park(const struct frame_hdr *h, const uint8_t *payload)
{
	size_t n = strlen(PROTO_HANDOVER_PARK);

	return h->len == n && !memcmp(payload, PROTO_HANDOVER_PARK, n);
}

static void on_park(struct agent *a, const struct frame_hdr *h)
{
	char buf[200];
	const char *why = NULL;
	struct handover_done d = { 0 };
	uint8_t *payload;
	struct iovec iov;

	if (!a->cfg.takeover_manual)
		why = "park needs takeover = manual on the backup (a cluster manager promotes it)";
	else
		why = handover_refusal_common(a, h->epoch, true, buf, sizeof(buf));
	if (why) {
		log_err("park of VM %s refused: %s", agent_vm_name(a), why);
		send_frame(a, FRAME_HANDOVER_FAILED, h->epoch, why);
		return;
	}
	log_info("primary %s parked VM %s at epoch %llu: its QEMU stops there, the replica here "
		 "is the VM's last state", a->peer, agent_vm_name(a), (unsigned long long)h->epoch);
	agent_ready_parked(a, h->epoch);
	/* The queue owns the payload: it may outlive this call. */
	payload = malloc(PROTO_HANDOVER_DONE_SIZE);
	if (!payload)
		return; /* no answer: the primary's timer gives up and resumes */
	proto_encode_handover_done(payload, &d);
	iov = (struct iovec){ .iov_base = payload, .iov_len = PROTO_HANDOVER_DONE_SIZE };
	peer_link_push(a->primary, FRAME_HANDOVER_DONE, h->epoch, &iov, 1, payload, NULL);
}

/* The primary stopped its VM at a committed epoch: start it here, exactly
 * as a failover would, and say how it went. The primary's QEMU stays
 * stopped until it hears DONE, so no fencing is needed. False when the
 * agent is done (the VM runs here). */
static bool on_handover(struct agent *a, const struct frame_hdr *h, bool ok)
{
	char buf[200];
	const char *why = handover_refusal(a, h->epoch, ok, buf, sizeof(buf));
	struct restore_result res;
	struct handover_done d;
	uint8_t *payload;
	struct iovec iov;
	long long asked_at = unix_ms();
	int rc;

	if (why) {
		log_err("handover of VM %s refused: %s", agent_vm_name(a), why);
		send_frame(a, FRAME_HANDOVER_FAILED, h->epoch, why);
		return true;
	}
	log_info("primary %s hands VM %s over at epoch %llu (its QEMU is stopped): restoring "
		 "it here", a->peer, agent_vm_name(a), (unsigned long long)h->epoch);
	test_failover_stop(a);
	notify_status("VM %s: taking over from %s", agent_vm_name(a), a->peer);
	agent_set_state(a, AGENT_RESTORING, "planned handover at epoch %llu: restoring",
		  (unsigned long long)h->epoch);
	agent_answer_waiting(a);
	rc = restore_vm(&a->cfg.restore, &res);
	/* The loop stood still while QEMU started: that was not the
	 * primary's silence. */
	a->primary->last_rx_ms = boot_ms();
	if (rc) {
		snprintf(buf, sizeof(buf), "restoring the VM on the backup failed (%s); see the "
			 "agent's log", strerror(-rc));
		log_err("HANDOVER FAILED: %s; the primary resumes VM %s, replica kept", buf,
			agent_vm_name(a));
		notify_status("VM %s from %s: handover failed, protected again", agent_vm_name(a), a->peer);
		agent_set_state(a, AGENT_BACKUP, "handover failed (%s): the primary resumes the VM", buf);
		send_frame(a, FRAME_HANDOVER_FAILED, h->epoch, buf);
		return true;
	}
	d = (struct handover_done){ .qemu_pid = (uint32_t)res.qemu_pid,
				    .restore_ms = (uint32_t)res.total_ms };
	/* The queue owns the payload: it may outlive this call. */
	payload = malloc(PROTO_HANDOVER_DONE_SIZE);
	if (payload) {
		proto_encode_handover_done(payload, &d);
		iov = (struct iovec){ .iov_base = payload, .iov_len = PROTO_HANDOVER_DONE_SIZE };
		if (!peer_link_push(a->primary, FRAME_HANDOVER_DONE, h->epoch, &iov, 1, payload,
				    NULL))
			peer_link_flush_for(a->primary, HANDOVER_FLUSH_MS);
	}
	log_info("handover complete: VM %s running from epoch %llu as QEMU pid %d (copy %.0f "
		 "ms, start %.0f ms, load %.0f ms, total %.0f ms); %s%s, serial %s/serial.log",
		 agent_vm_name(a), res.epoch, (int)res.qemu_pid, res.copy_ms, res.start_ms,
		 res.load_ms, res.total_ms, res.libvirt_domain[0] ? "libvirt domain " : "QMP ",
		 res.libvirt_domain[0] ? res.libvirt_domain : res.qmp_path, a->cfg.state_dir);
	notify_status("handover done: VM running as QEMU pid %d", (int)res.qemu_pid);
	a->master_pid = (int)res.qemu_pid;
	agent_become_primary(a, &res);
	agent_set_state(a, AGENT_MASTER, "planned handover: VM restored from epoch %llu as QEMU pid %d; "
		  "%s", res.epoch, (int)res.qemu_pid, a->become_primary ?
		  "protecting it to the other host next" : "the agent exits");
	agent_notify_master(a, &res, asked_at, 0, "planned handover: the VM runs here");
	/* Nothing more goes out, whatever callbacks are still pending. */
	agent_drop_primary(a);
	agent_answer_waiting(a);
	a->exit_code = 0;
	ev_break(a->loop, EVBREAK_ALL);
	return false;
}

/* remusctl verify on the primary: which of these pages differ here. */
static void on_verify(struct agent *a, const struct frame_hdr *h, const uint8_t *payload)
{
	char why[256] = "";
	uint32_t len = 0;
	uint8_t *out = replica_verify(&a->replica, h->epoch, payload, h->len, &len, why, sizeof(why));
	struct iovec iov = { .iov_base = out, .iov_len = len };

	if (!out) {
		log_warn("verify: %s: not answered", why);
		return;
	}
	peer_link_push(a->primary, FRAME_VERIFY_RESULT, h->epoch, &iov, 1, out, NULL);
}

/* Returns false when the primary has been dropped. */
static bool on_frame(struct agent *a, const struct frame_hdr *h, const uint8_t *payload)
{
	bool ok = proto_check_payload(h, payload) == 0;

	if (a->primary->out.bytes_queued > AGENT_MAX_BACKLOG_BYTES) {
		agent_lose_stream(a, "the primary does not read what the agent sends");
		return false;
	}
	/* Nothing of epoch 0 before the base is ready; a paused primary's
	 * PAUSE (sent as soon as it connects) and its GOODBYE may come. */
	if (agent_delta_base_pending(a) && h->type != FRAME_HEARTBEAT && h->type != FRAME_PAUSE &&
	    h->type != FRAME_GOODBYE) {
		agent_lose_stream(a, "the primary sent a frame before the delta resync's base was ready");
		return false;
	}
	switch (h->type) {
	case FRAME_DISK:
		if (h->epoch == PROTO_EPOCH_TEST_UNBUFFERED) {
			if (a->cfg.test_disk_apply_on_arrival && ok)
				replica_apply_unbuffered(&a->replica, payload, h->len);
			break; /* a test hook's frame: in no epoch */
		}
		/* fall through */
	case FRAME_PAGES:
	case FRAME_PAGES_Z:
	case FRAME_DEVSTATE:
		replica_add_frame(&a->replica, h, payload, ok);
		break;
	case FRAME_EPOCH_END:
		if (!on_epoch_end(a, h, payload, ok))
			return false;
		break;
	case FRAME_HEARTBEAT:
		break;
	case FRAME_PAUSE:
		if (!ok) {
			/* Not knowing whether we are paused is not a state to stay in. */
			agent_lose_stream(a, "corrupt PAUSE frame");
			return false;
		}
		on_pause(a, h);
		break;
	case FRAME_HANDOVER:
		if (ok && is_park(h, payload)) {
			on_park(a, h);
			break;
		}
		return on_handover(a, h, ok);
	case FRAME_VERIFY:
		if (!ok) {
			agent_lose_stream(a, "corrupt VERIFY frame");
			return false;
		}
		on_verify(a, h, payload);
		break;
	case FRAME_GOODBYE:
		if (!ok) {
			/* A GOODBYE we cannot trust must not cancel a failover. */
			agent_lose_stream(a, "corrupt GOODBYE frame");
			return false;
		}
		if (a->takeover_ready && a->state == AGENT_READY) {
			/* parked: the replica is the VM's last state */
			agent_drop_primary(a);
			return false;
		}
		log_info("primary %s detached on purpose (%.*s): replica kept, no failover",
			 a->peer, (int)(h->len < 100 ? h->len : 100), (const char *)payload);
		/* the VM runs on unprotected, or was shut down: never a cold start */
		replica_mark_restored(a->cfg.state_dir);
		agent_set_state(a, AGENT_WAITING, "primary detached on purpose (%.*s)",
			  (int)(h->len < 100 ? h->len : 100), (const char *)payload);
		agent_drop_primary(a);
		return false;
	default:
		log_warn("primary sent an unexpected %s frame: ignored", frame_type_name(h->type));
	}
	return true;
}

/* A peer's first frame, after TLS: its HELLO (a primary), a PEER_QUERY
 * (the other host's agent, cold_start.h), or nothing. */
static bool on_first_frame(struct agent *a, struct peer_link *l, const struct frame_hdr *h,
			   const uint8_t *payload)
{
	if (h->type == FRAME_PEER_QUERY) {
		cold_start_answer(a, l, h, payload);
		return false;
	}
	if (h->type != FRAME_HELLO || proto_check_payload(h, payload)) {
		agent_log_refused(a, l->peer, "it did not start with a valid HELLO");
		peer_link_close(l);
		return false;
	}
	on_hello(a, l, payload, h->len);
	return a->primary == l;
}

static bool on_link_frame(struct peer_link *l, const struct frame_hdr *h, const uint8_t *payload)
{
	struct agent *a = l->data;

	return l == a->primary ? on_frame(a, h, payload) : on_first_frame(a, l, h, payload);
}

static void on_link_error(struct peer_link *l, int err, const char *why)
{
	struct agent *a = l->data;
	char text[160];

	if (l != a->primary) {
		/* Not our primary (yet): whatever it did changes nothing here. */
		if (err == -EPROTONOSUPPORT && peer_link_open(l)) {
			snprintf(text, sizeof(text), "it speaks protocol version %u; this agent "
				 "speaks version %u", l->reader.hdr.version, (unsigned)PROTO_VERSION);
			refuse_peer(a, l, text);
			return;
		}
		agent_log_refused(a, l->peer, why);
		peer_link_close(l);
	} else if (err == -EPIPE || err == -ECONNRESET) {
		agent_failover(a, why);
	} else {
		agent_lose_stream(a, why);
	}
}

/* The stall that just ended may have outlasted the primary's hold: it may
 * have given us up, released output and run on, and what it sent us then
 * (a close included) may still come in at any time. */
static bool outlived_the_hold(const struct agent *a)
{
	const struct takeover_deadline *d = &a->deadline;

	return takeover_deadline_by(d, d->stall_from_ms, agent_takeover_after_ms(a)) <=
	       d->stall_to_ms;
}

static const struct peer_link_ops link_ops = {
	.on_frame = on_link_frame,
	.on_error = on_link_error,
};

static void on_heartbeat_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct agent *a = w->data;
	struct peer_link *p = a->primary;
	double now = boot_ms();
	double quiet_ms;

	if (agent_loop_ran(a) && p && outlived_the_hold(a)) {
		char why[200];

		snprintf(why, sizeof(why), "this agent did not run for %.0f ms, past the time the "
			 "primary holds its output for it: the primary may have released output "
			 "and run on since", now - a->deadline.gap_from_ms);
		agent_lose_stream(a, why);
		return;
	}
	if (a->grace_until_ms && now > a->grace_until_ms && !p) {
		/* A connection that never said HELLO is not the primary back. */
		a->grace_until_ms = 0;
		agent_failover(a, "primary did not reconnect");
		return;
	}
	if (!p)
		return;
	quiet_ms = now - p->last_rx_ms;
	if (quiet_ms > a->cfg.timeout_ms && peer_link_unread(p)) {
		/* Our own loop stood still (a slow disk, a long restore): the
		 * primary's bytes are waiting, it was not silent. */
		p->last_rx_ms = now;
		quiet_ms = 0;
	}
	if (quiet_ms > a->cfg.timeout_ms) {
		char why[64];
		snprintf(why, sizeof(why), "no heartbeat for %.0f ms", quiet_ms);
		agent_failover(a, why);
		return;
	}
	if (now - p->last_tx_ms >= a->cfg.heartbeat_ms && !p->out.frames)
		send_frame(a, FRAME_HEARTBEAT, a->replica.session_epoch, NULL);
}

static void on_stop_signal(struct ev_loop *loop, ev_signal *w, int revents)
{
	struct agent *a = w->data;

	log_info("signal %d: stopping; replica in %s kept", w->signum, a->cfg.state_dir);
	notify_stopping("stopping; replica kept");
	a->exit_code = 0;
	ev_break(loop, EVBREAK_ALL);
}

/* No key, no start: a port anyone can speak on gives the backup host to
 * anyone (docs/SECURITY.md). Cleartext only when the operator named it. */
static int setup_link_security(struct agent *a)
{
	char err[512];

	if (a->cfg.cleartext_link) {
		link_security_cleartext(&a->sec);
		log_warn("INSECURE: --insecure-cleartext-link: the replication link is neither "
			 "encrypted nor authenticated; anyone who reaches %s can feed this agent a "
			 "VM to run as root", a->cfg.listen.text);
		return 0;
	}
	if (link_security_load(&a->sec, a->cfg.key_file, a->cfg.pair_name, err, sizeof(err))) {
		log_err("%s", err);
		return -EINVAL;
	}
	return 0;
}

static void close_links(struct agent *a)
{
	agent_drop_primary(a);
	for (int i = 0; i < AGENT_MAX_LINKS; i++)
		peer_link_close(&a->links[i]);
}

/* A libvirt domain the agent restored here runs on this state directory's
 * files, and libvirt's QEMU cannot hold the directory's lock as a plain
 * QEMU does: an agent here would write its replica under that VM. A QEMU
 * that just died may count as running until libvirt has reaped it, so
 * ask for a few seconds. */
#define DOMAIN_GONE_WAIT_MS 5000

/* Under a cluster manager an agent starts beside the domain started on
 * its host (the manager's promote attaches the replicator), as beside a
 * plain QEMU: only a running domain that runs on none of this state dir's
 * files (restore_domain_uses_dir: restored here, or that domain's
 * definition started again), by the path as configured or as resolved. */
static bool domain_started_here(const struct agent *a)
{
	char *xml = NULL, real[PATH_MAX];
	bool started, running;

	if (!a->cfg.takeover_manual ||
	    virt_domain_live_xml(a->cfg.restore.libvirt_uri ? a->cfg.restore.libvirt_uri :
				 VIRT_DEFAULT_URI, a->cfg.file.vm_domain, &xml, &running))
		return false;
	started = running && !restore_domain_uses_dir(xml, a->cfg.state_dir) &&
		  (!realpath(a->cfg.state_dir, real) || !restore_domain_uses_dir(xml, real));
	free(xml);
	if (started)
		log_info("libvirt domain %s runs on this host, started here (not restored into "
			 "%s): this host's promote attaches its replicator", a->cfg.file.vm_domain,
			 a->cfg.state_dir);
	return started;
}

static bool pair_domain_runs_here(const struct agent *a)
{
	double deadline = mono_ms() + DOMAIN_GONE_WAIT_MS;

	if (!a->cfg.host || !a->cfg.file.vm_domain || a->cfg.restore_now)
		return false;
	while (cold_start_vm_here(a) == 1) {
		if (domain_started_here(a))
			return false;
		if (mono_ms() > deadline) {
			log_err("libvirt domain %s runs on this host, maybe on the files of %s: "
				"not starting as its backup (remus-replicator --config %s --host "
				"%s protects it)", a->cfg.file.vm_domain, a->cfg.state_dir,
				a->cfg.config_path, a->cfg.host->name);
			return true;
		}
		usleep(200 * 1000);
	}
	return false;
}

int agent_run(struct agent *a)
{
	char err[256];
	int rc;

	a->primary = NULL;
	a->listen_fd = -1;
	a->state_lock_fd = -1;
	control_socket_init(&a->control, "agent", a->cfg.control_path, a->cfg.control_group,
			    a->cfg.control_gid, agent_control_command, a);
	if (agent_lock_state_dir(a))
		return 2;
	if (pair_domain_runs_here(a)) {
		agent_unlock_state_dir(a);
		return 2;
	}
	a->cfg.restore.lock_fd = a->state_lock_fd;
	replica_init(&a->replica, a->cfg.state_dir);
	a->replica.pulse = commit_pulse;
	a->replica.pulse_ctx = a;
	signal(SIGPIPE, SIG_IGN);
	if (a->cfg.restore_now) {
		a->exit_code = agent_restore_and_report(a);
		replica_free(&a->replica);
		agent_unlock_state_dir(a);
		return a->exit_code;
	}
	if (setup_link_security(a)) {
		replica_free(&a->replica);
		agent_unlock_state_dir(a);
		return 2;
	}
	rc = replica_recover(a->cfg.state_dir, err, sizeof(err));
	if (rc < 0)
		log_err("replica in %s: %s", a->cfg.state_dir, err);
	else if (rc > 0)
		log_info("replica in %s: finished an epoch committed before the agent stopped",
			 a->cfg.state_dir);
	a->listen_fd = netaddr_listen(&a->cfg.listen);
	if (a->listen_fd < 0) {
		log_err("cannot listen on %s: %s", a->cfg.listen.text, strerror(-a->listen_fd));
		link_security_free(&a->sec);
		replica_free(&a->replica);
		agent_unlock_state_dir(a);
		return 2;
	}
	agent_load_replica_facts(a);
	agent_set_state(a, AGENT_WAITING, "listening on %s, no primary yet", a->cfg.listen.text);
	a->loop = ev_default_loop(EVFLAG_AUTO);
	if (control_socket_open(&a->control, a->loop)) {
		close(a->listen_fd);
		ev_loop_destroy(a->loop);
		sighup_ignore_quietly(); /* the loop is gone: sighup.h */
		link_security_free(&a->sec);
		replica_free(&a->replica);
		agent_unlock_state_dir(a);
		return 2;
	}
	for (int i = 0; i < AGENT_MAX_LINKS; i++)
		peer_link_init(&a->links[i], a->loop, &a->sec, &link_ops, a);
	ev_io_init(&a->accept_watch, agent_on_accept, a->listen_fd, EV_READ);
	ev_idle_init(&a->delta_step, agent_on_delta_step);
	ev_timer_init(&a->delta_wait, agent_on_delta_wait, 0.005, 0);
	a->delta_step.data = a->delta_wait.data = a;
	ev_timer_init(&a->heartbeat_timer, on_heartbeat_timer, 0, a->cfg.heartbeat_ms / 1000.0);
	takeover_deadline_init(&a->deadline, a->cfg.heartbeat_ms, a->cfg.timeout_ms);
	ev_signal_init(&a->sigterm, on_stop_signal, SIGTERM);
	ev_signal_init(&a->sigint, on_stop_signal, SIGINT);
	a->accept_watch.data = a->heartbeat_timer.data = a->sigterm.data = a->sigint.data = a;
	ev_io_start(a->loop, &a->accept_watch);
	ev_timer_again(a->loop, &a->heartbeat_timer);
	ev_signal_start(a->loop, &a->sigterm);
	ev_signal_start(a->loop, &a->sigint);
	sighup_ignore_start(a->loop, &a->sighup, "remus-agent");
	hook_runner_init(&a->hooks, a->loop, a->cfg.notify_cmd, HOOK_NOTIFY_TIMEOUT_MS);
	cold_start_init(a);
	test_failover_init(a);
	agent_takeover_init(a);
	log_info("listening on %s, state in %s", a->cfg.listen.text, a->cfg.state_dir);
	notify_ready(NULL);
	notify_status("listening on %s, no primary yet", a->cfg.listen.text);
	agent_warn_no_fence(a);
	ev_run(a->loop, 0);
	/* `master` and `fault` must reach the operator before we are gone. */
	hook_runner_drain(&a->hooks, HOOK_NOTIFY_TIMEOUT_MS);
	agent_answer_waiting(a);
	test_failover_stop(a);
	agent_takeover_stop(a);
	ev_idle_stop(a->loop, &a->delta_step);
	ev_timer_stop(a->loop, &a->delta_wait);
	control_socket_close(&a->control);
	cold_start_stop(a);
	close_links(a);
	close(a->listen_fd);
	replica_free(&a->replica);
	link_security_free(&a->sec);
	ev_loop_destroy(a->loop);
	sighup_ignore_quietly(); /* the loop is gone: sighup.h */
	agent_unlock_state_dir(a);
	return a->exit_code;
}
