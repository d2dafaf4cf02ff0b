/* The backup's disk replicas (backup-agent/replica.c, journal.c,
 * diskfile.c) driven with hand-built DISK frames: a VM with two disks, its
 * initial copy into disk-N.sync, epochs staged and committed into
 * disk-N.img, epochs dropped without touching it, and an agent killed
 * in the middle of applying one. */
#include "../backup-agent/diskfile.h"
#include "../backup-agent/journal.h"
#include "../backup-agent/replica.h"
#include "ck_loop.h"
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

#define NDISKS 2
static const uint64_t disk_size[NDISKS] = { 65536, 8192 };

#define HELLO_HEAD                                                                      \
	"{\"protocol\":1,\"name\":\"t\",\"ram_size\":16384,\"page_size\":4096,"        \
	"\"ram_backend\":\"ram0\",\"machine_type\":\"pc-i440fx-7.2\","                 \
	"\"qemu_argv\":[\"qemu-system-x86_64\"]"

static const char hello2[] = HELLO_HEAD ",\"disks\":["
	"{\"id\":\"drive0\",\"size\":65536,\"node\":\"disk0\",\"format\":\"raw\"},"
	"{\"id\":\"drive1\",\"size\":8192}]}";
static const char hello1[] = HELLO_HEAD ",\"disks\":[{\"id\":\"drive0\",\"size\":65536}]}";

/* ---- a failing disk ---- */

/* Linked with -Wl,--wrap=sync_file_range (Makefile): the write-back of
 * the descriptor failing_fd fails as a failing disk's does; the calls on
 * watched_fd are counted, and whether a journal existed at the time. */
int __real_sync_file_range(int fd, off_t off, off_t n, unsigned int flags);
int __wrap_sync_file_range(int fd, off_t off, off_t n, unsigned int flags);
static int failing_fd = -1, watched_fd = -1;
static const char *watched_journal;
static unsigned watched_syncs, watched_after_journal;

int __wrap_sync_file_range(int fd, off_t off, off_t n, unsigned int flags)
{
	if (fd >= 0 && fd == failing_fd) {
		errno = EIO;
		return -1;
	}
	if (fd >= 0 && fd == watched_fd) {
		watched_syncs++;
		if (access(watched_journal, F_OK) == 0)
			watched_after_journal++;
	}
	return __real_sync_file_range(fd, off, n, flags);
}

/* ---- fixture ---- */

TMP_FIXTURE("check_replica_disk")

/* What the primary counted for the epoch, for its EPOCH_END. */
struct tally {
	uint64_t dev;
	uint32_t frames, crc;
};

struct fx {
	char dir[128];
	struct replica rp;
	uint8_t *disk[NDISKS];  /* what the disks hold as of the last commit (or sync) */
	uint8_t *pend[NDISKS];  /* the same plus the ops of the epoch being sent */
	uint64_t epoch;
	struct tally t;
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
	for (int i = 0; i < NDISKS; i++) {
		f->disk[i] = calloc(1, disk_size[i]);
		f->pend[i] = calloc(1, disk_size[i]);
		ck_assert(f->disk[i] && f->pend[i]);
	}
	f->seed = 0x13579bdfu;
	return f;
}

static void fx_close(struct fx *f)
{
	replica_free(&f->rp);
	for (int i = 0; i < NDISKS; i++) {
		free(f->disk[i]);
		free(f->pend[i]);
	}
	if (access(f->dir, F_OK) == 0)
		ck_assert_int_eq(nftw(f->dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS), 0);
	free(f);
}

static void fill(struct fx *f, uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		f->seed ^= f->seed << 13;
		f->seed ^= f->seed >> 17;
		f->seed ^= f->seed << 5;
		p[i] = (uint8_t)(f->seed | 1); /* never 0: zeroes must come from the replica */
	}
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
	close(fd);
	*len = off;
	return buf;
}

/* The file NAME holds exactly want (size bytes). */
static void assert_file(const struct fx *f, const char *name, const uint8_t *want, size_t size)
{
	size_t len;
	uint8_t *got = slurp(f, name, &len);

	ck_assert_msg(got != NULL, "%s missing", name);
	ck_assert_msg(len == size, "%s is %zu bytes, expected %zu", name, len, size);
	for (size_t i = 0; i < size; i++)
		ck_loop_assert_msg(got[i] == want[i], "%s: byte %zu is %02x, expected %02x", name,
				   i, got[i], want[i]);
	free(got);
}

