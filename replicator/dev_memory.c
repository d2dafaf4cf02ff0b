/* Checkpoint device: guest RAM, read through the shared memory backend. */
#include "ckpt_device.h"
#include "clock.h"
#include "log.h"
#include "page_frames.h"
#include "page_hash.h"
#include "proto.h"
#include "procfs.h"
#include "tracker.h"

#include <endian.h>
#include <errno.h>
#include <ev.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* The initial copy goes in steps of this many pages, one per turn of the
 * loop: copying a large RAM takes seconds (16 GiB at 5 GB/s is 3 s), and the
 * loop must keep the heartbeats going meanwhile, or the backup takes the
 * silence for a dead primary. */
#define SYNC_STEP_PAGES 4096  /* 16 MiB */
/* A tracker that keeps only the full copy's last pages (ops->full_copy_keep:
 * hash) has each step wait until the link has written the step whose slots
 * it reuses; the link's byte count after each step is remembered for this
 * many steps. */
#define SYNC_MARKS 8
/* Compressing: the link's backlog at which the next step waits. */
#define SYNC_COMPRESSED_HIGH (64u << 20)
/* How often soft-dirty looks again for another process mapping guest RAM
 * writable (reading every /proc/PID/maps: a few ms on a busy host). */
#define WRITER_CHECK_S 5.0

struct memory_device {
	const uint8_t *ram;
	size_t ram_size, npages;
	const struct tracker_ops *tops;
	struct tracker *tracker;
	uint32_t *dirty;     /* pages of the captured epoch */
	size_t ndirty;
	char why[300];       /* why this tracker, for status */
	struct ckpt_ctx *cx;
	ev_timer sync_step;  /* copies and queues the next step of epoch 0 */
	ev_timer writer_check; /* soft-dirty: another writer since attach? */
	bool gave_up;        /* soft-dirty's log no longer trusted: compare */
	size_t sync_next;    /* first page of that step */
	double sync_started_ms;
	/* Trackers with full_copy_keep: a step copies only once the link has
	 * written the step sync_window steps before it (its slots are reused). */
	ev_check sync_wait;  /* after each turn of the loop: written yet? */
	size_t sync_step_pages;
	unsigned sync_window; /* 0: the tracker keeps every page */
	size_t sync_steps;   /* steps queued in this full copy */
	size_t sync_waits;   /* steps that waited for the link */
	uint64_t sync_mark[SYNC_MARKS]; /* link bytes sent + queued after step j, at j % SYNC_MARKS */
};

static void on_sync_step(struct ev_loop *loop, ev_timer *w, int revents);
static void on_sync_wait(struct ev_loop *loop, ev_check *w, int revents);

/* A process that maps guest RAM writable after attach (a vhost-user
 * back-end hot-plugged, say) writes outside QEMU's log. From the next pause
 * on every page is compared, which also finds what it wrote before we
 * noticed; checkpoints committed in between may have missed its writes. */
static void on_writer_check(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct memory_device *m = w->data;
	struct ckpt_ctx *cx = m->cx;
	char comm[32];
	pid_t other = softdirty_other_writer(cx->vm->pid, cx->vm->ram_path);

	(void)revents;
	if (!other)
		return;
	ev_timer_stop(loop, w);
	softdirty_give_up(m->tracker);
	m->gave_up = true;
	snprintf(m->why, sizeof(m->why), "soft-dirty given up: process %d (%s) maps guest RAM "
		 "writable, outside QEMU's log; every page is compared", (int)other,
		 proc_comm(other, comm, sizeof(comm)));
	log_err("memory: process %d (%s) now maps guest RAM writable: its writes are not in "
		"QEMU's soft-dirty log. Comparing all of RAM in every pause from now on; "
		"checkpoints of the last %.0f s may lack its writes", (int)other, comm,
		WRITER_CHECK_S);
}

/* Why init_proc refused QEMU's mapping of guest RAM. */
static const char *mapping_error(int rc)
{
	switch (rc) {
	case -ENOENT:
		return "QEMU has no shared mapping of the RAM file covering guest RAM";
	case -EEXIST:
		return "QEMU maps guest RAM twice; writes through the second mapping would be missed";
	case -EMEDIUMTYPE:
		return "guest RAM is on hugetlbfs, whose pages keep no soft-dirty bit";
	default:
		return strerror(-rc);
	}
}

