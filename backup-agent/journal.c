#include "journal.h"

#include "crc32c.h"
#include "diskfile.h"
#include "proto.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

/* Version 2 adds the disk ops; a version 1 journal (no disks), left by an
 * older agent, is still replayed. */
#define JOURNAL_MAGIC_V1 0x314a4d52u /* "RMJ1" little-endian */
#define JOURNAL_MAGIC    0x324a4d52u /* "RMJ2" */
#define HDR_V1_SIZE      40
#define FLAG_PROMOTE     1u

/* On-disk header, host byte order: the journal never leaves this host.
 * Then: idx[npages], disk ops[ndisk_ops], pages, disk data, device state,
 * vm.json, and the CRC32C of all that (u32). */
struct journal_hdr {
	uint32_t magic;
	uint32_t flags;
	uint64_t epoch;
	uint64_t npages;
	uint64_t devstate_len;
	uint64_t vm_json_len;
	/* version 2 */
	uint64_t ndisk_ops;
	uint64_t disk_data_len;
	uint32_t ndisks;
	uint32_t reserved;
};
_Static_assert(sizeof(struct journal_disk_op) == 24, "journal disk op is 24 bytes");
_Static_assert(sizeof(struct journal_hdr) % 8 == 0, "the arrays after the header stay aligned");

static int path_in(const char *dir, const char *name, char *out)
{
	int n = snprintf(out, PATH_MAX, "%s/%s", dir, name);
	return n < 0 || n >= PATH_MAX ? -ENAMETOOLONG : 0;
}

static int write_all(int fd, struct iovec *iov, int n)
{
	while (n > 0) {
		ssize_t w = writev(fd, iov, n > IOV_MAX ? IOV_MAX : n);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		while (n > 0 && (size_t)w >= iov->iov_len) {
			w -= (ssize_t)iov->iov_len;
			iov++;
			n--;
		}
		if (n > 0) {
			iov->iov_base = (char *)iov->iov_base + w;
			iov->iov_len -= (size_t)w;
		}
	}
	return 0;
}

static void pulse(const struct journal_view *j)
{
	if (j && j->pulse)
		j->pulse(j->pulse_ctx);
}

/* write_all in pieces of JOURNAL_PULSE_BYTES, pulsing after each (j's). */
static int write_all_pulsing(int fd, const struct iovec *iov, int n, const struct journal_view *j)
{
	for (int i = 0; i < n; i++)
		for (size_t off = 0; off < iov[i].iov_len; off += JOURNAL_PULSE_BYTES) {
			size_t len = iov[i].iov_len - off;
			struct iovec piece = { (char *)iov[i].iov_base + off,
					       len < JOURNAL_PULSE_BYTES ? len : JOURNAL_PULSE_BYTES };
			int rc = write_all(fd, &piece, 1);

			if (rc)
				return rc;
			pulse(j);
		}
	return 0;
}

/* DIR/NAME.tmp written whole, then renamed over DIR/NAME: readers see the
 * old file or the new one, never a part. j: whose pulse to call, or NULL. */
static int write_iov_atomic(const char *dir, const char *name, struct iovec *iov, int n,
			    const struct journal_view *j)
{
	char tmp[PATH_MAX + 8], path[PATH_MAX];
	int fd, rc = path_in(dir, name, path);

	if (rc)
		return rc;
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	rc = j && j->pulse ? write_all_pulsing(fd, iov, n, j) : write_all(fd, iov, n);
	if (close(fd) < 0 && !rc)
		rc = -errno;
	if (!rc && rename(tmp, path) < 0)
		rc = -errno;
	if (rc)
		unlink(tmp);
	return rc;
}

static int write_file_atomic(const char *dir, const char *name, const void *buf, size_t len)
{
	struct iovec iov = { (void *)buf, len };

	return write_iov_atomic(dir, name, &iov, 1, NULL);
}

