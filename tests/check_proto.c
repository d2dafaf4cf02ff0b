/* The wire protocol: header encoding and validation, PAGES and EPOCH_END
 * bodies, the epoch checksum, frame reassembly from a non-blocking stream
 * and the outgoing frame queue, over socketpairs. */
#include "crc32c.h"
#include "frame_queue.h"
#include "page_hash.h"
#include "proto.h"

#include <check.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* ---- helpers ---- */

static void put_be32(uint8_t *p, uint32_t v) { v = htobe32(v); memcpy(p, &v, 4); }
static void put_be64(uint8_t *p, uint64_t v) { v = htobe64(v); memcpy(p, &v, 8); }
static uint32_t get_be32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return be32toh(v); }

/* Recompute the header CRC after the test changed a header field, so that
 * only that field is wrong. */
static void reseal_hdr(uint8_t hdr[PROTO_HDR_SIZE])
{
	put_be32(hdr + 28, crc32c(0, hdr, 28));
}

/* Deterministic pseudo-random bytes (xorshift). */
static uint32_t rng_state = 12345;

static uint32_t rng(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 17;
	rng_state ^= rng_state << 5;
	return rng_state;
}

static void fill_random(uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)rng();
}

/* A PAGES body for count pages: be32 count, be32 pad, be64 idx[], pages. */
static uint8_t *make_pages(uint32_t count, uint32_t *len_out)
{
	uint32_t len = 8 + count * (8 + PROTO_PAGE_SIZE);
	uint8_t *p = malloc(len);

	ck_assert_ptr_nonnull(p);
	put_be32(p, count);
	put_be32(p + 4, 0);
	for (uint32_t i = 0; i < count; i++)
		put_be64(p + 8 + 8 * i, 1000 + 3 * i);
	for (uint32_t i = 0; i < count; i++)
		memset(p + 8 + 8 * count + (size_t)i * PROTO_PAGE_SIZE, (int)(i + 1), PROTO_PAGE_SIZE);
	*len_out = len;
	return p;
}

static void set_nonblock(int fd)
{
	int fl = fcntl(fd, F_GETFL);

	ck_assert_int_ge(fl, 0);
	ck_assert_int_eq(fcntl(fd, F_SETFL, fl | O_NONBLOCK), 0);
}

static void write_all(int fd, const void *buf, size_t len)
{
	const uint8_t *p = buf;

	while (len) {
		ssize_t n = write(fd, p, len);
		ck_assert_int_gt(n, 0);
		p += n;
		len -= (size_t)n;
	}
}

/* One frame as written by the test, to compare with what is read back. */
struct test_frame {
	unsigned type;
	uint64_t epoch;
	uint32_t len;
	uint8_t *payload;
	uint8_t hdr[PROTO_HDR_SIZE];
};

static void test_frame_make(struct test_frame *f, unsigned type, uint64_t epoch, uint32_t len)
{
	struct iovec iov;

	f->type = type;
	f->epoch = epoch;
	f->len = len;
	f->payload = malloc(len ? len : 1);
	ck_assert_ptr_nonnull(f->payload);
	fill_random(f->payload, len);
	iov = (struct iovec){ .iov_base = f->payload, .iov_len = len };
	proto_encode_hdr(f->hdr, type, epoch, &iov, 1);
}

/* The reader holds frame (type, epoch, len, payload) equal to f. */
static void assert_frame_is(const struct frame_reader *r, const struct test_frame *f)
{
	ck_assert_uint_eq(r->hdr.type, f->type);
	ck_assert_uint_eq(r->hdr.epoch, f->epoch);
	ck_assert_uint_eq(r->hdr.len, f->len);
	if (f->len)
		ck_assert_mem_eq(r->payload, f->payload, f->len);
	ck_assert_int_eq(proto_check_payload(&r->hdr, r->payload), 0);
}

/* ---- header ---- */

START_TEST(test_crc32c_known_vector)
{
	/* The standard CRC-32C check value. */
	ck_assert_uint_eq(crc32c(0, "123456789", 9), 0xe3069283u);
	/* Extending a checksum equals checksumming the concatenation. */
	ck_assert_uint_eq(crc32c(crc32c(0, "1234", 4), "56789", 5), 0xe3069283u);
}
END_TEST

START_TEST(test_hdr_round_trip_keeps_type_epoch_len_and_crc)
{
	static const char a[] = "hello, ", b[] = "backup";
	struct iovec iov[2] = {
		{ .iov_base = (void *)a, .iov_len = strlen(a) },
		{ .iov_base = (void *)b, .iov_len = strlen(b) },
	};
	uint8_t hdr[PROTO_HDR_SIZE];
	struct frame_hdr h;

	proto_encode_hdr(hdr, FRAME_DEVSTATE, 0x0123456789abcdefull, iov, 2);
	ck_assert_uint_eq(get_be32(hdr), PROTO_MAGIC);
	memset(&h, 0xee, sizeof(h));
	ck_assert_int_eq(proto_decode_hdr(hdr, &h), 0);
	ck_assert_uint_eq(h.version, PROTO_VERSION);
	ck_assert_uint_eq(h.type, FRAME_DEVSTATE);
	ck_assert_uint_eq(h.flags, 0);
	ck_assert_uint_eq(h.epoch, 0x0123456789abcdefull);
	ck_assert_uint_eq(h.len, strlen(a) + strlen(b));
	ck_assert_uint_eq(h.payload_crc, crc32c(0, "hello, backup", 13));
	ck_assert_int_eq(proto_check_payload(&h, (const uint8_t *)"hello, backup"), 0);
}
END_TEST

START_TEST(test_hdr_round_trip_empty_payload)
{
	uint8_t hdr[PROTO_HDR_SIZE];
	struct frame_hdr h;

	proto_encode_hdr(hdr, FRAME_HEARTBEAT, 7, NULL, 0);
	ck_assert_int_eq(proto_decode_hdr(hdr, &h), 0);
	ck_assert_uint_eq(h.type, FRAME_HEARTBEAT);
	ck_assert_uint_eq(h.epoch, 7);
	ck_assert_uint_eq(h.len, 0);
	ck_assert_uint_eq(h.payload_crc, 0);
}
END_TEST

START_TEST(test_hdr_any_corrupt_byte_is_ebadmsg)
{
	static const char text[] = "payload";
	struct iovec iov = { .iov_base = (void *)text, .iov_len = 7 };
	uint8_t good[PROTO_HDR_SIZE], hdr[PROTO_HDR_SIZE];
	struct frame_hdr h;

	proto_encode_hdr(good, FRAME_PAGES, 3, &iov, 1);
	for (int i = 0; i < PROTO_HDR_SIZE; i++) {
		for (int bit = 0; bit < 8; bit++) {
			memcpy(hdr, good, sizeof(hdr));
			hdr[i] ^= (uint8_t)(1u << bit);
			ck_assert_msg(proto_decode_hdr(hdr, &h) == -EBADMSG,
				      "flipping bit %d of header byte %d was not caught", bit, i);
		}
	}
}
END_TEST

START_TEST(test_hdr_bad_magic_is_ebadmsg_even_with_valid_crc)
{
	uint8_t hdr[PROTO_HDR_SIZE];
	struct frame_hdr h;

	proto_encode_hdr(hdr, FRAME_ACK, 1, NULL, 0);
	put_be32(hdr, 0x524d5554u); /* "RMUT" */
	reseal_hdr(hdr);
	ck_assert_int_eq(proto_decode_hdr(hdr, &h), -EBADMSG);
}
END_TEST

