/* The daemons' control socket (common/control_socket.c), as remusctl meets
 * it: its mode, the peer check (root; the members of the control group,
 * by their primary or a supplementary group; anyone else refused with the
 * exact line remusctl prints), a command handed to the daemon, a
 * connection the daemon keeps, and the socket's removal.
 *
 * The clients that are not root are forked children that drop to uid
 * 65534 with the groups a test gives them: those tests need root, and say
 * so when skipped. */
#include "control_socket.h"

#include <check.h>
#include <errno.h>
#include <ev.h>
#include <grp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define NOBODY 65534
#define TEST_GID 4242 /* a control group; it need not exist for the check */

static char dir[64], path[128];
static struct ev_loop *loop;
static struct control_socket cs;
static int handled;        /* commands the handler saw */
static char last_cmd[CONTROL_MAX_COMMAND + 1];
static int kept_fd = -1;   /* a connection the handler kept */

static char *handler(void *data, int fd, const char *cmd, bool *keep)
{
	char *text;

	handled++;
	snprintf(last_cmd, sizeof(last_cmd), "%s", cmd);
	if (!strcmp(cmd, "keep")) {
		*keep = true;
		kept_fd = fd;
		return NULL;
	}
	if (asprintf(&text, "{\"ok\":true,\"data\":\"%s\"}", (const char *)data) < 0)
		return NULL;
	return text;
}

static void setup(void)
{
	snprintf(dir, sizeof(dir), "/tmp/check-control.XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(dir));
	ck_assert_int_eq(chmod(dir, 0755), 0); /* nobody must reach the socket */
	snprintf(path, sizeof(path), "%s/test.ctl", dir);
	loop = ev_loop_new(EVFLAG_AUTO);
	control_socket_init(&cs, "test", NULL, NULL, 0, handler, NULL); /* nothing open */
	handled = 0;
	last_cmd[0] = 0;
	kept_fd = -1;
}

static void teardown(void)
{
	control_socket_close(&cs);
	ev_loop_destroy(loop);
	unlink(path);
	rmdir(dir);
}

static void open_socket(const char *group, gid_t gid)
{
	control_socket_init(&cs, "test", path, group, gid, handler, "d");
	ck_assert_int_eq(control_socket_open(&cs, loop), 0);
}

/* Ask cmd as uid/gid with groups (uid 0: as we are), the daemon side
 * served by control_socket_serve_pending once the client has written its
 * line. The reply, or "connect: ERRNO-NAME". */
static char *ask_as(uid_t uid, gid_t gid, const gid_t *groups, size_t ngroups, const char *cmd)
{
	int ready[2], out[2];
	static char reply[1024];
	size_t len = 0;
	ssize_t n;
	char c;
	pid_t pid;

	ck_assert_int_eq(pipe(ready), 0);
	ck_assert_int_eq(pipe(out), 0);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		struct sockaddr_un sa = { .sun_family = AF_UNIX };
		struct timeval tv = { .tv_sec = 5 };
		char buf[1024];
		int fd;

		close(ready[0]);
		close(out[0]);
		if (uid && (setgroups(ngroups, groups) || setgid(gid) || setuid(uid)))
			_exit(3);
		strcpy(sa.sun_path, path);
		fd = socket(AF_UNIX, SOCK_STREAM, 0);
		if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
			dprintf(out[1], "connect: %s", errno == EACCES ? "EACCES" : strerror(errno));
			(void)!write(ready[1], "n", 1);
			_exit(0);
		}
		setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
		dprintf(fd, "%s\n", cmd);
		(void)!write(ready[1], "y", 1);
		while ((n = recv(fd, buf, sizeof(buf), 0)) > 0)
			(void)!write(out[1], buf, (size_t)n);
		_exit(0);
	}
	close(ready[1]);
	close(out[1]);
	ck_assert_int_eq(read(ready[0], &c, 1), 1);
	if (c == 'y')
		control_socket_serve_pending(&cs);
	while (len < sizeof(reply) - 1 && (n = read(out[0], reply + len, sizeof(reply) - 1 - len)) > 0)
		len += (size_t)n;
	reply[len] = 0;
	close(ready[0]);
	close(out[0]);
	ck_assert_int_eq(waitpid(pid, NULL, 0), pid);
	return reply;
}

static bool root(void)
{
	if (geteuid() == 0)
		return true;
	fprintf(stderr, "check_control_socket: not root: a test of other users skipped\n");
	return false;
}

START_TEST(test_mode_0600_without_group)
{
	struct stat st;

	open_socket(NULL, (gid_t)-1);
	ck_assert_int_eq(stat(path, &st), 0);
	ck_assert(S_ISSOCK(st.st_mode));
	ck_assert_uint_eq(st.st_mode & 07777, 0600);
	ck_assert_uint_eq(st.st_uid, geteuid());
}
END_TEST

START_TEST(test_mode_0660_owned_by_group)
{
	struct stat st;

	if (!root())
		return;
	open_socket("remus-test", TEST_GID);
	ck_assert_int_eq(stat(path, &st), 0);
	ck_assert_uint_eq(st.st_mode & 07777, 0660);
	ck_assert_uint_eq(st.st_gid, TEST_GID);
}
END_TEST

