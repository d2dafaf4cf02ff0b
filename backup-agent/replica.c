#include "replica.h"

#include "clock.h"
#include "journal.h"
#include "log.h"
#include "page_codec.h"
#include "page_hash.h"
#include "pair.h"
#include "procfs.h"
#include "sparse_copy.h"
#include "verify_blocks.h"

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

/* Largest device state we stage: QEMU's is ~15 KB for a small VM. */
#define MAX_DEVSTATE_BYTES (64u << 20)

void replica_init(struct replica *rp, const char *dir)
{
	memset(rp, 0, sizeof(*rp));
	rp->dir = strdup(dir);
	replica_default_limits(&rp->lim);
}

void replica_default_limits(struct replica_limits *lim)
{
	*lim = (struct replica_limits){
		.max_ram_bytes = (uint64_t)REPLICA_DEFAULT_MAX_RAM_MB << 20,
		.max_disk_bytes = (uint64_t)REPLICA_DEFAULT_MAX_DISK_GB << 30,
		.max_epoch_bytes = (uint64_t)REPLICA_DEFAULT_MAX_EPOCH_MB << 20,
	};
}

static void unmap_ram(struct replica *rp)
{
	if (rp->ram)
		munmap(rp->ram, rp->ram_size);
	rp->ram = NULL;
}

static void stage_reset(struct replica *rp)
{
	rp->staging = false;
	rp->bad[0] = 0;
	rp->stage_n = 0;
	rp->stage_dev_len = 0;
	rp->stage_frames = 0;
	rp->stage_crc = 0;
	rp->stage_dops_n = 0;
	rp->stage_ddata_len = 0;
	rp->stage_disk_bytes = 0;
	rp->stage_bytes = 0;
}

/* Free each staging buffer whose capacity is over keep bytes: a busy
 * epoch's peak is not held on to until the next one, nor after the
 * session (keep 0). */
static void stage_release(struct replica *rp, size_t keep)
{
	if (rp->stage_cap * (size_t)PROTO_PAGE_SIZE > keep) {
		free(rp->stage_idx);
		free(rp->stage_pages);
		rp->stage_idx = NULL;
		rp->stage_pages = NULL;
		rp->stage_cap = 0;
	}
	if (rp->stage_dev_cap > keep) {
		free(rp->stage_dev);
		rp->stage_dev = NULL;
		rp->stage_dev_cap = 0;
	}
	if (rp->stage_dops_cap * sizeof(*rp->stage_dops) > keep) {
		free(rp->stage_dops);
		rp->stage_dops = NULL;
		rp->stage_dops_cap = 0;
	}
	if (rp->stage_ddata_cap > keep) {
		free(rp->stage_ddata);
		rp->stage_ddata = NULL;
		rp->stage_ddata_cap = 0;
	}
	if (REPLICA_ZBUF_BYTES > keep) {
		free(rp->zbuf);
		rp->zbuf = NULL;
	}
}

size_t replica_staged_heap(const struct replica *rp)
{
	return rp->stage_cap * (sizeof(uint64_t) + PROTO_PAGE_SIZE) + rp->stage_dev_cap +
	       rp->stage_dops_cap * sizeof(*rp->stage_dops) + rp->stage_ddata_cap +
	       (rp->zbuf ? REPLICA_ZBUF_BYTES : 0);
}

static void free_disks(struct replica_disk *disks, unsigned n)
{
	for (unsigned i = 0; disks && i < n; i++) {
		free(disks[i].id);
		free(disks[i].node);
		free(disks[i].format);
		free(disks[i].path);
	}
	free(disks);
}

static void close_sync_disks(struct replica *rp)
{
	for (unsigned i = 0; i < rp->nsync_fd; i++)
		close(rp->sync_fd[i]);
	rp->nsync_fd = 0;
}

void replica_end_session(struct replica *rp)
{
	char path[PATH_MAX];

	unmap_ram(rp);
	close_sync_disks(rp);
	json_object_put(rp->hello);
	rp->hello = NULL;
	free(rp->peer);
	rp->peer = NULL;
	stage_reset(rp);
	stage_release(rp, 0);
	if (rp->syncing) {
		snprintf(path, sizeof(path), "%s/ram.sync", rp->dir);
		unlink(path);
		for (unsigned i = 0; i < rp->ndisks; i++)
			if (!diskfile_path(rp->dir, i, true, path))
				unlink(path);
		rp->syncing = false;
	}
	free_disks(rp->disks, rp->ndisks);
	rp->disks = NULL;
	rp->ndisks = 0;
	rp->delta = false;
	memset(rp->disk_base_chunks, 0, sizeof(rp->disk_base_chunks));
	rp->disk_resume = false;
}

void replica_free(struct replica *rp)
{
	replica_end_session(rp);  /* frees the staging buffers too */
	free(rp->dir);
	memset(rp, 0, sizeof(*rp));
}

static int path_in(const struct replica *rp, const char *name, char *out, size_t len)
{
	int n = snprintf(out, len, "%s/%s", rp->dir, name);
	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

static const char *hello_str(struct json_object *o, const char *key)
{
	struct json_object *v;

	if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string))
		return NULL;
	return json_object_get_string(v);
}

static char *dup_or_null(const char *s)
{
	return s ? strdup(s) : NULL;
}

/* One entry of "disks": {"id": STRING, "size": BYTES, "node": STRING,
 * "format": STRING, "file": STRING, "qdev": STRING}; id and size required. */
static int parse_disk(struct json_object *o, unsigned i, struct replica_disk *d,
		      char *err, size_t errlen)
{
	struct json_object *v = NULL;
	const char *id;
	int64_t size;

	if (!json_object_is_type(o, json_type_object)) {
		snprintf(err, errlen, "HELLO disks[%u] is not an object", i);
		return -EINVAL;
	}
	id = hello_str(o, "id");
	if (!id || !id[0] || strlen(id) > 255) {
		snprintf(err, errlen, "HELLO disks[%u] has no id (a string of 1 to 255 characters)", i);
		return -EINVAL;
	}
	if (!json_object_object_get_ex(o, "size", &v) || !json_object_is_type(v, json_type_int) ||
	    (size = json_object_get_int64(v)) <= 0 || size % 512) {
		snprintf(err, errlen, "HELLO disks[%u] (%s): size %s is not a positive multiple of 512",
			 i, id, v ? json_object_to_json_string(v) : "missing");
		return -EINVAL;
	}
	if ((json_object_object_get_ex(o, "node", &v) && !hello_str(o, "node")) ||
	    (json_object_object_get_ex(o, "format", &v) && !hello_str(o, "format")) ||
	    (json_object_object_get_ex(o, "file", &v) && !hello_str(o, "file")) ||
	    (json_object_object_get_ex(o, "qdev", &v) && !hello_str(o, "qdev"))) {
		snprintf(err, errlen, "HELLO disks[%u] (%s): node, format, file and qdev must be "
			 "strings", i, id);
		return -EINVAL;
	}
	d->size = (uint64_t)size;
	if (!(d->id = strdup(id)))
		return -ENOMEM;
	d->node = dup_or_null(hello_str(o, "node"));
	d->format = dup_or_null(hello_str(o, "format"));
	return 0;
}

