/* Command lines of remus-replicator (replicator_parse_args) and remus-agent
 * (agent_parse_args): defaults, required options, range checks, and error
 * messages that name the option and quote the bad value. stderr/stdout are
 * captured by pointing the descriptor at an unnamed temporary file. */
#include "../backup-agent/agent.h"
#include "../replicator/replicator.h"
#include "cli.h"

#include <arpa/inet.h>
#include <check.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* A writable, NULL-terminated argv (getopt_long permutes it). */
#define ARGV(...) ((char *[]){ __VA_ARGS__, NULL })

static int count_args(char **argv)
{
	int n = 0;

	while (argv[n])
		n++;
	return n;
}

/* ---- capturing a descriptor ---- */

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

/* Stop capturing; the text written meanwhile, malloc'd. */
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
	ck_assert_int_ge(len, 0);
	rewind(c->file);
	text = malloc((size_t)len + 1);
	ck_assert_ptr_nonnull(text);
	ck_assert_uint_eq(fread(text, 1, (size_t)len, c->file), (size_t)len);
	text[len] = 0;
	fclose(c->file);
	return text;
}

/* Parse, returning the result and what went to stderr (*err, malloc'd). */
static int rep_parse(char **argv, struct replicator_config *cfg, int *use_syslog, char **err)
{
	struct capture c;
	int rc;

	capture_start(&c, STDERR_FILENO);
	rc = replicator_parse_args(count_args(argv), argv, cfg, use_syslog);
	*err = capture_end(&c);
	return rc;
}

static int agent_parse(char **argv, struct agent_config *cfg, int *use_syslog, char **err)
{
	struct capture c;
	int rc;

	capture_start(&c, STDERR_FILENO);
	rc = agent_parse_args(count_args(argv), argv, cfg, use_syslog);
	*err = capture_end(&c);
	return rc;
}

static void assert_contains(const char *text, const char *want)
{
	ck_assert_msg(strstr(text, want) != NULL, "message \"%s\" lacks \"%s\"", text, want);
}

/* The replicator refuses argv, printing a message with each of want[]. */
static void rep_refuses(char **argv, const char *want1, const char *want2)
{
	struct replicator_config cfg;
	int use_syslog = 0;
	char *err;
	int rc = rep_parse(argv, &cfg, &use_syslog, &err);

	ck_assert_msg(rc == -1, "accepted (rc %d); stderr: %s", rc, err);
	if (want1)
		assert_contains(err, want1);
	if (want2)
		assert_contains(err, want2);
	free(err);
}

static void agent_refuses(char **argv, const char *want1, const char *want2)
{
	struct agent_config cfg;
	int use_syslog = 0;
	char *err;
	int rc = agent_parse(argv, &cfg, &use_syslog, &err);

	ck_assert_msg(rc == -1, "accepted (rc %d); stderr: %s", rc, err);
	if (want1)
		assert_contains(err, want1);
	if (want2)
		assert_contains(err, want2);
	free(err);
}

static unsigned port_of(const struct netaddr *a)
{
	if (a->ss.ss_family == AF_INET)
		return ntohs(((const struct sockaddr_in *)&a->ss)->sin_port);
	if (a->ss.ss_family == AF_INET6)
		return ntohs(((const struct sockaddr_in6 *)&a->ss)->sin6_port);
	return 0;
}

/* Bad values for an option taking a number. */
static const char *const bad_numbers[] = {
	"abc", "0", "-5", "99999999999", "18446744073709551616", "", "12x", "1e3",
};
#define NBAD (sizeof(bad_numbers) / sizeof(bad_numbers[0]))

/* ---- remus-replicator ---- */

START_TEST(test_rep_minimal_args_use_defaults)
{
	struct replicator_config cfg;
	int use_syslog = 0;
	char *err;

	memset(&cfg, 0x5a, sizeof(cfg));
	ck_assert_int_eq(rep_parse(ARGV("remus-replicator", "--qmp", "/run/vm.qmp",
					"--backup", "127.0.0.1:7000"),
				   &cfg, &use_syslog, &err), 0);
	ck_assert_str_eq(err, "");
	free(err);
	ck_assert_str_eq(cfg.qmp_path, "/run/vm.qmp");
	ck_assert_uint_eq(cfg.epoch_ms, 50);
	ck_assert_uint_eq(cfg.epoch_ms, REPLICATOR_DEFAULT_EPOCH_MS);
	ck_assert_uint_eq(cfg.heartbeat_ms, 100);
	ck_assert_uint_eq(cfg.timeout_ms, 2000);
	ck_assert_int_eq(cfg.test_corrupt_epoch, -1);
	ck_assert_uint_ge(cfg.capture_threads, 1);
	ck_assert_uint_le(cfg.capture_threads, 16);
	ck_assert_ptr_null(cfg.ram_file);
	ck_assert_ptr_null(cfg.control_path);
	ck_assert_int_eq(use_syslog, 0);
	ck_assert_int_eq(cfg.backup.ss.ss_family, AF_INET);
	ck_assert_uint_eq(port_of(&cfg.backup), 7000);
	ck_assert_str_eq(cfg.backup.text, "127.0.0.1:7000");
}
END_TEST

