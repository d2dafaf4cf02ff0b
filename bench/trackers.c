/* Pause cost of the dirty-page trackers against guest RAM size.
 *
 * A child plays QEMU: it maps a shared tmpfs file of SIZE_MB, writes every
 * page once (a guest that has used all its RAM), then dirties random pages
 * at RATE_MB_S (one byte-changing write per page, paced every ~1 ms). The
 * parent plays the replicator: its own read-only mapping of the file, the
 * real tracker (replicator/tracker_compare.c, tracker_hash.c or
 * tracker_softdirty.c), initialised as the replicator does (compare, hash:
 * init + full_copy; soft-dirty: init_proc on the child's pid and the file +
 * full_copy). Each round: sleep EPOCH_MS, SIGSTOP the child and wait for
 * the stop, time the tracker's scan, SIGCONT. The first round (after the
 * full copy made with the writer going) is a warm-up and is not counted.
 *
 * Usage: trackers SIZE_MB RATE_MB_S ROUNDS EPOCH_MS KIND[,KIND...] [THREADS]
 * KIND is compare, hash or soft-dirty. Several (e.g. compare,hash) run side
 * by side on the same writer: each round, with the writer stopped, every
 * tracker scans in turn (the first in turn rotates each round), so a load
 * from elsewhere on the machine falls on all of them alike; a line per
 * tracker, then "paired: A/B scan_ratio_p50=R scan_ratio_p99=S" per tracker
 * B after the first, A (the median and 99th percentile of the rounds'
 * ratios of B's scan to A's). mem_* are printed for one tracker alone only
 * (side by side, their memory cannot be told apart).
 * The file is $TRK_FILE, or /dev/shm/trk.XXXXXX (mkstemp); made afresh (an
 * existing file or symlink is refused: /dev/shm is everyone's) and removed
 * at the end.
 * Prints: tracker=X size_mb=N threads=T rate_mb_s=R rounds=K dirty_p50=D
 *         scan_p50_ms=A scan_p99_ms=B [mem_mb=M mem_peak_mb=P mem_pct=Q]
 * (dirty_p50: pages the tracker reported per round, median; the scan is the
 * tracker's whole part of the pause, its capture. mem_mb: the tracker's
 * own memory after the last round, the growth of this process's anonymous
 * resident memory (RssAnon: guest RAM is a shared file mapping, not in it)
 * since just before init; mem_peak_mb: the most it was, read after the full
 * copy and after every round; mem_pct: mem_mb against guest RAM.)
 * soft-dirty adds how it read the log and, averaged per counted scan,
 * where the time went (struct softdirty_stats):
 *         log_read=ioctl|pagemap maps_ms= pagemap_ms= (the ioctl's or the
 *         read's) clear_ms= loop_ms= total_ms= flagged= absent= compared=
 *         cleared= (the share of scans that cleared the log: lazy_clear.h)
 * TRK_SOFTDIRTY_READ=pagemap|ioctl makes soft-dirty read the log that way
 * (default: PAGEMAP_SCAN where the kernel has it, Linux 6.7+).
 * TRK_SOFTDIRTY_ANYWAY=1 runs soft-dirty on a kernel without the log (this
 * host's): its reads (pagemap_ms) and clears (clear_ms) walk QEMU's page
 * tables as they would with it, so they time the part of a scan that grows
 * with RAM, natively; the writes are not found (nothing is flagged).
 * hash adds (struct hash_stats), per counted scan: hash_ms= (hashing all of
 * RAM) copy_ms= (copying and hashing the dirty pages), and staging_pages=
 * (slots resident at the end) staging_peak= changed_in_pause= */
