/* Delta resync of the disks (docs/PROTOCOL.md, "Delta resync"): when the
 * backup still has an older replica of a disk, it hashes that replica's
 * chunks and starts its copy from it, and the initial copy (epoch 0) sends
 * only the operations that change it (disk_delta.c). The mirror still
 * reads the whole disk here; what a link blip, an agent restart or a
 * failback no longer costs is sending all of it again. */
#include "dev_disk.h"
#include "disk_delta.h"
#include "log.h"
#include "proto.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void disk_resync_free(struct disk_device *d)
{
	for (uint32_t i = 0; i < d->n; i++)
		disk_delta_free(&d->disks[i].delta);
}

/* The HELLO_REPLY's "disk_hashes": per disk of the HELLO, 0 (a full copy)
 * or its number of chunks, whose hashes follow. */
int disk_resync_hello_reply(void *state, struct json_object *reply, uint64_t seed, char *err,
			    size_t errlen)
{
	struct disk_device *d = state;
	struct json_object *arr;

	disk_resync_free(d);
	d->resuming = false;
	for (uint32_t i = 0; i < d->n; i++)
		d->disks[i].resync_in = d->disks[i].resync_sent = d->disks[i].resume_read = 0;
	if (!json_object_object_get_ex(reply, "disk_hashes", &arr)) {
		disk_track_reply(d, reply); /* an older agent, or no replica there */
		return 0;                   /* full copies */
	}
	if (!json_object_is_type(arr, json_type_array) || json_object_array_length(arr) != d->n) {
		snprintf(err, errlen, "backup's disk_hashes is not an array of %u counts", d->n);
		return -EPROTO;
	}
	for (uint32_t i = 0; i < d->n; i++) {
		struct json_object *v = json_object_array_get_idx(arr, i);
		struct disk *k = &d->disks[i];
		int64_t n = json_object_is_type(v, json_type_int) ? json_object_get_int64(v) : -1;
		int rc;

		if (n == 0)
			continue;
		if (n < 0 || (uint64_t)n != proto_disk_chunks(k->size, d->hash_chunk)) {
			snprintf(err, errlen, "backup offers %s chunk hashes for disk %s of %llu "
				 "chunks", json_object_get_string(v), k->name,
				 (unsigned long long)proto_disk_chunks(k->size, d->hash_chunk));
			disk_resync_free(d);
			return -EPROTO;
		}
		rc = disk_delta_init(&k->delta, k->size, d->hash_chunk, seed);
		if (rc) {
			snprintf(err, errlen, "no memory for the chunk hashes of disk %s", k->name);
			disk_resync_free(d);
			return rc;
		}
	}
	disk_track_reply(d, reply);
	return 0;
}

int disk_resync_frame(void *state, unsigned type, const uint8_t *payload, uint32_t len)
{
	struct disk_device *d = state;
	const uint8_t *hashes;
	uint64_t first;
	uint32_t disk, n;
	struct disk *k;

	if (type != FRAME_DISK_HASHES ||
	    proto_parse_disk_hashes(payload, len, &disk, &first, &n, &hashes) || disk >= d->n)
		return -EPROTO;
	k = &d->disks[disk];
	if (disk_delta_add_hashes(&k->delta, first, n, hashes))
		return -EPROTO;
	if (!disk_delta_complete(&k->delta))
		return 0;
	log_info("delta resync: disk %s starts from the backup's replica (%llu hashes of %u KiB "
		 "chunks)", k->name, (unsigned long long)k->delta.nchunks, k->delta.chunk >> 10);
	return disk_resync_waits(d) ? 0 : 1;
}

bool disk_resync_waits(void *state)
{
	const struct disk_device *d = state;

	for (uint32_t i = 0; i < d->n; i++)
		if (disk_delta_on(&d->disks[i].delta) && !disk_delta_complete(&d->disks[i].delta))
			return true;
	return false;
}

/* What the filter lets through, as DISK frames of epoch 0: the record
 * itself when it goes out whole, else a record per piece. */
struct emit_ctx {
	struct disk_device *d;
	uint32_t disk;
	struct disk_rec *rec;      /* the operation filtered, or NULL */
	bool rec_sent;
};

static int emit(void *opaque, uint32_t op, uint64_t off, uint64_t len, const uint8_t *data)
{
	struct emit_ctx *e = opaque;
	struct ckpt_ctx *cx = e->d->cx;
	struct disk_rec *out;

	if (e->rec && !e->rec_sent && op == e->rec->op && off == e->rec->offset &&
	    len == e->rec->length) {
		e->rec_sent = true;
		return disk_push_rec(cx, cx->sync_tally, e->rec);
	}
	out = disk_rec_new(e->disk, op, off, len);
	if (!out)
		return -ENOMEM;
	if (op == DISK_OP_WRITE)
		memcpy(out->data, data, len);
	return disk_push_rec(cx, cx->sync_tally, out);
}

int disk_resync_push(struct disk_device *d, struct disk_rec *rec)
{
	struct disk_delta *dd = &d->disks[rec->disk].delta;
	struct emit_ctx e = { .d = d, .disk = rec->disk, .rec = rec };
	int rc;

	if (!disk_delta_on(dd))
		return disk_push_rec(d->cx, d->cx->sync_tally, rec);
	rc = disk_delta_op(dd, rec->op, rec->offset, rec->length,
			   rec->op == DISK_OP_WRITE ? rec->data : NULL, emit, &e);
	if (!e.rec_sent)
		free(rec);
	return rc;
}

/* Epoch 0 is complete: the zeroes still owed go out, and each disk says
 * how much of its copy went to the backup. */
int disk_resync_finish(struct disk_device *d)
{
	int rc = 0;

	for (uint32_t i = 0; i < d->n && !rc; i++) {
		struct disk *k = &d->disks[i];
		struct emit_ctx e = { .d = d, .disk = i };

		if (!disk_delta_on(&k->delta))
			continue;
		rc = disk_delta_finish(&k->delta, emit, &e);
		k->resync_in = k->delta.bytes_in;
		k->resync_sent = k->delta.bytes_out;
		log_info("delta resync: disk %s: %.1f of the %.1f MiB the copy wrote went to the "
			 "backup (%.1f%%); its replica held the rest", k->name,
			 (double)k->delta.bytes_out / (1 << 20), (double)k->delta.bytes_in / (1 << 20),
			 k->delta.bytes_in ? 100.0 * (double)k->delta.bytes_out /
						 (double)k->delta.bytes_in : 0.0);
	}
	disk_resync_free(d);
	return rc;
}
