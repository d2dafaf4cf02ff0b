/* Resuming the disks (docs/PROTOCOL.md, "Resuming the disks"): after a
 * link loss or an agent restart, the backup's disk replica is the one this
 * replicator last had committed, and every write since passed through our
 * NBD servers. So the new session's initial copy reads only the chunks
 * written since, from the images, while the mirrors go on; it does not
 * restart the mirrors, which read every disk whole.
 *
 * The lineage is (session, epoch): this device's `disk_session` of the
 * HELLO whose session committed, and its last acknowledged epoch. What
 * was written since is in the held records (the epoch in flight, the one
 * being recorded) or, once they are dropped (no barrier takes them, a new
 * session starts), in one bit per chunk of each disk's `track` map. A
 * write that is dropped while there is no lineage (before a session's
 * first commit after a full copy) breaks it: only a full copy then
 * restores one. The backup checks that its replica is that lineage's, at
 * that epoch or later, and says so in its HELLO_REPLY; otherwise the
 * copy is the delta resync of disk_resync.c.
 *
 * Order: a chunk is read from the image and its record queued with mu
 * held, the lock the NBD threads take to record a write. QEMU's
 * write-blocking mirror writes the image before it sends the write to us,
 * and holds back a write that overlaps one in flight, so a write's record
 * is queued after any read that could have missed it. The backup applies
 * epoch 0 in that order and ends with the image's content. */
#include "clock.h"
#include "dev_disk.h"
#include "log.h"
#include "proto.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

static bool bit_get(const uint8_t *map, uint64_t i)
{
	return map[i >> 3] & (1u << (i & 7));
}

static void bit_set(uint8_t *map, uint64_t i)
{
	map[i >> 3] |= (uint8_t)(1u << (i & 7));
}

static size_t map_bytes(const struct disk *k)
{
	return (size_t)((k->track_chunks + 7) / 8);
}

int disk_track_setup(struct disk_device *d)
{
	uint64_t largest = 0;

	for (uint32_t i = 0; i < d->n; i++) {
		d->disks[i].resume_fd = -1;
		if (d->disks[i].size > largest)
			largest = d->disks[i].size;
	}
	/* the delta resync's chunk: the backup hashes its base in these */
	d->track_chunk = proto_disk_hash_chunk_for(largest);
	for (uint32_t i = 0; i < d->n; i++) {
		struct disk *k = &d->disks[i];

		k->track_chunks = proto_disk_chunks(k->size, d->track_chunk);
		k->track = calloc(1, map_bytes(k));
		if (!k->track)
			return -ENOMEM;
	}
	return 0;
}

static void close_images(struct disk_device *d)
{
	if (!d->track_chunk)
		return; /* never set up (a teardown after a failed setup) */
	for (uint32_t i = 0; i < d->n; i++)
		if (d->disks[i].resume_fd >= 0) {
			close(d->disks[i].resume_fd);
			d->disks[i].resume_fd = -1;
		}
	d->resume_pumping = false;
}

void disk_track_free(struct disk_device *d)
{
	close_images(d);
	for (uint32_t i = 0; i < d->n; i++) {
		free(d->disks[i].track);
		d->disks[i].track = NULL;
	}
}

/* Called with mu held. */
void disk_track_mark(struct disk_device *d, uint32_t disk, uint64_t off, uint64_t len)
{
	struct disk *k;

	if (disk >= d->n || !d->disks[disk].track)
		return;
	if (!d->track_valid) {
		if (len)
			d->track_broken = true;
		return;
	}
	k = &d->disks[disk];
	for (uint64_t c = off / d->track_chunk;
	     len && c < k->track_chunks && c * d->track_chunk < off + len; c++)
		bit_set(k->track, c);
}

/* Called with mu held. A flush changes no chunk. */
void disk_track_mark_list(struct disk_device *d, const struct rec_list *l)
{
	for (const struct disk_rec *rec = l->head; rec; rec = rec->next)
		if (rec->op != DISK_OP_FLUSH)
			disk_track_mark(d, rec->disk, rec->offset, rec->length);
}

/* A full copy starts (mirrors restarted): nothing older counts. Called
 * with mu held, in the same hold that lets writes be recorded again. */
