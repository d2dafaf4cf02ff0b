/* The link layer both daemons share (common/peer_link.c) and its security
 * (common/link_security.c), over real loopback TCP: TLS with the pair key
 * both ways, a wrong key, a peer that stalls, trickles or resets in the
 * handshake, big frames through TLS records, last words before a close. */
#include "link_security.h"
#include "peer_link.h"

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

struct side {
	struct peer_link link;
	bool opened;
	int frames;
	int err;                 /* on_error's, 0 none */
	char why[256];
	uint32_t last_len;
	bool last_ok;            /* payload matched its CRC */
	uint8_t first_byte, last_byte;
	bool close_on_goodbye;   /* as the agent does: a planned close */
	int goodbyes;
};

struct pair {
	struct ev_loop *loop;
	struct link_security sec_server, sec_client;
	char dir[64], key[96], key2[96];
	struct netaddr addr;
	int listen_fd;
	ev_io accept_w;
	struct side server, client;
	ev_timer limit;
};

static void on_open(struct peer_link *l)
{
	((struct side *)l->data)->opened = true;
}

static bool on_frame(struct peer_link *l, const struct frame_hdr *h, const uint8_t *payload)
{
	struct side *s = l->data;

	s->frames++;
	s->last_len = h->len;
	s->last_ok = proto_check_payload(h, payload) == 0;
	s->first_byte = h->len ? payload[0] : 0;
	s->last_byte = h->len ? payload[h->len - 1] : 0;
	if (h->type == FRAME_GOODBYE && s->close_on_goodbye) {
		s->goodbyes++;
		peer_link_close(l);
		return false;
	}
	return true;
}

static void on_error(struct peer_link *l, int err, const char *why)
{
	struct side *s = l->data;

	s->err = err;
	snprintf(s->why, sizeof(s->why), "%s", why);
	peer_link_close(l);
}

static const struct peer_link_ops ops = {
	.on_open = on_open, .on_frame = on_frame, .on_error = on_error,
};