/* soft-dirty costs the dirty pages, hash and compare all of RAM (hash reads
 * it once, compare twice, with a shadow as large as guest RAM). auto takes
 * soft-dirty where it has been shown to work: the kernel keeps the log
 * (probed) and only QEMU's one mapping writes guest RAM, under TCG or KVM
 * (tests/integration/test_kvm.sh: a byte-exact replica of a 2-vCPU KVM
 * guest, docs/SOFT-DIRTY.md); else hash (docs/TRACKERS.md), and status says
 * why. --tracker soft-dirty insists: it is refused, with the reason, where
 * the log cannot work. */
static int start_softdirty(struct ckpt_ctx *cx, struct memory_device *m, bool asked,
			   char *why, size_t len)
{
	int rc = softdirty_supported(cx->vm->pid, why, len);
	struct softdirty_stats st;
	const char *bench_clear;
	char comm[32];
	pid_t other;

	if (!rc && (other = softdirty_other_writer(cx->vm->pid, cx->vm->ram_path))) {
		rc = -EBUSY;
		snprintf(why, len, "process %d (%s) also maps guest RAM writable: its writes "
			 "would be missed (vhost-user?)", (int)other, proc_comm(other, comm, sizeof(comm)));
	}
	if (!rc) {
		rc = softdirty_tracker_ops.init_proc(&m->tracker, m->ram, m->npages,
						     cx->cfg->capture_threads, cx->vm->pid,
						     cx->vm->ram_path);
		if (rc)
			snprintf(why, len, "%s", mapping_error(rc));
	}
	if (rc)
		return rc;
	m->tops = &softdirty_tracker_ops;
	/* Benchmarks only (bench/bench.py 'soft-dirty-eager'): clear the log
	 * at every pause, as before lazy clearing, to measure what it saves;
	 * ('soft-dirty-read'): read it the pre-6.7 way on a newer kernel. */
	bench_clear = getenv("REMUS_BENCH_SOFTDIRTY_CLEAR_EVERY");
	if (bench_clear)
		softdirty_set_clear_every(m->tracker, (unsigned)strtoul(bench_clear, NULL, 10));
	if (getenv("REMUS_BENCH_SOFTDIRTY_PAGEMAP_READ"))
		softdirty_set_log_read(m->tracker, false);
	softdirty_get_stats(m->tracker, &st);
	snprintf(m->why, sizeof(m->why), "%s: the kernel logs QEMU's writes (soft-dirty%s, "
		 "read %s)", asked ? "--tracker soft-dirty" : "auto",
		 cx->vm->kvm ? ", KVM guest" : "",
		 st.read_by_ioctl ? "by PAGEMAP_SCAN" : "from pagemap");
	ev_timer_set(&m->writer_check, WRITER_CHECK_S, WRITER_CHECK_S);
	ev_timer_start(cx->loop, &m->writer_check);
	return 0;
}

static int start_tracker(struct ckpt_ctx *cx, struct memory_device *m)
{
	const char *kind = cx->cfg->tracker;

	if (!strcmp(kind, "auto") || !strcmp(kind, "soft-dirty")) {
		bool asked = !strcmp(kind, "soft-dirty");
		char why[256] = "";
		int rc = start_softdirty(cx, m, asked, why, sizeof(why));

		if (!rc)
			return 0;
		if (asked) {
			log_err("--tracker soft-dirty: %s", why);
			return rc;
		}
		snprintf(m->why, sizeof(m->why), "auto: no soft-dirty tracking (%s); hashes every "
			 "page instead", why);
		log_info("memory: %s; using hash", m->why);
		m->tops = &hash_tracker_ops;
	} else if (!strcmp(kind, "hash")) {
		snprintf(m->why, sizeof(m->why), "--tracker hash");
		m->tops = &hash_tracker_ops;
	} else {
		snprintf(m->why, sizeof(m->why), "--tracker compare");
		m->tops = &compare_tracker_ops;
	}
	return m->tops->init(&m->tracker, m->ram, m->npages, cx->cfg->capture_threads);
}

