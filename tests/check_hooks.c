/* Operator hooks: exit codes, the hard timeout (the whole process group
 * goes), arguments and environment, stdin, a missing command, and notify
 * hooks reaped by the libev default loop, in order. Hooks are small shell
 * scripts written into a temporary directory. */
#include "hooks.h"

#include "clock.h"

#include <check.h>
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static char dir[64];

static void setup(void)
{
	snprintf(dir, sizeof(dir), "/tmp/check_hooks.XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(dir));
	setenv("HOOK_DIR", dir, 1);
	/* a stale one in our own environment must not reach the hook */
	setenv("REMUS_STALE", "yes", 1);
}

static void teardown(void)
{
	char cmd[256];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "cannot remove %s\n", dir);
}

/* Write an executable script DIR/name; its path into out. */
static void script(const char *name, const char *body, char *out, size_t len)
{
	FILE *f;

	snprintf(out, len, "%s/%s", dir, name);
	f = fopen(out, "w");
	ck_assert_ptr_nonnull(f);
	fprintf(f, "#!/bin/sh\n%s\n", body);
	fclose(f);
	ck_assert_int_eq(chmod(out, 0755), 0);
}

/* The contents of DIR/name, malloc'd ("" if missing). */
static char *slurp(const char *name)
{
	char path[512], *text = calloc(1, 8192);
	FILE *f;
	size_t n;

	ck_assert_ptr_nonnull(text);
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "r");
	if (!f)
		return text;
	n = fread(text, 1, 8191, f);
	text[n] = 0;
	fclose(f);
	return text;
}

static const struct hook_event EV = {
	.pair = "pair1", .vm = "vm 1", .event = "master", .role = "backup",
	.epoch = 42, .peer = "192.168.78.1", .peer_host = "beta",
	.reason = "no heartbeat for 2000 ms",
};

static int run(const char *cmd, unsigned timeout_ms, struct hook_result *res)
{
	return hook_run_sync("test hook", cmd, &EV, timeout_ms, res);
}

START_TEST(test_exit_zero_is_ok)
{
	struct hook_result res;

	ck_assert_int_eq(run("true", 5000, &res), 0);
	ck_assert(res.reaped);
	ck_assert(!res.timed_out);
	ck_assert(hook_result_ok(&res));
}
END_TEST

START_TEST(test_exit_code_is_reported)
{
	struct hook_result res;
	char text[160];

	ck_assert_int_eq(run("exit 3 ||", 5000, &res), 0);
	ck_assert(!hook_result_ok(&res));
	ck_assert(WIFEXITED(res.status));
	ck_assert_int_eq(WEXITSTATUS(res.status), 3);
	ck_assert_str_eq(hook_result_text(&res, 5000, text, sizeof(text)), "exit 3");
}
END_TEST

START_TEST(test_signal_is_reported)
{
	struct hook_result res;
	char text[160];

	ck_assert_int_eq(run("kill -TERM $$; sleep 5 #", 5000, &res), 0);
	ck_assert(!hook_result_ok(&res));
	ck_assert(!res.timed_out);
	ck_assert_str_eq(hook_result_text(&res, 5000, text, sizeof(text)), "killed by signal 15");
}
END_TEST

static bool pid_gone(pid_t pid)
{
	char path[64], state = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	f = fopen(path, "r");
	if (!f)
		return true;
	/* a zombie waiting for a reaper that is not us counts as gone */
	if (fscanf(f, "%*d (%*[^)]) %c", &state) != 1)
		state = 0;
	fclose(f);
	return state == 'Z';
}

