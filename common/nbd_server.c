/* NBD server for one export: protocol core (pure parsers, a session over an
 * I/O interface) and the socket/thread layer. See nbd_server.h. */
#include "nbd_server.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define NBD_TFLAGS (NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_FUA | \
		    NBD_FLAG_SEND_TRIM | NBD_FLAG_SEND_WRITE_ZEROES)
#define NBD_MAX_OPTIONS 1000   /* options per handshake before we call it abuse */
#define NBD_MAX_LOGGED  8      /* rejected requests logged per connection */

/* ---- byte order helpers ---- */

static uint16_t get16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint64_t get64(const uint8_t *p)
{
	return (uint64_t)get32(p) << 32 | get32(p + 4);
}

static uint8_t *put16(uint8_t *p, uint16_t v)
{
	p[0] = v >> 8;
	p[1] = v;
	return p + 2;
}

static uint8_t *put32(uint8_t *p, uint32_t v)
{
	p[0] = v >> 24;
	p[1] = v >> 16;
	p[2] = v >> 8;
	p[3] = v;
	return p + 4;
}

static uint8_t *put64(uint8_t *p, uint64_t v)
{
	put32(p, v >> 32);
	return put32(p + 4, (uint32_t)v);
}

/* ---- request parser ---- */

uint32_t nbd_errno_to_nbd(int err)
{
	switch (-err) {
	case EPERM: case EACCES: case EROFS: return NBD_EPERM;
	case ENOMEM: return NBD_ENOMEM;
	case EINVAL: return NBD_EINVAL;
	case ENOSPC: case EDQUOT: case EFBIG: return NBD_ENOSPC;
	case EOVERFLOW: return NBD_EOVERFLOW;
	case ENOTSUP: return NBD_ENOTSUP;
	case ESHUTDOWN: return NBD_ESHUTDOWN;
	default: return NBD_EIO;
	}
}

static bool beyond(const struct nbd_request *req, uint64_t size)
{
	return req->offset > size || req->length > size - req->offset;
}

/* Which flags each command takes; -1: not a command we serve. FUA is valid
 * on every command once SEND_FUA is advertised (the spec says so). */
static int allowed_flags(uint16_t type)
{
	switch (type) {
	case NBD_CMD_READ: case NBD_CMD_WRITE: case NBD_CMD_FLUSH: case NBD_CMD_TRIM:
		return NBD_CMD_FLAG_FUA;
	case NBD_CMD_WRITE_ZEROES:
		return NBD_CMD_FLAG_FUA | NBD_CMD_FLAG_NO_HOLE;
	default:
		return -1;
	}
}

enum nbd_req_action nbd_parse_request(const uint8_t hdr[NBD_REQUEST_SIZE], uint64_t export_size,
				      uint32_t max_payload, struct nbd_request *req, uint32_t *error)
{
	bool writes = false;
	int allowed;

	*error = 0;
	memset(req, 0, sizeof(*req));
	if (get32(hdr) != NBD_REQUEST_MAGIC)
		return NBD_REQ_CLOSE;
	req->flags = get16(hdr + 4);
	req->type = get16(hdr + 6);
	req->handle = get64(hdr + 8);
	req->offset = get64(hdr + 16);
	req->length = get32(hdr + 24);
	if (req->type == NBD_CMD_DISC)
		return NBD_REQ_DISC;
	/* An oversized WRITE is followed by data we will not read: the reply
	 * must be the last thing on this connection. */
	if (req->type == NBD_CMD_WRITE && req->length > max_payload) {
		*error = NBD_EOVERFLOW;
		return NBD_REQ_ERROR_CLOSE;
	}
	allowed = allowed_flags(req->type);
	if (allowed < 0 || (req->flags & ~allowed)) {
		*error = NBD_EINVAL;
		return NBD_REQ_ERROR;
	}
	switch (req->type) {
	case NBD_CMD_FLUSH:
		if (req->offset || req->length)
			*error = NBD_EINVAL;
		break;
	case NBD_CMD_READ:
		if (req->length > max_payload)
			*error = NBD_EOVERFLOW;
		break;
	case NBD_CMD_WRITE: case NBD_CMD_WRITE_ZEROES:
		writes = true;
		break;
	}
	if (!*error && req->type != NBD_CMD_FLUSH && beyond(req, export_size))
		*error = writes ? NBD_ENOSPC : NBD_EINVAL;
	return *error ? NBD_REQ_ERROR : NBD_REQ_SERVE;
}

