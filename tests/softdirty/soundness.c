/* Soundness test of the soft-dirty tracker (replicator/tracker_softdirty.c),
 * meant to run as a static binary in a VM booted with Debian's kernel
 * (tests/integration/test_softdirty.sh): this machine's kernel has no
 * CONFIG_MEM_SOFT_DIRTY.
 *
 * A child plays QEMU: it maps a shared file and writes random bytes into
 * random pages at random moments, and now and then drops a written page's
 * PTE with MADV_DONTNEED (as reclaim would: the soft-dirty bit goes with it).
 * The parent plays the replicator: its own mapping of the file, the real
 * tracker pointed at the child's pid. Each round it stops the child
 * (SIGSTOP, as QMP stop stops the vCPUs), runs the tracker's scan, compares
 * the mapping with the previous round's copy page by page, and checks that
 * every changed page is in the tracker's set (missed) and that the tracker's
 * staged copy of every page equals the live page (stale). Then SIGCONT.
 *
 * Usage: soundness FILE [MIB [ROUNDS [SEED]]]   (defaults 64, 200, time)
 * SOUNDNESS_IGNORE_SUPPORT=1 runs it where soft-dirty does not work (a
 * negative control: it must then report missed pages).
 * SOUNDNESS_PRESSURE=1: run where the kernel swaps pages of the file out
 * (a memory cgroup limit below this test's size, swap on): the rounds then
 * follow the real reclaim path, not only MADV_DONTNEED, and the test
 * reports how many of the file's pages were in swap, and waits longer now
 * and then, so that pages nobody touched for a while go out.
 * SOUNDNESS_THREADS=N gives the tracker N scanning threads (default 1).
 * SOUNDNESS_CLEAR_EVERY=N clears the log at every N-th scan only (the
 * tracker's lazy clearing, forced: the bits then pile up over N rounds);
 * the default is the tracker's own choice, by cost.
 * SOUNDNESS_PAGEMAP_READ=1 reads the log by the pagemap read even where the
 * kernel has PAGEMAP_SCAN (Linux 6.7+), which the tracker uses by default;
 * "softdirty: log read by ..." says which ran.
 * Prints "softdirty: rounds=R changed=C missed=M extra=E ..." and
 * "SOUNDNESS PASS" or "SOUNDNESS FAIL"; exit 0 on pass. */
#include "tracker.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096u

static uint64_t rng;

static uint64_t next(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

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

/* The writer ("QEMU"). Never returns. */
static void child(const char *path, size_t npages, int ready_fd)
{
	size_t size = npages * (size_t)PAGE, hot = npages / 8 ? npages / 8 : 1;
	int fd = open(path, O_RDWR);
	uint8_t *p;

	if (fd < 0)
		_exit(10);
	p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED)
		_exit(11);
	close(fd);
	/* Fault in the first half only: the rest stays not present until the
	 * first write reaches it. */
	for (size_t i = 0; i < npages / 2; i++)
		p[i * PAGE] = (uint8_t)i;
	if (write(ready_fd, "r", 1) != 1)
		_exit(12);
	close(ready_fd);
	/* Bounded: stops writing after this many writes (the parent kills it
	 * long before, normally). */
	for (long writes = 0; writes < 20000000;) {
		unsigned burst = 1 + (unsigned)(next() % 16);

		for (unsigned k = 0; k < burst; k++, writes++) {
			size_t pg = next() % 10 < 7 ? next() % hot : next() % npages;
			uint8_t *a = p + pg * PAGE + next() % PAGE;
			unsigned what = (unsigned)(next() % 1000);

			*(volatile uint8_t *)a = (uint8_t)next();
			if (what < 20)          /* drop the PTE, bit and all */
				madvise(p + pg * PAGE, PAGE, MADV_DONTNEED);
			else if (what < 22)     /* a long run: 64 pages (THP too) */
				memset(p + (next() % (npages - 64 > 0 ? npages - 64 : 1)) * PAGE
					 + next() % PAGE, (int)next(), 64 * PAGE - PAGE);
		}
		sleep_us((long)(next() % 800));
	}
	for (;;)
		pause();
}

/* kB of the file's pages now in swap: the "Swap:" of our own mapping of it
 * in /proc/self/smaps (for shmem it counts the file's swapped pages). */
