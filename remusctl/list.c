/* remusctl list [DIR...]: the control sockets of the daemons on this host,
 * one line each for every socket in the DIRs (default /run/remus, where
 * the systemd units put them) that answers status:
 *
 *   PATH  DAEMON  VM  STATE  EPOCH
 *
 * EPOCH is the replicator's last acknowledged epoch, or the agent's
 * replica's; "-" for none yet (and for a VM the agent has not heard of). With --json, an array of objects with these
 * keys (path, daemon, vm, state, epoch). A socket that nothing listens on
 * (left by a daemon that was killed) is skipped; one that refuses us or
 * does not answer is said on stderr. */
#include "remusctl.h"

#include <dirent.h>
#include <errno.h>
#include <json-c/json.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define LIST_DEFAULT_DIR "/run/remus"
/* A daemon answers status at once, unless a fence or a restore holds its
 * loop: do not wait for that as long as status does. */
#define LIST_WAIT_S      2

struct row {
	char *path, *daemon, *vm, *state, *epoch; /* vm NULL: not known */
};

static void row_free(struct row *r)
{
	free(r->path);
	free(r->daemon);
	free(r->vm);
	free(r->state);
	free(r->epoch);
}

/* Ask the socket at path; 1 with the row filled, 0 when it is not a
 * daemon's (said on stderr when it refused us or did not answer). */
static int ask(const char *path, struct row *row)
{
	enum remusctl_failure why;
	struct json_object *o;
	char err[600], epoch[32];
	const char *vm;
	char *reply = remusctl_request_quiet(path, "status", LIST_WAIT_S, &why, err, sizeof(err));
	const char *daemon;
	bool agent;

	if (!reply) {
		if (why == REMUSCTL_FAIL_REFUSED || why == REMUSCTL_FAIL_TIMEOUT)
			fprintf(stderr, "remusctl: list: %s\n", err);
		return 0;
	}
	o = json_tokener_parse(reply);
	free(reply);
	if (!json_object_is_type(o, json_type_object)) {
		json_object_put(o);
		return 0;
	}
	daemon = remusctl_daemon(o);
	agent = !strcmp(daemon, "agent");
	if (agent ? !remusctl_has(o, "replica_epoch") : !remusctl_has(o, "last_acked_epoch"))
		snprintf(epoch, sizeof(epoch), "-");
	else
		snprintf(epoch, sizeof(epoch), "%.0f",
			 remusctl_num(o, agent ? "replica_epoch" : "last_acked_epoch"));
	*row = (struct row){
		.path = strdup(path),
		.daemon = strdup(daemon),
		.vm = (vm = remusctl_str_or(o, "vm", NULL)) ? strdup(vm) : NULL,
		.state = strdup(remusctl_str(o, agent ? "state" : "protection")),
		.epoch = strdup(epoch),
	};
	json_object_put(o);
	if (!row->path || !row->daemon || (vm && !row->vm) || !row->state || !row->epoch) {
		row_free(row);
		return 0;
	}
	return 1;
}

/* Every socket in dir that answers, appended to *rows. 0, or -1 when dir
 * cannot be read (said). */
static int list_dir(const char *dir, bool given, struct row **rows, size_t *n)
{
	struct dirent **names;
	int count = scandir(dir, &names, NULL, alphasort);

	if (count < 0) {
		if (!given && errno == ENOENT)
			return 0; /* no daemon made it yet */
		fprintf(stderr, "remusctl: list: cannot read %s: %s\n", dir, strerror(errno));
		return -1;
	}
	for (int i = 0; i < count; i++) {
		char path[PATH_MAX];
		struct stat st;
		struct row row, *more;

		if (snprintf(path, sizeof(path), "%s/%s", dir, names[i]->d_name) >= (int)sizeof(path) ||
		    lstat(path, &st) || !S_ISSOCK(st.st_mode) || !ask(path, &row)) {
			free(names[i]);
			continue;
		}
		free(names[i]);
		more = realloc(*rows, (*n + 1) * sizeof(**rows));
		if (!more) {
			row_free(&row);
			continue;
		}
		*rows = more;
		(*rows)[(*n)++] = row;
	}
	free(names);
	return 0;
}

static void print_text(const struct row *rows, size_t n)
{
	int w[4] = { 0 };

	for (size_t i = 0; i < n; i++) {
		const char *cols[4] = { rows[i].path, rows[i].daemon, rows[i].vm ? rows[i].vm : "-",
					rows[i].state };

		for (int c = 0; c < 4; c++)
			if ((int)strlen(cols[c]) > w[c])
				w[c] = (int)strlen(cols[c]);
	}
	for (size_t i = 0; i < n; i++)
		printf("%-*s  %-*s  %-*s  %-*s  %s\n", w[0], rows[i].path, w[1], rows[i].daemon,
		       w[2], rows[i].vm ? rows[i].vm : "-", w[3], rows[i].state, rows[i].epoch);
}

static void print_json(const struct row *rows, size_t n)
{
	struct json_object *arr = json_object_new_array();

	for (size_t i = 0; i < n; i++) {
		struct json_object *o = json_object_new_object();

		json_object_object_add(o, "path", json_object_new_string(rows[i].path));
		json_object_object_add(o, "daemon", json_object_new_string(rows[i].daemon));
		json_object_object_add(o, "vm", rows[i].vm ? json_object_new_string(rows[i].vm) :
				       NULL);
		json_object_object_add(o, "state", json_object_new_string(rows[i].state));
		json_object_object_add(o, "epoch", strcmp(rows[i].epoch, "-") ?
				       json_object_new_uint64(strtoull(rows[i].epoch, NULL, 10)) :
				       NULL);
		json_object_array_add(arr, o);
	}
	printf("%s\n", json_object_to_json_string_ext(arr, JSON_C_TO_STRING_PLAIN));
	json_object_put(arr);
}

int list_main(const struct remusctl_opts *opts, int argc, char **argv)
{
	struct row *rows = NULL;
	size_t n = 0;
	int rc = 0, ndirs = 0;

	/* Every argument checked before any directory is read. */
	for (int i = 1; i < argc; i++)
		if (argv[i][0] == '-' && strcmp(argv[i], "--json")) {
			fprintf(stderr, "remusctl: list: unexpected option '%s' (usage: list "
				"[DIR...])\n", argv[i]);
			return 2;
		}
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--json"))
			continue;
		ndirs++;
		if (list_dir(argv[i], true, &rows, &n))
			rc = 1;
	}
	if (!ndirs && list_dir(LIST_DEFAULT_DIR, false, &rows, &n))
		rc = 1;
	if (opts->json)
		print_json(rows, n);
	else
		print_text(rows, n);
	for (size_t i = 0; i < n; i++)
		row_free(&rows[i]);
	free(rows);
	return rc;
}
