/* HOST:PORT addresses for the replication link ([v6]:PORT works too). */
#ifndef REMUS_NETADDR_H
#define REMUS_NETADDR_H

#include <stddef.h>
#include <sys/socket.h>

struct netaddr {
	struct sockaddr_storage ss;
	socklen_t len;
	char text[160]; /* as the user wrote it, for messages */
};

/* 0, or -EINVAL with the reason in err. Names are resolved (getaddrinfo). */
int netaddr_parse(const char *text, struct netaddr *out, char *err, size_t errlen);
/* Non-blocking, TCP_NODELAY, close-on-exec. Return fd or -errno. */
int netaddr_listen(const struct netaddr *a);
/* Start a non-blocking connect: the fd (writable once connected; then
 * SO_ERROR says how it went) or -errno. */
int netaddr_connect_start(const struct netaddr *a);
int fd_set_nonblock(int fd);
/* Bytes the peer sent that this side has not read yet (0 on error). A
 * peer whose bytes wait unread was not silent, however long our own loop
 * was busy elsewhere: the heartbeat timeouts ask this before they give up. */
size_t fd_unread_bytes(int fd);

#endif
