/*
 * ckpt bench engine [--size 2G] [--procs N] [--dir DIR] [--keep]: dumps
 * and restores a process with SIZE of resident memory of mixed content (a
 * quarter zeros, a quarter random, a quarter text, a quarter counters)
 * into a snapshot directory under DIR, and reports time frozen, dump
 * time, restore time and GB/s; beside them, in the same run, the time to
 * copy the same bytes with process_vm_readv and to write them to DIR
 * (write + fsync of the same buffer, and dd from /dev/zero). With
 * --procs N it then does the same with a tree of N processes sharing the
 * SIZE (the root and N-1 children it forks after filling it) and prints
 * both, with the ratio of their frozen times. With --lazy the snapshot of
 * one process is also restored lazily: the time until it runs, and until
 * all its memory is loaded (it checks its memory after). The restored
 * processes check the memory's checksum themselves; a mismatch fails the
 * benchmark.
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
#include <sys/uio.h>
#include <sys/wait.h>

#include "common/common.h"
#include "engine/engine.h"
#include "store/store.h"
#include "tools/tools-int.h"

#define PIECE (16u << 20)

static uint64_t sum_words(const uint64_t *w, size_t n)
{
	uint64_t s = 0;
	for (size_t i = 0; i < n; i++)
		s += w[i] * 2654435761u + (w[i] >> 32);
	return s;
}

static void put_file(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd >= 0) {
		write_full(fd, text, strlen(text));
		close(fd);
	}
}

/* The process that is dumped and restored: with procs > 1 its memory is
 * shared and it forks procs - 1 children that check it too. */
static _noreturn_ void child(const char *dir, size_t size, unsigned procs, uint64_t **region)
{
	char ready[PATH_MAX + 16], go[PATH_MAX + 16], result[PATH_MAX + 16];
	snprintf(ready, sizeof(ready), "%s/ready", dir);
	snprintf(go, sizeof(go), "%s/go", dir);
	snprintf(result, sizeof(result), "%s/result", dir);
	int n = open("/dev/null", O_RDWR);
	dup2(n, 0);
	dup2(n, 1);
	dup2(n, 2);
	syscall(SYS_close_range, 3, ~0u, 0);
	setsid();

	size_t words = size / 8, q = words / 4;
	uint64_t *w = mmap(NULL, size, PROT_READ | PROT_WRITE, (procs > 1 ? MAP_SHARED : MAP_PRIVATE) | MAP_ANONYMOUS,
			   -1, 0);
	if (w == MAP_FAILED)
		_exit(1);
	*region = w;
	uint64_t x = 88172645463325252ull;
	memset(w, 0, q * 8);
	for (size_t i = q; i < 2 * q; i++) {
		x ^= x << 13;
		x ^= x >> 7;
		x ^= x << 17;
		w[i] = x;
	}
	static const char text[] = "the quick brown fox jumps over the lazy dog. ";
	for (size_t i = 0; i < q * 8; i++)
		((char *)(w + 2 * q))[i] = text[i % (sizeof(text) - 1)];
	for (size_t i = 3 * q; i < words; i++)
		w[i] = i / 512;
	uint64_t s0 = sum_words(w, words);
	pid_t kids[64];
	for (unsigned k = 1; k < procs; k++) {
		kids[k] = fork();
		if (kids[k] == 0) {
			while (access(go, F_OK) < 0)
				usleep(1000);
			_exit(sum_words(w, words) == s0 ? 0 : 1);
		}
		if (kids[k] < 0)
			_exit(1);
	}
	put_file(ready, "ready\n");
	while (access(go, F_OK) < 0)
		usleep(1000);
	bool ok = sum_words(w, words) == s0;
	for (unsigned k = 1; k < procs; k++) {
		int st;
		ok = ok && waitpid(kids[k], &st, 0) == kids[k] && WIFEXITED(st) && WEXITSTATUS(st) == 0;
	}
	put_file(result, ok ? "PASS\n" : "FAIL: checksum\n");
	_exit(0);
}

static int parse_size(const char *s, uint64_t *ret)
{
	char *end;
	double v = strtod(s, &end);
	uint64_t m = 1;
	switch (*end) {
	case 'k': case 'K': m = 1ull << 10; end++; break;
	case 'm': case 'M': m = 1ull << 20; end++; break;
	case 'g': case 'G': m = 1ull << 30; end++; break;
	}
	if (*end || v <= 0)
		return -EINVAL;
	*ret = ALIGN_UP((uint64_t)(v * m), 4096);
	return 0;
}

static double gbps(uint64_t bytes, uint64_t ns)
{
	return ns ? bytes / (double)ns : 0;
}

