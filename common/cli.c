#include "cli.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>

#ifndef REMUS_VERSION
#error "REMUS_VERSION is defined by the Makefile, from the file VERSION"
#endif

static const char *cli_prog = "remus";

void cli_print_version(const char *prog)
{
	printf("%s %s\n", prog, REMUS_VERSION);
}

void cli_set_prog(const char *prog)
{
	cli_prog = prog;
}

int cli_strtoul(const char *text, unsigned long min, unsigned long max, unsigned long *out)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(text, &end, 10);
	/* strtoul takes "-5" as a huge number: refuse the sign outright */
	if (!*text || *end || end == text || text[0] == '-')
		return -EINVAL;
	if (errno || v < min || v > max)
		return -ERANGE;
	*out = v;
	return 0;
}

int cli_parse_ulong(const char *opt, const char *text, unsigned long min,
		    unsigned long max, unsigned long *out)
{
	if (cli_strtoul(text, min, max, out)) {
		fprintf(stderr, "%s: %s: '%s' is not a number in %lu-%lu\n",
			cli_prog, opt, text, min, max);
		return -1;
	}
	return 0;
}

void cli_bad_option(const char *prog, int argc, char **argv, int optopt_value)
{
	const char *arg = optind > 0 && optind <= argc ? argv[optind - 1] : "?";

	if (optopt_value && optopt_value < 256)
		fprintf(stderr, "%s: option '-%c' %s (see --help)\n", prog, optopt_value,
			"is unknown or needs a value");
	else
		fprintf(stderr, "%s: option '%s' is unknown or needs a value (see --help)\n",
			prog, arg);
}

int cli_find_config(const char *prog, int argc, char **argv, const struct option *opts,
		    int opt_config, int opt_check, struct cli_config *out)
{
	int c;

	*out = (struct cli_config){ 0 };
	optind = 0; /* 0, not 1: glibc then also forgets a half-read option cluster */
	opterr = 0;
	while ((c = getopt_long(argc, argv, "vh", opts, NULL)) != -1) {
		if (c == opt_config && out->file) {
			fprintf(stderr, "%s: --config given twice ('%s', '%s')\n", prog, out->file,
				optarg);
			return -1;
		}
		if (c == opt_config)
			out->file = optarg;
		out->check |= c == opt_check;
		out->help |= c == 'h' || c == CLI_OPT_VERSION;
	}
	if (out->check && !out->file && !out->help) {
		fprintf(stderr, "%s: --check-config needs --config FILE\n", prog);
		return -1;
	}
	return 0;
}
