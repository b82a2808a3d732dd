/*
 * store/: the chunk store backend, through the public interface (and the
 * private header where a test must damage the store on purpose).
 */
#include <check.h>
#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "chunk-test.h"

static void setup(void)
{
	test_dir_setup("ckptfs-chunk");
}

/* ---- data ---------------------------------------------------------------- */


/* ---- helpers --------------------------------------------------------------- */

static void check_file(struct store_snap *r, const char *path, const uint8_t *data, size_t len)
{
	struct store_file *f;
	struct store_stat st;
	uint8_t *buf = malloc(len + 1), h[STORE_HASH_LEN];
	int q = store_file_open(r, path, &f);
	ck_assert_msg(q == 0, "open %s: %s", path, err_msg());
	ck_assert_int_eq(store_file_stat(f, &st), 0);
	ck_assert_uint_eq(st.size, len);
	store_hash_buf(data, len, h);
	ck_assert_msg(!memcmp(st.hash, h, STORE_HASH_LEN), "%s: hash differs", path);
	/* Whole, then in odd pieces that straddle blocks. */
	ck_assert_int_eq(store_file_pread(f, buf, len + 1, 0), (ssize_t)len);
	ck_assert_msg(!memcmp(buf, data, len), "%s: content differs", path);
	memset(buf, 0xa5, len);
	for (size_t o = 0; o < len;) {
		size_t n = MIN((size_t)7777, len - o);
		ck_assert_int_eq(store_file_pread(f, buf + o, n, o), (ssize_t)n);
		o += n;
	}
	ck_assert_msg(!memcmp(buf, data, len), "%s: content differs (small reads)", path);
	ck_assert_int_eq(store_file_pread(f, buf, 10, len), 0);
	store_file_close(f);
	free(buf);
}

static void check_snap(struct store *s, const char *name, const struct file_spec *f, size_t n)
{
	struct store_snap *r;
	int q = store_snap_open(s, name, 0, &r);
	ck_assert_msg(q == 0, "open %s: %s", name, err_msg());
	for (size_t i = 0; i < n; i++)
		check_file(r, f[i].path, f[i].data, f[i].len);
	store_snap_close(r);
}

static void fsck_report(const char *object, const char *problem, void *ud)
{
	char *acc = ud;
	size_t l = strlen(acc);
	snprintf(acc + l, 8192 - l, "%s: %s\n", object, problem);
}

static void assert_fsck_clean(struct store *s)
{
	char acc[8192] = "";
	int r = store_fsck(s, fsck_report, acc);
	ck_assert_msg(r == 0, "fsck: %d problems: %s (%s)", r, acc, err_msg());
}

static uint64_t snap_stored(struct store *s, const char *name);

/* ---- tests ------------------------------------------------------------------- */

START_TEST(roundtrip_holes_and_seek)
{
	struct store *s = open_store();
	struct store_snap *w, *r;
	struct store_file *f;
	size_t len = 40 * STORE_PAGE_SIZE + 123; /* ends inside a block, inside a page */
	uint8_t *data = calloc(1, len);
	const char *text = "rip 0x401000\nrsp 0x7ffd0000\n";

	/* Pages: 0-3 data, 4-7 hole block, 8 zero then 9 data, 10-19 hole,
	 * 20-39 data except 25, then the tail page. */
	for (size_t pg = 0; pg <= 40; pg++) {
		bool on = pg < 4 || pg == 9 || (pg >= 20 && pg != 25);
		if (on)
			fill_random(data + pg * 4096, MIN((size_t)4096, len - pg * 4096), pg + 1);
	}
	ck_assert_int_eq(store_snap_create(s, "a", 0, &w), 0);
	ck_assert_int_eq(store_file_create(w, "memory/0000-1000", &f), 0);
	/* Unaligned pieces, out of order. */
	ck_assert_int_eq(store_file_pwrite(f, data + 50000, len - 50000, 50000), 0);
	ck_assert_int_eq(store_file_pwrite(f, data + 1000, 49000, 1000), 0);
	ck_assert_int_eq(store_file_pwrite(f, data, 1000, 0), 0);
	ck_assert_int_eq(store_file_close(f), 0);
	ck_assert_int_eq(store_snap_put(w, "regs/1", text, strlen(text)), 0);
	/* Page by page, in a scrambled order, the tail page first. */
	ck_assert_int_eq(store_file_create(w, "memory/pages", &f), 0);
	for (size_t k = 0; k <= 40; k++) {
		size_t pg = (k * 17 + 40) % 41;
		ck_assert_int_eq(store_file_pwrite(f, data + pg * 4096, MIN((size_t)4096, len - pg * 4096), pg * 4096), 0);
	}
	ck_assert_int_eq(store_file_close(f), 0);
	/* A file that is only a hole. */
	ck_assert_int_eq(store_file_create(w, "memory/empty", &f), 0);
	ck_assert_int_eq(store_file_set_size(f, 1 * MiB), 0);
	ck_assert_int_eq(store_file_close(f), 0);
	ck_assert_int_eq(store_snap_commit(w), 0);
	store_snap_close(w);
	store_close(s);

	s = open_store();
	struct file_spec fs[] = { { "memory/0000-1000", data, len },
				  { "memory/pages", data, len },
				  { "regs/1", (const uint8_t *)text, strlen(text) } };
	check_snap(s, "a", fs, 3);

	ck_assert_int_eq(store_snap_open(s, "a", 0, &r), 0);
	ck_assert_int_eq(store_file_open(r, "memory/0000-1000", &f), 0);
	ck_assert_int_eq(store_file_seek(f, 0, SEEK_DATA), 0);
	ck_assert_int_eq(store_file_seek(f, 0, SEEK_HOLE), 4 * 4096);
	ck_assert_int_eq(store_file_seek(f, 4 * 4096, SEEK_DATA), 9 * 4096);
	ck_assert_int_eq(store_file_seek(f, 9 * 4096 + 5, SEEK_HOLE), 10 * 4096);
	ck_assert_int_eq(store_file_seek(f, 10 * 4096, SEEK_DATA), 20 * 4096);
	ck_assert_int_eq(store_file_seek(f, 21 * 4096, SEEK_HOLE), 25 * 4096);
	ck_assert_int_eq(store_file_seek(f, 25 * 4096, SEEK_DATA), 26 * 4096);
	ck_assert_int_eq(store_file_seek(f, 26 * 4096, SEEK_HOLE), (int64_t)len);
	ck_assert_int_eq(store_file_seek(f, len, SEEK_DATA), -ENXIO);
	struct store_stat st;
	ck_assert_int_eq(store_file_stat(f, &st), 0);
	ck_assert_uint_eq(st.allocated, (4 + 1 + 19) * 4096 + 123);
	store_file_close(f);

	ck_assert_int_eq(store_file_open(r, "memory/empty", &f), 0);
	ck_assert_int_eq(store_file_seek(f, 0, SEEK_DATA), -ENXIO);
	ck_assert_int_eq(store_file_seek(f, 0, SEEK_HOLE), 0);
	uint8_t z[100];
	memset(z, 1, sizeof(z));
	ck_assert_int_eq(store_file_pread(f, z, sizeof(z), 5000), (ssize_t)sizeof(z));
	ck_assert(buf_is_zero(z, sizeof(z)));
	store_file_close(f);

	/* The manifest is a file, listed first, and agrees. */
	char *m;
	size_t ml;
	struct manifest man;
	ck_assert_int_eq(store_snap_read_all(r, STORE_MANIFEST, &m, &ml), 0);
	ck_assert_int_eq(manifest_parse(m, ml, &man), 0);
	ck_assert_uint_eq(man.nfiles, 4);
	const struct manifest_entry *e = manifest_find(&man, "memory/0000-1000");
	ck_assert_ptr_nonnull(e);
	uint8_t h[STORE_HASH_LEN];
	store_hash_buf(data, len, h);
	ck_assert(!memcmp(e->hash, h, STORE_HASH_LEN));
	manifest_clear(&man);
	free(m);
	store_snap_close(r);
	assert_fsck_clean(s);
	store_close(s);
	free(data);
}
END_TEST