/* The HELLO's "disks" (none if absent): at most DISKFILE_MAX, ids unique.
 * out NULL: only check. dir non-NULL: fill each path (DIR/disk-N.img). */
static int parse_disks(struct json_object *h, const char *dir, struct replica_disk **out,
		       unsigned *nout, char *err, size_t errlen)
{
	struct json_object *arr;
	struct replica_disk *d = NULL;
	size_t n = 0;
	int rc = 0;

	if (!json_object_object_get_ex(h, "disks", &arr))
		goto done;
	if (!json_object_is_type(arr, json_type_array)) {
		snprintf(err, errlen, "HELLO disks is not an array");
		return -EINVAL;
	}
	n = json_object_array_length(arr);
	if (n > DISKFILE_MAX) {
		snprintf(err, errlen, "HELLO lists %zu disks; this agent keeps at most %u",
			 n, DISKFILE_MAX);
		return -EINVAL;
	}
	if (n && !(d = calloc(n, sizeof(*d))))
		return -ENOMEM;
	for (unsigned i = 0; i < n && !rc; i++) {
		rc = parse_disk(json_object_array_get_idx(arr, i), i, &d[i], err, errlen);
		for (unsigned k = 0; k < i && !rc; k++)
			if (!strcmp(d[k].id, d[i].id)) {
				snprintf(err, errlen, "HELLO disks[%u]: id '%s' is also disks[%u]",
					 i, d[i].id, k);
				rc = -EINVAL;
			}
		if (!rc && dir) {
			char path[PATH_MAX];
			if ((rc = diskfile_path(dir, i, false, path)) == 0 && !(d[i].path = strdup(path)))
				rc = -ENOMEM;
		}
	}
	if (rc || !out) {
		free_disks(d, (unsigned)n);
		return rc;
	}
done:
	if (out) {
		*out = d;
		*nout = (unsigned)n;
	}
	return 0;
}

static int check_hello(struct json_object *h, char *err, size_t errlen)
{
	struct json_object *v;
	int64_t ram;

	if (!json_object_object_get_ex(h, "protocol", &v) || json_object_get_int(v) != PROTO_VERSION) {
		snprintf(err, errlen, "primary speaks protocol %d; this agent speaks %d",
			 v ? json_object_get_int(v) : -1, PROTO_VERSION);
		return -EPROTONOSUPPORT;
	}
	if (!json_object_object_get_ex(h, "ram_size", &v) || (ram = json_object_get_int64(v)) <= 0 ||
	    ram % PROTO_PAGE_SIZE) {
		snprintf(err, errlen, "HELLO has no valid ram_size");
		return -EINVAL;
	}
	if (!json_object_object_get_ex(h, "page_size", &v) || json_object_get_int(v) != PROTO_PAGE_SIZE) {
		snprintf(err, errlen, "HELLO page_size is not %u", PROTO_PAGE_SIZE);
		return -EINVAL;
	}
	if (!hello_str(h, "name") || !hello_str(h, "ram_backend") || !hello_str(h, "machine_type") ||
	    !json_object_object_get_ex(h, "qemu_argv", &v) ||
	    !json_object_is_type(v, json_type_array) || json_object_array_length(v) < 1) {
		snprintf(err, errlen, "HELLO lacks name, ram_backend, machine_type or qemu_argv");
		return -EINVAL;
	}
	return parse_disks(h, NULL, NULL, NULL, err, errlen);
}

void replica_mark_restored(const char *dir)
{
	char path[PATH_MAX];
	int fd;

	snprintf(path, sizeof(path), "%s/restored", dir);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		log_warn("cannot mark %s: %s (a cold start could take this replica for current)",
			 path, strerror(errno));
	else
		close(fd);
}

bool replica_was_restored(const char *dir)
{
	char path[PATH_MAX];

	snprintf(path, sizeof(path), "%s/restored", dir);
	return access(path, F_OK) == 0;
}

uint64_t replica_generation(struct json_object *vm)
{
	struct json_object *v;
	int64_t g;

	if (!vm || !json_object_object_get_ex(vm, "generation", &v) ||
	    !json_object_is_type(v, json_type_int) || (g = json_object_get_int64(v)) < 0)
		return 0;
	/* a primary's number: room left to count on, without wrapping */
	return (uint64_t)g < REPLICA_MAX_GENERATION ? (uint64_t)g : REPLICA_MAX_GENERATION;
}

/* The session's generation: the primary's proposal, or one above this
 * directory's replica if that is as high (a VM started afresh beside an
 * older history). Written into the HELLO object, hence into vm.json. */
static void set_generation(struct replica *rp)
{
	struct replica_info info;
	uint64_t g = replica_generation(rp->hello);

	if (!replica_load_info(rp->dir, &info)) {
		uint64_t here = replica_generation(info.vm);

		if (here >= g)
			g = here + 1;
		replica_info_free(&info);
	}
	rp->generation = g;
	json_object_object_add(rp->hello, "generation", json_object_new_int64((int64_t)g));
}

/* Delta resync: may ram.sync start from the replica's RAM? When the HELLO
 * asks (its seed) and a committed RAM image of this very size is here.
 * Whose RAM it was does not matter: the primary compares contents. */
static void choose_delta(struct replica *rp)
{
	struct json_object *v;
	char path[PATH_MAX];
	struct stat st;

	rp->delta = json_object_object_get_ex(rp->hello, "ram_delta_seed", &v) &&
		    page_hash_seed_parse(json_object_get_string(v), &rp->delta_seed) &&
		    !path_in(rp, "ram", path, sizeof(path)) && stat(path, &st) == 0 &&
		    S_ISREG(st.st_mode) && (uint64_t)st.st_size == rp->ram_size;
}

/* The base is copied and hashed through a buffer, not the mapping:
 * touching every page of the mapping costs a fault each (about 8 us here:
 * 250 ms per 128 MiB), and the initial copy will write only the pages that
 * differ. */
#define HASH_READ_PAGES 256u

