/* remusctl: talk to a running replicator or agent over its control
 * socket. One file per verb; the table in main.c dispatches and prints
 * the usage. */
#ifndef REMUSCTL_H
#define REMUSCTL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

struct json_object;

struct remusctl_opts {
	const char *control;
	int json;
};

/* Why a request gave no reply. */
enum remusctl_failure {
	REMUSCTL_OK,
	REMUSCTL_FAIL_CONNECT, /* nothing listens there (gone, stale socket) */
	REMUSCTL_FAIL_REFUSED, /* not root, not in its control group */
	REMUSCTL_FAIL_TIMEOUT, /* no reply in time */
	REMUSCTL_FAIL_EMPTY,   /* closed without a reply */
	REMUSCTL_FAIL_IO,      /* anything else */
};

/* Send one command line, return the reply (malloc'd) or NULL (printed).
 * The reply must come within 5 s (remusctl_request_wait: wait_s). */
char *remusctl_request(const char *control, const char *command);
char *remusctl_request_wait(const char *control, const char *command, int wait_s);
/* The same, printing nothing: NULL with why and the message (without
 * "remusctl: ") in err. */
char *remusctl_request_quiet(const char *control, const char *command, int wait_s,
			     enum remusctl_failure *why, char *err, size_t errlen);

/* A verb without options of its own: 0 if argv[1..] holds nothing but
 * --json, else -1 (printed). */
int remusctl_no_args(int argc, char **argv);
/* The reply as a JSON object, or NULL (printed). */
struct json_object *remusctl_parse(const char *reply);
/* Print a pause/resume/failover reply: its message, or its error on
 * stderr; with --json the reply itself. 0 if it says ok. */
int remusctl_print_reply(const struct remusctl_opts *o, const char *verb, const char *reply);

/* Fields of a status reply. "agent" or "replicator" (the "daemon" key;
 * a replicator from before it says nothing). */
const char *remusctl_daemon(struct json_object *o);
/* The key is there, a number or a boolean (not null). */
bool remusctl_has(struct json_object *o, const char *key);
/* A number; 0 when absent or null. */
double remusctl_num(struct json_object *o, const char *key);
/* A string without its control characters (it may come from the VM or
 * the other host), in one of a few static buffers used in turn; "?" or
 * none when absent or null. */
const char *remusctl_str(struct json_object *o, const char *key);
const char *remusctl_str_or(struct json_object *o, const char *key, const char *none);

/* status_text.c: the status reply of either daemon, for a human. */
void remusctl_status_text(FILE *f, struct json_object *o);
/* prometheus.c: the status reply in the Prometheus text exposition format
 * (for node_exporter's textfile collector). */
void remusctl_status_prometheus(FILE *f, struct json_object *o);
/* The states a daemon can be in, NULL-terminated, in the order of its
 * state gauges. */
const char *const *remusctl_daemon_states(const char *daemon);

int status_main(const struct remusctl_opts *o, int argc, char **argv);
int reset_stats_main(const struct remusctl_opts *o, int argc, char **argv);
int pause_main(const struct remusctl_opts *o, int argc, char **argv);
int resume_main(const struct remusctl_opts *o, int argc, char **argv);
int failover_main(const struct remusctl_opts *o, int argc, char **argv);
int park_main(const struct remusctl_opts *o, int argc, char **argv);
int takeover_main(const struct remusctl_opts *o, int argc, char **argv);
int verify_main(const struct remusctl_opts *o, int argc, char **argv);
int test_failover_main(const struct remusctl_opts *o, int argc, char **argv);
int list_main(const struct remusctl_opts *o, int argc, char **argv);
int keygen_main(const struct remusctl_opts *o, int argc, char **argv);

#endif
