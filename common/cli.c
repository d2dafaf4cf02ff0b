#include "cli.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>

static const char *cli_prog = "remus";

void cli_set_prog(const char *prog)
{
	cli_prog = prog;
}

int cli_parse_ulong(const char *opt, const char *text, unsigned long min,
		    unsigned long max, unsigned long *out)
{
	char *end;
	unsigned long v;

	errno = 0;
	v = strtoul(text, &end, 10);
	if (!*text || *end || errno || text[0] == '-' || v < min || v > max) {
		fprintf(stderr, "%s: %s: '%s' is not a number in %lu-%lu\n",
			cli_prog, opt, text, min, max);
		return -1;
	}
	*out = v;
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
