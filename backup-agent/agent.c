/* The agent's event loop: one primary at a time; stage, verify, commit and
 * acknowledge its epochs; restore the VM when the primary is lost. */
#include "agent.h"

#include "clock.h"
#include "log.h"
#include "netaddr.h"
#include "notify.h"
#include "restore.h"
#include "sighup.h"

#include <arpa/inet.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define HANDOVER_FLUSH_MS 2000

static const char *vm_name(const struct agent *a)
{
	const char *n = a->replica.hello ?
		json_object_get_string(json_object_object_get(a->replica.hello, "name")) : NULL;

	return n ? n : "?";
}

const char *agent_state_name(enum agent_state s)
{
	switch (s) {
	case AGENT_WAITING: return "waiting";
	case AGENT_SYNCING: return "syncing";
	case AGENT_BACKUP: return "backup";
	case AGENT_PAUSED: return "paused";
	case AGENT_RECONNECTING: return "reconnecting";
	case AGENT_FENCING: return "fencing";
	case AGENT_RESTORING: return "restoring";
	case AGENT_MASTER: return "master";
	case AGENT_FAULT: return "fault";
	case AGENT_READY: return "ready";
	case AGENT_NSTATES: break;
	}
	return "unknown";
}

/* The one place the state changes: logged as "old -> new (reason)". The
 * hooks keep their own events (notify), which name the same moments. */
void agent_set_state(struct agent *a, enum agent_state st, const char *fmt, ...)
{
	enum agent_state old = a->state;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(a->state_reason, sizeof(a->state_reason), fmt, ap);
	va_end(ap);
	if (old == st)
		return;
	a->state = st;
	a->state_since_ms = mono_ms();
	log_info("VM %s: %s -> %s (%s)", a->vm_name[0] ? a->vm_name : "?",
		 agent_state_name(old), agent_state_name(st), a->state_reason);
}

/* The loop is about to stand still (a fence, a restore) or to end: answer
 * whoever asked meanwhile, in the state we are in now. */
static void answer_waiting_clients(struct agent *a)
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

static void drop_primary(struct agent *a)
{
	if (a->primary) {
		a->primary_heard_at = a->primary->last_rx;
		peer_link_close(a->primary);
	}
	a->primary = NULL;
	replica_end_session(&a->replica);
}

/* A peer that is not (yet) our primary went away or was turned away. One
 * line per 10 s at most: a scan of the port must not flood the log. */
static void log_refused(struct agent *a, const char *peer, const char *why)
{
	double now = mono_ms();

	if (a->refused_log_ms && now - a->refused_log_ms < 10000) {
		a->refused_quiet++;
		return;
	}
	if (a->refused_quiet)
		log_warn("connection from %s refused: %s (and %u more refused since the last "
			 "such line)", peer, why, a->refused_quiet);
	else
		log_warn("connection from %s refused: %s", peer, why);
	a->refused_log_ms = now;
	a->refused_quiet = 0;
}

/* The common part of every hook event of this agent. */
static void agent_event(const struct agent *a, struct hook_event *ev, const char *event,
			const char *reason)
{
	*ev = (struct hook_event){
		.pair = a->cfg.pair_name ? a->cfg.pair_name : a->vm_name,
		.vm = a->vm_name,
		.event = event,
		.role = "backup",
		.epoch = a->replica.session_epoch,
		.peer = a->peer,
		.reason = reason,
	};
}

static void notify(struct agent *a, const char *event, const char *reason)
{
	struct hook_event ev;

	agent_event(a, &ev, event, reason);
	hook_notify(&a->hooks, &ev);
}

/* Fence the lost primary, if configured. true: the VM may be restored. */
static bool fence_primary(struct agent *a, const char *why, long long lost_at, double *fence_ms)
{
	struct hook_event ev;
	struct hook_result res;
	char lost[48], text[160], reason[300];

	*fence_ms = 0;
	if (!a->cfg.fence_cmd)
		return true; /* --no-fence, or warned about at start */
	agent_set_state(a, AGENT_FENCING, "primary lost (%s): the fence command runs", why);
	answer_waiting_clients(a);
	notify(a, "fencing", why);
	agent_event(a, &ev, "fencing", why);
	hook_event_var(&ev, lost, sizeof(lost), "LOST_AT_MS", "%lld", lost_at);
	log_info("fencing the primary %s before taking over: %s", a->peer, a->cfg.fence_cmd);
	if (hook_run_sync("fence command", a->cfg.fence_cmd, &ev, a->cfg.fence_timeout_ms,
			  &res) == 0) {
		*fence_ms = res.ms;
		if (hook_result_ok(&res)) {
			log_info("primary fenced in %.0f ms", res.ms);
			return true;
		}
		hook_result_text(&res, a->cfg.fence_timeout_ms, text, sizeof(text));
	} else {
		snprintf(text, sizeof(text), "it could not be started");
	}
	log_err("FENCING FAILED (%s): the primary may still run VM %s, so it is NOT restored "
		"here. The replica in %s is kept: once the primary is known to be off, stop "
		"this agent (SIGTERM), then run remus-agent --restore --state-dir %s. Waiting "
		"for the primary to reconnect",
		text, a->vm_name, a->cfg.state_dir, a->cfg.state_dir);
	snprintf(reason, sizeof(reason), "fence command: %s", text);
	agent_set_state(a, AGENT_FAULT, "fencing failed (%s): the primary may still run the VM, so it "
		  "is not restored; waiting for the primary", text);
	notify(a, "fence-failed", reason);
	return false;
}