START_TEST(test_hdr_wrong_version_is_eprotonosupport)
{
	uint8_t hdr[PROTO_HDR_SIZE];
	struct frame_hdr h;

	proto_encode_hdr(hdr, FRAME_HELLO, 0, NULL, 0);
	hdr[4] = PROTO_VERSION + 1;
	reseal_hdr(hdr);
	ck_assert_int_eq(proto_decode_hdr(hdr, &h), -EPROTONOSUPPORT);
	ck_assert_uint_eq(h.version, PROTO_VERSION + 1);

	/* A newer peer may use types unknown here: it still hears "version". */
	hdr[5] = FRAME_TYPE_MAX + 3;
	reseal_hdr(hdr);
	ck_assert_int_eq(proto_decode_hdr(hdr, &h), -EPROTONOSUPPORT);
}
END_TEST

START_TEST(test_hdr_unknown_type_is_ebadmsg)
{
	static const unsigned bad[] = { 0, FRAME_TYPE_MAX, FRAME_TYPE_MAX + 1, 255 };
	uint8_t hdr[PROTO_HDR_SIZE];
	struct frame_hdr h;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		proto_encode_hdr(hdr, bad[i], 1, NULL, 0);
		ck_assert_msg(proto_decode_hdr(hdr, &h) == -EBADMSG, "type %u accepted", bad[i]);
	}
	for (unsigned t = FRAME_HELLO; t < FRAME_TYPE_MAX; t++) {
		proto_encode_hdr(hdr, t, 1, NULL, 0);
		ck_assert_msg(proto_decode_hdr(hdr, &h) == 0, "type %u refused", t);
		ck_assert_str_ne(frame_type_name(t), "UNKNOWN");
	}
	ck_assert_str_eq(frame_type_name(0), "UNKNOWN");
	ck_assert_str_eq(frame_type_name(FRAME_TYPE_MAX), "UNKNOWN");
	ck_assert_str_eq(frame_type_name(FRAME_PAGES), "PAGES");
}
END_TEST

START_TEST(test_hdr_oversized_len_is_emsgsize)
{
	uint8_t hdr[PROTO_HDR_SIZE];
	struct frame_hdr h;

	proto_encode_hdr(hdr, FRAME_PAGES, 1, NULL, 0);
	put_be32(hdr + 16, PROTO_MAX_PAYLOAD);
	reseal_hdr(hdr);
	ck_assert_int_eq(proto_decode_hdr(hdr, &h), 0);
	ck_assert_uint_eq(h.len, PROTO_MAX_PAYLOAD);

	put_be32(hdr + 16, PROTO_MAX_PAYLOAD + 1);
	reseal_hdr(hdr);
	ck_assert_int_eq(proto_decode_hdr(hdr, &h), -EMSGSIZE);

	put_be32(hdr + 16, 0xffffffffu);
	reseal_hdr(hdr);
	ck_assert_int_eq(proto_decode_hdr(hdr, &h), -EMSGSIZE);
}
END_TEST

START_TEST(test_payload_corruption_detected)
{
	uint8_t buf[1000], hdr[PROTO_HDR_SIZE];
	struct iovec iov = { .iov_base = buf, .iov_len = sizeof(buf) };
	struct frame_hdr h;

	fill_random(buf, sizeof(buf));
	proto_encode_hdr(hdr, FRAME_DEVSTATE, 4, &iov, 1);
	ck_assert_int_eq(proto_decode_hdr(hdr, &h), 0);
	ck_assert_int_eq(proto_check_payload(&h, buf), 0);
	for (size_t i = 0; i < sizeof(buf); i += 97) {
		buf[i] ^= 0x10;
		ck_assert_msg(proto_check_payload(&h, buf) == -EBADMSG,
			      "flip at byte %zu not detected", i);
		buf[i] ^= 0x10;
	}
	ck_assert_int_eq(proto_check_payload(&h, buf), 0);
}
END_TEST

/* ---- PAGES and EPOCH_END bodies ---- */

START_TEST(test_parse_pages_valid)
{
	uint32_t len;
	uint8_t *p = make_pages(3, &len);
	struct pages_hdr ph;
	uint64_t idx;

	ck_assert_int_eq(proto_parse_pages(p, len, &ph), 0);
	ck_assert_uint_eq(ph.count, 3);
	ck_assert_ptr_eq(ph.index_be, p + 8);
	ck_assert_ptr_eq(ph.data, p + 8 + 3 * 8);
	for (uint32_t i = 0; i < 3; i++) {
		memcpy(&idx, ph.index_be + 8 * i, 8);
		ck_assert_uint_eq(be64toh(idx), 1000 + 3 * i);
		ck_assert_uint_eq(ph.data[(size_t)i * PROTO_PAGE_SIZE], i + 1);
		ck_assert_uint_eq(ph.data[(size_t)i * PROTO_PAGE_SIZE + PROTO_PAGE_SIZE - 1], i + 1);
	}
	free(p);

	/* The largest frame allowed. */
	p = make_pages(PROTO_PAGES_PER_FRAME, &len);
	ck_assert_int_eq(proto_parse_pages(p, len, &ph), 0);
	ck_assert_uint_eq(ph.count, PROTO_PAGES_PER_FRAME);
	free(p);
}
END_TEST

START_TEST(test_parse_pages_count_zero_is_ebadmsg)
{
	uint8_t p[8] = { 0 };
	struct pages_hdr ph;

	ck_assert_int_eq(proto_parse_pages(p, sizeof(p), &ph), -EBADMSG);
}
END_TEST

START_TEST(test_parse_pages_count_too_large_is_ebadmsg)
{
	uint32_t len;
	uint8_t *p = make_pages(PROTO_PAGES_PER_FRAME + 1, &len);
	struct pages_hdr ph;

	/* Length consistent with the count: only the count is wrong. */
	ck_assert_int_eq(proto_parse_pages(p, len, &ph), -EBADMSG);
	free(p);
}
END_TEST

START_TEST(test_parse_pages_nonzero_pad_is_ebadmsg)
{
	uint32_t len;
	uint8_t *p = make_pages(2, &len);
	struct pages_hdr ph;

	ck_assert_int_eq(proto_parse_pages(p, len, &ph), 0);
	p[7] = 1;
	ck_assert_int_eq(proto_parse_pages(p, len, &ph), -EBADMSG);
	p[7] = 0;
	p[4] = 0x80;
	ck_assert_int_eq(proto_parse_pages(p, len, &ph), -EBADMSG);
	free(p);
}
END_TEST

START_TEST(test_parse_pages_length_mismatch_is_ebadmsg)
{
	uint32_t len;
	uint8_t *p = make_pages(2, &len);
	struct pages_hdr ph;

	ck_assert_int_eq(proto_parse_pages(p, len - 1, &ph), -EBADMSG);      /* truncated */
	ck_assert_int_eq(proto_parse_pages(p, len - PROTO_PAGE_SIZE, &ph), -EBADMSG);
	ck_assert_int_eq(proto_parse_pages(p, 8 + 16, &ph), -EBADMSG);       /* indexes only */
	ck_assert_int_eq(proto_parse_pages(p, 7, &ph), -EBADMSG);            /* no header */
	ck_assert_int_eq(proto_parse_pages(p, 0, &ph), -EBADMSG);
	free(p);

	/* Too long: a count of 1 with two pages of data. */
	p = make_pages(2, &len);
	put_be32(p, 1);
	ck_assert_int_eq(proto_parse_pages(p, len, &ph), -EBADMSG);
	free(p);
}
END_TEST

