/*
 * engine_restore(): bring a snapshot back to life, a process with all its
 * descendants, with their PIDs and thread IDs, leaving nothing of ours
 * inside them.
 *
 * How:
 *  0. Everything is read and checked first: the tree, every process's
 *     image, what they share; their pids and thread ids must be free (a
 *     zombie holding one is waited for, tree/pidwait.c). The shared memory
 *     objects are made here, one memfd each (a deleted file's, an
 *     unnamed file in its old directory), filled; a SysV segment the
 *     snapshot's `ipc` names is found again or made with its id instead
 *     (ipc.c), and attached by each process in step 3; so are the
 *     semaphore sets and message queues it names.
 *  1. We fork an intermediate process: it takes the credentials the
 *     caller names, puts the shared memory objects and the shared
 *     descriptions (fds_open_shared) above every descriptor number the
 *     processes use, creates the root with clone3(set_tid = its PID) and
 *     exits at once, so that the root is re-parented (to init or the
 *     nearest subreaper) and needs nobody of ours to wait for it.
 *  2. Each process P runs our ordinary C code (tree_child()), all signals
 *     blocked: its session or group, its children forked with their PIDs
 *     (so that it is their parent), then once every group exists the group
 *     it joins; a zombie dies as it did; a live one sets its personality,
 *     umask, cwd, rlimits, sigactions, itimers, descriptors
 *     (fds_restore(), the shared ones from what it inherited), reports
 *     through a shared page and waits. A child that shares its parent's
 *     descriptor table or filesystem context (the tree's files=, fs=) is
 *     forked with CLONE_FILES or CLONE_FS and leaves the table, or the
 *     cwd and umask, to the first process of its group.
 *  3. We seize each P and drive it by injecting system calls through a
 *     `syscall` instruction of its vDSO: map a scratch page free in both
 *     layouts, drop P's rseq registration, unmap P's whole old layout, move
 *     the vDSO areas to the image's addresses, map every image area and
 *     fill it (process_vm_writev; a shared memory area maps its object
 *     from the descriptor P inherited, then closes them), set the mm fields and exe link
 *     (PR_SET_MM_MAP), create the other threads with clone3(set_tid), give
 *     every thread its robust list, rseq, clear-child-tid address,
 *     alternate stack, make the posix timers again with their IDs, queue
 *     the pending signals, unmap the scratch page, and finally
 *     park each thread in the kernel's signal path, set its registers,
 *     xstate and signal mask. Once every process is ready, all are
 *     detached: the tree runs again together.
 *  4. A CUDA process (the snapshot has gpu/info) comes back CHECKPOINTED
 *     on the GPU: its device memory is in the host memory just restored.
 *     Once detached, its driver's restore thread runs and we ask the
 *     driver to restore (device memory goes back to the GPU) and unlock;
 *     its own threads' CUDA calls wait meanwhile. A failure there kills
 *     it. A snapshot with gpu/info is refused up front where this machine
 *     has no usable driver.
 * Anything failing before the detach kills every process made; nothing
 * half-restored runs.
 * P starts with our credentials, or with those the caller names in
 * engine_restore_opts (taken in step 2, before P opens anything of the
 * image). The last injected steps give each thread the image's
 * credentials, then its seccomp filters (final_steps(), sandbox/creds.c,
 * sandbox/seccomp.c); creds_check() refused, before anything was built, an image
 * whose credentials we could not have granted. An image without them
 * keeps ours (or the caller's named ones, without any capability).
 */
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/futex.h>
#include <linux/sched.h>
#include <sched.h>
#include <signal.h>
#include <elf.h>
#include <sys/mman.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/shm.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>

#include "engine/engine-int.h"
#include "engine/fds/fds.h"
#include "gpu/gpu.h"

#ifndef PTRACE_GET_RSEQ_CONFIGURATION
#define PTRACE_GET_RSEQ_CONFIGURATION 0x420f
#endif
#define RSEQ_FLAG_UNREGISTER_ 1

/* One process's report to the restoring caller. */
struct restore_slot {
	volatile int state; /* 0 starting, 1 ready and waiting, 2 failed */
	int err;
	char msg[512];
};

/* Shared between the restoring caller and every process of the tree being
 * built (a MAP_SHARED mapping, inherited across their forks). */
struct restore_sync {
	volatile int go;      /* the caller gave up: whoever still waits exits */
	volatile int forked;  /* processes that made their session and group and forked their children */
	struct restore_slot slot[];
};

#define SCRATCH_SIZE RESTORE_SCRATCH_SIZE

struct ctx {
	pid_t pid;
	struct proc_image *img;
	struct fd_image *fds;
	struct store_snap *snap;
	const struct engine_restore_opts *o;
	struct user_regs_struct base; /* registers injections start from */
	uint64_t ip;                  /* a syscall instruction in P's vDSO */
	uint64_t vdso_off;
	uint64_t scratch;
	uint8_t *buf; /* transfer buffer */
	size_t buf_len;
	uint64_t done, total;
	int shm_base; /* the tree's shared memory objects: shm_base + id in P, -1: none */
	const int *sysv; /* sysv[id]: the shmid of object id, a SysV segment; -1: a descriptor */
	bool shm_keep; /* they stay open: a process driven later shares P's descriptor table */
	struct engine_lazy *lazy; /* a lazy restore: the areas left to it (lazy.c), or NULL */
};

/* ---- the new process ----------------------------------------------------- */

static _noreturn_ void child_fail(struct restore_slot *slot, int r, const char *what)
{
	snprintf(slot->msg, sizeof(slot->msg), "%s: %s%s%s", what, strerror(-r), *err_msg() ? ": " : "",
		 err_msg());
	slot->err = r;
	__atomic_store_n(&slot->state, 2, __ATOMIC_SEQ_CST);
	_exit(1);
}

/* Sets P's capability sets: effective = permitted = keep, nothing
 * inheritable (which also clears the ambient set). */
static int caps_set(uint64_t keep)
{
	struct __user_cap_header_struct h = { .version = _LINUX_CAPABILITY_VERSION_3 };
	struct __user_cap_data_struct d[2] = {
		{ .effective = (uint32_t)keep, .permitted = (uint32_t)keep },
		{ .effective = (uint32_t)(keep >> 32), .permitted = (uint32_t)(keep >> 32) },
	};
	return syscall(SYS_capset, &h, d) < 0 ? negerrno() : 0;
}

/* P takes the requested credentials before it touches anything of the
 * image, so that the cwd, descriptors, mapped files and rlimits are
 * opened and set with the rights of whoever asked. Raw system calls: P
 * came from clone3 and libc's set*id broadcast to threads must not run.
 * A non-root target keeps CAP_CHECKPOINT_RESTORE, for the steps we still
 * inject (clone3 with set_tid for its threads, PR_SET_MM_MAP's exe link),
 * and CAP_SETUID, CAP_SETGID and CAP_SETPCAP, with which each thread
 * narrows itself to the image's credentials (sandbox/creds.c: groups, the
 * bounding set, securebits; creds_check() allowed only the user's ids);
 * those steps, or creds_final() for a snapshot without credentials, take
 * every one of them away from every thread before it runs. None of them
 * opens a file the user could not: that is the fs uid's and
 * CAP_DAC_*'s business. */
static int creds_take(const struct engine_restore_opts *o)
{
	if (syscall(SYS_setgroups, o->ngroups, o->groups) < 0)
		return err_set(negerrno(), "setgroups: %m");
	if (syscall(SYS_setresgid, o->gid, o->gid, o->gid) < 0)
		return err_set(negerrno(), "setresgid(%u): %m", (unsigned)o->gid);
	if (o->uid == 0)
		return syscall(SYS_setresuid, 0, 0, 0) < 0 ? err_set(negerrno(), "setresuid(0): %m") : 0;
	/* keep the permitted set across the change of uid, then narrow it */
	if (prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) < 0)
		return err_set(negerrno(), "PR_SET_KEEPCAPS: %m");
	if (syscall(SYS_setresuid, o->uid, o->uid, o->uid) < 0)
		return err_set(negerrno(), "setresuid(%u): %m", (unsigned)o->uid);
	int r = caps_set(1ull << CAP_CHECKPOINT_RESTORE | 1ull << CAP_SETUID | 1ull << CAP_SETGID |
			 1ull << CAP_SETPCAP);
	if (r < 0)
		return err_set(r, "capset: %s", strerror(-r));
	if (prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0) < 0)
		return err_set(negerrno(), "PR_SET_KEEPCAPS: %m");
	return 0;
}

#ifndef PR_TIMER_CREATE_RESTORE_IDS
#define PR_TIMER_CREATE_RESTORE_IDS 77
#endif

static void ptimer_event(const struct ptimer *t, struct sigevent *ev, struct itimerspec *v)
{
	memset(ev, 0, sizeof(*ev));
	ev->sigev_notify = t->notify;
	ev->sigev_signo = t->signo;
	ev->sigev_value.sival_ptr = (void *)(uintptr_t)t->value;
	if (t->notify == SIGEV_THREAD_ID)
		ev->_sigev_un._tid = t->tid;
	/* As for ITIMER_REAL: a periodic timer whose signal was pending
	 * reads 0 left; it goes on an interval later. */
	*v = t->spec;
	if (!v->it_value.tv_sec && !v->it_value.tv_nsec)
		v->it_value = v->it_interval;
}

/* One process of the tree being restored. */
struct prestore {
	struct proc_image img;
	struct fd_image *fds;
	struct store_snap *dir; /* its directory of the snapshot (a view) */
	bool gpu;               /* it holds CUDA state */
	struct seized s;
	bool attached;
};

/* What the restore of a tree shares with each process it forks: all of
 * it in memory, inherited; nothing of the store is read in there. */
struct tree_build {
	const struct tree *t;
	struct prestore *p; /* p[i]: process t->v[i] */
	struct fd_image *shared; /* what several of them share (shared/fds) */
	int shared_base;         /* where: shared id k is descriptor base + k */
	int shm_base;            /* the shared memory objects: id k at shm_base + k, -1: none */
	struct restore_sync *sync;
	const struct engine_restore_opts *o;
};

/* Waits on a futex word until cond holds or the caller gives up (go);
 * false after about a minute: whoever started us has vanished. */
static bool wait_until(struct restore_sync *sync, volatile int *word, int want)
{
	for (int i = 0; i < 600; i++) {
		int v = __atomic_load_n(word, __ATOMIC_SEQ_CST);
		if (v >= want)
			return true;
		if (sync->go)
			return false;
		struct timespec ts = { 0, 100 * 1000 * 1000 };
		syscall(SYS_futex, word, FUTEX_WAIT, v, &ts, NULL, 0);
	}
	return false;
}

/* A process of the tree, as ordinary C code in a copy of the restorer:
 * its session and group, its children (forked with their IDs, so that
 * they are its children), then, once every process has made its group,
 * the group it joins; a zombie then dies as it did; a live process sets
 * what it can set from inside (personality, cwd, rlimits, sigactions,
 * itimers, descriptors), reports ready and waits to be seized and given
 * its memory by the restoring caller. */
