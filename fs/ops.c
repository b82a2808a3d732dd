/*
 * The FUSE low-level operations.
 *
 * Every operation resolves its inode to a node (inode.c) and dispatches on
 * the node's kind. Who may see what is decided here, per request, from
 * the caller's uid (fuse_req_ctx), and the kernel checks modes as well
 * (default_permissions): a pid directory, a snapshot and a restore are
 * 0700 and owned by whoever they belong to.
 *
 * Entries whose meaning depends on the caller (pids, restores: each user
 * has their own restore/ names) are given an entry timeout of 0 so that
 * the kernel's shared dentry cache asks again for each path walk.
 * Snapshots never change and are cached for a minute.
 *
 * Open files: a snapshot file keeps its snapshot (a reference on the
 * cached view) and a store_file handle for its whole life, and reads go
 * straight to store_file_pread into a per-thread 1 MiB buffer.
 */
#include <inttypes.h>
#include <sys/statvfs.h>

#include "fs/fs-int.h"

#define TTL_STATIC 60.0

struct handle {
	enum node_kind kind;
	struct snapview *v;   /* SNAP_FILE */
	struct store_file *f; /* SNAP_FILE */
	struct rfile *rf;     /* RFILE */
	char *text;           /* STATUS, RSTATUS, directories: generated content */
	size_t len;
	struct handle *prev, *next; /* fs->handles, fs->lock */
};

static struct fs *fs_of(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

static uid_t caller_of(fuse_req_t req)
{
	return fuse_req_ctx(req)->uid;
}

static char *join(const char *dir, const char *name)
{
	char *p = NULL;
	if (asprintf(&p, "%s%s%s", dir, *dir ? "/" : "", name) < 0)
		return NULL;
	return p;
}

static bool parse_id(const char *s, uint64_t max, uint64_t *ret)
{
	if (!*s || (s[0] == '0') || strlen(s) > 10)
		return false;
	return parse_u64(s, ret) >= 0 && *ret > 0 && *ret <= max;
}

/* Every open handle is on fs->handles: the kernel sends no release for
 * the files still open when the daemon ends (SIGTERM, or an unmount
 * that does not wait for them), so fs_handles_free() frees what is left. */
static struct handle *handle_new(struct fs *fs)
{
	struct handle *h = calloc(1, sizeof(*h));

	if (!h)
		return NULL;
	pthread_mutex_lock(&fs->lock);
	h->next = fs->handles;
	if (h->next)
		h->next->prev = h;
	fs->handles = h;
	pthread_mutex_unlock(&fs->lock);
	return h;
}

static void handle_free(struct fs *fs, struct handle *h)
{
	if (!h)
		return;
	pthread_mutex_lock(&fs->lock);
	if (h->prev)
		h->prev->next = h->next;
	else
		fs->handles = h->next;
	if (h->next)
		h->next->prev = h->prev;
	pthread_mutex_unlock(&fs->lock);
	store_file_close(h->f);
	snapview_put(fs, h->v);
	free(h->text);
	free(h);
}

void fs_handles_free(struct fs *fs)
{
	/* a file being copied in keeps its part of the restore, which
	 * restore_free_all() frees with it */
	while (fs->handles)
		handle_free(fs, fs->handles);
}

/* ---- pid visibility ---------------------------------------------------------- */

struct first_snap {
	bool found;
};

static int found_cb(pid_t pid, uint32_t n, const struct store_snap_info *info, void *ud)
{
	((struct first_snap *)ud)->found = true;
	return 1;
}

/* True when caller sees /<pid>/: a process it may checkpoint, or a pid with
 * snapshots of its own. *owner: the uid the directory belongs to. */
static bool pid_visible(struct fs *fs, uid_t caller, pid_t pid, uid_t *owner)
{
	struct first_snap c = { false };
	uid_t o = 0;

	if (access_pid(fs, caller, pid, &o)) {
		*owner = o;
		return true;
	}
	snap_foreach(fs, pid, caller, found_cb, &c);
	if (c.found) {
		/* Owned by the caller when they may see its snapshots. */
		*owner = caller == 0 ? 0 : caller;
		return true;
	}
	return false;
}

/* ---- attributes ---------------------------------------------------------------- */

static void attr_base(struct fs *fs, struct stat *st, fuse_ino_t ino)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = ino;
	st->st_nlink = 1;
	st->st_uid = fs->uid;
	st->st_gid = fs->gid;
	st->st_blksize = FS_IO_SIZE;
	st->st_atime = st->st_mtime = st->st_ctime = fs->started;
}

static void attr_dir(struct stat *st, mode_t mode)
{
	st->st_mode = S_IFDIR | mode;
	st->st_nlink = 2;
}

static void attr_file(struct stat *st, mode_t mode, uint64_t size, uint64_t allocated)
{
	st->st_mode = S_IFREG | mode;
	st->st_size = (off_t)size;
	/* cp decides from st_blocks whether to look for holes: it must be
	 * the truth, data bytes only. */
	st->st_blocks = (blkcnt_t)((allocated + 511) / 512);
}

/* Fills the attributes of node n as caller sees it; -ENOENT when it is
 * gone or not theirs. *ttl: how long the kernel may keep them. */
