/* The daemons' command lines (remus-replicator, remus-agent): the options
 * both have, a table per program for those that only store a value, and
 * one reader of argv and --config FILE, so that each program's options.c
 * holds only what is its own. */
#ifndef REMUS_CLI_DAEMON_H
#define REMUS_CLI_DAEMON_H

#include "cli.h"
#include "config.h"
#include "log.h"
#include "pair_role.h"

#include <getopt.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

/* ---- --help: the lines both daemons print alike ------------------------ */

/* The heading, --config, --check-config and the start of --host (each
 * program says how its role changes). */
#define CLI_USAGE_CONFIG \
"Options:\n" \
"  --config FILE         the HA pair's config file, the same on both hosts\n" \
"                        (commented examples in configs/); options given\n" \
"                        on the command line override its values\n" \
"  --check-config        check --config FILE and the options, print every\n" \
"                        error or 'FILE: ok', and exit without starting\n" \
"  --host NAME           which [host] of --config FILE this host is (default:\n" \
"                        the host name up to its first dot). With [host]\n" \
"                        sections the one daemon of a host changes role by\n"
/* The logging options and -h, --version. */
#define CLI_USAGE_LOGGING \
"  --syslog              log to syslog instead of stderr\n" \
"  -v, --verbose         debug logging\n" \
"  -h, --help            this text\n" \
"  --version             print the version and exit\n"

/* ---- a program's options, described once ---------------------------- */

/* Options that only store their value: what the value is and where in the
 * program's config it goes (a table per program, read by cli_read_args).
 * Errors name the option as long_opts spells it. */
enum cli_kind {
	CLI_STRING,   /* const char *: the argument as it is */
	CLI_FLAG,     /* bool: set */
	CLI_UINT,     /* unsigned: a number in min-max */
	CLI_U64,      /* uint64_t: a number in min-max, times 2^shift */
	CLI_SIZE,     /* size_t: a number in min-max, times 2^shift */
	CLI_PERCENT,  /* double: a percentage in min-max, as a fraction */
};
struct cli_field {
	int opt;             /* getopt_long's value */
	enum cli_kind kind;
	size_t offset;       /* of the member in the program's config */
	unsigned long min, max;
	unsigned shift;      /* MiB: 20, GiB: 30 */
};
#define CLI_STRING_FIELD(o, type, member) \
	{ .opt = (o), .kind = CLI_STRING, .offset = offsetof(type, member) }
#define CLI_FLAG_FIELD(o, type, member) \
	{ .opt = (o), .kind = CLI_FLAG, .offset = offsetof(type, member) }
/* The range last, as two numbers or one of the RANGE_ macros (cli.h). */
#define CLI_NUMBER_FIELD(o, kind_, shift_, type, member, ...) \
	{ .opt = (o), .kind = (kind_), .offset = offsetof(type, member), .shift = (shift_), \
	  CLI_MIN_MAX_(__VA_ARGS__) }
#define CLI_MIN_MAX_(lo, hi) .min = (lo), .max = (hi)

/* The options every daemon has: --config, --check-config, --host, the
 * hooks' --notify and --pair, the link's --key-file,
 * --insecure-cleartext-link, --timeout-ms and --heartbeat-ms, -v,
 * -h/--help, --version, and the service's flags that carry over to the
 * next role of a pair whose roles move (pair_role.h): --syslog, --control,
 * --control-group. */
enum {
	CLI_OPT_SYSLOG = 0x4000, CLI_OPT_CONTROL, CLI_OPT_CONTROL_GROUP, CLI_OPT_CONFIG,
	CLI_OPT_CHECK_CONFIG, CLI_OPT_HOST, CLI_OPT_NOTIFY, CLI_OPT_PAIR, CLI_OPT_KEY_FILE,
	CLI_OPT_CLEARTEXT, CLI_OPT_TIMEOUT_MS, CLI_OPT_HEARTBEAT_MS,
};
/* Their entries of a program's long_opts, at its end. */
#define CLI_DAEMON_LONG_OPTIONS \
	{ "config", required_argument, NULL, CLI_OPT_CONFIG }, \
	{ "check-config", no_argument, NULL, CLI_OPT_CHECK_CONFIG }, \
	{ "host", required_argument, NULL, CLI_OPT_HOST }, \
	{ "notify", required_argument, NULL, CLI_OPT_NOTIFY }, \
	{ "pair", required_argument, NULL, CLI_OPT_PAIR }, \
	{ "key-file", required_argument, NULL, CLI_OPT_KEY_FILE }, \
	{ "insecure-cleartext-link", no_argument, NULL, CLI_OPT_CLEARTEXT }, \
	{ "timeout-ms", required_argument, NULL, CLI_OPT_TIMEOUT_MS }, \
	{ "heartbeat-ms", required_argument, NULL, CLI_OPT_HEARTBEAT_MS }, \
	{ "control", required_argument, NULL, CLI_OPT_CONTROL }, \
	{ "control-group", required_argument, NULL, CLI_OPT_CONTROL_GROUP }, \
	{ "syslog", no_argument, NULL, CLI_OPT_SYSLOG }, \
	{ "verbose", no_argument, NULL, 'v' }, \
	{ "help", no_argument, NULL, 'h' }, \
	{ "version", no_argument, NULL, CLI_OPT_VERSION }, \
	{ NULL, 0, NULL, 0 }
