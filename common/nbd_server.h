/* A small NBD server: one export on a unix socket, the mirror target of
 * QEMU's blockdev-mirror.
 *
 * Why: with `blockdev-mirror sync=full copy-mode=write-blocking` to an `nbd`
 * node, QEMU completes a guest write only after this server has replied to
 * it, and QMP `stop` returns only after every write issued before it has been
 * replied (tests/check_nbd.c, real_qemu_stop_drains, checks this). So the
 * replicator sees every disk write of epoch N before the barrier of
 * checkpoint N, and nothing of N+1 until `cont`. The server runs a thread of
 * its own: the event loop blocks in `stop` while QEMU waits for our replies.
 *
 * What it implements (https://github.com/NetworkBlockDevice/nbd, doc/proto.md):
 * - fixed newstyle handshake (NO_ZEROES honoured); options NBD_OPT_GO,
 *   NBD_OPT_INFO (NBD_INFO_EXPORT always; NBD_INFO_NAME and
 *   NBD_INFO_BLOCK_SIZE when asked: min 1, preferred 4096, max 32 MiB),
 *   NBD_OPT_EXPORT_NAME, NBD_OPT_LIST, NBD_OPT_ABORT. The empty name is the
 *   default export, i.e. this one.
 * - transmission flags HAS_FLAGS, SEND_FLUSH, SEND_FUA, SEND_TRIM,
 *   SEND_WRITE_ZEROES; simple replies, sent only after the callback returned.
 * - commands WRITE, WRITE_ZEROES (NO_HOLE), TRIM, FLUSH, DISC, READ (through
 *   the optional read callback, else EIO); FUA is accepted on all of them and
 *   passed to write / zeroes. Requests are served one at a time in arrival
 *   order, so callbacks see the writes in the order QEMU sent them.
 * - one client at a time (QEMU opens one connection); another one is closed
 *   at once with a warning in the log.
 *
 * What it refuses:
 * - every other option (NBD_OPT_STRUCTURED_REPLY, meta contexts, STARTTLS ...)
 *   with NBD_REP_ERR_UNSUP; QEMU falls back to simple replies.
 * - requests: unknown command or flag, FLUSH with an offset or length, READ
 *   or TRIM beyond the export -> EINVAL; WRITE or WRITE_ZEROES beyond it ->
 *   ENOSPC; READ longer than 32 MiB -> EOVERFLOW. The callback is not called
 *   and a rejected WRITE's data is read and dropped. A WRITE longer than
 *   32 MiB gets EOVERFLOW and the connection is closed (its data cannot be
 *   skipped cheaply); so is a request with a bad magic number (the stream
 *   cannot be parsed any more). TRIM and WRITE_ZEROES carry no data: the
 *   32 MiB limit does not apply to them, only the export's size.
 * - zero-length requests are answered with success without a callback.
 *
 * Callbacks run on the server's thread, one at a time, and may block: that
 * is the replicator's backpressure (QEMU, and with it the guest's write,
 * waits for the reply). They return 0 or -errno; the reply carries the NBD
 * error nearest to it (EPERM, EIO, ENOMEM, EINVAL, ENOSPC, EOVERFLOW,
 * ENOTSUP, ESHUTDOWN; anything else is EIO). Do not call nbd_server_stop()
 * while a callback waits for the thread that calls it.
 *
 * What QEMU 7.2 sends (measured by tests/check_nbd.c): the bulk copy as 1 MiB
 * WRITEs and WRITE_ZEROES for holes (one of 4 MiB for a 4 MiB hole: big);
 * then each guest write as one WRITE of the guest's size (no rounding up to
 * the mirror's granularity); one FLUSH inside every QMP `stop` and one inside
 * every `xen-save-devices-state` (both run bdrv_flush_all, even on a stopped
 * VM), so a flush callback that waits for the thread issuing those commands
 * deadlocks. No READ. An error reply to a WRITE ends the mirror job at once
 * (BLOCK_JOB_ERROR, then BLOCK_JOB_COMPLETED with an error: on-target-error
 * is `report` by default; the guest's write itself succeeds on the source):
 * nothing is mirrored after that.
 *
 * The protocol core below the socket layer (request and option parsers, a
 * session over an I/O interface) is exposed for tests and fuzzing
 * (fuzz/fuzz_nbd.c).
 */
