/* A shared disk's image header, read before a restore (shared_image.h).
 * The qcow2 header fields used are those of QEMU's docs/interop/qcow2.txt,
 * all big-endian: magic (0), version (4), backing_file_offset (8),
 * backing_file_size (16), and from version 3 incompatible_features (72),
 * whose bit 2 says the guest's data lives in an external data file named
 * by a header extension. */
#include "shared_image.h"

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define QCOW2_MAGIC             0x514649fbu /* "QFI\xfb" */
#define QCOW2_V3_HEADER_MIN     104
#define QCOW2_INCOMPAT_DATA_FILE (1ull << 2)
#define QCOW2_BACKING_NAME_MAX  1023        /* as QEMU's qcow2 driver */

static int refuse(char *err, size_t errlen, int rc, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static int refuse(char *err, size_t errlen, int rc, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return rc;
}

static uint32_t be32_at(const uint8_t *p)
{
	uint32_t v;

	memcpy(&v, p, sizeof(v));
	return be32toh(v);
}

static uint64_t be64_at(const uint8_t *p)
{
	uint64_t v;

	memcpy(&v, p, sizeof(v));
	return be64toh(v);
}

/* Whether the file at `path` is one of the shared disks, compared as the
 * files they resolve to (a link, "..", a second slash). */
static bool is_shared_file(const char *path, const char *const *shared, int nshared)
{
	char want[PATH_MAX], real[PATH_MAX];

	if (!realpath(path, want))
		return false;
	for (int i = 0; i < nshared; i++)
		if (realpath(shared[i], real) && !strcmp(want, real))
			return true;
	return false;
}

/* The backing file a qcow2 image at `image` names, where QEMU would look
 * for it: an absolute name as it is, a relative one in the image's
 * directory. A name with a ':' is refused before: QEMU reads it as a
 * protocol ("nbd:", "json:{...}"), not a file. */
static void backing_path(const char *image, const char *name, char *out, size_t outlen)
{
	const char *slash = strrchr(image, '/');

	if (name[0] == '/' || !slash)
		snprintf(out, outlen, "%s", name);
	else
		snprintf(out, outlen, "%.*s/%s", (int)(slash - image), image, name);
}

static int check_backing(int fd, const char *path, const uint8_t *hdr, const char *const *shared,
			 int nshared, char *err, size_t errlen)
{
	uint64_t off = be64_at(hdr + 8);
	uint32_t len = be32_at(hdr + 16);
	char name[QCOW2_BACKING_NAME_MAX + 1], where[PATH_MAX];

	if (!off)
		return 0;
	if (!len || len > QCOW2_BACKING_NAME_MAX || off > (uint64_t)INT64_MAX - len)
		return refuse(err, errlen, -EINVAL, "its qcow2 header's backing file name "
			      "(%u bytes at %llu) is malformed", len, (unsigned long long)off);
	if (pread(fd, name, len, (off_t)off) != (ssize_t)len)
		return refuse(err, errlen, -EINVAL, "its qcow2 header's backing file name "
			      "cannot be read (%u bytes at %llu)", len, (unsigned long long)off);
	name[len] = 0;
	if (strlen(name) != len || strchr(name, ':'))
		return refuse(err, errlen, -EINVAL, "its qcow2 header names the backing '%.200s', "
			      "which is not a plain file name (QEMU would read it as a protocol)",
			      name);
	backing_path(path, name, where, sizeof(where));
	if (!is_shared_file(where, shared, nshared))
		return refuse(err, errlen, -EINVAL, "its qcow2 header names the backing file "
			      "'%.200s'%s%.200s%s, which is not a shared disk of this agent "
			      "(--shared-disk)", name, name[0] == '/' ? "" : " (",
			      name[0] == '/' ? "" : where, name[0] == '/' ? "" : ")");
	return 0;
}

int shared_image_check(const char *path, const char *const *shared, int nshared, char *err,
		       size_t errlen)
{
	uint8_t hdr[QCOW2_V3_HEADER_MIN];
	ssize_t n;
	uint32_t version;
	int fd = open(path, O_RDONLY | O_CLOEXEC), rc;

	if (fd < 0)
		return refuse(err, errlen, -errno, "cannot open it: %s", strerror(errno));
	n = pread(fd, hdr, sizeof(hdr), 0);
	if (n < 0) {
		rc = refuse(err, errlen, -errno, "cannot read it: %s", strerror(errno));
		goto out;
	}
	/* Shorter than a header, or another magic: QEMU opens it as raw or
	 * not at all. */
	rc = 0;
	if (n < 72 || be32_at(hdr) != QCOW2_MAGIC)
		goto out;
	version = be32_at(hdr + 4);
	if (version >= 3 && (n < QCOW2_V3_HEADER_MIN ||
			     (be64_at(hdr + 72) & QCOW2_INCOMPAT_DATA_FILE))) {
		rc = refuse(err, errlen, -EINVAL, "its qcow2 header %s",
			    n < QCOW2_V3_HEADER_MIN ? "is cut short" :
			    "names an external data file, a host file of its own choosing");
		goto out;
	}
	rc = check_backing(fd, path, hdr, shared, nshared, err, errlen);
out:
	close(fd);
	return rc;
}
