/* sd_notify wrapper: what a service manager listening on NOTIFY_SOCKET
 * receives, read here from a unix datagram socket of our own. */
#include "notify.h"

#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static char sock_path[sizeof(((struct sockaddr_un *)0)->sun_path)];

/* A datagram socket in a fresh temporary directory, named in
 * NOTIFY_SOCKET. */
static int listen_notify(void)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	char dir[] = "/tmp/check_notify.XXXXXX";
	struct timeval tv = { .tv_sec = 2 };
	int fd;

	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(sock_path, sizeof(sock_path), "%s/notify", dir);
	strcpy(sa.sun_path, sock_path);
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	ck_assert_int_eq(setenv("NOTIFY_SOCKET", sock_path, 1), 0);
	return fd;
}

static void unlisten(int fd)
{
	char dir[sizeof(sock_path)];

	close(fd);
	unlink(sock_path);
	snprintf(dir, sizeof(dir), "%s", sock_path);
	*strrchr(dir, '/') = 0;
	rmdir(dir);
}

/* The next datagram, or "" if none arrives soon. */
static const char *next_msg(int fd, int wait_ms)
{
	static char buf[512];
	struct timeval tv = { .tv_sec = wait_ms / 1000, .tv_usec = (wait_ms % 1000) * 1000 };
	ssize_t n;

	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	n = recv(fd, buf, sizeof(buf) - 1, 0);
	buf[n > 0 ? n : 0] = 0;
	return buf;
}

START_TEST(test_ready_carries_ready_and_status)
{
	int fd = listen_notify();

	notify_ready("listening on 127.0.0.1:7700");
	ck_assert_str_eq(next_msg(fd, 2000), "READY=1\nSTATUS=listening on 127.0.0.1:7700");
	notify_ready(NULL);
	ck_assert_str_eq(next_msg(fd, 2000), "READY=1");
	unlisten(fd);
}
END_TEST

START_TEST(test_status_sent_only_when_it_changes)
{
	int fd = listen_notify();

	notify_status("VM %s: %s", "vm1", "syncing");
	ck_assert_str_eq(next_msg(fd, 2000), "STATUS=VM vm1: syncing");
	notify_status("VM %s: %s", "vm1", "syncing");
	ck_assert_str_eq(next_msg(fd, 200), "");
	notify_status("VM vm1: protected, epoch %d committed", 12);
	ck_assert_str_eq(next_msg(fd, 2000), "STATUS=VM vm1: protected, epoch 12 committed");
	notify_stopping("stopping");
	ck_assert_str_eq(next_msg(fd, 2000), "STOPPING=1\nSTATUS=stopping");
	/* After STOPPING's status, the same text again is no news. */
	notify_status("stopping");
	ck_assert_str_eq(next_msg(fd, 200), "");
	unlisten(fd);
}
END_TEST

/* A VM named with a newline must not add lines (READY=1, MAINPID=...) of
 * its own to what the service manager reads. */
START_TEST(test_status_control_characters_are_replaced)
{
	int fd = listen_notify();

	notify_status("VM %s: protected", "vm1\nREADY=1");
	ck_assert_str_eq(next_msg(fd, 2000), "STATUS=VM vm1?READY=1: protected");
	notify_ready("VM x\r\nMAINPID=1");
	ck_assert_str_eq(next_msg(fd, 2000), "READY=1\nSTATUS=VM x??MAINPID=1");
	unlisten(fd);
}
END_TEST

START_TEST(test_without_notify_socket_nothing_happens)
{
	unsetenv("NOTIFY_SOCKET");
	notify_ready("x");
	notify_status("y %d", 1);
	notify_stopping(NULL);
	/* Nothing to observe but that it neither crashed nor leaked. */
}
END_TEST

START_TEST(test_unreachable_notify_socket_is_harmless)
{
	ck_assert_int_eq(setenv("NOTIFY_SOCKET", "/nonexistent/remus-notify", 1), 0);
	notify_ready("x");
	notify_status("z");
}
END_TEST

static Suite *notify_suite(void)
{
	Suite *s = suite_create("notify");
	TCase *tc = tcase_create("notify");

	tcase_set_timeout(tc, 10);
	tcase_add_test(tc, test_ready_carries_ready_and_status);
	tcase_add_test(tc, test_status_sent_only_when_it_changes);
	tcase_add_test(tc, test_status_control_characters_are_replaced);
	tcase_add_test(tc, test_without_notify_socket_nothing_happens);
	tcase_add_test(tc, test_unreachable_notify_socket_is_harmless);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(notify_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
