/*
 * Lazy restore: the process runs before all its memory is back; the rest
 * arrives through userfaultfd on first touch, or from a fill in address
 * order meanwhile.
 *
 * The restore (restore.c) maps every area as usual. Of the private
 * anonymous ones (anon, heap, stack, deleted files) that saved more than
 * LAZY_MIN_AREA, only the pages the process touches first are written
 * now: around each thread's stack and instruction pointers, and its rseq
 * area (the kernel writes there when rseq is registered again). The other
 * data pages of the memory file are listed as to load. Just before the
 * credentials and seccomp filters go in, a userfaultfd is made inside the
 * process by injection, taken into ours with pidfd_getfd and closed there
 * (its descriptor table stays as the snapshot says); the areas are
 * registered for missing pages. Registration comes after every injected
 * call that could touch those pages, so that nothing of ours faults on a
 * page only we could serve.
 *
 * engine_lazy_serve() then answers faults (UFFDIO_COPY of the aligned
 * block around the page, from the memory file) and, between them, copies
 * the rest in address order. What must stay true:
 *  - a page to load is always at its snapshot address: mremap of a range
 *    holding some moves them, and they are copied to where they went at
 *    once (EVENT_REMAP); madvise(DONTNEED) and munmap drop them
 *    (EVENT_REMOVE, EVENT_UNMAP: such a page reads zero from then on);
 *  - a fault on a page not to load (a hole, one dropped, one loaded then
 *    zapped) gets a zero page, which is what the kernel would have given;
 *  - a child forked while loading (EVENT_FORK) has its own userfaultfd
 *    and the same pages to load, served alike;
 *  - a page that cannot be read is never mapped: the process (and its
 *    process group, which it leads: it is a session leader) is killed
 *    with SIGKILL and the reason returned;
 *  - if the loader dies before the end, a guardian process holding a copy
 *    of every userfaultfd still loading (the process's, and a forked
 *    child's, passed to it) kills the process and its group first, and
 *    lets the descriptors go (which drops the registrations) only once
 *    they are dead: none runs on with zero pages where its data should
 *    be. A child that left the group is not waited for.
 * Once every page is in, the descriptors are closed: the registration
 * goes and nothing of ours stays.
 *
 * One single-threaded loop does all of it, so a fault and the fill never
 * race for a page: a page is marked loaded only after its copy returned.
 *
 * A tree: each process has its own load (its areas, userfaultfd and
 * guardian), chained behind the first; engine_lazy_serve() serves each
 * in a thread of its own and says their progress together. A page of
 * one process that cannot be read kills every process of the tree: an
 * application does not run on in part.
 */
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "engine/engine-int.h"

#define PAGE 4096ull
/* Areas saving less than this are written at once: a fault costs more. */
#define LAZY_MIN_AREA (1ull << 20)
/* A fault loads the aligned block around its page. */
#define LAZY_FAULT_PAGES 16
/* The fill copies this much at a time, then looks for faults again. */
#define LAZY_FILL_PAGES 1024
/* Loaded at once around each thread's stack pointer. */
#define LAZY_STACK_BELOW (64ull << 10)
#define LAZY_STACK_ABOVE (16ull << 10)

struct lazy_area {
	uint64_t start, end;
	size_t first; /* index of its first page in the bitmaps */
	struct store_file *f;
	char name[64];
};

/* Pages still to load into one address space (the restored process, or
 * a child it forked meanwhile), through its userfaultfd. A page's bit is
 * its index in the areas (its snapshot address); it goes to that address
 * plus delta. Each address space has one entry with delta 0 (its own
 * descriptor, polled); an mremap of pages still to load moves their bits
 * into an entry of their own with the move's delta, on the same
 * descriptor, until they are copied where they went. */
struct lazy_client {
	int ufd;
	uint64_t *todo; /* bit set: page still to load */
	uint64_t left;  /* pages still to load */
	int64_t delta;  /* where they go: snapshot address + delta */
	bool moved;     /* a move's entry (not polled; the descriptor is its owner's) */
	int slot;       /* its descriptor's place in the guardian's copies, -1: none */
	bool main;      /* pages of the restored process itself (counted in loaded) */
};

/* A fault the copy could not answer yet (the address space was being
 * changed: EAGAIN); tried again after the next events are read. */
struct lazy_retry {
	int ufd;
	uint64_t addr;
};

struct engine_lazy {
	pid_t pid;
	int pidfd;
	int guard_w;   /* the guardian's socket (below) */
	pid_t guard;
	int guard_n;   /* descriptors passed to it so far (slots) */
	struct lazy_area *areas;
	size_t nareas, npages;
	uint64_t *todo; /* before registration: the restored process's */
	struct lazy_client *cl;
	size_t ncl;
	struct lazy_retry *retry;
	size_t nretry, cap_retry;
	uint64_t total, loaded; /* bytes of the restored process; loaded: atomic */
	size_t cursor;          /* the fill's next page */
	uint8_t *buf;
	int err;
	char why[512];
	struct store_snap *view; /* the process's directory of the snapshot, kept for the files */
	struct engine_lazy *next; /* the next process's load, in a tree */
};

static bool bit(const uint64_t *b, size_t i)
{
	return b[i / 64] >> (i % 64) & 1;
}

static void bit_set(uint64_t *b, size_t i)
{
	b[i / 64] |= 1ull << (i % 64);
}

static void bit_clear(uint64_t *b, size_t i)
{
	b[i / 64] &= ~(1ull << (i % 64));
}

