#include "remusctl.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

char *remusctl_request(const char *control, const char *command)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct timeval tv = { .tv_sec = 5 };
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
	return buf;
fail:
	fprintf(stderr, "remusctl: talking to %s failed: %s\n", control, strerror(errno));
	free(buf);
	close(fd);
	return NULL;
}
