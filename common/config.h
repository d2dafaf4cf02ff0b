/* Config files describing one HA pair (configs/pair-*.conf). The same file
 * is deployed on both hosts; each daemon reads the keys it needs and the
 * parser checks them all, so a file that passes on one host passes on the
 * other.
 *
 * INI-style: `[section]`, `key = value`, comments from '#' or ';' at the
 * start of a line or after white space. The parser is fed one line at a
 * time (config_init / config_line / config_finish, after wireguard-tools'
 * config.c) and never opens files; config_read_file is the thin wrapper
 * that does. It keeps going after an error, so that every error of a file
 * is printed in one run, each as "FILE:LINE: what, with the value". */
#ifndef REMUS_CONFIG_H
#define REMUS_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "cli.h"

#define CONFIG_MAX_LINE   1024 /* characters, without the newline */
#define CONFIG_MAX_LIST   8    /* values of a repeatable key */
#define CONFIG_MAX_ERRORS 100  /* printed; the rest are counted */
#define RANGE_NONE        0, 0 /* for the keys that are not numbers */

/* The key table: one line per key. Adding a key is a line here and its
 * field in struct pair_config (the compiler checks that the field's type
 * suits the kind).
 *   range    MIN, MAX of a UINT (cli.h)
 *   kind     STR text, ADDR HOST:PORT (netaddr_parse), UINT in MIN-MAX,
 *            BOOL yes/no, ENUM one of VALUES, LIST a repeatable STR
 *   default  as it would be written in the file; NULL: none (unset)
 *   check    extra test of a STR/LIST value (NULL: any non-empty text)
 *   flags    the daemons' flags for this key, '|'-separated, for "did you
 *            mean" when someone writes a flag's name as a key
 *   needs    CFG_R: the replicator needs it, CFG_A: the agent does */