/* The first set bit of b in [i, end), or end: a word at a time, so that
 * a large area with little left to load costs little. */
static size_t next_set(const uint64_t *b, size_t i, size_t end)
{
	while (i < end) {
		uint64_t w = b[i / 64] >> (i % 64);
		if (w)
			return MIN(i + (size_t)__builtin_ctzll(w), end);
		i = (i / 64 + 1) * 64;
	}
	return end;
}

int lazy_new(pid_t pid, struct engine_lazy **ret)
{
	struct engine_lazy *l = calloc(1, sizeof(*l));
	if (!l)
		return -ENOMEM;
	l->pid = pid;
	l->pidfd = -1;
	l->guard_w = -1;
	l->buf = malloc(LAZY_FILL_PAGES * PAGE);
	if (!l->buf) {
		free(l);
		return -ENOMEM;
	}
	*ret = l;
	return 0;
}

bool lazy_possible(const struct engine_restore_opts *o)
{
	_cleanup_free_ char *v = NULL;
	/* userfaultfd() handling faults of kernel code (a read() into a
	 * page not yet loaded) takes CAP_SYS_PTRACE, which a process restored
	 * for a user does not hold, unless the system allows it */
	if (!o || !o->set_creds || o->uid == 0)
		return true;
	return read_file_full("/proc/sys/vm/unprivileged_userfaultfd", &v, NULL) >= 0 && v[0] == '1';
}

/* Marks pages [a, b) of area x to load (or not) in bitmap t. */
static void mark(uint64_t *t, const struct lazy_area *x, uint64_t a, uint64_t b, bool todo)
{
	for (uint64_t p = a; p < b; p += PAGE)
		(todo ? bit_set : bit_clear)(t, x->first + (p - x->start) / PAGE);
}

static int grow(struct engine_lazy *l, size_t pages)
{
	size_t words = (l->npages + pages + 63) / 64, old = (l->npages + 63) / 64;
	struct lazy_area *na = realloc(l->areas, (l->nareas + 1) * sizeof(*na));
	if (!na)
		return -ENOMEM;
	l->areas = na;
	uint64_t *nt = realloc(l->todo, words * sizeof(*nt));
	if (!nt)
		return -ENOMEM;
	memset(nt + old, 0, (words - old) * sizeof(*nt));
	l->todo = nt;
	return 0;
}

/* Loads [a, b) of area x now, through fill, where it holds pages to
 * load; they are loaded then. */
static int load_now(struct engine_lazy *l, struct lazy_area *x, uint64_t a, uint64_t b, struct ctx *c,
		    const struct vma *v, lazy_fill_fn fill)
{
	a = MAX(ALIGN_DOWN(a, PAGE), x->start);
	b = MIN(ALIGN_UP(b, PAGE), x->end);
	for (uint64_t p = a; p < b;) {
		if (!bit(l->todo, x->first + (p - x->start) / PAGE)) {
			p += PAGE;
			continue;
		}
		uint64_t q = p;
		while (q < b && bit(l->todo, x->first + (q - x->start) / PAGE))
			q += PAGE;
		int r = fill(c, x->f, v, p - x->start, q - p);
		if (r < 0)
			return r;
		mark(l->todo, x, p, q, false);
		p = q;
	}
	return 0;
}

int lazy_area(struct engine_lazy *l, struct store_snap *snap, const struct vma *v, const struct proc_image *img,
	      struct ctx *c, lazy_fill_fn fill, bool *taken)
{
	struct lazy_area *x;
	uint64_t size = v->end - v->start, pos = 0, pages = 0;
	int r;

	*taken = false;
	if ((v->kind != VMA_ANON && v->kind != VMA_DELETED) || v->saved < LAZY_MIN_AREA)
		return 0;
	r = grow(l, size / PAGE);
	if (r < 0)
		return r;
	x = &l->areas[l->nareas];
	*x = (struct lazy_area){ .start = v->start, .end = v->end, .first = l->npages };
	vma_file_name(v, x->name, sizeof(x->name));
	r = store_file_open(snap, x->name, &x->f);
	if (r < 0)
		return r;
	l->nareas++;
	l->npages += size / PAGE;
	/* its data: a hole is a page of zeros, which a fresh mapping is */
	while (pos < size) {
		int64_t d = store_file_seek(x->f, pos, SEEK_DATA);
		if (d == -ENXIO)
			break;
		int64_t h = d < 0 ? d : store_file_seek(x->f, d, SEEK_HOLE);
		if (h < 0)
			return (int)h;
		d = ALIGN_DOWN(d, (int64_t)PAGE);
		h = MIN(ALIGN_UP((uint64_t)h, PAGE), size);
		mark(l->todo, x, x->start + d, x->start + h, true);
		pages += (h - d) / PAGE;
		pos = h;
	}
	l->total += pages * PAGE;
	*taken = true;
	/* what the process touches first comes first */
	for (size_t i = 0; i < img->nthreads && r >= 0; i++) {
		const struct thread_image *t = &img->threads[i];
		if (t->regs.rsp >= x->start && t->regs.rsp < x->end)
			r = load_now(l, x, t->regs.rsp - MIN(t->regs.rsp - x->start, LAZY_STACK_BELOW),
				     t->regs.rsp + LAZY_STACK_ABOVE, c, v, fill);
		if (r >= 0 && t->regs.rip >= x->start && t->regs.rip < x->end)
			r = load_now(l, x, t->regs.rip, t->regs.rip + 1, c, v, fill);
		if (r >= 0 && t->has_rseq && t->rseq_addr < x->end && t->rseq_addr + t->rseq_len > x->start)
			r = load_now(l, x, t->rseq_addr, t->rseq_addr + t->rseq_len, c, v, fill);
	}
	return r;
}

