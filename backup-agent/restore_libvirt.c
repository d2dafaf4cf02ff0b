/* Restore a libvirt primary's VM as a libvirt domain of the same name.
 *
 * libvirt starts QEMU (paused, waiting for an incoming checkpoint: see
 * restore_domain.c) with RAM on a shared backing of its own choosing; the
 * agent writes the replica RAM into that backing, passes the committed
 * device state to QEMU as a file descriptor (libvirt's QEMU may not spawn
 * processes, so no exec:cat), lets it load, and resumes the domain through
 * libvirt, so libvirt's idea of the domain stays true. Then it defines the
 * domain, so that it is as persistent here as it was there.
 *
 * The replica itself is only read: RAM is copied into the new QEMU's
 * backing, never mapped.
 */
#include "restore.h"

#include "clock.h"
#include "log.h"
#include "procfs.h"
#include "qmp.h"
#include "replica.h"
#include "restore_domain.h"
#include "restore_verify.h"
#include "shared_image.h"
#include "sparse_copy.h"
#include "virt.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define QMP_TIMEOUT_MS 5000
#define DEVSTATE_FDNAME "remus-devstate"

static int qom_get_string(struct qmp *q, const char *path, const char *prop, char **out)
{
	struct json_object *ret = NULL;
	int rc = qmp_qom_get(q, path, prop, &ret, QMP_TIMEOUT_MS);

	*out = !rc && json_object_is_type(ret, json_type_string) ?
		strdup(json_object_get_string(ret)) : NULL;
	json_object_put(ret);
	return rc ? rc : *out ? 0 : -EPROTO;
}

/* The file behind the new QEMU's main memory backend, as a path this
 * process can open: through /proc/PID/root (libvirt may give QEMU its own
 * mount namespace), or QEMU's descriptor of the right size for a memfd,
 * which has no path. */
static int guest_ram_path(struct qmp *q, pid_t pid, off_t size, char *path, size_t len)
{
	char *backend = NULL, *mem_path = NULL;
	int found;

	if (qom_get_string(q, "/machine", "memory-backend", &backend)) {
		log_err("restored domain has no memory backend: %s", qmp_last_error(q));
		return -EPROTO;
	}
	if (!qom_get_string(q, backend, "mem-path", &mem_path)) {
		snprintf(path, len, "/proc/%d/root%s", (int)pid, mem_path);
		free(mem_path);
		free(backend);
		return 0;
	}
	free(backend);
	found = proc_find_memfd(pid, (uint64_t)size, path, len);
	if (found <= 0)
		log_err("cannot find the restored domain's memfd RAM (%lld bytes) in QEMU pid %d",
			(long long)size, (int)pid);
	return found < 0 ? found : found ? 0 : -ENOENT;
}

static int copy_ram(const char *dir, struct qmp *q, pid_t pid, char *ram_path, size_t len)
{
	char from[PATH_MAX];
	struct sparse_copy_stats sc;
	struct stat st;
	int in, out = -1, rc = 0;

	snprintf(from, sizeof(from), "%s/ram", dir);
	in = open(from, O_RDONLY | O_CLOEXEC);
	if (in < 0 || fstat(in, &st) < 0) {
		rc = -errno;
		log_err("cannot read replica RAM %s: %s", from, strerror(errno));
		if (in >= 0)
			close(in);
		return rc;
	}
	rc = guest_ram_path(q, pid, st.st_size, ram_path, len);
	if (!rc && (out = open(ram_path, O_WRONLY | O_CLOEXEC)) < 0) {
		rc = -errno;
		log_err("cannot open the restored domain's RAM %s: %s", ram_path, strerror(errno));
	}
	if (rc) {
		close(in);
		return rc;
	}
	/* pages of zeroes where the new QEMU's RAM has a hole stay holes */
	rc = sparse_copy(in, out, st.st_size, &sc);
	if (rc)
		log_err("cannot copy replica RAM into the restored domain: %s", strerror(-rc));
	else
		log_info("restore: replica RAM copied into the domain's, %llu of %llu pages of "
			 "zeroes left unallocated", (unsigned long long)sc.skipped,
			 (unsigned long long)sc.pages);
	close(out);
	close(in);
	return rc;
}

static int load_devstate(const char *dir, struct qmp *q)
{
	struct json_object *args = json_object_new_object();
	char path[PATH_MAX];
	int fd, rc;

	snprintf(path, sizeof(path), "%s/devstate", dir);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		rc = -errno;
		log_err("cannot open %s: %s", path, strerror(errno));
		json_object_put(args);
		return rc;
	}
	json_object_object_add(args, "fdname", json_object_new_string(DEVSTATE_FDNAME));
	rc = qmp_execute_with_fd(q, "getfd", args, fd, NULL, QMP_TIMEOUT_MS);
	close(fd);
	json_object_put(args);
	if (rc) {
		log_err("cannot pass the device state to QEMU: %s", qmp_last_error(q));
		return rc;
	}
	args = json_object_new_object();
	json_object_object_add(args, "uri", json_object_new_string("fd:" DEVSTATE_FDNAME));
	rc = qmp_execute(q, "migrate-incoming", args, NULL, QMP_TIMEOUT_MS);
	json_object_put(args);
	if (rc)
		log_err("migrate-incoming failed: %s", qmp_last_error(q));
	return rc;
}