#include "tracker.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096u

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void sleep_us(long us)
{
	struct timespec ts = { us / 1000000, (us % 1000000) * 1000 };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static uint64_t next(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

/* The writer ("QEMU"). Never returns. */
static void writer(const char *path, size_t npages, double rate_pages_s, int ready_fd)
{
	size_t size = npages * (size_t)PAGE;
	int fd = open(path, O_RDWR);
	uint8_t *p;
	double budget = 0, last, cap = rate_pages_s * 0.005;

	if (fd < 0)
		_exit(10);
	p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED)
		_exit(11);
	close(fd);
	for (size_t i = 0; i < npages; i++)
		p[i * PAGE] = 1;
	if (write(ready_fd, "r", 1) != 1)
		_exit(12);
	close(ready_fd);
	if (cap < 1)
		cap = 1;
	last = now();
	for (;;) {
		double t = now();

		/* At most 5 ms of backlog: time spent stopped is not made up. */
		budget += (t - last) * rate_pages_s;
		last = t;
		if (budget > cap)
			budget = cap;
		while (budget >= 1) {
			size_t pg = next() % npages;

			(*(volatile uint8_t *)(p + pg * PAGE + (next() % PAGE)))++;
			budget -= 1;
		}
		sleep_us(1000);
	}
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static int cmp_size(const void *a, const void *b)
{
	size_t x = *(const size_t *)a, y = *(const size_t *)b;

	return x < y ? -1 : x > y;
}

/* This process's anonymous resident memory, KiB (0 if unknown). */
static long rss_anon_kb(void)
{
	FILE *f = fopen("/proc/self/status", "r");
	char line[256];
	long kb = 0;

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "RssAnon: %ld kB", &kb) == 1)
			break;
	fclose(f);
	return kb;
}

/* Nearest rank. */
static double pct_d(const double *s, unsigned n, double p)
{
	unsigned k = (unsigned)(p * n + 0.999999);

	return s[k ? k - 1 : 0];
}

#define MAX_KINDS 3

/* One tracker under test. */
struct run {
	const struct tracker_ops *ops;
	struct tracker *t;
	double *scan_ms;       /* per counted round */
	size_t *dirty_n;
	struct softdirty_stats st0, st;
	struct hash_stats hs0, hs;
};

static const struct tracker_ops *kind_ops(const char *name)
{
	static const struct tracker_ops *const all[] = {
		&compare_tracker_ops, &hash_tracker_ops, &softdirty_tracker_ops,
	};

	for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
		if (!strcmp(name, all[i]->name))
			return all[i];
	return NULL;
}

static void print_run(struct run *u, size_t mb, unsigned threads, double rate, unsigned rounds)
{
	double k = 1e6 * (double)rounds;

	qsort(u->scan_ms, rounds, sizeof(*u->scan_ms), cmp_double);
	qsort(u->dirty_n, rounds, sizeof(*u->dirty_n), cmp_size);
	printf("tracker=%s size_mb=%zu threads=%u rate_mb_s=%g rounds=%u dirty_p50=%zu "
	       "scan_p50_ms=%.3f scan_p99_ms=%.3f", u->ops->name, mb, threads, rate, rounds,
	       u->dirty_n[(rounds + 1) / 2 - 1], pct_d(u->scan_ms, rounds, 0.50),
	       pct_d(u->scan_ms, rounds, 0.99));
	if (u->ops == &hash_tracker_ops)
		printf(" hash_ms=%.3f copy_ms=%.3f staging_pages=%" PRIu64 " staging_peak=%" PRIu64
		       " changed_in_pause=%" PRIu64, (double)(u->hs.ns_hash - u->hs0.ns_hash) / k,
		       (double)(u->hs.ns_copy - u->hs0.ns_copy) / k, u->hs.staging_pages,
		       u->hs.staging_peak, u->hs.changed_in_pause);
	if (u->ops == &softdirty_tracker_ops)
		printf(" log_read=%s maps_ms=%.3f pagemap_ms=%.3f clear_ms=%.3f loop_ms=%.3f "
		       "total_ms=%.3f flagged=%.0f absent=%.0f compared=%.0f cleared=%.2f",
		       u->st.read_by_ioctl ? "ioctl" : "pagemap",
		       (double)(u->st.ns_maps - u->st0.ns_maps) / k,
		       (double)(u->st.ns_pagemap - u->st0.ns_pagemap) / k,
		       (double)(u->st.ns_clear - u->st0.ns_clear) / k,
		       (double)(u->st.ns_loop - u->st0.ns_loop) / k,
		       (double)(u->st.ns_total - u->st0.ns_total) / k,
		       (double)(u->st.flagged - u->st0.flagged) / rounds,
		       (double)(u->st.absent - u->st0.absent) / rounds,
		       (double)(u->st.compared - u->st0.compared) / rounds,
		       1 - (double)(u->st.clears_skipped - u->st0.clears_skipped) / rounds);
}

