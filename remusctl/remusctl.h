/* remusctl: talk to a running replicator over its control socket. One
 * file per verb; the table in main.c dispatches and prints the usage. */
#ifndef REMUSCTL_H
#define REMUSCTL_H

struct remusctl_opts {
	const char *control;
	int json;
};

/* Send one command line, return the reply (malloc'd) or NULL (printed). */
char *remusctl_request(const char *control, const char *command);

int status_main(const struct remusctl_opts *o, int argc, char **argv);
int reset_stats_main(const struct remusctl_opts *o, int argc, char **argv);

#endif