/* The restored VM runs: say so, with the failover's figures. */
static void notify_master(struct agent *a, const struct restore_result *res,
			  long long lost_at, double fence_ms, const char *why)
{
	struct hook_event ev;
	char v[4][48];

	agent_event(a, &ev, "master", why);
	ev.epoch = res->epoch;
	hook_event_var(&ev, v[0], sizeof(v[0]), "LOST_AT_MS", "%lld", lost_at);
	hook_event_var(&ev, v[1], sizeof(v[1]), "FENCE_MS", "%.0f", fence_ms);
	hook_event_var(&ev, v[2], sizeof(v[2]), "RESTORE_MS", "%.0f", res->total_ms);
	hook_event_var(&ev, v[3], sizeof(v[3]), "QEMU_PID", "%d", (int)res->qemu_pid);
	hook_notify(&a->hooks, &ev);
}

/* The VM runs here now. In a pair whose roles move, this host protects
 * it next: once the loop ends, main() makes us its replicator. */
static void become_primary(struct agent *a, const struct restore_result *res)
{
	if (!a->cfg.host || res->libvirt_domain[0])
		return;
	struct replica_info info;

	snprintf(a->master_qmp, sizeof(a->master_qmp), "%s", res->qmp_path);
	a->master_generation = 0;
	if (!replica_load_info(a->cfg.state_dir, &info)) {
		a->master_generation = replica_generation(info.vm);
		replica_info_free(&info);
	}
	a->become_primary = true;
}

static void failover(struct agent *a, const char *why)
{
	struct restore_result res;
	bool committed = a->replica.session_committed;
	long long lost_at = unix_ms();
	double fence_ms;
	char reason[300];

	drop_primary(a);
	if (committed && a->paused) {
		/* Output went out unchecked since the pause: the replica would
		 * take back what clients have seen. */
		log_err("primary lost (%s) while the operator had PAUSED protection: the "
			"replica (epoch %llu) is stale and the primary has released output since, "
			"so the VM is NOT restored. If the primary is really gone, stop this agent "
			"(SIGTERM), then remus-agent --restore --state-dir %s brings it back at "
			"epoch %llu, older than what clients saw", why,
			(unsigned long long)a->replica.session_epoch, a->cfg.state_dir,
			(unsigned long long)a->replica.session_epoch);
		agent_set_state(a, AGENT_FAULT, "primary lost (%s) while protection was paused: VM not "
			  "restored", why);
		notify_status("primary lost while paused: VM not restored; listening");
		return;
	}
	if (!committed) {
		log_err("primary lost (%s) before any checkpoint of this session committed; "
			"a replica from an earlier session would roll the VM back, so it is not "
			"restored automatically (stop this agent, then remus-agent --restore "
			"--state-dir %s does it)",
			why, a->cfg.state_dir);
		snprintf(reason, sizeof(reason), "primary lost (%s) before its first checkpoint "
			 "committed: VM not restored", why);
		agent_set_state(a, AGENT_FAULT, "%s", reason);
		notify(a, "fault", reason);
		return;
	}
	if (a->cfg.no_failover) {
		log_err("primary lost (%s); --no-failover: replica kept, VM not restored (stop "
			"this agent, then remus-agent --restore --state-dir %s)", why,
			a->cfg.state_dir);
		snprintf(reason, sizeof(reason), "primary lost (%s); --no-failover", why);
		agent_set_state(a, AGENT_FAULT, "%s: VM not restored", reason);
		notify(a, "fault", reason);
		return;
	}
	if (a->cfg.takeover_manual && a->takeover_ready) {
		/* parked: its QEMU stopped at the epoch we hold */
		log_info("the primary of VM %s is gone (%s); the replica stays ready", a->vm_name,
			 why);
		agent_takeover_ready(a, "%s", a->takeover_why);
		return;
	}
	if (a->cfg.takeover_manual) {
		/* The cluster manager fences the old primary and promotes a
		 * host: this one restores only when it is told. */
		log_warn("primary lost (%s); takeover = manual: the replica (epoch %llu) waits "
			 "for the cluster manager to promote this host (remusctl takeover)", why,
			 (unsigned long long)a->replica.session_epoch);
		agent_ready_lost_primary(a, why);
		notify(a, "primary-lost", why);
		return;
	}
	log_err("primary lost (%s): taking over from the last committed checkpoint", why);
	test_failover_stop(a); /* no clone beside the real VM */
	if (!fence_primary(a, why, lost_at, &fence_ms))
		return;
	log_info("restoring the VM from epoch %llu", (unsigned long long)a->replica.session_epoch);
	agent_set_state(a, AGENT_RESTORING, "primary lost (%s): restoring from epoch %llu", why,
		  (unsigned long long)a->replica.session_epoch);
	answer_waiting_clients(a);
	if (restore_vm(&a->cfg.restore, &res)) {
		log_err("FAILOVER FAILED: the replica in %s is intact; fix the cause and run "
			"remus-agent --restore --state-dir %s", a->cfg.state_dir, a->cfg.state_dir);
		agent_set_state(a, AGENT_FAULT, "restore failed: see the agent's log; the agent exits");
		notify(a, "fault", "restore failed: see the agent's log");
		a->exit_code = 1;
		notify_status("FAILOVER FAILED; replica kept");
	} else {
		notify_status("failover done: VM running as QEMU pid %d", (int)res.qemu_pid);
		log_info("failover complete: VM running from epoch %llu as QEMU pid %d "
			 "(copy %.0f ms, start %.0f ms, load %.0f ms, total %.0f ms); %s%s, "
			 "serial %s/serial.log",
			 res.epoch, (int)res.qemu_pid, res.copy_ms, res.start_ms, res.load_ms,
			 res.total_ms, res.libvirt_domain[0] ? "libvirt domain " : "QMP ",
			 res.libvirt_domain[0] ? res.libvirt_domain : res.qmp_path,
			 a->cfg.state_dir);
		a->master_pid = (int)res.qemu_pid;
		become_primary(a, &res);
		agent_set_state(a, AGENT_MASTER, "primary lost: VM restored from epoch %llu as QEMU pid %d; "
			  "%s", res.epoch, (int)res.qemu_pid, a->become_primary ?
			  "protecting it to the other host next" : "the agent exits");
		notify_master(a, &res, lost_at, fence_ms, "primary lost; VM restored from the replica");
		a->exit_code = 0;
	}
	answer_waiting_clients(a);
	ev_break(a->loop, EVBREAK_ALL);
}

