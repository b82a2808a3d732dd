/*
 * Committed snapshots, opened for browsing.
 *
 * A snapshot directory /<pid>/<n>/ is a view of store snapshot "<pid>/<n>":
 * its file list is read once when the snapshot is first opened and kept
 * with the open reader in a small cache (SNAP_CACHE_MAX entries beyond
 * those in use), so that lookups and readdir cost no store calls and many
 * snapshots browsed in a row keep the daemon's memory bounded.
 * Directories are implicit: a path "memory/7f..-7f.." makes "memory" one.
 *
 * Owners: a snapshot belongs to the uid of the process it holds, as its
 * `process` file records it; that is who may see it besides root.
 */
#include <inttypes.h>

#include "fs/fs-int.h"

#define SNAP_CACHE_MAX 16

int fs_snap_name(struct fs *fs, pid_t pid, uint32_t n, char *buf, size_t len)
{
	int r = snprintf(buf, len, fs->dir_backend ? "%d.%" PRIu32 : "%d/%" PRIu32, pid, n);
	return r < 0 || (size_t)r >= len ? -ENAMETOOLONG : 0;
}

int fs_restore_name(struct fs *fs, uid_t uid, const char *name, char *buf, size_t len)
{
	int r = snprintf(buf, len, fs->dir_backend ? "restore.%u.%s" : "restore/%u/%s", (unsigned)uid, name);
	if (r < 0 || (size_t)r >= len)
		return -ENAMETOOLONG;
	return store_name_valid(buf);
}

static bool parse_num(const char *s, size_t len, uint64_t max, uint64_t *ret)
{
	uint64_t v = 0;

	if (len == 0 || len > 10 || (s[0] == '0' && len > 1))
		return false;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (uint64_t)(s[i] - '0');
	}
	if (v == 0 || v > max)
		return false;
	*ret = v;
	return true;
}

bool fs_snap_name_parse(struct fs *fs, const char *s, pid_t *pid, uint32_t *n)
{
	const char *sep = strchr(s, fs->dir_backend ? '.' : '/');
	uint64_t p, k;

	if (!sep || !parse_num(s, (size_t)(sep - s), INT32_MAX, &p) ||
	    !parse_num(sep + 1, strlen(sep + 1), UINT32_MAX, &k))
		return false;
	*pid = (pid_t)p;
	*n = (uint32_t)k;
	return true;
}

/* Finds the real uid in a `process` file: the engine writes a line
 * "creds Uid: R E S F Gid: R E S F" (docs/FORMAT.md). */
static bool parse_owner(const char *text, uid_t *ret)
{
	for (const char *l = text; l && *l; l = strchr(l, '\n'), l = l ? l + 1 : NULL) {
		const char *p, *eol;

		if (strncmp(l, "creds ", 6) != 0)
			continue;
		eol = strchr(l, '\n');
		p = strstr(l, "Uid:");
		if (!p || (eol && p > eol))
			return false;
		p += 4;
		while (*p == ' ' || *p == '\t')
			p++;
		if (*p < '0' || *p > '9')
			return false;
		*ret = (uid_t)strtoul(p, NULL, 10);
		return true;
	}
	return false;
}

static uid_t owner_find_locked(struct fs *fs, const char *name, bool *found)
{
	for (struct owner_ent *o = fs->owners; o; o = o->next)
		if (!strcmp(o->name, name)) {
			*found = true;
			return o->uid;
		}
	*found = false;
	return 0;
}

void snap_owner_set(struct fs *fs, const char *name, uid_t uid)
{
	struct owner_ent *o;
	bool found;

	pthread_mutex_lock(&fs->lock);
	owner_find_locked(fs, name, &found);
	if (!found && (o = calloc(1, sizeof(*o))) && (o->name = strdup(name))) {
		o->uid = uid;
		o->next = fs->owners;
		fs->owners = o;
		o = NULL;
	}
	if (!found && o)
		free(o);
	pthread_mutex_unlock(&fs->lock);
}

