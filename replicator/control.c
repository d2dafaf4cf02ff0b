/* The control socket: `remusctl` connects, writes one command line, reads
 * one JSON reply, and the connection closes. Commands: status,
 * reset-stats, pause, resume, failover [TIMEOUT_MS]. failover answers when
 * the outcome is known (operator.c keeps the connection until then).
 * Root alone may use it, and the members of --control-group: the socket's
 * mode says so, and every connection's peer (SO_PEERCRED) is checked. */
#include "ckpt_device.h"
#include "log.h"
#include "replicator.h"

#include <errno.h>
#include <json-c/json.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define CONTROL_FAILOVER_DEFAULT_MS 30000

static void add_double(struct json_object *o, const char *key, double v)
{
	json_object_object_add(o, key, json_object_new_double(v));
}

static void add_u64(struct json_object *o, const char *key, uint64_t v)
{
	json_object_object_add(o, key, json_object_new_uint64(v));
}

char *status_json(const struct replicator *r)
{
	const struct replicator_stats *s = &r->stats;
	struct json_object *o = json_object_new_object();
	double dirty_mean = ring_mean(&s->dirty_pages);
	char *text;

	json_object_object_add(o, "vm", json_object_new_string(r->vm.name));
	json_object_object_add(o, "qemu_pid", json_object_new_int(r->vm.pid));
	json_object_object_add(o, "backup", json_object_new_string(r->cfg.backup.text));
	json_object_object_add(o, "protection", json_object_new_string(replicator_state_name(r)));
	json_object_object_add(o, "epoch_policy",
			       json_object_new_string(epoch_policy_name(r->policy.cfg.kind)));
	add_double(o, "epoch_length_ms", r->policy.length_ms);
	json_object_object_add(o, "epoch_reason", json_object_new_string(r->policy.reason));
	/* smoothed; 100 while not measured (the policy's assumption) */
	add_double(o, "vcpu_busy_pct", r->policy.vcpu_busy * 100);
	add_u64(o, "vcpu_threads", (uint64_t)r->vcpu_load.nthreads);
	add_u64(o, "epoch_ms", r->cfg.epoch_ms);
	add_u64(o, "epoch", r->epoch);
	add_u64(o, "epochs_committed", s->epochs_committed);
	add_u64(o, "last_acked_epoch", s->last_acked_epoch);
	add_u64(o, "epochs_resent", s->epochs_nacked);
	add_u64(o, "resyncs", s->resyncs);
	add_double(o, "pause_p50_ms", ring_quantile(&s->pause_ms, 0.5));
	add_double(o, "pause_p99_ms", ring_quantile(&s->pause_ms, 0.99));
	add_double(o, "pause_max_ms", ring_max(&s->pause_ms));
	add_double(o, "pause_mean_ms", ring_mean(&s->pause_ms));
	add_u64(o, "pauses_recent", s->pause_ms.n);
	add_double(o, "pause_stop_p50_ms", ring_quantile(&s->stop_ms, 0.5));
	add_double(o, "pause_capture_p50_ms", ring_quantile(&s->capture_ms, 0.5));
	add_double(o, "pause_capture_p99_ms", ring_quantile(&s->capture_ms, 0.99));
	add_double(o, "pause_resume_p50_ms", ring_quantile(&s->resume_ms, 0.5));
	add_double(o, "ack_p50_ms", ring_quantile(&s->ack_ms, 0.5));
	add_double(o, "ack_p99_ms", ring_quantile(&s->ack_ms, 0.99));
	add_double(o, "dirty_pages_per_epoch", dirty_mean);
	add_double(o, "dirty_bytes_per_epoch", dirty_mean * PROTO_PAGE_SIZE);
	add_u64(o, "dirty_pages_total", s->dirty_pages_total);
	add_double(o, "checkpoint_bytes_per_epoch", ring_mean(&s->checkpoint_bytes));
	add_double(o, "checkpoint_bytes_p99", ring_quantile(&s->checkpoint_bytes, 0.99));
	add_double(o, "link_bytes_per_s", s->link_bytes_per_s);
	add_u64(o, "link_queued_bytes", r->link.out.bytes_queued);
	add_u64(o, "ram_bytes", r->vm.ram_size);
	add_u64(o, "early_epochs", s->early_epochs);
	operator_status(r, o);
	for (int i = 0; i < r->ndevices; i++)
		if (r->devices[i].ops->status)
			r->devices[i].ops->status(r->devices[i].state, o);
	text = strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
	json_object_put(o);
	return text;
}

/* Forget the recent-epoch figures (totals stay): benchmarks measure a
 * window, operators a period after a change. */
static char *reset_stats(struct replicator *r)
{
	struct replicator_stats *s = &r->stats;

	memset(&s->pause_ms, 0, sizeof(s->pause_ms));
	memset(&s->stop_ms, 0, sizeof(s->stop_ms));
	memset(&s->capture_ms, 0, sizeof(s->capture_ms));
	memset(&s->resume_ms, 0, sizeof(s->resume_ms));
	memset(&s->dirty_pages, 0, sizeof(s->dirty_pages));
	memset(&s->ack_ms, 0, sizeof(s->ack_ms));
	memset(&s->checkpoint_bytes, 0, sizeof(s->checkpoint_bytes));
	return strdup("{\"ok\":true}");
}

/* "failover [TIMEOUT_MS]": the reply comes when the outcome is known, on
 * this connection, which the operator code then owns (*keep). */
