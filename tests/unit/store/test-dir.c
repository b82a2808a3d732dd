/*
 * store/dir.c through store.h: snapshots as plain directories. Round trips
 * read back byte-exact with real holes; bad snapshot directories (sizes,
 * bytes, missing, extra, symlinks, a lying manifest) are refused naming
 * the file and change nothing; a writer killed at the injected points
 * leaves older snapshots whole and no new one; imports are verified.
 */
#include <check.h>
#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "store/store-int.h"

static char root[] = "/tmp/ckptfs-test-dir-XXXXXX";
static struct store *st;

static void setup(void)
{
	ck_assert_ptr_nonnull(mkdtemp(root));
	ck_assert_int_eq(store_open_dir(root, &st), 0);
	ck_assert_int_eq(store_backend(st), STORE_BACKEND_DIR);
}

static void teardown(void)
{
	store_close(st);
	rm_rf(root);
}

static char *at(const char *fmt, ...) _printf_(1, 2);
static char *at(const char *fmt, ...)
{
	static char buf[4][512];
	static int k;
	char rel[400];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(rel, sizeof(rel), fmt, ap);
	va_end(ap);
	k = (k + 1) % 4;
	snprintf(buf[k], sizeof(buf[k]), "%s/%s", root, rel);
	return buf[k];
}

/* ---- the reference snapshot ----------------------------------------------- */

struct content {
	const char *path;
	uint8_t *data;
	size_t size;
};

#define NFILES 5
static struct content files[NFILES];

/* Memory-like bytes: zero pages, text, noise. */
static uint8_t *gen(size_t size, unsigned seed)
{
	uint8_t *p = calloc(1, size ? size : 1);
	for (size_t pg = 0; pg < size; pg += 4096) {
		size_t n = MIN((size_t)4096, size - pg);
		seed = seed * 1103515245 + 12345;
		switch ((seed >> 16) % 3) {
		case 0:
			break; /* zero page */
		case 1:
			for (size_t i = 0; i < n; i++)
				p[pg + i] = "ckptfs text "[i % 12];
			break;
		default:
			for (size_t i = 0; i < n; i++) {
				seed = seed * 1103515245 + 12345;
				p[pg + i] = seed >> 16;
			}
		}
	}
	return p;
}

static void make_contents(unsigned seed)
{
	static const char *paths[NFILES] = { "process", "maps", "memory/0000000000400000-0000000000460000",
					     "regs/1234", "memory/00007f0000000000-00007f0000100000" };
	static const size_t sizes[NFILES] = { 300, 0, 0x60000, 77, 0x100000 };
	for (int i = 0; i < NFILES; i++) {
		free(files[i].data);
		files[i].path = paths[i];
		files[i].size = sizes[i];
		files[i].data = gen(sizes[i], seed + i);
	}
	/* the 1 MiB area: mostly a hole */
	memset(files[4].data, 0, 0xe0000);
	memset(files[4].data + 0x10000, 0x42, 100);
}

/* Writes the reference files in several styles: block-aligned, page-sized
 * pieces in reverse, odd pieces, and a sparse tail via set_size. */
static void write_snapshot(const char *name, unsigned flags)
{
	struct store_snap *w;
	struct store_file *f;

	ck_assert_int_eq(store_snap_create(st, name, flags, &w), 0);
	ck_assert_int_eq(store_snap_put(w, files[0].path, files[0].data, files[0].size), 0);
	ck_assert_int_eq(store_snap_put(w, files[1].path, files[1].data, files[1].size), 0);

	ck_assert_int_eq(store_file_create(w, files[2].path, &f), 0);
	for (size_t off = files[2].size; off > 0; off -= 4096)
		ck_assert_int_eq(store_file_pwrite(f, files[2].data + off - 4096, 4096, off - 4096), 0);
	ck_assert_int_eq(store_file_close(f), 0);

	ck_assert_int_eq(store_file_create(w, files[3].path, &f), 0);
	ck_assert_int_eq(store_file_pwrite(f, files[3].data + 10, 67, 10), 0);
	ck_assert_int_eq(store_file_pwrite(f, files[3].data, 10, 0), 0);
	ck_assert_int_eq(store_file_close(f), 0);

	ck_assert_int_eq(store_file_create(w, files[4].path, &f), 0);
	for (size_t off = 0; off < 0x20000; off += 16384)
		ck_assert_int_eq(store_file_pwrite(f, files[4].data + off, 16384, off), 0);
	ck_assert_int_eq(store_file_pwrite(f, files[4].data + 0xe0000, 0x1000 + 5, 0xe0000), 0);
	ck_assert_int_eq(store_file_pwrite(f, files[4].data + 0xe1005, 0x1effb, 0xe1005), 0);
	ck_assert_int_eq(store_file_set_size(f, 0x100000), 0);
	ck_assert_int_eq(store_file_close(f), 0);

	ck_assert_int_eq(store_snap_commit(w), 0);
	store_snap_close(w);
}

