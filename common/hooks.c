/* Operator hooks: see hooks.h. */
#include "hooks.h"

#include "clock.h"
#include "log.h"
#include "text.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

#define HOOK_SHELL      "/bin/sh"
#define HOOK_ARG0       "remus-hook"
/* The operator's command goes to the shell in the environment, which only
 * root may read (/proc/PID/environ), not in argv, which anyone may: a
 * fence command may hold a power switch's password. The shell runs it
 * with the four arguments appended, as "CMD \"$@\"" always did. */
#define HOOK_COMMAND_VAR "REMUS_HOOK_COMMAND"
#define HOOK_SCRIPT     "eval \"$" HOOK_COMMAND_VAR " \\\"\\$@\\\"\""
#define WAIT_STEP_US    2000
#define DEFAULT_PATH    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

struct hook_job {
	struct hook_cmd cmd;
	struct hook_job *next;
};

void hook_event_var(struct hook_event *ev, char *buf, size_t len, const char *name,
		    const char *fmt, ...)
{
	va_list ap;
	int n;

	if (ev->nvars >= HOOK_MAX_VARS)
		return;
	n = snprintf(buf, len, "REMUS_%s=", name);
	if (n < 0 || (size_t)n >= len)
		return;
	va_start(ap, fmt);
	vsnprintf(buf + n, len - (size_t)n, fmt, ap);
	va_end(ap);
	ev->vars[ev->nvars++] = buf;
}

static void free_strv(char **v)
{
	if (!v)
		return;
	for (char **p = v; *p; p++)
		free(*p);
	free(v);
}

static char **build_argv(const struct hook_event *ev)
{
	const char *tail[] = { ev->pair, ev->vm, ev->event, ev->role };
	char **argv = calloc(9, sizeof(char *));
	int n = 0;

	if (!argv)
		return NULL;
	argv[n++] = strdup(HOOK_SHELL);
	argv[n++] = strdup("-c");
	argv[n++] = strdup(HOOK_SCRIPT); /* the command: build_envp */
	argv[n++] = strdup(HOOK_ARG0);
	/* PAIR and VM may come from the VM or the config, EVENT and ROLE are
	 * ours: all are cleaned alike, a hook may log them as they are */
	for (size_t i = 0; i < sizeof(tail) / sizeof(tail[0]); i++)
		argv[n++] = text_sanitize_dup(tail[i] ? tail[i] : "");
	for (int i = 0; i < n; i++) {
		if (!argv[i]) {
			for (int j = 0; j < n; j++)
				free(argv[j]);
			free(argv);
			return NULL;
		}
	}
	return argv;
}

/* Append "NAME=value" to envp[*n] unless value is NULL; -ENOMEM. The
 * value is cleaned of control characters: the peer's text and reasons
 * come from the wire. */
static int env_add(char **envp, int *n, const char *name, const char *value)
{
	if (!value)
		return 0;
	if (asprintf(&envp[*n], "REMUS_%s=%s", name, value) < 0) {
		envp[*n] = NULL;
		return -ENOMEM;
	}
	text_sanitize(envp[*n], strlen(envp[*n]) + 1, envp[*n]);
	(*n)++;
	return 0;
}

/* The daemon's environment without stale REMUS_* variables, then ours. */
static char **build_envp(const char *cmd, const struct hook_event *ev)
{
	char epoch[24], now[24];
	int n = 0, outer = 0, rc = 0;
	char **envp;

	while (environ && environ[outer])
		outer++;
	envp = calloc((size_t)outer + 10 + HOOK_MAX_VARS + 1, sizeof(char *));
	if (!envp)
		return NULL;
	for (int i = 0; i < outer && !rc; i++) {
		if (!strncmp(environ[i], "REMUS_", 6))
			continue;
		envp[n] = strdup(environ[i]);
		rc = envp[n++] ? 0 : -ENOMEM;
	}
	snprintf(epoch, sizeof(epoch), "%llu", (unsigned long long)ev->epoch);
	snprintf(now, sizeof(now), "%lld", unix_ms());
	if (!rc)
		rc = env_add(envp, &n, "PAIR", ev->pair) ?: env_add(envp, &n, "VM", ev->vm) ?:
		     env_add(envp, &n, "EVENT", ev->event) ?: env_add(envp, &n, "ROLE", ev->role) ?:
		     env_add(envp, &n, "EPOCH", epoch) ?: env_add(envp, &n, "PEER", ev->peer) ?:
		     env_add(envp, &n, "PEER_HOST", ev->peer_host) ?:
		     env_add(envp, &n, "REASON", ev->reason) ?: env_add(envp, &n, "TIME_MS", now);
	/* the operator's command as it is: not cleaned, it is not from the wire */
	if (!rc && asprintf(&envp[n++], "%s=%s", HOOK_COMMAND_VAR, cmd) < 0) {
		envp[n - 1] = NULL;
		rc = -ENOMEM;
	}
	for (int i = 0; i < ev->nvars && i < HOOK_MAX_VARS && !rc; i++) {
		envp[n] = text_sanitize_dup(ev->vars[i]);
		rc = envp[n++] ? 0 : -ENOMEM;
	}
	if (rc) {
		free_strv(envp);
		return NULL;
	}
	return envp;
}

