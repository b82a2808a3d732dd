/*
 * engine/fds/fds-unix.c: what Unix sockets hold beyond their kind
 * (fds-socket.c classifies, prints and parses them): the messages queued
 * on seqpacket and datagram sockets, kept with their boundaries; names
 * bound by a relative path or deleted since the bind; connections made
 * through a listener, made again through one so that both ends answer
 * getsockname and getpeername as before.
 *
 * Queued messages are read with MSG_PEEK and SO_PEEK_OFF: on AF_UNIX a
 * peek at an offset walks past whole datagrams (a datagram longer than
 * the buffer is continued from where the last peek stopped), so one
 * socket's queue is read message by message without consuming any. The
 * process is frozen meanwhile; its own peek offset is put back.
 *
 * What must stay true:
 *  - reading a queue changes nothing the process reads (but see
 *    docs/COVERAGE.md: a zero-length datagram once peeked is skipped by
 *    later peeks, the kernel marks it);
 *  - a restore step that fails leaves no socket file of ours at a path
 *    and puts back the file it moved aside; our working directory is
 *    ours again.
 */
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>

#include "engine/fds/fds-int.h"

/* Each peek at an offset walks the queue from its head (the kernel's
 * __skb_try_recv_from_queue): reading n messages costs n^2/2 steps, all
 * while the process is frozen. 4096 messages of 1 KiB: about 120 ms
 * (docs/PERFORMANCE.md); a queue of default buffers holds a few hundred. */
#define MAX_MSGS 4096u
#define MAX_MSG (4u << 20)
#define MAX_QUEUED (64u << 20) /* what fds-socket.c's parser takes */

static const size_t sun_off = offsetof(struct sockaddr_un, sun_path);

static bool is_path(const struct sockaddr_storage *ss, socklen_t len)
{
	const struct sockaddr_un *un = (const void *)ss;

	return len > sun_off && un->sun_path[0];
}

static void fmt_name(const struct sockaddr_storage *ss, socklen_t len, char *buf, size_t n)
{
	const struct sockaddr_un *un = (const void *)ss;

	if (len <= sun_off)
		snprintf(buf, n, "(unnamed)");
	else if (un->sun_path[0])
		snprintf(buf, n, "%.*s", (int)strnlen(un->sun_path, len - sun_off), un->sun_path);
	else
		snprintf(buf, n, "@%.*s", (int)(len - sun_off - 1), un->sun_path + 1);
}

static const char *type_word(int type)
{
	return type == SOCK_STREAM ? "stream" : type == SOCK_SEQPACKET ? "seqpacket" : "dgram";
}

/* Closes what SCM_RIGHTS handed us; true when there was any. */
static bool drop_rights(struct msghdr *mh)
{
	bool any = (mh->msg_flags & MSG_CTRUNC) != 0;

	for (struct cmsghdr *c = CMSG_FIRSTHDR(mh); c; c = CMSG_NXTHDR(mh, c))
		if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
			int *fds = (int *)CMSG_DATA(c);
			size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
			for (size_t i = 0; i < k; i++)
				close(fds[i]);
			any = true;
		}
	return any;
}

static int peek_one(int fd, void *buf, size_t len, bool *rights)
{
	/* room for SCM_CREDENTIALS and a full SCM_RIGHTS (SCM_MAX_FD) */
	_Alignas(struct cmsghdr) char ctl[CMSG_SPACE(sizeof(struct ucred)) + CMSG_SPACE(sizeof(int) * 253)];
	struct iovec iov = { .iov_base = buf, .iov_len = len };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl, .msg_controllen = sizeof(ctl) };
	ssize_t n = recvmsg(fd, &mh, MSG_PEEK | MSG_DONTWAIT | MSG_TRUNC | MSG_CMSG_CLOEXEC);

	if (n < 0)
		return negerrno();
	*rights = drop_rights(&mh);
	return n > (ssize_t)len ? -EMSGSIZE : (int)n;
}

