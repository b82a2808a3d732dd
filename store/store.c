/*
 * The public face of store/: checks what callers pass (names, paths,
 * flags, the writer/reader state of handles, NULLs) once, here, and
 * dispatches to the backend's vtable. Backends can therefore trust their
 * arguments; they fill in the common fields of the handles they return,
 * and this file sets them again so that neither can forget.
 */
#include <inttypes.h>
#include <limits.h>
#include <pwd.h>
#include <sys/stat.h>

#include "store/store-int.h"

/* What store_snap_read_all() is willing to load into memory. */
#define READ_ALL_MAX (64ull << 20)
/* The largest file offset accepted (1 PiB); matches the manifest's limit. */
#define FILE_MAX_SIZE (1ull << 50)

/* ---- stores --------------------------------------------------------------- */

int store_open(const char *dir, const struct store_options *o, struct store **ret)
{
	static const struct store_options defaults = {};

	if (!dir || !*dir || !ret)
		return err_set(-EINVAL, "store_open: no directory given");
	return chunk_store_open(dir, o ? o : &defaults, ret);
}

int store_open_dir(const char *dir, struct store **ret)
{
	if (!dir || !*dir || !ret)
		return err_set(-EINVAL, "store_open_dir: no directory given");
	return dir_store_open(dir, ret);
}

void store_close(struct store *s)
{
	if (s)
		s->ops->close(s);
}

enum store_backend store_backend(struct store *s)
{
	return s->backend;
}

char *store_default_path(void)
{
	const char *xdg = getenv("XDG_DATA_HOME"), *home = getenv("HOME");
	char *p;

	if (geteuid() == 0)
		return strdup("/var/lib/ckptfs");
	/* The XDG spec says a relative $XDG_DATA_HOME is invalid: ignore it. */
	if (xdg && xdg[0] == '/')
		return asprintf(&p, "%s/ckptfs", xdg) < 0 ? NULL : p;
	if (!home || home[0] != '/') {
		struct passwd *pw = getpwuid(geteuid());
		home = pw && pw->pw_dir && pw->pw_dir[0] == '/' ? pw->pw_dir : "/tmp";
	}
	return asprintf(&p, "%s/.local/share/ckptfs", home) < 0 ? NULL : p;
}

int store_name_valid(const char *name)
{
	return name_check(name, 8);
}

int store_path_valid(const char *path)
{
	return path_check(path);
}

/* ---- state checks --------------------------------------------------------- */

static int need_writer(struct store_snap *w, const char *op)
{
	if (!w)
		return err_set(-EINVAL, "%s: no snapshot", op);
	if (!w->writing)
		return err_set(-EBADF, "%s: snapshot is open for reading", op);
	if (w->committed)
		return err_set(-EBADF, "%s: snapshot is already committed", op);
	if (w->failed)
		return err_set(-EBADF, "%s: snapshot failed to commit; it can only be closed", op);
	return 0;
}

static int need_reader(struct store_snap *r, const char *op)
{
	if (!r)
		return err_set(-EINVAL, "%s: no snapshot", op);
	if (r->writing)
		return err_set(-EBADF, "%s: snapshot is being written", op);
	return 0;
}

static int need_file_writer(struct store_file *f, const char *op)
{
	if (!f)
		return err_set(-EINVAL, "%s: no file", op);
	if (!f->writing)
		return err_set(-EBADF, "%s: file is open for reading", op);
	return need_writer(f->snap, op);
}

static int need_file_reader(struct store_file *f, const char *op)
{
	if (!f)
		return err_set(-EINVAL, "%s: no file", op);
	if (f->writing)
		return err_set(-EBADF, "%s: file is open for writing", op);
	return 0;
}

/* A path a reader may ask for: a valid path, `manifest` included. */
static int read_path_ok(const char *path)
{
	return path_check(path);
}

/* A view's call goes to its parent with the view's directory in front of
 * path (into buf); a plain snapshot's goes through as it is. */
static struct store_snap *resolve(struct store_snap *s, const char *path, char *buf, size_t len,
				  const char **ret)
{
	*ret = path;
	if (!s || !s->parent)
		return s;
	if (!path || (size_t)snprintf(buf, len, "%s%s", s->prefix, path) >= len) {
		*ret = NULL;
		return s->parent;
	}
	*ret = buf;
	return s->parent;
}

#define VIEW_PATH_MAX 2048

