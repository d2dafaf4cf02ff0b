/* What a primary may make the backup hold (backup-agent/replica.c, pair.c,
 * diskfile.c): the [backup] bounds and the free space, checked at HELLO
 * before anything in the state dir changes; epochs over max-epoch-mb
 * dropped; staging memory given back after each epoch and each session;
 * zeroes and trims of a whole (huge, sparse) disk in O(1) memory; and the
 * state dir pinned to one VM and one peer until --forget-pair. Every
 * refusal leaves the committed replica byte for byte as it was. */
#include "../backup-agent/pair.h"
#include "../backup-agent/replica.h"
#include "crc32c.h"
#include "log.h"
#include "proto.h"
#include "tmp_fixture.h"

#include <check.h>
#include <dirent.h>
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
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#define PAGE     PROTO_PAGE_SIZE
#define NPAGES   512u                 /* 2 MiB of RAM: epochs over 1 MiB */
#define RAM_SIZE ((uint64_t)NPAGES * PAGE)
#define TIB      (1ull << 40)

#define HELLO_FMT                                                                      \
	"{\"protocol\":1,\"name\":\"%s\",\"ram_size\":%llu,\"page_size\":4096,"        \
	"\"ram_backend\":\"ram0\",\"machine_type\":\"pc-i440fx-7.2\","                 \
	"\"qemu_argv\":[\"qemu-system-x86_64\"%s]%s}"

/* ---- fixture ---- */

TMP_FIXTURE("check_replica_bounds")

struct fx {
	char dir[128];
	struct replica rp;
	uint64_t epoch;
	uint64_t pages, dev;     /* the tally of the epoch being sent */
	uint32_t frames, crc;
	uint32_t seed;
};

static struct fx *fx_open(void)
{
	static int n;
	struct fx *f = calloc(1, sizeof(*f));

	ck_assert_ptr_nonnull(f);
	snprintf(f->dir, sizeof(f->dir), "%s/state%d", g_tmp, n++);
	replica_init(&f->rp, f->dir);
	f->seed = 0x1234567u;
	return f;
}

static void fx_close(struct fx *f)
{
	replica_free(&f->rp);
	if (access(f->dir, F_OK) == 0)
		ck_assert_int_eq(nftw(f->dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS), 0);
	free(f);
}

/* A HELLO: VM name, ram_size, extra qemu_argv ("" or ",\"-uuid\",\"U\"")
 * and extra keys ("" or ",\"disks\":[...]"). */
static char *hello(const char *name, uint64_t ram, const char *argv, const char *extra)
{
	char *s;

	ck_assert_int_gt(asprintf(&s, HELLO_FMT, name, (unsigned long long)ram, argv, extra), 0);
	return s;
}

static int begin_rc(struct fx *f, const char *h, const char *peer,
		    const struct replica_limits *lim, char *err, size_t errlen)
{
	err[0] = 0;
	return replica_begin_session(&f->rp, h, peer, lim, err, errlen);
}

static void begin(struct fx *f, const char *h, const char *peer, const struct replica_limits *lim)
{
	char err[256];

	ck_assert_msg(begin_rc(f, h, peer, lim, err, sizeof(err)) == 0, "HELLO refused: %s", err);
}

/* ---- frames ---- */

static void push(struct fx *f, unsigned type, const uint8_t *payload, size_t len)
{
	uint8_t raw[PROTO_HDR_SIZE];
	struct iovec iov = { .iov_base = (void *)payload, .iov_len = len };
	struct frame_hdr h;

	proto_encode_hdr(raw, type, f->epoch, &iov, 1);
	ck_assert_int_eq(proto_decode_hdr(raw, &h), 0);
	f->frames++;
	f->crc = proto_epoch_crc_add(f->crc, h.payload_crc);
	replica_add_frame(&f->rp, &h, payload, true);
}