int fds_unix_peek(struct fd_entry *e, bool checking)
{
	_cleanup_free_ char *buf = NULL;
	_cleanup_free_ uint32_t *lens = NULL;
	_cleanup_free_ char *data = NULL;
	size_t n = 0, total = 0, cap = 0;
	int old = -1, zero = 0, v = 0, r;
	socklen_t ol = sizeof(old);
	bool rights = false;

	if (getsockopt(e->dupfd, SOL_SOCKET, SO_PASSCRED, &v, &(socklen_t){ sizeof(v) }) == 0)
		e->passcred = v != 0;
	buf = malloc(MAX_MSG);
	if (!buf)
		return -ENOMEM;
	if (checking) {
		/* The process runs: look at the first message for descriptors,
		 * keep nothing; not when it peeks at an offset of its own,
		 * which our peek would move (the frozen capture tells). */
		if (getsockopt(e->dupfd, SOL_SOCKET, SO_PEEK_OFF, &old, &ol) == 0 && old >= 0)
			return 0;
		r = peek_one(e->dupfd, buf, MAX_MSG, &rights);
		if (r < 0 && r != -EAGAIN && r != -EMSGSIZE)
			return err_set(r, "fd %d: cannot peek its queued messages", e->fd);
		goto out_rights;
	}
	if (getsockopt(e->dupfd, SOL_SOCKET, SO_PEEK_OFF, &old, &ol) < 0 ||
	    setsockopt(e->dupfd, SOL_SOCKET, SO_PEEK_OFF, &zero, sizeof(zero)) < 0)
		return err_set(negerrno(), "fd %d: SO_PEEK_OFF: cannot read its queued messages", e->fd);
	for (;;) {
		bool rt = false;
		r = peek_one(e->dupfd, buf, MAX_MSG, &rt);
		rights |= rt;
		if (r == -EAGAIN) {
			r = 0;
			break;
		}
		if (r < 0 || rights)
			break;
		if (n == MAX_MSGS || total + (size_t)r > MAX_QUEUED) {
			r = -E2BIG;
			break;
		}
		if (!(n & (n + 1)) || !lens) {
			uint32_t *nl = realloc(lens, (2 * n + 1) * sizeof(*nl));
			if (!nl) {
				r = -ENOMEM;
				break;
			}
			lens = nl;
		}
		if (total + (size_t)r + 1 > cap) {
			size_t want = MAX(2 * cap, total + (size_t)r + 1);
			char *nd = realloc(data, want);
			if (!nd) {
				r = -ENOMEM;
				break;
			}
			data = nd;
			cap = want;
		}
		memcpy(data + total, buf, (size_t)r);
		total += (size_t)r;
		lens[n++] = (uint32_t)r;
	}
	/* The process's own offset (-1: off) is its again. */
	if (setsockopt(e->dupfd, SOL_SOCKET, SO_PEEK_OFF, &old, sizeof(old)) < 0 && r >= 0)
		r = err_set(negerrno(), "fd %d: cannot put its SO_PEEK_OFF back", e->fd);
	if (r >= 0 && !rights && fault_hit(FAULT_ENGINE_UNIX_PEEK))
		return err_set(-EIO, "fd %d: reading its queued messages (injected)", e->fd);
	if (r == -E2BIG)
		return err_set(-EOPNOTSUPP,
			       "fd %d: more than %u messages or %u MiB queued in a Unix %s socket: not supported", e->fd,
			       MAX_MSGS, MAX_QUEUED >> 20, type_word(e->type));
	if (r == -EMSGSIZE)
		return err_set(-EOPNOTSUPP, "fd %d: a message over %u bytes queued in a Unix %s socket: not supported",
			       e->fd, MAX_MSG, type_word(e->type));
	if (r < 0 && !rights)
		return err_set(r, "fd %d: cannot peek its queued messages", e->fd);
out_rights:
	if (rights)
		return err_set(-EOPNOTSUPP, "fd %d: descriptors queued in a Unix socket: not supported", e->fd);
	if (checking)
		return 0;
	e->data = TAKE_PTR(data);
	e->data_len = total;
	e->msgs = TAKE_PTR(lens);
	e->n_msgs = n;
	return 0;
}