static _noreturn_ void tree_child(struct tree_build *B, size_t i)
{
	const struct tree *t = B->t;
	const struct tree_node *n = &t->v[i];
	struct restore_slot *slot = &B->sync->slot[i];
	struct proc_image *img = &B->p[i].img;
	sigset_t all, chld;
	int r;

	/* Every signal blocked but SIGCHLD, left at its default: a child of
	 * ours that dies as the zombie it was must not queue one here. */
	sigfillset(&all);
	sigdelset(&all, SIGCHLD);
	sigprocmask(SIG_SETMASK, &all, NULL);
	signal(SIGCHLD, SIG_DFL);
	pid_t fg = 0;
	if (i == 0 || tree_sid(t, i) == n->pid) {
		if (setsid() < 0)
			child_fail(slot, negerrno(), "setsid");
		/* before any child is forked: each inherits it */
		r = fds_ctty_take(B->shared, B->shared_base, n->pid, &fg);
		if (r < 0)
			child_fail(slot, r, "controlling terminal");
	} else if (tree_pgid(t, i) == n->pid && setpgid(0, 0) < 0) {
		child_fail(slot, negerrno(), "setpgid");
	}
	for (size_t j = i + 1; j < t->n; j++) {
		if (t->v[j].ppid != n->pid)
			continue;
		pid_t want = t->v[j].pid;
		/* a child sharing our table or context shares it again (the
		 * tree guarantees we are in its group, tree_check) */
		struct clone_args ca = {
			.flags = (t->v[j].files ? CLONE_FILES : 0) | (t->v[j].fs ? CLONE_FS : 0),
			.exit_signal = SIGCHLD,
			.set_tid = (uintptr_t)&want,
			.set_tid_size = 1,
		};
		long c = syscall(SYS_clone3, &ca, sizeof(ca));
		if (c == 0)
			tree_child(B, j);
		if (c < 0) {
			r = negerrno();
			child_fail(slot, r, r == -EEXIST ? "a child's pid is in use" : "clone3 of a child");
		}
	}
	__atomic_add_fetch(&B->sync->forked, 1, __ATOMIC_SEQ_CST);
	syscall(SYS_futex, &B->sync->forked, FUTEX_WAKE, INT32_MAX, NULL, NULL, 0);
	/* Groups are joined once every leader has made its own. */
	if (!wait_until(B->sync, &B->sync->forked, (int)t->n))
		_exit(1);
	if (getpgid(0) != tree_pgid(t, i) && setpgid(0, tree_pgid(t, i)) < 0)
		child_fail(slot, negerrno(), "setpgid");
	/* every group leader made its group before the wait above */
	for (size_t k = 0; fg && k < t->n; k++) {
		if (t->v[k].pgid != fg)
			continue;
		r = fds_ctty_foreground(B->shared, B->shared_base, n->pid, tree_pgid(t, k));
		if (r < 0)
			child_fail(slot, r, "foreground group");
		break;
	}
	if (n->zombie) {
		int st = n->exit_status;
		if (WIFSIGNALED(st)) {
			/* killed by it again, without a core file */
			struct rlimit none = { 0, 0 };
			setrlimit(RLIMIT_CORE, &none);
			signal(WTERMSIG(st), SIG_DFL);
			sigemptyset(&chld);
			sigaddset(&chld, WTERMSIG(st));
			sigprocmask(SIG_UNBLOCK, &chld, NULL);
			/* raw: libc's cached thread ID is the restorer's */
			syscall(SYS_kill, syscall(SYS_getpid), WTERMSIG(st));
		}
		_exit(WEXITSTATUS(st));
	}
	/* our zombies dead before our own signal state is set */
	for (size_t j = i + 1; j < t->n; j++) {
		siginfo_t si;
		if (t->v[j].ppid != n->pid || !t->v[j].zombie)
			continue;
		while (waitid(P_PID, t->v[j].pid, &si, WEXITED | WNOWAIT) < 0)
			if (errno != EINTR)
				child_fail(slot, negerrno(), "waiting for a zombie child");
	}
	sigfillset(&all);
	sigprocmask(SIG_SETMASK, &all, NULL);

	if (personality((unsigned long)img->personality) < 0)
		child_fail(slot, negerrno(), "personality");
	/* A filesystem context or descriptor table shared with an earlier
	 * process (CLONE_FS, CLONE_FILES) is that one's to set up: it is the
	 * same object, and every process was forked before any of us got
	 * here (the wait above), so that none forked a copy of a half-made
	 * table. */
	if (!n->fs) {
		umask(img->umask);
		if (img->cwd_deleted) {
			/* "PATH (deleted)": made again empty beside PATH,
			 * entered and removed */
			size_t len = strlen(img->cwd), sl = strlen(" (deleted)");
			_cleanup_free_ char *path = strndup(img->cwd, len >= sl && !strcmp(img->cwd + len - sl, " (deleted)")
									      ? len - sl : len);
			if (!path)
				child_fail(slot, -ENOMEM, "cwd");
			int d = fds_deleted_dir_open(path, img->cwd_mode, img->cwd_uid, img->cwd_gid, NULL, O_PATH);
			if (d < 0)
				child_fail(slot, d, "cwd");
			if (fchdir(d) < 0)
				child_fail(slot, negerrno(), img->cwd);
			close(d);
		} else if (chdir(img->cwd) < 0) {
			child_fail(slot, negerrno(), img->cwd);
		}
	}
	for (int k = 0; k < RLIM_NLIMITS; k++) {
		struct rlimit rl = img->rlim[k];
		if (setrlimit(k, &rl) < 0) {
			/* a caller without the power to raise a hard limit
			 * keeps its own: the restore runs with its rights */
			struct rlimit cur;
			getrlimit(k, &cur);
			rl.rlim_max = cur.rlim_max;
			rl.rlim_cur = MIN(rl.rlim_cur, cur.rlim_max);
			setrlimit(k, &rl);
		}
	}
	for (int s = 1; img->has_sigact && s <= ENGINE_NSIG; s++) {
		if (s == SIGKILL || s == SIGSTOP)
			continue;
		if (syscall(SYS_rt_sigaction, s, &img->sigact[s], NULL, 8) < 0)
			child_fail(slot, negerrno(), "rt_sigaction");
	}
	for (int w = 0; w < 3; w++) {
		struct itimerval v = img->itimer[w];
		/* ITIMER_REAL is re-armed only when its SIGALRM is dequeued: a
		 * dump taken while SIGALRM was pending reads value 0 with an
		 * interval, which setitimer() would take as "disarm". The
		 * pending SIGALRM is queued again; the next comes an interval
		 * later. */
		if (!v.it_value.tv_sec && !v.it_value.tv_usec)
			v.it_value = v.it_interval;
		if (setitimer(w, &v, NULL) < 0)
			child_fail(slot, negerrno(), "setitimer");
	}
	r = n->files ? 0 : fds_restore(B->p[i].fds, B->shared, B->shared_base, B->shm_base);
	if (r < 0)
		child_fail(slot, r, "descriptors");
	__atomic_store_n(&slot->state, 1, __ATOMIC_SEQ_CST);
	/* Wait to be seized; we never run again after that. Should the
	 * restoring side vanish first, give up rather than linger. */
	wait_until(B->sync, &B->sync->go, 1);
	_exit(1);
}

/* ---- driving P ------------------------------------------------------------ */

static int sys(struct ctx *c, pid_t tid, long nr, uint64_t a1, uint64_t a2, uint64_t a3, uint64_t a4,
	       uint64_t a5, uint64_t a6, int64_t *ret, const char *what)
{
	int64_t v;
	int r = inject_syscall(tid, c->ip, &c->base, nr, a1, a2, a3, a4, a5, a6, &v);
	if (r < 0)
		return r;
	if (v < 0 && v > -4096)
		return err_set((int)v, "restore of pid %d: %s: %s", c->pid, what, strerror((int)-v));
	if (ret)
		*ret = v;
	return 0;
}

static int poke(struct ctx *c, uint64_t addr, const void *buf, size_t len)
{
	struct iovec l = { (void *)buf, len }, rm = { (void *)addr, len };
	ssize_t n = process_vm_writev(c->pid, &l, 1, &rm, 1, 0);
	if (n != (ssize_t)len)
		return err_set(n < 0 ? negerrno() : -EIO, "restore of pid %d: writing at %lx: %m", c->pid,
			       (unsigned long)addr);
	return 0;
}

int restore_sys(struct ctx *c, pid_t tid, long nr, uint64_t a1, uint64_t a2, uint64_t a3, uint64_t a4,
		uint64_t a5, uint64_t a6, int64_t *ret, const char *what)
{
	return sys(c, tid, nr, a1, a2, a3, a4, a5, a6, ret, what);
}

int restore_poke(struct ctx *c, uint64_t addr, const void *buf, size_t len)
{
	return poke(c, addr, buf, len);
}

uint64_t restore_scratch(const struct ctx *c)
{
	return c->scratch;
}

static int put_string(struct ctx *c, const char *s)
{
	size_t n = strlen(s) + 1;
	if (n > SCRATCH_SIZE)
		return err_set(-ENAMETOOLONG, "path too long: %.40s...", s);
	return poke(c, c->scratch, s, n);
}

static bool overlaps(uint64_t a, uint64_t b, const struct vma *v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (a < v[i].end && v[i].start < b)
			return true;
	return false;
}

static bool is_trio(enum vma_kind k)
{
	return k == VMA_VVAR || k == VMA_VVAR_VCLOCK || k == VMA_VDSO;
}

/* The image's vDSO areas must be this kernel's: same names, same sizes. */
static int check_vdso(const struct proc_image *img, const struct vma *mine, size_t nmine)
{
	for (int k = VMA_VVAR; k <= VMA_VDSO; k++) {
		uint64_t a = 0, b = 0;
		for (size_t i = 0; i < img->nvmas; i++)
			if (img->vmas[i].kind == (enum vma_kind)k)
				a += img->vmas[i].end - img->vmas[i].start;
		for (size_t i = 0; i < nmine; i++)
			if (mine[i].kind == (enum vma_kind)k)
				b += mine[i].end - mine[i].start;
		if (a != b)
			return err_set(-EXDEV,
				       "the snapshot comes from another kernel: its [%s] is %lu bytes, this kernel's %lu",
				       vma_kind_name(k), (unsigned long)a, (unsigned long)b);
	}
	const char *mine_hash = vdso_hash();
	if (img->vdso[0] && mine_hash && strcmp(img->vdso, mine_hash))
		return err_set(-EXDEV, "the snapshot comes from another kernel: its vDSO differs from this kernel's");
	return 0;
}

/* A private mapping's clean pages come from the file, so its content must
 * be the one dumped: size and mtime stand for it (unlike a descriptor's
 * file, a touch counts here, as a rewrite would). The caller's option to
 * accept changed files covers this too. */
static int file_unchanged(const struct engine_restore_opts *o, const struct vma *v)
{
	struct stat st;
	if (stat(v->path, &st) < 0)
		return err_set(negerrno(), "mapped file %s: %m", v->path);
	if (o && o->accept_changed_files)
		return 0;
	if ((uint64_t)st.st_size != v->fsize || st.st_mtim.tv_sec != v->mtime_sec ||
	    st.st_mtim.tv_nsec != v->mtime_nsec)
		return err_set(-ESTALE,
			       "mapped file %s changed since the checkpoint (size %ld mtime %ld.%09ld, was %lu "
			       "%ld.%09ld); " ENGINE_ACCEPT_HINT,
			       v->path, st.st_size, (long)st.st_mtim.tv_sec, st.st_mtim.tv_nsec,
			       (unsigned long)v->fsize, (long)v->mtime_sec, (long)v->mtime_nsec);
	return 0;
}

static void report(struct ctx *c)
{
	if (c->o && c->o->progress) {
		struct engine_progress p = { .phase = ENGINE_PHASE_RESTORE, .done = c->done, .total = c->total };
		c->o->progress(&p, c->o->ud);
	}
}

