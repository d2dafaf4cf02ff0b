/* Cold start of a pair whose roles move ([host] sections): the hosts
 * came back and none runs the VM (every daemon found no VM and became an
 * agent). Each agent that holds a committed replica asks every other
 * host's agent in turn, over the pair's TLS link, what it holds
 * (PEER_QUERY, answered by PEER_STATE). When each other one is an agent
 * too, with no primary and no newer replica, in one round of asking, this
 * one restores the VM and becomes its replicator; the others wait and one
 * becomes its backup. The order is total (generation, then epoch, then
 * host name), so exactly one restores, and it is the one with the newest
 * replica. An unreachable host decides nothing (the round starts again):
 * it may be running the VM, or hold a newer replica, so the operator
 * decides (remus-agent --restore). A replica committed before this host
 * last started is not restored automatically either (its RAM and journal
 * may be behind its disks: see --after-host-restart). */
#ifndef REMUS_COLD_START_H
#define REMUS_COLD_START_H

#include "config.h"
#include "peer_link.h"
#include "proto.h"

#include <ev.h>
#include <stdbool.h>
#include <stdint.h>

struct agent;

#define COLD_START_MAX_PEERS (CONFIG_MAX_HOSTS - 1)
struct cold_start {
	struct peer_link link;  /* ours, to the agent asked now */
	ev_timer timer;
	struct netaddr peer[COLD_START_MAX_PEERS]; /* the other hosts, in file order */
	int npeers;
	int asking;             /* this round: the peers before it said we win */
	bool enabled;
	bool refused_logged;    /* said once why this host does not restore */
	char last_answer[COLD_START_MAX_PEERS][160]; /* logged when it changes */
};

/* What one agent holds, as PEER_QUERY and PEER_STATE carry it (JSON:
 * host, state, waiting, replica, generation, epoch). */
struct cold_facts {
	const char *host;
	bool waiting;   /* an agent with no primary, not restoring */
	bool replica;   /* a committed replica */
	bool restored;  /* a VM ran on from it (replica_was_restored): it never wins */
	bool ready;     /* takeover = manual: its replica waits to be promoted */
	/* A query that claims the other host's ready epoch: this host resumes
	 * its parked QEMU at claim_generation/claim_epoch only if the other
	 * host, READY at exactly that epoch, gives it up (granted, in its
	 * answer). Neither runs the VM if the answer is lost. */
	bool claim;
	uint64_t claim_generation, claim_epoch;
	bool granted;
	uint64_t generation, epoch;
};

/* Does the agent with facts us restore the VM, the other one having
 * peer? Only when both wait, ours was never restored from, and it is the
 * newer replica: by generation, then epoch, then (never seen in practice)
 * host name. A peer's restored replica still counts against ours: the VM
 * ran on from it, so an older one of ours would take that back. Of two
 * agents asking each other, at most one wins. */
bool cold_start_wins(const struct cold_facts *us, const struct cold_facts *peer);

/* cold_facts.c: the facts as PEER_QUERY / PEER_STATE carry them (JSON:
 * host, state, waiting, replica, ready, restored, generation, epoch;
 * optional: ready, claim_generation and claim_epoch (both or neither),
 * granted), malloc'd; and parsed from the other host's payload:
 * 0, or -EPROTO for anything else. f->host points into *owner, which the
 * caller puts. */
char *cold_facts_json(const struct cold_facts *f, const char *state);
struct json_object;
int cold_facts_parse(const uint8_t *payload, uint32_t len, struct cold_facts *f,
		     struct json_object **owner);

/* Start asking, every COLD_START_ASK_S, while this agent has no primary
 * (a no-op outside a pair with [host] sections). */
void cold_start_init(struct agent *a);
/* Ask the other host now, for a takeover (agent_takeover_peer_answer
 * gets the answer): 0, or -1 when it cannot be asked (no [host] pair).
 * Two hosts only: takeover = manual, which parks, needs them (config.c). */
int cold_start_ask_now(struct agent *a);
/* Something listens on path (a QEMU's QMP socket): a VM may run here. */
bool cold_start_listens(const char *path);
/* Does a QEMU of the pair's VM run on this host: something listens on
 * [vm] qmp, or this host's libvirt runs [vm] domain? 1 yes, 0 no, -errno
 * when libvirt cannot tell (then the host is neither empty nor holding
 * the VM: it must not restore it, nor attach to it). */
int cold_start_vm_here(const struct agent *a);
void cold_start_stop(struct agent *a);
/* A connection's first frame is PEER_QUERY: answer with what this agent
 * holds and close. */
void cold_start_answer(struct agent *a, struct peer_link *l, const struct frame_hdr *h,
		       const uint8_t *payload);

#endif
