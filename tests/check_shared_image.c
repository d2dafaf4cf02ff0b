/* A shared disk's header before a restore (backup-agent/shared_image.c):
 * images whose qcow2 header would lead QEMU to a host file the agent did
 * not list are refused; raw images, qcow2 without a backing file, and
 * qcow2 over another shared disk pass. Headers are written by hand (as a
 * guest writing a raw disk would), and once by qemu-img, so that the
 * reading matches the real format. Which images are looked into at all
 * comes from the restored command line: those it reads as qcow2, and the
 * backing files they name as qcow2; an image read as raw is the guest's
 * data, whatever its bytes. */
#include "../backup-agent/shared_image.h"
#include "tmp_fixture.h"

#include <check.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

TMP_FIXTURE("check_shared_image")

static const char *in_dir(const char *name)
{
	static char paths[4][256];
	static int next;
	char *p = paths[next++ % 4];

	snprintf(p, sizeof(paths[0]), "%s/%s", g_tmp, name);
	return p;
}

static void put_be32(uint8_t *p, uint32_t v)
{
	v = htobe32(v);
	memcpy(p, &v, sizeof(v));
}

static void put_be64(uint8_t *p, uint64_t v)
{
	v = htobe64(v);
	memcpy(p, &v, sizeof(v));
}

/* A qcow2 header as docs/interop/qcow2.txt lays it out: version 2 (72
 * bytes) or 3 (104), then the backing format's header extension (if
 * fmt) and the end of the extensions, the backing file's name (if any)
 * at byte 512. */
static void write_qcow2_fmt(const char *path, uint32_t version, const char *backing,
			    const char *fmt, uint64_t incompatible)
{
	uint8_t img[1024] = { 'Q', 'F', 'I', 0xfb };
	uint32_t ext = version >= 3 ? 104 : 72;
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);

	ck_assert_int_ge(fd, 0);
	put_be32(img + 4, version);
	if (backing) {
		put_be64(img + 8, 512);
		put_be32(img + 16, (uint32_t)strlen(backing));
		memcpy(img + 512, backing, strlen(backing));
	}
	put_be32(img + 20, 16);
	if (version >= 3) {
		put_be64(img + 72, incompatible);
		put_be32(img + 100, 104);
	}
	if (fmt) {
		put_be32(img + ext, 0xe2792acau);
		put_be32(img + ext + 4, (uint32_t)strlen(fmt));
		memcpy(img + ext + 8, fmt, strlen(fmt));
	}
	ck_assert_int_eq(write(fd, img, sizeof(img)), (ssize_t)sizeof(img));
	close(fd);
}

/* A backing file named with its format raw, as qemu-img create -F raw. */
static void write_qcow2(const char *path, uint32_t version, const char *backing,
			uint64_t incompatible)
{
	write_qcow2_fmt(path, version, backing, backing ? "raw" : NULL, incompatible);
}

static void write_bytes(const char *path, const void *buf, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, buf, len), (ssize_t)len);
	close(fd);
}

static void assert_passes(const char *path, const char *const *shared, int nshared)
{
	char err[512] = "";
	int rc = shared_image_check(path, shared, nshared, NULL, err, sizeof(err));

	ck_assert_msg(rc == 0, "%s refused (%d): %s", path, rc, err);
}

static void assert_refused(const char *path, const char *const *shared, int nshared,
			   const char *want)
{
	char err[512] = "";
	int rc = shared_image_check(path, shared, nshared, NULL, err, sizeof(err));

	ck_assert_msg(rc == -EINVAL, "%s: %d, not -EINVAL (%s)", path, rc, err);
	ck_assert_msg(strstr(err, want), "'%s' lacks '%s'", err, want);
}

START_TEST(test_raw_and_short_images_pass)
{
	static const uint8_t zeros[4096], tiny[10] = { 'Q', 'F', 'I', 0xfb };
	const char *raw = in_dir("raw.img"), *short_one = in_dir("short.img");
	const char *shared[] = { raw, short_one };

	write_bytes(raw, zeros, sizeof(zeros));
	assert_passes(raw, shared, 2);
	/* a qcow2 magic and nothing after it: no header QEMU would read */
	write_bytes(short_one, tiny, sizeof(tiny));
	assert_passes(short_one, shared, 2);
}
END_TEST

