/*
 * engine/fds/fds-lock.c: file locks held through a descriptor: flock(2)
 * and OFD locks, owned by the open file description, and POSIX record
 * locks (F_SETLK), owned by the process.
 *
 * Which locks are ours: /proc/PID/fdinfo/N lists, on its `lock:` lines,
 * only the locks taken through that open file description (the kernel's
 * show_fd_locks() compares the lock's file with the descriptor's) and
 * owned by that description (FLOCK, OFDLCK) or by the files table of PID
 * (POSIX). A lock of another description of the same file, or a POSIX
 * lock of a forked child on the description it shares with us, is not
 * listed (checked on 6.18; the pid column cannot tell, as it is the pid
 * that took a flock, inherited across fork, and -1 for OFD locks). So a
 * description-owned lock goes on the line of the description (in the
 * tree's shared image when it is shared), and a POSIX lock on the line of
 * the process's descriptor it shows on, a `shared` line included.
 *
 * Restore: a description's locks are taken as soon as it is opened, by
 * whoever opens it (the description owns them); the POSIX locks last in
 * fds_restore(), once the table is final, since closing any descriptor
 * of a file drops the process's POSIX locks on it. Every lock is taken
 * without waiting: one held by someone else (the original still running)
 * fails the restore with -EBUSY, naming the file and the holder where it
 * is known. Not -EAGAIN, the kernel's word for it: the restore of a tree
 * reads -EAGAIN from a process as "not ready yet" (restore.c tree_ready()).
 *
 * Refused: leases and delegations, mandatory locks, and locks on a file
 * that is not reopened by its path (deleted, memfd, devices, ...).
 */
#include <fcntl.h>
#include <stdio.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include "engine/fds/fds-int.h"

static bool lockable(enum fd_kind k)
{
	return k == FD_KIND_FILE || k == FD_KIND_DIR;
}

static int add_range(struct fd_lock **v, size_t *n, short type, uint64_t start, uint64_t len)
{
	struct fd_lock *p = realloc(*v, (*n + 1) * sizeof(**v));

	if (!p)
		return -ENOMEM;
	*v = p;
	p[(*n)++] = (struct fd_lock){ .type = type, .start = start, .len = len };
	return 0;
}

int fds_lock_capture(struct fd_image *img, struct fd_entry *e)
{
	(void)img;
	for (const char *p = e->fdinfo ? strstr(e->fdinfo, "\nlock:") : NULL; p; p = strstr(p + 1, "\nlock:")) {
		char kind[16], adv[16], rw[16], end[24];
		uint64_t ino, start, last;
		int pid, r;

		if (sscanf(p + 1, "lock: %*d: %15s %15s %15s %d %*x:%*x:%lu %lu %23s", kind, adv, rw, &pid, &ino,
			   &start, end) != 7)
			return err_set(-EOPNOTSUPP, "fd %d: %s: a file lock fdinfo shows as '%.60s': not supported",
				       e->fd, e->link, p + 1);
		if (strcmp(kind, "FLOCK") && strcmp(kind, "OFDLCK") && strcmp(kind, "POSIX"))
			return err_set(-EOPNOTSUPP, "fd %d: %s: %s held (lease or delegation): not supported", e->fd,
				       e->link, kind);
		if (strcmp(adv, "ADVISORY"))
			return err_set(-EOPNOTSUPP, "fd %d: %s: %s %s lock held: not supported", e->fd, e->link, adv,
				       kind);
		if (!lockable(e->kind))
			return err_set(-EOPNOTSUPP, "fd %d: %s: %s lock on a '%s' descriptor, which is not reopened by its path: not supported",
				       e->fd, e->link, kind, fds_kind_name(e->kind));
		bool wr = strcmp(rw, "WRITE") == 0;
		if (!wr && strcmp(rw, "READ"))
			return err_set(-EOPNOTSUPP, "fd %d: %s: %s lock of type %s: not supported", e->fd, e->link,
				       kind, rw);
		if (strcmp(kind, "FLOCK") == 0) {
			e->flock = wr ? LOCK_EX : LOCK_SH;
			continue;
		}
		uint64_t len = 0; /* "EOF": to the end, however far it grows */
		if (strcmp(end, "EOF")) {
			if (sscanf(end, "%lu", &last) != 1 || last < start)
				return err_set(-EIO, "fd %d: %s: bad lock range %lu-%s in fdinfo", e->fd, e->link,
					       start, end);
			len = last - start + 1;
		}
		short type = wr ? F_WRLCK : F_RDLCK;
		r = kind[0] == 'O' ? add_range(&e->ofd, &e->n_ofd, type, start, len)
				   : add_range(&e->posix, &e->n_posix, type, start, len);
		if (r < 0)
			return r;
	}
	return 0;
}

