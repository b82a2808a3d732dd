/*
 * Process-wide state: what /proc shows (comm, exe, cwd, umask, mm fields,
 * auxv, rlimits, credentials) and what only the process itself can ask the
 * kernel for (sigactions, itimers, posix timers' times, brk; per thread
 * the alternate signal stack and the clear-child-tid address), read by
 * injecting system calls into the stopped threads (in a dump, by the
 * keeper: keeper.c). Also the text of the `process` file.
 *
 * The calls are planned as a list (process_plan(), thread_plan()) and
 * run in batches: a few instructions of ours (ptrace.c's batch runner),
 * copied into a page mapped in the process for the purpose, make every
 * call of a thread's list and stop it once (~0.4 ms for the ~90 calls of
 * a one-thread process, against ~2.2 ms injected one at a time, each two
 * ptrace stops). Where a batch could behave otherwise than the calls made
 * from the vDSO (batch_ok(): seccomp filters, syscall user dispatch, a
 * SIGTRAP pending) each call is injected alone.
 *
 * Injection leaves nothing behind: the scratch area and the runner's page
 * are mapped for the dump and unmapped again, and every thread gets back
 * its registers and signal mask while parked in the kernel's signal path
 * (ptrace.c).
 */
#include <dirent.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>

#include "engine/engine-int.h"

static int read_proc(pid_t pid, const char *what, char **ret, size_t *len)
{
	char path[96];
	snprintf(path, sizeof(path), "/proc/%d/%s", pid, what);
	int r = read_file_full(path, ret, len);
	if (r < 0)
		return err_set(r, "pid %d: cannot read %s", pid, path);
	return 0;
}

static int read_link(pid_t pid, const char *what, char **ret)
{
	char path[96], buf[PATH_MAX];
	snprintf(path, sizeof(path), "/proc/%d/%s", pid, what);
	ssize_t n = readlink(path, buf, sizeof(buf) - 1);
	if (n < 0)
		return err_set(negerrno(), "pid %d: cannot read link %s: %m", pid, path);
	buf[n] = 0;
	*ret = strdup(buf);
	return *ret ? 0 : -ENOMEM;
}

static bool has_sys_admin(void)
{
	struct thread_creds me = { 0 };
	if (creds_read(getpid(), getpid(), &me) < 0)
		return false;
	creds_free(&me);
	return me.cap_eff & (1ull << 21); /* CAP_SYS_ADMIN */
}

/* The clocks a restored timer can run on again: wall, monotonic, boot
 * time, TAI, and the whole process's CPU time (a thread's CPU clock or
 * another process's are not ours to make again). */
static bool ptimer_clock_ok(int clock)
{
	return clock == CLOCK_REALTIME || clock == CLOCK_MONOTONIC || clock == CLOCK_PROCESS_CPUTIME_ID ||
	       clock == CLOCK_BOOTTIME || clock == CLOCK_TAI;
}

int ptimers_parse(pid_t pid, const char *text, struct ptimer *t, size_t *n)
{
	const char *l = text;
	struct ptimer *cur = NULL;

	*n = 0;
	while (l && *l) {
		const char *end = strchr(l, '\n');
		char line[160], how[16], whom[16];
		size_t len = end ? (size_t)(end - l) : strlen(l);
		snprintf(line, sizeof(line), "%.*s", (int)MIN(len, sizeof(line) - 1), l);
		l = end ? end + 1 : NULL;
		int id, clock, sig;
		uint64_t value;
		long who;
		if (sscanf(line, "ID: %d", &id) == 1) {
			if (*n == ENGINE_MAX_PTIMERS)
				return err_set(-EOPNOTSUPP, "pid %d: more than %d posix timers are not supported", pid,
					       ENGINE_MAX_PTIMERS);
			cur = &t[(*n)++];
			memset(cur, 0, sizeof(*cur));
			cur->id = id;
			cur->notify = -1;
			cur->clock = -1;
		} else if (!cur) {
			continue;
		} else if (sscanf(line, "signal: %d/%" SCNx64, &sig, &value) == 2) {
			cur->signo = sig;
			cur->value = value;
		} else if (sscanf(line, "notify: %15[a-z]/%15[a-z].%ld", how, whom, &who) == 3) {
			bool tid = !strcmp(whom, "tid");
			if (!strcmp(how, "none") && !tid)
				cur->notify = SIGEV_NONE;
			else if (!strcmp(how, "signal") && !tid)
				cur->notify = SIGEV_SIGNAL;
			else if (!strcmp(how, "signal") && tid && who > 0 && who <= INT32_MAX) {
				/* the kernel keeps it to a thread of the process */
				cur->notify = SIGEV_THREAD_ID;
				cur->tid = (int32_t)who;
			} else {
				return err_set(-EOPNOTSUPP, "pid %d: posix timer %d: notification '%s/%s' not supported",
					       pid, cur->id, how, whom);
			}
		} else if (sscanf(line, "ClockID: %d", &clock) == 1) {
			if (!ptimer_clock_ok(clock))
				return err_set(-EOPNOTSUPP, "pid %d: posix timer %d runs on clock %d: not supported",
					       pid, cur->id, clock);
			cur->clock = clock;
		}
	}
	for (size_t i = 0; i < *n; i++)
		if (t[i].notify < 0 || t[i].clock < 0)
			return err_set(-EIO, "pid %d: cannot read posix timer %d in /proc/%d/timers", pid, t[i].id,
				       pid);
	return 0;
}

/* Every thread's seccomp mode: strict is refused; filters need
 * CAP_SYS_ADMIN to be read (PTRACE_SECCOMP_GET_FILTER), which the keeper
 * has when we have it. */
