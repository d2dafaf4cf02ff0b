/* The backup's replica (backup-agent/replica.c) driven with hand-built
 * frames: a 16-page VM, its initial sync, committed epochs, and epochs that
 * must be dropped without touching the committed files. */
#include "../backup-agent/diskfile.h"
#include "../backup-agent/journal.h"
#include "../backup-agent/replica.h"
#include "../common/procfs.h"
#include "crc32c.h"
#include "log.h"
#include "page_hash.h"
#include "proto.h"
#include "tmp_fixture.h"

#include <check.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <json-c/json.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define PAGE     PROTO_PAGE_SIZE
#define NPAGES   16u
#define RAM_SIZE ((size_t)NPAGES * PAGE)

static const char good_hello[] =
	"{\"protocol\":1,\"name\":\"t\",\"ram_size\":65536,\"page_size\":4096,"
	"\"ram_backend\":\"ram0\",\"machine_type\":\"pc-i440fx-7.2\","
	"\"qemu_argv\":[\"qemu-system-x86_64\"]}";

/* ---- fixture: a temporary state dir and the RAM the replica must hold ---- */

TMP_FIXTURE("check_replica")

struct fx {
	char dir[128];         /* g_tmp/stateN, created by the replica */
	struct replica rp;
	uint8_t model[RAM_SIZE]; /* guest RAM as of the last commit (or sync) */
	uint32_t seed;
};

static struct fx *fx_open(void)
{
	static int n;
	struct fx *f = calloc(1, sizeof(*f));

	ck_assert_ptr_nonnull(f);
	ck_assert_int_ne(g_tmp[0], 0);
	snprintf(f->dir, sizeof(f->dir), "%s/state%d", g_tmp, n++);
	replica_init(&f->rp, f->dir);
	ck_assert_str_eq(f->rp.dir, f->dir);
	f->seed = 0x2468ace1u;
	return f;
}

static void fx_close(struct fx *f)
{
	replica_free(&f->rp);
	if (access(f->dir, F_OK) == 0)
		ck_assert_int_eq(nftw(f->dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS), 0);
	free(f);
}

static uint32_t rnd(struct fx *f)
{
	f->seed ^= f->seed << 13;
	f->seed ^= f->seed >> 17;
	f->seed ^= f->seed << 5;
	return f->seed;
}

static void fill_page(struct fx *f, uint8_t *p)
{
	for (size_t i = 0; i < PAGE; i++)
		p[i] = (uint8_t)rnd(f);
}

static char *path_of(const struct fx *f, const char *name, char *buf)
{
	int n = snprintf(buf, PATH_MAX, "%s/%s", f->dir, name);

	ck_assert(n > 0 && n < PATH_MAX);
	return buf;
}

static bool exists(const struct fx *f, const char *name)
{
	char p[PATH_MAX];

	return access(path_of(f, name, p), F_OK) == 0;
}

/* Whole file, malloc'd (NULL if it cannot be read). */
static uint8_t *slurp(const struct fx *f, const char *name, size_t *len)
{
	char p[PATH_MAX];
	struct stat st;
	uint8_t *buf;
	int fd = open(path_of(f, name, p), O_RDONLY);
	size_t off = 0;

	*len = 0;
	if (fd < 0)
		return NULL;
	ck_assert_int_eq(fstat(fd, &st), 0);
	buf = malloc((size_t)st.st_size + 1);
	ck_assert_ptr_nonnull(buf);
	while (off < (size_t)st.st_size) {
		ssize_t n = read(fd, buf + off, (size_t)st.st_size - off);
		ck_assert_int_gt(n, 0);
		off += (size_t)n;
	}
	buf[off] = 0;
	close(fd);
	*len = off;
	return buf;
}

/* ---- frames ---- */

/* What the primary counted for the epoch, for its EPOCH_END. */
struct tally {
	uint64_t pages, dev;
	uint32_t frames, crc;
};

enum delivery {
	DELIVER,   /* as sent */
	CORRUPT,   /* a byte flipped on the way: payload_ok = false */
	LOSE,      /* counted by the primary, never reaches the replica */
};

static void push(struct fx *f, unsigned type, uint64_t epoch, const uint8_t *payload,
		 size_t len, struct tally *t, enum delivery d)
{
	uint8_t raw[PROTO_HDR_SIZE];
	struct iovec iov = { .iov_base = (void *)payload, .iov_len = len };
	struct frame_hdr h;

	proto_encode_hdr(raw, type, epoch, &iov, 1);
	ck_assert_int_eq(proto_decode_hdr(raw, &h), 0);
	t->frames++;
	t->crc = proto_epoch_crc_add(t->crc, h.payload_crc);
	if (d == DELIVER) {
		ck_assert_int_eq(proto_check_payload(&h, payload), 0);
		replica_add_frame(&f->rp, &h, payload, true);
	} else if (d == CORRUPT) {
		uint8_t *bad = malloc(len);
		ck_assert_ptr_nonnull(bad);
		memcpy(bad, payload, len);
		bad[len - 1] ^= 0x40; /* in the last page's data */
		ck_assert_int_eq(proto_check_payload(&h, bad), -EBADMSG);
		replica_add_frame(&f->rp, &h, bad, false);
		free(bad);
	}
}

/* A PAGES frame, built as replicator/dev_memory.c does: be32 count, be32 0,
 * be64 indexes, then the pages. */
static void push_pages(struct fx *f, uint64_t epoch, const uint64_t *idx, uint32_t n,
		       const uint8_t *pages, struct tally *t, enum delivery d)
{
	size_t len = 8 + (size_t)n * (8 + PAGE);
	uint8_t *p = malloc(len);
	uint32_t be32 = htobe32(n);

	ck_assert_ptr_nonnull(p);
	memcpy(p, &be32, 4);
	memset(p + 4, 0, 4);
	for (uint32_t i = 0; i < n; i++) {
		uint64_t be = htobe64(idx[i]);
		memcpy(p + 8 + 8 * i, &be, 8);
	}
	memcpy(p + 8 + 8 * n, pages, (size_t)n * PAGE);
	push(f, FRAME_PAGES, epoch, p, len, t, d);
	t->pages += n;
	free(p);
}

static void push_dev(struct fx *f, uint64_t epoch, const void *dev, size_t len,
		     struct tally *t, enum delivery d)
{
	push(f, FRAME_DEVSTATE, epoch, dev, len, t, d);
	t->dev += len;
}

static int end_epoch_raw_ok(struct fx *f, uint64_t epoch, const uint8_t *payload, size_t len,
			    bool payload_ok, char *why, size_t whylen)
{
	uint8_t raw[PROTO_HDR_SIZE];
	struct iovec iov = { .iov_base = (void *)payload, .iov_len = len };
	struct frame_hdr h;

	proto_encode_hdr(raw, FRAME_EPOCH_END, epoch, &iov, 1);
	ck_assert_int_eq(proto_decode_hdr(raw, &h), 0);
	why[0] = 0;
	return replica_end_epoch(&f->rp, &h, payload, payload_ok, why, whylen);
}

static int end_epoch_raw(struct fx *f, uint64_t epoch, const uint8_t *payload, size_t len,
			 char *why, size_t whylen)
{
	return end_epoch_raw_ok(f, epoch, payload, len, true, why, whylen);
}

static int end_epoch(struct fx *f, uint64_t epoch, const struct tally *t, char *why, size_t whylen)
{
	struct epoch_end e = {
		.pages = t->pages, .devstate_bytes = t->dev,
		.frames = t->frames, .epoch_crc = t->crc,
	};
	uint8_t buf[PROTO_EPOCH_END_SIZE];

	proto_encode_epoch_end(buf, &e);
	return end_epoch_raw(f, epoch, buf, sizeof(buf), why, whylen);
}

/* ---- scenario steps ---- */

static void begin(struct fx *f, const char *hello)
{
	char err[256] = "";

	ck_assert_msg(replica_begin_session(&f->rp, hello, NULL, NULL, err, sizeof(err)) == 0,
		      "HELLO refused: %s", err);
}

/* The initial copy: random content for all pages, in two PAGES frames. */
static void sync_all(struct fx *f)
{
	uint64_t idx[NPAGES];
	struct tally t = { 0 };
	char why[200];

	for (size_t i = 0; i < NPAGES; i++) {
		idx[i] = i;
		fill_page(f, f->model + i * PAGE);
	}
	push_pages(f, 0, idx, 10, f->model, &t, DELIVER);
	push_pages(f, 0, idx + 10, NPAGES - 10, f->model + 10 * PAGE, &t, DELIVER);
	ck_assert_msg(end_epoch(f, 0, &t, why, sizeof(why)) == 0, "sync refused: %s", why);
	ck_assert(f->rp.synced);
	ck_assert(f->rp.syncing);
}

