/* The disk device's state, shared by dev_disk.c (the records and the
 * epoch pipeline) and disk_qemu.c (what it asks of QEMU: the disks, their
 * mirror jobs, our NBD nodes). */
#ifndef REMUS_DEV_DISK_H
#define REMUS_DEV_DISK_H

#include "proto.h"

#include <ev.h>
#include <json-c/json.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

struct replicator;

struct disk_rec {
	struct disk_rec *next;
	uint32_t disk, op;
	uint64_t offset, length;
	uint8_t hdr[PROTO_DISK_HDR_SIZE];
	uint8_t data[];                    /* WRITE only */
};

struct rec_list {
	struct disk_rec *head, **tail;
	size_t bytes;
	uint64_t n;
};

struct disk_device;

struct disk {
	struct disk_device *dev;
	uint32_t index;
	char *name;          /* query-block's device, or its node name */
	char *node;          /* the node blockdev-mirror starts from */
	char *file;          /* the image on this host, for the log */
	char *qdev;          /* the guest device on it, for the restore's check */
	uint64_t size;
	char sock[108];
	struct nbd_server *srv;
	bool node_added;     /* blockdev-add of our nbd node done */
	bool job;            /* our mirror job exists */
	bool ready;          /* BLOCK_JOB_READY seen */
	unsigned gen;        /* of our job's id: a cancelled job's late events are not ours */
	uint64_t writes, bytes;
	uint64_t sync_bytes;  /* of the disk covered in this initial copy */
};

struct disk_device {
	struct replicator *r;
	struct disk disks[PROTO_MAX_DISKS];
	uint32_t n;
	char sock_dir[208];        /* our NBD sockets: RUNTIME_DIR/nbd */
	bool sock_dir_made;
	/* shared with the NBD threads */
	pthread_mutex_t mu;
	pthread_cond_t room;
	uint64_t tag;              /* epoch that arriving writes belong to */
	struct rec_list pending;   /* arrived, of epoch `tag` */
	bool streaming;            /* epoch 0: pending goes out as it comes */
	bool early_asked;
	bool closing;              /* teardown: writers must not wait */
	bool barrier;              /* stop under way: writers must not wait */
	bool may_wait;             /* a barrier (or the link, in epoch 0) will make room */
	bool overflow;             /* writes were dropped: only a full resync helps */
	uint64_t overflows;
	struct rec_list test_unbuffered; /* --test-disk-unbuffered copies */
	size_t soft_cap, hard_cap;
	/* main loop only */
	ev_async wake;
	ev_timer retry;            /* epoch 0: the link was full */
	ev_timer watch;            /* keeps may_wait true to the replicator's state */
	struct rec_list captured;  /* the epoch in flight, until committed */
	uint64_t captured_epoch;
	bool sync_open;            /* epoch 0 waits for READY */
	uint64_t early_epochs, stalls;
};

/* disk_qemu.c */
/* Every writable disk but those the operator declared shared, into d. */
int disk_find(struct disk_device *d);
/* Cancel mirror jobs and remove NBD nodes a dead replicator left. */
void disk_clean_leftovers(struct replicator *r);
int disk_add_nbd_node(struct replicator *r, struct disk *k);
void disk_del_nbd_node(struct replicator *r, struct disk *k);
int disk_start_mirror(struct replicator *r, struct disk *k);
/* Cancel k's job and wait (bounded) until QEMU dropped it; on failure the
 * job stays ours, to be cancelled again. */
int disk_stop_mirror(struct replicator *r, struct disk *k);
const char *disk_json_str(struct json_object *o, const char *key);

#endif