START_TEST(test_epoch_end_round_trip)
{
	struct epoch_end in = {
		.pages = 0x1122334455667788ull,
		.devstate_bytes = 15432,
		.frames = 0xdeadbeefu,
		.epoch_crc = 0x01020304u,
	}, out;
	uint8_t buf[PROTO_EPOCH_END_SIZE];

	memset(&out, 0, sizeof(out));
	proto_encode_epoch_end(buf, &in);
	ck_assert_uint_eq(buf[0], 0x11); /* big-endian on the wire */
	ck_assert_uint_eq(buf[23], 0x04);
	ck_assert_int_eq(proto_parse_epoch_end(buf, sizeof(buf), &out), 0);
	ck_assert_uint_eq(out.pages, in.pages);
	ck_assert_uint_eq(out.devstate_bytes, in.devstate_bytes);
	ck_assert_uint_eq(out.frames, in.frames);
	ck_assert_uint_eq(out.epoch_crc, in.epoch_crc);
}
END_TEST

START_TEST(test_epoch_end_wrong_length_is_ebadmsg)
{
	uint8_t buf[PROTO_EPOCH_END_SIZE + 1] = { 0 };
	struct epoch_end out;

	ck_assert_int_eq(proto_parse_epoch_end(buf, PROTO_EPOCH_END_SIZE - 1, &out), -EBADMSG);
	ck_assert_int_eq(proto_parse_epoch_end(buf, PROTO_EPOCH_END_SIZE + 1, &out), -EBADMSG);
	ck_assert_int_eq(proto_parse_epoch_end(buf, 0, &out), -EBADMSG);
}
END_TEST

/* The wire numbers of the operator frames are part of the protocol: an
 * agent and a replicator of different builds must agree on them. */
START_TEST(test_operator_frame_numbers_and_names)
{
	static const struct { unsigned type; const char *name; } want[] = {
		{ 10, "HANDOVER" }, { 11, "HANDOVER_DONE" }, { 12, "HANDOVER_FAILED" },
		{ 13, "PAUSE" }, { 14, "PAUSE_ACK" },
	};
	uint8_t hdr[PROTO_HDR_SIZE];
	struct frame_hdr h;

	ck_assert_uint_eq(FRAME_GOODBYE, 9);
	ck_assert_uint_eq(FRAME_DISK, 15);
	ck_assert_uint_eq(FRAME_RAM_HASHES, 16);
	ck_assert_uint_eq(FRAME_PEER_STATE, 18);
	ck_assert_uint_eq(FRAME_VERIFY_RESULT, 20);
	ck_assert_uint_eq(FRAME_PAGES_Z, 21);
	ck_assert_uint_eq(FRAME_DISK_HASHES, 22);
	ck_assert_uint_eq(FRAME_TYPE_MAX, 23);
	ck_assert_str_eq(frame_type_name(FRAME_DISK), "DISK");
	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
		ck_assert_str_eq(frame_type_name(want[i].type), want[i].name);
		proto_encode_hdr(hdr, want[i].type, 41, NULL, 0);
		ck_assert_int_eq(proto_decode_hdr(hdr, &h), 0);
		ck_assert_uint_eq(h.type, want[i].type);
		ck_assert_uint_eq(h.epoch, 41);
	}
}
END_TEST

START_TEST(test_handover_done_round_trip)
{
	struct handover_done in = { .qemu_pid = 0x01020304u, .restore_ms = 1234 }, out;
	uint8_t buf[PROTO_HANDOVER_DONE_SIZE];

	proto_encode_handover_done(buf, &in);
	ck_assert_uint_eq(get_be32(buf), 0x01020304u);
	ck_assert_uint_eq(get_be32(buf + 4), 1234);
	memset(&out, 0xee, sizeof(out));
	ck_assert_int_eq(proto_parse_handover_done(buf, sizeof(buf), &out), 0);
	ck_assert_uint_eq(out.qemu_pid, in.qemu_pid);
	ck_assert_uint_eq(out.restore_ms, in.restore_ms);
}
END_TEST

/* FRAME_RAM_HASHES: a header and exactly count hashes, nothing else. */
START_TEST(test_ram_hashes_parse)
{
	static uint8_t buf[PROTO_RAM_HASHES_HDR_SIZE + 3 * PAGE_HASH_SIZE + 1];
	const uint8_t *hashes = NULL;
	uint64_t first = 0;
	uint32_t n = 0, len = PROTO_RAM_HASHES_HDR_SIZE + 3 * PAGE_HASH_SIZE;

	proto_encode_ram_hashes_hdr(buf, 65536, 3);
	ck_assert_int_eq(proto_parse_ram_hashes(buf, len, &first, &n, &hashes), 0);
	ck_assert_uint_eq(first, 65536);
	ck_assert_uint_eq(n, 3);
	ck_assert_ptr_eq(hashes, buf + PROTO_RAM_HASHES_HDR_SIZE);
	/* a hash short, one byte over, no header */
	ck_assert_int_eq(proto_parse_ram_hashes(buf, len - 1, &first, &n, &hashes), -EPROTO);
	ck_assert_int_eq(proto_parse_ram_hashes(buf, len + 1, &first, &n, &hashes), -EPROTO);
	ck_assert_int_eq(proto_parse_ram_hashes(buf, 15, &first, &n, &hashes), -EPROTO);
	/* no hashes, too many, the reserved word set, a range past 2^64 */
	proto_encode_ram_hashes_hdr(buf, 0, 0);
	ck_assert_int_eq(proto_parse_ram_hashes(buf, PROTO_RAM_HASHES_HDR_SIZE, &first, &n,
						&hashes), -EPROTO);
	proto_encode_ram_hashes_hdr(buf, 0, PROTO_RAM_HASHES_PER_FRAME + 1);
	ck_assert_int_eq(proto_parse_ram_hashes(buf, len, &first, &n, &hashes), -EPROTO);
	proto_encode_ram_hashes_hdr(buf, 0, 3);
	buf[15] = 1;
	ck_assert_int_eq(proto_parse_ram_hashes(buf, len, &first, &n, &hashes), -EPROTO);
	proto_encode_ram_hashes_hdr(buf, UINT64_MAX - 1, 3);
	ck_assert_int_eq(proto_parse_ram_hashes(buf, len, &first, &n, &hashes), -EPROTO);
	ck_assert_str_eq(frame_type_name(FRAME_RAM_HASHES), "RAM_HASHES");
}
END_TEST

