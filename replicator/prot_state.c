/* The replicator's protection state machine (prot_state.h). */
#include "prot_state.h"

#include "log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define MAX_VALUES 4

/* allowed[part][from] is a bit set of the values it may go to. */
#define TO(v) (1u << (v))
static const unsigned allowed[PROT_NPARTS][MAX_VALUES] = {
	[PROT_PART_LINK] = {
		[PROT_CONNECTING] = TO(PROT_SYNCING) | TO(PROT_UNPROTECTED),
		[PROT_SYNCING] = TO(PROT_PROTECTED) | TO(PROT_UNPROTECTED),
		/* SYNCING again: the first epoch after a pause must commit
		 * before the backup may take over again */
		[PROT_PROTECTED] = TO(PROT_UNPROTECTED) | TO(PROT_SYNCING),
		[PROT_UNPROTECTED] = TO(PROT_SYNCING),
	},
	[PROT_PART_PAUSE] = {
		[PAUSE_OFF] = TO(PAUSE_DRAIN),
		/* ON at once when no backup is there to be told */
		[PAUSE_DRAIN] = TO(PAUSE_SENT) | TO(PAUSE_ON) | TO(PAUSE_OFF),
		[PAUSE_SENT] = TO(PAUSE_ON) | TO(PAUSE_OFF),
		[PAUSE_ON] = TO(PAUSE_OFF),
	},
	[PROT_PART_HANDOVER] = {
		[HO_NONE] = TO(HO_DRAIN),
		[HO_DRAIN] = TO(HO_FINAL) | TO(HO_NONE),
		[HO_FINAL] = TO(HO_WAIT_DONE) | TO(HO_NONE),
		[HO_WAIT_DONE] = TO(HO_NONE),
	},
	[PROT_PART_LEFT_PAUSED] = {
		[0] = TO(1),
		[1] = TO(0),
	},
};
#undef TO

static const int nvalues[PROT_NPARTS] = {
	[PROT_PART_LINK] = PROT_NLINK,
	[PROT_PART_PAUSE] = PAUSE_NPHASES,
	[PROT_PART_HANDOVER] = HO_NPHASES,
	[PROT_PART_LEFT_PAUSED] = 2,
};

static const char *const part_names[PROT_NPARTS] = {
	[PROT_PART_LINK] = "protection",
	[PROT_PART_PAUSE] = "pause",
	[PROT_PART_HANDOVER] = "handover",
	[PROT_PART_LEFT_PAUSED] = "left-paused",
};

const char *const prot_state_names[] = {
	"connecting", "syncing", "protected", "unprotected", "pausing", "paused",
	"handing-over", "handover-unknown", NULL
};

const char *protection_name(enum protection p)
{
	switch (p) {
	case PROT_CONNECTING: return "connecting";
	case PROT_SYNCING: return "syncing";
	case PROT_PROTECTED: return "protected";
	case PROT_UNPROTECTED: return "unprotected";
	}
	return "unknown";
}

static const char *pause_name(enum pause_phase p)
{
	switch (p) {
	case PAUSE_OFF: return "off";
	case PAUSE_DRAIN: return "waiting-for-ack";
	case PAUSE_SENT: return "telling-backup";
	case PAUSE_ON: return "paused";
	}
	return "unknown";
}

static const char *handover_name(enum handover_phase h)
{
	switch (h) {
	case HO_NONE: return "none";
	case HO_DRAIN: return "waiting-for-ack";
	case HO_FINAL: return "final-checkpoint";
	case HO_WAIT_DONE: return "backup-starting-vm";
	}
	return "unknown";
}

const char *prot_part_value_name(enum prot_part part, int value)
{
	switch (part) {
	case PROT_PART_LINK: return protection_name((enum protection)value);
	case PROT_PART_PAUSE: return pause_name((enum pause_phase)value);
	case PROT_PART_HANDOVER: return handover_name((enum handover_phase)value);
	case PROT_PART_LEFT_PAUSED: return value ? "yes" : "no";
	case PROT_NPARTS: break;
	}
	return "unknown";
}

