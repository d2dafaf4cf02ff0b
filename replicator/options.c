/* remus-replicator's command line. */
#include "log.h"
#include "replicator.h"
#include "cli_daemon.h"
#include "hooks.h"
#include "config.h"
#include "virt.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* --net-out [ID=]SPEC; the spec itself is checked when the port opens. */
static int add_net_out(struct replicator_config *cfg, const char *arg)
{
	const char *eq = strchr(arg, '=');
	struct net_out *o;

	if (cfg->n_net_out == REPLICATOR_MAX_NICS) {
		fprintf(stderr, "remus-replicator: --net-out: at most %d NICs\n", REPLICATOR_MAX_NICS);
		return -1;
	}
	o = &cfg->net_out[cfg->n_net_out++];
	o->netdev[0] = 0;
	o->spec = arg;
	if (eq) {
		if ((size_t)(eq - arg) >= sizeof(o->netdev)) {
			fprintf(stderr, "remus-replicator: --net-out: netdev id too long in '%s'\n", arg);
			return -1;
		}
		memcpy(o->netdev, arg, (size_t)(eq - arg));
		o->netdev[eq - arg] = 0;
		o->spec = eq + 1;
	}
	if (strncmp(o->spec, "tap:", 4) && strncmp(o->spec, "packet:", 7)) {
		fprintf(stderr, "remus-replicator: --net-out: '%s' is not tap:NAME or packet:IFACE\n",
			o->spec);
		return -1;
	}
	return 0;
}

static unsigned default_capture_threads(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);

	return n < 1 ? 1 : n > 16 ? 16 : (unsigned)n;
}

