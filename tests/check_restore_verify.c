/* The restored block graph check (restore_verify.c), on query-block
 * replies of the real QEMU 7.2.22 of this machine: each reply below was
 * captured from `qemu-system-x86_64 -M pc -nodefaults -display none -S
 * -qmp ...` with the options in its comment, over a 64 MiB raw
 * /srv/state/disk-0.img and `qemu-img create -f qcow2 -b /srv/state/disk-0.img
 * -F raw /srv/state/disk-0.qcow2`, then trimmed to the members that matter
 * (values unchanged). */
#include "../backup-agent/restore_verify.h"
#include "../backup-agent/restore.h"

#include <check.h>
#include <errno.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "qmp.h"

#define DISK_SIZE 67108864ull
#define ANON_QDEV "/machine/peripheral-anon/device[0]/virtio-backend"
#define VDISK0_QDEV "/machine/peripheral/vdisk0/virtio-backend"

/* -drive file=/srv/state/disk-0.qcow2,format=qcow2,if=virtio,id=d0 */
static const char qb_drive[] =
	"[{\"device\":\"d0\",\"qdev\":\"/machine/peripheral-anon/device[0]/virtio-backend\","
	"\"inserted\":{\"ro\":false,\"drv\":\"qcow2\",\"node-name\":\"#block100\","
	"\"file\":\"/srv/state/disk-0.qcow2\",\"image\":{\"filename\":\"/srv/state/disk-0.qcow2\","
	"\"format\":\"qcow2\",\"virtual-size\":67108864,\"backing-image\":{"
	"\"filename\":\"/srv/state/disk-0.img\",\"format\":\"raw\","
	"\"virtual-size\":67108864}}}}]"
	;

/* -blockdev driver=file,filename=/srv/state/disk-0.qcow2,node-name=d0-file -blockdev
 * driver=qcow2,file=d0-file,node-name=d0 -device virtio-blk-pci,drive=d0,id=vdisk0 */
static const char qb_blockdev[] =
	"[{\"device\":\"\",\"qdev\":\"/machine/peripheral/vdisk0/virtio-backend\","
	"\"inserted\":{\"ro\":false,\"drv\":\"qcow2\",\"node-name\":\"d0\","
	"\"file\":\"/srv/state/disk-0.qcow2\",\"image\":{\"filename\":\"/srv/state/disk-0.qcow2\","
	"\"format\":\"qcow2\",\"virtual-size\":67108864,\"backing-image\":{"
	"\"filename\":\"/srv/state/disk-0.img\",\"format\":\"raw\","
	"\"virtual-size\":67108864}}}}]"
	;

/* -blockdev driver=file,filename=/srv/state/disk-0.qcow2,node-name=d0-file -device
 * virtio-blk-pci,drive=d0-file,id=vdisk0 */
static const char qb_asfile[] =
	"[{\"device\":\"\",\"qdev\":\"/machine/peripheral/vdisk0/virtio-backend\","
	"\"inserted\":{\"ro\":false,\"drv\":\"file\",\"node-name\":\"d0-file\","
	"\"file\":\"/srv/state/disk-0.qcow2\",\"image\":{\"filename\":\"/srv/state/disk-0.qcow2\","
	"\"format\":\"file\",\"virtual-size\":197120}}}]"
	;

/* -drive file=/srv/state/disk-0.qcow2,format=raw,if=virtio,id=d0 */
static const char qb_asraw[] =
	"[{\"device\":\"d0\",\"qdev\":\"/machine/peripheral-anon/device[0]/virtio-backend\","
	"\"inserted\":{\"ro\":false,\"drv\":\"raw\",\"node-name\":\"#block137\","
	"\"file\":\"/srv/state/disk-0.qcow2\",\"image\":{\"filename\":\"/srv/state/disk-0.qcow2\","
	"\"format\":\"raw\",\"virtual-size\":197120}}}]"
	;

/* -drive file=/srv/state/wrongback.qcow2,format=qcow2,if=virtio,id=d0, an overlay
 * made over /srv/state/other.img */
