/*
 * store/: read-ahead of chunk store readers (store/readahead.c): bytes
 * read through the window are the bytes written, sequential or not, across
 * holes and the file's end; a damaged chunk that only the read-ahead
 * touched is never reported, and is reported exactly when read; close
 * with reads in flight; many readers at once.
 */
#include <check.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <sys/stat.h>
#include <unistd.h>

#include "chunk-test.h"

static void setup(void)
{
	test_dir_setup("ckptfs-ra");
}

/* memory_like, with a whole read-ahead unit of zeros (a hole as big as a
 * unit) at 2 MiB and zeros at the end. */
static uint8_t *memory_with_holes(size_t len, uint64_t seed)
{
	uint8_t *p = memory_like(len, seed);
	if (len > 3 * MiB)
		memset(p + 2 * MiB, 0, MiB);
	memset(p + len - MIN(len, (size_t)20000), 0, MIN(len, (size_t)20000));
	return p;
}

/* Reads the whole file in pieces of `piece` bytes from 0, sequentially. */
static void read_seq(struct store_file *f, const uint8_t *data, size_t len, size_t piece, const char *what)
{
	uint8_t *buf = malloc(len + piece);
	ck_assert_ptr_nonnull(buf);
	memset(buf, 0xa5, len + piece);
	for (size_t o = 0; o < len;) {
		ssize_t n = store_file_pread(f, buf + o, piece, o);
		size_t want = MIN(piece, len - o);
		ck_assert_msg(n == (ssize_t)want, "%s: read %zu at %zu: %zd (%s)", what, piece, o, n, err_msg());
		o += want;
	}
	ck_assert_msg(!memcmp(buf, data, len), "%s: content differs (pieces of %zu)", what, piece);
	ck_assert_int_eq(store_file_pread(f, buf, piece, len), 0);
	free(buf);
}

START_TEST(sequential_and_random_exact)
{
	struct store *s = open_store();
	struct file_spec fx = { "memory/x", NULL, 9 * MiB + 5000 };
	uint64_t units, failed, seed = 3;
	struct store_snap *r;
	struct store_file *f;

	uint8_t *data = memory_with_holes(fx.len, 11);
	fx.data = data;
	write_snap(s, "x", &fx, 1);
	ck_assert_int_eq(store_snap_open(s, "x", 0, &r), 0);
	/* Sequential, in pieces smaller than a unit, a unit, odd ones that
	 * straddle units and blocks, and bigger than the window. */
	size_t pieces[] = { 4096, 100000, RA_UNIT, RA_UNIT + 7777, 3 * RA_UNIT - 4096, 16 * MiB };
	for (size_t i = 0; i < sizeof(pieces) / sizeof(pieces[0]); i++) {
		ck_assert_int_eq(store_file_open(r, "memory/x", &f), 0);
		read_seq(f, fx.data, fx.len, pieces[i], "sequential");
		store_file_close(f);
	}
	ra_pool_stats(to_cs(s), &units, &failed);
	ck_assert_msg(units > 0, "nothing was read ahead");
	ck_assert_uint_eq(failed, 0);

	/* Random reads, then sequential again on the same handle, then a
	 * jump back: every byte as written. */
	uint8_t *buf = malloc(4 * MiB);
	ck_assert_int_eq(store_file_open(r, "memory/x", &f), 0);
	for (int i = 0; i < 200; i++) {
		uint64_t off = rng_next(&seed) % (fx.len + 1000);
		size_t n = 1 + rng_next(&seed) % (i % 4 == 0 ? 4 * MiB - 1 : 70000);
		ssize_t got = store_file_pread(f, buf, n, off);
		size_t want = off >= fx.len ? 0 : MIN(n, fx.len - off);
		ck_assert_msg(got == (ssize_t)want, "read %zu at %" PRIu64 ": %zd", n, off, got);
		ck_assert_msg(!want || !memcmp(buf, fx.data + off, want), "random read %zu at %" PRIu64 " differs", n,
			      off);
		if (i % 50 == 49) {
			/* a sequential stretch in the middle of it */
			for (uint64_t o = off + want, k = 0; k < 6 && o < fx.len; k++) {
				size_t m = (size_t)MIN((uint64_t)600 * KiB, fx.len - o);
				ck_assert_int_eq(store_file_pread(f, buf, m, o), (ssize_t)m);
				ck_assert_msg(!memcmp(buf, fx.data + o, m), "sequential stretch at %" PRIu64, o);
				o += m;
			}
		}
	}
	store_file_close(f);
	free(buf);
	store_snap_close(r);
	store_close(s);
	free(data);
}
END_TEST

