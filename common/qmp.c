#include "qmp.h"
#include "clock.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define QMP_READ_CHUNK 65536
/* query-block nests one level per backing image: json-c's default depth
 * (32) is too small for a long backing chain. */
#define QMP_JSON_DEPTH 256
/* How much of a bad message goes into an error text. */
#define QMP_SNIPPET 80
/* No deadline: wait as long as it takes. */
#define QMP_FOREVER LLONG_MAX

struct qmp {
	int fd;
	pid_t peer_pid;
	long long last_id;
	/* the last command sent by qmp_send, and the highest id of a reply
	 * read: replies still to come while the first is higher */
	long long sent_id, replied_id;
	/* buf[start, len) is unconsumed input; buf[start, fed) has already
	 * been given to tok, which may hold a message split over lines. */
	char *buf;
	size_t cap, start, fed, len;
	struct json_tokener *tok;
	struct json_object *events; /* array used as a FIFO of messages */
	/* -EPIPE or -EPROTO once the stream is unusable; -ETIMEDOUT if a
	 * command was cut off half-written. */
	int broken;
	char err[512];
	/* Set for a peer reached through libvirt instead of a socket. */
	struct qmp_passthrough pt;
	bool passthrough;
};

static __thread char connect_err[512];

static long long now_ms(void)
{
	return (long long)mono_ms();
}

static long long deadline_after(int timeout_ms)
{
	if (timeout_ms < 0)
		return QMP_FOREVER;
	return now_ms() + timeout_ms;
}

/* 0 when fd is ready (or has an error or hangup for the caller to read),
 * -ETIMEDOUT at the deadline. A deadline in the past polls once. */
static int wait_fd(int fd, short events, long long deadline)
{
	struct pollfd pfd = { .fd = fd, .events = events };
	long long left;
	int n;

	for (;;) {
		left = -1;
		if (deadline != QMP_FOREVER) {
			left = deadline - now_ms();
			if (left < 0)
				left = 0;
		}
		n = poll(&pfd, 1, left > INT_MAX ? INT_MAX : (int)left);
		if (n > 0)
			return 0;
		if (n == 0 && left == 0)
			return -ETIMEDOUT;
		if (n < 0 && errno != EINTR)
			return -errno;
	}
}

