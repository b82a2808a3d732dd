/*
 * engine/ internals shared by the dump and restore code: the in-memory
 * image of one process (threads, memory areas, process-wide state), the
 * ptrace helpers (seize, syscall injection, parking a thread where the
 * kernel's syscall-restart logic still applies) and the text codecs of
 * the snapshot files `process`, `maps` and `regs/<tid>` (docs/FORMAT.md).
 *
 * Nothing outside engine/ includes this header.
 */
#ifndef CKPTFS_ENGINE_INT_H
#define CKPTFS_ENGINE_INT_H

#include <inttypes.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/types.h>
#include <sys/user.h>
#include <time.h>

#include "common/common.h"
#include "engine/engine.h"
#include "store/store.h"

#define ENGINE_NSIG 64
/* Largest xstate buffer we accept (AVX-512 + AMX needs ~11 KiB). */
#define ENGINE_XSTATE_MAX (16u * 1024)

/* Kernel-internal restart codes a stopped thread's rax may hold. */
#define ENGINE_ERESTARTSYS 512
#define ENGINE_ERESTARTNOINTR 513
#define ENGINE_ERESTARTNOHAND 514
#define ENGINE_ERESTART_RESTARTBLOCK 516

/* The kernel's struct sigaction for rt_sigaction(2). */
struct ksigaction {
	uint64_t handler;
	uint64_t flags;
	uint64_t restorer;
	uint64_t mask;
};

struct sig_pending {
	int shared; /* 1: process-wide queue, 0: the thread's own */
	siginfo_t info;
};

/* A thread's credentials (sandbox/creds.c): /proc/PID/task/TID/status, and
 * PR_GET_SECUREBITS from inside. */
struct thread_creds {
	bool valid;       /* recorded; a snapshot without them restores with the caller's */
	uint32_t uid[4];  /* real, effective, saved, filesystem */
	uint32_t gid[4];
	uint32_t *groups; /* supplementary, as the kernel keeps them (sorted) */
	size_t ngroups;
	uint64_t cap_inh, cap_prm, cap_eff, cap_bnd, cap_amb;
	uint32_t securebits;
	bool no_new_privs;
	int seccomp_mode; /* dump only: /proc's Seccomp (0 none, 1 strict, 2 filter) */
	unsigned nfilters; /* dump only: /proc's Seccomp_filters */
};

/* Per-process settings only the process itself reads (prctl, membarrier)
 * or /proc shows; -1 where not recorded (an older snapshot, a kernel that
 * does not tell): restore leaves those as a new process has them. */
struct proc_attrs {
	int32_t oom_score_adj;   /* /proc/PID/oom_score_adj; INT32_MIN: not recorded */
	int32_t child_subreaper; /* PR_GET_CHILD_SUBREAPER */
	int32_t thp_disable;     /* PR_GET_THP_DISABLE: 0, or 1 | PR_THP_DISABLE_EXCEPT_ADVISED */
	int64_t membarrier;      /* MEMBARRIER_CMD_GET_REGISTRATIONS: the REGISTER_* commands done */
	int64_t loginuid;        /* /proc/PID/loginuid (4294967295: unset) */
	int32_t mdwe;            /* PR_GET_MDWE (memory-deny-write-execute), Linux 6.3+ */
	int32_t memory_merge;    /* /proc/PID/ksm_stat ksm_merge_any (PR_SET_MEMORY_MERGE) */
};

static inline void proc_attrs_init(struct proc_attrs *a)
{
	*a = (struct proc_attrs){ INT32_MIN, -1, -1, -1, -1, -1, -1 };
}

/* A thread's scheduling (sched.c): sched_getattr and sched_getaffinity
 * from outside; valid false in a snapshot that predates them. */
struct thread_sched {
	bool valid;
	uint32_t policy; /* SCHED_OTHER, _BATCH, _IDLE, _FIFO, _RR */
	bool reset_on_fork;
	int32_t nice;
	uint32_t rtprio;
	uint32_t util_min, util_max;
	cpu_set_t cpus;
};

/* A thread's prctl switches asked from inside (sched.c); 0: the default. */
struct thread_switches {
	int32_t spec[3]; /* PR_GET_SPECULATION_CTRL of store bypass, indirect branch, L1D flush: kept where PR_SPEC_PRCTL and a mitigation */
	bool tsc_sigsegv; /* PR_GET_TSC: RDTSC faults */
	int32_t mce;      /* PR_MCE_KILL_GET: 1 late, 2 early */
};

struct thread_image {
	pid_t tid;
	struct user_regs_struct regs;
	uint8_t *xstate; /* XSAVE layout as PTRACE_GETREGSET NT_X86_XSTATE gives it */
	size_t xstate_len;
	uint64_t sigmask;
	uint64_t robust_head, robust_len;
	bool has_rseq;
	uint64_t rseq_addr;
	uint32_t rseq_len, rseq_sig;
	uint64_t tid_address;
	uint64_t altstack_sp, altstack_size;
	int altstack_flags;
	char comm[17];
	struct sig_pending *pending; /* the thread's own queue */
	size_t npending;
	struct thread_creds creds;
	int32_t seccomp; /* its newest seccomp filter, an index in proc_image.filters; -1: none */
	int64_t timerslack; /* PR_GET_TIMERSLACK; 0: not recorded */
	int32_t pdeathsig;  /* PR_GET_PDEATHSIG; 0: none */
	struct thread_sched sched;
	struct thread_switches sw;
};

/* One seccomp filter (sandbox/seccomp.c). Threads that share a chain (TSYNC,
 * fork, clone) share its filters: each names the one installed before
 * it, so that the filters of a process are a tree, stored once. */
struct seccomp_filter {
	int32_t parent;  /* the filter installed before it, or -1 */
	uint32_t flags;  /* SECCOMP_FILTER_FLAG_LOG */
	uint32_t len;    /* instructions */
	void *insns;     /* struct sock_filter[len] */
};

