/* Pair config files (common/config.c) and --config / --check-config in the
 * daemons: every key and its default, repeatable keys, flags over the
 * file, and bad files against the exact messages they must print. */
#include "../backup-agent/agent.h"
#include "../replicator/replicator.h"
#include "config.h"

#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define ARGV(...) ((char *[]){ __VA_ARGS__, NULL })

static int count_args(char **argv)
{
	int n = 0;

	while (argv[n])
		n++;
	return n;
}

static void assert_contains(const char *text, const char *want)
{
	ck_assert_msg(strstr(text, want) != NULL, "\"%s\" lacks \"%s\"", text, want);
}

/* ---- the parser on text ---- */

/* Parse text as file "pair.conf" for role; what it printed, malloc'd. */
static int parse_text(const char *text, enum config_role role, struct pair_config *pc,
		      char **errors)
{
	struct config_parser p;
	size_t len = 0;
	FILE *errf = open_memstream(errors, &len);
	int rc;

	ck_assert_ptr_nonnull(errf);
	config_init(&p, pc, "pair.conf", errf);
	while (*text) {
		size_t n = strcspn(text, "\n");

		n += text[n] == '\n';
		config_line(&p, text, n);
		text += n;
	}
	rc = config_finish(&p, role);
	fclose(errf);
	return rc;
}

/* text parses for role without a word of complaint. */
static void parses(const char *text, enum config_role role, struct pair_config *pc)
{
	char *errors;
	int rc = parse_text(text, role, pc, &errors);

	ck_assert_msg(rc == 0, "rc %d: %s", rc, errors);
	ck_assert_str_eq(errors, "");
	free(errors);
}

/* ---- every key ---- */

static const char full_file[] =
	"# every key\n"                                  /* 1 */
	"[pair]\n"                                       /* 2 */
	"name = web1\n"                                  /* 3 */
	"[vm]\n"                                         /* 4 */
	"qmp = /run/vm1.qmp\n"                           /* 5 */
	"libvirt-uri = qemu:///system\n"                 /* 6 */
	"domain = vm1\n"                                 /* 7 */
	"ram-file = /dev/shm/vm1.ram\n"                  /* 8 */
	"[backup]\n"                                     /* 9 */
	"address = 127.0.0.1:7700\n"                     /* 10 */
	"state-dir = /var/lib/remus/vm1\n"               /* 11 */
	"tap = n0=tap0\n"                                /* 12 */
	"failover = no\n"                                /* 13 */
	"emulator = /opt/qemu/bin/qemu-system-x86_64\n"  /* 14 */
	"shared-disk = /srv/shared/data.img\n"           /* 15 */
	"[epoch]\n"                                      /* 16 */
	"policy = dirty-rate\n"                          /* 17 */
	"length-ms = 40\n"                               /* 18 */
	"min-ms = 6\n"                                   /* 19 */
	"max-ms = 9000\n"                                /* 20 */
	"max-overhead = 30\n"                            /* 21 */
	"output-delay-ms = 0\n"                          /* 22 */
	"[capture]\n"                                    /* 23 */
	"tracker = soft-dirty\n"                         /* 24 */
	"threads = 3\n"                                  /* 25 */
	"unprotected-disk = shared0\n"                   /* 26 */
	"disk-cap-mb = 32\n"                             /* 27 */
	"[net-buffer]\n"                                 /* 28 */
	"net-out = n0=packet:eth1\n"                     /* 29 */
	"cap-mb = 64\n"                                  /* 30 */
	"[heartbeat]\n"                                  /* 31 */
	"interval-ms = 250\n"                            /* 32 */
	"timeout-ms = 5000\n"                            /* 33 */
	"[hooks]\n"                                      /* 34 */
	"notify = /etc/remus/notify.sh --pair web1\n"    /* 35 */
	"fence = /usr/sbin/fence_ipmilan --action=off\n" /* 36 */
	"fence-timeout-ms = 20000\n"                     /* 37 */
	"[control]\n"                                    /* 38 */
	"socket = /run/vm1.remus\n"                      /* 39 */
	"group = remus-ops\n"                            /* 40 */
	"[log]\n"                                        /* 41 */
	"target = syslog\n"                              /* 42 */
	"level = debug\n"                                /* 43 */
	"[link]\n"                                       /* 44 */
	"key-file = /etc/remus/web1.key\n"               /* 45 */
	"insecure-cleartext = yes\n"                     /* 46 */
	"compress = on\n"                                /* 47 */
	"compress-cache-mb = 128\n"                      /* 48 */
	"[backup]\n"                                     /* 49 */
	"max-ram-mb = 2048\n"                            /* 50 */
	"max-disk-gb = 100\n"                            /* 51 */
	"max-epoch-mb = 512\n"                           /* 52 */
	"control-socket = /run/remus/web1.agent.ctl\n"   /* 53 */
	"control-group = remus-ops\n"                    /* 54 */
	"takeover = auto\n"                              /* 55 */
	"takeover-window-ms = 20000\n"                   /* 56 */
	"[capture]\n"                                    /* 57 */
	"disk-capture = bitmap\n";                       /* 58 */

START_TEST(test_every_key_parsed)
{
	struct pair_config pc;

	parses(full_file, CONFIG_ANY, &pc);
	for (int k = 0; k < PC_NKEYS; k++)
		ck_assert_msg(pc.set[k], "key %d not set", k);
	ck_assert_str_eq(pc.path, "pair.conf");
	ck_assert_str_eq(pc.pair_name, "web1");
	ck_assert_str_eq(pc.vm_qmp, "/run/vm1.qmp");
	ck_assert_str_eq(pc.vm_libvirt_uri, "qemu:///system");
	ck_assert_str_eq(pc.vm_domain, "vm1");
	ck_assert_str_eq(pc.vm_ram_file, "/dev/shm/vm1.ram");
	ck_assert_str_eq(pc.backup_address, "127.0.0.1:7700");
	ck_assert_str_eq(pc.backup_state_dir, "/var/lib/remus/vm1");
	ck_assert_int_eq(pc.backup_taps.n, 1);
	ck_assert_str_eq(pc.backup_taps.v[0], "n0=tap0");
	ck_assert(!pc.backup_failover);
	ck_assert_uint_eq(pc.backup_max_ram_mb, 2048);
	ck_assert_uint_eq(pc.backup_max_disk_gb, 100);
	ck_assert_uint_eq(pc.backup_max_epoch_mb, 512);
	ck_assert_str_eq(pc.backup_emulator, "/opt/qemu/bin/qemu-system-x86_64");
	ck_assert_int_eq(pc.backup_shared_disks.n, 1);
	ck_assert_str_eq(pc.backup_shared_disks.v[0], "/srv/shared/data.img");
	ck_assert_str_eq(pc.epoch_policy, "dirty-rate");
	ck_assert_uint_eq(pc.epoch_length_ms, 40);
	ck_assert_uint_eq(pc.epoch_min_ms, 6);
	ck_assert_uint_eq(pc.epoch_max_ms, 9000);
	ck_assert_uint_eq(pc.epoch_max_overhead, 30);
	ck_assert_uint_eq(pc.epoch_output_delay_ms, 0);
	ck_assert_str_eq(pc.capture_tracker, "soft-dirty");
	ck_assert_uint_eq(pc.capture_threads, 3);
	ck_assert_int_eq(pc.capture_unprotected_disks.n, 1);
	ck_assert_str_eq(pc.capture_unprotected_disks.v[0], "shared0");
	ck_assert_int_eq(pc.netbuf_net_out.n, 1);
	ck_assert_str_eq(pc.netbuf_net_out.v[0], "n0=packet:eth1");
	ck_assert_uint_eq(pc.netbuf_cap_mb, 64);
	ck_assert_uint_eq(pc.heartbeat_interval_ms, 250);
	ck_assert_uint_eq(pc.heartbeat_timeout_ms, 5000);
	ck_assert_str_eq(pc.hooks_notify, "/etc/remus/notify.sh --pair web1");
	ck_assert_str_eq(pc.hooks_fence, "/usr/sbin/fence_ipmilan --action=off");
	ck_assert_uint_eq(pc.hooks_fence_timeout_ms, 20000);
	ck_assert_str_eq(pc.control_socket, "/run/vm1.remus");
	ck_assert_str_eq(pc.control_group, "remus-ops");
	ck_assert_str_eq(pc.backup_control_socket, "/run/remus/web1.agent.ctl");
	ck_assert_str_eq(pc.backup_control_group, "remus-ops");
	ck_assert_str_eq(pc.log_target, "syslog");
	ck_assert_str_eq(pc.log_level, "debug");
	/* where each came from */
	ck_assert_uint_eq(pc.line[PC_PAIR_NAME], 3);
	ck_assert_uint_eq(pc.line[PC_BACKUP_FAILOVER], 13);
	ck_assert_uint_eq(pc.line[PC_LOG_LEVEL], 43);
	ck_assert_uint_eq(pc.capture_disk_cap_mb, 32);
	ck_assert_str_eq(pc.capture_disk_capture, "bitmap");
	ck_assert_uint_eq(pc.line[PC_CAPTURE_DISK_CAPTURE], 58);
	ck_assert_str_eq(pc.link_key_file, "/etc/remus/web1.key");
	ck_assert(pc.link_insecure_cleartext);
	ck_assert_str_eq(pc.link_compress, "on");
	ck_assert_uint_eq(pc.link_compress_cache_mb, 128);
	ck_assert_uint_eq(pc.line[PC_LINK_CLEARTEXT], 46);
	pair_config_free(&pc);
	ck_assert_ptr_null(pc.vm_qmp);
	pair_config_free(&pc); /* twice is harmless */
}
END_TEST

