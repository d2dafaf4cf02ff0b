/* After a restore, before the guest runs: does each replicated disk read
 * from a qcow2 overlay over its own replica?
 *
 * A restored QEMU that opened the overlay through another driver (raw,
 * file) shows the guest the qcow2 header as its disk, and the guest goes on
 * writing a corrupt disk while the agent says "failover complete". QEMU's
 * query-block tells what was really opened; this checks it.
 */
#ifndef REMUS_RESTORE_VERIFY_H
#define REMUS_RESTORE_VERIFY_H

#include <stddef.h>
#include <stdint.h>

struct json_object;
struct qmp;
struct restore_disks;

/* What one replicated disk must look like in the restored QEMU. Paths are
 * compared as strings: pass the absolute paths restore_disk_overlays made. */
struct verify_disk {
	const char *name;     /* for messages: the HELLO's disk id */
	const char *overlay;  /* the qcow2 overlay the guest writes */
	const char *replica;  /* the overlay's backing file: the raw replica */
	uint64_t size;        /* the primary's virtual size, bytes */
	const char *qdev;     /* the primary's guest device; NULL or "": any */
};

/* blocks: the "return" array of query-block. For each of the n disks there
 * must be exactly one entry whose image is the overlay (its
 * inserted.image.filename, else inserted.file, else a json:{...} filename
 * whose "file" has that "filename"), in format qcow2, writable, of the
 * primary's virtual size, with the replica in format raw and of the same
 * size as its backing image, attached to a guest device (qdev; the expected one if given). No
 * entry nor backing level may open an overlay in another format than
 * qcow2. 0, or -EINVAL with the reason in err. */
int restore_verify_block_graph(struct json_object *blocks, const struct verify_disk *want,
			       int n, char *err, size_t errlen);

/* Runs query-block on q and checks the disks restore_disk_overlays made
 * against vm (the HELLO's vm object: disks[i].id, .size, optional .qdev).
 * Logs "block graph verified" per disk, or "block graph check failed" and
 * the reason. 0, -EINVAL when the check fails, or query-block's error. */
int restore_verify_disks(struct qmp *q, const struct restore_disks *disks,
			 struct json_object *vm);

#endif
