/* The one daemon of a host in a pair whose roles move ([host] sections of
 * the pair file, config.h): it is the replicator while the VM runs here
 * and the agent while the VM runs on the other host, and it changes role
 * by exec, so that one service, one pid and one control socket per host
 * carry the pair through every failover:
 *
 *   agent       --(restored the VM here)-->          replicator
 *   replicator  --(VM lost, handed over, or not here)--> agent
 *
 * The new role reads the same file with the same --host; of the old
 * one's command line only the service's flags carry over (below). */
#ifndef REMUS_PAIR_ROLE_H
#define REMUS_PAIR_ROLE_H

/* The flags that describe the service rather than the role (--syslog,
 * --control PATH, --control-group NAME, -v), as given on the command
 * line: a unit's ExecStart= says them once, and they carry over to every
 * role the daemon takes. */
/* In a host's state dir: the backup host its last replicator bound
 * (replicator/backup_choice.h); an agent that restores the VM removes it. */
#define BACKUP_HOST_FILE "backup-host.json"

#define PAIR_ROLE_MAX_CARRY 8
struct pair_role_carry {
	const char *argv[PAIR_ROLE_MAX_CARRY];
	int n;
};
/* value may be NULL (a flag without one); more than fit are dropped. */
void pair_role_carry_add(struct pair_role_carry *c, const char *flag, const char *value);

/* Replace this process with remus-DAEMON, the binary next to our own,
 * run as `remus-DAEMON --config FILE --host NAME CARRY... EXTRA...`
 * (extra: NULL terminated, may be NULL). Reaps our exited children first
 * (a QEMU that ran here). Returns only on failure: -errno, logged. */
int pair_role_exec(const char *daemon, const char *config, const char *host,
		   const struct pair_role_carry *carry, const char *const *extra);

#endif
