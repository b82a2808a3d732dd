/*
 * Memory of a stopped process: its areas (from /proc/PID/maps), which
 * pages of each to save, a copy of those pages in our RAM, and the `maps`
 * and `memory/<start>-<end>` files of the snapshot (`gpu/hbm/<start>-<end>`
 * for the areas a CUDA checkpoint step made: device memory, stored there
 * instead, split from the areas the kernel merged them with).
 *
 * Which pages: PAGEMAP_SCAN (Linux 6.7+) walks the page tables, so huge
 * unpopulated reservations cost nothing. Private anonymous areas save
 * present and swapped pages but those mapped to the shared zero page;
 * private file mappings save only pages that are anonymous copies (not
 * PAGE_IS_FILE): clean pages come back from the file; shared anonymous and
 * memfd areas save the data ranges of their tmpfs file (SEEK_DATA over
 * /proc/PID/map_files, so pages the process never touched are not read);
 * shared file mappings save nothing (the file is the content).
 *
 * Reading: process_vm_readv in large pieces for readable areas;
 * /proc/PID/mem (which may read PROT_NONE areas) for the others.
 */
#include <fcntl.h>
#include <linux/fs.h>
#include <pthread.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>

#include "engine/engine-int.h"

/* PAGEMAP_SCAN, declared here: the build machine's headers predate it. */
struct pm_scan_arg_ {
	uint64_t size, flags, start, end, walk_end, vec, vec_len, max_pages;
	uint64_t category_inverted, category_mask, category_anyof_mask, return_mask;
};
struct page_region_ {
	uint64_t start, end, categories;
};
#define PAGEMAP_SCAN_ _IOWR('f', 16, struct pm_scan_arg_)
#define PAGE_IS_WRITTEN_ (1ull << 1)
#define PAGE_IS_FILE_ (1ull << 2)
#define PAGE_IS_PRESENT_ (1ull << 3)
#define PAGE_IS_SWAPPED_ (1ull << 4)
#define PAGE_IS_PFNZERO_ (1ull << 5)

static const char *const kind_names[_VMA_KIND_MAX] = {
	[VMA_ANON] = "anon",
	[VMA_FILE_PRIVATE] = "file-private",
	[VMA_FILE_SHARED] = "file-shared",
	[VMA_SHMEM] = "shmem",
	[VMA_DELETED] = "deleted",
	[VMA_VVAR] = "vvar",
	[VMA_VVAR_VCLOCK] = "vvar_vclock",
	[VMA_VDSO] = "vdso",
	[VMA_VSYSCALL] = "vsyscall",
	[VMA_AIO] = "aio",
};

const char *vma_kind_name(enum vma_kind k)
{
	return k < _VMA_KIND_MAX ? kind_names[k] : "?";
}

void vmas_free(struct vma *v, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(v[i].path);
		free(v[i].runs);
		if (v[i].data)
			munmap(v[i].data, v[i].saved);
	}
	free(v);
}

static bool ends_with(const char *s, const char *suffix)
{
	size_t a = strlen(s), b = strlen(suffix);
	return a >= b && !strcmp(s + a - b, suffix);
}

/* Parses "start-end perms offset maj:min inode" into v; returns the
 * position after the inode, or NULL. */
static const char *parse_head(const char *l, struct vma *v)
{
	unsigned long a, b, off, ino;
	char perms[5];
	int n = 0;
	if (sscanf(l, "%lx-%lx %4s %lx %x:%x %lu%n", &a, &b, perms, &off, &v->dev_major,
		   &v->dev_minor, &ino, &n) != 7 || a >= b || (a | b) & 4095)
		return NULL;
	v->start = a;
	v->end = b;
	v->pgoff = off;
	v->ino = ino;
	v->prot = (perms[0] == 'r' ? PROT_READ : 0) | (perms[1] == 'w' ? PROT_WRITE : 0) |
		  (perms[2] == 'x' ? PROT_EXEC : 0);
	v->shared = perms[3] == 's';
	return l + n;
}

static int classify(struct vma *v)
{
	const char *p = v->path;
	if (!strcmp(p, "[vvar]"))
		v->kind = VMA_VVAR;
	else if (!strcmp(p, "[vvar_vclock]"))
		v->kind = VMA_VVAR_VCLOCK;
	else if (!strcmp(p, "[vdso]"))
		v->kind = VMA_VDSO;
	else if (!strcmp(p, "[vsyscall]"))
		v->kind = VMA_VSYSCALL;
	else if (!*p || !strcmp(p, "[heap]") || !strcmp(p, "[stack]") || !strncmp(p, "[anon:", 6)) {
		v->kind = v->shared ? VMA_SHMEM : VMA_ANON;
		v->growsdown = !strcmp(p, "[stack]");
	} else if (aio_is_ring(v)) {
		v->kind = VMA_AIO;
	} else if (p[0] == '/') {
		bool deleted = ends_with(p, " (deleted)");
		if (v->shared)
			v->kind = deleted ? VMA_SHMEM : VMA_FILE_SHARED;
		else
			v->kind = deleted ? VMA_DELETED : VMA_FILE_PRIVATE;
	} else {
		return err_set(-EOPNOTSUPP, "memory area %lx-%lx '%s': kind not supported",
			       (unsigned long)v->start, (unsigned long)v->end, p);
	}
	return 0;
}

/* Splits text into lines and hands each to parse_line with a fresh, zeroed
 * area (prev: the one before, or NULL). The areas grow one array; on any
 * failure everything parsed so far is freed. */
static int maps_parse_lines(const char *text, int (*parse_line)(char *l, struct vma *x, const struct vma *prev),
			    struct vma **ret, size_t *ret_n)
{
	struct vma *v = NULL;
	size_t n = 0;
	int r = 0;
	_cleanup_free_ char *copy = strdup(text);
	if (!copy)
		return -ENOMEM;
	for (char *l = copy, *nl; l && *l; l = nl) {
		nl = strchr(l, '\n');
		if (nl)
			*nl++ = 0;
		struct vma *nv = realloc(v, (n + 1) * sizeof(*v));
		if (!nv) {
			r = -ENOMEM;
			goto fail;
		}
		v = nv;
		memset(&v[n], 0, sizeof(*v));
		n++;
		r = parse_line(l, &v[n - 1], n > 1 ? &v[n - 2] : NULL);
		if (r < 0)
			goto fail;
	}
	*ret = v;
	*ret_n = n;
	return 0;
fail:
	vmas_free(v, n);
	return r;
}

static int proc_line(char *l, struct vma *x, const struct vma *prev)
{
	const char *rest = parse_head(l, x);
	if (!rest)
		return err_set(-EIO, "odd maps line '%.60s'", l);
	while (*rest == ' ')
		rest++;
	x->path = strdup(rest);
	if (!x->path)
		return -ENOMEM;
	return classify(x);
}

