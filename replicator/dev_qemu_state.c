/* Checkpoint device: QEMU's device state (CPUs included), saved with
 * xen-save-devices-state, which stock QEMU runs on any accelerator. It
 * writes a migration stream without RAM: QEVM header, full device
 * sections, EOF. The backup feeds it to an incoming migration. */
#include "ckpt_device.h"
#include "log.h"
#include "proto.h"
#include "qmp.h"
#include "runtime_dir.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define QMP_SAVE_TIMEOUT_MS 5000

struct qemu_state_device {
	char path[256];
	int fd;            /* the file QEMU writes, as we made it; -1 */
	uint8_t *buf;      /* device state of the captured epoch */
	size_t len;
};

/* The file is made once, by us, exclusively, in our runtime directory
 * (tmpfs: QEMU writes it and we read it back within the pause), and given
 * to QEMU's user, which opens it by name (O_TRUNC) at every epoch. We read
 * it through our own descriptor, never by name again. */
static int qemu_state_setup(struct ckpt_ctx *cx, void **state)
{
	struct qemu_state_device *d = calloc(1, sizeof(*d));
	int rc;

	if (!d)
		return -ENOMEM;
	*state = d;
	d->fd = runtime_file_create(cx->runtime_dir, "devstate", O_RDWR, 0600, d->path,
				    sizeof(d->path));
	if (d->fd < 0) {
		rc = d->fd;
		log_err("cannot make %s/devstate for QEMU's device state: %s", cx->runtime_dir,
			strerror(-rc));
		d->path[0] = 0;
		return rc;
	}
	rc = ckpt_give_to_qemu(cx, d->path);
	if (rc)
		log_err("cannot give %s to QEMU's user: %s", d->path, strerror(-rc));
	return rc;
}

static void qemu_state_teardown(void *state)
{
	struct qemu_state_device *d = state;

	if (!d)
		return;
	if (d->fd >= 0)
		close(d->fd);
	if (d->path[0])
		unlink(d->path);
	free(d->buf);
	free(d);
}

static int read_whole_fd(int fd, uint8_t **buf, size_t *len)
{
	struct stat st;
	uint8_t *p = NULL;
	size_t got = 0;

	if (fstat(fd, &st) < 0)
		return -errno;
	if (st.st_size <= 0 || st.st_size > PROTO_MAX_PAYLOAD)
		return -EMSGSIZE;
	p = malloc((size_t)st.st_size);
	if (!p)
		return -ENOMEM;
	while (got < (size_t)st.st_size) {
		ssize_t n = pread(fd, p + got, (size_t)st.st_size - got, (off_t)got);
		if (n <= 0) {
			int rc = n < 0 ? -errno : -EIO;
			free(p);
			return rc;
		}
		got += (size_t)n;
	}
	*buf = p;
	*len = got;
	return 0;
}

static int qemu_state_postsuspend(void *state, struct ckpt_ctx *cx, struct epoch_tally *t)
{
	struct qemu_state_device *d = state;
	struct json_object *args = json_object_new_object();
	int rc;

	json_object_object_add(args, "filename", json_object_new_string(d->path));
	json_object_object_add(args, "live", json_object_new_boolean(0));
	rc = qmp_execute(cx->qmp, "xen-save-devices-state", args, NULL, QMP_SAVE_TIMEOUT_MS);
	json_object_put(args);
	if (rc) {
		log_err("epoch %llu: saving device state failed: %s",
			(unsigned long long)t->id, qmp_last_error(cx->qmp));
		return rc;
	}
	free(d->buf);
	d->buf = NULL;
	rc = read_whole_fd(d->fd, &d->buf, &d->len);
	/* Read it, empty it: tmpfs holds it in RAM, and a replicator killed
	 * later leaves no device state behind. */
	if (ftruncate(d->fd, 0) < 0 && !rc)
		rc = -errno;
	if (rc)
		log_err("epoch %llu: cannot read device state %s: %s",
			(unsigned long long)t->id, d->path, strerror(-rc));
	return rc;
}

static int qemu_state_send(void *state, struct ckpt_ctx *cx, struct epoch_tally *t)
{
	struct qemu_state_device *d = state;
	struct iovec iov = { .iov_base = d->buf, .iov_len = d->len };

	t->devstate_bytes += d->len;
	return epoch_push_frame(cx, t, FRAME_DEVSTATE, &iov, 1, NULL);
}

const struct ckpt_device_ops qemu_state_device_ops = {
	.name = "qemu-devices",
	.setup = qemu_state_setup,
	.teardown = qemu_state_teardown,
	.postsuspend = qemu_state_postsuspend,
	.send = qemu_state_send,
};
