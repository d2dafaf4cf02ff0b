/* The cold-start decision of a pair whose roles move (backup-agent/
 * cold_start.h): of two agents that both came back with no VM running,
 * exactly one restores, and it holds the newer replica. */
#include "../backup-agent/cold_start.h"

#include <check.h>
#include <errno.h>
#include <json-c/json.h>
#include <stdlib.h>
#include <string.h>

static struct cold_facts facts(const char *host, bool waiting, bool replica, uint64_t generation,
			       uint64_t epoch)
{
	return (struct cold_facts){ .host = host, .waiting = waiting, .replica = replica,
				    .generation = generation, .epoch = epoch };
}

/* A replica a VM was restored from never wins, and still beats an older
 * one: going back behind it would take back what clients saw. */
START_TEST(test_restored_replica_never_wins_and_blocks_older)
{
	struct cold_facts a = facts("alpha", true, true, 5, 9), b = facts("beta", true, true, 4, 99);

	a.restored = true;
	ck_assert(!cold_start_wins(&a, &b));
	ck_assert(!cold_start_wins(&b, &a)); /* b's is older than what ran from a's */
	b.generation = 6;
	ck_assert(cold_start_wins(&b, &a));  /* b's came later: the VM's own next session */
	b.replica = false;
	ck_assert(!cold_start_wins(&a, &b));
}
END_TEST

START_TEST(test_newer_generation_wins_whatever_the_epochs)
{
	struct cold_facts a = facts("alpha", true, true, 7, 10), b = facts("beta", true, true, 6, 90000);

	ck_assert(cold_start_wins(&a, &b));
	ck_assert(!cold_start_wins(&b, &a));
}
END_TEST

START_TEST(test_same_generation_later_epoch_then_name)
{
	struct cold_facts a = facts("alpha", true, true, 7, 10), b = facts("beta", true, true, 7, 11);

	ck_assert(cold_start_wins(&b, &a));
	ck_assert(!cold_start_wins(&a, &b));
	b.epoch = 10;
	ck_assert(cold_start_wins(&a, &b));   /* "alpha" < "beta" */
	ck_assert(!cold_start_wins(&b, &a));
}
END_TEST

START_TEST(test_a_replica_beats_none_and_none_never_restores)
{
	struct cold_facts a = facts("alpha", true, true, 1, 1), b = facts("beta", true, false, 0, 0);

	ck_assert(cold_start_wins(&a, &b));
	ck_assert(!cold_start_wins(&b, &a));
	a.replica = false;
	ck_assert(!cold_start_wins(&a, &b));
	ck_assert(!cold_start_wins(&b, &a));
}
END_TEST

/* A peer that is not waiting (it has a primary, restores, or runs the VM)
 * and an agent that is not waiting itself decide nothing. */
START_TEST(test_nobody_restores_beside_a_busy_peer)
{
	struct cold_facts a = facts("alpha", true, true, 9, 1), b = facts("beta", false, true, 1, 1);

	ck_assert(!cold_start_wins(&a, &b));
	ck_assert(!cold_start_wins(&b, &a));
	b.waiting = true;
	a.waiting = false;
	ck_assert(!cold_start_wins(&a, &b));
	ck_assert(!cold_start_wins(&b, &a)); /* b's replica is the older */
}
END_TEST

/* Over many pairs of facts: never both, and one exactly when both wait
 * and one has a replica; the winner's replica is never the older. */
START_TEST(test_never_both_and_never_the_older)
{
	srand(7);
	for (int i = 0; i < 20000; i++) {
		struct cold_facts a = facts("alpha", rand() % 4, rand() % 3, (uint64_t)(rand() % 4),
					    (uint64_t)(rand() % 4));
		struct cold_facts b = facts("beta", rand() % 4, rand() % 3, (uint64_t)(rand() % 4),
					    (uint64_t)(rand() % 4));
		bool wa, wb;

		a.restored = a.replica && rand() % 3 == 0;
		b.restored = b.replica && rand() % 3 == 0;
		wa = cold_start_wins(&a, &b);
		wb = cold_start_wins(&b, &a);
		ck_assert(!(wa && wb));
		ck_assert(!(wa && a.restored) && !(wb && b.restored));
		if (!a.restored && !b.restored)
			ck_assert_int_eq(wa || wb, a.waiting && b.waiting && (a.replica || b.replica));
		if (wa && b.replica)
			ck_assert(a.generation > b.generation ||
				  (a.generation == b.generation && a.epoch >= b.epoch));
		if (wb && a.replica)
			ck_assert(b.generation > a.generation ||
				  (b.generation == a.generation && b.epoch >= a.epoch));
	}
}
END_TEST