static void ep_begin(struct fx *f, uint64_t epoch)
{
	f->epoch = epoch;
	f->pages = f->dev = 0;
	f->frames = f->crc = 0;
}

/* Pages first..first+n-1 (n <= 256), fresh random content. */
static void ep_pages(struct fx *f, uint64_t first, uint32_t n)
{
	size_t len = 8 + (size_t)n * (8 + PAGE);
	uint8_t *p = malloc(len);
	uint32_t be32 = htobe32(n);

	ck_assert_ptr_nonnull(p);
	memcpy(p, &be32, 4);
	memset(p + 4, 0, 4);
	for (uint32_t i = 0; i < n; i++) {
		uint64_t be = htobe64(first + i);
		memcpy(p + 8 + 8 * i, &be, 8);
	}
	for (size_t i = 8 + 8 * (size_t)n; i < len; i++) {
		f->seed ^= f->seed << 13;
		f->seed ^= f->seed >> 17;
		f->seed ^= f->seed << 5;
		p[i] = (uint8_t)f->seed;
	}
	push(f, FRAME_PAGES, p, len);
	f->pages += n;
	free(p);
}

static void ep_disk(struct fx *f, uint32_t op, uint64_t off, uint64_t len, const uint8_t *data)
{
	struct disk_op d = { .disk = 0, .op = op, .offset = off, .length = len };
	size_t dlen = op == DISK_OP_WRITE ? len : 0;
	uint8_t *p = malloc(PROTO_DISK_HDR_SIZE + dlen);

	ck_assert_ptr_nonnull(p);
	proto_encode_disk_hdr(p, &d);
	if (dlen)
		memcpy(p + PROTO_DISK_HDR_SIZE, data, dlen);
	push(f, FRAME_DISK, p, PROTO_DISK_HDR_SIZE + dlen);
	free(p);
}

static int ep_end(struct fx *f, char *why, size_t whylen)
{
	uint8_t buf[PROTO_EPOCH_END_SIZE], raw[PROTO_HDR_SIZE];
	struct iovec iov = { .iov_base = buf, .iov_len = sizeof(buf) };
	struct epoch_end e;
	struct frame_hdr h;

	if (f->epoch) {
		static const char dev[] = "QEVM device state";
		push(f, FRAME_DEVSTATE, (const uint8_t *)dev, sizeof(dev));
		f->dev += sizeof(dev);
	}
	e = (struct epoch_end){ .pages = f->pages, .devstate_bytes = f->dev,
				.frames = f->frames, .epoch_crc = f->crc };
	proto_encode_epoch_end(buf, &e);
	proto_encode_hdr(raw, FRAME_EPOCH_END, f->epoch, &iov, 1);
	ck_assert_int_eq(proto_decode_hdr(raw, &h), 0);
	why[0] = 0;
	return replica_end_epoch(&f->rp, &h, buf, true, why, whylen);
}

static void ep_end_ok(struct fx *f)
{
	char why[200];

	ck_assert_msg(ep_end(f, why, sizeof(why)) == 0, "epoch %llu refused: %s",
		      (unsigned long long)f->epoch, why);
}

/* HELLO, the initial copy of all RAM, and epoch 1 with a few pages. */
static void committed(struct fx *f, const char *h, const char *peer,
		      const struct replica_limits *lim)
{
	begin(f, h, peer, lim);
	ep_begin(f, 0);
	for (uint64_t p = 0; p < NPAGES; p += 256)
		ep_pages(f, p, 256);
	ep_end_ok(f);
	ep_begin(f, 1);
	ep_pages(f, 7, 3);
	ep_end_ok(f);
	ck_assert(f->rp.session_committed);
}

/* ---- the state dir, byte for byte ---- */

/* Every entry's name, type, size and content checksum, sorted: equal
 * snapshots mean nothing was created, removed, truncated or written. */