/* An epoch changing pages idx[0..n) to fresh content, with device state dev.
 * The model is updated only if the replica commits. */
struct epoch_plan {
	uint64_t epoch;
	uint64_t idx[NPAGES];
	uint32_t n;
	char dev[64];
	uint8_t pages[NPAGES * PAGE];
};

static void plan(struct fx *f, struct epoch_plan *p, uint64_t epoch, const uint64_t *idx, uint32_t n)
{
	p->epoch = epoch;
	p->n = n;
	if (n)
		memcpy(p->idx, idx, n * sizeof(*idx));
	for (uint32_t i = 0; i < n; i++)
		fill_page(f, p->pages + (size_t)i * PAGE);
	snprintf(p->dev, sizeof(p->dev), "QEVM device state of epoch %llu\x01\x02",
		 (unsigned long long)epoch);
}

static void model_apply(struct fx *f, const struct epoch_plan *p)
{
	for (uint32_t i = 0; i < p->n; i++)
		memcpy(f->model + p->idx[i] * PAGE, p->pages + (size_t)i * PAGE, PAGE);
}

/* Send a planned epoch in full and end it; 0 if committed. */
static int send_epoch(struct fx *f, struct epoch_plan *p, char *why, size_t whylen)
{
	struct tally t = { 0 };
	int rc;

	push_pages(f, p->epoch, p->idx, p->n, p->pages, &t, DELIVER);
	push_dev(f, p->epoch, p->dev, strlen(p->dev), &t, DELIVER);
	rc = end_epoch(f, p->epoch, &t, why, whylen);
	if (rc == 0)
		model_apply(f, p);
	return rc;
}

static uint64_t vm_json_epoch(struct fx *f)
{
	char p[PATH_MAX];
	struct json_object *o = json_object_from_file(path_of(f, "vm.json", p)), *v;
	uint64_t e;

	ck_assert_ptr_nonnull(o);
	ck_assert(json_object_object_get_ex(o, "epoch", &v));
	e = json_object_get_uint64(v);
	json_object_put(o);
	return e;
}

/* The committed replica is exactly: RAM = model, devstate = dev, epoch. */
static void assert_committed(struct fx *f, uint64_t epoch, const char *dev)
{
	size_t len;
	uint8_t *ram = slurp(f, "ram", &len);
	uint8_t *ds;

	ck_assert_ptr_nonnull(ram);
	ck_assert_uint_eq(len, RAM_SIZE);
	for (size_t i = 0; i < NPAGES; i++)
		ck_assert_msg(!memcmp(ram + i * PAGE, f->model + i * PAGE, PAGE),
			      "ram page %zu differs from the committed content", i);
	free(ram);
	ds = slurp(f, "devstate", &len);
	ck_assert_ptr_nonnull(ds);
	ck_assert_uint_eq(len, strlen(dev));
	ck_assert_mem_eq(ds, dev, len);
	free(ds);
	ck_assert_uint_eq(vm_json_epoch(f), epoch);
	ck_assert(!exists(f, "ram.sync"));
}

/* Byte-for-byte copies of the committed files. */
struct snap {
	uint8_t *ram, *dev, *vm;
	size_t ram_len, dev_len, vm_len;
};

static void snap_take(struct fx *f, struct snap *s)
{
	s->ram = slurp(f, "ram", &s->ram_len);
	s->dev = slurp(f, "devstate", &s->dev_len);
	s->vm = slurp(f, "vm.json", &s->vm_len);
	ck_assert_ptr_nonnull(s->ram);
	ck_assert_ptr_nonnull(s->dev);
	ck_assert_ptr_nonnull(s->vm);
}

static void snap_assert_same(struct fx *f, const struct snap *s)
{
	struct snap now;

	snap_take(f, &now);
	ck_assert_uint_eq(now.ram_len, s->ram_len);
	ck_assert_msg(!memcmp(now.ram, s->ram, s->ram_len), "DIR/ram changed");
	ck_assert_uint_eq(now.dev_len, s->dev_len);
	ck_assert_msg(!memcmp(now.dev, s->dev, s->dev_len), "DIR/devstate changed");
	ck_assert_uint_eq(now.vm_len, s->vm_len);
	ck_assert_msg(!memcmp(now.vm, s->vm, s->vm_len), "DIR/vm.json changed");
	free(now.ram);
	free(now.dev);
	free(now.vm);
}

static void snap_free(struct snap *s)
{
	free(s->ram);
	free(s->dev);
	free(s->vm);
}

/* HELLO, sync, and epochs 1..upto committed. */
static void committed_with(struct fx *f, const char *hello, uint64_t upto)
{
	static const uint64_t idx[2][2] = { { 3, 12 }, { 0, 15 } };
	struct epoch_plan *p = malloc(sizeof(*p));
	char why[200];

	ck_assert_ptr_nonnull(p);
	begin(f, hello);
	sync_all(f);
	for (uint64_t e = 1; e <= upto; e++) {
		plan(f, p, e, idx[(e - 1) % 2], 2);
		ck_assert_msg(send_epoch(f, p, why, sizeof(why)) == 0, "epoch %llu: %s",
			      (unsigned long long)e, why);
		assert_committed(f, e, p->dev);
	}
	free(p);
}

static void committed_to(struct fx *f, uint64_t upto)
{
	committed_with(f, good_hello, upto);
}

/* ---- HELLO ---- */

static void assert_hello_refused(const char *hello, int want_rc, const char *want_in_msg)
{
	struct fx *f = fx_open();
	char err[256] = "";
	int rc = replica_begin_session(&f->rp, hello, NULL, NULL, err, sizeof(err));

	ck_assert_msg(rc == want_rc, "HELLO %s: rc %d, expected %d", hello, rc, want_rc);
	ck_assert_msg(strlen(err) > 0, "HELLO %s refused without a message", hello);
	if (want_in_msg)
		ck_assert_msg(strstr(err, want_in_msg), "message '%s' lacks '%s'", err, want_in_msg);
	ck_assert_ptr_null(f->rp.hello);
	ck_assert_ptr_null(f->rp.ram);
	ck_assert(!f->rp.syncing);
	ck_assert(!exists(f, "ram.sync"));
	fx_close(f);
}

START_TEST(test_hello_not_json_is_refused)
{
	assert_hello_refused("not json at all", -EINVAL, "JSON");
	assert_hello_refused("", -EINVAL, "JSON");
	assert_hello_refused("{\"protocol\":1,", -EINVAL, "JSON");
}
END_TEST

START_TEST(test_hello_wrong_protocol_is_refused)
{
	assert_hello_refused("{\"protocol\":2,\"name\":\"t\",\"ram_size\":65536,\"page_size\":4096,"
			     "\"ram_backend\":\"ram0\",\"machine_type\":\"pc-i440fx-7.2\","
			     "\"qemu_argv\":[\"qemu-system-x86_64\"]}",
			     -EPROTONOSUPPORT, "protocol 2");
	/* No protocol at all, or a JSON value that is not an object. */
	assert_hello_refused("{\"name\":\"t\",\"ram_size\":65536,\"page_size\":4096,"
			     "\"ram_backend\":\"ram0\",\"machine_type\":\"pc-i440fx-7.2\","
			     "\"qemu_argv\":[\"qemu-system-x86_64\"]}",
			     -EPROTONOSUPPORT, "protocol");
	assert_hello_refused("[1,2,3]", -EPROTONOSUPPORT, "protocol");
}
END_TEST

/* good_hello with one key removed (or replaced by key:value). */
static char *hello_without(const char *key, const char *replacement)
{
	struct json_object *o = json_tokener_parse(good_hello);
	char *text;

	ck_assert_ptr_nonnull(o);
	json_object_object_del(o, key);
	if (replacement)
		json_object_object_add(o, key, json_tokener_parse(replacement));
	text = strdup(json_object_to_json_string(o));
	json_object_put(o);
	return text;
}

START_TEST(test_hello_missing_fields_are_refused)
{
	static const char *const keys[] = { "name", "ram_backend", "machine_type", "qemu_argv",
					    "page_size", "ram_size" };

	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		char *h = hello_without(keys[i], NULL);
		assert_hello_refused(h, -EINVAL, NULL);
		free(h);
	}
	/* Present but of the wrong kind. */
	{
		char *h = hello_without("qemu_argv", "[]");
		assert_hello_refused(h, -EINVAL, "qemu_argv");
		free(h);
		h = hello_without("name", "5");
		assert_hello_refused(h, -EINVAL, "name");
		free(h);
		h = hello_without("page_size", "65536");
		assert_hello_refused(h, -EINVAL, "page_size");
		free(h);
	}
}
END_TEST

