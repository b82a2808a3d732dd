/*
 * engine/fds/fds.c: the descriptor table of a process, captured and restored.
 *
 * Capture never runs code in the process: pidfd_getfd(2) gives us a
 * duplicate of each descriptor, sharing its open file description, from
 * which the kind files read state (fstat, getsockopt, tee, MSG_PEEK), and
 * /proc/PID/fdinfo/N holds the rest. Two descriptors sharing one open file
 * description (dup, fork) are found with kcmp(KCMP_FILE) and restored as
 * one description again, so that they share offset and status flags.
 *
 * Restore runs in the new process before its memory is replaced. Every
 * descriptor number up to fds_max() is closed first; each description is
 * then created, moved above fds_max() and dup3()'d onto its number, so
 * that a freshly created descriptor can never land on (and be clobbered
 * by) a number still to be filled. Epoll instances come last: their watch
 * lists name the restored numbers. At the end every descriptor above
 * fds_max() is closed too (the restorer's inherited ones, our temporary
 * ones): the table is exactly the image's. Should the core need working
 * descriptors in the new process afterwards, it creates them above
 * fds_max() (F_DUPFD_CLOEXEC), so they never fill a gap of the image.
 *
 * O_ASYNC is state of the description too: its owner (F_GETOWN_EX) and
 * signal (F_GETSIG) are read on our duplicate and set again, the owner
 * last, once the process it names exists.
 *
 * In a tree, what processes share (fds-share.c) is opened once by the
 * process that forks the tree, at shared_base + id above every process's
 * fds_max(), and inherited: fds_restore() dup3()s each `shared` line from
 * there first, and its final close drops the inherited copies.
 */
#include <ctype.h>
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/kcmp.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#include "engine/fds/fds-int.h"

static const char *const kind_names[_FD_KIND_MAX] = {
	[FD_KIND_DUP] = "dup",
	[FD_KIND_FILE] = "file",
	[FD_KIND_DIR] = "dir",
	[FD_KIND_DEV] = "dev",
	[FD_KIND_TTY] = "tty",
	[FD_KIND_DELETED] = "deleted",
	[FD_KIND_MEMFD] = "memfd",
	[FD_KIND_PIPE_R] = "pipe-r",
	[FD_KIND_PIPE_W] = "pipe-w",
	[FD_KIND_PIPE_RW] = "pipe-rw",
	[FD_KIND_FIFO] = "fifo",
	[FD_KIND_EVENTFD] = "eventfd",
	[FD_KIND_INOTIFY] = "inotify",
	[FD_KIND_EPOLL] = "epoll",
	[FD_KIND_TIMERFD] = "timerfd",
	[FD_KIND_SIGNALFD] = "signalfd",
	[FD_KIND_TCP_LISTEN] = "tcp-listen",
	[FD_KIND_UNIX_LISTEN] = "unix-listen",
	[FD_KIND_UNIX_PAIR] = "unix-pair",
	[FD_KIND_UNIX_DGRAM] = "unix-dgram",
	[FD_KIND_SHARED] = "shared",
	[FD_KIND_TCP] = "tcp",
	[FD_KIND_UDP] = "udp",
	[FD_KIND_PTMX] = "ptmx",
	[FD_KIND_PTS] = "pts",
	[FD_KIND_PIDFD] = "pidfd",
	[FD_KIND_FANOTIFY] = "fanotify",
	[FD_KIND_NETLINK] = "netlink",
	[FD_KIND_PACKET] = "packet",
};

/* Status flags fcntl(F_SETFL) can change; the rest is fixed at open. */
#define SETFL_MASK (O_APPEND | O_NONBLOCK | O_ASYNC | O_DIRECT | O_NOATIME)

const char *fds_kind_name(enum fd_kind k)
{
	return k < _FD_KIND_MAX ? kind_names[k] : "?";
}

int fds_kind_from_name(const char *s)
{
	for (int k = 0; k < _FD_KIND_MAX; k++)
		if (strcmp(s, kind_names[k]) == 0)
			return k;
	return -EINVAL;
}

struct fd_entry *fds_find(struct fd_image *img, int fd)
{
	for (size_t i = 0; i < img->n; i++)
		if (img->e[i].fd == fd)
			return &img->e[i];
	return NULL;
}

const char *fds_info(const struct fd_entry *e, const char *key)
{
	size_t kl = strlen(key);

	for (const char *p = e->fdinfo; p && *p;) {
		if (strncmp(p, key, kl) == 0 && p[kl] == ':') {
			p += kl + 1;
			while (*p == ' ' || *p == '\t')
				p++;
			return p;
		}
		p = strchr(p, '\n');
		if (p)
			p++;
	}
	return NULL;
}

static int pidfd_open_(pid_t pid)
{
	return (int)syscall(SYS_pidfd_open, pid, 0);
}

static int pidfd_getfd_(int pidfd, int fd)
{
	/* The duplicate is always O_CLOEXEC. */
	return (int)syscall(SYS_pidfd_getfd, pidfd, fd, 0);
}

static int kcmp_file(pid_t pid, int a, int b)
{
	return (int)syscall(SYS_kcmp, pid, pid, KCMP_FILE, a, b);
}

int fds_move_above(int fd, int above)
{
	int r = fcntl(fd, F_DUPFD_CLOEXEC, above + 1);
	int e = r < 0 ? negerrno() : 0;

	close(fd);
	return r < 0 ? e : r;
}

int fds_copy_content(int fd, uint64_t size, void **ret)
{
	_cleanup_free_ char *buf = NULL;

	if (size > (1ull << 30))
		return -EFBIG;
	buf = malloc(size ? size : 1);
	if (!buf)
		return -ENOMEM;
	/* pread: the description's offset is the process's, never ours. */
	ssize_t n = pread_full(fd, buf, size, 0);
	if (n < 0)
		return (int)n;
	if ((uint64_t)n != size)
		return -EIO;
	*ret = TAKE_PTR(buf);
	return 0;
}

int fds_fill_content(int fd, const void *data, uint64_t size)
{
	static const char zero[4096];
	const char *p = data;

	if (ftruncate(fd, (off_t)size) < 0)
		return negerrno();
	/* Zero pages stay holes, as they were in the image. */
	for (uint64_t off = 0; off < size; off += sizeof(zero)) {
		size_t len = MIN(sizeof(zero), size - off);
		if (memcmp(p + off, zero, len) == 0)
			continue;
		int r = pwrite_full(fd, p + off, len, (off_t)off);
		if (r < 0)
			return r;
	}
	return 0;
}

void fds_entry_free(struct fd_entry *e)
{
	fds_tcp_free(e); /* out of repair mode before our duplicate goes */
	if (e->dupfd >= 0)
		close(e->dupfd);
	if (e->tmp_other >= 0)
		close(e->tmp_other);
	if (e->tmp_peer >= 0)
		close(e->tmp_peer);
	fds_pty_free(e->ptyst);
	free(e->path);
	free(e->dir);
	free(e->msgs);
	free(e->tty_log);
	free(e->name);
	free(e->data);
	free(e->runs);
	free(e->watches);
	for (size_t i = 0; i < e->n_iwatches; i++)
		free(e->iwatches[i].path);
	free(e->iwatches);
	for (size_t i = 0; i < e->n_fmarks; i++)
		free(e->fmarks[i].path);
	free(e->fmarks);
	fds_net_free(e->net);
	free(e->ofd);
	free(e->posix);
	free(e->link);
	free(e->fdinfo);
	free(e->st);
}

