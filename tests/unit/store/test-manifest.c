/*
 * store/manifest.c: formatting and strict parsing; every malformed line
 * is refused with a detail naming it, and the parser reads nothing past
 * the length it is given.
 */
#include <check.h>
#include <sys/mman.h>

#include "store/store-int.h"

#define H "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
#define HEAD "ckptfs-snapshot 1\nhash sha256-tree\ncreated 1700000000\n"

static int parse_str(const char *text, struct manifest *m)
{
	return manifest_parse(text, strlen(text), m);
}

START_TEST(format_then_parse)
{
	struct manifest m = {}, p = {};
	char *text;
	size_t len;

	m.created = 1700000000;
	m.nfiles = 3;
	m.files = calloc(3, sizeof(*m.files));
	m.files[0].path = strdup("regs/12");
	m.files[0].size = 300;
	m.files[1].path = strdup("memory/0000-1000");
	m.files[1].size = 1ull << 40;
	m.files[2].path = strdup("maps");
	for (int i = 0; i < 3; i++)
		memset(m.files[i].hash, 0x11 * (i + 1), 32);
	ck_assert_int_eq(manifest_format(&m, &text, &len), 0);
	ck_assert_uint_eq(strlen(text), len);
	ck_assert_str_eq(text,
			 "ckptfs-snapshot 2\nhash sha256-tree\ncreated 1700000000\nfiles 3\n"
			 "3333333333333333333333333333333333333333333333333333333333333333 0 maps\n"
			 "2222222222222222222222222222222222222222222222222222222222222222 1099511627776 memory/0000-1000\n"
			 "1111111111111111111111111111111111111111111111111111111111111111 300 regs/12\n");
	ck_assert_int_eq(manifest_parse(text, len, &p), 0);
	ck_assert_uint_eq(p.version, 2);
	ck_assert_int_eq(p.created, 1700000000);
	ck_assert_uint_eq(p.nfiles, 3);
	for (int i = 0; i < 3; i++) {
		ck_assert_str_eq(p.files[i].path, m.files[i].path);
		ck_assert_uint_eq(p.files[i].size, m.files[i].size);
		ck_assert(!memcmp(p.files[i].hash, m.files[i].hash, 32));
	}
	ck_assert_ptr_eq(manifest_find(&p, "maps"), &p.files[0]);
	ck_assert_ptr_eq(manifest_find(&p, "regs/12"), &p.files[2]);
	ck_assert_ptr_null(manifest_find(&p, "regs"));
	ck_assert_ptr_null(manifest_find(&p, "zzz"));
	free(text);
	manifest_clear(&m);
	manifest_clear(&p);
	manifest_clear(NULL);
}
END_TEST

START_TEST(format_refuses_bad_entries)
{
	struct manifest m = {};
	char *text;

	m.nfiles = 2;
	m.files = calloc(2, sizeof(*m.files));
	m.files[0].path = strdup("a");
	m.files[1].path = strdup("a");
	ck_assert_int_eq(manifest_format(&m, &text, NULL), -EINVAL);
	free(m.files[1].path);
	m.files[1].path = strdup("a/b");
	ck_assert_int_eq(manifest_format(&m, &text, NULL), -EINVAL);
	free(m.files[1].path);
	m.files[1].path = strdup("../b");
	ck_assert_int_eq(manifest_format(&m, &text, NULL), -EINVAL);
	free(m.files[1].path);
	m.files[1].path = strdup("manifest");
	ck_assert_int_eq(manifest_format(&m, &text, NULL), -EINVAL);
	manifest_clear(&m);
}
END_TEST

START_TEST(empty_snapshot)
{
	struct manifest m = {};
	ck_assert_int_eq(parse_str("ckptfs-snapshot 1\nhash sha256-tree\nfiles 0\n", &m), 0);
	ck_assert_uint_eq(m.nfiles, 0);
	ck_assert_int_eq(m.created, 0);
	manifest_clear(&m);
}
END_TEST

START_TEST(unknown_keys_skipped)
{
	struct manifest m = {};
	ck_assert_int_eq(parse_str(HEAD "arch x86_64\nfiles 1\n" H " 5 process\n", &m), 0);
	ck_assert_uint_eq(m.nfiles, 1);
	ck_assert_uint_eq(m.files[0].size, 5);
	manifest_clear(&m);
}
END_TEST

