/*
 * ckpt bench freeze [--sizes 256M,1G,4G] [--rates 1,10%] [--dir DIR] [--keeper ahead|now]:
 * how long a process stops for a dump that leaves it running, as the
 * process itself sees it, with pre-copy and with plain stop-and-copy.
 *
 * For each size and write rate it starts its own target: SIZE of mixed
 * content (a quarter never touched, a quarter pseudo-random, a quarter
 * text, a quarter counters) that takes a timestamp every millisecond and
 * meanwhile writes RATE pages picked at random (RATE: pages a millisecond,
 * or N% of its memory a second), each stamped with its sequence number.
 * The largest gap between two of its timestamps during a dump, less the
 * millisecond it sleeps, is the downtime it saw. The target is dumped
 * with pre-copy, then without (engine_dump, as `ckpt dump` and
 * `ckpt dump --no-pre-copy`), and twice more with the tracking kept
 * (below); then killed, and the last snapshot (pre-copied, incremental)
 * restored: the target checks that every page holds the last stamp
 * written to it before the freeze, and a mismatch fails the benchmark.
 * Printed: the downtime it saw, the dumper's frozen time, the time until
 * the snapshot was durable, the pre-copy's rounds and what it fell back
 * to.
 *
 * Then the second checkpoint with the tracking kept (engine_dump_opts
 * .track, as the daemon keeps it): the target is dumped into a chunk
 * store, made to write 1% of its pages at once, and dumped again from
 * the tracking the first left; printed: the bytes each added to the
 * store and the time each took until durable. It is this second,
 * incremental snapshot that is restored and checked. Where `criu` is on
 * the PATH the same target is also dumped with
 * `criu dump --leave-running` and restored with `criu restore`, and the
 * ratios are printed; else it says so.
 */
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>

#include "common/common.h"
#include "common/mixed.h"
#include "engine/engine.h"
#include "store/store.h"
#include "tools/tools-int.h"

#define PAGE 4096ul

/* What the target and the bench share (a page of shared memory; a
 * restored target has its own copy, no longer shared). */
struct watch {
	volatile uint64_t gap_us;  /* largest gap since the last reset */
	volatile uint32_t reset;   /* set by the bench, cleared by the target */
	volatile uint32_t ready;
	volatile uint64_t gap_at_us; /* when the largest gap ended (CLOCK_MONOTONIC) */
	volatile uint64_t burst;   /* set by the bench: pages to write at once; cleared when written */
};

static uint64_t mono_us(void)
{
	return now_ns() / 1000;
}

static void put_file(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd >= 0) {
		write_full(fd, text, strlen(text));
		close(fd);
	}
}

/* The target: fills, then writes rate pages and takes a timestamp every
 * millisecond until DIR/go appears (after its restore), then checks. */
static _noreturn_ void target(const char *dir, size_t size, uint64_t rate, struct watch *wt)
{
	char go[PATH_MAX + 16], result[PATH_MAX + 16];
	snprintf(go, sizeof(go), "%s/go", dir);
	snprintf(result, sizeof(result), "%s/result", dir);
	int n = open("/dev/null", O_RDWR);
	dup2(n, 0);
	dup2(n, 1);
	dup2(n, 2);
	syscall(SYS_close_range, 3, ~0u, 0);
	setsid();
	size_t pages = size / PAGE;
	uint8_t *m = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (m == MAP_FAILED)
		_exit(1);
	for (size_t p = pages / 4; p < pages; p++)
		mixed_page((uint64_t *)(m + p * PAGE), p, pages);
	volatile uint64_t seq = 0;
	uint64_t last = mono_us();
	wt->ready = 1;
	for (unsigned tick = 0;; tick++) {
		for (uint64_t i = 0; i < rate; i++) {
			uint64_t k = seq + 1;
			size_t p = mix64(k) % pages;
			uint64_t *w = (uint64_t *)(m + p * PAGE);
			w[0] = k;
			w[1] = k ^ p;
			seq = k;
		}
		/* the bench's burst, stamped as every write is */
		for (uint64_t i = 0, b = wt->burst; i < b; i++) {
			uint64_t k = seq + 1;
			size_t p = mix64(k) % pages;
			uint64_t *w = (uint64_t *)(m + p * PAGE);
			w[0] = k;
			w[1] = k ^ p;
			seq = k;
			if (i + 1 == b)
				wt->burst = 0;
		}
		uint64_t t = mono_us();
		if (wt->reset) {
			wt->reset = 0;
			wt->gap_us = 0;
		} else if (t - last > wt->gap_us) {
			wt->gap_us = t - last;
			wt->gap_at_us = t;
		}
		last = t;
		if (tick % 16 == 0 && access(go, F_OK) == 0)
			break;
		struct timespec ts = { 0, 1000000 };
		nanosleep(&ts, NULL);
	}
	uint64_t *stamp = calloc(pages, sizeof(*stamp)), *want = malloc(PAGE);
	bool ok = stamp && want;
	for (uint64_t k = 1; ok && k <= seq; k++)
		stamp[mix64(k) % pages] = k;
	for (size_t p = 0; ok && p < pages; p++) {
		mixed_page(want, p, pages);
		if (stamp[p]) {
			want[0] = stamp[p];
			want[1] = stamp[p] ^ p;
		}
		ok = !memcmp(want, m + p * PAGE, PAGE);
	}
	put_file(result, ok ? "PASS\n" : "FAIL: a page lacks what was written to it before the freeze\n");
	_exit(0);
}

