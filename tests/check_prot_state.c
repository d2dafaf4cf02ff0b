/* The replicator's protection state machine (replicator/prot_state.c):
 * every transition of every part, taken or refused, against the rules
 * written out here in words (not a copy of the table); the rules across
 * parts; the names status shows; and the walks the operator's commands
 * and a lost backup make. */
#include "../replicator/prot_state.h"

#include <check.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

static int changes;

static void count_change(void *data)
{
	(void)data;
	changes++;
}

/* Protected, nothing paused or handed over: every cross-part rule lets a
 * part's own transitions through. */
static void fresh(struct prot_state *s)
{
	prot_init(s, count_change, NULL);
	s->vm = "vm-test";
	s->part[PROT_PART_LINK] = PROT_PROTECTED;
	changes = 0;
}

static const int nvalues[PROT_NPARTS] = { 4, 4, 4, 2 };

/* The lifecycle of each part, in words. */
static bool rule_allows(enum prot_part part, int from, int to)
{
	switch (part) {
	case PROT_PART_LINK:
		if (to == PROT_CONNECTING)
			return false; /* only where a replicator starts */
		if (to == PROT_PROTECTED)
			return from == PROT_SYNCING; /* only a commit protects */
		if (to == PROT_SYNCING)
			return from != PROT_SYNCING; /* a new copy, or a resume */
		return from != PROT_UNPROTECTED; /* a backup is lost once */
	case PROT_PART_PAUSE:
		if (from == PAUSE_OFF)
			return to == PAUSE_DRAIN; /* a pause starts by draining */
		if (to == PAUSE_OFF)
			return true;             /* resume, at any phase */
		return to > from;                /* never back to an earlier phase */
	case PROT_PART_HANDOVER:
		if (to == HO_NONE)
			return true;             /* it ends at any phase */
		return to == from + 1;           /* one phase forward at a time */
	case PROT_PART_LEFT_PAUSED:
		return true;
	case PROT_NPARTS:
		break;
	}
	return false;
}

START_TEST(test_every_transition_of_every_part)
{
	for (int part = 0; part < PROT_NPARTS; part++) {
		for (int from = 0; from < nvalues[part]; from++) {
			for (int to = 0; to < nvalues[part]; to++) {
				struct prot_state s;
				bool want = from == to || rule_allows(part, from, to);
				int rc;

				fresh(&s);
				/* left-paused is set only past a final checkpoint */
				if (part == PROT_PART_LEFT_PAUSED)
					s.part[PROT_PART_HANDOVER] = HO_FINAL;
				s.part[part] = from;
				rc = prot_set(&s, part, to, "test");
				ck_assert_msg((rc == 0) == want, "%s: %s -> %s %s",
					      part == 0 ? "link" : part == 1 ? "pause" :
					      part == 2 ? "handover" : "left-paused",
					      prot_part_value_name(part, from),
					      prot_part_value_name(part, to),
					      want ? "refused" : "taken");
				ck_assert_int_eq(s.part[part], want ? to : from);
				/* the owner hears of a change, and of nothing else */
				ck_assert_int_eq(changes, want && from != to);
				if (want && from != to)
					ck_assert_str_eq(s.reason, "test");
				else
					ck_assert_str_eq(s.reason, "");
			}
		}
	}
}
END_TEST

START_TEST(test_values_out_of_range_are_refused)
{
	struct prot_state s;

	fresh(&s);
	ck_assert_int_lt(prot_set(&s, PROT_PART_LINK, -1, "x"), 0);
	ck_assert_int_lt(prot_set(&s, PROT_PART_LINK, PROT_NLINK, "x"), 0);
	ck_assert_int_lt(prot_set(&s, PROT_PART_LEFT_PAUSED, 2, "x"), 0);
	ck_assert_int_lt(prot_set(&s, PROT_NPARTS, 0, "x"), 0);
	ck_assert_int_eq(changes, 0);
	ck_assert_int_eq(prot_link(&s), PROT_PROTECTED);
}
END_TEST

