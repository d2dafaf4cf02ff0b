/* remusctl takeover: a cluster manager's promote, with [backup] takeover =
 * manual (agent.h). The VM comes to run here one of three ways:
 *  - a QEMU of the VM started on this host (listening on [vm] qmp): its
 *    replicator attaches to it;
 *  - a QEMU parked here (parked.h): it resumes, if the other host's agent
 *    still holds the parked epoch unused (asked over the pair's link);
 *  - otherwise the replica is restored, when it is known to be the VM's
 *    newest (takeover_ready), or whatever it is with --force. */
#include "agent.h"
#include "log.h"
#include "procfs.h"
#include "qmp.h"

#include <errno.h>
#include <json-c/json.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PARKED_QMP_TIMEOUT_MS 3000

/* {"ok":...,"daemon":"agent","state":...,"message" or "error":TEXT} */
static char * __attribute__((format(printf, 3, 4)))
takeover_reply(const struct agent *a, bool ok, const char *fmt, ...)
{
	struct json_object *o = json_object_new_object();
	char msg[600], *text;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	json_object_object_add(o, "ok", json_object_new_boolean(ok));
	json_object_object_add(o, "daemon", json_object_new_string("agent"));
	json_object_object_add(o, "state", json_object_new_string(agent_state_name(a->state)));
	json_object_object_add(o, ok ? "message" : "error", json_object_new_string(msg));
	text = strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
	json_object_put(o);
	return text;
}

/* ---- a VM parked here ---- */

/* pid is still the QEMU that was parked (not a reused pid). */
static bool parked_alive(const struct parked_vm *p)
{
	char comm[32] = "";
	FILE *f;
	char path[64];

	snprintf(path, sizeof(path), "/proc/%d/comm", (int)p->pid);
	f = fopen(path, "re");
	if (!f)
		return false;
	if (!fgets(comm, sizeof(comm), f))
		comm[0] = 0;
	fclose(f);
	return !strncmp(comm, "qemu-system", 11) && !proc_exited(p->pid) &&
	       cold_start_listens(p->qmp);
}

