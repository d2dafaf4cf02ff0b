/* /proc lookups: see procfs.h. */
#include "procfs.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

bool proc_exited(pid_t pid)
{
	char path[64], buf[256], *p;
	ssize_t n;
	int fd;

	if (pid <= 0)
		return false;
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return false;
	buf[n] = 0;
	p = strrchr(buf, ')');  /* the state follows "(comm)" */
	return p && p[1] == ' ' && (p[2] == 'Z' || p[2] == 'X');
}

int proc_find_memfd(pid_t pid, uint64_t size, char *path, size_t len)
{
	char dir[64], link[PATH_MAX], fdpath[PATH_MAX];
	struct dirent *de;
	int found = 0;
	DIR *d;

	snprintf(dir, sizeof(dir), "/proc/%d/fd", (int)pid);
	d = opendir(dir);
	if (!d)
		return -errno;
	while ((de = readdir(d))) {
		struct stat st;
		ssize_t n;

		snprintf(fdpath, sizeof(fdpath), "%s/%s", dir, de->d_name);
		n = readlink(fdpath, link, sizeof(link) - 1);
		if (n <= 0)
			continue;
		link[n] = 0;
		if (strncmp(link, "/memfd:", 7) || stat(fdpath, &st) || (uint64_t)st.st_size != size)
			continue;
		if (!found++)
			snprintf(path, len, "%s", fdpath);
	}
	closedir(d);
	return found;
}

int proc_ids(pid_t pid, uid_t *uid, gid_t *gid)
{
	char path[64], line[256];
	unsigned ru, eu, rg, eg;
	int found = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	f = fopen(path, "re");
	if (!f)
		return -errno;
	/* "Uid:\treal\teffective\tsaved\tfs", the same for Gid: */
	while (found != 3 && fgets(line, sizeof(line), f)) {
		if (sscanf(line, "Uid: %u %u", &ru, &eu) == 2) {
			*uid = eu;
			found |= 1;
		} else if (sscanf(line, "Gid: %u %u", &rg, &eg) == 2) {
			*gid = eg;
			found |= 2;
		}
	}
	fclose(f);
	return found == 3 ? 0 : -EIO;
}

pid_t proc_tgid(pid_t tid)
{
	char path[64], line[256];
	int tgid = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)tid);
	f = fopen(path, "re");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "Tgid: %d", &tgid) == 1)
			break;
	fclose(f);
	return tgid > 0 ? (pid_t)tgid : -1;
}

/* /proc/PID/NAME into buf (at most len - 1 bytes, NUL-terminated after
 * them): the bytes read (> 0), or -errno (-EIO when empty). */
static ssize_t proc_read(pid_t pid, const char *name, char *buf, size_t len)
{
	char path[64];
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/%s", (int)pid, name);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	n = read(fd, buf, len - 1);
	if (n < 0)
		n = -errno;
	close(fd);
	if (n == 0)
		n = -EIO;
	if (n > 0)
		buf[n] = 0;
	return n;
}

ssize_t proc_cmdline(pid_t pid, char *buf, size_t len)
{
	return proc_read(pid, "cmdline", buf, len);
}

int proc_starttime(pid_t pid, uint64_t *ticks)
{
	char buf[1024], *p;
	unsigned long long v;
	ssize_t n = proc_read(pid, "stat", buf, sizeof(buf));

	if (n < 0)
		return (int)n;
	/* the command name may hold spaces and ')': fields follow the last ')' */
	p = strrchr(buf, ')');
	/* state is field 3, starttime field 22: 19 fields after the state */
	if (!p || sscanf(p + 1, " %*c %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s "
			 "%*s %*s %*s %*s %llu", &v) != 1)
		return -EIO;
	*ticks = v;
	return 0;
}

const char *proc_comm(pid_t pid, char *buf, size_t len)
{
	ssize_t n = proc_read(pid, "comm", buf, len);

	if (n <= 0)
		n = snprintf(buf, len, "?");
	if (n > 0 && buf[n - 1] == '\n')
		buf[n - 1] = 0;
	return buf;
}

const char *host_boot_id(char *buf, size_t len)
{
	FILE *f = fopen("/proc/sys/kernel/random/boot_id", "re");

	if (!len)
		return buf;
	buf[0] = '\0';
	if (f) {
		if (fgets(buf, (int)len, f))
			buf[strcspn(buf, "\n")] = '\0';
		fclose(f);
	}
	return buf;
}

int proc_sees_path(pid_t pid, const char *path)
{
	char theirs[PATH_MAX];
	struct stat ours, st;

	if (stat(path, &ours) < 0)
		return -errno;
	snprintf(theirs, sizeof(theirs), "/proc/%d/root", (int)pid);
	if (stat(theirs, &st) < 0)
		return errno == ENOENT ? -ESRCH : -errno; /* gone: not "absent there" */
	if (snprintf(theirs, sizeof(theirs), "/proc/%d/root%s", (int)pid, path) >=
	    (int)sizeof(theirs))
		return -ENAMETOOLONG;
	if (stat(theirs, &st) == 0)
		return st.st_dev == ours.st_dev && st.st_ino == ours.st_ino;
	if (errno != ENOENT && errno != ENOTDIR)
		return -errno;
	/* absent there, unless the process went meanwhile */
	snprintf(theirs, sizeof(theirs), "/proc/%d/root", (int)pid);
	return stat(theirs, &st) < 0 ? -ESRCH : 0;
}

bool proc_has_open(pid_t pid, const struct stat *st)
{
	char dir[64], path[320];
	struct dirent *e;
	struct stat fst;
	bool found = false;
	DIR *dh;

	snprintf(dir, sizeof(dir), "/proc/%d/fd", (int)pid);
	dh = opendir(dir);
	while (dh && !found && (e = readdir(dh))) {
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		found = e->d_name[0] != '.' && !stat(path, &fst) && fst.st_dev == st->st_dev &&
			fst.st_ino == st->st_ino;
	}
	if (dh)
		closedir(dh);
	return found;
}
