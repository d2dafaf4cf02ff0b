/* remusctl takeover: a cluster manager's promote, with [backup] takeover =
 * manual (agent.h). The VM comes to run here one of three ways:
 *  - a QEMU parked here (parked.h) resumes, once the other host's agent,
 *    asked over the pair's link, has given up the parked epoch it holds
 *    (a claim: if the answer is lost, neither host runs the VM);
 *  - a QEMU of the VM started on this host (listening on [vm] qmp) gets its
 *    replicator, unless this host holds the VM's newest state;
 *  - otherwise the replica is restored, when it is known to be the VM's
 *    newest (takeover_ready), or whatever it is with --force.
 * And when the replica is ready, for how long, and the record of a park
 * that outlives an agent restart (DIR/parked-replica). */
#include "agent.h"
#include "clock.h"
#include "log.h"
#include "notify.h"
#include "procfs.h"
#include "qmp.h"

#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PARKED_QMP_TIMEOUT_MS 3000
#define PARKED_KILL_WAIT_MS   5000
#define READY_MARK            "parked-replica"

/* ---- when the replica is ready ---- */

static void ready_mark_path(const struct agent *a, char *path, size_t len)
{
	snprintf(path, len, "%s/" READY_MARK, a->cfg.state_dir);
}

/* The parked epoch, for an agent that starts again: "GENERATION EPOCH". */
static void ready_mark_save(const struct agent *a)
{
	char path[4200];
	FILE *f;

	ready_mark_path(a, path, sizeof(path));
	f = fopen(path, "we");
	if (!f || fprintf(f, "%llu %llu\n", (unsigned long long)a->replica_generation,
			  (unsigned long long)a->replica_epoch) < 0 || fflush(f) || fsync(fileno(f)))
		log_warn("cannot record the parked epoch in %s: an agent restart forgets it", path);
	if (f)
		fclose(f);
}

static void ready_mark_clear(const struct agent *a)
{
	char path[4200];

	ready_mark_path(a, path, sizeof(path));
	unlink(path);
}

/* At start: a park recorded for exactly the replica in the state dir. */
static void ready_mark_load(struct agent *a)
{
	unsigned long long gen, epoch;
	char path[4200];
	FILE *f;
	int n;

	ready_mark_path(a, path, sizeof(path));
	f = fopen(path, "re");
	if (!f)
		return;
	n = fscanf(f, "%llu %llu", &gen, &epoch);
	fclose(f);
	if (!a->cfg.takeover_manual || n != 2 || !a->replica_known ||
	    gen != a->replica_generation || epoch != a->replica_epoch) {
		ready_mark_clear(a);
		return;
	}
	agent_takeover_ready(a, "the primary parked the VM at epoch %llu (its last state), "
			     "before this agent started", epoch);
}

static void on_ready_expiry(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct agent *a = w->data;

	if (!a->takeover_ready || a->primary)
		return;
	a->takeover_ready = false;
	log_warn("the replica (epoch %llu) is no longer ready: the lost primary's takeover window "
		 "(%u ms) is over, and it may have run on unprotected since; promoting this host "
		 "now needs remusctl takeover --force", (unsigned long long)a->replica_epoch,
		 a->cfg.takeover_window_ms);
	/* a takeover that failed meanwhile left FAULT, which stays */
	if (a->state == AGENT_READY)
		agent_set_state(a, AGENT_WAITING, "the lost primary's takeover window is over: "
				"the replica is not known to be the newest");
}

void agent_ready_lost_primary(struct agent *a, const char *why)
{
	/* the primary holds its output this long after it last heard from
	 * us, and we last heard from it no later: we expire first */
	double until = a->primary_heard_ms + a->cfg.takeover_window_ms;
	double left = (until - boot_ms()) / 1e3;

	if (left <= 0) {
		log_warn("primary lost (%s) after its takeover window: the replica is not ready",
			 why);
		/* not BACKUP any more: no primary, and no failover armed */
		agent_set_state(a, AGENT_WAITING, "primary lost (%s) after its takeover window: "
				"the replica is not known to be the newest", why);
		return;
	}
	agent_takeover_ready(a, "primary lost (%s) at committed epoch %llu", why,
			     (unsigned long long)a->replica.session_epoch);
	/* libev's timer does not count a suspend: a takeover checks this too */
	a->ready_until_ms = until;
	ev_timer_stop(a->loop, &a->ready_expiry);
	ev_timer_set(&a->ready_expiry, left, 0);
	ev_timer_start(a->loop, &a->ready_expiry);
}