/* Everything still to load, now, through fill: when the process cannot
 * have a userfaultfd after all. */
static int load_all_now(struct engine_lazy *l, const struct proc_image *img, struct ctx *c, lazy_fill_fn fill)
{
	int r = 0;
	for (size_t i = 0; i < l->nareas && r >= 0; i++) {
		const struct vma *v = NULL;
		for (size_t k = 0; k < img->nvmas && !v; k++)
			if (img->vmas[k].start == l->areas[i].start)
				v = &img->vmas[k];
		r = v ? load_now(l, &l->areas[i], l->areas[i].start, l->areas[i].end, c, v, fill) : -EINVAL;
	}
	return r;
}

/* The guardian: a process of its own holding copies of the
 * userfaultfds still loading, slot 0 the restored process's. Messages on
 * its socket: 'A' with a descriptor (the next slot), 'C' with a slot
 * (uint32: that one is loaded, let it go), 'D' (all is loaded: exit). At
 * end of file (the loader died) it kills the process and its group,
 * waits for them to be gone, and only then lets go. */
#define LAZY_GUARD_SLOTS 1024
static _noreturn_ void guardian(int sock, int pidfd, int ufd, pid_t pid)
{
	static int fds[LAZY_GUARD_SLOTS];
	size_t n = 0;
	sigset_t all;

	sigfillset(&all);
	sigprocmask(SIG_SETMASK, &all, NULL);
	/* out of the caller's process group: ^C there must not reach it */
	setsid();
	fds[n++] = ufd;
	for (;;) {
		char b[8] = "";
		union {
			struct cmsghdr h;
			char buf[CMSG_SPACE(sizeof(int))];
		} u;
		struct iovec io = { b, sizeof(b) };
		struct msghdr m = { .msg_iov = &io, .msg_iovlen = 1, .msg_control = u.buf,
				    .msg_controllen = sizeof(u.buf) };
		ssize_t k = recvmsg(sock, &m, MSG_CMSG_CLOEXEC);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			break;
		struct cmsghdr *c = CMSG_FIRSTHDR(&m);
		int fd = -1;
		uint32_t slot;
		if (c && c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS)
			memcpy(&fd, CMSG_DATA(c), sizeof(fd));
		if (b[0] == 'D')
			_exit(0);
		if (b[0] == 'A' && fd >= 0 && n < LAZY_GUARD_SLOTS) {
			fds[n++] = fd;
			continue;
		}
		if (b[0] == 'C' && k >= 5) {
			memcpy(&slot, b + 1, sizeof(slot));
			if (slot < n && fds[slot] >= 0) {
				close(fds[slot]);
				fds[slot] = -1;
			}
		}
		if (fd >= 0)
			close(fd);
	}
	if (syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, NULL, 0) == 0)
		kill(-pid, SIGKILL);
	struct pollfd p = { .fd = pidfd, .events = POLLIN };
	poll(&p, 1, 10000);
	/* its children in its group too (10 s at most) */
	for (int i = 0; i < 1000 && kill(-pid, 0) == 0; i++) {
		struct timespec ts = { 0, 10 * 1000 * 1000 };
		nanosleep(&ts, NULL);
	}
	_exit(0);
}

/* Closes every descriptor but the n in keep (a forked child's). */
static void close_all_but(const int *keep, size_t n)
{
	unsigned from = 0;
	for (;;) {
		unsigned next = ~0u;
		for (size_t i = 0; i < n; i++)
			if ((unsigned)keep[i] >= from && (unsigned)keep[i] < next)
				next = (unsigned)keep[i];
		if (next > from)
			syscall(SYS_close_range, from, next == ~0u ? ~0u : next - 1, 0);
		if (next == ~0u)
			return;
		from = next + 1;
	}
}

static int start_guardian(struct engine_lazy *l, int ufd)
{
	int p[2];
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, p) < 0)
		return err_set(negerrno(), "restore of pid %d: socketpair: %m", l->pid);
	pid_t g = fork();
	if (g < 0) {
		int r = negerrno();
		close(p[0]);
		close(p[1]);
		return err_set(r, "restore of pid %d: fork of the guardian: %m", l->pid);
	}
	if (g == 0) {
		int keep[3] = { p[0], l->pidfd, ufd };
		close_all_but(keep, 3);
		guardian(p[0], l->pidfd, ufd, l->pid);
	}
	close(p[0]);
	l->guard_w = p[1];
	l->guard = g;
	l->guard_n = 1;
	return 0;
}

/* Tells the guardian: 'A' (fd: a descriptor to hold), 'C' (let slot go),
 * 'D' (done). */
static int guard_send(struct engine_lazy *l, char what, uint32_t slot, int fd)
{
	char b[5] = { what };
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(int))];
	} u;
	struct iovec io = { b, sizeof(b) };
	struct msghdr m = { .msg_iov = &io, .msg_iovlen = 1 };

	if (l->guard_w < 0)
		return -EPIPE;
	memcpy(b + 1, &slot, sizeof(slot));
	if (fd >= 0) {
		memset(&u, 0, sizeof(u));
		m.msg_control = u.buf;
		m.msg_controllen = sizeof(u.buf);
		struct cmsghdr *c = CMSG_FIRSTHDR(&m);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &fd, sizeof(fd));
	}
	return sendmsg(l->guard_w, &m, MSG_NOSIGNAL) == (ssize_t)sizeof(b) ? 0 : negerrno();
}

