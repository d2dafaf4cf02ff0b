/* remusctl takeover [--force]: on the agent of a pair with takeover =
 * manual, the cluster manager's promote: run the VM here. A VM started on
 * this host gets its replicator; otherwise the agent restores the replica
 * (that of a lost or parked primary, or the newer one at a cold start;
 * --force: whatever replica it holds) and becomes the VM's replicator.
 * Exit 0 only if the VM runs here. */
#include "remusctl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The agent restores before it answers: a VM's RAM copied, QEMU started. */
#define TAKEOVER_WAIT_S 300

int takeover_main(const struct remusctl_opts *opts, int argc, char **argv)
{
	bool force = false;
	char *reply;
	int rc;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--json"))
			continue;
		if (!strcmp(argv[i], "--force")) {
			force = true;
			continue;
		}
		fprintf(stderr, "remusctl: takeover: unexpected argument '%s' (usage: takeover "
			"[--force])\n", argv[i]);
		return 2;
	}
	reply = remusctl_request_wait(opts->control, force ? "takeover --force" : "takeover",
				      TAKEOVER_WAIT_S);
	if (!reply)
		return 1;
	rc = remusctl_print_reply(opts, "takeover", reply);
	free(reply);
	return rc;
}
