/* NBD server (common/nbd_server.c): the pure request and option parsers,
 * the server over a real unix socket driven by a hand-written client, and a
 * real QEMU mirroring a disk to it with blockdev-mirror write-blocking, which
 * checks the claim the disk design rests on: a guest write completes only
 * after the server replied; when QMP `stop` returns, every write issued
 * before it has reached the server; and no write arrives while the VM is
 * stopped (xen-save-devices-state sends a FLUSH, nothing else). */
#include "nbd_server.h"
#include "qmp.h"

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define DISK_SIZE (8u << 20)
#define EXPORT    "remus-check-nbd"
#define MAX_OPS   4096

/* ---- helpers ---- */

static void msleep(int ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

static long long now_ms(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1000LL + t.tv_nsec / 1000000;
}

static void put16(uint8_t *p, uint16_t v) { p[0] = v >> 8; p[1] = v; }
static void put32(uint8_t *p, uint32_t v) { put16(p, v >> 16); put16(p + 2, v); }
static void put64(uint8_t *p, uint64_t v) { put32(p, v >> 32); put32(p + 4, v); }
static uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static uint32_t get32(const uint8_t *p) { return (uint32_t)get16(p) << 16 | get16(p + 2); }
static uint64_t get64(const uint8_t *p) { return (uint64_t)get32(p) << 32 | get32(p + 4); }

static void make_req(uint8_t hdr[NBD_REQUEST_SIZE], uint32_t magic, uint16_t flags,
		     uint16_t type, uint64_t handle, uint64_t off, uint32_t len)
{
	put32(hdr, magic);
	put16(hdr + 4, flags);
	put16(hdr + 6, type);
	put64(hdr + 8, handle);
	put64(hdr + 16, off);
	put32(hdr + 24, len);
}

/* ---- the export behind the server: a disk in memory that records ops ---- */

struct op {
	uint16_t type;
	uint64_t off;
	uint32_t len;
	bool fua, may_trim;
};

struct rec {
	pthread_mutex_t lock;
	uint8_t *disk;
	uint64_t size;
	struct op ops[MAX_OPS];
	unsigned n;         /* callbacks entered (all of them, even past MAX_OPS) */
	unsigned done;      /* callbacks returned */
	unsigned flushes;
	int fail;           /* every callback returns this when nonzero */
	int delay_ms;       /* writes sleep this long before returning */
	bool out_of_range;  /* a callback got a range outside the disk: a bug */
};

static void rec_add(struct rec *r, uint16_t type, uint64_t off, uint32_t len, bool fua,
		    bool may_trim)
{
	if (off > r->size || len > r->size - off)
		r->out_of_range = true;
	if (r->n < MAX_OPS)
		r->ops[r->n] = (struct op){ type, off, len, fua, may_trim };
	r->n++;
}

static int rec_write(void *opaque, uint64_t off, const void *data, uint32_t len, bool fua)
{
	struct rec *r = opaque;
	int delay, ret;

	pthread_mutex_lock(&r->lock);
	rec_add(r, NBD_CMD_WRITE, off, len, fua, false);
	if (!r->fail && !r->out_of_range)
		memcpy(r->disk + off, data, len);
	delay = r->delay_ms;
	ret = r->fail;
	pthread_mutex_unlock(&r->lock);
	if (delay)
		msleep(delay);
	pthread_mutex_lock(&r->lock);
	r->done++;
	pthread_mutex_unlock(&r->lock);
	return ret;
}

static int rec_zeroes(void *opaque, uint64_t off, uint32_t len, bool may_trim, bool fua)
{
	struct rec *r = opaque;
	int ret;

	pthread_mutex_lock(&r->lock);
	rec_add(r, NBD_CMD_WRITE_ZEROES, off, len, fua, may_trim);
	if (!r->fail && !r->out_of_range)
		memset(r->disk + off, 0, len);
	r->done++;
	ret = r->fail;
	pthread_mutex_unlock(&r->lock);
	return ret;
}

static int rec_trim(void *opaque, uint64_t off, uint32_t len)
{
	struct rec *r = opaque;
	int ret;

	pthread_mutex_lock(&r->lock);
	rec_add(r, NBD_CMD_TRIM, off, len, false, true);
	r->done++;
	ret = r->fail;
	pthread_mutex_unlock(&r->lock);
	return ret;
}

static int rec_flush(void *opaque)
{
	struct rec *r = opaque;
	int ret;

	pthread_mutex_lock(&r->lock);
	rec_add(r, NBD_CMD_FLUSH, 0, 0, false, false);
	r->flushes++;
	r->done++;
	ret = r->fail;
	pthread_mutex_unlock(&r->lock);
	return ret;
}

static int rec_read(void *opaque, uint64_t off, void *buf, uint32_t len)
{
	struct rec *r = opaque;
	int ret;

	pthread_mutex_lock(&r->lock);
	rec_add(r, NBD_CMD_READ, off, len, false, false);
	if (!r->out_of_range)
		memcpy(buf, r->disk + off, len);
	r->done++;
	ret = r->fail;
	pthread_mutex_unlock(&r->lock);
	return ret;
}

static const struct nbd_export_ops rec_ops = {
	rec_write, rec_zeroes, rec_trim, rec_flush, rec_read,
};
static const struct nbd_export_ops rec_ops_noread = {
	rec_write, rec_zeroes, rec_trim, rec_flush, NULL,
};

static unsigned rec_count(struct rec *r)
{
	unsigned n;

	pthread_mutex_lock(&r->lock);
	n = r->n;
	pthread_mutex_unlock(&r->lock);
	return n;
}

/* ---- server fixture ---- */

struct fixture {
	char dir[64];
	char sock[PATH_MAX];
	struct rec rec;
	struct nbd_server *srv;
};

static void fixture_start(struct fixture *f, const struct nbd_export_ops *ops, uint64_t size)
{
	memset(f, 0, sizeof(*f));
	snprintf(f->dir, sizeof(f->dir), "/tmp/check_nbd.XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(f->dir));
	snprintf(f->sock, sizeof(f->sock), "%s/nbd.sock", f->dir);
	pthread_mutex_init(&f->rec.lock, NULL);
	f->rec.size = size;
	f->rec.disk = malloc(size);
	ck_assert_ptr_nonnull(f->rec.disk);
	memset(f->rec.disk, 0xee, size);
	ck_assert_int_eq(nbd_server_start(f->sock, EXPORT, size, ops, &f->rec, &f->srv), 0);
}

static void fixture_stop(struct fixture *f)
{
	nbd_server_stop(f->srv);
	ck_assert_int_eq(access(f->sock, F_OK), -1); /* the socket is gone */
	ck_assert(!f->rec.out_of_range);
	free(f->rec.disk);
	rmdir(f->dir);
}

/* ---- a hand-written client ---- */

static int client_connect(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct timeval tv = { 5, 0 };
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);

	ck_assert_int_ge(fd, 0);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
	ck_assert_int_eq(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	return fd;
}

static void xsend(int fd, const void *buf, size_t len)
{
	ck_assert_int_eq(send(fd, buf, len, MSG_NOSIGNAL), (ssize_t)len);
}

static void xrecv(int fd, void *buf, size_t len)
{
	size_t off = 0;
	ssize_t n;

	while (off < len) {
		n = recv(fd, (char *)buf + off, len - off, 0);
		ck_assert_msg(n > 0, "recv: %zd (%s) after %zu of %zu bytes", n,
			      n ? strerror(errno) : "EOF", off, len);
		off += n;
	}
}

/* The server closed the connection: EOF (or a reset) within 5 s. */
static bool closed_by_peer(int fd)
{
	char c;
	ssize_t n = recv(fd, &c, 1, 0);

	return n == 0 || (n < 0 && (errno == ECONNRESET || errno == EPIPE));
}

static void greet(int fd, uint32_t cflags)
{
	uint8_t g[18], f[4];

	xrecv(fd, g, sizeof(g));
	ck_assert(get64(g) == NBD_MAGIC);
	ck_assert(get64(g + 8) == NBD_OPTS_MAGIC);
	ck_assert_uint_eq(get16(g + 16), NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES);
	put32(f, cflags);
	xsend(fd, f, sizeof(f));
}

static void send_opt(int fd, uint32_t opt, const void *data, uint32_t len)
{
	uint8_t h[16];

	put64(h, NBD_OPTS_MAGIC);
	put32(h + 8, opt);
	put32(h + 12, len);
	xsend(fd, h, sizeof(h));
	if (len)
		xsend(fd, data, len);
}

/* One option reply; returns its type, data into buf (up to size). */
static uint32_t recv_opt_reply(int fd, uint32_t opt, uint8_t *buf, size_t size, uint32_t *len)
{
	uint8_t h[20];

	xrecv(fd, h, sizeof(h));
	ck_assert(get64(h) == NBD_REP_MAGIC);
	ck_assert_uint_eq(get32(h + 8), opt);
	*len = get32(h + 16);
	ck_assert_uint_le(*len, size);
	xrecv(fd, buf, *len);
	return get32(h + 12);
}

/* Data of an NBD_OPT_GO / NBD_OPT_INFO asking for the given info types. */
static uint32_t go_data(uint8_t *d, const char *name, const uint16_t *infos, unsigned n)
{
	uint32_t len = strlen(name), i;

	put32(d, len);
	memcpy(d + 4, name, len);
	put16(d + 4 + len, n);
	for (i = 0; i < n; i++)
		put16(d + 6 + len + 2 * i, infos[i]);
	return 6 + len + 2 * n;
}

/* Connect and GO: a client in the transmission phase. */
static int client_go(const char *path)
{
	uint8_t d[64], r[64];
	uint32_t len, type;
	int fd = client_connect(path);

	greet(fd, NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES);
	send_opt(fd, NBD_OPT_GO, d, go_data(d, EXPORT, NULL, 0));
	while ((type = recv_opt_reply(fd, NBD_OPT_GO, r, sizeof(r), &len)) == NBD_REP_INFO)
		;
	ck_assert_uint_eq(type, NBD_REP_ACK);
	return fd;
}

static void send_req(int fd, uint16_t flags, uint16_t type, uint64_t handle, uint64_t off,
		     uint32_t len)
{
	uint8_t h[NBD_REQUEST_SIZE];

	make_req(h, NBD_REQUEST_MAGIC, flags, type, handle, off, len);
	xsend(fd, h, sizeof(h));
}

static uint32_t recv_reply(int fd, uint64_t handle)
{
	uint8_t h[NBD_REPLY_SIZE];

	xrecv(fd, h, sizeof(h));
	ck_assert_uint_eq(get32(h), NBD_SIMPLE_REPLY_MAGIC);
	ck_assert(get64(h + 8) == handle);
	return get32(h + 4);
}

static void disc(int fd)
{
	send_req(fd, 0, NBD_CMD_DISC, 99, 0, 0);
	ck_assert(closed_by_peer(fd));
	close(fd);
}

/* ---- the request parser, pure ---- */

START_TEST(test_parse_valid)
{
	static const struct { uint16_t type, flags; uint64_t off; uint32_t len; } ok[] = {
		{ NBD_CMD_WRITE, 0, 0, 1000 },
		{ NBD_CMD_WRITE, NBD_CMD_FLAG_FUA, 1000 - 10, 10 },     /* up to the end */
		{ NBD_CMD_WRITE, 0, 1000, 0 },                          /* empty, at the end */
		{ NBD_CMD_READ, NBD_CMD_FLAG_FUA, 0, 1000 },
		{ NBD_CMD_WRITE_ZEROES, NBD_CMD_FLAG_NO_HOLE | NBD_CMD_FLAG_FUA, 0, 1000 },
		{ NBD_CMD_TRIM, 0, 500, 500 },
		{ NBD_CMD_FLUSH, 0, 0, 0 },
		{ NBD_CMD_FLUSH, NBD_CMD_FLAG_FUA, 0, 0 },
	};
	struct nbd_request req;
	uint8_t h[NBD_REQUEST_SIZE];
	uint32_t err;

	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		make_req(h, NBD_REQUEST_MAGIC, ok[i].flags, ok[i].type, 0x1122334455667788ull,
			 ok[i].off, ok[i].len);
		ck_assert_msg(nbd_parse_request(h, 1000, 4096, &req, &err) == NBD_REQ_SERVE,
			      "case %zu refused with %u", i, err);
		ck_assert_uint_eq(err, 0);
		ck_assert_uint_eq(req.type, ok[i].type);
		ck_assert_uint_eq(req.flags, ok[i].flags);
		ck_assert(req.handle == 0x1122334455667788ull);
		ck_assert(req.offset == ok[i].off);
		ck_assert_uint_eq(req.length, ok[i].len);
	}
	make_req(h, NBD_REQUEST_MAGIC, 0xffff, NBD_CMD_DISC, 1, 5, 5);
	ck_assert_int_eq(nbd_parse_request(h, 1000, 4096, &req, &err), NBD_REQ_DISC);
}
END_TEST

START_TEST(test_parse_invalid)
{
	static const struct {
		uint32_t magic; uint16_t type, flags; uint64_t off; uint32_t len;
		enum nbd_req_action act; uint32_t err;
	} bad[] = {
		{ 0x25609514, NBD_CMD_WRITE, 0, 0, 1, NBD_REQ_CLOSE, 0 },
		{ 0, NBD_CMD_FLUSH, 0, 0, 0, NBD_REQ_CLOSE, 0 },
		{ NBD_REQUEST_MAGIC, NBD_CMD_CACHE, 0, 0, 1, NBD_REQ_ERROR, NBD_EINVAL },
		{ NBD_REQUEST_MAGIC, NBD_CMD_BLOCK_STATUS, 0, 0, 1, NBD_REQ_ERROR, NBD_EINVAL },
		{ NBD_REQUEST_MAGIC, 0x1234, 0, 0, 1, NBD_REQ_ERROR, NBD_EINVAL },
		/* flags the command does not take */
		{ NBD_REQUEST_MAGIC, NBD_CMD_WRITE, NBD_CMD_FLAG_NO_HOLE, 0, 1, NBD_REQ_ERROR, NBD_EINVAL },
		{ NBD_REQUEST_MAGIC, NBD_CMD_WRITE, 1u << 4, 0, 1, NBD_REQ_ERROR, NBD_EINVAL },
		{ NBD_REQUEST_MAGIC, NBD_CMD_READ, 1u << 2, 0, 1, NBD_REQ_ERROR, NBD_EINVAL },
		{ NBD_REQUEST_MAGIC, NBD_CMD_TRIM, NBD_CMD_FLAG_NO_HOLE, 0, 1, NBD_REQ_ERROR, NBD_EINVAL },
		{ NBD_REQUEST_MAGIC, NBD_CMD_WRITE_ZEROES, 1u << 4, 0, 1, NBD_REQ_ERROR, NBD_EINVAL },
		/* beyond the export: writes ENOSPC, the others EINVAL */
		{ NBD_REQUEST_MAGIC, NBD_CMD_WRITE, 0, 999, 2, NBD_REQ_ERROR, NBD_ENOSPC },
		{ NBD_REQUEST_MAGIC, NBD_CMD_WRITE, 0, 1001, 0, NBD_REQ_ERROR, NBD_ENOSPC },
		{ NBD_REQUEST_MAGIC, NBD_CMD_WRITE, 0, UINT64_MAX, 2, NBD_REQ_ERROR, NBD_ENOSPC },
		{ NBD_REQUEST_MAGIC, NBD_CMD_WRITE_ZEROES, 0, UINT64_MAX - 1, 4, NBD_REQ_ERROR, NBD_ENOSPC },
		{ NBD_REQUEST_MAGIC, NBD_CMD_TRIM, 0, 1, 1000, NBD_REQ_ERROR, NBD_EINVAL },
		{ NBD_REQUEST_MAGIC, NBD_CMD_READ, 0, 1ull << 63, 1, NBD_REQ_ERROR, NBD_EINVAL },
		/* FLUSH carries no range */
		{ NBD_REQUEST_MAGIC, NBD_CMD_FLUSH, 0, 1, 0, NBD_REQ_ERROR, NBD_EINVAL },
		{ NBD_REQUEST_MAGIC, NBD_CMD_FLUSH, 0, 0, 1, NBD_REQ_ERROR, NBD_EINVAL },
		/* over the payload limit */
		{ NBD_REQUEST_MAGIC, NBD_CMD_READ, 0, 0, 4097, NBD_REQ_ERROR, NBD_EOVERFLOW },
		{ NBD_REQUEST_MAGIC, NBD_CMD_WRITE, 0, 0, 4097, NBD_REQ_ERROR_CLOSE, NBD_EOVERFLOW },
		{ NBD_REQUEST_MAGIC, NBD_CMD_WRITE, NBD_CMD_FLAG_NO_HOLE, 0, UINT32_MAX,
		  NBD_REQ_ERROR_CLOSE, NBD_EOVERFLOW },
	};
	struct nbd_request req;
	uint8_t h[NBD_REQUEST_SIZE];
	uint32_t err;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		make_req(h, bad[i].magic, bad[i].flags, bad[i].type, 7, bad[i].off, bad[i].len);
		ck_assert_msg(nbd_parse_request(h, 1000, 4096, &req, &err) == bad[i].act,
			      "case %zu: wrong action", i);
		ck_assert_msg(err == bad[i].err, "case %zu: error %u, expected %u", i, err, bad[i].err);
	}
	/* TRIM and WRITE_ZEROES carry no data: only the export size limits them. */
	make_req(h, NBD_REQUEST_MAGIC, 0, NBD_CMD_TRIM, 7, 0, 1u << 30);
	ck_assert_int_eq(nbd_parse_request(h, 1ull << 31, 4096, &req, &err), NBD_REQ_SERVE);
	make_req(h, NBD_REQUEST_MAGIC, 0, NBD_CMD_WRITE_ZEROES, 7, 0, 1u << 30);
	ck_assert_int_eq(nbd_parse_request(h, 1ull << 31, 4096, &req, &err), NBD_REQ_SERVE);
}
END_TEST

