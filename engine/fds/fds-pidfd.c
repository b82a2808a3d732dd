/*
 * engine/fds/fds-pidfd.c: pidfds (pidfd_open(2), clone(CLONE_PIDFD)).
 *
 * A pidfd names one process (or, opened with PIDFD_THREAD, which fdinfo
 * shows as O_EXCL in its flags, one thread); fdinfo's "Pid:" says which,
 * -1 once it was reaped. Three cases, each made again so that the
 * process sees what it saw:
 *  - a process of the tree: the restore makes it again with its pid, and
 *    every process of the tree exists when the descriptors are restored
 *    (restore.c): pidfd_open() of that pid;
 *  - a live process outside the tree: its start time (/proc/PID/stat) is
 *    recorded, and at restore the pidfd is opened on that pid only while
 *    the same process (same start time) still lives there; otherwise the
 *    restore is refused, naming it;
 *  - a reaped process: a short-lived child of ours, made without exit
 *    signal (no SIGCHLD reaches the restored process), its pidfd opened,
 *    then reaped: the pidfd reads as dead (poll gives POLLIN,
 *    pidfd_send_signal() ESRCH, waitid() no child), as it did.
 * A pidfd of a thread of the tree other than a main thread is refused:
 * the threads are made after the descriptors. Status flags (O_NONBLOCK,
 * PIDFD_THREAD) are kept.
 */
#include <fcntl.h>
#include <inttypes.h>
#include <linux/sched.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "engine/fds/fds-int.h"

#ifndef PIDFD_THREAD
#define PIDFD_THREAD O_EXCL
#endif

/* The flags pidfd_open() takes and fdinfo shows. */
#define PIDFD_FLAGS (O_NONBLOCK | PIDFD_THREAD)

int fds_pidfd_classify(struct fd_image *img, struct fd_entry *e)
{
	(void)img;
	if (strcmp(e->link, "anon_inode:[pidfd]") != 0)
		return 0;
	e->kind = FD_KIND_PIDFD;
	return 1;
}

/* Fields of /proc/PID/stat: state, parent, start time (clock ticks after
 * boot). -ENOENT when there is no such process (or thread). */
static int proc_stat(pid_t pid, char *state, pid_t *ppid, uint64_t *start)
{
	uint64_t f[PROC_STAT_FIELDS];
	int r = proc_stat_read(pid, 0, f);

	if (r < 0)
		return r == -EBADMSG ? -EIO : r;
	if (r < 22)
		return -EIO;
	if (state)
		*state = (char)f[3];
	if (ppid)
		*ppid = (pid_t)f[4];
	if (start)
		*start = f[22];
	return 0;
}

/* The thread group of thread tid, or -errno. */
static pid_t tgid_of(pid_t tid)
{
	char path[64];
	_cleanup_free_ char *text = NULL;

	snprintf(path, sizeof(path), "/proc/%d/status", tid);
	int r = read_file_full(path, &text, NULL);
	if (r < 0)
		return r == -ENOENT || r == -ESRCH ? -ENOENT : r;
	const char *p = strstr(text, "\nTgid:");
	int tg;
	if (!p || sscanf(p + 6, "%d", &tg) != 1)
		return -EIO;
	return tg;
}

/* What "Pid:" of /proc/self/fdinfo/fd shows: -1 once reaped. */
static int pid_of_pidfd(int fd, const char *fdinfo, pid_t *ret)
{
	_cleanup_free_ char *own = NULL;
	const char *p;
	int v;

	if (!fdinfo) {
		char path[64];
		snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
		int r = read_file_full(path, &own, NULL);
		if (r < 0)
			return r;
		fdinfo = own;
	}
	p = strncmp(fdinfo, "Pid:", 4) == 0 ? fdinfo : strstr(fdinfo, "\nPid:");
	if (!p || sscanf(p + (p[0] == '\n' ? 5 : 4), "%d", &v) != 1)
		return -EIO;
	*ret = v;
	return 0;
}

/* Whether pid is img's process or a descendant of it (a child may be a
 * zombie: still in the tree, made again as one). */