/* FRAME_DISK_HASHES: a header and exactly count hashes, nothing else. */
START_TEST(test_disk_hashes_parse)
{
	static uint8_t buf[PROTO_DISK_HASHES_HDR_SIZE + 2 * PAGE_HASH_SIZE + 1];
	const uint8_t *hashes = NULL;
	uint64_t first = 0;
	uint32_t disk = 0, n = 0, len = PROTO_DISK_HASHES_HDR_SIZE + 2 * PAGE_HASH_SIZE;

	proto_encode_disk_hashes_hdr(buf, 3, 1024, 2);
	ck_assert_uint_eq(get_be32(buf), 3);
	ck_assert_int_eq(proto_parse_disk_hashes(buf, len, &disk, &first, &n, &hashes), 0);
	ck_assert_uint_eq(disk, 3);
	ck_assert_uint_eq(first, 1024);
	ck_assert_uint_eq(n, 2);
	ck_assert_ptr_eq(hashes, buf + PROTO_DISK_HASHES_HDR_SIZE);
	/* a hash short, one byte over, no header */
	ck_assert_int_eq(proto_parse_disk_hashes(buf, len - 1, &disk, &first, &n, &hashes), -EPROTO);
	ck_assert_int_eq(proto_parse_disk_hashes(buf, len + 1, &disk, &first, &n, &hashes), -EPROTO);
	ck_assert_int_eq(proto_parse_disk_hashes(buf, 15, &disk, &first, &n, &hashes), -EPROTO);
	/* no hashes, too many, a range past 2^64 */
	proto_encode_disk_hashes_hdr(buf, 0, 0, 0);
	ck_assert_int_eq(proto_parse_disk_hashes(buf, PROTO_DISK_HASHES_HDR_SIZE, &disk, &first,
						 &n, &hashes), -EPROTO);
	proto_encode_disk_hashes_hdr(buf, 0, 0, PROTO_DISK_HASHES_PER_FRAME + 1);
	ck_assert_int_eq(proto_parse_disk_hashes(buf, len, &disk, &first, &n, &hashes), -EPROTO);
	proto_encode_disk_hashes_hdr(buf, 0, UINT64_MAX - 1, 2);
	ck_assert_int_eq(proto_parse_disk_hashes(buf, len, &disk, &first, &n, &hashes), -EPROTO);
	ck_assert_str_eq(frame_type_name(FRAME_DISK_HASHES), "DISK_HASHES");
	/* chunks of a disk: the last one may be short */
	ck_assert_uint_eq(proto_disk_chunks(65536, 65536), 1);
	ck_assert_uint_eq(proto_disk_chunks(65536 + 512, 65536), 2);
	/* chunk sizes: powers of two from 4 KiB to 1 MiB; the primary's
	 * choice keeps a disk to 2^20 chunks */
	ck_assert(proto_disk_hash_chunk_ok(4096) && proto_disk_hash_chunk_ok(1 << 20));
	ck_assert(!proto_disk_hash_chunk_ok(2048) && !proto_disk_hash_chunk_ok(2 << 20));
	ck_assert(!proto_disk_hash_chunk_ok(12288) && !proto_disk_hash_chunk_ok(-4096));
	ck_assert_uint_eq(proto_disk_hash_chunk_for(64 << 20), 4096);
	ck_assert_uint_eq(proto_disk_hash_chunk_for(4ull << 30), 4096);
	ck_assert_uint_eq(proto_disk_hash_chunk_for((4ull << 30) + 4096), 8192);
	ck_assert_uint_eq(proto_disk_hash_chunk_for(100ull << 30), 131072);
	ck_assert_uint_eq(proto_disk_hash_chunk_for(1ull << 50), 1 << 20);
}
END_TEST

/* The seed as the HELLO carries it, and the hash both ends compute. */
START_TEST(test_page_hash_seed_and_value)
{
	static uint8_t page[PROTO_PAGE_SIZE];
	uint8_t a[PAGE_HASH_SIZE], b[PAGE_HASH_SIZE];
	char text[17];
	uint64_t seed = 0;

	page_hash_seed_format(0x0123456789abcdefull, text);
	ck_assert_str_eq(text, "0123456789abcdef");
	ck_assert(page_hash_seed_parse(text, &seed));
	ck_assert_uint_eq(seed, 0x0123456789abcdefull);
	ck_assert(!page_hash_seed_parse("0123456789ABCDEF", &seed));
	ck_assert(!page_hash_seed_parse("0123456789abcde", &seed));
	ck_assert(!page_hash_seed_parse("0123456789abcdefa", &seed));
	ck_assert(!page_hash_seed_parse(NULL, &seed));
	page_hash(page, 1, a);
	page_hash(page, 1, b);
	ck_assert_mem_eq(a, b, PAGE_HASH_SIZE);
	page_hash(page, 2, b);   /* another seed, another function */
	ck_assert(memcmp(a, b, PAGE_HASH_SIZE));
	page[4095] = 1;          /* one bit of the page */
	page_hash(page, 1, b);
	ck_assert(memcmp(a, b, PAGE_HASH_SIZE));
}
END_TEST

START_TEST(test_handover_done_bad_payload_is_ebadmsg)
{
	uint8_t buf[PROTO_HANDOVER_DONE_SIZE + 1] = { 0, 0, 0, 7, 0, 0, 0, 1, 0 };
	struct handover_done out;

	ck_assert_int_eq(proto_parse_handover_done(buf, 0, &out), -EBADMSG);
	ck_assert_int_eq(proto_parse_handover_done(buf, PROTO_HANDOVER_DONE_SIZE - 1, &out), -EBADMSG);
	ck_assert_int_eq(proto_parse_handover_done(buf, PROTO_HANDOVER_DONE_SIZE + 1, &out), -EBADMSG);
	ck_assert_int_eq(proto_parse_handover_done(buf, PROTO_HANDOVER_DONE_SIZE, &out), 0);
	ck_assert_uint_eq(out.qemu_pid, 7);
	/* pid 0 is no QEMU: the backup cannot have started one. */
	memset(buf, 0, 4);
	ck_assert_int_eq(proto_parse_handover_done(buf, PROTO_HANDOVER_DONE_SIZE, &out), -EBADMSG);
}
END_TEST

START_TEST(test_epoch_crc_is_order_sensitive)
{
	uint32_t a = crc32c(0, "frame a", 7), b = crc32c(0, "frame b", 7);
	uint32_t ab = proto_epoch_crc_add(proto_epoch_crc_add(0, a), b);
	uint32_t ba = proto_epoch_crc_add(proto_epoch_crc_add(0, b), a);
	uint32_t aab = proto_epoch_crc_add(proto_epoch_crc_add(proto_epoch_crc_add(0, a), a), b);
	uint8_t be[8];

	ck_assert_uint_ne(a, b);
	ck_assert_uint_ne(ab, ba);    /* swapped frames */
	ck_assert_uint_ne(ab, aab);   /* repeated frame */
	ck_assert_uint_ne(ab, proto_epoch_crc_add(0, b)); /* lost frame */
	/* As documented: crc32c over the big-endian frame CRCs, in order. */
	put_be32(be, a);
	put_be32(be + 4, b);
	ck_assert_uint_eq(ab, crc32c(0, be, 8));
}
END_TEST

/* ---- frame_reader ---- */

#define NFRAMES 6

static void make_frame_set(struct test_frame f[NFRAMES])
{
	static const uint32_t lens[NFRAMES] = { 0, 1, 31, 33, 5000, 70000 };
	static const unsigned types[NFRAMES] = { FRAME_HEARTBEAT, FRAME_ACK, FRAME_DEVSTATE,
						 FRAME_NACK, FRAME_PAGES, FRAME_DEVSTATE };

	for (int i = 0; i < NFRAMES; i++)
		test_frame_make(&f[i], types[i], 100 + (uint64_t)i, lens[i]);
}

