/* remus-replicator's command line. */
#include "log.h"
#include "replicator.h"
#include "cli.h"

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
"\n"
"Attach to a running QEMU through its QMP socket and replicate it to the\n"
"backup agent (remus-agent) at HOST:PORT: every epoch the VM is paused,\n"
"its changed pages and device state are captured, it is resumed at once,\n"
"and the checkpoint is streamed to the backup. The VM's RAM must be on a\n"
"shared memory backend, e.g.\n"
"  -object memory-backend-file,id=ram0,size=128M,mem-path=/dev/shm/vm.ram,share=on\n"
"  -machine memory-backend=ram0\n"
"\n"
"Options:\n"
"  --qmp PATH            QEMU's QMP unix socket (required)\n"
"  --backup HOST:PORT    the backup agent (required)\n"
"  --ram-file PATH       guest RAM file (default: asked from QEMU)\n"
"  --epoch-policy P      fixed, dirty-rate, output-aware or hybrid (default):\n"
"                        how long each epoch runs (see docs/EPOCHS.md)\n"
"  --epoch-ms N          the epoch length of 'fixed', the first epochs' of\n"
"                        the others (default %u, 5-10000)\n"
"  --epoch-min-ms N      shortest epoch of an adaptive policy (default %u)\n"
"  --epoch-max-ms N      longest epoch of an adaptive policy (default %u)\n"
"  --max-overhead PCT    dirty-rate/hybrid: the pause's share of the VM's\n"
"                        time to stay under (default %u)\n"
"  --output-delay-ms N   output-aware/hybrid: end the epoch this long after\n"
"                        output starts waiting for it (default %u)\n"
"  --control PATH        control socket for remusctl (default: none)\n"
"  --tracker KIND        how dirty pages are found: compare (default: scan all\n"
"                        of RAM against a copy), soft-dirty (the kernel's\n"
"                        log of QEMU's writes, docs/SOFT-DIRTY.md; tested\n"
"                        for soundness, not yet end to end with QEMU), or\n"
"                        auto (soft-dirty if the kernel has it, else compare)\n"
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
"                        both hosts share, left out of replication; any other\n"
"                        writable disk is refused (disks are not replicated)\n"
"  --heartbeat-ms N      heartbeat interval when idle (default %u)\n"
"  --timeout-ms N        backup silent this long counts as lost (default %u);\n"
"                        then held output is released. With a fencing\n"
"                        backup, keep it above the agent's --timeout-ms plus\n"
"                        its --fence-timeout-ms (README, Hooks)\n"
"  --notify CMD          run CMD PAIR VM EVENT primary on each event:\n"
"                        protected, unprotected, vm-lost, detached (README,\n"
"                        Hooks)\n"
"  --pair NAME           the pair's name for hooks (default: the VM's name)\n"
"  --syslog              log to syslog instead of stderr\n"
"  -v, --verbose         debug logging\n"
"  -h, --help            this text\n"
"\n"
"SIGTERM or SIGINT detaches: the VM keeps running, unprotected, and the\n"
"backup is told not to take over.\n"
"Exit status: 0 detached or VM shut down, 1 QEMU died (the backup takes\n"
"over), 2 usage error or VM refused.\n",
		REPLICATOR_DEFAULT_EPOCH_MS, REPLICATOR_DEFAULT_EPOCH_MIN_MS,
		REPLICATOR_DEFAULT_EPOCH_MAX_MS, REPLICATOR_DEFAULT_OVERHEAD_PCT,
		REPLICATOR_DEFAULT_OUTPUT_DELAY_MS, sysconf(_SC_NPROCESSORS_ONLN),
		REPLICATOR_DEFAULT_NET_CAP_MB, REPLICATOR_DEFAULT_HEARTBEAT_MS,
		REPLICATOR_DEFAULT_TIMEOUT_MS);
}

