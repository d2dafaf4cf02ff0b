/* libFuzzer harness for the agent's frame reader (common/proto.c): the
 * bytes a primary sends, through a pipe into frame_reader_read, and each
 * frame it hands out through proto_check_payload and the parser of its
 * type (PAGES, EPOCH_END, HANDOVER_DONE, DISK, RAM_HASHES, DISK_HASHES, VERIFY,
 * VERIFY_RESULT). A frame handed out must be
 * exactly the next bytes of the stream, its header valid, and what a
 * parser accepts must lie inside the payload. Must neither crash nor leak.
 *
 * The first input byte picks how the rest is fed: bit 0 set, each 32-byte
 * header gets its magic, version, length (cut to what follows) and both
 * CRCs fixed up, so that the fuzzer reaches the payload parsers (without
 * it, it exercises the refusal of bad headers); bits 1-2 pick the size of
 * the writes into the pipe (1, 7, 100 bytes, or all), so that the reader
 * is cut at every point of a frame.
 *
 *   make fuzz
 *   mkdir -p build/fuzz/corpus-frame
 *   build/fuzz/fuzz_frame -max_total_time=60 build/fuzz/corpus-frame fuzz/corpus/frame
 */
#include "crc32c.h"
#include "page_hash.h"
#include "proto.h"

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_INPUT (60u << 10) /* fits the pipe's buffer: no write blocks */

static void put_be32(uint8_t *p, uint32_t v)
{
	v = htobe32(v);
	memcpy(p, &v, 4);
}

/* Make each header of stream valid over what follows it. */
static void fix_up(uint8_t *s, size_t len)
{
	size_t off = 0;

	while (len - off >= PROTO_HDR_SIZE) {
		uint8_t *h = s + off;
		uint32_t plen;

		memcpy(&plen, h + 16, 4);
		plen = be32toh(plen);
		if (plen > len - off - PROTO_HDR_SIZE)
			plen = (uint32_t)(len - off - PROTO_HDR_SIZE);
		put_be32(h, PROTO_MAGIC);
		h[4] = PROTO_VERSION;
		h[5] = (uint8_t)(1 + h[5] % (FRAME_TYPE_MAX - 1));
		put_be32(h + 16, plen);
		put_be32(h + 20, crc32c(0, h + PROTO_HDR_SIZE, plen));
		put_be32(h + 28, crc32c(0, h, 28));
		off += PROTO_HDR_SIZE + plen;
	}
}

static void check_pages(const uint8_t *p, uint32_t len)
{
	struct pages_hdr ph;

	if (proto_parse_pages(p, len, &ph))
		return;
	if (!ph.count || ph.count > PROTO_PAGES_PER_FRAME ||
	    8 + (uint64_t)ph.count * (8 + PROTO_PAGE_SIZE) != len || ph.index_be != p + 8 ||
	    ph.data != p + 8 + ph.count * 8u)
		abort();
	/* the last page's last byte is inside the payload (ASan) */
	(void)((volatile const uint8_t *)ph.data)[(size_t)ph.count * PROTO_PAGE_SIZE - 1];
}


/* What proto_parse_ram_hashes accepts lies inside the payload, exactly. */
static void check_ram_hashes(const uint8_t *payload, uint32_t len)
{
	const uint8_t *hashes;
	uint64_t first;
	uint32_t n;

	if (proto_parse_ram_hashes(payload, len, &first, &n, &hashes))
		return;
	if (!n || n > PROTO_RAM_HASHES_PER_FRAME || hashes != payload + PROTO_RAM_HASHES_HDR_SIZE ||
	    len != PROTO_RAM_HASHES_HDR_SIZE + (uint64_t)n * PAGE_HASH_SIZE || first + n < first)
		abort();
}

/* What proto_parse_disk_hashes accepts lies inside the payload, exactly. */
static void check_disk_hashes(const uint8_t *payload, uint32_t len)
{
	const uint8_t *hashes;
	uint64_t first;
	uint32_t disk, n;

	if (proto_parse_disk_hashes(payload, len, &disk, &first, &n, &hashes))
		return;
	if (!n || n > PROTO_DISK_HASHES_PER_FRAME || hashes != payload + PROTO_DISK_HASHES_HDR_SIZE ||
	    len != PROTO_DISK_HASHES_HDR_SIZE + (uint64_t)n * PAGE_HASH_SIZE || first + n < first)
		abort();
}

/* What the verify parsers accept lies inside the payload, exactly: the
 * hashes of count pages, or min(nbad, the most listed) indexes. */