/* The guardian goes: its copies with it. */
static void guard_end(struct engine_lazy *l, bool done)
{
	if (l->guard_w < 0)
		return;
	if (done && guard_send(l, 'D', 0, -1) < 0)
		log_debug("pid %d: the guardian is gone", l->pid);
	close(l->guard_w);
	l->guard_w = -1;
	while (waitpid(l->guard, NULL, 0) < 0 && errno == EINTR)
		;
	l->guard = 0;
}

int lazy_register(struct engine_lazy *l, struct ctx *c, const struct proc_image *img, lazy_fill_fn fill)
{
	int64_t fd = -1;
	int ufd = -1, r;

	if (!l->nareas)
		return 0;
	if (fault_hit(FAULT_ENGINE_LAZY_UFFD))
		return err_set(-EIO, "restore of pid %d: userfaultfd: injected fault", l->pid);
	r = restore_sys(c, l->pid, SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK, 0, 0, 0, 0, 0, &fd, "userfaultfd");
	if (r == -EPERM || r == -ENOSYS) {
		/* this kernel or this process may not: everything now */
		log_debug("pid %d: no userfaultfd (%s): restored eagerly", l->pid, strerror(-r));
		err_clear();
		/* no entry is made: nothing is pending, the files close with l */
		return load_all_now(l, img, c, fill);
	}
	if (r < 0)
		return r;
	l->pidfd = (int)syscall(SYS_pidfd_open, l->pid, 0);
	if (l->pidfd >= 0)
		ufd = (int)syscall(SYS_pidfd_getfd, l->pidfd, (int)fd, 0);
	if (ufd < 0)
		r = err_set(negerrno(), "restore of pid %d: taking its userfaultfd: %m", l->pid);
	int q = restore_sys(c, l->pid, SYS_close, (uint64_t)fd, 0, 0, 0, 0, 0, NULL, "close of the userfaultfd");
	if (r < 0 || q < 0) {
		if (ufd >= 0)
			close(ufd);
		return r < 0 ? r : q;
	}
	struct uffdio_api api = {
		.api = UFFD_API,
		.features = UFFD_FEATURE_EVENT_FORK | UFFD_FEATURE_EVENT_REMAP | UFFD_FEATURE_EVENT_REMOVE |
			    UFFD_FEATURE_EVENT_UNMAP,
	};
	if (ioctl(ufd, UFFDIO_API, &api) < 0)
		r = err_set(negerrno(), "restore of pid %d: UFFDIO_API: %m", l->pid);
	for (size_t i = 0; i < l->nareas && r >= 0; i++) {
		struct uffdio_register reg = {
			.range = { l->areas[i].start, l->areas[i].end - l->areas[i].start },
			.mode = UFFDIO_REGISTER_MODE_MISSING,
		};
		if (ioctl(ufd, UFFDIO_REGISTER, &reg) < 0)
			r = err_set(negerrno(), "restore of pid %d: UFFDIO_REGISTER %lx-%lx: %m", l->pid,
				    (unsigned long)l->areas[i].start, (unsigned long)l->areas[i].end);
	}
	if (r >= 0)
		r = start_guardian(l, ufd);
	if (r >= 0) {
		l->cl = calloc(1, sizeof(*l->cl));
		r = l->cl ? 0 : -ENOMEM;
	}
	if (r < 0) {
		close(ufd);
		return r;
	}
	uint64_t left = 0;
	for (size_t i = 0; i < l->npages; i++)
		left += bit(l->todo, i);
	l->cl[0] = (struct lazy_client){ .ufd = ufd, .todo = l->todo, .left = left, .main = true, .slot = 0 };
	l->todo = NULL;
	l->ncl = 1;
	l->loaded = l->total - left * PAGE;
	return 0;
}

/* ---- serving --------------------------------------------------------------- */

static struct lazy_area *area_of(struct engine_lazy *l, uint64_t addr)
{
	for (size_t i = 0; i < l->nareas; i++)
		if (addr >= l->areas[i].start && addr < l->areas[i].end)
			return &l->areas[i];
	return NULL;
}

static size_t page_index(const struct lazy_area *x, uint64_t addr)
{
	return x->first + (addr - x->start) / PAGE;
}

/* Whether k still loads the page at snapshot address addr (in x). */
static bool wants(const struct lazy_client *k, const struct lazy_area *x, uint64_t addr)
{
	return bit(k->todo, page_index(x, addr));
}

static void loaded(struct engine_lazy *l, struct lazy_client *k, struct lazy_area *x, uint64_t addr)
{
	if (!wants(k, x, addr))
		return;
	bit_clear(k->todo, page_index(x, addr));
	k->left--;
	if (k->main)
		__atomic_add_fetch(&l->loaded, PAGE, __ATOMIC_RELAXED);
}

/* Drops pages [from, end) (indices, in area x) from what k loads. */
static void drop_pages(struct engine_lazy *l, struct lazy_client *k, struct lazy_area *x, size_t from, size_t end)
{
	for (size_t p = next_set(k->todo, from, end); p < end; p = next_set(k->todo, p + 1, end))
		loaded(l, k, x, x->start + (p - x->first) * PAGE);
}