int maps_parse_proc(const char *text, struct vma **ret, size_t *ret_n)
{
	return maps_parse_lines(text, proc_line, ret, ret_n);
}

int maps_read(pid_t pid, struct vma **ret, size_t *ret_n)
{
	char path[64];
	_cleanup_free_ char *text = NULL;
	snprintf(path, sizeof(path), "/proc/%d/maps", pid);
	int r = read_file_full(path, &text, NULL);
	if (r < 0)
		return err_set(r, "pid %d: cannot read maps", pid);
	return maps_parse_proc(text, ret, ret_n);
}

void vma_file_name(const struct vma *v, char *buf, size_t len)
{
	snprintf(buf, len, "%s/%016lx-%016lx", v->hbm ? "gpu/hbm" : "memory", (unsigned long)v->start,
		 (unsigned long)v->end);
}

/* Where the ranges of hbm cut area v (strictly inside it), sorted, each
 * once, into cut (room for 2 * hbm->n); how many. */
static size_t hbm_cuts(const struct vma *v, const struct hbm_ranges *hbm, uint64_t *cut)
{
	size_t n = 0;
	for (size_t i = 0; i < hbm->n; i++)
		for (int k = 0; k < 2; k++) {
			uint64_t e = hbm->v[i][k];
			size_t j = 0;
			if (e <= v->start || e >= v->end)
				continue;
			while (j < n && cut[j] < e)
				j++;
			if (j < n && cut[j] == e)
				continue;
			memmove(cut + j + 1, cut + j, (n - j) * sizeof(*cut));
			cut[j] = e;
			n++;
		}
	return n;
}

/* An area the driver's checkpoint step may have made: plain private
 * anonymous memory that can be read or written ([heap] and [stack] grow
 * by themselves meanwhile; a PROT_NONE one only reserves addresses). */
static bool hbm_candidate(const struct vma *v)
{
	return v->kind == VMA_ANON && !v->shared && !v->growsdown && !v->path[0] && v->prot;
}

/* Splits img's areas at the edges of hbm's ranges and marks the pieces
 * inside one (vma->hbm), before anything is saved of them. The kernel
 * merges a mapping the step made with an adjacent one of the same flags,
 * so a range may be part of a larger area: split, each gpu/hbm/ file
 * holds device memory and nothing else, and memory/ none of it. (A
 * restore maps the pieces one by one and the kernel merges them again.) */
static int hbm_split(struct proc_image *img, const struct hbm_ranges *hbm)
{
	_cleanup_free_ uint64_t *cut = NULL;
	struct vma *nv;
	size_t extra = 0, n = 0;

	if (!hbm || !hbm->n)
		return 0;
	cut = calloc(2 * hbm->n, sizeof(*cut));
	if (!cut)
		return -ENOMEM;
	for (size_t i = 0; i < img->nvmas; i++)
		if (hbm_candidate(&img->vmas[i]))
			extra += hbm_cuts(&img->vmas[i], hbm, cut);
	nv = calloc(img->nvmas + extra, sizeof(*nv));
	if (!nv)
		return -ENOMEM;
	for (size_t i = 0; i < img->nvmas; i++) {
		const struct vma *v = &img->vmas[i];
		size_t nc = hbm_candidate(v) ? hbm_cuts(v, hbm, cut) : 0;
		for (size_t k = 0; k <= nc; k++) {
			struct vma *x = &nv[n];
			*x = *v;
			x->start = k ? cut[k - 1] : v->start;
			x->end = k < nc ? cut[k] : v->end;
			/* pgoff stays v's: /proc shows 0 for anonymous memory */
			x->path = strdup(v->path);
			if (!x->path) {
				vmas_free(nv, n);
				return -ENOMEM;
			}
			n++;
			for (size_t j = 0; j < hbm->n && hbm_candidate(v) && !x->hbm; j++)
				x->hbm = hbm->v[j][0] <= x->start && x->end <= hbm->v[j][1];
		}
	}
	/* nothing saved of them yet: only the paths to free */
	vmas_free(img->vmas, img->nvmas);
	img->vmas = nv;
	img->nvmas = n;
	return 0;
}

static int add_run(struct vma *v, uint64_t off, uint64_t len)
{
	if (v->nruns && v->runs[v->nruns - 1].off + v->runs[v->nruns - 1].len == off) {
		v->runs[v->nruns - 1].len += len;
	} else {
		struct mem_run *nr = realloc(v->runs, (v->nruns + 1) * sizeof(*nr));
		if (!nr)
			return -ENOMEM;
		v->runs = nr;
		v->runs[v->nruns++] = (struct mem_run){ off, len };
	}
	v->saved += len;
	return 0;
}

int vma_add_run(struct vma *v, uint64_t off, uint64_t len)
{
	return add_run(v, off, len);
}

/* The first page at or after p (and before e) whose byte in b is not x
 * (0 or 1), or e: eight at a time where it can. */
static uint64_t run_end(const uint8_t *b, uint64_t p, uint64_t e, uint8_t x)
{
	const uint64_t all = x ? 0x0101010101010101ull : 0;
	while (p < e && p % 8)
		if (b[p++] != x)
			return p - 1;
	for (uint64_t w; p + 8 <= e; p += 8) {
		memcpy(&w, b + p, 8);
		if (w != all)
			break;
	}
	while (p < e && b[p] == x)
		p++;
	return p;
}

/* Runs of the pages of [s, e) (addresses) valid in a pre-copied area's
 * mirror. */
static int add_valid_runs(struct vma *v, uint64_t s, uint64_t e)
{
	uint64_t end = (e - v->start) / 4096;
	for (uint64_t p = (s - v->start) / 4096; p < end;) {
		p = run_end(v->valid, p, end, 0);
		if (p == end)
			break;
		uint64_t q = run_end(v->valid, p, end, 1);
		int r = add_run(v, p * 4096, (q - p) * 4096);
		if (r < 0)
			return r;
		p = q;
	}
	return 0;
}

/* One region the short walk reported written, from `at` on: the valid
 * pages before it, then it, to be read again. */
static int add_written(struct vma *v, uint64_t *at, uint64_t s, uint64_t e)
{
	s = MAX(s, *at);
	if (e <= s)
		return 0;
	int r = add_valid_runs(v, *at, s);
	if (r < 0)
		return r;
	memset(v->valid + (s - v->start) / 4096, 0, (e - s) / 4096);
	*at = e;
	return add_run(v, s - v->start, e - s);
}

/* The pages of area v to save, from its page tables.
 *
 * A pre-copied area whose every populated page is in its mirror or
 * written since (v->complete, precopy.c) asks only for the written pages,
 * the kernel's short walk, which looks at one bit of each page table
 * entry (2-3 ms for 4 GiB here against 15-27 ms for the walk of every
 * entry's kind below). A page dropped since its copy (MADV_DONTNEED)
 * reads as written there and is read again: zeros. Saved: the valid
 * pages and the written. */