/* Reads that end at the end of the file, whose last unit is short, by
 * several threads on one handle: nothing may land in a caller's buffer
 * after its call returned (the short unit was once queued into the
 * buffer of a call that had already passed it, and overwrote the next
 * read of the same buffer). */
struct tail_reader {
	struct store_file *f;
	const uint8_t *data;
	size_t len;
	uint64_t seed;
	unsigned bad;
};

static void *tail_reader(void *p)
{
	struct tail_reader *t = p;
	uint8_t *buf = malloc(3 * MiB);
	for (int i = 0; i < 400; i++) {
		uint64_t back = 1 + rng_next(&t->seed) % (3 * MiB - 1), off = t->len - back;
		size_t n = i % 2 ? back : 1 + rng_next(&t->seed) % back;
		if (store_file_pread(t->f, buf, n, off) != (ssize_t)n || memcmp(buf, t->data + off, n))
			t->bad++;
	}
	free(buf);
	return NULL;
}

START_TEST(nothing_lands_after_return)
{
	struct store *s = open_store();
	struct file_spec fx = { "memory/x", NULL, 6 * MiB + 1234 };
	struct store_snap *r;
	struct store_file *f;
	enum { N = 4 };
	pthread_t th[N];
	struct tail_reader t[N];

	uint8_t *data = memory_with_holes(fx.len, 5);
	fx.data = data;
	/* Data in the last unit: a hole there would read the same either way. */
	fill_random(data + 6 * MiB, 1234, 77);
	write_snap(s, "x", &fx, 1);
	ck_assert_int_eq(store_snap_open(s, "x", 0, &r), 0);
	ck_assert_int_eq(store_file_open(r, "memory/x", &f), 0);
	for (int i = 0; i < N; i++) {
		t[i] = (struct tail_reader){ f, fx.data, fx.len, 500 + (uint64_t)i, 0 };
		ck_assert_int_eq(pthread_create(&th[i], NULL, tail_reader, &t[i]), 0);
	}
	for (int i = 0; i < N; i++) {
		pthread_join(th[i], NULL);
		ck_assert_msg(t[i].bad == 0, "reader %d: %u reads differ", i, t[i].bad);
	}
	store_file_close(f);
	store_snap_close(r);
	store_close(s);
	free(data);
}
END_TEST

START_TEST(readahead_off_reads_the_same)
{
	struct store *s;
	struct file_spec fx = { "memory/x", NULL, 5 * MiB + 123 };
	uint64_t units, failed;
	struct store_snap *r;
	struct store_file *f;

	setenv("CKPTFS_READAHEAD", "0", 1);
	s = open_store();
	uint8_t *data = memory_with_holes(fx.len, 5);
	fx.data = data;
	write_snap(s, "x", &fx, 1);
	ck_assert_int_eq(store_snap_open(s, "x", 0, &r), 0);
	ck_assert_int_eq(store_file_open(r, "memory/x", &f), 0);
	read_seq(f, fx.data, fx.len, 256 * KiB, "no read-ahead");
	store_file_close(f);
	ra_pool_stats(to_cs(s), &units, &failed);
	ck_assert_uint_eq(units, 0);
	store_snap_close(r);
	store_close(s);
	free(data);
}
END_TEST

/* Flips a payload byte of the chunk holding the bytes of block `block`
 * of data (its id is their SHA-256); gives the id's hex. */
static void damage_block(struct store *s, const uint8_t *data, uint64_t block, char hex[2 * STORE_HASH_LEN + 1])
{
	struct chunk_store *cs = to_cs(s);
	uint8_t id[STORE_HASH_LEN];
	struct chunk_loc loc;
	char pack[32], path[256];
	bool found;
	uint8_t c;

	hash_leaf(data + block * STORE_BLOCK_SIZE, STORE_BLOCK_SIZE, id);
	ck_assert_int_eq(index_get_locs(cs->idx, 1, (const uint8_t(*)[STORE_HASH_LEN])id, &loc, &found), 0);
	ck_assert(found);
	store_hash_hex(id, hex);
	pack_name(loc.pack, pack);
	snprintf(path, sizeof(path), "%s/packs/%s", dir, pack);
	int fd = open(path, O_RDWR | O_CLOEXEC);
	ck_assert_int_ge(fd, 0);
	off_t off = (off_t)loc.offset + (off_t)sizeof(struct rec_hdr) + 10;
	ck_assert_int_eq(pread(fd, &c, 1, off), 1);
	c ^= 0x40;
	ck_assert_int_eq(pwrite(fd, &c, 1, off), 1);
	ck_assert_int_eq(fsync(fd), 0);
	close(fd);
}