static void free_frame_set(struct test_frame f[NFRAMES])
{
	for (int i = 0; i < NFRAMES; i++)
		free(f[i].payload);
}

/* Write every frame in chunks of chunk() bytes, draining the reader after
 * each write, and check it hands out exactly the frames, in order. */
static void feed_and_check(size_t (*chunk)(size_t pos))
{
	struct test_frame f[NFRAMES];
	struct frame_reader r;
	uint8_t *stream;
	size_t total = 0, pos = 0;
	int sv[2], got = 0, rc;

	make_frame_set(f);
	for (int i = 0; i < NFRAMES; i++)
		total += PROTO_HDR_SIZE + f[i].len;
	stream = malloc(total);
	ck_assert_ptr_nonnull(stream);
	for (int i = 0; i < NFRAMES; i++) {
		memcpy(stream + pos, f[i].hdr, PROTO_HDR_SIZE);
		if (f[i].len)
			memcpy(stream + pos + PROTO_HDR_SIZE, f[i].payload, f[i].len);
		pos += PROTO_HDR_SIZE + f[i].len;
	}

	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	set_nonblock(sv[1]);
	frame_reader_init(&r);
	ck_assert_int_eq(frame_reader_read(&r, sv[1]), 0); /* nothing yet */

	for (pos = 0; pos < total;) {
		size_t n = chunk(pos);
		if (n > total - pos)
			n = total - pos;
		write_all(sv[0], stream + pos, n);
		pos += n;
		while ((rc = frame_reader_read(&r, sv[1])) == 1) {
			ck_assert_int_lt(got, NFRAMES);
			assert_frame_is(&r, &f[got]);
			got++;
		}
		ck_assert_int_eq(rc, 0);
	}
	ck_assert_int_eq(got, NFRAMES);
	ck_assert_int_eq(frame_reader_read(&r, sv[1]), 0);
	close(sv[0]);
	ck_assert_int_eq(frame_reader_read(&r, sv[1]), -EPIPE);

	frame_reader_free(&r);
	close(sv[1]);
	free(stream);
	free_frame_set(f);
}

static size_t chunk_one(size_t pos) { return 1; }
static size_t chunk_odd(size_t pos)
{
	static const size_t sizes[] = { 3, 7, 31, 33, 1, 4093, 17, 65537 };
	static size_t k;

	return sizes[k++ % (sizeof(sizes) / sizeof(sizes[0]))];
}

START_TEST(test_reader_byte_by_byte_returns_frames_in_order_then_epipe)
{
	feed_and_check(chunk_one);
}
END_TEST

START_TEST(test_reader_odd_chunks_returns_frames_in_order_then_epipe)
{
	feed_and_check(chunk_odd);
}
END_TEST

START_TEST(test_reader_truncated_payload_is_epipe_never_a_frame)
{
	struct test_frame f;
	struct frame_reader r;
	int sv[2], rc;

	test_frame_make(&f, FRAME_DEVSTATE, 9, 4000);
	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	set_nonblock(sv[1]);
	frame_reader_init(&r);
	write_all(sv[0], f.hdr, PROTO_HDR_SIZE);
	write_all(sv[0], f.payload, f.len / 2);
	ck_assert_int_eq(frame_reader_read(&r, sv[1]), 0);
	close(sv[0]);
	rc = frame_reader_read(&r, sv[1]);
	ck_assert_int_eq(rc, -EPIPE);
	ck_assert_int_eq(frame_reader_read(&r, sv[1]), -EPIPE);
	frame_reader_free(&r);
	close(sv[1]);
	free(f.payload);
}
END_TEST

START_TEST(test_reader_truncated_header_is_epipe)
{
	struct test_frame f;
	struct frame_reader r;
	int sv[2];

	test_frame_make(&f, FRAME_ACK, 9, 0);
	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	set_nonblock(sv[1]);
	frame_reader_init(&r);
	write_all(sv[0], f.hdr, PROTO_HDR_SIZE - 1);
	ck_assert_int_eq(frame_reader_read(&r, sv[1]), 0);
	close(sv[0]);
	ck_assert_int_eq(frame_reader_read(&r, sv[1]), -EPIPE);
	frame_reader_free(&r);
	close(sv[1]);
	free(f.payload);
}
END_TEST

START_TEST(test_reader_bad_header_is_reported)
{
	struct test_frame f;
	struct frame_reader r;
	int sv[2];

	test_frame_make(&f, FRAME_DEVSTATE, 9, 10);
	f.hdr[9] ^= 1; /* epoch byte: header CRC no longer matches */
	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	set_nonblock(sv[1]);
	frame_reader_init(&r);
	write_all(sv[0], f.hdr, PROTO_HDR_SIZE);
	write_all(sv[0], f.payload, f.len);
	ck_assert_int_eq(frame_reader_read(&r, sv[1]), -EBADMSG);
	frame_reader_free(&r);
	close(sv[0]);
	close(sv[1]);
	free(f.payload);
}
END_TEST

/* ---- frame_queue ---- */

/* Read whatever is available into r, appending complete frames to out. */
static int drain_frames(struct frame_reader *r, int fd, struct test_frame *out, int max, int got)
{
	int rc;

	while ((rc = frame_reader_read(r, fd)) == 1) {
		ck_assert_int_lt(got, max);
		out[got].type = r->hdr.type;
		out[got].epoch = r->hdr.epoch;
		out[got].len = r->hdr.len;
		out[got].payload = malloc(r->hdr.len ? r->hdr.len : 1);
		ck_assert_ptr_nonnull(out[got].payload);
		if (r->hdr.len)
			memcpy(out[got].payload, r->payload, r->hdr.len);
		ck_assert_int_eq(proto_check_payload(&r->hdr, r->payload), 0);
		got++;
	}
	ck_assert_int_eq(rc, 0);
	return got;
}

