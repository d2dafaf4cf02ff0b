/* Check the restored QEMU's block graph before the guest runs (see
 * restore_verify.h). What QEMU 7.2 reports in query-block, seen on this
 * project's forms (-drive, -blockdev file+qcow2, libvirt's blockdev):
 * per guest-visible block device one entry, "inserted.image" the top node
 * (filename, format: the driver, so "file" or "raw" when the overlay was
 * opened wrongly, virtual-size), its "backing-image" chain below, "ro",
 * and "qdev", the device's QOM path (absent when no device uses it). A
 * node whose options a plain filename cannot tell (a backing other than
 * the header's) is named json:{...}; its image is the "file" inside.
 */
#include "restore_verify.h"

#include "log.h"
#include "qmp.h"
#include "restore.h"

#include <errno.h>
#include <json-c/json.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#define QUERY_BLOCK_TIMEOUT_MS 5000

static struct json_object *member(struct json_object *o, const char *key)
{
	struct json_object *v;

	return json_object_object_get_ex(o, key, &v) ? v : NULL;
}

/* The string member key, or NULL (absent or not a string). */
static const char *str_member(struct json_object *o, const char *key)
{
	struct json_object *v = member(o, key);

	return json_object_is_type(v, json_type_string) ? json_object_get_string(v) : NULL;
}

static bool str_is(const char *s, const char *want)
{
	return s && !strcmp(s, want);
}

static bool size_is(struct json_object *level, uint64_t want)
{
	struct json_object *size = member(level, "virtual-size");

	return json_object_is_type(size, json_type_int) &&
	       (uint64_t)json_object_get_int64(size) == want;
}

/* The level's virtual size as QEMU wrote it, for messages. */
static const char *size_text(struct json_object *level)
{
	struct json_object *size = member(level, "virtual-size");

	return size ? json_object_get_string(size) : "(none)";
}