static const struct {
	const char *text;
	const char *detail; /* a part of err_msg() */
} bad[] = {
	{ "", "empty" },
	{ "ckptfs-snapshot 7\nhash sha256-tree\nfiles 0\n", "line 1: format version 7 not supported" },
	{ "ckptfs-snapshot 01\nhash sha256-tree\nfiles 0\n", "line 1: bad format version" },
	{ "ckptfs-snapshot\n", "line 1:" },
	{ "criu 1\n", "line 1:" },
	{ "ckptfs-snapshot 1\nhash sha256-tree\nfiles 0", "line 3: no final newline" },
	{ "ckptfs-snapshot 1\nhash md5\nfiles 0\n", "line 2: hash 'md5' not supported" },
	{ "ckptfs-snapshot 1\nfiles 0\n", "lacks 'hash'" },
	{ "ckptfs-snapshot 1\nhash sha256-tree\n", "lacks 'files'" },
	{ HEAD "files 1\n" H " 5 process\n" H " 6 process\n", "line 6: 'process' listed twice" },
	{ HEAD "files 2\n" H " 5 regs\n" H " 6 maps\n", "line 6: 'maps' out of order" },
	{ HEAD "files 2\n" H " 5 process\n", "1 files listed, header says 2" },
	{ HEAD "files 1\n" H " 5 process\n" H " 5 regs\n", "line 6: more files" },
	{ HEAD "files 1\n" H " 5 ../etc/passwd\n", "line 5: invalid path '../etc/passwd'" },
	{ HEAD "files 1\n" H " 5 /etc/passwd\n", "line 5: invalid path" },
	{ HEAD "files 1\n" H " 5 a//b\n", "line 5: invalid path" },
	{ HEAD "files 1\n" H " 5 .\n", "line 5: invalid path" },
	{ HEAD "files 1\n" H " 5 manifest\n", "line 5: 'manifest' is reserved" },
	{ HEAD "files 1\n" H " 5 a b\n", "line 5: invalid path" },
	{ HEAD "files 1\n" H " 5 \n", "line 5: invalid path" },
	{ HEAD "files 1\n" H " 1125899906842625 big\n", "line 5: bad size" },
	{ HEAD "files 1\n" H " 99999999999999999999999 big\n", "line 5: bad size" },
	{ HEAD "files 1\n" H " -1 neg\n", "line 5: bad size" },
	{ HEAD "files 1\n" H " 007 zeros\n", "line 5: bad size" },
	{ HEAD "files 1\n" H " +7 plus\n", "line 5: bad size" },
	{ HEAD "files 1\n" H " 7\n", "line 5: expected" },
	{ HEAD "files 1\n" H "  7 x\n", "line 5: bad size" },
	{ HEAD "files 1\n" "0123456789ABCDEF0123456789abcdef0123456789abcdef0123456789abcdef 7 x\n",
	  "line 5: hash must be lowercase hex" },
	{ HEAD "files 1\n" "0123456789abcdef 7 x\n", "line 5:" },
	{ HEAD "files 1\n" H "x 7 x\n", "line 5:" },
	{ HEAD "files 1\n" H " 7 x\r\n", "line 5: carriage return" },
	{ HEAD "files 1\n" H " 7 x\n\n", "line 6: empty line" },
	{ HEAD "files 1\n" H " 7 x\njunk\n", "line 6: 'junk' is not" },
	{ HEAD "files 2\n" H " 7 a\n" H " 7 a/b\n", "'a' is a file and the directory of 'a/b'" },
	{ HEAD "files 2\n" H " 7 a\n" H " 7 a-z\n" H " 7 a/b\n", "line 7: more files" },
	{ HEAD "files 3\n" H " 7 a\n" H " 7 a-z\n" H " 7 a/b\n", "'a' is a file and the directory of 'a/b'" },
	{ HEAD "created 5\nfiles 0\n", "line 4: 'created' given twice" },
	{ HEAD "created -5\nfiles 0\n", "line 4:" },
	{ HEAD "files 0\nfiles 0\n", "line 5: 'files' given twice" },
	{ HEAD "Bad key\nfiles 0\n", "line 4: bad key" },
	{ HEAD "novalue\nfiles 0\n", "line 4:" },
	{ HEAD "files 0\nkey \x01\n", "line 5: control" },
	{ HEAD "files 0\n" H " 7 x\n", "line 5: more files" },
	{ HEAD "files 1\n" H " 7 x\nhash sha256-tree\n", "line 6:" },
};

