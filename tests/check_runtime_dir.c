/* Private runtime directories: a fresh one is 0700 and never reused; a
 * parent that is a symlink, owned by another user, or writable by others
 * is refused; files and subdirectories are created exclusively; removal
 * does not follow symlinks. Each test works under a temporary directory
 * of its own. */
#include "procfs.h"
#include "runtime_dir.h"

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <stdbool.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

static char top[64], parent[128];

static void setup(void)
{
	snprintf(top, sizeof(top), "/tmp/check_runtime_dir.XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(top));
	snprintf(parent, sizeof(parent), "%s/remus", top);
}

static void teardown(void)
{
	runtime_dir_remove(top);
}

static mode_t mode_of(const char *path)
{
	struct stat st;

	ck_assert_int_eq(lstat(path, &st), 0);
	return st.st_mode & 07777;
}

START_TEST(test_fresh_dir_is_0700_and_parent_0755)
{
	char a[PATH_MAX], b[PATH_MAX];
	mode_t old = umask(0);

	ck_assert_int_eq(runtime_dir_make(parent, "replicator-1", a, sizeof(a)), 0);
	umask(old);
	ck_assert_int_eq(mode_of(parent), 0755);
	ck_assert_int_eq(mode_of(a), 0700);
	ck_assert_int_eq(strncmp(a, parent, strlen(parent)), 0);
	ck_assert_ptr_nonnull(strstr(a, "/replicator-1."));
	/* a second one is another directory, never the same one again */
	ck_assert_int_eq(runtime_dir_make(parent, "replicator-1", b, sizeof(b)), 0);
	ck_assert_str_ne(a, b);
}
END_TEST

START_TEST(test_symlink_parent_is_refused)
{
	char out[PATH_MAX];

	ck_assert_int_eq(symlink(top, parent), 0);
	ck_assert_int_eq(runtime_dir_make(parent, "r", out, sizeof(out)), -ELOOP);
}
END_TEST

START_TEST(test_parent_of_another_user_is_refused)
{
	char out[PATH_MAX];

	if (geteuid() != 0)
		return; /* only root can give it away */
	ck_assert_int_eq(mkdir(parent, 0755), 0);
	ck_assert_int_eq(chown(parent, 65534, 65534), 0);
	ck_assert_int_eq(runtime_dir_make(parent, "r", out, sizeof(out)), -EPERM);
}
END_TEST

START_TEST(test_parent_writable_by_others_is_refused_unless_sticky)
{
	char out[PATH_MAX];

	ck_assert_int_eq(mkdir(parent, 0700), 0);
	ck_assert_int_eq(chmod(parent, 0777), 0);
	ck_assert_int_eq(runtime_dir_make(parent, "r", out, sizeof(out)), -EPERM);
	ck_assert_int_eq(chmod(parent, 01777), 0);
	ck_assert_int_eq(runtime_dir_make(parent, "r", out, sizeof(out)), 0);
	ck_assert_int_eq(mode_of(out), 0700);
}
END_TEST

START_TEST(test_parent_that_is_a_file_is_refused)
{
	int fd = open(parent, O_CREAT | O_WRONLY, 0600);
	char out[PATH_MAX];

	ck_assert_int_ge(fd, 0);
	close(fd);
	ck_assert_int_eq(runtime_dir_make(parent, "r", out, sizeof(out)), -ENOTDIR);
}
END_TEST

START_TEST(test_existing_subdir_and_file_are_refused)
{
	char dir[PATH_MAX], sub[PATH_MAX], file[PATH_MAX];
	int fd;

	ck_assert_int_eq(runtime_dir_make(parent, "r", dir, sizeof(dir)), 0);
	ck_assert_int_eq(runtime_subdir_make(dir, "nbd", sub, sizeof(sub)), 0);
	ck_assert_int_eq(mode_of(sub), 0700);
	ck_assert_int_eq(runtime_subdir_make(dir, "nbd", sub, sizeof(sub)), -EEXIST);
	fd = runtime_file_create(dir, "devstate", O_RDWR, 0600, file, sizeof(file));
	ck_assert_int_ge(fd, 0);
	close(fd);
	ck_assert_int_eq(mode_of(file), 0600);
	ck_assert_int_eq(runtime_file_create(dir, "devstate", O_RDWR, 0600, file, sizeof(file)),
			 -EEXIST);
	/* a symlink planted there is not followed */
	unlink(file);
	ck_assert_int_eq(symlink("/nonexistent-target", file), 0);
	ck_assert_int_eq(runtime_file_create(dir, "devstate", O_RDWR, 0600, file, sizeof(file)),
			 -EEXIST);
	ck_assert_int_eq(access("/nonexistent-target", F_OK), -1);
}
END_TEST

START_TEST(test_remove_takes_the_tree_but_not_symlink_targets)
{
	char dir[PATH_MAX], sub[PATH_MAX], file[PATH_MAX], outside[PATH_MAX], link[PATH_MAX + 8];
	int fd;

	ck_assert_int_eq(runtime_dir_make(parent, "r", dir, sizeof(dir)), 0);
	ck_assert_int_eq(runtime_subdir_make(dir, "nbd", sub, sizeof(sub)), 0);
	fd = runtime_file_create(sub, "x", O_WRONLY, 0600, file, sizeof(file));
	ck_assert_int_ge(fd, 0);
	close(fd);
	fd = runtime_file_create(top, "keep", O_WRONLY, 0600, outside, sizeof(outside));
	ck_assert_int_ge(fd, 0);
	close(fd);
	snprintf(link, sizeof(link), "%s/link", dir);
	ck_assert_int_eq(symlink(top, link), 0);
	runtime_dir_remove(dir);
	ck_assert_int_eq(access(dir, F_OK), -1);
	ck_assert_int_eq(access(outside, F_OK), 0);
}
END_TEST

START_TEST(test_share_with_another_user)
{
	char dir[PATH_MAX];
	struct stat st;

	ck_assert_int_eq(runtime_dir_make(parent, "r", dir, sizeof(dir)), 0);
	ck_assert_int_eq(runtime_dir_share(dir, geteuid(), getegid()), 0);
	ck_assert_int_eq(mode_of(dir), 0700); /* QEMU runs as we do */
	if (geteuid() != 0)
		return;
	ck_assert_int_eq(runtime_dir_share(dir, 65534, 65534), 0);
	ck_assert_int_eq(stat(dir, &st), 0);
	ck_assert_int_eq(st.st_mode & 07777, 0710);
	ck_assert_int_eq(st.st_gid, 65534);
	ck_assert_int_eq(st.st_uid, 0);
}
END_TEST

START_TEST(test_parent_from_systemd)
{
	char buf[PATH_MAX];

	unsetenv("RUNTIME_DIRECTORY");
	ck_assert_str_eq(runtime_dir_parent(buf, sizeof(buf)), "/run/remus");
	setenv("RUNTIME_DIRECTORY", "/run/remus/vm1:/run/other", 1);
	ck_assert_str_eq(runtime_dir_parent(buf, sizeof(buf)), "/run/remus/vm1");
	unsetenv("RUNTIME_DIRECTORY");
}
END_TEST

/* In a new mount namespace, nothing mounted may reach the caller's: every
 * mount made private (where / is no mount point, as in a chroot, one by
 * one). */
static bool all_mounts_private(void)
{
	char line[4096], point[4096];
	FILE *f;
	bool ok = true;

	if (!mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL))
		return true;
	f = fopen("/proc/self/mountinfo", "r");
	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "%*s %*s %*s %*s %4095s", point) == 1)
			ok &= !mount(NULL, point, NULL, MS_PRIVATE, NULL);
	if (f)
		fclose(f);
	return f && ok;
}