static void line(const char *what, uint64_t ns, uint64_t bytes)
{
	printf("  %-44s %9.3f s  %6.2f GB/s\n", what, ns / 1e9, gbps(bytes, ns));
}

struct cycle {
	uint64_t frozen_ns, dump_ns, restore_ns, verify_ns, saved, processes;
	uint64_t lazy_run_ns, lazy_load_ns; /* --lazy: until it runs, until all is loaded */
	uint64_t readv_ns, write_ns, dd_ns; /* the comparisons, when asked */
};

/* Waits until no child of ours is left (we are a subreaper: the dumped
 * tree's orphans are ours), so that their pids are free for the restore. */
static void reap_all(void)
{
	while (waitpid(-1, NULL, 0) > 0 || errno == EINTR)
		;
}

/* The comparisons: the same bytes copied with process_vm_readv, written
 * with write + fsync, and dd from /dev/zero. */
static int compare(const char *dir, pid_t pid, uintptr_t addr, uint64_t size, struct cycle *c)
{
	char path[PATH_MAX + 32];
	uint8_t *buf = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	if (buf == MAP_FAILED) {
		log_err("bench engine: no memory for the comparison buffer");
		return -ENOMEM;
	}
	uint64_t t0 = now_ns();
	for (uint64_t off = 0; off < size; off += PIECE) {
		struct iovec l = { buf + off, MIN(PIECE, size - off) };
		struct iovec rm = { (void *)(addr + off), l.iov_len };
		if (process_vm_readv(pid, &l, 1, &rm, 1, 0) != (ssize_t)l.iov_len) {
			int r = negerrno();
			log_err_errno(r, "bench engine: process_vm_readv");
			munmap(buf, size);
			return r;
		}
	}
	c->readv_ns = now_ns() - t0;

	snprintf(path, sizeof(path), "%s/write", dir);
	t0 = now_ns();
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	for (uint64_t off = 0; fd >= 0 && off < size; off += PIECE)
		if (write_full(fd, buf + off, MIN(PIECE, size - off)) < 0)
			break;
	if (fd >= 0) {
		fsync(fd);
		close(fd);
	}
	c->write_ns = now_ns() - t0;
	unlink(path);
	munmap(buf, size);
	snprintf(path, sizeof(path), "%s/dd", dir);
	char of[PATH_MAX + 40], count[32];
	snprintf(of, sizeof(of), "of=%s", path);
	snprintf(count, sizeof(count), "count=%" PRIu64, size / PIECE);
	t0 = now_ns();
	pid_t dd = fork();
	if (dd == 0) {
		int n = open("/dev/null", O_WRONLY);
		dup2(n, 1);
		dup2(n, 2);
		execlp("dd", "dd", "if=/dev/zero", of, "bs=16M", count, "conv=fsync", (char *)NULL);
		_exit(127);
	}
	int dst;
	if (dd > 0 && waitpid(dd, &dst, 0) == dd && WIFEXITED(dst) && WEXITSTATUS(dst) == 0)
		c->dd_ns = now_ns() - t0;
	unlink(path);
	return 0;
}

/* Restores snapshot `name` of s (lazily: serving its memory until all is
 * loaded), tells the process to check its memory, and reads its verdict.
 * *run_ns: until it runs; *load_ns (lazy): until all is loaded. */
static int restore_checked(const char *dir, struct store *s, const char *name, bool lazy, uint64_t *run_ns,
			   uint64_t *load_ns)
{
	char path[PATH_MAX + 32];
	struct store_snap *rs = NULL;
	struct engine_lazy *load = NULL;
	struct engine_restore_opts o = { .lazy = lazy, .ret_lazy = &load };
	pid_t npid = 0;

	static const char *const files[] = { "go", "result" };
	for (size_t i = 0; i < ARRAY_SIZE(files); i++) {
		snprintf(path, sizeof(path), "%s/%s", dir, files[i]);
		unlink(path);
	}
	uint64_t t0 = now_ns();
	int r = store_snap_open(s, name, 0, &rs);
	if (r >= 0)
		r = engine_restore(rs, &o, &npid);
	*run_ns = now_ns() - t0;
	/* the load alone, as the eager restore's time is: the process
	 * checks its memory after */
	if (r >= 0 && load)
		r = engine_lazy_serve(load, NULL, NULL);
	if (load_ns)
		*load_ns = now_ns() - t0;
	if (r >= 0) {
		snprintf(path, sizeof(path), "%s/go", dir);
		put_file(path, "go\n");
	}
	engine_lazy_close(load);
	store_snap_close(rs);
	if (r < 0) {
		log_err("bench engine: %srestore failed: %s", lazy ? "lazy " : "", tools_reason(r));
		return r;
	}
	waitpid(npid, NULL, 0);
	reap_all();
	snprintf(path, sizeof(path), "%s/result", dir);
	_cleanup_free_ char *res = NULL;
	if (read_file_full(path, &res, NULL) < 0 || strcmp(res, "PASS\n")) {
		log_err("bench engine: the restored process says: %s", res ? res : "nothing");
		return -EBADMSG;
	}
	return 0;
}