enum vma_kind {
	VMA_ANON,         /* private anonymous, [heap], [stack]: populated pages saved */
	VMA_FILE_PRIVATE, /* private file mapping: only pages that are anonymous copies saved */
	VMA_FILE_SHARED,  /* shared file mapping: file + offset only */
	VMA_SHMEM,        /* shared anonymous, memfd, SysV: content saved */
	VMA_DELETED,      /* private mapping of a deleted file: every page saved, restored anonymous */
	VMA_VVAR,         /* [vvar] */
	VMA_VVAR_VCLOCK,  /* [vvar_vclock] */
	VMA_VDSO,         /* [vdso] */
	VMA_VSYSCALL,     /* [vsyscall]: fixed, nothing to do */
	VMA_AIO,          /* an AIO context's ring (io_setup): made again; saved only with events waiting (aio.c) */
	_VMA_KIND_MAX,
};

/* Shared memory objects a tree's snapshot may hold. */
#define ENGINE_MAX_SHM 4096u

/* A run of saved bytes inside an area, offsets relative to its start. */
struct mem_run {
	uint64_t off, len;
};

struct vma {
	uint64_t start, end, pgoff;
	unsigned prot; /* PROT_* */
	bool shared;
	bool growsdown;
	bool noreserve; /* VM_NORESERVE (smaps "nr"): mapped again with MAP_NORESERVE */
	/* VMA_FILE_SHARED: VM_MAYWRITE (smaps "mw"), its file open for
	 * writing, so that mprotect() may add PROT_WRITE: reopened O_RDWR */
	bool maywrite;
	uint32_t advice; /* VMA_ADV_* (smaps VmFlags): madvise and mlock, set again (advice.c) */
	unsigned dev_major, dev_minor;
	uint64_t ino;
	char *path; /* as /proc/PID/maps shows it; "" for anonymous */
	enum vma_kind kind;
	/* backing file identity for VMA_FILE_*: refused at restore if changed */
	uint64_t fsize;
	int64_t mtime_sec;
	long mtime_nsec;
	/* VMA_SHMEM, format 2: the shared memory object it maps, one for
	 * every area of the tree that maps it (restored as one memfd) */
	bool has_shm;
	uint32_t shm_id;
	uint64_t shm_size; /* the object's size */
	/* VMA_ANON only: made by a CUDA checkpoint step (device memory in
	 * host memory); its bytes are gpu/hbm/<start>-<end>, not memory/
	 * (maps: at=gpu/hbm) */
	bool hbm;
	struct mem_run *runs; /* what was saved */
	size_t nruns;
	uint64_t saved; /* sum of runs' lengths */
	uint8_t *data;  /* dump only: the runs' bytes, back to back */
	/* dump only, pre-copied (precopy.c): the area's bytes at their
	 * offsets, and a byte per page, set where they are valid; owned by
	 * the pre-copy, not by the area */
	uint8_t *mirror, *valid;
	/* with a mirror whose blocks line up with the area's memory file: an
	 * entry per STORE_BLOCK_SIZE block of it, what the last snapshot
	 * wrote there, and a byte per block set where the mirror changed
	 * since (precopy.c); both owned by the pre-copy, NULL otherwise */
	struct store_block *blocks;
	uint8_t *stale;
	/* dump only, pre-copied: every populated page is valid in the mirror
	 * or written since (precopy.c), so the freeze asks the kernel for the
	 * written ones only */
	bool complete;
	uint32_t aio_nr; /* VMA_AIO: the ring's number of events (its header's nr) */
	bool uffd_wp; /* dump only: registered for write protection (smaps "uw") */
	bool sealed;  /* dump only: mseal()ed (smaps "sl"): refused */
};

struct mm_fields {
	uint64_t start_code, end_code, start_data, end_data;
	uint64_t start_brk, brk, start_stack;
	uint64_t arg_start, arg_end, env_start, env_end;
};

/* A POSIX timer (timer_create) of the process: /proc/PID/timers for the
 * kind, timer_gettime() in the process for the times. */
#define ENGINE_MAX_PTIMERS 32
struct ptimer {
	int32_t id;
	int32_t clock;
	int32_t notify; /* SIGEV_SIGNAL, SIGEV_NONE, or SIGEV_THREAD_ID to thread tid */
	int32_t tid;
	int32_t signo;
	uint64_t value; /* sigev_value */
	struct itimerspec spec; /* interval, time left (0: disarmed) */
};

struct proc_image {
	pid_t pid;
	char comm[17];
	char *exe;
	char *cwd;     /* as /proc/PID/cwd reads, " (deleted)" included */
	/* the cwd was removed: made again empty and removed (fds_deleted_dir_open) */
	bool cwd_deleted;
	unsigned cwd_mode;
	uid_t cwd_uid;
	gid_t cwd_gid;
	char *cmdline; /* informational: arguments joined by spaces */
	char *creds;   /* informational: Uid/Gid lines of /proc/PID/status */
	char vdso[2 * 32 + 1]; /* SHA-256 hex of the vDSO it ran with; "" if unknown */
	unsigned umask;
	bool stopped; /* in a group stop (SIGSTOP) when dumped: restored stopped */
	uint64_t personality;
	struct rlimit rlim[RLIM_NLIMITS];
	bool has_sigact;
	struct ksigaction sigact[ENGINE_NSIG + 1]; /* index = signal number */
	struct itimerval itimer[3];
	struct ptimer ptimers[ENGINE_MAX_PTIMERS];
	size_t nptimers;
	struct mm_fields mm;
	uint8_t *auxv;
	size_t auxv_len;
	struct sig_pending *pending; /* shared queue */
	size_t npending;
	int dumpable;  /* PR_GET_DUMPABLE; -1: not recorded */
	struct proc_attrs attrs;
	struct seccomp_filter *filters;
	size_t nfilters;

