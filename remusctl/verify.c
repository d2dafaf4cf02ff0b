/* remusctl verify: compare the backup's replica with the running VM, page
 * by page and then disk block by block, while protection goes on, and
 * have the replicator send again what differs (replicator/verify.h).
 * Waits for the whole pass: exit 0 when everything was compared (also
 * when some differed: it has been sent again; `remusctl verify` once more
 * should then find none). Disks that cannot be compared are named. */
#include "remusctl.h"

#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>

/* A pass takes an epoch per 4 MiB of guest RAM, and per 0.25 to 16 MiB of
 * disk (as fast as the image reads): about 13 s per GiB of RAM at 50 ms
 * epochs, far longer with long ones. */
#define VERIFY_WAIT_S 3600

static long long get_int(struct json_object *o, const char *key)
{
	struct json_object *v;

	return json_object_object_get_ex(o, key, &v) ? json_object_get_int64(v) : 0;
}

static double get_double(struct json_object *o, const char *key)
{
	struct json_object *v;

	return json_object_object_get_ex(o, key, &v) ? json_object_get_double(v) : 0;
}

/* The pass's figures, in words. */
static void print_pass(struct json_object *o)
{
	long long differ = get_int(o, "pages_differ"), bdiffer = get_int(o, "disk_blocks_differ");
	struct json_object *skipped;

	printf("verify: %lld pages compared in %.1f s, %lld differed%s (at most %.2f ms added to "
	       "a pause)\n", get_int(o, "pages_checked"), get_double(o, "seconds"), differ,
	       differ ? " and were sent again" : "", get_double(o, "slice_hash_ms_max"));
	if (get_int(o, "disks_checked"))
		printf("verify: %lld blocks of 4 KiB of %lld disk(s) compared, %lld differed%s\n",
		       get_int(o, "disk_blocks_checked"), get_int(o, "disks_checked"), bdiffer,
		       bdiffer ? " and were sent again" : "");
	if (!json_object_object_get_ex(o, "disks_not_checked", &skipped) ||
	    !json_object_is_type(skipped, json_type_array))
		return;
	for (size_t i = 0; i < json_object_array_length(skipped); i++) {
		struct json_object *d = json_object_array_get_idx(skipped, i), *name, *why;

		if (json_object_object_get_ex(d, "disk", &name) &&
		    json_object_object_get_ex(d, "why", &why))
			printf("verify: disk %s not compared: %s\n", json_object_get_string(name),
			       json_object_get_string(why));
	}
}

int verify_main(const struct remusctl_opts *opts, int argc, char **argv)
{
	struct json_object *o;
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
	if (!rc && o)
		print_pass(o);
	json_object_put(o);
	free(reply);
	return rc;
}