/* A sparse 2 GiB file: data in a few of its 32 recipe segments (64 MiB
 * each); readers load segments on demand and keep only some. */
START_TEST(sparse_huge_file)
{
	struct store *s = open_store();
	const uint64_t seg = (uint64_t)STORE_BLOCK_SIZE * CHUNK_SEG_BLOCKS, size = 32 * seg;
	const uint64_t at[] = { 0, 5 * seg + 3 * 4096, 20 * seg + STORE_BLOCK_SIZE, 31 * seg + seg - 4096 };
	uint8_t page[4096], buf[8192];
	struct store_snap *w, *r;
	struct store_file *f;

	ck_assert_int_eq(store_snap_create(s, "big", 0, &w), 0);
	ck_assert_int_eq(store_file_create(w, "gpu/hbm", &f), 0);
	for (size_t i = 0; i < ARRAY_SIZE(at); i++) {
		fill_random(page, sizeof(page), i + 1);
		ck_assert_int_eq(store_file_pwrite(f, page, sizeof(page), at[i]), 0);
	}
	ck_assert_int_eq(store_file_set_size(f, size), 0);
	ck_assert_int_eq(store_file_close(f), 0);
	ck_assert_int_eq(store_snap_commit(w), 0);
	store_snap_close(w);

	ck_assert_int_eq(store_snap_open(s, "big", 0, &r), 0);
	ck_assert_int_eq(store_file_open(r, "gpu/hbm", &f), 0);
	/* Every segment touched, more than a reader keeps, twice. */
	for (int pass = 0; pass < 2; pass++)
		for (uint64_t sg = 0; sg < 32; sg++) {
			uint64_t o = sg * seg + (sg == 5 ? 3 * 4096 : 0);
			ck_assert_int_eq(store_file_pread(f, buf, sizeof(buf), o), (ssize_t)sizeof(buf));
			bool data = false;
			for (size_t i = 0; i < ARRAY_SIZE(at); i++)
				if (at[i] == o) {
					fill_random(page, sizeof(page), i + 1);
					ck_assert(!memcmp(buf, page, 4096));
					data = true;
				}
			if (!data)
				ck_assert(buf_is_zero(buf, 4096));
		}
	ck_assert_int_eq(store_file_pread(f, buf, sizeof(buf), at[3]), 4096);
	fill_random(page, sizeof(page), 4);
	ck_assert(!memcmp(buf, page, 4096));
	/* SEEK_DATA jumps over empty segments; SEEK_HOLE finds the page ends. */
	ck_assert_int_eq(store_file_seek(f, 4096, SEEK_DATA), (int64_t)at[1]);
	ck_assert_int_eq(store_file_seek(f, at[1], SEEK_HOLE), (int64_t)at[1] + 4096);
	ck_assert_int_eq(store_file_seek(f, at[1] + 4096, SEEK_DATA), (int64_t)at[2]);
	ck_assert_int_eq(store_file_seek(f, at[2] + 1, SEEK_DATA), (int64_t)at[2] + 1);
	ck_assert_int_eq(store_file_seek(f, at[2] + 4096, SEEK_DATA), (int64_t)at[3]);
	ck_assert_int_eq(store_file_seek(f, at[3], SEEK_HOLE), (int64_t)size);
	ck_assert_int_eq(store_file_seek(f, 0, SEEK_HOLE), 4096);
	struct store_stat st;
	ck_assert_int_eq(store_file_stat(f, &st), 0);
	ck_assert_uint_eq(st.size, size);
	ck_assert_uint_eq(st.allocated, 4 * 4096);
	store_file_close(f);
	store_snap_close(r);
	assert_fsck_clean(s);
	store_close(s);
}
END_TEST

static int count_cb(const struct store_snap_info *info, void *ud)
{
	(*(int *)ud)++;
	return 0;
}

struct stored_q {
	const char *name;
	uint64_t stored;
	bool found;
};

static int stored_cb(const struct store_snap_info *info, void *ud)
{
	struct stored_q *q = ud;
	if (!strcmp(info->name, q->name)) {
		q->stored = info->stored;
		q->found = true;
	}
	return 0;
}

static uint64_t snap_stored(struct store *s, const char *name)
{
	struct stored_q q = { name, 0, false };
	ck_assert_int_eq(store_foreach_snap(s, NULL, stored_cb, &q), 0);
	ck_assert_msg(q.found, "snapshot %s not listed", name);
	return q.stored;
}

START_TEST(zero_pages_cost_nothing)
{
	struct store *s = open_store();
	size_t len = 4 * MiB;
	uint8_t *data = calloc(1, len);
	struct store_stats st;

	/* One page of data in a sea of zeros. */
	fill_random(data + 2 * MiB + 4096, 4096, 7);
	struct file_spec fs[] = { { "memory/a", data, len } };
	write_snap(s, "z", fs, 1);
	ck_assert_int_eq(store_stats(s, &st), 0);
	ck_assert_uint_eq(st.chunks, 1);
	ck_assert_uint_eq(st.chunk_bytes, STORE_BLOCK_SIZE);
	/* The record holds one page: the three zero pages of its block are cut. */
	ck_assert_uint_le(st.stored_bytes, 4096 + sizeof(struct rec_hdr));
	ck_assert_uint_le(snap_stored(s, "z"), 4096 + sizeof(struct rec_hdr));
	check_snap(s, "z", fs, 1);
	store_close(s);
	free(data);
}
END_TEST