	struct thread_image *threads; /* threads[0] is the leader (tid == pid) */
	size_t nthreads;
	struct vma *vmas; /* in address order */
	size_t nvmas;
};

void proc_image_free(struct proc_image *img);

const char *vma_kind_name(enum vma_kind k);

/* ---- ptrace (ptrace.c) --------------------------------------------------- */

/* Seized threads of one process. */
struct seized {
	pid_t pid;
	pid_t *tids;
	size_t ntids;
	int *stash_sig; /* a signal taken from a thread while stopped, given back at detach */
};

/* Seizes and stops every thread of pid (PTRACE_SEIZE + PTRACE_INTERRUPT),
 * looping until /proc/PID/task shows no thread it has not stopped. On
 * failure every thread is detached again. */
int seize_all(pid_t pid, unsigned options, struct seized *ret);
/* In options: FAULT_ENGINE_SEIZE does not fire (the pre-copy's short
 * seize, so that the fault keeps reaching the freeze's). */
#define SEIZE_NO_FAULT (1u << 31)
/* Detaches every thread; sig is given to the leader (0 or SIGSTOP). */
void seize_release(struct seized *s, int sig);
void seized_free(struct seized *s);

/* Waits for tid's next stop. Returns the raw wait status. */
int ptrace_wait(pid_t tid, int *status);

/* Runs one system call in stopped thread tid: sets rip to a `syscall`
 * instruction at ip and the arguments from base's other registers, steps
 * to the syscall exit and returns its result in *ret. The thread is left
 * in syscall-exit-stop with modified registers; thread_park() + SETREGS
 * bring it back. Other ptrace events (clone) on the way are passed. */
int inject_syscall(pid_t tid, uint64_t ip, const struct user_regs_struct *base, long nr,
		   uint64_t a1, uint64_t a2, uint64_t a3, uint64_t a4, uint64_t a5, uint64_t a6,
		   int64_t *ret);

/* A system call asked of a stopped thread in a batch (inject_batch()). */
struct inj_call {
	long nr;
	uint64_t a[6];
	int out_arg;      /* 1-6: that argument is the address where the call
			   * writes out_len bytes (in the scratch area); 0: none */
	uint32_t out_len;
	void *out;        /* ours: those bytes, copied back */
	int64_t ret;
};

/* Where batches run in a stopped process: a `syscall` instruction (ip, the
 * vDSO's), a scratch area mapped read-write, and the batch runner (code:
 * a page mapped read and execute, written by inject_code_put()), or 0:
 * then every call is injected alone. */
struct inj_site {
	uint64_t ip, scratch, code;
	size_t scratch_len;
};

/* Writes the batch runner into pid's memory at `at` (/proc/PID/mem, which
 * writes through a mapping's lack of write permission). */
int inject_code_put(pid_t pid, uint64_t at);
/* Runs c[0..n) in stopped thread tid (registers from base), in as few
 * runs of the batch runner as the scratch area allows (each: one resume,
 * one stop), or one injection each without it; each call's result in
 * c[i].ret, its bytes in c[i].out (where ret >= 0, without the runner).
 * The thread is left stopped with modified registers and every signal
 * blocked; thread_park() + SETREGS bring it back. */
int inject_batch(pid_t tid, const struct inj_site *s, const struct user_regs_struct *base, struct inj_call *c,
		 size_t n);

/* Brings a thread stopped anywhere into a PTRACE_EVENT_STOP inside the
 * kernel's signal path (PTRACE_INTERRUPT + PTRACE_CONT), where registers set
 * now see the same syscall-restart handling as a thread that was stopped
 * there in the first place. */
int thread_park(pid_t tid);

/* Offset of a `syscall` instruction in this kernel's vDSO image, and the
 * vDSO's size (the same for every process on one kernel). */
int vdso_syscall_offset(uint64_t *off, uint64_t *size);
/* SHA-256 (hex) of this kernel's vDSO image, or NULL. */
const char *vdso_hash(void);

int regs_get(pid_t tid, struct user_regs_struct *r);
int regs_set(pid_t tid, const struct user_regs_struct *r);

/* ---- IDs a restore needs (tree/pidwait.c) -------------------------------- */

/* What pids_wait_free() waits for, as its waiting callback hears it. */
struct pid_wait {
	pid_t id;             /* the ID still held */
	pid_t parent;         /* the parent of the process holding it, who must reap it */
	char parent_comm[17]; /* its comm, "?" if gone */
	bool zombie;          /* a zombie (else a task still on its way out) */
	unsigned waited_ms, timeout_ms;
};

/* Waits until no task holds any of ids[n] (a restore's pid and thread
 * ids), polling /proc. An ID held by a live process or thread fails at
 * once; one held by a zombie its parent has not reaped yet, or by a task
 * that is dying, is waited for up to timeout_ms (0: not at all). waiting,
 * if not NULL, is called when the wait starts, when it moves to another ID
 * or parent, and every 100 ms meanwhile. Returns 0 once all are free,
 * -EEXIST with a detail naming the ID and its holder (its comm; for a
 * zombie, the parent that has not reaped it) otherwise. An ID can be taken
 * again after it was seen free: clone3(set_tid) still has the last word. */
int pids_wait_free(const pid_t *ids, size_t n, unsigned timeout_ms,
		   void (*waiting)(const struct pid_wait *w, void *ud), void *ud);

/* ---- the keeper (keeper.c) ----------------------------------------------- */

/* The process that traces the target during a dump, so that the dumper's
 * death at any moment leaves the target running as it was. */
struct keeper {
	pid_t pid;    /* the keeper process; 0 when none */
	int fd;       /* the dumper's end of its socket */
	pid_t target;
	bool gpu;     /* it guards the target's GPU (keeper_gpu_hold) */
	/* Started ahead (engine_keeper_ahead): it serves one dump after
	 * another, told each target on its control socket ctl, and says
	 * KEEPER_DONE there when done with one. */
	bool again;
	int ctl;
};