/* Waits for every child: the keeper started ahead, which would wait for
 * its next dump for ever, is let go first. */
static void reap_all(void)
{
	engine_keeper_ahead_end();
	while (waitpid(-1, NULL, 0) > 0 || errno == EINTR)
		;
}

struct one {
	uint64_t seen_us; /* the target's largest gap, less its 1 ms sleep */
	uint64_t frozen_ns, durable_ns;
	unsigned rounds;
	bool precopied;
	uint64_t stored; /* bytes the snapshot added to its store */
	char mode[400];
};

/* Dumps pid into snapshot name of s, its watch reset first; the gap it
 * saw is read once the dump returned (the protection is removed by then)
 * and a few more of its ticks passed. */
static void phase_log(const struct engine_progress *p, void *ud)
{
	static enum engine_phase last = _ENGINE_PHASE_MAX;
	(void)ud;
	if (p->phase != last || p->phase == ENGINE_PHASE_PRECOPY)
		log_debug("bench freeze: %s at %" PRIu64 " us", engine_phase_name(p->phase), now_ns() / 1000);
	last = p->phase;
}

struct stored_q {
	const char *name;
	uint64_t stored;
};

static int stored_cb(const struct store_snap_info *info, void *ud)
{
	struct stored_q *q = ud;
	if (!strcmp(info->name, q->name))
		q->stored = info->stored;
	return 0;
}

/* Bytes snapshot name added to store s. */
static uint64_t snap_stored(struct store *s, const char *name)
{
	struct stored_q q = { name, 0 };
	store_foreach_snap(s, NULL, stored_cb, &q);
	return q.stored;
}

struct copy_ctx {
	struct store_snap *from, *to;
	uint8_t *buf;
};

static int copy_file(const char *path, const struct store_stat *st, void *ud)
{
	struct copy_ctx *c = ud;
	struct store_file *in = NULL, *out = NULL;
	int r = store_file_open(c->from, path, &in);
	if (r >= 0)
		r = store_file_create(c->to, path, &out);
	for (uint64_t off = 0; r >= 0 && off < st->size;) {
		ssize_t n = store_file_pread(in, c->buf, 16u << 20, off);
		if (n <= 0) {
			r = n < 0 ? (int)n : -EIO;
			break;
		}
		r = store_file_pwrite(out, c->buf, (size_t)n, off);
		off += (uint64_t)n;
	}
	if (r >= 0)
		r = store_file_set_size(out, st->size);
	if (out) {
		int q = store_file_close(out);
		r = r < 0 ? r : q;
	}
	if (in)
		store_file_close(in);
	return r;
}

/* Snapshot name of from, copied into to under the same name: a restore
 * reads it from there (this process holds the chunk store's io_uring
 * mapped, which a restore from this process cannot carry over). */
static int copy_snap(struct store *from, struct store *to, const char *name)
{
	struct copy_ctx c = { 0 };
	int r = store_snap_open(from, name, 0, &c.from);
	if (r >= 0)
		r = store_snap_create(to, name, STORE_CREATE_IMPORT, &c.to);
	c.buf = malloc(16u << 20);
	if (r >= 0 && !c.buf)
		r = -ENOMEM;
	if (r >= 0)
		r = store_snap_foreach_file(c.from, copy_file, &c);
	if (r >= 0)
		r = store_snap_commit(c.to);
	store_snap_close(c.to);
	store_snap_close(c.from);
	free(c.buf);
	return r;
}

