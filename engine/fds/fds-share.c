/*
 * engine/fds/fds-share.c: what the processes of a tree share of their
 * descriptor tables, stored once.
 *
 * Each process's table is captured alone (fds.c), which finds its own
 * dups but not the open file descriptions it shares with other processes
 * of the tree (inherited across fork: a log file on stdout, a pipe between
 * a shell and its children). fds_share() looks across the captured images
 * of a frozen tree with kcmp(pid1, pid2, KCMP_FILE, fd1, fd2), candidates
 * only among entries with one inode, sorted as find_dups() sorts one
 * process's, and moves every description used by several processes into a
 * separate image whose line numbers are ids; each user's line becomes
 * `shared of=<id>`. A pipe whose ends are in different processes moves
 * whole, every end of it, so that it is made once, with its bytes, by the
 * process that forks the tree, and inherited by all. So does a Unix socket
 * pair whose ends are in different processes (nginx's channel between its
 * master and each worker): both ends, all their users, one socketpair().
 *
 * The description holding the file of an epoll watch whose process closed
 * its number, held by another process, moves too (a pipe, pair or pty
 * whole), and the watch names its id: the restoring process reaches it
 * at the shared base while its table is made.
 *
 * What only the tree can tell is checked here too (fds_tree_check()),
 * once at the check before the tree is touched and again on the frozen
 * tree's captures: each process's capture takes a pair end whose other
 * end it does not hold, and an O_ASYNC owner other than itself, on trust.
 *
 * What must stay true:
 *  - a refusal leaves every image as it was: all the checks and
 *    allocations come before the first entry is moved;
 *  - the shared image holds no dup, shared or epoll line: an epoll
 *    instance's watch list names one process's descriptor numbers.
 */
#include <fcntl.h>
#include <linux/kcmp.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#include "engine/fds/fds-int.h"

/* One non-dup entry of one process. */
struct cand {
	size_t img, ent; /* imgs[img]->e[ent] */
	size_t desc;     /* its open file description, numbered over all processes */
};

struct share_sort {
	struct fd_image **imgs;
	const pid_t *pids;
	struct cand *c;
	int err;
};

static struct fd_entry *entry_of(struct fd_image **imgs, const struct cand *c)
{
	return &imgs[c->img]->e[c->ent];
}

static bool is_pipe(const struct fd_entry *e)
{
	return e->kind == FD_KIND_PIPE_R || e->kind == FD_KIND_PIPE_W || e->kind == FD_KIND_PIPE_RW;
}

/* A pipe, or a removed FIFO: a new one is made at restore, so every
 * description of it in the tree must come from one image. */
static bool made_once(const struct fd_entry *e)
{
	return is_pipe(e) || (e->kind == FD_KIND_FIFO && e->deleted);
}

static int kcmp_files(pid_t p1, pid_t p2, int fd1, int fd2)
{
	return (int)syscall(SYS_kcmp, p1, p2, KCMP_FILE, fd1, fd2);
}

/* By inode, then by open file description as kcmp orders them (a total
 * order), then by process and number. */
static int cmp_cand(const void *a, const void *b, void *ud)
{
	struct share_sort *ss = ud;
	const struct cand *x = &ss->c[*(const size_t *)a], *y = &ss->c[*(const size_t *)b];
	const struct fd_entry *ex = entry_of(ss->imgs, x), *ey = entry_of(ss->imgs, y);
	int r;

	if (ex->sdev != ey->sdev)
		return ex->sdev < ey->sdev ? -1 : 1;
	if (ex->sino != ey->sino)
		return ex->sino < ey->sino ? -1 : 1;
	if (x == y)
		return 0;
	r = kcmp_files(ss->pids[x->img], ss->pids[y->img], ex->fd, ey->fd);
	if (r < 0 || r > 2) {
		if (!ss->err)
			ss->err = err_set(r < 0 ? negerrno() : -EIO, "pid %d fd %d: kcmp with pid %d fd %d",
					  ss->pids[x->img], ex->fd, ss->pids[y->img], ey->fd);
		return 0;
	}
	if (r == 0) {
		if (x->img != y->img)
			return x->img < y->img ? -1 : 1;
		return ex->fd < ey->fd ? -1 : 1;
	}
	return r == 1 ? -1 : 1;
}

