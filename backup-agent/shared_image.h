/* What a shared disk's image may make the restored QEMU open.
 *
 * A shared disk (--shared-disk) is an image both hosts see and nobody
 * replicates; the restored VM opens it with the format the primary's
 * command line or domain XML names, raw or qcow2. A qcow2 header can name
 * more host files: a backing file and an external data file. The header
 * is not the agent's to trust: a guest writes every byte of a raw image,
 * so one the primary calls qcow2 (the HELLO is the primary's word) reads
 * as whatever header the guest wrote; and whoever holds the primary host
 * can write the shared storage. So before a restore the agent reads the
 * header of each shared image the restored VM reads as qcow2 itself, and
 * refuses one that would lead QEMU to a file the operator did not list as
 * a shared disk. One read only as raw is not looked into: its bytes are
 * the guest's data, whatever they look like. */
#ifndef REMUS_SHARED_IMAGE_H
#define REMUS_SHARED_IMAGE_H

#include <stdbool.h>
#include <stddef.h>

/* What a qcow2 image names as its backing file: which shared disk
 * (index, -1: none) and whether it is read as qcow2 in turn. */
struct shared_image_backing {
	int index;
	bool qcow2;
};

/* 0 if the image at path, opened as qcow2, opens no host file but itself
 * and shared disks: not a qcow2 image at all, or a qcow2 header with no
 * external data file and either no backing file or one that resolves (as
 * QEMU resolves it: relative to the image's directory) to a shared disk,
 * in the format raw or qcow2 (then said in *backing, if not NULL). Else
 * -EINVAL (or the error of reading it) with the reason in err. */
int shared_image_check(const char *path, const char *const *shared, int nshared,
		       struct shared_image_backing *backing, char *err, size_t errlen);

/* Which shared disks the restored QEMU's command line (argv, argc
 * entries) reads as qcow2, its header parsed: as_qcow2[i] for shared[i].
 * A -drive with format=raw, a raw -blockdev node over its protocol node,
 * a device right on that node, or a qcow2 node's backing or raw data read
 * it as raw; a -drive of another format, or a qcow2 node whose `file` is
 * its protocol node (or a raw node over it), as qcow2. -EINVAL, with the
 * reason in err, where a qcow2 node would read the image's header from
 * elsewhere than byte 0 (a raw node with an offset or size between them)
 * or from another format node's guest data: that header is not the one
 * the check reads. -ENOMEM. On an error every one counts as qcow2. */
int shared_image_formats(char *const *argv, int argc, const char *const *shared, int nshared,
			 bool *as_qcow2, char *err, size_t errlen);

/* The check of every shared disk the VM reads as qcow2 (as_qcow2), and of
 * every backing file such an image names as qcow2, each once. A disk read
 * only as raw is not looked into: QEMU never reads its bytes as a header,
 * whatever the guest wrote there. 0, or the first refusal with "shared
 * disk PATH: reason" in err. A missing image is left to QEMU to report. */
int shared_images_check(const char *const *shared, const bool *as_qcow2, int nshared,
			char *err, size_t errlen);

/* Both of the above for a restore command line (NULL-terminated argv):
 * what restore.c runs before QEMU, and restore_check.c at HELLO. */
int shared_images_check_argv(char *const *argv, const char *const *shared, int nshared,
			     char *err, size_t errlen);

#endif