int fds_unix_name(struct fd_image *img, struct fd_entry *e, uint64_t vfs_ino, uint64_t vfs_dev)
{
	const struct sockaddr_un *un = (const void *)&e->addr;
	char name[sizeof(un->sun_path) + 1], at[PATH_MAX + sizeof(name) + 1], cwd[PATH_MAX], proc[64];
	struct stat st;
	bool there;
	ssize_t k;

	if (!is_path(&e->addr, e->addrlen))
		return 0;
	snprintf(name, sizeof(name), "%.*s", (int)strnlen(un->sun_path, e->addrlen - sun_off), un->sun_path);
	if (name[0] == '/') {
		snprintf(at, sizeof(at), "%s", name);
	} else {
		/* bind("sock") in some directory: only the name is kept, as
		 * given. The process's cwd is where it is looked for. */
		snprintf(proc, sizeof(proc), "/proc/%d/cwd", img->pid);
		k = readlink(proc, cwd, sizeof(cwd) - 1);
		if (k <= 0 || cwd[0] != '/')
			return err_set(k < 0 ? negerrno() : -EIO, "fd %d: cannot read the working directory of pid %d",
				       e->fd, img->pid);
		cwd[k] = 0;
		snprintf(at, sizeof(at), "%s/%s", cwd, name);
	}
	/* An accepted socket answers with its listener's name but has no
	 * socket file of its own: its name is made again for a moment only. */
	if (!vfs_ino) {
		if (name[0] != '/' && !(e->dir = strdup(cwd)))
			return -ENOMEM;
		return 0;
	}
	there = lstat(at, &st) == 0 && S_ISSOCK(st.st_mode) && st.st_ino == vfs_ino &&
		major(st.st_dev) == (vfs_dev >> 20) && minor(st.st_dev) == (vfs_dev & 0xfffff);
	if (name[0] != '/') {
		if (!there)
			return err_set(-EOPNOTSUPP,
				       "fd %d: Unix %s socket bound to relative path %s, not found in the working "
				       "directory %s: not supported",
				       e->fd, type_word(e->type), name, cwd);
		return (e->dir = strdup(cwd)) ? 0 : -ENOMEM;
	}
	if (there)
		return 0;
	/* Deleted since the bind: made again at its path and unlinked, so
	 * its directory must still be there. */
	char dir[sizeof(name)];
	snprintf(dir, sizeof(dir), "%s", name);
	if (stat(dirname(dir), &st) < 0 || !S_ISDIR(st.st_mode))
		return err_set(-EOPNOTSUPP,
			       "fd %d: Unix %s socket bound to %s, deleted with its directory: not supported", e->fd,
			       type_word(e->type), name);
	e->deleted = true;
	return 0;
}

void fds_unix_print(const struct fd_entry *e, struct fds_buf *b)
{
	if (e->dir)
		fds_put_path(b, "dir", e->dir, strlen(e->dir));
	if (e->deleted)
		fds_printf(b, " deleted=1");
	if (e->passcred)
		fds_printf(b, " passcred=1");
	if (e->n_msgs) {
		fds_printf(b, " msgs=");
		for (size_t i = 0; i < e->n_msgs; i++)
			fds_printf(b, "%s%u", i ? "," : "", e->msgs[i]);
	}
}

int fds_unix_parse(struct fd_entry *e, struct fd_line *l)
{
	const char *v;
	uint64_t sum = 0;
	int r;

	if (fds_kv_has(l, "dir")) {
		if ((r = fds_kv_path(l, "dir", &e->dir)) < 0)
			return r;
		if (e->dir[0] != '/')
			return fds_bad(l, "dir=%s: not an absolute path", e->dir);
	}
	if (fds_kv_has(l, "deleted") && (r = fds_kv_bool(l, "deleted", &e->deleted)) < 0)
		return r;
	if (fds_kv_has(l, "passcred") && (r = fds_kv_bool(l, "passcred", &e->passcred)) < 0)
		return r;
	if (e->deleted && (!is_path(&e->addr, e->addrlen) || e->dir))
		return fds_bad(l, "deleted=1 needs an absolute path=");
	v = fds_kv(l, "msgs");
	if (!v)
		return 0;
	if (e->type == SOCK_STREAM)
		return fds_bad(l, "msgs= on a stream socket");
	for (const char *p = v; *p;) {
		char *end;
		errno = 0;
		unsigned long n = strtoul(p, &end, 10);
		if (errno || end == p || n > MAX_MSG || (*end && *end != ',') || e->n_msgs == MAX_MSGS)
			return fds_bad(l, "msgs=: not a list of message lengths");
		if (!(e->n_msgs & (e->n_msgs + 1)) || !e->msgs) {
			uint32_t *nl = realloc(e->msgs, (2 * e->n_msgs + 1) * sizeof(*nl));
			if (!nl)
				return -ENOMEM;
			e->msgs = nl;
		}
		e->msgs[e->n_msgs++] = (uint32_t)n;
		sum += n;
		p = *end ? end + 1 : end;
	}
	if (sum != e->data_len)
		return fds_bad(l, "msgs= add up to %lu bytes, queued=%lu", sum, e->data_len);
	return 0;
}