START_TEST(test_hello_ram_size_not_page_multiple_is_refused)
{
	static const char *const bad[] = { "65537", "4095", "0", "-4096" };

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char *h = hello_without("ram_size", bad[i]);
		assert_hello_refused(h, -EINVAL, "ram_size");
		free(h);
	}
}
END_TEST

START_TEST(test_hello_accepted_prepares_ram_sync)
{
	struct fx *f = fx_open();
	char p[PATH_MAX];
	struct stat st;

	begin(f, good_hello);
	ck_assert_uint_eq(f->rp.ram_size, RAM_SIZE);
	ck_assert_uint_eq(f->rp.npages, NPAGES);
	ck_assert(f->rp.syncing);
	ck_assert(!f->rp.synced);
	ck_assert_ptr_nonnull(f->rp.ram);
	ck_assert_int_eq(stat(path_of(f, "ram.sync", p), &st), 0);
	ck_assert_int_eq(st.st_size, (off_t)RAM_SIZE);
	ck_assert(!exists(f, "ram"));
	ck_assert(!exists(f, "vm.json"));
	fx_close(f);
}
END_TEST

/* ---- epochs ---- */

START_TEST(test_sync_then_epoch1_commits_all_files)
{
	struct fx *f = fx_open();
	struct epoch_plan *p = malloc(sizeof(*p));
	static const uint64_t idx[2] = { 5, 9 };
	char why[200];
	size_t len;
	uint8_t *sync;

	ck_assert_ptr_nonnull(p);
	begin(f, good_hello);
	sync_all(f);
	/* The sync is in ram.sync, nothing is committed yet. */
	sync = slurp(f, "ram.sync", &len);
	ck_assert_uint_eq(len, RAM_SIZE);
	ck_assert_mem_eq(sync, f->model, RAM_SIZE);
	free(sync);
	ck_assert(!exists(f, "ram"));
	ck_assert(!exists(f, "devstate"));
	ck_assert(!exists(f, "vm.json"));
	ck_assert_uint_eq(f->rp.commits, 0);

	plan(f, p, 1, idx, 2);
	ck_assert_msg(send_epoch(f, p, why, sizeof(why)) == 0, "epoch 1: %s", why);
	/* model = sync content with pages 5 and 9 replaced. */
	assert_committed(f, 1, p->dev);
	ck_assert_mem_eq(f->model + 5 * PAGE, p->pages, PAGE);
	ck_assert(!f->rp.syncing);
	ck_assert(f->rp.session_committed);
	ck_assert_uint_eq(f->rp.session_epoch, 1);
	ck_assert_uint_eq(f->rp.commits, 1);
	ck_assert_uint_eq(f->rp.discards, 0);
	ck_assert(!exists(f, "devstate.tmp"));
	ck_assert(!exists(f, "vm.json.tmp"));
	free(p);
	fx_close(f);
}
END_TEST

START_TEST(test_corrupt_epoch_is_dropped_then_resent_epoch_commits)
{
	struct fx *f = fx_open();
	struct epoch_plan *p = malloc(sizeof(*p));
	static const uint64_t idx[3] = { 1, 2, 14 };
	struct tally t = { 0 };
	struct snap before;
	char why[200];

	ck_assert_ptr_nonnull(p);
	committed_to(f, 1);
	snap_take(f, &before);
	plan(f, p, 2, idx, 3);
	push_pages(f, 2, p->idx, 3, p->pages, &t, CORRUPT);
	push_dev(f, 2, p->dev, strlen(p->dev), &t, DELIVER);
	ck_assert_int_eq(end_epoch(f, 2, &t, why, sizeof(why)), -EBADMSG);
	ck_assert_msg(strstr(why, "checksum"), "reason '%s' does not say checksum", why);
	snap_assert_same(f, &before);
	ck_assert_uint_eq(f->rp.discards, 1);
	ck_assert_uint_eq(f->rp.session_epoch, 1);

	/* The primary resends epoch 2 intact. */
	ck_assert_msg(send_epoch(f, p, why, sizeof(why)) == 0, "resent epoch 2: %s", why);
	assert_committed(f, 2, p->dev);
	ck_assert_uint_eq(f->rp.commits, 2);
	snap_free(&before);
	free(p);
	fx_close(f);
}
END_TEST

/* A corrupt EPOCH_END drops the staged epoch with it, so that the resent
 * epoch commits at the first try (it used to be appended to the old one). */
START_TEST(test_corrupt_epoch_end_drops_staging_and_resend_commits)
{
	struct fx *f = fx_open();
	struct epoch_plan *p = malloc(sizeof(*p));
	static const uint64_t idx[2] = { 4, 6 };
	struct tally t = { 0 };
	struct epoch_end e;
	uint8_t buf[PROTO_EPOCH_END_SIZE];
	char why[200];

	ck_assert_ptr_nonnull(p);
	committed_to(f, 1);
	plan(f, p, 2, idx, 2);
	push_pages(f, 2, p->idx, 2, p->pages, &t, DELIVER);
	push_dev(f, 2, p->dev, strlen(p->dev), &t, DELIVER);
	e = (struct epoch_end){ .pages = t.pages, .devstate_bytes = t.dev,
				.frames = t.frames, .epoch_crc = t.crc };
	proto_encode_epoch_end(buf, &e);
	ck_assert_int_eq(end_epoch_raw_ok(f, 2, buf, sizeof(buf), false, why, sizeof(why)), -EBADMSG);
	ck_assert_msg(strstr(why, "EPOCH_END frame: payload checksum mismatch"), "why: '%s'", why);
	ck_assert(!f->rp.staging);
	ck_assert_msg(send_epoch(f, p, why, sizeof(why)) == 0, "resent epoch 2: %s", why);
	assert_committed(f, 2, p->dev);
	free(p);
	fx_close(f);
}
END_TEST

START_TEST(test_truncated_epoch_is_dropped)
{
	struct fx *f = fx_open();
	struct epoch_plan *p = malloc(sizeof(*p));
	static const uint64_t idx[2] = { 4, 6 };
	struct tally t = { 0 };
	struct snap before;
	char why[200];

	ck_assert_ptr_nonnull(p);
	committed_to(f, 2);
	snap_take(f, &before);
	plan(f, p, 3, idx, 2);
	/* Two PAGES frames, the second lost: EPOCH_END counts 3 frames, 2 came. */
	push_pages(f, 3, p->idx, 1, p->pages, &t, DELIVER);
	push_pages(f, 3, p->idx + 1, 1, p->pages + PAGE, &t, LOSE);
	push_dev(f, 3, p->dev, strlen(p->dev), &t, DELIVER);
	ck_assert_int_eq(end_epoch(f, 3, &t, why, sizeof(why)), -EBADMSG);
	ck_assert_msg(strstr(why, "2 of 3 frames"), "reason: '%s'", why);
	snap_assert_same(f, &before);
	ck_assert_uint_eq(f->rp.session_epoch, 2);

	/* The same epoch, whole, commits. */
	ck_assert_msg(send_epoch(f, p, why, sizeof(why)) == 0, "resent epoch 3: %s", why);
	assert_committed(f, 3, p->dev);
	snap_free(&before);
	free(p);
	fx_close(f);
}
END_TEST

START_TEST(test_swapped_frames_are_dropped)
{
	struct fx *f = fx_open();
	struct epoch_plan *p = malloc(sizeof(*p));
	static const uint64_t idx[2] = { 4, 6 };
	struct tally t = { 0 }, ignore = { 0 };
	struct snap before;
	char why[200];

	ck_assert_ptr_nonnull(p);
	committed_to(f, 1);
	snap_take(f, &before);
	plan(f, p, 2, idx, 2);
	/* The primary sent page 4 then page 6; the replica gets them the other
	 * way round: same frame count, different epoch checksum. */
	push_pages(f, 2, p->idx, 1, p->pages, &t, LOSE);
	push_pages(f, 2, p->idx + 1, 1, p->pages + PAGE, &t, LOSE);
	push_pages(f, 2, p->idx + 1, 1, p->pages + PAGE, &ignore, DELIVER);
	push_pages(f, 2, p->idx, 1, p->pages, &ignore, DELIVER);
	push_dev(f, 2, p->dev, strlen(p->dev), &t, DELIVER);
	ck_assert_int_eq(end_epoch(f, 2, &t, why, sizeof(why)), -EBADMSG);
	ck_assert_msg(strstr(why, "checksum"), "reason: '%s'", why);
	snap_assert_same(f, &before);
	snap_free(&before);
	free(p);
	fx_close(f);
}
END_TEST