static int scan_pages(pid_t pid, int pm, struct vma *v)
{
	struct page_region_ regs[512];
	struct pm_scan_arg_ a = {
		.size = sizeof(a),
		.start = v->start,
		.end = v->end,
		.vec = (uintptr_t)regs,
		.vec_len = ARRAY_SIZE(regs),
		.category_anyof_mask = PAGE_IS_PRESENT_ | PAGE_IS_SWAPPED_,
		.return_mask = PAGE_IS_PRESENT_ | PAGE_IS_SWAPPED_,
	};
	uint64_t at = v->start;
	if (v->complete) {
		a.category_anyof_mask = 0;
		a.category_mask = a.return_mask = PAGE_IS_WRITTEN_;
	} else if (v->kind == VMA_FILE_PRIVATE) {
		/* a present page that is not a file page is a private copy */
		a.category_inverted = PAGE_IS_FILE_;
		a.category_mask = PAGE_IS_FILE_;
	} else {
		a.category_inverted = PAGE_IS_PFNZERO_;
		a.category_mask = PAGE_IS_PFNZERO_;
	}
	/* pre-copied: the same walk tells which pages were written since
	 * the last round */
	if (v->valid)
		a.return_mask |= PAGE_IS_WRITTEN_;
	while (a.start < v->end) {
		long k = ioctl(pm, PAGEMAP_SCAN_, &a);
		if (k < 0)
			return err_set(negerrno(), "pid %d: PAGEMAP_SCAN %lx-%lx: %m", pid,
				       (unsigned long)v->start, (unsigned long)v->end);
		for (long i = 0; i < k; i++) {
			uint64_t c = regs[i].categories;
			int r;
			if (v->complete) {
				r = add_written(v, &at, regs[i].start, regs[i].end);
			} else {
				if (v->valid && (c & PAGE_IS_WRITTEN_))
					memset(v->valid + (regs[i].start - v->start) / 4096, 0,
					       (regs[i].end - regs[i].start) / 4096);
				/* an unwritten page that reads as swapped is either
				 * swapped out after its copy (valid) or the marker
				 * of a page never touched, protected by the
				 * pre-copy (not valid: the first round copies every
				 * page really swapped): only the former are saved */
				if (v->valid && !(c & (PAGE_IS_PRESENT_ | PAGE_IS_WRITTEN_)))
					r = add_valid_runs(v, regs[i].start, regs[i].end);
				else
					r = add_run(v, regs[i].start - v->start, regs[i].end - regs[i].start);
			}
			if (r < 0)
				return r;
		}
		if (a.walk_end <= a.start)
			break;
		a.start = a.walk_end;
	}
	return v->complete ? add_valid_runs(v, at, v->end) : 0;
}

/* Data ranges of a shared memory area's tmpfs file. */
static int scan_shmem(pid_t pid, struct vma *v, int *ret_fd)
{
	char path[96];
	snprintf(path, sizeof(path), "/proc/%d/map_files/%lx-%lx", pid, (unsigned long)v->start,
		 (unsigned long)v->end);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return err_set(negerrno(), "pid %d: cannot open %s: %m", pid, path);
	uint64_t end = v->pgoff + (v->end - v->start), pos = v->pgoff;
	while (pos < end) {
		off_t d = lseek(fd, pos, SEEK_DATA);
		if (d < 0 || (uint64_t)d >= end)
			break;
		off_t h = lseek(fd, d, SEEK_HOLE);
		if (h < 0 || (uint64_t)h > end)
			h = end;
		d = ALIGN_DOWN(d, 4096);
		h = ALIGN_UP(h, 4096);
		int r = add_run(v, d - v->pgoff, MIN((uint64_t)h, end) - d);
		if (r < 0) {
			close(fd);
			return r;
		}
		pos = h;
	}
	*ret_fd = fd;
	return 0;
}

/* The size and mtime of v's file; prev: the area before it, or NULL. */
static int stat_backing(pid_t pid, struct vma *v, const struct vma *prev)
{
	/* the areas of one file (a library's four) follow each other: the
	 * file is stat'ed once */
	if (prev && (prev->kind == VMA_FILE_PRIVATE || prev->kind == VMA_FILE_SHARED) && prev->ino == v->ino &&
	    prev->dev_major == v->dev_major && prev->dev_minor == v->dev_minor) {
		v->fsize = prev->fsize;
		v->mtime_sec = prev->mtime_sec;
		v->mtime_nsec = prev->mtime_nsec;
		return 0;
	}
	char path[96];
	struct stat st;
	snprintf(path, sizeof(path), "/proc/%d/map_files/%lx-%lx", pid, (unsigned long)v->start,
		 (unsigned long)v->end);
	if (stat(path, &st) < 0)
		return err_set(negerrno(), "pid %d: cannot stat the file of %s: %m", pid, v->path);
	v->fsize = st.st_size;
	v->mtime_sec = st.st_mtim.tv_sec;
	v->mtime_nsec = st.st_mtim.tv_nsec;
	return 0;
}

/* Reads [off, off + len) of area v of the stopped process into buf. */
static int read_piece(pid_t pid, int mem, int fd, const struct vma *v, uint64_t off, uint64_t len,
		      uint8_t *buf)
{
	if (fault_hit(FAULT_ENGINE_DIE_MEMORY))
		raise(SIGKILL);
	if (fault_hit(FAULT_ENGINE_MEMORY))
		return err_set(-EIO, "pid %d: reading memory %lx: injected fault", pid,
			       (unsigned long)(v->start + off));
	if (fd >= 0 || !(v->prot & PROT_READ)) {
		ssize_t n = fd >= 0 ? pread_full(fd, buf, len, v->pgoff + off)
				    : pread_full(mem, buf, len, v->start + off);
		if (n < 0)
			return err_set((int)n, "pid %d: reading memory at %lx", pid,
				       (unsigned long)(v->start + off));
		if ((uint64_t)n < len)
			memset(buf + n, 0, len - n);
		return 0;
	}
	struct iovec l = { buf, len }, rm = { (void *)(uintptr_t)(v->start + off), len };
	ssize_t n = process_vm_readv(pid, &l, 1, &rm, 1, 0);
	if (n != (ssize_t)len)
		return err_set(n < 0 ? negerrno() : -EIO, "pid %d: process_vm_readv at %lx: %m", pid,
			       (unsigned long)(v->start + off));
	return 0;
}

/* One piece of the copy into RAM. */
struct copy_job {
	struct vma *v;
	int fd; /* the area's tmpfs file (shmem), or -1 */
	uint64_t off, len;
	uint8_t *dst;
};