START_TEST(test_timeout_kills_the_process_group)
{
	struct hook_result res;
	char path[512], text[160], *pidtext;
	double t0 = mono_ms();
	pid_t bg;

	/* a grandchild in the background must go with the hook */
	script("hang", "sleep 30 & echo $! > \"$HOOK_DIR/bg.pid\"; wait", path, sizeof(path));
	ck_assert_int_eq(run(path, 300, &res), 0);
	ck_assert(res.timed_out);
	ck_assert(!hook_result_ok(&res));
	ck_assert_double_lt(mono_ms() - t0, 3000);
	ck_assert_double_ge(res.ms, 290);
	ck_assert_ptr_nonnull(strstr(hook_result_text(&res, 300, text, sizeof(text)),
				     "no end within 300 ms"));
	pidtext = slurp("bg.pid");
	bg = (pid_t)atoi(pidtext);
	free(pidtext);
	ck_assert_int_gt(bg, 0);
	for (int i = 0; i < 100 && !pid_gone(bg); i++)
		usleep(10000);
	ck_assert_msg(pid_gone(bg), "background sleep %d survived the timeout", (int)bg);
}
END_TEST

START_TEST(test_args_and_env_are_passed)
{
	struct hook_result res;
	char path[512], *out;

	script("show", "{ echo \"argc=$#\"; printf 'arg=%s\\n' \"$@\";"
	       " env | grep -E '^(REMUS_|HOOK_DIR=)' | sort; } > \"$HOOK_DIR/out\"",
	       path, sizeof(path));
	ck_assert_int_eq(run(path, 5000, &res), 0);
	ck_assert(hook_result_ok(&res));
	out = slurp("out");
	ck_assert_msg(strstr(out, "argc=4\narg=pair1\narg=vm 1\narg=master\narg=backup\n"),
		      "args: %s", out);
	ck_assert_ptr_nonnull(strstr(out, "REMUS_PAIR=pair1\n"));
	ck_assert_ptr_nonnull(strstr(out, "REMUS_VM=vm 1\n"));
	ck_assert_ptr_nonnull(strstr(out, "REMUS_EVENT=master\n"));
	ck_assert_ptr_nonnull(strstr(out, "REMUS_ROLE=backup\n"));
	ck_assert_ptr_nonnull(strstr(out, "REMUS_EPOCH=42\n"));
	ck_assert_ptr_nonnull(strstr(out, "REMUS_PEER=192.168.78.1\n"));
	ck_assert_ptr_nonnull(strstr(out, "REMUS_PEER_HOST=beta\n"));
	ck_assert_ptr_nonnull(strstr(out, "REMUS_REASON=no heartbeat for 2000 ms\n"));
	ck_assert_ptr_nonnull(strstr(out, "REMUS_TIME_MS="));
	ck_assert_ptr_nonnull(strstr(out, "HOOK_DIR=")); /* the daemon's env is kept */
	ck_assert_ptr_null(strstr(out, "REMUS_STALE"));
	free(out);
}
END_TEST

START_TEST(test_extra_vars_and_operator_args)
{
	struct hook_event ev = EV;
	struct hook_result res;
	char path[512], v1[64], v2[64], cmd[600], *out;

	hook_event_var(&ev, v1, sizeof(v1), "FENCE_MS", "%u", 17u);
	hook_event_var(&ev, v2, sizeof(v2), "STATE_DIR", "%s", "/var/lib/remus/vm1");
	script("show", "echo \"$*|$REMUS_FENCE_MS|$REMUS_STATE_DIR\" > \"$HOOK_DIR/out\"",
	       path, sizeof(path));
	/* the operator's own arguments come first */
	snprintf(cmd, sizeof(cmd), "%s --site 'a b'", path);
	ck_assert_int_eq(hook_run_sync("test hook", cmd, &ev, 5000, &res), 0);
	ck_assert(hook_result_ok(&res));
	out = slurp("out");
	ck_assert_str_eq(out, "--site a b pair1 vm 1 master backup|17|/var/lib/remus/vm1\n");
	free(out);
}
END_TEST

/* The operator's command reaches the shell in the environment, not in its
 * argv, which any local user may read (/proc/PID/cmdline): a password
 * given as an assignment before the command stays out of sight. */
