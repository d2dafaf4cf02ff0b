/* Resuming the disks, the replicator's side (replicator/disk_track.c):
 * which lineage a HELLO offers, when a lineage starts and ends, and what
 * a resumed copy reads: every chunk written since, in order, as the image
 * holds it. The end-to-end check (the replica equals the VM's disk after a
 * resumed copy) is tests/integration/test_disk_resume.sh. */
#include "../replicator/dev_disk.h"
#include "../common/proto.h"
#include "tmp_fixture.h"

#include <check.h>
#include <fcntl.h>
#include <inttypes.h>
#include <json-c/json.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

TMP_FIXTURE("check_disk_track")

#define CHUNK 4096u                      /* what a small disk gets */
#define TAIL  1536u                      /* the last chunk is short */
#define NCHUNKS 10u
#define DISK  ((NCHUNKS - 1) * CHUNK + TAIL)

static struct disk_device *device(void)
{
	struct disk_device *d = calloc(1, sizeof(*d));

	ck_assert_ptr_nonnull(d);
	pthread_mutex_init(&d->mu, NULL);
	d->pending.tail = &d->pending.head;
	d->n = 1;
	d->disks[0] = (struct disk){ .dev = d, .index = 0, .size = DISK, .job = true,
				     .ready = true, .name = "disk0" };
	ck_assert_int_eq(disk_track_setup(d), 0);
	ck_assert_uint_eq(d->track_chunk, CHUNK);
	ck_assert_uint_eq(d->disks[0].track_chunks, NCHUNKS);
	return d;
}

static void device_free(struct disk_device *d)
{
	while (d->pending.head) {
		struct disk_rec *r = d->pending.head;

		d->pending.head = r->next;
		free(r);
	}
	disk_delta_free(&d->disks[0].delta);
	disk_track_free(d);
	pthread_mutex_destroy(&d->mu);
	free(d);
}

/* Can the images be read here? (disk_open_image, which asks QEMU) */
static bool g_readable = true;

static bool readable(struct disk_device *d)
{
	(void)d;
	return g_readable;
}

/* A HELLO as the device builds it; its "disk_resume", or NULL. */
static struct json_object *hello(struct disk_device *d, struct json_object **resume)
{
	struct json_object *h = json_object_new_object(), *v;

	disk_track_hello(d, h, readable);
	ck_assert(json_object_object_get_ex(h, "disk_session", &v));
	ck_assert_uint_eq(strlen(json_object_get_string(v)), 16);
	*resume = json_object_object_get_ex(h, "disk_resume", &v) ? v : NULL;
	return h;
}

static bool offers(struct disk_device *d, uint64_t *epoch, char *session)
{
	struct json_object *r, *h = hello(d, &r), *v;
	bool yes = r != NULL;

	if (yes) {
		ck_assert(json_object_object_get_ex(r, "epoch", &v));
		*epoch = (uint64_t)json_object_get_int64(v);
		ck_assert(json_object_object_get_ex(r, "session", &v));
		snprintf(session, 17, "%s", json_object_get_string(v));
	}
	json_object_put(h);
	return yes;
}

static void mark(struct disk_device *d, uint64_t off, uint64_t len)
{
	pthread_mutex_lock(&d->mu);
	disk_track_mark(d, 0, off, len);
	pthread_mutex_unlock(&d->mu);
}

/* A full copy commits epochs 1 and 2 of the session the HELLO named. */
static void full_copy_commits(struct disk_device *d, char *session)
{
	struct json_object *r, *h = hello(d, &r), *v;

	ck_assert(json_object_object_get_ex(h, "disk_session", &v));
	snprintf(session, 17, "%s", json_object_get_string(v));
	json_object_put(h);
	pthread_mutex_lock(&d->mu);
	disk_track_reset(d);
	pthread_mutex_unlock(&d->mu);
	disk_track_commit(d, 1);
	disk_track_commit(d, 2);
}