/* track: NULL, or the tracking kept from one dump to the next. */
/* Whether each dump takes a keeper started ahead (--keeper ahead). */
static bool ahead = true;

/* Waits until keeper k runs its own code (named ckptfs-keeper), then a
 * while more: in the daemon it was started after the last checkpoint,
 * long before this one, and its start is not this dump's. */
static void keeper_settle(pid_t k)
{
	char path[64], comm[32] = "";
	snprintf(path, sizeof(path), "/proc/%d/comm", (int)k);
	for (int i = 0; i < 5000 && strcmp(comm, "ckptfs-keeper\n"); i++) {
		FILE *f = fopen(path, "re");
		if (!f || !fgets(comm, sizeof(comm), f))
			comm[0] = 0;
		if (f)
			fclose(f);
		usleep(1000);
	}
	usleep(300000);
}

static int measure(struct store *s, const char *name, pid_t pid, bool precopy, struct engine_track **track,
		   struct watch *wt, struct one *o)
{
	struct store_snap *w = NULL;
	struct engine_dump_stats st = { 0 };
	struct engine_dump_opts d = { .after = ENGINE_AFTER_RUN, .stats = &st, .no_precopy = !precopy,
				      .progress = phase_log, .track = track };
	if (ahead) {
		/* as the daemon keeps one, started well before the dump */
		pid_t k = engine_keeper_ahead();
		if (k < 0) {
			log_err("bench freeze: %s", tools_reason(k));
			return k;
		}
		keeper_settle(k);
	}
	wt->reset = 1;
	for (int i = 0; i < 1000 && wt->reset; i++)
		usleep(1000);
	int r = store_snap_create(s, name, 0, &w);
	if (r >= 0)
		r = engine_dump(pid, w, &d);
	store_snap_close(w);
	if (r < 0) {
		engine_keeper_ahead_end(); /* if the dump failed before it took it */
		log_err("bench freeze: dump of pid %d failed: %s", pid, tools_reason(r));
		return r;
	}
	log_debug("bench freeze: dump returned at %" PRIu64 " us", now_ns() / 1000);
	usleep(20000);
	o->seen_us = wt->gap_us > 1000 ? wt->gap_us - 1000 : 0;
	log_debug("bench freeze: the target's largest gap, %" PRIu64 " us, ended at %" PRIu64 " us", wt->gap_us,
		  wt->gap_at_us);
	o->frozen_ns = st.frozen_ns;
	o->durable_ns = st.total_ns;
	o->rounds = st.precopy_rounds;
	o->precopied = st.precopied;
	snprintf(o->mode, sizeof(o->mode), "%s", st.memory_mode);
	o->stored = snap_stored(s, name);
	return 0;
}

/* criu on the PATH, or NULL. */
static const char *find_criu(void)
{
	static char found[PATH_MAX];
	const char *path = getenv("PATH");
	_cleanup_free_ char *copy = strdup(path ? path : "/usr/sbin:/usr/bin:/sbin:/bin");
	char *save = NULL;
	for (char *d = copy ? strtok_r(copy, ":", &save) : NULL; d; d = strtok_r(NULL, ":", &save)) {
		snprintf(found, sizeof(found), "%s/criu", d);
		if (access(found, X_OK) == 0)
			return found;
	}
	return NULL;
}

static int run_wait(char *const argv[])
{
	pid_t c = fork();
	if (c == 0) {
		int n = open("/dev/null", O_RDWR);
		dup2(n, 0);
		dup2(n, 1);
		dup2(n, 2);
		execv(argv[0], argv);
		_exit(127);
	}
	int st;
	if (c < 0 || waitpid(c, &st, 0) != c)
		return -ECHILD;
	return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -EIO;
}

