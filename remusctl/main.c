/* remusctl: the operator's command for a running replicator or agent. */
#include "remusctl.h"

#include "cli.h"

#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

static const struct {
	const char *name;
	int (*fn)(const struct remusctl_opts *o, int argc, char **argv);
	bool needs_control;
	const char *help;
} verbs[] = {
	{ "status", status_main, true,
	  "the daemon's state and figures [--json | --prometheus]" },
	{ "reset-stats", reset_stats_main, true, "forget recent pause, dirty, ack, delay or commit figures" },
	{ "pause", pause_main, true, "stop checkpointing (backup maintenance); no failover meanwhile" },
	{ "resume", resume_main, true, "checkpoint again; protected once the backup commits" },
	{ "failover", failover_main, true, "hand the VM over to the backup [--timeout SECONDS]" },
	{ "verify", verify_main, true, "compare the backup's replica with the VM's RAM and disks, resend what differs" },
	{ "test-failover", test_failover_main, true, "(agent) run a clone of the replica, cut off, then discard it" },
	{ "park", park_main, true, "stop the VM here at a checkpoint the backup keeps (a demote) [--timeout SECONDS]" },
	{ "takeover", takeover_main, true, "(agent) run the VM here from the replica (a promote) [--force]" },
	{ "list", list_main, false, "the daemons' control sockets in DIR... (default /run/remus)" },
	{ "keygen", keygen_main, false, "write a new pair key to FILE (no --control needed)" },
};

static void usage(FILE *f)
{
	fprintf(f, "Usage: remusctl --control PATH [--json] VERB [VERB OPTIONS]\n"
		   "       remusctl [--json] list [DIR...]\n"
		   "       remusctl keygen FILE\n\n"
		   "Talks to remus-replicator (the primary) or remus-agent (the backup) over\n"
		   "its control socket (--control): status and reset-stats with either,\n"
		   "pause, resume, failover, verify and park with the replicator,\n"
		   "test-failover and takeover with the agent. list finds the sockets.\n\n"
		   "Verbs:\n");
	for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++)
		fprintf(f, "  %-12s %s\n", verbs[i].name, verbs[i].help);
	fprintf(f, "\nOptions:\n"
		   "  --control PATH   the daemon's control socket (required but for list and\n"
		   "                   keygen; by convention /run/remus/PAIR.replicator.ctl or\n"
		   "                   /run/remus/PAIR.agent.ctl)\n"
		   "  --json           machine-readable output (stable keys)\n"
		   "  -h, --help       this text\n"
		   "  --version        print the version and exit\n"
		   "\nExit status: 0 done (failover: the backup runs the VM), 1 refused or\n"
		   "failed, 2 usage error.\n");
}

int main(int argc, char **argv)
{
	static const struct option long_opts[] = {
		{ "control", required_argument, NULL, 'c' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, CLI_OPT_VERSION },
		{ NULL, 0, NULL, 0 },
	};
	struct remusctl_opts o = { 0 };
	int c;

	cli_set_prog("remusctl");
	/* "+" stops at the verb: options after it belong to the verb... except
	 * --json, which reads naturally after it too, so we rescan for it. The
	 * verb checks the rest. */
	while ((c = getopt_long(argc, argv, "+h", long_opts, NULL)) != -1) {
		switch (c) {
		case 'c': o.control = optarg; break;
		case 'j': o.json = 1; break;
		case 'h': usage(stdout); return 0;
		case CLI_OPT_VERSION: cli_print_version("remusctl"); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind >= argc) {
		fprintf(stderr, "remusctl: no verb given\n");
		usage(stderr);
		return 2;
	}
	for (int i = optind + 1; i < argc; i++)
		if (!strcmp(argv[i], "--json"))
			o.json = 1;
	for (size_t i = 0; i < sizeof(verbs) / sizeof(verbs[0]); i++) {
		if (strcmp(argv[optind], verbs[i].name))
			continue;
		if (!o.control && verbs[i].needs_control) {
			fprintf(stderr, "remusctl: --control PATH is required\n");
			return 2;
		}
		return verbs[i].fn(&o, argc - optind, argv + optind);
	}
	fprintf(stderr, "remusctl: unknown verb '%s'\n", argv[optind]);
	usage(stderr);
	return 2;
}
