#include "block_graph.h"
#include "qemu_argv.h"
#include "qemu_opts.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FORMS_HINT "give it as -drive file=IMAGE,format=raw|qcow2, or as -blockdev " \
	"driver=file|host_device under driver=raw|qcow2"

/* Storage both hosts reach over the network: nothing to replicate, and
 * nothing the backup's allowlist would open. */
static const char *const network_drivers[] = {
	"nbd", "iscsi", "iser", "rbd", "gluster", "ssh", "http", "https", "ftp", "ftps",
	"nfs", "nvme", "nvme-io_uring", "vxhs", "sheepdog", "curl", NULL,
};

struct bdev {
	int argi;          /* argv index of the argument */
	struct qemu_opts o;
	const char *name;  /* its node-name */
	enum block_graph_action action;
};

struct planner {
	char *const *argv;
	int argc;
	const struct block_graph_disk *disks;
	int ndisks;
	struct bdev *bdevs;
	int nbdevs;
	struct block_graph *g;
	char *err;
	size_t errlen;
	const char *disk_name; /* the disk being planned, for messages */
};

static bool listed(const char *s, const char *const *list)
{
	for (; s && *list; list++)
		if (!strcmp(s, *list))
			return true;
	return false;
}

static bool streq(const char *a, const char *b)
{
	return a && b && !strcmp(a, b);
}

