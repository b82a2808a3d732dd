/*
 * What the corpus tests share (test-fuzz-corpus.c, test-fuzz-image.c):
 * every file of a fuzz corpus fed through its target, under gcc, in every
 * test run, so that a crash once found stays fixed.
 */
#ifndef CKPTFS_TEST_FUZZ_CORPUS_H
#define CKPTFS_TEST_FUZZ_CORPUS_H

#include <check.h>
#include <dirent.h>

#include "common/common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The corpus: $FUZZ_CORPUS (set by meson), else `fallback`. */
static inline const char *corpus_dir(const char *fallback)
{
	const char *d = getenv("FUZZ_CORPUS");
	return d && *d ? d : fallback;
}

/* File `name` of the corpus dir, whole (free()); *len its length. */
static inline char *corpus_file(const char *dir, const char *name, size_t *len)
{
	char path[4096];
	char *text = NULL;
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	ck_assert_msg(read_file_full(path, &text, len) >= 0, "cannot read %s", path);
	return text;
}

/* Feeds every file of dir through the fuzz target; returns how many. */
static inline unsigned corpus_run(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	unsigned n = 0;

	ck_assert_msg(d, "no corpus at %s", dir);
	while ((de = readdir(d))) {
		_cleanup_free_ char *text = NULL;
		size_t len;

		if (de->d_name[0] == '.')
			continue;
		text = corpus_file(dir, de->d_name, &len);
		LLVMFuzzerTestOneInput((const uint8_t *)text, len);
		n++;
	}
	closedir(d);
	return n;
}

#endif