#ifndef REMUS_NBD_SERVER_H
#define REMUS_NBD_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define NBD_MAX_PAYLOAD   (32u << 20) /* READ / WRITE length limit (QEMU's too) */
#define NBD_MAX_NAME      4096u       /* export names, as the spec says */

struct nbd_export_ops {
	int (*write)(void *opaque, uint64_t off, const void *data, uint32_t len, bool fua);
	int (*zeroes)(void *opaque, uint64_t off, uint32_t len, bool may_trim, bool fua);
	int (*trim)(void *opaque, uint64_t off, uint32_t len);
	int (*flush)(void *opaque);
	int (*read)(void *opaque, uint64_t off, void *buf, uint32_t len); /* may be NULL */
};

/* Counters for status; all since nbd_server_start. */
struct nbd_server_stats {
	uint64_t connections;    /* clients that completed the handshake */
	uint64_t requests;       /* transmission requests received (DISC included) */
	uint64_t writes;         /* WRITE callbacks that succeeded */
	uint64_t bytes_written;  /* their bytes */
	uint64_t zeroes;         /* WRITE_ZEROES callbacks that succeeded */
	uint64_t zero_bytes;
	uint64_t trims;
	uint64_t flushes;
	uint64_t reads;
	uint64_t errors;         /* error replies + connections closed for a violation */
	bool connected;          /* a client is in the transmission phase now */
};

struct nbd_server;

/* Listen on socket_path (a stale socket there is replaced; any other file is
 * -EEXIST) and serve export_name of size bytes on a thread of its own.
 * ops->write, zeroes, trim and flush are required. */
int nbd_server_start(const char *socket_path, const char *export_name, uint64_t size,
		     const struct nbd_export_ops *ops, void *opaque, struct nbd_server **out);
/* Wake the thread, drop the client, join the thread, close and unlink the
 * socket. A callback under way finishes first. NULL is a no-op. */
void nbd_server_stop(struct nbd_server *s);
void nbd_server_get_stats(const struct nbd_server *s, struct nbd_server_stats *out);

/* ---- wire values (doc/proto.md) ---- */

#define NBD_MAGIC             0x4e42444d41474943ull /* "NBDMAGIC" */
#define NBD_OPTS_MAGIC        0x49484156454f5054ull /* "IHAVEOPT" */
#define NBD_REP_MAGIC         0x0003e889045565a9ull
#define NBD_REQUEST_MAGIC     0x25609513u
#define NBD_SIMPLE_REPLY_MAGIC 0x67446698u

#define NBD_FLAG_FIXED_NEWSTYLE   (1u << 0)
#define NBD_FLAG_NO_ZEROES        (1u << 1)
#define NBD_FLAG_C_FIXED_NEWSTYLE (1u << 0)
#define NBD_FLAG_C_NO_ZEROES      (1u << 1)

#define NBD_FLAG_HAS_FLAGS         (1u << 0)
#define NBD_FLAG_READ_ONLY         (1u << 1)
#define NBD_FLAG_SEND_FLUSH        (1u << 2)
#define NBD_FLAG_SEND_FUA          (1u << 3)
#define NBD_FLAG_SEND_TRIM         (1u << 5)
#define NBD_FLAG_SEND_WRITE_ZEROES (1u << 6)

enum {
	NBD_OPT_EXPORT_NAME = 1, NBD_OPT_ABORT = 2, NBD_OPT_LIST = 3, NBD_OPT_STARTTLS = 5,
	NBD_OPT_INFO = 6, NBD_OPT_GO = 7, NBD_OPT_STRUCTURED_REPLY = 8,
};
#define NBD_REP_ACK          1u
#define NBD_REP_SERVER       2u
#define NBD_REP_INFO         3u
#define NBD_REP_ERR_UNSUP    (0x80000000u + 1)
#define NBD_REP_ERR_INVALID  (0x80000000u + 3)
#define NBD_REP_ERR_UNKNOWN  (0x80000000u + 6)
#define NBD_INFO_EXPORT      0
#define NBD_INFO_NAME        1
#define NBD_INFO_BLOCK_SIZE  3

enum {
	NBD_CMD_READ = 0, NBD_CMD_WRITE = 1, NBD_CMD_DISC = 2, NBD_CMD_FLUSH = 3,
	NBD_CMD_TRIM = 4, NBD_CMD_CACHE = 5, NBD_CMD_WRITE_ZEROES = 6, NBD_CMD_BLOCK_STATUS = 7,
};
#define NBD_CMD_FLAG_FUA     (1u << 0)
#define NBD_CMD_FLAG_NO_HOLE (1u << 1)

