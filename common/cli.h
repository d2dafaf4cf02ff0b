/* Command-line helpers shared by the programs: errors name the option and
 * quote the bad value. */
#ifndef REMUS_CLI_H
#define REMUS_CLI_H

/* 0, or -1 after printing "PROG: OPT: 'VALUE' is not a number in MIN-MAX". */
int cli_parse_ulong(const char *opt, const char *text, unsigned long min,
		    unsigned long max, unsigned long *out);
/* Print why getopt_long stopped at the current option. */
void cli_bad_option(const char *prog, int argc, char **argv, int optopt_value);
void cli_set_prog(const char *prog);

#endif