int fds_unix_refill(int fd, const struct fd_entry *e)
{
	const char *p = e->data;

	if (!e->n_msgs) {
		for (uint64_t off = 0; off < e->data_len;) {
			ssize_t n = send(fd, p + off, e->data_len - off, MSG_DONTWAIT | MSG_NOSIGNAL);
			if (n < 0)
				return negerrno();
			off += (uint64_t)n;
		}
		return 0;
	}
	for (size_t i = 0; i < e->n_msgs; i++) {
		if (i == e->n_msgs / 2 && fault_hit(FAULT_ENGINE_UNIX_REFILL))
			return -EIO;
		/* whole or not at all: a datagram is never cut */
		ssize_t n = send(fd, p, e->msgs[i], MSG_DONTWAIT | MSG_NOSIGNAL);
		if (n < 0)
			return negerrno();
		p += e->msgs[i];
	}
	return 0;
}

/* A name being bound: relative names from their directory (our working
 * directory meanwhile), a path that is taken moved aside. */
struct name {
	const struct sockaddr_storage *addr;
	socklen_t len;
	char shown[PATH_MAX];
	char path[sizeof(((struct sockaddr_un *)0)->sun_path) + 1];
	char aside[sizeof(((struct sockaddr_un *)0)->sun_path) + 32];
	int cwd;    /* ours, while in dir; -1 otherwise */
	bool made;  /* bind made a socket file at path */
};

/* Goes back: our socket file at path unlinked when drop (or always on a
 * failure), what was there put back, our working directory ours again. */
static int name_end(struct name *n, bool drop)
{
	int r = 0;

	if (n->made && drop && unlink(n->path) < 0)
		r = err_set(negerrno(), "cannot unlink socket file %s", n->shown);
	n->made = false;
	if (n->aside[0] && rename(n->aside, n->path) < 0 && r >= 0)
		r = err_set(negerrno(), "cannot put %s back from %s", n->shown, n->aside);
	n->aside[0] = 0;
	if (n->cwd >= 0) {
		if (fchdir(n->cwd) < 0 && r >= 0)
			r = err_set(negerrno(), "cannot go back to the working directory");
		close(n->cwd);
		n->cwd = -1;
	}
	return r;
}

/* A path left by a socket nobody listens on: connecting is refused. */
static bool stale(const struct name *n, int type)
{
	struct stat st;
	_cleanup_close_ int fd = -1;

	if (lstat(n->path, &st) < 0 || !S_ISSOCK(st.st_mode))
		return false;
	fd = socket(AF_UNIX, type | SOCK_CLOEXEC, 0);
	return fd >= 0 && connect(fd, (const void *)n->addr, n->len) < 0 && errno == ECONNREFUSED;
}

/* Binds fd to a (len), from dir when not NULL. A path that is taken is
 * moved aside when aside (put back by name_end), replaced when stale
 * (left by a socket that is gone). On failure nothing is left. */
static int name_bind(int fd, int type, const struct sockaddr_storage *a, socklen_t len, const char *dir, bool aside,
		     struct name *n)
{
	const struct sockaddr_un *un = (const void *)a;

