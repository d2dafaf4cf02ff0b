/* Restore, as verified on stock QEMU 7.2 (docs/DESIGN notes, section 4):
 * the same command line with the memory backend on a copy of the replica
 * RAM and -incoming defer; then migrate-incoming of the saved device state.
 * The device state carries no configuration section, so the restored QEMU
 * runs with migration.send-configuration=off and we compare the machine
 * type ourselves. */
#include "restore.h"

#include "clock.h"
#include "log.h"
#include "qmp.h"
#include "replica.h"
#include "restore_cmdline.h"
#include "restore_verify.h"
#include "shared_image.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define QMP_WAIT_MS     10000
#define RUNNING_WAIT_MS 10000
#define QMP_TIMEOUT_MS  5000

/* The restored VM writes its disks, so it runs on qcow2 overlays over the
 * replica disks (made in no time, whatever the disk's size): the replica
 * stays as committed, and a second restore starts from it again. */
/* The NICs' socket files of a VM restored here before (restore_cmdline.c
 * names them DIR/netdev-ID.sock and .peer.sock): QEMU cannot bind a path
 * that exists, and a stale peer socket would take the new VM's frames. */
static void remove_nic_sockets(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *e;
	size_t len;

	if (!d)
		return;
	while ((e = readdir(d))) {
		len = strlen(e->d_name);
		if (e->d_type == DT_SOCK && !strncmp(e->d_name, "netdev-", 7) && len > 12 &&
		    !strcmp(e->d_name + len - 5, ".sock"))
			unlinkat(dirfd(d), e->d_name, 0);
	}
	closedir(d);
}

static int make_overlay(const char *base, const char *overlay)
{
	char *argv[] = { "qemu-img", "create", "-q", "-f", "qcow2", "-b", (char *)base,
			 "-F", "raw", (char *)overlay, NULL };
	int status;
	pid_t pid;

	unlink(overlay);
	pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0) {
		int devnull = open("/dev/null", O_RDWR);
		if (devnull >= 0)
			dup2(devnull, 0);
		execvp(argv[0], argv);
		fprintf(stderr, "remus-agent: cannot run qemu-img: %s\n", strerror(errno));
		_exit(127);
	}
	if (waitpid(pid, &status, 0) < 0)
		return -errno;
	if (!WIFEXITED(status) || WEXITSTATUS(status)) {
		log_err("qemu-img create of overlay %s over %s failed (status %d)", overlay, base,
			WIFEXITED(status) ? WEXITSTATUS(status) : -1);
		return -EIO;
	}
	return 0;
}

int restore_disk_overlays(const char *dir, struct json_object *vm, struct restore_disks *out)
{
	struct json_object *arr;
	char absdir[PATH_MAX];
	size_t n;

	memset(out, 0, sizeof(*out));
	if (!json_object_object_get_ex(vm, "disks", &arr) || !json_object_is_type(arr, json_type_array))
		return 0;
	n = json_object_array_length(arr);
	if (n > RESTORE_MAX_DISKS) {
		log_err("the replica lists %zu disks, at most %d", n, RESTORE_MAX_DISKS);
		return -EINVAL;
	}
	/* qemu-img and QEMU resolve a relative backing file against the
	 * overlay's folder, libvirt wants absolute paths: make dir absolute */
	if (n && !realpath(dir, absdir)) {
		log_err("state dir %s: %s", dir, strerror(errno));
		return -errno;
	}
	dir = absdir;
	for (size_t i = 0; i < n; i++) {
		struct json_object *d = json_object_array_get_idx(arr, i);
		char base[PATH_MAX + 32];
		int rc;

		snprintf(base, sizeof(base), "%s/disk-%zu.img", dir, i);
		if (asprintf(&out->overlay[i], "%s/disk-%zu.qcow2", dir, i) < 0) {
			out->overlay[i] = NULL;
			return -ENOMEM;
		}
		out->d[i].file = restore_json_str(d, "file");
		out->d[i].id = restore_json_str(d, "id");
		out->d[i].node = restore_json_str(d, "node");
		out->d[i].overlay = out->overlay[i];
		out->base[i] = strdup(base);
		out->n = (int)i + 1;
		if (!out->base[i])
			return -ENOMEM;
		rc = make_overlay(base, out->overlay[i]);
		if (rc)
			return rc;
	}
	return 0;
}

