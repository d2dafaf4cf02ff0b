/* remus-replicator's command line. */
#include "log.h"
#include "replicator.h"
#include "cli.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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
"  --epoch-ms N          epoch length in ms (default %u, 5-10000)\n"
"  --control PATH        control socket for remusctl (default: none)\n"
"  --capture-threads N   threads that scan guest RAM in the pause\n"
"                        (default: one per online CPU, %ld here)\n"
"  --heartbeat-ms N      heartbeat interval when idle (default %u)\n"
"  --timeout-ms N        backup silent this long counts as lost (default %u)\n"
"  --syslog              log to syslog instead of stderr\n"
"  -v, --verbose         debug logging\n"
"  -h, --help            this text\n"
"\n"
"SIGTERM or SIGINT detaches: the VM keeps running, unprotected, and the\n"
"backup is told not to take over.\n"
"Exit status: 0 detached or VM shut down, 1 QEMU died (the backup takes\n"
"over), 2 usage error or VM refused.\n",
		REPLICATOR_DEFAULT_EPOCH_MS, sysconf(_SC_NPROCESSORS_ONLN),
		REPLICATOR_DEFAULT_HEARTBEAT_MS,
		REPLICATOR_DEFAULT_TIMEOUT_MS);
}

enum { OPT_QMP = 256, OPT_BACKUP, OPT_RAM_FILE, OPT_EPOCH_MS, OPT_CONTROL,
       OPT_HEARTBEAT_MS, OPT_TIMEOUT_MS, OPT_SYSLOG, OPT_TEST_CORRUPT,
       OPT_CAPTURE_THREADS };

static const struct option long_opts[] = {
	{ "qmp", required_argument, NULL, OPT_QMP },
	{ "backup", required_argument, NULL, OPT_BACKUP },
	{ "ram-file", required_argument, NULL, OPT_RAM_FILE },
	{ "epoch-ms", required_argument, NULL, OPT_EPOCH_MS },
	{ "control", required_argument, NULL, OPT_CONTROL },
	{ "heartbeat-ms", required_argument, NULL, OPT_HEARTBEAT_MS },
	{ "timeout-ms", required_argument, NULL, OPT_TIMEOUT_MS },
	{ "capture-threads", required_argument, NULL, OPT_CAPTURE_THREADS },
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
	};
	optind = 0; /* 0, not 1: glibc then also forgets a half-read option cluster */
	opterr = 0;
	while ((c = getopt_long(argc, argv, "vh", long_opts, NULL)) != -1) {
		switch (c) {
		case OPT_QMP: cfg->qmp_path = optarg; break;
		case OPT_BACKUP: backup = optarg; break;
		case OPT_RAM_FILE: cfg->ram_file = optarg; break;
		case OPT_CONTROL: cfg->control_path = optarg; break;
		case OPT_SYSLOG: *use_syslog = 1; break;
		case OPT_EPOCH_MS:
			if (cli_parse_ulong("--epoch-ms", optarg, 5, 10000, &v))
				return -1;
			cfg->epoch_ms = (unsigned)v;
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
	if (cfg->timeout_ms <= cfg->heartbeat_ms) {
		fprintf(stderr, "remus-replicator: --timeout-ms (%u) must be longer than "
			"--heartbeat-ms (%u)\n", cfg->timeout_ms, cfg->heartbeat_ms);
		return -1;
	}
	return 0;
}

