/*
 * store/hash.c: the file hash ("sha256-tree") against an independent
 * reference and fixed vectors, sparse files against dense ones, leaf sets
 * filled in any order, and buf_is_zero.
 */
#include <check.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/stat.h>

#include "store/store-int.h"

static char tmpdir[] = "/tmp/ckptfs-test-hash-XXXXXX";

static void setup(void)
{
	ck_assert_ptr_nonnull(mkdtemp(tmpdir));
}

static void teardown(void)
{
	rm_rf(tmpdir);
}

/* The definition, written the plain way: hash every block, then the
 * concatenation. */
static void reference(const uint8_t *buf, size_t len, uint8_t out[32])
{
	size_t nblocks = (len + STORE_BLOCK_SIZE - 1) / STORE_BLOCK_SIZE;
	uint8_t *leaves = malloc(nblocks * 32 + 1);
	unsigned n;

	ck_assert_ptr_nonnull(leaves);
	for (size_t b = 0; b < nblocks; b++) {
		size_t off = b * STORE_BLOCK_SIZE;
		ck_assert(EVP_Digest(buf + off, MIN(len - off, (size_t)STORE_BLOCK_SIZE), leaves + 32 * b, &n,
				     EVP_sha256(), NULL));
	}
	ck_assert(EVP_Digest(leaves, nblocks * 32, out, &n, EVP_sha256(), NULL));
	free(leaves);
}

static void hex_eq(const uint8_t h[32], const char *want)
{
	char hex[65];
	store_hash_hex(h, hex);
	ck_assert_str_eq(hex, want);
}

/* Data with zero pages, zero blocks and partial ones mixed in. */
static uint8_t *make_data(size_t len, unsigned seed)
{
	uint8_t *p = malloc(len);
	ck_assert_ptr_nonnull(p);
	for (size_t i = 0; i < len; i++) {
		seed = seed * 1103515245 + 12345;
		p[i] = seed >> 16;
	}
	for (size_t off = 0; off < len; off += 3 * STORE_PAGE_SIZE)
		memset(p + off, 0, MIN((size_t)STORE_PAGE_SIZE, len - off));
	if (len > 3 * STORE_BLOCK_SIZE)
		memset(p + STORE_BLOCK_SIZE, 0, 2 * STORE_BLOCK_SIZE);
	return p;
}

START_TEST(vectors)
{
	uint8_t h[32], *d;

	store_hash_buf("", 0, h);
	hex_eq(h, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
	store_hash_buf("a", 1, h);
	hex_eq(h, "bf5d3affb73efd2ec6c36ad3112dd933efed63c4e1cbffcfa88e2759c144f2d8");
	d = malloc(40000);
	for (size_t i = 0; i < 40000; i++)
		d[i] = (i * 7 + 3) % 251;
	store_hash_buf(d, 40000, h);
	hex_eq(h, "a27d2988e53d61c1f16b275fada0e23fe8096fbcb262aa046ddcce4403b1c032");
	free(d);
	d = calloc(1, 3 * STORE_BLOCK_SIZE + 5);
	store_hash_buf(d, 3 * STORE_BLOCK_SIZE + 5, h);
	hex_eq(h, "322975178a487511a127316c1cbbf3d05721099bd66f98d2db12c33dd720c690");
	free(d);
}
END_TEST

START_TEST(buf_matches_reference)
{
	static const size_t sizes[] = { 1, 4095, 4096, 16383, 16384, 16385, 65536, 100000, 300001 };
	for (size_t i = 0; i < ARRAY_SIZE(sizes); i++) {
		uint8_t *d = make_data(sizes[i], i), a[32], b[32];
		store_hash_buf(d, sizes[i], a);
		reference(d, sizes[i], b);
		ck_assert_msg(!memcmp(a, b, 32), "size %zu differs", sizes[i]);
		/* one flipped bit anywhere changes it */
		d[sizes[i] / 2] ^= 1;
		store_hash_buf(d, sizes[i], b);
		ck_assert(memcmp(a, b, 32));
		free(d);
	}
}
END_TEST

START_TEST(leaf_and_zero_leaf)
{
	uint8_t z[STORE_BLOCK_SIZE] = {}, a[32], b[32];
	unsigned n;

	hash_zero_leaf(STORE_BLOCK_SIZE, a);
	ck_assert(EVP_Digest(z, sizeof(z), b, &n, EVP_sha256(), NULL));
	ck_assert(!memcmp(a, b, 32));
	hash_zero_leaf(100, a);
	hash_leaf(z, 100, b);
	ck_assert(!memcmp(a, b, 32));
}
END_TEST

static void write_file(const char *path, const uint8_t *d, size_t len, bool sparse)
{
	int fd = open(path, O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0600);
	ck_assert_int_ge(fd, 0);
	for (size_t off = 0; off < len; off += STORE_PAGE_SIZE) {
		size_t n = MIN((size_t)STORE_PAGE_SIZE, len - off);
		if (sparse && buf_is_zero(d + off, n))
			continue;
		ck_assert_int_eq(pwrite_full(fd, d + off, n, off), 0);
	}
	ck_assert_int_eq(ftruncate(fd, len), 0);
	close(fd);
}

static void hash_path(const char *path, uint8_t out[32])
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(store_hash_fd(fd, out), 0);
	close(fd);
}

