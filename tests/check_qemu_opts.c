/* QEMU option values: "driver,key=value" with ",," for a literal comma. */
#include "qemu_opts.h"

#include <check.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

static void assert_prints(const struct qemu_opts *o, const char *want)
{
	char *s = qemu_opts_print(o);

	ck_assert_ptr_nonnull(s);
	ck_assert_str_eq(s, want);
	free(s);
}

START_TEST(test_parse_basic)
{
	struct qemu_opts o;

	ck_assert_int_eq(qemu_opts_parse("memory-backend-file,id=ram0,size=128M,prealloc", &o), 0);
	ck_assert_uint_eq(o.n, 4);
	ck_assert_ptr_null(o.v[0].key);
	ck_assert_str_eq(qemu_opts_first_bare(&o), "memory-backend-file");
	ck_assert_str_eq(qemu_opts_get(&o, "id"), "ram0");
	ck_assert_str_eq(qemu_opts_get(&o, "size"), "128M");
	/* a flag: key without "=" */
	ck_assert_str_eq(o.v[3].key, "prealloc");
	ck_assert_ptr_null(o.v[3].value);
	ck_assert_ptr_null(qemu_opts_get(&o, "prealloc"));
	ck_assert_ptr_null(qemu_opts_get(&o, "nope"));
	ck_assert_ptr_null(qemu_opts_get(&o, NULL));
	assert_prints(&o, "memory-backend-file,id=ram0,size=128M,prealloc");
	qemu_opts_free(&o);
	ck_assert_ptr_null(o.v);
	ck_assert_uint_eq(o.n, 0);
}
END_TEST

START_TEST(test_no_bare)
{
	struct qemu_opts o;

	ck_assert_int_eq(qemu_opts_parse("if=virtio,file=/d/disk.img", &o), 0);
	ck_assert_ptr_null(qemu_opts_first_bare(&o));
	ck_assert_str_eq(qemu_opts_get(&o, "file"), "/d/disk.img");
	qemu_opts_free(&o);
}
END_TEST

START_TEST(test_escaped_commas)
{
	struct qemu_opts o;

	ck_assert_int_eq(qemu_opts_parse("file,,x,id=c0,path=/a,,b,,,logappend=on", &o), 0);
	ck_assert_uint_eq(o.n, 4);
	ck_assert_str_eq(qemu_opts_first_bare(&o), "file,x");
	/* ",,," is an escaped comma, then the separator (as QEMU reads it) */
	ck_assert_str_eq(qemu_opts_get(&o, "path"), "/a,b,");
	ck_assert_str_eq(qemu_opts_get(&o, "logappend"), "on");
	assert_prints(&o, "file,,x,id=c0,path=/a,,b,,,logappend=on");
	qemu_opts_free(&o);
}
END_TEST

START_TEST(test_value_with_equals)
{
	struct qemu_opts o;

	ck_assert_int_eq(qemu_opts_parse("fw_cfg,name=opt/x,string=a=b", &o), 0);
	ck_assert_str_eq(qemu_opts_get(&o, "string"), "a=b");
	assert_prints(&o, "fw_cfg,name=opt/x,string=a=b");
	qemu_opts_free(&o);
}
END_TEST

START_TEST(test_trailing_comma_and_empty)
{
	struct qemu_opts o;

	ck_assert_int_eq(qemu_opts_parse("none,", &o), 0);
	ck_assert_uint_eq(o.n, 1);
	ck_assert_str_eq(qemu_opts_first_bare(&o), "none");
	assert_prints(&o, "none");
	qemu_opts_free(&o);

	ck_assert_int_eq(qemu_opts_parse("", &o), 0);
	ck_assert_uint_eq(o.n, 0);
	ck_assert_ptr_null(qemu_opts_first_bare(&o));
	assert_prints(&o, "");
	qemu_opts_free(&o);

	ck_assert_int_eq(qemu_opts_parse("a=", &o), 0);
	ck_assert_str_eq(qemu_opts_get(&o, "a"), "");
	assert_prints(&o, "a=");
	qemu_opts_free(&o);
}
END_TEST