	memset(n, 0, sizeof(*n));
	n->cwd = -1;
	n->addr = a;
	n->len = len;
	fmt_name(a, len, n->path, sizeof(n->path));
	if (dir && is_path(a, len))
		snprintf(n->shown, sizeof(n->shown), "%s (in %s)", n->path, dir);
	else
		snprintf(n->shown, sizeof(n->shown), "%s", n->path);
	if (!is_path(a, len))
		goto bind;
	if (un->sun_path[0] != '/') {
		if (!dir)
			return err_set(-EINVAL, "relative socket name %s without its directory", n->path);
		n->cwd = open(".", O_PATH | O_DIRECTORY | O_CLOEXEC);
		if (n->cwd < 0)
			return err_set(negerrno(), "cannot open our working directory");
		if (chdir(dir) < 0) {
			int r = err_set(negerrno(), "cannot bind %s: directory %s", n->path, dir);
			name_end(n, false);
			return r;
		}
	}
	if (aside && faccessat(AT_FDCWD, n->path, F_OK, AT_SYMLINK_NOFOLLOW) == 0) {
		snprintf(n->aside, sizeof(n->aside), "%s.ckpt-aside-%d", n->path, getpid());
		if (rename(n->path, n->aside) < 0) {
			int r = err_set(negerrno(), "cannot move %s aside", n->shown);
			n->aside[0] = 0;
			name_end(n, false);
			return r;
		}
	}
bind:
	if (bind(fd, (const void *)a, len) == 0) {
		n->made = is_path(a, len);
		return 0;
	}
	if (errno == EADDRINUSE && is_path(a, len) && stale(n, type) && unlink(n->path) == 0 &&
	    bind(fd, (const void *)a, len) == 0) {
		n->made = true;
		return 0;
	}
	int r = negerrno();
	if (r == -ENOENT && is_path(a, len))
		r = err_set(r, "cannot bind %s again: its directory is gone", n->shown);
	else
		r = err_set(r, "cannot bind %s again", n->shown);
	name_end(n, false);
	return r;
}

/* Sends e's queued messages to its own name, from a socket made for it
 * and closed (a receiver's recvfrom then names that socket: unnamed). */
static int refill_by_name(const struct fd_entry *e)
{
	_cleanup_close_ int s = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	int v = (int)MIN(e->data_len * 2 + e->n_msgs * 1024 + 65536, (uint64_t)INT_MAX / 2);

	if (s < 0)
		return negerrno();
	/* The queued bytes count against this sender's buffer until read. */
	if (setsockopt(s, SOL_SOCKET, SO_SNDBUFFORCE, &v, sizeof(v)) < 0)
		setsockopt(s, SOL_SOCKET, SO_SNDBUF, &v, sizeof(v));
	if (connect(s, (const void *)&e->addr, e->addrlen) < 0)
		return negerrno();
	return fds_unix_refill(s, e);
}

static int set_passcred(int fd, const struct fd_entry *e)
{
	int one = 1;

	return e->passcred && setsockopt(fd, SOL_SOCKET, SO_PASSCRED, &one, sizeof(one)) < 0 ? negerrno() : 0;
}

int fds_unix_open_listen(struct fd_entry *e)
{
	_cleanup_close_ int fd = socket(AF_UNIX, e->type | SOCK_CLOEXEC, 0);
	struct name n;
	int r;

	if (fd < 0)
		return err_set(negerrno(), "fd %d: socket", e->fd);
	r = name_bind(fd, e->type, &e->addr, e->addrlen, e->dir, e->deleted, &n);
	if (r < 0)
		return fds_err_prefix(r, "fd %d: Unix listener", e->fd);
	/* bind made it ours, with our umask: given back its owner and mode,
	 * or its clients (another user's) could not connect */
	if (e->has_owner && !e->deleted && (lchown(n.path, e->uid, e->gid) < 0 || chmod(n.path, e->mode) < 0)) {
		r = err_set(negerrno(), "fd %d: cannot give socket file %s back its owner %u:%u and mode 0%o", e->fd,
			    n.shown, (unsigned)e->uid, (unsigned)e->gid, e->mode);
		goto err_name;
	}
	if (listen(fd, e->backlog) < 0) {
		r = err_set(negerrno(), "fd %d: cannot listen on %s again", e->fd, n.shown);
		goto err_name;
	}
	if (fault_hit(FAULT_ENGINE_UNIX_NAME)) {
		r = err_set(-EIO, "fd %d: Unix listener %s (injected)", e->fd, n.shown);
		goto err_name;
	}
	r = name_end(&n, e->deleted);
	if (r < 0)
		return fds_err_prefix(r, "fd %d: Unix listener", e->fd);
	return TAKE_FD(fd);
err_name:
	name_end(&n, true);
	return r;
}

