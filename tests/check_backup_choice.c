/* Which host a replicator protects the VM to (replicator/backup_choice.c):
 * with a spare, the first other host that answers; but an agent that has
 * committed a checkpoint of ours is the only one asked until it can no
 * longer take over, also across a restart of the replicator (its record
 * in the state dir). The end-to-end check, three hosts failing over in
 * turn, is tests/integration/test_spare.sh. */
#include "../replicator/backup_choice.h"
#include "../common/pair_role.h"
#include "tmp_fixture.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

TMP_FIXTURE("check_backup_choice")

#define HOLD_MS 4000u

static char g_record[128];

/* A file of three hosts, a (self), b and c; self's state dir is g_tmp. */
static struct pair_config g_pc;

static void three_hosts(void)
{
	static const char *names[] = { "a", "b", "c" };
	static const char *addrs[] = { "127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003" };

	pair_config_init(&g_pc);
	for (int i = 0; i < 3; i++) {
		g_pc.hosts[i].name = strdup(names[i]);
		g_pc.hosts[i].address = strdup(addrs[i]);
		g_pc.hosts[i].state_dir = strdup(g_tmp);
	}
	g_pc.nhosts = 3;
	snprintf(g_record, sizeof(g_record), "%s/%s", g_tmp, BACKUP_HOST_FILE);
}

static void init(struct backup_choice *c, double now)
{
	char err[200] = "";

	ck_assert_int_eq(backup_choice_init(c, &g_pc, &g_pc.hosts[0], now, err, sizeof(err)), 0);
	ck_assert_int_eq(c->n, 2);
}

/* Where the next attempt goes, by host name. */
static const char *pick(struct backup_choice *c, double now)
{
	struct netaddr a;

	ck_assert(backup_choice_pick(c, now, &a));
	if (!strcmp(a.text, "127.0.0.1:7002"))
		return "b";
	if (!strcmp(a.text, "127.0.0.1:7003"))
		return "c";
	ck_abort_msg("picked %s, which is neither other host", a.text);
	return NULL;
}

static void write_record(const char *text)
{
	FILE *f = fopen(g_record, "w");

	ck_assert_ptr_nonnull(f);
	fputs(text, f);
	fclose(f);
}

START_TEST(test_the_first_host_that_answers_until_one_commits)
{
	struct backup_choice c;

	three_hosts();
	init(&c, 100);
	ck_assert_str_eq(pick(&c, 100), "b");
	backup_choice_failed(&c);           /* b is down: the spare next */
	ck_assert_str_eq(pick(&c, 101), "c");
	backup_choice_failed(&c);           /* and round again */
	ck_assert_str_eq(pick(&c, 102), "b");
	backup_choice_failed(&c);
	ck_assert_str_eq(pick(&c, 103), "c");
	/* c took a session, which broke before its first commit: c cannot
	 * take over, so b is asked next */
	backup_choice_link_lost(&c, true, 103.5);
	ck_assert_str_eq(pick(&c, 104), "b");
	ck_assert_ptr_null(backup_choice_bound(&c));
	ck_assert_int_ne(access(g_record, F_OK), 0);
	pair_config_free(&g_pc);
}
END_TEST

START_TEST(test_a_host_that_committed_is_kept_until_its_window_passed)
{
	struct backup_choice c;

	three_hosts();
	init(&c, 100);
	backup_choice_failed(&c);
	ck_assert_str_eq(pick(&c, 101), "c");
	backup_choice_committed(&c, HOLD_MS);
	ck_assert_str_eq(backup_choice_bound(&c), "c");
	ck_assert_int_eq(access(g_record, F_OK), 0);
	/* the link breaks without a GOODBYE: c may take over until 4 s after
	 * the loss, and nobody else is asked meanwhile */
	backup_choice_link_lost(&c, true, 110);
	for (double t = 110; t < 114; t += 0.5) {
		backup_choice_failed(&c);
		ck_assert_str_eq(pick(&c, t), "c");
	}
	ck_assert_str_eq(backup_choice_bound(&c), "c");
	/* its window passed and the VM still runs here: c did not fence us */
	ck_assert_str_eq(pick(&c, 114.01), "c");
	ck_assert_ptr_null(backup_choice_bound(&c));
	ck_assert_int_ne(access(g_record, F_OK), 0);
	backup_choice_failed(&c);
	ck_assert_str_eq(pick(&c, 115), "b");
	pair_config_free(&g_pc);
}
END_TEST