START_TEST(test_queue_flush_through_slow_reader_delivers_identical_frames)
{
	enum { QF = 4 };
	static const size_t piece[3] = { 8 + 8 * 40, 40 * PROTO_PAGE_SIZE, 777 };
	struct test_frame got[QF];
	uint8_t *whole[QF];
	size_t flen[QF], total = 0;
	struct frame_queue q;
	struct frame_reader r;
	uint32_t crc[QF];
	int sv[2], rc, n = 0, would_block = 0, sndbuf = 4096, rcvbuf = 4096;

	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	ck_assert_int_eq(setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf)), 0);
	ck_assert_int_eq(setsockopt(sv[1], SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf)), 0);
	set_nonblock(sv[1]);
	frame_queue_init(&q);
	frame_reader_init(&r);

	/* Each frame: three iovecs, the first one owned by the queue, the
	 * others (the "pages") referenced in place. */
	for (int i = 0; i < QF; i++) {
		uint8_t *owned = malloc(piece[0]);
		struct iovec iov[3];

		ck_assert_ptr_nonnull(owned);
		fill_random(owned, piece[0]);
		flen[i] = piece[0] + piece[1] + piece[2];
		whole[i] = malloc(flen[i]);
		ck_assert_ptr_nonnull(whole[i]);
		memcpy(whole[i], owned, piece[0]);
		fill_random(whole[i] + piece[0], piece[1] + piece[2]);
		iov[0] = (struct iovec){ .iov_base = owned, .iov_len = piece[0] };
		iov[1] = (struct iovec){ .iov_base = whole[i] + piece[0], .iov_len = piece[1] };
		iov[2] = (struct iovec){ .iov_base = whole[i] + piece[0] + piece[1], .iov_len = piece[2] };
		ck_assert_int_eq(frame_queue_push(&q, FRAME_PAGES, 50 + (uint64_t)i, iov, 3, owned,
						  &crc[i]), 0);
		ck_assert_uint_eq(crc[i], crc32c(0, whole[i], flen[i]));
		total += PROTO_HDR_SIZE + flen[i];
	}
	ck_assert_uint_eq(q.frames, QF);
	ck_assert_uint_eq(q.bytes_queued, total);
	ck_assert_uint_eq(q.bytes_sent, 0);

	for (int rounds = 0; rounds < 100000; rounds++) {
		rc = frame_queue_flush(&q, sv[0]);
		ck_assert_int_ge(rc, 0);
		ck_assert_uint_eq(q.bytes_sent + q.bytes_queued, total);
		if (rc == 1)
			break;
		would_block++;
		ck_assert_uint_gt(q.bytes_queued, 0);
		ck_assert_uint_gt(q.frames, 0);
		n = drain_frames(&r, sv[1], got, QF, n);
	}
	ck_assert_int_eq(rc, 1);
	ck_assert_int_gt(would_block, 0); /* the small buffers did push back */
	ck_assert_uint_eq(q.frames, 0);
	ck_assert_uint_eq(q.bytes_queued, 0);
	ck_assert_uint_eq(q.bytes_sent, total);
	ck_assert_ptr_null(q.head);
	while (n < QF)
		n = drain_frames(&r, sv[1], got, QF, n);

	for (int i = 0; i < QF; i++) {
		ck_assert_uint_eq(got[i].type, FRAME_PAGES);
		ck_assert_uint_eq(got[i].epoch, 50 + (uint64_t)i);
		ck_assert_uint_eq(got[i].len, flen[i]);
		ck_assert_mem_eq(got[i].payload, whole[i], flen[i]);
		free(got[i].payload);
		free(whole[i]);
	}
	/* The queue is reusable after it ran empty. */
	ck_assert_int_eq(frame_queue_push(&q, FRAME_HEARTBEAT, 1, NULL, 0, NULL, NULL), 0);
	ck_assert_int_eq(frame_queue_flush(&q, sv[0]), 1);
	ck_assert_uint_eq(q.bytes_sent, total + PROTO_HDR_SIZE);
	ck_assert_int_eq(drain_frames(&r, sv[1], got, 1, 0), 1);
	ck_assert_uint_eq(got[0].type, FRAME_HEARTBEAT);
	free(got[0].payload);

	frame_reader_free(&r);
	close(sv[0]);
	close(sv[1]);
}
END_TEST

/* Last words do not wait behind a checkpoint: frames not begun are
 * dropped, a frame partly on the wire goes out whole, and the GOODBYE
 * queued after it is the next frame the peer reads. */
START_TEST(test_queue_drop_unsent_keeps_the_started_frame)
{
	enum { BIG = 1 << 20 };
	uint8_t *big = calloc(1, BIG);
	struct iovec iov = { .iov_base = big, .iov_len = BIG };
	struct test_frame got[3];
	struct frame_reader r;
	struct frame_queue q;
	int sv[2], n = 0, small = 4096;

	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof(small));
	set_nonblock(sv[0]);
	set_nonblock(sv[1]);
	frame_queue_init(&q);
	frame_reader_init(&r);
	for (int i = 0; i < 3; i++)
		ck_assert_int_eq(frame_queue_push(&q, FRAME_PAGES, 7, &iov, 1, NULL, NULL), 0);
	ck_assert_int_eq(frame_queue_flush(&q, sv[0]), 0); /* the first is under way */
	frame_queue_drop_unsent(&q, false);
	ck_assert_uint_eq(q.frames, 1);
	ck_assert_uint_lt(q.bytes_queued, BIG + PROTO_HDR_SIZE);
	ck_assert_int_eq(frame_queue_push(&q, FRAME_GOODBYE, 7, NULL, 0, NULL, NULL), 0);
	while (n < 2) {
		ck_assert_int_ge(frame_queue_flush(&q, sv[0]), 0);
		n = drain_frames(&r, sv[1], got, 3, n);
	}
	ck_assert_uint_eq(got[0].type, FRAME_PAGES);
	ck_assert_uint_eq(got[0].len, BIG);
	ck_assert_uint_eq(got[1].type, FRAME_GOODBYE);
	ck_assert_uint_eq(q.bytes_queued, 0);
	/* nothing begun: everything goes, unless the writer holds the head */
	for (int i = 0; i < 2; i++)
		ck_assert_int_eq(frame_queue_push(&q, FRAME_PAGES, 8, &iov, 1, NULL, NULL), 0);
	frame_queue_drop_unsent(&q, true);
	ck_assert_uint_eq(q.frames, 1);
	frame_queue_drop_unsent(&q, false);
	ck_assert_uint_eq(q.frames, 0);
	ck_assert_uint_eq(q.bytes_queued, 0);
	ck_assert_int_eq(frame_queue_push(&q, FRAME_HEARTBEAT, 9, NULL, 0, NULL, NULL), 0);
	ck_assert_int_eq(frame_queue_flush(&q, sv[0]), 1); /* the tail was mended */
	for (int i = 0; i < 2; i++)
		free(got[i].payload);
	frame_reader_free(&r);
	close(sv[0]);
	close(sv[1]);
	free(big);
}
END_TEST

START_TEST(test_queue_clear_frees_owned_and_resets_counts)
{
	struct frame_queue q;

	frame_queue_init(&q);
	for (int i = 0; i < 5; i++) {
		char *owned = strdup("owned by the queue");
		struct iovec iov = { .iov_base = owned, .iov_len = strlen(owned) };
		ck_assert_int_eq(frame_queue_push(&q, FRAME_NACK, (uint64_t)i, &iov, 1, owned, NULL), 0);
	}
	ck_assert_uint_eq(q.frames, 5);
	ck_assert_uint_eq(q.bytes_queued, 5 * (PROTO_HDR_SIZE + 18));
	frame_queue_clear(&q);
	ck_assert_uint_eq(q.frames, 0);
	ck_assert_uint_eq(q.bytes_queued, 0);
	ck_assert_ptr_null(q.head);
	/* Leak-checked by ASan: all five owned buffers must be gone. */
}
END_TEST

START_TEST(test_queue_flush_to_closed_peer_is_epipe)
{
	struct frame_queue q;
	int sv[2];
	char *owned = strdup("x");
	struct iovec iov = { .iov_base = owned, .iov_len = 1 };

	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	close(sv[1]);
	frame_queue_init(&q);
	ck_assert_int_eq(frame_queue_push(&q, FRAME_ACK, 1, &iov, 1, owned, NULL), 0);
	ck_assert_int_eq(frame_queue_flush(&q, sv[0]), -EPIPE);
	ck_assert_uint_eq(q.frames, 1);
	frame_queue_clear(&q);
	close(sv[0]);
}
END_TEST

/* Regression: a frame whose payload iovecs include empty pieces (at the end,
 * in the middle, or only one empty piece) must leave the queue. consume()
 * used to stop when the written byte count reached 0, leaving a trailing
 * empty iovec counted; the next sendmsg() wrote 0 bytes and
 * frame_queue_flush() spun forever (this test then hits its timeout). */
