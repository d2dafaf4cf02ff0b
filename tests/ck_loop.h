/* Assertions for loops over thousands of items (every byte of a disk,
 * every page of a RAM). Check writes down the place of each ck_assert
 * that passes, a write to its runner's file each time: in such loops that
 * cost the suites most of their run (check_replica_disk took 80 s, not
 * 3). These record only a failure, with the same message. */
#ifndef REMUS_TESTS_CK_LOOP_H
#define REMUS_TESTS_CK_LOOP_H

#include <check.h>

#define ck_loop_assert_msg(expr, ...)                 \
	do {                                          \
		if (!(expr))                          \
			ck_abort_msg(__VA_ARGS__);    \
	} while (0)

#endif
