/* A fixed set of threads that share one piece of work per round: both
 * dirty-page trackers split their scan of guest RAM over it while the VM is
 * paused (its vCPUs leave the cores to us).
 *
 * scan_pool_init creates nthreads - 1 workers that sleep until a round.
 * scan_pool_run starts a round: each worker runs fn(ctx, idx) once with its
 * own idx (1..nthreads-1), the caller runs fn(ctx, 0) itself, and run
 * returns when every index has returned. No thread spins: workers wait on a
 * condition variable, the caller on another.
 *
 * Memory: whatever the caller wrote before scan_pool_run is visible to every
 * fn of that round, and whatever any fn wrote is visible to the caller after
 * run returns (both go through the pool's mutex). Within a round the fns run
 * at once: what they share is theirs to synchronise (atomics, own slices).
 *
 * One caller at a time: run and fini are not to be called concurrently.
 * The workers hold p's address: p must not move between init and fini. */
#ifndef REMUS_SCAN_POOL_H
#define REMUS_SCAN_POOL_H

#include <pthread.h>
#include <stdbool.h>

/* The most threads a tracker scans with: beyond a few, the scan is bound
 * by memory bandwidth, not cores. */
#define SCAN_POOL_MAX_THREADS 16

/* The thread count to use for asked (0 counts as 1). */
static inline unsigned scan_pool_threads(unsigned asked)
{
	return asked < 1 ? 1 : asked > SCAN_POOL_MAX_THREADS ? SCAN_POOL_MAX_THREADS : asked;
}

struct scan_worker;

struct scan_pool {
	void (*fn)(void *ctx, unsigned idx);
	void *ctx;
	struct scan_worker *workers;  /* nworkers of them, idx 1..nworkers */
	unsigned nworkers;
	pthread_mutex_t mu;
	pthread_cond_t go, done;
	unsigned long round;          /* bumped to wake the workers for one round */
	unsigned pending;             /* workers still in fn this round */
	bool quit;
};

/* nthreads >= 1 counts the caller: 1 creates no thread and run calls
 * fn(ctx, 0) alone. 0 or -errno (-EINVAL: nthreads 0 or no fn; -EAGAIN,
 * -ENOMEM: threads or memory refused); on failure nothing is left to clean
 * up (every thread started is joined). */
int scan_pool_init(struct scan_pool *p, unsigned nthreads, void (*fn)(void *ctx, unsigned idx),
		   void *ctx);
/* One round: fn(ctx, idx) for every idx in 0..nthreads-1, 0 on this thread. */
void scan_pool_run(struct scan_pool *p);
/* Stops and joins every worker. Only after a successful init; any number
 * of rounds, zero included. */
void scan_pool_fini(struct scan_pool *p);

#endif