START_TEST(test_defaults_when_absent)
{
	struct pair_config pc;
	enum epoch_policy_kind kind;

	parses("# nothing but a comment\n\n[vm]\n", CONFIG_ANY, &pc);
	for (int k = 0; k < PC_NKEYS; k++)
		ck_assert_msg(!pc.set[k] && !pc.line[k], "key %d set", k);
	ck_assert_ptr_null(pc.pair_name);
	ck_assert_ptr_null(pc.vm_qmp);
	ck_assert_ptr_null(pc.vm_libvirt_uri);
	ck_assert_ptr_null(pc.vm_domain);
	ck_assert_ptr_null(pc.vm_ram_file);
	ck_assert_ptr_null(pc.backup_address);
	ck_assert_ptr_null(pc.backup_state_dir);
	ck_assert_int_eq(pc.backup_taps.n, 0);
	ck_assert(pc.backup_failover);
	/* the defaults are the daemons' */
	ck_assert_int_eq(epoch_policy_parse(pc.epoch_policy, &kind), 0);
	ck_assert_int_eq(kind, POLICY_HYBRID);
	ck_assert_uint_eq(pc.epoch_length_ms, REPLICATOR_DEFAULT_EPOCH_MS);
	ck_assert_uint_eq(pc.epoch_min_ms, REPLICATOR_DEFAULT_EPOCH_MIN_MS);
	ck_assert_uint_eq(pc.epoch_max_ms, REPLICATOR_DEFAULT_EPOCH_MAX_MS);
	ck_assert_uint_eq(pc.epoch_max_overhead, REPLICATOR_DEFAULT_OVERHEAD_PCT);
	ck_assert_uint_eq(pc.epoch_output_delay_ms, REPLICATOR_DEFAULT_OUTPUT_DELAY_MS);
	ck_assert_str_eq(pc.capture_tracker, "auto");
	ck_assert_uint_eq(pc.capture_threads, 0); /* one per CPU */
	ck_assert_int_eq(pc.capture_unprotected_disks.n, 0);
	ck_assert_int_eq(pc.netbuf_net_out.n, 0);
	ck_assert_uint_eq(pc.netbuf_cap_mb, REPLICATOR_DEFAULT_NET_CAP_MB);
	ck_assert_uint_eq(pc.capture_disk_cap_mb, REPLICATOR_DEFAULT_DISK_CAP_MB);
	ck_assert_uint_eq(pc.heartbeat_interval_ms, REPLICATOR_DEFAULT_HEARTBEAT_MS);
	ck_assert_uint_eq(pc.heartbeat_interval_ms, AGENT_DEFAULT_HEARTBEAT_MS);
	ck_assert_uint_eq(pc.heartbeat_timeout_ms, REPLICATOR_DEFAULT_TIMEOUT_MS);
	ck_assert_uint_eq(pc.heartbeat_timeout_ms, AGENT_DEFAULT_TIMEOUT_MS);
	ck_assert_ptr_null(pc.hooks_notify);
	ck_assert_ptr_null(pc.hooks_fence);
	ck_assert_uint_eq(pc.hooks_fence_timeout_ms, 10000);
	ck_assert_ptr_null(pc.control_socket);
	ck_assert_ptr_null(pc.control_group);
	ck_assert_ptr_null(pc.backup_control_socket);
	ck_assert_ptr_null(pc.backup_control_group);
	ck_assert_str_eq(pc.log_target, "stderr");
	ck_assert_str_eq(pc.log_level, "info");
	pair_config_free(&pc);
}
END_TEST

START_TEST(test_repeatable_keys_keep_order)
{
	struct pair_config pc;

	parses("[backup]\ntap = n0=tap0\ntap = n1=tap1\ntap = tap2\n"
	       "[net-buffer]\nnet-out = n0=tap:t0\nnet-out = n1=packet:eth1\n"
	       "[capture]\nunprotected-disk = a\nunprotected-disk = b\n"
	       "[backup]\ntap = n3=tap3\n", /* a section may be opened again */
	       CONFIG_ANY, &pc);
	ck_assert_int_eq(pc.backup_taps.n, 4);
	ck_assert_str_eq(pc.backup_taps.v[0], "n0=tap0");
	ck_assert_str_eq(pc.backup_taps.v[1], "n1=tap1");
	ck_assert_str_eq(pc.backup_taps.v[2], "tap2");
	ck_assert_str_eq(pc.backup_taps.v[3], "n3=tap3");
	ck_assert_uint_eq(pc.line[PC_BACKUP_TAP], 2); /* the first */
	ck_assert_int_eq(pc.netbuf_net_out.n, 2);
	ck_assert_str_eq(pc.netbuf_net_out.v[1], "n1=packet:eth1");
	ck_assert_int_eq(pc.capture_unprotected_disks.n, 2);
	ck_assert_str_eq(pc.capture_unprotected_disks.v[0], "a");
	ck_assert_str_eq(pc.capture_unprotected_disks.v[1], "b");
	pair_config_free(&pc);
}
END_TEST

/* Comments, blanks, CR LF, '#' inside a value, spaces in a header. */
START_TEST(test_syntax_details)
{
	struct pair_config pc;

	parses("  ; a comment\r\n"
	       "\t# another\n"
	       "[ vm ]   # trailing comment\r\n"
	       "  qmp=/run/a#b.qmp   # not part of the value\n"
	       "ram-file =   /dev/shm/x ram   ; comment\n"
	       "[hooks]\n"
	       "notify = /bin/echo a=b\n"
	       "[epoch]\n"
	       "length-ms = +7\n"
	       "[backup]\n"
	       "address = [::1]:7700", /* no newline at the end */
	       CONFIG_ANY, &pc);
	ck_assert_str_eq(pc.vm_qmp, "/run/a#b.qmp");
	ck_assert_uint_eq(pc.line[PC_VM_QMP], 4);
	ck_assert_str_eq(pc.vm_ram_file, "/dev/shm/x ram");
	ck_assert_str_eq(pc.hooks_notify, "/bin/echo a=b");
	ck_assert_uint_eq(pc.epoch_length_ms, 7);
	ck_assert_str_eq(pc.backup_address, "[::1]:7700");
	pair_config_free(&pc);
}
END_TEST

/* ---- bad files: the exact messages ---- */

#define FENCE_MSG "pair.conf: [hooks] fence is required: a command that fences the primary " \
		  "before the backup takes over, or 'none'\n"

