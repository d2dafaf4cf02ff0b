#include "proto.h"

#include "crc32c.h"
#include "page_hash.h"

#include <endian.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static const char *const type_names[FRAME_TYPE_MAX] = {
	[FRAME_HELLO] = "HELLO",
	[FRAME_HELLO_REPLY] = "HELLO_REPLY",
	[FRAME_PAGES] = "PAGES",
	[FRAME_DEVSTATE] = "DEVSTATE",
	[FRAME_EPOCH_END] = "EPOCH_END",
	[FRAME_ACK] = "ACK",
	[FRAME_NACK] = "NACK",
	[FRAME_HEARTBEAT] = "HEARTBEAT",
	[FRAME_GOODBYE] = "GOODBYE",
	[FRAME_HANDOVER] = "HANDOVER",
	[FRAME_HANDOVER_DONE] = "HANDOVER_DONE",
	[FRAME_HANDOVER_FAILED] = "HANDOVER_FAILED",
	[FRAME_PAUSE] = "PAUSE",
	[FRAME_PAUSE_ACK] = "PAUSE_ACK",
	[FRAME_DISK] = "DISK",
	[FRAME_RAM_HASHES] = "RAM_HASHES",
	[FRAME_PEER_QUERY] = "PEER_QUERY",
	[FRAME_PEER_STATE] = "PEER_STATE",
	[FRAME_VERIFY] = "VERIFY",
	[FRAME_VERIFY_RESULT] = "VERIFY_RESULT",
	[FRAME_PAGES_Z] = "PAGES_Z",
	[FRAME_DISK_HASHES] = "DISK_HASHES",
};

const char *frame_type_name(unsigned type)
{
	if (type < FRAME_TYPE_MAX && type_names[type])
		return type_names[type];
	return "UNKNOWN";
}

static void put_be16(uint8_t *p, uint16_t v) { v = htobe16(v); memcpy(p, &v, 2); }
static void put_be32(uint8_t *p, uint32_t v) { v = htobe32(v); memcpy(p, &v, 4); }
static void put_be64(uint8_t *p, uint64_t v) { v = htobe64(v); memcpy(p, &v, 8); }
static uint16_t get_be16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return be16toh(v); }
static uint32_t get_be32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return be32toh(v); }
static uint64_t get_be64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return be64toh(v); }

/* Header layout: magic(4) version(1) type(1) flags(2) epoch(8) len(4)
 * payload_crc(4) reserved(4) header_crc(4). */
void proto_encode_hdr(uint8_t out[PROTO_HDR_SIZE], unsigned type, uint64_t epoch,
		      const struct iovec *iov, int iovcnt)
{
	uint32_t crc = 0;
	size_t len = 0;

	for (int i = 0; i < iovcnt; i++) {
		crc = crc32c(crc, iov[i].iov_base, iov[i].iov_len);
		len += iov[i].iov_len;
	}
	put_be32(out, PROTO_MAGIC);
	out[4] = PROTO_VERSION;
	out[5] = (uint8_t)type;
	put_be16(out + 6, 0);
	put_be64(out + 8, epoch);
	put_be32(out + 16, (uint32_t)len);
	put_be32(out + 20, crc);
	put_be32(out + 24, 0);
	put_be32(out + 28, crc32c(0, out, 28));
}

int proto_decode_hdr(const uint8_t in[PROTO_HDR_SIZE], struct frame_hdr *h)
{
	if (get_be32(in) != PROTO_MAGIC || get_be32(in + 28) != crc32c(0, in, 28))
		return -EBADMSG;
	h->version = in[4];
	h->type = in[5];
	h->flags = get_be16(in + 6);
	h->epoch = get_be64(in + 8);
	h->len = get_be32(in + 16);
	h->payload_crc = get_be32(in + 20);
	/* The version is checked before the type: a newer peer may well use
	 * types this one does not know, and should hear "version". */
	if (h->version != PROTO_VERSION)
		return -EPROTONOSUPPORT;
	if (h->type == 0 || h->type >= FRAME_TYPE_MAX)
		return -EBADMSG;
	if (h->len > PROTO_MAX_PAYLOAD)
		return -EMSGSIZE;
	return 0;
}

