/* Online verify (verify.h). */
#include "verify.h"
#include "clock.h"
#include "ckpt_device.h"
#include "log.h"
#include "page_frames.h"
#include "page_hash.h"
#include "replicator.h"

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
	free(r->verify.resend_pages);
	r->verify.resend_pages = NULL;
}

void verify_abort(struct replicator *r, const char *why)
{
	struct json_object *o;

	if (!r->verify.active)
		return;
	log_warn("verify: stopped after %llu of %llu pages: %s",
		 (unsigned long long)r->verify.checked, (unsigned long long)r->verify.npages, why);
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
	v->next = 0;
	v->checked = v->differ = v->skipped = v->resent = 0;
	v->slice_ms_max = v->slice_ms_sum = 0;
	v->slices = 0;
	v->slice_pages = VERIFY_SLICE_PAGES;
	v->started_ms = mono_ms();
	*keep = true;
	log_info("verify: comparing the backup's replica with the VM's %llu pages, a slice per "
		 "epoch of about %.1f ms of hashing", (unsigned long long)v->npages,
		 VERIFY_SLICE_TARGET_MS);
	return NULL;
}

/* The pages found different last time, as this barrier leaves them: the
 * epoch carries them again (alongside its own dirty pages). */
static void take_resends(struct verify *v, const uint8_t *ram, size_t npages)
{
	size_t n = 0;

	free(v->resend_pages);
	v->resend_pages = NULL;
	v->nresend_pages = 0;
	if (!v->nresend)
		return;
	v->resend_pages = malloc(v->nresend * PROTO_PAGE_SIZE);
	if (!v->resend_pages)
		return; /* found again by the next pass */
	for (size_t i = 0; i < v->nresend; i++) {
		if (v->resend[i] >= npages)
			continue;
		v->resend_idx[n] = v->resend[i];
		memcpy(v->resend_pages + n * PROTO_PAGE_SIZE,
		       ram + (size_t)v->resend[i] * PROTO_PAGE_SIZE, PROTO_PAGE_SIZE);
		n++;
	}
	v->nresend_pages = n;
	v->resent += n;
	v->nresend = 0;
}

/* Aim the next slice at VERIFY_SLICE_TARGET_MS of hashing, by what this
 * one took: the pause grows by that much, whatever the host's speed. */
static void next_slice_size(struct verify *v, uint32_t n, double ms)
{
	double want = ms > 0.01 ? n * VERIFY_SLICE_TARGET_MS / ms : PROTO_VERIFY_MAX_PAGES;

	v->slice_pages = want < VERIFY_SLICE_MIN_PAGES ? VERIFY_SLICE_MIN_PAGES :
			 want > PROTO_VERIFY_MAX_PAGES ? PROTO_VERIFY_MAX_PAGES : (uint32_t)want;
}

static void hash_slice(struct verify *v, const uint8_t *ram, uint64_t epoch)
{
	uint32_t n = v->npages - v->next < v->slice_pages ? (uint32_t)(v->npages - v->next) :
							     v->slice_pages;
	double t0 = mono_ms(), ms;
	uint8_t *p = malloc(PROTO_VERIFY_HDR_SIZE + (size_t)n * PAGE_HASH_SIZE);

	if (!p)
		return; /* tried again at the next barrier */
	proto_encode_verify_hdr(p, v->seed, v->next, n);
	for (uint32_t i = 0; i < n; i++)
		page_hash(ram + (v->next + i) * PROTO_PAGE_SIZE, v->seed,
			  p + PROTO_VERIFY_HDR_SIZE + (size_t)i * PAGE_HASH_SIZE);
	ms = mono_ms() - t0;
	if (ms > v->slice_ms_max)
		v->slice_ms_max = ms;
	v->slice_ms_sum += ms;
	v->slices++;
	next_slice_size(v, n, ms);
	v->pending = p;
	v->pending_len = PROTO_VERIFY_HDR_SIZE + n * PAGE_HASH_SIZE;
	v->pending_epoch = epoch;
	v->slice_out = true;
	v->slice_sent_ms = mono_ms();
}