START_TEST(test_out_of_order_epoch_is_dropped)
{
	struct fx *f = fx_open();
	struct epoch_plan *p = malloc(sizeof(*p));
	static const uint64_t idx[1] = { 8 };
	struct snap before;
	char why[200];

	ck_assert_ptr_nonnull(p);
	committed_to(f, 2);
	snap_take(f, &before);
	plan(f, p, 5, idx, 1);
	ck_assert_int_eq(send_epoch(f, p, why, sizeof(why)), -EBADMSG);
	ck_assert_msg(strstr(why, "out of order"), "reason: '%s'", why);
	snap_assert_same(f, &before);

	/* Epoch 2 again (already committed) is out of order too. */
	plan(f, p, 2, idx, 1);
	ck_assert_int_eq(send_epoch(f, p, why, sizeof(why)), -EBADMSG);
	ck_assert_msg(strstr(why, "out of order"), "reason: '%s'", why);
	snap_assert_same(f, &before);

	/* Epoch 3 is the one expected. */
	plan(f, p, 3, idx, 1);
	ck_assert_msg(send_epoch(f, p, why, sizeof(why)) == 0, "epoch 3: %s", why);
	assert_committed(f, 3, p->dev);
	snap_free(&before);
	free(p);
	fx_close(f);
}
END_TEST

START_TEST(test_page_beyond_ram_is_dropped)
{
	struct fx *f = fx_open();
	struct epoch_plan *p = malloc(sizeof(*p));
	static const uint64_t idx[2] = { 2, NPAGES };
	struct snap before;
	char why[200];

	ck_assert_ptr_nonnull(p);
	committed_to(f, 2);
	snap_take(f, &before);
	plan(f, p, 3, idx, 2);
	ck_assert_int_eq(send_epoch(f, p, why, sizeof(why)), -EBADMSG);
	ck_assert_msg(strstr(why, "beyond"), "reason: '%s'", why);
	snap_assert_same(f, &before);

	/* A huge index (would overflow idx * 4096) as well. */
	p->idx[1] = UINT64_MAX / 2;
	ck_assert_int_eq(send_epoch(f, p, why, sizeof(why)), -EBADMSG);
	snap_assert_same(f, &before);
	snap_free(&before);
	free(p);
	fx_close(f);
}
END_TEST

START_TEST(test_page_beyond_ram_in_sync_is_dropped)
{
	struct fx *f = fx_open();
	uint64_t idx[1] = { NPAGES + 3 };
	uint8_t page[PAGE];
	struct tally t = { 0 };
	char why[200];

	begin(f, good_hello);
	fill_page(f, page);
	push_pages(f, 0, idx, 1, page, &t, DELIVER);
	ck_assert_int_eq(end_epoch(f, 0, &t, why, sizeof(why)), -EBADMSG);
	ck_assert_msg(strstr(why, "beyond"), "reason: '%s'", why);
	ck_assert(!f->rp.synced);
	fx_close(f);
}
END_TEST

START_TEST(test_epoch_without_devstate_is_dropped)
{
	struct fx *f = fx_open();
	struct epoch_plan *p = malloc(sizeof(*p));
	static const uint64_t idx[2] = { 7, 11 };
	struct tally t = { 0 };
	struct snap before;
	char why[200];

	ck_assert_ptr_nonnull(p);
	committed_to(f, 2);
	snap_take(f, &before);
	plan(f, p, 3, idx, 2);
	push_pages(f, 3, p->idx, 2, p->pages, &t, DELIVER);
	ck_assert_int_eq(end_epoch(f, 3, &t, why, sizeof(why)), -EBADMSG);
	ck_assert_msg(strstr(why, "device state"), "reason: '%s'", why);
	snap_assert_same(f, &before);

	/* An epoch with nothing at all is not a checkpoint either. */
	memset(&t, 0, sizeof(t));
	ck_assert_int_eq(end_epoch(f, 3, &t, why, sizeof(why)), -EBADMSG);
	snap_assert_same(f, &before);
	ck_assert_uint_eq(f->rp.discards, 2);
	snap_free(&before);
	free(p);
	fx_close(f);
}
END_TEST

START_TEST(test_epoch_with_only_devstate_commits)
{
	struct fx *f = fx_open();
	struct epoch_plan *p = malloc(sizeof(*p));
	char why[200];

	ck_assert_ptr_nonnull(p);
	committed_to(f, 1);
	plan(f, p, 2, NULL, 0);
	{
		struct tally t = { 0 };
		push_dev(f, 2, p->dev, strlen(p->dev), &t, DELIVER);
		ck_assert_msg(end_epoch(f, 2, &t, why, sizeof(why)) == 0, "epoch 2: %s", why);
	}
	assert_committed(f, 2, p->dev);
	free(p);
	fx_close(f);
}
END_TEST

START_TEST(test_devstate_in_several_frames_is_concatenated)
{
	struct fx *f = fx_open();
	struct epoch_plan *p = malloc(sizeof(*p));
	static const uint64_t idx[1] = { 13 };
	struct tally t = { 0 };
	char why[200];

	ck_assert_ptr_nonnull(p);
	committed_to(f, 1);
	plan(f, p, 2, idx, 1);
	strcpy(p->dev, "first part|second part|third");
	push_pages(f, 2, p->idx, 1, p->pages, &t, DELIVER);
	push_dev(f, 2, "first part|", 11, &t, DELIVER);
	push_dev(f, 2, "second part|", 12, &t, DELIVER);
	push_dev(f, 2, "third", 5, &t, DELIVER);
	ck_assert_msg(end_epoch(f, 2, &t, why, sizeof(why)) == 0, "epoch 2: %s", why);
	model_apply(f, p);
	assert_committed(f, 2, p->dev);
	free(p);
	fx_close(f);
}
END_TEST

START_TEST(test_epoch_end_counts_mismatch_is_dropped)
{
	struct fx *f = fx_open();
	struct epoch_plan *p = malloc(sizeof(*p));
	static const uint64_t idx[2] = { 1, 3 };
	struct tally t = { 0 };
	struct snap before;
	char why[200];

	ck_assert_ptr_nonnull(p);
	committed_to(f, 1);
	snap_take(f, &before);
	plan(f, p, 2, idx, 2);
	push_pages(f, 2, p->idx, 2, p->pages, &t, DELIVER);
	push_dev(f, 2, p->dev, strlen(p->dev), &t, DELIVER);
	t.pages = 3; /* frames and checksum right, page count wrong */
	ck_assert_int_eq(end_epoch(f, 2, &t, why, sizeof(why)), -EBADMSG);
	ck_assert_msg(strstr(why, "pages"), "reason: '%s'", why);
	snap_assert_same(f, &before);
	snap_free(&before);
	free(p);
	fx_close(f);
}
END_TEST

START_TEST(test_malformed_epoch_end_is_dropped)
{
	struct fx *f = fx_open();
	struct epoch_plan *p = malloc(sizeof(*p));
	static const uint64_t idx[1] = { 1 };
	struct tally t = { 0 };
	struct snap before;
	struct epoch_end e;
	uint8_t buf[PROTO_EPOCH_END_SIZE + 1];
	char why[200];

	ck_assert_ptr_nonnull(p);
	committed_to(f, 1);
	snap_take(f, &before);
	plan(f, p, 2, idx, 1);
	push_pages(f, 2, p->idx, 1, p->pages, &t, DELIVER);
	push_dev(f, 2, p->dev, strlen(p->dev), &t, DELIVER);
	e = (struct epoch_end){ t.pages, t.dev, t.frames, t.crc };
	proto_encode_epoch_end(buf, &e);
	buf[PROTO_EPOCH_END_SIZE] = 0;
	ck_assert_int_eq(end_epoch_raw(f, 2, buf, sizeof(buf), why, sizeof(why)), -EBADMSG);
	ck_assert_msg(strstr(why, "EPOCH_END"), "reason: '%s'", why);
	snap_assert_same(f, &before);
	snap_free(&before);
	free(p);
	fx_close(f);
}
END_TEST

