/*
 * Pre-copy: most of a process's memory copied while it runs, so that the
 * freeze only takes what it wrote since.
 *
 * Tracking: a userfaultfd made inside the process (its memory is the one
 * a userfaultfd watches), by a call its keeper injects; the keeper takes
 * it out (pidfd_getfd), closes it there and hands it to us (keeper.c).
 * We register the private anonymous areas for write protection in async
 * mode (UFFD_FEATURE_WP_ASYNC, Linux 6.7+): a write to a protected page
 * is resolved by the kernel itself, which only clears the page's uffd-wp
 * bit; no thread ever waits on us. PAGEMAP_SCAN's PAGE_IS_WRITTEN then
 * lists the pages written since the protection, and PM_SCAN_WP_MATCHING
 * protects them again in the same walk.
 *
 * The copy: each tracked area has a mirror in our memory, the area's
 * bytes at their offsets, and a map of the pages in it that are valid
 * (copied, and not written since). Round 1 copies every populated page;
 * each later round the pages written during the one before. Once a round
 * leaves little to copy the caller freezes the process, and
 * memory_capture() copies only what is not valid (precopy_lookup()); the
 * snapshot's memory files are written from the mirrors. The freeze's own
 * walk asks only for the pages written since the last round (the
 * kernel's short walk, a bit per entry), where every populated page of
 * the area is known to be in the mirror or written, and where this
 * kernel is seen to report a page dropped since its copy as written
 * (short_walk_probe()).
 *
 * A process that writes faster than we copy does not converge: after
 * PRECOPY_MAX_ROUNDS, or once a round does not shrink the work, the freeze
 * takes what the last round left where that is at most a 32nd of what was
 * tracked (dump.c); else the tracking is removed and the dump takes
 * today's path, the whole copy while frozen.
 *
 * Kept (engine_dump_opts.track): after a dump the tracking may stay for
 * the next one, untouched: the registration, the mirrors (whose valid
 * pages stay valid until a later scan finds them written) and, per
 * STORE_BLOCK_SIZE block of each area, the id its memory file's block had
 * in the snapshot and whether the mirror changed there since (stale:
 * set by every copy into the mirror). precopy_resume() checks the areas
 * are still those tracked; the next round is then a scan of what was
 * written since, and memory_write() hands the ids of the blocks not
 * stale to the store, which does not hash them again.
 *
 * Nothing of ours stays in the process: the userfaultfd is only ours (the
 * process's own descriptor is closed before it runs again). Closing it
 * removes every registration and protection (userfaultfd_release), and
 * the kernel closes it should we die. Removing the protection walks every
 * page table entry of the area with the process's mmap lock held for
 * writing, which stalls its page faults meanwhile: done in pieces
 * (UFFDIO_UNREGISTER of PRECOPY_PIECE at a time, a short pause after
 * each), so that no single stall is long, after the process runs again.
 */
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <pthread.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>

#include "engine/engine-int.h"

/* Newer than the build machine's headers. */
#ifndef UFFD_FEATURE_WP_UNPOPULATED
#define UFFD_FEATURE_WP_UNPOPULATED (1 << 13)
#endif
#ifndef UFFD_FEATURE_WP_ASYNC
#define UFFD_FEATURE_WP_ASYNC (1 << 15)
#endif
struct pc_scan_arg {
	uint64_t size, flags, start, end, walk_end, vec, vec_len, max_pages;
	uint64_t category_inverted, category_mask, category_anyof_mask, return_mask;
};
struct pc_region {
	uint64_t start, end, categories;
};
#define PC_PAGEMAP_SCAN _IOWR('f', 16, struct pc_scan_arg)
#define PC_PAGE_IS_WRITTEN (1ull << 1)
#define PC_PAGE_IS_PRESENT (1ull << 3)
#define PC_PAGE_IS_SWAPPED (1ull << 4)
#define PC_PAGE_IS_PFNZERO (1ull << 5)
#define PC_SCAN_WP_MATCHING (1ull << 0)
#define PC_SCAN_CHECK_WPASYNC (1ull << 1)

#define PAGE 4096ull
/* Protecting and removing the protection, a piece at a time: each piece
 * holds the process's mmap lock while its page tables are walked. A
 * piece is the range of one page-table page (2 MiB, aligned), so that
 * each call rewrites one of them. */
#define PRECOPY_PIECE (2ull << 20)
/* And a pause after each: the process's faults waiting for the lock get
 * it then. Back to back, 16 MiB pieces kept a process writing 26 pages a
 * millisecond waiting for most of the removal (90-110 ms at 1 GiB as its
 * own clock saw it); 4 MiB with 500 us pauses: 11-22 ms, on a loaded
 * 2-core machine. Removing the protection first (UFFDIO_WRITEPROTECT,
 * the lock held for reading) held it off as long (108-110 ms). On the
 * virtual machine of docs/PERFORMANCE.md (whose hypervisor shadows the
 * guest's page tables) the removal of 4 GiB in 4 MiB pieces 500 us
 * apart left a process ticking every millisecond without a tick for
 * 185-874 ms while it ran (the process runnable all along); 2 MiB
 * pieces 1 ms apart: no gap of the removal's above those of the rounds
 * (55-65 ms). */
