/* The replicator's protection state: one machine, changed in one place.
 *
 * It has four parts, because they change for different reasons and one
 * can be under way while another is: the backup's hold on the VM (the
 * link part, moved by the pipeline and the link), the operator's pause,
 * a planned handover, and a handover whose outcome nobody knows. Every
 * change goes through prot_set(), which refuses a transition the table
 * does not have (a bug: logged, and nothing changes), logs each one that
 * happens with its reason, and tells the owner. The other modules ask the
 * questions below; what status, sd_notify and the hooks show derives
 * from prot_name(). Pure: no loop, no replicator, so every transition is
 * unit tested (tests/check_prot_state.c). */
#ifndef REMUS_PROT_STATE_H
#define REMUS_PROT_STATE_H

#include <stdbool.h>

enum protection {
	PROT_CONNECTING,   /* no backup yet */
	PROT_SYNCING,      /* initial copy in flight, nothing committed */
	PROT_PROTECTED,    /* backup holds a committed checkpoint */
	PROT_UNPROTECTED,  /* backup lost; retrying */
};
#define PROT_NLINK 4

/* Operator pause (remusctl pause/resume, replicator/operator.c). */
enum pause_phase {
	PAUSE_OFF,
	PAUSE_DRAIN,       /* asked: waiting for the epoch in flight to be acked */
	PAUSE_SENT,        /* PAUSE sent: output held until the backup's PAUSE_ACK */
	PAUSE_ON,          /* no checkpoints, output released at once */
};
#define PAUSE_NPHASES 4

/* Planned failover (remusctl failover, replicator/operator.c). */
enum handover_phase {
	HO_NONE,
	HO_DRAIN,          /* waiting for the epoch in flight to be acked; VM runs */
	HO_FINAL,          /* final checkpoint in flight, VM stopped for good */
	HO_WAIT_DONE,      /* HANDOVER sent: the backup is starting the VM */
};
#define HO_NPHASES 4

enum prot_part {
	PROT_PART_LINK,        /* enum protection */
	PROT_PART_PAUSE,       /* enum pause_phase */
	PROT_PART_HANDOVER,    /* enum handover_phase */
	PROT_PART_LEFT_PAUSED, /* 0/1: a handover of unknown outcome left the VM stopped */
	PROT_NPARTS
};

struct prot_state {
	int part[PROT_NPARTS];
	char reason[256];      /* of the last change */
	const char *vm;        /* for the log; may change (attach names the VM) */
	/* Called after every change that happened (not after a refused or
	 * idle one): the owner refreshes what derives from the state. */
	void (*changed)(void *data);
	void *data;
};

void prot_init(struct prot_state *s, void (*changed)(void *data), void *data);

/* The one place the state changes. to == the current value: nothing
 * happens, 0. A transition the table lacks, or one another part forbids
 * now: logged as a bug, nothing changes, -EINVAL. */
int prot_set(struct prot_state *s, enum prot_part part, int to, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

/* Would prot_set accept it now? */
bool prot_may_set(const struct prot_state *s, enum prot_part part, int to);

static inline enum protection prot_link(const struct prot_state *s)
{
	return (enum protection)s->part[PROT_PART_LINK];
}
static inline enum pause_phase prot_pause(const struct prot_state *s)
{
	return (enum pause_phase)s->part[PROT_PART_PAUSE];
}
static inline enum handover_phase prot_handover(const struct prot_state *s)
{
	return (enum handover_phase)s->part[PROT_PART_HANDOVER];
}

/* The questions the other modules ask. */
static inline bool prot_is_protected(const struct prot_state *s)
{
	return prot_link(s) == PROT_PROTECTED;
}
/* remusctl pause has taken effect, or is on its way. */
static inline bool prot_paused(const struct prot_state *s)
{
	return prot_pause(s) != PAUSE_OFF;
}
static inline bool prot_handing_over(const struct prot_state *s)
{
	return prot_handover(s) != HO_NONE;
}
static inline bool prot_left_paused(const struct prot_state *s)
{
	return s->part[PROT_PART_LEFT_PAUSED] != 0;
}
/* Ordinary checkpoints run: not paused, no handover taking its own. */
bool prot_checkpoints_run(const struct prot_state *s);
/* Barriers are coming (so a writer waiting for room gets it): a backup
 * holds or is getting the VM, and ordinary checkpoints run or a
 * handover's final one follows the epoch in flight. */
bool prot_barriers_coming(const struct prot_state *s);
/* The VM must stay stopped here: a handover's final checkpoint was taken,
 * or its outcome is unknown. */
bool prot_vm_held_stopped(const struct prot_state *s);

/* What status shows as "protection": one of prot_state_names. */
const char *prot_name(const struct prot_state *s);
/* Every name prot_name can give, NULL terminated. */
extern const char *const prot_state_names[];
/* The name of one part's value ("protected", "waiting-for-ack", ...). */
const char *prot_part_value_name(enum prot_part part, int value);
const char *protection_name(enum protection p);

#endif
