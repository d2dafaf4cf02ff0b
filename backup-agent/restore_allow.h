/* What a restored VM's command line may ask of the backup's host.
 *
 * The command line comes from the primary, over the network, and the
 * agent runs it as root: anything it does not know to be harmless is
 * refused. Options and, per option, properties are allowlisted; whatever
 * names a host path, program, device or descriptor is refused, unless the
 * restore rewrites it into the state dir (restore_cmdline.c) or it is a
 * replicated disk or one the agent's config declares shared. */
#ifndef REMUS_RESTORE_ALLOW_H
#define REMUS_RESTORE_ALLOW_H

#include <stddef.h>

struct restore_spec;

/* One option of the primary's command line: name without its dashes (NULL
 * for a bare disk image argument), arg its argument (NULL for a flag).
 * 0 if allowed (perhaps to be rewritten), -EINVAL with the option named in
 * err if not, -ENOMEM. */
int restore_allow_option(const struct restore_spec *spec, const char *name, const char *arg,
			 char *err, size_t errlen);

/* The same for a -drive or -blockdev the restore keeps as the primary gave
 * it (not a replicated disk's node, which it replaces): it may not name a
 * replicated disk's image either. The HELLO names those images, so a
 * second drive on the same path would otherwise pass, and give the guest
 * whatever host file or device the primary called a disk. */
int restore_allow_kept_disk(const struct restore_spec *spec, const char *name, const char *arg,
			    char *err, size_t errlen);

/* The TAP the agent was given for netdev id ("--tap ID=NAME"), or NULL:
 * a NIC that has one comes back on it, whatever the primary's was. */
const char *restore_tap_by_id(const struct restore_spec *spec, const char *id);

#endif