static const struct golden {
	const char *what;
	enum config_role role;
	const char *text;
	const char *errors;
} goldens[] = {
	{ "unknown key, a flag's name", CONFIG_ANY, "[epoch]\nepoch_ms = 50\n",
	  "pair.conf:2: unknown key 'epoch_ms' in [epoch]; did you mean 'length-ms'?\n" },
	{ "unknown key, a typo", CONFIG_ANY, "[backup]\nadress = 127.0.0.1:1\n",
	  "pair.conf:2: unknown key 'adress' in [backup]; did you mean 'address'?\n" },
	{ "the agent's control socket, a flag's name", CONFIG_ANY, "[backup]\ncontrol = /run/x\n",
	  "pair.conf:2: unknown key 'control' in [backup]; did you mean 'control-socket'?\n" },
	{ "unknown key, wrong section", CONFIG_ANY, "[backup]\nqmp = /q\n",
	  "pair.conf:2: unknown key 'qmp' in [backup]; did you mean 'qmp' in [vm]?\n" },
	{ "unknown key, nothing like it", CONFIG_ANY, "[epoch]\nbanana = 1\n",
	  "pair.conf:2: unknown key 'banana' in [epoch]\n" },
	{ "unknown section, its keys not checked", CONFIG_ANY, "[netbuffer]\ncap-mb = 3\n",
	  "pair.conf:1: unknown section [netbuffer]; did you mean [net-buffer]?\n" },
	{ "unknown section, nothing like it", CONFIG_ANY, "[frobnicate]\n",
	  "pair.conf:1: unknown section [frobnicate]\n" },
	{ "bad section header", CONFIG_ANY, "[vm\nqmp = /q\n",
	  "pair.conf:1: bad section header '[vm'; want [NAME]\n" },
	{ "bad int", CONFIG_ANY, "[capture]\nthreads = abc\n",
	  "pair.conf:2: [capture] threads: 'abc' is not a number (1-16)\n" },
	{ "negative int", CONFIG_ANY, "[heartbeat]\ninterval-ms = -5\n",
	  "pair.conf:2: [heartbeat] interval-ms: '-5' is not a number (10-60000)\n" },
	{ "int with a unit", CONFIG_ANY, "[epoch]\nlength-ms = 50ms\n",
	  "pair.conf:2: [epoch] length-ms: '50ms' is not a number (5-10000)\n" },
	{ "out of range", CONFIG_ANY, "[epoch]\nmin-ms = 3\n",
	  "pair.conf:2: [epoch] min-ms: '3' is out of range (5-10000)\n" },
	{ "out of range, beyond unsigned long", CONFIG_ANY,
	  "[net-buffer]\ncap-mb = 99999999999999999999999\n",
	  "pair.conf:2: [net-buffer] cap-mb: '99999999999999999999999' is out of range (1-4096)\n" },
	{ "bad enum", CONFIG_ANY, "[capture]\ntracker = pml\n",
	  "pair.conf:2: [capture] tracker: 'pml' is not auto, compare, hash or soft-dirty\n" },
	{ "bad enum, four values", CONFIG_ANY, "[epoch]\npolicy = adaptive\n",
	  "pair.conf:2: [epoch] policy: 'adaptive' is not fixed, dirty-rate, output-aware "
	  "or hybrid\n" },
	{ "bad bool", CONFIG_ANY, "[backup]\nfailover = maybe\n",
	  "pair.conf:2: [backup] failover: 'maybe' is not yes or no\n" },
	{ "bad address, port", CONFIG_ANY, "[backup]\naddress = 127.0.0.1:70000\n",
	  "pair.conf:2: [backup] address: bad port '70000' (want 1-65535)\n" },
	{ "bad address, no port", CONFIG_ANY, "[backup]\naddress = 127.0.0.1\n",
	  "pair.conf:2: [backup] address: '127.0.0.1' is not HOST:PORT\n" },
	{ "bad tap", CONFIG_ANY, "[backup]\ntap = =tap0\n",
	  "pair.conf:2: [backup] tap: '=tap0' is not [ID=]NAME with NAME a TAP device "
	  "(at most 15 characters)\n" },
	{ "bad net-out", CONFIG_ANY, "[net-buffer]\nnet-out = eth1\n",
	  "pair.conf:2: [net-buffer] net-out: 'eth1' is not [ID=]tap:NAME or "
	  "[ID=]packet:IFACE\n" },
	{ "duplicate key", CONFIG_ANY, "[vm]\nqmp = /a\n\nqmp = /b\n",
	  "pair.conf:4: [vm] qmp: given twice (first on line 2)\n" },
	{ "duplicate key, first one bad", CONFIG_ANY, "[epoch]\nmin-ms = 1\nmin-ms = 10\n",
	  "pair.conf:2: [epoch] min-ms: '1' is out of range (5-10000)\n"
	  "pair.conf:3: [epoch] min-ms: given twice (first on line 2)\n" },
	{ "missing '='", CONFIG_ANY, "[vm]\nqmp /run/x\n",
	  "pair.conf:2: missing '=' in 'qmp /run/x'; want key = value\n" },
	{ "missing key", CONFIG_ANY, "[vm]\n = /run/x\n",
	  "pair.conf:2: missing key before '= /run/x'\n" },
	{ "value missing", CONFIG_ANY, "[vm]\nqmp =\nram-file = # a comment\n",
	  "pair.conf:2: [vm] qmp: value missing\n"
	  "pair.conf:3: [vm] ram-file: value missing\n" },
	{ "key outside a section", CONFIG_ANY, "qmp = /q\n[vm]\n",
	  "pair.conf:1: key 'qmp' outside any section\n" },
	{ "too many values", CONFIG_ANY,
	  "[capture]\nunprotected-disk = d1\nunprotected-disk = d2\nunprotected-disk = d3\n"
	  "unprotected-disk = d4\nunprotected-disk = d5\nunprotected-disk = d6\n"
	  "unprotected-disk = d7\nunprotected-disk = d8\nunprotected-disk = d9\n",
	  "pair.conf:10: [capture] unprotected-disk: at most 8, 'd9' is one more\n" },
	{ "min above max", CONFIG_ANY, "[epoch]\nmin-ms = 300\nmax-ms = 100\n",
	  "pair.conf:2: [epoch] min-ms (300) is above max-ms (100)\n" },
	{ "min above the default max", CONFIG_ANY, "[epoch]\n\nmin-ms = 300\n",
	  "pair.conf:3: [epoch] min-ms (300) is above max-ms (200)\n" },
	{ "timeout not above interval", CONFIG_ANY, "[heartbeat]\ntimeout-ms = 100\n",
	  "pair.conf:2: [heartbeat] timeout-ms (100) must be longer than interval-ms (100)\n" },
	{ "replicator: missing sections", CONFIG_REPLICATOR, "",
	  "pair.conf: missing section [vm]\npair.conf: missing section [backup]\n" },
	{ "replicator: missing keys", CONFIG_REPLICATOR,
	  "[vm]\nram-file = /r\n[backup]\nstate-dir = /s\n",
	  "pair.conf: [vm] qmp (plain QEMU) or domain (libvirt) is required\n"
	  "pair.conf: [backup] address is required\n" },
	{ "replicator: qmp and domain", CONFIG_REPLICATOR,
	  "[vm]\nqmp = /q\ndomain = d\n[backup]\naddress = 127.0.0.1:7\n",
	  "pair.conf:3: [vm] qmp and domain are both given; give exactly one\n" },
	{ "replicator: a bad address is not also missing", CONFIG_REPLICATOR,
	  "[vm]\nqmp = /q\n[backup]\naddress = 127.0.0.1:0\n",
	  "pair.conf:4: [backup] address: bad port '0' (want 1-65535)\n" },
	{ "agent: missing section and fence", CONFIG_AGENT, "",
	  "pair.conf: missing section [backup]\n" FENCE_MSG },
	{ "agent: missing keys", CONFIG_AGENT, "[backup]\ntap = tap0\n[hooks]\nnotify = /n\n",
	  "pair.conf: [backup] address is required\n"
	  "pair.conf: [backup] state-dir is required\n" FENCE_MSG },
	{ "agent: fence missing", CONFIG_AGENT,
	  "[backup]\naddress = 127.0.0.1:7\nstate-dir = /s\n",
	  FENCE_MSG },
	{ "agent: takeover = manual, a fence command refused", CONFIG_AGENT,
	  "[backup]\naddress = 127.0.0.1:7\nstate-dir = /s\ntakeover = manual\n[hooks]\n"
	  "fence = /bin/true\n",
	  "pair.conf:6: [hooks] fence: with [backup] takeover = manual the cluster manager "
	  "fences (Pacemaker's stonith); write 'none' or leave the key out\n" },
	{ "agent: takeover, a bad value", CONFIG_AGENT,
	  "[backup]\naddress = 127.0.0.1:7\nstate-dir = /s\ntakeover = pacemaker\n",
	  "pair.conf:4: [backup] takeover: 'pacemaker' is not auto or manual\n" FENCE_MSG },
	{ "agent: fence without value", CONFIG_AGENT,
	  "[backup]\naddress = 127.0.0.1:7\nstate-dir = /s\n[hooks]\nfence =\n",
	  "pair.conf:5: [hooks] fence: value missing\n" },
	{ "host: a bad name", CONFIG_ANY, "[host a/b]\naddress = 127.0.0.1:1\n",
	  "pair.conf:1: [host a/b]: a host name is 1-63 of letters, digits, '.', '-' and '_'\n" },
	{ "host: named twice, and alone", CONFIG_ANY,
	  "[host a]\naddress = 127.0.0.1:1\n[host a]\n",
	  "pair.conf:3: [host a]: given twice (first on line 1)\n"
	  "pair.conf:1: a pair with [host] sections needs two of them, one for each host\n" },
	{ "host: a fourth one", CONFIG_ANY,
	  "[host a]\naddress = 127.0.0.1:1\n[host b]\naddress = 127.0.0.1:2\n"
	  "[host c]\naddress = 127.0.0.1:3\n[host d]\n",
	  "pair.conf:7: [host d]: a pair has 3 hosts, this is one more\n" },
	{ "host: unknown key, bad values, a key twice", CONFIG_ANY,
	  "[host a]\naddress = 127.0.0.1:1\ntap = tap0\nnet-out = eth0\naddress = 127.0.0.1:3\n"
	  "[host b]\naddress = 127.0.0.1\n",
	  "pair.conf:3: unknown key 'tap' in [host a]; a host has address, state-dir, net-out, "
	  "control-socket and libvirt-uri\n"
	  "pair.conf:4: [host a] net-out: 'eth0' is not [ID=]tap:NAME or [ID=]packet:IFACE\n"
	  "pair.conf:5: [host a] address: given twice\n"
	  "pair.conf:7: [host b] address: '127.0.0.1' is not HOST:PORT\n"
	  "pair.conf:6: [host b] address is required\n" },
	{ "host: what each host says, said outside", CONFIG_AGENT,
	  "[backup]\naddress = 127.0.0.1:1\nstate-dir = /s\ntap = tap0\n[net-buffer]\n"
	  "net-out = packet:eth0\n[vm]\nqmp = /q\n[hooks]\nfence = none\n"
	  "[host a]\naddress = 127.0.0.1:1\nstate-dir = /a\n[host b]\naddress = 127.0.0.1:2\n"
	  "libvirt-uri = qemu:///system\n",
	  "pair.conf:2: [backup] address: with [host] sections, each host's section says it "
	  "(address)\n"
	  "pair.conf:3: [backup] state-dir: with [host] sections, each host's section says it "
	  "(state-dir)\n"
	  "pair.conf:4: [backup] tap: with [host] sections, each host's section says it "
	  "(net-out; the restored VM's NICs go through a net buffer on that host too)\n"
	  "pair.conf:6: [net-buffer] net-out: with [host] sections, each host's section says it "
	  "(net-out; the restored VM's NICs go through a net buffer on that host too)\n"
	  "pair.conf:16: [host b] libvirt-uri: the host's libvirt runs a libvirt domain ([vm] "
	  "domain), which this file does not name\n"
	  "pair.conf:14: [host b] state-dir is required\n" },
	{ "three errors, all reported", CONFIG_ANY,
	  "[vm]\nqmp: /run/vm1.qmp\n[epoch]\nlength_ms = 50\nmax-ms = 99999\n",
	  "pair.conf:2: missing '=' in 'qmp: /run/vm1.qmp'; want key = value\n"
	  "pair.conf:4: unknown key 'length_ms' in [epoch]; did you mean 'length-ms'?\n"
	  "pair.conf:5: [epoch] max-ms: '99999' is out of range (5-10000)\n" },
};

