/* The block-graph plan: which -drive or -blockdev defines each replicated
 * disk, what lies below it, and the forms refused with the reason (the
 * replicator at attach, the agent at restore). The rewrite itself is
 * checked in check_restore_cmdline.c. */
#include "block_graph.h"

#include <check.h>
#include <errno.h>
#include <string.h>

#define RAM "-object", "memory-backend-file,id=ram0,size=1M,mem-path=/r,share=on"

static int count(const char *const *argv)
{
	int n = 0;

	while (argv[n])
		n++;
	return n;
}

/* Plan one disk; the plan is left in g (free it), the reason in err. */
static int plan1(const char *const *argv, const char *id, const char *node, const char *file,
		 struct block_graph *g, char *err)
{
	struct block_graph_disk d = { .id = id, .node = node, .file = file };

	return block_graph_plan((char *const *)argv, count(argv), &d, 1, g, err, 256);
}

static void assert_refused(const char *const *argv, const char *id, const char *node,
			   const char *file, const char *want)
{
	struct block_graph g;
	char err[256];

	ck_assert_int_eq(plan1(argv, id, node, file, &g, err), -EINVAL);
	ck_assert_msg(strstr(err, want), "'%s' lacks '%s'", err, want);
	block_graph_free(&g);
}

START_TEST(test_blockdev_chain_dropped_below_the_disk)
{
	const char *argv[] = {
		"qemu", RAM,
		"-blockdev", "driver=file,filename=/v/base.img,node-name=base-file", /* 4 */
		"-blockdev", "driver=raw,file=base-file,node-name=base",             /* 6 */
		"-blockdev", "driver=file,filename=/v/top.qcow2,node-name=top-file", /* 8 */
		"-blockdev", "driver=qcow2,file=top-file,backing=base,node-name=d0", /* 10 */
		"-blockdev", "driver=file,filename=/shared/iso,node-name=other",     /* 12 */
		"-device", "virtio-blk-pci,drive=d0", NULL
	};
	struct block_graph g;
	char err[256];

	ck_assert_int_eq(plan1(argv, "", "d0", "/v/top.qcow2", &g, err), 0);
	ck_assert_int_eq(g.action[4], BLOCK_GRAPH_DROP);
	ck_assert_int_eq(g.action[6], BLOCK_GRAPH_DROP);
	ck_assert_int_eq(g.action[8], BLOCK_GRAPH_DROP);
	ck_assert_int_eq(g.action[10], BLOCK_GRAPH_REPLACE);
	ck_assert_int_eq(g.disk[10], 0);
	ck_assert_int_eq(g.action[12], BLOCK_GRAPH_KEEP);
	ck_assert_int_eq(g.action[14], BLOCK_GRAPH_KEEP);
	block_graph_free(&g);
}
END_TEST

/* -drive: by id; by image when QEMU named the drive; never an argument of
 * another option that happens to read "-drive". */
START_TEST(test_drive_found_by_id_or_image)
{
	const char *argv[] = {
		"qemu", "-name", "-drive", "-drive", "file=/v/a.img,format=raw,if=virtio", /* 4 */
		"-drive", "file=/v/b.img,format=qcow2,if=none,id=data",                    /* 6 */
		NULL
	};
	struct block_graph_disk d[] = {
		{ .id = "data", .node = "#block1", .file = "/v/b.img" },
		{ .id = "virtio0", .node = "#block2", .file = "/v/a.img" },
	};
	struct block_graph g;
	char err[256];

	ck_assert_int_eq(block_graph_plan((char *const *)argv, count(argv), d, 2, &g, err, 256), 0);
	ck_assert_int_eq(g.action[2], BLOCK_GRAPH_KEEP); /* -name's argument */
	ck_assert_int_eq(g.action[4], BLOCK_GRAPH_REPLACE);
	ck_assert_int_eq(g.disk[4], 1);
	ck_assert_int_eq(g.action[6], BLOCK_GRAPH_REPLACE);
	ck_assert_int_eq(g.disk[6], 0);
	block_graph_free(&g);
}
END_TEST

/* Two id-less drives on one image: which is the disk cannot be told. */
START_TEST(test_ambiguous_or_missing_drive_refused)
{
	const char *two[] = { "qemu", "-drive", "file=/v/a.img,format=raw",
			      "-drive", "file=/v/a.img,format=raw", NULL };
	const char *none[] = { "qemu", RAM, NULL };

	assert_refused(two, "ide0-hd0", "#block1", "/v/a.img", "defined by no -drive or -blockdev");
	assert_refused(none, "", "hotplugged", "/v/h.img", "added at run time");
}
END_TEST

