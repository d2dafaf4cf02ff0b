/* common/virt.c: "does the pair's domain run on this host", which the
 * agent of a pair whose roles move asks from its event loop. Against
 * libvirt's own in-process test driver (test:///default, which runs a
 * domain called "test"), and against a socket that accepts and never
 * answers: a libvirtd that hangs must cost the loop the timeout, not the
 * agent's life. */
#include "virt.h"
#include "tmp_fixture.h"

#include <errno.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

TMP_FIXTURE("check_virt")

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

START_TEST(test_domain_runs_or_not)
{
	ck_assert_int_eq(virt_domain_active("test:///default", "test"), 1);
	ck_assert_int_eq(virt_domain_active("test:///default", "no-such-domain"), 0);
	ck_assert_int_eq(virt_domain_active_within("test:///default", "test", 5000), 1);
	ck_assert_int_eq(virt_domain_active_within("test:///default", "no-such-domain", 5000), 0);
	/* no libvirt there at all: cannot tell, which is neither yes nor no */
	ck_assert_int_lt(virt_domain_active("qemu+unix:///system?socket=/nonexistent/sock", "d"), 0);
}
END_TEST

/* A unix socket that takes connections into its backlog and never reads. */
static int mute_listener(char *uri, size_t len)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_STREAM, 0);

	ck_assert_int_ge(fd, 0);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/sock", g_tmp);
	ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	ck_assert_int_eq(listen(fd, 8), 0);
	snprintf(uri, len, "qemu+unix:///system?socket=%s", sa.sun_path);
	return fd;
}

START_TEST(test_hung_libvirtd_costs_the_timeout)
{
	char uri[200];
	int fd = mute_listener(uri, sizeof(uri));
	double t0 = now_ms(), took;

	ck_assert_int_eq(virt_domain_active_within(uri, "d", 300), -ETIMEDOUT);
	took = now_ms() - t0;
	ck_assert_msg(took >= 250 && took < 2000, "waited %.0f ms for 300", took);
	/* asked again while the first question still hangs: no second thread,
	 * the same wait */
	t0 = now_ms();
	ck_assert_int_eq(virt_domain_active_within(uri, "d", 300), -ETIMEDOUT);
	ck_assert_double_lt(now_ms() - t0, 2000);
	/* libvirtd "dies": the hung question ends; its late answer is not
	 * taken for the next question's, which gets its own */
	close(fd);
	for (int i = 0; i < 50; i++) {
		int rc = virt_domain_active_within("test:///default", "test", 1000);

		if (rc == 1)
			return;
		ck_assert_int_lt(rc, 0); /* the old question's end, at most */
		usleep(100 * 1000);
	}
	ck_abort_msg("the next question never got its own answer");
}
END_TEST

int main(void)
{
	Suite *s = suite_create("virt");
	SRunner *sr;
	int failed;

	tmp_fixture_add(s, tmp_setup, "runs_or_not", test_domain_runs_or_not, 30);
	tmp_fixture_add(s, tmp_setup, "hung_libvirtd", test_hung_libvirtd_costs_the_timeout, 30);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
