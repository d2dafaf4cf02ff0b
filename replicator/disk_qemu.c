/* What the disk device asks of QEMU: which disks to protect, an NBD node
 * for each that reaches our export, and the mirror job from the disk to
 * it. Runs on the replicator's loop (QMP is synchronous). */
#include "block_graph.h"
#include "clock.h"
#include "dev_disk.h"
#include "log.h"
#include "qmp.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#define QMP_TIMEOUT_MS    5000
#define CANCEL_WAIT_MS    10000
#define STOPPED_CANCEL_WAIT_MS 1000 /* of those, at most this with the VM stopped */

int disk_qmp(struct ckpt_ctx *cx, const char *cmd, struct json_object *args)
{
	int rc = qmp_execute(cx->qmp, cmd, args, NULL, QMP_TIMEOUT_MS);

	json_object_put(args);
	return rc;
}

int disk_qmp_send(struct ckpt_ctx *cx, const char *cmd, struct json_object *args)
{
	int rc = qmp_send(cx->qmp, cmd, args, QMP_TIMEOUT_MS);

	json_object_put(args);
	return rc;
}

static void job_name(const struct disk *k, char *out, size_t len)
{
	snprintf(out, len, "remus-mirror%u-%u", k->index, k->gen);
}

int disk_add_nbd_node(struct ckpt_ctx *cx, struct disk *k)
{
	struct json_object *a = json_object_new_object(), *srv = json_object_new_object();
	char node[64], export[32];
	int rc;

	snprintf(node, sizeof(node), "remus-nbd%u", k->index);
	snprintf(export, sizeof(export), "disk%u", k->index);
	json_object_object_add(srv, "type", json_object_new_string("unix"));
	json_object_object_add(srv, "path", json_object_new_string(k->sock));
	json_object_object_add(a, "driver", json_object_new_string("nbd"));
	json_object_object_add(a, "node-name", json_object_new_string(node));
	json_object_object_add(a, "server", srv);
	json_object_object_add(a, "export", json_object_new_string(export));
	rc = disk_qmp(cx, "blockdev-add", a);
	if (rc)
		log_err("disk %s: QEMU cannot reach our NBD export at %s: %s", k->name, k->sock,
			qmp_last_error(cx->qmp));
	k->node_added = !rc;
	return rc;
}

int disk_start_mirror(struct ckpt_ctx *cx, struct disk *k)
{
	struct json_object *a = json_object_new_object();
	char job[64], node[64];
	int rc;

	k->gen++;
	job_name(k, job, sizeof(job));
	snprintf(node, sizeof(node), "remus-nbd%u", k->index);
	json_object_object_add(a, "job-id", json_object_new_string(job));
	json_object_object_add(a, "device", json_object_new_string(k->node));
	json_object_object_add(a, "target", json_object_new_string(node));
	json_object_object_add(a, "sync", json_object_new_string("full"));
	json_object_object_add(a, "copy-mode", json_object_new_string("write-blocking"));
	/* If the replicator dies, the guest's writes must go on: a target
	 * error marks the region dirty instead of failing the guest's I/O. */
	json_object_object_add(a, "on-target-error", json_object_new_string("ignore"));
	/* Not done until we say so: the job stays READY, mirroring. */
	json_object_object_add(a, "auto-finalize", json_object_new_boolean(false));
	json_object_object_add(a, "auto-dismiss", json_object_new_boolean(true));
	rc = disk_qmp(cx, "blockdev-mirror", a);
	if (rc)
		log_err("disk %s: cannot start its mirror: %s", k->name, qmp_last_error(cx->qmp));
	k->job = !rc;
	k->ready = false;
	return rc;
}

/* Is our job for disk k still listed? 1 yes, 0 no, <0 error. */
static int job_listed(struct ckpt_ctx *cx, const struct disk *k)
{
	struct json_object *ret = NULL, *v;
	char job[64];
	int rc, found = 0;

	job_name(k, job, sizeof(job));
	rc = qmp_execute(cx->qmp, "query-block-jobs", NULL, &ret, QMP_TIMEOUT_MS);
	if (rc)
		return rc;
	for (size_t i = 0; i < json_object_array_length(ret); i++)
		if (json_object_object_get_ex(json_object_array_get_idx(ret, i), "device", &v) &&
		    !strcmp(json_object_get_string(v), job))
			found = 1;
	json_object_put(ret);
	return found;
}

/* Wait (bounded) until QEMU has dropped k's cancelled job: asked every
 * millisecond at first (a job of a stopped VM goes within a few, and the
 * VM may be waiting for it), then every 20 ms. */
