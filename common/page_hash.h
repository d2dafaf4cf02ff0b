/* The hash of one 4 KiB page of guest RAM, as both ends of a delta resync
 * compute it (proto.h, FRAME_RAM_HASHES): XXH3-128 with the connection's
 * seed, in XXH3's canonical (big-endian) byte order, so that two hosts
 * compare bytes. The seed is new for every connection and travels inside
 * the TLS link only: the guest, which chooses page contents, cannot aim
 * for a collision it does not know the function of. */
#ifndef REMUS_PAGE_HASH_H
#define REMUS_PAGE_HASH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PAGE_HASH_SIZE 16

void page_hash(const void *page, uint64_t seed, uint8_t out[PAGE_HASH_SIZE]);
/* The same hash of len bytes: a disk's chunk (proto.h, FRAME_DISK_HASHES). */
void block_hash(const void *data, size_t len, uint64_t seed, uint8_t out[PAGE_HASH_SIZE]);

/* "ram_delta_seed" as the HELLO carries it: 16 lower-case hex digits
 * (a JSON number cannot hold 64 bits). */
void page_hash_seed_format(uint64_t seed, char out[17]);
bool page_hash_seed_parse(const char *text, uint64_t *seed);

#endif