/* Drops the pages of k whose place is in [a, b): they read zero now. */
static void drop(struct engine_lazy *l, struct lazy_client *k, uint64_t a, uint64_t b)
{
	a -= (uint64_t)k->delta;
	b -= (uint64_t)k->delta;
	for (size_t i = 0; i < l->nareas && k->left; i++) {
		struct lazy_area *x = &l->areas[i];
		uint64_t lo = MAX(a, x->start), hi = MIN(b, x->end);
		if (lo < hi)
			drop_pages(l, k, x, page_index(x, lo), page_index(x, hi));
	}
}

/* Drops everything k still loads: its address space is gone. */
static void drop_all(struct engine_lazy *l, struct lazy_client *k)
{
	for (size_t i = 0; i < l->nareas && k->left; i++)
		drop_pages(l, k, &l->areas[i], l->areas[i].first, page_index(&l->areas[i], l->areas[i].end));
}

static void wake(int ufd, uint64_t addr, uint64_t len)
{
	struct uffdio_range r = { addr, len };
	ioctl(ufd, UFFDIO_WAKE, &r);
}

/* Kills the process and its group (it leads one: a session leader), if
 * it is still there (the pidfd tells it from a process that took its
 * pid); true if it was. */
static bool kill_process(struct engine_lazy *l)
{
	if (l->pidfd < 0 || syscall(SYS_pidfd_send_signal, l->pidfd, SIGKILL, NULL, 0) < 0)
		return false;
	kill(-l->pid, SIGKILL);
	return true;
}

/* The process could not be given a page it needs: it dies, with its
 * group, rather than run on without it. */
static int fatal(struct engine_lazy *l, int r, const char *fmt, ...) _printf_(3, 4);
static int fatal(struct engine_lazy *l, int r, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(l->why, sizeof(l->why), fmt, ap);
	va_end(ap);
	l->err = r;
	kill_process(l);
	return r;
}

enum copy_result { COPY_DONE, COPY_AGAIN, COPY_GONE };

/* Copies pages [a, b) of area x (all to load by k) to their place;
 * marks them loaded. COPY_AGAIN: the address space is being changed (an
 * event waits to be read); COPY_GONE: the range is no longer there (or
 * the process is gone: k's descriptor then answers ESRCH). */
static int copy_pages(struct engine_lazy *l, struct lazy_client *k, struct lazy_area *x, uint64_t a, uint64_t b,
		      uint64_t mode, enum copy_result *res)
{
	uint64_t len = b - a, done = 0;
	ssize_t n;

	if (fault_hit(FAULT_ENGINE_DIE_LAZY))
		raise(SIGKILL);
	if (fault_hit(FAULT_ENGINE_LAZY_READ))
		n = err_set(-EIO, "injected fault");
	else
		n = store_file_pread(x->f, l->buf, len, a - x->start);
	if (n < 0)
		return fatal(l, (int)n, "%s: reading %" PRIu64 " bytes at %" PRIu64 ": %s", x->name, len,
			     a - x->start, *err_msg() ? err_msg() : strerror((int)-n));
	if ((uint64_t)n < len)
		memset(l->buf + n, 0, len - n);
	*res = COPY_DONE;
	while (done < len) {
		struct uffdio_copy cp = {
			.dst = a + done + (uint64_t)k->delta, .src = (uintptr_t)(l->buf + done), .len = len - done,
			.mode = mode,
		};
		int e = ioctl(k->ufd, UFFDIO_COPY, &cp) < 0 ? errno : 0;
		if (!e)
			cp.copy = (int64_t)(len - done);
		if (cp.copy > 0) {
			for (uint64_t p = 0; p < (uint64_t)cp.copy; p += PAGE)
				loaded(l, k, x, a + done + p);
			done += (uint64_t)cp.copy;
			continue;
		}
		e = cp.copy < 0 ? (int)-cp.copy : e;
		if (e == EEXIST) {
			/* there already: the process's own */
			loaded(l, k, x, a + done);
			done += PAGE;
			continue;
		}
		*res = e == EAGAIN ? COPY_AGAIN : COPY_GONE;
		if (e == ESRCH || e == EBADF)
			drop_all(l, k);
		if (e != EAGAIN && e != ENOENT && e != EFAULT && e != EINVAL && e != ESRCH)
			log_debug("pid %d: UFFDIO_COPY at %lx: %s", l->pid, (unsigned long)(a + done + k->delta),
				  strerror(e));
		break;
	}
	return 0;
}

/* Copies every page k loads of [a, b) in area x, a run at a time. */
static int copy_runs(struct engine_lazy *l, struct lazy_client *k, struct lazy_area *x, uint64_t a, uint64_t b,
		     uint64_t mode, enum copy_result *res)
{
	*res = COPY_DONE;
	for (uint64_t p = a; p < b && *res == COPY_DONE;) {
		if (!wants(k, x, p)) {
			p += PAGE;
			continue;
		}
		uint64_t q = p;
		while (q < b && q - p < LAZY_FILL_PAGES * PAGE && wants(k, x, q))
			q += PAGE;
		int r = copy_pages(l, k, x, p, q, mode, res);
		if (r < 0)
			return r;
		p = q;
	}
	return 0;
}

static int defer(struct engine_lazy *l, int ufd, uint64_t addr)
{
	if (l->nretry == l->cap_retry) {
		size_t cap = l->cap_retry ? 2 * l->cap_retry : 16;
		struct lazy_retry *n = realloc(l->retry, cap * sizeof(*n));
		if (!n)
			return -ENOMEM;
		l->retry = n;
		l->cap_retry = cap;
	}
	l->retry[l->nretry++] = (struct lazy_retry){ ufd, addr };
	return 0;
}

