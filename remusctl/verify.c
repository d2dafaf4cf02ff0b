/* remusctl verify: compare the backup's replica with the running VM, page
 * by page, while protection goes on, and have the replicator send again
 * what differs (replicator/verify.h). Waits for the whole pass: exit 0
 * when every page was compared (also when some differed: they have been
 * sent again; `remusctl verify` once more should then find none). */
#include "remusctl.h"

#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>

/* A pass takes an epoch per 4 MiB of guest RAM: about 13 s per GiB at
 * 50 ms epochs, far longer with long ones. */
#define VERIFY_WAIT_S 3600

int verify_main(const struct remusctl_opts *opts, int argc, char **argv)
{
	struct json_object *o, *v;
	long long checked = 0, differ = 0;
	double secs = 0, ms = 0;
	char *reply;
	int rc;

	if (remusctl_no_args(argc, argv))
		return 2;
	reply = remusctl_request_wait(opts->control, "verify", VERIFY_WAIT_S);
	if (!reply)
		return 1;
	if (opts->json) {
		rc = remusctl_print_reply(opts, "verify", reply);
		free(reply);
		return rc;
	}
	o = remusctl_parse(reply);
	rc = remusctl_print_reply(opts, "verify", reply);
	if (!rc && o) {
		if (json_object_object_get_ex(o, "pages_checked", &v))
			checked = json_object_get_int64(v);
		if (json_object_object_get_ex(o, "pages_differ", &v))
			differ = json_object_get_int64(v);
		if (json_object_object_get_ex(o, "seconds", &v))
			secs = json_object_get_double(v);
		if (json_object_object_get_ex(o, "slice_hash_ms_max", &v))
			ms = json_object_get_double(v);
		printf("verify: %lld pages compared in %.1f s, %lld differed%s (at most %.2f ms of "
		       "hashing added to a pause); disks are not compared\n", checked, secs, differ,
		       differ ? " and were sent again" : "", ms);
	}
	json_object_put(o);
	free(reply);
	return rc;
}
