/*
 * store/dir.c's write path for large writes: page-aligned runs of data go
 * through O_DIRECT while the caller's thread hashes them; short or
 * unaligned pieces, and filesystems that refuse O_DIRECT (tmpfs), go
 * through the page cache, as does everything after a direct write is
 * refused (injected: fault 113). Whatever the path, a snapshot reads back
 * byte-exact, zero pages are real holes, and the manifest's hash is the
 * recipe's (store_hash_buf of the whole content).
 */
#include <check.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/vfs.h>

#include "store/store-int.h"

#define MIB (1u << 20)
#define FSIZE (6 * MIB + 12345)
#define TMPFS_MAGIC 0x01021994

static char root[256];
static struct store *st;

static void setup_in(const char *parent)
{
	snprintf(root, sizeof(root), "%s/ckptfs-test-dir-direct-XXXXXX", parent);
	ck_assert_ptr_nonnull(mkdtemp(root));
	ck_assert_int_eq(store_open_dir(root, &st), 0);
}

static void teardown(void)
{
	store_close(st);
	rm_rf(root);
}

static void fill(uint8_t *p, size_t len, uint64_t seed)
{
	uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;
	for (size_t i = 0; i < len; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		p[i] = (uint8_t)(x | 1); /* never zero: zero pages only where put */
	}
}

/* Writes the test file through the store and builds the same bytes in
 * want: an aligned 2 MiB run; 1 MiB with zero pages every 64 KiB; a write
 * from an unaligned buffer at an odd offset; an aligned rewrite that
 * turns data back into zeros (a hole); a short tail. */
