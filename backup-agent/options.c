/* remus-agent's command line. */
#include "agent.h"
#include "cli_daemon.h"
#include "hooks.h"
#include "config.h"
#include "log.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

void agent_usage(FILE *f)
{
	fprintf(f,
"Usage: remus-agent --listen HOST:PORT --state-dir DIR [options]\n"
"       remus-agent --config FILE [options]\n"
"       remus-agent --restore --state-dir DIR [--after-host-restart]\n"
"       remus-agent --forget-pair --state-dir DIR\n"
"\n"
"The backup side of a replicated VM. Accepts one primary (remus-replicator)\n"
"at a time, keeps a replica of its VM in DIR (RAM image, device state,\n"
"disk images, vm.json), commits an epoch only when it is complete and its\n"
"checksums match, and acknowledges it. When the primary is lost (connection\n"
"gone, or no heartbeat for --timeout-ms) it runs the --fence command, then\n"
"restores the VM from the last committed checkpoint: the primary's QEMU\n"
"command line with RAM on a copy of the replica and its disks on qcow2\n"
"overlays over the replica disks, serial console in DIR/serial.log, QMP on\n"
"DIR/qmp.sock (a libvirt primary's VM comes back as a libvirt domain of\n"
"the same name, see --connect); then it exits, leaving the VM running. A\n"
"primary that detaches on purpose (SIGTERM to the replicator, or a guest\n"
"shutdown) is not failed over, nor is one whose protection the operator\n"
"paused (remusctl pause): its replica is stale. A planned handover (remusctl\n"
"failover) restores the VM the same way, answers the primary, and exits.\n"
"With [backup] takeover = manual in --config FILE (a cluster manager such\n"
"as Pacemaker decides, with ocf:remus:remus) it never fences nor restores\n"
"on its own: a lost or parked primary's replica waits, state ready, for\n"
"remusctl takeover (remus.conf(5)).\n"
"Under systemd (Type=notify) it reports READY=1 once listening and\n"
"STATUS= changes.\n"
"\n"
CLI_USAGE_CONFIG
"                        itself: once it has restored the VM here it becomes\n"
"                        its replicator, protecting it to the other host\n"
"                        (README, Pairs whose roles move). The next role\n"
"                        reads only the file: of the command line, --syslog,\n"
"                        --control, --control-group and -v carry over\n"
"  --listen HOST:PORT    where the replicator connects (required, or\n"
"                        [backup] address)\n"
"  --state-dir DIR       replica and restored-VM files (required, or\n"
"                        [backup] state-dir)\n"
"  --timeout-ms N        primary silent this long counts as lost (default %u)\n"
"  --heartbeat-ms N      heartbeat interval when idle (default %u)\n"
"  --tap [ID=]NAME       the restored VM's NIC (netdev ID; may be left out if\n"
"                        there is one) on TAP device NAME, which must be on\n"
"                        the LAN bridge (ip tuntap add NAME mode tap; ip link\n"
"                        set NAME master BRIDGE up); the VM then announces\n"
"                        its MAC address there. Without it the NIC is cut off\n"
"  --emulator PATH       the QEMU binary a restore runs ([backup] emulator;\n"
"                        default %s), whatever the primary ran\n"
"  --shared-disk PATH    an image both hosts see, not replicated (the\n"
"                        primary's --unprotected-disk): the restored VM may\n"
"                        open it. Repeatable ([backup] shared-disk). Any other\n"
"                        image, and any option that names a host path or\n"
"                        program, is refused at HELLO\n"
"  --connect URI         where a libvirt primary's VM is restored: as a libvirt\n"
"                        domain of the same name on this libvirt (default\n"
"                        qemu:///system; or [vm] libvirt-uri; with [host]\n"
"                        sections [host] libvirt-uri, and no --connect). A\n"
"                        plain QEMU primary's VM is restored as plain QEMU\n"
"  --fence CMD           ([hooks] fence) run CMD (through /bin/sh -c, with PAIR VM fencing\n"
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
"  --key-file FILE       the pair key, the same file on both hosts (or [link]\n"
"                        key-file): only a primary that holds it gets past the\n"
"                        TLS 1.3 handshake, and nothing starts without it.\n"
"                        Make one with `remusctl keygen FILE` (docs/SECURITY.md)\n"
"  --insecure-cleartext-link  no TLS: anyone who reaches the port can feed\n"
"                        this agent a VM ([link] insecure-cleartext = yes)\n"
"  --control PATH        control socket for remusctl status (default: none;\n"
"                        [backup] control-socket, by convention\n"
"                        /run/remus/PAIR.agent.ctl); mode 0600: root alone\n"
"                        may use it\n"
"  --control-group NAME  members of group NAME may use the control socket\n"
"                        too (mode 0660, owned by the group)\n"

"  --no-failover         keep the replica but never restore automatically\n"
"  --max-ram-mb N        ([backup] max-ram-mb) refuse a primary whose VM has\n"
"                        more RAM, in MiB (default %u)\n"
"  --max-disk-gb N       ([backup] max-disk-gb) refuse a primary with a disk\n"
"                        larger than N GiB (default %u)\n"
"  --max-epoch-mb N      ([backup] max-epoch-mb) drop (NACK) an epoch that\n"
"                        would hold more than N MiB in memory; it must exceed\n"
"                        the largest epoch, the first after the initial sync\n"
"                        above all (default %u). A primary is also refused\n"
"                        when DIR's file system lacks room for its RAM, its\n"
"                        disks' current replicas and a margin (README)\n"
"  --forget-pair         remove DIR's pin (pair.json) to one VM and one peer,\n"
"                        set by the first session that commits, so that\n"
"                        another VM or primary may use DIR; then exit\n"
"  --restore             restore the committed replica in DIR now and exit;\n"
"                        refused for a replica committed before the host last\n"
"                        started (its RAM and journal are not synced at each\n"
"                        commit), unless\n"
"  --after-host-restart  the host went down cleanly: restore it anyway\n"
CLI_USAGE_LOGGING
"\n"
"Exit status: 0 failover or handover done, or stopped by signal (or\n"
"--check-config found no error), 1 restore failed after the primary was\n"
"lost, 2 usage or config error, cannot listen, or the state directory is in\n"
"use (another agent, or a VM restored from it, holds it). A failed fence does not\n"
"end the agent: it keeps the replica and waits for the primary to return.\n",
		AGENT_DEFAULT_TIMEOUT_MS, AGENT_DEFAULT_HEARTBEAT_MS, AGENT_DEFAULT_EMULATOR,
		AGENT_DEFAULT_FENCE_TIMEOUT_MS, REPLICA_DEFAULT_MAX_RAM_MB,
		REPLICA_DEFAULT_MAX_DISK_GB, REPLICA_DEFAULT_MAX_EPOCH_MB);
}