/* Map guest RAM into our page tables now: faulting 4 KiB at a time inside
 * the first pauses would cost more than the scan itself. Except where the
 * hash tracker can skip the holes of a tmpfs file: there, reading a hole
 * would allocate it, so only the full copy maps pages, those it reads
 * (data, and holes too short to skip). */
static void populate(struct memory_device *m, int fd, const char *path)
{
	int rc = -ENOTSUP;

	/* Benchmarks only (bench/bench.py 'hash-read-holes'): read every
	 * page, holes too, as before, to measure what skipping them saves. */
	if (m->tops == &hash_tracker_ops && !getenv("REMUS_BENCH_HASH_READ_HOLES")) {
		rc = hash_skip_holes(m->tracker, fd);
		if (!rc) {
			log_info("memory: %s is on tmpfs: pages the guest never wrote stay holes, "
				 "neither read nor allocated (docs/TRACKERS.md, \"Holes\")", path);
			return;
		}
		if (rc != -ENOTSUP)
			log_warn("memory: cannot track the holes of %s (%s): every page is read",
				 path, strerror(-rc));
	}
	if (madvise((void *)m->ram, m->ram_size, MADV_POPULATE_READ) == 0 || errno != EINVAL)
		return; /* else the pages fault in as they are read */
	/* before Linux 5.14: touch every page */
	for (size_t i = 0; i < m->npages; i++)
		(void)*(volatile const uint8_t *)(m->ram + i * PROTO_PAGE_SIZE);
}

static int memory_setup(struct ckpt_ctx *cx, void **state)
{
	struct memory_device *m = calloc(1, sizeof(*m));
	int fd = -1, rc;

	if (!m)
		return -ENOMEM;
	*state = m;
	m->cx = cx;
	ev_timer_init(&m->sync_step, on_sync_step, 0, 0);
	ev_timer_init(&m->writer_check, on_writer_check, 0, 0);
	ev_check_init(&m->sync_wait, on_sync_wait);
	/* After the link's own watchers in the same turn of the loop, so it
	 * sees what they just wrote. */
	ev_set_priority(&m->sync_wait, EV_MINPRI);
	m->sync_step.data = m->writer_check.data = m->sync_wait.data = m;
	m->ram_size = cx->vm->ram_size;
	m->npages = m->ram_size / PROTO_PAGE_SIZE;
	fd = open(cx->vm->ram_path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		rc = -errno;
		log_err("cannot open guest RAM file %s: %s", cx->vm->ram_path, strerror(errno));
		return rc;
	}
	m->ram = mmap(NULL, m->ram_size, PROT_READ, MAP_SHARED, fd, 0);
	if (m->ram == MAP_FAILED) {
		rc = -errno;
		m->ram = NULL;
		close(fd);
		log_err("cannot map guest RAM file %s: %s", cx->vm->ram_path, strerror(-rc));
		return rc;
	}
	m->dirty = calloc(m->npages, sizeof(*m->dirty));
	rc = m->dirty ? start_tracker(cx, m) : -ENOMEM;
	if (!rc)
		populate(m, fd, cx->vm->ram_path);
	close(fd);
	if (rc)
		return rc;
	rc = compress_init(cx->compress, cx->cfg->compress,
			   (size_t)cx->cfg->compress_cache_mb << 20);
	if (rc) {
		log_err("--compress-cache-mb %u: %s", cx->cfg->compress_cache_mb, strerror(-rc));
		return rc;
	}
	log_info("memory: %zu MiB in %s, tracker %s, %u capture threads", m->ram_size >> 20,
		 cx->vm->ram_path, m->tops->name, cx->cfg->capture_threads);
	return 0;
}

static void memory_teardown(void *state)
{
	struct memory_device *m = state;

	if (!m)
		return;
	ev_timer_stop(m->cx->loop, &m->sync_step);
	ev_timer_stop(m->cx->loop, &m->writer_check);
	ev_check_stop(m->cx->loop, &m->sync_wait);
	if (m->tracker)
		m->tops->fini(m->tracker);
	if (m->ram)
		munmap((void *)m->ram, m->ram_size);
	compress_free(m->cx->compress);
	free(m->dirty);
	free(m);
}

