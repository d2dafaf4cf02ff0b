/* The replication link to the backup agent: handshake, frame queue,
 * acks and heartbeats. */
#include "clock.h"
#include "log.h"
#include "qmp.h"
#include "replicator.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define CONNECT_TIMEOUT_MS 1000
#define HELLO_TIMEOUT_MS   5000
#define GOODBYE_FLUSH_MS   1000

bool link_up(const struct link *l)
{
	return l->fd >= 0;
}

void link_close(struct link *l, struct ev_loop *loop)
{
	ev_io_stop(loop, &l->rio);
	ev_io_stop(loop, &l->wio);
	if (l->fd >= 0)
		close(l->fd);
	l->fd = -1;
	frame_queue_clear(&l->out);
	frame_reader_free(&l->reader);
}

/* The link broke under us (EOF, reset, a bad frame): the backup may be
 * alive and about to take over, so held output waits as on a silent link. */
static void link_fail(struct replicator *r, const char *what, int rc)
{
	char why[160];

	snprintf(why, sizeof(why), "%s: %s", what, strerror(-rc));
	r->backup_may_take_over = true;
	epoch_on_backup_lost(r, why);
}

/* Write what is queued, blocking for at most ms. 1 all written, 0 time
 * ran out, -errno. */
int link_flush_for(struct link *l, int ms)
{
	double deadline = mono_ms() + ms;
	int rc;

	while ((rc = frame_queue_flush(&l->out, l->fd)) == 0) {
		struct pollfd pfd = { .fd = l->fd, .events = POLLOUT };
		int left = (int)(deadline - mono_ms());
		if (left <= 0)
			break;
		poll(&pfd, 1, left);
	}
	return rc;
}

/* We drop a working link while the VM is healthy (to resync, say): tell
 * the backup with a GOODBYE first, or it would take the closed connection
 * for the primary's death and start a second copy of the VM. Blocks for at
 * most GOODBYE_FLUSH_MS; the VM is running meanwhile. */
void link_drop_alive(struct replicator *r, const char *why)
{
	struct link *l = &r->link;
	struct iovec iov = { .iov_base = (void *)why, .iov_len = strlen(why) };
	if (link_up(l) && !frame_queue_push(&l->out, FRAME_GOODBYE, r->epoch, &iov, 1, NULL, NULL) &&
	    link_flush_for(l, GOODBYE_FLUSH_MS) != 1)
		log_warn("GOODBYE to the backup may not have arrived: it may take over");
	epoch_on_backup_lost(r, why);
}

int link_push(struct replicator *r, unsigned type, uint64_t epoch,
	      const struct iovec *iov, int iovcnt, void *owned, uint32_t *crc)
{
	struct link *l = &r->link;
	int rc = frame_queue_push(&l->out, type, epoch, iov, iovcnt, owned, crc);

	if (rc)
		return rc;
	l->last_tx = ev_now(r->loop);
	/* Sending waits for the loop: the caller may queue a whole epoch
	 * first, and the VM is already running again. */
	if (!ev_is_active(&l->wio))
		ev_io_start(r->loop, &l->wio);
	return 0;
}

static void on_writable(struct ev_loop *loop, ev_io *w, int revents)
{
	struct replicator *r = w->data;
	int rc = frame_queue_flush(&r->link.out, r->link.fd);

	if (rc == 1)
		ev_io_stop(loop, w);
	else if (rc < 0)
		link_fail(r, "sending to the backup failed", rc);
}

static void handle_frame(struct replicator *r, const struct frame_hdr *h,
			 const uint8_t *payload)
{
	char why[128];

	switch (h->type) {
	case FRAME_ACK:
		epoch_on_ack(r, h->epoch);
		break;
	case FRAME_NACK:
		snprintf(why, sizeof(why), "%.*s", (int)(h->len < 120 ? h->len : 120),
			 (const char *)payload);
		epoch_on_nack(r, h->epoch, why);
		break;
	case FRAME_HEARTBEAT:
		break;
	case FRAME_HANDOVER_DONE:
	case FRAME_HANDOVER_FAILED:
	case FRAME_PAUSE_ACK:
		operator_on_frame(r, h, payload);
		break;
	default:
		log_warn("backup sent an unexpected %s frame: ignored",
			 frame_type_name(h->type));
	}
}