/* One run: a process (or a tree of procs) filled with size, dumped into
 * snapshot `name`, killed, restored, and its own check read. */
static int cycle(const char *dir, const char *store_dir, const char *name, uint64_t size, unsigned procs,
		 enum engine_after after, bool comparisons, bool lazy, struct cycle *c)
{
	char path[PATH_MAX + 32], b1[32];
	int r;

	static const char *const files[] = { "ready", "go", "result" };
	for (size_t i = 0; i < ARRAY_SIZE(files); i++) {
		snprintf(path, sizeof(path), "%s/%s", dir, files[i]);
		unlink(path);
	}
	/* shared so that the parent learns the region's address */
	uint64_t **region = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (region == MAP_FAILED)
		return -ENOMEM;
	fflush(NULL);
	pid_t pid = fork();
	if (pid == 0)
		child(dir, size, procs, region);
	snprintf(path, sizeof(path), "%s/ready", dir);
	log_info("bench engine: filling %s in pid %d (%u process%s)", fmt_bytes(size, b1, sizeof(b1)), pid, procs,
		 procs > 1 ? "es" : "");
	while (access(path, F_OK) < 0) {
		if (waitpid(pid, NULL, WNOHANG) == pid) {
			log_err("bench engine: the process died while filling its memory");
			r = -ECHILD;
			goto out;
		}
		usleep(2000);
	}
	uintptr_t addr = (uintptr_t)*region;
	if (comparisons && (r = compare(dir, pid, addr, size, c)) < 0)
		goto out_kill;

	/* dump (after the comparisons: --kill ends the process) */
	struct store *s = NULL;
	struct store_snap *w = NULL;
	struct engine_dump_stats st = { 0 };
	/* stop-and-copy, as its figures were taken: ckpt bench freeze compares it with pre-copy */
	struct engine_dump_opts dopts = { .after = after, .stats = &st, .no_precopy = true };
	r = store_open_dir(store_dir, &s);
	if (r >= 0)
		r = store_snap_create(s, name, 0, &w);
	if (r >= 0)
		r = engine_dump(pid, w, &dopts);
	store_snap_close(w);
	if (r < 0) {
		log_err("bench engine: dump failed: %s", tools_reason(r));
		store_close(s);
		goto out_kill;
	}
	c->frozen_ns = st.frozen_ns;
	c->dump_ns = st.total_ns;
	c->saved = st.memory_bytes;
	c->processes = st.processes;

	/* restore, once the originals are gone (the root's session) */
	kill(-pid, SIGKILL);
	reap_all();
	struct store_snap *rs = NULL;
	/* what `ckpt restore` adds by default: every file hashed against
	 * the manifest before anything runs */
	uint64_t t0 = now_ns();
	r = store_snap_open(s, name, STORE_OPEN_VERIFY, &rs);
	c->verify_ns = now_ns() - t0;
	store_snap_close(rs);
	rs = NULL;
	if (r < 0) {
		log_err("bench engine: verify failed: %s", tools_reason(r));
		store_close(s);
		goto out;
	}
	r = restore_checked(dir, s, name, false, &c->restore_ns, NULL);
	if (r >= 0 && lazy)
		r = restore_checked(dir, s, name, true, &c->lazy_run_ns, &c->lazy_load_ns);
	store_close(s);
	if (r < 0)
		goto out;
	r = 0;
	goto out;
out_kill:
	kill(-pid, SIGKILL);
	reap_all();
out:
	munmap(region, 4096);
	return r;
}

static void report(const struct cycle *c, uint64_t size, enum engine_after after)
{
	printf("  %-44s %9.3f s%s\n", "frozen (dump, process stopped)", c->frozen_ns / 1e9,
	       after == ENGINE_AFTER_KILL ? "  (--kill: until durable)" : "");
	line("dump (stop to durable snapshot)", c->dump_ns, size);
	line("restore (read to running)", c->restore_ns, size);
	line("verify (hash check, ckpt restore's default)", c->verify_ns, size);
	if (c->lazy_load_ns) {
		line("lazy restore: read to running", c->lazy_run_ns, size);
		line("lazy restore: read to all loaded", c->lazy_load_ns, size);
	}
}

