/*
 * engine/fds/fds-pipe.c: anonymous pipes and named FIFOs.
 *
 * Both ends of one pipe carry the pipe's inode number as `pipe=`. The
 * bytes queued in a pipe are copied at capture with tee(2) from our
 * duplicate of the read end into a pipe of ours: tee does not consume, so
 * the process reads them again when it runs. They are saved on the read
 * end's line and written back into the new pipe at restore, whose capacity
 * is set to the old one.
 *
 * A pipe whose other end lives outside the process (a shell pipeline, a
 * parent reading our stdout) cannot be rejoined: a read end gets its
 * queued bytes and then end of file; a write end becomes /dev/null, so
 * that writes succeed and go nowhere instead of raising SIGPIPE.
 *
 * A FIFO removed while open is made again at a temporary name beside
 * where it was, opened, given its mode and owner, and removed; its lines
 * open it through our read-write descriptor, its bytes are written back.
 * In a tree, all its lines move to the shared image when several
 * processes hold it (fds-share.c), so that it is made once.
 *
 * A named FIFO is reopened by its path, which must still be a FIFO (the
 * same inode, unless the restore accepts changed files). Its queued bytes are
 * saved on the first line of that FIFO and written back only if the FIFO
 * is empty at restore: a FIFO is shared with whoever else has it open,
 * and bytes still in it are the same bytes. While the descriptors are
 * opened, a read-write descriptor of ours keeps the FIFO from blocking
 * an open or dropping its bytes; it is closed at the end.
 */
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <sys/ioctl.h>
#include <sys/stat.h>

#include "engine/fds/fds-int.h"

int fds_pipe_classify(struct fd_image *img, struct fd_entry *e)
{
	if (!S_ISFIFO(e->st->st_mode))
		return 0;
	if (e->link[0] == '/' && e->st->st_nlink == 0 && !(e->flags & O_PATH)) {
		/* removed while open: made again at restore */
		size_t len = strlen(e->link), sl = strlen(" (deleted)");
		if (len >= sl && !strcmp(e->link + len - sl, " (deleted)"))
			len -= sl;
		e->kind = FD_KIND_FIFO;
		e->deleted = true;
		e->id = e->ino = e->st->st_ino;
		e->mode = e->st->st_mode & 07777;
		e->has_owner = true;
		e->uid = e->st->st_uid;
		e->gid = e->st->st_gid;
		e->path = strndup(e->link, len);
		return e->path ? 1 : -ENOMEM;
	}
	if (e->link[0] == '/') {
		struct stat here;
		if (stat(e->link, &here) < 0 || here.st_dev != e->st->st_dev || here.st_ino != e->st->st_ino)
			return err_set(-EOPNOTSUPP, "fd %d: FIFO %s is not reachable by its path from here: not supported",
				       e->fd, e->link);
		if (e->flags & O_PATH)
			return 0;
		e->kind = FD_KIND_FIFO;
		e->id = e->st->st_ino;
		e->ino = e->st->st_ino;
		e->path = strdup(e->link);
		return e->path ? 1 : -ENOMEM;
	}
	if (strncmp(e->link, "pipe:[", 6) != 0)
		return 0;
	switch (e->flags & O_ACCMODE) {
	case O_RDONLY:
		e->kind = FD_KIND_PIPE_R;
		break;
	case O_WRONLY:
		e->kind = FD_KIND_PIPE_W;
		break;
	default:
		e->kind = FD_KIND_PIPE_RW; /* reopened through /proc/PID/fd */
		break;
	}
	e->id = e->st->st_ino;
	return 1;
}

static bool is_pipe(const struct fd_entry *e)
{
	return e->kind == FD_KIND_PIPE_R || e->kind == FD_KIND_PIPE_W || e->kind == FD_KIND_PIPE_RW;
}

static bool reads(const struct fd_entry *e)
{
	return e->kind == FD_KIND_PIPE_R || e->kind == FD_KIND_PIPE_RW;
}

static bool writes(const struct fd_entry *e)
{
	return e->kind == FD_KIND_PIPE_W || e->kind == FD_KIND_PIPE_RW;
}

/* Whether e's pipe has, in img, several descriptions of one end (reopened
 * through /proc/PID/fd) or one open read-write. Its lines are then all
 * opened through /proc/self/fd from a pipe its first line makes, which
 * the restore holds both ends of until the table is built. */
