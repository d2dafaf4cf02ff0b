/* Where each replicated disk is defined on a QEMU command line, and what
 * the restore does with every -drive and -blockdev so that the restored
 * guest reads exactly its replica.
 *
 * A replicated disk's whole block graph is replaced, whatever its form:
 * its -drive by one over the agent's qcow2 overlay, its -blockdev node
 * (the one the guest device uses) by a qcow2 node of the same name over
 * the overlay, and every -blockdev below that node (its protocol node,
 * its own backing chain) is dropped: the replica already holds what the
 * guest saw through them. A form this cannot replace exactly is refused
 * with the reason and the form to use instead.
 *
 * The replicator plans at attach, to refuse a VM the backup could not
 * restore; the agent plans again at restore, from the same command line
 * and the same disk list, and trusts nothing the replicator decided. */
#ifndef REMUS_BLOCK_GRAPH_H
#define REMUS_BLOCK_GRAPH_H

#include <stdbool.h>
#include <stddef.h>

/* A replicated disk as QEMU's query-block names it. */
struct block_graph_disk {
	const char *id;   /* "device": a -drive's id; empty for a -blockdev */
	const char *node; /* "inserted.node-name": the node the device uses */
	const char *file; /* "inserted.file": the top image, as given */
};

enum block_graph_action {
	BLOCK_GRAPH_KEEP = 0, /* not a replicated disk's: the allowlist decides */
	BLOCK_GRAPH_REPLACE,  /* the definition of disk[i]: rebuilt over its overlay */
	BLOCK_GRAPH_DROP,     /* a -blockdev below a replaced node */
};

struct block_graph {
	int argc;
	/* Per argv index of a -drive or -blockdev argument; KEEP elsewhere. */
	enum block_graph_action *action;
	int *disk; /* for REPLACE: the index into the disks planned */
};

/* Plan argv (argc entries, argv[0] the program) for disks[0..n-1]. 0, or
 * -EINVAL with the reason in err (-ENOMEM). g is freed by
 * block_graph_free either way. */
int block_graph_plan(char *const *argv, int argc, const struct block_graph_disk *disks, int n,
		     struct block_graph *g, char *err, size_t errlen);
void block_graph_free(struct block_graph *g);

/* A -blockdev argument's node-name and the options of it that reach the
 * guest (discard, detect-zeroes), for the node that replaces it. NULL
 * when the text does not parse. */
struct qemu_opts;
int block_graph_parse(const char *arg, struct qemu_opts *o);
const char *block_graph_driver(const struct qemu_opts *o);

#endif