START_TEST(test_queue_flush_with_empty_iovecs_completes)
{
	struct frame_queue q;
	struct frame_reader r;
	struct test_frame got[3];
	int sv[2];
	struct iovec trailing[2] = {
		{ .iov_base = (void *)"abc", .iov_len = 3 },
		{ .iov_base = (void *)"", .iov_len = 0 },
	};
	struct iovec middle[3] = {
		{ .iov_base = (void *)"de", .iov_len = 2 },
		{ .iov_base = (void *)"", .iov_len = 0 },
		{ .iov_base = (void *)"f", .iov_len = 1 },
	};
	struct iovec only = { .iov_base = (void *)"", .iov_len = 0 };

	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	set_nonblock(sv[1]);
	frame_queue_init(&q);
	frame_reader_init(&r);
	ck_assert_int_eq(frame_queue_push(&q, FRAME_NACK, 3, trailing, 2, NULL, NULL), 0);
	ck_assert_int_eq(frame_queue_push(&q, FRAME_NACK, 4, middle, 3, NULL, NULL), 0);
	ck_assert_int_eq(frame_queue_push(&q, FRAME_ACK, 5, &only, 1, NULL, NULL), 0);
	ck_assert_int_eq(frame_queue_flush(&q, sv[0]), 1);
	ck_assert_uint_eq(q.frames, 0);
	ck_assert_uint_eq(q.bytes_queued, 0);
	ck_assert_uint_eq(q.bytes_sent, 3 * PROTO_HDR_SIZE + 3 + 3);
	ck_assert_int_eq(drain_frames(&r, sv[1], got, 3, 0), 3);
	ck_assert_uint_eq(got[0].len, 3);
	ck_assert_mem_eq(got[0].payload, "abc", 3);
	ck_assert_uint_eq(got[1].len, 3);
	ck_assert_mem_eq(got[1].payload, "def", 3);
	ck_assert_uint_eq(got[2].type, FRAME_ACK);
	ck_assert_uint_eq(got[2].epoch, 5);
	ck_assert_uint_eq(got[2].len, 0);
	for (int i = 0; i < 3; i++)
		free(got[i].payload);
	frame_reader_free(&r);
	close(sv[0]);
	close(sv[1]);
}
END_TEST

/* ---- DISK ---- */

/* A DISK body: the 24-byte header of op, then data_len bytes of data. */
static uint8_t *make_disk(uint32_t disk, uint32_t op, uint64_t off, uint64_t length,
			  uint32_t data_len, uint32_t *len_out)
{
	uint8_t *p = malloc(PROTO_DISK_HDR_SIZE + data_len + 1);

	ck_assert_ptr_nonnull(p);
	put_be32(p, disk);
	put_be32(p + 4, op);
	put_be64(p + 8, off);
	put_be64(p + 16, length);
	fill_random(p + PROTO_DISK_HDR_SIZE, data_len);
	*len_out = PROTO_DISK_HDR_SIZE + data_len;
	return p;
}

/* Every op code round-trips through the encoder and the parser. */
START_TEST(test_disk_round_trip_every_op)
{
	static const struct disk_op ops[] = {
		{ 3, DISK_OP_WRITE, 1u << 20, 4096, NULL },
		{ 0, DISK_OP_WRITE, 512, 0, NULL },
		{ 15, DISK_OP_WRITE_ZEROES, 0x123456789000ull, 1ull << 40, NULL },
		{ 1, DISK_OP_TRIM, 4096, 65536, NULL },
		{ 2, DISK_OP_FLUSH, 0, 0, NULL },
	};

	for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++) {
		uint32_t dlen = ops[i].op == DISK_OP_WRITE ? (uint32_t)ops[i].length : 0;
		uint8_t *p = malloc(PROTO_DISK_HDR_SIZE + dlen);
		struct disk_op got;

		ck_assert_ptr_nonnull(p);
		proto_encode_disk_hdr(p, &ops[i]);
		fill_random(p + PROTO_DISK_HDR_SIZE, dlen);
		ck_assert_uint_eq(get_be32(p + 4), ops[i].op);
		ck_assert_msg(proto_parse_disk(p, PROTO_DISK_HDR_SIZE + dlen, &got) == 0, "op %zu", i);
		ck_assert_uint_eq(got.disk, ops[i].disk);
		ck_assert_uint_eq(got.op, ops[i].op);
		ck_assert_uint_eq(got.offset, ops[i].offset);
		ck_assert_uint_eq(got.length, ops[i].length);
		if (ops[i].op == DISK_OP_WRITE)
			ck_assert_ptr_eq(got.data, p + PROTO_DISK_HDR_SIZE);
		else
			ck_assert_ptr_null(got.data);
		free(p);
	}
}
END_TEST

/* The largest WRITE is 1 MiB of data; one byte more is refused. */
START_TEST(test_disk_write_size_limit)
{
	uint32_t len;
	uint8_t *p = make_disk(0, DISK_OP_WRITE, 0, PROTO_DISK_MAX_WRITE, PROTO_DISK_MAX_WRITE, &len);
	struct disk_op got;

	ck_assert_int_eq(proto_parse_disk(p, len, &got), 0);
	ck_assert_uint_eq(got.length, PROTO_DISK_MAX_WRITE);
	free(p);
	p = make_disk(0, DISK_OP_WRITE, 0, PROTO_DISK_MAX_WRITE + 1, PROTO_DISK_MAX_WRITE + 1, &len);
	ck_assert_int_eq(proto_parse_disk(p, len, &got), -EPROTO);
	free(p);
}
END_TEST

/* Malformed bodies are refused and leave the output untouched. */
START_TEST(test_disk_malformed_is_eproto_and_untouched)
{
	static const struct {
		uint32_t op;
		uint64_t off, length;
		uint32_t data, cut;
		const char *what;
	} bad[] = {
		{ DISK_OP_WRITE, 0, 4096, 4095, 0, "WRITE with a byte of data missing" },
		{ DISK_OP_WRITE, 0, 4096, 4097, 0, "WRITE with a byte too many" },
		{ DISK_OP_WRITE, 0, 16, 16, 10, "data cut short" },
		{ DISK_OP_WRITE, UINT64_MAX - 10, 16, 16, 0, "offset + length overflows" },
		{ DISK_OP_WRITE_ZEROES, 0, 4096, 1, 0, "WRITE_ZEROES with data" },
		{ DISK_OP_TRIM, 0, 4096, 8, 0, "TRIM with data" },
		{ DISK_OP_TRIM, 1, UINT64_MAX, 0, 0, "TRIM overflowing" },
		{ DISK_OP_FLUSH, 0, 512, 0, 0, "FLUSH with a length" },
		{ DISK_OP_FLUSH, 512, 0, 0, 0, "FLUSH with an offset" },
		{ DISK_OP_FLUSH, 0, 0, 4, 0, "FLUSH with data" },
		{ 0, 0, 0, 0, 0, "op 0" },
		{ 5, 0, 512, 0, 0, "op 5" },
		{ 0xffffffffu, 0, 512, 512, 0, "op 0xffffffff" },
	};
	struct disk_op sentinel = { 77, 77, 77, 77, (const uint8_t *)"x" }, got;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		uint32_t len;
		uint8_t *p = make_disk(1, bad[i].op, bad[i].off, bad[i].length, bad[i].data, &len);

		got = sentinel;
		ck_assert_msg(proto_parse_disk(p, len - bad[i].cut, &got) == -EPROTO,
			      "accepted: %s", bad[i].what);
		ck_assert_msg(!memcmp(&got, &sentinel, sizeof(got)), "half-parsed: %s", bad[i].what);
		free(p);
	}
	got = sentinel;
	ck_assert_int_eq(proto_parse_disk((const uint8_t *)"", 0, &got), -EPROTO);
	ck_assert(!memcmp(&got, &sentinel, sizeof(got)));
}
END_TEST