START_TEST(test_rep_all_options_parse)
{
	struct replicator_config cfg;
	int use_syslog = 0;
	char *err;

	ck_assert_int_eq(rep_parse(ARGV("remus-replicator", "--backup", "[::1]:7001",
					"--qmp=/q.sock", "--ram-file", "/dev/shm/vm.ram",
					"--epoch-ms", "10000", "--control", "/run/ctl",
					"--heartbeat-ms", "10", "--timeout-ms", "600000",
					"--capture-threads", "16", "--test-corrupt-epoch", "3",
					"--syslog"),
				   &cfg, &use_syslog, &err), 0);
	ck_assert_str_eq(err, "");
	free(err);
	ck_assert_str_eq(cfg.qmp_path, "/q.sock");
	ck_assert_str_eq(cfg.ram_file, "/dev/shm/vm.ram");
	ck_assert_str_eq(cfg.control_path, "/run/ctl");
	ck_assert_uint_eq(cfg.epoch_ms, 10000);
	ck_assert_uint_eq(cfg.heartbeat_ms, 10);
	ck_assert_uint_eq(cfg.timeout_ms, 600000);
	ck_assert_uint_eq(cfg.capture_threads, 16);
	ck_assert_int_eq(cfg.test_corrupt_epoch, 3);
	ck_assert_int_eq(use_syslog, 1);
	ck_assert_int_eq(cfg.backup.ss.ss_family, AF_INET6);
	ck_assert_uint_eq(port_of(&cfg.backup), 7001);

	/* The low ends of the ranges. */
	ck_assert_int_eq(rep_parse(ARGV("remus-replicator", "--qmp", "/q", "--backup", "127.0.0.1:1",
					"--epoch-ms", "5", "--capture-threads", "1"),
				   &cfg, &use_syslog, &err), 0);
	free(err);
	ck_assert_uint_eq(cfg.epoch_ms, 5);
	ck_assert_uint_eq(cfg.capture_threads, 1);
	ck_assert_uint_eq(port_of(&cfg.backup), 1);
}
END_TEST

/* Every option of the replicator's table of stored values (cli_daemon.h)
 * lands in its member, scaled: MiB to bytes, a percentage to a fraction. */
START_TEST(test_rep_every_stored_field)
{
	struct replicator_config cfg;
	int use_syslog = 0;
	char *err;

	ck_assert_int_eq(rep_parse(ARGV("remus-replicator", "--qmp", "/q", "--backup",
					"127.0.0.1:7000", "--max-overhead", "25",
					"--disk-cap-mb", "3", "--net-cap-mb", "5", "--generation", "7",
					"--announce", "--compress-cache-mb", "0", "--epoch-min-ms", "20",
					"--epoch-max-ms", "400", "--output-delay-ms", "0",
					"--pair", "p1", "--key-file", "/k", "--insecure-cleartext-link",
					"--no-output-commit", "--test-disk-unbuffered"),
				   &cfg, &use_syslog, &err), 0);
	ck_assert_str_eq(err, "");
	free(err);
	ck_assert(cfg.policy.max_overhead > 0.2499 && cfg.policy.max_overhead < 0.2501);
	ck_assert_uint_eq(cfg.disk_cap_bytes, 3u << 20);
	ck_assert_uint_eq(cfg.net_cap_bytes, 5u << 20);
	ck_assert_uint_eq(cfg.generation, 7);
	ck_assert(cfg.announce && cfg.cleartext_link && cfg.no_output_commit &&
		  cfg.test_disk_unbuffered);
	ck_assert_uint_eq(cfg.compress_cache_mb, 0);
	ck_assert_uint_eq(cfg.policy.min_ms, 20);
	ck_assert_uint_eq(cfg.policy.max_ms, 400);
	ck_assert_uint_eq(cfg.policy.output_delay_ms, 0);
	ck_assert_str_eq(cfg.pair_name, "p1");
	ck_assert_str_eq(cfg.key_file, "/k");
	replicator_config_free(&cfg);
}
END_TEST

