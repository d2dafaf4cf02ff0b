/* One request on a daemon's control socket, and the helpers every verb
 * uses to read the reply. */
#include "remusctl.h"

#include "text.h"

#include <errno.h>
#include <json-c/json.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static void __attribute__((format(printf, 3, 4)))
say(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

/* The daemon refused us (not root, not in its --control-group): said
 * in err, once for every verb, which then exits 1. The refusal names the
 * daemon; a replicator from before the agent had a socket does not. */
static bool refused(const char *reply, char *err, size_t errlen)
{
	struct json_object *o = json_tokener_parse(reply), *v;
	bool no = json_object_is_type(o, json_type_object) &&
		  json_object_object_get_ex(o, "refused", &v) && json_object_get_boolean(v);

	if (no)
		say(err, errlen, "refused by the %s: %s",
		    strcmp(remusctl_daemon(o), "agent") ? "replicator" : "agent",
		    json_object_object_get_ex(o, "error", &v) ? json_object_get_string(v) :
		    "permission denied");
	json_object_put(o);
	return no;
}

char *remusctl_request_quiet(const char *control, const char *command, int wait_s,
			     enum remusctl_failure *why, char *err, size_t errlen)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct timeval tv = { .tv_sec = wait_s };
	size_t len = 0, cap = 4096;
	char *buf = NULL;
	int fd;

	*why = REMUSCTL_FAIL_IO;
	if (strlen(control) >= sizeof(sa.sun_path)) {
		say(err, errlen, "control socket path too long: %s", control);
		return NULL;
	}
	strcpy(sa.sun_path, control);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		if (errno == EACCES || errno == EPERM) {
			*why = REMUSCTL_FAIL_REFUSED;
			say(err, errlen, "permission denied on %s: only root and the members of its "
			    "daemon's --control-group may use it", control);
		} else {
			*why = REMUSCTL_FAIL_CONNECT;
			say(err, errlen, "cannot reach a daemon at %s: %s (is remus-replicator or "
			    "remus-agent running with --control %s?)", control, strerror(errno),
			    control);
		}
		if (fd >= 0)
			close(fd);
		return NULL;
	}
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	/* one write: the daemon answers as soon as it has the line */
	if (!(buf = malloc(cap)))
		goto fail;
	snprintf(buf, cap, "%s\n", command);
	if (send(fd, buf, strlen(buf), MSG_NOSIGNAL) < 0)
		goto fail;
	for (;;) {
		ssize_t n;
		if (len + 1 >= cap) {
			char *nb = realloc(buf, cap *= 2);
			if (!nb)
				goto fail;
			buf = nb;
		}
		n = recv(fd, buf + len, cap - len - 1, 0);
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			*why = REMUSCTL_FAIL_TIMEOUT;
			say(err, errlen, "no reply from the daemon at %s within %d s", control, wait_s);
			goto out;
		}
		if (n < 0)
			goto fail;
		if (n == 0)
			break;
		len += (size_t)n;
	}
	close(fd);
	buf[len] = 0;
	if (!len) {
		*why = REMUSCTL_FAIL_EMPTY;
		say(err, errlen, "the daemon at %s closed the connection without a reply", control);
		free(buf);
		return NULL;
	}
	if (refused(buf, err, errlen)) {
		*why = REMUSCTL_FAIL_REFUSED;
		free(buf);
		return NULL;
	}
	*why = REMUSCTL_OK;
	return buf;
fail:
	say(err, errlen, "talking to %s failed: %s", control, strerror(errno));
out:
	free(buf);
	close(fd);
	return NULL;
}

char *remusctl_request(const char *control, const char *command)
{
	return remusctl_request_wait(control, command, 5);
}

char *remusctl_request_wait(const char *control, const char *command, int wait_s)
{
	enum remusctl_failure why;
	char err[600];
	char *reply = remusctl_request_quiet(control, command, wait_s, &why, err, sizeof(err));

	if (!reply)
		fprintf(stderr, "remusctl: %s\n", err);
	return reply;
}

int remusctl_no_args(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--json")) {
			fprintf(stderr, "remusctl: %s: unexpected argument '%s'\n", argv[0], argv[i]);
			return -1;
		}
	}
	return 0;
}

struct json_object *remusctl_parse(const char *reply)
{
	struct json_object *o = reply ? json_tokener_parse(reply) : NULL;

	if (reply && !json_object_is_type(o, json_type_object)) {
		fprintf(stderr, "remusctl: the daemon's reply is not a JSON object: %.80s\n", reply);
		json_object_put(o);
		return NULL;
	}
	return o;
}

int remusctl_print_reply(const struct remusctl_opts *opts, const char *verb, const char *reply)
{
	struct json_object *o = remusctl_parse(reply), *v;
	int ok;

	if (!o)
		return 1;
	ok = json_object_object_get_ex(o, "ok", &v) && json_object_get_boolean(v);
	if (opts->json)
		fputs(reply, stdout);
	else if (ok && json_object_object_get_ex(o, "message", &v))
		printf("%s\n", json_object_get_string(v));
	if (!ok)
		fprintf(stderr, "remusctl: %s: %s\n", verb, json_object_object_get_ex(o, "error", &v) ?
			json_object_get_string(v) : "the replicator said no, without a reason");
	json_object_put(o);
	return ok ? 0 : 1;
}

/* ---- fields of a reply ---- */

const char *remusctl_daemon(struct json_object *o)
{
	struct json_object *v;
	const char *d = json_object_object_get_ex(o, "daemon", &v) ? json_object_get_string(v) :
			NULL;

	/* a replicator from before the field says nothing */
	return d && !strcmp(d, "agent") ? "agent" : "replicator";
}

bool remusctl_has(struct json_object *o, const char *key)
{
	struct json_object *v;

	return json_object_object_get_ex(o, key, &v) && v &&
	       (json_object_is_type(v, json_type_int) || json_object_is_type(v, json_type_double) ||
		json_object_is_type(v, json_type_boolean));
}

double remusctl_num(struct json_object *o, const char *key)
{
	struct json_object *v;

	return json_object_object_get_ex(o, key, &v) && v ? json_object_get_double(v) : 0;
}

/* A few buffers in turn, for the several strings one printf takes. */
const char *remusctl_str_or(struct json_object *o, const char *key, const char *none)
{
	static char bufs[8][512];
	static unsigned next;
	struct json_object *v;
	char *buf;

	if (!json_object_object_get_ex(o, key, &v) || !v)
		return none;
	buf = bufs[next++ % 8];
	text_sanitize(buf, sizeof(bufs[0]), json_object_get_string(v));
	return buf;
}

const char *remusctl_str(struct json_object *o, const char *key)
{
	return remusctl_str_or(o, key, "?");
}
