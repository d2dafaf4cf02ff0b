/* Where a daemon keeps its runtime files (the NBD sockets QEMU mirrors to,
 * the device state QEMU saves): a directory of its own, made fresh with
 * mode 0700 under /run/remus (or systemd's $RUNTIME_DIRECTORY), removed at
 * exit. Never a fixed or guessable name in a directory others can write:
 * a local user who made /tmp/remus-PID.nbd first was handed the guest's
 * disk (issue 14).
 *
 * The parent is made 0755 if missing, and refused when it is a symlink,
 * not a directory, owned by a user other than root or us, or writable by
 * others without the sticky bit. A directory or file that exists already
 * is never reused: everything here is created exclusively. */
#ifndef REMUS_RUNTIME_DIR_H
#define REMUS_RUNTIME_DIR_H

#include <stddef.h>
#include <sys/types.h>

#define RUNTIME_DIR_DEFAULT "/run/remus"

/* $RUNTIME_DIRECTORY (its first entry) when set, else /run/remus. */
const char *runtime_dir_parent(char *buf, size_t len);

/* Check (or make) parent, then make PARENT/PREFIX.XXXXXX, mode 0700; its
 * path into out. 0 or -errno (-ELOOP: a symlink, -EPERM: wrong owner or
 * mode, -ENOTDIR, -ENAMETOOLONG). */
int runtime_dir_make(const char *parent, const char *prefix, char *out, size_t len);

/* Make DIR/NAME, mode 0700; -EEXIST when something is there already. */
int runtime_subdir_make(const char *dir, const char *name, char *out, size_t len);

/* Create DIR/NAME with O_CREAT|O_EXCL|O_NOFOLLOW|O_CLOEXEC and flags
 * (O_RDWR ...), mode; its fd, or -errno (-EEXIST when it exists). */
int runtime_file_create(const char *dir, const char *name, int flags, mode_t mode,
			char *out, size_t len);

/* Let a process of uid/gid (QEMU's) through dir to the files in it it was
 * given: nothing when it runs as we do; else dir's group becomes gid and
 * its mode 0710 (no listing, nothing to create). 0 or -errno. */
int runtime_dir_share(const char *dir, uid_t uid, gid_t gid);

/* Remove dir and everything in it (symlinks are removed, not followed). */
void runtime_dir_remove(const char *dir);

#endif
