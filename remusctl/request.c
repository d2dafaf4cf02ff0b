#include "remusctl.h"

#include <errno.h>
#include <json-c/json.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

/* The replicator refused us (not root, not in its --control-group): said
 * here once for every verb, which then exits 1. */
static bool refused(const char *reply)
{
	struct json_object *o = json_tokener_parse(reply), *v;
	bool no = json_object_is_type(o, json_type_object) &&
		  json_object_object_get_ex(o, "refused", &v) && json_object_get_boolean(v);

	if (no)
		fprintf(stderr, "remusctl: refused by the replicator: %s\n",
			json_object_object_get_ex(o, "error", &v) ? json_object_get_string(v) :
			"permission denied");
	json_object_put(o);
	return no;
}

char *remusctl_request(const char *control, const char *command)
{
	return remusctl_request_wait(control, command, 5);
}

char *remusctl_request_wait(const char *control, const char *command, int wait_s)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct timeval tv = { .tv_sec = wait_s };
	size_t len = 0, cap = 4096;
	char *buf = NULL;
	int fd;

	if (strlen(control) >= sizeof(sa.sun_path)) {
		fprintf(stderr, "remusctl: control socket path too long: %s\n", control);
		return NULL;
	}
	strcpy(sa.sun_path, control);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		if (errno == EACCES || errno == EPERM)
			fprintf(stderr, "remusctl: permission denied on %s: only root and the "
				"members of the replicator's --control-group may use it\n", control);
		else
			fprintf(stderr, "remusctl: cannot reach the replicator at %s: %s "
				"(is remus-replicator running with --control %s?)\n",
				control, strerror(errno), control);
		if (fd >= 0)
			close(fd);
		return NULL;
	}
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	/* one write: the replicator answers as soon as it has the line */
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
			fprintf(stderr, "remusctl: no reply from the replicator at %s within %d s\n",
				control, wait_s);
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
		fprintf(stderr, "remusctl: the replicator closed the connection without a reply\n");
		free(buf);
		return NULL;
	}
	if (refused(buf)) {
		free(buf);
		return NULL;
	}
	return buf;
fail:
	fprintf(stderr, "remusctl: talking to %s failed: %s\n", control, strerror(errno));
out:
	free(buf);
	close(fd);
	return NULL;
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
		fprintf(stderr, "remusctl: the replicator's reply is not a JSON object: %.80s\n",
			reply);
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