static int wait_job_gone(struct ckpt_ctx *cx, const struct disk *k, int max_ms)
{
	double start = mono_ms(), waited;

	for (;;) {
		int rc = job_listed(cx, k);

		if (rc <= 0)
			return rc;
		waited = mono_ms() - start;
		if (waited >= max_ms)
			return -ETIMEDOUT;
		usleep(waited < 50 ? 1000 : 20000);
	}
}

static int send_cancel(struct ckpt_ctx *cx, const struct disk *k)
{
	struct json_object *a = json_object_new_object();
	char job[64];

	job_name(k, job, sizeof(job));
	json_object_object_add(a, "device", json_object_new_string(job));
	json_object_object_add(a, "force", json_object_new_boolean(true));
	return disk_qmp(cx, "block-job-cancel", a);
}

/* Stop mirroring disk k: the guest's writes then stay on its own disk.
 * Waits (bounded) until QEMU has dropped the job. */
int disk_stop_mirror(struct ckpt_ctx *cx, struct disk *k)
{
	return disk_stop_mirror_within(cx, k, CANCEL_WAIT_MS);
}

int disk_stop_mirror_within(struct ckpt_ctx *cx, struct disk *k, int max_ms)
{
	char job[64];
	int rc;

	job_name(k, job, sizeof(job));
	if (k->job) {
		if (send_cancel(cx, k)) {
			log_warn("disk %s: cancelling its mirror %s: %s", k->name, job,
				 qmp_last_error(cx->qmp));
			return -EIO; /* still ours: the next attempt cancels it again */
		}
		/* cancelled: its end event is ours, not a failure (disk_event),
		 * and whoever stops it next waits for it to go */
		k->job = false;
		k->ready = false;
		k->retired = true;
	}
	if (!k->retired)
		return 0;
	rc = wait_job_gone(cx, k, max_ms);
	if (rc) {
		log_warn("disk %s: its cancelled mirror %s: %s", k->name, job,
			 rc == -ETIMEDOUT ? "still listed" : qmp_last_error(cx->qmp));
		return rc;
	}
	k->retired = false;
	return 0;
}

void disk_retire_mirror(struct ckpt_ctx *cx, struct disk *k)
{
	if (!k->job)
		return;
	if (send_cancel(cx, k)) {
		log_warn("disk %s: cannot cancel its mirror (bitmaps capture its writes now): %s",
			 k->name, qmp_last_error(cx->qmp));
		return; /* still a job: the next session cancels it */
	}
	k->job = false;
	k->ready = false;
	k->retired = true;
}

const char *disk_json_str(struct json_object *o, const char *key)
{
	struct json_object *v;

	return json_object_object_get_ex(o, key, &v) ? json_object_get_string(v) : NULL;
}

void disk_del_nbd_node(struct ckpt_ctx *cx, struct disk *k)
{
	struct json_object *a;
	char node[64];

	if (!k->node_added)
		return;
	a = json_object_new_object();
	snprintf(node, sizeof(node), "remus-nbd%u", k->index);
	json_object_object_add(a, "node-name", json_object_new_string(node));
	if (!disk_qmp(cx, "blockdev-del", a))
		k->node_added = false;
}

/* How many of QEMU's block jobs are ours (remus-mirror*); cancelled
 * with force when cancel is set. -1: QMP failed. */
static int leftover_jobs(struct ckpt_ctx *cx, bool cancel)
{
	struct json_object *ret = NULL;
	int n = 0;

	if (qmp_execute(cx->qmp, "query-block-jobs", NULL, &ret, QMP_TIMEOUT_MS))
		return -1;
	for (size_t i = 0; i < json_object_array_length(ret); i++) {
		const char *id = disk_json_str(json_object_array_get_idx(ret, i), "device");
		struct json_object *a;

		if (!id || strncmp(id, "remus-mirror", 12))
			continue;
		n++;
		if (!cancel)
			continue;
		log_warn("cancelling mirror job %s left by an earlier replicator", id);
		a = json_object_new_object();
		json_object_object_add(a, "device", json_object_new_string(id));
		json_object_object_add(a, "force", json_object_new_boolean(true));
		disk_qmp(cx, "block-job-cancel", a);
	}
	json_object_put(ret);
	return n;
}

/* Is the VM running? (a paused one stays paused) */
static bool vm_running(struct ckpt_ctx *cx)
{
	struct json_object *ret = NULL, *running;
	bool yes = false;

	if (!qmp_execute(cx->qmp, "query-status", NULL, &ret, QMP_TIMEOUT_MS) &&
	    json_object_object_get_ex(ret, "running", &running))
		yes = json_object_get_boolean(running);
	json_object_put(ret);
	return yes;
}

/* Stop the VM for a cancel, if it runs (a VM found paused stays so):
 * whether it was stopped here, to be resumed with resume_after_cancel. */