int proto_check_payload(const struct frame_hdr *h, const uint8_t *payload)
{
	return crc32c(0, payload, h->len) == h->payload_crc ? 0 : -EBADMSG;
}

int proto_parse_pages(const uint8_t *payload, uint32_t len, struct pages_hdr *out)
{
	uint64_t need;

	if (len < 8)
		return -EBADMSG;
	out->count = get_be32(payload);
	if (out->count == 0 || out->count > PROTO_PAGES_PER_FRAME || get_be32(payload + 4))
		return -EBADMSG;
	need = 8 + (uint64_t)out->count * (8 + PROTO_PAGE_SIZE);
	if (need != len)
		return -EBADMSG;
	out->index_be = payload + 8;
	out->data = payload + 8 + (size_t)out->count * 8;
	return 0;
}

void proto_encode_epoch_end(uint8_t out[PROTO_EPOCH_END_SIZE], const struct epoch_end *e)
{
	put_be64(out, e->pages);
	put_be64(out + 8, e->devstate_bytes);
	put_be32(out + 16, e->frames);
	put_be32(out + 20, e->epoch_crc);
}

int proto_parse_epoch_end(const uint8_t *payload, uint32_t len, struct epoch_end *out)
{
	if (len != PROTO_EPOCH_END_SIZE)
		return -EBADMSG;
	out->pages = get_be64(payload);
	out->devstate_bytes = get_be64(payload + 8);
	out->frames = get_be32(payload + 16);
	out->epoch_crc = get_be32(payload + 20);
	return 0;
}

uint32_t proto_epoch_crc_add(uint32_t epoch_crc, uint32_t frame_payload_crc)
{
	uint8_t be[4];

	put_be32(be, frame_payload_crc);
	return crc32c(epoch_crc, be, 4);
}

void proto_encode_handover_done(uint8_t out[PROTO_HANDOVER_DONE_SIZE],
				const struct handover_done *d)
{
	put_be32(out, d->qemu_pid);
	put_be32(out + 4, d->restore_ms);
}

int proto_parse_handover_done(const uint8_t *payload, uint32_t len, struct handover_done *out)
{
	if (len != PROTO_HANDOVER_DONE_SIZE)
		return -EBADMSG;
	out->qemu_pid = get_be32(payload);
	out->restore_ms = get_be32(payload + 4);
	if (out->qemu_pid == 0)
		return -EBADMSG;
	return 0;
}

int proto_parse_ram_hashes(const uint8_t *payload, uint32_t len, uint64_t *first,
			   uint32_t *count, const uint8_t **hashes)
{
	uint64_t f;
	uint32_t n;

	if (len < PROTO_RAM_HASHES_HDR_SIZE)
		return -EPROTO;
	f = get_be64(payload);
	n = get_be32(payload + 8);
	if (n == 0 || n > PROTO_RAM_HASHES_PER_FRAME || get_be32(payload + 12) ||
	    len != PROTO_RAM_HASHES_HDR_SIZE + (uint64_t)n * PAGE_HASH_SIZE || f > UINT64_MAX - n)
		return -EPROTO;
	*first = f;
	*count = n;
	*hashes = payload + PROTO_RAM_HASHES_HDR_SIZE;
	return 0;
}

void proto_encode_ram_hashes_hdr(uint8_t out[PROTO_RAM_HASHES_HDR_SIZE], uint64_t first,
				 uint32_t count)
{
	put_be64(out, first);
	put_be32(out + 8, count);
	put_be32(out + 12, 0);
}

int proto_parse_disk_hashes(const uint8_t *payload, uint32_t len, uint32_t *disk,
			    uint64_t *first, uint32_t *count, const uint8_t **hashes)
{
	uint64_t f;
	uint32_t n;

	if (len < PROTO_DISK_HASHES_HDR_SIZE)
		return -EPROTO;
	n = get_be32(payload + 4);
	f = get_be64(payload + 8);
	if (n == 0 || n > PROTO_DISK_HASHES_PER_FRAME ||
	    len != PROTO_DISK_HASHES_HDR_SIZE + (uint64_t)n * PAGE_HASH_SIZE || f > UINT64_MAX - n)
		return -EPROTO;
	*disk = get_be32(payload);
	*first = f;
	*count = n;
	*hashes = payload + PROTO_DISK_HASHES_HDR_SIZE;
	return 0;
}