uint8_t *replica_ram_hashes(const struct replica *rp, uint64_t first, uint32_t n,
			    uint32_t *len)
{
	uint8_t *out = NULL, *buf = NULL;
	char from[PATH_MAX], to[PATH_MAX];
	int in = -1, fd = -1;

	if (!rp->delta || !rp->ram || first > rp->npages || n > rp->npages - first ||
	    n > PROTO_RAM_HASHES_PER_FRAME || path_in(rp, "ram", from, sizeof(from)) ||
	    path_in(rp, "ram.sync", to, sizeof(to)))
		return NULL;
	*len = PROTO_RAM_HASHES_HDR_SIZE + n * PAGE_HASH_SIZE;
	out = malloc(*len);
	buf = malloc(HASH_READ_PAGES * PROTO_PAGE_SIZE);
	in = open(from, O_RDONLY | O_CLOEXEC);
	fd = open(to, O_WRONLY | O_CLOEXEC);
	if (!out || !buf || in < 0 || fd < 0)
		goto fail;
	proto_encode_ram_hashes_hdr(out, first, n);
	for (uint32_t done = 0; done < n;) {
		uint32_t k = n - done < HASH_READ_PAGES ? n - done : HASH_READ_PAGES;
		size_t bytes = (size_t)k * PROTO_PAGE_SIZE;
		off_t off = (off_t)((first + done) * PROTO_PAGE_SIZE);

		if (pread(in, buf, bytes, off) != (ssize_t)bytes ||
		    pwrite(fd, buf, bytes, off) != (ssize_t)bytes)
			goto fail;
		for (uint32_t i = 0; i < k; i++)
			page_hash(buf + (size_t)i * PROTO_PAGE_SIZE, rp->delta_seed,
				  out + PROTO_RAM_HASHES_HDR_SIZE + (size_t)(done + i) * PAGE_HASH_SIZE);
		done += k;
	}
	close(in);
	close(fd);
	free(buf);
	return out;
fail:
	if (in >= 0)
		close(in);
	if (fd >= 0)
		close(fd);
	free(buf);
	free(out);
	return NULL;
}

