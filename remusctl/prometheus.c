/* remusctl status --prometheus: a status reply in the Prometheus text
 * exposition format (version 0.0.4), for node_exporter's textfile
 * collector:
 *
 *   remusctl --control /run/remus/vm1.replicator.ctl status --prometheus \
 *       > /var/lib/node_exporter/textfile/remus_vm1.prom.$$ &&
 *       mv /var/lib/node_exporter/textfile/remus_vm1.prom.$$ \
 *          /var/lib/node_exporter/textfile/remus_vm1.prom
 *
 * Every metric is named remus_..., has a HELP and a TYPE line before its
 * samples, and the labels vm and daemon ("replicator" or "agent"); counters
 * end in _total; times are in seconds. Only what the reply holds is
 * written: a figure the daemon does not report (an older one, or the
 * agent's replica age before any commit) is left out, not written as 0.
 *
 * One table of metrics serves both daemons, so that a name means the same
 * thing, with the same HELP and TYPE, whichever wrote it: the textfile
 * collector refuses files that disagree on them. */
#include "remusctl.h"

#include "text.h"

#include <json-c/json.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

enum { REP = 1, AGT = 2 };

struct metric {
	const char *name;
	const char *type;     /* "counter" or "gauge" */
	const char *help;
	const char *key;      /* in the status reply (in each "net" object: per_nic) */
	double scale;         /* ms to seconds: 1e-3 */
	unsigned daemons;
	bool per_nic;         /* one sample per NIC, label netdev */
};