int main(int argc, char **argv)
{
	char tmp[] = "/dev/shm/trk.XXXXXX";
	const char *path = getenv("TRK_FILE") ? getenv("TRK_FILE") : tmp;
	struct run runs[MAX_KINDS] = { { 0 } };
	unsigned nk = 0;
	size_t mb, npages, size;
	double rate, *ratio = NULL;
	unsigned rounds, epoch_ms, threads = 1;
	long anon0 = 0, anon = 0, anon_peak = 0;
	uint32_t *dirty;
	uint8_t *ram;
	int pfd[2], fd, rc = 0, status, ret = 1;
	char kinds[64], *save = NULL;
	pid_t pid;
	char c;

	if (argc < 6) {
		fprintf(stderr, "usage: %s SIZE_MB RATE_MB_S ROUNDS EPOCH_MS KIND[,KIND...] [THREADS]\n"
			"  KIND: compare, hash or soft-dirty\n", argv[0]);
		return 2;
	}
	mb = strtoul(argv[1], NULL, 10);
	rate = strtod(argv[2], NULL);
	rounds = (unsigned)strtoul(argv[3], NULL, 10);
	epoch_ms = (unsigned)strtoul(argv[4], NULL, 10);
	snprintf(kinds, sizeof(kinds), "%s", argv[5]);
	for (char *k = strtok_r(kinds, ",", &save); k; k = strtok_r(NULL, ",", &save)) {
		const struct tracker_ops *o = kind_ops(k);

		if (!o || nk == MAX_KINDS) {
			fprintf(stderr, "trackers: %s tracker %s\n", o ? "too many:" : "unknown", k);
			return 2;
		}
		for (unsigned i = 0; i < nk; i++)
			if (runs[i].ops == o) {
				fprintf(stderr, "trackers: %s twice\n", k);
				return 2;
			}
		runs[nk++].ops = o;
	}
	if (argc > 6)
		threads = (unsigned)strtoul(argv[6], NULL, 10);
	if (!mb || !rounds || !nk) {
		fprintf(stderr, "trackers: SIZE_MB, ROUNDS and a tracker are needed\n");
		return 2;
	}
	for (unsigned i = 0; i < nk; i++) {
		char why[256];

		if (runs[i].ops == &softdirty_tracker_ops && softdirty_supported(0, why, sizeof(why))) {
			if (!getenv("TRK_SOFTDIRTY_ANYWAY")) {
				fprintf(stderr, "trackers: soft-dirty not supported: %s\n", why);
				return 1;
			}
			fprintf(stderr, "trackers: soft-dirty not supported (%s): timing the log's "
				"reads and clears anyway, which walk the page tables all the same; "
				"no page is flagged, so nothing is compared\n", why);
		}
	}
	npages = mb * 256;
	size = npages * (size_t)PAGE;

	if (path == tmp)
		fd = mkostemp(tmp, O_CLOEXEC);
	else
		fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0 || ftruncate(fd, (off_t)size) < 0) {
		perror(path);
		return 2;
	}
	if (pipe(pfd) < 0)
		return 2;
	pid = fork();
	if (pid < 0)
		return 2;
	if (pid == 0) {
		close(pfd[0]);
		close(fd);
		writer(path, npages, rate * 256, pfd[1]);
	}
	close(pfd[1]);
	if (read(pfd[0], &c, 1) != 1) {
		fprintf(stderr, "trackers: the writer did not start\n");
		unlink(path);
		return 1;
	}
	close(pfd[0]);
	ram = mmap(NULL, size, PROT_READ, MAP_SHARED | MAP_POPULATE, fd, 0);
	close(fd);
	dirty = calloc(npages, sizeof(*dirty));
	ratio = calloc(rounds, sizeof(*ratio));
	for (unsigned i = 0; i < nk; i++) {
		runs[i].scan_ms = calloc(rounds, sizeof(*runs[i].scan_ms));
		runs[i].dirty_n = calloc(rounds, sizeof(*runs[i].dirty_n));
		if (!runs[i].scan_ms || !runs[i].dirty_n)
			ram = MAP_FAILED;
	}
	if (ram == MAP_FAILED || !dirty || !ratio) {
		perror("trackers: memory");
		goto out;
	}
	anon0 = rss_anon_kb();
	for (unsigned i = 0; i < nk; i++) {
		const struct tracker_ops *ops = runs[i].ops;

		if (ops->init_proc)
			rc = ops->init_proc(&runs[i].t, ram, npages, threads, pid, path);
		else
			rc = ops->init(&runs[i].t, ram, npages, threads);
		/* TRK_SOFTDIRTY_READ=pagemap|ioctl: how soft-dirty reads the log,
		 * whatever init chose (tracker.h, softdirty_set_log_read) */
		if (!rc && ops == &softdirty_tracker_ops && getenv("TRK_SOFTDIRTY_READ"))
			rc = softdirty_set_log_read(runs[i].t,
						    !strcmp(getenv("TRK_SOFTDIRTY_READ"), "ioctl"));
		if (rc) {
			fprintf(stderr, "trackers: %s init: %s\n", ops->name, strerror(-rc));
			if (runs[i].t)
				ops->fini(runs[i].t);
			runs[i].t = NULL;
			goto out;
		}
		tracker_full_copy(ops, runs[i].t, npages);
	}
	anon_peak = rss_anon_kb();

	for (unsigned r = 0; r <= rounds; r++) {
		sleep_us((long)epoch_ms * 1000);
		kill(pid, SIGSTOP);
		if (waitpid(pid, &status, WUNTRACED) != pid || !WIFSTOPPED(status)) {
			fprintf(stderr, "trackers: the writer ended (status %#x)\n", status);
			goto out;
		}
		for (unsigned q = 0; q < nk; q++) {
			struct run *u = &runs[(q + r) % nk];
			double a = now();
			size_t n = u->ops->scan(u->t, dirty);

			a = now() - a;
			if (r > 0) {
				u->scan_ms[r - 1] = a * 1e3;
				u->dirty_n[r - 1] = n;
			}
		}
		kill(pid, SIGCONT);
		for (unsigned i = 0; i < nk && r == 0; i++) {
			/* the warm-up is not counted */
			if (runs[i].ops == &softdirty_tracker_ops)
				softdirty_get_stats(runs[i].t, &runs[i].st0);
			if (runs[i].ops == &hash_tracker_ops)
				hash_get_stats(runs[i].t, &runs[i].hs0);
		}
		anon = rss_anon_kb();
		if (anon > anon_peak)
			anon_peak = anon;
	}
	for (unsigned i = 0; i < nk; i++) {
		struct run *u = &runs[i];

		if (u->ops == &softdirty_tracker_ops) {
			softdirty_get_stats(u->t, &u->st);
			if (u->st.full_scans)
				fprintf(stderr, "trackers: soft-dirty fell back to %llu full scans\n",
					(unsigned long long)u->st.full_scans);
		}
		if (u->ops == &hash_tracker_ops)
			hash_get_stats(u->t, &u->hs);
	}
	ret = 0;
