/* Compressed pages: XOR against the backup's copy, then LZ4 (page_codec.h). */
#include "page_codec.h"
#include "proto.h"

#include <endian.h>
#include <errno.h>
#include <stdbool.h>
#include <lz4.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#define PAGE_Z_HEAD 8u

static size_t kinds_len(size_t count)
{
	return (count + 7) & ~(size_t)7;
}

/* Bytes before the LZ4 block. */
static size_t meta_len(size_t count)
{
	return PAGE_Z_HEAD + 8 * count + kinds_len(count) + 8 * count;
}

static void put_be32(uint8_t *p, uint32_t v) { v = htobe32(v); memcpy(p, &v, 4); }
static uint32_t get_be32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return be32toh(v); }

/* dst = a XOR b, one page. */
static void xor_page(uint8_t *dst, const uint8_t *a, const uint8_t *b)
{
	uint64_t x, y;

	for (size_t i = 0; i < PROTO_PAGE_SIZE; i += 8) {
		memcpy(&x, a + i, 8);
		memcpy(&y, b + i, 8);
		x ^= y;
		memcpy(dst + i, &x, 8);
	}
}

/* Binds the content to the page number too: a wrong index is a wrong page. */
static uint64_t page_check(const uint8_t *page, uint64_t index)
{
	return XXH3_64bits_withSeed(page, PROTO_PAGE_SIZE, index);
}

void page_encoder_free(struct page_encoder *e)
{
	free(e->body);
	free(e->frame);
	e->body = e->frame = NULL;
}

/* The encoder's buffers, made at first use: a frame is built in them and
 * only its final size is allocated for the link's queue. */
static int encoder_ready(struct page_encoder *e)
{
	size_t body = (size_t)PROTO_PAGES_PER_FRAME * PROTO_PAGE_SIZE;

	if (!e->body && !(e->body = malloc(body)))
		return -ENOMEM;
	if (!e->frame && !(e->frame = malloc(meta_len(PROTO_PAGES_PER_FRAME) +
					     (size_t)LZ4_compressBound((int)body))))
		return -ENOMEM;
	return 0;
}

int page_encode(struct page_encoder *e, const struct page_ref *p, size_t n, size_t max_len,
		uint8_t **out, size_t *out_len)
{
	size_t meta = meta_len(n), body_len = n * PROTO_PAGE_SIZE;
	uint8_t *buf, *kind, *check;
	int zlen, rc;

	if (n == 0 || n > PROTO_PAGES_PER_FRAME)
		return -EINVAL;
	if (max_len <= meta + 16)
		return -E2BIG;
	if ((rc = encoder_ready(e)))
		return rc;
	buf = e->frame;
	memset(buf, 0, meta);
	put_be32(buf, (uint32_t)n);
	kind = buf + PAGE_Z_HEAD + 8 * n;
	check = kind + kinds_len(n);
	for (size_t i = 0; i < n; i++) {
		uint8_t *dst = e->body + i * PROTO_PAGE_SIZE;

		proto_put_be64(buf + PAGE_Z_HEAD + 8 * i, p[i].index);
		proto_put_be64(check + 8 * i, page_check(p[i].data, p[i].index));
		if (p[i].base) {
			kind[i] = PAGE_KIND_XOR;
			xor_page(dst, p[i].data, p[i].base);
		} else {
			kind[i] = PAGE_KIND_RAW;
			memcpy(dst, p[i].data, PROTO_PAGE_SIZE);
		}
	}
	/* Never max_len or more: what would not pay is not finished. */
	zlen = LZ4_compress_default((const char *)e->body, (char *)buf + meta, (int)body_len,
				    (int)(max_len - meta - 1));
	if (zlen <= 0)
		return -E2BIG;
	put_be32(buf + 4, (uint32_t)zlen);
	*out_len = meta + (size_t)zlen;
	*out = malloc(*out_len);
	if (!*out)
		return -ENOMEM;
	memcpy(*out, buf, *out_len);
	return 0;
}

int page_parse_z(const uint8_t *payload, size_t len, struct pages_z_view *v)
{
	size_t meta;

	if (len < PAGE_Z_HEAD)
		return -EBADMSG;
	v->count = get_be32(payload);
	v->zlen = get_be32(payload + 4);
	if (v->count == 0 || v->count > PROTO_PAGES_PER_FRAME || v->zlen == 0)
		return -EBADMSG;
	meta = meta_len(v->count);
	if (len != meta + v->zlen)
		return -EBADMSG;
	v->index_be = payload + PAGE_Z_HEAD;
	v->kind = v->index_be + 8 * (size_t)v->count;
	v->check_be = v->kind + kinds_len(v->count);
	v->z = payload + meta;
	for (size_t i = 0; i < kinds_len(v->count); i++) {
		bool known = i < v->count ? v->kind[i] <= PAGE_KIND_XOR : v->kind[i] == 0;

		if (!known)
			return -EBADMSG;
	}
	return 0;
}

uint64_t page_z_index(const struct pages_z_view *v, uint32_t i)
{
	return proto_get_be64(v->index_be + 8 * (size_t)i);
}

int page_decode(const struct pages_z_view *v, uint8_t *out, page_base_fn base, void *ctx,
		char *err, size_t errlen)
{
	int body_len = (int)(v->count * PROTO_PAGE_SIZE);
	int got = LZ4_decompress_safe((const char *)v->z, (char *)out, (int)v->zlen, body_len);

	if (got != body_len) {
		snprintf(err, errlen, "LZ4 block gives %d bytes, not %d", got, body_len);
		return -EBADMSG;
	}
	for (uint32_t i = 0; i < v->count; i++) {
		uint8_t *page = out + (size_t)i * PROTO_PAGE_SIZE;
		uint64_t idx = page_z_index(v, i);

		if (v->kind[i] == PAGE_KIND_XOR) {
			const uint8_t *b = base ? base(ctx, idx) : NULL;

			if (!b) {
				snprintf(err, errlen, "page %llu: a delta without a base",
					 (unsigned long long)idx);
				return -EBADMSG;
			}
			xor_page(page, page, b);
		}
		if (page_check(page, idx) != proto_get_be64(v->check_be + 8 * (size_t)i)) {
			snprintf(err, errlen, "page %llu decodes to other contents than the "
				 "primary's (%s)", (unsigned long long)idx,
				 v->kind[i] == PAGE_KIND_XOR ? "a delta against another base" :
				 "corrupt");
			return -EBADMSG;
		}
	}
	return 0;
}