void fds_free(struct fd_image *img)
{
	if (!img)
		return;
	for (size_t i = 0; i < img->n; i++)
		fds_entry_free(&img->e[i]);
	free(img->e);
	if (img->pidfd >= 0)
		close(img->pidfd);
	free(img);
}

int fds_max(struct fd_image *img)
{
	return img && img->n ? img->e[img->n - 1].fd : -1;
}

int fds_count(struct fd_image *img)
{
	return img ? (int)img->n : 0;
}

struct fd_image *fds_image_new(void)
{
	struct fd_image *img = calloc(1, sizeof(*img));

	if (img) {
		img->pidfd = -1;
		img->shm_base = -1;
	}
	return img;
}

struct fd_entry *fds_image_add(struct fd_image *img)
{
	struct fd_entry *n = realloc(img->e, (img->n + 1) * sizeof(*n));

	if (!n)
		return NULL;
	img->e = n;
	n = &img->e[img->n++];
	memset(n, 0, sizeof(*n));
	n->dupfd = -1;
	n->tmp_other = -1;
	n->tmp_peer = -1;
	n->placed = -1;
	n->dup_of = -1;
	return n;
}

static int cmp_int(const void *a, const void *b)
{
	int x = *(const int *)a, y = *(const int *)b;

	return (x > y) - (x < y);
}

/* Numbers of pid's open descriptors, sorted. */
static int list_fds(pid_t pid, int **ret, size_t *ret_n)
{
	char path[64];
	_cleanup_free_ int *v = NULL;
	size_t n = 0, cap = 0;
	DIR *d;
	struct dirent *de;

	snprintf(path, sizeof(path), "/proc/%d/fd", pid);
	d = opendir(path);
	if (!d)
		return err_set(negerrno(), "pid %d: cannot list descriptors", pid);
	while ((de = readdir(d))) {
		uint64_t fd;
		if (de->d_name[0] == '.' || parse_u64(de->d_name, &fd) < 0 || fd > INT32_MAX)
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 64;
			int *nv = realloc(v, cap * sizeof(*v));
			if (!nv) {
				closedir(d);
				return -ENOMEM;
			}
			v = nv;
		}
		v[n++] = (int)fd;
	}
	closedir(d);
	if (n)
		qsort(v, n, sizeof(*v), cmp_int);
	*ret = TAKE_PTR(v);
	*ret_n = n;
	return 0;
}

/* Reads link, fdinfo, flags, pos and a duplicate of one descriptor.
 * Returns 0, or -ENOENT when the descriptor went away (only possible while
 * the process runs, during fds_check). */
static int entry_read(struct fd_image *img, struct fd_entry *e)
{
	char path[64], link[PATH_MAX + 1];
	ssize_t n;
	const char *v;
	uint64_t flags;
	int r;

	snprintf(path, sizeof(path), "/proc/%d/fd/%d", img->pid, e->fd);
	n = readlink(path, link, sizeof(link) - 1);
	if (n < 0)
		return errno == ENOENT ? -ENOENT : err_set(negerrno(), "fd %d: cannot read its link", e->fd);
	link[n] = 0;
	e->link = strdup(link);
	if (!e->link)
		return -ENOMEM;

	snprintf(path, sizeof(path), "/proc/%d/fdinfo/%d", img->pid, e->fd);
	r = read_file_full(path, &e->fdinfo, NULL);
	if (r < 0)
		return r == -ENOENT ? r : err_set(r, "fd %d: cannot read %s", e->fd, path);
	v = fds_info(e, "flags");
	if (!v || sscanf(v, "%lo", &flags) != 1)
		return err_set(-EIO, "fd %d: no flags in fdinfo", e->fd);
	e->cloexec = flags & O_CLOEXEC;
	/* O_LARGEFILE (the kernel's value; glibc's is 0 on 64-bit) is
	 * implied on 64-bit and set by the kernel itself. */
	e->flags = (unsigned)(flags & ~(uint64_t)(O_CLOEXEC | 0100000));
	v = fds_info(e, "pos");
	if (!v || sscanf(v, "%lu", &e->pos) != 1)
		return err_set(-EIO, "fd %d: no pos in fdinfo", e->fd);

	e->dupfd = pidfd_getfd_(img->pidfd, e->fd);
	if (e->dupfd < 0) {
		r = negerrno();
		return r == -EBADF ? -ENOENT
				   : err_set(r, "fd %d: cannot duplicate it with pidfd_getfd", e->fd);
	}
	e->st = malloc(sizeof(*e->st));
	if (!e->st)
		return -ENOMEM;
	if (fstat(e->dupfd, e->st) < 0)
		return err_set(negerrno(), "fd %d: fstat", e->fd);
	e->sdev = e->st->st_dev;
	e->sino = e->st->st_ino;
	return 0;
}

static int classify(struct fd_image *img, struct fd_entry *e)
{
	int (*fns[])(struct fd_image *, struct fd_entry *) = {
		fds_tty_classify, fds_file_classify, fds_pipe_classify, fds_event_classify, fds_pidfd_classify,
		fds_socket_classify,
	};

	for (size_t i = 0; i < ARRAY_SIZE(fns); i++) {
		int r = fns[i](img, e);
		if (r != 0)
			return r < 0 ? r : fds_lock_capture(img, e);
	}
	return err_set(-EOPNOTSUPP, "fd %d: %s: not supported", e->fd, e->link);
}

/* O_ASYNC: who gets the signal and which, read on our duplicate (it shares
 * the description). Without O_ASYNC an owner only ever gets SIGURG (TCP
 * urgent data): not kept. Whether the owner is in the tree is for
 * fds_tree_check(). */
static int read_owner(struct fd_entry *e)
{
	struct f_owner_ex o;
	int sig;

	if (!(e->flags & O_ASYNC))
		return 0;
	if (fcntl(e->dupfd, F_GETOWN_EX, &o) < 0 || (sig = fcntl(e->dupfd, F_GETSIG)) < 0)
		return err_set(negerrno(), "fd %d: %s: cannot read its O_ASYNC owner and signal", e->fd, e->link);
	e->owner_type = o.type;
	e->owner_pid = o.pid > 0 ? o.pid : 0;
	e->sig = sig;
	return 0;
}

static bool kind_is_file(enum fd_kind k)
{
	return k == FD_KIND_FILE || k == FD_KIND_DIR || k == FD_KIND_DEV || k == FD_KIND_TTY ||
	       k == FD_KIND_DELETED || k == FD_KIND_MEMFD;
}