static void freeze_usage(FILE *out)
{
	fprintf(out,
		"Usage: ckpt bench freeze [--sizes LIST] [--rates LIST] [--dir DIR] [--keeper ahead|now]\n"
		"\n"
		"How long a process stops for a dump that leaves it running, as the\n"
		"process itself sees it (the largest gap between its timestamps, one a\n"
		"millisecond), with pre-copy and with plain stop-and-copy; the dumper's\n"
		"frozen time and the time until the snapshot is durable. Then, into a\n"
		"chunk store, a checkpoint with the tracking kept, 1%% of the pages\n"
		"written at once, and the second checkpoint from that tracking: bytes\n"
		"stored and time of each. That incremental snapshot is restored and the\n"
		"process checks every page it wrote. With criu on the PATH, criu dump\n"
		"--leave-running and criu restore on the same target, with the ratios.\n"
		"  --sizes LIST   memory of the target (default 256M,1G,4G)\n"
		"  --rates LIST   what it writes meanwhile: pages a millisecond, or N%%\n"
		"                 of its memory a second (default 1,10%%)\n"
		"  --dir DIR      where the snapshots go (default /tmp; removed after)\n"
		"  --keeper WHEN  ahead (default): each dump takes a keeper started\n"
		"                 before it, as the daemon keeps one; now: each dump\n"
		"                 starts its own, as `ckpt dump` does\n");
}

static int parse_size(const char *s, uint64_t *ret)
{
	char *end;
	double v = strtod(s, &end);
	uint64_t m = 1;
	switch (*end) {
	case 'm': case 'M': m = 1ull << 20; end++; break;
	case 'g': case 'G': m = 1ull << 30; end++; break;
	}
	if (*end || v <= 0)
		return -EINVAL;
	*ret = ALIGN_UP((uint64_t)(v * m), 4 * PAGE);
	return 0;
}

/* Pages a millisecond for rate text s at size. */
static int parse_rate(const char *s, uint64_t size, uint64_t *ret, bool *pct)
{
	char *end;
	double v = strtod(s, &end);
	*pct = *end == '%';
	if ((*pct ? end[1] : *end) || v < 0)
		return -EINVAL;
	*ret = *pct ? (uint64_t)(size / PAGE * v / 100 / 1000 + 0.5) : (uint64_t)v;
	return 0;
}