/* ---- option parser ---- */

int nbd_parse_option_header(const uint8_t hdr[NBD_OPT_HEADER_SIZE], uint32_t *option,
			    uint32_t *length)
{
	if (get64(hdr) != NBD_OPTS_MAGIC)
		return -EPROTO;
	*option = get32(hdr + 8);
	*length = get32(hdr + 12);
	return *length > NBD_MAX_OPTION_LEN ? -E2BIG : 0;
}

/* Append one option reply; the caller keeps the total under the buffer's
 * size (names are at most NBD_MAX_NAME, checked before). */
static uint8_t *opt_reply(struct nbd_opt_reply *out, uint32_t option, uint32_t type,
			  uint32_t len)
{
	uint8_t *p = out->data + out->len;

	p = put64(p, NBD_REP_MAGIC);
	p = put32(p, option);
	p = put32(p, type);
	p = put32(p, len);
	out->len += 20 + len;
	return p;
}

static bool name_matches(const struct nbd_export_info *exp, const uint8_t *name, uint32_t len)
{
	/* The empty name is the default export: ours. */
	return !len || (strlen(exp->name) == len && !memcmp(exp->name, name, len));
}

/* NBD_OPT_INFO / NBD_OPT_GO: be32 name length, name, be16 n, n x be16 info. */
static enum nbd_opt_action info_or_go(const struct nbd_export_info *exp, uint32_t option,
				      const uint8_t *data, uint32_t length,
				      struct nbd_opt_reply *out)
{
	bool want_name = false, want_size = false;
	uint32_t name_len, n, i;
	uint8_t *p;

	if (length < 6 || (name_len = get32(data)) > length - 6 || name_len > NBD_MAX_NAME)
		goto invalid;
	n = get16(data + 4 + name_len);
	if (length != 6 + name_len + 2 * n)
		goto invalid;
	if (!name_matches(exp, data + 4, name_len)) {
		opt_reply(out, option, NBD_REP_ERR_UNKNOWN, 0);
		return NBD_OPT_CONTINUE;
	}
	for (i = 0; i < n; i++) {
		uint16_t info = get16(data + 6 + name_len + 2 * i);

		want_name |= info == NBD_INFO_NAME;
		want_size |= info == NBD_INFO_BLOCK_SIZE;
	}
	p = opt_reply(out, option, NBD_REP_INFO, 12);
	p = put16(p, NBD_INFO_EXPORT);
	p = put64(p, exp->size);
	put16(p, exp->tflags);
	if (want_name) {
		p = opt_reply(out, option, NBD_REP_INFO, 2 + strlen(exp->name));
		p = put16(p, NBD_INFO_NAME);
		memcpy(p, exp->name, strlen(exp->name));
	}
	if (want_size) {
		/* Byte granularity: the replica is a plain file. */
		p = opt_reply(out, option, NBD_REP_INFO, 14);
		p = put16(p, NBD_INFO_BLOCK_SIZE);
		p = put32(p, 1);
		p = put32(p, 4096);
		put32(p, NBD_MAX_PAYLOAD);
	}
	opt_reply(out, option, NBD_REP_ACK, 0);
	return option == NBD_OPT_GO ? NBD_OPT_TRANSMIT : NBD_OPT_CONTINUE;
invalid:
	opt_reply(out, option, NBD_REP_ERR_INVALID, 0);
	return NBD_OPT_CONTINUE;
}