START_TEST(test_root_is_served)
{
	open_socket(NULL, (gid_t)-1);
	ck_assert_str_eq(ask_as(0, 0, NULL, 0, "status"), "{\"ok\":true,\"data\":\"d\"}\n");
	ck_assert_int_eq(handled, 1);
	ck_assert_str_eq(last_cmd, "status");
	/* the line ends at \r\n too, and what follows it is not read */
	ck_assert_str_eq(ask_as(0, 0, NULL, 0, "reset-stats\r\nstatus"),
			 "{\"ok\":true,\"data\":\"d\"}\n");
	ck_assert_str_eq(last_cmd, "reset-stats");
}
END_TEST

/* The mode stops a stranger at connect(): remusctl says "permission
 * denied on PATH". */
START_TEST(test_stranger_stopped_by_the_mode)
{
	if (!root())
		return;
	open_socket(NULL, (gid_t)-1);
	ck_assert_str_eq(ask_as(NOBODY, NOBODY, NULL, 0, "status"), "connect: EACCES");
	ck_assert_int_eq(handled, 0);
}
END_TEST

/* A socket opened wider by mistake: the peer check refuses, with the line
 * remusctl shows as "refused by the DAEMON: permission denied: ..." (and
 * tests/integration/test_local_user.sh finds). */
START_TEST(test_stranger_refused_by_the_peer_check)
{
	if (!root())
		return;
	open_socket(NULL, (gid_t)-1);
	ck_assert_int_eq(chmod(path, 0666), 0);
	ck_assert_str_eq(ask_as(NOBODY, NOBODY, NULL, 0, "pause"),
			 "{\"ok\":false,\"refused\":true,\"daemon\":\"test\",\"error\":\"permission "
			 "denied: uid 65534 is not root\"}\n");
	ck_assert_int_eq(handled, 0);
}
END_TEST

START_TEST(test_group_member_by_primary_group)
{
	if (!root())
		return;
	open_socket("remus-test", TEST_GID);
	ck_assert_str_eq(ask_as(NOBODY, TEST_GID, NULL, 0, "status"),
			 "{\"ok\":true,\"data\":\"d\"}\n");
	ck_assert_int_eq(handled, 1);
}
END_TEST

START_TEST(test_group_member_by_supplementary_group)
{
	const gid_t groups[] = { 100, TEST_GID };

	if (!root())
		return;
	open_socket("remus-test", TEST_GID);
	ck_assert_str_eq(ask_as(NOBODY, NOBODY, groups, 2, "status"),
			 "{\"ok\":true,\"data\":\"d\"}\n");
	ck_assert_int_eq(handled, 1);
}
END_TEST

START_TEST(test_non_member_refused)
{
	const gid_t groups[] = { 100 };

	if (!root())
		return;
	open_socket("remus-test", TEST_GID);
	ck_assert_int_eq(chmod(path, 0666), 0);
	ck_assert_str_eq(ask_as(NOBODY, NOBODY, groups, 1, "pause"),
			 "{\"ok\":false,\"refused\":true,\"daemon\":\"test\",\"error\":\"permission "
			 "denied: uid 65534 is not root nor in group remus-test\"}\n");
	ck_assert_int_eq(handled, 0);
}
END_TEST

START_TEST(test_refusal_of_an_unknown_peer)
{
	char *text;

	control_socket_init(&cs, "agent", path, NULL, 0, handler, NULL);
	ck_assert_int_eq(cs.gid, (gid_t)-1); /* no group, no gid */
	text = control_refusal(&cs, (uid_t)-1);
	ck_assert_str_eq(text, "{\"ok\":false,\"refused\":true,\"daemon\":\"agent\",\"error\":"
			 "\"permission denied: cannot tell who asks\"}");
	free(text);
}
END_TEST

/* The replicator's failover answers later, on a connection it keeps. */
/* In a forked client: a connection to the socket, or exit 1. */
static int child_connect(void)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);

	strcpy(sa.sun_path, path);
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		_exit(1);
	return fd;
}

/* A client that trickles its line a byte at a time holds the daemon's
 * loop 200 ms at most, all bytes together (not 200 ms per byte), and its
 * unfinished line is not taken for a command. */
START_TEST(test_a_trickling_client_is_cut_short)
{
	struct timespec t0, t1;
	int ready[2];
	double ms;
	char c;
	pid_t pid;

	open_socket(NULL, (gid_t)-1);
	ck_assert_int_eq(pipe(ready), 0);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		int fd = child_connect();

		(void)!write(ready[1], "y", 1);
		for (int i = 0; i < 60; i++) { /* 3 s of one byte per 50 ms */
			(void)!send(fd, "s", 1, MSG_NOSIGNAL);
			usleep(50000);
		}
		_exit(0);
	}
	close(ready[1]);
	ck_assert_int_eq(read(ready[0], &c, 1), 1);
	clock_gettime(CLOCK_MONOTONIC, &t0);
	control_socket_serve_pending(&cs);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	ms = (double)(t1.tv_sec - t0.tv_sec) * 1e3 + (double)(t1.tv_nsec - t0.tv_nsec) / 1e6;
	ck_assert_msg(ms < 400, "the loop was held %.0f ms", ms);
	ck_assert_int_eq(handled, 0);
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	close(ready[0]);
}
END_TEST