int store_snap_at(struct store_snap *s, const char *dir, struct store_snap **ret)
{
	struct store_snap *v;
	int r;

	if (!s || !ret)
		return -EINVAL;
	r = path_check(dir);
	if (r < 0)
		return r;
	v = calloc(1, sizeof(*v));
	if (!v)
		return -ENOMEM;
	if (asprintf(&v->prefix, "%s%s/", s->parent ? s->prefix : "", dir) < 0) {
		free(v);
		return -ENOMEM;
	}
	v->parent = s->parent ? s->parent : s;
	v->store = s->store;
	v->writing = v->parent->writing;
	v->flags = v->parent->flags;
	*ret = v;
	return 0;
}

/* ---- writing -------------------------------------------------------------- */

/* What creating and opening a snapshot share: argument checks, then the
 * backend, then the common handle fields. */
static int snap_begin(struct store *s, const char *name, unsigned flags, unsigned known, bool writing,
		      struct store_snap **ret)
{
	const char *what = writing ? "store_snap_create" : "store_snap_open";
	struct store_snap *h;
	int r;

	if (!s || !ret)
		return err_set(-EINVAL, "%s: no store", what);
	if (flags & ~known)
		return err_set(-EINVAL, "%s: unknown flags 0x%x", what, flags);
	r = store_name_valid(name);
	if (r < 0)
		return r;
	r = writing ? s->ops->snap_create(s, name, flags, &h) : s->ops->snap_open(s, name, flags, &h);
	if (r < 0)
		return r;
	h->store = s;
	h->writing = writing;
	h->committed = !writing;
	h->failed = false;
	h->flags = flags;
	h->parent = NULL;
	h->prefix = NULL;
	*ret = h;
	return 0;
}

int store_snap_create(struct store *s, const char *name, unsigned flags, struct store_snap **ret)
{
	return snap_begin(s, name, flags, STORE_CREATE_IMPORT, true, ret);
}

int store_file_create(struct store_snap *w, const char *path, struct store_file **ret)
{
	struct store_file *f;
	char buf[VIEW_PATH_MAX];
	int r;

	w = resolve(w, path, buf, sizeof(buf), &path);
	if (!path)
		return err_set(-ENAMETOOLONG, "store_file_create: path too long");

	r = need_writer(w, "store_file_create");
	if (r < 0)
		return r;
	if (!ret)
		return -EINVAL;
	r = path_check(path);
	if (r < 0)
		return r;
	/* The manifest is the store's own, except in an import, where the
	 * snapshot brings one and commit checks everything against it. */
	if (!strcmp(path, STORE_MANIFEST) && !(w->flags & STORE_CREATE_IMPORT))
		return err_set(-EPERM, "'%s' is reserved for the store's manifest", path);
	if (!strncmp(path, STORE_MANIFEST "/", strlen(STORE_MANIFEST) + 1))
		return err_set(-EINVAL, "'%s': '%s' is a file, not a directory", path, STORE_MANIFEST);
	r = w->store->ops->file_create(w, path, &f);
	if (r < 0)
		return r;
	f->snap = w;
	f->writing = true;
	*ret = f;
	return 0;
}

int store_file_pwrite(struct store_file *f, const void *buf, size_t len, uint64_t off)
{
	int r = need_file_writer(f, "store_file_pwrite");
	if (r < 0)
		return r;
	if (len == 0)
		return 0;
	if (!buf)
		return -EINVAL;
	if (off > FILE_MAX_SIZE || len > FILE_MAX_SIZE - off)
		return err_set(-EFBIG, "write at %" PRIu64 "+%zu: beyond the 1 PiB file limit", off, len);
	return f->snap->store->ops->file_pwrite(f, buf, len, off);
}

int store_file_pwrite_blocks(struct store_file *f, const void *buf, size_t len, uint64_t off,
			     struct store_block *blocks)
{
	int r = need_file_writer(f, "store_file_pwrite_blocks");
	if (r < 0)
		return r;
	if (off % STORE_BLOCK_SIZE || len % STORE_BLOCK_SIZE)
		return err_set(-EINVAL, "write of whole blocks at %" PRIu64 "+%zu: not block-aligned", off, len);
	if (len == 0)
		return 0;
	if (!buf || !blocks)
		return -EINVAL;
	if (off > FILE_MAX_SIZE || len > FILE_MAX_SIZE - off)
		return err_set(-EFBIG, "write at %" PRIu64 "+%zu: beyond the 1 PiB file limit", off, len);
	if (!f->snap->store->ops->file_pwrite_blocks) {
		r = f->snap->store->ops->file_pwrite(f, buf, len, off);
		return r < 0 ? r : 0;
	}
	return f->snap->store->ops->file_pwrite_blocks(f, buf, len, off, blocks);
}