void agent_ready_parked(struct agent *a, uint64_t epoch)
{
	ev_timer_stop(a->loop, &a->ready_expiry);
	agent_takeover_ready(a, "the primary parked the VM at epoch %llu (its last state)",
			     (unsigned long long)epoch);
	ready_mark_save(a);
}

void agent_ready_clear(struct agent *a)
{
	a->takeover_ready = false;
	ev_timer_stop(a->loop, &a->ready_expiry);
	ready_mark_clear(a);
}

bool agent_ready_give_up(struct agent *a, const char *host, uint64_t generation, uint64_t epoch)
{
	if (!a->cfg.takeover_manual || !a->takeover_ready || a->state != AGENT_READY ||
	    a->primary || !a->replica_known || a->replica_generation != generation ||
	    a->replica_epoch != epoch)
		return false;
	agent_ready_clear(a);
	/* the VM runs on from our epoch over there: ours never wins again */
	replica_mark_restored(a->cfg.state_dir);
	log_info("host %s resumes the VM it parked at epoch %llu: this replica is given up", host,
		 (unsigned long long)epoch);
	agent_set_state(a, AGENT_WAITING, "host %s resumed the VM it parked at epoch %llu", host,
			(unsigned long long)epoch);
	return true;
}

/* ---- a VM parked here ---- */

/* Still the very process that was parked: not exited, not a reused pid. */
static bool parked_alive(const struct parked_vm *p)
{
	uint64_t start;

	return !proc_exited(p->pid) && !proc_starttime(p->pid, &start) && start == p->starttime;
}

void agent_parked_discard(struct agent *a, const char *why)
{
	if (!a->parked_valid)
		return;
	a->parked_valid = false;
	parked_forget(a->cfg.state_dir);
	if (!parked_alive(&a->parked))
		return;
	/* stale now, and it must never run: gone before anything else starts
	 * a QEMU on its socket or disks */
	log_info("the VM parked here (QEMU pid %d, epoch %llu) is stale (%s): killed",
		 (int)a->parked.pid, (unsigned long long)a->parked.epoch, why);
	kill(a->parked.pid, SIGKILL);
	for (int ms = 0; ms < PARKED_KILL_WAIT_MS && parked_alive(&a->parked); ms += 50)
		usleep(50000);
}

void agent_takeover_init(struct agent *a)
{
	int rc;

	a->takeover_fd = -1;
	a->parked_valid = false;
	ev_timer_init(&a->ready_expiry, on_ready_expiry, 0, 0);
	a->ready_expiry.data = a;
	ready_mark_load(a);
	if (!a->cfg.host)
		return;
	rc = parked_load(a->cfg.state_dir, &a->parked);
	if (rc == -EINVAL)
		log_warn("%s/parked.json is unreadable: removed", a->cfg.state_dir);
	if (rc)
		return;
	if (!parked_alive(&a->parked)) {
		log_info("the VM parked here at epoch %llu is gone (QEMU pid %d): forgotten",
			 (unsigned long long)a->parked.epoch, (int)a->parked.pid);
		parked_forget(a->cfg.state_dir);
		return;
	}
	a->parked_valid = true;
	log_info("VM parked here at epoch %llu, generation %llu: QEMU pid %d paused on %s; it "
		 "resumes if this host is promoted before the VM runs elsewhere",
		 (unsigned long long)a->parked.epoch, (unsigned long long)a->parked.generation,
		 (int)a->parked.pid, a->parked.qmp);
}

void agent_takeover_stop(struct agent *a)
{
	if (a->takeover_fd >= 0) {
		char *text = agent_control_reply(a, false, "the agent stops");

		if (text)
			control_reply(a->takeover_fd, text);
		free(text);
		close(a->takeover_fd);
		a->takeover_fd = -1;
	}
	ev_timer_stop(a->loop, &a->ready_expiry);
	if (!a->become_primary)
		agent_parked_discard(a, "the agent stops");
}