int hook_cmd_build(struct hook_cmd *c, const char *what, const char *cmd,
		   const struct hook_event *ev)
{
	*c = (struct hook_cmd){ 0 };
	if (!cmd || !*cmd)
		return -EINVAL;
	c->argv = build_argv(ev);
	c->envp = build_envp(cmd, ev);
	if (asprintf(&c->label, "%s '%s'", what, ev->event ? ev->event : "") < 0)
		c->label = NULL;
	if (!c->argv || !c->envp || !c->label) {
		hook_cmd_free(c);
		return -ENOMEM;
	}
	return 0;
}

void hook_cmd_free(struct hook_cmd *c)
{
	free_strv(c->argv);
	free_strv(c->envp);
	free(c->label);
	*c = (struct hook_cmd){ 0 };
}

/* In the child, before exec: only async-signal-safe calls. */
static void child_exec(const struct hook_cmd *c, int devnull)
{
	static const int reset[] = { SIGPIPE, SIGINT, SIGQUIT, SIGTERM, SIGHUP, SIGCHLD };
	sigset_t all;

	setpgid(0, 0);
	/* Ignored signals survive exec: give the hook the defaults back. */
	for (size_t i = 0; i < sizeof(reset) / sizeof(reset[0]); i++)
		signal(reset[i], SIG_DFL);
	sigemptyset(&all);
	sigprocmask(SIG_SETMASK, &all, NULL);
	if (devnull < 0 || dup2(devnull, STDIN_FILENO) < 0)
		_exit(126);
	/* The daemon's sockets and files are none of the hook's business. */
	close_range(3, ~0u, 0);
	execve(c->argv[0], c->argv, c->envp);
	_exit(127);
}

pid_t hook_spawn(const struct hook_cmd *c)
{
	int devnull = open("/dev/null", O_RDONLY | O_CLOEXEC);
	pid_t pid;

	if (devnull < 0)
		return -errno;
	pid = fork();
	if (pid == 0)
		child_exec(c, devnull);
	if (pid < 0) {
		int rc = -errno;
		close(devnull);
		return rc;
	}
	/* Also here: the group must exist before a timeout can kill it. */
	setpgid(pid, pid);
	close(devnull);
	return pid;
}

bool hook_result_ok(const struct hook_result *r)
{
	return r->reaped && !r->timed_out && WIFEXITED(r->status) && WEXITSTATUS(r->status) == 0;
}

const char *hook_result_text(const struct hook_result *r, unsigned timeout_ms,
			     char *buf, size_t len)
{
	if (r->timed_out)
		snprintf(buf, len, "no end within %u ms: process group killed",
			 timeout_ms);
	else if (!r->reaped)
		snprintf(buf, len, "exit status unknown (collected elsewhere)");
	else if (WIFSIGNALED(r->status))
		snprintf(buf, len, "killed by signal %d", WTERMSIG(r->status));
	else if (WEXITSTATUS(r->status) == 127)
		snprintf(buf, len, "exit 127 (command not found: see the shell's message "
			 "above, and give the full path)");
	else if (WEXITSTATUS(r->status) == 126)
		snprintf(buf, len, "exit 126 (command not executable)");
	else
		snprintf(buf, len, "exit %d", WEXITSTATUS(r->status));
	return buf;
}

static void log_outcome(const char *label, const struct hook_result *r, unsigned timeout_ms)
{
	char text[160];

	hook_result_text(r, timeout_ms, text, sizeof(text));
	if (hook_result_ok(r))
		log_info("%s: %s after %.0f ms", label, text, r->ms);
	else
		log_warn("%s: %s after %.0f ms", label, text, r->ms);
}

/* Wait for pid until deadline (mono ms), then kill its group and reap it.
 * A status already collected by libev's SIGCHLD handler leaves reaped
 * false. */