static bool reopened(struct fd_image *img, const struct fd_entry *e)
{
	size_t nr = 0, nw = 0;

	for (size_t i = 0; i < img->n; i++) {
		const struct fd_entry *o = &img->e[i];
		if (!is_pipe(o) || o->id != e->id)
			continue;
		if (o->kind == FD_KIND_PIPE_RW)
			return true;
		nr += o->kind == FD_KIND_PIPE_R;
		nw += o->kind == FD_KIND_PIPE_W;
	}
	return nr > 1 || nw > 1;
}

/* Of e's pipe in img: the first line, and the first that reads (it holds
 * the queued bytes; NULL: none reads). */
static struct fd_entry *pipe_first(struct fd_image *img, const struct fd_entry *e, bool reader)
{
	for (size_t i = 0; i < img->n; i++)
		if (is_pipe(&img->e[i]) && img->e[i].id == e->id && (!reader || reads(&img->e[i])))
			return &img->e[i];
	return NULL;
}

/* For a reopened pipe: whether e's other side is in img (a reader needs a
 * writer, a writer a reader; read-write has both). */
static bool reopened_peer_in(struct fd_image *img, const struct fd_entry *e)
{
	if (e->kind == FD_KIND_PIPE_RW)
		return true;
	for (size_t i = 0; i < img->n; i++) {
		const struct fd_entry *o = &img->e[i];
		if (o != e && is_pipe(o) && o->id == e->id && (e->kind == FD_KIND_PIPE_R ? writes(o) : reads(o)))
			return true;
	}
	return false;
}

/* The other end of e's pipe in the table, NULL if outside the process;
 * -EOPNOTSUPP through *err when an end has several descriptions. */
static struct fd_entry *partner(struct fd_image *img, struct fd_entry *e, int *err)
{
	struct fd_entry *found = NULL;

	*err = 0;
	for (size_t i = 0; i < img->n; i++) {
		struct fd_entry *o = &img->e[i];
		if (o == e || !is_pipe(o) || o->id != e->id)
			continue;
		if (o->kind == e->kind) {
			/* Two descriptions of one end: a pipe reopened through
			 * /proc/PID/fd. Rare; restoring it would need a FIFO. */
			*err = -EOPNOTSUPP;
			return NULL;
		}
		if (found) {
			*err = -EOPNOTSUPP;
			return NULL;
		}
		found = o;
	}
	return found;
}

/* Copies the bytes queued in the pipe read through rfd without consuming
 * them. */
static int peek_pipe(struct fd_entry *e, int rfd, int capacity, int queued)
{
	_cleanup_close_ int pr = -1, pw = -1;
	int p[2];
	ssize_t n;

	if (pipe2(p, O_CLOEXEC | O_NONBLOCK) < 0)
		return negerrno();
	pr = p[0];
	pw = p[1];
	/* As many slots as the source: tee duplicates buffers, not bytes. */
	if (fcntl(pw, F_SETPIPE_SZ, capacity) < 0)
		return negerrno();
	n = tee(rfd, pw, (size_t)queued, SPLICE_F_NONBLOCK);
	if (n < 0)
		return negerrno();
	/* tee always starts at the head, so it must take everything at once. */
	if (n != queued)
		return -EAGAIN;
	e->data = malloc((size_t)queued);
	if (!e->data)
		return -ENOMEM;
	n = read(pr, e->data, (size_t)queued);
	if (n != queued)
		return n < 0 ? negerrno() : -EIO;
	e->data_len = (uint64_t)queued;
	return 0;
}

/* The first line of e's FIFO: the one that holds its bytes. */
static struct fd_entry *fifo_owner(struct fd_image *img, struct fd_entry *e)
{
	for (size_t i = 0; i < img->n; i++)
		if (img->e[i].kind == FD_KIND_FIFO && img->e[i].id == e->id)
			return &img->e[i];
	return e;
}