static const struct metric metrics[] = {
	{ "remus_epochs_committed_total", "counter",
	  "Epochs committed on the backup since the daemon started (replicator: acknowledged "
	  "by the backup; agent: committed into the replica).",
	  "epochs_committed", 1, REP | AGT, false },
	{ "remus_epochs_resent_total", "counter",
	  "Epochs the backup discarded and the replicator sent again.",
	  "epochs_resent", 1, REP, false },
	{ "remus_epochs_discarded_total", "counter",
	  "Epochs the agent discarded (incomplete or corrupt) instead of committing them.",
	  "epochs_discarded", 1, AGT, false },
	{ "remus_initial_copies_lost", "gauge",
	  "Sessions in a row whose initial copy the agent's storage failed to sync (none "
	  "committed since); 0 once one commits.",
	  "initial_copies_lost", 1, AGT, false },
	{ "remus_stalls_total", "counter",
	  "Times the replicator found protection standing still (an epoch sent whole and "
	  "never acknowledged, no checkpoint scheduled) and set it going again.",
	  "stalls", 1, REP, false },
	{ "remus_resyncs_total", "counter",
	  "Full copies of the VM to the backup (initial syncs and resyncs).",
	  "resyncs", 1, REP, false },
	{ "remus_last_acked_epoch", "gauge",
	  "The last epoch the backup acknowledged as committed.",
	  "last_acked_epoch", 1, REP, false },
	{ "remus_replica_epoch", "gauge",
	  "The epoch of the replica committed in the agent's state directory.",
	  "replica_epoch", 1, AGT, false },
	{ "remus_replica_age_seconds", "gauge",
	  "Time since the agent's replica was committed.",
	  "replica_age_s", 1, AGT, false },
	{ "remus_failover_armed", "gauge",
	  "1 if the agent would restore the VM were the primary lost now, else 0.",
	  "failover_armed", 1, AGT, false },
	{ "remus_epoch_length_seconds", "gauge",
	  "The length of the current epoch, as the epoch policy set it.",
	  "epoch_length_ms", 1e-3, REP, false },
	{ "remus_pause_p50_seconds", "gauge",
	  "Median time the VM was paused per checkpoint, over the recent epochs.",
	  "pause_p50_ms", 1e-3, REP, false },
	{ "remus_pause_p99_seconds", "gauge",
	  "99th percentile of the time the VM was paused per checkpoint, over the recent epochs.",
	  "pause_p99_ms", 1e-3, REP, false },
	{ "remus_ack_p50_seconds", "gauge",
	  "Median time from the end of a checkpoint to the backup's acknowledgement, recent epochs.",
	  "ack_p50_ms", 1e-3, REP, false },
	{ "remus_ack_p99_seconds", "gauge",
	  "99th percentile of the time from the end of a checkpoint to the backup's "
	  "acknowledgement, recent epochs.",
	  "ack_p99_ms", 1e-3, REP, false },
	{ "remus_commit_p50_seconds", "gauge",
	  "Median time the agent took to commit an epoch into the replica, recent epochs.",
	  "commit_p50_ms", 1e-3, AGT, false },
	{ "remus_commit_p99_seconds", "gauge",
	  "99th percentile of the time the agent took to commit an epoch, recent epochs.",
	  "commit_p99_ms", 1e-3, AGT, false },
	{ "remus_dirty_pages_per_epoch", "gauge",
	  "Mean number of guest pages dirtied per epoch, over the recent epochs.",
	  "dirty_pages_per_epoch", 1, REP, false },
	{ "remus_dirty_pages_total", "counter",
	  "Guest pages captured as dirty since the replicator started.",
	  "dirty_pages_total", 1, REP, false },
	{ "remus_link_bytes_per_second", "gauge",
	  "Bytes per second sent to the backup on the replication link.",
	  "link_bytes_per_s", 1, REP, false },
	{ "remus_compress_raw_bytes_total", "counter",
	  "Bytes of guest pages that went through checkpoint compression.",
	  "compress_raw_bytes_total", 1, REP, false },
	{ "remus_compress_wire_bytes_total", "counter",
	  "Bytes those pages took on the wire, compressed or (where that did not pay) plain.",
	  "compress_wire_bytes_total", 1, REP, false },
	{ "remus_link_queued_bytes", "gauge",
	  "Bytes queued for the replication link, not yet sent.",
	  "link_queued_bytes", 1, REP, false },
	{ "remus_netbuf_frames_held", "gauge",
	  "Frames of the VM's output held until their checkpoint commits.",
	  "frames_held", 1, REP, true },
	{ "remus_netbuf_bytes_held", "gauge",
	  "Bytes of the VM's output held until their checkpoint commits.",
	  "bytes_held", 1, REP, true },
	{ "remus_netbuf_delay_p50_seconds", "gauge",
	  "Median delay output commit added to the VM's output frames, recent frames.",
	  "delay_p50_ms", 1e-3, REP, true },
	{ "remus_netbuf_delay_p99_seconds", "gauge",
	  "99th percentile of the delay output commit added to the VM's output frames.",
	  "delay_p99_ms", 1e-3, REP, true },
	{ "remus_netbuf_frames_out_total", "counter",
	  "Output frames of the VM released to the network.",
	  "frames_out", 1, REP, true },
	{ "remus_netbuf_bytes_out_total", "counter",
	  "Output bytes of the VM released to the network.",
	  "bytes_out", 1, REP, true },
};

/* The daemons' states (replicator/prot_state.c prot_state_names,
 * backup-agent/agent_state.c agent_state_name; tests/check_remusctl.c checks
 * that they agree). */
static const char *const replicator_states[] = {
	"connecting", "syncing", "protected", "unprotected", "pausing", "paused",
	"handing-over", "handover-unknown", NULL
};
static const char *const agent_states[] = {
	"waiting", "syncing", "backup", "paused", "reconnecting", "fencing", "restoring",
	"master", "fault", "ready", NULL
};

const char *const *remusctl_daemon_states(const char *daemon)
{
	return strcmp(daemon, "agent") ? replicator_states : agent_states;
}

/* A label value: no control characters (the VM's name comes from the VM),
 * backslash and double quote escaped. */