static int seccomp_check(pid_t pid)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/task", pid);
	DIR *d = opendir(path);
	if (!d)
		return err_set(negerrno(), "pid %d: cannot list %s: %m", pid, path);
	struct dirent *de;
	int r = 0;
	while (r >= 0 && (de = readdir(d))) {
		struct thread_creds c = { 0 };
		pid_t tid = atoi(de->d_name);
		if (tid <= 0 || creds_read(pid, tid, &c) < 0)
			continue; /* gone meanwhile: the seize sees what is left */
		creds_free(&c);
		if (c.seccomp_mode == 1)
			r = err_set(-EOPNOTSUPP, "pid %d: thread %d is in seccomp strict mode (SECCOMP_MODE_STRICT): "
					   "not supported", pid, tid);
		else if (c.seccomp_mode == 2 && !has_sys_admin())
			r = err_set(-EPERM, "pid %d: thread %d has seccomp filters, and reading them takes "
					    "CAP_SYS_ADMIN", pid, tid);
	}
	closedir(d);
	return r;
}

int process_check(pid_t pid)
{
	_cleanup_free_ char *status = NULL, *timers = NULL;
	char path[96], a[64], b[64];
	int r = read_proc(pid, "status", &status, NULL);
	if (r < 0)
		return r;
	r = seccomp_check(pid);
	if (r < 0)
		return r;
	r = sched_check(pid);
	if (r < 0)
		return r;
	/* an AIO ring with events not reaped: refused before the freeze */
	r = aio_check(pid);
	if (r < 0)
		return r;
	/* posix timers a restore could not make again: refused up front */
	if (read_proc(pid, "timers", &timers, NULL) >= 0 && timers[0]) {
		struct ptimer t[ENGINE_MAX_PTIMERS];
		size_t n;
		r = ptimers_parse(pid, timers, t, &n);
		if (r < 0)
			return r;
	}
	/* PIDs and paths mean what they mean in our namespaces only */
	static const char *const ns[] = { "pid", "mnt" };
	for (size_t i = 0; i < ARRAY_SIZE(ns); i++) {
		snprintf(path, sizeof(path), "/proc/%d/ns/%s", pid, ns[i]);
		ssize_t n1 = readlink(path, a, sizeof(a) - 1);
		snprintf(path, sizeof(path), "/proc/self/ns/%s", ns[i]);
		ssize_t n2 = readlink(path, b, sizeof(b) - 1);
		if (n1 < 0 || n2 < 0)
			continue;
		a[n1] = b[n2] = 0;
		if (strcmp(a, b))
			return err_set(-EOPNOTSUPP, "pid %d is in another %s namespace: not supported", pid, ns[i]);
	}
	return 0;
}

/* /proc/PID/limits: a header, then one line per resource in RLIMIT_*
 * order; the name column is 26 characters wide, then soft and hard limits
 * ("unlimited" or a number). */
static int limits_from_proc(pid_t pid, struct rlimit *rl)
{
	_cleanup_free_ char *text = NULL;
	int r = read_proc(pid, "limits", &text, NULL);
	if (r < 0)
		return r;
	char *l = strchr(text, '\n');
	for (int i = 0; i < RLIM_NLIMITS; i++) {
		char soft[32], hard[32];
		if (!l || strlen(++l) < 26 || sscanf(l + 26, "%31s %31s", soft, hard) != 2)
			return -EBADMSG;
		rl[i].rlim_cur = strcmp(soft, "unlimited") ? strtoull(soft, NULL, 10) : RLIM_INFINITY;
		rl[i].rlim_max = strcmp(hard, "unlimited") ? strtoull(hard, NULL, 10) : RLIM_INFINITY;
		l = strchr(l, '\n');
	}
	return 0;
}

int process_capture_proc(pid_t pid, struct proc_image *img)
{
	_cleanup_free_ char *stat = NULL, *status = NULL, *cmd = NULL, *pers = NULL;
	size_t cmdlen;
	int r;

	img->pid = pid;
	if ((r = read_proc(pid, "stat", &stat, NULL)) < 0 ||
	    (r = read_proc(pid, "status", &status, NULL)) < 0 ||
	    (r = read_proc(pid, "cmdline", &cmd, &cmdlen)) < 0 ||
	    (r = read_proc(pid, "auxv", (char **)&img->auxv, &img->auxv_len)) < 0 ||
	    (r = read_link(pid, "exe", &img->exe)) < 0 ||
	    (r = read_link(pid, "cwd", &img->cwd)) < 0)
		return r;

	/* A removed cwd reads "PATH (deleted)"; a directory whose name ends
	 * so has links left. */
	char cwdp[64];
	struct stat cst;
	snprintf(cwdp, sizeof(cwdp), "/proc/%d/cwd", pid);
	if (fstatat(AT_FDCWD, cwdp, &cst, 0) < 0) /* the local 'stat' hides stat() */
		return err_set(negerrno(), "pid %d: cannot stat its cwd %s", pid, img->cwd);
	if (S_ISDIR(cst.st_mode) && cst.st_nlink == 0) {
		img->cwd_deleted = true;
		img->cwd_mode = cst.st_mode & 07777;
		img->cwd_uid = cst.st_uid;
		img->cwd_gid = cst.st_gid;
	}

	/* comm may hold spaces and parentheses: it ends at the last ')' */
	char *lp = strchr(stat, '('), *rp = strrchr(stat, ')');
	if (!lp || !rp)
		return err_set(-EIO, "pid %d: odd /proc/PID/stat", pid);
	snprintf(img->comm, sizeof(img->comm), "%.*s", (int)(rp - lp - 1), lp + 1);
	/* fields from 3 (state) on */
	uint64_t f[64] = { 0 };
	int nf = 3;
	char *save = NULL;
	for (char *tok = strtok_r(rp + 2, " \n", &save); tok && nf < 64; tok = strtok_r(NULL, " \n", &save), nf++)
		f[nf] = strtoull(tok, NULL, 10);
	if (nf < 52)
		return err_set(-EIO, "pid %d: /proc/PID/stat has %d fields", pid, nf);
	img->mm.start_code = f[26];
	img->mm.end_code = f[27];
	img->mm.start_stack = f[28];
	img->mm.start_data = f[45];
	img->mm.end_data = f[46];
	img->mm.start_brk = f[47];
	img->mm.arg_start = f[48];
	img->mm.arg_end = f[49];
	img->mm.env_start = f[50];
	img->mm.env_end = f[51];

	char *u = strstr(status, "\nUmask:");
	if (!u || sscanf(u + 7, "%o", &img->umask) != 1)
		return err_set(-EIO, "pid %d: no Umask in status", pid);
	if (strstr(status, "x86_Thread_features:\tshstk") ||
	    strstr(status, "x86_Thread_features: shstk"))
		return err_set(-EOPNOTSUPP, "pid %d: shadow stacks are not supported", pid);

	struct tbuf cr = { 0 };
	for (const char *key = "\nUid:"; key; key = strcmp(key, "\nUid:") ? NULL : "\nGid:") {
		char *p = strstr(status, key);
		if (p) {
			p++;
			tb_printf(&cr, "%.*s ", (int)strcspn(p, "\n"), p);
		}
	}
	img->creds = tb_take(&cr);
	if (!img->creds)
		return -ENOMEM;
	for (char *c = img->creds; *c; c++)
		if (*c == '\t')
			*c = ' ';

	for (size_t i = 0; i + 1 < cmdlen; i++)
		if (!cmd[i] || cmd[i] == '\n')
			cmd[i] = ' ';
	img->cmdline = strdup(cmdlen ? cmd : "");
	if (!img->cmdline)
		return -ENOMEM;

	if ((r = read_proc(pid, "personality", &pers, NULL)) < 0)
		return r;
	img->personality = strtoull(pers, NULL, 16);

	/* /proc/PID/limits, readable by all: prlimit() on another uid's
	 * process takes CAP_SYS_RESOURCE, which a root daemon may lack
	 * (containers), and nginx's workers run as another uid */
	r = limits_from_proc(pid, img->rlim);
	if (r < 0)
		return err_set(r, "pid %d: cannot read /proc/%d/limits", pid, pid);
	return 0;
}