START_TEST(test_rep_missing_qmp_is_error)
{
	rep_refuses(ARGV("remus-replicator", "--backup", "127.0.0.1:7000"), "--qmp", "required");
}
END_TEST

START_TEST(test_rep_missing_backup_is_error)
{
	rep_refuses(ARGV("remus-replicator", "--qmp", "/q"), "--backup", "required");
	rep_refuses(ARGV("remus-replicator"), "required", NULL);
}
END_TEST

START_TEST(test_rep_bad_epoch_ms_names_option_and_value)
{
	for (size_t i = 0; i < NBAD; i++) {
		char quoted[64];

		snprintf(quoted, sizeof(quoted), "'%s'", bad_numbers[i]);
		rep_refuses(ARGV("remus-replicator", "--qmp", "/q", "--backup", "127.0.0.1:7000",
				 "--epoch-ms", (char *)bad_numbers[i]),
			    "--epoch-ms", quoted);
	}
	/* In range as numbers go, outside 5-10000. */
	rep_refuses(ARGV("remus-replicator", "--qmp", "/q", "--backup", "127.0.0.1:7000",
			 "--epoch-ms", "4"), "--epoch-ms", "'4'");
	rep_refuses(ARGV("remus-replicator", "--qmp", "/q", "--backup", "127.0.0.1:7000",
			 "--epoch-ms", "10001"), "--epoch-ms", "'10001'");
}
END_TEST

START_TEST(test_rep_bad_numbers_for_other_options)
{
	rep_refuses(ARGV("remus-replicator", "--qmp", "/q", "--backup", "127.0.0.1:7000",
			 "--heartbeat-ms", "abc"), "--heartbeat-ms", "'abc'");
	rep_refuses(ARGV("remus-replicator", "--qmp", "/q", "--backup", "127.0.0.1:7000",
			 "--timeout-ms", "-5"), "--timeout-ms", "'-5'");
	rep_refuses(ARGV("remus-replicator", "--qmp", "/q", "--backup", "127.0.0.1:7000",
			 "--capture-threads", "0"), "--capture-threads", "'0'");
	rep_refuses(ARGV("remus-replicator", "--qmp", "/q", "--backup", "127.0.0.1:7000",
			 "--capture-threads", "17"), "--capture-threads", "'17'");
	rep_refuses(ARGV("remus-replicator", "--qmp", "/q", "--backup", "127.0.0.1:7000",
			 "--test-corrupt-epoch", "0"), "--test-corrupt-epoch", "'0'");
}
END_TEST

START_TEST(test_rep_unknown_option_is_error)
{
	rep_refuses(ARGV("remus-replicator", "--qmp", "/q", "--backup", "127.0.0.1:7000",
			 "--bogus"), "'--bogus'", NULL);
	rep_refuses(ARGV("remus-replicator", "--qmp", "/q", "--bogus=3",
			 "--backup", "127.0.0.1:7000"), "--bogus", NULL);
	rep_refuses(ARGV("remus-replicator", "-x", "--qmp", "/q", "--backup", "127.0.0.1:7000"),
		    "'-x'", NULL);
}
END_TEST

/* Policy, tracker and epoch bounds: a bad word is named and quoted. */
START_TEST(test_rep_bad_policy_tracker_and_bounds)
{
	rep_refuses(ARGV("remus-replicator", "--qmp", "/q", "--backup", "127.0.0.1:7000",
			 "--epoch-policy", "adaptive"), "--epoch-policy", "'adaptive'");
	rep_refuses(ARGV("remus-replicator", "--qmp", "/q", "--backup", "127.0.0.1:7000",
			 "--tracker", "pml"), "--tracker", "'pml'");
	rep_refuses(ARGV("remus-replicator", "--qmp", "/q", "--backup", "127.0.0.1:7000",
			 "--epoch-min-ms", "300", "--epoch-max-ms", "100"), "--epoch-min-ms (300)",
		    "--epoch-max-ms (100)");
	rep_refuses(ARGV("remus-replicator", "--qmp", "/q", "--backup", "127.0.0.1:7000",
			 "--max-overhead", "95"), "--max-overhead", "'95'");
}
END_TEST

START_TEST(test_rep_option_without_value_is_error)
{
	rep_refuses(ARGV("remus-replicator", "--qmp", "/q", "--backup", "127.0.0.1:7000",
			 "--epoch-ms"), "'--epoch-ms'", NULL);
}
END_TEST

START_TEST(test_rep_unexpected_argument_is_error)
{
	rep_refuses(ARGV("remus-replicator", "--qmp", "/q", "stray", "--backup", "127.0.0.1:7000"),
		    "'stray'", NULL);
}
END_TEST

