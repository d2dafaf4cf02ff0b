/* remusctl pause: stop checkpointing, e.g. for maintenance of the backup.
 * The replicator lets the epoch in flight commit, tells the backup (which
 * then does not take over: its replica goes stale) and releases the held
 * output. This waits until the pause has taken effect. */
#include "remusctl.h"

#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PAUSE_WAIT_ROUNDS 100 /* of 100 ms */

/* pause_state from status: "paused", "waiting-for-ack", ... or NULL. */
static char *pause_state(const char *control)
{
	char *reply = remusctl_request(control, "status"), *state = NULL;
	struct json_object *o = remusctl_parse(reply), *v;

	if (o && json_object_object_get_ex(o, "pause_state", &v))
		state = strdup(json_object_get_string(v));
	json_object_put(o);
	free(reply);
	return state;
}

/* The backup must answer PAUSE before output goes out: wait for it. */
static int wait_paused(const char *control)
{
	for (int i = 0; i < PAUSE_WAIT_ROUNDS; i++) {
		char *state = pause_state(control);
		int done = state && !strcmp(state, "paused"), off = state && !strcmp(state, "off");

		free(state);
		if (!state)
			return 1;
		if (done)
			return 0;
		if (off) {
			fprintf(stderr, "remusctl: pause: cancelled meanwhile (remusctl resume)\n");
			return 1;
		}
		usleep(100000);
	}
	fprintf(stderr, "remusctl: pause: not in effect after 10 s: the epoch in flight or the "
		"backup's answer is late; remusctl status shows how far it got\n");
	return 1;
}

int pause_main(const struct remusctl_opts *opts, int argc, char **argv)
{
	char *reply;
	int rc;

	if (remusctl_no_args(argc, argv))
		return 2;
	reply = remusctl_request(opts->control, "pause");
	if (!reply)
		return 1;
	rc = remusctl_print_reply(opts, "pause", reply);
	if (!rc && strstr(reply, "\"state\":\"pausing\""))
		rc = wait_paused(opts->control);
	if (!rc && !opts->json && strstr(reply, "\"state\":\"pausing\""))
		printf("paused: no checkpoints, output is not held; the backup does not take over\n");
	free(reply);
	return rc;
}