/* A child in a mount namespace of its own, a tmpfs mounted on over_path
 * there; *pid once it is mounted, or false (we are not root, or no
 * namespace can be made here). */
static bool child_with_tmpfs_over(const char *over_path, pid_t *pid)
{
	int ready[2];
	char ok = 0;

	ck_assert_int_eq(pipe(ready), 0);
	*pid = fork();
	ck_assert_int_ge(*pid, 0);
	if (*pid == 0) {
		ok = !unshare(CLONE_NEWNS) && all_mounts_private() &&
		     !mount("tmpfs", over_path, "tmpfs", 0, "size=1m");
		if (write(ready[1], &ok, 1) != 1)
			_exit(1);
		pause();
		_exit(0);
	}
	close(ready[1]);
	ck_assert_int_eq(read(ready[0], &ok, 1), 1);
	close(ready[0]);
	return ok;
}

static void end_child(pid_t pid)
{
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
}

/* QEMU opens our runtime files by path: one in a mount namespace where
 * that path is another directory (a tmpfs over it) must be told from one
 * whose namespace differs elsewhere but shows our directory (as libvirt's
 * QEMU, with a /dev of its own): proc_sees_path, the replicator's check. */
START_TEST(test_a_process_in_another_mount_namespace)
{
	char dir[PATH_MAX], gone[PATH_MAX + 8], elsewhere[PATH_MAX];
	int hidden, shown;
	pid_t child;

	ck_assert_int_eq(runtime_dir_make(parent, "replicator-1", dir, sizeof(dir)), 0);
	ck_assert_int_eq(proc_sees_path(getpid(), dir), 1);
	snprintf(gone, sizeof(gone), "%s/gone", dir);
	ck_assert_int_eq(proc_sees_path(getpid(), gone), -ENOENT);
	if (geteuid() != 0)
		return; /* only root makes mount namespaces */
	ck_assert_msg(child_with_tmpfs_over(top, &child), "cannot make a mount namespace");
	hidden = proc_sees_path(child, dir);
	end_child(child);
	snprintf(elsewhere, sizeof(elsewhere), "%s/elsewhere", top);
	ck_assert_int_eq(mkdir(elsewhere, 0700), 0);
	ck_assert_msg(child_with_tmpfs_over(elsewhere, &child), "cannot make a mount namespace");
	shown = proc_sees_path(child, dir);
	end_child(child);
	ck_assert_int_eq(hidden, 0);
	ck_assert_int_eq(shown, 1);
	/* a process that is gone: cannot be told, not "does not see" */
	ck_assert_int_eq(proc_sees_path(child, dir), -ESRCH);
}
END_TEST

static Suite *runtime_dir_suite(void)
{
	Suite *s = suite_create("runtime_dir");

#define ADD(fn) do { TCase *tc = tcase_create(#fn); \
		tcase_add_checked_fixture(tc, setup, teardown); \
		tcase_add_test(tc, fn); suite_add_tcase(s, tc); } while (0)
	ADD(test_fresh_dir_is_0700_and_parent_0755);
	ADD(test_symlink_parent_is_refused);
	ADD(test_parent_of_another_user_is_refused);
	ADD(test_parent_writable_by_others_is_refused_unless_sticky);
	ADD(test_parent_that_is_a_file_is_refused);
	ADD(test_existing_subdir_and_file_are_refused);
	ADD(test_remove_takes_the_tree_but_not_symlink_targets);
	ADD(test_share_with_another_user);
	ADD(test_parent_from_systemd);
	ADD(test_a_process_in_another_mount_namespace);
#undef ADD
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(runtime_dir_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
