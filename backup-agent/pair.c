#include "pair.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* A pin is a few hundred bytes; anything much larger is not ours. */
#define PAIR_MAX_BYTES 65536

static const char *str_or_null(struct json_object *o, const char *key)
{
	struct json_object *v;

	if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string))
		return NULL;
	return json_object_get_string(v);
}

static bool empty(const char *s)
{
	return !s || !*s;
}

const char *pair_hello_uuid(struct json_object *hello)
{
	const char *uuid = str_or_null(hello, "uuid");
	struct json_object *argv;
	size_t n;

	if (uuid)
		return uuid;
	if (!json_object_object_get_ex(hello, "qemu_argv", &argv) ||
	    !json_object_is_type(argv, json_type_array))
		return NULL;
	n = json_object_array_length(argv);
	for (size_t i = 0; i + 1 < n; i++) {
		const char *a = json_object_get_string(json_object_array_get_idx(argv, i));
		if (a && !strcmp(a, "-uuid"))
			return json_object_get_string(json_object_array_get_idx(argv, i + 1));
	}
	return NULL;
}

static int path_in(const char *dir, const char *name, char *out)
{
	int n = snprintf(out, PATH_MAX, "%s/%s", dir, name);

	return n < 0 || n >= PATH_MAX ? -ENAMETOOLONG : 0;
}

/* *pin NULL and 0 when there is none. O_NOFOLLOW: the pin is a plain file
 * of ours, never something a link points at. */
static int read_pin(const char *dir, struct json_object **pin)
{
	char path[PATH_MAX];
	struct stat st;
	int fd, rc = path_in(dir, PAIR_FILE, path);

	*pin = NULL;
	if (rc)
		return rc;
	fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? 0 : -errno;
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size > PAIR_MAX_BYTES)
		rc = -EINVAL;
	else if (!(*pin = json_object_from_fd(fd)) ||
		 !json_object_is_type(*pin, json_type_object) || !str_or_null(*pin, "vm_name"))
		rc = -EINVAL;
	close(fd);
	if (rc) {
		json_object_put(*pin);
		*pin = NULL;
	}
	return rc;
}

/* The VM matches: same UUID if the pin has one; else none, and the same
 * name. A HELLO cannot drop its UUID to pass as the pinned VM. */
static bool same_vm(struct json_object *pin, const char *uuid, const char *name)
{
	const char *puuid = str_or_null(pin, "vm_uuid");

	if (puuid)
		return uuid && !strcasecmp(puuid, uuid);
	return !uuid && name && !strcmp(name, str_or_null(pin, "vm_name"));
}

int pair_check(const char *dir, const char *uuid, const char *name, const char *peer,
	       char *err, size_t errlen)
{
	struct json_object *pin;
	const char *ppeer;
	int rc = read_pin(dir, &pin);

	if (rc) {
		snprintf(err, errlen, "%s/" PAIR_FILE " is unreadable or damaged (%s); check it, "
			 "or remus-agent --forget-pair", dir, strerror(-rc));
		return -EINVAL;
	}
	if (!pin)
		return 0;
	ppeer = str_or_null(pin, "peer");
	if (!same_vm(pin, uuid, name)) {
		snprintf(err, errlen, "state dir belongs to VM %s (uuid %s), not %s (uuid %s); "
			 "remus-agent --forget-pair resets it", str_or_null(pin, "vm_name"),
			 str_or_null(pin, "vm_uuid") ?: "none", name ?: "?", uuid ?: "none");
		rc = -EPERM;
	} else if (!empty(ppeer) && (empty(peer) || strcmp(ppeer, peer))) {
		snprintf(err, errlen, "state dir belongs to peer '%s', not '%s'; "
			 "remus-agent --forget-pair resets it", ppeer, empty(peer) ? "" : peer);
		rc = -EPERM;
	}
	json_object_put(pin);
	return rc;
}

static int fsync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC), rc = 0;

	if (fd < 0)
		return -errno;
	if (fsync(fd) < 0)
		rc = -errno;
	close(fd);
	return rc;
}

static int write_all(int fd, const char *s, size_t len)
{
	while (len > 0) {
		ssize_t w = write(fd, s, len);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return w < 0 ? -errno : -EIO;
		s += w;
		len -= (size_t)w;
	}
	return 0;
}

