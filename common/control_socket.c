/* The daemons' control socket: setup, the peer check, the reply framing
 * (control_socket.h). */
#include "control_socket.h"

#include "clock.h"
#include "log.h"

#include <errno.h>
#include <grp.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

void control_socket_init(struct control_socket *cs, const char *daemon, const char *path,
			 const char *group, gid_t gid, control_handler handler, void *data)
{
	*cs = (struct control_socket){
		.daemon = daemon,
		.path = path,
		.group = group,
		.gid = group ? gid : (gid_t)-1,
		.handler = handler,
		.data = data,
		.fd = -1,
	};
}

/* Who may use the socket: root, and the members of the control group. The
 * socket's mode says as much already; this holds even if its mode or the
 * directory around it are not what we made them. */
static bool in_group(int fd, gid_t want, gid_t primary)
{
	gid_t groups[256];
	socklen_t len = sizeof(groups);

	if (primary == want)
		return true;
	/* the peer's supplementary groups, as they were at connect() */
	if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups, &len) < 0)
		return false;
	for (size_t i = 0; i < len / sizeof(gid_t); i++)
		if (groups[i] == want)
			return true;
	return false;
}

bool control_peer_allowed(const struct control_socket *cs, int fd, const char *cmd, uid_t *uid)
{
	const char *group = cs->group;
	struct ucred cred;
	socklen_t len = sizeof(cred);

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) {
		log_warn("control socket: refused '%.40s': cannot tell who asks: %s", cmd,
			 strerror(errno));
		*uid = (uid_t)-1;
		return false;
	}
	*uid = cred.uid;
	if (cred.uid == 0 || (group && in_group(fd, cs->gid, cred.gid)))
		return true;
	log_warn("control socket: refused '%.40s' from uid %u (pid %d): not root%s%s", cmd,
		 (unsigned)cred.uid, (int)cred.pid, group ? " nor in group " : "", group ? group : "");
	return false;
}

char *control_refusal(const struct control_socket *cs, uid_t uid)
{
	const char *group = cs->group;
	char *text;

	if (uid == (uid_t)-1) {
		if (asprintf(&text, "{\"ok\":false,\"refused\":true,\"daemon\":\"%s\",\"error\":"
			     "\"permission denied: cannot tell who asks\"}", cs->daemon) < 0)
			return NULL;
		return text;
	}
	if (asprintf(&text, "{\"ok\":false,\"refused\":true,\"daemon\":\"%s\",\"error\":"
		     "\"permission denied: uid %u is not root%s%s\"}", cs->daemon, (unsigned)uid,
		     group ? " nor in group " : "", group ? group : "") < 0)
		return NULL;
	return text;
}

void control_reply(int fd, const char *text)
{
	struct timeval tv = { .tv_sec = 0, .tv_usec = 200000 };
	size_t len = strlen(text), off = 0;

	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	while (off < len) {
		ssize_t n = send(fd, text + off, len - off, MSG_NOSIGNAL);
		if (n <= 0)
			return;
		off += (size_t)n;
	}
	send(fd, "\n", 1, MSG_NOSIGNAL);
}

/* The command line arrives within this of the connection, all of it: the
 * loop waits for it, and a client that trickles bytes must not hold the
 * daemon's heartbeats back (the backup would take the primary for dead). */
#define CONTROL_READ_MS 200

/* Read one command line into cmd (NUL-terminated): its length, or
 * -ETIMEDOUT when the deadline came first (nothing of it is run). A line
 * ends at a newline, at the client's end of writing, or when cmd is full. */
static ssize_t read_command(int fd, char *cmd, size_t size)
{
	double deadline = mono_ms() + CONTROL_READ_MS;
	size_t len = 0;

	while (len < size - 1 && !memchr(cmd, '\n', len)) {
		double left = deadline - mono_ms();
		struct timeval tv = { .tv_sec = 0, .tv_usec = (suseconds_t)(left * 1000) };
		ssize_t n;

		if (left < 1)
			return -ETIMEDOUT; /* (a zero timeout would wait for ever) */
		setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		n = recv(fd, cmd + len, size - 1 - len, 0);
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return -ETIMEDOUT;
		if (n <= 0)
			break;
		len += (size_t)n;
	}
	return (ssize_t)len;
}