START_TEST(test_a_lineage_starts_at_a_full_copy_s_first_commit)
{
	struct disk_device *d = device();
	char session[17], offered[17];
	uint64_t epoch = 0;

	ck_assert(!offers(d, &epoch, offered)); /* nothing committed yet */
	mark(d, 0, 512); /* dropped with no lineage to mark it in */
	disk_track_commit(d, 1);
	ck_assert_msg(!offers(d, &epoch, offered), "a lineage that missed a write");
	full_copy_commits(d, session);
	ck_assert(offers(d, &epoch, offered));
	ck_assert_str_eq(offered, session);
	ck_assert_uint_eq(epoch, 2);
	/* an image that cannot be read here: nothing to resume from */
	g_readable = false;
	ck_assert(!offers(d, &epoch, offered));
	g_readable = true;
	/* no mirror running: nothing passes through us to track */
	d->disks[0].ready = false;
	ck_assert(!offers(d, &epoch, offered));
	device_free(d);
}
END_TEST

START_TEST(test_writes_dropped_at_a_commit_or_a_lost_mirror_end_the_lineage)
{
	struct disk_device *d = device();
	char session[17], offered[17];
	uint64_t epoch;

	full_copy_commits(d, session);
	d->overflow = true; /* records dropped after the barrier of epoch 3 */
	disk_track_commit(d, 3);
	d->overflow = false;
	ck_assert(!offers(d, &epoch, offered));

	full_copy_commits(d, session);
	disk_track_lose(d);
	ck_assert(!offers(d, &epoch, offered));
	full_copy_commits(d, session);
	d->capture_bitmap = true; /* QEMU's bitmaps capture: no write reaches us */
	ck_assert(!offers(d, &epoch, offered));
	device_free(d);
}
END_TEST

/* The backup's yes counts only for an offer; its copy of a disk starts
 * from the replica, hashed or (no hashes) cloned. */
START_TEST(test_resumes_only_an_offered_lineage)
{
	struct disk_device *d = device();
	struct json_object *yes = json_tokener_parse("{\"disk_resume\":true}");
	struct json_object *no = json_tokener_parse("{\"disk_resume\":false}");
	char session[17];

	disk_track_reply(d, yes);
	ck_assert_msg(!d->resuming, "resumed what was not offered");
	full_copy_commits(d, session);
	json_object_put(hello(d, &(struct json_object *){ NULL }));
	ck_assert(d->resume_offered);
	disk_track_reply(d, no);
	ck_assert(!d->resuming);
	disk_track_reply(d, yes);
	ck_assert_msg(d->resuming, "a cloned copy: no hashes");
	ck_assert_int_eq(disk_delta_init(&d->disks[0].delta, DISK, CHUNK, 1), 0);
	disk_track_reply(d, yes);
	ck_assert_msg(d->resuming, "a hashed copy");
	/* ... but the mirror stopped meanwhile: the copy is a full one, and
	 * nothing may end its epoch 0 as a resumed copy */
	d->disks[0].job = false;
	ck_assert(!disk_track_resume_start(d));
	ck_assert(!d->resuming);
	ck_assert(!d->resume_pumping);
	json_object_put(yes);
	json_object_put(no);
	device_free(d);
}
END_TEST

/* Two resumed sessions that end before a commit: the third copies in
 * full, and a commit lets the next one resume again. */
START_TEST(test_resumes_that_never_commit_stop_being_offered)
{
	struct disk_device *d = device();
	char session[17], offered[17];
	uint64_t epoch;

	full_copy_commits(d, session);
	for (unsigned i = 0; i < DISK_RESUME_TRIES; i++) {
		ck_assert_msg(offers(d, &epoch, offered), "offer %u", i);
		d->resume_started = true; /* as disk_track_resume_start does */
	}
	ck_assert(!offers(d, &epoch, offered));
	full_copy_commits(d, session);
	ck_assert(offers(d, &epoch, offered));
	ck_assert_str_eq(offered, session);
	device_free(d);
}
END_TEST

static int image(uint8_t *content)
{
	char path[128];
	int fd;

	for (uint32_t i = 0; i < DISK; i++)
		content[i] = (uint8_t)(i * 7 + 1);
	memset(content + 4 * CHUNK, 0, CHUNK); /* a chunk of zeroes */
	snprintf(path, sizeof(path), "%s/disk.img", g_tmp);
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(pwrite(fd, content, DISK, 0), DISK);
	return fd;
}

/* What a resumed copy queues: each marked chunk once, in order, as the
 * image holds it (a zeroing for zeroes, the short last chunk short); a
 * chunk written in the middle of two is read whole; the budget splits it
 * into steps. */