struct copy_ctx {
	pid_t pid;
	int mem;
	struct copy_job *jobs;
	size_t njobs;
	size_t next;    /* atomic: the next job to take */
	int err;        /* atomic: the first failure */
	char msg[256];  /* its detail (err_msg() is per thread) */
};

static void *copy_worker(void *arg)
{
	struct copy_ctx *c = arg;
	for (;;) {
		if (__atomic_load_n(&c->err, __ATOMIC_RELAXED))
			break;
		size_t i = __atomic_fetch_add(&c->next, 1, __ATOMIC_RELAXED);
		if (i >= c->njobs)
			break;
		struct copy_job *j = &c->jobs[i];
		int r = read_piece(c->pid, c->mem, j->fd, j->v, j->off, j->len, j->dst);
		int zero = 0;
		if (r < 0 && __atomic_compare_exchange_n(&c->err, &zero, r, false, __ATOMIC_SEQ_CST,
							 __ATOMIC_SEQ_CST))
			snprintf(c->msg, sizeof(c->msg), "%s", err_msg());
	}
	return NULL;
}

#define COPY_PIECE (32ull << 20)
#define COPY_THREADS 4

/* Threads the copy runs on: one per core, at most COPY_THREADS. */
static size_t copy_threads(void)
{
	return (size_t)MAX(1, MIN(sysconf(_SC_NPROCESSORS_ONLN), COPY_THREADS));
}

/* Runs fn(args + i * size) for i < n (n <= COPY_THREADS), the first on
 * this thread; a thread that cannot start has its share run here. */
static void fan_out(void *(*fn)(void *), void *args, size_t size, size_t n)
{
	pthread_t th[COPY_THREADS];
	size_t started = 0;
	for (size_t i = 1; i < n && pthread_create(&th[i - 1], NULL, fn, (uint8_t *)args + i * size) == 0; i++)
		started++;
	fn(args);
	for (size_t i = 0; i < started; i++)
		pthread_join(th[i], NULL);
	for (size_t i = started + 1; i < n; i++)
		fn((uint8_t *)args + i * size);
}

/* Copies every saved run of every area into its v->data, with a few
 * threads: faulting in the copy's fresh pages is most of the cost, and
 * it spreads over cores, which shortens the time the process is frozen. */
static int copy_all(pid_t pid, int mem, struct proc_image *img, const int *fds)
{
	struct copy_ctx c = { .pid = pid, .mem = mem };
	size_t cap = 0;
	uint64_t total = 0;
	for (size_t i = 0; i < img->nvmas; i++) {
		struct vma *v = &img->vmas[i];
		uint8_t *dst = v->data;
		for (size_t k = 0; v->data && k < v->nruns; k++)
			for (uint64_t o = 0; o < v->runs[k].len; o += COPY_PIECE) {
				if (c.njobs == cap) {
					cap = cap ? 2 * cap : 256;
					struct copy_job *nj = realloc(c.jobs, cap * sizeof(*nj));
					if (!nj) {
						free(c.jobs);
						return -ENOMEM;
					}
					c.jobs = nj;
				}
				uint64_t len = MIN(COPY_PIECE, v->runs[k].len - o);
				c.jobs[c.njobs++] = (struct copy_job){ v, fds[i], v->runs[k].off + o, len, dst };
				dst += len;
				total += len;
			}
	}
	/* every thread takes jobs from the same context */
	fan_out(copy_worker, &c, 0, total < 4 * COPY_PIECE ? 1 : copy_threads());
	free(c.jobs);
	if (c.err)
		return err_set(c.err, "%s", c.msg);
	return 0;
}

#define HUGE_SZ (2ul << 20)

/* A buffer for a copy of saved pages: from the arena while it lasts (its
 * pages are faulted in already), else mapped now. Large ones are backed by
 * huge pages: faulting in 4 KiB pages one by one costs more than the copy
 * itself (about 3 us a page in a virtual machine, ~0.8 s per GiB). */
