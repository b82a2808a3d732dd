/*
 * engine/fds/fds-event.c: eventfd, epoll, timerfd, signalfd, inotify and
 * fanotify, all read from /proc/PID/fdinfo/N, which shows their whole state.
 *
 * eventfd: the counter and the semaphore mode. timerfd: the clock, the
 * time left and the interval (fdinfo shows time left, relative, whatever
 * the settime flags), expirations not yet read (restored with
 * TFD_IOC_SET_TICKS after timerfd_settime, which clears them). signalfd:
 * the mask. epoll: every watch (descriptor number, events, data); each is
 * checked with kcmp(KCMP_EPOLL_TFD) to still watch the file open at that
 * number, since a watch outlives the number it was added under (it lives
 * as long as its file). One whose number was closed or replaced since is
 * kept when another descriptor of the process holds its file (kcmp again):
 * the watch records that holder, and the restore puts the file at the old
 * number for the time of EPOLL_CTL_ADD (the kernel knows a watch by file
 * and number), then puts back what the number holds. Held by another
 * process of a tree, the watch is `lost` at capture, and fds_share()
 * moves the holder's description to the shared image, which the restore
 * reaches at the shared base, and names it in the watch. Epoll instances are
 * recreated after every other descriptor is in place, and watches are
 * added under the restored numbers. inotify: every watch
 * (number, mask, and the inode's file handle, which names the path
 * through open_by_handle_at); watches are added again by path in number
 * order, the numbers between them taken and given back, so that each
 * gets the number the process knows it by. Events queued and not read
 * cannot be put back into a new instance: such an instance is refused.
 *
 * fanotify: the group's init flags and event file flags, and every mark:
 * an inode mark by its file handle (a path, as for inotify), a mount mark
 * by its mount id (the mount point in the process's mountinfo), a
 * filesystem mark by its device (a mount point of it here); masks,
 * ignored masks and mark flags as fdinfo shows them. The marks are added
 * again oldest first (fdinfo lists the newest first). Queued events are
 * refused as inotify's; so is a permission group with permission events
 * in a mark, since an event it read and has not answered yet (someone
 * else's process waits in the kernel for it) shows nowhere.
 */
#include <ctype.h>
#include <inttypes.h>
#include <limits.h>
#include <sys/stat.h>
#include <fcntl.h>
#include <linux/kcmp.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/fanotify.h>
#include <sys/inotify.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>

#include "engine/fds/fds-int.h"

/* linux/timerfd.h clashes with sys/timerfd.h; Linux 3.17+. */
#ifndef TFD_IOC_SET_TICKS
#define TFD_IOC_SET_TICKS _IOW('T', 0, uint64_t)
#endif

int fds_event_classify(struct fd_image *img, struct fd_entry *e)
{
	if (strcmp(e->link, "anon_inode:[eventfd]") == 0)
		e->kind = FD_KIND_EVENTFD;
	else if (strcmp(e->link, "anon_inode:[eventpoll]") == 0)
		e->kind = FD_KIND_EPOLL;
	else if (strcmp(e->link, "anon_inode:[timerfd]") == 0)
		e->kind = FD_KIND_TIMERFD;
	else if (strcmp(e->link, "anon_inode:[signalfd]") == 0)
		e->kind = FD_KIND_SIGNALFD;
	else if (strcmp(e->link, "anon_inode:inotify") == 0)
		e->kind = FD_KIND_INOTIFY;
	else if (strcmp(e->link, "anon_inode:[fanotify]") == 0)
		e->kind = FD_KIND_FANOTIFY;
	else
		return 0;
	return 1;
}

/* The descriptor of img's process that holds the file epoll instance efd
 * watches under number tfd (the toff-th such watch), or -1: its number
 * was closed or replaced since, and the watch stays while the file lives. */
static int watch_holder(struct fd_image *img, struct kcmp_epoll_slot *slot)
{
	for (size_t i = 0; i < img->n; i++) {
		int fd = img->e[i].fd;
		if ((unsigned)fd != slot->tfd &&
		    syscall(SYS_kcmp, img->pid, img->pid, KCMP_EPOLL_TFD, fd, slot) == 0)
			return fd;
	}
	return -1;
}

int fds_epoll_holder(struct fd_image **imgs, const pid_t *pids, size_t n, size_t i, const struct fd_entry *e,
		     const struct fd_watch *w, size_t *ret_k, size_t *ret_m)
{
	struct kcmp_epoll_slot slot = { .efd = (unsigned)e->fd, .tfd = (unsigned)w->tfd, .toff = w->toff };

	for (size_t k = 0; k < n; k++)
		for (size_t m = 0; k != i && m < imgs[k]->n; m++)
			if (syscall(SYS_kcmp, pids[k], pids[i], KCMP_EPOLL_TFD, imgs[k]->e[m].fd, &slot) == 0) {
				*ret_k = k;
				*ret_m = m;
				return 0;
			}
	return -ENOENT;
}

static int capture_epoll(struct fd_image *img, struct fd_entry *e)
{
	for (const char *p = e->fdinfo; (p = strstr(p, "tfd:")); p++) {
		struct fd_watch w = { .via = -1, .shared = -1 };
		struct kcmp_epoll_slot slot;
		unsigned long long data;
		struct fd_entry *t;
		unsigned toff = 0;
		int r;

		if (sscanf(p, "tfd: %d events: %x data: %llx", &w.tfd, &w.events, &data) != 3)
			return err_set(-EIO, "fd %d: epoll: cannot parse its fdinfo", e->fd);
		w.data = data;
		for (size_t i = 0; i < e->n_watches; i++)
			toff += e->watches[i].tfd == w.tfd;
		slot = (struct kcmp_epoll_slot){ .efd = (unsigned)e->fd, .tfd = (unsigned)w.tfd, .toff = toff };
		r = (int)syscall(SYS_kcmp, img->pid, img->pid, KCMP_EPOLL_TFD, w.tfd, &slot);
		w.toff = toff;
		if (r != 0) {
			/* closed or replaced since: the file is held elsewhere
			 * (the watch would be gone otherwise); the restore adds
			 * it under its old number from there. Not in this
			 * process: another of the tree must hold it, which only
			 * the tree can tell (fds_tree_check) */
			w.via = watch_holder(img, &slot);
			w.lost = w.via < 0;
		}
		t = w.lost ? NULL : fds_find(img, w.via >= 0 ? w.via : w.tfd);
		if (w.lost)
			goto add;
		if (t && t->kind == FD_KIND_DUP)
			t = fds_find(img, t->dup_of);
		if (!t)
			return err_set(-EOPNOTSUPP, "fd %d: epoll watch on fd %d, which is not open: not supported",
				       e->fd, w.tfd);
		if (t->kind == FD_KIND_EPOLL)
			return err_set(-EOPNOTSUPP, "fd %d: epoll watching epoll fd %d: not supported", e->fd,
				       w.via >= 0 ? w.via : w.tfd);
add:;
		struct fd_watch *nw = realloc(e->watches, (e->n_watches + 1) * sizeof(*nw));
		if (!nw)
			return -ENOMEM;
		e->watches = nw;
		e->watches[e->n_watches++] = w;
	}
	return 0;
}