START_TEST(test_qcow2_without_backing_passes)
{
	const char *img = in_dir("a.qcow2");
	const char *shared[] = { img };

	write_qcow2(img, 3, NULL, 0);
	assert_passes(img, shared, 1);
	write_qcow2(img, 2, NULL, 0);
	assert_passes(img, shared, 1);
}
END_TEST

/* What a guest can write into its raw shared disk: a header naming a
 * host file as the backing file. */
START_TEST(test_backing_host_file_refused)
{
	const char *img = in_dir("guest-raw.img");
	const char *shared[] = { img };

	write_qcow2(img, 3, "/etc/hostname", 0);
	assert_refused(img, shared, 1, "names the backing file '/etc/hostname'");
	assert_refused(img, shared, 1, "not a shared disk of this agent (--shared-disk)");
	write_qcow2(img, 2, "/etc/hostname", 0);
	assert_refused(img, shared, 1, "'/etc/hostname'");
	/* relative: QEMU looks in the image's directory */
	write_qcow2(img, 3, "../../etc/hostname", 0);
	assert_refused(img, shared, 1, "'../../etc/hostname'");
}
END_TEST

/* QEMU reads a name with a protocol prefix as that protocol. */
START_TEST(test_backing_protocols_refused)
{
	const char *img = in_dir("p.img");
	const char *shared[] = { img };
	static const char *const names[] = {
		"json:{\"driver\":\"file\",\"filename\":\"/etc/shadow\"}",
		"nbd:unix:/run/x.sock", "file:/etc/shadow", "http://192.0.2.1/x",
	};

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		write_qcow2(img, 3, names[i], 0);
		assert_refused(img, shared, 1, "which is not a plain file name");
	}
}
END_TEST

START_TEST(test_backing_on_shared_disk_passes)
{
	const char *top = in_dir("top.qcow2"), *base = in_dir("base.img");
	char dotted[300];
	const char *both[] = { top, base }, *top_only[] = { top };

	write_bytes(base, "", 0);
	write_qcow2(top, 3, "base.img", 0);
	assert_passes(top, both, 2);
	assert_refused(top, top_only, 1, "'base.img'");
	write_qcow2(top, 3, base, 0);
	assert_passes(top, both, 2);
	/* the same file spelled otherwise is not the listed disk: QEMU would
	 * resolve its backing from that other directory, which a link on the
	 * shared storage could make any */
	snprintf(dotted, sizeof(dotted), "%s/./base.img", g_tmp);
	write_qcow2(top, 3, dotted, 0);
	assert_refused(top, both, 2, "not a shared disk of this agent");
	ck_assert_int_eq(symlink(base, in_dir("link.img")), 0);
	write_qcow2(top, 3, "link.img", 0);
	assert_refused(top, both, 2, "'link.img'");
	both[1] = dotted;
	write_qcow2(top, 3, dotted, 0);
	assert_passes(top, both, 2);
}
END_TEST

/* QEMU reads extensions to the end, and the last backing format wins. */
START_TEST(test_extensions_read_to_the_end)
{
	const char *top = in_dir("top.qcow2"), *base = in_dir("base.img");
	const char *both[] = { top, base };
	uint8_t img[1024] = { 0 };
	int fd;

	write_bytes(base, "", 0);
	write_qcow2_fmt(top, 3, "base.img", "raw", 0);
	fd = open(top, O_RDWR);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(pread(fd, img, sizeof(img), 0), (ssize_t)sizeof(img));
	/* raw, then a second format: vmdk */
	put_be32(img + 120, 0xe2792acau);
	put_be32(img + 124, 4);
	memcpy(img + 128, "vmdk", 4);
	ck_assert_int_eq(pwrite(fd, img, sizeof(img), 0), (ssize_t)sizeof(img));
	assert_refused(top, both, 2, "header extensions are malformed");
	/* raw, then 64 empty extensions of an unknown type, then vmdk; the
	 * backing file's name moved past them */
	memset(img + 512, 0, 16);
	put_be64(img + 8, 900);
	memcpy(img + 900, "base.img", 8);
	for (int i = 0; i < 64; i++)
		put_be32(img + 120 + 8 * i, 0x12345678u);
	put_be32(img + 120 + 8 * 64, 0xe2792acau);
	put_be32(img + 124 + 8 * 64, 4);
	memcpy(img + 128 + 8 * 64, "vmdk", 4);
	ck_assert_int_eq(pwrite(fd, img, sizeof(img), 0), (ssize_t)sizeof(img));
	close(fd);
	assert_refused(top, both, 2, "header extensions are malformed");
}
END_TEST