static void check_file(struct store_snap *r, const struct content *c)
{
	struct store_file *f;
	struct store_stat s;
	uint8_t *buf = malloc(c->size + 10), h[32];

	ck_assert_int_eq(store_file_open(r, c->path, &f), 0);
	ck_assert_int_eq(store_file_stat(f, &s), 0);
	ck_assert_uint_eq(s.size, c->size);
	store_hash_buf(c->data, c->size, h);
	ck_assert_msg(!memcmp(s.hash, h, 32), "%s: hash", c->path);
	ck_assert_int_eq(store_file_pread(f, buf, c->size + 10, 0), (ssize_t)c->size);
	ck_assert_msg(!memcmp(buf, c->data, c->size), "%s: content", c->path);
	if (c->size > 1)
		ck_assert_int_eq(store_file_pread(f, buf, 10, c->size - 1), 1);
	ck_assert_int_eq(store_file_pread(f, buf, 10, c->size), 0);

	/* data is where the non-zero pages are; holes read as zeros */
	uint64_t alloc = 0;
	for (size_t pg = 0; pg < c->size; pg += 4096)
		if (!buf_is_zero(c->data + pg, MIN((size_t)4096, c->size - pg)))
			alloc += MIN((size_t)4096, c->size - pg);
	ck_assert_msg(s.allocated == alloc, "%s: allocated %" PRIu64 ", want %" PRIu64, c->path,
		      s.allocated, alloc);
	if (c->size) {
		int64_t d = store_file_seek(f, 0, SEEK_DATA);
		size_t first = 0;
		while (first < c->size && buf_is_zero(c->data + first, MIN((size_t)4096, c->size - first)))
			first += 4096;
		if (first >= c->size)
			ck_assert_int_eq(d, -ENXIO);
		else
			ck_assert_int_eq(d, first);
		ck_assert_int_le(store_file_seek(f, 0, SEEK_HOLE), c->size);
	}
	ck_assert_int_eq(store_file_seek(f, c->size, SEEK_DATA), -ENXIO);
	ck_assert_int_eq(store_file_seek(f, c->size, SEEK_HOLE), -ENXIO);
	ck_assert_int_eq(store_file_close(f), 0);
	free(buf);
}

static void check_snapshot(const char *name, unsigned flags)
{
	struct store_snap *r;
	int q = store_snap_open(st, name, flags, &r);
	ck_assert_msg(q == 0, "open %s: %d %s", name, q, err_msg());
	for (int i = 0; i < NFILES; i++)
		check_file(r, &files[i]);
	store_snap_close(r);
}

static void fresh(const char *name)
{
	make_contents(1);
	write_snapshot(name, 0);
}

/* ---- round trips ---------------------------------------------------------- */

static int collect(const char *path, const struct store_stat *s, void *ud)
{
	char *out = ud;
	strcat(out, path);
	strcat(out, " ");
	return 0;
}

START_TEST(round_trip)
{
	struct store_snap *r;
	char list[1024] = "", *text;
	size_t len;
	struct stat sb;

	fresh("snap1");
	check_snapshot("snap1", 0);
	check_snapshot("snap1", STORE_OPEN_VERIFY);

	ck_assert_int_eq(store_snap_open(st, "snap1", 0, &r), 0);
	ck_assert_int_eq(store_snap_foreach_file(r, collect, list), 0);
	ck_assert_str_eq(list, "manifest maps memory/0000000000400000-0000000000460000 "
			       "memory/00007f0000000000-00007f0000100000 process regs/1234 ");
	ck_assert_int_eq(store_snap_read_all(r, "process", &text, &len), 0);
	ck_assert_uint_eq(len, 300);
	ck_assert(!memcmp(text, files[0].data, 300));
	ck_assert_int_eq(text[300], 0);
	free(text);
	ck_assert_int_eq(store_snap_read_all(r, "manifest", &text, &len), 0);
	ck_assert(!strncmp(text, "ckptfs-snapshot 2\nhash sha256-tree\ncreated ", 43));
	ck_assert_ptr_nonnull(strstr(text, "\nfiles 5\n"));
	ck_assert_ptr_nonnull(strstr(text, " 77 regs/1234\n"));
	free(text);
	ck_assert_int_eq(store_snap_read_all(r, "nope", &text, &len), -ENOENT);
	store_snap_close(r);

	/* on disk: real holes, owner-only modes, no temporary directory */
	ck_assert_int_eq(stat(at("snap1/memory/00007f0000000000-00007f0000100000"), &sb), 0);
	ck_assert_int_eq(sb.st_size, 0x100000);
	ck_assert_int_le(sb.st_blocks * 512, 0x40000);
	ck_assert_int_eq(sb.st_mode & 0777, 0600);
	ck_assert_int_eq(stat(at("snap1"), &sb), 0);
	ck_assert_int_eq(sb.st_mode & 0777, 0700);
	ck_assert_int_eq(stat(at("snap1/memory"), &sb), 0);
	ck_assert_int_eq(sb.st_mode & 077, 0);
	DIR *d = opendir(root);
	struct dirent *de;
	int n = 0;
	while ((de = readdir(d)))
		n += de->d_name[0] != '.';
	closedir(d);
	ck_assert_int_eq(n, 1);
}
END_TEST

/* The hash the manifest lists is the one an independent tool computes;
 * cross-checked with the recipe of docs/FORMAT.md when python3 is there. */
START_TEST(manifest_hash_matches_recipe)
{
	char cmd[1024];
	FILE *p;
	char line[200] = "";
	char hex[65];
	uint8_t h[32];

	fresh("s");
	if (access("/usr/bin/python3", X_OK) != 0)
		return;
	snprintf(cmd, sizeof(cmd),
		 "python3 -c 'import hashlib,sys;d=open(sys.argv[1],\"rb\").read();"
		 "print(hashlib.sha256(b\"\".join(hashlib.sha256(d[i:i+16384]).digest() "
		 "for i in range(0,len(d),16384))).hexdigest())' %s",
		 at("s/memory/0000000000400000-0000000000460000"));
	p = popen(cmd, "r");
	ck_assert_ptr_nonnull(p);
	ck_assert_ptr_nonnull(fgets(line, sizeof(line), p));
	pclose(p);
	store_hash_buf(files[2].data, files[2].size, h);
	store_hash_hex(h, hex);
	ck_assert_int_eq(strncmp(line, hex, 64), 0);
}
END_TEST

