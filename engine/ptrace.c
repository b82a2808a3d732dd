/*
 * ptrace helpers: seizing every thread of a process, injecting system
 * calls into a stopped thread, and parking a thread where registers can be
 * set as if it had been stopped there by the kernel's signal path.
 *
 * Why park: the kernel turns -ERESTART* results into a restarted system
 * call (or -EINTR) only in arch_do_signal_or_restart(), on the way back to
 * user space after get_signal(). A thread stopped by PTRACE_INTERRUPT sits
 * inside get_signal(), so registers written there get exactly that
 * treatment when it runs again. A thread left in a syscall-exit-stop after
 * an injected call would not: it would return -ERESTARTSYS to user space.
 * So every thread we touched is brought back into an interrupt stop
 * (PTRACE_INTERRUPT, then PTRACE_CONT) before its final registers are set.
 */
#include <dirent.h>
#include <fcntl.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <signal.h>

#include "engine/engine-int.h"

#ifndef PTRACE_EVENT_STOP
#define PTRACE_EVENT_STOP 128
#endif

int regs_get(pid_t tid, struct user_regs_struct *r)
{
	if (ptrace(PTRACE_GETREGS, tid, NULL, r) < 0)
		return err_set(negerrno(), "thread %d: PTRACE_GETREGS: %m", tid);
	return 0;
}

int regs_set(pid_t tid, const struct user_regs_struct *r)
{
	if (ptrace(PTRACE_SETREGS, tid, NULL, r) < 0)
		return err_set(negerrno(), "thread %d: PTRACE_SETREGS: %m", tid);
	return 0;
}

int ptrace_wait(pid_t tid, int *status)
{
	for (;;) {
		pid_t r = waitpid(tid, status, __WALL);
		if (r == tid)
			return 0;
		if (r < 0 && errno == EINTR)
			continue;
		return err_set(r < 0 ? negerrno() : -ECHILD, "thread %d: waitpid: %m", tid);
	}
}

static bool is_event_stop(int status)
{
	return WIFSTOPPED(status) && (status >> 16) == PTRACE_EVENT_STOP;
}

/* Waits until tid is in an event stop (the interrupt or group stop we
 * asked for). Signal-delivery stops on the way are kept for detach time
 * and suppressed now: the thread must not run its handlers while we work. */
static int wait_event_stop(pid_t tid, int *stash)
{
	for (;;) {
		int st, r = ptrace_wait(tid, &st);
		if (r < 0)
			return r;
		if (WIFEXITED(st) || WIFSIGNALED(st))
			return err_set(-ESRCH, "thread %d exited while being stopped", tid);
		if (is_event_stop(st))
			return 0;
		if (WIFSTOPPED(st) && (st >> 16) == 0 && WSTOPSIG(st) != (SIGTRAP | 0x80)) {
			if (stash)
				*stash = WSTOPSIG(st);
			/* continue without it: the pending interrupt traps next */
		}
		if (ptrace(PTRACE_CONT, tid, NULL, NULL) < 0)
			return err_set(negerrno(), "thread %d: PTRACE_CONT: %m", tid);
	}
}

static int read_tids(pid_t pid, pid_t **ret, size_t *ret_n)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/task", pid);
	DIR *d = opendir(path);
	if (!d)
		return err_set(negerrno(), "pid %d: cannot list threads: %m", pid);
	pid_t *v = NULL;
	size_t n = 0, cap = 0;
	struct dirent *de;
	while ((de = readdir(d))) {
		uint64_t t;
		if (parse_u64(de->d_name, &t) < 0)
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 16;
			pid_t *nv = realloc(v, cap * sizeof(*v));
			if (!nv) {
				free(v);
				closedir(d);
				return -ENOMEM;
			}
			v = nv;
		}
		v[n++] = (pid_t)t;
	}
	closedir(d);
	*ret = v;
	*ret_n = n;
	return 0;
}