static void owner_drop(struct fs *fs, const char *name)
{
	pthread_mutex_lock(&fs->lock);
	for (struct owner_ent **p = &fs->owners; *p; p = &(*p)->next)
		if (!strcmp((*p)->name, name)) {
			struct owner_ent *o = *p;
			*p = o->next;
			free(o->name);
			free(o);
			break;
		}
	pthread_mutex_unlock(&fs->lock);
}

/* Reads a small text file whole. The buffer is rounded up to whole store
 * blocks: a backend may decode a whole block into the caller's buffer. */
static int read_text(struct store_snap *r, const char *path, char **ret)
{
	struct store_file *f = NULL;
	struct store_stat st;
	_cleanup_free_ char *buf = NULL;
	ssize_t n;
	int q;

	q = store_file_open(r, path, &f);
	if (q < 0)
		return q;
	q = store_file_stat(f, &st);
	if (q >= 0 && st.size > (1u << 20))
		q = -EFBIG;
	if (q >= 0 && !(buf = calloc(1, ALIGN_UP(st.size, STORE_BLOCK_SIZE) + STORE_BLOCK_SIZE)))
		q = -ENOMEM;
	if (q >= 0) {
		n = store_file_pread(f, buf, st.size, 0);
		if (n < 0)
			q = (int)n;
		else
			buf[n] = 0;
	}
	store_file_close(f);
	if (q < 0)
		return q;
	*ret = TAKE_PTR(buf);
	return 0;
}

/* The `process` file of the snapshot's root: "<root>/process" in a tree
 * (the first pid of `tree`), "process" in a format 1 snapshot. */
static int root_process(struct store_snap *r, char **ret)
{
	_cleanup_free_ char *tree = NULL;
	char path[32];
	int root;

	if (read_text(r, "tree", &tree) < 0)
		return read_text(r, "process", ret);
	if (sscanf(tree, "%d", &root) != 1 || root <= 0)
		return -EBADMSG;
	snprintf(path, sizeof(path), "%d/process", root);
	return read_text(r, path, ret);
}

uid_t snap_owner(struct fs *fs, const char *name)
{
	struct store_snap *r = NULL;
	_cleanup_free_ char *text = NULL;
	bool found;
	uid_t uid;

	pthread_mutex_lock(&fs->lock);
	uid = owner_find_locked(fs, name, &found);
	pthread_mutex_unlock(&fs->lock);
	if (found)
		return uid;

	uid = 0;
	if (store_snap_open(fs->store, name, 0, &r) >= 0 && root_process(r, &text) >= 0 && !parse_owner(text, &uid))
		uid = 0;
	store_snap_close(r);
	snap_owner_set(fs, name, uid);
	return uid;
}

struct foreach_ctx {
	struct fs *fs;
	pid_t pid;
	uid_t caller;
	int (*cb)(pid_t pid, uint32_t n, const struct store_snap_info *info, void *ud);
	void *ud;
};

static int foreach_one(const struct store_snap_info *info, void *ud)
{
	struct foreach_ctx *c = ud;
	pid_t pid;
	uint32_t n;

	if (!fs_snap_name_parse(c->fs, info->name, &pid, &n))
		return 0;
	if (c->pid && pid != c->pid)
		return 0;
	if (!access_owner(c->caller, snap_owner(c->fs, info->name)))
		return 0;
	return c->cb(pid, n, info, c->ud);
}

int snap_foreach(struct fs *fs, pid_t pid, uid_t caller,
		 int (*cb)(pid_t pid, uint32_t n, const struct store_snap_info *info, void *ud), void *ud)
{
	struct foreach_ctx c = { fs, pid, caller, cb, ud };
	char prefix[32];

	if (pid)
		snprintf(prefix, sizeof(prefix), "%d%c", pid, fs->dir_backend ? '.' : '/');
	return store_foreach_snap(fs->store, pid ? prefix : NULL, foreach_one, &c);
}

/* ---- the cache ------------------------------------------------------------ */

