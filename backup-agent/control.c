/* The agent's control commands (--control PATH; the socket, its mode and
 * the peer check are common/control_socket.c, shared with the replicator):
 * status, reset-stats, test-failover and takeover. pause, resume, park and
 * failover are the replicator's: the primary decides them, and the agent
 * learns of them on the link. */
#include "agent.h"

#include "clock.h"

#include <json-c/json.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void add_str(struct json_object *o, const char *key, const char *v)
{
	json_object_object_add(o, key, v ? json_object_new_string(v) : NULL);
}

/* Seconds, to the millisecond: raw numbers, without the noise. */
static void add_seconds(struct json_object *o, const char *key, double ms)
{
	json_add_double(o, key, (double)(long long)ms / 1e3);
}

/* A wall clock stepped since the commit must not age the replica: only a
 * replica found in the state dir at start is aged on the wall clock (its
 * file's time is all there is), and never below 0. */
static double replica_age_ms(const struct agent *a)
{
	long long wall_ms;

	if (a->replica_committed_boot_ms)
		return boot_ms() - a->replica_committed_boot_ms;
	wall_ms = unix_ms() - a->replica_committed_ms;
	return wall_ms > 0 ? (double)wall_ms : 0;
}

static void add_bool(struct json_object *o, const char *key, bool v)
{
	json_object_object_add(o, key, json_object_new_boolean(v));
}

/* Would a primary lost now be restored here on the agent's own decision
 * (as failover() decides)? Never with takeover = manual. */
static bool failover_armed(const struct agent *a)
{
	return agent_failover_now(a) == FAILOVER_RESTORE &&
	       (a->primary || a->grace_until_ms) && a->state != AGENT_FAULT;
}

/* The VM's name: the primary's, or the replica's of an earlier session. */
static const char *status_vm(const struct agent *a)
{
	if (a->vm_name[0])
		return a->vm_name;
	return a->replica_vm[0] ? a->replica_vm : NULL;
}

char *agent_status_json(const struct agent *a)
{
	struct json_object *o = json_object_new_object();
	const struct peer_link *p = a->primary;
	char *text;

	add_str(o, "daemon", "agent");
	add_str(o, "vm", status_vm(a));
	add_str(o, "pair", a->cfg.pair_name);
	add_str(o, "state", agent_state_name(a->state));
	add_str(o, "state_reason", a->state_reason);
	add_seconds(o, "state_age_s", mono_ms() - a->state_since_ms);
	add_str(o, "listen", a->cfg.listen.text);
	add_str(o, "state_dir", a->cfg.state_dir);
	/* the primary while one is connected */
	add_str(o, "peer", p ? a->peer : NULL);
	add_str(o, "peer_identity", p ? p->identity : NULL);
	if (a->replica_known) {
		json_add_u64(o, "replica_epoch", a->replica_epoch);
		json_add_u64(o, "replica_generation", a->replica_generation);
	} else {
		add_str(o, "replica_epoch", NULL);
		add_str(o, "replica_generation", NULL);
	}
	if (a->replica_known && a->replica_committed_ms) {
		json_object_object_add(o, "replica_committed_unix_ms",
				       json_object_new_int64(a->replica_committed_ms));
		add_seconds(o, "replica_age_s", replica_age_ms(a));
	} else {
		add_str(o, "replica_committed_unix_ms", NULL);
		add_str(o, "replica_age_s", NULL);
	}
	add_bool(o, "failover_armed", failover_armed(a));
	/* what fences, not the command: it may hold a power switch's password */
	add_str(o, "fence", a->cfg.fence_cmd ? "command" : a->cfg.fence_disabled ? "none" :
		"unconfigured");
	add_bool(o, "no_failover", a->cfg.no_failover);
	add_str(o, "takeover", a->cfg.takeover_manual ? "manual" : "auto");
	/* takeover = manual: would `remusctl takeover` restore here unforced */
	add_bool(o, "takeover_ready", a->takeover_ready);
	add_str(o, "takeover_reason", a->takeover_ready ? a->takeover_why : NULL);
	/* a QEMU listens on [vm] qmp here: promoting attaches to it */
	add_bool(o, "vm_started_here", agent_vm_started_here(a));
	/* a QEMU parked here, paused (remusctl park), and its epoch */
	if (a->parked_valid)
		json_add_u64(o, "parked_epoch", a->parked.epoch);
	else
		add_str(o, "parked_epoch", NULL);
	json_add_u64(o, "epochs_committed", a->replica.commits);
	json_add_u64(o, "epochs_discarded", a->replica.discards);
	/* a storage that keeps losing what it is given: for an alert */
	json_add_u64(o, "initial_copies_lost", a->copies_lost);
	/* null until an epoch commits: not a time of 0 */
	if (a->commit_ms.n) {
		json_add_double(o, "commit_p50_ms", ring_quantile(&a->commit_ms, 0.5));
		json_add_double(o, "commit_p99_ms", ring_quantile(&a->commit_ms, 0.99));
	} else {
		add_str(o, "commit_p50_ms", NULL);
		add_str(o, "commit_p99_ms", NULL);
	}
	json_add_u64(o, "commits_recent", a->commit_ms.n);
	json_add_u64(o, "ram_bytes", p ? a->replica.ram_size : 0);
	json_add_u64(o, "replica_disks", p ? a->replica.ndisks : 0);
	if (a->state == AGENT_MASTER)
		json_object_object_add(o, "qemu_pid", json_object_new_int(a->master_pid));
	text = strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
	json_object_put(o);
	return text;
}

/* Forget the recent commit times (totals stay), as the replicator's
 * reset-stats forgets its recent figures. */
static char *reset_stats(struct agent *a)
{
	memset(&a->commit_ms, 0, sizeof(a->commit_ms));
	return strdup("{\"ok\":true}");
}

/* The primary's verbs, asked of the agent. */
static bool replicator_verb(const char *cmd)
{
	static const char *const verbs[] = { "pause", "resume", "failover", "verify", "park" };

	for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++) {
		size_t n = strlen(verbs[i]);

		if (!strncmp(cmd, verbs[i], n) && (!cmd[n] || cmd[n] == ' '))
			return true;
	}
	return false;
}

char *agent_control_reply(const struct agent *a, bool ok, const char *fmt, ...)
{
	struct json_object *o = json_object_new_object();
	char msg[600], *text;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	json_object_object_add(o, "ok", json_object_new_boolean(ok));
	add_str(o, "daemon", "agent");
	if (a)
		add_str(o, "state", agent_state_name(a->state));
	add_str(o, ok ? "message" : "error", msg);
	text = strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
	json_object_put(o);
	return text;
}

char *agent_control_command(void *data, int fd, const char *cmd, bool *keep)
{
	struct agent *a = data;

	if (!strcmp(cmd, "status"))
		return agent_status_json(a);
	if (!strcmp(cmd, "reset-stats"))
		return reset_stats(a);
	if (!strcmp(cmd, "test-failover"))
		return test_failover_start(a, fd, keep);
	if (!strcmp(cmd, "takeover") || !strcmp(cmd, "takeover --force"))
		return agent_takeover(a, fd, !strcmp(cmd, "takeover --force"), keep);
	if (replicator_verb(cmd))
		return agent_control_reply(NULL, false, "'%.*s' is a verb of remus-replicator, not "
					   "of the agent: the primary pauses, resumes, verifies and "
					   "hands the VM over; use the replicator's control socket on "
					   "the primary", (int)strcspn(cmd, " "), cmd);
	return agent_control_reply(NULL, false, "unknown command '%.*s'", 60, cmd);
}
