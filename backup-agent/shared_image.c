/* A shared disk's image header, read before a restore (shared_image.h).
 * The qcow2 header fields used are those of QEMU's docs/interop/qcow2.txt,
 * all big-endian: magic (0), version (4), backing_file_offset (8),
 * backing_file_size (16), and from version 3
 * incompatible_features (72), whose bit 2 says the guest's data lives in
 * an external data file named by a header extension, and header_length
 * (100), where the header extensions start (72 in version 2): type, length,
 * data padded to 8 bytes, up to an end marker or the backing file's name
 * (qcow2_read_extensions). */
#include "shared_image.h"
#include "text.h"

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define QCOW2_MAGIC             0x514649fbu /* "QFI\xfb" */
#define QCOW2_EXT_END           0
#define QCOW2_EXT_BACKING_FMT   0xe2792acau
#define QCOW2_EXT_MAX           64          /* more is no image QEMU made */
#define QCOW2_FMT_MAX           32
#define QCOW2_V3_HEADER_MIN     104
#define QCOW2_INCOMPAT_DATA_FILE (1ull << 2)
#define QCOW2_BACKING_NAME_MAX  1023        /* as QEMU's qcow2 driver */

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

/* Whether `path`, as QEMU will open it, is one of the shared disks as
 * the operator wrote it: the very string, not the file it resolves to.
 * QEMU resolves the backing's own backing name from this path's
 * directory, and each shared disk is checked from its listed path; a
 * name that reached the same file another way (a link on the shared
 * storage, "..") could lead that next step elsewhere. */
static bool is_shared_file(const char *path, const char *const *shared, int nshared)
{
	for (int i = 0; i < nshared; i++)
		if (!strcmp(path, shared[i]))
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

/* The backing file's format, as the header extension gives it ("" if
 * none: QEMU would probe the backing file, which a guest may have
 * written to look like anything). -EINVAL if the extensions are not
 * readable as QEMU reads them. */
static int backing_format(int fd, const uint8_t *hdr, uint64_t end, char *fmt, size_t fmtlen)
{
	uint64_t off = be32_at(hdr + 4) >= 3 ? be32_at(hdr + 100) : 72;
	uint8_t ext[8];

	fmt[0] = 0;
	for (int n = 0; off + sizeof(ext) <= end; n++) {
		uint32_t type, len;

		/* QEMU reads on to the end, and the last backing format wins:
		 * more extensions than an image has, or a second format, are
		 * refused rather than read. */
		if (n == QCOW2_EXT_MAX ||
		    pread(fd, ext, sizeof(ext), (off_t)off) != (ssize_t)sizeof(ext))
			return -EINVAL;
		type = be32_at(ext);
		len = be32_at(ext + 4);
		if (type == QCOW2_EXT_END)
			return 0;
		if (len > end - off - sizeof(ext))
			return -EINVAL;
		if (type == QCOW2_EXT_BACKING_FMT) {
			if (fmt[0] || !len || len >= fmtlen ||
			    pread(fd, fmt, len, (off_t)(off + sizeof(ext))) != (ssize_t)len)
				return -EINVAL;
			fmt[len] = 0;
		}
		off += sizeof(ext) + (((uint64_t)len + 7) & ~7ull);
	}
	return 0;
}

static int check_backing(int fd, const char *path, const uint8_t *hdr, const char *const *shared,
			 int nshared, char *err, size_t errlen)
{
	uint64_t off = be64_at(hdr + 8);
	uint32_t len = be32_at(hdr + 16);
	char name[QCOW2_BACKING_NAME_MAX + 1], where[PATH_MAX], fmt[QCOW2_FMT_MAX];

	if (!off)
		return 0;
	if (!len || len > QCOW2_BACKING_NAME_MAX || off > (uint64_t)INT64_MAX - len)
		return text_error(err, errlen, -EINVAL, "its qcow2 header's backing file "
				  "name (%u bytes at %llu) is malformed", len,
				  (unsigned long long)off);
	if (pread(fd, name, len, (off_t)off) != (ssize_t)len)
		return text_error(err, errlen, -EINVAL, "its qcow2 header's backing file "
				  "name cannot be read (%u bytes at %llu)", len,
				  (unsigned long long)off);
	name[len] = 0;
	if (strlen(name) != len || strchr(name, ':'))
		return text_error(err, errlen, -EINVAL, "its qcow2 header names the backing "
				  "'%.200s', which is not a plain file name (QEMU would read "
				  "it as a protocol)", name);
	backing_path(path, name, where, sizeof(where));
	if (!is_shared_file(where, shared, nshared))
		return text_error(err, errlen, -EINVAL, "its qcow2 header names the backing "
				  "file '%.200s'%s%.200s%s, which is not a shared disk of this "
				  "agent (--shared-disk)", name, name[0] == '/' ? "" : " (",
				  name[0] == '/' ? "" : where, name[0] == '/' ? "" : ")");
	/* The backing file is a shared disk, checked on its own; but read as
	 * another format (vmdk, say, whose descriptor names more files) it
	 * would be another image. */
	if (backing_format(fd, hdr, off, fmt, sizeof(fmt)))
		return text_error(err, errlen, -EINVAL,
				  "its qcow2 header extensions are malformed");
	if (strcmp(fmt, "raw") && strcmp(fmt, "qcow2"))
		return text_error(err, errlen, -EINVAL, "its qcow2 header %s%.40s%s for the "
				  "backing file '%.200s'; only raw or qcow2 (qemu-img rebase "
				  "-u -F raw|qcow2)", fmt[0] ? "gives the format '" :
				  "gives no format", fmt,
				  fmt[0] ? "'" : " (QEMU would probe it)", name);
	return 0;
}

int shared_image_check(const char *path, const char *const *shared, int nshared, char *err,
		       size_t errlen)
{
	uint8_t hdr[QCOW2_V3_HEADER_MIN] = { 0 };
	ssize_t n;
	uint32_t version;
	int fd = open(path, O_RDONLY | O_CLOEXEC), rc;

	if (fd < 0)
		return text_error(err, errlen, -errno, "cannot open it: %s", strerror(errno));
	n = pread(fd, hdr, sizeof(hdr), 0);
	if (n < 0) {
		rc = text_error(err, errlen, -errno, "cannot read it: %s", strerror(errno));
		goto out;
	}
	/* Another magic: QEMU opens it as raw or not at all. A short file
	 * reads as zeroes past its end, as QEMU reads it. */
	rc = 0;
	if (n < 4 || be32_at(hdr) != QCOW2_MAGIC)
		goto out;
	version = be32_at(hdr + 4);
	if (version >= 3 && (n < QCOW2_V3_HEADER_MIN ||
			     (be64_at(hdr + 72) & QCOW2_INCOMPAT_DATA_FILE))) {
		rc = text_error(err, errlen, -EINVAL, "its qcow2 header %s",
				n < QCOW2_V3_HEADER_MIN ? "is cut short" :
				"names an external data file, a host file of its own choosing");
		goto out;
	}
	rc = check_backing(fd, path, hdr, shared, nshared, err, errlen);
out:
	close(fd);
	return rc;
}