/* Copies [off, off+len) of a memory file into P at v->start + off. */
static int fill_range(struct ctx *c, struct store_file *f, const struct vma *v, uint64_t off, uint64_t len)
{
	while (len) {
		size_t n = MIN(len, c->buf_len);
		ssize_t k = store_file_pread(f, c->buf, n, off);
		if (k < 0)
			return (int)k;
		if ((size_t)k < n)
			memset(c->buf + k, 0, n - k);
		int r = poke(c, v->start + off, c->buf, n);
		if (r < 0)
			return r;
		off += n;
		len -= n;
		c->done += n;
		report(c);
	}
	return 0;
}

static int fill_area(struct ctx *c, const struct vma *v)
{
	char name[VMA_FILE_NAME_MAX];
	struct store_file *f;
	int r;

	vma_file_name(v, name, sizeof(name));
	r = store_file_open(c->snap, name, &f);
	if (r < 0)
		return r;
	if (v->kind == VMA_FILE_PRIVATE) {
		/* every saved page, zeros included: a hole here means a
		 * private page of zeros, not the file's content */
		for (size_t i = 0; i < v->nruns && r >= 0; i++)
			r = fill_range(c, f, v, v->runs[i].off, v->runs[i].len);
	} else {
		/* fresh anonymous memory is zero: only data ranges */
		uint64_t pos = 0, size = v->end - v->start;
		while (pos < size && r >= 0) {
			int64_t d = store_file_seek(f, pos, SEEK_DATA);
			if (d == -ENXIO)
				break;
			if (d < 0) {
				r = (int)d;
				break;
			}
			int64_t h = store_file_seek(f, d, SEEK_HOLE);
			if (h < 0) {
				r = (int)h;
				break;
			}
			if ((uint64_t)h > size)
				h = size;
			r = fill_range(c, f, v, d, h - d);
			pos = h;
		}
	}
	store_file_close(f);
	return r;
}

/* Copies the saved bytes of shared memory area v (its memory/ file in
 * snap) into its object at the area's offset in it: into fd, or, with
 * mem, into the object mapped whole at mem (a SysV segment). */
static int fill_object(struct store_snap *snap, const struct vma *v, int fd, uint8_t *mem, uint8_t *buf,
		       size_t buf_len, uint64_t *done)
{
	char name[VMA_FILE_NAME_MAX];
	struct store_file *f;
	vma_file_name(v, name, sizeof(name));
	int r = store_file_open(snap, name, &f);
	if (r < 0)
		return r;
	uint64_t pos = 0, size = v->end - v->start;
	while (pos < size && r >= 0) {
		int64_t d = store_file_seek(f, pos, SEEK_DATA);
		if (d == -ENXIO)
			break;
		int64_t h = d < 0 ? d : store_file_seek(f, d, SEEK_HOLE);
		if (h < 0) {
			r = (int)h;
			break;
		}
		h = MIN((uint64_t)h, size);
		for (uint64_t o = d; o < (uint64_t)h && r >= 0;) {
			size_t n = MIN((uint64_t)h - o, buf_len);
			ssize_t k = store_file_pread(f, buf, n, o);
			if (k < 0)
				r = (int)k;
			else if (mem)
				memcpy(mem + v->pgoff + o, buf, k);
			else
				r = pwrite_full(fd, buf, k, v->pgoff + o);
			o += n;
			if (done)
				*done += n;
		}
		pos = h;
	}
	store_file_close(f);
	return r;
}

int restore_area_bytes(struct ctx *c, const struct vma *v, uint8_t *out)
{
	memset(out, 0, v->end - v->start);
	/* at the area's offset 0 in out: pgoff is the object's, not ours */
	struct vma at0 = *v;
	at0.pgoff = 0;
	return fill_object(c->snap, &at0, -1, out, c->buf, c->buf_len, &c->done);
}

/* Fills a shared memory area of a format 1 snapshot through the memfd
 * made in P, seen from here. */
static int fill_shmem(struct ctx *c, const struct vma *v, int fd_in_p)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/fd/%d", c->pid, fd_in_p);
	_cleanup_close_ int fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return err_set(negerrno(), "restore of pid %d: cannot open its memfd: %m", c->pid);
	return fill_object(c->snap, v, fd, NULL, c->buf, c->buf_len, &c->done);
}

/* The memfd name a shared memory area had ("/memfd:NAME (deleted)"), or
 * one of ours for shared anonymous memory and SysV segments. */
static void shm_name(const struct vma *v, char *name, size_t len)
{
	snprintf(name, len, "ckptfs-shm");
	if (!strncmp(v->path, "/memfd:", 7))
		snprintf(name, len, "%.*s", (int)strcspn(v->path + 7, " "), v->path + 7);
}

/* A new file for the shared memory object that first maps: a deleted
 * file's is an unnamed file (O_TMPFILE) in the directory it lived in, on
 * the filesystem it was on, where that can be had; any other (shared
 * anonymous memory, a memfd, a SysV segment not mapped whole), and a
 * deleted file whose directory is gone or closed to us, a memfd. A memfd
 * of a memfd is sealable: a descriptor of the same file reopens it and
 * adds its own seals (F_SEAL_SEAL where it had none). */
static int shm_object_open(const struct vma *first)
{
	const char *p = first->path, *suffix = " (deleted)";
	size_t len = strlen(p), sl = strlen(suffix);
	char name[64];
	int fd;

	if (p[0] == '/' && strncmp(p, "/memfd:", 7) && strncmp(p, "/SYSV", 5) && strcmp(p, "/dev/zero (deleted)") &&
	    len > sl && !strcmp(p + len - sl, suffix)) {
		char dir[PATH_MAX];
		snprintf(dir, sizeof(dir), "%.*s", (int)(len - sl), p);
		char *slash = strrchr(dir, '/');
		slash[slash == dir ? 1 : 0] = 0;
		fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
		if (fd >= 0)
			return fd;
		log_debug("shared memory %s: no unnamed file in %s (%m): a memfd instead", p, dir);
	}
	shm_name(first, name, sizeof(name));
	fd = memfd_create(name, MFD_CLOEXEC | (strncmp(p, "/memfd:", 7) ? 0 : MFD_ALLOW_SEALING));
	return fd < 0 ? negerrno() : fd;
}

/* An area of SysV segment shmid: the segment is attached (shmat) where
 * the first area of each attach starts, whole (shm_make() checked that
 * the areas of an attach cover it, one after the other), writable or
 * executable if any area of that attach is; each area then gets its own
 * protection. */
static int map_sysv(struct ctx *c, const struct vma *v, int shmid)
{
	const struct vma *a = v, *end = c->img->vmas + c->img->nvmas;
	unsigned prot = PROT_READ;
	int64_t got;
	int r = 0;

	/* the attach's first area, then each one of it */
	while (a->pgoff && a > c->img->vmas)
		a--;
	for (const struct vma *b = a; b < end && b->has_shm && b->shm_id == v->shm_id && (b == a || b->pgoff);
	     b++)
		prot |= b->prot & (PROT_WRITE | PROT_EXEC);
	if (v->pgoff == 0) {
		r = sys(c, c->pid, SYS_shmat, (uint64_t)shmid, v->start,
			(prot & PROT_WRITE ? 0 : SHM_RDONLY) | (prot & PROT_EXEC ? SHM_EXEC : 0), 0, 0, 0, &got,
			"shmat of a SysV shared memory segment");
		if (r >= 0 && (uint64_t)got != v->start)
			r = err_set(-EIO, "restore of pid %d: SysV segment %d attached at %lx, not %lx", c->pid, shmid,
				    (unsigned long)got, (unsigned long)v->start);
	}
	if (r >= 0 && v->prot != prot)
		r = sys(c, c->pid, SYS_mprotect, v->start, v->end - v->start, v->prot, 0, 0, 0, &got, "mprotect");
	return r;
}

static int map_area(struct ctx *c, const struct vma *v)
{
	uint64_t len = v->end - v->start;
	int64_t fd = -1, ign;
	int r;

	if (fault_hit(FAULT_ENGINE_RESTORE_MAP))
		return err_set(-ENOMEM, "mapping %lx-%lx: injected fault", (unsigned long)v->start,
			       (unsigned long)v->end);
	/* map writable first when bytes must be written, then the real prot */
	bool fill = v->saved && v->kind != VMA_SHMEM;
	unsigned prot = v->prot | (fill ? PROT_READ | PROT_WRITE : 0);

	switch (v->kind) {
	case VMA_ANON:
	case VMA_DELETED:
		r = sys(c, c->pid, SYS_mmap, v->start, len, prot,
			MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE | (v->growsdown ? MAP_GROWSDOWN : 0) |
				(v->noreserve ? MAP_NORESERVE : 0),
			-1, 0, &ign, "mmap anonymous");
		break;
	case VMA_FILE_PRIVATE:
	case VMA_FILE_SHARED: {
		bool shared = v->kind == VMA_FILE_SHARED;
		/* a shared mapping's file is its content and may well have
		 * changed since (the process writes through it); a private
		 * one's clean pages come from the file and must be the same */
		r = shared ? 0 : file_unchanged(c->o, v);
		if (r < 0)
			return r;
		r = put_string(c, v->path);
		if (r < 0)
			return r;
		/* the mode the process had: a shared mapping made read-only
		 * from a descriptor open for writing may be mprotect()ed
		 * writable later, which needs VM_MAYWRITE, so a file open for
		 * writing again */
		r = sys(c, c->pid, SYS_openat, AT_FDCWD, c->scratch,
			(shared && ((v->prot & PROT_WRITE) || v->maywrite) ? O_RDWR : O_RDONLY) | O_CLOEXEC, 0, 0,
			0, &fd, v->path);
		if (r < 0)
			return r;
		r = sys(c, c->pid, SYS_mmap, v->start, len, prot,
			(shared ? MAP_SHARED : MAP_PRIVATE) | MAP_FIXED_NOREPLACE | (v->noreserve ? MAP_NORESERVE : 0),
			fd, v->pgoff, &ign,
			"mmap of a file");
		break;
	}
	case VMA_SHMEM: {
		if (v->has_shm && c->sysv && c->sysv[v->shm_id] >= 0)
			return map_sysv(c, v, c->sysv[v->shm_id]);
		if (v->has_shm) {
			/* its object, made once for the tree and inherited */
			if (c->shm_base < 0)
				return err_set(-EBADMSG, "area %lx: shared object %u, but the tree has none",
					       (unsigned long)v->start, v->shm_id);
			r = sys(c, c->pid, SYS_mmap, v->start, len, v->prot, MAP_SHARED | MAP_FIXED_NOREPLACE,
				(uint64_t)c->shm_base + v->shm_id, v->pgoff, &ign, "mmap of shared memory");
			return r;
		}
		char name[64];
		shm_name(v, name, sizeof(name));
		r = put_string(c, name);
		if (r >= 0)
			r = sys(c, c->pid, SYS_memfd_create, c->scratch, MFD_CLOEXEC, 0, 0, 0, 0, &fd,
				"memfd_create");
		if (r >= 0)
			r = sys(c, c->pid, SYS_ftruncate, fd, v->pgoff + len, 0, 0, 0, 0, &ign, "ftruncate");
		if (r >= 0)
			r = sys(c, c->pid, SYS_mmap, v->start, len, prot, MAP_SHARED | MAP_FIXED_NOREPLACE, fd,
				v->pgoff, &ign, "mmap of shared memory");
		if (r >= 0 && v->saved)
			r = fill_shmem(c, v, (int)fd);
		break;
	}
	default:
		return 0;
	}
	if (fd >= 0)
		sys(c, c->pid, SYS_close, fd, 0, 0, 0, 0, 0, NULL, "close");
	if (r < 0)
		return r;
	if (fill) {
		bool lazy = false;
		if (c->lazy)
			r = lazy_area(c->lazy, c->snap, v, c->img, c, fill_range, &lazy);
		if (r >= 0 && !lazy)
			r = fill_area(c, v);
		if (r >= 0 && prot != v->prot)
			r = sys(c, c->pid, SYS_mprotect, v->start, len, v->prot, 0, 0, 0, &ign, "mprotect");
	}
	return r;
}