#define PRECOPY_PAUSE_US 1000
/* The rounds' walks, which protect again what they find written, hold
 * its faults off as well (37 ms for a walk of 4 GiB): in pieces too, with
 * shorter pauses, so that a round stays short enough for a process
 * writing 10% of its memory a second to converge. */
#define PRECOPY_SCAN_PIECE (64ull << 20)
#define PRECOPY_SCAN_PAUSE_US 200
/* Areas smaller than this are copied while frozen, as without pre-copy. */
#define PRECOPY_MIN_AREA (1ull << 20)
/* Protecting a page never touched installs a marker in its page table
 * (UFFD_FEATURE_WP_UNPOPULATED): page tables for the whole area, made
 * before the first copy. An area mostly unpopulated (AddressSanitizer's
 * shadow: terabytes reserved, megabytes used; a heap reserved ahead) is
 * left to the frozen copy when its holes pass this and its own resident
 * size: 16 TiB of shadow would want 32 GiB of page tables and minutes of
 * protecting, for a few MiB of pages. */
#define PRECOPY_MAX_HOLES (256ull << 20)
/* Pre-copy converged once a round leaves at most this much to copy. */
#define PRECOPY_DONE_BYTES (4ull << 20)

#define BLOCK ((uint64_t)STORE_BLOCK_SIZE)

/* The end of the piece of [s, end) that starts at s: the next
 * PRECOPY_PIECE boundary, or end. */
static uint64_t piece_end(uint64_t s, uint64_t end)
{
	return MIN((s & ~(PRECOPY_PIECE - 1)) + PRECOPY_PIECE, end);
}

struct pc_area {
	uint64_t start, end;
	uint8_t *mirror; /* end - start bytes, populated as copied */
	uint8_t *valid;  /* a byte per page: copied and not written since */
	/* a byte per STORE_BLOCK_SIZE block from start: the mirror changed
	 * there since the last snapshot was written from it */
	uint8_t *stale;
	struct store_block *blocks; /* per block: what the last snapshot wrote */
	/* a populated page the first round could not read: not valid, and
	 * not written either, so the freeze must see every entry's kind */
	bool gaps;
};

/* A private anonymous area seen at the start and left untracked (mostly
 * holes): its being there again is no change of the areas. */
struct pc_skip {
	uint64_t start, end;
};

struct precopy {
	pid_t pid;
	int uffd, pm, mem;
	struct pc_area *a;
	size_t n;
	uint64_t dirty;  /* bytes the last round found to copy */
	uint64_t copied; /* bytes copied in all rounds */
	uint64_t first;  /* bytes copied in the first */
	unsigned rounds;
	struct pc_skip *skip;
	size_t nskip;
	uint64_t started; /* the process's start time (stat field 22): the same process, not its pid reused */
	char *smaps;     /* read once converged (precopy_read_smaps) */
	pthread_t th;    /* removing the tracking while the snapshot is written */
	bool th_started;
};

static size_t nblocks(const struct pc_area *a)
{
	return (size_t)((a->end - a->start + BLOCK - 1) / BLOCK);
}

static void area_free(struct pc_area *a)
{
	if (a->mirror)
		munmap(a->mirror, a->end - a->start);
	if (a->valid)
		munmap(a->valid, (a->end - a->start) / PAGE);
	if (a->stale)
		munmap(a->stale, nblocks(a));
	if (a->blocks)
		munmap(a->blocks, nblocks(a) * sizeof(*a->blocks));
	a->mirror = a->valid = a->stale = NULL;
	a->blocks = NULL;
}

/* Removes the registrations (and so the protection) a piece at a time,
 * then closes the userfaultfd, which removes whatever is left. */
static void untrack(struct precopy *pc)
{
	uint64_t t0 = now_ns(), worst = 0, slow = 0, pieces = 0;
	if (pc->uffd < 0)
		return;
	bool failed = fault_hit(FAULT_ENGINE_PRECOPY_UNTRACK);
	for (size_t i = 0; i < pc->n && !failed; i++)
		for (uint64_t s = pc->a[i].start, e; s < pc->a[i].end && !failed; s = e) {
			e = piece_end(s, pc->a[i].end);
			struct uffdio_range rg = { s, e - s };
			uint64_t t1 = now_ns();
			/* EINVAL: the process unmapped or remapped it meanwhile, no
			 * longer registered there */
			if (ioctl(pc->uffd, UFFDIO_UNREGISTER, &rg) < 0 && errno != EINVAL && errno != ENOENT) {
				log_debug("pid %d: UFFDIO_UNREGISTER %" PRIx64 ": %m; closing it removes the rest",
					  pc->pid, s);
				failed = true;
			}
			uint64_t took = now_ns() - t1;
			worst = MAX(worst, took);
			slow += took > 1000000;
			pieces++;
			usleep(PRECOPY_PAUSE_US);
		}
	close(pc->uffd);
	pc->uffd = -1;
	log_debug("pid %d: write protection removed in %" PRIu64 " us, %" PRIu64 " pieces (%" PRIu64
		  " over 1 ms, the longest %" PRIu64 " us)",
		  pc->pid, (now_ns() - t0) / 1000, pieces, slow, worst / 1000);
}