void proto_encode_disk_hashes_hdr(uint8_t out[PROTO_DISK_HASHES_HDR_SIZE], uint32_t disk,
				  uint64_t first, uint32_t count)
{
	put_be32(out, disk);
	put_be32(out + 4, count);
	put_be64(out + 8, first);
}

void proto_put_be64(uint8_t *p, uint64_t v)
{
	put_be64(p, v);
}

uint64_t proto_get_be64(const uint8_t *p)
{
	return get_be64(p);
}

int proto_parse_verify(const uint8_t *payload, uint32_t len, struct verify_req *out)
{
	uint64_t first;
	uint32_t n;

	if (len < PROTO_VERIFY_HDR_SIZE)
		return -EPROTO;
	first = get_be64(payload + 8);
	n = get_be32(payload + 16);
	if (!n || n > PROTO_VERIFY_MAX_PAGES || get_be32(payload + 20) > PROTO_MAX_DISKS ||
	    len != PROTO_VERIFY_HDR_SIZE + (uint64_t)n * PAGE_HASH_SIZE || first > UINT64_MAX - n)
		return -EPROTO;
	*out = (struct verify_req){ .seed = get_be64(payload), .first = first, .count = n,
				    .target = get_be32(payload + 20),
				    .hashes = payload + PROTO_VERIFY_HDR_SIZE };
	return 0;
}

int proto_parse_verify_result(const uint8_t *payload, uint32_t len, struct verify_result *out)
{
	uint32_t n, bad, listed;

	if (len < PROTO_VERIFY_RESULT_HDR_SIZE)
		return -EPROTO;
	n = get_be32(payload + 8);
	bad = get_be32(payload + 12);
	listed = bad == PROTO_VERIFY_SKIPPED ? 0 : bad < PROTO_VERIFY_MAX_BAD ? bad : PROTO_VERIFY_MAX_BAD;
	if (!n || n > PROTO_VERIFY_MAX_PAGES || (bad != PROTO_VERIFY_SKIPPED && bad > n) ||
	    len != PROTO_VERIFY_RESULT_HDR_SIZE + (uint64_t)listed * 8 ||
	    get_be64(payload) > UINT64_MAX - n)
		return -EPROTO;
	*out = (struct verify_result){ .first = get_be64(payload), .count = n, .nbad = bad,
				       .bad_be = payload + PROTO_VERIFY_RESULT_HDR_SIZE };
	return 0;
}

void proto_encode_verify_hdr(uint8_t out[PROTO_VERIFY_HDR_SIZE], uint64_t seed, uint64_t first,
			     uint32_t count, uint32_t target)
{
	put_be64(out, seed);
	put_be64(out + 8, first);
	put_be32(out + 16, count);
	put_be32(out + 20, target);
}

void proto_encode_verify_result_hdr(uint8_t out[PROTO_VERIFY_RESULT_HDR_SIZE], uint64_t first,
				    uint32_t count, uint32_t nbad)
{
	put_be64(out, first);
	put_be32(out + 8, count);
	put_be32(out + 12, nbad);
}

int proto_parse_disk(const uint8_t *payload, uint32_t len, struct disk_op *out)
{
	struct disk_op op;

	if (len < PROTO_DISK_HDR_SIZE)
		return -EPROTO;
	op.disk = get_be32(payload);
	op.op = get_be32(payload + 4);
	op.offset = get_be64(payload + 8);
	op.length = get_be64(payload + 16);
	op.data = NULL;
	if (op.offset + op.length < op.offset)
		return -EPROTO;
	switch (op.op) {
	case DISK_OP_WRITE:
		if (op.length > PROTO_DISK_MAX_WRITE || len - PROTO_DISK_HDR_SIZE != op.length)
			return -EPROTO;
		op.data = payload + PROTO_DISK_HDR_SIZE;
		break;
	case DISK_OP_FLUSH:
		if (op.offset || op.length)
			return -EPROTO;
		/* fall through */
	case DISK_OP_WRITE_ZEROES:
	case DISK_OP_TRIM:
		if (len != PROTO_DISK_HDR_SIZE)
			return -EPROTO;
		break;
	default:
		return -EPROTO;
	}
	*out = op;
	return 0;
}