START_TEST(test_command_not_in_the_shells_argv)
{
	struct hook_result res;
	char path[512], cmd[600], *out;

	script("show", "tr '\\0' ' ' < /proc/$PPID/cmdline > \"$HOOK_DIR/out\";"
	       " echo \"|$FENCE_PASSWORD\" >> \"$HOOK_DIR/out\"", path, sizeof(path));
	snprintf(cmd, sizeof(cmd), "FENCE_PASSWORD=s3cret %s", path);
	ck_assert_int_eq(run(cmd, 5000, &res), 0);
	ck_assert(hook_result_ok(&res));
	out = slurp("out");
	ck_assert_msg(strstr(out, "|s3cret\n"), "the command did not run as given: %s", out);
	ck_assert_msg(!strstr(out, "s3cret "), "the password is in the shell's argv: %s", out);
	free(out);
}
END_TEST

/* Names and reasons from the wire or the VM reach the hook's arguments and
 * environment without their control characters. */
START_TEST(test_control_characters_are_replaced)
{
	struct hook_event ev = {
		.pair = "p\n1", .vm = "vm\nSTATUS=x", .event = "master", .role = "backup",
		.peer = "10.0.0.1\r", .reason = "bye\x1b[2J\x7f",
	};
	struct hook_cmd c;
	char v1[64];
	bool vm = false, peer = false, reason = false, var = false;

	hook_event_var(&ev, v1, sizeof(v1), "STATE_DIR", "%s", "/a\tb");
	ck_assert_int_eq(hook_cmd_build(&c, "test hook", "true", &ev), 0);
	ck_assert_str_eq(c.argv[4], "p?1");
	ck_assert_str_eq(c.argv[5], "vm?STATUS=x");
	for (char **e = c.envp; *e; e++) {
		vm |= !strcmp(*e, "REMUS_VM=vm?STATUS=x");
		peer |= !strcmp(*e, "REMUS_PEER=10.0.0.1?");
		reason |= !strcmp(*e, "REMUS_REASON=bye?[2J?");
		var |= !strcmp(*e, "REMUS_STATE_DIR=/a?b");
		ck_assert_msg(!strchr(*e, '\n'), "newline in %s", *e);
	}
	ck_assert(vm && peer && reason && var);
	hook_cmd_free(&c);
}
END_TEST

START_TEST(test_stdin_is_dev_null)
{
	struct hook_result res;
	char path[512], *out;

	/* with our stdin this would wait for input until the timeout */
	script("reader", "wc -c > \"$HOOK_DIR/out\"", path, sizeof(path));
	ck_assert_int_eq(run(path, 3000, &res), 0);
	ck_assert(hook_result_ok(&res));
	out = slurp("out");
	ck_assert_int_eq(atoi(out), 0);
	free(out);
}
END_TEST

START_TEST(test_missing_command_runs_as_exit_127)
{
	struct hook_result res;
	char text[160];

	ck_assert_int_eq(run("/nonexistent/fence-switch --off", 5000, &res), 0);
	ck_assert(!hook_result_ok(&res));
	ck_assert_int_eq(WEXITSTATUS(res.status), 127);
	ck_assert_ptr_nonnull(strstr(hook_result_text(&res, 5000, text, sizeof(text)),
				     "command not found"));
}
END_TEST

START_TEST(test_check_names_a_missing_command)
{
	char err[512] = "";

	ck_assert_int_eq(hook_check("/nonexistent/fence-switch --off", err, sizeof(err)), -ENOENT);
	ck_assert_msg(strstr(err, "'/nonexistent/fence-switch'") &&
		      strstr(err, "No such file"), "%s", err);
	ck_assert_int_eq(hook_check("no-such-fence-command-xyz arg", err, sizeof(err)), -ENOENT);
	ck_assert_msg(strstr(err, "'no-such-fence-command-xyz' is not found in PATH"), "%s", err);
	ck_assert_int_eq(hook_check("/tmp", err, sizeof(err)), -EACCES);
	ck_assert_int_eq(hook_check("   ", err, sizeof(err)), -EINVAL);
}
END_TEST

START_TEST(test_check_accepts_what_can_run)
{
	char err[256];

	ck_assert_int_eq(hook_check("/bin/sh -c true", err, sizeof(err)), 0);
	ck_assert_int_eq(hook_check("sh -c true", err, sizeof(err)), 0);
	ck_assert_int_eq(hook_check("exit 0", err, sizeof(err)), 0);
	ck_assert_int_eq(hook_check("FOO=1 anything", err, sizeof(err)), 0);
	ck_assert_int_eq(hook_check("\"$HOME/x\"", err, sizeof(err)), 0);
}
END_TEST