/* The backing file is a shared disk, but read as what format: a guest
 * that wrote a vmdk descriptor into it would name more host files. */
START_TEST(test_backing_format_raw_or_qcow2)
{
	const char *top = in_dir("top.qcow2"), *base = in_dir("base.img");
	const char *both[] = { top, base };
	uint8_t bad_ext[8];

	write_bytes(base, "", 0);
	write_qcow2_fmt(top, 3, "base.img", "qcow2", 0);
	assert_passes(top, both, 2);
	write_qcow2_fmt(top, 2, "base.img", "raw", 0);
	assert_passes(top, both, 2);
	write_qcow2_fmt(top, 3, "base.img", "vmdk", 0);
	assert_refused(top, both, 2, "gives the format 'vmdk' for the backing file 'base.img'");
	write_qcow2_fmt(top, 3, "base.img", NULL, 0);
	assert_refused(top, both, 2, "gives no format (QEMU would probe it)");
	/* an extension longer than the room before the backing file's name */
	write_qcow2_fmt(top, 3, "base.img", "raw", 0);
	put_be32(bad_ext, 0xe2792acau);
	put_be32(bad_ext + 4, 100000);
	{
		int fd = open(top, O_WRONLY);

		ck_assert_int_ge(fd, 0);
		ck_assert_int_eq(pwrite(fd, bad_ext, sizeof(bad_ext), 104), (ssize_t)sizeof(bad_ext));
		close(fd);
	}
	assert_refused(top, both, 2, "header extensions are malformed");
}
END_TEST

START_TEST(test_external_data_file_refused)
{
	const char *img = in_dir("d.qcow2");
	const char *shared[] = { img };

	write_qcow2(img, 3, NULL, 1ull << 2);
	assert_refused(img, shared, 1, "names an external data file");
	/* other incompatible bits are QEMU's to judge */
	write_qcow2(img, 3, NULL, 1ull << 0);
	assert_passes(img, shared, 1);
}
END_TEST

START_TEST(test_malformed_backing_refused)
{
	uint8_t img[104] = { 'Q', 'F', 'I', 0xfb };
	const char *path = in_dir("m.qcow2");
	const char *shared[] = { path };

	put_be32(img + 4, 3);
	put_be64(img + 8, 1 << 20); /* past the end of the file */
	put_be32(img + 16, 12);
	write_bytes(path, img, sizeof(img));
	assert_refused(path, shared, 1, "cannot be read");
	put_be64(img + 8, 200);
	put_be32(img + 16, 5000); /* longer than QEMU allows */
	write_bytes(path, img, sizeof(img));
	assert_refused(path, shared, 1, "is malformed");
	/* a version 3 header cut short */
	write_bytes(path, img, 80);
	assert_refused(path, shared, 1, "cut short");
}
END_TEST

START_TEST(test_missing_image)
{
	char err[256] = "";
	const char *path = in_dir("none.img");

	ck_assert_int_eq(shared_image_check(path, &path, 1, NULL, err, sizeof(err)), -ENOENT);
	ck_assert_ptr_nonnull(strstr(err, "cannot open it"));
}
END_TEST

/* Images made by qemu-img, so that the fields read are the real ones. */
static int run(const char *cmd)
{
	int rc = system(cmd);

	return rc == 0 ? 0 : -1;
}

START_TEST(test_qemu_img_images)
{
	const char *base = in_dir("qbase.raw"), *top = in_dir("qtop.qcow2");
	const char *data = in_dir("qdata.raw"), *ext = in_dir("qext.qcow2");
	const char *both[] = { top, base }, *top_only[] = { top }, *ext_and_data[] = { ext, data };
	char cmd[1024];

	if (run("command -v qemu-img >/dev/null 2>&1")) {
		fprintf(stderr, "check_shared_image: qemu_img_images skipped: no qemu-img "
			"(qemu-utils)\n");
		return;
	}
	snprintf(cmd, sizeof(cmd), "qemu-img create -q -f raw '%s' 1M && qemu-img create -q "
		 "-f qcow2 -b '%s' -F raw '%s' 1M && qemu-img create -q -f qcow2 -o "
		 "data_file='%s' '%s' 1M", base, base, top, data, ext);
	ck_assert_int_eq(run(cmd), 0);
	assert_passes(top, both, 2);
	assert_refused(top, top_only, 1, "not a shared disk of this agent");
	assert_refused(ext, ext_and_data, 2, "names an external data file");
	assert_passes(base, both, 2);
}
END_TEST