START_TEST(test_errno_map)
{
	ck_assert_uint_eq(nbd_errno_to_nbd(-EPERM), NBD_EPERM);
	ck_assert_uint_eq(nbd_errno_to_nbd(-EROFS), NBD_EPERM);
	ck_assert_uint_eq(nbd_errno_to_nbd(-EIO), NBD_EIO);
	ck_assert_uint_eq(nbd_errno_to_nbd(-ENOSPC), NBD_ENOSPC);
	ck_assert_uint_eq(nbd_errno_to_nbd(-EDQUOT), NBD_ENOSPC);
	ck_assert_uint_eq(nbd_errno_to_nbd(-EFBIG), NBD_ENOSPC);
	ck_assert_uint_eq(nbd_errno_to_nbd(-EINVAL), NBD_EINVAL);
	ck_assert_uint_eq(nbd_errno_to_nbd(-ENOMEM), NBD_ENOMEM);
	ck_assert_uint_eq(nbd_errno_to_nbd(-EOVERFLOW), NBD_EOVERFLOW);
	ck_assert_uint_eq(nbd_errno_to_nbd(-ENOTSUP), NBD_ENOTSUP);
	ck_assert_uint_eq(nbd_errno_to_nbd(-ESHUTDOWN), NBD_ESHUTDOWN);
	ck_assert_uint_eq(nbd_errno_to_nbd(-EBADF), NBD_EIO);
	ck_assert_uint_eq(nbd_errno_to_nbd(-12345), NBD_EIO);
}
END_TEST