static bool stop_for_cancel(struct ckpt_ctx *cx)
{
	return vm_running(cx) && !disk_qmp(cx, "stop", NULL);
}

static void resume_after_cancel(struct ckpt_ctx *cx, bool stopped, const char *what)
{
	if (stopped && disk_qmp(cx, "cont", NULL))
		log_err("cannot resume VM %s after cancelling %s: %s", cx->vm->name, what,
			qmp_last_error(cx->qmp));
}

/* A dead replicator's jobs, cancelled while the VM stands still (a VM
 * found paused stays so): their target (our NBD server) is gone, every
 * write they copy fails, and on QEMU 7.2 a cancel of such a job while the
 * guest wrote its disk once left QEMU's main loop spinning for good (in
 * about ten restarts of a SIGKILLed replicator). Stopped, QEMU has drained
 * the guest's writes before the cancel; that this prevents the spin is
 * not shown (none in the restarts since, too few to tell). */
static void cancel_leftover_jobs(struct ckpt_ctx *cx)
{
	bool stopped;

	if (leftover_jobs(cx, false) <= 0)
		return;
	stopped = stop_for_cancel(cx);
	leftover_jobs(cx, true);
	/* a cancelled job lets go of its target within moments */
	for (int i = 0; i < CANCEL_WAIT_MS / 20 && leftover_jobs(cx, false) > 0; i++)
		usleep(20000);
	resume_after_cancel(cx, stopped, "the old mirror jobs");
}

/* A lost session's mirrors, cancelled as a dead replicator's are: with
 * the guest's writes drained. Cancelled while the guest wrote its disk
 * every 100 ms, one such job left QEMU 7.2 to abort on "corrupted
 * double-linked list" (test_disk_failover's failsync, 2026-12-07: the
 * second session's cancel, 1 s after the first session failed), and the
 * VM with it. The pause is the cancel's, a few milliseconds; a job that
 * takes longer to go is waited for with the VM running again. */
void disk_stop_mirrors_stopped(struct ckpt_ctx *cx, struct disk *disks, uint32_t n)
{
	bool any = false, stopped;

	for (uint32_t i = 0; i < n; i++)
		any = any || disks[i].job || disks[i].retired;
	if (!any)
		return;
	stopped = stop_for_cancel(cx);
	log_info("cancelling the lost session's disk mirrors with VM %s %s", cx->vm->name,
		 stopped ? "stopped for it" : "not running");
	for (uint32_t i = 0; i < n; i++)
		disk_stop_mirror_within(cx, &disks[i], STOPPED_CANCEL_WAIT_MS);
	resume_after_cancel(cx, stopped, "the lost session's mirrors");
	for (uint32_t i = 0; i < n; i++)
		if (disks[i].job || disks[i].retired)
			disk_stop_mirror(cx, &disks[i]);
}

/* A replicator that died (SIGKILL, a crash) left its mirror jobs and NBD
 * nodes in QEMU: they hold the disk and the node names. Cancel and remove
 * them before adding ours; nothing else in QEMU is called remus-*. */
void disk_clean_leftovers(struct ckpt_ctx *cx)
{
	struct json_object *ret = NULL;

	cancel_leftover_jobs(cx);
	if (qmp_execute(cx->qmp, "query-named-block-nodes", NULL, &ret, QMP_TIMEOUT_MS))
		return;
	for (size_t i = 0; i < json_object_array_length(ret); i++) {
		const char *node = disk_json_str(json_object_array_get_idx(ret, i), "node-name");
		struct json_object *a;

		if (!node || strncmp(node, "remus-nbd", 9))
			continue;
		log_warn("removing NBD node %s left by an earlier replicator", node);
		a = json_object_new_object();
		json_object_object_add(a, "node-name", json_object_new_string(node));
		disk_qmp(cx, "blockdev-del", a);
	}
	json_object_put(ret);
}

/* --- discovery ------------------------------------------------------------- */

static bool listed_unprotected(const struct ckpt_ctx *cx, const char *name)
{
	for (int i = 0; i < cx->cfg->n_unprotected_disks; i++)
		if (!strcmp(cx->cfg->unprotected_disks[i], name))
			return true;
	return false;
}


static int add_disk(struct disk_device *d, const char *name, const char *node,
		    struct json_object *block, struct json_object *inserted, uint64_t size)
{
	const char *file = disk_json_str(inserted, "file"), *qdev = disk_json_str(block, "qdev");
	struct disk *k;
	int n;