/* Moves P's vDSO areas to the image's addresses, by way of tmp so that
 * no move lands on an area not yet moved. */
static int move_vdso(struct ctx *c, const struct vma *cur, size_t ncur, uint64_t tmp)
{
	for (int pass = 0; pass < 2; pass++) {
		uint64_t t = tmp;
		for (int k = VMA_VVAR; k <= VMA_VDSO; k++) {
			const struct vma *from = NULL, *to = NULL;
			for (size_t i = 0; i < ncur; i++)
				if (cur[i].kind == (enum vma_kind)k)
					from = &cur[i];
			for (size_t i = 0; i < c->img->nvmas; i++)
				if (c->img->vmas[i].kind == (enum vma_kind)k)
					to = &c->img->vmas[i];
			if (!from || !to)
				continue;
			uint64_t len = from->end - from->start;
			uint64_t src = pass == 0 ? from->start : t, dst = pass == 0 ? t : to->start;
			int64_t got;
			int r = sys(c, c->pid, SYS_mremap, src, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, dst, 0,
				    &got, "mremap of the vDSO");
			if (r < 0)
				return r;
			if (k == VMA_VDSO)
				c->ip = dst + c->vdso_off;
			t += len;
		}
	}
	return 0;
}

static int set_mm(struct ctx *c)
{
	const struct mm_fields *m = &c->img->mm;
	int64_t exe_fd, ign;
	int r = put_string(c, c->img->exe);
	if (r < 0)
		return r;
	r = sys(c, c->pid, SYS_openat, AT_FDCWD, c->scratch, O_RDONLY | O_CLOEXEC, 0, 0, 0, &exe_fd,
		c->img->exe);
	if (r < 0)
		return r;
	/* The kernel refuses to switch the exe link while the old exe file is
	 * still mapped; P's old exe is ours, and it is mapped again when the
	 * image is of a program that is ours too (a benchmark's child): then
	 * the link is already right. */
	struct stat a, b;
	bool same = stat(c->img->exe, &a) == 0 && stat("/proc/self/exe", &b) == 0 &&
		    a.st_dev == b.st_dev && a.st_ino == b.st_ino;
	struct prctl_mm_map mm = {
		.start_code = m->start_code, .end_code = m->end_code,
		.start_data = m->start_data, .end_data = m->end_data,
		.start_brk = m->start_brk,   .brk = m->brk,
		.start_stack = m->start_stack,
		.arg_start = m->arg_start,   .arg_end = m->arg_end,
		.env_start = m->env_start,   .env_end = m->env_end,
		.auxv = (void *)(uintptr_t)(c->scratch + 512),
		.auxv_size = c->img->auxv_len,
		.exe_fd = same ? (uint32_t)-1 : (uint32_t)exe_fd,
	};
	if (c->img->auxv_len > SCRATCH_SIZE - 512)
		r = err_set(-EINVAL, "auxv too large");
	if (r >= 0)
		r = poke(c, c->scratch, &mm, sizeof(mm));
	if (r >= 0 && c->img->auxv_len)
		r = poke(c, c->scratch + 512, c->img->auxv, c->img->auxv_len);
	if (r >= 0)
		r = sys(c, c->pid, SYS_prctl, PR_SET_MM, PR_SET_MM_MAP, c->scratch, sizeof(mm), 0, 0, &ign,
			"prctl(PR_SET_MM_MAP)");
	sys(c, c->pid, SYS_close, exe_fd, 0, 0, 0, 0, 0, NULL, "close");
	return r;
}

static int thread_setup(struct ctx *c, const struct thread_image *t)
{
	int64_t ign;
	int r;

	r = sys(c, t->tid, SYS_set_robust_list, t->robust_head, t->robust_len ? t->robust_len : 24, 0, 0, 0,
		0, &ign, "set_robust_list");
	if (r >= 0 && t->has_rseq)
		r = sys(c, t->tid, SYS_rseq, t->rseq_addr, t->rseq_len, 0, t->rseq_sig, 0, 0, &ign, "rseq");
	if (r >= 0)
		r = sys(c, t->tid, SYS_set_tid_address, t->tid_address, 0, 0, 0, 0, 0, &ign, "set_tid_address");
	if (r >= 0) {
		stack_t ss = {
			.ss_sp = (void *)(uintptr_t)t->altstack_sp,
			.ss_size = t->altstack_size,
			/* SS_ONSTACK is computed from sp, never set */
			.ss_flags = t->altstack_flags & ~SS_ONSTACK,
		};
		if (ss.ss_flags & SS_DISABLE) {
			ss.ss_flags = SS_DISABLE;
			ss.ss_sp = NULL;
			ss.ss_size = 0;
		}
		r = poke(c, c->scratch, &ss, sizeof(ss));
		if (r >= 0)
			r = sys(c, t->tid, SYS_sigaltstack, c->scratch, 0, 0, 0, 0, 0, &ign, "sigaltstack");
	}
	for (size_t i = 0; r >= 0 && i < t->npending; i++) {
		r = poke(c, c->scratch, &t->pending[i].info, sizeof(siginfo_t));
		if (r >= 0)
			r = sys(c, t->tid, SYS_rt_tgsigqueueinfo, c->pid, t->tid, t->pending[i].info.si_signo,
				c->scratch, 0, 0, &ign, "rt_tgsigqueueinfo");
	}
	if (r >= 0 && t->comm[0]) {
		/* /proc/PID/task/TID/comm is writable from its own process only */
		r = poke(c, c->scratch, t->comm, strlen(t->comm) + 1);
		if (r >= 0)
			r = sys(c, t->tid, SYS_prctl, PR_SET_NAME, c->scratch, 0, 0, 0, 0, &ign, "PR_SET_NAME");
	}
	return r;
}

/* The registers a thread resumes with. A call interrupted with
 * -ERESTART_RESTARTBLOCK (nanosleep, clock_nanosleep, poll, futex with a
 * timeout) would go through restart_syscall(), whose state lives in the
 * old task and is lost: it is issued again with its original arguments
 * instead (a relative timeout starts over). The other -ERESTART* codes are
 * left to the kernel, which restarts them or returns EINTR exactly as it
 * would have (the thread is parked in its signal path). */
static struct user_regs_struct final_regs(const struct thread_image *t)
{
	struct user_regs_struct r = t->regs;
	if ((int64_t)r.orig_rax >= 0 && (int64_t)r.rax == -ENGINE_ERESTART_RESTARTBLOCK) {
		r.rax = r.orig_rax;
		r.rip -= 2;
		r.orig_rax = (uint64_t)-1;
	}
	return r;
}

static int thread_finish(struct ctx *c, const struct thread_image *t)
{
	struct user_regs_struct r = final_regs(t);
	struct iovec iov = { t->xstate, t->xstate_len };
	int q = thread_park(t->tid);
	if (q < 0)
		return q;
	q = regs_set(t->tid, &r);
	if (q < 0)
		return q;
	if (ptrace(PTRACE_SETREGSET, t->tid, (void *)NT_X86_XSTATE, &iov) < 0)
		return err_set(negerrno(), "thread %d: PTRACE_SETREGSET xstate: %m", t->tid);
	if (ptrace(PTRACE_SETSIGMASK, t->tid, (void *)8, &t->sigmask) < 0)
		return err_set(negerrno(), "thread %d: PTRACE_SETSIGMASK: %m", t->tid);
	return 0;
}

/* The last of the credentials: with a non-root target, every thread
 * (credentials are per thread; the clones copied P's) gives up the
 * CAP_CHECKPOINT_RESTORE kept so far, leaving no capability at all, and
 * only then is the process made dumpable again (the change of uid made it
 * not), so that its owner can trace and checkpoint it like any process of
 * theirs. Nothing privileged is injected after this. */
/* P's posix timers, once all its threads exist (a timer may notify any of
 * them): made again by injection with their IDs (Linux 6.16's
 * PR_TIMER_CREATE_RESTORE_IDS, which takes CAP_CHECKPOINT_RESTORE: P still
 * has it) and armed with the time they had left. */
static int ptimers_inject(struct ctx *c)
{
	const struct proc_image *img = c->img;
	int64_t ign;
	int r, q;

	if (!img->nptimers)
		return 0;
	r = sys(c, c->pid, SYS_prctl, PR_TIMER_CREATE_RESTORE_IDS, 1, 0, 0, 0, 0, &ign,
		"the snapshot has posix timers, and making them with their IDs takes Linux 6.16 "
		"(PR_TIMER_CREATE_RESTORE_IDS)");
	if (r < 0)
		return r;
	for (size_t i = 0; i < img->nptimers && r >= 0; i++) {
		const struct ptimer *t = &img->ptimers[i];
		struct sigevent ev;
		struct itimerspec v;
		int32_t id = t->id;
		ptimer_event(t, &ev, &v);
		r = poke(c, c->scratch, &ev, sizeof(ev));
		if (r >= 0)
			r = poke(c, c->scratch + 128, &id, sizeof(id));
		if (r >= 0)
			r = poke(c, c->scratch + 256, &v, sizeof(v));
		if (r >= 0)
			r = sys(c, c->pid, SYS_timer_create, (uint64_t)t->clock, c->scratch, c->scratch + 128, 0, 0, 0,
				&ign, "timer_create of a posix timer");
		if (r >= 0 && (v.it_value.tv_sec || v.it_value.tv_nsec))
			r = sys(c, c->pid, SYS_timer_settime, (uint64_t)id, 0, c->scratch + 256, 0, 0, 0, &ign,
				"timer_settime of a posix timer");
	}
	q = sys(c, c->pid, SYS_prctl, PR_TIMER_CREATE_RESTORE_IDS, 0, 0, 0, 0, 0, &ign, "PR_TIMER_CREATE_RESTORE_IDS");
	return r < 0 ? r : q;
}

static int creds_final(struct ctx *c)
{
	const struct engine_restore_opts *o = c->o;
	struct {
		struct __user_cap_header_struct h;
		struct __user_cap_data_struct d[2];
	} caps = { .h = { .version = _LINUX_CAPABILITY_VERSION_3 } };
	int64_t ign;
	int r;

	if (!o || !o->set_creds || o->uid == 0)
		return 0;
	r = poke(c, c->scratch, &caps, sizeof(caps));
	for (size_t i = 0; r >= 0 && i < c->img->nthreads; i++)
		r = sys(c, c->img->threads[i].tid, SYS_capset, c->scratch, c->scratch + sizeof(caps.h), 0, 0,
			0, 0, &ign, "capset");
	if (r >= 0)
		r = sys(c, c->pid, SYS_prctl, PR_SET_DUMPABLE, 1, 0, 0, 0, 0, &ign, "PR_SET_DUMPABLE");
	return r;
}

#define RESTORE_PTRACE_OPTS (PTRACE_O_TRACESYSGOOD | PTRACE_O_TRACECLONE | PTRACE_O_EXITKILL)

