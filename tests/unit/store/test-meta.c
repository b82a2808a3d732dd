/*
 * store_meta_put / store_meta_get on both backends: a record reads back
 * as written, a second put replaces it, it survives closing and opening
 * the store again, listing snapshots does not see it, bad keys and
 * absent records are refused with their errno, and a read-only chunk
 * store reads records but refuses to write them.
 */
#include <check.h>

#include "store/store.h"
#include "common/common.h"

static char root[] = "/tmp/ckptfs-test-meta-XXXXXX";

static void setup(void)
{
	ck_assert_ptr_nonnull(mkdtemp(root));
}

static void teardown(void)
{
	rm_rf(root);
	strcpy(root, "/tmp/ckptfs-test-meta-XXXXXX");
}

static struct store *open_backend(int backend, bool read_only)
{
	struct store_options o = { .read_only = read_only };
	struct store *s = NULL;

	if (backend == STORE_BACKEND_DIR)
		ck_assert_int_eq(store_open_dir(root, &s), 0);
	else
		ck_assert_int_eq(store_open(root, &o, &s), 0);
	return s;
}

static void assert_record(struct store *s, const char *key, const char *want)
{
	char *got = NULL;
	size_t len = 0;

	ck_assert_int_eq(store_meta_get(s, key, &got, &len), 0);
	ck_assert_uint_eq(len, strlen(want));
	ck_assert_str_eq(got, want);
	free(got);
}

static int count_snap(const struct store_snap_info *info, void *ud)
{
	(*(int *)ud)++;
	return 0;
}

START_TEST(test_round_trip)
{
	int backend = _i ? STORE_BACKEND_CHUNK : STORE_BACKEND_DIR;
	struct store *s = open_backend(backend, false);
	struct store_snap *w = NULL;
	char *got = NULL;
	size_t len = 0;
	int n = 0;

	ck_assert_int_eq(store_meta_get(s, "policies", &got, &len), -ENOENT);
	ck_assert_int_eq(store_meta_put(s, "policies", "first\n", 6), 0);
	assert_record(s, "policies", "first\n");
	ck_assert_int_eq(store_meta_put(s, "policies", "second, longer\n", 15), 0);
	assert_record(s, "policies", "second, longer\n");
	ck_assert_int_eq(store_meta_put(s, "other", "", 0), 0);
	assert_record(s, "other", "");

	/* Keys follow the snapshot name rules, one component. */
	ck_assert_int_eq(store_meta_put(s, "a/b", "x", 1), -EINVAL);
	ck_assert_int_eq(store_meta_put(s, "..", "x", 1), -EINVAL);
	ck_assert_int_eq(store_meta_put(s, "", "x", 1), -EINVAL);
	ck_assert_int_eq(store_meta_get(s, "bad name", &got, &len), -EINVAL);

	/* Records are not snapshots. */
	ck_assert_int_eq(store_snap_create(s, backend == STORE_BACKEND_DIR ? "p.1" : "p/1", 0, &w), 0);
	ck_assert_int_eq(store_snap_put(w, "process", "x\n", 2), 0);
	ck_assert_int_eq(store_snap_commit(w), 0);
	store_snap_close(w);
	ck_assert_int_eq(store_foreach_snap(s, NULL, count_snap, &n), 0);
	ck_assert_int_eq(n, 1);
	store_close(s);

	/* Durable: the store opened again has them. */
	s = open_backend(backend, false);
	assert_record(s, "policies", "second, longer\n");
	assert_record(s, "other", "");
	store_close(s);
}
END_TEST

START_TEST(test_read_only)
{
	struct store *s = open_backend(STORE_BACKEND_CHUNK, false);

	ck_assert_int_eq(store_meta_put(s, "policies", "kept\n", 5), 0);
	store_close(s);
	s = open_backend(STORE_BACKEND_CHUNK, true);
	assert_record(s, "policies", "kept\n");
	ck_assert_int_eq(store_meta_put(s, "policies", "new\n", 4), -EROFS);
	assert_record(s, "policies", "kept\n");
	store_close(s);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("store-meta");
	TCase *tc = tcase_create("round_trip");
	SRunner *sr;
	int failed;

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_loop_test(tc, test_round_trip, 0, 2);
	suite_add_tcase(s, tc);
	tc = tcase_create("read_only");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, test_read_only);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
