/* The restored VM's command line: the primary's QEMU command line, with
 * everything that names a host resource of the primary moved into the
 * backup's state directory, and -incoming defer added. */
#ifndef REMUS_RESTORE_CMDLINE_H
#define REMUS_RESTORE_CMDLINE_H

#include <stddef.h>

#define RESTORE_MAX_DISKS 16

struct restore_spec {
	/* The QEMU binary to run: the agent's own, whatever argv[0] says. */
	const char *emulator;
	const char *state_dir;      /* serial.log, qmp.sock, ... go here */
	const char *ram_path;       /* file the main memory backend maps */
	const char *ram_backend_id; /* id of the main memory backend, e.g. "ram0" */
	/* NICs on a datagram socket (the primary's net buffer) come back on a
	 * TAP on the backup's side of the LAN: "ID=NAME" per netdev, or one
	 * "NAME" when there is one NIC. Without a TAP, their socket files move
	 * into state_dir (the NIC is then cut off). */
	const char *const *taps;
	int ntaps;
	/* Replicated disks: the -drive or -blockdev graph that defines each
	 * is replaced by a qcow2 overlay over its replica (block_graph.h). */
	const struct restore_disk *disks;
	int ndisks;
	/* Images both hosts see (the agent's --shared-disk), which the
	 * primary does not replicate: the only others the VM may open. */
	const char *const *shared_disks;
	int nshared_disks;
};

struct restore_disk {
	/* the disk as the primary's query-block named it (HELLO "disks") */
	const char *id;       /* a -drive's id, or empty */
	const char *node;     /* the node its device uses */
	const char *file;     /* the primary's image, as its command line says */
	const char *overlay;  /* qcow2 over the replica, in state_dir */
};

/* Test hook: "1" makes the restore open the overlay with the wrong driver
 * (raw for -drive, the file driver for -blockdev: the bug the restored
 * graph check exists for), so a test can see that check fail. */
#define RESTORE_TEST_OVERLAY_AS_RAW "REMUS_TEST_RESTORE_OVERLAY_AS_RAW"

/* Build argv for the restored QEMU from argv_in (argc_in entries, argv_in[0]
 * is the primary's QEMU binary, replaced by spec->emulator). Only options
 * and properties the backup allows pass (restore_allow.h); anything else
 * is refused with -EINVAL and the option named in err. On success *argv_out is a NULL-terminated, malloc'd
 * vector (free with restore_cmdline_free) and the QMP socket the agent must
 * use is DIR/qmp.sock. On error returns -EINVAL (or -ENOMEM) and writes the
 * reason to err. Applied to its own output it gives the same line again, so
 * a restored VM can in turn be the primary. */
int restore_cmdline_build(char *const *argv_in, int argc_in,
			  const struct restore_spec *spec, char ***argv_out,
			  char *err, size_t errlen);
void restore_cmdline_free(char **argv);

#endif