/* The last injected steps, once everything that needs the restorer's
 * privilege is done (clone3 with set_tid, PR_SET_MM_MAP, the posix
 * timers): each thread's credentials, then its seccomp filters.
 *
 * The order, per thread: ids, groups, the inheritable, ambient and
 * bounding sets, securebits and no_new_privs first (creds_apply_ids), all
 * while the thread still holds the restorer's effective capabilities;
 * then the filters, which a thread may install with no_new_privs (set
 * just before, where the image has it) or with CAP_SYS_ADMIN (still held
 * here where the restorer has it: a process that installed its filters
 * as root and dropped the capability after gets them back the same
 * way); then the image's capability sets, and the dumpable flag, which a
 * change of ids reset. Where the restorer may, the filters are suspended
 * for the calls we inject after them (PTRACE_O_SUSPEND_SECCOMP, until
 * the detach); where not, those calls (capset, prctl, munmap) pass
 * through the filters as the process's own would, and one they forbid
 * fails the restore, saying which. A snapshot without credentials keeps
 * the caller's (creds_final()). */
static int final_steps(struct ctx *c)
{
	struct proc_image *img = c->img;
	bool has = false;
	int64_t cur;
	int r = 0;

	for (size_t i = 0; i < img->nthreads; i++)
		has |= img->threads[i].creds.valid;
	if (!has) {
		r = creds_final(c);
		return r < 0 ? r : seccomp_install(c, img, RESTORE_PTRACE_OPTS);
	}
	for (size_t i = 0; i < img->nthreads && r >= 0; i++)
		r = creds_apply_ids(c, c->pid, &img->threads[i]);
	if (r >= 0)
		r = seccomp_install(c, img, RESTORE_PTRACE_OPTS);
	for (size_t i = 0; i < img->nthreads && r >= 0; i++)
		r = creds_apply_caps(c, c->pid, &img->threads[i]);
	/* 2 (suid_dumpable's "root only") cannot be asked for: left to the
	 * kernel, which sets it on a change of ids where so configured */
	if (r >= 0 && (img->dumpable == 0 || img->dumpable == 1)) {
		r = sys(c, c->pid, SYS_prctl, PR_GET_DUMPABLE, 0, 0, 0, 0, 0, &cur, "PR_GET_DUMPABLE");
		if (r >= 0 && cur != img->dumpable)
			r = sys(c, c->pid, SYS_prctl, PR_SET_DUMPABLE, img->dumpable, 0, 0, 0, 0, NULL,
				"PR_SET_DUMPABLE");
	}
	for (size_t i = 0; i < img->nthreads && r >= 0; i++)
		r = creds_verify(c->pid, &img->threads[i]);
	return r;
}

/* Whether the snapshot holds CUDA state, and if so whether this machine
 * can take it: refused before anything is built. */
static int gpu_check(struct store_snap *snap, bool *ret)
{
	struct store_stat st;
	*ret = false;
	if (store_snap_stat(snap, "gpu/info", &st) < 0) {
		err_clear(); /* not a failure: no later message may carry it */
		return 0;
	}
	int r = gpu_probe();
	if (r < 0) {
		char why[512];
		snprintf(why, sizeof(why), "%s", err_msg());
		return err_set(r == -EOPNOTSUPP ? -EOPNOTSUPP : -ENODEV,
			       "the snapshot holds CUDA state (gpu/info) but this machine has no usable CUDA driver: %s",
			       why);
	}
	*ret = true;
	return 0;
}

/* After the detach: the driver's restore thread inside pid runs and
 * brings device memory back (CHECKPOINTED -> LOCKED), then the process
 * gets its GPU (-> RUNNING). */
static int gpu_resume(pid_t pid)
{
	enum gpu_state st;
	pid_t tid = 0;
	int r = gpu_get_state(pid, &st);
	if (r < 0) {
		char why[512];
		snprintf(why, sizeof(why), "%s", err_msg());
		return err_set(r, "pid %d: no CUDA state after the restore: %s", pid, why);
	}
	if (st != GPU_STATE_CHECKPOINTED)
		return err_set(-EBADMSG, "pid %d: its CUDA state is %s after the restore, not checkpointed", pid,
			       gpu_state_name(st));
	if (gpu_restore_tid(pid, &tid) >= 0)
		log_debug("pid %d: the driver's restore thread is %d", pid, tid);
	r = gpu_restore(pid);
	if (r >= 0)
		r = gpu_unlock(pid);
	return r;
}

static int find_free(const struct vma *a, size_t na, const struct vma *b, size_t nb, uint64_t len,
		     uint64_t *ret)
{
	for (uint64_t x = 1ull << 32; x < (1ull << 46); x += 1ull << 28)
		if (!overlaps(x, x + len, a, na) && !overlaps(x, x + len, b, nb)) {
			*ret = x;
			return 0;
		}
	return err_set(-ENOMEM, "no address free in both layouts for the restore's scratch page");
}

#ifndef PR_SET_MDWE
#define PR_SET_MDWE 65
#endif
#ifndef PR_SET_MEMORY_MERGE
#define PR_SET_MEMORY_MERGE 67
#endif

/* The audit login uid: the kernel takes it only from the process itself
 * (/proc/self/loginuid), freely while unset, and a change of a set one
 * only with CAP_AUDIT_CONTROL, which the new process holds here only if
 * the restorer does: nobody gains power. A restorer that may not fails
 * the restore, naming it, rather than running the process under another
 * login. Its sessionid cannot be set by anyone: the kernel gives a new
 * one with each write (docs/COVERAGE.md). */
static int loginuid_apply(struct ctx *c, int64_t want)
{
	char p[64];
	_cleanup_free_ char *cur = NULL;
	int64_t fd, ign;
	int r;

	snprintf(p, sizeof(p), "/proc/%d/loginuid", c->pid);
	if (read_file_full(p, &cur, NULL) < 0) {
		/* a kernel without audit: only "unset" is the same */
		if (want == UINT32_MAX) {
			err_clear();
			return 0;
		}
		return err_set(-EOPNOTSUPP, "restore of pid %d: it had audit login uid %" PRId64
			       ", and this kernel has none (no /proc/PID/loginuid)", c->pid, want);
	}
	cur[strcspn(cur, "\n")] = 0;
	if (strtoll(cur, NULL, 10) == want)
		return 0;
	char v[24];
	int n = snprintf(v, sizeof(v), "%" PRId64, want);
	if ((r = put_string(c, "/proc/self/loginuid")) < 0)
		return r;
	if ((r = sys(c, c->pid, SYS_openat, AT_FDCWD, c->scratch, O_WRONLY | O_CLOEXEC, 0, 0, 0, &fd,
		     "opening /proc/self/loginuid")) < 0)
		return r;
	r = poke(c, c->scratch + 128, v, (size_t)n);
	if (r >= 0) {
		int64_t w = 0;
		r = inject_syscall(c->pid, c->ip, &c->base, SYS_write, (uint64_t)fd, c->scratch + 128, (uint64_t)n, 0, 0,
				   0, &w);
		if (r >= 0 && w != n)
			r = err_set(w < 0 ? (int)w : -EIO,
				    "restore of pid %d: setting its audit login uid %" PRId64 " (was %s): %s%s", c->pid,
				    want, cur, strerror(w < 0 ? (int)-w : EIO),
				    w == -EPERM ? " (changing a set one takes CAP_AUDIT_CONTROL and a kernel that "
						  "allows it)" : "");
	}
	sys(c, c->pid, SYS_close, (uint64_t)fd, 0, 0, 0, 0, 0, &ign, "close");
	return r;
}

/* The struct proc_attrs settings and each thread's timer slack and
 * parent-death signal, as the image has them; those not recorded stay as
 * the new process got them from the restorer. oom_score_adj is written
 * by the restorer, whose privilege the kernel checks: one lower than the
 * restorer may set (CAP_SYS_RESOURCE) fails the restore, naming it, as
 * nobody gains power by a restore (DESIGN.md). The rest are asked for
 * from inside and need no privilege. */
static int attrs_apply(struct ctx *c)
{
	const struct proc_image *img = c->img;
	const struct proc_attrs *a = &img->attrs;
	int64_t cur;
	int r;

	if (fault_hit(FAULT_ENGINE_RESTORE_ATTRS))
		return err_set(-EIO, "restore of pid %d: injected fault setting its attributes", c->pid);

	if (a->oom_score_adj != INT32_MIN) {
		char p[64], v[16];
		snprintf(p, sizeof(p), "/proc/%d/oom_score_adj", c->pid);
		int n = snprintf(v, sizeof(v), "%d", a->oom_score_adj);
		_cleanup_close_ int fd = open(p, O_WRONLY | O_CLOEXEC);
		if (fd < 0 || write(fd, v, n) != n)
			return err_set(negerrno(), "restore of pid %d: setting its oom_score_adj %d: %m%s", c->pid,
				       a->oom_score_adj,
				       errno == EACCES ? " (lowering it takes CAP_SYS_RESOURCE)" : "");
	}
	if (a->child_subreaper > 0 &&
	    (r = sys(c, c->pid, SYS_prctl, PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0, 0, NULL, "PR_SET_CHILD_SUBREAPER")) < 0)
		return r;
	if (a->thp_disable >= 0) {
		if ((r = sys(c, c->pid, SYS_prctl, PR_GET_THP_DISABLE, 0, 0, 0, 0, 0, &cur, "PR_GET_THP_DISABLE")) < 0)
			return r;
		if (cur != a->thp_disable &&
		    (r = sys(c, c->pid, SYS_prctl, PR_SET_THP_DISABLE, a->thp_disable ? 1 : 0,
			     (uint64_t)(a->thp_disable & ~1), 0, 0, 0, NULL, "PR_SET_THP_DISABLE")) < 0)
			return r;
	}
	/* each registration the process had, made again (a new mm has none) */
	for (int bit = 0; a->membarrier > 0 && bit < 16; bit++) {
		if (!(a->membarrier & (1ll << bit)))
			continue;
		char what[64];
		snprintf(what, sizeof(what), "membarrier registration 0x%x", 1u << bit);
		if ((r = sys(c, c->pid, SYS_membarrier, 1u << bit, 0, 0, 0, 0, 0, NULL, what)) < 0)
			return r;
	}
	if (a->loginuid >= 0 && (r = loginuid_apply(c, a->loginuid)) < 0)
		return r;
	/* needs CAP_SYS_RESOURCE: the restorer's, as for oom_score_adj */
	if (a->memory_merge > 0 &&
	    (r = sys(c, c->pid, SYS_prctl, PR_SET_MEMORY_MERGE, 1, 0, 0, 0, 0, NULL,
		     "PR_SET_MEMORY_MERGE (KSM for the whole process; takes CAP_SYS_RESOURCE)")) < 0)
		return r;
	/* after every area is made (it forbids giving an area exec once it was
	 * writable, as the restore does); it cannot be undone, and is set
	 * only where the image has it */
	if (a->mdwe > 0 && (r = sys(c, c->pid, SYS_prctl, PR_SET_MDWE, (uint64_t)a->mdwe, 0, 0, 0, 0, NULL,
				   "PR_SET_MDWE (memory-deny-write-execute)")) < 0)
		return r;
	for (size_t i = 0; i < img->nthreads; i++) {
		const struct thread_image *t = &img->threads[i];
		if (t->timerslack > 0 &&
		    (r = sys(c, t->tid, SYS_prctl, PR_SET_TIMERSLACK, (uint64_t)t->timerslack, 0, 0, 0, 0, NULL,
			     "PR_SET_TIMERSLACK")) < 0)
			return r;
		if (t->pdeathsig &&
		    (r = sys(c, t->tid, SYS_prctl, PR_SET_PDEATHSIG, (uint64_t)t->pdeathsig, 0, 0, 0, 0, NULL,
			     "PR_SET_PDEATHSIG")) < 0)
			return r;
		if ((r = sched_apply(c, c->pid, t)) < 0)
			return r;
	}
	return 0;
}