out:
	kill(pid, SIGKILL);
	waitpid(pid, &status, 0);
	for (unsigned i = 0; i < nk; i++)
		if (runs[i].t)
			runs[i].ops->fini(runs[i].t);
	if (ram != MAP_FAILED)
		munmap(ram, size);
	unlink(path);
	if (!ret) {
		/* Per-round ratios first: print_run sorts the times. */
		double rp50[MAX_KINDS] = { 0 }, rp99[MAX_KINDS] = { 0 };

		for (unsigned i = 1; i < nk; i++) {
			for (unsigned r = 0; r < rounds; r++)
				ratio[r] = runs[i].scan_ms[r] / runs[0].scan_ms[r];
			qsort(ratio, rounds, sizeof(*ratio), cmp_double);
			rp50[i] = pct_d(ratio, rounds, 0.50);
			rp99[i] = pct_d(ratio, rounds, 0.99);
		}
		for (unsigned i = 0; i < nk; i++) {
			print_run(&runs[i], mb, threads, rate, rounds);
			if (nk == 1)
				printf(" mem_mb=%.1f mem_peak_mb=%.1f mem_pct=%.2f",
				       (double)(anon - anon0) / 1024, (double)(anon_peak - anon0) / 1024,
				       100.0 * (double)(anon - anon0) / 1024 / (double)mb);
			printf("\n");
		}
		for (unsigned i = 1; i < nk; i++)
			printf("paired: %s/%s size_mb=%zu threads=%u scan_ratio_p50=%.3f "
			       "scan_ratio_p99=%.3f\n", runs[i].ops->name, runs[0].ops->name, mb,
			       threads, rp50[i], rp99[i]);
	}
	fflush(stdout);
	for (unsigned i = 0; i < nk; i++) {
		free(runs[i].scan_ms);
		free(runs[i].dirty_n);
	}
	free(ratio);
	free(dirty);
	return ret;
}
