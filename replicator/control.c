/* The replicator's control commands: `remusctl` connects, writes one
 * command line, reads one JSON reply, and the connection closes. Commands:
 * status, reset-stats, pause, resume, failover [TIMEOUT_MS]. failover
 * answers when the outcome is known (operator.c keeps the connection until
 * then). The socket, its mode and the peer check (root, and the members of
 * --control-group) are common/control_socket.c, which the agent's socket
 * shares. */
#include "ckpt_device.h"
#include "replicator.h"

#include <errno.h>
#include <json-c/json.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CONTROL_FAILOVER_DEFAULT_MS 30000

char *status_json(const struct replicator *r)
{
	const struct replicator_stats *s = &r->stats;
	struct json_object *o = json_object_new_object();
	double dirty_mean = ring_mean(&s->dirty_pages);
	char *text;

	/* which daemon answers: remusctl prints the agent's status otherwise */
	json_object_object_add(o, "daemon", json_object_new_string("replicator"));
	json_object_object_add(o, "vm", json_object_new_string(r->vm.name));
	json_object_object_add(o, "qemu_pid", json_object_new_int(r->vm.pid));
	json_object_object_add(o, "backup", json_object_new_string(r->cfg.backup.text));
	if (r->backups.n) { /* [host] sections: which host, and the one that may take over */
		const char *bound = backup_choice_bound(&r->backups);

		json_object_object_add(o, "backup_host",
				       json_object_new_string(r->backups.name[r->backups.cur]));
		json_object_object_add(o, "backup_bound",
				       bound ? json_object_new_string(bound) : NULL);
	}
	json_add_u64(o, "generation", r->generation);
	json_object_object_add(o, "protection", json_object_new_string(prot_name(&r->state)));
	json_object_object_add(o, "state_reason", json_object_new_string(r->state.reason));
	json_object_object_add(o, "epoch_policy",
			       json_object_new_string(epoch_policy_name(r->policy.cfg.kind)));
	json_add_double(o, "epoch_length_ms", r->policy.length_ms);
	json_object_object_add(o, "epoch_reason", json_object_new_string(r->policy.reason));
	/* smoothed; 100 while not measured (the policy's assumption) */
	json_add_double(o, "vcpu_busy_pct", r->policy.vcpu_busy * 100);
	json_add_u64(o, "vcpu_threads", (uint64_t)r->vcpu_load.nthreads);
	json_add_u64(o, "epoch_ms", r->cfg.epoch_ms);
	json_add_u64(o, "epoch", r->epoch);
	json_add_u64(o, "epochs_committed", s->epochs_committed);
	json_add_u64(o, "last_acked_epoch", s->last_acked_epoch);
	json_add_u64(o, "epochs_resent", s->epochs_nacked);
	json_add_u64(o, "stalls", s->stalls);
	json_add_u64(o, "resyncs", s->resyncs);
	json_add_double(o, "pause_p50_ms", ring_quantile(&s->pause_ms, 0.5));
	json_add_double(o, "pause_p99_ms", ring_quantile(&s->pause_ms, 0.99));
	json_add_double(o, "pause_max_ms", ring_max(&s->pause_ms));
	json_add_double(o, "pause_mean_ms", ring_mean(&s->pause_ms));
	json_add_u64(o, "pauses_recent", s->pause_ms.n);
	json_add_double(o, "pause_stop_p50_ms", ring_quantile(&s->stop_ms, 0.5));
	json_add_double(o, "pause_capture_p50_ms", ring_quantile(&s->capture_ms, 0.5));
	json_add_double(o, "pause_capture_p99_ms", ring_quantile(&s->capture_ms, 0.99));
	json_add_double(o, "pause_resume_p50_ms", ring_quantile(&s->resume_ms, 0.5));
	json_add_double(o, "ack_p50_ms", ring_quantile(&s->ack_ms, 0.5));
	json_add_double(o, "ack_p99_ms", ring_quantile(&s->ack_ms, 0.99));
	json_add_double(o, "dirty_pages_per_epoch", dirty_mean);
	json_add_double(o, "dirty_bytes_per_epoch", dirty_mean * PROTO_PAGE_SIZE);
	json_add_u64(o, "dirty_pages_total", s->dirty_pages_total);
	json_add_double(o, "checkpoint_bytes_per_epoch", ring_mean(&s->checkpoint_bytes));
	json_add_double(o, "checkpoint_bytes_p99", ring_quantile(&s->checkpoint_bytes, 0.99));
	json_add_double(o, "link_bytes_per_s", s->link_bytes_per_s);
	json_add_u64(o, "link_queued_bytes", r->link.out.bytes_queued);
	json_add_u64(o, "ram_bytes", r->vm.ram_size);
	json_add_u64(o, "early_epochs", s->early_epochs);
	json_add_u64(o, "reply_waits", s->reply_waits);
	operator_status(r, o);
	for (int i = 0; i < r->ndevices; i++)
		if (r->devices[i].ops->status)
			r->devices[i].ops->status(r->devices[i].state, o);
	text = strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
	json_object_put(o);
	return text;
}