static void on_accept(struct ev_loop *loop, ev_io *w, int revents)
{
	struct pair *p = w->data;
	int fd = accept4(p->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(peer_link_accept(&p->server.link, fd, "test", 1500), 0);
	ev_io_stop(loop, w);
}

static void on_limit(struct ev_loop *loop, ev_timer *w, int revents)
{
	ev_break(loop, EVBREAK_ALL);
}

static void write_key(const char *path)
{
	char err[256];

	ck_assert_msg(link_key_generate(path, err, sizeof(err)) == 0, "%s", err);
}

/* A listening server side with the pair key; the client's security is
 * the test's choice. */
static void pair_setup(struct pair *p, bool cleartext)
{
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t sl = sizeof(sin);
	char err[256];

	memset(p, 0, sizeof(*p));
	strcpy(p->dir, "/tmp/check_peer_link.XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(p->dir));
	snprintf(p->key, sizeof(p->key), "%s/pair.key", p->dir);
	snprintf(p->key2, sizeof(p->key2), "%s/other.key", p->dir);
	write_key(p->key);
	write_key(p->key2);
	if (cleartext) {
		link_security_cleartext(&p->sec_server);
	} else {
		ck_assert_msg(!link_security_load(&p->sec_server, p->key, "srv", err, sizeof(err)),
			      "%s", err);
	}
	p->loop = ev_loop_new(EVFLAG_AUTO);
	p->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	ck_assert_int_eq(bind(p->listen_fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	ck_assert_int_eq(listen(p->listen_fd, 4), 0);
	ck_assert_int_eq(getsockname(p->listen_fd, (struct sockaddr *)&sin, &sl), 0);
	memcpy(&p->addr.ss, &sin, sizeof(sin));
	p->addr.len = sizeof(sin);
	strcpy(p->addr.text, "127.0.0.1");
	peer_link_init(&p->server.link, p->loop, &p->sec_server, &ops, &p->server);
	ev_io_init(&p->accept_w, on_accept, p->listen_fd, EV_READ);
	p->accept_w.data = p;
	ev_io_start(p->loop, &p->accept_w);
}

static void client_connect(struct pair *p, const char *key)
{
	char err[256];

	if (!key)
		link_security_cleartext(&p->sec_client);
	else
		ck_assert_msg(!link_security_load(&p->sec_client, key, "cli", err, sizeof(err)),
			      "%s", err);
	peer_link_init(&p->client.link, p->loop, &p->sec_client, &ops, &p->client);
	ck_assert_int_eq(peer_link_connect(&p->client.link, &p->addr, 1500), 0);
}

/* Run the loop until cond holds or seconds pass. */
#define RUN_UNTIL(p, seconds, cond) do { \
	ev_timer_init(&(p)->limit, on_limit, 0.01, 0.01); \
	ev_timer_start((p)->loop, &(p)->limit); \
	for (int i_ = 0; i_ < (seconds) * 100 && !(cond); i_++) \
		ev_run((p)->loop, EVRUN_ONCE); \
	ev_timer_stop((p)->loop, &(p)->limit); \
} while (0)

static void pair_teardown(struct pair *p)
{
	char cmd[128];

	peer_link_close(&p->server.link);
	peer_link_close(&p->client.link);
	close(p->listen_fd);
	ev_loop_destroy(p->loop);
	link_security_free(&p->sec_server);
	link_security_free(&p->sec_client);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", p->dir);
	ck_assert_int_eq(system(cmd), 0);
}

START_TEST(test_tls_both_ways)
{
	struct pair p;
	struct iovec iov = { .iov_base = "hello", .iov_len = 5 };

	pair_setup(&p, false);
	client_connect(&p, p.key);
	RUN_UNTIL(&p, 5, p.server.opened && p.client.opened);
	ck_assert_msg(p.server.opened && p.client.opened, "server %s / client %s", p.server.why,
		      p.client.why);
	ck_assert_str_eq(p.server.link.identity, "psk:remus:cli");
	ck_assert_int_eq(peer_link_push(&p.client.link, FRAME_HELLO, 0, &iov, 1, NULL, NULL), 0);
	ck_assert_int_eq(peer_link_push(&p.server.link, FRAME_HELLO_REPLY, 0, &iov, 1, NULL, NULL), 0);
	RUN_UNTIL(&p, 5, p.server.frames == 1 && p.client.frames == 1);
	ck_assert_int_eq(p.server.frames, 1);
	ck_assert_int_eq(p.client.frames, 1);
	ck_assert(p.server.last_ok && p.client.last_ok);
	ck_assert_int_eq(p.server.err, 0);
	pair_teardown(&p);
}
END_TEST

/* 4 MiB in many pieces of odd sizes: records gather small pieces, split
 * big ones, and a send the socket would not take is finished later. */
START_TEST(test_tls_big_frames)
{
	enum { PIECES = 300 };
	struct pair p;
	struct iovec iov[PIECES];
	uint8_t *buf = malloc(4 << 20);
	size_t off = 0;

	for (size_t i = 0; i < (4u << 20); i++)
		buf[i] = (uint8_t)(i * 7 + 3);
	for (int i = 0; i < PIECES; i++) {
		size_t len = i % 3 == 0 ? 32 : i % 3 == 1 ? 4096 : 20000 + (size_t)i;
		iov[i] = (struct iovec){ .iov_base = buf + off, .iov_len = len };
		off += len;
	}
	ck_assert_uint_le(off, 4u << 20);
	pair_setup(&p, false);
	client_connect(&p, p.key);
	RUN_UNTIL(&p, 5, p.server.opened && p.client.opened);
	for (int f = 0; f < 3; f++)
		ck_assert_int_eq(peer_link_push(&p.client.link, FRAME_PAGES, (uint64_t)f, iov,
						PIECES, NULL, NULL), 0);
	RUN_UNTIL(&p, 20, p.server.frames == 3);
	ck_assert_int_eq(p.server.frames, 3);
	ck_assert(p.server.last_ok);
	ck_assert_uint_eq(p.server.last_len, off);
	ck_assert_uint_eq(p.server.first_byte, buf[0]);
	ck_assert_uint_eq(p.server.last_byte, buf[off - 1]);
	ck_assert_uint_eq(p.client.link.out.bytes_queued, 0);
	pair_teardown(&p);
	free(buf);
}
END_TEST

START_TEST(test_wrong_key_refused)
{
	struct pair p;

	pair_setup(&p, false);
	client_connect(&p, p.key2);
	RUN_UNTIL(&p, 5, p.server.err && p.client.err);
	ck_assert_int_eq(p.server.err, -EACCES);
	ck_assert_msg(p.client.err == -EACCES || p.client.err == -ECONNRESET, "%d %s",
		      p.client.err, p.client.why);
	ck_assert(!p.server.opened && !p.client.opened);
	ck_assert_int_eq(p.server.frames, 0);
	pair_teardown(&p);
}
END_TEST

START_TEST(test_cleartext_peer_refused_by_tls)
{
	struct pair p;

	pair_setup(&p, false);
	client_connect(&p, NULL); /* cleartext client against a TLS server */
	RUN_UNTIL(&p, 5, p.client.opened);
	{
		struct iovec iov = { .iov_base = "{}", .iov_len = 2 };
		peer_link_push(&p.client.link, FRAME_HELLO, 0, &iov, 1, NULL, NULL);
	}
	RUN_UNTIL(&p, 5, p.server.err);
	ck_assert_int_eq(p.server.err, -EACCES);
	ck_assert_int_eq(p.server.frames, 0);
	pair_teardown(&p);
}
END_TEST

/* raw TCP peer against the server: returns its fd once accepted */
static int raw_peer(struct pair *p)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	ck_assert_int_eq(connect(fd, (struct sockaddr *)&p->addr.ss, p->addr.len), 0);
	RUN_UNTIL(p, 2, p->server.link.fd >= 0);
	return fd;
}

START_TEST(test_stalled_peer_hits_deadline)
{
	/* a ClientHello record header announcing 512 bytes, then a byte per
	 * 100 ms: never complete, never silent */
	static const uint8_t start[] = { 0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc };
	struct pair p;
	int fd;
	double t0;

	pair_setup(&p, false);
	fd = raw_peer(&p);
	t0 = ev_time();
	ck_assert_int_eq(write(fd, start, sizeof(start)), sizeof(start));
	for (int i = 0; i < 40 && !p.server.err; i++) {
		ck_assert_int_eq(write(fd, "\0", 1), 1);
		RUN_UNTIL(&p, 1, p.server.err || ev_time() - t0 > 0.1 * (i + 1));
	}
	ck_assert_int_eq(p.server.err, -ETIMEDOUT);
	ck_assert_msg(ev_time() - t0 < 2.5, "deadline 1.5 s, dropped after %.1f s", ev_time() - t0);
	ck_assert(strstr(p.server.why, "no complete handshake within 1500 ms"));
	close(fd);
	pair_teardown(&p);
}
END_TEST

/* A deadline set again counts from then, and the error gives it. */
START_TEST(test_deadline_set_again)
{
	static const uint8_t start[] = { 0x16, 0x03, 0x01, 0x02, 0x00, 0x01 };
	struct pair p;
	int fd;
	double t0;

	pair_setup(&p, false);
	fd = raw_peer(&p);
	ck_assert_int_eq(write(fd, start, sizeof(start)), sizeof(start));
	t0 = ev_time();
	peer_link_set_deadline(&p.server.link, 400);
	RUN_UNTIL(&p, 3, p.server.err);
	ck_assert_int_eq(p.server.err, -ETIMEDOUT);
	ck_assert_msg(ev_time() - t0 >= 0.2 && ev_time() - t0 < 1.2,
		      "deadline 0.4 s, dropped after %.2f s", ev_time() - t0);
	ck_assert(strstr(p.server.why, "no complete handshake within 400 ms"));
	close(fd);
	pair_teardown(&p);
}
END_TEST

/* Before it is ESTABLISHED, a peer's frame may not exceed the link's
 * unadmitted limit: refused at its header, before any payload is read. */
START_TEST(test_unadmitted_frame_limit)
{
	static uint8_t big[1 << 20];
	struct iovec iov = { .iov_base = big, .iov_len = sizeof(big) };
	uint8_t hdr[PROTO_HDR_SIZE];
	struct pair p;
	int fd;

	pair_setup(&p, true);
	fd = raw_peer(&p);
	p.server.link.unadmitted_max_frame = 64u << 10;
	proto_encode_hdr(hdr, FRAME_HELLO, 0, &iov, 1);
	ck_assert_int_eq(write(fd, hdr, sizeof(hdr)), sizeof(hdr));
	RUN_UNTIL(&p, 2, p.server.err);
	ck_assert_int_eq(p.server.err, -EMSGSIZE);
	ck_assert_int_eq(p.server.frames, 0);
	close(fd);
	pair_teardown(&p);
}
END_TEST

START_TEST(test_reset_mid_handshake)
{
	static const uint8_t start[] = { 0x16, 0x03, 0x01, 0x02, 0x00, 0x01 };
	struct linger lg = { .l_onoff = 1, .l_linger = 0 };
	struct pair p;
	int fd;

	pair_setup(&p, false);
	fd = raw_peer(&p);
	ck_assert_int_eq(write(fd, start, sizeof(start)), sizeof(start));
	RUN_UNTIL(&p, 1, false);
	setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	close(fd); /* RST */
	RUN_UNTIL(&p, 2, p.server.err);
	ck_assert_msg(p.server.err == -ECONNRESET || p.server.err == -EACCES, "%d %s",
		      p.server.err, p.server.why);
	ck_assert(!p.server.opened);
	pair_teardown(&p);
}
END_TEST

/* A refusal reaches the peer before the close (no reset eats it). */
START_TEST(test_close_when_sent)
{
	struct pair p;
	struct iovec iov = { .iov_base = "no", .iov_len = 2 };

	pair_setup(&p, true);
	client_connect(&p, NULL);
	RUN_UNTIL(&p, 5, p.server.opened && p.client.opened);
	ck_assert_str_eq(p.server.link.identity, "cleartext");
	peer_link_push(&p.client.link, FRAME_HELLO, 0, &iov, 1, NULL, NULL);
	peer_link_push(&p.server.link, FRAME_HELLO_REPLY, 0, &iov, 1, NULL, NULL);
	peer_link_close_when_sent(&p.server.link);
	ck_assert_int_eq(peer_link_push(&p.server.link, FRAME_HEARTBEAT, 0, NULL, 0, NULL, NULL),
			 -ENOTCONN);
	RUN_UNTIL(&p, 5, p.client.err);
	ck_assert_int_eq(p.client.frames, 1);
	ck_assert_int_eq(p.client.err, -EPIPE);
	ck_assert_int_eq(p.server.link.state, PEER_LINK_IDLE);
	ck_assert_int_eq(p.server.err, 0); /* no callback after close_when_sent */
	pair_teardown(&p);
}
END_TEST

/* The primary said GOODBYE and closed while our ack was on its way: its
 * close (with our ack unread) resets the connection, and our next send
 * fails. The GOODBYE that came before must still be read as a planned
 * close, not the send's failure taken for a lost peer (a backup would
 * take over from a primary that lives). The read watcher is held back so
 * that the send comes first, as it may in any turn of the loop. */
START_TEST(test_goodbye_before_a_failed_send)
{
	struct pair p;
	struct iovec iov = { .iov_base = "ack", .iov_len = 3 };
	struct iovec bye = { .iov_base = "detached", .iov_len = 8 };

	pair_setup(&p, _i == 1);
	client_connect(&p, _i == 1 ? NULL : p.key);
	RUN_UNTIL(&p, 5, p.server.opened && p.client.opened);
	p.server.close_on_goodbye = true;
	ck_assert_int_eq(peer_link_push(&p.client.link, FRAME_GOODBYE, 0, &bye, 1, NULL, NULL), 0);
	ck_assert_int_eq(peer_link_flush_for(&p.client.link, 1000), 1);
	ck_assert_int_eq(peer_link_push(&p.server.link, FRAME_HEARTBEAT, 0, &iov, 1, NULL, NULL), 0);
	ck_assert_int_eq(peer_link_flush_for(&p.server.link, 1000), 1);
	usleep(20000);
	peer_link_close(&p.client.link); /* the heartbeat unread: a reset */
	usleep(20000);
	ev_io_stop(p.loop, &p.server.link.rio);
	ck_assert_int_eq(peer_link_push(&p.server.link, FRAME_HEARTBEAT, 0, &iov, 1, NULL, NULL), 0);
	RUN_UNTIL(&p, 2, p.server.goodbyes || p.server.err);
	ck_assert_msg(p.server.goodbyes == 1 && p.server.err == 0, "goodbyes %d, error %d (%s)",
		      p.server.goodbyes, p.server.err, p.server.why);
	ck_assert_int_eq(p.server.link.state, PEER_LINK_IDLE);
	pair_teardown(&p);
}
END_TEST

struct raw_reader {
	int fd;
	bool close_at_eof;
	size_t bytes;
	int end; /* 0 the peer closed, else -errno */
};

static void *read_to_the_end(void *arg)
{
	struct raw_reader *r = arg;
	char buf[4096];
	ssize_t n;

	while ((n = recv(r->fd, buf, sizeof(buf), 0)) > 0)
		r->bytes += (size_t)n;
	r->end = n == 0 ? 0 : -errno;
	if (r->close_at_eof)
		close(r->fd);
	return NULL;
}

/* peer_link_finish: the GOODBYE goes out, our side ends, what the peer
 * sent and we never read is drained, so the peer sees the frame and a
 * clean end (no reset), and we wait for its close. */
START_TEST(test_finish_ends_cleanly)
{
	struct pair p;
	struct iovec bye = { .iov_base = "detached", .iov_len = 8 };
	struct raw_reader r = { .close_at_eof = true };
	char unread[1000] = { 0 };
	pthread_t th;

	pair_setup(&p, true);
	r.fd = raw_peer(&p);
	RUN_UNTIL(&p, 2, p.server.opened);
	ck_assert(p.server.opened);
	ck_assert_int_eq(write(r.fd, unread, sizeof(unread)), (ssize_t)sizeof(unread));
	usleep(20000); /* in our socket, never read by the link */
	ck_assert_int_eq(peer_link_push(&p.server.link, FRAME_GOODBYE, 0, &bye, 1, NULL, NULL), 0);
	ck_assert_int_eq(pthread_create(&th, NULL, read_to_the_end, &r), 0);
	ck_assert_int_eq(peer_link_finish(&p.server.link, 2000), 1);
	ck_assert_int_eq(pthread_join(th, NULL), 0);
	ck_assert_msg(r.end == 0, "the peer's read ended with %s", strerror(-r.end));
	ck_assert_uint_eq(r.bytes, PROTO_HDR_SIZE + bye.iov_len);
	ck_assert_int_eq(p.server.link.state, PEER_LINK_IDLE);
	pair_teardown(&p);
}
END_TEST

/* A peer that never closes costs finish its time, no more. */
START_TEST(test_finish_gives_up_in_time)
{
	struct pair p;
	int fd;
	double t0;

	pair_setup(&p, true);
	fd = raw_peer(&p);
	RUN_UNTIL(&p, 2, p.server.opened);
	peer_link_push(&p.server.link, FRAME_GOODBYE, 0, NULL, 0, NULL, NULL);
	t0 = ev_time();
	ck_assert_int_eq(peer_link_finish(&p.server.link, 300), 0);
	ck_assert_msg(ev_time() - t0 >= 0.25 && ev_time() - t0 < 1.0, "%.2f s",
		      ev_time() - t0);
	ck_assert_int_eq(p.server.link.state, PEER_LINK_IDLE);
	close(fd);
	pair_teardown(&p);
}
END_TEST

START_TEST(test_connect_refused)
{
	struct pair p;

	pair_setup(&p, false);
	ev_io_stop(p.loop, &p.accept_w);
	close(p.listen_fd);
	p.listen_fd = socket(AF_INET, SOCK_STREAM, 0); /* for teardown */
	client_connect(&p, p.key);
	RUN_UNTIL(&p, 2, p.client.err);
	ck_assert_int_eq(p.client.err, -ECONNREFUSED);
	ck_assert(strstr(p.client.why, "cannot connect"));
	pair_teardown(&p);
}
END_TEST

START_TEST(test_key_parse)
{
	unsigned char k[64];

	ck_assert_int_eq(link_key_parse("  00ff10Ab\n", k, sizeof(k)), 4);
	ck_assert_uint_eq(k[1], 0xff);
	ck_assert_uint_eq(k[3], 0xab);
	ck_assert_int_eq(link_key_parse("00ff1", k, sizeof(k)), -EINVAL);   /* odd */
	ck_assert_int_eq(link_key_parse("00 ff", k, sizeof(k)), -EINVAL);   /* inner space */
	ck_assert_int_eq(link_key_parse("zz", k, sizeof(k)), -EINVAL);
	ck_assert_int_eq(link_key_parse("0011", k, 1), -EINVAL);            /* too long */
	ck_assert_int_eq(link_key_parse("", k, sizeof(k)), 0);
}
END_TEST

START_TEST(test_key_file_checks)
{
	char dir[] = "/tmp/check_key.XXXXXX", path[128], link[128], err[512];
	struct link_security s;
	struct stat st;
	int fd;

	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/k", dir);
	snprintf(link, sizeof(link), "%s/l", dir);
	ck_assert_int_eq(link_security_load(&s, NULL, NULL, err, sizeof(err)), -ENOKEY);
	ck_assert(strstr(err, "remusctl keygen"));
	ck_assert_int_eq(link_security_load(&s, path, NULL, err, sizeof(err)), -ENOENT);
	ck_assert(strstr(err, "remusctl keygen"));
	write_key(path);
	ck_assert_int_eq(stat(path, &st), 0);
	ck_assert_uint_eq(st.st_mode & 0777, 0600);
	ck_assert_int_eq(link_key_generate(path, err, sizeof(err)), -EEXIST);
	ck_assert_int_eq(link_security_load(&s, path, "a b\n", err, sizeof(err)), 0);
	ck_assert_str_eq(s.identity, "remus:a_b_"); /* no control characters on the wire */
	link_security_free(&s);
	ck_assert_int_eq(symlink(path, link), 0);
	ck_assert_int_eq(link_security_load(&s, link, NULL, err, sizeof(err)), -ELOOP);
	ck_assert_int_eq(chmod(path, 0640), 0);
	ck_assert_int_eq(link_security_load(&s, path, NULL, err, sizeof(err)), -EPERM);
	ck_assert(strstr(err, "chmod 600"));
	ck_assert_int_eq(chmod(path, 0600), 0);
	fd = open(path, O_WRONLY | O_TRUNC);
	ck_assert_int_eq(write(fd, "abcd\n", 5), 5); /* 2 bytes: too short */
	close(fd);
	ck_assert_int_eq(link_security_load(&s, path, NULL, err, sizeof(err)), -EINVAL);
	unlink(path);
	unlink(link);
	rmdir(dir);
}
END_TEST

/* A pulse writes what is queued without the loop turning (a long commit
 * keeps the peer hearing from us); on a link not up it does nothing. */
START_TEST(test_pulse_writes_without_the_loop)
{
	struct pair p;
	struct iovec iov = { .iov_base = "still here", .iov_len = 10 };

	pair_setup(&p, false);
	peer_link_pulse(&p.server.link); /* idle: nothing to do, nothing breaks */
	client_connect(&p, p.key);
	RUN_UNTIL(&p, 5, p.server.opened && p.client.opened);
	ck_assert(p.server.opened && p.client.opened);
	ck_assert_int_eq(peer_link_push(&p.client.link, FRAME_HEARTBEAT, 4, &iov, 1, NULL, NULL), 0);
	ck_assert_uint_gt(p.client.link.out.bytes_queued, 0);
	peer_link_pulse(&p.client.link);
	ck_assert_uint_eq(p.client.link.out.bytes_queued, 0);
	ck_assert_uint_gt(peer_link_unread(&p.server.link), 0);
	RUN_UNTIL(&p, 5, p.server.frames == 1);
	ck_assert_int_eq(p.server.frames, 1);
	ck_assert(p.server.last_ok);
	pair_teardown(&p);
}
END_TEST

/* A pulse whose send fails calls nothing: the loop reports that error
 * (and not whatever the session would answer when asked again). */
START_TEST(test_pulse_error_reported_by_the_loop)
{
	struct pair p;
	static uint8_t page[65536];
	struct iovec iov = { .iov_base = page, .iov_len = sizeof(page) };

	pair_setup(&p, false);
	client_connect(&p, p.key);
	RUN_UNTIL(&p, 5, p.server.opened && p.client.opened);
	ck_assert(p.server.opened && p.client.opened);
	peer_link_close(&p.server.link);
	for (int i = 0; i < 200 && !p.client.link.pulse_err; i++) {
		ck_assert_int_eq(peer_link_push(&p.client.link, FRAME_PAGES, 1, &iov, 1, NULL,
						NULL), 0);
		peer_link_pulse(&p.client.link);
		usleep(5000);
	}
	ck_assert_int_lt(p.client.link.pulse_err, 0);
	ck_assert_int_eq(p.client.err, 0);
	RUN_UNTIL(&p, 5, p.client.err != 0);
	ck_assert_msg(p.client.err == -EPIPE || p.client.err == -ECONNRESET, "err %d: %s",
		      p.client.err, p.client.why);
	pair_teardown(&p);
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("peer_link");
	TCase *tc = tcase_create("core");

	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, test_tls_both_ways);
	tcase_add_test(tc, test_tls_big_frames);
	tcase_add_test(tc, test_pulse_writes_without_the_loop);
	tcase_add_test(tc, test_pulse_error_reported_by_the_loop);
	tcase_add_test(tc, test_wrong_key_refused);
	tcase_add_test(tc, test_cleartext_peer_refused_by_tls);
	tcase_add_test(tc, test_stalled_peer_hits_deadline);
	tcase_add_test(tc, test_deadline_set_again);
	tcase_add_test(tc, test_unadmitted_frame_limit);
	tcase_add_test(tc, test_reset_mid_handshake);
	tcase_add_test(tc, test_close_when_sent);
	tcase_add_loop_test(tc, test_goodbye_before_a_failed_send, 0, 2);
	tcase_add_test(tc, test_finish_ends_cleanly);
	tcase_add_test(tc, test_finish_gives_up_in_time);
	tcase_add_test(tc, test_connect_refused);
	tcase_add_test(tc, test_key_parse);
	tcase_add_test(tc, test_key_file_checks);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