/* ---- the option parser, pure ---- */

static const struct nbd_export_info test_exp = { .name = "disk0", .size = 1ull << 40,
						 .tflags = 0x6d };

/* Walk the option replies in out: their types, in order, into types[]. */
static unsigned reply_types(const struct nbd_opt_reply *out, uint32_t opt, uint32_t *types,
			    unsigned max)
{
	size_t off = 0;
	unsigned n = 0;

	while (off < out->len) {
		ck_assert_uint_ge(out->len - off, 20);
		ck_assert(get64(out->data + off) == NBD_REP_MAGIC);
		ck_assert_uint_eq(get32(out->data + off + 8), opt);
		ck_assert_uint_lt(n, max);
		types[n++] = get32(out->data + off + 12);
		off += 20 + get32(out->data + off + 16);
	}
	ck_assert_uint_eq(off, out->len);
	return n;
}

START_TEST(test_options_pure)
{
	static const uint16_t infos[] = { NBD_INFO_BLOCK_SIZE, NBD_INFO_NAME, 77 };
	struct nbd_opt_reply *out = malloc(sizeof(*out));
	struct nbd_export_info exp = test_exp;
	uint32_t types[8];
	uint8_t d[64];
	uint32_t len;

	ck_assert_ptr_nonnull(out);
	/* GO: INFO_EXPORT (size, flags), the asked-for name and sizes, ACK. */
	len = go_data(d, "disk0", infos, 3);
	ck_assert_int_eq(nbd_handle_option(&exp, NBD_OPT_GO, d, len, out), NBD_OPT_TRANSMIT);
	ck_assert_uint_eq(reply_types(out, NBD_OPT_GO, types, 8), 4);
	ck_assert_uint_eq(types[0], NBD_REP_INFO);
	ck_assert_uint_eq(get16(out->data + 20), NBD_INFO_EXPORT);
	ck_assert(get64(out->data + 22) == 1ull << 40);
	ck_assert_uint_eq(get16(out->data + 30), 0x6d);
	ck_assert_uint_eq(types[1], NBD_REP_INFO);
	ck_assert_uint_eq(get16(out->data + 52), NBD_INFO_NAME);
	ck_assert(!memcmp(out->data + 54, "disk0", 5));
	ck_assert_uint_eq(get16(out->data + 79), NBD_INFO_BLOCK_SIZE);
	ck_assert_uint_eq(get32(out->data + 81), 1);
	ck_assert_uint_eq(get32(out->data + 85), 4096);
	ck_assert_uint_eq(get32(out->data + 89), NBD_MAX_PAYLOAD);
	ck_assert_uint_eq(types[3], NBD_REP_ACK);
	/* INFO: the same, but the handshake goes on; the empty name is ours. */
	len = go_data(d, "", NULL, 0);
	ck_assert_int_eq(nbd_handle_option(&exp, NBD_OPT_INFO, d, len, out), NBD_OPT_CONTINUE);
	ck_assert_uint_eq(reply_types(out, NBD_OPT_INFO, types, 8), 2);
	ck_assert_uint_eq(types[0], NBD_REP_INFO);
	ck_assert_uint_eq(types[1], NBD_REP_ACK);
	/* Unknown export, malformed data. */
	len = go_data(d, "disk1", NULL, 0);
	ck_assert_int_eq(nbd_handle_option(&exp, NBD_OPT_GO, d, len, out), NBD_OPT_CONTINUE);
	ck_assert_uint_eq(reply_types(out, NBD_OPT_GO, types, 8), 1);
	ck_assert_uint_eq(types[0], NBD_REP_ERR_UNKNOWN);
	ck_assert_int_eq(nbd_handle_option(&exp, NBD_OPT_GO, d, len - 1, out), NBD_OPT_CONTINUE);
	reply_types(out, NBD_OPT_GO, types, 8);
	ck_assert_uint_eq(types[0], NBD_REP_ERR_INVALID);
	put32(d, 0xfffffff0); /* name longer than the data */
	ck_assert_int_eq(nbd_handle_option(&exp, NBD_OPT_GO, d, len, out), NBD_OPT_CONTINUE);
	reply_types(out, NBD_OPT_GO, types, 8);
	ck_assert_uint_eq(types[0], NBD_REP_ERR_INVALID);
	ck_assert_int_eq(nbd_handle_option(&exp, NBD_OPT_INFO, d, 3, out), NBD_OPT_CONTINUE);
	reply_types(out, NBD_OPT_INFO, types, 8);
	ck_assert_uint_eq(types[0], NBD_REP_ERR_INVALID);
	/* LIST: one SERVER with the name, then ACK; data is not allowed. */
	ck_assert_int_eq(nbd_handle_option(&exp, NBD_OPT_LIST, NULL, 0, out), NBD_OPT_CONTINUE);
	ck_assert_uint_eq(reply_types(out, NBD_OPT_LIST, types, 8), 2);
	ck_assert_uint_eq(types[0], NBD_REP_SERVER);
	ck_assert_uint_eq(get32(out->data + 20), 5);
	ck_assert(!memcmp(out->data + 24, "disk0", 5));
	ck_assert_uint_eq(types[1], NBD_REP_ACK);
	ck_assert_int_eq(nbd_handle_option(&exp, NBD_OPT_LIST, d, 1, out), NBD_OPT_CONTINUE);
	reply_types(out, NBD_OPT_LIST, types, 8);
	ck_assert_uint_eq(types[0], NBD_REP_ERR_INVALID);
	/* ABORT: ACK, close. Others: unsupported. */
	ck_assert_int_eq(nbd_handle_option(&exp, NBD_OPT_ABORT, NULL, 0, out), NBD_OPT_CLOSE);
	reply_types(out, NBD_OPT_ABORT, types, 8);
	ck_assert_uint_eq(types[0], NBD_REP_ACK);
	for (uint32_t opt = 4; opt < 20; opt++) {
		if (opt == NBD_OPT_INFO || opt == NBD_OPT_GO)
			continue;
		ck_assert_int_eq(nbd_handle_option(&exp, opt, d, 0, out), NBD_OPT_CONTINUE);
		ck_assert_uint_eq(reply_types(out, opt, types, 8), 1);
		ck_assert_uint_eq(types[0], NBD_REP_ERR_UNSUP);
	}
	/* EXPORT_NAME: size, flags and 124 zeroes unless NO_ZEROES; a wrong
	 * name has no error reply: close. */
	ck_assert_int_eq(nbd_handle_option(&exp, NBD_OPT_EXPORT_NAME, (const uint8_t *)"disk0", 5,
					   out), NBD_OPT_TRANSMIT);
	ck_assert_uint_eq(out->len, 134);
	ck_assert(get64(out->data) == 1ull << 40);
	ck_assert_uint_eq(get16(out->data + 8), 0x6d);
	exp.no_zeroes = true;
	ck_assert_int_eq(nbd_handle_option(&exp, NBD_OPT_EXPORT_NAME, NULL, 0, out),
			 NBD_OPT_TRANSMIT);
	ck_assert_uint_eq(out->len, 10);
	ck_assert_int_eq(nbd_handle_option(&exp, NBD_OPT_EXPORT_NAME, (const uint8_t *)"disk", 4,
					   out), NBD_OPT_CLOSE);
	ck_assert_uint_eq(out->len, 0);
	free(out);
}
END_TEST

