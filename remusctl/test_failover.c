/* remusctl test-failover: on the backup agent, start a throwaway clone of
 * the committed replica, cut off from the LAN, check that it runs (its
 * guest is alive, its disks read), and discard it, while production
 * protection goes on (backup-agent/test_failover.h). Exit 0 only if the
 * clone ran. */
#include "remusctl.h"

#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>

/* The agent's own limit is 2 min (restore, checks, cleanup). */
#define TEST_FAILOVER_WAIT_S 180

int test_failover_main(const struct remusctl_opts *opts, int argc, char **argv)
{
	struct json_object *o, *v;
	const char *alive = "", *disks = "";
	long long epoch = -1;
	double ms = 0;
	char *reply;
	int rc;

	if (remusctl_no_args(argc, argv))
		return 2;
	reply = remusctl_request_wait(opts->control, "test-failover", TEST_FAILOVER_WAIT_S);
	if (!reply)
		return 1;
	o = remusctl_parse(reply);
	rc = remusctl_print_reply(opts, "test-failover", reply);
	if (!rc && o && !opts->json) {
		if (json_object_object_get_ex(o, "epoch", &v))
			epoch = json_object_get_int64(v);
		if (json_object_object_get_ex(o, "restore_ms", &v))
			ms = json_object_get_double(v);
		if (json_object_object_get_ex(o, "guest_alive_detail", &v))
			alive = json_object_get_string(v);
		if (json_object_object_get_ex(o, "disks_detail", &v))
			disks = json_object_get_string(v);
		printf("test failover passed: a clone of the replica (epoch %lld) started in %.0f ms, "
		       "cut off from the LAN; its guest runs (%s), %s; discarded\n", epoch, ms, alive,
		       disks);
	}
	json_object_put(o);
	free(reply);
	return rc;
}