START_TEST(test_rep_backup_without_port_is_error)
{
	rep_refuses(ARGV("remus-replicator", "--qmp", "/q", "--backup", "127.0.0.1"),
		    "--backup", "'127.0.0.1'");
	rep_refuses(ARGV("remus-replicator", "--qmp", "/q", "--backup", "127.0.0.1:"),
		    "--backup", "'127.0.0.1:'");
	rep_refuses(ARGV("remus-replicator", "--qmp", "/q", "--backup", ":7000"),
		    "--backup", "':7000'");
}
END_TEST

START_TEST(test_rep_backup_bad_port_is_error)
{
	rep_refuses(ARGV("remus-replicator", "--qmp", "/q", "--backup", "127.0.0.1:70000"),
		    "--backup", "'70000'");
	rep_refuses(ARGV("remus-replicator", "--qmp", "/q", "--backup", "127.0.0.1:0"),
		    "--backup", "'0'");
	rep_refuses(ARGV("remus-replicator", "--qmp", "/q", "--backup", "127.0.0.1:70x"),
		    "--backup", "'70x'");
}
END_TEST

START_TEST(test_rep_timeout_not_above_heartbeat_is_error)
{
	struct replicator_config cfg;
	int use_syslog = 0;
	char *err;

	rep_refuses(ARGV("remus-replicator", "--qmp", "/q", "--backup", "127.0.0.1:7000",
			 "--heartbeat-ms", "500", "--timeout-ms", "500"), "--timeout-ms", "--heartbeat-ms");
	/* Default heartbeat (100) against a shorter timeout. */
	rep_refuses(ARGV("remus-replicator", "--qmp", "/q", "--backup", "127.0.0.1:7000",
			 "--timeout-ms", "60"), "--timeout-ms", "(60)");
	ck_assert_int_eq(rep_parse(ARGV("remus-replicator", "--qmp", "/q", "--backup",
					"127.0.0.1:7000", "--heartbeat-ms", "500",
					"--timeout-ms", "501"),
				   &cfg, &use_syslog, &err), 0);
	free(err);
	ck_assert_uint_eq(cfg.timeout_ms, 501);
	ck_assert_uint_eq(cfg.heartbeat_ms, 500);
}
END_TEST

START_TEST(test_rep_help_returns_1_and_prints_usage)
{
	struct replicator_config cfg;
	struct capture out;
	int use_syslog = 0, rc;
	char *err, *text;

	capture_start(&out, STDOUT_FILENO);
	rc = rep_parse(ARGV("remus-replicator", "--help"), &cfg, &use_syslog, &err);
	text = capture_end(&out);
	ck_assert_int_eq(rc, 1);
	ck_assert_str_eq(err, "");
	assert_contains(text, "Usage: remus-replicator");
	assert_contains(text, "--epoch-ms");
	free(text);
	free(err);

	/* -h too, and before a missing required option is noticed. */
	capture_start(&out, STDOUT_FILENO);
	rc = rep_parse(ARGV("remus-replicator", "-h"), &cfg, &use_syslog, &err);
	text = capture_end(&out);
	ck_assert_int_eq(rc, 1);
	assert_contains(text, "Usage: remus-replicator");
	free(text);
	free(err);
}
END_TEST

START_TEST(test_rep_parse_again_after_error_starts_fresh)
{
	struct replicator_config cfg;
	int use_syslog = 0;
	char *err;

	rep_refuses(ARGV("remus-replicator", "--qmp", "/a", "--epoch-ms", "abc"), "--epoch-ms", NULL);
	ck_assert_int_eq(rep_parse(ARGV("remus-replicator", "--qmp", "/b", "--backup",
					"127.0.0.1:7000"),
				   &cfg, &use_syslog, &err), 0);
	ck_assert_str_eq(err, "");
	free(err);
	ck_assert_str_eq(cfg.qmp_path, "/b");
	ck_assert_uint_eq(cfg.epoch_ms, 50);
}
END_TEST

/* Regression: glibc's getopt only fully resets when optind is set to 0
 * (the parsers once set 1). A parse that stops inside a cluster of short
 * options ("-hv": -h returns at once) leaves getopt pointing at the rest
 * of that old argv string ("v"); the next parse first handles the stale
 * 'v' and advances optind past its own argv[1], so "--qmp" is skipped and
 * "/q" becomes an unexpected argument: -1 instead of 0. The stale pointer
 * is into the previous caller's argv (a use-after-free if it is gone). */