static int qmp_fail(struct qmp *q, int err, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int qmp_fail(struct qmp *q, int err, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(q->err, sizeof(q->err), fmt, ap);
	va_end(ap);
	/* After these the byte stream can no longer be trusted. */
	if (err == -EPIPE || err == -EPROTO)
		q->broken = err;
	return err;
}

/* The start of what the peer sent, on one line, for an error text. */
static void snippet(char *dst, const char *s, size_t len)
{
	size_t n = 0;

	while (len && (*s == ' ' || *s == '\t' || *s == '\r' || *s == '\n')) {
		s++;
		len--;
	}
	for (; n < len && n < QMP_SNIPPET; n++) {
		if (s[n] == '\r' || s[n] == '\n')
			break;
		dst[n] = (unsigned char)s[n] < 0x20 ? '?' : s[n];
	}
	dst[n] = '\0';
}

static int bad_message(struct qmp *q, const char *what, struct json_object *msg)
{
	char text[QMP_SNIPPET + 1];
	const char *s;

	s = json_object_to_json_string_ext(msg, JSON_C_TO_STRING_PLAIN |
					   JSON_C_TO_STRING_NOSLASHESCAPE);
	snippet(text, s, strlen(s));
	return qmp_fail(q, -EPROTO, "%s: %s", what, text);
}

static int peer_closed(struct qmp *q)
{
	return qmp_fail(q, -EPIPE, "QEMU closed the QMP socket");
}

/* Make room for one more read, moving the unconsumed input to the front. */
static int buf_reserve(struct qmp *q)
{
	size_t cap;
	char *buf;

	if (q->start) {
		memmove(q->buf, q->buf + q->start, q->len - q->start);
		q->len -= q->start;
		q->fed -= q->start;
		q->start = 0;
	}
	if (q->cap - q->len >= QMP_READ_CHUNK)
		return 0;
	cap = q->cap ? q->cap * 2 : QMP_READ_CHUNK;
	if (cap < q->len + QMP_READ_CHUNK)
		cap = q->len + QMP_READ_CHUNK;
	buf = realloc(q->buf, cap);
	if (!buf)
		return qmp_fail(q, -ENOMEM, "out of memory for QMP input");
	q->buf = buf;
	q->cap = cap;
	return 0;
}

/* The message being parsed, from buf[start], is not QMP. */
static int bad_text(struct qmp *q, const char *what)
{
	char text[QMP_SNIPPET + 1];

	snippet(text, q->buf + q->start, q->len - q->start);
	return qmp_fail(q, -EPROTO, "%s: %s", what, text);
}

/* Feed complete lines to the tokener until it yields a message. A message
 * may span lines (-qmp-pretty); QEMU ends each one with "\r\n". 0 with
 * *msg NULL when no complete message is buffered yet. */
static int buf_take(struct qmp *q, struct json_object **msg)
{
	enum json_tokener_error jerr;
	struct json_object *obj;
	char *nl;
	size_t end;

	*msg = NULL;
	while (q->fed < q->len &&
	       (nl = memchr(q->buf + q->fed, '\n', q->len - q->fed))) {
		end = nl - q->buf + 1;
		obj = json_tokener_parse_ex(q->tok, q->buf + q->fed, end - q->fed);
		jerr = json_tokener_get_error(q->tok);
		if (jerr == json_tokener_continue) {
			q->fed = end;
			continue;
		}
		if (jerr != json_tokener_success)
			return bad_text(q, "QMP peer sent invalid JSON");
		/* Anything after the value is left for the next message. */
		q->fed += json_tokener_get_parse_end(q->tok);
		json_tokener_reset(q->tok);
		if (!json_object_is_type(obj, json_type_object)) {
			json_object_put(obj);
			return bad_text(q, "QMP peer sent JSON that is not an object");
		}
		q->start = q->fed;
		*msg = obj;
		return 0;
	}
	if (q->len - q->start > QMP_MAX_LINE)
		return qmp_fail(q, -EPROTO, "QMP peer sent a line longer than %u bytes",
				QMP_MAX_LINE);
	return 0;
}

/* Read what the socket has, waiting for data until the deadline. */
static int buf_fill(struct qmp *q, long long deadline)
{
	ssize_t n;
	int ret;

	ret = buf_reserve(q);
	if (ret)
		return ret;
	for (;;) {
		n = recv(q->fd, q->buf + q->len, q->cap - q->len, 0);
		if (n > 0) {
			q->len += n;
			return 0;
		}
		/* QEMU's quit ends with a reset rather than an orderly
		 * shutdown: both mean it has gone. */
		if (n == 0 || errno == ECONNRESET)
			return peer_closed(q);
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK)
			return qmp_fail(q, -errno, "cannot read the QMP socket: %s",
					strerror(errno));
		ret = wait_fd(q->fd, POLLIN, deadline);
		if (ret == -ETIMEDOUT)
			return ret; /* the caller knows what timed out */
		if (ret)
			return qmp_fail(q, ret, "cannot poll the QMP socket: %s",
					strerror(-ret));
	}
}

static int next_msg(struct qmp *q, long long deadline, struct json_object **msg)
{
	int ret;

	for (;;) {
		ret = buf_take(q, msg);
		if (ret || *msg)
			return ret;
		ret = buf_fill(q, deadline);
		if (ret)
			return ret;
	}
}

/* One send(); with pass_fd >= 0 (nothing sent yet) the file goes along
 * as SCM_RIGHTS, which QEMU keeps for the command that takes it (getfd). */
static ssize_t send_some(int fd, const char *s, size_t len, int pass_fd)
{
	union { struct cmsghdr h; char buf[CMSG_SPACE(sizeof(int))]; } ctl;
	struct iovec iov = { .iov_base = (void *)s, .iov_len = len };
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1 };
	struct cmsghdr *c;

	if (pass_fd < 0)
		return send(fd, s, len, MSG_NOSIGNAL);
	memset(&ctl, 0, sizeof(ctl));
	m.msg_control = ctl.buf;
	m.msg_controllen = sizeof(ctl.buf);
	c = CMSG_FIRSTHDR(&m);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &pass_fd, sizeof(int));
	return sendmsg(fd, &m, MSG_NOSIGNAL);
}