static enum nbd_opt_action export_name(const struct nbd_export_info *exp, const uint8_t *data,
				       uint32_t length, struct nbd_opt_reply *out)
{
	uint8_t *p = out->data + out->len;

	/* No error reply exists for this option: the spec says close. */
	if (length > NBD_MAX_NAME || !name_matches(exp, data, length))
		return NBD_OPT_CLOSE;
	p = put64(p, exp->size);
	put16(p, exp->tflags);
	out->len += 10;
	if (!exp->no_zeroes) {
		memset(out->data + out->len, 0, 124);
		out->len += 124;
	}
	return NBD_OPT_TRANSMIT;
}

enum nbd_opt_action nbd_handle_option(const struct nbd_export_info *exp, uint32_t option,
				      const uint8_t *data, uint32_t length,
				      struct nbd_opt_reply *out)
{
	uint8_t *p;

	out->len = 0;
	switch (option) {
	case NBD_OPT_EXPORT_NAME:
		return export_name(exp, data, length, out);
	case NBD_OPT_ABORT:
		opt_reply(out, option, NBD_REP_ACK, 0);
		return NBD_OPT_CLOSE;
	case NBD_OPT_LIST:
		if (length) {
			opt_reply(out, option, NBD_REP_ERR_INVALID, 0);
			return NBD_OPT_CONTINUE;
		}
		p = opt_reply(out, option, NBD_REP_SERVER, 4 + strlen(exp->name));
		p = put32(p, strlen(exp->name));
		memcpy(p, exp->name, strlen(exp->name));
		opt_reply(out, option, NBD_REP_ACK, 0);
		return NBD_OPT_CONTINUE;
	case NBD_OPT_INFO: case NBD_OPT_GO:
		return info_or_go(exp, option, data, length, out);
	default:
		opt_reply(out, option, NBD_REP_ERR_UNSUP, 0);
		return NBD_OPT_CONTINUE;
	}
}

/* ---- session ---- */

struct conn {
	const struct nbd_session *s;
	uint8_t *buf;        /* WRITE data / READ reply */
	size_t buf_size;
	unsigned logged;     /* rejected requests logged so far */
};

/* Counters are read by other threads (nbd_server_get_stats). */
#define COUNT(s, f, n) do { \
	if ((s)->stats) \
		__atomic_add_fetch(&(s)->stats->f, (n), __ATOMIC_RELAXED); \
} while (0)

static const char *what(const struct nbd_session *s)
{
	return s->what ? s->what : "NBD export";
}

static int buf_reserve(struct conn *c, size_t len)
{
	uint8_t *b;

	if (len <= c->buf_size)
		return 0;
	b = realloc(c->buf, len);
	if (!b)
		return -ENOMEM;
	c->buf = b;
	c->buf_size = len;
	return 0;
}

static int send_reply(struct conn *c, uint64_t handle, uint32_t error, const void *data,
		      uint32_t len)
{
	uint8_t hdr[NBD_REPLY_SIZE], *p = hdr;
	int ret;

	p = put32(p, NBD_SIMPLE_REPLY_MAGIC);
	p = put32(p, error);
	put64(p, handle);
	if (error)
		COUNT(c->s, errors, 1);
	ret = c->s->io.write(c->s->io.ctx, hdr, sizeof(hdr));
	if (!ret && !error && len)
		ret = c->s->io.write(c->s->io.ctx, data, len);
	return ret;
}

static const char *cmd_name(uint16_t type)
{
	static const char *const names[] = { "READ", "WRITE", "DISC", "FLUSH", "TRIM", "CACHE",
					     "WRITE_ZEROES", "BLOCK_STATUS" };

	return type < sizeof(names) / sizeof(names[0]) ? names[type] : "unknown command";
}

static void log_rejected(struct conn *c, const struct nbd_request *req, uint32_t error)
{
	if (c->logged++ >= NBD_MAX_LOGGED)
		return;
	log_warn("%s: refused %s (type %u, flags 0x%x) at offset %llu length %u (export size "
		 "%llu): NBD error %u%s", what(c->s), cmd_name(req->type), req->type, req->flags,
		 (unsigned long long)req->offset, req->length, (unsigned long long)c->s->size,
		 error, c->logged == NBD_MAX_LOGGED ? "; further refusals not logged" : "");
}