static int capture_one(struct fd_image *img, struct fd_entry *e)
{
	switch (e->kind) {
	case FD_KIND_DUP:
		return 0;
	case FD_KIND_FILE:
	case FD_KIND_DIR:
	case FD_KIND_DEV:
	case FD_KIND_TTY:
	case FD_KIND_DELETED:
	case FD_KIND_MEMFD:
		return fds_file_capture(img, e);
	case FD_KIND_PIPE_R:
	case FD_KIND_PIPE_W:
	case FD_KIND_PIPE_RW:
	case FD_KIND_FIFO:
		return fds_pipe_capture(img, e);
	case FD_KIND_EVENTFD:
	case FD_KIND_EPOLL:
	case FD_KIND_TIMERFD:
	case FD_KIND_SIGNALFD:
	case FD_KIND_INOTIFY:
	case FD_KIND_FANOTIFY:
		return fds_event_capture(img, e);
	case FD_KIND_TCP_LISTEN:
	case FD_KIND_UNIX_LISTEN:
	case FD_KIND_UNIX_PAIR:
	case FD_KIND_UNIX_DGRAM:
		return fds_socket_capture(img, e);
	case FD_KIND_TCP:
	case FD_KIND_UDP:
		return fds_tcp_capture(img, e);
	case FD_KIND_NETLINK:
	case FD_KIND_PACKET:
		return fds_net_capture(img, e);
	case FD_KIND_PTMX:
	case FD_KIND_PTS:
		return fds_tty_capture(img, e);
	case FD_KIND_PIDFD:
		return fds_pidfd_capture(img, e);
	default:
		return -EINVAL;
	}
}

/* Drops what only capture needs, our duplicates first. */
static void image_settle(struct fd_image *img)
{
	for (size_t i = 0; i < img->n; i++) {
		struct fd_entry *e = &img->e[i];
		/* a connection in repair mode: kept until fds_release() */
		if (e->dupfd >= 0 && !(e->tcp && e->tcp->repair))
			close(e->dupfd);
		if (!(e->tcp && e->tcp->repair))
			e->dupfd = -1;
		free(e->fdinfo);
		e->fdinfo = NULL;
		free(e->st);
		e->st = NULL;
	}
	if (img->pidfd >= 0)
		close(img->pidfd);
	img->pidfd = -1;
}

struct dup_sort {
	struct fd_image *img;
	int err;
};

/* Orders descriptors by inode, then by open file description as kcmp
 * orders them (it gives a total order, for sorting), then by number. */
static int cmp_description(const void *a, const void *b, void *ud)
{
	struct dup_sort *ds = ud;
	const struct fd_entry *x = &ds->img->e[*(const size_t *)a], *y = &ds->img->e[*(const size_t *)b];
	int r;

	if (x->st->st_dev != y->st->st_dev)
		return x->st->st_dev < y->st->st_dev ? -1 : 1;
	if (x->st->st_ino != y->st->st_ino)
		return x->st->st_ino < y->st->st_ino ? -1 : 1;
	if (x->fd == y->fd)
		return 0;
	r = kcmp_file(ds->img->pid, x->fd, y->fd);
	if (r < 0 || r > 2) {
		if (!ds->err)
			ds->err = err_set(r < 0 ? negerrno() : -EIO, "fd %d: kcmp with fd %d", x->fd, y->fd);
		return 0;
	}
	if (r == 0)
		return x->fd < y->fd ? -1 : 1;
	return r == 1 ? -1 : 1;
}

/* Marks every descriptor that shares the open file description of a lower
 * numbered one as a dup of the lowest. Only descriptors of one inode can
 * share one; anon inodes (eventfd, epoll, ...) all share an inode, so
 * kcmp decides, in a sort: n log n calls, not n squared. */
static int find_dups(struct fd_image *img)
{
	struct dup_sort ds = { .img = img };
	_cleanup_free_ size_t *idx = NULL;

	for (size_t i = 0; i < img->n; i++)
		img->e[i].kind = _FD_KIND_MAX;
	if (img->n < 2)
		return 0;
	idx = malloc(img->n * sizeof(*idx));
	if (!idx)
		return -ENOMEM;
	for (size_t i = 0; i < img->n; i++)
		idx[i] = i;
	qsort_r(idx, img->n, sizeof(*idx), cmp_description, &ds);
	if (ds.err)
		return ds.err;
	for (size_t i = 1; i < img->n; i++) {
		struct fd_entry *p = &img->e[idx[i - 1]], *e = &img->e[idx[i]];
		if (p->st->st_dev != e->st->st_dev || p->st->st_ino != e->st->st_ino)
			continue;
		int r = kcmp_file(img->pid, p->fd, e->fd);
		if (r < 0)
			return err_set(negerrno(), "fd %d: kcmp with fd %d", e->fd, p->fd);
		if (r == 0) {
			/* Runs are sorted by number: p is the run's lowest or
			 * already points at it. */
			e->kind = FD_KIND_DUP;
			e->dup_of = p->kind == FD_KIND_DUP ? p->dup_of : p->fd;
		}
	}
	return 0;
}

static int scan(pid_t pid, bool capture, bool lock, struct fd_image **ret)
{
	_cleanup_free_ int *fds = NULL;
	size_t n = 0;
	struct fd_image *img;
	int r;

	img = fds_image_new();
	if (!img)
		return -ENOMEM;
	img->pid = pid;
	img->checking = !capture;
	img->pidfd = pidfd_open_(pid);
	if (img->pidfd < 0) {
		r = err_set(negerrno(), "pid %d: pidfd_open", pid);
		goto fail;
	}
	r = list_fds(pid, &fds, &n);
	if (r < 0)
		goto fail;

	for (size_t i = 0; i < n; i++) {
		struct fd_entry *e = fds_image_add(img);
		if (!e) {
			r = -ENOMEM;
			goto fail;
		}
		e->fd = fds[i];
		r = entry_read(img, e);
		if (r == -ENOENT && !capture) {
			/* Closed while we looked: the process runs during fds_check. */
			fds_entry_free(e);
			img->n--;
			continue;
		}
		if (r < 0)
			goto fail;
	}

	r = find_dups(img);
	if (r < 0)
		goto fail;
	for (size_t i = 0; i < img->n; i++) {
		struct fd_entry *e = &img->e[i];
		if (e->kind == FD_KIND_DUP)
			continue;
		r = classify(img, e);
		if (r >= 0)
			r = read_owner(e);
		if (r < 0)
			goto fail;
	}

	if (capture && fault_hit(FAULT_ENGINE_DIE_FDS))
		raise(SIGKILL); /* with every descriptor duplicated */
	if (capture && fault_hit(FAULT_ENGINE_FDS)) {
		r = err_set(-EIO, "pid %d: capturing descriptors: injected fault", pid);
		goto fail;
	}
	/* before any queue of a TCP connection is read: from now on none
	 * of their packets changes them (fds-tcp.c); a process that runs on
	 * keeps its connections: read consistently without */
	if (capture && lock) {
		r = fds_tcp_lock(img);
		if (r < 0)
			goto fail;
	}
	for (size_t i = 0; i < img->n; i++) {
		/* fds_check runs the captures that can refuse by state (an
		 * epoll watch on a closed descriptor, connections waiting on a
		 * listener, datagrams queued in a pair) so that the refusal
		 * comes before the process is touched. They only peek. File
		 * contents are copied at capture only. */
		if (!capture && (kind_is_file(img->e[i].kind) || img->e[i].kind == FD_KIND_DUP))
			continue;
		r = capture_one(img, &img->e[i]);
		if (r < 0)
			goto fail;
	}
	image_settle(img);
	*ret = img;
	return 0;
fail:
	fds_free(img);
	return r;
}

