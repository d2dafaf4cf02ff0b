/* remus-replicator: protect a running QEMU VM by checkpointing it to a
 * backup agent every epoch. */
#include "cli.h"
#include "log.h"
#include "pair_role.h"
#include "replicator.h"
#include "sighup.h"

#include <limits.h>
#include <stdio.h>
#include <string.h>

int main(int argc, char **argv)
{
	struct replicator r;
	char config[PATH_MAX], host[CONFIG_MAX_HOSTNAME + 1];
	struct pair_role_carry carry;
	int use_syslog = 0;
	int rc;

	memset(&r, 0, sizeof(r));
	cli_set_prog("remus-replicator");
	sighup_ignore_quietly(); /* from the start: sighup.h */
	rc = replicator_parse_args(argc, argv, &r.cfg, &use_syslog);
	if (rc)
		return rc > 0 ? 0 : 2;
	log_init("remus-replicator", use_syslog);
	rc = replicator_run(&r);
	if (r.become_backup) {
		snprintf(config, sizeof(config), "%s", r.cfg.config_path);
		snprintf(host, sizeof(host), "%s", r.cfg.host->name);
		carry = r.cfg.carry; /* pointers into argv: they outlive cfg */
	}
	replicator_config_free(&r.cfg);
	if (r.become_backup && pair_role_exec("remus-agent", config, host, &carry, NULL) < 0)
		return 2;
	return rc;
}