START_TEST(test_bad_file_messages)
{
	const struct golden *g = &goldens[_i];
	struct pair_config pc;
	char *errors;
	int rc = parse_text(g->text, g->role, &pc, &errors);

	ck_assert_msg(rc == -EINVAL, "%s: rc %d", g->what, rc);
	ck_assert_msg(!strcmp(errors, g->errors), "%s:\nwant: %sgot:  %s", g->what, g->errors,
		      errors);
	free(errors);
	pair_config_free(&pc);
}
END_TEST

START_TEST(test_good_files_for_each_role)
{
	struct pair_config pc;

	parses("[vm]\nqmp = /q\n[backup]\naddress = 127.0.0.1:7\n", CONFIG_REPLICATOR, &pc);
	pair_config_free(&pc);
	parses("[vm]\ndomain = d\n[backup]\naddress = 127.0.0.1:7\n", CONFIG_REPLICATOR, &pc);
	pair_config_free(&pc);
	parses("[backup]\naddress = 127.0.0.1:7\nstate-dir = /s\n[hooks]\nfence = none\n",
	       CONFIG_AGENT, &pc);
	ck_assert_str_eq(pc.hooks_fence, "none");
	pair_config_free(&pc);
	/* under a cluster manager, its stonith fences: no [hooks] fence */
	parses("[backup]\naddress = 127.0.0.1:7\nstate-dir = /s\ntakeover = manual\n",
	       CONFIG_AGENT, &pc);
	ck_assert_str_eq(pc.backup_takeover, "manual");
	pair_config_free(&pc);
	parses("[backup]\naddress = 127.0.0.1:7\nstate-dir = /s\ntakeover = manual\n[hooks]\n"
	       "fence = none\n", CONFIG_AGENT, &pc);
	pair_config_free(&pc);
}
END_TEST

START_TEST(test_long_line_and_nul_byte)
{
	struct config_parser p;
	struct pair_config pc;
	char line[CONFIG_MAX_LINE + 10], *errors;
	size_t len = 0;
	FILE *errf = open_memstream(&errors, &len);

	config_init(&p, &pc, "pair.conf", errf);
	config_line(&p, "[vm]\n", 5);
	memset(line, 'a', sizeof(line));
	memcpy(line, "qmp = ", 6);
	config_line(&p, line, CONFIG_MAX_LINE + 1);  /* line 2: one too many */
	config_line(&p, line, CONFIG_MAX_LINE);      /* line 3: just fits */
	config_line(&p, "ram-file = a\0b\n", 15);    /* line 4 */
	ck_assert_int_eq(config_finish(&p, CONFIG_ANY), -EINVAL);
	fclose(errf);
	ck_assert_str_eq(errors, "pair.conf:2: line too long (1025 characters, at most 1024)\n"
				 "pair.conf:4: NUL byte in the line (is this a text file?)\n");
	ck_assert_uint_eq(strlen(pc.vm_qmp), CONFIG_MAX_LINE - 6);
	ck_assert_uint_eq(pc.line[PC_VM_QMP], 3);
	free(errors);
	pair_config_free(&pc);
}
END_TEST

START_TEST(test_error_flood_is_capped)
{
	char text[200 * 8 + 8] = "[vm]\n", *errors, *last;
	struct pair_config pc;
	int n = 0;

	for (int i = 0; i < 150; i++)
		strcat(text, "junk\n");
	ck_assert_int_eq(parse_text(text, CONFIG_ANY, &pc, &errors), -EINVAL);
	for (const char *c = errors; (c = strchr(c, '\n')); c++)
		n++;
	ck_assert_int_eq(n, CONFIG_MAX_ERRORS + 1);
	last = strstr(errors, "pair.conf: ");
	ck_assert_ptr_nonnull(last);
	ck_assert_str_eq(last, "pair.conf: 50 more errors not shown\n");
	free(errors);
	pair_config_free(&pc);
}
END_TEST

/* ---- files on disk ---- */

/* The examples in configs/ (make unit runs from the top directory). */
START_TEST(test_example_configs_parse)
{
	static const char *const files[] = { "configs/pair-qemu.conf", "configs/pair-libvirt.conf" };
	static const enum config_role roles[] = { CONFIG_REPLICATOR, CONFIG_AGENT };

	for (size_t f = 0; f < 2; f++)
		for (size_t r = 0; r < 2; r++) {
			struct pair_config pc;
			char *errors;
			size_t len = 0;
			FILE *errf = open_memstream(&errors, &len);
			int rc = config_read_file(files[f], roles[r], &pc, errf);

			fclose(errf);
			ck_assert_msg(rc == 0, "%s (role %d): rc %d: %s", files[f], roles[r], rc,
				      errors);
			ck_assert_str_eq(errors, "");
			ck_assert_ptr_nonnull(pc.hooks_fence);
			ck_assert(pc.set[PC_BACKUP_ADDRESS] && pc.set[PC_BACKUP_STATE_DIR]);
			free(errors);
			pair_config_free(&pc);
		}
}
END_TEST

