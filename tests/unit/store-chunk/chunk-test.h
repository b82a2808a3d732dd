/*
 * What the chunk store's test binaries share: a fresh store directory per
 * test, and reproducible data.
 */
#ifndef CKPTFS_TEST_CHUNK_TEST_H
#define CKPTFS_TEST_CHUNK_TEST_H

#include <check.h>

#include "store/chunk-int.h"

#define KiB 1024u
#define MiB (1024u * 1024u)

static char tmp[64];
static char dir[128]; /* tmp/store: the store of the test */

/* A fresh directory under /var/tmp (or /tmp without it), named prefix-*;
 * no fault injected, store read-ahead at its default. */
static inline void test_dir_setup(const char *prefix)
{
	snprintf(tmp, sizeof(tmp), "/var/tmp/%s-XXXXXX", prefix);
	if (!mkdtemp(tmp)) {
		snprintf(tmp, sizeof(tmp), "/tmp/%s-XXXXXX", prefix);
		ck_assert_ptr_nonnull(mkdtemp(tmp));
	}
	snprintf(dir, sizeof(dir), "%s/store", tmp);
	unsetenv("CKPTFS_FAULT");
	unsetenv("CKPTFS_READAHEAD");
	fault_reload();
}

static inline void teardown(void)
{
	rm_rf(tmp);
}

/* splitmix64 */
static inline uint64_t rng_next(uint64_t *s)
{
	uint64_t x = *s += 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

static inline void fill_random(uint8_t *p, size_t len, uint64_t seed)
{
	for (size_t i = 0; i < len; i += 8) {
		uint64_t v = rng_next(&seed);
		memcpy(p + i, &v, MIN((size_t)8, len - i));
	}
}

/* Memory-like: pages that are zero, text, or random, in runs. */
static inline uint8_t *memory_like(size_t len, uint64_t seed)
{
	uint8_t *p = calloc(1, len);
	ck_assert_ptr_nonnull(p);
	for (size_t pg = 0; pg * 4096 < len;) {
		unsigned kind = rng_next(&seed) % 4, run = 1 + rng_next(&seed) % 6;
		for (unsigned i = 0; i < run && pg * 4096 < len; i++, pg++) {
			uint8_t *q = p + pg * 4096;
			size_t n = MIN((size_t)4096, len - pg * 4096);
			if (kind == 0)
				continue;
			if (kind == 1) {
				for (size_t o = 0; o < n; o++)
					q[o] = "the quick brown fox jumps over the lazy dog\n"[(o + pg) % 44];
			} else {
				fill_random(q, n, rng_next(&seed));
			}
		}
	}
	return p;
}

/* The store of the test, opened read-write. */
static inline struct store *open_store(void)
{
	struct store *s;
	int r = store_open(dir, NULL, &s);
	ck_assert_msg(r == 0, "store_open: %s (%s)", strerror(-r), err_msg());
	return s;
}

struct file_spec {
	char path[64];
	const uint8_t *data;
	size_t len;
};

/* Snapshot `name` of the n files, committed. */
static inline void write_snap(struct store *s, const char *name, const struct file_spec *f, size_t n)
{
	struct store_snap *w;
	int r = store_snap_create(s, name, 0, &w);
	ck_assert_msg(r == 0, "create %s: %s", name, err_msg());
	for (size_t i = 0; i < n; i++) {
		r = store_snap_put(w, f[i].path, f[i].data, f[i].len);
		ck_assert_msg(r == 0, "put %s: %s", f[i].path, err_msg());
	}
	r = store_snap_commit(w);
	ck_assert_msg(r == 0, "commit %s: %s", name, err_msg());
	store_snap_close(w);
}

#endif