int bench_freeze(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "sizes", required_argument, NULL, 's' },
		{ "rates", required_argument, NULL, 'r' },
		{ "dir", required_argument, NULL, 'd' },
		{ "keeper", required_argument, NULL, 'k' },
		{ "help", no_argument, NULL, 'h' },
		{},
	};
	const char *sizes = "256M,1G,4G", *rates = "1,10%", *base = "/tmp";
	int c, r = 0;
	optind = 1;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 's': sizes = optarg; break;
		case 'r': rates = optarg; break;
		case 'd': base = optarg; break;
		case 'k':
			if (strcmp(optarg, "ahead") && strcmp(optarg, "now")) {
				fprintf(stderr, "ckpt bench freeze: --keeper takes 'ahead' or 'now', not '%s'\n", optarg);
				return EXIT_USAGE;
			}
			ahead = !strcmp(optarg, "ahead");
			break;
		case 'h': freeze_usage(stdout); return EXIT_OK;
		default: freeze_usage(stderr); return EXIT_USAGE;
		}
	}
	if (geteuid() != 0) {
		fprintf(stderr, "ckpt bench freeze: needs root (ptrace, userfaultfd in another process)\n");
		return EXIT_FAIL;
	}
	char dir[PATH_MAX];
	snprintf(dir, sizeof(dir), "%s/ckpt-bench-freeze-XXXXXX", base);
	if (!mkdtemp(dir)) {
		fprintf(stderr, "ckpt bench freeze: cannot make a directory in %s: %m\n", base);
		return EXIT_FAIL;
	}
	char store_dir[PATH_MAX + 16];
	snprintf(store_dir, sizeof(store_dir), "%s/store", dir);
	mkdir(store_dir, 0700);
	/* the dumped targets' orphans come to us */
	prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
	const char *criu = find_criu();
	struct watch *wt = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (wt == MAP_FAILED)
		return EXIT_FAIL;

	printf("ckpt bench freeze: downtime as the target sees it (largest gap between its 1 ms ticks, less 1 ms)\n");
	printf("keeper: %s\n", ahead ? "started ahead of each dump (as the daemon keeps one)"
				      : "started by each dump (as `ckpt dump` does)");
	_cleanup_free_ char *sl = strdup(sizes);
	char *s1 = NULL;
	for (char *stok = sl ? strtok_r(sl, ",", &s1) : NULL; stok && r >= 0; stok = strtok_r(NULL, ",", &s1)) {
		uint64_t size;
		if (parse_size(stok, &size) < 0) {
			fprintf(stderr, "ckpt bench freeze: bad size '%s'\n", stok);
			r = -EINVAL;
			break;
		}
		_cleanup_free_ char *rl = strdup(rates);
		char *s2 = NULL;
		for (char *rtok = rl ? strtok_r(rl, ",", &s2) : NULL; rtok && r >= 0; rtok = strtok_r(NULL, ",", &s2)) {
			uint64_t rate;
			bool pct;
			char b[32], path[PATH_MAX + 32];
			if (parse_rate(rtok, size, &rate, &pct) < 0) {
				fprintf(stderr, "ckpt bench freeze: bad rate '%s'\n", rtok);
				r = -EINVAL;
				break;
			}
			snprintf(path, sizeof(path), "%s/go", dir);
			unlink(path);
			snprintf(path, sizeof(path), "%s/result", dir);
			unlink(path);
			memset((void *)wt, 0, sizeof(*wt));
			fflush(NULL);
			pid_t pid = fork();
			if (pid == 0)
				target(dir, size, rate, wt);
			for (int i = 0; !wt->ready && waitpid(pid, NULL, WNOHANG) == 0; i++)
				usleep(2000);
			if (!wt->ready) {
				log_err("bench freeze: the target died while filling its memory");
				r = -ECHILD;
				break;
			}
			usleep(200000);
			struct one pre = { 0 }, plain = { 0 }, cr = { 0 };
			struct store *s = NULL;
			r = store_open_dir(store_dir, &s);
			if (r >= 0)
				r = measure(s, "pre", pid, true, NULL, wt, &pre);
			if (r >= 0)
				r = measure(s, "plain", pid, false, NULL, wt, &plain);
			/* the tracking kept: a first checkpoint, 1% of the pages
			 * written, the second from what the first left */
			struct one first = { 0 }, second = { 0 };
			struct store *cs = NULL;
			struct engine_track *track = NULL;
			char cs_dir[PATH_MAX + 16];
			snprintf(cs_dir, sizeof(cs_dir), "%s/chunks", dir);
			if (r >= 0)
				r = store_open(cs_dir, NULL, &cs);
			if (r < 0)
				log_err("bench freeze: chunk store %s: %s", cs_dir, tools_reason(r));
			if (r >= 0)
				r = measure(cs, "first", pid, true, &track, wt, &first);
			if (r >= 0) {
				wt->burst = size / PAGE / 100;
				for (int i = 0; i < 10000 && wt->burst; i++)
					usleep(1000);
				r = measure(cs, "second", pid, true, &track, wt, &second);
			}
			engine_track_free(track);
			if (r >= 0)
				r = copy_snap(cs, s, "second");
			store_close(cs);
			cs = NULL;
			uint64_t criu_dump_ns = 0, criu_restore_ns = 0;
			if (r >= 0 && criu) {
				char pidarg[16], img[PATH_MAX + 16];
				snprintf(pidarg, sizeof(pidarg), "%d", pid);
				snprintf(img, sizeof(img), "%s/criu", dir);
				mkdir(img, 0700);
				char *dargv[] = { (char *)criu, "dump", "--leave-running", "-t", pidarg, "-D", img,
						  "--shell-job", NULL };
				wt->reset = 1;
				for (int i = 0; i < 1000 && wt->reset; i++)
					usleep(1000);
				uint64_t t0 = now_ns();
				if (run_wait(dargv) == 0) {
					criu_dump_ns = now_ns() - t0;
					usleep(20000);
					cr.seen_us = wt->gap_us > 1000 ? wt->gap_us - 1000 : 0;
				}
			}
			kill(-pid, SIGKILL);
			reap_all();
			if (r >= 0 && criu && criu_dump_ns) {
				char img[PATH_MAX + 16];
				snprintf(img, sizeof(img), "%s/criu", dir);
				char *rargv[] = { (char *)criu, "restore", "-D", img, "--shell-job", "-d", NULL };
				uint64_t t0 = now_ns();
				if (run_wait(rargv) == 0)
					criu_restore_ns = now_ns() - t0;
				/* its check is ours to read too */
				snprintf(path, sizeof(path), "%s/go", dir);
				put_file(path, "go\n");
				for (int i = 0; i < 60000 && access(path, F_OK) == 0; i++) {
					char res[PATH_MAX + 16];
					snprintf(res, sizeof(res), "%s/result", dir);
					if (access(res, F_OK) == 0)
						break;
					usleep(1000);
				}
				reap_all();
				snprintf(path, sizeof(path), "%s/go", dir);
				unlink(path);
				snprintf(path, sizeof(path), "%s/result", dir);
				unlink(path);
			}
			/* the incremental snapshot, restored: the target checks itself */
			uint64_t restore_ns = 0;
			if (r >= 0) {
				struct store_snap *rs = NULL;
				pid_t npid = 0;
				struct engine_restore_opts ro = { 0 };
				uint64_t t0 = now_ns();
				r = store_snap_open(s, "second", 0, &rs);
				if (r >= 0)
					r = engine_restore(rs, &ro, &npid);
				restore_ns = now_ns() - t0;
				store_snap_close(rs);
				if (r < 0) {
					log_err("bench freeze: restore failed: %s", tools_reason(r));
				} else {
					snprintf(path, sizeof(path), "%s/go", dir);
					put_file(path, "go\n");
					waitpid(npid, NULL, 0);
					reap_all();
					_cleanup_free_ char *res = NULL;
					snprintf(path, sizeof(path), "%s/result", dir);
					if (read_file_full(path, &res, NULL) < 0 || strcmp(res, "PASS\n")) {
						log_err("bench freeze: the restored target says: %s", res ? res : "nothing");
						r = -EBADMSG;
					}
				}
			}
			store_close(s);
			store_close(cs);
			char cmd[PATH_MAX + 64];
			rm_rf(cs_dir);
			snprintf(cmd, sizeof(cmd), "%s/pre", store_dir);
			rm_rf(cmd);
			snprintf(cmd, sizeof(cmd), "%s/plain", store_dir);
			rm_rf(cmd);
			snprintf(cmd, sizeof(cmd), "%s/second", store_dir);
			rm_rf(cmd);
			snprintf(cmd, sizeof(cmd), "%s/criu", dir);
			rm_rf(cmd);
			if (r < 0)
				break;
			printf("\n%s, writing %s (%" PRIu64 " pages/ms):\n", fmt_bytes(size, b, sizeof(b)), rtok, rate);
			printf("  %-22s %10s %10s %12s  %s\n", "", "seen (ms)", "frozen", "durable", "memory");
			printf("  %-22s %10.1f %10.1f %12.1f  %s\n", "pre-copy", pre.seen_us / 1e3, pre.frozen_ns / 1e6,
			       pre.durable_ns / 1e6, pre.mode);
			printf("  %-22s %10.1f %10.1f %12.1f  %s\n", "stop-and-copy", plain.seen_us / 1e3,
			       plain.frozen_ns / 1e6, plain.durable_ns / 1e6, plain.mode);
			printf("  %-22s %10.2f\n", "pre-copy / stop-and-copy",
			       plain.seen_us ? pre.seen_us / (double)plain.seen_us : 0);
			printf("  second checkpoint after 1%% changed, the tracking kept (chunk store):\n");
			printf("  %-22s %12s %12s  %s\n", "", "stored", "durable", "memory");
			printf("  %-22s %10.1f MiB %9.1f ms  %s\n", "first", first.stored / 1048576.0,
			       first.durable_ns / 1e6, first.mode);
			printf("  %-22s %10.1f MiB %9.1f ms  %s\n", "second", second.stored / 1048576.0,
			       second.durable_ns / 1e6, second.mode);
			printf("  %-22s %10.1f %%     %8.1f %%\n", "second / first",
			       first.stored ? 100.0 * second.stored / first.stored : 0,
			       first.durable_ns ? 100.0 * second.durable_ns / first.durable_ns : 0);
			printf("  %-22s %10.1f ms (the target passed its check)\n", "restore (incremental)", restore_ns / 1e6);
			if (!criu)
				printf("  criu: not on the PATH, not compared\n");
			else if (!criu_dump_ns)
				printf("  criu: %s dump --leave-running failed, not compared\n", criu);
			else
				printf("  criu: seen %.1f ms, dump %.1f ms, restore %.1f ms; ckpt pre-copy seen / criu %.2f\n",
				       cr.seen_us / 1e3, criu_dump_ns / 1e6, criu_restore_ns / 1e6,
				       cr.seen_us ? pre.seen_us / (double)cr.seen_us : 0);
			fflush(stdout);
		}
	}
	munmap((void *)wt, PAGE);
	rm_rf(dir);
	return r < 0 ? EXIT_FAIL : EXIT_OK;
}
