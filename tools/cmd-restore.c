/*
 * ckpt restore DIR: restores the snapshot directory DIR, prints the PID
 * and returns once the process runs (in a session of its own, re-parented:
 * nobody needs to wait for it). With --lazy it prints the PID as soon as
 * the process runs and stays to serve its memory until all is loaded.
 */
#include <getopt.h>
#include <inttypes.h>
#include <libgen.h>

#include "common/common.h"
#include "engine/engine.h"
#include "store/store.h"
#include "tools/tools-int.h"

static void restore_progress(const struct engine_progress *p, void *ud)
{
	static enum engine_phase last = _ENGINE_PHASE_MAX;
	static pid_t last_id, last_parent;
	if (p->phase == ENGINE_PHASE_WAIT) {
		/* once per ID and parent: the engine reports every 100 ms */
		if (last != ENGINE_PHASE_WAIT || p->wait_id != last_id || p->wait_parent != last_parent)
			log_info("waiting for pid %d to be reaped by its parent %d (%s), at most %.1f s",
				 p->wait_id, p->wait_parent, p->wait_parent_comm, p->total / 1000.0);
		last_id = p->wait_id;
		last_parent = p->wait_parent;
	} else if (p->phase == ENGINE_PHASE_RESTORE && tools_interactive())
		tools_progress("restoring", p->done, p->total, p->total && p->done >= p->total);
	else if (p->phase != last && !tools_interactive())
		log_info("%s", engine_phase_name(p->phase));
	last = p->phase;
}

static void lazy_progress(uint64_t loaded, uint64_t total, void *ud)
{
	(void)ud;
	if (tools_interactive())
		tools_progress("loading", loaded, total, loaded >= total);
	else
		log_info("loaded %" PRIu64 " of %" PRIu64 " bytes", loaded, total);
}

static void restore_usage(FILE *out)
{
	fprintf(out,
		"Usage: ckpt restore [--no-verify] [--pid-wait SECONDS] [--accept-changed-files] [--lazy] DIR\n"
		"\n"
		"Restores the process saved in the snapshot directory DIR, with all the\n"
		"descendants it had, their PIDs, thread IDs, parents, process groups and\n"
		"sessions; prints the root's PID, and returns once they run. Every file\n"
		"is checked against the manifest first (--no-verify checks names and\n"
		"sizes only). Each thread gets back the credentials and seccomp filters\n"
		"of the snapshot where the caller could have granted them; otherwise the\n"
		"restore is refused before anything runs.\n"
		"\n"
		"A PID or thread ID still held by a zombie (the process was killed and\n"
		"its parent has not reaped it yet) is waited for, --pid-wait SECONDS at\n"
		"most (default 5, 0: do not wait; fractions allowed), saying whom it\n"
		"waits for. One held by a live process fails at once.\n"
		"\n"
		"Files the process had open are reopened by their paths. A log (a file\n"
		"open write-only with O_APPEND) is reopened at its end. Any other file\n"
		"that is another inode or has another size than at the dump, and a file\n"
		"mapped private whose size or modification time changed, stops the\n"
		"restore, naming it; --accept-changed-files restores them as they are\n"
		"now. A file that is gone stops it either way.\n"
		"\n"
		"--lazy prints the PID as soon as the process runs with its registers,\n"
		"descriptors, small areas and the pages it touches first; the rest of its\n"
		"private memory arrives on first touch (userfaultfd) or from a fill in\n"
		"address order, served by this command, which stays in the foreground\n"
		"(progress on stderr) and exits once everything is loaded. A page that\n"
		"cannot be read kills the process (SIGKILL, exit status 1, the reason on\n"
		"stderr); so does this command's end before the load is done (kill, ^C):\n"
		"the process never runs on without its memory. In a snapshot of several\n"
		"processes each loads so, its own memory, and the progress is of all.\n");
}

int cmd_restore(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "no-verify", no_argument, NULL, 'n' },
		{ "pid-wait", required_argument, NULL, 'w' },
		{ "accept-changed-files", no_argument, NULL, 'a' },
		{ "lazy", no_argument, NULL, 'l' },
		{ "help", no_argument, NULL, 'h' },
		{},
	};
	unsigned flags = STORE_OPEN_VERIFY;
	unsigned wait_ms = 0; /* the engine's default */
	bool accept_changed = false, lazy = false;
	int c;

	optind = 1;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 'n':
			flags = 0;
			break;
		case 'w': {
			char *end;
			errno = 0;
			double sec = strtod(optarg, &end);
			/* an hour is more than any parent should need; the
			 * bound keeps the milliseconds clear of the NONE value */
			if (errno || end == optarg || *end || !(sec >= 0 && sec <= 3600)) {
				log_err("--pid-wait: '%s' is not a number of seconds from 0 to 3600", optarg);
				return EXIT_USAGE;
			}
			wait_ms = sec == 0 ? ENGINE_PID_WAIT_NONE : (unsigned)(sec * 1000 + 0.5);
			if (!wait_ms)
				wait_ms = 1;
			break;
		}
		case 'a':
			accept_changed = true;
			break;
		case 'l':
			lazy = true;
			break;
		case 'h':
			restore_usage(stdout);
			return EXIT_OK;
		default:
			restore_usage(stderr);
			return EXIT_USAGE;
		}
	}
	if (argc - optind != 1) {
		restore_usage(stderr);
		return EXIT_USAGE;
	}
	_cleanup_free_ char *d1 = strdup(argv[optind]), *d2 = strdup(argv[optind]);
	if (!d1 || !d2)
		return EXIT_FAIL;
	const char *parent = dirname(d1), *name = basename(d2);
	struct store *s = NULL;
	struct store_snap *snap = NULL;
	int r = store_open_dir(parent, &s);
	if (r < 0) {
		log_err("cannot open '%s': %s", parent, tools_reason(r));
		return EXIT_FAIL;
	}
	r = store_snap_open(s, name, flags, &snap);
	if (r < 0) {
		log_err("cannot open snapshot '%s': %s", argv[optind], tools_reason(r));
		store_close(s);
		return EXIT_FAIL;
	}
	log_info("restoring %s", argv[optind]);
	struct engine_restore_opts o = {
		.progress = restore_progress,
		.pid_wait_ms = wait_ms,
		.accept_changed_files = accept_changed,
		.lazy = lazy,
	};
	struct engine_lazy *load = NULL;
	pid_t pid;
	o.ret_lazy = &load;
	r = engine_restore(snap, &o, &pid);
	if (r < 0)
		log_err("restore of %s failed: %s", argv[optind], tools_reason(r));
	else
		printf("%d\n", pid);
	fflush(stdout);
	if (load) {
		/* it runs; its memory comes from here until all is in */
		r = engine_lazy_serve(load, lazy_progress, NULL);
		if (r < 0)
			log_err("lazy restore of %s: %s", argv[optind], tools_reason(r));
		engine_lazy_close(load);
	}
	store_snap_close(snap);
	store_close(s);
	return r < 0 ? EXIT_FAIL : EXIT_OK;
}