/* What the keeper does once the dumper is done with the frozen target. */
enum keeper_word {
	KEEPER_GO = 'G',   /* seize and capture (the first word) */
	KEEPER_THAW = 'T', /* detach: the target runs on; also on end of file */
	KEEPER_STOP = 'S', /* detach, SIGSTOP queued */
	KEEPER_KILL = 'K', /* SIGKILL, every traced thread waited out */
	KEEPER_GPU_HOLD = 'g', /* we lock the target's GPU: give it back should we die */
	KEEPER_GPU_DONE = 'f', /* we gave it back: the keeper may end */
	KEEPER_UFFD = 'u', /* before GO: a userfaultfd made in the target, handed to us */
	KEEPER_TCP = 'c',  /* after GO: its TCP connections we hold in repair mode (keeper_tcp_hold) */
	KEEPER_TARGET = 'p', /* to a keeper started ahead, on its control socket: a target (struct wire_target) */
	KEEPER_DONE = 'd',   /* from it, on the same: done with that dump, ready for the next */
	KEEPER_READY = 'r',  /* from it, first on the dump's socket: it took the target */
};

/* Gives pid a keeper (before the target is touched), which waits for the
 * word to seize: the one started ahead (engine_keeper_ahead) when there
 * is one and it lives, else one forked now. */
int keeper_start(pid_t pid, struct keeper *k);
/* Tells it to seize and stop every thread of pid and capture the
 * tracer's part of the view, and waits until every thread is stopped (or
 * the keeper's failure, with its detail; the target then runs untraced
 * already). */
int keeper_wait_seized(struct keeper *k);
/* Receives the tracer's part of the view into img: threads (registers,
 * xstate, masks, pending signals, altstack, ...), the shared pending
 * queue, sigactions, itimers, brk. On failure img holds what came. */
int keeper_recv_view(struct keeper *k, struct proc_image *img);
/* Before KEEPER_GO, the process running: the keeper stops it, makes a
 * userfaultfd inside it by an injected call, takes it out, closes it
 * there and lets the process run again; *ufd is ours. On failure (its
 * detail) the process runs as it was, with no userfaultfd. */
int keeper_make_uffd(struct keeper *k, int *ufd);
/* Sends w and waits for the keeper to have done it and exited. Accepts a
 * keeper that already ended (it let go of the target before that); does
 * nothing when none was started. A keeper that guards the GPU
 * (keeper_gpu_hold) is left running after THAW, once the threads run:
 * keeper_gpu_done() ends it. */
int keeper_finish(struct keeper *k, enum keeper_word w);
/* Once the dumper holds n TCP connections of the target in repair mode
 * and under the network lock (fds_capture): should it die before its
 * last word, the keeper takes each out of repair mode (fds[i], through
 * pidfd_getfd) and lifts their lock (conns) before it lets the threads
 * go. Nothing to send when n is 0. */
struct netlock_conn;
int keeper_tcp_hold(struct keeper *k, const int *fds, const struct netlock_conn *conns, size_t n);
/* Before the dumper locks the target's GPU (the keeper started, not yet
 * seizing): should the dumper die from now until keeper_gpu_done(), the
 * keeper gives the GPU back (gpu_release) once it let the threads go. */
int keeper_gpu_hold(struct keeper *k);
/* The GPU is given back (or that failed and was said): the keeper ends;
 * waits for it. Nothing when it guards nothing. */
int keeper_gpu_done(struct keeper *k);
/* In the keeper only: when fault id fires, kills the dumper and waits for
 * its death, so that a test sees what follows it. */
void keeper_fault_kill_dumper(enum fault_id id);

/* ---- seccomp (sandbox/seccomp.c) ----------------------------------------- */

/* In the tracer: reads every thread's filters (PTRACE_SECCOMP_GET_FILTER,
 * needs CAP_SYS_ADMIN) into img->filters, one entry per filter of the
 * process, and sets each thread's seccomp. */
int seccomp_capture(struct proc_image *img);
/* The files seccomp/<n>, and back (after process and regs/ are read). */
int seccomp_write(struct store_snap *w, const struct proc_image *img);
int seccomp_load(struct store_snap *snap, struct proc_image *img);
void seccomp_filters_free(struct seccomp_filter *f, size_t n);

/* ---- text helpers (regs.c) ----------------------------------------------- */

/* A growing text buffer; on ENOMEM it stops growing and tb_take() fails. */
struct tbuf {
	char *p;
	size_t len, cap;
	bool oom;
};
void tb_printf(struct tbuf *b, const char *fmt, ...) _printf_(2, 3);
void tb_hex(struct tbuf *b, const void *data, size_t len);
/* Returns the text (malloc'd, caller frees) or NULL on ENOMEM. */
char *tb_take(struct tbuf *b);
int unhex(const char *s, uint8_t *out, size_t max, size_t *ret_len);

/* ---- threads (regs.c) ---------------------------------------------------- */

/* Reads what ptrace gives directly for a stopped thread. */
int thread_capture(pid_t tid, struct thread_image *t);
/* Text of regs/<tid>, and back. */
char *thread_format(const struct thread_image *t);
/* Reads the process-wide queue of pending signals through the leader. */
int peek_shared_pending(pid_t pid, struct proc_image *img);
int thread_parse(const char *text, const char *name, struct thread_image *t);
void thread_image_free(struct thread_image *t);
/* "sigpending[_shared] SIG HEX" lines, shared by regs/<tid> and process. */
int engine_pending_parse(struct sig_pending **v, size_t *n, bool shared, const char *rest);
char *engine_pending_format(const struct sig_pending *p, size_t n);

/* ---- process (process.c) ------------------------------------------------- */

/* Refuses, before the process is touched, what a dump cannot bring back:
 * seccomp strict mode (and filters we may not read: -EPERM), posix
 * timers, other pid or mount namespaces. -EOPNOTSUPP with a detail. */