START_TEST(test_a_pause_waits_for_a_handover_and_its_unknown_end)
{
	struct prot_state s;

	fresh(&s);
	s.part[PROT_PART_HANDOVER] = HO_DRAIN;
	ck_assert(!prot_may_set(&s, PROT_PART_PAUSE, PAUSE_DRAIN));
	s.part[PROT_PART_HANDOVER] = HO_NONE;
	s.part[PROT_PART_LEFT_PAUSED] = 1;
	ck_assert_int_lt(prot_set(&s, PROT_PART_PAUSE, PAUSE_DRAIN, "remusctl pause"), 0);
	ck_assert_int_eq(prot_pause(&s), PAUSE_OFF);
	s.part[PROT_PART_LEFT_PAUSED] = 0;
	ck_assert_int_eq(prot_set(&s, PROT_PART_PAUSE, PAUSE_DRAIN, "remusctl pause"), 0);
}
END_TEST

START_TEST(test_a_handover_needs_a_committed_unpaused_replica)
{
	static const enum protection not_protected[] = { PROT_CONNECTING, PROT_SYNCING,
							 PROT_UNPROTECTED };
	struct prot_state s;

	for (size_t i = 0; i < sizeof(not_protected) / sizeof(not_protected[0]); i++) {
		fresh(&s);
		s.part[PROT_PART_LINK] = not_protected[i];
		ck_assert_int_lt(prot_set(&s, PROT_PART_HANDOVER, HO_DRAIN, "failover"), 0);
	}
	fresh(&s);
	s.part[PROT_PART_PAUSE] = PAUSE_ON;
	ck_assert(!prot_may_set(&s, PROT_PART_HANDOVER, HO_DRAIN));
	fresh(&s);
	s.part[PROT_PART_LEFT_PAUSED] = 1;
	ck_assert(!prot_may_set(&s, PROT_PART_HANDOVER, HO_DRAIN));
	fresh(&s);
	ck_assert_int_eq(prot_set(&s, PROT_PART_HANDOVER, HO_DRAIN, "failover"), 0);
	ck_assert_int_eq(changes, 1);
}
END_TEST

START_TEST(test_only_a_final_checkpoint_leaves_the_outcome_unknown)
{
	struct prot_state s;

	for (int ho = 0; ho < HO_NPHASES; ho++) {
		fresh(&s);
		s.part[PROT_PART_HANDOVER] = ho;
		ck_assert_int_eq(prot_may_set(&s, PROT_PART_LEFT_PAUSED, 1), ho >= HO_FINAL);
	}
}
END_TEST

static bool known_name(const char *name)
{
	for (int i = 0; prot_state_names[i]; i++)
		if (!strcmp(prot_state_names[i], name))
			return true;
	return false;
}

/* Every combination of the parts has a name from the list, and every name
 * of the list is some combination's: status, remusctl's Prometheus states
 * and the docs use that list. */
START_TEST(test_every_combination_has_a_listed_name)
{
	bool seen[16] = { false };
	int n = 0;

	while (prot_state_names[n])
		n++;
	ck_assert_int_le(n, 16);
	for (int l = 0; l < PROT_NLINK; l++)
		for (int p = 0; p < PAUSE_NPHASES; p++)
			for (int h = 0; h < HO_NPHASES; h++)
				for (int u = 0; u < 2; u++) {
					struct prot_state s;
					const char *name;

					prot_init(&s, NULL, NULL);
					s.part[PROT_PART_LINK] = l;
					s.part[PROT_PART_PAUSE] = p;
					s.part[PROT_PART_HANDOVER] = h;
					s.part[PROT_PART_LEFT_PAUSED] = u;
					name = prot_name(&s);
					ck_assert_msg(known_name(name), "%s is not listed", name);
					for (int i = 0; i < n; i++)
						seen[i] |= !strcmp(prot_state_names[i], name);
				}
	for (int i = 0; i < n; i++)
		ck_assert_msg(seen[i], "%s is never shown", prot_state_names[i]);
}
END_TEST