static char *failover(struct replicator *r, int fd, const char *arg, bool *keep)
{
	unsigned long ms = CONTROL_FAILOVER_DEFAULT_MS;
	char *end, *text;

	if (*arg) {
		errno = 0;
		ms = strtoul(arg, &end, 10);
		if (errno || *end || ms < 100 || ms > 3600000) {
			if (asprintf(&text, "{\"ok\":false,\"error\":\"failover: timeout '%.20s' is "
				     "not 100..3600000 ms\"}", arg + 1) < 0)
				return NULL;
			return text;
		}
	}
	text = operator_failover(r, fd, (unsigned)ms);
	*keep = text == NULL;
	return text;
}

/* Who may use the socket: root, and the members of --control-group. The
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

/* Root, or a member of the group, may go on; anyone else is logged. */
static bool peer_allowed(const struct replicator *r, int fd, const char *cmd, uid_t *uid)
{
	const char *group = r->cfg.control_group;
	struct ucred cred;
	socklen_t len = sizeof(cred);

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) {
		log_warn("control socket: refused '%.40s': cannot tell who asks: %s", cmd,
			 strerror(errno));
		*uid = (uid_t)-1;
		return false;
	}
	*uid = cred.uid;
	if (cred.uid == 0 || (group && in_group(fd, r->cfg.control_gid, cred.gid)))
		return true;
	log_warn("control socket: refused '%.40s' from uid %u (pid %d): not root%s%s", cmd,
		 (unsigned)cred.uid, (int)cred.pid, group ? " nor in group " : "", group ? group : "");
	return false;
}

/* The one-line refusal for the client (NULL without memory: it then gets
 * no reply, and is refused all the same). */
static char *refusal(const struct replicator *r, uid_t uid)
{
	const char *group = r->cfg.control_group;
	char *text;

	if (uid == (uid_t)-1)
		return strdup("{\"ok\":false,\"refused\":true,\"error\":\"permission denied: "
			      "cannot tell who asks\"}");
	if (asprintf(&text, "{\"ok\":false,\"refused\":true,\"error\":\"permission denied: "
		     "uid %u is not root%s%s\"}", (unsigned)uid,
		     group ? " nor in group " : "", group ? group : "") < 0)
		return NULL;
	return text;
}

/* Replies are small and the client waits for them: a blocking write with
 * a short send timeout cannot stall the loop for long. */
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

static void on_control(struct ev_loop *loop, ev_io *w, int revents)
{
	struct replicator *r = w->data;
	struct timeval tv = { .tv_sec = 0, .tv_usec = 200000 };
	char cmd[128] = { 0 };
	char *text = NULL;
	uid_t uid;
	bool keep = false;
	size_t len = 0;
	ssize_t n;
	int fd = accept4(r->control_fd, NULL, NULL, SOCK_CLOEXEC);

	if (fd < 0)
		return;
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	/* one command line per connection */
	while (len < sizeof(cmd) - 1 && !memchr(cmd, '\n', len) &&
	       (n = recv(fd, cmd + len, sizeof(cmd) - 1 - len, 0)) > 0)
		len += (size_t)n;
	if (len) {
		cmd[strcspn(cmd, "\r\n")] = 0;
		/* read first, then refuse: closing on an unread line could
		 * reset the connection before the client reads why */
		if (!peer_allowed(r, fd, cmd, &uid))
			text = refusal(r, uid);
		else if (!strcmp(cmd, "status"))
			text = status_json(r);
		else if (!strcmp(cmd, "reset-stats"))
			text = reset_stats(r);
		else if (!strcmp(cmd, "pause"))
			text = operator_pause(r);
		else if (!strcmp(cmd, "resume"))
			text = operator_resume(r);
		else if (!strncmp(cmd, "failover", 8) && (!cmd[8] || cmd[8] == ' '))
			text = failover(r, fd, cmd + 8, &keep);
		else if (asprintf(&text, "{\"error\":\"unknown command '%.60s'\"}", cmd) < 0)
			text = NULL;
	}
	if (text)
		control_reply(fd, text);
	free(text);
	if (!keep)
		close(fd);
}

/* Mode 0600, or 0660 owned by --control-group: bound under a umask of
 * 077 so that it is never open wider, even for a moment, then set. */
static int restrict_control(const struct replicator *r)
{
	const char *path = r->cfg.control_path;

	if (r->cfg.control_group && chown(path, (uid_t)-1, r->cfg.control_gid) < 0)
		return -errno;
	return chmod(path, r->cfg.control_group ? 0660 : 0600) < 0 ? -errno : 0;
}

int control_open(struct replicator *r)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	mode_t umask_was;
	int fd, rc = 0;

	if (strlen(r->cfg.control_path) >= sizeof(sa.sun_path)) {
		log_err("control socket path %s is too long", r->cfg.control_path);
		return -ENAMETOOLONG;
	}
	strcpy(sa.sun_path, r->cfg.control_path);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	unlink(r->cfg.control_path);
	umask_was = umask(077);
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		rc = -errno;
	umask(umask_was);
	if (!rc)
		rc = restrict_control(r);
	if (!rc && listen(fd, 8) < 0)
		rc = -errno;
	if (rc) {
		log_err("cannot listen on control socket %s: %s", r->cfg.control_path,
			strerror(-rc));
		close(fd);
		return rc;
	}
	r->control_fd = fd;
	ev_io_init(&r->control_watch, on_control, fd, EV_READ);
	r->control_watch.data = r;
	ev_io_start(r->loop, &r->control_watch);
	return 0;
}

void control_close(struct replicator *r)
{
	if (r->control_fd < 0)
		return;
	ev_io_stop(r->loop, &r->control_watch);
	close(r->control_fd);
	unlink(r->cfg.control_path);
	r->control_fd = -1;
}
