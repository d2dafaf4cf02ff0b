/* The replicator's side of the link to the backup agent (the link itself,
 * TLS and framing, is common/peer_link.c): the HELLO and its reply, the
 * frames the backup sends, GOODBYE. */
#include "log.h"
#include "page_hash.h"
#include "qmp.h"
#include "replicator.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

/* Connect and TLS must be done by then, and the HELLO's reply by then
 * again plus HELLO_MS_PER_GIB per GiB of guest RAM: the agent creates the
 * replica files and reserves the space of the RAM copy
 * (posix_fallocate) before it replies, which on tmpfs allocates and
 * zeroes every page (0.13 s per GiB on this kind of host, seconds per GiB
 * in a VM under TCG). A fixed deadline would leave a large guest never
 * protected: each try would give up before the reply, and the next one
 * reserve it all again. A dead backup is still noticed in 10 s. */
#define HANDSHAKE_DEADLINE_MS 10000
#define HELLO_MS_PER_GIB       5000
/* Longest run of frames from the backup one readable event handles: a
 * backup that floods us (heartbeats, say) must not starve the loop the
 * net buffer, the epoch timer and QMP share. */
#define LINK_READ_SLICE_MS     20
#define GOODBYE_FLUSH_MS   1000

/* The link broke under us (EOF, reset, a bad frame): the backup may be
 * alive and about to take over, so held output waits as on a silent link. */
static void link_fail(struct replicator *r, const char *why)
{
	r->backup_may_take_over = true;
	epoch_on_backup_lost(r, why);
}

/* Tell the backup not to take over: we leave, or drop the link, on
 * purpose. Checkpoint frames not yet begun are dropped first (nobody needs
 * them now, and behind tens of MiB of them the GOODBYE could miss its
 * flush, and the backup take the closed link for our death). */
void link_goodbye(struct replicator *r, const char *why)
{
	struct iovec iov = { .iov_base = (void *)why, .iov_len = strlen(why) };

	if (!peer_link_up(&r->link))
		return;
	peer_link_drop_unsent(&r->link);
	peer_link_push(&r->link, FRAME_GOODBYE, r->epoch, &iov, 1, NULL, NULL);
}

/* We drop a working link while the VM is healthy (to resync, say): tell
 * the backup with a GOODBYE first, or it would take the closed connection
 * for the primary's death and start a second copy of the VM; and wait for
 * it to close in turn (peer_link_finish). Blocks for at most
 * GOODBYE_FLUSH_MS; the VM is running meanwhile. */
void link_drop_alive(struct replicator *r, const char *why)
{
	bool was_up = peer_link_up(&r->link);

	if (was_up) {
		link_goodbye(r, why);
		if (peer_link_finish(&r->link, GOODBYE_FLUSH_MS) != 1) {
			log_warn("GOODBYE to the backup may not have arrived: it may take over");
			/* held output waits as on a broken link */
			r->backup_may_take_over = true;
		}
	}
	epoch_backup_gone(r, why, was_up);
}

int link_push(struct replicator *r, unsigned type, uint64_t epoch,
	      const struct iovec *iov, int iovcnt, void *owned, uint32_t *crc)
{
	return peer_link_push(&r->link, type, epoch, iov, iovcnt, owned, crc);
}

/* Delta resync: the backup's page hashes, in page order; once all are
 * here the initial copy starts, sending only the pages that differ. */
static void on_ram_hashes(struct replicator *r, const struct frame_hdr *h,
			  const uint8_t *payload)
{
	struct ram_delta *d = &r->delta;
	const uint8_t *hashes;
	uint64_t first;
	uint32_t n;

	if (!d->hashes || d->received == d->expect ||
	    proto_parse_ram_hashes(payload, h->len, &first, &n, &hashes) ||
	    first != d->received || n > d->expect - first) {
		link_drop_alive(r, "page hashes from the backup out of place or malformed");
		return;
	}
	memcpy(d->hashes + first * PAGE_HASH_SIZE, hashes, (size_t)n * PAGE_HASH_SIZE);
	d->received += n;
	if (d->received < d->expect)
		return;
	log_info("delta resync: the backup's replica RAM is the base; the initial copy sends "
		 "only the pages whose hash differs");
	link_start_sync_when_ready(r);
}