START_TEST(test_option_header)
{
	uint8_t h[16];
	uint32_t opt, len;

	put64(h, NBD_OPTS_MAGIC);
	put32(h + 8, NBD_OPT_GO);
	put32(h + 12, 12);
	ck_assert_int_eq(nbd_parse_option_header(h, &opt, &len), 0);
	ck_assert_uint_eq(opt, NBD_OPT_GO);
	ck_assert_uint_eq(len, 12);
	put32(h + 12, NBD_MAX_OPTION_LEN + 1);
	ck_assert_int_eq(nbd_parse_option_header(h, &opt, &len), -E2BIG);
	h[0] ^= 1;
	ck_assert_int_eq(nbd_parse_option_header(h, &opt, &len), -EPROTO);
}
END_TEST

/* ---- the server on a socket ---- */

START_TEST(test_handshake_go)
{
	static const uint16_t infos[] = { NBD_INFO_BLOCK_SIZE };
	struct nbd_server_stats st;
	struct fixture f;
	uint8_t d[64], r[128];
	uint32_t len;
	int fd;

	fixture_start(&f, &rec_ops, DISK_SIZE);
	fd = client_connect(f.sock);
	greet(fd, NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES);
	/* What QEMU 7.2 sends first: refused, it falls back to simple replies. */
	send_opt(fd, NBD_OPT_STRUCTURED_REPLY, NULL, 0);
	ck_assert_uint_eq(recv_opt_reply(fd, NBD_OPT_STRUCTURED_REPLY, r, sizeof(r), &len),
			  NBD_REP_ERR_UNSUP);
	send_opt(fd, NBD_OPT_LIST, NULL, 0);
	ck_assert_uint_eq(recv_opt_reply(fd, NBD_OPT_LIST, r, sizeof(r), &len), NBD_REP_SERVER);
	ck_assert_uint_eq(len, 4 + strlen(EXPORT));
	ck_assert(!memcmp(r + 4, EXPORT, strlen(EXPORT)));
	ck_assert_uint_eq(recv_opt_reply(fd, NBD_OPT_LIST, r, sizeof(r), &len), NBD_REP_ACK);
	send_opt(fd, NBD_OPT_INFO, d, go_data(d, EXPORT, NULL, 0));
	ck_assert_uint_eq(recv_opt_reply(fd, NBD_OPT_INFO, r, sizeof(r), &len), NBD_REP_INFO);
	ck_assert_uint_eq(recv_opt_reply(fd, NBD_OPT_INFO, r, sizeof(r), &len), NBD_REP_ACK);
	send_opt(fd, NBD_OPT_GO, d, go_data(d, "other", NULL, 0));
	ck_assert_uint_eq(recv_opt_reply(fd, NBD_OPT_GO, r, sizeof(r), &len), NBD_REP_ERR_UNKNOWN);
	send_opt(fd, NBD_OPT_GO, d, go_data(d, EXPORT, infos, 1));
	ck_assert_uint_eq(recv_opt_reply(fd, NBD_OPT_GO, r, sizeof(r), &len), NBD_REP_INFO);
	ck_assert_uint_eq(len, 12);
	ck_assert_uint_eq(get16(r), NBD_INFO_EXPORT);
	ck_assert(get64(r + 2) == DISK_SIZE);
	ck_assert_uint_eq(get16(r + 10), NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH |
			  NBD_FLAG_SEND_FUA | NBD_FLAG_SEND_TRIM | NBD_FLAG_SEND_WRITE_ZEROES);
	ck_assert_uint_eq(recv_opt_reply(fd, NBD_OPT_GO, r, sizeof(r), &len), NBD_REP_INFO);
	ck_assert_uint_eq(get16(r), NBD_INFO_BLOCK_SIZE);
	ck_assert_uint_eq(recv_opt_reply(fd, NBD_OPT_GO, r, sizeof(r), &len), NBD_REP_ACK);
	send_req(fd, 0, NBD_CMD_FLUSH, 1, 0, 0);
	ck_assert_uint_eq(recv_reply(fd, 1), 0);
	nbd_server_get_stats(f.srv, &st);
	ck_assert(st.connected);
	disc(fd);
	nbd_server_get_stats(f.srv, &st);
	ck_assert_uint_eq(st.connections, 1);
	ck_assert_uint_eq(st.requests, 2);
	ck_assert_uint_eq(st.flushes, 1);
	ck_assert_uint_eq(st.errors, 0);
	fixture_stop(&f);
}
END_TEST

/* An old-style (non-fixed) client: NBD_OPT_EXPORT_NAME, 124 zeroes. */
START_TEST(test_handshake_export_name)
{
	struct fixture f;
	uint8_t r[134];
	int fd;

	fixture_start(&f, &rec_ops, DISK_SIZE);
	fd = client_connect(f.sock);
	greet(fd, 0);
	send_opt(fd, NBD_OPT_EXPORT_NAME, EXPORT, strlen(EXPORT));
	xrecv(fd, r, sizeof(r));
	ck_assert(get64(r) == DISK_SIZE);
	ck_assert_uint_eq(get16(r + 8) & NBD_FLAG_HAS_FLAGS, NBD_FLAG_HAS_FLAGS);
	for (int i = 10; i < 134; i++)
		ck_assert_uint_eq(r[i], 0);
	send_req(fd, 0, NBD_CMD_FLUSH, 5, 0, 0);
	ck_assert_uint_eq(recv_reply(fd, 5), 0);
	disc(fd);
	/* With NO_ZEROES: exactly 10 bytes, then the reply to a request. */
	fd = client_connect(f.sock);
	greet(fd, NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES);
	send_opt(fd, NBD_OPT_EXPORT_NAME, "", 0); /* the default export */
	xrecv(fd, r, 10);
	send_req(fd, 0, NBD_CMD_FLUSH, 6, 0, 0);
	ck_assert_uint_eq(recv_reply(fd, 6), 0);
	disc(fd);
	/* A wrong name cannot be answered with an error: closed. */
	fd = client_connect(f.sock);
	greet(fd, NBD_FLAG_C_FIXED_NEWSTYLE);
	send_opt(fd, NBD_OPT_EXPORT_NAME, "nope", 4);
	ck_assert(closed_by_peer(fd));
	close(fd);
	ck_assert_uint_eq(f.rec.flushes, 2);
	fixture_stop(&f);
}
END_TEST

