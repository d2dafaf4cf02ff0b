/* The replication wire protocol (docs/PROTOCOL.md): framed messages over one
 * TCP connection. Every frame has a 32-byte big-endian header with its own
 * CRC32C, so a corrupted length is caught before it is trusted, and a CRC32C
 * over the payload. */
#ifndef REMUS_PROTO_H
#define REMUS_PROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <sys/uio.h>

#define PROTO_MAGIC        0x524d5553u /* "RMUS" */
#define PROTO_VERSION      1
#define PROTO_HDR_SIZE     32
#define PROTO_MAX_PAYLOAD  (32u << 20)
#define PROTO_PAGE_SIZE    4096u
/* Pages per PAGES frame: 256 pages = 1 MiB of data per frame. */
#define PROTO_PAGES_PER_FRAME 256u

enum frame_type {
	FRAME_HELLO = 1,        /* primary -> backup: JSON VM identity */
	FRAME_HELLO_REPLY,      /* backup -> primary: JSON {ok, error} */
	FRAME_PAGES,            /* pages of an epoch (epoch 0: initial sync) */
	FRAME_DEVSTATE,         /* QEMU device state of an epoch */
	FRAME_EPOCH_END,        /* epoch complete: counts and epoch checksum */
	FRAME_ACK,              /* backup committed this epoch */
	FRAME_NACK,             /* backup discarded this epoch: resend it */
	FRAME_HEARTBEAT,        /* both ways, when idle */
	FRAME_GOODBYE,          /* primary detaches on purpose: do not fail over */
	/* Operator controls (docs/PROTOCOL.md); sent only to an agent whose
	 * HELLO_REPLY lists the "operator" feature. */
	FRAME_HANDOVER,         /* primary stopped at this committed epoch: take over */
	FRAME_HANDOVER_DONE,    /* backup runs the VM now (struct handover_done) */
	FRAME_HANDOVER_FAILED,  /* backup did not start the VM: reason text */
	FRAME_PAUSE,            /* protection paused: do not fail over */
	FRAME_PAUSE_ACK,        /* backup will not fail over until a commit */
	/* Sent only to an agent whose HELLO_REPLY lists the "disk" feature. */
	FRAME_DISK,             /* one guest disk operation of an epoch (struct disk_op) */
	/* Sent only after a HELLO_REPLY with "ram_hashes" (delta resync). */
	FRAME_RAM_HASHES,       /* backup -> primary: hashes of its base's pages */
	/* Agent to agent, in a pair whose roles move (backup-agent/cold_start.h):
	 * the first frame of a connection instead of HELLO. */
	FRAME_PEER_QUERY,       /* JSON: what the asking agent holds */
	FRAME_PEER_STATE,       /* JSON: what the answering agent holds */
	/* Online verify (remusctl verify), only to an agent whose HELLO_REPLY
	 * lists the "verify" feature. */
	FRAME_VERIFY,           /* primary -> backup: page hashes as of this epoch */
	FRAME_VERIFY_RESULT,    /* backup -> primary: which of them differ */
	/* Only to an agent whose HELLO_REPLY lists "pages-lz4" (page_codec.h). */
	FRAME_PAGES_Z,          /* pages of an epoch, as deltas and LZ4 */
	/* Sent only after a HELLO_REPLY with "disk_hashes" (delta resync). */
	FRAME_DISK_HASHES,      /* backup -> primary: hashes of its base's disk chunks */
	FRAME_TYPE_MAX
};

struct frame_hdr {
	uint8_t version;
	uint8_t type;
	uint16_t flags;
	uint64_t epoch;
	uint32_t len;         /* payload bytes */
	uint32_t payload_crc; /* crc32c of the payload */
};

/* FRAME_PAGES payload: be32 count, be32 zero, be64 page index[count], then
 * count * 4096 bytes of page data in the same order. */
struct pages_hdr {
	uint32_t count;
	const uint8_t *index_be;  /* count big-endian u64s */
	const uint8_t *data;      /* count pages */
};

/* FRAME_EPOCH_END payload. epoch_crc is crc32c over the big-endian
 * payload_crc of every PAGES, DEVSTATE and DISK frame of the epoch, in
 * order (frames counts them all):
 * a lost, repeated or reordered frame changes it. */
struct epoch_end {
	uint64_t pages;
	uint64_t devstate_bytes;
	uint32_t frames;
	uint32_t epoch_crc;
};
#define PROTO_EPOCH_END_SIZE 24

const char *frame_type_name(unsigned type);