int process_check(pid_t pid);
/* Parses /proc/PID/timers (text) into t[*n] (no times yet). Refuses
 * (-EOPNOTSUPP, with a detail) a timer a restore could not make again:
 * one on a thread's CPU clock or another process's, or more than
 * ENGINE_MAX_PTIMERS. */
int ptimers_parse(pid_t pid, const char *text, struct ptimer *t, size_t *n);
/* Reads /proc/PID/{stat,status,cwd,exe,cmdline,auxv,comm} and rlimits. */
int process_capture_proc(pid_t pid, struct proc_image *img);
/* Injected queries: sigactions, itimers, posix timers' times, brk (process-wide) and
 * sigaltstack, clear-child-tid address (per thread). Every thread is left
 * with its registers and signal mask as found. */
int process_capture_injected(struct proc_image *img, uint64_t vdso_start);
char *process_format(const struct proc_image *img);
int process_parse(const char *text, struct proc_image *img);

/* ---- credentials (sandbox/creds.c) --------------------------------------- */

/* Reads tid's credentials (all but securebits) and seccomp mode from
 * /proc/PID/task/TID/status. */
int creds_read(pid_t pid, pid_t tid, struct thread_creds *c);
void creds_free(struct thread_creds *c);
/* Lines of regs/<tid> (nothing when !c->valid), and one line back: 1 when
 * key was a credential key, 0 when not, -EBADMSG on a bad value. */
void creds_format(struct tbuf *b, const struct thread_creds *c);
int creds_parse_line(const char *key, const char *val, struct thread_creds *c);
/* After parsing: a thread with some credential lines must have all. */
int creds_parse_done(const char *name, const struct thread_creds *c);

/* What the one who restores may grant: its own credentials and powers,
 * or, with opts->set_creds, the user it restores for. */
struct creds_grant {
	bool any;           /* root with CAP_SETUID, CAP_SETGID, CAP_SETPCAP: any ids */
	bool set_creds;
	struct thread_creds own; /* the caller's (set_creds: the user's ids, caps the user may hold) */
	bool sys_admin;     /* the new process holds CAP_SYS_ADMIN when its filters go in */
};
int creds_grant_init(const struct engine_restore_opts *o, struct creds_grant *g);
void creds_grant_free(struct creds_grant *g);
/* Refuses (-EPERM, naming the process, thread and id) an image whose
 * credentials g cannot grant. An image without credentials passes. */
int creds_check(const struct proc_image *img, const struct creds_grant *g);

/* ---- scheduling and per-thread switches (sched.c) ------------------------- */

/* Refuses, naming it, what a restore cannot give back: SCHED_DEADLINE, an
 * I/O flusher, linear address masking. Read from /proc and from outside:
 * the process is not touched. */
int sched_check(pid_t pid);
/* t's policy, nice, priorities, clamps and affinity. */
int sched_capture(pid_t tid, struct thread_sched *s);
/* The process file's thread_sched and thread_prctl lines of t. */
void sched_format(struct tbuf *b, const struct thread_image *t);
/* One such line; *known false for other keys; -EBADMSG for a bad one. */
int sched_parse(struct proc_image *img, const char *key, const char *val, bool *known);
struct ctx;
/* Sets them again from inside thread t of the process being restored. */
int sched_apply(struct ctx *c, pid_t pid, const struct thread_image *t);

/* ---- AIO contexts (aio.c) --------------------------------------------------- */

/* Whether a shared area of /proc/PID/maps is an AIO ring. */
bool aio_is_ring(const struct vma *v);
/* Before the process is touched, from outside: -EOPNOTSUPP naming the
 * first AIO context of pid whose ring a restore cannot give back (a ring
 * layout this version does not know). */
int aio_check(pid_t pid);
/* At capture (pid frozen, mem its /proc/PID/mem): the same refusal; v's
 * aio_nr, and, when completed events wait in the ring, the whole ring to
 * save (a run of v). */
int aio_capture(pid_t pid, int mem, struct vma *v);
/* Appends a run of bytes to save to v (saved grows by len). */
int vma_add_run(struct vma *v, uint64_t off, uint64_t len);
struct ctx;
/* At restore, by injection into pid once every area of the image is
 * mapped: the context made again with a ring of v->aio_nr events, moved
 * to v->start, which is its id again. -errno with a detail. */
int aio_restore(struct ctx *c, pid_t pid, const struct vma *v);

/* ---- injection into a process being restored (restore.c) ----------------- */

/* The process restore.c is driving: every thread seized and stopped, a
 * scratch page of RESTORE_SCRATCH_SIZE bytes mapped in it. */
struct ctx;
#define RESTORE_SCRATCH_SIZE (2 * 4096ul)
/* Runs system call nr in thread tid of the process; a result in
 * [-4095, -1] is a failure: -errno, detail "restore of pid P: what: ...". */
int restore_sys(struct ctx *c, pid_t tid, long nr, uint64_t a1, uint64_t a2, uint64_t a3, uint64_t a4,
		uint64_t a5, uint64_t a6, int64_t *ret, const char *what);
/* Writes len bytes into the process at addr. */
int restore_poke(struct ctx *c, uint64_t addr, const void *buf, size_t len);
/* The scratch page's address in the process. */
uint64_t restore_scratch(const struct ctx *c);
/* The saved bytes of area v (its memory file; holes read as zeros) into
 * out, v->end - v->start bytes. */
int restore_area_bytes(struct ctx *c, const struct vma *v, uint8_t *out);

/* The steps of a restore that give a thread its credentials back, by
 * injection, skipping what is already in place. The first (ids, groups,
 * inheritable and ambient sets, bounding set, securebits, no_new_privs)
 * keeps the restorer's effective capabilities, which the seccomp filters
 * may need; the second sets the image's capability sets. Nothing for a
 * thread without recorded credentials. creds_verify() reads them back
 * and fails (-EPERM, naming the thread and what) where they differ. */