/* Pages of the tracker's staging, by a list of page numbers. */
struct staged_pages {
	const struct memory_device *m;
	const uint32_t *idx;
};

static uint64_t staged_index(const void *ctx, size_t i)
{
	const struct staged_pages *s = ctx;

	return s->idx[i];
}

static const uint8_t *staged_data(const void *ctx, size_t i)
{
	const struct staged_pages *s = ctx;

	return s->m->tops->page(s->m->tracker, s->idx[i]);
}

/* Queue pages idx[0..n). Page data is referenced in the tracker's staging
 * copy, which stays untouched until the epoch is acked (in the full copy,
 * for hash: until the step's frames are written, below). */
static int send_pages(struct memory_device *m, struct ckpt_ctx *cx,
		      struct epoch_tally *t, const uint32_t *idx, size_t n)
{
	struct staged_pages s = { .m = m, .idx = idx };
	struct page_list l = { .n = n, .index = staged_index, .data = staged_data, .ctx = &s };

	return page_frames_push(cx, t, &l);
}

/* The soft-dirty full copy reads guest RAM through QEMU's mapping so that
 * every page is in QEMU's page tables; where it could not, those pages are
 * compared in every pause. Say so: it is the pause growing with RAM. */
static void warn_unpopulated(const struct memory_device *m)
{
	struct softdirty_stats st;

	softdirty_get_stats(m->tracker, &st);
	if (st.populated < m->npages)
		log_warn("memory: %zu of %zu pages could not be read through QEMU's mapping (%s); "
			 "those QEMU has not touched are compared in every pause (docs/SOFT-DIRTY.md)",
			 m->npages - (size_t)st.populated, m->npages,
			 st.populate_error ? strerror(st.populate_error) : "?");
}

/* May the next step be copied? Its pages go into the slots of the step
 * sync_window steps before it (or earlier ones), whose frames must be
 * written by now: the link's bytes sent have passed what it had queued
 * after that step. Frames go out in order, so every earlier step is
 * written too. (A link that drops frames unsent is closing: the steps
 * stop, and the next session starts over.) */
static bool sync_slots_free(const struct memory_device *m, const struct ckpt_ctx *cx)
{
	/* Compressed frames are copies, not references to the tracker's
	 * pages: the copy goes at the link's pace, not into memory. */
	if (cx->compress->active && ckpt_link_queued(cx) > SYNC_COMPRESSED_HIGH)
		return false;
	return !m->sync_window || m->sync_steps < m->sync_window ||
	       ckpt_link_sent(cx) >= m->sync_mark[(m->sync_steps - m->sync_window) % SYNC_MARKS];
}

/* Delta resync: of the step's n pages (m->dirty[sync_next...], just
 * copied), keep in front those whose hash differs from the backup's page;
 * the others it has already. Returns how many are kept. */
static size_t delta_filter(struct memory_device *m, struct ckpt_ctx *cx, size_t n)
{
	uint8_t h[PAGE_HASH_SIZE];
	uint32_t *idx = m->dirty + m->sync_next;
	size_t kept = 0;

	if (!cx->delta->hashes)
		return n;
	for (size_t i = 0; i < n; i++) {
		uint32_t page = idx[i];

		page_hash(m->tops->page(m->tracker, page), cx->delta->seed, h);
		if (memcmp(h, cx->delta->hashes + (size_t)page * PAGE_HASH_SIZE, PAGE_HASH_SIZE))
			idx[kept++] = page;
	}
	cx->delta->pages_same += n - kept;
	return kept;
}

