/* The threads that share a tracker's scan: scan_pool.h. */
#include "scan_pool.h"

#include <errno.h>
#include <stdlib.h>

struct scan_worker {
	struct scan_pool *pool;
	unsigned idx;
	pthread_t thread;
};

/* Sleep until a round newer than the last one run, run it, report it done.
 * A worker cannot miss a round nor run one twice: the caller waits for every
 * worker's report before it starts the next round. */
static void *worker(void *arg)
{
	struct scan_worker *w = arg;
	struct scan_pool *p = w->pool;
	unsigned long seen = 0;

	pthread_mutex_lock(&p->mu);
	for (;;) {
		while (!p->quit && p->round == seen)
			pthread_cond_wait(&p->go, &p->mu);
		if (p->quit)
			break;
		seen = p->round;
		pthread_mutex_unlock(&p->mu);
		p->fn(p->ctx, w->idx);
		pthread_mutex_lock(&p->mu);
		if (--p->pending == 0)
			pthread_cond_signal(&p->done);
	}
	pthread_mutex_unlock(&p->mu);
	return NULL;
}

static void stop_workers(struct scan_pool *p)
{
	pthread_mutex_lock(&p->mu);
	p->quit = true;
	pthread_cond_broadcast(&p->go);
	pthread_mutex_unlock(&p->mu);
	for (unsigned i = 0; i < p->nworkers; i++)
		pthread_join(p->workers[i].thread, NULL);
	p->nworkers = 0;
}

/* glibc's never fail with default attributes; checked all the same. */
static int sync_init(struct scan_pool *p)
{
	int r = pthread_mutex_init(&p->mu, NULL);

	if (r)
		return -r;
	r = pthread_cond_init(&p->go, NULL);
	if (!r) {
		r = pthread_cond_init(&p->done, NULL);
		if (r)
			pthread_cond_destroy(&p->go);
	}
	if (r)
		pthread_mutex_destroy(&p->mu);
	return -r;
}

static void sync_destroy(struct scan_pool *p)
{
	pthread_mutex_destroy(&p->mu);
	pthread_cond_destroy(&p->go);
	pthread_cond_destroy(&p->done);
}

int scan_pool_init(struct scan_pool *p, unsigned nthreads, void (*fn)(void *ctx, unsigned idx),
		   void *ctx)
{
	int rc;

	if (!nthreads || !fn)
		return -EINVAL;
	*p = (struct scan_pool){ .fn = fn, .ctx = ctx };
	if (nthreads > 1 && !(p->workers = calloc(nthreads - 1, sizeof(*p->workers))))
		return -ENOMEM;
	rc = sync_init(p);
	if (rc)
		goto fail_sync;
	for (unsigned i = 0; i < nthreads - 1; i++) {
		struct scan_worker *w = &p->workers[i];
		int r;

		*w = (struct scan_worker){ .pool = p, .idx = i + 1 };
		r = pthread_create(&w->thread, NULL, worker, w);
		if (r) {
			rc = -r;
			goto fail;
		}
		p->nworkers++;
	}
	return 0;
fail:
	stop_workers(p);
	sync_destroy(p);
fail_sync:
	free(p->workers);
	p->workers = NULL;
	return rc;
}

void scan_pool_run(struct scan_pool *p)
{
	/* Whatever the caller wrote before is published by this unlock, and a
	 * worker sees the new round only after taking the same mutex. */
	pthread_mutex_lock(&p->mu);
	p->pending = p->nworkers;
	p->round++;
	pthread_cond_broadcast(&p->go);
	pthread_mutex_unlock(&p->mu);

	p->fn(p->ctx, 0);

	/* Likewise back: each worker's results precede its unlock. */
	pthread_mutex_lock(&p->mu);
	while (p->pending)
		pthread_cond_wait(&p->done, &p->mu);
	pthread_mutex_unlock(&p->mu);
}

void scan_pool_fini(struct scan_pool *p)
{
	stop_workers(p);
	sync_destroy(p);
	free(p->workers);
	p->workers = NULL;
}