/* NBD error values (not the host's errno numbers, though equal on Linux) */
#define NBD_EPERM     1u
#define NBD_EIO       5u
#define NBD_ENOMEM    12u
#define NBD_EINVAL    22u
#define NBD_ENOSPC    28u
#define NBD_EOVERFLOW 75u
#define NBD_ENOTSUP   95u
#define NBD_ESHUTDOWN 108u

#define NBD_REQUEST_SIZE    28u
#define NBD_REPLY_SIZE      16u
#define NBD_OPT_HEADER_SIZE 16u
#define NBD_MAX_OPTION_LEN  (NBD_MAX_NAME + 4 + 2 + 2 * 64) /* a GO with 64 info requests */

/* ---- request parser: a pure function of the 28 header bytes ---- */

struct nbd_request {
	uint16_t flags;
	uint16_t type;
	uint64_t handle;
	uint64_t offset;
	uint32_t length;
};

enum nbd_req_action {
	NBD_REQ_SERVE,        /* valid: call the callback (WRITE: after reading length bytes) */
	NBD_REQ_ERROR,        /* reply error; for a WRITE, read and drop length bytes first */
	NBD_REQ_ERROR_CLOSE,  /* reply error, then close: the stream cannot go on */
	NBD_REQ_CLOSE,        /* not a request (bad magic): close without a reply */
	NBD_REQ_DISC,         /* NBD_CMD_DISC: close without a reply */
};

/* *error receives the NBD error for NBD_REQ_ERROR / NBD_REQ_ERROR_CLOSE (0
 * otherwise); req is filled whenever the magic was right. */
enum nbd_req_action nbd_parse_request(const uint8_t hdr[NBD_REQUEST_SIZE], uint64_t export_size,
				      uint32_t max_payload, struct nbd_request *req, uint32_t *error);

/* NBD error value for a callback's -errno. */
uint32_t nbd_errno_to_nbd(int err);

/* ---- option (handshake) parser ---- */

/* 0, -EPROTO (bad magic) or -E2BIG (data longer than NBD_MAX_OPTION_LEN). */
int nbd_parse_option_header(const uint8_t hdr[NBD_OPT_HEADER_SIZE], uint32_t *option,
			    uint32_t *length);

enum nbd_opt_action {
	NBD_OPT_CONTINUE,  /* send the reply, read the next option */
	NBD_OPT_TRANSMIT,  /* send the reply, enter the transmission phase */
	NBD_OPT_CLOSE,     /* send the reply (if any), close */
};

struct nbd_export_info {
	const char *name;
	uint64_t size;
	uint16_t tflags;
	bool no_zeroes;     /* the client set NBD_FLAG_C_NO_ZEROES */
};

#define NBD_OPT_REPLY_MAX (3 * (20 + 4 + NBD_MAX_NAME) + 64)
struct nbd_opt_reply {
	size_t len;
	uint8_t data[NBD_OPT_REPLY_MAX];
};

/* Answer one option: the bytes to send go into *out. Pure. */
enum nbd_opt_action nbd_handle_option(const struct nbd_export_info *exp, uint32_t option,
				      const uint8_t *data, uint32_t length,
				      struct nbd_opt_reply *out);

/* ---- one connection over any byte stream (the server uses a socket) ---- */

struct nbd_io {
	/* Exactly len bytes, or -errno (-EPIPE at end of stream). */
	int (*read)(void *ctx, void *buf, size_t len);
	int (*write)(void *ctx, const void *buf, size_t len);
	void *ctx;
};

struct nbd_session {
	const char *name;
	uint64_t size;
	const struct nbd_export_ops *ops;
	void *opaque;
	uint32_t max_payload;            /* 0 = NBD_MAX_PAYLOAD */
	struct nbd_io io;
	struct nbd_server_stats *stats;  /* updated atomically; may be NULL */
	const char *what;                /* for log lines, e.g. "NBD export 'drive0'" */
};

/* Handshake, then requests until the client leaves. 0 after NBD_CMD_DISC or
 * NBD_OPT_ABORT; -EPIPE when the client hung up; -EPROTO on a violation that
 * closes the connection; or the error of io.read / io.write. */
int nbd_session_run(const struct nbd_session *s);

#endif
