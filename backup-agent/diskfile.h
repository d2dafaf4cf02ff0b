/* The backup's replica disk files: DIR/disk-N.img (raw, the committed
 * disk) and DIR/disk-N.sync (a session's initial copy until its first
 * commit), N the disk's index in the HELLO's "disks". */
#ifndef REMUS_DISKFILE_H
#define REMUS_DISKFILE_H

#include "proto.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DISKFILE_MAX PROTO_MAX_DISKS  /* disks per VM */

/* All len bytes of buf at off of fd (pwrite again after a short write or
 * EINTR). 0 or -errno (-EIO for a write of nothing). */
int diskfile_pwrite_all(int fd, const uint8_t *buf, uint64_t len, uint64_t off);
/* DIR/disk-N.img or DIR/disk-N.sync into out (PATH_MAX). 0 or -ENAMETOOLONG. */
int diskfile_path(const char *dir, unsigned index, bool sync, char *out);
/* Apply one disk op (enum disk_op_code) at its absolute offset: WRITE
 * writes data, WRITE_ZEROES and TRIM leave zeroes (both free the blocks
 * where the file system can), in memory that does not grow with the
 * length; FLUSH does nothing (the caller fdatasyncs).
 * Applying the same op twice gives the same file. size: the disk's size;
 * a range beyond it is -ERANGE with the file untouched. 0 or -errno. */
int diskfile_apply(int fd, uint64_t size, uint32_t op, uint64_t offset, uint64_t length,
		   const uint8_t *data);

#define DISKFILE_SYNC_SLICE (32u << 20)
/* fdatasync of a disk file of size bytes. sliced: first written back
 * DISKFILE_SYNC_SLICE bytes at a time with pulse(ctx) after each (pulse
 * may be NULL), for a file whose gigabytes the page cache may hold and one
 * fdatasync would write while the caller's loop stands still. 0 or
 * -errno; after an error the data may be lost whatever a second call says
 * (a write-back error is reported once per descriptor). */
int diskfile_sync(int fd, uint64_t size, bool sliced, void (*pulse)(void *ctx), void *ctx);

#endif