static int drive(struct ctx *c)
{
	struct proc_image *img = c->img;
	struct vma *cur = NULL;
	size_t ncur = 0;
	uint64_t vdso_size, region = 0, trio = 0;
	int64_t ign;
	int r;

	r = regs_get(c->pid, &c->base);
	if (r < 0)
		return r;
	r = vdso_syscall_offset(&c->vdso_off, &vdso_size);
	if (r < 0)
		return r;
	r = maps_read(c->pid, &cur, &ncur);
	if (r < 0)
		return r;
	for (size_t i = 0; i < ncur; i++) {
		if (cur[i].kind == VMA_VDSO)
			c->ip = cur[i].start + c->vdso_off;
		if (is_trio(cur[i].kind))
			trio += cur[i].end - cur[i].start;
	}
	r = find_free(cur, ncur, img->vmas, img->nvmas, SCRATCH_SIZE + trio, &region);
	if (r < 0 || !c->ip) {
		r = r < 0 ? r : err_set(-ENOENT, "no [vdso] in the new process");
		goto out;
	}
	/* no stack is needed by our calls; this keeps sigaltstack's
	 * "are we on it" test away from the image's alternate stacks */
	c->base.rsp = region + SCRATCH_SIZE;

	r = sys(c, c->pid, SYS_mmap, region, SCRATCH_SIZE, PROT_READ | PROT_WRITE,
		MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0, &ign, "mmap scratch");
	if (r < 0)
		goto out;
	c->scratch = region;

	/* Our libc registered rseq at an address about to vanish: the kernel
	 * would write there on the next return to user space. */
	struct {
		uint64_t ptr;
		uint32_t size, sig, flags, pad;
	} rc = { 0 };
	if (ptrace(PTRACE_GET_RSEQ_CONFIGURATION, c->pid, (void *)sizeof(rc), &rc) >= 0 && rc.ptr) {
		r = sys(c, c->pid, SYS_rseq, rc.ptr, rc.size, RSEQ_FLAG_UNREGISTER_, rc.sig, 0, 0, &ign,
			"rseq unregister");
		if (r < 0)
			goto out;
	}
	for (size_t i = 0; i < ncur; i++) {
		if (is_trio(cur[i].kind) || cur[i].kind == VMA_VSYSCALL)
			continue;
		r = sys(c, c->pid, SYS_munmap, cur[i].start, cur[i].end - cur[i].start, 0, 0, 0, 0, &ign,
			"munmap of the old layout");
		if (r < 0)
			goto out;
	}
	r = move_vdso(c, cur, ncur, region + SCRATCH_SIZE);
	if (r < 0)
		goto out;

	for (size_t i = 0; i < img->nvmas; i++)
		c->total += img->vmas[i].saved;
	for (size_t i = 0; i < img->nvmas; i++) {
		r = map_area(c, &img->vmas[i]);
		if (r >= 0)
			r = vma_advice_apply(c, c->pid, &img->vmas[i], c->lazy != NULL);
		if (r < 0)
			goto out;
	}
	/* the tree's shared memory objects, inherited to be mapped: no more
	 * (in a table shared with others, once the last of them mapped its) */
	if (c->shm_base >= 0 && !c->shm_keep) {
		r = sys(c, c->pid, SYS_close_range, (uint64_t)c->shm_base, ~0u, 0, 0, 0, 0, &ign,
			"close_range of the shared memory objects");
		if (r < 0)
			goto out;
	}
	/* every area is mapped: a new ring lands outside them, then moves
	 * to where the image's was */
	for (size_t i = 0; i < img->nvmas; i++) {
		if (img->vmas[i].kind != VMA_AIO)
			continue;
		r = aio_restore(c, c->pid, &img->vmas[i]);
		if (r < 0)
			goto out;
	}
	r = set_mm(c);
	if (r < 0)
		goto out;

	for (size_t i = 1; i < img->nthreads; i++) {
		pid_t tid = img->threads[i].tid;
		struct clone_args ca = {
			.flags = CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD |
				 CLONE_SYSVSEM,
			.set_tid = c->scratch + 256,
			.set_tid_size = 1,
		};
		int64_t got;
		r = poke(c, c->scratch, &ca, sizeof(ca));
		if (r >= 0)
			r = poke(c, c->scratch + 256, &tid, sizeof(tid));
		if (r >= 0)
			r = sys(c, c->pid, SYS_clone3, c->scratch, sizeof(ca), 0, 0, 0, 0, &got, "clone3 of a thread");
		if (r == -EEXIST)
			r = err_set(r, "thread id %d is in use", tid);
		if (r < 0)
			goto out;
		int st;
		/* auto-attached (PTRACE_O_TRACECLONE): it starts stopped */
		do {
			r = ptrace_wait(tid, &st);
		} while (r >= 0 && !(WIFSTOPPED(st) && (st >> 16) == PTRACE_EVENT_STOP));
		if (r < 0)
			goto out;
	}
	if (fault_hit(FAULT_ENGINE_RESTORE_LATE)) {
		r = err_set(-EIO, "restore of pid %d: injected fault after the threads were created", c->pid);
		goto out;
	}
	for (size_t i = 0; i < img->nthreads; i++) {
		r = thread_setup(c, &img->threads[i]);
		if (r < 0)
			goto out;
	}
	r = ptimers_inject(c);
	if (r < 0)
		goto out;
	r = attrs_apply(c);
	if (r < 0)
		goto out;
	for (size_t i = 0; i < img->npending; i++) {
		r = poke(c, c->scratch, &img->pending[i].info, sizeof(siginfo_t));
		if (r >= 0)
			r = sys(c, c->pid, SYS_rt_sigqueueinfo, c->pid, img->pending[i].info.si_signo, c->scratch,
				0, 0, 0, &ign, "rt_sigqueueinfo");
		if (r < 0)
			goto out;
	}
	/* the last call that touches the image's memory is behind us (rseq's
	 * registration writes to its area): what is still to load comes
	 * through userfaultfd from here */
	if (c->lazy) {
		r = lazy_register(c->lazy, c, img, fill_range);
		if (r < 0)
			goto out;
	}
	r = final_steps(c);
	if (r < 0)
		goto out;
	r = sys(c, c->pid, SYS_munmap, c->scratch, SCRATCH_SIZE, 0, 0, 0, 0, &ign, "munmap scratch");
	if (r < 0)
		goto out;
	c->scratch = 0;
	for (size_t i = 0; i < img->nthreads; i++) {
		r = thread_finish(c, &img->threads[i]);
		if (r < 0)
			goto out;
	}
	r = 0;
out:
	vmas_free(cur, ncur);
	return r;
}

/* ---- reading the image ---------------------------------------------------- */

/* err_set(r, "PREFIX: <the detail so far>"): err_msg() is the buffer
 * err_set() writes, so it is copied first. */
static int err_prefix(int r, const char *prefix)
{
	char why[512];
	snprintf(why, sizeof(why), "%s", err_msg());
	return err_set(r, "%s: %s", prefix, why);
}

static int load_image(struct store_snap *snap, const struct engine_restore_opts *o, struct proc_image *img,
		      struct fd_image **fds)
{
	_cleanup_free_ char *proc = NULL, *maps = NULL;
	int r;

	r = store_snap_read_all(snap, "process", &proc, NULL);
	if (r < 0)
		return err_prefix(r, "process");
	r = process_parse(proc, img);
	if (r < 0)
		return r;
	r = store_snap_read_all(snap, "maps", &maps, NULL);
	if (r < 0)
		return err_prefix(r, "maps");
	r = maps_parse_image(maps, &img->vmas, &img->nvmas);
	if (r < 0)
		return r;
	for (size_t i = 0; i < img->nthreads; i++) {
		char name[32];
		_cleanup_free_ char *text = NULL;
		pid_t tid = img->threads[i].tid;
		snprintf(name, sizeof(name), "regs/%d", tid);
		r = store_snap_read_all(snap, name, &text, NULL);
		if (r < 0)
			return err_prefix(r, name);
		r = thread_parse(text, name, &img->threads[i]);
		if (r < 0)
			return r;
		if (img->threads[i].tid != tid)
			return err_set(-EBADMSG, "%s: holds thread %d", name, img->threads[i].tid);
	}
	r = seccomp_load(snap, img);
	if (r < 0)
		return r;
	for (size_t i = 0; i < img->nvmas; i++) {
		const struct vma *v = &img->vmas[i];
		struct store_stat st;
		char name[VMA_FILE_NAME_MAX];
		if (!v->saved)
			continue;
		vma_file_name(v, name, sizeof(name));
		r = store_snap_stat(snap, name, &st);
		if (r < 0)
			return err_set(r, "%s: missing", name);
		if (st.size != v->end - v->start)
			return err_set(-EBADMSG, "%s: size %" PRIu64 " does not match its area", name, st.size);
	}
	return fds_load(snap, o && o->accept_changed_files, fds);
}

/* The tree of snapshot r: its `tree` file, or, in a snapshot of format 1
 * (one process, its files at the top), that process alone. */
static int load_tree(struct store_snap *r, struct tree *t, bool *flat)
{
	_cleanup_free_ char *text = NULL;
	struct store_stat st;
	int q;

	*flat = store_snap_stat(r, "tree", &st) < 0;
	if (*flat) {
		q = store_snap_read_all(r, "process", &text, NULL);
		if (q < 0)
			return err_prefix(q, "neither 'tree' nor 'process'");
		int pid = 0;
		const char *l = strstr(text, "pid ");
		if (l != text || sscanf(l, "pid %d", &pid) != 1 || pid <= 0)
			return err_set(-EBADMSG, "process: 'pid' missing");
		struct tree_node *n = tree_add(t, pid);
		if (!n)
			return -ENOMEM;
		n->pgid = n->sid = pid;
		return 0;
	}
	q = store_snap_read_all(r, "tree", &text, NULL);
	if (q < 0)
		return err_prefix(q, "tree");
	return tree_parse(text, t);
}

static void report_wait(const struct pid_wait *w, void *ud)
{
	const struct engine_restore_opts *o = ud;
	struct engine_progress p = {
		.phase = ENGINE_PHASE_WAIT,
		.done = w->waited_ms,
		.total = w->timeout_ms,
		.wait_id = w->id,
		.wait_parent = w->parent,
		.wait_parent_comm = w->parent_comm,
	};
	o->progress(&p, o->ud);
}

/* shared/fds, when the snapshot has one (*shared stays NULL without):
 * what several processes use, each process's `shared` lines checked
 * against it. */
static int load_shared(struct store_snap *r, bool flat, const struct engine_restore_opts *o, const struct tree *t,
		       struct prestore *p, struct fd_image **shared)
{
	struct store_snap *v = NULL;
	struct store_stat st;
	int q;

	if (flat || store_snap_stat(r, "shared/fds", &st) < 0) {
		err_clear();
	} else {
		q = store_snap_at(r, "shared", &v);
		if (q < 0)
			return q;
		q = fds_load(v, o && o->accept_changed_files, shared);
		store_snap_close(v);
		if (q < 0)
			return err_prefix(q, "shared");
	}
	/* without one, no process may name a shared description */
	for (size_t i = 0; i < t->n; i++)
		if (!t->v[i].zombie && (q = fds_validate_shared(p[i].fds, *shared)) < 0)
			return q;
	return 0;
}

/* The `ipc` file, when the snapshot has one: the SysV objects' identities. */
static int load_ipc(struct store_snap *r, bool flat, struct ipc_image *ipc)
{
	_cleanup_free_ char *text = NULL;
	struct store_stat st;
	if (flat || store_snap_stat(r, "ipc", &st) < 0) {
		err_clear();
		return 0;
	}
	int q = store_snap_read_all(r, "ipc", &text, NULL);
	if (q < 0)
		return err_prefix(q, "ipc");
	return ipc_parse(text, ipc);
}

