/* The soft-dirty tracker: ask the kernel which pages of guest RAM QEMU wrote
 * since the last checkpoint, instead of comparing all of RAM.
 *
 * Guest writes happen in QEMU's address space, so the log read is QEMU's:
 * /proc/QEMU/pagemap (bit 55 = soft-dirty) over QEMU's mapping of the RAM
 * file, found in /proc/QEMU/maps by device and inode; /proc/QEMU/clear_refs
 * ("4") starts a new log. The full copy reads guest RAM through QEMU's
 * mapping (process_vm_readv), which maps every page into QEMU's page tables;
 * the scans read changed pages through the replicator's own mapping of the
 * same file (ram).
 *
 * Soundness rules (docs/SOFT-DIRTY.md):
 * - scan runs with QEMU's vCPUs stopped: the bits are read, then cleared,
 *   with no guest write in between. The full copy runs with the VM going,
 *   so it clears first (begin_full_copy) and copies after (copy_pages): a
 *   write racing the copy is flagged.
 * - A page whose entry is not present, or is a swap/migration entry, may
 *   have been written and its PTE (with the bit) dropped since (reclaim,
 *   MADV_DONTNEED, ...): it is compared with the shadow like the compare
 *   tracker does. Only a present entry with bit 55 clear is trusted as
 *   "not written". So that this is not most of RAM in a VM that has not
 *   used all of its RAM, the full copy faults every page into QEMU.
 * - THP: pagemap reports a PMD-mapped huge page as 512 entries that carry
 *   the PMD's bit, so the 2 MiB granularity needs no special case here.
 * - Flagged pages are compared with the shadow too: a page written with the
 *   same bytes is not sent.
 * - Anything unexpected (pagemap unreadable, QEMU's mapping moved, clear_refs
 *   failed last time) makes the scan compare every page: slower, never
 *   unsound.
 * Writes that do not go through QEMU's page tables are not seen: another
 * process mapping the file (vhost-user), write(2) to the file.
 *
 * The shadow (a full copy of the last checkpoint) is the staging buffer, as
 * in compare: a changed page is copied into it during the pause and sent
 * from there until the ack.
 *
 * Two ways to read the log. Linux 6.7+ has the PAGEMAP_SCAN ioctl on the
 * pagemap file, which returns only the ranges of pages to compare (flagged,
 * not present or swapped), computed in the kernel without looking at each
 * page's struct page; the replicator then visits those ranges only. Older
 * kernels have the pagemap read: 8 bytes per page of RAM, each computed
 * from the page's struct page (a cache miss per page once RAM is large),
 * then a loop over every entry. The ioctl is used where a probe shows it
 * reports the log as the read does (scan_ioctl_agrees); a chunk whose
 * ranges do not fit its buffer is read the old way, in the same scan.
 *
 * Threads: the pagemap read and the entry loop (with the compares and
 * copies) grow with RAM, so a scan splits RAM into chunks that the caller
 * and the workers (scan_pool.h: woken once per scan, the caller takes
 * part) claim in order: first every chunk's pagemap read, then every
 * chunk's loop. The thread that completes the last read writes clear_refs
 * (rule 1: after every read), while the others already run the loops: the
 * loops need no clear, only their own chunk's entries. */
#include "lazy_clear.h"
#include "scan_pool.h"
#include "tracker.h"

#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/magic.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096u
#define PM_PRESENT   (1ull << 63)
#define PM_SWAP      (1ull << 62)
#define PM_SOFTDIRTY (1ull << 55)
#define CHUNKS_PER_THREAD 4  /* so a thread that is done early can take more */
#define MAX_CHUNKS (SCAN_POOL_MAX_THREADS * CHUNKS_PER_THREAD)

/* PAGEMAP_SCAN (include/uapi/linux/fs.h, Linux 6.7+), spelled out here:
 * Debian 12's kernel headers (6.1) lack it, and the ABI is fixed. */
struct scan_region {
	uint64_t start, end;        /* [start, end) in QEMU's address space */
	uint64_t categories;        /* SCAN_IS_*, of return_mask */
};
struct scan_arg {
	uint64_t size, flags, start, end, walk_end, vec, vec_len, max_pages;
	uint64_t category_inverted, category_mask, category_anyof_mask, return_mask;
};
_Static_assert(sizeof(struct scan_region) == 24, "struct page_region ABI");
_Static_assert(sizeof(struct scan_arg) == 96, "struct pm_scan_arg ABI");
#define PAGEMAP_SCAN_IOCTL _IOWR('f', 16, struct scan_arg)
#define SCAN_IS_PRESENT    (1u << 3)
#define SCAN_IS_SWAPPED    (1u << 4)
#define SCAN_IS_SOFT_DIRTY (1u << 7)
/* Ranges a chunk's buffer holds at first; one that overflows is doubled
 * for the next scan (up to what its chunk can need). */