static int send_all(struct qmp *q, const char *s, size_t len, long long deadline,
		    int pass_fd)
{
	size_t sent = 0;
	ssize_t n;
	int ret;

	while (sent < len) {
		/* MSG_NOSIGNAL: a dead QEMU must be -EPIPE, not SIGPIPE. */
		n = send_some(q->fd, s + sent, len - sent, sent ? -1 : pass_fd);
		if (n >= 0) {
			sent += n;
			continue;
		}
		if (errno == EINTR)
			continue;
		if (errno == EPIPE || errno == ECONNRESET)
			return peer_closed(q);
		if (errno != EAGAIN && errno != EWOULDBLOCK)
			return qmp_fail(q, -errno, "cannot write the QMP socket: %s",
					strerror(errno));
		ret = wait_fd(q->fd, POLLOUT, deadline);
		/* Half a command is on the wire: nothing sent later can be
		 * parsed by QEMU. */
		if (ret == -ETIMEDOUT && sent)
			q->broken = ret;
		if (ret == -ETIMEDOUT)
			return ret;
		if (ret)
			return qmp_fail(q, ret, "cannot poll the QMP socket: %s",
					strerror(-ret));
	}
	return 0;
}

static int obj_add(struct json_object *obj, const char *key, struct json_object *val)
{
	if (!val || json_object_object_add(obj, key, val)) {
		json_object_put(val);
		return -ENOMEM;
	}
	return 0;
}

static int send_command(struct qmp *q, const char *command,
			struct json_object *args, long long id, long long deadline, int pass_fd)
{
	struct json_object *req;
	const char *text;
	char *line = NULL;
	int ret = -ENOMEM;

	req = json_object_new_object();
	if (!req)
		goto out;
	if (obj_add(req, "execute", json_object_new_string(command)) ||
	    (args && obj_add(req, "arguments", json_object_get(args))) ||
	    obj_add(req, "id", json_object_new_int64(id)))
		goto out;
	text = json_object_to_json_string_ext(req, JSON_C_TO_STRING_PLAIN |
					      JSON_C_TO_STRING_NOSLASHESCAPE);
	if (!text || asprintf(&line, "%s\n", text) < 0) {
		line = NULL;
		goto out;
	}
	ret = send_all(q, line, strlen(line), deadline, pass_fd);
out:
	if (ret == -ENOMEM)
		qmp_fail(q, ret, "out of memory for QMP command '%s'", command);
	free(line);
	json_object_put(req);
	return ret;
}

static int is_reply(struct json_object *msg)
{
	return json_object_object_get_ex(msg, "return", NULL) ||
	       json_object_object_get_ex(msg, "error", NULL);
}

static int is_event(struct json_object *msg)
{
	struct json_object *ev;

	return json_object_object_get_ex(msg, "event", &ev) &&
	       json_object_is_type(ev, json_type_string);
}

static const char *member_string(struct json_object *obj, const char *key)
{
	struct json_object *v;

	if (!json_object_object_get_ex(obj, key, &v) ||
	    !json_object_is_type(v, json_type_string))
		return "(none)";
	return json_object_get_string(v);
}

static int remote_error(struct qmp *q, const char *command, struct json_object *err)
{
	return qmp_fail(q, -EREMOTEIO, "QMP command '%s' failed: %s: %s", command,
			member_string(err, "class"), member_string(err, "desc"));
}

static int queue_event(struct qmp *q, struct json_object *msg)
{
	if (json_object_array_add(q->events, json_object_get(msg))) {
		json_object_put(msg);
		return qmp_fail(q, -ENOMEM, "out of memory for QMP events");
	}
	return 0;
}

static void note_reply_id(struct qmp *q, struct json_object *msg)
{
	struct json_object *id;

	if (json_object_object_get_ex(msg, "id", &id) && json_object_is_type(id, json_type_int) &&
	    json_object_get_int64(id) > q->replied_id)
		q->replied_id = json_object_get_int64(id);
}

/* A reply nobody waits for (a command sent with qmp_send, or one that
 * timed out) is dropped, but not its error. */
static void log_late_error(struct json_object *msg)
{
	struct json_object *err, *id = NULL;

	if (!json_object_object_get_ex(msg, "error", &err))
		return;
	json_object_object_get_ex(msg, "id", &id);
	log_warn("QMP: command %s, whose reply nobody waited for, failed: %s: %s",
		 id ? json_object_get_string(id) : "(no id)", member_string(err, "class"),
		 member_string(err, "desc"));
}

