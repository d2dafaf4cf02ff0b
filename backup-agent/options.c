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
"no heartbeat for --timeout-ms) it runs the --fence command, then restores\n"
"the VM from the last committed checkpoint: the primary's QEMU command line\n"
"with RAM on a copy of the replica, serial console in DIR/serial.log, QMP on\n"
"DIR/qmp.sock; then it exits, leaving the VM running. A primary that detaches\n"
"on purpose (SIGTERM to the replicator, or a guest shutdown) is not failed\n"
"over.\n"
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
"  --fence CMD           run CMD (through /bin/sh -c, with PAIR VM fencing\n"
"                        backup appended) before taking over; only its exit\n"
"                        status 0 lets the agent restore the VM. On failure\n"
"                        or timeout the VM is not restored (the replica is\n"
"                        kept, --restore works by hand). See README, Hooks\n"
"  --no-fence            take over without fencing: for hosts where a lost\n"
"                        link always means a lost primary. Without --fence or\n"
"                        --no-fence the agent warns at start: a lost link with\n"
"                        a live primary then leads to two running VMs\n"
"  --fence-timeout-ms N  the fence command's time limit; then its process\n"
"                        group is killed and fencing failed (default %u)\n"
"  --notify CMD          run CMD PAIR VM EVENT backup on each event: backup,\n"
"                        fencing, fence-failed, master, fault (README, Hooks)\n"
"  --pair NAME           the pair's name for hooks (default: the VM's name)\n"
"  --no-failover         keep the replica but never restore automatically\n"
"  --restore             restore the committed replica in DIR now and exit\n"
"  --syslog              log to syslog instead of stderr\n"
"  -v, --verbose         debug logging\n"
"  -h, --help            this text\n"
"\n"
"Exit status: 0 failover done or stopped by signal, 1 restore failed,\n"
"2 usage error or cannot listen. A failed fence does not end the agent:\n"
"it keeps the replica and waits for the primary to come back.\n",
		AGENT_DEFAULT_TIMEOUT_MS, AGENT_DEFAULT_HEARTBEAT_MS,
		AGENT_DEFAULT_FENCE_TIMEOUT_MS);
}

enum { OPT_LISTEN = 256, OPT_STATE_DIR, OPT_TIMEOUT_MS, OPT_HEARTBEAT_MS,
       OPT_NO_FAILOVER, OPT_RESTORE, OPT_SYSLOG, OPT_TAP, OPT_FENCE, OPT_NO_FENCE,
       OPT_FENCE_TIMEOUT_MS, OPT_NOTIFY, OPT_PAIR };

static const struct option long_opts[] = {
	{ "listen", required_argument, NULL, OPT_LISTEN },
	{ "state-dir", required_argument, NULL, OPT_STATE_DIR },
	{ "timeout-ms", required_argument, NULL, OPT_TIMEOUT_MS },
	{ "heartbeat-ms", required_argument, NULL, OPT_HEARTBEAT_MS },
	{ "no-failover", no_argument, NULL, OPT_NO_FAILOVER },
	{ "restore", no_argument, NULL, OPT_RESTORE },
	{ "tap", required_argument, NULL, OPT_TAP },
	{ "fence", required_argument, NULL, OPT_FENCE },
	{ "no-fence", no_argument, NULL, OPT_NO_FENCE },
	{ "fence-timeout-ms", required_argument, NULL, OPT_FENCE_TIMEOUT_MS },
	{ "notify", required_argument, NULL, OPT_NOTIFY },
	{ "pair", required_argument, NULL, OPT_PAIR },
	{ "syslog", no_argument, NULL, OPT_SYSLOG },
	{ "verbose", no_argument, NULL, 'v' },
	{ "help", no_argument, NULL, 'h' },
	{ NULL, 0, NULL, 0 },
};

/* Hook options that cannot work are refused now, not at failover time. */
static int check_hooks(const struct agent_config *cfg)
{
	char err[512];

	if (cfg->fence_cmd && cfg->fence_disabled) {
		fprintf(stderr, "remus-agent: --fence and --no-fence exclude each other\n");
		return -1;
	}
	if (cfg->fence_cmd && hook_check(cfg->fence_cmd, err, sizeof(err))) {
		fprintf(stderr, "remus-agent: --fence: cannot run it: %s\n", err);
		return -1;
	}
	if (cfg->notify_cmd && hook_check(cfg->notify_cmd, err, sizeof(err))) {
		fprintf(stderr, "remus-agent: --notify: cannot run it: %s\n", err);
		return -1;
	}
	if (cfg->pair_name && (!*cfg->pair_name || strlen(cfg->pair_name) > 64)) {
		fprintf(stderr, "remus-agent: --pair: '%s' must be 1-64 characters\n",
			cfg->pair_name);
		return -1;
	}
	return 0;
}

int agent_parse_args(int argc, char **argv, struct agent_config *cfg, int *use_syslog)
{
	const char *listen = NULL;
	char err[256];
	unsigned long v;
	int c;

	*cfg = (struct agent_config){
		.timeout_ms = AGENT_DEFAULT_TIMEOUT_MS,
		.heartbeat_ms = AGENT_DEFAULT_HEARTBEAT_MS,
		.fence_timeout_ms = AGENT_DEFAULT_FENCE_TIMEOUT_MS,
	};
	optind = 0; /* 0, not 1: glibc then also forgets a half-read option cluster */
	opterr = 0;
	while ((c = getopt_long(argc, argv, "vh", long_opts, NULL)) != -1) {
		switch (c) {
		case OPT_LISTEN: listen = optarg; break;
		case OPT_STATE_DIR: cfg->state_dir = optarg; break;
		case OPT_NO_FAILOVER: cfg->no_failover = true; break;
		case OPT_RESTORE: cfg->restore_now = true; break;
		case OPT_FENCE: cfg->fence_cmd = optarg; break;
		case OPT_NO_FENCE: cfg->fence_disabled = true; break;
		case OPT_NOTIFY: cfg->notify_cmd = optarg; break;
		case OPT_PAIR: cfg->pair_name = optarg; break;
		case OPT_FENCE_TIMEOUT_MS:
			if (cli_parse_ulong("--fence-timeout-ms", optarg, 100, 600000, &v))
				return -1;
			cfg->fence_timeout_ms = (unsigned)v;
			break;
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
	if (check_hooks(cfg))
		return -1;
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
