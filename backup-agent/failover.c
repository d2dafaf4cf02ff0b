/* The primary is lost, or the VM is to run here: fence it, restore the
 * VM from the replica, and say what happened. Each path ends in MASTER
 * (the VM runs here, the loop ends) or FAULT (the replica kept, and why
 * it was not restored). */
#include "agent.h"

#include "clock.h"
#include "log.h"
#include "notify.h"
#include "restore.h"

#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* The least a fence is given: below it, the takeover is too late. */
#define FENCE_MIN_MS 100.0

/* The primary is lost, but its hold on output may have ended: a takeover
 * now would roll back what clients saw, and may run a second copy of the
 * VM beside one the primary moved to a spare host. */
static void refuse_late_failover(struct agent *a, const char *why)
{
	const struct takeover_deadline *d = &a->deadline;
	double silent_s = (boot_ms() - a->primary_heard_ms) / 1e3;
	bool stalled = d->stall_to_ms > 0 && a->primary_heard_ms == d->stall_from_ms;
	char reason[300];

	log_err("primary lost (%s), too late to take over: this agent last heard it %.1f s "
		"ago%s, and it holds its output %u ms (and a margin) after it last hears "
		"from this agent, then runs on unprotected, or moves to a spare host. So the VM "
		"is NOT restored from epoch %llu here. If the primary is really gone, stop this "
		"agent (SIGTERM), then remus-agent --restore --state-dir %s brings it back at "
		"that epoch, which may be older than what clients saw. Waiting for the primary",
		why, silent_s, stalled ? " (it did not run itself for part of that)" : "",
		agent_takeover_after_ms(a), (unsigned long long)a->replica.session_epoch,
		a->cfg.state_dir);
	snprintf(reason, sizeof(reason), "primary lost (%s) %.1f s after it was last heard%s: "
		 "too late to take over", why, silent_s, stalled ? ", this agent stalled" : "");
	agent_set_state(a, AGENT_FAULT, "%s; VM not restored, waiting for the primary", reason);
	agent_notify(a, "fault", reason);
}

/* Fence the lost primary, if configured, by done_by (boot_ms()). true: the
 * VM may be restored. */