START_TEST(same_data_twice_writes_nothing)
{
	struct store *s = open_store();
	size_t len = 3 * MiB;
	uint8_t *data = memory_like(len, 11);
	struct store_stats a, b;

	struct file_spec fs[] = { { "memory/a", data, len }, { "memory/b", data, len } };
	write_snap(s, "one", fs, 1);
	ck_assert_int_eq(store_stats(s, &a), 0);
	ck_assert_uint_gt(snap_stored(s, "one"), 0);
	/* Again, and once more inside one snapshot: no new chunk bytes. */
	write_snap(s, "two", fs, 2);
	ck_assert_int_eq(store_stats(s, &b), 0);
	ck_assert_uint_eq(snap_stored(s, "two"), 0);
	ck_assert_uint_eq(a.stored_bytes, b.stored_bytes);
	ck_assert_uint_eq(a.pack_bytes, b.pack_bytes);
	ck_assert_uint_eq(a.chunks, b.chunks);
	check_snap(s, "two", fs, 2);
	assert_fsck_clean(s);
	store_close(s);
	free(data);
}
END_TEST

START_TEST(small_change_adds_little)
{
	struct store *s = open_store();
	size_t len = 8 * MiB, pages = len / 4096;
	uint8_t *data = malloc(len);
	uint64_t seed = 5;

	fill_random(data, len, 3);
	struct file_spec fs[] = { { "memory/a", data, len } };
	write_snap(s, "one", fs, 1);
	uint64_t first = snap_stored(s, "one");
	/* 1% of the pages change. */
	for (size_t i = 0; i < pages / 100; i++)
		data[(rng_next(&seed) % pages) * 4096 + 17] ^= 0x5a;
	write_snap(s, "two", fs, 1);
	uint64_t second = snap_stored(s, "two");
	ck_assert_uint_gt(second, 0);
	/* At most one block per changed page. */
	ck_assert_uint_le(second, (pages / 100) * (STORE_BLOCK_SIZE + sizeof(struct rec_hdr)));
	ck_assert_uint_lt(second * 100, first * 5);
	check_snap(s, "two", fs, 1);
	store_close(s);
	free(data);
}
END_TEST

struct thr {
	struct store *s;
	int n;
	uint8_t *a, *b;
	size_t len;
};

static void *writer_thread(void *p)
{
	struct thr *t = p;
	char name[32];
	snprintf(name, sizeof(name), "t%d", t->n);
	struct file_spec fs[] = { { "memory/a", t->a, t->len }, { "memory/shared", t->b, t->len } };
	write_snap(t->s, name, fs, 2);
	return NULL;
}

START_TEST(concurrent_snapshots)
{
	struct store *s = open_store();
	enum { N = 4 };
	pthread_t th[N];
	struct thr t[N];
	size_t len = 2 * MiB;
	uint8_t *shared = memory_like(len, 99);

	for (int i = 0; i < N; i++) {
		t[i] = (struct thr){ s, i, memory_like(len, 100 + i), shared, len };
		ck_assert_int_eq(pthread_create(&th[i], NULL, writer_thread, &t[i]), 0);
	}
	for (int i = 0; i < N; i++)
		pthread_join(th[i], NULL);
	store_close(s);
	s = open_store();
	int count = 0;
	ck_assert_int_eq(store_foreach_snap(s, "t", count_cb, &count), 0);
	ck_assert_int_eq(count, N);
	for (int i = 0; i < N; i++) {
		char name[32];
		snprintf(name, sizeof(name), "t%d", i);
		struct file_spec fs[] = { { "memory/a", t[i].a, len }, { "memory/shared", shared, len } };
		check_snap(s, name, fs, 2);
		free(t[i].a);
	}
	assert_fsck_clean(s);
	store_close(s);
	free(shared);
}
END_TEST

START_TEST(delete_and_gc_give_space_back)
{
	struct store *s = open_store();
	size_t big = 6 * MiB, small = 1 * MiB;
	uint8_t *x = malloc(big), *y = malloc(small);
	struct store_stats a, b;
	struct store_gc_stats g;

	fill_random(x, big, 1);
	fill_random(y, small, 2);
	struct file_spec fx[] = { { "memory/x", x, big } }, fy[] = { { "memory/y", y, small } };
	write_snap(s, "x", fx, 1);
	write_snap(s, "y", fy, 1);
	ck_assert_int_eq(store_stats(s, &a), 0);
	ck_assert_int_eq(store_snap_delete(s, "x"), 0);
	ck_assert_int_eq(store_snap_delete(s, "x"), -ENOENT);
	ck_assert_int_eq(store_gc(s, &g), 0);
	ck_assert_uint_eq(g.chunks_freed, big / STORE_BLOCK_SIZE);
	/* x and y shared a pack: it was mostly dead and got rewritten. */
	ck_assert_uint_ge(g.packs_rewritten + g.packs_deleted, 1);
	ck_assert_uint_ge(g.bytes_freed, big);
	ck_assert_int_eq(store_stats(s, &b), 0);
	ck_assert_uint_lt(b.pack_bytes, a.pack_bytes - big);
	check_snap(s, "y", fy, 1);
	assert_fsck_clean(s);
	/* The same handle once knew x's chunks; gc freed them, so writing x
	 * again must store them again. */
	write_snap(s, "x2", fx, 1);
	check_snap(s, "x2", fx, 1);
	assert_fsck_clean(s);
	ck_assert_int_eq(store_snap_delete(s, "x2"), 0);
	store_close(s);

	/* Everything deleted: no pack bytes left. */
	s = open_store();
	check_snap(s, "y", fy, 1);
	ck_assert_int_eq(store_snap_delete(s, "y"), 0);
	ck_assert_int_eq(store_gc(s, &g), 0);
	ck_assert_int_eq(store_stats(s, &b), 0);
	ck_assert_uint_eq(b.pack_bytes, 0);
	ck_assert_uint_eq(b.chunks, 0);
	ck_assert_uint_eq(b.snapshots, 0);
	assert_fsck_clean(s);
	store_close(s);
	free(x);
	free(y);
}
END_TEST

/* A file written in page pieces in a shuffled order, some pages never
 * written (holes), some pieces spanning two blocks: every block goes
 * through the partial-block path, thousands at once. */
START_TEST(pieces_in_any_order)
{
	struct store *s = open_store();
	size_t len = 4 * MiB + 3000, np = (len + 4095) / 4096;
	uint8_t *x = calloc(1, len);
	size_t *order = malloc(np * sizeof(*order));
	uint64_t rng = 42;
	struct store_snap *w;
	struct store_file *f;

	fill_random(x, len, 9);
	for (size_t i = 0; i < np; i++)
		order[i] = i;
	for (size_t i = np - 1; i > 0; i--) {
		size_t j = rng_next(&rng) % (i + 1), t = order[i];
		order[i] = order[j];
		order[j] = t;
	}
	ck_assert_int_eq(store_snap_create(s, "p", 0, &w), 0);
	ck_assert_int_eq(store_file_create(w, "memory/p", &f), 0);
	for (size_t k = 0; k < np; k++) {
		size_t pg = order[k], off = pg * 4096, n = MIN((size_t)4096, len - off);
		if (pg % 5 == 3) { /* a hole: never written, reads as zeros */
			memset(x + off, 0, n);
			continue;
		}
		/* Odd pages go out in two pieces, the first ending mid-page. */
		if (pg % 2 && n > 100) {
			ck_assert_int_eq(store_file_pwrite(f, x + off, 100, off), 0);
			ck_assert_int_eq(store_file_pwrite(f, x + off + 100, n - 100, off + 100), 0);
		} else {
			ck_assert_int_eq(store_file_pwrite(f, x + off, n, off), 0);
		}
	}
	ck_assert_int_eq(store_file_set_size(f, len), 0);
	ck_assert_int_eq(store_file_close(f), 0);
	ck_assert_int_eq(store_snap_commit(w), 0);
	store_snap_close(w);
	struct file_spec fp[] = { { "memory/p", x, len } };
	check_snap(s, "p", fp, 1);
	assert_fsck_clean(s);
	store_close(s);
	free(order);
	free(x);
}
END_TEST

