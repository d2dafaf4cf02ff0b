/* What the replicator was told (its command line and config file) and
 * what attach found out about the VM: read by every module, checkpoint
 * devices included (ckpt_device.h), and written only by options.c and
 * attach.c. Apart from replicator.h so that a device sees these and not
 * the replicator's own state. */
#ifndef REMUS_REPLICATOR_CONFIG_H
#define REMUS_REPLICATOR_CONFIG_H

#include "compress.h"
#include "config.h"
#include "epoch_policy.h"
#include "netaddr.h"
#include "pair_role.h"

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#define REPLICATOR_DEFAULT_EPOCH_MS     50u
#define REPLICATOR_DEFAULT_EPOCH_MIN_MS 10u
#define REPLICATOR_DEFAULT_EPOCH_MAX_MS 200u
#define REPLICATOR_DEFAULT_OVERHEAD_PCT 25u
#define REPLICATOR_DEFAULT_OUTPUT_DELAY_MS 2u
#define REPLICATOR_DEFAULT_HEARTBEAT_MS 100u
#define REPLICATOR_DEFAULT_TIMEOUT_MS   2000u
#define REPLICATOR_DEFAULT_NET_CAP_MB   16u
#define REPLICATOR_DEFAULT_DISK_CAP_MB  64u
#define REPLICATOR_MAX_NICS             8
#define REPLICATOR_MAX_DISKS            8

struct replicator_config {
	const char *qmp_path;      /* plain QEMU: its QMP socket */
	const char *libvirt_uri;   /* libvirt: connection and domain */
	const char *domain;
	const char *ram_file;      /* NULL: discover through QMP */
	struct netaddr backup;
	unsigned epoch_ms;
	struct epoch_policy_cfg policy;
	unsigned capture_threads;  /* threads scanning RAM in the pause */
	const char *tracker;       /* "auto" (default), "hash", "compare", "soft-dirty" */
	enum compress_mode compress; /* --compress: pages as deltas + LZ4 */
	unsigned compress_cache_mb;  /* --compress-cache-mb: the deltas' bases */
	const char *unprotected_disks[REPLICATOR_MAX_DISKS]; /* shared storage */
	int n_unprotected_disks;
	const char *control_path;  /* NULL: no control socket */
	const char *control_group; /* NULL: root alone may use it */
	gid_t control_gid;         /* control_group's; -1 without one */
	unsigned heartbeat_ms;     /* send a heartbeat when idle this long */
	unsigned timeout_ms;       /* backup silent this long: lost */
	int64_t test_corrupt_epoch; /* test hook: corrupt this epoch once; -1 off */
	/* net buffer */
	struct net_out { char netdev[64]; const char *spec; } net_out[REPLICATOR_MAX_NICS];
	int n_net_out;
	size_t net_cap_bytes;
	size_t disk_cap_bytes;     /* an epoch's disk writes before it ends early */
	bool disk_capture_bitmap;  /* --disk-capture bitmap: dev_disk.c, disk_bitmap.c */
	bool no_output_commit;     /* test only: release frames at once */
	bool test_disk_unbuffered; /* test only: disk writes also sent at once */
	const char *notify_cmd;    /* --notify CMD: events, see README "Hooks" */
	const char *pair_name;     /* --pair NAME; NULL: the VM's name */
	const char *key_file;      /* --key-file: the pair key (link_security.h) */
	bool cleartext_link;       /* --insecure-cleartext-link */
	bool announce;             /* --announce: QMP announce-self once the NICs are ours */
	uint64_t generation;       /* --generation: of the replica the VM was restored from */
	/* A pair whose roles move ([host] sections): this host's, and the
	 * file, for the agent we become (common/pair_role.h); NULL: none. */
	const struct config_host *host;
	bool backup_flag;          /* --backup given: it, not the file's other hosts */
	const char *config_path;
	struct pair_role_carry carry; /* the service's flags, for the next role */
	char *state_qmp_path;      /* host->state_dir/qmp.sock: a VM the agent restored */
	/* --config: owns the strings above that came from the file, and the
	 * keys no flag sets yet ([pair] name, [vm] domain, [hooks] ...) */
	struct pair_config file;
};

/* What attach found out about the VM. */
struct vm_info {
	pid_t pid;
	char *name;
	char *ram_path;       /* file to mmap (for memfd: /proc/PID/fd/N) */
	char *backend_id;     /* e.g. "ram0" */
	uint64_t ram_size;
	char *machine_type;   /* e.g. "pc-i440fx-7.2" */
	bool kvm;             /* guest writes go through KVM, not TCG */
	char **argv;          /* QEMU's command line, from /proc/PID/cmdline */
	char *libvirt_xml;    /* the domain's migratable XML; NULL for plain QEMU */
	int argc;
	bool ram_locked;      /* ram_lock_fd holds the one-replicator-per-VM lock */
	int ram_lock_fd;
};

#endif