static int node_attr(struct fs *fs, struct node *n, uid_t caller, struct stat *st, double *ttl)
{
	struct snapview *v = NULL;
	const struct snap_file *sf = NULL;
	uid_t owner = 0;
	uint64_t size = 0;
	int r;

	attr_base(fs, st, n->ino);
	*ttl = 0;
	switch (n->kind) {
	case NODE_ROOT:
		attr_dir(st, 0755);
		return 0;
	case NODE_README:
		attr_file(st, 0444, fs_readme_len(), fs_readme_len());
		*ttl = TTL_STATIC;
		return 0;
	case NODE_RESTORE:
		/* Everybody makes their own restores here, like /tmp. */
		attr_dir(st, 01777);
		return 0;
	case NODE_PID:
	case NODE_CTL:
	case NODE_STATUS:
		if (!pid_visible(fs, caller, n->pid, &owner))
			return -ENOENT;
		st->st_uid = owner;
		if (n->kind == NODE_PID)
			attr_dir(st, 0700);
		else
			/* ctl and status are generated: size 0, read with
			 * direct I/O until EOF. */
			attr_file(st, n->kind == NODE_CTL ? 0600 : 0444, 0, 0);
		return 0;
	case NODE_SNAP:
	case NODE_SNAP_FILE:
		r = snapview_get(fs, n->pid, n->n, &v);
		if (r < 0)
			return r;
		if (!access_owner(caller, v->owner)) {
			snapview_put(fs, v);
			return -ENOENT;
		}
		st->st_uid = v->owner;
		st->st_gid = v->owner == fs->uid ? fs->gid : (gid_t)v->owner;
		r = snapview_lookup(v, n->path, &sf);
		if (r == 1 && n->kind == NODE_SNAP_FILE)
			attr_file(st, 0600, sf->st.size, sf->st.allocated);
		else if (r == 2 && n->kind == NODE_SNAP)
			attr_dir(st, 0700);
		else
			r = r < 0 ? r : -ENOENT;
		snapview_put(fs, v);
		*ttl = TTL_STATIC;
		return r < 0 ? r : 0;
	case NODE_RDIR:
	case NODE_RFILE:
	case NODE_RSTATUS:
	case NODE_RCTL:
		if (!access_owner(caller, n->uid))
			return -ENOENT;
		st->st_uid = n->uid;
		st->st_gid = n->uid == fs->uid ? fs->gid : (gid_t)n->uid;
		if (n->kind == NODE_RSTATUS || n->kind == NODE_RCTL) {
			if (!restore_exists(fs, n->uid, n->name))
				return -ENOENT;
			attr_file(st, n->kind == NODE_RCTL ? 0600 : 0444, 0, 0);
			return 0;
		}
		r = restore_lookup(fs, n->uid, n->name, n->path, &size);
		if (r == 1 && n->kind == NODE_RFILE)
			attr_file(st, 0600, size, size);
		else if (r == 2 && n->kind == NODE_RDIR)
			attr_dir(st, 0700);
		else
			return -ENOENT;
		return 0;
	default:
		return -ENOENT;
	}
}

/* The opening lines of most handlers: the node of ino and, when st is
 * given, its attributes as the caller sees them. NULL once the error has
 * been replied (ENOENT for an inode we do not know or that is not the
 * caller's to see). */
static struct node *req_node(fuse_req_t req, fuse_ino_t ino, struct stat *st, double *ttl)
{
	struct fs *fs = fs_of(req);
	struct node *n = node_find(fs, ino);
	int r;

	if (!n) {
		fuse_reply_err(req, ENOENT);
		return NULL;
	}
	if (st) {
		r = node_attr(fs, n, caller_of(req), st, ttl);
		if (r < 0) {
			fuse_reply_err(req, -r);
			return NULL;
		}
	}
	return n;
}

static void reply_entry_node(fuse_req_t req, struct fs *fs, const struct node_id *id)
{
	struct fuse_entry_param e;
	struct node *n;
	double ttl;
	int r;

	memset(&e, 0, sizeof(e));
	r = node_get(fs, id, &n);
	if (r < 0) {
		fuse_reply_err(req, -r);
		return;
	}
	r = node_attr(fs, n, caller_of(req), &e.attr, &ttl);
	if (r < 0) {
		node_forget(fs, n->ino, 1);
		fuse_reply_err(req, -r);
		return;
	}
	e.ino = n->ino;
	e.generation = 1;
	e.attr_timeout = ttl;
	e.entry_timeout = ttl;
	if (fuse_reply_entry(req, &e) != 0)
		node_forget(fs, n->ino, 1);
}

