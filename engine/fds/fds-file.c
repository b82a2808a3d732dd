/*
 * engine/fds/fds-file.c: descriptors of files: regular files and directories
 * reachable by their path, /dev/null and friends, terminals, deleted but
 * open files, memfds.
 *
 * A file reachable by its path is reopened by it. A log (a regular file
 * open write-only with O_APPEND) is reopened at its end, whatever it
 * became: the program only ever adds to its end, and the lines it wrote
 * after the dump are no reason to refuse it (CRIU does the same). Any
 * other regular file must be the same inode with the same size, the
 * narrowest check that still catches another file or another content
 * under the path; mtime is recorded but not compared, since a touch or a
 * rewrite of the same bytes leaves the file as it was. A directory must
 * be the same inode. A restore that accepts changed files
 * (engine_restore_opts.accept_changed_files) reopens them anyway; one
 * that is gone is refused either way. Files that have no path any more
 * (deleted, memfd) carry their content in the image. A terminal that is
 * gone at restore becomes /dev/null, with a warning.
 */
#include <fcntl.h>
#include <limits.h>
#include <libgen.h>
#include <linux/magic.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>

#include "engine/fds/fds-int.h"

#define DELETED_SUFFIX " (deleted)"
#define MEMFD_PREFIX "/memfd:"

/* Flags that create or destroy content must never be replayed. */
#define OPEN_DROP (O_CREAT | O_EXCL | O_TRUNC | O_TMPFILE)

static bool has_suffix(const char *s, const char *suf)
{
	size_t a = strlen(s), b = strlen(suf);

	return a >= b && strcmp(s + a - b, suf) == 0;
}

static bool is_mem_dev(unsigned ma, unsigned mi)
{
	/* null, zero, full, random, urandom */
	return ma == 1 && (mi == 3 || mi == 5 || mi == 7 || mi == 8 || mi == 9);
}

static bool is_tty_dev(unsigned ma, unsigned mi)
{
	/* pts slaves, virtual consoles and serial ports, /dev/tty, /dev/console */
	return (ma >= 136 && ma <= 143) || ma == 4 || (ma == 5 && (mi == 0 || mi == 1));
}

/* A memfd or deleted file that the process also maps shared: the areas
 * make it again as the tree's shared memory object (restore.c), which the
 * descriptor then reopens (fds_shm_bind), so both stay one file. Where
 * those areas cover the whole file, they hold its bytes and the line
 * holds none (content_shm). A seal against future writes would forbid
 * the writable mapping made after the descriptor at restore: refused. */
static int shared_mapping_scan(struct fd_image *img, struct fd_entry *e)
{
	char path[64], line[512];
	_cleanup_fclose_ FILE *f = NULL;
	uint64_t covered = 0; /* [0, covered) is mapped, areas in address order meeting it */
	bool more = true;

	e->has_obj = true;
	e->ino = e->st->st_ino;
	e->obj_major = major(e->st->st_dev);
	e->obj_minor = minor(e->st->st_dev);
	snprintf(path, sizeof(path), "/proc/%d/maps", img->pid);
	f = fopen(path, "re");
	if (!f)
		return err_set(negerrno(), "pid %d: cannot read its maps", img->pid);
	int seals = e->kind == FD_KIND_MEMFD ? fcntl(e->dupfd, F_GET_SEALS) : 0;
	/* a few passes: areas need not come in file order */
	for (int pass = 0; pass < 8 && more; pass++) {
		more = false;
		rewind(f);
		while (fgets(line, sizeof(line), f)) {
			unsigned long start, end, off, ino;
			unsigned ma, mi;
			char perms[8];
			if (sscanf(line, "%lx-%lx %7s %lx %x:%x %lu", &start, &end, perms, &off, &ma, &mi, &ino) != 7)
				continue;
			if (perms[3] != 's' || ino != e->st->st_ino || makedev(ma, mi) != e->st->st_dev)
				continue;
			if (seals > 0 && (seals & F_SEAL_FUTURE_WRITE) && perms[1] == 'w')
				return err_set(-EOPNOTSUPP,
					       "fd %d: %s is sealed against future writes (F_SEAL_FUTURE_WRITE) and "
					       "mapped shared and writable at 0x%lx: not supported",
					       e->fd, e->link, start);
			if (off <= covered && off + (end - start) > covered) {
				covered = off + (end - start);
				more = true;
			}
		}
	}
	e->content_shm = covered > 0 && covered >= (uint64_t)e->st->st_size;
	return 1;
}

/* The bytes of data (SEEK_DATA, SEEK_HOLE) of the file e's descriptor
 * holds, through a description of our own (seeking the process's would
 * move its offset). */