START_TEST(test_devstate_in_initial_sync_is_dropped)
{
	struct fx *f = fx_open();
	uint64_t idx[1] = { 0 };
	uint8_t page[PAGE];
	struct tally t = { 0 };
	char why[200];

	begin(f, good_hello);
	fill_page(f, page);
	push_pages(f, 0, idx, 1, page, &t, DELIVER);
	push_dev(f, 0, "dev", 3, &t, DELIVER);
	ck_assert_int_eq(end_epoch(f, 0, &t, why, sizeof(why)), -EBADMSG);
	ck_assert_msg(strstr(why, "device state"), "reason: '%s'", why);
	ck_assert(!f->rp.synced);
	fx_close(f);
}
END_TEST

START_TEST(test_epoch_before_sync_is_dropped_and_sync_can_be_resent)
{
	struct fx *f = fx_open();
	struct epoch_plan *p = malloc(sizeof(*p));
	static const uint64_t idx[1] = { 2 };
	uint64_t all[NPAGES];
	struct tally t = { 0 };
	char why[200];

	ck_assert_ptr_nonnull(p);
	begin(f, good_hello);
	plan(f, p, 1, idx, 1);
	ck_assert_int_eq(send_epoch(f, p, why, sizeof(why)), -EBADMSG);
	ck_assert_msg(strstr(why, "out of order"), "reason: '%s'", why);
	ck_assert(!exists(f, "ram"));
	ck_assert(!exists(f, "vm.json"));

	/* A corrupt sync is dropped... */
	for (size_t i = 0; i < NPAGES; i++) {
		all[i] = i;
		fill_page(f, f->model + i * PAGE);
	}
	push_pages(f, 0, all, NPAGES, f->model, &t, CORRUPT);
	ck_assert_int_eq(end_epoch(f, 0, &t, why, sizeof(why)), -EBADMSG);
	ck_assert(!f->rp.synced);
	/* ...and a whole one afterwards is accepted, then epoch 1 commits. */
	sync_all(f);
	ck_assert_msg(send_epoch(f, p, why, sizeof(why)) == 0, "epoch 1: %s", why);
	assert_committed(f, 1, p->dev);
	free(p);
	fx_close(f);
}
END_TEST

START_TEST(test_load_info_returns_committed_epoch_and_vm)
{
	struct fx *f = fx_open();
	struct replica_info info;
	struct json_object *v;

	committed_to(f, 2);
	ck_assert_int_eq(replica_load_info(f->dir, &info), 0);
	ck_assert_uint_eq(info.epoch, 2);
	ck_assert_ptr_nonnull(info.vm);
	ck_assert(json_object_object_get_ex(info.vm, "name", &v));
	ck_assert_str_eq(json_object_get_string(v), "t");
	ck_assert(json_object_object_get_ex(info.vm, "ram_size", &v));
	ck_assert_int_eq(json_object_get_int64(v), (int64_t)RAM_SIZE);
	ck_assert(json_object_object_get_ex(info.vm, "machine_type", &v));
	ck_assert_str_eq(json_object_get_string(v), "pc-i440fx-7.2");
	ck_assert(json_object_object_get_ex(info.vm, "qemu_argv", &v));
	ck_assert_str_eq(json_object_get_string(json_object_array_get_idx(v, 0)),
			 "qemu-system-x86_64");
	ck_assert_ptr_nonnull(info.committed_at);
	ck_assert_uint_eq(strlen(info.committed_at), strlen("2024-01-01T00:00:00Z"));
	ck_assert_int_eq(info.committed_at[strlen(info.committed_at) - 1], 'Z');
	replica_info_free(&info);
	ck_assert_ptr_null(info.vm);
	fx_close(f);
}
END_TEST

/* good_hello with "x": levels nested arrays: the HELLO is levels + 1 deep. */
static char *nested_hello(int levels)
{
	size_t head = strlen(good_hello) - 1; /* without its closing brace */
	char *s = malloc(head + 6 + 2 * (size_t)levels + 2), *p = s;

	ck_assert_ptr_nonnull(s);
	memcpy(p, good_hello, head);
	p += head;
	memcpy(p, ",\"x\":", 5);
	p += 5;
	memset(p, '[', (size_t)levels);
	memset(p + levels, ']', (size_t)levels);
	strcpy(p + 2 * levels, "}");
	return s;
}

/* vm.json holds the HELLO one level down and is read back with json-c's
 * default depth (32): a HELLO as deep as that would commit a replica no
 * restore can read. It is refused; one level less commits and reads back.
 * Found by fuzz/fuzz_hello's vm.json round trip. */
START_TEST(test_hello_too_deep_for_vm_json_is_refused)
{
	struct fx *f = fx_open();
	char *deep = nested_hello(31), *deepest = nested_hello(30);
	struct replica_info info;

	assert_hello_refused(deep, -EINVAL, "nested");
	committed_with(f, deepest, 1);
	ck_assert_int_eq(replica_load_info(f->dir, &info), 0);
	ck_assert_uint_eq(info.epoch, 1);
	replica_info_free(&info);
	free(deep);
	free(deepest);
	fx_close(f);
}
END_TEST

START_TEST(test_load_info_without_commit_is_enoent)
{
	struct fx *f = fx_open();
	struct replica_info info;

	ck_assert_int_eq(replica_load_info(f->dir, &info), -ENOENT);
	/* A session that only synced has committed nothing. */
	begin(f, good_hello);
	sync_all(f);
	ck_assert_int_eq(replica_load_info(f->dir, &info), -ENOENT);
	fx_close(f);
}
END_TEST

START_TEST(test_load_info_bad_vm_json_is_einval)
{
	struct fx *f = fx_open();
	struct replica_info info;
	char p[PATH_MAX];
	FILE *fp;

	committed_to(f, 1);
	fp = fopen(path_of(f, "vm.json", p), "w");
	ck_assert_ptr_nonnull(fp);
	fputs("{\"vm\":{\"protocol\":1},\"epoch\":1}", fp);
	fclose(fp);
	ck_assert_int_eq(replica_load_info(f->dir, &info), -EINVAL);
	ck_assert_ptr_null(info.vm);
	fx_close(f);
}
END_TEST

/* vm.json's host_boot_id set to boot ("": the key removed). */
static void set_boot_id(struct fx *f, const char *boot)
{
	char p[PATH_MAX];
	struct json_object *o = json_object_from_file(path_of(f, "vm.json", p));

	ck_assert_ptr_nonnull(o);
	if (*boot)
		json_object_object_add(o, "host_boot_id", json_object_new_string(boot));
	else
		json_object_object_del(o, "host_boot_id");
	ck_assert_int_eq(json_object_to_file(p, o), 0);
	json_object_put(o);
}

/* A replica records the host's boot; one from an earlier boot (its RAM and
 * journal not synced at commit) is refused for a restore, one that does
 * not say (older agents) is not. */
START_TEST(test_replica_of_an_earlier_host_boot_is_refused)
{
	struct fx *f = fx_open();
	struct replica_info info;
	char boot[64], err[600] = "";

	committed_to(f, 1);
	ck_assert_int_eq(replica_load_info(f->dir, &info), 0);
	ck_assert_ptr_nonnull(info.host_boot_id);
	ck_assert_str_eq(info.host_boot_id, host_boot_id(boot, sizeof(boot)));
	ck_assert_uint_eq(strlen(boot), 36);
	replica_info_free(&info);
	ck_assert_int_eq(replica_check_host_restart(f->dir, err, sizeof(err)), 0);
	set_boot_id(f, "00000000-0000-0000-0000-000000000000");
	ck_assert_int_eq(replica_check_host_restart(f->dir, err, sizeof(err)), -ESTALE);
	ck_assert_ptr_nonnull(strstr(err, "before this host last started"));
	ck_assert_ptr_nonnull(strstr(err, "--after-host-restart"));
	set_boot_id(f, "");
	ck_assert_int_eq(replica_check_host_restart(f->dir, err, sizeof(err)), 0);
	fx_close(f);
}
END_TEST

START_TEST(test_end_session_during_new_sync_keeps_previous_commit)
{
	struct fx *f = fx_open();
	uint64_t idx[4] = { 0, 1, 2, 3 };
	uint8_t pages[4 * PAGE];
	struct tally t = { 0 };
	struct snap before;
	struct replica_info info;

	committed_to(f, 2);
	snap_take(f, &before);
	replica_end_session(&f->rp);

	/* A new primary: HELLO, part of its initial copy, then it is gone. */
	begin(f, good_hello);
	ck_assert(exists(f, "ram.sync"));
	for (size_t i = 0; i < 4; i++)
		fill_page(f, pages + i * PAGE);
	push_pages(f, 0, idx, 4, pages, &t, DELIVER);
	snap_assert_same(f, &before);
	replica_end_session(&f->rp);

	ck_assert(!exists(f, "ram.sync"));
	snap_assert_same(f, &before);
	ck_assert_int_eq(replica_load_info(f->dir, &info), 0);
	ck_assert_uint_eq(info.epoch, 2);
	replica_info_free(&info);
	snap_free(&before);
	fx_close(f);
}
END_TEST