void restore_disks_free(struct restore_disks *d)
{
	for (int i = 0; i < d->n; i++) {
		free(d->overlay[i]);
		free(d->base[i]);
	}
	d->n = 0;
}

static char **argv_from_json(struct json_object *vm, int *argc)
{
	struct json_object *a;
	char **argv;
	size_t n;

	json_object_object_get_ex(vm, "qemu_argv", &a);
	n = json_object_array_length(a);
	argv = calloc(n + 1, sizeof(char *));
	if (!argv)
		return NULL;
	for (size_t i = 0; i < n; i++)
		argv[i] = (char *)json_object_get_string(json_object_array_get_idx(a, i));
	*argc = (int)n;
	return argv;
}

const char *restore_json_str(struct json_object *o, const char *key)
{
	struct json_object *v;

	return json_object_object_get_ex(o, key, &v) ? json_object_get_string(v) : "";
}

/* argv for the restored QEMU: rewritten, plus send-configuration=off. */
static char **build_argv(const struct restore_opts *o, struct json_object *vm, const char *ram_copy,
			 const struct restore_disks *disks)
{
	struct restore_spec spec = {
		.emulator = o->emulator,
		.state_dir = o->dir,
		.ram_path = ram_copy,
		.ram_backend_id = restore_json_str(vm, "ram_backend"),
		.taps = o->taps,
		.ntaps = o->ntaps,
		.disks = disks->d,
		.ndisks = disks->n,
		.shared_disks = o->shared_disks,
		.nshared_disks = o->nshared_disks,
	};
	char **in, **out = NULL, **full = NULL;
	char err[256];
	int argc, n = 0;

	in = argv_from_json(vm, &argc);
	if (!in)
		return NULL;
	if (restore_cmdline_build(in, argc, &spec, &out, err, sizeof(err))) {
		log_err("cannot build the restore command line: %s", err);
		free(in);
		return NULL;
	}
	free(in);
	while (out[n])
		n++;
	full = calloc((size_t)n + 3, sizeof(char *));
	if (full) {
		memcpy(full, out, (size_t)n * sizeof(char *));
		full[n] = strdup("-global");
		full[n + 1] = strdup("migration.send-configuration=off");
	}
	free(out); /* the strings moved to full */
	if (full && (!full[n] || !full[n + 1])) {
		restore_cmdline_free(full);
		return NULL;
	}
	return full;
}

static pid_t spawn_qemu(const char *dir, char **argv, int lock_fd)
{
	char log_path[PATH_MAX];
	pid_t pid;

	snprintf(log_path, sizeof(log_path), "%s/qemu.log", dir);
	pid = fork();
	if (pid != 0)
		return pid;
	/* child: its own session, so the VM outlives the agent */
	setsid();
	/* ...and holds the state dir's lock as long as it runs: an agent
	 * started on the directory meanwhile would rewrite the files (disk
	 * replicas, overlays) this VM was restored from. */
	if (lock_fd >= 0)
		fcntl(lock_fd, F_SETFD, 0);
	int devnull = open("/dev/null", O_RDONLY);
	int logfd = open(log_path, O_WRONLY | O_CREAT | O_APPEND, 0600);
	if (devnull >= 0)
		dup2(devnull, 0);
	if (logfd >= 0) {
		dup2(logfd, 1);
		dup2(logfd, 2);
	}
	/* argv[0] is the agent's --emulator, not the primary's binary */
	execvp(argv[0], argv);
	fprintf(stderr, "remus-agent: cannot run %s: %s\n", argv[0], strerror(errno));
	_exit(127);
}

static int connect_qmp(const char *dir, pid_t pid, struct qmp **q)
{
	char path[PATH_MAX];
	double deadline = mono_ms() + QMP_WAIT_MS;
	int status;

	snprintf(path, sizeof(path), "%s/qmp.sock", dir);
	while (mono_ms() < deadline) {
		if (waitpid(pid, &status, WNOHANG) == pid) {
			log_err("restored QEMU exited before it could be loaded (status %d); "
				"see %s/qemu.log", WEXITSTATUS(status), dir);
			return -ECHILD;
		}
		if (access(path, F_OK) == 0 && qmp_connect(path, 1000, q) == 0)
			return 0;
		usleep(10000);
	}
	log_err("restored QEMU did not open %s within %d ms", path, QMP_WAIT_MS);
	return -ETIMEDOUT;
}