START_TEST(rewrites_and_holes)
{
	struct store_snap *w, *r;
	struct store_file *f;
	uint8_t *a = malloc(65536), *z = calloc(1, 65536), *buf = malloc(65536);
	struct store_stat s;

	memset(a, 0x77, 65536);
	ck_assert_int_eq(store_snap_create(st, "rw", 0, &w), 0);
	ck_assert_int_eq(store_file_create(w, "f", &f), 0);
	ck_assert_int_eq(store_file_pwrite(f, a, 65536, 0), 0);
	/* zeros over data: the pages become holes again */
	ck_assert_int_eq(store_file_pwrite(f, z, 16384, 16384), 0);
	ck_assert_int_eq(store_file_pwrite(f, z, 100, 40000), 0);
	memset(a + 16384, 0, 16384);
	memset(a + 40000, 0, 100);
	ck_assert_int_eq(store_file_close(f), 0);
	/* grows then shrinks */
	ck_assert_int_eq(store_file_create(w, "g", &f), 0);
	ck_assert_int_eq(store_file_pwrite(f, a, 65536, 0), 0);
	ck_assert_int_eq(store_file_set_size(f, 20000), 0);
	ck_assert_int_eq(store_file_set_size(f, 30000), 0);
	ck_assert_int_eq(store_file_close(f), 0);
	/* only a size: all hole */
	ck_assert_int_eq(store_file_create(w, "h", &f), 0);
	ck_assert_int_eq(store_file_set_size(f, 1ull << 36), 0);
	ck_assert_int_eq(store_file_close(f), 0);
	ck_assert_int_eq(store_snap_commit(w), 0);
	store_snap_close(w);

	ck_assert_int_eq(store_snap_open(st, "rw", STORE_OPEN_VERIFY, &r), 0);
	ck_assert_int_eq(store_file_open(r, "f", &f), 0);
	ck_assert_int_eq(store_file_pread(f, buf, 65536, 0), 65536);
	ck_assert(!memcmp(buf, a, 65536));
	ck_assert_int_eq(store_file_seek(f, 16384, SEEK_DATA), 32768);
	ck_assert_int_eq(store_file_seek(f, 0, SEEK_HOLE), 16384);
	ck_assert_int_eq(store_file_stat(f, &s), 0);
	ck_assert_uint_eq(s.allocated, 65536 - 16384);
	store_file_close(f);
	ck_assert_int_eq(store_snap_stat(r, "g", &s), 0);
	ck_assert_uint_eq(s.size, 30000);
	memset(a + 20000, 0, 10000);
	uint8_t h[32];
	store_hash_buf(a, 30000, h);
	ck_assert(!memcmp(s.hash, h, 32));
	ck_assert_int_eq(store_snap_stat(r, "h", &s), 0);
	ck_assert_uint_eq(s.size, 1ull << 36);
	ck_assert_uint_eq(s.allocated, 0);
	ck_assert_int_eq(store_file_open(r, "h", &f), 0);
	ck_assert_int_eq(store_file_seek(f, 0, SEEK_DATA), -ENXIO);
	ck_assert_int_eq(store_file_seek(f, 5, SEEK_HOLE), 5);
	store_file_close(f);
	char *text;
	ck_assert_int_eq(store_snap_read_all(r, "h", &text, NULL), -EFBIG);
	store_snap_close(r);
	free(a);
	free(z);
	free(buf);
}
END_TEST


/* Random writes, rewrites (zeros over data included) and size changes
 * against a model in memory: the bytes read back match the model, and the
 * hash built from leaves as blocks were written equals the hash of the
 * file read back (STORE_OPEN_VERIFY compares the two). */
START_TEST(random_writes)
{
	const size_t max = 300000;
	uint8_t *model = calloc(1, max), *buf = malloc(max), h[32];
	unsigned seed = 99 + _i;
	size_t size = 0;
	struct store_snap *w, *r;
	struct store_file *f;
	struct store_stat s;
#define RND() (seed = seed * 1103515245 + 12345, (seed >> 8) & 0xffffff)

	ck_assert_int_eq(store_snap_create(st, "rnd", 0, &w), 0);
	ck_assert_int_eq(store_file_create(w, "f", &f), 0);
	for (int op = 0; op < 300; op++) {
		unsigned kind = RND() % 10;
		if (kind == 0) {
			size_t ns = RND() % max;
			/* even rounds only grow: a shrink makes close rehash the
			 * whole file, which would hide the leaves' bookkeeping */
			if (_i % 2 == 0)
				ns = MAX(ns, size);
			if (ns < size)
				memset(model + ns, 0, size - ns);
			size = ns;
			ck_assert_int_eq(store_file_set_size(f, ns), 0);
			continue;
		}
		size_t off = RND() % (max - 1), len;
		switch (RND() % 3) {
		case 0: off = ALIGN_DOWN(off, (size_t)STORE_BLOCK_SIZE); break;
		case 1: off = ALIGN_DOWN(off, (size_t)STORE_PAGE_SIZE); break;
		}
		len = 1 + RND() % 40000;
		if (RND() % 2)
			len = ALIGN_UP(len, (size_t)STORE_PAGE_SIZE);
		len = MIN(len, max - off);
		if (kind < 4)
			memset(buf, 0, len); /* zeros, over data or not */
		else
			for (size_t i = 0; i < len; i++)
				buf[i] = RND() % 4 ? 0 : (uint8_t)RND(); /* mostly zero: many zero pages */
		if (kind == 9)
			memset(buf, 7, len);
		ck_assert_int_eq(store_file_pwrite(f, buf, len, off), 0);
		memcpy(model + off, buf, len);
		size = MAX(size, off + len);
	}
	ck_assert_int_eq(store_file_close(f), 0);
	ck_assert_int_eq(store_snap_commit(w), 0);
	store_snap_close(w);

	int q = store_snap_open(st, "rnd", STORE_OPEN_VERIFY, &r);
	ck_assert_msg(q == 0, "%s", err_msg());
	ck_assert_int_eq(store_file_open(r, "f", &f), 0);
	ck_assert_int_eq(store_file_stat(f, &s), 0);
	ck_assert_uint_eq(s.size, size);
	ck_assert_int_eq(store_file_pread(f, buf, max, 0), (ssize_t)size);
	ck_assert(!memcmp(buf, model, size));
	store_hash_buf(model, size, h);
	ck_assert(!memcmp(s.hash, h, 32));
	store_file_close(f);
	store_snap_close(r);
	free(model);
	free(buf);
#undef RND
}
END_TEST