int journal_write(const char *dir, const struct journal_view *j)
{
	struct journal_hdr h = {
		.magic = JOURNAL_MAGIC,
		.flags = j->promote ? FLAG_PROMOTE : 0,
		.epoch = j->epoch,
		.npages = j->npages,
		.devstate_len = j->devstate_len,
		.vm_json_len = j->vm_json_len,
		.ndisk_ops = j->ndisk_ops,
		.disk_data_len = j->disk_data_len,
		.ndisks = j->ndisks,
	};
	struct iovec iov[8] = {
		{ &h, sizeof(h) },
		{ (void *)j->idx, j->npages * sizeof(uint64_t) },
		{ (void *)j->disk_ops, j->ndisk_ops * sizeof(struct journal_disk_op) },
		{ (void *)j->pages, j->npages * PROTO_PAGE_SIZE },
		{ (void *)j->disk_data, j->disk_data_len },
		{ (void *)j->devstate, j->devstate_len },
		{ (void *)j->vm_json, j->vm_json_len },
	};
	uint32_t crc = 0;
	uint64_t since_pulse = 0;

	if (j->ndisks > DISKFILE_MAX)
		return -EINVAL;
	for (int i = 0; i < 7; i++)
		for (size_t off = 0; off < iov[i].iov_len; off += JOURNAL_PULSE_BYTES) {
			size_t len = iov[i].iov_len - off;

			if (len > JOURNAL_PULSE_BYTES)
				len = JOURNAL_PULSE_BYTES;
			crc = crc32c(crc, (const uint8_t *)iov[i].iov_base + off, len);
			if ((since_pulse += len) >= JOURNAL_PULSE_BYTES) {
				since_pulse = 0;
				pulse(j);
			}
		}
	iov[7] = (struct iovec){ &crc, sizeof(crc) };
	/* The rename inside is the commit point. */
	return write_iov_atomic(dir, "journal", iov, 8, j);
}

static bool exists(const char *dir, const char *name)
{
	char path[PATH_MAX];

	return !path_in(dir, name, path) && access(path, F_OK) == 0;
}

/* Map the file the pages go to: ram.sync while it is still to be promoted
 * (if the crash came after the promotion, ram already is that file). */
static int map_target(const char *dir, const struct journal_view *j, uint8_t **ram, uint64_t *size)
{
	const char *name = j->promote && exists(dir, "ram.sync") ? "ram.sync" : "ram";
	char path[PATH_MAX];
	struct stat st;
	void *map;
	int fd, rc = path_in(dir, name, path);

	if (rc)
		return rc;
	fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0 || st.st_size <= 0) {
		rc = -EINVAL;
		goto out;
	}
	*size = (uint64_t)st.st_size;
	map = mmap(NULL, *size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (map == MAP_FAILED)
		rc = -errno;
	else
		*ram = map;
out:
	close(fd);
	return rc;
}

/* The disk files an apply has open; fd -1 when not (yet). */
struct disk_files {
	int fd[DISKFILE_MAX];
	uint64_t size[DISKFILE_MAX];
};

/* While promoting, the ops go to disk-N.sync if it is still there (if the
 * crash came after its promotion, disk-N.img already is that file). */
static int open_disk(const char *dir, const struct journal_view *j, unsigned d,
		     struct disk_files *f)
{
	char path[PATH_MAX];
	struct stat st;
	int rc = diskfile_path(dir, d, true, path);

	if (rc)
		return rc;
	if (!j->promote || access(path, F_OK) < 0)
		rc = diskfile_path(dir, d, false, path);
	if (rc)
		return rc;
	f->fd[d] = open(path, O_RDWR | O_CLOEXEC);
	if (f->fd[d] < 0)
		return -errno;
	if (fstat(f->fd[d], &st) < 0)
		return -errno;
	f->size[d] = (uint64_t)st.st_size;
	return 0;
}

/* Every op in order (a later write to the same bytes wins), then
 * fdatasync of each file touched: a flush the guest saw complete is on
 * the backup's disk once its epoch is acknowledged. The first commit syncs
 * every disk again, in slices: the agent synced the initial copy in the
 * .sync files before the commit point (replica.c), which makes this cheap,
 * but an agent before 2026-12-07 did not, and its journal may be replayed
 * here. */
