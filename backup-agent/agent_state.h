/* The backup agent's state machine: its states, their names, and which
 * transitions it may take. agent_set_state() (agent.c) is the one place
 * the state changes; it asks agent_state_may() first and refuses, with a
 * BUG line, a transition outside the table, as the replicator's
 * prot_set() does. */
#ifndef REMUS_AGENT_STATE_H
#define REMUS_AGENT_STATE_H

#include <stdbool.h>

enum agent_state {
	AGENT_WAITING,      /* listening, no primary */
	AGENT_SYNCING,      /* a primary's initial copy, nothing of it committed */
	AGENT_BACKUP,       /* a checkpoint of this primary committed: failover armed */
	AGENT_PAUSED,       /* the operator paused protection: no failover */
	AGENT_RECONNECTING, /* the stream was dropped: the primary may reconnect */
	AGENT_FENCING,      /* the primary is lost: the fence command runs */
	AGENT_RESTORING,    /* the VM is being restored here (failover or handover) */
	AGENT_MASTER,       /* the VM runs here; the agent exits */
	AGENT_FAULT,        /* the primary was lost and the VM not restored */
	AGENT_READY,        /* takeover = manual: a replica the VM may resume from
			     * here, waiting for `remusctl takeover` */
	AGENT_NSTATES
};

/* What a lost primary leads to, decided from what the agent knows then
 * (agent_failover_verdict): failover.c acts on it, and status calls
 * failover armed exactly when it is FAILOVER_RESTORE. */
enum failover_verdict {
	FAILOVER_RESTORE,          /* fence the primary, restore the replica here */
	FAILOVER_NOT_COMMITTED,    /* nothing of this session committed: FAULT */
	FAILOVER_PAUSED,           /* protection paused, output went out: FAULT */
	FAILOVER_STAY_READY,       /* a parked replica waits for its promotion */
	FAILOVER_DISABLED,         /* --no-failover: FAULT, replica kept */
	FAILOVER_AWAIT_PROMOTION,  /* takeover = manual: READY, the manager decides */
};

struct failover_facts {
	bool committed;        /* a checkpoint of this session committed */
	bool paused;           /* the session's protection is paused */
	bool takeover_ready;   /* takeover = manual: a replica already offered */
	bool no_failover;      /* --no-failover */
	bool takeover_manual;  /* takeover = manual */
};

/* Checked in this order: nothing committed, paused, a replica already
 * ready, --no-failover, takeover = manual; else restore. */
enum failover_verdict agent_failover_verdict(const struct failover_facts *f);

/* The name status, hooks and metrics show ("unknown" outside the enum). */
const char *agent_state_name(enum agent_state s);
/* May the agent go from `from` to `to`? Staying is always allowed (the
 * reason may change). */
bool agent_state_may(enum agent_state from, enum agent_state to);

#endif