int restore_check_machine(struct qmp *q, struct json_object *vm)
{
	struct json_object *ret = NULL;
	char want[160];
	int rc = qmp_qom_get(q, "/machine", "type", &ret, QMP_TIMEOUT_MS);

	if (rc) {
		log_err("cannot read the restored machine type: %s", qmp_last_error(q));
		return rc;
	}
	snprintf(want, sizeof(want), "%s-machine", restore_json_str(vm, "machine_type"));
	if (strcmp(json_object_get_string(ret), want)) {
		log_err("machine type mismatch: the primary ran %s, this QEMU made %s; "
			"install the primary's QEMU version on the backup",
			restore_json_str(vm, "machine_type"), json_object_get_string(ret));
		rc = -EINVAL;
	}
	json_object_put(ret);
	return rc;
}

int restore_wait_status(struct qmp *q, const char *want, const char *log_hint)
{
	double deadline = mono_ms() + RUNNING_WAIT_MS;

	while (mono_ms() < deadline) {
		struct json_object *ret = NULL, *v;
		const char *st = "";
		int rc = qmp_execute(q, "query-status", NULL, &ret, QMP_TIMEOUT_MS);
		if (rc) {
			log_err("restored QEMU failed while loading: %s; see %s",
				qmp_last_error(q), log_hint);
			return rc;
		}
		if (json_object_object_get_ex(ret, "status", &v))
			st = json_object_get_string(v);
		if (!strcmp(st, want)) {
			json_object_put(ret);
			return 0;
		}
		json_object_put(ret);
		usleep(5000);
	}
	log_err("restored VM did not reach state '%s' within %d ms; see %s",
		want, RUNNING_WAIT_MS, log_hint);
	return -ETIMEDOUT;
}

static int load_devstate(struct qmp *q, const char *dir)
{
	struct json_object *args = json_object_new_object();
	char uri[PATH_MAX + 16];
	int rc;

	snprintf(uri, sizeof(uri), "exec:cat %s/devstate", dir);
	json_object_object_add(args, "uri", json_object_new_string(uri));
	rc = qmp_execute(q, "migrate-incoming", args, NULL, QMP_TIMEOUT_MS);
	json_object_put(args);
	if (rc)
		log_err("migrate-incoming failed: %s", qmp_last_error(q));
	return rc;
}

/* Switches learn where the VM's MAC addresses went (gratuitous ARP/RARP
 * from QEMU): without it, clients' frames go to the dead primary's port
 * until the entries age out. A failure only costs time: warn. */
void restore_announce(struct qmp *q)
{
	struct json_object *args = json_object_new_object();

	json_object_object_add(args, "initial", json_object_new_int(50));
	json_object_object_add(args, "max", json_object_new_int(550));
	json_object_object_add(args, "rounds", json_object_new_int(5));
	json_object_object_add(args, "step", json_object_new_int(100));
	if (qmp_execute(q, "announce-self", args, NULL, QMP_TIMEOUT_MS))
		log_warn("announce-self failed: %s", qmp_last_error(q));
	json_object_put(args);
}

/* The header of each shared image the restored command line reads as
 * qcow2, just before QEMU opens the images: it may lead to no host file
 * but the shared disks (shared_image.h; restore_libvirt.c does the same
 * for a domain). A disk that is missing is QEMU's to report, if the VM
 * uses it. Whoever can write the shared storage in the moment between
 * the check and QEMU's open could still change it (docs/SECURITY.md). */
static int check_shared_images(const struct restore_opts *o, char **argv)
{
	char err[512];
	int rc = shared_images_check_argv(argv, o->shared_disks, o->nshared_disks, err,
					  sizeof(err));

	if (rc)
		log_err("refusing to restore: %s", err);
	return rc;
}

/* The copy leaves the replica's pages of zeroes as holes (sparse_copy.h),
 * which the guest fills as it writes them: the file system must have room
 * for all of its RAM now, or the restored QEMU would die of SIGBUS on a
 * write later instead of the restore failing here (as a whole copy did). */
