/* remusctl reset-stats: forget the recent-epoch figures (pause times,
 * dirty pages, ack times), e.g. before measuring a window. */
#include "remusctl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int reset_stats_main(const struct remusctl_opts *opts, int argc, char **argv)
{
	char *reply;
	int rc;

	if (remusctl_no_args(argc, argv))
		return 2;
	reply = remusctl_request(opts->control, "reset-stats");
	rc = reply && strstr(reply, "\"ok\":true") ? 0 : 1;

	if (reply && rc)
		fprintf(stderr, "remusctl: %s", reply);
	free(reply);
	return rc;
}