int fds_check(pid_t pid)
{
	struct fd_image *img = NULL;
	int r = scan(pid, false, false, &img);

	if (r >= 0)
		log_debug("pid %d: %zu descriptors, all supported", pid, img->n);
	fds_free(img);
	return r;
}

int fds_check_tree(const pid_t *pids, size_t n)
{
	_cleanup_free_ struct fd_image **imgs = calloc(n ? n : 1, sizeof(*imgs));
	int r = 0;

	if (!imgs)
		return -ENOMEM;
	/* The tree runs: a second look at each table, as fds_check() took
	 * it, now that every process is known. */
	for (size_t i = 0; i < n && r >= 0; i++) {
		r = scan(pids[i], false, false, &imgs[i]);
		if (r == -ESRCH) {
			/* ended meanwhile: the freeze sees the tree as it is */
			err_clear();
			imgs[i] = fds_image_new();
			r = imgs[i] ? 0 : -ENOMEM;
		}
	}
	if (r >= 0)
		r = fds_tree_check(imgs, pids, n);
	for (size_t i = 0; i < n; i++)
		fds_free(imgs[i]);
	return r;
}

int fds_capture(pid_t pid, struct fd_image **ret)
{
	return scan(pid, true, true, ret);
}

int fds_capture_running(pid_t pid, struct fd_image **ret)
{
	return scan(pid, true, false, ret);
}

int fds_release(struct fd_image *img, bool killed)
{
	return img ? fds_tcp_release(img, killed) : 0;
}

int fds_unlock(struct fd_image *img)
{
	return img ? fds_tcp_unlock(img) : 0;
}

/* ---- the text form --------------------------------------------------------- */

void fds_printf(struct fds_buf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (b->err)
		return;
	for (;;) {
		size_t room = b->cap - b->len;
		va_start(ap, fmt);
		n = vsnprintf(b->p ? b->p + b->len : NULL, room, fmt, ap);
		va_end(ap);
		if (n < 0) {
			b->err = -EINVAL;
			return;
		}
		if ((size_t)n < room) {
			b->len += (size_t)n;
			return;
		}
		size_t cap = MAX(b->cap * 2, b->len + (size_t)n + 256);
		char *p = realloc(b->p, cap);
		if (!p) {
			b->err = -ENOMEM;
			return;
		}
		b->p = p;
		b->cap = cap;
	}
}

void fds_put_path(struct fds_buf *b, const char *key, const char *val, size_t len)
{
	fds_printf(b, " %s=", key);
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)val[i];
		if (c <= 0x20 || c >= 0x7f || c == '\\' || c == '=')
			fds_printf(b, "\\x%02x", c);
		else
			fds_printf(b, "%c", c);
	}
}

ssize_t fds_unescape(const char *in, char *out, size_t outsz)
{
	size_t n = 0;

	for (const char *p = in; *p; p++) {
		unsigned char c = (unsigned char)*p;
		if (c == '\\') {
			unsigned v;
			if (p[1] != 'x' || !isxdigit((unsigned char)p[2]) || !isxdigit((unsigned char)p[3]))
				return -EINVAL;
			if (sscanf(p + 2, "%2x", &v) != 1)
				return -EINVAL;
			c = (unsigned char)v;
			p += 3;
		} else if (c <= 0x20 || c >= 0x7f || c == '=') {
			return -EINVAL;
		}
		if (n + 1 >= outsz)
			return -ENAMETOOLONG;
		out[n++] = (char)c;
	}
	out[n] = 0;
	return (ssize_t)n;
}

static const char *const owner_names[] = {
	[F_OWNER_TID] = "tid",
	[F_OWNER_PID] = "pid",
	[F_OWNER_PGRP] = "pgrp",
};

static const char *owner_name(int type)
{
	return type >= 0 && (size_t)type < ARRAY_SIZE(owner_names) && owner_names[type] ? owner_names[type] : "?";
}

static void data_path(int fd, char *buf, size_t len)
{
	snprintf(buf, len, "fds-data/%d", fd);
}

int fds_format(struct fd_image *img, char **ret, size_t *ret_len)
{
	struct fds_buf b = { 0 };

	for (size_t i = 0; i < img->n; i++) {
		struct fd_entry *e = &img->e[i];
		fds_printf(&b, "%d %s", e->fd, fds_kind_name(e->kind));
		if (e->kind == FD_KIND_DUP || e->kind == FD_KIND_SHARED) {
			fds_printf(&b, " of=%d cloexec=%d", e->dup_of, e->cloexec);
			fds_lock_print(e, &b);
			fds_printf(&b, "\n");
			continue;
		}
		fds_printf(&b, " flags=0%o cloexec=%d", e->flags, e->cloexec);
		switch (e->kind) {
		case FD_KIND_FILE:
		case FD_KIND_DIR:
		case FD_KIND_DEV:
		case FD_KIND_TTY:
		case FD_KIND_DELETED:
		case FD_KIND_MEMFD:
			fds_file_print(e, &b);
			break;
		case FD_KIND_PIPE_R:
		case FD_KIND_PIPE_W:
		case FD_KIND_PIPE_RW:
		case FD_KIND_FIFO:
			fds_pipe_print(e, &b);
			break;
		case FD_KIND_EVENTFD:
		case FD_KIND_EPOLL:
		case FD_KIND_TIMERFD:
		case FD_KIND_SIGNALFD:
		case FD_KIND_INOTIFY:
		case FD_KIND_FANOTIFY:
			fds_event_print(e, &b);
			break;
		case FD_KIND_PTMX:
		case FD_KIND_PTS:
			fds_tty_print(e, &b);
			break;
		case FD_KIND_PIDFD:
			fds_pidfd_print(e, &b);
			break;
		default:
			fds_socket_print(e, &b);
			break;
		}
		if (e->owner_pid)
			fds_printf(&b, " owner=%s:%d", owner_name(e->owner_type), e->owner_pid);
		if (e->sig)
			fds_printf(&b, " sig=%d", e->sig);
		fds_lock_print(e, &b);
		if (e->data_len) {
			char dp[64];
			data_path(e->fd, dp, sizeof(dp));
			fds_printf(&b, " data=%s", dp);
		}
		fds_printf(&b, "\n");
	}
	fds_printf(&b, "%s", ""); /* an empty table is an empty, allocated text */
	if (b.err) {
		free(b.p);
		return b.err;
	}
	*ret = b.p;
	*ret_len = b.len;
	return 0;
}

/* ---- parsing ------------------------------------------------------------------ */

int fds_err_prefix(int r, const char *fmt, ...)
{
	char prev[512], msg[512];
	va_list ap;

	snprintf(prev, sizeof(prev), "%s", err_msg());
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return err_set(r, "%s%s%s", msg, prev[0] ? ": " : "", prev);
}