static bool has_tid(const struct seized *s, pid_t t)
{
	for (size_t i = 0; i < s->ntids; i++)
		if (s->tids[i] == t)
			return true;
	return false;
}

int seize_all(pid_t pid, unsigned options, struct seized *ret)
{
	struct seized s = { .pid = pid };
	size_t cap = 0;
	bool faults = !(options & SEIZE_NO_FAULT);
	int r;

	options &= ~SEIZE_NO_FAULT;

	if (pid == getpid())
		return err_set(-EINVAL, "pid %d: cannot checkpoint ourselves", pid);
	/* New threads may appear while we stop the others: list again until
	 * a pass finds none we have not stopped. */
	for (int pass = 0;; pass++) {
		_cleanup_free_ pid_t *tids = NULL;
		size_t n = 0, added = 0;
		r = read_tids(pid, &tids, &n);
		if (r < 0)
			goto fail;
		for (size_t i = 0; i < n; i++) {
			pid_t t = tids[i];
			if (has_tid(&s, t))
				continue;
			if (s.ntids == cap) {
				cap = cap ? cap * 2 : 16;
				pid_t *nt = realloc(s.tids, cap * sizeof(pid_t));
				int *ns = nt ? realloc(s.stash_sig, cap * sizeof(int)) : NULL;
				if (nt)
					s.tids = nt;
				if (!nt || !ns) {
					r = -ENOMEM;
					goto fail;
				}
				s.stash_sig = ns;
			}
			if (faults && fault_hit(FAULT_ENGINE_SEIZE)) {
				r = err_set(-EPERM, "thread %d: PTRACE_SEIZE: injected fault", t);
				goto fail;
			}
			if (ptrace(PTRACE_SEIZE, t, NULL, (void *)(uintptr_t)options) < 0) {
				if (errno == ESRCH)
					continue; /* it exited meanwhile */
				r = negerrno();
				char sp[64];
				_cleanup_free_ char *st = NULL;
				snprintf(sp, sizeof(sp), "/proc/%d/status", t);
				const char *tp = read_file_full(sp, &st, NULL) >= 0 ? strstr(st, "TracerPid:\t") : NULL;
				if (r == -EPERM && tp && atoi(tp + 11) > 0)
					r = err_set(r, "thread %d is already traced by pid %d", t, atoi(tp + 11));
				else
					r = err_set(r, "thread %d: PTRACE_SEIZE: %s", t, strerror(-r));
				goto fail;
			}
			s.tids[s.ntids] = t;
			s.stash_sig[s.ntids] = 0;
			s.ntids++;
			added++;
			if (ptrace(PTRACE_INTERRUPT, t, NULL, NULL) < 0) {
				r = err_set(negerrno(), "thread %d: PTRACE_INTERRUPT: %m", t);
				goto fail;
			}
			r = wait_event_stop(t, &s.stash_sig[s.ntids - 1]);
			if (r < 0)
				goto fail;
		}
		if (!added && pass > 0)
			break;
		if (pass > 1000) {
			r = err_set(-EAGAIN, "pid %d: threads keep appearing", pid);
			goto fail;
		}
	}
	if (!has_tid(&s, pid)) {
		r = err_set(-ESRCH, "pid %d: no such process", pid);
		goto fail;
	}
	/* the leader first: the image and the restore expect it there */
	for (size_t i = 0; i < s.ntids; i++)
		if (s.tids[i] == pid && i) {
			pid_t t = s.tids[0];
			int g = s.stash_sig[0];
			s.tids[0] = pid;
			s.stash_sig[0] = s.stash_sig[i];
			s.tids[i] = t;
			s.stash_sig[i] = g;
		}
	*ret = s;
	return 0;
fail:
	seize_release(&s, 0);
	seized_free(&s);
	return r;
}