static int room_for_ram(const char *dir, const char *ram, const char *copy)
{
	struct statvfs fs;
	struct stat st;
	uint64_t free_bytes;

	unlink(copy); /* a copy an earlier restore left: replaced */
	if (stat(ram, &st) < 0 || statvfs(dir, &fs) < 0)
		return 0; /* the copy itself says what is wrong */
	free_bytes = (uint64_t)fs.f_bavail * fs.f_frsize;
	if (free_bytes >= (uint64_t)st.st_size)
		return 0;
	log_err("cannot restore: %s has %llu MiB free, and the VM's RAM needs %llu MiB there",
		dir, (unsigned long long)(free_bytes >> 20),
		(unsigned long long)((uint64_t)st.st_size >> 20));
	return -ENOSPC;
}

int restore_vm(const struct restore_opts *o, struct restore_result *res)
{
	const char *dir = o->dir;
	struct replica_info info;
	char ram[PATH_MAX], ram_copy[PATH_MAX], err[256], qemu_log[PATH_MAX + 16];
	char **argv = NULL;
	struct qmp *q = NULL;
	struct restore_disks disks = { .n = 0 };
	pid_t pid = -1;
	double t0 = mono_ms(), t;
	int rc;

	memset(res, 0, sizeof(*res));
	/* An epoch committed in the journal but not applied yet belongs to
	 * the replica: finish it first, or refuse. */
	rc = replica_recover(dir, err, sizeof(err));
	if (rc < 0) {
		log_err("cannot restore from %s: %s", dir, err);
		return rc;
	}
	rc = replica_load_info(dir, &info);
	if (rc) {
		log_err("no committed replica in %s: nothing to restore", dir);
		return rc;
	}
	res->epoch = info.epoch;
	if (json_object_object_get_ex(info.vm, "libvirt_xml", NULL)) {
		/* libvirt starts the domain right after the overlays are made */
		rc = restore_libvirt(o, &info, res);
		if (!rc)
			replica_mark_restored(dir);
		goto out;
	}
	snprintf(ram, sizeof(ram), "%s/ram", dir);
	snprintf(qemu_log, sizeof(qemu_log), "%s/qemu.log", dir);
	snprintf(ram_copy, sizeof(ram_copy), "%s/vm.ram", dir);
	/* the VM writes its RAM file: it runs on a copy, and the replica
	 * stays intact whatever happens to the restore */
	rc = room_for_ram(dir, ram, ram_copy);
	if (!rc && (rc = replica_copy_file(ram, ram_copy)))
		log_err("cannot copy replica RAM %s to %s: %s", ram, ram_copy, strerror(-rc));
	if (rc)
		goto out;
	res->copy_ms = (t = mono_ms()) - t0;
	rc = restore_disk_overlays(dir, info.vm, &disks);
	if (rc)
		goto out;
	argv = build_argv(o, info.vm, ram_copy, &disks);
	if (!argv) {
		rc = -EINVAL;
		goto out;
	}
	remove_nic_sockets(dir);
	/* the last step before QEMU opens the images: after the RAM copy,
	 * which takes seconds for gigabytes */
	if ((rc = check_shared_images(o, argv)))
		goto out;
	pid = spawn_qemu(dir, argv, o->lock_fd);
	if (pid < 0) {
		rc = -errno;
		goto out;
	}
	if ((rc = connect_qmp(dir, pid, &q)))
		goto out;
	res->start_ms = mono_ms() - t;
	t = mono_ms();
	/* QEMU waits for -incoming: the block graph exists, the guest has not
	 * run. It must not run on a disk that is not its own. */
	if ((rc = restore_check_machine(q, info.vm)) ||
	    (rc = restore_verify_disks(q, &disks, info.vm)) || (rc = load_devstate(q, dir)) ||
	    (rc = restore_wait_status(q, "running", qemu_log)))
		goto out;
	restore_announce(q);
	replica_mark_restored(dir);
	res->load_ms = mono_ms() - t;
	res->total_ms = mono_ms() - t0;
	res->qemu_pid = pid;
	snprintf(res->qmp_path, sizeof(res->qmp_path), "%s/qmp.sock", dir);
	snprintf(res->ram_path, sizeof(res->ram_path), "%s", ram_copy);
out:
	if (rc && pid > 0) {
		/* A half-restored VM must not linger: it is ours, by pid. */
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
		log_info("half-restored QEMU pid %d killed", (int)pid);
	}
	if (q)
		qmp_close(q);
	restore_cmdline_free(argv);
	restore_disks_free(&disks);
	replica_info_free(&info);
	return rc;
}