int fds_bad(struct fd_line *l, const char *fmt, ...)
{
	char msg[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	return err_set(-EBADMSG, "fds line %u (fd %d): %s", l->lineno, l->fd, msg);
}

const char *fds_kv(struct fd_line *l, const char *key)
{
	for (size_t i = 0; i < l->n; i++)
		if (!l->kv[i].used && strcmp(l->kv[i].key, key) == 0) {
			l->kv[i].used = true;
			return l->kv[i].val;
		}
	return NULL;
}

bool fds_kv_has(const struct fd_line *l, const char *key)
{
	for (size_t i = 0; i < l->n; i++)
		if (!l->kv[i].used && strcmp(l->kv[i].key, key) == 0)
			return true;
	return false;
}

int fds_kv_mode(struct fd_line *l, unsigned *ret)
{
	const char *v;
	char *end;
	int r = fds_kv_req(l, "mode", &v);

	if (r < 0)
		return r;
	errno = 0;
	unsigned long m = strtoul(v, &end, 8);
	if (v[0] != '0' || *end || errno || m > 07777)
		return fds_bad(l, "mode=%s: not octal permission bits", v);
	*ret = (unsigned)m;
	return 0;
}

int fds_kv_req(struct fd_line *l, const char *key, const char **ret)
{
	const char *v = fds_kv(l, key);

	if (!v)
		return fds_bad(l, "%s %s= missing", l->kind, key);
	*ret = v;
	return 0;
}

static int parse_num(const char *s, int base, uint64_t *ret)
{
	char *end;

	/* strtoull accepts signs and spaces; the format has neither. */
	if (!isxdigit((unsigned char)s[0]))
		return -EINVAL;
	errno = 0;
	unsigned long long v = strtoull(s, &end, base);
	if (errno || *end)
		return -EINVAL;
	*ret = v;
	return 0;
}

int fds_kv_u64(struct fd_line *l, const char *key, uint64_t *ret)
{
	const char *v;
	int r = fds_kv_req(l, key, &v);

	if (r < 0)
		return r;
	if (parse_u64(v, ret) < 0)
		return fds_bad(l, "%s=%s: not a decimal number", key, v);
	return 0;
}

int fds_kv_u64_opt(struct fd_line *l, const char *key, uint64_t def, uint64_t *ret)
{
	const char *v = fds_kv(l, key);

	if (!v) {
		*ret = def;
		return 0;
	}
	if (parse_u64(v, ret) < 0)
		return fds_bad(l, "%s=%s: not a decimal number", key, v);
	return 0;
}

int fds_kv_hex(struct fd_line *l, const char *key, uint64_t *ret)
{
	const char *v;
	int r = fds_kv_req(l, key, &v);

	if (r < 0)
		return r;
	if (strncmp(v, "0x", 2) != 0 || parse_num(v + 2, 16, ret) < 0)
		return fds_bad(l, "%s=%s: not a 0x hex number", key, v);
	return 0;
}

int fds_kv_family(struct fd_line *l, int *ret)
{
	const char *v;
	int r = fds_kv_req(l, "family", &v);

	if (r < 0)
		return r;
	if (strcmp(v, "inet") == 0)
		*ret = AF_INET;
	else if (strcmp(v, "inet6") == 0)
		*ret = AF_INET6;
	else
		return fds_bad(l, "family=%s: not inet or inet6", v);
	return 0;
}

int fds_kv_bool(struct fd_line *l, const char *key, bool *ret)
{
	const char *v;
	int r = fds_kv_req(l, key, &v);

	if (r < 0)
		return r;
	if (strcmp(v, "0") && strcmp(v, "1"))
		return fds_bad(l, "%s=%s: not 0 or 1", key, v);
	*ret = v[0] == '1';
	return 0;
}

int fds_kv_path(struct fd_line *l, const char *key, char **ret)
{
	char buf[PATH_MAX + 1];
	const char *v;
	int r = fds_kv_req(l, key, &v);

	if (r < 0)
		return r;
	if (fds_unescape(v, buf, sizeof(buf)) < 0 || strlen(buf) == 0)
		return fds_bad(l, "%s=: bad escaped value", key);
	*ret = strdup(buf);
	return *ret ? 0 : -ENOMEM;
}

int fds_kv_ts(struct fd_line *l, const char *key, struct timespec *ret)
{
	const char *v;
	char *dot;
	uint64_t s, ns;
	char buf[64];
	int r = fds_kv_req(l, key, &v);

	if (r < 0)
		return r;
	snprintf(buf, sizeof(buf), "%s", v);
	dot = strchr(buf, '.');
	if (!dot || strlen(dot + 1) != 9)
		return fds_bad(l, "%s=%s: not SECONDS.NNNNNNNNN", key, v);
	*dot = 0;
	if (parse_u64(buf, &s) < 0 || parse_u64(dot + 1, &ns) < 0 || s > INT64_MAX)
		return fds_bad(l, "%s=%s: not SECONDS.NNNNNNNNN", key, v);
	ret->tv_sec = (time_t)s;
	ret->tv_nsec = (long)ns;
	return 0;
}

/* owner=TYPE:PID and sig=N, of a description with O_ASYNC only. */
static int parse_owner(struct fd_entry *e, struct fd_line *l)
{
	const char *v = fds_kv(l, "owner");
	uint64_t sig, pid;
	int r = fds_kv_u64_opt(l, "sig", 0, &sig);

	if (r < 0)
		return r;
	if ((v || sig) && !(e->flags & O_ASYNC))
		return fds_bad(l, "owner= and sig= without O_ASYNC in flags");
	if (sig >= _NSIG)
		return fds_bad(l, "sig=%lu: not a signal", sig);
	e->sig = (int)sig;
	if (!v)
		return 0;
	const char *colon = strchr(v, ':');
	e->owner_type = -1;
	for (size_t t = 0; colon && t < ARRAY_SIZE(owner_names); t++)
		if (owner_names[t] && strlen(owner_names[t]) == (size_t)(colon - v) &&
		    strncmp(v, owner_names[t], (size_t)(colon - v)) == 0)
			e->owner_type = (int)t;
	if (e->owner_type < 0 || parse_u64(colon + 1, &pid) < 0 || pid == 0 || pid > INT32_MAX)
		return fds_bad(l, "owner=%s: not tid:, pid: or pgrp: and a number", v);
	e->owner_pid = (pid_t)pid;
	return 0;
}

static int parse_line(struct fd_image *img, char *line, unsigned lineno,
		      int (*get)(const char *, void **, uint64_t *, void *), void *ud)
{
	struct fd_line l = { .lineno = lineno, .fd = -1 };
	struct fd_entry *e;
	char *tok, *save = NULL;
	uint64_t u;
	int r, k;

	if (!*line)
		return err_set(-EBADMSG, "fds line %u: empty", lineno);
	if (line[0] == ' ' || line[strlen(line) - 1] == ' ' || strstr(line, "  "))
		return err_set(-EBADMSG, "fds line %u: stray spaces", lineno);
	tok = strtok_r(line, " ", &save);
	if (parse_u64(tok, &u) < 0 || u > INT32_MAX)
		return err_set(-EBADMSG, "fds line %u: bad descriptor number '%s'", lineno, tok);
	l.fd = (int)u;
	if (img->n && img->e[img->n - 1].fd >= l.fd)
		return fds_bad(&l, "descriptor numbers must increase");
	l.kind = strtok_r(NULL, " ", &save);
	if (!l.kind)
		return fds_bad(&l, "no kind");
	k = fds_kind_from_name(l.kind);
	if (k < 0)
		return fds_bad(&l, "unknown kind '%s'", l.kind);
	while ((tok = strtok_r(NULL, " ", &save))) {
		char *eq = strchr(tok, '=');
		if (!eq || eq == tok)
			return fds_bad(&l, "'%s' is not key=value", tok);
		if (l.n == ARRAY_SIZE(l.kv))
			return fds_bad(&l, "too many keys");
		*eq = 0;
		for (size_t i = 0; i < l.n; i++)
			if (strcmp(l.kv[i].key, tok) == 0 && strcmp(tok, "watch") != 0)
				return fds_bad(&l, "key %s twice", tok);
		l.kv[l.n++] = (struct fd_kv){ .key = tok, .val = eq + 1 };
	}

	e = fds_image_add(img);
	if (!e)
		return -ENOMEM;
	e->fd = l.fd;
	e->kind = k;
	r = fds_kv_bool(&l, "cloexec", &e->cloexec);
	if (r < 0)
		return r;
	if (k == FD_KIND_DUP) {
		struct fd_entry *o;
		r = fds_kv_u64(&l, "of", &u);
		if (r < 0)
			return r;
		o = u <= INT32_MAX ? fds_find(img, (int)u) : NULL;
		if (!o || o == e || o->kind == FD_KIND_DUP)
			return fds_bad(&l, "of=%lu: not an earlier, non-dup descriptor", u);
		e->dup_of = (int)u;
	} else if (k == FD_KIND_SHARED) {
		/* Names the tree's shared image, checked against it by
		 * fds_validate_shared(). */
		r = fds_kv_u64(&l, "of", &u);
		if (r < 0)
			return r;
		if (u > INT32_MAX)
			return fds_bad(&l, "of=%lu: not a shared id", u);
		e->dup_of = (int)u;
		r = fds_lock_parse(e, &l);
		if (r < 0)
			return r;
	} else {
		const char *v;
		r = fds_kv_req(&l, "flags", &v);
		if (r < 0)
			return r;
		if (v[0] != '0' || parse_num(v, 8, &u) < 0 || u > 0x7fffffff || (u & O_CLOEXEC))
			return fds_bad(&l, "flags=%s: not octal status flags", v);
		e->flags = (unsigned)u;
		switch (k) {
		case FD_KIND_FILE:
		case FD_KIND_DIR:
		case FD_KIND_DEV:
		case FD_KIND_TTY:
		case FD_KIND_DELETED:
		case FD_KIND_MEMFD:
			r = fds_file_parse(e, &l);
			break;
		case FD_KIND_PIPE_R:
		case FD_KIND_PIPE_W:
		case FD_KIND_PIPE_RW:
		case FD_KIND_FIFO:
			r = fds_pipe_parse(e, &l);
			break;
		case FD_KIND_EVENTFD:
		case FD_KIND_EPOLL:
		case FD_KIND_TIMERFD:
		case FD_KIND_SIGNALFD:
		case FD_KIND_INOTIFY:
		case FD_KIND_FANOTIFY:
			r = fds_event_parse(e, &l);
			break;
		case FD_KIND_PTMX:
		case FD_KIND_PTS:
			r = fds_tty_parse(e, &l);
			break;
		case FD_KIND_PIDFD:
			r = fds_pidfd_parse(e, &l);
			break;
		default:
			r = fds_socket_parse(e, &l);
			break;
		}
		if (r >= 0)
			r = parse_owner(e, &l);
		if (r >= 0)
			r = fds_lock_parse(e, &l);
		if (r < 0)
			return r;
		/* The kind's parser set data_len from its own length key. */
		const char *dv = fds_kv(&l, "data");
		char want[64];
		data_path(e->fd, want, sizeof(want));
		if (e->data_len && (!dv || strcmp(dv, want) != 0))
			return fds_bad(&l, "data= must be %s", want);
		if (!e->data_len && dv)
			return fds_bad(&l, "data= without bytes to hold");
		if (e->data_len) {
			void *buf = NULL;
			uint64_t len = 0;
			if (!get)
				return fds_bad(&l, "data= but no data files to read");
			r = get(want, &buf, &len, ud);
			if (r < 0)
				return fds_err_prefix(r, "fds line %u (fd %d): cannot read %s", lineno,
						      l.fd, want);
			if (len != e->data_len) {
				free(buf);
				return fds_bad(&l, "%s holds %lu bytes, the line says %lu", want, len,
					       e->data_len);
			}
			e->data = buf;
		}
	}
	for (size_t i = 0; i < l.n; i++)
		if (!l.kv[i].used)
			return fds_bad(&l, "unknown key %s for %s", l.kv[i].key, l.kind);
	return 0;
}

int fds_parse(const char *text, int (*get)(const char *path, void **buf, uint64_t *len, void *ud),
	      void *ud, struct fd_image **ret)
{
	_cleanup_free_ char *copy = strdup(text);
	struct fd_image *img;
	char *p, *nl;
	unsigned lineno = 0;
	int r = 0;

	if (!copy)
		return -ENOMEM;
	img = fds_image_new();
	if (!img)
		return -ENOMEM;
	size_t len = strlen(copy);
	if (len && copy[len - 1] != '\n') {
		r = err_set(-EBADMSG, "fds: last line not terminated");
		goto fail;
	}
	for (p = copy; *p; p = nl + 1) {
		nl = strchr(p, '\n');
		*nl = 0;
		r = parse_line(img, p, ++lineno, get, ud);
		if (r < 0)
			goto fail;
	}
	/* Cross-line rules: epoll watches name restored descriptors. */
	for (size_t i = 0; i < img->n; i++) {
		struct fd_entry *e = &img->e[i];
		for (size_t w = 0; w < e->n_watches; w++) {
			int holder = e->watches[w].via >= 0 ? e->watches[w].via : e->watches[w].tfd;
			/* a shared description: fds_validate_shared() */
			if (e->watches[w].shared >= 0)
				continue;
			struct fd_entry *t = fds_find(img, holder);
			if (t && t->kind == FD_KIND_DUP)
				t = fds_find(img, t->dup_of);
			if (!t || t->kind == FD_KIND_EPOLL) {
				r = err_set(-EBADMSG, "fds: fd %d: epoll watches fd %d%s, %s", e->fd,
					    holder, e->watches[w].via >= 0 ? " (the holder of a closed number)" : "",
					    t ? "an epoll instance" : "which is not in the table");
				goto fail;
			}
		}
	}
	r = fds_pipe_validate(img);
	if (r < 0)
		goto fail;
	r = fds_socket_validate(img);
	if (r < 0)
		goto fail;
	r = fds_tty_validate(img);
	if (r < 0)
		goto fail;
	r = fds_event_validate(img);
	if (r < 0)
		goto fail;
	*ret = img;
	return 0;
fail:
	fds_free(img);
	return r;
}

int fds_host_check(struct fd_image *img, bool accept_changed)
{
	img->accept_changed = accept_changed;
	for (size_t i = 0; i < img->n; i++) {
		int r = fds_file_check_host(img, &img->e[i]);
		if (r >= 0)
			r = fds_pipe_check_host(img, &img->e[i]);
		if (r >= 0)
			r = fds_tcp_check_host(img, &img->e[i]);
		if (r >= 0)
			r = fds_pidfd_check_host(img, &img->e[i]);
		if (r >= 0)
			r = fds_net_check_host(img, &img->e[i]);
		if (r >= 0)
			r = fds_event_check_host(img, &img->e[i]);
		if (r < 0)
			return r;
	}
	return 0;
}

/* ---- restore -------------------------------------------------------------- */

static int place(struct fd_entry *e, int tmp, int at, bool cloexec)
{
	/* tmp is above the numbers being filled and at is free: dup3 cannot
	 * clobber. */
	if (dup3(tmp, at, cloexec ? O_CLOEXEC : 0) < 0) {
		int r = negerrno();
		close(tmp);
		return err_set(r, "fd %d: dup3 to %d", e->fd, at);
	}
	close(tmp);
	return 0;
}

/* Creates e's description, its temporaries above max, and puts it at
 * descriptor number at. */
static int open_one(struct fd_image *img, struct fd_entry *e, int max, int at, bool cloexec)
{
	int fd;

	switch (e->kind) {
	case FD_KIND_FILE:
	case FD_KIND_DIR:
	case FD_KIND_DEV:
	case FD_KIND_TTY:
	case FD_KIND_DELETED:
	case FD_KIND_MEMFD:
		fd = fds_file_open(img, e);
		break;
	case FD_KIND_PIPE_R:
	case FD_KIND_PIPE_W:
	case FD_KIND_PIPE_RW:
	case FD_KIND_FIFO:
		fd = fds_pipe_open(img, e, max);
		break;
	case FD_KIND_EVENTFD:
	case FD_KIND_TIMERFD:
	case FD_KIND_SIGNALFD:
	case FD_KIND_INOTIFY:
	case FD_KIND_FANOTIFY:
	case FD_KIND_EPOLL:
		fd = fds_event_open(img, e);
		break;
	case FD_KIND_PTMX:
	case FD_KIND_PTS:
		fd = fds_tty_open(img, e, max);
		break;
	case FD_KIND_PIDFD:
		fd = fds_pidfd_open(img, e);
		break;
	default:
		fd = fds_socket_open(img, e, max);
		break;
	}
	if (fd < 0)
		return fd;
	fd = fds_move_above(fd, max);
	if (fd < 0)
		return err_set(fd, "fd %d: cannot move above %d", e->fd, max);
	/* The description owns its flock and OFD locks: taken on it now,
	 * whoever opens it (in a tree, the forking process for a shared
	 * one). */
	int q = fds_lock_take_desc(e, fd);
	if (q < 0) {
		close(fd);
		return q;
	}
	/* The signal O_ASYNC sends, before O_ASYNC; its owner comes last
	 * (set_owners()). */
	if (e->sig && fcntl(fd, F_SETSIG, e->sig) < 0) {
		int r = negerrno();
		close(fd);
		return err_set(r, "fd %d: cannot set its O_ASYNC signal %d", e->fd, e->sig);
	}
	/* Status flags that opening did not set (O_NONBLOCK of a pipe, ...). */
	if (e->kind != FD_KIND_TTY || !e->to_null) {
		int cur = fcntl(fd, F_GETFL);
		if (cur < 0 || ((unsigned)cur & SETFL_MASK) != (e->flags & SETFL_MASK)) {
			if (fcntl(fd, F_SETFL, (int)(e->flags & SETFL_MASK)) < 0) {
				int r = negerrno();
				close(fd);
				return err_set(r, "fd %d: cannot set status flags 0%o", e->fd,
					       e->flags & SETFL_MASK);
			}
		}
	}
	int r = place(e, fd, at, cloexec);
	if (r >= 0)
		e->placed = at;
	return r;
}

static bool connects(const struct fd_entry *e)
{
	return e->kind == FD_KIND_UNIX_DGRAM && e->peerlen;
}

static int place_dups(struct fd_image *img, bool of_epoll)
{
	for (size_t i = 0; i < img->n; i++) {
		struct fd_entry *e = &img->e[i];
		if (e->kind != FD_KIND_DUP || (fds_find(img, e->dup_of)->kind == FD_KIND_EPOLL) != of_epoll)
			continue;
		if (dup3(e->dup_of, e->fd, e->cloexec ? O_CLOEXEC : 0) < 0)
			return err_set(negerrno(), "fd %d: dup3 of fd %d", e->fd, e->dup_of);
	}
	return 0;
}

/* A tree's shared descriptions, inherited at shared_base + id, come first:
 * dups and epoll watches may name them. */
static int place_shared(struct fd_image *img, int shared_base)
{
	for (size_t i = 0; i < img->n; i++) {
		struct fd_entry *e = &img->e[i];
		if (e->kind != FD_KIND_SHARED)
			continue;
		if (dup3(shared_base + e->dup_of, e->fd, e->cloexec ? O_CLOEXEC : 0) < 0)
			return err_set(negerrno(), "fd %d: dup3 of shared description %d (fd %d)", e->fd,
				       e->dup_of, shared_base + e->dup_of);
	}
	return 0;
}

/* O_ASYNC owners, once the table is in place: F_SETOWN_EX needs the owner
 * to exist, and in a tree every process and group of it does by the time
 * each restores its table (not yet when the shared descriptions are
 * opened, before the first process). A shared description's owner is set
 * by each process that holds it: one value, set again.
 *
 * The kernel notes the descriptor number O_ASYNC was set on and hands it
 * to the owner as si_fd (F_SETSIG): it was set on a temporary number, so
 * it is set again (off, on) on the final one, by the only holder, or, for
 * a shared description, by its owner, the one who reads si_fd. */
static int set_owners(struct fd_image *img, struct fd_image *shared)
{
	pid_t self = (pid_t)syscall(SYS_getpid);

	for (size_t i = 0; i < img->n; i++) {
		struct fd_entry *e = &img->e[i];
		const struct fd_entry *o = e;
		if (e->kind == FD_KIND_SHARED)
			o = shared && (size_t)e->dup_of < shared->n ? &shared->e[e->dup_of] : NULL;
		if (!o || o->kind == FD_KIND_DUP || !(o->flags & O_ASYNC))
			continue;
		struct f_owner_ex ox = { .type = o->owner_type, .pid = o->owner_pid };
		if (o->owner_pid && fcntl(e->fd, F_SETOWN_EX, &ox) < 0)
			return err_set(negerrno(), "fd %d: cannot give its O_ASYNC signal to %s %d", e->fd,
				       owner_name(o->owner_type), o->owner_pid);
		if (e->kind == FD_KIND_SHARED && (o->owner_type == F_OWNER_PGRP || o->owner_pid != self))
			continue;
		int fl = fcntl(e->fd, F_GETFL);
		if (fl < 0 || fcntl(e->fd, F_SETFL, fl & ~O_ASYNC) < 0 || fcntl(e->fd, F_SETFL, fl | O_ASYNC) < 0)
			return err_set(negerrno(), "fd %d: cannot set O_ASYNC on it", e->fd);
	}
	return 0;
}

/* Closes [from, ~0u], sparing [keep_from, ~0u] when keep_from >= 0. */
static int close_from(unsigned from, int keep_from)
{
	if (keep_from >= 0 && (unsigned)keep_from <= from)
		return 0;
	unsigned to = keep_from >= 0 ? (unsigned)keep_from - 1 : ~0u;
	return syscall(SYS_close_range, from, to, 0) < 0 ? negerrno() : 0;
}

int fds_restore(struct fd_image *img, struct fd_image *shared, int shared_base, int keep_from)
{
	int max = fds_max(img);
	int r = 0;

	if (keep_from >= 0 && keep_from <= max)
		return err_set(-EINVAL, "descriptors kept from %d, but the image uses fd %d", keep_from, max);
	img->shm_base = keep_from;
	for (size_t i = 0; i < img->n; i++)
		if (img->e[i].kind == FD_KIND_SHARED &&
		    (shared_base <= max || img->e[i].dup_of > INT_MAX - shared_base))
			return err_set(-EINVAL, "fd %d: shared description %d, but the shared base %d is not above fd %d",
				       img->e[i].fd, img->e[i].dup_of, shared_base, max);
	/* an epoll watch may name a shared description too */
	for (size_t i = 0; i < img->n; i++)
		for (size_t w = 0; w < img->e[i].n_watches; w++)
			if (img->e[i].watches[w].shared >= 0 &&
			    (shared_base <= max || img->e[i].watches[w].shared > INT_MAX - shared_base))
				return err_set(-EINVAL,
					       "fd %d: epoll watch on shared description %d, but the shared base %d is not "
					       "above fd %d",
					       img->e[i].fd, img->e[i].watches[w].shared, shared_base, max);
	img->shared_base = shared_base;
	if (max < 0) {
		r = close_from(0, keep_from);
		return r < 0 ? err_set(r, "close_range") : 0;
	}
	/* Every number the image uses is ours to fill. */
	if (syscall(SYS_close_range, 0, (unsigned)max, 0) < 0)
		return err_set(negerrno(), "close_range up to fd %d", max);
	/* Descriptors being built wait above max: room for them even when
	 * the image's soft RLIMIT_NOFILE (set already) is just above max. */
	struct rlimit rl, raised;
	bool lowered = getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max;
	if (lowered) {
		raised = (struct rlimit){ .rlim_cur = rl.rlim_max, .rlim_max = rl.rlim_max };
		lowered = setrlimit(RLIMIT_NOFILE, &raised) == 0;
	}

	r = place_shared(img, shared_base);
	/* A connection made through a listener first: it takes the
	 * listener's name for a moment (an abstract one cannot move aside). */
	for (size_t i = 0; i < img->n && r >= 0; i++) {
		struct fd_entry *e = &img->e[i];
		if (fds_unix_early(e))
			r = open_one(img, e, max, e->fd, e->cloexec);
	}
	for (size_t i = 0; i < img->n && r >= 0; i++) {
		struct fd_entry *e = &img->e[i];
		if (e->kind != FD_KIND_DUP && e->kind != FD_KIND_SHARED && e->kind != FD_KIND_EPOLL && !connects(e) &&
		    !fds_unix_early(e))
			r = open_one(img, e, max, e->fd, e->cloexec);
	}
	/* Datagram sockets connect by name once every bound one is back. */
	for (size_t i = 0; i < img->n && r >= 0; i++) {
		struct fd_entry *e = &img->e[i];
		if (connects(e))
			r = open_one(img, e, max, e->fd, e->cloexec);
	}
	/* Dups before epoll (a watch may name a dup), dups of epoll after. */
	r = r < 0 ? r : place_dups(img, false);
	for (size_t i = 0; i < img->n && r >= 0; i++) {
		struct fd_entry *e = &img->e[i];
		if (e->kind == FD_KIND_EPOLL)
			r = open_one(img, e, max, e->fd, e->cloexec);
	}
	r = r < 0 ? r : place_dups(img, true);
	r = r < 0 ? r : set_owners(img, shared);
	for (size_t i = 0; i < img->n; i++) {
		struct fd_entry *e = &img->e[i];
		if (e->tmp_other >= 0)
			close(e->tmp_other);
		e->tmp_other = -1;
		if (e->tmp_peer >= 0)
			close(e->tmp_peer);
		e->tmp_peer = -1;
	}
	/* Nothing of the restorer's may reach the restored process (what is
	 * kept, the core closes once it has mapped it). */
	int q = close_from((unsigned)max + 1, keep_from);
	if (q < 0 && r >= 0)
		r = err_set(q, "close_range above fd %d", max);
	/* POSIX locks last: closing any descriptor of a file drops the
	 * process's POSIX locks on it, and the table is final only now (the
	 * inherited shared descriptions are closed just above). */
	r = r < 0 ? r : fds_lock_take_posix(img, shared);
	if (lowered && setrlimit(RLIMIT_NOFILE, &rl) < 0 && r >= 0)
		r = err_set(negerrno(), "cannot set RLIMIT_NOFILE back to %lu", (unsigned long)rl.rlim_cur);
	return r;
}

int fds_open_shared(struct fd_image *shared, int base, int shm_base)
{
	int n = fds_count(shared), top, r;

	if (n == 0)
		return 0;
	r = fds_validate_shared(NULL, shared);
	if (r < 0)
		return r;
	if (base < 0 || base > INT_MAX - n)
		return err_set(-EINVAL, "shared descriptions: base %d", base);
	top = base + n - 1;
	shared->shm_base = shm_base;
	/* Checked first, as the numbers only fill up from here on: a
	 * descriptor of the restorer there would be clobbered silently. */
	for (int fd = base; fd <= top; fd++)
		if (fcntl(fd, F_GETFD) >= 0)
			return err_set(-EBUSY, "shared descriptions: fd %d (base %d + %d) is in use", fd, base,
				       fd - base);
	/* As fds_restore(), but every temporary goes above top, and the
	 * description of id i lands at base + i, ours (O_CLOEXEC) until the
	 * processes of the tree dup3 it onto their numbers. */
	for (int i = 0; i < n && r >= 0; i++) {
		struct fd_entry *e = &shared->e[i];
		if (fds_unix_early(e))
			r = open_one(shared, e, top, base + i, true);
	}
	for (int i = 0; i < n && r >= 0; i++) {
		struct fd_entry *e = &shared->e[i];
		if (!connects(e) && !fds_unix_early(e))
			r = open_one(shared, e, top, base + i, true);
	}
	for (int i = 0; i < n && r >= 0; i++) {
		struct fd_entry *e = &shared->e[i];
		if (connects(e))
			r = open_one(shared, e, top, base + i, true);
	}
	for (int i = 0; i < n; i++) {
		struct fd_entry *e = &shared->e[i];
		if (e->tmp_other >= 0)
			close(e->tmp_other);
		e->tmp_other = -1;
		if (e->tmp_peer >= 0)
			close(e->tmp_peer);
		e->tmp_peer = -1;
	}
	if (r < 0)
		syscall(SYS_close_range, (unsigned)base, (unsigned)top, 0);
	return r;
}
