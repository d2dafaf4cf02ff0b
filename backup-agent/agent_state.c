/* The backup agent's state machine (agent_state.h). */
#include "agent_state.h"

const char *agent_state_name(enum agent_state s)
{
	switch (s) {
	case AGENT_WAITING: return "waiting";
	case AGENT_SYNCING: return "syncing";
	case AGENT_BACKUP: return "backup";
	case AGENT_PAUSED: return "paused";
	case AGENT_RECONNECTING: return "reconnecting";
	case AGENT_FENCING: return "fencing";
	case AGENT_RESTORING: return "restoring";
	case AGENT_MASTER: return "master";
	case AGENT_FAULT: return "fault";
	case AGENT_READY: return "ready";
	case AGENT_NSTATES: break;
	}
	return "unknown";
}

/* allowed[from] is the set of states it may go to. Where each edge comes
 * from: agent.c (a primary's HELLO, commits, PAUSE, a lost stream,
 * GOODBYE, HANDOVER), failover.c (a lost primary, a restore here),
 * takeover.c (takeover = manual: ready, promoted, given up), cold_start.c
 * (both hosts came back). */
#define TO(s) (1u << (s))
static const unsigned allowed[AGENT_NSTATES] = {
	/* a primary's HELLO; a cold start or takeover restores, resumes a
	 * parked VM, or waits to be promoted */
	[AGENT_WAITING] = TO(AGENT_SYNCING) | TO(AGENT_RESTORING) | TO(AGENT_MASTER) |
			  TO(AGENT_READY),
	/* nothing committed yet: a loss is a FAULT, never a restore */
	[AGENT_SYNCING] = TO(AGENT_BACKUP) | TO(AGENT_PAUSED) | TO(AGENT_RECONNECTING) |
			  TO(AGENT_WAITING) | TO(AGENT_FAULT),
	/* failover armed: fence or restore, hand over, park (READY), or
	 * lose the primary with the takeover window over (WAITING) */
	[AGENT_BACKUP] = TO(AGENT_PAUSED) | TO(AGENT_RECONNECTING) | TO(AGENT_WAITING) |
			 TO(AGENT_FENCING) | TO(AGENT_RESTORING) | TO(AGENT_FAULT) |
			 TO(AGENT_READY),
	/* paused: the replica is stale, a loss is a FAULT */
	[AGENT_PAUSED] = TO(AGENT_BACKUP) | TO(AGENT_RECONNECTING) | TO(AGENT_WAITING) |
			 TO(AGENT_FAULT),
	/* the primary may come back; if not, as a lost primary from BACKUP;
	 * with no primary connected, the operator's takeover may restore or
	 * attach (MASTER) */
	[AGENT_RECONNECTING] = TO(AGENT_SYNCING) | TO(AGENT_FENCING) | TO(AGENT_RESTORING) |
			       TO(AGENT_MASTER) | TO(AGENT_FAULT) | TO(AGENT_READY) |
			       TO(AGENT_WAITING),
	[AGENT_FENCING] = TO(AGENT_RESTORING) | TO(AGENT_FAULT),
	/* BACKUP: a planned handover failed, the primary resumes the VM */
	[AGENT_RESTORING] = TO(AGENT_MASTER) | TO(AGENT_FAULT) | TO(AGENT_BACKUP),
	[AGENT_MASTER] = 0, /* the VM runs here: the agent's last state */
	/* the replica is kept: the primary comes back, the operator restores
	 * it (takeover, a parked or started VM), or a cold start finds it the
	 * newer (cold_start.c: FAULT counts as waiting there) */
	[AGENT_FAULT] = TO(AGENT_SYNCING) | TO(AGENT_RESTORING) | TO(AGENT_MASTER) |
			TO(AGENT_READY),
	/* promoted (restore, or resume the parked VM), given up or expired
	 * (WAITING), a primary connects, or the parked primary's stream
	 * breaks while it is still connected */
	[AGENT_READY] = TO(AGENT_SYNCING) | TO(AGENT_RESTORING) | TO(AGENT_MASTER) |
			TO(AGENT_WAITING) | TO(AGENT_RECONNECTING),
};
#undef TO

bool agent_state_may(enum agent_state from, enum agent_state to)
{
	if ((unsigned)from >= AGENT_NSTATES || (unsigned)to >= AGENT_NSTATES)
		return false;
	return from == to || (allowed[from] >> to & 1u);
}

enum failover_verdict agent_failover_verdict(const struct failover_facts *f)
{
	if (!f->committed)
		return FAILOVER_NOT_COMMITTED; /* an older session's replica rolls back */
	if (f->paused)
		return FAILOVER_PAUSED; /* the replica would take back released output */
	if (f->takeover_manual && f->takeover_ready)
		return FAILOVER_STAY_READY; /* before --no-failover: promoted either way */
	if (f->no_failover)
		return FAILOVER_DISABLED;
	if (f->takeover_manual)
		return FAILOVER_AWAIT_PROMOTION;
	return FAILOVER_RESTORE;
}
