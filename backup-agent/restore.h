/* Failover: bring the VM back from the committed replica. */
#ifndef REMUS_RESTORE_H
#define REMUS_RESTORE_H

#include <sys/types.h>

struct virt;

struct restore_result {
	pid_t qemu_pid;
	unsigned long long epoch;
	double copy_ms, start_ms, load_ms, total_ms;
	char qmp_path[4096];        /* plain QEMU: its QMP socket */
	char libvirt_domain[256];   /* libvirt: the restored domain */
	char ram_path[4096];        /* the guest's RAM, for reading (a /proc path for libvirt's) */
	/* libvirt, restore_opts.clone_name: the connection that started the
	 * clone, open; closing it (virt_close) destroys the clone */
	struct virt *clone;
};

struct restore_opts {
	const char *dir;            /* the state dir holding the replica */
	const char *libvirt_uri;    /* where a libvirt primary's VM comes back */
	const char *const *taps;    /* see restore_spec.taps */
	int ntaps;
	/* The agent's own QEMU binary (--emulator): never the primary's. */
	const char *emulator;
	/* Images both hosts see, which the VM may open (--shared-disk). */
	const char *const *shared_disks;
	int nshared_disks;
	/* The agent's lock on dir, left open in a restored plain QEMU so the
	 * directory stays locked while the VM restored from it runs (-1: none). */
	int lock_fd;
	/* libvirt: a throwaway clone (remusctl test-failover) named this, cut
	 * off from every network, never defined, destroyed by libvirt when
	 * restore_result.clone closes (restore_domain_spec); NULL for a real
	 * restore. */
	const char *clone_name;
};

/* Start QEMU with the primary's command line (rewritten into dir) on a copy
 * of the replica RAM, feed it the committed device state, wait until the
 * VM runs, and have it announce its MAC addresses where it now is. The
 * replica itself is only read. 0 or -errno (logged). */
int restore_vm(const struct restore_opts *o, struct restore_result *res);

/* At HELLO, before anything is written: would the VM the HELLO describes
 * (vm: the HELLO object) be restored here? Builds its command line, or
 * checks its domain XML, as restore_vm would and throws the result away.
 * 0, or -EINVAL with the refused option or element named in err. A HELLO
 * without qemu_argv passes: the HELLO checks refuse it. */
struct json_object;
int restore_check_hello(const struct restore_opts *o, struct json_object *vm, char *err,
			size_t errlen);

/* Steps shared by the two ways to restore (restore.c, restore_libvirt.c). */
#include "restore_cmdline.h"
/* qcow2 overlays over the replica disks (DIR/disk-N.img -> DIR/disk-N.qcow2). */
struct restore_disks {
	struct restore_disk d[RESTORE_MAX_DISKS];
	char *overlay[RESTORE_MAX_DISKS], *base[RESTORE_MAX_DISKS];
	int n;
};
struct json_object;
struct qmp;
struct replica_info;
const char *restore_json_str(struct json_object *o, const char *key);
int restore_check_machine(struct qmp *q, struct json_object *vm);
/* Poll query-status until it says want ("running", "paused"). */
int restore_wait_status(struct qmp *q, const char *want, const char *log_hint);
void restore_announce(struct qmp *q);
int restore_disk_overlays(const char *dir, struct json_object *vm, struct restore_disks *out);
void restore_disks_free(struct restore_disks *d);
/* The primary was a libvirt domain: restore into one (restore_libvirt.c). */
int restore_libvirt(const struct restore_opts *o, const struct replica_info *info,
		    struct restore_result *res);

#endif
