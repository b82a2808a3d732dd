/*
 * ckpt bench store: how fast the chunk store takes in and gives back
 * memory-like data, measured beside this machine's memcpy, SHA-256 and
 * zstd -1 of the same bytes, so that each figure can be judged against
 * what the machine can do at all. docs/PERFORMANCE.md says how to read it.
 */
#include <openssl/evp.h>
#include <pthread.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <zstd.h>

#include "common/common.h"
#include "store/store.h"
#include "tools/tools-int.h"

#define PIECE (8u << 20) /* bytes per store_file_pwrite / pread */

struct opts {
	uint64_t size;
	unsigned threads;
	int level;
	const char *dir;
	bool keep;
};

static void usage(FILE *out)
{
	fprintf(out,
		"Usage: ckpt bench store [--size N] [--threads N] [--level N] [--dir DIR] [--keep]\n"
		"\n"
		"Makes N bytes of memory-like data in RAM (a quarter zero pages, a quarter\n"
		"repetitive text, half random bytes, in runs of 1-16 pages) and measures:\n"
		"  memcpy, SHA-256 (16 KiB blocks) and zstd -1 of the same bytes, one thread;\n"
		"  ingest into a fresh chunk store (one snapshot, one file per thread,\n"
		"    commit and fsync included)                     target >= 1 GB/s;\n"
		"  ingest of the same data again                    target >= 3 GB/s, 0 new bytes;\n"
		"  ingest after 1%% of the pages changed at random   target <= 5%% of the first's bytes;\n"
		"  read back of the first snapshot, checked         target >= 1.5 GB/s;\n"
		"  stored size against the input.\n"
		"\n"
		"Options:\n"
		"  --size N      bytes of data, with K, M or G (default 1G)\n"
		"  --threads N   writer and reader threads (default 2)\n"
		"  --level N     zstd level of the store (default 1)\n"
		"  --dir DIR     where the temporary store goes (default /var/tmp)\n"
		"  --keep        keep the store afterwards\n");
}

static int parse_size(const char *s, uint64_t *ret)
{
	char buf[64];
	size_t n = strlen(s);
	uint64_t mul = 1, v;

	if (!n || n >= sizeof(buf))
		return -EINVAL;
	memcpy(buf, s, n + 1);
	switch (buf[n - 1]) {
	case 'k': case 'K': mul = 1ull << 10; break;
	case 'm': case 'M': mul = 1ull << 20; break;
	case 'g': case 'G': mul = 1ull << 30; break;
	default: break;
	}
	if (mul > 1)
		buf[n - 1] = 0;
	if (parse_u64(buf, &v) < 0 || v > UINT64_MAX / mul)
		return -EINVAL;
	*ret = v * mul;
	return 0;
}

static double secs_since(uint64_t t0)
{
	return (double)(now_ns() - t0) / 1e9;
}

/* CPU seconds this process has used, all threads: on a shared machine the
 * wall clock depends on the neighbours, this does not. */
static double sys_secs;

static double cpu_now(void)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	sys_secs = (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
	return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 + sys_secs;
}

static double gbps(uint64_t bytes, double s)
{
	return s > 0 ? (double)bytes / s / 1e9 : 0;
}

/* ---- data ------------------------------------------------------------------ */