static void snapview_free(struct snapview *v)
{
	if (!v)
		return;
	for (size_t i = 0; i < v->nfiles; i++)
		free(v->files[i].path);
	free(v->files);
	store_snap_close(v->snap);
	free(v->name);
	free(v);
}

struct collect {
	struct snap_file *files;
	size_t n, cap;
};

static int collect_file(const char *path, const struct store_stat *st, void *ud)
{
	struct collect *c = ud;

	if (c->n == c->cap) {
		size_t cap = c->cap ? c->cap * 2 : 32;
		struct snap_file *f = realloc(c->files, cap * sizeof(*f));
		if (!f)
			return -ENOMEM;
		c->files = f;
		c->cap = cap;
	}
	c->files[c->n].path = strdup(path);
	if (!c->files[c->n].path)
		return -ENOMEM;
	c->files[c->n].st = *st;
	c->n++;
	return 0;
}

static int cmp_file(const void *a, const void *b)
{
	return strcmp(((const struct snap_file *)a)->path, ((const struct snap_file *)b)->path);
}

/* Drops unused entries beyond the cache size, oldest first. fs->lock held;
 * returns the list of entries to free outside the lock. */
static struct snapview *evict_locked(struct fs *fs)
{
	struct snapview *out = NULL;

	while (fs->nsnaps > SNAP_CACHE_MAX) {
		struct snapview **victim = NULL;
		for (struct snapview **p = &fs->snaps; *p; p = &(*p)->next)
			if ((*p)->refs == 0 && (!victim || (*p)->used < (*victim)->used))
				victim = p;
		if (!victim)
			break;
		struct snapview *v = *victim;
		*victim = v->next;
		fs->nsnaps--;
		v->next = out;
		out = v;
	}
	return out;
}

static void free_list(struct snapview *v)
{
	while (v) {
		struct snapview *next = v->next;
		snapview_free(v);
		v = next;
	}
}

int snapview_get(struct fs *fs, pid_t pid, uint32_t n, struct snapview **ret)
{
	struct collect c = { 0 };
	struct snapview *v;
	char name[64];
	int r;

	r = fs_snap_name(fs, pid, n, name, sizeof(name));
	if (r < 0)
		return r;

	pthread_mutex_lock(&fs->lock);
	for (v = fs->snaps; v; v = v->next)
		if (v->pid == pid && v->n == n && !v->dead) {
			v->refs++;
			v->used = ++fs->clock;
			pthread_mutex_unlock(&fs->lock);
			*ret = v;
			return 0;
		}
	pthread_mutex_unlock(&fs->lock);

	/* Open outside the lock: the store may read an index. Two threads
	 * may race to open the same snapshot; both entries work, the cache
	 * ages the spare one out. */
	v = calloc(1, sizeof(*v));
	if (!v)
		return -ENOMEM;
	v->pid = pid;
	v->n = n;
	v->name = strdup(name);
	if (!v->name) {
		free(v);
		return -ENOMEM;
	}
	r = store_snap_open(fs->store, name, 0, &v->snap);
	if (r < 0) {
		snapview_free(v);
		return r;
	}
	r = store_snap_foreach_file(v->snap, collect_file, &c);
	v->files = c.files;
	v->nfiles = c.n;
	if (r < 0) {
		snapview_free(v);
		return r;
	}
	/* The store lists in byte order already; sorting again is cheap and
	 * makes the binary searches below independent of that promise. */
	qsort(v->files, v->nfiles, sizeof(*v->files), cmp_file);
	v->owner = snap_owner(fs, name);
	v->refs = 1;

	pthread_mutex_lock(&fs->lock);
	v->used = ++fs->clock;
	v->next = fs->snaps;
	fs->snaps = v;
	fs->nsnaps++;
	struct snapview *old = evict_locked(fs);
	pthread_mutex_unlock(&fs->lock);
	free_list(old);
	*ret = v;
	return 0;
}