void seize_release(struct seized *s, int sig)
{
	/* A signal given to PTRACE_DETACH is dropped unless the thread is in
	 * a signal-delivery stop; ours are in event stops: queue them. */
	if (sig && s->ntids)
		kill(s->pid, sig);
	for (size_t i = 0; i < s->ntids; i++) {
		if (s->stash_sig[i])
			syscall(SYS_tgkill, s->pid, s->tids[i], s->stash_sig[i]);
		if (ptrace(PTRACE_DETACH, s->tids[i], NULL, NULL) < 0 && errno != ESRCH)
			log_debug("thread %d: PTRACE_DETACH: %m", s->tids[i]);
	}
	s->ntids = 0;
}

void seized_free(struct seized *s)
{
	free(s->tids);
	free(s->stash_sig);
	s->tids = NULL;
	s->stash_sig = NULL;
}

int inject_syscall(pid_t tid, uint64_t ip, const struct user_regs_struct *base, long nr,
		   uint64_t a1, uint64_t a2, uint64_t a3, uint64_t a4, uint64_t a5, uint64_t a6,
		   int64_t *ret)
{
	struct user_regs_struct r = *base;
	int st, q;
	bool entered = false;

	r.rip = ip;
	r.rax = nr;
	/* -1: no syscall in progress, so no restart fixup touches this one */
	r.orig_rax = (uint64_t)-1;
	r.rdi = a1;
	r.rsi = a2;
	r.rdx = a3;
	r.r10 = a4;
	r.r8 = a5;
	r.r9 = a6;
	q = regs_set(tid, &r);
	if (q < 0)
		return q;
	/* the dumper's death while this thread's registers are ours */
	keeper_fault_kill_dumper(FAULT_ENGINE_DIE_INJECT);
	for (;;) {
		if (ptrace(PTRACE_SYSCALL, tid, NULL, NULL) < 0)
			return err_set(negerrno(), "thread %d: PTRACE_SYSCALL: %m", tid);
		q = ptrace_wait(tid, &st);
		if (q < 0)
			return q;
		if (WIFEXITED(st) || WIFSIGNALED(st))
			return err_set(-ESRCH, "thread %d died in injected syscall %ld", tid, nr);
		if (!WIFSTOPPED(st))
			continue;
		if (WSTOPSIG(st) == (SIGTRAP | 0x80)) {
			if (!entered) {
				entered = true;
				continue;
			}
			break;
		}
		if ((st >> 16) != 0)
			continue; /* PTRACE_EVENT_CLONE etc.: go on */
		/* a signal-delivery stop: our injection must not run handlers */
		if (WSTOPSIG(st) == SIGSEGV || WSTOPSIG(st) == SIGBUS || WSTOPSIG(st) == SIGILL)
			return err_set(-EFAULT, "thread %d: signal %d in injected syscall %ld",
				       tid, WSTOPSIG(st), nr);
	}
	if (regs_get(tid, &r) < 0)
		return -EIO;
	*ret = (int64_t)r.rax;
	return 0;
}

int thread_park(pid_t tid)
{
	if (ptrace(PTRACE_INTERRUPT, tid, NULL, NULL) < 0)
		return err_set(negerrno(), "thread %d: PTRACE_INTERRUPT: %m", tid);
	if (ptrace(PTRACE_CONT, tid, NULL, NULL) < 0)
		return err_set(negerrno(), "thread %d: PTRACE_CONT: %m", tid);
	return wait_event_stop(tid, NULL);
}

static char vdso_hex[2 * STORE_HASH_LEN + 1];

