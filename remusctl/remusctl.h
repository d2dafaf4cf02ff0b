/* remusctl: talk to a running replicator over its control socket. One
 * file per verb; the table in main.c dispatches and prints the usage. */
#ifndef REMUSCTL_H
#define REMUSCTL_H

struct remusctl_opts {
	const char *control;
	int json;
};

/* Send one command line, return the reply (malloc'd) or NULL (printed).
 * The reply must come within 5 s (remusctl_request_wait: wait_s). */
char *remusctl_request(const char *control, const char *command);
char *remusctl_request_wait(const char *control, const char *command, int wait_s);

/* A verb without options of its own: 0 if argv[1..] holds nothing but
 * --json, else -1 (printed). */
int remusctl_no_args(int argc, char **argv);
/* The reply as a JSON object, or NULL (printed). */
struct json_object *remusctl_parse(const char *reply);
/* Print a pause/resume/failover reply: its message, or its error on
 * stderr; with --json the reply itself. 0 if it says ok. */
int remusctl_print_reply(const struct remusctl_opts *o, const char *verb, const char *reply);

int status_main(const struct remusctl_opts *o, int argc, char **argv);
int reset_stats_main(const struct remusctl_opts *o, int argc, char **argv);
int pause_main(const struct remusctl_opts *o, int argc, char **argv);
int resume_main(const struct remusctl_opts *o, int argc, char **argv);
int failover_main(const struct remusctl_opts *o, int argc, char **argv);
int keygen_main(const struct remusctl_opts *o, int argc, char **argv);

#endif