/* References are counted at gc, not at commit: a snapshot deleted before
 * any gc counted it must not take chunks from one that shares them, and
 * one deleted after must give its share back. */
START_TEST(counts_settle_at_gc)
{
	struct store *s = open_store();
	size_t big = 2 * MiB;
	uint8_t *x = malloc(big);
	struct store_gc_stats g;
	struct store_stats st;

	fill_random(x, big, 7);
	struct file_spec fx[] = { { "memory/x", x, big } };
	write_snap(s, "a", fx, 1);
	write_snap(s, "b", fx, 1);
	assert_fsck_clean(s);
	ck_assert_int_eq(store_gc(s, &g), 0); /* a and b counted */
	ck_assert_uint_eq(g.chunks_freed, 0);
	write_snap(s, "c", fx, 1);                /* not counted yet */
	ck_assert_int_eq(store_snap_delete(s, "a"), 0); /* counted: subtracts */
	ck_assert_int_eq(store_snap_delete(s, "c"), 0); /* pending: drops its key */
	assert_fsck_clean(s);
	ck_assert_int_eq(store_gc(s, &g), 0);
	ck_assert_uint_eq(g.chunks_freed, 0);
	check_snap(s, "b", fx, 1);
	assert_fsck_clean(s);
	store_close(s);

	/* After a reopen, the last user goes: every chunk is freed. */
	s = open_store();
	write_snap(s, "d", fx, 1);
	ck_assert_int_eq(store_snap_delete(s, "b"), 0);
	ck_assert_int_eq(store_gc(s, &g), 0);
	ck_assert_uint_eq(g.chunks_freed, 0);
	check_snap(s, "d", fx, 1);
	ck_assert_int_eq(store_snap_delete(s, "d"), 0);
	ck_assert_int_eq(store_gc(s, &g), 0);
	ck_assert_uint_eq(g.chunks_freed, big / STORE_BLOCK_SIZE);
	ck_assert_int_eq(store_stats(s, &st), 0);
	ck_assert_uint_eq(st.chunks, 0);
	assert_fsck_clean(s);
	store_close(s);
	free(x);
}
END_TEST

/* Reads a reader of a snapshot kept open across gc moving its chunks. */
START_TEST(reader_survives_gc_rewrite)
{
	struct store *s = open_store();
	size_t big = 4 * MiB, small = 512 * KiB;
	uint8_t *x = malloc(big), *y = malloc(small), *buf = malloc(small);
	struct store_snap *r;
	struct store_file *f;
	struct store_gc_stats g;

	fill_random(x, big, 1);
	fill_random(y, small, 2);
	struct file_spec fx[] = { { "memory/x", x, big } }, fy[] = { { "memory/y", y, small } };
	write_snap(s, "x", fx, 1);
	write_snap(s, "y", fy, 1);
	ck_assert_int_eq(store_snap_open(s, "y", 0, &r), 0);
	ck_assert_int_eq(store_file_open(r, "memory/y", &f), 0);
	ck_assert_int_eq(store_snap_delete(s, "x"), 0);
	ck_assert_int_eq(store_gc(s, &g), 0);
	ck_assert_uint_eq(g.packs_rewritten, 1);
	ck_assert_int_eq(store_file_pread(f, buf, small, 0), (ssize_t)small);
	ck_assert(!memcmp(buf, y, small));
	store_file_close(f);
	store_snap_close(r);
	store_close(s);
	free(x);
	free(y);
	free(buf);
}
END_TEST

struct gc_thr {
	struct store *s;
	struct store_gc_stats g;
	int r;
	atomic_bool done;
};

static void *gc_thread(void *p)
{
	struct gc_thr *t = p;
	t->r = store_gc(t->s, &t->g);
	atomic_store(&t->done, true);
	return NULL;
}

/* A writer reuses the chunks of a snapshot deleted meanwhile: gc waits for
 * it, and then frees nothing it uses. */
START_TEST(gc_waits_for_writers)
{
	struct store *s = open_store();
	size_t len = 2 * MiB;
	uint8_t *x = memory_like(len, 5);
	struct store_snap *w;
	struct gc_thr t = { .s = s };
	pthread_t th;

	struct file_spec fx[] = { { "memory/x", x, len } };
	write_snap(s, "x", fx, 1);
	ck_assert_int_eq(store_snap_create(s, "y", 0, &w), 0);
	ck_assert_int_eq(store_snap_put(w, "memory/x", x, len), 0);
	ck_assert_int_eq(store_snap_delete(s, "x"), 0);
	ck_assert_int_eq(pthread_create(&th, NULL, gc_thread, &t), 0);
	usleep(200 * 1000);
	ck_assert_msg(!atomic_load(&t.done), "gc ran with a writer in flight");
	ck_assert_int_eq(store_snap_commit(w), 0);
	store_snap_close(w);
	pthread_join(th, NULL);
	ck_assert_int_eq(t.r, 0);
	ck_assert_uint_eq(t.g.chunks_freed, 0);
	check_snap(s, "y", fx, 1);
	assert_fsck_clean(s);
	store_close(s);
	free(x);
}
END_TEST

static char *first_pack(char *out, size_t len)
{
	snprintf(out, len, "%s/packs/00000001.pack", dir);
	return out;
}

/* Large reads go in several runs of records at once, across holes and
 * across packs: a second snapshot that changed every third 64 KiB keeps
 * the rest in the first pack, so its runs alternate between two packs. */
