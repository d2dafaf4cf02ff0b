/* Private runtime directories: see runtime_dir.h. */
#include "runtime_dir.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

const char *runtime_dir_parent(char *buf, size_t len)
{
	const char *env = getenv("RUNTIME_DIRECTORY");

	/* systemd lists one per RuntimeDirectory= entry, ':'-separated */
	if (!env || !*env)
		return RUNTIME_DIR_DEFAULT;
	snprintf(buf, len, "%.*s", (int)strcspn(env, ":"), env);
	return buf;
}

/* The parent must be a real directory that only root or we can change:
 * anyone else who can rename entries in it could swap ours. */
static int check_parent(const char *parent)
{
	struct stat st;

	if (lstat(parent, &st) < 0)
		return -errno;
	if (S_ISLNK(st.st_mode))
		return -ELOOP;
	if (!S_ISDIR(st.st_mode))
		return -ENOTDIR;
	if (st.st_uid != 0 && st.st_uid != geteuid())
		return -EPERM;
	if ((st.st_mode & (S_IWGRP | S_IWOTH)) && !(st.st_mode & S_ISVTX))
		return -EPERM;
	return 0;
}

static int ensure_parent(const char *parent)
{
	int rc = check_parent(parent);

	if (rc != -ENOENT)
		return rc;
	if (mkdir(parent, 0755) < 0) {
		if (errno != EEXIST)
			return -errno;
	} else if (chmod(parent, 0755) < 0) { /* the umask may have taken bits */
		return -errno;
	}
	return check_parent(parent);
}

int runtime_dir_make(const char *parent, const char *prefix, char *out, size_t len)
{
	int rc = ensure_parent(parent);
	int n;

	if (rc)
		return rc;
	n = snprintf(out, len, "%s/%s.XXXXXX", parent, prefix);
	if (n < 0 || (size_t)n >= len)
		return -ENAMETOOLONG;
	/* mkdtemp: a random name, mode 0700, and it fails rather than reuse */
	if (!mkdtemp(out))
		return -errno;
	return 0;
}

int runtime_subdir_make(const char *dir, const char *name, char *out, size_t len)
{
	int n = snprintf(out, len, "%s/%s", dir, name);

	if (n < 0 || (size_t)n >= len)
		return -ENAMETOOLONG;
	if (mkdir(out, 0700) < 0)
		return -errno;
	return chmod(out, 0700) < 0 ? -errno : 0;
}

int runtime_file_create(const char *dir, const char *name, int flags, mode_t mode,
			char *out, size_t len)
{
	int n = snprintf(out, len, "%s/%s", dir, name);
	int fd;

	if (n < 0 || (size_t)n >= len)
		return -ENAMETOOLONG;
	fd = open(out, flags | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
	return fd < 0 ? -errno : fd;
}

int runtime_dir_share(const char *dir, uid_t uid, gid_t gid)
{
	if (uid == geteuid())
		return 0;
	if (chown(dir, (uid_t)-1, gid) < 0 || chmod(dir, 0710) < 0)
		return -errno;
	return 0;
}

static int remove_one(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	remove(path);
	return 0;
}

void runtime_dir_remove(const char *dir)
{
	if (dir && *dir)
		nftw(dir, remove_one, 8, FTW_DEPTH | FTW_PHYS);
}