/* ---- lookup --------------------------------------------------------------------- */

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fs *fs = fs_of(req);
	struct node *p = req_node(req, parent, NULL, NULL);
	uid_t caller = caller_of(req);
	struct node_id id = { 0 };
	_cleanup_free_ char *path = NULL;
	uint64_t v;

	if (!p)
		return;
	switch (p->kind) {
	case NODE_ROOT:
		if (!strcmp(name, "README"))
			id.kind = NODE_README;
		else if (!strcmp(name, "restore"))
			id.kind = NODE_RESTORE;
		else if (parse_id(name, INT32_MAX, &v)) {
			id.kind = NODE_PID;
			id.pid = (pid_t)v;
		} else
			goto noent;
		break;
	case NODE_PID:
		id.pid = p->pid;
		if (!strcmp(name, "ctl"))
			id.kind = NODE_CTL;
		else if (!strcmp(name, "status"))
			id.kind = NODE_STATUS;
		else if (parse_id(name, UINT32_MAX, &v)) {
			id.kind = NODE_SNAP;
			id.n = (uint32_t)v;
			id.path = "";
		} else
			goto noent;
		break;
	case NODE_SNAP: {
		struct snapview *sv;
		int r;

		path = join(p->path, name);
		if (!path) {
			fuse_reply_err(req, ENOMEM);
			return;
		}
		r = snapview_get(fs, p->pid, p->n, &sv);
		if (r < 0) {
			fuse_reply_err(req, -r);
			return;
		}
		r = snapview_lookup(sv, path, NULL);
		snapview_put(fs, sv);
		if (r <= 0)
			goto noent;
		id.kind = r == 1 ? NODE_SNAP_FILE : NODE_SNAP;
		id.pid = p->pid;
		id.n = p->n;
		id.path = path;
		break;
	}
	case NODE_RESTORE:
		if (!restore_exists(fs, caller, name))
			goto noent;
		id.kind = NODE_RDIR;
		id.uid = caller;
		id.name = name;
		id.path = "";
		break;
	case NODE_RDIR: {
		uint64_t size;
		int r;

		id.uid = p->uid;
		id.name = p->name;
		if (!*p->path && !strcmp(name, "status")) {
			id.kind = NODE_RSTATUS;
			break;
		}
		if (!*p->path && !strcmp(name, "ctl")) {
			id.kind = NODE_RCTL;
			break;
		}
		path = join(p->path, name);
		if (!path) {
			fuse_reply_err(req, ENOMEM);
			return;
		}
		r = restore_lookup(fs, p->uid, p->name, path, &size);
		if (r <= 0)
			goto noent;
		id.kind = r == 1 ? NODE_RFILE : NODE_RDIR;
		id.path = path;
		break;
	}
	default:
		fuse_reply_err(req, ENOTDIR);
		return;
	}
	reply_entry_node(req, fs, &id);
	return;

noent: {
	/* A negative entry the kernel may not keep: names come and go. */
	struct fuse_entry_param e;
	memset(&e, 0, sizeof(e));
	fuse_reply_entry(req, &e);
}
}

static void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	node_forget(fs_of(req), ino, nlookup);
	fuse_reply_none(req);
}

static void op_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
	for (size_t i = 0; i < count; i++)
		node_forget(fs_of(req), forgets[i].ino, forgets[i].nlookup);
	fuse_reply_none(req);
}

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct stat st;
	double ttl;

	if (req_node(req, ino, &st, &ttl))
		fuse_reply_attr(req, &st, ttl);
}

static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
		       struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	struct node *n = req_node(req, ino, NULL, NULL);
	int r = 0;

	if (!n)
		return;
	if (to_set & FUSE_SET_ATTR_SIZE) {
		switch (n->kind) {
		case NODE_CTL:
		case NODE_STATUS:
		case NODE_RCTL:
			/* `echo ... > ctl` opens with O_TRUNC: nothing to do. */
			break;
		case NODE_RFILE:
			if (fi && fi->fh)
				r = restore_truncate(((struct handle *)(uintptr_t)fi->fh)->rf, (uint64_t)attr->st_size);
			else
				r = restore_truncate_path(fs, n->uid, n->name, n->path, (uint64_t)attr->st_size);
			break;
		default:
			r = -EROFS;
			break;
		}
	}
	/* Modes, owners and times are fixed; cp -p and touch are told the
	 * truth by the attributes that come back, not by an error. */
	if (r < 0) {
		fuse_reply_err(req, -r);
		return;
	}
	op_getattr(req, ino, fi);
}

/* ---- directories ----------------------------------------------------------------- */

struct dirbuf {
	fuse_req_t req;
	char *buf;
	size_t len, cap;
	int err;
};

static void dir_add(struct dirbuf *b, const char *name, fuse_ino_t ino, mode_t mode)
{
	struct stat st = { .st_ino = ino, .st_mode = mode };
	size_t need = fuse_add_direntry(b->req, NULL, 0, name, NULL, 0);

	if (b->err)
		return;
	if (b->len + need > b->cap) {
		size_t cap = MAX(b->cap * 2, b->len + need + 4096);
		char *p = realloc(b->buf, cap);
		if (!p) {
			b->err = -ENOMEM;
			return;
		}
		b->buf = p;
		b->cap = cap;
	}
	fuse_add_direntry(b->req, b->buf + b->len, need, name, &st, (off_t)(b->len + need));
	b->len += need;
}

struct pidlist {
	pid_t *v;
	size_t n, cap;
};

static int pid_add(pid_t pid, void *ud)
{
	struct pidlist *l = ud;
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 256;
		pid_t *v = realloc(l->v, cap * sizeof(*v));
		if (!v)
			return -ENOMEM;
		l->v = v;
		l->cap = cap;
	}
	l->v[l->n++] = pid;
	return 0;
}

static int pid_add_snap(pid_t pid, uint32_t n, const struct store_snap_info *info, void *ud)
{
	return pid_add(pid, ud);
}

static int cmp_pid(const void *a, const void *b)
{
	pid_t x = *(const pid_t *)a, y = *(const pid_t *)b;
	return (x > y) - (x < y);
}

struct snapdir_ctx {
	struct dirbuf *b;
	const struct node *n;
};

