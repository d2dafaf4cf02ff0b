/* Compressed checkpoints (--compress, docs/PROTOCOL.md "Compressed pages"):
 * whether this epoch's pages go as PAGES_Z frames, the copies of sent pages
 * their deltas are taken against, and what that gained. */
#ifndef REMUS_COMPRESS_H
#define REMUS_COMPRESS_H

#include "page_codec.h"

#include <json-c/json.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum compress_mode {
	COMPRESS_AUTO,  /* when the link, not the CPU, bounds the checkpoint */
	COMPRESS_ON,
	COMPRESS_OFF,
};
#define COMPRESS_DEFAULT_CACHE_MB 64u

/* The last content sent of recently sent pages: the base of the next
 * delta, which is also what the backup holds of the page once the epoch
 * commits (epochs commit in order, one at a time). Direct-mapped by page
 * number, like QEMU's XBZRLE cache: bounded, O(1), no eviction lists. */
struct delta_cache {
	size_t nslots;
	uint32_t *tag;        /* page + 1 held by the slot; 0: empty */
	uint8_t *data;        /* nslots pages, mapped lazily: only used slots cost */
};

/* What the link and the codec were seen to do, for the auto mode. Rates
 * are in bytes per ms, 0 while unknown. */
struct compress_estimates {
	double link_rate;     /* wire bytes the link carries, beyond its latency */
	double base_ack_ms;   /* ack latency of small epochs: the part bytes do not cost */
	double codec_rate;    /* raw page bytes encoded */
	double ratio;         /* wire bytes / raw bytes of compressed frames */
};

struct compress {
	enum compress_mode mode;
	bool peer_ok;         /* this session's agent decodes PAGES_Z */
	bool active;          /* this epoch's pages are compressed */
	bool probing;         /* auto: this epoch compresses to measure, not by the rule */
	bool ruled_active;    /* auto: the rule's last choice, probes aside (for the log) */
	bool epoch_resent;    /* this epoch was NACKed and queued again */
	unsigned since_probe; /* auto, off: epochs since the last compressed one */
	double last_compressed_ms; /* mono_ms() when an epoch last began compressed */
	struct delta_cache cache;
	struct page_encoder enc;
	struct compress_estimates est;
	char why[160];        /* the last choice, for status */
	/* this epoch, for the estimates */
	uint64_t epoch_raw, epoch_wire;
	double epoch_encode_ms;
	/* totals since attach */
	uint64_t raw_bytes, wire_bytes;   /* pages in PAGES_Z frames, and their frames */
	uint64_t delta_pages, raw_pages, plain_frames, z_frames, epochs_compressed;
};

/* 0, or -errno (the cache could not be mapped). cache_bytes 0: no deltas. */
int compress_init(struct compress *c, enum compress_mode mode, size_t cache_bytes);
void compress_free(struct compress *c);
int compress_parse_mode(const char *text, enum compress_mode *out);
const char *compress_mode_name(enum compress_mode m);

/* A new session (the initial copy starts): the backup holds none of the
 * cached pages for sure. peer_ok: it decodes PAGES_Z. */
void compress_session(struct compress *c, bool peer_ok);
/* Before an epoch's (or the initial copy's) frames are queued. */
void compress_epoch_begin(struct compress *c);
/* An epoch of wire_bytes on the wire (all its frames) was acked ack_ms
 * after it was queued; the initial copy with wire_bytes 0. */
void compress_epoch_acked(struct compress *c, uint64_t wire_bytes, double ack_ms);
/* The epoch was NACKed and is queued again: its figures are not one send's. */
void compress_epoch_resent(struct compress *c);

/* Auto's rule, on its own for the tests: compressing pays when a raw byte
 * costs more on the link (1/link) than encoding it plus sending what is
 * left (1/codec + ratio/link). 25% more gain to turn on than to stay on,
 * so that noise does not flip it at every epoch. */
bool compress_pays(const struct compress_estimates *e, bool now_on, char *why, size_t len);

/* One frame's pages p[0..n) (their bases filled in here, from the cache,
 * unless no_delta): a PAGES_Z payload in *out, or -E2BIG when it would not
 * be smaller than plain_len (send them plainly). The cache learns the
 * pages either way. While not active the cache is empty (auto drops it
 * when it turns off), so pages sent plainly need nothing here. */
int compress_frame(struct compress *c, struct page_ref *p, size_t n, bool no_delta,
		   size_t plain_len, uint8_t **out, size_t *out_len);
/* A page sent plainly while active (past the epoch's budget): its cached
 * copy, if any, is no longer what the backup will hold. */
void compress_forget(struct compress *c, uint64_t page);

void compress_status(const struct compress *c, struct json_object *out);

#endif