int bench_engine(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "size", required_argument, NULL, 's' },
		{ "procs", required_argument, NULL, 'p' },
		{ "dir", required_argument, NULL, 'd' },
		{ "keep", no_argument, NULL, 'k' },
		{ "kill", no_argument, NULL, 'K' },
		{ "lazy", no_argument, NULL, 'l' },
		{ "help", no_argument, NULL, 'h' },
		{},
	};
	uint64_t size = 2ull << 30;
	unsigned procs = 1;
	const char *base = "/var/tmp";
	bool keep = false, lazy = false;
	enum engine_after after = ENGINE_AFTER_RUN;
	int c, rc = EXIT_FAIL;

	optind = 1;
	while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (c) {
		case 's':
			if (parse_size(optarg, &size) < 0) {
				fprintf(stderr, "ckpt bench engine: bad size '%s'\n", optarg);
				return EXIT_USAGE;
			}
			break;
		case 'p': {
			uint64_t v;
			if (parse_u64(optarg, &v) < 0 || v < 1 || v > 64) {
				fprintf(stderr, "ckpt bench engine: --procs takes 1 to 64, not '%s'\n", optarg);
				return EXIT_USAGE;
			}
			procs = (unsigned)v;
			break;
		}
		case 'd':
			base = optarg;
			break;
		case 'k':
			keep = true;
			break;
		case 'K':
			after = ENGINE_AFTER_KILL;
			break;
		case 'l':
			lazy = true;
			break;
		case 'h':
			printf("Usage: ckpt bench engine [--size 2G] [--procs N] [--dir DIR] [--keep] [--kill] [--lazy]\n"
			       "Dumps and restores a process with SIZE resident (mixed content) to a\n"
			       "snapshot directory in DIR (default /var/tmp); compares with\n"
			       "process_vm_readv, write+fsync and dd of the same bytes. Needs root.\n"
			       "--procs N then does the same with a tree of N processes sharing SIZE\n"
			       "(shared anonymous memory) and prints both, with the ratio of their\n"
			       "frozen times.\n"
			       "--kill dumps as `ckpt dump --kill` does: frozen until durable, no\n"
			       "copy of the memory in RAM.\n"
			       "--lazy also restores the snapshot of one process lazily (ckpt restore\n"
			       "--lazy): the time until it runs and until all its memory is loaded.\n");
			return EXIT_OK;
		default:
			return EXIT_USAGE;
		}
	}

	char dir[PATH_MAX];
	snprintf(dir, sizeof(dir), "%s/ckptfs-bench-XXXXXX", base);
	if (!mkdtemp(dir)) {
		log_err_errno(negerrno(), "cannot create a directory in %s", base);
		return EXIT_FAIL;
	}
	char store_dir[PATH_MAX + 16], b1[32], b2[32];
	snprintf(store_dir, sizeof(store_dir), "%s/store", dir);
	mkdir(store_dir, 0700);
	prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);

	struct cycle one = { 0 }, tree = { 0 };
	if (cycle(dir, store_dir, "bench", size, 1, after, true, lazy, &one) < 0)
		goto out;
	if (procs > 1 && cycle(dir, store_dir, "bench-tree", size, procs, after, false, false, &tree) < 0)
		goto out;

	printf("ckpt bench engine: %s resident (%s saved), snapshot in %s\n",
	       fmt_bytes(size, b1, sizeof(b1)), fmt_bytes(one.saved, b2, sizeof(b2)), store_dir);
	report(&one, size, after);
	line("process_vm_readv, 16 MiB pieces", one.readv_ns, size);
	line("write + fsync of the same bytes", one.write_ns, size);
	if (one.dd_ns)
		line("dd if=/dev/zero bs=16M conv=fsync", one.dd_ns, size);
	printf("  restored process: memory checksum verified\n");
	if (procs > 1) {
		printf("a tree of %u processes sharing those %s (%s saved, once):\n", procs,
		       fmt_bytes(size, b1, sizeof(b1)), fmt_bytes(tree.saved, b2, sizeof(b2)));
		report(&tree, size, after);
		printf("  %-44s %9.2f\n", "frozen, tree / one process",
		       one.frozen_ns ? tree.frozen_ns / (double)one.frozen_ns : 0);
		printf("  restored processes: memory checksum verified by each of the %u\n", procs);
	}
	rc = EXIT_OK;
out:
	if (!keep)
		rm_rf(dir);
	return rc;
}
