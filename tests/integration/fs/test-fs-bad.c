/*
 * Bad snapshots copied into restore/: each must end in "failed: ..."
 * naming the file (or, for a missing file, stay "receiving" and name it),
 * run nothing, change no other snapshot, and leave the daemon serving.
 *
 * The snapshots are made here by hand (a few small files and a manifest
 * made with the store's own formatter and hash), so that this runs
 * without the engine.
 */
#include <check.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store/store-int.h"
#include "tests/integration/fs/fs-harness.h"

static const char *const files[] = {
	"process", "maps", "memory/0000000000400000-0000000000402000", "regs/1",
};

static void fill(const char *path, char *buf, size_t *len)
{
	if (!strncmp(path, "memory/", 7)) {
		/* 8 KiB: a data page, then a hole. */
		*len = 8192;
		memset(buf, 0, *len);
		for (size_t i = 0; i < 4096; i++)
			buf[i] = (char)(i * 13 + 1);
	} else {
		*len = (size_t)snprintf(buf, 8192, "%s of a hand-made snapshot\npid 4242\n", path);
	}
}

/* Writes a valid snapshot directory into dir. */
static void make_snapshot(const char *dir)
{
	struct manifest m = { .version = STORE_FORMAT_VERSION, .created = 1764000000 };
	char path[PATH_MAX], buf[8192];
	_cleanup_free_ char *text = NULL;
	size_t len, tlen;
	int fd;

	m.files = calloc(ARRAY_SIZE(files), sizeof(*m.files));
	ck_assert_ptr_nonnull(m.files);
	snprintf(path, sizeof(path), "mkdir -p '%s/memory' '%s/regs'", dir, dir);
	ck_assert_int_eq(system(path), 0);
	for (size_t i = 0; i < ARRAY_SIZE(files); i++) {
		fill(files[i], buf, &len);
		snprintf(path, sizeof(path), "%s/%s", dir, files[i]);
		fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
		ck_assert_int_ge(fd, 0);
		ck_assert_int_eq(write_full(fd, buf, len), 0);
		close(fd);
		m.files[i].path = strdup(files[i]);
		m.files[i].size = len;
		store_hash_buf(buf, len, m.files[i].hash);
	}
	m.nfiles = ARRAY_SIZE(files);
	ck_assert_int_eq(manifest_format(&m, &text, &tlen), 0);
	snprintf(path, sizeof(path), "%s/manifest", dir);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write_full(fd, text, tlen), 0);
	close(fd);
	manifest_clear(&m);
}

static void setup(void)
{
	harness_mount();
	make_snapshot(H.work);
	/* A good import first: whatever happens to the bad ones, it must
	 * stay as it is. */
	ck_assert_int_eq(sh("cp -r \"$WORK\" \"$MNT/restore/good\""), 0);
	free(restore_wait("good", 10000));
}

static void teardown(void)
{
	harness_teardown();
}

/* Copies WORK (after `mutate` ran in it as shell) into restore/bad and
 * returns the final status text. */
static char *import_bad(const char *mutate)
{
	char *line;

	ck_assert_int_eq(sh("cd \"$WORK\" && %s", mutate), 0);
	sh("cp -r \"$WORK\" \"$MNT/restore/bad\" 2>/dev/null");
	line = restore_wait("bad", 10000);
	return line;
}

static void check_failed(const char *line, const char *names)
{
	ck_assert_msg(!strncmp(line, "failed: ", 8), "status '%s', want failed", line);
	ck_assert_msg(strstr(line, names), "status '%s' does not name '%s'", line, names);
	/* Nothing of it runs, the daemon serves, the good import is there. */
	ck_assert_int_eq(sh("grep -q ckptfs \"$MNT/README\""), 0);
	ck_assert_int_eq(sh("ls \"$MNT/restore\" | grep -qx good"), 0);
	ck_assert_int_eq(sh("test -d \"$MNT/restore/good\""), 0);
}

START_TEST(test_truncated)
{
	char *s = import_bad("truncate -s 100 memory/0000000000400000-0000000000402000");
	check_failed(s, "memory/0000000000400000-0000000000402000");
	free(s);
}
END_TEST

