/* remus-agent: keep a replica of a protected VM and restore it when the
 * primary dies. */
#include "agent.h"
#include "cli.h"
#include "log.h"

#include <string.h>

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
	log_init("remus-agent", use_syslog);
	rc = agent_run(&a);
	agent_config_free(&a.cfg);
	return rc;
}