START_TEST(rejects_bad)
{
	struct manifest m = {};
	err_clear();
	int r = parse_str(bad[_i].text, &m);
	ck_assert_msg(r == -EBADMSG, "case %d accepted: %s", _i, bad[_i].text);
	ck_assert_msg(strstr(err_msg(), bad[_i].detail), "case %d: detail '%s', wanted '%s'", _i, err_msg(),
		      bad[_i].detail);
	ck_assert_uint_eq(m.nfiles, 0);
	ck_assert_ptr_null(m.files);
}
END_TEST

START_TEST(nul_in_text)
{
	static const char t[] = HEAD "files 1\n" H " 7 a\0b\n";
	struct manifest m = {};
	ck_assert_int_eq(manifest_parse(t, sizeof(t) - 1, &m), -EBADMSG);
	ck_assert_ptr_nonnull(strstr(err_msg(), "line 5: NUL"));
}
END_TEST

/* The text sits at the very end of a mapping followed by a PROT_NONE
 * page: a read past `len` faults. Every prefix of a good manifest is
 * parsed this way. */
START_TEST(no_read_past_len)
{
	static const char good[] = HEAD "files 2\n" H " 7 a\n" H " 123 b/c\n";
	size_t len = sizeof(good) - 1, pg = 4096;
	char *map = mmap(NULL, 2 * pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	ck_assert_ptr_ne(map, MAP_FAILED);
	ck_assert_int_eq(mprotect(map + pg, pg, PROT_NONE), 0);
	for (size_t n = 0; n <= len; n++) {
		struct manifest m = {};
		char *p = map + pg - n;
		memcpy(p, good, n);
		int r = manifest_parse(p, n, &m);
		if (n == len) {
			ck_assert_int_eq(r, 0);
			ck_assert_uint_eq(m.nfiles, 2);
		} else {
			ck_assert_int_eq(r, -EBADMSG);
		}
		manifest_clear(&m);
	}
	munmap(map, 2 * pg);
}
END_TEST

/* Random byte flips of a good manifest: never a crash; whatever parses
 * has valid, sorted, unique paths. */
START_TEST(mutations)
{
	static const char good[] = HEAD "files 3\n" H " 7 a\n" H " 123 b/c\n" H " 0 memory/0-1000\n";
	char buf[sizeof(good)];
	unsigned seed = 12345;

	for (int round = 0; round < 20000; round++) {
		struct manifest m = {};
		memcpy(buf, good, sizeof(good));
		for (int k = 0; k < 1 + round % 3; k++) {
			seed = seed * 1103515245 + 12345;
			size_t at = (seed >> 8) % (sizeof(good) - 1);
			seed = seed * 1103515245 + 12345;
			buf[at] = (seed >> 16) & 1 ? (char)(seed >> 8) : "\n /.0a"[(seed >> 9) % 6];
		}
		if (manifest_parse(buf, sizeof(good) - 1, &m) == 0) {
			for (size_t i = 0; i < m.nfiles; i++) {
				ck_assert_int_eq(path_check(m.files[i].path), 0);
				if (i)
					ck_assert_int_lt(strcmp(m.files[i - 1].path, m.files[i].path), 0);
			}
		}
		manifest_clear(&m);
	}
}
END_TEST

int main(void)
{
	Suite *s = suite_create("store-manifest");
	TCase *tc = tcase_create("format");
	tcase_add_test(tc, format_then_parse);
	tcase_add_test(tc, format_refuses_bad_entries);
	tcase_add_test(tc, empty_snapshot);
	tcase_add_test(tc, unknown_keys_skipped);
	suite_add_tcase(s, tc);
	tc = tcase_create("bad");
	tcase_add_loop_test(tc, rejects_bad, 0, ARRAY_SIZE(bad));
	tcase_add_test(tc, nul_in_text);
	tcase_add_test(tc, no_read_past_len);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, mutations);
	suite_add_tcase(s, tc);

	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