/* ---- the interface's rules ------------------------------------------------ */

START_TEST(state_and_names)
{
	struct store_snap *w, *r;
	struct store_file *f, *g;
	uint8_t b[10] = { 1 };

	ck_assert_int_eq(store_snap_create(st, "../x", 0, &w), -EINVAL);
	ck_assert_int_eq(store_snap_create(st, "a/b", 0, &w), -EINVAL);
	ck_assert_int_eq(store_snap_create(st, ".hidden", 0, &w), -EINVAL);
	ck_assert_int_eq(store_snap_create(st, "x", 0x80, &w), -EINVAL);
	ck_assert_int_eq(store_snap_create(st, "/abs", 0, &w), -EINVAL);
	ck_assert_int_eq(store_snap_create(st, "a//b", 0, &w), -EINVAL);
	ck_assert_int_eq(store_snap_create(st, ".", 0, &w), -EINVAL);
	ck_assert_int_eq(store_snap_create(st, "..", 0, &w), -EINVAL);
	char longname[300];
	memset(longname, 'l', 299);
	longname[299] = 0;
	ck_assert_int_eq(store_snap_create(st, longname, 0, &w), -EINVAL);
	ck_assert_ptr_nonnull(strstr(err_msg(), "too long"));
	/* none of these left anything behind */
	DIR *d = opendir(root);
	struct dirent *de;
	int n = 0;
	while ((de = readdir(d)))
		n++;
	closedir(d);
	ck_assert_int_eq(n, 2);
	ck_assert_int_eq(store_snap_create(st, "w", 0, &w), 0);
	ck_assert_int_eq(store_file_create(w, "manifest", &f), -EPERM);
	ck_assert_int_eq(store_file_create(w, "manifest/x", &f), -EINVAL);
	static const char *bad[] = { "..", "/abs", "a//b", ".", "a/../b", "a/" };
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++)
		ck_assert_int_eq(store_file_create(w, bad[i], &f), -EINVAL);
	ck_assert_int_eq(store_file_create(w, "d/f", &f), 0);
	ck_assert_int_eq(store_file_create(w, "d/f", &g), -EEXIST);
	ck_assert_int_eq(store_file_create(w, "d/f/x", &g), -ENOTDIR);
	ck_assert_int_eq(store_file_create(w, "d", &g), -EEXIST);
	ck_assert_int_eq(store_file_pread(f, b, 10, 0), -EBADF);
	ck_assert_int_eq(store_file_seek(f, 0, SEEK_DATA), -EBADF);
	ck_assert_int_eq(store_file_pwrite(f, b, 10, 1ull << 50), -EFBIG);
	ck_assert_int_eq(store_file_pwrite(f, b, 10, 5), 0);
	ck_assert_int_eq(store_snap_foreach_file(w, collect, NULL), -EBADF);
	ck_assert_int_eq(store_file_close(f), 0);
	ck_assert_int_eq(store_file_create(w, "e", &f), 0);
	/* a file still open: the commit fails, and the writer with it */
	ck_assert_int_eq(store_snap_commit(w), -EBUSY);
	ck_assert_int_eq(store_file_close(f), 0);
	ck_assert_int_eq(store_snap_commit(w), -EBADF);
	store_snap_close(w);
	ck_assert_int_eq(store_snap_open(st, "w", 0, &r), -ENOENT);

	ck_assert_int_eq(store_snap_create(st, "w", 0, &w), 0);
	ck_assert_int_eq(store_snap_put(w, "d/f", b, 10), 0);
	ck_assert_int_eq(store_snap_open(st, "w", 0, &r), -ENOENT);
	ck_assert_int_eq(store_snap_commit(w), 0);
	ck_assert_int_eq(store_snap_commit(w), -EBADF);
	ck_assert_int_eq(store_file_create(w, "late", &f), -EBADF);
	store_snap_close(w);

	ck_assert_int_eq(store_snap_create(st, "w", 0, &w), -EEXIST);
	ck_assert_int_eq(store_snap_open(st, "w", 0, &r), 0);
	ck_assert_int_eq(store_file_create(r, "x", &f), -EBADF);
	ck_assert_int_eq(store_snap_commit(r), -EBADF);
	ck_assert_int_eq(store_file_open(r, "d/f", &f), 0);
	ck_assert_int_eq(store_file_pwrite(f, b, 1, 0), -EBADF);
	ck_assert_int_eq(store_file_seek(f, 0, 0), -EINVAL);
	ck_assert_int_eq(store_file_close(f), 0);
	ck_assert_int_eq(store_file_open(r, "d", &f), -ENOENT);
	ck_assert_int_eq(store_file_open(r, "../w/d/f", &f), -EINVAL);
	store_snap_close(r);
	ck_assert_int_eq(store_snap_open(st, "nope", 0, &r), -ENOENT);
	ck_assert_int_eq(store_stats(st, &(struct store_stats){}), -EOPNOTSUPP);
	ck_assert_int_eq(store_gc(st, NULL), -EOPNOTSUPP);
	char *def = store_default_path();
	ck_assert_ptr_nonnull(def);
	if (geteuid() == 0)
		ck_assert_str_eq(def, "/var/lib/ckptfs");
	else
		ck_assert_ptr_nonnull(strstr(def, "/ckptfs"));
	free(def);
	store_close(NULL);
	store_snap_close(NULL);
	ck_assert_int_eq(store_file_close(NULL), 0);
}
END_TEST