static int fail(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int fail(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return -EINVAL;
}

/* json:{"driver":...,"file":{"driver":"file","filename":PATH},...} names
 * PATH: QEMU's name for a node whose options a plain filename cannot tell. */
static bool json_filename_names(const char *filename, const char *path)
{
	struct json_object *o;
	bool yes;

	if (!filename || strncmp(filename, "json:", 5))
		return false;
	o = json_tokener_parse(filename + 5);
	yes = str_is(str_member(member(o, "file"), "filename"), path);
	json_object_put(o);
	return yes;
}

/* Is this image level (inserted.image or a backing-image) the file path? */
static bool level_names(struct json_object *level, const char *path)
{
	const char *filename = str_member(level, "filename");

	return str_is(filename, path) || json_filename_names(filename, path);
}

/* Is this query-block entry's top image the file path? inserted.file is
 * the same node's name as QEMU reports it to -drive users: looked at too. */
static bool entry_opens(struct json_object *entry, const char *path)
{
	struct json_object *inserted = member(entry, "inserted");
	const char *file = str_member(inserted, "file");

	return level_names(member(inserted, "image"), path) || str_is(file, path) ||
	       json_filename_names(file, path);
}

/* Any level of any entry that opens an overlay with another driver than
 * qcow2 (the bug this file exists for): the guest would see the qcow2
 * header and tables as its disk, and write over them. */
static int check_overlay_formats(struct json_object *blocks, const struct verify_disk *want,
				 int n, char *err, size_t errlen)
{
	size_t nblocks = json_object_array_length(blocks);

	for (size_t e = 0; e < nblocks; e++) {
		struct json_object *level = member(member(json_object_array_get_idx(blocks, e),
							  "inserted"), "image");

		for (; level; level = member(level, "backing-image"))
			for (int i = 0; i < n; i++) {
				const char *format = str_member(level, "format");

				if (level_names(level, want[i].overlay) && !str_is(format, "qcow2"))
					return fail(err, errlen, "disk '%s': overlay %s is opened as "
						    "%s, not qcow2: the guest would read the overlay "
						    "file itself as its disk", want[i].name,
						    want[i].overlay, format ? format : "(no format)");
			}
	}
	return 0;
}

/* The one entry whose top image is the overlay, or NULL with err set. */
static struct json_object *find_entry(struct json_object *blocks, const struct verify_disk *w,
				      char *err, size_t errlen)
{
	size_t nblocks = json_object_array_length(blocks);
	struct json_object *found = NULL;
	int count = 0;

	for (size_t e = 0; e < nblocks; e++) {
		struct json_object *entry = json_object_array_get_idx(blocks, e);

		if (entry_opens(entry, w->overlay)) {
			found = entry;
			count++;
		}
	}
	if (count == 1)
		return found;
	if (count == 0)
		fail(err, errlen, "disk '%s': no block device of the restored QEMU opens its "
		     "overlay %s (disk missing)", w->name, w->overlay);
	else
		fail(err, errlen, "disk '%s': its overlay %s is opened by %d block devices, "
		     "not one", w->name, w->overlay, count);
	return NULL;
}

/* The overlay's own node: writable, qcow2, the primary's size. */
static int check_image(struct json_object *inserted, const struct verify_disk *w, char *err,
		       size_t errlen)
{
	struct json_object *image = member(inserted, "image");
	const char *format = str_member(image, "format");

	if (!str_is(format, "qcow2"))
		return fail(err, errlen, "disk '%s': overlay %s is opened as %s, not qcow2",
			    w->name, w->overlay, format ? format : "(no format)");
	if (json_object_get_boolean(member(inserted, "ro")))
		return fail(err, errlen, "disk '%s': overlay %s is opened read-only", w->name,
			    w->overlay);
	if (!size_is(image, w->size))
		return fail(err, errlen, "disk '%s': overlay %s has virtual size %s bytes, the "
			    "primary's disk has %llu", w->name, w->overlay,
			    size_text(image),
			    (unsigned long long)w->size);
	return 0;
}

/* Below the overlay: its replica, raw, whole. The size also rules out a
 * window on it (a raw node's offset/size options, shown in a json: name):
 * the replica file is exactly the disk's size, and QEMU refuses a window
 * that runs past its end. */
static int check_backing(struct json_object *inserted, const struct verify_disk *w, char *err,
			 size_t errlen)
{
	struct json_object *backing = member(member(inserted, "image"), "backing-image");
	const char *filename = str_member(backing, "filename"), *format = str_member(backing, "format");

	if (!backing)
		return fail(err, errlen, "disk '%s': overlay %s has no backing image; its replica "
			    "%s is not under it", w->name, w->overlay, w->replica);
	if (!level_names(backing, w->replica))
		return fail(err, errlen, "disk '%s': overlay %s is backed by %s, not by its "
			    "replica %s", w->name, w->overlay, filename ? filename : "(no name)",
			    w->replica);
	if (!str_is(format, "raw"))
		return fail(err, errlen, "disk '%s': replica %s is opened as %s, not raw",
			    w->name, w->replica, format ? format : "(no format)");
	if (!size_is(backing, w->size))
		return fail(err, errlen, "disk '%s': replica %s is seen with virtual size %s "
			    "bytes, the primary's disk has %llu", w->name, w->replica,
			    size_text(backing),
			    (unsigned long long)w->size);
	return 0;
}

/* A guest device reads it: the primary's, when the HELLO named it. */
static int check_device(struct json_object *entry, const struct verify_disk *w, char *err,
			size_t errlen)
{
	const char *qdev = str_member(entry, "qdev");

	if (!qdev || !qdev[0])
		return fail(err, errlen, "disk '%s': overlay %s is attached to no guest device",
			    w->name, w->overlay);
	if (w->qdev && w->qdev[0] && strcmp(qdev, w->qdev))
		return fail(err, errlen, "disk '%s': overlay %s is attached to device %s, the "
			    "primary's disk was on %s (qdev mismatch)", w->name, w->overlay, qdev,
			    w->qdev);
	return 0;
}

int restore_verify_block_graph(struct json_object *blocks, const struct verify_disk *want,
			       int n, char *err, size_t errlen)
{
	int rc;

	err[0] = '\0';
	if (!json_object_is_type(blocks, json_type_array))
		return fail(err, errlen, "query-block did not return an array");
	if ((rc = check_overlay_formats(blocks, want, n, err, errlen)))
		return rc;
	for (int i = 0; i < n; i++) {
		struct json_object *entry = find_entry(blocks, &want[i], err, errlen);
		struct json_object *inserted = member(entry, "inserted");

		if (!entry)
			return -EINVAL;
		if ((rc = check_image(inserted, &want[i], err, errlen)) ||
		    (rc = check_backing(inserted, &want[i], err, errlen)) ||
		    (rc = check_device(entry, &want[i], err, errlen)))
			return rc;
	}
	return 0;
}

/* want[i] from the overlays made and the HELLO's disks[i]; the strings
 * stay owned by disks and vm. */
static void expected_disks(const struct restore_disks *disks, struct json_object *vm,
			   struct verify_disk *want)
{
	struct json_object *arr = member(vm, "disks");
	size_t listed = json_object_is_type(arr, json_type_array) ? json_object_array_length(arr) : 0;

	for (int i = 0; i < disks->n; i++) {
		/* a disk vm does not list has no size: its check fails */
		struct json_object *d = (size_t)i < listed ? json_object_array_get_idx(arr, (size_t)i) : NULL;
		const char *id = str_member(d, "id");

		want[i] = (struct verify_disk){
			.name = id ? id : "?",
			.overlay = disks->overlay[i],
			.replica = disks->base[i],
			.size = (uint64_t)json_object_get_int64(member(d, "size")),
			.qdev = str_member(d, "qdev"),
		};
	}
}

int restore_verify_disks(struct qmp *q, const struct restore_disks *disks,
			 struct json_object *vm)
{
	struct verify_disk want[RESTORE_MAX_DISKS];
	struct json_object *blocks = NULL;
	char err[512];
	int rc;

	if (disks->n == 0)
		return 0;
	rc = qmp_execute(q, "query-block", NULL, &blocks, QUERY_BLOCK_TIMEOUT_MS);
	if (rc) {
		log_err("restore: block graph check failed: query-block: %s", qmp_last_error(q));
		return rc;
	}
	expected_disks(disks, vm, want);
	rc = restore_verify_block_graph(blocks, want, disks->n, err, sizeof(err));
	json_object_put(blocks);
	if (rc) {
		log_err("restore: block graph check failed: %s; the guest is not started, "
			"the replica is kept as it was", err);
		return rc;
	}
	for (int i = 0; i < disks->n; i++)
		log_info("restore: disk '%s' block graph verified: qcow2 overlay %s over replica "
			 "%s, %llu bytes", want[i].name, want[i].overlay, want[i].replica,
			 (unsigned long long)want[i].size);
	return 0;
}