static void write_file(struct store_snap *w, uint8_t *want)
{
	struct store_file *f;
	uint8_t *a = mmap(NULL, 3 * MIB, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	uint8_t *u = malloc(MIB + 1);
	ck_assert_ptr_ne(a, MAP_FAILED);
	ck_assert_ptr_nonnull(u);
	memset(want, 0, FSIZE);
	ck_assert_int_eq(store_file_create(w, "memory/big", &f), 0);

	fill(a, 2 * MIB, 1);
	ck_assert_int_eq(store_file_pwrite(f, a, 2 * MIB, 0), 0);
	memcpy(want, a, 2 * MIB);

	fill(a, MIB, 2);
	for (size_t o = 0; o < MIB; o += 64 << 10)
		memset(a + o, 0, STORE_PAGE_SIZE);
	ck_assert_int_eq(store_file_pwrite(f, a, MIB, 2 * MIB), 0);
	memcpy(want + 2 * MIB, a, MIB);

	fill(u + 1, MIB, 3);
	ck_assert_int_eq(store_file_pwrite(f, u + 1, MIB, 3 * MIB + 777), 0);
	memcpy(want + 3 * MIB + 777, u + 1, MIB);

	/* data, then zeros over the middle of the first run */
	memset(a, 0, MIB + 2 * STORE_PAGE_SIZE);
	fill(a, STORE_PAGE_SIZE, 4);
	fill(a + MIB + STORE_PAGE_SIZE, STORE_PAGE_SIZE, 5);
	ck_assert_int_eq(store_file_pwrite(f, a, MIB + 2 * STORE_PAGE_SIZE, 256 << 10), 0);
	memcpy(want + (256 << 10), a, MIB + 2 * STORE_PAGE_SIZE);

	fill(a, FSIZE - 5 * MIB, 6);
	ck_assert_int_eq(store_file_pwrite(f, a, FSIZE - 5 * MIB, 5 * MIB), 0);
	memcpy(want + 5 * MIB, a, FSIZE - 5 * MIB);

	ck_assert_int_eq(store_file_close(f), 0);
	munmap(a, 3 * MIB);
	free(u);
}

/* Pages of the committed file that the page cache holds. */
static size_t cached_pages(const char *path, size_t off, size_t len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ck_assert_int_ge(fd, 0);
	void *m = mmap(NULL, FSIZE, PROT_READ, MAP_SHARED, fd, 0);
	ck_assert_ptr_ne(m, MAP_FAILED);
	unsigned char vec[FSIZE / STORE_PAGE_SIZE + 1];
	ck_assert_int_eq(mincore(m, FSIZE, vec), 0);
	size_t n = 0;
	for (size_t p = off / STORE_PAGE_SIZE; p < (off + len) / STORE_PAGE_SIZE; p++)
		n += vec[p] & 1;
	munmap(m, FSIZE);
	close(fd);
	return n;
}

static void round_trip(bool expect_direct)
{
	struct store_snap *w, *r;
	struct store_file *f;
	struct store_stat s;
	uint8_t h[STORE_HASH_LEN];
	uint8_t *want = malloc(FSIZE), *got = malloc(FSIZE);
	char path[512];
	ck_assert_ptr_nonnull(want);
	ck_assert_ptr_nonnull(got);

	ck_assert_int_eq(store_snap_create(st, "1", 0, &w), 0);
	write_file(w, want);
	ck_assert_int_eq(store_snap_commit(w), 0);
	store_snap_close(w);

	snprintf(path, sizeof(path), "%s/1/memory/big", root);
	/* The second half of the first run went direct: not in the cache
	 * (the first half was rewritten through the cache in part). */
	if (expect_direct)
		ck_assert_uint_eq(cached_pages(path, 3 * MIB / 2, MIB / 2), 0);

	/* zeros are holes: the page rewritten to zero in the first run, a
	 * zero page in the second */
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(lseek(fd, (256 << 10) + STORE_PAGE_SIZE, SEEK_HOLE), (256 << 10) + STORE_PAGE_SIZE);
	ck_assert_int_eq(lseek(fd, (256 << 10) + STORE_PAGE_SIZE, SEEK_DATA), (256 << 10) + MIB + STORE_PAGE_SIZE);
	ck_assert_int_eq(lseek(fd, 2 * MIB + (64 << 10), SEEK_HOLE), 2 * MIB + (64 << 10));
	close(fd);

	ck_assert_int_eq(store_snap_open(st, "1", STORE_OPEN_VERIFY, &r), 0);
	ck_assert_int_eq(store_file_open(r, "memory/big", &f), 0);
	ck_assert_int_eq(store_file_pread(f, got, FSIZE, 0), FSIZE);
	ck_assert_int_eq(memcmp(got, want, FSIZE), 0);
	ck_assert_int_eq(store_file_close(f), 0);
	ck_assert_int_eq(store_snap_stat(r, "memory/big", &s), 0);
	store_hash_buf(want, FSIZE, h);
	ck_assert_int_eq(memcmp(s.hash, h, STORE_HASH_LEN), 0);
	ck_assert_uint_eq(s.size, FSIZE);
	store_snap_close(r);
	free(want);
	free(got);
}

static bool direct_works(const char *dir)
{
	char p[300];
	snprintf(p, sizeof(p), "%s/probe", dir);
	int fd = open(p, O_CREAT | O_WRONLY | O_DIRECT | O_CLOEXEC, 0600);
	unlink(p);
	if (fd < 0)
		return false;
	close(fd);
	return true;
}

START_TEST(on_disk)
{
	setup_in("/var/tmp");
	round_trip(direct_works(root));
	teardown();
}
END_TEST

/* A filesystem that takes O_DIRECT at open and refuses it at a write:
 * that write and the rest go through the page cache. */
START_TEST(refused_at_write)
{
	setenv("CKPTFS_FAULT", "113:2", 1);
	fault_reload();
	setup_in("/var/tmp");
	round_trip(false);
	teardown();
}
END_TEST

START_TEST(on_tmpfs)
{
	struct statfs sf;
	if (statfs("/dev/shm", &sf) < 0 || sf.f_type != TMPFS_MAGIC) {
		printf("no tmpfs at /dev/shm: the page cache fallback is not tested here\n");
		return;
	}
	/* tmpfs takes O_DIRECT since Linux 6.6; before, it refuses it at
	 * open and everything goes through the page cache */
	setup_in("/dev/shm");
	round_trip(false);
	teardown();
}
END_TEST

int main(void)
{
	Suite *s = suite_create("store-dir-direct");
	TCase *tc = tcase_create("on_disk");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, on_disk);
	suite_add_tcase(s, tc);
	tc = tcase_create("refused_at_write");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, refused_at_write);
	suite_add_tcase(s, tc);
	tc = tcase_create("on_tmpfs");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, on_tmpfs);
	suite_add_tcase(s, tc);

	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