START_TEST(large_reads_across_runs)
{
	struct store *s = open_store();
	size_t len = 12 * MiB + 5000;
	uint8_t *a = memory_like(len, 7), *b = malloc(len), *buf = malloc(len + 1);
	struct store_snap *r;
	struct store_file *f;

	ck_assert_ptr_nonnull(b);
	ck_assert_ptr_nonnull(buf);
	memcpy(b, a, len);
	for (size_t o = 0; o < len; o += 3 * 65536)
		fill_random(b + o, MIN((size_t)65536, len - o), o + 1);
	struct file_spec fa[] = { { "memory/a", a, len } }, fb[] = { { "memory/a", b, len } };
	write_snap(s, "a", fa, 1);
	write_snap(s, "b", fb, 1);
	store_close(s);
	s = open_store();
	check_snap(s, "a", fa, 1);
	ck_assert_int_eq(store_snap_open(s, "b", 0, &r), 0);
	ck_assert_int_eq(store_file_open(r, "memory/a", &f), 0);
	ck_assert_int_eq(store_file_pread(f, buf, len + 1, 0), (ssize_t)len);
	ck_assert_msg(!memcmp(buf, b, len), "content differs (one read)");
	memset(buf, 0x5a, len);
	for (size_t o = 0; o < len;) {
		size_t n = MIN((size_t)5 * MiB + 4096, len - o);
		ck_assert_int_eq(store_file_pread(f, buf + o, n, o), (ssize_t)n);
		o += n;
	}
	ck_assert_msg(!memcmp(buf, b, len), "content differs (5 MiB reads)");
	store_file_close(f);
	store_snap_close(r);
	store_close(s);
	free(a);
	free(b);
	free(buf);
}
END_TEST

START_TEST(fsck_names_flipped_byte)
{
	struct store *s = open_store();
	size_t len = 1 * MiB;
	uint8_t *x = malloc(len), *buf = malloc(len);
	char pack[256], acc[8192] = "";
	struct store_snap *r;
	struct store_file *f;

	fill_random(x, len, 1);
	struct file_spec fx[] = { { "memory/x", x, len } };
	write_snap(s, "x", fx, 1);
	store_close(s);
	/* A byte in the payload of the third record. */
	int fd = open(first_pack(pack, sizeof(pack)), O_RDWR | O_CLOEXEC);
	ck_assert_int_ge(fd, 0);
	off_t off = PACK_HDR_SIZE + 2 * (off_t)(sizeof(struct rec_hdr) + STORE_BLOCK_SIZE) + 100;
	uint8_t c;
	ck_assert_int_eq(pread(fd, &c, 1, off), 1);
	c ^= 1;
	ck_assert_int_eq(pwrite(fd, &c, 1, off), 1);
	close(fd);

	s = open_store();
	ck_assert_int_eq(store_fsck(s, fsck_report, acc), 1);
	ck_assert_msg(strstr(acc, "00000001.pack") && strstr(acc, "checksum mismatch"), "report: %s", acc);
	/* The reader says so too, naming pack and chunk; other blocks read. */
	ck_assert_int_eq(store_snap_open(s, "x", 0, &r), 0);
	ck_assert_int_eq(store_file_open(r, "memory/x", &f), 0);
	ck_assert_int_eq(store_file_pread(f, buf, len, 0), -EIO);
	ck_assert_msg(strstr(err_msg(), "00000001.pack") && strstr(err_msg(), "chunk "), "%s", err_msg());
	ck_assert_int_eq(store_file_pread(f, buf, 2 * STORE_BLOCK_SIZE, 0), 2 * STORE_BLOCK_SIZE);
	ck_assert(!memcmp(buf, x, 2 * STORE_BLOCK_SIZE));
	store_file_close(f);
	store_snap_close(r);
	store_close(s);
	free(x);
	free(buf);
}
END_TEST

static int grab_id(uint64_t block, const uint8_t id[STORE_HASH_LEN], void *ud)
{
	if (block == 3) {
		memcpy(ud, id, STORE_HASH_LEN);
		return 1;
	}
	return 0;
}

START_TEST(fsck_names_missing_chunk)
{
	struct store *s = open_store();
	size_t len = 1 * MiB;
	uint8_t *x = malloc(len), *buf = malloc(len), id[STORE_HASH_LEN];
	char acc[8192] = "", hex[2 * STORE_HASH_LEN + 1];
	struct store_snap *r;
	struct store_file *f;

	fill_random(x, len, 1);
	struct file_spec fx[] = { { "memory/x", x, len } };
	write_snap(s, "x", fx, 1);
	/* Drop one chunk's index entry behind the store's back. */
	struct chunk_store *cs = to_cs(s);
	ck_assert_int_eq(recipe_foreach(cs->idx, 1, 0, grab_id, id), 1);
	struct index_batch *b = index_batch_new();
	uint8_t k[CHUNK_KEY_LEN];
	chunk_key(k, KEY_CHUNK, id);
	index_batch_delete(b, k, sizeof(k));
	ck_assert_int_eq(index_write(cs->idx, b, true), 0);
	index_batch_free(b);
	/* As a store opened afresh would see it: the handle's cache of known
	 * chunks still remembers the location. */
	index_known_clear(cs->idx);

	store_hash_hex(id, hex);
	ck_assert_int_ge(store_fsck(s, fsck_report, acc), 1);
	ck_assert_msg(strstr(acc, "snapshot 'x' file 'memory/x'") && strstr(acc, hex) && strstr(acc, "missing"),
		      "report: %s", acc);
	ck_assert_int_eq(store_snap_open(s, "x", 0, &r), 0);
	ck_assert_int_eq(store_file_open(r, "memory/x", &f), 0);
	ck_assert_int_eq(store_file_pread(f, buf, len, 0), -EIO);
	ck_assert_msg(strstr(err_msg(), hex) && strstr(err_msg(), "missing"), "%s", err_msg());
	store_file_close(f);
	store_snap_close(r);
	store_close(s);
	free(x);
	free(buf);
}
END_TEST

START_TEST(fsck_names_truncated_pack)
{
	struct store *s = open_store();
	size_t len = 1 * MiB;
	uint8_t *x = malloc(len);
	char pack[256], acc[8192] = "";

	fill_random(x, len, 1);
	struct file_spec fx[] = { { "memory/x", x, len } };
	write_snap(s, "x", fx, 1);
	store_close(s);
	ck_assert_int_eq(truncate(first_pack(pack, sizeof(pack)), 100 * 1000), 0);
	s = open_store();
	int n = store_fsck(s, fsck_report, acc);
	ck_assert_int_ge(n, 1);
	ck_assert_msg(strstr(acc, "00000001.pack") && strstr(acc, "truncated"), "report: %s", acc);
	store_close(s);
	free(x);
}
END_TEST

START_TEST(truncated_index_is_refused)
{
	struct store *s = open_store();
	uint8_t x[100] = { 1 };
	char path[512];
	struct file_spec fx[] = { { "regs/1", x, sizeof(x) } };
	write_snap(s, "x", fx, 1);
	store_close(s);
	/* Cut every file of the index's own manifest in half. */
	snprintf(path, sizeof(path), "%s/index", dir);
	DIR *d = opendir(path);
	struct dirent *de;
	ck_assert_ptr_nonnull(d);
	while ((de = readdir(d)))
		if (!strncmp(de->d_name, "MANIFEST-", 9)) {
			char p[800];
			struct stat st;
			snprintf(p, sizeof(p), "%s/%s", path, de->d_name);
			ck_assert_int_eq(stat(p, &st), 0);
			ck_assert_int_eq(truncate(p, st.st_size / 2), 0);
		}
	closedir(d);
	int r = store_open(dir, NULL, &s);
	ck_assert_int_lt(r, 0);
	ck_assert_msg(strstr(err_msg(), "index"), "%s", err_msg());
}
END_TEST