static char *snapshot(const struct fx *f)
{
	struct dirent **ents;
	char *out = NULL;
	size_t len = 0;
	FILE *m = open_memstream(&out, &len);
	int n = scandir(f->dir, &ents, NULL, alphasort);

	ck_assert_int_ge(n, 0);
	for (int i = 0; i < n; i++) {
		char p[PATH_MAX], buf[65536];
		uint32_t crc = 0;
		struct stat st;
		ssize_t r;
		int fd;

		snprintf(p, sizeof(p), "%s/%s", f->dir, ents[i]->d_name);
		ck_assert_int_eq(lstat(p, &st), 0);
		if (S_ISREG(st.st_mode) && (fd = open(p, O_RDONLY)) >= 0) {
			while ((r = read(fd, buf, sizeof(buf))) > 0)
				crc = crc32c(crc, buf, (size_t)r);
			close(fd);
		}
		fprintf(m, "%s %o %lld %08x\n", ents[i]->d_name, st.st_mode,
			(long long)st.st_size, crc);
		free(ents[i]);
	}
	free(ents);
	fclose(m);
	return out;
}

/* The HELLO is refused with want in the reason, and the state dir has
 * not changed at all. */
static void assert_refused_intact(struct fx *f, const char *h, const char *peer,
				  const struct replica_limits *lim, const char *want)
{
	char err[256], *before, *after;
	int rc;

	replica_end_session(&f->rp);
	before = snapshot(f);
	rc = begin_rc(f, h, peer, lim, err, sizeof(err));
	ck_assert_int_lt(rc, 0);
	ck_assert_msg(strstr(err, want), "reason '%s' lacks '%s'", err, want);
	ck_assert_ptr_null(f->rp.hello);
	after = snapshot(f);
	ck_assert_str_eq(after, before);
	free(before);
	free(after);
}

/* ---- bounds at HELLO ---- */

START_TEST(test_ram_over_max_ram_mb_is_refused)
{
	struct fx *f = fx_open();
	struct replica_limits lim;
	char *small = hello("t", RAM_SIZE, "", ""), *big = hello("t", 1ull << 40, "", "");

	replica_default_limits(&lim);
	committed(f, small, NULL, NULL);
	/* the default: 64 GiB */
	assert_refused_intact(f, big, NULL, NULL, "ram_size 1048576 MiB exceeds max-ram-mb 65536");
	lim.max_ram_bytes = 1ull << 20;
	assert_refused_intact(f, small, NULL, &lim, "ram_size 2 MiB exceeds max-ram-mb 1");
	lim.max_ram_bytes = RAM_SIZE;
	begin(f, small, NULL, &lim);  /* at the bound: fine */
	free(small);
	free(big);
	fx_close(f);
}
END_TEST

START_TEST(test_disk_over_max_disk_gb_is_refused)
{
	struct fx *f = fx_open();
	struct replica_limits lim;
	char *one = hello("t", RAM_SIZE, "", ",\"disks\":[{\"id\":\"d0\",\"size\":1048576}]");
	char *huge = hello("t", RAM_SIZE, "",
			   ",\"disks\":[{\"id\":\"d0\",\"size\":1048576},"
			   "{\"id\":\"d1\",\"size\":8796093022208}]");  /* 8 TiB */

	replica_default_limits(&lim);
	committed(f, one, NULL, NULL);
	assert_refused_intact(f, huge, NULL, NULL, "disk d1: size 8192 GiB exceeds max-disk-gb 4096");
	lim.max_disk_bytes = 1ull << 30;
	assert_refused_intact(f, huge, NULL, &lim, "exceeds max-disk-gb 1");
	begin(f, one, NULL, &lim);
	free(one);
	free(huge);
	fx_close(f);
}
END_TEST