/* 0 and *ret set if msg is the reply to command id, 1 if msg is something
 * else to get past (an event, now queued, or a stale reply). */
static int take_reply(struct qmp *q, const char *command, long long id,
		      struct json_object *msg, struct json_object **ret)
{
	struct json_object *v;
	int err;

	if (is_event(msg)) {
		err = queue_event(q, msg);
		return err ? err : 1;
	}
	if (!is_reply(msg))
		return bad_message(q, "QMP peer sent neither a reply nor an event", msg);
	note_reply_id(q, msg);
	/* A reply without an id is QEMU rejecting a request it could not
	 * parse, which can only be the one in flight. */
	if (json_object_object_get_ex(msg, "id", &v) &&
	    !(json_object_is_type(v, json_type_int) && json_object_get_int64(v) == id)) {
		log_debug("QMP: skipping the reply to command %s (waiting for %lld)",
			  json_object_get_string(v), id);
		log_late_error(msg);
		return 1;
	}
	if (json_object_object_get_ex(msg, "error", &v))
		return remote_error(q, command, v);
	json_object_object_get_ex(msg, "return", &v);
	if (ret)
		*ret = json_object_get(v);
	return 0;
}

static int execute_until(struct qmp *q, const char *command,
			 struct json_object *args, struct json_object **ret,
			 long long deadline, int timeout_ms, int pass_fd)
{
	struct json_object *msg;
	int err;

	if (ret)
		*ret = NULL;
	if (q->broken)
		return q->broken;
	err = send_command(q, command, args, ++q->last_id, deadline, pass_fd);
	while (!err) {
		err = next_msg(q, deadline, &msg);
		if (err)
			break;
		err = take_reply(q, command, q->last_id, msg, ret);
		json_object_put(msg);
		if (err == 1)
			err = 0;
		else if (err == 0)
			return 0;
	}
	if (err == -ETIMEDOUT)
		qmp_fail(q, err, "QMP command '%s' timed out after %d ms%s", command,
			 timeout_ms, q->broken ? " while being sent" : "");
	return err;
}

/* A whole reply, nested as deep as QEMU's replies may be (query-block
 * with a long backing chain is deeper than json-c's default). */
static struct json_object *parse_deep(const char *text)
{
	struct json_tokener *tok = json_tokener_new_ex(QMP_JSON_DEPTH);
	struct json_object *o = tok ? json_tokener_parse_ex(tok, text, -1) : NULL;

	if (o && json_tokener_get_error(tok) != json_tokener_success) {
		json_object_put(o);
		o = NULL;
	}
	json_tokener_free(tok);
	return o;
}

/* One command through the passthrough: libvirt matches the reply to the
 * request itself, so there are no ids to check and no events in between. */
static int pt_execute(struct qmp *q, const char *command, struct json_object *args,
		      const int *fds, unsigned nfds, struct json_object **ret)
{
	struct json_object *req = json_object_new_object(), *msg = NULL, *v;
	char *reply = NULL, why[256] = "";
	const char *text;
	int err = -ENOMEM;

	if (ret)
		*ret = NULL;
	if (!req || obj_add(req, "execute", json_object_new_string(command)) ||
	    (args && obj_add(req, "arguments", json_object_get(args))))
		goto out;
	text = json_object_to_json_string_ext(req, JSON_C_TO_STRING_PLAIN |
					      JSON_C_TO_STRING_NOSLASHESCAPE);
	err = q->pt.command(q->pt.ctx, text, fds, nfds, &reply, why, sizeof(why));
	if (err) {
		qmp_fail(q, err, "QMP command '%s' through %s failed: %s", command,
			 q->pt.what, why);
		goto out;
	}
	msg = reply ? parse_deep(reply) : NULL;
	if (!msg || !is_reply(msg)) {
		char shown[QMP_SNIPPET + 1];

		snippet(shown, reply ? reply : "", reply ? strlen(reply) : 0);
		err = qmp_fail(q, -EPROTO, "%s answered '%s' with no QMP reply: %s",
			       q->pt.what, command, shown);
		goto out;
	}
	if (json_object_object_get_ex(msg, "error", &v)) {
		err = remote_error(q, command, v);
		goto out;
	}
	json_object_object_get_ex(msg, "return", &v);
	if (ret)
		*ret = json_object_get(v);
	err = 0;
out:
	if (err == -ENOMEM && !why[0])
		qmp_fail(q, err, "out of memory for QMP command '%s'", command);
	json_object_put(msg);
	json_object_put(req);
	free(reply);
	return err;
}