/* Delta resync: a device's hashes (a disk's chunks). */
static void on_device_frame(struct replicator *r, const struct frame_hdr *h,
			    const uint8_t *payload)
{
	for (int i = 0; i < r->ndevices; i++) {
		const struct ckpt_device *dev = &r->devices[i];
		int rc;

		if (!dev->ops->backup_frame)
			continue;
		rc = dev->ops->backup_frame(dev->state, h->type, payload, h->len);
		if (rc < 0) {
			link_drop_alive(r, "disk hashes from the backup out of place or malformed");
			return;
		}
		if (rc > 0)
			link_start_sync_when_ready(r);
		return;
	}
	link_drop_alive(r, "the backup sent disk hashes, but no disk is replicated");
}

bool link_sync_waits(const struct replicator *r)
{
	if (r->delta.hashes && r->delta.received < r->delta.expect)
		return true;
	for (int i = 0; i < r->ndevices; i++)
		if (r->devices[i].ops->sync_waits &&
		    r->devices[i].ops->sync_waits(r->devices[i].state))
			return true;
	return false;
}

/* The initial copy starts once every hash of a delta resync is here (at
 * once without one): called when the last of one kind arrives. Not while
 * protection is paused: remusctl resume starts it then. */
void link_start_sync_when_ready(struct replicator *r)
{
	if (!link_sync_waits(r) && !prot_paused(&r->state))
		epoch_start_sync(r);
}

void link_delta_free(struct replicator *r)
{
	free(r->delta.hashes);
	r->delta.hashes = NULL;
	r->delta.expect = r->delta.received = 0;
}

/* The generation the backup recorded for this session (an older agent
 * says none: ours stays). */
static void adopt_generation(struct replicator *r, struct json_object *reply)
{
	struct json_object *v;

	if (json_object_object_get_ex(reply, "generation", &v) &&
	    json_object_is_type(v, json_type_int) && json_object_get_int64(v) > 0 &&
	    (uint64_t)json_object_get_int64(v) > r->generation)
		r->generation = (uint64_t)json_object_get_int64(v);
}

/* A HELLO_REPLY with "ram_hashes": room for them, which must number the
 * VM's pages. */
static int expect_ram_hashes(struct replicator *r, struct json_object *reply, char *err,
			     size_t errlen)
{
	struct json_object *v;
	uint64_t npages = r->vm.ram_size / PROTO_PAGE_SIZE;

	link_delta_free(r);
	if (!json_object_object_get_ex(reply, "ram_hashes", &v))
		return 0; /* a full copy */
	if (!json_object_is_type(v, json_type_int) ||
	    (uint64_t)json_object_get_int64(v) != npages) {
		snprintf(err, errlen, "backup offers %s page hashes for a VM of %llu pages",
			 json_object_get_string(v), (unsigned long long)npages);
		return -EPROTO;
	}
	r->delta.hashes = malloc(npages * PAGE_HASH_SIZE);
	if (!r->delta.hashes) {
		snprintf(err, errlen, "no memory for %llu page hashes", (unsigned long long)npages);
		return -ENOMEM;
	}
	r->delta.expect = npages;
	return 0;
}

static void handle_frame(struct replicator *r, const struct frame_hdr *h,
			 const uint8_t *payload)
{
	char why[128];

	switch (h->type) {
	case FRAME_ACK:
		epoch_on_ack(r, h->epoch);
		break;
	case FRAME_NACK:
		snprintf(why, sizeof(why), "%.*s", (int)(h->len < 120 ? h->len : 120),
			 (const char *)payload);
		epoch_on_nack(r, h->epoch, why);
		break;
	case FRAME_HEARTBEAT:
		break;
	case FRAME_RAM_HASHES:
		on_ram_hashes(r, h, payload);
		break;
	case FRAME_DISK_HASHES:
		on_device_frame(r, h, payload);
		break;
	case FRAME_VERIFY_RESULT:
		verify_on_result(r, h, payload);
		break;
	case FRAME_HANDOVER_DONE:
	case FRAME_HANDOVER_FAILED:
	case FRAME_PAUSE_ACK:
		operator_on_frame(r, h, payload);
		break;
	default:
		log_warn("backup sent an unexpected %s frame: ignored",
			 frame_type_name(h->type));
	}
}