static int snapdir_add(const char *child, const struct snap_file *f, void *ud)
{
	struct snapdir_ctx *c = ud;
	_cleanup_free_ char *path = join(c->n->path, child);
	struct node_id id = {
		.kind = f ? NODE_SNAP_FILE : NODE_SNAP, .pid = c->n->pid, .n = c->n->n, .path = path,
	};

	if (!path)
		return -ENOMEM;
	dir_add(c->b, child, node_ino_of(&id), f ? S_IFREG : S_IFDIR);
	return 0;
}

static int snaplist_add(pid_t pid, uint32_t n, const struct store_snap_info *info, void *ud)
{
	struct dirbuf *b = ud;
	char name[16];
	struct node_id id = { .kind = NODE_SNAP, .pid = pid, .n = n, .path = "" };

	snprintf(name, sizeof(name), "%" PRIu32, n);
	dir_add(b, name, node_ino_of(&id), S_IFDIR);
	return 0;
}

struct rdir_ctx {
	struct dirbuf *b;
	const struct node *n;
	uid_t uid;
};

static int restore_add(const char *name, void *ud)
{
	struct rdir_ctx *c = ud;
	struct node_id id = { .kind = NODE_RDIR, .uid = c->uid, .name = name, .path = "" };
	dir_add(c->b, name, node_ino_of(&id), S_IFDIR);
	return 0;
}

static int rchild_add(const char *child, bool is_dir, uint64_t size, void *ud)
{
	struct rdir_ctx *c = ud;
	_cleanup_free_ char *path = join(c->n->path, child);
	struct node_id id = {
		.kind = is_dir ? NODE_RDIR : NODE_RFILE, .uid = c->n->uid, .name = c->n->name, .path = path,
	};

	if (!path)
		return -ENOMEM;
	dir_add(c->b, child, node_ino_of(&id), is_dir ? S_IFDIR : S_IFREG);
	return 0;
}

/* Builds the whole listing at opendir; readdir serves slices of it, so a
 * listing is consistent however many calls it takes. */
static void op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	uid_t caller = caller_of(req);
	struct dirbuf b = { .req = req };
	struct handle *h;
	struct stat st;
	double ttl;
	struct node *n = req_node(req, ino, &st, &ttl);
	int r = 0;

	if (!n)
		return;
	if (!S_ISDIR(st.st_mode)) {
		fuse_reply_err(req, ENOTDIR);
		return;
	}
	dir_add(&b, ".", n->ino, S_IFDIR);
	dir_add(&b, "..", FUSE_ROOT_ID, S_IFDIR);

	switch (n->kind) {
	case NODE_ROOT: {
		struct pidlist l = { 0 };
		struct node_id readme = { .kind = NODE_README }, restore = { .kind = NODE_RESTORE };

		dir_add(&b, "README", node_ino_of(&readme), S_IFREG);
		dir_add(&b, "restore", node_ino_of(&restore), S_IFDIR);
		r = access_foreach_pid(fs, caller, pid_add, &l);
		if (r >= 0)
			r = snap_foreach(fs, 0, caller, pid_add_snap, &l);
		qsort(l.v, l.n, sizeof(*l.v), cmp_pid);
		for (size_t i = 0; r >= 0 && i < l.n; i++) {
			char name[16];
			struct node_id id = { .kind = NODE_PID, .pid = l.v[i] };
			if (i && l.v[i] == l.v[i - 1])
				continue;
			snprintf(name, sizeof(name), "%d", l.v[i]);
			dir_add(&b, name, node_ino_of(&id), S_IFDIR);
		}
		free(l.v);
		break;
	}
	case NODE_PID: {
		struct node_id ctl = { .kind = NODE_CTL, .pid = n->pid }, status = { .kind = NODE_STATUS, .pid = n->pid };
		dir_add(&b, "ctl", node_ino_of(&ctl), S_IFREG);
		dir_add(&b, "status", node_ino_of(&status), S_IFREG);
		r = snap_foreach(fs, n->pid, caller, snaplist_add, &b);
		break;
	}
	case NODE_SNAP: {
		struct snapview *v;
		struct snapdir_ctx c = { &b, n };

		r = snapview_get(fs, n->pid, n->n, &v);
		if (r >= 0) {
			r = snapview_list(v, n->path, snapdir_add, &c);
			snapview_put(fs, v);
		}
		break;
	}
	case NODE_RESTORE: {
		struct rdir_ctx c = { &b, n, caller };
		r = restore_foreach(fs, caller, restore_add, &c);
		break;
	}
	case NODE_RDIR: {
		struct rdir_ctx c = { &b, n, n->uid };
		if (!*n->path) {
			struct node_id id = { .kind = NODE_RSTATUS, .uid = n->uid, .name = n->name, .path = "" };
			dir_add(&b, "status", node_ino_of(&id), S_IFREG);
			id.kind = NODE_RCTL;
			dir_add(&b, "ctl", node_ino_of(&id), S_IFREG);
		}
		r = restore_list(fs, n->uid, n->name, n->path, rchild_add, &c);
		break;
	}
	default:
		r = -ENOTDIR;
		break;
	}
	if (r >= 0 && b.err)
		r = b.err;
	if (r < 0) {
		free(b.buf);
		fuse_reply_err(req, -r);
		return;
	}
	h = handle_new(fs);
	if (!h) {
		free(b.buf);
		fuse_reply_err(req, ENOMEM);
		return;
	}
	h->kind = n->kind;
	h->text = b.buf;
	h->len = b.len;
	fi->fh = (uintptr_t)h;
	if (fuse_reply_open(req, fi) != 0)
		handle_free(fs, h);
}