START_TEST(test_new_session_commit_replaces_previous_replica)
{
	struct fx *f = fx_open();
	struct epoch_plan *p = malloc(sizeof(*p));
	static const uint64_t idx[1] = { 10 };
	char why[200];

	ck_assert_ptr_nonnull(p);
	committed_to(f, 3);
	/* A second primary (e.g. after a restart) starts over at epoch 0. */
	begin(f, good_hello);
	sync_all(f);
	ck_assert(exists(f, "ram.sync"));
	plan(f, p, 1, idx, 1);
	ck_assert_msg(send_epoch(f, p, why, sizeof(why)) == 0, "epoch 1: %s", why);
	assert_committed(f, 1, p->dev);
	free(p);
	fx_close(f);
}
END_TEST

/* A replica a VM was restored from is marked; the next session's first
 * commit, a new replica, clears the mark (not its sync alone). */
START_TEST(test_restored_mark_lasts_until_a_new_replica)
{
	struct fx *f = fx_open();
	struct epoch_plan *p = malloc(sizeof(*p));
	static const uint64_t idx[1] = { 4 };
	char why[200];

	ck_assert_ptr_nonnull(p);
	committed_to(f, 1);
	ck_assert(!replica_was_restored(f->dir));
	replica_mark_restored(f->dir);
	ck_assert(replica_was_restored(f->dir));
	begin(f, good_hello);
	sync_all(f);
	ck_assert(replica_was_restored(f->dir)); /* nothing committed yet */
	plan(f, p, 1, idx, 1);
	ck_assert_msg(send_epoch(f, p, why, sizeof(why)) == 0, "epoch 1: %s", why);
	ck_assert(!replica_was_restored(f->dir));
	free(p);
	fx_close(f);
}
END_TEST

/* ---- delta resync ---- */

static const char delta_hello[] =
	"{\"protocol\":1,\"name\":\"t\",\"ram_size\":65536,\"page_size\":4096,"
	"\"ram_backend\":\"ram0\",\"machine_type\":\"pc-i440fx-7.2\","
	"\"qemu_argv\":[\"qemu-system-x86_64\"],\"ram_delta_seed\":\"00000000deadbeef\"}";

/* A primary that asks for a delta resync gets the hashes of the committed
 * RAM; the initial copy then carries only the pages that differ, and the
 * commit holds those and every other page of the old replica. */
START_TEST(test_delta_resync_starts_from_the_replica)
{
	struct fx *f = fx_open();
	struct epoch_plan *p = malloc(sizeof(*p));
	static const uint64_t changed[2] = { 2, 9 }, idx1[1] = { 5 };
	uint8_t want[PAGE_HASH_SIZE], *h;
	struct tally t = { 0 };
	uint32_t len;
	char why[200];

	ck_assert_ptr_nonnull(p);
	committed_to(f, 2);
	begin(f, delta_hello);
	ck_assert(f->rp.delta);
	ck_assert_uint_eq(f->rp.delta_seed, 0xdeadbeefu);
	/* the base is copied and hashed in steps: pages 0-3, then the rest;
	 * the hashes are of the committed pages */
	h = replica_ram_hashes(&f->rp, 0, 4, &len);
	ck_assert_ptr_nonnull(h);
	free(h);
	h = replica_ram_hashes(&f->rp, 4, NPAGES - 4, &len);
	ck_assert_ptr_nonnull(h);
	ck_assert_uint_eq(len, PROTO_RAM_HASHES_HDR_SIZE + (NPAGES - 4) * PAGE_HASH_SIZE);
	for (unsigned i = 4; i < NPAGES; i++) {
		page_hash(f->model + (size_t)i * PAGE, 0xdeadbeefu, want);
		ck_assert_mem_eq(h + PROTO_RAM_HASHES_HDR_SIZE + (i - 4) * PAGE_HASH_SIZE, want,
				 PAGE_HASH_SIZE);
	}
	free(h);
	ck_assert_ptr_null(replica_ram_hashes(&f->rp, 4, NPAGES, &len)); /* past the end */
	/* epoch 0 sends two pages; the rest comes from the replica */
	for (unsigned i = 0; i < 2; i++)
		fill_page(f, f->model + changed[i] * PAGE);
	push_pages(f, 0, changed, 1, f->model + changed[0] * PAGE, &t, DELIVER);
	push_pages(f, 0, changed + 1, 1, f->model + changed[1] * PAGE, &t, DELIVER);
	ck_assert_msg(end_epoch(f, 0, &t, why, sizeof(why)) == 0, "sync refused: %s", why);
	plan(f, p, 1, idx1, 1);
	ck_assert_msg(send_epoch(f, p, why, sizeof(why)) == 0, "epoch 1: %s", why);
	assert_committed(f, 1, p->dev);  /* the whole RAM equals the model */
	free(p);
	fx_close(f);
}
END_TEST

/* No delta without a seed, nor from a replica of another size: a full
 * copy into a fresh, zeroed ram.sync. */
START_TEST(test_delta_resync_only_from_a_replica_of_this_size)
{
	struct fx *f = fx_open();
	static const char other_size[] =
		"{\"protocol\":1,\"name\":\"t\",\"ram_size\":131072,\"page_size\":4096,"
		"\"ram_backend\":\"ram0\",\"machine_type\":\"pc-i440fx-7.2\","
		"\"qemu_argv\":[\"qemu-system-x86_64\"],\"ram_delta_seed\":\"0000000000000001\"}";
	static const char bad_seed[] =
		"{\"protocol\":1,\"name\":\"t\",\"ram_size\":65536,\"page_size\":4096,"
		"\"ram_backend\":\"ram0\",\"machine_type\":\"pc-i440fx-7.2\","
		"\"qemu_argv\":[\"qemu-system-x86_64\"],\"ram_delta_seed\":\"xyz\"}";
	static const uint8_t zero[PAGE];
	uint32_t len;

	begin(f, delta_hello);   /* nothing committed yet */
	ck_assert(!f->rp.delta);
	replica_end_session(&f->rp);
	committed_to(f, 1);
	begin(f, good_hello);
	ck_assert(!f->rp.delta);
	ck_assert_mem_eq(f->rp.ram, zero, PAGE);
	begin(f, bad_seed);
	ck_assert(!f->rp.delta);
	begin(f, other_size);
	ck_assert(!f->rp.delta);
	ck_assert_ptr_null(replica_ram_hashes(&f->rp, 0, 1, &len)); /* no delta, no hashes */
	fx_close(f);
}
END_TEST

/* ---- crash safety: the journal (backup-agent/journal.h) ---- */

/* Writing the journal is the commit point: when it cannot be written the
 * epoch is refused and every replica file stays byte for byte. */
START_TEST(test_commit_that_cannot_write_its_journal_changes_nothing)
{
	struct fx *f = fx_open();
	struct epoch_plan *p = malloc(sizeof(*p));
	static const uint64_t idx[2] = { 2, 9 };
	struct snap before;
	char why[200], path[PATH_MAX];

	ck_assert_ptr_nonnull(p);
	committed_to(f, 2);
	snap_take(f, &before);
	ck_assert_int_eq(mkdir(path_of(f, "journal.tmp", path), 0700), 0);
	plan(f, p, 3, idx, 2);
	ck_assert_int_ne(send_epoch(f, p, why, sizeof(why)), 0);
	ck_assert_msg(strstr(why, "commit failed"), "reason: '%s'", why);
	ck_assert_uint_eq(f->rp.session_epoch, 2);
	ck_assert(!exists(f, "journal"));
	snap_assert_same(f, &before);
	snap_free(&before);
	free(p);
	fx_close(f);
}
END_TEST

/* Applying fails after the commit point (devstate cannot be replaced):
 * the epoch stands committed in the journal, and replica_recover finishes
 * it to exactly that epoch. */