static int apply_disks(const char *dir, const struct journal_view *j)
{
	struct disk_files f;
	const uint8_t *data = j->disk_data;
	uint64_t data_left = j->disk_data_len, since_pulse = 0;
	int rc = 0;

	for (unsigned d = 0; d < DISKFILE_MAX; d++)
		f.fd[d] = -1;
	for (uint64_t i = 0; i < j->ndisk_ops && !rc; i++) {
		const struct journal_disk_op *op = &j->disk_ops[i];
		uint64_t dlen = op->op == DISK_OP_WRITE ? op->length : 0;

		if (op->disk >= j->ndisks || dlen > data_left) {
			rc = -ERANGE;
			break;
		}
		if (f.fd[op->disk] < 0 && (rc = open_disk(dir, j, op->disk, &f)))
			break;
		rc = diskfile_apply(f.fd[op->disk], f.size[op->disk], op->op, op->offset,
				    op->length, dlen ? data : NULL);
		data += dlen;
		data_left -= dlen;
		if ((since_pulse += dlen) >= JOURNAL_PULSE_BYTES) {
			since_pulse = 0;
			pulse(j);
		}
	}
	for (unsigned d = 0; d < j->ndisks && j->promote && !rc; d++)
		if (f.fd[d] < 0)
			rc = open_disk(dir, j, d, &f);
	for (unsigned d = 0; d < DISKFILE_MAX; d++) {
		if (f.fd[d] < 0)
			continue;
		if (!rc)
			rc = diskfile_sync(f.fd[d], f.size[d], j->promote && j->pulse, j->pulse,
					   j->pulse_ctx);
		close(f.fd[d]);
		pulse(j); /* a sync to a real disk may take seconds */
	}
	return rc;
}

/* First commit: disk-N.sync becomes disk-N.img; the files of disks a
 * previous session had beyond this one's go. Each step is idempotent. */
static int promote_disks(const char *dir, const struct journal_view *j)
{
	char from[PATH_MAX], to[PATH_MAX];
	int rc;

	for (unsigned d = 0; d < DISKFILE_MAX; d++) {
		if ((rc = diskfile_path(dir, d, true, from)) || (rc = diskfile_path(dir, d, false, to)))
			return rc;
		if (d >= j->ndisks) {
			unlink(to);
			continue;
		}
		if (access(from, F_OK) == 0 && rename(from, to) < 0)
			return -errno;
	}
	return 0;
}

int journal_apply(const char *dir, const struct journal_view *j, uint8_t *ram, uint64_t ram_size)
{
	char from[PATH_MAX], to[PATH_MAX], path[PATH_MAX];
	uint8_t *mapped = NULL;
	int rc = 0;

	if (!ram) {
		/* mapped is set exactly when rc is 0; tested too, as the
		 * analyzer cannot tell that -errno is never 0. */
		rc = map_target(dir, j, &mapped, &ram_size);
		if (rc || !mapped)
			return rc ? rc : -EIO;
		ram = mapped;
	}
	for (uint64_t i = 0; i < j->npages; i++) {
		/* Not (idx + 1) * 4096 > ram_size: that wraps for a huge idx. */
		if (j->idx[i] >= ram_size / PROTO_PAGE_SIZE) {
			rc = -ERANGE;
			goto out;
		}
		memcpy(ram + j->idx[i] * PROTO_PAGE_SIZE, j->pages + i * PROTO_PAGE_SIZE,
		       PROTO_PAGE_SIZE);
		if ((i + 1) % (JOURNAL_PULSE_BYTES / PROTO_PAGE_SIZE) == 0)
			pulse(j);
	}
	if ((rc = apply_disks(dir, j)))
		goto out;
	if ((rc = write_file_atomic(dir, "devstate", j->devstate, j->devstate_len)))
		goto out;
	if (j->promote && exists(dir, "ram.sync")) {
		if ((rc = path_in(dir, "ram.sync", from)) || (rc = path_in(dir, "ram", to)))
			goto out;
		if (rename(from, to) < 0) {
			rc = -errno;
			goto out;
		}
	}
	if (j->promote && (rc = promote_disks(dir, j)))
		goto out;
	if ((rc = write_file_atomic(dir, "vm.json", j->vm_json, j->vm_json_len)))
		goto out;
	if (!(rc = path_in(dir, "journal", path)) && unlink(path) < 0)
		rc = -errno;
out:
	if (mapped)
		munmap(mapped, ram_size);
	return rc;
}

