/* remusctl status [--json]: the replicator's figures. --json prints the
 * replicator's reply unchanged (stable snake_case keys, units in names). */
#include "remusctl.h"
#include "text.h"

#include <json-c/json.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static double num(struct json_object *o, const char *key)
{
	struct json_object *v;

	return json_object_object_get_ex(o, key, &v) ? json_object_get_double(v) : 0;
}

/* The VM's name and the reasons come from the VM and the backup: their
 * control characters must not reach the operator's terminal. A few
 * buffers in turn, for the several of them one printf takes. */
static const char *str(struct json_object *o, const char *key)
{
	static char bufs[8][512];
	static unsigned next;
	struct json_object *v;
	char *buf = bufs[next++ % 8];

	if (!json_object_object_get_ex(o, key, &v))
		return "?";
	text_sanitize(buf, sizeof(bufs[0]), json_object_get_string(v));
	return buf;
}

static void print_net(struct json_object *o)
{
	struct json_object *arr, *n, *v;

	if (!json_object_object_get_ex(o, "net", &arr))
		return;
	for (size_t i = 0; i < json_object_array_length(arr); i++) {
		n = json_object_array_get_idx(arr, i);
		json_object_object_get_ex(n, "output_commit", &v);
		printf("net %s:  %s via %s; %.0f frames (%.0f bytes) held, high water %.0f bytes; "
		       "added delay p50 %.1f ms, p99 %.1f ms; %.0f out, %.0f in; dropped %.0f\n",
		       str(n, "netdev"), json_object_get_boolean(v) ? "output commit" : "UNBUFFERED",
		       str(n, "port"), num(n, "frames_held"), num(n, "bytes_held"),
		       num(n, "high_water_bytes"), num(n, "delay_p50_ms"), num(n, "delay_p99_ms"),
		       num(n, "frames_out"), num(n, "inbound_frames"),
		       num(n, "dropped_malformed") + num(n, "dropped_oversized") +
		       num(n, "dropped_output") + num(n, "inbound_dropped"));
	}
}

static void print_disks(struct json_object *o)
{
	struct json_object *arr, *k;

	if (!json_object_object_get_ex(o, "disks", &arr))
		return;
	for (size_t i = 0; i < json_object_array_length(arr); i++) {
		k = json_object_array_get_idx(arr, i);
		printf("disk %s:  %s", str(k, "name"), str(k, "state"));
		if (!strcmp(str(k, "state"), "syncing"))
			printf(" (initial copy %.0f%%)", num(k, "sync_percent"));
		printf(", %.0f MiB; %.0f writes (%.1f MiB) mirrored\n", num(k, "size_bytes") / 1048576,
		       num(k, "writes"), num(k, "written_bytes") / 1048576);
	}
	if (json_object_array_length(arr))
		printf("disks:   %.0f bytes of this epoch's writes held; %.0f epochs ended early, "
		       "%.0f writes waited for room\n", num(o, "disk_pending_bytes"),
		       num(o, "disk_early_epochs"), num(o, "disk_write_stalls"));
}

/* Lines only when there is something to say: a pause, a handover. */
static void print_operator(struct json_object *o)
{
	const char *pause = str(o, "pause_state"), *ho = str(o, "handover");
	struct json_object *v;

	if (strcmp(pause, "off") && strcmp(pause, "?"))
		printf("pause:   %s by the operator: no checkpoints%s; the backup does not take "
		       "over (remusctl resume)\n", !strcmp(pause, "paused") ? "paused" : "pausing",
		       !strcmp(pause, "paused") ? ", output not held" : "");
	if (strcmp(ho, "none") && strcmp(ho, "?"))
		printf("handover: in progress (%s)\n", ho);
	if (json_object_object_get_ex(o, "vm_left_paused", &v) && json_object_get_boolean(v))
		printf("handover: outcome UNKNOWN: the VM is left paused here; the backup may run "
		       "it. If it does not, remusctl resume resumes it here\n");
}