/* Within every bound, but more RAM than the file system has room for. */
START_TEST(test_hello_that_does_not_fit_the_free_space_is_refused)
{
	struct fx *f = fx_open();
	struct replica_limits lim = { .max_ram_bytes = 1ull << 60, .max_disk_bytes = 1ull << 60,
				      .max_epoch_bytes = 1ull << 30 };
	char *small = hello("t", RAM_SIZE, "", ""), *big = hello("t", 1ull << 56, "", "");

	committed(f, small, NULL, NULL);
	assert_refused_intact(f, big, NULL, &lim, "MiB free; the session needs");
	free(small);
	free(big);
	fx_close(f);
}
END_TEST

/* ---- staging ---- */

START_TEST(test_epoch_over_max_epoch_mb_is_dropped)
{
	struct fx *f = fx_open();
	struct replica_limits lim;
	char why[200], *h = hello("t", RAM_SIZE, "", ""), *before, *after;

	replica_default_limits(&lim);
	lim.max_epoch_bytes = 1ull << 20;
	committed(f, h, NULL, &lim);
	before = snapshot(f);
	ep_begin(f, 2);
	ep_pages(f, 0, 256);  /* 1 MiB of pages, plus their indexes: over */
	ck_assert_int_eq(ep_end(f, why, sizeof(why)), -EBADMSG);
	ck_assert_str_eq(why, "epoch 2 stages more than max-epoch-mb 1");
	after = snapshot(f);
	ck_assert_str_eq(after, before);
	/* what staging got to before the bound stopped it, at most */
	ck_assert_uint_le(replica_staged_heap(&f->rp), REPLICA_STAGE_KEEP_BYTES + (64 << 10));
	ep_begin(f, 2);       /* a smaller epoch 2 commits */
	ep_pages(f, 0, 200);
	ep_end_ok(f);
	free(before);
	free(after);
	free(h);
	fx_close(f);
}
END_TEST

START_TEST(test_staging_memory_is_released_after_commit_and_session)
{
	struct fx *f = fx_open();
	char *h = hello("t", RAM_SIZE, "", "");

	committed(f, h, NULL, NULL);
	ep_begin(f, 2);
	for (uint64_t p = 0; p < NPAGES; p += 256)
		ep_pages(f, p, 256);
	ck_assert_uint_ge(replica_staged_heap(&f->rp), RAM_SIZE);
	ep_end_ok(f);
	/* the 2 MiB peak is not kept */
	ck_assert_uint_lt(replica_staged_heap(&f->rp), 64 << 10);
	ep_begin(f, 3);       /* a small epoch's buffers are kept for the next */
	ep_pages(f, 0, 2);
	ep_end_ok(f);
	ck_assert_uint_gt(replica_staged_heap(&f->rp), 0);
	ck_assert_uint_le(replica_staged_heap(&f->rp), REPLICA_STAGE_KEEP_BYTES);
	/* nothing at all once the session is over */
	replica_end_session(&f->rp);
	ck_assert_uint_eq(replica_staged_heap(&f->rp), 0);
	/* nor after a session ending mid-epoch */
	begin(f, h, NULL, NULL);
	ep_begin(f, 0);
	ep_pages(f, 0, 256);
	ep_end_ok(f);
	ep_begin(f, 1);
	ep_pages(f, 0, 256);
	replica_end_session(&f->rp);
	ck_assert_uint_eq(replica_staged_heap(&f->rp), 0);
	free(h);
	fx_close(f);
}
END_TEST

/* ---- zeroes and trims of a whole huge disk ---- */

static long rss_kib(void)
{
	long pages = 0, rss = 0;
	FILE *s = fopen("/proc/self/statm", "r");

	ck_assert_ptr_nonnull(s);
	ck_assert_int_eq(fscanf(s, "%ld %ld", &pages, &rss), 2);
	fclose(s);
	return rss * (sysconf(_SC_PAGESIZE) / 1024);
}