static const char qb_wrongback[] =
	"[{\"device\":\"d0\",\"qdev\":\"/machine/peripheral-anon/device[0]/virtio-backend\","
	"\"inserted\":{\"ro\":false,\"drv\":\"qcow2\",\"node-name\":\"#block172\","
	"\"file\":\"/srv/state/wrongback.qcow2\",\"image\":{"
	"\"filename\":\"/srv/state/wrongback.qcow2\",\"format\":\"qcow2\","
	"\"virtual-size\":67108864,\"backing-image\":{\"filename\":\"/srv/state/other.img\","
	"\"format\":\"raw\",\"virtual-size\":67108864}}}}]"
	;

/* -drive file=/srv/state/q2/disk-0.qcow2,format=qcow2,if=virtio,id=d0, an overlay
 * made with -F qcow2 over a qcow2 /srv/state/q2/disk-0.img */
static const char qb_backqcow2[] =
	"[{\"device\":\"d0\",\"qdev\":\"/machine/peripheral-anon/device[0]/virtio-backend\","
	"\"inserted\":{\"ro\":false,\"drv\":\"qcow2\",\"node-name\":\"#block154\","
	"\"file\":\"/srv/state/q2/disk-0.qcow2\",\"image\":{"
	"\"filename\":\"/srv/state/q2/disk-0.qcow2\",\"format\":\"qcow2\","
	"\"virtual-size\":67108864,\"backing-image\":{\"filename\":\"/srv/state/q2/disk-0.img\","
	"\"format\":\"qcow2\",\"virtual-size\":67108864}}}}]"
	;

/* -drive file=/srv/state/big.qcow2,format=qcow2,if=virtio,id=d0, a 128 MiB overlay
 * over the 64 MiB disk-0.img */
static const char qb_bigsize[] =
	"[{\"device\":\"d0\",\"qdev\":\"/machine/peripheral-anon/device[0]/virtio-backend\","
	"\"inserted\":{\"ro\":false,\"drv\":\"qcow2\",\"node-name\":\"#block125\","
	"\"file\":\"/srv/state/big.qcow2\",\"image\":{\"filename\":\"/srv/state/big.qcow2\","
	"\"format\":\"qcow2\",\"virtual-size\":134217728,\"backing-image\":{"
	"\"filename\":\"/srv/state/disk-0.img\",\"format\":\"raw\","
	"\"virtual-size\":67108864}}}}]"
	;

/* -drive file=/srv/state/disk-0.qcow2,format=qcow2,if=none,id=d0 */
static const char qb_nodev[] =
	"[{\"device\":\"d0\",\"inserted\":{\"ro\":false,\"drv\":\"qcow2\","
	"\"node-name\":\"#block145\",\"file\":\"/srv/state/disk-0.qcow2\",\"image\":{"
	"\"filename\":\"/srv/state/disk-0.qcow2\",\"format\":\"qcow2\","
	"\"virtual-size\":67108864,\"backing-image\":{\"filename\":\"/srv/state/disk-0.img\","
	"\"format\":\"raw\",\"virtual-size\":67108864}}}}]"
	;

/* -drive file=/srv/state/disk-0.qcow2,format=qcow2,if=virtio,id=d0,readonly=on */
static const char qb_ro[] =
	"[{\"device\":\"d0\",\"qdev\":\"/machine/peripheral-anon/device[0]/virtio-backend\","
	"\"inserted\":{\"ro\":true,\"drv\":\"qcow2\",\"node-name\":\"#block136\","
	"\"file\":\"/srv/state/disk-0.qcow2\",\"image\":{\"filename\":\"/srv/state/disk-0.qcow2\","
	"\"format\":\"qcow2\",\"virtual-size\":67108864,\"backing-image\":{"
	"\"filename\":\"/srv/state/disk-0.img\",\"format\":\"raw\","
	"\"virtual-size\":67108864}}}}]"
	;

/* -drive file=/srv/state/disk-0.qcow2,format=qcow2,if=virtio,id=d0 -drive
 * file=/srv/state/disk-0.qcow2,format=qcow2,if=virtio,id=d1,file.locking=off */