/* The soft-dirty log's cost since attach: the pages each pause compared. */
static void print_softdirty(struct json_object *o)
{
	double scans = num(o, "softdirty_scans") > 0 ? num(o, "softdirty_scans") : 1;
	const char *err = str(o, "softdirty_populate_error");
	bool failed = *err && strcmp(err, "?");

	printf("log:     per pause %.1f pages flagged, %.1f not in QEMU's page tables (both "
	       "compared); %.0f full scans; the full copy read %.0f pages through QEMU%s%s\n",
	       num(o, "softdirty_flagged_pages") / scans, num(o, "softdirty_absent_pages") / scans,
	       num(o, "softdirty_full_scans"), num(o, "softdirty_populated_pages"),
	       failed ? ", then: " : "", failed ? err : "");
}

/* The hash tracker's staging: the slots of changed pages it holds now. */
static void print_hash(struct json_object *o)
{
	printf("hash:    staging %.0f pages resident (%.1f MiB, peak %.0f pages); "
	       "%.0f pages changed with the VM stopped\n", num(o, "hash_staging_pages"),
	       num(o, "hash_staging_pages") * 4096 / 1048576, num(o, "hash_staging_peak_pages"),
	       num(o, "hash_changed_in_pause_pages"));
}

static void print_human(struct json_object *o)
{
	printf("VM %s (QEMU pid %.0f) -> backup %s: %s\n", str(o, "vm"), num(o, "qemu_pid"),
	       str(o, "backup"), str(o, "protection"));
	printf("epochs:  %.0f committed, last acked %.0f, current %.0f; %.0f resent, "
	       "%.0f full syncs, %.0f ended early\n", num(o, "epochs_committed"),
	       num(o, "last_acked_epoch"), num(o, "epoch"), num(o, "epochs_resent"),
	       num(o, "resyncs"), num(o, "early_epochs"));
	printf("length:  %.0f ms, policy %s (%s)\n", num(o, "epoch_length_ms"),
	       str(o, "epoch_policy"), str(o, "epoch_reason"));
	printf("pause:   p50 %.2f ms, p99 %.2f ms, max %.2f ms (p50: stop %.2f, capture %.2f, "
	       "resume %.2f)\n", num(o, "pause_p50_ms"), num(o, "pause_p99_ms"),
	       num(o, "pause_max_ms"), num(o, "pause_stop_p50_ms"),
	       num(o, "pause_capture_p50_ms"), num(o, "pause_resume_p50_ms"));
	printf("dirty:   %.1f pages/epoch (%.1f KiB), %.0f pages in all (tracker %s: %s)\n",
	       num(o, "dirty_pages_per_epoch"), num(o, "dirty_bytes_per_epoch") / 1024,
	       num(o, "dirty_pages_total"), str(o, "tracker"), str(o, "tracker_reason"));
	if (!strcmp(str(o, "tracker"), "soft-dirty"))
		print_softdirty(o);
	if (!strcmp(str(o, "tracker"), "hash"))
		print_hash(o);
	printf("link:    %.2f MB/s, %.0f bytes queued; ack p50 %.2f ms, p99 %.2f ms\n",
	       num(o, "link_bytes_per_s") / 1e6, num(o, "link_queued_bytes"),
	       num(o, "ack_p50_ms"), num(o, "ack_p99_ms"));
	print_operator(o);
	print_disks(o);
	print_net(o);
}

int status_main(const struct remusctl_opts *opts, int argc, char **argv)
{
	char *reply;
	struct json_object *o, *err;

	if (remusctl_no_args(argc, argv))
		return 2;
	reply = remusctl_request(opts->control, "status");
	if (!reply)
		return 1;
	o = json_tokener_parse(reply);
	if (!o) {
		fprintf(stderr, "remusctl: the replicator's reply is not JSON: %.80s\n", reply);
		free(reply);
		return 1;
	}
	if (json_object_object_get_ex(o, "error", &err)) {
		fprintf(stderr, "remusctl: %s\n", json_object_get_string(err));
		json_object_put(o);
		free(reply);
		return 1;
	}
	if (opts->json)
		fputs(reply, stdout);
	else
		print_human(o);
	json_object_put(o);
	free(reply);
	return 0;
}