enum { OPT_LISTEN = 256, OPT_STATE_DIR, OPT_NO_FAILOVER, OPT_RESTORE, OPT_TAP, OPT_CONNECT,
       OPT_FENCE, OPT_NO_FENCE, OPT_FENCE_TIMEOUT_MS, OPT_TEST_DISK_APPLY,
       OPT_AFTER_HOST_RESTART, OPT_EMULATOR, OPT_SHARED_DISK, OPT_MAX_RAM_MB, OPT_MAX_DISK_GB,
       OPT_MAX_EPOCH_MB, OPT_FORGET_PAIR };

static const struct option long_opts[] = {
	{ "listen", required_argument, NULL, OPT_LISTEN },
	{ "state-dir", required_argument, NULL, OPT_STATE_DIR },
	{ "no-failover", no_argument, NULL, OPT_NO_FAILOVER },
	{ "restore", no_argument, NULL, OPT_RESTORE },
	{ "after-host-restart", no_argument, NULL, OPT_AFTER_HOST_RESTART },
	{ "tap", required_argument, NULL, OPT_TAP },
	{ "connect", required_argument, NULL, OPT_CONNECT },
	{ "emulator", required_argument, NULL, OPT_EMULATOR },
	{ "shared-disk", required_argument, NULL, OPT_SHARED_DISK },
	/* test only: apply the replicator's --test-disk-unbuffered frames at once */
	{ "test-disk-apply-on-arrival", no_argument, NULL, OPT_TEST_DISK_APPLY },
	{ "fence", required_argument, NULL, OPT_FENCE },
	{ "no-fence", no_argument, NULL, OPT_NO_FENCE },
	{ "fence-timeout-ms", required_argument, NULL, OPT_FENCE_TIMEOUT_MS },
	{ "max-ram-mb", required_argument, NULL, OPT_MAX_RAM_MB },
	{ "max-disk-gb", required_argument, NULL, OPT_MAX_DISK_GB },
	{ "max-epoch-mb", required_argument, NULL, OPT_MAX_EPOCH_MB },
	{ "forget-pair", no_argument, NULL, OPT_FORGET_PAIR },
	CLI_DAEMON_LONG_OPTIONS,
};