static void *untrack_thread(void *arg)
{
	untrack(arg);
	return NULL;
}

void precopy_free(struct precopy *pc)
{
	if (!pc)
		return;
	precopy_untrack_wait(pc);
	for (size_t i = 0; i < pc->n; i++)
		area_free(&pc->a[i]);
	free(pc->a);
	free(pc->skip);
	if (pc->pm >= 0)
		close(pc->pm);
	if (pc->mem >= 0)
		close(pc->mem);
	free(pc->smaps);
	free(pc);
}

void precopy_untrack(struct precopy *pc)
{
	if (!pc || pc->th_started || pc->uffd < 0)
		return;
	/* with pauses it takes a while (~1 s for 4 GiB): meanwhile the
	 * snapshot is written from the mirrors, which it does not touch */
	pc->th_started = pthread_create(&pc->th, NULL, untrack_thread, pc) == 0;
	if (!pc->th_started)
		untrack(pc);
}

/* The areas worth tracking: private anonymous memory we can read. */
static bool trackable(const struct vma *v)
{
	return v->kind == VMA_ANON && !v->shared && (v->prot & PROT_READ) && v->end - v->start >= PRECOPY_MIN_AREA;
}

static void *map_anon(size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	return p == MAP_FAILED ? NULL : p;
}

/* A mirror placed so that its huge pages line up with the area's: the
 * copy into it faults in 2 MiB at a time. */
static uint8_t *map_mirror(uint64_t start, uint64_t len)
{
	const uint64_t huge = 2ull << 20;
	uint64_t full = len + huge;
	uint8_t *p = map_anon(full);
	if (!p)
		return NULL;
	uint8_t *a = p + ((start - (uintptr_t)p) & (huge - 1));
	if (a > p)
		munmap(p, a - p);
	if (p + full > a + len)
		munmap(a + len, p + full - (a + len));
	madvise(a, len, MADV_HUGEPAGE);
	return a;
}

/* Bytes of [start, end) resident or swapped in pid's memory (pm: its
 * pagemap), or -errno. */
static int64_t resident(int pm, uint64_t start, uint64_t end)
{
	struct pc_region g[512];
	struct pc_scan_arg s = {
		.size = sizeof(s),
		.start = start,
		.end = end,
		.vec = (uintptr_t)g,
		.vec_len = ARRAY_SIZE(g),
		.category_anyof_mask = PC_PAGE_IS_PRESENT | PC_PAGE_IS_SWAPPED,
		.return_mask = PC_PAGE_IS_PRESENT | PC_PAGE_IS_SWAPPED,
	};
	int64_t n = 0;
	while (s.start < end) {
		long k = ioctl(pm, PC_PAGEMAP_SCAN, &s);
		if (k < 0)
			return negerrno();
		for (long i = 0; i < k; i++)
			n += (int64_t)(g[i].end - g[i].start);
		if (s.walk_end <= s.start)
			break;
		s.start = s.walk_end;
	}
	return n;
}

/* The start time of pid in clock ticks since boot, or 0. */
static uint64_t start_time(pid_t pid)
{
	uint64_t f[PROC_STAT_FIELDS];
	return proc_stat_read(pid, 0, f) >= 22 ? f[22] : 0;
}

/* Takes from warm (untracked already) the copy of area [start, end), if
 * it has one of exactly that range, into a: its mirror stays faulted in
 * (the first round copies into memory already there), its block entries
 * stay, all marked stale: what the mirror holds is no longer known. */
static void take_warm(struct precopy *warm, struct pc_area *a)
{
	for (size_t i = 0; warm && i < warm->n; i++) {
		struct pc_area *w = &warm->a[i];
		if (w->start != a->start || w->end != a->end || !w->mirror || !w->stale || !w->blocks)
			continue;
		a->mirror = w->mirror;
		a->stale = w->stale;
		a->blocks = w->blocks;
		w->mirror = w->stale = NULL;
		w->blocks = NULL;
		memset(a->stale, 1, nblocks(a));
		return;
	}
}

void precopy_untrack_wait(struct precopy *pc)
{
	if (!pc)
		return;
	if (pc->th_started)
		pthread_join(pc->th, NULL);
	pc->th_started = false;
	untrack(pc);
}

/* Whether the short walk (PAGEMAP_SCAN asking for PAGE_IS_WRITTEN
 * alone) can stand for the whole one at the freeze: besides the pages
 * written since their protection, it must report those dropped since
 * (MADV_DONTNEED), whose mirror copy is stale, including those whose page
 * table went with them (a huge page, or a page-table page freed once
 * empty: CONFIG_PT_RECLAIM), which the walk sees as a hole. Linux 6.18
 * reports all of them; a kernel that skips holes would have the freeze
 * save the old bytes. Seen once, on our own memory: four 2 MiB pieces,
 * the first populated with one page written and one dropped, the second
 * populated and dropped whole, the third a huge page dropped whole, the
 * fourth never touched. */
static bool short_walk;
static pthread_once_t short_walk_once = PTHREAD_ONCE_INIT;