START_TEST(test_apply_failure_after_commit_point_is_replayed)
{
	struct fx *f = fx_open();
	struct epoch_plan *p = malloc(sizeof(*p));
	static const uint64_t idx[2] = { 2, 9 };
	char why[200], path[PATH_MAX], err[256];

	ck_assert_ptr_nonnull(p);
	committed_to(f, 2);
	ck_assert_int_eq(mkdir(path_of(f, "devstate.tmp", path), 0700), 0);
	plan(f, p, 3, idx, 2);
	ck_assert_msg(send_epoch(f, p, why, sizeof(why)) == 0, "epoch 3: %s", why);
	ck_assert(exists(f, "journal"));
	ck_assert_uint_eq(vm_json_epoch(f), 2); /* not applied yet */
	/* While the fault lasts, recovery fails and says why... */
	ck_assert_int_lt(replica_recover(f->dir, err, sizeof(err)), 0);
	ck_assert_msg(strstr(err, "epoch 3"), "err: '%s'", err);
	ck_assert(exists(f, "journal"));
	/* ...and once it is gone, the epoch is applied whole. */
	ck_assert_int_eq(rmdir(path), 0);
	ck_assert_int_eq(replica_recover(f->dir, err, sizeof(err)), 1);
	ck_assert(!exists(f, "journal"));
	assert_committed(f, 3, p->dev);
	free(p);
	fx_close(f);
}
END_TEST

/* A journal left behind is replayed before the next epoch commits. */
START_TEST(test_pending_journal_is_replayed_before_next_commit)
{
	struct fx *f = fx_open();
	struct epoch_plan *p = malloc(sizeof(*p));
	static const uint64_t idx3[2] = { 2, 9 }, idx4[1] = { 9 };
	char why[200], path[PATH_MAX];

	ck_assert_ptr_nonnull(p);
	committed_to(f, 2);
	ck_assert_int_eq(mkdir(path_of(f, "vm.json.tmp", path), 0700), 0);
	plan(f, p, 3, idx3, 2);
	ck_assert_msg(send_epoch(f, p, why, sizeof(why)) == 0, "epoch 3: %s", why);
	ck_assert(exists(f, "journal"));
	ck_assert_int_eq(rmdir(path), 0);
	plan(f, p, 4, idx4, 1);
	ck_assert_msg(send_epoch(f, p, why, sizeof(why)) == 0, "epoch 4: %s", why);
	ck_assert(!exists(f, "journal"));
	assert_committed(f, 4, p->dev);
	free(p);
	fx_close(f);
}
END_TEST

/* The agent killed at each step of a commit: before the journal is
 * renamed (journal.tmp left), and after it with nothing applied. Recovery
 * gives exactly epoch N-1 or exactly epoch N. */
START_TEST(test_killed_before_commit_point_recovers_previous_epoch)
{
	struct fx *f = fx_open();
	struct snap before;
	char path[PATH_MAX], err[256];
	FILE *torn;

	committed_to(f, 2);
	snap_take(f, &before);
	torn = fopen(path_of(f, "journal.tmp", path), "w");
	ck_assert_ptr_nonnull(torn);
	fputs("RMJ1 half a journal", torn);
	fclose(torn);
	replica_end_session(&f->rp);
	ck_assert_int_eq(replica_recover(f->dir, err, sizeof(err)), 0);
	ck_assert(!exists(f, "journal.tmp"));
	snap_assert_same(f, &before);
	snap_free(&before);
	fx_close(f);
}
END_TEST

START_TEST(test_killed_after_commit_point_recovers_new_epoch)
{
	struct fx *f = fx_open();
	struct epoch_plan *p = malloc(sizeof(*p));
	static const uint64_t idx[3] = { 1, 5, 14 };
	const char *vm = "{ \"vm\": " ;
	char *vm_json, err[256];
	struct journal_view j;
	struct replica_info info;

	ck_assert_ptr_nonnull(p);
	committed_to(f, 2);
	plan(f, p, 3, idx, 3);
	/* What commit() writes, stopped right after the commit point. */
	ck_assert_int_gt(asprintf(&vm_json, "%s%s, \"epoch\": 3 }", vm, good_hello), 0);
	j = (struct journal_view){
		.epoch = 3, .npages = 3, .idx = p->idx, .pages = p->pages,
		.devstate = (const uint8_t *)p->dev, .devstate_len = strlen(p->dev),
		.vm_json = vm_json, .vm_json_len = strlen(vm_json),
	};
	ck_assert_int_eq(journal_write(f->dir, &j), 0);
	replica_end_session(&f->rp);
	ck_assert_int_eq(replica_recover(f->dir, err, sizeof(err)), 1);
	model_apply(f, p);
	assert_committed(f, 3, p->dev);
	ck_assert_int_eq(replica_load_info(f->dir, &info), 0);
	ck_assert_uint_eq(info.epoch, 3);
	replica_info_free(&info);
	/* Replaying twice changes nothing: applying is idempotent. */
	ck_assert_int_eq(journal_write(f->dir, &j), 0);
	ck_assert_int_eq(replica_recover(f->dir, err, sizeof(err)), 1);
	assert_committed(f, 3, p->dev);
	free(vm_json);
	free(p);
	fx_close(f);
}
END_TEST

/* A damaged journal is reported, never applied. */
START_TEST(test_damaged_journal_is_refused)
{
	struct fx *f = fx_open();
	struct epoch_plan *p = malloc(sizeof(*p));
	static const uint64_t idx[1] = { 7 };
	struct journal_view j;
	struct snap before;
	char path[PATH_MAX], err[256];
	const char *vm_json = "{}";
	FILE *jf;

	ck_assert_ptr_nonnull(p);
	committed_to(f, 1);
	snap_take(f, &before);
	plan(f, p, 2, idx, 1);
	j = (struct journal_view){
		.epoch = 2, .npages = 1, .idx = p->idx, .pages = p->pages,
		.devstate = (const uint8_t *)p->dev, .devstate_len = strlen(p->dev),
		.vm_json = vm_json, .vm_json_len = strlen(vm_json),
	};
	ck_assert_int_eq(journal_write(f->dir, &j), 0);
	jf = fopen(path_of(f, "journal", path), "r+");
	ck_assert_ptr_nonnull(jf);
	fseek(jf, 100, SEEK_SET);
	fputc(0x5a ^ fgetc(jf), jf);
	fclose(jf);
	replica_end_session(&f->rp);
	ck_assert_int_lt(replica_recover(f->dir, err, sizeof(err)), 0);
	ck_assert_msg(strstr(err, "damaged"), "err: '%s'", err);
	snap_assert_same(f, &before);
	snap_free(&before);
	free(p);
	fx_close(f);
}
END_TEST

/* A page index past RAM whose end overflows 64 bits ((idx + 1) * 4096
 * wraps to page 3's end) is refused, not written to the page it wraps to.
 * The journal's CRC is right: only its reader's bound stands in the way.
 * Found by fuzz/fuzz_journal's check that a replay names pages in RAM. */
START_TEST(test_journal_page_index_wrapping_past_ram_is_refused)
{
	struct fx *f = fx_open();
	static const uint64_t idx[1] = { (UINT64_MAX / PROTO_PAGE_SIZE) + 1 + 2 };
	static uint8_t page[PROTO_PAGE_SIZE];
	struct journal_view j = {
		.epoch = 2, .npages = 1, .idx = idx, .pages = page,
		.devstate = (const uint8_t *)"dev", .devstate_len = 3,
		.vm_json = "{}", .vm_json_len = 2,
	};
	struct snap before;
	char err[256];

	committed_to(f, 1);
	snap_take(f, &before);
	memset(page, 0x5a, sizeof(page));
	ck_assert_int_eq(journal_write(f->dir, &j), 0);
	replica_end_session(&f->rp);
	ck_assert_int_eq(replica_recover(f->dir, err, sizeof(err)), -ERANGE);
	ck_assert_msg(strstr(err, "epoch 2"), "err: '%s'", err);
	snap_assert_same(f, &before);
	snap_free(&before);
	fx_close(f);
}
END_TEST

struct pulses {
	int n;
	const char *tmp;   /* journal.tmp: the write has not begun while absent */
	int before_write;  /* pulses while it was absent: the checksum's */
};

static void count_pulse(void *ctx)
{
	struct pulses *p = ctx;

	p->n++;
	p->before_write += p->tmp && access(p->tmp, F_OK) != 0;
}

static uint8_t *read_whole(const char *path, size_t *len)
{
	struct stat st;
	int fd = open(path, O_RDONLY);
	uint8_t *buf;

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(fstat(fd, &st), 0);
	buf = malloc((size_t)st.st_size + 1);
	ck_assert_ptr_nonnull(buf);
	ck_assert_int_eq(read(fd, buf, (size_t)st.st_size), st.st_size);
	close(fd);
	*len = (size_t)st.st_size;
	return buf;
}

/* An epoch larger than JOURNAL_PULSE_BYTES: the journal calls its pulse
 * while it hashes, writes and applies it (the agent's heartbeats during a
 * long commit), and writes the same bytes as without one. */