static void on_readable(struct ev_loop *loop, ev_io *w, int revents)
{
	struct replicator *r = w->data;
	struct link *l = &r->link;

	for (;;) {
		int rc;

		/* Any bytes count as a sign of life, not only whole frames;
		 * and time spent handling them (an ack may start the next
		 * checkpoint at once) is ours, not the backup's silence. */
		ev_now_update(loop);
		l->last_rx = ev_now(loop);
		rc = frame_reader_read(&l->reader, l->fd);
		if (rc == 0)
			return;
		if (rc == -EBADMSG || rc == -EMSGSIZE || rc == -EPROTONOSUPPORT) {
			link_drop_alive(r, "unreadable stream from the backup");
			return;
		}
		if (rc < 0) {
			link_fail(r, rc == -EPIPE ? "backup closed the connection"
					: "reading from the backup failed", rc);
			return;
		}
		if (proto_check_payload(&l->reader.hdr, l->reader.payload)) {
			link_drop_alive(r, "corrupt frame from the backup");
			return;
		}
		handle_frame(r, &l->reader.hdr, l->reader.payload);
		if (!link_up(l))
			return;
	}
}

/* Does the reply list this feature ("features": ["operator", ...])? An
 * older agent lists none. */
static bool has_feature(struct json_object *reply, const char *name)
{
	struct json_object *arr;

	if (!json_object_object_get_ex(reply, "features", &arr) ||
	    !json_object_is_type(arr, json_type_array))
		return false;
	for (size_t i = 0; i < json_object_array_length(arr); i++) {
		const char *f = json_object_get_string(json_object_array_get_idx(arr, i));
		if (f && !strcmp(f, name))
			return true;
	}
	return false;
}

/* The agent says how long it may take over after it last heard from us
 * ("takeover_after_ms": its timeout plus its fence timeout). Until then,
 * hold output even if the link looks dead: it may be cut while the
 * backup fences us and restores the last commit. */
static void set_backup_silence(struct replicator *r, struct json_object *reply)
{
	struct json_object *v;
	unsigned takeover = 0, need;

	if (json_object_object_get_ex(reply, "takeover_after_ms", &v) &&
	    json_object_is_type(v, json_type_int) && json_object_get_int64(v) > 0 &&
	    json_object_get_int64(v) < 3600000)
		takeover = (unsigned)json_object_get_int64(v);
	/* a margin for the two sides' clocks and heartbeats */
	need = takeover ? takeover + 2 * r->cfg.heartbeat_ms + 500 : 0;
	r->backup_silence_ms = need > r->cfg.timeout_ms ? need : r->cfg.timeout_ms;
	if (need > r->cfg.timeout_ms)
		log_info("the backup may fence and take over up to %u ms after it last heard "
			 "from us: the backup counts as lost after %u ms of silence, not "
			 "--timeout-ms %u, so that no output it may roll back goes out",
			 takeover, r->backup_silence_ms, r->cfg.timeout_ms);
}

/* HELLO_REPLY is JSON: {"ok": true, "features": [...]} or {"ok": false,
 * "error": "why"}. */
