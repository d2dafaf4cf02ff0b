#include "journal.h"

#include "crc32c.h"
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

#define JOURNAL_MAGIC   0x314a4d52u /* "RMJ1" little-endian */
#define FLAG_PROMOTE    1u

/* On-disk header, host byte order: the journal never leaves this host. */
struct journal_hdr {
	uint32_t magic;
	uint32_t flags;
	uint64_t epoch;
	uint64_t npages;
	uint64_t devstate_len;
	uint64_t vm_json_len;
};

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

/* DIR/NAME.tmp written whole, then renamed over DIR/NAME: readers see the
 * old file or the new one, never a part. */
static int write_iov_atomic(const char *dir, const char *name, struct iovec *iov, int n)
{
	char tmp[PATH_MAX + 8], path[PATH_MAX];
	int fd, rc = path_in(dir, name, path);

	if (rc)
		return rc;
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	rc = write_all(fd, iov, n);
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

	return write_iov_atomic(dir, name, &iov, 1);
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
	};
	struct iovec iov[6] = {
		{ &h, sizeof(h) },
		{ (void *)j->idx, j->npages * sizeof(uint64_t) },
		{ (void *)j->pages, j->npages * PROTO_PAGE_SIZE },
		{ (void *)j->devstate, j->devstate_len },
		{ (void *)j->vm_json, j->vm_json_len },
	};
	uint32_t crc = 0;

	for (int i = 0; i < 5; i++)
		crc = crc32c(crc, iov[i].iov_base, iov[i].iov_len);
	iov[5] = (struct iovec){ &crc, sizeof(crc) };
	/* The rename inside is the commit point. */
	return write_iov_atomic(dir, "journal", iov, 6);
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
	*ram = mmap(NULL, *size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (*ram == MAP_FAILED)
		rc = -errno;
out:
	close(fd);
	return rc;
}

int journal_apply(const char *dir, const struct journal_view *j, uint8_t *ram, uint64_t ram_size)
{
	char from[PATH_MAX], to[PATH_MAX], path[PATH_MAX];
	uint8_t *mapped = NULL;
	int rc = 0;

	if (!ram) {
		rc = map_target(dir, j, &mapped, &ram_size);
		if (rc)
			return rc;
		ram = mapped;
	}
	for (uint64_t i = 0; i < j->npages; i++) {
		if ((j->idx[i] + 1) * PROTO_PAGE_SIZE > ram_size) {
			rc = -ERANGE;
			goto out;
		}
		memcpy(ram + j->idx[i] * PROTO_PAGE_SIZE, j->pages + i * PROTO_PAGE_SIZE,
		       PROTO_PAGE_SIZE);
	}
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
	if ((rc = write_file_atomic(dir, "vm.json", j->vm_json, j->vm_json_len)))
		goto out;
	if (!(rc = path_in(dir, "journal", path)) && unlink(path) < 0)
		rc = -errno;
out:
	if (mapped)
		munmap(mapped, ram_size);
	return rc;
}

/* Parse a journal file image into a view of it; -EBADMSG if torn. */
static int parse(const uint8_t *buf, size_t len, struct journal_view *j)
{
	struct journal_hdr h;
	uint64_t body;
	uint32_t crc;

	if (len < sizeof(h) + sizeof(crc))
		return -EBADMSG;
	memcpy(&h, buf, sizeof(h));
	memcpy(&crc, buf + len - sizeof(crc), sizeof(crc));
	if (h.magic != JOURNAL_MAGIC || h.npages > len / PROTO_PAGE_SIZE ||
	    h.devstate_len > len || h.vm_json_len > len)
		return -EBADMSG;
	body = sizeof(h) + h.npages * (sizeof(uint64_t) + PROTO_PAGE_SIZE) + h.devstate_len +
	       h.vm_json_len;
	if (body + sizeof(crc) != len || crc32c(0, buf, body) != crc)
		return -EBADMSG;
	*j = (struct journal_view){
		.epoch = h.epoch,
		.promote = h.flags & FLAG_PROMOTE,
		.npages = h.npages,
		.idx = (const uint64_t *)(buf + sizeof(h)),
		.pages = buf + sizeof(h) + h.npages * sizeof(uint64_t),
		.devstate = buf + sizeof(h) + h.npages * (sizeof(uint64_t) + PROTO_PAGE_SIZE),
		.devstate_len = h.devstate_len,
		.vm_json = (const char *)buf + body - h.vm_json_len,
		.vm_json_len = h.vm_json_len,
	};
	return 0;
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