int vdso_syscall_offset(uint64_t *off, uint64_t *size)
{
	static uint64_t c_off, c_size;
	if (c_size) {
		*off = c_off;
		*size = c_size;
		return 0;
	}
	_cleanup_free_ char *maps = NULL;
	int r = read_file_full("/proc/self/maps", &maps, NULL);
	if (r < 0)
		return err_set(r, "cannot read /proc/self/maps");
	for (char *l = maps; l && *l;) {
		char *nl = strchr(l, '\n');
		if (nl)
			*nl = 0;
		unsigned long a, b;
		if (strstr(l, "[vdso]") && sscanf(l, "%lx-%lx", &a, &b) == 2) {
			const uint8_t *p = (const uint8_t *)a;
			uint8_t h[STORE_HASH_LEN];
			store_hash_buf(p, b - a, h);
			store_hash_hex(h, vdso_hex);
			for (unsigned long i = 0; i + 1 < b - a; i++)
				if (p[i] == 0x0f && p[i + 1] == 0x05) {
					c_off = i;
					c_size = b - a;
					*off = c_off;
					*size = c_size;
					return 0;
				}
		}
		l = nl ? nl + 1 : NULL;
	}
	return err_set(-ENOENT, "no syscall instruction found in the vDSO");
}

const char *vdso_hash(void)
{
	uint64_t off, size;
	if (vdso_syscall_offset(&off, &size) < 0)
		return NULL;
	return vdso_hex;
}

/* ---- a batch of system calls, run inside the thread --------------------- */

/* The batch runner, copied into a page of the process (read and execute
 * only) by inject_code_put(): from the table at r12, 64-byte entries of
 * {nr, a1..a6, ret}, it makes each call and stores its result, until an
 * entry whose nr is -1; then it sends its own thread SIGTRAP (tgkill of
 * getpid(), gettid(): ids as its own pid namespace sees them), which
 * stops it for us in the kernel's signal path at inj_blob_stop. A signal
 * sent, not a trap instruction: the kernel's forced signal (int3) would
 * reset the process's SIGTRAP handler where it is ignored or blocked. */
__asm__(".pushsection .rodata\n"
	".balign 16\n"
	".globl engine_inj_blob\n.hidden engine_inj_blob\n"
	"engine_inj_blob:\n"
	"1:\tmovq (%r12), %rax\n"
	"\tcmpq $-1, %rax\n"
	"\tje 2f\n"
	"\tmovq 8(%r12), %rdi\n"
	"\tmovq 16(%r12), %rsi\n"
	"\tmovq 24(%r12), %rdx\n"
	"\tmovq 32(%r12), %r10\n"
	"\tmovq 40(%r12), %r8\n"
	"\tmovq 48(%r12), %r9\n"
	"\tsyscall\n"
	"\tmovq %rax, 56(%r12)\n"
	"\taddq $64, %r12\n"
	"\tjmp 1b\n"
	"2:\tmovl $39, %eax\n" /* getpid */
	"\tsyscall\n"
	"\tmovq %rax, %rbx\n"
	"\tmovl $186, %eax\n" /* gettid */
	"\tsyscall\n"
	"\tmovq %rax, %rsi\n"
	"\tmovq %rbx, %rdi\n"
	"\tmovl $5, %edx\n"   /* SIGTRAP */
	"\tmovl $234, %eax\n" /* tgkill */
	"\tsyscall\n"
	".globl engine_inj_blob_stop\n.hidden engine_inj_blob_stop\n"
	"engine_inj_blob_stop:\n"
	"3:\tjmp 3b\n"
	".globl engine_inj_blob_end\n.hidden engine_inj_blob_end\n"
	"engine_inj_blob_end:\n"
	".popsection\n");
extern const uint8_t engine_inj_blob[], engine_inj_blob_stop[], engine_inj_blob_end[];

#define INJ_ENTRY 64
#define INJ_UNSET ((int64_t)0x5afe5afe5afe5afe)
#define INJ_WAIT_US 10000000 /* never reached but by a runner that could not signal itself */

int inject_code_put(pid_t pid, uint64_t at)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/mem", pid);
	int fd = fault_hit(FAULT_ENGINE_INJECT_RUNNER) ? (errno = EACCES, -1) : open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return err_set(negerrno(), "pid %d: cannot open %s for writing: %m", pid, path);
	size_t len = (size_t)(engine_inj_blob_end - engine_inj_blob);
	int r = pwrite_full(fd, engine_inj_blob, len, (off_t)at);
	close(fd);
	if (r < 0)
		return err_set(r, "pid %d: cannot write the batch runner at %" PRIx64 ": %s", pid, at, strerror(-r));
	return 0;
}