static int map_sync_file(struct replica *rp, char *err, size_t errlen)
{
	char path[PATH_MAX];
	int fd, rc = path_in(rp, "ram.sync", path, sizeof(path));
	double t0;

	if (rc)
		return rc;
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0 || ftruncate(fd, (off_t)rp->ram_size) < 0) {
		rc = -errno;
		snprintf(err, errlen, "backup cannot create %s: %s", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return rc;
	}
	/* Written through the mapping: a full file system would kill the
	 * agent with SIGBUS there. Reserve the space now, or refuse. On
	 * tmpfs that zeroes every page, in seconds for a large guest, while
	 * the primary waits for the HELLO's reply: say how long it took. */
	t0 = mono_ms();
	rc = posix_fallocate(fd, 0, (off_t)rp->ram_size);
	if (mono_ms() - t0 > 1000)
		log_info("reserving %llu MiB for %s took %.1f s",
			 (unsigned long long)(rp->ram_size >> 20), path, (mono_ms() - t0) / 1000);
	if (rc && rc != EOPNOTSUPP && rc != EINVAL) {
		snprintf(err, errlen, "backup cannot reserve %llu MiB for %s: %s",
			 (unsigned long long)(rp->ram_size >> 20), path, strerror(rc));
		close(fd);
		unlink(path);
		return -rc;
	}
	rp->ram = mmap(NULL, rp->ram_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	close(fd);
	if (rp->ram == MAP_FAILED) {
		rp->ram = NULL;
		snprintf(err, errlen, "backup cannot map %s: %s", path, strerror(errno));
		return -ENOMEM;
	}
	return 0;
}

/* A clone of from (FICLONE: it shares from's blocks until either is
 * written) at to. 0 or -errno (-EOPNOTSUPP and kin: no reflinks here). */
static int clone_file(const char *from, const char *to)
{
	int in = open(from, O_RDONLY | O_CLOEXEC), out = -1, rc = 0;

	if (in < 0)
		return -errno;
	out = open(to, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (out < 0 || ioctl(out, FICLONE, in) < 0)
		rc = -errno;
	if (out >= 0)
		close(out);
	close(in);
	return rc;
}

static bool no_reflink(int rc)
{
	return rc == -EOPNOTSUPP || rc == -EXDEV || rc == -EINVAL || rc == -ENOTTY;
}

/* A resumed disk's copy starts as its committed replica: a clone where
 * the file system shares blocks (FICLONE), which needs no copy and no
 * hashes (its count in the HELLO_REPLY's disk_hashes is 0); elsewhere
 * disk_base.c copies and hashes it in steps. */
static bool clone_resumed_disk(struct replica *rp, unsigned i, const char *sync_path)
{
	char img[PATH_MAX];
	int rc;

	if (!rp->disk_resume || diskfile_path(rp->dir, i, false, img))
		return false;
	rc = clone_file(img, sync_path);
	if (rc) {
		if (!no_reflink(rc))
			log_warn("disk resume: cloning %s failed (%s): copying it instead", img,
				 strerror(-rc));
		return false;
	}
	rp->disk_base_chunks[i] = 0;
	log_info("disk resume: disk %s's copy is a clone of its replica (reflink): nothing to "
		 "copy or hash", rp->disks[i].id);
	return true;
}

/* disk-N.sync for every disk, sparse, at its size (a resumed one may be
 * a clone): the initial copy is written into it as it arrives. */
static int create_sync_disks(struct replica *rp, char *err, size_t errlen)
{
	char path[PATH_MAX];
	int fd, rc;

	for (unsigned i = 0; i < rp->ndisks; i++) {
		if ((rc = diskfile_path(rp->dir, i, true, path)))
			return rc;
		fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC |
			  (clone_resumed_disk(rp, i, path) ? 0 : O_TRUNC), 0600);
		if (fd < 0 || ftruncate(fd, (off_t)rp->disks[i].size) < 0) {
			rc = -errno;
			snprintf(err, errlen, "backup cannot create %s (disk %s, %llu bytes): %s",
				 path, rp->disks[i].id, (unsigned long long)rp->disks[i].size,
				 strerror(errno));
			if (fd >= 0)
				close(fd);
			return rc;
		}
		rp->sync_fd[rp->nsync_fd++] = fd;
	}
	return 0;
}

/* A journal left by a failed apply is replayed before anything new. */
static int replay_pending(struct replica *rp, char *why, size_t whylen)
{
	char err[256];
	int rc = journal_recover(rp->dir, err, sizeof(err));

	if (rc < 0) {
		snprintf(why, whylen, "%s", err);
		return rc;
	}
	if (rc > 0)
		log_info("replayed the journal of an earlier commit in %s", rp->dir);
	return 0;
}

/* ram_size and each disk's size against the agent's bounds, with the
 * bound's name so that the operator knows which key to raise. */
static int check_limits(const struct replica *rp, char *err, size_t errlen)
{
	const uint64_t mib = 1ull << 20, gib = 1ull << 30;

	if (rp->ram_size > rp->lim.max_ram_bytes) {
		snprintf(err, errlen, "ram_size %llu MiB exceeds max-ram-mb %llu",
			 (unsigned long long)((rp->ram_size + mib - 1) / mib),
			 (unsigned long long)(rp->lim.max_ram_bytes / mib));
		return -EFBIG;
	}
	for (unsigned i = 0; i < rp->ndisks; i++)
		if (rp->disks[i].size > rp->lim.max_disk_bytes) {
			snprintf(err, errlen, "disk %s: size %llu GiB exceeds max-disk-gb %llu",
				 rp->disks[i].id,
				 (unsigned long long)((rp->disks[i].size + gib - 1) / gib),
				 (unsigned long long)(rp->lim.max_disk_bytes / gib));
			return -EFBIG;
		}
	return 0;
}

/* Bytes a disk's committed replica occupies (it is sparse): 0 if none. */
static uint64_t disk_allocated(const struct replica *rp, unsigned i)
{
	char path[PATH_MAX];
	struct stat st;
	uint64_t used;

	if (diskfile_path(rp->dir, i, false, path) || stat(path, &st) < 0)
		return 0;
	used = (uint64_t)st.st_blocks * 512;
	return used < rp->disks[i].size ? used : rp->disks[i].size;
}

/* What the session writes before its first commit must fit beside the
 * committed replica, which stays until then. The RAM copy is reserved in
 * full (map_sync_file). A disk's copy is sparse and what the guest uses is
 * unknown here: count what its committed replica occupies (a resync of the
 * pinned VM writes about as much again), nothing for a new disk; a copy
 * that outgrows the space fails the initial sync, not the replica. Plus a
 * margin for the journals of the first epochs. */
static int check_space(const struct replica *rp, char *err, size_t errlen)
{
	uint64_t disks = 0, need, avail;
	struct statvfs vfs;

	if (statvfs(rp->dir, &vfs) < 0) {
		int rc = -errno;

		snprintf(err, errlen, "backup cannot check the free space in %s: %s", rp->dir,
			 strerror(-rc));
		return rc;
	}
	for (unsigned i = 0; i < rp->ndisks; i++)
		disks += disk_allocated(rp, i);
	need = rp->ram_size + disks + REPLICA_SPACE_MARGIN;
	avail = (uint64_t)vfs.f_bavail * vfs.f_frsize;
	if (avail < need) {
		snprintf(err, errlen, "state dir has %llu MiB free; the session needs %llu MiB "
			 "(ram_size, the disks' %llu MiB in use, a %llu MiB margin)",
			 (unsigned long long)(avail >> 20), (unsigned long long)(need >> 20),
			 (unsigned long long)(disks >> 20),
			 (unsigned long long)(REPLICA_SPACE_MARGIN >> 20));
		return -ENOSPC;
	}
	return 0;
}

/* Everything that may refuse the HELLO, in an order that changes nothing
 * in the state dir before the last check passed (the directory itself may
 * be created). */
static int admit(struct replica *rp, const char *peer, char *err, size_t errlen)
{
	int rc = check_limits(rp, err, errlen);

	if (!rc)
		rc = pair_check(rp->dir, pair_hello_uuid(rp->hello), hello_str(rp->hello, "name"),
				peer, err, errlen);
	if (!rc && mkdir(rp->dir, 0700) < 0 && errno != EEXIST) {
		rc = -errno;
		snprintf(err, errlen, "backup cannot create state dir %s: %s", rp->dir, strerror(errno));
	}
	if (!rc)
		rc = check_space(rp, err, errlen);
	if (!rc)
		rc = replay_pending(rp, err, errlen);
	if (!rc && peer && *peer && !(rp->peer = strdup(peer)))
		rc = -ENOMEM;
	return rc;
}

/* vm.json keeps the HELLO one level down, and replica_load_info reads it
 * back at json-c's default depth: a deeper HELLO would commit a replica
 * that no restore can read. */
#define HELLO_MAX_DEPTH (JSON_TOKENER_DEFAULT_DEPTH - 1)

int replica_parse_hello(const char *hello_json, struct json_object **out, char *err,
			size_t errlen)
{
	struct json_tokener *tok = json_tokener_new_ex(HELLO_MAX_DEPTH);
	struct json_object *h;
	enum json_tokener_error jerr;
	int rc;

	*out = NULL;
	if (!tok)
		return -ENOMEM;
	h = json_tokener_parse_ex(tok, hello_json, -1);
	jerr = json_tokener_get_error(tok);
	json_tokener_free(tok);
	if (jerr != json_tokener_success) {
		json_object_put(h);
		if (jerr == json_tokener_error_depth)
			snprintf(err, errlen, "HELLO is nested deeper than %d levels", HELLO_MAX_DEPTH);
		else
			snprintf(err, errlen, "HELLO is not valid JSON");
		return -EINVAL;
	}
	rc = check_hello(h, err, errlen);
	if (rc) {
		json_object_put(h);
		return rc;
	}
	*out = h;
	return 0;
}

int replica_begin_session(struct replica *rp, const char *hello_json,
			  const char *peer_identity, const struct replica_limits *lim,
			  char *err, size_t errlen)
{
	struct json_object *h, *v;
	int rc;

	replica_end_session(rp);
	rc = replica_parse_hello(hello_json, &h, err, errlen);
	if (!rc)
		rc = parse_disks(h, NULL, &rp->disks, &rp->ndisks, err, errlen);
	if (rc) {
		json_object_put(h);
		return rc;
	}
	json_object_object_get_ex(h, "ram_size", &v);
	rp->hello = h;
	rp->ram_size = (uint64_t)json_object_get_int64(v);
	rp->npages = rp->ram_size / PROTO_PAGE_SIZE;
	if (lim)
		rp->lim = *lim;
	else
		replica_default_limits(&rp->lim);
	rc = admit(rp, peer_identity, err, errlen);
	if (rc) {
		replica_end_session(rp);  /* nothing created yet: frees only */
		return rc;
	}
	rp->syncing = true;
	rp->copy_lost = false;
	rp->synced = false;
	rp->session_committed = false;
	rp->session_epoch = 0;
	set_generation(rp);
	if (!rp->base_unusable) {
		choose_delta(rp);
		replica_choose_disk_base(rp);
		replica_choose_disk_resume(rp);
	}
	rc = map_sync_file(rp, err, errlen);
	if (!rc)
		rc = create_sync_disks(rp, err, errlen);
	if (rc)
		replica_end_session(rp);
	return rc;
}

static void mark_bad(struct replica *rp, const char *fmt, ...)
{
	va_list ap;

	if (rp->bad[0])
		return; /* keep the first reason */
	va_start(ap, fmt);
	vsnprintf(rp->bad, sizeof(rp->bad), fmt, ap);
	va_end(ap);
}

/* Epoch 0, the initial copy, comes first; then 1, 2, ... */
static uint64_t expected_epoch(const struct replica *rp)
{
	return rp->synced ? rp->session_epoch + 1 : 0;
}

static void start_staging(struct replica *rp, uint64_t epoch)
{
	stage_reset(rp);
	rp->staging = true;
	rp->stage_epoch = epoch;
	if (epoch != expected_epoch(rp))
		mark_bad(rp, "epoch %llu out of order (expected %llu)",
			 (unsigned long long)epoch, (unsigned long long)expected_epoch(rp));
}

static int grow(void **p, size_t *cap, size_t need, size_t elem)
{
	size_t ncap = *cap ? *cap : 64;
	void *np;

	if (need <= *cap)
		return 0;
	while (ncap < need)
		ncap *= 2;
	np = realloc(*p, ncap * elem);
	if (!np)
		return -ENOMEM;
	*p = np;
	*cap = ncap;
	return 0;
}

/* Would add more bytes pass lim.max_epoch_bytes? Then the epoch is
 * dropped (NACK), never committed in part, and staging stops growing. */
static bool stage_over(struct replica *rp, uint64_t add)
{
	rp->stage_bytes += add;
	if (rp->stage_bytes <= rp->lim.max_epoch_bytes)
		return false;
	mark_bad(rp, "epoch %llu stages more than max-epoch-mb %llu",
		 (unsigned long long)rp->stage_epoch,
		 (unsigned long long)(rp->lim.max_epoch_bytes >> 20));
	return true;
}

/* count pages, their numbers big-endian at index_be and their data at
 * data: into ram.sync at once in the initial copy, else staged. */
static void stage_page_data(struct replica *rp, const struct frame_hdr *h, uint32_t count,
			    const uint8_t *index_be, const uint8_t *data)
{
	size_t cap;

	for (uint32_t i = 0; i < count; i++) {
		uint64_t idx;
		memcpy(&idx, index_be + 8 * i, 8);
		idx = be64toh(idx);
		if (idx >= rp->npages) {
			mark_bad(rp, "page %llu beyond guest RAM (%llu pages)",
				 (unsigned long long)idx, (unsigned long long)rp->npages);
			return;
		}
		if (h->epoch == 0) {
			memcpy(rp->ram + idx * PROTO_PAGE_SIZE, data + (size_t)i * PROTO_PAGE_SIZE,
			       PROTO_PAGE_SIZE);
			continue;
		}
		if (rp->stage_n >= rp->npages) {
			mark_bad(rp, "more pages than guest RAM in one epoch");
			return;
		}
		if (stage_over(rp, sizeof(idx) + PROTO_PAGE_SIZE))
			return;
		/* stage_idx and stage_pages grow together; cap tracks both. */
		cap = rp->stage_cap;
		if (grow((void **)&rp->stage_idx, &cap, rp->stage_n + 1, sizeof(uint64_t)) ||
		    grow((void **)&rp->stage_pages, &rp->stage_cap, rp->stage_n + 1, PROTO_PAGE_SIZE)) {
			mark_bad(rp, "out of memory staging the epoch");
			return;
		}
		rp->stage_idx[rp->stage_n] = idx;
		memcpy(rp->stage_pages + rp->stage_n * PROTO_PAGE_SIZE,
		       data + (size_t)i * PROTO_PAGE_SIZE, PROTO_PAGE_SIZE);
		rp->stage_n++;
	}
}

static void stage_pages(struct replica *rp, const struct frame_hdr *h, const uint8_t *payload)
{
	struct pages_hdr ph;

	if (proto_parse_pages(payload, h->len, &ph)) {
		mark_bad(rp, "malformed PAGES frame %u", rp->stage_frames);
		return;
	}
	stage_page_data(rp, h, ph.count, ph.index_be, ph.data);
}

/* A delta's base: the page as the replica holds it. Epochs commit in
 * order, one at a time, so that is the last committed epoch's page (in the
 * initial copy: what ram.sync has so far), which the primary meant. */
static const uint8_t *replica_page(void *ctx, uint64_t idx)
{
	struct replica *rp = ctx;

	return idx < rp->npages ? rp->ram + idx * PROTO_PAGE_SIZE : NULL;
}

static void stage_pages_z(struct replica *rp, const struct frame_hdr *h, const uint8_t *payload)
{
	struct pages_z_view v;
	char err[120];

	if (page_parse_z(payload, h->len, &v)) {
		mark_bad(rp, "malformed PAGES_Z frame %u", rp->stage_frames);
		return;
	}
	if (!rp->zbuf && !(rp->zbuf = malloc(REPLICA_ZBUF_BYTES))) {
		mark_bad(rp, "out of memory decoding compressed pages");
		return;
	}
	if (page_decode(&v, rp->zbuf, replica_page, rp, err, sizeof(err))) {
		mark_bad(rp, "PAGES_Z frame %u: %s", rp->stage_frames, err);
		return;
	}
	stage_page_data(rp, h, v.count, v.index_be, rp->zbuf);
}

static void stage_devstate(struct replica *rp, const struct frame_hdr *h, const uint8_t *payload)
{
	if (h->epoch == 0) {
		mark_bad(rp, "device state in the initial sync");
		return;
	}
	if (rp->stage_dev_len + h->len > MAX_DEVSTATE_BYTES) {
		mark_bad(rp, "device state larger than %u MiB", MAX_DEVSTATE_BYTES >> 20);
		return;
	}
	if (stage_over(rp, h->len))
		return;
	if (grow((void **)&rp->stage_dev, &rp->stage_dev_cap, rp->stage_dev_len + h->len, 1)) {
		mark_bad(rp, "out of memory staging the device state");
		return;
	}
	memcpy(rp->stage_dev + rp->stage_dev_len, payload, h->len);
	rp->stage_dev_len += h->len;
}

static void stage_disk_op(struct replica *rp, const struct disk_op *op)
{
	size_t dlen = op->data ? op->length : 0;
	struct journal_disk_op *rec;

	rp->stage_disk_bytes += sizeof(*rec) + dlen;
	if (rp->stage_disk_bytes > REPLICA_MAX_STAGED_DISK_BYTES) {
		mark_bad(rp, "disk ops of one epoch exceed %llu MiB",
			 REPLICA_MAX_STAGED_DISK_BYTES >> 20);
		return;
	}
	if (stage_over(rp, sizeof(*rec) + dlen))
		return;
	if (grow((void **)&rp->stage_dops, &rp->stage_dops_cap, rp->stage_dops_n + 1, sizeof(*rec)) ||
	    grow((void **)&rp->stage_ddata, &rp->stage_ddata_cap, rp->stage_ddata_len + dlen, 1)) {
		mark_bad(rp, "out of memory staging the disk writes");
		return;
	}
	rec = &rp->stage_dops[rp->stage_dops_n++];
	*rec = (struct journal_disk_op){ .disk = op->disk, .op = op->op,
					 .offset = op->offset, .length = op->length };
	if (dlen)
		memcpy(rp->stage_ddata + rp->stage_ddata_len, op->data, dlen);
	rp->stage_ddata_len += dlen;
}

/* Epoch 0 (the initial copy) goes straight into disk-N.sync, like pages
 * into ram.sync: nothing is committed before the first commit. */
static void stage_disk(struct replica *rp, const struct frame_hdr *h, const uint8_t *payload)
{
	struct disk_op op;
	int rc;

	if (proto_parse_disk(payload, h->len, &op)) {
		mark_bad(rp, "malformed DISK frame %u", rp->stage_frames);
		return;
	}
	if (op.disk >= rp->ndisks) {
		mark_bad(rp, "DISK frame %u: unknown disk %u (the HELLO lists %u)",
			 rp->stage_frames, op.disk, rp->ndisks);
		return;
	}
	if (op.offset + op.length > rp->disks[op.disk].size) {
		mark_bad(rp, "DISK frame %u: %llu bytes at %llu beyond disk %u (%llu bytes)",
			 rp->stage_frames, (unsigned long long)op.length,
			 (unsigned long long)op.offset, op.disk,
			 (unsigned long long)rp->disks[op.disk].size);
		return;
	}
	if (h->epoch > 0) {
		stage_disk_op(rp, &op);
		return;
	}
	rc = op.disk < rp->nsync_fd ?
		diskfile_apply(rp->sync_fd[op.disk], rp->disks[op.disk].size, op.op, op.offset,
			       op.length, op.data) : -EBADF;
	if (rc)
		mark_bad(rp, "DISK frame %u: writing disk-%u.sync failed: %s", rp->stage_frames,
			 op.disk, strerror(-rc));
	else
		rp->disk_ops++;
}

void replica_apply_unbuffered(struct replica *rp, const uint8_t *payload, uint32_t len)
{
	char path[PATH_MAX];
	struct disk_op op;
	int fd, rc;

	if (proto_parse_disk(payload, len, &op) || op.disk >= rp->ndisks ||
	    diskfile_path(rp->dir, op.disk, rp->syncing, path)) {
		log_warn("test hook: unusable unbuffered DISK frame dropped");
		return;
	}
	fd = open(path, O_WRONLY | O_CLOEXEC);
	rc = fd < 0 ? -errno : diskfile_apply(fd, rp->disks[op.disk].size, op.op, op.offset,
					      op.length, op.data);
	if (fd >= 0)
		close(fd);
	if (rc)
		log_warn("test hook: applying an unbuffered DISK frame to %s: %s", path,
			 strerror(-rc));
}

void replica_add_frame(struct replica *rp, const struct frame_hdr *h,
		       const uint8_t *payload, bool payload_ok)
{
	if (!rp->staging || h->epoch != rp->stage_epoch)
		start_staging(rp, h->epoch);
	rp->stage_frames++;
	rp->stage_crc = proto_epoch_crc_add(rp->stage_crc, h->payload_crc);
	if (!payload_ok)
		mark_bad(rp, "%s frame %u: payload checksum mismatch",
			 frame_type_name(h->type), rp->stage_frames);
	if (rp->bad[0])
		return;
	switch (h->type) {
	case FRAME_PAGES:
		stage_pages(rp, h, payload);
		break;
	case FRAME_PAGES_Z:
		stage_pages_z(rp, h, payload);
		break;
	case FRAME_DEVSTATE:
		stage_devstate(rp, h, payload);
		break;
	case FRAME_DISK:
		stage_disk(rp, h, payload);
		break;
	default:
		mark_bad(rp, "%s frame %u is not part of an epoch", frame_type_name(h->type),
			 rp->stage_frames);
	}
}

/* vm.json: what a restore needs (the HELLO) and which epoch this is. */
static char *vm_json_text(struct replica *rp, uint64_t epoch)
{
	struct json_object *o = json_object_new_object();
	char stamp[64], boot[64], *text;
	time_t now = time(NULL);
	struct tm tm;

	gmtime_r(&now, &tm);
	strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%SZ", &tm);
	json_object_object_add(o, "vm", json_object_get(rp->hello));
	json_object_object_add(o, "epoch", json_object_new_uint64(epoch));
	json_object_object_add(o, "committed_at", json_object_new_string(stamp));
	/* The RAM image and the journal are not synced at each commit (the
	 * disks are): a restore after this host restarted must know. */
	json_object_object_add(o, "host_boot_id",
			       json_object_new_string(host_boot_id(boot, sizeof(boot))));
	text = strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY));
	json_object_put(o);
	return text;
}