static const char *short_walk_try(uint8_t *m, int uffd, int pm)
{
	const uint64_t piece = 2ull << 20;
	madvise(m, 2 * piece, MADV_NOHUGEPAGE);
	madvise(m + 2 * piece, piece, MADV_HUGEPAGE);
	memset(m, 1, 3 * piece);
	struct uffdio_api api = { .api = UFFD_API, .features = UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED };
	struct uffdio_register reg = { .range = { (uintptr_t)m, 4 * piece }, .mode = UFFDIO_REGISTER_MODE_WP };
	struct uffdio_writeprotect wp = { .range = { (uintptr_t)m, 4 * piece }, .mode = UFFDIO_WRITEPROTECT_MODE_WP };
	if (ioctl(uffd, UFFDIO_API, &api) < 0 || ioctl(uffd, UFFDIO_REGISTER, &reg) < 0 ||
	    ioctl(uffd, UFFDIO_WRITEPROTECT, &wp) < 0)
		return "write protection in async mode unavailable";
	m[5 * PAGE] = 2;
	madvise(m + 100 * PAGE, PAGE, MADV_DONTNEED);
	madvise(m + piece, 2 * piece, MADV_DONTNEED);
	/* the pages to be reported, and those not to be */
	uint8_t want[4 * 512] = { 0 };
	want[5] = want[100] = 1;
	memset(want + 512, 1, 1024);
	uint8_t got[4 * 512] = { 0 };
	struct pc_region g[64];
	struct pc_scan_arg sa = { .size = sizeof(sa), .start = (uintptr_t)m, .end = (uintptr_t)m + 4 * piece,
				  .vec = (uintptr_t)g, .vec_len = ARRAY_SIZE(g),
				  .category_mask = PC_PAGE_IS_WRITTEN, .return_mask = PC_PAGE_IS_WRITTEN };
	while (sa.start < sa.end) {
		long k = ioctl(pm, PC_PAGEMAP_SCAN, &sa);
		if (k < 0)
			return "PAGEMAP_SCAN failed";
		for (long i = 0; i < k; i++)
			memset(got + (g[i].start - (uintptr_t)m) / PAGE, 1, (g[i].end - g[i].start) / PAGE);
		if (sa.walk_end <= sa.start)
			break;
		sa.start = sa.walk_end;
	}
	for (size_t i = 0; i < sizeof(want); i++)
		if (want[i] > got[i])
			return i >= 512 ? "a page dropped with its page table is not reported as written"
					: "a page dropped or written is not reported as written";
	return NULL;
}

static void short_walk_probe(void)
{
	const uint64_t span = 8ull << 20;
	const char *why = "no memory";
	uint8_t *raw = map_anon(span + (2ull << 20));
	/* user faults only: all that an unprivileged caller may ask for */
	int uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | 1 /* UFFD_USER_MODE_ONLY */);
	int pm = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
	if (uffd < 0 || pm < 0)
		why = "no userfaultfd or pagemap";
	else if (raw)
		why = short_walk_try((uint8_t *)ALIGN_UP((uintptr_t)raw, 2ull << 20), uffd, pm);
	if (uffd >= 0)
		close(uffd);
	if (pm >= 0)
		close(pm);
	if (raw)
		munmap(raw, span + (2ull << 20));
	short_walk = !why;
	if (why)
		log_debug("the freeze walks every page table entry of a pre-copied area: %s", why);
}

