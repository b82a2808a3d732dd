/*
 * store/: the hot chunk cache (store/hot.c). A block is kept from its
 * second offer on and handed back byte for byte; the least recently used
 * way of a full set goes; readers of files full of repeated blocks read
 * every byte as written, with the cache and without, from several
 * threads, and the cache serves the repeats.
 */
#include <check.h>
#include <inttypes.h>
#include <pthread.h>

#include "chunk-test.h"

static void setup(void)
{
	test_dir_setup("ckptfs-hot");
	unsetenv("CKPTFS_HOT_CACHE");
}

/* An id that falls in set `set` (ids are spread by their first word). */
static void id_in_set(uint8_t id[STORE_HASH_LEN], unsigned set, unsigned n)
{
	uint64_t w0 = (uint64_t)n * 256 + set;
	memset(id, 0, STORE_HASH_LEN);
	memcpy(id, &w0, sizeof(w0));
	id[8] = (uint8_t)n;
	id[9] = (uint8_t)(n >> 8);
	id[20] = (uint8_t)(n * 7 + 1);
}

START_TEST(kept_from_second_offer)
{
	struct hot *h;
	uint8_t id[STORE_HASH_LEN], a[STORE_BLOCK_SIZE], out[STORE_BLOCK_SIZE];
	uint64_t hits, puts;

	ck_assert_int_eq(hot_new(&h), 0);
	ck_assert_ptr_nonnull(h);
	fill_random(a, sizeof(a), 1);
	id_in_set(id, 5, 1);
	hot_offer(h, id, sizeof(a), a);
	ck_assert(!hot_get(h, id, sizeof(a), out));
	hot_offer(h, id, sizeof(a), a);
	memset(out, 0, sizeof(out));
	ck_assert(hot_get(h, id, sizeof(a), out));
	ck_assert(!memcmp(out, a, sizeof(a)));
	/* The length is part of the key. */
	ck_assert(!hot_get(h, id, 5000, out));
	hot_stats(h, &hits, &puts);
	ck_assert_uint_eq(hits, 1);
	ck_assert_uint_eq(puts, 1);
	hot_free(h);
}
END_TEST

START_TEST(least_recently_used_goes)
{
	struct hot *h;
	uint8_t id[6][STORE_HASH_LEN], b[6][STORE_BLOCK_SIZE], out[STORE_BLOCK_SIZE];

	ck_assert_int_eq(hot_new(&h), 0);
	for (unsigned i = 0; i < 6; i++) {
		id_in_set(id[i], 9, i + 1);
		fill_random(b[i], STORE_BLOCK_SIZE, 100 + i);
	}
	/* Four fill the set; 0 is used again, so 1 is the oldest. */
	for (unsigned i = 0; i < 4; i++) {
		hot_offer(h, id[i], STORE_BLOCK_SIZE, b[i]);
		hot_offer(h, id[i], STORE_BLOCK_SIZE, b[i]);
	}
	ck_assert(hot_get(h, id[0], STORE_BLOCK_SIZE, out));
	hot_offer(h, id[4], STORE_BLOCK_SIZE, b[4]);
	hot_offer(h, id[4], STORE_BLOCK_SIZE, b[4]);
	ck_assert(!hot_get(h, id[1], STORE_BLOCK_SIZE, out));
	for (unsigned i = 0; i < 5; i++) {
		if (i == 1)
			continue;
		memset(out, 0, sizeof(out));
		ck_assert_msg(hot_get(h, id[i], STORE_BLOCK_SIZE, out), "block %u evicted", i);
		ck_assert_msg(!memcmp(out, b[i], STORE_BLOCK_SIZE), "block %u differs", i);
	}
	/* Offered once: it passes by and evicts nothing. */
	hot_offer(h, id[5], STORE_BLOCK_SIZE, b[5]);
	ck_assert(!hot_get(h, id[5], STORE_BLOCK_SIZE, out));
	ck_assert(hot_get(h, id[2], STORE_BLOCK_SIZE, out));
	hot_free(h);
}
END_TEST

/* A file where a few blocks recur between unique ones, as a heap full of
 * one pattern does, ending in a short block that three files share. */
#define PATTERNS 5
static uint8_t *repeats_file(size_t blocks, size_t tail, uint64_t seed)
{
	size_t len = blocks * STORE_BLOCK_SIZE + tail;
	uint8_t *p = calloc(1, len), pat[PATTERNS][STORE_BLOCK_SIZE];
	ck_assert_ptr_nonnull(p);
	for (unsigned i = 0; i < PATTERNS; i++)
		for (size_t o = 0; o < STORE_BLOCK_SIZE; o++)
			pat[i][o] = (uint8_t)("pattern block "[o % 14] + i);
	for (size_t b = 0; b < blocks; b++) {
		uint8_t *q = p + b * STORE_BLOCK_SIZE;
		uint64_t k = rng_next(&seed) % 8;
		if (k < PATTERNS)
			memcpy(q, pat[k], STORE_BLOCK_SIZE);
		else if (k == PATTERNS)
			fill_random(q, STORE_BLOCK_SIZE, rng_next(&seed));
		/* else zeros */
	}
	for (size_t o = 0; o < tail; o++)
		p[blocks * STORE_BLOCK_SIZE + o] = (uint8_t)(o * 13 + 1);
	return p;
}