static void check_verify(const struct frame_hdr *h, const uint8_t *payload)
{
	struct verify_req rq;
	struct verify_result rs;
	uint32_t listed;

	if (h->type == FRAME_VERIFY) {
		if (proto_parse_verify(payload, h->len, &rq))
			return;
		if (!rq.count || rq.count > PROTO_VERIFY_MAX_PAGES || rq.target > PROTO_MAX_DISKS ||
		    rq.hashes != payload + PROTO_VERIFY_HDR_SIZE ||
		    h->len != PROTO_VERIFY_HDR_SIZE + (uint64_t)rq.count * PAGE_HASH_SIZE ||
		    rq.first + rq.count < rq.first)
			abort();
		return;
	}
	if (proto_parse_verify_result(payload, h->len, &rs))
		return;
	listed = rs.nbad == PROTO_VERIFY_SKIPPED ? 0 :
		 rs.nbad < PROTO_VERIFY_MAX_BAD ? rs.nbad : PROTO_VERIFY_MAX_BAD;
	if (!rs.count || rs.count > PROTO_VERIFY_MAX_PAGES ||
	    (rs.nbad != PROTO_VERIFY_SKIPPED && rs.nbad > rs.count) ||
	    rs.bad_be != payload + PROTO_VERIFY_RESULT_HDR_SIZE ||
	    h->len != PROTO_VERIFY_RESULT_HDR_SIZE + (uint64_t)listed * 8 ||
	    rs.first + rs.count < rs.first)
		abort();
}

static void check_frame(const struct frame_hdr *h, const uint8_t *payload)
{
	struct epoch_end ee;
	struct handover_done hd;
	struct disk_op op;

	if (h->version != PROTO_VERSION || !h->type || h->type >= FRAME_TYPE_MAX ||
	    h->len > PROTO_MAX_PAYLOAD)
		abort();
	if (proto_check_payload(h, payload) != (crc32c(0, payload, h->len) == h->payload_crc ? 0 : -EBADMSG))
		abort();
	switch (h->type) {
	case FRAME_PAGES:
		check_pages(payload, h->len);
		break;
	case FRAME_EPOCH_END:
		if (!proto_parse_epoch_end(payload, h->len, &ee) && h->len != PROTO_EPOCH_END_SIZE)
			abort();
		break;
	case FRAME_HANDOVER_DONE:
		if (!proto_parse_handover_done(payload, h->len, &hd) &&
		    (h->len != PROTO_HANDOVER_DONE_SIZE || !hd.qemu_pid))
			abort();
		break;
	case FRAME_RAM_HASHES:
		check_ram_hashes(payload, h->len);
		break;
	case FRAME_DISK_HASHES:
		check_disk_hashes(payload, h->len);
		break;
	case FRAME_VERIFY:
	case FRAME_VERIFY_RESULT:
		check_verify(h, payload);
		break;
	case FRAME_DISK:
		if (!proto_parse_disk(payload, h->len, &op) && op.data &&
		    (op.data != payload + PROTO_DISK_HDR_SIZE || op.length != h->len - PROTO_DISK_HDR_SIZE))
			abort();
		break;
	}
}

/* Read every frame the pipe has; false once the stream is done with (an
 * error, or the end). *off: where the next frame starts in the stream. */
static bool drain(struct frame_reader *r, int fd, const uint8_t *s, size_t len, size_t *off)
{
	for (;;) {
		int rc = frame_reader_read(r, fd);

		if (rc == 0)
			return true;
		if (rc < 0)
			return false;
		if (rc != 1 || *off + PROTO_HDR_SIZE + r->hdr.len > len ||
		    memcmp(r->hdr_buf, s + *off, PROTO_HDR_SIZE) ||
		    (r->hdr.len && memcmp(r->payload, s + *off + PROTO_HDR_SIZE, r->hdr.len)))
			abort();
		check_frame(&r->hdr, r->payload);
		*off += PROTO_HDR_SIZE + r->hdr.len;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const size_t steps[] = { 1, 7, 100, MAX_INPUT };
	struct frame_reader r;
	size_t len, step, sent = 0, off = 0;
	uint8_t *s;
	int p[2];
	bool going = true;

	if (size < 1 || size - 1 > MAX_INPUT)
		return 0;
	len = size - 1;
	step = steps[(data[0] >> 1) & 3];
	s = malloc(len ? len : 1);
	if (!s || pipe2(p, O_NONBLOCK | O_CLOEXEC) < 0)
		abort();
	memcpy(s, data + 1, len);
	if (data[0] & 1)
		fix_up(s, len);
	frame_reader_init(&r);
	while (going && sent < len) {
		size_t n = len - sent < step ? len - sent : step;

		if (write(p[1], s + sent, n) != (ssize_t)n)
			abort();
		sent += n;
		going = drain(&r, p[0], s, len, &off);
	}
	close(p[1]);
	if (going) {
		/* The end: what is left is a torn frame, or nothing. */
		if (frame_reader_read(&r, p[0]) != -EPIPE)
			abort();
	}
	close(p[0]);
	frame_reader_free(&r);
	free(s);
	return 0;
}
