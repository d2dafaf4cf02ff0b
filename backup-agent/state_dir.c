/* The state directory: one agent (or VM restored from it) at a time, and
 * what an earlier session left committed there. */
#include "agent.h"

#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* One agent per state directory: two would write the same replica and
 * journal, and restore from what the other is half-way through. An
 * `--restore` by hand while an agent runs on the directory is refused the
 * same way. The lock is the directory's own (flock), held until we exit. */
int agent_lock_state_dir(struct agent *a)
{
	const char *dir = a->cfg.state_dir;

	/* A listening agent makes its directory; --restore needs one. */
	if (!a->cfg.restore_now && mkdir(dir, 0700) < 0 && errno != EEXIST) {
		int rc = -errno;

		log_err("cannot create state dir %s: %s", dir, strerror(-rc));
		return rc;
	}
	a->state_lock_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (a->state_lock_fd < 0) {
		int rc = -errno;

		log_err("cannot open state dir %s: %s", dir, strerror(-rc));
		return rc;
	}
	if (flock(a->state_lock_fd, LOCK_EX | LOCK_NB) < 0) {
		int rc = -errno;

		close(a->state_lock_fd);
		a->state_lock_fd = -1;
		if (rc == -ENOLCK || rc == -EOPNOTSUPP) {
			log_warn("cannot lock state dir %s (%s): going on without the guard "
				 "against a second agent on it", dir, strerror(-rc));
			return 0;
		}
		if (rc == -EWOULDBLOCK)
			log_err("--state-dir %s is in use: another remus-agent runs on it, or a VM "
				"restored from it still runs (either holds the directory's lock); one "
				"agent per state directory", dir);
		else
			log_err("cannot lock state dir %s: %s", dir, strerror(-rc));
		return rc;
	}
	return 0;
}

void agent_unlock_state_dir(struct agent *a)
{
	if (a->state_lock_fd >= 0)
		close(a->state_lock_fd);
	a->state_lock_fd = -1;
}

/* The committed replica already in the state dir (an earlier session's),
 * for status: its VM, epoch and commit time. */
void agent_load_replica_facts(struct agent *a)
{
	struct replica_info info;
	const char *name;
	struct tm tm = { 0 };

	if (replica_load_info(a->cfg.state_dir, &info))
		return;
	a->replica_known = true;
	a->replica_epoch = info.epoch;
	a->replica_generation = replica_generation(info.vm);
	name = json_object_get_string(json_object_object_get(info.vm, "name"));
	snprintf(a->replica_vm, sizeof(a->replica_vm), "%s", name ? name : "");
	/* committed_at is "%Y-%m-%dT%H:%M:%SZ", UTC (replica.c) */
	if (info.committed_at && strptime(info.committed_at, "%Y-%m-%dT%H:%M:%SZ", &tm))
		a->replica_committed_ms = (long long)timegm(&tm) * 1000;
	a->replica_committed_boot_ms = 0; /* aged on the wall clock: all there is */
	replica_info_free(&info);
}