/* The initial copy went into disk-N.sync unsynced, and no journal replay
 * brings it back: it is on this host's storage before the commit point, or
 * the session is lost. Synced in slices with a pulse after each: the page
 * cache may hold gigabytes of it. */
static int sync_initial_copy(struct replica *rp, char *why, size_t whylen)
{
	if (rp->copy_lost) {
		snprintf(why, whylen, "syncing this session's initial copy failed before: "
			 "it cannot commit");
		return -EIO;
	}
	for (unsigned i = 0; i < rp->nsync_fd; i++) {
		int rc = diskfile_sync(rp->sync_fd[i], rp->disks[i].size, true, rp->pulse,
				       rp->pulse_ctx);

		if (rc) {
			rp->copy_lost = true;
			snprintf(why, whylen, "syncing disk %s's initial copy to %s failed: %s; "
				 "the copy may be lost, so this session cannot commit",
				 rp->disks[i].id, rp->dir, strerror(-rc));
			return rc;
		}
	}
	return 0;
}

/* Commit a verified epoch through the journal (journal.h): once the journal
 * is written the epoch is committed, even if applying it fails now. */
static int commit(struct replica *rp, uint64_t epoch)
{
	char *vm_json = vm_json_text(rp, epoch);
	struct journal_view j = {
		.epoch = epoch,
		.promote = rp->syncing,
		.npages = rp->stage_n,
		.idx = rp->stage_idx,
		.pages = rp->stage_pages,
		.devstate = rp->stage_dev,
		.devstate_len = rp->stage_dev_len,
		.vm_json = vm_json,
		.vm_json_len = vm_json ? strlen(vm_json) : 0,
		.ndisks = rp->ndisks,
		.ndisk_ops = rp->stage_dops_n,
		.disk_ops = rp->stage_dops,
		.disk_data = rp->stage_ddata,
		.disk_data_len = rp->stage_ddata_len,
		.pulse = rp->pulse,
		.pulse_ctx = rp->pulse_ctx,
	};
	int rc;

	if (!vm_json)
		return -ENOMEM;
	/* The session's first commit pins the directory to its pair, before
	 * the commit point: a committed replica always has its pin. */
	rc = rp->syncing ? pair_pin(rp->dir, pair_hello_uuid(rp->hello),
				    hello_str(rp->hello, "name"), rp->peer) : 0;
	if (!rc)
		rc = journal_write(rp->dir, &j);
	if (!rc && j.promote) {
		/* a new replica: no VM ran on from this one yet */
		char mark[PATH_MAX];

		snprintf(mark, sizeof(mark), "%s/restored", rp->dir);
		unlink(mark);
	}
	if (!rc) {
		/* The .sync files are the journal's now (it promotes them). */
		rp->syncing = false;
		close_sync_disks(rp);
		rp->disk_ops += rp->stage_dops_n;
		rc = journal_apply(rp->dir, &j, rp->ram, rp->ram_size);
		if (rc)
			log_err("epoch %llu is committed in %s/journal but applying it failed: %s; "
				"it will be replayed before the next commit or a restore",
				(unsigned long long)epoch, rp->dir, strerror(-rc));
		rc = 0;
	}
	free(vm_json);
	return rc;
}