START_TEST(fd_sparse_equals_dense)
{
	static const size_t sizes[] = { 0, 1, 4096, 16384 + 17, 3 * 16384, 200000, 2 << 20 | 123 };
	char p1[256], p2[256];

	snprintf(p1, sizeof(p1), "%s/dense", tmpdir);
	snprintf(p2, sizeof(p2), "%s/sparse", tmpdir);
	for (size_t i = 0; i < ARRAY_SIZE(sizes); i++) {
		uint8_t *d = make_data(sizes[i], 7 + i), a[32], b[32], c[32];
		write_file(p1, d, sizes[i], false);
		write_file(p2, d, sizes[i], true);
		hash_path(p1, a);
		hash_path(p2, b);
		reference(d, sizes[i], c);
		ck_assert_msg(!memcmp(a, c, 32), "dense size %zu", sizes[i]);
		ck_assert_msg(!memcmp(b, c, 32), "sparse size %zu", sizes[i]);
		free(d);
	}
}
END_TEST

/* A 64 GiB file with three data blocks hashes without reading its holes
 * (the test would take minutes otherwise) and agrees with a leaf set. */
START_TEST(fd_huge_sparse)
{
	uint64_t size = (64ull << 30) + 1000, offs[] = { 0, 5ull << 30, size - 1000 };
	uint8_t data[1000], h1[32], h2[32], leaf[32];
	struct leaf_set *l;
	char p[256];
	int fd;

	memset(data, 0xab, sizeof(data));
	snprintf(p, sizeof(p), "%s/huge", tmpdir);
	fd = open(p, O_CREAT | O_RDWR | O_CLOEXEC, 0600);
	ck_assert_int_ge(fd, 0);
	if (ftruncate(fd, size) < 0) {
		close(fd);
		return; /* a filesystem without large sparse files: nothing to check */
	}
	for (size_t i = 0; i < ARRAY_SIZE(offs); i++)
		ck_assert_int_eq(pwrite_full(fd, data, sizeof(data), offs[i]), 0);
	ck_assert_int_eq(store_hash_fd(fd, h1), 0);
	close(fd);

	ck_assert_int_eq(leaf_set_new(&l), 0);
	/* block of offs[0] and offs[1]: 1000 data bytes then zeros */
	uint8_t *blk = calloc(1, STORE_BLOCK_SIZE);
	memcpy(blk, data, sizeof(data));
	hash_leaf(blk, STORE_BLOCK_SIZE, leaf);
	ck_assert_int_eq(leaf_set_put(l, offs[1] / STORE_BLOCK_SIZE, leaf), 0);
	ck_assert_int_eq(leaf_set_put(l, 0, leaf), 0);
	/* the last block: 1000 bytes long, all data */
	hash_leaf(data, 1000, leaf);
	ck_assert_int_eq(leaf_set_put(l, offs[2] / STORE_BLOCK_SIZE, leaf), 0);
	ck_assert_int_eq(leaf_set_final(l, size, h2), 0);
	ck_assert(!memcmp(h1, h2, 32));
	leaf_set_free(l);
	free(blk);
}
END_TEST