int creds_apply_ids(struct ctx *c, pid_t pid, const struct thread_image *t);
int creds_apply_caps(struct ctx *c, pid_t pid, const struct thread_image *t);
int creds_verify(pid_t pid, const struct thread_image *t);
/* Installs img's filters again in every thread, oldest first; those all
 * threads share with SECCOMP_FILTER_FLAG_TSYNC, so that they stay one
 * chain. Where the restorer may (CAP_SYS_ADMIN), PTRACE_O_SUSPEND_SECCOMP
 * keeps the filters off the calls we inject after them. */
int seccomp_install(struct ctx *c, const struct proc_image *img, unsigned ptrace_opts);

/* ---- lazy restore (lazy.c) ----------------------------------------------- */

/* Writes [off, off + len) of area v's memory file f into the process now
 * (restore.c's fill). */
typedef int (*lazy_fill_fn)(struct ctx *c, struct store_file *f, const struct vma *v, uint64_t off, uint64_t len);
/* A lazy restore of process pid being built (struct engine_lazy,
 * engine.h). */
int lazy_new(pid_t pid, struct engine_lazy **ret);
/* Whether a restore with options o can be lazy: a process restored for
 * a user gets a userfaultfd only where vm.unprivileged_userfaultfd is 1. */
bool lazy_possible(const struct engine_restore_opts *o);
/* Takes area v (just mapped, writable, not yet filled) to load lazily
 * when it is private anonymous memory that saved enough (*taken): lists
 * its data pages and loads now, through fill, those its threads touch
 * first. The memory file stays open in l (snap must outlive l).
 * *taken false: the caller fills it as usual. */
int lazy_area(struct engine_lazy *l, struct store_snap *snap, const struct vma *v, const struct proc_image *img,
	      struct ctx *c, lazy_fill_fn fill, bool *taken);
/* Once no injected call will touch those areas any more: makes a
 * userfaultfd inside the process, takes it here, closes it there,
 * registers the areas and starts the guardian. A process that may not
 * have one (EPERM) gets every page now, through fill. */
int lazy_register(struct engine_lazy *l, struct ctx *c, const struct proc_image *img, lazy_fill_fn fill);
/* l takes view (a view of the snapshot its memory files were opened in)
 * and closes it after them. */
void lazy_take_view(struct engine_lazy *l, struct store_snap *view);
/* Whether l (may be NULL) has pages left to serve. */
bool lazy_pending(const struct engine_lazy *l);
/* Appends l (one process's load) to head's chain and returns the head;
 * closes l instead when it has nothing to load. */
struct engine_lazy *lazy_chain(struct engine_lazy *head, struct engine_lazy *l);

/* ---- memory (memory.c) --------------------------------------------------- */

/* Parses a /proc/PID/maps text into areas (kinds from names and flags). */
int maps_parse_proc(const char *text, struct vma **ret, size_t *ret_n);
int maps_read(pid_t pid, struct vma **ret, size_t *ret_n);
/* The snapshot file holding area v's bytes (relative to its process's
 * directory): "memory/<start>-<end>", or "gpu/hbm/<start>-<end>" for an
 * area the CUDA checkpoint step made. len >= VMA_FILE_NAME_MAX. */
#define VMA_FILE_NAME_MAX 48
void vma_file_name(const struct vma *v, char *buf, size_t len);
/* Address ranges [v[i][0], v[i][1]) of private anonymous memory that a
 * CUDA checkpoint step made (dump.c): device memory now in host memory. */
struct hbm_ranges {
	uint64_t (*v)[2];
	size_t n;
};
/* Memory for the copy in RAM, faulted in before the freeze: on a virtual
 * machine the first touch of a page can cost more than the copy into it
 * (the host backs guest memory lazily), and paid during the copy it is
 * frozen time. Areas' copies are carved from it in turn. */
struct copy_arena {
	uint8_t *base, *pos, *end;
};
/* Reserves and faults in about what the copy of pids will take (their
 * anonymous memory, and each one's share of the shared memory they map,
 * which is copied once; smaps_rollup, which walks every page table
 * entry), or known[i] bytes for pids[i] where that is not UINT64_MAX (a
 * pre-copied process: precopy_frozen_bytes()). Best effort: with no
 * memory to spare it reserves nothing. */
void copy_arena_reserve(const pid_t *pids, size_t npids, const uint64_t *known, struct copy_arena *a);
/* Unmaps what was not handed out; the copies are unmapped with their
 * areas (vmas_free). */
void copy_arena_release(struct copy_arena *a);
/* The shared memory objects (shared anonymous memory, memfds, SysV
 * segments) that the areas of a tree map, in the order first met: each
 * area mapping one gets its id, and saves its bytes only where no earlier
 * area (of any process) saved that range of the object already. */
struct shm_obj {
	unsigned dev_major, dev_minor;
	uint64_t ino, size;
	int64_t sysv; /* a SysV segment: its shmid (the inode of its areas); -1: not one */
	struct mem_run *saved; /* ranges of the object saved by some area */
	size_t nsaved;
};
struct shm_table {
	struct shm_obj *v;
	size_t n;
};
void shm_table_free(struct shm_table *t);

/* Lists the pages to save of every area of stopped pid (vma->runs) and,
 * with copy, copies them into RAM (vma->data), taking the buffers from
 * arena first where there is one. Shared memory areas are entered in shm
 * (tree-wide). hbm (may be NULL): what a CUDA checkpoint step made; a
 * private anonymous area is split at the edges of those ranges, and the
 * pieces inside them are marked vma->hbm. pc (may be NULL): the
 * process's pre-copy; an area it mirrors reads only what the mirror
 * lacks. *bytes: bytes to save. */
struct precopy; /* precopy.c, below */
int memory_capture(pid_t pid, struct proc_image *img, bool copy, struct copy_arena *arena, struct shm_table *shm,
		   const struct hbm_ranges *hbm, struct precopy *pc, uint64_t *bytes);