/* Every pid and thread id the tree takes must be free: a zombie's parent
 * may still be about to reap it (tree/pidwait.c). */
static int check_ids_free(const struct tree *t, const struct prestore *p, const struct engine_restore_opts *o)
{
	unsigned ms = o && o->pid_wait_ms ? o->pid_wait_ms : ENGINE_PID_WAIT_DEFAULT_MS;
	size_t n = 0;
	for (size_t i = 0; i < t->n; i++)
		n += t->v[i].zombie ? 1 : p[i].img.nthreads;
	_cleanup_free_ pid_t *ids = calloc(n, sizeof(*ids));
	if (!ids)
		return -ENOMEM;
	n = 0;
	for (size_t i = 0; i < t->n; i++) {
		if (t->v[i].zombie)
			ids[n++] = t->v[i].pid;
		for (size_t k = 0; !t->v[i].zombie && k < p[i].img.nthreads; k++)
			ids[n++] = p[i].img.threads[k].tid;
	}
	return pids_wait_free(ids, n, ms == ENGINE_PID_WAIT_NONE ? 0 : ms, o && o->progress ? report_wait : NULL,
			      (void *)o);
}

/* The first failure a process of the tree reported, or 0 once every live
 * one is ready; 1 while some are still on their way (not -EAGAIN: a
 * process may fail with that). */
static int tree_ready(const struct tree *t, struct restore_sync *sync)
{
	int waiting = 0;
	for (size_t i = 0; i < t->n; i++) {
		int st = __atomic_load_n(&sync->slot[i].state, __ATOMIC_SEQ_CST);
		if (st == 2) {
			int e = sync->slot[i].err ? sync->slot[i].err : -EIO;
			if (e == -EEXIST)
				return err_set(-EEXIST, "pid %d: %s", t->v[i].pid, sync->slot[i].msg);
			return err_set(e, "pid %d: %s", t->v[i].pid, sync->slot[i].msg);
		}
		if (st != 1 && !t->v[i].zombie)
			waiting++;
	}
	return waiting ? 1 : 0;
}

/* Whether a live process after i in the tree shares i's descriptor table:
 * the processes are driven in tree order. */
static bool table_used_later(const struct tree *t, size_t i)
{
	pid_t table = t->v[i].files ? t->v[i].files : t->v[i].pid;
	for (size_t j = i + 1; j < t->n; j++)
		if (!t->v[j].zombie && t->v[j].files == table)
			return true;
	return false;
}

/* Above every descriptor any process of the tree uses: where what they
 * share is put in the process that forks them. */
static int tree_top(const struct tree *t, const struct prestore *p)
{
	int max = 2;
	for (size_t i = 0; i < t->n; i++)
		if (!t->v[i].zombie)
			max = MAX(max, fds_max(p[i].fds));
	return max + 1;
}

/* The tree's shared memory objects, made here before anything is forked:
 * one memfd (or unnamed file, shm_object_open()) each, its size, and the
 * bytes of every area that saved a part of it (stored once, dump.c); a
 * memfd or deleted-file descriptor of the same file reopens it. */
struct shm_set {
	int fd[ENGINE_MAX_SHM];   /* a memfd or unnamed file, or -1 for a SysV segment */
	int sysv[ENGINE_MAX_SHM]; /* the SysV segment's shmid, or -1 */
	bool made[ENGINE_MAX_SHM]; /* a SysV segment made by this restore */
	size_t n;
};

static void shm_set_close(struct shm_set *m)
{
	for (size_t i = 0; i < m->n; i++)
		if (m->fd[i] >= 0)
			close(m->fd[i]);
	for (size_t i = 0; i < m->n; i++)
		m->fd[i] = -1;
}

/* A failed restore removes the SysV segments it made. */
static void shm_set_drop(struct shm_set *m, const struct ipc_image *ipc)
{
	for (size_t i = 0; i < ipc->nshm; i++)
		if (ipc->shm[i].obj < m->n && m->made[ipc->shm[i].obj]) {
			ipc_shm_remove(&ipc->shm[i]);
			m->made[ipc->shm[i].obj] = false;
		}
}

/* Whether every process maps SysV segment obj (size bytes) in whole
 * attaches: runs of its areas, one after the other in address and
 * offset, from offset 0 to its page-rounded size, as shmat() maps it. */
static bool sysv_whole(const struct tree *t, const struct prestore *p, uint32_t obj, uint64_t size)
{
	uint64_t whole = (size + 4095) & ~4095ull;
	for (size_t i = 0; i < t->n; i++) {
		uint64_t end = 0, off = whole; /* the open run: its end, and the offset there */
		for (size_t k = 0; !t->v[i].zombie && k < p[i].img.nvmas; k++) {
			const struct vma *v = &p[i].img.vmas[k];
			if (!v->has_shm || v->shm_id != obj)
				continue;
			if (off < whole ? v->start != end || v->pgoff != off : v->pgoff != 0)
				return false;
			end = v->end;
			off = v->pgoff + (v->end - v->start);
			if (off > whole)
				return false;
		}
		if (off != whole)
			return false;
	}
	return true;
}

/* Object id as the SysV segment s: the host's one, or one made and filled
 * from the areas that saved its bytes. */
static int shm_make_sysv(const struct tree *t, struct prestore *p, const struct engine_restore_opts *o,
			 const struct ipc_shm *s, struct shm_set *m, uint8_t *buf, size_t buf_len)
{
	size_t id = s->obj;
	int q;
	q = ipc_shm_get(s, o, &m->made[id]);
	if (q < 0)
		return q;
	m->sysv[id] = s->id;
	if (!m->made[id])
		return 0;
	uint8_t *mem = shmat(s->id, NULL, 0);
	if (mem == (void *)-1)
		return err_set(negerrno(), "SysV shared memory id %d: shmat: %m", s->id);
	for (size_t i = 0; i < t->n && q >= 0; i++)
		for (size_t k = 0; !t->v[i].zombie && k < p[i].img.nvmas && q >= 0; k++) {
			const struct vma *v = &p[i].img.vmas[k];
			if (v->has_shm && v->shm_id == id && v->saved)
				q = fill_object(p[i].dir, v, -1, mem, buf, buf_len, NULL);
		}
	shmdt(mem);
	return q;
}

static int shm_make(struct store_snap *r, bool flat, const struct tree *t, struct prestore *p,
		    const struct engine_restore_opts *o, const struct ipc_image *ipc, struct shm_set *m)
{
	_cleanup_free_ uint8_t *buf = NULL;
	const size_t buf_len = 4u << 20;
	size_t n = 0;
	int q = 0;

	for (size_t i = 0; i < t->n; i++)
		for (size_t k = 0; !t->v[i].zombie && k < p[i].img.nvmas; k++)
			if (p[i].img.vmas[k].has_shm)
				n = MAX(n, (size_t)p[i].img.vmas[k].shm_id + 1);
	for (size_t i = 0; i < ipc->nshm; i++)
		if (ipc->shm[i].obj >= n)
			return err_set(-EBADMSG, "ipc: shm obj=%u, but the tree maps %zu shared memory objects",
				       ipc->shm[i].obj, n);
	if (!n)
		return 0;
	if (flat)
		return err_set(-EBADMSG, "maps: a shared object (shm=) in a snapshot of one process");
	buf = malloc(buf_len);
	if (!buf)
		return -ENOMEM;
	for (size_t id = 0; id < n; id++) {
		const struct vma *first = NULL;
		uint64_t size = 0;
		m->fd[id] = -1;
		m->sysv[id] = -1;
		m->made[id] = false;
		m->n = id + 1;
		for (size_t i = 0; i < t->n; i++)
			for (size_t k = 0; !t->v[i].zombie && k < p[i].img.nvmas; k++) {
				const struct vma *v = &p[i].img.vmas[k];
				if (!v->has_shm || v->shm_id != id)
					continue;
				first = first ? first : v;
				size = MAX(size, v->shm_size);
			}
		if (!first)
			return err_set(-EBADMSG, "maps: shared object %zu is mapped by no area", id);
		const struct ipc_shm *s = NULL;
		for (size_t i = 0; i < ipc->nshm && !s; i++)
			s = ipc->shm[i].obj == id ? &ipc->shm[i] : NULL;
		/* a SysV segment comes back as one where shmat() can map it as
		 * it was; else (parts of it unmapped) as a memfd, as before */
		if (s && sysv_whole(t, p, (uint32_t)id, s->size)) {
			q = shm_make_sysv(t, p, o, s, m, buf, buf_len);
			if (q < 0)
				return q;
			continue;
		}
		if (s)
			log_debug("SysV shared memory id %d: not mapped whole: restored as a memfd", s->id);
		m->fd[id] = shm_object_open(first);
		if (m->fd[id] < 0)
			return err_set(m->fd[id], "shared memory %s: cannot make a file for it", first->path);
		if (ftruncate(m->fd[id], (off_t)size) < 0)
			return err_set(negerrno(), "shared memory %s: %" PRIu64 " bytes: %m", first->path, size);
		for (size_t i = 0; i < t->n && q >= 0; i++)
			for (size_t k = 0; !t->v[i].zombie && k < p[i].img.nvmas && q >= 0; k++) {
				const struct vma *v = &p[i].img.vmas[k];
				if (v->has_shm && v->shm_id == id && v->saved)
					q = fill_object(p[i].dir, v, m->fd[id], NULL, buf, buf_len, NULL);
			}
		if (q < 0)
			return err_prefix(q, "shared memory");
	}
	return 0;
}

/* In the intermediate process: the shared memory objects to base + id,
 * and nothing else of ours from top up (restorer's descriptors that
 * happen to be there are closed: they are copies, ours are untouched). */
static int shm_place(struct shm_set *m, int top, int base)
{
	int high = base + (int)m->n;
	for (size_t id = 0; id < m->n; id++) {
		if (m->fd[id] < 0)
			continue; /* a SysV segment: attached by its id */
		int fd = fcntl(m->fd[id], F_DUPFD_CLOEXEC, high);
		if (fd < 0)
			return err_set(negerrno(), "shared memory object %zu: F_DUPFD: %m", id);
		m->fd[id] = fd;
	}
	syscall(SYS_close_range, (unsigned)top, (unsigned)high - 1, 0);
	for (size_t id = 0; id < m->n; id++)
		if (m->fd[id] >= 0 && dup3(m->fd[id], base + (int)id, O_CLOEXEC) < 0)
			return err_set(negerrno(), "shared memory object %zu: dup3: %m", id);
	syscall(SYS_close_range, (unsigned)high, ~0u, 0);
	return 0;
}