/* The non-root answers, checked in a child that drops root if need be. */
START_TEST(default_path)
{
	pid_t pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		char *p;
		if (geteuid() == 0 && setuid(65534) < 0)
			_exit(77);
		setenv("XDG_DATA_HOME", "/x/data", 1);
		p = store_default_path();
		if (!p || strcmp(p, "/x/data/ckptfs"))
			_exit(1);
		free(p);
		setenv("XDG_DATA_HOME", "relative", 1); /* invalid per the XDG spec */
		setenv("HOME", "/home/u", 1);
		p = store_default_path();
		if (!p || strcmp(p, "/home/u/.local/share/ckptfs"))
			_exit(2);
		free(p);
		_exit(0);
	}
	int status;
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert(WIFEXITED(status));
	if (WEXITSTATUS(status) == 77)
		return; /* cannot drop root here: nothing to check */
	ck_assert_int_eq(WEXITSTATUS(status), 0);
}
END_TEST

START_TEST(same_name_race)
{
	struct store_snap *a, *b;

	ck_assert_int_eq(store_snap_create(st, "n", 0, &a), 0);
	ck_assert_int_eq(store_snap_create(st, "n", 0, &b), 0);
	ck_assert_int_eq(store_snap_put(a, "x", "a", 1), 0);
	ck_assert_int_eq(store_snap_put(b, "x", "b", 1), 0);
	ck_assert_int_eq(store_snap_commit(a), 0);
	ck_assert_int_eq(store_snap_commit(b), -EEXIST);
	ck_assert_int_eq(store_snap_commit(b), -EBADF);
	store_snap_close(a);
	store_snap_close(b);

	struct store_snap *r;
	char *t;
	ck_assert_int_eq(store_snap_open(st, "n", 0, &r), 0);
	ck_assert_int_eq(store_snap_read_all(r, "x", &t, NULL), 0);
	ck_assert_str_eq(t, "a");
	free(t);
	store_snap_close(r);
}
END_TEST

struct listed {
	char names[256];
	uint32_t files;
	uint64_t size;
};

static int list_cb(const struct store_snap_info *i, void *ud)
{
	struct listed *l = ud;
	strcat(l->names, i->name);
	strcat(l->names, " ");
	l->files += i->files;
	l->size += i->size;
	ck_assert_int_gt(i->created, 1600000000);
	ck_assert_uint_le(i->allocated, i->size);
	return 0;
}

START_TEST(list_and_delete)
{
	struct store_snap *w;
	struct listed l = {};

	ck_assert_int_eq(store_snap_create(st, "c", 0, &w), 0);
	ck_assert_int_eq(store_snap_put(w, "x", "abc", 3), 0);
	ck_assert_int_eq(store_snap_commit(w), 0);
	store_snap_close(w);
	ck_assert_int_eq(store_snap_create(st, "a1", 0, &w), 0);
	ck_assert_int_eq(store_snap_commit(w), 0);
	store_snap_close(w);
	ck_assert_int_eq(store_snap_create(st, "b", 0, &w), 0);
	ck_assert_int_eq(store_snap_commit(w), 0);
	store_snap_close(w);
	/* in progress: not listed; closed uncommitted: gone */
	ck_assert_int_eq(store_snap_create(st, "a2", 0, &w), 0);
	ck_assert_int_eq(store_snap_put(w, "x", "abc", 3), 0);
	/* a directory without a manifest is not a snapshot */
	ck_assert_int_eq(mkdir(at("junk"), 0700), 0);

	ck_assert_int_eq(store_foreach_snap(st, NULL, list_cb, &l), 0);
	ck_assert_str_eq(l.names, "a1 b c ");
	ck_assert_uint_eq(l.files, 4);
	memset(&l, 0, sizeof(l));
	ck_assert_int_eq(store_foreach_snap(st, "a", list_cb, &l), 0);
	ck_assert_str_eq(l.names, "a1 ");
	store_snap_close(w);
	DIR *d = opendir(root);
	struct dirent *de;
	while ((de = readdir(d)))
		ck_assert_msg(strncmp(de->d_name, ".a2", 3), "temp dir %s left", de->d_name);
	closedir(d);

	ck_assert_int_eq(store_snap_delete(st, "b"), 0);
	ck_assert_int_eq(store_snap_delete(st, "b"), -ENOENT);
	ck_assert_int_eq(store_snap_delete(st, "../c"), -EINVAL);
	memset(&l, 0, sizeof(l));
	ck_assert_int_eq(store_foreach_snap(st, NULL, list_cb, &l), 0);
	ck_assert_str_eq(l.names, "a1 c ");
	ck_assert_int_eq(access(at("b"), F_OK), -1);
}
END_TEST

