/* A VM parked on this host (remusctl park, a cluster manager's demote):
 * its final checkpoint is committed on the other host's agent, and its
 * QEMU stays here, paused at that epoch, instead of quitting. If the
 * cluster manager promotes this host again and the other host's agent
 * still holds that same epoch, unused (state ready), the VM resumes here
 * at once; as soon as the VM runs anywhere else it is stale and goes.
 * The replicator records it in STATE-DIR/parked.json for the agent it
 * becomes. */
#ifndef REMUS_PARKED_H
#define REMUS_PARKED_H

#include <limits.h>
#include <stdint.h>
#include <sys/types.h>

struct parked_vm {
	pid_t pid;             /* the paused QEMU */
	uint64_t starttime;    /* its start (proc_starttime): not a reused pid */
	char qmp[PATH_MAX];    /* its QMP socket */
	uint64_t generation;   /* the session it was parked in */
	uint64_t epoch;        /* the final epoch the other host committed */
};

/* Write DIR/parked.json (atomically). 0 or -errno. */
int parked_save(const char *dir, const struct parked_vm *p);
/* Read it back: 0, -ENOENT (none), or -EINVAL (unreadable: removed). */
int parked_load(const char *dir, struct parked_vm *p);
void parked_forget(const char *dir);

#endif