/* tmp, then rename: a reader sees the old pin or the new one. O_EXCL and
 * O_NOFOLLOW after removing a leftover, so that nothing planted at the
 * temporary name is written through. Synced: the pin must survive a crash
 * of the host as long as the replica it guards (the disks are synced). */
static int write_pin_file(const char *dir, const char *text)
{
	char tmp[PATH_MAX], path[PATH_MAX];
	int fd, rc;

	if ((rc = path_in(dir, PAIR_FILE ".tmp", tmp)) || (rc = path_in(dir, PAIR_FILE, path)))
		return rc;
	unlink(tmp);
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	rc = write_all(fd, text, strlen(text));
	if (!rc && fsync(fd) < 0)
		rc = -errno;
	if (close(fd) < 0 && !rc)
		rc = -errno;
	if (!rc && rename(tmp, path) < 0)
		rc = -errno;
	if (rc) {
		unlink(tmp);
		return rc;
	}
	return fsync_dir(dir);
}

static struct json_object *new_str_or_null(const char *s)
{
	return empty(s) ? NULL : json_object_new_string(s);
}

int pair_pin(const char *dir, const char *uuid, const char *name, const char *peer)
{
	struct json_object *pin, *o;
	char stamp[32];
	time_t now = time(NULL);
	struct tm tm;
	int rc = read_pin(dir, &pin);

	if (rc)
		return rc;
	if (pin && (!empty(str_or_null(pin, "peer")) || empty(peer))) {
		json_object_put(pin);
		return 0; /* pinned already, and nothing to add */
	}
	json_object_put(pin);
	gmtime_r(&now, &tm);
	strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%SZ", &tm);
	o = json_object_new_object();
	json_object_object_add(o, "vm_uuid", new_str_or_null(uuid));
	json_object_object_add(o, "vm_name", json_object_new_string(name ? name : ""));
	json_object_object_add(o, "peer", new_str_or_null(peer));
	json_object_object_add(o, "pinned_at", json_object_new_string(stamp));
	rc = write_pin_file(dir, json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY));
	json_object_put(o);
	return rc;
}

/* Held while the pin goes: not under a running agent's feet. */
static int lock_dir(const char *dir, char *msg, size_t msglen)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	if (fd < 0) {
		int rc = -errno;

		snprintf(msg, msglen, "cannot open %s: %s", dir, strerror(-rc));
		return rc;
	}
	if (flock(fd, LOCK_EX | LOCK_NB) < 0 && errno != ENOLCK && errno != EOPNOTSUPP) {
		int rc = -errno;
		snprintf(msg, msglen, rc == -EWOULDBLOCK ?
			 "%s is in use (a remus-agent, or a VM restored from it, holds it): stop "
			 "it first" : "cannot lock %s: %s", dir, strerror(-rc));
		close(fd);
		return rc;
	}
	return fd;
}

int pair_forget(const char *dir, char *msg, size_t msglen)
{
	char path[PATH_MAX];
	struct json_object *pin;
	int lock = lock_dir(dir, msg, msglen), rc;

	if (lock < 0)
		return lock;
	if ((rc = path_in(dir, PAIR_FILE, path)) == 0 && (rc = read_pin(dir, &pin)) == -EINVAL)
		pin = NULL; /* damaged: removing it is the way out */
	else if (rc) {
		snprintf(msg, msglen, "cannot read %s: %s", path, strerror(-rc));
		goto out;
	}
	if (unlink(path) < 0) {
		rc = errno == ENOENT ? 0 : -errno;
		if (rc)
			snprintf(msg, msglen, "cannot remove %s: %s", path, strerror(-rc));
		else
			snprintf(msg, msglen, "%s: no pin, nothing to do", path);
		goto out_put;
	}
	fsync_dir(dir);
	snprintf(msg, msglen, "removed %s (VM %s, uuid %s, peer %s): the next primary whose "
		 "session commits in %s pins it again", path,
		 pin ? str_or_null(pin, "vm_name") : "?", pin ? str_or_null(pin, "vm_uuid") ?: "none" : "?",
		 pin ? str_or_null(pin, "peer") ?: "none" : "?", dir);
	rc = 1;
out_put:
	json_object_put(pin);
out:
	close(lock);
	return rc;
}