void replicator_usage(FILE *f)
{
	fprintf(f,
"Usage: remus-replicator --qmp PATH --backup HOST:PORT [options]\n"
"       remus-replicator [--connect URI] --domain NAME --backup HOST:PORT [options]\n"
"       remus-replicator --config FILE [options]\n"
"\n"
"Attach to a running QEMU through its QMP socket and replicate it to the\n"
"backup agent (remus-agent) at HOST:PORT: every epoch the VM is paused,\n"
"its changed pages and device state are captured, it is resumed at once,\n"
"and the checkpoint is streamed to the backup, with the epoch's disk\n"
"writes (QEMU mirrors every writable disk into the replicator). The VM's\n"
"RAM must be on a shared memory backend, e.g.\n"
"  -object memory-backend-file,id=ram0,size=128M,mem-path=/dev/shm/vm.ram,share=on\n"
"  -machine memory-backend=ram0\n"
"\n"
CLI_USAGE_CONFIG
"                        itself: it becomes this host's agent, the backup of\n"
"                        the other host, when the VM is lost, handed over or\n"
"                        not running here (README, Pairs whose roles move).\n"
"                        The next role reads only the file: of the command\n"
"                        line, --syslog, --control, --control-group and -v\n"
"                        carry over\n"
"  --announce            have QEMU announce the VM's MAC addresses once the\n"
"                        net buffer holds its NICs (a VM just restored)\n"
"  --generation N        the generation of the replica the VM was restored\n"
"                        from (the agent gives it): the sessions after it\n"
"                        record higher ones, so that of two replicas the\n"
"                        later one is known (default 0)\n"
"  --qmp PATH            QEMU's QMP unix socket (plain QEMU; or [vm] qmp)\n"
"  --domain NAME         a libvirt domain instead (or [vm] domain): QMP goes\n"
"                        through libvirt's monitor passthrough; the domain\n"
"                        needs <memoryBacking><source type='memfd'/><access\n"
"                        mode='shared'/></memoryBacking> (or type='file')\n"
"  --connect URI         libvirt connection (default qemu:///system; or\n"
"                        [vm] libvirt-uri; with [host] sections [host]\n"
"                        libvirt-uri, and no --connect)\n"
"  --backup HOST:PORT    the backup agent (required, or [backup] address)\n"
"  --ram-file PATH       guest RAM file (default: asked from QEMU)\n"
"  --epoch-policy P      fixed, dirty-rate, output-aware or hybrid (default):\n"
"                        how long each epoch runs (see docs/EPOCHS.md)\n"
"  --epoch-ms N          the epoch length of 'fixed', the first epochs' of\n"
"                        the others (default %u, 5-10000)\n"
"  --epoch-min-ms N      shortest epoch of dirty-rate and output-aware\n"
"                        (default %u; hybrid bounds its epochs by the pause\n"
"                        and how busy the vCPUs are instead)\n"
"  --epoch-max-ms N      longest epoch of an adaptive policy (default %u)\n"
"  --max-overhead PCT    dirty-rate: the pause's share of the VM's\n"
"                        time to stay under (default %u)\n"
"  --output-delay-ms N   output-aware/hybrid: end the epoch at most this long\n"
"                        after output starts waiting for it (default %u);\n"
"                        a reply (not a bare TCP ACK) ends it sooner, once\n"
"                        the VM has sent nothing more for 0.5 ms,\n"
"                        unless its vCPUs are still busy (docs/EPOCHS.md)\n"
"  --control PATH        control socket for remusctl (default: none); mode\n"
"                        0600: root alone may use it\n"
"  --control-group NAME  members of group NAME may use the control socket\n"
"                        too (mode 0660, owned by the group)\n"
"  --tracker KIND        how dirty pages are found: hash (hash every page of\n"
"                        RAM against its last hash, docs/TRACKERS.md),\n"
"                        compare (scan all of RAM against a copy as large),\n"
"                        soft-dirty (the kernel's log of QEMU's writes,\n"
"                        docs/SOFT-DIRTY.md; refused, with the reason, where\n"
"                        it cannot work), or auto (the default: soft-dirty\n"
"                        where the kernel keeps the log and only QEMU writes\n"
"                        guest RAM, else hash; `remusctl status` says which\n"
"                        and why)\n"
"  --capture-threads N   threads that scan guest RAM in the pause\n"
"                        (default: one per online CPU, %ld here)\n"
"  --net-out [ID=]SPEC   where the VM's NIC (netdev ID; may be left out if\n"
"                        there is one) meets the network: tap:NAME (a TAP\n"
"                        device) or packet:IFACE (a host interface).\n"
"                        Outbound frames wait there for their checkpoint.\n"
"                        Needed for every -netdev dgram / socket,udp NIC\n"
"  --net-cap-mb N        output held for the backup before the epoch ends\n"
"                        early (default %u)\n"
"  --unprotected-disk NAME  a writable disk (QEMU's device or node name) that\n"
"                        both hosts share, left out of replication. Every\n"
"                        other writable disk is replicated: mirrored into\n"
"                        the replicator and applied on the backup with the\n"
"                        epoch its writes belong to\n"
"  --disk-cap-mb N       an epoch's disk writes before it ends early; at\n"
"                        twice that the guest's writes wait for the barrier\n"
"                        (default %u)\n"
"  --disk-capture HOW    how an epoch's disk writes reach the replicator:\n"
"                        mirror (the default: each guest write is copied to\n"
"                        the replicator before it completes, about 0.4 ms\n"
"                        more per write) or bitmap (QEMU marks the blocks an\n"
"                        epoch writes and the barrier reads them: writes at\n"
"                        full speed, about 8 ms more per pause; plain QEMU\n"
"                        over QMP only). The initial copy is a mirror either\n"
"                        way (docs/DISK-CAPTURE.md; [capture] disk-capture)\n"
"  --heartbeat-ms N      heartbeat interval when idle (default %u)\n"
"  --timeout-ms N        backup silent this long counts as lost (default %u);\n"
"                        then held output is released. Raised to what the\n"
"                        backup says it may take to fence us and take over\n"
"                        (its --timeout-ms plus --fence-timeout-ms; README,\n"
"                        Hooks)\n"
"  --notify CMD          run CMD PAIR VM EVENT primary on each event:\n"
"                        protected, unprotected, vm-lost, detached (README,\n"
"                        Hooks; or [hooks] notify)\n"
"  --pair NAME           the pair's name for hooks and the link's identity\n"
"                        (default: the VM's name; or [pair] name)\n"
"  --key-file FILE       the pair key, the same file on both hosts (or [link]\n"
"                        key-file): the link to the backup is TLS 1.3\n"
"                        authenticated by it, and nothing starts without it.\n"
"                        Make one with `remusctl keygen FILE` (docs/SECURITY.md)\n"
"  --insecure-cleartext-link  no TLS: anyone on the path reads the VM's\n"
"                        memory and disks ([link] insecure-cleartext = yes)\n"
"  --compress MODE       send pages as XOR deltas against the backup's copy,\n"
"                        LZ4-compressed: on, off, or auto (the default:\n"
"                        compress while that makes a checkpoint faster, as\n"
"                        measured on this link and these pages; see\n"
"                        docs/PROTOCOL.md, PAGES_Z; `remusctl status` says\n"
"                        why; [link] compress)\n"
"  --compress-cache-mb N copies of recently sent pages, the deltas' bases\n"
"                        (default %u; 0: whole pages only; [link]\n"
"                        compress-cache-mb)\n"
CLI_USAGE_LOGGING
"\n"
"SIGTERM or SIGINT detaches: the VM keeps running, unprotected, and the\n"
"backup is told not to take over. remusctl pause/resume stops and restarts\n"
"the checkpoints; remusctl failover hands the VM over to the backup, then\n"
"the primary QEMU quits and the replicator exits 0. Under systemd\n"
"(Type=notify) it reports READY=1 once attached and STATUS= changes.\n"
"Exit status: 0 detached, VM shut down or handed over (or --check-config\n"
"found no error), 1 QEMU died (the backup takes over) or its QEMU did not\n"
"quit after a handover, 2 usage or config error, or VM refused (it cannot\n"
"be replicated safely, or another replicator is attached to it), 3 the\n"
"connection to libvirt broke (detached; the VM runs on unprotected).\n",
		REPLICATOR_DEFAULT_EPOCH_MS, REPLICATOR_DEFAULT_EPOCH_MIN_MS,
		REPLICATOR_DEFAULT_EPOCH_MAX_MS, REPLICATOR_DEFAULT_OVERHEAD_PCT,
		REPLICATOR_DEFAULT_OUTPUT_DELAY_MS, sysconf(_SC_NPROCESSORS_ONLN),
		REPLICATOR_DEFAULT_NET_CAP_MB, REPLICATOR_DEFAULT_DISK_CAP_MB,
		REPLICATOR_DEFAULT_HEARTBEAT_MS,
		REPLICATOR_DEFAULT_TIMEOUT_MS, COMPRESS_DEFAULT_CACHE_MB);
}