void verify_at_barrier(struct replicator *r, const uint8_t *ram, size_t npages, uint64_t epoch)
{
	struct verify *v = &r->verify;

	take_resends(v, ram, npages);
	if (v->active && v->slice_out && mono_ms() - v->slice_sent_ms > VERIFY_ANSWER_MS) {
		verify_abort(r, "the backup did not answer a verify slice in time");
		return;
	}
	if (v->active && !v->slice_out && v->next < v->npages && v->npages == npages)
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

/* Whole pages: the same page may be among the epoch's dirty ones too, and
 * the backup decodes a delta against its committed copy, not that one. */
int verify_send_resends(struct replicator *r, struct epoch_tally *t)
{
	struct page_list l = {
		.n = r->verify.nresend_pages, .index = resend_index, .data = resend_data,
		.ctx = &r->verify, .no_delta = true,
	};

	return page_frames_push(r, t, &l);
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

static void pass_done(struct replicator *r)
{
	struct verify *v = &r->verify;
	struct json_object *o = json_object_new_object();
	double s = (mono_ms() - v->started_ms) / 1000;

	log_info("verify: done in %.1f s: %llu pages compared, %llu differed (sent again), %llu "
		 "slices skipped and redone; hashing a slice took at most %.2f ms of the pause", s,
		 (unsigned long long)v->checked, (unsigned long long)v->differ,
		 (unsigned long long)v->skipped, v->slice_ms_max);
	json_object_object_add(o, "ok", json_object_new_boolean(1));
	json_object_object_add(o, "pages_checked", json_object_new_uint64(v->checked));
	json_object_object_add(o, "pages_differ", json_object_new_uint64(v->differ));
	json_object_object_add(o, "pages_resent", json_object_new_uint64(v->resent));
	json_object_object_add(o, "slices_redone", json_object_new_uint64(v->skipped));
	json_object_object_add(o, "seconds", json_object_new_double(s));
	json_object_object_add(o, "slice_hash_ms_max", json_object_new_double(v->slice_ms_max));
	json_object_object_add(o, "slice_hash_ms_mean",
			       json_object_new_double(v->slices ? v->slice_ms_sum / v->slices : 0));
	json_object_object_add(o, "slices", json_object_new_uint64(v->slices));
	json_object_object_add(o, "disks_checked", json_object_new_boolean(0));
	end_pass(r, o);
}

void verify_on_result(struct replicator *r, const struct frame_hdr *h, const uint8_t *payload)
{
	struct verify *v = &r->verify;
	struct verify_result res;

	if (!v->active || !v->slice_out || proto_parse_verify_result(payload, h->len, &res) ||
	    res.first != v->next) {
		log_warn("verify: an unexpected or malformed VERIFY_RESULT from the backup: ignored");
		return;
	}
	v->slice_out = false;
	if (res.nbad == PROTO_VERIFY_SKIPPED) {
		v->skipped++; /* the replica was not at that epoch (a NACK): again */
		return;
	}
	for (uint32_t i = 0; i < res.nbad && i < PROTO_VERIFY_MAX_BAD; i++) {
		uint64_t page = proto_get_be64(res.bad_be + 8 * i);

		if (page >= res.first && page < res.first + res.count && v->nresend < VERIFY_MAX_RESEND)
			v->resend[v->nresend++] = (uint32_t)page;
	}
	if (res.nbad)
		log_warn("verify: %u of pages %llu-%llu differ on the backup: sent again with the "
			 "next epoch", res.nbad, (unsigned long long)res.first,
			 (unsigned long long)(res.first + res.count - 1));
	if (res.nbad > PROTO_VERIFY_MAX_BAD) {
		/* more differ than listed: the listed go again, the slice too */
		v->skipped++;
		return;
	}
	v->differ += res.nbad;
	v->checked += res.count;
	v->next = res.first + res.count;
	if (v->next >= v->npages)
		pass_done(r);
}