#define PAIR_CONFIG_KEYS(X) \
/* id                section       key                kind  field              range                   default    values         check        flags                       needs */ \
X(PAIR_NAME,         "pair",       "name",            STR,  pair_name,         RANGE_NONE,             NULL,      NULL,          NULL,        NULL,                       0) \
X(VM_QMP,            "vm",         "qmp",             STR,  vm_qmp,            RANGE_NONE,             NULL,      NULL,          NULL,        "qmp",                      0) \
X(VM_LIBVIRT_URI,    "vm",         "libvirt-uri",     STR,  vm_libvirt_uri,    RANGE_NONE,             NULL,      NULL,          NULL,        "connect|uri",              0) \
X(VM_DOMAIN,         "vm",         "domain",          STR,  vm_domain,         RANGE_NONE,             NULL,      NULL,          NULL,        "domain",                   0) \
X(VM_RAM_FILE,       "vm",         "ram-file",        STR,  vm_ram_file,       RANGE_NONE,             NULL,      NULL,          NULL,        "ram-file",                 0) \
X(BACKUP_ADDRESS,    "backup",     "address",         ADDR, backup_address,    RANGE_NONE,             NULL,      NULL,          NULL,        "backup|listen",            CFG_R | CFG_A) \
X(BACKUP_STATE_DIR,  "backup",     "state-dir",       STR,  backup_state_dir,  RANGE_NONE,             NULL,      NULL,          NULL,        "state-dir",                CFG_A) \
X(BACKUP_TAP,        "backup",     "tap",             LIST, backup_taps,       RANGE_NONE,             NULL,      NULL,          check_tap,   "tap",                      0) \
X(BACKUP_FAILOVER,   "backup",     "failover",        BOOL, backup_failover,   RANGE_NONE,             "yes",     NULL,          NULL,        "no-failover",              0) \
X(BACKUP_TAKEOVER,   "backup",     "takeover",        ENUM, backup_takeover,   RANGE_NONE,             "auto",    takeover_values, NULL,      "takeover",                 0) \
X(BACKUP_TAKEOVER_WINDOW_MS, "backup", "takeover-window-ms", UINT, backup_takeover_window_ms, RANGE_TAKEOVER_WINDOW_MS, "30000", NULL, NULL, "takeover-window-ms", 0) \
X(BACKUP_MAX_RAM_MB, "backup",     "max-ram-mb",      UINT, backup_max_ram_mb, RANGE_MAX_RAM_MB,       "65536",   NULL,          NULL,        "max-ram-mb",               0) \
X(BACKUP_MAX_DISK_GB, "backup",    "max-disk-gb",     UINT, backup_max_disk_gb, RANGE_MAX_DISK_GB,     "4096",    NULL,          NULL,        "max-disk-gb",              0) \
X(BACKUP_MAX_EPOCH_MB, "backup",   "max-epoch-mb",    UINT, backup_max_epoch_mb, RANGE_MAX_EPOCH_MB,   "16384",   NULL,          NULL,        "max-epoch-mb",             0) \
X(BACKUP_EMULATOR,   "backup",     "emulator",        STR,  backup_emulator,   RANGE_NONE,             "/usr/bin/qemu-system-x86_64", NULL, NULL,   "emulator",                 0) \
X(BACKUP_SHARED_DISK, "backup",    "shared-disk",     LIST, backup_shared_disks, RANGE_NONE,           NULL,      NULL,          NULL,        "shared-disk",              0) \
X(BACKUP_CONTROL_SOCKET, "backup", "control-socket",  STR,  backup_control_socket, RANGE_NONE,         NULL,      NULL,          NULL,        "control",                  0) \
X(BACKUP_CONTROL_GROUP, "backup",  "control-group",   STR,  backup_control_group, RANGE_NONE,          NULL,      NULL,          NULL,        "control-group",            0) \
X(EPOCH_POLICY,      "epoch",      "policy",          ENUM, epoch_policy,      RANGE_NONE,             "hybrid",  policy_values, NULL,        "epoch-policy",             0) \
X(EPOCH_LENGTH_MS,   "epoch",      "length-ms",       UINT, epoch_length_ms,   RANGE_EPOCH_MS,         "50",      NULL,          NULL,        "epoch-ms",                 0) \
X(EPOCH_MIN_MS,      "epoch",      "min-ms",          UINT, epoch_min_ms,      RANGE_EPOCH_MS,         "10",      NULL,          NULL,        "epoch-min-ms",             0) \
X(EPOCH_MAX_MS,      "epoch",      "max-ms",          UINT, epoch_max_ms,      RANGE_EPOCH_MS,         "200",     NULL,          NULL,        "epoch-max-ms",             0) \
X(EPOCH_MAX_OVERHEAD, "epoch",     "max-overhead",    UINT, epoch_max_overhead, RANGE_OVERHEAD_PCT,    "25",      NULL,          NULL,        "max-overhead",             0) \
X(EPOCH_OUTPUT_DELAY_MS, "epoch",  "output-delay-ms", UINT, epoch_output_delay_ms, RANGE_OUTPUT_DELAY_MS, "2",     NULL,          NULL,        "output-delay-ms",          0) \
X(CAPTURE_TRACKER,   "capture",    "tracker",         ENUM, capture_tracker,   RANGE_NONE,             "auto",    config_tracker_values, NULL,       "tracker",                  0) \
X(CAPTURE_THREADS,   "capture",    "threads",         UINT, capture_threads,   RANGE_CAPTURE_THREADS,  NULL,      NULL,          NULL,        "capture-threads",          0) \
X(CAPTURE_UNPROTECTED_DISK, "capture", "unprotected-disk", LIST, capture_unprotected_disks, RANGE_NONE, NULL,      NULL,          NULL,        "unprotected-disk",         0) \
X(CAPTURE_DISK_CAP_MB, "capture",  "disk-cap-mb",     UINT, capture_disk_cap_mb, RANGE_DISK_CAP_MB,    "64",      NULL,          NULL,        "disk-cap-mb",              0) \
X(CAPTURE_DISK_CAPTURE, "capture", "disk-capture",    ENUM, capture_disk_capture, RANGE_NONE,          "mirror",  config_disk_capture_values, NULL,  "disk-capture",             0) \
X(NETBUF_NET_OUT,    "net-buffer", "net-out",         LIST, netbuf_net_out,    RANGE_NONE,             NULL,      NULL,          check_net_out, "net-out",                0) \
X(NETBUF_CAP_MB,     "net-buffer", "cap-mb",          UINT, netbuf_cap_mb,     RANGE_NET_CAP_MB,       "16",      NULL,          NULL,        "net-cap-mb",               0) \
X(HEARTBEAT_INTERVAL_MS, "heartbeat", "interval-ms",  UINT, heartbeat_interval_ms, RANGE_HEARTBEAT_MS, "100",     NULL,          NULL,        "heartbeat-ms",             0) \
X(HEARTBEAT_TIMEOUT_MS, "heartbeat", "timeout-ms",    UINT, heartbeat_timeout_ms, RANGE_TIMEOUT_MS,    "2000",    NULL,          NULL,        "timeout-ms",               0) \
X(HOOKS_NOTIFY,      "hooks",      "notify",          STR,  hooks_notify,      RANGE_NONE,             NULL,      NULL,          NULL,        "notify",                   0) \
X(HOOKS_FENCE,       "hooks",      "fence",           STR,  hooks_fence,       RANGE_NONE,             NULL,      NULL,          NULL,        "fence",                    CFG_A) \
X(HOOKS_FENCE_TIMEOUT_MS, "hooks", "fence-timeout-ms", UINT, hooks_fence_timeout_ms, RANGE_FENCE_TIMEOUT_MS, "10000", NULL,     NULL,        "fence-timeout-ms",         0) \
X(LINK_KEY_FILE,     "link",       "key-file",        STR,  link_key_file,     RANGE_NONE,             NULL,      NULL,          NULL,        "key-file",                 0) \
X(LINK_COMPRESS,     "link",       "compress",        ENUM, link_compress,     RANGE_NONE,             "auto",    compress_values, NULL,      "compress",                 0) \
X(LINK_COMPRESS_CACHE_MB, "link",  "compress-cache-mb", UINT, link_compress_cache_mb, RANGE_COMPRESS_CACHE_MB, "64", NULL,     NULL,        "compress-cache-mb",        0) \
X(LINK_CLEARTEXT,    "link",       "insecure-cleartext", BOOL, link_insecure_cleartext, RANGE_NONE,     "no",      NULL,          NULL,        "insecure-cleartext-link",  0) \
X(CONTROL_SOCKET,    "control",    "socket",          STR,  control_socket,    RANGE_NONE,             NULL,      NULL,          NULL,        "control",                  0) \
X(CONTROL_GROUP,     "control",    "group",           STR,  control_group,     RANGE_NONE,             NULL,      NULL,          NULL,        "control-group",            0) \
X(LOG_TARGET,        "log",        "target",          ENUM, log_target,        RANGE_NONE,             "stderr",  log_target_values, NULL,    "syslog",                   0) \
X(LOG_LEVEL,         "log",        "level",           ENUM, log_level,         RANGE_NONE,             "info",    log_level_values, NULL,     "verbose",                  0)