/* One step of the initial copy; the last one ends this device's epoch 0. */
static void on_sync_step(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct memory_device *m = w->data;
	struct ckpt_ctx *cx = m->cx;
	size_t n = m->npages - m->sync_next;

	(void)revents;
	if (!ckpt_link_up(cx))
		return;  /* the backup is gone: the next session starts over */
	if (!sync_slots_free(m, cx)) {
		m->sync_waits++;
		ev_check_start(loop, &m->sync_wait);
		return;
	}
	if (n > m->sync_step_pages)
		n = m->sync_step_pages;
	m->tops->copy_pages(m->tracker, m->sync_next, n);
	if (send_pages(m, cx, cx->sync_tally, m->dirty + m->sync_next, delta_filter(m, cx, n))) {
		ckpt_resync(cx, "initial sync could not be queued; resyncing");
		return;
	}
	m->sync_mark[m->sync_steps % SYNC_MARKS] = ckpt_link_sent(cx) + ckpt_link_queued(cx);
	m->sync_steps++;
	m->sync_next += n;
	if (m->sync_next < m->npages) {
		ev_timer_start(loop, w);
		return;
	}
	if (cx->delta->hashes) {
		log_info("delta resync: %llu of %zu pages differ from the backup's replica and "
			 "were sent (%.1f%%)", (unsigned long long)(m->npages - cx->delta->pages_same),
			 m->npages, 100.0 * (double)(m->npages - cx->delta->pages_same) /
			 (double)m->npages);
		ckpt_delta_done(cx);
	}
	if (m->sync_window)
		log_info("initial sync: %zu MiB of RAM copied and queued in %.1f ms (VM running; "
			 "%zu of %zu steps waited for the link to write a step whose slots they "
			 "reuse)", m->ram_size >> 20, mono_ms() - m->sync_started_ms,
			 m->sync_waits, m->sync_steps);
	else
		log_info("initial sync: %zu MiB of RAM copied and queued in %.1f ms (VM running)",
			 m->ram_size >> 20, mono_ms() - m->sync_started_ms);
	if (m->tops == &softdirty_tracker_ops)
		warn_unpopulated(m);
	epoch_sync_device_ready(cx);
}

/* The link wrote something (or the loop turned for another reason): go on
 * with the copy once the slots of the next step are free. */
static void on_sync_wait(struct ev_loop *loop, ev_check *w, int revents)
{
	struct memory_device *m = w->data;
	struct ckpt_ctx *cx = m->cx;

	(void)revents;
	if (ckpt_link_up(cx) && !sync_slots_free(m, cx))
		return;
	ev_check_stop(loop, w);
	on_sync_step(loop, &m->sync_step, 0);
}

static int memory_sync(void *state, struct ckpt_ctx *cx, struct epoch_tally *t)
{
	struct memory_device *m = state;
	size_t keep = m->tops->full_copy_keep;
	int rc;

	(void)t;
	/* The VM keeps running while we copy: the copy is torn, but the first
	 * paused scan finds every page that changed since, so the first
	 * committed epoch is consistent. A new session starts over. */
	ev_timer_stop(cx->loop, &m->sync_step);
	ev_check_stop(cx->loop, &m->sync_wait);
	m->sync_step_pages = keep && keep < SYNC_STEP_PAGES ? keep : SYNC_STEP_PAGES;
	m->sync_window = keep ? (unsigned)(keep / m->sync_step_pages) : 0;
	if (m->sync_window > SYNC_MARKS)
		m->sync_window = SYNC_MARKS;  /* waits for a later step: sooner than needed */
	m->sync_steps = m->sync_waits = 0;
	rc = m->tops->begin_full_copy(m->tracker);
	if (rc)
		return rc;
	for (size_t i = 0; i < m->npages; i++)
		m->dirty[i] = (uint32_t)i;
	m->ndirty = 0;
	cx->delta->pages_same = 0;
	compress_session(cx->compress, ckpt_backup_takes_lz4(cx));
	m->sync_next = 0;
	m->sync_started_ms = mono_ms();
	ev_timer_set(&m->sync_step, 0, 0);
	ev_timer_start(cx->loop, &m->sync_step);
	return CKPT_SYNC_PENDING;
}

static int memory_postsuspend(void *state, struct ckpt_ctx *cx, struct epoch_tally *t)
{
	struct memory_device *m = state;

	m->ndirty = m->tops->scan(m->tracker, m->dirty);
	ckpt_verify_at_barrier(cx, m->ram,
			       m->tops == &hash_tracker_ops ? hash_holes(m->tracker) : NULL,
			       m->npages, t->id);
	return 0;
}