/* Encode a header for payload iov (crc computed here). */
void proto_encode_hdr(uint8_t out[PROTO_HDR_SIZE], unsigned type, uint64_t epoch,
		      const struct iovec *iov, int iovcnt);
/* 0, -EBADMSG (magic, header CRC, unknown type), -EPROTONOSUPPORT
 * (version), -EMSGSIZE (payload larger than PROTO_MAX_PAYLOAD). */
int proto_decode_hdr(const uint8_t in[PROTO_HDR_SIZE], struct frame_hdr *h);
/* 0 or -EBADMSG when the payload does not match its CRC. */
int proto_check_payload(const struct frame_hdr *h, const uint8_t *payload);

/* 0 or -EBADMSG when the payload is not a well-formed PAGES body. */
int proto_parse_pages(const uint8_t *payload, uint32_t len, struct pages_hdr *out);
void proto_encode_epoch_end(uint8_t out[PROTO_EPOCH_END_SIZE], const struct epoch_end *e);
int proto_parse_epoch_end(const uint8_t *payload, uint32_t len, struct epoch_end *out);
uint32_t proto_epoch_crc_add(uint32_t epoch_crc, uint32_t frame_payload_crc);

/* FRAME_HANDOVER_DONE payload: what the backup started. */
struct handover_done {
	uint32_t qemu_pid;
	uint32_t restore_ms;  /* HANDOVER received to VM running */
};
#define PROTO_HANDOVER_DONE_SIZE 8
/* The feature an agent lists in its HELLO_REPLY ("features": [...]) when it
 * understands HANDOVER and PAUSE. */
#define PROTO_FEATURE_OPERATOR "operator"

/* The feature an agent lists when it keeps disk replicas (HELLO "disks",
 * FRAME_DISK). */
#define PROTO_FEATURE_DISK "disk"

/* Delta resync (docs/PROTOCOL.md): the HELLO's "ram_delta_seed" (16 hex
 * digits, a new random seed per connection) asks the agent for the hashes
 * of the pages its initial copy starts from (its replica's RAM, when it
 * has one of this size); its HELLO_REPLY then says "ram_hashes": the
 * number of pages, and FRAME_RAM_HASHES frames follow at once, in page
 * order, before anything else. The primary sends in epoch 0 only the
 * pages whose hash differs. FRAME_RAM_HASHES payload: be64 first page,
 * be32 count, be32 zero, then count hashes of PAGE_HASH_SIZE bytes. */
#define PROTO_RAM_HASHES_HDR_SIZE   16
#define PROTO_RAM_HASHES_PER_FRAME  65536u
/* 0, or -EPROTO when the payload is not a header and count (1 to
 * PROTO_RAM_HASHES_PER_FRAME) hashes exactly, or first + count overflows.
 * Whether the range is the one expected is the receiver's check. */
int proto_parse_ram_hashes(const uint8_t *payload, uint32_t len, uint64_t *first,
			   uint32_t *count, const uint8_t **hashes);
void proto_encode_ram_hashes_hdr(uint8_t out[PROTO_RAM_HASHES_HDR_SIZE], uint64_t first,
				 uint32_t count);

/* Delta resync of disks: a HELLO with "ram_delta_seed" and
 * "disk_hash_chunk": C (a power of two from PROTO_DISK_HASH_CHUNK_MIN to
 * _MAX, the primary's choice) asks for the hashes of the chunks of each
 * disk's base (the agent's committed disk-N.img, when it is the disk's
 * size); the HELLO_REPLY's "disk_hashes" lists, per disk of the HELLO,
 * its number of chunks or 0 (no base: a full copy), and FRAME_DISK_HASHES
 * frames follow, in chunk order per disk, after the RAM_HASHES. A chunk
 * is C bytes (the last one of a disk may be shorter), hashed by
 * block_hash() with the seed. Payload: be32 disk, be32 count, be64 first
 * chunk, then count hashes. */
#define PROTO_DISK_HASH_CHUNK_MIN      4096u
#define PROTO_DISK_HASH_CHUNK_MAX      (1u << 20)
#define PROTO_DISK_HASHES_HDR_SIZE     16
#define PROTO_DISK_HASHES_PER_FRAME    65536u
/* 0, or -EPROTO when the payload is not a header and count (1 to
 * PROTO_DISK_HASHES_PER_FRAME) hashes exactly, or first + count overflows.
 * Whether the disk and range are the ones expected is the receiver's. */
int proto_parse_disk_hashes(const uint8_t *payload, uint32_t len, uint32_t *disk,
			    uint64_t *first, uint32_t *count, const uint8_t **hashes);
