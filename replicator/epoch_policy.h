/* How long the next epoch runs. Too short and the VM spends its time
 * paused while the link carries the same hot pages again and again; too
 * long and every reply waits. A policy sees each finished epoch and the
 * output waiting in the net buffer, and answers with a length and a reason
 * that `remusctl status` shows.
 *
 *   fixed        always --epoch-ms
 *   dirty-rate   the shortest epoch that keeps the pause's share of the
 *                VM's time under --max-overhead and the checkpoint
 *                within what the link carries in one epoch, from the
 *                pauses, dirty pages and link throughput of recent epochs
 *   output-aware end the epoch soon after output starts waiting in the net
 *                buffer (sooner after a reply than after a bare TCP ACK),
 *                stretch it to --epoch-max-ms when the VM is quiet
 *                (after Gerofi and Ishikawa, 2011)
 *   hybrid       output-aware, and an epoch cut short by output runs
 *                at least as long as its pause scaled by how saturated
 *                the vCPUs were while the VM ran (vcpu_load.h): a VM with
 *                time to spare gets its replies out after one pause and
 *                one ack, while a VM with more work than time never
 *                spends more than half of its time paused, as before
 *
 * Pure arithmetic on the samples it is given (times in ms), so that it can
 * be tested against synthetic traces. */
#ifndef REMUS_EPOCH_POLICY_H
#define REMUS_EPOCH_POLICY_H

#include <stdbool.h>
#include <stdint.h>

enum epoch_policy_kind {
	POLICY_FIXED,
	POLICY_DIRTY_RATE,
	POLICY_OUTPUT_AWARE,
	POLICY_HYBRID,
};

struct epoch_policy_cfg {
	enum epoch_policy_kind kind;
	unsigned fixed_ms;        /* --epoch-ms: fixed length, and the first epochs' */
	unsigned min_ms, max_ms;  /* --epoch-min-ms / --epoch-max-ms */
	double max_overhead;      /* --max-overhead: pause share of the VM's time */
	unsigned output_delay_ms; /* output waits at most this long for its epoch to end */
};

/* One finished epoch. */
struct epoch_sample {
	double run_ms;            /* the VM ran this long before the barrier */
	double pause_ms;
	uint64_t dirty_pages;
	uint64_t checkpoint_bytes;
	double link_bytes_per_s;  /* 0: not known yet */
	/* The vCPUs' busy fraction while the VM ran (0..1); not known: the
	 * policy takes them for fully busy. */
	bool vcpu_busy_known;
	double vcpu_busy;
};

struct epoch_policy {
	struct epoch_policy_cfg cfg;
	double length_ms;         /* the current choice while nothing waits */
	char reason[128];
	/* smoothed over recent epochs */
	bool have_samples;
	double pause_ms, dirty_pages_per_ms, bytes_per_page, link_bytes_per_ms;
	double vcpu_busy;         /* 1 until measured */
};

void epoch_policy_init(struct epoch_policy *p, const struct epoch_policy_cfg *cfg);
/* After each epoch: learn from it and choose the next length. */
void epoch_policy_observe(struct epoch_policy *p, const struct epoch_sample *s);
/* A reply (any frame but a bare TCP ACK, frame_kind.h) ends its epoch
 * once the VM has sent no further reply for this long: a burst of
 * segments goes in one epoch, and a client waits one pause and one ack
 * plus this, not --output-delay-ms. The epoch's timer keeps it under a
 * millisecond (common/fine_timer.h): about 0.7 ms in practice. */
#define EPOCH_REPLY_QUIET_MS 0.5
/* ... unless its vCPUs were busy at least this share of the time since
 * the epoch's first reply (after a wait: since the last look): the VM is
 * still answering (more connections' requests), and its replies join the
 * same epoch, up to --output-delay-ms after the first frame waited. */
#define EPOCH_REPLY_BUSY 0.5

/* When the running epoch should end, in ms after it started, given that
 * output has waited since output_since_ms and the last reply came at
 * reply_at_ms (both < 0: none). */
double epoch_policy_deadline(const struct epoch_policy *p, double output_since_ms,
			     double reply_at_ms);

/* Output waiting ends this policy's epochs early (output-aware, hybrid). */
bool epoch_policy_output_driven(const struct epoch_policy *p);
/* A reply's quiet ran out at now_ms into the epoch, the vCPUs busy this
 * share of it (< 0 unknown): true if the epoch should wait one more quiet
 * interval instead of ending now. */
bool epoch_policy_reply_extends(const struct epoch_policy *p, double output_since_ms,
				double now_ms, double busy);

const char *epoch_policy_name(enum epoch_policy_kind k);
/* "fixed", "dirty-rate", "output-aware", "hybrid": 0, or -1. */
int epoch_policy_parse(const char *name, enum epoch_policy_kind *out);

#endif