/* remusctl pause with a backup, then resume: the names an operator sees. */
START_TEST(test_pause_walk)
{
	struct prot_state s;

	fresh(&s);
	ck_assert_str_eq(prot_name(&s), "protected");
	ck_assert(prot_barriers_coming(&s));
	ck_assert_int_eq(prot_set(&s, PROT_PART_PAUSE, PAUSE_DRAIN, "remusctl pause"), 0);
	ck_assert_str_eq(prot_name(&s), "pausing");
	ck_assert(!prot_checkpoints_run(&s));
	ck_assert(!prot_barriers_coming(&s));
	ck_assert_int_eq(prot_set(&s, PROT_PART_PAUSE, PAUSE_SENT, "acked"), 0);
	ck_assert_int_eq(prot_set(&s, PROT_PART_PAUSE, PAUSE_ON, "PAUSE_ACK"), 0);
	ck_assert_str_eq(prot_name(&s), "paused");
	/* a second pause does not start again from the top */
	ck_assert_int_lt(prot_set(&s, PROT_PART_PAUSE, PAUSE_DRAIN, "again"), 0);
	ck_assert_int_eq(prot_set(&s, PROT_PART_PAUSE, PAUSE_OFF, "remusctl resume"), 0);
	ck_assert_int_eq(prot_set(&s, PROT_PART_LINK, PROT_SYNCING, "resumed"), 0);
	ck_assert_str_eq(prot_name(&s), "syncing");
	ck_assert(prot_barriers_coming(&s));
	ck_assert_int_eq(prot_set(&s, PROT_PART_LINK, PROT_PROTECTED, "committed"), 0);
	ck_assert_int_eq(changes, 6);
	ck_assert_str_eq(s.reason, "committed");
}
END_TEST

/* remusctl failover, and the backup lost after the final checkpoint: the
 * VM must stay stopped until the operator decides. */
START_TEST(test_handover_lost_midway_walk)
{
	struct prot_state s;

	fresh(&s);
	ck_assert_int_eq(prot_set(&s, PROT_PART_HANDOVER, HO_DRAIN, "remusctl failover"), 0);
	ck_assert_str_eq(prot_name(&s), "handing-over");
	ck_assert(!prot_vm_held_stopped(&s));
	ck_assert(!prot_checkpoints_run(&s));
	ck_assert(prot_barriers_coming(&s)); /* the final checkpoint is one */
	/* the final checkpoint comes before HANDOVER */
	ck_assert_int_lt(prot_set(&s, PROT_PART_HANDOVER, HO_WAIT_DONE, "skip"), 0);
	ck_assert_int_eq(prot_set(&s, PROT_PART_HANDOVER, HO_FINAL, "final"), 0);
	ck_assert(prot_vm_held_stopped(&s));
	ck_assert(!prot_barriers_coming(&s)); /* the VM stays stopped */
	ck_assert_int_eq(prot_set(&s, PROT_PART_HANDOVER, HO_WAIT_DONE, "sent"), 0);
	ck_assert_int_eq(prot_set(&s, PROT_PART_LEFT_PAUSED, 1, "backup lost"), 0);
	ck_assert_int_eq(prot_set(&s, PROT_PART_HANDOVER, HO_NONE, "ended"), 0);
	ck_assert_int_eq(prot_set(&s, PROT_PART_LINK, PROT_UNPROTECTED, "backup lost"), 0);
	ck_assert_str_eq(prot_name(&s), "handover-unknown");
	ck_assert(prot_vm_held_stopped(&s));
	ck_assert(!prot_checkpoints_run(&s));
	/* nothing starts again until the operator decides */
	ck_assert_int_lt(prot_set(&s, PROT_PART_HANDOVER, HO_DRAIN, "again"), 0);
	ck_assert_int_lt(prot_set(&s, PROT_PART_PAUSE, PAUSE_DRAIN, "pause"), 0);
	ck_assert_int_eq(prot_set(&s, PROT_PART_LEFT_PAUSED, 0, "remusctl resume"), 0);
	ck_assert_str_eq(prot_name(&s), "unprotected");
	ck_assert(!prot_vm_held_stopped(&s));
	ck_assert(!prot_barriers_coming(&s)); /* no backup */
}
END_TEST

int main(void)
{
	Suite *s = suite_create("prot_state");
	TCase *tc = tcase_create("prot_state");
	SRunner *sr;
	int failed;

	tcase_add_test(tc, test_every_transition_of_every_part);
	tcase_add_test(tc, test_values_out_of_range_are_refused);
	tcase_add_test(tc, test_a_pause_waits_for_a_handover_and_its_unknown_end);
	tcase_add_test(tc, test_a_handover_needs_a_committed_unpaused_replica);
	tcase_add_test(tc, test_only_a_final_checkpoint_leaves_the_outcome_unknown);
	tcase_add_test(tc, test_every_combination_has_a_listed_name);
	tcase_add_test(tc, test_pause_walk);
	tcase_add_test(tc, test_handover_lost_midway_walk);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