/* "pid P fd F, pid Q fd G" for every user of description d. */
static void users(struct fd_image **imgs, const pid_t *pids, const struct cand *c, size_t nc, size_t d,
		  char *buf, size_t len)
{
	size_t off = 0;

	buf[0] = 0;
	for (size_t k = 0; k < nc && off < len; k++) {
		if (c[k].desc != d)
			continue;
		int w = snprintf(buf + off, len - off, "%spid %d fd %d", off ? ", " : "", pids[c[k].img],
				 entry_of(imgs, &c[k])->fd);
		off += w > 0 ? (size_t)w : 0;
	}
}

/* The candidate of imgs[k]->e[m], or -1. */
static ssize_t cand_of(const struct cand *c, size_t nc, size_t k, size_t m)
{
	for (size_t o = 0; o < nc; o++)
		if (c[o].img == k && c[o].ent == m)
			return (ssize_t)o;
	return -1;
}

/* Moves candidate h's description, and with a pipe, pair or pty end
 * every description of the same pipe, pair or pty: they are made whole. */
static void move_whole(struct fd_image **imgs, const struct cand *c, size_t nc, bool *moved, size_t h)
{
	const struct fd_entry *e = entry_of(imgs, &c[h]);

	moved[c[h].desc] = true;
	for (size_t o = 0; o < nc; o++) {
		const struct fd_entry *f = entry_of(imgs, &c[o]);
		if ((is_pipe(e) && is_pipe(f) && f->id == e->id) ||
		    (e->kind == FD_KIND_UNIX_PAIR && f->kind == FD_KIND_UNIX_PAIR && f->id == e->id) ||
		    ((e->kind == FD_KIND_PTMX || e->kind == FD_KIND_PTS) &&
		     (f->kind == FD_KIND_PTMX || f->kind == FD_KIND_PTS) && f->pty == e->pty))
			moved[c[o].desc] = true;
	}
}

/* The reasons to refuse, before anything is changed. */
static int check_movable(struct fd_image **imgs, const pid_t *pids, const struct cand *c, size_t nc,
			 const bool *moved)
{
	char who[512];

	for (size_t k = 0; k < nc; k++) {
		struct fd_entry *e = entry_of(imgs, &c[k]);
		if (!moved[c[k].desc])
			continue;
		if (e->kind == FD_KIND_EPOLL) {
			users(imgs, pids, c, nc, c[k].desc, who, sizeof(who));
			return err_set(-EOPNOTSUPP,
				       "%s: one epoll instance shared by processes (its watches name one "
				       "process's descriptors): not supported",
				       who);
		}
		/* the forking process opens what is shared before any process
		 * of the tree exists */
		if (e->kind == FD_KIND_PIDFD && e->in_tree) {
			users(imgs, pids, c, nc, c[k].desc, who, sizeof(who));
			return err_set(-EOPNOTSUPP,
				       "%s: one pidfd of pid %d, a process of the tree, shared by processes: not supported",
				       who, e->of_pid);
		}
		if (!is_pipe(e) && e->kind != FD_KIND_UNIX_PAIR)
			continue;
		for (size_t o = 0; o < nc; o++) {
			struct fd_entry *f = entry_of(imgs, &c[o]);
			if (o == k || c[o].desc == c[k].desc)
				continue;
			/* Both ends of a pair go together, as a pipe's. */
			if (e->kind == FD_KIND_UNIX_PAIR && f->kind == FD_KIND_UNIX_PAIR && f->id == e->id &&
			    !moved[c[o].desc]) {
				users(imgs, pids, c, nc, c[k].desc, who, sizeof(who));
				return err_set(-EOPNOTSUPP,
					       "%s: Unix socket pair shared by processes whose other end, pid %d "
					       "fd %d, is not: not supported",
					       who, pids[c[o].img], f->fd);
			}
		}
	}
	return 0;
}

static bool has_pid(const pid_t *pids, size_t n, pid_t pid)
{
	for (size_t i = 0; i < n; i++)
		if (pids[i] == pid)
			return true;
	return false;
}

/* The owner must be there again after the restore, with the same number:
 * a process of the tree; a group one of them leads (the restore makes it
 * again); a main thread (other threads are made after the descriptors). */