#define REGIONS_MIN 256

/* Pages [start, end) of one scan: its pagemap entries, then its loop. */
struct chunk {
	size_t start, end;
	atomic_bool read;    /* its pagemap read is over (full set by then) */
	bool full;           /* no entries to trust: compare every page */
	/* PAGEMAP_SCAN: the ranges to compare, when by_ranges; else the
	 * chunk's entries are in pm. */
	struct scan_region *ranges;
	size_t nranges, ranges_cap;
	bool by_ranges, overflowed;
	size_t n;            /* dirty pages found, written at dirty[start...] */
	uint64_t flagged, absent, compared, ns_loop;
	uint64_t flagged_same; /* flagged, compared, unchanged: lazy_clear.h's waste */
	uint64_t ns_compare; /* of ns_loop, in the compares of untrusted pages */
};

struct tracker {
	const uint8_t *ram;
	uint8_t *shadow;
	size_t npages;
	pid_t pid;
	dev_t dev;
	ino_t ino;
	uintptr_t base;      /* QEMU's address of file offset 0 */
	int pagemap_fd, clear_fd, maps_fd;
	uint64_t *pm;        /* pagemap entries, one per page */
	bool use_ioctl;      /* the log is read by PAGEMAP_SCAN */
	bool need_full;      /* next scan compares every page */
	bool given_up;       /* every scan compares every page (softdirty_give_up) */
	struct softdirty_stats st;

	/* The running scan. */
	uint32_t *dirty;
	bool scan_full;
	unsigned nchunks;
	struct chunk chunks[MAX_CHUNKS];
	atomic_uint next_read, reads_done, next_loop;
	atomic_uint_fast64_t ioctl_reads;  /* chunks read by PAGEMAP_SCAN, all scans */
	int clear_rc;                  /* written by the thread that clears */
	bool skip_clear;               /* this scan leaves the log as it is */
	uint64_t ns_reads_end, ns_clear_end;

	struct lazy_clear clear_model; /* whether a clear pays (lazy_clear.h) */
	unsigned clear_every;          /* softdirty_set_clear_every; 0: by cost */

	/* Every thread, the caller too, runs scan_work. */
	struct scan_pool pool;
};

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int clear_refs(int fd)
{
	if (pwrite(fd, "4", 1, 0) != 1)
		return errno ? -errno : -EIO;
	return 0;
}