START_TEST(second_open_is_busy)
{
	struct store *s = open_store(), *t;
	struct store_options ro = { .read_only = true };
	uint8_t x[10] = { 1 };
	struct file_spec fx[] = { { "regs/1", x, sizeof(x) } };
	write_snap(s, "x", fx, 1);
	ck_assert_int_eq(store_open(dir, NULL, &t), -EBUSY);
	char want[32];
	snprintf(want, sizeof(want), "pid %d", (int)getpid());
	ck_assert_msg(strstr(err_msg(), want), "%s", err_msg());
	/* A read-only open does not take the lock. */
	ck_assert_int_eq(store_open(dir, &ro, &t), 0);
	check_snap(t, "x", fx, 1);
	struct store_snap *w;
	ck_assert_int_eq(store_snap_create(t, "y", 0, &w), -EROFS);
	store_close(t);
	store_close(s);
	ck_assert_int_eq(store_open(dir, NULL, &t), 0);
	store_close(t);
}
END_TEST

static int import_snap(struct store *s, const char *name, const char *manifest, const struct file_spec *f, size_t n)
{
	struct store_snap *w;
	int r = store_snap_create(s, name, STORE_CREATE_IMPORT, &w);
	ck_assert_int_eq(r, 0);
	ck_assert_int_eq(store_snap_put(w, STORE_MANIFEST, manifest, strlen(manifest)), 0);
	for (size_t i = 0; i < n; i++)
		ck_assert_int_eq(store_snap_put(w, f[i].path, f[i].data, f[i].len), 0);
	r = store_snap_commit(w);
	store_snap_close(w);
	return r;
}

START_TEST(import_checks_manifest)
{
	struct store *s = open_store();
	size_t len = 100 * KiB;
	uint8_t *x = memory_like(len, 4);
	const char *regs = "rip 0x1\n";
	struct file_spec fs[] = { { "memory/x", x, len }, { "regs/1", (const uint8_t *)regs, strlen(regs) } };
	struct manifest m = { .version = 1, .created = 1 };
	struct manifest_entry e[2];
	char *text;
	struct store_stats a, b;

	for (int i = 0; i < 2; i++) {
		e[i].path = (char *)fs[i].path;
		e[i].size = fs[i].len;
		store_hash_buf(fs[i].data, fs[i].len, e[i].hash);
	}
	m.files = e;
	m.nfiles = 2;
	ck_assert_int_eq(manifest_format(&m, &text, NULL), 0);
	ck_assert_int_eq(store_stats(s, &a), 0);

	/* A byte differs from what the manifest promises. */
	x[5000] ^= 1;
	ck_assert_int_eq(import_snap(s, "bad", text, fs, 2), -EBADMSG);
	ck_assert_msg(strstr(err_msg(), "memory/x"), "%s", err_msg());
	x[5000] ^= 1;
	/* A file the manifest does not list. */
	struct file_spec extra[] = { fs[0], fs[1], { "regs/2", (const uint8_t *)regs, 3 } };
	ck_assert_int_eq(import_snap(s, "bad", text, extra, 3), -EBADMSG);
	ck_assert_msg(strstr(err_msg(), "regs/2"), "%s", err_msg());
	/* One missing. */
	ck_assert_int_eq(import_snap(s, "bad", text, fs, 1), -EBADMSG);
	ck_assert_msg(strstr(err_msg(), "regs/1"), "%s", err_msg());
	ck_assert_int_eq(store_stats(s, &b), 0);
	ck_assert_uint_eq(b.snapshots, a.snapshots);
	ck_assert_uint_eq(b.chunks, a.chunks);
	struct store_snap *r;
	ck_assert_int_eq(store_snap_open(s, "bad", 0, &r), -ENOENT);

	/* The truth goes in, and its manifest comes out as it came. */
	ck_assert_int_eq(import_snap(s, "good", text, fs, 2), 0);
	check_snap(s, "good", fs, 2);
	ck_assert_int_eq(store_snap_open(s, "good", 0, &r), 0);
	char *mt;
	size_t ml;
	ck_assert_int_eq(store_snap_read_all(r, STORE_MANIFEST, &mt, &ml), 0);
	ck_assert_str_eq(mt, text);
	free(mt);
	store_snap_close(r);
	assert_fsck_clean(s);
	store_close(s);
	free(text);
	free(x);
}
END_TEST

START_TEST(pack_write_fault_fails_cleanly)
{
	struct store *s = open_store();
	size_t len = 3 * MiB;
	uint8_t *x = malloc(len), *y = malloc(len);
	struct store_snap *w, *r;
	struct store_file *f;

	fill_random(x, len, 1);
	fill_random(y, len, 2);
	struct file_spec fx[] = { { "memory/x", x, len } };
	write_snap(s, "old", fx, 1);
	setenv("CKPTFS_FAULT", "100", 1);
	fault_reload();
	ck_assert_int_eq(store_snap_create(s, "new", 0, &w), 0);
	ck_assert_int_eq(store_file_create(w, "memory/y", &f), 0);
	int a = store_file_pwrite(f, y, len, 0);
	int b = store_file_close(f);
	ck_assert_msg(a == -EIO || b == -EIO, "pwrite %d close %d", a, b);
	ck_assert_msg(strstr(err_msg(), ".pack") || strstr(err_msg(), "pack "), "%s", err_msg());
	ck_assert_int_lt(store_snap_commit(w), 0);
	store_snap_close(w);
	unsetenv("CKPTFS_FAULT");
	fault_reload();
	ck_assert_int_eq(store_snap_open(s, "new", 0, &r), -ENOENT);
	check_snap(s, "old", fx, 1);
	assert_fsck_clean(s);
	/* And the store still takes snapshots. */
	struct file_spec fy[] = { { "memory/y", y, len } };
	write_snap(s, "new", fy, 1);
	check_snap(s, "new", fy, 1);
	store_close(s);
	free(x);
	free(y);
}
END_TEST

struct rthr {
	struct store_file *f;
	const uint8_t *data;
	size_t len;
	uint64_t seed;
	int bad;
};

static void *reader_thread(void *p)
{
	struct rthr *t = p;
	uint8_t *buf = malloc(100 * KiB);
	for (int i = 0; i < 300; i++) {
		size_t off = rng_next(&t->seed) % t->len, n = 1 + rng_next(&t->seed) % (100 * KiB);
		n = MIN(n, t->len - off);
		if (store_file_pread(t->f, buf, n, off) != (ssize_t)n || memcmp(buf, t->data + off, n))
			t->bad++;
	}
	free(buf);
	return NULL;
}

