/* LD_PRELOAD shim for the integration tests: a backup whose storage fails
 * to write back a disk's initial copy, once. This machine has no
 * device-mapper to make a real disk fail under a running agent.
 *
 * While the file named by REMUS_TEST_FAIL_SYNC_ONCE exists,
 * sync_file_range on a descriptor of a file whose name ends in ".sync"
 * (the agent's disk-N.sync) fails with EIO, as a failing disk's write-back
 * does, and the file is removed: the next session's sync goes through. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int is_sync_file(int fd)
{
	char link[64], path[4096];
	ssize_t n;

	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	n = readlink(link, path, sizeof(path) - 1);
	if (n < 5)
		return 0;
	path[n] = 0;
	return !strcmp(path + n - 5, ".sync");
}

int sync_file_range(int fd, off_t off, off_t n, unsigned int flags)
{
	static int (*real)(int, off_t, off_t, unsigned int);
	const char *marker = getenv("REMUS_TEST_FAIL_SYNC_ONCE");

	if (!real)
		real = (int (*)(int, off_t, off_t, unsigned int))dlsym(RTLD_NEXT, "sync_file_range");
	if (marker && *marker && is_sync_file(fd) && unlink(marker) == 0) {
		errno = EIO;
		return -1;
	}
	if (!real) {
		errno = ENOSYS;
		return -1;
	}
	return real(fd, off, n, flags);
}