/* A WRITE's data into c->buf (at most max_payload bytes): to serve it, or
 * to drop it when the request was refused. */
static int read_payload(struct conn *c, uint32_t len)
{
	int ret = buf_reserve(c, len);

	if (ret || !len)
		return ret;
	return c->s->io.read(c->s->io.ctx, c->buf, len);
}

static int call_back(struct conn *c, const struct nbd_request *req)
{
	const struct nbd_session *s = c->s;
	const struct nbd_export_ops *ops = s->ops;
	bool fua = req->flags & NBD_CMD_FLAG_FUA;
	int ret = 0;

	switch (req->type) {
	case NBD_CMD_WRITE:
		if (req->length)
			ret = ops->write(s->opaque, req->offset, c->buf, req->length, fua);
		if (!ret) {
			COUNT(s, writes, 1);
			COUNT(s, bytes_written, req->length);
		}
		break;
	case NBD_CMD_WRITE_ZEROES:
		if (req->length)
			ret = ops->zeroes(s->opaque, req->offset, req->length,
					  !(req->flags & NBD_CMD_FLAG_NO_HOLE), fua);
		if (!ret) {
			COUNT(s, zeroes, 1);
			COUNT(s, zero_bytes, req->length);
		}
		break;
	case NBD_CMD_TRIM:
		if (req->length)
			ret = ops->trim(s->opaque, req->offset, req->length);
		if (!ret)
			COUNT(s, trims, 1);
		break;
	case NBD_CMD_FLUSH:
		ret = ops->flush(s->opaque);
		if (!ret)
			COUNT(s, flushes, 1);
		break;
	case NBD_CMD_READ:
		if (!ops->read)
			ret = -EIO;
		else if (req->length)
			ret = ops->read(s->opaque, req->offset, c->buf, req->length);
		if (!ret)
			COUNT(s, reads, 1);
		break;
	}
	return ret;
}

/* One request: 0 to go on, 1 to close quietly (DISC), or -errno. */
static int serve_request(struct conn *c)
{
	const struct nbd_session *s = c->s;
	uint32_t max = s->max_payload ? s->max_payload : NBD_MAX_PAYLOAD, error;
	uint8_t hdr[NBD_REQUEST_SIZE];
	struct nbd_request req;
	int ret;

	ret = s->io.read(s->io.ctx, hdr, sizeof(hdr));
	if (ret)
		return ret;
	COUNT(s, requests, 1);
	switch (nbd_parse_request(hdr, s->size, max, &req, &error)) {
	case NBD_REQ_DISC:
		return 1;
	case NBD_REQ_CLOSE:
		COUNT(s, errors, 1);
		log_warn("%s: request with bad magic 0x%08x (expected 0x%08x); closing the "
			 "connection", what(s), (unsigned)get32(hdr), NBD_REQUEST_MAGIC);
		return -EPROTO;
	case NBD_REQ_ERROR_CLOSE:
		log_rejected(c, &req, error);
		send_reply(c, req.handle, error, NULL, 0);
		return -EPROTO;
	case NBD_REQ_ERROR:
		log_rejected(c, &req, error);
		if (req.type == NBD_CMD_WRITE && (ret = read_payload(c, req.length)))
			return ret;
		return send_reply(c, req.handle, error, NULL, 0);
	case NBD_REQ_SERVE:
		break;
	}
	if (req.type == NBD_CMD_READ && (ret = buf_reserve(c, req.length)))
		return ret;
	if (req.type == NBD_CMD_WRITE && (ret = read_payload(c, req.length)))
		return ret; /* hung up mid-request: nothing was called */
	ret = call_back(c, &req);
	if (ret < 0) {
		error = nbd_errno_to_nbd(ret);
		log_warn("%s: %s at offset %llu length %u failed: %s; replied NBD error %u",
			 what(s), cmd_name(req.type), (unsigned long long)req.offset, req.length,
			 strerror(-ret), error);
		return send_reply(c, req.handle, error, NULL, 0);
	}
	return send_reply(c, req.handle, 0, c->buf, req.type == NBD_CMD_READ ? req.length : 0);
}