START_TEST(test_a_goodbye_releases_at_once_and_a_new_session_keeps_the_host)
{
	struct backup_choice c;

	three_hosts();
	init(&c, 100);
	backup_choice_committed(&c, HOLD_MS);
	ck_assert_str_eq(backup_choice_bound(&c), "b");
	/* dropped on purpose (a resync), GOODBYE acknowledged */
	backup_choice_link_lost(&c, false, 120);
	ck_assert_ptr_null(backup_choice_bound(&c));
	ck_assert_int_ne(access(g_record, F_OK), 0);
	/* the resync goes to the same host */
	ck_assert_str_eq(pick(&c, 120.1), "b");
	/* a session that committed and then broke, then one that did not
	 * commit: the window runs from the last loss */
	backup_choice_committed(&c, HOLD_MS);
	backup_choice_link_lost(&c, true, 130);
	backup_choice_link_lost(&c, false, 133);
	ck_assert_str_eq(pick(&c, 136), "b");
	ck_assert_str_eq(backup_choice_bound(&c), "b");
	ck_assert_str_eq(pick(&c, 137.5), "b");
	ck_assert_ptr_null(backup_choice_bound(&c));
	pair_config_free(&g_pc);
}
END_TEST

START_TEST(test_a_restarted_replicator_keeps_the_recorded_host_for_its_window)
{
	struct backup_choice c, again;

	three_hosts();
	init(&c, 100);
	backup_choice_failed(&c);
	backup_choice_committed(&c, HOLD_MS); /* c, recorded */
	/* the process dies; the next one starts at 200 and knows nothing
	 * of when c last heard from the old one: its window from now */
	init(&again, 200);
	ck_assert_str_eq(backup_choice_bound(&again), "c");
	backup_choice_failed(&again);
	ck_assert_str_eq(pick(&again, 203.9), "c");
	ck_assert_str_eq(pick(&again, 204.1), "c");
	ck_assert_ptr_null(backup_choice_bound(&again));
	backup_choice_failed(&again);
	ck_assert_str_eq(pick(&again, 205), "b");
	pair_config_free(&g_pc);
}
END_TEST

START_TEST(test_a_record_that_names_no_other_host_binds_nothing)
{
	static const char *bad[] = {
		"{\"host\":\"a\",\"hold_ms\":4000}",    /* ourselves */
		"{\"host\":\"zeta\",\"hold_ms\":4000}", /* not in the file */
		"{\"host\":\"b\",\"hold_ms\":-1}",
		"{\"host\":\"b\"}",
		"{\"host\":7,\"hold_ms\":4000}",
		"{\"host\":\"b\",\"hold_ms\":4000",      /* cut */
		"",
	};
	struct backup_choice c;

	three_hosts();
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		write_record(bad[i]);
		init(&c, 100);
		ck_assert_msg(!backup_choice_bound(&c), "bound by '%s'", bad[i]);
		ck_assert_str_eq(pick(&c, 100), "b");
	}
	write_record("{\"host\":\"c\",\"hold_ms\":1000}");
	init(&c, 100);
	ck_assert_str_eq(backup_choice_bound(&c), "c");
	ck_assert_str_eq(pick(&c, 100), "c");
	pair_config_free(&g_pc);
}
END_TEST

/* --backup, or no [host] sections: one fixed backup, nothing recorded. */
START_TEST(test_without_hosts_nothing_is_chosen)
{
	struct backup_choice c;
	struct netaddr a = { .text = "fixed" };
	char err[200] = "";

	three_hosts();
	ck_assert_int_eq(backup_choice_init(&c, &g_pc, NULL, 100, err, sizeof(err)), 0);
	ck_assert(!backup_choice_pick(&c, 100, &a));
	ck_assert_str_eq(a.text, "fixed");
	backup_choice_committed(&c, HOLD_MS);
	backup_choice_failed(&c);
	backup_choice_link_lost(&c, true, 100);
	ck_assert_ptr_null(backup_choice_bound(&c));
	ck_assert_int_ne(access(g_record, F_OK), 0);
	pair_config_free(&g_pc);
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("backup_choice");

	tmp_fixture_add(s, tmp_setup, "answers", test_the_first_host_that_answers_until_one_commits, 10);
	tmp_fixture_add(s, tmp_setup, "window", test_a_host_that_committed_is_kept_until_its_window_passed, 10);
	tmp_fixture_add(s, tmp_setup, "goodbye", test_a_goodbye_releases_at_once_and_a_new_session_keeps_the_host, 10);
	tmp_fixture_add(s, tmp_setup, "restart", test_a_restarted_replicator_keeps_the_recorded_host_for_its_window, 10);
	tmp_fixture_add(s, tmp_setup, "record", test_a_record_that_names_no_other_host_binds_nothing, 10);
	tmp_fixture_add(s, tmp_setup, "fixed", test_without_hosts_nothing_is_chosen, 10);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