void proto_encode_disk_hashes_hdr(uint8_t out[PROTO_DISK_HASHES_HDR_SIZE], uint32_t disk,
				  uint64_t first, uint32_t count);
/* Is chunk a chunk size both ends accept? */
static inline bool proto_disk_hash_chunk_ok(int64_t chunk)
{
	return chunk >= PROTO_DISK_HASH_CHUNK_MIN && chunk <= PROTO_DISK_HASH_CHUNK_MAX &&
	       !(chunk & (chunk - 1));
}
/* The primary's choice: the smallest chunk that cuts the largest disk
 * into at most 2^20 chunks (16 MiB of hashes, a byte of state each). */
static inline uint32_t proto_disk_hash_chunk_for(uint64_t largest_disk)
{
	uint32_t c = PROTO_DISK_HASH_CHUNK_MIN;

	while (c < PROTO_DISK_HASH_CHUNK_MAX && largest_disk / c > (1u << 20))
		c <<= 1;
	return c;
}
/* Chunks of a disk of size bytes. */
static inline uint64_t proto_disk_chunks(uint64_t size, uint32_t chunk)
{
	return (size + chunk - 1) / chunk;
}

/* Online verify (docs/PROTOCOL.md). FRAME_VERIFY, sent right after the
 * EPOCH_END of its epoch: be64 seed, be64 first item, be32 count (1 to
 * PROTO_VERIFY_MAX_PAGES), be32 target, then count hashes (page_hash.h,
 * with that seed) of the items as that epoch leaves them. Target 0: the
 * items are RAM pages. Target D + 1 (only to an agent that lists
 * "verify-disk"): they are the 4 KiB blocks of disk D (the HELLO's
 * index), the last one padded with zeroes past the disk's end.
 * FRAME_VERIFY_RESULT, same epoch: be64 first, be32 count, be32 nbad
 * (PROTO_VERIFY_SKIPPED: the replica was not at that epoch, nothing
 * compared), then min(nbad, PROTO_VERIFY_MAX_BAD) be64 indexes of items
 * that differ. One slice is out at a time, so the result need not name
 * its target. */
#define PROTO_FEATURE_VERIFY          "verify"
#define PROTO_FEATURE_VERIFY_DISK     "verify-disk"
#define PROTO_VERIFY_BLOCK            4096u
/* both ends hash a disk block where a page would be, and keep it in a
 * page's room */
_Static_assert(PROTO_VERIFY_BLOCK == PROTO_PAGE_SIZE, "a verify block is a page");
/* Park (a cluster manager's demote): FRAME_HANDOVER with this payload
 * asks an agent with takeover = manual to keep the committed final epoch
 * as the VM's last state instead of starting the VM; it answers
 * HANDOVER_DONE (QEMU pid 0) or HANDOVER_FAILED. Only sent to an agent
 * that lists the feature, which one lists only with takeover = manual:
 * an older agent would start the VM. */
#define PROTO_FEATURE_PARK            "park"
/* The agent decodes FRAME_PAGES_Z (common/page_codec.h). */
#define PROTO_FEATURE_PAGES_LZ4       "pages-lz4"
#define PROTO_HANDOVER_PARK           "park"
/* A backup's HELLO_REPLY "takeover_after_ms" promises that it fences and
 * restores within that long after it last heard from the primary. The
 * primary holds output on a silent link for that, two of its heartbeats
 * and this margin. The backup does not take over past that and this
 * margin less two of its own heartbeats, how long before its last frame
 * from the primary its own last frame may have gone out
 * (backup-agent/takeover_deadline.h). */
#define PROTO_TAKEOVER_MARGIN_MS      1000u
#define PROTO_VERIFY_HDR_SIZE         24
#define PROTO_VERIFY_MAX_PAGES        4096u
#define PROTO_VERIFY_RESULT_HDR_SIZE  16
#define PROTO_VERIFY_MAX_BAD          1024u
#define PROTO_VERIFY_SKIPPED          0xffffffffu
struct verify_req {
	uint64_t seed, first;
	uint32_t count;
	uint32_t target;          /* 0 RAM, D + 1 disk D (at most PROTO_MAX_DISKS) */
	const uint8_t *hashes;
};
struct verify_result {
	uint64_t first;
	uint32_t count, nbad;     /* nbad may exceed the indexes listed */
	const uint8_t *bad_be;    /* min(nbad, PROTO_VERIFY_MAX_BAD) be64 indexes */
};
/* 0, or -EPROTO for a payload not of the form above (counts out of range,
 * lengths that do not match, first + count overflowing). */
