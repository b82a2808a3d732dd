/*
 * ckpt dump [--kill|--stop] PID DIR: checkpoint a process into the
 * snapshot directory DIR (the directory backend: DIR's parent is the
 * store, its last component the snapshot's name), without any daemon.
 */
#include <getopt.h>
#include <inttypes.h>
#include <libgen.h>

#include "common/common.h"
#include "engine/engine.h"
#include "store/store.h"
#include "tools/tools-int.h"

const char *tools_reason(int r)
{
	return *err_msg() ? err_msg() : strerror(-r);
}

static void dump_progress(const struct engine_progress *p, void *ud)
{
	static enum engine_phase last = _ENGINE_PHASE_MAX;
	char b[32];
	if (p->phase == ENGINE_PHASE_WRITE && tools_interactive())
		tools_progress("writing", p->done, p->total, p->total && p->done >= p->total);
	else if (p->phase == ENGINE_PHASE_PRECOPY)
		log_info("pre-copy round %u: %s", p->round, fmt_bytes(p->done, b, sizeof(b)));
	else if (p->phase != last && !tools_interactive())
		/* off a terminal: one line per phase */
		log_info("%s%s%s", engine_phase_name(p->phase), p->total ? " " : "",
			 p->total ? fmt_bytes(p->total, b, sizeof(b)) : "");
	last = p->phase;
}

static void dump_usage(FILE *out)
{
	fprintf(out,
		"Usage: ckpt dump [--kill|--stop] [--no-pre-copy] PID DIR\n"
		"\n"
		"Checkpoints process PID with all its descendants into the snapshot\n"
		"directory DIR (created; its parent must exist): a `tree` file and a\n"
		"directory per process. Every process is frozen before any is read, only\n"
		"while their state and a copy of their memory are taken; they run again\n"
		"together while the snapshot is written, unless:\n"
		"  --kill   they stay frozen until the snapshot is durable, then are killed\n"
		"  --stop   they stay frozen until the snapshot is durable, then are left\n"
		"           stopped (SIGSTOP)\n"
		"Without --kill or --stop, their private anonymous memory is pre-copied\n"
		"while they run, round after round, so that the freeze only takes what\n"
		"they wrote since; a process writing faster than the copy falls back to\n"
		"copying everything while frozen (the last line says which was taken):\n"
		"  --no-pre-copy   copy everything while frozen, without pre-copy\n"
		"A failure leaves every process running as it was.\n");
}

int cmd_dump(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "kill", no_argument, NULL, 'k' },
		{ "stop", no_argument, NULL, 's' },
		{ "no-pre-copy", no_argument, NULL, 'P' },
		{ "help", no_argument, NULL, 'h' },
		{},
	};
	struct engine_dump_stats stats = { 0 };
	struct engine_dump_opts o = { .after = ENGINE_AFTER_RUN, .progress = dump_progress, .stats = &stats };
	int c;

	optind = 1;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'k':
			o.after = ENGINE_AFTER_KILL;
			break;
		case 's':
			o.after = ENGINE_AFTER_STOP;
			break;
		case 'P':
			o.no_precopy = true;
			break;
		case 'h':
			dump_usage(stdout);
			return EXIT_OK;
		default:
			dump_usage(stderr);
			return EXIT_USAGE;
		}
	}
	if (argc - optind != 2) {
		dump_usage(stderr);
		return EXIT_USAGE;
	}
	uint64_t pid;
	if (parse_u64(argv[optind], &pid) < 0 || !pid || pid > INT32_MAX) {
		fprintf(stderr, "ckpt dump: '%s' is not a PID\n", argv[optind]);
		return EXIT_USAGE;
	}
	_cleanup_free_ char *d1 = strdup(argv[optind + 1]), *d2 = strdup(argv[optind + 1]);
	if (!d1 || !d2)
		return EXIT_FAIL;
	const char *parent = dirname(d1), *name = basename(d2);

	struct store *s = NULL;
	struct store_snap *w = NULL;
	int r = store_open_dir(parent, &s);
	if (r < 0) {
		log_err("cannot open '%s': %s", parent, tools_reason(r));
		return EXIT_FAIL;
	}
	r = store_snap_create(s, name, 0, &w);
	if (r < 0) {
		log_err("cannot create snapshot '%s': %s", argv[optind + 1], tools_reason(r));
		store_close(s);
		return EXIT_FAIL;
	}
	log_info("dumping pid %d into %s", (int)pid, argv[optind + 1]);
	r = engine_dump((pid_t)pid, w, &o);
	if (r < 0) {
		log_err("dump of pid %d failed: %s", (int)pid, tools_reason(r));
	} else {
		char b[32];
		log_info("pid %d: %" PRIu64 " process%s, %s of memory, frozen %.1f ms, %.1f ms in all; memory: %s",
			 (int)pid, stats.processes, stats.processes == 1 ? "" : "es",
			 fmt_bytes(stats.memory_bytes, b, sizeof(b)), stats.frozen_ns / 1e6, stats.total_ns / 1e6,
			 stats.memory_mode);
	}
	store_snap_close(w);
	store_close(s);
	return r < 0 ? EXIT_FAIL : EXIT_OK;
}