enum { OPT_QMP = 256, OPT_CONNECT, OPT_DOMAIN, OPT_BACKUP, OPT_RAM_FILE, OPT_EPOCH_MS,
       OPT_TEST_CORRUPT, OPT_CAPTURE_THREADS, OPT_NET_OUT, OPT_NET_CAP_MB, OPT_DISK_CAP_MB,
       OPT_DISK_CAPTURE, OPT_TEST_DISK_UNBUFFERED, OPT_NO_OUTPUT_COMMIT, OPT_EPOCH_POLICY,
       OPT_EPOCH_MIN_MS, OPT_EPOCH_MAX_MS, OPT_MAX_OVERHEAD, OPT_OUTPUT_DELAY_MS, OPT_TRACKER,
       OPT_UNPROTECTED_DISK, OPT_COMPRESS, OPT_COMPRESS_CACHE_MB, OPT_ANNOUNCE,
       OPT_GENERATION };

static const struct option long_opts[] = {
	{ "announce", no_argument, NULL, OPT_ANNOUNCE },
	{ "generation", required_argument, NULL, OPT_GENERATION },
	{ "qmp", required_argument, NULL, OPT_QMP },
	{ "connect", required_argument, NULL, OPT_CONNECT },
	{ "domain", required_argument, NULL, OPT_DOMAIN },
	{ "backup", required_argument, NULL, OPT_BACKUP },
	{ "ram-file", required_argument, NULL, OPT_RAM_FILE },
	{ "epoch-ms", required_argument, NULL, OPT_EPOCH_MS },
	{ "epoch-policy", required_argument, NULL, OPT_EPOCH_POLICY },
	{ "epoch-min-ms", required_argument, NULL, OPT_EPOCH_MIN_MS },
	{ "epoch-max-ms", required_argument, NULL, OPT_EPOCH_MAX_MS },
	{ "max-overhead", required_argument, NULL, OPT_MAX_OVERHEAD },
	{ "output-delay-ms", required_argument, NULL, OPT_OUTPUT_DELAY_MS },
	{ "capture-threads", required_argument, NULL, OPT_CAPTURE_THREADS },
	{ "tracker", required_argument, NULL, OPT_TRACKER },
	{ "compress", required_argument, NULL, OPT_COMPRESS },
	{ "compress-cache-mb", required_argument, NULL, OPT_COMPRESS_CACHE_MB },
	{ "unprotected-disk", required_argument, NULL, OPT_UNPROTECTED_DISK },
	{ "net-out", required_argument, NULL, OPT_NET_OUT },
	{ "net-cap-mb", required_argument, NULL, OPT_NET_CAP_MB },
	{ "disk-cap-mb", required_argument, NULL, OPT_DISK_CAP_MB },
	{ "disk-capture", required_argument, NULL, OPT_DISK_CAPTURE },
	/* test only: every disk write also goes to the backup at once, outside
	 * its epoch (for an agent with --test-disk-apply-on-arrival) */
	{ "test-disk-unbuffered", no_argument, NULL, OPT_TEST_DISK_UNBUFFERED },
	/* test only: let output through before its checkpoint commits */
	{ "no-output-commit", no_argument, NULL, OPT_NO_OUTPUT_COMMIT },
	/* test only: corrupt one frame of this epoch on the wire */
	{ "test-corrupt-epoch", required_argument, NULL, OPT_TEST_CORRUPT },
	CLI_DAEMON_LONG_OPTIONS,
};