static int formats_of(char **argv, const char *const *shared, int nshared, bool *as_qcow2,
		      char *err, size_t errlen)
{
	int argc = 0;

	while (argv[argc])
		argc++;
	return shared_image_formats(argv, argc, shared, nshared, as_qcow2, err, errlen);
}

START_TEST(test_formats_from_argv)
{
	const char *shared[] = { "/s/a", "/s/b", "/s/c", "/s/d", "/s/e", "/s/f", "/s/g",
				 "/s/h", "/s/i", "/s/j" };
	char *argv[] = {
		"qemu-system-x86_64",
		"-drive", "file=/s/a,format=raw,if=virtio",
		"-drive", "file=/s/b,format=qcow2,if=virtio",
		/* raw over its file node: raw */
		"-blockdev", "driver=file,node-name=fc,filename=/s/c",
		"-blockdev", "driver=raw,node-name=rc,file=fc",
		/* qcow2 over its file node, key=value and JSON: qcow2 */
		"-blockdev", "driver=file,node-name=fd,filename=/s/d",
		"-blockdev", "driver=qcow2,node-name=qd,file=fd",
		"-blockdev", "{\"driver\":\"file\",\"node-name\":\"fe\",\"filename\":\"/s/e\"}",
		"-blockdev", "{\"driver\":\"qcow2\",\"node-name\":\"qe\",\"file\":\"fe\"}",
		/* a device right on the file node: no format, no header */
		"-blockdev", "driver=file,node-name=ff,filename=/s/f",
		"-device", "virtio-blk-pci,drive=ff",
		/* a qcow2 node whose backing is a raw node over /s/g: raw */
		"-blockdev", "driver=file,node-name=fg,filename=/s/g",
		"-blockdev", "driver=raw,node-name=rg,file=fg",
		"-blockdev", "driver=file,node-name=top,filename=/x/top.qcow2",
		"-blockdev", "driver=qcow2,node-name=qg,file=top,backing=rg",
		/* /s/h: not on this command line at all */
		/* qcow2 over a raw node (no offset) over /s/i: QEMU reads /s/i's
		 * header through the raw node */
		"-blockdev", "driver=file,node-name=fi,filename=/s/i",
		"-blockdev", "driver=raw,node-name=ri,file=fi",
		"-blockdev", "driver=qcow2,node-name=qi,file=ri",
		/* a file node named like an option's value ("on") is no
		 * reference: /s/j stays raw */
		"-blockdev", "driver=file,node-name=on,filename=/s/j",
		"-blockdev", "driver=raw,node-name=rj,file=on",
		"-blockdev", "driver=file,node-name=top2,filename=/x/top2.qcow2",
		"-blockdev", "driver=qcow2,node-name=qj,file=top2,lazy-refcounts=on",
		NULL
	};
	const bool want[] = { false, true, false, true, true, false, false, false, true, false };
	bool got[10];
	char err[512] = "";

	ck_assert_msg(formats_of(argv, shared, 10, got, err, sizeof(err)) == 0, "%s", err);
	for (int i = 0; i < 10; i++)
		ck_assert_msg(got[i] == want[i], "%s read as %s", shared[i],
			      got[i] ? "qcow2" : "raw");
}
END_TEST

/* A qcow2 node whose header is not at byte 0 of a shared file: through
 * a raw node with an offset or size, or through another format node
 * (whose guest data it would parse). The check reads byte 0: refused. A
 * -blockdev that does not parse: refused (the allowlist did first). A
 * -drive without a format (QEMU would probe it): read as qcow2. */