#define CFG_R 1u /* needed by remus-replicator */
#define CFG_A 2u /* needed by remus-agent */

/* The daemon whose requirements config_finish checks; CONFIG_ANY checks
 * the values only (the fuzzer, tools). */
enum config_role { CONFIG_ANY = 0, CONFIG_REPLICATOR = CFG_R, CONFIG_AGENT = CFG_A };

enum pair_config_key {
#define PAIR_CONFIG_ID(id, ...) PC_##id,
	PAIR_CONFIG_KEYS(PAIR_CONFIG_ID)
#undef PAIR_CONFIG_ID
	PC_NKEYS
};

/* Values of a repeatable key, in file order. */
struct config_list {
	char *v[CONFIG_MAX_LIST];
	int n;
};

/* [host NAME]: one host of a pair whose roles move between its hosts.
 * With these sections the same file says where each host's daemon
 * listens, keeps its replica and puts the VM's NICs, and the one daemon
 * of a host changes role by itself (common/pair_role.h): the agent that
 * restores the VM replicates it to another host, a primary whose VM is
 * gone becomes another host's backup. Two hosts, or three: the third is a
 * spare, so that a VM whose old host stays down is protected again
 * (replicator/backup_choice.h says which host a replicator protects to). */
#define CONFIG_MAX_HOSTS    3
#define CONFIG_MAX_HOSTNAME 63
struct config_host {
	char *name;
	unsigned line;                /* of its [host NAME] header */
	char *address;                /* HOST:PORT its agent listens on */
	char *state_dir;              /* its agent's replica */
	struct config_list net_out;   /* the VM's NICs on this host's LAN */
	char *control_socket;         /* its daemon's, whichever role runs */
	char *libvirt_uri;            /* its libvirt, for a [vm] domain (NULL: [vm]'s) */
	unsigned libvirt_uri_line;
};

/* Everything a pair file can say. Strings are owned (pair_config_free);
 * an ENUM points at the canonical spelling in a static table. Absent keys
 * hold their default; set[] tells which the file gave, line[] where. */