/* ---- damaged snapshot directories --------------------------------------- */

/* Each damage is applied to a fresh copy; opening names the file and the
 * reason; the damaged directory and the good one are left as they were. */
static void expect_bad(const char *shell, unsigned flags, const char *detail)
{
	struct store_snap *r;
	char cmd[2048], before[64], after[64];
	FILE *p;

	snprintf(cmd, sizeof(cmd), "set -e; cd '%s'; rm -rf bad; cp -a good bad; cd bad; %s", root, shell);
	ck_assert_msg(system(cmd) == 0, "%s", cmd);
	snprintf(cmd, sizeof(cmd), "cd '%s' && find bad -printf '%%p %%s %%l\\n' | sort | md5sum", root);
	p = popen(cmd, "r");
	ck_assert_ptr_nonnull(fgets(before, sizeof(before), p));
	pclose(p);

	err_clear();
	int q = store_snap_open(st, "bad", flags, &r);
	ck_assert_msg(q == -EBADMSG, "'%s': got %d (%s)", shell, q, err_msg());
	ck_assert_msg(strstr(err_msg(), detail), "'%s': detail '%s', wanted '%s'", shell, err_msg(), detail);

	p = popen(cmd, "r");
	ck_assert_ptr_nonnull(fgets(after, sizeof(after), p));
	pclose(p);
	ck_assert_str_eq(before, after);
	check_snapshot("good", STORE_OPEN_VERIFY);
}

#define MEM "memory/0000000000400000-0000000000460000"

START_TEST(damaged)
{
	fresh("good");
	expect_bad("truncate -s 4096 " MEM, 0, "'" MEM "': size 4096, manifest says 393216");
	expect_bad("truncate -s 400000 " MEM, 0, "'" MEM "': size 400000, manifest says 393216");
	expect_bad("printf '\\377' | dd of=regs/1234 bs=1 seek=5 conv=notrunc status=none", STORE_OPEN_VERIFY,
		   "'regs/1234': content does not match");
	expect_bad("rm regs/1234", 0, "'regs/1234': missing");
	expect_bad("rm -r regs", 0, "'regs/1234': missing");
	expect_bad("echo x > extra", 0, "'extra': not in the manifest");
	expect_bad("echo x > memory/extra", 0, "'memory/extra': not in the manifest");
	expect_bad("mkdir empty", 0, "'empty/': a directory the manifest does not list");
	expect_bad("sed -i 's/ 77 regs/ 78 regs/' manifest", 0, "'regs/1234': size 77, manifest says 78");
	expect_bad("sed -i 's/^ckptfs-snapshot 2/ckptfs-snapshot 7/' manifest", 0,
		   "manifest line 1: format version 7 not supported");
	expect_bad("sed -i 's/regs\\/1234/..\\/..\\/etc\\/passwd/' manifest", 0, "invalid path '../../etc/passwd'");
	expect_bad("rm manifest", 0, "no manifest");
	expect_bad("truncate -s -1 manifest", 0, "no final newline");
	/* symlinks: to a file outside, as a directory, as the manifest */
	expect_bad("echo secret > ../outside; rm regs/1234; ln -s ../../outside regs/1234", 0,
		   "'regs/1234': a symlink, not a regular file");
	expect_bad("mkdir ../elsewhere; mv regs ../elsewhere/; ln -s ../elsewhere/regs regs", 0,
		   "'regs/1234': a directory on its path is a symlink");
	expect_bad("ln -s /etc/passwd other", 0, "'other': a symlink, not a regular file");
	expect_bad("mkfifo fifo", 0, "'fifo': a FIFO");
	expect_bad("mv manifest m2; ln -s m2 manifest", 0, "manifest is not a regular file");
}
END_TEST

START_TEST(snapshot_is_symlink)
{
	struct store_snap *r;
	fresh("good");
	ck_assert_int_eq(symlink("good", at("link")), 0);
	ck_assert_int_eq(store_snap_open(st, "link", 0, &r), -EBADMSG);
	ck_assert_ptr_nonnull(strstr(err_msg(), "'link' is not a snapshot directory"));
}
END_TEST

/* ---- crashes and failures ------------------------------------------------- */

static void crash_writer(int fault)
{
	pid_t pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		char v[16];
		snprintf(v, sizeof(v), "%d", fault);
		setenv("CKPTFS_FAULT", v, 1);
		fault_reload();
		make_contents(2);
		write_snapshot("new", 0); /* _exit(99) inside the commit */
		_exit(0);
	}
	int status;
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert(WIFEXITED(status));
	ck_assert_int_eq(WEXITSTATUS(status), 99);
}