int precopy_start(pid_t pid, struct keeper *k, struct precopy *warm, struct precopy **ret)
{
	struct vma *v = NULL;
	size_t nv = 0;
	char path[64];
	int r;

	*ret = NULL;
	pthread_once(&short_walk_once, short_walk_probe);
	struct precopy *pc = calloc(1, sizeof(*pc));
	if (!pc)
		return -ENOMEM;
	pc->pid = pid;
	pc->uffd = pc->pm = pc->mem = -1;
	pc->started = start_time(pid);
	r = keeper_make_uffd(k, &pc->uffd);
	if (r < 0)
		goto fail;
	struct uffdio_api api = { .api = UFFD_API,
				  .features = UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED };
	if (ioctl(pc->uffd, UFFDIO_API, &api) < 0) {
		r = err_set(negerrno(), "pid %d: userfaultfd write protection in async mode: %m (Linux 6.7 or later)",
			    pid);
		goto fail;
	}
	snprintf(path, sizeof(path), "/proc/%d/pagemap", pid);
	pc->pm = open(path, O_RDONLY | O_CLOEXEC);
	snprintf(path, sizeof(path), "/proc/%d/mem", pid);
	pc->mem = open(path, O_RDONLY | O_CLOEXEC);
	if (pc->pm < 0 || pc->mem < 0) {
		r = err_set(negerrno(), "pid %d: cannot open pagemap or mem: %m", pid);
		goto fail;
	}
	r = maps_read(pid, &v, &nv);
	if (r < 0)
		goto fail;
	for (size_t i = 0; i < nv; i++) {
		if (!trackable(&v[i]))
			continue;
		int64_t res = resident(pc->pm, v[i].start, v[i].end);
		uint64_t size = v[i].end - v[i].start;
		if (res < 0) {
			r = err_set((int)res, "pid %d: PAGEMAP_SCAN %" PRIx64 "-%" PRIx64 ": %s", pid, v[i].start,
				    v[i].end, strerror((int)-res));
			goto fail;
		}
		if (size - (uint64_t)res > MAX(PRECOPY_MAX_HOLES, (uint64_t)res)) {
			log_debug("pid %d: %" PRIx64 "-%" PRIx64 " not tracked: %" PRIu64 " MiB of %" PRIu64
				  " MiB populated",
				  pid, v[i].start, v[i].end, (uint64_t)res >> 20, size >> 20);
			struct pc_skip *ns = realloc(pc->skip, (pc->nskip + 1) * sizeof(*ns));
			if (!ns) {
				r = -ENOMEM;
				goto fail;
			}
			pc->skip = ns;
			ns[pc->nskip++] = (struct pc_skip){ v[i].start, v[i].end };
			continue;
		}
		if (fault_hit(FAULT_ENGINE_PRECOPY_REGISTER)) {
			r = err_set(-EIO, "pid %d: registering %" PRIx64 "-%" PRIx64 ": injected fault", pid, v[i].start,
				    v[i].end);
			goto fail;
		}
		struct uffdio_register reg = { .range = { v[i].start, v[i].end - v[i].start },
					       .mode = UFFDIO_REGISTER_MODE_WP };
		if (ioctl(pc->uffd, UFFDIO_REGISTER, &reg) < 0) {
			/* changed meanwhile, or a kind the kernel does not track:
			 * copied while frozen */
			log_debug("pid %d: %" PRIx64 "-%" PRIx64 " not tracked: %m", pid, v[i].start, v[i].end);
			continue;
		}
		struct pc_area *na = realloc(pc->a, (pc->n + 1) * sizeof(*na));
		if (!na) {
			r = -ENOMEM;
			goto fail;
		}
		pc->a = na;
		struct pc_area *a = &pc->a[pc->n++];
		*a = (struct pc_area){ v[i].start, v[i].end, NULL, NULL, NULL, NULL, false };
		take_warm(warm, a);
		if (!a->mirror)
			a->mirror = map_mirror(a->start, a->end - a->start);
		a->valid = map_anon((a->end - a->start) / PAGE);
		if (!a->stale)
			a->stale = map_anon(nblocks(a));
		if (!a->blocks)
			a->blocks = map_anon(nblocks(a) * sizeof(*a->blocks));
		if (!a->mirror || !a->valid || !a->stale || !a->blocks) {
			r = err_set(-ENOMEM, "pid %d: no memory for a copy of %" PRIx64 "-%" PRIx64, pid, a->start,
				    a->end);
			goto fail;
		}
		/* protected before the first copy: a write from now on shows.
		 * In pieces with pauses, like the removal: one walk of the
		 * whole area holds the process's faults off as long as it runs
		 * (~40 ms for 4 GiB) */
		for (uint64_t s = a->start, e; s < a->end; s = e) {
			e = piece_end(s, a->end);
			struct uffdio_writeprotect wp = { .range = { s, e - s }, .mode = UFFDIO_WRITEPROTECT_MODE_WP };
			if (ioctl(pc->uffd, UFFDIO_WRITEPROTECT, &wp) < 0) {
				r = err_set(negerrno(), "pid %d: write-protecting %" PRIx64 "-%" PRIx64 ": %m", pid, s,
					    (uint64_t)(s + wp.range.len));
				goto fail;
			}
			usleep(PRECOPY_PAUSE_US);
		}
	}
	vmas_free(v, nv);
	v = NULL;
	nv = 0;
	if (!pc->n) {
		r = err_set(-ENOENT, "pid %d: no private anonymous area of %llu KiB or more, mostly populated, to pre-copy",
			    pid, PRECOPY_MIN_AREA >> 10);
		goto fail;
	}
	*ret = pc;
	return 0;
fail:
	vmas_free(v, nv);
	precopy_free(pc);
	return r;
}

/* One process_vm_readv reads this much at most (the kernel stops short
 * at 2 GiB, MAX_RW_COUNT). */
#define COPY_CALL (32ull << 20)

/* Reads n runs (absolute addresses [s, e)) of the process into their
 * places in area a's mirror and marks them valid, up to 64 pieces and
 * COPY_CALL bytes a call. */
