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
#include "block_graph.h"
#include "qemu_argv.h"
#include "qemu_opts.h"
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

/* Which of the shared disks `path`, as QEMU will open it, is (-1: none),
 * as the operator wrote it: the very string, not the file it resolves to.
 * QEMU resolves the backing's own backing name from this path's
 * directory, and each shared disk is checked from its listed path; a
 * name that reached the same file another way (a link on the shared
 * storage, "..") could lead that next step elsewhere. */
static int shared_index(const char *path, const char *const *shared, int nshared)
{
	for (int i = 0; path && i < nshared; i++)
		if (!strcmp(path, shared[i]))
			return i;
	return -1;
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
			 int nshared, struct shared_image_backing *b, char *err, size_t errlen)
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
	b->index = shared_index(where, shared, nshared);
	if (b->index < 0)
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
	b->qcow2 = !strcmp(fmt, "qcow2");
	return 0;
}

int shared_image_check(const char *path, const char *const *shared, int nshared,
		       struct shared_image_backing *backing, char *err, size_t errlen)
{
	struct shared_image_backing unused;
	uint8_t hdr[QCOW2_V3_HEADER_MIN] = { 0 };
	ssize_t n;
	uint32_t version;
	int fd = open(path, O_RDONLY | O_CLOEXEC), rc;

	if (!backing)
		backing = &unused;
	*backing = (struct shared_image_backing){ .index = -1 };
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
	rc = check_backing(fd, path, hdr, shared, nshared, backing, err, errlen);
	if (rc)
		backing->index = -1;
out:
	close(fd);
	return rc;
}

int shared_images_check(const char *const *shared, const bool *as_qcow2, int nshared,
			char *err, size_t errlen)
{
	bool *queued = calloc((size_t)nshared + 1, sizeof(bool));
	int *todo = calloc((size_t)nshared + 1, sizeof(int));
	int ntodo = 0, rc = 0;

	if (!queued || !todo) {
		rc = text_error(err, errlen, -ENOMEM, "no memory to check the shared disks");
		goto out;
	}
	for (int i = 0; i < nshared; i++)
		if (as_qcow2[i]) {
			queued[i] = true;
			todo[ntodo++] = i;
		}
	/* Each image read as qcow2, then each backing file such an image
	 * names as qcow2 (QEMU reads that one's header too), once. */
	while (ntodo && !rc) {
		int i = todo[--ntodo];
		struct shared_image_backing b;
		char why[384];

		rc = shared_image_check(shared[i], shared, nshared, &b, why, sizeof(why));
		if (rc == -ENOENT)
			rc = 0; /* QEMU says so itself, and the restore fails there */
		else if (rc)
			text_error(err, errlen, rc, "shared disk %s: %s", shared[i], why);
		else if (b.index >= 0 && b.qcow2 && !queued[b.index]) {
			queued[b.index] = true;
			todo[ntodo++] = b.index;
		}
	}
out:
	free(queued);
	free(todo);
	return rc;
}

/* A -blockdev protocol node over a shared disk's file. */
struct file_node {
	char *name;
	int shared;
};

static bool is_protocol(const char *driver)
{
	return driver && (!strcmp(driver, "file") || !strcmp(driver, "host_device"));
}

static bool ends_with(const char *s, const char *suffix)
{
	size_t n = strlen(s), m = strlen(suffix);

	return n >= m && !strcmp(s + n - m, suffix);
}

static void mark_all(bool *as_qcow2, int nshared)
{
	for (int i = 0; i < nshared; i++)
		as_qcow2[i] = true;
}

/* A -drive: read as qcow2 unless format=raw (the allowlist has refused
 * one without a format). */
static void drive_formats(const char *arg, const char *const *shared, int nshared,
			  bool *as_qcow2)
{
	struct qemu_opts o = { 0 };
	const char *format;
	int i;

	if (qemu_opts_parse(arg, &o)) {
		mark_all(as_qcow2, nshared); /* checked before: cannot be */
		return;
	}
	i = shared_index(qemu_opts_get(&o, "file"), shared, nshared);
	format = qemu_opts_get(&o, "format");
	if (i >= 0 && (!format || strcmp(format, "raw")))
		as_qcow2[i] = true;
	qemu_opts_free(&o);
}

/* The protocol nodes of shared files, from every -blockdev. */
static int file_nodes(char *const *argv, int argc, const char *const *shared, int nshared,
		      struct file_node **out, int *nout)
{
	struct qemu_argv_iter it;

	qemu_argv_iter_init(&it, argv, argc);
	while (qemu_argv_next(&it) == 1) {
		struct qemu_opts o = { 0 };
		const char *name;
		int i;

		if (!qemu_argv_is(&it, "blockdev") || block_graph_parse(it.arg, &o))
			continue;
		name = qemu_opts_get(&o, "node-name");
		i = shared_index(qemu_opts_get(&o, "filename"), shared, nshared);
		if (is_protocol(block_graph_driver(&o)) && name && i >= 0) {
			struct file_node *n = realloc(*out, (size_t)(*nout + 1) * sizeof(**out));

			if (!n || !(n[*nout].name = strdup(name))) {
				*out = n ? n : *out;
				qemu_opts_free(&o);
				return -ENOMEM;
			}
			n[(*nout)++].shared = i;
			*out = n;
		}
		qemu_opts_free(&o);
	}
	return 0;
}

/* A -blockdev format node: whatever shared file it reads other than as
 * the `file` of a raw node (a qcow2 node's file or backing, or anything
 * else) counts as read as qcow2. */
static void blockdev_formats(const struct qemu_opts *o, const struct file_node *nodes, int nnodes,
			     const char *const *shared, int nshared, bool *as_qcow2)
{
	const char *driver = block_graph_driver(o);
	bool raw = driver && !strcmp(driver, "raw");

	if (is_protocol(driver))
		return;
	for (size_t k = 0; k < o->n; k++) {
		const char *key = o->v[k].key, *value = o->v[k].value;
		int i;

		if (!key || !value)
			continue;
		for (int j = 0; j < nnodes; j++)
			if (!strcmp(value, nodes[j].name) && !(raw && !strcmp(key, "file")))
				as_qcow2[nodes[j].shared] = true;
		i = ends_with(key, "filename") ? shared_index(value, shared, nshared) : -1;
		if (i >= 0 && !(raw && !strcmp(key, "file.filename")))
			as_qcow2[i] = true;
	}
}

int shared_image_formats(char *const *argv, int argc, const char *const *shared, int nshared,
			 bool *as_qcow2)
{
	struct file_node *nodes = NULL;
	struct qemu_argv_iter it;
	int nnodes = 0, rc;

	for (int i = 0; i < nshared; i++)
		as_qcow2[i] = false;
	rc = file_nodes(argv, argc, shared, nshared, &nodes, &nnodes);
	qemu_argv_iter_init(&it, argv, argc);
	while (!rc && qemu_argv_next(&it) == 1) {
		struct qemu_opts o = { 0 };

		if (qemu_argv_is(&it, "drive"))
			drive_formats(it.arg, shared, nshared, as_qcow2);
		else if (qemu_argv_is(&it, "blockdev") && block_graph_parse(it.arg, &o))
			mark_all(as_qcow2, nshared);
		else if (qemu_argv_is(&it, "blockdev"))
			blockdev_formats(&o, nodes, nnodes, shared, nshared, as_qcow2);
		qemu_opts_free(&o);
	}
	for (int j = 0; j < nnodes; j++)
		free(nodes[j].name);
	free(nodes);
	if (rc) /* no memory: every image is looked into */
		mark_all(as_qcow2, nshared);
	return rc;
}
