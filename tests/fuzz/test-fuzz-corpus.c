/*
 * Feeds every file of the fuzz corpus (tests/fuzz/corpus/manifest: seeds
 * and any input a fuzzing run found interesting or crashing) through the
 * fuzz target, in normal runs and under gcc, so that a crash once found
 * stays fixed. Also checks what the seeds must give.
 */
#include "fuzz-corpus.h"
#include "store/store-int.h"

static const char *corpus(void)
{
	return corpus_dir("tests/fuzz/corpus/manifest");
}

static int parse_file(const char *name, struct manifest *m)
{
	size_t len;
	_cleanup_free_ char *text = corpus_file(corpus(), name, &len);

	memset(m, 0, sizeof(*m));
	return manifest_parse(text, len, m);
}

START_TEST(test_corpus)
{
	ck_assert_uint_ge(corpus_run(corpus()), 10);
}
END_TEST

START_TEST(test_seeds)
{
	static const char *const bad[] = {
		"version-3", "dotdot", "duplicate", "absurd-size", "count-lies",
		"file-and-dir", "nul", "other-hash", "reserved",
	};
	struct manifest m;

	ck_assert_int_eq(parse_file("valid-2", &m), 0);
	ck_assert_uint_eq(m.nfiles, 2);
	ck_assert_str_eq(m.files[1].path, "memory/00007f0000000000-00007f0000100000");
	ck_assert_uint_eq(m.files[1].size, 1048576);
	manifest_clear(&m);
	ck_assert_int_eq(parse_file("valid-empty", &m), 0);
	manifest_clear(&m);
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		int r = parse_file(bad[i], &m);
		ck_assert_msg(r == -EBADMSG, "%s: %d, want -EBADMSG", bad[i], r);
	}
}
END_TEST

int main(void)
{
	Suite *s = suite_create("fuzz-corpus");
	TCase *tc = tcase_create("corpus");
	tcase_add_test(tc, test_corpus);
	suite_add_tcase(s, tc);
	tc = tcase_create("seeds");
	tcase_add_test(tc, test_seeds);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