/* The options that only store their value. */
#define CFG struct agent_config
static const struct cli_field fields[] = {
	CLI_DAEMON_FIELDS(CFG),
	CLI_FLAG_FIELD(OPT_NO_FAILOVER, CFG, no_failover),
	CLI_STRING_FIELD(OPT_CONNECT, CFG, restore.libvirt_uri),
	CLI_STRING_FIELD(OPT_EMULATOR, CFG, restore.emulator),
	CLI_FLAG_FIELD(OPT_TEST_DISK_APPLY, CFG, test_disk_apply_on_arrival),
	CLI_FLAG_FIELD(OPT_RESTORE, CFG, restore_now),
	CLI_FLAG_FIELD(OPT_AFTER_HOST_RESTART, CFG, after_host_restart),
	CLI_FLAG_FIELD(OPT_FORGET_PAIR, CFG, forget_pair),
	CLI_NUMBER_FIELD(OPT_FENCE_TIMEOUT_MS, CLI_UINT, 0, CFG, fence_timeout_ms,
			 RANGE_FENCE_TIMEOUT_MS),
	CLI_NUMBER_FIELD(OPT_MAX_RAM_MB, CLI_U64, 20, CFG, limits.max_ram_bytes, RANGE_MAX_RAM_MB),
	CLI_NUMBER_FIELD(OPT_MAX_DISK_GB, CLI_U64, 30, CFG, limits.max_disk_bytes,
			 RANGE_MAX_DISK_GB),
	CLI_NUMBER_FIELD(OPT_MAX_EPOCH_MB, CLI_U64, 20, CFG, limits.max_epoch_bytes,
			 RANGE_MAX_EPOCH_MB),
};
#undef CFG

_Static_assert(CONFIG_MAX_LIST <= AGENT_MAX_TAPS, "a config file's taps must fit the agent's");
_Static_assert(CONFIG_MAX_LIST <= AGENT_MAX_SHARED_DISKS,
	       "a config file's shared disks must fit the agent's");

/* [backup] max-ram-mb, max-disk-gb, max-epoch-mb */
static void apply_file_limits(struct agent_config *cfg)
{
	const struct pair_config *pc = &cfg->file;

	if (PC_SET(pc, BACKUP_MAX_RAM_MB))
		cfg->limits.max_ram_bytes = (uint64_t)pc->backup_max_ram_mb << 20;
	if (PC_SET(pc, BACKUP_MAX_DISK_GB))
		cfg->limits.max_disk_bytes = (uint64_t)pc->backup_max_disk_gb << 30;
	if (PC_SET(pc, BACKUP_MAX_EPOCH_MB))
		cfg->limits.max_epoch_bytes = (uint64_t)pc->backup_max_epoch_mb << 20;
}

/* What the command line says beyond the config's fields. */
struct args {
	struct agent_config *cfg;
	const char *listen;
	bool listen_flag;     /* --restore refuses a --listen flag, not the file's */
	bool state_dir_flag;
	int fence_flags;      /* 1: --fence, 2: --no-fence */
};

/* The --config file's values, over the defaults and under the flags. */
static void apply_file(void *ctx, int *use_syslog)
{
	struct args *a = ctx;
	struct agent_config *cfg = a->cfg;
	const struct pair_config *pc = &cfg->file;

	CONFIG_APPLY_DAEMON_KEYS(pc, cfg, use_syslog);
	if (PC_SET(pc, BACKUP_ADDRESS))
		a->listen = pc->backup_address;
	if (PC_SET(pc, BACKUP_STATE_DIR))
		cfg->state_dir = pc->backup_state_dir;
	if (PC_SET(pc, VM_LIBVIRT_URI))
		cfg->restore.libvirt_uri = pc->vm_libvirt_uri;
	if (PC_SET(pc, BACKUP_EMULATOR))
		cfg->restore.emulator = pc->backup_emulator;
	if (PC_SET(pc, BACKUP_FAILOVER))
		cfg->no_failover = !pc->backup_failover;
	cfg->takeover_manual = PC_SET(pc, BACKUP_TAKEOVER) && !strcmp(pc->backup_takeover, "manual");
	cfg->takeover_window_ms = pc->backup_takeover_window_ms;
	if (PC_SET(pc, HOOKS_FENCE)) {
		/* required in a file: a command, or "none" on purpose */
		cfg->fence_disabled = !strcmp(pc->hooks_fence, "none");
		cfg->fence_cmd = cfg->fence_disabled ? NULL : pc->hooks_fence;
	}
	if (PC_SET(pc, HOOKS_FENCE_TIMEOUT_MS))
		cfg->fence_timeout_ms = pc->hooks_fence_timeout_ms;
	if (PC_SET(pc, BACKUP_CONTROL_SOCKET))
		cfg->control_path = pc->backup_control_socket;
	if (PC_SET(pc, BACKUP_CONTROL_GROUP))
		cfg->control_group = pc->backup_control_group;
	apply_file_limits(cfg);
}