static const char hosts_file[] =
	"[vm]\n"
	"qmp = /run/vm1.qmp\n"
	"[host alpha]\n"
	"address = 127.0.0.1:7701\n"
	"state-dir = /var/lib/remus/alpha\n"
	"net-out = n0=packet:eth1\n"
	"control-socket = /run/alpha.ctl\n"
	"[host beta]\n"
	"address = 127.0.0.1:7702\n"
	"state-dir = /var/lib/remus/beta\n"
	"net-out = n0=tap:tap0\n"
	"[control]\n"
	"socket = /run/replicator.ctl\n"
	"[hooks]\n"
	"fence = none\n";

START_TEST(test_hosts_parse)
{
	struct pair_config pc;
	const struct config_host *a, *b;

	parses(hosts_file, CONFIG_AGENT, &pc);
	ck_assert_int_eq(pc.nhosts, 2);
	a = config_host_find(&pc, "alpha");
	b = config_host_find(&pc, "beta");
	ck_assert_ptr_nonnull(a);
	ck_assert_ptr_nonnull(b);
	ck_assert_ptr_null(config_host_find(&pc, "gamma"));
	ck_assert_ptr_eq(config_host_peer(&pc, a), b);
	ck_assert_ptr_eq(config_host_peer(&pc, b), a);
	ck_assert_str_eq(a->address, "127.0.0.1:7701");
	ck_assert_str_eq(b->state_dir, "/var/lib/remus/beta");
	ck_assert_int_eq(a->net_out.n, 1);
	ck_assert_str_eq(b->net_out.v[0], "n0=tap:tap0");
	ck_assert_str_eq(a->control_socket, "/run/alpha.ctl");
	ck_assert_ptr_null(b->control_socket);
	ck_assert_uint_eq(b->line, 8);
	pair_config_free(&pc);
	/* the example deployed on both hosts */
	{
		char *errors;
		size_t len = 0;
		FILE *errf = open_memstream(&errors, &len);

		for (int role = CONFIG_REPLICATOR; role <= CONFIG_AGENT; role++) {
			ck_assert_int_eq(config_read_file("configs/pair-hosts.conf", role, &pc,
							  errf), 0);
			ck_assert_int_eq(pc.nhosts, 2);
			pair_config_free(&pc);
			/* and the one under Pacemaker */
			ck_assert_int_eq(config_read_file("configs/pair-pacemaker.conf", role, &pc,
							  errf), 0);
			ck_assert_str_eq(pc.backup_takeover, "manual");
			pair_config_free(&pc);
		}
		fclose(errf);
		ck_assert_str_eq(errors, "");
		free(errors);
	}
}
END_TEST

/* text fails for role, with exactly these errors. */
static void fails(const char *text, enum config_role role, const char *expected)
{
	struct pair_config pc;
	char *errors;

	ck_assert_int_ne(parse_text(text, role, &pc, &errors), 0);
	ck_assert_str_eq(errors, expected);
	free(errors);
	pair_config_free(&pc);
}

/* What a pair of moving roles refuses: an agent, which becomes the
 * replicator, without its VM named. A libvirt domain under a cluster
 * manager (takeover = manual) is a pair like any other. */
START_TEST(test_hosts_refusals)
{
	static const char hosts[] =
		"[host a]\naddress = 127.0.0.1:1\nstate-dir = /a\n"
		"[host b]\naddress = 127.0.0.1:2\nstate-dir = /b\n";
	struct pair_config pc;
	char text[512], *errors;

	snprintf(text, sizeof(text), "[vm]\ndomain = d\n[backup]\ntakeover = manual\n%s", hosts);
	ck_assert_int_eq(parse_text(text, CONFIG_AGENT, &pc, &errors), 0);
	ck_assert_str_eq(errors, "");
	ck_assert_str_eq(pc.vm_domain, "d");
	free(errors);
	pair_config_free(&pc);
	snprintf(text, sizeof(text), "[hooks]\nfence = none\n%s", hosts);
	fails(text, CONFIG_AGENT, "pair.conf: missing section [vm]\n");
	/* a spare: three hosts take over by themselves, never by a manager */
	snprintf(text, sizeof(text), "[vm]\nqmp = /q\n[hooks]\nfence = none\n%s"
		 "[host c]\naddress = 127.0.0.1:3\nstate-dir = /c\n", hosts);
	ck_assert_int_eq(parse_text(text, CONFIG_AGENT, &pc, &errors), 0);
	ck_assert_str_eq(errors, "");
	ck_assert_int_eq(pc.nhosts, 3);
	ck_assert_ptr_eq(config_host_peer(&pc, &pc.hosts[0]), &pc.hosts[1]);
	ck_assert_ptr_eq(config_host_peer(&pc, &pc.hosts[1]), &pc.hosts[0]);
	ck_assert_ptr_eq(config_host_peer(&pc, &pc.hosts[2]), &pc.hosts[0]);
	free(errors);
	pair_config_free(&pc);
	snprintf(text, sizeof(text), "[vm]\ndomain = d\n[backup]\ntakeover = manual\n%s"
		 "[host c]\naddress = 127.0.0.1:3\nstate-dir = /c\n", hosts);
	fails(text, CONFIG_AGENT, "pair.conf:4: [backup] takeover = manual: a cluster manager "
	      "promotes one of two hosts; a pair with a spare host (three [host] sections) "
	      "takes over by itself (takeover = auto)\n");
}
END_TEST

/* A libvirt domain moves between the hosts too, each with its libvirt. */
START_TEST(test_hosts_libvirt)
{
	static const char text[] =
		"[vm]\n"
		"domain = vm1\n"
		"libvirt-uri = qemu:///system\n"
		"[host alpha]\n"
		"address = 127.0.0.1:7701\n"
		"state-dir = /var/lib/remus/alpha\n"
		"[host beta]\n"
		"address = 127.0.0.1:7702\n"
		"state-dir = /var/lib/remus/beta\n"
		"libvirt-uri = qemu+unix:///system?socket=/run/beta/libvirt-sock\n"
		"[hooks]\n"
		"fence = none\n";
	struct pair_config pc;

	for (int role = CONFIG_REPLICATOR; role <= CONFIG_AGENT; role++) {
		parses(text, role, &pc);
		ck_assert_str_eq(pc.vm_domain, "vm1");
		ck_assert_ptr_null(config_host_find(&pc, "alpha")->libvirt_uri);
		ck_assert_str_eq(config_host_find(&pc, "beta")->libvirt_uri,
				 "qemu+unix:///system?socket=/run/beta/libvirt-sock");
		pair_config_free(&pc);
	}
}
END_TEST

START_TEST(test_read_missing_file)
{
	struct pair_config pc;
	char *errors;
	size_t len = 0;
	FILE *errf = open_memstream(&errors, &len);

	ck_assert_int_eq(config_read_file("/nonexistent/pair.conf", CONFIG_ANY, &pc, errf),
			 -ENOENT);
	fclose(errf);
	ck_assert_str_eq(errors, "/nonexistent/pair.conf: cannot read: No such file or directory\n");
	free(errors);
	pair_config_free(&pc);
}
END_TEST

/* A temporary file holding text; its path in path[]. */
static void write_file(char path[static 32], const char *text)
{
	int fd;

	strcpy(path, "/tmp/check_config_XXXXXX");
	fd = mkstemp(path);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
}

struct capture {
	FILE *file;
	int fd, saved;
};

static void capture_start(struct capture *c, int fd)
{
	fflush(stdout);
	fflush(stderr);
	c->fd = fd;
	c->file = tmpfile();
	ck_assert_ptr_nonnull(c->file);
	c->saved = dup(fd);
	ck_assert_int_ge(c->saved, 0);
	ck_assert_int_eq(dup2(fileno(c->file), fd), fd);
}

static char *capture_end(struct capture *c)
{
	char *text;
	long len;

	fflush(stdout);
	fflush(stderr);
	ck_assert_int_eq(dup2(c->saved, c->fd), c->fd);
	close(c->saved);
	ck_assert_int_eq(fseek(c->file, 0, SEEK_END), 0);
	len = ftell(c->file);
	rewind(c->file);
	text = malloc((size_t)len + 1);
	ck_assert_ptr_nonnull(text);
	ck_assert_uint_eq(fread(text, 1, (size_t)len, c->file), (size_t)len);
	text[len] = 0;
	fclose(c->file);
	return text;
}

