/* The backup agent's state machine (backup-agent/agent_state.c): every
 * transition, taken or refused, against rules written out here by the
 * state entered (the table is written by the state left, so the two are
 * not copies); agent_set_state() refusing what the table refuses without
 * touching the state or its reason; the walks a failover, a handover
 * and takeover = manual make; "paused" kept by the state machine; and
 * what a lost primary leads to (agent_failover_verdict). */
#include "../backup-agent/agent.h"

#include <check.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define IN(s, ...) in_set(s, (const enum agent_state[]){ __VA_ARGS__, AGENT_NSTATES })

static bool in_set(enum agent_state s, const enum agent_state *set)
{
	for (; *set != AGENT_NSTATES; set++)
		if (*set == s)
			return true;
	return false;
}

/* The states in which no primary is connected: a HELLO may be admitted,
 * and the operator's takeover may restore or attach. */
static bool no_primary(enum agent_state s)
{
	return IN(s, AGENT_WAITING, AGENT_RECONNECTING, AGENT_FAULT, AGENT_READY);
}

/* Why the agent may enter `to` from `from`, in words. */
static bool rule_allows(enum agent_state from, enum agent_state to)
{
	if (from == to)
		return true;          /* a new reason, same state */
	if (from == AGENT_MASTER)
		return false;         /* the VM runs here: the agent's last state */
	switch (to) {
	case AGENT_WAITING:       /* the primary left on purpose, or the
				   * readiness ended: never from a restore or
				   * a fault, whose replica waits for a human */
		return IN(from, AGENT_SYNCING, AGENT_BACKUP, AGENT_PAUSED, AGENT_RECONNECTING,
			  AGENT_READY);
	case AGENT_SYNCING:       /* one primary at a time */
		return no_primary(from);
	case AGENT_BACKUP:        /* failover armed only by a commit (or a
				   * failed handover, whose replica is the
				   * committed one) */
		return IN(from, AGENT_SYNCING, AGENT_PAUSED, AGENT_RESTORING);
	case AGENT_PAUSED:        /* a connected primary says so */
		return IN(from, AGENT_SYNCING, AGENT_BACKUP);
	case AGENT_RECONNECTING:  /* a connected primary's stream breaks */
		return IN(from, AGENT_SYNCING, AGENT_BACKUP, AGENT_PAUSED, AGENT_READY);
	case AGENT_FENCING:       /* a lost primary with a committed replica */
		return IN(from, AGENT_BACKUP, AGENT_RECONNECTING);
	case AGENT_RESTORING:     /* a committed, not paused replica, or the
				   * operator with no primary connected;
				   * never an uncommitted or stale one */
		return !IN(from, AGENT_SYNCING, AGENT_PAUSED) &&
		       (IN(from, AGENT_BACKUP, AGENT_FENCING) || no_primary(from));
	case AGENT_MASTER:        /* restored, or a VM already running here
				   * attached with no primary connected */
		return from == AGENT_RESTORING || no_primary(from);
	case AGENT_FAULT:         /* a loss or a restore that could not be
				   * acted on; the operator's restore fails
				   * through RESTORING */
		return !no_primary(from) || from == AGENT_RECONNECTING;
	case AGENT_READY:         /* takeover = manual: a committed replica
				   * whose primary parked or was lost, or a
				   * cold start's (which counts FAULT as
				   * waiting) */
		return IN(from, AGENT_BACKUP, AGENT_RECONNECTING, AGENT_WAITING, AGENT_FAULT);
	case AGENT_NSTATES:
		break;
	}
	return false;
}

START_TEST(test_every_transition_against_the_rules)
{
	for (int from = 0; from < AGENT_NSTATES; from++)
		for (int to = 0; to < AGENT_NSTATES; to++)
			ck_assert_msg(agent_state_may(from, to) == rule_allows(from, to),
				      "%s -> %s: table says %d, rules say %d",
				      agent_state_name(from), agent_state_name(to),
				      agent_state_may(from, to), rule_allows(from, to));
}
END_TEST

