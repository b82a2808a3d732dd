/*
 * Feeds every file of the engine's fuzz corpus (tests/fuzz/corpus/image:
 * seeds and inputs a fuzzing run kept) through the fuzz target, in normal
 * runs and under gcc, so that a crash once found stays fixed; and checks
 * that the seeds, real files of a snapshot, still parse.
 */
#include "engine/engine-int.h"
#include "fuzz-corpus.h"

static const char *corpus(void)
{
	return corpus_dir("tests/fuzz/corpus/image");
}

START_TEST(test_corpus)
{
	ck_assert_uint_ge(corpus_run(corpus()), 10);
}
END_TEST

START_TEST(test_seeds)
{
	_cleanup_free_ char *p = corpus_file(corpus(), "seed-process", NULL), *m = corpus_file(corpus(), "seed-maps", NULL),
			    *t = corpus_file(corpus(), "seed-regs", NULL);
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

	_cleanup_free_ char *tr = corpus_file(corpus(), "seed-tree", NULL), *ip = corpus_file(corpus(), "seed-ipc", NULL);
	struct tree tree = { 0 };
	struct ipc_image ipc = { 0 };
	ck_assert_msg(tree_parse(tr, &tree) == 0, "%s", err_msg());
	ck_assert_int_eq(tree.v[3].files, tree.v[0].pid);
	ck_assert_int_eq(tree.v[4].fs, tree.v[3].pid);
	tree_free(&tree);
	ck_assert_msg(ipc_parse(ip, &ipc) == 0, "%s", err_msg());
	ck_assert_uint_eq(ipc.nshm, 1);
	ck_assert_uint_eq(ipc.nsem, 1);
	ck_assert_uint_eq(ipc.sem[0].nsems, 3);
	ck_assert_uint_eq(ipc.nmsq, 1);
	ck_assert_uint_eq(ipc.msq[0].n, 3);
	ck_assert_uint_eq(ipc.msq[0].m[1].len, 0);
	ipc_image_free(&ipc);
}
END_TEST

/* What a restore cannot build or would misread is refused by the readers,
 * naming the line or the process. */
START_TEST(test_refused)
{
	static const struct {
		const char *text;
		int err;
		const char *says;
	} trees[] = {
		/* 3 shares 2's table, but its parent 1 does not */
		{ "1 0 1 1\n2 1 1 1\n3 1 1 1 files=2\n", -EOPNOTSUPP, "but its parent 1 does not" },
		{ "1 0 1 1\n2 1 1 1 files=3\n3 1 1 1\n", -EBADMSG, "not a live process with its own listed before it" },
		{ "1 0 1 1\n2 1 1 1 fs=1\n3 2 1 1 fs=2\n", -EBADMSG, "pid 3 shares its filesystem context" },
		{ "1 0 1 1\n2 1 1 1 zombie exit=0 files=1\n", -EBADMSG, "pid 2 shares its descriptor table" },
		{ "1 0 1 1\n2 1 1 1 files=0\n", -EBADMSG, "bad files= or fs=" },
	};
	for (size_t i = 0; i < ARRAY_SIZE(trees); i++) {
		struct tree t = { 0 };
		ck_assert_int_eq(tree_parse(trees[i].text, &t), trees[i].err);
		ck_assert_msg(strstr(err_msg(), trees[i].says), "%s: %s", trees[i].text, err_msg());
		tree_free(&t);
	}
	static const char *const ipcs[] = {
		"sem id=1 key=0x1 mode=0600 uid=0 gid=0 values=1\nsem id=1 key=0x2 mode=0600 uid=0 gid=0 values=1\n",
		"msg id=1 key=0x1 mode=0600 uid=0 gid=0 m=1:00\n",
		"msg id=1 key=0x1 mode=0600 uid=0 gid=0 qbytes=10 m=1:0\n",
		"sem id=1 key=0x1 mode=01600 uid=0 gid=0 values=1\n",
		"shm obj=0 id=1 key=0x1 mode=0600 uid=0 gid=0 size=0\n",
		"semaphore id=1\n",
	};
	for (size_t i = 0; i < ARRAY_SIZE(ipcs); i++) {
		struct ipc_image img = { 0 };
		ck_assert_msg(ipc_parse(ipcs[i], &img) == -EBADMSG, "accepted: %s", ipcs[i]);
		ck_assert_msg(strstr(err_msg(), "ipc"), "%s: %s", ipcs[i], err_msg());
		ipc_image_free(&img);
	}
}
END_TEST

int main(void)
{
	Suite *s = suite_create("fuzz-image");
	TCase *c = tcase_create("corpus");
	tcase_add_test(c, test_corpus);
	tcase_add_test(c, test_seeds);
	tcase_add_test(c, test_refused);
	suite_add_tcase(s, c);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
