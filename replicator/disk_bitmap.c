/* Disk capture by dirty bitmaps (--disk-capture bitmap).
 *
 * The mirror makes every guest write wait for its copy to reach the
 * replicator. Here QEMU only marks, per disk and epoch, which blocks the
 * guest wrote (a dirty bitmap), and the barrier reads those blocks while
 * the VM is stopped (docs/DISK-CAPTURE.md has what each step costs):
 *
 *   in the pause   one transaction: epoch E+1's bitmaps start, E's stop
 *                  (an enabled bitmap cannot be exported); per disk an NBD
 *                  export of E's bitmap, its bits read with
 *                  NBD_CMD_BLOCK_STATUS, the blocks read from the raw image
 *                  QEMU has open (`stop` drained and flushed it) or over
 *                  the same export for other formats
 *   after `cont`   the exports are deleted; a bitmap is removed one epoch
 *                  later (an export lets go of it a moment after deletion)
 *
 * A write the guest saw complete before `stop` is in E's bitmap and on the
 * image; every later one is in E+1's: each write belongs to exactly one
 * epoch, as with the mirror, and the blocks read are the image as of the
 * barrier, in step with the memory captured in the same pause.
 *
 * QEMU has one NBD server. We start it on a listening socket we make and
 * pass to QEMU (QEMU needs no access to our runtime directory, and no one
 * else can connect), and mark it ours with an export named remus-owner, so
 * that a replicator started after one that died takes it back instead of
 * refusing.
 */
#include "clock.h"
#include "dev_disk.h"
#include "dirty_ranges.h"
#include "log.h"
#include "procfs.h"
#include "qmp.h"

#include <errno.h>
#include <fcntl.h>
#include <libnbd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define QMP_TIMEOUT_MS 5000
#define POLL_TIMEOUT_MS 1000 /* the 100 ms watch: a busy QEMU must not hold the loop long */
#define GRANULARITY   4096   /* a raw node's default is 64 KiB: 16 times the bytes */
#define NBD_WAIT_MS   5000   /* all NBD work of one disk at one barrier */
#define OWNER_EXPORT  "remus-owner"
#define EXPORT_PREFIX "remus-x"      /* remus-xDISK-EPOCH */
#define BITMAP_PREFIX "remus-b"      /* remus-bDISK-EPOCH */
#define LISTEN_FDNAME "remus-nbd-listen"
#define STATUS_CHUNK  (1ull << 30)
/* No write waits for us here, so the disk cap cannot hold a writer back:
 * past it an epoch ends early (disk_bitmap_dirty_bytes, polled), and only
 * an epoch of this many caps is refused (a full copy follows), which
 * bounds what one epoch may make us hold. */
#define HARD_CAPS     8

static void bitmap_name(const struct disk *k, uint64_t epoch, char *out, size_t len)
{
	snprintf(out, len, BITMAP_PREFIX "%u-%llu", k->index, (unsigned long long)epoch);
}

static void export_id(const struct disk *k, uint64_t epoch, char *out, size_t len)
{
	snprintf(out, len, EXPORT_PREFIX "%u-%llu", k->index, (unsigned long long)epoch);
}

/* --- QEMU's NBD server ------------------------------------------------------ */