/* Waits at most INJ_WAIT_US for tid's next stop: 1 and *st, or 0 on time
 * out, or -errno. */
static int wait_bounded(pid_t tid, int *st)
{
	for (uint64_t t0 = now_ns(); now_ns() - t0 < INJ_WAIT_US * 1000ull;) {
		pid_t r = waitpid(tid, st, __WALL | WNOHANG);
		if (r == tid)
			return 1;
		if (r < 0 && errno != EINTR)
			return err_set(negerrno(), "thread %d: waitpid: %m", tid);
		struct timespec ts = { 0, 20000 };
		nanosleep(&ts, NULL);
	}
	return 0;
}

/* Runs c[0..n) (which fit the scratch area) through the runner. */
static int batch_run(pid_t tid, const struct inj_site *s, const struct user_regs_struct *base, struct inj_call *c,
		     size_t n, size_t outs)
{
	size_t table = (n + 1) * INJ_ENTRY, len = table + outs;
	_cleanup_free_ uint8_t *buf = calloc(1, len);
	if (!buf)
		return -ENOMEM;
	for (size_t i = 0, o = table; i < n; i++) {
		int64_t *e = (int64_t *)(buf + i * INJ_ENTRY);
		e[0] = c[i].nr;
		for (int j = 0; j < 6; j++)
			e[1 + j] = (int64_t)c[i].a[j];
		if (c[i].out_arg)
			e[c[i].out_arg] = (int64_t)(s->scratch + o);
		e[7] = INJ_UNSET;
		o += ALIGN_UP((size_t)c[i].out_len, 8);
	}
	((int64_t *)(buf + n * INJ_ENTRY))[0] = -1;
	struct iovec l = { buf, len }, rm = { (void *)(uintptr_t)s->scratch, len };
	if (process_vm_writev(tid, &l, 1, &rm, 1, 0) != (ssize_t)len)
		return err_set(negerrno(), "thread %d: writing the batch's table: %m", tid);

	/* SIGTRAP alone let through: it ends the batch */
	uint64_t mask = ~(1ull << (SIGTRAP - 1)), all = ~0ull;
	struct user_regs_struct r = *base;
	r.rip = s->code;
	r.r12 = s->scratch;
	r.orig_rax = (uint64_t)-1; /* no syscall in progress: no restart fixup */
	int q = regs_set(tid, &r);
	if (q < 0)
		return q;
	if (ptrace(PTRACE_SETSIGMASK, tid, (void *)8, &mask) < 0)
		return err_set(negerrno(), "thread %d: PTRACE_SETSIGMASK: %m", tid);
	keeper_fault_kill_dumper(FAULT_ENGINE_DIE_INJECT);
	int st = 0;
	q = ptrace(PTRACE_CONT, tid, NULL, NULL) < 0 ? err_set(negerrno(), "thread %d: PTRACE_CONT: %m", tid) : 0;
	while (q >= 0) {
		q = wait_bounded(tid, &st);
		if (q == 0) {
			/* never seen: the runner's end could not signal itself */
			ptrace(PTRACE_INTERRUPT, tid, NULL, NULL);
			wait_event_stop(tid, NULL);
			q = err_set(-ETIMEDOUT, "thread %d: the injected batch did not end", tid);
			break;
		}
		if (q < 0)
			break;
		if (WIFEXITED(st) || WIFSIGNALED(st)) {
			q = err_set(-ESRCH, "thread %d died in the injected batch", tid);
			break;
		}
		if (WIFSTOPPED(st) && (st >> 16) == 0 && WSTOPSIG(st) == SIGTRAP)
			break;
		if (WIFSTOPPED(st) && (st >> 16) == 0) {
			q = err_set(-EFAULT, "thread %d: signal %d in the injected batch", tid, WSTOPSIG(st));
			break;
		}
		/* an event stop (a clone, a pending interrupt): on */
		if (ptrace(PTRACE_CONT, tid, NULL, NULL) < 0)
			q = err_set(negerrno(), "thread %d: PTRACE_CONT: %m", tid);
	}
	if (ptrace(PTRACE_SETSIGMASK, tid, (void *)8, &all) < 0 && q >= 0)
		q = err_set(negerrno(), "thread %d: PTRACE_SETSIGMASK: %m", tid);
	if (q < 0)
		return q;
	/* ours: sent by the runner's end, stopped right after it */
	siginfo_t si;
	if (ptrace(PTRACE_GETSIGINFO, tid, NULL, &si) < 0 || regs_get(tid, &r) < 0)
		return err_set(-EIO, "thread %d: the injected batch's stop unreadable", tid);
	if (si.si_code != SI_TKILL || r.rip != s->code + (uint64_t)(engine_inj_blob_stop - engine_inj_blob))
		return err_set(-EFAULT, "thread %d: SIGTRAP from elsewhere (code %d) in the injected batch", tid,
			       si.si_code);
	if (fault_hit(FAULT_ENGINE_INJECT_BATCH))
		return err_set(-EIO, "thread %d: the injected batch's stop: injected fault", tid);
	l.iov_len = rm.iov_len = len;
	if (process_vm_readv(tid, &l, 1, &rm, 1, 0) != (ssize_t)len)
		return err_set(negerrno(), "thread %d: reading the batch's results: %m", tid);
	for (size_t i = 0, o = table; i < n; i++) {
		c[i].ret = ((int64_t *)(buf + i * INJ_ENTRY))[7];
		if (c[i].ret == INJ_UNSET)
			return err_set(-EIO, "thread %d: the injected batch stopped at call %zu of %zu", tid, i, n);
		if (c[i].out_arg)
			memcpy(c[i].out, buf + o, c[i].out_len);
		o += ALIGN_UP((size_t)c[i].out_len, 8);
	}
	return 0;
}