int engine_restore(struct store_snap *r, const struct engine_restore_opts *o, pid_t *ret_pid)
{
	struct tree t = { 0 };
	struct prestore *p = NULL;
	struct fd_image *shared = NULL, **inner = NULL;
	int shared_base = -1, shm_base = -1, top;
	struct shm_set shm = { .n = 0 };
	struct ipc_image ipc = { 0 };
	struct restore_sync *sync = MAP_FAILED;
	size_t sync_len = 0;
	struct vma *mine = NULL;
	size_t nmine = 0;
	struct creds_grant grant = { 0 };
	struct engine_lazy *lazy = NULL;
	bool flat;
	pid_t root = 0;
	int q;

	if (o && o->progress) {
		struct engine_progress pr = { .phase = ENGINE_PHASE_READ };
		o->progress(&pr, o->ud);
	}
	q = load_tree(r, &t, &flat);
	if (q < 0)
		goto out;
	root = t.v[0].pid;
	p = calloc(t.n, sizeof(*p));
	if (!p) {
		q = -ENOMEM;
		goto out;
	}
	q = maps_read(getpid(), &mine, &nmine);
	if (q < 0)
		goto out;
	q = creds_grant_init(o, &grant);
	if (q < 0)
		goto out;
	/* Everything is read and checked before anything is built. */
	for (size_t i = 0; i < t.n; i++) {
		char dir[16];
		if (t.v[i].zombie)
			continue;
		snprintf(dir, sizeof(dir), "%d", t.v[i].pid);
		q = flat ? 0 : store_snap_at(r, dir, &p[i].dir);
		if (q < 0)
			goto out;
		struct store_snap *d = flat ? r : p[i].dir;
		q = load_image(d, o, &p[i].img, &p[i].fds);
		if (q >= 0 && p[i].img.pid != t.v[i].pid)
			q = err_set(-EBADMSG, "%s/process: holds pid %d", dir, p[i].img.pid);
		if (q >= 0 && t.v[i].files && fds_count(p[i].fds))
			q = err_set(-EBADMSG, "%s/fds: the process shares the descriptor table of %d, whose fds it is, "
				    "but holds %d lines", dir, t.v[i].files, fds_count(p[i].fds));
		if (q >= 0)
			q = check_vdso(&p[i].img, mine, nmine);
		if (q >= 0)
			q = creds_check(&p[i].img, &grant);
		if (q >= 0)
			q = gpu_check(d, &p[i].gpu);
		if (q < 0) {
			if (!flat)
				q = err_prefix(q, dir);
			goto out;
		}
	}
	q = load_shared(r, flat, o, &t, p, &shared);
	if (q >= 0)
		q = load_ipc(r, flat, &ipc);
	if (q < 0)
		goto out;
	/* a memfd or deleted file that is a descriptor and a shared mapping
	 * at once: the descriptor reopens the object the areas make */
	for (size_t i = 0; i < t.n; i++)
		for (size_t k = 0; !t.v[i].zombie && k < p[i].img.nvmas; k++) {
			const struct vma *v = &p[i].img.vmas[k];
			if (!v->has_shm)
				continue;
			for (size_t j = 0; j <= t.n; j++) {
				struct fd_image *f = j < t.n ? p[j].fds : shared;
				if (f)
					fds_shm_bind(f, v->dev_major, v->dev_minor, v->ino, v->shm_id);
			}
		}
	for (size_t j = 0; j <= t.n && q >= 0; j++) {
		struct fd_image *f = j < t.n ? p[j].fds : shared;
		q = f ? fds_shm_check(f) : 0;
	}
	if (q < 0)
		goto out;
	q = check_ids_free(&t, p, o);
	if (q < 0)
		goto out;
	/* connections between two processes of the tree: held until both
	 * ends are back */
	inner = calloc(t.n + 1, sizeof(*inner));
	if (!inner) {
		q = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < t.n; i++)
		inner[i] = p[i].fds;
	inner[t.n] = shared;
	q = fds_lock_inner(inner, t.n + 1, true);
	if (q < 0) {
		free(inner);
		inner = NULL;
		goto out;
	}
	/* what the processes share, at top and up in every one of them: the
	 * shared descriptions (shared_base), then the memory objects */
	top = tree_top(&t, p);
	shared_base = shared ? top : -1;
	q = shm_make(r, flat, &t, p, o, &ipc, &shm);
	if (q >= 0)
		q = ipc_objects_get(&ipc, o);
	if (q < 0)
		goto out;
	shm_base = shm.n ? top + fds_count(shared) : -1;

	sync_len = sizeof(*sync) + t.n * sizeof(sync->slot[0]);
	sync = mmap(NULL, sync_len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (sync == MAP_FAILED) {
		q = negerrno();
		goto out;
	}
	memset(sync, 0, sync_len);

	/* An intermediate process forks the root and exits at once, so that
	 * the root is re-parented (to init or the nearest subreaper) and
	 * needs nobody of ours to wait for it. It takes the credentials the
	 * caller names first: everything the tree opens, it opens with them. */
	struct tree_build B = {
		.t = &t, .p = p, .shared = shared, .shared_base = shared_base, .shm_base = shm_base,
		.sync = sync, .o = o,
	};
	pid_t mid = fork();
	if (mid < 0) {
		q = err_set(negerrno(), "fork: %m");
		goto out;
	}
	if (mid == 0) {
		sigset_t all;
		sigfillset(&all);
		sigprocmask(SIG_SETMASK, &all, NULL);
		if (o && o->set_creds) {
			int c = creds_take(o);
			if (c < 0)
				child_fail(&sync->slot[0], c, "credentials");
		}
		/* What processes share is made once, here, and inherited by
		 * every one of them; our own copies go when we exit. */
		if (shared_base >= 0 || shm.n) {
			struct rlimit rl;
			if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
				rl.rlim_cur = rl.rlim_max;
				setrlimit(RLIMIT_NOFILE, &rl);
			}
			int c = shm.n ? shm_place(&shm, top, shm_base) : 0;
			if (c < 0)
				child_fail(&sync->slot[0], c, "shared memory");
			if (!shm.n)
				syscall(SYS_close_range, (unsigned)top, ~0u, 0);
			c = shared_base >= 0 ? fds_open_shared(shared, shared_base, shm.n ? shm_base : -1) : 0;
			if (c < 0)
				child_fail(&sync->slot[0], c, "descriptors shared by the processes");
		}
		struct clone_args ca = {
			.exit_signal = SIGCHLD,
			.set_tid = (uintptr_t)&root,
			.set_tid_size = 1,
		};
		long c = syscall(SYS_clone3, &ca, sizeof(ca));
		if (c == 0)
			tree_child(&B, 0);
		if (c < 0)
			child_fail(&sync->slot[0], negerrno(), errno == EEXIST ? "pid is in use" : "clone3");
		_exit(0);
	}
	int st;
	while (waitpid(mid, &st, 0) < 0 && errno == EINTR)
		;
	/* the tree holds them now */
	shm_set_close(&shm);
	uint64_t deadline = now_ns() + 30ull * 1000000000;
	while ((q = tree_ready(&t, sync)) == 1) {
		/* once all were forked, one that vanished without a word died */
		bool all = __atomic_load_n(&sync->forked, __ATOMIC_SEQ_CST) >= (int)t.n, gone = false;
		for (size_t i = 0; all && i < t.n && !gone; i++)
			gone = !t.v[i].zombie && !sync->slot[i].state && kill(t.v[i].pid, 0) < 0 && errno == ESRCH;
		if (now_ns() > deadline || gone || (kill(root, 0) < 0 && errno == ESRCH)) {
			q = err_set(-ETIMEDOUT, "pid %d: the new processes did not get ready", root);
			break;
		}
		usleep(200);
	}
	if (q < 0)
		goto out_kill;

	/* Each live process gets its memory and threads; none runs yet. */
	for (size_t i = 0; i < t.n; i++) {
		if (t.v[i].zombie)
			continue;
		pid_t pid = t.v[i].pid;
		q = seize_all(pid, RESTORE_PTRACE_OPTS, &p[i].s);
		if (q < 0)
			goto out_kill;
		p[i].attached = true;
		struct ctx c = {
			.pid = pid, .img = &p[i].img, .fds = p[i].fds, .snap = flat ? r : p[i].dir, .o = o,
			.shm_base = shm_base, .shm_keep = table_used_later(&t, i), .sysv = shm.n ? shm.sysv : NULL,
		};
		c.buf_len = 16u << 20;
		c.buf = malloc(c.buf_len);
		if (!c.buf) {
			q = -ENOMEM;
			goto out_kill;
		}
		/* lazy: each process of the tree its own load, but not one
		 * whose device memory comes back from host memory before it
		 * runs */
		if (o && o->lazy && o->ret_lazy && !p[i].gpu && lazy_possible(o)) {
			q = lazy_new(pid, &c.lazy);
			if (q < 0) {
				free(c.buf);
				goto out_kill;
			}
		}
		q = drive(&c);
		free(c.buf);
		if (c.lazy) {
			/* its memory files are read from the process's view */
			if (q >= 0 && lazy_pending(c.lazy)) {
				lazy_take_view(c.lazy, p[i].dir);
				p[i].dir = NULL;
			}
			lazy = lazy_chain(lazy, c.lazy);
		}
		if (q < 0) {
			if (!flat)
				q = err_prefix(q, "restore of the tree");
			goto out_kill;
		}
	}
	/* A SysV segment that was removed (IPC_RMID) but still attached when
	 * dumped is removed again, now that it is attached. */
	for (size_t i = 0; i < ipc.nshm; i++)
		if (shm.made[ipc.shm[i].obj] && (ipc.shm[i].mode & SHM_DEST))
			ipc_shm_remove(&ipc.shm[i]);
	/* They run again together: let go of every thread (the clones were
	 * auto-attached); a process stopped when dumped is stopped again,
	 * taken as a group stop as soon as we let go. */
	for (size_t i = 0; i < t.n; i++) {
		if (t.v[i].zombie)
			continue;
		if (p[i].img.stopped)
			kill(t.v[i].pid, SIGSTOP);
		for (size_t k = 0; k < p[i].img.nthreads; k++)
			if (ptrace(PTRACE_DETACH, p[i].img.threads[k].tid, NULL, NULL) < 0)
				log_debug("thread %d: PTRACE_DETACH: %m", p[i].img.threads[k].tid);
		p[i].s.ntids = 0;
		p[i].attached = false;
	}
	for (size_t i = 0; i < t.n; i++) {
		if (!p[i].gpu)
			continue;
		q = gpu_resume(t.v[i].pid);
		if (q < 0) {
			/* its device memory is not back: the tree must not run on */
			goto out_kill;
		}
	}
	/* they run: the peers of their TCP connections may reach them now */
	for (size_t i = 0; i <= t.n; i++)
		if (fds_unlock(i < t.n ? p[i].fds : shared) < 0)
			log_warn("%s", err_msg());
	*ret_pid = root;
	if (o && o->ret_processes)
		*o->ret_processes = t.n;
	if (o && o->ret_lazy) {
		*o->ret_lazy = lazy;
		lazy = NULL;
	}
	log_debug("pid %d: restored with %zu processes", root, t.n);
	q = 0;
	goto out;

out_kill:
	/* nothing half-restored runs: every process we made dies */
	for (size_t i = t.n; i-- > 0;)
		kill(t.v[i].pid, SIGKILL);
out:
	if (inner) {
		if (q < 0)
			fds_lock_inner(inner, t.n + 1, false);
		free(inner);
	}
	if (sync != MAP_FAILED) {
		sync->go = 1;
		syscall(SYS_futex, &sync->go, FUTEX_WAKE, INT32_MAX, NULL, NULL, 0);
	}
	for (size_t i = 0; p && i < t.n; i++) {
		if (p[i].attached) {
			kill(t.v[i].pid, SIGKILL);
			seize_release(&p[i].s, 0);
		}
		seized_free(&p[i].s);
		if (p[i].fds)
			fds_free(p[i].fds);
		proc_image_free(&p[i].img);
		store_snap_close(p[i].dir);
	}
	/* not handed out: a failed restore, or nothing left to load */
	engine_lazy_close(lazy);
	shm_set_close(&shm);
	if (q < 0) {
		shm_set_drop(&shm, &ipc);
		ipc_drop_made(&ipc);
	}
	ipc_image_free(&ipc);
	if (shared)
		fds_free(shared);
	if (sync != MAP_FAILED)
		munmap(sync, sync_len);
	vmas_free(mine, nmine);
	creds_grant_free(&grant);
	free(p);
	tree_free(&t);
	return q;
}