void snapview_put(struct fs *fs, struct snapview *v)
{
	struct snapview *drop = NULL, *old;

	if (!v)
		return;
	pthread_mutex_lock(&fs->lock);
	if (--v->refs == 0 && v->dead) {
		for (struct snapview **p = &fs->snaps; *p; p = &(*p)->next)
			if (*p == v) {
				*p = v->next;
				fs->nsnaps--;
				break;
			}
		drop = v;
	}
	old = evict_locked(fs);
	pthread_mutex_unlock(&fs->lock);
	snapview_free(drop);
	free_list(old);
}

int snapview_delete(struct fs *fs, pid_t pid, uint32_t n)
{
	struct snapview *drop = NULL;
	char name[64];
	int r;

	r = fs_snap_name(fs, pid, n, name, sizeof(name));
	if (r < 0)
		return r;
	/* Close our reader first where nobody uses it: a backend may refuse
	 * to delete what is open. */
	pthread_mutex_lock(&fs->lock);
	for (struct snapview **p = &fs->snaps; *p;) {
		struct snapview *v = *p;
		if (v->pid == pid && v->n == n) {
			v->dead = true;
			if (v->refs == 0) {
				*p = v->next;
				fs->nsnaps--;
				v->next = drop;
				drop = v;
				continue;
			}
		}
		p = &v->next;
	}
	pthread_mutex_unlock(&fs->lock);
	free_list(drop);

	r = store_snap_delete(fs->store, name);
	if (r >= 0)
		owner_drop(fs, name);
	return r;
}

/* Index of the first file whose path is >= key. */
static size_t lower_bound(struct snapview *v, const char *key)
{
	size_t lo = 0, hi = v->nfiles;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (strcmp(v->files[mid].path, key) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

int snapview_lookup(struct snapview *v, const char *path, const struct snap_file **ret)
{
	_cleanup_free_ char *prefix = NULL;
	size_t i;

	if (!*path)
		return 2;
	i = lower_bound(v, path);
	if (i < v->nfiles && !strcmp(v->files[i].path, path)) {
		if (ret)
			*ret = &v->files[i];
		return 1;
	}
	if (asprintf(&prefix, "%s/", path) < 0)
		return -ENOMEM;
	i = lower_bound(v, prefix);
	if (i < v->nfiles && !strncmp(v->files[i].path, prefix, strlen(prefix)))
		return 2;
	return 0;
}

int snapview_list(struct snapview *v, const char *dir,
		  int (*cb)(const char *child, const struct snap_file *f, void *ud), void *ud)
{
	_cleanup_free_ char *prefix = NULL;
	_cleanup_free_ char *last = NULL;
	size_t plen, i;

	if (*dir) {
		if (asprintf(&prefix, "%s/", dir) < 0)
			return -ENOMEM;
	} else if (!(prefix = strdup(""))) {
		return -ENOMEM;
	}
	plen = strlen(prefix);
	for (i = lower_bound(v, prefix); i < v->nfiles; i++) {
		const char *p = v->files[i].path;
		const char *rest, *slash;
		int r;

		if (strncmp(p, prefix, plen))
			break;
		rest = p + plen;
		slash = strchr(rest, '/');
		if (!slash) {
			r = cb(rest, &v->files[i], ud);
		} else {
			/* A subdirectory: report it once. All paths under
			 * "child/" are contiguous in sorted order. */
			_cleanup_free_ char *child = strndup(rest, (size_t)(slash - rest));
			if (!child)
				return -ENOMEM;
			if (last && !strcmp(last, child))
				continue;
			r = cb(child, NULL, ud);
			free(last);
			last = TAKE_PTR(child);
		}
		if (r)
			return r;
	}
	return 0;
}

void snap_cache_free(struct fs *fs)
{
	free_list(fs->snaps);
	fs->snaps = NULL;
	fs->nsnaps = 0;
	while (fs->owners) {
		struct owner_ent *o = fs->owners;
		fs->owners = o->next;
		free(o->name);
		free(o);
	}
}