/* One read buffer per FUSE thread, allocated at its first read and freed
 * when the loop retires the thread. */
static pthread_key_t io_key;
static pthread_once_t io_once = PTHREAD_ONCE_INIT;

static void io_key_make(void)
{
	if (pthread_key_create(&io_key, free) != 0)
		abort();
}

static char *io_buf_get(void)
{
	char *b;

	pthread_once(&io_once, io_key_make);
	b = pthread_getspecific(io_key);
	if (!b && (b = malloc(FS_IO_SIZE)) && pthread_setspecific(io_key, b) != 0) {
		free(b);
		b = NULL;
	}
	return b;
}

/* Replies with bytes a handle owns. They are copied to this thread's
 * buffer first: once the kernel has the reply, the caller may close and a
 * release on another thread free the handle, while a sanitizer's writev
 * interceptor still looks at what was sent. */
static void reply_copy(fuse_req_t req, const char *p, size_t n)
{
	char *buf = io_buf_get();

	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	n = MIN(n, FS_IO_SIZE);
	memcpy(buf, p, n);
	fuse_reply_buf(req, buf, n);
}

static void reply_slice(fuse_req_t req, struct handle *h, size_t size, off_t off)
{
	if ((size_t)off >= h->len)
		fuse_reply_buf(req, NULL, 0);
	else
		reply_copy(req, h->text + off, MIN(size, h->len - (size_t)off));
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
	struct handle *h = (struct handle *)(uintptr_t)fi->fh;
	size_t end;

	/* Entries must not be split: find the last whole one within size.
	 * Each entry's offset field is the end of it, so walk them. */
	if ((size_t)off >= h->len) {
		fuse_reply_buf(req, NULL, 0);
		return;
	}
	end = (size_t)off;
	while (end < h->len) {
		const struct {
			uint64_t ino;
			uint64_t off;
			uint32_t namelen;
			uint32_t type;
		} *d = (const void *)(h->text + end);
		size_t next = (size_t)d->off;
		if (next - (size_t)off > size)
			break;
		end = next;
	}
	reply_copy(req, h->text + off, end - (size_t)off);
}

static void op_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	handle_free(fs_of(req), (struct handle *)(uintptr_t)fi->fh);
	fuse_reply_err(req, 0);
}

/* ---- files --------------------------------------------------------------------- */

static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	int acc = fi->flags & O_ACCMODE;
	struct handle *h;
	struct stat st;
	double ttl;
	struct node *n = req_node(req, ino, &st, &ttl);
	int r = 0;

	if (!n)
		return;
	h = handle_new(fs);
	if (!h) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	h->kind = n->kind;
	switch (n->kind) {
	case NODE_README:
		if (acc != O_RDONLY)
			r = -EACCES;
		fi->keep_cache = 1;
		break;
	case NODE_CTL:
	case NODE_RCTL:
		if (acc == O_RDONLY)
			r = -EACCES;
		fi->direct_io = 1;
		fi->nonseekable = 1;
		break;
	case NODE_STATUS:
	case NODE_RSTATUS:
		if (acc != O_RDONLY) {
			r = -EACCES;
			break;
		}
		/* A snapshot of the state at open: one consistent text per
		 * reader, read with direct I/O (size 0 in stat). */
		r = n->kind == NODE_STATUS ? ctl_status(fs, n->pid, &h->text, &h->len)
					   : restore_status(fs, n->uid, n->name, &h->text, &h->len);
		fi->direct_io = 1;
		break;
	case NODE_SNAP_FILE:
		if (acc != O_RDONLY) {
			r = -EROFS;
			break;
		}
		r = snapview_get(fs, n->pid, n->n, &h->v);
		if (r >= 0)
			r = store_file_open(h->v->snap, n->path, &h->f);
		if (r < 0)
			log_warn_errno(r, "snapshot %d/%" PRIu32 ": cannot open '%s': %s", n->pid, n->n, n->path,
				       err_msg());
		/* Snapshots never change: the page cache stays valid. */
		fi->keep_cache = 1;
		break;
	case NODE_RFILE:
		/* Files copied in are written once, through the handle that
		 * created them. */
		r = acc == O_RDONLY ? -EACCES : -EROFS;
		break;
	default:
		r = -EISDIR;
		break;
	}
	if (r < 0) {
		handle_free(fs, h);
		fuse_reply_err(req, -r);
		return;
	}
	fi->fh = (uintptr_t)h;
	if (fuse_reply_open(req, fi) != 0)
		handle_free(fs, h);
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
	struct handle *h = (struct handle *)(uintptr_t)fi->fh;
	char *buf;
	ssize_t n;

	switch (h->kind) {
	case NODE_README:
		if ((size_t)off >= fs_readme_len())
			fuse_reply_buf(req, NULL, 0);
		else
			fuse_reply_buf(req, fs_readme + off, MIN(size, fs_readme_len() - (size_t)off));
		return;
	case NODE_STATUS:
	case NODE_RSTATUS:
		reply_slice(req, h, size, off);
		return;
	case NODE_SNAP_FILE:
		buf = io_buf_get();
		if (!buf) {
			fuse_reply_err(req, ENOMEM);
			return;
		}
		n = store_file_pread(h->f, buf, MIN(size, FS_IO_SIZE), (uint64_t)off);
		if (n < 0) {
			log_err_errno((int)n, "snapshot file read at %jd: %s", (intmax_t)off, err_msg());
			fuse_reply_err(req, (int)-n);
		} else {
			fuse_reply_buf(req, buf, (size_t)n);
		}
		return;
	default:
		fuse_reply_err(req, EBADF);
		return;
	}
}

