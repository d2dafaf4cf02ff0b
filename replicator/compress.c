/* Compressed checkpoints: the delta cache, the auto rule, the frames
 * (compress.h). */
#include "compress.h"
#include "clock.h"
#include "control_socket.h"
#include "log.h"
#include "proto.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

/* Epochs below this many wire bytes measure the link's latency, above
 * LINK_SAMPLE_MIN its rate. */
#define SMALL_EPOCH_BYTES (64u << 10)
#define LINK_SAMPLE_MIN   (256u << 10)
/* Auto, off: one epoch in this many, and one at least this often, is
 * compressed to keep the codec's figures current (the workload's pages
 * change); over a slow link epochs can be seconds apart. */
#define PROBE_EVERY 32u
#define PROBE_EVERY_MS 2000.0
/* Auto before the link is measured: compress while the pages shrink to
 * this share or less (any link short of memory speed gains then). */
#define UNMEASURED_LINK_RATIO 0.75
#define EWMA 0.3

static double ewma(double old, double sample)
{
	return old > 0 ? old + EWMA * (sample - old) : sample;
}

/* By enum compress_mode. */
static const char *const mode_names[] = { "auto", "on", "off" };

int compress_parse_mode(const char *text, enum compress_mode *out)
{
	for (size_t i = 0; i < sizeof(mode_names) / sizeof(mode_names[0]); i++)
		if (!strcmp(text, mode_names[i])) {
			*out = (enum compress_mode)i;
			return 0;
		}
	return -EINVAL;
}

const char *compress_mode_name(enum compress_mode m)
{
	return mode_names[m];
}

