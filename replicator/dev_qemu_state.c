/* Checkpoint device: QEMU's device state (CPUs included), saved with
 * xen-save-devices-state, which stock QEMU runs on any accelerator. It
 * writes a migration stream without RAM: QEVM header, full device
 * sections, EOF. The backup feeds it to an incoming migration. */
#include "ckpt_device.h"
#include "log.h"
#include "qmp.h"
#include "replicator.h"

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
	uint8_t *buf;      /* device state of the captured epoch */
	size_t len;
};

static int qemu_state_setup(struct replicator *r, void **state)
{
	struct qemu_state_device *d = calloc(1, sizeof(*d));

	if (!d)
		return -ENOMEM;
	*state = d;
	/* tmpfs: QEMU writes it and we read it back within the pause. */
	snprintf(d->path, sizeof(d->path), "/dev/shm/remus-devstate-%d-%d",
		 (int)getpid(), (int)r->vm.pid);
	return 0;
}

static void qemu_state_teardown(void *state)
{
	struct qemu_state_device *d = state;

	if (!d)
		return;
	unlink(d->path);
	free(d->buf);
	free(d);
}

static int read_whole_file(const char *path, uint8_t **buf, size_t *len)
{
	struct stat st;
	uint8_t *p = NULL;
	size_t got = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC), rc = 0;

	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0) {
		rc = -errno;
		goto out;
	}
	if (st.st_size <= 0 || st.st_size > PROTO_MAX_PAYLOAD) {
		rc = -EMSGSIZE;
		goto out;
	}
	p = malloc((size_t)st.st_size);
	if (!p) {
		rc = -ENOMEM;
		goto out;
	}
	while (got < (size_t)st.st_size) {
		ssize_t n = read(fd, p + got, (size_t)st.st_size - got);
		if (n <= 0) {
			rc = n < 0 ? -errno : -EIO;
			goto out;
		}
		got += (size_t)n;
	}
	*buf = p;
	*len = got;
	p = NULL;
out:
	free(p);
	close(fd);
	return rc;
}

static int qemu_state_postsuspend(void *state, struct replicator *r, struct epoch_tally *t)
{
	struct qemu_state_device *d = state;
	struct json_object *args = json_object_new_object();
	int rc;

	json_object_object_add(args, "filename", json_object_new_string(d->path));
	json_object_object_add(args, "live", json_object_new_boolean(0));
	rc = qmp_execute(r->qmp, "xen-save-devices-state", args, NULL, QMP_SAVE_TIMEOUT_MS);
	json_object_put(args);
	if (rc) {
		log_err("epoch %llu: saving device state failed: %s",
			(unsigned long long)t->id, qmp_last_error(r->qmp));
		return rc;
	}
	free(d->buf);
	d->buf = NULL;
	rc = read_whole_file(d->path, &d->buf, &d->len);
	/* Read it, gone: a replicator killed later leaves nothing in /dev/shm. */
	unlink(d->path);
	if (rc)
		log_err("epoch %llu: cannot read device state %s: %s",
			(unsigned long long)t->id, d->path, strerror(-rc));
	return rc;
}

static int qemu_state_send(void *state, struct replicator *r, struct epoch_tally *t)
{
	struct qemu_state_device *d = state;
	struct iovec iov = { .iov_base = d->buf, .iov_len = d->len };

	t->devstate_bytes += d->len;
	return epoch_push_frame(r, t, FRAME_DEVSTATE, &iov, 1, NULL);
}

const struct ckpt_device_ops qemu_state_device_ops = {
	.name = "qemu-devices",
	.setup = qemu_state_setup,
	.teardown = qemu_state_teardown,
	.postsuspend = qemu_state_postsuspend,
	.send = qemu_state_send,
};