START_TEST(test_handshake_abort_and_garbage)
{
	struct nbd_server_stats st;
	struct fixture f;
	uint8_t r[64], junk[16] = "IHAVEOPS\0\0\0\7\0\0\0\0";
	uint32_t len;
	int fd;

	fixture_start(&f, &rec_ops, DISK_SIZE);
	fd = client_connect(f.sock);
	greet(fd, NBD_FLAG_C_FIXED_NEWSTYLE);
	send_opt(fd, NBD_OPT_ABORT, NULL, 0);
	ck_assert_uint_eq(recv_opt_reply(fd, NBD_OPT_ABORT, r, sizeof(r), &len), NBD_REP_ACK);
	ck_assert(closed_by_peer(fd));
	close(fd);
	/* Unknown client flags: dropped (the spec says MUST). */
	fd = client_connect(f.sock);
	greet(fd, 0x80);
	ck_assert(closed_by_peer(fd));
	close(fd);
	/* Bad option magic, option data too long: closed. */
	fd = client_connect(f.sock);
	greet(fd, NBD_FLAG_C_FIXED_NEWSTYLE);
	xsend(fd, junk, sizeof(junk));
	ck_assert(closed_by_peer(fd));
	close(fd);
	fd = client_connect(f.sock);
	greet(fd, NBD_FLAG_C_FIXED_NEWSTYLE);
	send_opt(fd, NBD_OPT_GO, r, 0); /* header only */
	ck_assert_uint_eq(recv_opt_reply(fd, NBD_OPT_GO, r, sizeof(r), &len), NBD_REP_ERR_INVALID);
	put64(junk, NBD_OPTS_MAGIC);
	put32(junk + 12, 1u << 30);
	xsend(fd, junk, sizeof(junk));
	ck_assert(closed_by_peer(fd));
	close(fd);
	/* A client that leaves in the middle of the greeting. */
	fd = client_connect(f.sock);
	xrecv(fd, r, 18);
	xsend(fd, r, 2);
	close(fd);
	/* The server still serves. */
	fd = client_go(f.sock);
	disc(fd);
	nbd_server_get_stats(f.srv, &st);
	ck_assert_uint_eq(st.connections, 1);
	ck_assert_uint_eq(st.errors, 3);
	ck_assert_uint_eq(rec_count(&f.rec), 0);
	fixture_stop(&f);
}
END_TEST

START_TEST(test_every_command)
{
	struct nbd_server_stats st;
	uint8_t data[8192], back[8192];
	struct fixture f;
	int fd;

	fixture_start(&f, &rec_ops, DISK_SIZE);
	fd = client_go(f.sock);
	for (size_t i = 0; i < sizeof(data); i++)
		data[i] = (uint8_t)(i * 7 + 1);
	send_req(fd, NBD_CMD_FLAG_FUA, NBD_CMD_WRITE, 10, 4096, sizeof(data));
	xsend(fd, data, sizeof(data));
	ck_assert_uint_eq(recv_reply(fd, 10), 0);
	send_req(fd, 0, NBD_CMD_READ, 11, 4096, sizeof(back));
	ck_assert_uint_eq(recv_reply(fd, 11), 0);
	xrecv(fd, back, sizeof(back));
	ck_assert(!memcmp(back, data, sizeof(data)));
	send_req(fd, NBD_CMD_FLAG_NO_HOLE, NBD_CMD_WRITE_ZEROES, 12, 4096, 512);
	ck_assert_uint_eq(recv_reply(fd, 12), 0);
	send_req(fd, NBD_CMD_FLAG_FUA, NBD_CMD_WRITE_ZEROES, 13, 8192, 512);
	ck_assert_uint_eq(recv_reply(fd, 13), 0);
	send_req(fd, 0, NBD_CMD_TRIM, 14, DISK_SIZE - 4096, 4096);
	ck_assert_uint_eq(recv_reply(fd, 14), 0);
	send_req(fd, 0, NBD_CMD_FLUSH, 15, 0, 0);
	ck_assert_uint_eq(recv_reply(fd, 15), 0);
	/* Zero length: success, no callback. */
	send_req(fd, 0, NBD_CMD_WRITE, 16, DISK_SIZE, 0);
	ck_assert_uint_eq(recv_reply(fd, 16), 0);
	send_req(fd, 0, NBD_CMD_READ, 17, 0, 1);
	ck_assert_uint_eq(recv_reply(fd, 17), 0);
	xrecv(fd, back, 1);
	ck_assert_uint_eq(back[0], 0xee);
	disc(fd);

	ck_assert_uint_eq(f.rec.n, 7);
	ck_assert(f.rec.ops[0].type == NBD_CMD_WRITE && f.rec.ops[0].off == 4096 &&
		  f.rec.ops[0].len == sizeof(data) && f.rec.ops[0].fua);
	ck_assert(f.rec.ops[1].type == NBD_CMD_READ && !f.rec.ops[1].fua);
	ck_assert(f.rec.ops[2].type == NBD_CMD_WRITE_ZEROES && !f.rec.ops[2].may_trim &&
		  !f.rec.ops[2].fua && f.rec.ops[2].len == 512);
	ck_assert(f.rec.ops[3].type == NBD_CMD_WRITE_ZEROES && f.rec.ops[3].may_trim &&
		  f.rec.ops[3].fua && f.rec.ops[3].off == 8192);
	ck_assert(f.rec.ops[4].type == NBD_CMD_TRIM && f.rec.ops[4].off == DISK_SIZE - 4096);
	ck_assert(f.rec.ops[5].type == NBD_CMD_FLUSH);
	ck_assert(f.rec.ops[6].type == NBD_CMD_READ && f.rec.ops[6].len == 1);
	for (int i = 0; i < 512; i++)
		ck_assert_uint_eq(f.rec.disk[4096 + i], 0);
	ck_assert_uint_eq(f.rec.disk[4096 + 512], data[512]);
	nbd_server_get_stats(f.srv, &st);
	ck_assert_uint_eq(st.requests, 9);
	ck_assert_uint_eq(st.writes, 2);
	ck_assert_uint_eq(st.bytes_written, sizeof(data));
	ck_assert_uint_eq(st.zeroes, 2);
	ck_assert_uint_eq(st.zero_bytes, 1024);
	ck_assert_uint_eq(st.trims, 1);
	ck_assert_uint_eq(st.flushes, 1);
	ck_assert_uint_eq(st.reads, 2);
	ck_assert_uint_eq(st.errors, 0);
	ck_assert(!st.connected);
	fixture_stop(&f);
}
END_TEST