/* One connection: read its command line, check its peer, answer. */
static void serve(struct control_socket *cs, int fd)
{
	char cmd[CONTROL_MAX_COMMAND + 1] = { 0 };
	char *text = NULL;
	bool keep = false;
	ssize_t len;
	uid_t uid;

	len = read_command(fd, cmd, sizeof(cmd)); /* one command line per connection */
	if (len == -ETIMEDOUT)
		log_debug("control socket: a client sent no whole command within %d ms: closed",
			  CONTROL_READ_MS);
	if (len > 0) {
		cmd[strcspn(cmd, "\r\n")] = 0;
		/* read first, then refuse: closing on an unread line could
		 * reset the connection before the client reads why */
		if (!control_peer_allowed(cs, fd, cmd, &uid))
			text = control_refusal(cs, uid);
		else
			text = cs->handler(cs->data, fd, cmd, &keep);
	}
	if (text)
		control_reply(fd, text);
	free(text);
	if (!keep)
		close(fd);
}

static void on_control(struct ev_loop *loop, ev_io *w, int revents)
{
	struct control_socket *cs = w->data;
	int fd = accept4(cs->fd, NULL, NULL, SOCK_CLOEXEC);

	if (fd >= 0)
		serve(cs, fd);
}

void control_socket_serve_pending(struct control_socket *cs)
{
	int fd;

	if (cs->fd < 0)
		return;
	/* the listening socket is non-blocking: EAGAIN when none waits */
	while ((fd = accept4(cs->fd, NULL, NULL, SOCK_CLOEXEC)) >= 0)
		serve(cs, fd);
}

/* Mode 0600, or 0660 owned by the control group: bound under a umask of
 * 077 so that it is never open wider, even for a moment, then set. */
static int restrict_socket(const struct control_socket *cs)
{
	if (cs->group && chown(cs->path, (uid_t)-1, cs->gid) < 0)
		return -errno;
	return chmod(cs->path, cs->group ? 0660 : 0600) < 0 ? -errno : 0;
}

int control_socket_open(struct control_socket *cs, struct ev_loop *loop)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	mode_t umask_was;
	int fd, rc = 0;

	if (!cs->path)
		return 0;
	if (strlen(cs->path) >= sizeof(sa.sun_path)) {
		log_err("control socket path %s is too long", cs->path);
		return -ENAMETOOLONG;
	}
	strcpy(sa.sun_path, cs->path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	unlink(cs->path);
	umask_was = umask(077);
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		rc = -errno;
	umask(umask_was);
	if (!rc)
		rc = restrict_socket(cs);
	if (!rc && listen(fd, 8) < 0)
		rc = -errno;
	if (rc) {
		log_err("cannot listen on control socket %s: %s", cs->path, strerror(-rc));
		close(fd);
		return rc;
	}
	cs->fd = fd;
	cs->loop = loop;
	ev_io_init(&cs->watch, on_control, fd, EV_READ);
	cs->watch.data = cs;
	ev_io_start(loop, &cs->watch);
	return 0;
}

void control_socket_close(struct control_socket *cs)
{
	if (cs->fd < 0)
		return;
	ev_io_stop(cs->loop, &cs->watch);
	close(cs->fd);
	unlink(cs->path);
	cs->fd = -1;
}

int control_group_resolve(const char *prog, const char *path, const char *group, gid_t *gid)
{
	struct group *g;

	*gid = (gid_t)-1;
	if (!group)
		return 0;
	if (!path) {
		fprintf(stderr, "%s: --control-group needs --control PATH\n", prog);
		return -1;
	}
	errno = 0;
	g = getgrnam(group);
	if (!g) {
		fprintf(stderr, "%s: --control-group: no group '%s'%s%s\n", prog, group,
			errno ? ": " : "", errno ? strerror(errno) : "");
		return -1;
	}
	*gid = g->gr_gid;
	return 0;
}

void json_add_u64(struct json_object *o, const char *key, uint64_t v)
{
	json_object_object_add(o, key, json_object_new_uint64(v));
}

void json_add_double(struct json_object *o, const char *key, double v)
{
	json_object_object_add(o, key, json_object_new_double(v));
}