void agent_takeover_init(struct agent *a)
{
	int rc;

	a->takeover_fd = -1;
	a->parked_valid = false;
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

void agent_parked_discard(struct agent *a, const char *why)
{
	if (!a->parked_valid)
		return;
	a->parked_valid = false;
	parked_forget(a->cfg.state_dir);
	/* still that paused QEMU: it is stale now and must never run */
	if (parked_alive(&a->parked)) {
		log_info("the VM parked here (QEMU pid %d, epoch %llu) is stale (%s): killed",
			 (int)a->parked.pid, (unsigned long long)a->parked.epoch, why);
		kill(a->parked.pid, SIGKILL);
	}
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
		return takeover_reply(a, false, "the VM parked here could not be resumed (%s): "
				      "it is dropped; takeover again restores the replica if it "
				      "is the newest", strerror(-rc));
	}
	log_info("takeover: the VM parked here resumes at epoch %llu (QEMU pid %d): %s",
		 (unsigned long long)a->parked.epoch, (int)a->parked.pid, why);
	a->parked_valid = false;
	parked_forget(a->cfg.state_dir);
	agent_attach_here(a, a->parked.qmp, a->parked.generation, "promoted: the parked VM resumed");
	return takeover_reply(a, true, "the VM parked here resumed at epoch %llu (QEMU pid %d); "
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
		text = takeover_reply(a, false, "the parked VM went meanwhile: takeover again");
	else if (!peer)
		text = takeover_reply(a, false, "the other host's agent does not answer (%s): it "
				      "may run the VM, so the VM parked here stays paused (--force "
				      "resumes it anyway)", why);
	else if (!peer->ready || peer->generation != a->parked.generation ||
		 peer->epoch != a->parked.epoch)
		text = takeover_reply(a, false, "the other host (%s) holds generation %llu epoch "
				      "%llu%s, not the parked epoch %llu unused: the VM parked here "
				      "is not the newest (--force resumes it anyway)", peer->host,
				      (unsigned long long)peer->generation,
				      (unsigned long long)peer->epoch,
				      peer->ready ? "" : " and is not waiting to be promoted",
				      (unsigned long long)a->parked.epoch);
	else
		text = resume_parked(a, "the other host holds that epoch unused");
	if (text)
		control_reply(fd, text);
	free(text);
	close(fd);
}

void agent_takeover_stop(struct agent *a)
{
	if (a->takeover_fd >= 0) {
		char *text = takeover_reply(a, false, "the agent stops");

		if (text)
			control_reply(a->takeover_fd, text);
		free(text);
		close(a->takeover_fd);
		a->takeover_fd = -1;
	}
	if (!a->become_primary)
		agent_parked_discard(a, "the agent stops");
}

/* ---- takeover ---- */

/* A QEMU of this VM listens on the pair's [vm] qmp here and is not a
 * parked one: it was started on this host (a first start). */
static bool vm_started_here(const struct agent *a)
{
	return a->cfg.host && cold_start_listens(a->cfg.file.vm_qmp) &&
	       !(a->parked_valid && !strcmp(a->parked.qmp, a->cfg.file.vm_qmp));
}

bool agent_vm_started_here(const struct agent *a)
{
	return !a->primary && vm_started_here(a);
}

/* Why this agent must not restore the replica now, or NULL. */
static const char *restore_refusal(const struct agent *a, bool force, char *buf, size_t len)
{
	if (!a->replica_known)
		return "this host holds no committed replica of the VM";
	if (!a->takeover_ready && !force) {
		snprintf(buf, len, "the replica here (generation %llu, epoch %llu) is not known to "
			 "be the VM's newest: no primary of this agent was lost or parked, and no "
			 "cold start found it newer than the other host's; --force restores it "
			 "anyway", (unsigned long long)a->replica_generation,
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
		return takeover_reply(a, false, "%s", no);
	}
	snprintf(why, sizeof(why), "promoted by the cluster manager%s: %s",
		 force && !a->takeover_ready ? " (forced)" : "",
		 a->takeover_ready ? a->takeover_why : "the operator forced it");
	if (agent_restore_here(a, "takeover", why, &res))
		return takeover_reply(a, false, "restoring the VM failed: see the agent's log; the "
				      "replica in %s is kept", a->cfg.state_dir);
	return takeover_reply(a, true, "VM restored from epoch %llu as QEMU pid %d%s",
			      (unsigned long long)res.epoch, (int)res.qemu_pid,
			      a->become_primary ? "; its replicator protects it next" : "");
}

char *agent_takeover(struct agent *a, int fd, bool force, bool *keep)
{
	if (a->primary)
		return takeover_reply(a, false, "the primary %s is connected and runs the VM: "
				      "demote it first (remusctl park on its control socket)",
				      a->peer);
	if (a->state == AGENT_RESTORING || a->state == AGENT_MASTER)
		return takeover_reply(a, false, "the VM is being restored here already");
	if (a->takeover_fd >= 0)
		return takeover_reply(a, false, "a takeover is under way");
	if (vm_started_here(a)) {
		agent_attach_here(a, a->cfg.file.vm_qmp,
				  a->replica_known ? a->replica_generation : 0,
				  "promoted: the VM was started here");
		return takeover_reply(a, true, "the VM started here (%s): its replicator attaches "
				      "to it", a->cfg.file.vm_qmp);
	}
	if (a->parked_valid && !parked_alive(&a->parked))
		agent_parked_discard(a, "its QEMU is gone");
	if (a->parked_valid) {
		if (force)
			return resume_parked(a, "forced by the operator");
		if (cold_start_ask_now(a)) {
			return takeover_reply(a, false, "a VM is parked here, but the other host "
					      "cannot be asked whether it is still the newest "
					      "(--force resumes it anyway)");
		}
		a->takeover_fd = fd;
		*keep = true;
		return NULL;
	}
	return restore_replica(a, force);
}