enum { OPT_QMP = 256, OPT_BACKUP, OPT_RAM_FILE, OPT_EPOCH_MS, OPT_CONTROL,
       OPT_HEARTBEAT_MS, OPT_TIMEOUT_MS, OPT_SYSLOG, OPT_TEST_CORRUPT,
       OPT_CAPTURE_THREADS, OPT_NET_OUT, OPT_NET_CAP_MB, OPT_NO_OUTPUT_COMMIT,
       OPT_EPOCH_POLICY, OPT_EPOCH_MIN_MS, OPT_EPOCH_MAX_MS, OPT_MAX_OVERHEAD,
       OPT_OUTPUT_DELAY_MS, OPT_TRACKER, OPT_UNPROTECTED_DISK, OPT_NOTIFY, OPT_PAIR };

static const struct option long_opts[] = {
	{ "qmp", required_argument, NULL, OPT_QMP },
	{ "backup", required_argument, NULL, OPT_BACKUP },
	{ "ram-file", required_argument, NULL, OPT_RAM_FILE },
	{ "epoch-ms", required_argument, NULL, OPT_EPOCH_MS },
	{ "epoch-policy", required_argument, NULL, OPT_EPOCH_POLICY },
	{ "epoch-min-ms", required_argument, NULL, OPT_EPOCH_MIN_MS },
	{ "epoch-max-ms", required_argument, NULL, OPT_EPOCH_MAX_MS },
	{ "max-overhead", required_argument, NULL, OPT_MAX_OVERHEAD },
	{ "output-delay-ms", required_argument, NULL, OPT_OUTPUT_DELAY_MS },
	{ "control", required_argument, NULL, OPT_CONTROL },
	{ "heartbeat-ms", required_argument, NULL, OPT_HEARTBEAT_MS },
	{ "timeout-ms", required_argument, NULL, OPT_TIMEOUT_MS },
	{ "capture-threads", required_argument, NULL, OPT_CAPTURE_THREADS },
	{ "tracker", required_argument, NULL, OPT_TRACKER },
	{ "unprotected-disk", required_argument, NULL, OPT_UNPROTECTED_DISK },
	{ "net-out", required_argument, NULL, OPT_NET_OUT },
	{ "net-cap-mb", required_argument, NULL, OPT_NET_CAP_MB },
	{ "notify", required_argument, NULL, OPT_NOTIFY },
	{ "pair", required_argument, NULL, OPT_PAIR },
	/* test only: let output through before its checkpoint commits */
	{ "no-output-commit", no_argument, NULL, OPT_NO_OUTPUT_COMMIT },
	{ "syslog", no_argument, NULL, OPT_SYSLOG },
	/* test only: corrupt one frame of this epoch on the wire */
	{ "test-corrupt-epoch", required_argument, NULL, OPT_TEST_CORRUPT },
	{ "verbose", no_argument, NULL, 'v' },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

int replicator_parse_args(int argc, char **argv, struct replicator_config *cfg,
			  int *use_syslog)
{
	const char *backup = NULL;
	char err[256];
	unsigned long v;
	int c;

	*cfg = (struct replicator_config){
		.epoch_ms = REPLICATOR_DEFAULT_EPOCH_MS,
		.heartbeat_ms = REPLICATOR_DEFAULT_HEARTBEAT_MS,
		.timeout_ms = REPLICATOR_DEFAULT_TIMEOUT_MS,
		.test_corrupt_epoch = -1,
		.capture_threads = default_capture_threads(),
		.net_cap_bytes = (size_t)REPLICATOR_DEFAULT_NET_CAP_MB << 20,
		/* compare until soft-dirty has run end to end with QEMU */
		.tracker = "compare",
		.policy = {
			.kind = POLICY_HYBRID,
			.min_ms = REPLICATOR_DEFAULT_EPOCH_MIN_MS,
			.max_ms = REPLICATOR_DEFAULT_EPOCH_MAX_MS,
			.max_overhead = REPLICATOR_DEFAULT_OVERHEAD_PCT / 100.0,
			.output_delay_ms = REPLICATOR_DEFAULT_OUTPUT_DELAY_MS,
		},
	};
	optind = 0; /* 0, not 1: glibc then also forgets a half-read option cluster */
	opterr = 0;
	while ((c = getopt_long(argc, argv, "vh", long_opts, NULL)) != -1) {
		switch (c) {
		case OPT_QMP: cfg->qmp_path = optarg; break;
		case OPT_BACKUP: backup = optarg; break;
		case OPT_RAM_FILE: cfg->ram_file = optarg; break;
		case OPT_CONTROL: cfg->control_path = optarg; break;
		case OPT_NOTIFY: cfg->notify_cmd = optarg; break;
		case OPT_PAIR: cfg->pair_name = optarg; break;
		case OPT_SYSLOG: *use_syslog = 1; break;
		case OPT_EPOCH_MS:
			if (cli_parse_ulong("--epoch-ms", optarg, 5, 10000, &v))
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
			if (cli_parse_ulong("--epoch-min-ms", optarg, 5, 10000, &v))
				return -1;
			cfg->policy.min_ms = (unsigned)v;
			break;
		case OPT_EPOCH_MAX_MS:
			if (cli_parse_ulong("--epoch-max-ms", optarg, 5, 10000, &v))
				return -1;
			cfg->policy.max_ms = (unsigned)v;
			break;
		case OPT_MAX_OVERHEAD:
			if (cli_parse_ulong("--max-overhead", optarg, 1, 90, &v))
				return -1;
			cfg->policy.max_overhead = (double)v / 100;
			break;
		case OPT_OUTPUT_DELAY_MS:
			if (cli_parse_ulong("--output-delay-ms", optarg, 0, 10000, &v))
				return -1;
			cfg->policy.output_delay_ms = (unsigned)v;
			break;
		case OPT_HEARTBEAT_MS:
			if (cli_parse_ulong("--heartbeat-ms", optarg, 10, 60000, &v))
				return -1;
			cfg->heartbeat_ms = (unsigned)v;
			break;
		case OPT_TIMEOUT_MS:
			if (cli_parse_ulong("--timeout-ms", optarg, 50, 600000, &v))
				return -1;
			cfg->timeout_ms = (unsigned)v;
			break;
		case OPT_CAPTURE_THREADS:
			if (cli_parse_ulong("--capture-threads", optarg, 1, 16, &v))
				return -1;
			cfg->capture_threads = (unsigned)v;
			break;
		case OPT_NET_OUT:
			if (add_net_out(cfg, optarg))
				return -1;
			break;
		case OPT_NET_CAP_MB:
			if (cli_parse_ulong("--net-cap-mb", optarg, 1, 4096, &v))
				return -1;
			cfg->net_cap_bytes = v << 20;
			break;
		case OPT_NO_OUTPUT_COMMIT:
			cfg->no_output_commit = true;
			break;
		case OPT_TRACKER:
			if (strcmp(optarg, "auto") && strcmp(optarg, "compare") &&
			    strcmp(optarg, "soft-dirty")) {
				fprintf(stderr, "remus-replicator: --tracker: '%s' is not auto, compare "
					"or soft-dirty\n", optarg);
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
		case 'v': log_set_level(LOG_DEBUG); break;
		case 'h': replicator_usage(stdout); return 1;
		default:
			cli_bad_option("remus-replicator", argc, argv, optopt);
			return -1;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "remus-replicator: unexpected argument '%s'\n", argv[optind]);
		return -1;
	}
	if (!cfg->qmp_path || !backup) {
		fprintf(stderr, "remus-replicator: %s is required (see --help)\n",
			!cfg->qmp_path ? "--qmp PATH" : "--backup HOST:PORT");
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
	return check_hooks(cfg);
}

