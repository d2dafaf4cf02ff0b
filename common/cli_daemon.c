/* The daemons' command lines (cli_daemon.h). */
#include "cli_daemon.h"
#include "hooks.h"
#include "log.h"

#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

static const char *option_name(const struct option *opts, int c)
{
	for (; opts->name; opts++)
		if (opts->val == c)
			return opts->name;
	return "?";
}

static int set_number(const struct cli_field *f, const char *opt, const char *arg, void *at)
{
	unsigned long v;

	if (cli_parse_ulong(opt, arg, f->min, f->max, &v))
		return -1;
	switch (f->kind) {
	case CLI_UINT: *(unsigned *)at = (unsigned)v; break;
	case CLI_U64: *(uint64_t *)at = (uint64_t)v << f->shift; break;
	case CLI_SIZE: *(size_t *)at = (size_t)v << f->shift; break;
	case CLI_PERCENT: *(double *)at = (double)v / 100; break;
	case CLI_STRING: case CLI_FLAG: break;
	}
	return 0;
}

/* Option c with argument arg, if it is one of fields: stored into cfg.
 * 1: not in the table; 0: stored; -1: a bad value, printed. */
static int set_field(const struct cli_field *fields, size_t n, const struct option *opts, int c,
		     const char *arg, void *cfg)
{
	for (size_t i = 0; i < n; i++) {
		const struct cli_field *f = &fields[i];
		void *at = (char *)cfg + f->offset;
		char opt[64];

		if (f->opt != c)
			continue;
		if (f->kind == CLI_STRING) {
			*(const char **)at = arg;
			return 0;
		}
		if (f->kind == CLI_FLAG) {
			*(bool *)at = true;
			return 0;
		}
		snprintf(opt, sizeof(opt), "--%s", option_name(opts, c));
		return set_number(f, opt, arg, at);
	}
	return 1;
}

static int service_option(const struct cli_program *prog, struct cli_service *svc, int c,
			  int argc, char **argv)
{
	switch (c) {
	case CLI_OPT_CONFIG: case CLI_OPT_CHECK_CONFIG:
		return 0; /* read before (cli_find_config) */
	case CLI_OPT_HOST:
		svc->host_name = optarg;
		return 0;
	case CLI_OPT_CONTROL:
		*svc->control_path = optarg;
		svc->control_flag = true;
		pair_role_carry_add(svc->carry, "--control", optarg);
		return 0;
	case CLI_OPT_CONTROL_GROUP:
		*svc->control_group = optarg;
		pair_role_carry_add(svc->carry, "--control-group", optarg);
		return 0;
	case CLI_OPT_SYSLOG:
		*svc->use_syslog = 1;
		pair_role_carry_add(svc->carry, "--syslog", NULL);
		return 0;
	case 'v':
		log_set_level(LOG_DEBUG);
		pair_role_carry_add(svc->carry, "-v", NULL);
		return 0;
	case 'h':
		prog->usage(stdout);
		return 1;
	case CLI_OPT_VERSION:
		cli_print_version(prog->name);
		return 1;
	default:
		cli_bad_option(prog->name, argc, argv, optopt);
		return -1;
	}
}

int cli_read_args(const struct cli_program *prog, void *ctx, struct cli_service *svc,
		  struct pair_config *file, int argc, char **argv, void *cfg)
{
	int c, rc;

	cli_set_prog(prog->name);
	if (cli_find_config(prog->name, argc, argv, prog->opts, CLI_OPT_CONFIG,
			    CLI_OPT_CHECK_CONFIG, &svc->file))
		return -1;
	if (svc->file.file && !svc->file.help) {
		if (config_read_file(svc->file.file, prog->role, file, stderr))
			return -1;
		prog->apply_file(ctx, svc->use_syslog);
	}
	optind = 0; /* 0, not 1: glibc then also forgets a half-read option cluster */
	opterr = 0;
	while ((c = getopt_long(argc, argv, "vh", prog->opts, NULL)) != -1) {
		rc = set_field(prog->fields, prog->nfields, prog->opts, c, optarg, cfg);
		if (rc == 1)
			rc = prog->option(ctx, c, optarg);
		if (rc == 1)
			rc = service_option(prog, svc, c, argc, argv);
		if (rc)
			return rc;
	}
	if (optind < argc) {
		fprintf(stderr, "%s: unexpected argument '%s'\n", prog->name, argv[optind]);
		return -1;
	}
	return 0;
}

int cli_check_daemon(const char *prog, const char *notify_cmd, const char *pair_name,
		     unsigned timeout_ms, unsigned heartbeat_ms)
{
	char err[512];

	if (notify_cmd && hook_check(notify_cmd, err, sizeof(err))) {
		fprintf(stderr, "%s: --notify: cannot run it: %s\n", prog, err);
		return -1;
	}
	if (pair_name && (!*pair_name || strlen(pair_name) > 64)) {
		fprintf(stderr, "%s: --pair: '%s' must be 1-64 characters\n", prog, pair_name);
		return -1;
	}
	if (timeout_ms <= heartbeat_ms) {
		fprintf(stderr, "%s: --timeout-ms (%u) must be longer than --heartbeat-ms (%u)\n",
			prog, timeout_ms, heartbeat_ms);
		return -1;
	}
	return 0;
}

int cli_report_checked(const struct cli_config *file)
{
	if (!file->check)
		return 0;
	printf("%s: ok\n", file->file);
	return 1;
}

int cli_one_of(const char *prog, const char *opt, const char *arg, const char *const *values)
{
	for (size_t i = 0; values[i]; i++)
		if (!strcmp(arg, values[i]))
			return 0;
	fprintf(stderr, "%s: %s: '%s' is not ", prog, opt, arg);
	for (size_t i = 0; values[i]; i++)
		fprintf(stderr, "%s%s", values[i],
			!values[i + 1] ? "\n" : !values[i + 2] ? " or " : ", ");
	return -1;
}
