/* remus-agent's command line. */
#include "agent.h"
#include "cli.h"
#include "log.h"

#include <getopt.h>
#include <stdio.h>
#include <string.h>

void agent_usage(FILE *f)
{
	fprintf(f,
"Usage: remus-agent --listen HOST:PORT --state-dir DIR [options]\n"
"       remus-agent --restore --state-dir DIR\n"
"\n"
"The backup side of a replicated VM. Accepts one primary (remus-replicator)\n"
"at a time, keeps a replica of its VM in DIR (RAM image, device state,\n"
"vm.json), commits an epoch only when it is complete and its checksums\n"
"match, and acknowledges it. When the primary is lost (connection gone, or\n"
"no heartbeat for --timeout-ms) it restores the VM from the last committed\n"
"checkpoint: the primary's QEMU command line with RAM on a copy of the\n"
"replica, serial console in DIR/serial.log, QMP on DIR/qmp.sock; then it\n"
"exits, leaving the VM running. A primary that detaches on purpose\n"
"(SIGTERM to the replicator, or a guest shutdown) is not failed over, nor\n"
"is one whose protection the operator paused (remusctl pause): its replica\n"
"is stale. A planned handover (remusctl failover) restores the VM the same\n"
"way, answers the primary, and exits. Under systemd (Type=notify) it\n"
"reports READY=1 once listening and STATUS= changes.\n"
"\n"
"Options:\n"
"  --listen HOST:PORT    where the replicator connects (required)\n"
"  --state-dir DIR       replica and restored-VM files (required)\n"
"  --timeout-ms N        primary silent this long counts as lost (default %u)\n"
"  --heartbeat-ms N      heartbeat interval when idle (default %u)\n"
"  --tap [ID=]NAME       the restored VM's NIC (netdev ID; may be left out if\n"
"                        there is one) on TAP device NAME, which must be on\n"
"                        the LAN bridge (ip tuntap add NAME mode tap; ip link\n"
"                        set NAME master BRIDGE up); the VM then announces\n"
"                        its MAC address there. Without it the NIC is cut off\n"
"  --no-failover         keep the replica but never restore automatically\n"
"  --restore             restore the committed replica in DIR now and exit\n"
"  --syslog              log to syslog instead of stderr\n"
"  -v, --verbose         debug logging\n"
"  -h, --help            this text\n"
"\n"
"Exit status: 0 failover or handover done, or stopped by signal, 1 restore\n"
"failed after the primary was lost, 2 usage error or cannot listen.\n",
		AGENT_DEFAULT_TIMEOUT_MS, AGENT_DEFAULT_HEARTBEAT_MS);
}

enum { OPT_LISTEN = 256, OPT_STATE_DIR, OPT_TIMEOUT_MS, OPT_HEARTBEAT_MS,
       OPT_NO_FAILOVER, OPT_RESTORE, OPT_SYSLOG, OPT_TAP };

static const struct option long_opts[] = {
	{ "listen", required_argument, NULL, OPT_LISTEN },
	{ "state-dir", required_argument, NULL, OPT_STATE_DIR },
	{ "timeout-ms", required_argument, NULL, OPT_TIMEOUT_MS },
	{ "heartbeat-ms", required_argument, NULL, OPT_HEARTBEAT_MS },
	{ "no-failover", no_argument, NULL, OPT_NO_FAILOVER },
	{ "restore", no_argument, NULL, OPT_RESTORE },
	{ "tap", required_argument, NULL, OPT_TAP },
	{ "syslog", no_argument, NULL, OPT_SYSLOG },
	{ "verbose", no_argument, NULL, 'v' },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

int agent_parse_args(int argc, char **argv, struct agent_config *cfg, int *use_syslog)
{
	const char *listen = NULL;
	char err[256];
	unsigned long v;
	int c;

	*cfg = (struct agent_config){
		.timeout_ms = AGENT_DEFAULT_TIMEOUT_MS,
		.heartbeat_ms = AGENT_DEFAULT_HEARTBEAT_MS,
	};
	optind = 0; /* 0, not 1: glibc then also forgets a half-read option cluster */
	opterr = 0;
	while ((c = getopt_long(argc, argv, "vh", long_opts, NULL)) != -1) {
		switch (c) {
		case OPT_LISTEN: listen = optarg; break;
		case OPT_STATE_DIR: cfg->state_dir = optarg; break;
		case OPT_NO_FAILOVER: cfg->no_failover = true; break;
		case OPT_RESTORE: cfg->restore_now = true; break;
		case OPT_SYSLOG: *use_syslog = 1; break;
		case OPT_TAP:
			if (cfg->restore.ntaps == AGENT_MAX_TAPS || !*optarg) {
				fprintf(stderr, "remus-agent: --tap: at most %d, each [ID=]NAME\n",
					AGENT_MAX_TAPS);
				return -1;
			}
			cfg->taps[cfg->restore.ntaps++] = optarg;
			break;
		case OPT_TIMEOUT_MS:
			if (cli_parse_ulong("--timeout-ms", optarg, 50, 600000, &v))
				return -1;
			cfg->timeout_ms = (unsigned)v;
			break;
		case OPT_HEARTBEAT_MS:
			if (cli_parse_ulong("--heartbeat-ms", optarg, 10, 60000, &v))
				return -1;
			cfg->heartbeat_ms = (unsigned)v;
			break;
		case 'v': log_set_level(LOG_DEBUG); break;
		case 'h': agent_usage(stdout); return 1;
		default:
			cli_bad_option("remus-agent", argc, argv, optopt);
			return -1;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "remus-agent: unexpected argument '%s'\n", argv[optind]);
		return -1;
	}
	if (!cfg->state_dir) {
		fprintf(stderr, "remus-agent: --state-dir DIR is required (see --help)\n");
		return -1;
	}
	cfg->restore.dir = cfg->state_dir;
	cfg->restore.taps = cfg->taps;
	if (cfg->restore_now)
		return listen ? (fprintf(stderr, "remus-agent: --restore takes no --listen\n"), -1) : 0;
	if (!listen) {
		fprintf(stderr, "remus-agent: --listen HOST:PORT is required (see --help)\n");
		return -1;
	}
	if (netaddr_parse(listen, &cfg->listen, err, sizeof(err))) {
		fprintf(stderr, "remus-agent: --listen: %s\n", err);
		return -1;
	}
	if (cfg->timeout_ms <= cfg->heartbeat_ms) {
		fprintf(stderr, "remus-agent: --timeout-ms (%u) must be longer than "
			"--heartbeat-ms (%u)\n", cfg->timeout_ms, cfg->heartbeat_ms);
		return -1;
	}
	return 0;
}
