/*
 * Feeds every file of the engine's fuzz corpus (tests/fuzz/corpus/image:
 * seeds and inputs a fuzzing run kept) through the fuzz target, in normal
 * runs and under gcc, so that a crash once found stays fixed; and checks
 * that the seeds, real files of a snapshot, still parse.
 */
#include <check.h>
#include <dirent.h>

#include "engine/engine-int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char *corpus(void)
{
	const char *d = getenv("FUZZ_CORPUS");
	return d && *d ? d : "tests/fuzz/corpus/image";
}

static char *seed(const char *name)
{
	char path[4096];
	char *text = NULL;
	snprintf(path, sizeof(path), "%s/%s", corpus(), name);
	ck_assert_msg(read_file_full(path, &text, NULL) >= 0, "cannot read %s", path);
	return text;
}

START_TEST(test_corpus)
{
	DIR *d = opendir(corpus());
	struct dirent *de;
	unsigned n = 0;

	ck_assert_msg(d, "no corpus at %s", corpus());
	while ((de = readdir(d))) {
		char path[4096];
		_cleanup_free_ char *text = NULL;
		size_t len;

		if (de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s", corpus(), de->d_name);
		ck_assert_int_ge(read_file_full(path, &text, &len), 0);
		LLVMFuzzerTestOneInput((const uint8_t *)text, len);
		n++;
	}
	closedir(d);
	ck_assert_uint_ge(n, 10);
}
END_TEST

START_TEST(test_seeds)
{
	_cleanup_free_ char *p = seed("seed-process"), *m = seed("seed-maps"), *t = seed("seed-regs");
	struct proc_image img = { 0 };
	struct thread_image th = { 0 };
	struct vma *v = NULL;
	size_t n = 0;

	ck_assert_msg(process_parse(p, &img) == 0, "%s", err_msg());
	ck_assert_uint_eq(img.nptimers, 4);
	proc_image_free(&img);
	ck_assert_msg(maps_parse_image(m, &v, &n) == 0, "%s", err_msg());
	ck_assert_uint_gt(n, 5);
	vmas_free(v, n);
	ck_assert_msg(thread_parse(t, "regs/1", &th) == 0, "%s", err_msg());
	thread_image_free(&th);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("fuzz-image");
	TCase *c = tcase_create("corpus");
	tcase_add_test(c, test_corpus);
	tcase_add_test(c, test_seeds);
	suite_add_tcase(s, c);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