/* Writes `maps` and each area's file (vma_file_name: memory/ or
 * gpu/hbm/): from vma->data where it was copied, else straight from pid,
 * which must still be stopped. */
int memory_write(struct store_snap *w, const struct proc_image *img, pid_t pid,
		 const struct engine_dump_opts *o);
/* ---- per-area advice and locks (advice.c) -------------------------------- */

enum {
	VMA_ADV_HUGEPAGE = 1 << 0,   /* hg: MADV_HUGEPAGE */
	VMA_ADV_NOHUGEPAGE = 1 << 1, /* nh: MADV_NOHUGEPAGE */
	VMA_ADV_DONTDUMP = 1 << 2,   /* dd: MADV_DONTDUMP */
	VMA_ADV_DONTFORK = 1 << 3,   /* dc: MADV_DONTFORK */
	VMA_ADV_WIPEONFORK = 1 << 4, /* wf: MADV_WIPEONFORK */
	VMA_ADV_MERGEABLE = 1 << 5,  /* mg: MADV_MERGEABLE */
	VMA_ADV_SEQUENTIAL = 1 << 6, /* sr: MADV_SEQUENTIAL */
	VMA_ADV_RANDOM = 1 << 7,     /* rr: MADV_RANDOM */
	VMA_ADV_LOCKED = 1 << 8,     /* lo: mlock */
	VMA_ADV_LOCKONFAULT = 1 << 9, /* lf: mlock2(MLOCK_ONFAULT) */
};

/* The VMA_ADV_* of a smaps "VmFlags:" line. */
uint32_t vma_advice_from_vmflags(const char *line);
/* " advice=a,b" for maps, nothing when none */
void vma_advice_format(struct tbuf *b, const struct vma *v);
int vma_advice_parse(struct vma *v, const char *val);
struct ctx;
/* Sets v's advice and locks in the process being restored, once its
 * bytes are in (lazy: they are still to come through userfaultfd). */
int vma_advice_apply(struct ctx *c, pid_t pid, const struct vma *v, bool lazy);

char *maps_format(const struct proc_image *img);
int maps_parse_image(const char *text, struct vma **ret, size_t *ret_n);
void vmas_free(struct vma *v, size_t n);

/* ---- pre-copy (precopy.c) ----------------------------------------------- */

/* Tracking of what a running process writes, and the copy of its private
 * anonymous memory made meanwhile. */
struct precopy;
/* Gets a userfaultfd of pid through its keeper k (started, not seizing),
 * registers its private anonymous areas of 1 MiB or more for write
 * protection in async mode and protects them. On failure nothing of it
 * is left and err_msg() says why (the caller falls back to the copy
 * while frozen). */
int precopy_start(pid_t pid, struct keeper *k, struct precopy *warm, struct precopy **ret);
/* warm (may be NULL): an earlier pre-copy of pid, untracked already
 * (precopy_untrack_wait()): the copy of each area still at the same
 * range is taken over, faulted in already (the caller frees the rest). */
void precopy_untrack_wait(struct precopy *pc);
/* One round while the process runs: the first copies every populated
 * page, each later one the pages written since the last (protected
 * again). precopy_dirty(): the bytes it copied. */
int precopy_round(struct precopy *pc);
uint64_t precopy_dirty(const struct precopy *pc);
/* Whether a round that copied dirty bytes leaves little enough for the freeze. */
bool precopy_done(uint64_t dirty);
/* Bytes of the tracked areas that were populated at the first round. */
uint64_t precopy_tracked(const struct precopy *pc);
/* Once converged, the process running: reads its smaps, which the
 * freeze then need not read again where no area changed. */
void precopy_read_smaps(struct precopy *pc);
/* Bytes the freeze will copy into the copy arena (copy_arena_reserve()):
 * the anonymous and shared memory of the areas not tracked, from that
 * text; UINT64_MAX without it. */
uint64_t precopy_frozen_bytes(const struct precopy *pc);
/* That text (the caller frees it), or NULL. Accepts NULL. */
char *precopy_take_smaps(struct precopy *pc);
/* Frozen (memory_capture): 1 and v->mirror/valid (and v->complete) set
 * when area v lies in a tracked area and is still registered; 0: copied
 * as usual. */
int precopy_lookup(struct precopy *pc, struct vma *v);
/* Frozen: copies the pages of v's runs that are not valid into its mirror. */
int precopy_fill(struct precopy *pc, const struct vma *v);
/* Starts removing the tracking (a piece at a time, on a thread of its
 * own) and closing the userfaultfd; the mirrors stay until
 * precopy_free(), which waits for it to be done. */
void precopy_untrack(struct precopy *pc);
/* Untracks (or waits for that), unmaps the mirrors, frees. Accepts NULL. */
void precopy_free(struct precopy *pc);
/* Kept from the last checkpoint of pid (engine_dump_opts.track): checks
 * that the tracking still holds (the same process, its private anonymous
 * areas where they were, each still registered); then the next round
 * copies only what was written since. On failure (-ESTALE: the areas
 * changed) err_msg() says why and the caller frees it. */
int precopy_resume(struct precopy *pc, pid_t pid);
/* Bytes read from the process since precopy_start() or the last
 * precopy_resume(): the rounds' and the frozen step's. */
uint64_t precopy_read_bytes(const struct precopy *pc);
/* Bytes of our memory it holds: mirrors, maps of valid pages, block entries. */
uint64_t precopy_held(const struct precopy *pc);
/* engine_track around pc (taken), and pc out of it (t freed); NULL for NULL. */
int track_wrap(struct precopy *pc, struct engine_track **ret);
struct precopy *track_unwrap(struct engine_track *t);

/* ---- SysV IPC objects (ipc.c) -------------------------------------------- */

/* A SysV shared memory segment the tree maps: its identity, kept so that
 * it comes back as the same segment (the bytes are those of the tree's
 * shared memory object obj, saved with the areas). */