static int check_owner(const struct fd_entry *e, pid_t pid, const pid_t *pids, size_t n)
{
	pid_t o = e->owner_pid;

	if (!o)
		return 0;
	if (e->owner_type == F_OWNER_PGRP) {
		if (has_pid(pids, n, o) && getpgid(o) == o)
			return 0;
		return err_set(-EOPNOTSUPP,
			       "pid %d fd %d: O_ASYNC signals go to process group %d, not one led by a process "
			       "of the tree: not supported",
			       pid, e->fd, o);
	}
	if (has_pid(pids, n, o))
		return 0;
	char task[64];
	struct stat st;
	bool thread = false;
	for (size_t i = 0; i < n && !thread; i++) {
		snprintf(task, sizeof(task), "/proc/%d/task/%d", pids[i], o);
		thread = stat(task, &st) == 0;
	}
	return err_set(-EOPNOTSUPP, "pid %d fd %d: O_ASYNC signals go to %s %d, %s: not supported", pid, e->fd,
		       thread ? "thread" : e->owner_type == F_OWNER_TID ? "thread" : "process", o,
		       thread ? "not the main thread of a process of the tree" : "outside the process tree");
}

/* Where the file of lost watch w of epoll e (process i) is held in
 * another process of the tree, as a non-dup entry (*ret_k, *ret_m);
 * -EOPNOTSUPP naming the watch when nowhere, or when by an epoll. */
static int lost_holder(struct fd_image **imgs, const pid_t *pids, size_t n, size_t i, const struct fd_entry *e,
		       const struct fd_watch *w, size_t *ret_k, size_t *ret_m)
{
	size_t k, m;

	if (fds_epoll_holder(imgs, pids, n, i, e, w, &k, &m) < 0)
		return err_set(-EOPNOTSUPP,
			       "pid %d fd %d: epoll watches fd %d, closed or replaced since, and its file is held by no "
			       "other descriptor of the process or of its tree: not supported",
			       pids[i], e->fd, w->tfd);
	struct fd_entry *h = &imgs[k]->e[m];
	if (h->kind == FD_KIND_DUP)
		h = fds_find(imgs[k], h->dup_of);
	if (!h || h->kind == FD_KIND_EPOLL)
		return err_set(-EOPNOTSUPP, "pid %d fd %d: epoll watching an epoll instance of pid %d: not supported",
			       pids[i], e->fd, pids[k]);
	*ret_k = k;
	*ret_m = (size_t)(h - imgs[k]->e);
	return 0;
}

int fds_tree_check(struct fd_image **imgs, const pid_t *pids, size_t n)
{
	int q = fds_pidfd_tree(imgs, pids, n);
	if (q < 0)
		return q;
	for (size_t i = 0; i < n; i++)
		for (size_t j = 0; j < imgs[i]->n; j++) {
			struct fd_entry *e = &imgs[i]->e[j];
			int r = check_owner(e, pids[i], pids, n);
			if (r < 0)
				return r;
			for (size_t w = 0; w < e->n_watches; w++) {
				size_t k, m;
				if (e->watches[w].lost && (r = lost_holder(imgs, pids, n, i, e, &e->watches[w], &k, &m)) < 0)
					return r;
			}
			if (e->kind != FD_KIND_UNIX_PAIR || e->peer_in)
				continue;
			/* The other end, in another process (any of its users
			 * will do: they share the socket). */
			bool found = false;
			for (size_t k = 0; k < n && !found; k++)
				for (size_t m = 0; k != i && m < imgs[k]->n && !found; m++)
					found = imgs[k]->e[m].kind == FD_KIND_UNIX_PAIR && imgs[k]->e[m].sino == e->peer_ino;
			if (!found)
				return err_set(-EOPNOTSUPP,
					       "pid %d fd %d: Unix %s socket connected to socket:[%lu] outside the process "
					       "tree: not supported",
					       pids[i], e->fd,
					       e->type == SOCK_STREAM ? "stream" : e->type == SOCK_DGRAM ? "dgram" : "seqpacket",
					       e->peer_ino);
		}
	return 0;
}

/* Turns e into a `shared` line naming id, keeping its number and cloexec. */
static void make_shared(struct fd_entry *e, int id)
{
	int fd = e->fd;
	bool cloexec = e->cloexec;

	memset(e, 0, sizeof(*e));
	e->fd = fd;
	e->cloexec = cloexec;
	e->kind = FD_KIND_SHARED;
	e->dup_of = id;
	e->dupfd = -1;
	e->tmp_other = -1;
	e->tmp_peer = -1;
	e->placed = -1;
}