static int parse_hello_reply(struct replicator *r, const uint8_t *payload, uint32_t len,
			     char *err, size_t errlen)
{
	char *text = strndup((const char *)payload, len);
	struct json_object *reply = text ? json_tokener_parse(text) : NULL;
	struct json_object *ok, *msg = NULL;
	int rc = 0;

	free(text);
	if (!reply || !json_object_object_get_ex(reply, "ok", &ok)) {
		snprintf(err, errlen, "backup's HELLO reply is not valid JSON");
		rc = -EPROTO;
	} else if (!json_object_get_boolean(ok)) {
		json_object_object_get_ex(reply, "error", &msg);
		snprintf(err, errlen, "backup refused: %s",
			 msg ? json_object_get_string(msg) : "no reason given");
		rc = -ECONNREFUSED;
	} else {
		r->agent_operator = has_feature(reply, PROTO_FEATURE_OPERATOR);
		set_backup_silence(r, reply);
		if (r->protected_disks && !has_feature(reply, PROTO_FEATURE_DISK)) {
			snprintf(err, errlen, "the backup agent keeps no disk replicas (an older "
				 "remus-agent?) but the VM has %d replicated disk(s)",
				 r->protected_disks);
			rc = -EPROTO;
		}
	}
	json_object_put(reply);
	return rc;
}

/* Blocking handshake: HELLO out, HELLO_REPLY in. Runs at attach and on
 * reconnect, while the VM runs unprotected anyway. */
static int handshake(struct replicator *r, int fd, char *err, size_t errlen)
{
	struct frame_reader rd;
	struct pollfd pfd = { .fd = fd, .events = POLLIN };
	char *hello = vm_hello_json(r);
	struct iovec iov;
	int rc;

	if (!hello)
		return -ENOMEM;
	iov = (struct iovec){ .iov_base = hello, .iov_len = strlen(hello) };
	rc = frame_queue_push(&r->link.out, FRAME_HELLO, 0, &iov, 1, hello, NULL);
	while (!rc && (rc = frame_queue_flush(&r->link.out, fd)) == 0) {
		struct pollfd wp = { .fd = fd, .events = POLLOUT };
		if (poll(&wp, 1, HELLO_TIMEOUT_MS) <= 0)
			rc = -ETIMEDOUT;
	}
	if (rc < 0) {
		snprintf(err, errlen, "sending HELLO: %s", strerror(-rc));
		return rc;
	}
	frame_reader_init(&rd);
	while ((rc = frame_reader_read(&rd, fd)) == 0) {
		if (poll(&pfd, 1, HELLO_TIMEOUT_MS) <= 0) {
			rc = -ETIMEDOUT;
			break;
		}
	}
	if (rc == -EPROTONOSUPPORT) {
		snprintf(err, errlen, "backup refused: it speaks protocol version %u; this "
			 "replicator speaks version %u", rd.hdr.version, (unsigned)PROTO_VERSION);
		goto out;
	}
	if (rc < 0) {
		snprintf(err, errlen, "no HELLO reply from the backup: %s", strerror(-rc));
		goto out;
	}
	if (rd.hdr.type != FRAME_HELLO_REPLY || proto_check_payload(&rd.hdr, rd.payload)) {
		snprintf(err, errlen, "backup answered HELLO with a bad %s frame",
			 frame_type_name(rd.hdr.type));
		rc = -EPROTO;
		goto out;
	}
	rc = parse_hello_reply(r, rd.payload, rd.hdr.len, err, errlen);
out:
	frame_reader_free(&rd);
	return rc;
}

int link_open(struct replicator *r, char *err, size_t errlen)
{
	struct link *l = &r->link;
	int fd = netaddr_connect(&r->cfg.backup, CONNECT_TIMEOUT_MS);
	int rc;

	if (fd < 0) {
		snprintf(err, errlen, "cannot connect to backup %s: %s",
			 r->cfg.backup.text, strerror(-fd));
		return fd;
	}
	frame_queue_init(&l->out);
	r->agent_operator = false; /* until its HELLO_REPLY says so */
	rc = handshake(r, fd, err, errlen);
	if (rc) {
		frame_queue_clear(&l->out);
		close(fd);
		return rc;
	}
	l->fd = fd;
	frame_reader_init(&l->reader);
	ev_io_init(&l->rio, on_readable, fd, EV_READ);
	ev_io_init(&l->wio, on_writable, fd, EV_WRITE);
	l->rio.data = l->wio.data = r;
	ev_io_start(r->loop, &l->rio);
	l->last_rx = l->last_tx = ev_now(r->loop);
	return 0;
}