/* Leaves put in order, reversed, shuffled, replaced and dropped give the
 * hash of the buffer they describe. */
START_TEST(leaf_set_any_order)
{
	const size_t nblocks = 5000, size = nblocks * STORE_BLOCK_SIZE - 100;
	uint8_t *d = make_data(size, 42), want[32], got[32], leaf[32];
	store_hash_buf(d, size, want);
	for (int mode = 0; mode < 3; mode++) {
		struct leaf_set *l;
		ck_assert_int_eq(leaf_set_new(&l), 0);
		/* garbage first, to be replaced or dropped */
		for (size_t b = 0; b < nblocks; b += 7) {
			memset(leaf, 0x5a, 32);
			ck_assert_int_eq(leaf_set_put(l, b, leaf), 0);
		}
		for (size_t i = 0; i < nblocks; i++) {
			size_t b = mode == 0 ? i : mode == 1 ? nblocks - 1 - i : (i * 2999) % nblocks;
			size_t off = b * STORE_BLOCK_SIZE, n = MIN(size - off, (size_t)STORE_BLOCK_SIZE);
			if (buf_is_zero(d + off, n)) {
				leaf_set_drop(l, b);
				continue;
			}
			hash_leaf(d + off, n, leaf);
			ck_assert_int_eq(leaf_set_put(l, b, leaf), 0);
		}
		ck_assert_int_eq(leaf_set_final(l, size, got), 0);
		ck_assert_msg(!memcmp(want, got, 32), "mode %d", mode);
		leaf_set_free(l);
	}
	free(d);
}
END_TEST

START_TEST(leaf_set_holes_only)
{
	struct leaf_set *l;
	uint8_t *z = calloc(1, 5 * STORE_BLOCK_SIZE), a[32], b[32];

	ck_assert_int_eq(leaf_set_new(&l), 0);
	ck_assert_int_eq(leaf_set_final(l, 5 * STORE_BLOCK_SIZE - 7, a), 0);
	store_hash_buf(z, 5 * STORE_BLOCK_SIZE - 7, b);
	ck_assert(!memcmp(a, b, 32));
	ck_assert_int_eq(leaf_set_final(l, 0, a), 0);
	store_hash_buf(z, 0, b);
	ck_assert(!memcmp(a, b, 32));
	leaf_set_free(l);
	leaf_set_free(NULL);
	free(z);
}
END_TEST

START_TEST(zero_detection)
{
	uint8_t buf[300] = {};
	for (size_t start = 0; start < 16; start++)
		for (size_t len = 0; len + start <= 200; len++) {
			ck_assert(buf_is_zero(buf + start, len));
			for (size_t k = 0; k < len; k += 13) {
				buf[start + k] = 1;
				ck_assert(!buf_is_zero(buf + start, len));
				buf[start + k] = 0;
			}
			if (len) {
				buf[start + len - 1] = 0x80;
				ck_assert(!buf_is_zero(buf + start, len));
				buf[start + len - 1] = 0;
				buf[start + len] = 1; /* just past the end: not looked at */
				ck_assert(buf_is_zero(buf + start, len));
				buf[start + len] = 0;
			}
		}
}
END_TEST

int main(void)
{
	Suite *s = suite_create("store-hash");
	TCase *tc = tcase_create("tree");
	tcase_add_test(tc, vectors);
	tcase_add_test(tc, buf_matches_reference);
	tcase_add_test(tc, leaf_and_zero_leaf);
	suite_add_tcase(s, tc);
	tc = tcase_create("fd");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, fd_sparse_equals_dense);
	tcase_add_test(tc, fd_huge_sparse);
	suite_add_tcase(s, tc);
	tc = tcase_create("leaf_set");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, leaf_set_any_order);
	tcase_add_test(tc, leaf_set_holes_only);
	suite_add_tcase(s, tc);
	tc = tcase_create("zero");
	tcase_add_test(tc, zero_detection);
	suite_add_tcase(s, tc);

	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
