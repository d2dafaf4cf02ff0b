/* Command-line helpers shared by the programs: errors name the option and
 * quote the bad value. */
#ifndef REMUS_CLI_H
#define REMUS_CLI_H

#include <getopt.h>
#include <stdbool.h>

/* Ranges (MIN, MAX) of the values that both a flag and a config key set,
 * in one place so that the two cannot drift apart. */
#define RANGE_EPOCH_MS         5, 10000
#define RANGE_OVERHEAD_PCT     1, 90
#define RANGE_OUTPUT_DELAY_MS  0, 10000
#define RANGE_HEARTBEAT_MS     10, 60000
#define RANGE_TIMEOUT_MS       50, 600000
#define RANGE_CAPTURE_THREADS  1, 16
#define RANGE_NET_CAP_MB       1, 4096
#define RANGE_DISK_CAP_MB      1, 4096
#define RANGE_COMPRESS_CACHE_MB 0, 65536
#define RANGE_FENCE_TIMEOUT_MS 100, 600000
#define RANGE_TAKEOVER_WINDOW_MS 1000, 600000
#define RANGE_MAX_RAM_MB       64, 16777216  /* 16 TiB */
#define RANGE_MAX_DISK_GB      1, 1048576    /* 1 PiB */
#define RANGE_MAX_EPOCH_MB     16, 16777216

/* A decimal number in MIN-MAX, quietly: 0, -EINVAL (not a number) or
 * -ERANGE (a number outside MIN-MAX). *out is set only on success. */
int cli_strtoul(const char *text, unsigned long min, unsigned long max, unsigned long *out);
/* 0, or -1 after printing "PROG: OPT: 'VALUE' is not a number in MIN-MAX". */
int cli_parse_ulong(const char *opt, const char *text, unsigned long min,
		    unsigned long max, unsigned long *out);
/* Print why getopt_long stopped at the current option. */
void cli_bad_option(const char *prog, int argc, char **argv, int optopt_value);
void cli_set_prog(const char *prog);

/* getopt_long's value for --version, the same in every program. No short
 * form: -v is --verbose. */
#define CLI_OPT_VERSION 'V'
/* --version: "PROG VERSION" on stdout; the version comes from the file
 * VERSION, through the Makefile (-DREMUS_VERSION). */
void cli_print_version(const char *prog);

/* What a first pass over argv found, so that a --config file can be read
 * before the other options override its values, wherever they stand. */
struct cli_config {
	const char *file;   /* --config FILE */
	bool check;         /* --check-config */
	bool help;          /* -h/--help or --version: do not read the file */
};
/* opt_config / opt_check: getopt_long's values for the two options.
 * Errors of other options are left to the real pass. 0, or -1 after
 * printing (--config twice, --check-config without --config). */
int cli_find_config(const char *prog, int argc, char **argv, const struct option *opts,
		    int opt_config, int opt_check, struct cli_config *out);

#endif