void disk_track_reset(struct disk_device *d)
{
	for (uint32_t i = 0; i < d->n; i++)
		if (d->disks[i].track)
			memset(d->disks[i].track, 0, map_bytes(&d->disks[i]));
	d->track_valid = false;
	d->track_broken = false;
}

/* The backup committed `epoch` of this session. The first commit makes
 * this session the lineage (what the bits held is in it now); records
 * dropped since a barrier (d->overflow) are in no epoch of it yet, and
 * the lineage would skip them: none then, a full copy next time. */
void disk_track_commit(struct disk_device *d, uint64_t epoch)
{
	pthread_mutex_lock(&d->mu);
	if (d->overflow) {
		d->track_valid = false;
	} else if (!d->session_committed) {
		if (d->track_valid || !d->track_broken) {
			for (uint32_t i = 0; i < d->n; i++)
				memset(d->disks[i].track, 0, map_bytes(&d->disks[i]));
			d->track_valid = true;
			d->track_broken = false;
			d->track_session = d->session;
		}
	}
	if (d->track_valid && d->track_session == d->session)
		d->track_epoch = epoch;
	pthread_mutex_unlock(&d->mu);
	if (!d->session_committed) {
		d->session_committed = true;
		d->resume_failures = 0;
	}
}

/* A mirror ended, or bitmaps capture the writes: no write passes through
 * us any more, so nothing can be resumed. */
void disk_track_lose(struct disk_device *d)
{
	pthread_mutex_lock(&d->mu);
	d->track_valid = false;
	d->track_broken = true;
	pthread_mutex_unlock(&d->mu);
}

static bool mirrors_running(const struct disk_device *d)
{
	for (uint32_t i = 0; i < d->n; i++)
		if (!d->disks[i].job || !d->disks[i].ready)
			return false;
	return d->n > 0;
}

/* HELLO: this session's id, and the lineage the backup may resume.
 * can_read is asked only when there is one to offer. */
void disk_track_hello(struct disk_device *d, struct json_object *hello,
		      bool (*can_read)(struct disk_device *d))
{
	struct json_object *o;
	char hex[17];
	bool valid;
	uint64_t session, epoch;

	if (getrandom(&d->session, sizeof(d->session), 0) != sizeof(d->session))
		d->session = 0;
	/* a session that ended before its first commit after a resume */
	if (d->resume_started && !d->session_committed)
		d->resume_failures++;
	d->resume_started = false;
	d->session_committed = false;
	d->resume_offered = false;
	snprintf(hex, sizeof(hex), "%016" PRIx64, d->session);
	json_object_object_add(hello, "disk_session", json_object_new_string(hex));
	pthread_mutex_lock(&d->mu);
	valid = d->track_valid;
	session = d->track_session;
	epoch = d->track_epoch;
	pthread_mutex_unlock(&d->mu);
	if (!d->session || !valid || d->capture_bitmap || !mirrors_running(d))
		return;
	if (d->resume_failures >= DISK_RESUME_TRIES) {
		log_warn("disks: %u resumed copies in a row ended before a commit: copying in full "
			 "against the backup's hashes", d->resume_failures);
		return;
	}
	if (!can_read(d))
		return;
	o = json_object_new_object();
	snprintf(hex, sizeof(hex), "%016" PRIx64, session);
	json_object_object_add(o, "session", json_object_new_string(hex));
	json_object_object_add(o, "epoch", json_object_new_uint64(epoch));
	json_object_object_add(hello, "disk_resume", o);
	d->resume_offered = true;
}

/* HELLO_REPLY: "disk_resume": true when the backup's replica is the
 * lineage offered; each disk's copy there then starts as that replica,
 * hashed (the filter, disk_delta.c, drops what the reads find unchanged)
 * or, with no hashes, cloned (every read goes out). */
void disk_track_reply(struct disk_device *d, struct json_object *reply)
{
	struct json_object *v;

	d->resuming = false;
	if (!d->resume_offered)
		return;
	if (!json_object_object_get_ex(reply, "disk_resume", &v) ||
	    !json_object_is_type(v, json_type_boolean) || !json_object_get_boolean(v)) {
		log_info("disks: the backup's replica is not the one last committed here: its copy "
			 "is compared chunk by chunk");
		return;
	}
	d->resuming = true;
}