/* Restore the VM from the replica in the state dir, with no primary
 * (cold start, or takeover: what says which). 0: it runs here and the
 * loop ends; -1: FAULT, replica kept. */
int agent_restore_here(struct agent *a, const char *what, const char *why,
		       struct restore_result *res)
{
	char reason[80];

	if (!a->vm_name[0] && a->replica_vm[0]) /* no HELLO told us: the replica's */
		snprintf(a->vm_name, sizeof(a->vm_name), "%s", a->replica_vm);
	log_warn("%s: %s: restoring the VM here from epoch %llu", what, why,
		 (unsigned long long)a->replica_epoch);
	agent_parked_discard(a, "the VM is restored here from the replica");
	cold_start_stop(a);
	test_failover_stop(a);
	agent_set_state(a, AGENT_RESTORING, "%s: restoring from epoch %llu", what,
		  (unsigned long long)a->replica_epoch);
	answer_waiting_clients(a);
	if (restore_vm(&a->cfg.restore, res)) {
		log_err("%s FAILED: the replica in %s is intact; see above", what, a->cfg.state_dir);
		agent_set_state(a, AGENT_FAULT, "%s: restore failed: see the agent's log", what);
		snprintf(reason, sizeof(reason), "%s: restore failed", what);
		notify(a, "fault", reason);
		return -1;
	}
	log_info("%s: VM running from epoch %llu as QEMU pid %d (%.0f ms)", what, res->epoch,
		 (int)res->qemu_pid, res->total_ms);
	a->master_pid = (int)res->qemu_pid;
	agent_ready_clear(a);
	become_primary(a, res);
	agent_set_state(a, AGENT_MASTER, "%s: VM restored from epoch %llu as QEMU pid %d; %s", what,
		  res->epoch, (int)res->qemu_pid, a->become_primary ?
		  "protecting it to the other host next" : "the agent exits");
	notify_master(a, res, unix_ms(), 0, why);
	a->exit_code = 0;
	ev_break(a->loop, EVBREAK_ALL);
	return 0;
}

void agent_restore_cold(struct agent *a, const char *why)
{
	struct restore_result res;

	if (!agent_restore_here(a, "cold start", why, &res))
		answer_waiting_clients(a);
}

void agent_takeover_ready(struct agent *a, const char *fmt, ...)
{
	char why[sizeof(a->takeover_why)];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	snprintf(a->takeover_why, sizeof(a->takeover_why), "%s", why);
	if (!a->takeover_ready)
		log_info("takeover = manual: ready to be promoted: %s", a->takeover_why);
	a->takeover_ready = true;
	agent_set_state(a, AGENT_READY, "%s: waiting to be promoted (remusctl takeover)",
		  a->takeover_why);
	notify_status("VM %s: replica ready, waiting to be promoted", vm_name(a));
}

/* The VM runs here now, in a QEMU already running on qmp (one started on
 * this host, or a parked one resumed): its replicator attaches to it
 * once the loop ends. */