/* Greeting, client flags, options. 1 = transmission, 0 = client aborted,
 * or -errno. */
static int handshake(struct conn *c)
{
	const struct nbd_session *s = c->s;
	struct nbd_export_info exp = { .name = s->name, .size = s->size, .tflags = NBD_TFLAGS };
	uint8_t greet[18], hdr[NBD_OPT_HEADER_SIZE], data[NBD_MAX_OPTION_LEN], *p = greet;
	struct nbd_opt_reply *out;
	uint32_t flags, option, length;
	enum nbd_opt_action act;
	int ret, i;

	p = put64(p, NBD_MAGIC);
	p = put64(p, NBD_OPTS_MAGIC);
	put16(p, NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES);
	if ((ret = s->io.write(s->io.ctx, greet, sizeof(greet))) ||
	    (ret = s->io.read(s->io.ctx, data, 4)))
		return ret;
	flags = get32(data);
	if (flags & ~(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES)) {
		log_warn("%s: client flags 0x%x include unknown bits; closing (spec: MUST drop)",
			 what(s), flags);
		return -EPROTO;
	}
	exp.no_zeroes = flags & NBD_FLAG_C_NO_ZEROES;
	out = malloc(sizeof(*out));
	if (!out)
		return -ENOMEM;
	for (i = 0; i < NBD_MAX_OPTIONS; i++) {
		if ((ret = s->io.read(s->io.ctx, hdr, sizeof(hdr))))
			goto out;
		ret = nbd_parse_option_header(hdr, &option, &length);
		if (ret) {
			log_warn("%s: %s in the handshake (option %u, length %u); closing", what(s),
				 ret == -EPROTO ? "bad option magic" : "option data too long",
				 get32(hdr + 8), get32(hdr + 12));
			ret = -EPROTO;
			goto out;
		}
		if (length && (ret = s->io.read(s->io.ctx, data, length)))
			goto out;
		act = nbd_handle_option(&exp, option, data, length, out);
		if (out->len && (ret = s->io.write(s->io.ctx, out->data, out->len)) &&
		    option != NBD_OPT_ABORT) /* the client may leave without reading the ACK */
			goto out;
		if (act == NBD_OPT_TRANSMIT) {
			ret = 1;
			goto out;
		}
		if (act == NBD_OPT_CLOSE) {
			ret = option == NBD_OPT_ABORT ? 0 : -EPROTO;
			if (ret)
				log_warn("%s: client asked for export '%.*s' by NBD_OPT_EXPORT_NAME; "
					 "only '%s' is served; closing", what(s),
					 (int)(length > 256 ? 256 : length), (const char *)data, s->name);
			goto out;
		}
	}
	log_warn("%s: more than %d options in one handshake; closing", what(s), NBD_MAX_OPTIONS);
	ret = -EPROTO;
out:
	free(out);
	return ret;
}

static void set_connected(const struct nbd_session *s, bool on)
{
	if (s->stats)
		__atomic_store_n(&s->stats->connected, on, __ATOMIC_RELAXED);
}

int nbd_session_run(const struct nbd_session *s)
{
	struct conn c = { .s = s };
	int ret;

	ret = handshake(&c);
	if (ret <= 0) {
		if (ret == -EPROTO)
			COUNT(s, errors, 1);
		return ret;
	}
	COUNT(s, connections, 1);
	set_connected(s, true);
	while (!(ret = serve_request(&c)))
		;
	set_connected(s, false);
	if (ret == -EPROTO)
		COUNT(s, errors, 1);
	free(c.buf);
	return ret == 1 ? 0 : ret;
}

/* ---- the socket and its thread ---- */