/* The fields of those that only store a value, into members of these
 * names in both daemons' configs (type: the config's struct). */
#define CLI_DAEMON_FIELDS(type) \
	CLI_STRING_FIELD(CLI_OPT_NOTIFY, type, notify_cmd), \
	CLI_STRING_FIELD(CLI_OPT_PAIR, type, pair_name), \
	CLI_STRING_FIELD(CLI_OPT_KEY_FILE, type, key_file), \
	CLI_FLAG_FIELD(CLI_OPT_CLEARTEXT, type, cleartext_link), \
	CLI_NUMBER_FIELD(CLI_OPT_TIMEOUT_MS, CLI_UINT, 0, type, timeout_ms, RANGE_TIMEOUT_MS), \
	CLI_NUMBER_FIELD(CLI_OPT_HEARTBEAT_MS, CLI_UINT, 0, type, heartbeat_ms, \
			 RANGE_HEARTBEAT_MS)

/* A daemon's own options, described once (static const). */
struct cli_program {
	const char *name;                /* in errors: "remus-agent: ..." */
	const struct option *opts;
	const struct cli_field *fields;  /* options that only store a value */
	size_t nfields;
	/* every other option of the program: 1 if c is not one of them, 0
	 * taken, -1 a bad value (printed) */
	int (*option)(void *ctx, int c, const char *arg);
	enum config_role role;           /* of its --config file */
	/* the file's values, read before the flags override them */
	void (*apply_file)(void *ctx, int *use_syslog);
	void (*usage)(FILE *f);
};
/* Where the options every daemon has (above) go. */
struct cli_service {
	struct pair_role_carry *carry;
	int *use_syslog;
	const char **control_path;
	const char **control_group;
	const char *host_name;  /* out: --host */
	bool control_flag;      /* out: --control was given (over the file's) */
	struct cli_config file; /* out: --config, --check-config */
};
/* For a daemon config with members of these names. */
#define CLI_SERVICE_OF(cfg, use_syslog_)                                              \
	{ .carry = &(cfg)->carry, .use_syslog = (use_syslog_),                        \
	  .control_path = &(cfg)->control_path, .control_group = &(cfg)->control_group }
/* Read the command line: --config FILE into *file (prog->apply_file then
 * takes its values), then the options over them into cfg (fields), the
 * program (option, with ctx) and the service. 0: read; 1: --help or
 * --version printed (exit 0); -1: an unknown option, a bad value, an
 * operand or a bad file, printed. */
int cli_read_args(const struct cli_program *prog, void *ctx, struct cli_service *svc,
		  struct pair_config *file, int argc, char **argv, void *cfg);
/* After a read without error: with --check-config, print "FILE: ok" and
 * return 1 (exit 0 without starting); else 0. */
int cli_report_checked(const struct cli_config *file);
/* arg is one of values (NULL-terminated): 0, or -1 after printing
 * "PROG: OPT: 'ARG' is not A, B or C". */
int cli_one_of(const char *prog, const char *opt, const char *arg, const char *const *values);
/* What both daemons check of the common options once flags and file are
 * read: --notify can be run, --pair is 1-64 characters, --timeout-ms is
 * longer than --heartbeat-ms. 0, or -1 after printing. */
int cli_check_daemon(const char *prog, const char *notify_cmd, const char *pair_name,
		     unsigned timeout_ms, unsigned heartbeat_ms);

/* The keys both daemons read alike, into members of the same names of
 * their configs (under the flags, which are read after); the log's keys
 * take effect at once. */
#define CONFIG_APPLY_DAEMON_KEYS(pc, cfg, use_syslog)                                 \
	do {                                                                          \
		if (PC_SET(pc, HOOKS_NOTIFY))                                         \
			(cfg)->notify_cmd = (pc)->hooks_notify;                       \
		if (PC_SET(pc, PAIR_NAME))                                            \
			(cfg)->pair_name = (pc)->pair_name;                           \
		if (PC_SET(pc, LINK_KEY_FILE))                                        \
			(cfg)->key_file = (pc)->link_key_file;                        \
		(cfg)->cleartext_link = (pc)->link_insecure_cleartext;               \
		if (PC_SET(pc, HEARTBEAT_INTERVAL_MS))                                \
			(cfg)->heartbeat_ms = (pc)->heartbeat_interval_ms;            \
		if (PC_SET(pc, HEARTBEAT_TIMEOUT_MS))                                 \
			(cfg)->timeout_ms = (pc)->heartbeat_timeout_ms;               \
		if (PC_SET(pc, LOG_TARGET))                                           \
			*(use_syslog) = !strcmp((pc)->log_target, "syslog");          \
		if (PC_SET(pc, LOG_LEVEL))                                            \
			log_set_level(strcmp((pc)->log_level, "debug") ? LOG_INFO :   \
								       LOG_DEBUG);    \
	} while (0)

#endif
