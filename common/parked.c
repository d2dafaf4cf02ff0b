/* DIR/parked.json (parked.h). */
#include "parked.h"
#include "atomic_file.h"

#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PARKED_FILE "parked.json"

static int path_of(const char *dir, const char *name, char *out, size_t len)
{
	return (size_t)snprintf(out, len, "%s/%s", dir, name) >= len ? -ENAMETOOLONG : 0;
}

int parked_save(const char *dir, const struct parked_vm *p)
{
	char path[PATH_MAX];
	struct json_object *o = json_object_new_object();
	const char *text;
	int rc;

	if (path_of(dir, PARKED_FILE, path, sizeof(path))) {
		json_object_put(o);
		return -ENAMETOOLONG;
	}
	json_object_object_add(o, "pid", json_object_new_int64(p->pid));
	json_object_object_add(o, "starttime", json_object_new_uint64(p->starttime));
	json_object_object_add(o, "qmp", json_object_new_string(p->qmp));
	json_object_object_add(o, "generation", json_object_new_uint64(p->generation));
	json_object_object_add(o, "epoch", json_object_new_uint64(p->epoch));
	text = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
	rc = atomic_file_write(path, text, strlen(text));
	json_object_put(o);
	return rc;
}

int parked_load(const char *dir, struct parked_vm *p)
{
	char path[PATH_MAX];
	struct json_object *o, *pid, *start, *qmp, *gen, *epoch;

	if (path_of(dir, PARKED_FILE, path, sizeof(path)))
		return -ENOENT;
	if (access(path, F_OK))
		return -ENOENT;
	o = json_object_from_file(path);
	if (!o || !json_object_object_get_ex(o, "pid", &pid) ||
	    !json_object_is_type(pid, json_type_int) ||
	    !json_object_object_get_ex(o, "starttime", &start) ||
	    !json_object_is_type(start, json_type_int) ||
	    !json_object_object_get_ex(o, "qmp", &qmp) ||
	    !json_object_is_type(qmp, json_type_string) ||
	    !json_object_object_get_ex(o, "generation", &gen) ||
	    !json_object_is_type(gen, json_type_int) ||
	    !json_object_object_get_ex(o, "epoch", &epoch) ||
	    !json_object_is_type(epoch, json_type_int) ||
	    json_object_get_int64(pid) <= 1 || json_object_get_int64(pid) > INT32_MAX ||
	    (size_t)json_object_get_string_len(qmp) >= sizeof(p->qmp)) {
		json_object_put(o);
		unlink(path);
		return -EINVAL;
	}
	p->pid = (pid_t)json_object_get_int64(pid);
	p->starttime = json_object_get_uint64(start);
	snprintf(p->qmp, sizeof(p->qmp), "%s", json_object_get_string(qmp));
	p->generation = json_object_get_uint64(gen);
	p->epoch = json_object_get_uint64(epoch);
	json_object_put(o);
	return 0;
}

void parked_forget(const char *dir)
{
	char path[PATH_MAX];

	if (!path_of(dir, PARKED_FILE, path, sizeof(path)))
		unlink(path);
}