/* Bad requests get errors, call nothing, and leave the stream in step. */
START_TEST(test_malformed_requests)
{
	static const struct { uint16_t flags, type; uint64_t off; uint32_t len; uint32_t err; } bad[] = {
		{ 0, NBD_CMD_WRITE, DISK_SIZE - 100, 200, NBD_ENOSPC },
		{ NBD_CMD_FLAG_NO_HOLE, NBD_CMD_WRITE, 0, 200, NBD_EINVAL },
		{ 0, NBD_CMD_WRITE_ZEROES, DISK_SIZE, 1, NBD_ENOSPC },
		{ 0, NBD_CMD_WRITE_ZEROES, UINT64_MAX, 2, NBD_ENOSPC },
		{ 0, NBD_CMD_TRIM, DISK_SIZE - 1, 2, NBD_EINVAL },
		{ 0, NBD_CMD_READ, DISK_SIZE, 1, NBD_EINVAL },
		{ 0, NBD_CMD_READ, 0, NBD_MAX_PAYLOAD + 1, NBD_EOVERFLOW },
		{ 0, NBD_CMD_FLUSH, 4096, 0, NBD_EINVAL },
		{ 0, NBD_CMD_CACHE, 0, 4096, NBD_EINVAL },
		{ 0, NBD_CMD_BLOCK_STATUS, 0, 4096, NBD_EINVAL },
		{ 0, 42, 0, 0, NBD_EINVAL },
		{ 1u << 3, NBD_CMD_READ, 0, 1, NBD_EINVAL },
	};
	struct nbd_server_stats st;
	uint8_t junk[200], h[NBD_REQUEST_SIZE];
	struct fixture f;
	int fd;

	memset(junk, 0x77, sizeof(junk));
	fixture_start(&f, &rec_ops, DISK_SIZE);
	fd = client_go(f.sock);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		send_req(fd, bad[i].flags, bad[i].type, 100 + i, bad[i].off, bad[i].len);
		if (bad[i].type == NBD_CMD_WRITE)
			xsend(fd, junk, bad[i].len);
		ck_assert_msg(recv_reply(fd, 100 + i) == bad[i].err, "case %zu", i);
	}
	/* Still in step: a good request works. */
	send_req(fd, 0, NBD_CMD_FLUSH, 1, 0, 0);
	ck_assert_uint_eq(recv_reply(fd, 1), 0);
	ck_assert_uint_eq(rec_count(&f.rec), 1);
	/* An oversized WRITE: EOVERFLOW, then the connection is closed. */
	send_req(fd, 0, NBD_CMD_WRITE, 2, 0, NBD_MAX_PAYLOAD + 1);
	ck_assert_uint_eq(recv_reply(fd, 2), NBD_EOVERFLOW);
	ck_assert(closed_by_peer(fd));
	close(fd);
	/* Bad magic: closed without a reply. */
	fd = client_go(f.sock);
	make_req(h, 0xdeadbeef, 0, NBD_CMD_WRITE, 3, 0, 16);
	xsend(fd, h, sizeof(h));
	ck_assert(closed_by_peer(fd));
	close(fd);
	ck_assert_uint_eq(rec_count(&f.rec), 1);
	for (size_t i = 0; i < DISK_SIZE; i += 4096)
		ck_assert_uint_eq(f.rec.disk[i], 0xee);
	nbd_server_get_stats(f.srv, &st);
	ck_assert_uint_eq(st.writes + st.zeroes + st.trims + st.reads, 0);
	ck_assert_uint_eq(st.errors, sizeof(bad) / sizeof(bad[0]) + 1 + 1 + 1 /* closes */ + 1);
	fixture_stop(&f);
}
END_TEST

START_TEST(test_callback_errors)
{
	struct fixture f;
	uint8_t data[512] = { 1 };
	int fd;

	fixture_start(&f, &rec_ops_noread, DISK_SIZE);
	fd = client_go(f.sock);
	/* No read callback: EIO, and no data follows. */
	send_req(fd, 0, NBD_CMD_READ, 1, 0, 512);
	ck_assert_uint_eq(recv_reply(fd, 1), NBD_EIO);
	f.rec.fail = -ENOSPC;
	send_req(fd, 0, NBD_CMD_WRITE, 2, 0, sizeof(data));
	xsend(fd, data, sizeof(data));
	ck_assert_uint_eq(recv_reply(fd, 2), NBD_ENOSPC);
	f.rec.fail = -EBADF;
	send_req(fd, 0, NBD_CMD_FLUSH, 3, 0, 0);
	ck_assert_uint_eq(recv_reply(fd, 3), NBD_EIO);
	f.rec.fail = -EROFS;
	send_req(fd, 0, NBD_CMD_TRIM, 4, 0, 512);
	ck_assert_uint_eq(recv_reply(fd, 4), NBD_EPERM);
	f.rec.fail = 0;
	send_req(fd, 0, NBD_CMD_FLUSH, 5, 0, 0);
	ck_assert_uint_eq(recv_reply(fd, 5), 0);
	disc(fd);
	fixture_stop(&f);
}
END_TEST

START_TEST(test_hangup_mid_request)
{
	uint8_t data[4096];
	struct fixture f;
	int fd;

	memset(data, 0x11, sizeof(data));
	fixture_start(&f, &rec_ops, DISK_SIZE);
	fd = client_go(f.sock);
	send_req(fd, 0, NBD_CMD_WRITE, 1, 0, sizeof(data));
	xsend(fd, data, 100);
	close(fd);
	fd = client_go(f.sock);
	send_req(fd, 0, NBD_CMD_WRITE, 2, 0, sizeof(data));
	close(fd); /* between header and data */
	fd = client_go(f.sock);
	xsend(fd, data, 10); /* half a request header */
	close(fd);
	/* The server serves the next client; nothing was called. */
	fd = client_go(f.sock);
	send_req(fd, 0, NBD_CMD_FLUSH, 3, 0, 0);
	ck_assert_uint_eq(recv_reply(fd, 3), 0);
	disc(fd);
	ck_assert_uint_eq(rec_count(&f.rec), 1);
	ck_assert_uint_eq(f.rec.ops[0].type, NBD_CMD_FLUSH);
	ck_assert_uint_eq(f.rec.disk[0], 0xee);
	fixture_stop(&f);
}
END_TEST

START_TEST(test_second_client_refused)
{
	struct fixture f;
	int a, b;

	fixture_start(&f, &rec_ops, DISK_SIZE);
	a = client_go(f.sock);
	b = client_connect(f.sock);
	ck_assert(closed_by_peer(b));
	close(b);
	send_req(a, 0, NBD_CMD_FLUSH, 1, 0, 0);
	ck_assert_uint_eq(recv_reply(a, 1), 0);
	disc(a);
	/* Once the first has left, the next one is served. */
	b = client_go(f.sock);
	disc(b);
	fixture_stop(&f);
}
END_TEST

START_TEST(test_stop_with_client)
{
	struct fixture f;
	long long t0;
	int fd, fd2;

	fixture_start(&f, &rec_ops, DISK_SIZE);
	fd = client_go(f.sock);
	fd2 = client_connect(f.sock); /* mid-handshake too */
	t0 = now_ms();
	nbd_server_stop(f.srv);
	f.srv = NULL;
	ck_assert_int_lt(now_ms() - t0, 2000);
	ck_assert(closed_by_peer(fd));
	ck_assert(closed_by_peer(fd2));
	close(fd);
	close(fd2);
	fixture_stop(&f);
}
END_TEST

START_TEST(test_start_errors)
{
	struct nbd_export_ops no_flush = rec_ops;
	struct nbd_server *s = (struct nbd_server *)&s;
	char dir[] = "/tmp/check_nbd.XXXXXX", path[PATH_MAX], name[NBD_MAX_NAME + 2];
	int fd;

	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/file", dir);
	no_flush.flush = NULL;
	ck_assert_int_eq(nbd_server_start(path, "x", 1, &no_flush, NULL, &s), -EINVAL);
	ck_assert_ptr_null(s);
	memset(name, 'n', sizeof(name) - 1);
	name[sizeof(name) - 1] = 0;
	ck_assert_int_eq(nbd_server_start(path, name, 1, &rec_ops, NULL, &s), -EINVAL);
	fd = open(path, O_CREAT | O_WRONLY, 0600);
	ck_assert_int_ge(fd, 0);
	close(fd);
	ck_assert_int_eq(nbd_server_start(path, "x", 1, &rec_ops, NULL, &s), -EEXIST);
	ck_assert_int_eq(access(path, F_OK), 0); /* not a socket: left alone */
	unlink(path);
	ck_assert_int_eq(nbd_server_start("/nonexistent-dir/x.sock", "x", 1, &rec_ops, NULL, &s),
			 -ENOENT);
	rmdir(dir);
}
END_TEST

/* ---- a real QEMU mirroring to the server ---- */

static int find_in_path(const char *prog, char *out, size_t size)
{
	const char *path = getenv("PATH");
	char *dirs, *dir, *save = NULL;
	int found = 0;

	dirs = strdup(path ? path : "/usr/bin:/bin");
	ck_assert_ptr_nonnull(dirs);
	for (dir = strtok_r(dirs, ":", &save); dir && !found; dir = strtok_r(NULL, ":", &save)) {
		snprintf(out, size, "%s/%s", dir, prog);
		found = access(out, X_OK) == 0;
	}
	free(dirs);
	return found;
}

static pid_t start_qemu(const char *qemu, const char *qmp_sock, const char *image)
{
	char qmp[PATH_MAX + 32], file[PATH_MAX + 64];
	pid_t pid;
	int null;

	snprintf(qmp, sizeof(qmp), "unix:%s,server=on,wait=off", qmp_sock);
	snprintf(file, sizeof(file), "driver=file,filename=%s,node-name=src-file", image);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid)
		return pid;
	prctl(PR_SET_PDEATHSIG, SIGKILL); /* QEMU must not outlive the test */
	null = open("/dev/null", O_RDWR);
	dup2(null, 0);
	dup2(null, 1);
	/* An IDE disk: HMP qemu-io -d needs a device that holds the drive
	 * itself (virtio-blk-pci's proxy does not), and its writes go through
	 * the mirror's filter like a guest's. */
	execl(qemu, qemu, "-accel", "tcg", "-machine", "pc", "-m", "64M", "-nodefaults",
	      "-vga", "none", "-display", "none", "-qmp", qmp, "-S",
	      "-blockdev", file, "-blockdev", "driver=raw,file=src-file,node-name=src",
	      "-device", "ide-hd,drive=src,id=disk0", (char *)NULL);
	_exit(127);
}

