/* Delta resync of the disks, the backup's side (docs/PROTOCOL.md, "Delta
 * resync"): a disk's initial copy starts from its committed replica
 * (disk-N.img) instead of zeroes. The replica is copied into disk-N.sync
 * and hashed chunk by chunk, in steps between turns of the agent's loop;
 * the primary then sends only what differs. Holes stay holes: a chunk
 * the replica does not hold, or holds as zeroes, is not written. */
#include "diskfile.h"
#include "log.h"
#include "page_hash.h"
#include "replica.h"
#include "sparse_copy.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Which disks may start from their replica: the HELLO asks (the seed and
 * a chunk size we accept) and disk-N.img is a regular file of the disk's
 * size. Whose disk it was does not matter: the primary compares contents. */
void replica_choose_disk_base(struct replica *rp)
{
	struct json_object *v;
	uint64_t seed;

	memset(rp->disk_base_chunks, 0, sizeof(rp->disk_base_chunks));
	if (!json_object_object_get_ex(rp->hello, "disk_hash_chunk", &v) ||
	    !json_object_is_type(v, json_type_int) ||
	    !proto_disk_hash_chunk_ok(json_object_get_int64(v)))
		return;
	rp->disk_base_chunk = (uint32_t)json_object_get_int64(v);
	if (!json_object_object_get_ex(rp->hello, "ram_delta_seed", &v) ||
	    !page_hash_seed_parse(json_object_get_string(v), &seed))
		return;
	rp->disk_base_seed = seed;
	for (unsigned i = 0; i < rp->ndisks && i < DISKFILE_MAX; i++) {
		char path[PATH_MAX];
		struct stat st;

		if (!diskfile_path(rp->dir, i, false, path) && stat(path, &st) == 0 &&
		    S_ISREG(st.st_mode) && (uint64_t)st.st_size == rp->disks[i].size)
			rp->disk_base_chunks[i] = proto_disk_chunks(rp->disks[i].size,
								    rp->disk_base_chunk);
	}
}

bool replica_disk_base_any(const struct replica *rp)
{
	for (unsigned i = 0; i < DISKFILE_MAX; i++)
		if (rp->disk_base_chunks[i])
			return true;
	return false;
}

/* Is [off, off+len) of in all hole? One lseek: a file system without
 * SEEK_DATA says no (EINVAL), and the range is read. */
static int all_hole(int in, uint64_t off, uint64_t len)
{
	off_t data = lseek(in, (off_t)off, SEEK_DATA);

	if (data < 0)
		return errno == ENXIO ? 1 : errno == EINVAL ? 0 : -errno;
	return (uint64_t)data >= off + len;
}

/* [off, off+len) of the replica into buf (zeroes where it has holes),
 * and the chunks that hold data into the .sync file `out`. */
static int copy_piece(const struct replica *rp, int in, int out, uint64_t off, size_t len,
		      uint8_t *buf)
{
	int hole = all_hole(in, off, len);

	if (hole < 0)
		return hole;
	if (hole) {
		memset(buf, 0, len);
		return 0;
	}
	if (pread(in, buf, len, (off_t)off) != (ssize_t)len)
		return -EIO;
	for (size_t at = 0; at < len; at += rp->disk_base_chunk) {
		size_t n = len - at < rp->disk_base_chunk ? len - at : rp->disk_base_chunk;

		if (!sparse_all_zero(buf + at, n) &&
		    pwrite(out, buf + at, n, (off_t)(off + at)) != (ssize_t)n)
			return -EIO;
	}
	return 0;
}

#define BASE_READ_BYTES PROTO_DISK_HASH_CHUNK_MAX /* a whole number of chunks */