/* Several threads read one open file at random places at once. */
START_TEST(one_file_many_readers)
{
	struct store *s = open_store();
	size_t len = 6 * MiB + 1234;
	uint8_t *x = memory_like(len, 21);
	struct store_snap *r;
	struct store_file *f;
	enum { N = 4 };
	pthread_t th[N];
	struct rthr t[N];

	struct file_spec fx[] = { { "memory/x", x, len } };
	write_snap(s, "x", fx, 1);
	ck_assert_int_eq(store_snap_open(s, "x", 0, &r), 0);
	ck_assert_int_eq(store_file_open(r, "memory/x", &f), 0);
	for (int i = 0; i < N; i++) {
		t[i] = (struct rthr){ f, x, len, 1000 + i, 0 };
		ck_assert_int_eq(pthread_create(&th[i], NULL, reader_thread, &t[i]), 0);
	}
	for (int i = 0; i < N; i++) {
		pthread_join(th[i], NULL);
		ck_assert_int_eq(t[i].bad, 0);
	}
	store_file_close(f);
	store_snap_close(r);
	store_close(s);
	free(x);
}
END_TEST

/* ---- crashes: a child writes with a crash armed, the parent checks ---------- */

static void crash_case(const char *fault, bool present_after)
{
	size_t len = 2 * MiB;
	uint8_t *x = memory_like(len, 1), *y = memory_like(len, 2);
	struct file_spec fx[] = { { "memory/x", x, len } }, fy[] = { { "memory/y", y, len }, { "memory/x", x, len } };
	struct store *s = open_store();
	struct store_snap *r;
	int status;

	write_snap(s, "old", fx, 1);
	store_close(s);
	pid_t pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		setenv("CKPTFS_FAULT", fault, 1);
		fault_reload();
		struct store *c;
		struct store_snap *w;
		if (store_open(dir, NULL, &c) < 0 || store_snap_create(c, "new", 0, &w) < 0)
			_exit(1);
		for (size_t i = 0; i < 2; i++)
			if (store_snap_put(w, fy[i].path, fy[i].data, fy[i].len) < 0)
				_exit(2);
		store_snap_commit(w);
		_exit(3); /* the fault did not fire */
	}
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 99, "child status 0x%x", status);

	s = open_store();
	int q = store_snap_open(s, "new", 0, &r);
	if (present_after) {
		ck_assert_int_eq(q, 0);
		store_snap_close(r);
		check_snap(s, "new", fy, 2);
	} else {
		ck_assert_int_eq(q, -ENOENT);
	}
	check_snap(s, "old", fx, 1);
	assert_fsck_clean(s);
	/* gc takes back what the crash left; everything still reads. */
	struct store_gc_stats g;
	ck_assert_int_eq(store_gc(s, &g), 0);
	check_snap(s, "old", fx, 1);
	assert_fsck_clean(s);
	/* The crashed name can be taken again. */
	if (!present_after) {
		write_snap(s, "new", fy, 2);
		check_snap(s, "new", fy, 2);
	}
	store_close(s);
	free(x);
	free(y);
}

START_TEST(crash_before_pack_fsync)
{
	crash_case("101", false);
}
END_TEST

START_TEST(crash_before_index)
{
	crash_case("102", false);
}
END_TEST

START_TEST(crash_before_batch_write)
{
	crash_case("103", false);
}
END_TEST

START_TEST(crash_after_batch_write)
{
	crash_case("103:2", true);
}
END_TEST

START_TEST(crash_in_gc)
{
	size_t big = 4 * MiB, small = 1 * MiB;
	uint8_t *x = malloc(big), *y = malloc(small);
	struct file_spec fx[] = { { "memory/x", x, big } }, fy[] = { { "memory/y", y, small } };
	struct store *s = open_store();
	struct store_gc_stats g;
	int status;

	fill_random(x, big, 1);
	fill_random(y, small, 2);
	write_snap(s, "x", fx, 1);
	write_snap(s, "y", fy, 1);
	ck_assert_int_eq(store_snap_delete(s, "x"), 0);
	store_close(s);
	pid_t pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		setenv("CKPTFS_FAULT", "120", 1);
		fault_reload();
		struct store *c;
		if (store_open(dir, NULL, &c) < 0)
			_exit(1);
		store_gc(c, &g);
		_exit(3);
	}
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 99, "child status 0x%x", status);
	s = open_store();
	check_snap(s, "y", fy, 1);
	assert_fsck_clean(s);
	ck_assert_int_eq(store_gc(s, &g), 0);
	ck_assert_uint_eq(g.packs_rewritten, 1);
	check_snap(s, "y", fy, 1);
	assert_fsck_clean(s);
	store_close(s);
	free(x);
	free(y);
}
END_TEST

/* Two-at-a-time hashing is plain SHA-256, at every length and both ways. */
static int hash2_mismatches(const uint8_t *d)
{
	int bad = 0;
	for (size_t len = 0; len <= STORE_BLOCK_SIZE; len += len < 300 ? 1 : 61) {
		uint8_t a[STORE_HASH_LEN], b[STORE_HASH_LEN], ra[STORE_HASH_LEN], rb[STORE_HASH_LEN];
		const uint8_t *pa = d + len % 13, *pb = d + STORE_BLOCK_SIZE + 7 + len;
		chunk_hash2(pa, pb, len, a, b);
		hash_leaf(pa, len, ra);
		hash_leaf(pb, len, rb);
		bad += memcmp(a, ra, STORE_HASH_LEN) || memcmp(b, rb, STORE_HASH_LEN);
	}
	uint8_t a[STORE_HASH_LEN], b[STORE_HASH_LEN], r[STORE_HASH_LEN];
	chunk_hash2(d, d, STORE_BLOCK_SIZE, a, b);
	hash_leaf(d, STORE_BLOCK_SIZE, r);
	bad += memcmp(a, r, STORE_HASH_LEN) || memcmp(b, r, STORE_HASH_LEN);
	return bad;
}

/* Two-at-a-time hashing is plain SHA-256, at every length, with the SHA
 * extensions and (in a child) without. */
START_TEST(hash2_is_sha256)
{
	uint8_t *d = malloc(3 * STORE_BLOCK_SIZE);
	int st;

	fill_random(d, 3 * STORE_BLOCK_SIZE, 9);
	/* The child first: the choice of path is made once per process. */
	pid_t pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		setenv("CKPTFS_NO_SHA_NI", "1", 1);
		_exit(hash2_mismatches(d) ? 1 : 0);
	}
	ck_assert_int_eq(waitpid(pid, &st, 0), pid);
	ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "fallback child 0x%x", st);
	ck_assert_int_eq(hash2_mismatches(d), 0);
	free(d);
}
END_TEST

/* A read into a buffer sized exactly to the data, with an unmapped page
 * right after it: a decoder that writes past the end faults. zstd is not
 * built with ASan, so only a guard page catches it. */