/* The options that only store their value. */
#define CFG struct replicator_config
static const struct cli_field fields[] = {
	CLI_DAEMON_FIELDS(CFG),
	CLI_STRING_FIELD(OPT_RAM_FILE, CFG, ram_file),
	CLI_FLAG_FIELD(OPT_ANNOUNCE, CFG, announce),
	CLI_FLAG_FIELD(OPT_TEST_DISK_UNBUFFERED, CFG, test_disk_unbuffered),
	CLI_FLAG_FIELD(OPT_NO_OUTPUT_COMMIT, CFG, no_output_commit),
	CLI_NUMBER_FIELD(OPT_GENERATION, CLI_U64, 0, CFG, generation, 0, ~0ul >> 2),
	CLI_NUMBER_FIELD(OPT_EPOCH_MS, CLI_UINT, 0, CFG, epoch_ms, RANGE_EPOCH_MS),
	CLI_NUMBER_FIELD(OPT_EPOCH_MIN_MS, CLI_UINT, 0, CFG, policy.min_ms, RANGE_EPOCH_MS),
	CLI_NUMBER_FIELD(OPT_EPOCH_MAX_MS, CLI_UINT, 0, CFG, policy.max_ms, RANGE_EPOCH_MS),
	CLI_NUMBER_FIELD(OPT_MAX_OVERHEAD, CLI_PERCENT, 0, CFG, policy.max_overhead,
			 RANGE_OVERHEAD_PCT),
	CLI_NUMBER_FIELD(OPT_OUTPUT_DELAY_MS, CLI_UINT, 0, CFG, policy.output_delay_ms,
			 RANGE_OUTPUT_DELAY_MS),
	CLI_NUMBER_FIELD(OPT_CAPTURE_THREADS, CLI_UINT, 0, CFG, capture_threads,
			 RANGE_CAPTURE_THREADS),
	CLI_NUMBER_FIELD(OPT_DISK_CAP_MB, CLI_SIZE, 20, CFG, disk_cap_bytes, RANGE_DISK_CAP_MB),
	CLI_NUMBER_FIELD(OPT_NET_CAP_MB, CLI_SIZE, 20, CFG, net_cap_bytes, RANGE_NET_CAP_MB),
	CLI_NUMBER_FIELD(OPT_COMPRESS_CACHE_MB, CLI_UINT, 0, CFG, compress_cache_mb,
			 RANGE_COMPRESS_CACHE_MB),
};
#undef CFG

_Static_assert(CONFIG_MAX_LIST <= REPLICATOR_MAX_NICS && CONFIG_MAX_LIST <= REPLICATOR_MAX_DISKS,
	       "a config file's lists must fit the replicator's");

/* What the command line says beyond the config's fields. */
struct args {
	struct replicator_config *cfg;
	const char *backup;
	int vm_flags;       /* 1: --qmp given, 2: --domain given */
	bool connect_flag;
};

