/*
 * counterd - test-guest TCP counter service.
 *
 * Usage: counterd [PORT]   (default 7777)
 *
 * Listens on PORT on all addresses (IPv6 dual-stack, IPv4 fallback) and
 * serves any number of concurrent clients with poll(). For every line a
 * client sends (anything terminated by '\n') it replies "N\n", where N is a
 * global counter (held in guest RAM) incremented per request, shared across
 * connections and starting at 1.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_CLIENTS 256
#define OUTBUF 65536
#define MAX_REPLY 22 /* strlen("18446744073709551615\n") + 1 */

unsigned long request_count; /* the counter, held in guest memory */

struct client {
    int fd;
    size_t out_len;
    char out[OUTBUF];
};

static struct client *clients[MAX_CLIENTS];
static struct pollfd pfds[MAX_CLIENTS + 1];

static int set_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    return fl < 0 ? -1 : fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

static int open_listener(int port)
{
    int one = 1, zero = 0;
    int fd = socket(AF_INET6, SOCK_STREAM, 0);
    if (fd >= 0) {
        struct sockaddr_in6 a6 = { .sin6_family = AF_INET6,
                                   .sin6_port = htons(port),
                                   .sin6_addr = in6addr_any };
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
        if (bind(fd, (struct sockaddr *)&a6, sizeof(a6)) == 0)
            goto bound;
        close(fd);
    }
    fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) {
        perror("counterd: socket");
        return -1;
    }
    struct sockaddr_in a4 = { .sin_family = AF_INET,
                              .sin_port = htons(port),
                              .sin_addr.s_addr = htonl(INADDR_ANY) };
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&a4, sizeof(a4)) != 0) {
        perror("counterd: bind");
        close(fd);
        return -1;
    }
bound:
    if (listen(fd, 64) != 0 || set_nonblock(fd) != 0) {
        perror("counterd: listen");
        close(fd);
        return -1;
    }
    return fd;
}

static void drop(int slot)
{
    close(clients[slot]->fd);
    free(clients[slot]);
    clients[slot] = NULL;
}

/* Try to send buffered output; returns -1 if the connection is dead. */
static int flush_out(struct client *c)
{
    while (c->out_len > 0) {
        ssize_t n = send(c->fd, c->out, c->out_len, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return 0;
            return -1;
        }
        memmove(c->out, c->out + n, c->out_len - (size_t)n);
        c->out_len -= (size_t)n;
    }
    return 0;
}

/* Read what is available and queue one reply per '\n'. */
static int handle_input(struct client *c)
{
    char buf[4096];
    for (;;) {
        /*
         * Each input byte yields at most one reply of at most MAX_REPLY
         * bytes: read only what is guaranteed to fit in the output buffer,
         * and stop reading while the peer is not draining our replies.
         */
        size_t room = (OUTBUF - c->out_len) / MAX_REPLY;
        if (room > sizeof(buf))
            room = sizeof(buf);
        if (room == 0)
            return 0;
        ssize_t n = recv(c->fd, buf, room, 0);
        if (n == 0)
            return -1;
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return 0;
            return -1;
        }
        for (ssize_t i = 0; i < n; i++) {
            if (buf[i] != '\n')
                continue;
            request_count++;
            c->out_len += (size_t)snprintf(c->out + c->out_len,
                                           OUTBUF - c->out_len, "%lu\n",
                                           request_count);
        }
        if (flush_out(c) < 0)
            return -1;
    }
}

int main(int argc, char **argv)
{
    int port = argc > 1 ? atoi(argv[1]) : 7777;
    if (port <= 0 || port > 65535) {
        fprintf(stderr, "counterd: bad port\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);

    int lfd = open_listener(port);
    if (lfd < 0)
        return 1;
    printf("counterd: listening on port %d\n", port);
    fflush(stdout);

    for (;;) {
        int n = 0;
        int slot_of[MAX_CLIENTS + 1];
        pfds[n].fd = lfd;
        pfds[n].events = POLLIN;
        slot_of[n++] = -1;
        for (int s = 0; s < MAX_CLIENTS; s++) {
            if (!clients[s])
                continue;
            pfds[n].fd = clients[s]->fd;
            pfds[n].events = 0;
            if (OUTBUF - clients[s]->out_len >= MAX_REPLY)
                pfds[n].events |= POLLIN;
            if (clients[s]->out_len > 0)
                pfds[n].events |= POLLOUT;
            slot_of[n++] = s;
        }

        if (poll(pfds, (nfds_t)n, -1) < 0) {
            if (errno == EINTR)
                continue;
            perror("counterd: poll");
            return 1;
        }

        for (int i = 1; i < n; i++) {
            int s = slot_of[i];
            short re = pfds[i].revents;
            if (!re)
                continue;
            int dead = 0;
            if (re & POLLOUT)
                dead = flush_out(clients[s]) < 0;
            if (!dead && (re & (POLLIN | POLLHUP | POLLERR)))
                dead = handle_input(clients[s]) < 0;
            if (dead)
                drop(s);
        }

        if (pfds[0].revents & POLLIN) {
            for (;;) {
                int cfd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
                if (cfd < 0)
                    break;
                int s;
                for (s = 0; s < MAX_CLIENTS && clients[s]; s++)
                    ;
                struct client *c = s < MAX_CLIENTS ? malloc(sizeof(*c)) : NULL;
                if (!c) {
                    close(cfd);
                    continue;
                }
                int one = 1;
                setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
                c->fd = cfd;
                c->out_len = 0;
                clients[s] = c;
            }
        }
    }
}