static void label_value(char *out, size_t len, const char *in)
{
	char clean[256];
	size_t o = 0;

	text_sanitize(clean, sizeof(clean), in ? in : "");
	for (const char *c = clean; *c && o + 3 < len; c++) {
		if (*c == '\\' || *c == '"')
			out[o++] = '\\';
		out[o++] = *c;
	}
	out[o] = 0;
}

/* Integers as integers, the rest with enough digits. */
static void print_value(FILE *f, double v)
{
	if (isnan(v))
		fputs("NaN", f);
	else if (isinf(v))
		fputs(v > 0 ? "+Inf" : "-Inf", f);
	else if (v > -1e15 && v < 1e15 && v == (double)(long long)v)
		fprintf(f, "%lld", (long long)v);
	else
		fprintf(f, "%.9g", v);
}

struct labels {
	char vm[600];
	const char *daemon;
};

static void header(FILE *f, const char *name, const char *type, const char *help)
{
	fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* name{vm="..",daemon=".."[,EXTRA="VALUE"]} VALUE */
static void sample(FILE *f, const char *name, const struct labels *l, const char *extra,
		   const char *extra_value, double v)
{
	char ev[600];

	fprintf(f, "%s{vm=\"%s\",daemon=\"%s\"", name, l->vm, l->daemon);
	if (extra) {
		label_value(ev, sizeof(ev), extra_value);
		fprintf(f, ",%s=\"%s\"", extra, ev);
	}
	fputs("} ", f);
	print_value(f, v);
	fputc('\n', f);
}

static void print_state(FILE *f, struct json_object *o, const struct labels *l)
{
	bool agent = !strcmp(l->daemon, "agent");
	const char *now = remusctl_str_or(o, agent ? "state" : "protection", NULL);
	const char *const *states = remusctl_daemon_states(l->daemon);
	bool known = false;

	if (!now)
		return;
	header(f, "remus_state", "gauge",
	       "The daemon's state: 1 for the one it is in, 0 for the others (replicator: "
	       "protection; agent: its role).");
	for (size_t i = 0; states[i]; i++) {
		sample(f, "remus_state", l, "state", states[i], !strcmp(now, states[i]));
		known |= !strcmp(now, states[i]);
	}
	/* a state of a newer daemon: still said */
	if (!known)
		sample(f, "remus_state", l, "state", now, 1);
}

static void print_per_nic(FILE *f, struct json_object *o, const struct metric *m,
			  const struct labels *l)
{
	struct json_object *arr, *nic;
	bool any = false;

	if (!json_object_object_get_ex(o, "net", &arr) || !json_object_is_type(arr, json_type_array))
		return;
	for (size_t i = 0; i < json_object_array_length(arr); i++) {
		nic = json_object_array_get_idx(arr, i);
		if (!remusctl_has(nic, m->key))
			continue;
		if (!any)
			header(f, m->name, m->type, m->help);
		any = true;
		sample(f, m->name, l, "netdev", remusctl_str(nic, "netdev"),
		       remusctl_num(nic, m->key) * m->scale);
	}
}

void remusctl_status_prometheus(FILE *f, struct json_object *o)
{
	struct labels l = { .daemon = remusctl_daemon(o) };
	unsigned me = strcmp(l.daemon, "agent") ? REP : AGT;

	label_value(l.vm, sizeof(l.vm), remusctl_str_or(o, "vm", ""));
	print_state(f, o, &l);
	for (size_t i = 0; i < sizeof(metrics) / sizeof(metrics[0]); i++) {
		const struct metric *m = &metrics[i];

		if (!(m->daemons & me))
			continue;
		if (m->per_nic) {
			print_per_nic(f, o, m, &l);
			continue;
		}
		if (!remusctl_has(o, m->key))
			continue;
		header(f, m->name, m->type, m->help);
		sample(f, m->name, &l, NULL, NULL, remusctl_num(o, m->key) * m->scale);
	}
}
