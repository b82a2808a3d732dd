/*
 * The keeper: a short-lived process, forked by the dumper before it
 * touches the target, that is the target's only tracer. It seizes every
 * thread, captures what only a tracer can (registers, xstate, signal
 * masks, pending signals, robust list, rseq, and the injected queries:
 * sigactions, itimers, posix timers' times, brk, sigaltstack,
 * clear-child-tid address, securebits, dumpable; and each thread's seccomp
 * filters, which only a tracer with CAP_SYS_ADMIN can read), sends
 * that to the dumper over a socket, and holds the threads stopped while
 * the dumper copies memory and descriptors itself (process_vm_readv,
 * /proc/PID/mem and pidfd_getfd need ptrace rights, not the tracer).
 *
 * Why a separate process: when a tracer dies, the kernel detaches its
 * tracees as they are. A dumper killed (kill -9, the OOM killer) while a
 * thread's registers were set for an injected call, or while every signal
 * was blocked, would leave the target to run on from our vDSO syscall
 * with foreign registers, or deaf to signals. The dumper is big (the
 * daemon runs RocksDB, FUSE, GPU threads); the keeper does little and
 * ends only on purpose, and always through the same door: every thread
 * put back as found (process.c undoes its own changes before the view
 * is sent), then detached. It takes one word from the dumper:
 *
 *   KEEPER_THAW  detach: the target runs on (also on any failure);
 *   KEEPER_STOP  detach with SIGSTOP queued (--stop, once durable);
 *   KEEPER_KILL  SIGKILL and wait out every traced thread (--kill, once
 *                durable);
 *
 * It is started before the freeze and seizes on a first word, KEEPER_GO,
 * so that a tree's keepers are all forked and executed while it runs.
 * A long-lived dumper (the daemon) starts one further ahead, before any
 * dump needs it (engine_keeper_ahead), which serves one dump after
 * another: it waits on a control socket for a target and a socket of
 * that dump's own (KEEPER_TARGET), does all of the above on that socket,
 * and once the dumper's last word is done says KEEPER_DONE and waits
 * for the next; any other end (a failure, the dumper's death, a GPU to
 * guard) ends it as before, and the next dump starts another. So a
 * checkpoint of the daemon starts no process at all. Starting one is
 * not free for the other processes of a machine: on a virtual machine
 * whose hypervisor shadows page tables, every fork and exec stalled a
 * 4 GiB process for 24-60 ms (docs/PERFORMANCE.md, "Where the 4 GiB
 * gaps came from").
 * Before that, for pre-copy (precopy.c), KEEPER_UFFD: it seizes the
 * threads briefly, makes a userfaultfd inside the target by an injected
 * call, takes it out (pidfd_getfd), closes it there, puts the leader back
 * as found, lets go, and hands the userfaultfd to the dumper over the
 * socket (SCM_RIGHTS).
 * It takes end of file, or finding itself re-parented (the dumper died
 * while some other process still holds a copy of its socket), as THAW:
 * the target only dies or stays stopped on the dumper's word, which it
 * sends after the commit.
 *
 * A CUDA target's GPU is locked and checkpointed by the dumper before
 * the GO, and given back by it once the threads run again (gpu/ needs the
 * driver's thread inside the target to run). Before the lock the dumper
 * says KEEPER_GPU_HOLD; from then on the keeper, once it let the threads
 * go (THAW, or the dumper's death), ends its side of the socket (the
 * dumper's keeper_finish() returns) and stays until KEEPER_GPU_DONE, the
 * dumper's word that the GPU is given back; should the dumper die first,
 * the keeper gives it back itself (gpu_release()). KILL and STOP end that
 * duty: a killed process lets go of its GPU, a stopped one stays
 * checkpointed on it.
 *
 * Likewise KEEPER_TCP (after GO), once the dumper holds the target's TCP
 * connections in repair mode and under the network lock (fds-tcp.c):
 * should the dumper die before its last word, the keeper takes them out
 * of repair mode and lifts their lock before it lets the threads go, so
 * that the target runs on with working connections.
 *
 * The keeper is our own program executed afresh (/proc/self/exe, sent to
 * keeper_main() by a constructor before main()), not a bare fork of the
 * dumper: after fork() in a multithreaded dumper (the daemon runs RocksDB
 * and FUSE threads) locks that other threads held stay held for ever, and
 * an allocator without fork handlers (AddressSanitizer's in GCC 12) hung
 * the keeper with the target frozen. It is forked and executed before the
 * freeze, so that cost is not frozen time. Small all the same: the
 * engine's ptrace and /proc code, one write() per log line, never the
 * store, and gpu/ only to give a GPU back once the dumper died (a fresh
 * program, where loading the driver is safe); it leaves with _exit().
 */
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "engine/engine-int.h"
#include "engine/netlock-int.h"
#include "gpu/gpu.h"

/* In the keeper only: threads the pre-copy's seize found in a call
 * interrupted with -ERESTART_RESTARTBLOCK (nanosleep, poll, ...). Let go,
 * each went on in restart_syscall(), and the freeze finds that number
 * instead of the call's, which a restore must issue again (restore.c,
 * final_regs): capture() puts it back. */
static struct restarted {
	pid_t tid;
	uint64_t rip, nr;
} *keeper_restarted;
static size_t keeper_nrestarted;

/* Set in the keeper only: the dumper, its parent. */
static pid_t keeper_dumper;
/* In the keeper only: the dumper said KEEPER_GPU_HOLD, and not yet
 * KEEPER_GPU_DONE (nor KILL or STOP). */
static bool keeper_gpu;
/* In the keeper only: the TCP connections the dumper holds in repair
 * mode and under the network lock (KEEPER_TCP), to let go should it die. */
#define KEEPER_TCP_MAX 65536
static int *keeper_tcp_fds;
static struct netlock_conn *keeper_tcp_conns;
static size_t keeper_ntcp;

/* How a keeper finds its socket and its target after execve. */
#define KEEPER_ENV "CKPTFS_KEEPER"
#define KEEPER_FD 3