int fds_unix_open_dgram(struct fd_entry *e)
{
	_cleanup_close_ int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	char as[120];
	struct name n = { .cwd = -1 };
	int r;

	if (fd < 0)
		return err_set(negerrno(), "fd %d: socket", e->fd);
	if ((r = set_passcred(fd, e)) < 0)
		return err_set(r, "fd %d: SO_PASSCRED", e->fd);
	if (e->addrlen > sizeof(sa_family_t)) {
		r = name_bind(fd, SOCK_DGRAM, &e->addr, e->addrlen, e->dir, e->deleted, &n);
		if (r < 0)
			return fds_err_prefix(r, "fd %d: Unix dgram socket", e->fd);
	}
	/* Sent to its name while it has one (a deleted path is unlinked
	 * after). */
	if (e->n_msgs && (r = refill_by_name(e)) < 0) {
		r = err_set(r, "fd %d: cannot write the %zu messages queued on Unix dgram socket %s back", e->fd,
			    e->n_msgs, n.shown);
		goto err_name;
	}
	if (e->addrlen > sizeof(sa_family_t) && fault_hit(FAULT_ENGINE_UNIX_NAME)) {
		r = err_set(-EIO, "fd %d: Unix dgram socket %s (injected)", e->fd, n.shown);
		goto err_name;
	}
	r = name_end(&n, e->deleted);
	if (r < 0)
		return fds_err_prefix(r, "fd %d: Unix dgram socket", e->fd);
	if (e->peerlen) {
		fmt_name(&e->peer, e->peerlen, as, sizeof(as));
		if (connect(fd, (const void *)&e->peer, e->peerlen) < 0)
			return err_set(negerrno(), "fd %d: cannot connect Unix dgram socket to %s again", e->fd, as);
	}
	return TAKE_FD(fd);
err_name:
	name_end(&n, true);
	return r;
}

/* The end made by accept: one with a name (an accepted socket answers
 * with its listener's). When both have one, the first: a client bound
 * to a name of its own before it connected is rare, and its name comes
 * out the same either way but for a path, where the accepted end's
 * name must be free or moved aside. */
static bool accepted_side(const struct fd_entry *a, const struct fd_entry *b)
{
	(void)b;
	return a->addrlen > sizeof(sa_family_t);
}

/* A datagram pair has no listener: a named end was bound by the process
 * (bind, or autobind with SO_PASSCRED) and owns its name. Both ends are
 * made by socketpair() and each named one bound to its name again: a
 * connected Unix socket may still bind, and getpeername reads the peer's
 * name as it is when asked. */
static int dgram_pair(const struct fd_entry *a, const struct fd_entry *b, int sv[2])
{
	const struct fd_entry *end[2] = { a, b };
	struct name n;
	int r;

	if (socketpair(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, sv) < 0)
		return err_set(negerrno(), "fd %d: socketpair", a->fd);
	for (int i = 0; i < 2; i++) {
		if (end[i]->addrlen <= sizeof(sa_family_t))
			continue;
		r = name_bind(sv[i], SOCK_DGRAM, &end[i]->addr, end[i]->addrlen, end[i]->dir, end[i]->deleted, &n);
		if (r >= 0 && fault_hit(FAULT_ENGINE_UNIX_NAME)) {
			name_end(&n, true);
			r = err_set(-EIO, "fd %d: Unix dgram socket %s (injected)", end[i]->fd, n.shown);
		} else if (r >= 0) {
			r = name_end(&n, end[i]->deleted);
		}
		if (r < 0) {
			close(sv[0]);
			close(sv[1]);
			return fds_err_prefix(r, "fd %d: Unix dgram socket", end[i]->fd);
		}
	}
	return 0;
}