START_TEST(test_formats_refused_or_unclear)
{
	const char *shared[] = { "/s/a", "/s/b" };
	char *offset[] = { "qemu", "-blockdev", "driver=file,node-name=fa,filename=/s/a",
			   "-blockdev", "driver=raw,node-name=ra,file=fa,offset=65536",
			   "-blockdev", "driver=qcow2,node-name=qa,file=ra", NULL };
	char *nested[] = { "qemu", "-blockdev", "driver=file,node-name=fa,filename=/s/a",
			   "-blockdev", "driver=qcow2,node-name=inner,file=fa",
			   "-blockdev", "driver=qcow2,node-name=outer,file=inner", NULL };
	char *broken[] = { "qemu", "-blockdev", "{\"driver\":", NULL };
	char *probed[] = { "qemu", "-drive", "file=/s/a,if=virtio", NULL };
	bool got[2];
	char err[512] = "";

	ck_assert_int_eq(formats_of(offset, shared, 2, got, err, sizeof(err)), -EINVAL);
	ck_assert_msg(strstr(err, "'qa'") && strstr(err, "offset"), "%s", err);
	ck_assert(got[0] && got[1]);
	ck_assert_int_eq(formats_of(nested, shared, 2, got, err, sizeof(err)), -EINVAL);
	ck_assert_msg(strstr(err, "'outer'"), "%s", err);
	ck_assert_int_eq(formats_of(broken, shared, 2, got, err, sizeof(err)), -EINVAL);
	ck_assert(got[0] && got[1]);
	ck_assert_int_eq(formats_of(probed, shared, 2, got, err, sizeof(err)), 0);
	ck_assert(got[0] && !got[1]);
}
END_TEST

/* The guest writes every byte of a raw shared disk, a qcow2 header naming
 * a host file included: read as raw, that is data, and the restore goes
 * on; read as qcow2, it is refused. */
START_TEST(test_raw_bytes_are_data)
{
	const char *raw = in_dir("guest.raw");
	const char *shared[] = { raw };
	const bool as_raw[] = { false }, as_qcow2[] = { true };
	char err[512] = "";

	write_qcow2(raw, 3, "/etc/hostname", 0);
	ck_assert_int_eq(shared_images_check(shared, as_raw, 1, err, sizeof(err)), 0);
	ck_assert_int_eq(shared_images_check(shared, as_qcow2, 1, err, sizeof(err)), -EINVAL);
	ck_assert_msg(strstr(err, "shared disk ") && strstr(err, raw) &&
		      strstr(err, "'/etc/hostname'"), "%s", err);
}
END_TEST

/* A backing file named as qcow2 is read as qcow2 in turn, and looked
 * into; one named as raw is not. */
START_TEST(test_backing_chain_followed)
{
	const char *top = in_dir("top.qcow2"), *mid = in_dir("mid.qcow2");
	const char *base = in_dir("base.raw");
	const char *shared[] = { top, mid, base };
	const bool as_qcow2[] = { true, false, false };
	char err[512] = "";

	write_qcow2_fmt(top, 3, mid, "qcow2", 0);
	write_qcow2_fmt(mid, 3, "/etc/hostname", "raw", 0);
	write_qcow2(base, 3, "/etc/shadow", 0); /* the guest's bytes, read as raw */
	ck_assert_int_eq(shared_images_check(shared, as_qcow2, 3, err, sizeof(err)), -EINVAL);
	ck_assert_msg(strstr(err, mid) && strstr(err, "'/etc/hostname'"), "%s", err);
	write_qcow2_fmt(mid, 3, base, "raw", 0);
	ck_assert_msg(shared_images_check(shared, as_qcow2, 3, err, sizeof(err)) == 0, "%s", err);
}
END_TEST

static Suite *shared_image_suite(void)
{
	Suite *s = suite_create("shared_image");
	const struct {
		const char *name;
		const TTest *t;
	} cases[] = {
		{ "raw_and_short_images_pass", test_raw_and_short_images_pass },
		{ "qcow2_without_backing_passes", test_qcow2_without_backing_passes },
		{ "backing_host_file_refused", test_backing_host_file_refused },
		{ "backing_protocols_refused", test_backing_protocols_refused },
		{ "backing_on_shared_disk_passes", test_backing_on_shared_disk_passes },
		{ "backing_format_raw_or_qcow2", test_backing_format_raw_or_qcow2 },
		{ "extensions_read_to_the_end", test_extensions_read_to_the_end },
		{ "external_data_file_refused", test_external_data_file_refused },
		{ "malformed_backing_refused", test_malformed_backing_refused },
		{ "missing_image", test_missing_image },
		{ "qemu_img_images", test_qemu_img_images },
		{ "formats_from_argv", test_formats_from_argv },
		{ "formats_refused_or_unclear", test_formats_refused_or_unclear },
		{ "raw_bytes_are_data", test_raw_bytes_are_data },
		{ "backing_chain_followed", test_backing_chain_followed },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		tmp_fixture_add(s, tmp_setup, cases[i].name, cases[i].t, 10);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(shared_image_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
