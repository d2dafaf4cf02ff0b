/* Figures for `remusctl status`: recent epochs in a ring, totals since
 * attach. */
#ifndef REMUS_STATS_H
#define REMUS_STATS_H

#include "ring.h"

#include <stddef.h>
#include <stdint.h>

struct replicator_stats {
	uint64_t epochs_committed;
	uint64_t last_acked_epoch;
	uint64_t epochs_nacked;
	uint64_t resyncs;
	uint64_t early_epochs;          /* ended early at a device's request */
	uint64_t reply_waits;           /* a reply's quiet prolonged: vCPUs busy */
	uint64_t stalls;                /* epoch_watchdog found protection standing still */
	struct sample_ring pause_ms;    /* stop to resumed */
	struct sample_ring stop_ms;     /* of which: QMP stop */
	struct sample_ring capture_ms;  /* of which: all devices' capture */
	struct sample_ring resume_ms;   /* of which: QMP cont */
	struct sample_ring dirty_pages;
	struct sample_ring checkpoint_bytes; /* on the wire, headers included */
	struct sample_ring ack_ms;      /* resume -> ack */
	uint64_t dirty_pages_total;
	uint64_t bytes_sent_prev;
	double link_bytes_per_s;        /* over the last stats interval */
};

#endif