int replica_end_epoch(struct replica *rp, const struct frame_hdr *h,
		      const uint8_t *payload, bool payload_ok, char *why, size_t whylen)
{
	struct epoch_end e;
	int rc = 0;

	if (!rp->staging || h->epoch != rp->stage_epoch)
		start_staging(rp, h->epoch);
	if (!payload_ok)
		mark_bad(rp, "EPOCH_END frame: payload checksum mismatch");
	else if (proto_parse_epoch_end(payload, h->len, &e))
		mark_bad(rp, "malformed EPOCH_END");
	else if (!rp->bad[0] && (e.frames != rp->stage_frames || e.epoch_crc != rp->stage_crc))
		mark_bad(rp, "incomplete: %u of %u frames, epoch checksum %08x, expected %08x",
			 rp->stage_frames, e.frames, rp->stage_crc, e.epoch_crc);
	else if (!rp->bad[0] && h->epoch && (e.pages != rp->stage_n || e.devstate_bytes != rp->stage_dev_len))
		mark_bad(rp, "%zu pages and %zu device bytes, the primary sent %llu and %llu",
			 rp->stage_n, rp->stage_dev_len, (unsigned long long)e.pages,
			 (unsigned long long)e.devstate_bytes);
	else if (!rp->bad[0] && h->epoch && !e.devstate_bytes)
		mark_bad(rp, "no device state");
	if (rp->bad[0]) {
		snprintf(why, whylen, "%s", rp->bad);
		rp->discards++;
		stage_reset(rp);
		stage_release(rp, REPLICA_STAGE_KEEP_BYTES);
		return -EBADMSG;
	}
	if (h->epoch) {
		rc = replay_pending(rp, why, whylen);
		if (!rc && rp->syncing)
			rc = sync_initial_copy(rp, why, whylen);
		if (!rc && (rc = commit(rp, h->epoch)))
			snprintf(why, whylen, "commit failed: %s", strerror(-rc));
	}
	stage_reset(rp);
	stage_release(rp, REPLICA_STAGE_KEEP_BYTES);
	if (rc) {
		rp->discards++;
		return rc;
	}
	if (h->epoch == 0) {
		rp->synced = true;
	} else {
		rp->session_committed = true;
		rp->base_unusable = false; /* new images, read anew next time */
		rp->commits++;
	}
	rp->session_epoch = h->epoch;
	return 0;
}