static int send_all(int fd, const void *buf, size_t len)
{
	const uint8_t *p = buf;
	while (len) {
		/* MSG_NOSIGNAL: a dead peer must not SIGPIPE us */
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return negerrno();
		p += n;
		len -= n;
	}
	return 0;
}

/* Reads exactly len bytes; -EPIPE at end of file. */
static int recv_all(int fd, void *buf, size_t len)
{
	uint8_t *p = buf;
	while (len) {
		ssize_t n = read(fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return negerrno();
		if (n == 0)
			return -EPIPE;
		p += n;
		len -= n;
	}
	return 0;
}

/* Sends len bytes of buf with descriptor fd (SCM_RIGHTS) in one message;
 * the number of bytes sent, or -errno. */
static ssize_t send_with_fd(int sock, const void *buf, size_t len, int fd)
{
	struct iovec io = { (void *)buf, len };
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(int))];
	} u = { 0 };
	struct msghdr m = { .msg_iov = &io, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof(u.buf) };
	struct cmsghdr *c = CMSG_FIRSTHDR(&m);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &fd, sizeof(int));
	ssize_t n;
	while ((n = sendmsg(sock, &m, MSG_NOSIGNAL)) < 0 && errno == EINTR)
		;
	return n < 0 ? negerrno() : n;
}

/* Receives one message of exactly len bytes into buf with one descriptor
 * (*fd, close-on-exec): 0, or -EIO when either is missing. */
static int recv_with_fd(int sock, void *buf, size_t len, int *fd)
{
	struct iovec io = { buf, len };
	union {
		struct cmsghdr h;
		char buf[CMSG_SPACE(sizeof(int))];
	} u = { 0 };
	struct msghdr m = { .msg_iov = &io, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof(u.buf) };
	ssize_t n;
	while ((n = recvmsg(sock, &m, MSG_CMSG_CLOEXEC)) < 0 && errno == EINTR)
		;
	struct cmsghdr *c = n == (ssize_t)len ? CMSG_FIRSTHDR(&m) : NULL;
	if (!c || c->cmsg_type != SCM_RIGHTS || c->cmsg_len != CMSG_LEN(sizeof(int)))
		return -EIO;
	memcpy(fd, CMSG_DATA(c), sizeof(int));
	return 0;
}

/* ---- the wire: status, then (for the view) the image's tracer part ---- */

struct wire_status {
	int32_t r;
	uint32_t msglen; /* err_msg() follows when r < 0 */
};

/* To a keeper started ahead, on its control socket, with the dump's own
 * socket (SCM_RIGHTS). */
struct wire_target {
	char w; /* KEEPER_TARGET */
	char pad[3];
	int32_t pid;
};

struct wire_view {
	uint32_t nthreads;
	uint32_t nshared; /* shared pending signals, after the threads */
	uint32_t has_sigact;
	uint64_t brk;
	struct ksigaction sigact[ENGINE_NSIG + 1];
	struct itimerval itimer[3];
	uint32_t nptimers;
	struct ptimer ptimers[ENGINE_MAX_PTIMERS];
	int32_t dumpable;
	uint32_t nfilters; /* seccomp filters, after the shared pending signals */
	struct proc_attrs attrs;
};

/* Each thread: struct thread_image as is (its pointers mean nothing on
 * the other side), then xstate_len bytes, then npending entries, then
 * creds.ngroups group IDs. Each filter: struct wire_filter, then len
 * instructions. */
struct wire_filter {
	int32_t parent;
	uint32_t flags, len;
};

static void send_status(int fd, int r)
{
	const char *m = r < 0 ? err_msg() : "";
	struct wire_status s = { r < 0 ? r : 0, (uint32_t)strlen(m) };
	if (send_all(fd, &s, sizeof(s)) >= 0 && s.msglen)
		send_all(fd, m, s.msglen);
}

/* -EPIPE: the keeper is gone without a word. */
static int recv_status(struct keeper *k)
{
	struct wire_status s;
	int r = recv_all(k->fd, &s, sizeof(s));
	if (r < 0)
		return err_set(-EIO, "pid %d: the keeper (pid %d) ended unexpectedly", k->target, k->pid);
	if (s.r >= 0)
		return 0;
	char msg[512] = "";
	size_t take = MIN((size_t)s.msglen, sizeof(msg) - 1);
	if (recv_all(k->fd, msg, take) < 0)
		return err_set(s.r, "pid %d: the keeper failed: %s", k->target, strerror(-s.r));
	msg[take] = 0;
	/* skip what did not fit */
	for (size_t left = s.msglen - take; left;) {
		char junk[256];
		size_t n = MIN(left, sizeof(junk));
		if (recv_all(k->fd, junk, n) < 0)
			break;
		left -= n;
	}
	return err_set(s.r, "%s", msg);
}

static int send_view(int fd, const struct proc_image *img)
{
	struct wire_view v = { .nthreads = img->nthreads, .nshared = img->npending,
			       .has_sigact = img->has_sigact, .brk = img->mm.brk };
	int r;
	memcpy(v.sigact, img->sigact, sizeof(v.sigact));
	memcpy(v.itimer, img->itimer, sizeof(v.itimer));
	v.nptimers = (uint32_t)img->nptimers;
	memcpy(v.ptimers, img->ptimers, sizeof(v.ptimers));
	v.dumpable = img->dumpable;
	v.attrs = img->attrs;
	v.nfilters = (uint32_t)img->nfilters;
	send_status(fd, 0);
	if ((r = send_all(fd, &v, sizeof(v))) < 0)
		return r;
	for (size_t i = 0; i < img->nthreads; i++) {
		const struct thread_image *t = &img->threads[i];
		if ((r = send_all(fd, t, sizeof(*t))) < 0 ||
		    (r = send_all(fd, t->xstate, t->xstate_len)) < 0 ||
		    (r = send_all(fd, t->pending, t->npending * sizeof(*t->pending))) < 0 ||
		    (r = send_all(fd, t->creds.groups, t->creds.ngroups * sizeof(*t->creds.groups))) < 0)
			return r;
	}
	r = send_all(fd, img->pending, img->npending * sizeof(*img->pending));
	for (size_t i = 0; r >= 0 && i < img->nfilters; i++) {
		const struct seccomp_filter *f = &img->filters[i];
		struct wire_filter wf = { f->parent, f->flags, f->len };
		r = send_all(fd, &wf, sizeof(wf));
		if (r >= 0)
			r = send_all(fd, f->insns, f->len * 8ul);
	}
	return r;
}