/* A pair whose roles move: this host's [host] section says where we
 * listen, keep the replica and restore a libvirt VM, and the restored
 * VM's NICs stay on their datagram sockets, for the replicator we become
 * (flags still win, but for --connect and --tap). */
static int apply_host(struct agent_config *cfg, const char *file, const char *host_name,
		      const char **listen, bool state_dir_flag, bool control_flag)
{
	if (config_host_self(&cfg->file, host_name, "remus-agent", stderr, &cfg->host))
		return -1;
	if (!cfg->host)
		return 0;
	cfg->config_path = file;
	if (!*listen)
		*listen = cfg->host->address;
	if (!state_dir_flag)
		cfg->state_dir = cfg->host->state_dir;
	if (!control_flag && cfg->host->control_socket)
		cfg->control_path = cfg->host->control_socket;
	/* --connect stored a value that is not the file's [vm] one: the next
	 * role would not know it, and ask another libvirt where the VM runs */
	if (cfg->restore.libvirt_uri != cfg->file.vm_libvirt_uri) {
		fprintf(stderr, "remus-agent: --connect: with [host] sections this host's libvirt "
			"is [host %s] libvirt-uri, which every role reads\n", cfg->host->name);
		return -1;
	}
	if (cfg->host->libvirt_uri)
		cfg->restore.libvirt_uri = cfg->host->libvirt_uri;
	if (cfg->restore.ntaps) {
		fprintf(stderr, "remus-agent: --tap: with [host] sections the restored VM's NICs "
			"go through this host's net buffer ([host %s] net-out)\n", cfg->host->name);
		return -1;
	}
	return 0;
}

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
	return cli_check_daemon("remus-agent", cfg->notify_cmd, cfg->pair_name, cfg->timeout_ms,
				cfg->heartbeat_ms);
}

/* What the options and the file say together. 0, or -1 after printing. */
static int check_args(struct agent_config *cfg, const char *listen, bool listen_flag)
{
	char err[256];

	if (!cfg->state_dir) {
		fprintf(stderr, "remus-agent: --state-dir DIR is required (see --help)\n");
		return -1;
	}
	cfg->restore.dir = cfg->state_dir;
	cfg->restore.taps = cfg->taps;
	cfg->restore.shared_disks = cfg->shared_disks;
	if (!cfg->restore.emulator)
		cfg->restore.emulator = AGENT_DEFAULT_EMULATOR;
	if (access(cfg->restore.emulator, X_OK))
		fprintf(stderr, "remus-agent: warning: --emulator %s: %s; a restore would fail\n",
			cfg->restore.emulator, strerror(errno));
	cfg->restore.lock_fd = -1;  /* agent_run sets it once it holds the lock */
	if (cfg->restore_now && listen_flag) {
		fprintf(stderr, "remus-agent: --restore takes no --listen\n");
		return -1;
	}
	if (cfg->forget_pair && (cfg->restore_now || listen_flag)) {
		fprintf(stderr, "remus-agent: --forget-pair takes only --state-dir\n");
		return -1;
	}
	if (cfg->forget_pair)
		return 0;
	if (cfg->after_host_restart && !cfg->restore_now) {
		fprintf(stderr, "remus-agent: --after-host-restart goes with --restore\n");
		return -1;
	}
	if (cfg->restore_now)
		return 0;
	if (!listen) {
		fprintf(stderr, "remus-agent: --listen HOST:PORT is required (see --help)\n");
		return -1;
	}
	if (netaddr_parse(listen, &cfg->listen, err, sizeof(err))) {
		fprintf(stderr, "remus-agent: --listen: %s\n", err);
		return -1;
	}
	return 0;
}