/* Run a daemon's parse_args; its stdout and stderr, malloc'd. */
static int rep_parse(char **argv, struct replicator_config *cfg, int *use_syslog, char **out,
		     char **err)
{
	struct capture o, e;
	int rc;

	capture_start(&o, STDOUT_FILENO);
	capture_start(&e, STDERR_FILENO);
	rc = replicator_parse_args(count_args(argv), argv, cfg, use_syslog);
	*err = capture_end(&e);
	*out = capture_end(&o);
	return rc;
}

static int agent_parse(char **argv, struct agent_config *cfg, int *use_syslog, char **out,
		       char **err)
{
	struct capture o, e;
	int rc;

	capture_start(&o, STDOUT_FILENO);
	capture_start(&e, STDERR_FILENO);
	rc = agent_parse_args(count_args(argv), argv, cfg, use_syslog);
	*err = capture_end(&e);
	*out = capture_end(&o);
	return rc;
}

static const char pair_file[] =
	"[vm]\n"
	"qmp = /run/file.qmp\n"
	"ram-file = /dev/shm/file.ram\n"
	"[backup]\n"
	"address = 127.0.0.1:7700\n"
	"state-dir = /var/lib/remus/file\n"
	"tap = n0=tapfile0\n"
	"tap = n1=tapfile1\n"
	"failover = no\n"
	"control-socket = /run/file.agent.ctl\n"
	"control-group = root\n"
	"[epoch]\n"
	"policy = fixed\n"
	"length-ms = 100\n"
	"min-ms = 20\n"
	"max-ms = 400\n"
	"max-overhead = 40\n"
	"output-delay-ms = 5\n"
	"[capture]\n"
	"tracker = auto\n"
	"threads = 3\n"
	"unprotected-disk = shared0\n"
	"disk-capture = bitmap\n"
	"[net-buffer]\n"
	"net-out = n0=packet:eth1\n"
	"net-out = n1=tap:tapout1\n"
	"cap-mb = 32\n"
	"[heartbeat]\n"
	"interval-ms = 200\n"
	"timeout-ms = 3000\n"
	"[hooks]\n"
	"fence = none\n"
	"[control]\n"
	"socket = /run/file.remus\n"
	"group = root\n"
	"[log]\n"
	"target = syslog\n";

START_TEST(test_replicator_file_values_apply)
{
	struct replicator_config cfg;
	int use_syslog = 0;
	char path[32], *out, *err;

	write_file(path, pair_file);
	ck_assert_int_eq(rep_parse(ARGV("remus-replicator", "--config", path), &cfg,
				   &use_syslog, &out, &err), 0);
	ck_assert_str_eq(err, "");
	ck_assert_str_eq(out, "");
	ck_assert_str_eq(cfg.qmp_path, "/run/file.qmp");
	ck_assert_str_eq(cfg.ram_file, "/dev/shm/file.ram");
	ck_assert_str_eq(cfg.backup.text, "127.0.0.1:7700");
	ck_assert_int_eq(cfg.policy.kind, POLICY_FIXED);
	ck_assert_uint_eq(cfg.epoch_ms, 100);
	ck_assert_uint_eq(cfg.policy.fixed_ms, 100);
	ck_assert_uint_eq(cfg.policy.min_ms, 20);
	ck_assert_uint_eq(cfg.policy.max_ms, 400);
	ck_assert(cfg.policy.max_overhead > 0.399 && cfg.policy.max_overhead < 0.401);
	ck_assert_uint_eq(cfg.policy.output_delay_ms, 5);
	ck_assert_str_eq(cfg.tracker, "auto");
	ck_assert_uint_eq(cfg.capture_threads, 3);
	ck_assert_int_eq(cfg.n_unprotected_disks, 1);
	ck_assert_str_eq(cfg.unprotected_disks[0], "shared0");
	ck_assert(cfg.disk_capture_bitmap);
	ck_assert_int_eq(cfg.n_net_out, 2);
	ck_assert_str_eq(cfg.net_out[0].netdev, "n0");
	ck_assert_str_eq(cfg.net_out[0].spec, "packet:eth1");
	ck_assert_str_eq(cfg.net_out[1].spec, "tap:tapout1");
	ck_assert_uint_eq(cfg.net_cap_bytes, 32u << 20);
	ck_assert_uint_eq(cfg.heartbeat_ms, 200);
	ck_assert_uint_eq(cfg.timeout_ms, 3000);
	ck_assert_str_eq(cfg.control_path, "/run/file.remus");
	ck_assert_str_eq(cfg.control_group, "root");
	ck_assert_int_eq(cfg.control_gid, 0);
	ck_assert_int_eq(use_syslog, 1);
	ck_assert_str_eq(cfg.file.hooks_fence, "none"); /* for the lead to wire */
	replicator_config_free(&cfg);
	free(out);
	free(err);
	unlink(path);
}
END_TEST

START_TEST(test_replicator_flags_override_file)
{
	struct replicator_config cfg;
	int use_syslog = 0;
	char path[32], *out, *err;

	write_file(path, pair_file);
	/* --config after the flags: it is still read first */
	ck_assert_int_eq(rep_parse(ARGV("remus-replicator", "--qmp", "/run/flag.qmp",
					"--epoch-ms", "70", "--timeout-ms", "4000",
					"--net-out", "n9=tap:flag9", "--tracker", "compare",
					"--disk-capture", "mirror", "--config", path),
				   &cfg, &use_syslog, &out, &err), 0);
	ck_assert_str_eq(err, "");
	ck_assert_str_eq(cfg.qmp_path, "/run/flag.qmp");
	ck_assert_uint_eq(cfg.epoch_ms, 70);
	ck_assert_uint_eq(cfg.timeout_ms, 4000);
	ck_assert_str_eq(cfg.tracker, "compare");
	ck_assert(!cfg.disk_capture_bitmap);
	/* a flag replaces the file's list */
	ck_assert_int_eq(cfg.n_net_out, 1);
	ck_assert_str_eq(cfg.net_out[0].netdev, "n9");
	ck_assert_str_eq(cfg.net_out[0].spec, "tap:flag9");
	/* what no flag said comes from the file */
	ck_assert_uint_eq(cfg.heartbeat_ms, 200);
	ck_assert_uint_eq(cfg.policy.min_ms, 20);
	ck_assert_str_eq(cfg.ram_file, "/dev/shm/file.ram");
	ck_assert_int_eq(cfg.n_unprotected_disks, 1);
	replicator_config_free(&cfg);
	free(out);
	free(err);

	/* the flags' own checks see the file's values */
	ck_assert_int_eq(rep_parse(ARGV("remus-replicator", "--config", path,
					"--epoch-min-ms", "500"),
				   &cfg, &use_syslog, &out, &err), -1);
	assert_contains(err, "--epoch-min-ms (500) is above --epoch-max-ms (400)");
	free(out);
	free(err);
	unlink(path);
}
END_TEST

/* The control group is looked up at start: a typo fails there, not at the
 * first remusctl. */
START_TEST(test_replicator_control_group_checked)
{
	struct replicator_config cfg;
	int use_syslog = 0;
	char *out, *err;

	ck_assert_int_eq(rep_parse(ARGV("remus-replicator", "--qmp", "/q", "--backup",
					"127.0.0.1:7700", "--control", "/run/c",
					"--control-group", "no-such-group-remus"),
				   &cfg, &use_syslog, &out, &err), -1);
	assert_contains(err, "--control-group: no group 'no-such-group-remus'");
	free(out);
	free(err);
	ck_assert_int_eq(rep_parse(ARGV("remus-replicator", "--qmp", "/q", "--backup",
					"127.0.0.1:7700", "--control-group", "root"),
				   &cfg, &use_syslog, &out, &err), -1);
	assert_contains(err, "--control-group needs --control PATH");
	free(out);
	free(err);
	ck_assert_int_eq(rep_parse(ARGV("remus-replicator", "--qmp", "/q", "--backup",
					"127.0.0.1:7700", "--control", "/run/c"),
				   &cfg, &use_syslog, &out, &err), 0);
	ck_assert_ptr_null(cfg.control_group);
	ck_assert_int_eq(cfg.control_gid, (gid_t)-1);
	replicator_config_free(&cfg);
	free(out);
	free(err);
}
END_TEST

