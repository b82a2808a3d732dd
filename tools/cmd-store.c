/*
 * ckpt store: upkeep of a chunk store without a mount: list snapshots,
 * delete them, collect garbage, check everything, show statistics.
 * ls, stats and fsck open the store read-only, so they also work beside
 * a running daemon; rm and gc take the store's lock.
 */
#include <inttypes.h>
#include <sys/stat.h>
#include <time.h>

#include "common/common.h"
#include "store/store.h"
#include "tools/tools-int.h"

static void usage(FILE *out)
{
	fprintf(out,
		"Usage: ckpt store [--store DIR] COMMAND [ARGS...]\n"
		"\n"
		"Looks after a chunk store: the directory where ckptfs keeps snapshots.\n"
		"\n"
		"Commands:\n"
		"  ls [PREFIX]     list snapshots (name, created, files, size, data, new bytes)\n"
		"  rm NAME...      delete snapshots; their space comes back with gc\n"
		"  gc              free chunks no snapshot uses; rewrite mostly dead packs\n"
		"  fsck            re-read every chunk and recipe; name each problem (exit 1 if any)\n"
		"  stats           chunks, bytes and packs of the store\n"
		"\n"
		"Options:\n"
		"  --store DIR     the store (default: /var/lib/ckptfs for root, else\n"
		"                  $XDG_DATA_HOME/ckptfs or ~/.local/share/ckptfs)\n"
		"  -h, --help      this text; `ckpt store COMMAND --help` for one command\n");
}

static const char *const sub_help[][2] = {
	{ "ls", "Usage: ckpt store [--store DIR] ls [PREFIX]\n\n"
		"Lists committed snapshots whose name starts with PREFIX, oldest name first:\n"
		"name, creation time (UTC), files (the manifest included), logical size, data\n"
		"bytes (without holes) and the bytes the snapshot added to the store.\n" },
	{ "rm", "Usage: ckpt store [--store DIR] rm NAME...\n\n"
		"Deletes each snapshot atomically. Chunks other snapshots share stay; the\n"
		"space of the others comes back with `ckpt store gc`.\n" },
	{ "gc", "Usage: ckpt store [--store DIR] gc\n\n"
		"Frees chunks no snapshot references, deletes packs with nothing live in\n"
		"them and rewrites packs that are mostly dead. Safe to interrupt at any\n"
		"point. Waits for writers of this process; other processes are kept out\n"
		"by the store's lock.\n" },
	{ "fsck", "Usage: ckpt store [--store DIR] fsck\n\n"
		  "Re-reads every chunk (checksum, decompression, SHA-256 against its id),\n"
		  "every recipe (every chunk present, file hashes, reference counts) and\n"
		  "every manifest, and prints one line per problem naming the object.\n"
		  "Exits 0 when clean, 1 when anything is wrong.\n" },
	{ "stats", "Usage: ckpt store [--store DIR] stats\n\n"
		   "Prints the number of snapshots, live chunks, their raw and stored bytes,\n"
		   "and the bytes and number of pack files (dead bytes included).\n" },
};

static int open_store(const char *dir, bool read_only, struct store **ret)
{
	struct store_options o = { .read_only = read_only };
	int r = store_open(dir, &o, ret);
	if (r < 0)
		log_err("%s", *err_msg() ? err_msg() : strerror(-r));
	return r;
}

static int ls_cb(const struct store_snap_info *i, void *ud)
{
	char t[32], a[32], b[32], c[32];
	time_t tt = (time_t)i->created;
	struct tm tm;
	gmtime_r(&tt, &tm);
	strftime(t, sizeof(t), "%Y-%m-%d %H:%M:%S", &tm);
	printf("%-24s %-19s %6u %10s %10s %10s\n", i->name, t, i->files, fmt_bytes(i->size, a, sizeof(a)),
	       fmt_bytes(i->allocated, b, sizeof(b)), fmt_bytes(i->stored, c, sizeof(c)));
	(*(unsigned *)ud)++;
	return 0;
}

static int do_ls(struct store *s, int argc, char **argv)
{
	unsigned n = 0;
	if (argc > 1) {
		fprintf(stderr, "ckpt store ls: at most one PREFIX\n");
		return EXIT_USAGE;
	}
	printf("%-24s %-19s %6s %10s %10s %10s\n", "NAME", "CREATED (UTC)", "FILES", "SIZE", "DATA", "NEW");
	int r = store_foreach_snap(s, argc ? argv[0] : NULL, ls_cb, &n);
	if (r < 0) {
		log_err_errno(r, "cannot list snapshots: %s", err_msg());
		return EXIT_FAIL;
	}
	return EXIT_OK;
}

static int do_rm(struct store *s, int argc, char **argv)
{
	int ret = EXIT_OK;
	if (!argc) {
		fprintf(stderr, "ckpt store rm: which snapshot? See 'ckpt store rm --help'\n");
		return EXIT_USAGE;
	}
	for (int i = 0; i < argc; i++) {
		int r = store_snap_delete(s, argv[i]);
		if (r < 0) {
			log_err("cannot delete '%s': %s", argv[i], *err_msg() ? err_msg() : strerror(-r));
			ret = EXIT_FAIL;
			continue;
		}
		printf("deleted %s\n", argv[i]);
	}
	return ret;
}