START_TEST(test_long_commit_pulses_and_writes_the_same_journal)
{
	const uint64_t n = JOURNAL_PULSE_BYTES / PROTO_PAGE_SIZE + 1;
	uint64_t *idx = malloc(n * sizeof(*idx));
	uint8_t *pages = malloc(n * PROTO_PAGE_SIZE), *ram = calloc(n, PROTO_PAGE_SIZE);
	uint8_t *a, *b;
	char with[PATH_MAX], without[PATH_MAX], path[PATH_MAX + 16], tmp[PATH_MAX + 16];
	struct pulses pulses = { .tmp = tmp };
	size_t alen, blen;
	struct journal_view j;

	ck_assert(idx && pages && ram);
	for (uint64_t i = 0; i < n; i++) {
		idx[i] = n - 1 - i; /* applied in list order, not page order */
		memset(pages + i * PROTO_PAGE_SIZE, (int)(i * 7 + 1), PROTO_PAGE_SIZE);
	}
	snprintf(with, sizeof(with), "%s/with", g_tmp);
	snprintf(without, sizeof(without), "%s/without", g_tmp);
	ck_assert_int_eq(mkdir(with, 0700), 0);
	ck_assert_int_eq(mkdir(without, 0700), 0);
	j = (struct journal_view){
		.epoch = 9, .npages = n, .idx = idx, .pages = pages,
		.devstate = (const uint8_t *)"dev", .devstate_len = 3,
		.vm_json = "{}", .vm_json_len = 2,
	};
	ck_assert_int_eq(journal_write(without, &j), 0);
	j.pulse = count_pulse;
	j.pulse_ctx = &pulses;
	snprintf(tmp, sizeof(tmp), "%s/journal.tmp", with);
	ck_assert_int_eq(journal_write(with, &j), 0);
	/* the checksum's first 32 MiB, then each piece written */
	ck_assert_int_ge(pulses.before_write, 1);
	ck_assert_int_ge(pulses.n - pulses.before_write, 2);
	snprintf(path, sizeof(path), "%s/journal", with);
	a = read_whole(path, &alen);
	snprintf(path, sizeof(path), "%s/journal", without);
	b = read_whole(path, &blen);
	ck_assert_uint_eq(alen, blen);
	ck_assert(memcmp(a, b, alen) == 0);
	pulses = (struct pulses){ .tmp = NULL };
	ck_assert_int_eq(journal_apply(with, &j, ram, n * PROTO_PAGE_SIZE), 0);
	ck_assert_int_ge(pulses.n, 1);
	for (uint64_t i = 0; i < n; i++)
		ck_assert(memcmp(ram + idx[i] * PROTO_PAGE_SIZE, pages + i * PROTO_PAGE_SIZE,
				 PROTO_PAGE_SIZE) == 0);
	free(a);
	free(b);
	free(idx);
	free(pages);
	free(ram);
}
END_TEST

/* An initial copy (disk-N.sync, written unsynced while it came) is synced
 * in slices, a pulse after each, not in one fdatasync of the lot; a later
 * commit's journal syncs what it wrote at once. Either way the disk holds
 * what was written. */
START_TEST(test_initial_copy_syncs_in_slices)
{
	const uint64_t size = 3ull * DISKFILE_SYNC_SLICE + 4096;
	const struct journal_disk_op op = { 0, DISK_OP_WRITE, 0, 6 };
	struct pulses pulses = { .tmp = NULL };
	char dir[PATH_MAX], path[PATH_MAX + 16], back[8] = "";
	struct journal_view j = {
		.epoch = 2, .ndisks = 1, .ndisk_ops = 1, .disk_ops = &op,
		.disk_data = (const uint8_t *)"later!", .disk_data_len = 6,
		.devstate = (const uint8_t *)"dev", .devstate_len = 3,
		.vm_json = "{}", .vm_json_len = 2,
		.pulse = count_pulse, .pulse_ctx = &pulses,
	};
	static const uint8_t ram_page[PROTO_PAGE_SIZE];
	int fd;

	snprintf(dir, sizeof(dir), "%s/sliced", g_tmp);
	ck_assert_int_eq(mkdir(dir, 0700), 0);
	snprintf(path, sizeof(path), "%s/disk-0.img", dir);
	fd = open(path, O_RDWR | O_CREAT, 0600);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(ftruncate(fd, (off_t)size), 0);
	ck_assert_int_eq(pwrite(fd, "copied", 6, (off_t)(size - 4096)), 6);
	/* four slices */
	ck_assert_int_eq(diskfile_sync(fd, size, true, count_pulse, &pulses), 0);
	ck_assert_int_eq(pulses.n, 4);
	ck_assert_int_eq(pread(fd, back, 6, (off_t)(size - 4096)), 6);
	ck_assert_str_eq(back, "copied");
	close(fd);
	/* a later commit writing the disk: one sync, one pulse */
	snprintf(path, sizeof(path), "%s/ram", dir);
	fd = open(path, O_RDWR | O_CREAT, 0600);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, ram_page, sizeof(ram_page)), (ssize_t)sizeof(ram_page));
	close(fd);
	ck_assert_int_eq(journal_write(dir, &j), 0);
	pulses.n = 0;
	ck_assert_int_eq(journal_apply(dir, &j, NULL, 0), 0);
	ck_assert_int_eq(pulses.n, 1);
	snprintf(path, sizeof(path), "%s/disk-0.img", dir);
	fd = open(path, O_RDONLY);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(pread(fd, back, 6, 0), 6);
	ck_assert_str_eq(back, "later!");
	close(fd);
}
END_TEST

#define ADD(s, t) tmp_fixture_add((s), tmp_setup, #t, t, 20)

static Suite *replica_suite(void)
{
	Suite *s = suite_create("replica");

	ADD(s, test_hello_not_json_is_refused);
	ADD(s, test_hello_wrong_protocol_is_refused);
	ADD(s, test_hello_missing_fields_are_refused);
	ADD(s, test_hello_ram_size_not_page_multiple_is_refused);
	ADD(s, test_hello_accepted_prepares_ram_sync);
	ADD(s, test_sync_then_epoch1_commits_all_files);
	ADD(s, test_corrupt_epoch_is_dropped_then_resent_epoch_commits);
	ADD(s, test_corrupt_epoch_end_drops_staging_and_resend_commits);
	ADD(s, test_truncated_epoch_is_dropped);
	ADD(s, test_swapped_frames_are_dropped);
	ADD(s, test_out_of_order_epoch_is_dropped);
	ADD(s, test_page_beyond_ram_is_dropped);
	ADD(s, test_page_beyond_ram_in_sync_is_dropped);
	ADD(s, test_epoch_without_devstate_is_dropped);
	ADD(s, test_epoch_with_only_devstate_commits);
	ADD(s, test_devstate_in_several_frames_is_concatenated);
	ADD(s, test_epoch_end_counts_mismatch_is_dropped);
	ADD(s, test_malformed_epoch_end_is_dropped);
	ADD(s, test_devstate_in_initial_sync_is_dropped);
	ADD(s, test_epoch_before_sync_is_dropped_and_sync_can_be_resent);
	ADD(s, test_load_info_returns_committed_epoch_and_vm);
	ADD(s, test_load_info_without_commit_is_enoent);
	ADD(s, test_hello_too_deep_for_vm_json_is_refused);
	ADD(s, test_load_info_bad_vm_json_is_einval);
	ADD(s, test_replica_of_an_earlier_host_boot_is_refused);
	ADD(s, test_end_session_during_new_sync_keeps_previous_commit);
	ADD(s, test_new_session_commit_replaces_previous_replica);
	ADD(s, test_commit_that_cannot_write_its_journal_changes_nothing);
	ADD(s, test_apply_failure_after_commit_point_is_replayed);
	ADD(s, test_pending_journal_is_replayed_before_next_commit);
	ADD(s, test_killed_before_commit_point_recovers_previous_epoch);
	ADD(s, test_killed_after_commit_point_recovers_new_epoch);
	ADD(s, test_damaged_journal_is_refused);
	ADD(s, test_delta_resync_starts_from_the_replica);
	ADD(s, test_restored_mark_lasts_until_a_new_replica);
	ADD(s, test_delta_resync_only_from_a_replica_of_this_size);
	ADD(s, test_journal_page_index_wrapping_past_ram_is_refused);
	ADD(s, test_long_commit_pulses_and_writes_the_same_journal);
	ADD(s, test_initial_copy_syncs_in_slices);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(replica_suite());
	int failed;

	/* Some tests fail commits on purpose: keep their error lines quiet. */
	log_set_level(LOG_CRIT);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