static const char qb_twodev[] =
	"[{\"device\":\"d0\",\"qdev\":\"/machine/peripheral-anon/device[0]/virtio-backend\","
	"\"inserted\":{\"ro\":false,\"drv\":\"qcow2\",\"node-name\":\"#block104\","
	"\"file\":\"/srv/state/disk-0.qcow2\",\"image\":{\"filename\":\"/srv/state/disk-0.qcow2\","
	"\"format\":\"qcow2\",\"virtual-size\":67108864,\"backing-image\":{"
	"\"filename\":\"/srv/state/disk-0.img\",\"format\":\"raw\","
	"\"virtual-size\":67108864}}}},{\"device\":\"d1\","
	"\"qdev\":\"/machine/peripheral-anon/device[1]/virtio-backend\",\"inserted\":{"
	"\"ro\":false,\"drv\":\"qcow2\",\"node-name\":\"#block532\","
	"\"file\":\"/srv/state/disk-0.qcow2\",\"image\":{\"filename\":\"/srv/state/disk-0.qcow2\","
	"\"format\":\"qcow2\",\"virtual-size\":67108864,\"backing-image\":{"
	"\"filename\":\"/srv/state/disk-0.img\",\"format\":\"raw\","
	"\"virtual-size\":67108864}}}}]"
	;

/* Without -nodefaults (its cdrom, floppy and sd drives have no medium):
 * -drive file=/srv/state/disk-0.qcow2,format=qcow2,if=virtio,id=d0 */
static const char qb_defaults_drive[] =
	"[{\"device\":\"d0\",\"qdev\":\"/machine/peripheral-anon/device[0]/virtio-backend\","
	"\"inserted\":{\"ro\":false,\"drv\":\"qcow2\",\"node-name\":\"#block140\","
	"\"file\":\"/srv/state/disk-0.qcow2\",\"image\":{\"filename\":\"/srv/state/disk-0.qcow2\","
	"\"format\":\"qcow2\",\"virtual-size\":67108864,\"backing-image\":{"
	"\"filename\":\"/srv/state/disk-0.img\",\"format\":\"raw\","
	"\"virtual-size\":67108864}}}},{\"device\":\"ide1-cd0\","
	"\"qdev\":\"/machine/unattached/device[23]\",\"removable\":true},{"
	"\"device\":\"floppy0\",\"qdev\":\"/machine/unattached/device[16]\","
	"\"removable\":true},{\"device\":\"sd0\",\"removable\":true}]"
	;

/* QEMU names a node whose options a plain filename cannot tell json:{...}
 * (inside the reply, a JSON string). */
#define JSONBACK_NAME "json:{\\\"backing\\\": {\\\"driver\\\": \\\"raw\\\", " \
	"\\\"file\\\": {\\\"driver\\\": \\\"file\\\", \\\"filename\\\": \\\"/srv/state/other.img\\\"}}, " \
	"\\\"driver\\\": \\\"qcow2\\\", \\\"file\\\": {\\\"driver\\\": \\\"file\\\", " \
	"\\\"filename\\\": \\\"/srv/state/disk-0.qcow2\\\"}}"
#define JSONOK_BACKING_NAME "json:{\\\"offset\\\": 0, \\\"driver\\\": \\\"raw\\\", " \
	"\\\"size\\\": 67108864, \\\"file\\\": {\\\"driver\\\": \\\"file\\\", " \
	"\\\"filename\\\": \\\"/srv/state/disk-0.img\\\"}}"
#define JSONOK_NAME "json:{\\\"backing\\\": {\\\"offset\\\": 0, \\\"driver\\\": \\\"raw\\\", " \
	"\\\"size\\\": 67108864, \\\"file\\\": {\\\"driver\\\": \\\"file\\\", " \
	"\\\"filename\\\": \\\"/srv/state/disk-0.img\\\"}}, \\\"driver\\\": \\\"qcow2\\\", " \
	"\\\"file\\\": {\\\"driver\\\": \\\"file\\\", \\\"filename\\\": \\\"/srv/state/disk-0.qcow2\\\"}}"