static uint8_t *copy_alloc(struct copy_arena *arena, size_t len)
{
	size_t need = ALIGN_UP(len, (size_t)4096);
	if (arena && arena->pos && (size_t)(arena->end - arena->pos) >= need) {
		uint8_t *p = arena->pos;
		arena->pos += need;
		return p;
	}
	if (len < HUGE_SZ) {
		void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		return p == MAP_FAILED ? NULL : p;
	}
	size_t full = ALIGN_UP(len, HUGE_SZ) + HUGE_SZ;
	uint8_t *p = mmap(NULL, full, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return NULL;
	uint8_t *a = (uint8_t *)ALIGN_UP((uintptr_t)p, HUGE_SZ);
	/* keep exactly [a, a + len) mapped, so that munmap(data, saved) frees all */
	if (a > p)
		munmap(p, a - p);
	uint8_t *end = a + ALIGN_UP(len, 4096);
	if (p + full > end)
		munmap(end, p + full - end);
	madvise(a, len, MADV_HUGEPAGE);
	return a;
}

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

/* kB of `key` in /proc/PID/smaps_rollup, or 0. */
/* The sum of the kB values of keys (NULL-terminated) in
 * /proc/PID/smaps_rollup; 0 for a key it lacks or when it is gone. */
static uint64_t rollup_kb(pid_t pid, const char *const *keys)
{
	char path[64];
	_cleanup_free_ char *text = NULL;
	uint64_t sum = 0;
	snprintf(path, sizeof(path), "/proc/%d/smaps_rollup", pid);
	if (read_file_full(path, &text, NULL) < 0)
		return 0;
	for (; *keys; keys++) {
		uint64_t kb = 0;
		const char *l = strstr(text, *keys);
		if (l && sscanf(l + strlen(*keys), " %" SCNu64, &kb) == 1)
			sum += kb;
	}
	return sum;
}

struct populate {
	uint8_t *p;
	size_t len;
	int err;
};

static void *populate(void *arg)
{
	struct populate *q = arg;
	if (madvise(q->p, q->len, MADV_POPULATE_WRITE) == 0)
		return NULL;
	if (errno != EINVAL) {
		q->err = errno;
		return NULL;
	}
	for (size_t o = 0; o < q->len; o += 4096) /* before Linux 5.14 */
		q->p[o] = 0;
	return NULL;
}

void copy_arena_reserve(const pid_t *pids, size_t npids, const uint64_t *known, struct copy_arena *a)
{
	uint64_t t0 = now_ns(), bytes = 0;
	/* shared memory counted once for the tree: each process's share */
	static const char *const keys[] = { "\nAnonymous:", "\nPss_Shmem:", NULL };
	for (size_t i = 0; i < npids; i++)
		bytes += known[i] != UINT64_MAX ? known[i] : rollup_kb(pids[i], keys) * 1024;
	size_t len = ALIGN_UP((size_t)bytes, HUGE_SZ);
	struct populate q[COPY_THREADS];
	size_t n;
	bool failed = false;

	*a = (struct copy_arena){ 0 };
	if (len < HUGE_SZ || fault_hit(FAULT_ENGINE_ARENA))
		return;
	a->base = copy_alloc(NULL, len);
	if (!a->base)
		return;
	/* Faulted in now, while the process still runs, by as many threads
	 * as the copy would use (the host's faults run per virtual CPU). A
	 * machine short of memory refuses: the copy then maps its buffers
	 * as it goes, as it would have. */
	n = MIN(copy_threads(), len / HUGE_SZ);
	for (size_t i = 0; i < n; i++) {
		size_t from = len / HUGE_SZ * i / n * HUGE_SZ, to = len / HUGE_SZ * (i + 1) / n * HUGE_SZ;
		q[i] = (struct populate){ a->base + from, to - from, 0 };
	}
	fan_out(populate, q, sizeof(q[0]), n);
	for (size_t i = 0; i < n; i++)
		failed |= q[i].err != 0;
	if (failed) {
		munmap(a->base, len);
		*a = (struct copy_arena){ 0 };
		return;
	}
	a->pos = a->base;
	a->end = a->base + len;
	log_debug("pid %d: %zu MiB for the copy faulted in before the freeze in %" PRIu64 " us", pids[0], len >> 20,
		  (now_ns() - t0) / 1000);
}

void copy_arena_release(struct copy_arena *a)
{
	if (a->pos && a->end > a->pos)
		munmap(a->pos, (size_t)(a->end - a->pos));
	*a = (struct copy_arena){ 0 };
}

/* Flags /proc/PID/maps does not show (growsdown, noreserve, uffd-wp)
 * from an smaps text. exact: each area must have its header there with
 * the same range, permissions, offset and file (a text read before the
 * freeze), else -ESTALE. */
static int vmflags_from(char *text, struct vma *v, size_t n, bool exact)
{
	size_t i = 0, matched = 0;
	bool have = false;
	for (char *l = text, *nl; l && *l; l = nl) {
		nl = strchr(l, '\n');
		if (nl)
			*nl++ = 0;
		unsigned long a, b;
		if (!strncmp(l, "VmFlags:", 8)) {
			if (have && i < n) {
				v[i].growsdown = strstr(l, " gd") != NULL;
				v[i].noreserve = strstr(l, " nr") != NULL;
				v[i].maywrite = strstr(l, " mw") != NULL;
				v[i].advice = vma_advice_from_vmflags(l);
				v[i].uffd_wp = strstr(l, " uw") != NULL;
				v[i].sealed = strstr(l, " sl") != NULL;
				matched++;
			}
			have = false;
			continue;
		}
		/* a header line: "start-end perms ..." */
		char *dash = strchr(l, '-');
		if (dash && sscanf(l, "%lx-%lx", &a, &b) == 2 && dash - l <= 16 && l[0] != ' ' &&
		    strchr(l, ' ') > dash) {
			have = false;
			while (i < n && v[i].start < a)
				i++;
			have = i < n && v[i].start == a;
			if (have && exact) {
				struct vma h = { 0 };
				have = parse_head(l, &h) && h.end == v[i].end && h.prot == v[i].prot &&
				       h.shared == v[i].shared && h.pgoff == v[i].pgoff && h.ino == v[i].ino &&
				       h.dev_major == v[i].dev_major && h.dev_minor == v[i].dev_minor;
			}
		}
	}
	return exact && matched != n ? -ESTALE : 0;
}

static int read_vmflags(pid_t pid, struct vma *v, size_t n)
{
	char path[64];
	_cleanup_free_ char *text = NULL;
	snprintf(path, sizeof(path), "/proc/%d/smaps", pid);
	int r = read_file_full(path, &text, NULL);
	if (r < 0)
		return err_set(r, "pid %d: cannot read smaps", pid);
	return vmflags_from(text, v, n, false);
}

void shm_table_free(struct shm_table *t)
{
	for (size_t i = 0; i < t->n; i++)
		free(t->v[i].saved);
	free(t->v);
	t->v = NULL;
	t->n = 0;
}

/* Enters shared memory area v of pid in t: its object's id and size, and
 * whether an earlier area saved its range of the object already. */
static int shm_enter(struct shm_table *t, pid_t pid, struct vma *v, bool *covered)
{
	char path[96];
	struct stat st;
	struct shm_obj *o = NULL;
	uint64_t a = v->pgoff, b = v->pgoff + (v->end - v->start);

	snprintf(path, sizeof(path), "/proc/%d/map_files/%lx-%lx", pid, (unsigned long)v->start,
		 (unsigned long)v->end);
	if (stat(path, &st) < 0)
		return err_set(negerrno(), "pid %d: cannot stat the object of %s: %m", pid, path);
	for (size_t i = 0; i < t->n && !o; i++)
		if (t->v[i].ino == v->ino && t->v[i].dev_major == v->dev_major && t->v[i].dev_minor == v->dev_minor)
			o = &t->v[i];
	if (!o) {
		struct shm_obj *nv = realloc(t->v, (t->n + 1) * sizeof(*nv));
		if (!nv)
			return -ENOMEM;
		t->v = nv;
		o = &nv[t->n++];
		*o = (struct shm_obj){ .dev_major = v->dev_major, .dev_minor = v->dev_minor, .ino = v->ino };
		/* a SysV segment's areas are "/SYSV<key> (deleted)", their
		 * inode its shmid */
		o->sysv = !strncmp(v->path, "/SYSV", 5) ? (int64_t)v->ino : -1;
	}
	o->size = MAX(o->size, MAX((uint64_t)st.st_size, b));
	v->has_shm = true;
	v->shm_id = (uint32_t)(o - t->v);
	v->shm_size = o->size;
	*covered = false;
	for (size_t i = 0; i < o->nsaved && !*covered; i++)
		*covered = o->saved[i].off <= a && b <= o->saved[i].off + o->saved[i].len;
	if (*covered)
		return 0;
	struct mem_run *nr = realloc(o->saved, (o->nsaved + 1) * sizeof(*nr));
	if (!nr)
		return -ENOMEM;
	o->saved = nr;
	nr[o->nsaved++] = (struct mem_run){ a, b - a };
	return 0;
}

int memory_capture(pid_t pid, struct proc_image *img, bool copy, struct copy_arena *arena, struct shm_table *shm,
		   const struct hbm_ranges *hbm, struct precopy *pc, uint64_t *bytes)
{
	char path[64];
	_cleanup_close_ int pm = -1, mem = -1;
	int r;

	r = maps_read(pid, &img->vmas, &img->nvmas);
	if (r < 0)
		return r;
	/* smaps walks every page table entry (~20 ms for 4 GiB): a
	 * pre-copied process's was read before the freeze, and serves where
	 * every area is still the one it showed */
	{
		_cleanup_free_ char *early = precopy_take_smaps(pc);
		r = early && copy ? vmflags_from(early, img->vmas, img->nvmas, true) : -ESTALE;
	}
	if (r == -ESTALE)
		r = read_vmflags(pid, img->vmas, img->nvmas);
	if (r < 0)
		return r;
	/* a sealed area cannot be unmapped or changed, nor sealed again
	 * before the restore is done with it; the kernel's own (the vDSO
	 * where it seals them) come back with the new process */
	for (size_t i = 0; i < img->nvmas; i++) {
		const struct vma *v = &img->vmas[i];
		if (v->sealed && v->kind != VMA_VDSO && v->kind != VMA_VVAR && v->kind != VMA_VVAR_VCLOCK &&
		    v->kind != VMA_VSYSCALL)
			return err_set(-EOPNOTSUPP, "pid %d: area %lx-%lx is sealed (mseal): not supported", pid,
				       (unsigned long)v->start, (unsigned long)v->end);
	}
	/* after the flags: smaps is matched to the areas by their starts */
	r = hbm_split(img, hbm);
	if (r < 0)
		return r;
	snprintf(path, sizeof(path), "/proc/%d/pagemap", pid);
	pm = open(path, O_RDONLY | O_CLOEXEC);
	snprintf(path, sizeof(path), "/proc/%d/mem", pid);
	mem = open(path, O_RDONLY | O_CLOEXEC);
	if (pm < 0 || mem < 0)
		return err_set(negerrno(), "pid %d: cannot open pagemap or mem: %m", pid);

	*bytes = 0;
	_cleanup_free_ int *fds = calloc(img->nvmas, sizeof(int));
	if (!fds)
		return -ENOMEM;
	for (size_t i = 0; i < img->nvmas; i++)
		fds[i] = -1;
	uint64_t t0 = now_ns();
	for (size_t i = 0; i < img->nvmas && r >= 0; i++) {
		struct vma *v = &img->vmas[i];
		switch (v->kind) {
		case VMA_ANON:
			/* pre-copied: only what is not in its mirror yet is read */
			if (copy && precopy_lookup(pc, v)) {
				r = scan_pages(pid, pm, v);
				if (r >= 0)
					r = precopy_fill(pc, v);
				if (r >= 0)
					*bytes += v->saved;
				if (r < 0)
					break;
				continue;
			}
			r = scan_pages(pid, pm, v);
			break;
		case VMA_FILE_PRIVATE:
			r = stat_backing(pid, v, i ? &img->vmas[i - 1] : NULL);
			if (r >= 0)
				r = scan_pages(pid, pm, v);
			break;
		case VMA_FILE_SHARED:
			r = stat_backing(pid, v, i ? &img->vmas[i - 1] : NULL);
			break;
		case VMA_SHMEM: {
			bool covered = false;
			r = shm ? shm_enter(shm, pid, v, &covered) : 0;
			if (r >= 0 && !covered)
				r = scan_shmem(pid, v, &fds[i]);
			break;
		}
		case VMA_DELETED:
			r = add_run(v, 0, v->end - v->start);
			break;
		case VMA_AIO:
			r = aio_capture(pid, mem, v);
			break;
		default:
			r = 0;
			break;
		}
		if (r < 0)
			break;
		*bytes += v->saved;
		if (!v->saved || !copy)
			continue;
		v->data = copy_alloc(arena, v->saved);
		if (!v->data)
			r = err_set(-ENOMEM, "pid %d: no memory for a copy of %lx-%lx", pid,
				    (unsigned long)v->start, (unsigned long)v->end);
	}
	uint64_t t1 = now_ns();
	if (r >= 0 && copy)
		r = copy_all(pid, mem, img, fds);
	for (size_t i = 0; i < img->nvmas; i++)
		if (fds[i] >= 0)
			close(fds[i]);
	log_debug("pid %d: page scan %" PRIu64 " us, copy %" PRIu64 " us", pid, (t1 - t0) / 1000,
		  (now_ns() - t1) / 1000);
	return r < 0 ? r : 0;
}

char *maps_format(const struct proc_image *img)
{
	struct tbuf b = { 0 };
	for (size_t i = 0; i < img->nvmas; i++) {
		const struct vma *v = &img->vmas[i];
		tb_printf(&b, "%08lx-%08lx %c%c%c%c %08lx %02x:%02x %lu kind=%s saved=%" PRIu64,
			  (unsigned long)v->start, (unsigned long)v->end,
			  v->prot & PROT_READ ? 'r' : '-', v->prot & PROT_WRITE ? 'w' : '-',
			  v->prot & PROT_EXEC ? 'x' : '-', v->shared ? 's' : 'p',
			  (unsigned long)v->pgoff, v->dev_major, v->dev_minor, (unsigned long)v->ino,
			  vma_kind_name(v->kind), v->saved);
		if (v->kind == VMA_FILE_PRIVATE || v->kind == VMA_FILE_SHARED)
			tb_printf(&b, " fsize=%" PRIu64 " mtime=%" PRId64 ".%09ld", v->fsize,
				  v->mtime_sec, v->mtime_nsec);
		if (v->has_shm)
			tb_printf(&b, " shm=%" PRIu32 " shmsize=%" PRIu64, v->shm_id, v->shm_size);
		if (v->kind == VMA_AIO)
			tb_printf(&b, " aio-nr=%" PRIu32, v->aio_nr);
		if (v->growsdown)
			tb_printf(&b, " growsdown=1");
		if (v->noreserve)
			tb_printf(&b, " noreserve=1");
		/* only where it says more than the protection does */
		if (v->kind == VMA_FILE_SHARED && v->maywrite && !(v->prot & PROT_WRITE))
			tb_printf(&b, " maywrite=1");
		vma_advice_format(&b, v);
		if (v->hbm)
			tb_printf(&b, " at=gpu/hbm");
		if (v->kind == VMA_FILE_PRIVATE && v->nruns) {
			tb_printf(&b, " pages=");
			for (size_t k = 0; k < v->nruns; k++)
				tb_printf(&b, "%s%lx+%lx", k ? "," : "", (unsigned long)v->runs[k].off,
					  (unsigned long)v->runs[k].len);
		}
		tb_printf(&b, " %s\n", v->path);
	}
	return tb_take(&b);
}

static int parse_annot(struct vma *v, const char *tok)
{
	const char *eq = strchr(tok, '=');
	size_t kl = eq - tok;
	const char *val = eq + 1;
	if (kl == 4 && !strncmp(tok, "kind", 4)) {
		for (int k = 0; k < _VMA_KIND_MAX; k++)
			if (!strcmp(val, kind_names[k])) {
				v->kind = k;
				return 0;
			}
		return -EINVAL;
	}
	if (kl == 5 && !strncmp(tok, "saved", 5))
		return parse_u64(val, &v->saved);
	if (kl == 5 && !strncmp(tok, "fsize", 5))
		return parse_u64(val, &v->fsize);
	if (kl == 5 && !strncmp(tok, "mtime", 5))
		return sscanf(val, "%" SCNd64 ".%ld", &v->mtime_sec, &v->mtime_nsec) == 2 ? 0 : -EINVAL;
	if (kl == 3 && !strncmp(tok, "shm", 3)) {
		uint64_t id;
		int r = parse_u64(val, &id);
		if (r < 0 || id >= ENGINE_MAX_SHM)
			return -EINVAL;
		v->has_shm = true;
		v->shm_id = (uint32_t)id;
		return 0;
	}
	if (kl == 7 && !strncmp(tok, "shmsize", 7))
		return parse_u64(val, &v->shm_size);
	if (kl == 6 && !strncmp(tok, "aio-nr", 6)) {
		uint64_t nr;
		if (parse_u64(val, &nr) < 0 || nr > UINT32_MAX)
			return -EINVAL;
		v->aio_nr = (uint32_t)nr;
		return 0;
	}
	if (kl == 9 && !strncmp(tok, "growsdown", 9)) {
		v->growsdown = !strcmp(val, "1");
		return 0;
	}
	if (kl == 9 && !strncmp(tok, "noreserve", 9)) {
		v->noreserve = !strcmp(val, "1");
		return 0;
	}
	if (kl == 8 && !strncmp(tok, "maywrite", 8)) {
		v->maywrite = !strcmp(val, "1");
		return 0;
	}
	if (kl == 6 && !strncmp(tok, "advice", 6))
		return vma_advice_parse(v, val);
	if (kl == 2 && !strncmp(tok, "at", 2)) {
		/* where the bytes are: a reader that knows no other place
		 * must not look for them in memory/ */
		if (strcmp(val, "gpu/hbm"))
			return -EINVAL;
		v->hbm = true;
		return 0;
	}
	if (kl == 5 && !strncmp(tok, "pages", 5)) {
		_cleanup_free_ char *c = strdup(val);
		if (!c)
			return -ENOMEM;
		uint64_t saved = v->saved;
		char *save = NULL;
		for (char *t = strtok_r(c, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
			unsigned long o, l;
			if (sscanf(t, "%lx+%lx", &o, &l) != 2 || (o | l) & 4095 || !l ||
			    o + l > v->end - v->start || o + l < o)
				return -EINVAL;
			if (add_run(v, o, l) < 0)
				return -ENOMEM;
		}
		/* add_run counted them again */
		if (v->saved != 2 * saved)
			return -EINVAL;
		v->saved = saved;
		return 0;
	}
	return 0; /* unknown annotations of a newer minor format are ignored */
}

static int image_line(char *l, struct vma *x, const struct vma *prev)
{
	int r;

	x->kind = _VMA_KIND_MAX;
	const char *rest = parse_head(l, x);
	if (!rest)
		return err_set(-EBADMSG, "maps: malformed line '%.60s'", l);
	for (;;) {
		while (*rest == ' ')
			rest++;
		size_t tl = strcspn(rest, " ");
		if (!tl || !memchr(rest, '=', tl) || *rest == '/' || *rest == '[')
			break;
		char tok[4096];
		if (tl >= sizeof(tok)) {
			/* long pages= lists */
			char *big = strndup(rest, tl);
			r = big ? parse_annot(x, big) : -ENOMEM;
			free(big);
		} else {
			memcpy(tok, rest, tl);
			tok[tl] = 0;
			r = parse_annot(x, tok);
		}
		if (r < 0)
			return err_set(-EBADMSG, "maps: bad annotation in line '%.60s'", l);
		rest += tl;
	}
	x->path = strdup(rest);
	if (!x->path)
		return -ENOMEM;
	if (x->kind == _VMA_KIND_MAX)
		return err_set(-EBADMSG, "maps: no kind in line '%.60s'", l);
	if (prev && x->start < prev->end)
		return err_set(-EBADMSG, "maps: areas overlap or are out of order at %lx",
			       (unsigned long)x->start);
	if ((x->kind == VMA_FILE_PRIVATE || x->kind == VMA_FILE_SHARED) && x->path[0] != '/')
		return err_set(-EBADMSG, "maps: file area %lx without a path", (unsigned long)x->start);
	if (x->hbm && (x->kind != VMA_ANON || x->shared))
		return err_set(-EBADMSG, "maps: area %lx: at=gpu/hbm on an area that is not private anonymous memory",
			       (unsigned long)x->start);
	if (x->saved > x->end - x->start)
		return err_set(-EBADMSG, "maps: area %lx saves more than its size", (unsigned long)x->start);
	if (x->has_shm && (x->kind != VMA_SHMEM || x->pgoff > x->shm_size ||
			   x->end - x->start > x->shm_size - x->pgoff || x->shm_size > (1ull << 47)))
		return err_set(-EBADMSG, "maps: area %lx: its shared object (shm=%u shmsize=%" PRIu64 ") does not hold it",
			       (unsigned long)x->start, x->shm_id, x->shm_size);
	return 0;
}

int maps_parse_image(const char *text, struct vma **ret, size_t *ret_n)
{
	return maps_parse_lines(text, image_line, ret, ret_n);
}

#define STREAM_PIECE (16ul << 20)

/* The next piece read from the frozen process while the current one is
 * written: reading (a copy by the CPU) and the store's hashing and disk
 * writing then overlap instead of taking turns. */
struct prefetch {
	pid_t pid;
	int mem, fd;
	const struct vma *v;
	uint64_t off, len;
	uint8_t *buf;
	int r;
	char msg[256]; /* err_msg() is per thread */
};

static void *prefetch_worker(void *arg)
{
	struct prefetch *p = arg;

	p->r = read_piece(p->pid, p->mem, p->fd, p->v, p->off, p->len, p->buf);
	if (p->r < 0)
		snprintf(p->msg, sizeof(p->msg), "%s", err_msg());
	return NULL;
}

/* A pre-copied area written again (the tracking kept from the last
 * dump): a block whose entry is known and whose mirror did not change
 * since is not hashed again. Only blocks wholly inside a run are written
 * in blocks; the others' entries are forgotten. */
static void blocks_prepare(const struct vma *v)
{
	const uint64_t B = STORE_BLOCK_SIZE;
	size_t n = (size_t)((v->end - v->start + B - 1) / B), at = 0;
	for (size_t k = 0; k < v->nruns; k++) {
		size_t first = (size_t)((v->runs[k].off + B - 1) / B), last = (size_t)((v->runs[k].off + v->runs[k].len) / B);
		for (; at < MIN(first, n); at++)
			v->blocks[at].known = false;
		for (; at < last; at++)
			v->blocks[at].known &= !v->stale[at];
		at = MAX(at, first);
	}
	for (; at < n; at++)
		v->blocks[at].known = false;
}

/* Writes [off, off + len) of v's memory file from src: its whole blocks
 * with their entries (store_file_pwrite_blocks), the ends as bytes. */
static int write_blocks(struct store_file *f, const struct vma *v, const uint8_t *src, uint64_t len, uint64_t off,
			const char *name)
{
	const uint64_t B = STORE_BLOCK_SIZE;
	uint64_t a = MIN(ALIGN_UP(off, B), off + len), b = MAX(a, ALIGN_DOWN(off + len, B));
	int r = 0;
	if (a > off)
		r = store_file_pwrite(f, src, a - off, off);
	if (r >= 0 && b > a) {
		struct store_block *e = v->blocks + a / B;
		bool reused = false;
		for (uint64_t i = 0; i < (b - a) / B && !reused; i++)
			reused = e[i].known;
		if (reused && fault_hit(FAULT_ENGINE_TRACK_WRITE))
			return err_set(-EIO, "%s: write with the kept hashes: injected fault", name);
		r = store_file_pwrite_blocks(f, src + (a - off), b - a, a, e);
		if (r == 0) /* a backend that names no blocks */
			for (uint64_t i = 0; i < (b - a) / B; i++)
				e[i].known = false;
	}
	if (r >= 0 && off + len > b)
		r = store_file_pwrite(f, src + (b - off), off + len - b, b);
	return r < 0 ? r : 0;
}

int memory_write(struct store_snap *w, const struct proc_image *img, pid_t pid,
		 const struct engine_dump_opts *o)
{
	_cleanup_free_ char *maps = maps_format(img);
	_cleanup_close_ int mem = -1;
	uint8_t *piece[2] = { NULL, NULL };
	uint64_t total = 0, done = 0;
	int r;
	if (!maps)
		return -ENOMEM;
	r = store_snap_put(w, "maps", maps, strlen(maps));
	if (r < 0)
		return r;
	for (size_t i = 0; i < img->nvmas; i++)
		total += img->vmas[i].saved;
	for (size_t i = 0; i < img->nvmas; i++) {
		const struct vma *v = &img->vmas[i];
		struct store_file *f;
		char name[VMA_FILE_NAME_MAX];
		if (!v->saved)
			continue;
		vma_file_name(v, name, sizeof(name));
		/* Without a copy (the process is still frozen) the bytes go
		 * from the process to the store through two reused buffers,
		 * one read while the other is written. */
		_cleanup_close_ int fd = -1;
		if (!v->data && !v->mirror) {
			char path[96];
			for (int b = 0; b < 2; b++)
				if (!piece[b] && !(piece[b] = copy_alloc(NULL, STREAM_PIECE))) {
					r = -ENOMEM;
					goto out;
				}
			snprintf(path, sizeof(path), "/proc/%d/mem", pid);
			if (mem < 0 && (mem = open(path, O_RDONLY | O_CLOEXEC)) < 0) {
				r = err_set(negerrno(), "pid %d: cannot open %s: %m", pid, path);
				goto out;
			}
			snprintf(path, sizeof(path), "/proc/%d/map_files/%lx-%lx", pid,
				 (unsigned long)v->start, (unsigned long)v->end);
			if (v->kind == VMA_SHMEM && (fd = open(path, O_RDONLY | O_CLOEXEC)) < 0) {
				r = err_set(negerrno(), "pid %d: cannot open %s: %m", pid, path);
				goto out;
			}
		}
		r = store_file_create(w, name, &f);
		if (r < 0)
			goto out;
		if (v->blocks)
			blocks_prepare(v);
		const uint8_t *p = v->data;
		for (size_t k = 0; k < v->nruns && r >= 0; k++) {
			if (v->mirror)
				p = v->mirror + v->runs[k].off;
			uint64_t step = v->data || v->mirror ? 64ull << 20 : STREAM_PIECE;
			int cur = 0;
			if (!v->data && !v->mirror)
				r = read_piece(pid, mem, fd, v, v->runs[k].off, MIN(v->runs[k].len, step), piece[0]);
			/* in pieces, for the progress report */
			for (uint64_t off = 0; off < v->runs[k].len && r >= 0;) {
				uint64_t len = MIN(v->runs[k].len - off, step);
				/* pieces end at multiples of step in the file: no block
				 * is split between two of them (written in blocks) */
				if (v->blocks)
					len = MIN(len, step - (v->runs[k].off + off) % step);
				const uint8_t *src = v->data || v->mirror ? p : piece[cur];
				struct prefetch pf = { .pid = pid, .mem = mem, .fd = fd, .v = v,
						       .off = v->runs[k].off + off + len,
						       .len = MIN(v->runs[k].len - off - len, step),
						       .buf = piece[cur ^ 1] };
				pthread_t th;
				bool started = false;
				if (!v->data && !v->mirror && pf.len > 0) {
					started = pthread_create(&th, NULL, prefetch_worker, &pf) == 0;
					if (!started)
						prefetch_worker(&pf); /* read it now, in turn */
				}
				if (fault_hit(FAULT_ENGINE_DIE_WRITE) || (v->hbm && fault_hit(FAULT_GPU_DIE_HBM_WRITE)))
					raise(SIGKILL);
				if (fault_hit(FAULT_ENGINE_WRITE) || (v->hbm && fault_hit(FAULT_GPU_HBM_WRITE)))
					r = err_set(-EIO, "%s: write: injected fault", name);
				else if (v->blocks)
					r = write_blocks(f, v, src, len, v->runs[k].off + off, name);
				else
					r = store_file_pwrite(f, src, len, v->runs[k].off + off);
				if (started)
					pthread_join(th, NULL);
				if (r >= 0 && pf.r < 0)
					r = err_set(pf.r, "%s", pf.msg);
				if (p)
					p += len;
				cur ^= 1;
				off += len;
				done += len;
				if (o && o->progress) {
					struct engine_progress pr = { .phase = ENGINE_PHASE_WRITE, .done = done, .total = total };
					o->progress(&pr, o->ud);
				}
			}
		}
		if (r >= 0)
			r = store_file_set_size(f, v->end - v->start);
		/* the entries now say what the mirror holds */
		if (r >= 0 && v->stale)
			memset(v->stale, 0, (v->end - v->start + STORE_BLOCK_SIZE - 1) / STORE_BLOCK_SIZE);
		int q = store_file_close(f);
		if (r >= 0)
			r = q;
		if (r < 0)
			goto out;
	}
	r = 0;
out:
	for (int b = 0; b < 2; b++)
		if (piece[b])
			munmap(piece[b], STREAM_PIECE);
	return r;
}