START_TEST(test_rep_parse_after_help_in_option_cluster_starts_fresh)
{
	struct replicator_config cfg;
	struct capture out;
	int use_syslog = 0, rc;
	char *err, *text;

	capture_start(&out, STDOUT_FILENO);
	rc = rep_parse(ARGV("remus-replicator", "-hv"), &cfg, &use_syslog, &err);
	text = capture_end(&out);
	ck_assert_int_eq(rc, 1);
	free(text);
	free(err);
	rc = rep_parse(ARGV("remus-replicator", "--qmp", "/q", "--backup", "127.0.0.1:7000"),
		       &cfg, &use_syslog, &err);
	ck_assert_msg(rc == 0, "second parse failed (rc %d): %s", rc, err);
	ck_assert_str_eq(cfg.qmp_path, "/q");
	free(err);
}
END_TEST

START_TEST(test_rep_hook_options)
{
	struct replicator_config cfg;
	int use_syslog = 0;
	char *err;

	ck_assert_int_eq(rep_parse(ARGV("remus-replicator", "--qmp", "/q", "--backup", "127.0.0.1:1"),
				   &cfg, &use_syslog, &err), 0);
	free(err);
	ck_assert_ptr_null(cfg.notify_cmd);
	ck_assert_ptr_null(cfg.pair_name);
	ck_assert_int_eq(rep_parse(ARGV("remus-replicator", "--qmp", "/q", "--backup", "127.0.0.1:1",
					"--notify", "/bin/true x", "--pair", "db"),
				   &cfg, &use_syslog, &err), 0);
	ck_assert_str_eq(err, "");
	free(err);
	ck_assert_str_eq(cfg.notify_cmd, "/bin/true x");
	ck_assert_str_eq(cfg.pair_name, "db");
	rep_refuses(ARGV("remus-replicator", "--qmp", "/q", "--backup", "127.0.0.1:1",
			 "--notify", "/nonexistent/notify"), "--notify: cannot run it",
		    "'/nonexistent/notify'");
}
END_TEST

/* ---- remus-agent ---- */

START_TEST(test_agent_minimal_args_use_defaults)
{
	struct agent_config cfg;
	int use_syslog = 0;
	char *err;

	memset(&cfg, 0x5a, sizeof(cfg));
	ck_assert_int_eq(agent_parse(ARGV("remus-agent", "--listen", "127.0.0.1:7000",
					  "--state-dir", "/var/lib/remus"),
				     &cfg, &use_syslog, &err), 0);
	ck_assert_str_eq(err, "");
	free(err);
	ck_assert_str_eq(cfg.state_dir, "/var/lib/remus");
	ck_assert_uint_eq(cfg.timeout_ms, 2000);
	ck_assert_uint_eq(cfg.timeout_ms, AGENT_DEFAULT_TIMEOUT_MS);
	ck_assert_uint_eq(cfg.heartbeat_ms, 100);
	ck_assert(!cfg.restore_now);
	ck_assert(!cfg.no_failover);
	ck_assert_int_eq(use_syslog, 0);
	ck_assert_int_eq(cfg.listen.ss.ss_family, AF_INET);
	ck_assert_uint_eq(port_of(&cfg.listen), 7000);
	ck_assert_ptr_null(cfg.fence_cmd);
	ck_assert(!cfg.fence_disabled);
	ck_assert_uint_eq(cfg.fence_timeout_ms, AGENT_DEFAULT_FENCE_TIMEOUT_MS);
	ck_assert_uint_eq(cfg.fence_timeout_ms, 10000);
	ck_assert_ptr_null(cfg.notify_cmd);
	ck_assert_ptr_null(cfg.pair_name);
}
END_TEST

START_TEST(test_agent_hook_options_parse)
{
	struct agent_config cfg;
	int use_syslog = 0;
	char *err;

	ck_assert_int_eq(agent_parse(ARGV("remus-agent", "--listen", "127.0.0.1:7000",
					  "--state-dir", "/s", "--fence", "/bin/true --pdu 3",
					  "--fence-timeout-ms", "2500", "--notify", "logger -t remus",
					  "--pair", "web"),
				     &cfg, &use_syslog, &err), 0);
	ck_assert_str_eq(err, "");
	free(err);
	ck_assert_str_eq(cfg.fence_cmd, "/bin/true --pdu 3");
	ck_assert_uint_eq(cfg.fence_timeout_ms, 2500);
	ck_assert_str_eq(cfg.notify_cmd, "logger -t remus");
	ck_assert_str_eq(cfg.pair_name, "web");
	ck_assert(!cfg.fence_disabled);
	ck_assert_int_eq(agent_parse(ARGV("remus-agent", "--listen", "127.0.0.1:7000",
					  "--state-dir", "/s", "--no-fence"),
				     &cfg, &use_syslog, &err), 0);
	free(err);
	ck_assert(cfg.fence_disabled);
	ck_assert_ptr_null(cfg.fence_cmd);
}
END_TEST