/* Within the shared image: a pipe's ends are both in it or the other is
 * outside the tree; a pipe's and a FIFO's bytes are on their first
 * reading line only. */
static void settle_shared(struct fd_image *sh)
{
	for (size_t i = 0; i < sh->n; i++) {
		struct fd_entry *e = &sh->e[i];
		if (is_pipe(e)) {
			/* a reader needs a writer in, a writer a reader */
			e->peer_in = e->kind == FD_KIND_PIPE_RW;
			for (size_t j = 0; j < sh->n; j++) {
				const struct fd_entry *f = &sh->e[j];
				if (j == i || !is_pipe(f) || f->id != e->id)
					continue;
				e->peer_in |= f->kind == FD_KIND_PIPE_RW || (f->kind != e->kind);
			}
			/* each process's capture peeked its own first reader:
			 * the bytes stay on the first of the image */
			for (size_t j = 0; j < i && e->data; j++) {
				const struct fd_entry *f = &sh->e[j];
				if (is_pipe(f) && f->id == e->id && f->kind != FD_KIND_PIPE_W) {
					free(e->data);
					e->data = NULL;
					e->data_len = 0;
				}
			}
		}
		if (e->kind != FD_KIND_FIFO)
			continue;
		for (size_t j = 0; j < i; j++)
			if (sh->e[j].kind == FD_KIND_FIFO && sh->e[j].id == e->id) {
				free(e->data);
				e->data = NULL;
				e->data_len = 0;
				break;
			}
	}
}