static int do_gc(struct store *s)
{
	struct store_gc_stats g;
	char b[32];
	int r = store_gc(s, &g);
	if (r < 0) {
		log_err("gc failed: %s", *err_msg() ? err_msg() : strerror(-r));
		return EXIT_FAIL;
	}
	printf("chunks freed:     %" PRIu64 "\n"
	       "packs deleted:    %" PRIu64 "\n"
	       "packs rewritten:  %" PRIu64 "\n"
	       "space given back: %s\n",
	       g.chunks_freed, g.packs_deleted, g.packs_rewritten, fmt_bytes(g.bytes_freed, b, sizeof(b)));
	return EXIT_OK;
}

static void fsck_report(const char *object, const char *problem, void *ud)
{
	printf("%s: %s\n", object, problem);
}

static int do_fsck(struct store *s, const char *dir)
{
	int r = store_fsck(s, fsck_report, NULL);
	if (r < 0) {
		log_err("fsck could not run: %s", *err_msg() ? err_msg() : strerror(-r));
		return EXIT_FAIL;
	}
	if (r)
		printf("%s: %d problem%s\n", dir, r, r == 1 ? "" : "s");
	else
		printf("%s: clean\n", dir);
	return r ? EXIT_FAIL : EXIT_OK;
}

static int do_stats(struct store *s)
{
	struct store_stats st;
	char a[32], b[32], c[32];
	int r = store_stats(s, &st);
	if (r < 0) {
		log_err("stats failed: %s", *err_msg() ? err_msg() : strerror(-r));
		return EXIT_FAIL;
	}
	printf("snapshots:    %" PRIu64 "\n"
	       "chunks:       %" PRIu64 "\n"
	       "chunk bytes:  %s (raw, live)\n"
	       "stored bytes: %s (compressed, live)\n"
	       "pack files:   %" PRIu64 ", %s (dead bytes included)\n",
	       st.snapshots, st.chunks, fmt_bytes(st.chunk_bytes, a, sizeof(a)),
	       fmt_bytes(st.stored_bytes, b, sizeof(b)), st.packs, fmt_bytes(st.pack_bytes, c, sizeof(c)));
	if (st.chunk_bytes)
		printf("compression:  %.1f%% of raw\n", 100.0 * (double)st.stored_bytes / (double)st.chunk_bytes);
	return EXIT_OK;
}

int cmd_store(int argc, char **argv)
{
	_cleanup_free_ char *def = NULL;
	const char *dir = NULL, *sub = NULL;
	char *args[argc + 1];
	int nargs = 0, ret;
	struct store *s;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			for (size_t k = 0; sub && k < ARRAY_SIZE(sub_help); k++)
				if (!strcmp(sub, sub_help[k][0])) {
					fputs(sub_help[k][1], stdout);
					return EXIT_OK;
				}
			usage(stdout);
			return EXIT_OK;
		}
		if (!strcmp(a, "--store") || !strcmp(a, "-s")) {
			if (++i == argc) {
				fprintf(stderr, "ckpt store: --store needs a directory\n");
				return EXIT_USAGE;
			}
			dir = argv[i];
		} else if (!strncmp(a, "--store=", 8)) {
			dir = a + 8;
		} else if (a[0] == '-' && a[1] && !(sub && !strcmp(a, "--"))) {
			fprintf(stderr, "ckpt store: unknown option '%s'; see 'ckpt store --help'\n", a);
			return EXIT_USAGE;
		} else if (!sub) {
			sub = a;
		} else {
			args[nargs++] = argv[i];
		}
	}
	if (!sub) {
		usage(stderr);
		return EXIT_USAGE;
	}
	bool known = false;
	for (size_t k = 0; k < ARRAY_SIZE(sub_help); k++)
		known |= !strcmp(sub, sub_help[k][0]);
	if (!known) {
		fprintf(stderr, "ckpt store: unknown command '%s'; see 'ckpt store --help'\n", sub);
		return EXIT_USAGE;
	}
	if (!dir) {
		def = store_default_path();
		if (!def) {
			log_err("out of memory");
			return EXIT_FAIL;
		}
		dir = def;
	}
	if (nargs && strcmp(sub, "ls") && strcmp(sub, "rm")) {
		fprintf(stderr, "ckpt store %s: takes no arguments; see 'ckpt store %s --help'\n", sub, sub);
		return EXIT_USAGE;
	}
	/* store_open creates a missing store; upkeep must not. */
	struct stat st;
	if (stat(dir, &st) < 0) {
		log_err("no store at %s: %m", dir);
		return EXIT_FAIL;
	}
	bool ro = !strcmp(sub, "ls") || !strcmp(sub, "fsck") || !strcmp(sub, "stats");
	if (open_store(dir, ro, &s) < 0)
		return EXIT_FAIL;
	if (!strcmp(sub, "ls"))
		ret = do_ls(s, nargs, args);
	else if (!strcmp(sub, "rm"))
		ret = do_rm(s, nargs, args);
	else if (!strcmp(sub, "gc"))
		ret = do_gc(s);
	else if (!strcmp(sub, "fsck"))
		ret = do_fsck(s, dir);
	else
		ret = do_stats(s);
	store_close(s);
	return ret;
}