/* How many items the slice's target has: pages, or the disk's blocks. */
static uint64_t verify_items(const struct replica *rp, uint32_t target)
{
	if (!target)
		return rp->npages;
	if (target > rp->ndisks)
		return 0;
	return proto_disk_chunks(rp->disks[target - 1].size, PROTO_VERIFY_BLOCK);
}

/* The committed disk image a slice reads; -1 with why. */
static int open_verify_disk(const struct replica *rp, uint32_t target, char *why, size_t whylen)
{
	char path[PATH_MAX];
	int fd = -1;

	if (diskfile_path(rp->dir, target - 1, false, path))
		snprintf(why, whylen, "the path of disk %u's replica is too long", target - 1);
	else if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)) < 0)
		snprintf(why, whylen, "cannot open %s: %s", path, strerror(errno));
	return fd;
}

uint8_t *replica_verify(struct replica *rp, uint64_t epoch, const uint8_t *payload, uint32_t len,
			uint32_t *outlen, char *why, size_t whylen)
{
	struct verify_req req;
	uint8_t h[PAGE_HASH_SIZE], *out, *blocks = NULL;
	uint32_t nbad = 0;
	bool at_epoch;
	int fd = -1;

	if (proto_parse_verify(payload, len, &req) ||
	    req.first + req.count > verify_items(rp, req.target)) {
		snprintf(why, whylen, "malformed VERIFY frame");
		return NULL;
	}
	/* the committed epoch, its journal applied to the mapping we read */
	at_epoch = rp->ram && !rp->syncing && rp->session_committed && rp->session_epoch == epoch &&
		   !replay_pending(rp, why, whylen);
	if (at_epoch && req.target && (fd = open_verify_disk(rp, req.target, why, whylen)) < 0) {
		log_warn("verify: %s: answered as skipped", why);
		at_epoch = false; /* the primary gives the disk up after a few */
	}
	/* a disk slice's blocks with one read, as the primary reads them;
	 * unreadable: answered as skipped, tried again */
	if (fd >= 0 && (!(blocks = malloc((size_t)req.count * PROTO_VERIFY_BLOCK)) ||
			verify_read_blocks(fd, rp->disks[req.target - 1].size, req.first, req.count,
					   blocks)))
		at_epoch = false;
	if (fd >= 0)
		close(fd);
	out = malloc(PROTO_VERIFY_RESULT_HDR_SIZE + (size_t)PROTO_VERIFY_MAX_BAD * 8);
	if (!out) {
		snprintf(why, whylen, "no memory for a VERIFY_RESULT");
		free(blocks);
		return NULL;
	}
	for (uint32_t i = 0; at_epoch && i < req.count; i++) {
		uint64_t item = req.first + i;

		page_hash(req.target ? blocks + (size_t)i * PROTO_VERIFY_BLOCK :
				       rp->ram + item * PROTO_PAGE_SIZE, req.seed, h);
		if (!memcmp(h, req.hashes + (size_t)i * PAGE_HASH_SIZE, PAGE_HASH_SIZE))
			continue;
		if (nbad < PROTO_VERIFY_MAX_BAD)
			proto_put_be64(out + PROTO_VERIFY_RESULT_HDR_SIZE + (size_t)nbad * 8, item);
		nbad++;
	}
	free(blocks);
	if (at_epoch && nbad)
		log_warn("verify: %u %s of the replica differ from the primary's at epoch %llu; "
			 "it sends them again", nbad, req.target ? "block(s) of a disk" : "page(s)",
			 (unsigned long long)epoch);
	proto_encode_verify_result_hdr(out, req.first, req.count,
				       at_epoch ? nbad : PROTO_VERIFY_SKIPPED);
	*outlen = PROTO_VERIFY_RESULT_HDR_SIZE +
		  (at_epoch ? (nbad < PROTO_VERIFY_MAX_BAD ? nbad : PROTO_VERIFY_MAX_BAD) * 8 : 0);
	return out;
}