static bool fence_primary(struct agent *a, const char *why, long long lost_at, double done_by,
			  double *fence_ms)
{
	struct hook_event ev;
	struct hook_result res;
	char lost[48], text[160], reason[300];
	double left_ms;
	unsigned limit_ms = a->cfg.fence_timeout_ms;

	*fence_ms = 0;
	if (!a->cfg.fence_cmd)
		return true; /* --no-fence, or warned about at start */
	left_ms = done_by - boot_ms();
	if (left_ms < FENCE_MIN_MS) {
		/* a fence killed in the middle helps nobody */
		refuse_late_failover(a, why);
		return false;
	}
	if (left_ms < limit_ms) {
		limit_ms = (unsigned)left_ms;
		log_warn("the fence gets %u ms, not --fence-timeout-ms %u: after that the primary "
			 "may release output this replica lacks", limit_ms, a->cfg.fence_timeout_ms);
	}
	agent_set_state(a, AGENT_FENCING, "primary lost (%s): the fence command runs", why);
	agent_answer_waiting(a);
	agent_notify(a, "fencing", why);
	agent_hook_event(a, &ev, "fencing", why);
	hook_event_var(&ev, lost, sizeof(lost), "LOST_AT_MS", "%lld", lost_at);
	log_info("fencing the primary %s%s%s before taking over: %s", a->peer,
		 a->peer_host[0] ? ", host " : "", a->peer_host, a->cfg.fence_cmd);
	if (hook_run_sync("fence command", a->cfg.fence_cmd, &ev, limit_ms, &res) == 0) {
		*fence_ms = res.ms;
		if (hook_result_ok(&res)) {
			log_info("primary fenced in %.0f ms", res.ms);
			return true;
		}
		hook_result_text(&res, limit_ms, text, sizeof(text));
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
	agent_notify(a, "fence-failed", reason);
	return false;
}

/* The restored VM runs: say so, with the failover's figures. */
void agent_notify_master(struct agent *a, const struct restore_result *res,
			 long long lost_at, double fence_ms, const char *why)
{
	struct hook_event ev;
	char v[4][48];

	agent_hook_event(a, &ev, "master", why);
	ev.epoch = res->epoch;
	hook_event_var(&ev, v[0], sizeof(v[0]), "LOST_AT_MS", "%lld", lost_at);
	hook_event_var(&ev, v[1], sizeof(v[1]), "FENCE_MS", "%.0f", fence_ms);
	hook_event_var(&ev, v[2], sizeof(v[2]), "RESTORE_MS", "%.0f", res->total_ms);
	hook_event_var(&ev, v[3], sizeof(v[3]), "QEMU_PID", "%d", (int)res->qemu_pid);
	hook_notify(&a->hooks, &ev);
}

/* The backup host this host's last replicator bound belonged to an older
 * run of the VM, which the restore ends: the replicator we become owes it
 * nothing (replicator/backup_choice.h). */
static void forget_backup_host(const struct agent *a)
{
	char path[PATH_MAX];

	if ((size_t)snprintf(path, sizeof(path), "%s/%s", a->cfg.state_dir, BACKUP_HOST_FILE) <
		    sizeof(path) &&
	    unlink(path) == 0)
		log_info("removed %s: the VM restored here is protected to any host", path);
}

/* The VM runs here now. In a pair whose roles move, this host protects
 * it next: once the loop ends, main() makes us its replicator. */
void agent_become_primary(struct agent *a, const struct restore_result *res)
{
	struct replica_info info;

	if (!a->cfg.host)
		return;
	if (res->libvirt_domain[0]) {
		a->master_qmp[0] = 0;
		snprintf(a->master_domain, sizeof(a->master_domain), "%s", res->libvirt_domain);
	} else {
		a->master_domain[0] = 0;
		snprintf(a->master_qmp, sizeof(a->master_qmp), "%s", res->qmp_path);
	}
	forget_backup_host(a);
	a->master_generation = 0;
	if (!replica_load_info(a->cfg.state_dir, &info)) {
		a->master_generation = replica_generation(info.vm);
		replica_info_free(&info);
	}
	a->become_primary = true;
}

/* What a lost primary leads to, from what the agent knows now. */
enum failover_verdict agent_failover_now(const struct agent *a)
{
	const struct failover_facts f = {
		.committed = a->replica.session_committed,
		.paused = a->session_paused,
		.takeover_ready = a->takeover_ready,
		.no_failover = a->cfg.no_failover,
		.takeover_manual = a->cfg.takeover_manual,
	};

	return agent_failover_verdict(&f);
}

/* The primary is lost and the replica is not restored: say why. */
static void refuse_failover(struct agent *a, enum failover_verdict v, const char *why)
{
	char reason[300];

	switch (v) {
	case FAILOVER_PAUSED:
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
	case FAILOVER_NOT_COMMITTED:
		log_err("primary lost (%s) before any checkpoint of this session committed; "
			"a replica from an earlier session would roll the VM back, so it is not "
			"restored automatically (stop this agent, then remus-agent --restore "
			"--state-dir %s does it)",
			why, a->cfg.state_dir);
		snprintf(reason, sizeof(reason), "primary lost (%s) before its first checkpoint "
			 "committed: VM not restored", why);
		agent_set_state(a, AGENT_FAULT, "%s", reason);
		agent_notify(a, "fault", reason);
		return;
	case FAILOVER_STAY_READY:
		/* parked: its QEMU stopped at the epoch we hold */
		log_info("the primary of VM %s is gone (%s); the replica stays ready", a->vm_name,
			 why);
		agent_takeover_ready(a, "%s", a->takeover_why);
		return;
	case FAILOVER_DISABLED:
		log_err("primary lost (%s); --no-failover: replica kept, VM not restored (stop "
			"this agent, then remus-agent --restore --state-dir %s)", why,
			a->cfg.state_dir);
		snprintf(reason, sizeof(reason), "primary lost (%s); --no-failover", why);
		agent_set_state(a, AGENT_FAULT, "%s: VM not restored", reason);
		agent_notify(a, "fault", reason);
		return;
	case FAILOVER_AWAIT_PROMOTION:
		/* The cluster manager fences the old primary and promotes a
		 * host: this one restores only when it is told. */
		log_warn("primary lost (%s); takeover = manual: the replica (epoch %llu) waits "
			 "for the cluster manager to promote this host (remusctl takeover)", why,
			 (unsigned long long)a->replica.session_epoch);
		agent_ready_lost_primary(a, why);
		agent_notify(a, "primary-lost", why);
		return;
	case FAILOVER_RESTORE:
		return;
	}
}

void agent_failover(struct agent *a, const char *why)
{
	struct restore_result res;
	enum failover_verdict v = agent_failover_now(a); /* before the session ends */
	long long lost_at = unix_ms();
	double fence_ms, done_by;

	agent_drop_primary(a);
	if (v != FAILOVER_RESTORE) {
		refuse_failover(a, v, why);
		return;
	}
	done_by = takeover_deadline_by(&a->deadline, a->primary_heard_ms,
				       agent_takeover_after_ms(a));
	if (boot_ms() >= done_by) {
		refuse_late_failover(a, why);
		return;
	}
	log_err("primary lost (%s): taking over from the last committed checkpoint", why);
	test_failover_stop(a); /* no clone beside the real VM */
	if (!fence_primary(a, why, lost_at, done_by, &fence_ms))
		return;
	log_info("restoring the VM from epoch %llu", (unsigned long long)a->replica.session_epoch);
	agent_set_state(a, AGENT_RESTORING, "primary lost (%s): restoring from epoch %llu", why,
		  (unsigned long long)a->replica.session_epoch);
	agent_answer_waiting(a);
	if (restore_vm(&a->cfg.restore, &res)) {
		log_err("FAILOVER FAILED: the replica in %s is intact; fix the cause and run "
			"remus-agent --restore --state-dir %s", a->cfg.state_dir, a->cfg.state_dir);
		agent_set_state(a, AGENT_FAULT, "restore failed: see the agent's log; the agent exits");
		agent_notify(a, "fault", "restore failed: see the agent's log");
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
		agent_become_primary(a, &res);
		agent_set_state(a, AGENT_MASTER, "primary lost: VM restored from epoch %llu as QEMU pid %d; "
			  "%s", res.epoch, (int)res.qemu_pid, a->become_primary ?
			  "protecting it to the other host next" : "the agent exits");
		agent_notify_master(a, &res, lost_at, fence_ms,
				    "primary lost; VM restored from the replica");
		a->exit_code = 0;
	}
	agent_answer_waiting(a);
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
	a->grace_until_ms = 0; /* a lost primary's grace: the operator decided */
	agent_set_state(a, AGENT_RESTORING, "%s: restoring from epoch %llu", what,
		  (unsigned long long)a->replica_epoch);
	agent_answer_waiting(a);
	if (restore_vm(&a->cfg.restore, res)) {
		log_err("%s FAILED: the replica in %s is intact; see above", what, a->cfg.state_dir);
		agent_set_state(a, AGENT_FAULT, "%s: restore failed: see the agent's log", what);
		snprintf(reason, sizeof(reason), "%s: restore failed", what);
		agent_notify(a, "fault", reason);
		return -1;
	}
	log_info("%s: VM running from epoch %llu as QEMU pid %d (%.0f ms)", what, res->epoch,
		 (int)res->qemu_pid, res->total_ms);
	a->master_pid = (int)res->qemu_pid;
	agent_ready_clear(a);
	agent_become_primary(a, res);
	agent_set_state(a, AGENT_MASTER, "%s: VM restored from epoch %llu as QEMU pid %d; %s", what,
		  res->epoch, (int)res->qemu_pid, a->become_primary ?
		  "protecting it to the other host next" : "the agent exits");
	agent_notify_master(a, res, unix_ms(), 0, why);
	a->exit_code = 0;
	ev_break(a->loop, EVBREAK_ALL);
	return 0;
}

void agent_restore_cold(struct agent *a, const char *why)
{
	struct restore_result res;

	if (!agent_restore_here(a, "cold start", why, &res))
		agent_answer_waiting(a);
}

/* The VM runs here now, in a QEMU already running on qmp (one started on
 * this host, or a parked one resumed): its replicator attaches to it
 * once the loop ends. */
void agent_attach_here(struct agent *a, const char *qmp, uint64_t generation, const char *why)
{
	const char *domain = qmp ? NULL : a->cfg.file.vm_domain;

	snprintf(a->master_qmp, sizeof(a->master_qmp), "%s", qmp ? qmp : "");
	snprintf(a->master_domain, sizeof(a->master_domain), "%s", domain ? domain : "");
	a->master_generation = generation;
	a->become_primary = true;
	agent_ready_clear(a);
	cold_start_stop(a);
	agent_set_state(a, AGENT_MASTER, "%s: its replicator attaches to it (%s%s)", why,
			domain ? "libvirt domain " : "", domain ? domain : qmp);
	a->exit_code = 0;
	ev_break(a->loop, EVBREAK_ALL);
}

int agent_restore_and_report(struct agent *a)
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

void agent_warn_no_fence(const struct agent *a)
{
	if (a->cfg.fence_cmd || a->cfg.fence_disabled || a->cfg.no_failover ||
	    a->cfg.takeover_manual)
		return;
	log_warn("NO FENCING CONFIGURED: if the replication link fails while the primary "
		 "lives, this agent takes over and TWO copies of the VM run. Give --fence CMD "
		 "(a command that powers the primary off and exits 0 only when it is off), or "
		 "--no-fence where a lost link always means a lost primary");
}