int keeper_recv_view(struct keeper *k, struct proc_image *img)
{
	struct wire_view v;
	int r = recv_status(k);
	if (r < 0)
		return r;
	if (recv_all(k->fd, &v, sizeof(v)) < 0)
		goto died;
	if (!v.nthreads || v.nthreads > 1u << 22 || v.nshared > 1u << 20)
		return err_set(-EBADMSG, "pid %d: the keeper sent %u threads", k->target, v.nthreads);
	img->threads = calloc(v.nthreads, sizeof(*img->threads));
	if (!img->threads)
		return -ENOMEM;
	for (uint32_t i = 0; i < v.nthreads; i++) {
		struct thread_image *t = &img->threads[i];
		if (recv_all(k->fd, t, sizeof(*t)) < 0) {
			memset(t, 0, sizeof(*t));
			goto died;
		}
		img->nthreads = i + 1;
		size_t np = t->npending, ng = t->creds.ngroups;
		t->xstate = NULL;
		t->pending = NULL;
		t->npending = 0;
		t->creds.groups = NULL;
		t->creds.ngroups = 0;
		if (t->xstate_len > ENGINE_XSTATE_MAX || np > 1u << 20 || ng > 65536)
			return err_set(-EBADMSG, "pid %d: the keeper sent a bad thread", k->target);
		t->xstate = malloc(MAX(t->xstate_len, (size_t)1));
		t->pending = np ? calloc(np, sizeof(*t->pending)) : NULL;
		if (!t->xstate || (np && !t->pending))
			return -ENOMEM;
		t->npending = np;
		if (recv_all(k->fd, t->xstate, t->xstate_len) < 0 ||
		    recv_all(k->fd, t->pending, np * sizeof(*t->pending)) < 0)
			goto died;
		if (ng) {
			t->creds.groups = calloc(ng, sizeof(*t->creds.groups));
			if (!t->creds.groups)
				return -ENOMEM;
			t->creds.ngroups = ng;
			if (recv_all(k->fd, t->creds.groups, ng * sizeof(*t->creds.groups)) < 0)
				goto died;
		}
	}
	if (v.nshared) {
		img->pending = calloc(v.nshared, sizeof(*img->pending));
		if (!img->pending)
			return -ENOMEM;
		img->npending = v.nshared;
		if (recv_all(k->fd, img->pending, v.nshared * sizeof(*img->pending)) < 0)
			goto died;
	}
	if (v.nfilters > 65536)
		return err_set(-EBADMSG, "pid %d: the keeper sent %u seccomp filters", k->target, v.nfilters);
	if (v.nfilters) {
		img->filters = calloc(v.nfilters, sizeof(*img->filters));
		if (!img->filters)
			return -ENOMEM;
	}
	for (uint32_t i = 0; i < v.nfilters; i++) {
		struct wire_filter wf;
		if (recv_all(k->fd, &wf, sizeof(wf)) < 0)
			goto died;
		if (!wf.len || wf.len > 4096 || wf.parent >= (int32_t)i)
			return err_set(-EBADMSG, "pid %d: the keeper sent a bad seccomp filter", k->target);
		struct seccomp_filter *f = &img->filters[i];
		f->insns = malloc(wf.len * 8ul);
		if (!f->insns)
			return -ENOMEM;
		img->nfilters = i + 1;
		f->parent = wf.parent;
		f->flags = wf.flags;
		f->len = wf.len;
		if (recv_all(k->fd, f->insns, wf.len * 8ul) < 0)
			goto died;
	}
	img->dumpable = v.dumpable;
	img->attrs = v.attrs;
	img->has_sigact = v.has_sigact;
	memcpy(img->sigact, v.sigact, sizeof(v.sigact));
	memcpy(img->itimer, v.itimer, sizeof(v.itimer));
	if (v.nptimers > ENGINE_MAX_PTIMERS)
		goto died;
	img->nptimers = v.nptimers;
	memcpy(img->ptimers, v.ptimers, sizeof(v.ptimers));
	img->mm.brk = v.brk;
	return 0;
died:
	return err_set(-EIO, "pid %d: the keeper (pid %d) ended unexpectedly", k->target, k->pid);
}

/* ---- in the keeper --------------------------------------------------- */

/* True once the dumper is gone: we were re-parented (to init or a
 * subreaper). A thread of the dumper ending is not its death: our parent
 * is its thread group. */
static bool dumper_gone(void)
{
	return getppid() != keeper_dumper;
}

void keeper_fault_kill_dumper(enum fault_id id)
{
	if (!keeper_dumper || !fault_hit(id))
		return;
	if (!dumper_gone())
		kill(keeper_dumper, SIGKILL);
	/* until it is really dead: the point is what we do after that */
	for (int i = 0; i < 5000 && !dumper_gone(); i++)
		usleep(1000);
}

/* Everything that needs the tracer, into img. Every thread is left as
 * found (registers, signal mask; the scratch page unmapped). */