/* The agent's --control-group is checked as the replicator's. */
START_TEST(test_agent_control_group_checked)
{
	struct agent_config cfg;
	int use_syslog = 0;
	char *out, *err;

	ck_assert_int_eq(agent_parse(ARGV("remus-agent", "--listen", "127.0.0.1:7700",
					  "--state-dir", "/s", "--no-fence", "--control", "/run/c",
					  "--control-group", "no-such-group-remus"),
				     &cfg, &use_syslog, &out, &err), -1);
	assert_contains(err, "remus-agent: --control-group: no group 'no-such-group-remus'");
	free(out);
	free(err);
	ck_assert_int_eq(agent_parse(ARGV("remus-agent", "--listen", "127.0.0.1:7700",
					  "--state-dir", "/s", "--no-fence", "--control-group", "root"),
				     &cfg, &use_syslog, &out, &err), -1);
	assert_contains(err, "remus-agent: --control-group needs --control PATH");
	free(out);
	free(err);
	ck_assert_int_eq(agent_parse(ARGV("remus-agent", "--listen", "127.0.0.1:7700",
					  "--state-dir", "/s", "--no-fence"),
				     &cfg, &use_syslog, &out, &err), 0);
	ck_assert_ptr_null(cfg.control_path);
	ck_assert_int_eq(cfg.control_gid, (gid_t)-1);
	agent_config_free(&cfg);
	free(out);
	free(err);
}
END_TEST

START_TEST(test_agent_file_values_and_flags)
{
	struct agent_config cfg;
	int use_syslog = 0;
	char path[32], *out, *err;

	write_file(path, pair_file);
	ck_assert_int_eq(agent_parse(ARGV("remus-agent", "--config", path), &cfg, &use_syslog,
				     &out, &err), 0);
	ck_assert_str_eq(err, "");
	ck_assert_str_eq(cfg.listen.text, "127.0.0.1:7700");
	ck_assert_str_eq(cfg.state_dir, "/var/lib/remus/file");
	ck_assert_str_eq(cfg.restore.dir, "/var/lib/remus/file");
	ck_assert(cfg.no_failover);
	ck_assert_int_eq(cfg.restore.ntaps, 2);
	ck_assert_str_eq(cfg.restore.taps[1], "n1=tapfile1");
	ck_assert_uint_eq(cfg.heartbeat_ms, 200);
	ck_assert_uint_eq(cfg.timeout_ms, 3000);
	ck_assert_int_eq(use_syslog, 1);
	ck_assert_str_eq(cfg.file.hooks_fence, "none");
	/* [backup] control-*: the agent's; [control] is the replicator's */
	ck_assert_str_eq(cfg.control_path, "/run/file.agent.ctl");
	ck_assert_str_eq(cfg.control_group, "root");
	ck_assert_int_eq(cfg.control_gid, 0);
	agent_config_free(&cfg);
	free(out);
	free(err);

	use_syslog = 0;
	ck_assert_int_eq(agent_parse(ARGV("remus-agent", "--config", path, "--tap", "tapflag",
					  "--state-dir", "/flag", "--listen", "127.0.0.1:7800",
					  "--heartbeat-ms", "300"),
				     &cfg, &use_syslog, &out, &err), 0);
	ck_assert_str_eq(err, "");
	ck_assert_int_eq(cfg.restore.ntaps, 1);
	ck_assert_str_eq(cfg.restore.taps[0], "tapflag");
	ck_assert_str_eq(cfg.state_dir, "/flag");
	ck_assert_str_eq(cfg.listen.text, "127.0.0.1:7800");
	ck_assert_uint_eq(cfg.heartbeat_ms, 300);
	ck_assert_uint_eq(cfg.timeout_ms, 3000);
	ck_assert_str_eq(cfg.control_path, "/run/file.agent.ctl");
	agent_config_free(&cfg);
	free(out);
	free(err);

	ck_assert_int_eq(agent_parse(ARGV("remus-agent", "--config", path, "--control",
					  "/run/flag.ctl", "--control-group", "daemon"),
				     &cfg, &use_syslog, &out, &err), 0);
	ck_assert_str_eq(err, "");
	ck_assert_str_eq(cfg.control_path, "/run/flag.ctl");
	ck_assert_str_eq(cfg.control_group, "daemon");
	ck_assert_int_ne(cfg.control_gid, (gid_t)-1);
	agent_config_free(&cfg);
	free(out);
	free(err);

	/* --restore: the file's address is no --listen flag */
	ck_assert_int_eq(agent_parse(ARGV("remus-agent", "--config", path, "--restore"), &cfg,
				     &use_syslog, &out, &err), 0);
	ck_assert_str_eq(err, "");
	ck_assert(cfg.restore_now);
	agent_config_free(&cfg);
	free(out);
	free(err);
	ck_assert_int_eq(agent_parse(ARGV("remus-agent", "--config", path, "--restore",
					  "--listen", "127.0.0.1:7"),
				     &cfg, &use_syslog, &out, &err), -1);
	assert_contains(err, "--restore takes no --listen");
	free(out);
	free(err);
	unlink(path);
}
END_TEST

START_TEST(test_check_config_ok_and_errors)
{
	struct replicator_config rcfg;
	struct agent_config acfg;
	int use_syslog = 0;
	char path[32], want[128], *out, *err;

	write_file(path, pair_file);
	snprintf(want, sizeof(want), "%s: ok\n", path);
	ck_assert_int_eq(rep_parse(ARGV("remus-replicator", "--check-config", "--config", path),
				   &rcfg, &use_syslog, &out, &err), 1);
	ck_assert_str_eq(out, want);
	ck_assert_str_eq(err, "");
	free(out);
	free(err);
	ck_assert_int_eq(agent_parse(ARGV("remus-agent", "--config", path, "--check-config"),
				     &acfg, &use_syslog, &out, &err), 1);
	ck_assert_str_eq(out, want);
	free(out);
	free(err);
	unlink(path);

	/* a bad file: every error, nothing on stdout */
	write_file(path, "[vm]\nqmp = /q\n[epoch]\nepoch_ms = 5\n[backup]\naddress = x\n");
	ck_assert_int_eq(rep_parse(ARGV("remus-replicator", "--config", path, "--check-config"),
				   &rcfg, &use_syslog, &out, &err), -1);
	ck_assert_str_eq(out, "");
	snprintf(want, sizeof(want), "%s:4: unknown key 'epoch_ms'", path);
	assert_contains(err, want);
	snprintf(want, sizeof(want), "%s:6: [backup] address: 'x' is not HOST:PORT", path);
	assert_contains(err, want);
	free(out);
	free(err);
	/* the agent also wants its keys */
	ck_assert_int_eq(agent_parse(ARGV("remus-agent", "--config", path, "--check-config"),
				     &acfg, &use_syslog, &out, &err), -1);
	assert_contains(err, "[backup] state-dir is required");
	assert_contains(err, "[hooks] fence is required");
	free(out);
	free(err);
	unlink(path);

	ck_assert_int_eq(rep_parse(ARGV("remus-replicator", "--check-config", "--qmp", "/q"),
				   &rcfg, &use_syslog, &out, &err), -1);
	ck_assert_str_eq(err, "remus-replicator: --check-config needs --config FILE\n");
	free(out);
	free(err);
}
END_TEST

