/* A status reply for a human: the replicator's (protection, epochs, pause
 * times, dirty pages, link, NICs and disks) or the agent's (its state, the
 * primary, the replica's epoch and age, fencing). Every string from the
 * reply goes through remusctl_str: the VM's name and the reasons come from
 * the VM and the other host, and their control characters must not reach
 * the operator's terminal. */
#include "remusctl.h"

#include <json-c/json.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#define str remusctl_str
#define num remusctl_num

static void print_net(FILE *f, struct json_object *o)
{
	struct json_object *arr, *n, *v;

	if (!json_object_object_get_ex(o, "net", &arr))
		return;
	for (size_t i = 0; i < json_object_array_length(arr); i++) {
		n = json_object_array_get_idx(arr, i);
		json_object_object_get_ex(n, "output_commit", &v);
		fprintf(f, "net %s:  %s via %s; %.0f frames (%.0f bytes) held, high water %.0f "
			"bytes; added delay p50 %.1f ms, p99 %.1f ms; %.0f out, %.0f in; dropped "
			"%.0f\n",
			str(n, "netdev"), json_object_get_boolean(v) ? "output commit" : "UNBUFFERED",
			str(n, "port"), num(n, "frames_held"), num(n, "bytes_held"),
			num(n, "high_water_bytes"), num(n, "delay_p50_ms"), num(n, "delay_p99_ms"),
			num(n, "frames_out"), num(n, "inbound_frames"),
			num(n, "dropped_malformed") + num(n, "dropped_oversized") +
			num(n, "dropped_output") + num(n, "inbound_dropped"));
	}
}

static void print_disks(FILE *f, struct json_object *o)
{
	struct json_object *arr, *k;

	if (!json_object_object_get_ex(o, "disks", &arr))
		return;
	for (size_t i = 0; i < json_object_array_length(arr); i++) {
		k = json_object_array_get_idx(arr, i);
		fprintf(f, "disk %s:  %s", str(k, "name"), str(k, "state"));
		if (!strcmp(str(k, "state"), "syncing"))
			fprintf(f, " (initial copy %.0f%%)", num(k, "sync_percent"));
		fprintf(f, ", %.0f MiB; %.0f writes (%.1f MiB) mirrored\n",
			num(k, "size_bytes") / 1048576, num(k, "writes"),
			num(k, "written_bytes") / 1048576);
		if (num(k, "resume_read_bytes") > 0)
			fprintf(f, "disk %s:  last resync resumed the backup's replica: %.1f MiB "
				"written since read from the image\n", str(k, "name"),
				num(k, "resume_read_bytes") / 1048576);
		else if (num(k, "resync_copied_bytes") > 0)
			fprintf(f, "disk %s:  last resync was a delta: %.1f of %.1f MiB sent\n",
				str(k, "name"), num(k, "resync_sent_bytes") / 1048576,
				num(k, "resync_copied_bytes") / 1048576);
	}
	if (json_object_array_length(arr))
		fprintf(f, "disks:   %.0f bytes of this epoch's writes held; %.0f epochs ended "
			"early, %.0f writes waited for room\n", num(o, "disk_pending_bytes"),
			num(o, "disk_early_epochs"), num(o, "disk_write_stalls"));
	if (json_object_array_length(arr) && !strcmp(str(o, "disk_capture"), "bitmap"))
		fprintf(f, "disks:   captured by dirty bitmaps after the initial copy; %.1f MiB "
			"read at barriers\n", num(o, "disk_bitmap_bytes") / 1048576);
}

/* Lines only when there is something to say: a pause, a handover. */
static void print_operator(FILE *f, struct json_object *o)
{
	const char *pause = str(o, "pause_state"), *ho = str(o, "handover");
	struct json_object *v;

	if (strcmp(pause, "off") && strcmp(pause, "?"))
		fprintf(f, "pause:   %s by the operator: no checkpoints%s; the backup does not "
			"take over (remusctl resume)\n",
			!strcmp(pause, "paused") ? "paused" : "pausing",
			!strcmp(pause, "paused") ? ", output not held" : "");
	if (strcmp(ho, "none") && strcmp(ho, "?"))
		fprintf(f, "handover: in progress (%s)\n", ho);
	if (json_object_object_get_ex(o, "vm_left_paused", &v) && json_object_get_boolean(v))
		fprintf(f, "handover: outcome UNKNOWN: the VM is left paused here; the backup may "
			"run it. If it does not, remusctl resume resumes it here\n");
}

