/* remus-agent: keep a replica of a protected VM and restore it when the
 * primary dies. */
#include "agent.h"
#include "cli.h"
#include "log.h"
#include "pair.h"
#include "pair_role.h"
#include "sighup.h"

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
	char config[PATH_MAX], host[CONFIG_MAX_HOSTNAME + 1];
	struct pair_role_carry carry;
	int use_syslog = 0;
	int rc;

	memset(&a, 0, sizeof(a));
	cli_set_prog("remus-agent");
	sighup_ignore_quietly(); /* from the start: sighup.h */
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
	if (a.become_primary) {
		snprintf(config, sizeof(config), "%s", a.cfg.config_path);
		snprintf(host, sizeof(host), "%s", a.cfg.host->name);
		carry = a.cfg.carry; /* pointers into argv: they outlive cfg */
	}
	agent_config_free(&a.cfg);
	if (a.become_primary) {
		char generation[24];
		const char *extra[] = { a.master_domain[0] ? "--domain" : "--qmp",
					a.master_domain[0] ? a.master_domain : a.master_qmp,
					"--announce", "--generation", generation, NULL };

		snprintf(generation, sizeof(generation), "%llu",
			 (unsigned long long)a.master_generation);
		/* The VM runs on whatever happens to us: say so if we cannot
		 * protect it. */
		if (pair_role_exec("remus-replicator", config, host, &carry, extra) < 0)
			log_err("the VM runs here UNPROTECTED: start remus-replicator --config "
				"%s --host %s", config, host);
		return 1;
	}
	return rc;
}