/* A thread of the address space behind ufd waits for the page at addr:
 * the aligned block around it where a page is still to go there, else a
 * zero page (nothing of the snapshot's is there: what the kernel would
 * have given). */
static int on_fault(struct engine_lazy *l, int ufd, uint64_t addr)
{
	enum copy_result res = COPY_DONE;
	bool served = false;

	addr = ALIGN_DOWN(addr, PAGE);
	for (size_t i = 0; i < l->ncl && !served; i++) {
		struct lazy_client *k = &l->cl[i];
		uint64_t src = addr - (uint64_t)k->delta;
		struct lazy_area *x = k->ufd == ufd && k->left ? area_of(l, src) : NULL;
		if (!x || !wants(k, x, src))
			continue;
		uint64_t a = MAX(ALIGN_DOWN(src, LAZY_FAULT_PAGES * PAGE), x->start);
		uint64_t b = MIN(a + LAZY_FAULT_PAGES * PAGE, x->end);
		int r = copy_runs(l, k, x, a, b, 0, &res);
		if (r < 0)
			return r;
		served = true;
	}
	if (!served) {
		struct uffdio_zeropage z = { .range = { addr, PAGE } };
		int e = ioctl(ufd, UFFDIO_ZEROPAGE, &z) < 0 ? errno : 0;
		res = e == EAGAIN ? COPY_AGAIN : COPY_DONE;
	}
	if (res == COPY_AGAIN)
		return defer(l, ufd, addr);
	/* whatever happened, the thread tries again (a page already there,
	 * one loaded without waking, an area it unmapped meanwhile) */
	wake(ufd, addr, PAGE);
	return 0;
}

/* Appends an entry like l->cl[from], loading nothing yet (l->cl moves). */
static int add_entry(struct engine_lazy *l, size_t from, struct lazy_client **ret)
{
	size_t words = (l->npages + 63) / 64;
	struct lazy_client *n = realloc(l->cl, (l->ncl + 1) * sizeof(*n));
	uint64_t *t = calloc(words, sizeof(*t));
	if (n)
		l->cl = n;
	if (!n || !t) {
		free(t);
		return -ENOMEM;
	}
	l->cl[l->ncl] = (struct lazy_client){ .ufd = l->cl[from].ufd, .todo = t, .delta = l->cl[from].delta,
					      .moved = l->cl[from].moved, .main = l->cl[from].main, .slot = l->cl[from].slot };
	*ret = &l->cl[l->ncl++];
	return 0;
}

/* mremap moved [from, from + len) to `to` in the address space behind
 * ufd: the pages to load whose place was there go where it went. They
 * are copied once the move's other events are read (until then a copy
 * finds the address space changing); a fault there meanwhile finds them. */
static int on_remap(struct engine_lazy *l, int ufd, uint64_t from, uint64_t to, uint64_t len)
{
	size_t n = l->ncl;
	for (size_t i = 0; i < n; i++) {
		struct lazy_client *m;
		if (l->cl[i].ufd != ufd || !l->cl[i].left)
			continue;
		if (add_entry(l, i, &m) < 0)
			return fatal(l, -ENOMEM, "memory moved while loading: no memory");
		struct lazy_client *k = &l->cl[i];
		m->delta = k->delta + (int64_t)(to - from);
		m->moved = true;
		for (size_t a = 0; a < l->nareas; a++) {
			struct lazy_area *x = &l->areas[a];
			uint64_t lo = MAX(from - (uint64_t)k->delta, x->start);
			uint64_t hi = MIN(from + len - (uint64_t)k->delta, x->end);
			for (uint64_t p = lo; p < hi; p += PAGE)
				if (wants(k, x, p)) {
					bit_clear(k->todo, page_index(x, p));
					k->left--;
					bit_set(m->todo, page_index(x, p));
					m->left++;
				}
		}
	}
	return 0;
}

/* A child forked by the address space behind ufd (its own descriptor,
 * child): the same pages missing, and the same to load. */
static int on_fork(struct engine_lazy *l, int ufd, int child)
{
	size_t n = l->ncl;
	for (size_t i = 0; i < n; i++) {
		struct lazy_client *m;
		if (l->cl[i].ufd != ufd)
			continue;
		if (add_entry(l, i, &m) < 0) {
			close(child);
			return fatal(l, -ENOMEM, "a child forked while loading: no memory");
		}
		memcpy(m->todo, l->cl[i].todo, (l->npages + 63) / 64 * sizeof(*m->todo));
		m->left = l->cl[i].left;
		m->ufd = child;
		m->main = false;
		m->slot = -1;
	}
	/* the guardian holds the child's too, as long as it loads */
	if (l->guard_n < LAZY_GUARD_SLOTS && guard_send(l, 'A', 0, child) == 0) {
		for (size_t i = n; i < l->ncl; i++)
			if (l->cl[i].ufd == child)
				l->cl[i].slot = l->guard_n;
		l->guard_n++;
	} else {
		log_debug("pid %d: the guardian holds no copy of a forked child's userfaultfd", l->pid);
	}
	return 0;
}