/* The --config file's values, over the defaults and under the flags. */
static void apply_file(void *ctx, int *use_syslog)
{
	struct args *a = ctx;
	struct replicator_config *cfg = a->cfg;
	const struct pair_config *pc = &cfg->file;

	CONFIG_APPLY_DAEMON_KEYS(pc, cfg, use_syslog);
	if (PC_SET(pc, VM_QMP))
		cfg->qmp_path = pc->vm_qmp;
	if (PC_SET(pc, VM_DOMAIN))
		cfg->domain = pc->vm_domain;
	if (PC_SET(pc, VM_LIBVIRT_URI))
		cfg->libvirt_uri = pc->vm_libvirt_uri;
	if (PC_SET(pc, VM_RAM_FILE))
		cfg->ram_file = pc->vm_ram_file;
	if (PC_SET(pc, BACKUP_ADDRESS))
		a->backup = pc->backup_address;
	if (PC_SET(pc, EPOCH_POLICY))
		epoch_policy_parse(pc->epoch_policy, &cfg->policy.kind);
	if (PC_SET(pc, EPOCH_LENGTH_MS))
		cfg->epoch_ms = pc->epoch_length_ms;
	if (PC_SET(pc, EPOCH_MIN_MS))
		cfg->policy.min_ms = pc->epoch_min_ms;
	if (PC_SET(pc, EPOCH_MAX_MS))
		cfg->policy.max_ms = pc->epoch_max_ms;
	if (PC_SET(pc, EPOCH_MAX_OVERHEAD))
		cfg->policy.max_overhead = pc->epoch_max_overhead / 100.0;
	if (PC_SET(pc, EPOCH_OUTPUT_DELAY_MS))
		cfg->policy.output_delay_ms = pc->epoch_output_delay_ms;
	if (PC_SET(pc, CAPTURE_TRACKER))
		cfg->tracker = pc->capture_tracker;
	if (PC_SET(pc, LINK_COMPRESS))
		compress_parse_mode(pc->link_compress, &cfg->compress);
	if (PC_SET(pc, LINK_COMPRESS_CACHE_MB))
		cfg->compress_cache_mb = pc->link_compress_cache_mb;
	if (PC_SET(pc, CAPTURE_THREADS))
		cfg->capture_threads = pc->capture_threads;
	if (PC_SET(pc, NETBUF_CAP_MB))
		cfg->net_cap_bytes = (size_t)pc->netbuf_cap_mb << 20;
	if (PC_SET(pc, CAPTURE_DISK_CAP_MB))
		cfg->disk_cap_bytes = (size_t)pc->capture_disk_cap_mb << 20;
	if (PC_SET(pc, CAPTURE_DISK_CAPTURE))
		cfg->disk_capture_bitmap = !strcmp(pc->capture_disk_capture, "bitmap");
	if (PC_SET(pc, CONTROL_SOCKET))
		cfg->control_path = pc->control_socket;
	if (PC_SET(pc, CONTROL_GROUP))
		cfg->control_group = pc->control_group;
}

/* The file's repeatable keys, unless the flags gave the same list: flags
 * replace a list, they do not add to it. */
static int apply_file_lists(struct replicator_config *cfg)
{
	const struct pair_config *pc = &cfg->file;

	if (!cfg->n_net_out)
		for (int i = 0; i < pc->netbuf_net_out.n; i++)
			if (add_net_out(cfg, pc->netbuf_net_out.v[i]))
				return -1;
	if (!cfg->n_unprotected_disks)
		for (int i = 0; i < pc->capture_unprotected_disks.n; i++)
			cfg->unprotected_disks[cfg->n_unprotected_disks++] =
				pc->capture_unprotected_disks.v[i];
	return 0;
}

/* A pair whose roles move: this host's [host] section gives the NICs'
 * ports, the control socket and its libvirt, the other host's agent is
 * the backup (flags still win, but for --connect). */
