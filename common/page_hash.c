/* Page hashes of the delta resync (page_hash.h). */
#include "page_hash.h"
#include "proto.h"

#include <stdio.h>
#include <string.h>
#include <xxhash.h>

void block_hash(const void *data, size_t len, uint64_t seed, uint8_t out[PAGE_HASH_SIZE])
{
	XXH128_canonical_t c;

	XXH128_canonicalFromHash(&c, XXH3_128bits_withSeed(data, len, seed));
	memcpy(out, c.digest, PAGE_HASH_SIZE);
}

void page_hash(const void *page, uint64_t seed, uint8_t out[PAGE_HASH_SIZE])
{
	block_hash(page, PROTO_PAGE_SIZE, seed, out);
}

void page_hash_seed_format(uint64_t seed, char out[17])
{
	snprintf(out, 17, "%016llx", (unsigned long long)seed);
}

bool page_hash_seed_parse(const char *text, uint64_t *seed)
{
	uint64_t v = 0;

	if (!text || strlen(text) != 16)
		return false;
	for (int i = 0; i < 16; i++) {
		char c = text[i];
		unsigned d = c >= '0' && c <= '9' ? (unsigned)(c - '0') :
			     c >= 'a' && c <= 'f' ? (unsigned)(c - 'a' + 10) : 16;

		if (d == 16)
			return false;
		v = v << 4 | d;
	}
	*seed = v;
	return true;
}