START_TEST(test_a_resumed_copy_reads_every_marked_chunk_in_order)
{
	static uint8_t content[DISK];
	static const uint64_t want[] = { 2, 4, 5, 6, NCHUNKS - 1 };
	struct disk_device *d = device();
	char session[17];
	unsigned n = 0;
	int steps = 0, rc;

	full_copy_commits(d, session);
	mark(d, 2 * CHUNK + 100, 10);
	mark(d, 5 * CHUNK - 512, 1024);  /* chunks 4 and 5 */
	mark(d, 6 * CHUNK, CHUNK);
	mark(d, 2 * CHUNK, 1);           /* again */
	mark(d, DISK - 512, 512);        /* the tail */
	d->disks[0].resume_fd = image(content);
	d->resume_pumping = true;
	while ((rc = disk_track_pump(d, 2 * CHUNK)) == 1)
		steps++;
	ck_assert_int_eq(rc, 0);
	ck_assert_int_eq(steps, 2); /* 2 + 2 + 1 chunks */
	ck_assert_int_eq(d->disks[0].resume_fd, -1);
	ck_assert(!d->resume_pumping);
	for (struct disk_rec *r = d->pending.head; r; r = r->next, n++) {
		uint64_t off = want[n] * CHUNK, len = want[n] == NCHUNKS - 1 ? TAIL : CHUNK;

		ck_assert_uint_lt(n, 5);
		ck_assert_uint_eq(r->offset, off);
		ck_assert_uint_eq(r->length, len);
		if (want[n] == 4) {
			ck_assert_uint_eq(r->op, DISK_OP_WRITE_ZEROES);
		} else {
			ck_assert_uint_eq(r->op, DISK_OP_WRITE);
			ck_assert_msg(!memcmp(r->data, content + off, len), "chunk %" PRIu64, want[n]);
		}
	}
	ck_assert_uint_eq(n, 5);
	ck_assert_uint_eq(d->disks[0].resume_read, 4 * CHUNK + TAIL);
	device_free(d);
}
END_TEST

/* An image shorter than the disk: the copy fails, and the lineage goes. */
START_TEST(test_an_unreadable_chunk_ends_the_copy_and_the_lineage)
{
	static uint8_t content[DISK];
	struct disk_device *d = device();
	char session[17], offered[17];
	uint64_t epoch;

	full_copy_commits(d, session);
	mark(d, DISK - 512, 512);
	d->disks[0].resume_fd = image(content);
	ck_assert_int_eq(ftruncate(d->disks[0].resume_fd, DISK - 1024), 0);
	d->resume_pumping = true;
	ck_assert_int_lt(disk_track_pump(d, 1 << 20), 0);
	ck_assert_int_eq(d->disks[0].resume_fd, -1);
	ck_assert(!offers(d, &epoch, offered));
	device_free(d);
}
END_TEST

/* A setup that failed before the maps (disk_find did): the teardown
 * closes no descriptor it never opened, such as 0. */
START_TEST(test_a_teardown_after_a_failed_setup_closes_nothing)
{
	struct disk_device *d = calloc(1, sizeof(*d));

	ck_assert_ptr_nonnull(d);
	if (fcntl(0, F_GETFD) < 0)
		ck_assert_int_eq(open("/dev/null", O_RDONLY), 0);
	d->n = 1; /* its resume_fd is 0, as calloc left it */
	disk_track_free(d);
	ck_assert_int_ge(fcntl(0, F_GETFD), 0);
	free(d);
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("disk_track");

	tmp_fixture_add(s, tmp_setup, "lineage", test_a_lineage_starts_at_a_full_copy_s_first_commit, 10);
	tmp_fixture_add(s, tmp_setup, "ended", test_writes_dropped_at_a_commit_or_a_lost_mirror_end_the_lineage, 10);
	tmp_fixture_add(s, tmp_setup, "reply", test_resumes_only_an_offered_lineage, 10);
	tmp_fixture_add(s, tmp_setup, "tries", test_resumes_that_never_commit_stop_being_offered, 10);
	tmp_fixture_add(s, tmp_setup, "reads", test_a_resumed_copy_reads_every_marked_chunk_in_order, 10);
	tmp_fixture_add(s, tmp_setup, "short", test_an_unreadable_chunk_ends_the_copy_and_the_lineage, 10);
	tmp_fixture_add(s, tmp_setup, "teardown", test_a_teardown_after_a_failed_setup_closes_nothing, 10);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