/* SEEK_HOLE as the mount shows it: the next hole of at least FS_MIN_HOLE
 * bytes, or one that runs to the end of the file. cp asks where the next
 * hole and the next data are at every hole it meets, a round trip to the
 * daemon each, and memory is full of single zero pages: in the benchmark's
 * 1 GiB those lseeks cost the copy more than its reads. A short run of
 * zeros is cheaper to copy; large holes (memory never touched) stay holes.
 * POSIX allows it: a filesystem may report any zeros as data. st_blocks
 * still counts only the pages that are not holes in the store. */
static int64_t shown_hole(struct store_file *f, uint64_t off)
{
	for (;;) {
		int64_t h = store_file_seek(f, off, SEEK_HOLE);
		if (h < 0)
			return h;
		int64_t d = store_file_seek(f, (uint64_t)h, SEEK_DATA);
		if (d == -ENXIO)
			return h; /* the hole runs to the end */
		if (d < 0)
			return d;
		if ((uint64_t)(d - h) >= FS_MIN_HOLE)
			return h;
		off = (uint64_t)d;
	}
}

static void op_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence, struct fuse_file_info *fi)
{
	struct handle *h = (struct handle *)(uintptr_t)fi->fh;
	int64_t r;

	if (h->kind != NODE_SNAP_FILE || (whence != SEEK_DATA && whence != SEEK_HOLE)) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	if (off < 0) {
		fuse_reply_err(req, ENXIO);
		return;
	}
	r = whence == SEEK_HOLE ? shown_hole(h->f, (uint64_t)off) : store_file_seek(h->f, (uint64_t)off, whence);
	if (r < 0)
		fuse_reply_err(req, (int)-r);
	else
		fuse_reply_lseek(req, (off_t)r);
}

/* A checkpoint takes seconds, and one thread serves the whole mount
 * (main.c): a ctl write is answered from a thread of its own once the
 * snapshot is durable or has failed, while the mount goes on serving
 * (status, the snapshot's files, other checkpoints). */
struct ctl_job {
	struct fs *fs;
	fuse_req_t req;
	pid_t pid;
	uid_t caller;
	size_t size;
	char line[];
};

static void *ctl_job_run(void *arg)
{
	struct ctl_job *j = arg;
	struct fs *fs = j->fs;
	int r;

	err_clear();
	r = ctl_command(fs, j->pid, j->caller, j->line, j->size);
	if (r < 0)
		fuse_reply_err(j->req, -r);
	else
		fuse_reply_write(j->req, j->size);
	free(j);
	ctl_job_end(fs);
	return NULL;
}

void ctl_job_end(struct fs *fs)
{
	pthread_mutex_lock(&fs->lock);
	fs->ctl_jobs--;
	pthread_cond_broadcast(&fs->restore_done);
	pthread_mutex_unlock(&fs->lock);
}

void ctl_jobs_wait(struct fs *fs)
{
	pthread_mutex_lock(&fs->lock);
	while (fs->ctl_jobs)
		pthread_cond_wait(&fs->restore_done, &fs->lock);
	pthread_mutex_unlock(&fs->lock);
}

int ctl_job_spawn(struct fs *fs, void *(*fn)(void *), void *arg)
{
	pthread_attr_t a;
	pthread_t t;
	int r;

	pthread_mutex_lock(&fs->lock);
	fs->ctl_jobs++;
	pthread_mutex_unlock(&fs->lock);
	r = -pthread_attr_init(&a);
	if (r == 0) {
		pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
		r = -pthread_create(&t, &a, fn, arg);
		pthread_attr_destroy(&a);
	}
	if (r < 0)
		ctl_job_end(fs);
	return r;
}

static int ctl_job_start(struct fs *fs, fuse_req_t req, pid_t pid, const char *buf, size_t size)
{
	struct ctl_job *j = malloc(sizeof(*j) + size + 1);
	int r;

	if (!j)
		return -ENOMEM;
	*j = (struct ctl_job){ .fs = fs, .req = req, .pid = pid, .caller = caller_of(req), .size = size };
	memcpy(j->line, buf, size);
	j->line[size] = 0;
	r = ctl_job_spawn(fs, ctl_job_run, j);
	if (r < 0)
		free(j);
	return r;
}