struct pair_config {
	char *path;                  /* the file, for messages */
	bool set[PC_NKEYS];
	unsigned line[PC_NKEYS];
	/* [pair] */
	char *pair_name;             /* NULL: the VM's name */
	/* [vm] */
	char *vm_qmp, *vm_libvirt_uri, *vm_domain, *vm_ram_file;
	/* [backup] */
	char *backup_address;        /* HOST:PORT, checked with netaddr_parse */
	char *backup_state_dir;
	struct config_list backup_taps;
	bool backup_failover;
	const char *backup_takeover; /* "auto" or "manual" (a cluster manager promotes) */
	unsigned backup_takeover_window_ms;
	/* what one primary may make the agent hold (backup-agent/replica.h) */
	unsigned backup_max_ram_mb, backup_max_disk_gb, backup_max_epoch_mb;
	/* the QEMU a restore runs, whatever the primary ran */
	char *backup_emulator;
	/* images both hosts see, which a restored VM may open */
	struct config_list backup_shared_disks;
	/* the agent's control socket, as [control] is the replicator's */
	char *backup_control_socket;
	char *backup_control_group;  /* NULL: root alone may use it */
	/* [epoch] */
	const char *epoch_policy;
	unsigned epoch_length_ms, epoch_min_ms, epoch_max_ms;
	unsigned epoch_max_overhead; /* percent */
	unsigned epoch_output_delay_ms;
	/* [capture] */
	const char *capture_tracker;
	unsigned capture_threads;    /* 0: one per online CPU */
	struct config_list capture_unprotected_disks;
	unsigned capture_disk_cap_mb;
	const char *capture_disk_capture; /* "mirror" or "bitmap" (replicator/dev_disk.c) */
	/* [net-buffer] */
	struct config_list netbuf_net_out;
	unsigned netbuf_cap_mb;
	/* [heartbeat] */
	unsigned heartbeat_interval_ms, heartbeat_timeout_ms;
	/* [hooks] */
	char *hooks_notify;
	char *hooks_fence;           /* a command, or "none" */
	unsigned hooks_fence_timeout_ms;
	/* [control] */
	char *control_socket;
	char *control_group;         /* NULL: root alone may use the socket */
	/* [link] */
	char *link_key_file;         /* the pair key (common/link_security.h) */
	bool link_insecure_cleartext;
	const char *link_compress;   /* auto, on, off (replicator/compress.h) */
	unsigned link_compress_cache_mb;
	/* [log] */
	const char *log_target;      /* "stderr" or "syslog" */
	const char *log_level;       /* "info" or "debug" */
	/* [host NAME], in file order */
	struct config_host hosts[CONFIG_MAX_HOSTS];
	int nhosts;
};

#define PC_SET(pc, id) ((pc)->set[PC_##id])

/* The words of [capture] tracker and disk-capture (NULL-terminated), which
 * the replicator's --tracker and --disk-capture take too. */
extern const char *const config_tracker_values[];
extern const char *const config_disk_capture_values[];

/* Checks HOST:PORT; 0 or -EINVAL with the reason in err. */
typedef int (*config_addr_check)(const char *text, char *err, size_t errlen);

struct config_parser {
	struct pair_config *cfg;
	const char *file;
	FILE *errf;                  /* where errors go */
	config_addr_check check_addr; /* default: netaddr_parse (resolves names) */
	unsigned lineno;
	int section;                 /* index, or SECTION_NONE / SECTION_BAD / SECTION_HOST */
	int host;                    /* SECTION_HOST: index into cfg->hosts */
	unsigned seen_sections;      /* bit per section index */
	unsigned given[PC_NKEYS];    /* line of each key's first mention, valid or not */
	unsigned errors;
};

/* Fill cfg with the defaults (nothing set). */
void pair_config_init(struct pair_config *cfg);
/* Free what cfg owns; cfg may be all zero. Leaves it all zero. */
void pair_config_free(struct pair_config *cfg);

void config_init(struct config_parser *p, struct pair_config *cfg, const char *file,
		 FILE *errf);
/* One line, with or without its newline; len excludes nothing (NULs in it
 * are an error). */
void config_line(struct config_parser *p, const char *line, size_t len);
/* Check across keys and what role needs. 0, or -EINVAL when any error was
 * printed (cfg must still be freed). */
int config_finish(struct config_parser *p, enum config_role role);

/* The host of the file named name, NULL if none. */
const struct config_host *config_host_find(const struct pair_config *cfg, const char *name);
/* The first host of the file other than self (a two-host file's other
 * host). */
const struct config_host *config_host_peer(const struct pair_config *cfg,
					   const struct config_host *self);
/* Which [host] this daemon is: name (--host), or else this machine's host
 * name up to its first dot, into *self. A file without [host] sections
 * gives NULL, and refuses a name. 0, or -1 after writing why to errf
 * (prog: the daemon). */
int config_host_self(const struct pair_config *cfg, const char *name, const char *prog,
		     FILE *errf, const struct config_host **self);

/* Read and parse a whole file. 0, -EINVAL (errors printed) or -errno if it
 * cannot be read (printed). cfg must be freed in every case. */
int config_read_file(const char *path, enum config_role role, struct pair_config *cfg,
		     FILE *errf);

#endif