int fds_share(struct fd_image **imgs, const pid_t *pids, size_t n, struct fd_image **ret)
{
	_cleanup_free_ struct cand *c = NULL;
	_cleanup_free_ size_t *idx = NULL;
	_cleanup_free_ bool *moved = NULL;
	_cleanup_free_ int *ids = NULL;
	struct share_sort ss = { .imgs = imgs, .pids = pids };
	struct fd_image *sh;
	size_t nc = 0, ndesc = 0, nmoved = 0;
	int r;

	for (size_t i = 0; i < n; i++)
		for (size_t j = 0; j < imgs[i]->n; j++) {
			struct fd_entry *e = &imgs[i]->e[j];
			if (e->kind == FD_KIND_SHARED)
				return err_set(-EINVAL, "pid %d fd %d: already a shared line", pids[i], e->fd);
			nc += e->kind != FD_KIND_DUP;
		}
	/* The frozen tree is what counts: it may have changed since the
	 * check. */
	r = fds_tree_check(imgs, pids, n);
	if (r >= 0)
		r = fds_tty_tree(imgs, pids, n);
	if (r < 0)
		return r;
	c = calloc(nc ? nc : 1, sizeof(*c));
	idx = calloc(nc ? nc : 1, sizeof(*idx));
	moved = calloc(nc ? nc : 1, sizeof(*moved));
	ids = calloc(nc ? nc : 1, sizeof(*ids));
	if (!c || !idx || !moved || !ids)
		return -ENOMEM;
	/* c in process then descriptor order: the order of the ids. */
	nc = 0;
	for (size_t i = 0; i < n; i++)
		for (size_t j = 0; j < imgs[i]->n; j++)
			if (imgs[i]->e[j].kind != FD_KIND_DUP) {
				c[nc] = (struct cand){ .img = i, .ent = j };
				idx[nc] = nc;
				nc++;
			}
	ss.c = c;
	if (nc > 1)
		qsort_r(idx, nc, sizeof(*idx), cmp_cand, &ss);
	if (ss.err)
		return ss.err;

	/* Number the descriptions: neighbours in the order share one when
	 * kcmp says so. A description used by several processes moves. */
	for (size_t k = 0; k < nc; k++) {
		struct cand *cur = &c[idx[k]];
		if (k > 0) {
			struct cand *prev = &c[idx[k - 1]];
			struct fd_entry *pe = entry_of(imgs, prev), *ce = entry_of(imgs, cur);
			bool same = false;
			if (pe->sdev == ce->sdev && pe->sino == ce->sino) {
				r = kcmp_files(pids[prev->img], pids[cur->img], pe->fd, ce->fd);
				if (r < 0)
					return err_set(negerrno(), "pid %d fd %d: kcmp with pid %d fd %d",
						       pids[cur->img], ce->fd, pids[prev->img], pe->fd);
				same = r == 0;
			}
			if (!same)
				ndesc++;
			else
				moved[ndesc] = true; /* two processes: one has no two non-dup lines of one */
		}
		cur->desc = ndesc;
	}
	/* A pipe whose ends (one inode, a run in the order) are in several
	 * processes moves whole; so does a removed FIFO. */
	for (size_t k = 0; k < nc;) {
		struct fd_entry *first = entry_of(imgs, &c[idx[k]]);
		size_t end = k + 1;
		bool spans = false;
		while (end < nc && entry_of(imgs, &c[idx[end]])->sdev == first->sdev &&
		       entry_of(imgs, &c[idx[end]])->sino == first->sino)
			end++;
		for (size_t m = k; m < end; m++)
			spans |= made_once(entry_of(imgs, &c[idx[m]])) && c[idx[m]].img != c[idx[k]].img;
		if (spans && made_once(first))
			for (size_t m = k; m < end; m++)
				moved[c[idx[m]].desc] = true;
		k = end;
	}
	/* So does a socket pair whose ends (two inodes, one id) are in
	 * several processes: every description of either end. Pairs are few;
	 * a pass over them for each is enough. */
	for (size_t k = 0; k < nc; k++) {
		struct fd_entry *e = entry_of(imgs, &c[k]);
		if (e->kind != FD_KIND_UNIX_PAIR || moved[c[k].desc])
			continue;
		bool spans = false;
		for (size_t o = 0; o < nc && !spans; o++) {
			struct fd_entry *f = entry_of(imgs, &c[o]);
			spans = f->kind == FD_KIND_UNIX_PAIR && f->id == e->id && c[o].img != c[k].img;
		}
		for (size_t o = 0; spans && o < nc; o++) {
			struct fd_entry *f = entry_of(imgs, &c[o]);
			if (f->kind == FD_KIND_UNIX_PAIR && f->id == e->id)
				moved[c[o].desc] = true;
		}
	}
	/* So does a pseudo-terminal pair (a master and its slaves, one pty
	 * number) held by several processes, or whose slave is a session's
	 * controlling terminal (its leader takes it before forking). */
	for (size_t k = 0; k < nc; k++) {
		struct fd_entry *e = entry_of(imgs, &c[k]);
		if ((e->kind != FD_KIND_PTMX && e->kind != FD_KIND_PTS) || moved[c[k].desc])
			continue;
		bool spans = false;
		for (size_t o = 0; o < nc && !spans; o++) {
			struct fd_entry *f = entry_of(imgs, &c[o]);
			spans = (f->kind == FD_KIND_PTMX || f->kind == FD_KIND_PTS) && f->pty == e->pty &&
				(c[o].img != c[k].img || fds_tty_must_share(f));
		}
		for (size_t o = 0; spans && o < nc; o++) {
			struct fd_entry *f = entry_of(imgs, &c[o]);
			if ((f->kind == FD_KIND_PTMX || f->kind == FD_KIND_PTS) && f->pty == e->pty)
				moved[c[o].desc] = true;
		}
	}
	/* A terminal outside that is a session's controlling terminal: the
	 * leader reopens it before forking. */
	for (size_t k = 0; k < nc; k++)
		if (entry_of(imgs, &c[k])->kind == FD_KIND_TTY && fds_tty_must_share(entry_of(imgs, &c[k])))
			moved[c[k].desc] = true;
	/* The file of an epoll watch whose number its process closed, held
	 * by another process: its description moves, so that the epoll's
	 * process has it too while its table is made; a pipe, pair or pty
	 * whole, as above. Found again here: the frozen tree is what counts.
	 * Each holder's description is kept for the lines' move below (kcmp
	 * needs the numbers only, which stay). */
	_cleanup_free_ size_t *lost_desc = NULL;
	size_t nlost = 0;
	for (size_t i = 0; i < n; i++)
		for (size_t j = 0; j < imgs[i]->n; j++)
			for (size_t w = 0; w < imgs[i]->e[j].n_watches; w++)
				nlost += imgs[i]->e[j].watches[w].lost;
	lost_desc = calloc(nlost ? nlost : 1, sizeof(*lost_desc));
	if (!lost_desc)
		return -ENOMEM;
	nlost = 0;
	for (size_t i = 0; i < n; i++)
		for (size_t j = 0; j < imgs[i]->n; j++) {
			struct fd_entry *e = &imgs[i]->e[j];
			for (size_t w = 0; w < e->n_watches; w++) {
				size_t k, m;
				if (!e->watches[w].lost)
					continue;
				r = lost_holder(imgs, pids, n, i, e, &e->watches[w], &k, &m);
				if (r < 0)
					return r;
				ssize_t hc = cand_of(c, nc, k, m);
				if (hc < 0)
					return err_set(-EIO, "pid %d fd %d: the holder of its watch on fd %d is not a "
						       "description of the tree", pids[i], e->fd, e->watches[w].tfd);
				move_whole(imgs, c, nc, moved, (size_t)hc);
				lost_desc[nlost++] = c[hc].desc;
			}
		}
	r = check_movable(imgs, pids, c, nc, moved);
	if (r < 0)
		return r;

	for (size_t d = 0; d <= ndesc && nc; d++) {
		ids[d] = -1;
		nmoved += moved[d];
	}
	sh = fds_image_new();
	if (!sh)
		return -ENOMEM;
	for (size_t m = 0; m < nmoved; m++)
		if (!fds_image_add(sh)) {
			fds_free(sh);
			return -ENOMEM;
		}

	/* Nothing can fail from here on. The first user of a description
	 * (by process, then number) gives its line to the shared image. */
	int next = 0;
	for (size_t k = 0; k < nc; k++) {
		struct fd_entry *e = entry_of(imgs, &c[k]);
		size_t d = c[k].desc;
		if (!moved[d])
			continue;
		/* POSIX locks are the process's: they stay on its `shared`
		 * line. */
		struct fd_lock *posix = e->posix;
		size_t n_posix = e->n_posix;
		e->posix = NULL;
		e->n_posix = 0;
		if (ids[d] < 0) {
			struct fd_entry *se = &sh->e[next];
			ids[d] = next++;
			*se = *e;
			se->fd = ids[d];
			se->cloexec = true; /* the forking process's copy, at base + id */
		} else {
			fds_entry_free(e);
		}
		make_shared(e, ids[d]);
		e->posix = posix;
		e->n_posix = n_posix;
	}
	/* the lost watches name their holder's shared id now */
	nlost = 0;
	for (size_t i = 0; i < n; i++)
		for (size_t j = 0; j < imgs[i]->n; j++)
			for (size_t w = 0; w < imgs[i]->e[j].n_watches; w++) {
				struct fd_watch *fw = &imgs[i]->e[j].watches[w];
				if (!fw->lost)
					continue;
				fw->shared = ids[lost_desc[nlost++]];
				fw->lost = false;
			}
	settle_shared(sh);
	log_debug("%zu processes: %zu open file descriptions shared", n, sh->n);
	*ret = sh;
	return 0;
}

