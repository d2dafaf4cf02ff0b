/* Pause cost of the dirty-page trackers against guest RAM size.
 *
 * A child plays QEMU: it maps a shared tmpfs file of SIZE_MB, writes every
 * page once (a guest that has used all its RAM), then dirties random pages
 * at RATE_MB_S (one byte-changing write per page, paced every ~1 ms). The
 * parent plays the replicator: its own read-only mapping of the file, the
 * real tracker (replicator/tracker_compare.c or tracker_softdirty.c),
 * initialised as the replicator does (compare: init + full_copy;
 * soft-dirty: init_proc on the child's pid and the file + full_copy). Each
 * round: sleep EPOCH_MS, SIGSTOP the child and wait for the stop, time the
 * tracker's scan, SIGCONT. The first round (after the full copy made with
 * the writer going) is a warm-up and is not counted.
 *
 * Usage: trackers SIZE_MB RATE_MB_S ROUNDS EPOCH_MS compare|soft-dirty [THREADS]
 * The file is $TRK_FILE, or /dev/shm/trk.XXXXXX (mkstemp); made afresh (an
 * existing file or symlink is refused: /dev/shm is everyone's) and removed
 * at the end.
 * Prints: tracker=X size_mb=N threads=T rate_mb_s=R rounds=K dirty_p50=D
 *         scan_p50_ms=A scan_p99_ms=B
 * (dirty_p50: pages the tracker reported per round, median); soft-dirty adds,
 * averaged per counted scan, where the time went (struct softdirty_stats):
 *         maps_ms= pagemap_ms= clear_ms= loop_ms= total_ms= flagged= absent=
 *         compared= */
#include "tracker.h"

#include <errno.h>
#include <fcntl.h>
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

/* Nearest rank. */
static double pct_d(const double *s, unsigned n, double p)
{
	unsigned k = (unsigned)(p * n + 0.999999);

	return s[k ? k - 1 : 0];
}

int main(int argc, char **argv)
{
	char tmp[] = "/dev/shm/trk.XXXXXX";
	const char *path = getenv("TRK_FILE") ? getenv("TRK_FILE") : tmp;
	const struct tracker_ops *ops;
	size_t mb, npages, size, *dirty_n;
	double rate, *scan_ms;
	unsigned rounds, epoch_ms, threads = 1;
	struct softdirty_stats st0 = { 0 }, st = { 0 };
	struct tracker *t;
	uint32_t *dirty;
	uint8_t *ram;
	int pfd[2], fd, rc, status;
	pid_t pid;
	char c;

	if (argc < 6) {
		fprintf(stderr, "usage: %s SIZE_MB RATE_MB_S ROUNDS EPOCH_MS compare|soft-dirty "
			"[THREADS]\n", argv[0]);
		return 2;
	}
	mb = strtoul(argv[1], NULL, 10);
	rate = strtod(argv[2], NULL);
	rounds = (unsigned)strtoul(argv[3], NULL, 10);
	epoch_ms = (unsigned)strtoul(argv[4], NULL, 10);
	if (!strcmp(argv[5], "compare"))
		ops = &compare_tracker_ops;
	else if (!strcmp(argv[5], "soft-dirty"))
		ops = &softdirty_tracker_ops;
	else {
		fprintf(stderr, "trackers: unknown tracker %s\n", argv[5]);
		return 2;
	}
	if (argc > 6)
		threads = (unsigned)strtoul(argv[6], NULL, 10);
	if (!mb || !rounds) {
		fprintf(stderr, "trackers: SIZE_MB and ROUNDS must be > 0\n");
		return 2;
	}
	if (ops == &softdirty_tracker_ops) {
		char why[256];

		if (softdirty_supported(0, why, sizeof(why))) {
			fprintf(stderr, "trackers: soft-dirty not supported: %s\n", why);
			return 1;
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
	scan_ms = calloc(rounds, sizeof(*scan_ms));
	dirty_n = calloc(rounds, sizeof(*dirty_n));
	if (ram == MAP_FAILED || !dirty || !scan_ms || !dirty_n) {
		perror("trackers: memory");
		kill(pid, SIGKILL);
		unlink(path);
		return 2;
	}
	if (ops->init_proc)
		rc = ops->init_proc(&t, ram, npages, threads, pid, path);
	else
		rc = ops->init(&t, ram, npages, threads);
	if (rc) {
		fprintf(stderr, "trackers: %s init: %s\n", ops->name, strerror(-rc));
		kill(pid, SIGKILL);
		unlink(path);
		return 1;
	}
	tracker_full_copy(ops, t, npages);

	for (unsigned r = 0; r <= rounds; r++) {
		double a;
		size_t n;

		sleep_us((long)epoch_ms * 1000);
		kill(pid, SIGSTOP);
		if (waitpid(pid, &status, WUNTRACED) != pid || !WIFSTOPPED(status)) {
			fprintf(stderr, "trackers: the writer ended (status %#x)\n", status);
			ops->fini(t);
			unlink(path);
			return 1;
		}
		a = now();
		n = ops->scan(t, dirty);
		a = now() - a;
		kill(pid, SIGCONT);
		if (r == 0 && ops == &softdirty_tracker_ops)
			softdirty_get_stats(t, &st0);  /* the warm-up is not counted */
		if (r > 0) {
			scan_ms[r - 1] = a * 1e3;
			dirty_n[r - 1] = n;
		}
	}
	kill(pid, SIGKILL);
	waitpid(pid, &status, 0);
	if (ops == &softdirty_tracker_ops) {
		softdirty_get_stats(t, &st);
		if (st.full_scans)
			fprintf(stderr, "trackers: soft-dirty fell back to %llu full scans\n",
				(unsigned long long)st.full_scans);
	}
	ops->fini(t);
	munmap(ram, size);
	unlink(path);

	qsort(scan_ms, rounds, sizeof(*scan_ms), cmp_double);
	qsort(dirty_n, rounds, sizeof(*dirty_n), cmp_size);
	printf("tracker=%s size_mb=%zu threads=%u rate_mb_s=%g rounds=%u dirty_p50=%zu "
	       "scan_p50_ms=%.3f scan_p99_ms=%.3f", ops->name, mb, threads, rate, rounds,
	       dirty_n[(rounds + 1) / 2 - 1], pct_d(scan_ms, rounds, 0.50),
	       pct_d(scan_ms, rounds, 0.99));
	if (ops == &softdirty_tracker_ops) {
		double k = 1e6 * (double)rounds;

		printf(" maps_ms=%.3f pagemap_ms=%.3f clear_ms=%.3f loop_ms=%.3f total_ms=%.3f "
		       "flagged=%.0f absent=%.0f compared=%.0f",
		       (double)(st.ns_maps - st0.ns_maps) / k,
		       (double)(st.ns_pagemap - st0.ns_pagemap) / k,
		       (double)(st.ns_clear - st0.ns_clear) / k,
		       (double)(st.ns_loop - st0.ns_loop) / k,
		       (double)(st.ns_total - st0.ns_total) / k,
		       (double)(st.flagged - st0.flagged) / rounds,
		       (double)(st.absent - st0.absent) / rounds,
		       (double)(st.compared - st0.compared) / rounds);
	}
	printf("\n");
	fflush(stdout);
	unlink(path);
	return 0;
}