static int capture(struct seized *s, struct proc_image *img)
{
	int r;

	img->pid = s->pid;
	img->threads = calloc(s->ntids, sizeof(*img->threads));
	if (!img->threads)
		return -ENOMEM;
	img->nthreads = s->ntids;
	for (size_t i = 0; i < s->ntids; i++) {
		r = thread_capture(s->tids[i], &img->threads[i]);
		if (r >= 0)
			r = creds_read(s->pid, s->tids[i], &img->threads[i].creds);
		if (r < 0)
			return r;
		struct user_regs_struct *g = &img->threads[i].regs;
		for (size_t k = 0; k < keeper_nrestarted; k++)
			if (keeper_restarted[k].tid == s->tids[i] && keeper_restarted[k].rip == g->rip &&
			    g->orig_rax == SYS_restart_syscall && (int64_t)g->rax == -ENGINE_ERESTART_RESTARTBLOCK)
				g->orig_rax = keeper_restarted[k].nr;
	}
	r = seccomp_capture(img);
	if (r < 0)
		return r;
	r = peek_shared_pending(s->pid, img);
	if (r < 0)
		return r;

	/* the vDSO of this process: where our syscall instruction is */
	struct vma *v;
	size_t n;
	r = maps_read(s->pid, &v, &n);
	if (r < 0)
		return r;
	uint64_t vdso = 0, vdso_len = 0, off, size;
	for (size_t i = 0; i < n; i++)
		if (v[i].kind == VMA_VDSO) {
			vdso = v[i].start;
			vdso_len = v[i].end - v[i].start;
		}
	vmas_free(v, n);
	r = vdso_syscall_offset(&off, &size);
	if (r < 0)
		return r;
	if (!vdso || vdso_len != size)
		return err_set(-EOPNOTSUPP, "pid %d: no [vdso], or not this kernel's", s->pid);
	return process_capture_injected(img, vdso);
}

/* Kills a seized process and waits out every traced thread, so that no
 * ptrace link survives: a killed tracee cannot be detached (it is no longer
 * in a ptrace stop, PTRACE_DETACH says ESRCH), and until its tracer waits
 * for it the thread stays a traced zombie. Waiting as tracer releases the
 * link; the leader's zombie then goes back to its real parent (never the
 * keeper, a process younger than the target), which reaps it and sees
 * SIGKILL. The leader's exit is reported only after every other thread's,
 * hence the order. */
static void kill_seized(struct seized *s)
{
	kill(s->pid, SIGKILL);
	for (size_t k = 1; k <= s->ntids; k++) {
		pid_t t = s->tids[k % s->ntids]; /* the others, then the leader (tids[0]) */
		for (;;) {
			siginfo_t si = { 0 };
			if (waitid(P_PID, t, &si, WEXITED | __WALL) < 0) {
				if (errno == EINTR)
					continue;
				if (errno != ECHILD)
					log_debug("thread %d: waitid: %m", t);
				break;
			}
			if (si.si_code == CLD_EXITED || si.si_code == CLD_KILLED || si.si_code == CLD_DUMPED)
				break;
			/* a stop reported before the kill took effect: go on */
		}
	}
	s->ntids = 0;
}

/* KEEPER_TCP's payload: a count, the descriptor numbers, the
 * connections. Each list replaces the one before. */
static int recv_tcp(int fd)
{
	uint32_t n;
	int r = recv_all(fd, &n, sizeof(n));

	if (r < 0 || n > KEEPER_TCP_MAX)
		return r < 0 ? r : -EBADMSG;
	free(keeper_tcp_fds);
	free(keeper_tcp_conns);
	keeper_ntcp = 0;
	keeper_tcp_fds = calloc(n + 1, sizeof(*keeper_tcp_fds));
	keeper_tcp_conns = calloc(n + 1, sizeof(*keeper_tcp_conns));
	if (!keeper_tcp_fds || !keeper_tcp_conns)
		return -ENOMEM;
	if ((r = recv_all(fd, keeper_tcp_fds, n * sizeof(*keeper_tcp_fds))) < 0 ||
	    (r = recv_all(fd, keeper_tcp_conns, n * sizeof(*keeper_tcp_conns))) < 0)
		return r;
	keeper_ntcp = n;
	return 0;
}

/* The dumper died holding the target's TCP connections in repair mode:
 * out of it (without a window probe), then unlocked, before the threads
 * run. Best effort, each on its own. */
static void tcp_let_go(pid_t pid)
{
	int pidfd, one = TCP_REPAIR_OFF_NO_WP;

	if (!keeper_ntcp)
		return;
	pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
	for (size_t i = 0; pidfd >= 0 && i < keeper_ntcp; i++) {
		int s = (int)syscall(SYS_pidfd_getfd, pidfd, keeper_tcp_fds[i], 0);
		if (s < 0)
			continue;
		if (setsockopt(s, IPPROTO_TCP, TCP_REPAIR, &one, sizeof(one)) < 0)
			log_debug("pid %d fd %d: cannot leave TCP repair mode: %m", pid, keeper_tcp_fds[i]);
		close(s);
	}
	if (pidfd >= 0)
		close(pidfd);
	if (netlock_del(keeper_tcp_conns, keeper_ntcp) < 0)
		log_err("pid %d: its dumper died; %s", pid, err_msg());
	else
		log_info("pid %d: its dumper died; its %zu TCP connections are let go", pid, keeper_ntcp);
}

/* The dumper's word; 0 (taken as THAW) on end of file or once the
 * dumper is gone. KEEPER_GPU_HOLD and KEEPER_GPU_DONE set and clear our
 * duty here (DONE is returned too: it may come before GO, when taking the
 * GPU failed). */
static char wait_word(int fd)
{
	for (;;) {
		struct pollfd p = { fd, POLLIN, 0 };
		int n = poll(&p, 1, 200);
		if (n < 0 && errno != EINTR)
			return 0;
		if (n > 0) {
			char w;
			ssize_t k = read(fd, &w, 1);
			if (k == 1 && w == KEEPER_GPU_HOLD) {
				keeper_gpu = true;
				continue;
			}
			if (k == 1 && w == KEEPER_TCP) {
				if (recv_tcp(fd) < 0)
					return 0;
				continue;
			}
			if (k == 1 && w == KEEPER_GPU_DONE)
				keeper_gpu = false;
			if (k == 1 && (w == KEEPER_THAW || w == KEEPER_STOP || w == KEEPER_KILL || w == KEEPER_GO ||
				       w == KEEPER_GPU_DONE || w == KEEPER_UFFD))
				return w;
			if (k < 0 && errno == EINTR)
				continue;
			return 0;
		}
		if (dumper_gone())
			return 0;
	}
}