/* Reads and handles what descriptor ufd holds; *any: something came. */
static int drain(struct engine_lazy *l, int ufd, bool *any)
{
	struct uffd_msg m[32];
	for (;;) {
		ssize_t n = read(ufd, m, sizeof(m));
		if (n <= 0) {
			/* EAGAIN: nothing more; anything else: the address
			 * space is gone, and so is what it was to load */
			if (n == 0 || (errno != EAGAIN && errno != EINTR))
				for (size_t i = 0; i < l->ncl; i++)
					if (l->cl[i].ufd == ufd)
						drop_all(l, &l->cl[i]);
			return 0;
		}
		*any = true;
		for (size_t i = 0; i < (size_t)n / sizeof(m[0]); i++) {
			int r = 0;
			switch (m[i].event) {
			case UFFD_EVENT_PAGEFAULT:
				r = on_fault(l, ufd, m[i].arg.pagefault.address);
				break;
			case UFFD_EVENT_REMOVE:
			case UFFD_EVENT_UNMAP:
				log_debug("pid %d: %s %llx-%llx while loading", l->pid,
					  m[i].event == UFFD_EVENT_REMOVE ? "removed" : "unmapped",
					  m[i].arg.remove.start, m[i].arg.remove.end);
				for (size_t k = 0; k < l->ncl; k++)
					if (l->cl[k].ufd == ufd)
						drop(l, &l->cl[k], m[i].arg.remove.start, m[i].arg.remove.end);
				break;
			case UFFD_EVENT_REMAP:
				log_debug("pid %d: moved %llx+%llx to %llx while loading", l->pid, m[i].arg.remap.from,
					  m[i].arg.remap.len, m[i].arg.remap.to);
				r = on_remap(l, ufd, m[i].arg.remap.from, m[i].arg.remap.to, m[i].arg.remap.len);
				break;
			case UFFD_EVENT_FORK:
				log_debug("pid %d: forked while loading", l->pid);
				r = on_fork(l, ufd, (int)m[i].arg.fork.ufd);
				break;
			default:
				break;
			}
			if (r < 0)
				return r;
		}
	}
}

/* Copies the next run still to load, in address order, for the first
 * entry that has one. */
static int fill_next(struct engine_lazy *l)
{
	for (size_t ki = 0; ki < l->ncl; ki++) {
		struct lazy_client *k = &l->cl[ki];
		if (!k->left)
			continue;
		size_t i = next_set(k->todo, l->cursor, l->npages);
		if (i == l->npages)
			i = next_set(k->todo, 0, l->npages);
		if (i < l->npages) {
			l->cursor = i;
			struct lazy_area *x = NULL;
			for (size_t j = 0; j < l->nareas && !x; j++)
				if (i >= l->areas[j].first && i < page_index(&l->areas[j], l->areas[j].end))
					x = &l->areas[j];
			uint64_t a = x->start + (l->cursor - x->first) * PAGE;
			enum copy_result res;
			int r = copy_runs(l, k, x, a, MIN(a + LAZY_FILL_PAGES * PAGE, x->end),
					  UFFDIO_COPY_MODE_DONTWAKE, &res);
			if (r < 0)
				return r;
			if (res == COPY_GONE)
				/* unmapped meanwhile; its event is on its way */
				l->cursor = (l->cursor + 1) % l->npages;
			return 0;
		}
		k->left = 0; /* none found: the count was off */
	}
	return 0;
}

/* Whether anything is still to load through ufd. */
static bool ufd_busy(const struct engine_lazy *l, int ufd)
{
	for (size_t i = 0; i < l->ncl; i++)
		if (l->cl[i].ufd == ufd && l->cl[i].left)
			return true;
	for (size_t i = 0; i < l->nretry; i++)
		if (l->retry[i].ufd == ufd)
			return true;
	return false;
}

/* Removes entry ki (done); an address space's own entry closes its
 * descriptor, which drops the registration. */
static void client_close(struct engine_lazy *l, size_t ki)
{
	struct lazy_client *k = &l->cl[ki];
	/* the guardian lets go of its copy first */
	if (!k->moved && k->slot >= 0 && guard_send(l, 'C', (uint32_t)k->slot, -1) < 0)
		log_debug("pid %d: the guardian is gone", l->pid);
	log_debug("pid %d: done with %s %d (delta %" PRId64 ")", l->pid, k->moved ? "a move on" : "descriptor", k->ufd,
		  k->delta);
	if (!k->moved)
		close(k->ufd);
	free(k->todo);
	l->cl[ki] = l->cl[--l->ncl];
}