static bool descends(pid_t pid, pid_t root)
{
	for (int hops = 0; hops < 4096 && pid > 1; hops++) {
		if (pid == root)
			return true;
		pid_t pp;
		if (proc_stat(pid, NULL, &pp, NULL) < 0)
			return false;
		pid = pp;
	}
	return false;
}

int fds_pidfd_capture(struct fd_image *img, struct fd_entry *e)
{
	pid_t pid, again;
	int r;

	if (e->flags & ~(unsigned)(O_ACCMODE | PIDFD_FLAGS))
		return err_set(-EOPNOTSUPP, "fd %d: pidfd with flags 0%o: not supported", e->fd, e->flags);
	r = pid_of_pidfd(-1, e->fdinfo, &pid);
	if (r < 0)
		return err_set(-EIO, "fd %d: pidfd: no Pid: in its fdinfo", e->fd);
	if (pid == 0)
		return err_set(-EOPNOTSUPP, "fd %d: pidfd of a process outside our pid namespace: not supported",
			       e->fd);
	if (pid < 0) {
		e->of_pid = -1;
		return 0;
	}
	pid_t tgid = pid;
	r = proc_stat(pid, NULL, NULL, &e->start);
	if (r >= 0 && (e->flags & PIDFD_THREAD))
		tgid = r = tgid_of(pid);
	/* The pid was still that process's after we read its start time: our
	 * duplicate still names it (a reaped one reads -1, and its number
	 * cannot come back while it was ours to read). */
	if (r >= 0 && (pid_of_pidfd(e->dupfd, NULL, &again) < 0 || again != pid))
		r = -ENOENT;
	if (r == -ENOENT) {
		/* reaped while we looked */
		e->of_pid = -1;
		e->start = 0;
		return 0;
	}
	if (r < 0)
		return err_set(r, "fd %d: pidfd of pid %d: cannot read /proc/%d: %s", e->fd, pid, pid, strerror(-r));
	e->of_pid = pid;
	e->of_tgid = tgid;
	if (tgid == img->pid && pid != tgid)
		return err_set(-EOPNOTSUPP,
			       "fd %d: pidfd of thread %d of the process itself (threads are made after the "
			       "descriptors): not supported",
			       e->fd, pid);
	e->in_tree = descends(tgid, img->pid);
	if (e->in_tree && pid != tgid)
		return err_set(-EOPNOTSUPP,
			       "fd %d: pidfd of thread %d of process %d of the tree (threads are made after the "
			       "descriptors): not supported",
			       e->fd, pid, tgid);
	return 0;
}

int fds_pidfd_tree(struct fd_image **imgs, const pid_t *pids, size_t n)
{
	for (size_t i = 0; i < n; i++)
		for (size_t j = 0; j < imgs[i]->n; j++) {
			struct fd_entry *e = &imgs[i]->e[j];
			if (e->kind != FD_KIND_PIDFD || e->of_pid <= 0 || e->in_tree)
				continue;
			for (size_t k = 0; k < n && !e->in_tree; k++) {
				if (pids[k] != e->of_tgid)
					continue;
				if (e->of_pid != e->of_tgid)
					return err_set(-EOPNOTSUPP,
						       "pid %d fd %d: pidfd of thread %d of process %d of the tree (threads "
						       "are made after the descriptors): not supported",
						       pids[i], e->fd, e->of_pid, e->of_tgid);
				e->in_tree = true;
			}
		}
	return 0;
}

void fds_pidfd_print(struct fd_entry *e, struct fds_buf *b)
{
	if (e->of_pid < 0)
		fds_printf(b, " pid=-1");
	else
		fds_printf(b, " pid=%d start=%" PRIu64 " tree=%d", e->of_pid, e->start, e->in_tree);
}