static int listen_socket(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd;

	if (strlen(path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	strcpy(sa.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	unlink(path);
	/* Whoever connects reads the guest's disks: ours alone (mode 0600
	 * before anyone can connect, which listen() allows). */
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) || chmod(path, 0600) || listen(fd, 4)) {
		int err = -errno;

		close(fd);
		return err;
	}
	return fd;
}

/* A listening socket of ours becomes QEMU's NBD server. */
static int start_server(struct ckpt_ctx *cx, struct disk_device *d)
{
	struct json_object *a, *addr, *data;
	int fd = listen_socket(d->qemu_sock), rc;

	if (fd < 0)
		return fd;
	a = json_object_new_object();
	json_object_object_add(a, "fdname", json_object_new_string(LISTEN_FDNAME));
	rc = qmp_execute_with_fd(cx->qmp, "getfd", a, fd, NULL, QMP_TIMEOUT_MS);
	json_object_put(a);
	close(fd);
	if (rc)
		return rc;
	/* nbd-server-start takes the legacy form: {type, data: {str}} */
	a = json_object_new_object();
	addr = json_object_new_object();
	data = json_object_new_object();
	json_object_object_add(data, "str", json_object_new_string(LISTEN_FDNAME));
	json_object_object_add(addr, "type", json_object_new_string("fd"));
	json_object_object_add(addr, "data", data);
	json_object_object_add(a, "addr", addr);
	rc = disk_qmp(cx, "nbd-server-start", a);
	if (rc) {
		/* QEMU keeps a file passed with getfd until a command takes it.
		 * (A closefd that works leaves qmp_last_error as it was.) */
		struct json_object *c = json_object_new_object();

		json_object_object_add(c, "fdname", json_object_new_string(LISTEN_FDNAME));
		disk_qmp(cx, "closefd", c);
	}
	return rc;
}

/* The ids of QEMU's block exports; NULL on error. */
static struct json_object *list_exports(struct ckpt_ctx *cx)
{
	struct json_object *ret = NULL;

	return qmp_execute(cx->qmp, "query-block-exports", NULL, &ret, QMP_TIMEOUT_MS) ? NULL : ret;
}

static struct json_object *export_del_args(const char *id)
{
	struct json_object *a = json_object_new_object();

	json_object_object_add(a, "id", json_object_new_string(id));
	json_object_object_add(a, "mode", json_object_new_string("hard"));
	return a;
}

static void delete_export(struct ckpt_ctx *cx, const char *id)
{
	if (disk_qmp(cx, "block-export-del", export_del_args(id)))
		log_debug("block-export-del %s: %s", id, qmp_last_error(cx->qmp));
}

static void send_delete_export(struct ckpt_ctx *cx, const char *id)
{
	if (disk_qmp_send(cx, "block-export-del", export_del_args(id)))
		log_debug("block-export-del %s: %s", id, qmp_last_error(cx->qmp));
}

/* QEMU's NBD server runs already: ours, if it has our owner export (a
 * replicator before us died), and then taken back; anyone else's is left
 * alone and bitmap capture refused. */
static int take_back_server(struct ckpt_ctx *cx, struct disk_device *d)
{
	struct json_object *ex = list_exports(cx);
	bool ours = false;

	if (!ex) {
		log_err("refusing --disk-capture bitmap for VM %s: QEMU's NBD server is already "
			"running and its exports cannot be listed: %s", cx->vm->name,
			qmp_last_error(cx->qmp));
		return -EBUSY;
	}
	for (size_t i = 0; i < json_object_array_length(ex); i++) {
		const char *id = disk_json_str(json_object_array_get_idx(ex, i), "id");

		ours |= id && !strcmp(id, OWNER_EXPORT);
	}
	json_object_put(ex);
	if (!ours) {
		log_err("refusing --disk-capture bitmap for VM %s: QEMU's NBD server is already "
			"running and it is not a replicator's (QEMU has one; stop it with "
			"nbd-server-stop if it is not in use, or use --disk-capture mirror)",
			cx->vm->name);
		return -EBUSY;
	}
	log_warn("taking back the NBD server an earlier replicator left in QEMU");
	disk_bitmap_drop_all(cx, d);
	delete_export(cx, OWNER_EXPORT);
	if (disk_qmp(cx, "nbd-server-stop", NULL)) {
		log_err("cannot stop the NBD server an earlier replicator left: %s",
			qmp_last_error(cx->qmp));
		return -EIO;
	}
	return start_server(cx, d);
}

static int add_owner_export(struct ckpt_ctx *cx, struct disk_device *d)
{
	struct json_object *a = json_object_new_object();

	json_object_object_add(a, "type", json_object_new_string("nbd"));
	json_object_object_add(a, "id", json_object_new_string(OWNER_EXPORT));
	json_object_object_add(a, "name", json_object_new_string(OWNER_EXPORT));
	json_object_object_add(a, "node-name", json_object_new_string(d->disks[0].node));
	json_object_object_add(a, "writable", json_object_new_boolean(false));
	return disk_qmp(cx, "block-export-add", a);
}

/* --- where the blocks are read from --------------------------------------- */

/* The regular file behind an O_PATH descriptor, opened for reading (the
 * descriptor is closed); -1 on failure. */
static int reopen_read_only(int path_fd)
{
	char proc[64];
	int fd;

	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", path_fd);
	fd = open(proc, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	close(path_fd);
	return fd;
}

/* k's node, from query-named-block-nodes (caller puts *all). */
static struct json_object *find_node(struct ckpt_ctx *cx, const char *node,
				     struct json_object **all)
{
	*all = NULL;
	if (qmp_execute(cx->qmp, "query-named-block-nodes", NULL, all, QMP_TIMEOUT_MS))
		return NULL;
	for (size_t i = 0; i < json_object_array_length(*all); i++) {
		struct json_object *n = json_object_array_get_idx(*all, i);
		const char *name = disk_json_str(n, "node-name");

		if (name && !strcmp(name, node))
			return n;
	}
	return NULL;
}

/* A raw image that is a plain file QEMU has open, of the disk's size
 * (so no offset option shifts it), can be read with pread: what QEMU's
 * guest sees of k, read here. The descriptor, or -1 with *why. */
int disk_open_image(struct ckpt_ctx *cx, const struct disk *k, const char **why)
{
	struct json_object *all, *n = find_node(cx, k->node, &all), *img, *v = NULL;
	const char *drv = n ? disk_json_str(n, "drv") : NULL;
	const char *file = n ? disk_json_str(n, "file") : NULL;
	struct stat st;
	int fd = -1;

	*why = NULL;
	if (n && json_object_object_get_ex(n, "image", &img))
		json_object_object_get_ex(img, "virtual-size", &v);
	if (!drv || strcmp(drv, "raw") || !file || file[0] != '/')
		*why = "not a raw image in a file";
	else if ((fd = open(file, O_PATH | O_CLOEXEC)) < 0)
		*why = "the image cannot be opened here";
	else if (fstat(fd, &st) || !S_ISREG(st.st_mode))
		*why = "not a regular file"; /* looked at, never opened: a device's open acts */
	else if ((fd = reopen_read_only(fd)) < 0)
		*why = "the image cannot be opened here";
	else if (!v || (uint64_t)st.st_size != (uint64_t)json_object_get_int64(v))
		*why = "the file's size is not the disk's (a raw offset or size)";
	else if (!proc_has_open(qmp_peer_pid(cx->qmp), &st))
		*why = "QEMU does not have that file open";
	if (*why && fd >= 0)
		close(fd);
	json_object_put(all);
	return *why ? -1 : fd;
}

/* pread from the image where disk_open_image can (about 2.5 us a block
 * against 50 us over QEMU's NBD server); anything else is read over NBD,
 * through QEMU's own block layer. */
static void choose_reader(struct ckpt_ctx *cx, struct disk *k)
{
	const char *why;

	k->image_fd = disk_open_image(cx, k, &why);
	if (why)
		log_info("disk %s: an epoch's blocks are read over NBD (%s)", k->name, why);
	else
		log_info("disk %s: an epoch's blocks are read from %s", k->name, k->file);
}

int disk_bitmap_setup(struct ckpt_ctx *cx, struct disk_device *d)
{
	int rc, n;

	if (!d->n)
		return 0;
	n = snprintf(d->qemu_sock, sizeof(d->qemu_sock), "%s/qemu.sock", d->sock_dir);
	if (n < 0 || (size_t)n >= sizeof(d->qemu_sock))
		return -ENAMETOOLONG;
	rc = start_server(cx, d);
	if (rc == -EREMOTEIO && strstr(qmp_last_error(cx->qmp), "already running"))
		rc = take_back_server(cx, d);
	if (!rc)
		d->nbd_server_ours = true;
	if (!rc)
		rc = add_owner_export(cx, d);
	if (rc) {
		if (rc != -EBUSY)
			log_err("refusing --disk-capture bitmap for VM %s: cannot start QEMU's NBD "
				"server for it: %s", cx->vm->name, rc == -EREMOTEIO ?
				qmp_last_error(cx->qmp) : strerror(-rc));
		return rc;
	}
	disk_bitmap_drop_all(cx, d); /* a dead replicator's */
	for (uint32_t i = 0; i < d->n; i++)
		choose_reader(cx, &d->disks[i]);
	d->capture_bitmap = true;
	return 0;
}

void disk_bitmap_teardown(struct ckpt_ctx *cx, struct disk_device *d)
{
	if (cx->qmp && !ckpt_vm_gone(cx) && d->nbd_server_ours) {
		disk_bitmap_drop_all(cx, d);
		delete_export(cx, OWNER_EXPORT);
		disk_qmp(cx, "nbd-server-stop", NULL);
	}
	d->nbd_server_ours = false;
	for (uint32_t i = 0; i < d->n; i++) {
		if (d->disks[i].image_fd >= 0)
			close(d->disks[i].image_fd);
		d->disks[i].image_fd = -1;
	}
	if (d->qemu_sock[0])
		unlink(d->qemu_sock);
}

/* --- bitmaps ---------------------------------------------------------------- */

static void add_action(struct json_object *actions, const char *type, const char *node,
		       const char *name, bool granularity)
{
	struct json_object *act = json_object_new_object(), *data = json_object_new_object();

	json_object_object_add(data, "node", json_object_new_string(node));
	json_object_object_add(data, "name", json_object_new_string(name));
	if (granularity)
		json_object_object_add(data, "granularity", json_object_new_int(GRANULARITY));
	json_object_object_add(act, "type", json_object_new_string(type));
	json_object_object_add(act, "data", data);
	json_object_array_add(actions, act);
}

/* One transaction over every disk: `next`'s bitmaps start, and (close
 * true) those of d->bm_epoch stop, at one point between two writes. */
static int switch_bitmaps(struct ckpt_ctx *cx, struct disk_device *d, uint64_t next,
			  bool close)
{
	struct json_object *a = json_object_new_object(), *actions = json_object_new_array();
	char name[64];
	int rc;

	for (uint32_t i = 0; i < d->n; i++) {
		bitmap_name(&d->disks[i], next, name, sizeof(name));
		add_action(actions, "block-dirty-bitmap-add", d->disks[i].node, name, true);
		if (!close)
			continue;
		bitmap_name(&d->disks[i], d->bm_epoch, name, sizeof(name));
		add_action(actions, "block-dirty-bitmap-disable", d->disks[i].node, name, false);
	}
	json_object_object_add(a, "actions", actions);
	rc = disk_qmp(cx, "transaction", a);
	if (rc)
		log_err("disks: cannot start the dirty bitmaps of epoch %llu: %s",
			(unsigned long long)next, qmp_last_error(cx->qmp));
	return rc;
}

int disk_bitmap_begin(struct ckpt_ctx *cx, struct disk_device *d, uint64_t next)
{
	int rc = switch_bitmaps(cx, d, next, false);

	if (!rc) {
		d->bm_epoch = next;
		d->nrelease = d->nunremoved = 0;
	}
	return rc;
}

static int add_export(struct ckpt_ctx *cx, const struct disk *k, uint64_t epoch)
{
	struct json_object *a = json_object_new_object(), *bitmaps = json_object_new_array();
	char id[64], name[64];

	export_id(k, epoch, id, sizeof(id));
	bitmap_name(k, epoch, name, sizeof(name));
	json_object_array_add(bitmaps, json_object_new_string(name));
	json_object_object_add(a, "type", json_object_new_string("nbd"));
	json_object_object_add(a, "id", json_object_new_string(id));
	json_object_object_add(a, "name", json_object_new_string(id));
	json_object_object_add(a, "node-name", json_object_new_string(k->node));
	json_object_object_add(a, "writable", json_object_new_boolean(false));
	json_object_object_add(a, "bitmaps", bitmaps);
	return disk_qmp(cx, "block-export-add", a);
}

/* --- reading an export: bounded waits on libnbd's non-blocking API -------- */

static int wait_for(struct nbd_handle *h, int64_t cookie, double deadline)
{
	for (;;) {
		int done = nbd_aio_command_completed(h, (uint64_t)cookie);
		double left = deadline - mono_ms();

		if (done == 1)
			return 0;
		if (done < 0)
			return -EIO;
		if (left <= 0)
			return -ETIMEDOUT;
		if (nbd_poll(h, (int)left + 1) < 0)
			return -EIO;
	}
}

static int nbd_open(const char *sock, const char *export, const char *context,
		    double deadline, struct nbd_handle **out)
{
	struct nbd_handle *h = nbd_create();

	*out = h;
	if (!h || nbd_set_export_name(h, export) || nbd_add_meta_context(h, context) ||
	    nbd_aio_connect_unix(h, sock))
		return -EIO;
	while (nbd_aio_is_connecting(h)) {
		double left = deadline - mono_ms();

		if (left <= 0)
			return -ETIMEDOUT;
		if (nbd_poll(h, (int)left + 1) < 0)
			return -EIO;
	}
	if (!nbd_aio_is_ready(h) || nbd_can_meta_context(h, context) != 1)
		return -EPROTO;
	return 0;
}

static int on_extents(void *opaque, const char *context, uint64_t offset, uint32_t *entries,
		      size_t n, int *error)
{
	dirty_ranges_add(opaque, offset, entries, n);
	return 0;
}

/* The whole disk's bits, a chunk per request; the ranges check them. */
static int read_bitmap(struct nbd_handle *h, double deadline, struct dirty_ranges *rg)
{
	while (rg->next < rg->size && !rg->err) {
		uint64_t at = rg->next;
		uint64_t count = rg->size - at > STATUS_CHUNK ? STATUS_CHUNK : rg->size - at;
		nbd_extent_callback cb = { .callback = on_extents, .user_data = rg };
		int64_t cookie = nbd_aio_block_status(h, count, at, cb, NBD_NULL_COMPLETION, 0);
		int rc = cookie < 0 ? -EIO : wait_for(h, cookie, deadline);

		if (rc)
			return rc;
		if (rg->next <= at)
			return -EPROTO; /* no answer for this chunk */
	}
	return rg->err;
}

static int read_image(int fd, void *buf, uint64_t len, uint64_t off)
{
	for (uint64_t done = 0; done < len;) {
		ssize_t n = pread(fd, (char *)buf + done, len - done, (off_t)(off + done));

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EIO; /* 0: the image is shorter than QEMU said */
		done += (uint64_t)n;
	}
	return 0;
}

static int read_block(const struct disk *k, struct nbd_handle *h, void *buf, uint64_t len,
		      uint64_t off, double deadline)
{
	int64_t cookie;

	if (k->image_fd >= 0)
		return read_image(k->image_fd, buf, len, off);
	cookie = nbd_aio_pread(h, buf, len, off, NBD_NULL_COMPLETION, 0);
	return cookie < 0 ? -EIO : wait_for(h, cookie, deadline);
}

/* x covers off: the hole, if any, that starts there and the data after it. */
static int find_extent(int fd, uint64_t off, struct image_extents *x)
{
	off_t data, hole;

	if (x->known && off >= x->hole_start && off < x->data_end)
		return 0;
	data = lseek(fd, (off_t)off, SEEK_DATA);
	if (data < 0 && errno != ENXIO)
		return -errno;
	if (data < 0) { /* ENXIO: no data from here to the end of the file */
		*x = (struct image_extents){ off, UINT64_MAX, UINT64_MAX, true };
		return 0;
	}
	hole = lseek(fd, data, SEEK_HOLE);
	if (hole < 0)
		return -errno;
	if (hole <= data)
		return -EIO; /* the file changed under us */
	*x = (struct image_extents){ off, (uint64_t)data, (uint64_t)hole, true };
	return 0;
}

int disk_image_segments(int fd, uint64_t off, uint64_t len, struct image_extents *x,
			segment_fn *fn, void *opaque)
{
	uint64_t end = off + len;

	while (off < end) {
		bool hole;
		uint64_t stop;
		int rc = find_extent(fd, off, x);

		if (rc)
			return rc;
		hole = off < x->data_start;
		stop = hole ? x->data_start : x->data_end;
		if (stop > end)
			stop = end;
		if ((rc = fn(opaque, off, stop - off, hole)))
			return rc;
		off = stop;
	}
	return 0;
}

/* What one disk's capture reads and emits. */
struct reading {
	const struct disk *k;
	struct nbd_handle *h;
	double deadline;
	struct rec_list *out;
	uint64_t data_bytes;   /* to read: what the cap counts */
	bool count_only;
};

/* One piece of a dirty range: a hole of the image becomes a WRITE_ZEROES
 * record (a discard with discard=unmap punches one, and `fstrim` marks
 * gigabytes: they cost no reading, no memory and no cap), data becomes
 * WRITE records of at most PROTO_DISK_MAX_WRITE read now. */
static int emit_segment(void *opaque, uint64_t off, uint64_t len, bool hole)
{
	struct reading *rd = opaque;

	if (!hole)
		rd->data_bytes += len;
	if (rd->count_only)
		return 0;
	if (hole) {
		struct disk_rec *rec = disk_rec_new(rd->k->index, DISK_OP_WRITE_ZEROES, off, len);

		if (!rec)
			return -ENOMEM;
		disk_rec_list_append(rd->out, rec);
		return 0;
	}
	for (uint64_t done = 0; done < len;) {
		uint64_t n = len - done > PROTO_DISK_MAX_WRITE ? PROTO_DISK_MAX_WRITE : len - done;
		struct disk_rec *rec = disk_rec_new(rd->k->index, DISK_OP_WRITE, off + done, n);
		int rc;

		if (!rec)
			return -ENOMEM;
		rc = read_block(rd->k, rd->h, rec->data, n, off + done, rd->deadline);
		if (rc) {
			free(rec);
			return rc;
		}
		disk_rec_list_append(rd->out, rec);
		done += n;
	}
	return 0;
}

/* Every dirty range, split into the image's holes and data where we read
 * the image itself (over NBD every block counts as data). */
static int walk_ranges(struct reading *rd, const struct dirty_ranges *rg)
{
	struct image_extents x = { 0 };
	int rc = 0;

	for (size_t i = 0; i < rg->n && !rc; i++)
		rc = rd->k->image_fd >= 0 ?
			disk_image_segments(rd->k->image_fd, rg->v[i].off, rg->v[i].len, &x,
					    emit_segment, rd) :
			emit_segment(rd, rg->v[i].off, rg->v[i].len, false);
	return rc;
}

static void log_capture_error(const struct disk *k, uint64_t epoch, int rc, uint64_t bytes)
{
	if (rc == -ENOSPC)
		log_err("disks: epoch %llu wrote %llu MiB of data, over %d times --disk-cap-mb: "
			"the backup's disks need a full copy (a raised --disk-cap-mb, or "
			"--disk-capture mirror, whose writers wait, keeps a writer this fast "
			"protected)", (unsigned long long)epoch, (unsigned long long)(bytes >> 20),
			HARD_CAPS);
	else if (rc == -ESTALE)
		log_err("disk %s: its size is no longer the %llu bytes it had at attach (resized?): "
			"the backup's replica cannot follow; detach and attach again", k->name,
			(unsigned long long)k->size);
	else if (rc)
		log_err("disk %s: cannot read the blocks of epoch %llu: %s", k->name,
			(unsigned long long)epoch, strerror(-rc));
}

static int capture_disk(struct ckpt_ctx *cx, struct disk_device *d, struct disk *k,
			uint64_t epoch, struct rec_list *out)
{
	double t0 = mono_ms(), t1, t2, t3, deadline = t0 + NBD_WAIT_MS;
	uint64_t held = out->bytes; /* the disks before this one */
	struct nbd_handle *h = NULL;
	struct dirty_ranges rg;
	struct reading rd;
	char id[64], name[64], context[96];
	int rc;

	dirty_ranges_init(&rg, k->size);
	export_id(k, epoch, id, sizeof(id));
	bitmap_name(k, epoch, name, sizeof(name));
	snprintf(context, sizeof(context), "qemu:dirty-bitmap:%s", name);
	rc = add_export(cx, k, epoch);
	if (rc) {
		log_err("disk %s: cannot export the bitmap of epoch %llu: %s", k->name,
			(unsigned long long)epoch, qmp_last_error(cx->qmp));
		return rc;
	}
	t1 = mono_ms();
	rc = nbd_open(d->qemu_sock, id, context, deadline, &h);
	t2 = mono_ms();
	if (rc)
		log_err("disk %s: cannot read the bitmap export %s: %s", k->name, id,
			nbd_get_error() ? nbd_get_error() : strerror(-rc));
	if (!rc && nbd_get_size(h) != (int64_t)k->size)
		rc = -ESTALE; /* resized since attach: blocks past the old end would be missed */
	if (!rc)
		rc = read_bitmap(h, deadline, &rg);
	t3 = mono_ms();
	rd = (struct reading){ .k = k, .h = h, .deadline = deadline, .out = out,
			       .count_only = true };
	if (!rc)
		rc = walk_ranges(&rd, &rg); /* count first: nothing is read past the cap */
	if (!rc && held + rd.data_bytes > HARD_CAPS * d->soft_cap)
		rc = -ENOSPC;
	if (!rc) {
		rd.count_only = false;
		rd.data_bytes = 0;
		rc = walk_ranges(&rd, &rg);
	}
	log_capture_error(k, epoch, rc, held + rd.data_bytes);
	if (!rc)
		d->bitmap_bytes += rd.data_bytes;
	log_debug("disk %s: epoch %llu: export %.2f ms, connect %.2f ms, bitmap %.2f ms, "
		  "%zu ranges (%llu KiB of data) read in %.2f ms", k->name,
		  (unsigned long long)epoch, t1 - t0, t2 - t1, t3 - t2, rg.n,
		  (unsigned long long)(rd.data_bytes >> 10), mono_ms() - t3);
	if (h)
		nbd_close(h);
	dirty_ranges_free(&rg);
	return rc;
}

int disk_bitmap_capture(struct ckpt_ctx *cx, struct disk_device *d, uint64_t next,
			struct rec_list *out)
{
	uint64_t epoch;
	double t0;
	int rc;

	/* Earlier barriers' exports go after their acks, off the pause;
	 * barriers without one (a link that died) release them here. */
	if (d->nrelease == DISK_RELEASE_BACKLOG)
		disk_bitmap_release(cx, d);
	epoch = d->bm_epoch;
	if (epoch + 1 != next)
		log_warn("disks: bitmaps of epoch %llu taken at barrier %llu",
			 (unsigned long long)epoch, (unsigned long long)(next - 1));
	t0 = mono_ms();
	rc = switch_bitmaps(cx, d, next, true);
	log_debug("disks: epoch %llu: bitmaps switched in %.2f ms", (unsigned long long)epoch,
		  mono_ms() - t0);
	if (rc)
		return rc;
	d->bm_epoch = next;
	d->release_epochs[d->nrelease++] = epoch;
	for (uint32_t i = 0; !rc && i < d->n; i++)
		rc = capture_disk(cx, d, &d->disks[i], epoch, out);
	return rc;
}

static void send_remove_bitmap(struct ckpt_ctx *cx, const char *node, const char *name)
{
	struct json_object *a = json_object_new_object();

	json_object_object_add(a, "node", json_object_new_string(node));
	json_object_object_add(a, "name", json_object_new_string(name));
	if (disk_qmp_send(cx, "block-dirty-bitmap-remove", a))
		log_warn("cannot remove dirty bitmap %s: %s (removed when the session ends)",
			 name, qmp_last_error(cx->qmp));
}

/* Sent without waiting: each QMP round trip costs a millisecond or so
 * (QEMU's main loop), and the loop has acks and the VM's output to see
 * to meanwhile. QEMU runs them before any later command of ours; a
 * bitmap it refuses to remove is logged then, and removed when the
 * session ends (disk_bitmap_drop_all). */
void disk_bitmap_release(struct ckpt_ctx *cx, struct disk_device *d)
{
	char id[64];

	if (!d->nrelease)
		return;
	for (uint32_t i = 0; i < d->n; i++) {
		for (unsigned e = 0; e < d->nrelease; e++) {
			export_id(&d->disks[i], d->release_epochs[e], id, sizeof(id));
			send_delete_export(cx, id);
		}
		for (unsigned e = 0; e < d->nunremoved; e++) {
			bitmap_name(&d->disks[i], d->unremoved_epochs[e], id, sizeof(id));
			send_remove_bitmap(cx, d->disks[i].node, id);
		}
	}
	memcpy(d->unremoved_epochs, d->release_epochs, d->nrelease * sizeof(d->release_epochs[0]));
	d->nunremoved = d->nrelease;
	d->nrelease = 0;
}

/* Remove every remus-b bitmap QEMU lists; 1 if one was still busy. */
static int remove_listed_bitmaps(struct ckpt_ctx *cx)
{
	struct json_object *all = NULL;
	int busy = 0;

	if (qmp_execute(cx->qmp, "query-named-block-nodes", NULL, &all, QMP_TIMEOUT_MS))
		return 0;
	for (size_t i = 0; i < json_object_array_length(all); i++) {
		struct json_object *n = json_object_array_get_idx(all, i), *bms;
		const char *node = disk_json_str(n, "node-name");

		if (!node || !json_object_object_get_ex(n, "dirty-bitmaps", &bms))
			continue;
		for (size_t j = 0; j < json_object_array_length(bms); j++) {
			const char *name = disk_json_str(json_object_array_get_idx(bms, j), "name");
			struct json_object *a;

			if (!name || strncmp(name, BITMAP_PREFIX, strlen(BITMAP_PREFIX)))
				continue;
			a = json_object_new_object();
			json_object_object_add(a, "node", json_object_new_string(node));
			json_object_object_add(a, "name", json_object_new_string(name));
			busy |= disk_qmp(cx, "block-dirty-bitmap-remove", a) != 0;
		}
	}
	json_object_put(all);
	return busy;
}

void disk_bitmap_drop_all(struct ckpt_ctx *cx, struct disk_device *d)
{
	struct json_object *ex = list_exports(cx);

	for (size_t i = 0; ex && i < json_object_array_length(ex); i++) {
		const char *id = disk_json_str(json_object_array_get_idx(ex, i), "id");

		if (id && !strncmp(id, EXPORT_PREFIX, strlen(EXPORT_PREFIX)))
			delete_export(cx, id);
	}
	json_object_put(ex);
	/* a deleted export lets go of its bitmap a moment later */
	for (int i = 0; i < 50 && remove_listed_bitmaps(cx); i++)
		usleep(20000);
	d->bitmaps_on = false;
	d->bm_epoch = 0;
	d->nrelease = d->nunremoved = 0;
}

int64_t disk_bitmap_dirty_bytes(struct ckpt_ctx *cx, struct disk_device *d)
{
	struct json_object *all = NULL;
	int64_t total = 0;
	char name[64];

	struct json_object *flat = json_object_new_object();
	int rc;

	json_object_object_add(flat, "flat", json_object_new_boolean(true));
	rc = qmp_execute(cx->qmp, "query-named-block-nodes", flat, &all, POLL_TIMEOUT_MS);
	json_object_put(flat);
	if (rc)
		return -1;
	for (uint32_t k = 0; k < d->n; k++) {
		bitmap_name(&d->disks[k], d->bm_epoch, name, sizeof(name));
		for (size_t i = 0; i < json_object_array_length(all); i++) {
			struct json_object *n = json_object_array_get_idx(all, i), *bms;
			const char *node = disk_json_str(n, "node-name");

			if (!node || strcmp(node, d->disks[k].node) ||
			    !json_object_object_get_ex(n, "dirty-bitmaps", &bms))
				continue;
			for (size_t j = 0; j < json_object_array_length(bms); j++) {
				struct json_object *b = json_object_array_get_idx(bms, j), *c;
				const char *bn = disk_json_str(b, "name");

				if (bn && !strcmp(bn, name) && json_object_object_get_ex(b, "count", &c))
					total += json_object_get_int64(c);
			}
		}
	}
	json_object_put(all);
	return total;
}