static struct qmp *qmp_connect_retry(const char *sock, pid_t pid)
{
	struct qmp *q = NULL;
	int ret = -ENOENT, i, status;

	for (i = 0; i < 200 && ret; i++) {
		ck_assert_msg(waitpid(pid, &status, WNOHANG) == 0, "QEMU exited early");
		ret = qmp_connect(sock, 5000, &q);
		if (ret == -ENOENT || ret == -ECONNREFUSED)
			msleep(50);
	}
	ck_assert_msg(ret == 0, "QMP connect: %s", qmp_connect_error());
	return q;
}

static void qmp_ok(struct qmp *q, const char *cmd, const char *args_json)
{
	struct json_object *args = args_json ? json_tokener_parse(args_json) : NULL;
	int ret;

	ck_assert(!args_json || args);
	ret = qmp_execute(q, cmd, args, NULL, 30000);
	ck_assert_msg(ret == 0, "%s: %d %s", cmd, ret, qmp_last_error(q));
	json_object_put(args);
}

struct job_events {
	bool ready, error, ended;
	char why[256];
};

static void on_job_event(const char *event, struct json_object *data, void *opaque)
{
	struct job_events *ev = opaque;

	if (!strcmp(event, "BLOCK_JOB_READY"))
		ev->ready = true;
	if (!strcmp(event, "BLOCK_JOB_ERROR"))
		ev->error = true;
	else if (!strcmp(event, "BLOCK_JOB_COMPLETED") && !ev->ended)
		ev->ended = true;
	else
		return;
	/* the last of the two tells why (COMPLETED carries "error") */
	snprintf(ev->why, sizeof(ev->why), "%s %s", event,
		 data ? json_object_to_json_string(data) : "");
}

static void wait_ready(struct qmp *q, int timeout_ms)
{
	struct pollfd p = { .fd = qmp_fd(q), .events = POLLIN };
	struct job_events ev = { 0 };
	long long t0 = now_ms();

	while (!ev.ready) {
		ck_assert_int_eq(qmp_read_events(q, on_job_event, &ev), 0);
		ck_assert_msg(!ev.ended && !ev.error, "mirror failed before READY: %s", ev.why);
		ck_assert_msg(now_ms() - t0 < timeout_ms, "no BLOCK_JOB_READY within %d ms",
			      timeout_ms);
		if (!ev.ready)
			poll(&p, 1, 100);
	}
}

/* Until the job ends: it must end with an error. */
static void wait_job_end(struct qmp *q, int timeout_ms)
{
	struct pollfd p = { .fd = qmp_fd(q), .events = POLLIN };
	struct job_events ev = { 0 };
	long long t0 = now_ms();

	while (!ev.ended) {
		ck_assert_int_eq(qmp_read_events(q, on_job_event, &ev), 0);
		ck_assert_msg(now_ms() - t0 < timeout_ms, "the mirror job did not end within %d ms "
			      "after a write error", timeout_ms);
		if (!ev.ended)
			poll(&p, 1, 100);
	}
	ck_assert_msg(ev.error && strstr(ev.why, "\"error\""),
		      "the mirror job ended without an error: %s", ev.why);
}

/* The source disk: data in the first half, a hole (zeroes) in the second,
 * so that the bulk copy has writes and zeroes. Not bootable (no 0x55AA). */
static void make_image(const char *path)
{
	uint8_t block[4096];
	int fd = open(path, O_CREAT | O_RDWR | O_TRUNC, 0600);

	ck_assert_int_ge(fd, 0);
	for (unsigned off = 0; off < DISK_SIZE / 2; off += sizeof(block)) {
		for (unsigned i = 0; i < sizeof(block); i++)
			block[i] = (uint8_t)((off >> 12) * 31 + i * 13 + 1);
		if (off == 0)
			block[510] = block[511] = 0;
		ck_assert_int_eq(pwrite(fd, block, sizeof(block), off), sizeof(block));
	}
	ck_assert_int_eq(ftruncate(fd, DISK_SIZE), 0);
	close(fd);
}

static void assert_same_as_image(struct rec *r, const char *image, const char *when)
{
	uint8_t *file = malloc(DISK_SIZE);
	int fd = open(image, O_RDONLY);
	size_t i;

	ck_assert_ptr_nonnull(file);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(pread(fd, file, DISK_SIZE, 0), DISK_SIZE);
	close(fd);
	pthread_mutex_lock(&r->lock);
	for (i = 0; i < DISK_SIZE && file[i] == r->disk[i]; i++)
		;
	pthread_mutex_unlock(&r->lock);
	ck_assert_msg(i == DISK_SIZE, "%s: the mirror target differs from the source at byte "
		      "%zu (0x%02x vs 0x%02x)", when, i, r->disk[i], file[i]);
	free(file);
}

#define CYCLES          20
#define WRITES_PER_STOP 3
#define WRITE_DELAY_MS  40   /* the server sits on each write: stop must wait */
#define PAUSE_MS        150  /* longer than the mirror's 100 ms slice */
#define SLOW_WRITE_MS   300