/* ---- what the other host says (cold_facts.c) ---- */

static int parse(const char *text, struct cold_facts *f, struct json_object **owner)
{
	return cold_facts_parse((const uint8_t *)text, (uint32_t)strlen(text), f, owner);
}

START_TEST(test_facts_round_trip)
{
	struct cold_facts a = facts("beta", false, true, 12, 345), b;
	struct json_object *owner = NULL;
	char *text;

	a.ready = true;
	text = cold_facts_json(&a, "ready");
	ck_assert_ptr_nonnull(text);
	ck_assert_int_eq(parse(text, &b, &owner), 0);
	ck_assert_str_eq(b.host, "beta");
	ck_assert(b.ready && b.replica && !b.waiting && !b.restored);
	ck_assert_uint_eq(b.generation, 12);
	ck_assert_uint_eq(b.epoch, 345);
	json_object_put(owner);
	free(text);
}
END_TEST

/* An agent from before takeover = manual says no "ready": not ready. */
START_TEST(test_facts_ready_is_optional)
{
	struct cold_facts f;
	struct json_object *owner = NULL;

	ck_assert_int_eq(parse("{\"host\":\"a\",\"state\":\"waiting\",\"waiting\":true,"
			       "\"replica\":true,\"restored\":false,\"generation\":1,\"epoch\":2}",
			       &f, &owner), 0);
	ck_assert(!f.ready && f.waiting);
	json_object_put(owner);
	ck_assert_int_eq(parse("{\"host\":\"a\",\"waiting\":true,\"replica\":true,"
			       "\"restored\":false,\"ready\":\"yes\",\"generation\":1,"
			       "\"epoch\":2}", &f, &owner), 0);
	ck_assert(!f.ready); /* not a boolean: not ready */
	json_object_put(owner);
}
END_TEST

START_TEST(test_facts_refused)
{
	static const char *const bad[] = {
		"", "null", "[]", "{}", "{\"host\":\"a\"}",
		/* a number where a boolean goes */
		"{\"host\":\"a\",\"waiting\":1,\"replica\":true,\"restored\":false,"
		"\"generation\":1,\"epoch\":2}",
		/* a string generation */
		"{\"host\":\"a\",\"waiting\":true,\"replica\":true,\"restored\":false,"
		"\"generation\":\"1\",\"epoch\":2}",
		/* truncated */
		"{\"host\":\"a\",\"waiting\":true,\"replica\":true,\"restored\":false,"
		"\"generation\":1,\"epo",
	};
	struct cold_facts f;
	struct json_object *owner = NULL;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		ck_assert_msg(parse(bad[i], &f, &owner) == -EPROTO, "accepted: %s", bad[i]);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("cold_start");
	TCase *tc = tcase_create("decision");
	SRunner *sr;
	int failed;

	tcase_add_test(tc, test_newer_generation_wins_whatever_the_epochs);
	tcase_add_test(tc, test_same_generation_later_epoch_then_name);
	tcase_add_test(tc, test_a_replica_beats_none_and_none_never_restores);
	tcase_add_test(tc, test_nobody_restores_beside_a_busy_peer);
	tcase_add_test(tc, test_never_both_and_never_the_older);
	tcase_add_test(tc, test_restored_replica_never_wins_and_blocks_older);
	suite_add_tcase(s, tc);
	tc = tcase_create("facts");
	tcase_add_test(tc, test_facts_round_trip);
	tcase_add_test(tc, test_facts_ready_is_optional);
	tcase_add_test(tc, test_facts_refused);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