#ifndef PR_GET_MDWE
#define PR_GET_MDWE 66
#endif
#ifndef MEMBARRIER_CMD_GET_REGISTRATIONS
#define MEMBARRIER_CMD_GET_REGISTRATIONS (1 << 9)
#endif

#ifndef PR_SPEC_L1D_FLUSH
#define PR_SPEC_L1D_FLUSH 2
#endif
#ifndef PTRACE_GET_SYSCALL_USER_DISPATCH_CONFIG
#define PTRACE_GET_SYSCALL_USER_DISPATCH_CONFIG 0x4211
#endif

/* The scratch area the calls' results are written to (and, run in a
 * batch, their table): the process-wide batch is ~90 calls. */
#define SCRATCH_LEN (16u << 10)

/* Appends a call to c (*n of them); out_arg (1-6): that argument is where
 * the call writes len bytes, copied back to out. */
static struct inj_call *call(struct inj_call *c, size_t *n, long nr, uint64_t a1, uint64_t a2, uint64_t a3,
			     int out_arg, void *out, uint32_t len)
{
	struct inj_call *x = &c[(*n)++];
	*x = (struct inj_call){ .nr = nr, .a = { a1, a2, a3 }, .out_arg = out_arg, .out = out, .out_len = len };
	return x;
}

/* Thread t's per-thread calls: its alternate signal stack, clear-child-tid
 * address, securebits, timer slack, parent-death signal and prctl switches
 * (struct thread_switches). At most THREAD_CALLS. */
#define THREAD_CALLS 12
struct thread_asked {
	stack_t ss;
	int pdeathsig, tsc;
};

static size_t thread_plan(struct thread_image *t, struct thread_asked *q, struct inj_call *c)
{
	size_t n = 0;
	call(c, &n, SYS_sigaltstack, 0, 0, 0, 2, &q->ss, sizeof(q->ss));
	call(c, &n, SYS_prctl, PR_GET_TID_ADDRESS, 0, 0, 2, &t->tid_address, 8);
	call(c, &n, SYS_prctl, PR_GET_SECUREBITS, 0, 0, 0, NULL, 0);
	call(c, &n, SYS_prctl, PR_GET_TIMERSLACK, 0, 0, 0, NULL, 0);
	call(c, &n, SYS_prctl, PR_GET_PDEATHSIG, 0, 0, 2, &q->pdeathsig, sizeof(q->pdeathsig));
	for (int i = 0; i < 3; i++)
		call(c, &n, SYS_prctl, PR_GET_SPECULATION_CTRL, (uint64_t)i, 0, 0, NULL, 0);
	call(c, &n, SYS_prctl, PR_GET_TSC, 0, 0, 2, &q->tsc, sizeof(q->tsc));
	call(c, &n, SYS_prctl, PR_MCE_KILL_GET, 0, 0, 0, NULL, 0);
	return n;
}