/* Epoch 0 of a resumed session: open the images to read from. False (and
 * nothing open) when one cannot be read here: the mirrors restart. */
bool disk_track_resume_start(struct disk_device *d)
{
	uint64_t chunks = 0, epoch;
	bool resuming = d->resuming;

	d->resuming = false; /* until every image is open */
	if (!resuming || !mirrors_running(d))
		return false;
	for (uint32_t i = 0; i < d->n; i++) {
		struct disk *k = &d->disks[i];
		const char *why;

		k->resume_fd = disk_open_image(d->cx, k, &why);
		if (k->resume_fd < 0) {
			log_warn("disks: cannot resume disk %s (%s): the mirrors restart, every "
				 "disk is read whole", k->name, why);
			close_images(d);
			return false;
		}
		k->resume_next = 0;
		k->resume_read = 0;
	}
	d->resuming = true;
	pthread_mutex_lock(&d->mu);
	for (uint32_t i = 0; i < d->n; i++)
		for (uint64_t c = 0; c < d->disks[i].track_chunks; c++)
			chunks += bit_get(d->disks[i].track, c);
	epoch = d->track_epoch;
	pthread_mutex_unlock(&d->mu);
	d->resume_disk = 0;
	d->resume_pumping = true;
	d->resume_started = true;
	log_info("disks: resuming the backup's replica of epoch %" PRIu64 ": %" PRIu64
		 " chunk(s) of %u KiB written since are read from the images; the mirrors go on",
		 epoch, chunks, d->track_chunk >> 10);
	return true;
}

/* The record of chunk c of disk k as the image holds it now: a zeroing
 * for a chunk of zeroes. Called with mu held. */
static struct disk_rec *read_chunk(struct disk_device *d, struct disk *k, uint64_t c)
{
	uint64_t off = c * d->track_chunk;
	uint64_t len = k->size - off < d->track_chunk ? k->size - off : d->track_chunk;
	struct disk_rec *rec = disk_rec_new(k->index, DISK_OP_WRITE, off, len);
	ssize_t got;

	if (!rec)
		return NULL;
	got = pread(k->resume_fd, rec->data, len, (off_t)off);
	if (got != (ssize_t)len) {
		if (got >= 0)
			errno = EIO; /* the image is shorter than the disk */
		free(rec);
		return NULL;
	}
	k->resume_read += len;
	if (!rec->data[0] && !memcmp(rec->data, rec->data + 1, len - 1)) {
		free(rec);
		rec = disk_rec_new(k->index, DISK_OP_WRITE_ZEROES, off, len);
	}
	return rec;
}

/* Read up to budget bytes of marked chunks into the pending records, in
 * disk and chunk order, for DISK_RESUME_STEP_MS at most: the loop has
 * the link to serve. 1: more to read, 0: all read (the images are
 * closed), -errno: a read failed (no lineage any more). */
int disk_track_pump(struct disk_device *d, uint64_t budget)
{
	double until = mono_ms() + DISK_RESUME_STEP_MS;
	uint64_t done = 0;

	while (d->resume_disk < d->n && (!done || (done < budget && mono_ms() < until))) {
		struct disk *k = &d->disks[d->resume_disk];
		struct disk_rec *rec = NULL;
		uint64_t len = 0;
		int rc = 0;

		pthread_mutex_lock(&d->mu);
		while (k->resume_next < k->track_chunks && !bit_get(k->track, k->resume_next))
			k->resume_next++;
		if (k->resume_next < k->track_chunks) {
			rec = read_chunk(d, k, k->resume_next++);
			if (rec) {
				len = rec->length;
				disk_rec_list_append(&d->pending, rec);
			} else {
				rc = -(errno ? errno : ENOMEM);
			}
		}
		pthread_mutex_unlock(&d->mu);
		if (rc) {
			log_err("disks: reading disk %s's image for the resumed copy failed: %s",
				k->name, strerror(-rc));
			close_images(d);
			disk_track_lose(d);
			return rc;
		}
		if (!rec) {
			d->resume_disk++;
			continue;
		}
		done += len;
	}
	if (d->resume_disk < d->n)
		return 1;
	close_images(d);
	return 0;
}

/* The session ended (teardown, a new sync): an unfinished resume's images. */
void disk_track_resume_stop(struct disk_device *d)
{
	close_images(d);
}
