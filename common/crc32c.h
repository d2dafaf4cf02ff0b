/* CRC32C (Castagnoli), the checksum of every frame and every epoch. */
#ifndef REMUS_CRC32C_H
#define REMUS_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* crc32c(0, buf, len) starts a checksum; pass the previous value to extend it. */
uint32_t crc32c(uint32_t crc, const void *buf, size_t len);

#endif
