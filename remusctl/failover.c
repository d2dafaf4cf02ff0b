/* remusctl failover [--timeout SECONDS]: planned switch-over to the backup.
 * The replicator takes a last checkpoint with the VM stopped, the backup
 * starts the VM from it, then the primary QEMU quits. Waits for the
 * outcome: exit 0 only if the backup runs the VM.
 *
 * remusctl park [--timeout SECONDS]: the same last checkpoint, but the
 * backup (takeover = manual) keeps it as the VM's last state and starts
 * nothing until it is promoted (remusctl takeover on it); the primary QEMU
 * stays paused (a pair whose roles move) or quits. A cluster manager's
 * demote. */
#include "remusctl.h"

#include "cli.h"

#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FAILOVER_DEFAULT_S 30
#define FAILOVER_MAX_S     3600
/* The replicator answers at the deadline; allow for its last steps. */
#define FAILOVER_GRACE_S   15

static int parse_args(const char *verb, int argc, char **argv, unsigned long *secs)
{
	for (int i = 1; i < argc; i++) {
		const char *v = NULL;

		if (!strcmp(argv[i], "--json"))
			continue;
		if (!strcmp(argv[i], "--timeout") && i + 1 < argc)
			v = argv[++i];
		else if (!strncmp(argv[i], "--timeout=", 10))
			v = argv[i] + 10;
		if (!v) {
			fprintf(stderr, "remusctl: %s: unexpected argument '%s' (usage: "
				"%s [--timeout SECONDS])\n", verb, argv[i], verb);
			return -1;
		}
		if (cli_parse_ulong(!strcmp(verb, "park") ? "park --timeout" : "failover --timeout",
				    v, 1, FAILOVER_MAX_S, secs))
			return -1;
	}
	return 0;
}

static void print_done(const char *verb, struct json_object *o)
{
	struct json_object *v;
	long long pid = 0, ms = 0, epoch = 0;

	if (json_object_object_get_ex(o, "backup_qemu_pid", &v))
		pid = json_object_get_int64(v);
	if (json_object_object_get_ex(o, "restore_ms", &v))
		ms = json_object_get_int64(v);
	if (json_object_object_get_ex(o, "epoch", &v))
		epoch = json_object_get_int64(v);
	if (!strcmp(verb, "park"))
		printf("park done: the backup keeps the VM at epoch %lld, its last state; it "
		       "runs again where remusctl takeover promotes a host\n", epoch);
	else
		printf("failover done: the VM runs on the backup from epoch %lld (QEMU pid %lld "
		       "there, started in %lld ms)\n", epoch, pid, ms);
}

static int handover_main(const char *verb, const struct remusctl_opts *opts, int argc,
			 char **argv)
{
	unsigned long secs = FAILOVER_DEFAULT_S;
	char cmd[64], *reply;
	struct json_object *o, *v;
	int rc;

	if (parse_args(verb, argc, argv, &secs))
		return 2;
	snprintf(cmd, sizeof(cmd), "%s %lu", verb, secs * 1000);
	reply = remusctl_request_wait(opts->control, cmd, (int)secs + FAILOVER_GRACE_S);
	if (!reply)
		return 1;
	rc = remusctl_print_reply(opts, verb, reply);
	o = remusctl_parse(reply);
	if (!rc && o && !opts->json)
		print_done(verb, o);
	if (!rc && o && json_object_object_get_ex(o, "primary_qemu_quit", &v) &&
	    !json_object_get_boolean(v) &&
	    !(json_object_object_get_ex(o, "primary_qemu_paused", &v) && json_object_get_boolean(v)))
		fprintf(stderr, "remusctl: %s: the primary QEMU did not quit: it is "
			"stopped, but kill it\n", verb);
	json_object_put(o);
	free(reply);
	return rc;
}

int failover_main(const struct remusctl_opts *opts, int argc, char **argv)
{
	return handover_main("failover", opts, argc, argv);
}

int park_main(const struct remusctl_opts *opts, int argc, char **argv)
{
	return handover_main("park", opts, argc, argv);
}