void agent_attach_here(struct agent *a, const char *qmp, uint64_t generation, const char *why)
{
	snprintf(a->master_qmp, sizeof(a->master_qmp), "%s", qmp);
	a->master_generation = generation;
	a->become_primary = true;
	agent_ready_clear(a);
	cold_start_stop(a);
	agent_set_state(a, AGENT_MASTER, "%s: its replicator attaches to it (%s)", why, qmp);
	a->exit_code = 0;
	ev_break(a->loop, EVBREAK_ALL);
}

/* We cannot read the stream any more, but the primary may well be alive:
 * drop it and give it the heartbeat timeout to come back before taking
 * over (a reconnecting primary says HELLO and resyncs). */
static void lose_stream(struct agent *a, const char *why)
{
	log_warn("primary %s: %s; dropped, waiting %u ms for it to reconnect",
		 a->peer, why, a->cfg.timeout_ms);
	agent_set_state(a, AGENT_RECONNECTING, "%s: waiting %u ms for the primary to reconnect", why,
		  a->cfg.timeout_ms);
	drop_primary(a);
	a->grace_until = ev_now(a->loop) + a->cfg.timeout_ms / 1000.0;
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
static unsigned takeover_after_ms(const struct agent *a)
{
	if (a->cfg.takeover_manual)
		return a->cfg.takeover_window_ms; /* a lost primary's replica is ready that long */
	return a->cfg.timeout_ms + (a->cfg.fence_cmd ? a->cfg.fence_timeout_ms : 0);
}

/* Is this VM one this backup would run? Refused now, with the option
 * named, before the state dir is touched, not when the primary dies. */
static int check_vm(struct agent *a, const char *text, char *err, size_t errlen)
{
	struct json_object *vm = json_tokener_parse(text);
	int rc = vm ? restore_check_hello(&a->cfg.restore, vm, err, errlen) : 0;

	json_object_put(vm);
	return rc;
}

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
static bool delta_base_pending(struct agent *a)
{
	return ram_base_pending(a) || next_disk_base(a);
}

static void on_delta_step(struct ev_loop *loop, ev_idle *w, int revents)
{
	struct agent *a = w->data;
	uint8_t *payload;
	unsigned type;
	uint32_t len;
	struct iovec iov;

	if (!a->primary || !delta_base_pending(a)) {
		ev_idle_stop(loop, w);
		return;
	}
	payload = delta_step_payload(a, &type, &len);
	iov = (struct iovec){ .iov_base = payload, .iov_len = len };
	if (!payload) {
		ev_idle_stop(loop, w);
		a->replica.base_unusable = true;
		lose_stream(a, "the base of a delta resync could not be read or copied; the next "
			    "session copies in full");
		return;
	}
	if (peer_link_push(a->primary, type, 0, &iov, 1, payload, NULL)) {
		ev_idle_stop(loop, w);
		lose_stream(a, "the hashes of a delta resync's base could not be queued");
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
	if (!delta_base_pending(a))
		ev_idle_stop(loop, w);
}

static void start_delta(struct agent *a)
{
	a->delta_next = 0;
	a->delta_disk = 0;
	a->delta_disk_next = 0;
	a->delta_started_ms = mono_ms();
	ev_idle_start(a->loop, &a->delta_step);
}

/* The HELLO_REPLY's "disk_hashes": per disk, the chunks whose hashes follow. */
static void add_disk_hashes(const struct replica *rp, char *reply, size_t size)
{
	if (!replica_disk_base_any(rp))
		return;
	snprintf(reply + strlen(reply), size - strlen(reply), ",\"disk_hashes\":[");
	for (unsigned i = 0; i < rp->ndisks; i++)
		snprintf(reply + strlen(reply), size - strlen(reply), "%s%llu", i ? "," : "",
			 (unsigned long long)(i < DISKFILE_MAX ? rp->disk_base_chunks[i] : 0));
	snprintf(reply + strlen(reply), size - strlen(reply), "]");
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
	a->backup_notified = false;
	name = json_object_get_string(json_object_object_get(a->replica.hello, "name"));
	snprintf(a->vm_name, sizeof(a->vm_name), "%s", name ? name : "?");
	a->grace_until = 0; /* the primary is back */
	agent_ready_clear(a); /* its new session decides */
	agent_parked_discard(a, "a primary connected: the VM runs there");
	a->paused = false;  /* a paused primary says so again */
	log_info("primary %s (%s, %s): replicating VM %s (%llu MiB, %u disk%s); initial sync "
		 "started", a->peer, l->identity, l->session, vm_name(a),
		 (unsigned long long)(a->replica.ram_size >> 20), a->replica.ndisks,
		 a->replica.ndisks == 1 ? "" : "s");
	agent_set_state(a, AGENT_SYNCING, "primary %s (%s) connected: initial sync", a->peer, l->identity);
	notify_status("VM %s from %s: syncing", vm_name(a), a->peer);
	snprintf(reply, sizeof(reply), "{\"ok\":true,\"features\":[\"" PROTO_FEATURE_OPERATOR
		 "\",\"" PROTO_FEATURE_DISK "\",\"" PROTO_FEATURE_VERIFY "\",\"" PROTO_FEATURE_PAGES_LZ4
		 "\"%s],\"takeover_after_ms\":%u,"
		 "\"generation\":%llu",
		 /* a park is kept only where a cluster manager promotes */
		 a->cfg.takeover_manual ? ",\"" PROTO_FEATURE_PARK "\"" : "",
		 takeover_after_ms(a), (unsigned long long)a->replica.generation);
	if (a->replica.delta)
		snprintf(reply + strlen(reply), sizeof(reply) - strlen(reply),
			 ",\"ram_hashes\":%llu", (unsigned long long)a->replica.npages);
	add_disk_hashes(&a->replica, reply, sizeof(reply));
	snprintf(reply + strlen(reply), sizeof(reply) - strlen(reply), "}");
	send_frame(a, FRAME_HELLO_REPLY, 0, reply);
	if (a->replica.delta || replica_disk_base_any(&a->replica))
		start_delta(a);
}

static void on_epoch_end(struct agent *a, const struct frame_hdr *h, const uint8_t *payload,
			 bool payload_ok)
{
	char why[200];
	double t0 = mono_ms();
	bool was_paused = a->paused;

	if (replica_end_epoch(&a->replica, h, payload, payload_ok, why, sizeof(why))) {
		log_warn("epoch %llu discarded: %s; replica stays at epoch %llu",
			 (unsigned long long)h->epoch, why,
			 (unsigned long long)a->replica.session_epoch);
		send_frame(a, FRAME_NACK, h->epoch, why);
		return;
	}
	if (h->epoch > 0) {
		ring_add(&a->commit_ms, mono_ms() - t0);
		replica_committed(a, h->epoch);
	}
	if (h->epoch > 0 && a->paused) {
		a->paused = false;
		log_info("epoch %llu committed after the pause: VM %s is protected again, "
			 "failover armed", (unsigned long long)h->epoch, vm_name(a));
	}
	if (h->epoch > 0 && a->state != AGENT_BACKUP)
		agent_set_state(a, AGENT_BACKUP, was_paused ? "epoch %llu committed after the pause" :
			  "epoch %llu committed: failover armed", (unsigned long long)h->epoch);
	/* Epochs commit many times a second: the manager hears of one a second. */
	if (h->epoch > 0 && (a->replica.commits == 1 || mono_ms() - a->status_at_ms >= 1000)) {
		a->status_at_ms = mono_ms();
		notify_status("VM %s from %s: protected, epoch %llu committed", vm_name(a),
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
		notify(a, "backup", "primary connected, first checkpoint committed");
	}
}

static void on_pause(struct agent *a, const struct frame_hdr *h)
{
	if (!a->paused)
		log_warn("primary %s PAUSED protection of VM %s: the replica stays at epoch %llu "
			 "and will not be restored if the primary is lost, until a checkpoint "
			 "commits after it resumes", a->peer, vm_name(a),
			 (unsigned long long)a->replica.session_epoch);
	a->paused = true;
	agent_set_state(a, AGENT_PAUSED, "the operator paused protection on the primary: replica stays "
		  "at epoch %llu, no failover", (unsigned long long)a->replica.session_epoch);
	notify_status("VM %s from %s: paused by the operator (epoch %llu)", vm_name(a), a->peer,
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
	if (a->paused)
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
		log_err("park of VM %s refused: %s", vm_name(a), why);
		send_frame(a, FRAME_HANDOVER_FAILED, h->epoch, why);
		return;
	}
	log_info("primary %s parked VM %s at epoch %llu: its QEMU stops there, the replica here "
		 "is the VM's last state", a->peer, vm_name(a), (unsigned long long)h->epoch);
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
		log_err("handover of VM %s refused: %s", vm_name(a), why);
		send_frame(a, FRAME_HANDOVER_FAILED, h->epoch, why);
		return true;
	}
	log_info("primary %s hands VM %s over at epoch %llu (its QEMU is stopped): restoring "
		 "it here", a->peer, vm_name(a), (unsigned long long)h->epoch);
	test_failover_stop(a);
	notify_status("VM %s: taking over from %s", vm_name(a), a->peer);
	agent_set_state(a, AGENT_RESTORING, "planned handover at epoch %llu: restoring",
		  (unsigned long long)h->epoch);
	answer_waiting_clients(a);
	rc = restore_vm(&a->cfg.restore, &res);
	/* The loop stood still while QEMU started: that was not the
	 * primary's silence. */
	ev_now_update(a->loop);
	a->primary->last_rx = ev_now(a->loop);
	if (rc) {
		snprintf(buf, sizeof(buf), "restoring the VM on the backup failed (%s); see the "
			 "agent's log", strerror(-rc));
		log_err("HANDOVER FAILED: %s; the primary resumes VM %s, replica kept", buf,
			vm_name(a));
		notify_status("VM %s from %s: handover failed, protected again", vm_name(a), a->peer);
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
		 "ms, start %.0f ms, load %.0f ms, total %.0f ms); QMP %s/qmp.sock, serial "
		 "%s/serial.log", vm_name(a), res.epoch, (int)res.qemu_pid, res.copy_ms,
		 res.start_ms, res.load_ms, res.total_ms, a->cfg.state_dir, a->cfg.state_dir);
	notify_status("handover done: VM running as QEMU pid %d", (int)res.qemu_pid);
	a->master_pid = (int)res.qemu_pid;
	become_primary(a, &res);
	agent_set_state(a, AGENT_MASTER, "planned handover: VM restored from epoch %llu as QEMU pid %d; "
		  "%s", res.epoch, (int)res.qemu_pid, a->become_primary ?
		  "protecting it to the other host next" : "the agent exits");
	notify_master(a, &res, asked_at, 0, "planned handover: the VM runs here");
	/* Nothing more goes out, whatever callbacks are still pending. */
	drop_primary(a);
	answer_waiting_clients(a);
	a->exit_code = 0;
	ev_break(a->loop, EVBREAK_ALL);
	return false;
}

/* remusctl verify on the primary: which of these pages differ here. */
static void on_verify(struct agent *a, const struct frame_hdr *h, const uint8_t *payload)
{
	char why[256] = "";
	uint32_t len = 0, nbad;
	uint8_t *out = replica_verify(&a->replica, h->epoch, payload, h->len, &len, why, sizeof(why));
	struct iovec iov = { .iov_base = out, .iov_len = len };

	if (!out) {
		log_warn("verify: %s: not answered", why);
		return;
	}
	memcpy(&nbad, out + 12, 4);
	nbad = be32toh(nbad);
	if (nbad && nbad != PROTO_VERIFY_SKIPPED)
		log_warn("verify: %u page(s) of the replica differ from the primary's at epoch %llu; "
			 "it sends them again", nbad, (unsigned long long)h->epoch);
	peer_link_push(a->primary, FRAME_VERIFY_RESULT, h->epoch, &iov, 1, out, NULL);
}

/* Returns false when the primary has been dropped. */
static bool on_frame(struct agent *a, const struct frame_hdr *h, const uint8_t *payload)
{
	bool ok = proto_check_payload(h, payload) == 0;

	/* Nothing of epoch 0 before the base is ready; a paused primary's
	 * PAUSE (sent as soon as it connects) and its GOODBYE may come. */
	if (delta_base_pending(a) && h->type != FRAME_HEARTBEAT && h->type != FRAME_PAUSE &&
	    h->type != FRAME_GOODBYE) {
		lose_stream(a, "the primary sent a frame before the delta resync's base was ready");
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
		on_epoch_end(a, h, payload, ok);
		break;
	case FRAME_HEARTBEAT:
		break;
	case FRAME_PAUSE:
		if (!ok) {
			/* Not knowing whether we are paused is not a state to stay in. */
			lose_stream(a, "corrupt PAUSE frame");
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
			lose_stream(a, "corrupt VERIFY frame");
			return false;
		}
		on_verify(a, h, payload);
		break;
	case FRAME_GOODBYE:
		if (!ok) {
			/* A GOODBYE we cannot trust must not cancel a failover. */
			lose_stream(a, "corrupt GOODBYE frame");
			return false;
		}
		if (a->takeover_ready && a->state == AGENT_READY) {
			/* parked: the replica is the VM's last state */
			drop_primary(a);
			return false;
		}
		log_info("primary %s detached on purpose (%.*s): replica kept, no failover",
			 a->peer, (int)(h->len < 100 ? h->len : 100), (const char *)payload);
		/* the VM runs on unprotected, or was shut down: never a cold start */
		replica_mark_restored(a->cfg.state_dir);
		agent_set_state(a, AGENT_WAITING, "primary detached on purpose (%.*s)",
			  (int)(h->len < 100 ? h->len : 100), (const char *)payload);
		drop_primary(a);
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
		log_refused(a, l->peer, "it did not start with a valid HELLO");
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
		log_refused(a, l->peer, why);
		peer_link_close(l);
	} else if (err == -EPIPE || err == -ECONNRESET) {
		failover(a, why);
	} else {
		lose_stream(a, why);
	}
}

static const struct peer_link_ops link_ops = {
	.on_frame = on_link_frame,
	.on_error = on_link_error,
};

static struct peer_link *free_link(struct agent *a)
{
	for (int i = 0; i < AGENT_MAX_LINKS; i++)
		if (a->links[i].state == PEER_LINK_IDLE)
			return &a->links[i];
	return NULL;
}

/* Connections from host still in their TLS handshake: not authenticated. */
static int handshakes_from(const struct agent *a, const char *host)
{
	int n = 0;

	for (int i = 0; i < AGENT_MAX_LINKS; i++)
		n += a->links[i].state == PEER_LINK_TLS && !strcmp(a->links[i].peer, host);
	return n;
}

/* Every place is taken. A flood of handshakes that trickle their bytes
 * must not keep the primary out until the flood stops: the oldest
 * handshake of the address that holds the most gives way to a connection
 * from an address that holds fewer. The primary's own handshake takes
 * milliseconds, so it is seldom the oldest; and it is never evicted by a
 * connection from an address with as many. */
static struct peer_link *evict_for(struct agent *a, const char *host)
{
	struct peer_link *victim = NULL;
	int most = 0;

	for (int i = 0; i < AGENT_MAX_LINKS; i++) {
		int n = a->links[i].state == PEER_LINK_TLS ? handshakes_from(a, a->links[i].peer) : 0;

		if (n > most)
			most = n;
	}
	if (most <= handshakes_from(a, host))
		return NULL;
	/* of the addresses holding the most, the handshake with the least
	 * time left: the oldest */
	for (int i = 0; i < AGENT_MAX_LINKS; i++) {
		struct peer_link *l = &a->links[i];

		if (l->state == PEER_LINK_TLS && handshakes_from(a, l->peer) == most &&
		    (!victim || ev_timer_remaining(a->loop, &l->deadline) <
					ev_timer_remaining(a->loop, &victim->deadline)))
			victim = l;
	}
	log_refused(a, victim->peer, "its handshake gave way to a connection from an address "
		    "holding fewer (every place was taken)");
	peer_link_close(victim);
	return victim;
}

static void on_accept(struct ev_loop *loop, ev_io *w, int revents)
{
	struct agent *a = w->data;
	/* accept4 fills it; AF_UNSPEC until then, so a peer with no address
	 * is "?" (and the analyzer sees the field set) */
	struct sockaddr_storage ss = { .ss_family = AF_UNSPEC };
	socklen_t sl = sizeof(ss);
	char host[48] = "?";
	int fd = accept4(a->listen_fd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
	struct peer_link *l;

	if (fd < 0)
		return;
	if (ss.ss_family == AF_INET)
		inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, host, sizeof(host));
	else if (ss.ss_family == AF_INET6)
		inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, host, sizeof(host));
	if (handshakes_from(a, host) >= AGENT_HANDSHAKES_PER_ADDR) {
		log_refused(a, host, "too many connections from this address in their handshake");
		close(fd);
		return;
	}
	l = free_link(a);
	if (!l)
		l = evict_for(a, host);
	if (!l) {
		/* Every place is taken by handshakes that have not timed out
		 * yet, from addresses holding no more than this one: the
		 * primary's own place is never one of them. */
		log_refused(a, host, "too many connections in their handshake");
		close(fd);
		return;
	}
	peer_link_accept(l, fd, host, AGENT_HELLO_TIMEOUT_MS);
	l->read_slice_ms = AGENT_READ_SLICE_MS;
}

static void on_heartbeat_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct agent *a = w->data;
	struct peer_link *p = a->primary;
	ev_tstamp now = ev_now(loop);
	double quiet_ms;

	if (a->grace_until && now > a->grace_until && !p) {
		/* A connection that never said HELLO is not the primary back. */
		a->grace_until = 0;
		failover(a, "primary did not reconnect");
		return;
	}
	if (!p)
		return;
	quiet_ms = (now - p->last_rx) * 1e3;
	if (quiet_ms > a->cfg.timeout_ms && peer_link_unread(p)) {
		/* Our own loop stood still (a slow disk, a long restore): the
		 * primary's bytes are waiting, it was not silent. */
		p->last_rx = now;
		quiet_ms = 0;
	}
	if (quiet_ms > a->cfg.timeout_ms) {
		char why[64];
		snprintf(why, sizeof(why), "no heartbeat for %.0f ms", quiet_ms);
		failover(a, why);
		return;
	}
	if ((now - p->last_tx) * 1e3 >= a->cfg.heartbeat_ms && !p->out.frames)
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

static int restore_and_report(struct agent *a)
{
	struct restore_result res;
	char err[600];

	if (!a->cfg.after_host_restart &&
	    replica_check_host_restart(a->cfg.state_dir, err, sizeof(err))) {
		log_err("not restoring: %s", err);
		return 1;
	}
	if (restore_vm(&a->cfg.restore, &res))
		return 1;
	log_info("VM restored from epoch %llu: QEMU pid %d, %.0f ms", res.epoch,
		 (int)res.qemu_pid, res.total_ms);
	return 0;
}

static void warn_no_fence(const struct agent *a)
{
	if (a->cfg.fence_cmd || a->cfg.fence_disabled || a->cfg.no_failover ||
	    a->cfg.takeover_manual)
		return;
	log_warn("NO FENCING CONFIGURED: if the replication link fails while the primary "
		 "lives, this agent takes over and TWO copies of the VM run. Give --fence CMD "
		 "(a command that powers the primary off and exits 0 only when it is off), or "
		 "--no-fence where a lost link always means a lost primary");
}

/* One agent per state directory: two would write the same replica and
 * journal, and restore from what the other is half-way through. An
 * `--restore` by hand while an agent runs on the directory is refused the
 * same way. The lock is the directory's own (flock), held until we exit. */
static int lock_state_dir(struct agent *a)
{
	const char *dir = a->cfg.state_dir;

	/* A listening agent makes its directory; --restore needs one. */
	if (!a->cfg.restore_now && mkdir(dir, 0700) < 0 && errno != EEXIST) {
		int rc = -errno;

		log_err("cannot create state dir %s: %s", dir, strerror(-rc));
		return rc;
	}
	a->state_lock_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (a->state_lock_fd < 0) {
		int rc = -errno;

		log_err("cannot open state dir %s: %s", dir, strerror(-rc));
		return rc;
	}
	if (flock(a->state_lock_fd, LOCK_EX | LOCK_NB) < 0) {
		int rc = -errno;

		close(a->state_lock_fd);
		a->state_lock_fd = -1;
		if (rc == -ENOLCK || rc == -EOPNOTSUPP) {
			log_warn("cannot lock state dir %s (%s): going on without the guard "
				 "against a second agent on it", dir, strerror(-rc));
			return 0;
		}
		if (rc == -EWOULDBLOCK)
			log_err("--state-dir %s is in use: another remus-agent runs on it, or a VM "
				"restored from it still runs (either holds the directory's lock); one "
				"agent per state directory", dir);
		else
			log_err("cannot lock state dir %s: %s", dir, strerror(-rc));
		return rc;
	}
	return 0;
}

static void unlock_state_dir(struct agent *a)
{
	if (a->state_lock_fd >= 0)
		close(a->state_lock_fd);
	a->state_lock_fd = -1;
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

/* The committed replica already in the state dir (an earlier session's),
 * for status: its VM, epoch and commit time. */
static void load_replica_facts(struct agent *a)
{
	struct replica_info info;
	const char *name;
	struct tm tm = { 0 };

	if (replica_load_info(a->cfg.state_dir, &info))
		return;
	a->replica_known = true;
	a->replica_epoch = info.epoch;
	a->replica_generation = replica_generation(info.vm);
	name = json_object_get_string(json_object_object_get(info.vm, "name"));
	snprintf(a->replica_vm, sizeof(a->replica_vm), "%s", name ? name : "");
	/* committed_at is "%Y-%m-%dT%H:%M:%SZ", UTC (replica.c) */
	if (info.committed_at && strptime(info.committed_at, "%Y-%m-%dT%H:%M:%SZ", &tm))
		a->replica_committed_ms = (long long)timegm(&tm) * 1000;
	replica_info_free(&info);
}

static void close_links(struct agent *a)
{
	drop_primary(a);
	for (int i = 0; i < AGENT_MAX_LINKS; i++)
		peer_link_close(&a->links[i]);
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
	if (lock_state_dir(a))
		return 2;
	a->cfg.restore.lock_fd = a->state_lock_fd;
	replica_init(&a->replica, a->cfg.state_dir);
	signal(SIGPIPE, SIG_IGN);
	if (a->cfg.restore_now) {
		a->exit_code = restore_and_report(a);
		replica_free(&a->replica);
		unlock_state_dir(a);
		return a->exit_code;
	}
	if (setup_link_security(a)) {
		replica_free(&a->replica);
		unlock_state_dir(a);
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
		unlock_state_dir(a);
		return 2;
	}
	load_replica_facts(a);
	a->state = AGENT_WAITING;
	a->state_since_ms = mono_ms();
	snprintf(a->state_reason, sizeof(a->state_reason), "listening on %s, no primary yet",
		 a->cfg.listen.text);
	a->loop = ev_default_loop(EVFLAG_AUTO);
	if (control_socket_open(&a->control, a->loop)) {
		close(a->listen_fd);
		ev_loop_destroy(a->loop);
		sighup_ignore_quietly(); /* the loop is gone: sighup.h */
		link_security_free(&a->sec);
		replica_free(&a->replica);
		unlock_state_dir(a);
		return 2;
	}
	for (int i = 0; i < AGENT_MAX_LINKS; i++)
		peer_link_init(&a->links[i], a->loop, &a->sec, &link_ops, a);
	ev_io_init(&a->accept_watch, on_accept, a->listen_fd, EV_READ);
	ev_idle_init(&a->delta_step, on_delta_step);
	a->delta_step.data = a;
	ev_timer_init(&a->heartbeat_timer, on_heartbeat_timer, 0, a->cfg.heartbeat_ms / 1000.0);
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
	warn_no_fence(a);
	ev_run(a->loop, 0);
	/* `master` and `fault` must reach the operator before we are gone. */
	hook_runner_drain(&a->hooks, HOOK_NOTIFY_TIMEOUT_MS);
	answer_waiting_clients(a);
	test_failover_stop(a);
	agent_takeover_stop(a);
	ev_idle_stop(a->loop, &a->delta_step);
	control_socket_close(&a->control);
	cold_start_stop(a);
	close_links(a);
	close(a->listen_fd);
	replica_free(&a->replica);
	link_security_free(&a->sec);
	ev_loop_destroy(a->loop);
	sighup_ignore_quietly(); /* the loop is gone: sighup.h */
	unlock_state_dir(a);
	return a->exit_code;
}
