/* What a shared disk's image may make the restored QEMU open.
 *
 * A shared disk (--shared-disk) is an image both hosts see and nobody
 * replicates; the restored VM opens it with the format the primary's
 * command line or domain XML names, raw or qcow2. A qcow2 header can name
 * more host files: a backing file and an external data file. The header
 * is not the agent's to trust: a guest writes every byte of a raw image,
 * so one the primary calls qcow2 (the HELLO is the primary's word) reads
 * as whatever header the guest wrote; and whoever holds the primary host
 * can write the shared storage. So before a restore the agent reads each
 * shared image's header itself, and refuses one that would lead QEMU to a
 * file the operator did not list as a shared disk. */
#ifndef REMUS_SHARED_IMAGE_H
#define REMUS_SHARED_IMAGE_H

#include <stddef.h>

/* 0 if the image at path, opened as qcow2 or raw, opens no host file but
 * itself and shared disks: not a qcow2 image at all, or a qcow2 header
 * with no external data file and either no backing file or one that
 * resolves (as QEMU resolves it: relative to the image's directory) to a
 * shared disk, in the format raw or qcow2. Else -EINVAL (or the error of
 * reading it) with the reason in err. */
int shared_image_check(const char *path, const char *const *shared, int nshared, char *err,
		       size_t errlen);

#endif