int fds_unix_pair(const struct fd_entry *a, const struct fd_entry *b, int sv[2])
{
	bool a_srv = accepted_side(a, b);
	const struct fd_entry *srv = a_srv ? a : b, *cli = a_srv ? b : a;
	_cleanup_close_ int l = -1, c = -1, s = -1;
	struct name ln, cn = { .cwd = -1 };
	int r;

	if (a->addrlen <= sizeof(sa_family_t) && b->addrlen <= sizeof(sa_family_t)) {
		if (socketpair(AF_UNIX, a->type | SOCK_CLOEXEC, 0, sv) < 0)
			return err_set(negerrno(), "fd %d: socketpair", a->fd);
		return 0;
	}
	if (a->type == SOCK_DGRAM)
		return dgram_pair(a, b, sv);
	l = socket(AF_UNIX, a->type | SOCK_CLOEXEC, 0);
	/* never blocks: a connect to a backlog others filled fails */
	c = socket(AF_UNIX, a->type | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (l < 0 || c < 0)
		return err_set(negerrno(), "fd %d: socket", a->fd);
	/* The client's own name first (it is bound for good); then the
	 * accepted end's, a listener's for a moment: a path in use (the
	 * restored listener's) moves aside meanwhile. */
	if (cli->addrlen > sizeof(sa_family_t)) {
		r = name_bind(c, a->type, &cli->addr, cli->addrlen, cli->dir, cli->deleted, &cn);
		if (r < 0)
			return fds_err_prefix(r, "fd %d: Unix %s socket", cli->fd, type_word(a->type));
		r = name_end(&cn, cli->deleted);
		if (r < 0)
			return r;
	}
	r = name_bind(l, a->type, &srv->addr, srv->addrlen, srv->dir, true, &ln);
	if ((r == -EADDRINUSE && !is_path(&srv->addr, srv->addrlen)) || r == -ENOENT) {
		/* The names are the listener's, not the connection's: when
		 * they cannot be taken for a moment (an abstract name held
		 * already, by a listener of the tree's shared descriptions
		 * made before this process's pairs; a directory gone), the
		 * connection is made without them rather than not at all. */
		char an[120];
		fmt_name(&srv->addr, srv->addrlen, an, sizeof(an));
		log_warn("fd %d: %s %s: its connection is made again without its names", srv->fd,
			 r == -ENOENT ? "the directory of" : "abstract name", an);
		if (socketpair(AF_UNIX, a->type | SOCK_CLOEXEC, 0, sv) < 0)
			return err_set(negerrno(), "fd %d: socketpair", a->fd);
		return 0;
	}
	if (r < 0)
		return fds_err_prefix(r, "fd %d: Unix %s socket: a listener for its connection", srv->fd,
				      type_word(a->type));
	if (listen(l, 1) < 0 || connect(c, (const void *)&srv->addr, srv->addrlen) < 0) {
		r = err_set(negerrno(), "fd %d: cannot connect to %s again", cli->fd, ln.shown);
		goto err_name;
	}
	/* Ours is queued; a client of someone else's that came by the path
	 * meanwhile is not the connection (SO_PEERCRED: not our pid) and is
	 * dropped. */
	for (int tries = 0;; tries++) {
		struct ucred uc;
		socklen_t ul = sizeof(uc);
		s = accept4(l, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
		if (s < 0 || tries == 16) {
			r = err_set(s < 0 ? negerrno() : -EAGAIN, "fd %d: cannot accept its connection through %s again",
				    srv->fd, ln.shown);
			goto err_name;
		}
		if (getsockopt(s, SOL_SOCKET, SO_PEERCRED, &uc, &ul) == 0 && uc.pid == getpid())
			break;
		close(TAKE_FD(s));
	}
	/* O_NONBLOCK was ours: the restore sets the recorded flags */
	if (fcntl(s, F_SETFL, fcntl(s, F_GETFL) & ~O_NONBLOCK) < 0 ||
	    fcntl(c, F_SETFL, fcntl(c, F_GETFL) & ~O_NONBLOCK) < 0) {
		r = err_set(negerrno(), "fd %d: F_SETFL", srv->fd);
		goto err_name;
	}
	if (fault_hit(FAULT_ENGINE_UNIX_NAME)) {
		r = err_set(-EIO, "fd %d: connection through %s (injected)", srv->fd, ln.shown);
		goto err_name;
	}
	close(TAKE_FD(l));
	r = name_end(&ln, true);
	if (r < 0)
		return r;
	sv[0] = a_srv ? TAKE_FD(s) : TAKE_FD(c);
	sv[1] = a_srv ? TAKE_FD(c) : TAKE_FD(s);
	return 0;
err_name:
	name_end(&ln, true);
	return r;
}

bool fds_unix_early(const struct fd_entry *e)
{
	return e->kind == FD_KIND_UNIX_PAIR && e->addrlen > sizeof(sa_family_t);
}
