/* Reading verify's disk blocks (verify_blocks.h). */
#include "verify_blocks.h"

#include "proto.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

int verify_read_blocks(int fd, uint64_t size, uint64_t first, uint32_t n, uint8_t *buf)
{
	uint64_t off = first * PROTO_VERIFY_BLOCK, len = (uint64_t)n * PROTO_VERIFY_BLOCK, want;
	ssize_t got;

	if (first >= proto_disk_chunks(size, PROTO_VERIFY_BLOCK))
		return -EINVAL;
	want = size - off < len ? size - off : len;
	got = pread(fd, buf, want, (off_t)off);
	if (got != (ssize_t)want)
		return got < 0 ? -errno : -EIO;
	memset(buf + want, 0, len - want);
	return 0;
}
