/* Operator hooks (keepalived style): a command run through /bin/sh -c with
 * the arguments PAIR VM EVENT ROLE appended, stdin from /dev/null, details
 * in REMUS_* environment variables, in a process group of its own that is
 * killed when its hard timeout expires.
 *
 * Two ways to run one:
 *  - hook_run_sync: blocks until the command exits or its timeout kills it
 *    (the fence command: nothing may happen before it has answered);
 *  - struct hook_runner: notify hooks, started from the daemon's libev
 *    default loop and reaped there (ev_child), one at a time and in the
 *    order of their events, so that a slow hook never blocks the daemon and
 *    a hook sees `fencing` before `master`.
 * Either way one log line per run says what ran, its outcome and its time. */
#ifndef REMUS_HOOKS_H
#define REMUS_HOOKS_H

#include <ev.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define HOOK_NOTIFY_TIMEOUT_MS 10000u
#define HOOK_QUEUE_MAX         32   /* notify events waiting to run */
#define HOOK_MAX_VARS          8

/* What an event tells the hook. NULL strings are left out of the
 * environment (arguments become empty strings). */
struct hook_event {
	const char *pair;     /* $1, REMUS_PAIR */
	const char *vm;       /* $2, REMUS_VM */
	const char *event;    /* $3, REMUS_EVENT */
	const char *role;     /* $4, REMUS_ROLE: "primary" or "backup" */
	uint64_t epoch;       /* REMUS_EPOCH: last committed epoch */
	const char *peer;     /* REMUS_PEER: the other host's address */
	const char *peer_host; /* REMUS_PEER_HOST: its [host] name, in a pair whose roles move */
	const char *reason;   /* REMUS_REASON: why, in words */
	/* further "REMUS_NAME=value" assignments, up to HOOK_MAX_VARS */
	const char *vars[HOOK_MAX_VARS];
	int nvars;
};

/* Add "REMUS_<name>=<value>" to ev->vars, formatted into buf (which must
 * live as long as ev is used). Silently ignored when ev->vars is full. */
void hook_event_var(struct hook_event *ev, char *buf, size_t len, const char *name,
		    const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* A command ready to run: everything copied, so it may wait in a queue. */
struct hook_cmd {
	char **argv;          /* /bin/sh -c 'CMD "$@"' remus-hook PAIR VM EVENT ROLE */
	char **envp;          /* the daemon's environment without REMUS_*, plus ours */
	char *label;          /* "notify hook 'master'", for the log */
};

int hook_cmd_build(struct hook_cmd *c, const char *what, const char *cmd,
		   const struct hook_event *ev);
void hook_cmd_free(struct hook_cmd *c);

struct hook_result {
	int status;           /* wait status; valid when !timed_out && reaped */
	bool reaped;          /* the status is known */
	bool timed_out;       /* the timeout killed the process group */
	double ms;            /* start to end */
};

/* The command exited with status 0 (and was not killed). */
bool hook_result_ok(const struct hook_result *r);
/* "exit 0", "exit 3", "killed by signal 9", "timed out after N ms ...",
 * "exit 127 (command not found ...)", into buf; returns buf. */
const char *hook_result_text(const struct hook_result *r, unsigned timeout_ms,
			     char *buf, size_t len);

/* Start c in a new process group; its pid, or -errno. */
pid_t hook_spawn(const struct hook_cmd *c);

/* Run CMD for ev and wait for it, at most timeout_ms (then its process
 * group is killed). 0 when it ran (outcome in *res; see hook_result_ok),
 * -errno when it could not be started. Logs one line. */
int hook_run_sync(const char *what, const char *cmd, const struct hook_event *ev,
		  unsigned timeout_ms, struct hook_result *res);

/* Can the command's first word be run? 0, or -ENOENT / -EACCES with a
 * message in err that names it (and PATH, for a bare name). Shell
 * builtins and words the shell expands are not checked. */
int hook_check(const char *cmd, char *err, size_t errlen);

/* ---- notify hooks on the event loop ---- */

struct hook_job;

struct hook_runner {
	struct ev_loop *loop;      /* must be the default loop (ev_child) */
	const char *cmd;           /* NULL: events are dropped quietly */
	unsigned timeout_ms;
	struct hook_job *head, *tail; /* head runs when pid > 0 */
	unsigned queued;
	pid_t pid;
	double started_ms;
	bool timed_out;
	ev_child child;
	ev_timer timer;
	unsigned runs, failures, dropped;
	/* called after each run (tests), may be NULL */
	void (*done)(const struct hook_cmd *c, const struct hook_result *res, void *opaque);
	void *opaque;
};

void hook_runner_init(struct hook_runner *h, struct ev_loop *loop, const char *cmd,
		      unsigned timeout_ms);
/* Queue ev; it runs when the ones before it have finished. 0, or -errno
 * (-ENOBUFS: queue full, event dropped; logged). */
int hook_notify(struct hook_runner *h, const struct hook_event *ev);
/* Without the loop: wait for the running hook and run the queued ones,
 * each under its own timeout, all within max_ms (then the rest is killed
 * or dropped). For a daemon on its way out. */
void hook_runner_drain(struct hook_runner *h, unsigned max_ms);
/* Kill a running hook's group, drop the queue. */
void hook_runner_free(struct hook_runner *h);

#endif