START_TEST(test_network_storage_refused)
{
	const char *bdev[] = { "qemu", "-blockdev", "driver=nbd,server.type=unix,server.path=/s,"
			       "node-name=d0", NULL };
	const char *json[] = { "qemu", "-blockdev", "{\"driver\":\"raw\",\"node-name\":\"d0\","
			       "\"file\":{\"driver\":\"iscsi\",\"transport\":\"tcp\"}}", NULL };
	const char *url[] = { "qemu", "-drive", "file=nbd://10.0.0.1/exp,format=raw,id=d0", NULL };
	const char *rbd[] = { "qemu", "-drive", "file=rbd:pool/img,id=d0", NULL };

	assert_refused(bdev, "", "d0", "nbd", "network storage (driver nbd)");
	assert_refused(json, "", "d0", "x", "network storage (driver iscsi)");
	assert_refused(url, "d0", "#b", "nbd://10.0.0.1/exp", "network storage (nbd)");
	assert_refused(rbd, "d0", "#b", "rbd:pool/img", "--unprotected-disk d0");
}
END_TEST

START_TEST(test_other_formats_refused_with_the_form_to_use)
{
	const char *vmdk[] = { "qemu", "-blockdev", "driver=file,filename=/v/d.vmdk,node-name=f",
			       "-blockdev", "driver=vmdk,file=f,node-name=d0", NULL };
	const char *drive[] = { "qemu", "-drive", "file=/v/d.vdi,format=vdi,id=d0", NULL };
	const char *filter[] = { "qemu", "-blockdev", "driver=file,filename=/v/d,node-name=f",
				 "-blockdev", "driver=raw,file=f,node-name=r",
				 "-blockdev", "driver=throttle,file=r,throttle-group=g,node-name=d0",
				 NULL };

	assert_refused(vmdk, "", "d0", "/v/d.vmdk", "block driver 'vmdk'");
	assert_refused(vmdk, "", "d0", "/v/d.vmdk", "qemu-img convert -O qcow2");
	assert_refused(drive, "d0", "#b", "/v/d.vdi", "format 'vdi'");
	assert_refused(filter, "", "d0", "/v/d", "block driver 'throttle'");
}
END_TEST

START_TEST(test_snapshot_refused)
{
	const char *opt[] = { "qemu", "-drive", "file=/v/d.img,format=raw,id=d0,snapshot=on", NULL };
	const char *flag[] = { "qemu", "-snapshot", "-drive", "file=/v/d.img,format=raw,id=d0",
			       NULL };

	assert_refused(opt, "d0", "#b", "/v/d.img", "snapshot=on");
	assert_refused(flag, "d0", "#b", "/v/d.img", "-snapshot");
}
END_TEST

/* A node under a replicated disk that something else also uses: replacing
 * the disk's graph would pull it from under that user. */
START_TEST(test_shared_node_refused)
{
	const char *bdev[] = { "qemu", "-blockdev", "driver=file,filename=/v/d,node-name=f",
			       "-blockdev", "driver=raw,file=f,node-name=d0",
			       "-blockdev", "driver=raw,file=f,node-name=other", NULL };
	const char *dev[] = { "qemu", "-blockdev", "driver=file,filename=/v/d,node-name=f",
			      "-blockdev", "driver=raw,file=f,node-name=d0",
			      "-device", "virtio-blk-pci,drive=f", NULL };
	const char *dangling[] = { "qemu", "-blockdev", "driver=raw,file=nowhere,node-name=d0",
				   NULL };

	assert_refused(bdev, "", "d0", "/v/d", "node other uses node f");
	assert_refused(dev, "", "d0", "/v/d", "a -device uses node f");
	assert_refused(dangling, "", "d0", "/v/d", "no -blockdev defines");
}
END_TEST

/* A graph that names itself must end, not loop. */
START_TEST(test_cycle_ends)
{
	const char *argv[] = { "qemu", "-blockdev", "driver=qcow2,file=b,node-name=a",
			       "-blockdev", "driver=qcow2,file=a,node-name=b", NULL };

	assert_refused(argv, "", "a", "x", "another replicated disk");
}
END_TEST

START_TEST(test_truncated_command_line)
{
	const char *argv[] = { "qemu", "-drive", NULL };

	assert_refused(argv, "d0", "#b", "x", "without its argument");
}
END_TEST

static Suite *block_graph_suite(void)
{
	Suite *s = suite_create("block_graph");
	TCase *tc = tcase_create("plan");

	tcase_add_test(tc, test_blockdev_chain_dropped_below_the_disk);
	tcase_add_test(tc, test_drive_found_by_id_or_image);
	tcase_add_test(tc, test_ambiguous_or_missing_drive_refused);
	tcase_add_test(tc, test_network_storage_refused);
	tcase_add_test(tc, test_other_formats_refused_with_the_form_to_use);
	tcase_add_test(tc, test_snapshot_refused);
	tcase_add_test(tc, test_shared_node_refused);
	tcase_add_test(tc, test_cycle_ends);
	tcase_add_test(tc, test_truncated_command_line);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(block_graph_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