static void print_ranges(struct fds_buf *b, const char *key, const struct fd_lock *v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		fds_printf(b, "%s%c:%lu:%lu", i ? "," : key, v[i].type == F_WRLCK ? 'w' : 'r', v[i].start,
			   v[i].len);
}

void fds_lock_print(const struct fd_entry *e, struct fds_buf *b)
{
	if (e->flock)
		fds_printf(b, " flock=%s", e->flock == LOCK_EX ? "ex" : "sh");
	print_ranges(b, " ofd=", e->ofd, e->n_ofd);
	print_ranges(b, " posix=", e->posix, e->n_posix);
}

static int parse_ranges(struct fd_line *l, const char *key, struct fd_lock **v, size_t *n)
{
	const char *all = fds_kv(l, key), *s = all;

	while (s) {
		char t;
		uint64_t start, len;
		int used = 0;
		if (sscanf(s, "%c:%lu:%lu%n", &t, &start, &len, &used) != 3 || (t != 'r' && t != 'w') ||
		    (s[used] && s[used] != ',') || start > INT64_MAX || len > INT64_MAX ||
		    (len && start > INT64_MAX - len))
			return fds_bad(l, "%s=%s: not r|w:start:len ranges", key, all);
		if (add_range(v, n, t == 'w' ? F_WRLCK : F_RDLCK, start, len) < 0)
			return -ENOMEM;
		s = s[used] ? s + used + 1 : NULL;
	}
	return 0;
}

int fds_lock_parse(struct fd_entry *e, struct fd_line *l)
{
	const char *v;
	int r;

	if (!lockable(e->kind) && e->kind != FD_KIND_SHARED) {
		if (fds_kv_has(l, "flock") || fds_kv_has(l, "ofd") || fds_kv_has(l, "posix"))
			return fds_bad(l, "file locks on a %s line", l->kind);
		return 0;
	}
	if (e->kind == FD_KIND_SHARED && (fds_kv_has(l, "flock") || fds_kv_has(l, "ofd")))
		return fds_bad(l, "flock= and ofd= belong on the shared description's own line");
	if ((v = fds_kv(l, "flock"))) {
		if (strcmp(v, "sh") && strcmp(v, "ex"))
			return fds_bad(l, "flock=%s: not sh or ex", v);
		e->flock = v[0] == 'e' ? LOCK_EX : LOCK_SH;
	}
	r = parse_ranges(l, "ofd", &e->ofd, &e->n_ofd);
	if (r >= 0)
		r = parse_ranges(l, "posix", &e->posix, &e->n_posix);
	return r;
}

/* Who holds a lock conflicting with ours on fd's file, for the message:
 * the pid from F_GETLK / F_OFD_GETLK for a range, from /proc/locks for a
 * flock; 0 when unknown, -1 for an OFD lock (no process owns it). */