static void assert_block(const struct fx *f, const char *name, uint64_t off, uint8_t want)
{
	char p[PATH_MAX];
	uint8_t buf[4096];
	int fd;

	snprintf(p, sizeof(p), "%s/%s", f->dir, name);
	fd = open(p, O_RDONLY);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(pread(fd, buf, sizeof(buf), (off_t)off), (ssize_t)sizeof(buf));
	close(fd);
	for (size_t i = 0; i < sizeof(buf); i++)
		ck_assert_uint_eq(buf[i], want);
}

/* A 1 TiB disk zeroed and trimmed whole, in the initial copy and in a
 * committed epoch: 24 bytes each on the wire, and about as much in the
 * agent: staging and applying them must not grow with their length. */
START_TEST(test_zeroes_and_trim_of_a_whole_huge_disk_cost_no_memory)
{
	struct fx *f = fx_open();
	char *h = hello("t", RAM_SIZE, "", ",\"disks\":[{\"id\":\"d0\",\"size\":1099511627776}]");
	uint8_t data[4096];
	struct stat st;
	char p[PATH_MAX], why[200];
	long rss0;

	memset(data, 0xab, sizeof(data));
	begin(f, h, NULL, NULL);
	rss0 = rss_kib();
	ep_begin(f, 0);
	ep_disk(f, DISK_OP_WRITE, TIB - 4096, 4096, data);
	ep_disk(f, DISK_OP_WRITE, 0, 4096, data);
	ep_disk(f, DISK_OP_WRITE_ZEROES, 0, TIB / 2, NULL);  /* applied at once */
	ep_pages(f, 0, 1);
	ep_end_ok(f);
	ep_begin(f, 1);
	ep_disk(f, DISK_OP_WRITE, 8192, 4096, data);
	ep_disk(f, DISK_OP_WRITE_ZEROES, 0, TIB, NULL);
	ep_disk(f, DISK_OP_TRIM, 0, TIB, NULL);
	ep_disk(f, DISK_OP_WRITE, 4096, 4096, data);
	ep_disk(f, DISK_OP_WRITE_ZEROES, 4096, TIB - 4096, NULL);
	ep_disk(f, DISK_OP_WRITE, 12288, 4096, data);
	/* staged: the ops' 24 bytes and the WRITEs' data */
	ck_assert_uint_lt(replica_staged_heap(&f->rp), 64 << 10);
	ck_assert_msg(ep_end(f, why, sizeof(why)) == 0, "epoch 1 refused: %s", why);
	ck_assert_msg(rss_kib() - rss0 < 32 << 10, "RSS grew by %ld KiB", rss_kib() - rss0);
	snprintf(p, sizeof(p), "%s/disk-0.img", f->dir);
	ck_assert_int_eq(stat(p, &st), 0);
	ck_assert_uint_eq((uint64_t)st.st_size, TIB);
	ck_assert_uint_lt((uint64_t)st.st_blocks * 512, 1 << 20);  /* holes, not zeroes */
	assert_block(f, "disk-0.img", 0, 0);
	assert_block(f, "disk-0.img", 4096, 0);
	assert_block(f, "disk-0.img", 8192, 0);
	assert_block(f, "disk-0.img", 12288, 0xab);
	assert_block(f, "disk-0.img", TIB - 4096, 0);
	free(h);
	fx_close(f);
}
END_TEST

/* ---- the pin ---- */

#define UUID_A ",\"-uuid\",\"6f1c2d3e-0000-4000-8000-00000000000a\""
#define UUID_B ",\"-uuid\",\"6f1c2d3e-0000-4000-8000-00000000000b\""

static struct json_object *read_pin(const struct fx *f)
{
	char p[PATH_MAX];

	snprintf(p, sizeof(p), "%s/" PAIR_FILE, f->dir);
	return json_object_from_file(p);
}

static const char *pin_str(struct json_object *pin, const char *key)
{
	struct json_object *v = json_object_object_get(pin, key);

	return v ? json_object_get_string(v) : NULL;
}