/* The mount point, unescaped, of a mount listed in mountinfo file mi:
 * the one numbered id when id >= 0, else one of the filesystem with the
 * kernel's device number sdev (as fdinfo shows it: major << 20 | minor),
 * its root mount preferred. */
static int mount_path(const char *mi_path, int id, unsigned sdev, char *out, size_t outsz)
{
	_cleanup_free_ char *mi = NULL;
	if (read_file_full(mi_path, &mi, NULL) < 0)
		return -EIO;
	char best[PATH_MAX] = "";
	for (char *l = mi, *nl; l && *l; l = nl) {
		nl = strchr(l, '\n');
		if (nl)
			*nl++ = 0;
		unsigned maj, min;
		int mid;
		char root[PATH_MAX], mp[PATH_MAX];
		if (sscanf(l, "%d %*d %u:%u %4095s %4095s", &mid, &maj, &min, root, mp) != 5)
			continue;
		if (id >= 0) {
			if (mid != id)
				continue;
			snprintf(best, sizeof(best), "%s", mp);
			break;
		}
		if (((maj << 20) | min) != sdev)
			continue;
		if (!best[0] || !strcmp(root, "/"))
			snprintf(best, sizeof(best), "%s", mp);
		if (!strcmp(root, "/"))
			break;
	}
	if (!best[0])
		return -ENOENT;
	/* mountinfo writes space, tab, newline and backslash as \ooo */
	size_t k = 0;
	for (const char *q = best; *q && k + 1 < outsz; q++) {
		unsigned v;
		if (q[0] == '\\' && sscanf(q + 1, "%3o", &v) == 1) {
			out[k++] = (char)v;
			q += 3;
		} else {
			out[k++] = *q;
		}
	}
	out[k] = 0;
	return 0;
}

/* A descriptor of a mount of the filesystem with device number sdev
 * (mount_path()): open_by_handle_at() needs one. */
static int mount_of(unsigned sdev)
{
	char un[PATH_MAX];
	int r = mount_path("/proc/self/mountinfo", -1, sdev, un, sizeof(un));
	if (r < 0)
		return r;
	int fd = open(un, O_RDONLY | O_DIRECTORY | O_CLOEXEC); /* not O_PATH: open_by_handle_at takes none */
	return fd < 0 ? negerrno() : fd;
}