/* ---- notify hooks on the loop ---- */

struct seen {
	int n;
	char events[8][32];
	struct hook_result res[8];
};

static void on_done(const struct hook_cmd *c, const struct hook_result *res, void *opaque)
{
	struct seen *s = opaque;

	if (s->n < 8) {
		snprintf(s->events[s->n], sizeof(s->events[0]), "%s", c->argv[6]);
		s->res[s->n++] = *res;
	}
}

static void on_deadline(struct ev_loop *loop, ev_timer *w, int revents)
{
	ev_break(loop, EVBREAK_ALL);
}

/* Run the default loop until want hooks have finished, at most secs. */
static void run_loop_until(struct hook_runner *h, struct seen *s, int want, double secs)
{
	ev_timer deadline;
	double t_end = mono_ms() + secs * 1000;

	ev_timer_init(&deadline, on_deadline, 0.05, 0.05);
	ev_timer_start(h->loop, &deadline);
	while (s->n < want && mono_ms() < t_end)
		ev_run(h->loop, EVRUN_ONCE);
	ev_timer_stop(h->loop, &deadline);
}

static struct hook_event event_named(const char *name)
{
	struct hook_event ev = EV;

	ev.event = name;
	return ev;
}

START_TEST(test_notify_runs_in_order_without_blocking)
{
	struct ev_loop *loop = ev_default_loop(0);
	struct hook_runner h;
	struct seen s = { 0 };
	char path[512], *out;
	struct hook_event a = event_named("backup"), b = event_named("fencing"),
			  c = event_named("master");
	double t0;

	/* the first is slow: the second must still run after it */
	script("log", "[ \"$3\" = backup ] && sleep 0.3; echo \"$3\" >> \"$HOOK_DIR/events\"",
	       path, sizeof(path));
	hook_runner_init(&h, loop, path, 5000);
	h.done = on_done;
	h.opaque = &s;
	t0 = mono_ms();
	ck_assert_int_eq(hook_notify(&h, &a), 0);
	ck_assert_int_eq(hook_notify(&h, &b), 0);
	ck_assert_int_eq(hook_notify(&h, &c), 0);
	ck_assert_double_lt(mono_ms() - t0, 200); /* queued, not waited for */
	run_loop_until(&h, &s, 3, 10);
	ck_assert_int_eq(s.n, 3);
	ck_assert_str_eq(s.events[0], "backup");
	ck_assert_str_eq(s.events[1], "fencing");
	ck_assert_str_eq(s.events[2], "master");
	for (int i = 0; i < 3; i++)
		ck_assert(hook_result_ok(&s.res[i]));
	out = slurp("events");
	ck_assert_str_eq(out, "backup\nfencing\nmaster\n");
	free(out);
	ck_assert_uint_eq(h.runs, 3);
	ck_assert_uint_eq(h.failures, 0);
	hook_runner_free(&h);
}
END_TEST

START_TEST(test_notify_timeout_kills_and_goes_on)
{
	struct ev_loop *loop = ev_default_loop(0);
	struct hook_runner h;
	struct seen s = { 0 };
	char path[512];
	struct hook_event a = event_named("fault"), b = event_named("master");

	script("slow", "[ \"$3\" = fault ] && sleep 30; exit 4", path, sizeof(path));
	hook_runner_init(&h, loop, path, 300);
	h.done = on_done;
	h.opaque = &s;
	hook_notify(&h, &a);
	hook_notify(&h, &b);
	run_loop_until(&h, &s, 2, 10);
	ck_assert_int_eq(s.n, 2);
	ck_assert(s.res[0].timed_out);
	ck_assert_double_lt(s.res[0].ms, 3000);
	ck_assert(!s.res[1].timed_out);
	ck_assert_int_eq(WEXITSTATUS(s.res[1].status), 4);
	ck_assert_uint_eq(h.failures, 2);
	hook_runner_free(&h);
}
END_TEST