int fds_validate_shared(struct fd_image *img, struct fd_image *shared)
{
	size_t n = shared ? shared->n : 0;

	for (size_t i = 0; i < n; i++) {
		struct fd_entry *e = &shared->e[i];
		if ((size_t)e->fd != i)
			return err_set(-EBADMSG, "shared fds: line %zu has id %d; ids go 0, 1, 2, ...", i + 1,
				       e->fd);
		if (e->kind == FD_KIND_DUP || e->kind == FD_KIND_SHARED || e->kind == FD_KIND_EPOLL)
			return err_set(-EBADMSG, "shared fds: id %d: a %s line cannot be shared", e->fd,
				       fds_kind_name(e->kind));
		if (e->n_posix)
			return err_set(-EBADMSG, "shared fds: id %d: posix= locks are a process's, not of a shared description",
				       e->fd);
	}
	for (size_t i = 0; img && i < img->n; i++) {
		struct fd_entry *e = &img->e[i];
		if (e->kind == FD_KIND_SHARED && (size_t)e->dup_of >= n)
			return err_set(-EBADMSG, "fds: fd %d: shared of=%d, but the shared image has %zu", e->fd,
				       e->dup_of, n);
		for (size_t w = 0; w < e->n_watches; w++)
			if (e->watches[w].shared >= 0 && (size_t)e->watches[w].shared >= n)
				return err_set(-EBADMSG, "fds: fd %d: epoll watch=...:s%d, but the shared image has %zu",
					       e->fd, e->watches[w].shared, n);
	}
	return 0;
}