/* Every truncation of a valid WRITE is refused (no length confusion). */
START_TEST(test_disk_every_truncation_is_refused)
{
	uint32_t len;
	uint8_t *p = make_disk(2, DISK_OP_WRITE, 8192, 100, 100, &len);
	struct disk_op got;

	ck_assert_int_eq(proto_parse_disk(p, len, &got), 0);
	for (uint32_t l = 0; l < len; l++)
		ck_assert_msg(proto_parse_disk(p, l, &got) == -EPROTO, "length %u accepted", l);
	free(p);
}
END_TEST

/* A header that claims 32 MiB costs the reader what arrives, not what it
 * claims; the frame still reassembles whole when all of it comes. */
START_TEST(test_reader_grows_with_arrivals)
{
	struct test_frame f;
	struct frame_reader r;
	int sv[2];

	test_frame_make(&f, FRAME_PAGES, 3, PROTO_MAX_PAYLOAD);
	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	set_nonblock(sv[0]);
	set_nonblock(sv[1]);
	frame_reader_init(&r);
	write_all(sv[0], f.hdr, PROTO_HDR_SIZE);
	write_all(sv[0], f.payload, 24);
	ck_assert_int_eq(frame_reader_read(&r, sv[1]), 0);
	ck_assert_uint_le(r.cap, 65536);
	for (size_t off = 24; off < f.len;) {
		ssize_t n = write(sv[0], f.payload + off, f.len - off);
		if (n > 0)
			off += (size_t)n;
		ck_assert_int_eq(frame_reader_read(&r, sv[1]), off == f.len ? 1 : 0);
	}
	assert_frame_is(&r, &f);
	frame_reader_free(&r);
	close(sv[0]);
	close(sv[1]);
	free(f.payload);
}
END_TEST

/* VERIFY's target: 0 RAM, D + 1 disk D; none past PROTO_MAX_DISKS. */
START_TEST(test_verify_target_round_trip_and_bounds)
{
	uint8_t buf[PROTO_VERIFY_HDR_SIZE + 2 * PAGE_HASH_SIZE] = { 0 };
	struct verify_req rq;

	proto_encode_verify_hdr(buf, 42, 7, 2, 3);
	ck_assert_int_eq(proto_parse_verify(buf, sizeof(buf), &rq), 0);
	ck_assert_uint_eq(rq.seed, 42);
	ck_assert_uint_eq(rq.first, 7);
	ck_assert_uint_eq(rq.count, 2);
	ck_assert_uint_eq(rq.target, 3);
	proto_encode_verify_hdr(buf, 42, 7, 2, 0);
	ck_assert_int_eq(proto_parse_verify(buf, sizeof(buf), &rq), 0);
	ck_assert_uint_eq(rq.target, 0);
	proto_encode_verify_hdr(buf, 42, 7, 2, PROTO_MAX_DISKS);
	ck_assert_int_eq(proto_parse_verify(buf, sizeof(buf), &rq), 0);
	proto_encode_verify_hdr(buf, 42, 7, 2, PROTO_MAX_DISKS + 1);
	ck_assert_int_eq(proto_parse_verify(buf, sizeof(buf), &rq), -EPROTO);
	/* a count that does not match the hashes that follow */
	proto_encode_verify_hdr(buf, 42, 7, 3, 1);
	ck_assert_int_eq(proto_parse_verify(buf, sizeof(buf), &rq), -EPROTO);
}
END_TEST

static void add(Suite *s, const char *name, const TTest *t, double timeout)
{
	TCase *tc = tcase_create(name);

	tcase_set_timeout(tc, timeout);
	tcase_add_test(tc, t);
	suite_add_tcase(s, tc);
}

#define ADD(s, t, to) add((s), #t, t, (to))

static Suite *proto_suite(void)
{
	Suite *s = suite_create("proto");

	ADD(s, test_crc32c_known_vector, 5);
	ADD(s, test_reader_grows_with_arrivals, 30);
	ADD(s, test_queue_drop_unsent_keeps_the_started_frame, 30);
	ADD(s, test_hdr_round_trip_keeps_type_epoch_len_and_crc, 5);
	ADD(s, test_hdr_round_trip_empty_payload, 5);
	ADD(s, test_hdr_any_corrupt_byte_is_ebadmsg, 5);
	ADD(s, test_hdr_bad_magic_is_ebadmsg_even_with_valid_crc, 5);
	ADD(s, test_hdr_wrong_version_is_eprotonosupport, 5);
	ADD(s, test_hdr_unknown_type_is_ebadmsg, 5);
	ADD(s, test_hdr_oversized_len_is_emsgsize, 5);
	ADD(s, test_payload_corruption_detected, 5);
	ADD(s, test_parse_pages_valid, 5);
	ADD(s, test_parse_pages_count_zero_is_ebadmsg, 5);
	ADD(s, test_parse_pages_count_too_large_is_ebadmsg, 5);
	ADD(s, test_parse_pages_nonzero_pad_is_ebadmsg, 5);
	ADD(s, test_parse_pages_length_mismatch_is_ebadmsg, 5);
	ADD(s, test_epoch_end_round_trip, 5);
	ADD(s, test_epoch_end_wrong_length_is_ebadmsg, 5);
	ADD(s, test_epoch_crc_is_order_sensitive, 5);
	ADD(s, test_operator_frame_numbers_and_names, 5);
	ADD(s, test_handover_done_round_trip, 5);
	ADD(s, test_handover_done_bad_payload_is_ebadmsg, 5);
	ADD(s, test_ram_hashes_parse, 5);
	ADD(s, test_disk_hashes_parse, 5);
	ADD(s, test_verify_target_round_trip_and_bounds, 5);
	ADD(s, test_page_hash_seed_and_value, 5);
	ADD(s, test_disk_round_trip_every_op, 5);
	ADD(s, test_disk_write_size_limit, 5);
	ADD(s, test_disk_malformed_is_eproto_and_untouched, 5);
	ADD(s, test_disk_every_truncation_is_refused, 5);
	ADD(s, test_reader_byte_by_byte_returns_frames_in_order_then_epipe, 60);
	ADD(s, test_reader_odd_chunks_returns_frames_in_order_then_epipe, 30);
	ADD(s, test_reader_truncated_payload_is_epipe_never_a_frame, 5);
	ADD(s, test_reader_truncated_header_is_epipe, 5);
	ADD(s, test_reader_bad_header_is_reported, 5);
	ADD(s, test_queue_flush_through_slow_reader_delivers_identical_frames, 30);
	ADD(s, test_queue_clear_frees_owned_and_resets_counts, 5);
	ADD(s, test_queue_flush_to_closed_peer_is_epipe, 5);
	ADD(s, test_queue_flush_with_empty_iovecs_completes, 2);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(proto_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