/* Does the reply list this feature ("features": ["operator", ...])? An
 * older agent lists none. */
static bool has_feature(struct json_object *reply, const char *name)
{
	struct json_object *arr;

	if (!json_object_object_get_ex(reply, "features", &arr) ||
	    !json_object_is_type(arr, json_type_array))
		return false;
	for (size_t i = 0; i < json_object_array_length(arr); i++) {
		const char *f = json_object_get_string(json_object_array_get_idx(arr, i));
		if (f && !strcmp(f, name))
			return true;
	}
	return false;
}

/* The agent says how long it may take over after it last heard from us
 * ("takeover_after_ms": its timeout plus its fence timeout). Until then,
 * hold output even if the link looks dead: it may be cut while the
 * backup fences us and restores the last commit. */
static void set_backup_silence(struct replicator *r, struct json_object *reply)
{
	struct json_object *v;
	unsigned takeover = 0, need;

	if (json_object_object_get_ex(reply, "takeover_after_ms", &v) &&
	    json_object_is_type(v, json_type_int) && json_object_get_int64(v) > 0 &&
	    json_object_get_int64(v) < 3600000)
		takeover = (unsigned)json_object_get_int64(v);
	/* a margin for the two sides' heartbeats and loops (proto.h) */
	need = takeover ? takeover + 2 * r->cfg.heartbeat_ms + PROTO_TAKEOVER_MARGIN_MS : 0;
	r->backup_silence_ms = need > r->cfg.timeout_ms ? need : r->cfg.timeout_ms;
	if (need > r->cfg.timeout_ms)
		log_info("the backup may fence and take over up to %u ms after it last heard "
			 "from us: the backup counts as lost after %u ms of silence, not "
			 "--timeout-ms %u, so that no output it may roll back goes out",
			 takeover, r->backup_silence_ms, r->cfg.timeout_ms);
}

/* HELLO_REPLY is JSON: {"ok": true, "features": [...]} or {"ok": false,
 * "error": "why"}. */
static int parse_hello_reply(struct replicator *r, const uint8_t *payload, uint32_t len,
			     char *err, size_t errlen)
{
	char *text = strndup((const char *)payload, len);
	struct json_object *reply = text ? json_tokener_parse(text) : NULL;
	struct json_object *ok, *msg = NULL;
	int rc = 0;

	free(text);
	if (!reply || !json_object_object_get_ex(reply, "ok", &ok)) {
		snprintf(err, errlen, "backup's HELLO reply is not valid JSON");
		rc = -EPROTO;
	} else if (!json_object_get_boolean(ok)) {
		json_object_object_get_ex(reply, "error", &msg);
		snprintf(err, errlen, "backup refused: %s",
			 msg ? json_object_get_string(msg) : "no reason given");
		rc = -ECONNREFUSED;
	} else {
		r->agent_operator = has_feature(reply, PROTO_FEATURE_OPERATOR);
		r->agent_verify = has_feature(reply, PROTO_FEATURE_VERIFY);
		r->agent_verify_disk = has_feature(reply, PROTO_FEATURE_VERIFY_DISK);
		r->agent_park = has_feature(reply, PROTO_FEATURE_PARK);
		r->agent_pages_lz4 = has_feature(reply, PROTO_FEATURE_PAGES_LZ4);
		set_backup_silence(r, reply);
		if (r->ckpt.protected_disks && !has_feature(reply, PROTO_FEATURE_DISK)) {
			snprintf(err, errlen, "the backup agent keeps no disk replicas (an older "
				 "remus-agent?) but the VM has %d replicated disk(s)",
				 r->ckpt.protected_disks);
			rc = -EPROTO;
		} else {
			adopt_generation(r, reply);
			rc = expect_ram_hashes(r, reply, err, errlen);
			for (int i = 0; !rc && i < r->ndevices; i++)
				if (r->devices[i].ops->hello_reply)
					rc = r->devices[i].ops->hello_reply(r->devices[i].state,
									    reply, r->delta.seed,
									    err, errlen);
		}
	}
	json_object_put(reply);
	return rc;
}