int replica_copy_file(const char *from, const char *to)
{
	struct stat st;
	int in = open(from, O_RDONLY | O_CLOEXEC), out = -1, rc = 0;

	if (in < 0)
		return -errno;
	if (fstat(in, &st) < 0) {
		rc = -errno;
		goto out;
	}
	out = open(to, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (out < 0) {
		rc = -errno;
		goto out;
	}
	/* a new file is all holes: pages of zeroes stay holes */
	rc = sparse_copy(in, out, st.st_size, NULL);
out:
	if (out >= 0)
		close(out);
	close(in);
	return rc;
}

int replica_snapshot(struct replica *rp, const char *dir, uint64_t max_copy, char *why,
		     size_t whylen)
{
	static const char *const fixed[] = { "vm.json", "devstate", "ram" };
	char names[3 + DISKFILE_MAX][32], from[3 + DISKFILE_MAX][PATH_MAX], to[PATH_MAX];
	struct replica_info info;
	uint64_t total = 0;
	unsigned n = 0, i;
	struct stat st;
	int rc;

	if ((rc = replay_pending(rp, why, whylen)))
		return rc;
	if ((rc = replica_load_info(rp->dir, &info))) {
		snprintf(why, whylen, "no committed replica in %s", rp->dir);
		return rc;
	}
	for (i = 0; i < 3; i++)
		snprintf(names[n++], sizeof(names[0]), "%s", fixed[i]);
	for (i = 0; i < info.ndisks && i < DISKFILE_MAX; i++)
		snprintf(names[n++], sizeof(names[0]), "disk-%u.img", i);
	replica_info_free(&info);
	for (i = 0; i < n; i++)
		snprintf(from[i], sizeof(from[i]), "%s/%s", rp->dir, names[i]);
	/* clones, instant and free: all of them, or copies of all */
	for (i = 0, rc = 0; i < n && !rc; i++) {
		snprintf(to, sizeof(to), "%s/%s", dir, names[i]);
		rc = clone_file(from[i], to);
	}
	if (!rc)
		return 0;
	if (!no_reflink(rc)) {
		snprintf(why, whylen, "cannot clone %s: %s", from[i - 1], strerror(-rc));
		return rc;
	}
	for (i = 0; i < n; i++)
		if (stat(from[i], &st) == 0)
			total += (uint64_t)st.st_size;
	if (total > max_copy) {
		snprintf(why, whylen, "the state dir's file system cannot clone files (reflink) and "
			 "the replica is %llu MiB: copying it would stall replication (at most %llu "
			 "MiB); put the state dir on XFS or btrfs", (unsigned long long)(total >> 20),
			 (unsigned long long)(max_copy >> 20));
		return -EFBIG;
	}
	for (i = 0; i < n; i++) {
		snprintf(to, sizeof(to), "%s/%s", dir, names[i]);
		if ((rc = replica_copy_file(from[i], to))) {
			snprintf(why, whylen, "cannot copy %s: %s", from[i], strerror(-rc));
			return rc;
		}
	}
	return 0;
}

int replica_recover(const char *dir, char *err, size_t errlen)
{
	char path[PATH_MAX];
	int rc = journal_recover(dir, err, errlen);

	/* An initial copy that never committed is garbage; but while a journal
	 * that promotes it cannot be replayed, it is part of the replica. */
	if (rc >= 0) {
		snprintf(path, sizeof(path), "%s/ram.sync", dir);
		unlink(path);
		for (unsigned i = 0; i < DISKFILE_MAX; i++)
			if (!diskfile_path(dir, i, true, path))
				unlink(path);
	}
	return rc;
}

int replica_load_info(const char *dir, struct replica_info *out)
{
	char path[PATH_MAX];
	struct json_object *o, *v;

	memset(out, 0, sizeof(*out));
	snprintf(path, sizeof(path), "%s/vm.json", dir);
	if (access(path, R_OK) < 0)
		return -ENOENT;
	o = json_object_from_file(path);
	if (!o)
		return -EINVAL;
	if (!json_object_object_get_ex(o, "vm", &v) || check_hello(v, path, 0)) {
		json_object_put(o);
		return -EINVAL;
	}
	if (parse_disks(v, dir, &out->disks, &out->ndisks, path, 0)) {
		json_object_put(o);
		return -EINVAL;
	}
	out->vm = json_object_get(v);
	if (json_object_object_get_ex(o, "epoch", &v))
		out->epoch = json_object_get_uint64(v);
	if (json_object_object_get_ex(o, "committed_at", &v))
		out->committed_at = strdup(json_object_get_string(v));
	if (json_object_object_get_ex(o, "host_boot_id", &v))
		out->host_boot_id = strdup(json_object_get_string(v));
	json_object_put(o);
	return 0;
}

int replica_check_host_restart(const char *dir, char *err, size_t errlen)
{
	struct replica_info info;
	char boot[64];
	int rc = replica_load_info(dir, &info);

	if (rc)
		return 0;  /* no replica: the restore itself says so */
	host_boot_id(boot, sizeof(boot));
	if (info.host_boot_id && *info.host_boot_id && *boot && strcmp(info.host_boot_id, boot)) {
		snprintf(err, errlen, "the replica in %s (epoch %llu, committed %s) was written "
			 "before this host last started: its RAM image and journal are not synced "
			 "to disk at each commit (its disks are), so after a crash or power loss "
			 "they may be older than its disks, and the restored VM could corrupt its "
			 "file systems. If the host went down cleanly (a shutdown flushes them), "
			 "add --after-host-restart", dir, (unsigned long long)info.epoch,
			 info.committed_at ? info.committed_at : "?");
		rc = -ESTALE;
	}
	replica_info_free(&info);
	return rc;
}

void replica_info_free(struct replica_info *info)
{
	json_object_put(info->vm);
	free(info->committed_at);
	free(info->host_boot_id);
	free_disks(info->disks, info->ndisks);
	memset(info, 0, sizeof(*info));
}
