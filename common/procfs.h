/* What /proc says about another process (QEMU), for the replicator and
 * the agent alike. */
#ifndef REMUS_PROCFS_H
#define REMUS_PROCFS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

/* Has pid exited (gone, or a zombie its parent has not reaped yet)? */
bool proc_exited(pid_t pid);
/* The memfds pid holds that are size bytes long: their number (or
 * -errno), and in path (len bytes) /proc/PID/fd/N of the first. A memfd
 * memory backend has no path of its own; this is how to reach it. */
int proc_find_memfd(pid_t pid, uint64_t size, char *path, size_t len);
/* pid's command line (/proc/PID/cmdline: arguments each ending in a
 * NUL) into buf, at most len - 1 bytes, NUL-terminated after them: the
 * bytes read (> 0), or -errno (-EIO when empty: a zombie, a kernel thread). */
ssize_t proc_cmdline(pid_t pid, char *buf, size_t len);
/* When pid started, in clock ticks after boot (/proc/PID/stat, field 22):
 * with the pid, it names one process for good, whatever reuses the pid
 * later. 0, or -errno. */
int proc_starttime(pid_t pid, uint64_t *ticks);
/* pid's command name (/proc/PID/comm) in buf, or "?"; returns buf. */
const char *proc_comm(pid_t pid, char *buf, size_t len);
/* pid's effective uid and gid (/proc/PID/status): the owner of /proc/PID
 * is root for a process that dropped root itself (QEMU -runas), which is
 * not dumpable. 0 or -errno. */
int proc_ids(pid_t pid, uid_t *uid, gid_t *gid);
/* The process a thread tid belongs to (/proc/TID/status Tgid), -1 if
 * none: thread ids are unique on the host, where a command line is not. */
pid_t proc_tgid(pid_t tid);
/* Does pid have the file st (its st_dev and st_ino) open? Then a path
 * that led to st names the file pid uses, not one put in its place. */
bool proc_has_open(pid_t pid, const struct stat *st);
/* Does pid see path as we do (the same file at that path in its mount
 * namespace, through /proc/PID/root)? 1 yes; 0 no (absent there, or
 * another file); -errno when it cannot be told (our own stat failed,
 * /proc/PID/root cannot be entered, -ESRCH pid is gone). */
int proc_sees_path(pid_t pid, const char *path);
/* This boot of the host: /proc/sys/kernel/random/boot_id (a UUID) in buf,
 * or "" if unreadable; returns buf. */
const char *host_boot_id(char *buf, size_t len);

#endif