static int capture_fifo(struct fd_image *img, struct fd_entry *e)
{
	_cleanup_close_ int rfd = -1;
	int capacity, queued = 0, r;
	char proc[64];

	capacity = fcntl(e->dupfd, F_GETPIPE_SZ);
	if (capacity < 0)
		return err_set(negerrno(), "fd %d: F_GETPIPE_SZ", e->fd);
	e->size = (uint64_t)capacity;
	if (fifo_owner(img, e) != e || img->checking)
		return 0;
	if ((e->flags & O_ACCMODE) == O_WRONLY) {
		/* A reader of our own, to peek through; O_NONBLOCK never
		 * waits for a writer. */
		snprintf(proc, sizeof(proc), "/proc/%d/fd/%d", img->pid, e->fd);
		rfd = open(proc, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
		if (rfd < 0)
			return err_set(negerrno(), "fd %d: cannot open FIFO %s to read its bytes", e->fd, e->path);
	}
	if (ioctl(rfd >= 0 ? rfd : e->dupfd, FIONREAD, &queued) < 0)
		return err_set(negerrno(), "fd %d: FIONREAD", e->fd);
	if (queued == 0)
		return 0;
	r = peek_pipe(e, rfd >= 0 ? rfd : e->dupfd, capacity, queued);
	if (r < 0)
		return err_set(r, "fd %d: FIFO %s: cannot copy its %d queued bytes", e->fd, e->path, queued);
	return 0;
}

int fds_pipe_capture(struct fd_image *img, struct fd_entry *e)
{
	int capacity, queued = 0, err, r;

	if (e->kind == FD_KIND_FIFO)
		return capture_fifo(img, e);
	if (reopened(img, e)) {
		e->peer_in = reopened_peer_in(img, e);
	} else {
		struct fd_entry *o = partner(img, e, &err);
		if (err)
			return err_set(err, "fd %d: %s: its ends do not match", e->fd, e->link);
		e->peer_in = o != NULL;
	}
	capacity = fcntl(e->dupfd, F_GETPIPE_SZ);
	if (capacity < 0)
		return err_set(negerrno(), "fd %d: F_GETPIPE_SZ", e->fd);
	e->size = (uint64_t)capacity;
	/* the bytes once, on the first line that reads */
	if (!reads(e) || pipe_first(img, e, true) != e)
		return 0;
	/* The running process may read meanwhile: only a frozen one is peeked. */
	if (img->checking)
		return 0;
	if (ioctl(e->dupfd, FIONREAD, &queued) < 0)
		return err_set(negerrno(), "fd %d: FIONREAD", e->fd);
	if (queued == 0)
		return 0;
	r = peek_pipe(e, e->dupfd, capacity, queued);
	if (r < 0)
		return err_set(r, "fd %d: %s: cannot copy its %d queued bytes", e->fd, e->link, queued);
	return 0;
}

void fds_pipe_print(struct fd_entry *e, struct fds_buf *b)
{
	if (e->kind == FD_KIND_FIFO) {
		fds_put_path(b, "path", e->path, strlen(e->path));
		fds_printf(b, " ino=%lu size=%lu queued=%lu", e->ino, e->size, e->data_len);
		if (e->deleted)
			fds_printf(b, " deleted=1 mode=0%o uid=%u gid=%u", e->mode, e->uid, e->gid);
		return;
	}
	fds_printf(b, " pipe=%lu size=%lu peer=%s", e->id, e->size, e->peer_in ? "in" : "out");
	if (reads(e))
		fds_printf(b, " queued=%lu", e->data_len);
}

int fds_pipe_parse(struct fd_entry *e, struct fd_line *l)
{
	const char *peer;
	int r;

	if (e->kind == FD_KIND_FIFO) {
		if ((r = fds_kv_path(l, "path", &e->path)) < 0 || (r = fds_kv_u64(l, "ino", &e->ino)) < 0 ||
		    (r = fds_kv_u64(l, "size", &e->size)) < 0 || (r = fds_kv_u64(l, "queued", &e->data_len)) < 0)
			return r;
		if (e->path[0] != '/')
			return fds_bad(l, "path=%s: not an absolute path", e->path);
		if (e->size < 4096 || e->size > (1u << 30) || e->data_len > e->size)
			return fds_bad(l, "size=%lu queued=%lu: not a FIFO's", e->size, e->data_len);
		e->id = e->ino;
		if (fds_kv_has(l, "deleted")) {
			uint64_t uid, gid;
			if ((r = fds_kv_bool(l, "deleted", &e->deleted)) < 0 || (r = fds_kv_mode(l, &e->mode)) < 0 ||
			    (r = fds_kv_u64(l, "uid", &uid)) < 0 || (r = fds_kv_u64(l, "gid", &gid)) < 0)
				return r;
			if (uid >= UINT32_MAX || gid >= UINT32_MAX)
				return fds_bad(l, "uid= or gid= out of range");
			e->has_owner = true;
			e->uid = (uid_t)uid;
			e->gid = (gid_t)gid;
		}
		return 0;
	}

	if ((r = fds_kv_u64(l, "pipe", &e->id)) < 0 || (r = fds_kv_u64(l, "size", &e->size)) < 0 ||
	    (r = fds_kv_req(l, "peer", &peer)) < 0)
		return r;
	if (strcmp(peer, "in") && strcmp(peer, "out"))
		return fds_bad(l, "peer=%s: not in or out", peer);
	e->peer_in = peer[0] == 'i';
	if (e->size < 4096 || e->size > (1u << 30))
		return fds_bad(l, "size=%lu: not a pipe capacity", e->size);
	if (reads(e)) {
		if ((r = fds_kv_u64(l, "queued", &e->data_len)) < 0)
			return r;
		if (e->data_len > e->size)
			return fds_bad(l, "queued=%lu is above the capacity %lu", e->data_len, e->size);
	}
	if ((e->flags & O_ACCMODE) !=
	    (e->kind == FD_KIND_PIPE_R ? O_RDONLY : e->kind == FD_KIND_PIPE_W ? O_WRONLY : O_RDWR))
		return fds_bad(l, "flags=0%o: access mode does not match %s", e->flags, l->kind);
	return 0;
}

int fds_pipe_validate(struct fd_image *img)
{
	for (size_t i = 0; i < img->n; i++) {
		struct fd_entry *e = &img->e[i];
		int err;
		if (e->kind == FD_KIND_FIFO && e->data_len && fifo_owner(img, e) != e)
			return err_set(-EBADMSG, "fds: fd %d: FIFO bytes on a line but the first of its FIFO", e->fd);
		if (!is_pipe(e))
			continue;
		if (reopened(img, e)) {
			struct fd_entry *f = pipe_first(img, e, false);
			if (e->peer_in != reopened_peer_in(img, e) || f->size != e->size ||
			    (e->data_len && pipe_first(img, e, true) != e))
				return err_set(-EBADMSG, "fds: fd %d: pipe=%lu: its descriptions do not match", e->fd,
					       e->id);
			continue;
		}
		struct fd_entry *o = partner(img, e, &err);
		if (err || (o != NULL) != e->peer_in || (o && o->size != e->size))
			return err_set(-EBADMSG, "fds: fd %d: pipe=%lu: its ends do not match", e->fd, e->id);
	}
	return 0;
}

static int fill(int wfd, const void *data, uint64_t len)
{
	/* Non-blocking: bytes that do not fit are an error, not a hang. */
	int fl = fcntl(wfd, F_GETFL);

	if (fl < 0 || fcntl(wfd, F_SETFL, fl | O_NONBLOCK) < 0)
		return negerrno();
	for (uint64_t off = 0; off < len;) {
		ssize_t n = write(wfd, (const char *)data + off, len - off);
		if (n < 0)
			return negerrno();
		off += (uint64_t)n;
	}
	return fcntl(wfd, F_SETFL, fl) < 0 ? negerrno() : 0;
}

int fds_pipe_check_host(struct fd_image *img, struct fd_entry *e)
{
	struct stat st;

	/* Not an error, but not the same either: say so where the restore is
	 * decided. */
	if (e->kind == FD_KIND_PIPE_W && !e->peer_in)
		log_warn("fd %d: pipe whose reader was outside the process: restored as /dev/null", e->fd);
	if (e->kind == FD_KIND_PIPE_R && !e->peer_in)
		log_warn("fd %d: pipe whose writer was outside the process: restored with its %lu queued "
			 "bytes, then end of file",
			 e->fd, e->data_len);
	if (e->kind != FD_KIND_FIFO || e->deleted)
		return 0;
	if (stat(e->path, &st) < 0)
		return err_set(negerrno(), "fd %d: FIFO %s is gone", e->fd, e->path);
	if (!S_ISFIFO(st.st_mode))
		return err_set(-ESTALE, "fd %d: %s is no longer a FIFO", e->fd, e->path);
	if (st.st_ino != e->ino && !img->accept_changed)
		return err_set(-ESTALE,
			       "fd %d: FIFO %s was replaced since the dump (inode %lu, was %lu); " ENGINE_ACCEPT_HINT,
			       e->fd, e->path, st.st_ino, e->ino);
	return 0;
}

/* A removed FIFO made again: a FIFO at a temporary name beside where it
 * was (in /tmp when that directory is gone too), opened read-write (never
 * blocks), given its mode and owner and removed. The process's
 * descriptors then open it through /proc/self/fd. */
static int make_deleted_fifo(struct fd_entry *e)
{
	char prefix[PATH_MAX - 8], tmp[PATH_MAX];
	int h = -1, r = fds_temp_beside(e->path, prefix, sizeof(prefix));

	if (r < 0)
		return err_set(r, "fd %d: deleted FIFO %s: no name to make it again: %s", e->fd, e->path, strerror(-r));
	for (int i = 0;; i++) {
		uint64_t rnd = (uint64_t)now_ns() ^ ((uint64_t)getpid() << 32) ^ (uint64_t)i * 0x9e3779b97f4a7c15ull;
		snprintf(tmp, sizeof(tmp), "%s%06lx", prefix, (unsigned long)(rnd & 0xffffff));
		if (mkfifo(tmp, 0600) == 0)
			break;
		if (errno != EEXIST || i == 100)
			return err_set(negerrno(), "fd %d: deleted FIFO %s: cannot make it again as %s: %m", e->fd,
				       e->path, tmp);
	}
	h = open(tmp, O_RDWR | O_NONBLOCK | O_CLOEXEC);
	if (h < 0) {
		r = err_set(negerrno(), "fd %d: deleted FIFO %s: cannot open %s: %m", e->fd, e->path, tmp);
		goto out_unlink;
	}
	if (fault_hit(FAULT_ENGINE_DELETED_FIFO)) {
		r = err_set(-EIO, "fd %d: deleted FIFO %s: made again as %s: injected fault", e->fd, e->path, tmp);
		goto out_close;
	}
	/* the owner first: a change of owner clears set-id bits */
	if (e->has_owner && fchown(h, e->uid, e->gid) < 0) {
		r = err_set(negerrno(), "fd %d: deleted FIFO %s: cannot give it its owner %u:%u: %m", e->fd, e->path,
			    e->uid, e->gid);
		goto out_close;
	}
	if (fchmod(h, e->mode) < 0) {
		r = err_set(negerrno(), "fd %d: deleted FIFO %s: fchmod 0%o: %m", e->fd, e->path, e->mode);
		goto out_close;
	}
	if (unlink(tmp) < 0) {
		r = err_set(negerrno(), "fd %d: deleted FIFO %s: cannot remove %s again: %m", e->fd, e->path, tmp);
		goto out_close;
	}
	return h;
out_close:
	close(h);
out_unlink:
	unlink(tmp);
	return r;
}

static int open_fifo(struct fd_image *img, struct fd_entry *e, int above)
{
	struct fd_entry *owner = fifo_owner(img, e);
	int fd, r, queued = 0;
	char proc[64];

	if (owner->tmp_other < 0) {
		/* Read-write: never blocks, and keeps a reader and a writer
		 * while the process's own ends are opened. */
		_cleanup_close_ int h = e->deleted ? make_deleted_fifo(e)
						   : open(e->path, O_RDWR | O_NONBLOCK | O_CLOEXEC);
		if (h < 0 && e->deleted)
			return h;
		if (h < 0)
			return err_set(negerrno(), "fd %d: cannot open FIFO %s", e->fd, e->path);
		r = fds_pipe_check_host(img, e);
		if (r < 0)
			return r;
		if (fcntl(h, F_GETPIPE_SZ) < (int)e->size && fcntl(h, F_SETPIPE_SZ, (int)e->size) < 0)
			return err_set(negerrno(), "fd %d: cannot set the FIFO capacity to %lu", e->fd, e->size);
		if (ioctl(h, FIONREAD, &queued) < 0)
			return err_set(negerrno(), "fd %d: FIONREAD", e->fd);
		if (owner->data_len && queued == 0) {
			r = fill(h, owner->data, owner->data_len);
			if (r < 0)
				return err_set(r, "fd %d: cannot refill FIFO %s", e->fd, e->path);
		}
		r = fds_move_above(TAKE_FD(h), above);
		if (r < 0)
			return err_set(r, "fd %d: cannot move our FIFO descriptor", e->fd);
		owner->tmp_other = r;
	}
	/* a removed one has no path: through our read-write descriptor */
	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", owner->tmp_other);
	fd = open(e->deleted ? proc : e->path, (int)(e->flags & ~(unsigned)(O_CREAT | O_EXCL | O_TRUNC)) | O_NONBLOCK |
							  O_CLOEXEC);
	if (fd < 0)
		return err_set(negerrno(), "fd %d: cannot open FIFO %s", e->fd, e->path);
	return fd;
}

/* A line of a reopened pipe: the first line makes the pipe and keeps
 * both its ends (tmp_other the read end, tmp_peer the write end, closed
 * once the table is built); each line opens it anew through them with
 * its access mode, O_NONBLOCK so that no open waits (its own status
 * flags are set after). */
static int open_reopened(struct fd_image *img, struct fd_entry *e, int above)
{
	struct fd_entry *first = pipe_first(img, e, false), *reader = pipe_first(img, e, true);
	char proc[64];
	int p[2], r;

	if (!reader) {
		/* writers only, their reader outside: as for one */
		r = open("/dev/null", O_WRONLY | O_CLOEXEC);
		return r < 0 ? err_set(negerrno(), "fd %d: cannot open /dev/null", e->fd) : r;
	}
	if (first->tmp_other < 0) {
		if (pipe2(p, O_CLOEXEC) < 0)
			return err_set(negerrno(), "fd %d: pipe2", e->fd);
		if (fcntl(p[1], F_SETPIPE_SZ, (int)e->size) < 0) {
			r = err_set(negerrno(), "fd %d: cannot set the pipe capacity to %lu", e->fd, e->size);
			goto fail;
		}
		if (reader->data_len && (r = fill(p[1], reader->data, reader->data_len)) < 0) {
			r = err_set(r, "fd %d: cannot refill %lu queued bytes", e->fd, reader->data_len);
			goto fail;
		}
		/* moved apart before either is kept, so that a failure
		 * leaves neither */
		int rd = fds_move_above(p[0], above);
		int wr = fds_move_above(p[1], above);
		if (rd < 0 || wr < 0) {
			if (rd >= 0)
				close(rd);
			if (wr >= 0)
				close(wr);
			return err_set(rd < 0 ? rd : wr, "fd %d: cannot move the pipe above %d", e->fd, above);
		}
		first->tmp_other = rd;
		first->tmp_peer = wr;
	}
	if (fault_hit(FAULT_ENGINE_PIPE_REOPEN))
		return err_set(-EIO, "fd %d: pipe:[%lu]: cannot open another description of it: injected fault",
			       e->fd, e->id);
	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", reads(e) ? first->tmp_other : first->tmp_peer);
	r = open(proc, (int)(e->flags & O_ACCMODE) | O_NONBLOCK | O_CLOEXEC);
	if (r < 0)
		return err_set(negerrno(), "fd %d: pipe:[%lu]: cannot open another description of it: %m", e->fd,
			       e->id);
	return r;
fail:
	close(p[0]);
	close(p[1]);
	return r;
}

int fds_pipe_open(struct fd_image *img, struct fd_entry *e, int above)
{
	struct fd_entry *o = NULL, *reader;
	int p[2], err, r, mine, other;

	if (e->kind == FD_KIND_FIFO)
		return open_fifo(img, e, above);
	if (reopened(img, e))
		return open_reopened(img, e, above);

	if (e->peer_in) {
		o = partner(img, e, &err);
		if (!o)
			return err_set(-EBADMSG, "fd %d: pipe=%lu: the other end is missing", e->fd, e->id);
		if (o->tmp_other >= 0)
			return TAKE_FD(o->tmp_other);
	} else if (e->kind == FD_KIND_PIPE_W) {
		r = open("/dev/null", O_WRONLY | O_CLOEXEC);
		return r < 0 ? err_set(negerrno(), "fd %d: cannot open /dev/null", e->fd) : r;
	}

	if (pipe2(p, O_CLOEXEC) < 0)
		return err_set(negerrno(), "fd %d: pipe2", e->fd);
	if (fcntl(p[1], F_SETPIPE_SZ, (int)e->size) < 0) {
		r = err_set(negerrno(), "fd %d: cannot set the pipe capacity to %lu", e->fd, e->size);
		goto fail;
	}
	reader = e->kind == FD_KIND_PIPE_R ? e : o;
	if (reader->data_len) {
		r = fill(p[1], reader->data, reader->data_len);
		if (r < 0) {
			r = err_set(r, "fd %d: cannot refill %lu queued bytes", e->fd, reader->data_len);
			goto fail;
		}
	}
	mine = e->kind == FD_KIND_PIPE_R ? p[0] : p[1];
	other = e->kind == FD_KIND_PIPE_R ? p[1] : p[0];
	if (!o) {
		/* The writer was outside: the reader gets its bytes, then EOF. */
		close(other);
		return mine;
	}
	other = fds_move_above(other, above);
	if (other < 0) {
		close(mine);
		return err_set(other, "fd %d: cannot move the other end of the pipe", e->fd);
	}
	e->tmp_other = other;
	return mine;
fail:
	close(p[0]);
	close(p[1]);
	return r;
}
