/* remus-probe: a peer for the integration tests, speaking to an agent as a
 * primary would (or as an attacker would): it connects through the real
 * link layer (TLS with a pair key, or cleartext), sends one HELLO whose
 * payload and protocol version it is given, and prints the agent's reply.
 *
 *   remus-probe --connect HOST:PORT [--key-file F] [--identity NAME]
 *               [--version N] [--hold SECONDS] [--timeout SECONDS] HELLO_JSON
 *
 * Prints the HELLO_REPLY's payload, "EOF" when the agent closed without a
 * reply, or "ERROR: why" when the link failed (a refused TLS handshake, a
 * timeout). Exit status 0 when a reply came, 1 otherwise, 2 usage. With
 * --hold, the connection stays open that long after the reply. */
#include "crc32c.h"
#include "link_security.h"
#include "peer_link.h"
#include "proto.h"

#include <endian.h>
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct probe {
	struct peer_link link;
	const char *hello;
	int version;
	double hold_s;
	ev_timer hold;
	int status;
};

/* A HELLO frame with any protocol version: the header is built by hand so
 * that a version the library would never send can be tried. */
static void send_hello(struct peer_link *l, const char *json, int version)
{
	size_t len = strlen(json);
	uint8_t *buf = malloc(PROTO_HDR_SIZE + len);
	struct iovec iov = { .iov_base = (void *)json, .iov_len = len };
	uint32_t crc;
	size_t off = 0;

	if (!buf)
		exit(1);
	proto_encode_hdr(buf, FRAME_HELLO, 0, &iov, 1);
	buf[4] = (uint8_t)version;
	crc = htobe32(crc32c(0, buf, 28));
	memcpy(buf + 28, &crc, 4);
	memcpy(buf + PROTO_HDR_SIZE, json, len);
	while (off < PROTO_HDR_SIZE + len) {
		struct iovec v = { .iov_base = buf + off, .iov_len = PROTO_HDR_SIZE + len - off };
		ssize_t n = l->io.send(l->io.ctx, &v, 1);
		if (n == -EAGAIN)
			continue; /* a few hundred bytes: the socket takes them */
		if (n < 0) {
			printf("ERROR: sending HELLO: %s\n", strerror((int)-n));
			exit(1);
		}
		off += (size_t)n;
	}
	free(buf);
}

static void on_open(struct peer_link *l)
{
	struct probe *p = l->data;

	send_hello(l, p->hello, p->version);
}

static void on_hold_done(struct ev_loop *loop, ev_timer *w, int revents)
{
	ev_break(loop, EVBREAK_ALL);
}

static bool on_frame(struct peer_link *l, const struct frame_hdr *h, const uint8_t *payload)
{
	struct probe *p = l->data;

	printf("%.*s\n", (int)h->len, (const char *)payload);
	fflush(stdout);
	peer_link_established(l); /* no handshake deadline while we hold */
	p->status = h->type == FRAME_HELLO_REPLY ? 0 : 1;
	if (p->hold_s > 0 && !ev_is_active(&p->hold)) {
		ev_timer_init(&p->hold, on_hold_done, p->hold_s, 0);
		ev_timer_start(l->loop, &p->hold);
		return true;
	}
	if (!ev_is_active(&p->hold))
		ev_break(l->loop, EVBREAK_ALL);
	return true;
}

static void on_error(struct peer_link *l, int err, const char *why)
{
	struct probe *p = l->data;

	if (p->status != 0)
		printf(err == -EPIPE ? "EOF\n" : "ERROR: %s\n", why);
	peer_link_close(l);
	ev_break(l->loop, EVBREAK_ALL);
}

static const struct peer_link_ops ops = {
	.on_open = on_open, .on_frame = on_frame, .on_error = on_error,
};

static int usage(void)
{
	fprintf(stderr, "usage: remus-probe --connect HOST:PORT [--key-file F] [--identity NAME] "
		"[--version N] [--hold SECONDS] [--timeout SECONDS] HELLO_JSON\n");
	return 2;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "connect", required_argument, NULL, 'c' },
		{ "key-file", required_argument, NULL, 'k' },
		{ "identity", required_argument, NULL, 'i' },
		{ "version", required_argument, NULL, 'V' },
		{ "hold", required_argument, NULL, 'H' },
		{ "timeout", required_argument, NULL, 't' },
		{ NULL, 0, NULL, 0 },
	};
	const char *connect_to = NULL, *key = NULL, *identity = "probe";
	struct probe p = { .version = PROTO_VERSION, .status = 1 };
	struct link_security sec;
	struct netaddr addr;
	double timeout_s = 10;
	char err[512];
	int c;

	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'c': connect_to = optarg; break;
		case 'k': key = optarg; break;
		case 'i': identity = optarg; break;
		case 'V': p.version = atoi(optarg); break;
		case 'H': p.hold_s = atof(optarg); break;
		case 't': timeout_s = atof(optarg); break;
		default: return usage();
		}
	}
	if (!connect_to || optind != argc - 1)
		return usage();
	p.hello = argv[optind];
	if (netaddr_parse(connect_to, &addr, err, sizeof(err))) {
		fprintf(stderr, "remus-probe: %s\n", err);
		return 2;
	}
	if (!key)
		link_security_cleartext(&sec);
	else if (link_security_load(&sec, key, identity, err, sizeof(err))) {
		fprintf(stderr, "remus-probe: %s\n", err);
		return 2;
	}
	peer_link_init(&p.link, ev_default_loop(0), &sec, &ops, &p);
	if (peer_link_connect(&p.link, &addr, (unsigned)(timeout_s * 1000))) {
		printf("ERROR: cannot connect\n");
		return 1;
	}
	ev_run(p.link.loop, 0);
	peer_link_close(&p.link);
	link_security_free(&sec);
	return p.status;
}