/* QMP cont on the parked QEMU, then its replicator attaches. */
static char *resume_parked(struct agent *a, const char *why)
{
	struct qmp *q = NULL;
	int rc = qmp_connect(a->parked.qmp, PARKED_QMP_TIMEOUT_MS, &q);

	if (!rc)
		rc = qmp_execute(q, "cont", NULL, NULL, PARKED_QMP_TIMEOUT_MS);
	qmp_close(q);
	if (rc) {
		agent_parked_discard(a, "it could not be resumed");
		return agent_control_reply(a, false,
				"the VM parked here could not be resumed (%s): "
				"it is dropped; the other host gave up its copy, so only "
				"takeover --force there brings the VM back", strerror(-rc));
	}
	log_info("takeover: the VM parked here resumes at epoch %llu (QEMU pid %d): %s",
		 (unsigned long long)a->parked.epoch, (int)a->parked.pid, why);
	a->parked_valid = false;
	parked_forget(a->cfg.state_dir);
	agent_attach_here(a, a->parked.qmp, a->parked.generation, "promoted: the parked VM resumed");
	return agent_control_reply(a, true,
			"the VM parked here resumed at epoch %llu (QEMU pid %d); "
			"its replicator protects it next", (unsigned long long)a->parked.epoch,
			(int)a->parked.pid);
}

void agent_takeover_peer_answer(struct agent *a, const struct cold_facts *peer, const char *why)
{
	int fd = a->takeover_fd;
	char *text;

	a->takeover_fd = -1;
	if (fd < 0)
		return;
	if (!a->parked_valid || a->primary)
		text = agent_control_reply(a, false,
				"the parked VM went meanwhile: takeover again");
	else if (!peer)
		text = agent_control_reply(a, false,
				"the other host's agent does not answer (%s): it "
				"may run the VM, so the VM parked here stays paused (--force "
				"resumes it anyway)", why);
	else if (!peer->granted)
		text = agent_control_reply(a, false,
				"the other host (%s) did not give up the parked "
				"epoch %llu (it holds generation %llu epoch %llu%s): the VM "
				"parked here is not the newest (--force resumes it anyway)",
				peer->host, (unsigned long long)a->parked.epoch,
				(unsigned long long)peer->generation,
				(unsigned long long)peer->epoch,
				peer->ready ? "" : ", not waiting to be promoted");
	else
		text = resume_parked(a, "the other host gave up its copy of that epoch");
	if (text)
		control_reply(fd, text);
	free(text);
	close(fd);
}

/* ---- takeover ---- */

/* A QEMU of this VM runs here (on the pair's [vm] qmp, or as its libvirt
 * domain) and is not a parked one: it was started on this host (a first
 * start). A libvirt domain is never parked (its park quits it). */
static bool vm_started_here(const struct agent *a)
{
	const char *qmp = a->cfg.file.vm_qmp;

	return a->cfg.host && cold_start_vm_here(a) == 1 &&
	       !(a->parked_valid && qmp && !strcmp(a->parked.qmp, qmp));
}

bool agent_vm_started_here(const struct agent *a)
{
	/* what a takeover would attach to without --force (attach_started) */
	return !a->primary && !a->takeover_ready && !a->parked_valid && vm_started_here(a);
}

/* Why this agent must not restore the replica now, or NULL. */
static const char *restore_refusal(const struct agent *a, bool force, char *buf, size_t len)
{
	if (!a->replica_known)
		return "this host holds no committed replica of the VM";
	if (!force && a->takeover_ready && a->ready_until_ms && boot_ms() >= a->ready_until_ms) {
		snprintf(buf, len, "the lost primary's takeover window is over (this host may have "
			 "been suspended): it may have run on unprotected since; --force restores "
			 "the replica (epoch %llu) anyway", (unsigned long long)a->replica_epoch);
		return buf;
	}
	if (!a->takeover_ready && !force) {
		snprintf(buf, len, "the replica here (generation %llu, epoch %llu) is not known to "
			 "be the VM's newest: no primary of this agent was lost or parked within "
			 "its takeover window, and no cold start found it newer than the other "
			 "host's; --force restores it anyway",
			 (unsigned long long)a->replica_generation,
			 (unsigned long long)a->replica_epoch);
		return buf;
	}
	return NULL;
}