START_TEST(exact_buffer_not_overrun)
{
	static const size_t lens[] = { 100, 4096, 5000, 16384, 20000 };
	struct store *s = open_store();
	char text[64 * KiB];

	for (size_t i = 0; i < sizeof(text); i++)
		text[i] = "compressible text "[i % 18];
	for (size_t k = 0; k < ARRAY_SIZE(lens); k++) {
		char name[32];
		struct store_snap *r;
		struct store_file *f;
		size_t len = lens[k], span = ALIGN_UP(len, 4096) + 4096;
		uint8_t *m = mmap(NULL, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		ck_assert_ptr_ne(m, MAP_FAILED);
		ck_assert_int_eq(mprotect(m + span - 4096, 4096, PROT_NONE), 0);
		uint8_t *buf = m + span - 4096 - len;
		struct file_spec fs = { "f", (const uint8_t *)text, len };

		snprintf(name, sizeof(name), "exact-%zu", len);
		write_snap(s, name, &fs, 1);
		ck_assert_int_eq(store_snap_open(s, name, 0, &r), 0);
		ck_assert_int_eq(store_file_open(r, "f", &f), 0);
		ck_assert_int_eq(store_file_pread(f, buf, len, 0), (ssize_t)len);
		ck_assert(memcmp(buf, text, len) == 0);
		store_file_close(f);
		store_snap_close(r);
		munmap(m, span);
	}
	store_close(s);
}
END_TEST

/* Snapshot name of one file, "memory/a", written in whole blocks with
 * the entries e; returns what store_file_pwrite_blocks() returned. */
static int write_blocks_snap(struct store *s, const char *name, const uint8_t *data, size_t len,
			     struct store_block *e)
{
	struct store_snap *w;
	struct store_file *f;
	ck_assert_int_eq(store_snap_create(s, name, 0, &w), 0);
	ck_assert_int_eq(store_file_create(w, "memory/a", &f), 0);
	int r = store_file_pwrite_blocks(f, data, len, 0, e);
	ck_assert_msg(r >= 0, "%s: %s", name, err_msg());
	ck_assert_int_eq(store_file_close(f), 0);
	ck_assert_int_eq(store_snap_commit(w), 0);
	store_snap_close(w);
	return r;
}

/* store_file_pwrite_blocks: the entries it fills name the blocks; known
 * ones are taken as they say (a block changed behind a known entry reads
 * back as the entry's, which is why the caller must vouch for them); one
 * marked unknown is hashed again. */
START_TEST(known_blocks_are_not_hashed)
{
	struct store *s = open_store();
	size_t len = 2 * MiB, n = len / STORE_BLOCK_SIZE;
	uint8_t *data = memory_like(len, 21), *old = malloc(len);
	struct store_block *e = calloc(n, sizeof(*e));
	ck_assert_ptr_nonnull(old);
	ck_assert_ptr_nonnull(e);
	memset(data + 3 * STORE_BLOCK_SIZE, 0, STORE_BLOCK_SIZE);
	memcpy(old, data, len);

	ck_assert_int_eq(write_blocks_snap(s, "one", data, len, e), 1);
	for (size_t i = 0; i < n; i++)
		ck_assert_msg(e[i].known, "block %zu not filled", i);
	ck_assert_uint_eq(e[3].mask, 0);
	struct file_spec fs[] = { { "memory/a", data, len } };
	check_snap(s, "one", fs, 1);

	/* block 5 changes and says so: hashed again, the rest reused */
	data[5 * STORE_BLOCK_SIZE + 100] ^= 0x5a;
	uint8_t id5[STORE_HASH_LEN];
	memcpy(id5, e[5].id, STORE_HASH_LEN);
	e[5].known = false;
	ck_assert_int_eq(write_blocks_snap(s, "two", data, len, e), 1);
	ck_assert(e[5].known);
	ck_assert_msg(memcmp(id5, e[5].id, STORE_HASH_LEN), "block 5 kept its old id");
	check_snap(s, "two", fs, 1);
	ck_assert_uint_le(snap_stored(s, "two"), STORE_BLOCK_SIZE + 4096);

	/* block 7 changes behind a known entry: the entry wins */
	memcpy(old, data, len);
	data[7 * STORE_BLOCK_SIZE] ^= 0xff;
	ck_assert_int_eq(write_blocks_snap(s, "three", data, len, e), 1);
	struct file_spec was[] = { { "memory/a", old, len } };
	check_snap(s, "three", was, 1);

	/* not block-aligned: refused */
	struct store_snap *w;
	struct store_file *f;
	ck_assert_int_eq(store_snap_create(s, "four", 0, &w), 0);
	ck_assert_int_eq(store_file_create(w, "memory/a", &f), 0);
	ck_assert_int_eq(store_file_pwrite_blocks(f, data, 4096, 0, e), -EINVAL);
	store_file_close(f);
	store_snap_close(w);
	assert_fsck_clean(s);
	store_close(s);
	free(data);
	free(old);
	free(e);
}
END_TEST

static TCase *tc(Suite *su, const char *name, const TTest *t, int timeout)
{
	TCase *c = tcase_create(name);
	tcase_add_checked_fixture(c, setup, teardown);
	tcase_set_timeout(c, timeout);
	tcase_add_test(c, t);
	suite_add_tcase(su, c);
	return c;
}

int main(void)
{
	Suite *su = suite_create("store-chunk");
	tc(su, "hash2", hash2_is_sha256, 30);
	tc(su, "roundtrip", roundtrip_holes_and_seek, 30);
	tc(su, "exact-buffer", exact_buffer_not_overrun, 30);
	tc(su, "large-reads", large_reads_across_runs, 60);
	tc(su, "sparse-huge", sparse_huge_file, 30);
	tc(su, "zero-pages", zero_pages_cost_nothing, 30);
	tc(su, "dedup", same_data_twice_writes_nothing, 30);
	tc(su, "small-change", small_change_adds_little, 30);
	tc(su, "known-blocks", known_blocks_are_not_hashed, 30);
	tc(su, "concurrent", concurrent_snapshots, 60);
	tc(su, "readers", one_file_many_readers, 60);
	tc(su, "gc", delete_and_gc_give_space_back, 60);
	tc(su, "gc-counts", counts_settle_at_gc, 60);
	tc(su, "pieces", pieces_in_any_order, 60);
	tc(su, "gc-reader", reader_survives_gc_rewrite, 30);
	tc(su, "gc-writer", gc_waits_for_writers, 30);
	tc(su, "fsck-flip", fsck_names_flipped_byte, 30);
	tc(su, "fsck-missing", fsck_names_missing_chunk, 30);
	tc(su, "fsck-truncated", fsck_names_truncated_pack, 30);
	tc(su, "bad-index", truncated_index_is_refused, 30);
	tc(su, "busy", second_open_is_busy, 30);
	tc(su, "import", import_checks_manifest, 30);
	tc(su, "pack-fault", pack_write_fault_fails_cleanly, 30);
	tc(su, "crash-before-pack-fsync", crash_before_pack_fsync, 60);
	tc(su, "crash-before-index", crash_before_index, 60);
	tc(su, "crash-before-batch", crash_before_batch_write, 60);
	tc(su, "crash-after-batch", crash_after_batch_write, 60);
	tc(su, "crash-in-gc", crash_in_gc, 60);
	SRunner *sr = srunner_create(su);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