static int serve_one(struct engine_lazy *l, void (*progress)(uint64_t loaded, uint64_t total, void *ud), void *ud)
{
	uint64_t last = 0;
	int r = 0;

	while (l->ncl && r >= 0) {
		struct pollfd p[64];
		size_t np = 0;
		bool work = false, any = false;
		for (size_t i = 0; i < l->ncl; i++) {
			work |= l->cl[i].left > 0;
			if (!l->cl[i].moved && np < ARRAY_SIZE(p))
				p[np++] = (struct pollfd){ .fd = l->cl[i].ufd, .events = POLLIN };
		}
		/* with nothing to fill, only what the process does */
		if (poll(p, np, work || l->nretry ? 0 : 100) < 0 && errno != EINTR) {
			r = err_set(negerrno(), "pid %d: poll: %m", l->pid);
			break;
		}
		for (size_t i = 0; i < l->ncl && r >= 0; i++)
			if (!l->cl[i].moved)
				r = drain(l, l->cl[i].ufd, &any);
		/* faults that found the address space changing, again */
		size_t n = l->nretry;
		l->nretry = 0;
		for (size_t i = 0; i < n && r >= 0; i++)
			r = on_fault(l, l->retry[i].ufd, l->retry[i].addr);
		if (r >= 0 && !any)
			r = fill_next(l);
		/* done: moves go; an address space goes once what still came
		 * for it is read and nothing is left */
		for (size_t i = 0; i < l->ncl && r >= 0;) {
			struct lazy_client *k = &l->cl[i];
			bool more = false;
			if (k->left || (!k->moved && ufd_busy(l, k->ufd))) {
				i++;
				continue;
			}
			if (!k->moved)
				r = drain(l, k->ufd, &more);
			if (r >= 0 && !ufd_busy(l, l->cl[i].ufd))
				client_close(l, i);
			else
				i++;
		}
		uint64_t now = __atomic_load_n(&l->loaded, __ATOMIC_RELAXED);
		if (progress && now != last && (now - last >= (64ull << 20) || now == l->total)) {
			progress(now, l->total, ud);
			last = now;
		}
	}
	if (r < 0 && l->err)
		return err_set(l->err, "pid %d killed: %s", l->pid, l->why);
	if (r >= 0)
		guard_end(l, true);
	return r;
}

void engine_lazy_progress(const struct engine_lazy *l, uint64_t *loaded_bytes, uint64_t *total)
{
	*loaded_bytes = *total = 0;
	for (; l; l = l->next) {
		*loaded_bytes += __atomic_load_n(&l->loaded, __ATOMIC_RELAXED);
		*total += l->total;
	}
}

/* A tree's loads, each in a thread: their progress said together, one
 * caller at a time. */
struct serve_all {
	struct engine_lazy *head, *l;
	void (*progress)(uint64_t loaded, uint64_t total, void *ud);
	void *ud;
	pthread_mutex_t *lock;
	int r;
	char err[512];
};

static void progress_all(uint64_t loaded, uint64_t total, void *ud)
{
	struct serve_all *a = ud;
	(void)loaded;
	(void)total;
	pthread_mutex_lock(a->lock);
	engine_lazy_progress(a->head, &loaded, &total);
	a->progress(loaded, total, a->ud);
	pthread_mutex_unlock(a->lock);
}

static void *serve_thread(void *arg)
{
	struct serve_all *a = arg;
	a->r = serve_one(a->l, a->progress ? progress_all : NULL, a);
	if (a->r < 0)
		snprintf(a->err, sizeof(a->err), "%s", err_msg());
	/* one process of the application could not have its memory: none
	 * runs on without it (the others' loads end as they die) */
	if (a->r < 0)
		for (struct engine_lazy *x = a->head; x; x = x->next)
			kill_process(x);
	return NULL;
}

int engine_lazy_serve(struct engine_lazy *l, void (*progress)(uint64_t loaded, uint64_t total, void *ud), void *ud)
{
	if (!l->next)
		return serve_one(l, progress, ud);
	size_t n = 0;
	for (struct engine_lazy *x = l; x; x = x->next)
		n++;
	_cleanup_free_ struct serve_all *a = calloc(n, sizeof(*a));
	_cleanup_free_ pthread_t *t = calloc(n, sizeof(*t));
	pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
	if (!a || !t)
		return -ENOMEM;
	size_t started = 0;
	int r = 0;
	struct engine_lazy *x = l;
	for (size_t i = 0; i < n; i++, x = x->next) {
		a[i] = (struct serve_all){ .head = l, .l = x, .progress = progress, .ud = ud, .lock = &lock };
		if (pthread_create(&t[i], NULL, serve_thread, &a[i]) != 0) {
			/* not served: it must not run on without its pages */
			r = err_set(-EAGAIN, "pid %d: no thread to load its memory", x->pid);
			kill_process(x);
			break;
		}
		started++;
	}
	for (size_t i = 0; i < started; i++) {
		pthread_join(t[i], NULL);
		if (a[i].r < 0 && r >= 0)
			r = err_set(a[i].r, "%s", a[i].err);
	}
	return r;
}

void lazy_take_view(struct engine_lazy *l, struct store_snap *view)
{
	l->view = view;
}

bool lazy_pending(const struct engine_lazy *l)
{
	return l && l->ncl;
}

struct engine_lazy *lazy_chain(struct engine_lazy *head, struct engine_lazy *l)
{
	if (!lazy_pending(l)) {
		engine_lazy_close(l);
		return head;
	}
	if (!head)
		return l;
	struct engine_lazy *x = head;
	while (x->next)
		x = x->next;
	x->next = l;
	return head;
}

pid_t engine_lazy_pid(const struct engine_lazy *l)
{
	return l->pid;
}

void engine_lazy_close(struct engine_lazy *l)
{
	if (!l)
		return;
	engine_lazy_close(l->next);
	/* not done: the process cannot get its pages any more */
	if (l->ncl && kill_process(l)) {
		struct pollfd p = { .fd = l->pidfd, .events = POLLIN };
		poll(&p, 1, 10000);
	}
	while (l->ncl)
		client_close(l, l->ncl - 1);
	guard_end(l, true);
	for (size_t i = 0; i < l->nareas; i++)
		store_file_close(l->areas[i].f);
	store_snap_close(l->view);
	if (l->pidfd >= 0)
		close(l->pidfd);
	free(l->cl);
	free(l->areas);
	free(l->todo);
	free(l->retry);
	free(l->buf);
	free(l);
}