int store_file_set_size(struct store_file *f, uint64_t size)
{
	int r = need_file_writer(f, "store_file_set_size");
	if (r < 0)
		return r;
	if (size > FILE_MAX_SIZE)
		return err_set(-EFBIG, "size %" PRIu64 ": beyond the 1 PiB file limit", size);
	return f->snap->store->ops->file_set_size(f, size);
}

int store_snap_put(struct store_snap *w, const char *path, const void *buf, size_t len)
{
	struct store_file *f;
	int r, q;

	r = store_file_create(w, path, &f);
	if (r < 0)
		return r;
	r = store_file_pwrite(f, buf, len, 0);
	q = store_file_close(f);
	return r < 0 ? r : q;
}

int store_snap_commit(struct store_snap *w)
{
	int r = need_writer(w, "store_snap_commit");
	if (r < 0)
		return r;
	if (w->parent)
		return err_set(-EINVAL, "store_snap_commit: '%s' is a view of a snapshot, not one", w->prefix);
	r = w->store->ops->snap_commit(w);
	if (r < 0) {
		w->failed = true;
		return r;
	}
	w->committed = true;
	return 0;
}

/* ---- reading -------------------------------------------------------------- */

int store_snap_open(struct store *s, const char *name, unsigned flags, struct store_snap **ret)
{
	return snap_begin(s, name, flags, STORE_OPEN_VERIFY, false, ret);
}

struct view_walk {
	const char *prefix;
	size_t len;
	int (*cb)(const char *path, const struct store_stat *st, void *ud);
	void *ud;
};

static int view_file(const char *path, const struct store_stat *st, void *ud)
{
	struct view_walk *w = ud;
	return strncmp(path, w->prefix, w->len) ? 0 : w->cb(path + w->len, st, w->ud);
}

int store_snap_foreach_file(struct store_snap *r,
			    int (*cb)(const char *path, const struct store_stat *st, void *ud), void *ud)
{
	int q = need_reader(r, "store_snap_foreach_file");
	if (q < 0)
		return q;
	if (!cb)
		return -EINVAL;
	if (r->parent) {
		struct view_walk w = { r->prefix, strlen(r->prefix), cb, ud };
		return r->parent->store->ops->snap_foreach_file(r->parent, view_file, &w);
	}
	return r->store->ops->snap_foreach_file(r, cb, ud);
}

int store_snap_stat(struct store_snap *r, const char *path, struct store_stat *ret)
{
	char buf[VIEW_PATH_MAX];
	r = resolve(r, path, buf, sizeof(buf), &path);
	if (!path)
		return err_set(-ENAMETOOLONG, "store_snap_stat: path too long");
	int q = need_reader(r, "store_snap_stat");
	if (q < 0)
		return q;
	if (!ret)
		return -EINVAL;
	q = read_path_ok(path);
	if (q < 0)
		return q;
	return r->store->ops->snap_stat(r, path, ret);
}

int store_file_open(struct store_snap *r, const char *path, struct store_file **ret)
{
	struct store_file *f;
	char buf[VIEW_PATH_MAX];
	r = resolve(r, path, buf, sizeof(buf), &path);
	if (!path)
		return err_set(-ENAMETOOLONG, "store_file_open: path too long");
	int q = need_reader(r, "store_file_open");
	if (q < 0)
		return q;
	if (!ret)
		return -EINVAL;
	q = read_path_ok(path);
	if (q < 0)
		return q;
	q = r->store->ops->file_open(r, path, &f);
	if (q < 0)
		return q;
	f->snap = r;
	f->writing = false;
	*ret = f;
	return 0;
}