	if (d->n == PROTO_MAX_DISKS) {
		log_err("refusing VM %s: more than %d writable disks; list those that both "
			"hosts share with --unprotected-disk NAME", d->cx->vm->name,
			PROTO_MAX_DISKS);
		return -EPERM;
	}
	if (!size || size % 512) {
		log_err("refusing VM %s: disk '%s' has a size of %llu bytes, not a multiple of "
			"512", d->cx->vm->name, name, (unsigned long long)size);
		return -EPERM;
	}
	k = &d->disks[d->n];
	*k = (struct disk){ .dev = d, .index = d->n, .size = size, .image_fd = -1 };
	if (getrandom(&k->gen, sizeof(k->gen), 0) != sizeof(k->gen))
		k->gen = (unsigned)getpid() << 8; /* not the dead one's */
	k->name = strdup(name);
	k->node = strdup(node);
	k->file = strdup(file ? file : "?");
	k->qdev = strdup(qdev ? qdev : "");
	n = snprintf(k->sock, sizeof(k->sock), "%s/nbd%u.sock", d->sock_dir, d->n);
	d->n++;
	if (n < 0 || (size_t)n >= sizeof(k->sock))
		return -ENAMETOOLONG; /* make_sock_dir left room: not reached */
	return k->name && k->node && k->file && k->qdev ? 0 : -ENOMEM;
}

/* A read-only disk (a CD-ROM with a medium, a read-only image) is not
 * replicated: a restore without it would give the guest a missing disk,
 * so it must be storage both hosts see, and the operator must say so. */
static int refuse_read_only(struct ckpt_ctx *cx, const char *name, const char *file)
{
	log_err("refusing VM %s: disk '%s' (%s) is read-only (a CD-ROM or a read-only image), "
		"so it is not replicated and the backup would restore the VM without it: declare "
		"it shared with --unprotected-disk %s (and --shared-disk %s on the backup agent), "
		"or eject it", cx->vm->name, name, file ? file : "?", name, file ? file : "FILE");
	return -EPERM;
}

/* The backup rebuilds each replicated disk's block graph from QEMU's
 * command line (block_graph.h): refuse now a form it could not. */
static int check_restorable(struct disk_device *d)
{
	struct ckpt_ctx *cx = d->cx;
	struct block_graph_disk bd[PROTO_MAX_DISKS];
	struct block_graph g;
	char err[512];
	int rc;

	for (uint32_t i = 0; i < d->n; i++)
		bd[i] = (struct block_graph_disk){ .id = d->disks[i].name,
						   .node = d->disks[i].node,
						   .file = d->disks[i].file };
	rc = block_graph_plan(cx->vm->argv, cx->vm->argc, bd, (int)d->n, &g, err, sizeof(err));
	block_graph_free(&g);
	if (rc == -EINVAL)
		log_err("refusing VM %s: the backup could not restore its disks as they are: %s",
			cx->vm->name, err);
	return rc ? -EPERM : 0;
}

/* Every writable disk is protected, but those the operator declared
 * shared storage (--unprotected-disk). */
int disk_find(struct disk_device *d)
{
	struct ckpt_ctx *cx = d->cx;
	struct json_object *ret = NULL;
	int rc = qmp_execute(cx->qmp, "query-block", NULL, &ret, QMP_TIMEOUT_MS);

	if (rc) {
		log_err("cannot list the VM's disks: %s", qmp_last_error(cx->qmp));
		return rc;
	}
	for (size_t i = 0; !rc && i < json_object_array_length(ret); i++) {
		struct json_object *b = json_object_array_get_idx(ret, i), *ins, *img, *v;
		const char *name, *node;
		bool ro;

		if (!json_object_object_get_ex(b, "inserted", &ins))
			continue; /* an empty CD-ROM drive: nothing to lose */
		ro = json_object_object_get_ex(ins, "ro", &v) && json_object_get_boolean(v);
		node = disk_json_str(ins, "node-name");
		/* -drive names the device; -blockdev leaves it empty */
		name = disk_json_str(b, "device");
		if (!name || !name[0])
			name = node;
		if (!name || !node) {
			log_err("refusing VM %s: a disk without a node name", cx->vm->name);
			rc = -EPERM;
			break;
		}
		if (listed_unprotected(cx, name)) {
			log_warn("disk '%s' (%s) is not replicated (--unprotected-disk): both hosts "
				 "must see the same storage", name, disk_json_str(ins, "file"));
			continue;
		}
		if (ro) {
			rc = refuse_read_only(cx, name, disk_json_str(ins, "file"));
			break;
		}
		v = NULL;
		json_object_object_get_ex(ins, "image", &img);
		if (img)
			json_object_object_get_ex(img, "virtual-size", &v);
		rc = add_disk(d, name, node, b, ins, v ? (uint64_t)json_object_get_int64(v) : 0);
	}
	json_object_put(ret);
	return rc ? rc : check_restorable(d);
}