START_TEST(test_flipped)
{
	/* Same size, one byte changed: only the hash can tell. */
	char *s = import_bad("printf 'X' | dd of=maps bs=1 seek=3 conv=notrunc status=none");
	check_failed(s, "maps");
	free(s);
}
END_TEST

START_TEST(test_missing)
{
	char *s = import_bad("rm regs/1");
	ck_assert_str_eq(s, "receiving");
	free(s);
	/* It says what it waits for. */
	ck_assert_int_eq(sh("grep -qx 'missing: regs/1' \"$MNT/restore/bad/status\""), 0);
	ck_assert_int_eq(sh("grep -q ckptfs \"$MNT/README\""), 0);
	/* And it can be given up. */
	ck_assert_int_eq(sh("rm -r \"$MNT/restore/bad\""), 0);
	ck_assert_int_ne(sh("test -e \"$MNT/restore/bad\""), 0);
}
END_TEST

START_TEST(test_extra)
{
	char *s = import_bad("echo surprise > extra");
	check_failed(s, "extra");
	free(s);
}
END_TEST

START_TEST(test_lying_size)
{
	/* The manifest says 4096 where the file has 8192. */
	char *s = import_bad("sed -i 's/ 8192 memory/ 4096 memory/' manifest");
	check_failed(s, "memory/0000000000400000-0000000000402000");
	free(s);
}
END_TEST

START_TEST(test_dotdot)
{
	char *s = import_bad("sed -i 's| regs/1$| ../../etc/passwd|' manifest");
	check_failed(s, "manifest");
	free(s);
}
END_TEST

START_TEST(test_absurd_size)
{
	char *s = import_bad("sed -i 's/ 8192 memory/ 99999999999999999999 memory/' manifest");
	check_failed(s, "manifest");
	free(s);
}
END_TEST

START_TEST(test_version)
{
	char *s = import_bad("sed -i '1s/.*/ckptfs-snapshot 99/' manifest");
	check_failed(s, "manifest");
	free(s);
}
END_TEST

START_TEST(test_garbage_manifest)
{
	char *s = import_bad("head -c 3000 /dev/urandom > manifest");
	check_failed(s, "manifest");
	free(s);
}
END_TEST

/* The daemon with every store write failing (pack writes, snapshot
 * directory writes): fault injection, see docs/TESTING.md. */
static void setup_store_fails(void)
{
	setenv("CKPTFS_FAULT", "100,110", 1);
	harness_mount();
	unsetenv("CKPTFS_FAULT");
}

/* A write into restore/ is answered before it is stored (restore.c): a
 * store failure after the answer must still fail the copy, at a later
 * write or at close(), and the restore, naming the file and the reason. */
START_TEST(test_store_fails)
{
	char *s;

	ck_assert_int_eq(sh("mkdir \"$WORK/s\" && head -c 8M /dev/urandom > \"$WORK/s/big\""), 0);
	ck_assert_int_ne(sh("cp -r \"$WORK/s\" \"$MNT/restore/bad\" 2>/dev/null"), 0);
	s = restore_wait("bad", 10000);
	ck_assert_msg(!strncmp(s, "failed: big: ", 13), "status '%s', want failed naming big", s);
	ck_assert_msg(strstr(s, "injected"), "status '%s' does not give the reason", s);
	free(s);
	ck_assert_int_eq(sh("grep -q ckptfs \"$MNT/README\""), 0);
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("fs-bad-input");
	struct {
		const char *name;
		const TTest *t;
	} cases[] = {
		{ "truncated", test_truncated },   { "flipped", test_flipped },
		{ "missing", test_missing },       { "extra", test_extra },
		{ "lying_size", test_lying_size }, { "dotdot", test_dotdot },
		{ "absurd_size", test_absurd_size }, { "version", test_version },
		{ "garbage_manifest", test_garbage_manifest },
	};

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		TCase *tc = tcase_create(cases[i].name);
		tcase_add_checked_fixture(tc, setup, teardown);
		tcase_set_timeout(tc, 60);
		tcase_add_test(tc, cases[i].t);
		suite_add_tcase(s, tc);
	}
	TCase *tc = tcase_create("store_fails");
	tcase_add_checked_fixture(tc, setup_store_fails, teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_store_fails);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	harness_require();
	harness_begin();
	return harness_run(suite());
}