static int memory_send(void *state, struct ckpt_ctx *cx, struct epoch_tally *t)
{
	struct memory_device *m = state;

	return send_pages(m, cx, t, m->dirty, m->ndirty) ?: ckpt_verify_resends(cx, t);
}

/* What the soft-dirty log cost: pages it flagged and pages absent from
 * QEMU's page tables are compared in the pause (docs/SOFT-DIRTY.md rule 2),
 * the rest is trusted. Absent pages should be near zero once the full copy
 * has mapped guest RAM into QEMU. Counts since attach. */
static void softdirty_status(const struct memory_device *m, struct json_object *out)
{
	struct softdirty_stats st;

	softdirty_get_stats(m->tracker, &st);
	json_object_object_add(out, "softdirty_scans", json_object_new_int64((int64_t)st.scans));
	json_object_object_add(out, "softdirty_flagged_pages", json_object_new_int64((int64_t)st.flagged));
	json_object_object_add(out, "softdirty_absent_pages", json_object_new_int64((int64_t)st.absent));
	json_object_object_add(out, "softdirty_full_scans", json_object_new_int64((int64_t)st.full_scans));
	json_object_object_add(out, "softdirty_clears_skipped",
			       json_object_new_int64((int64_t)st.clears_skipped));
	json_object_object_add(out, "softdirty_flagged_unchanged_pages",
			       json_object_new_int64((int64_t)st.flagged_same));
	json_object_object_add(out, "softdirty_populated_pages",
			       json_object_new_int64((int64_t)st.populated));
	json_object_object_add(out, "softdirty_populate_error",
			       json_object_new_string(st.populate_error ? strerror(st.populate_error) : ""));
	json_object_object_add(out, "softdirty_log_read",
			       json_object_new_string(st.read_by_ioctl ? "PAGEMAP_SCAN" : "pagemap"));
	json_object_object_add(out, "softdirty_ioctl_reads",
			       json_object_new_int64((int64_t)st.ioctl_reads));
	json_object_object_add(out, "softdirty_ioctl_overflows",
			       json_object_new_int64((int64_t)st.ioctl_overflows));
}

/* The hash tracker's staging: slots resident now, and at most. */
static void hash_status(const struct memory_device *m, struct json_object *out)
{
	struct hash_stats st;

	hash_get_stats(m->tracker, &st);
	json_object_object_add(out, "hash_scans", json_object_new_int64((int64_t)st.scans));
	json_object_object_add(out, "hash_staging_pages",
			       json_object_new_int64((int64_t)st.staging_pages));
	json_object_object_add(out, "hash_staging_peak_pages",
			       json_object_new_int64((int64_t)st.staging_peak));
	json_object_object_add(out, "hash_changed_in_pause_pages",
			       json_object_new_int64((int64_t)st.changed_in_pause));
	json_object_object_add(out, "hash_skips_holes", json_object_new_boolean(st.skips_holes));
	json_object_object_add(out, "hash_hole_pages", json_object_new_int64((int64_t)st.hole_pages));
	json_object_object_add(out, "hash_holes_written_pages",
			       json_object_new_int64((int64_t)st.holes_found));
	json_object_object_add(out, "hash_hole_ms",
			       json_object_new_double(st.scans ? st.ns_holes / 1e6 / st.scans : 0));
	json_object_object_add(out, "hash_hole_checks_failed",
			       json_object_new_int64((int64_t)st.hole_checks_failed));
}

static void memory_status(void *state, struct json_object *out)
{
	struct memory_device *m = state;

	json_object_object_add(out, "tracker",
			       json_object_new_string(m->gave_up ? "compare" : m->tops->name));
	json_object_object_add(out, "tracker_reason", json_object_new_string(m->why));
	if (m->tops == &softdirty_tracker_ops && !m->gave_up)
		softdirty_status(m, out);
	if (m->tops == &hash_tracker_ops)
		hash_status(m, out);
	compress_status(m->cx->compress, out);
}

const struct ckpt_device_ops memory_device_ops = {
	.name = "memory",
	.setup = memory_setup,
	.teardown = memory_teardown,
	.sync = memory_sync,
	.postsuspend = memory_postsuspend,
	.send = memory_send,
	.status = memory_status,
};