/* -blockdev {"driver":"qcow2","node-name":"d0","file":{"driver":"file",
 * "filename":"/srv/state/disk-0.qcow2"},"backing":{"driver":"raw","file":{
 * "driver":"file","filename":"/srv/state/other.img"}}} -device virtio-blk-pci,drive=d0,id=vdisk0 */
static const char qb_jsonback[] =
	"[{\"device\":\"\",\"qdev\":\"/machine/peripheral/vdisk0/virtio-backend\","
	"\"inserted\":{\"ro\":false,\"drv\":\"qcow2\",\"node-name\":\"d0\","
	"\"file\":\"" JSONBACK_NAME "\","
	"\"image\":{\"filename\":\"" JSONBACK_NAME "\","
	"\"format\":\"qcow2\",\"virtual-size\":67108864,\"backing-image\":{"
	"\"filename\":\"/srv/state/other.img\",\"format\":\"raw\",\"virtual-size\":67108864}}}}]"
	;

/* The same with the replica as backing, through a raw node with options
 * (offset 0, the whole size): both levels get json: names. */
static const char qb_jsonok[] =
	"[{\"device\":\"\",\"qdev\":\"/machine/peripheral/vdisk0/virtio-backend\","
	"\"inserted\":{\"ro\":false,\"drv\":\"qcow2\",\"node-name\":\"d0\","
	"\"file\":\"" JSONOK_NAME "\","
	"\"image\":{\"filename\":\"" JSONOK_NAME "\","
	"\"format\":\"qcow2\",\"virtual-size\":67108864,\"backing-image\":{"
	"\"filename\":\"" JSONOK_BACKING_NAME "\","
	"\"format\":\"raw\",\"virtual-size\":67108864}}}}]"
	;

/* -nodefaults, no disk */
static const char qb_none[] = "[]";

static const struct verify_disk disk0 = {
	.name = "disk0", .overlay = "/srv/state/disk-0.qcow2", .replica = "/srv/state/disk-0.img",
	.size = DISK_SIZE,
};

static int verdict(const char *reply, const struct verify_disk *want, int n, char *err,
		   size_t errlen)
{
	struct json_object *blocks = json_tokener_parse(reply);
	int rc;

	ck_assert_ptr_nonnull(blocks);
	rc = restore_verify_block_graph(blocks, want, n, err, errlen);
	json_object_put(blocks);
	return rc;
}

static void assert_accepted(const char *reply, const struct verify_disk *want, int n)
{
	char err[512] = "unset";
	int rc = verdict(reply, want, n, err, sizeof(err));

	ck_assert_msg(rc == 0, "refused (%d): %s", rc, err);
	ck_assert_str_eq(err, "");
}

/* Refused, and the reason says why: it contains word. */
static void assert_refused(const char *reply, const struct verify_disk *want, int n,
			   const char *word)
{
	char err[512] = "";
	int rc = verdict(reply, want, n, err, sizeof(err));

	ck_assert_int_eq(rc, -EINVAL);
	ck_assert_msg(strstr(err, word), "reason '%s' lacks '%s'", err, word);
	ck_assert_msg(strstr(err, want[0].name) || n > 1, "reason '%s' names no disk", err);
}

static struct verify_disk with_qdev(const char *qdev)
{
	struct verify_disk d = disk0;

	d.qdev = qdev;
	return d;
}

START_TEST(test_drive_overlay_accepted)
{
	struct verify_disk d = with_qdev(ANON_QDEV);

	assert_accepted(qb_drive, &disk0, 1);
	assert_accepted(qb_drive, &d, 1);
	/* the default cdrom, floppy and sd drives have no medium: not disks */
	assert_accepted(qb_defaults_drive, &d, 1);
}
END_TEST

START_TEST(test_blockdev_overlay_accepted)
{
	struct verify_disk d = with_qdev(VDISK0_QDEV);

	assert_accepted(qb_blockdev, &disk0, 1);
	assert_accepted(qb_blockdev, &d, 1);
}
END_TEST

