/* Walking a QEMU command line option by option, as QEMU 7.2 reads it:
 * which options take an argument and which are flags. The restore's
 * rewrite and the block-graph planner (both sides of the pair) must cut a
 * command line the same way QEMU does, or a hostile argument such as
 * "-blockdev" given to some other option would be read as an option. */
#ifndef REMUS_QEMU_ARGV_H
#define REMUS_QEMU_ARGV_H

#include <stdbool.h>

struct qemu_argv_iter {
	char *const *argv;
	int argc;
	int i;            /* next argv index to read */
	int opt_index;    /* argv index of the current option */
	const char *opt;  /* as written, e.g. "--serial" */
	const char *name; /* without dashes; NULL for a disk image argument */
	const char *arg;  /* NULL for a flag */
};

void qemu_argv_iter_init(struct qemu_argv_iter *it, char *const *argv, int argc);
/* 1 and the next option in it, 0 at the end, -EINVAL if the last option
 * lacks its argument. */
int qemu_argv_next(struct qemu_argv_iter *it);
bool qemu_argv_is(const struct qemu_argv_iter *it, const char *name);
/* The argv index of the current option's argument (opt_index + 1 for an
 * option with one, opt_index for a bare disk image). */
int qemu_argv_arg_index(const struct qemu_argv_iter *it);

#endif
