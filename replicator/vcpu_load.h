/* How busy the guest's vCPUs were while the VM ran: the CPU time of QEMU's
 * vCPU threads (from /proc/QEMU/task/TID/schedstat), per thread and per
 * millisecond of run time.
 *
 * The epoch policy needs it to tell a VM whose pauses cost it work (its
 * vCPUs busy all the time they run) from one that waits for requests (its
 * vCPUs mostly halted): pausing the second one as often as replies wait
 * costs it nothing but the pause itself (docs/EPOCHS.md).
 *
 * The threads come from QMP `query-cpus-fast` (thread-id per vCPU; one
 * thread for all under TCG with thread=single, counted once). Anything
 * that cannot be read makes the load unknown (< 0), which the policy
 * treats as fully busy: the old, safe bound. */
#ifndef REMUS_VCPU_LOAD_H
#define REMUS_VCPU_LOAD_H

#include <json-c/json.h>
#include <stdint.h>
#include <sys/types.h>

#define VCPU_LOAD_MAX_THREADS 256

/* The start of a measured interval. */
struct vcpu_mark {
	uint64_t ns;                /* the threads' CPU time then */
	double ms;                  /* when, on the monotonic clock */
	int valid;                  /* ns / ms hold a mark */
};

struct vcpu_load {
	pid_t qemu;
	int nthreads;               /* 0: unknown (no usable query-cpus-fast) */
	pid_t tids[VCPU_LOAD_MAX_THREADS];
	struct vcpu_mark epoch;     /* vcpu_load_mark / vcpu_load_busy's */
};

/* The vCPU threads from query-cpus-fast's return value (an array); the
 * result owns nothing. 0, or -EINVAL when no thread id could be used
 * (the load stays unknown). */
int vcpu_load_init(struct vcpu_load *l, pid_t qemu, struct json_object *cpus);
/* Start a measured interval now (the VM resumed). */
void vcpu_load_mark(struct vcpu_load *l, double now_ms);
/* The vCPUs' busy fraction (0..1) since the mark, per thread; < 0 when
 * unknown (no mark, no threads, a thread gone). Marks again. */
double vcpu_load_busy(struct vcpu_load *l, double now_ms);
/* The same over an interval of the caller's own (m), for a second look
 * within an epoch that must not disturb the epoch's measure. */
void vcpu_load_mark_at(const struct vcpu_load *l, struct vcpu_mark *m, double now_ms);
double vcpu_load_busy_since(const struct vcpu_load *l, struct vcpu_mark *m, double now_ms);

/* The CPU time (ns) in a /proc/.../schedstat text: its first field. */
int vcpu_load_parse_schedstat(const char *text, uint64_t *ns);

#endif