static int copy_runs(struct precopy *pc, struct pc_area *a, const struct pc_region *g, size_t n, bool frozen)
{
	struct iovec l[64], rm[64];
	size_t k = 0, i = 0;
	uint64_t at = n ? g[0].start : 0, batch = 0;
	while (i < n || k) {
		if (i < n && k < ARRAY_SIZE(l) && batch < COPY_CALL) {
			uint64_t len = MIN(g[i].end - at, COPY_CALL - batch);
			l[k] = (struct iovec){ a->mirror + (at - a->start), len };
			rm[k] = (struct iovec){ (void *)(uintptr_t)at, len };
			k++;
			batch += len;
			at += len;
			if (at == g[i].end && ++i < n)
				at = g[i].start;
			continue;
		}
		{
			size_t want = 0;
			for (size_t j = 0; j < k; j++)
				want += l[j].iov_len;
			if (fault_hit(FAULT_ENGINE_PRECOPY_COPY))
				return err_set(-EIO, "pid %d: pre-copy of %p: injected fault", pc->pid, rm[0].iov_base);
			ssize_t got = process_vm_readv(pc->pid, l, k, rm, k, 0);
			bool bad[ARRAY_SIZE(l)] = { false };
			if (got != (ssize_t)want) {
				/* a page process_vm_readv cannot read (PROT_NONE
				 * after an mprotect): /proc/PID/mem can. The process
				 * running, one it unmapped meanwhile is left invalid
				 * (the freeze sees whether it is still there). */
				for (size_t j = 0; j < k; j++) {
					if (pread_full(pc->mem, l[j].iov_base, l[j].iov_len, (uintptr_t)rm[j].iov_base) ==
					    (ssize_t)l[j].iov_len)
						continue;
					if (frozen)
						return err_set(got < 0 ? negerrno() : -EIO, "pid %d: reading %p: %m",
							       pc->pid, rm[j].iov_base);
					bad[j] = true;
					a->gaps = true;
				}
			}
			for (size_t j = 0; j < k; j++) {
				uint64_t off = (uintptr_t)rm[j].iov_base - a->start;
				/* changed or not, its blocks are hashed again */
				memset(a->stale + off / BLOCK, 1, (off + l[j].iov_len - 1) / BLOCK - off / BLOCK + 1);
				if (!bad[j])
					memset(a->valid + off / PAGE, 1, l[j].iov_len / PAGE);
			}
			pc->copied += want;
			k = 0;
			batch = 0;
		}
	}
	return 0;
}

/* Linux's page table markers are swap entries of the last swap type
 * (SWP_PTE_MARKER, 31 of 5 bits): PAGEMAP_SCAN counts them as swapped
 * pages and /proc/PID/pagemap shows them so, with that type. */
#define PM_SWAP (1ull << 62)
#define PM_SWAP_TYPE(e) ((e) & 0x1f)
#define PM_TYPE_MARKER 31

/* Copies the pages of [s, e), each swapped or a marker, that are swapped
 * (a marker has nothing to copy: the page was never touched); *copied
 * grows by what was. */
static int copy_swapped(struct precopy *pc, struct pc_area *a, uint64_t s, uint64_t e, uint64_t *copied)
{
	uint64_t pm[512];
	struct pc_region run[64];
	size_t n = 0;
	for (uint64_t at = s; at < e;) {
		size_t k = MIN(ARRAY_SIZE(pm), (e - at) / PAGE);
		ssize_t got = pread(pc->pm, pm, k * sizeof(pm[0]), (off_t)(at / PAGE * sizeof(pm[0])));
		if (got < (ssize_t)sizeof(pm[0]))
			return err_set(got < 0 ? negerrno() : -EIO, "pid %d: pagemap at %" PRIx64 ": %s", pc->pid, at,
				       got < 0 ? strerror(errno) : "short read");
		k = (size_t)got / sizeof(pm[0]);
		for (size_t i = 0; i < k; i++, at += PAGE) {
			if ((pm[i] & PM_SWAP) && PM_SWAP_TYPE(pm[i]) == PM_TYPE_MARKER)
				continue;
			*copied += PAGE;
			if (n && run[n - 1].end == at) {
				run[n - 1].end += PAGE;
				continue;
			}
			if (n == ARRAY_SIZE(run)) {
				int r = copy_runs(pc, a, run, n, false);
				if (r < 0)
					return r;
				n = 0;
			}
			run[n++] = (struct pc_region){ at, at + PAGE, 0 };
		}
	}
	return n ? copy_runs(pc, a, run, n, false) : 0;
}

/* One walk of area a: in the first round its populated pages, later the
 * pages written since the last walk (protected again by the same walk);
 * each copied into the mirror. *dirty grows by what was copied. */