int store_snap_read_all(struct store_snap *r, const char *path, char **ret, size_t *ret_len)
{
	_cleanup_free_ char *buf = NULL;
	struct store_file *f;
	struct store_stat st;
	ssize_t n;
	int q;

	if (!ret)
		return -EINVAL;
	q = store_snap_stat(r, path, &st);
	if (q < 0)
		return q;
	if (st.size > READ_ALL_MAX)
		return err_set(-EFBIG, "'%s': %" PRIu64 " bytes, more than store_snap_read_all takes", path,
			       st.size);
	buf = malloc(st.size + 1);
	if (!buf)
		return -ENOMEM;
	q = store_file_open(r, path, &f);
	if (q < 0)
		return q;
	for (size_t done = 0; done < st.size; done += n) {
		n = store_file_pread(f, buf + done, st.size - done, done);
		if (n < 0) {
			store_file_close(f);
			return n;
		}
		if (n == 0) {
			store_file_close(f);
			return err_set(-EIO, "'%s': ends at %zu, its size is %" PRIu64, path, done, st.size);
		}
	}
	store_file_close(f);
	buf[st.size] = 0;
	if (ret_len)
		*ret_len = st.size;
	*ret = TAKE_PTR(buf);
	return 0;
}

ssize_t store_file_pread(struct store_file *f, void *buf, size_t len, uint64_t off)
{
	int q = need_file_reader(f, "store_file_pread");
	if (q < 0)
		return q;
	if (len == 0)
		return 0;
	if (!buf)
		return -EINVAL;
	len = MIN(len, (size_t)SSIZE_MAX);
	return f->snap->store->ops->file_pread(f, buf, len, off);
}

int64_t store_file_seek(struct store_file *f, uint64_t off, int whence)
{
	int q = need_file_reader(f, "store_file_seek");
	if (q < 0)
		return q;
	if (whence != SEEK_DATA && whence != SEEK_HOLE)
		return err_set(-EINVAL, "store_file_seek: whence must be SEEK_DATA or SEEK_HOLE");
	return f->snap->store->ops->file_seek(f, off, whence);
}

int store_file_stat(struct store_file *f, struct store_stat *ret)
{
	if (!f || !ret)
		return -EINVAL;
	/* Also for a file being written (its size so far; no hash yet): the
	 * filesystem answers getattr on files being copied in. */
	return f->snap->store->ops->file_stat(f, ret);
}

int store_file_close(struct store_file *f)
{
	if (!f)
		return 0;
	return f->snap->store->ops->file_close(f);
}

void store_snap_close(struct store_snap *w)
{
	if (w && w->parent) {
		free(w->prefix);
		free(w);
	} else if (w) {
		w->store->ops->snap_close(w);
	}
}

/* ---- managing ------------------------------------------------------------- */

int store_foreach_snap(struct store *s, const char *prefix,
		       int (*cb)(const struct store_snap_info *info, void *ud), void *ud)
{
	if (!s || !cb)
		return -EINVAL;
	return s->ops->foreach_snap(s, prefix, cb, ud);
}

int store_snap_delete(struct store *s, const char *name)
{
	int r;

	if (!s)
		return -EINVAL;
	r = store_name_valid(name);
	if (r < 0)
		return r;
	return s->ops->snap_delete(s, name);
}

int store_stats(struct store *s, struct store_stats *ret)
{
	if (!s || !ret)
		return -EINVAL;
	return s->ops->stats(s, ret);
}

int store_gc(struct store *s, struct store_gc_stats *ret)
{
	struct store_gc_stats ignored;

	if (!s)
		return -EINVAL;
	return s->ops->gc(s, ret ? ret : &ignored);
}

int store_fsck(struct store *s, void (*report)(const char *object, const char *problem, void *ud),
	       void *ud)
{
	if (!s || !report)
		return -EINVAL;
	return s->ops->fsck(s, report, ud);
}

/* ---- small records ----------------------------------------------------------- */

int store_meta_put(struct store *s, const char *key, const void *buf, size_t len)
{
	int r;

	if (!s || (!buf && len))
		return -EINVAL;
	r = name_check(key, 1);
	if (r < 0)
		return r;
	if (len > STORE_META_MAX)
		return err_set(-EFBIG, "record '%s': %zu bytes, at most %u", key, len, STORE_META_MAX);
	return s->ops->meta_put(s, key, buf ? buf : "", len);
}

int store_meta_get(struct store *s, const char *key, char **ret, size_t *ret_len)
{
	int r;

	if (!s || !ret || !ret_len)
		return -EINVAL;
	r = name_check(key, 1);
	if (r < 0)
		return r;
	return s->ops->meta_get(s, key, ret, ret_len);
}