struct nbd_server {
	char *path;
	char *name;
	uint64_t size;
	struct nbd_export_ops ops;
	void *opaque;
	int listen_fd;
	int stop_fd;        /* eventfd: nbd_server_stop wakes the thread */
	pthread_t thread;
	bool started;
	bool stopping;      /* set before stop_fd: seen even by a client that never pauses */
	struct nbd_server_stats stats;
};

struct sock_io {
	struct nbd_server *srv;
	int fd;
};

/* A second client while one is served: closed at once, so that it fails
 * fast instead of hanging in the backlog. */
static void refuse_others(struct nbd_server *srv)
{
	int fd;

	while ((fd = accept4(srv->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK)) >= 0) {
		log_warn("NBD export '%s': a second client connected to %s; closed it (one client "
			 "at a time)", srv->name, srv->path);
		close(fd);
	}
}

/* Wait until fd is ready for events, the server stops (-ESHUTDOWN) or
 * another client knocks (refused, then wait again). */
static int wait_fd(struct nbd_server *srv, int fd, short events)
{
	struct pollfd p[3] = {
		{ .fd = fd, .events = events },
		{ .fd = srv->stop_fd, .events = POLLIN },
		{ .fd = srv->listen_fd, .events = POLLIN },
	};

	for (;;) {
		if (poll(p, 3, -1) < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (p[1].revents)
			return -ESHUTDOWN;
		/* The client first: if it just left (EOF) and the next one
		 * knocked at once, the next one is served, not refused. */
		if (p[0].revents)
			return 0;
		if (p[2].revents)
			refuse_others(srv);
	}
}

static int sock_read(void *ctx, void *buf, size_t len)
{
	struct sock_io *io = ctx;
	size_t off = 0;
	ssize_t n;
	int ret;

	if (__atomic_load_n(&io->srv->stopping, __ATOMIC_ACQUIRE))
		return -ESHUTDOWN;
	while (off < len) {
		n = read(io->fd, (char *)buf + off, len - off);
		if (n > 0) {
			off += n;
			continue;
		}
		if (n == 0)
			return -EPIPE;
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN)
			return errno == ECONNRESET ? -EPIPE : -errno;
		if ((ret = wait_fd(io->srv, io->fd, POLLIN)))
			return ret;
	}
	return 0;
}

static int sock_write(void *ctx, const void *buf, size_t len)
{
	struct sock_io *io = ctx;
	size_t off = 0;
	ssize_t n;
	int ret;

	while (off < len) {
		n = send(io->fd, (const char *)buf + off, len - off, MSG_NOSIGNAL);
		if (n >= 0) {
			off += n;
			continue;
		}
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN)
			return errno == ECONNRESET ? -EPIPE : -errno;
		if ((ret = wait_fd(io->srv, io->fd, POLLOUT)))
			return ret;
	}
	return 0;
}

static void serve_client(struct nbd_server *srv, int fd)
{
	struct sock_io io = { .srv = srv, .fd = fd };
	char what[NBD_MAX_NAME + 32];
	struct nbd_session s = {
		.name = srv->name, .size = srv->size, .ops = &srv->ops, .opaque = srv->opaque,
		.io = { .read = sock_read, .write = sock_write, .ctx = &io },
		.stats = &srv->stats, .what = what,
	};
	int ret;

	snprintf(what, sizeof(what), "NBD export '%s'", srv->name);
	log_debug("%s: client connected on %s", what, srv->path);
	ret = nbd_session_run(&s);
	if (ret == -EPIPE)
		log_info("%s: client hung up", what);
	else if (ret && ret != -ESHUTDOWN && ret != -EPROTO)
		log_warn("%s: connection failed: %s", what, strerror(-ret));
	else
		log_debug("%s: client left", what);
}