START_TEST(test_states_outside_the_enum_are_refused)
{
	ck_assert(!agent_state_may(AGENT_NSTATES, AGENT_WAITING));
	ck_assert(!agent_state_may(AGENT_WAITING, AGENT_NSTATES));
	ck_assert(!agent_state_may((enum agent_state)-1, AGENT_WAITING));
	ck_assert_str_eq(agent_state_name(AGENT_NSTATES), "unknown");
}
END_TEST

/* Every state but WAITING (the start) is entered from somewhere, and
 * every state but MASTER may be left. */
START_TEST(test_every_state_is_reachable_and_only_master_is_final)
{
	for (int s = 0; s < AGENT_NSTATES; s++) {
		bool in = false, out = false;

		for (int o = 0; o < AGENT_NSTATES; o++) {
			in |= o != s && agent_state_may(o, s);
			out |= o != s && agent_state_may(s, o);
		}
		ck_assert_msg(in, "%s cannot be entered", agent_state_name(s));
		ck_assert_msg(out == (s != AGENT_MASTER), "%s: may be left %d",
			      agent_state_name(s), out);
	}
}
END_TEST

static struct agent a;

static void fresh(enum agent_state s)
{
	memset(&a, 0, sizeof(a));
	snprintf(a.vm_name, sizeof(a.vm_name), "vm-test");
	a.state = s;
	snprintf(a.state_reason, sizeof(a.state_reason), "before");
}

static void go(enum agent_state s, const char *why)
{
	agent_set_state(&a, s, "%s", why);
	ck_assert_msg(a.state == s, "%s refused (at %s)", agent_state_name(s), why);
	ck_assert_str_eq(a.state_reason, why);
}

/* A refused transition changes nothing: not the state, not its reason,
 * not its time. */
START_TEST(test_a_refused_transition_changes_nothing)
{
	fresh(AGENT_SYNCING);
	a.state_since_ms = 42;
	agent_set_state(&a, AGENT_RESTORING, "primary lost before its first commit");
	ck_assert_int_eq(a.state, AGENT_SYNCING);
	ck_assert_str_eq(a.state_reason, "before");
	ck_assert(a.state_since_ms == 42);
	/* staying takes the new reason, and keeps the time */
	agent_set_state(&a, AGENT_SYNCING, "still copying");
	ck_assert_str_eq(a.state_reason, "still copying");
	ck_assert(a.state_since_ms == 42);
}
END_TEST

/* agent_run's first state goes through agent_set_state too: it is
 * dated, so status shows its age, and the next change is logged from it. */
START_TEST(test_the_first_state_is_set_like_any_other)
{
	memset(&a, 0, sizeof(a));
	agent_set_state(&a, AGENT_WAITING, "listening");
	ck_assert_int_eq(a.state, AGENT_WAITING);
	ck_assert_str_eq(a.state_reason, "listening");
	ck_assert(a.state_since_ms > 0);
	go(AGENT_SYNCING, "primary connected");
}
END_TEST

/* "Paused" is the state machine's: set by entering PAUSED, kept while the
 * stream is lost (RECONNECTING), ended by a new session or a commit. */
START_TEST(test_paused_follows_the_state)
{
	fresh(AGENT_WAITING);
	go(AGENT_SYNCING, "primary connected");
	go(AGENT_BACKUP, "epoch 1 committed");
	ck_assert(!a.session_paused);
	go(AGENT_PAUSED, "operator paused");
	ck_assert(a.session_paused);
	go(AGENT_RECONNECTING, "stream lost");
	ck_assert(a.session_paused);
	go(AGENT_SYNCING, "primary back");
	ck_assert(!a.session_paused);
	go(AGENT_PAUSED, "paused in the sync");
	go(AGENT_BACKUP, "epoch 2 committed after the pause");
	ck_assert(!a.session_paused);
	/* a refused transition does not touch it either */
	go(AGENT_PAUSED, "paused again");
	agent_set_state(&a, AGENT_FENCING, "not from paused");
	ck_assert(a.session_paused);
}
END_TEST

/* What a lost primary leads to, over every combination of what the agent
 * knows, checked against what must hold rather than the code's order. */