START_TEST(test_config_option_errors)
{
	struct replicator_config cfg;
	struct agent_config acfg;
	int use_syslog = 0;
	char *out, *err;

	ck_assert_int_eq(rep_parse(ARGV("remus-replicator", "--config", "/nonexistent.conf"),
				   &cfg, &use_syslog, &out, &err), -1);
	ck_assert_str_eq(err, "/nonexistent.conf: cannot read: No such file or directory\n");
	free(out);
	free(err);
	ck_assert_int_eq(agent_parse(ARGV("remus-agent", "--config", "a", "--config=b"),
				     &acfg, &use_syslog, &out, &err), -1);
	ck_assert_str_eq(err, "remus-agent: --config given twice ('a', 'b')\n");
	free(out);
	free(err);
	ck_assert_int_eq(rep_parse(ARGV("remus-replicator", "--qmp", "/q", "--backup", "h:1",
					"--disk-capture", "fleecing"), &cfg, &use_syslog, &out, &err), -1);
	ck_assert_str_eq(err, "remus-replicator: --disk-capture: 'fleecing' is not mirror or bitmap\n");
	free(out);
	free(err);
	/* libvirt keeps QEMU's one NBD server: refused with the reason */
	ck_assert_int_eq(rep_parse(ARGV("remus-replicator", "--domain", "vm1", "--backup", "h:1",
					"--disk-capture", "bitmap"), &cfg, &use_syslog, &out, &err), -1);
	assert_contains(err, "--disk-capture bitmap needs plain QEMU over --qmp");
	free(out);
	free(err);
	/* --help wins over a file that cannot be read */
	ck_assert_int_eq(rep_parse(ARGV("remus-replicator", "--config", "/nonexistent.conf", "-h"),
				   &cfg, &use_syslog, &out, &err), 1);
	assert_contains(out, "--config FILE");
	assert_contains(out, "configs/");
	ck_assert_str_eq(err, "");
	free(out);
	free(err);
	ck_assert_int_eq(agent_parse(ARGV("remus-agent", "--help"), &acfg, &use_syslog, &out,
				     &err), 1);
	assert_contains(out, "--check-config");
	assert_contains(out, "configs/");
	free(out);
	free(err);
}
END_TEST

START_TEST(test_replicator_libvirt_file_and_flags)
{
	struct replicator_config cfg;
	int use_syslog = 0;
	char *out, *err;

	ck_assert_int_eq(rep_parse(ARGV("remus-replicator", "--config", "configs/pair-libvirt.conf"),
				   &cfg, &use_syslog, &out, &err), 0);
	ck_assert_ptr_null(cfg.qmp_path);
	ck_assert_str_eq(cfg.domain, cfg.file.vm_domain);
	ck_assert_ptr_nonnull(cfg.libvirt_uri);
	replicator_config_free(&cfg);
	free(out);
	free(err);
	/* a --qmp flag names the VM over the file's domain, and the file's
	 * libvirt-uri goes with that domain */
	ck_assert_int_eq(rep_parse(ARGV("remus-replicator", "--config", "configs/pair-libvirt.conf",
					"--qmp", "/q.sock"), &cfg, &use_syslog, &out, &err), 0);
	ck_assert_str_eq(cfg.qmp_path, "/q.sock");
	ck_assert_ptr_null(cfg.domain);
	ck_assert_ptr_null(cfg.libvirt_uri);
	replicator_config_free(&cfg);
	free(out);
	free(err);
	ck_assert_int_eq(rep_parse(ARGV("remus-replicator", "--qmp", "/q", "--domain", "d",
					"--backup", "127.0.0.1:7"), &cfg, &use_syslog, &out, &err), -1);
	ck_assert_str_eq(err, "remus-replicator: --qmp and --domain exclude each other (see --help)\n");
	free(out);
	free(err);
	ck_assert_int_eq(rep_parse(ARGV("remus-replicator", "--qmp", "/q", "--connect", "qemu:///system",
					"--backup", "127.0.0.1:7"), &cfg, &use_syslog, &out, &err), -1);
	ck_assert_str_eq(err, "remus-replicator: --connect needs --domain NAME\n");
	free(out);
	free(err);
}
END_TEST

/* Each daemon takes its own host's section and the other's address. */
START_TEST(test_hosts_apply_to_each_daemon)
{
	struct replicator_config rcfg;
	struct agent_config acfg;
	int use_syslog = 0;
	char path[32], *out, *err;

	write_file(path, hosts_file);
	ck_assert_int_eq(rep_parse(ARGV("remus-replicator", "--config", path, "--host", "alpha"),
				   &rcfg, &use_syslog, &out, &err), 0);
	ck_assert_str_eq(err, "");
	ck_assert_str_eq(rcfg.backup.text, "127.0.0.1:7702");
	ck_assert_int_eq(rcfg.n_net_out, 1);
	ck_assert_str_eq(rcfg.net_out[0].spec, "packet:eth1");
	ck_assert_str_eq(rcfg.control_path, "/run/alpha.ctl");
	ck_assert_str_eq(rcfg.host->name, "alpha");
	ck_assert_str_eq(rcfg.config_path, path);
	ck_assert_str_eq(rcfg.state_qmp_path, "/var/lib/remus/alpha/qmp.sock");
	replicator_config_free(&rcfg);
	free(out);
	free(err);
	/* beta has no control socket of its own: [control] socket */
	ck_assert_int_eq(rep_parse(ARGV("remus-replicator", "--config", path, "--host", "beta",
					"--backup", "127.0.0.1:9"), &rcfg, &use_syslog, &out, &err), 0);
	ck_assert_str_eq(rcfg.backup.text, "127.0.0.1:9");
	ck_assert_str_eq(rcfg.net_out[0].spec, "tap:tap0");
	ck_assert_str_eq(rcfg.control_path, "/run/replicator.ctl");
	replicator_config_free(&rcfg);
	free(out);
	free(err);
	ck_assert_int_eq(agent_parse(ARGV("remus-agent", "--config", path, "--host", "beta"), &acfg,
				     &use_syslog, &out, &err), 0);
	ck_assert_str_eq(err, "");
	ck_assert_str_eq(acfg.listen.text, "127.0.0.1:7702");
	ck_assert_str_eq(acfg.state_dir, "/var/lib/remus/beta");
	ck_assert_int_eq(acfg.restore.ntaps, 0);
	ck_assert_str_eq(acfg.host->name, "beta");
	agent_config_free(&acfg);
	free(out);
	free(err);
	/* a host the file does not name */
	ck_assert_int_eq(agent_parse(ARGV("remus-agent", "--config", path, "--host", "gamma"),
				     &acfg, &use_syslog, &out, &err), -1);
	assert_contains(err, "remus-agent: ");
	assert_contains(err, ": this host is 'gamma', which is none of the file's [host] sections "
			"(alpha, beta): give --host NAME\n");
	free(out);
	free(err);
	ck_assert_int_eq(agent_parse(ARGV("remus-agent", "--config", path, "--host", "alpha",
					  "--tap", "tap9"), &acfg, &use_syslog, &out, &err), -1);
	assert_contains(err, "--tap: with [host] sections");
	free(out);
	free(err);
	unlink(path);
	/* --host without such a file */
	write_file(path, pair_file);
	ck_assert_int_eq(rep_parse(ARGV("remus-replicator", "--config", path, "--host", "alpha"),
				   &rcfg, &use_syslog, &out, &err), -1);
	ck_assert_str_eq(err, "remus-replicator: --host needs --config FILE with [host] sections\n");
	free(out);
	free(err);
	unlink(path);
}
END_TEST

static void add(Suite *s, const char *name, const TTest *t)
{
	TCase *tc = tcase_create(name);

	tcase_set_timeout(tc, 20);
	tcase_add_test(tc, t);
	suite_add_tcase(s, tc);
}

#define ADD(s, t) add((s), #t, t)

static Suite *config_suite(void)
{
	Suite *s = suite_create("config");
	TCase *tc = tcase_create("test_bad_file_messages");

	ADD(s, test_every_key_parsed);
	ADD(s, test_defaults_when_absent);
	ADD(s, test_repeatable_keys_keep_order);
	ADD(s, test_syntax_details);
	tcase_set_timeout(tc, 20);
	tcase_add_loop_test(tc, test_bad_file_messages, 0,
			    (int)(sizeof(goldens) / sizeof(goldens[0])));
	suite_add_tcase(s, tc);
	ADD(s, test_good_files_for_each_role);
	ADD(s, test_long_line_and_nul_byte);
	ADD(s, test_error_flood_is_capped);
	ADD(s, test_example_configs_parse);
	ADD(s, test_read_missing_file);
	ADD(s, test_hosts_parse);
	ADD(s, test_hosts_libvirt);
	ADD(s, test_hosts_refusals);
	ADD(s, test_hosts_apply_to_each_daemon);
	ADD(s, test_replicator_file_values_apply);
	ADD(s, test_replicator_flags_override_file);
	ADD(s, test_replicator_control_group_checked);
	ADD(s, test_agent_control_group_checked);
	ADD(s, test_agent_file_values_and_flags);
	ADD(s, test_check_config_ok_and_errors);
	ADD(s, test_config_option_errors);
	ADD(s, test_replicator_libvirt_file_and_flags);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(config_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