static void wait_until(pid_t pid, double deadline, struct hook_result *res)
{
	for (;;) {
		pid_t r = waitpid(pid, &res->status, WNOHANG);

		if (r == pid) {
			res->reaped = true;
			return;
		}
		if (r < 0 && errno != EINTR)
			return;
		if (mono_ms() >= deadline)
			break;
		usleep(WAIT_STEP_US);
	}
	kill(-pid, SIGKILL);
	res->timed_out = true;
	while (waitpid(pid, &res->status, 0) < 0 && errno == EINTR)
		;
	res->reaped = true;
}

int hook_run_sync(const char *what, const char *cmd, const struct hook_event *ev,
		  unsigned timeout_ms, struct hook_result *res)
{
	struct hook_cmd c;
	double t0 = mono_ms();
	pid_t pid;
	int rc;

	*res = (struct hook_result){ 0 };
	rc = hook_cmd_build(&c, what, cmd, ev);
	if (rc) {
		log_err("%s: cannot prepare '%s': %s", what, cmd ? cmd : "", strerror(-rc));
		return rc;
	}
	pid = hook_spawn(&c);
	if (pid < 0) {
		log_err("%s: cannot start '%s': %s", c.label, cmd, strerror(-pid));
		hook_cmd_free(&c);
		return (int)pid;
	}
	wait_until(pid, t0 + timeout_ms, res);
	res->ms = mono_ms() - t0;
	log_outcome(c.label, res, timeout_ms);
	hook_cmd_free(&c);
	return 0;
}

/* ---- is the command there? ---- */

static bool is_builtin(const char *w)
{
	static const char *const names[] = { ":", ".", "[", "break", "cd", "command",
		"continue", "echo", "eval", "exec", "exit", "export", "false", "printf",
		"read", "return", "set", "shift", "test", "trap", "true", "umask",
		"unset", "wait" };

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (!strcmp(w, names[i]))
			return true;
	return false;
}

static int check_path(const char *word, char *err, size_t errlen)
{
	struct stat st;

	if (stat(word, &st)) {
		snprintf(err, errlen, "'%s': %s", word, strerror(errno));
		return -ENOENT;
	}
	if (S_ISDIR(st.st_mode) || access(word, X_OK)) {
		snprintf(err, errlen, "'%s' is not an executable file", word);
		return -EACCES;
	}
	return 0;
}

static int check_in_path(const char *word, char *err, size_t errlen)
{
	const char *path = getenv("PATH");
	char *copy, *save = NULL, full[4096];
	int rc = -ENOENT;

	copy = strdup(path && *path ? path : DEFAULT_PATH);
	if (!copy)
		return -ENOMEM;
	for (char *dir = strtok_r(copy, ":", &save); dir && rc; dir = strtok_r(NULL, ":", &save)) {
		struct stat st;
		snprintf(full, sizeof(full), "%s/%s", *dir ? dir : ".", word);
		if (!stat(full, &st) && !S_ISDIR(st.st_mode) && !access(full, X_OK))
			rc = 0;
	}
	if (rc)
		snprintf(err, errlen, "'%s' is not found in PATH (%s); give its full path",
			 word, path && *path ? path : DEFAULT_PATH);
	free(copy);
	return rc;
}

int hook_check(const char *cmd, char *err, size_t errlen)
{
	char word[1024];
	size_t n = 0;

	while (*cmd == ' ' || *cmd == '\t')
		cmd++;
	if (!*cmd) {
		snprintf(err, errlen, "the command is empty");
		return -EINVAL;
	}
	while (cmd[n] && !strchr(" \t\n;&|<>()", cmd[n]) && n < sizeof(word) - 1) {
		word[n] = cmd[n];
		n++;
	}
	word[n] = 0;
	/* Quotes, expansions and assignments are the shell's: let it judge. */
	if (strpbrk(word, "'\"$`\\*?=~{") || is_builtin(word) || !n)
		return 0;
	return strchr(word, '/') ? check_path(word, err, errlen) :
				   check_in_path(word, err, errlen);
}

/* ---- notify hooks on the loop ---- */

/* Take the head job off the queue (done, or dropped unstarted). */
static void runner_drop_head(struct hook_runner *h)
{
	struct hook_job *j = h->head;

	h->head = j->next;
	if (!h->head)
		h->tail = NULL;
	h->queued--;
	hook_cmd_free(&j->cmd);
	free(j);
}

/* limit_ms: the time it was given, for the log. */
static void runner_finish(struct hook_runner *h, struct hook_result *res, unsigned limit_ms)
{
	struct hook_job *j = h->head;

	ev_child_stop(h->loop, &h->child);
	ev_timer_stop(h->loop, &h->timer);
	res->ms = mono_ms() - h->started_ms;
	log_outcome(j->cmd.label, res, limit_ms);
	h->runs++;
	if (!hook_result_ok(res))
		h->failures++;
	if (h->done)
		h->done(&j->cmd, res, h->opaque);
	runner_drop_head(h);
	h->pid = 0;
	h->timed_out = false;
}