static int thread_take(struct thread_image *t, const struct thread_asked *q, const struct inj_call *c)
{
	if (c[0].ret < 0)
		return err_set((int)c[0].ret, "thread %d: sigaltstack failed", t->tid);
	t->altstack_sp = (uintptr_t)q->ss.ss_sp;
	t->altstack_size = q->ss.ss_size;
	t->altstack_flags = q->ss.ss_flags;
	if (c[1].ret < 0)
		return err_set((int)c[1].ret, "thread %d: PR_GET_TID_ADDRESS failed", t->tid);
	/* per thread, and /proc does not show it */
	if (c[2].ret < 0)
		return err_set((int)c[2].ret, "thread %d: PR_GET_SECUREBITS failed", t->tid);
	t->creds.securebits = (uint32_t)c[2].ret;
	/* per thread too: timer slack, the parent-death signal */
	t->timerslack = c[3].ret;
	if (c[4].ret < 0)
		return err_set((int)c[4].ret, "thread %d: PR_GET_PDEATHSIG failed", t->tid);
	t->pdeathsig = q->pdeathsig;
	/* the switches; a kernel that does not know one leaves it at its
	 * default */
	struct thread_switches *w = &t->sw;
	*w = (struct thread_switches){ 0 };
	for (int i = 0; i < 3; i++) {
		int64_t ret = c[5 + i].ret;
		/* only what the thread chose: a system-wide mode is the machine's */
		if (ret > 0 && (ret & PR_SPEC_PRCTL) &&
		    (ret & (PR_SPEC_DISABLE | PR_SPEC_FORCE_DISABLE | PR_SPEC_DISABLE_NOEXEC)))
			w->spec[i] = (int32_t)ret;
	}
	w->tsc_sigsegv = c[8].ret == 0 && q->tsc == PR_TSC_SIGSEGV;
	if (c[9].ret == PR_MCE_KILL_LATE || c[9].ret == PR_MCE_KILL_EARLY)
		w->mce = c[9].ret == PR_MCE_KILL_LATE ? 1 : 2;
	return 0;
}

/* The process-wide calls: every signal's action, the interval timers, brk,
 * dumpable, the posix timers' times, and the settings of struct
 * proc_attrs asked from inside. */
static size_t process_plan(struct proc_image *img, struct inj_call *c)
{
	size_t n = 0;
	for (int sig = 1; sig <= ENGINE_NSIG; sig++)
		if (sig != SIGKILL && sig != SIGSTOP)
			call(c, &n, SYS_rt_sigaction, (uint64_t)sig, 0, 0, 3, &img->sigact[sig], sizeof(struct ksigaction))
				->a[3] = 8;
	for (int w = 0; w < 3; w++)
		call(c, &n, SYS_getitimer, (uint64_t)w, 0, 0, 2, &img->itimer[w], sizeof(struct itimerval));
	call(c, &n, SYS_brk, 0, 0, 0, 0, NULL, 0);
	call(c, &n, SYS_prctl, PR_GET_DUMPABLE, 0, 0, 0, NULL, 0);
	for (size_t i = 0; i < img->nptimers; i++)
		call(c, &n, SYS_timer_gettime, (uint64_t)img->ptimers[i].id, 0, 0, 2, &img->ptimers[i].spec,
		     sizeof(img->ptimers[i].spec));
	call(c, &n, SYS_prctl, PR_GET_CHILD_SUBREAPER, 0, 0, 2, &img->attrs.child_subreaper,
	     sizeof(img->attrs.child_subreaper));
	call(c, &n, SYS_prctl, PR_GET_THP_DISABLE, 0, 0, 0, NULL, 0);
	call(c, &n, SYS_membarrier, MEMBARRIER_CMD_GET_REGISTRATIONS, 0, 0, 0, NULL, 0);
	call(c, &n, SYS_prctl, PR_GET_MDWE, 0, 0, 0, NULL, 0);
	return n;
}

static int process_take(struct proc_image *img, const struct inj_call *c)
{
	size_t k = 0;
	img->has_sigact = true;
	for (int sig = 1; sig <= ENGINE_NSIG; sig++) {
		if (sig == SIGKILL || sig == SIGSTOP)
			continue;
		if (c[k].ret < 0)
			return err_set((int)c[k].ret, "pid %d: rt_sigaction(%d) failed", img->pid, sig);
		k++;
	}
	for (int w = 0; w < 3; w++, k++)
		if (c[k].ret < 0)
			return err_set((int)c[k].ret, "pid %d: getitimer failed", img->pid);
	img->mm.brk = c[k++].ret;
	img->dumpable = (int)c[k++].ret;
	for (size_t i = 0; i < img->nptimers; i++, k++)
		if (c[k].ret < 0)
			return err_set((int)c[k].ret, "pid %d: timer_gettime(%d) failed", img->pid, img->ptimers[i].id);
	struct proc_attrs *a = &img->attrs;
	if (c[k].ret < 0)
		return err_set((int)c[k].ret, "pid %d: PR_GET_CHILD_SUBREAPER failed", img->pid);
	k++;
	if (c[k].ret < 0)
		return err_set((int)c[k].ret, "pid %d: PR_GET_THP_DISABLE failed", img->pid);
	a->thp_disable = (int32_t)c[k++].ret;
	/* before Linux 6.3 the kernel does not tell: not recorded
	 * (docs/COVERAGE.md) */
	a->membarrier = c[k].ret < 0 ? -1 : c[k].ret;
	k++;
	/* EINVAL before Linux 6.3, where no process can have it */
	a->mdwe = c[k].ret < 0 ? -1 : (int32_t)c[k].ret;
	return 0;
}

/* The settings of struct proc_attrs that /proc shows (the others are
 * asked from inside: process_plan()). */
static int attrs_from_proc(struct proc_image *img)
{
	struct proc_attrs *a = &img->attrs;
	_cleanup_free_ char *oom = NULL;

	if (read_proc(img->pid, "oom_score_adj", &oom, NULL) < 0 || sscanf(oom, "%d", &a->oom_score_adj) != 1)
		return err_set(-EIO, "pid %d: oom_score_adj unreadable", img->pid);
	/* a kernel without audit has no loginuid: not recorded */
	_cleanup_free_ char *login = NULL;
	unsigned long lu;
	if (read_proc(img->pid, "loginuid", &login, NULL) >= 0 && sscanf(login, "%lu", &lu) == 1 && lu <= UINT32_MAX)
		a->loginuid = (int64_t)lu;
	/* KSM for the whole process: /proc tells (Linux 6.4+) */
	_cleanup_free_ char *ksm = NULL;
	const char *m;
	if (read_proc(img->pid, "ksm_stat", &ksm, NULL) >= 0 && (m = strstr(ksm, "ksm_merge_any: ")))
		a->memory_merge = !strncmp(m + 15, "yes", 3);
	return 0;
}

