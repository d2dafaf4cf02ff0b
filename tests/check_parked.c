/* DIR/parked.json (common/parked.h): what a replicator that parked its VM
 * leaves for the agent it becomes. Written whole or not at all; anything
 * unreadable is refused and removed, never half-believed (a wrong pid
 * would have the agent resume or kill the wrong process). */
#include "parked.h"
#include "tmp_fixture.h"

#include <errno.h>
#include <stdbool.h>
#include <fcntl.h>
#include <unistd.h>

TMP_FIXTURE("check_parked")

static void write_text(const char *name, const char *text)
{
	char path[256];
	int fd;

	snprintf(path, sizeof(path), "%s/%s", g_tmp, name);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
}

static bool exists(const char *name)
{
	char path[256];

	snprintf(path, sizeof(path), "%s/%s", g_tmp, name);
	return access(path, F_OK) == 0;
}

START_TEST(test_round_trip_and_forget)
{
	struct parked_vm p = { .pid = 4242, .starttime = 98765, .generation = 7,
			       .epoch = 123456789012ull }, q;

	snprintf(p.qmp, sizeof(p.qmp), "/run/vm1 \"quoted\".qmp");
	ck_assert_int_eq(parked_load(g_tmp, &q), -ENOENT);
	ck_assert_int_eq(parked_save(g_tmp, &p), 0);
	ck_assert(!exists("parked.json.new"));
	ck_assert_int_eq(parked_load(g_tmp, &q), 0);
	ck_assert_int_eq(q.pid, 4242);
	ck_assert_uint_eq(q.starttime, 98765);
	ck_assert_str_eq(q.qmp, p.qmp);
	ck_assert_uint_eq(q.generation, 7);
	ck_assert_uint_eq(q.epoch, 123456789012ull);
	parked_forget(g_tmp);
	ck_assert(!exists("parked.json"));
	ck_assert_int_eq(parked_load(g_tmp, &q), -ENOENT);
}
END_TEST

START_TEST(test_bad_files_refused_and_removed)
{
	static const char *const bad[] = {
		"", "{", "[]",
		"{\"pid\":1,\"starttime\":5,\"qmp\":\"/q\",\"generation\":1,\"epoch\":1}",
		/* no starttime: a pid alone may be another process by now */
		"{\"pid\":100,\"qmp\":\"/q\",\"generation\":1,\"epoch\":1}",
		"{\"pid\":-5,\"starttime\":5,\"qmp\":\"/q\",\"generation\":1,\"epoch\":1}",
		"{\"pid\":99999999999,\"starttime\":5,\"qmp\":\"/q\",\"generation\":1,\"epoch\":1}",
		"{\"pid\":\"100\",\"starttime\":5,\"qmp\":\"/q\",\"generation\":1,\"epoch\":1}",
		"{\"pid\":100,\"starttime\":5,\"qmp\":7,\"generation\":1,\"epoch\":1}",
		"{\"pid\":100,\"starttime\":5,\"qmp\":\"/q\",\"epoch\":1}",
		"{\"pid\":100,\"starttime\":5,\"qmp\":\"/q\",\"generation\":1,\"epoch\":\"1\"}",
	};
	struct parked_vm q;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		write_text("parked.json", bad[i]);
		ck_assert_msg(parked_load(g_tmp, &q) == -EINVAL, "accepted: %s", bad[i]);
		ck_assert_msg(!exists("parked.json"), "kept: %s", bad[i]);
	}
}
END_TEST

int main(void)
{
	Suite *s = suite_create("parked");
	SRunner *sr;
	int failed;

	tmp_fixture_add(s, tmp_setup, "round_trip", test_round_trip_and_forget, 10);
	tmp_fixture_add(s, tmp_setup, "bad_files", test_bad_files_refused_and_removed, 10);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
