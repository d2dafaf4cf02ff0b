/* libFuzzer harness for compressed pages (common/page_codec.c), what a
 * backup decodes from the wire. The first byte picks the mode:
 *   0: the rest is a PAGES_Z payload. Parsed and decoded against bases
 *      made from each page's number; anything accepted decoded exactly to
 *      its count of pages, with every page's check matching.
 *   1: the rest is page contents (up to 4 pages, then their bases): they
 *      are encoded and must decode to the same bytes.
 *
 *   make fuzz
 *   mkdir -p build/fuzz/corpus-page_codec
 *   build/fuzz/fuzz_page_codec -max_total_time=60 build/fuzz/corpus-page_codec fuzz/corpus/page_codec
 */
#include "page_codec.h"
#include "proto.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint8_t out[PROTO_PAGES_PER_FRAME * PROTO_PAGE_SIZE];
static uint8_t base_page[PROTO_PAGE_SIZE];

/* Every page's base: its number's low byte, repeated; none above 1 << 20. */
static const uint8_t *base_of(void *ctx, uint64_t idx)
{
	(void)ctx;
	if (idx >= 1u << 20)
		return NULL;
	memset(base_page, (int)(idx & 0xff), sizeof(base_page));
	return base_page;
}

static void decode_wire(const uint8_t *data, size_t size)
{
	struct pages_z_view v;
	char err[160];

	if (page_parse_z(data, size, &v))
		return;
	if (v.count == 0 || v.count > PROTO_PAGES_PER_FRAME)
		abort();
	page_decode(&v, out, base_of, NULL, err, sizeof(err));
}

/* Mode 1's pages and their bases; page i has number i * 5. */
static uint8_t pages[4][PROTO_PAGE_SIZE], bases[4][PROTO_PAGE_SIZE];

static const uint8_t *round_trip_base(void *ctx, uint64_t idx)
{
	(void)ctx;
	return idx % 5 == 0 && idx / 5 < 4 ? bases[idx / 5] : NULL;
}

static void round_trip(const uint8_t *data, size_t size)
{
	struct page_encoder e = { 0 };
	struct page_ref ref[4];
	struct pages_z_view v;
	size_t n = size / PROTO_PAGE_SIZE ? size / PROTO_PAGE_SIZE : 1, len;
	uint8_t *buf;
	char err[160];
	int rc;

	if (n > 4)
		n = 4;
	/* short inputs repeat: pages that compress, like guest memory */
	for (size_t i = 0; i < n; i++)
		for (size_t j = 0; j < PROTO_PAGE_SIZE; j++) {
			pages[i][j] = size ? data[(i * PROTO_PAGE_SIZE + j) % size] : 0;
			bases[i][j] = size ? data[(i * PROTO_PAGE_SIZE + j * 7 + 1) % size] : 0;
		}
	for (size_t i = 0; i < n; i++)
		ref[i] = (struct page_ref){ .index = i * 5, .data = pages[i],
					    .base = size && (data[i % size] & 1) ? bases[i] : NULL };
	rc = page_encode(&e, ref, n, 8 + n * (8 + PROTO_PAGE_SIZE), &buf, &len);
	page_encoder_free(&e);
	if (rc == -E2BIG)
		return;
	if (rc || page_parse_z(buf, len, &v) || v.count != n)
		abort();
	for (size_t i = 0; i < n; i++)
		if ((v.kind[i] == PAGE_KIND_XOR) != (ref[i].base != NULL))
			abort();
	if (page_decode(&v, out, round_trip_base, NULL, err, sizeof(err)))
		abort();
	for (size_t i = 0; i < n; i++)
		if (memcmp(out + i * PROTO_PAGE_SIZE, pages[i], PROTO_PAGE_SIZE))
			abort();
	free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!size || size > PROTO_MAX_PAYLOAD)
		return 0;
	if (data[0] == 1)
		round_trip(data + 1, size - 1);
	else if (data[0] == 0)
		decode_wire(data + 1, size - 1);
	return 0;
}
