/* The cold-start decision of a pair whose roles move (backup-agent/
 * cold_start.h): of two agents that both came back with no VM running,
 * exactly one restores, and it holds the newer replica. */
#include "../backup-agent/cold_start.h"

#include <check.h>
#include <stdlib.h>

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
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