/* The soft-dirty log's cost since attach: the pages each pause compared. */
static void print_softdirty(FILE *f, struct json_object *o)
{
	double scans = num(o, "softdirty_scans") > 0 ? num(o, "softdirty_scans") : 1;
	const char *err = str(o, "softdirty_populate_error");
	bool failed = *err && strcmp(err, "?");

	fprintf(f, "log:     per pause %.1f pages flagged, %.1f not in QEMU's page tables (both "
		"compared); %.0f full scans; the full copy read %.0f pages through QEMU%s%s\n",
		num(o, "softdirty_flagged_pages") / scans, num(o, "softdirty_absent_pages") / scans,
		num(o, "softdirty_full_scans"), num(o, "softdirty_populated_pages"),
		failed ? ", then: " : "", failed ? err : "");
}

/* The hash tracker's staging: the slots of changed pages it holds now. */
static void print_hash(FILE *f, struct json_object *o)
{
	fprintf(f, "hash:    staging %.0f pages resident (%.1f MiB, peak %.0f pages); "
		"%.0f pages changed with the VM stopped\n", num(o, "hash_staging_pages"),
		num(o, "hash_staging_pages") * 4096 / 1048576, num(o, "hash_staging_peak_pages"),
		num(o, "hash_changed_in_pause_pages"));
}

/* Compressed checkpoints: what runs, why, and what it saved so far. */
static void print_compress(FILE *f, struct json_object *o)
{
	double raw = num(o, "compress_raw_bytes_total"), wire = num(o, "compress_wire_bytes_total");
	struct json_object *active;

	if (!json_object_object_get_ex(o, "compress_active", &active))
		return;  /* an older replicator */
	fprintf(f, "compress: %s, %s (%s); %.0f MiB of pages sent as %.0f MiB, %.0f pages as "
		"deltas\n", str(o, "compress"), json_object_get_boolean(active) ? "compressing" :
		"not compressing", str(o, "compress_reason"), raw / 1048576, wire / 1048576,
		num(o, "compress_delta_pages_total"));
}

static void print_replicator(FILE *f, struct json_object *o)
{
	fprintf(f, "VM %s (QEMU pid %.0f) -> backup %s: %s\n", str(o, "vm"), num(o, "qemu_pid"),
		str(o, "backup"), str(o, "protection"));
	if (remusctl_str_or(o, "state_reason", NULL)) /* not from a replicator before it */
		fprintf(f, "state:   %s: %s\n", str(o, "protection"), str(o, "state_reason"));
	if (remusctl_str_or(o, "backup_host", NULL))
		fprintf(f, "host:    backup host %s%s%s\n", str(o, "backup_host"),
			remusctl_str_or(o, "backup_bound", NULL) ? "; may take over: " : "",
			remusctl_str_or(o, "backup_bound", ""));
	fprintf(f, "epochs:  %.0f committed, last acked %.0f, current %.0f; %.0f resent, "
		"%.0f full syncs, %.0f ended early\n", num(o, "epochs_committed"),
		num(o, "last_acked_epoch"), num(o, "epoch"), num(o, "epochs_resent"),
		num(o, "resyncs"), num(o, "early_epochs"));
	if (num(o, "stalls") > 0)
		fprintf(f, "stalls:  %.0f times protection stood still and was set going again "
			"(see the replicator's log)\n", num(o, "stalls"));
	fprintf(f, "length:  %.0f ms, policy %s (%s)\n", num(o, "epoch_length_ms"),
		str(o, "epoch_policy"), str(o, "epoch_reason"));
	fprintf(f, "pause:   p50 %.2f ms, p99 %.2f ms, max %.2f ms (p50: stop %.2f, capture "
		"%.2f, resume %.2f)\n", num(o, "pause_p50_ms"), num(o, "pause_p99_ms"),
		num(o, "pause_max_ms"), num(o, "pause_stop_p50_ms"),
		num(o, "pause_capture_p50_ms"), num(o, "pause_resume_p50_ms"));
	fprintf(f, "dirty:   %.1f pages/epoch (%.1f KiB), %.0f pages in all (tracker %s: %s)\n",
		num(o, "dirty_pages_per_epoch"), num(o, "dirty_bytes_per_epoch") / 1024,
		num(o, "dirty_pages_total"), str(o, "tracker"), str(o, "tracker_reason"));
	if (!strcmp(str(o, "tracker"), "soft-dirty"))
		print_softdirty(f, o);
	if (!strcmp(str(o, "tracker"), "hash"))
		print_hash(f, o);
	fprintf(f, "link:    %.2f MB/s, %.0f bytes queued; ack p50 %.2f ms, p99 %.2f ms\n",
		num(o, "link_bytes_per_s") / 1e6, num(o, "link_queued_bytes"),
		num(o, "ack_p50_ms"), num(o, "ack_p99_ms"));
	print_compress(f, o);
	print_operator(f, o);
	print_disks(f, o);
	print_net(f, o);
}