START_TEST(test_handler_keeps_the_connection)
{
	int ready[2], out[2];
	char buf[256] = "";
	ssize_t n;
	char c;
	pid_t pid;

	open_socket(NULL, (gid_t)-1);
	ck_assert_int_eq(pipe(ready), 0);
	ck_assert_int_eq(pipe(out), 0);
	pid = fork();
	if (pid == 0) {
		int fd = child_connect();

		dprintf(fd, "keep\n");
		(void)!write(ready[1], "y", 1);
		n = recv(fd, buf, sizeof(buf), MSG_WAITALL);
		(void)!write(out[1], buf, n > 0 ? (size_t)n : 0);
		_exit(0);
	}
	close(ready[1]);
	close(out[1]);
	ck_assert_int_eq(read(ready[0], &c, 1), 1);
	control_socket_serve_pending(&cs);
	ck_assert_int_ge(kept_fd, 0);
	control_reply(kept_fd, "{\"ok\":true,\"outcome\":\"done\"}");
	close(kept_fd);
	n = read(out[0], buf, sizeof(buf) - 1);
	ck_assert_int_gt(n, 0);
	buf[n] = 0;
	ck_assert_str_eq(buf, "{\"ok\":true,\"outcome\":\"done\"}\n");
	waitpid(pid, NULL, 0);
	close(ready[0]);
	close(out[0]);
}
END_TEST

START_TEST(test_replaces_a_stale_socket_and_removes_its_own)
{
	struct stat st;
	FILE *f = fopen(path, "w");

	ck_assert_ptr_nonnull(f);
	fclose(f);
	open_socket(NULL, (gid_t)-1);
	ck_assert_int_eq(stat(path, &st), 0);
	ck_assert(S_ISSOCK(st.st_mode));
	control_socket_close(&cs);
	ck_assert_int_eq(cs.fd, -1);
	ck_assert_int_eq(stat(path, &st), -1);
	control_socket_close(&cs); /* twice is harmless */
	control_socket_serve_pending(&cs); /* closed: nothing to serve */
}
END_TEST

START_TEST(test_no_path_no_socket_and_too_long_a_path)
{
	char longpath[200];

	control_socket_init(&cs, "agent", NULL, NULL, 0, handler, NULL);
	ck_assert_int_eq(control_socket_open(&cs, loop), 0);
	ck_assert_int_eq(cs.fd, -1);
	memset(longpath, 'a', sizeof(longpath) - 1);
	longpath[0] = '/';
	longpath[sizeof(longpath) - 1] = 0;
	control_socket_init(&cs, "agent", longpath, NULL, 0, handler, NULL);
	ck_assert_int_eq(control_socket_open(&cs, loop), -ENAMETOOLONG);
	ck_assert_int_eq(cs.fd, -1);
}
END_TEST

START_TEST(test_group_resolved_at_start)
{
	gid_t gid = 7;

	ck_assert_int_eq(control_group_resolve("remus-agent", NULL, NULL, &gid), 0);
	ck_assert_int_eq(gid, (gid_t)-1);
	ck_assert_int_eq(control_group_resolve("remus-agent", NULL, "root", &gid), -1);
	ck_assert_int_eq(control_group_resolve("remus-agent", "/run/x", "no-such-group-remus",
					       &gid), -1);
	ck_assert_int_eq(control_group_resolve("remus-agent", "/run/x", "root", &gid), 0);
	ck_assert_int_eq(gid, 0);
}
END_TEST

static Suite *control_socket_suite(void)
{
	Suite *s = suite_create("control_socket");
	TCase *tc = tcase_create("control_socket");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_mode_0600_without_group);
	tcase_add_test(tc, test_mode_0660_owned_by_group);
	tcase_add_test(tc, test_root_is_served);
	tcase_add_test(tc, test_stranger_stopped_by_the_mode);
	tcase_add_test(tc, test_stranger_refused_by_the_peer_check);
	tcase_add_test(tc, test_group_member_by_primary_group);
	tcase_add_test(tc, test_group_member_by_supplementary_group);
	tcase_add_test(tc, test_non_member_refused);
	tcase_add_test(tc, test_refusal_of_an_unknown_peer);
	tcase_add_test(tc, test_a_trickling_client_is_cut_short);
	tcase_add_test(tc, test_handler_keeps_the_connection);
	tcase_add_test(tc, test_replaces_a_stale_socket_and_removes_its_own);
	tcase_add_test(tc, test_no_path_no_socket_and_too_long_a_path);
	tcase_add_test(tc, test_group_resolved_at_start);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(control_socket_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