int proto_parse_verify(const uint8_t *payload, uint32_t len, struct verify_req *out);
int proto_parse_verify_result(const uint8_t *payload, uint32_t len, struct verify_result *out);
void proto_encode_verify_hdr(uint8_t out[PROTO_VERIFY_HDR_SIZE], uint64_t seed, uint64_t first,
			     uint32_t count, uint32_t target);
void proto_encode_verify_result_hdr(uint8_t out[PROTO_VERIFY_RESULT_HDR_SIZE], uint64_t first,
				    uint32_t count, uint32_t nbad);
void proto_put_be64(uint8_t *p, uint64_t v);
uint64_t proto_get_be64(const uint8_t *p);

void proto_encode_handover_done(uint8_t out[PROTO_HANDOVER_DONE_SIZE],
				const struct handover_done *d);
int proto_parse_handover_done(const uint8_t *payload, uint32_t len, struct handover_done *out);

/* FRAME_DISK payload (docs/PROTOCOL.md): be32 disk (index in the HELLO's
 * "disks"), be32 op, be64 offset, be64 length, then for a WRITE only,
 * length bytes of data. The frame's epoch is the epoch of the write. */
enum disk_op_code {
	DISK_OP_WRITE = 1,
	DISK_OP_WRITE_ZEROES = 2,
	DISK_OP_TRIM = 3,         /* discard: reads back as zeroes */
	DISK_OP_FLUSH = 4,        /* offset and length 0 */
};
#define PROTO_DISK_HDR_SIZE   24
/* Data per WRITE frame; the sender splits larger writes. */
#define PROTO_DISK_MAX_WRITE  (1u << 20)
/* Disks of one VM that are replicated (HELLO "disks"). */
#define PROTO_MAX_DISKS       16
/* Test hook only: a DISK frame with this epoch belongs to no epoch; an
 * agent run with --test-disk-apply-on-arrival applies it at once, any
 * other drops it (see the replicator's --test-disk-unbuffered). */
#define PROTO_EPOCH_TEST_UNBUFFERED UINT64_MAX

struct disk_op {
	uint32_t disk, op;
	uint64_t offset, length;
	const uint8_t *data;      /* WRITE: length bytes inside the payload; else NULL */
};

/* 0, or -EPROTO (out untouched) when the payload is not a well-formed DISK
 * body: short header, unknown op, offset + length overflowing, a WRITE whose
 * data is not exactly length bytes or more than PROTO_DISK_MAX_WRITE, any
 * other op with trailing bytes, a FLUSH with a non-zero offset or length.
 * Whether the disk and range exist is the receiver's check. */
int proto_parse_disk(const uint8_t *payload, uint32_t len, struct disk_op *out);
/* The 24-byte header of op (op->data is not read: the WRITE data follows
 * as the frame's next iovec). */
void proto_encode_disk_hdr(uint8_t out[PROTO_DISK_HDR_SIZE], const struct disk_op *op);

/* Where a link's bytes come from and go to: the socket itself, or a TLS
 * session over it (common/peer_link.c). Both never block. */
struct link_io {
	/* > 0 bytes read; -EPIPE the peer closed; -EAGAIN nothing yet; -errno */
	ssize_t (*recv)(void *ctx, void *buf, size_t len);
	/* > 0 bytes taken (from the front of iov); -EAGAIN; -errno */
	ssize_t (*send)(void *ctx, const struct iovec *iov, int iovcnt);
	void *ctx;
};

/* The plain socket fd as a link_io (ctx points at the fd). */
void link_io_plain(struct link_io *io, int *fd);

/* Reassembles frames from a non-blocking stream. */
struct frame_reader {
	uint8_t hdr_buf[PROTO_HDR_SIZE];
	size_t have;           /* bytes of header+payload read so far */
	struct frame_hdr hdr;
	uint8_t *payload;
	size_t cap;
	/* A header announcing more is refused (-EMSGSIZE) before any of its
	 * payload is read; 0: PROTO_MAX_PAYLOAD alone. */
	uint32_t max_len;
};

void frame_reader_init(struct frame_reader *r);
void frame_reader_free(struct frame_reader *r);
/* Read what fd has. 1: a whole frame is in r->hdr/r->payload (valid until
 * the next call; the caller checks it with proto_check_payload, so that a
 * corrupt payload can be told from a lost stream); 0: need more (EAGAIN);
 * -EPIPE: peer closed; other -errno from read(); a proto_decode_hdr error
 * for a bad header, after which the stream cannot be trusted any more. */
int frame_reader_read(struct frame_reader *r, int fd);
/* The same, reading through io. */
int frame_reader_read_io(struct frame_reader *r, const struct link_io *io);

#endif