int qmp_send(struct qmp *q, const char *command, struct json_object *args, int timeout_ms)
{
	if (q->passthrough)
		return pt_execute(q, command, args, NULL, 0, NULL);
	if (q->broken)
		return q->broken;
	q->sent_id = ++q->last_id;
	return send_command(q, command, args, q->sent_id, deadline_after(timeout_ms), -1);
}

/* Read until the replies to every command qmp_send sent have come:
 * events queued, the replies dropped (their errors logged). */
static int read_past_sent(struct qmp *q, long long deadline)
{
	struct json_object *msg;
	int err = 0;

	while (!err && q->sent_id > q->replied_id) {
		err = next_msg(q, deadline, &msg);
		if (err)
			break;
		if (is_event(msg)) {
			err = queue_event(q, msg);
		} else if (is_reply(msg)) {
			note_reply_id(q, msg);
			log_late_error(msg);
		} else {
			err = bad_message(q, "QMP peer sent neither a reply nor an event", msg);
		}
		json_object_put(msg);
	}
	return err;
}

int qmp_execute(struct qmp *q, const char *command, struct json_object *args,
		struct json_object **ret, int timeout_ms)
{
	if (q->passthrough)
		return pt_execute(q, command, args, NULL, 0, ret);
	return execute_until(q, command, args, ret, deadline_after(timeout_ms),
			     timeout_ms, -1);
}

/* Take one message the socket already holds, without waiting: an event
 * is queued, a late reply to a timed-out command dropped. 1 one taken, 0
 * nothing pending, or the error. */
static int absorb_one(struct qmp *q)
{
	struct json_object *msg;
	int err = next_msg(q, 0, &msg);

	if (err)
		return err == -ETIMEDOUT ? 0 : err;
	if (is_event(msg))
		err = queue_event(q, msg);
	else if (is_reply(msg)) {
		note_reply_id(q, msg);
		log_late_error(msg);
	}
	else
		err = bad_message(q, "QMP peer sent neither a reply nor an event", msg);
	json_object_put(msg);
	return err ? err : 1;
}

int qmp_execute_watch(struct qmp *q, const char *command, struct json_object *args,
		      const char *event, bool *seen, int timeout_ms)
{
	size_t mark, n;
	int err;

	*seen = false;
	if (q->passthrough)
		return qmp_fail(q, -ENOTSUP, "libvirt hands QEMU's events on apart from "
				"the replies: which came first is not known here");
	if (q->broken)
		return q->broken;
	/* What was sent before the command is not its doing; that includes
	 * the events of commands sent without waiting, which QEMU may still
	 * be running: an event while it does is not this command's. */
	while ((err = absorb_one(q)) > 0)
		;
	if (!err)
		err = read_past_sent(q, deadline_after(timeout_ms));
	if (err) {
		if (err == -ETIMEDOUT)
			qmp_fail(q, err, "QMP command '%s' not sent: the replies to earlier "
				 "commands did not come within %d ms", command, timeout_ms);
		return err;
	}
	mark = json_object_array_length(q->events);
	err = execute_until(q, command, args, NULL, deadline_after(timeout_ms), timeout_ms,
			    -1);
	n = json_object_array_length(q->events);
	for (size_t i = mark; !err && i < n; i++)
		if (!strcmp(member_string(json_object_array_get_idx(q->events, i), "event"),
			    event))
			*seen = true;
	return err;
}

int qmp_execute_with_fd(struct qmp *q, const char *command, struct json_object *args,
			int fd, struct json_object **ret, int timeout_ms)
{
	if (!q->passthrough)
		return execute_until(q, command, args, ret, deadline_after(timeout_ms),
				     timeout_ms, fd);
	return pt_execute(q, command, args, &fd, 1, ret);
}

