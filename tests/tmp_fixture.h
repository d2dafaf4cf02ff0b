/* A temporary directory per test for the replica suites, made and removed
 * by the runner process around each test (an unchecked fixture), so a
 * failing test, whose child exits at once, leaves nothing behind. A suite
 * says TMP_FIXTURE("check_NAME") once, uses g_tmp, and adds each test
 * with tmp_fixture_add(suite, tmp_setup, ...). */
#ifndef REMUS_TESTS_TMP_FIXTURE_H
#define REMUS_TESTS_TMP_FIXTURE_H

#include <check.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static char g_tmp[64];

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	return remove(path);
}

static void tmp_setup_named(const char *template)
{
	snprintf(g_tmp, sizeof(g_tmp), "%s", template);
	if (!mkdtemp(g_tmp)) {
		perror("mkdtemp");
		abort();
	}
}

static void tmp_teardown(void)
{
	nftw(g_tmp, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

/* One test in a case of its own, with the fixture around it. */
static void tmp_fixture_add(Suite *s, SFun setup, const char *name, const TTest *t,
			    double timeout)
{
	TCase *tc = tcase_create(name);

	tcase_set_timeout(tc, timeout);
	tcase_add_unchecked_fixture(tc, setup, tmp_teardown);
	tcase_add_test(tc, t);
	suite_add_tcase(s, tc);
}

#define TMP_FIXTURE(name) \
	static void tmp_setup(void) { tmp_setup_named("/tmp/" name ".XXXXXX"); }

#endif