static const char *fence_text(struct json_object *o)
{
	const char *fence = str(o, "fence");

	if (!strcmp(fence, "command"))
		return "fencing: the fence command runs before a takeover";
	if (!strcmp(fence, "none"))
		return "fencing: none (--no-fence: a lost link is a lost primary)";
	return "fencing: NOT CONFIGURED: a lost link with a live primary means two running VMs";
}

/* Who fails over: the agent itself, or (takeover = manual) a cluster
 * manager, for which the replica is ready or not. */
static void print_failover(FILE *f, struct json_object *o)
{
	struct json_object *v;

	if (!strcmp(str(o, "takeover"), "manual")) {
		fprintf(f, "failover: the cluster manager's (takeover = manual; %s); fencing: the "
			"cluster manager's\n",
			json_object_object_get_ex(o, "takeover_ready", &v) && json_object_get_boolean(v) ?
			"replica ready to be promoted" : remusctl_has(o, "parked_epoch") ?
			"the VM is parked here" : "replica not ready");
		return;
	}
	fprintf(f, "failover: %s; %s\n",
		json_object_object_get_ex(o, "failover_armed", &v) && json_object_get_boolean(v) ?
		"armed" : json_object_object_get_ex(o, "no_failover", &v) &&
		json_object_get_boolean(v) ? "off (--no-failover)" : "not armed",
		fence_text(o));
}

static void print_agent(FILE *f, struct json_object *o)
{
	const char *state = str(o, "state"), *vm = remusctl_str_or(o, "vm", "?");

	if (!strcmp(state, "master"))
		fprintf(f, "VM %s: master: restored here, QEMU pid %.0f\n", vm, num(o, "qemu_pid"));
	else if (remusctl_str_or(o, "peer", NULL))
		fprintf(f, "VM %s <- primary %s (%s): %s\n", vm, str(o, "peer"),
			str(o, "peer_identity"), state);
	else
		fprintf(f, "VM %s <- no primary: %s\n", vm, state);
	fprintf(f, "state:   %s for %.0f s: %s\n", state, num(o, "state_age_s"),
		str(o, "state_reason"));
	if (remusctl_has(o, "replica_epoch") && remusctl_has(o, "replica_age_s"))
		fprintf(f, "replica: epoch %.0f, committed %.1f s ago, in %s\n",
			num(o, "replica_epoch"), num(o, "replica_age_s"), str(o, "state_dir"));
	else if (remusctl_has(o, "replica_epoch"))
		fprintf(f, "replica: epoch %.0f, in %s\n", num(o, "replica_epoch"),
			str(o, "state_dir"));
	else
		fprintf(f, "replica: none committed yet, in %s\n", str(o, "state_dir"));
	fprintf(f, "commits: %.0f committed, %.0f discarded", num(o, "epochs_committed"),
		num(o, "epochs_discarded"));
	if (remusctl_has(o, "commit_p50_ms"))
		fprintf(f, "; commit p50 %.2f ms, p99 %.2f ms", num(o, "commit_p50_ms"),
			num(o, "commit_p99_ms"));
	fputc('\n', f);
	if (num(o, "initial_copies_lost") > 0)
		fprintf(f, "storage: %.0f session(s) in a row lost their initial copy here (syncing "
			"it failed): check this host's storage\n", num(o, "initial_copies_lost"));
	print_failover(f, o);
	fprintf(f, "listen:  %s\n", str(o, "listen"));
}

void remusctl_status_text(FILE *f, struct json_object *o)
{
	if (!strcmp(remusctl_daemon(o), "agent"))
		print_agent(f, o);
	else
		print_replicator(f, o);
}