static int hexval(char c)
{
	return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* The line of fdinfo at p, alone in buf (NUL-terminated), so that sscanf
 * (which measures its whole input first) does not walk the rest of a
 * fdinfo that lists thousands of watches with every line. */
static const char *one_line(const char *p, char *buf, size_t len)
{
	size_t n = strcspn(p, "\n");
	if (n >= len)
		n = len - 1;
	memcpy(buf, p, n);
	buf[n] = 0;
	return buf;
}

/* The mount open_by_handle_at() last used, kept across the watches of
 * one instance: finding it reads mountinfo, and thousands of watches
 * are mostly on one filesystem. */
struct mnt_cache {
	unsigned sdev;
	int fd; /* -1: none */
};

static void mnt_cache_done(struct mnt_cache *m)
{
	if (m->fd >= 0)
		close(m->fd);
}

/* The path of the inode an inotify watch or fanotify mark names, from
 * its file handle. */
static int watch_path(struct fd_entry *e, struct mnt_cache *mc, const char *what, int wd, unsigned sdev,
		      uint64_t ino, unsigned hbytes, int htype, const char *hex, char **ret)
{
	if (hbytes > MAX_HANDLE_SZ)
		return err_set(-EIO, "fd %d: %s %d: a file handle of %u bytes", e->fd, what, wd, hbytes);
	_cleanup_free_ struct file_handle *h = calloc(1, sizeof(*h) + hbytes);
	if (!h)
		return -ENOMEM;
	h->handle_bytes = hbytes;
	h->handle_type = htype;
	for (unsigned i = 0; i < hbytes; i++) {
		int hi = hexval(hex[2 * i]), lo = hi < 0 ? -1 : hexval(hex[2 * i + 1]);
		if (lo < 0)
			return err_set(-EIO, "fd %d: %s %d: bad file handle in fdinfo", e->fd, what, wd);
		h->f_handle[i] = (unsigned char)(hi << 4 | lo);
	}
	if (mc->fd < 0 || mc->sdev != sdev) {
		mnt_cache_done(mc);
		mc->sdev = sdev;
		mc->fd = mount_of(sdev);
		if (mc->fd < 0) {
			int r = mc->fd;
			mc->fd = -1;
			return err_set(r, "fd %d: %s %d: no mount of its filesystem (device %u:%u) here",
				       e->fd, what, wd, sdev >> 20, sdev & 0xfffff);
		}
	}
	_cleanup_close_ int fd = open_by_handle_at(mc->fd, h, O_PATH | O_CLOEXEC);
	if (fd < 0)
		return err_set(negerrno(), "fd %d: %s %d on inode %" PRIu64 ": cannot open it by its "
			       "handle: %m (it takes CAP_DAC_READ_SEARCH)", e->fd, what, wd, ino);
	char link[64], path[PATH_MAX];
	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	ssize_t n = readlink(link, path, sizeof(path) - 1);
	if (n <= 0)
		return err_set(-EIO, "fd %d: %s %d: no path for inode %" PRIu64, e->fd, what, wd, ino);
	path[n] = 0;
	struct stat st;
	if (path[0] != '/' || stat(path, &st) < 0 || st.st_ino != ino)
		return err_set(-EOPNOTSUPP, "fd %d: %s %d on inode %" PRIu64 ", which has no path (%s): "
			       "not supported", e->fd, what, wd, ino, path);
	*ret = strdup(path);
	return *ret ? 0 : -ENOMEM;
}

static int cmp_wd(const void *a, const void *b)
{
	int x = ((const struct fd_iwatch *)a)->wd, y = ((const struct fd_iwatch *)b)->wd;
	return (x > y) - (x < y);
}

static int capture_inotify(struct fd_entry *e)
{
	_cleanup_(mnt_cache_done) struct mnt_cache mc = { .fd = -1 };
	int queued = 0;
	if (ioctl(e->dupfd, FIONREAD, &queued) < 0)
		return err_set(negerrno(), "fd %d: inotify: FIONREAD: %m", e->fd);
	if (queued > 0)
		return err_set(-EOPNOTSUPP, "fd %d: inotify with %d bytes of events not read yet (a new instance "
			       "cannot be given them): not supported; checkpoint again once they are read",
			       e->fd, queued);
	for (const char *q = e->fdinfo; (q = strstr(q, "inotify wd:")); q++) {
		char line[1024];
		const char *p = one_line(q, line, sizeof(line));
		unsigned wd, sdev, mask, ign, hbytes;
		int htype, n = 0;
		unsigned long long ino;
		if (sscanf(p, "inotify wd:%x ino:%llx sdev:%x mask:%x ignored_mask:%x fhandle-bytes:%x "
			      "fhandle-type:%x f_handle:%n", &wd, &ino, &sdev, &mask, &ign, &hbytes, &htype, &n) != 7 ||
		    !n)
			return err_set(-EIO, "fd %d: inotify: cannot parse its fdinfo", e->fd);
		struct fd_iwatch w = { .wd = (int)wd, .mask = mask };
		int r = watch_path(e, &mc, "inotify watch", w.wd, sdev, ino, hbytes, htype, p + n, &w.path);
		if (r < 0)
			return r;
		struct fd_iwatch *nw = realloc(e->iwatches, (e->n_iwatches + 1) * sizeof(*nw));
		if (!nw) {
			free(w.path);
			return -ENOMEM;
		}
		e->iwatches = nw;
		e->iwatches[e->n_iwatches++] = w;
	}
	/* in number order: the restore adds them so (fdinfo lists the newest
	 * first: sorted once, not inserted one by one) */
	if (e->n_iwatches > 1)
		qsort(e->iwatches, e->n_iwatches, sizeof(*e->iwatches), cmp_wd);
	/* the list in a data file: a dev server watches thousands */
	struct fds_buf b = { 0 };
	for (size_t i = 0; i < e->n_iwatches; i++) {
		fds_printf(&b, "wd=%d mask=0x%x", e->iwatches[i].wd, e->iwatches[i].mask);
		fds_put_path(&b, "path", e->iwatches[i].path, strlen(e->iwatches[i].path));
		fds_printf(&b, "\n");
	}
	if (b.err) {
		free(b.p);
		return b.err;
	}
	e->count = e->n_iwatches;
	e->data = b.p;
	e->data_len = b.len;
	return 0;
}

/* e's watches from its data file (capture_inotify's lines). */
static int parse_iwatches(struct fd_entry *e)
{
	_cleanup_free_ char *text = strndup(e->data ? e->data : "", e->data_len);
	if (!text)
		return -ENOMEM;
	char *save = NULL;
	for (char *l = strtok_r(text, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
		struct fd_iwatch w = { 0 };
		char path[PATH_MAX + 1];
		int n = 0;
		if (sscanf(l, "wd=%d mask=0x%x path=%n", &w.wd, &w.mask, &n) != 2 || !n ||
		    fds_unescape(l + n, path, sizeof(path)) <= 0 || path[0] != '/' || w.wd <= 0 ||
		    (e->n_iwatches && w.wd <= e->iwatches[e->n_iwatches - 1].wd))
			return err_set(-EBADMSG, "fd %d: inotify: bad watch line '%s' (wd=N mask=0xM path=P, "
				       "in increasing wd order)", e->fd, l);
		struct fd_iwatch *nw = realloc(e->iwatches, (e->n_iwatches + 1) * sizeof(*nw));
		if (!nw)
			return -ENOMEM;
		e->iwatches = nw;
		if (!(w.path = strdup(path)))
			return -ENOMEM;
		e->iwatches[e->n_iwatches++] = w;
	}
	if (e->n_iwatches != e->count)
		return err_set(-EBADMSG, "fd %d: inotify: %zu watches in its data file, the line says %" PRIu64,
			       e->fd, e->n_iwatches, e->count);
	return 0;
}


/* Events a permission group answers: one read and not yet answered holds
 * a process of someone else's in the kernel, and cannot be seen from here
 * (FAN_OPEN_PERM, FAN_ACCESS_PERM, FAN_OPEN_EXEC_PERM, FAN_PRE_ACCESS). */
#define FAN_PERM_EVENTS 0x00170000u
/* The mark flags fdinfo shows (mflags) that the restore knows. */
#define FAN_MFLAGS_KNOWN (FAN_MARK_IGNORED_SURV_MODIFY | FAN_MARK_EVICTABLE | FAN_MARK_IGNORE)

static const char *fmark_name(unsigned type)
{
	return type == FAN_MARK_MOUNT ? "mount" : type == FAN_MARK_FILESYSTEM ? "filesystem" : "inode";
}

/* One "fanotify ..." mark line of fdinfo (p past "fanotify "): its target
 * as a path. */
static int capture_fmark(struct fd_image *img, struct fd_entry *e, struct mnt_cache *mc, const char *p,
			 struct fd_fmark *m)
{
	unsigned sdev, mflags, mask, ign, hbytes, mnt;
	int htype, n = 0;
	unsigned long long ino;
	char path[PATH_MAX];
	int r;

	if (sscanf(p, "ino:%llx sdev:%x mflags:%x mask:%x ignored_mask:%x fhandle-bytes:%x fhandle-type:%x "
		      "f_handle:%n", &ino, &sdev, &mflags, &mask, &ign, &hbytes, &htype, &n) == 7 && n) {
		m->type = FAN_MARK_INODE;
		r = watch_path(e, mc, "fanotify mark", (int)e->n_fmarks, sdev, ino, hbytes, htype, p + n,
			       &m->path);
		if (r < 0)
			return r;
	} else if (sscanf(p, "mnt_id:%x mflags:%x mask:%x ignored_mask:%x", &mnt, &mflags, &mask, &ign) == 4) {
		char mi[64];
		m->type = FAN_MARK_MOUNT;
		/* the id is of the process's mount namespace, named by its
		 * mount point there (the restore runs in the same one) */
		snprintf(mi, sizeof(mi), "/proc/%d/mountinfo", img->pid);
		r = mount_path(mi, (int)mnt, 0, path, sizeof(path));
		if (r < 0)
			return err_set(-EOPNOTSUPP, "fd %d: fanotify mark on mount %u, which is not in the process's "
				       "mountinfo: not supported", e->fd, mnt);
		/* a mount hidden under another at the same place: its path
		 * names the one on top */
		struct statx sx;
		if (statx(AT_FDCWD, path, AT_NO_AUTOMOUNT, STATX_MNT_ID, &sx) < 0 || !(sx.stx_mask & STATX_MNT_ID) ||
		    sx.stx_mnt_id != mnt)
			return err_set(-EOPNOTSUPP, "fd %d: fanotify mark on mount %u at %s, which that path does not "
				       "reach (another mount on top, or another mount namespace): not supported",
				       e->fd, mnt, path);
		if (!(m->path = strdup(path)))
			return -ENOMEM;
	} else if (sscanf(p, "sdev:%x mflags:%x mask:%x ignored_mask:%x", &sdev, &mflags, &mask, &ign) == 4) {
		m->type = FAN_MARK_FILESYSTEM;
		r = mount_path("/proc/self/mountinfo", -1, sdev, path, sizeof(path));
		if (r < 0)
			return err_set(-EOPNOTSUPP, "fd %d: fanotify mark on filesystem %u:%u, which has no mount here: "
				       "not supported", e->fd, sdev >> 20, sdev & 0xfffff);
		if (!(m->path = strdup(path)))
			return -ENOMEM;
	} else {
		/* mount namespace marks (FAN_MARK_MNTNS), what comes next */
		const char *nl = strchr(p, '\n');
		return err_set(-EOPNOTSUPP, "fd %d: fanotify mark '%.*s': not supported", e->fd,
			       (int)(nl ? nl - p : (ptrdiff_t)strlen(p)), p);
	}
	m->mflags = mflags;
	m->mask = mask;
	m->ignored = ign;
	if (mflags & ~FAN_MFLAGS_KNOWN)
		return err_set(-EOPNOTSUPP, "fd %d: fanotify %s mark on %s with flags 0x%x: not supported", e->fd,
			       fmark_name(m->type), m->path, mflags);
	return 0;
}

static int capture_fanotify(struct fd_image *img, struct fd_entry *e)
{
	_cleanup_(mnt_cache_done) struct mnt_cache mc = { .fd = -1 };
	const char *v = fds_info(e, "fanotify flags");
	unsigned fl, efl;
	if (!v || sscanf(v, "%x event-flags:%x", &fl, &efl) != 2)
		return err_set(-EIO, "fd %d: fanotify: no flags in its fdinfo", e->fd);
	e->fan_flags = fl;
	e->fan_event_flags = efl;
	int queued = 0;
	if (ioctl(e->dupfd, FIONREAD, &queued) < 0)
		return err_set(negerrno(), "fd %d: fanotify: FIONREAD: %m", e->fd);
	if (queued > 0)
		return err_set(-EOPNOTSUPP, "fd %d: fanotify group with %d bytes of events not read yet (a new group "
			       "cannot be given them): not supported; checkpoint again once they are read",
			       e->fd, queued);
	for (const char *q = e->fdinfo; (q = strstr(q, "\nfanotify ")); q++) {
		char line[1024];
		const char *p = one_line(q + strlen("\nfanotify "), line, sizeof(line));
		if (!strncmp(p, "flags:", 6))
			continue;
		struct fd_fmark m = { 0 };
		int r = capture_fmark(img, e, &mc, p, &m);
		if (r >= 0 && (fl & (FAN_CLASS_CONTENT | FAN_CLASS_PRE_CONTENT)) && (m.mask & FAN_PERM_EVENTS))
			r = err_set(-EOPNOTSUPP, "fd %d: fanotify permission group with permission events (mask 0x%x) "
				    "on %s: one read and not yet answered cannot be seen from here: not supported",
				    e->fd, m.mask, m.path);
		if (r < 0) {
			free(m.path);
			return r;
		}
		struct fd_fmark *nm = realloc(e->fmarks, (e->n_fmarks + 1) * sizeof(*nm));
		if (!nm) {
			free(m.path);
			return -ENOMEM;
		}
		e->fmarks = nm;
		e->fmarks[e->n_fmarks++] = m;
	}
	struct fds_buf b = { 0 };
	for (size_t i = 0; i < e->n_fmarks; i++) {
		const struct fd_fmark *m = &e->fmarks[i];
		fds_printf(&b, "mark=%s mflags=0x%x mask=0x%x ignored=0x%x", fmark_name(m->type), m->mflags, m->mask,
			   m->ignored);
		fds_put_path(&b, "path", m->path, strlen(m->path));
		fds_printf(&b, "\n");
	}
	if (b.err) {
		free(b.p);
		return b.err;
	}
	e->count = e->n_fmarks;
	e->data = b.p;
	e->data_len = b.len;
	return 0;
}

/* e's marks from its data file (capture_fanotify's lines). */
static int parse_fmarks(struct fd_entry *e)
{
	_cleanup_free_ char *text = strndup(e->data ? e->data : "", e->data_len);
	if (!text)
		return -ENOMEM;
	char *save = NULL;
	for (char *l = strtok_r(text, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
		struct fd_fmark m = { 0 };
		char type[16], path[PATH_MAX + 1];
		int n = 0;
		if (sscanf(l, "mark=%15s mflags=0x%x mask=0x%x ignored=0x%x path=%n", type, &m.mflags, &m.mask,
			   &m.ignored, &n) != 4 || !n || fds_unescape(l + n, path, sizeof(path)) <= 0 ||
		    path[0] != '/' || (m.mflags & ~FAN_MFLAGS_KNOWN))
			return err_set(-EBADMSG, "fd %d: fanotify: bad mark line '%s' (mark=inode|mount|filesystem "
				       "mflags=0xF mask=0xM ignored=0xI path=P)", e->fd, l);
		if (!strcmp(type, "inode"))
			m.type = FAN_MARK_INODE;
		else if (!strcmp(type, "mount"))
			m.type = FAN_MARK_MOUNT;
		else if (!strcmp(type, "filesystem"))
			m.type = FAN_MARK_FILESYSTEM;
		else
			return err_set(-EBADMSG, "fd %d: fanotify: mark=%s: not inode, mount or filesystem", e->fd,
				       type);
		struct fd_fmark *nm = realloc(e->fmarks, (e->n_fmarks + 1) * sizeof(*nm));
		if (!nm)
			return -ENOMEM;
		e->fmarks = nm;
		if (!(m.path = strdup(path)))
			return -ENOMEM;
		e->fmarks[e->n_fmarks++] = m;
	}
	if (e->n_fmarks != e->count)
		return err_set(-EBADMSG, "fd %d: fanotify: %zu marks in its data file, the line says %" PRIu64,
			       e->fd, e->n_fmarks, e->count);
	return 0;
}

int fds_event_capture(struct fd_image *img, struct fd_entry *e)
{
	const char *v;
	unsigned long long a, b, c, d;

	switch (e->kind) {
	case FD_KIND_EVENTFD: {
		unsigned sem;
		v = fds_info(e, "eventfd-count");
		if (!v || sscanf(v, "%llx", &a) != 1)
			return err_set(-EIO, "fd %d: eventfd: no count in fdinfo", e->fd);
		e->count = a;
		/* Shown since Linux 6.6; before, the mode cannot be told. */
		v = fds_info(e, "eventfd-semaphore");
		if (!v || sscanf(v, "%u", &sem) != 1)
			return err_set(-EOPNOTSUPP, "fd %d: eventfd: this kernel does not show its semaphore mode: "
						    "not supported", e->fd);
		e->semaphore = sem != 0;
		return 0;
	}
	case FD_KIND_EPOLL:
		return capture_epoll(img, e);
	case FD_KIND_INOTIFY:
		return capture_inotify(e);
	case FD_KIND_FANOTIFY:
		return capture_fanotify(img, e);
	case FD_KIND_TIMERFD: {
		int clk;
		unsigned long long ticks;
		unsigned fl;
		if (!(v = fds_info(e, "clockid")) || sscanf(v, "%d", &clk) != 1 ||
		    !(v = fds_info(e, "ticks")) || sscanf(v, "%llu", &ticks) != 1 ||
		    !(v = fds_info(e, "settime flags")) || sscanf(v, "%o", &fl) != 1 ||
		    !(v = fds_info(e, "it_value")) || sscanf(v, "(%llu, %llu)", &a, &b) != 2 ||
		    !(v = fds_info(e, "it_interval")) || sscanf(v, "(%llu, %llu)", &c, &d) != 2)
			return err_set(-EIO, "fd %d: timerfd: cannot parse its fdinfo", e->fd);
		e->clockid = clk;
		e->ticks = ticks;
		e->settime_flags = fl;
		e->value = (struct timespec){ .tv_sec = (time_t)a, .tv_nsec = (long)b };
		e->interval = (struct timespec){ .tv_sec = (time_t)c, .tv_nsec = (long)d };
		/* a wall-clock deadline stays that deadline, however long until
		 * the restore: the time left is read against now */
		if ((fl & TFD_TIMER_ABSTIME) && (clk == CLOCK_REALTIME || clk == CLOCK_REALTIME_ALARM) && (a || b)) {
			struct timespec now;
			clock_gettime(CLOCK_REALTIME, &now);
			e->deadline.tv_sec = now.tv_sec + (time_t)a;
			e->deadline.tv_nsec = now.tv_nsec + (long)b;
			if (e->deadline.tv_nsec >= 1000000000) {
				e->deadline.tv_sec++;
				e->deadline.tv_nsec -= 1000000000;
			}
			e->has_deadline = true;
		}
		return 0;
	}
	case FD_KIND_SIGNALFD:
		v = fds_info(e, "sigmask");
		if (!v || sscanf(v, "%llx", &a) != 1)
			return err_set(-EIO, "fd %d: signalfd: no sigmask in fdinfo", e->fd);
		e->sigmask = a;
		return 0;
	default:
		return -EINVAL;
	}
}

void fds_event_print(struct fd_entry *e, struct fds_buf *b)
{
	switch (e->kind) {
	case FD_KIND_EVENTFD:
		fds_printf(b, " count=%lu semaphore=%d", e->count, e->semaphore);
		break;
	case FD_KIND_EPOLL:
		for (size_t i = 0; i < e->n_watches; i++) {
			fds_printf(b, " watch=%d:0x%x:0x%lx", e->watches[i].tfd, e->watches[i].events,
				   e->watches[i].data);
			if (e->watches[i].via >= 0)
				fds_printf(b, ":%d", e->watches[i].via);
			else if (e->watches[i].shared >= 0)
				fds_printf(b, ":s%d", e->watches[i].shared);
			else if (e->watches[i].lost && !b->err)
				/* only the tree's pass finds its holder */
				b->err = err_set(-EOPNOTSUPP, "fd %d: epoll watch on fd %d, closed, whose holder was not "
						 "looked for in the tree", e->fd, e->watches[i].tfd);
		}
		break;
	case FD_KIND_TIMERFD:
		fds_printf(b, " clock=%d ticks=%lu settime=0x%x value=%ld.%09ld interval=%ld.%09ld",
			   e->clockid, e->ticks, e->settime_flags, e->value.tv_sec, e->value.tv_nsec,
			   e->interval.tv_sec, e->interval.tv_nsec);
		if (e->has_deadline)
			fds_printf(b, " deadline=%ld.%09ld", (long)e->deadline.tv_sec, e->deadline.tv_nsec);
		break;
	case FD_KIND_SIGNALFD:
		fds_printf(b, " mask=0x%lx", e->sigmask);
		break;
	case FD_KIND_INOTIFY:
		fds_printf(b, " watches=%" PRIu64 " size=%" PRIu64, e->count, e->data_len);
		break;
	case FD_KIND_FANOTIFY:
		fds_printf(b, " init=0x%x event-flags=0x%x marks=%" PRIu64 " size=%" PRIu64, e->fan_flags,
			   e->fan_event_flags, e->count, e->data_len);
		break;
	default:
		break;
	}
}

static int parse_watch(struct fd_entry *e, struct fd_line *l, const char *v)
{
	struct fd_watch w = { .via = -1, .shared = -1 };
	unsigned long long data;
	int tfd, n = 0, m = 0;

	if (sscanf(v, "%d:0x%x:0x%llx%n", &tfd, &w.events, &data, &n) != 3 || tfd < 0 ||
	    !isdigit((unsigned char)v[0]))
		return fds_bad(l, "watch=%s: not FD:0xEVENTS:0xDATA[:HOLDER|:sID]", v);
	if (v[n] == ':' && v[n + 1] == 's') {
		if (!isdigit((unsigned char)v[n + 2]) || sscanf(v + n + 2, "%d%n", &w.shared, &m) != 1 || w.shared < 0)
			return fds_bad(l, "watch=%s: sID not a shared description's id", v);
		m++;
	} else if (v[n] == ':' && (!isdigit((unsigned char)v[n + 1]) || sscanf(v + n + 1, "%d%n", &w.via, &m) != 1 ||
				   w.via < 0 || w.via == tfd)) {
		return fds_bad(l, "watch=%s: HOLDER not a descriptor number other than FD", v);
	}
	if (v[n + (v[n] == ':' ? 1 + m : 0)])
		return fds_bad(l, "watch=%s: not FD:0xEVENTS:0xDATA[:HOLDER|:sID]", v);
	w.tfd = tfd;
	w.data = data;
	struct fd_watch *nw = realloc(e->watches, (e->n_watches + 1) * sizeof(*nw));
	if (!nw)
		return -ENOMEM;
	e->watches = nw;
	e->watches[e->n_watches++] = w;
	return 0;
}

int fds_event_parse(struct fd_entry *e, struct fd_line *l)
{
	uint64_t u;
	const char *v;
	int r;

	switch (e->kind) {
	case FD_KIND_EVENTFD:
		if ((r = fds_kv_u64(l, "count", &e->count)) < 0 || (r = fds_kv_bool(l, "semaphore", &e->semaphore)) < 0)
			return r;
		if (e->count >= UINT64_MAX - 1)
			return fds_bad(l, "count=%lu: above the eventfd maximum", e->count);
		return 0;
	case FD_KIND_EPOLL:
		while ((v = fds_kv(l, "watch"))) {
			r = parse_watch(e, l, v);
			if (r < 0)
				return r;
		}
		return 0;
	case FD_KIND_TIMERFD:
		if ((r = fds_kv_u64(l, "clock", &u)) < 0)
			return r;
		if (u != CLOCK_REALTIME && u != CLOCK_MONOTONIC && u != CLOCK_BOOTTIME &&
		    u != CLOCK_REALTIME_ALARM && u != CLOCK_BOOTTIME_ALARM)
			return fds_bad(l, "clock=%lu: not a timerfd clock", u);
		e->clockid = (int)u;
		if ((r = fds_kv_u64(l, "ticks", &e->ticks)) < 0 || (r = fds_kv_hex(l, "settime", &u)) < 0)
			return r;
		if (u & ~(uint64_t)(TFD_TIMER_ABSTIME | TFD_TIMER_CANCEL_ON_SET))
			return fds_bad(l, "settime=0x%lx: unknown flags", u);
		e->settime_flags = (unsigned)u;
		if ((r = fds_kv_ts(l, "value", &e->value)) < 0 || (r = fds_kv_ts(l, "interval", &e->interval)) < 0)
			return r;
		if (e->value.tv_nsec >= 1000000000 || e->interval.tv_nsec >= 1000000000)
			return fds_bad(l, "nanoseconds out of range");
		if (fds_kv_has(l, "deadline")) {
			if ((r = fds_kv_ts(l, "deadline", &e->deadline)) < 0)
				return r;
			if (e->deadline.tv_nsec >= 1000000000)
				return fds_bad(l, "nanoseconds out of range");
			e->has_deadline = true;
		}
		return 0;
	case FD_KIND_SIGNALFD:
		return fds_kv_hex(l, "mask", &e->sigmask);
	case FD_KIND_INOTIFY:
		/* the watches are in the data file, read after this line */
		if ((r = fds_kv_u64(l, "watches", &e->count)) < 0 || (r = fds_kv_u64(l, "size", &e->data_len)) < 0)
			return r;
		if (!e->count != !e->data_len)
			return fds_bad(l, "watches=%" PRIu64 " with size=%" PRIu64, e->count, e->data_len);
		return 0;
	case FD_KIND_FANOTIFY:
		if ((r = fds_kv_hex(l, "init", &u)) < 0)
			return r;
		if (u > UINT32_MAX)
			return fds_bad(l, "init=0x%lx: out of range", u);
		e->fan_flags = (unsigned)u;
		if ((r = fds_kv_hex(l, "event-flags", &u)) < 0)
			return r;
		if (u > 0x7fffffff)
			return fds_bad(l, "event-flags=0x%lx: not open flags", u);
		e->fan_event_flags = (unsigned)u;
		if ((r = fds_kv_u64(l, "marks", &e->count)) < 0 || (r = fds_kv_u64(l, "size", &e->data_len)) < 0)
			return r;
		if (!e->count != !e->data_len)
			return fds_bad(l, "marks=%" PRIu64 " with size=%" PRIu64, e->count, e->data_len);
		return 0;
	default:
		return -EINVAL;
	}
}

static int open_timerfd(struct fd_entry *e)
{
	_cleanup_close_ int fd = timerfd_create(e->clockid, TFD_CLOEXEC);
	struct itimerspec its = { .it_value = e->value, .it_interval = e->interval };
	int flags = 0;

	if (fd < 0)
		return err_set(negerrno(), "fd %d: timerfd_create clock %d", e->fd, e->clockid);
	if (its.it_value.tv_sec || its.it_value.tv_nsec) {
		if (e->has_deadline && (e->settime_flags & TFD_TIMER_ABSTIME)) {
			/* the wall-clock time it was set for; past, it fires at
			 * once and counts the intervals missed, as it would have */
			its.it_value = e->deadline;
			flags = (int)e->settime_flags;
		} else if (e->settime_flags & TFD_TIMER_ABSTIME) {
			/* Same time left; absolute again so that clock changes
			 * (and CANCEL_ON_SET) act as they did. */
			struct timespec now;
			if (clock_gettime(e->clockid, &now) < 0)
				return err_set(negerrno(), "fd %d: clock_gettime %d", e->fd, e->clockid);
			its.it_value.tv_sec += now.tv_sec;
			its.it_value.tv_nsec += now.tv_nsec;
			if (its.it_value.tv_nsec >= 1000000000) {
				its.it_value.tv_sec++;
				its.it_value.tv_nsec -= 1000000000;
			}
			flags = (int)e->settime_flags;
		}
		if (timerfd_settime(fd, flags, &its, NULL) < 0)
			return err_set(negerrno(), "fd %d: timerfd_settime", e->fd);
	}
	/* After settime, which clears the count of expirations. */
	if (e->ticks && ioctl(fd, TFD_IOC_SET_TICKS, &e->ticks) < 0)
		return err_set(negerrno(), "fd %d: timerfd: cannot restore %lu expirations", e->fd, e->ticks);
	return TAKE_FD(fd);
}

/* A path no watch of e names (by inode), to take and give back numbers. */
static const char *spare_path(const struct fd_entry *e)
{
	static const char *const cand[] = { "/", "/dev/null", "/proc", "/sys", "/tmp" };
	for (size_t c = 0; c < ARRAY_SIZE(cand); c++) {
		struct stat a, b;
		bool used = stat(cand[c], &a) < 0;
		for (size_t i = 0; i < e->n_iwatches && !used; i++)
			used = stat(e->iwatches[i].path, &b) == 0 && a.st_dev == b.st_dev && a.st_ino == b.st_ino;
		if (!used)
			return cand[c];
	}
	return NULL;
}

/* Reads fd's queued events away. */
static int drain(int fd)
{
	int fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
		return negerrno();
	char buf[4096];
	while (read(fd, buf, sizeof(buf)) > 0)
		;
	int r = errno == EAGAIN ? 0 : negerrno();
	if (fcntl(fd, F_SETFL, fl) < 0 && !r)
		r = negerrno();
	return r;
}

static int open_inotify(struct fd_entry *e)
{
	int r = e->n_iwatches ? 0 : parse_iwatches(e);
	if (r < 0)
		return r;
	_cleanup_close_ int fd = inotify_init1(IN_CLOEXEC);
	if (fd < 0)
		return err_set(negerrno(), "fd %d: inotify_init1", e->fd);
	const char *spare = e->n_iwatches ? spare_path(e) : "/";
	int next = 1;
	for (size_t i = 0; i < e->n_iwatches; i++) {
		const struct fd_iwatch *w = &e->iwatches[i];
		/* numbers go up one by one (and wrap): the ones between are
		 * taken and given back */
		while (next < w->wd) {
			int d = spare ? inotify_add_watch(fd, spare, IN_ATTRIB) : -1;
			if (d < 0 || inotify_rm_watch(fd, d) < 0)
				return err_set(d < 0 ? negerrno() : -EIO, "fd %d: inotify: cannot reach watch number %d",
					       e->fd, w->wd);
			next = d + 1;
		}
		/* a watch given back queues IN_IGNORED: not the process's */
		if ((r = drain(fd)) < 0)
			return err_set(r, "fd %d: inotify: %s", e->fd, strerror(-r));
		int got = inotify_add_watch(fd, w->path, w->mask);
		if (got < 0)
			return err_set(negerrno(), "fd %d: inotify watch %d on %s (mask 0x%x): %m", e->fd, w->wd,
				       w->path, w->mask);
		if (got != w->wd)
			return err_set(-EIO, "fd %d: inotify watch on %s got number %d, not %d", e->fd, w->path, got,
				       w->wd);
		next = got + 1;
	}
	return TAKE_FD(fd);
}

/* Adds watch w of epoll instance epfd under number w->tfd, which was
 * closed or replaced since the watch was added: the kernel knows a watch
 * by file and number, so the file (held at w->via) is put at that number
 * for the time of EPOLL_CTL_ADD, and what the number held (a descriptor
 * of the image or of ours, above max) is put back. */
static int add_via(struct fd_entry *e, int epfd, const struct fd_watch *w, int max)
{
	struct epoll_event ev = { .events = w->events, .data.u64 = w->data };
	int fdfl = fcntl(w->tfd, F_GETFD), saved = -1, r = 0;

	if (fdfl >= 0 && (saved = fcntl(w->tfd, F_DUPFD_CLOEXEC, max + 1)) < 0)
		return err_set(negerrno(), "fd %d: epoll: cannot set fd %d aside: %m", e->fd, w->tfd);
	if (dup3(w->via, w->tfd, O_CLOEXEC) < 0)
		r = err_set(negerrno(), "fd %d: epoll: cannot put the file of fd %d at fd %d: %m", e->fd, w->via,
			    w->tfd);
	else if (fault_hit(FAULT_ENGINE_EPOLL_VIA))
		r = err_set(-EIO, "fd %d: epoll: watch on fd %d (file of fd %d): injected fault", e->fd, w->tfd,
			    w->via);
	else if (epoll_ctl(epfd, EPOLL_CTL_ADD, w->tfd, &ev) < 0)
		r = err_set(negerrno(), "fd %d: epoll: cannot watch the file of fd %d as fd %d (events 0x%x): %m",
			    e->fd, w->via, w->tfd, w->events);
	/* the number as it was, whatever happened */
	if (saved >= 0) {
		if (dup3(saved, w->tfd, fdfl & FD_CLOEXEC ? O_CLOEXEC : 0) < 0 && r >= 0)
			r = err_set(negerrno(), "fd %d: epoll: cannot put fd %d back: %m", e->fd, w->tfd);
		close(saved);
	} else {
		close(w->tfd);
	}
	return r;
}

static int open_epoll(struct fd_image *img, struct fd_entry *e)
{
	int max = fds_max(img), top = max;
	int fd = epoll_create1(EPOLL_CLOEXEC);

	if (fd < 0)
		return err_set(negerrno(), "fd %d: epoll_create1", e->fd);
	/* above every number a watch may borrow */
	for (size_t i = 0; i < e->n_watches; i++)
		if ((e->watches[i].via >= 0 || e->watches[i].shared >= 0) && e->watches[i].tfd > top)
			top = e->watches[i].tfd;
	fd = fds_move_above(fd, top);
	if (fd < 0)
		return err_set(fd, "fd %d: epoll: cannot move above fd %d", e->fd, top);
	for (size_t i = 0; i < e->n_watches; i++) {
		const struct fd_watch *w = &e->watches[i];
		struct epoll_event ev = { .events = w->events, .data.u64 = w->data };
		int r = 0;
		if (w->shared >= 0) {
			/* its description, inherited at the tree's base */
			struct fd_watch sw = *w;
			sw.via = img->shared_base + w->shared;
			r = img->shared_base > max ? add_via(e, fd, &sw, top)
						   : err_set(-EINVAL, "fd %d: epoll watch on shared description %d, but no "
								      "shared base above fd %d", e->fd, w->shared, max);
		} else if (w->via >= 0)
			r = add_via(e, fd, w, top);
		else if (epoll_ctl(fd, EPOLL_CTL_ADD, w->tfd, &ev) < 0)
			r = err_set(negerrno(), "fd %d: epoll: cannot watch fd %d (events 0x%x)", e->fd, w->tfd,
				    w->events);
		if (r < 0) {
			close(fd);
			return r;
		}
	}
	return fd;
}

int fds_event_validate(struct fd_image *img)
{
	for (size_t i = 0; i < img->n; i++) {
		struct fd_entry *e = &img->e[i];
		int r = e->kind == FD_KIND_FANOTIFY && !e->n_fmarks ? parse_fmarks(e) : 0;
		if (r < 0)
			return r;
	}
	return 0;
}

int fds_event_check_host(struct fd_image *img, struct fd_entry *e)
{
	(void)img;
	if (e->kind != FD_KIND_FANOTIFY)
		return 0;
	/* in the restorer, with the privileges the process is built with:
	 * refused before anything is, where a group cannot be made */
	unsigned fl = (e->fan_flags & ~(unsigned)(FAN_CLOEXEC | FAN_NONBLOCK)) | FAN_CLOEXEC;
	int fd = fanotify_init(fl, e->fan_event_flags);
	if (fd < 0) {
		int r = negerrno();
		return err_set(r, "fd %d: fanotify group (flags 0x%x) cannot be made here: %s%s", e->fd, fl,
			       strerror(-r), r == -EPERM ? " (it takes CAP_SYS_ADMIN)" : "");
	}
	close(fd);
	return 0;
}

/* fanotify_init with the group's flags (close-on-exec and non-blocking
 * are the descriptor's, set by the caller), then each mark added again by
 * path, oldest first so that fdinfo lists them as it did. */
static int open_fanotify(struct fd_entry *e)
{
	int r = e->n_fmarks ? 0 : parse_fmarks(e);
	if (r < 0)
		return r;
	unsigned fl = (e->fan_flags & ~(unsigned)(FAN_CLOEXEC | FAN_NONBLOCK)) | FAN_CLOEXEC;
	_cleanup_close_ int fd = fanotify_init(fl, e->fan_event_flags);
	if (fd < 0) {
		r = negerrno();
		return err_set(r, "fd %d: fanotify_init (flags 0x%x, event flags 0x%x): %s%s", e->fd, fl,
			       e->fan_event_flags, strerror(-r),
			       r == -EPERM ? " (a fanotify group with these flags takes CAP_SYS_ADMIN)" : "");
	}
	for (size_t i = e->n_fmarks; i-- > 0;) {
		const struct fd_fmark *m = &e->fmarks[i];
		unsigned evict = m->mflags & FAN_MARK_EVICTABLE;
		if (i == 0 && fault_hit(FAULT_ENGINE_FANOTIFY_MARK))
			return err_set(-EIO, "fd %d: fanotify %s mark on %s: injected fault", e->fd, fmark_name(m->type),
				       m->path);
		if (m->ignored) {
			unsigned how = (m->mflags & FAN_MARK_IGNORE) ? FAN_MARK_IGNORE : FAN_MARK_IGNORED_MASK;
			if (fanotify_mark(fd, FAN_MARK_ADD | m->type | evict | how |
					  (m->mflags & FAN_MARK_IGNORED_SURV_MODIFY), m->ignored, AT_FDCWD, m->path) < 0)
				return err_set(negerrno(), "fd %d: fanotify %s mark on %s: ignored mask 0x%x: %m", e->fd,
					       fmark_name(m->type), m->path, m->ignored);
		}
		if (m->mask && fanotify_mark(fd, FAN_MARK_ADD | m->type | evict, m->mask, AT_FDCWD, m->path) < 0)
			return err_set(negerrno(), "fd %d: fanotify %s mark on %s: mask 0x%x: %m", e->fd,
				       fmark_name(m->type), m->path, m->mask);
	}
	return TAKE_FD(fd);
}

int fds_event_open(struct fd_image *img, struct fd_entry *e)
{
	int fd;

	switch (e->kind) {
	case FD_KIND_EVENTFD:
		fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK | (e->semaphore ? EFD_SEMAPHORE : 0));
		if (fd < 0)
			return err_set(negerrno(), "fd %d: eventfd", e->fd);
		/* write(2) takes the full 64-bit count, eventfd(2)'s argument does not. */
		if (e->count && write(fd, &e->count, sizeof(e->count)) != sizeof(e->count)) {
			int r = negerrno();
			close(fd);
			return err_set(r, "fd %d: eventfd: cannot set the count %lu", e->fd, e->count);
		}
		return fd;
	case FD_KIND_TIMERFD:
		return open_timerfd(e);
	case FD_KIND_INOTIFY:
		return open_inotify(e);
	case FD_KIND_FANOTIFY:
		return open_fanotify(e);
	case FD_KIND_SIGNALFD: {
		sigset_t set;
		sigemptyset(&set);
		for (int sig = 1; sig <= 64; sig++)
			if (e->sigmask & (1ull << (sig - 1)))
				sigaddset(&set, sig);
		fd = signalfd(-1, &set, SFD_CLOEXEC);
		if (fd < 0)
			return err_set(negerrno(), "fd %d: signalfd mask 0x%lx", e->fd, e->sigmask);
		return fd;
	}
	case FD_KIND_EPOLL:
		return open_epoll(img, e);
	default:
		return -EINVAL;
	}
}