static void after_crash(void)
{
	struct store_snap *r;
	struct listed l = {};
	int hidden = 0;

	ck_assert_int_eq(store_snap_open(st, "new", 0, &r), -ENOENT);
	ck_assert_int_eq(store_foreach_snap(st, NULL, list_cb, &l), 0);
	ck_assert_str_eq(l.names, "old ");
	check_snapshot("old", STORE_OPEN_VERIFY);
	DIR *d = opendir(root);
	struct dirent *de;
	while ((de = readdir(d)))
		hidden += !strncmp(de->d_name, ".new.tmp-", 9);
	closedir(d);
	ck_assert_int_eq(hidden, 1);

	/* the name is free; the crashed writer's directory is swept */
	make_contents(3);
	write_snapshot("new", 0);
	check_snapshot("new", STORE_OPEN_VERIFY);
	d = opendir(root);
	while ((de = readdir(d)))
		ck_assert_msg(de->d_name[0] != '.' || !strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."),
			      "%s left", de->d_name);
	closedir(d);
}

START_TEST(crash_before_manifest)
{
	fresh("old");
	crash_writer(FAULT_STORE_CRASH_BEFORE_MANIFEST);
	make_contents(1);
	after_crash();
}
END_TEST

START_TEST(crash_before_rename)
{
	fresh("old");
	crash_writer(FAULT_STORE_CRASH_BEFORE_RENAME);
	make_contents(1);
	after_crash();
}
END_TEST

START_TEST(write_fails)
{
	struct store_snap *w, *r;
	struct store_file *f;
	uint8_t buf[8192];

	fresh("old");
	memset(buf, 1, sizeof(buf));
	setenv("CKPTFS_FAULT", "110:2", 1);
	fault_reload();
	ck_assert_int_eq(store_snap_create(st, "new", 0, &w), 0);
	ck_assert_int_eq(store_file_create(w, "f", &f), 0);
	ck_assert_int_eq(store_file_pwrite(f, buf, 4096, 0), 0);
	ck_assert_int_eq(store_file_pwrite(f, buf, 4096, 8192), -EIO);
	ck_assert_ptr_nonnull(strstr(err_msg(), "'f': write at 8192 failed"));
	ck_assert_int_eq(store_file_pwrite(f, buf, 4096, 4096), -EIO);
	ck_assert_int_eq(store_file_close(f), -EIO);
	ck_assert_int_eq(store_snap_put(w, "g", buf, 10), 0);
	ck_assert_int_eq(store_snap_commit(w), -EIO);
	ck_assert_ptr_nonnull(strstr(err_msg(), "'f': write at 8192 failed"));
	store_snap_close(w);
	unsetenv("CKPTFS_FAULT");
	fault_reload();
	ck_assert_int_eq(store_snap_open(st, "new", 0, &r), -ENOENT);
	make_contents(1);
	check_snapshot("old", STORE_OPEN_VERIFY);

	/* the manifest's write failing fails the commit too */
	setenv("CKPTFS_FAULT", "110", 1);
	fault_reload();
	ck_assert_int_eq(store_snap_create(st, "new", 0, &w), 0);
	ck_assert_int_eq(store_snap_commit(w), -EIO);
	store_snap_close(w);
	ck_assert_int_eq(store_snap_open(st, "new", 0, &r), -ENOENT);
}
END_TEST

/* ---- imports -------------------------------------------------------------- */

/* Copies snapshot `from` into a new import `to`, file by file as cp -r
 * would, with `mangle` applied to the file list. */
static int import_copy(const char *from, const char *to, const char *skip, const char *extra,
		       const char *flip)
{
	struct store_snap *r, *w;
	char list[1024] = "", *save, *p;
	int q;

	ck_assert_int_eq(store_snap_open(st, from, 0, &r), 0);
	ck_assert_int_eq(store_snap_foreach_file(r, collect, list), 0);
	ck_assert_int_eq(store_snap_create(st, to, STORE_CREATE_IMPORT, &w), 0);
	for (p = strtok_r(list, " ", &save); p; p = strtok_r(NULL, " ", &save)) {
		struct store_file *in, *out;
		struct store_stat s;
		uint8_t *buf;
		if (skip && !strcmp(p, skip))
			continue;
		ck_assert_int_eq(store_snap_stat(r, p, &s), 0);
		buf = malloc(s.size + 1);
		ck_assert_int_eq(store_file_open(r, p, &in), 0);
		ck_assert_int_eq(store_file_pread(in, buf, s.size, 0), (ssize_t)s.size);
		store_file_close(in);
		if (flip && !strcmp(p, flip))
			buf[s.size / 2] ^= 0x10;
		ck_assert_int_eq(store_file_create(w, p, &out), 0);
		/* in 5000-byte pieces, like a copy tool with a small buffer */
		for (size_t off = 0; off < s.size; off += 5000)
			ck_assert_int_eq(store_file_pwrite(out, buf + off, MIN((size_t)5000, s.size - off), off), 0);
		ck_assert_int_eq(store_file_set_size(out, s.size), 0);
		ck_assert_int_eq(store_file_close(out), 0);
		free(buf);
	}
	if (extra)
		ck_assert_int_eq(store_snap_put(w, extra, "x", 1), 0);
	store_snap_close(r);
	q = store_snap_commit(w);
	store_snap_close(w);
	return q;
}