/* A chunk damaged in unit 3 (past the caller's reads of units 0-1, inside
 * the window read ahead of them): the workers fail on it, the caller's
 * reads succeed and no error detail is left; reading that chunk then
 * fails naming it, and the bytes before it in the same unit still read. */
START_TEST(damage_ahead_is_not_reported)
{
	struct store *s = open_store();
	struct file_spec fx = { "memory/x", NULL, 8 * MiB };
	uint64_t bad = (3 * RA_UNIT + 200 * KiB) / STORE_BLOCK_SIZE, units, failed;
	char hex[2 * STORE_HASH_LEN + 1];
	struct store_snap *r;
	struct store_file *f;
	uint8_t *buf = malloc(2 * MiB);

	uint8_t *data = malloc(fx.len);
	fx.data = data;
	fill_random(data, fx.len, 9);
	write_snap(s, "x", &fx, 1);
	damage_block(s, fx.data, bad, hex);
	store_close(s);

	s = open_store();
	ck_assert_int_eq(store_snap_open(s, "x", 0, &r), 0);
	ck_assert_int_eq(store_file_open(r, "memory/x", &f), 0);
	err_clear();
	for (uint64_t o = 0; o < 3 * RA_UNIT; o += 512 * KiB) {
		ck_assert_int_eq(store_file_pread(f, buf, 512 * KiB, o), 512 * KiB);
		ck_assert_msg(!memcmp(buf, fx.data + o, 512 * KiB), "differs at %" PRIu64, o);
	}
	/* Wait until the workers have tried the damaged unit. */
	for (int i = 0; i < 2000; i++) {
		ra_pool_stats(to_cs(s), &units, &failed);
		if (failed)
			break;
		usleep(1000);
	}
	ck_assert_msg(failed >= 1, "the damaged unit was never read ahead (%" PRIu64 " units)", units);
	ck_assert_msg(!*err_msg(), "a detail leaked to the caller: %s", err_msg());
	/* Up to the damaged block: fine. */
	size_t before = (size_t)(bad * STORE_BLOCK_SIZE - 3 * RA_UNIT);
	ck_assert_int_eq(store_file_pread(f, buf, before, 3 * RA_UNIT), (ssize_t)before);
	ck_assert(!memcmp(buf, fx.data + 3 * RA_UNIT, before));
	/* The damaged block itself: the exact chunk and reason. */
	ck_assert_int_eq(store_file_pread(f, buf, 1 * MiB, 3 * RA_UNIT + before), -EIO);
	ck_assert_msg(strstr(err_msg(), hex) && strstr(err_msg(), "checksum mismatch"), "detail: %s", err_msg());
	/* And past it, reads go on. */
	ck_assert_int_eq(store_file_pread(f, buf, 1 * MiB, 5 * RA_UNIT), (ssize_t)MiB);
	ck_assert(!memcmp(buf, fx.data + 5 * RA_UNIT, MiB));
	store_file_close(f);
	store_snap_close(r);
	store_close(s);
	free(buf);
	free(data);
}
END_TEST

/* Close right after the window was queued, many times: close must cancel
 * or wait for every unit in flight (ASan sees a unit landing in freed
 * memory). */
START_TEST(close_with_reads_in_flight)
{
	struct store *s = open_store();
	struct file_spec fx = { "memory/x", NULL, 12 * MiB };
	uint8_t *buf = malloc(MiB);
	uint64_t units, failed;
	struct store_snap *r;

	uint8_t *data = memory_with_holes(fx.len, 21);
	fx.data = data;
	write_snap(s, "x", &fx, 1);
	ck_assert_int_eq(store_snap_open(s, "x", 0, &r), 0);
	for (int i = 0; i < 40; i++) {
		struct store_file *f;
		ck_assert_int_eq(store_file_open(r, "memory/x", &f), 0);
		uint64_t o = (uint64_t)(i % 5) * MiB;
		ck_assert_int_eq(store_file_pread(f, buf, 64 * KiB, o), 64 * KiB);
		ck_assert_int_eq(store_file_pread(f, buf, 64 * KiB, o + 64 * KiB), 64 * KiB);
		ck_assert(!memcmp(buf, fx.data + o + 64 * KiB, 64 * KiB));
		store_file_close(f);
	}
	ra_pool_stats(to_cs(s), &units, &failed);
	ck_assert_msg(units > 0, "nothing was read ahead");
	store_snap_close(r);
	/* The store closes with its threads idle; a last reader left open
	 * past close is not allowed, so none here. */
	store_close(s);
	free(buf);
	free(data);
}
END_TEST

#define NFILES 6
#define NTHREADS 12

struct job {
	struct store_snap *snap;
	const struct file_spec *f;
	unsigned k;
	int bad;
};