START_TEST(test_json_names_accepted)
{
	assert_accepted(qb_jsonok, &disk0, 1);
}
END_TEST

/* The bug: the overlay read through the file driver, the guest sees the
 * qcow2 header as its disk. */
START_TEST(test_overlay_as_file)
{
	assert_refused(qb_asfile, &disk0, 1, "opened as file, not qcow2");
}
END_TEST

START_TEST(test_overlay_as_raw)
{
	assert_refused(qb_asraw, &disk0, 1, "opened as raw, not qcow2");
}
END_TEST

START_TEST(test_wrong_backing_file)
{
	struct verify_disk d = disk0;

	d.overlay = "/srv/state/wrongback.qcow2";
	assert_refused(qb_wrongback, &d, 1, "backed by /srv/state/other.img");
	/* found through its json: name, refused for its backing */
	assert_refused(qb_jsonback, &disk0, 1, "backed by /srv/state/other.img");
}
END_TEST

START_TEST(test_backing_format_qcow2)
{
	struct verify_disk d = disk0;

	d.overlay = "/srv/state/q2/disk-0.qcow2";
	d.replica = "/srv/state/q2/disk-0.img";
	assert_refused(qb_backqcow2, &d, 1, "opened as qcow2, not raw");
}
END_TEST

START_TEST(test_wrong_virtual_size)
{
	struct verify_disk d = disk0;

	d.overlay = "/srv/state/big.qcow2";
	assert_refused(qb_bigsize, &d, 1, "virtual size 134217728");
	/* the primary's disk was smaller than the replica QEMU sees */
	d = disk0;
	d.size = DISK_SIZE / 2;
	assert_refused(qb_drive, &d, 1, "virtual size 67108864 bytes, the primary's disk has "
		       "33554432");
}
END_TEST

START_TEST(test_not_attached_to_device)
{
	assert_refused(qb_nodev, &disk0, 1, "no guest device");
}
END_TEST

START_TEST(test_qdev_mismatch)
{
	struct verify_disk d = with_qdev(VDISK0_QDEV);

	assert_refused(qb_drive, &d, 1, "qdev mismatch");
	d = with_qdev(ANON_QDEV);
	assert_refused(qb_blockdev, &d, 1, "qdev mismatch");
}
END_TEST

START_TEST(test_disk_missing)
{
	struct verify_disk two[2] = { disk0, disk0 };

	assert_refused(qb_none, &disk0, 1, "disk missing");
	/* a second replicated disk the restored QEMU does not open */
	two[1].name = "disk1";
	two[1].overlay = "/srv/state/disk-1.qcow2";
	two[1].replica = "/srv/state/disk-1.img";
	assert_refused(qb_drive, two, 2, "'disk1': no block device");
}
END_TEST

START_TEST(test_read_only)
{
	assert_refused(qb_ro, &disk0, 1, "read-only");
}
END_TEST

START_TEST(test_opened_twice)
{
	assert_refused(qb_twodev, &disk0, 1, "opened by 2 block devices");
}
END_TEST

START_TEST(test_not_an_array)
{
	char err[128];

	ck_assert_int_eq(verdict("{}", &disk0, 1, err, sizeof(err)), -EINVAL);
	ck_assert_ptr_nonnull(strstr(err, "array"));
	/* nothing replicated: nothing to find */
	assert_accepted(qb_none, NULL, 0);
}
END_TEST

/* --- restore_verify_disks: query-block through a fake QMP peer (the
 * libvirt passthrough transport), expectations from the HELLO's vm. */
static int fake_command(void *ctx, const char *request, const int *fds, unsigned nfds,
			char **reply, char *why, size_t whylen)
{
	const char *blocks = ctx;

	ck_assert_str_eq(request, "{\"execute\":\"query-block\"}");
	return asprintf(reply, "{\"return\": %s}", blocks) < 0 ? -ENOMEM : 0;
}

/* rc of restore_verify_disks on reply, for a vm with disk0 (qdev if not
 * NULL); what it logged in log (stderr, captured). */
