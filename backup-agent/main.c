/* remus-agent: keep a replica of a protected VM and restore it when the
 * primary dies. */
#include "agent.h"
#include "cli.h"
#include "log.h"
#include "pair.h"

#include <limits.h>
#include <stdio.h>
#include <string.h>

/* --forget-pair: the operator gives DIR to another VM or primary. */
static int forget_pair(const char *dir)
{
	char msg[PATH_MAX + 256];
	int rc = pair_forget(dir, msg, sizeof(msg));

	fprintf(rc < 0 ? stderr : stdout, "remus-agent: %s\n", msg);
	return rc < 0 ? 2 : 0;
}

int main(int argc, char **argv)
{
	struct agent a;
	int use_syslog = 0;
	int rc;

	memset(&a, 0, sizeof(a));
	cli_set_prog("remus-agent");
	rc = agent_parse_args(argc, argv, &a.cfg, &use_syslog);
	if (rc)
		return rc > 0 ? 0 : 2;
	if (a.cfg.forget_pair) {
		rc = forget_pair(a.cfg.state_dir);
		agent_config_free(&a.cfg);
		return rc;
	}
	log_init("remus-agent", use_syslog);
	rc = agent_run(&a);
	agent_config_free(&a.cfg);
	return rc;
}