/* Whether the calls may run in batches in this process: its system calls
 * made from a page of ours must behave as those made from the vDSO, and a
 * SIGTRAP must end a batch and nothing else. Not where a seccomp filter
 * may judge a call by where it is made (or trap it: the kernel's forced
 * SIGSYS would reset a blocked handler), where syscall user dispatch is
 * on (Wine: a call outside the allowed range is a SIGSYS), nor where a
 * SIGTRAP is pending (a batch lets SIGTRAP through). */
static bool batch_ok(const struct proc_image *img)
{
	for (size_t i = 0; i < img->npending; i++)
		if (img->pending[i].info.si_signo == SIGTRAP)
			return false;
	for (size_t i = 0; i < img->nthreads; i++) {
		const struct thread_image *t = &img->threads[i];
		if (t->seccomp >= 0)
			return false;
		for (size_t j = 0; j < t->npending; j++)
			if (t->pending[j].info.si_signo == SIGTRAP)
				return false;
		struct {
			uint64_t mode, selector, offset, len;
		} sud;
		if (ptrace(PTRACE_GET_SYSCALL_USER_DISPATCH_CONFIG, t->tid, (void *)sizeof(sud), &sud) < 0 ||
		    sud.mode != 0)
			return false;
	}
	return true;
}

int process_capture_injected(struct proc_image *img, uint64_t vdso_start)
{
	uint64_t off, size, scratch = 0, code = 0, runner = 0;
	int64_t ret;
	int r;
	size_t touched = 0;
	const uint64_t all = ~0ull;
	struct thread_image *t = &img->threads[0];
	_cleanup_free_ struct inj_call *c = NULL;

	proc_attrs_init(&img->attrs);
	r = vdso_syscall_offset(&off, &size);
	if (r < 0)
		return r;
	uint64_t ip = vdso_start + off;
	if ((r = attrs_from_proc(img)) < 0)
		return r;
	/* posix timers: their kind from /proc, their times from inside */
	{
		_cleanup_free_ char *timers = NULL;
		if (read_proc(img->pid, "timers", &timers, NULL) >= 0 &&
		    (r = ptimers_parse(img->pid, timers, img->ptimers, &img->nptimers)) < 0)
			return r;
	}
	c = calloc(ENGINE_NSIG + 16 + img->nptimers, sizeof(*c));
	if (!c)
		return -ENOMEM;

	/* All signals blocked while we step the threads: no handler of
	 * theirs may run in the middle of our calls. */
	for (size_t i = 0; i < img->nthreads; i++) {
		if (ptrace(PTRACE_SETSIGMASK, img->threads[i].tid, (void *)8, &all) < 0) {
			r = err_set(negerrno(), "thread %d: PTRACE_SETSIGMASK: %m", img->threads[i].tid);
			goto out;
		}
		touched = i + 1;
	}
	keeper_fault_kill_dumper(FAULT_ENGINE_DIE_SIGMASK);

	pid_t lt = t->tid;
	if ((r = inject_syscall(lt, ip, &t->regs, SYS_mmap, 0, SCRATCH_LEN, PROT_READ | PROT_WRITE,
				MAP_PRIVATE | MAP_ANONYMOUS, (uint64_t)-1, 0, &ret)) < 0)
		goto out;
	if (ret < 0 && ret > -4096) {
		r = err_set((int)ret, "pid %d: injected mmap failed", img->pid);
		goto out;
	}
	scratch = ret;
	/* the batch runner, where it may run: a page it cannot write (a
	 * process that refuses memory both writable and executable, MDWE,
	 * maps it all the same); otherwise the calls go one at a time */
	if (batch_ok(img)) {
		if ((r = inject_syscall(lt, ip, &t->regs, SYS_mmap, 0, 4096, PROT_READ | PROT_EXEC,
					MAP_PRIVATE | MAP_ANONYMOUS, (uint64_t)-1, 0, &ret)) < 0)
			goto out;
		if (ret > 0 || ret < -4095)
			code = ret;
		if (code && inject_code_put(img->pid, code) >= 0)
			runner = code;
		if (code && !runner) {
			log_debug("%s: its calls one at a time", err_msg());
			err_clear();
		}
	}
	struct inj_site site = { .ip = ip, .scratch = scratch, .scratch_len = SCRATCH_LEN, .code = runner };
	size_t n = process_plan(img, c);
	if ((r = inject_batch(lt, &site, &t->regs, c, n)) < 0 || (r = process_take(img, c)) < 0)
		goto out;
	for (size_t i = 0; i < img->nthreads; i++) {
		t = &img->threads[i];
		struct thread_asked q = { 0 };
		n = thread_plan(t, &q, c);
		if ((r = inject_batch(t->tid, &site, &t->regs, c, n)) < 0 || (r = thread_take(t, &q, c)) < 0 ||
		    (r = sched_capture(t->tid, &t->sched)) < 0)
			goto out;
	}
	r = 0;
out:
	log_debug("pid %d: %zu threads asked %s", img->pid, img->nthreads, runner ? "in batches" : "one call at a time");
	t = &img->threads[0];
	for (int k = 0; k < 2; k++) {
		uint64_t at = k ? code : scratch;
		int64_t ign;
		if (!at)
			continue;
		int q = inject_syscall(t->tid, ip, &t->regs, SYS_munmap, at, k ? 4096 : SCRATCH_LEN, 0, 0, 0, 0, &ign);
		if (q < 0 && r == 0)
			r = q;
	}
	/* Every thread back as it was, whatever happened above. */
	for (size_t i = 0; i < touched; i++) {
		struct thread_image *x = &img->threads[i];
		int q = thread_park(x->tid);
		if (q >= 0)
			q = regs_set(x->tid, &x->regs);
		if (q >= 0 && ptrace(PTRACE_SETSIGMASK, x->tid, (void *)8, &x->sigmask) < 0)
			q = err_set(negerrno(), "thread %d: PTRACE_SETSIGMASK: %m", x->tid);
		if (q < 0 && r == 0)
			r = q;
	}
	return r;
}

