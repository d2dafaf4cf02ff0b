/* Failover: bring the VM back from the committed replica. */
#ifndef REMUS_RESTORE_H
#define REMUS_RESTORE_H

#include <sys/types.h>

struct restore_result {
	pid_t qemu_pid;
	unsigned long long epoch;
	double copy_ms, start_ms, load_ms, total_ms;
};

/* Start QEMU with the primary's command line (rewritten into dir) on a copy
 * of the replica RAM, feed it the committed device state, and wait until
 * the VM runs. The replica itself is only read. 0 or -errno (logged). */
int restore_vm(const char *dir, struct restore_result *res);

#endif
