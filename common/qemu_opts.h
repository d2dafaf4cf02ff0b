/* QEMU command-line option values: "driver,key=value,key=value" with ",,"
 * standing for a literal comma. The backup agent rewrites the primary's
 * command line for a restore; the replicator reads it to check a VM. */
#ifndef REMUS_QEMU_OPTS_H
#define REMUS_QEMU_OPTS_H

#include <stddef.h>

struct qemu_opt {
	char *key;   /* NULL for a bare leading value such as the driver name */
	char *value; /* NULL for a key without "=" (a flag) */
};

struct qemu_opts {
	struct qemu_opt *v;
	size_t n;
};

/* Parse/print one option value. 0 or -ENOMEM/-EINVAL. */
int qemu_opts_parse(const char *text, struct qemu_opts *out);
char *qemu_opts_print(const struct qemu_opts *o);
/* Also the JSON form libvirt writes ({"type":"socket","id":"hostnet0",
 * "udp":"127.0.0.1:5000",...}): "type" becomes the bare leading value,
 * nested objects become "outer.inner" keys. */
int qemu_opts_parse_any(const char *text, struct qemu_opts *out); /* malloc'd, NULL on ENOMEM */
void qemu_opts_free(struct qemu_opts *o);

/* Value of key, or NULL; the last occurrence wins, as in QEMU. The bare
 * leading value has key NULL: use qemu_opts_first_bare(). */
const char *qemu_opts_get(const struct qemu_opts *o, const char *key);
const char *qemu_opts_first_bare(const struct qemu_opts *o);
/* Set (replace or append) key=value. 0 or -ENOMEM. The first occurrence is
 * replaced in place and later ones removed. key NULL sets the bare leading
 * value (inserted in front if there is none); value NULL makes a flag. */
int qemu_opts_set(struct qemu_opts *o, const char *key, const char *value);
/* Remove every occurrence of key (key NULL: the bare values). */
void qemu_opts_del(struct qemu_opts *o, const char *key);

#endif
