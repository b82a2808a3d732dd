/*
 * common/: fault injection by number, error details, helpers.
 */
#include <check.h>
#include <sys/prctl.h>
#include <fcntl.h>
#include <sys/stat.h>

#include "common/common.h"

START_TEST(fault_fires_on_nth_hit)
{
	setenv("CKPTFS_FAULT", "7:3,9", 1);
	fault_reload();
	ck_assert(!fault_hit(7));
	ck_assert(!fault_hit(7));
	ck_assert(fault_hit(7));
	ck_assert(!fault_hit(7));
	ck_assert(fault_hit(9));
	ck_assert(fault_hit(9));
	ck_assert(!fault_hit(8));
}
END_TEST

START_TEST(fault_unset_never_fires)
{
	unsetenv("CKPTFS_FAULT");
	fault_reload();
	for (int i = 0; i < 1000; i++)
		ck_assert(!fault_hit(i));
}
END_TEST

START_TEST(err_detail_is_per_call)
{
	ck_assert_int_eq(err_set(-ENOENT, "file '%s' missing", "x"), -ENOENT);
	ck_assert_str_eq(err_msg(), "file 'x' missing");
	err_clear();
	ck_assert_str_eq(err_msg(), "");
}
END_TEST

START_TEST(parse_u64_rejects_junk)
{
	uint64_t v;
	ck_assert_int_eq(parse_u64("123", &v), 0);
	ck_assert_uint_eq(v, 123);
	ck_assert_int_eq(parse_u64("", &v), -EINVAL);
	ck_assert_int_eq(parse_u64("-1", &v), -EINVAL);
	ck_assert_int_eq(parse_u64("12x", &v), -EINVAL);
	ck_assert_int_eq(parse_u64("99999999999999999999999", &v), -EINVAL);
}
END_TEST

/* /proc/PID/stat by field number, the name's spaces and parentheses
 * skipped: our own state, parent and thread's flags; a pid that is not
 * there. */
START_TEST(proc_stat_fields)
{
	uint64_t f[PROC_STAT_FIELDS];
	ck_assert_int_ge(prctl(PR_SET_NAME, "a (b) c", 0, 0, 0), 0);
	ck_assert_int_ge(proc_stat_read(getpid(), 0, f), 52);
	ck_assert_int_eq(f[3], 'R');
	ck_assert_int_eq((pid_t)f[4], getppid());
	ck_assert_int_ge(proc_stat_read(getpid(), getpid(), f), 52);
	ck_assert_int_eq((pid_t)f[4], getppid());
	ck_assert_int_eq(proc_stat_read(0x3fffffff, 0, f), -ENOENT);
}
END_TEST

START_TEST(mkdir_p_and_rm_rf)
{
	char tmpl[] = "/tmp/ckptfs-test-XXXXXX", path[256], *buf;
	size_t len;
	ck_assert_ptr_nonnull(mkdtemp(tmpl));
	snprintf(path, sizeof(path), "%s/a/b/c", tmpl);
	ck_assert_int_eq(mkdir_p(path, 0700), 0);
	snprintf(path, sizeof(path), "%s/a/b/c/f", tmpl);
	int fd = open(path, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write_full(fd, "hello", 5), 0);
	close(fd);
	ck_assert_int_eq(read_file_full(path, &buf, &len), 0);
	ck_assert_uint_eq(len, 5);
	ck_assert_str_eq(buf, "hello");
	free(buf);
	ck_assert_int_eq(rm_rf(tmpl), 0);
	ck_assert_int_eq(access(tmpl, F_OK), -1);
	ck_assert_int_eq(rm_rf(tmpl), 0);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("common");
	TCase *tc = tcase_create("fault");
	tcase_add_test(tc, fault_fires_on_nth_hit);
	tcase_add_test(tc, fault_unset_never_fires);
	suite_add_tcase(s, tc);
	tc = tcase_create("util");
	tcase_add_test(tc, err_detail_is_per_call);
	tcase_add_test(tc, parse_u64_rejects_junk);
	tcase_add_test(tc, mkdir_p_and_rm_rf);
	tcase_add_test(tc, proc_stat_fields);
	suite_add_tcase(s, tc);

	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
