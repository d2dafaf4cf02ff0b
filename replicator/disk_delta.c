/* Delta resync of one disk: the filter over epoch 0's operations
 * (disk_delta.h says why it is exact). Used on the replicator's loop only. */
#include "disk_delta.h"
#include "page_hash.h"
#include "proto.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

enum { CHUNK_BASE, CHUNK_ZERO_OWED, CHUNK_LIVE };

/* Consecutive pieces of one operation that go out, as one. */
struct run {
	uint32_t op;
	uint64_t off, len;
	const uint8_t *data;
	disk_delta_emit_fn *emit;
	void *opaque;
	struct disk_delta *dd;
};

static int run_flush(struct run *run)
{
	int rc = 0;

	if (run->len) {
		rc = run->emit(run->opaque, run->op, run->off, run->len, run->data);
		run->dd->bytes_out += run->len;
	}
	run->len = 0;
	return rc;
}

static int run_add(struct run *run, uint64_t off, uint64_t len, const uint8_t *data)
{
	int rc = 0;

	if (run->len && run->off + run->len == off) {
		run->len += len;
		return 0;
	}
	rc = run_flush(run);
	run->off = off;
	run->len = len;
	run->data = data;
	return rc;
}

int disk_delta_init(struct disk_delta *dd, uint64_t size, uint32_t chunk, uint64_t seed)
{
	static const uint8_t zero[PROTO_DISK_HASH_CHUNK_MAX];
	uint64_t tail;

	*dd = (struct disk_delta){ .size = size, .chunk = chunk, .seed = seed };
	if (!size || !proto_disk_hash_chunk_ok(chunk))
		return -EINVAL;
	dd->nchunks = proto_disk_chunks(size, chunk);
	dd->hashes = calloc(dd->nchunks, PAGE_HASH_SIZE);
	dd->state = calloc(dd->nchunks, 1);
	if (!dd->hashes || !dd->state) {
		disk_delta_free(dd);
		return -ENOMEM;
	}
	tail = size - (dd->nchunks - 1) * chunk;
	block_hash(zero, chunk, seed, dd->zero_hash);
	block_hash(zero, tail, seed, dd->zero_tail_hash);
	return 0;
}

void disk_delta_free(struct disk_delta *dd)
{
	free(dd->hashes);
	free(dd->state);
	*dd = (struct disk_delta){ 0 };
}

bool disk_delta_on(const struct disk_delta *dd)
{
	return dd->state != NULL;
}

int disk_delta_add_hashes(struct disk_delta *dd, uint64_t first, uint32_t n,
			  const uint8_t *hashes)
{
	if (!disk_delta_on(dd) || first != dd->received || n > dd->nchunks - first)
		return -EPROTO;
	memcpy(dd->hashes + first * PAGE_HASH_SIZE, hashes, (size_t)n * PAGE_HASH_SIZE);
	dd->received += n;
	return 0;
}

bool disk_delta_complete(const struct disk_delta *dd)
{
	return disk_delta_on(dd) && dd->received == dd->nchunks;
}

static uint64_t chunk_len(const struct disk_delta *dd, uint64_t c)
{
	return c + 1 < dd->nchunks ? dd->chunk : dd->size - c * dd->chunk;
}

static const uint8_t *zero_hash(const struct disk_delta *dd, uint64_t c)
{
	return c + 1 < dd->nchunks ? dd->zero_hash : dd->zero_tail_hash;
}

static bool base_is(const struct disk_delta *dd, uint64_t c, const uint8_t *h)
{
	return !memcmp(dd->hashes + c * PAGE_HASH_SIZE, h, PAGE_HASH_SIZE);
}

/* The chunk's new state after an operation that covers all of it, which
 * leaves it all zero (data NULL) or holding data. */
static uint8_t whole_chunk_state(const struct disk_delta *dd, uint64_t c, const uint8_t *data)
{
	uint8_t h[PAGE_HASH_SIZE];
	const uint8_t *now = zero_hash(dd, c);

	if (data) {
		block_hash(data, chunk_len(dd, c), dd->seed, h);
		now = h;
	}
	if (base_is(dd, c, now))
		return CHUNK_BASE;
	if (!memcmp(now, zero_hash(dd, c), PAGE_HASH_SIZE))
		return CHUNK_ZERO_OWED;
	return CHUNK_LIVE;
}

/* The piece [a, a+len) of the operation falls in chunk c. */
static int piece(struct disk_delta *dd, struct run *run, uint64_t c, uint64_t a, uint64_t len,
		 const uint8_t *data)
{
	uint64_t start = c * dd->chunk;
	bool zeroing = run->op != DISK_OP_WRITE;
	uint8_t *st = &dd->state[c];
	int rc;

	if (*st != CHUNK_LIVE && a == start && len == chunk_len(dd, c)) {
		*st = whole_chunk_state(dd, c, data);
		if (*st != CHUNK_LIVE)
			return 0; /* the backup holds it, or gets its zeroes at the end */
		return run_add(run, a, len, data);
	}
	/* Part of a chunk: zeroes over zeroes change nothing. */
	if (zeroing && (*st == CHUNK_ZERO_OWED ||
			(*st == CHUNK_BASE && base_is(dd, c, zero_hash(dd, c)))))
		return 0;
	if (*st == CHUNK_ZERO_OWED) {
		/* the owed zeroes first, then the piece on top */
		struct run owed = { .op = DISK_OP_WRITE_ZEROES, .off = start,
				    .len = chunk_len(dd, c), .emit = run->emit,
				    .opaque = run->opaque, .dd = dd };

		if ((rc = run_flush(run)) || (rc = run_flush(&owed)))
			return rc;
	}
	*st = CHUNK_LIVE;
	return run_add(run, a, len, data);
}

int disk_delta_op(struct disk_delta *dd, uint32_t op, uint64_t off, uint64_t len,
		  const uint8_t *data, disk_delta_emit_fn *emit, void *opaque)
{
	struct run run = { .op = op, .emit = emit, .opaque = opaque, .dd = dd };
	uint64_t end = off + len;
	int rc = 0;

	if (op == DISK_OP_FLUSH || !disk_delta_on(dd))
		return emit(opaque, op, off, len, data);
	if (end < off || end > dd->size || (op == DISK_OP_WRITE && !data && len))
		return -ERANGE;
	if (op != DISK_OP_WRITE)
		data = NULL; /* a zeroing has none, whatever the caller passed */
	dd->bytes_in += len;
	for (uint64_t a = off; a < end && !rc;) {
		uint64_t c = a / dd->chunk;
		uint64_t stop = (c + 1) * dd->chunk < end ? (c + 1) * dd->chunk : end;

		rc = piece(dd, &run, c, a, stop - a, data ? data + (a - off) : NULL);
		a = stop;
	}
	return rc ? rc : run_flush(&run);
}

int disk_delta_finish(struct disk_delta *dd, disk_delta_emit_fn *emit, void *opaque)
{
	struct run run = { .op = DISK_OP_WRITE_ZEROES, .emit = emit, .opaque = opaque, .dd = dd };
	int rc = 0;

	for (uint64_t c = 0; c < dd->nchunks && !rc; c++) {
		if (dd->state[c] == CHUNK_ZERO_OWED)
			rc = run_add(&run, c * dd->chunk, chunk_len(dd, c), NULL);
		dd->state[c] = CHUNK_LIVE;
	}
	return rc ? rc : run_flush(&run);
}