static int apply_host(struct replicator_config *cfg, const char *file, const char *host_name,
		      const char **backup, bool control_flag, bool connect_flag)
{
	const struct config_host *peer;

	if (config_host_self(&cfg->file, host_name, "remus-replicator", stderr, &cfg->host))
		return -1;
	if (!cfg->host)
		return 0;
	cfg->config_path = file;
	peer = config_host_peer(&cfg->file, cfg->host);
	cfg->backup_flag = *backup != NULL;
	if (!*backup)
		*backup = peer->address; /* the first to try (backup_choice.h) */
	if (!cfg->n_net_out)
		for (int i = 0; i < cfg->host->net_out.n; i++)
			if (add_net_out(cfg, cfg->host->net_out.v[i]))
				return -1;
	if (!control_flag && cfg->host->control_socket)
		cfg->control_path = cfg->host->control_socket;
	/* the same domain, on this host's libvirt, whichever role asks */
	if (connect_flag) {
		fprintf(stderr, "remus-replicator: --connect: with [host] sections this host's "
			"libvirt is [host %s] libvirt-uri, which every role reads\n",
			cfg->host->name);
		return -1;
	}
	if (cfg->host->libvirt_uri)
		cfg->libvirt_uri = cfg->host->libvirt_uri;
	if (asprintf(&cfg->state_qmp_path, "%s/qmp.sock", cfg->host->state_dir) < 0) {
		cfg->state_qmp_path = NULL;
		return -1;
	}
	return 0;
}

/* The group is looked up now, so that --check-config and a typo fail at
 * start rather than at the first remusctl. */
static int resolve_control_group(struct replicator_config *cfg)
{
	return control_group_resolve("remus-replicator", cfg->control_path, cfg->control_group,
				     &cfg->control_gid);
}

/* The options that do more than store a value. 1: not one of them; 0:
 * taken; -1: a bad value, printed. */
static int option(void *ctx, int c, const char *arg)
{
	struct args *a = ctx;
	struct replicator_config *cfg = a->cfg;
	unsigned long v;

	switch (c) {
	/* A flag names the VM over the file, whichever way the file did. */
	case OPT_QMP: cfg->qmp_path = arg; a->vm_flags |= 1; cfg->domain = NULL; return 0;
	case OPT_DOMAIN: cfg->domain = arg; a->vm_flags |= 2; cfg->qmp_path = NULL; return 0;
	case OPT_CONNECT: cfg->libvirt_uri = arg; a->connect_flag = true; return 0;
	case OPT_BACKUP: a->backup = arg; return 0;
	case OPT_NET_OUT: return add_net_out(cfg, arg);
	case OPT_EPOCH_POLICY:
		if (epoch_policy_parse(arg, &cfg->policy.kind)) {
			fprintf(stderr, "remus-replicator: --epoch-policy: '%s' is not fixed, "
				"dirty-rate, output-aware or hybrid\n", arg);
			return -1;
		}
		return 0;
	case OPT_DISK_CAPTURE:
		if (cli_one_of("remus-replicator", "--disk-capture", arg,
			       config_disk_capture_values))
			return -1;
		cfg->disk_capture_bitmap = !strcmp(arg, "bitmap");
		return 0;
	case OPT_COMPRESS:
		if (compress_parse_mode(arg, &cfg->compress)) {
			fprintf(stderr, "remus-replicator: --compress: '%s' is not auto, on or off\n",
				arg);
			return -1;
		}
		return 0;
	case OPT_TRACKER:
		if (cli_one_of("remus-replicator", "--tracker", arg, config_tracker_values))
			return -1;
		cfg->tracker = arg;
		return 0;
	case OPT_UNPROTECTED_DISK:
		if (cfg->n_unprotected_disks == REPLICATOR_MAX_DISKS) {
			fprintf(stderr, "remus-replicator: --unprotected-disk: at most %d\n",
				REPLICATOR_MAX_DISKS);
			return -1;
		}
		cfg->unprotected_disks[cfg->n_unprotected_disks++] = arg;
		return 0;
	case OPT_TEST_CORRUPT:
		if (cli_parse_ulong("--test-corrupt-epoch", arg, 1, ~0ul >> 1, &v))
			return -1;
		cfg->test_corrupt_epoch = (int64_t)v;
		return 0;
	}
	return 1;
}

static const struct cli_program program = {
	.name = "remus-replicator", .opts = long_opts, .role = CONFIG_REPLICATOR,
	.fields = fields, .nfields = sizeof(fields) / sizeof(fields[0]),
	.option = option, .apply_file = apply_file, .usage = replicator_usage,
};