static void op_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
		     struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	struct handle *h = (struct handle *)(uintptr_t)fi->fh;
	struct node *n = req_node(req, ino, NULL, NULL);
	int r;

	if (!n)
		return;
	switch (h->kind) {
	case NODE_CTL:
		r = ctl_job_start(fs, req, n->pid, buf, size);
		if (r == 0)
			return; /* answered by the job */
		break;
	case NODE_RCTL:
		/* Sets options or starts a retry; status tells how it ends. */
		r = restore_ctl(fs, n->uid, n->name, buf, size);
		break;
	case NODE_RFILE: {
		/* Answered first, ingested after from the request's buffer
		 * (ours until we return): the writer reads its next piece
		 * meanwhile. Its release is a request too, read only after
		 * this one is done, so the rfile stays (restore.c). */
		struct rfile *rf = h->rf;

		r = restore_write_begin(rf, size, (uint64_t)off);
		if (r < 0)
			break;
		err_clear();
		if (fuse_reply_write(req, size) != 0)
			buf = NULL;
		restore_write_end(rf, buf, size, (uint64_t)off);
		return;
	}
	default:
		r = -EBADF;
		break;
	}
	if (r < 0)
		fuse_reply_err(req, -r);
	else
		fuse_reply_write(req, size);
}

/* A copy inside the mount (cp -r /ckpt/PID/N /ckpt/restore/X): the bytes go
 * from the snapshot's reader straight into the restore's writer, data
 * extents only, without travelling through the kernel twice. The store
 * still reads and re-hashes them (dedup makes the write cost no space);
 * referencing the source's chunks without reading them would need a store
 * call that does not exist yet. */
static void op_copy_file_range(fuse_req_t req, fuse_ino_t ino_in, off_t off_in, struct fuse_file_info *fi_in,
			       fuse_ino_t ino_out, off_t off_out, struct fuse_file_info *fi_out, size_t len,
			       int flags)
{
	struct handle *in = (struct handle *)(uintptr_t)fi_in->fh;
	struct handle *out = (struct handle *)(uintptr_t)fi_out->fh;
	struct store_stat st;
	uint64_t pos, end, done = 0;
	char *buf;
	int r = 0;

	if (flags || !in || !out || in->kind != NODE_SNAP_FILE || out->kind != NODE_RFILE || off_in < 0 ||
	    off_out < 0) {
		/* cp falls back to read and write. */
		fuse_reply_err(req, EXDEV);
		return;
	}
	buf = io_buf_get();
	if (!buf || store_file_stat(in->f, &st) < 0) {
		fuse_reply_err(req, buf ? EIO : ENOMEM);
		return;
	}
	pos = (uint64_t)off_in;
	if (pos >= st.size) {
		fuse_reply_write(req, 0);
		return;
	}
	end = MIN(st.size, pos + len);
	while (pos < end) {
		int64_t data = store_file_seek(in->f, pos, SEEK_DATA);
		int64_t hole;
		ssize_t n;

		if (data == -ENXIO || (data >= 0 && (uint64_t)data >= end))
			break; /* only a hole is left in the range */
		if (data < 0) {
			r = (int)data;
			break;
		}
		hole = store_file_seek(in->f, (uint64_t)data, SEEK_HOLE);
		if (hole < 0) {
			r = (int)hole;
			break;
		}
		uint64_t stop = MIN((uint64_t)hole, end);
		for (pos = (uint64_t)data; pos < stop; pos += (uint64_t)n) {
			n = store_file_pread(in->f, buf, (size_t)MIN(stop - pos, FS_IO_SIZE), pos);
			if (n <= 0) {
				r = n < 0 ? (int)n : -EIO;
				break;
			}
			r = restore_write(out->rf, buf, (size_t)n, (uint64_t)off_out + (pos - (uint64_t)off_in));
			if (r < 0)
				break;
		}
		if (r < 0)
			break;
	}
	if (r >= 0) {
		/* A hole at the end of the range still counts as copied: the
		 * destination grows to cover it. */
		done = end - (uint64_t)off_in;
		r = restore_extend(out->rf, (uint64_t)off_out + done);
	}
	if (r < 0)
		fuse_reply_err(req, -r);
	else
		fuse_reply_write(req, (size_t)done);
}

static void op_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct handle *h = (struct handle *)(uintptr_t)fi->fh;

	/* close() of a file copied in returns once its writes are ingested,
	 * with EIO when the restore failed meanwhile. */
	fuse_reply_err(req, h && h->rf ? -restore_flush(h->rf) : 0);
}

static void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	struct handle *h = (struct handle *)(uintptr_t)fi->fh;

	if (h && h->rf)
		restore_release(fs, h->rf);
	handle_free(fs, h);
	fuse_reply_err(req, 0);
}

static void op_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		      struct fuse_file_info *fi)
{
	struct fs *fs = fs_of(req);
	struct node *p = req_node(req, parent, NULL, NULL);
	_cleanup_free_ char *path = NULL;
	struct fuse_entry_param e;
	struct handle *h;
	struct node *n;
	struct node_id id;
	double ttl;
	int r;

	if (!p)
		return;
	if (p->kind != NODE_RDIR) {
		fuse_reply_err(req, p->kind == NODE_SNAP ? EROFS : EACCES);
		return;
	}
	if (!*p->path && (!strcmp(name, "status") || !strcmp(name, "ctl"))) {
		fuse_reply_err(req, EEXIST);
		return;
	}
	path = join(p->path, name);
	h = handle_new(fs);
	if (!path || !h) {
		handle_free(fs, h);
		fuse_reply_err(req, ENOMEM);
		return;
	}
	h->kind = NODE_RFILE;
	err_clear();
	r = restore_create(fs, p->uid, p->name, path, &h->rf);
	if (r < 0) {
		handle_free(fs, h);
		fuse_reply_err(req, -r);
		return;
	}
	id = (struct node_id){ .kind = NODE_RFILE, .uid = p->uid, .name = p->name, .path = path };
	memset(&e, 0, sizeof(e));
	r = node_get(fs, &id, &n);
	if (r >= 0)
		r = node_attr(fs, n, caller_of(req), &e.attr, &ttl);
	if (r < 0) {
		restore_release(fs, h->rf);
		handle_free(fs, h);
		fuse_reply_err(req, -r);
		return;
	}
	e.ino = n->ino;
	e.generation = 1;
	fi->fh = (uintptr_t)h;
	if (fuse_reply_create(req, &e, fi) != 0) {
		restore_release(fs, h->rf);
		handle_free(fs, h);
		node_forget(fs, n->ino, 1);
	}
}