static void fmt_rlim(struct tbuf *b, rlim_t v)
{
	if (v == RLIM_INFINITY)
		tb_printf(b, " unlimited");
	else
		tb_printf(b, " %llu", (unsigned long long)v);
}

static void attrs_format(struct tbuf *b, const struct proc_image *img)
{
	const struct proc_attrs *a = &img->attrs;
	if (a->oom_score_adj != INT32_MIN)
		tb_printf(b, "oom_score_adj %d\n", a->oom_score_adj);
	if (a->child_subreaper >= 0)
		tb_printf(b, "child_subreaper %d\n", a->child_subreaper ? 1 : 0);
	if (a->thp_disable >= 0)
		tb_printf(b, "thp_disable 0x%x\n", (unsigned)a->thp_disable);
	if (a->membarrier >= 0)
		tb_printf(b, "membarrier 0x%" PRIx64 "\n", (uint64_t)a->membarrier);
	if (a->loginuid >= 0)
		tb_printf(b, "loginuid %" PRId64 "\n", a->loginuid);
	if (a->mdwe > 0)
		tb_printf(b, "mdwe 0x%x\n", (unsigned)a->mdwe);
	if (a->memory_merge > 0)
		tb_printf(b, "memory_merge 1\n");
	for (size_t i = 0; i < img->nthreads; i++) {
		const struct thread_image *t = &img->threads[i];
		if (t->timerslack > 0 || t->pdeathsig)
			tb_printf(b, "thread_attrs %d %" PRId64 " %d\n", t->tid, t->timerslack, t->pdeathsig);
		sched_format(b, t);
	}
}

/* One of attrs_format()'s lines; false: a bad value. */
static bool attrs_parse(struct proc_image *img, const char *key, const char *val, bool *known)
{
	struct proc_attrs *a = &img->attrs;
	char extra;
	*known = true;
	if (!strcmp(key, "oom_score_adj"))
		return sscanf(val, "%d %c", &a->oom_score_adj, &extra) == 1 && a->oom_score_adj >= -1000 &&
		       a->oom_score_adj <= 1000;
	if (!strcmp(key, "child_subreaper"))
		return sscanf(val, "%d %c", &a->child_subreaper, &extra) == 1 && a->child_subreaper >= 0 &&
		       a->child_subreaper <= 1;
	if (!strcmp(key, "thp_disable"))
		return sscanf(val, "%x %c", (unsigned *)&a->thp_disable, &extra) == 1 && a->thp_disable >= 0 &&
		       a->thp_disable <= 3;
	if (!strcmp(key, "membarrier")) {
		uint64_t m;
		bool ok = sscanf(val, "%" SCNx64 " %c", &m, &extra) == 1 && m < (1u << 16);
		a->membarrier = (int64_t)m;
		return ok;
	}
	if (!strcmp(key, "mdwe"))
		return sscanf(val, "%x %c", (unsigned *)&a->mdwe, &extra) == 1 && a->mdwe >= 0 && a->mdwe <= 3;
	if (!strcmp(key, "loginuid"))
		return sscanf(val, "%" SCNd64 " %c", &a->loginuid, &extra) == 1 && a->loginuid >= 0 &&
		       a->loginuid <= UINT32_MAX;
	if (!strcmp(key, "memory_merge"))
		return sscanf(val, "%d %c", &a->memory_merge, &extra) == 1 && a->memory_merge == 1;
	bool sk;
	int sr = sched_parse(img, key, val, &sk);
	if (sk)
		return sr >= 0;
	if (!strcmp(key, "thread_attrs")) {
		int tid, sig;
		int64_t slack;
		if (sscanf(val, "%d %" SCNd64 " %d %c", &tid, &slack, &sig, &extra) != 3 || slack < 0 || sig < 0 ||
		    sig > ENGINE_NSIG)
			return false;
		for (size_t i = 0; i < img->nthreads; i++) {
			if (img->threads[i].tid == tid) {
				img->threads[i].timerslack = slack;
				img->threads[i].pdeathsig = sig;
				return true;
			}
		}
		return false; /* a thread the 'threads' line above does not name */
	}
	*known = false;
	return true;
}

