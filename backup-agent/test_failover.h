/* remusctl test-failover (the agent's): start a throwaway clone of the
 * committed replica on this host, cut off from the LAN, check that it runs
 * (its guest is alive: its RAM changes; its disks read through the
 * restored block graph), and discard it, while production protection goes
 * on. The replica's files are cloned (reflink) or copied at a commit
 * boundary, in the loop; everything else, the restore and the checks,
 * runs in a child process, so that the agent keeps committing and
 * answering heartbeats. A plain QEMU clone's NICs are unix datagram
 * sockets with nobody at the other end (a VM with an inet NIC is
 * refused); a libvirt replica's clone is the transient domain
 * VM-test-failover, with a UUID of its own, each NIC on a TAP attached to
 * nothing (restore_domain.h), never defined. Neither may open a shared
 * disk (the restore refuses one): it can reach nothing outside its
 * directory. The state dir must have room for the clone. */
#ifndef REMUS_TEST_FAILOVER_H
#define REMUS_TEST_FAILOVER_H

#include <ev.h>
#include <limits.h>
#include <stdbool.h>
#include <sys/types.h>

struct agent;

/* Copies of the replica beyond this (no reflinks) are refused: the loop
 * would stand still while they are made. */
#define TEST_FAILOVER_MAX_COPY (1ull << 30)
/* The child's own limit: restore, checks and cleanup. */
#define TEST_FAILOVER_DEADLINE_S 120

struct test_failover {
	pid_t child;                /* 0: none running */
	int client_fd;              /* the waiting remusctl */
	int result_fd;              /* the child's report (JSON), read at its end */
	ev_child child_watch;
	ev_timer deadline;
	char dir[PATH_MAX];         /* the clone: DIR/test-failover */
	/* a libvirt replica's clone: the transient domain VM-test-failover,
	 * which libvirt destroys with the child's connection; "" for plain
	 * QEMU */
	char domain[256];
	double started_ms;
};

void test_failover_init(struct agent *a);
/* "test-failover": NULL when the answer comes later on fd (*keep), else
 * the error reply. */
char *test_failover_start(struct agent *a, int fd, bool *keep);
/* The agent stops: kill a running test, remove its clone. */
void test_failover_stop(struct agent *a);

#endif