static unsigned long file_swapped_kb(const void *map)
{
	FILE *f = fopen("/proc/self/smaps", "r");
	char line[256];
	unsigned long v = 0;
	bool ours = false;

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f)) {
		unsigned long lo, hi;
		char perms[8];

		if (sscanf(line, "%lx-%lx %7s", &lo, &hi, perms) == 3)  /* a mapping's header */
			ours = lo == (unsigned long)(uintptr_t)map;
		else if (ours && !strncmp(line, "Swap:", 5))
			v = strtoul(line + 5, NULL, 10);
	}
	fclose(f);
	return v;
}

static unsigned long meminfo(const char *key)
{
	FILE *f = fopen("/proc/meminfo", "r");
	char line[256];
	unsigned long v = 0;
	size_t n = strlen(key);

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, key, n) && line[n] == ':')
			v = strtoul(line + n + 1, NULL, 10);
	fclose(f);
	return v;
}

int main(int argc, char **argv)
{
	const char *path;
	size_t mib = 64, npages, size;
	unsigned rounds = 200;
	uint64_t seed;
	uint64_t changed = 0, missed = 0, extra = 0, stale = 0, reported = 0;
	uint8_t *ram, *prev, *mark;
	uint32_t *dirty;
	struct tracker *t;
	struct softdirty_stats st;
	char why[256];
	int pfd[2], fd, rc, status;
	pid_t pid;
	bool pressure = getenv("SOUNDNESS_PRESSURE") != NULL;
	unsigned long swapped_max = 0, swapped_rounds = 0, swap_used_max = 0;
	double t0 = now(), pause_total = 0, pause_max = 0;
	bool child_gone = false;
	unsigned threads = 1;

	if (argc < 2) {
		fprintf(stderr, "usage: %s FILE [MIB [ROUNDS [SEED]]]\n", argv[0]);
		return 2;
	}
	path = argv[1];
	if (argc > 2)
		mib = strtoul(argv[2], NULL, 10);
	if (argc > 3)
		rounds = (unsigned)strtoul(argv[3], NULL, 10);
	seed = argc > 4 ? strtoull(argv[4], NULL, 10) : (uint64_t)time(NULL) * 2654435761u;
	rng = seed | 1;
	npages = mib * 256;
	size = npages * (size_t)PAGE;
	if (npages < 128) {
		fprintf(stderr, "soundness: at least 1 MiB\n");
		return 2;
	}
	if (getenv("SOUNDNESS_THREADS"))
		threads = (unsigned)strtoul(getenv("SOUNDNESS_THREADS"), NULL, 10);
	printf("softdirty: file=%s size=%zu MiB rounds=%u seed=%" PRIu64 " threads=%u\n", path,
	       mib, rounds, seed, threads);

	rc = softdirty_supported(0, why, sizeof(why));
	printf("softdirty: supported=%s (%s)\n", rc ? "no" : "yes", why);
	/* SOUNDNESS_IGNORE_SUPPORT=1: run anyway, as a negative control on a
	 * kernel without soft-dirty (no bit is ever set: the test must fail). */
	if (rc && !getenv("SOUNDNESS_IGNORE_SUPPORT")) {
		printf("SOUNDNESS FAIL\n");
		return 1;
	}

	fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
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
		rng = seed * 7 + 3;
		child(path, npages, pfd[1]);
	}
	close(pfd[1]);
	{
		char c;

		if (read(pfd[0], &c, 1) != 1) {
			printf("softdirty: the writer did not start\nSOUNDNESS FAIL\n");
			return 1;
		}
		close(pfd[0]);
	}
	/* The replicator's mapping: read-only, populated, not the child's. */
	ram = mmap(NULL, size, PROT_READ, MAP_SHARED | MAP_POPULATE, fd, 0);
	close(fd);
	prev = malloc(size);
	mark = calloc(npages, 1);
	dirty = calloc(npages, sizeof(*dirty));
	if (ram == MAP_FAILED || !prev || !mark || !dirty) {
		perror("soundness: memory");
		kill(pid, SIGKILL);
		return 2;
	}
	rc = softdirty_tracker_ops.init_proc(&t, ram, npages, threads, pid, path);
	if (rc) {
		printf("softdirty: tracker init: %s\nSOUNDNESS FAIL\n", strerror(-rc));
		kill(pid, SIGKILL);
		return 1;
	}
	if (getenv("SOUNDNESS_CLEAR_EVERY"))
		softdirty_set_clear_every(t, (unsigned)strtoul(getenv("SOUNDNESS_CLEAR_EVERY"),
							       NULL, 10));
	if (getenv("SOUNDNESS_PAGEMAP_READ"))
		softdirty_set_log_read(t, false);
	softdirty_get_stats(t, &st);
	printf("softdirty: log read by %s\n", st.read_by_ioctl ? "PAGEMAP_SCAN" : "pagemap");
	/* As attach does: the first copy with the writer running. */
	tracker_full_copy(&softdirty_tracker_ops, t, npages);
	if (pressure)
		printf("softdirty: memory pressure: swap %lu kB\n", meminfo("SwapTotal"));

	for (unsigned r = 0; r <= rounds; r++) {
		size_t n, c = 0;
		double a;

		/* Under pressure, now and then a long round: pages nobody reads
		 * for a while are the ones reclaim takes. */
		if (pressure && r % 5 == 4)
			sleep_us(500000);
		else
			sleep_us(1000 + (long)(next() % 9000));
		if (!child_gone) {
			kill(pid, SIGSTOP);
			if (waitpid(pid, &status, WUNTRACED) != pid || !WIFSTOPPED(status)) {
				printf("softdirty: the writer ended early (status %#x)\n", status);
				child_gone = true;
			}
		}
		a = now();
		n = softdirty_tracker_ops.scan(t, dirty);
		a = now() - a;
		pause_total += a;
		if (a > pause_max)
			pause_max = a;
		if (pressure) {
			unsigned long kb = file_swapped_kb(ram);
			unsigned long used = meminfo("SwapTotal") - meminfo("SwapFree");

			if (used > swap_used_max)
				swap_used_max = used;

			swapped_rounds += kb > 0;
			if (kb > swapped_max)
				swapped_max = kb;
		}
		for (size_t i = 0; i < n; i++)
			mark[dirty[i]] = 1;
		/* Round 0 follows the torn first copy: only staleness applies. */
		for (size_t i = 0; i < npages; i++) {
			const uint8_t *live = ram + i * PAGE;

			if (memcmp(softdirty_tracker_ops.page(t, (uint32_t)i), live, PAGE))
				stale++;
			if (r > 0 && memcmp(prev + i * PAGE, live, PAGE)) {
				c++;
				if (!mark[i])
					missed++;
			} else if (r > 0 && mark[i]) {
				extra++;
			}
			mark[i] = 0;
		}
		memcpy(prev, ram, size);
		if (r > 0) {
			changed += c;
			reported += n;
		}
		if (!child_gone)
			kill(pid, SIGCONT);
	}
	kill(pid, SIGKILL);
	waitpid(pid, &status, 0);
	if (pressure)
		printf("softdirty: file pages in swap: up to %lu kB, in %lu of %u rounds "
		       "(swap in use: up to %lu kB)\n", swapped_max, swapped_rounds, rounds + 1,
		       swap_used_max);
	softdirty_get_stats(t, &st);
	softdirty_tracker_ops.fini(t);

	printf("softdirty: rounds=%u changed=%" PRIu64 " missed=%" PRIu64 " extra=%" PRIu64
	       " stale=%" PRIu64 "\n", rounds, changed, missed, extra, stale);
	printf("softdirty: tracker scans=%" PRIu64 " flagged=%" PRIu64 " absent=%" PRIu64
	       " compared=%" PRIu64 " reported=%" PRIu64 " full_scans=%" PRIu64
	       " clears_skipped=%" PRIu64 " ioctl_reads=%" PRIu64 " ioctl_overflows=%" PRIu64 "\n",
	       st.scans, st.flagged, st.absent, st.compared, reported, st.full_scans,
	       st.clears_skipped, st.ioctl_reads, st.ioctl_overflows);
	printf("softdirty: scan avg=%.3f ms max=%.3f ms, ShmemPmdMapped=%lu kB, %.1f s\n",
	       pause_total * 1e3 / (rounds + 1), pause_max * 1e3, meminfo("ShmemPmdMapped"),
	       now() - t0);
	if (missed || stale || st.full_scans || !changed || !st.flagged) {
		printf("SOUNDNESS FAIL%s%s%s%s\n", missed ? " (missed pages)" : "",
		       stale ? " (stale staged pages)" : "",
		       st.full_scans ? " (fell back to full scans)" : "",
		       !changed || !st.flagged ? " (nothing changed or flagged)" : "");
		return 1;
	}
	printf("SOUNDNESS PASS\n");
	return 0;
}