int qmp_open_passthrough(const struct qmp_passthrough *pt, struct qmp **out)
{
	struct qmp *q = calloc(1, sizeof(*q));

	*out = q;
	if (!q)
		return -ENOMEM;
	q->fd = -1;
	q->pt = *pt;
	q->passthrough = true;
	q->peer_pid = pt->pid;
	q->events = json_object_new_array();
	return q->events ? 0 : -ENOMEM;
}

int qmp_push_event(struct qmp *q, const char *event, const char *data_json)
{
	struct json_object *msg = json_object_new_object();
	struct json_object *data = data_json ? parse_deep(data_json) : NULL;
	int err;

	if (!msg || obj_add(msg, "event", json_object_new_string(event))) {
		json_object_put(data);
		json_object_put(msg);
		return qmp_fail(q, -ENOMEM, "out of memory for QMP events");
	}
	/* obj_add drops data itself when it fails */
	if (data && obj_add(msg, "data", data)) {
		json_object_put(msg);
		return qmp_fail(q, -ENOMEM, "out of memory for QMP events");
	}
	err = queue_event(q, msg);
	json_object_put(msg);
	return err;
}

static void dispatch(struct json_object *msg, qmp_event_fn *fn, void *opaque)
{
	struct json_object *ev, *data = NULL;

	if (!fn)
		return;
	json_object_object_get_ex(msg, "event", &ev);
	json_object_object_get_ex(msg, "data", &data);
	fn(json_object_get_string(ev), data, opaque);
}

static struct json_object *queue_pop(struct qmp *q)
{
	struct json_object *msg;

	if (!json_object_array_length(q->events))
		return NULL;
	msg = json_object_get(json_object_array_get_idx(q->events, 0));
	json_object_array_del_idx(q->events, 0, 1);
	return msg;
}

static void dispatch_queue(struct qmp *q, qmp_event_fn *fn, void *opaque)
{
	struct json_object *msg;

	while ((msg = queue_pop(q))) {
		dispatch(msg, fn, opaque);
		json_object_put(msg);
	}
}

int qmp_read_events(struct qmp *q, qmp_event_fn *fn, void *opaque)
{
	int err;

	if (q->passthrough) {
		dispatch_queue(q, fn, opaque);
		return 0;
	}
	for (;;) {
		/* A handler may run commands, which queue events: keep the
		 * order QEMU sent them in. */
		dispatch_queue(q, fn, opaque);
		/* Input is still good after EOF (the socket may hold QEMU's
		 * last events) or after a command was cut off on its way out;
		 * not after garbage. */
		if (q->broken == -EPROTO)
			return q->broken;
		err = absorb_one(q);
		if (err <= 0)
			return err;
	}
}

static int qmp_new(int fd, struct qmp **out)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);
	struct qmp *q;
	int flags;

	q = calloc(1, sizeof(*q));
	if (!q)
		return -ENOMEM;
	q->fd = fd;
	q->peer_pid = -1;
	q->tok = json_tokener_new_ex(QMP_JSON_DEPTH);
	q->events = json_object_new_array();
	*out = q;
	if (!q->tok || !q->events)
		return qmp_fail(q, -ENOMEM, "out of memory for a QMP connection");
	flags = fcntl(fd, F_GETFL);
	if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0)
		return qmp_fail(q, -errno, "cannot make the QMP socket non-blocking: %s",
				strerror(errno));
	if (!getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) && cred.pid > 0)
		q->peer_pid = cred.pid;
	return 0;
}

static int read_greeting(struct qmp *q, long long deadline, int timeout_ms)
{
	struct json_object *msg = NULL;
	int err;

	/* An event first: one QEMU still had to write to the client before
	 * us (a replicator SIGKILLed amid a flood of BLOCK_JOB_ERROR from its
	 * mirror, whose target died with it), written to us instead. */
	while (!(err = next_msg(q, deadline, &msg)) && is_event(msg)) {
		json_object_put(msg);
		msg = NULL;
	}
	/* QEMU accepts a second client but greets it only when the first
	 * one leaves. */
	if (err == -ETIMEDOUT)
		return qmp_fail(q, err, "no QMP greeting within %d ms (is another client connected?)",
				timeout_ms);
	if (err)
		return err;
	if (!json_object_object_get_ex(msg, "QMP", NULL))
		err = bad_message(q, "QMP peer sent no greeting", msg);
	json_object_put(msg);
	return err;
}