int fds_pidfd_parse(struct fd_entry *e, struct fd_line *l)
{
	const char *v;
	uint64_t u;
	int r;

	if (e->flags & ~(unsigned)(O_ACCMODE | PIDFD_FLAGS))
		return fds_bad(l, "flags=0%o: not a pidfd's (O_NONBLOCK, O_EXCL for PIDFD_THREAD)", e->flags);
	r = fds_kv_req(l, "pid", &v);
	if (r < 0)
		return r;
	if (strcmp(v, "-1") == 0) {
		e->of_pid = -1;
		return 0;
	}
	if (parse_u64(v, &u) < 0 || u == 0 || u > INT32_MAX)
		return fds_bad(l, "pid=%s: not a pid or -1", v);
	e->of_pid = (pid_t)u;
	if ((r = fds_kv_u64(l, "start", &e->start)) < 0 || (r = fds_kv_bool(l, "tree", &e->in_tree)) < 0)
		return r;
	return 0;
}

/* An outside process must be the one dumped: same pid, same start time. */
static int same_process(const struct fd_entry *e)
{
	uint64_t start;
	int r = proc_stat(e->of_pid, NULL, NULL, &start);

	if (r == -ENOENT)
		return err_set(-ESRCH, "fd %d: pidfd of pid %d, outside the process tree: that process is gone",
			       e->fd, e->of_pid);
	if (r < 0)
		return err_set(r, "fd %d: pidfd of pid %d: cannot read /proc/%d/stat", e->fd, e->of_pid, e->of_pid);
	if (start != e->start)
		return err_set(-ESRCH,
			       "fd %d: pidfd of pid %d, outside the process tree: that process is gone (pid %d is "
			       "another process now, started at tick %" PRIu64 ", not %" PRIu64 ")",
			       e->fd, e->of_pid, e->of_pid, start, e->start);
	return 0;
}

int fds_pidfd_check_host(struct fd_image *img, struct fd_entry *e)
{
	(void)img;
	if (e->kind != FD_KIND_PIDFD || e->of_pid <= 0 || e->in_tree)
		return 0;
	return same_process(e);
}

/* A pidfd of a process that was reaped: a child of ours that exits at
 * once, its pidfd taken before we reap it. exit_signal 0: no SIGCHLD for
 * the process being restored (its signals are blocked, one would wait
 * there); its pid number is free again once reaped. */
static int open_dead(struct fd_entry *e, unsigned flags)
{
	struct clone_args ca = { .exit_signal = 0 };
	long c = syscall(SYS_clone3, &ca, sizeof(ca));

	if (c == 0)
		syscall(SYS_exit_group, 0);
	if (c < 0)
		return err_set(negerrno(), "fd %d: pidfd of a reaped process: clone3: %m", e->fd);
	int fd = (int)syscall(SYS_pidfd_open, (pid_t)c, flags);
	int r = fd < 0 ? negerrno() : 0;
	siginfo_t si;
	while (waitid(P_PID, (id_t)c, &si, WEXITED | __WALL) < 0) {
		if (errno == EINTR)
			continue;
		if (!r)
			r = negerrno();
		break;
	}
	if (r < 0) {
		if (fd >= 0)
			close(fd);
		return err_set(r, "fd %d: pidfd of a reaped process: %s", e->fd, strerror(-r));
	}
	return fd;
}

int fds_pidfd_open(struct fd_image *img, struct fd_entry *e)
{
	unsigned flags = e->flags & PIDFD_FLAGS;
	int fd, r;

	(void)img;
	if (fault_hit(FAULT_ENGINE_PIDFD_RESTORE))
		return err_set(-EIO, "fd %d: pidfd of pid %d: injected fault", e->fd, e->of_pid);
	if (e->of_pid < 0)
		return open_dead(e, flags);
	fd = (int)syscall(SYS_pidfd_open, e->of_pid, flags);
	if (fd < 0)
		return err_set(negerrno(), "fd %d: pidfd of pid %d%s: pidfd_open: %m", e->fd, e->of_pid,
			       e->in_tree ? " (of the tree)" : "");
	/* Opened first, checked after: if the process alive now, with that
	 * pid, is the one dumped, it was already when the pidfd was opened
	 * (a pid is not reused while its process lives). */
	if (!e->in_tree && (r = same_process(e)) < 0) {
		close(fd);
		return r;
	}
	return fd;
}
