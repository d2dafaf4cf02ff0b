/* remusctl resume: checkpoint again after remusctl pause. The VM is
 * protected once the backup has committed the first epoch after the pause
 * (remusctl status). After a handover whose outcome is unknown it resumes
 * the VM left paused on the primary instead: do that only when the backup
 * does not run the VM. */
#include "remusctl.h"

#include <stdlib.h>

int resume_main(const struct remusctl_opts *opts, int argc, char **argv)
{
	char *reply;
	int rc;

	if (remusctl_no_args(argc, argv))
		return 2;
	reply = remusctl_request(opts->control, "resume");
	if (!reply)
		return 1;
	rc = remusctl_print_reply(opts, "resume", reply);
	free(reply);
	return rc;
}