/* Start the head job, if any and none runs; failures to start are logged
 * and skipped. With watch, the loop reaps it and enforces its timeout. */
static void runner_start(struct hook_runner *h, bool watch)
{
	while (h->head && h->pid <= 0) {
		pid_t pid = hook_spawn(&h->head->cmd);
		if (pid < 0) {
			log_err("%s: cannot start '%s': %s", h->head->cmd.label, h->cmd,
				strerror((int)-pid));
			h->failures++;
			runner_drop_head(h);
			continue;
		}
		h->pid = pid;
		h->started_ms = mono_ms();
		h->timed_out = false;
		if (watch) {
			ev_child_set(&h->child, pid, 0);
			ev_child_start(h->loop, &h->child);
			ev_timer_set(&h->timer, h->timeout_ms / 1000.0, 0);
			ev_timer_start(h->loop, &h->timer);
		}
	}
}

static void on_hook_child(struct ev_loop *loop, ev_child *w, int revents)
{
	struct hook_runner *h = w->data;
	struct hook_result res = { .status = w->rstatus, .reaped = true,
				   .timed_out = h->timed_out };

	if (w->rpid != h->pid)
		return;
	runner_finish(h, &res, h->timeout_ms);
	runner_start(h, true);
}

static void on_hook_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct hook_runner *h = w->data;

	/* ev_child reports the end; the result then says timed out. */
	if (h->pid > 0) {
		kill(-h->pid, SIGKILL);
		h->timed_out = true;
	}
}

void hook_runner_init(struct hook_runner *h, struct ev_loop *loop, const char *cmd,
		      unsigned timeout_ms)
{
	*h = (struct hook_runner){ .loop = loop, .cmd = cmd, .timeout_ms = timeout_ms };
	ev_child_init(&h->child, on_hook_child, 0, 0);
	ev_init(&h->timer, on_hook_timeout);
	h->child.data = h->timer.data = h;
}

int hook_notify(struct hook_runner *h, const struct hook_event *ev)
{
	struct hook_job *j;
	int rc;

	if (!h->cmd)
		return 0;
	if (h->queued >= HOOK_QUEUE_MAX) {
		h->dropped++;
		log_warn("notify hook '%s' dropped: %u hooks wait already (the hook is slow "
			 "or hangs: each may take %u ms)", ev->event, h->queued, h->timeout_ms);
		return -ENOBUFS;
	}
	j = calloc(1, sizeof(*j));
	if (!j)
		return -ENOMEM;
	rc = hook_cmd_build(&j->cmd, "notify hook", h->cmd, ev);
	if (rc) {
		log_err("notify hook '%s': cannot prepare it: %s", ev->event, strerror(-rc));
		free(j);
		return rc;
	}
	if (h->tail)
		h->tail->next = j;
	else
		h->head = j;
	h->tail = j;
	h->queued++;
	runner_start(h, true);
	return 0;
}

void hook_runner_drain(struct hook_runner *h, unsigned max_ms)
{
	double deadline = mono_ms() + max_ms;

	if (h->pid > 0) {
		ev_child_stop(h->loop, &h->child);
		ev_timer_stop(h->loop, &h->timer);
	}
	while (h->head) {
		struct hook_result res = { 0 };
		double own = h->started_ms + h->timeout_ms;
		double until = own < deadline ? own : deadline;

		if (h->pid <= 0) {
			if (mono_ms() >= deadline)
				break;
			runner_start(h, false);
			continue;
		}
		wait_until(h->pid, until, &res);
		if (!res.reaped && h->child.rpid == h->pid) {
			/* libev's SIGCHLD handler got there first */
			res.status = h->child.rstatus;
			res.reaped = true;
		}
		runner_finish(h, &res, (unsigned)(until - h->started_ms + 0.5));
	}
	if (h->queued)
		log_warn("%u notify hook(s) not run: no time left", h->queued);
	hook_runner_free(h);
}

void hook_runner_free(struct hook_runner *h)
{
	if (h->pid > 0) {
		ev_child_stop(h->loop, &h->child);
		ev_timer_stop(h->loop, &h->timer);
		kill(-h->pid, SIGKILL);
		while (waitpid(h->pid, NULL, 0) < 0 && errno == EINTR)
			;
		h->pid = 0;
	}
	while (h->head)
		runner_drop_head(h);
}