static int verify_through_qmp(const char *reply, const char *qdev, char *log, size_t loglen)
{
	char overlay[] = "/srv/state/disk-0.qcow2", base[] = "/srv/state/disk-0.img";
	struct qmp_passthrough pt = { .command = fake_command, .ctx = (void *)reply,
				      .what = "fake", .pid = 42 };
	struct restore_disks disks = { .n = 1, .overlay = { overlay }, .base = { base } };
	struct json_object *vm = json_tokener_parse(
		"{\"disks\":[{\"id\":\"disk0\",\"size\":67108864,\"node\":\"d0\"}]}");
	struct qmp *q = NULL;
	FILE *capture = tmpfile();
	int saved = dup(2), rc;
	size_t n;

	ck_assert_ptr_nonnull(capture);
	if (qdev)
		json_object_object_add(json_object_array_get_idx(
			json_object_object_get(vm, "disks"), 0), "qdev", json_object_new_string(qdev));
	ck_assert_int_eq(qmp_open_passthrough(&pt, &q), 0);
	dup2(fileno(capture), 2);
	rc = restore_verify_disks(q, &disks, vm);
	dup2(saved, 2);
	close(saved);
	rewind(capture);
	n = fread(log, 1, loglen - 1, capture);
	log[n] = '\0';
	fclose(capture);
	qmp_close(q);
	json_object_put(vm);
	return rc;
}

START_TEST(test_verify_disks_logs)
{
	char log[2048];

	ck_assert_int_eq(verify_through_qmp(qb_blockdev, VDISK0_QDEV, log, sizeof(log)), 0);
	ck_assert_msg(strstr(log, "restore: disk 'disk0' block graph verified: qcow2 overlay "
			     "/srv/state/disk-0.qcow2 over replica /srv/state/disk-0.img, 67108864 bytes"),
		      "log: %s", log);
	/* no qdev in the HELLO (an older replicator): any guest device */
	ck_assert_int_eq(verify_through_qmp(qb_drive, NULL, log, sizeof(log)), 0);
	ck_assert_ptr_nonnull(strstr(log, "block graph verified"));

	ck_assert_int_eq(verify_through_qmp(qb_asraw, NULL, log, sizeof(log)), -EINVAL);
	ck_assert_msg(strstr(log, "block graph check failed: disk 'disk0': overlay "
			     "/srv/state/disk-0.qcow2 is opened as raw"), "log: %s", log);
	ck_assert_ptr_null(strstr(log, "verified"));
	/* the HELLO's qdev is the one compared */
	ck_assert_int_eq(verify_through_qmp(qb_drive, VDISK0_QDEV, log, sizeof(log)), -EINVAL);
	ck_assert_msg(strstr(log, "block graph check failed") && strstr(log, "qdev mismatch"),
		      "log: %s", log);
}
END_TEST

static void add(Suite *s, const char *name, const TTest *t)
{
	TCase *tc = tcase_create(name);

	tcase_set_timeout(tc, 5);
	tcase_add_test(tc, t);
	suite_add_tcase(s, tc);
}

static Suite *restore_verify_suite(void)
{
	Suite *s = suite_create("restore_verify");

	add(s, "drive_overlay_accepted", test_drive_overlay_accepted);
	add(s, "blockdev_overlay_accepted", test_blockdev_overlay_accepted);
	add(s, "json_names_accepted", test_json_names_accepted);
	add(s, "overlay_as_file", test_overlay_as_file);
	add(s, "overlay_as_raw", test_overlay_as_raw);
	add(s, "wrong_backing_file", test_wrong_backing_file);
	add(s, "backing_format_qcow2", test_backing_format_qcow2);
	add(s, "wrong_virtual_size", test_wrong_virtual_size);
	add(s, "not_attached_to_device", test_not_attached_to_device);
	add(s, "qdev_mismatch", test_qdev_mismatch);
	add(s, "disk_missing", test_disk_missing);
	add(s, "read_only", test_read_only);
	add(s, "opened_twice", test_opened_twice);
	add(s, "not_an_array", test_not_an_array);
	add(s, "verify_disks_logs", test_verify_disks_logs);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(restore_verify_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