START_TEST(test_agent_bad_hook_options_are_errors)
{
	agent_refuses(ARGV("remus-agent", "--listen", "127.0.0.1:7000", "--state-dir", "/s",
			   "--fence", "/bin/true", "--no-fence"), "--fence and --no-fence", NULL);
	agent_refuses(ARGV("remus-agent", "--listen", "127.0.0.1:7000", "--state-dir", "/s",
			   "--fence", "/nonexistent/pdu off"), "--fence: cannot run it",
		      "'/nonexistent/pdu': No such file");
	agent_refuses(ARGV("remus-agent", "--listen", "127.0.0.1:7000", "--state-dir", "/s",
			   "--notify", "no-such-notifier-xyz"), "--notify: cannot run it",
		      "not found in PATH");
	agent_refuses(ARGV("remus-agent", "--listen", "127.0.0.1:7000", "--state-dir", "/s",
			   "--fence", "/bin/true", "--fence-timeout-ms", "50"),
		      "--fence-timeout-ms", "'50' is not a number in 100-600000");
	agent_refuses(ARGV("remus-agent", "--listen", "127.0.0.1:7000", "--state-dir", "/s",
			   "--pair", ""), "--pair", "1-64 characters");
}
END_TEST

START_TEST(test_agent_all_options_parse)
{
	struct agent_config cfg;
	int use_syslog = 0;
	char *err;

	ck_assert_int_eq(agent_parse(ARGV("remus-agent", "--state-dir=/s", "--listen", "[::1]:9",
					  "--timeout-ms", "600000", "--heartbeat-ms", "60000",
					  "--no-failover", "--syslog"),
				     &cfg, &use_syslog, &err), 0);
	ck_assert_str_eq(err, "");
	free(err);
	ck_assert_str_eq(cfg.state_dir, "/s");
	ck_assert_uint_eq(cfg.timeout_ms, 600000);
	ck_assert_uint_eq(cfg.heartbeat_ms, 60000);
	ck_assert(cfg.no_failover);
	ck_assert(!cfg.restore_now);
	ck_assert_int_eq(use_syslog, 1);
	ck_assert_int_eq(cfg.listen.ss.ss_family, AF_INET6);
	ck_assert_uint_eq(port_of(&cfg.listen), 9);
}
END_TEST

/* The same for the agent's table: MiB and GiB to bytes. */
START_TEST(test_agent_every_stored_field)
{
	struct agent_config cfg;
	int use_syslog = 0;
	char *err;

	ck_assert_int_eq(agent_parse(ARGV("remus-agent", "--state-dir=/s", "--listen", "[::1]:9",
					  "--max-ram-mb", "128", "--max-disk-gb", "2",
					  "--max-epoch-mb", "32", "--fence-timeout-ms", "500",
					  "--emulator", "/bin/true", "--connect", "qemu:///x",
					  "--pair", "p2", "--key-file", "/k2",
					  "--insecure-cleartext-link", "--test-disk-apply-on-arrival"),
				     &cfg, &use_syslog, &err), 0);
	ck_assert_str_eq(err, "");
	free(err);
	ck_assert_uint_eq(cfg.limits.max_ram_bytes, 128ull << 20);
	ck_assert_uint_eq(cfg.limits.max_disk_bytes, 2ull << 30);
	ck_assert_uint_eq(cfg.limits.max_epoch_bytes, 32ull << 20);
	ck_assert_uint_eq(cfg.fence_timeout_ms, 500);
	ck_assert_str_eq(cfg.restore.emulator, "/bin/true");
	ck_assert_str_eq(cfg.restore.libvirt_uri, "qemu:///x");
	ck_assert_str_eq(cfg.pair_name, "p2");
	ck_assert_str_eq(cfg.key_file, "/k2");
	ck_assert(cfg.cleartext_link && cfg.test_disk_apply_on_arrival);
	agent_config_free(&cfg);
}
END_TEST

START_TEST(test_agent_missing_state_dir_is_error)
{
	agent_refuses(ARGV("remus-agent", "--listen", "127.0.0.1:7000"), "--state-dir", "required");
	agent_refuses(ARGV("remus-agent", "--restore"), "--state-dir", NULL);
}
END_TEST

START_TEST(test_agent_missing_listen_is_error)
{
	agent_refuses(ARGV("remus-agent", "--state-dir", "/s"), "--listen", "required");
}
END_TEST

