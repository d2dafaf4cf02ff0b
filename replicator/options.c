/* remus-replicator's command line. */
#include "log.h"
#include "replicator.h"
#include "cli.h"
#include "hooks.h"
#include "config.h"

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

/* A notify command that cannot run is refused now, not at the event. */
static int check_hooks(const struct replicator_config *cfg)
{
	char err[512];

	if (cfg->notify_cmd && hook_check(cfg->notify_cmd, err, sizeof(err))) {
		fprintf(stderr, "remus-replicator: --notify: cannot run it: %s\n", err);
		return -1;
	}
	if (cfg->pair_name && (!*cfg->pair_name || strlen(cfg->pair_name) > 64)) {
		fprintf(stderr, "remus-replicator: --pair: '%s' must be 1-64 characters\n",
			cfg->pair_name);
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
"Options:\n"
"  --config FILE         the HA pair's config file, the same on both hosts\n"
"                        (commented examples in configs/); options given\n"
"                        on the command line override its values\n"
"  --check-config        check --config FILE and the options, print every\n"
"                        error or 'FILE: ok', and exit without starting\n"
"  --host NAME           which [host] of --config FILE this host is (default:\n"
"                        the host name up to its first dot). With [host]\n"
"                        sections the one daemon of a host changes role by\n"
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
"                        [vm] libvirt-uri)\n"
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
"                        the VM has sent nothing more for about 1 ms,\n"
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
"  --syslog              log to syslog instead of stderr\n"
"  -v, --verbose         debug logging\n"
"  -h, --help            this text\n"
"  --version             print the version and exit\n"
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

enum { OPT_QMP = 256, OPT_CONNECT, OPT_DOMAIN, OPT_NOTIFY, OPT_PAIR, OPT_KEY_FILE, OPT_CLEARTEXT, OPT_BACKUP, OPT_RAM_FILE, OPT_EPOCH_MS, OPT_CONTROL, OPT_CONTROL_GROUP,
       OPT_HEARTBEAT_MS, OPT_TIMEOUT_MS, OPT_SYSLOG, OPT_TEST_CORRUPT,
       OPT_CAPTURE_THREADS, OPT_NET_OUT, OPT_NET_CAP_MB, OPT_DISK_CAP_MB, OPT_DISK_CAPTURE, OPT_TEST_DISK_UNBUFFERED, OPT_NO_OUTPUT_COMMIT,
       OPT_EPOCH_POLICY, OPT_EPOCH_MIN_MS, OPT_EPOCH_MAX_MS, OPT_MAX_OVERHEAD,
       OPT_OUTPUT_DELAY_MS, OPT_TRACKER, OPT_UNPROTECTED_DISK, OPT_CONFIG,
       OPT_COMPRESS, OPT_COMPRESS_CACHE_MB,
       OPT_CHECK_CONFIG, OPT_HOST, OPT_ANNOUNCE, OPT_GENERATION };

static const struct option long_opts[] = {
	{ "config", required_argument, NULL, OPT_CONFIG },
	{ "check-config", no_argument, NULL, OPT_CHECK_CONFIG },
	{ "host", required_argument, NULL, OPT_HOST },
	{ "announce", no_argument, NULL, OPT_ANNOUNCE },
	{ "generation", required_argument, NULL, OPT_GENERATION },
	{ "qmp", required_argument, NULL, OPT_QMP },
	{ "connect", required_argument, NULL, OPT_CONNECT },
	{ "notify", required_argument, NULL, OPT_NOTIFY },
	{ "pair", required_argument, NULL, OPT_PAIR },
	{ "key-file", required_argument, NULL, OPT_KEY_FILE },
	{ "insecure-cleartext-link", no_argument, NULL, OPT_CLEARTEXT },
	{ "domain", required_argument, NULL, OPT_DOMAIN },
	{ "backup", required_argument, NULL, OPT_BACKUP },
	{ "ram-file", required_argument, NULL, OPT_RAM_FILE },
	{ "epoch-ms", required_argument, NULL, OPT_EPOCH_MS },
	{ "epoch-policy", required_argument, NULL, OPT_EPOCH_POLICY },
	{ "epoch-min-ms", required_argument, NULL, OPT_EPOCH_MIN_MS },
	{ "epoch-max-ms", required_argument, NULL, OPT_EPOCH_MAX_MS },
	{ "max-overhead", required_argument, NULL, OPT_MAX_OVERHEAD },
	{ "output-delay-ms", required_argument, NULL, OPT_OUTPUT_DELAY_MS },
	{ "control", required_argument, NULL, OPT_CONTROL },
	{ "control-group", required_argument, NULL, OPT_CONTROL_GROUP },
	{ "heartbeat-ms", required_argument, NULL, OPT_HEARTBEAT_MS },
	{ "timeout-ms", required_argument, NULL, OPT_TIMEOUT_MS },
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
	{ "syslog", no_argument, NULL, OPT_SYSLOG },
	/* test only: corrupt one frame of this epoch on the wire */
	{ "test-corrupt-epoch", required_argument, NULL, OPT_TEST_CORRUPT },
	{ "verbose", no_argument, NULL, 'v' },
	{ "help", no_argument, NULL, 'h' },
	{ "version", no_argument, NULL, CLI_OPT_VERSION },
	{ NULL, 0, NULL, 0 },
};

_Static_assert(CONFIG_MAX_LIST <= REPLICATOR_MAX_NICS && CONFIG_MAX_LIST <= REPLICATOR_MAX_DISKS,
	       "a config file's lists must fit the replicator's");

/* The --config file's values, over the defaults and under the flags. */
static void apply_file(struct replicator_config *cfg, const char **backup, int *use_syslog)
{
	const struct pair_config *pc = &cfg->file;

	if (PC_SET(pc, VM_QMP))
		cfg->qmp_path = pc->vm_qmp;
	if (PC_SET(pc, HOOKS_NOTIFY))
		cfg->notify_cmd = pc->hooks_notify;
	if (PC_SET(pc, PAIR_NAME))
		cfg->pair_name = pc->pair_name;
	if (PC_SET(pc, LINK_KEY_FILE))
		cfg->key_file = pc->link_key_file;
	cfg->cleartext_link = pc->link_insecure_cleartext;
	if (PC_SET(pc, VM_DOMAIN))
		cfg->domain = pc->vm_domain;
	if (PC_SET(pc, VM_LIBVIRT_URI))
		cfg->libvirt_uri = pc->vm_libvirt_uri;
	if (PC_SET(pc, VM_RAM_FILE))
		cfg->ram_file = pc->vm_ram_file;
	if (PC_SET(pc, BACKUP_ADDRESS))
		*backup = pc->backup_address;
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
	if (PC_SET(pc, HEARTBEAT_INTERVAL_MS))
		cfg->heartbeat_ms = pc->heartbeat_interval_ms;
	if (PC_SET(pc, HEARTBEAT_TIMEOUT_MS))
		cfg->timeout_ms = pc->heartbeat_timeout_ms;
	if (PC_SET(pc, CONTROL_SOCKET))
		cfg->control_path = pc->control_socket;
	if (PC_SET(pc, CONTROL_GROUP))
		cfg->control_group = pc->control_group;
	if (PC_SET(pc, LOG_TARGET))
		*use_syslog = !strcmp(pc->log_target, "syslog");
	if (PC_SET(pc, LOG_LEVEL))
		log_set_level(strcmp(pc->log_level, "debug") ? LOG_INFO : LOG_DEBUG);
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
 * ports and the control socket, the other host's agent is the backup
 * (flags still win). */
static int apply_host(struct replicator_config *cfg, const char *file, const char *host_name,
		      const char **backup, bool control_flag)
{
	const struct config_host *peer;

	if (config_host_self(&cfg->file, host_name, "remus-replicator", stderr, &cfg->host))
		return -1;
	if (!cfg->host)
		return 0;
	cfg->config_path = file;
	peer = config_host_peer(&cfg->file, cfg->host);
	if (!*backup)
		*backup = peer->address;
	if (!cfg->n_net_out)
		for (int i = 0; i < cfg->host->net_out.n; i++)
			if (add_net_out(cfg, cfg->host->net_out.v[i]))
				return -1;
	if (!control_flag && cfg->host->control_socket)
		cfg->control_path = cfg->host->control_socket;
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

static int parse(int argc, char **argv, struct replicator_config *cfg, int *use_syslog)
{
	const char *backup = NULL, *host_name = NULL;
	struct cli_config file;
	char err[256];
	unsigned long v;
	int c, vm_flags = 0; /* 1: --qmp given, 2: --domain given */
	bool connect_flag = false, control_flag = false;

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
	if (cli_find_config("remus-replicator", argc, argv, long_opts, OPT_CONFIG,
			    OPT_CHECK_CONFIG, &file))
		return -1;
	if (file.file && !file.help) {
		if (config_read_file(file.file, CONFIG_REPLICATOR, &cfg->file, stderr))
			return -1;
		apply_file(cfg, &backup, use_syslog);
	}
	optind = 0; /* 0, not 1: glibc then also forgets a half-read option cluster */
	opterr = 0;
	while ((c = getopt_long(argc, argv, "vh", long_opts, NULL)) != -1) {
		switch (c) {
		case OPT_CONFIG: case OPT_CHECK_CONFIG: break; /* found above */
		case OPT_HOST: host_name = optarg; break;
		case OPT_ANNOUNCE: cfg->announce = true; break;
		case OPT_GENERATION:
			if (cli_parse_ulong("--generation", optarg, 0, ~0ul >> 2, &v))
				return -1;
			cfg->generation = v;
			break;
		/* A flag names the VM over the file, whichever way the file did. */
		case OPT_QMP: cfg->qmp_path = optarg; vm_flags |= 1; cfg->domain = NULL; break;
		case OPT_DOMAIN: cfg->domain = optarg; vm_flags |= 2; cfg->qmp_path = NULL; break;
		case OPT_CONNECT: cfg->libvirt_uri = optarg; connect_flag = true; break;
		case OPT_NOTIFY: cfg->notify_cmd = optarg; break;
		case OPT_PAIR: cfg->pair_name = optarg; break;
		case OPT_KEY_FILE: cfg->key_file = optarg; break;
		case OPT_CLEARTEXT: cfg->cleartext_link = true; break;
		case OPT_BACKUP: backup = optarg; break;
		case OPT_RAM_FILE: cfg->ram_file = optarg; break;
		case OPT_CONTROL:
			cfg->control_path = optarg;
			control_flag = true;
			pair_role_carry_add(&cfg->carry, "--control", optarg);
			break;
		case OPT_CONTROL_GROUP:
			cfg->control_group = optarg;
			pair_role_carry_add(&cfg->carry, "--control-group", optarg);
			break;
		case OPT_SYSLOG:
			*use_syslog = 1;
			pair_role_carry_add(&cfg->carry, "--syslog", NULL);
			break;
		case OPT_EPOCH_MS:
			if (cli_parse_ulong("--epoch-ms", optarg, RANGE_EPOCH_MS, &v))
				return -1;
			cfg->epoch_ms = (unsigned)v;
			break;
		case OPT_EPOCH_POLICY:
			if (epoch_policy_parse(optarg, &cfg->policy.kind)) {
				fprintf(stderr, "remus-replicator: --epoch-policy: '%s' is not fixed, "
					"dirty-rate, output-aware or hybrid\n", optarg);
				return -1;
			}
			break;
		case OPT_EPOCH_MIN_MS:
			if (cli_parse_ulong("--epoch-min-ms", optarg, RANGE_EPOCH_MS, &v))
				return -1;
			cfg->policy.min_ms = (unsigned)v;
			break;
		case OPT_EPOCH_MAX_MS:
			if (cli_parse_ulong("--epoch-max-ms", optarg, RANGE_EPOCH_MS, &v))
				return -1;
			cfg->policy.max_ms = (unsigned)v;
			break;
		case OPT_MAX_OVERHEAD:
			if (cli_parse_ulong("--max-overhead", optarg, RANGE_OVERHEAD_PCT, &v))
				return -1;
			cfg->policy.max_overhead = (double)v / 100;
			break;
		case OPT_OUTPUT_DELAY_MS:
			if (cli_parse_ulong("--output-delay-ms", optarg, RANGE_OUTPUT_DELAY_MS, &v))
				return -1;
			cfg->policy.output_delay_ms = (unsigned)v;
			break;
		case OPT_HEARTBEAT_MS:
			if (cli_parse_ulong("--heartbeat-ms", optarg, RANGE_HEARTBEAT_MS, &v))
				return -1;
			cfg->heartbeat_ms = (unsigned)v;
			break;
		case OPT_TIMEOUT_MS:
			if (cli_parse_ulong("--timeout-ms", optarg, RANGE_TIMEOUT_MS, &v))
				return -1;
			cfg->timeout_ms = (unsigned)v;
			break;
		case OPT_CAPTURE_THREADS:
			if (cli_parse_ulong("--capture-threads", optarg, RANGE_CAPTURE_THREADS, &v))
				return -1;
			cfg->capture_threads = (unsigned)v;
			break;
		case OPT_NET_OUT:
			if (add_net_out(cfg, optarg))
				return -1;
			break;
		case OPT_DISK_CAP_MB:
			if (cli_parse_ulong("--disk-cap-mb", optarg, RANGE_DISK_CAP_MB, &v))
				return -1;
			cfg->disk_cap_bytes = v << 20;
			break;
		case OPT_DISK_CAPTURE:
			if (strcmp(optarg, "mirror") && strcmp(optarg, "bitmap")) {
				fprintf(stderr, "remus-replicator: --disk-capture: '%s' is not mirror "
					"or bitmap\n", optarg);
				return -1;
			}
			cfg->disk_capture_bitmap = !strcmp(optarg, "bitmap");
			break;
		case OPT_NET_CAP_MB:
			if (cli_parse_ulong("--net-cap-mb", optarg, RANGE_NET_CAP_MB, &v))
				return -1;
			cfg->net_cap_bytes = v << 20;
			break;
		case OPT_TEST_DISK_UNBUFFERED:
			cfg->test_disk_unbuffered = true;
			break;
		case OPT_NO_OUTPUT_COMMIT:
			cfg->no_output_commit = true;
			break;
		case OPT_COMPRESS:
			if (compress_parse_mode(optarg, &cfg->compress)) {
				fprintf(stderr, "remus-replicator: --compress: '%s' is not auto, on or "
					"off\n", optarg);
				return -1;
			}
			break;
		case OPT_COMPRESS_CACHE_MB:
			if (cli_parse_ulong("--compress-cache-mb", optarg, RANGE_COMPRESS_CACHE_MB, &v))
				return -1;
			cfg->compress_cache_mb = (unsigned)v;
			break;
		case OPT_TRACKER:
			if (strcmp(optarg, "auto") && strcmp(optarg, "compare") &&
			    strcmp(optarg, "hash") && strcmp(optarg, "soft-dirty")) {
				fprintf(stderr, "remus-replicator: --tracker: '%s' is not auto, compare, "
					"hash or soft-dirty\n", optarg);
				return -1;
			}
			cfg->tracker = optarg;
			break;
		case OPT_UNPROTECTED_DISK:
			if (cfg->n_unprotected_disks == REPLICATOR_MAX_DISKS) {
				fprintf(stderr, "remus-replicator: --unprotected-disk: at most %d\n",
					REPLICATOR_MAX_DISKS);
				return -1;
			}
			cfg->unprotected_disks[cfg->n_unprotected_disks++] = optarg;
			break;
		case OPT_TEST_CORRUPT:
			if (cli_parse_ulong("--test-corrupt-epoch", optarg, 1, ~0ul >> 1, &v))
				return -1;
			cfg->test_corrupt_epoch = (int64_t)v;
			break;
		case 'v':
			log_set_level(LOG_DEBUG);
			pair_role_carry_add(&cfg->carry, "-v", NULL);
			break;
		case 'h': replicator_usage(stdout); return 1;
		case CLI_OPT_VERSION: cli_print_version("remus-replicator"); return 1;
		default:
			cli_bad_option("remus-replicator", argc, argv, optopt);
			return -1;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "remus-replicator: unexpected argument '%s'\n", argv[optind]);
		return -1;
	}
	if (apply_host(cfg, file.file, host_name, &backup, control_flag) || apply_file_lists(cfg))
		return -1;
	if (vm_flags == 3 || (!cfg->qmp_path && !cfg->domain) || !backup) {
		fprintf(stderr, "remus-replicator: %s (see --help)\n",
			vm_flags == 3 ? "--qmp and --domain exclude each other" :
			!backup ? "--backup HOST:PORT is required" :
				  "--qmp PATH or --domain NAME is required");
		return -1;
	}
	if (cfg->libvirt_uri && !cfg->domain) {
		if (connect_flag) {
			fprintf(stderr, "remus-replicator: --connect needs --domain NAME\n");
			return -1;
		}
		cfg->libvirt_uri = NULL; /* the file's, for a domain --qmp replaced */
	}
	if (cfg->domain && !cfg->libvirt_uri)
		cfg->libvirt_uri = "qemu:///system";
	if (cfg->domain && cfg->disk_capture_bitmap) {
		/* QEMU has one NBD server, and libvirt starts and stops it for
		 * its own migrations and backups. */
		fprintf(stderr, "remus-replicator: --disk-capture bitmap needs plain QEMU over "
			"--qmp: libvirt keeps QEMU's NBD server for its own use\n");
		return -1;
	}
	if (netaddr_parse(backup, &cfg->backup, err, sizeof(err))) {
		fprintf(stderr, "remus-replicator: --backup: %s\n", err);
		return -1;
	}
	cfg->policy.fixed_ms = cfg->epoch_ms;
	if (cfg->policy.min_ms > cfg->policy.max_ms) {
		fprintf(stderr, "remus-replicator: --epoch-min-ms (%u) is above --epoch-max-ms (%u)\n",
			cfg->policy.min_ms, cfg->policy.max_ms);
		return -1;
	}
	if (cfg->timeout_ms <= cfg->heartbeat_ms) {
		fprintf(stderr, "remus-replicator: --timeout-ms (%u) must be longer than "
			"--heartbeat-ms (%u)\n", cfg->timeout_ms, cfg->heartbeat_ms);
		return -1;
	}
	if (check_hooks(cfg) || resolve_control_group(cfg))
		return -1;
	if (file.check) {
		printf("%s: ok\n", file.file);
		return 1;
	}
	return 0;
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