/* The one way out, once the target's threads are let go (or were never
 * seized). While we guard its GPU: end our side of the socket, which
 * tells the dumper that the threads run, and wait for its word that it
 * gave the GPU back; should it die first, give it back ourselves. */
static _noreturn_ void leave(int fd, pid_t pid, int code)
{
	if (keeper_gpu) {
		shutdown(fd, SHUT_WR);
		for (;;) {
			char w = wait_word(fd);
			if (w == KEEPER_GPU_DONE)
				break;
			if (w == 0) {
				int r = gpu_release(pid);
				if (r < 0)
					log_err_errno(r, "pid %d: its dumper died; giving its GPU back failed: %s", pid,
						      err_msg());
				else
					log_info("pid %d: its dumper died; its GPU is given back", pid);
				break;
			}
		}
	}
	_exit(code);
}

/* In the stopped leader: userfaultfd() by an injected call, taken out
 * into *ufd (ours) and closed there, every register and the signal mask
 * put back whatever happens. */
static int inject_uffd(struct seized *s, int *ufd)
{
	pid_t tid = s->tids[0];
	struct user_regs_struct regs;
	uint64_t mask, all = ~0ull, off, size, vdso = 0;
	int64_t fd = -1, ret;
	int r;

	*ufd = -1;
	r = vdso_syscall_offset(&off, &size);
	if (r < 0)
		return r;
	struct vma *v;
	size_t n;
	r = maps_read(s->pid, &v, &n);
	if (r < 0)
		return r;
	for (size_t i = 0; i < n; i++)
		if (v[i].kind == VMA_VDSO && v[i].end - v[i].start == size)
			vdso = v[i].start;
	vmas_free(v, n);
	if (!vdso)
		return err_set(-EOPNOTSUPP, "pid %d: no [vdso], or not this kernel's", s->pid);
	r = regs_get(tid, &regs);
	if (r < 0)
		return r;
	if (ptrace(PTRACE_GETSIGMASK, tid, (void *)8, &mask) < 0)
		return err_set(negerrno(), "thread %d: PTRACE_GETSIGMASK: %m", tid);
	if (ptrace(PTRACE_SETSIGMASK, tid, (void *)8, &all) < 0)
		return err_set(negerrno(), "thread %d: PTRACE_SETSIGMASK: %m", tid);
	uint64_t ip = vdso + off;
	if (fault_hit(FAULT_ENGINE_PRECOPY_UFFD)) {
		r = err_set(-ENOSYS, "pid %d: userfaultfd: injected fault", s->pid);
		goto out;
	}
	/* user-mode faults only: what a process may have without privilege
	 * (vm.unprivileged_userfaultfd 0), and all that async write
	 * protection needs (the kernel resolves those faults itself) */
	r = inject_syscall(tid, ip, &regs, SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | 1 /* UFFD_USER_MODE_ONLY */, 0,
			   0, 0, 0, 0, &fd);
	if (r >= 0 && fd == -EINVAL) /* before Linux 5.11 */
		r = inject_syscall(tid, ip, &regs, SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK, 0, 0, 0, 0, 0, &fd);
	if (r < 0)
		goto out;
	if (fd < 0) {
		r = err_set((int)fd, "pid %d: userfaultfd: %s", s->pid, strerror((int)-fd));
		goto out;
	}
	keeper_fault_kill_dumper(FAULT_ENGINE_DIE_PRECOPY_UFFD);
	{
		_cleanup_close_ int pidfd = (int)syscall(SYS_pidfd_open, s->pid, 0);
		if (fault_hit(FAULT_ENGINE_PRECOPY_TAKE)) {
			errno = EBADF;
			*ufd = -1;
		} else {
			*ufd = pidfd < 0 ? -1 : (int)syscall(SYS_pidfd_getfd, pidfd, (int)fd, 0);
		}
		if (*ufd < 0)
			r = err_set(negerrno(), "pid %d: taking its userfaultfd: %m", s->pid);
	}
	/* closed there whatever happened: only ours stays */
	int q = inject_syscall(tid, ip, &regs, SYS_close, (uint64_t)fd, 0, 0, 0, 0, 0, &ret);
	if (q >= 0 && ret < 0)
		q = err_set((int)ret, "pid %d: closing its userfaultfd: %s", s->pid, strerror((int)-ret));
	if (q < 0 && r >= 0)
		r = q;
out:;
	int p = thread_park(tid);
	if (p >= 0)
		p = regs_set(tid, &regs);
	if (p >= 0 && ptrace(PTRACE_SETSIGMASK, tid, (void *)8, &mask) < 0)
		p = err_set(negerrno(), "thread %d: PTRACE_SETSIGMASK: %m", tid);
	if (p < 0 && r >= 0)
		r = p;
	if (r < 0 && *ufd >= 0) {
		close(*ufd);
		*ufd = -1;
	}
	return r;
}

/* KEEPER_UFFD: seize, make it, let go, then the status and (on success)
 * the userfaultfd over the socket. */
static void make_uffd(pid_t pid, int sock)
{
	struct seized s = { 0 };
	int ufd = -1;
	int r = seize_all(pid, PTRACE_O_TRACESYSGOOD | SEIZE_NO_FAULT, &s);
	if (r >= 0) {
		free(keeper_restarted);
		keeper_nrestarted = 0;
		keeper_restarted = calloc(s.ntids, sizeof(*keeper_restarted));
		for (size_t i = 0; keeper_restarted && i < s.ntids; i++) {
			struct user_regs_struct g;
			if (regs_get(s.tids[i], &g) >= 0 && (int64_t)g.rax == -ENGINE_ERESTART_RESTARTBLOCK &&
			    (int64_t)g.orig_rax >= 0)
				keeper_restarted[keeper_nrestarted++] = (struct restarted){ s.tids[i], g.rip, g.orig_rax };
		}
		r = inject_uffd(&s, &ufd);
		seize_release(&s, 0);
		seized_free(&s);
	}
	send_status(sock, r);
	if (r < 0)
		return;
	char b = 'F';
	(void)send_with_fd(sock, &b, 1, ufd);
	close(ufd);
}