/* The WRITEs' data adds up to the disk data, and every op names a disk. */
static bool disk_ops_consistent(const struct journal_view *j)
{
	uint64_t data = 0;

	for (uint64_t i = 0; i < j->ndisk_ops; i++) {
		if (j->disk_ops[i].disk >= j->ndisks)
			return false;
		if (j->disk_ops[i].op == DISK_OP_WRITE)
			data += j->disk_ops[i].length;
		if (data > j->disk_data_len)
			return false;
	}
	return data == j->disk_data_len;
}

/* Parse a journal file image into a view of it; -EBADMSG if torn. */
static int parse(const uint8_t *buf, size_t len, struct journal_view *j)
{
	struct journal_hdr h = { 0 };
	size_t hlen = sizeof(h);
	const uint8_t *p;
	uint64_t body;
	uint32_t crc;

	if (len < HDR_V1_SIZE + sizeof(crc))
		return -EBADMSG;
	memcpy(&h, buf, HDR_V1_SIZE);
	if (h.magic == JOURNAL_MAGIC_V1)
		hlen = HDR_V1_SIZE;
	else if (h.magic != JOURNAL_MAGIC || len < sizeof(h) + sizeof(crc))
		return -EBADMSG;
	else
		memcpy(&h, buf, sizeof(h));
	memcpy(&crc, buf + len - sizeof(crc), sizeof(crc));
	if (h.npages > len / PROTO_PAGE_SIZE || h.devstate_len > len || h.vm_json_len > len ||
	    h.ndisk_ops > len / sizeof(struct journal_disk_op) || h.disk_data_len > len ||
	    h.ndisks > DISKFILE_MAX)
		return -EBADMSG;
	body = hlen + h.npages * (sizeof(uint64_t) + PROTO_PAGE_SIZE) +
	       h.ndisk_ops * sizeof(struct journal_disk_op) + h.disk_data_len + h.devstate_len +
	       h.vm_json_len;
	if (body + sizeof(crc) != len || crc32c(0, buf, body) != crc)
		return -EBADMSG;
	p = buf + hlen;
	*j = (struct journal_view){
		.epoch = h.epoch,
		.promote = h.flags & FLAG_PROMOTE,
		.npages = h.npages,
		.ndisks = h.ndisks,
		.ndisk_ops = h.ndisk_ops,
		.disk_data_len = h.disk_data_len,
		.devstate_len = h.devstate_len,
		.vm_json_len = h.vm_json_len,
	};
	j->idx = (const uint64_t *)p;
	p += h.npages * sizeof(uint64_t);
	j->disk_ops = (const struct journal_disk_op *)p;
	p += h.ndisk_ops * sizeof(struct journal_disk_op);
	j->pages = p;
	p += h.npages * PROTO_PAGE_SIZE;
	j->disk_data = p;
	p += h.disk_data_len;
	j->devstate = p;
	j->vm_json = (const char *)p + h.devstate_len;
	return disk_ops_consistent(j) ? 0 : -EBADMSG;
}

static void remove_leftover(const char *dir, const char *name)
{
	char path[PATH_MAX];

	if (!path_in(dir, name, path))
		unlink(path);
}

int journal_recover(const char *dir, char *err, size_t errlen)
{
	char path[PATH_MAX];
	struct journal_view j;
	struct stat st;
	uint8_t *buf = MAP_FAILED;
	int fd, rc;

	/* Written but never committed: as if it never was. */
	remove_leftover(dir, "journal.tmp");
	if ((rc = path_in(dir, "journal", path)))
		return rc;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		if (errno != ENOENT) {
			snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
			return -errno;
		}
		return 0;
	}
	if (fstat(fd, &st) == 0 && st.st_size > 0)
		buf = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
	close(fd);
	if (buf == MAP_FAILED) {
		snprintf(err, errlen, "cannot read %s", path);
		return -EIO;
	}
	rc = parse(buf, (size_t)st.st_size, &j);
	if (rc)
		snprintf(err, errlen, "%s is damaged (checksum or size); the replica is "
			 "inconsistent and must not be restored", path);
	else if ((rc = journal_apply(dir, &j, NULL, 0)))
		snprintf(err, errlen, "replaying %s (epoch %llu) failed: %s", path,
			 (unsigned long long)j.epoch, strerror(-rc));
	munmap(buf, (size_t)st.st_size);
	return rc ? rc : 1;
}