struct reader {
	struct store_snap *snap;
	const char *path;
	const uint8_t *data;
	size_t len, piece;
	uint64_t seed;
	unsigned bad;
};

static void *read_file(void *p)
{
	struct reader *t = p;
	struct store_file *f;
	uint8_t *buf = malloc(t->piece);

	if (!buf || store_file_open(t->snap, t->path, &f) < 0) {
		t->bad++;
		free(buf);
		return NULL;
	}
	/* Sequential, then a stretch of random reads. */
	for (size_t o = 0; o < t->len; o += t->piece) {
		size_t want = MIN(t->piece, t->len - o);
		if (store_file_pread(f, buf, t->piece, o) != (ssize_t)want || memcmp(buf, t->data + o, want))
			t->bad++;
	}
	for (int i = 0; i < 300; i++) {
		uint64_t off = rng_next(&t->seed) % t->len;
		size_t n = 1 + rng_next(&t->seed) % t->piece, want = MIN(n, t->len - off);
		if (store_file_pread(f, buf, n, off) != (ssize_t)want || memcmp(buf, t->data + off, want))
			t->bad++;
	}
	store_file_close(f);
	free(buf);
	return NULL;
}

static void read_all(bool hot, bool readahead)
{
	struct store *s;
	struct store_snap *r;
	struct file_spec fs[3] = { { "memory/a", NULL, 0 }, { "memory/b", NULL, 0 }, { "memory/c", NULL, 0 } };
	uint8_t *data[3];
	struct reader t[6];
	pthread_t th[6];
	uint64_t hits, puts;

	if (!hot)
		setenv("CKPTFS_HOT_CACHE", "0", 1);
	if (!readahead)
		setenv("CKPTFS_READAHEAD", "0", 1);
	s = open_store();
	for (unsigned i = 0; i < 3; i++) {
		fs[i].data = data[i] = repeats_file(400 + 100 * i, 5000, 7 + i);
		fs[i].len = (400 + 100 * i) * STORE_BLOCK_SIZE + 5000;
	}
	write_snap(s, "x", fs, 3);
	ck_assert_int_eq(store_snap_open(s, "x", 0, &r), 0);
	for (unsigned i = 0; i < 6; i++) {
		const struct file_spec *f = &fs[i % 3];
		t[i] = (struct reader){ r, f->path, f->data, f->len, i % 2 ? 100000 : MiB, 40 + i, 0 };
		ck_assert_int_eq(pthread_create(&th[i], NULL, read_file, &t[i]), 0);
	}
	for (unsigned i = 0; i < 6; i++) {
		pthread_join(th[i], NULL);
		ck_assert_msg(t[i].bad == 0, "reader %u (%s, pieces of %zu): %u reads wrong", i, t[i].path,
			      t[i].piece, t[i].bad);
	}
	hot_stats(to_cs(s)->hot, &hits, &puts);
	if (hot) {
		ck_assert_msg(hits > 100, "the cache served %" PRIu64 " blocks", hits);
		ck_assert_uint_ge(puts, PATTERNS);
	} else {
		ck_assert_ptr_null(to_cs(s)->hot);
	}
	store_snap_close(r);
	store_close(s);
	for (unsigned i = 0; i < 3; i++)
		free(data[i]);
	unsetenv("CKPTFS_HOT_CACHE");
	unsetenv("CKPTFS_READAHEAD");
}

START_TEST(repeated_blocks_exact)
{
	read_all(true, true);
}
END_TEST

START_TEST(repeated_blocks_exact_no_readahead)
{
	read_all(true, false);
}
END_TEST

START_TEST(repeated_blocks_exact_cache_off)
{
	read_all(false, true);
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("store-hot");
	TCase *c = tcase_create("hot");
	tcase_add_checked_fixture(c, setup, teardown);
	tcase_set_timeout(c, 120);
	tcase_add_test(c, kept_from_second_offer);
	tcase_add_test(c, least_recently_used_goes);
	tcase_add_test(c, repeated_blocks_exact);
	tcase_add_test(c, repeated_blocks_exact_no_readahead);
	tcase_add_test(c, repeated_blocks_exact_cache_off);
	suite_add_tcase(s, c);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(suite());
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