static void *reader(void *p)
{
	struct job *j = p;
	struct store_file *f;
	size_t len = j->f->len, piece = (j->k % 3 == 0) ? 64 * KiB : (j->k % 3 == 1) ? MiB : 3 * MiB + 4096;
	uint8_t *buf = malloc(piece);

	if (!buf || store_file_open(j->snap, j->f->path, &f) < 0) {
		j->bad = 1;
		free(buf);
		return NULL;
	}
	for (int pass = 0; pass < 2; pass++)
		for (size_t o = 0; o < len; o += piece) {
			size_t want = MIN(piece, len - o);
			if (store_file_pread(f, buf, piece, o) != (ssize_t)want || memcmp(buf, j->f->data + o, want))
				j->bad++;
		}
	store_file_close(f);
	free(buf);
	return NULL;
}

/* One file read by two threads at once, each sequentially: one of them in
 * 1 MiB pieces shared out of order, as FUSE threads serve a reader. */
struct shared {
	struct store_file *f;
	const struct file_spec *fs;
	_Atomic uint64_t next;
	int bad;
};

static void *shared_reader(void *p)
{
	struct shared *sh = p;
	uint8_t *buf = malloc(MiB);
	for (;;) {
		uint64_t o = atomic_fetch_add(&sh->next, MiB);
		if (o >= sh->fs->len)
			break;
		size_t want = (size_t)MIN((uint64_t)MiB, sh->fs->len - o);
		if (store_file_pread(sh->f, buf, MiB, o) != (ssize_t)want || memcmp(buf, sh->fs->data + o, want))
			__atomic_add_fetch(&sh->bad, 1, __ATOMIC_RELAXED);
	}
	free(buf);
	return NULL;
}

START_TEST(many_readers_many_files)
{
	struct store *s = open_store();
	struct file_spec fx[NFILES];
	uint8_t *data[NFILES];
	struct job jobs[NTHREADS];
	pthread_t t[NTHREADS];
	struct store_snap *r;

	for (unsigned i = 0; i < NFILES; i++) {
		snprintf(fx[i].path, sizeof(fx[i].path), "memory/f%u", i);
		fx[i].len = 3 * MiB + i * 300 * KiB + 17 * i;
		fx[i].data = data[i] = memory_with_holes(fx[i].len, 100 + i);
	}
	write_snap(s, "x", fx, NFILES);
	ck_assert_int_eq(store_snap_open(s, "x", 0, &r), 0);
	for (unsigned i = 0; i < NTHREADS; i++) {
		jobs[i] = (struct job){ .snap = r, .f = &fx[i % NFILES], .k = i };
		ck_assert_int_eq(pthread_create(&t[i], NULL, reader, &jobs[i]), 0);
	}
	for (unsigned i = 0; i < NTHREADS; i++) {
		pthread_join(t[i], NULL);
		ck_assert_msg(!jobs[i].bad, "reader %u of %s: %d bad reads", i, jobs[i].f->path, jobs[i].bad);
	}

	/* Four threads share one handle, taking 1 MiB pieces in turn. */
	struct shared sh = { .fs = &fx[NFILES - 1] };
	pthread_t st[4];
	ck_assert_int_eq(store_file_open(r, fx[NFILES - 1].path, &sh.f), 0);
	for (unsigned i = 0; i < 4; i++)
		ck_assert_int_eq(pthread_create(&st[i], NULL, shared_reader, &sh), 0);
	for (unsigned i = 0; i < 4; i++)
		pthread_join(st[i], NULL);
	ck_assert_msg(!sh.bad, "%d bad reads through a shared handle", sh.bad);
	store_file_close(sh.f);

	store_snap_close(r);
	store_close(s);
	for (unsigned i = 0; i < NFILES; i++)
		free(data[i]);
}
END_TEST

static void tc(Suite *su, const char *name, const TTest *t, int timeout)
{
	TCase *c = tcase_create(name);
	tcase_add_checked_fixture(c, setup, teardown);
	tcase_set_timeout(c, timeout);
	tcase_add_test(c, t);
	suite_add_tcase(su, c);
}

int main(void)
{
	Suite *su = suite_create("store-readahead");
	tc(su, "exact", sequential_and_random_exact, 60);
	tc(su, "off", readahead_off_reads_the_same, 30);
	tc(su, "after-return", nothing_lands_after_return, 60);
	tc(su, "damage-ahead", damage_ahead_is_not_reported, 30);
	tc(su, "close-in-flight", close_with_reads_in_flight, 60);
	tc(su, "many-readers", many_readers_many_files, 90);
	SRunner *sr = srunner_create(su);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