static int parse(int argc, char **argv, struct replicator_config *cfg, int *use_syslog)
{
	struct args args = { .cfg = cfg };
	struct cli_service service = CLI_SERVICE_OF(cfg, use_syslog);
	char err[256];
	int rc;

	*cfg = (struct replicator_config){
		.epoch_ms = REPLICATOR_DEFAULT_EPOCH_MS,
		.heartbeat_ms = REPLICATOR_DEFAULT_HEARTBEAT_MS,
		.timeout_ms = REPLICATOR_DEFAULT_TIMEOUT_MS,
		.test_corrupt_epoch = -1,
		.control_gid = (gid_t)-1,
		.capture_threads = default_capture_threads(),
		.net_cap_bytes = (size_t)REPLICATOR_DEFAULT_NET_CAP_MB << 20,
		.disk_cap_bytes = (size_t)REPLICATOR_DEFAULT_DISK_CAP_MB << 20,
		/* soft-dirty where it serves, else hash (dev_memory.c) */
		.tracker = "auto",
		.compress = COMPRESS_AUTO,
		.compress_cache_mb = COMPRESS_DEFAULT_CACHE_MB,
		.policy = {
			.kind = POLICY_HYBRID,
			.min_ms = REPLICATOR_DEFAULT_EPOCH_MIN_MS,
			.max_ms = REPLICATOR_DEFAULT_EPOCH_MAX_MS,
			.max_overhead = REPLICATOR_DEFAULT_OVERHEAD_PCT / 100.0,
			.output_delay_ms = REPLICATOR_DEFAULT_OUTPUT_DELAY_MS,
		},
	};
	rc = cli_read_args(&program, &args, &service, &cfg->file, argc, argv, cfg);
	if (rc)
		return rc;
	if (apply_host(cfg, service.file.file, service.host_name, &args.backup, service.control_flag,
		       args.connect_flag) ||
	    apply_file_lists(cfg))
		return -1;
	if (args.vm_flags == 3 || (!cfg->qmp_path && !cfg->domain) || !args.backup) {
		fprintf(stderr, "remus-replicator: %s (see --help)\n",
			args.vm_flags == 3 ? "--qmp and --domain exclude each other" :
			!args.backup ? "--backup HOST:PORT is required" :
				  "--qmp PATH or --domain NAME is required");
		return -1;
	}
	if (cfg->libvirt_uri && !cfg->domain) {
		if (args.connect_flag) {
			fprintf(stderr, "remus-replicator: --connect needs --domain NAME\n");
			return -1;
		}
		cfg->libvirt_uri = NULL; /* the file's, for a domain --qmp replaced */
	}
	if (cfg->domain && !cfg->libvirt_uri)
		cfg->libvirt_uri = VIRT_DEFAULT_URI;
	if (cfg->domain && cfg->disk_capture_bitmap) {
		/* QEMU has one NBD server, and libvirt starts and stops it for
		 * its own migrations and backups. */
		fprintf(stderr, "remus-replicator: --disk-capture bitmap needs plain QEMU over "
			"--qmp: libvirt keeps QEMU's NBD server for its own use\n");
		return -1;
	}
	if (netaddr_parse(args.backup, &cfg->backup, err, sizeof(err))) {
		fprintf(stderr, "remus-replicator: --backup: %s\n", err);
		return -1;
	}
	cfg->policy.fixed_ms = cfg->epoch_ms;
	if (cfg->policy.min_ms > cfg->policy.max_ms) {
		fprintf(stderr, "remus-replicator: --epoch-min-ms (%u) is above --epoch-max-ms (%u)\n",
			cfg->policy.min_ms, cfg->policy.max_ms);
		return -1;
	}
	if (cli_check_daemon(program.name, cfg->notify_cmd, cfg->pair_name, cfg->timeout_ms,
			     cfg->heartbeat_ms) ||
	    resolve_control_group(cfg))
		return -1;
	return cli_report_checked(&service.file);
}

int replicator_parse_args(int argc, char **argv, struct replicator_config *cfg,
			  int *use_syslog)
{
	int rc = parse(argc, argv, cfg, use_syslog);

	if (rc)
		replicator_config_free(cfg);
	return rc;
}

void replicator_config_free(struct replicator_config *cfg)
{
	free(cfg->state_qmp_path);
	cfg->state_qmp_path = NULL;
	pair_config_free(&cfg->file);
}

