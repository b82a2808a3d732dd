/*
 * store/name.c: snapshot names and file paths that could step out of
 * their place are refused, with a detail naming them.
 */
#include <check.h>

#include "store/store-int.h"

START_TEST(good_paths)
{
	static const char *good[] = {
		"manifest", "process", "memory/00007f0000000000-00007f0000001000", "regs/123",
		"gpu/hbm", "a.b_c-d@e+f", "...", "..a", "a..", ".hidden", "a/b/c/d/e/f/g/h",
	};
	for (size_t i = 0; i < ARRAY_SIZE(good); i++)
		ck_assert_msg(store_path_valid(good[i]) == 0, "'%s' refused: %s", good[i], err_msg());
}
END_TEST

START_TEST(bad_paths)
{
	char long_comp[300], long_path[1100];
	static const char *bad[] = {
		"", "/abs", "a//b", ".", "..", "../x", "a/../b", "a/./b", "a/..", "a/", "/", "a b",
		"a\nb", "a\\b", "a*", "ä", "a/b/c/d/e/f/g/h/i", "x\t",
	};
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		err_clear();
		ck_assert_msg(store_path_valid(bad[i]) == -EINVAL, "'%s' accepted", bad[i]);
		ck_assert_msg(strstr(err_msg(), "invalid path"), "no detail for '%s'", bad[i]);
	}
	ck_assert_int_eq(store_path_valid(NULL), -EINVAL);

	memset(long_comp, 'a', 256);
	long_comp[256] = 0;
	ck_assert_int_eq(store_path_valid(long_comp), -EINVAL);
	ck_assert_ptr_nonnull(strstr(err_msg(), "component too long"));
	long_comp[255] = 0;
	ck_assert_int_eq(store_path_valid(long_comp), 0);

	/* 1025 bytes in 5 components of 204 */
	size_t n = 0;
	for (int c = 0; c < 5; c++) {
		if (c)
			long_path[n++] = '/';
		memset(long_path + n, 'b', 204);
		n += 204;
	}
	long_path[n] = 0;
	ck_assert_uint_eq(n, 1024);
	ck_assert_int_eq(store_path_valid(long_path), 0);
	long_path[n++] = 'b';
	long_path[n] = 0;
	ck_assert_int_eq(store_path_valid(long_path), -EINVAL);
	ck_assert_ptr_nonnull(strstr(err_msg(), "too long"));
}
END_TEST

START_TEST(names)
{
	char long_name[300];

	ck_assert_int_eq(store_name_valid("1234"), 0);
	ck_assert_int_eq(store_name_valid("1234/5"), 0);
	ck_assert_int_eq(name_check("1234/5", 1), -EINVAL);
	ck_assert_ptr_nonnull(strstr(err_msg(), "snapshot name '1234/5'"));
	ck_assert_int_eq(store_name_valid(".."), -EINVAL);
	ck_assert_int_eq(store_name_valid("/x"), -EINVAL);
	ck_assert_int_eq(store_name_valid(""), -EINVAL);
	memset(long_name, 'n', 256);
	long_name[256] = 0;
	ck_assert_int_eq(store_name_valid(long_name), -EINVAL);
	long_name[255] = 0;
	ck_assert_int_eq(store_name_valid(long_name), 0);
}
END_TEST

START_TEST(detail_hides_control_chars)
{
	ck_assert_int_eq(store_path_valid("a\033[2Jb"), -EINVAL);
	ck_assert_ptr_null(strchr(err_msg(), '\033'));
}
END_TEST

int main(void)
{
	Suite *s = suite_create("store-name");
	TCase *tc = tcase_create("paths");
	tcase_add_test(tc, good_paths);
	tcase_add_test(tc, bad_paths);
	tcase_add_test(tc, detail_hides_control_chars);
	suite_add_tcase(s, tc);
	tc = tcase_create("names");
	tcase_add_test(tc, names);
	suite_add_tcase(s, tc);

	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