static int scan_area(struct precopy *pc, struct pc_area *a, bool first, uint64_t *dirty)
{
	struct pc_region g[512];
	struct pc_scan_arg s = {
		.size = sizeof(s),
		.start = a->start,
		.end = a->end,
		.vec = (uintptr_t)g,
		.vec_len = ARRAY_SIZE(g),
	};
	if (first) {
		s.category_anyof_mask = PC_PAGE_IS_PRESENT | PC_PAGE_IS_SWAPPED;
		s.category_inverted = PC_PAGE_IS_PFNZERO;
		s.category_mask = PC_PAGE_IS_PFNZERO;
		s.return_mask = PC_PAGE_IS_PRESENT | PC_PAGE_IS_SWAPPED;
	} else {
		s.flags = PC_SCAN_WP_MATCHING | PC_SCAN_CHECK_WPASYNC;
		s.category_mask = PC_PAGE_IS_WRITTEN;
		s.return_mask = PC_PAGE_IS_WRITTEN;
	}
	while (s.start < a->end) {
		if (!first) {
			s.end = MIN(a->end, s.start + PRECOPY_SCAN_PIECE);
			if (s.start > a->start)
				usleep(PRECOPY_SCAN_PAUSE_US);
		}
		long k = ioctl(pc->pm, PC_PAGEMAP_SCAN, &s);
		if (k < 0)
			return err_set(negerrno(), "pid %d: PAGEMAP_SCAN %" PRIx64 "-%" PRIx64 ": %m", pc->pid, a->start,
				       a->end);
		if (first) {
			/* the marker of a page never touched reads as swapped:
			 * nothing to copy there */
			int r = 0;
			for (long i = 0, j = 0; i < k && r >= 0; i = j) {
				if (!(g[i].categories & PC_PAGE_IS_PRESENT)) {
					r = copy_swapped(pc, a, g[i].start, g[i].end, dirty);
					j = i + 1;
					continue;
				}
				for (j = i; j < k && (g[j].categories & PC_PAGE_IS_PRESENT); j++)
					*dirty += g[j].end - g[j].start;
				r = copy_runs(pc, a, &g[i], (size_t)(j - i), false);
			}
			if (r < 0)
				return r;
		} else {
			for (long i = 0; i < k; i++) {
				memset(a->valid + (g[i].start - a->start) / PAGE, 0, (g[i].end - g[i].start) / PAGE);
				*dirty += g[i].end - g[i].start;
			}
			int r = copy_runs(pc, a, g, (size_t)k, false);
			if (r < 0)
				return r;
		}
		if (s.walk_end <= s.start)
			break;
		s.start = s.walk_end;
	}
	return 0;
}

int precopy_round(struct precopy *pc)
{
	uint64_t dirty = 0, t0 = now_ns();
	for (size_t i = 0; i < pc->n; i++) {
		int r = scan_area(pc, &pc->a[i], pc->rounds == 0, &dirty);
		if (r < 0)
			return r;
	}
	if (!pc->rounds) {
		pc->first = dirty;
		/* From now on the copy lands on pages here and there: one
		 * where the mirror has a hole would fault in (and clear) a
		 * whole huge page. A second checkpoint after 1% of 1 GiB was
		 * written, a quarter of it never touched before, spent 0.7 s
		 * of its 0.8 s so; with small pages 10 MiB are copied in
		 * milliseconds. The huge pages already there stay. */
		for (size_t i = 0; i < pc->n; i++)
			madvise(pc->a[i].mirror, pc->a[i].end - pc->a[i].start, MADV_NOHUGEPAGE);
	}
	pc->rounds++;
	pc->dirty = dirty;
	log_debug("pid %d: pre-copy round %u: %" PRIu64 " KiB in %" PRIu64 " us", pc->pid, pc->rounds, dirty >> 10,
		  (now_ns() - t0) / 1000);
	return 0;
}

uint64_t precopy_dirty(const struct precopy *pc)
{
	return pc->dirty;
}

bool precopy_done(uint64_t dirty)
{
	return dirty <= PRECOPY_DONE_BYTES;
}

uint64_t precopy_tracked(const struct precopy *pc)
{
	return pc ? pc->first : 0;
}

void precopy_read_smaps(struct precopy *pc)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/smaps", pc->pid);
	free(pc->smaps);
	pc->smaps = NULL;
	if (read_file_full(path, &pc->smaps, NULL) < 0)
		pc->smaps = NULL;
}

uint64_t precopy_frozen_bytes(const struct precopy *pc)
{
	if (!pc || !pc->smaps)
		return UINT64_MAX;
	uint64_t kb = 0;
	bool tracked = false;
	for (const char *l = pc->smaps; *l; l += strcspn(l, "\n") + (l[strcspn(l, "\n")] != 0)) {
		unsigned long long s, e, v;
		if (sscanf(l, "%llx-%llx ", &s, &e) == 2) {
			tracked = false;
			for (size_t i = 0; i < pc->n && !tracked; i++)
				tracked = pc->a[i].start <= s && e <= pc->a[i].end;
		} else if (!tracked && (sscanf(l, "Anonymous: %llu", &v) == 1 || sscanf(l, "Pss_Shmem: %llu", &v) == 1)) {
			kb += v;
		}
	}
	return kb * 1024;
}

char *precopy_take_smaps(struct precopy *pc)
{
	char *t = pc ? pc->smaps : NULL;
	if (pc)
		pc->smaps = NULL;
	return t;
}

int precopy_lookup(struct precopy *pc, struct vma *v)
{
	if (!pc || pc->uffd < 0)
		return 0;
	for (size_t i = 0; i < pc->n; i++) {
		struct pc_area *a = &pc->a[i];
		if (v->start >= a->start && v->end <= a->end) {
			/* a later mmap over it is not registered: taken whole */
			if (!v->uffd_wp)
				return 0;
			v->mirror = a->mirror + (v->start - a->start);
			v->valid = a->valid + (v->start - a->start) / PAGE;
			v->complete = short_walk && !a->gaps && !fault_hit(FAULT_ENGINE_PRECOPY_LONG_WALK);
			/* the memory file's blocks are counted from v->start */
			if ((v->start - a->start) % BLOCK == 0) {
				v->blocks = a->blocks + (v->start - a->start) / BLOCK;
				v->stale = a->stale + (v->start - a->start) / BLOCK;
			}
			return 1;
		}
	}
	return 0;
}