struct ipc_shm {
	uint32_t obj;      /* the maps' shm= of its areas */
	int32_t id;        /* shmid */
	int32_t key;
	uint32_t mode;     /* permission bits, and SHM_DEST: removed, alive while attached */
	uint32_t uid, gid; /* owner */
	uint64_t size;     /* bytes asked for at shmget */
};

/* What SysV semaphore sets and message queues have in common. */
struct ipc_obj {
	int32_t id, key;
	uint32_t mode;     /* permission bits */
	uint32_t uid, gid; /* owner */
	bool made;         /* restore: made by this restore (removed should it fail) */
};

/* A semaphore set of the tree: its values (the last operations' pids and
 * the processes' SEM_UNDO adjustments are not kept). */
struct ipc_sem {
	struct ipc_obj o;
	uint16_t *val;
	size_t nsems;
};

struct ipc_message {
	int64_t type;
	uint8_t *data;
	size_t len;
};

/* A message queue of the tree: its byte limit and queued messages, in order. */
struct ipc_msq {
	struct ipc_obj o;
	uint64_t qbytes;
	struct ipc_message *m;
	size_t n;
};

/* The `ipc` file of a tree's snapshot (docs/FORMAT.md). */
struct ipc_image {
	struct ipc_shm *shm;
	size_t nshm;
	struct ipc_sem *sem;
	size_t nsem;
	struct ipc_msq *msq;
	size_t nmsq;
};

void ipc_image_free(struct ipc_image *img);
/* Dump, the tree frozen: the SysV segments among its shared memory
 * objects (/proc/sysvipc/shm; -ESRCH naming the id when one vanished),
 * and the semaphore sets and message queues that belong to it: those
 * whose last operation (a semaphore's sempid, a queue's last send or
 * receive) was made by one of pids[n], the tree's processes. Queued
 * messages are copied without taking them (msgrcv MSG_COPY). */
int ipc_capture(const struct shm_table *t, const pid_t *pids, size_t n, struct ipc_image *img);
/* The `ipc` file, and back (-EBADMSG naming the line). */
char *ipc_format(const struct ipc_image *img);
int ipc_parse(const char *text, struct ipc_image *img);
/* Restore, before any process exists: the segment s, either the one this
 * host still has with the same id, key and size (shared with the host,
 * left as it is), or, when the id is free, one made with that id
 * (shm_next_id), key, size, mode and owner (*made: the caller fills it,
 * and removes it with ipc_shm_remove() should the restore fail). An id
 * or key held by another segment: -EEXIST naming it. */
int ipc_shm_get(const struct ipc_shm *s, const struct engine_restore_opts *o, bool *made);
void ipc_shm_remove(const struct ipc_shm *s);
/* Restore, before any process exists: each semaphore set and message
 * queue of img that this host still has with the same id and key is left
 * as it is (shared with the host, live); one that is gone is made with its
 * id, key, mode and owner and filled (values; messages in order). An id or
 * key held by another object: -EEXIST naming it; what this call made is
 * then removed already. ipc_drop_made() removes what it made, should the
 * restore fail later. */
int ipc_objects_get(struct ipc_image *img, const struct engine_restore_opts *o);
void ipc_drop_made(struct ipc_image *img);

/* ---- process trees (tree/tree.c) ----------------------------------------- */

/* One process of a tree, as the `tree` file lines it: parents before
 * children, the root first. */
struct tree_node {
	pid_t pid, ppid, pgid, sid;
	bool zombie;     /* dead, not yet reaped by its parent */
	int exit_status; /* a zombie's, as waitpid() reports it */
	/* The first process of the tree (in tree order) whose descriptor
	 * table (CLONE_FILES) or filesystem context (CLONE_FS: cwd, root,
	 * umask) this one shares; 0: its own. That process's own is 0, and
	 * this one's parent is it or shares it too: a restore makes the
	 * sharing by forking with the flag. */
	pid_t files, fs;
};

struct tree {
	struct tree_node *v;
	size_t n;
};

/* Appends a zeroed node for pid; NULL on ENOMEM. */
struct tree_node *tree_add(struct tree *t, pid_t pid);
/* Index of pid in t, or -1. */
int tree_find(const struct tree *t, pid_t pid);
void tree_free(struct tree *t);
/* Reads pid's parent, group, session and, for a zombie, its exit status
 * from /proc/PID/stat into *n, wholly (files and fs 0: tree_check_sharing
 * sets them). -ESRCH when it is gone. */
int tree_node_read(pid_t pid, struct tree_node *n);
/* The children of every thread of pid (malloc'd; zombies included). */
int tree_children(pid_t pid, pid_t **ret, size_t *ret_n);
/* The session and group node i has once restored: the root's session and
 * group (wherever they were) are the root's own, made with setsid(). */
pid_t tree_sid(const struct tree *t, size_t i);
pid_t tree_pgid(const struct tree *t, size_t i);
/* Refuses (-EOPNOTSUPP or -EBADMSG, with a detail) a tree a restore could
 * not build: parents after children, a session or group led from outside
 * the tree (other than the root's own), a descriptor table or filesystem
 * context shared (files=, fs=) with a process that is not listed before,
 * has not its own, or is neither the process's parent nor shared by it. */
int tree_check(const struct tree *t);
/* Compares (kcmp) the live processes of t: sets each one's files and fs
 * (the process it shares a descriptor table or filesystem context with,
 * docs/FORMAT.md), and refuses (-EOPNOTSUPP naming both pids and what)
 * what only threads of one process may share here (an address space,
 * signal handlers) and a sharing a restore cannot make by forking (a
 * process sharing with others but not with its parent). skip[i] (may be
 * NULL) leaves t->v[i] out. */
int tree_check_sharing(struct tree *t, const bool *skip);
/* The `tree` file, and back (tree_parse runs tree_check). */
char *tree_format(const struct tree *t);
int tree_parse(const char *text, struct tree *t);

#endif
