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

/* A -blockdev node, as far as what reads a shared file's bytes goes. */
struct bnode {
	struct qemu_opts o;  /* its options, parsed */
	const char *name;    /* node-name (in o), or NULL */
	const char *driver;  /* in o */
	int shared;          /* a protocol node's shared file, or -1 */
};

#define BNODE_DEPTH 16 /* as the block graph planner */

static bool is_protocol(const char *driver)
{
	return driver && (!strcmp(driver, "file") || !strcmp(driver, "host_device"));
}

static bool is_raw(const char *driver)
{
	return driver && !strcmp(driver, "raw");
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

/* Every -blockdev, parsed. -EINVAL for one that does not parse (the
 * allowlist has refused it before: cannot be), -ENOMEM. */
static int parse_bnodes(char *const *argv, int argc, const char *const *shared, int nshared,
			struct bnode **out, int *nout)
{
	struct qemu_argv_iter it;

	qemu_argv_iter_init(&it, argv, argc);
	while (qemu_argv_next(&it) == 1) {
		struct bnode *n, *b;

		if (!qemu_argv_is(&it, "blockdev"))
			continue;
		n = realloc(*out, (size_t)(*nout + 1) * sizeof(**out));
		if (!n)
			return -ENOMEM;
		*out = n;
		b = &n[*nout];
		*b = (struct bnode){ .shared = -1 };
		if (block_graph_parse(it.arg, &b->o))
			return -EINVAL;
		(*nout)++;
		b->name = qemu_opts_get(&b->o, "node-name");
		b->driver = block_graph_driver(&b->o);
		if (is_protocol(b->driver))
			b->shared = shared_index(qemu_opts_get(&b->o, "filename"), shared, nshared);
	}
	return 0;
}

static const struct bnode *find_bnode(const struct bnode *nodes, int n, const char *name)
{
	for (int i = 0; name && i < n; i++)
		if (nodes[i].name && !strcmp(nodes[i].name, name))
			return &nodes[i];
	return NULL;
}

/* Whose bytes a format node reads as its image, by the node its `file`
 * names: a shared file's from byte 0 (its index), none of them (-1), or
 * a shared file's some other way (-EINVAL): through a raw node with an
 * offset or a size, where the header QEMU reads is not at byte 0, or
 * through another format node, where it is that node's guest data. */
static int header_source(const struct bnode *nodes, int n, const char *name, int depth)
{
	const struct bnode *b = find_bnode(nodes, n, name);
	int below;

	if (!b || depth > BNODE_DEPTH)
		return b ? -EINVAL : -1;
	if (is_protocol(b->driver))
		return b->shared;
	below = header_source(nodes, n, qemu_opts_get(&b->o, "file"), depth + 1);
	if (below == -1)
		return -1;
	if (is_raw(b->driver) && !qemu_opts_get(&b->o, "offset") && !qemu_opts_get(&b->o, "size"))
		return below;
	return -EINVAL;
}

/* A format node other than raw (qcow2: the allowlist takes no other)
 * parses the header of the image its `file` reads. Inline children
 * ("file.filename", refused by the allowlist) count as read as qcow2. */
static int blockdev_formats(const struct bnode *nodes, int n, const struct bnode *b,
			    const char *const *shared, int nshared, bool *as_qcow2, char *err,
			    size_t errlen)
{
	int i;

	if (is_protocol(b->driver) || is_raw(b->driver))
		return 0;
	for (size_t k = 0; k < b->o.n; k++) {
		const char *key = b->o.v[k].key;

		i = key && strcmp(key, "filename") && strstr(key, "filename") ?
		    shared_index(b->o.v[k].value, shared, nshared) : -1;
		if (i >= 0)
			as_qcow2[i] = true;
	}
	i = header_source(nodes, n, qemu_opts_get(&b->o, "file"), 0);
	if (i == -EINVAL)
		return text_error(err, errlen, -EINVAL, "block node '%s' (%s) reads a shared "
				  "disk's image through another format node or a raw node "
				  "with an offset or size: its header would not be the one "
				  "checked; give the %s node the disk's file node",
				  b->name ? b->name : "?", b->driver ? b->driver : "?",
				  b->driver ? b->driver : "format");
	if (i >= 0)
		as_qcow2[i] = true;
	return 0;
}

int shared_image_formats(char *const *argv, int argc, const char *const *shared, int nshared,
			 bool *as_qcow2, char *err, size_t errlen)
{
	struct bnode *nodes = NULL;
	struct qemu_argv_iter it;
	int nnodes = 0, rc;

	for (int i = 0; i < nshared; i++)
		as_qcow2[i] = false;
	rc = parse_bnodes(argv, argc, shared, nshared, &nodes, &nnodes);
	if (rc)
		text_error(err, errlen, rc, rc == -ENOMEM ? "no memory to read the block nodes" :
			   "a -blockdev does not parse");
	for (int j = 0; !rc && j < nnodes; j++)
		rc = blockdev_formats(nodes, nnodes, &nodes[j], shared, nshared, as_qcow2, err,
				      errlen);
	qemu_argv_iter_init(&it, argv, argc);
	while (!rc && qemu_argv_next(&it) == 1)
		if (qemu_argv_is(&it, "drive"))
			drive_formats(it.arg, shared, nshared, as_qcow2);
	for (int j = 0; j < nnodes; j++)
		qemu_opts_free(&nodes[j].o);
	free(nodes);
	if (rc)
		mark_all(as_qcow2, nshared);
	return rc;
}

int shared_images_check_argv(char *const *argv, const char *const *shared, int nshared,
			     char *err, size_t errlen)
{
	bool *as_qcow2 = calloc((size_t)nshared + 1, sizeof(bool));
	int argc = 0, rc;

	if (!as_qcow2)
		return text_error(err, errlen, -ENOMEM, "no memory to check the shared disks");
	while (argv[argc])
		argc++;
	rc = shared_image_formats(argv, argc, shared, nshared, as_qcow2, err, errlen) ?:
	     shared_images_check(shared, as_qcow2, nshared, err, errlen);
	free(as_qcow2);
	return rc;
}