void prot_init(struct prot_state *s, void (*changed)(void *data), void *data)
{
	memset(s, 0, sizeof(*s));
	s->part[PROT_PART_LINK] = PROT_CONNECTING;
	s->part[PROT_PART_PAUSE] = PAUSE_OFF;
	s->part[PROT_PART_HANDOVER] = HO_NONE;
	s->changed = changed;
	s->data = data;
}

/* Rules across parts: what one part may start depends on another. */
static bool other_parts_allow(const struct prot_state *s, enum prot_part part, int to)
{
	switch (part) {
	case PROT_PART_PAUSE:
		/* a handover, or its unknown end, decides the VM's fate */
		return to != PAUSE_DRAIN || (!prot_handing_over(s) && !prot_left_paused(s));
	case PROT_PART_HANDOVER:
		/* only a committed, unpaused replica can take the VM over */
		return to != HO_DRAIN ||
		       (!prot_paused(s) && !prot_left_paused(s) && prot_is_protected(s));
	case PROT_PART_LEFT_PAUSED:
		/* only a handover past its final checkpoint leaves it unknown */
		return !to || prot_handover(s) >= HO_FINAL;
	case PROT_PART_LINK:
	case PROT_NPARTS:
		break;
	}
	return true;
}

bool prot_may_set(const struct prot_state *s, enum prot_part part, int to)
{
	int from;

	if ((unsigned)part >= PROT_NPARTS || to < 0 || to >= nvalues[part])
		return false;
	from = s->part[part];
	if (from == to)
		return true;
	return (allowed[part][from] & (1u << to)) && other_parts_allow(s, part, to);
}

int prot_set(struct prot_state *s, enum prot_part part, int to, const char *fmt, ...)
{
	const char *vm = s->vm ? s->vm : "?", *was;
	char reason[sizeof(s->reason)];
	va_list ap;
	int from;

	va_start(ap, fmt);
	vsnprintf(reason, sizeof(reason), fmt, ap);
	va_end(ap);
	if (!prot_may_set(s, part, to)) {
		log_err("BUG: VM %s: %s may not go from %s to %s now (state %s): refused (%s)", vm,
			(unsigned)part < PROT_NPARTS ? part_names[part] : "?",
			(unsigned)part < PROT_NPARTS ? prot_part_value_name(part, s->part[part]) : "?",
			(unsigned)part < PROT_NPARTS ? prot_part_value_name(part, to) : "?",
			prot_name(s), reason);
		return -EINVAL;
	}
	from = s->part[part];
	if (from == to)
		return 0;
	was = prot_name(s);
	s->part[part] = to;
	memcpy(s->reason, reason, sizeof(reason));
	if (strcmp(was, prot_name(s)))
		log_info("VM %s: %s -> %s (%s: %s -> %s: %s)", vm, was, prot_name(s),
			 part_names[part], prot_part_value_name(part, from),
			 prot_part_value_name(part, to), reason);
	else
		log_info("VM %s: %s: %s -> %s (%s)", vm, part_names[part],
			 prot_part_value_name(part, from), prot_part_value_name(part, to), reason);
	if (s->changed)
		s->changed(s->data);
	return 0;
}

bool prot_checkpoints_run(const struct prot_state *s)
{
	return !prot_paused(s) && !prot_handing_over(s) && !prot_left_paused(s);
}

bool prot_barriers_coming(const struct prot_state *s)
{
	/* SYNCING: epoch 0 is closed, or its copy goes on, and epoch 1 follows;
	 * a handover's DRAIN: its final checkpoint follows the ack */
	return (prot_link(s) == PROT_PROTECTED || prot_link(s) == PROT_SYNCING) &&
	       !prot_paused(s) && !prot_left_paused(s) &&
	       (prot_handover(s) == HO_NONE || prot_handover(s) == HO_DRAIN);
}

bool prot_vm_held_stopped(const struct prot_state *s)
{
	return prot_left_paused(s) || prot_handover(s) >= HO_FINAL;
}

const char *prot_name(const struct prot_state *s)
{
	if (prot_handing_over(s))
		return "handing-over";
	if (prot_left_paused(s))
		return "handover-unknown";
	if (prot_pause(s) == PAUSE_ON)
		return "paused";
	if (prot_paused(s))
		return "pausing";
	return protection_name(prot_link(s));
}