START_TEST(import)
{
	struct store_snap *r;

	fresh("src");
	ck_assert_int_eq(import_copy("src", "copy", NULL, NULL, NULL), 0);
	check_snapshot("copy", STORE_OPEN_VERIFY);

	ck_assert_int_eq(import_copy("src", "i1", NULL, NULL, MEM), -EBADMSG);
	ck_assert_ptr_nonnull(strstr(err_msg(), "'" MEM "': content hash"));
	ck_assert_int_eq(import_copy("src", "i2", "regs/1234", NULL, NULL), -EBADMSG);
	ck_assert_ptr_nonnull(strstr(err_msg(), "'regs/1234': listed in the manifest, not received"));
	ck_assert_int_eq(import_copy("src", "i3", NULL, "regs/9", NULL), -EBADMSG);
	ck_assert_ptr_nonnull(strstr(err_msg(), "'regs/9': not in the manifest"));
	ck_assert_int_eq(import_copy("src", "i4", "manifest", NULL, NULL), -EBADMSG);
	ck_assert_ptr_nonnull(strstr(err_msg(), "'manifest': missing"));
	ck_assert_int_eq(import_copy("src", "i5", NULL, NULL, "manifest"), -EBADMSG);
	for (int i = 1; i <= 5; i++) {
		char n[8];
		snprintf(n, sizeof(n), "i%d", i);
		ck_assert_int_eq(store_snap_open(st, n, 0, &r), -ENOENT);
	}
	DIR *d = opendir(root);
	struct dirent *de;
	while ((de = readdir(d)))
		ck_assert_msg(de->d_name[0] != '.' || !strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."),
			      "%s left", de->d_name);
	closedir(d);
}
END_TEST

/* ---- threads -------------------------------------------------------------- */

struct job {
	struct store_snap *w;
	int id;
};

static void *writer_thread(void *p)
{
	struct job *j = p;
	uint8_t *buf = malloc(100000);
	for (int k = 0; k < 8; k++) {
		char path[64];
		struct store_file *f;
		snprintf(path, sizeof(path), "t%d/f%d", j->id % 2, j->id * 100 + k);
		memset(buf, j->id * 16 + k + 1, 100000);
		if (store_file_create(j->w, path, &f) < 0 || store_file_pwrite(f, buf, 100000, 4096 * k) < 0 ||
		    store_file_close(f) < 0)
			return (void *)1;
	}
	free(buf);
	return NULL;
}

START_TEST(threads)
{
	struct store_snap *w[2], *r;
	struct job jobs[8];
	pthread_t t[8];
	uint8_t *buf = malloc(100000 + 4096 * 8), h[32];
	struct store_stat s;

	ck_assert_int_eq(store_snap_create(st, "t0", 0, &w[0]), 0);
	ck_assert_int_eq(store_snap_create(st, "t1", 0, &w[1]), 0);
	for (int i = 0; i < 8; i++) {
		jobs[i] = (struct job){ w[i % 2], i };
		ck_assert_int_eq(pthread_create(&t[i], NULL, writer_thread, &jobs[i]), 0);
	}
	for (int i = 0; i < 8; i++) {
		void *ret;
		pthread_join(t[i], &ret);
		ck_assert_ptr_null(ret);
	}
	ck_assert_int_eq(store_snap_commit(w[0]), 0);
	ck_assert_int_eq(store_snap_commit(w[1]), 0);
	store_snap_close(w[0]);
	store_snap_close(w[1]);
	for (int i = 0; i < 8; i++) {
		ck_assert_int_eq(store_snap_open(st, i % 2 ? "t1" : "t0", STORE_OPEN_VERIFY, &r), 0);
		for (int k = 0; k < 8; k++) {
			char path[64];
			snprintf(path, sizeof(path), "t%d/f%d", i % 2, i * 100 + k);
			memset(buf, 0, 4096 * k);
			memset(buf + 4096 * k, i * 16 + k + 1, 100000);
			store_hash_buf(buf, 4096 * k + 100000, h);
			ck_assert_int_eq(store_snap_stat(r, path, &s), 0);
			ck_assert(!memcmp(s.hash, h, 32));
		}
		store_snap_close(r);
	}
	free(buf);
}
END_TEST

START_TEST(many_files)
{
	struct store_snap *w;
	char path[32];

	/* more than the writer keeps descriptors for */
	ck_assert_int_eq(store_snap_create(st, "many", 0, &w), 0);
	for (int i = 0; i < 300; i++) {
		snprintf(path, sizeof(path), "regs/%d", i);
		ck_assert_int_eq(store_snap_put(w, path, path, strlen(path)), 0);
	}
	ck_assert_int_eq(store_snap_commit(w), 0);
	store_snap_close(w);
	struct store_snap *r;
	char *t;
	ck_assert_int_eq(store_snap_open(st, "many", STORE_OPEN_VERIFY, &r), 0);
	ck_assert_int_eq(store_snap_read_all(r, "regs/299", &t, NULL), 0);
	ck_assert_str_eq(t, "regs/299");
	free(t);
	store_snap_close(r);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("store-dir");
	struct {
		const char *name;
		const TTest *test;
	} cases[] = {
		{ "round_trip", round_trip },
		{ "hash_recipe", manifest_hash_matches_recipe },
		{ "rewrites", rewrites_and_holes },
		{ "state", state_and_names },
		{ "race", same_name_race },
		{ "default_path", default_path },
		{ "list_delete", list_and_delete },
		{ "damaged", damaged },
		{ "symlinked_snapshot", snapshot_is_symlink },
		{ "crash_before_manifest", crash_before_manifest },
		{ "crash_before_rename", crash_before_rename },
		{ "write_fails", write_fails },
		{ "import", import },
		{ "threads", threads },
		{ "many_files", many_files },
	};
	TCase *tc = tcase_create("random_writes");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 120);
	tcase_add_loop_test(tc, random_writes, 0, 8);
	suite_add_tcase(s, tc);
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		TCase *tc = tcase_create(cases[i].name);
		tcase_add_checked_fixture(tc, setup, teardown);
		tcase_set_timeout(tc, 120);
		tcase_add_test(tc, cases[i].test);
		suite_add_tcase(s, tc);
	}

	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