/* The options that do more than store a value. 1: not one of them; 0:
 * taken; -1: a bad value, printed. */
static int option(void *ctx, int c, const char *arg)
{
	struct args *a = ctx;
	struct agent_config *cfg = a->cfg;

	switch (c) {
	case OPT_LISTEN: a->listen = arg; a->listen_flag = true; return 0;
	case OPT_STATE_DIR: cfg->state_dir = arg; a->state_dir_flag = true; return 0;
	/* a flag decides over the file's fence, whichever it was */
	case OPT_FENCE:
		cfg->fence_cmd = arg;
		cfg->fence_disabled = false;
		a->fence_flags |= 1;
		return 0;
	case OPT_NO_FENCE:
		cfg->fence_disabled = true;
		cfg->fence_cmd = NULL;
		a->fence_flags |= 2;
		return 0;
	case OPT_SHARED_DISK:
		if (cfg->restore.nshared_disks == AGENT_MAX_SHARED_DISKS || *arg != '/') {
			fprintf(stderr, "remus-agent: --shared-disk: at most %d, each an absolute "
				"path\n", AGENT_MAX_SHARED_DISKS);
			return -1;
		}
		cfg->shared_disks[cfg->restore.nshared_disks++] = arg;
		return 0;
	case OPT_TAP:
		if (cfg->restore.ntaps == AGENT_MAX_TAPS || !*arg) {
			fprintf(stderr, "remus-agent: --tap: at most %d, each [ID=]NAME\n",
				AGENT_MAX_TAPS);
			return -1;
		}
		cfg->taps[cfg->restore.ntaps++] = arg;
		return 0;
	}
	return 1;
}

static const struct cli_program program = {
	.name = "remus-agent", .opts = long_opts, .role = CONFIG_AGENT,
	.fields = fields, .nfields = sizeof(fields) / sizeof(fields[0]),
	.option = option, .apply_file = apply_file, .usage = agent_usage,
};

static int parse(int argc, char **argv, struct agent_config *cfg, int *use_syslog)
{
	struct args args = { .cfg = cfg };
	struct cli_service service = CLI_SERVICE_OF(cfg, use_syslog);
	int rc;

	*cfg = (struct agent_config){
		.control_gid = (gid_t)-1,
		.timeout_ms = AGENT_DEFAULT_TIMEOUT_MS,
		.heartbeat_ms = AGENT_DEFAULT_HEARTBEAT_MS,
		.fence_timeout_ms = AGENT_DEFAULT_FENCE_TIMEOUT_MS,
	};
	replica_default_limits(&cfg->limits);
	rc = cli_read_args(&program, &args, &service, &cfg->file, argc, argv, cfg);
	if (rc)
		return rc;
	if (apply_host(cfg, service.file.file, service.host_name, &args.listen, args.state_dir_flag,
		       service.control_flag))
		return -1;
	/* the file's taps, unless flags replaced the list */
	for (int i = 0; !cfg->restore.ntaps && i < cfg->file.backup_taps.n; i++)
		cfg->taps[i] = cfg->file.backup_taps.v[i];
	if (!cfg->restore.ntaps)
		cfg->restore.ntaps = cfg->file.backup_taps.n;
	for (int i = 0; !cfg->restore.nshared_disks && i < cfg->file.backup_shared_disks.n; i++)
		cfg->shared_disks[i] = cfg->file.backup_shared_disks.v[i];
	if (!cfg->restore.nshared_disks)
		cfg->restore.nshared_disks = cfg->file.backup_shared_disks.n;
	if (args.fence_flags == 3) {
		fprintf(stderr, "remus-agent: --fence and --no-fence exclude each other\n");
		return -1;
	}
	if (check_args(cfg, args.listen, args.listen_flag) || check_hooks(cfg) ||
	    control_group_resolve("remus-agent", cfg->control_path, cfg->control_group,
				  &cfg->control_gid))
		return -1;
	return cli_report_checked(&service.file);
}

int agent_parse_args(int argc, char **argv, struct agent_config *cfg, int *use_syslog)
{
	int rc = parse(argc, argv, cfg, use_syslog);

	if (rc)
		agent_config_free(cfg);
	return rc;
}

void agent_config_free(struct agent_config *cfg)
{
	pair_config_free(&cfg->file);
}