START_TEST(test_pin_same_pair_accepted_others_refused_until_forgotten)
{
	struct fx *f = fx_open();
	char *a = hello("vm1", RAM_SIZE, UUID_A, ""), *b = hello("vm1", RAM_SIZE, UUID_B, "");
	char *none = hello("vm1", RAM_SIZE, "", ""), msg[PATH_MAX + 256];
	struct json_object *pin;

	committed(f, a, "psk:backup-of-vm1", NULL);
	pin = read_pin(f);
	ck_assert_ptr_nonnull(pin);
	ck_assert_str_eq(pin_str(pin, "vm_uuid"), "6f1c2d3e-0000-4000-8000-00000000000a");
	ck_assert_str_eq(pin_str(pin, "vm_name"), "vm1");
	ck_assert_str_eq(pin_str(pin, "peer"), "psk:backup-of-vm1");
	json_object_put(pin);
	/* the same pair again */
	replica_end_session(&f->rp);
	committed(f, a, "psk:backup-of-vm1", NULL);
	/* another VM (of the same name), one without a UUID, another peer, no peer */
	assert_refused_intact(f, b, "psk:backup-of-vm1", NULL, "state dir belongs to VM vm1");
	assert_refused_intact(f, none, "psk:backup-of-vm1", NULL, "state dir belongs to VM vm1");
	assert_refused_intact(f, a, "psk:intruder", NULL, "belongs to peer 'psk:backup-of-vm1'");
	assert_refused_intact(f, a, NULL, NULL, "belongs to peer 'psk:backup-of-vm1'");
	assert_refused_intact(f, a, "", NULL, "belongs to peer");
	/* the operator's reset */
	ck_assert_int_eq(pair_forget(f->dir, msg, sizeof(msg)), 1);
	ck_assert_msg(strstr(msg, "removed") && strstr(msg, "psk:backup-of-vm1"), "%s", msg);
	ck_assert_int_eq(pair_forget(f->dir, msg, sizeof(msg)), 0);
	committed(f, b, "psk:other", NULL);
	pin = read_pin(f);
	ck_assert_str_eq(pin_str(pin, "vm_uuid"), "6f1c2d3e-0000-4000-8000-00000000000b");
	ck_assert_str_eq(pin_str(pin, "peer"), "psk:other");
	json_object_put(pin);
	assert_refused_intact(f, a, "psk:other", NULL, "belongs to VM");
	free(a);
	free(b);
	free(none);
	fx_close(f);
}
END_TEST

/* A VM without a UUID is pinned by its name; a HELLO "uuid" key counts
 * over -uuid; a pin without a peer takes the first one that commits. */
START_TEST(test_pin_by_name_and_peer_added_later)
{
	struct fx *f = fx_open();
	char *plain = hello("vm1", RAM_SIZE, "", ""), *other = hello("vm2", RAM_SIZE, "", "");
	char *keyed = hello("vm1", RAM_SIZE, UUID_A, ",\"uuid\":\"u-key\"");
	struct json_object *pin;

	committed(f, plain, NULL, NULL);
	pin = read_pin(f);
	ck_assert_ptr_null(json_object_object_get(pin, "vm_uuid"));
	ck_assert_ptr_null(json_object_object_get(pin, "peer"));
	json_object_put(pin);
	assert_refused_intact(f, other, NULL, NULL, "belongs to VM vm1 (uuid none), not vm2");
	assert_refused_intact(f, keyed, NULL, NULL, "not vm1 (uuid u-key)");
	replica_end_session(&f->rp);
	committed(f, plain, "tls:CN=primary1", NULL);  /* adds the peer */
	pin = read_pin(f);
	ck_assert_str_eq(pin_str(pin, "peer"), "tls:CN=primary1");
	json_object_put(pin);
	assert_refused_intact(f, plain, "tls:CN=primary2", NULL, "belongs to peer");
	free(plain);
	free(other);
	free(keyed);
	fx_close(f);
}
END_TEST