uint8_t *replica_disk_hashes(const struct replica *rp, unsigned disk, uint64_t first,
			     uint32_t n, uint32_t *len)
{
	uint64_t size = disk < rp->ndisks ? rp->disks[disk].size : 0;
	uint64_t chunk = rp->disk_base_chunk, off, end;
	uint8_t *out = NULL, *buf = NULL, *h;
	char path[PATH_MAX];
	int in = -1, rc = 0;

	if (disk >= rp->ndisks || disk >= rp->nsync_fd || !rp->disk_base_chunks[disk] ||
	    first > rp->disk_base_chunks[disk] || n > rp->disk_base_chunks[disk] - first ||
	    n == 0 || n > PROTO_DISK_HASHES_PER_FRAME || diskfile_path(rp->dir, disk, false, path))
		return NULL;
	*len = PROTO_DISK_HASHES_HDR_SIZE + n * PAGE_HASH_SIZE;
	out = malloc(*len);
	buf = malloc(BASE_READ_BYTES);
	in = open(path, O_RDONLY | O_CLOEXEC);
	if (!out || !buf || in < 0)
		rc = -EIO;
	else
		proto_encode_disk_hashes_hdr(out, disk, first, n);
	off = first * chunk;
	end = (first + n) * chunk < size ? (first + n) * chunk : size;
	h = out ? out + PROTO_DISK_HASHES_HDR_SIZE : NULL;
	while (!rc && off < end) {
		size_t piece = end - off < BASE_READ_BYTES ? end - off : BASE_READ_BYTES;

		rc = copy_piece(rp, in, rp->sync_fd[disk], off, piece, buf);
		for (size_t at = 0; !rc && at < piece; at += chunk, h += PAGE_HASH_SIZE)
			block_hash(buf + at, piece - at < chunk ? piece - at : chunk,
				   rp->disk_base_seed, h);
		off += piece;
	}
	if (in >= 0)
		close(in);
	free(buf);
	if (rc) {
		free(out);
		return NULL;
	}
	return out;
}

/* Why this replica is not the one the HELLO's "disk_resume" names, or
 * NULL if it is. */
static const char *not_resumable(const struct replica *rp, const char *session,
				 uint64_t epoch, char *buf, size_t len)
{
	struct replica_info info;
	struct json_object *v;
	const char *why = NULL;

	for (unsigned i = 0; i < rp->ndisks; i++)
		if (i >= DISKFILE_MAX || !rp->disk_base_chunks[i])
			return "a disk has no replica of its size here";
	if (replica_load_info(rp->dir, &info))
		return "no committed replica";
	if (!json_object_object_get_ex(info.vm, "disk_session", &v) ||
	    !json_object_is_type(v, json_type_string) || strcmp(json_object_get_string(v), session))
		why = "it was committed by another session";
	else if (info.epoch < epoch) {
		snprintf(buf, len, "it holds epoch %llu, before the primary's %llu",
			 (unsigned long long)info.epoch, (unsigned long long)epoch);
		why = buf;
	} else if (info.ndisks != rp->ndisks) {
		why = "it has another number of disks";
	}
	for (unsigned i = 0; !why && i < rp->ndisks; i++)
		if (strcmp(info.disks[i].id, rp->disks[i].id) ||
		    info.disks[i].size != rp->disks[i].size)
			why = "its disks are not the HELLO's";
	replica_info_free(&info);
	return why;
}

void replica_choose_disk_resume(struct replica *rp)
{
	struct json_object *o, *s, *e;
	const char *why;
	char buf[96];

	rp->disk_resume = false;
	if (!json_object_object_get_ex(rp->hello, "disk_resume", &o))
		return;
	if (!json_object_is_type(o, json_type_object) ||
	    !json_object_object_get_ex(o, "session", &s) || !json_object_is_type(s, json_type_string) ||
	    !json_object_object_get_ex(o, "epoch", &e) || !json_object_is_type(e, json_type_int) ||
	    json_object_get_int64(e) < 0) {
		log_warn("disk resume: the HELLO's disk_resume is malformed; the disks are compared "
			 "chunk by chunk");
		return;
	}
	why = not_resumable(rp, json_object_get_string(s), (uint64_t)json_object_get_int64(e), buf,
			    sizeof(buf));
	if (why) {
		log_info("disk resume: the primary tracked its writes since epoch %lld, but this "
			 "replica cannot be resumed (%s); the disks are compared chunk by chunk",
			 (long long)json_object_get_int64(e), why);
		return;
	}
	rp->disk_resume = true;
	log_info("disk resume: this replica is the one the primary committed (epoch %lld or "
		 "later): it sends only what it wrote since", (long long)json_object_get_int64(e));
}