int compress_init(struct compress *c, enum compress_mode mode, size_t cache_bytes)
{
	size_t n = cache_bytes / PROTO_PAGE_SIZE;

	memset(c, 0, sizeof(*c));
	c->mode = mode;
	snprintf(c->why, sizeof(c->why), "%s", mode == COMPRESS_OFF ? "--compress off" :
		 "no checkpoint yet");
	if (mode == COMPRESS_OFF || !n)
		return 0;
	c->cache.tag = calloc(n, sizeof(*c->cache.tag));
	if (!c->cache.tag)
		return -ENOMEM;
	/* Anonymous and untouched: a slot costs memory once a page is in it. */
	c->cache.data = mmap(NULL, n * PROTO_PAGE_SIZE, PROT_READ | PROT_WRITE,
			     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (c->cache.data == MAP_FAILED) {
		int rc = -errno;

		c->cache.data = NULL;
		free(c->cache.tag);
		c->cache.tag = NULL;
		return rc;
	}
	c->cache.nslots = n;
	return 0;
}

void compress_free(struct compress *c)
{
	if (c->cache.data)
		munmap(c->cache.data, c->cache.nslots * PROTO_PAGE_SIZE);
	free(c->cache.tag);
	page_encoder_free(&c->enc);
	memset(&c->cache, 0, sizeof(c->cache));
}

static uint8_t *slot_data(struct compress *c, size_t slot)
{
	return c->cache.data + slot * PROTO_PAGE_SIZE;
}

/* The backup's copy of page, if the cache holds it. */
static const uint8_t *cached(struct compress *c, uint64_t page)
{
	size_t slot;

	if (!c->cache.nslots)
		return NULL;
	slot = page % c->cache.nslots;
	return c->cache.tag[slot] == page + 1 ? slot_data(c, slot) : NULL;
}

void compress_forget(struct compress *c, uint64_t page)
{
	size_t slot;

	if (!c->cache.nslots)
		return;
	slot = page % c->cache.nslots;
	if (c->cache.tag[slot] == page + 1)
		c->cache.tag[slot] = 0;
}

static void learn(struct compress *c, uint64_t page, const uint8_t *data)
{
	size_t slot;

	if (!c->cache.nslots || page >= UINT32_MAX)
		return;
	slot = page % c->cache.nslots;
	memcpy(slot_data(c, slot), data, PROTO_PAGE_SIZE);
	c->cache.tag[slot] = (uint32_t)page + 1;
}

static void forget_all(struct compress *c)
{
	if (c->cache.nslots)
		memset(c->cache.tag, 0, c->cache.nslots * sizeof(*c->cache.tag));
}

/* auto turned off: the pages sent plainly from now on would leave stale
 * bases behind, and the copies would hold memory for nothing. */
static void drop_cache(struct compress *c)
{
	forget_all(c);
	if (c->cache.nslots)
		madvise(c->cache.data, c->cache.nslots * PROTO_PAGE_SIZE, MADV_DONTNEED);
}

void compress_session(struct compress *c, bool peer_ok)
{
	forget_all(c);
	c->peer_ok = peer_ok;
	compress_epoch_begin(c);
}

bool compress_pays(const struct compress_estimates *e, bool now_on, char *why, size_t len)
{
	double raw_cost, z_cost, gain;

	if (e->link_rate <= 0 || e->codec_rate <= 0 || e->ratio <= 0) {
		snprintf(why, len, "auto: measuring the link and the codec");
		return false;
	}
	raw_cost = 1 / e->link_rate;
	z_cost = 1 / e->codec_rate + e->ratio / e->link_rate;
	gain = raw_cost / z_cost;
	snprintf(why, len, "auto: link %.0f MB/s, codec %.0f MB/s to %.0f%% of the bytes: "
		 "compressing makes the checkpoint %.2fx as fast", e->link_rate / 1e3,
		 e->codec_rate / 1e3, 100 * e->ratio, gain);
	return now_on ? gain >= 1.0 : gain >= 1.25;
}

/* auto: whether this epoch compresses. It starts compressing (the codec
 * is measured on real pages), then follows the rule once both the codec
 * and the link are known; while off, an epoch now and then is compressed
 * to see whether the pages changed (a probe: without deltas, as the cache
 * is emptied while off, so it sees less gain than there may be). */
static bool choose_auto(struct compress *c, bool after_probe)
{
	const struct compress_estimates *e = &c->est;
	double now = mono_ms();

	if (e->codec_rate <= 0 || e->ratio <= 0) {
		snprintf(c->why, sizeof(c->why), "auto: measuring the codec");
		return true;
	}
	if (e->link_rate <= 0) {
		snprintf(c->why, sizeof(c->why), "auto: pages shrink to %.0f%% (the link not "
			 "measured yet)", 100 * e->ratio);
		return e->ratio <= UNMEASURED_LINK_RATIO;
	}
	if (!c->active && (++c->since_probe >= PROBE_EVERY ||
			   now - c->last_compressed_ms >= PROBE_EVERY_MS)) {
		snprintf(c->why, sizeof(c->why), "auto: measuring the codec again (one epoch in "
			 "%u, or every %.0f s)", PROBE_EVERY, PROBE_EVERY_MS / 1e3);
		c->probing = true;
		return true;
	}
	/* after a probe, turning on needs the full margin, as from off */
	return compress_pays(e, c->active && !after_probe, c->why, sizeof(c->why));
}

/* Whether this epoch compresses, and why (c->why). */
static bool choose(struct compress *c, bool after_probe)
{
	if (c->mode == COMPRESS_OFF)
		return false;
	if (!c->peer_ok) {
		snprintf(c->why, sizeof(c->why), "the backup does not decode compressed pages "
			 "(an older agent)");
		return false;
	}
	if (c->mode == COMPRESS_ON) {
		snprintf(c->why, sizeof(c->why), "--compress on");
		return true;
	}
	return choose_auto(c, after_probe);
}

void compress_epoch_begin(struct compress *c)
{
	bool was = c->active, after_probe = c->probing;

	c->epoch_raw = c->epoch_wire = 0;
	c->epoch_encode_ms = 0;
	c->epoch_resent = false;
	c->probing = false;
	c->active = choose(c, after_probe);
	if (c->active) {
		c->since_probe = 0;
		c->last_compressed_ms = mono_ms();
	}
	/* auto's changes of mind, not its probes */
	if (!c->probing) {
		if (c->mode == COMPRESS_AUTO && c->active != c->ruled_active)
			log_info("compression %s: %s", c->active ? "on" : "off", c->why);
		c->ruled_active = c->active;
	}
	if (was && !c->active)
		drop_cache(c);
}

void compress_epoch_resent(struct compress *c)
{
	c->epoch_resent = true;
}

void compress_epoch_acked(struct compress *c, uint64_t wire_bytes, double ack_ms)
{
	struct compress_estimates *e = &c->est;

	/* A resent epoch's figures mix two sends; the initial copy's ack time
	 * is the whole copy's (wire_bytes 0): only its codec figures count. */
	if (ack_ms <= 0 || c->epoch_resent)
		return;
	if (!wire_bytes) {
		/* nothing about the link */
	} else if (wire_bytes < SMALL_EPOCH_BYTES) {
		e->base_ack_ms = ewma(e->base_ack_ms, ack_ms);
	} else if (wire_bytes >= LINK_SAMPLE_MIN) {
		/* The bytes' share of the ack; at least a quarter of it, so that
		 * a latency learnt on another day cannot make the link infinite. */
		double t = ack_ms - e->base_ack_ms;

		if (t < ack_ms / 4)
			t = ack_ms / 4;
		e->link_rate = ewma(e->link_rate, (double)wire_bytes / t);
	}
	if (c->active && c->epoch_raw >= 64 * PROTO_PAGE_SIZE && c->epoch_encode_ms > 0) {
		e->codec_rate = ewma(e->codec_rate, (double)c->epoch_raw / c->epoch_encode_ms);
		e->ratio = ewma(e->ratio, (double)c->epoch_wire / (double)c->epoch_raw);
	}
	if (c->active)
		c->epochs_compressed++;
}

int compress_frame(struct compress *c, struct page_ref *p, size_t n, bool no_delta,
		   size_t plain_len, uint8_t **out, size_t *out_len)
{
	double t0 = thread_cpu_ms();
	size_t deltas = 0;
	int rc;

	for (size_t i = 0; i < n; i++) {
		p[i].base = no_delta ? NULL : cached(c, p[i].index);
		deltas += p[i].base != NULL;
	}
	rc = page_encode(&c->enc, p, n, plain_len, out, out_len);
	for (size_t i = 0; i < n; i++)
		learn(c, p[i].index, p[i].data);
	c->epoch_encode_ms += thread_cpu_ms() - t0;
	c->epoch_raw += n * PROTO_PAGE_SIZE;
	c->raw_bytes += n * PROTO_PAGE_SIZE;
	if (rc == 0) {
		c->delta_pages += deltas;
		c->raw_pages += n - deltas;
		c->z_frames++;
		c->epoch_wire += *out_len;
		c->wire_bytes += *out_len;
	} else if (rc == -E2BIG) {
		c->plain_frames++;
		c->epoch_wire += plain_len;
		c->wire_bytes += plain_len;
	}
	return rc;
}

void compress_status(const struct compress *c, struct json_object *out)
{
	const struct compress_estimates *e = &c->est;

	json_object_object_add(out, "compress", json_object_new_string(compress_mode_name(c->mode)));
	json_object_object_add(out, "compress_active", json_object_new_boolean(c->active));
	json_object_object_add(out, "compress_reason", json_object_new_string(c->why));
	json_add_u64(out, "compress_raw_bytes_total", c->raw_bytes);
	json_add_u64(out, "compress_wire_bytes_total", c->wire_bytes);
	json_add_u64(out, "compress_delta_pages_total", c->delta_pages);
	json_add_u64(out, "compress_raw_pages_total", c->raw_pages);
	json_add_u64(out, "compress_plain_frames_total", c->plain_frames);
	json_add_u64(out, "compress_epochs_total", c->epochs_compressed);
	json_add_u64(out, "compress_cache_mb", c->cache.nslots * PROTO_PAGE_SIZE >> 20);
	json_add_double(out, "compress_ratio", e->ratio);
	json_add_double(out, "link_rate_mb_s", e->link_rate / 1e3);
	json_add_double(out, "codec_rate_mb_s", e->codec_rate / 1e3);
}
