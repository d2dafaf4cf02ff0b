/* Who gets one of the agent's places: a new connection is accepted into a
 * free peer link while its address holds fewer than
 * AGENT_HANDSHAKES_PER_ADDR unauthenticated handshakes; when every place
 * is taken, a flood's oldest handshake gives way (docs/SECURITY.md). */
#include "agent.h"

#include "clock.h"
#include "log.h"

#include <arpa/inet.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* A peer that is not (yet) our primary went away or was turned away. One
 * line per 10 s at most: a scan of the port must not flood the log. */
void agent_log_refused(struct agent *a, const char *peer, const char *why)
{
	double now = mono_ms();

	if (a->refused_log_ms && now - a->refused_log_ms < 10000) {
		a->refused_quiet++;
		return;
	}
	if (a->refused_quiet)
		log_warn("connection from %s refused: %s (and %u more refused since the last "
			 "such line)", peer, why, a->refused_quiet);
	else
		log_warn("connection from %s refused: %s", peer, why);
	a->refused_log_ms = now;
	a->refused_quiet = 0;
}

static struct peer_link *free_link(struct agent *a)
{
	for (int i = 0; i < AGENT_MAX_LINKS; i++)
		if (a->links[i].state == PEER_LINK_IDLE)
			return &a->links[i];
	return NULL;
}

/* Not admitted yet: in its TLS handshake, or past it (or cleartext, where
 * there is none) without an accepted HELLO. The same deadline bounds both. */
static bool in_handshake(const struct peer_link *l)
{
	return l->state == PEER_LINK_TLS || l->state == PEER_LINK_OPEN;
}

/* Connections from host not admitted yet. */
static int handshakes_from(const struct agent *a, const char *host)
{
	int n = 0;

	for (int i = 0; i < AGENT_MAX_LINKS; i++)
		n += in_handshake(&a->links[i]) && !strcmp(a->links[i].peer, host);
	return n;
}

/* Every place is taken. A flood of handshakes that trickle their bytes
 * must not keep the primary out until the flood stops: the oldest
 * handshake of the address that holds the most gives way to a connection
 * from an address that holds fewer. The primary's own handshake takes
 * milliseconds, so it is seldom the oldest; and it is never evicted by a
 * connection from an address with as many. */
static struct peer_link *evict_for(struct agent *a, const char *host)
{
	struct peer_link *victim = NULL;
	int most = 0;

	for (int i = 0; i < AGENT_MAX_LINKS; i++) {
		int n = in_handshake(&a->links[i]) ? handshakes_from(a, a->links[i].peer) : 0;

		if (n > most)
			most = n;
	}
	if (most <= handshakes_from(a, host))
		return NULL;
	/* of the addresses holding the most, the handshake with the least
	 * time left: the oldest */
	for (int i = 0; i < AGENT_MAX_LINKS; i++) {
		struct peer_link *l = &a->links[i];

		if (in_handshake(l) && handshakes_from(a, l->peer) == most &&
		    (!victim || ev_timer_remaining(a->loop, &l->deadline) <
					ev_timer_remaining(a->loop, &victim->deadline)))
			victim = l;
	}
	agent_log_refused(a, victim->peer, "its handshake gave way to a connection from an address "
		    "holding fewer (every place was taken)");
	peer_link_close(victim);
	return victim;
}

void agent_on_accept(struct ev_loop *loop, ev_io *w, int revents)
{
	struct agent *a = w->data;
	/* accept4 fills it; AF_UNSPEC until then, so a peer with no address
	 * is "?" (and the analyzer sees the field set) */
	struct sockaddr_storage ss = { .ss_family = AF_UNSPEC };
	socklen_t sl = sizeof(ss);
	char host[48] = "?";
	int fd = accept4(a->listen_fd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
	struct peer_link *l;

	if (fd < 0)
		return;
	if (ss.ss_family == AF_INET)
		inet_ntop(AF_INET, &((struct sockaddr_in *)&ss)->sin_addr, host, sizeof(host));
	else if (ss.ss_family == AF_INET6)
		inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&ss)->sin6_addr, host, sizeof(host));
	if (handshakes_from(a, host) >= AGENT_HANDSHAKES_PER_ADDR) {
		agent_log_refused(a, host, "too many connections from this address in their handshake");
		close(fd);
		return;
	}
	l = free_link(a);
	if (!l)
		l = evict_for(a, host);
	if (!l) {
		/* Every place is taken by handshakes that have not timed out
		 * yet, from addresses holding no more than this one: the
		 * primary's own place is never one of them. */
		agent_log_refused(a, host, "too many connections in their handshake");
		close(fd);
		return;
	}
	peer_link_accept(l, fd, host, AGENT_HELLO_TIMEOUT_MS);
	l->read_slice_ms = AGENT_READ_SLICE_MS;
	l->unadmitted_max_frame = AGENT_MAX_FIRST_FRAME;
}
