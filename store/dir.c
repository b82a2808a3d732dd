/*
 * The directory backend: snapshot NAME is the plain directory ROOT/NAME in
 * the snapshot directory format (docs/FORMAT.md): one sparse file per
 * snapshot file, nested directories as the paths say, and `manifest`
 * listing every other file with its size and hash.
 *
 * What must stay true:
 *  - durable or absent: a writer fills the hidden directory
 *    ROOT/.NAME.tmp-XXXXXX; commit fsyncs every file, writes and fsyncs
 *    the manifest, fsyncs the directories, renames the directory to
 *    ROOT/NAME (never over an existing one) and fsyncs ROOT. A crash
 *    before the rename leaves only a hidden directory, which nothing
 *    reads; after it, the snapshot is whole.
 *  - all-zero 4 KiB pages are never written: they stay holes; large
 *    page-aligned runs of data go to the disk with O_DIRECT (not through
 *    the page cache), the rest, and everything on a filesystem that
 *    refuses it, with buffered writes; the commit's fsync covers both;
 *  - nothing in a snapshot directory is trusted: every file is reached
 *    with openat() relative to the snapshot directory and O_NOFOLLOW at
 *    each step, so a symlink (or a symlinked directory) never leads out;
 *    opening checks that the tree holds exactly the manifest's files with
 *    their sizes.
 *  - a writer holds flock() on its temporary directory until it closes, so
 *    a temporary directory nobody holds is a crashed writer's, and
 *    creating or deleting that name removes it.
 *
 * Locking: a snapshot's `lock` protects its file list, directory list and
 * open count (files of one snapshot are created and closed from several
 * threads). A file is used by one caller at a time when written (a large
 * write hands the disk part to a thread of its own and waits for it, so
 * that the disk works while the caller hashes); readers
 * share nothing mutable but the atomically updated allocation cache.
 */
#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/falloc.h>
#include <pthread.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>

#include "store/chunk-int.h" /* chunk_hash2() */
#include "store/store-int.h"

#ifndef RENAME_NOREPLACE
#define RENAME_NOREPLACE (1 << 0)
#endif

/* Files whose descriptors a writer keeps open for the fsync at commit;
 * past this, a file is fsynced when it is closed. */
#define KEEP_FDS_MAX 128
#define MANIFEST_READ_MAX (64u << 20)
#define MAX_DEPTH 8
/* Runs of data at least this long go through the O_DIRECT descriptor when
 * they are page-aligned: below it a synchronous direct write costs more
 * than the page cache does. */
#define DIRECT_MIN (256u << 10)
/* A write at least this long is written by a second thread while the
 * caller hashes it. */
#define OVERLAP_MIN (1u << 20)

struct dir_store {
	struct store base;
	char *root;
	int root_fd;
};

/* What a committed file takes on disk: found once per snapshot handle
 * (the snapshot never changes), so that stat, which a filesystem calls
 * often, does not open the file each time. */
struct space {
	uint64_t allocated; /* data bytes; UINT64_MAX: not known yet (atomic) */
	uint64_t stored;    /* st_blocks * 512; valid once allocated is */
};

struct dir_snap {
	struct store_snap base;
	char *name;
	int dfd;         /* the snapshot directory (temporary while writing) */
	pthread_mutex_t lock;

	/* writer */
	char *tmp;                 /* its name in ROOT */
	struct manifest m;         /* files closed so far (lock) */
	int *fds;                  /* parallel to m.files: kept fd or -1 (lock) */
	size_t cap;                /* of m.files and fds (lock) */
	char **dirs;               /* directories created (lock) */
	size_t ndirs;
	unsigned nopen;            /* files open (lock) */
	unsigned nkept;            /* fds >= 0 in fds (lock) */
	int err;                   /* first failure of a file (lock) */
	char err_detail[256];      /* and its detail (lock) */

	/* reader */
	struct space *space;       /* per manifest entry, then the manifest's */
	uint64_t manifest_size;
	uint8_t manifest_hash[STORE_HASH_LEN];
};

struct dir_file {
	struct store_file base;
	char *path;
	int fd;
	uint64_t size;

	/* writer */
	int dio_fd;            /* the same file opened O_DIRECT, or -1 (tmpfs) */
	uint64_t data_end;     /* no data was written at or after this: holes */
	struct leaf_set *leaves;
	uint64_t *partial;     /* blocks written in part: leaf recomputed at close */
	size_t npartial, partial_cap;
	bool shrunk;           /* set_size cut data off: rehash the file at close */
	int err;

	/* reader */
	const struct manifest_entry *ent; /* NULL for the manifest itself */
	struct space *space;              /* its slot in the snapshot's cache */
};

static struct dir_store *to_store(struct store *s)
{
	return (struct dir_store *)s;
}

static struct dir_snap *to_snap(struct store_snap *s)
{
	return (struct dir_snap *)s;
}

static struct dir_file *to_file(struct store_file *f)
{
	return (struct dir_file *)f;
}

/* Copies the current detail so that it can be quoted in a new one. */
static int rewrap(int r, const char *fmt, const char *arg)
{
	char why[512];
	snprintf(why, sizeof(why), "%s", err_msg());
	return err_set(r, fmt, arg, why);
}

/* The dir backend takes one-component names; names starting with '.' are
 * its temporary directories. */
static int snap_name_ok(const char *name)
{
	int r = name_check(name, 1);
	if (r < 0)
		return r;
	if (name[0] == '.')
		return err_set(-EINVAL, "invalid snapshot name '%s': a leading '.' is reserved", name);
	return 0;
}

/* ---- safe path walking --------------------------------------------------- */

/* Opens the directory that holds `path` (relative to dfd), never following
 * a symlink; *leaf points into path at the last component. With create,
 * missing directories are made (mode 0700) and their paths reported to
 * `made` (may be NULL). */