static int data_bytes(struct fd_image *img, struct fd_entry *e, uint64_t *ret)
{
	char proc[64];
	uint64_t total = 0;
	off_t pos = 0;

	snprintf(proc, sizeof(proc), "/proc/%d/fd/%d", img->pid, e->fd);
	_cleanup_close_ int fd = open(proc, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return negerrno();
	for (;;) {
		off_t d = lseek(fd, pos, SEEK_DATA);
		if (d < 0 && errno == ENXIO)
			break;
		if (d < 0)
			return negerrno();
		off_t h = lseek(fd, d, SEEK_HOLE);
		if (h < 0)
			return negerrno();
		total += (uint64_t)(h - d);
		pos = h;
	}
	*ret = total;
	return 0;
}

int fds_file_classify(struct fd_image *img, struct fd_entry *e)
{
	const struct stat *st = e->st;
	struct stat here;
	unsigned ma = major(st->st_rdev), mi = minor(st->st_rdev);

	/* anon_inode:[...], pipe:[...], socket:[...] are other kinds, even
	 * where anon inodes report S_IFREG (Linux 6.15+). */
	if (e->link[0] != '/')
		return 0;

	if (S_ISREG(st->st_mode) && st->st_nlink == 0) {
		if (e->flags & O_PATH)
			return err_set(-EOPNOTSUPP, "fd %d: O_PATH descriptor of deleted file %s: not supported",
				       e->fd, e->link);
		struct statfs sfs;
		if (fstatfs(e->dupfd, &sfs) == 0 && sfs.f_type == HUGETLBFS_MAGIC)
			return err_set(-EOPNOTSUPP, "fd %d: %s on hugetlbfs: not supported", e->fd, e->link);
		if (strncmp(e->link, MEMFD_PREFIX, strlen(MEMFD_PREFIX)) == 0 &&
		    has_suffix(e->link, DELETED_SUFFIX)) {
			e->kind = FD_KIND_MEMFD;
			e->name = strndup(e->link + strlen(MEMFD_PREFIX),
					  strlen(e->link) - strlen(MEMFD_PREFIX) - strlen(DELETED_SUFFIX));
		} else {
			e->kind = FD_KIND_DELETED;
			e->path = strndup(e->link, has_suffix(e->link, DELETED_SUFFIX)
							   ? strlen(e->link) - strlen(DELETED_SUFFIX)
							   : strlen(e->link));
		}
		if (!e->name && !e->path)
			return -ENOMEM;
		/* sparse: only the data counts, counted here, before the
		 * process is touched, where its blocks allow more than that
		 * (space allocated but never written is no data) */
		uint64_t data = 0;
		if ((uint64_t)st->st_blocks * 512 > FDS_CONTENT_MAX) {
			int r = data_bytes(img, e, &data);
			if (r < 0)
				return err_set(r, "fd %d: cannot find the data of %s", e->fd, e->link);
		}
		if (data > FDS_CONTENT_MAX)
			return err_set(-EOPNOTSUPP, "fd %d: %s holds %lu bytes of data, above 1 GiB: not supported",
				       e->fd, e->link, data);
		return shared_mapping_scan(img, e);
	}

	if (S_ISDIR(st->st_mode) && st->st_nlink == 0) {
		/* removed while open: empty, made again at restore */
		e->kind = FD_KIND_DIR;
		e->deleted = true;
		char cwd[64];
		snprintf(cwd, sizeof(cwd), "/proc/%d/cwd", img->pid);
		e->is_cwd = stat(cwd, &here) == 0 && here.st_dev == st->st_dev && here.st_ino == st->st_ino;
		e->path = strndup(e->link, has_suffix(e->link, DELETED_SUFFIX)
						   ? strlen(e->link) - strlen(DELETED_SUFFIX)
						   : strlen(e->link));
		return e->path ? 1 : -ENOMEM;
	}

	if (S_ISREG(st->st_mode) || S_ISDIR(st->st_mode)) {
		/* The path must lead to this very file from our mount namespace,
		 * or the restore would open another one. */
		if (stat(e->link, &here) < 0 || here.st_dev != st->st_dev || here.st_ino != st->st_ino)
			return err_set(-EOPNOTSUPP,
				       "fd %d: %s %s is not reachable by its path from here: not supported",
				       e->fd, S_ISDIR(st->st_mode) ? "directory" : "file", e->link);
		e->kind = S_ISDIR(st->st_mode) ? FD_KIND_DIR : FD_KIND_FILE;
	} else if (S_ISCHR(st->st_mode) && is_mem_dev(ma, mi)) {
		e->kind = FD_KIND_DEV;
	} else if (S_ISCHR(st->st_mode) && is_tty_dev(ma, mi)) {
		e->kind = FD_KIND_TTY;
	} else if (S_ISCHR(st->st_mode)) {
		return err_set(-EOPNOTSUPP, "fd %d: character device %s (%u:%u)%s: not supported", e->fd,
			       e->link, ma, mi, ma == 5 && mi == 2 ? ", a pseudo-terminal master" : "");
	} else if (S_ISBLK(st->st_mode)) {
		return err_set(-EOPNOTSUPP, "fd %d: block device %s: not supported", e->fd, e->link);
	} else if (S_ISFIFO(st->st_mode)) {
		return 0; /* fds-pipe.c */
	} else {
		return err_set(-EOPNOTSUPP, "fd %d: %s (mode 0%o): not supported", e->fd, e->link,
			       st->st_mode);
	}
	e->path = strdup(e->link);
	return e->path ? 1 : -ENOMEM;
}

/* A deleted file's or memfd's owner and times, which fstat() shows the
 * process: older snapshots have none and restore them as the restorer's
 * and the restore's. */
static void content_owner_format(struct fds_buf *b, const struct fd_entry *e)
{
	if (e->has_owner)
		fds_printf(b, " uid=%u gid=%u", e->uid, e->gid);
	if (e->has_times)
		fds_printf(b, " atime=%ld.%09ld mtime=%ld.%09ld", (long)e->atime.tv_sec, e->atime.tv_nsec,
			   (long)e->mtime.tv_sec, e->mtime.tv_nsec);
}

static int content_owner_parse(struct fd_line *l, struct fd_entry *e)
{
	uint64_t uid, gid;
	int r;
	if (fds_kv_has(l, "uid")) {
		if ((r = fds_kv_u64(l, "uid", &uid)) < 0 || (r = fds_kv_u64(l, "gid", &gid)) < 0)
			return r;
		if (uid >= UINT32_MAX || gid >= UINT32_MAX)
			return fds_bad(l, "uid= or gid= out of range");
		e->has_owner = true;
		e->uid = (uid_t)uid;
		e->gid = (gid_t)gid;
	}
	if (fds_kv_has(l, "atime")) {
		if ((r = fds_kv_ts(l, "atime", &e->atime)) < 0 || (r = fds_kv_ts(l, "mtime", &e->mtime)) < 0)
			return r;
		e->has_times = true;
	}
	return 0;
}

/* Copies the data runs of the file open at fd (SEEK_DATA, SEEK_HOLE:
 * holes are not read) into e->data, back to back, and their places into
 * e->runs (none when the data is the whole file). -EFBIG above
 * FDS_CONTENT_MAX bytes of data. */
static int copy_runs(int fd, struct fd_entry *e)
{
	_cleanup_free_ struct fd_run *runs = NULL;
	_cleanup_free_ char *buf = NULL;
	size_t n = 0;
	uint64_t total = 0, pos = 0;

	while (pos < e->size) {
		off_t d = lseek(fd, (off_t)pos, SEEK_DATA);
		if (d < 0 && errno == ENXIO)
			break;
		if (d < 0)
			return negerrno();
		off_t h = n + 1 == FDS_RUNS_MAX ? (off_t)e->size : lseek(fd, d, SEEK_HOLE);
		if (h < 0)
			return negerrno();
		if ((uint64_t)h > e->size)
			h = (off_t)e->size;
		if (h <= d)
			break;
		struct fd_run *nr = realloc(runs, (n + 1) * sizeof(*nr));
		if (!nr)
			return -ENOMEM;
		runs = nr;
		runs[n++] = (struct fd_run){ (uint64_t)d, (uint64_t)(h - d) };
		total += (uint64_t)(h - d);
		if (total > FDS_CONTENT_MAX)
			return err_set(-EFBIG, "%lu bytes of data or more, above 1 GiB", total);
		pos = (uint64_t)h;
	}
	buf = malloc(total ? total : 1);
	if (!buf)
		return -ENOMEM;
	uint64_t at = 0;
	for (size_t i = 0; i < n; i++) {
		/* pread: the description's offset is the process's, never ours. */
		ssize_t k = pread_full(fd, buf + at, runs[i].len, (off_t)runs[i].off);
		if (k < 0)
			return (int)k;
		if ((uint64_t)k != runs[i].len)
			return -EIO; /* shrunk under us: the process is frozen, someone else did it */
		at += runs[i].len;
	}
	e->data = TAKE_PTR(buf);
	e->data_len = total;
	/* the whole file in one run is the old form: no runs= */
	if (!(n == 1 && runs[0].off == 0 && runs[0].len == e->size) && (n || e->size)) {
		e->runs = TAKE_PTR(runs);
		e->n_runs = n;
	}
	return 0;
}

static void runs_format(struct fds_buf *b, const struct fd_entry *e)
{
	if (e->content_shm || (!e->runs && !(e->size && !e->data_len)))
		return;
	fds_printf(b, " runs=");
	if (!e->n_runs)
		fds_printf(b, "none");
	for (size_t i = 0; i < e->n_runs; i++)
		fds_printf(b, "%s%lx+%lx", i ? "," : "", e->runs[i].off, e->runs[i].len);
}

/* runs=OFF+LEN,... (hex) or none: in order, apart, within size; their
 * lengths add up to data_len. */
static int runs_parse(struct fd_line *l, struct fd_entry *e)
{
	const char *v;
	int r;

	if (!fds_kv_has(l, "runs")) {
		e->data_len = e->size;
		return 0;
	}
	if ((r = fds_kv_req(l, "runs", &v)) < 0)
		return r;
	uint64_t total = 0, end = 0;
	size_t n = 0;
	e->runs = calloc(FDS_RUNS_MAX, sizeof(*e->runs));
	if (!e->runs)
		return -ENOMEM;
	for (const char *p = strcmp(v, "none") ? v : ""; *p;) {
		unsigned long off, len;
		int used = 0;
		if (n == FDS_RUNS_MAX || sscanf(p, "%lx+%lx%n", &off, &len, &used) != 2 || !len || off < end ||
		    off > e->size || len > e->size - off)
			return fds_bad(l, "runs=: bad, overlapping or out of order run %zu", n);
		e->runs[n++] = (struct fd_run){ off, len };
		end = off + len;
		total += len;
		p += used;
		if (*p == ',')
			p++;
		else if (*p)
			return fds_bad(l, "runs=: bad separator after run %zu", n);
	}
	e->n_runs = n;
	if (total > FDS_CONTENT_MAX)
		return fds_bad(l, "runs=: %lu bytes of data, above 1 GiB", total);
	e->data_len = total;
	return 0;
}

/* What a file made again gets back: mode, owner, access and modification
 * times (a removed directory, a deleted file, a memfd). */
static void keep_owner_times(struct fd_entry *e, const struct stat *st)
{
	e->mode = st->st_mode & 07777;
	e->has_owner = e->has_times = true;
	e->uid = st->st_uid;
	e->gid = st->st_gid;
	e->atime = st->st_atim;
	e->mtime = st->st_mtim;
}

int fds_file_capture(struct fd_image *img, struct fd_entry *e)
{
	const struct stat *st = e->st;
	char proc[64];
	_cleanup_close_ int fd = -1;
	int r;

	switch (e->kind) {
	case FD_KIND_FILE:
		e->size = (uint64_t)st->st_size;
		e->mtime_ns = st->st_mtim.tv_sec * 1000000000ll + st->st_mtim.tv_nsec;
		/* fall through */
	case FD_KIND_DIR:
		e->ino = st->st_ino;
		if (e->deleted)
			keep_owner_times(e, st);
		return 0;
	case FD_KIND_DEV:
		e->rdev_major = major(st->st_rdev);
		e->rdev_minor = minor(st->st_rdev);
		return 0;
	case FD_KIND_TTY:
		/* A pty slave's number is used again once its pair is gone: the
		 * time its devpts node was made (its ctime: reads and writes
		 * touch only atime and mtime) tells the same pty from a new one
		 * at restore. */
		if (e->pty)
			e->mtime_ns = st->st_ctim.tv_sec * 1000000000ll + st->st_ctim.tv_nsec;
		return 0;
	case FD_KIND_MEMFD: {
		int seals = fcntl(e->dupfd, F_GET_SEALS);
		if (seals < 0)
			return err_set(negerrno(), "fd %d: memfd %s: cannot read its seals", e->fd, e->name);
		e->seals = (unsigned)seals;
	}
		/* fall through */
	case FD_KIND_DELETED:
		e->size = (uint64_t)st->st_size;
		keep_owner_times(e, st);
		if (e->content_shm)
			return 0; /* the areas' memory files hold it */
		/* Our duplicate may be write-only: read through a fresh
		 * description of the same inode, which leaves the process's
		 * offset alone too. */
		snprintf(proc, sizeof(proc), "/proc/%d/fd/%d", img->pid, e->fd);
		fd = open(proc, O_RDONLY | O_CLOEXEC | O_NOCTTY);
		if (fd < 0)
			return err_set(negerrno(), "fd %d: cannot reopen %s to copy its content", e->fd, e->link);
		r = copy_runs(fd, e);
		if (r < 0)
			return err_set(r, "fd %d: cannot copy the content of %s (%lu bytes)", e->fd, e->link,
				       e->size);
		return 0;
	default:
		return -EINVAL;
	}
}

/* The file's identity, to meet the areas that map it at restore; and
 * content=shm where they hold its bytes. */
static void obj_format(struct fds_buf *b, const struct fd_entry *e)
{
	if (!e->has_obj)
		return;
	fds_printf(b, " dev=%x:%x ino=%lu", e->obj_major, e->obj_minor, e->ino);
	if (e->content_shm)
		fds_printf(b, " content=shm");
}

static int obj_parse(struct fd_line *l, struct fd_entry *e)
{
	const char *v;
	int r;

	if (!fds_kv_has(l, "dev"))
		return 0;
	if ((r = fds_kv_req(l, "dev", &v)) < 0 || (r = fds_kv_u64(l, "ino", &e->ino)) < 0)
		return r;
	if (sscanf(v, "%x:%x", &e->obj_major, &e->obj_minor) != 2)
		return fds_bad(l, "dev=%s: not MAJOR:MINOR in hex", v);
	e->has_obj = true;
	if (fds_kv_has(l, "content")) {
		if ((r = fds_kv_req(l, "content", &v)) < 0)
			return r;
		if (strcmp(v, "shm"))
			return fds_bad(l, "content=%s: not shm", v);
		e->content_shm = true;
	}
	return 0;
}

void fds_shm_bind(struct fd_image *img, unsigned dev_major, unsigned dev_minor, uint64_t ino, uint32_t id)
{
	for (size_t i = 0; i < img->n; i++) {
		struct fd_entry *e = &img->e[i];
		if ((e->kind == FD_KIND_MEMFD || e->kind == FD_KIND_DELETED) && e->has_obj && e->ino == ino &&
		    e->obj_major == dev_major && e->obj_minor == dev_minor)
			e->shm_id = id + 1;
	}
}

int fds_shm_check(struct fd_image *img)
{
	for (size_t i = 0; i < img->n; i++) {
		struct fd_entry *e = &img->e[i];
		if (e->content_shm && !e->shm_id)
			return err_set(-EBADMSG,
				       "fds: fd %d: content=shm, but no shared memory area maps its file (dev=%x:%x ino=%lu)",
				       e->fd, e->obj_major, e->obj_minor, e->ino);
	}
	return 0;
}

void fds_file_print(struct fd_entry *e, struct fds_buf *b)
{
	switch (e->kind) {
	case FD_KIND_FILE:
		fds_put_path(b, "path", e->path, strlen(e->path));
		fds_printf(b, " pos=%lu ino=%lu size=%lu mtime=%ld", e->pos, e->ino, e->size, e->mtime_ns);
		break;
	case FD_KIND_DIR:
		fds_put_path(b, "path", e->path, strlen(e->path));
		fds_printf(b, " pos=%lu ino=%lu", e->pos, e->ino);
		if (e->deleted) {
			fds_printf(b, " deleted=1%s mode=0%o", e->is_cwd ? " cwd=1" : "", e->mode);
			content_owner_format(b, e);
		}
		break;
	case FD_KIND_DEV:
		fds_put_path(b, "path", e->path, strlen(e->path));
		fds_printf(b, " rdev=%u:%u", e->rdev_major, e->rdev_minor);
		break;
	case FD_KIND_TTY:
		fds_put_path(b, "path", e->path, strlen(e->path));
		if (e->mtime_ns)
			fds_printf(b, " born=%ld", e->mtime_ns);
		fds_tty_print_ctty(e, b);
		break;
	case FD_KIND_DELETED:
		fds_put_path(b, "path", e->path, strlen(e->path));
		fds_printf(b, " pos=%lu size=%lu mode=0%o", e->pos, e->size, e->mode);
		content_owner_format(b, e);
		obj_format(b, e);
		runs_format(b, e);
		break;
	case FD_KIND_MEMFD:
		fds_put_path(b, "name", e->name, strlen(e->name));
		fds_printf(b, " pos=%lu size=%lu mode=0%o seals=0x%x", e->pos, e->size, e->mode, e->seals);
		content_owner_format(b, e);
		obj_format(b, e);
		runs_format(b, e);
		break;
	default:
		break;
	}
}

int fds_file_parse(struct fd_entry *e, struct fd_line *l)
{
	uint64_t u;
	int r = 0;

	if (e->kind == FD_KIND_MEMFD) {
		const char *v;
		char buf[256];
		r = fds_kv_req(l, "name", &v);
		if (r < 0)
			return r;
		/* memfd names may be empty and are at most 249 bytes. */
		if (fds_unescape(v, buf, 250) < 0)
			return fds_bad(l, "name=: bad escaped value");
		e->name = strdup(buf);
		if (!e->name)
			return -ENOMEM;
	} else {
		r = fds_kv_path(l, "path", &e->path);
		if (r < 0)
			return r;
		if (e->path[0] != '/' || strstr(e->path, "/../") || has_suffix(e->path, "/.."))
			return fds_bad(l, "path=%s: not an absolute path", e->path);
	}

	switch (e->kind) {
	case FD_KIND_FILE:
		if ((r = fds_kv_u64(l, "pos", &e->pos)) < 0 || (r = fds_kv_u64(l, "ino", &e->ino)) < 0 ||
		    (r = fds_kv_u64(l, "size", &e->size)) < 0 || (r = fds_kv_u64(l, "mtime", &u)) < 0)
			return r;
		if (u > INT64_MAX)
			return fds_bad(l, "mtime out of range");
		e->mtime_ns = (int64_t)u;
		if ((r = fds_tty_parse_ctty(e, l)) < 0)
			return r;
		break;
	case FD_KIND_DIR:
		if ((r = fds_kv_u64(l, "pos", &e->pos)) < 0 || (r = fds_kv_u64(l, "ino", &e->ino)) < 0)
			return r;
		if (fds_kv_has(l, "deleted")) {
			if ((r = fds_kv_bool(l, "deleted", &e->deleted)) < 0)
				return r;
			if (e->deleted && ((r = fds_kv_mode(l, &e->mode)) < 0 || (r = content_owner_parse(l, e)) < 0))
				return r;
			if (e->deleted && fds_kv_has(l, "cwd") && (r = fds_kv_bool(l, "cwd", &e->is_cwd)) < 0)
				return r;
		}
		break;
	case FD_KIND_DEV: {
		const char *v;
		if ((r = fds_kv_req(l, "rdev", &v)) < 0)
			return r;
		if (sscanf(v, "%u:%u", &e->rdev_major, &e->rdev_minor) != 2 ||
		    !is_mem_dev(e->rdev_major, e->rdev_minor))
			return fds_bad(l, "rdev=%s: not one of null, zero, full, random, urandom", v);
		break;
	}
	case FD_KIND_TTY:
		if ((r = fds_kv_u64_opt(l, "born", 0, &u)) < 0)
			return r;
		if (u > INT64_MAX)
			return fds_bad(l, "born=%lu: out of range", u);
		e->mtime_ns = (int64_t)u;
		if ((r = fds_tty_parse_ctty(e, l)) < 0)
			return r;
		break;
	case FD_KIND_MEMFD:
		if ((r = fds_kv_hex(l, "seals", &u)) < 0)
			return r;
		if (u & ~(uint64_t)(F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE |
				    F_SEAL_FUTURE_WRITE | 0x20 /* F_SEAL_EXEC, Linux 6.3 */))
			return fds_bad(l, "seals=0x%lx: unknown seals", u);
		e->seals = (unsigned)u;
		/* fall through */
	case FD_KIND_DELETED:
		if ((r = fds_kv_u64(l, "pos", &e->pos)) < 0 || (r = fds_kv_u64(l, "size", &e->size)) < 0 ||
		    (r = fds_kv_mode(l, &e->mode)) < 0)
			return r;
		if ((r = content_owner_parse(l, e)) < 0 || (r = obj_parse(l, e)) < 0)
			return r;
		if (e->size > (uint64_t)INT64_MAX)
			return fds_bad(l, "size=%lu: out of range", e->size);
		if (e->content_shm) {
			e->data_len = 0;
			break;
		}
		if ((r = runs_parse(l, e)) < 0)
			return r;
		if (!e->runs && e->size > FDS_CONTENT_MAX)
			return fds_bad(l, "size=%lu: larger than 1 GiB without runs=", e->size);
		break;
	default:
		return -EINVAL;
	}
	return 0;
}

bool fds_file_is_log(const struct fd_entry *e)
{
	return e->kind == FD_KIND_FILE && (e->flags & O_ACCMODE) == O_WRONLY && (e->flags & O_APPEND);
}

/* Checks that path is still the file the image saw. */
static int check_identity(struct fd_image *img, struct fd_entry *e, const struct stat *st)
{
	if (e->kind == FD_KIND_DIR) {
		if (!S_ISDIR(st->st_mode))
			return err_set(-ENOTDIR, "fd %d: %s is no longer a directory", e->fd, e->path);
		if (st->st_ino != e->ino && !img->accept_changed)
			return err_set(-ESTALE,
				       "fd %d: directory %s was replaced since the dump (inode %lu, was %lu); "
				       ENGINE_ACCEPT_HINT,
				       e->fd, e->path, st->st_ino, e->ino);
		return 0;
	}
	if (!S_ISREG(st->st_mode))
		return err_set(-ESTALE, "fd %d: %s is no longer a regular file", e->fd, e->path);
	if (fds_file_is_log(e) || img->accept_changed)
		return 0;
	if (st->st_ino != e->ino)
		return err_set(-ESTALE,
			       "fd %d: file %s was replaced since the dump (inode %lu, was %lu); " ENGINE_ACCEPT_HINT,
			       e->fd, e->path, st->st_ino, e->ino);
	if ((uint64_t)st->st_size != e->size)
		return err_set(-ESTALE,
			       "fd %d: file %s changed since the dump (size %ld, was %lu); " ENGINE_ACCEPT_HINT,
			       e->fd, e->path, st->st_size, e->size);
	return 0;
}

int fds_file_check_host(struct fd_image *img, struct fd_entry *e)
{
	struct stat st;

	switch (e->kind) {
	case FD_KIND_FILE:
	case FD_KIND_DIR:
		if (e->deleted)
			return 0; /* made again, wherever it was */
		if (stat(e->path, &st) < 0)
			return err_set(negerrno(), "fd %d: %s %s is gone", e->fd,
				       e->kind == FD_KIND_DIR ? "directory" : "file", e->path);
		return check_identity(img, e, &st);
	case FD_KIND_DEV:
		if (stat(e->path, &st) < 0 || !S_ISCHR(st.st_mode) || major(st.st_rdev) != e->rdev_major ||
		    minor(st.st_rdev) != e->rdev_minor)
			return err_set(-ENODEV, "fd %d: %s is not the device %u:%u here", e->fd, e->path,
				       e->rdev_major, e->rdev_minor);
		return 0;
	case FD_KIND_TTY: {
		/* /dev/tty is the controlling terminal: a restored process has
		 * one only where its session's was a pseudo-terminal of the tree
		 * (fds-tty.c), known once it runs in it: fds_file_open() tries
		 * /dev/tty first, then this replacement. */
		const char *why = "is gone";
		if (strcmp(e->path, "/dev/tty") == 0) {
			e->to_null = true;
			why = "is the controlling terminal: reopened if the restored session has one again (a "
			      "pseudo-terminal of the tree), else";
		} else {
			_cleanup_close_ int fd = open(e->path, O_RDONLY | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
			e->to_null = fd < 0 || !isatty(fd);
			if (!e->to_null && e->mtime_ns && (fstat(fd, &st) < 0 ||
							   st.st_ctim.tv_sec * 1000000000ll + st.st_ctim.tv_nsec != e->mtime_ns)) {
				e->to_null = true;
				why = "is another terminal now (its pseudo-terminal was closed and the number used again)";
			}
		}
		if (!e->to_null)
			return 0;
		/* Output meant for the terminal goes to CKPTFS_TTY_LOG when
		 * set, so that it is not lost; reads see /dev/null. */
		const char *logf = getenv("CKPTFS_TTY_LOG");
		if (logf && logf[0] == '/' && (e->flags & O_ACCMODE) != O_RDONLY) {
			e->tty_log = strdup(logf);
			if (!e->tty_log)
				return -ENOMEM;
			log_warn("fd %d: terminal %s %s: restored as %s (CKPTFS_TTY_LOG), appended to", e->fd,
				 e->path, why, logf);
		} else {
			log_warn("fd %d: terminal %s %s: restored as /dev/null%s", e->fd, e->path, why,
				 (e->flags & O_ACCMODE) != O_RDONLY ? " (CKPTFS_TTY_LOG=FILE keeps its output)" : "");
		}
		return 0;
	}
	default:
		return 0;
	}
}

/* A new description of the inode open at fd, with the image's flags. */
static int reopen(struct fd_entry *e, int fd)
{
	char proc[64];
	int r;

	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
	r = open(proc, (int)(e->flags & ~OPEN_DROP) | O_CLOEXEC | O_NOCTTY);
	if (r < 0)
		return err_set(negerrno(), "fd %d: cannot reopen the new file with flags 0%o", e->fd,
			       e->flags);
	return r;
}

static int seek_to(struct fd_entry *e, int fd)
{
	if (e->pos && lseek(fd, (off_t)e->pos, SEEK_SET) < 0) {
		int r = negerrno();
		close(fd);
		return err_set(r, "fd %d: cannot seek to %lu", e->fd, e->pos);
	}
	return fd;
}

/* The holes by ftruncate, the runs by their bytes (zero pages of them
 * left as holes too, as fds_fill_content does). */
static int fill_runs(int fd, const struct fd_entry *e)
{
	const char *p = e->data;

	if (ftruncate(fd, (off_t)e->size) < 0)
		return negerrno();
	for (size_t i = 0; i < e->n_runs; i++) {
		if (fault_hit(FAULT_ENGINE_SPARSE_FILL))
			return err_set(-EIO, "data run %zu of %zu at %lu: injected fault", i + 1, e->n_runs,
				       e->runs[i].off);
		for (uint64_t o = 0; o < e->runs[i].len; o += 4096) {
			static const char zero[4096];
			size_t len = MIN(sizeof(zero), e->runs[i].len - o);
			if (memcmp(p + o, zero, len) == 0)
				continue;
			int r = pwrite_full(fd, p + o, len, (off_t)(e->runs[i].off + o));
			if (r < 0)
				return r;
		}
		p += e->runs[i].len;
	}
	return 0;
}

static int open_content(struct fd_image *img, struct fd_entry *e)
{
	_cleanup_close_ int fd = -1;
	int r;

	if (e->shm_id) {
		/* the object the areas of the tree make and map: one file */
		char proc[64];
		if (img->shm_base < 0)
			return err_set(-EBADMSG, "fd %d: shared memory object %u, but the tree has none", e->fd,
				       e->shm_id - 1);
		snprintf(proc, sizeof(proc), "/proc/self/fd/%d", img->shm_base + (int)e->shm_id - 1);
		if (fault_hit(FAULT_ENGINE_SHM_FD))
			return err_set(-EIO, "fd %d: cannot reopen the shared memory object of %s: injected fault",
				       e->fd, e->path ? e->path : e->name);
		fd = open(proc, O_RDWR | O_CLOEXEC);
		if (fd < 0)
			return err_set(negerrno(), "fd %d: cannot reopen the shared memory object of %s: %m", e->fd,
				       e->path ? e->path : e->name);
	} else if (e->kind == FD_KIND_MEMFD) {
		fd = memfd_create(e->name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
		if (fd < 0)
			return err_set(negerrno(), "fd %d: memfd_create '%s'", e->fd, e->name);
	} else {
		/* An unnamed file beside where it lived, so it lands on the same
		 * filesystem; /tmp when that directory is gone. */
		_cleanup_free_ char *dir = strdup(e->path);
		if (!dir)
			return -ENOMEM;
		fd = open(dirname(dir), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
		if (fd < 0)
			fd = open("/tmp", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
		if (fd < 0)
			return err_set(negerrno(), "fd %d: cannot create a file for deleted %s", e->fd, e->path);
	}
	if (e->content_shm) {
		/* its bytes are in already; only the size is the file's */
		r = ftruncate(fd, (off_t)e->size) < 0 ? negerrno() : 0;
	} else if (e->runs || (e->size && !e->data_len)) {
		r = fill_runs(fd, e);
	} else {
		r = fault_hit(FAULT_ENGINE_SPARSE_FILL) ? -EIO : fds_fill_content(fd, e->data, e->size);
	}
	if (r < 0)
		return fds_err_prefix(r, "fd %d: cannot write the content of %s", e->fd,
				      e->path ? e->path : e->name);
	/* the owner first: a change of owner clears set-id bits */
	if (e->has_owner && fchown(fd, e->uid, e->gid) < 0)
		return err_set(negerrno(), "fd %d: %s: cannot give it its owner %u:%u: %m", e->fd,
			       e->path ? e->path : e->name, e->uid, e->gid);
	if (fchmod(fd, e->mode) < 0)
		return err_set(negerrno(), "fd %d: fchmod 0%o", e->fd, e->mode);
	/* last, once nothing writes to it any more */
	struct timespec ts[2] = { e->atime, e->mtime };
	if (e->has_times && futimens(fd, ts) < 0)
		return err_set(negerrno(), "fd %d: %s: cannot set its times: %m", e->fd, e->path ? e->path : e->name);
	r = reopen(e, fd);
	if (r < 0)
		return r;
	/* Seals last: they may forbid the writes above. */
	if (e->kind == FD_KIND_MEMFD && e->seals && fcntl(fd, F_ADD_SEALS, (int)e->seals) < 0) {
		int err = negerrno();
		close(r);
		return err_set(err, "fd %d: memfd '%s': cannot add seals 0x%x", e->fd, e->name, e->seals);
	}
	return seek_to(e, r);
}

int fds_temp_beside(const char *path, char *out, size_t len)
{
	_cleanup_free_ char *copy = strdup(path), *copy2 = strdup(path);
	struct stat st;

	if (!copy || !copy2)
		return -ENOMEM;
	/* Beside where it was, so that it lands on the same filesystem; a
	 * dot name, short of NAME_MAX, that no one lists by accident. */
	const char *base = basename(copy);
	const char *parent = dirname(copy2);
	if (stat(parent, &st) < 0 || !S_ISDIR(st.st_mode))
		parent = "/tmp";
	if ((size_t)snprintf(out, len, "%s/.%.200s.ckptfs-", strcmp(parent, "/") ? parent : "", base) >= len)
		return -ENAMETOOLONG;
	return 0;
}

int fds_deleted_dir_open(const char *path, unsigned mode, uid_t uid, gid_t gid, const struct timespec *times,
			 int flags)
{
	char tmp[PATH_MAX];
	int fd, r = fds_temp_beside(path, tmp, sizeof(tmp) - 6);

	if (r < 0)
		return err_set(r, "deleted directory %s: no name to make it again: %s", path, strerror(-r));
	strcat(tmp, "XXXXXX");
	if (!mkdtemp(tmp))
		return err_set(negerrno(), "deleted directory %s: cannot make it again as %s: %m", path, tmp);
	fd = open(tmp, flags | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		r = err_set(negerrno(), "deleted directory %s: cannot open %s: %m", path, tmp);
		goto out_rmdir;
	}
	if (fault_hit(FAULT_ENGINE_DELETED_DIR)) {
		r = err_set(-EIO, "deleted directory %s: made again as %s: injected fault", path, tmp);
		goto out_close;
	}
	/* by its name: an O_PATH descriptor takes no fchown; the owner
	 * first, as a change of owner clears set-id bits */
	if (uid != (uid_t)-1 && lchown(tmp, uid, gid) < 0) {
		r = err_set(negerrno(), "deleted directory %s: cannot give it its owner %u:%u: %m", path, uid, gid);
		goto out_close;
	}
	if (chmod(tmp, mode & 07777) < 0) {
		r = err_set(negerrno(), "deleted directory %s: chmod 0%o: %m", path, mode);
		goto out_close;
	}
	if (times && utimensat(AT_FDCWD, tmp, times, AT_SYMLINK_NOFOLLOW) < 0) {
		r = err_set(negerrno(), "deleted directory %s: cannot set its times: %m", path);
		goto out_close;
	}
	if (rmdir(tmp) < 0) {
		r = err_set(negerrno(), "deleted directory %s: cannot remove %s again: %m", path, tmp);
		goto out_close;
	}
	return fd;
out_close:
	close(fd);
out_rmdir:
	rmdir(tmp);
	return r;
}

int fds_file_open(struct fd_image *img, struct fd_entry *e)
{
	int flags = (int)(e->flags & ~OPEN_DROP) | O_CLOEXEC | O_NOCTTY;
	struct stat st;
	int fd, r;

	switch (e->kind) {
	case FD_KIND_TTY:
		if (strcmp(e->path, "/dev/tty") == 0 && (fd = open(e->path, flags)) >= 0)
			return fd;
		if (e->tty_log) {
			fd = open(e->tty_log, (int)(e->flags & O_ACCMODE) | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY,
				  0600);
			if (fd < 0)
				return err_set(negerrno(), "fd %d: cannot open %s (CKPTFS_TTY_LOG)", e->fd, e->tty_log);
			return fd;
		}
		fd = open(e->to_null ? "/dev/null" : e->path, flags);
		if (fd < 0)
			return err_set(negerrno(), "fd %d: cannot open %s", e->fd,
				       e->to_null ? "/dev/null" : e->path);
		return fd;
	case FD_KIND_DEV:
		fd = open(e->path, flags);
		if (fd < 0)
			return err_set(negerrno(), "fd %d: cannot open %s", e->fd, e->path);
		return fd;
	case FD_KIND_DIR:
		if (e->deleted) {
			/* empty: its offset means nothing (getdents of a removed
			 * directory reads nothing at all) */
			struct timespec ts[2] = { e->atime, e->mtime };
			/* another description of a removed directory an
			 * earlier line made again: the same one */
			for (size_t i = 0; i < img->n && &img->e[i] != e; i++) {
				const struct fd_entry *o = &img->e[i];
				char proc[64];
				if (o->kind != FD_KIND_DIR || !o->deleted || o->ino != e->ino || o->placed < 0)
					continue;
				snprintf(proc, sizeof(proc), "/proc/self/fd/%d", o->placed);
				fd = open(proc, (int)(e->flags & ~OPEN_DROP) | O_DIRECTORY | O_CLOEXEC);
				if (fd < 0)
					return err_set(negerrno(), "fd %d: cannot open removed directory %s again: %m",
						       e->fd, e->path);
				return fd;
			}
			if (e->is_cwd) {
				/* the cwd made again just before, if it is (a process
				 * sharing another's cwd (CLONE_FS) may come first,
				 * and the shared descriptions are opened elsewhere) */
				fd = open(".", (int)(e->flags & ~OPEN_DROP) | O_DIRECTORY | O_CLOEXEC);
				if (fd >= 0 && fstat(fd, &st) == 0 && st.st_nlink == 0 && (st.st_mode & 07777) == e->mode)
					return fd;
				if (fd >= 0)
					close(fd);
			}
			fd = fds_deleted_dir_open(e->path, e->mode, e->has_owner ? e->uid : (uid_t)-1,
						  e->has_owner ? e->gid : (gid_t)-1, e->has_times ? ts : NULL,
						  (int)(e->flags & ~OPEN_DROP));
			return fd < 0 ? fds_err_prefix(fd, "fd %d", e->fd) : fd;
		}
		/* fall through */
	case FD_KIND_FILE:
		fd = open(e->path, flags);
		if (fd < 0)
			return err_set(negerrno(), "fd %d: cannot open %s", e->fd, e->path);
		/* Again, on what was opened: the path may have changed since
		 * fds_load() looked. */
		if (fstat(fd, &st) < 0) {
			r = err_set(negerrno(), "fd %d: fstat %s", e->fd, e->path);
			close(fd);
			return r;
		}
		r = check_identity(img, e, &st);
		if (r < 0) {
			close(fd);
			return r;
		}
		if (e->flags & O_PATH)
			return fd;
		/* A log's writes go to its end anyway; its offset goes there
		 * too, where a write-only file with O_APPEND keeps it. */
		if (fds_file_is_log(e) && lseek(fd, 0, SEEK_END) < 0) {
			r = err_set(negerrno(), "fd %d: cannot seek to the end of %s", e->fd, e->path);
			close(fd);
			return r;
		}
		if (fds_file_is_log(e))
			return fd;
		return seek_to(e, fd);
	case FD_KIND_DELETED:
	case FD_KIND_MEMFD:
		return open_content(img, e);
	default:
		return -EINVAL;
	}
}