START_TEST(test_invalid)
{
	struct qemu_opts o = { NULL, 0 };

	ck_assert_int_eq(qemu_opts_parse("x,=oops", &o), -EINVAL);
	ck_assert_int_eq(qemu_opts_parse(NULL, &o), -EINVAL);
	ck_assert_ptr_null(o.v);
}
END_TEST

START_TEST(test_last_wins)
{
	struct qemu_opts o;

	ck_assert_int_eq(qemu_opts_parse("size=1G,id=a,size=2G", &o), 0);
	ck_assert_str_eq(qemu_opts_get(&o, "size"), "2G");
	qemu_opts_free(&o);
}
END_TEST

START_TEST(test_set_and_del)
{
	struct qemu_opts o;

	ck_assert_int_eq(qemu_opts_parse("memory-backend-memfd,id=r,share=off,size=1G,share=off,seal=on", &o), 0);
	/* replaced where it was, the duplicate removed */
	ck_assert_int_eq(qemu_opts_set(&o, "share", "on"), 0);
	assert_prints(&o, "memory-backend-memfd,id=r,share=on,size=1G,seal=on");
	/* appended */
	ck_assert_int_eq(qemu_opts_set(&o, "mem-path", "/dev/shm/a,b"), 0);
	assert_prints(&o, "memory-backend-memfd,id=r,share=on,size=1G,seal=on,mem-path=/dev/shm/a,,b");
	ck_assert_str_eq(qemu_opts_get(&o, "mem-path"), "/dev/shm/a,b");
	/* the bare value */
	ck_assert_int_eq(qemu_opts_set(&o, NULL, "memory-backend-file"), 0);
	qemu_opts_del(&o, "seal");
	qemu_opts_del(&o, "absent");
	assert_prints(&o, "memory-backend-file,id=r,share=on,size=1G,mem-path=/dev/shm/a,,b");
	/* a flag */
	ck_assert_int_eq(qemu_opts_set(&o, "prealloc", NULL), 0);
	assert_prints(&o, "memory-backend-file,id=r,share=on,size=1G,mem-path=/dev/shm/a,,b,prealloc");
	qemu_opts_free(&o);
}
END_TEST

START_TEST(test_set_bare_inserts_in_front)
{
	struct qemu_opts o;

	ck_assert_int_eq(qemu_opts_parse("id=c0,path=/x", &o), 0);
	ck_assert_int_eq(qemu_opts_set(&o, NULL, "file"), 0);
	ck_assert_str_eq(qemu_opts_first_bare(&o), "file");
	assert_prints(&o, "file,id=c0,path=/x");
	qemu_opts_del(&o, NULL);
	assert_prints(&o, "id=c0,path=/x");
	qemu_opts_free(&o);

	/* building from nothing */
	ck_assert_int_eq(qemu_opts_set(&o, "id", "x"), 0);
	ck_assert_int_eq(qemu_opts_set(&o, NULL, "null"), 0);
	assert_prints(&o, "null,id=x");
	qemu_opts_free(&o);
}
END_TEST

static void add(Suite *s, const char *name, const TTest *test)
{
	TCase *tc = tcase_create(name);

	tcase_set_timeout(tc, 5);
	tcase_add_test(tc, test);
	suite_add_tcase(s, tc);
}

static Suite *qemu_opts_suite(void)
{
	Suite *s = suite_create("qemu_opts");

	add(s, "parse_basic", test_parse_basic);
	add(s, "no_bare", test_no_bare);
	add(s, "escaped_commas", test_escaped_commas);
	add(s, "value_with_equals", test_value_with_equals);
	add(s, "trailing_comma_and_empty", test_trailing_comma_and_empty);
	add(s, "invalid", test_invalid);
	add(s, "last_wins", test_last_wins);
	add(s, "set_and_del", test_set_and_del);
	add(s, "set_bare_inserts_in_front", test_set_bare_inserts_in_front);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(qemu_opts_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