/* Every disk-N.img holds the committed model. */
static void assert_disks_committed(const struct fx *f)
{
	char name[32];

	for (int i = 0; i < NDISKS; i++) {
		snprintf(name, sizeof(name), "disk-%d.img", i);
		assert_file(f, name, f->disk[i], disk_size[i]);
		snprintf(name, sizeof(name), "disk-%d.sync", i);
		ck_assert_msg(!exists(f, name), "%s left behind", name);
	}
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

/* ---- frames ---- */

static void push_frame(struct fx *f, unsigned type, const uint8_t *payload, size_t len,
		       bool payload_ok)
{
	uint8_t raw[PROTO_HDR_SIZE];
	struct iovec iov = { .iov_base = (void *)payload, .iov_len = len };
	struct frame_hdr h;

	proto_encode_hdr(raw, type, f->epoch, &iov, 1);
	ck_assert_int_eq(proto_decode_hdr(raw, &h), 0);
	f->t.frames++;
	f->t.crc = proto_epoch_crc_add(f->t.crc, h.payload_crc);
	replica_add_frame(&f->rp, &h, payload, payload_ok);
}

/* A DISK frame as the replicator builds it; data_len may lie on purpose. */
static void push_disk_raw(struct fx *f, uint32_t disk, uint32_t op, uint64_t off, uint64_t len,
			  const uint8_t *data, size_t data_len, bool payload_ok)
{
	struct disk_op d = { .disk = disk, .op = op, .offset = off, .length = len };
	uint8_t *p = malloc(PROTO_DISK_HDR_SIZE + data_len + 1);

	ck_assert_ptr_nonnull(p);
	proto_encode_disk_hdr(p, &d);
	if (data_len)
		memcpy(p + PROTO_DISK_HDR_SIZE, data, data_len);
	push_frame(f, FRAME_DISK, p, PROTO_DISK_HDR_SIZE + data_len, payload_ok);
	free(p);
}

static void ep_begin(struct fx *f, uint64_t epoch)
{
	f->epoch = epoch;
	memset(&f->t, 0, sizeof(f->t));
	for (int i = 0; i < NDISKS; i++)
		memcpy(f->pend[i], f->disk[i], disk_size[i]);
}

/* A WRITE of fresh random bytes; the model follows. */
static void ep_write(struct fx *f, uint32_t disk, uint64_t off, uint64_t len)
{
	uint8_t *data = malloc(len);

	ck_assert_ptr_nonnull(data);
	fill(f, data, len);
	push_disk_raw(f, disk, DISK_OP_WRITE, off, len, data, len, true);
	memcpy(f->pend[disk] + off, data, len);
	free(data);
}

/* WRITE_ZEROES, TRIM or FLUSH. */
static void ep_op(struct fx *f, uint32_t disk, uint32_t op, uint64_t off, uint64_t len)
{
	push_disk_raw(f, disk, op, off, len, NULL, 0, true);
	if (op != DISK_OP_FLUSH)
		memset(f->pend[disk] + off, 0, len);
}

/* The device state (epochs >= 1) and EPOCH_END; 0 when the replica took
 * the epoch, and then the model moves on. */
static int ep_end(struct fx *f, char *why, size_t whylen)
{
	char dev[64];
	uint8_t buf[PROTO_EPOCH_END_SIZE], raw[PROTO_HDR_SIZE];
	struct epoch_end e = { 0 };
	struct iovec iov = { .iov_base = buf, .iov_len = sizeof(buf) };
	struct frame_hdr h;
	int rc;

	if (f->epoch) {
		int n = snprintf(dev, sizeof(dev), "QEVM state of epoch %llu",
				 (unsigned long long)f->epoch);
		push_frame(f, FRAME_DEVSTATE, (const uint8_t *)dev, (size_t)n, true);
		f->t.dev += (uint64_t)n;
	}
	e = (struct epoch_end){ .devstate_bytes = f->t.dev, .frames = f->t.frames,
				.epoch_crc = f->t.crc };
	proto_encode_epoch_end(buf, &e);
	proto_encode_hdr(raw, FRAME_EPOCH_END, f->epoch, &iov, 1);
	ck_assert_int_eq(proto_decode_hdr(raw, &h), 0);
	why[0] = 0;
	rc = replica_end_epoch(&f->rp, &h, buf, true, why, whylen);
	if (rc == 0)
		for (int i = 0; i < NDISKS; i++)
			memcpy(f->disk[i], f->pend[i], disk_size[i]);
	return rc;
}

static void ep_end_ok(struct fx *f)
{
	char why[200];

	ck_assert_msg(ep_end(f, why, sizeof(why)) == 0, "epoch %llu refused: %s",
		      (unsigned long long)f->epoch, why);
}

static void begin(struct fx *f, const char *hello)
{
	char err[256] = "";

	ck_assert_msg(replica_begin_session(&f->rp, hello, NULL, NULL, err, sizeof(err)) == 0,
		      "HELLO refused: %s", err);
}

/* A new session with a full copy: its .sync files start empty. */
static void begin_full_copy(struct fx *f, const char *hello)
{
	begin(f, hello);
	for (int i = 0; i < NDISKS; i++)
		memset(f->disk[i], 0, disk_size[i]);
}

/* The initial copy: disk 0 written in 16 KiB pieces with the guest
 * overwriting some of it meanwhile, disk 1 partly written. */
static void sync_disks(struct fx *f)
{
	ep_begin(f, 0);
	for (uint64_t off = 0; off < disk_size[0]; off += 16384)
		ep_write(f, 0, off, 16384);
	ep_write(f, 0, 1000, 3000);           /* a guest write during the copy */
	ep_op(f, 0, DISK_OP_WRITE_ZEROES, 40960, 4096);
	if (f->rp.ndisks > 1)
		ep_write(f, 1, 0, 4096);
	ep_end_ok(f);
}

/* HELLO, sync, and epochs 1..upto each writing a bit of both disks. */
static void committed_to(struct fx *f, const char *hello, uint64_t upto)
{
	begin(f, hello);
	sync_disks(f);
	for (uint64_t e = 1; e <= upto; e++) {
		ep_begin(f, e);
		ep_write(f, 0, 512 * e, 1024);
		if (f->rp.ndisks > 1)
			ep_write(f, 1, 4096 + 512 * e, 512);
		ep_end_ok(f);
		assert_disks_committed(f);
		ck_assert_uint_eq(vm_json_epoch(f), e);
	}
}

/* ---- HELLO ---- */

static void assert_hello_refused(const char *disks_json, const char *want_in_msg)
{
	struct fx *f = fx_open();
	char *hello, err[256] = "";
	int rc;

	ck_assert_int_gt(asprintf(&hello, HELLO_HEAD ",\"disks\":%s}", disks_json), 0);
	rc = replica_begin_session(&f->rp, hello, NULL, NULL, err, sizeof(err));
	ck_assert_msg(rc == -EINVAL, "disks %s: rc %d", disks_json, rc);
	ck_assert_msg(strstr(err, want_in_msg), "disks %s: message '%s' lacks '%s'", disks_json,
		      err, want_in_msg);
	ck_assert(!exists(f, "disk-0.sync"));
	ck_assert(!exists(f, "ram.sync"));
	ck_assert_uint_eq(f->rp.ndisks, 0);
	free(hello);
	fx_close(f);
}

START_TEST(test_hello_bad_disks_are_refused)
{
	char many[2048] = "[";

	assert_hello_refused("{}", "not an array");
	assert_hello_refused("[{\"id\":\"a\",\"size\":0}]", "size 0");
	assert_hello_refused("[{\"id\":\"a\",\"size\":-512}]", "size -512");
	assert_hello_refused("[{\"id\":\"a\",\"size\":1000}]", "size 1000");
	assert_hello_refused("[{\"id\":\"a\",\"size\":\"512\"}]", "positive multiple of 512");
	assert_hello_refused("[{\"id\":\"a\"}]", "size missing");
	assert_hello_refused("[{\"size\":512}]", "disks[0] has no id");
	assert_hello_refused("[{\"id\":\"\",\"size\":512}]", "disks[0] has no id");
	assert_hello_refused("[{\"id\":\"a\",\"size\":512},{\"id\":\"a\",\"size\":1024}]",
			     "id 'a' is also disks[0]");
	assert_hello_refused("[{\"id\":\"a\",\"size\":512,\"node\":7}]", "must be strings");
	assert_hello_refused("[7]", "disks[0] is not an object");
	for (int i = 0; i < DISKFILE_MAX + 1; i++)
		snprintf(many + strlen(many), sizeof(many) - strlen(many),
			 "%s{\"id\":\"d%d\",\"size\":512}", i ? "," : "", i);
	strcat(many, "]");
	assert_hello_refused(many, "17 disks; this agent keeps at most 16");
}
END_TEST

START_TEST(test_hello_with_disks_creates_sparse_sync_files)
{
	struct fx *f = fx_open();
	char p[PATH_MAX];
	struct stat st;

	begin(f, hello2);
	ck_assert_uint_eq(f->rp.ndisks, 2);
	ck_assert_str_eq(f->rp.disks[0].id, "drive0");
	ck_assert_str_eq(f->rp.disks[0].node, "disk0");
	ck_assert_str_eq(f->rp.disks[0].format, "raw");
	ck_assert_ptr_null(f->rp.disks[1].node);
	for (int i = 0; i < NDISKS; i++) {
		snprintf(p, sizeof(p), "%s/disk-%d.sync", f->dir, i);
		ck_assert_int_eq(stat(p, &st), 0);
		ck_assert_uint_eq((uint64_t)st.st_size, disk_size[i]);
		ck_assert_msg(st.st_blocks == 0, "%s is not sparse (%lld blocks)", p,
			      (long long)st.st_blocks);
		snprintf(p, sizeof(p), "%s/disk-%d.img", f->dir, i);
		ck_assert(access(p, F_OK) < 0);
	}
	/* A session without disks has none. */
	begin(f, HELLO_HEAD "}");
	ck_assert_uint_eq(f->rp.ndisks, 0);
	ck_assert(!exists(f, "disk-0.sync"));
	fx_close(f);
}
END_TEST

/* ---- initial copy ---- */

START_TEST(test_initial_copy_is_promoted_only_at_first_commit)
{
	struct fx *f = fx_open();

	begin(f, hello2);
	sync_disks(f);
	/* Epoch 0 went straight into the .sync files; nothing is an .img. */
	assert_file(f, "disk-0.sync", f->disk[0], disk_size[0]);
	assert_file(f, "disk-1.sync", f->disk[1], disk_size[1]);
	ck_assert(!exists(f, "disk-0.img"));
	ck_assert(!exists(f, "disk-1.img"));
	ck_assert(!exists(f, "vm.json"));
	/* The first commit (even one without disk ops) promotes them. */
	ep_begin(f, 1);
	ep_end_ok(f);
	assert_disks_committed(f);
	ck_assert(!exists(f, "ram.sync"));
	ck_assert(exists(f, "ram"));
	ck_assert_uint_eq(f->rp.nsync_fd, 0);
	fx_close(f);
}
END_TEST

/* A new session's initial copy does not touch the committed disks until
 * its own first commit; a session that ends before leaves them as they were. */
START_TEST(test_new_session_sync_keeps_committed_disks_until_its_commit)
{
	struct fx *f = fx_open();
	uint8_t *old0 = malloc(disk_size[0]), *old1 = malloc(disk_size[1]);

	ck_assert(old0 && old1);
	committed_to(f, hello2, 2);
	memcpy(old0, f->disk[0], disk_size[0]);
	memcpy(old1, f->disk[1], disk_size[1]);
	begin_full_copy(f, hello2);
	sync_disks(f);
	assert_file(f, "disk-0.img", old0, disk_size[0]);
	assert_file(f, "disk-1.img", old1, disk_size[1]);
	replica_end_session(&f->rp);
	ck_assert(!exists(f, "disk-0.sync"));
	ck_assert(!exists(f, "disk-1.sync"));
	assert_file(f, "disk-0.img", old0, disk_size[0]);
	ck_assert_uint_eq(vm_json_epoch(f), 2);
	/* Again, this time to its first commit. */
	begin_full_copy(f, hello2);
	sync_disks(f);
	ep_begin(f, 1);
	ep_write(f, 1, 0, 512);
	ep_end_ok(f);
	assert_disks_committed(f);
	free(old0);
	free(old1);
	fx_close(f);
}
END_TEST

static void count_pulse(void *ctx)
{
	++*(unsigned *)ctx;
}

/* The first commit syncs each disk's initial copy before its commit point
 * (the journal's rename), pulsing as it goes. */
START_TEST(test_first_commit_syncs_the_initial_copy_before_its_commit_point)
{
	struct fx *f = fx_open();
	char journal[PATH_MAX];
	unsigned pulses = 0;

	begin(f, hello2);
	sync_disks(f);
	f->rp.pulse = count_pulse;
	f->rp.pulse_ctx = &pulses;
	watched_fd = f->rp.sync_fd[0];
	watched_journal = path_of(f, "journal", journal);
	watched_syncs = watched_after_journal = 0;
	ep_begin(f, 1);
	ep_end_ok(f);
	watched_fd = -1;
	ck_assert_uint_ge(watched_syncs, 1);
	ck_assert_msg(watched_after_journal < watched_syncs,
		      "disk 0's initial copy was synced only after the commit point");
	ck_assert_uint_ge(pulses, 2); /* a slice of each disk */
	assert_disks_committed(f);
	fx_close(f);
}
END_TEST

/* The disk fails while the first commit syncs the initial copy, which no
 * journal replay brings back: the epoch is not committed, the previous
 * replica stays whole, and the session commits nothing more (sent again,
 * the sync would pass without the lost data); a new session copies anew. */
START_TEST(test_initial_copy_that_fails_to_sync_is_not_committed)
{
	struct fx *f = fx_open();
	uint8_t *old0 = malloc(disk_size[0]), *old1 = malloc(disk_size[1]);
	char why[300];

	ck_assert(old0 && old1);
	committed_to(f, hello2, 2);
	memcpy(old0, f->disk[0], disk_size[0]);
	memcpy(old1, f->disk[1], disk_size[1]);
	begin_full_copy(f, hello2);
	sync_disks(f);
	ep_begin(f, 1);
	ep_write(f, 1, 0, 512);
	failing_fd = f->rp.sync_fd[1];
	ck_assert_int_eq(ep_end(f, why, sizeof(why)), -EIO);
	failing_fd = -1;
	ck_assert_msg(f->rp.copy_lost && strstr(why, "disk drive1's initial copy"), "why: %s", why);
	ck_assert(!exists(f, "journal"));
	ck_assert_uint_eq(vm_json_epoch(f), 2);
	assert_file(f, "disk-0.img", old0, disk_size[0]);
	assert_file(f, "disk-1.img", old1, disk_size[1]);
	/* the same epoch again: refused, though the disk syncs now */
	ep_begin(f, 1);
	ck_assert_int_eq(ep_end(f, why, sizeof(why)), -EIO);
	ck_assert_uint_eq(vm_json_epoch(f), 2);
	/* a new session */
	begin_full_copy(f, hello2);
	ck_assert(!f->rp.copy_lost);
	sync_disks(f);
	ep_begin(f, 1);
	ep_end_ok(f);
	assert_disks_committed(f);
	ck_assert_uint_eq(vm_json_epoch(f), 1);
	free(old0);
	free(old1);
	fx_close(f);
}
END_TEST

/* The agent killed during a new session's initial copy: recovery drops
 * the .sync files and keeps the committed disks. */
START_TEST(test_killed_during_sync_recovery_drops_sync_files)
{
	struct fx *f = fx_open();
	char err[256];

	committed_to(f, hello2, 1);
	begin(f, hello2);
	ep_begin(f, 0);
	ep_write(f, 0, 0, 4096);
	ck_assert(exists(f, "disk-0.sync"));
	f->rp.syncing = false; /* killed: nobody cleans up */
	replica_end_session(&f->rp);
	ck_assert(exists(f, "disk-1.sync"));
	ck_assert_int_eq(replica_recover(f->dir, err, sizeof(err)), 0);
	ck_assert(!exists(f, "ram.sync"));
	assert_disks_committed(f);
	fx_close(f);
}
END_TEST

/* A session with fewer disks drops the others' files at its first commit. */
START_TEST(test_session_with_fewer_disks_drops_the_others_at_commit)
{
	struct fx *f = fx_open();

	committed_to(f, hello2, 1);
	begin(f, hello1);
	memset(f->disk[0], 0, disk_size[0]);
	sync_disks(f);
	ck_assert(exists(f, "disk-1.img"));
	ep_begin(f, 1);
	ep_write(f, 0, 0, 512);
	ep_end_ok(f);
	assert_file(f, "disk-0.img", f->disk[0], disk_size[0]);
	ck_assert(!exists(f, "disk-1.img"));
	fx_close(f);
}
END_TEST

/* ---- staging, commit, discard ---- */

/* Writes of a dropped epoch never reach the .img; its resend commits. */
START_TEST(test_dropped_epoch_writes_never_reach_the_disk)
{
	struct fx *f = fx_open();
	uint8_t junk[4096];
	char why[200];

	committed_to(f, hello2, 2);
	ep_begin(f, 3);
	ep_write(f, 0, 0, 8192);
	ep_op(f, 1, DISK_OP_TRIM, 0, 8192);
	fill(f, junk, sizeof(junk));
	push_disk_raw(f, 0, DISK_OP_WRITE, 16384, 4096, junk, 4096, false); /* corrupt */
	ep_write(f, 0, 32768, 4096);
	ck_assert_int_eq(ep_end(f, why, sizeof(why)), -EBADMSG);
	ck_assert_msg(strstr(why, "DISK frame 3: payload checksum mismatch"), "why: %s", why);
	assert_disks_committed(f);
	ck_assert_uint_eq(vm_json_epoch(f), 2);
	/* Staged and dropped: nothing of it lingers into the next try. */
	ck_assert_uint_eq(f->rp.stage_dops_n, 0);
	ck_assert_uint_eq(f->rp.stage_disk_bytes, 0);
	ep_begin(f, 3);
	ep_write(f, 1, 512, 512);
	ep_end_ok(f);
	assert_disks_committed(f);
	ck_assert_uint_eq(vm_json_epoch(f), 3);
	fx_close(f);
}
END_TEST

/* An epoch that never ends (the primary lost) leaves the disks alone. */
START_TEST(test_unfinished_epoch_leaves_disks_alone)
{
	struct fx *f = fx_open();

	committed_to(f, hello2, 1);
	ep_begin(f, 2);
	ep_write(f, 0, 0, 65536);
	ep_op(f, 1, DISK_OP_WRITE_ZEROES, 0, 8192);
	replica_end_session(&f->rp);
	assert_disks_committed(f);
	fx_close(f);
}
END_TEST

/* Overlapping writes, zeroes and trims in one epoch apply in their order. */
START_TEST(test_overlapping_ops_apply_in_order)
{
	struct fx *f = fx_open();

	committed_to(f, hello2, 1);
	ep_begin(f, 2);
	ep_write(f, 0, 0, 8192);
	ep_write(f, 0, 4096, 2048);
	ep_op(f, 0, DISK_OP_WRITE_ZEROES, 1024, 1024);
	ep_op(f, 0, DISK_OP_FLUSH, 0, 0);
	ep_write(f, 0, 1536, 100);          /* into the zeroes, unaligned */
	ep_op(f, 0, DISK_OP_TRIM, 7168, 2048);
	ep_write(f, 0, 8704, 512);          /* into the trimmed range */
	ep_write(f, 0, 0, 512);
	ep_write(f, 1, 8192 - 512, 512);    /* the last sector */
	ep_end_ok(f);
	assert_disks_committed(f);
	fx_close(f);
}
END_TEST

/* A VERIFY of disk (target disk + 1) blocks [first, first + n), hashed
 * from want; the agent's answer: nbad, or -1 for no answer (malformed). */
static long verify_disk(struct fx *f, uint64_t epoch, uint32_t disk, uint64_t first, uint32_t n,
			const uint8_t *want, uint64_t *bad0)
{
	size_t len = PROTO_VERIFY_HDR_SIZE + (size_t)n * PAGE_HASH_SIZE;
	uint8_t *p = calloc(1, len), *out;
	uint32_t outlen = 0, nbad;
	char why[256] = "";

	ck_assert_ptr_nonnull(p);
	proto_encode_verify_hdr(p, 77, first, n, disk + 1);
	for (uint32_t i = 0; want && i < n; i++)
		page_hash(want + (first + i) * PROTO_VERIFY_BLOCK, 77,
			  p + PROTO_VERIFY_HDR_SIZE + (size_t)i * PAGE_HASH_SIZE);
	out = replica_verify(&f->rp, epoch, p, (uint32_t)len, &outlen, why, sizeof(why));
	free(p);
	if (!out)
		return -1;
	memcpy(&nbad, out + 12, 4);
	nbad = be32toh(nbad);
	if (bad0 && nbad && nbad != PROTO_VERIFY_SKIPPED)
		*bad0 = proto_get_be64(out + PROTO_VERIFY_RESULT_HDR_SIZE);
	free(out);
	return nbad;
}

/* remusctl verify's disk part, on the backup: the committed disk-N.img
 * compared block by block with the primary's hashes. */
START_TEST(test_verify_compares_the_committed_disk_blocks)
{
	struct fx *f = fx_open();
	char p[PATH_MAX];
	uint8_t junk[100];
	uint64_t bad = 0;
	int fd;

	committed_to(f, hello2, 2);
	ck_assert_int_eq(verify_disk(f, 2, 0, 0, 16, f->disk[0], NULL), 0);
	ck_assert_int_eq(verify_disk(f, 2, 1, 0, 2, f->disk[1], NULL), 0);
	/* another epoch than the committed one: skipped, not compared */
	ck_assert_int_eq(verify_disk(f, 1, 0, 0, 16, f->disk[0], NULL), PROTO_VERIFY_SKIPPED);
	/* past the disk's end, or a disk the VM has not: malformed */
	ck_assert_int_eq(verify_disk(f, 2, 1, 1, 2, f->disk[1], NULL), -1);
	ck_assert_int_eq(verify_disk(f, 2, 2, 0, 1, f->disk[1], NULL), -1);
	/* a block of the replica changed behind the agent's back */
	memset(junk, 0xee, sizeof(junk));
	fd = open(path_of(f, "disk-0.img", p), O_WRONLY);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(pwrite(fd, junk, sizeof(junk), 5 * 4096 + 10), (ssize_t)sizeof(junk));
	close(fd);
	ck_assert_int_eq(verify_disk(f, 2, 0, 0, 16, f->disk[0], &bad), 1);
	ck_assert_uint_eq(bad, 5);
	ck_assert_int_eq(verify_disk(f, 2, 0, 6, 10, f->disk[0], NULL), 0);
	fx_close(f);
}
END_TEST

/* Zeroes and trims read back as zeroes, aligned or not, big or small. */
START_TEST(test_zeroes_and_trim_read_back_as_zeroes)
{
	struct fx *f = fx_open();

	committed_to(f, hello2, 1);
	ep_begin(f, 2);
	ep_write(f, 0, 0, 65536);
	ep_write(f, 1, 0, 8192);
	ep_end_ok(f);
	ep_begin(f, 3);
	ep_op(f, 0, DISK_OP_TRIM, 4096, 16384);
	ep_op(f, 0, DISK_OP_TRIM, 30001, 777);
	ep_op(f, 0, DISK_OP_WRITE_ZEROES, 40960, 8192);
	ep_op(f, 0, DISK_OP_WRITE_ZEROES, 50001, 3);
	ep_op(f, 1, DISK_OP_TRIM, 0, 8192);
	ep_end_ok(f);
	assert_disks_committed(f);
	for (size_t i = 0; i < disk_size[1]; i++)
		ck_assert_uint_eq(f->disk[1][i], 0);
	fx_close(f);
}
END_TEST

/* ---- bad DISK frames: the epoch is dropped, the replica unchanged ---- */

struct bad_frame {
	uint32_t disk, op;
	uint64_t off, len;
	size_t data;
	const char *why;
};

static void assert_bad_frame_drops_epoch(const struct bad_frame *b, uint64_t epoch)
{
	struct fx *f = fx_open();
	uint8_t *data = calloc(1, b->data + 1);
	char why[200];

	ck_assert_ptr_nonnull(data);
	if (epoch == 0) {
		begin(f, hello2);
	} else {
		committed_to(f, hello2, epoch - 1);
	}
	ep_begin(f, epoch);
	ep_write(f, 0, 0, 4096);
	push_disk_raw(f, b->disk, b->op, b->off, b->len, data, b->data, true);
	ep_write(f, 1, 0, 512);
	ck_assert_int_eq(ep_end(f, why, sizeof(why)), -EBADMSG);
	ck_assert_msg(strstr(why, b->why), "epoch %llu: reason '%s' lacks '%s'",
		      (unsigned long long)epoch, why, b->why);
	if (epoch) {
		assert_disks_committed(f);
		ck_assert_uint_eq(vm_json_epoch(f), epoch - 1);
	} else {
		ck_assert(!f->rp.synced);
		/* Frames after the bad one are not applied either. */
		assert_file(f, "disk-1.sync", f->disk[1], disk_size[1]);
	}
	free(data);
	fx_close(f);
}

START_TEST(test_bad_disk_frames_drop_the_epoch)
{
	static const struct bad_frame bad[] = {
		{ 2, DISK_OP_WRITE, 0, 512, 512, "unknown disk 2 (the HELLO lists 2)" },
		{ 0xffffffffu, DISK_OP_TRIM, 0, 512, 0, "unknown disk 4294967295" },
		{ 0, DISK_OP_WRITE, 65536 - 511, 512, 512, "beyond disk 0 (65536 bytes)" },
		{ 1, DISK_OP_WRITE_ZEROES, 8192, 1, 0, "beyond disk 1 (8192 bytes)" },
		{ 1, DISK_OP_TRIM, 4096, UINT64_MAX - 4095, 0, "malformed DISK frame 2" },
		{ 1, DISK_OP_TRIM, 4096, UINT64_MAX - 4096, 0, "beyond disk 1" },
		{ 0, 9, 0, 512, 0, "malformed DISK frame 2" },
		{ 0, DISK_OP_WRITE, 0, 1024, 512, "malformed DISK frame 2" },
		{ 0, DISK_OP_WRITE, 0, PROTO_DISK_MAX_WRITE + 512, PROTO_DISK_MAX_WRITE + 512,
		  "malformed DISK frame 2" },
		{ 0, DISK_OP_FLUSH, 0, 512, 0, "malformed DISK frame 2" },
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_bad_frame_drops_epoch(&bad[i], 2);
		assert_bad_frame_drops_epoch(&bad[i], 0);
	}
}
END_TEST

/* A short DISK payload (not even a header) is malformed too. */
START_TEST(test_short_disk_frame_drops_the_epoch)
{
	struct fx *f = fx_open();
	char why[200];

	committed_to(f, hello2, 1);
	ep_begin(f, 2);
	push_frame(f, FRAME_DISK, (const uint8_t *)"\0\0\0\0\0\0\0\1", 8, true);
	ck_assert_int_eq(ep_end(f, why, sizeof(why)), -EBADMSG);
	ck_assert_msg(strstr(why, "malformed DISK frame 1"), "why: %s", why);
	assert_disks_committed(f);
	fx_close(f);
}
END_TEST

/* ---- crash safety ---- */

/* The journal of epoch N with ops, as commit() writes it. */
struct jbuild {
	struct journal_disk_op ops[8];
	uint8_t data[16384];
	uint64_t nops, ndata;
	char vm_json[1024];
	char dev[32];
};

static void jb_write(struct fx *f, struct jbuild *b, uint32_t disk, uint64_t off, uint64_t len)
{
	ck_assert_uint_lt(b->nops, 8);
	ck_assert_uint_le(b->ndata + len, sizeof(b->data));
	b->ops[b->nops++] = (struct journal_disk_op){ disk, DISK_OP_WRITE, off, len };
	fill(f, b->data + b->ndata, len);
	memcpy(f->pend[disk] + off, b->data + b->ndata, len);
	b->ndata += len;
}

static void jb_op(struct fx *f, struct jbuild *b, uint32_t disk, uint32_t op, uint64_t off,
		  uint64_t len)
{
	ck_assert_uint_lt(b->nops, 8);
	b->ops[b->nops++] = (struct journal_disk_op){ disk, op, off, len };
	if (op != DISK_OP_FLUSH)
		memset(f->pend[disk] + off, 0, len);
}

static struct journal_view jb_view(struct jbuild *b, uint64_t epoch, bool promote)
{
	snprintf(b->vm_json, sizeof(b->vm_json), "{ \"vm\": %s, \"epoch\": %llu }", hello2,
		 (unsigned long long)epoch);
	snprintf(b->dev, sizeof(b->dev), "QEVM of %llu", (unsigned long long)epoch);
	return (struct journal_view){
		.epoch = epoch, .promote = promote,
		.devstate = (const uint8_t *)b->dev, .devstate_len = strlen(b->dev),
		.vm_json = b->vm_json, .vm_json_len = strlen(b->vm_json),
		.ndisks = NDISKS, .ndisk_ops = b->nops, .disk_ops = b->ops,
		.disk_data = b->data, .disk_data_len = b->ndata,
	};
}

/* Killed after the commit point, with the apply cut off after k of its
 * ops (the first k written into the .img, the rest not): recovery gives
 * exactly epoch N, for every k, and replaying again changes nothing. */
START_TEST(test_killed_mid_apply_recovers_exactly_epoch_n)
{
	for (uint64_t k = 0; k <= 5; k++) {
		struct fx *f = fx_open();
		struct jbuild *b = calloc(1, sizeof(*b));
		struct journal_view j;
		char err[256], path[PATH_MAX];
		const uint8_t *data;

		ck_assert_ptr_nonnull(b);
		committed_to(f, hello2, 2);
		ep_begin(f, 3);
		jb_write(f, b, 0, 0, 8192);
		jb_op(f, b, 0, DISK_OP_TRIM, 4096, 2048);
		jb_write(f, b, 0, 5000, 300);
		jb_op(f, b, 1, DISK_OP_WRITE_ZEROES, 0, 4096);
		jb_write(f, b, 1, 1024, 512);
		j = jb_view(b, 3, false);
		ck_assert_int_eq(journal_write(f->dir, &j), 0);
		/* The interrupted apply: its first k ops reached the disks. */
		data = b->data;
		for (uint64_t i = 0; i < k; i++) {
			int fd;
			ck_assert_int_eq(diskfile_path(f->dir, b->ops[i].disk, false, path), 0);
			fd = open(path, O_RDWR);
			ck_assert_int_ge(fd, 0);
			ck_assert_int_eq(diskfile_apply(fd, disk_size[b->ops[i].disk], b->ops[i].op,
							b->ops[i].offset, b->ops[i].length,
							b->ops[i].op == DISK_OP_WRITE ? data : NULL), 0);
			if (b->ops[i].op == DISK_OP_WRITE)
				data += b->ops[i].length;
			close(fd);
		}
		replica_end_session(&f->rp);
		ck_assert_int_eq(replica_recover(f->dir, err, sizeof(err)), 1);
		memcpy(f->disk[0], f->pend[0], disk_size[0]);
		memcpy(f->disk[1], f->pend[1], disk_size[1]);
		assert_disks_committed(f);
		ck_assert_uint_eq(vm_json_epoch(f), 3);
		ck_assert(!exists(f, "journal"));
		/* Replaying the same journal once more gives the same disks. */
		ck_assert_int_eq(journal_write(f->dir, &j), 0);
		ck_assert_int_eq(replica_recover(f->dir, err, sizeof(err)), 1);
		assert_disks_committed(f);
		free(b);
		fx_close(f);
	}
}
END_TEST

/* Killed before the commit point: exactly epoch N-1. */
START_TEST(test_killed_before_commit_point_keeps_epoch_n_minus_1)
{
	struct fx *f = fx_open();
	struct jbuild *b = calloc(1, sizeof(*b));
	struct journal_view j;
	char err[256], from[PATH_MAX], to[PATH_MAX];

	ck_assert_ptr_nonnull(b);
	committed_to(f, hello2, 2);
	ep_begin(f, 3);
	jb_write(f, b, 0, 0, 4096);
	j = jb_view(b, 3, false);
	ck_assert_int_eq(journal_write(f->dir, &j), 0);
	/* As if the rename had not happened yet. */
	ck_assert_int_eq(rename(path_of(f, "journal", from), path_of(f, "journal.tmp", to)), 0);
	replica_end_session(&f->rp);
	ck_assert_int_eq(replica_recover(f->dir, err, sizeof(err)), 0);
	assert_disks_committed(f);
	ck_assert_uint_eq(vm_json_epoch(f), 2);
	free(b);
	fx_close(f);
}
END_TEST

/* Killed in the middle of the first commit's renames (ram.sync already
 * ram, disk-0.sync already disk-0.img, disk-1.sync not yet): the replay
 * writes each disk's ops into whichever file it now is, and finishes. */
START_TEST(test_killed_between_promotions_recovers_first_commit)
{
	struct fx *f = fx_open();
	struct jbuild *b = calloc(1, sizeof(*b));
	struct journal_view j;
	char err[256], from[PATH_MAX], to[PATH_MAX];

	ck_assert_ptr_nonnull(b);
	begin(f, hello2);
	sync_disks(f);
	ep_begin(f, 1);
	jb_write(f, b, 0, 512, 1024);
	jb_write(f, b, 1, 0, 512);
	j = jb_view(b, 1, true);
	ck_assert_int_eq(journal_write(f->dir, &j), 0);
	/* The agent dies: its session's files stay as they are. */
	f->rp.syncing = false;
	replica_end_session(&f->rp);
	ck_assert_int_eq(rename(path_of(f, "ram.sync", from), path_of(f, "ram", to)), 0);
	ck_assert_int_eq(rename(path_of(f, "disk-0.sync", from), path_of(f, "disk-0.img", to)), 0);
	ck_assert_int_eq(replica_recover(f->dir, err, sizeof(err)), 1);
	memcpy(f->disk[0], f->pend[0], disk_size[0]);
	memcpy(f->disk[1], f->pend[1], disk_size[1]);
	assert_disks_committed(f);
	ck_assert_uint_eq(vm_json_epoch(f), 1);
	free(b);
	fx_close(f);
}
END_TEST

/* Applying fails after the disks were written (devstate cannot be
 * replaced): committed in the journal, finished by recovery. */
START_TEST(test_apply_failure_after_commit_point_is_replayed)
{
	struct fx *f = fx_open();
	char why[200], path[PATH_MAX], err[256];

	committed_to(f, hello2, 1);
	ck_assert_int_eq(mkdir(path_of(f, "devstate.tmp", path), 0700), 0);
	ep_begin(f, 2);
	ep_write(f, 0, 4096, 4096);
	ep_op(f, 1, DISK_OP_TRIM, 0, 4096);
	ck_assert_msg(ep_end(f, why, sizeof(why)) == 0, "epoch 2: %s", why);
	ck_assert(exists(f, "journal"));
	ck_assert_uint_eq(vm_json_epoch(f), 1);
	ck_assert_int_lt(replica_recover(f->dir, err, sizeof(err)), 0);
	ck_assert_int_eq(rmdir(path), 0);
	ck_assert_int_eq(replica_recover(f->dir, err, sizeof(err)), 1);
	assert_disks_committed(f);
	ck_assert_uint_eq(vm_json_epoch(f), 2);
	fx_close(f);
}
END_TEST

/* A damaged disk record or disk data: the journal is refused, the disks
 * stay at N-1. */
START_TEST(test_damaged_journal_with_disk_ops_is_refused)
{
	static const long where[] = { 56 + 4, 56 + 3 * 24 + 10, -20 };
	for (size_t w = 0; w < sizeof(where) / sizeof(where[0]); w++) {
		struct fx *f = fx_open();
		struct jbuild *b = calloc(1, sizeof(*b));
		struct journal_view j;
		char err[256], path[PATH_MAX];
		FILE *jf;

		ck_assert_ptr_nonnull(b);
		committed_to(f, hello2, 1);
		ep_begin(f, 2);
		jb_write(f, b, 0, 0, 4096);
		jb_op(f, b, 1, DISK_OP_WRITE_ZEROES, 0, 512);
		jb_write(f, b, 1, 512, 512);
		j = jb_view(b, 2, false);
		ck_assert_int_eq(journal_write(f->dir, &j), 0);
		jf = fopen(path_of(f, "journal", path), "r+");
		ck_assert_ptr_nonnull(jf);
		fseek(jf, where[w], where[w] < 0 ? SEEK_END : SEEK_SET);
		{
			int c = fgetc(jf);
			fseek(jf, -1, SEEK_CUR);
			fputc(c ^ 0x10, jf);
		}
		fclose(jf);
		replica_end_session(&f->rp);
		ck_assert_int_lt(replica_recover(f->dir, err, sizeof(err)), 0);
		ck_assert_msg(strstr(err, "damaged"), "err: '%s'", err);
		assert_disks_committed(f);
		ck_assert_uint_eq(vm_json_epoch(f), 1);
		free(b);
		fx_close(f);
	}
}
END_TEST

/* A version-1 journal (before disks), left by an older agent, replays. */
START_TEST(test_version_1_journal_still_replays)
{
	struct fx *f = fx_open();
	char vm[1024], dev[] = "QEVM v1", path[PATH_MAX], err[256];
	uint8_t page[4096];
	uint64_t idx = 2, hdr[4];
	uint32_t magic_flags[2] = { 0x314a4d52u, 0 }, crc;
	size_t len;
	uint8_t *ram;
	FILE *jf;

	committed_to(f, hello2, 1);
	snprintf(vm, sizeof(vm), "{ \"vm\": %s, \"epoch\": 2 }", hello2);
	fill(f, page, sizeof(page));
	hdr[0] = 2;            /* epoch */
	hdr[1] = 1;            /* npages */
	hdr[2] = strlen(dev);
	hdr[3] = strlen(vm);
	jf = fopen(path_of(f, "journal", path), "w");
	ck_assert_ptr_nonnull(jf);
	fwrite(magic_flags, sizeof(magic_flags), 1, jf);
	fwrite(hdr, 8, 4, jf);
	fwrite(&idx, 8, 1, jf);
	fwrite(page, sizeof(page), 1, jf);
	fwrite(dev, strlen(dev), 1, jf);
	fwrite(vm, strlen(vm), 1, jf);
	crc = crc32c(0, magic_flags, sizeof(magic_flags));
	crc = crc32c(crc, hdr, 32);
	crc = crc32c(crc, &idx, 8);
	crc = crc32c(crc, page, sizeof(page));
	crc = crc32c(crc, dev, strlen(dev));
	crc = crc32c(crc, vm, strlen(vm));
	fwrite(&crc, 4, 1, jf);
	fclose(jf);
	replica_end_session(&f->rp);
	ck_assert_msg(replica_recover(f->dir, err, sizeof(err)) == 1, "err: %s", err);
	ck_assert_uint_eq(vm_json_epoch(f), 2);
	ram = slurp(f, "ram", &len);
	ck_assert_ptr_nonnull(ram);
	ck_assert_mem_eq(ram + 2 * 4096, page, 4096);
	free(ram);
	assert_disks_committed(f);
	fx_close(f);
}
END_TEST

/* ---- delta resync: the base of a disk's initial copy ---- */

#define DELTA_KEYS ",\"ram_delta_seed\":\"00000000000000aa\",\"disk_hash_chunk\":"

static char *delta_hello(const char *hello, const char *chunk)
{
	char *out;

	/* the HELLO without its closing brace, then the delta's keys */
	ck_assert_int_gt(asprintf(&out, "%.*s" DELTA_KEYS "%s}", (int)strlen(hello) - 1, hello,
				  chunk), 0);
	return out;
}

/* A new session that asks for it starts each disk's copy from its
 * committed replica: disk-N.sync becomes a copy of disk-N.img as the steps
 * hash it, the hashes are block_hash of its chunks with the HELLO's seed,
 * and the rest of the session commits as any other. */
START_TEST(test_delta_base_is_the_committed_disk)
{
	struct fx *f = fx_open();
	char *hello = delta_hello(hello2, "65536");
	uint8_t want[PAGE_HASH_SIZE];

	committed_to(f, hello2, 2);
	begin(f, hello);
	ck_assert(replica_disk_base_any(&f->rp));
	for (unsigned i = 0; i < NDISKS; i++) {
		const uint8_t *hashes;
		uint64_t first;
		uint32_t len, disk, n;
		uint8_t *p;

		ck_assert_uint_eq(f->rp.disk_base_chunks[i], 1); /* 64 KiB and 8 KiB, one chunk */
		ck_assert_ptr_null(replica_disk_hashes(&f->rp, i, 0, 2, &len)); /* past the end */
		ck_assert_ptr_null(replica_disk_hashes(&f->rp, i, 1, 1, &len));
		p = replica_disk_hashes(&f->rp, i, 0, 1, &len);
		ck_assert_ptr_nonnull(p);
		ck_assert_int_eq(proto_parse_disk_hashes(p, len, &disk, &first, &n, &hashes), 0);
		ck_assert_uint_eq(disk, i);
		ck_assert_uint_eq(first, 0);
		ck_assert_uint_eq(n, 1);
		block_hash(f->disk[i], disk_size[i], 0xaa, want);
		ck_assert(!memcmp(hashes, want, PAGE_HASH_SIZE));
		free(p);
	}
	ck_assert_ptr_null(replica_disk_hashes(&f->rp, NDISKS, 0, 1, &(uint32_t){ 0 }));
	/* the copies start from the replica: only a change goes out */
	assert_file(f, "disk-0.sync", f->disk[0], disk_size[0]);
	assert_file(f, "disk-1.sync", f->disk[1], disk_size[1]);
	ep_begin(f, 0);
	ep_write(f, 0, 4096, 512);
	ep_end_ok(f);
	ep_begin(f, 1);
	ep_write(f, 1, 0, 512);
	ep_end_ok(f);
	assert_disks_committed(f);
	free(hello);
	fx_close(f);
}
END_TEST

/* Chunks of 4 KiB: 16 and 2 of them, each hashed on its own. */
START_TEST(test_delta_base_small_chunks)
{
	struct fx *f = fx_open();
	char *hello = delta_hello(hello2, "4096");
	uint8_t want[PAGE_HASH_SIZE];
	const uint8_t *hashes;
	uint64_t first;
	uint32_t len, disk, n;
	uint8_t *p;

	committed_to(f, hello2, 1);
	begin(f, hello);
	ck_assert_uint_eq(f->rp.disk_base_chunks[0], 16);
	ck_assert_uint_eq(f->rp.disk_base_chunks[1], 2);
	p = replica_disk_hashes(&f->rp, 0, 0, 10, &len);  /* two steps */
	ck_assert_ptr_nonnull(p);
	free(p);
	p = replica_disk_hashes(&f->rp, 0, 10, 6, &len);
	ck_assert_ptr_nonnull(p);
	ck_assert_int_eq(proto_parse_disk_hashes(p, len, &disk, &first, &n, &hashes), 0);
	ck_assert_uint_eq(first, 10);
	ck_assert_uint_eq(n, 6);
	for (unsigned c = 0; c < 6; c++) {
		block_hash(f->disk[0] + (10 + c) * 4096, 4096, 0xaa, want);
		ck_assert(!memcmp(hashes + c * PAGE_HASH_SIZE, want, PAGE_HASH_SIZE));
	}
	free(p);
	assert_file(f, "disk-0.sync", f->disk[0], disk_size[0]);
	free(hello);
	fx_close(f);
}
END_TEST

/* No base: a chunk size not offered, no seed, a disk of another size, or
 * no committed disk at all. */
/* A HELLO asking for a delta resync of hello2's disks, from session
 * `session`, offering to resume `resume` (a JSON object, or NULL). */
static char *resume_hello(const char *session, const char *resume)
{
	char *base = delta_hello(hello2, "4096"), *out;

	ck_assert_int_gt(asprintf(&out, "%.*s,\"disk_session\":\"%s\"%s%s}",
				  (int)strlen(base) - 1, base, session,
				  resume ? ",\"disk_resume\":" : "", resume ? resume : ""), 0);
	free(base);
	return out;
}

static bool resumes(struct fx *f, const char *resume)
{
	char *hello = resume_hello("2222222222222222", resume);

	begin(f, hello);
	free(hello);
	return f->rp.disk_resume;
}

/* The backup resumes only the replica the primary last had committed:
 * that session's, at the offered epoch or later, with every disk a base
 * and the HELLO's disks. */
START_TEST(test_disk_resume_only_of_the_session_that_committed)
{
	struct fx *f = fx_open();
	char *first = resume_hello("1111111111111111", NULL);

	committed_to(f, first, 3);
	ck_assert(resumes(f, "{\"session\":\"1111111111111111\",\"epoch\":3}"));
	ck_assert_msg(resumes(f, "{\"session\":\"1111111111111111\",\"epoch\":2}"),
		      "the epoch in flight committed here, its ack lost: still this lineage");
	ck_assert(!resumes(f, "{\"session\":\"1111111111111111\",\"epoch\":4}"));
	ck_assert(!resumes(f, "{\"session\":\"3333333333333333\",\"epoch\":3}"));
	ck_assert(!resumes(f, "{\"session\":1,\"epoch\":3}"));
	ck_assert(!resumes(f, "{\"session\":\"1111111111111111\",\"epoch\":-1}"));
	ck_assert(!resumes(f, "true"));
	ck_assert(!resumes(f, NULL));
	{
		char *one = NULL, *base = delta_hello(hello1, "4096");

		ck_assert_int_gt(asprintf(&one, "%.*s,\"disk_resume\":{\"session\":"
					  "\"1111111111111111\",\"epoch\":3}}",
					  (int)strlen(base) - 1, base), 0);
		begin(f, one);
		ck_assert_msg(!f->rp.disk_resume, "resumed with another set of disks");
		free(one);
		free(base);
	}
	begin(f, hello2); /* no delta asked: no base to resume from */
	ck_assert(!f->rp.disk_resume);
	/* the primary detached on purpose (a GOODBYE, as before its own
	 * resync): the images are still the committed ones */
	replica_mark_restored(f->rp.dir);
	ck_assert(resumes(f, "{\"session\":\"1111111111111111\",\"epoch\":3}"));
	free(first);
	fx_close(f);
}
END_TEST

START_TEST(test_delta_base_only_where_it_fits)
{
	struct fx *f = fx_open();
	char *other_chunk = delta_hello(hello2, "12288");
	char *big_chunk = delta_hello(hello2, "2097152");
	char *bigger = delta_hello(HELLO_HEAD ",\"disks\":[{\"id\":\"drive0\",\"size\":131072},"
				   "{\"id\":\"drive1\",\"size\":8192}]}", "65536");
	char *fresh = delta_hello(hello2, "65536");
	uint32_t len;

	begin(f, fresh); /* nothing committed yet */
	ck_assert(!replica_disk_base_any(&f->rp));
	ck_assert_ptr_null(replica_disk_hashes(&f->rp, 0, 0, 1, &len));
	sync_disks(f);
	ep_begin(f, 1);
	ep_end_ok(f);
	begin(f, hello2);           /* no seed, no chunk size */
	ck_assert(!replica_disk_base_any(&f->rp));
	begin(f, other_chunk);
	ck_assert(!replica_disk_base_any(&f->rp));
	begin(f, big_chunk);
	ck_assert(!replica_disk_base_any(&f->rp));
	begin(f, bigger);           /* disk 0 grew: a full copy of it; disk 1 as it was */
	ck_assert_uint_eq(f->rp.disk_base_chunks[0], 0);
	ck_assert_uint_eq(f->rp.disk_base_chunks[1], 1);
	replica_end_session(&f->rp);
	ck_assert(!replica_disk_base_any(&f->rp));
	/* a base that failed to read: full copies until a commit */
	f->rp.base_unusable = true;
	begin(f, fresh);
	ck_assert(!replica_disk_base_any(&f->rp));
	ck_assert(!f->rp.delta);
	memset(f->disk[0], 0, disk_size[0]);
	memset(f->disk[1], 0, disk_size[1]);
	sync_disks(f);
	ep_begin(f, 1);
	ep_end_ok(f);
	ck_assert(!f->rp.base_unusable);
	begin(f, fresh);
	ck_assert(replica_disk_base_any(&f->rp));
	free(other_chunk);
	free(big_chunk);
	free(bigger);
	free(fresh);
	fx_close(f);
}
END_TEST

/* ---- what a restore reads ---- */

START_TEST(test_load_info_lists_the_disks)
{
	struct fx *f = fx_open();
	struct replica_info info;
	char want[PATH_MAX];

	committed_to(f, hello2, 1);
	ck_assert_int_eq(replica_load_info(f->dir, &info), 0);
	ck_assert_uint_eq(info.ndisks, 2);
	for (unsigned i = 0; i < 2; i++) {
		snprintf(want, sizeof(want), "%s/disk-%u.img", f->dir, i);
		ck_assert_str_eq(info.disks[i].path, want);
		ck_assert_uint_eq(info.disks[i].size, disk_size[i]);
		ck_assert_int_eq(access(info.disks[i].path, R_OK), 0);
	}
	ck_assert_str_eq(info.disks[0].id, "drive0");
	ck_assert_str_eq(info.disks[0].node, "disk0");
	ck_assert_str_eq(info.disks[1].id, "drive1");
	ck_assert_ptr_null(info.disks[1].node);
	replica_info_free(&info);
	fx_close(f);
}
END_TEST

#define ADD(s, t) tmp_fixture_add((s), tmp_setup, #t, t, 30)

static Suite *replica_disk_suite(void)
{
	Suite *s = suite_create("replica_disk");

	ADD(s, test_hello_bad_disks_are_refused);
	ADD(s, test_hello_with_disks_creates_sparse_sync_files);
	ADD(s, test_initial_copy_is_promoted_only_at_first_commit);
	ADD(s, test_new_session_sync_keeps_committed_disks_until_its_commit);
	ADD(s, test_first_commit_syncs_the_initial_copy_before_its_commit_point);
	ADD(s, test_initial_copy_that_fails_to_sync_is_not_committed);
	ADD(s, test_killed_during_sync_recovery_drops_sync_files);
	ADD(s, test_session_with_fewer_disks_drops_the_others_at_commit);
	ADD(s, test_dropped_epoch_writes_never_reach_the_disk);
	ADD(s, test_unfinished_epoch_leaves_disks_alone);
	ADD(s, test_overlapping_ops_apply_in_order);
	ADD(s, test_zeroes_and_trim_read_back_as_zeroes);
	ADD(s, test_bad_disk_frames_drop_the_epoch);
	ADD(s, test_short_disk_frame_drops_the_epoch);
	ADD(s, test_killed_mid_apply_recovers_exactly_epoch_n);
	ADD(s, test_killed_before_commit_point_keeps_epoch_n_minus_1);
	ADD(s, test_killed_between_promotions_recovers_first_commit);
	ADD(s, test_apply_failure_after_commit_point_is_replayed);
	ADD(s, test_damaged_journal_with_disk_ops_is_refused);
	ADD(s, test_version_1_journal_still_replays);
	ADD(s, test_load_info_lists_the_disks);
	ADD(s, test_delta_base_is_the_committed_disk);
	ADD(s, test_delta_base_small_chunks);
	ADD(s, test_delta_base_only_where_it_fits);
	ADD(s, test_disk_resume_only_of_the_session_that_committed);
	ADD(s, test_verify_compares_the_committed_disk_blocks);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(replica_disk_suite());
	int failed;

	/* Some tests fail commits on purpose: keep their error lines quiet. */
	log_set_level(LOG_CRIT);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