static int attach_until(int fd, long long deadline, int timeout_ms, struct qmp **out)
{
	struct qmp *q = NULL;
	int err;

	*out = NULL;
	err = qmp_new(fd, &q);
	if (err)
		goto out;
	err = read_greeting(q, deadline, timeout_ms);
	if (err)
		goto out;
	err = execute_until(q, "qmp_capabilities", NULL, NULL, deadline, timeout_ms, -1);
out:
	if (err) {
		snprintf(connect_err, sizeof(connect_err), "%s",
			 q ? q->err : "out of memory for a QMP connection");
		if (q)
			qmp_close(q);
		else
			close(fd);
		return err;
	}
	*out = q;
	return 0;
}

int qmp_attach_fd(int fd, int timeout_ms, struct qmp **out)
{
	return attach_until(fd, deadline_after(timeout_ms), timeout_ms, out);
}

/* Unix sockets connect at once or fail with EAGAIN while the listener's
 * backlog is full: retry that until the deadline. */
static int connect_until(int fd, const struct sockaddr_un *sa, long long deadline)
{
	struct timespec pause = { 0, 10 * 1000 * 1000 };

	for (;;) {
		if (!connect(fd, (const struct sockaddr *)sa, sizeof(*sa)))
			return 0;
		if (errno == EISCONN)
			return 0;
		if (errno != EINTR && errno != EAGAIN)
			return -errno;
		if (errno == EAGAIN && now_ms() >= deadline)
			return -ETIMEDOUT;
		if (errno == EAGAIN)
			nanosleep(&pause, NULL);
	}
}

int qmp_connect(const char *path, int timeout_ms, struct qmp **out)
{
	long long deadline = deadline_after(timeout_ms);
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = -1, err;

	*out = NULL;
	if (strlen(path) >= sizeof(sa.sun_path)) {
		err = -ENAMETOOLONG;
		goto out;
	}
	strcpy(sa.sun_path, path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0) {
		err = -errno;
		goto out;
	}
	err = connect_until(fd, &sa, deadline);
	if (err)
		goto out;
	/* From here on attach_until owns fd and reports its own errors. */
	return attach_until(fd, deadline, timeout_ms, out);
out:
	snprintf(connect_err, sizeof(connect_err), "cannot connect to QMP socket %s: %s",
		 path, strerror(-err));
	if (fd >= 0)
		close(fd);
	return err;
}

const char *qmp_connect_error(void)
{
	return connect_err;
}

const char *qmp_last_error(const struct qmp *q)
{
	return q->err;
}

int qmp_fd(const struct qmp *q)
{
	return q->fd;
}

pid_t qmp_peer_pid(const struct qmp *q)
{
	return q->peer_pid;
}

void qmp_close(struct qmp *q)
{
	if (!q)
		return;
	if (q->fd >= 0)
		close(q->fd);
	if (q->passthrough && q->pt.close)
		q->pt.close(q->pt.ctx);
	if (q->tok)
		json_tokener_free(q->tok);
	json_object_put(q->events);
	free(q->buf);
	free(q);
}

int qmp_qom_get(struct qmp *q, const char *path, const char *property,
		struct json_object **ret, int timeout_ms)
{
	struct json_object *args = json_object_new_object();
	int rc;

	if (!args || obj_add(args, "path", json_object_new_string(path)) ||
	    obj_add(args, "property", json_object_new_string(property))) {
		json_object_put(args);
		return qmp_fail(q, -ENOMEM, "out of memory for qom-get");
	}
	rc = qmp_execute(q, "qom-get", args, ret, timeout_ms);
	json_object_put(args);
	return rc;
}

int qmp_hmp(struct qmp *q, const char *command_line, char **text, int timeout_ms)
{
	struct json_object *args = json_object_new_object(), *out = NULL;
	int rc;

	json_object_object_add(args, "command-line", json_object_new_string(command_line));
	rc = qmp_execute(q, "human-monitor-command", args, &out, timeout_ms);
	json_object_put(args);
	if (!rc && !json_object_is_type(out, json_type_string))
		rc = qmp_fail(q, -EBADMSG, "human-monitor-command returned %s, not text",
			      out ? json_object_get_string(out) : "null");
	else if (!rc) {
		*text = strdup(json_object_get_string(out));
		rc = *text ? 0 : -ENOMEM;
	}
	json_object_put(out);
	return rc;
}