static void on_hello_reply(struct replicator *r, const struct frame_hdr *h,
			   const uint8_t *payload)
{
	char err[300];

	if (h->type != FRAME_HELLO_REPLY || proto_check_payload(h, payload)) {
		snprintf(err, sizeof(err), "backup answered HELLO with a bad %s frame",
			 frame_type_name(h->type));
		replicator_link_failed(r, err);
	} else if (parse_hello_reply(r, payload, h->len, err, sizeof(err))) {
		replicator_link_failed(r, err);
	} else {
		peer_link_established(&r->link);
		replicator_link_up(r);
	}
}

/* false when the link was closed meanwhile */
static bool on_frame(struct peer_link *l, const struct frame_hdr *h, const uint8_t *payload)
{
	struct replicator *r = l->data;

	if (!peer_link_up(l)) {
		on_hello_reply(r, h, payload);
		return peer_link_up(l);
	}
	if (proto_check_payload(h, payload)) {
		link_drop_alive(r, "corrupt frame from the backup");
		return false;
	}
	handle_frame(r, h, payload);
	return peer_link_up(l);
}

static void on_error(struct peer_link *l, int err, const char *why)
{
	struct replicator *r = l->data;
	char text[300];

	if (!peer_link_up(l)) {
		if (err == -EPROTONOSUPPORT)
			snprintf(text, sizeof(text), "backup refused: it speaks protocol version "
				 "%u; this replicator speaks version %u", l->reader.hdr.version,
				 (unsigned)PROTO_VERSION);
		else
			snprintf(text, sizeof(text), "backup %s: %s", r->cfg.backup.text, why);
		replicator_link_failed(r, text);
	} else if (err == -EBADMSG || err == -EMSGSIZE || err == -EPROTONOSUPPORT) {
		link_drop_alive(r, "unreadable stream from the backup");
	} else {
		snprintf(text, sizeof(text), "%s", err == -EPIPE ?
			 "backup closed the connection" : why);
		link_fail(r, text);
	}
}

/* How long the HELLO's reply may take (HELLO_MS_PER_GIB). */
static unsigned hello_deadline_ms(uint64_t ram_size)
{
	uint64_t gib = (ram_size + (1ull << 30) - 1) >> 30;

	return HANDSHAKE_DEADLINE_MS + (unsigned)(gib < 4096 ? gib : 4096) * HELLO_MS_PER_GIB;
}

/* Authenticated: say who we replicate. */
static void on_open(struct peer_link *l)
{
	struct replicator *r = l->data;
	char *hello = vm_hello_json(r);
	struct iovec iov;

	if (!hello) {
		replicator_link_failed(r, "no memory for the HELLO");
		return;
	}
	iov = (struct iovec){ .iov_base = hello, .iov_len = strlen(hello) };
	if (peer_link_push(l, FRAME_HELLO, 0, &iov, 1, hello, NULL))
		replicator_link_failed(r, "the HELLO could not be queued");
	else
		peer_link_set_deadline(l, hello_deadline_ms(r->vm.ram_size));
}

static const struct peer_link_ops link_ops = {
	.on_open = on_open,
	.on_frame = on_frame,
	.on_error = on_error,
};

/* Start connecting: the rest (TLS, HELLO, the reply) comes from the loop,
 * ending in replicator_link_up or replicator_link_failed. */
int link_open(struct replicator *r, char *err, size_t errlen)
{
	int rc;

	peer_link_init(&r->link, r->loop, &r->link_sec, &link_ops, r);
	r->link.read_slice_ms = LINK_READ_SLICE_MS;
	/* until its HELLO_REPLY says so */
	r->agent_operator = r->agent_verify = r->agent_park = r->agent_pages_lz4 = false;
	r->agent_verify_disk = false;
	/* a seed of this connection only: see page_hash.h */
	link_delta_free(r);
	if (getrandom(&r->delta.seed, sizeof(r->delta.seed), 0) != sizeof(r->delta.seed)) {
		snprintf(err, errlen, "getrandom: %s", strerror(errno));
		return -errno;
	}
	rc = peer_link_connect(&r->link, &r->cfg.backup, HANDSHAKE_DEADLINE_MS);
	if (rc)
		snprintf(err, errlen, "cannot connect to backup %s: %s", r->cfg.backup.text,
			 strerror(-rc));
	return rc;
}
