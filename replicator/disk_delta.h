/* Delta resync of one disk (docs/PROTOCOL.md, "Delta resync"): the
 * backup's copy starts from its old replica, whose chunks it hashed for us
 * (FRAME_DISK_HASHES); of the initial copy's operations (epoch 0: QEMU's
 * mirror zeroing and copying the whole disk, and the guest's writes
 * meanwhile) only those that change what the backup holds go out.
 *
 * Each chunk is in one of three states:
 *  - BASE: the backup's chunk still holds its base, whose hash we have. A
 *    write that covers the whole chunk with those very bytes is dropped;
 *  - ZERO_OWED: a zeroing covered the whole chunk, whose base is not zero.
 *    The zeroes are sent only if nothing else covers the chunk before the
 *    copy ends, because the mirror zeroes its whole target before it
 *    copies the data, and sending those zeroes would make every data chunk
 *    differ from the base;
 *  - LIVE: the backup's chunk has changed in this copy (or a partial
 *    operation reached it); every later operation on it goes out.
 * Dropping an operation whose result the backup already holds, and moving
 * a zeroing to the end when nothing touched its chunk in between, leave
 * the backup's disk at the end of epoch 0 exactly as the operations in
 * order would. The result depends on contents only, never on whose
 * replica the base was. check_disk_delta.c compares it with brute force. */
#ifndef REMUS_DISK_DELTA_H
#define REMUS_DISK_DELTA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct disk_delta {
	uint64_t size, nchunks, received;
	uint32_t chunk;    /* bytes (proto.h: a power of two, 4 KiB to 1 MiB) */
	uint64_t seed;
	uint8_t *hashes;   /* the backup's, nchunks of PAGE_HASH_SIZE */
	uint8_t *state;    /* per chunk (disk_delta.c) */
	uint8_t zero_hash[16], zero_tail_hash[16]; /* of a zero chunk, full and last */
	uint64_t bytes_in, bytes_out; /* data and zeroed bytes of the copy: seen, sent */
};

/* Room for the hashes of a disk of size bytes (> 0) in chunks of chunk
 * bytes. -EINVAL, -ENOMEM. */
int disk_delta_init(struct disk_delta *dd, uint64_t size, uint32_t chunk, uint64_t seed);
void disk_delta_free(struct disk_delta *dd);
bool disk_delta_on(const struct disk_delta *dd);
/* The next n hashes, which must start at chunk `first` == those received
 * so far and stay within the disk: -EPROTO otherwise. */
int disk_delta_add_hashes(struct disk_delta *dd, uint64_t first, uint32_t n,
			  const uint8_t *hashes);
bool disk_delta_complete(const struct disk_delta *dd);

/* What goes out instead of an operation: called for each piece, in order;
 * a non-zero return stops the filter and is returned. `data` points into
 * the operation's own data (WRITE) or is NULL. */
typedef int disk_delta_emit_fn(void *opaque, uint32_t op, uint64_t off, uint64_t len,
			       const uint8_t *data);
/* One operation of epoch 0 (proto.h's DISK_OP_*, within the disk). */
int disk_delta_op(struct disk_delta *dd, uint32_t op, uint64_t off, uint64_t len,
		  const uint8_t *data, disk_delta_emit_fn *emit, void *opaque);
/* The end of epoch 0: the zeroes still owed go out; every chunk is LIVE. */
int disk_delta_finish(struct disk_delta *dd, disk_delta_emit_fn *emit, void *opaque);

#endif