START_TEST(test_agent_restore_with_state_dir_only_parses)
{
	struct agent_config cfg;
	int use_syslog = 0;
	char *err;

	ck_assert_int_eq(agent_parse(ARGV("remus-agent", "--restore", "--state-dir", "/s"),
				     &cfg, &use_syslog, &err), 0);
	ck_assert_str_eq(err, "");
	free(err);
	ck_assert(cfg.restore_now);
	ck_assert(!cfg.after_host_restart);
	ck_assert_str_eq(cfg.state_dir, "/s");
	ck_assert_int_eq(agent_parse(ARGV("remus-agent", "--restore", "--state-dir", "/s",
					  "--after-host-restart"), &cfg, &use_syslog, &err), 0);
	free(err);
	ck_assert(cfg.after_host_restart);
}
END_TEST

START_TEST(test_agent_after_host_restart_needs_restore)
{
	agent_refuses(ARGV("remus-agent", "--listen", "127.0.0.1:7000", "--state-dir", "/s",
			   "--after-host-restart"), "--after-host-restart", "--restore");
}
END_TEST

START_TEST(test_agent_restore_with_listen_is_error)
{
	agent_refuses(ARGV("remus-agent", "--restore", "--state-dir", "/s", "--listen",
			   "127.0.0.1:7000"), "--restore", "--listen");
}
END_TEST

START_TEST(test_agent_bad_numbers_name_option_and_value)
{
	for (size_t i = 0; i < NBAD; i++) {
		char quoted[64];

		snprintf(quoted, sizeof(quoted), "'%s'", bad_numbers[i]);
		agent_refuses(ARGV("remus-agent", "--listen", "127.0.0.1:7000", "--state-dir", "/s",
				   "--timeout-ms", (char *)bad_numbers[i]),
			      "--timeout-ms", quoted);
		agent_refuses(ARGV("remus-agent", "--listen", "127.0.0.1:7000", "--state-dir", "/s",
				   "--heartbeat-ms", (char *)bad_numbers[i]),
			      "--heartbeat-ms", quoted);
	}
	agent_refuses(ARGV("remus-agent", "--listen", "127.0.0.1:7000", "--state-dir", "/s",
			   "--timeout-ms", "600001"), "--timeout-ms", "'600001'");
	agent_refuses(ARGV("remus-agent", "--listen", "127.0.0.1:7000", "--state-dir", "/s",
			   "--heartbeat-ms", "9"), "--heartbeat-ms", "'9'");
}
END_TEST

START_TEST(test_agent_listen_bad_address_is_error)
{
	agent_refuses(ARGV("remus-agent", "--state-dir", "/s", "--listen", "127.0.0.1"),
		      "--listen", "'127.0.0.1'");
	agent_refuses(ARGV("remus-agent", "--state-dir", "/s", "--listen", "127.0.0.1:70000"),
		      "--listen", "'70000'");
	agent_refuses(ARGV("remus-agent", "--state-dir", "/s", "--listen", "127.0.0.1:-1"),
		      "--listen", "'-1'");
}
END_TEST

START_TEST(test_agent_timeout_not_above_heartbeat_is_error)
{
	struct agent_config cfg;
	int use_syslog = 0;
	char *err;

	agent_refuses(ARGV("remus-agent", "--listen", "127.0.0.1:7000", "--state-dir", "/s",
			   "--heartbeat-ms", "3000"), "--timeout-ms", "--heartbeat-ms");
	agent_refuses(ARGV("remus-agent", "--listen", "127.0.0.1:7000", "--state-dir", "/s",
			   "--timeout-ms", "100"), "(100)", NULL);
	ck_assert_int_eq(agent_parse(ARGV("remus-agent", "--listen", "127.0.0.1:7000",
					  "--state-dir", "/s", "--timeout-ms", "101"),
				     &cfg, &use_syslog, &err), 0);
	free(err);
	ck_assert_uint_eq(cfg.timeout_ms, 101);
}
END_TEST

START_TEST(test_agent_unknown_option_is_error)
{
	agent_refuses(ARGV("remus-agent", "--listen", "127.0.0.1:7000", "--state-dir", "/s",
			   "--qmp", "/q"), "'--qmp'", NULL);
	agent_refuses(ARGV("remus-agent", "--listen", "127.0.0.1:7000", "--state-dir", "/s", "-z"),
		      "'-z'", NULL);
	agent_refuses(ARGV("remus-agent", "--listen", "127.0.0.1:7000", "--state-dir", "/s",
			   "extra"), "'extra'", NULL);
}
END_TEST

