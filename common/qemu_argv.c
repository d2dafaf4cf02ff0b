#include "qemu_argv.h"

#include <errno.h>
#include <stddef.h>
#include <string.h>

/* Options that take no argument: the entries with flags 0 in QEMU 7.2's
 * option table (qemu-options.hx), read out of qemu-system-x86_64 7.2.
 * Every other option takes exactly one argument, never as "-opt=value". */
static const char *const flag_opts[] = {
	"h", "help", "version", "mem-prealloc", "audio-help", "snapshot", "usb",
	"nographic", "portrait", "full-screen", "win2k-hack", "no-fd-bootchk",
	"no-acpi", "no-hpet", "singlestep", "preconfig", "S", "s", "enable-kvm",
	"xen-attach", "xen-domid-restrict", "no-reboot", "no-shutdown",
	"daemonize", "only-migratable", "nodefaults", "semihosting", "old-param",
	"no-user-config", "async-teardown", "enable-sync-profile",
	/* removed before 7.2; kept so an older command line still parses */
	"enable-fips", "no-quit",
};

static bool is_flag(const char *name)
{
	for (size_t i = 0; i < sizeof(flag_opts) / sizeof(flag_opts[0]); i++)
		if (!strcmp(name, flag_opts[i]))
			return true;
	return false;
}

void qemu_argv_iter_init(struct qemu_argv_iter *it, char *const *argv, int argc)
{
	memset(it, 0, sizeof(*it));
	it->argv = argv;
	it->argc = argc;
	it->i = 1;
}

int qemu_argv_next(struct qemu_argv_iter *it)
{
	const char *a;

	if (it->i >= it->argc)
		return 0;
	it->opt_index = it->i;
	a = it->argv[it->i++];
	it->opt = a;
	it->name = NULL;
	it->arg = NULL;
	/* QEMU takes an argument without a dash as the first disk image. */
	if (a[0] != '-') {
		it->arg = a;
		return 1;
	}
	it->name = a + (a[1] == '-' ? 2 : 1);
	if (is_flag(it->name))
		return 1;
	if (it->i >= it->argc)
		return -EINVAL;
	it->arg = it->argv[it->i++];
	return 1;
}

bool qemu_argv_is(const struct qemu_argv_iter *it, const char *name)
{
	return it->name && !strcmp(it->name, name);
}

int qemu_argv_arg_index(const struct qemu_argv_iter *it)
{
	return it->name ? it->opt_index + 1 : it->opt_index;
}