/* Read all of an already open /proc file into a malloc'ed, NUL-ended buffer. */
static char *read_all(int fd)
{
	size_t cap = 65536, len = 0;
	char *buf = malloc(cap);

	if (!buf)
		return NULL;
	for (;;) {
		ssize_t n;

		if (len + 1 >= cap) {
			char *nb = realloc(buf, cap * 2);

			if (!nb) {
				free(buf);
				return NULL;
			}
			buf = nb;
			cap *= 2;
		}
		n = pread(fd, buf + len, cap - len - 1, (off_t)len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			free(buf);
			return NULL;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	buf[len] = '\0';
	return buf;
}

/* One line of /proc/PID/maps: true if it maps the file (dev, ino), with
 * its range, file offset and permissions ("rw-s"). */
static bool maps_line_of(const char *line, dev_t dev, ino_t ino, unsigned long *lo,
			 unsigned long *hi, unsigned long *off, char perms[8])
{
	unsigned long inode;
	unsigned maj, min;

	return sscanf(line, "%lx-%lx %7s %lx %x:%x %lu", lo, hi, perms, off, &maj, &min,
		      &inode) == 7 &&
	       makedev(maj, min) == dev && (ino_t)inode == ino;
}

/* Find QEMU's mapping of file offsets [0, size): every VMA of (dev, ino),
 * which together must cover the range exactly once at one address delta
 * (a mapping split by madvise/mprotect is fine; a second mapping of the
 * file is refused: writes through it could be missed if it were not read). */
static int find_mapping(struct tracker *t, uintptr_t *base)
{
	char *buf = read_all(t->maps_fd), *line, *save = NULL;
	size_t size = t->npages * (size_t)PAGE, covered = 0;
	bool have = false;
	uintptr_t delta = 0;
	int rc = 0;

	if (!buf)
		return errno ? -errno : -ENOMEM;
	for (line = strtok_r(buf, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		unsigned long lo, hi, off;
		char perms[8];

		if (!maps_line_of(line, t->dev, t->ino, &lo, &hi, &off, perms))
			continue;
		if (off >= size)
			continue;  /* beyond guest RAM: not ours to watch */
		if (perms[3] != 's')
			continue;  /* private: its writes never reach the file */
		if (have && lo - off != delta) {
			rc = -EEXIST;  /* a second mapping of the file */
			break;
		}
		have = true;
		delta = lo - off;
		covered += hi - lo < size - off ? hi - lo : size - off;
	}
	free(buf);
	if (rc)
		return rc;
	if (!have || covered != size)
		return have ? -EEXIST : -ENOENT;
	*base = delta;
	return 0;
}

pid_t softdirty_other_writer(pid_t qemu, const char *ram_path)
{
	struct stat sb;
	struct dirent *e;
	DIR *d;
	pid_t found = 0;

	if (stat(ram_path, &sb) < 0 || !(d = opendir("/proc")))
		return 0;
	while (!found && (e = readdir(d))) {
		pid_t pid = (pid_t)atoi(e->d_name);
		char path[64], *buf, *line, *save = NULL;
		int fd;

		if (pid <= 0 || pid == qemu || pid == getpid())
			continue;
		snprintf(path, sizeof(path), "/proc/%d/maps", (int)pid);
		fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			continue;  /* gone, or a kernel thread we may not read */
		buf = read_all(fd);
		close(fd);
		for (line = buf ? strtok_r(buf, "\n", &save) : NULL; line && !found;
		     line = strtok_r(NULL, "\n", &save)) {
			unsigned long lo, hi, off;
			char perms[8];

			if (maps_line_of(line, sb.st_dev, sb.st_ino, &lo, &hi, &off, perms) &&
			    perms[1] == 'w' && perms[3] == 's')
				found = pid;
		}
		free(buf);
	}
	closedir(d);
	return found;
}

/* The entries of pages [start, end) into pm[start...]. pread is positional:
 * threads read disjoint ranges of the one descriptor at once. */
static int read_pagemap(struct tracker *t, size_t start, size_t end)
{
	size_t want = (end - start) * sizeof(uint64_t), done = 0;
	off_t at = (off_t)((t->base / PAGE + start) * sizeof(uint64_t));
	char *to = (char *)(t->pm + start);

	while (done < want) {
		ssize_t n = pread(t->pagemap_fd, to + done, want - done, at + (off_t)done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EIO;
		done += (size_t)n;
	}
	return 0;
}

/* The ranges of pages [start, end) to compare, by PAGEMAP_SCAN: those not
 * present, swapped, or flagged (rule 2: only a present, unflagged page is
 * trusted). 0, 1 if they do not fit the buffer (the caller reads the
 * chunk's entries instead), or -errno. */
static int scan_ranges(int pagemap_fd, uintptr_t from, uintptr_t to, struct scan_region *vec,
		       size_t cap, size_t *n)
{
	struct scan_arg a = {
		.size = sizeof(a),
		.start = from,
		.end = to,
		.vec = (uintptr_t)vec,
		.vec_len = cap,
		.category_inverted = SCAN_IS_PRESENT,
		.category_anyof_mask = SCAN_IS_PRESENT | SCAN_IS_SWAPPED | SCAN_IS_SOFT_DIRTY,
		.return_mask = SCAN_IS_PRESENT | SCAN_IS_SWAPPED | SCAN_IS_SOFT_DIRTY,
	};
	long got;

	do
		got = ioctl(pagemap_fd, PAGEMAP_SCAN_IOCTL, &a);
	while (got < 0 && errno == EINTR);
	if (got < 0)
		return -errno;
	/* The walk stops early only when our buffer is full. A full buffer
	 * with walk_end short of the end is an overflow; walk_end alone does
	 * not tell, as the kernel leaves it where its own 512-range bounce
	 * buffer last filled even when the walk then went on to the end. */
	if ((size_t)got >= cap && a.walk_end != to)
		return 1;
	*n = (size_t)got;
	return 0;
}

/* One chunk's part of reading the log (the caller clears after them all). */
static void read_chunk(struct tracker *t, struct chunk *k)
{
	k->by_ranges = false;
	if (k->full)
		return;
	if (t->use_ioctl) {
		int rc = scan_ranges(t->pagemap_fd, t->base + k->start * PAGE,
				     t->base + k->end * PAGE, k->ranges, k->ranges_cap,
				     &k->nranges);

		k->overflowed = rc == 1;
		if (!rc) {
			k->by_ranges = true;
			atomic_fetch_add_explicit(&t->ioctl_reads, 1, memory_order_relaxed);
			return;
		}
	}
	if (read_pagemap(t, k->start, k->end))
		k->full = true;
}

static inline bool sync_page(struct tracker *t, size_t i)
{
	const uint8_t *live = t->ram + i * PAGE;
	uint8_t *saved = t->shadow + i * PAGE;

	if (!memcmp(live, saved, PAGE))
		return false;
	memcpy(saved, live, PAGE);
	return true;
}

/* One untrusted page i (rule 2): counted as flagged or not present,
 * compared with the shadow and, if it changed, listed at out[n]; returns
 * the new count of listed pages. */
static inline size_t compare_untrusted(struct tracker *t, struct chunk *k, size_t i,
				       bool flagged, uint32_t *out, size_t n)
{
	if (flagged)
		k->flagged++;
	else
		k->absent++;
	k->compared++;
	if (sync_page(t, i))
		out[n++] = (uint32_t)i;
	else if (flagged)
		k->flagged_same++;
	return n;
}

/* Compare the pages of k's ranges (all of them untrusted), writing the
 * changed ones at out; how many. The kernel clips ranges to the walk, but
 * a range outside the chunk is not trusted to be impossible. */
static size_t compare_ranges(struct tracker *t, struct chunk *k, uint32_t *out)
{
	uintptr_t next = t->base + k->start * PAGE, hi = t->base + k->end * PAGE;
	size_t n = 0;

	/* Ranges come sorted and apart; were they not, no page is compared
	 * twice nor written past the chunk's part of dirty. */
	for (size_t r = 0; r < k->nranges; r++) {
		const struct scan_region *g = &k->ranges[r];
		uintptr_t from = g->start < next ? next : (uintptr_t)g->start;
		uintptr_t to = g->end > hi ? hi : (uintptr_t)g->end;
		bool flagged = g->categories & SCAN_IS_SOFT_DIRTY;

		for (uintptr_t a = from; a < to; a += PAGE)
			n = compare_untrusted(t, k, (a - t->base) / PAGE, flagged, out, n);
		if (to > next)
			next = to;
	}
	return n;
}

/* An entry that proves its page unwritten: present, not a swap/migration
 * entry, bit 55 clear. */
#define PM_TRUST_MASK (PM_PRESENT | PM_SWAP | PM_SOFTDIRTY)
#define UNTRUSTED(e) (((e) & PM_TRUST_MASK) ^ PM_PRESENT)

static void loop_chunk(struct tracker *t, struct chunk *k)
{
	uint32_t *out = t->dirty + k->start;
	uint64_t t0 = now_ns();
	size_t n = 0, i = k->start;

	if (k->full) {
		for (; i < k->end; i++)
			if (sync_page(t, i))
				out[n++] = (uint32_t)i;
		k->compared = k->end - k->start;
		goto out;
	}
	if (k->by_ranges) {
		n = compare_ranges(t, k, out);
		k->ns_compare = now_ns() - t0;
		goto out;
	}
	while (i < k->end) {
		const uint64_t *e = t->pm + i;
		size_t m = k->end - i < 8 ? k->end - i : 8;

		/* Most entries are trusted: test 8 at a time, one branch. */
		if (m == 8 && !(UNTRUSTED(e[0]) | UNTRUSTED(e[1]) | UNTRUSTED(e[2]) |
				UNTRUSTED(e[3]) | UNTRUSTED(e[4]) | UNTRUSTED(e[5]) |
				UNTRUSTED(e[6]) | UNTRUSTED(e[7]))) {
			i += 8;
			continue;
		}
		uint64_t c0 = now_ns();

		for (size_t j = 0; j < m; j++, i++)
			if (UNTRUSTED(e[j]))
				n = compare_untrusted(t, k, i, e[j] & PM_SOFTDIRTY, out, n);
		k->ns_compare += now_ns() - c0;
	}
out:
	k->n = n;
	k->ns_loop = now_ns() - t0;
}

/* One thread's part of a scan (caller and workers alike, whatever idx):
 * claim chunks to read until none is left, then chunks to loop over. */
static void scan_work(void *ctx, unsigned idx)
{
	struct tracker *t = ctx;
	unsigned c;

	(void)idx;
	while ((c = atomic_fetch_add(&t->next_read, 1)) < t->nchunks) {
		struct chunk *k = &t->chunks[c];

		read_chunk(t, k);
		atomic_store_explicit(&k->read, true, memory_order_release);
		/* Rule 1: clear only once every chunk's entries are read. The
		 * reads that counted before us have returned from the kernel. */
		if (atomic_fetch_add(&t->reads_done, 1) + 1 == t->nchunks) {
			t->ns_reads_end = now_ns();
			/* Given up: every page is compared, the log is not read. */
			t->clear_rc = t->given_up || t->skip_clear ? 0 : clear_refs(t->clear_fd);
			t->ns_clear_end = now_ns();
		}
	}
	while ((c = atomic_fetch_add(&t->next_loop, 1)) < t->nchunks) {
		struct chunk *k = &t->chunks[c];

		/* Claimed for reading already; another thread may still be in
		 * its pread (at most one chunk per thread). */
		while (!atomic_load_explicit(&k->read, memory_order_acquire))
			sched_yield();
		loop_chunk(t, k);
	}
}

static void cut_chunks(struct tracker *t, unsigned threads)
{
	/* One thread: one chunk, one read, as before threads. */
	unsigned nchunks = threads > 1 ? threads * CHUNKS_PER_THREAD : 1;
	size_t per;

	assert(t->npages); /* softdirty_init_proc refuses empty RAM: nchunks >= 1 */
	if (nchunks > t->npages)
		nchunks = (unsigned)t->npages;
	per = (t->npages + nchunks - 1) / nchunks;
	t->nchunks = nchunks;
	for (unsigned i = 0; i < nchunks; i++) {
		size_t start = i * per;

		t->chunks[i].start = start < t->npages ? start : t->npages;
		t->chunks[i].end = start + per < t->npages ? start + per : t->npages;
	}
}

/* The most ranges a chunk's pages can make: a range per page (neighbours
 * of different categories, say flagged and not present, are ranges of their
 * own); 1 for a chunk left empty by cut_chunks, so its buffer exists. */
static size_t ranges_most(const struct chunk *k)
{
	return k->end > k->start ? k->end - k->start : 1;
}

static void free_ranges(struct tracker *t)
{
	for (unsigned i = 0; i < t->nchunks; i++) {
		free(t->chunks[i].ranges);
		t->chunks[i].ranges = NULL;
		t->chunks[i].ranges_cap = 0;
	}
}

/* QEMU's pagemap answers PAGEMAP_SCAN, and every chunk has its buffer of
 * ranges: 0, or -errno (ENOTTY: a kernel before 6.7). */
static int ioctl_ready(struct tracker *t)
{
	struct scan_region one[1];
	size_t n;
	int rc = scan_ranges(t->pagemap_fd, t->base, t->base + PAGE, one, 1, &n);

	if (rc < 0)
		return rc;
	for (unsigned i = 0; i < t->nchunks; i++) {
		struct chunk *k = &t->chunks[i];
		size_t most = ranges_most(k);

		if (k->ranges)
			continue;
		k->ranges_cap = most < REGIONS_MIN ? most : REGIONS_MIN;
		k->ranges = malloc(k->ranges_cap * sizeof(*k->ranges));
		if (!k->ranges) {
			free_ranges(t);
			return -ENOMEM;
		}
	}
	return 0;
}

static bool scan_ioctl_agrees(void);

/* Read the log by PAGEMAP_SCAN where the kernel has it and reports the log
 * as the pagemap read does (a probe on a mapping of our own). */
static bool ioctl_usable(struct tracker *t)
{
	return scan_ioctl_agrees() && !ioctl_ready(t);
}

/* Huge TLB pages keep no soft-dirty bit of their own: clear_refs does not
 * write-protect them and pagemap reports only the VMA's flag, so after the
 * first clear every hugetlbfs page reads "present, not written" whatever
 * the guest did. -EMEDIUMTYPE for guest RAM there (hugetlbfs file or
 * MFD_HUGETLB memfd); 0 otherwise, or -errno. */
static int on_hugetlbfs(const char *ram_path)
{
	struct statfs fs;

	if (statfs(ram_path, &fs) < 0)
		return -errno;
	return fs.f_type == HUGETLBFS_MAGIC ? -EMEDIUMTYPE : 0;
}

static int softdirty_init_proc(struct tracker **out, const uint8_t *ram, size_t npages,
			       unsigned threads, pid_t pid, const char *ram_path)
{
	struct tracker *t;
	struct stat sb;
	char path[64];
	int rc;

	if (pid <= 0 || !ram_path || !npages)
		return -EINVAL;
	if (stat(ram_path, &sb) < 0)
		return -errno;
	rc = on_hugetlbfs(ram_path);
	if (rc)
		return rc;
	t = calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	t->pagemap_fd = t->clear_fd = t->maps_fd = -1;
	t->ram = ram;
	t->npages = npages;
	t->pid = pid;
	t->dev = sb.st_dev;
	t->ino = sb.st_ino;
	t->need_full = true;
	/* The descriptors pin the process: if QEMU dies they fail, they never
	 * reach a process that reused its pid. */
	snprintf(path, sizeof(path), "/proc/%d/pagemap", (int)pid);
	t->pagemap_fd = open(path, O_RDONLY | O_CLOEXEC);
	snprintf(path, sizeof(path), "/proc/%d/clear_refs", (int)pid);
	t->clear_fd = open(path, O_WRONLY | O_CLOEXEC);
	snprintf(path, sizeof(path), "/proc/%d/maps", (int)pid);
	t->maps_fd = open(path, O_RDONLY | O_CLOEXEC);
	if (t->pagemap_fd < 0 || t->clear_fd < 0 || t->maps_fd < 0) {
		rc = -errno;
		goto fail;
	}
	rc = find_mapping(t, &t->base);
	if (rc)
		goto fail;
	t->pm = calloc(npages, sizeof(*t->pm));
	t->shadow = mmap(NULL, npages * (size_t)PAGE, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (!t->pm || t->shadow == MAP_FAILED) {
		if (t->shadow != MAP_FAILED)
			munmap(t->shadow, npages * (size_t)PAGE);
		t->shadow = NULL;
		rc = -ENOMEM;
		goto fail;
	}
	threads = scan_pool_threads(threads);
	cut_chunks(t, threads);
	t->use_ioctl = ioctl_usable(t);
	t->st.read_by_ioctl = t->use_ioctl;
	rc = scan_pool_init(&t->pool, threads, scan_work, t);
	if (rc) {
		munmap(t->shadow, npages * (size_t)PAGE);
		free_ranges(t);
		goto fail;
	}
	*out = t;
	return 0;
fail:
	if (t->pagemap_fd >= 0)
		close(t->pagemap_fd);
	if (t->clear_fd >= 0)
		close(t->clear_fd);
	if (t->maps_fd >= 0)
		close(t->maps_fd);
	free(t->pm);
	free(t);
	return rc;
}

/* Clear, then copy: whatever is written after the clear is flagged at the
 * next scan, whatever was written before is in the copy. */
static int softdirty_begin_full_copy(struct tracker *t)
{
	t->st.populated = 0;
	t->st.populate_error = 0;
	t->need_full = clear_refs(t->clear_fd) != 0;
	lazy_clear_restart(&t->clear_model);
	return 0;
}

/* Read pages [first, first + n) into the shadow through QEMU's own mapping
 * (process_vm_readv), not ours: the read faults every page QEMU has never
 * touched into QEMU's page tables, present and, since the clear,
 * write-protected, so its next write sets the bit. Without this, guest RAM
 * the guest never used stays "not present" in QEMU's pagemap and rule 2 has
 * every pause compare it: O(untouched RAM) per pause, most of a large,
 * lightly used VM. process_vm_readv needs ptrace-attach access to QEMU
 * (more than pagemap's read access: Yama's ptrace_scope 1 refuses it to a
 * non-root replicator without CAP_SYS_PTRACE). Where the read fails the
 * rest is copied through our mapping: the same bytes, and those pages stay
 * compared until QEMU touches them. */
static void softdirty_copy_pages(struct tracker *t, size_t first, size_t n)
{
	size_t len = n * PAGE, done = 0;

	while (!t->st.populate_error && done < len) {
		struct iovec local = { t->shadow + first * PAGE + done, len - done };
		struct iovec remote = { (void *)(t->base + first * PAGE + done), len - done };
		ssize_t got = process_vm_readv(t->pid, &local, 1, &remote, 1, 0);

		if (got < 0 && errno == EINTR)
			continue;
		if (got <= 0)
			t->st.populate_error = got < 0 ? errno : EIO;
		else
			done += (size_t)got;
	}
	t->st.populated += done / PAGE;
	if (done < len)
		memcpy(t->shadow + first * PAGE + done, t->ram + first * PAGE + done, len - done);
}

/* Lazy clearing: a scan may leave the log as it is (sound: every flagged
 * page is compared with the shadow, which reports only the pages that
 * changed) while a clear would cost more than the compares it saves
 * (lazy_clear.h). The first scans clear (nothing measured yet), and so does
 * every scan that compares all of RAM (the log's state is not known then). */
static bool lazy_clear(const struct tracker *t, bool full)
{
	if (full || t->given_up)
		return false;
	if (t->clear_every)
		return t->st.scans % t->clear_every != 0;
	return !lazy_clear_due(&t->clear_model);
}

void softdirty_set_clear_every(struct tracker *t, unsigned n)
{
	t->clear_every = n;
}

int softdirty_set_log_read(struct tracker *t, bool by_ioctl)
{
	int rc = by_ioctl ? ioctl_ready(t) : 0;

	if (!rc) {
		t->use_ioctl = by_ioctl;
		t->st.read_by_ioctl = by_ioctl;
	}
	return rc;
}

/* After a scan: what its clear and its compares cost (lazy_clear.h). */
static void learn_costs(struct tracker *t, bool full, uint64_t compared, uint64_t ns_compare,
			uint64_t flagged_same)
{
	struct lazy_clear_sample s = {
		.cleared = !t->skip_clear && !t->given_up && !t->clear_rc,
		.full = full,
		.clear_ns = (double)(t->ns_clear_end - t->ns_reads_end),
		.compare_ns = (double)ns_compare,
		.compared = compared,
		.flagged_same = flagged_same,
	};

	lazy_clear_learn(&t->clear_model, &s);
}

/* A chunk whose ranges overflowed its buffer was read the old way; give it
 * twice the room for the next scans, up to the most it can need. Without
 * memory, it stays as it is: still sound. */
static void grow_ranges(struct tracker *t, struct chunk *k)
{
	size_t most = ranges_most(k);
	size_t cap = k->ranges_cap * 2 < most ? k->ranges_cap * 2 : most;
	struct scan_region *r;

	t->st.ioctl_overflows++;
	if (cap <= k->ranges_cap || !(r = realloc(k->ranges, cap * sizeof(*r))))
		return;
	k->ranges = r;
	k->ranges_cap = cap;
}

static size_t softdirty_scan(struct tracker *t, uint32_t *dirty)
{
	size_t n = 0;
	/* Read only after find_mapping returned 0, which sets it; the analyzer
	 * cannot tell that -errno is never 0. */
	uintptr_t base = 0;
	bool full = t->need_full || t->given_up, part_full = false;
	uint64_t t0 = now_ns(), t1, compared = 0, ns_compare = 0, flagged_same = 0;

	t->st.scans++;
	/* QEMU's mapping must still be where we read its bits. */
	if (!full && (find_mapping(t, &base) || base != t->base))
		full = true;
	t->skip_clear = lazy_clear(t, full);
	t1 = now_ns();

	t->dirty = dirty;
	t->scan_full = full;
	for (unsigned i = 0; i < t->nchunks; i++) {
		struct chunk *k = &t->chunks[i];

		atomic_store_explicit(&k->read, false, memory_order_relaxed);
		k->full = full;
		k->overflowed = false;
		k->n = 0;
		k->flagged = k->absent = k->compared = k->ns_loop = k->ns_compare = 0;
		k->flagged_same = 0;
	}
	atomic_store(&t->next_read, 0);
	atomic_store(&t->reads_done, 0);
	atomic_store(&t->next_loop, 0);
	t->clear_rc = -EIO;
	/* The workers see all of the above through the pool's mutex, and we
	 * see their chunks, clear_rc and times once it returns. */
	scan_pool_run(&t->pool);

	/* Read, then clear, both with the vCPUs stopped (done by scan_work). */
	t->need_full = t->clear_rc != 0;
	/* Each chunk wrote its pages at its own offset: close the gaps, in
	 * order, so the list stays sorted. */
	for (unsigned i = 0; i < t->nchunks; i++) {
		struct chunk *k = &t->chunks[i];

		if (n != k->start)
			memmove(dirty + n, dirty + k->start, k->n * sizeof(*dirty));
		n += k->n;
		part_full |= k->full;
		if (k->overflowed)
			grow_ranges(t, k);
		t->st.flagged += k->flagged;
		t->st.absent += k->absent;
		t->st.compared += k->compared;
		t->st.flagged_same += k->flagged_same;
		t->st.ns_loop += k->ns_loop;
		compared += k->compared;
		ns_compare += k->ns_compare;
		flagged_same += k->flagged_same;
	}
	if (full || part_full)
		t->st.full_scans++;
	if (t->skip_clear)
		t->st.clears_skipped++;
	learn_costs(t, full || part_full, compared, ns_compare, flagged_same);
	t->st.copied += n;
	t->st.ns_maps += t1 - t0;
	t->st.ns_pagemap += t->ns_reads_end - t1;
	t->st.ns_clear += t->ns_clear_end - t->ns_reads_end;
	t->st.ns_total += now_ns() - t0;
	return n;
}

static const uint8_t *softdirty_page(const struct tracker *t, uint32_t idx)
{
	return t->shadow + (size_t)idx * PAGE;
}

static void softdirty_fini(struct tracker *t)
{
	if (!t)
		return;
	scan_pool_fini(&t->pool);
	close(t->pagemap_fd);
	close(t->clear_fd);
	close(t->maps_fd);
	munmap(t->shadow, t->npages * (size_t)PAGE);
	free_ranges(t);
	free(t->pm);
	free(t);
}

void softdirty_give_up(struct tracker *t)
{
	t->given_up = true;
}

void softdirty_get_stats(const struct tracker *t, struct softdirty_stats *s)
{
	*s = t->st;
	s->ioctl_reads = atomic_load_explicit(&t->ioctl_reads, memory_order_relaxed);
}

static int pagemap_entry(int fd, const void *addr, uint64_t *e)
{
	off_t at = (off_t)((uintptr_t)addr / PAGE * sizeof(uint64_t));

	if (pread(fd, e, sizeof(*e), at) != (ssize_t)sizeof(*e))
		return errno ? -errno : -EIO;
	return 0;
}

/* 0 if /proc/PID/NAME opens with flags, else -errno with the reason. */
static int can_open(pid_t pid, const char *name, int flags, char *why, size_t len)
{
	char path[64];
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/%s", (int)pid, name);
	fd = open(path, flags | O_CLOEXEC);
	if (fd < 0) {
		int rc = -errno;
		snprintf(why, len, "cannot open %s: %s", path, strerror(errno));
		return rc;
	}
	close(fd);
	return 0;
}

/* PAGEMAP_SCAN over the probe's two pages, p written since the clear and
 * p + PAGE not: exactly one range, p's, flagged and present. */
static bool scan_reports(int pm, const uint8_t *p)
{
	struct scan_region r[2];
	size_t n = 0;

	return !scan_ranges(pm, (uintptr_t)p, (uintptr_t)p + 2 * PAGE, r, 2, &n) && n == 1 &&
	       r[0].start == (uintptr_t)p && r[0].end == (uintptr_t)p + PAGE &&
	       r[0].categories == (SCAN_IS_PRESENT | SCAN_IS_SOFT_DIRTY);
}

/* 0 if this kernel keeps the soft-dirty log (tried on a mapping of our own),
 * else -ENOTSUP with the reason in why; *ioctl_ok: PAGEMAP_SCAN reports it
 * too. */
static int probe_log(bool *ioctl_ok, char *why, size_t len)
{
	int pm = -1, cr = -1, mfd = -1, rc = -ENOTSUP;
	uint8_t *p = MAP_FAILED;
	uint64_t e0, e1;

	*ioctl_ok = false;
	/* A kernel without CONFIG_MEM_SOFT_DIRTY accepts "4" and does nothing:
	 * try the log on a shared mapping of our own, as QEMU's RAM is. */
	pm = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	cr = open("/proc/self/clear_refs", O_WRONLY | O_CLOEXEC);
	if (pm < 0 || cr < 0) {
		snprintf(why, len, "cannot open /proc/self/pagemap or clear_refs: %s",
			 strerror(errno));
		goto out;
	}
	mfd = memfd_create("remus-softdirty-probe", MFD_CLOEXEC);
	if (mfd < 0 || ftruncate(mfd, 2 * PAGE) < 0) {
		snprintf(why, len, "memfd_create: %s", strerror(errno));
		goto out;
	}
	p = mmap(NULL, 2 * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
	if (p == MAP_FAILED) {
		snprintf(why, len, "mmap: %s", strerror(errno));
		goto out;
	}
	*(volatile uint8_t *)p = 1;
	*(volatile uint8_t *)(p + PAGE) = 1;
	if (clear_refs(cr)) {
		snprintf(why, len, "/proc/self/clear_refs does not accept \"4\": %s",
			 strerror(errno));
		goto out;
	}
	*(volatile uint8_t *)p = 2;
	if (pagemap_entry(pm, p, &e0) || pagemap_entry(pm, p + PAGE, &e1)) {
		snprintf(why, len, "cannot read /proc/self/pagemap: %s", strerror(errno));
		goto out;
	}
	if (!(e0 & PM_PRESENT) || !(e1 & PM_PRESENT)) {
		snprintf(why, len, "probe pages not present in pagemap");
		goto out;
	}
	if (!(e0 & PM_SOFTDIRTY)) {
		snprintf(why, len, "a page written after clear_refs has no soft-dirty bit "
			 "(kernel without CONFIG_MEM_SOFT_DIRTY?)");
		goto out;
	}
	if (e1 & PM_SOFTDIRTY) {
		snprintf(why, len, "clear_refs 4 does not clear the soft-dirty bit");
		goto out;
	}
	*ioctl_ok = scan_reports(pm, p);
	rc = 0;
out:
	if (p != MAP_FAILED)
		munmap(p, 2 * PAGE);
	if (mfd >= 0)
		close(mfd);
	if (pm >= 0)
		close(pm);
	if (cr >= 0)
		close(cr);
	return rc;
}

int softdirty_supported(pid_t pid, char *why, size_t len)
{
	bool ioctl_ok;
	int rc;

	snprintf(why, len, "ok");
	if (pid > 0 && ((rc = can_open(pid, "pagemap", O_RDONLY, why, len)) ||
			(rc = can_open(pid, "clear_refs", O_WRONLY, why, len))))
		return rc;
	return probe_log(&ioctl_ok, why, len);
}

static bool scan_ioctl_agrees(void)
{
	char why[160];
	bool ok;

	return !probe_log(&ok, why, sizeof(why)) && ok;
}

const struct tracker_ops softdirty_tracker_ops = {
	.name = "soft-dirty",
	.init_proc = softdirty_init_proc,
	.begin_full_copy = softdirty_begin_full_copy,
	.copy_pages = softdirty_copy_pages,
	.scan = softdirty_scan,
	.page = softdirty_page,
	.fini = softdirty_fini,
};
