/* The disk items of online verify (proto.h, FRAME_VERIFY): 4 KiB blocks
 * of a disk image, the last one padded with zeroes past the disk's end,
 * read the same way on both ends. */
#ifndef REMUS_VERIFY_BLOCKS_H
#define REMUS_VERIFY_BLOCKS_H

#include <stdint.h>

/* Blocks [first, first + n) of the image fd of a disk of size bytes into
 * buf (n * PROTO_VERIFY_BLOCK bytes), with one pread. 0, or -errno (-EIO
 * for a short read, -EINVAL for a first block past the disk's end). */
int verify_read_blocks(int fd, uint64_t size, uint64_t first, uint32_t n, uint8_t *buf);

#endif