START_TEST(test_failover_verdict_every_combination)
{
	for (unsigned bits = 0; bits < 32; bits++) {
		struct failover_facts f = {
			.committed = bits & 1, .paused = bits & 2, .takeover_ready = bits & 4,
			.no_failover = bits & 8, .takeover_manual = bits & 16,
		};
		enum failover_verdict v = agent_failover_verdict(&f);
		bool restore = f.committed && !f.paused && !f.no_failover && !f.takeover_manual;

		ck_assert_msg((v == FAILOVER_RESTORE) == restore, "facts %#x: restore %d", bits,
			      v == FAILOVER_RESTORE);
		/* an uncommitted or stale replica is never offered either */
		if (!f.committed)
			ck_assert_int_eq(v, FAILOVER_NOT_COMMITTED);
		else if (f.paused)
			ck_assert_int_eq(v, FAILOVER_PAUSED);
		/* a ready replica stays ready, --no-failover or not */
		if (f.committed && !f.paused && f.takeover_manual)
			ck_assert_int_eq(v, f.takeover_ready ? FAILOVER_STAY_READY :
					    f.no_failover ? FAILOVER_DISABLED :
					    FAILOVER_AWAIT_PROMOTION);
		if (f.committed && !f.paused && !f.takeover_manual && f.no_failover)
			ck_assert_int_eq(v, FAILOVER_DISABLED);
	}
}
END_TEST

START_TEST(test_failover_walk)
{
	fresh(AGENT_WAITING);
	go(AGENT_SYNCING, "primary connected");
	go(AGENT_BACKUP, "epoch 1 committed");
	go(AGENT_RECONNECTING, "corrupt frame");
	go(AGENT_FENCING, "primary did not reconnect");
	go(AGENT_RESTORING, "fenced");
	go(AGENT_MASTER, "restored");
	agent_set_state(&a, AGENT_WAITING, "anything");
	ck_assert_int_eq(a.state, AGENT_MASTER);
	ck_assert_str_eq(a.state_reason, "restored");
}
END_TEST

START_TEST(test_pause_and_failed_handover_walk)
{
	fresh(AGENT_BACKUP);
	go(AGENT_PAUSED, "operator paused");
	agent_set_state(&a, AGENT_RESTORING, "a stale replica");
	ck_assert_int_eq(a.state, AGENT_PAUSED);
	go(AGENT_BACKUP, "epoch 9 committed after the pause");
	go(AGENT_RESTORING, "planned handover");
	go(AGENT_BACKUP, "handover failed: the primary resumes");
	go(AGENT_WAITING, "primary detached on purpose");
}
END_TEST

START_TEST(test_manual_takeover_walk)
{
	fresh(AGENT_BACKUP);
	go(AGENT_READY, "primary lost: waiting to be promoted");
	go(AGENT_WAITING, "the takeover window is over");
	go(AGENT_SYNCING, "primary connected again");
	go(AGENT_FAULT, "primary lost before its first commit");
	go(AGENT_RESTORING, "the operator's takeover --force");
	go(AGENT_FAULT, "restore failed");
	go(AGENT_MASTER, "the VM started here: its replicator attaches");
}
END_TEST

int main(void)
{
	Suite *s = suite_create("agent_state");
	TCase *tc = tcase_create("agent_state");
	SRunner *sr;
	int failed;

	tcase_add_test(tc, test_every_transition_against_the_rules);
	tcase_add_test(tc, test_states_outside_the_enum_are_refused);
	tcase_add_test(tc, test_every_state_is_reachable_and_only_master_is_final);
	tcase_add_test(tc, test_a_refused_transition_changes_nothing);
	tcase_add_test(tc, test_the_first_state_is_set_like_any_other);
	tcase_add_test(tc, test_paused_follows_the_state);
	tcase_add_test(tc, test_failover_verdict_every_combination);
	tcase_add_test(tc, test_failover_walk);
	tcase_add_test(tc, test_pause_and_failed_handover_walk);
	tcase_add_test(tc, test_manual_takeover_walk);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