static char *restore_replica(struct agent *a, bool force)
{
	struct restore_result res;
	char buf[400], why[300];
	const char *no = restore_refusal(a, force, buf, sizeof(buf));

	if (no) {
		log_warn("takeover refused: %s", no);
		return agent_control_reply(a, false, "%s", no);
	}
	snprintf(why, sizeof(why), "promoted by the cluster manager%s: %.200s",
		 force && !a->takeover_ready ? " (forced)" : "",
		 a->takeover_ready ? a->takeover_why : "the operator forced it");
	if (agent_restore_here(a, "takeover", why, &res))
		return agent_control_reply(a, false,
				"restoring the VM failed: see the agent's log; the "
				"replica in %s is kept", a->cfg.state_dir);
	return agent_control_reply(a, true,
			"VM restored from epoch %llu as QEMU pid %d%s",
			(unsigned long long)res.epoch, (int)res.qemu_pid,
			a->become_primary ? "; its replicator protects it next" : "");
}

/* "QMP PATH" or "libvirt domain NAME", for messages. */
static const char *vm_here_name(const struct agent *a)
{
	static char text[4200];

	snprintf(text, sizeof(text), "%s %s", a->cfg.file.vm_domain ? "libvirt domain" : "QMP",
		 a->cfg.file.vm_domain ? a->cfg.file.vm_domain : a->cfg.file.vm_qmp);
	return text;
}

/* The QEMU started here gets its replicator, unless this host holds a
 * newer state of the VM (a ready replica or a parked QEMU), which that
 * QEMU would silently drop. */
static char *attach_started(struct agent *a, bool force)
{
	if ((a->takeover_ready || a->parked_valid) && !force)
		return agent_control_reply(a, false,
				"a QEMU of the VM runs here (%s), but this host "
				"holds the VM's newest state (%s): stop that QEMU, or "
				"--force attaches to it and drops that state",
				vm_here_name(a), a->parked_valid ? "a parked QEMU" :
				"a ready replica");
	agent_parked_discard(a, "a QEMU started here runs the VM");
	agent_attach_here(a, a->cfg.file.vm_qmp, a->replica_known ? a->replica_generation : 0,
			  "promoted: the VM was started here");
	return agent_control_reply(a, true,
			"the VM started here (%s): its replicator attaches to it", vm_here_name(a));
}

char *agent_takeover(struct agent *a, int fd, bool force, bool *keep)
{
	if (a->primary)
		return agent_control_reply(a, false,
				"the primary %s is connected and runs the VM: "
				"demote it first (remusctl park on its control socket)",
				a->peer);
	if (a->state == AGENT_RESTORING || a->state == AGENT_MASTER)
		return agent_control_reply(a, false, "the VM is being restored here already");
	if (a->takeover_fd >= 0)
		return agent_control_reply(a, false, "a takeover is under way");
	if (a->parked_valid && !parked_alive(&a->parked))
		agent_parked_discard(a, "its QEMU is gone");
	if (a->cfg.host && a->cfg.file.vm_domain && cold_start_vm_here(a) < 0)
		return agent_control_reply(a, false,
				"cannot tell whether libvirt domain %s runs here: this "
				"host's libvirt does not answer (see the agent's log)",
				a->cfg.file.vm_domain);
	if (vm_started_here(a))
		return attach_started(a, force);
	if (a->parked_valid) {
		if (force)
			return resume_parked(a, "forced by the operator");
		if (cold_start_ask_now(a))
			return agent_control_reply(a, false,
					"a VM is parked here, but the other host "
					"cannot be asked to give up its copy (--force resumes "
					"it anyway)");
		a->takeover_fd = fd;
		*keep = true;
		return NULL;
	}
	return restore_replica(a, force);
}

/* takeover = manual: a replica the VM may resume from, until the
 * cluster manager promotes this host or the readiness ends. */
void agent_takeover_ready(struct agent *a, const char *fmt, ...)
{
	char why[sizeof(a->takeover_why)];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	snprintf(a->takeover_why, sizeof(a->takeover_why), "%s", why);
	a->ready_until_ms = 0; /* a lost primary's window: its caller sets it */
	if (!a->takeover_ready)
		log_info("takeover = manual: ready to be promoted: %s", a->takeover_why);
	a->takeover_ready = true;
	agent_set_state(a, AGENT_READY, "%s: waiting to be promoted (remusctl takeover)",
		  a->takeover_why);
	notify_status("VM %s: replica ready, waiting to be promoted", agent_vm_name(a));
}
