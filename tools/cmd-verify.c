/*
 * ckpt verify DIR: checks a snapshot directory against its manifest
 * (every listed file present with its size and hash, nothing else there)
 * without restoring anything. Read-only: it changes nothing on disk.
 */
#include <getopt.h>
#include <inttypes.h>
#include <libgen.h>
#include <limits.h>

#include "common/common.h"
#include "store/store.h"
#include "tools/tools-int.h"

struct tally {
	uint64_t files, bytes, data;
};

static int count(const char *path, const struct store_stat *st, void *ud)
{
	struct tally *t = ud;
	t->files++;
	t->bytes += st->size;
	t->data += st->allocated;
	return 0;
}

static void help(FILE *out)
{
	fprintf(out,
		"Usage: ckpt verify [--quick] DIR\n"
		"\n"
		"Checks the snapshot directory DIR against its manifest: every file it\n"
		"lists is there, a regular file with the listed size and content hash,\n"
		"and no other file is. Prints OK, or the first file that does not match\n"
		"and why. Changes nothing.\n"
		"\n"
		"  -q, --quick   check names and sizes only, not the content hashes\n"
		"  -h, --help    this text\n"
		"\n"
		"Exit status: 0 all good, 1 a mismatch or an unreadable snapshot, 2 usage.\n");
}

int cmd_verify(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "quick", no_argument, NULL, 'q' },
		{ "help", no_argument, NULL, 'h' },
		{},
	};
	char real[PATH_MAX], parent[PATH_MAX], name[PATH_MAX], sz[32], dz[32];
	struct store *s = NULL;
	struct store_snap *r = NULL;
	struct tally t = {};
	bool quick = false;
	int c, q;

	optind = 1;
	while ((c = getopt_long(argc, argv, "qh", opts, NULL)) != -1) {
		switch (c) {
		case 'q':
			quick = true;
			break;
		case 'h':
			help(stdout);
			return EXIT_OK;
		default:
			help(stderr);
			return EXIT_USAGE;
		}
	}
	if (optind != argc - 1) {
		help(stderr);
		return EXIT_USAGE;
	}
	if (!realpath(argv[optind], real)) {
		fprintf(stderr, "ckpt verify: %s: %s\n", argv[optind], strerror(errno));
		return EXIT_FAIL;
	}
	/* The directory backend opens snapshot NAME under a root: here the
	 * root is DIR's parent and NAME its last component. */
	snprintf(parent, sizeof(parent), "%s", real);
	snprintf(name, sizeof(name), "%s", real);
	const char *dir = dirname(parent), *base = basename(name);

	q = store_open_dir(dir, &s);
	if (q == 0)
		q = store_snap_open(s, base, quick ? 0 : STORE_OPEN_VERIFY, &r);
	if (q == 0)
		q = store_snap_foreach_file(r, count, &t);
	if (q < 0) {
		fprintf(stderr, "ckpt verify: %s: %s\n", argv[optind], *err_msg() ? err_msg() : strerror(-q));
		store_snap_close(r);
		store_close(s);
		return EXIT_FAIL;
	}
	printf("OK %s: %" PRIu64 " files, %s, %s of data%s\n", argv[optind], t.files,
	       fmt_bytes(t.bytes, sz, sizeof(sz)), fmt_bytes(t.data, dz, sizeof(dz)),
	       quick ? " (sizes only)" : "");
	store_snap_close(r);
	store_close(s);
	return EXIT_OK;
}