void proto_encode_disk_hdr(uint8_t out[PROTO_DISK_HDR_SIZE], const struct disk_op *op)
{
	put_be32(out, op->disk);
	put_be32(out + 4, op->op);
	put_be64(out + 8, op->offset);
	put_be64(out + 16, op->length);
}

void frame_reader_init(struct frame_reader *r)
{
	memset(r, 0, sizeof(*r));
}

void frame_reader_free(struct frame_reader *r)
{
	free(r->payload);
	frame_reader_init(r);
}

static ssize_t plain_recv(void *ctx, void *buf, size_t len)
{
	ssize_t n = read(*(int *)ctx, buf, len);

	if (n > 0)
		return n;
	if (n == 0)
		return -EPIPE;
	return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ? -EAGAIN : -errno;
}

static ssize_t plain_send(void *ctx, const struct iovec *iov, int iovcnt)
{
	struct msghdr msg = { .msg_iov = (struct iovec *)iov, .msg_iovlen = (size_t)iovcnt };
	ssize_t n;

	do
		n = sendmsg(*(int *)ctx, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
	while (n < 0 && errno == EINTR);
	if (n >= 0)
		return n;
	return errno == EWOULDBLOCK ? -EAGAIN : -errno;
}

void link_io_plain(struct link_io *io, int *fd)
{
	*io = (struct link_io){ .recv = plain_recv, .send = plain_send, .ctx = fd };
}

static int read_some(const struct link_io *io, uint8_t *buf, size_t want, size_t *got)
{
	ssize_t n = io->recv(io->ctx, buf, want);

	if (n > 0) {
		*got = (size_t)n;
		return 0;
	}
	return n == 0 ? -EPIPE : (int)n;
}

/* The buffer grows with the bytes that arrive, not with what a header
 * claims: a peer that announces 32 MiB and sends 24 bytes costs 64 KiB. */
static int grow_payload(struct frame_reader *r)
{
	size_t cap = r->cap ? r->cap * 2 : 65536;
	uint8_t *p;

	if (cap > r->hdr.len)
		cap = r->hdr.len;
	p = realloc(r->payload, cap);
	if (!p)
		return -ENOMEM;
	r->payload = p;
	r->cap = cap;
	return 0;
}

int frame_reader_read(struct frame_reader *r, int fd)
{
	struct link_io io;

	link_io_plain(&io, &fd);
	return frame_reader_read_io(r, &io);
}

int frame_reader_read_io(struct frame_reader *r, const struct link_io *io)
{
	size_t got = 0;
	int rc;

	/* A complete frame was handed out last time: start the next one. */
	if (r->have >= PROTO_HDR_SIZE && r->have == PROTO_HDR_SIZE + r->hdr.len)
		r->have = 0;

	while (r->have < PROTO_HDR_SIZE) {
		rc = read_some(io, r->hdr_buf + r->have, PROTO_HDR_SIZE - r->have, &got);
		if (rc)
			return rc == -EAGAIN ? 0 : rc;
		r->have += got;
		if (r->have < PROTO_HDR_SIZE)
			continue;
		rc = proto_decode_hdr(r->hdr_buf, &r->hdr);
		if (!rc && r->max_len && r->hdr.len > r->max_len)
			rc = -EMSGSIZE;
		if (rc) {
			/* Never trust this header's length, even if called again. */
			r->have = 0;
			return rc;
		}
	}
	while (r->have < PROTO_HDR_SIZE + r->hdr.len) {
		size_t off = r->have - PROTO_HDR_SIZE;
		size_t room;

		if (off == r->cap && (rc = grow_payload(r)))
			return rc;
		room = (r->cap < r->hdr.len ? r->cap : r->hdr.len) - off;
		rc = read_some(io, r->payload + off, room, &got);
		if (rc)
			return rc == -EAGAIN ? 0 : rc;
		r->have += got;
	}
	return 1;
}