static int open_parent(int dfd, const char *path, bool create, const char **leaf,
		       void (*made)(void *ud, const char *path, size_t len), void *ud)
{
	_cleanup_close_ int cur = -1;
	const char *c = path;
	char comp[256];

	cur = fcntl(dfd, F_DUPFD_CLOEXEC, 3);
	if (cur < 0)
		return negerrno();
	for (;;) {
		const char *slash = strchr(c, '/');
		if (!slash)
			break;
		size_t n = slash - c;
		if (n >= sizeof(comp))
			return -ENAMETOOLONG;
		memcpy(comp, c, n);
		comp[n] = 0;
		if (create) {
			if (mkdirat(cur, comp, 0700) == 0) {
				if (made)
					made(ud, path, slash - path);
			} else if (errno != EEXIST) {
				return negerrno();
			}
		}
		int next = openat(cur, comp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (next < 0)
			return errno == ELOOP ? -ENOTDIR : negerrno();
		close(cur);
		cur = next;
		c = slash + 1;
	}
	*leaf = c;
	return TAKE_FD(cur);
}

/* Opens regular file `path` below dfd for reading, never through a
 * symlink; anything but a regular file is -EBADMSG. */
static int open_file_nofollow(int dfd, const char *path, struct stat *st)
{
	_cleanup_close_ int pfd = -1, fd = -1;
	const char *leaf;

	pfd = open_parent(dfd, path, false, &leaf, NULL, NULL);
	if (pfd < 0)
		return pfd;
	/* O_NONBLOCK: a FIFO planted in place of a file must not hang us. */
	fd = openat(pfd, leaf, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0)
		return errno == ELOOP ? -EBADMSG : negerrno();
	if (fstat(fd, st) < 0)
		return negerrno();
	if (!S_ISREG(st->st_mode))
		return -EBADMSG;
	return TAKE_FD(fd);
}

static const char *kind(mode_t m)
{
	return S_ISLNK(m) ? "a symlink" : S_ISDIR(m) ? "a directory" : S_ISFIFO(m) ? "a FIFO" :
	       S_ISSOCK(m) ? "a socket" : S_ISCHR(m) || S_ISBLK(m) ? "a device" : "not a regular file";
}

/* Sum of the data extents of fd up to size (what SEEK_DATA reports). */
static uint64_t data_bytes(int fd, uint64_t size)
{
	uint64_t total = 0, off = 0;
	while (off < size) {
		off_t d = lseek(fd, off, SEEK_DATA);
		if (d < 0 || (uint64_t)d >= size)
			break;
		off_t h = lseek(fd, d, SEEK_HOLE);
		uint64_t end = h < 0 ? size : MIN((uint64_t)h, size);
		if (end <= (uint64_t)d)
			break;
		total += end - d;
		off = end;
	}
	return total;
}

/* ---- stale temporary directories ---------------------------------------- */

/* Removes ROOT/.NAME.tmp-* and ROOT/.NAME.del-* that no live writer or
 * deleter holds (flock), and a ROOT/.NAME.new-* left for a minute. Best effort: a failure leaves a hidden directory
 * that listing ignores. */
static void sweep_stale(struct dir_store *ds, const char *name)
{
	/* A new open file description: a dup would share its directory
	 * offset with every other user of root_fd. */
	_cleanup_close_ int fd = openat(ds->root_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	char prefix[256];
	struct dirent *de;
	DIR *d;

	if (fd < 0)
		return;
	snprintf(prefix, sizeof(prefix), ".%.200s.", name);
	d = fdopendir(fd);
	if (!d)
		return;
	fd = -1;
	while ((de = readdir(d))) {
		const char *rest;
		if (strncmp(de->d_name, prefix, strlen(prefix)))
			continue;
		rest = de->d_name + strlen(prefix);
		bool young = !strncmp(rest, "new-", 4);
		if (strncmp(rest, "tmp-", 4) && strncmp(rest, "del-", 4) && !young)
			continue;
		int t = openat(ds->root_fd, de->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (t < 0)
			continue;
		/* .new- is a writer between mkdir and lock: only one that has
		 * stayed so for a minute is a crashed one. */
		struct stat sb;
		if (young && (fstat(t, &sb) < 0 || sb.st_ctime > time(NULL) - 60)) {
			close(t);
			continue;
		}
		if (flock(t, LOCK_EX | LOCK_NB) == 0) {
			_cleanup_free_ char *p = NULL;
			if (asprintf(&p, "%s/%s", ds->root, de->d_name) >= 0) {
				log_debug("%s: removing a crashed writer's '%s'", ds->root, de->d_name);
				rm_rf(p);
			}
		}
		close(t);
	}
	closedir(d);
}

/* renameat2(RENAME_NOREPLACE) within ROOT. Filesystems without it (NFS,
 * some FUSE ones) answer EINVAL: then a check and a plain rename, which a
 * concurrent creator of the same name could race, but which still never
 * replaces a committed snapshot (non-empty directories are not replaced
 * by rename). */
static int rename_noreplace(int root_fd, const char *from, const char *to)
{
	struct stat sb;

	if (renameat2(root_fd, from, root_fd, to, RENAME_NOREPLACE) == 0)
		return 0;
	if (errno != EINVAL)
		return negerrno();
	if (fstatat(root_fd, to, &sb, AT_SYMLINK_NOFOLLOW) == 0)
		return -EEXIST;
	if (renameat(root_fd, from, root_fd, to) < 0)
		return errno == ENOTEMPTY ? -EEXIST : negerrno();
	return 0;
}

/* Makes ROOT/.NAME.<what>-XXXXXX with a random suffix; returns its name. */
static int make_hidden(struct dir_store *ds, const char *name, const char *what, bool mkdir_it,
		       const char *rename_from, char **ret)
{
	static const char chars[] = "abcdefghijklmnopqrstuvwxyz0123456789";

	for (int tries = 0; tries < 100; tries++) {
		uint8_t rnd[6];
		char suffix[7], *p;

		if (getrandom(rnd, sizeof(rnd), 0) != sizeof(rnd))
			return negerrno();
		for (int i = 0; i < 6; i++)
			suffix[i] = chars[rnd[i] % 36];
		suffix[6] = 0;
		if (asprintf(&p, ".%.200s.%s-%s", name, what, suffix) < 0)
			return -ENOMEM;
		int r = mkdir_it ? (mkdirat(ds->root_fd, p, 0700) < 0 ? negerrno() : 0) :
				   rename_noreplace(ds->root_fd, rename_from, p);
		if (r == 0) {
			*ret = p;
			return 0;
		}
		free(p);
		if (r != -EEXIST)
			return r;
	}
	return -EEXIST;
}

/* ---- the store ------------------------------------------------------------ */

int dir_store_open(const char *dir, struct store **ret)
{
	_cleanup_free_ struct dir_store *ds = calloc(1, sizeof(*ds));

	if (!ds)
		return -ENOMEM;
	ds->root_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (ds->root_fd < 0)
		return err_set(negerrno(), "%s: cannot open the snapshot directory root", dir);
	ds->root = strdup(dir);
	if (!ds->root) {
		close(ds->root_fd);
		return -ENOMEM;
	}
	ds->base.ops = &store_dir_ops;
	ds->base.backend = STORE_BACKEND_DIR;
	*ret = &TAKE_PTR(ds)->base;
	return 0;
}

static void dir_close(struct store *s)
{
	struct dir_store *ds = to_store(s);
	close(ds->root_fd);
	free(ds->root);
	free(ds);
}

static void snap_free(struct dir_snap *ds)
{
	if (ds->dfd >= 0)
		close(ds->dfd);
	for (size_t i = 0; ds->fds && i < ds->m.nfiles; i++)
		if (ds->fds[i] >= 0)
			close(ds->fds[i]);
	free(ds->fds);
	manifest_clear(&ds->m);
	for (size_t i = 0; i < ds->ndirs; i++)
		free(ds->dirs[i]);
	free(ds->dirs);
	free(ds->space);
	free(ds->tmp);
	free(ds->name);
	pthread_mutex_destroy(&ds->lock);
	free(ds);
}

static struct dir_snap *snap_new(const char *name)
{
	struct dir_snap *ds = calloc(1, sizeof(*ds));
	if (!ds)
		return NULL;
	ds->dfd = -1;
	pthread_mutex_init(&ds->lock, NULL);
	ds->name = strdup(name);
	if (!ds->name) {
		snap_free(ds);
		return NULL;
	}
	return ds;
}

/* ---- writing -------------------------------------------------------------- */

static int dir_snap_create(struct store *s, const char *name, unsigned flags, struct store_snap **ret)
{
	struct dir_store *st = to_store(s);
	_cleanup_free_ char *fresh = NULL;
	struct dir_snap *ds;
	struct stat sb;
	int r;

	r = snap_name_ok(name);
	if (r < 0)
		return r;
	if (fstatat(st->root_fd, name, &sb, AT_SYMLINK_NOFOLLOW) == 0)
		return err_set(-EEXIST, "snapshot '%s' exists", name);
	sweep_stale(st, name);

	ds = snap_new(name);
	if (!ds)
		return -ENOMEM;
	/* The directory is made under a name sweep_stale() never touches
	 * and renamed to its .tmp- name only once it is locked: a sweeper
	 * must never take a live writer's directory for a crashed one's. */
	r = make_hidden(st, name, "new", true, NULL, &fresh);
	if (r < 0) {
		snap_free(ds);
		return err_set(r, "%s: cannot make a directory for snapshot '%s'", st->root, name);
	}
	ds->dfd = openat(st->root_fd, fresh, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (ds->dfd < 0 || flock(ds->dfd, LOCK_EX | LOCK_NB) < 0) {
		r = negerrno();
		goto fail;
	}
	r = make_hidden(st, name, "tmp", false, fresh, &ds->tmp);
	if (r < 0)
		goto fail;
	*ret = &ds->base;
	return 0;
fail:
	unlinkat(st->root_fd, fresh, AT_REMOVEDIR);
	snap_free(ds);
	return err_set(r, "%s: cannot make a directory for snapshot '%s'", st->root, name);
}

static void dir_made(void *ud, const char *path, size_t len)
{
	struct dir_snap *ds = ud;
	char *p = strndup(path, len), **d;

	if (!p)
		return; /* only costs the directory's fsync; commit syncs ROOT anyway */
	pthread_mutex_lock(&ds->lock);
	d = realloc(ds->dirs, (ds->ndirs + 1) * sizeof(*d));
	if (d) {
		ds->dirs = d;
		ds->dirs[ds->ndirs++] = p;
		p = NULL;
	}
	pthread_mutex_unlock(&ds->lock);
	free(p);
}

static int dir_file_create(struct store_snap *w, const char *path, struct store_file **ret)
{
	struct dir_snap *ds = to_snap(w);
	_cleanup_close_ int pfd = -1;
	struct dir_file *f;
	const char *leaf;
	int r;

	f = calloc(1, sizeof(*f));
	if (!f)
		return -ENOMEM;
	f->fd = -1;
	f->dio_fd = -1;
	f->path = strdup(path);
	r = f->path ? leaf_set_new(&f->leaves) : -ENOMEM;
	if (r < 0)
		goto fail;

	pfd = open_parent(ds->dfd, path, true, &leaf, dir_made, ds);
	if (pfd < 0) {
		r = err_set(pfd, "'%s': cannot make its directory%s", path,
			    pfd == -ENOTDIR ? " (a file of that name exists)" : "");
		goto fail;
	}
	f->fd = openat(pfd, leaf, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (f->fd < 0) {
		r = negerrno();
		r = err_set(r, "'%s': %s", path, r == -EEXIST ? "created before in this snapshot" : strerror(-r));
		goto fail;
	}
	/* A second descriptor for the large aligned runs: O_DIRECT takes the
	 * bytes from the caller's buffer to the disk, where the page cache
	 * costs several times the CPU (copying, then reclaiming gigabytes of
	 * pages on a machine that does not need them again). The file is
	 * ours alone, in our locked temporary directory; the inode check
	 * only guards against surprises. A filesystem that refuses O_DIRECT
	 * (tmpfs: EINVAL) gets everything through the page cache. */
	f->dio_fd = openat(pfd, leaf, O_WRONLY | O_DIRECT | O_NOFOLLOW | O_CLOEXEC);
	if (f->dio_fd >= 0) {
		struct stat a, b;
		if (fstat(f->fd, &a) < 0 || fstat(f->dio_fd, &b) < 0 || a.st_ino != b.st_ino || a.st_dev != b.st_dev) {
			close(f->dio_fd);
			f->dio_fd = -1;
		}
	}
	pthread_mutex_lock(&ds->lock);
	ds->nopen++;
	pthread_mutex_unlock(&ds->lock);
	*ret = &f->base;
	return 0;
fail:
	leaf_set_free(f->leaves);
	free(f->path);
	free(f);
	return r;
}

static int add_partial(struct dir_file *f, uint64_t block)
{
	if (f->npartial > 0 && f->partial[f->npartial - 1] == block)
		return 0;
	if (f->npartial == f->partial_cap) {
		size_t cap = f->partial_cap ? 2 * f->partial_cap : 16;
		uint64_t *p = realloc(f->partial, cap * sizeof(*p));
		if (!p)
			return -ENOMEM;
		f->partial = p;
		f->partial_cap = cap;
	}
	f->partial[f->npartial++] = block;
	return 0;
}

static int write_run(struct dir_file *f, const uint8_t *p, size_t len, uint64_t off)
{
	if (fault_hit(FAULT_STORE_DIR_WRITE))
		return err_set(-EIO, "'%s': write at %" PRIu64 " failed (injected)", f->path, off);
	size_t direct = 0;
	int r;

	/* O_DIRECT wants buffer, offset and length aligned to the device's
	 * logical block (at most a page): the aligned head goes direct, a
	 * short tail through the page cache. Direct and buffered writes
	 * never overlap here, and the kernel keeps the two coherent anyway
	 * (a direct write flushes and drops cached pages in its range). */
	if (f->dio_fd >= 0 && len >= DIRECT_MIN && off % STORE_PAGE_SIZE == 0 &&
	    (uintptr_t)p % STORE_PAGE_SIZE == 0)
		direct = ALIGN_DOWN(len, (size_t)STORE_PAGE_SIZE);
	if (direct) {
		r = fault_hit(FAULT_STORE_DIR_DIRECT) ? -EINVAL : pwrite_full(f->dio_fd, p, direct, off);
		if (r == -EINVAL) {
			/* accepted at open, refused at write (some FUSE and
			 * network filesystems): the page cache from now on;
			 * what went through is rewritten, which is harmless */
			log_debug("'%s': O_DIRECT write refused, writing through the page cache", f->path);
			close(f->dio_fd);
			f->dio_fd = -1;
			direct = 0;
		} else if (r < 0) {
			return err_set(r, "'%s': write at %" PRIu64 ": %s", f->path, off, strerror(-r));
		}
	}
	if (len > direct) {
		r = pwrite_full(f->fd, p + direct, len - direct, off + direct);
		if (r < 0)
			return err_set(r, "'%s': write at %" PRIu64 ": %s", f->path, off + direct, strerror(-r));
	}
	f->data_end = MAX(f->data_end, off + len);
	return 0;
}

/* Turns [off, off+len) that held data back into a hole (a rewrite with
 * zeros); where the filesystem cannot punch holes, writes the zeros. */
static int zero_run(struct dir_file *f, uint64_t off, uint64_t len)
{
	static const uint8_t zeros[STORE_PAGE_SIZE];

	if (fallocate(f->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off, len) == 0)
		return 0;
	for (uint64_t o = 0; o < len; o += STORE_PAGE_SIZE) {
		int r = write_run(f, zeros, MIN(len - o, (uint64_t)STORE_PAGE_SIZE), off + o);
		if (r < 0)
			return r;
	}
	return 0;
}

/* Writes the non-zero pages of buf as runs; zero pages stay (or become)
 * holes. Pages are those of the file, so a write need not be aligned. */
static int write_sparse(struct dir_file *f, const uint8_t *buf, size_t len, uint64_t off)
{
	uint64_t end = off + len, run = UINT64_MAX, zrun = UINT64_MAX;
	int r;

	for (uint64_t pg = ALIGN_DOWN(off, (uint64_t)STORE_PAGE_SIZE); pg < end; pg += STORE_PAGE_SIZE) {
		uint64_t a = MAX(pg, off), b = MIN(pg + STORE_PAGE_SIZE, end);
		bool whole = a == pg && b == pg + STORE_PAGE_SIZE;
		bool zero = buf_is_zero(buf + (a - off), b - a);
		/* A zero piece past every earlier write is a hole already; a
		 * whole zero page before that is punched; a zero piece of a
		 * page below it is written, as it may cover old data. */
		bool data = !zero || (!whole && a < f->data_end);
		bool punch = zero && whole && a < f->data_end;

		if (data && run == UINT64_MAX)
			run = a;
		if (!data && run != UINT64_MAX) {
			r = write_run(f, buf + (run - off), a - run, run);
			if (r < 0)
				return r;
			run = UINT64_MAX;
		}
		if (punch && zrun == UINT64_MAX)
			zrun = a;
		if (!punch && zrun != UINT64_MAX) {
			r = zero_run(f, zrun, a - zrun);
			if (r < 0)
				return r;
			zrun = UINT64_MAX;
		}
	}
	if (run != UINT64_MAX) {
		r = write_run(f, buf + (run - off), end - run, run);
		if (r < 0)
			return r;
	}
	if (zrun != UINT64_MAX) {
		r = zero_run(f, zrun, end - zrun);
		if (r < 0)
			return r;
	}
	return 0;
}

/* write_sparse() on a second thread, so that the disk works while the
 * caller hashes the same bytes. */
struct write_job {
	struct dir_file *f;
	const uint8_t *p;
	size_t len;
	uint64_t off;
	int r;
	char msg[256]; /* err_msg() is per thread */
};

static void *write_worker(void *arg)
{
	struct write_job *j = arg;

	j->r = write_sparse(j->f, j->p, j->len, j->off);
	if (j->r < 0)
		snprintf(j->msg, sizeof(j->msg), "%s", err_msg());
	return NULL;
}

/* Leaves of the blocks [off, off+len) covers whole; the others are
 * recorded as partial and recomputed from the file at close. Full
 * non-zero blocks are hashed two at a time (chunk_hash2: SHA-NI lanes). */
static int hash_blocks(struct dir_file *f, const uint8_t *p, size_t len, uint64_t off)
{
	uint64_t end = off + len, pend = UINT64_MAX;
	uint8_t leaf[STORE_HASH_LEN], leaf2[STORE_HASH_LEN];
	int r;

	for (uint64_t b = off / STORE_BLOCK_SIZE; b * STORE_BLOCK_SIZE < end; b++) {
		uint64_t bs = b * STORE_BLOCK_SIZE, be = bs + STORE_BLOCK_SIZE;
		if (bs < off || be > end) {
			r = add_partial(f, b);
			if (r < 0)
				return r;
			continue;
		}
		if (buf_is_zero(p + (bs - off), STORE_BLOCK_SIZE)) {
			leaf_set_drop(f->leaves, b);
			continue;
		}
		if (pend == UINT64_MAX) {
			pend = b;
			continue;
		}
		chunk_hash2(p + (pend * STORE_BLOCK_SIZE - off), p + (bs - off), STORE_BLOCK_SIZE, leaf, leaf2);
		r = leaf_set_put(f->leaves, pend, leaf);
		if (r == 0)
			r = leaf_set_put(f->leaves, b, leaf2);
		if (r < 0)
			return r;
		pend = UINT64_MAX;
	}
	if (pend != UINT64_MAX) {
		hash_leaf(p + (pend * STORE_BLOCK_SIZE - off), STORE_BLOCK_SIZE, leaf);
		r = leaf_set_put(f->leaves, pend, leaf);
		if (r < 0)
			return r;
	}
	return 0;
}

static int dir_file_pwrite(struct store_file *sf, const void *buf, size_t len, uint64_t off)
{
	struct dir_file *f = to_file(sf);
	struct write_job j = { .f = f, .p = buf, .len = len, .off = off };
	pthread_t th;
	bool threaded = false;
	int r, q;

	if (f->err)
		return f->err;
	/* write_sparse touches the descriptors and data_end, hash_blocks the
	 * leaves and the partial list: nothing shared between the two. */
	if (len >= OVERLAP_MIN)
		threaded = pthread_create(&th, NULL, write_worker, &j) == 0;
	if (!threaded)
		j.r = write_sparse(f, buf, len, off);
	r = hash_blocks(f, buf, len, off);
	if (threaded) {
		pthread_join(th, NULL);
		if (j.r < 0)
			err_set(j.r, "%s", j.msg);
	}
	/* A write failure is the one to report; a hashing one is ENOMEM. */
	q = j.r < 0 ? j.r : r;
	if (q < 0) {
		/* The file's content is unknown now: it can only fail. */
		f->err = q;
		return q;
	}
	f->size = MAX(f->size, off + len);
	return 0;
}

static int dir_file_set_size(struct store_file *sf, uint64_t size)
{
	struct dir_file *f = to_file(sf);

	if (f->err)
		return f->err;
	if (ftruncate(f->fd, size) < 0)
		return err_set(negerrno(), "'%s': cannot set size %" PRIu64, f->path, size);
	if (size < f->size) {
		f->shrunk = true;
		f->data_end = MIN(f->data_end, size);
	}
	f->size = size;
	return 0;
}

/* Finishes a written file: size, leaves of partly written blocks, hash. */
static int finish_file(struct dir_file *f, uint8_t hash[STORE_HASH_LEN])
{
	_cleanup_free_ uint8_t *blk = NULL;
	uint64_t nblocks = (f->size + STORE_BLOCK_SIZE - 1) / STORE_BLOCK_SIZE;
	uint8_t leaf[STORE_HASH_LEN];
	int r;

	/* Zero pages at the end were skipped: the size is set here. */
	if (ftruncate(f->fd, f->size) < 0)
		return err_set(negerrno(), "'%s': cannot set size %" PRIu64, f->path, f->size);
	if (f->shrunk) {
		r = store_hash_fd(f->fd, hash);
		return r < 0 ? err_set(r, "'%s': cannot hash: %s", f->path, strerror(-r)) : 0;
	}
	if (f->npartial > 0) {
		blk = malloc(STORE_BLOCK_SIZE);
		if (!blk)
			return -ENOMEM;
	}
	/* Blocks come mostly in order; duplicates cost one extra read. */
	for (size_t i = 0; i < f->npartial; i++) {
		uint64_t b = f->partial[i], bs = b * STORE_BLOCK_SIZE;
		bool seen = false;
		for (size_t j = i > 8 ? i - 8 : 0; j < i && !seen; j++)
			seen = f->partial[j] == b;
		if (seen || b >= nblocks)
			continue;
		size_t n = MIN(f->size - bs, (uint64_t)STORE_BLOCK_SIZE);
		ssize_t got = pread_full(f->fd, blk, n, bs);
		if (got < 0)
			return err_set(got, "'%s': cannot read back block %" PRIu64, f->path, b);
		if ((size_t)got < n)
			memset(blk + got, 0, n - got);
		if (buf_is_zero(blk, n)) {
			leaf_set_drop(f->leaves, b);
			continue;
		}
		hash_leaf(blk, n, leaf);
		r = leaf_set_put(f->leaves, b, leaf);
		if (r < 0)
			return r;
	}
	return leaf_set_final(f->leaves, f->size, hash);
}

/* Adds a finished file to the snapshot's list. Its fd is kept for the
 * commit's fsync while few are; past that the file is synced here. */
static int record_file(struct dir_snap *ds, struct dir_file *f, const uint8_t hash[STORE_HASH_LEN])
{
	bool keep;
	int r = 0;

	pthread_mutex_lock(&ds->lock);
	keep = ds->nkept < KEEP_FDS_MAX;
	if (keep)
		ds->nkept++;
	pthread_mutex_unlock(&ds->lock);
	if (!keep && fsync(f->fd) < 0)
		return err_set(negerrno(), "'%s': fsync failed", f->path);

	pthread_mutex_lock(&ds->lock);
	if (ds->m.nfiles == ds->cap) {
		size_t cap = ds->cap ? 2 * ds->cap : 32;
		struct manifest_entry *e = realloc(ds->m.files, cap * sizeof(*e));
		if (e)
			ds->m.files = e;
		int *fds = e ? realloc(ds->fds, cap * sizeof(*fds)) : NULL;
		if (fds)
			ds->fds = fds;
		if (!e || !fds) {
			if (keep)
				ds->nkept--;
			r = -ENOMEM;
			goto out;
		}
		ds->cap = cap;
	}
	struct manifest_entry *e = &ds->m.files[ds->m.nfiles];
	e->path = TAKE_PTR(f->path);
	e->size = f->size;
	memcpy(e->hash, hash, STORE_HASH_LEN);
	ds->fds[ds->m.nfiles] = keep ? TAKE_FD(f->fd) : -1;
	ds->m.nfiles++;
out:
	pthread_mutex_unlock(&ds->lock);
	return r;
}

static int dir_file_close(struct store_file *sf)
{
	struct dir_file *f = to_file(sf);
	struct dir_snap *ds = to_snap(sf->snap);
	uint8_t hash[STORE_HASH_LEN];
	int r = 0;

	if (sf->writing) {
		r = f->err;
		if (r == 0)
			r = finish_file(f, hash);
		if (r == 0) {
			/* Start writeback now so that commit's fsync finds
			 * little left to do. */
			sync_file_range(f->fd, 0, 0, SYNC_FILE_RANGE_WRITE);
			r = record_file(ds, f, hash);
		}
		pthread_mutex_lock(&ds->lock);
		ds->nopen--;
		/* A file that failed makes the snapshot fail at commit, even if
		 * the caller goes on. */
		if (r < 0 && ds->err == 0) {
			ds->err = r;
			snprintf(ds->err_detail, sizeof(ds->err_detail), "%s", err_msg());
		}
		pthread_mutex_unlock(&ds->lock);
		leaf_set_free(f->leaves);
		free(f->partial);
		if (f->dio_fd >= 0)
			close(f->dio_fd);
	}
	if (f->fd >= 0)
		close(f->fd);
	free(f->path);
	free(f);
	return r;
}

/* Import: the manifest that came with the snapshot must describe exactly
 * the files that came, byte for byte. */
static int verify_import(struct dir_snap *ds, const struct manifest *got)
{
	_cleanup_close_ int fd = -1;
	_cleanup_free_ char *text = NULL;
	struct manifest want = {};
	const struct manifest_entry *me;
	struct stat st;
	size_t i = 0, j = 0;
	char hex[2 * STORE_HASH_LEN + 1];
	int r;

	me = manifest_find(got, STORE_MANIFEST);
	if (!me)
		return err_set(-EBADMSG, "'%s': missing (an imported snapshot brings its own)", STORE_MANIFEST);
	fd = open_file_nofollow(ds->dfd, STORE_MANIFEST, &st);
	if (fd < 0)
		return err_set(fd, "'%s': cannot open", STORE_MANIFEST);
	if ((uint64_t)st.st_size > MANIFEST_READ_MAX)
		return err_set(-EBADMSG, "'%s': %" PRIu64 " bytes, too large", STORE_MANIFEST, (uint64_t)st.st_size);
	text = malloc(st.st_size + 1);
	if (!text)
		return -ENOMEM;
	ssize_t n = pread_full(fd, text, st.st_size, 0);
	if (n < 0)
		return err_set(n, "'%s': cannot read", STORE_MANIFEST);
	r = manifest_parse(text, n, &want);
	if (r < 0)
		return rewrap(r, "%s: %s", STORE_MANIFEST);

	/* Both lists are sorted: walk them together; the first path in
	 * order that differs is the one named. */
	while (i < want.nfiles || j < got->nfiles) {
		if (j < got->nfiles && !strcmp(got->files[j].path, STORE_MANIFEST)) {
			j++;
			continue;
		}
		int c = i == want.nfiles ? 1 : j == got->nfiles ? -1 : strcmp(want.files[i].path, got->files[j].path);
		if (c < 0) {
			r = err_set(-EBADMSG, "'%s': listed in the manifest, not received", want.files[i].path);
			goto out;
		}
		if (c > 0) {
			r = err_set(-EBADMSG, "'%s': not in the manifest", got->files[j].path);
			goto out;
		}
		if (want.files[i].size != got->files[j].size) {
			r = err_set(-EBADMSG, "'%s': size %" PRIu64 ", manifest says %" PRIu64, got->files[j].path,
				    got->files[j].size, want.files[i].size);
			goto out;
		}
		if (memcmp(want.files[i].hash, got->files[j].hash, STORE_HASH_LEN)) {
			store_hash_hex(got->files[j].hash, hex);
			r = err_set(-EBADMSG, "'%s': content hash %.16s..., not the manifest's (damaged in transit?)",
				    got->files[j].path, hex);
			goto out;
		}
		i++;
		j++;
	}
	r = 0;
out:
	manifest_clear(&want);
	return r;
}

static int write_manifest(struct dir_snap *ds)
{
	_cleanup_free_ char *text = NULL;
	_cleanup_close_ int fd = -1;
	size_t len;
	int r;

	ds->m.created = time(NULL);
	r = manifest_format(&ds->m, &text, &len);
	if (r < 0)
		return r;
	fd = openat(ds->dfd, STORE_MANIFEST, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0)
		return err_set(negerrno(), "'%s': cannot create", STORE_MANIFEST);
	if (fault_hit(FAULT_STORE_DIR_WRITE))
		return err_set(-EIO, "'%s': write failed (injected)", STORE_MANIFEST);
	r = write_full(fd, text, len);
	if (r < 0)
		return err_set(r, "'%s': cannot write", STORE_MANIFEST);
	if (fsync(fd) < 0)
		return err_set(negerrno(), "'%s': fsync failed", STORE_MANIFEST);
	return 0;
}

static int cmp_entry_path(const void *a, const void *b)
{
	return strcmp(((const struct manifest_entry *)a)->path, ((const struct manifest_entry *)b)->path);
}

static int fsync_at(int dfd, const char *path)
{
	_cleanup_close_ int fd = openat(dfd, path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0 || fsync(fd) < 0)
		return negerrno();
	return 0;
}

static int dir_snap_commit(struct store_snap *w)
{
	struct dir_snap *ds = to_snap(w);
	struct dir_store *st = to_store(w->store);
	int r;

	char detail[sizeof(ds->err_detail)];

	pthread_mutex_lock(&ds->lock);
	unsigned nopen = ds->nopen;
	r = ds->err;
	memcpy(detail, ds->err_detail, sizeof(detail));
	pthread_mutex_unlock(&ds->lock);
	if (nopen > 0)
		return err_set(-EBUSY, "snapshot '%s': %u files still open", ds->name, nopen);
	if (r < 0)
		return err_set(r, "snapshot '%s': a file failed: %s", ds->name, detail);

	/* Step 1: the data. Every file's bytes reach the disk before the
	 * manifest that vouches for them exists. */
	for (size_t i = 0; i < ds->m.nfiles; i++) {
		if (ds->fds[i] >= 0 ? fsync(ds->fds[i]) < 0 : fsync_at(ds->dfd, ds->m.files[i].path) < 0)
			return err_set(negerrno(), "'%s': fsync failed", ds->m.files[i].path);
	}

	/* Step 2: the manifest (or, for an import, the check against the
	 * one that came; it is one of the files synced above). */
	if (w->flags & STORE_CREATE_IMPORT) {
		/* verify_import walks the received list in path order; a
		 * sorted copy keeps ds->fds parallel to ds->m. */
		struct manifest got = ds->m;
		got.files = malloc(ds->m.nfiles * sizeof(*got.files) + 1);
		if (!got.files)
			return -ENOMEM;
		if (got.nfiles > 0) {
			memcpy(got.files, ds->m.files, ds->m.nfiles * sizeof(*got.files));
			qsort(got.files, got.nfiles, sizeof(*got.files), cmp_entry_path);
		}
		r = verify_import(ds, &got);
		free(got.files);
		if (r < 0)
			return r;
	} else {
		if (fault_hit(FAULT_STORE_CRASH_BEFORE_MANIFEST))
			_exit(99);
		/* manifest_format sorts ds->m; the fds are not needed any more */
		for (size_t i = 0; i < ds->m.nfiles; i++) {
			if (ds->fds[i] >= 0)
				close(ds->fds[i]);
			ds->fds[i] = -1;
		}
		r = write_manifest(ds);
		if (r < 0)
			return r;
	}

	/* Step 3: the directory entries, deepest first, then the top. */
	for (size_t i = ds->ndirs; i-- > 0;)
		if (fsync_at(ds->dfd, ds->dirs[i]) < 0)
			return err_set(negerrno(), "'%s/': fsync failed", ds->dirs[i]);
	if (fsync(ds->dfd) < 0)
		return err_set(negerrno(), "snapshot '%s': directory fsync failed", ds->name);

	if (fault_hit(FAULT_STORE_CRASH_BEFORE_RENAME))
		_exit(99);

	/* Step 4: the atomic switch. RENAME_NOREPLACE: a snapshot committed
	 * meanwhile under the same name is never replaced. */
	r = rename_noreplace(st->root_fd, ds->tmp, ds->name);
	if (r < 0) {
		if (r == -EEXIST || r == -ENOTEMPTY)
			return err_set(-EEXIST, "snapshot '%s' exists", ds->name);
		return err_set(r, "snapshot '%s': rename into place failed", ds->name);
	}
	free(ds->tmp);
	ds->tmp = NULL; /* nothing for close to discard any more */
	/* Step 5: the rename itself is durable once ROOT is. If this fails
	 * the snapshot is visible but may not survive a crash: reported as
	 * a failure all the same. */
	if (fsync(st->root_fd) < 0)
		return err_set(negerrno(), "%s: fsync failed after committing '%s'", st->root, ds->name);
	return 0;
}

/* ---- reading -------------------------------------------------------------- */

/* A printable copy of a name found on disk, for details. */
static const char *clean(const char *s, char *buf, size_t size)
{
	size_t n = 0;
	for (; *s && n + 1 < size; s++)
		buf[n++] = (unsigned char)*s >= 0x20 && (unsigned char)*s < 0x7f ? *s : '?';
	buf[n] = 0;
	return buf;
}

/* Checks one manifest entry against the tree: a regular file of the
 * listed size, reached without symlinks; with verify, its hash too. */
static int check_entry(int dfd, const struct manifest_entry *e, bool verify)
{
	_cleanup_close_ int pfd = -1, fd = -1;
	uint8_t h[STORE_HASH_LEN];
	const char *leaf;
	struct stat st;
	int r;

	pfd = open_parent(dfd, e->path, false, &leaf, NULL, NULL);
	if (pfd == -ENOENT)
		return err_set(-EBADMSG, "'%s': missing", e->path);
	if (pfd == -ENOTDIR)
		return err_set(-EBADMSG, "'%s': a directory on its path is a symlink or a file", e->path);
	if (pfd < 0)
		return err_set(pfd, "'%s': %s", e->path, strerror(-pfd));
	if (fstatat(pfd, leaf, &st, AT_SYMLINK_NOFOLLOW) < 0) {
		r = negerrno();
		return r == -ENOENT ? err_set(-EBADMSG, "'%s': missing", e->path) :
				      err_set(r, "'%s': %s", e->path, strerror(-r));
	}
	if (!S_ISREG(st.st_mode))
		return err_set(-EBADMSG, "'%s': %s, not a regular file", e->path, kind(st.st_mode));
	if ((uint64_t)st.st_size != e->size)
		return err_set(-EBADMSG, "'%s': size %" PRIu64 ", manifest says %" PRIu64, e->path,
			       (uint64_t)st.st_size, e->size);
	if (!verify)
		return 0;
	fd = openat(pfd, leaf, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0)
		return err_set(negerrno(), "'%s': cannot open", e->path);
	r = store_hash_fd(fd, h);
	if (r < 0)
		return err_set(r, "'%s': cannot hash: %s", e->path, strerror(-r));
	if (memcmp(h, e->hash, STORE_HASH_LEN))
		return err_set(-EBADMSG, "'%s': content does not match the manifest's hash", e->path);
	return 0;
}

/* True when some manifest path lies below directory path dir. */
static bool dir_needed(const struct manifest *m, const char *dir, size_t dlen)
{
	size_t lo = 0, hi = m->nfiles;
	/* first entry >= "dir/" */
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = strncmp(m->files[mid].path, dir, dlen);
		if (c == 0)
			c = (unsigned char)m->files[mid].path[dlen] - (unsigned char)'/';
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < m->nfiles && !strncmp(m->files[lo].path, dir, dlen) && m->files[lo].path[dlen] == '/';
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Lists directory fd's entries (without . and ..) sorted, malloc'd. */
static int list_dir(int fd, char ***ret, size_t *ret_n)
{
	/* Not dup(): a dup shares the directory offset with fd's other
	 * users (other threads listing the same directory). */
	_cleanup_close_ int dup = openat(fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	char **names = NULL;
	size_t n = 0, cap = 0;
	struct dirent *de;
	DIR *d;
	int r = 0;

	if (dup < 0)
		return negerrno();
	d = fdopendir(dup);
	if (!d)
		return negerrno();
	dup = -1;
	while ((errno = 0, de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (n == cap) {
			cap = cap ? 2 * cap : 16;
			char **nn = realloc(names, cap * sizeof(*nn));
			if (!nn) {
				r = -ENOMEM;
				break;
			}
			names = nn;
		}
		names[n] = strdup(de->d_name);
		if (!names[n]) {
			r = -ENOMEM;
			break;
		}
		n++;
	}
	if (r == 0 && errno)
		r = negerrno();
	closedir(d);
	if (r < 0) {
		for (size_t i = 0; i < n; i++)
			free(names[i]);
		free(names);
		return r;
	}
	if (n > 0)
		qsort(names, n, sizeof(*names), cmp_str);
	*ret = names;
	*ret_n = n;
	return 0;
}

static void free_names(char **names, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
}

/* Walks the tree for anything the manifest does not list. */
static int walk_extra(int fd, const struct manifest *m, char *path, size_t plen, unsigned depth)
{
	char shown[300];
	char **names;
	size_t n;
	int r;

	r = list_dir(fd, &names, &n);
	if (r < 0)
		return err_set(r, "'%s/': cannot list", plen ? clean(path, shown, sizeof(shown)) : ".");
	for (size_t i = 0; i < n && r == 0; i++) {
		size_t nlen = strlen(names[i]), len = plen + (plen ? 1 : 0) + nlen;
		struct stat st;

		if (len > 1024) {
			r = err_set(-EBADMSG, "'%s/%s': path too long, not in the manifest",
				    clean(path, shown, 128), clean(names[i], shown + 150, 128));
			break;
		}
		if (plen)
			path[plen] = '/';
		memcpy(path + plen + (plen ? 1 : 0), names[i], nlen + 1);
		if (fstatat(fd, names[i], &st, AT_SYMLINK_NOFOLLOW) < 0) {
			r = err_set(negerrno(), "'%s': cannot stat", clean(path, shown, sizeof(shown)));
		} else if (depth == 0 && !strcmp(names[i], STORE_MANIFEST)) {
			/* read and checked by the caller */
		} else if (S_ISDIR(st.st_mode)) {
			if (depth + 1 >= MAX_DEPTH || !dir_needed(m, path, len)) {
				r = err_set(-EBADMSG, "'%s/': a directory the manifest does not list",
					    clean(path, shown, sizeof(shown)));
			} else {
				int sub = openat(fd, names[i], O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
				if (sub < 0) {
					r = err_set(negerrno(), "'%s/': cannot open", clean(path, shown, sizeof(shown)));
				} else {
					r = walk_extra(sub, m, path, len, depth + 1);
					close(sub);
				}
			}
		} else if (!S_ISREG(st.st_mode)) {
			r = err_set(-EBADMSG, "'%s': %s, not a regular file", clean(path, shown, sizeof(shown)),
				    kind(st.st_mode));
		} else if (!manifest_find(m, path)) {
			r = err_set(-EBADMSG, "'%s': not in the manifest", clean(path, shown, sizeof(shown)));
		}
		path[plen] = 0;
	}
	free_names(names, n);
	return r;
}

static int read_manifest(int dfd, const char *name, char **ret, size_t *ret_len)
{
	_cleanup_close_ int fd = -1;
	_cleanup_free_ char *text = NULL;
	struct stat st;
	ssize_t n;

	fd = open_file_nofollow(dfd, STORE_MANIFEST, &st);
	if (fd == -ENOENT)
		return err_set(-EBADMSG, "snapshot '%s': no manifest (not a snapshot, or an incomplete one)", name);
	if (fd == -EBADMSG)
		return err_set(-EBADMSG, "snapshot '%s': its manifest is not a regular file", name);
	if (fd < 0)
		return err_set(fd, "snapshot '%s': cannot open its manifest", name);
	if ((uint64_t)st.st_size > MANIFEST_READ_MAX)
		return err_set(-EBADMSG, "snapshot '%s': manifest of %" PRIu64 " bytes, too large", name,
			       (uint64_t)st.st_size);
	text = malloc(st.st_size + 1);
	if (!text)
		return -ENOMEM;
	n = pread_full(fd, text, st.st_size, 0);
	if (n < 0)
		return err_set(n, "snapshot '%s': cannot read its manifest", name);
	*ret_len = n;
	*ret = TAKE_PTR(text);
	return 0;
}

static int dir_snap_open(struct store *s, const char *name, unsigned flags, struct store_snap **ret)
{
	struct dir_store *st = to_store(s);
	_cleanup_free_ char *text = NULL;
	char path[1100] = "";
	struct dir_snap *ds;
	size_t len;
	int r;

	r = snap_name_ok(name);
	if (r < 0)
		return r;
	ds = snap_new(name);
	if (!ds)
		return -ENOMEM;
	ds->dfd = openat(st->root_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (ds->dfd < 0) {
		r = negerrno();
		if (r == -ENOENT)
			r = err_set(-ENOENT, "no snapshot '%s'", name);
		else if (r == -ENOTDIR || r == -ELOOP)
			r = err_set(-EBADMSG, "'%s' is not a snapshot directory (a file or a symlink)", name);
		else
			r = err_set(r, "snapshot '%s': cannot open", name);
		goto fail;
	}
	r = read_manifest(ds->dfd, name, &text, &len);
	if (r < 0)
		goto fail;
	r = manifest_parse(text, len, &ds->m);
	if (r < 0) {
		r = rewrap(r, "snapshot '%s': %s", name);
		goto fail;
	}
	ds->manifest_size = len;
	store_hash_buf(text, len, ds->manifest_hash);

	/* Every listed file, in path order, so the first mismatch named is
	 * the same each time; then anything extra. */
	for (size_t i = 0; i < ds->m.nfiles; i++) {
		r = check_entry(ds->dfd, &ds->m.files[i], flags & STORE_OPEN_VERIFY);
		if (r < 0) {
			r = rewrap(r, "snapshot '%s': %s", name);
			goto fail;
		}
	}
	r = walk_extra(ds->dfd, &ds->m, path, 0, 0);
	if (r < 0) {
		r = rewrap(r, "snapshot '%s': %s", name);
		goto fail;
	}

	ds->space = malloc((ds->m.nfiles + 1) * sizeof(*ds->space));
	if (!ds->space) {
		r = -ENOMEM;
		goto fail;
	}
	for (size_t i = 0; i <= ds->m.nfiles; i++)
		ds->space[i].allocated = UINT64_MAX;
	*ret = &ds->base;
	return 0;
fail:
	snap_free(ds);
	return r;
}

/* Size, hash and cache slot of `path` in a snapshot being read. */
static int lookup(struct dir_snap *ds, const char *path, const struct manifest_entry **ent, uint64_t *size,
		  struct space **slot)
{
	if (!strcmp(path, STORE_MANIFEST)) {
		*ent = NULL;
		*size = ds->manifest_size;
		*slot = &ds->space[ds->m.nfiles];
		return 0;
	}
	*ent = manifest_find(&ds->m, path);
	if (!*ent)
		return err_set(-ENOENT, "snapshot '%s': no file '%s'", ds->name, path);
	*size = (*ent)->size;
	*slot = &ds->space[*ent - ds->m.files];
	return 0;
}

/* Fills slot from fd once. Racing threads compute the same values. */
static void space_of(int fd, uint64_t size, struct space *slot)
{
	struct stat st;

	if (__atomic_load_n(&slot->allocated, __ATOMIC_ACQUIRE) != UINT64_MAX)
		return;
	slot->stored = fstat(fd, &st) == 0 ? (uint64_t)st.st_blocks * 512 : 0;
	__atomic_store_n(&slot->allocated, data_bytes(fd, size), __ATOMIC_RELEASE);
}

static int stat_path(struct dir_snap *ds, const char *path, struct store_stat *ret)
{
	const struct manifest_entry *e;
	struct space *slot;
	uint64_t size;
	int r;

	r = lookup(ds, path, &e, &size, &slot);
	if (r < 0)
		return r;
	if (__atomic_load_n(&slot->allocated, __ATOMIC_ACQUIRE) == UINT64_MAX) {
		_cleanup_close_ int fd = -1;
		struct stat st;

		fd = open_file_nofollow(ds->dfd, path, &st);
		if (fd < 0)
			return err_set(fd == -EBADMSG ? -EIO : fd, "snapshot '%s': '%s' cannot be opened", ds->name,
				       path);
		space_of(fd, size, slot);
	}
	memset(ret, 0, sizeof(*ret));
	ret->size = size;
	ret->allocated = slot->allocated;
	ret->stored = slot->stored;
	memcpy(ret->hash, e ? e->hash : ds->manifest_hash, STORE_HASH_LEN);
	return 0;
}

static int dir_snap_stat(struct store_snap *r, const char *path, struct store_stat *ret)
{
	return stat_path(to_snap(r), path, ret);
}

static int dir_snap_foreach_file(struct store_snap *r,
				 int (*cb)(const char *path, const struct store_stat *st, void *ud), void *ud)
{
	struct dir_snap *ds = to_snap(r);
	bool manifest_done = false;
	struct store_stat st;
	int q;

	/* The manifest's own name sorts among the others. */
	for (size_t i = 0; i <= ds->m.nfiles; i++) {
		const char *p = i < ds->m.nfiles ? ds->m.files[i].path : NULL;
		if (!manifest_done && (!p || strcmp(STORE_MANIFEST, p) < 0)) {
			manifest_done = true;
			q = stat_path(ds, STORE_MANIFEST, &st);
			if (q == 0)
				q = cb(STORE_MANIFEST, &st, ud);
			if (q != 0)
				return q;
		}
		if (!p)
			break;
		q = stat_path(ds, p, &st);
		if (q == 0)
			q = cb(p, &st, ud);
		if (q != 0)
			return q;
	}
	return 0;
}

static int dir_file_open(struct store_snap *r, const char *path, struct store_file **ret)
{
	struct dir_snap *ds = to_snap(r);
	struct dir_file *f;
	struct stat st;
	uint64_t size;
	int q;

	f = calloc(1, sizeof(*f));
	if (!f)
		return -ENOMEM;
	q = lookup(ds, path, &f->ent, &size, &f->space);
	if (q < 0)
		goto fail;
	f->size = size;
	f->path = strdup(path);
	if (!f->path) {
		q = -ENOMEM;
		goto fail;
	}
	f->fd = open_file_nofollow(ds->dfd, path, &st);
	if (f->fd < 0) {
		q = err_set(f->fd == -EBADMSG ? -EIO : f->fd, "snapshot '%s': '%s' cannot be opened", ds->name,
			    path);
		goto fail;
	}
	if ((uint64_t)st.st_size != size) {
		close(f->fd);
		q = err_set(-EIO, "snapshot '%s': '%s' changed size since the snapshot was opened", ds->name, path);
		goto fail;
	}
	*ret = &f->base;
	return 0;
fail:
	free(f->path);
	free(f);
	return q;
}

static ssize_t dir_file_pread(struct store_file *sf, void *buf, size_t len, uint64_t off)
{
	struct dir_file *f = to_file(sf);
	ssize_t n;

	if (off >= f->size)
		return 0;
	len = MIN(len, f->size - off);
	n = pread_full(f->fd, buf, len, off);
	if (n < 0)
		return err_set(n, "'%s': read at %" PRIu64 " failed", f->path, off);
	if ((size_t)n < len)
		return err_set(-EIO, "'%s': ends at %" PRIu64 ", the manifest says %" PRIu64, f->path,
			       off + n, f->size);
	return n;
}

static int64_t dir_file_seek(struct store_file *sf, uint64_t off, int whence)
{
	struct dir_file *f = to_file(sf);
	off_t r;

	if (off >= f->size)
		return -ENXIO;
	r = lseek(f->fd, off, whence);
	if (r < 0)
		return negerrno();
	if (whence == SEEK_DATA && (uint64_t)r >= f->size)
		return -ENXIO;
	return MIN((uint64_t)r, f->size);
}

static int dir_file_stat(struct store_file *sf, struct store_stat *ret)
{
	struct dir_file *f = to_file(sf);
	struct stat st;

	memset(ret, 0, sizeof(*ret));
	ret->size = f->size;
	if (sf->writing) {
		/* In progress: no hash yet; blocks as the filesystem counts. */
		if (fstat(f->fd, &st) == 0)
			ret->stored = (uint64_t)st.st_blocks * 512;
		ret->allocated = MIN(ret->stored, f->size);
		return 0;
	}
	space_of(f->fd, f->size, f->space);
	ret->allocated = f->space->allocated;
	ret->stored = f->space->stored;
	memcpy(ret->hash, f->ent ? f->ent->hash : to_snap(sf->snap)->manifest_hash, STORE_HASH_LEN);
	return 0;
}

static void dir_snap_close(struct store_snap *s)
{
	struct dir_snap *ds = to_snap(s);
	struct dir_store *st = to_store(s->store);

	if (ds->tmp) {
		/* Not committed: discard, while still holding the lock that
		 * keeps sweep_stale off it. */
		_cleanup_free_ char *p = NULL;
		if (asprintf(&p, "%s/%s", st->root, ds->tmp) >= 0)
			rm_rf(p);
	}
	snap_free(ds);
}

/* ---- managing ------------------------------------------------------------- */

static int dir_foreach_snap(struct store *s, const char *prefix,
			    int (*cb)(const struct store_snap_info *info, void *ud), void *ud)
{
	struct dir_store *st = to_store(s);
	char **names;
	size_t n;
	int r;

	r = list_dir(st->root_fd, &names, &n);
	if (r < 0)
		return err_set(r, "%s: cannot list", st->root);
	for (size_t i = 0; i < n && r == 0; i++) {
		_cleanup_close_ int dfd = -1;
		_cleanup_free_ char *text = NULL;
		struct store_snap_info info = { .name = names[i] };
		struct manifest m = {};
		size_t len;

		/* Hidden: temporary directories and deletions in progress. */
		if (names[i][0] == '.' || (prefix && strncmp(names[i], prefix, strlen(prefix))))
			continue;
		if (name_check(names[i], 1) < 0)
			continue;
		dfd = openat(st->root_fd, names[i], O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (dfd < 0)
			continue;
		if (read_manifest(dfd, names[i], &text, &len) < 0 || manifest_parse(text, len, &m) < 0) {
			log_debug("%s/%s: skipped in listing: %s", st->root, names[i], err_msg());
			continue;
		}
		info.created = m.created;
		info.files = m.nfiles + 1;
		info.size = len;
		info.allocated = len;
		for (size_t j = 0; j < m.nfiles; j++) {
			_cleanup_close_ int pfd = -1;
			const char *leaf;
			struct stat sb;

			info.size += m.files[j].size;
			pfd = open_parent(dfd, m.files[j].path, false, &leaf, NULL, NULL);
			if (pfd >= 0 && fstatat(pfd, leaf, &sb, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(sb.st_mode)) {
				info.allocated += MIN((uint64_t)sb.st_blocks * 512, m.files[j].size);
				info.stored += (uint64_t)sb.st_blocks * 512;
			}
		}
		manifest_clear(&m);
		r = cb(&info, ud);
	}
	free_names(names, n);
	return r;
}

static int dir_snap_delete(struct store *s, const char *name)
{
	struct dir_store *st = to_store(s);
	_cleanup_free_ char *hidden = NULL, *p = NULL;
	_cleanup_close_ int fd = -1;
	struct stat sb;
	int r;

	r = snap_name_ok(name);
	if (r < 0)
		return r;
	if (fstatat(st->root_fd, name, &sb, AT_SYMLINK_NOFOLLOW) < 0) {
		r = negerrno();
		return r == -ENOENT ? err_set(r, "no snapshot '%s'", name) : err_set(r, "snapshot '%s'", name);
	}
	if (!S_ISDIR(sb.st_mode))
		return err_set(-ENOTDIR, "'%s' is not a snapshot directory", name);
	/* Out of sight in one rename (readers holding it open keep reading),
	 * made durable, then removed at leisure. */
	r = make_hidden(st, name, "del", false, name, &hidden);
	if (r < 0)
		return err_set(r, "snapshot '%s': cannot move it aside", name);
	fd = openat(st->root_fd, hidden, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd >= 0)
		flock(fd, LOCK_EX | LOCK_NB);
	if (fsync(st->root_fd) < 0)
		log_debug("%s: fsync after deleting '%s' failed", st->root, name);
	if (asprintf(&p, "%s/%s", st->root, hidden) >= 0)
		rm_rf(p);
	sweep_stale(st, name);
	return 0;
}

static int dir_stats(struct store *s, struct store_stats *ret)
{
	return err_set(-EOPNOTSUPP, "a snapshot directory has no store statistics");
}

static int dir_gc(struct store *s, struct store_gc_stats *ret)
{
	return err_set(-EOPNOTSUPP, "a snapshot directory needs no gc");
}

static int dir_fsck(struct store *s, void (*report)(const char *object, const char *problem, void *ud),
		    void *ud)
{
	return err_set(-EOPNOTSUPP, "fsck is for the chunk store; open a snapshot with verification instead");
}

/* ---- small records ---------------------------------------------------------- */

/* Record KEY is the file ROOT/.meta/KEY: hidden, like every name of ours
 * that is not a snapshot. */
#define META_DIR ".meta"

static int dir_meta_put(struct store *s, const char *key, const void *buf, size_t len)
{
	struct dir_store *st = to_store(s);
	_cleanup_close_ int dfd = -1, fd = -1;
	char tmp[300];
	int r;

	if (mkdirat(st->root_fd, META_DIR, 0700) == 0) {
		if (fsync(st->root_fd) < 0)
			return err_set(negerrno(), "%s: fsync: %m", st->root);
	} else if (errno != EEXIST) {
		return err_set(negerrno(), "%s/" META_DIR ": cannot create: %m", st->root);
	}
	dfd = openat(st->root_fd, META_DIR, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (dfd < 0)
		return err_set(negerrno(), "%s/" META_DIR ": %m", st->root);
	/* Written aside, synced, renamed over the old one, the directory
	 * synced: a crash leaves the old record or the new one. The
	 * thread's id keeps two writers of one key apart. */
	snprintf(tmp, sizeof(tmp), ".%s.tmp-%d", key, (int)gettid());
	fd = openat(dfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0)
		return err_set(negerrno(), "%s/" META_DIR "/%s: %m", st->root, tmp);
	r = write_full(fd, buf, len);
	if (r >= 0 && fsync(fd) < 0)
		r = negerrno();
	if (r >= 0 && renameat(dfd, tmp, dfd, key) < 0)
		r = negerrno();
	if (r >= 0 && fsync(dfd) < 0)
		r = negerrno();
	if (r < 0) {
		unlinkat(dfd, tmp, 0);
		return err_set(r, "%s/" META_DIR "/%s: cannot write the record: %s", st->root, key, strerror(-r));
	}
	return 0;
}

static int dir_meta_get(struct store *s, const char *key, char **ret, size_t *ret_len)
{
	struct dir_store *st = to_store(s);
	_cleanup_free_ char *path = NULL;
	int r;

	if (asprintf(&path, "%s/" META_DIR "/%s", st->root, key) < 0)
		return -ENOMEM;
	r = read_file_full(path, ret, ret_len);
	if (r == -ENOENT)
		return err_set(r, "%s: no record '%s'", st->root, key);
	return r < 0 ? err_set(r, "%s: %s", path, strerror(-r)) : 0;
}

const struct store_ops store_dir_ops = {
	.close = dir_close,
	.snap_create = dir_snap_create,
	.file_create = dir_file_create,
	.file_pwrite = dir_file_pwrite,
	.file_set_size = dir_file_set_size,
	.snap_commit = dir_snap_commit,
	.snap_open = dir_snap_open,
	.snap_foreach_file = dir_snap_foreach_file,
	.snap_stat = dir_snap_stat,
	.file_open = dir_file_open,
	.file_pread = dir_file_pread,
	.file_seek = dir_file_seek,
	.file_stat = dir_file_stat,
	.file_close = dir_file_close,
	.snap_close = dir_snap_close,
	.foreach_snap = dir_foreach_snap,
	.snap_delete = dir_snap_delete,
	.stats = dir_stats,
	.gc = dir_gc,
	.fsck = dir_fsck,
	.meta_put = dir_meta_put,
	.meta_get = dir_meta_get,
};
