/* QMP client against a scripted fake QEMU (a forked child on the other end
 * of a socketpair) and, when it is installed, against a real QEMU. */
#include "log.h"
#include "qmp.h"

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define GREETING "{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 0, \"minor\": 2, " \
		 "\"major\": 7}, \"package\": \"\"}, \"capabilities\": [\"oob\"]}}\r\n"

typedef void peer_fn(int fd);

struct peer {
	pid_t pid;
	int fd; /* our end */
};

/* ---- the fake QEMU, run in the child ---- */

static void peer_fail(const char *what)
{
	fprintf(stderr, "fake QEMU: %s\n", what);
	_exit(1);
}

static void peer_send(int fd, const char *text)
{
	size_t len = strlen(text), off = 0;
	ssize_t n;

	while (off < len) {
		n = send(fd, text + off, len - off, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			_exit(errno == EPIPE || errno == ECONNRESET ? 0 : 1);
		off += n;
	}
}

static void peer_sendf(int fd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void peer_sendf(int fd, const char *fmt, ...)
{
	char buf[4096];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	peer_send(fd, buf);
}

/* Read one command line; check its name, return its id. Exits quietly
 * when the client has gone. */
static long long peer_read_cmd(int fd, const char *expect)
{
	/* what came after the last line read (commands sent without
	 * waiting arrive together) */
	static char line[2 << 20];
	static size_t len;
	struct json_object *cmd, *v;
	long long id = -1;
	char *nl;
	ssize_t n;

	while (!(nl = memchr(line, '\n', len))) {
		if (len == sizeof(line) - 1)
			peer_fail("command too long");
		n = read(fd, line + len, sizeof(line) - 1 - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			_exit(0);
		len += n;
	}
	*nl = '\0';
	cmd = json_tokener_parse(line);
	if (!cmd || !json_object_object_get_ex(cmd, "execute", &v) ||
	    strcmp(json_object_get_string(v), expect))
		peer_fail(line);
	if (json_object_object_get_ex(cmd, "id", &v))
		id = json_object_get_int64(v);
	json_object_put(cmd);
	len -= (size_t)(nl + 1 - line);
	memmove(line, nl + 1, len);
	return id;
}

static void peer_greet(int fd)
{
	long long id;

	peer_send(fd, GREETING);
	id = peer_read_cmd(fd, "qmp_capabilities");
	peer_sendf(fd, "{\"return\": {}, \"id\": %lld}\r\n", id);
}

static void msleep(int ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

/* Wait for the client to close its end. */
static void peer_wait_close(int fd)
{
	char c;

	while (read(fd, &c, 1) > 0 || errno == EINTR)
		;
}

/* ---- harness ---- */

static struct peer peer_start(peer_fn *fn)
{
	struct peer p;
	int sv[2];

	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
	p.pid = fork();
	ck_assert_int_ge(p.pid, 0);
	if (p.pid == 0) {
		close(sv[0]);
		fn(sv[1]);
		_exit(0);
	}
	close(sv[1]);
	p.fd = sv[0];
	return p;
}

static int peer_status(struct peer *p)
{
	int status;

	ck_assert_int_eq(waitpid(p->pid, &status, 0), p->pid);
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static struct qmp *attach_ok(struct peer *p)
{
	struct qmp *q = NULL;
	int ret;

	ret = qmp_attach_fd(p->fd, 2000, &q);
	ck_assert_msg(ret == 0, "attach: %d %s", ret, qmp_connect_error());
	return q;
}

static long long elapsed_ms(const struct timespec *t0)
{
	struct timespec t1;

	clock_gettime(CLOCK_MONOTONIC, &t1);
	return (t1.tv_sec - t0->tv_sec) * 1000LL + (t1.tv_nsec - t0->tv_nsec) / 1000000;
}

struct events {
	int n;
	char names[8][32];
	char data[8][128];
};

static void record_event(const char *event, struct json_object *data, void *opaque)
{
	struct events *ev = opaque;

	if (ev->n >= 8)
		return;
	snprintf(ev->names[ev->n], sizeof(ev->names[0]), "%s", event);
	snprintf(ev->data[ev->n], sizeof(ev->data[0]), "%s",
		 data ? json_object_to_json_string_ext(data, JSON_C_TO_STRING_PLAIN) : "-");
	ev->n++;
}

/* Read events until -EPIPE or the timeout. */
static int drain_events(struct qmp *q, struct events *ev, int timeout_ms)
{
	struct pollfd pfd = { .fd = qmp_fd(q), .events = POLLIN };
	struct timespec t0;
	int ret;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		ret = qmp_read_events(q, record_event, ev);
		if (ret)
			return ret;
		if (elapsed_ms(&t0) > timeout_ms)
			return -ETIMEDOUT;
		poll(&pfd, 1, 50);
	}
}

/* ---- happy path: events before the reply are queued ---- */

static void peer_happy(int fd)
{
	long long id;

	peer_greet(fd);
	id = peer_read_cmd(fd, "query-status");
	peer_send(fd, "{\"timestamp\": {\"seconds\": 1, \"microseconds\": 2}, \"event\": \"STOP\"}\r\n");
	peer_send(fd, "{\"timestamp\": {\"seconds\": 1, \"microseconds\": 3}, \"event\": "
		      "\"BLOCK_IO_ERROR\", \"data\": {\"device\": \"d0\"}}\r\n");
	peer_sendf(fd, "{\"return\": {\"status\": \"paused\", \"running\": false}, \"id\": %lld}\r\n", id);
	msleep(100);
	peer_send(fd, "{\"timestamp\": {\"seconds\": 2, \"microseconds\": 0}, \"event\": \"RESUME\"}\r\n");
	/* QEMU going away: the client sees -EPIPE. */
}

START_TEST(test_happy_path)
{
	struct peer p = peer_start(peer_happy);
	struct json_object *ret = NULL, *v;
	struct events ev = { 0 };
	struct qmp *q = attach_ok(&p);

	ck_assert_int_eq(qmp_peer_pid(q), getpid()); /* socketpair: its creator */
	ck_assert_int_eq(qmp_execute(q, "query-status", NULL, &ret, 2000), 0);
	ck_assert(json_object_object_get_ex(ret, "status", &v));
	ck_assert_str_eq(json_object_get_string(v), "paused");
	json_object_put(ret);

	/* The two events that came before the reply, in order, then RESUME
	 * from the socket, then the hangup. */
	ck_assert_int_eq(drain_events(q, &ev, 3000), -EPIPE);
	ck_assert_int_eq(ev.n, 3);
	ck_assert_str_eq(ev.names[0], "STOP");
	ck_assert_str_eq(ev.data[0], "-");
	ck_assert_str_eq(ev.names[1], "BLOCK_IO_ERROR");
	ck_assert_str_eq(ev.data[1], "{\"device\":\"d0\"}");
	ck_assert_str_eq(ev.names[2], "RESUME");
	ck_assert_str_eq(qmp_last_error(q), "QEMU closed the QMP socket");
	/* Sticky: the next command fails at once. */
	ck_assert_int_eq(qmp_execute(q, "cont", NULL, NULL, 2000), -EPIPE);
	qmp_close(q);
	ck_assert_int_eq(peer_status(&p), 0);
}
END_TEST

/* ---- execute_watch: an event between a command and its reply ---- */

#define STOP_EVENT "{\"timestamp\": {\"seconds\": 1, \"microseconds\": 2}, \"event\": \"STOP\"}\r\n"

static void peer_watch(int fd)
{
	long long id;

	peer_greet(fd);
	id = peer_read_cmd(fd, "stop"); /* paused a running VM */
	peer_send(fd, STOP_EVENT);
	peer_sendf(fd, "{\"return\": {}, \"id\": %lld}\r\n", id);
	id = peer_read_cmd(fd, "stop"); /* it was paused already */
	peer_sendf(fd, "{\"return\": {}, \"id\": %lld}\r\n", id);
	/* Someone else's stop, before the client's next command. */
	peer_send(fd, STOP_EVENT);
	id = peer_read_cmd(fd, "stop");
	peer_sendf(fd, "{\"return\": {}, \"id\": %lld}\r\n", id);
	id = peer_read_cmd(fd, "stop");
	peer_sendf(fd, "{\"error\": {\"class\": \"GenericError\", \"desc\": \"no\"}, "
		   "\"id\": %lld}\r\n", id);
	peer_wait_close(fd);
}

START_TEST(test_execute_watch)
{
	struct peer p = peer_start(peer_watch);
	struct qmp *q = attach_ok(&p);
	struct pollfd pfd = { .fd = qmp_fd(q), .events = POLLIN };
	struct events ev = { 0 };
	bool seen = true;

	ck_assert_int_eq(qmp_execute_watch(q, "stop", NULL, "STOP", &seen, 2000), 0);
	ck_assert(seen);
	ck_assert_int_eq(qmp_execute_watch(q, "stop", NULL, "STOP", &seen, 2000), 0);
	ck_assert(!seen);
	/* The stray STOP comes before the command goes out (the peer sends
	 * it right after the last reply; it may already sit in the client's
	 * buffer): it is not the command's doing. */
	poll(&pfd, 1, 200);
	msleep(100);
	ck_assert_int_eq(qmp_execute_watch(q, "stop", NULL, "STOP", &seen, 2000), 0);
	ck_assert(!seen);
	ck_assert_int_eq(qmp_execute_watch(q, "stop", NULL, "STOP", &seen, 2000), -EREMOTEIO);
	ck_assert(!seen);
	/* Every event is still handed out, in order. */
	ck_assert_int_eq(qmp_read_events(q, record_event, &ev), 0);
	ck_assert_int_eq(ev.n, 2);
	ck_assert_str_eq(ev.names[0], "STOP");
	ck_assert_str_eq(ev.names[1], "STOP");
	qmp_close(q);
	ck_assert_int_eq(peer_status(&p), 0);
}
END_TEST

/* ---- a file passed with a command on the socket (getfd) ---- */

/* Reads the getfd command with recvmsg, writes "ok" into the file that
 * came with it, and answers. */
static void peer_getfd(int fd)
{
	union { struct cmsghdr h; char buf[CMSG_SPACE(sizeof(int))]; } ctl;
	char line[512];
	struct iovec iov = { .iov_base = line, .iov_len = sizeof(line) - 1 };
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf,
			    .msg_controllen = sizeof(ctl.buf) };
	struct cmsghdr *c;
	struct json_object *cmd, *v;
	int got;
	ssize_t n;

	peer_greet(fd);
	n = recvmsg(fd, &m, 0);
	if (n <= 0)
		peer_fail("no command");
	line[n] = '\0';
	c = CMSG_FIRSTHDR(&m);
	if (!c || c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
		peer_fail("no file came with the command");
	memcpy(&got, CMSG_DATA(c), sizeof(int));
	if (write(got, "ok", 2) != 2)
		peer_fail("the file passed is not the pipe");
	close(got);
	cmd = json_tokener_parse(line);
	if (!cmd || !json_object_object_get_ex(cmd, "execute", &v) ||
	    strcmp(json_object_get_string(v), "getfd"))
		peer_fail(line);
	json_object_object_get_ex(cmd, "id", &v);
	peer_sendf(fd, "{\"return\": {}, \"id\": %lld}\r\n", (long long)json_object_get_int64(v));
	json_object_put(cmd);
	peer_wait_close(fd);
}

START_TEST(test_execute_with_fd_socket)
{
	struct peer p = peer_start(peer_getfd);
	struct qmp *q = attach_ok(&p);
	struct json_object *args = json_object_new_object();
	char buf[4] = "";
	int pipefd[2];

	ck_assert_int_eq(pipe(pipefd), 0);
	json_object_object_add(args, "fdname", json_object_new_string("x"));
	ck_assert_int_eq(qmp_execute_with_fd(q, "getfd", args, pipefd[1], NULL, 2000), 0);
	close(pipefd[1]);
	ck_assert_int_eq(read(pipefd[0], buf, sizeof(buf) - 1), 2);
	ck_assert_str_eq(buf, "ok");
	close(pipefd[0]);
	json_object_put(args);
	qmp_close(q);
	ck_assert_int_eq(peer_status(&p), 0);
}
END_TEST

/* ---- arguments reach QEMU; the reply's value is handed back ---- */

static void peer_args(int fd)
{
	static char line[4096];
	struct json_object *cmd, *args, *v;
	ssize_t n;

	peer_greet(fd);
	n = read(fd, line, sizeof(line) - 1);
	if (n <= 0)
		peer_fail("no command");
	line[n] = '\0';
	cmd = json_tokener_parse(line);
	if (!cmd || !json_object_object_get_ex(cmd, "arguments", &args) ||
	    !json_object_object_get_ex(args, "path", &v) ||
	    strcmp(json_object_get_string(v), "/machine/peripheral/x"))
		peer_fail(line);
	json_object_object_get_ex(cmd, "id", &v);
	peer_sendf(fd, "{\"return\": 42, \"id\": %lld}\r\n", (long long)json_object_get_int64(v));
	json_object_put(cmd);
	peer_wait_close(fd);
}

START_TEST(test_arguments)
{
	struct peer p = peer_start(peer_args);
	struct json_object *args = json_object_new_object(), *ret = NULL;
	struct qmp *q = attach_ok(&p);

	json_object_object_add(args, "path", json_object_new_string("/machine/peripheral/x"));
	json_object_object_add(args, "property", json_object_new_string("y"));
	ck_assert_int_eq(qmp_execute(q, "qom-get", args, &ret, 2000), 0);
	ck_assert_int_eq(json_object_get_int(ret), 42);
	/* args is not consumed */
	ck_assert_int_eq(json_object_object_length(args), 2);
	json_object_put(args);
	json_object_put(ret);
	qmp_close(q);
	ck_assert_int_eq(peer_status(&p), 0);
}
END_TEST

/* ---- error reply ---- */

static void peer_error(int fd)
{
	long long id;

	peer_greet(fd);
	id = peer_read_cmd(fd, "qom-get");
	peer_sendf(fd, "{\"id\": %lld, \"error\": {\"class\": \"GenericError\", "
		       "\"desc\": \"Property 'foo' not found\"}}\r\n", id);
	id = peer_read_cmd(fd, "stop");
	peer_sendf(fd, "{\"return\": {}, \"id\": %lld}\r\n", id);
	peer_wait_close(fd);
}

START_TEST(test_error_reply)
{
	struct peer p = peer_start(peer_error);
	struct json_object *ret = (struct json_object *)&ret;
	struct qmp *q = attach_ok(&p);

	ck_assert_int_eq(qmp_execute(q, "qom-get", NULL, &ret, 2000), -EREMOTEIO);
	ck_assert_ptr_null(ret);
	ck_assert_str_eq(qmp_last_error(q),
			 "QMP command 'qom-get' failed: GenericError: Property 'foo' not found");
	/* An error reply leaves the connection usable. */
	ck_assert_int_eq(qmp_execute(q, "stop", NULL, NULL, 2000), 0);
	qmp_close(q);
	ck_assert_int_eq(peer_status(&p), 0);
}
END_TEST

/* QEMU's HMP answer is text; a peer that says null (or anything else) is
 * refused, not passed on (it crashed strdup: found by fuzz_qmp), and the
 * connection, whose framing was fine, stays usable. */
static void peer_hmp_null(int fd)
{
	long long id;

	peer_greet(fd);
	id = peer_read_cmd(fd, "human-monitor-command");
	peer_sendf(fd, "{\"return\": null, \"id\": %lld}\r\n", id);
	id = peer_read_cmd(fd, "human-monitor-command");
	peer_sendf(fd, "{\"return\": \"info\\r\\n\", \"id\": %lld}\r\n", id);
	peer_wait_close(fd);
}

START_TEST(test_hmp_reply_not_text)
{
	struct peer p = peer_start(peer_hmp_null);
	struct qmp *q = attach_ok(&p);
	char *text = NULL;

	ck_assert_int_eq(qmp_hmp(q, "info ramblock", &text, 2000), -EBADMSG);
	ck_assert_ptr_null(text);
	ck_assert_ptr_nonnull(strstr(qmp_last_error(q), "not text"));
	ck_assert_int_eq(qmp_hmp(q, "info ramblock", &text, 2000), 0);
	ck_assert_str_eq(text, "info\r\n");
	free(text);
	qmp_close(q);
	ck_assert_int_eq(peer_status(&p), 0);
}
END_TEST

/* ---- garbage ---- */

static void peer_garbage(int fd)
{
	peer_greet(fd);
	peer_read_cmd(fd, "query-status");
	peer_send(fd, "this is not json at all, it goes on and on and on and on and on "
		      "and on for more than eighty characters\r\n");
	peer_wait_close(fd);
}

START_TEST(test_garbage)
{
	struct peer p = peer_start(peer_garbage);
	struct qmp *q = attach_ok(&p);

	ck_assert_int_eq(qmp_execute(q, "query-status", NULL, NULL, 2000), -EPROTO);
	ck_assert_str_eq(qmp_last_error(q), "QMP peer sent invalid JSON: this is not json at "
			 "all, it goes on and on and on and on and on and on for more ");
	ck_assert_int_eq(qmp_execute(q, "query-status", NULL, NULL, 2000), -EPROTO);
	ck_assert_int_eq(qmp_read_events(q, NULL, NULL), -EPROTO);
	qmp_close(q);
	ck_assert_int_eq(peer_status(&p), 0);
}
END_TEST

static void peer_not_reply(int fd)
{
	peer_greet(fd);
	peer_read_cmd(fd, "query-status");
	peer_send(fd, "{\"id\": 2, \"something\": true}\r\n");
	peer_wait_close(fd);
}

START_TEST(test_neither_reply_nor_event)
{
	struct peer p = peer_start(peer_not_reply);
	struct qmp *q = attach_ok(&p);

	ck_assert_int_eq(qmp_execute(q, "query-status", NULL, NULL, 2000), -EPROTO);
	ck_assert_str_eq(qmp_last_error(q), "QMP peer sent neither a reply nor an event: "
			 "{\"id\":2,\"something\":true}");
	qmp_close(q);
	ck_assert_int_eq(peer_status(&p), 0);
}
END_TEST

static void peer_array(int fd)
{
	peer_greet(fd);
	peer_read_cmd(fd, "query-status");
	peer_send(fd, "[1, 2]\r\n");
	peer_wait_close(fd);
}

START_TEST(test_not_an_object)
{
	struct peer p = peer_start(peer_array);
	struct qmp *q = attach_ok(&p);

	ck_assert_int_eq(qmp_execute(q, "query-status", NULL, NULL, 2000), -EPROTO);
	ck_assert_str_eq(qmp_last_error(q), "QMP peer sent JSON that is not an object: [1, 2]");
	qmp_close(q);
	ck_assert_int_eq(peer_status(&p), 0);
}
END_TEST

/* ---- disconnect in the middle of a reply ---- */

static void peer_hangup(int fd)
{
	peer_greet(fd);
	peer_read_cmd(fd, "query-status");
	peer_send(fd, "{\"return\": {\"status\": \"runn");
}

START_TEST(test_disconnect_mid_reply)
{
	struct peer p = peer_start(peer_hangup);
	struct qmp *q = attach_ok(&p);

	ck_assert_int_eq(qmp_execute(q, "query-status", NULL, NULL, 2000), -EPIPE);
	ck_assert_str_eq(qmp_last_error(q), "QEMU closed the QMP socket");
	ck_assert_int_eq(qmp_read_events(q, NULL, NULL), -EPIPE);
	qmp_close(q);
	ck_assert_int_eq(peer_status(&p), 0);
}
END_TEST

/* ---- no answer: timeout, and the late reply is skipped later ---- */

static void peer_late(int fd)
{
	long long id;

	peer_greet(fd);
	id = peer_read_cmd(fd, "stop");
	msleep(600);
	peer_sendf(fd, "{\"return\": {\"late\": true}, \"id\": %lld}\r\n", id);
	id = peer_read_cmd(fd, "query-status");
	peer_sendf(fd, "{\"return\": {\"status\": \"paused\"}, \"id\": %lld}\r\n", id);
	peer_wait_close(fd);
}

START_TEST(test_timeout_then_stale_reply)
{
	struct peer p = peer_start(peer_late);
	struct json_object *ret = NULL, *v;
	struct qmp *q = attach_ok(&p);
	struct timespec t0;
	long long ms;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	ck_assert_int_eq(qmp_execute(q, "stop", NULL, NULL, 200), -ETIMEDOUT);
	ms = elapsed_ms(&t0);
	ck_assert_msg(ms >= 190 && ms < 550, "timed out after %lld ms", ms);
	ck_assert_str_eq(qmp_last_error(q), "QMP command 'stop' timed out after 200 ms");

	ck_assert_int_eq(qmp_execute(q, "query-status", NULL, &ret, 2000), 0);
	ck_assert(json_object_object_get_ex(ret, "status", &v));
	ck_assert_str_eq(json_object_get_string(v), "paused");
	json_object_put(ret);
	qmp_close(q);
	ck_assert_int_eq(peer_status(&p), 0);
}
END_TEST

static void peer_wrong_id(int fd)
{
	long long id;

	peer_greet(fd);
	id = peer_read_cmd(fd, "query-status");
	peer_sendf(fd, "{\"return\": {\"status\": \"stale\"}, \"id\": %lld}\r\n", id - 1);
	peer_send(fd, "{\"return\": {\"status\": \"alien\"}, \"id\": \"libvirt-7\"}\r\n");
	peer_sendf(fd, "{\"return\": {\"status\": \"running\"}, \"id\": %lld}\r\n", id);
	peer_wait_close(fd);
}

START_TEST(test_wrong_id_skipped)
{
	struct peer p = peer_start(peer_wrong_id);
	struct json_object *ret = NULL, *v;
	struct qmp *q = attach_ok(&p);

	ck_assert_int_eq(qmp_execute(q, "query-status", NULL, &ret, 2000), 0);
	ck_assert(json_object_object_get_ex(ret, "status", &v));
	ck_assert_str_eq(json_object_get_string(v), "running");
	json_object_put(ret);
	qmp_close(q);
	ck_assert_int_eq(peer_status(&p), 0);
}
END_TEST

/* ---- qmp_send: no wait for the reply; the next command reads past it ---- */

static void peer_sent(int fd)
{
	long long del, rm, st;

	peer_greet(fd);
	del = peer_read_cmd(fd, "block-export-del");
	rm = peer_read_cmd(fd, "block-dirty-bitmap-remove");
	msleep(300); /* QEMU busy: the sender must not have waited */
	peer_sendf(fd, "{\"error\": {\"class\": \"GenericError\", \"desc\": \"Bitmap 'b7' "
		   "is currently in use\"}, \"id\": %lld}\r\n", rm);
	peer_sendf(fd, "{\"return\": {}, \"id\": %lld}\r\n", del);
	peer_send(fd, "{\"event\": \"BLOCK_EXPORT_DELETED\", \"data\": {\"id\": \"e7\"}}\r\n");
	st = peer_read_cmd(fd, "query-status");
	peer_sendf(fd, "{\"return\": {\"status\": \"running\"}, \"id\": %lld}\r\n", st);
	peer_wait_close(fd);
}

static void count_export_deleted(const char *event, struct json_object *data, void *opaque)
{
	if (!strcmp(event, "BLOCK_EXPORT_DELETED"))
		++*(int *)opaque;
}

START_TEST(test_send_without_waiting)
{
	struct peer p = peer_start(peer_sent);
	struct json_object *ret = NULL, *v;
	struct qmp *q = attach_ok(&p);
	char path[] = "/tmp/check_qmp_log.XXXXXX", logged[1024] = "";
	int saved = dup(STDERR_FILENO), log_fd = mkstemp(path), events = 0;
	struct timespec t0;
	long long ms;
	ssize_t n;

	ck_assert_int_ge(log_fd, 0);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	ck_assert_int_eq(qmp_send(q, "block-export-del", NULL, 2000), 0);
	ck_assert_int_eq(qmp_send(q, "block-dirty-bitmap-remove", NULL, 2000), 0);
	ms = elapsed_ms(&t0);
	ck_assert_msg(ms < 150, "qmp_send waited %lld ms", ms);
	/* the next command gets its own reply, past the two earlier ones; the
	 * error among them is logged, the event kept */
	dup2(log_fd, STDERR_FILENO);
	log_set_level(LOG_WARNING);
	ck_assert_int_eq(qmp_execute(q, "query-status", NULL, &ret, 2000), 0);
	log_set_level(LOG_INFO);
	dup2(saved, STDERR_FILENO);
	close(saved);
	ck_assert(json_object_object_get_ex(ret, "status", &v));
	ck_assert_str_eq(json_object_get_string(v), "running");
	json_object_put(ret);
	n = pread(log_fd, logged, sizeof(logged) - 1, 0);
	close(log_fd);
	unlink(path);
	ck_assert_int_gt(n, 0);
	ck_assert_msg(strstr(logged, "whose reply nobody waited for, failed: GenericError: "
			     "Bitmap 'b7' is currently in use"), "logged: %s", logged);
	ck_assert_int_eq(qmp_read_events(q, count_export_deleted, &events), 0);
	ck_assert_int_eq(events, 1);
	qmp_close(q);
	ck_assert_int_eq(peer_status(&p), 0);
}
END_TEST

/* A STOP that comes while QEMU still runs a command sent without waiting
 * (a guest panic, an I/O error with werror=stop) is not the next stop's. */
static void peer_stop_while_sent(int fd)
{
	long long del, st;

	peer_greet(fd);
	del = peer_read_cmd(fd, "block-export-del");
	msleep(200);
	peer_send(fd, "{\"event\": \"STOP\"}\r\n");
	peer_sendf(fd, "{\"return\": {}, \"id\": %lld}\r\n", del);
	st = peer_read_cmd(fd, "stop");
	peer_sendf(fd, "{\"return\": {}, \"id\": %lld}\r\n", st); /* paused already */
	peer_wait_close(fd);
}

START_TEST(test_watch_reads_past_sent)
{
	struct peer p = peer_start(peer_stop_while_sent);
	struct qmp *q = attach_ok(&p);
	bool seen = true;

	ck_assert_int_eq(qmp_send(q, "block-export-del", NULL, 2000), 0);
	ck_assert_int_eq(qmp_execute_watch(q, "stop", NULL, "STOP", &seen, 2000), 0);
	ck_assert_msg(!seen, "a STOP from before the stop was taken for its own");
	qmp_close(q);
	ck_assert_int_eq(peer_status(&p), 0);
}
END_TEST

/* ---- handshake failures ---- */

static void peer_not_qmp(int fd)
{
	peer_send(fd, "{\"hello\": \"world\"}\r\n");
	peer_wait_close(fd);
}

START_TEST(test_greeting_not_qmp)
{
	struct peer p = peer_start(peer_not_qmp);
	struct qmp *q = (struct qmp *)&q;

	ck_assert_int_eq(qmp_attach_fd(p.fd, 2000, &q), -EPROTO);
	ck_assert_ptr_null(q);
	ck_assert_str_eq(qmp_connect_error(), "QMP peer sent no greeting: {\"hello\":\"world\"}");
	ck_assert_int_eq(peer_status(&p), 0);
}
END_TEST

/* QEMU writes to a new client the events it had not written to the one
 * before (SIGKILLed amid a flood of them), and only then greets it. */
static void peer_events_first(int fd)
{
	for (int i = 0; i < 500; i++)
		peer_send(fd, "{\"timestamp\": {\"seconds\": 1, \"microseconds\": 2}, \"event\": "
			  "\"BLOCK_JOB_ERROR\", \"data\": {\"device\": \"remus-mirror0-1\", "
			  "\"operation\": \"write\", \"action\": \"ignore\"}}\r\n");
	peer_greet(fd);
	peer_wait_close(fd);
}

START_TEST(test_greeting_after_events)
{
	struct peer p = peer_start(peer_events_first);
	struct qmp *q = NULL;

	ck_assert_int_eq(qmp_attach_fd(p.fd, 2000, &q), 0);
	ck_assert_ptr_nonnull(q);
	qmp_close(q);
	ck_assert_int_eq(peer_status(&p), 0);
}
END_TEST

/* An HMP monitor socket greets with its banner. */
static void peer_hmp(int fd)
{
	peer_send(fd, "QEMU 7.2.0 monitor - type 'help' for more information\r\n(qemu) ");
	peer_wait_close(fd);
}

START_TEST(test_greeting_hmp)
{
	struct peer p = peer_start(peer_hmp);
	struct qmp *q = NULL;

	ck_assert_int_eq(qmp_attach_fd(p.fd, 2000, &q), -EPROTO);
	ck_assert_str_eq(qmp_connect_error(), "QMP peer sent invalid JSON: "
			 "QEMU 7.2.0 monitor - type 'help' for more information");
	ck_assert_int_eq(peer_status(&p), 0);
}
END_TEST

static void peer_silent(int fd)
{
	peer_wait_close(fd);
}

START_TEST(test_no_greeting)
{
	struct peer p = peer_start(peer_silent);
	struct qmp *q = NULL;

	ck_assert_int_eq(qmp_attach_fd(p.fd, 200, &q), -ETIMEDOUT);
	ck_assert_str_eq(qmp_connect_error(),
			 "no QMP greeting within 200 ms (is another client connected?)");
	ck_assert_int_eq(peer_status(&p), 0);
}
END_TEST

static void peer_caps_refused(int fd)
{
	long long id;

	peer_send(fd, GREETING);
	id = peer_read_cmd(fd, "qmp_capabilities");
	peer_sendf(fd, "{\"id\": %lld, \"error\": {\"class\": \"CommandNotFound\", "
		       "\"desc\": \"Capabilities negotiation is already complete\"}}\r\n", id);
	peer_wait_close(fd);
}

START_TEST(test_capabilities_refused)
{
	struct peer p = peer_start(peer_caps_refused);
	struct qmp *q = NULL;

	ck_assert_int_eq(qmp_attach_fd(p.fd, 2000, &q), -EREMOTEIO);
	ck_assert_str_eq(qmp_connect_error(), "QMP command 'qmp_capabilities' failed: "
			 "CommandNotFound: Capabilities negotiation is already complete");
	ck_assert_int_eq(peer_status(&p), 0);
}
END_TEST

START_TEST(test_connect_no_socket)
{
	struct qmp *q = NULL;

	ck_assert_int_eq(qmp_connect("/nonexistent/qmp.sock", 200, &q), -ENOENT);
	ck_assert_ptr_null(q);
	ck_assert_str_eq(qmp_connect_error(), "cannot connect to QMP socket "
			 "/nonexistent/qmp.sock: No such file or directory");
}
END_TEST

/* ---- an over-long line ---- */

static void peer_long_line(int fd)
{
	static char chunk[1 << 16];

	peer_greet(fd);
	peer_read_cmd(fd, "query-status");
	memset(chunk, 'a', sizeof(chunk) - 1);
	peer_send(fd, "{\"return\": \"");
	/* peer_send exits quietly once the client gives up and closes. */
	for (;;)
		peer_send(fd, chunk);
}

START_TEST(test_long_line)
{
	struct peer p = peer_start(peer_long_line);
	struct qmp *q = attach_ok(&p);

	ck_assert_int_eq(qmp_execute(q, "query-status", NULL, NULL, 5000), -EPROTO);
	ck_assert_str_eq(qmp_last_error(q), "QMP peer sent a line longer than 16777216 bytes");
	qmp_close(q);
	ck_assert_int_eq(peer_status(&p), 0);
}
END_TEST

/* ---- a reply spread over lines (-qmp-pretty), two messages per read ---- */

static void peer_pretty(int fd)
{
	long long id;

	peer_greet(fd);
	id = peer_read_cmd(fd, "query-status");
	peer_sendf(fd, "{\"event\": \"STOP\"}\r\n{\n    \"return\": {\n        \"status\": "
		       "\"paused\"\n    },\n    \"id\": %lld\n}\n", id);
	peer_wait_close(fd);
}

START_TEST(test_pretty_reply)
{
	struct peer p = peer_start(peer_pretty);
	struct json_object *ret = NULL, *v;
	struct events ev = { 0 };
	struct qmp *q = attach_ok(&p);

	ck_assert_int_eq(qmp_execute(q, "query-status", NULL, &ret, 2000), 0);
	ck_assert(json_object_object_get_ex(ret, "status", &v));
	ck_assert_str_eq(json_object_get_string(v), "paused");
	json_object_put(ret);
	ck_assert_int_eq(qmp_read_events(q, record_event, &ev), 0);
	ck_assert_int_eq(ev.n, 1);
	ck_assert_str_eq(ev.names[0], "STOP");
	qmp_close(q);
	ck_assert_int_eq(peer_status(&p), 0);
}
END_TEST

/* ---- a command bigger than the socket buffer: partial writes ---- */

#define BIG_ARG (4u << 20)

static void peer_big(int fd)
{
	static char line[2 << 20];
	size_t total = 0;
	ssize_t n;

	peer_greet(fd);
	/* Read slowly so that the client sees short writes. */
	msleep(100);
	for (;;) {
		n = read(fd, line, sizeof(line));
		if (n <= 0)
			peer_fail("client closed");
		total += n;
		if (line[n - 1] == '\n')
			break;
	}
	if (total < BIG_ARG)
		peer_fail("short command");
	peer_send(fd, "{\"return\": {}, \"id\": 2}\r\n");
	peer_wait_close(fd);
}

START_TEST(test_big_command)
{
	struct peer p = peer_start(peer_big);
	struct json_object *args = json_object_new_object();
	struct qmp *q = attach_ok(&p);
	char *s = malloc(BIG_ARG + 1);

	ck_assert_ptr_nonnull(s);
	memset(s, 'x', BIG_ARG);
	s[BIG_ARG] = '\0';
	json_object_object_add(args, "data", json_object_new_string(s));
	free(s);
	ck_assert_int_eq(qmp_execute(q, "guest-file-write", args, NULL, 5000), 0);
	json_object_put(args);
	qmp_close(q);
	ck_assert_int_eq(peer_status(&p), 0);
}
END_TEST

/* ---- signals interrupting the wait ---- */

static void on_alarm(int sig)
{
}

static void peer_slow(int fd)
{
	long long id;

	peer_greet(fd);
	id = peer_read_cmd(fd, "stop");
	msleep(300);
	peer_sendf(fd, "{\"return\": {}, \"id\": %lld}\r\n", id);
	peer_wait_close(fd);
}

START_TEST(test_eintr)
{
	struct itimerval it = { { 0, 10000 }, { 0, 10000 } };
	struct sigaction sa = { .sa_handler = on_alarm }; /* no SA_RESTART */
	struct peer p = peer_start(peer_slow);
	struct qmp *q = attach_ok(&p);
	struct timespec t0;

	ck_assert_int_eq(sigaction(SIGALRM, &sa, NULL), 0);
	ck_assert_int_eq(setitimer(ITIMER_REAL, &it, NULL), 0);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	ck_assert_int_eq(qmp_execute(q, "stop", NULL, NULL, 2000), 0);
	ck_assert_int_ge(elapsed_ms(&t0), 290);
	memset(&it, 0, sizeof(it));
	setitimer(ITIMER_REAL, &it, NULL);
	qmp_close(q);
	ck_assert_int_eq(peer_status(&p), 0);
}
END_TEST

/* ---- a real QEMU ---- */

static int find_in_path(const char *prog, char *out, size_t size)
{
	const char *path = getenv("PATH");
	char *dirs, *dir, *save = NULL;
	int found = 0;

	dirs = strdup(path ? path : "/usr/bin:/bin");
	ck_assert_ptr_nonnull(dirs);
	for (dir = strtok_r(dirs, ":", &save); dir && !found; dir = strtok_r(NULL, ":", &save)) {
		snprintf(out, size, "%s/%s", dir, prog);
		found = access(out, X_OK) == 0;
	}
	free(dirs);
	return found;
}

static pid_t start_qemu(const char *qemu, const char *sock)
{
	char qmp[PATH_MAX + 32];
	pid_t pid;
	int null;

	snprintf(qmp, sizeof(qmp), "unix:%s,server=on,wait=off", sock);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid)
		return pid;
	/* If this test dies, QEMU must not outlive it. */
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	null = open("/dev/null", O_RDWR);
	dup2(null, 0);
	dup2(null, 1);
	execl(qemu, qemu, "-accel", "tcg", "-machine", "pc", "-m", "64M", "-nodefaults",
	      "-vga", "none", "-display", "none", "-qmp", qmp, "-S", (char *)NULL);
	_exit(127);
}

static struct qmp *connect_retry(const char *sock, pid_t pid)
{
	struct qmp *q = NULL;
	int ret = -ENOENT, i, status;

	for (i = 0; i < 200 && ret; i++) {
		ck_assert_msg(waitpid(pid, &status, WNOHANG) == 0, "QEMU exited early");
		ret = qmp_connect(sock, 2000, &q);
		if (ret == -ENOENT || ret == -ECONNREFUSED)
			msleep(50);
	}
	ck_assert_msg(ret == 0, "connect: %s", qmp_connect_error());
	return q;
}

START_TEST(test_real_qemu)
{
	char qemu[PATH_MAX], dir[] = "/tmp/check_qmp.XXXXXX", sock[PATH_MAX];
	struct json_object *ret = NULL, *v;
	struct events ev = { 0 };
	struct qmp *q;
	bool seen;
	int status;
	pid_t pid;

	if (!find_in_path("qemu-system-x86_64", qemu, sizeof(qemu))) {
		fprintf(stderr, "test_real_qemu: qemu-system-x86_64 not found, skipped\n");
		return;
	}
	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(sock, sizeof(sock), "%s/q.sock", dir);
	pid = start_qemu(qemu, sock);
	q = connect_retry(sock, pid);

	ck_assert_int_eq(qmp_peer_pid(q), pid);
	ck_assert_int_eq(qmp_execute(q, "query-status", NULL, &ret, 5000), 0);
	ck_assert(json_object_object_get_ex(ret, "status", &v));
	ck_assert_str_eq(json_object_get_string(v), "prelaunch");
	json_object_put(ret);

	ck_assert_int_eq(qmp_execute(q, "qom-get", NULL, NULL, 5000), -EREMOTEIO);
	ck_assert_msg(strncmp(qmp_last_error(q), "QMP command 'qom-get' failed: GenericError: ", 44) == 0,
		      "%s", qmp_last_error(q));

	/* What the replicator's barrier relies on: `stop` sends STOP before
	 * its reply when it pauses a running VM, and nothing when the VM is
	 * not running (here first in prelaunch, then paused). */
	ck_assert_int_eq(qmp_execute_watch(q, "stop", NULL, "STOP", &seen, 5000), 0);
	ck_assert(!seen);
	ck_assert_int_eq(qmp_execute(q, "cont", NULL, NULL, 5000), 0);
	for (int i = 0; i < 20; i++) {
		ck_assert_int_eq(qmp_execute_watch(q, "stop", NULL, "STOP", &seen, 5000), 0);
		ck_assert_msg(seen, "round %d: no STOP before the reply", i);
		ck_assert_int_eq(qmp_execute_watch(q, "stop", NULL, "STOP", &seen, 5000), 0);
		ck_assert(!seen);
		ck_assert_int_eq(qmp_execute(q, "cont", NULL, NULL, 5000), 0);
	}
	ck_assert_int_eq(qmp_read_events(q, NULL, NULL), 0);

	/* QEMU sends SHUTDOWN before the reply to quit, then resets the
	 * connection. */
	ck_assert_int_eq(qmp_execute(q, "quit", NULL, NULL, 5000), 0);
	ck_assert_int_eq(drain_events(q, &ev, 5000), -EPIPE);
	ck_assert_int_eq(ev.n, 1);
	ck_assert_str_eq(ev.names[0], "SHUTDOWN");
	ck_assert_str_eq(ev.data[0], "{\"guest\":false,\"reason\":\"host-qmp-quit\"}");
	qmp_close(q);

	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	unlink(sock);
	rmdir(dir);
}
END_TEST

/* --- the libvirt passthrough transport, with a scripted fake libvirt */
struct fake_pt { const char *reply; int rc; char last_request[512]; int last_fd; };

static int fake_command(void *ctx, const char *request, const int *fds, unsigned nfds,
			char **reply, char *why, size_t whylen)
{
	struct fake_pt *f = ctx;

	snprintf(f->last_request, sizeof(f->last_request), "%s", request);
	f->last_fd = nfds ? fds[0] : -1;
	if (f->rc) {
		snprintf(why, whylen, "fake libvirt says no");
		return f->rc;
	}
	*reply = strdup(f->reply);
	return 0;
}

static struct qmp *fake_open(struct fake_pt *f)
{
	struct qmp_passthrough pt = { .command = fake_command, .ctx = f, .what = "fake", .pid = 42 };
	struct qmp *q = NULL;

	ck_assert_int_eq(qmp_open_passthrough(&pt, &q), 0);
	ck_assert_int_eq(qmp_fd(q), -1);
	ck_assert_int_eq(qmp_peer_pid(q), 42);
	return q;
}

START_TEST(test_passthrough_replies)
{
	struct fake_pt f = { .reply = "{\"return\": {\"status\": \"running\"}, \"id\": \"libvirt-7\"}" };
	struct qmp *q = fake_open(&f);
	struct json_object *ret = NULL, *v;

	ck_assert_int_eq(qmp_execute(q, "query-status", NULL, &ret, 1000), 0);
	ck_assert_str_eq(f.last_request, "{\"execute\":\"query-status\"}");
	ck_assert(json_object_object_get_ex(ret, "status", &v));
	ck_assert_str_eq(json_object_get_string(v), "running");
	json_object_put(ret);
	f.reply = "{\"error\": {\"class\": \"GenericError\", \"desc\": \"no\"}}";
	ck_assert_int_eq(qmp_execute(q, "stop", NULL, NULL, 1000), -EREMOTEIO);
	ck_assert_ptr_nonnull(strstr(qmp_last_error(q), "GenericError"));
	ck_assert_int_eq(qmp_execute_with_fd(q, "getfd", NULL, 5, NULL, 1000), -EREMOTEIO);
	ck_assert_int_eq(f.last_fd, 5);
	qmp_close(q);
}
END_TEST

START_TEST(test_passthrough_garbage_and_failure)
{
	static const char *const bad[] = { "", "not json", "[1,2]", "{\"neither\": 1}" };
	struct fake_pt f = { 0 };
	struct qmp *q = fake_open(&f);

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		f.reply = bad[i];
		ck_assert_msg(qmp_execute(q, "cont", NULL, NULL, 1000) == -EPROTO, "took '%s'", bad[i]);
	}
	f.rc = -EPIPE;
	ck_assert_int_eq(qmp_execute(q, "cont", NULL, NULL, 1000), -EPIPE);
	ck_assert_ptr_nonnull(strstr(qmp_last_error(q), "fake libvirt says no"));
	qmp_close(q);
}
END_TEST

static void count_event(const char *event, struct json_object *data, void *opaque)
{
	struct json_object *reason;

	if (!strcmp(event, "SHUTDOWN") && json_object_object_get_ex(data, "reason", &reason) &&
	    !strcmp(json_object_get_string(reason), "guest-shutdown"))
		(*(int *)opaque)++;
}

START_TEST(test_passthrough_events_pushed)
{
	struct fake_pt f = { 0 };
	struct qmp *q = fake_open(&f);
	int n = 0;

	ck_assert_int_eq(qmp_push_event(q, "SHUTDOWN", "{\"guest\": true, \"reason\": \"guest-shutdown\"}"), 0);
	ck_assert_int_eq(qmp_push_event(q, "STOP", NULL), 0);
	ck_assert_int_eq(qmp_read_events(q, count_event, &n), 0);
	ck_assert_int_eq(n, 1);
	ck_assert_int_eq(qmp_read_events(q, count_event, &n), 0);
	ck_assert_int_eq(n, 1);
	qmp_close(q);
}
END_TEST

static void add(Suite *s, const char *name, const TTest *test, int timeout)
{
	TCase *tc = tcase_create(name);

	tcase_set_timeout(tc, timeout);
	tcase_add_test(tc, test);
	suite_add_tcase(s, tc);
}

static Suite *qmp_suite(void)
{
	Suite *s = suite_create("qmp");

	add(s, "happy_path", test_happy_path, 10);
	add(s, "execute_watch", test_execute_watch, 10);
	add(s, "arguments", test_arguments, 10);
	add(s, "execute_with_fd_socket", test_execute_with_fd_socket, 10);
	add(s, "error_reply", test_error_reply, 10);
	add(s, "hmp_reply_not_text", test_hmp_reply_not_text, 10);
	add(s, "garbage", test_garbage, 10);
	add(s, "neither_reply_nor_event", test_neither_reply_nor_event, 10);
	add(s, "not_an_object", test_not_an_object, 10);
	add(s, "disconnect_mid_reply", test_disconnect_mid_reply, 10);
	add(s, "timeout_then_stale_reply", test_timeout_then_stale_reply, 10);
	add(s, "wrong_id_skipped", test_wrong_id_skipped, 10);
	add(s, "greeting_not_qmp", test_greeting_not_qmp, 10);
	add(s, "greeting_hmp", test_greeting_hmp, 10);
	add(s, "greeting_after_events", test_greeting_after_events, 10);
	add(s, "no_greeting", test_no_greeting, 10);
	add(s, "capabilities_refused", test_capabilities_refused, 10);
	add(s, "connect_no_socket", test_connect_no_socket, 10);
	add(s, "long_line", test_long_line, 30);
	add(s, "pretty_reply", test_pretty_reply, 10);
	add(s, "big_command", test_big_command, 30);
	add(s, "eintr", test_eintr, 10);
	add(s, "send_without_waiting", test_send_without_waiting, 10);
	add(s, "watch_reads_past_sent", test_watch_reads_past_sent, 10);
	add(s, "real_qemu", test_real_qemu, 60);
	add(s, "passthrough_replies", test_passthrough_replies, 10);
	add(s, "passthrough_garbage_and_failure", test_passthrough_garbage_and_failure, 10);
	add(s, "passthrough_events_pushed", test_passthrough_events_pushed, 10);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(qmp_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
