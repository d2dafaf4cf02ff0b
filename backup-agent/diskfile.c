#include "diskfile.h"

#include "proto.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/falloc.h>
#include <stdio.h>
#include <unistd.h>

int diskfile_path(const char *dir, unsigned index, bool sync, char *out)
{
	int n = snprintf(out, PATH_MAX, "%s/disk-%u.%s", dir, index, sync ? "sync" : "img");

	return n < 0 || n >= PATH_MAX ? -ENAMETOOLONG : 0;
}

int diskfile_pwrite_all(int fd, const uint8_t *buf, uint64_t len, uint64_t off)
{
	while (len > 0) {
		ssize_t w = pwrite(fd, buf, len, (off_t)off);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (w == 0)
			return -EIO;
		buf += w;
		off += (uint64_t)w;
		len -= (uint64_t)w;
	}
	return 0;
}

int diskfile_sync(int fd, uint64_t size, bool sliced, void (*pulse)(void *ctx), void *ctx)
{
	for (uint64_t off = 0; sliced && off < size; off += DISKFILE_SYNC_SLICE) {
		/* data only, a slice at a time; the fdatasync after it has the
		 * metadata and the device's cache left */
		if (sync_file_range(fd, (off_t)off, DISKFILE_SYNC_SLICE, SYNC_FILE_RANGE_WAIT_BEFORE |
				    SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER) == 0) {
			if (pulse)
				pulse(ctx);
			continue;
		}
		if (errno == EINVAL || errno == ESPIPE || errno == ENOSYS)
			break; /* not here: fdatasync does it all */
		/* reported once: the fdatasync after it would say nothing */
		return -errno;
	}
	return fdatasync(fd) < 0 ? -errno : 0;
}

/* For file systems without fallocate modes: write the zeroes. */
static int write_zeroes(int fd, uint64_t off, uint64_t len)
{
	static const uint8_t zero[64 << 10];
	int rc = 0;

	while (len > 0 && !rc) {
		uint64_t n = len < sizeof(zero) ? len : sizeof(zero);
		rc = diskfile_pwrite_all(fd, zero, n, off);
		off += n;
		len -= n;
	}
	return rc;
}

/* Zeroes over [off, off+len) in O(1) memory, whatever len (up to the
 * whole disk): punch a hole first (the blocks are freed, so not even a
 * WRITE_ZEROES of the whole disk needs space on the backup; ZERO_RANGE
 * would allocate all of it, and fail after the commit point on a full file
 * system), else ZERO_RANGE, else write zeroes from one static buffer. A
 * replica is sparse anyway: what reads as zeroes is all that matters. */
static int zero_range(int fd, uint64_t off, uint64_t len)
{
	static const int modes[2] = { FALLOC_FL_PUNCH_HOLE, FALLOC_FL_ZERO_RANGE };

	if (len == 0)
		return 0;
	for (int i = 0; i < 2; i++) {
		if (fallocate(fd, modes[i] | FALLOC_FL_KEEP_SIZE, (off_t)off, (off_t)len) == 0)
			return 0;
		if (errno != EOPNOTSUPP && errno != ENOSYS && errno != EINVAL)
			return -errno;
	}
	return write_zeroes(fd, off, len);
}

int diskfile_apply(int fd, uint64_t size, uint32_t op, uint64_t offset, uint64_t length,
		   const uint8_t *data)
{
	if (offset + length < offset || offset + length > size)
		return -ERANGE;
	switch (op) {
	case DISK_OP_WRITE:
		return diskfile_pwrite_all(fd, data, length, offset);
	case DISK_OP_WRITE_ZEROES:
	case DISK_OP_TRIM:
		return zero_range(fd, offset, length);
	case DISK_OP_FLUSH:
		return 0;
	default:
		return -EINVAL;
	}
}