/* One dump's work for target pid, on socket fd. Returns only where the
 * keeper may serve another dump: the dumper's last word was said and
 * done (the target let go, stopped or killed) and no GPU is ours to
 * guard; every other end leaves. */
static void serve(pid_t pid, int fd)
{
	struct seized s = { 0 };
	struct proc_image img = { 0 };
	int r;

	free(keeper_restarted);
	keeper_restarted = NULL;
	keeper_nrestarted = 0;
	free(keeper_tcp_fds);
	free(keeper_tcp_conns);
	keeper_tcp_fds = NULL;
	keeper_tcp_conns = NULL;
	keeper_ntcp = 0;
	/* Started before the freeze (the fork and exec are not frozen time),
	 * we seize on the dumper's word; anything else: nothing to do. A
	 * dumper already dead is seen there, once what it said before its
	 * death is read: KEEPER_GPU_HOLD matters. */
	char w;
	while ((w = wait_word(fd)) == KEEPER_UFFD)
		make_uffd(pid, fd);
	if (w == KEEPER_THAW && !keeper_gpu)
		return;
	if (w != KEEPER_GO)
		leave(fd, pid, 0);

	r = seize_all(pid, PTRACE_O_TRACESYSGOOD, &s);
	send_status(fd, r);
	if (r < 0)
		leave(fd, pid, 1);
	r = capture(&s, &img);
	if (r < 0) {
		/* let go before we say so: the dumper reports at once */
		seize_release(&s, 0);
		send_status(fd, r);
		leave(fd, pid, 1);
	}
	/* a dumper that died meanwhile does not read it: no matter */
	send_view(fd, &img);
	proc_image_free(&img);
	switch (wait_word(fd)) {
	case KEEPER_KILL:
		kill_seized(&s);
		keeper_gpu = false;
		break;
	case KEEPER_STOP:
		seize_release(&s, SIGSTOP);
		keeper_gpu = false;
		break;
	case KEEPER_THAW:
		seize_release(&s, 0);
		break;
	default:
		/* the dumper died: what it held of the target, first */
		tcp_let_go(pid);
		seize_release(&s, 0);
		leave(fd, pid, 0);
	}
	seized_free(&s);
	if (keeper_gpu)
		leave(fd, pid, 0);
}

/* Started ahead: the next target's pid and the socket of its dump, from
 * the dumper on ctl; false at end of file or once the dumper is gone. */
static bool next_target(int ctl, pid_t *pid, int *fd)
{
	for (;;) {
		struct pollfd p = { ctl, POLLIN, 0 };
		int n = poll(&p, 1, 1000);
		if (n < 0 && errno != EINTR)
			return false;
		if (n > 0)
			break;
		if (dumper_gone())
			return false;
	}
	struct wire_target t;
	if (recv_with_fd(ctl, &t, sizeof(t), fd) < 0)
		return false;
	if (t.w != KEEPER_TARGET || t.pid <= 0) {
		close(*fd);
		return false;
	}
	*pid = t.pid;
	return true;
}

static _noreturn_ void keeper_main(pid_t pid, int fd, pid_t dumper)
{
	keeper_dumper = dumper;
	prctl(PR_SET_NAME, "ckptfs-keeper", 0, 0, 0);
	log_setup_env();
	/* A terminal's ^C reaches the whole process group; we end only by
	 * the door below, whatever happens to the dumper. */
	static const int ign[] = { SIGINT, SIGQUIT, SIGTERM, SIGHUP, SIGPIPE, SIGUSR1, SIGUSR2 };
	for (size_t i = 0; i < ARRAY_SIZE(ign); i++)
		signal(ign[i], SIG_IGN);
	/* the dumper's descriptors (store, FUSE, other keepers' sockets) are
	 * not ours to hold: another keeper's dumper would never look dead */
	if (fd > 3)
		syscall(SYS_close_range, 3, fd - 1, 0);
	syscall(SYS_close_range, fd + 1, ~0u, 0);
	/* nor its output: whoever reads it (a pipe from `ckpt dump`) sees its
	 * end when the dumper ends; stderr stays for log lines */
	int null = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (null >= 0) {
		dup2(null, 0);
		dup2(null, 1);
		if (null > 2)
			close(null);
	}
	if (pid) {
		serve(pid, fd);
		leave(fd, pid, 0);
	}
	/* Started ahead of any dump (engine_keeper_ahead): fd is our control
	 * socket; each dump names its target there and hands us a socket of
	 * its own. Done with one, we say so and wait for the next: the dumper
	 * starts no process for any of them. At end of file (the dumper
	 * ended, or let us go) we leave. */
	int sfd;
	while (next_target(fd, &pid, &sfd)) {
		char ready = KEEPER_READY;
		if (send_all(sfd, &ready, 1) < 0) {
			close(sfd);
			continue;
		}
		serve(pid, sfd);
		close(sfd);
		char d = KEEPER_DONE;
		if (send_all(fd, &d, 1) < 0)
			break;
	}
	_exit(0);
}

/* ---- in the dumper --------------------------------------------------- */

/* A keeper starts as a fresh copy of our own program: CKPTFS_KEEPER in
 * its environment sends it here before main() (every program that links
 * the dump code links this file). Fresh, because after a plain fork() of
 * a multithreaded dumper only async-signal-safe calls are safe: an
 * allocator without fork handlers (AddressSanitizer's, in GCC 12) stays
 * locked for ever if another thread held it, and the keeper would then
 * hold the target frozen for ever. */
__attribute__((constructor)) static void keeper_entry(void)
{
	const char *e = getenv(KEEPER_ENV);
	int fd, pid, dumper;
	if (!e)
		return;
	if (sscanf(e, "%d:%d:%d", &fd, &pid, &dumper) != 3)
		_exit(127);
	unsetenv(KEEPER_ENV);
	keeper_main(pid, fd, dumper);
}