char *process_format(const struct proc_image *img)
{
	struct tbuf b = { 0 };
	tb_printf(&b, "pid %d\n", img->pid);
	tb_printf(&b, "comm %s\n", img->comm);
	tb_printf(&b, "exe %s\n", img->exe);
	tb_printf(&b, "cwd %s\n", img->cwd);
	if (img->cwd_deleted)
		tb_printf(&b, "cwd_deleted 0%o %u %u\n", img->cwd_mode, img->cwd_uid, img->cwd_gid);
	tb_printf(&b, "cmdline %s\n", img->cmdline);
	tb_printf(&b, "creds %s\n", img->creds);
	tb_printf(&b, "umask %04o\n", img->umask);
	tb_printf(&b, "personality 0x%" PRIx64 "\n", img->personality);
	if (img->vdso[0])
		tb_printf(&b, "vdso sha256:%s\n", img->vdso);
	if (img->stopped)
		tb_printf(&b, "stopped 1\n");
	if (img->dumpable >= 0)
		tb_printf(&b, "dumpable %d\n", img->dumpable);
	if (img->nfilters)
		tb_printf(&b, "seccomp_filters %zu\n", img->nfilters);
	tb_printf(&b, "threads");
	for (size_t i = 0; i < img->nthreads; i++)
		tb_printf(&b, " %d", img->threads[i].tid);
	tb_printf(&b, "\n");
	attrs_format(&b, img);
	const struct mm_fields *m = &img->mm;
	tb_printf(&b,
		  "mm 0x%" PRIx64 " 0x%" PRIx64 " 0x%" PRIx64 " 0x%" PRIx64 " 0x%" PRIx64
		  " 0x%" PRIx64 " 0x%" PRIx64 " 0x%" PRIx64 " 0x%" PRIx64 " 0x%" PRIx64
		  " 0x%" PRIx64 "\n",
		  m->start_code, m->end_code, m->start_data, m->end_data, m->start_brk, m->brk,
		  m->start_stack, m->arg_start, m->arg_end, m->env_start, m->env_end);
	for (int i = 0; i < RLIM_NLIMITS; i++) {
		tb_printf(&b, "rlimit %d", i);
		fmt_rlim(&b, img->rlim[i].rlim_cur);
		fmt_rlim(&b, img->rlim[i].rlim_max);
		tb_printf(&b, "\n");
	}
	for (int s = 1; img->has_sigact && s <= ENGINE_NSIG; s++) {
		const struct ksigaction *a = &img->sigact[s];
		if (s == SIGKILL || s == SIGSTOP)
			continue;
		tb_printf(&b, "sigaction %d 0x%" PRIx64 " 0x%" PRIx64 " 0x%" PRIx64 " 0x%" PRIx64 "\n",
			  s, a->handler, a->flags, a->restorer, a->mask);
	}
	for (int w = 0; w < 3; w++) {
		const struct itimerval *v = &img->itimer[w];
		tb_printf(&b, "itimer %d %ld %ld %ld %ld\n", w, (long)v->it_interval.tv_sec,
			  (long)v->it_interval.tv_usec, (long)v->it_value.tv_sec,
			  (long)v->it_value.tv_usec);
	}
	for (size_t i = 0; i < img->nptimers; i++) {
		const struct ptimer *t = &img->ptimers[i];
		char how[32];
		if (t->notify == SIGEV_THREAD_ID)
			snprintf(how, sizeof(how), "thread:%d", t->tid);
		else
			snprintf(how, sizeof(how), "%s", t->notify == SIGEV_NONE ? "none" : "signal");
		tb_printf(&b, "ptimer %d %d %s %d 0x%" PRIx64 " %ld %ld %ld %ld\n", t->id, t->clock, how, t->signo,
			  t->value, (long)t->spec.it_interval.tv_sec, t->spec.it_interval.tv_nsec,
			  (long)t->spec.it_value.tv_sec, t->spec.it_value.tv_nsec);
	}
	tb_printf(&b, "auxv ");
	tb_hex(&b, img->auxv, img->auxv_len);
	tb_printf(&b, "\n");
	char *p = engine_pending_format(img->pending, img->npending);
	if (p)
		tb_printf(&b, "%s", p);
	else
		b.oom = true;
	free(p);
	return tb_take(&b);
}

static int parse_rlim(const char *s, rlim_t *v)
{
	if (!strcmp(s, "unlimited")) {
		*v = RLIM_INFINITY;
		return 0;
	}
	uint64_t x;
	int r = parse_u64(s, &x);
	*v = x;
	return r;
}