static void *server_thread(void *arg)
{
	struct nbd_server *srv = arg;
	struct pollfd p[2] = {
		{ .fd = srv->listen_fd, .events = POLLIN },
		{ .fd = srv->stop_fd, .events = POLLIN },
	};
	int fd;

	for (;;) {
		if (poll(p, 2, -1) < 0 && errno != EINTR) {
			log_err("NBD export '%s': poll failed: %s; the server stops", srv->name,
				strerror(errno));
			break;
		}
		if (p[1].revents)
			break;
		if (!p[0].revents)
			continue;
		fd = accept4(srv->listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
		if (fd < 0)
			continue; /* EAGAIN, ECONNABORTED: nothing to serve */
		serve_client(srv, fd);
		close(fd);
	}
	return NULL;
}

static int listen_unix(const char *path, int *out)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct stat st;
	int fd, ret;

	if (strlen(path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	strcpy(sa.sun_path, path);
	if (lstat(path, &st) == 0) {
		if (!S_ISSOCK(st.st_mode))
			return -EEXIST;
		unlink(path); /* a stale socket of an earlier run */
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return -errno;
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) || listen(fd, 4)) {
		ret = -errno;
		close(fd);
		return ret;
	}
	*out = fd;
	return 0;
}

static void server_free(struct nbd_server *srv)
{
	if (srv->listen_fd >= 0) {
		close(srv->listen_fd);
		unlink(srv->path);
	}
	if (srv->stop_fd >= 0)
		close(srv->stop_fd);
	free(srv->path);
	free(srv->name);
	free(srv);
}

int nbd_server_start(const char *socket_path, const char *export_name, uint64_t size,
		     const struct nbd_export_ops *ops, void *opaque, struct nbd_server **out)
{
	struct nbd_server *srv;
	int ret;

	*out = NULL;
	if (!ops || !ops->write || !ops->zeroes || !ops->trim || !ops->flush ||
	    strlen(export_name) > NBD_MAX_NAME) {
		log_err("NBD export '%.64s': write, zeroes, trim and flush callbacks and a name of "
			"at most %u bytes are required", export_name, NBD_MAX_NAME);
		return -EINVAL;
	}
	srv = calloc(1, sizeof(*srv));
	if (!srv)
		return -ENOMEM;
	srv->listen_fd = srv->stop_fd = -1;
	srv->path = strdup(socket_path);
	srv->name = strdup(export_name);
	srv->size = size;
	srv->ops = *ops;
	srv->opaque = opaque;
	if (!srv->path || !srv->name) {
		ret = -ENOMEM;
		goto fail;
	}
	srv->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (srv->stop_fd < 0) {
		ret = -errno;
		goto fail;
	}
	ret = listen_unix(socket_path, &srv->listen_fd);
	if (ret) {
		log_err("NBD export '%s': cannot listen on %s: %s%s", export_name, socket_path,
			strerror(-ret), ret == -EEXIST ? " (not a socket; remove it or pick another "
			"path)" : "");
		goto fail;
	}
	ret = -pthread_create(&srv->thread, NULL, server_thread, srv);
	if (ret) {
		log_err("NBD export '%s': cannot start its thread: %s", export_name, strerror(-ret));
		goto fail;
	}
	srv->started = true;
	*out = srv;
	return 0;
fail:
	server_free(srv);
	return ret;
}

void nbd_server_stop(struct nbd_server *s)
{
	uint64_t one = 1;

	if (!s)
		return;
	if (s->started) {
		__atomic_store_n(&s->stopping, true, __ATOMIC_RELEASE);
		if (write(s->stop_fd, &one, sizeof(one)) != sizeof(one))
			log_err("NBD export '%s': cannot wake the server thread: %s", s->name,
				strerror(errno));
		pthread_join(s->thread, NULL);
	}
	server_free(s);
}

void nbd_server_get_stats(const struct nbd_server *s, struct nbd_server_stats *out)
{
#define LOAD(f) (out->f = __atomic_load_n(&s->stats.f, __ATOMIC_RELAXED))
	LOAD(connections);
	LOAD(requests);
	LOAD(writes);
	LOAD(bytes_written);
	LOAD(zeroes);
	LOAD(zero_bytes);
	LOAD(trims);
	LOAD(flushes);
	LOAD(reads);
	LOAD(errors);
	LOAD(connected);
#undef LOAD
}
