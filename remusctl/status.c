/* remusctl status [--json | --prometheus]: a daemon's figures, the
 * replicator's or the agent's (the reply's "daemon" says which). --json
 * prints the reply unchanged (stable snake_case keys, units in names);
 * --prometheus the Prometheus text exposition format (prometheus.c);
 * otherwise text for a human (status_text.c). */
#include "remusctl.h"

#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int status_main(const struct remusctl_opts *opts, int argc, char **argv)
{
	struct json_object *o, *err;
	int prometheus = 0;
	char *reply;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--prometheus")) {
			prometheus = 1;
		} else if (strcmp(argv[i], "--json")) {
			fprintf(stderr, "remusctl: status: unexpected argument '%s' (usage: status "
				"[--json | --prometheus])\n", argv[i]);
			return 2;
		}
	}
	if (prometheus && opts->json) {
		fprintf(stderr, "remusctl: status: --json and --prometheus exclude each other\n");
		return 2;
	}
	reply = remusctl_request(opts->control, "status");
	if (!reply)
		return 1;
	o = json_tokener_parse(reply);
	if (!json_object_is_type(o, json_type_object)) {
		fprintf(stderr, "remusctl: the daemon's reply is not a JSON object: %.80s\n", reply);
		json_object_put(o);
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
	else if (prometheus)
		remusctl_status_prometheus(stdout, o);
	else
		remusctl_status_text(stdout, o);
	json_object_put(o);
	free(reply);
	return 0;
}
