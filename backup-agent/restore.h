/* Failover: bring the VM back from the committed replica. */
#ifndef REMUS_RESTORE_H
#define REMUS_RESTORE_H

#include <sys/types.h>

struct restore_result {
	pid_t qemu_pid;
	unsigned long long epoch;
	double copy_ms, start_ms, load_ms, total_ms;
};

struct restore_opts {
	const char *dir;            /* the state dir holding the replica */
	const char *const *taps;    /* see restore_spec.taps */
	int ntaps;
};

/* Start QEMU with the primary's command line (rewritten into dir) on a copy
 * of the replica RAM, feed it the committed device state, wait until the
 * VM runs, and have it announce its MAC addresses where it now is. The
 * replica itself is only read. 0 or -errno (logged). */
int restore_vm(const struct restore_opts *o, struct restore_result *res);

#endif