static pid_t holder(int fd, int cmd, const struct fd_lock *want)
{
	struct stat st;
	_cleanup_fclose_ FILE *f = NULL;
	char line[256];

	if (want) {
		struct flock fl = { .l_type = want->type, .l_whence = SEEK_SET, .l_start = (off_t)want->start,
				    .l_len = (off_t)want->len };
		return fcntl(fd, cmd, &fl) == 0 && fl.l_type != F_UNLCK ? fl.l_pid : 0;
	}
	if (fstat(fd, &st) < 0 || !(f = fopen("/proc/locks", "re")))
		return 0;
	while (fgets(line, sizeof(line), f)) {
		unsigned maj, min;
		uint64_t ino;
		int pid;
		if (sscanf(line, "%*d: FLOCK %*s %*s %d %x:%x:%lu", &pid, &maj, &min, &ino) == 4 &&
		    ino == st.st_ino && makedev(maj, min) == st.st_dev)
			return pid;
	}
	return 0;
}

static int conflict(const struct fd_entry *e, int fd, int getcmd, const char *what, const struct fd_lock *l, int r)
{
	pid_t h = holder(fd, getcmd, l);
	char range[64] = "";

	if (l)
		snprintf(range, sizeof(range), " on bytes %lu+%lu", l->start, l->len);
	if (h > 0)
		return err_set(r, "fd %d: %s: cannot take its %s%s lock again: held by pid %d", e->fd, e->path, what,
			       range, h);
	if (h < 0)
		return err_set(r, "fd %d: %s: cannot take its %s%s lock again: held by an open file description (OFD lock)",
			       e->fd, e->path, what, range);
	return err_set(r, "fd %d: %s: cannot take its %s%s lock again", e->fd, e->path, what, range);
}

static int take_ranges(const struct fd_entry *e, int fd, int cmd, int getcmd, const char *what,
		       const struct fd_lock *v, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		struct flock fl = { .l_type = v[i].type, .l_whence = SEEK_SET, .l_start = (off_t)v[i].start,
				    .l_len = (off_t)v[i].len };
		if (fcntl(fd, cmd, &fl) < 0) {
			int r = negerrno();
			return conflict(e, fd, getcmd, what, &v[i], r == -EACCES || r == -EAGAIN ? -EBUSY : r);
		}
	}
	return 0;
}

int fds_lock_take_desc(const struct fd_entry *e, int fd)
{
	if (e->flock && flock(fd, e->flock | LOCK_NB) < 0)
		return conflict(e, fd, 0, e->flock == LOCK_EX ? "flock LOCK_EX" : "flock LOCK_SH", NULL,
				errno == EWOULDBLOCK ? -EBUSY : negerrno());
	return take_ranges(e, fd, F_OFD_SETLK, F_OFD_GETLK, "OFD", e->ofd, e->n_ofd);
}

int fds_lock_take_posix(struct fd_image *img, struct fd_image *shared)
{
	for (size_t i = 0; i < img->n; i++) {
		const struct fd_entry *e = &img->e[i];
		if (!e->n_posix)
			continue;
		/* The path for the message is on the description's line. */
		const struct fd_entry *d = e;
		if (e->kind == FD_KIND_SHARED && shared && (size_t)e->dup_of < shared->n)
			d = &shared->e[e->dup_of];
		struct fd_entry named = *d;
		named.fd = e->fd;
		int r = take_ranges(&named, e->fd, F_SETLK, F_GETLK, "POSIX", e->posix, e->n_posix);
		if (r < 0)
			return r;
	}
	return 0;
}

int fds_check_mapped_locks(struct fd_image *img, const uint64_t *dev, const uint64_t *ino, size_t n)
{
	/* The restore opens and closes a mapped file inside the process to
	 * map it, and any close of a file drops the process's POSIX locks on
	 * it: such a lock would be lost without a word. */
	for (size_t i = 0; img && i < img->n; i++) {
		const struct fd_entry *e = &img->e[i];
		if (!e->n_posix)
			continue;
		for (size_t k = 0; k < n; k++)
			if (dev[k] == e->sdev && ino[k] == e->sino)
				return err_set(-EOPNOTSUPP,
					       "fd %d: %s: POSIX locks on a file the process also maps: not supported", e->fd,
					       e->path ? e->path : e->link ? e->link : "?");
	}
	return 0;
}