int process_parse(const char *text, struct proc_image *img)
{
	_cleanup_free_ char *copy = strdup(text);
	bool seen_pid = false, seen_threads = false, seen_mm = false;
	if (!copy)
		return -ENOMEM;
	img->dumpable = -1;
	proc_attrs_init(&img->attrs);
	for (char *l = copy, *nl; l && *l; l = nl) {
		nl = strchr(l, '\n');
		if (nl)
			*nl++ = 0;
		char *sp = strchr(l, ' ');
		const char *val = sp ? sp + 1 : "";
		if (sp)
			*sp = 0;
		const char *key = l;
		bool ok = true, known;
		ok = attrs_parse(img, key, val, &known);
		if (known) {
			/* done */
		} else if (!strcmp(key, "pid")) {
			ok = sscanf(val, "%d", &img->pid) == 1 && img->pid > 0;
			seen_pid = true;
		} else if (!strcmp(key, "comm")) {
			snprintf(img->comm, sizeof(img->comm), "%s", val);
		} else if (!strcmp(key, "exe")) {
			free(img->exe);
			img->exe = strdup(val);
			ok = img->exe && val[0] == '/';
		} else if (!strcmp(key, "cwd")) {
			free(img->cwd);
			img->cwd = strdup(val);
			ok = img->cwd && val[0] == '/';
		} else if (!strcmp(key, "cwd_deleted")) {
			ok = sscanf(val, "%o %u %u", &img->cwd_mode, &img->cwd_uid, &img->cwd_gid) == 3 &&
			     img->cwd_mode <= 07777 && img->cwd_uid != (uid_t)-1 && img->cwd_gid != (gid_t)-1;
			img->cwd_deleted = true;
		} else if (!strcmp(key, "umask")) {
			ok = sscanf(val, "%o", &img->umask) == 1 && img->umask <= 0777;
		} else if (!strcmp(key, "vdso")) {
			ok = !strncmp(val, "sha256:", 7) && strlen(val + 7) == 64;
			if (ok)
				snprintf(img->vdso, sizeof(img->vdso), "%s", val + 7);
		} else if (!strcmp(key, "dumpable")) {
			ok = sscanf(val, "%d", &img->dumpable) == 1 && img->dumpable >= 0 && img->dumpable <= 2;
		} else if (!strcmp(key, "seccomp_filters")) {
			uint64_t n;
			/* a thread has at most MAX_INSNS_PER_PATH / 4 filters */
			ok = parse_u64(val, &n) == 0 && n <= 65536;
			img->nfilters = n;
		} else if (!strcmp(key, "stopped")) {
			img->stopped = !strcmp(val, "1");
		} else if (!strcmp(key, "personality")) {
			ok = sscanf(val, "%" SCNx64, &img->personality) == 1;
		} else if (!strcmp(key, "threads")) {
			seen_threads = true;
			_cleanup_free_ char *v = strdup(val);
			if (!v)
				return -ENOMEM;
			char *save = NULL;
			for (char *tok = strtok_r(v, " ", &save); tok; tok = strtok_r(NULL, " ", &save)) {
				uint64_t tid;
				if (parse_u64(tok, &tid) < 0 || !tid || tid > INT32_MAX) {
					ok = false;
					break;
				}
				struct thread_image *nt = realloc(img->threads, (img->nthreads + 1) * sizeof(*nt));
				if (!nt)
					return -ENOMEM;
				img->threads = nt;
				memset(&nt[img->nthreads], 0, sizeof(*nt));
				nt[img->nthreads++].tid = (pid_t)tid;
			}
		} else if (!strcmp(key, "mm")) {
			struct mm_fields *m = &img->mm;
			seen_mm = true;
			ok = sscanf(val,
				    "%" SCNx64 " %" SCNx64 " %" SCNx64 " %" SCNx64 " %" SCNx64
				    " %" SCNx64 " %" SCNx64 " %" SCNx64 " %" SCNx64 " %" SCNx64
				    " %" SCNx64,
				    &m->start_code, &m->end_code, &m->start_data, &m->end_data,
				    &m->start_brk, &m->brk, &m->start_stack, &m->arg_start, &m->arg_end,
				    &m->env_start, &m->env_end) == 11;
		} else if (!strcmp(key, "rlimit")) {
			int i;
			char a[32], c[32];
			ok = sscanf(val, "%d %31s %31s", &i, a, c) == 3 && i >= 0 && i < RLIM_NLIMITS &&
			     parse_rlim(a, &img->rlim[i].rlim_cur) == 0 &&
			     parse_rlim(c, &img->rlim[i].rlim_max) == 0;
		} else if (!strcmp(key, "sigaction")) {
			int s;
			struct ksigaction a;
			ok = sscanf(val, "%d %" SCNx64 " %" SCNx64 " %" SCNx64 " %" SCNx64, &s,
				    &a.handler, &a.flags, &a.restorer, &a.mask) == 5 &&
			     s >= 1 && s <= ENGINE_NSIG;
			if (ok) {
				img->sigact[s] = a;
				img->has_sigact = true;
			}
		} else if (!strcmp(key, "itimer")) {
			int w;
			long a, b2, c, d;
			ok = sscanf(val, "%d %ld %ld %ld %ld", &w, &a, &b2, &c, &d) == 5 && w >= 0 && w < 3;
			if (ok) {
				img->itimer[w].it_interval.tv_sec = a;
				img->itimer[w].it_interval.tv_usec = b2;
				img->itimer[w].it_value.tv_sec = c;
				img->itimer[w].it_value.tv_usec = d;
			}
		} else if (!strcmp(key, "ptimer")) {
			struct ptimer t = { 0 };
			char how[32];
			long is, ins, vs, vns;
			int tid;
			ok = img->nptimers < ENGINE_MAX_PTIMERS &&
			     sscanf(val, "%d %d %31s %d %" SCNx64 " %ld %ld %ld %ld", &t.id, &t.clock, how, &t.signo,
				    &t.value, &is, &ins, &vs, &vns) == 9 &&
			     t.id >= 0 && ptimer_clock_ok(t.clock) && t.signo >= 0 && t.signo <= ENGINE_NSIG &&
			     is >= 0 && vs >= 0 && ins >= 0 && ins < 1000000000 && vns >= 0 && vns < 1000000000;
			t.notify = !strcmp(how, "none") ? SIGEV_NONE : !strcmp(how, "signal") ? SIGEV_SIGNAL : -1;
			if (sscanf(how, "thread:%d", &tid) == 1 && tid > 0) {
				t.notify = SIGEV_THREAD_ID;
				t.tid = tid;
			}
			ok = ok && t.notify >= 0 && (t.notify == SIGEV_NONE || t.signo >= 1);
			if (ok) {
				t.spec.it_interval.tv_sec = is;
				t.spec.it_interval.tv_nsec = ins;
				t.spec.it_value.tv_sec = vs;
				t.spec.it_value.tv_nsec = vns;
				for (size_t i = 0; i < img->nptimers; i++)
					ok = ok && img->ptimers[i].id != t.id;
			}
			if (ok)
				img->ptimers[img->nptimers++] = t;
		} else if (!strcmp(key, "auxv")) {
			free(img->auxv);
			img->auxv = malloc(strlen(val) / 2 + 1);
			if (!img->auxv)
				return -ENOMEM;
			ok = unhex(val, img->auxv, strlen(val) / 2 + 1, &img->auxv_len) == 0;
		} else if (!strcmp(key, "sigpending_shared")) {
			ok = engine_pending_parse(&img->pending, &img->npending, true, val) == 0;
		}
		if (!ok)
			return err_set(-EBADMSG, "process: bad value for '%s'", key);
	}
	if (!seen_pid || !seen_threads || !seen_mm || !img->exe || !img->cwd || !img->nthreads)
		return err_set(-EBADMSG, "process: 'pid', 'threads', 'mm', 'exe' or 'cwd' missing");
	if (img->threads[0].tid != img->pid)
		return err_set(-EBADMSG, "process: the first thread must be the leader %d", img->pid);
	for (size_t i = 0; i < img->nptimers; i++) {
		const struct ptimer *t = &img->ptimers[i];
		bool known = t->notify != SIGEV_THREAD_ID;
		for (size_t k = 0; k < img->nthreads && !known; k++)
			known = img->threads[k].tid == t->tid;
		if (!known)
			return err_set(-EBADMSG, "process: posix timer %d notifies thread %d, which is not in the snapshot",
				       t->id, t->tid);
	}
	return 0;
}

void proc_image_free(struct proc_image *img)
{
	for (size_t i = 0; i < img->nthreads; i++)
		thread_image_free(&img->threads[i]);
	free(img->threads);
	vmas_free(img->vmas, img->nvmas);
	free(img->exe);
	free(img->cwd);
	free(img->cmdline);
	free(img->creds);
	free(img->auxv);
	free(img->pending);
	seccomp_filters_free(img->filters, img->nfilters);
	memset(img, 0, sizeof(*img));
}
