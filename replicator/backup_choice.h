/* Which host a replicator protects the VM to, in a pair whose roles move
 * ([host] sections, common/config.h). With two hosts it is the other one.
 * With a spare (three hosts) it is the first other host, in file order,
 * whose agent answers: so a VM restored after its old host died is
 * protected again by the spare while that host stays down.
 *
 * Once an agent has committed a checkpoint of ours it may take over from
 * it if our link breaks, and so may only one agent at a time: another
 * agent protecting the VM meanwhile would take over too at our death, and
 * two copies would run. So the host that committed is kept ("bound") until
 * it can no longer take over:
 *  - it closed after our GOODBYE (we dropped the link on purpose), or
 *  - its takeover window has passed since we lost the link (the silence
 *    it told us in its HELLO_REPLY: its timeout plus its fence's limit;
 *    from the loss, not from when we last heard from it, as an agent that
 *    drops a stream it cannot read waits its timeout from then) and the
 *    VM still runs here, so it did not fence us: it is down, or its fence
 *    failed and it waits for the operator.
 * That is the moment the replicator releases output held for the lost
 * backup too (epoch.c, release_output).
 *
 * The binding outlives the process: STATE-DIR/backup-host.json (host,
 * hold_ms), written when a session first commits, so that a replicator
 * that restarts while its agent waits for it goes back to that agent, or
 * waits out its window before it tries another. An agent that restores
 * the VM removes its host's file (a new primary owes nothing to the
 * backups of an old one). */
#ifndef REMUS_BACKUP_CHOICE_H
#define REMUS_BACKUP_CHOICE_H

#include "config.h"
#include "netaddr.h"

#include <stdbool.h>

#define BACKUP_CHOICE_MAX (CONFIG_MAX_HOSTS - 1)

struct backup_choice {
	int n;                          /* 0: one fixed backup (no [host] sections, or --backup) */
	struct netaddr addr[BACKUP_CHOICE_MAX];
	const char *name[BACKUP_CHOICE_MAX];
	int cur;                        /* the host tried now, or connected */
	int bound;                      /* the host that may take over, or -1 */
	double bound_until;             /* when it no longer may (0: while linked) */
	unsigned hold_ms;               /* its takeover window, as it told us */
	bool committed;                 /* the session now linked has committed */
	char record[4096];              /* STATE-DIR/backup-host.json */
};

/* Times are seconds of CLOCK_MONOTONIC (mono_ms() / 1e3): a step of the
 * wall clock must not end a window early. */

/* The other hosts of the file, in file order, and the binding recorded by
 * the last replicator of this host. 0, or -1 with the reason in err (an
 * address that does not parse). */
int backup_choice_init(struct backup_choice *c, const struct pair_config *pc,
		       const struct config_host *self, double now, char *err, size_t errlen);
/* Where to connect now: the bound host while its window lasts, else the
 * current candidate. Copies it into *out; false: no choice (keep *out). */
bool backup_choice_pick(struct backup_choice *c, double now, struct netaddr *out);
/* The attempt at the current host failed before any commit: the next
 * attempt goes to the next host (unless one is bound). */
void backup_choice_failed(struct backup_choice *c);
/* A session's first commit: the current host is bound (recorded). */
void backup_choice_committed(struct backup_choice *c, unsigned hold_ms);
/* A session's link ended (now). One that never committed moves on to the
 * next host (as a failed attempt); the bound host stays bound until its
 * window has passed. may_take_over: the link ended without a GOODBYE it
 * acknowledged. */
void backup_choice_link_lost(struct backup_choice *c, bool may_take_over, double now);
/* The host that is bound, or NULL. */
const char *backup_choice_bound(const struct backup_choice *c);

#endif