START_TEST(test_drain_waits_for_queued_hooks)
{
	struct ev_loop *loop = ev_default_loop(0);
	struct hook_runner h;
	struct seen s = { 0 };
	char path[512], *out;
	struct hook_event a = event_named("vm-lost"), b = event_named("detached");

	script("log", "sleep 0.1; echo \"$3\" >> \"$HOOK_DIR/events\"", path, sizeof(path));
	hook_runner_init(&h, loop, path, 5000);
	h.done = on_done;
	h.opaque = &s;
	hook_notify(&h, &a);
	hook_notify(&h, &b);
	hook_runner_drain(&h, 5000); /* no ev_run: the daemon is leaving */
	ck_assert_int_eq(s.n, 2);
	ck_assert(hook_result_ok(&s.res[0]));
	ck_assert(hook_result_ok(&s.res[1]));
	out = slurp("events");
	ck_assert_str_eq(out, "vm-lost\ndetached\n");
	free(out);
	ck_assert_uint_eq(h.queued, 0);
}
END_TEST

START_TEST(test_drain_is_bounded)
{
	struct ev_loop *loop = ev_default_loop(0);
	struct hook_runner h;
	struct seen s = { 0 };
	struct hook_event a = event_named("a"), b = event_named("b");
	double t0;

	hook_runner_init(&h, loop, "sleep 30 #", 20000);
	h.done = on_done;
	h.opaque = &s;
	hook_notify(&h, &a);
	hook_notify(&h, &b);
	t0 = mono_ms();
	hook_runner_drain(&h, 300);
	ck_assert_double_lt(mono_ms() - t0, 3000);
	ck_assert_int_eq(s.n, 1); /* the first killed, the second never started */
	ck_assert(s.res[0].timed_out);
	ck_assert_uint_eq(h.queued, 0);
}
END_TEST

START_TEST(test_notify_without_command_does_nothing)
{
	struct hook_runner h;

	hook_runner_init(&h, ev_default_loop(0), NULL, 1000);
	ck_assert_int_eq(hook_notify(&h, &EV), 0);
	ck_assert_uint_eq(h.queued, 0);
	hook_runner_drain(&h, 100);
}
END_TEST

START_TEST(test_notify_queue_is_bounded)
{
	struct hook_runner h;
	int dropped = 0;

	hook_runner_init(&h, ev_default_loop(0), "sleep 30 #", 20000);
	for (int i = 0; i < HOOK_QUEUE_MAX + 3; i++)
		if (hook_notify(&h, &EV) == -ENOBUFS)
			dropped++;
	ck_assert_int_eq(dropped, 3);
	ck_assert_uint_eq(h.dropped, 3);
	hook_runner_free(&h); /* kills the running one */
	ck_assert_uint_eq(h.queued, 0);
}
END_TEST

static Suite *hooks_suite(void)
{
	Suite *s = suite_create("hooks");

#define ADD(fn) do { TCase *tc = tcase_create(#fn); \
		tcase_add_checked_fixture(tc, setup, teardown); \
		tcase_set_timeout(tc, 20); tcase_add_test(tc, fn); suite_add_tcase(s, tc); } while (0)
	ADD(test_exit_zero_is_ok);
	ADD(test_exit_code_is_reported);
	ADD(test_signal_is_reported);
	ADD(test_timeout_kills_the_process_group);
	ADD(test_args_and_env_are_passed);
	ADD(test_extra_vars_and_operator_args);
	ADD(test_command_not_in_the_shells_argv);
	ADD(test_control_characters_are_replaced);
	ADD(test_stdin_is_dev_null);
	ADD(test_missing_command_runs_as_exit_127);
	ADD(test_check_names_a_missing_command);
	ADD(test_check_accepts_what_can_run);
	ADD(test_notify_runs_in_order_without_blocking);
	ADD(test_notify_timeout_kills_and_goes_on);
	ADD(test_drain_waits_for_queued_hooks);
	ADD(test_drain_is_bounded);
	ADD(test_notify_without_command_does_nothing);
	ADD(test_notify_queue_is_bounded);
#undef ADD
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(hooks_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