static uint64_t rng(uint64_t *s)
{
	uint64_t x = *s += 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

static void fill_random(uint8_t *p, size_t len, uint64_t *seed)
{
	for (size_t i = 0; i + 8 <= len; i += 8) {
		uint64_t v = rng(seed);
		memcpy(p + i, &v, 8);
	}
}

/* Like a process's memory: runs of zero pages, of text (logs, strings,
 * configuration) and of high-entropy data (compressed or encrypted
 * buffers, model weights), each run 1-16 pages. */
static void make_data(uint8_t *p, uint64_t size, uint64_t seed, uint64_t counts[3])
{
	static const char *const verbs[] = { "GET", "PUT", "POST", "DELETE" };
	size_t pool_len = 256 * 1024, o = 0;
	char *pool = malloc(pool_len + 4096);
	uint64_t s2 = seed ^ 0x1234;

	/* Repetitive: 64 distinct log lines, repeated in random order. */
	char lines[64][128];
	for (int i = 0; i < 64; i++) {
		uint64_t r = rng(&s2);
		snprintf(lines[i], sizeof(lines[i]), "2026-11-24T01:%02u:%02u worker-%u %s /api/v1/items/%u 200 %u bytes\n",
			 (unsigned)(r % 60), (unsigned)(r >> 8) % 60, (unsigned)(r >> 36) % 8, verbs[(r >> 40) % 4],
			 (unsigned)(r >> 42) % 1000, (unsigned)(r >> 20) % 65536);
	}
	while (o < pool_len) {
		const char *l = lines[rng(&s2) % 64];
		size_t k = strlen(l);
		memcpy(pool + o, l, k);
		o += k;
	}
	memset(counts, 0, 3 * sizeof(*counts));
	for (uint64_t pg = 0; pg * 4096 < size;) {
		uint64_t r = rng(&seed);
		unsigned kind = (unsigned)(r % 4), run = 1 + (unsigned)((r >> 8) % 16);
		kind = kind == 3 ? 2 : kind; /* 0 zero, 1 text, 2 random (twice as likely) */
		for (unsigned i = 0; i < run && pg * 4096 < size; i++, pg++) {
			uint8_t *q = p + pg * 4096;
			size_t n = (size_t)MIN((uint64_t)4096, size - pg * 4096);
			counts[kind] += n;
			if (kind == 0)
				memset(q, 0, n);
			else if (kind == 1)
				memcpy(q, pool + (rng(&seed) % (pool_len - 4096)), n);
			else
				fill_random(q, n, &seed);
		}
	}
	free(pool);
}

/* ---- store runs --------------------------------------------------------------- */

struct job {
	struct store_snap *snap;
	const uint8_t *data;
	uint8_t *out;
	uint64_t off, len;
	char path[32];
	int r;
	char err[512];
};

static void *write_job(void *p)
{
	struct job *j = p;
	struct store_file *f;

	j->r = store_file_create(j->snap, j->path, &f);
	if (j->r < 0)
		goto out;
	for (uint64_t o = 0; o < j->len && j->r >= 0; o += PIECE)
		j->r = store_file_pwrite(f, j->data + j->off + o, (size_t)MIN((uint64_t)PIECE, j->len - o), o);
	int q = store_file_close(f);
	if (j->r >= 0)
		j->r = q;
out:
	if (j->r < 0)
		snprintf(j->err, sizeof(j->err), "%s: %s", j->path, *err_msg() ? err_msg() : strerror(-j->r));
	return NULL;
}

static void *read_job(void *p)
{
	struct job *j = p;
	struct store_file *f;

	j->r = store_file_open(j->snap, j->path, &f);
	if (j->r < 0)
		goto out;
	for (uint64_t o = 0; o < j->len; o += PIECE) {
		size_t n = (size_t)MIN((uint64_t)PIECE, j->len - o);
		ssize_t got = store_file_pread(f, j->out + j->off + o, n, o);
		if (got != (ssize_t)n) {
			j->r = got < 0 ? (int)got : -EIO;
			break;
		}
	}
	store_file_close(f);
out:
	if (j->r < 0)
		snprintf(j->err, sizeof(j->err), "%s: %s", j->path, *err_msg() ? err_msg() : strerror(-j->r));
	return NULL;
}

/* Splits the data in `threads` files, block aligned. */
static void split(struct job *jobs, unsigned threads, uint64_t size)
{
	uint64_t per = ALIGN_UP((size + threads - 1) / threads, (uint64_t)STORE_BLOCK_SIZE), o = 0;
	for (unsigned i = 0; i < threads; i++) {
		jobs[i].off = o;
		jobs[i].len = o < size ? MIN(per, size - o) : 0;
		o += jobs[i].len;
		snprintf(jobs[i].path, sizeof(jobs[i].path), "memory/part%u", i);
	}
}

static int run_jobs(struct job *jobs, unsigned threads, void *(*fn)(void *))
{
	pthread_t th[threads];
	int r = 0;
	for (unsigned i = 0; i < threads; i++)
		if (pthread_create(&th[i], NULL, fn, &jobs[i]) != 0)
			return -EAGAIN;
	for (unsigned i = 0; i < threads; i++) {
		pthread_join(th[i], NULL);
		if (jobs[i].r < 0 && !r) {
			r = jobs[i].r;
			log_err("%s", jobs[i].err);
		}
	}
	return r;
}

/* One snapshot, one file per thread; the clock runs until commit returns. */
static int ingest(struct store *s, const char *name, const uint8_t *data, const struct opts *o, double *secs,
		  double *commit_secs)
{
	struct job jobs[o->threads];
	struct store_snap *w;
	uint64_t t0 = now_ns();
	int r;

	memset(jobs, 0, sizeof(jobs));
	r = store_snap_create(s, name, 0, &w);
	if (r < 0)
		return log_err_errno(r, "snapshot %s: %s", name, err_msg());
	split(jobs, o->threads, o->size);
	for (unsigned i = 0; i < o->threads; i++) {
		jobs[i].snap = w;
		jobs[i].data = data;
	}
	r = run_jobs(jobs, o->threads, write_job);
	uint64_t t1 = now_ns();
	if (r >= 0) {
		r = store_snap_commit(w);
		*commit_secs = secs_since(t1);
		if (r < 0)
			log_err_errno(r, "snapshot %s: commit: %s", name, err_msg());
	}
	*secs = secs_since(t0);
	store_snap_close(w);
	return r;
}

static int read_back(struct store *s, const char *name, uint8_t *out, const struct opts *o, double *secs)
{
	struct job jobs[o->threads];
	struct store_snap *rs;
	uint64_t t0 = now_ns();
	int r;

	memset(jobs, 0, sizeof(jobs));
	r = store_snap_open(s, name, 0, &rs);
	if (r < 0)
		return log_err_errno(r, "snapshot %s: %s", name, err_msg());
	split(jobs, o->threads, o->size);
	for (unsigned i = 0; i < o->threads; i++) {
		jobs[i].snap = rs;
		jobs[i].out = out;
	}
	r = run_jobs(jobs, o->threads, read_job);
	*secs = secs_since(t0);
	store_snap_close(rs);
	return r;
}

struct info_q {
	const char *name;
	struct store_snap_info info;
};

static int info_cb(const struct store_snap_info *i, void *ud)
{
	struct info_q *q = ud;
	if (!strcmp(i->name, q->name)) {
		q->info = *i;
		q->info.name = q->name;
	}
	return 0;
}

static uint64_t snap_new_bytes(struct store *s, const char *name)
{
	struct info_q q = { .name = name };
	store_foreach_snap(s, name, info_cb, &q);
	return q.info.stored;
}

static void machine(void)
{
	struct utsname u;
	char line[256], model[256] = "?";
	FILE *f = fopen("/proc/cpuinfo", "re");
	while (f && fgets(line, sizeof(line), f))
		if (!strncmp(line, "model name", 10)) {
			char *c = strchr(line, ':');
			if (c) {
				snprintf(model, sizeof(model), "%s", c + 2);
				model[strcspn(model, "\n")] = 0;
			}
			break;
		}
	if (f)
		fclose(f);
	uname(&u);
	printf("machine: %s, %ld cores online, Linux %s\n", model, sysconf(_SC_NPROCESSORS_ONLN), u.release);
}

static void why(const char *what, uint64_t size, double wall, double cpu, double sys, double commit, unsigned used,
		const char *work)
{
	double bound = cpu > 0 ? (double)size / (cpu / used) / 1e9 : 0;
	printf("%s misses: it used %.2f CPU-s (%.0f%% in the kernel); spread over %u busy threads that allows\n"
	       "  %.2f GB/s. ",
	       what, cpu, cpu > 0 ? 100 * sys / cpu : 0, used, bound);
	if (wall > 1.3 * cpu / used)
		printf("The clock ran %.2f s, longer than the CPU work: the cores were shared with other\n"
		       "  processes, or it waited for the disk%s.\n",
		       wall, commit > 0 ? " or the commit" : "");
	else
		printf("It is CPU bound: %s.\n", work);
}

static void row(const char *what, const char *figure, const char *target, const char *verdict)
{
	printf("%-34s %-36s %-20s %s\n", what, figure, target, verdict);
}

int bench_store(int argc, char **argv)
{
	struct opts o = { .size = 1ull << 30, .threads = 2, .level = 1, .dir = "/var/tmp" };
	char path[4096], fig[64], b1[32], b2[32];
	uint8_t *data = NULL, *copy = NULL;
	struct store *s = NULL;
	uint64_t counts[3], t0, v;
	int ret = EXIT_FAIL, r;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
		if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			usage(stdout);
			return EXIT_OK;
		} else if (!strcmp(a, "--keep")) {
			o.keep = true;
			continue;
		}
		if (!val) {
			fprintf(stderr, "ckpt bench store: '%s' needs a value; see --help\n", a);
			return EXIT_USAGE;
		}
		i++;
		if (!strcmp(a, "--size") && parse_size(val, &o.size) == 0 && o.size >= STORE_BLOCK_SIZE) {
			o.size = ALIGN_DOWN(o.size, (uint64_t)STORE_PAGE_SIZE);
		} else if (!strcmp(a, "--threads") && parse_u64(val, &v) == 0 && v >= 1 && v <= 64) {
			o.threads = (unsigned)v;
		} else if (!strcmp(a, "--level") && val) {
			char *end;
			long l = strtol(val, &end, 10);
			if (*end || l < -7 || l > 22 || l == 0) {
				fprintf(stderr, "ckpt bench store: bad level '%s'\n", val);
				return EXIT_USAGE;
			}
			o.level = (int)l;
		} else if (!strcmp(a, "--dir")) {
			o.dir = val;
		} else {
			fprintf(stderr, "ckpt bench store: bad option '%s %s'; see --help\n", a, val);
			return EXIT_USAGE;
		}
	}

	snprintf(path, sizeof(path), "%s/ckpt-bench-store-XXXXXX", o.dir);
	if (!mkdtemp(path)) {
		log_err("cannot make a directory in %s: %m", o.dir);
		return EXIT_FAIL;
	}
	data = malloc(o.size);
	copy = malloc(o.size);
	if (!data || !copy) {
		log_err("cannot allocate 2 x %s", fmt_bytes(o.size, b1, sizeof(b1)));
		goto out;
	}
	machine();
	make_data(data, o.size, 42, counts);
	printf("data: %s memory-like (%.0f%% zero pages, %.0f%% text, %.0f%% random); store in %s; %u threads; zstd level %d\n\n",
	       fmt_bytes(o.size, b1, sizeof(b1)), 100.0 * (double)counts[0] / (double)o.size,
	       100.0 * (double)counts[1] / (double)o.size, 100.0 * (double)counts[2] / (double)o.size, path,
	       o.threads, o.level);

	/* The machine, on the same bytes. */
	memset(copy, 1, o.size); /* fault the pages in: time the copy only */
	t0 = now_ns();
	memcpy(copy, data, o.size);
	double t_memcpy = secs_since(t0);

	uint64_t sha_bytes = MIN(o.size, 256ull << 20);
	uint8_t md[EVP_MAX_MD_SIZE];
	unsigned mdlen;
	EVP_MD *sha = EVP_MD_fetch(NULL, "SHA256", NULL);
	EVP_MD_CTX *mc = EVP_MD_CTX_new();
	t0 = now_ns();
	for (uint64_t off = 0; sha && mc && off < sha_bytes; off += STORE_BLOCK_SIZE) {
		EVP_DigestInit_ex(mc, sha, NULL);
		EVP_DigestUpdate(mc, data + off, STORE_BLOCK_SIZE);
		EVP_DigestFinal_ex(mc, md, &mdlen);
	}
	double t_sha = secs_since(t0);
	EVP_MD_CTX_free(mc);
	EVP_MD_free(sha);

	size_t zcap = ZSTD_compressBound(1u << 20);
	uint8_t *zout = malloc(zcap);
	ZSTD_CCtx *zc = ZSTD_createCCtx();
	uint64_t zbytes = 0;
	t0 = now_ns();
	for (uint64_t off = 0; zout && zc && off < o.size; off += 1u << 20) {
		size_t n = ZSTD_compressCCtx(zc, zout, zcap, data + off, (size_t)MIN((uint64_t)1u << 20, o.size - off), 1);
		zbytes += ZSTD_isError(n) ? 0 : n;
	}
	double t_zstd = secs_since(t0);
	ZSTD_freeCCtx(zc);
	free(zout);

	/* The store. */
	struct store_options so = { .zstd_level = o.level };
	snprintf(path + strlen(path), sizeof(path) - strlen(path), "/store");
	r = store_open(path, &so, &s);
	if (r < 0) {
		log_err("store %s: %s", path, err_msg());
		goto out;
	}
	double cpu0, sys0, t_in1 = 0, t_in2 = 0, t_in3 = 0, t_read = 0, c_in1 = 0, c_in2 = 0, c_in3 = 0;
	cpu0 = cpu_now();
	sys0 = sys_secs;
	if (ingest(s, "first", data, &o, &t_in1, &c_in1) < 0)
		goto out;
	double cpu1 = cpu_now() - cpu0, sys1 = sys_secs - sys0;
	uint64_t st1 = snap_new_bytes(s, "first");
	cpu0 = cpu_now();
	sys0 = sys_secs;
	if (ingest(s, "again", data, &o, &t_in2, &c_in2) < 0)
		goto out;
	double cpu2 = cpu_now() - cpu0, sys2 = sys_secs - sys0;
	uint64_t st2 = snap_new_bytes(s, "again");

	uint64_t pages = o.size / STORE_PAGE_SIZE, nchg = MAX(pages / 100, (uint64_t)1), seed = 7;
	for (uint64_t i = 0; i < nchg; i++) {
		/* A program's writes: a few words somewhere in the page. */
		uint64_t pg = rng(&seed) % pages, val = rng(&seed);
		memcpy(data + pg * STORE_PAGE_SIZE + (rng(&seed) % (STORE_PAGE_SIZE / 8)) * 8, &val, 8);
	}
	cpu0 = cpu_now();
	sys0 = sys_secs;
	if (ingest(s, "changed", data, &o, &t_in3, &c_in3) < 0)
		goto out;
	double cpu3 = cpu_now() - cpu0, sys3 = sys_secs - sys0;
	uint64_t st3 = snap_new_bytes(s, "changed");

	/* Read back "changed" (what data holds now) and check every byte. */
	memset(copy, 0, o.size);
	cpu0 = cpu_now();
	sys0 = sys_secs;
	if (read_back(s, "changed", copy, &o, &t_read) < 0)
		goto out;
	double cpur = cpu_now() - cpu0, sysr = sys_secs - sys0;
	bool same = !memcmp(copy, data, o.size);

	struct store_stats sst;
	store_stats(s, &sst);

	double g_memcpy = gbps(o.size, t_memcpy), g_sha = gbps(sha_bytes, t_sha), g_zstd = gbps(o.size, t_zstd);
	double g1 = gbps(o.size, t_in1), g2 = gbps(o.size, t_in2), g3 = gbps(o.size, t_in3), gr = gbps(o.size, t_read);
	double pct = st1 ? 100.0 * (double)st3 / (double)st1 : 0;
	bool miss1 = g1 < 1.0, miss2 = g2 < 3.0 || st2, miss3 = pct > 5.0, missr = gr < 1.5 || !same;

	row("WHAT", "FIGURE", "TARGET", "");
	snprintf(fig, sizeof(fig), "%.2f GB/s", g_memcpy);
	row("memcpy (1 thread)", fig, "", "");
	snprintf(fig, sizeof(fig), "%.2f GB/s", g_sha);
	row("SHA-256, 16 KiB blocks (1 thread)", fig, "", "");
	snprintf(fig, sizeof(fig), "%.2f GB/s, %.1f%% size", g_zstd, 100.0 * (double)zbytes / (double)o.size);
	row("zstd -1, 1 MiB pieces (1 thread)", fig, "", "");
	snprintf(fig, sizeof(fig), "%.2f GB/s (%.2f s, commit %.2f)", g1, t_in1, c_in1);
	row("ingest, fresh store", fig, ">= 1 GB/s", miss1 ? "MISS" : "ok");
	snprintf(fig, sizeof(fig), "%.2f s (%.2f system), %.2f GB/CPU-s", cpu1, sys1, gbps(o.size, cpu1));
	row("  CPU time", fig, "", "");
	snprintf(fig, sizeof(fig), "%.2f GB/s (commit %.2f s), %s new", g2, c_in2, fmt_bytes(st2, b1, sizeof(b1)));
	row("ingest, same data again", fig, ">= 3 GB/s, 0 B new", miss2 ? "MISS" : "ok");
	snprintf(fig, sizeof(fig), "%.2f s (%.2f system), %.2f GB/CPU-s", cpu2, sys2, gbps(o.size, cpu2));
	row("  CPU time", fig, "", "");
	snprintf(fig, sizeof(fig), "%.2f%% (%s)", pct, fmt_bytes(st3, b1, sizeof(b1)));
	row("ingest, 1% of pages changed: new", fig, "<= 5% of first", miss3 ? "MISS" : "ok");
	snprintf(fig, sizeof(fig), "%.2f GB/s (commit %.2f s)", g3, c_in3);
	row("  its speed", fig, "", "");
	snprintf(fig, sizeof(fig), "%.2f s (%.2f system), %.2f GB/CPU-s", cpu3, sys3, gbps(o.size, cpu3));
	row("  CPU time", fig, "", "");
	snprintf(fig, sizeof(fig), "%.2f GB/s%s", gr, same ? "" : " WRONG BYTES");
	row("read back, checked", fig, ">= 1.5 GB/s", missr ? "MISS" : "ok");
	snprintf(fig, sizeof(fig), "%.2f s (%.2f system), %.2f GB/CPU-s", cpur, sysr, gbps(o.size, cpur));
	row("  CPU time", fig, "", "");
	snprintf(fig, sizeof(fig), "%s, %.1f%%", fmt_bytes(st1, b1, sizeof(b1)), 100.0 * (double)st1 / (double)o.size);
	row("stored by the first ingest", fig, "", "");
	printf("\n%u threads write one snapshot, one file each; times include commit (pack fsync,\n"
	       "synced index batch). Packs are written with O_DIRECT where the filesystem allows, so\n"
	       "the read back (%u threads, one file each) reads them from the disk.\n"
	       "Pack files: %s in %" PRIu64 " packs.\n",
	       o.threads, o.threads, fmt_bytes(sst.pack_bytes, b2, sizeof(b2)), sst.packs);

	/* Why a figure misses, from what this run showed: the CPU time says
	 * whether the work itself is too much for these cores, or whether the
	 * clock ran while it waited (disk, other processes). */
	long cores = sysconf(_SC_NPROCESSORS_ONLN);
	unsigned used = (unsigned)MIN((long)o.threads, cores);
	if (miss1)
		why("ingest", o.size, t_in1, cpu1, sys1, c_in1, used,
		    "hashing every block with data (SHA-256), zstd of the compressible ones, the writes");
	if (miss2)
		why("re-ingest", o.size, t_in2, cpu2, sys2, c_in2, used,
		    "hashing every block with data: SHA-256 is all that is left to do");
	if (st2)
		printf("re-ingest WROTE %s OF NEW CHUNKS: a bug.\n", fmt_bytes(st2, b1, sizeof(b1)));
	if (miss3)
		printf("1%% change misses: each changed 4 KiB page costs its whole 16 KiB chunk; %" PRIu64
		       " pages changed.\n", nchg);
	if (!same)
		printf("read back RETURNED OTHER BYTES than were written: a bug.\n");
	else if (missr)
		why("read back", o.size, t_read, cpur, sysr, 0, used,
		    "reading the packs, checksums, zstd decompression, copies");
	ret = same ? EXIT_OK : EXIT_FAIL;
out:
	store_close(s);
	if (!o.keep) {
		char *slash = strrchr(path, '/');
		if (slash && !strcmp(slash, "/store"))
			*slash = 0;
		rm_rf(path);
	} else {
		printf("store kept in %s\n", path);
	}
	free(data);
	free(copy);
	return ret;
}
