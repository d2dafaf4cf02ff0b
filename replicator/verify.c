/* Online verify (verify.h). */
#include "verify.h"
#include "clock.h"
#include "ckpt_device.h"
#include "dev_disk.h"
#include "log.h"
#include "page_frames.h"
#include "page_hash.h"
#include "ram_holes.h"
#include "replicator.h"
#include "verify_blocks.h"

#include <errno.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

void verify_init(struct replicator *r)
{
	memset(&r->verify, 0, sizeof(r->verify));
	r->verify.client_fd = -1;
}

/* The images stay open past the end of a pass: the last slice's blocks
 * are read again at the next barrier, to be resent. */
static void close_disks(struct verify *v)
{
	for (uint32_t i = 0; i < v->ndisks; i++) {
		if (v->disks[i].fd >= 0)
			close(v->disks[i].fd);
		v->disks[i].fd = -1;
	}
	v->ndisks = 0;
}

static void end_pass(struct replicator *r, struct json_object *o)
{
	struct verify *v = &r->verify;

	if (v->client_fd >= 0) {
		control_reply(v->client_fd, json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
		close(v->client_fd);
		v->client_fd = -1;
	}
	json_object_put(o);
	free(v->pending);
	v->pending = NULL;
	v->active = false;
	v->slice_out = false;
}

void verify_free(struct replicator *r)
{
	verify_abort(r, "the replicator stops");
	close_disks(&r->verify);
	free(r->verify.block_buf);
	r->verify.block_buf = NULL;
	free(r->verify.resend_pages);
	r->verify.resend_pages = NULL;
}

void verify_abort(struct replicator *r, const char *why)
{
	struct json_object *o;

	if (!r->verify.active)
		return;
	log_warn("verify: stopped after %llu of %llu pages and %llu disk blocks: %s",
		 (unsigned long long)r->verify.checked, (unsigned long long)r->verify.npages,
		 (unsigned long long)r->verify.blocks_checked, why);
	o = json_object_new_object();
	json_object_object_add(o, "ok", json_object_new_boolean(0));
	json_object_object_add(o, "error", json_object_new_string(why));
	end_pass(r, o);
}

static char *error_reply(const char *msg)
{
	struct json_object *o = json_object_new_object();
	char *text;

	json_object_object_add(o, "ok", json_object_new_boolean(0));
	json_object_object_add(o, "error", json_object_new_string(msg));
	text = strdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
	json_object_put(o);
	return text;
}

static unsigned disks_compared(const struct verify *v)
{
	unsigned n = 0;

	for (uint32_t i = 0; i < v->ndisks; i++)
		n += v->disks[i].fd >= 0;
	return n;
}

/* The replicated disks this pass compares after RAM, and those it cannot. */
static void find_disks(struct replicator *r, struct verify *v)
{
	close_disks(v);
	v->disks_skipped_why = NULL;
	if (!r->ckpt.protected_disks)
		return;
	if (!r->agent_verify_disk) {
		v->disks_skipped_why = "the backup agent cannot compare disks (an older remus-agent)";
		return;
	}
	v->ndisks = disk_verify_sources(epoch_device_state(r, &disk_device_ops), v->disks,
					 PROTO_MAX_DISKS);
	/* Touched now, not in a pause: a fresh buffer's first touch faults
	 * (and may wait for a huge page) page by page, milliseconds a slice. */
	if (!v->block_buf && (v->block_buf = malloc(VERIFY_DISK_MAX_BLOCKS * PROTO_VERIFY_BLOCK)))
		memset(v->block_buf, 0, VERIFY_DISK_MAX_BLOCKS * PROTO_VERIFY_BLOCK);
	if (!v->block_buf) {
		close_disks(v);
		v->disks_skipped_why = "no memory for a buffer of disk blocks";
		return;
	}
	for (uint32_t i = 0; i < v->ndisks; i++)
		if (v->disks[i].fd < 0)
			log_warn("verify: disk %s is not compared: %s", v->disks[i].name,
				 v->disks[i].why);
}

char *verify_start(struct replicator *r, int fd, bool *keep)
{
	struct verify *v = &r->verify;

	if (v->active)
		return error_reply("a verify pass is already running");
	if (!prot_is_protected(&r->state) || !peer_link_up(&r->link))
		return error_reply("the VM is not protected: nothing to compare with");
	if (!r->agent_verify)
		return error_reply("the backup agent cannot verify (an older remus-agent?)");
	if (!prot_checkpoints_run(&r->state))
		return error_reply("protection is paused or being handed over");
	if (getrandom(&v->seed, sizeof(v->seed), 0) != sizeof(v->seed))
		return error_reply("getrandom failed");
	v->active = true;
	v->client_fd = fd;
	v->npages = r->vm.ram_size / PROTO_PAGE_SIZE;
	v->cur = -1;
	v->nitems = v->npages;
	v->next = 0;
	v->checked = v->differ = v->skipped = v->resent = 0;
	v->blocks_checked = v->blocks_differ = v->blocks_resent = 0;
	v->redo = 0;
	find_disks(r, v);
	v->slice_ms_max = v->slice_ms_sum = v->slice_cpu_ms_max = 0;
	v->slices = 0;
	v->slice_pages = VERIFY_SLICE_PAGES;
	v->started_ms = mono_ms();
	*keep = true;
	log_info("verify: comparing the backup's replica with the VM's %llu pages and %u of %d "
		 "disk(s), a slice per epoch of about %.1f ms of hashing",
		 (unsigned long long)v->npages, disks_compared(v), r->ckpt.protected_disks,
		 VERIFY_SLICE_TARGET_MS);
	return NULL;
}

static uint64_t blocks_of(const struct verify_disk *k)
{
	return proto_disk_chunks(k->size, PROTO_VERIFY_BLOCK);
}

/* Item i of what is compared (RAM: cur -1, else a disk) as this barrier
 * leaves it, into out (a page, or a block padded with zeroes past the
 * disk's end). 0, or -errno of the read. */
static int read_item(struct verify *v, int cur, const uint8_t *ram, uint64_t i,
		     uint8_t *out)
{
	if (cur < 0) {
		const uint8_t *page = ram_holes_read(v->holes, ram, i, out);

		if (page != out)
			memcpy(out, page, PROTO_PAGE_SIZE);
		return 0;
	}
	return verify_read_blocks(v->disks[cur].fd, v->disks[cur].size, i, 1, out);
}

/* The items found different last time, as this barrier leaves them: the
 * epoch carries them again (alongside its own dirty pages and writes). */
static void take_resends(struct verify *v, const uint8_t *ram, size_t npages)
{
	size_t n = 0;

	free(v->resend_pages);
	v->resend_pages = NULL;
	v->nresend_pages = 0;
	if (v->resend_cur >= 0 &&
	    (v->resend_cur >= (int)v->ndisks || v->disks[v->resend_cur].fd < 0))
		v->nresend = 0; /* a new pass found the disk no longer readable */
	if (!v->nresend) {
		if (!v->active)
			close_disks(v);
		return;
	}
	v->resend_pages = malloc(v->nresend * PROTO_PAGE_SIZE);
	if (!v->resend_pages)
		return; /* found again by the next pass */
	for (size_t i = 0; i < v->nresend; i++) {
		uint64_t items = v->resend_cur < 0 ? npages : blocks_of(&v->disks[v->resend_cur]);

		if (v->resend[i] >= items ||
		    read_item(v, v->resend_cur, ram, v->resend[i], v->resend_pages + n * PROTO_PAGE_SIZE))
			continue; /* found again by the next pass */
		v->resend_idx[n] = v->resend[i];
		n++;
	}
	v->nresend_pages = n;
	v->pages_cur = v->resend_cur;
	if (!v->active)
		close_disks(v); /* the pass's last resends are read */
	if (v->resend_cur < 0)
		v->resent += n;
	else
		v->blocks_resent += n;
	v->nresend = 0;
}

static bool next_target(struct verify *v);
static void pass_done(struct replicator *r);

/* The current disk cannot be compared (why): named in the answer, and
 * the pass goes on with the next one (or ends, at the next result or
 * barrier, if none is left). */
static void give_up_disk(struct verify *v, const char *why)
{
	struct verify_disk *k = &v->disks[v->cur];

	log_warn("verify: disk %s not compared: %s", k->name, why);
	snprintf(k->why, sizeof(k->why), "%s", why);
	close(k->fd);
	k->fd = -1;
	v->redo = 0;
	if (!next_target(v))
		v->next = v->nitems; /* nothing left: verify_at_barrier ends the pass */
}

/* Aim the next slice at VERIFY_SLICE_TARGET_MS of hashing, by what this
 * one took: the pause grows by that much, whatever the host's speed. */
static void next_slice_size(struct verify *v, uint32_t n, double ms)
{
	double want = ms > 0.01 ? n * VERIFY_SLICE_TARGET_MS / ms : PROTO_VERIFY_MAX_PAGES;

	/* at most twice as large: a slice timed in the cache, or between two
	 * preemptions, says little about one 8 times its size */
	if (want > 2.0 * n)
		want = 2.0 * n;

	v->slice_pages = want < VERIFY_SLICE_MIN_PAGES ? VERIFY_SLICE_MIN_PAGES :
			 want > PROTO_VERIFY_MAX_PAGES ? PROTO_VERIFY_MAX_PAGES : (uint32_t)want;
}

/* Where item i of the slice is: RAM in place, a disk block read now into
 * the pass's buffer, VERIFY_READ_STEP blocks at a time (one pread each,
 * zeroes past the disk's end), so that the time box bounds the reads too.
 * NULL when the disk cannot be read. */
static const uint8_t *slice_item(struct verify *v, const uint8_t *ram, uint32_t n, uint32_t i)
{
	const struct verify_disk *k;
	uint32_t step;

	if (v->cur < 0)
		return ram_holes_read(v->holes, ram, v->next + i, v->hole_page);
	k = &v->disks[v->cur];
	step = n - i < VERIFY_READ_STEP ? n - i : VERIFY_READ_STEP;
	if (i % VERIFY_READ_STEP == 0 &&
	    verify_read_blocks(k->fd, k->size, v->next + i, step,
			       v->block_buf + (size_t)i * PROTO_VERIFY_BLOCK))
		return NULL;
	return v->block_buf + (size_t)i * PROTO_VERIFY_BLOCK;
}

/* Hash up to n items into out, stopping early once the slice (started at
 * t0) has used VERIFY_SLICE_BUDGET_MS: how many were hashed, or -1 when a
 * disk block could not be read. */
static int64_t hash_within_budget(struct verify *v, const uint8_t *ram, uint32_t n, double t0,
				  uint8_t *out)
{
	uint32_t i;

	for (i = 0; i < n; i++) {
		const uint8_t *item;

		if (i >= VERIFY_SLICE_MIN_DONE && i % VERIFY_SLICE_CHECK_PAGES == 0 &&
		    mono_ms() - t0 >= VERIFY_SLICE_BUDGET_MS)
			break;
		item = slice_item(v, ram, n, i);
		if (!item)
			return -1;
		page_hash(item, v->seed, out + (size_t)i * PAGE_HASH_SIZE);
	}
	return i;
}

static void hash_slice(struct verify *v, const uint8_t *ram, uint64_t epoch)
{
	uint32_t max = v->cur >= 0 && v->slice_pages > VERIFY_DISK_MAX_BLOCKS ?
		       VERIFY_DISK_MAX_BLOCKS : v->slice_pages;
	uint32_t n = v->nitems - v->next < max ? (uint32_t)(v->nitems - v->next) : max;
	double t0 = mono_ms(), cpu0 = thread_cpu_ms(), ms, cpu_ms;
	uint8_t *p = malloc(PROTO_VERIFY_HDR_SIZE + (size_t)n * PAGE_HASH_SIZE);
	int64_t done;

	if (!p)
		return; /* tried again at the next barrier */
	done = v->cur < 0 || v->block_buf ?
	       hash_within_budget(v, ram, n, t0, p + PROTO_VERIFY_HDR_SIZE) : -1;
	if (done < 0) {
		free(p);
		if (++v->redo > VERIFY_MAX_REDO)
			give_up_disk(v, "its image could not be read here");
		return; /* tried again at the next barrier */
	}
	n = (uint32_t)done;
	proto_encode_verify_hdr(p, v->seed, v->next, n,
				v->cur < 0 ? 0 : v->disks[v->cur].index + 1);
	ms = mono_ms() - t0;
	cpu_ms = thread_cpu_ms() - cpu0;
	log_debug("verify: slice of %u %s from %llu: %.2f ms (CPU %.2f ms)", n,
		  v->cur < 0 ? "pages" : "blocks", (unsigned long long)v->next, ms, cpu_ms);
	if (ms > v->slice_ms_max)
		v->slice_ms_max = ms;
	if (cpu_ms > v->slice_cpu_ms_max)
		v->slice_cpu_ms_max = cpu_ms;
	v->slice_ms_sum += ms;
	v->slices++;
	next_slice_size(v, n, ms);
	v->pending = p;
	v->pending_len = PROTO_VERIFY_HDR_SIZE + n * PAGE_HASH_SIZE;
	v->pending_epoch = epoch;
	v->slice_count = n;
	v->slice_out = true;
	v->slice_sent_ms = mono_ms();
}

void verify_at_barrier(struct replicator *r, const uint8_t *ram, const struct ram_holes *holes,
		       size_t npages, uint64_t epoch)
{
	static const struct ram_holes none = { .fd = -1 };
	struct verify *v = &r->verify;

	v->holes = holes ? holes : &none;
	take_resends(v, ram, npages);
	if (v->active && v->slice_out && mono_ms() - v->slice_sent_ms > VERIFY_ANSWER_MS) {
		verify_abort(r, "the backup did not answer a verify slice in time");
		return;
	}
	if (v->active && !v->slice_out && v->next >= v->nitems)
		pass_done(r); /* the last disk was given up */
	else if (v->active && !v->slice_out && v->npages == npages)
		hash_slice(v, ram, epoch);
}

static uint64_t resend_index(const void *ctx, size_t i)
{
	const struct verify *v = ctx;

	return v->resend_idx[i];
}

static const uint8_t *resend_data(const void *ctx, size_t i)
{
	const struct verify *v = ctx;

	return v->resend_pages + i * PROTO_PAGE_SIZE;
}

/* A disk's blocks as DISK writes of epoch t (the last one cut at the
 * disk's end). Fresh records at each send: a frame owns its record. */
static int send_block_resends(struct replicator *r, struct epoch_tally *t)
{
	const struct verify *v = &r->verify;
	const struct verify_disk *k = &v->disks[v->pages_cur];

	for (size_t i = 0; i < v->nresend_pages; i++) {
		uint64_t off = v->resend_idx[i] * PROTO_VERIFY_BLOCK;
		uint64_t len = k->size - off < PROTO_VERIFY_BLOCK ? k->size - off : PROTO_VERIFY_BLOCK;
		struct disk_rec *rec = disk_rec_new(k->index, DISK_OP_WRITE, off, len);
		int rc;

		if (!rec)
			return -ENOMEM;
		memcpy(rec->data, v->resend_pages + i * PROTO_PAGE_SIZE, len);
		if ((rc = disk_push_rec(&r->ckpt, t, rec)))
			return rc;
	}
	return 0;
}

/* Whole pages: the same page may be among the epoch's dirty ones too, and
 * the backup decodes a delta against its committed copy, not that one. A
 * disk block goes after the device's writes of the epoch or before them:
 * either way the replica ends as the barrier left the disk, as those
 * writes are in the block already. */
int verify_send_resends(struct replicator *r, struct epoch_tally *t)
{
	struct page_list l = {
		.n = r->verify.nresend_pages, .index = resend_index, .data = resend_data,
		.ctx = &r->verify, .no_delta = true,
	};

	if (r->verify.nresend_pages && r->verify.pages_cur >= 0)
		return send_block_resends(r, t);
	return page_frames_push(&r->ckpt, t, &l);
}

void verify_after_epoch_end(struct replicator *r, uint64_t epoch)
{
	struct verify *v = &r->verify;
	struct iovec iov;
	uint8_t *p = v->pending;

	if (!p || v->pending_epoch != epoch)
		return;
	v->pending = NULL;
	iov = (struct iovec){ .iov_base = p, .iov_len = v->pending_len };
	if (peer_link_push(&r->link, FRAME_VERIFY, epoch, &iov, 1, p, NULL))
		verify_abort(r, "the verify frame could not be queued");
}

/* [{"disk":NAME,"why":TEXT}] of the replicated disks not compared. */
static struct json_object *disks_not_checked(const struct replicator *r, const struct verify *v)
{
	struct json_object *a = json_object_new_array();

	for (uint32_t i = 0; i < v->ndisks; i++) {
		struct json_object *o;

		if (v->disks[i].fd >= 0)
			continue;
		o = json_object_new_object();
		json_object_object_add(o, "disk", json_object_new_string(v->disks[i].name));
		json_object_object_add(o, "why", json_object_new_string(v->disks[i].why));
		json_object_array_add(a, o);
	}
	if (v->disks_skipped_why && r->ckpt.protected_disks) {
		struct json_object *o = json_object_new_object();

		json_object_object_add(o, "disk", json_object_new_string("all"));
		json_object_object_add(o, "why", json_object_new_string(v->disks_skipped_why));
		json_object_array_add(a, o);
	}
	return a;
}

/* What is compared next: RAM's pages first, then each disk that can be
 * read here. false when nothing is left. */
static bool next_target(struct verify *v)
{
	while (++v->cur < (int)v->ndisks) {
		if (v->disks[v->cur].fd < 0)
			continue;
		v->nitems = blocks_of(&v->disks[v->cur]);
		v->next = 0;
		v->redo = 0;
		/* a disk's blocks are read, not only hashed: start small */
		v->slice_pages = VERIFY_SLICE_MIN_PAGES;
		log_info("verify: RAM%s compared; now disk %s (%llu blocks of 4 KiB)",
			 v->cur ? " and the disks before" : "", v->disks[v->cur].name,
			 (unsigned long long)v->nitems);
		return true;
	}
	return false;
}

/* The slice is done again at the next barrier; not for ever: a disk the
 * backup cannot compare is given up, a RAM slice ends the pass. */
static void redo_slice(struct replicator *r)
{
	struct verify *v = &r->verify;

	v->skipped++;
	if (++v->redo <= VERIFY_MAX_REDO)
		return;
	if (v->cur >= 0)
		give_up_disk(v, "the backup could not compare it (see the agent's log)");
	else
		verify_abort(r, "the backup could not compare the same slice of RAM again and again");
}

static void pass_done(struct replicator *r)
{
	struct verify *v = &r->verify;
	struct json_object *o = json_object_new_object();
	double s = (mono_ms() - v->started_ms) / 1000;

	log_info("verify: done in %.1f s: %llu pages compared, %llu differed (sent again); %llu "
		 "blocks of %u disk(s) compared, %llu differed (sent again); %llu slices skipped "
		 "and redone; a slice took at most %.2f ms of the pause (%.2f ms of CPU)", s,
		 (unsigned long long)v->checked, (unsigned long long)v->differ,
		 (unsigned long long)v->blocks_checked, disks_compared(v),
		 (unsigned long long)v->blocks_differ, (unsigned long long)v->skipped,
		 v->slice_ms_max, v->slice_cpu_ms_max);
	json_object_object_add(o, "ok", json_object_new_boolean(1));
	json_object_object_add(o, "pages_checked", json_object_new_uint64(v->checked));
	json_object_object_add(o, "pages_differ", json_object_new_uint64(v->differ));
	json_object_object_add(o, "pages_resent", json_object_new_uint64(v->resent));
	json_object_object_add(o, "slices_redone", json_object_new_uint64(v->skipped));
	json_object_object_add(o, "seconds", json_object_new_double(s));
	json_object_object_add(o, "slice_hash_ms_max", json_object_new_double(v->slice_ms_max));
	/* the wall time above includes any preemption on a busy host */
	json_object_object_add(o, "slice_hash_cpu_ms_max",
			       json_object_new_double(v->slice_cpu_ms_max));
	json_object_object_add(o, "slice_hash_ms_mean",
			       json_object_new_double(v->slices ? v->slice_ms_sum / v->slices : 0));
	json_object_object_add(o, "slices", json_object_new_uint64(v->slices));
	json_object_object_add(o, "disks_checked", json_object_new_int(disks_compared(v)));
	json_object_object_add(o, "disk_blocks_checked", json_object_new_uint64(v->blocks_checked));
	json_object_object_add(o, "disk_blocks_differ", json_object_new_uint64(v->blocks_differ));
	json_object_object_add(o, "disk_blocks_resent", json_object_new_uint64(v->blocks_resent));
	json_object_object_add(o, "disks_not_checked", disks_not_checked(r, v));
	end_pass(r, o);
}

void verify_on_result(struct replicator *r, const struct frame_hdr *h, const uint8_t *payload)
{
	struct verify *v = &r->verify;
	struct verify_result res;

	if (!v->active || !v->slice_out || proto_parse_verify_result(payload, h->len, &res) ||
	    res.first != v->next || res.count != v->slice_count) {
		log_warn("verify: an unexpected or malformed VERIFY_RESULT from the backup: ignored");
		return;
	}
	v->slice_out = false;
	if (res.nbad == PROTO_VERIFY_SKIPPED) {
		redo_slice(r); /* the replica was not at that epoch (a NACK), or unreadable */
		return;
	}
	v->resend_cur = v->cur;
	for (uint32_t i = 0; i < res.nbad && i < PROTO_VERIFY_MAX_BAD; i++) {
		uint64_t item = proto_get_be64(res.bad_be + 8 * i);

		if (item >= res.first && item < res.first + res.count && v->nresend < VERIFY_MAX_RESEND)
			v->resend[v->nresend++] = item;
	}
	if (res.nbad)
		log_warn("verify: %u of %s %llu-%llu differ on the backup: sent again with the "
			 "next epoch", res.nbad, v->cur < 0 ? "pages" : "the blocks",
			 (unsigned long long)res.first, (unsigned long long)(res.first + res.count - 1));
	if (res.nbad > PROTO_VERIFY_MAX_BAD) {
		redo_slice(r); /* more differ than listed: the listed go again, the slice too */
		return;
	}
	v->redo = 0;
	if (v->cur < 0) {
		v->differ += res.nbad;
		v->checked += res.count;
	} else {
		v->blocks_differ += res.nbad;
		v->blocks_checked += res.count;
	}
	v->next = res.first + res.count;
	if (v->next >= v->nitems && !next_target(v))
		pass_done(r);
}