START_TEST(test_real_qemu_stop_drains)
{
	char qemu[PATH_MAX], qmp_sock[PATH_MAX], image[PATH_MAX], args[PATH_MAX + 256], cmd[256];
	unsigned pending_at_stop = 0, flush_in_stop = 0, flush_in_save = 0, i, k, n_stopped, done;
	char state[PATH_MAX], save_args[PATH_MAX + 64];
	long long stop_ms_max = 0, t0;
	struct nbd_server_stats st0, st1;
	const char *copy_mode;
	struct fixture f;
	struct qmp *q;
	char *text;
	int status;
	pid_t pid;

	if (!find_in_path("qemu-system-x86_64", qemu, sizeof(qemu))) {
		fprintf(stderr, "real_qemu_stop_drains: qemu-system-x86_64 not found, skipped\n");
		return;
	}
	/* NBD_CHECK_COPY_MODE=background shows that this test can fail. */
	copy_mode = getenv("NBD_CHECK_COPY_MODE") ? getenv("NBD_CHECK_COPY_MODE") : "write-blocking";
	fixture_start(&f, &rec_ops, DISK_SIZE);
	snprintf(qmp_sock, sizeof(qmp_sock), "%s/qmp.sock", f.dir);
	snprintf(image, sizeof(image), "%s/src.img", f.dir);
	snprintf(state, sizeof(state), "%s/dev.state", f.dir);
	snprintf(save_args, sizeof(save_args), "{\"filename\": \"%s\", \"live\": false}", state);
	make_image(image);
	pid = start_qemu(qemu, qmp_sock, image);
	q = qmp_connect_retry(qmp_sock, pid);

	snprintf(args, sizeof(args), "{\"driver\": \"nbd\", \"node-name\": \"tgt\", \"server\": "
		 "{\"type\": \"unix\", \"path\": \"%s\"}, \"export\": \"%s\"}", f.sock, EXPORT);
	qmp_ok(q, "blockdev-add", args);
	snprintf(args, sizeof(args), "{\"job-id\": \"m0\", \"device\": \"src\", \"target\": "
		 "\"tgt\", \"sync\": \"full\", \"copy-mode\": \"%s\"}", copy_mode);
	qmp_ok(q, "blockdev-mirror", args);
	wait_ready(q, 120000);
	/* Slow the background copy down to a crawl: a write that reached the
	 * target only through it (not through write-blocking) arrives seconds
	 * late, and the checks below catch it. */
	qmp_ok(q, "block-job-set-speed", "{\"device\": \"m0\", \"speed\": 65536}");
	/* READY: the bulk copy (writes and zeroes) has all arrived. */
	assert_same_as_image(&f.rec, image, "after BLOCK_JOB_READY");
	nbd_server_get_stats(f.srv, &st0);
	fprintf(stderr, "real_qemu_stop_drains: bulk copy: %llu writes (%llu bytes), %llu "
		"write-zeroes (%llu bytes), %llu trims, %llu flushes, %llu reads\n",
		(unsigned long long)st0.writes, (unsigned long long)st0.bytes_written,
		(unsigned long long)st0.zeroes, (unsigned long long)st0.zero_bytes,
		(unsigned long long)st0.trims, (unsigned long long)st0.flushes,
		(unsigned long long)st0.reads);

	/* The mechanism: a write completes for the guest only once the server
	 * has replied. The server sits on it for SLOW_WRITE_MS; a synchronous
	 * qemu-io write must take at least that long. */
	pthread_mutex_lock(&f.rec.lock);
	f.rec.delay_ms = SLOW_WRITE_MS;
	pthread_mutex_unlock(&f.rec.lock);
	t0 = now_ms();
	ck_assert_int_eq(qmp_hmp(q, "qemu-io -d disk0 \"write -P 0x0f 0 4k\"", &text, 30000), 0);
	t0 = now_ms() - t0;
	ck_assert_msg(!*text, "qemu-io write: %s", text); /* its report goes to QEMU's stdout */
	free(text);
	ck_assert_msg(t0 >= SLOW_WRITE_MS - 20, "a guest write completed in %lld ms although the "
		      "server held it for %d ms: writes do not wait for the mirror target", t0,
		      SLOW_WRITE_MS);
	ck_assert_uint_eq(f.rec.disk[0], 0x0f);

	pthread_mutex_lock(&f.rec.lock);
	f.rec.delay_ms = WRITE_DELAY_MS;
	pthread_mutex_unlock(&f.rec.lock);
	nbd_server_get_stats(f.srv, &st0);
	for (i = 0; i < CYCLES; i++) {
		uint64_t off[WRITES_PER_STOP];
		uint32_t len[WRITES_PER_STOP];
		unsigned flushes0;

		qmp_ok(q, "cont", NULL);
		for (k = 0; k < WRITES_PER_STOP; k++) {
			/* 64 KiB writes and 4 KiB ones inside a 64 KiB granule
			 * (the mirror rounds those up: read-modify-write). */
			off[k] = DISK_SIZE / 2 + (uint64_t)(i * WRITES_PER_STOP + k) * 65536;
			len[k] = 65536;
			if (k == WRITES_PER_STOP - 1) {
				off[k] = (uint64_t)(i * WRITES_PER_STOP + k) * 65536 + 8192;
				len[k] = 4096;
			}
			snprintf(cmd, sizeof(cmd), "qemu-io -d disk0 \"aio_write -P 0x%02x %llu %u\"",
				 0x10 + i * WRITES_PER_STOP + k, (unsigned long long)off[k], len[k]);
			ck_assert_int_eq(qmp_hmp(q, cmd, &text, 30000), 0);
			ck_assert_msg(!strstr(text, "rror") && !strstr(text, "failed"), "%s: %s", cmd,
				      text);
			free(text);
		}
		pthread_mutex_lock(&f.rec.lock);
		done = f.rec.done;
		flushes0 = f.rec.flushes;
		pthread_mutex_unlock(&f.rec.lock);
		t0 = now_ms();
		qmp_ok(q, "stop", NULL);
		t0 = now_ms() - t0;
		stop_ms_max = t0 > stop_ms_max ? t0 : stop_ms_max;
		/* Every write issued before stop is in the target now. */
		pthread_mutex_lock(&f.rec.lock);
		/* callbacks that ended inside stop, flushes aside: writes
		 * that stop had to wait for */
		pending_at_stop += (f.rec.done - done) - (f.rec.flushes - flushes0);
		flush_in_stop += f.rec.flushes - flushes0;
		for (k = 0; k < WRITES_PER_STOP; k++)
			for (uint32_t b = 0; b < len[k]; b += 512)
				ck_assert_msg(f.rec.disk[off[k] + b] == 0x10 + i * WRITES_PER_STOP + k,
					      "cycle %u: write %u (offset %llu) had not reached the "
					      "server when stop returned", i, k,
					      (unsigned long long)off[k]);
		ck_assert_uint_eq(f.rec.n, f.rec.done); /* and was replied */
		n_stopped = f.rec.n - f.rec.flushes;
		pthread_mutex_unlock(&f.rec.lock);
		/* The replicator's barrier saves the devices while stopped: that
		 * runs vm_stop again, whose bdrv_flush_all sends a FLUSH (no
		 * data). Nothing else arrives while the VM is stopped. */
		qmp_ok(q, "xen-save-devices-state", save_args);
		msleep(PAUSE_MS);
		pthread_mutex_lock(&f.rec.lock);
		ck_assert_msg(f.rec.n - f.rec.flushes == n_stopped, "cycle %u: %u writes reached "
			      "the server while the VM was stopped", i,
			      f.rec.n - f.rec.flushes - n_stopped);
		flush_in_save += f.rec.flushes - flushes0;
		pthread_mutex_unlock(&f.rec.lock);
	}
	flush_in_save -= flush_in_stop;
	unlink(state);
	nbd_server_get_stats(f.srv, &st1);
	assert_same_as_image(&f.rec, image, "after the stop cycles");
	fprintf(stderr, "real_qemu_stop_drains: %d cycles, %llu requests (%llu writes of %llu "
		"bytes, %llu flushes), %u callbacks still under way when stop was sent, %u flushes inside "
		"stop, slowest stop %lld ms, %u flushes inside xen-save-devices-state, 0 writes "
		"while stopped\n", CYCLES,
		(unsigned long long)(st1.requests - st0.requests),
		(unsigned long long)(st1.writes - st0.writes),
		(unsigned long long)(st1.bytes_written - st0.bytes_written),
		(unsigned long long)(st1.flushes - st0.flushes), pending_at_stop, flush_in_stop,
		stop_ms_max, flush_in_save);
	/* The test proves something only if stop had to wait for us. */
	ck_assert_msg(pending_at_stop > 0, "no write was still under way when stop was sent: "
		      "the test did not exercise the drain");

	/* An error reply to a mirrored write ends the job (on-target-error
	 * defaults to report); the guest's write succeeds on the source. */
	pthread_mutex_lock(&f.rec.lock);
	f.rec.delay_ms = 0;
	f.rec.fail = -EIO;
	pthread_mutex_unlock(&f.rec.lock);
	qmp_ok(q, "cont", NULL);
	ck_assert_int_eq(qmp_hmp(q, "qemu-io -d disk0 \"write -P 0x0d 0 4k\"", &text, 30000), 0);
	ck_assert_msg(!*text, "qemu-io write: %s", text);
	free(text);
	wait_job_end(q, 30000);
	ck_assert_int_eq(qmp_execute(q, "quit", NULL, NULL, 30000), 0);
	qmp_close(q);
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	unlink(qmp_sock);
	unlink(image);
	fixture_stop(&f);
}
END_TEST

static void add(Suite *s, const char *name, const TTest *test, int timeout)
{
	TCase *tc = tcase_create(name);

	tcase_set_timeout(tc, timeout);
	tcase_add_test(tc, test);
	suite_add_tcase(s, tc);
}

static Suite *nbd_suite(void)
{
	Suite *s = suite_create("nbd");

	add(s, "parse_valid", test_parse_valid, 10);
	add(s, "parse_invalid", test_parse_invalid, 10);
	add(s, "errno_map", test_errno_map, 10);
	add(s, "options_pure", test_options_pure, 10);
	add(s, "option_header", test_option_header, 10);
	add(s, "handshake_go", test_handshake_go, 20);
	add(s, "handshake_export_name", test_handshake_export_name, 20);
	add(s, "handshake_abort_and_garbage", test_handshake_abort_and_garbage, 20);
	add(s, "every_command", test_every_command, 20);
	add(s, "malformed_requests", test_malformed_requests, 20);
	add(s, "callback_errors", test_callback_errors, 20);
	add(s, "hangup_mid_request", test_hangup_mid_request, 20);
	add(s, "second_client_refused", test_second_client_refused, 20);
	add(s, "stop_with_client", test_stop_with_client, 20);
	add(s, "start_errors", test_start_errors, 10);
	add(s, "real_qemu_stop_drains", test_real_qemu_stop_drains, 300);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(nbd_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
