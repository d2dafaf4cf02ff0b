/* text_sanitize, and the log line that applies it to every message: text
 * from the wire or the VM cannot forge a line of its own. */
#include "log.h"
#include "text.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

START_TEST(test_control_characters_become_question_marks)
{
	char out[64];

	ck_assert_uint_eq(text_sanitize(out, sizeof(out), "vm1\nSTATUS=x\r\t\x1b[0m\x7f!"), 20);
	ck_assert_str_eq(out, "vm1?STATUS=x???[0m?!");
}
END_TEST

START_TEST(test_plain_and_utf8_text_pass)
{
	char out[64];

	text_sanitize(out, sizeof(out), "vm-1 \xc3\xa9t\xc3\xa9 ~");
	ck_assert_str_eq(out, "vm-1 \xc3\xa9t\xc3\xa9 ~");
}
END_TEST

START_TEST(test_truncates_and_works_in_place)
{
	char out[5], buf[] = "a\nb\nc";

	ck_assert_uint_eq(text_sanitize(out, sizeof(out), "abcdefgh"), 4);
	ck_assert_str_eq(out, "abcd");
	ck_assert_uint_eq(text_sanitize(out, 0, "x"), 0);
	ck_assert_str_eq(out, "abcd");
	text_sanitize(buf, sizeof(buf), buf);
	ck_assert_str_eq(buf, "a?b?c");
}
END_TEST

START_TEST(test_dup)
{
	char *s = text_sanitize_dup("\x01name\x1f");

	ck_assert_str_eq(s, "?name?");
	free(s);
}
END_TEST

/* What log_msg writes to stderr, for one message (or, without vm, what
 * log_lines writes for two lines of our own). */
static char *log_line(const char *vm)
{
	static char buf[2048];
	FILE *f = tmpfile();
	int saved = dup(STDERR_FILENO);
	size_t n;

	ck_assert_ptr_nonnull(f);
	fflush(stderr);
	dup2(fileno(f), STDERR_FILENO);
	log_init("check", 0);
	if (vm)
		log_info("VM %s: %s", vm, "protected");
	else
		log_lines(LOG_ERR, "  <memoryBacking>\n  </memoryBacking>");
	fflush(stderr);
	dup2(saved, STDERR_FILENO);
	close(saved);
	rewind(f);
	n = fread(buf, 1, sizeof(buf) - 1, f);
	buf[n] = 0;
	fclose(f);
	return buf;
}

START_TEST(test_log_line_is_one_line)
{
	const char *line = log_line("vm1\n12:00:00.000 remus-replicator info: forged");

	ck_assert_ptr_nonnull(strstr(line, " check info: VM vm1?12:00:00.000 remus-replicator "
				     "info: forged: protected\n"));
	ck_assert_ptr_eq(strchr(line, '\n'), line + strlen(line) - 1);
}
END_TEST

START_TEST(test_log_lines_one_each)
{
	const char *out = log_line(NULL), *second = strchr(out, '\n') + 1;

	ck_assert_ptr_nonnull(strstr(out, " check error:   <memoryBacking>\n"));
	ck_assert_ptr_nonnull(strstr(second, " check error:   </memoryBacking>\n"));
	ck_assert_ptr_eq(strchr(second, '\n'), out + strlen(out) - 1);
}
END_TEST

static Suite *text_suite(void)
{
	Suite *s = suite_create("text");
	TCase *tc = tcase_create("text");

	tcase_add_test(tc, test_control_characters_become_question_marks);
	tcase_add_test(tc, test_plain_and_utf8_text_pass);
	tcase_add_test(tc, test_truncates_and_works_in_place);
	tcase_add_test(tc, test_dup);
	tcase_add_test(tc, test_log_line_is_one_line);
	tcase_add_test(tc, test_log_lines_one_each);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(text_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