static void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
	struct fs *fs = fs_of(req);
	struct node *p = req_node(req, parent, NULL, NULL);
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	_cleanup_free_ char *path = NULL;
	struct node_id id = { 0 };
	int r;

	if (!p)
		return;
	err_clear();
	switch (p->kind) {
	case NODE_RESTORE:
		r = restore_mkdir(fs, ctx->uid, ctx->gid, name);
		id = (struct node_id){ .kind = NODE_RDIR, .uid = ctx->uid, .name = name, .path = "" };
		break;
	case NODE_RDIR:
		if (!*p->path && (!strcmp(name, "status") || !strcmp(name, "ctl"))) {
			fuse_reply_err(req, EEXIST);
			return;
		}
		path = join(p->path, name);
		if (!path) {
			fuse_reply_err(req, ENOMEM);
			return;
		}
		r = restore_subdir(fs, p->uid, p->name, path);
		id = (struct node_id){ .kind = NODE_RDIR, .uid = p->uid, .name = p->name, .path = path };
		break;
	case NODE_SNAP:
		r = -EROFS;
		break;
	default:
		r = -EACCES;
		break;
	}
	if (r < 0) {
		fuse_reply_err(req, -r);
		return;
	}
	reply_entry_node(req, fs, &id);
}

static void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fs *fs = fs_of(req);
	struct node *p = req_node(req, parent, NULL, NULL);
	uid_t caller = caller_of(req);
	uint64_t v;
	int r;

	if (!p)
		return;
	err_clear();
	switch (p->kind) {
	case NODE_PID: {
		struct snapview *sv;
		if (!parse_id(name, UINT32_MAX, &v)) {
			r = -ENOENT;
			break;
		}
		r = snapview_get(fs, p->pid, (uint32_t)v, &sv);
		if (r < 0)
			break;
		if (!access_owner(caller, sv->owner))
			r = -ENOENT;
		snapview_put(fs, sv);
		if (r >= 0)
			r = snapview_delete(fs, p->pid, (uint32_t)v);
		if (r < 0)
			log_err_errno(r, "snapshot %d/%" PRIu64 ": cannot delete: %s", p->pid, v, err_msg());
		else
			log_info("snapshot %d/%" PRIu64 " deleted", p->pid, v);
		break;
	}
	case NODE_SNAP:
	case NODE_RDIR:
		/* Inside a snapshot or a restore, `rm -r` removes the
		 * directories below the one it deletes: accepted, the whole
		 * goes when the top directory is removed. */
		r = 0;
		break;
	case NODE_RESTORE:
		r = restore_rmdir(fs, caller, name);
		break;
	default:
		r = -EACCES;
		break;
	}
	fuse_reply_err(req, -r);
}

static void op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct node *p = req_node(req, parent, NULL, NULL);

	if (!p)
		return;
	/* See rmdir: files of a snapshot or restore go with their top
	 * directory; removing one alone changes nothing. */
	if (p->kind == NODE_SNAP || p->kind == NODE_RDIR)
		fuse_reply_err(req, 0);
	else
		fuse_reply_err(req, EACCES);
}

static void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct fs *fs = fs_of(req);
	struct statvfs sv;

	if (statvfs(fs->store_dir, &sv) < 0)
		memset(&sv, 0, sizeof(sv));
	sv.f_namemax = 255;
	fuse_reply_statfs(req, &sv);
}

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
	conn->max_write = FS_IO_SIZE;
	conn->max_readahead = FS_IO_SIZE;
	/* Nothing here needs the kernel to serialize lookups in a
	 * directory. */
	if (conn->capable & FUSE_CAP_PARALLEL_DIROPS)
		conn->want |= FUSE_CAP_PARALLEL_DIROPS;
	/* Writes must reach us as they are made: a ctl write is a command. */
	conn->want &= ~(unsigned)FUSE_CAP_WRITEBACK_CACHE;
}

const struct fuse_lowlevel_ops fs_ops = {
	.init = op_init,
	.lookup = op_lookup,
	.forget = op_forget,
	.forget_multi = op_forget_multi,
	.getattr = op_getattr,
	.setattr = op_setattr,
	.opendir = op_opendir,
	.readdir = op_readdir,
	.releasedir = op_releasedir,
	.open = op_open,
	.read = op_read,
	.lseek = op_lseek,
	.copy_file_range = op_copy_file_range,
	.write = op_write,
	.flush = op_flush,
	.release = op_release,
	.create = op_create,
	.mkdir = op_mkdir,
	.rmdir = op_rmdir,
	.unlink = op_unlink,
	.statfs = op_statfs,
};