static int refuse(struct planner *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int refuse(struct planner *p, const char *fmt, ...)
{
	va_list ap;

	if (p->errlen) {
		va_start(ap, fmt);
		vsnprintf(p->err, p->errlen, fmt, ap);
		va_end(ap);
	}
	return -EINVAL;
}

int block_graph_parse(const char *arg, struct qemu_opts *o)
{
	return qemu_opts_parse_any(arg, o);
}

const char *block_graph_driver(const struct qemu_opts *o)
{
	const char *d = qemu_opts_get(o, "driver");

	return d ? d : qemu_opts_first_bare(o);
}

/* key under a node at prefix ("" for the option's own node). */
static const char *get_at(const struct qemu_opts *o, const char *prefix, const char *key)
{
	char full[256];

	if (!*prefix)
		return qemu_opts_get(o, key);
	snprintf(full, sizeof(full), "%s.%s", prefix, key);
	return qemu_opts_get(o, full);
}

static bool has_key(const struct qemu_opts *o, const char *key)
{
	for (size_t i = 0; i < o->n; i++)
		if (streq(o->v[i].key, key))
			return true;
	return false;
}

static bool has_prefix(const struct qemu_opts *o, const char *prefix)
{
	size_t n = strlen(prefix);

	for (size_t i = 0; i < o->n; i++)
		if (o->v[i].key && !strncmp(o->v[i].key, prefix, n) && o->v[i].key[n] == '.')
			return true;
	return false;
}

/* ---- -blockdev graphs ---- */

static struct bdev *bdev_named(struct planner *p, const char *name)
{
	for (int i = 0; name && i < p->nbdevs; i++)
		if (streq(p->bdevs[i].name, name))
			return &p->bdevs[i];
	return NULL;
}

static int walk(struct planner *p, struct bdev *b, const char *prefix, int depth);

/* The child under key of the node at prefix: a node named elsewhere, a
 * node written inline, or none. */
static int walk_child(struct planner *p, struct bdev *b, const char *prefix, const char *key,
		      int depth)
{
	char full[256];
	const char *ref;
	struct bdev *c;

	snprintf(full, sizeof(full), "%s%s%s", prefix, *prefix ? "." : "", key);
	if (has_prefix(&b->o, full))
		return walk(p, b, full, depth + 1);
	if (!has_key(&b->o, full))
		return 0;
	ref = qemu_opts_get(&b->o, full);
	if (!ref || !*ref || !strcmp(ref, "null"))
		return 0; /* "backing": null, no backing file */
	c = bdev_named(p, ref);
	if (!c)
		return refuse(p, "disk '%s': its node %s refers to node '%s', which no -blockdev "
			      "defines", p->disk_name, b->name, ref);
	if (c->action == BLOCK_GRAPH_REPLACE)
		return refuse(p, "disk '%s': its node %s uses node '%s' of another replicated "
			      "disk", p->disk_name, b->name, ref);
	if (c->action == BLOCK_GRAPH_DROP)
		return 0; /* met already: a graph may share a node, never loop */
	c->action = BLOCK_GRAPH_DROP;
	return walk(p, c, "", depth + 1);
}

/* Every node under a replaced one must be one whose children we know, so
 * that none is left behind opening the primary's files. */
static int walk(struct planner *p, struct bdev *b, const char *prefix, int depth)
{
	static const char *const raw_children[] = { "file", NULL };
	static const char *const qcow2_children[] = { "file", "backing", "data-file", NULL };
	const char *driver = *prefix ? get_at(&b->o, prefix, "driver") : block_graph_driver(&b->o);
	const char *const *children;
	int rc = 0;

	if (depth > 16)
		return refuse(p, "disk '%s': its block graph is deeper than 16 nodes", p->disk_name);
	if (listed(driver, network_drivers))
		return refuse(p, "disk '%s' is network storage (driver %s): both hosts reach it, so "
			      "it is not replicated: declare it shared (--unprotected-disk %s on the "
			      "replicator)", p->disk_name, driver, p->disk_name);
	if (streq(driver, "file") || streq(driver, "host_device"))
		return 0;
	if (streq(driver, "raw"))
		children = raw_children;
	else if (streq(driver, "qcow2"))
		children = qcow2_children;
	else
		return refuse(p, "disk '%s': block driver '%s' (node %s) is not one the backup "
			      "rebuilds: %s (qemu-img convert -O qcow2 makes one)", p->disk_name,
			      driver ? driver : "(none)", b->name ? b->name : "?", FORMS_HINT);
	for (; !rc && *children; children++)
		rc = walk_child(p, b, prefix, *children, depth);
	return rc;
}

static int plan_blockdev(struct planner *p, struct bdev *root, int disk)
{
	root->action = BLOCK_GRAPH_REPLACE;
	p->g->action[root->argi] = BLOCK_GRAPH_REPLACE;
	p->g->disk[root->argi] = disk;
	return walk(p, root, "", 0);
}

/* ---- -drive ---- */

/* A filename with a protocol prefix ("nbd:...", "iscsi://..."): QEMU reads
 * one when a ':' comes before any '/'. */
static bool has_protocol(const char *file, char *proto, size_t len)
{
	const char *colon = strchr(file, ':'), *slash = strchr(file, '/');
	size_t n;

	if (!colon || (slash && slash < colon))
		return false;
	n = (size_t)(colon - file);
	snprintf(proto, len, "%.*s", (int)(n < len ? n : len - 1), file);
	return true;
}

static bool is_on(const char *v)
{
	return v && (!strcmp(v, "on") || !strcmp(v, "true") || !strcmp(v, "yes") || !*v);
}

static int check_drive(struct planner *p, const struct qemu_opts *o)
{
	const char *format = qemu_opts_get(o, "format"), *file = qemu_opts_get(o, "file");
	const char *proto_driver = qemu_opts_get(o, "file.driver");
	char proto[32];

	if (!format)
		format = qemu_opts_get(o, "driver");
	if (has_key(o, "snapshot") && is_on(qemu_opts_get(o, "snapshot")))
		return refuse(p, "disk '%s' has snapshot=on: QEMU throws its writes away; the "
			      "backup cannot restore what the guest sees", p->disk_name);
	if (file && has_protocol(file, proto, sizeof(proto)) && strcmp(proto, "file") &&
	    strcmp(proto, "host_device"))
		proto_driver = proto;
	if (listed(format, network_drivers) || listed(proto_driver, network_drivers))
		return refuse(p, "disk '%s' is network storage (%s): both hosts reach it, so it is "
			      "not replicated: declare it shared (--unprotected-disk %s on the "
			      "replicator)", p->disk_name,
			      listed(format, network_drivers) ? format : proto_driver, p->disk_name);
	if (proto_driver && strcmp(proto_driver, "file") && strcmp(proto_driver, "host_device"))
		return refuse(p, "disk '%s': protocol '%s' is not one the backup rebuilds: %s",
			      p->disk_name, proto_driver, FORMS_HINT);
	if (format && strcmp(format, "raw") && strcmp(format, "qcow2"))
		return refuse(p, "disk '%s': format '%s' is not one the backup rebuilds: %s "
			      "(qemu-img convert -O qcow2 makes one)", p->disk_name, format, FORMS_HINT);
	return 0;
}

static const char *drive_file(const struct qemu_opts *o)
{
	const char *f = qemu_opts_get(o, "file");

	return f ? f : qemu_opts_get(o, "file.filename");
}

/* The -drive defining disk d: by its id, its node-name, or, for a drive
 * QEMU named itself (virtio0, ide0-hd0, ...), by its image when only one
 * -drive names that image. argv index of the argument, or -1. */
static int find_drive(struct planner *p, const struct block_graph_disk *d)
{
	struct qemu_argv_iter it;
	int by_file = -1, nfile = 0;

	qemu_argv_iter_init(&it, p->argv, p->argc);
	while (qemu_argv_next(&it) > 0) {
		struct qemu_opts o = { NULL, 0 };
		int found = 0;

		if (!qemu_argv_is(&it, "drive") || qemu_opts_parse(it.arg, &o))
			continue;
		if ((d->id && *d->id && streq(qemu_opts_get(&o, "id"), d->id)) ||
		    (d->node && *d->node && streq(qemu_opts_get(&o, "node-name"), d->node)))
			found = 1;
		else if (!qemu_opts_get(&o, "id") && streq(drive_file(&o), d->file) && nfile++ == 0)
			by_file = qemu_argv_arg_index(&it);
		qemu_opts_free(&o);
		if (found)
			return qemu_argv_arg_index(&it);
	}
	return nfile == 1 ? by_file : -1;
}

static int plan_drive(struct planner *p, int argi, int disk)
{
	struct qemu_opts o = { NULL, 0 };
	int rc;

	if (p->g->action[argi] != BLOCK_GRAPH_KEEP)
		return refuse(p, "disk '%s': its -drive defines another replicated disk too",
			      p->disk_name);
	rc = qemu_opts_parse(p->argv[argi], &o);
	if (rc)
		return rc == -ENOMEM ? rc : refuse(p, "disk '%s': its -drive does not parse",
						   p->disk_name);
	rc = check_drive(p, &o);
	qemu_opts_free(&o);
	if (!rc) {
		p->g->action[argi] = BLOCK_GRAPH_REPLACE;
		p->g->disk[argi] = disk;
	}
	return rc;
}

/* ---- putting it together ---- */

static int collect_blockdevs(struct planner *p)
{
	struct qemu_argv_iter it;
	int rc;

	p->bdevs = calloc((size_t)p->argc, sizeof(*p->bdevs));
	if (!p->bdevs)
		return -ENOMEM;
	qemu_argv_iter_init(&it, p->argv, p->argc);
	while ((rc = qemu_argv_next(&it)) > 0) {
		struct bdev *b;

		if (qemu_argv_is(&it, "snapshot") && p->ndisks)
			return refuse(p, "QEMU runs with -snapshot, which throws every disk write "
				      "away: the backup cannot restore what the guest sees");
		if (!qemu_argv_is(&it, "blockdev"))
			continue;
		b = &p->bdevs[p->nbdevs++];
		b->argi = qemu_argv_arg_index(&it);
		rc = block_graph_parse(it.arg, &b->o);
		if (rc == -ENOMEM)
			return rc;
		b->name = qemu_opts_get(&b->o, "node-name");
	}
	return rc < 0 ? refuse(p, "the command line ends in an option without its argument") : 0;
}

static int plan_disk(struct planner *p, int i)
{
	const struct block_graph_disk *d = &p->disks[i];
	struct bdev *root = d->node && *d->node ? bdev_named(p, d->node) : NULL;
	int argi;

	p->disk_name = d->id && *d->id ? d->id : d->node ? d->node : "?";
	if (root) {
		if (root->action != BLOCK_GRAPH_KEEP)
			return refuse(p, "disk '%s': its node %s is part of another replicated disk",
				      p->disk_name, root->name);
		return plan_blockdev(p, root, i);
	}
	argi = find_drive(p, d);
	if (argi < 0)
		return refuse(p, "disk '%s' (%s) is defined by no -drive or -blockdev of QEMU's "
			      "command line (added at run time?): the backup could not restore it; "
			      "%s", p->disk_name, d->file ? d->file : "no image", FORMS_HINT);
	return plan_drive(p, argi, i);
}

/* A node left in the restored graph must not lean on one that is gone. */
static int check_kept(struct planner *p)
{
	static const char *const child_keys[] = { "file", "backing", "data-file", NULL };

	for (int i = 0; i < p->nbdevs; i++) {
		struct bdev *b = &p->bdevs[i];

		if (b->action != BLOCK_GRAPH_KEEP)
			continue;
		for (const char *const *k = child_keys; *k; k++) {
			struct bdev *c = bdev_named(p, qemu_opts_get(&b->o, *k));

			if (c && c->action != BLOCK_GRAPH_KEEP)
				return refuse(p, "node %s uses node %s, which belongs to a replicated "
					      "disk: the restore replaces that disk's whole graph",
					      b->name ? b->name : "?", c->name);
		}
	}
	return 0;
}

static int check_devices(struct planner *p)
{
	struct qemu_argv_iter it;

	qemu_argv_iter_init(&it, p->argv, p->argc);
	while (qemu_argv_next(&it) > 0) {
		struct qemu_opts o = { NULL, 0 };
		struct bdev *b;
		int rc = 0;

		if (!qemu_argv_is(&it, "device") || qemu_opts_parse_any(it.arg, &o))
			continue;
		b = bdev_named(p, qemu_opts_get(&o, "drive"));
		if (b && b->action == BLOCK_GRAPH_DROP)
			rc = refuse(p, "a -device uses node %s, which lies under a replicated disk: "
				    "the restore replaces that disk's whole graph", b->name);
		qemu_opts_free(&o);
		if (rc)
			return rc;
	}
	return 0;
}

int block_graph_plan(char *const *argv, int argc, const struct block_graph_disk *disks, int n,
		     struct block_graph *g, char *err, size_t errlen)
{
	struct planner p = { .argv = argv, .argc = argc, .disks = disks, .ndisks = n, .g = g,
			     .err = err, .errlen = errlen };
	int rc;

	memset(g, 0, sizeof(*g));
	if (errlen)
		err[0] = '\0';
	if (argc < 1)
		return refuse(&p, "no command line");
	g->argc = argc;
	g->action = calloc((size_t)argc, sizeof(*g->action));
	g->disk = calloc((size_t)argc, sizeof(*g->disk));
	rc = g->action && g->disk ? collect_blockdevs(&p) : -ENOMEM;
	for (int i = 0; !rc && i < n; i++)
		rc = plan_disk(&p, i);
	if (!rc)
		rc = check_kept(&p);
	if (!rc)
		rc = check_devices(&p);
	for (int i = 0; !rc && i < p.nbdevs; i++)
		if (p.bdevs[i].action == BLOCK_GRAPH_DROP)
			g->action[p.bdevs[i].argi] = BLOCK_GRAPH_DROP;
	for (int i = 0; p.bdevs && i < p.nbdevs; i++)
		qemu_opts_free(&p.bdevs[i].o);
	free(p.bdevs);
	if (rc == -ENOMEM && errlen)
		snprintf(err, errlen, "out of memory");
	return rc;
}

void block_graph_free(struct block_graph *g)
{
	free(g->action);
	free(g->disk);
	memset(g, 0, sizeof(*g));
}
