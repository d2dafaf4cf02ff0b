/* Compressed pages (FRAME_PAGES_Z, docs/PROTOCOL.md "Compressed pages"):
 * each page goes whole or as its XOR against the copy the backup already
 * holds, and the frame's page bodies as one LZ4 block. A page that changed
 * in a few bytes XORs to almost only zeros, which LZ4 shrinks a
 * hundredfold; Remus sent such deltas for the same reason.
 *
 * Payload (big-endian):
 *   be32 count (1..PROTO_PAGES_PER_FRAME), be32 zlen
 *   be64 index[count]
 *   u8   kind[count] (PAGE_KIND_*), zero-padded to a multiple of 8
 *   be64 check[count]: XXH3-64 of each page as decoded, seeded with its index
 *   zlen bytes: one LZ4 block that decompresses to exactly count * 4096
 *
 * The checks make a delta against the wrong base (the backup's copy is not
 * the one the primary meant) a refused frame, never a wrong page. */
#ifndef REMUS_PAGE_CODEC_H
#define REMUS_PAGE_CODEC_H

#include <stddef.h>
#include <stdint.h>

enum page_kind {
	PAGE_KIND_RAW = 0,  /* the page itself */
	PAGE_KIND_XOR = 1,  /* the page XOR the backup's copy of it */
};

struct page_ref {
	uint64_t index;
	const uint8_t *data;   /* the page as it is now */
	const uint8_t *base;   /* the backup's copy of it; NULL: unknown (RAW) */
};

/* Reusable buffers of one encoder (one frame at a time). */
struct page_encoder {
	uint8_t *body;   /* count pages, before LZ4 */
	uint8_t *frame;  /* the frame being built, at most LZ4's bound */
};

void page_encoder_free(struct page_encoder *e);

/* A PAGES_Z payload for pages p[0..n), n in 1..PROTO_PAGES_PER_FRAME, in
 * *out (malloc'd) of *out_len bytes. -E2BIG when it would not be smaller
 * than max_len (send the pages plainly), -EINVAL, -ENOMEM. */
int page_encode(struct page_encoder *e, const struct page_ref *p, size_t n, size_t max_len,
		uint8_t **out, size_t *out_len);

/* The structure of a PAGES_Z payload, checked without decompressing. */
struct pages_z_view {
	uint32_t count, zlen;
	const uint8_t *index_be, *kind, *check_be, *z;
};
/* 0 or -EBADMSG: lengths, count, kinds and padding. */
int page_parse_z(const uint8_t *payload, size_t len, struct pages_z_view *v);

uint64_t page_z_index(const struct pages_z_view *v, uint32_t i);

/* The backup's current copy of a page, for XOR pages. */
typedef const uint8_t *(*page_base_fn)(void *ctx, uint64_t index);

/* Decode a parsed frame into out (count * 4096 bytes, page i at i * 4096).
 * 0, or -EBADMSG with the reason in err: the LZ4 block is malformed or of
 * the wrong size, a base is missing, or a page's check does not match. */
int page_decode(const struct pages_z_view *v, uint8_t *out, page_base_fn base, void *ctx,
		char *err, size_t errlen);

#endif