/* Forks and executes a keeper for pid; pid 0: a keeper started ahead,
 * told its target later (take_ahead). */
static int spawn(pid_t pid, struct keeper *k)
{
	int sv[2];
	uint64_t off, size;
	char var[96];
	size_t n = 0;

	char who[32] = "a keeper started ahead";
	if (pid)
		snprintf(who, sizeof(who), "pid %d", pid);
	k->pid = 0;
	k->fd = k->ctl = -1;
	k->again = false;
	k->target = pid;
	/* what a keeper that could not exec uses is set up before the fork */
	(void)fault_hit(FAULT_NONE);
	(void)vdso_syscall_offset(&off, &size);
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
		return err_set(negerrno(), "%s: socketpair for the keeper: %m", who);
	pid_t dumper = getpid();
	/* its environment is ours plus KEEPER_ENV, built before the fork:
	 * after it, only async-signal-safe calls until execve */
	while (environ && environ[n])
		n++;
	_cleanup_free_ char **env = calloc(n + 2, sizeof(char *));
	if (!env) {
		close(sv[0]);
		close(sv[1]);
		return -ENOMEM;
	}
	size_t m = 0;
	for (size_t i = 0; i < n; i++)
		if (strncmp(environ[i], KEEPER_ENV "=", sizeof(KEEPER_ENV)))
			env[m++] = environ[i];
	snprintf(var, sizeof(var), KEEPER_ENV "=%d:%d:%d", KEEPER_FD, (int)pid, (int)dumper);
	env[m] = var;
	char *argv[] = { (char *)"ckptfs-keeper", NULL };

	pid_t c = fork();
	if (c < 0) {
		int r = err_set(negerrno(), "%s: cannot fork the keeper: %m", who);
		close(sv[0]);
		close(sv[1]);
		return r;
	}
	if (c == 0) {
		/* dup2 clears close-on-exec on the copy; on the same number it
		 * does nothing, hence fcntl */
		if (sv[1] == KEEPER_FD ? fcntl(KEEPER_FD, F_SETFD, 0) >= 0 : dup2(sv[1], KEEPER_FD) == KEEPER_FD)
			execve("/proc/self/exe", argv, env);
		/* no /proc, or our program is gone: go on in this copy (safe
		 * with glibc's allocator, which forks with its locks held) */
		keeper_main(pid, sv[1], dumper);
	}
	close(sv[1]);
	k->pid = c;
	k->fd = sv[0];
	return 0;
}

/* The keeper started ahead (engine_keeper_ahead), pid 0 when none, and the
 * process that started it: a fork of ours holds a copy of its socket,
 * not the keeper. */
static pthread_mutex_t ahead_lock = PTHREAD_MUTEX_INITIALIZER;
static struct keeper ahead;
static pid_t ahead_owner;

/* How long a keeper started ahead, idle, may take to say it took a
 * target before the dump starts one of its own instead. */
#define KEEPER_READY_MS 5000

/* Lets a keeper started ahead go (end of file on its control socket:
 * it leaves) and reaps it, unless reaped. */
static void drop(struct keeper *k, bool reaped)
{
	if (k->fd >= 0)
		close(k->fd);
	close(k->ctl);
	while (!reaped && waitpid(k->pid, NULL, 0) < 0 && errno == EINTR)
		;
	k->pid = 0;
	k->fd = k->ctl = -1;
	k->again = false;
}

/* Hands pid to the keeper started ahead, if there is one and it lives,
 * with a socket for this dump: true, and *k is it. */
static bool take_ahead(pid_t pid, struct keeper *k)
{
	pthread_mutex_lock(&ahead_lock);
	struct keeper a = ahead;
	bool ours = a.pid && ahead_owner == getpid();
	if (ours)
		ahead.pid = 0;
	pthread_mutex_unlock(&ahead_lock);
	if (!ours)
		return false;
	int sv[2] = { -1, -1 };
	pid_t q = fault_hit(FAULT_KEEPER_AHEAD_GONE) ? (kill(a.pid, SIGKILL), waitpid(a.pid, NULL, 0))
						     : waitpid(a.pid, NULL, WNOHANG);
	if (q == 0 && socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == 0) {
		struct wire_target t = { .w = KEEPER_TARGET, .pid = pid };
		ssize_t n = send_with_fd(a.ctl, &t, sizeof(t), sv[1]);
		close(sv[1]);
		/* Its word that it took it: a keeper killed a moment ago may
		 * still hold its socket while it dies; then this dump's socket
		 * goes with it, and we see end of file. */
		char ready = 0;
		if (n == (ssize_t)sizeof(t)) {
			struct pollfd p = { sv[0], POLLIN, 0 };
			int m;
			while ((m = poll(&p, 1, KEEPER_READY_MS)) < 0 && errno == EINTR)
				;
			if (m != 1 || read(sv[0], &ready, 1) != 1)
				ready = 0;
		}
		if (ready == KEEPER_READY) {
			*k = a;
			k->fd = sv[0];
			k->target = pid;
			return true;
		}
		close(sv[0]);
	}
	log_info("pid %d: the keeper started ahead (pid %d) is gone; starting another", pid, a.pid);
	drop(&a, q == a.pid);
	return false;
}

/* A keeper started ahead, done with a dump: ready again for the next,
 * unless another was started meanwhile. */
static void put_back(struct keeper *k)
{
	close(k->fd);
	k->fd = -1;
	pthread_mutex_lock(&ahead_lock);
	bool keep = !ahead.pid && ahead_owner == getpid();
	if (keep)
		ahead = *k;
	pthread_mutex_unlock(&ahead_lock);
	if (!keep)
		drop(k, false);
	k->pid = 0;
	k->ctl = -1;
	k->again = false;
}

int keeper_start(pid_t pid, struct keeper *k)
{
	k->pid = 0;
	k->fd = k->ctl = -1;
	k->again = false;
	k->target = pid;
	k->gpu = false;
	if (take_ahead(pid, k))
		return 0;
	return spawn(pid, k);
}

