/* Changing role by exec (pair_role.h). */
#include "pair_role.h"
#include "log.h"

#include <errno.h>
#include <signal.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_EXTRA 8

/* The binary named daemon in the directory of our own: an installed pair
 * (/usr/sbin) and a build tree (build/bin) alike, never one found on a
 * PATH someone else may have set. */
static int sibling_binary(const char *daemon, char *out, size_t outlen)
{
	char self[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);

	if (n < 0)
		return -errno;
	self[n] = 0;
	if ((size_t)snprintf(out, outlen, "%s/%s", dirname(self), daemon) >= outlen)
		return -ENAMETOOLONG;
	return access(out, X_OK) ? -errno : 0;
}

void pair_role_carry_add(struct pair_role_carry *c, const char *flag, const char *value)
{
	if (c->n + 2 > PAIR_ROLE_MAX_CARRY)
		return;
	c->argv[c->n++] = flag;
	if (value)
		c->argv[c->n++] = value;
}

int pair_role_exec(const char *daemon, const char *config, const char *host,
		   const struct pair_role_carry *carry, const char *const *extra)
{
	const char *argv[6 + PAIR_ROLE_MAX_CARRY + MAX_EXTRA + 1];
	char path[PATH_MAX];
	int argc = 0, rc;

	rc = sibling_binary(daemon, path, sizeof(path));
	if (rc) {
		log_err("cannot become %s: %s: %s", daemon, path, strerror(-rc));
		return rc;
	}
	argv[argc++] = path;
	argv[argc++] = "--config";
	argv[argc++] = config;
	argv[argc++] = "--host";
	argv[argc++] = host;
	for (int i = 0; carry && i < carry->n; i++)
		argv[argc++] = carry->argv[i];
	for (int i = 0; extra && extra[i]; i++) {
		if (i == MAX_EXTRA)
			return -E2BIG;
		argv[argc++] = extra[i];
	}
	argv[argc] = NULL;
	/* A QEMU that ran here and has exited must not stay a zombie of the
	 * next role for ever; one that runs stays our child. */
	while (waitpid(-1, NULL, WNOHANG) > 0)
		;
	/* Whatever descriptor was left open by mistake stays behind. */
	close_range(3, ~0u, CLOSE_RANGE_CLOEXEC);
	log_info("becoming %s (--config %s --host %s)", daemon, config, host);
	/* ignored across the exec, until the next main installs its handler
	 * (sighup.h): a SIGHUP meanwhile must not end the daemon */
	signal(SIGHUP, SIG_IGN);
	execv(path, (char *const *)argv);
	rc = -errno;
	log_err("cannot exec %s: %s", path, strerror(-rc));
	return rc;
}