int inject_batch(pid_t tid, const struct inj_site *s, const struct user_regs_struct *base, struct inj_call *c,
		 size_t n)
{
	if (!s->code) {
		for (size_t i = 0; i < n; i++) {
			uint64_t a[6];
			memcpy(a, c[i].a, sizeof(a));
			if (c[i].out_arg)
				a[c[i].out_arg - 1] = s->scratch;
			int q = inject_syscall(tid, s->ip, base, c[i].nr, a[0], a[1], a[2], a[3], a[4], a[5], &c[i].ret);
			if (q < 0)
				return q;
			if (!c[i].out_arg || c[i].ret < 0)
				continue;
			struct iovec l = { c[i].out, c[i].out_len }, rm = { (void *)(uintptr_t)s->scratch, c[i].out_len };
			if (process_vm_readv(tid, &l, 1, &rm, 1, 0) != (ssize_t)c[i].out_len)
				return err_set(negerrno(), "thread %d: reading injected results: %m", tid);
		}
		return 0;
	}
	/* as many as fit the scratch area at a time */
	for (size_t i = 0; i < n;) {
		size_t k = 0, outs = 0;
		while (i + k < n &&
		       (k + 2) * INJ_ENTRY + outs + ALIGN_UP((size_t)c[i + k].out_len, 8) <= s->scratch_len) {
			outs += ALIGN_UP((size_t)c[i + k].out_len, 8);
			k++;
		}
		if (!k)
			return err_set(-E2BIG, "thread %d: an injected call's result does not fit", tid);
		int q = batch_run(tid, s, base, c + i, k, outs);
		if (q < 0)
			return q;
		i += k;
	}
	return 0;
}