pid_t engine_keeper_ahead(void)
{
	pid_t r;

	pthread_mutex_lock(&ahead_lock);
	if (ahead.pid && ahead_owner == getpid()) {
		pid_t q = waitpid(ahead.pid, NULL, WNOHANG);
		if (q == 0) {
			r = ahead.pid;
			goto out;
		}
		drop(&ahead, q == ahead.pid);
	}
	ahead.pid = 0; /* a fork's copy is not ours to close or wait for */
	r = spawn(0, &ahead);
	if (r >= 0) {
		/* its socket is its control socket: each dump gets its own */
		ahead.ctl = ahead.fd;
		ahead.fd = -1;
		ahead.again = true;
		ahead_owner = getpid();
		r = ahead.pid;
	}
out:
	pthread_mutex_unlock(&ahead_lock);
	return r;
}

void engine_keeper_ahead_end(void)
{
	pthread_mutex_lock(&ahead_lock);
	if (ahead.pid && ahead_owner == getpid())
		drop(&ahead, false);
	ahead.pid = 0;
	pthread_mutex_unlock(&ahead_lock);
}

int keeper_wait_seized(struct keeper *k)
{
	char c = KEEPER_GO;
	if (send_all(k->fd, &c, 1) < 0)
		return err_set(-EIO, "pid %d: the keeper (pid %d) ended unexpectedly", k->target, k->pid);
	return recv_status(k);
}

int keeper_make_uffd(struct keeper *k, int *ufd)
{
	char c = KEEPER_UFFD, b;
	*ufd = -1;
	if (send_all(k->fd, &c, 1) < 0)
		return err_set(-EIO, "pid %d: the keeper (pid %d) ended unexpectedly", k->target, k->pid);
	int r = recv_status(k);
	if (r < 0)
		return r;
	if (recv_with_fd(k->fd, &b, 1, ufd) < 0)
		return err_set(-EIO, "pid %d: the keeper (pid %d) sent no userfaultfd", k->target, k->pid);
	return 0;
}

int keeper_tcp_hold(struct keeper *k, const int *fds, const struct netlock_conn *conns, size_t n)
{
	char c = KEEPER_TCP;
	uint32_t u = (uint32_t)n;

	if (!n || !k->pid)
		return 0;
	if (n > KEEPER_TCP_MAX)
		return err_set(-E2BIG, "pid %d: %zu TCP connections, more than %u", k->target, n, KEEPER_TCP_MAX);
	if (send_all(k->fd, &c, 1) < 0 || send_all(k->fd, &u, sizeof(u)) < 0 ||
	    send_all(k->fd, fds, n * sizeof(*fds)) < 0 || send_all(k->fd, conns, n * sizeof(*conns)) < 0)
		return err_set(-EIO, "pid %d: the keeper (pid %d) ended unexpectedly", k->target, k->pid);
	return 0;
}

int keeper_gpu_hold(struct keeper *k)
{
	char c = KEEPER_GPU_HOLD;
	if (send_all(k->fd, &c, 1) < 0)
		return err_set(-EIO, "pid %d: the keeper (pid %d) ended unexpectedly", k->target, k->pid);
	k->gpu = true;
	return 0;
}

int keeper_gpu_done(struct keeper *k)
{
	bool gpu = k->gpu;
	k->gpu = false;
	if (!gpu || !k->pid)
		return 0;
	return keeper_finish(k, KEEPER_GPU_DONE);
}

int keeper_finish(struct keeper *k, enum keeper_word w)
{
	int r = 0, st;
	if (!k->pid)
		return 0;
	char c = (char)w;
	(void)send_all(k->fd, &c, 1);
	if (w == KEEPER_KILL || w == KEEPER_STOP)
		k->gpu = false; /* its duty ends with these */
	/* Drain what it may still be sending (a view we did not read), so
	 * that it never blocks on a full socket; stop at its exit, not only
	 * at end of file: a process forked meanwhile may hold its end. A
	 * keeper that guards the GPU ends its side once the threads run, and
	 * stays: we are done with it until keeper_gpu_done(). One started
	 * ahead says on its control socket when it is done with this dump,
	 * and is kept for the next. */
	struct pollfd p[2] = { { k->fd, POLLIN, 0 }, { k->again ? k->ctl : -1, POLLIN, 0 } };
	for (;;) {
		int n = poll(p, 2, 50);
		if (n > 0 && p[0].revents) {
			char junk[4096];
			ssize_t m = read(k->fd, junk, sizeof(junk));
			if (m > 0 || (m < 0 && errno == EINTR))
				continue;
			if (m == 0 && k->gpu)
				return 0;
			if (!k->again)
				break;
			p[0].fd = -1; /* its end is closed: its word comes on ctl */
			continue;
		}
		if (n > 0 && p[1].revents) {
			char d = 0;
			ssize_t m = read(k->ctl, &d, 1);
			if (m < 0 && errno == EINTR)
				continue;
			if (m == 1 && d == KEEPER_DONE) {
				put_back(k);
				return 0;
			}
			break; /* it ended */
		}
		if (n < 0 && errno != EINTR)
			break;
		pid_t q = waitpid(k->pid, &st, WNOHANG);
		if (q == k->pid || (q < 0 && errno == ECHILD)) {
			if (q < 0)
				st = 0;
			goto reaped;
		}
	}
	while (waitpid(k->pid, &st, 0) < 0) {
		if (errno != EINTR) {
			st = 0; /* SIGCHLD ignored: reaped by the kernel */
			break;
		}
	}
reaped:
	if (!WIFEXITED(st) || (WEXITSTATUS(st) != 0 && w != KEEPER_THAW && w != KEEPER_GPU_DONE))
		r = err_set(-EIO, "pid %d: the keeper (pid %d) did not finish (status 0x%x)", k->target,
			    k->pid, st);
	close(k->fd);
	if (k->again)
		close(k->ctl);
	k->fd = k->ctl = -1;
	k->again = false;
	k->pid = 0;
	return r;
}