int precopy_fill(struct precopy *pc, const struct vma *v)
{
	/* the runs' pages that are not valid, back to back */
	struct pc_region g[64];
	size_t k = 0;
	struct pc_area *a = NULL;
	for (size_t i = 0; i < pc->n && !a; i++)
		if (v->start >= pc->a[i].start && v->end <= pc->a[i].end)
			a = &pc->a[i];
	if (!a)
		return err_set(-EINVAL, "pid %d: %" PRIx64 "-%" PRIx64 " is not tracked", pc->pid, v->start, v->end);
	for (size_t i = 0; i < v->nruns; i++) {
		uint64_t s = v->runs[i].off, e = s + v->runs[i].len;
		for (uint64_t p = s; p < e;) {
			if (v->valid[p / PAGE]) {
				p += PAGE;
				continue;
			}
			uint64_t q = p;
			while (q < e && !v->valid[q / PAGE])
				q += PAGE;
			g[k++] = (struct pc_region){ v->start + p, v->start + q, 0 };
			p = q;
			if (k == ARRAY_SIZE(g)) {
				int r = copy_runs(pc, a, g, k, true);
				if (r < 0)
					return r;
				k = 0;
			}
		}
	}
	return k ? copy_runs(pc, a, g, k, true) : 0;
}

uint64_t precopy_read_bytes(const struct precopy *pc)
{
	return pc ? pc->copied : 0;
}

uint64_t precopy_held(const struct precopy *pc)
{
	uint64_t n = 0;
	for (size_t i = 0; pc && i < pc->n; i++) {
		const struct pc_area *a = &pc->a[i];
		n += (a->end - a->start) + (a->end - a->start) / PAGE + nblocks(a) * (1 + sizeof(*a->blocks));
	}
	return n;
}

/* Whether [s, e) is covered by areas of v (sorted), back to back, each
 * private anonymous memory. */
static bool covered(const struct vma *v, size_t nv, uint64_t s, uint64_t e)
{
	uint64_t at = s;
	for (size_t i = 0; i < nv && at < e; i++) {
		if (v[i].end <= at)
			continue;
		if (v[i].start > at || v[i].kind != VMA_ANON || v[i].shared)
			return false;
		at = v[i].end;
	}
	return at >= e;
}

int precopy_resume(struct precopy *pc, pid_t pid)
{
	struct vma *v = NULL;
	size_t nv = 0;
	int r;

	if (pc->pid != pid || pc->uffd < 0 || pc->th_started || !pc->started || start_time(pid) != pc->started)
		return err_set(-ESTALE, "pid %d: the tracking kept is of another process", pid);
	if (fault_hit(FAULT_ENGINE_TRACK_RESUME))
		return err_set(-ESTALE, "pid %d: resuming the tracking: injected fault", pid);
	r = maps_read(pid, &v, &nv);
	if (r < 0)
		return r;
	/* every tracked area still mapped where it was (an mprotect may
	 * have split it: the scans check each piece is still registered),
	 * and no new area worth tracking */
	for (size_t i = 0; i < pc->n && r >= 0; i++)
		if (!covered(v, nv, pc->a[i].start, pc->a[i].end))
			r = err_set(-ESTALE, "pid %d: the areas changed: %" PRIx64 "-%" PRIx64 " is no longer mapped as it was",
				    pid, pc->a[i].start, pc->a[i].end);
	for (size_t i = 0; i < nv && r >= 0; i++) {
		if (!trackable(&v[i]))
			continue;
		bool known = false;
		for (size_t j = 0; j < pc->n && !known; j++)
			known = v[i].start >= pc->a[j].start && v[i].end <= pc->a[j].end;
		for (size_t j = 0; j < pc->nskip && !known; j++)
			known = v[i].start == pc->skip[j].start && v[i].end == pc->skip[j].end;
		if (!known)
			r = err_set(-ESTALE, "pid %d: the areas changed: %" PRIx64 "-%" PRIx64 " is new", pid,
				    v[i].start, v[i].end);
	}
	vmas_free(v, nv);
	if (r < 0)
		return r;
	pc->copied = 0;
	pc->dirty = 0;
	free(pc->smaps);
	pc->smaps = NULL;
	return 0;
}

/* ---- kept from one checkpoint to the next (engine.h) -------------------- */

struct engine_track {
	struct precopy *pc;
	pid_t pid;
};

int track_wrap(struct precopy *pc, struct engine_track **ret)
{
	struct engine_track *t = calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	t->pc = pc;
	t->pid = pc->pid;
	*ret = t;
	return 0;
}

struct precopy *track_unwrap(struct engine_track *t)
{
	struct precopy *pc = t ? t->pc : NULL;
	free(t);
	return pc;
}

pid_t engine_track_pid(const struct engine_track *t)
{
	return t->pid;
}

uint64_t engine_track_bytes(const struct engine_track *t)
{
	return precopy_held(t->pc);
}

void engine_track_free(struct engine_track *t)
{
	if (!t)
		return;
	if (fault_hit(FAULT_ENGINE_TRACK_DIE_DROP))
		raise(SIGKILL);
	precopy_free(t->pc);
	free(t);
}
