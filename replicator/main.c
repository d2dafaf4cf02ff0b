/* remus-replicator: protect a running QEMU VM by checkpointing it to a
 * backup agent every epoch. */
#include "cli.h"
#include "log.h"
#include "replicator.h"

#include <string.h>

int main(int argc, char **argv)
{
	struct replicator r;
	int use_syslog = 0;
	int rc;

	memset(&r, 0, sizeof(r));
	cli_set_prog("remus-replicator");
	rc = replicator_parse_args(argc, argv, &r.cfg, &use_syslog);
	if (rc)
		return rc > 0 ? 0 : 2;
	log_init("remus-replicator", use_syslog);
	rc = replicator_run(&r);
	replicator_config_free(&r.cfg);
	return rc;
}