START_TEST(test_agent_help_returns_1_and_prints_usage)
{
	struct agent_config cfg;
	struct capture out;
	int use_syslog = 0, rc;
	char *err, *text;

	capture_start(&out, STDOUT_FILENO);
	rc = agent_parse(ARGV("remus-agent", "--help"), &cfg, &use_syslog, &err);
	text = capture_end(&out);
	ck_assert_int_eq(rc, 1);
	ck_assert_str_eq(err, "");
	assert_contains(text, "Usage: remus-agent");
	assert_contains(text, "--restore");
	free(text);
	free(err);
}
END_TEST

/* Regression: as test_rep_parse_after_help_in_option_cluster_starts_fresh,
 * for agent_parse_args. */
START_TEST(test_agent_parse_after_help_in_option_cluster_starts_fresh)
{
	struct agent_config cfg;
	struct capture out;
	int use_syslog = 0, rc;
	char *err, *text;

	capture_start(&out, STDOUT_FILENO);
	rc = agent_parse(ARGV("remus-agent", "-hv"), &cfg, &use_syslog, &err);
	text = capture_end(&out);
	ck_assert_int_eq(rc, 1);
	free(text);
	free(err);
	rc = agent_parse(ARGV("remus-agent", "--state-dir", "/s", "--restore"),
			 &cfg, &use_syslog, &err);
	ck_assert_msg(rc == 0, "second parse failed (rc %d): %s", rc, err);
	ck_assert_str_eq(cfg.state_dir, "/s");
	free(err);
}
END_TEST

/* ---- cli helpers ---- */

START_TEST(test_cli_parse_ulong_bounds_and_message)
{
	struct capture c;
	unsigned long v = 77;
	char *err;

	cli_set_prog("prog");
	capture_start(&c, STDERR_FILENO);
	ck_assert_int_eq(cli_parse_ulong("--n", "10", 10, 20, &v), 0);
	ck_assert_uint_eq(v, 10);
	ck_assert_int_eq(cli_parse_ulong("--n", "20", 10, 20, &v), 0);
	ck_assert_uint_eq(v, 20);
	err = capture_end(&c);
	ck_assert_str_eq(err, "");
	free(err);

	capture_start(&c, STDERR_FILENO);
	ck_assert_int_eq(cli_parse_ulong("--n", "21", 10, 20, &v), -1);
	err = capture_end(&c);
	ck_assert_uint_eq(v, 20); /* untouched on error */
	ck_assert_str_eq(err, "prog: --n: '21' is not a number in 10-20\n");
	free(err);
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

static Suite *cli_suite(void)
{
	Suite *s = suite_create("cli");

	ADD(s, test_rep_minimal_args_use_defaults);
	ADD(s, test_rep_all_options_parse);
	ADD(s, test_rep_every_stored_field);
	ADD(s, test_rep_missing_qmp_is_error);
	ADD(s, test_rep_missing_backup_is_error);
	ADD(s, test_rep_bad_epoch_ms_names_option_and_value);
	ADD(s, test_rep_bad_numbers_for_other_options);
	ADD(s, test_rep_unknown_option_is_error);
	ADD(s, test_rep_bad_policy_tracker_and_bounds);
	ADD(s, test_rep_option_without_value_is_error);
	ADD(s, test_rep_unexpected_argument_is_error);
	ADD(s, test_rep_backup_without_port_is_error);
	ADD(s, test_rep_backup_bad_port_is_error);
	ADD(s, test_rep_timeout_not_above_heartbeat_is_error);
	ADD(s, test_rep_help_returns_1_and_prints_usage);
	ADD(s, test_rep_parse_again_after_error_starts_fresh);
	ADD(s, test_rep_parse_after_help_in_option_cluster_starts_fresh);
	ADD(s, test_agent_minimal_args_use_defaults);
	ADD(s, test_agent_all_options_parse);
	ADD(s, test_agent_every_stored_field);
	ADD(s, test_agent_hook_options_parse);
	ADD(s, test_agent_bad_hook_options_are_errors);
	ADD(s, test_rep_hook_options);
	ADD(s, test_agent_missing_state_dir_is_error);
	ADD(s, test_agent_missing_listen_is_error);
	ADD(s, test_agent_restore_with_state_dir_only_parses);
	ADD(s, test_agent_restore_with_listen_is_error);
	ADD(s, test_agent_after_host_restart_needs_restore);
	ADD(s, test_agent_bad_numbers_name_option_and_value);
	ADD(s, test_agent_listen_bad_address_is_error);
	ADD(s, test_agent_timeout_not_above_heartbeat_is_error);
	ADD(s, test_agent_unknown_option_is_error);
	ADD(s, test_agent_help_returns_1_and_prints_usage);
	ADD(s, test_agent_parse_after_help_in_option_cluster_starts_fresh);
	ADD(s, test_cli_parse_ulong_bounds_and_message);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(cli_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
