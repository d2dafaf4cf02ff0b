#include "netaddr.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

int netaddr_parse(const char *text, struct netaddr *out, char *err, size_t errlen)
{
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV };
	struct addrinfo *res = NULL;
	char host[128];
	const char *port, *colon = strrchr(text, ':');
	size_t hlen;
	int r;

	if (!colon || colon == text || !colon[1]) {
		snprintf(err, errlen, "'%s' is not HOST:PORT", text);
		return -EINVAL;
	}
	port = colon + 1;
	hlen = (size_t)(colon - text);
	if (text[0] == '[' && colon[-1] == ']') {
		text++;
		hlen -= 2;
	}
	if (hlen >= sizeof(host)) {
		snprintf(err, errlen, "host name in '%s' is too long", text);
		return -EINVAL;
	}
	memcpy(host, text, hlen);
	host[hlen] = 0;
	char *end;
	long p = strtol(port, &end, 10);
	if (*end || p < 1 || p > 65535) {
		snprintf(err, errlen, "bad port '%s' (want 1-65535)", port);
		return -EINVAL;
	}
	r = getaddrinfo(host, port, &hints, &res);
	if (r) {
		snprintf(err, errlen, "cannot resolve '%s': %s", host, gai_strerror(r));
		return -EINVAL;
	}
	memcpy(&out->ss, res->ai_addr, res->ai_addrlen);
	out->len = res->ai_addrlen;
	snprintf(out->text, sizeof(out->text), "%s:%s", host, port);
	freeaddrinfo(res);
	return 0;
}

int fd_set_nonblock(int fd)
{
	int fl = fcntl(fd, F_GETFL);

	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
		return -errno;
	return 0;
}

size_t fd_unread_bytes(int fd)
{
	int n = 0;

	if (ioctl(fd, FIONREAD, &n) < 0 || n < 0)
		return 0;
	return (size_t)n;
}

static int tcp_socket(const struct netaddr *a)
{
	int one = 1;
	int fd = socket(a->ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);

	if (fd < 0)
		return -errno;
	/* Acks and heartbeats are tiny and latency is the product. */
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return fd;
}

int netaddr_listen(const struct netaddr *a)
{
	int one = 1, r;
	int fd = tcp_socket(a);

	if (fd < 0)
		return fd;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	/* a backlog above the agent's places (AGENT_MAX_LINKS): a burst of
	 * connections is accepted at once and judged by its rules, not
	 * left half-open by the kernel */
	if (bind(fd, (const struct sockaddr *)&a->ss, a->len) < 0 || listen(fd, 32) < 0) {
		r = -errno;
		close(fd);
		return r;
	}
	return fd;
}

int netaddr_connect_start(const struct netaddr *a)
{
	int fd = tcp_socket(a), r;

	if (fd < 0 || connect(fd, (const struct sockaddr *)&a->ss, a->len) == 0 ||
	    errno == EINPROGRESS)
		return fd;
	r = -errno;
	close(fd);
	return r;
}