/* Forget the recent-epoch figures (totals stay): benchmarks measure a
 * window, operators a period after a change. */
static char *reset_stats(struct replicator *r)
{
	struct replicator_stats *s = &r->stats;

	ring_clear(&s->pause_ms);
	ring_clear(&s->stop_ms);
	ring_clear(&s->capture_ms);
	ring_clear(&s->resume_ms);
	ring_clear(&s->dirty_pages);
	ring_clear(&s->ack_ms);
	ring_clear(&s->checkpoint_bytes);
	for (int i = 0; i < r->ndevices; i++)
		if (r->devices[i].ops->reset_stats)
			r->devices[i].ops->reset_stats(r->devices[i].state);
	return strdup("{\"ok\":true}");
}

/* "failover [TIMEOUT_MS]" and "park [TIMEOUT_MS]": the reply comes when
 * the outcome is known, on this connection, which the operator code then
 * owns (*keep). */
static char *failover(struct replicator *r, int fd, const char *arg, bool park, bool *keep)
{
	unsigned long ms = CONTROL_FAILOVER_DEFAULT_MS;
	char *end, *text;

	if (*arg) {
		errno = 0;
		ms = strtoul(arg, &end, 10);
		if (errno || *end || ms < 100 || ms > 3600000) {
			if (asprintf(&text, "{\"ok\":false,\"error\":\"%s: timeout '%.20s' is "
				     "not 100..3600000 ms\"}", park ? "park" : "failover", arg + 1) < 0)
				return NULL;
			return text;
		}
	}
	text = park ? operator_park(r, fd, (unsigned)ms) : operator_failover(r, fd, (unsigned)ms);
	*keep = text == NULL;
	return text;
}

char *control_command(void *data, int fd, const char *cmd, bool *keep)
{
	struct replicator *r = data;
	char *text;

	if (!strcmp(cmd, "status"))
		return status_json(r);
	if (!strcmp(cmd, "reset-stats"))
		return reset_stats(r);
	if (!strcmp(cmd, "pause"))
		return operator_pause(r);
	if (!strcmp(cmd, "resume"))
		return operator_resume(r);
	if (!strncmp(cmd, "failover", 8) && (!cmd[8] || cmd[8] == ' '))
		return failover(r, fd, cmd + 8, false, keep);
	if (!strncmp(cmd, "park", 4) && (!cmd[4] || cmd[4] == ' '))
		return failover(r, fd, cmd + 4, true, keep);
	if (!strncmp(cmd, "takeover", 8) && (!cmd[8] || cmd[8] == ' '))
		return strdup("{\"ok\":false,\"error\":\"takeover is the agent's (a promote): "
			      "this daemon is the replicator and runs the VM already\"}");
	if (!strcmp(cmd, "verify"))
		return verify_start(r, fd, keep);
	if (!strcmp(cmd, "test-failover"))
		return strdup("{\"ok\":false,\"error\":\"test-failover is the agent's: ask the "
			      "agent's control socket on the backup\"}");
	if (asprintf(&text, "{\"error\":\"unknown command '%.60s'\"}", cmd) < 0)
		return NULL;
	return text;
}

int control_open(struct replicator *r)
{
	return control_socket_open(&r->control, r->loop);
}

void control_close(struct replicator *r)
{
	control_socket_close(&r->control);
}
