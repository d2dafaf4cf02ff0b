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

/* The name status, hooks and metrics show ("unknown" outside the enum). */
const char *agent_state_name(enum agent_state s);
/* May the agent go from `from` to `to`? Staying is always allowed (the
 * reason may change). */
bool agent_state_may(enum agent_state from, enum agent_state to);

#endif