static int start_domain(const struct restore_opts *o, const struct replica_info *info,
			const struct restore_disks *disks, struct virt **v, char **persistent_xml)
{
	struct restore_domain_disk dd[RESTORE_MAX_DISKS];
	bool *as_qcow2 = calloc((size_t)o->nshared_disks + 1, sizeof(bool));
	struct restore_domain_spec spec = {
		.emulator = o->emulator, .state_dir = o->dir, .taps = o->taps, .ntaps = o->ntaps,
		.disks = dd, .ndisks = disks->n,
		.shared_disks = o->shared_disks, .nshared_disks = o->nshared_disks,
		.shared_as_qcow2 = as_qcow2, .clone_name = o->clone_name,
	};
	char *start_xml = NULL, err[512];
	const char *uri = o->libvirt_uri ? o->libvirt_uri : VIRT_DEFAULT_URI;
	int rc;

	for (int i = 0; i < disks->n; i++)
		dd[i] = (struct restore_domain_disk){ .file = disks->d[i].file,
						      .overlay = disks->d[i].overlay,
						      .base = disks->base[i] };
	if (!as_qcow2)
		return -ENOMEM;
	rc = restore_domain_xml(restore_json_str(info->vm, "libvirt_xml"), &spec, &start_xml,
				persistent_xml, err, sizeof(err));
	if (rc)
		log_err("cannot build the restored domain's XML: %s", err);
	/* the last step before libvirt opens the images */
	else if ((rc = shared_images_check(o->shared_disks, as_qcow2, o->nshared_disks, err,
					   sizeof(err))))
		log_err("refusing to restore: %s", err);
	else
		rc = virt_create_paused(uri, start_xml, o->clone_name != NULL, v);
	free(start_xml);
	free(as_qcow2);
	return rc;
}

int restore_libvirt(const struct restore_opts *o, const struct replica_info *info,
		    struct restore_result *res)
{
	char *persistent_xml = NULL, log_hint[PATH_MAX];
	struct restore_disks disks = { .n = 0 };
	struct virt *v = NULL;
	struct qmp *q = NULL;
	double t0 = mono_ms(), t;
	int rc;

	rc = restore_disk_overlays(o->dir, info->vm, &disks);
	if (!rc)
		rc = start_domain(o, info, &disks, &v, &persistent_xml);
	if (rc)
		goto out;
	snprintf(log_hint, sizeof(log_hint), "libvirt's log of domain %s", virt_name(v));
	res->start_ms = (t = mono_ms()) - t0;
	if ((rc = virt_qmp_open(v, NULL, NULL, &q)))
		goto out;
	res->qemu_pid = qmp_peer_pid(q);
	/* The domain is paused, waiting for the device state: check its disks
	 * before anything can resume it. */
	if ((rc = restore_check_machine(q, info->vm)) ||
	    (rc = restore_verify_disks(q, &disks, info->vm)) ||
	    (rc = copy_ram(o->dir, q, res->qemu_pid, res->ram_path, sizeof(res->ram_path))))
		goto out;
	res->copy_ms = mono_ms() - t;
	t = mono_ms();
	if ((rc = load_devstate(o->dir, q)) || (rc = restore_wait_status(q, "paused", log_hint)) ||
	    (rc = virt_resume(v)) || (rc = restore_wait_status(q, "running", log_hint)))
		goto out;
	restore_announce(q);
	res->load_ms = mono_ms() - t;
	res->total_ms = mono_ms() - t0;
	/* The VM runs: failing to make it persistent costs only that. A
	 * clone stays transient, and lives only as long as the connection
	 * that started it, which the caller gets. */
	snprintf(res->libvirt_domain, sizeof(res->libvirt_domain), "%s", virt_name(v));
	if (o->clone_name) {
		log_info("libvirt domain %s (UUID %s) started as a clone of the replica, on no "
			 "network", virt_name(v), virt_uuid(v));
		res->clone = v;
		v = NULL;
	} else if (!virt_define(v, persistent_xml)) {
		log_info("libvirt domain %s restored and defined", virt_name(v));
	}
out:
	if (rc && v && virt_destroy(v) == 0)
		log_info("half-restored libvirt domain destroyed");
	qmp_close(q);
	virt_close(v);
	free(persistent_xml);
	restore_disks_free(&disks);
	return rc;
}