/* A damaged pin refuses everyone until it is forgotten. */
START_TEST(test_damaged_pin_refuses_until_forgotten)
{
	struct fx *f = fx_open();
	char *h = hello("vm1", RAM_SIZE, UUID_A, ""), p[PATH_MAX], msg[PATH_MAX + 256];
	FILE *w;

	committed(f, h, NULL, NULL);
	snprintf(p, sizeof(p), "%s/" PAIR_FILE, f->dir);
	w = fopen(p, "w");
	ck_assert_ptr_nonnull(w);
	fputs("{\"vm_uuid\": tru", w);
	fclose(w);
	assert_refused_intact(f, h, NULL, NULL, "is unreadable or damaged");
	ck_assert_int_eq(pair_forget(f->dir, msg, sizeof(msg)), 1);
	committed(f, h, NULL, NULL);
	free(h);
	fx_close(f);
}
END_TEST

/* pair.json.tmp planted as a link: the pin is not written through it. */
START_TEST(test_pin_not_written_through_a_planted_link)
{
	struct fx *f = fx_open();
	char *h = hello("vm1", RAM_SIZE, UUID_A, ""), link[PATH_MAX], target[PATH_MAX];
	struct json_object *pin;

	ck_assert_int_eq(mkdir(f->dir, 0700), 0);
	snprintf(link, sizeof(link), "%s/" PAIR_FILE ".tmp", f->dir);
	snprintf(target, sizeof(target), "%s/elsewhere", g_tmp);
	ck_assert_int_eq(symlink(target, link), 0);
	committed(f, h, NULL, NULL);
	ck_assert_int_eq(access(target, F_OK), -1);
	pin = read_pin(f);
	ck_assert_ptr_nonnull(pin);
	json_object_put(pin);
	free(h);
	fx_close(f);
}
END_TEST

/* --forget-pair under a running agent (it holds the directory's lock). */
START_TEST(test_forget_refused_while_the_dir_is_locked)
{
	struct fx *f = fx_open();
	char *h = hello("vm1", RAM_SIZE, UUID_A, ""), msg[PATH_MAX + 256];
	int fd;

	committed(f, h, NULL, NULL);
	fd = open(f->dir, O_RDONLY | O_DIRECTORY);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(flock(fd, LOCK_EX | LOCK_NB), 0);
	/* flock locks belong to the open file: a second open conflicts */
	ck_assert_int_eq(pair_forget(f->dir, msg, sizeof(msg)), -EWOULDBLOCK);
	ck_assert_msg(strstr(msg, "in use"), "%s", msg);
	close(fd);
	ck_assert_int_eq(pair_forget(f->dir, msg, sizeof(msg)), 1);
	free(h);
	fx_close(f);
}
END_TEST

#define ADD(s, t) tmp_fixture_add((s), tmp_setup, #t, t, 30)

static Suite *bounds_suite(void)
{
	Suite *s = suite_create("replica_bounds");

	ADD(s, test_ram_over_max_ram_mb_is_refused);
	ADD(s, test_disk_over_max_disk_gb_is_refused);
	ADD(s, test_hello_that_does_not_fit_the_free_space_is_refused);
	ADD(s, test_epoch_over_max_epoch_mb_is_dropped);
	ADD(s, test_staging_memory_is_released_after_commit_and_session);
	ADD(s, test_zeroes_and_trim_of_a_whole_huge_disk_cost_no_memory);
	ADD(s, test_pin_same_pair_accepted_others_refused_until_forgotten);
	ADD(s, test_pin_by_name_and_peer_added_later);
	ADD(s, test_damaged_pin_refuses_until_forgotten);
	ADD(s, test_pin_not_written_through_a_planted_link);
	ADD(s, test_forget_refused_while_the_dir_is_locked);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(bounds_suite());
	int failed;

	log_set_level(LOG_CRIT);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
