/*
 * The chunk store backend: snapshots as recipes of deduplicated,
 * zstd-compressed 16 KiB chunks in pack files, indexed in RocksDB
 * (docs/FORMAT.md, "The chunk store").
 *
 * Writing: a file is cut at fixed STORE_BLOCK_SIZE offsets. A block of
 * zero pages is a hole; any other block is hashed (its SHA-256 is its
 * chunk id and its leaf in the file hash), looked up (the snapshot's own
 * set of ids first, then RocksDB in batches), and only if nobody has it
 * compressed and appended to a pack, by the writing thread.
 *
 * Committing, in this order, because a snapshot must be durable or absent:
 *   1. every pack the snapshot wrote to is fsynced, then packs/ itself:
 *      the chunk bytes are on disk before anything points at them;
 *   2. under the commit lock, one RocksDB WriteBatch with the new chunks'
 *      locations, the recipes, the manifest, the snapshot record and a
 *      'p' key saying that its references are not counted yet, written
 *      with sync=true (WAL fdatasync). gc counts them (chunks_load).
 * A crash before 2 leaves only unreferenced bytes in packs (gc takes them
 * back); RocksDB applies a batch whole or not at all.
 *
 * Reading: a file's recipe is loaded piecewise as it is read; pread
 * decodes the chunks it needs, checking each record's checksum. A reader
 * that reads sequentially has the next units read and decoded ahead of
 * it by the store's threads (readahead.c), through the same direct read.
 */
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stddef.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>

#include "store/chunk-int.h"

/* Blocks hashed and looked up together: one MultiGet, one lock round. */
#define GROUP 64

/* ---- writer state ---------------------------------------------------------- */

struct went {
	uint64_t block;
	uint32_t seq;  /* write order: a later write of a block replaces it */
	uint8_t mask;  /* 0: the block became a hole */
	uint8_t id[STORE_HASH_LEN];
};

/* A file of a snapshot being written, as the snapshot keeps it. */
struct wmeta {
	char *path;
	bool closed;
	uint64_t size, allocated, stored;
	uint8_t hash[STORE_HASH_LEN];
	struct went *ents; /* after close: by block, no holes */
	size_t nents;
};

struct wsnap {
	struct store_snap base;
	char *name;
	bool in_gc_lock; /* counted in the store's writers */
	pthread_mutex_t lock;
	struct idset set;      /* lock: every chunk this snapshot uses */
	struct wmeta *files;   /* lock */
	size_t nfiles, afiles;
	uint32_t *packs;       /* lock: packs written to */
	size_t npacks, apacks;
	unsigned open_files;   /* lock */
	int error;             /* lock: first failure of a file */
	char *manifest;        /* import: the incoming manifest */
	size_t manifest_len;
	uint64_t commits_seen; /* the store's commit count at create */
};

struct partial {
	uint64_t block;
	uint32_t covered; /* bytes written (ranges are written once) */
	uint8_t *data;    /* STORE_BLOCK_SIZE, zero where not written */
	uint8_t *bits;    /* STORE_BLOCK_SIZE / 8: which bytes were written */
	bool reloaded;    /* from the store, all counted as written: more writes may come */
	bool kept;        /* ingested once, but its chunk could not be read back */
};

struct wfile {
	struct store_file base;
	struct wsnap *snap;
	size_t idx;          /* in snap->files */
	bool is_manifest;
	uint64_t end;        /* end of the last write */
	uint64_t size;
	bool size_set;
	struct leaf_set *leaves;
	struct went *ents;
	size_t nents, aents;
	uint32_t seq;
	struct partial *parts;
	size_t nparts, aparts;
	uint64_t *flushed;   /* sorted: blocks ingested while partly written */
	size_t nflushed, aflushed;
	struct pack_writer *pack;
	uint32_t last_pack;  /* recorded in snap->packs */
	bool have_last_pack;
	ZSTD_CCtx *cctx;
	uint8_t *zbuf;
	int error;
};

/* ---- reader state -------------------------------------------------------- */

struct rsnap {
	struct store_snap base;
	char *name;
	struct snaprec rec;
	char *manifest;
	size_t manifest_len;
	uint8_t manifest_hash[STORE_HASH_LEN];
};

struct rent {
	uint64_t block;
	struct chunk_loc loc;
	uint8_t id[STORE_HASH_LEN];
	bool missing;
};

/* Recipe segments a reader keeps decoded (each CHUNK_SEG_BLOCKS blocks,
 * 64 MiB of file): opening a file costs nothing, and reading a huge one
 * keeps a bounded window of it in memory. */
#define RSEG_SLOTS 16

struct rseg {
	bool valid;
	uint32_t seg;
	uint64_t used;      /* tick of the last use: the least recent is evicted */
	struct rent *ents;  /* by block */
	size_t n;
};

struct rfile {
	struct store_file base;
	struct rsnap *snap;
	int fileno;            /* -1: the manifest */
	const struct snaprec_file *meta;
	pthread_mutex_t lock;  /* everything below */
	struct rseg segs[RSEG_SLOTS];
	uint64_t tick;
	uint64_t cblock;       /* block held in cache, UINT64_MAX: none */
	uint8_t cache[STORE_BLOCK_SIZE];
	struct ra *ra;         /* read-ahead (readahead.c); NULL: none */
};

/* ---- the store ---------------------------------------------------------------- */

void cs_writer_enter(struct chunk_store *cs)
{
	pthread_mutex_lock(&cs->gc_mutex);
	while (cs->gc_exclusive)
		pthread_cond_wait(&cs->gc_cond, &cs->gc_mutex);
	cs->gc_writers++;
	pthread_mutex_unlock(&cs->gc_mutex);
}

void cs_writer_leave(struct chunk_store *cs)
{
	pthread_mutex_lock(&cs->gc_mutex);
	if (--cs->gc_writers == 0)
		pthread_cond_broadcast(&cs->gc_cond);
	pthread_mutex_unlock(&cs->gc_mutex);
}

void cs_exclusive_enter(struct chunk_store *cs)
{
	pthread_mutex_lock(&cs->gc_mutex);
	while (cs->gc_exclusive || cs->gc_writers)
		pthread_cond_wait(&cs->gc_cond, &cs->gc_mutex);
	cs->gc_exclusive = true;
	pthread_mutex_unlock(&cs->gc_mutex);
}

void cs_exclusive_leave(struct chunk_store *cs)
{
	pthread_mutex_lock(&cs->gc_mutex);
	cs->gc_exclusive = false;
	pthread_cond_broadcast(&cs->gc_cond);
	pthread_mutex_unlock(&cs->gc_mutex);
}

static int ptr_push(void ***v, size_t *n, size_t *a, void *p)
{
	if (*n == *a) {
		size_t na = *a ? *a * 2 : 4;
		void **nv = realloc(*v, na * sizeof(*nv));
		if (!nv)
			return -ENOMEM;
		*v = nv;
		*a = na;
	}
	(*v)[(*n)++] = p;
	return 0;
}

ZSTD_CCtx *cs_cctx_get(struct chunk_store *cs)
{
	ZSTD_CCtx *c = NULL;
	pthread_mutex_lock(&cs->pool_lock);
	if (cs->ncctx)
		c = cs->cctx[--cs->ncctx];
	pthread_mutex_unlock(&cs->pool_lock);
	return c ? c : ZSTD_createCCtx();
}

void cs_cctx_put(struct chunk_store *cs, ZSTD_CCtx *c)
{
	if (!c)
		return;
	pthread_mutex_lock(&cs->pool_lock);
	if (ptr_push((void ***)&cs->cctx, &cs->ncctx, &cs->acctx, c) < 0)
		ZSTD_freeCCtx(c);
	pthread_mutex_unlock(&cs->pool_lock);
}

ZSTD_DCtx *cs_dctx_get(struct chunk_store *cs)
{
	ZSTD_DCtx *d = NULL;
	pthread_mutex_lock(&cs->pool_lock);
	if (cs->ndctx)
		d = cs->dctx[--cs->ndctx];
	pthread_mutex_unlock(&cs->pool_lock);
	return d ? d : ZSTD_createDCtx();
}

void cs_dctx_put(struct chunk_store *cs, ZSTD_DCtx *d)
{
	if (!d)
		return;
	pthread_mutex_lock(&cs->pool_lock);
	if (ptr_push((void ***)&cs->dctx, &cs->ndctx, &cs->adctx, d) < 0)
		ZSTD_freeDCtx(d);
	pthread_mutex_unlock(&cs->pool_lock);
}

static void chunk_close(struct store *s)
{
	struct chunk_store *cs = to_cs(s);

	ra_pool_free(cs);
	hot_free(cs->hot);
	pack_pool_drain(cs);
	free(cs->pool);
	for (size_t i = 0; i < cs->ncctx; i++)
		ZSTD_freeCCtx(cs->cctx[i]);
	free(cs->cctx);
	for (size_t i = 0; i < cs->ndctx; i++)
		ZSTD_freeDCtx(cs->dctx[i]);
	free(cs->dctx);
	pack_fds_close(cs);
	index_close(cs->idx);
	if (cs->packs_fd >= 0)
		close(cs->packs_fd);
	if (cs->dir_fd >= 0)
		close(cs->dir_fd);
	if (cs->lock_fd >= 0)
		close(cs->lock_fd); /* drops the flock */
	pthread_mutex_destroy(&cs->gc_mutex);
	pthread_cond_destroy(&cs->gc_cond);
	pthread_mutex_destroy(&cs->commit_lock);
	pthread_mutex_destroy(&cs->pool_lock);
	pthread_mutex_destroy(&cs->fd_lock);
	free(cs->dir);
	free(cs);
}

/* Takes DIR/lock: flock for the life of the store, with our pid inside so
 * that the one who is refused can be told who holds it. */
static int take_lock(struct chunk_store *cs)
{
	char buf[32];
	int n;

	cs->lock_fd = openat(cs->dir_fd, "lock", O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (cs->lock_fd < 0)
		return err_set(negerrno(), "%s/lock: %m", cs->dir);
	if (flock(cs->lock_fd, LOCK_EX | LOCK_NB) < 0) {
		if (errno != EWOULDBLOCK)
			return err_set(negerrno(), "%s/lock: %m", cs->dir);
		n = (int)pread(cs->lock_fd, buf, sizeof(buf) - 1, 0);
		buf[n > 0 ? n : 0] = 0;
		buf[strcspn(buf, "\n")] = 0;
		return err_set(-EBUSY, "store %s is in use by pid %s", cs->dir, *buf ? buf : "?");
	}
	n = snprintf(buf, sizeof(buf), "%d\n", (int)getpid());
	if (ftruncate(cs->lock_fd, 0) < 0 || pwrite_full(cs->lock_fd, buf, (size_t)n, 0) < 0)
		log_debug("%s/lock: cannot record our pid", cs->dir);
	return 0;
}

int chunk_store_open(const char *dir, const struct store_options *o, struct store **ret)
{
	struct chunk_store *cs;
	char path[4096];
	void *v = NULL;
	size_t vl;
	uint32_t *ids = NULL;
	size_t nids = 0;
	int r;

	cs = calloc(1, sizeof(*cs));
	if (!cs)
		return -ENOMEM;
	cs->base.ops = &store_chunk_ops;
	cs->base.backend = STORE_BACKEND_CHUNK;
	cs->dir_fd = cs->packs_fd = cs->lock_fd = -1;
	cs->read_only = o && o->read_only;
	cs->zstd_level = o && o->zstd_level ? o->zstd_level : 1;
	pthread_mutex_init(&cs->gc_mutex, NULL);
	pthread_cond_init(&cs->gc_cond, NULL);
	pthread_mutex_init(&cs->commit_lock, NULL);
	pthread_mutex_init(&cs->pool_lock, NULL);
	pthread_mutex_init(&cs->fd_lock, NULL);
	cs->dir = strdup(dir);
	if (!cs->dir) {
		r = -ENOMEM;
		goto fail;
	}
	if (strlen(dir) > sizeof(path) - 32) {
		r = err_set(-ENAMETOOLONG, "%s: path too long", dir);
		goto fail;
	}
	if (!cs->read_only) {
		r = mkdir_p(dir, 0700);
		if (r < 0) {
			err_set(r, "%s: cannot create: %s", dir, strerror(-r));
			goto fail;
		}
	}
	cs->dir_fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (cs->dir_fd < 0) {
		r = err_set(negerrno(), "store %s: %m", dir);
		goto fail;
	}
	if (!cs->read_only) {
		r = take_lock(cs);
		if (r < 0)
			goto fail;
		if (mkdirat(cs->dir_fd, "packs", 0700) < 0 && errno != EEXIST) {
			r = err_set(negerrno(), "%s/packs: %m", dir);
			goto fail;
		}
	}
	cs->packs_fd = openat(cs->dir_fd, "packs", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (cs->packs_fd < 0) {
		r = err_set(negerrno(), "store %s: no packs/ directory: %m", dir);
		goto fail;
	}
	r = hot_new(&cs->hot);
	if (r < 0)
		goto fail;
	snprintf(path, sizeof(path), "%s/index", dir);
	r = index_open(path, cs->read_only, &cs->idx);
	if (r < 0)
		goto fail;

	r = index_get(cs->idx, "V", 1, &v, &vl);
	uint32_t ver = 0;
	if (r == 0) {
		if (vl == sizeof(ver))
			memcpy(&ver, v, sizeof(ver));
		free(v);
		if (ver != 1 && ver != CHUNK_INDEX_VERSION) {
			r = err_set(-EPROTONOSUPPORT, "store %s: format version %u, this build reads 1 and %u", dir,
				    ver, CHUNK_INDEX_VERSION);
			goto fail;
		}
	}
	if ((r == -ENOENT || (r == 0 && ver < CHUNK_INDEX_VERSION)) && !cs->read_only) {
		struct index_batch *b = index_batch_new();
		ver = CHUNK_INDEX_VERSION;
		if (!b) {
			r = -ENOMEM;
			goto fail;
		}
		index_batch_put(b, "V", 1, &ver, sizeof(ver));
		r = index_write(cs->idx, b, true);
		index_batch_free(b);
		if (r < 0)
			goto fail;
		if (fsync(cs->dir_fd) < 0) {
			r = err_set(negerrno(), "store %s: fsync: %m", dir);
			goto fail;
		}
	} else if (r < 0) {
		if (r == -ENOENT)
			r = err_set(-EBADMSG, "store %s: index has no format version", dir);
		goto fail;
	}
	r = index_get(cs->idx, "N", 1, &v, &vl);
	if (r == 0) {
		if (vl == sizeof(cs->next_snapid))
			memcpy(&cs->next_snapid, v, vl);
		free(v);
	} else if (r != -ENOENT) {
		goto fail;
	}
	if (!cs->next_snapid)
		cs->next_snapid = 1;
	/* Pack ids continue after the largest on disk, even one a crashed
	 * writer left behind unreferenced. */
	r = pack_list(cs, &ids, &nids);
	if (r < 0)
		goto fail;
	atomic_store(&cs->next_pack, nids ? ids[nids - 1] + 1 : 1);
	free(ids);
	log_debug("chunk store %s opened%s", dir, cs->read_only ? " read-only" : "");
	*ret = &cs->base;
	return 0;
fail:
	chunk_close(&cs->base);
	return r;
}

/* ---- snapshot records ------------------------------------------------------ */

struct buf {
	uint8_t *p;
	size_t len, cap;
	bool oom;
};

static void buf_add(struct buf *b, const void *d, size_t n)
{
	if (b->oom)
		return;
	if (b->len + n > b->cap) {
		size_t c = MAX(b->cap * 2, b->len + n + 256);
		uint8_t *np = realloc(b->p, c);
		if (!np) {
			b->oom = true;
			return;
		}
		b->p = np;
		b->cap = c;
	}
	memcpy(b->p + b->len, d, n);
	b->len += n;
}

#define BUF_ADD(b, v) buf_add((b), &(v), sizeof(v))

static int snaprec_format(const struct snaprec *r, struct buf *b)
{
	uint32_t ver = CHUNK_FORMAT_VERSION;

	BUF_ADD(b, ver);
	BUF_ADD(b, r->nfiles);
	BUF_ADD(b, r->snapid);
	BUF_ADD(b, r->created);
	BUF_ADD(b, r->size);
	BUF_ADD(b, r->allocated);
	BUF_ADD(b, r->stored);
	for (uint32_t i = 0; i < r->nfiles; i++) {
		const struct snaprec_file *f = &r->files[i];
		uint16_t pl = (uint16_t)strlen(f->path);
		BUF_ADD(b, pl);
		buf_add(b, f->path, pl);
		BUF_ADD(b, f->size);
		BUF_ADD(b, f->allocated);
		BUF_ADD(b, f->stored);
		buf_add(b, f->hash, STORE_HASH_LEN);
	}
	return b->oom ? -ENOMEM : 0;
}

struct rd {
	const uint8_t *p;
	size_t left;
	bool bad;
};

static void rd_get(struct rd *d, void *out, size_t n)
{
	if (d->bad || d->left < n) {
		d->bad = true;
		memset(out, 0, n);
		return;
	}
	memcpy(out, d->p, n);
	d->p += n;
	d->left -= n;
}

#define RD_GET(d, v) rd_get((d), &(v), sizeof(v))

void snaprec_clear(struct snaprec *r)
{
	for (uint32_t i = 0; r->files && i < r->nfiles; i++)
		free(r->files[i].path);
	free(r->files);
	memset(r, 0, sizeof(*r));
}

int snaprec_parse(const uint8_t *v, size_t len, struct snaprec *ret)
{
	struct rd d = { v, len, false };
	struct snaprec r = { 0 };
	uint32_t ver;

	RD_GET(&d, ver);
	RD_GET(&d, r.nfiles);
	RD_GET(&d, r.snapid);
	RD_GET(&d, r.created);
	RD_GET(&d, r.size);
	RD_GET(&d, r.allocated);
	RD_GET(&d, r.stored);
	if (d.bad || ver != CHUNK_FORMAT_VERSION || r.nfiles > len / 58)
		return -EBADMSG;
	r.files = calloc(r.nfiles ? r.nfiles : 1, sizeof(*r.files));
	if (!r.files)
		return -ENOMEM;
	for (uint32_t i = 0; i < r.nfiles; i++) {
		struct snaprec_file *f = &r.files[i];
		uint16_t pl;
		RD_GET(&d, pl);
		if (d.bad || pl == 0 || pl > d.left)
			goto bad;
		f->path = strndup((const char *)d.p, pl);
		if (!f->path) {
			snaprec_clear(&r);
			return -ENOMEM;
		}
		d.p += pl;
		d.left -= pl;
		RD_GET(&d, f->size);
		RD_GET(&d, f->allocated);
		RD_GET(&d, f->stored);
		rd_get(&d, f->hash, STORE_HASH_LEN);
		if (d.bad || strlen(f->path) != pl || path_check(f->path) < 0 ||
		    (i > 0 && strcmp(r.files[i - 1].path, f->path) >= 0))
			goto bad;
	}
	if (d.left)
		goto bad;
	*ret = r;
	return 0;
bad:
	snaprec_clear(&r);
	return -EBADMSG;
}

/* An index key of one type byte and a name (a snapshot's, a record's). */
static int name_key(char type, const char *name, uint8_t **ret, size_t *len)
{
	size_t n = strlen(name);
	uint8_t *k = malloc(n + 1);
	if (!k)
		return -ENOMEM;
	k[0] = (uint8_t)type;
	memcpy(k + 1, name, n);
	*ret = k;
	*len = n + 1;
	return 0;
}

static int snap_key(const char *name, uint8_t **ret, size_t *len)
{
	return name_key(KEY_SNAP, name, ret, len);
}

static int load_snaprec(struct chunk_store *cs, const char *name, struct snaprec *ret)
{
	_cleanup_free_ uint8_t *k = NULL;
	_cleanup_free_ void *v = NULL;
	size_t kl, vl;
	int r;

	r = snap_key(name, &k, &kl);
	if (r < 0)
		return r;
	r = index_get(cs->idx, k, kl, &v, &vl);
	if (r == -ENOENT)
		return err_set(-ENOENT, "snapshot '%s': no such snapshot", name);
	if (r < 0)
		return r;
	r = snaprec_parse(v, vl, ret);
	if (r == -EBADMSG)
		return err_set(r, "snapshot '%s': damaged snapshot record in the index", name);
	return r;
}

/* Walks the recipe keys under prefix (plen bytes of a recipe key). */
static int recipe_walk(struct index *x, const uint8_t *prefix, size_t plen,
		       int (*cb)(uint64_t block, const uint8_t id[STORE_HASH_LEN], void *ud), void *ud)
{
	struct index_iter *it;
	const uint8_t *k, *v;
	size_t kl, vl;
	int r;

	r = index_iter_new(x, prefix, plen, &it);
	if (r < 0)
		return r;
	while ((r = index_iter_next(it, &k, &kl, &v, &vl)) > 0) {
		if (kl != RECIPE_KEY_LEN || vl % RECIPE_ENT_LEN) {
			r = err_set(-EBADMSG, "snapshot %" PRIu64 " file %u: damaged recipe key", be64_get(k + 1),
				    kl >= 13 ? be32_get(k + 9) : 0);
			break;
		}
		uint64_t seg = be32_get(k + 13);
		for (size_t o = 0; o < vl; o += RECIPE_ENT_LEN) {
			uint16_t b;
			memcpy(&b, v + o, 2);
			r = cb(seg * CHUNK_SEG_BLOCKS + b, v + o + 2, ud);
			if (r)
				goto out;
		}
	}
out:
	index_iter_free(it);
	return r;
}

int recipe_foreach(struct index *x, uint64_t snapid, uint32_t file,
		   int (*cb)(uint64_t block, const uint8_t id[STORE_HASH_LEN], void *ud), void *ud)
{
	uint8_t prefix[RECIPE_KEY_LEN];
	recipe_key(prefix, snapid, file, 0);
	return recipe_walk(x, prefix, 13, cb, ud);
}

int recipe_foreach_snap(struct index *x, uint64_t snapid,
			int (*cb)(uint64_t block, const uint8_t id[STORE_HASH_LEN], void *ud), void *ud)
{
	uint8_t prefix[RECIPE_KEY_LEN];
	recipe_key(prefix, snapid, 0, 0);
	return recipe_walk(x, prefix, 9, cb, ud);
}

void pending_key(uint8_t key[9], uint64_t snapid)
{
	key[0] = KEY_PENDING;
	be64_put(key + 1, snapid);
}

/* ---- writing ------------------------------------------------------------------- */

static int chunk_snap_create(struct store *s, const char *name, unsigned flags, struct store_snap **ret)
{
	struct chunk_store *cs = to_cs(s);
	_cleanup_free_ uint8_t *k = NULL;
	void *v;
	size_t kl, vl;
	int r;

	if (cs->read_only)
		return err_set(-EROFS, "store %s is open read-only", cs->dir);
	r = snap_key(name, &k, &kl);
	if (r < 0)
		return r;
	r = index_get(cs->idx, k, kl, &v, &vl);
	if (r == 0) {
		free(v);
		return err_set(-EEXIST, "snapshot '%s' exists", name);
	}
	if (r != -ENOENT)
		return r;
	struct wsnap *w = calloc(1, sizeof(*w));
	if (!w)
		return -ENOMEM;
	w->name = strdup(name);
	if (!w->name) {
		free(w);
		return -ENOMEM;
	}
	pthread_mutex_init(&w->lock, NULL);
	w->commits_seen = atomic_load(&cs->commits);
	cs_writer_enter(cs);
	w->in_gc_lock = true;
	*ret = &w->base;
	return 0;
}

static int chunk_file_create(struct store_snap *sw, const char *path, struct store_file **ret)
{
	struct wsnap *w = (struct wsnap *)sw;
	struct wfile *f;
	int r = 0;

	pthread_mutex_lock(&w->lock);
	for (size_t i = 0; i < w->nfiles; i++)
		if (!strcmp(w->files[i].path, path)) {
			r = err_set(-EEXIST, "'%s' was created before in this snapshot", path);
			goto out;
		}
	if (w->nfiles == w->afiles) {
		size_t n = w->afiles ? w->afiles * 2 : 16;
		struct wmeta *nf = realloc(w->files, n * sizeof(*nf));
		if (!nf) {
			r = -ENOMEM;
			goto out;
		}
		w->files = nf;
		w->afiles = n;
	}
	f = calloc(1, sizeof(*f));
	if (!f) {
		r = -ENOMEM;
		goto out;
	}
	memset(&w->files[w->nfiles], 0, sizeof(w->files[0]));
	w->files[w->nfiles].path = strdup(path);
	if (!w->files[w->nfiles].path || leaf_set_new(&f->leaves) < 0) {
		free(w->files[w->nfiles].path);
		free(f);
		r = -ENOMEM;
		goto out;
	}
	f->snap = w;
	f->idx = w->nfiles++;
	f->is_manifest = !strcmp(path, STORE_MANIFEST);
	w->open_files++;
	*ret = &f->base;
out:
	pthread_mutex_unlock(&w->lock);
	return r;
}

static int fail_file(struct wfile *f, int r)
{
	if (!f->error)
		f->error = r;
	pthread_mutex_lock(&f->snap->lock);
	if (!f->snap->error)
		f->snap->error = r;
	pthread_mutex_unlock(&f->snap->lock);
	return r;
}

static int push_went(struct wfile *f, uint64_t block, unsigned mask, const uint8_t *id)
{
	if (f->nents == f->aents) {
		size_t n = f->aents ? f->aents * 2 : 256;
		struct went *ne = realloc(f->ents, n * sizeof(*ne));
		if (!ne)
			return -ENOMEM;
		f->ents = ne;
		f->aents = n;
	}
	struct went *e = &f->ents[f->nents++];
	e->block = block;
	e->seq = f->seq++;
	e->mask = (uint8_t)mask;
	if (id)
		memcpy(e->id, id, STORE_HASH_LEN);
	return 0;
}

static int note_pack(struct wfile *f, uint32_t id)
{
	struct wsnap *w = f->snap;
	int r = 0;

	if (f->have_last_pack && f->last_pack == id)
		return 0;
	pthread_mutex_lock(&w->lock);
	bool have = false;
	for (size_t i = 0; i < w->npacks; i++)
		have |= w->packs[i] == id;
	if (!have) {
		if (w->npacks == w->apacks) {
			size_t n = w->apacks ? w->apacks * 2 : 8;
			uint32_t *np = realloc(w->packs, n * sizeof(*np));
			if (!np) {
				r = -ENOMEM;
				goto out;
			}
			w->packs = np;
			w->apacks = n;
		}
		w->packs[w->npacks++] = id;
	}
	f->last_pack = id;
	f->have_last_pack = true;
out:
	pthread_mutex_unlock(&w->lock);
	return r;
}

/* Compresses and appends one new chunk; returns its location. */
static int write_chunk(struct wfile *f, const uint8_t *block, uint32_t len, unsigned mask,
		       const uint8_t id[STORE_HASH_LEN], struct chunk_loc *loc)
{
	struct chunk_store *cs = to_cs(f->snap->base.store);
	struct rec_hdr h;
	const uint8_t *payload;
	uint64_t off;
	int r;

	if (!f->cctx) {
		f->cctx = cs_cctx_get(cs);
		f->zbuf = malloc(ZSTD_compressBound(STORE_BLOCK_SIZE));
		if (!f->cctx || !f->zbuf)
			return -ENOMEM;
	}
	if (f->pack && pack_writer_size(f->pack) >= CHUNK_PACK_MAX) {
		r = pack_give(cs, f->pack);
		f->pack = NULL;
		if (r < 0)
			return r;
	}
	if (!f->pack) {
		r = pack_take(cs, &f->pack);
		if (r < 0)
			return r;
		r = note_pack(f, pack_writer_id(f->pack));
		if (r < 0)
			return r;
	}
	r = chunk_encode(cs, f->cctx, block, len, mask, id, &h, f->zbuf, &payload);
	if (r < 0)
		return r;
	r = pack_append(f->pack, &h, payload, &off);
	if (r < 0)
		return r;
	*loc = (struct chunk_loc){
		.pack = pack_writer_id(f->pack),
		.stored_len = h.stored_len,
		.offset = off,
		.raw_len = len,
		.codec = h.codec,
		.mask = (uint8_t)mask,
	};
	return 0;
}

/* Ingests n consecutive whole blocks starting at block0 (the last one
 * last_len bytes long): holes, hashes, dedup, new chunks. known (may be
 * NULL): an entry per block; a known one gives its id and mask, which are
 * not computed again; the others are filled. */
static int ingest(struct wfile *f, const uint8_t *buf, uint64_t block0, size_t n, uint32_t last_len,
		  struct store_block *known)
{
	struct wsnap *w = f->snap;
	struct chunk_store *cs = to_cs(w->base.store);
	uint8_t ids[GROUP][STORE_HASH_LEN], look[GROUP][STORE_HASH_LEN];
	unsigned mask[GROUP];
	uint32_t len[GROUP];
	bool write[GROUP], found[GROUP];
	struct chunk_loc locs[GROUP], newloc[GROUP];
	size_t lookidx[GROUP];
	int r;

	for (size_t g = 0; g < n; g += GROUP) {
		size_t m = MIN((size_t)GROUP, n - g), nl = 0;
		bool any = false;

		size_t nz[GROUP], nnz = 0;
		for (size_t i = 0; i < m; i++) {
			const uint8_t *b = buf + (g + i) * (size_t)STORE_BLOCK_SIZE;
			uint64_t blk = block0 + g + i;
			len[i] = g + i == n - 1 ? last_len : STORE_BLOCK_SIZE;
			mask[i] = 0;
			struct store_block *kb = known ? &known[g + i] : NULL;
			if (kb && kb->known) {
				mask[i] = kb->mask;
				memcpy(ids[i], kb->id, STORE_HASH_LEN);
			}
			for (unsigned p = 0; !(kb && kb->known) && p < CHUNK_PAGES && p * STORE_PAGE_SIZE < len[i]; p++)
				if (!buf_is_zero(b + p * STORE_PAGE_SIZE,
						 MIN(STORE_PAGE_SIZE, len[i] - p * STORE_PAGE_SIZE)))
					mask[i] |= 1u << p;
			write[i] = false;
			if (!mask[i]) {
				leaf_set_drop(f->leaves, blk);
				r = push_went(f, blk, 0, NULL);
				if (r < 0)
					return r;
				continue;
			}
			if (kb && kb->known) {
				r = leaf_set_put(f->leaves, blk, ids[i]);
				if (r < 0)
					return r;
				any = true;
				continue;
			}
			nz[nnz++] = i;
		}
		/* Hashing is most of the cost of ingest: two blocks at a time. */
		for (size_t k = 0; k < nnz; k++) {
			size_t i = nz[k];
			const uint8_t *b = buf + (g + i) * (size_t)STORE_BLOCK_SIZE;
			if (k + 1 < nnz && len[nz[k + 1]] == len[i]) {
				size_t j = nz[k + 1];
				chunk_hash2(b, buf + (g + j) * (size_t)STORE_BLOCK_SIZE, len[i], ids[i], ids[j]);
				k++;
			} else {
				hash_leaf(b, len[i], ids[i]);
			}
		}
		for (size_t k = 0; k < nnz; k++) {
			r = leaf_set_put(f->leaves, block0 + g + nz[k], ids[nz[k]]);
			if (r < 0)
				return r;
			any = true;
		}
		for (size_t i = 0; known && i < m; i++)
			if (!known[g + i].known) {
				memcpy(known[g + i].id, ids[i], STORE_HASH_LEN);
				known[g + i].mask = (uint8_t)mask[i];
				known[g + i].known = true;
			}
		if (!any)
			continue;

		/* Ids this snapshot already has cost nothing more. */
		pthread_mutex_lock(&w->lock);
		for (size_t i = 0; i < m; i++)
			if (mask[i] && !idset_find(&w->set, ids[i])) {
				lookidx[nl] = i;
				memcpy(look[nl++], ids[i], STORE_HASH_LEN);
			}
		pthread_mutex_unlock(&w->lock);

		if (nl) {
			r = index_find_chunks(cs->idx, nl, (const uint8_t(*)[STORE_HASH_LEN])look, locs, found);
			if (r < 0)
				return r;
			/* Claim the ids nobody has: this file writes them. Another
			 * file of the snapshot may have claimed one meanwhile. */
			pthread_mutex_lock(&w->lock);
			for (size_t j = 0; j < nl; j++) {
				struct idset_ent *e;
				bool added;
				r = idset_add(&w->set, look[j], &e, &added);
				if (r < 0) {
					pthread_mutex_unlock(&w->lock);
					return r;
				}
				if (!added)
					continue;
				if (found[j]) {
					e->state = IDSET_OLD;
					e->loc = locs[j];
				} else {
					e->state = IDSET_PENDING;
					write[lookidx[j]] = true;
				}
			}
			pthread_mutex_unlock(&w->lock);

			bool wrote = false;
			for (size_t i = 0; i < m; i++) {
				if (!write[i])
					continue;
				r = write_chunk(f, buf + (g + i) * (size_t)STORE_BLOCK_SIZE, len[i], mask[i], ids[i],
						&newloc[i]);
				if (r < 0)
					return r;
				wrote = true;
			}
			if (wrote) {
				pthread_mutex_lock(&w->lock);
				for (size_t i = 0; i < m; i++) {
					if (!write[i])
						continue;
					struct idset_ent *e = idset_find(&w->set, ids[i]);
					e->loc = newloc[i];
					e->state = IDSET_NEW;
				}
				pthread_mutex_unlock(&w->lock);
			}
		}
		for (size_t i = 0; i < m; i++) {
			if (!mask[i])
				continue;
			r = push_went(f, block0 + g + i, mask[i], ids[i]);
			if (r < 0)
				return r;
		}
	}
	return 0;
}

/* f->parts is kept sorted by block: a file written in pieces around holes
 * (cp -r into restore/ skips them) leaves thousands of blocks partly
 * written until close, and a scan of them all at every write made such a
 * copy quadratic. Writers go forward, so inserts are mostly appends and
 * the blocks completed are mostly the last ones. */
/* Index of the first of n elements, stride bytes each and sorted by the
 * uint64_t at offset off, whose key is >= key. */
static size_t lower_bound_u64(const void *base, size_t n, size_t stride, size_t off, uint64_t key)
{
	size_t lo = 0, hi = n;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		uint64_t k;
		memcpy(&k, (const uint8_t *)base + mid * stride + off, sizeof(k));
		if (k < key)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

static size_t partial_pos(const struct wfile *f, uint64_t block)
{
	return lower_bound_u64(f->parts, f->nparts, sizeof(*f->parts), offsetof(struct partial, block), block);
}

static struct partial *partial_get(struct wfile *f, uint64_t block)
{
	size_t pos = partial_pos(f, block);
	if (pos < f->nparts && f->parts[pos].block == block)
		return &f->parts[pos];
	if (f->nparts == f->aparts) {
		size_t n = f->aparts ? f->aparts * 2 : 4;
		struct partial *np = realloc(f->parts, n * sizeof(*np));
		if (!np)
			return NULL;
		f->parts = np;
		f->aparts = n;
	}
	struct partial q = { .block = block };
	q.data = calloc(1, STORE_BLOCK_SIZE);
	q.bits = calloc(1, STORE_BLOCK_SIZE / 8);
	if (!q.data || !q.bits) {
		free(q.data);
		free(q.bits);
		return NULL;
	}
	memmove(&f->parts[pos + 1], &f->parts[pos], (f->nparts - pos) * sizeof(*f->parts));
	f->parts[pos] = q;
	f->nparts++;
	return &f->parts[pos];
}

static void partial_drop(struct wfile *f, struct partial *p)
{
	size_t pos = (size_t)(p - f->parts);
	free(p->data);
	free(p->bits);
	memmove(p, p + 1, (f->nparts - pos - 1) * sizeof(*p));
	f->nparts--;
}

static void partials_free(struct wfile *f)
{
	for (size_t i = 0; i < f->nparts; i++) {
		free(f->parts[i].data);
		free(f->parts[i].bits);
	}
	f->nparts = 0;
}

/* ---- blocks the writer left behind ------------------------------------------
 * cp -r into restore/ writes the data of a memory file and skips its holes,
 * so blocks that hold a hole stay partly written, and a copy of 1 GiB left
 * 16k of them (18 KiB each) in memory until close. Once PARTIALS_KEPT are
 * waiting, those behind the block being written are ingested as they are
 * (the bytes never written are zero, as at close) and only their numbers
 * kept. A write that comes back to such a block first reloads it from the
 * chunk it became, and waits again. That chunk must be readable now: one the index has, or
 * one this file wrote to its own pack (flushed first); a block whose chunk
 * another file of the snapshot is writing stays in memory instead. */
#define PARTIALS_KEPT 16

static size_t flushed_pos(const struct wfile *f, uint64_t block)
{
	return lower_bound_u64(f->flushed, f->nflushed, sizeof(*f->flushed), 0, block);
}

static int flushed_add(struct wfile *f, uint64_t block)
{
	size_t pos = flushed_pos(f, block);
	if (pos < f->nflushed && f->flushed[pos] == block)
		return 0;
	if (f->nflushed == f->aflushed) {
		size_t n = f->aflushed ? f->aflushed * 2 : 64;
		uint64_t *nf = realloc(f->flushed, n * sizeof(*nf));
		if (!nf)
			return -ENOMEM;
		f->flushed = nf;
		f->aflushed = n;
	}
	memmove(&f->flushed[pos + 1], &f->flushed[pos], (f->nflushed - pos) * sizeof(*f->flushed));
	f->flushed[pos] = block;
	f->nflushed++;
	return 0;
}

/* Forgets block; true if it was there. */
static bool flushed_take(struct wfile *f, uint64_t block)
{
	size_t pos = flushed_pos(f, block);
	if (pos == f->nflushed || f->flushed[pos] != block)
		return false;
	memmove(&f->flushed[pos], &f->flushed[pos + 1], (f->nflushed - pos - 1) * sizeof(*f->flushed));
	f->nflushed--;
	return true;
}

/* Where the chunk of this file's last entry for block can be read now;
 * false if nowhere yet (another file is writing it). Zero blocks: mask 0. */
static bool block_readable(struct wfile *f, uint64_t block, struct went *ret, struct chunk_loc *loc)
{
	struct wsnap *w = f->snap;
	size_t i = f->nents;
	while (i && f->ents[i - 1].block != block)
		i--;
	if (!i)
		return false;
	*ret = f->ents[i - 1];
	if (!ret->mask)
		return true;
	pthread_mutex_lock(&w->lock);
	struct idset_ent *e = idset_find(&w->set, ret->id);
	bool ok = e && (e->state == IDSET_OLD ||
			(e->state == IDSET_NEW && f->pack && e->loc.pack == pack_writer_id(f->pack)));
	if (ok)
		*loc = e->loc;
	pthread_mutex_unlock(&w->lock);
	return ok;
}

/* Ingests the partial blocks behind block, down to PARTIALS_KEPT waiting. */
static int partials_leave_behind(struct wfile *f, uint64_t block)
{
	size_t i = 0;
	while (f->nparts > PARTIALS_KEPT && i < f->nparts && f->parts[i].block < block) {
		struct partial *p = &f->parts[i];
		struct went e;
		struct chunk_loc loc;
		if (p->kept) {
			i++;
			continue;
		}
		int r = ingest(f, p->data, p->block, 1, STORE_BLOCK_SIZE, NULL);
		if (r < 0)
			return r;
		if (!block_readable(f, p->block, &e, &loc)) {
			p->kept = true; /* its chunk cannot be read back yet: waits for close */
			i++;
			continue;
		}
		r = flushed_add(f, p->block);
		if (r < 0)
			return r;
		partial_drop(f, p);
	}
	return 0;
}

/* A write came back to a block ingested while partly written: the block
 * as it was, all of it counted as written. */
static int partial_reload(struct wfile *f, struct partial *p)
{
	struct went e;
	struct chunk_loc loc;
	int r;

	if (!block_readable(f, p->block, &e, &loc))
		return err_set(-EIO, "block %" PRIu64 ": written in part, left, and its chunk is not readable",
			       p->block);
	if (e.mask) {
		if (f->pack && loc.pack == pack_writer_id(f->pack)) {
			r = pack_flush(f->pack);
			if (r < 0)
				return r;
		}
		r = pack_read_chunk(to_cs(f->snap->base.store), &loc, e.id, p->data);
		if (r < 0)
			return r;
	}
	memset(p->bits, 0xff, STORE_BLOCK_SIZE / 8);
	p->covered = STORE_BLOCK_SIZE;
	p->reloaded = true;
	return 0;
}

/* Buffers a write inside one block; ingests the block once complete. */
static int write_partial(struct wfile *f, const uint8_t *buf, size_t len, uint64_t off)
{
	uint64_t block = off / STORE_BLOCK_SIZE;
	uint32_t in = (uint32_t)(off % STORE_BLOCK_SIZE);
	int r;

	if (f->nparts >= PARTIALS_KEPT) {
		r = partials_leave_behind(f, block);
		if (r < 0)
			return r;
	}
	size_t had = f->nparts;
	struct partial *p = partial_get(f, block);
	if (!p)
		return -ENOMEM;
	if (f->nparts > had && f->nflushed && flushed_take(f, block)) {
		r = partial_reload(f, p);
		if (r < 0)
			return r;
	}
	memcpy(p->data + in, buf, len);
	/* Count bytes newly covered; whole bitmap bytes at a time in the
	 * middle, so that page-sized pieces cost little. */
	uint32_t i = in, end = in + (uint32_t)len;
	for (; i < end && (i % 8); i++)
		if (!(p->bits[i / 8] & (1u << (i % 8)))) {
			p->bits[i / 8] |= (uint8_t)(1u << (i % 8));
			p->covered++;
		}
	for (; i + 8 <= end; i += 8) {
		p->covered += 8 - (uint32_t)__builtin_popcount(p->bits[i / 8]);
		p->bits[i / 8] = 0xff;
	}
	for (; i < end; i++)
		if (!(p->bits[i / 8] & (1u << (i % 8)))) {
			p->bits[i / 8] |= (uint8_t)(1u << (i % 8));
			p->covered++;
		}
	/* A reloaded block waits like any other: the rest of what was not
	 * written before may still come. */
	if (p->covered < STORE_BLOCK_SIZE || p->reloaded)
		return 0;
	r = ingest(f, p->data, block, 1, STORE_BLOCK_SIZE, NULL);
	partial_drop(f, p);
	return r;
}

static int manifest_write(struct wfile *f, const uint8_t *buf, size_t len, uint64_t off)
{
	struct wsnap *w = f->snap;
	if (off + len > 64u << 20)
		return err_set(-EFBIG, "%s: larger than 64 MiB", STORE_MANIFEST);
	if (off + len > w->manifest_len) {
		char *n = realloc(w->manifest, off + len + 1);
		if (!n)
			return -ENOMEM;
		memset(n + w->manifest_len, 0, off + len + 1 - w->manifest_len);
		w->manifest = n;
		w->manifest_len = off + len;
	}
	memcpy(w->manifest + off, buf, len);
	return 0;
}

/* Forgets what was written before of blocks [first, first + nb): whole
 * blocks written now replace it. */
static void drop_pending(struct wfile *f, uint64_t first, size_t nb)
{
	for (size_t i = partial_pos(f, first); i < f->nparts && f->parts[i].block < first + nb;)
		partial_drop(f, &f->parts[i]);
	while (f->nflushed) {
		size_t i = flushed_pos(f, first);
		if (i == f->nflushed || f->flushed[i] >= first + nb)
			break;
		flushed_take(f, f->flushed[i]);
	}
}

static int chunk_file_pwrite_blocks(struct store_file *sf, const void *buf, size_t len, uint64_t off,
				    struct store_block *blocks)
{
	struct wfile *f = (struct wfile *)sf;
	int r;

	if (f->error)
		return f->error;
	if (f->is_manifest)
		return err_set(-EINVAL, "the manifest is not written in blocks");
	drop_pending(f, off / STORE_BLOCK_SIZE, len / STORE_BLOCK_SIZE);
	r = ingest(f, buf, off / STORE_BLOCK_SIZE, len / STORE_BLOCK_SIZE, STORE_BLOCK_SIZE, blocks);
	if (r < 0)
		return fail_file(f, r);
	f->end = MAX(f->end, off + len);
	return 1;
}

static int chunk_file_pwrite(struct store_file *sf, const void *vbuf, size_t len, uint64_t off)
{
	struct wfile *f = (struct wfile *)sf;
	const uint8_t *buf = vbuf;
	int r = 0;

	if (f->error)
		return f->error;
	if (f->is_manifest) {
		r = manifest_write(f, buf, len, off);
		goto out;
	}
	while (len) {
		uint64_t in = off % STORE_BLOCK_SIZE;
		if (in || len < STORE_BLOCK_SIZE) {
			size_t n = MIN(len, STORE_BLOCK_SIZE - in);
			r = write_partial(f, buf, n, off);
			if (r < 0)
				break;
			buf += n;
			off += n;
			len -= n;
			continue;
		}
		/* The fast path: whole aligned blocks straight from the caller. */
		size_t nb = len / STORE_BLOCK_SIZE;
		drop_pending(f, off / STORE_BLOCK_SIZE, nb);
		r = ingest(f, buf, off / STORE_BLOCK_SIZE, nb, STORE_BLOCK_SIZE, NULL);
		if (r < 0)
			break;
		buf += nb * STORE_BLOCK_SIZE;
		off += nb * STORE_BLOCK_SIZE;
		len -= nb * STORE_BLOCK_SIZE;
	}
out:
	if (r < 0)
		return fail_file(f, r);
	f->end = MAX(f->end, off);
	return 0;
}

static int chunk_file_set_size(struct store_file *sf, uint64_t size)
{
	struct wfile *f = (struct wfile *)sf;
	f->size = size;
	f->size_set = true;
	return 0;
}

static int cmp_went(const void *a, const void *b)
{
	const struct went *x = a, *y = b;
	if (x->block != y->block)
		return x->block < y->block ? -1 : 1;
	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Flushes what is buffered, fixes the recipe and the file hash. */
static int finish_file(struct wfile *f, struct wmeta *m)
{
	struct chunk_store *cs = to_cs(f->snap->base.store);
	uint64_t size = f->size_set ? f->size : f->end;
	size_t o = 0;
	int r;

	if (f->is_manifest) {
		m->size = f->snap->manifest_len;
		m->allocated = m->size;
		m->stored = m->size;
		store_hash_buf(f->snap->manifest, m->size, m->hash);
		return 0;
	}
	/* Partial blocks are cut at the file's size, now known. */
	for (size_t i = 0; i < f->nparts; i++) {
		struct partial *p = &f->parts[i];
		uint64_t start = p->block * STORE_BLOCK_SIZE;
		if (start < size) {
			r = ingest(f, p->data, p->block, 1, (uint32_t)MIN((uint64_t)STORE_BLOCK_SIZE, size - start), NULL);
			if (r < 0)
				return r;
		}
	}
	partials_free(f);
	if (f->pack) {
		r = pack_give(cs, f->pack);
		f->pack = NULL;
		if (r < 0)
			return r;
	}
	if (f->nents)
		qsort(f->ents, f->nents, sizeof(*f->ents), cmp_went);
	for (size_t i = 0; i < f->nents; i++) {
		struct went *e = &f->ents[i];
		if (i + 1 < f->nents && f->ents[i + 1].block == e->block)
			continue; /* replaced by a later write */
		if (!e->mask || e->block * STORE_BLOCK_SIZE >= size)
			continue;
		/* A whole block written, then the size set inside it: its leaf
		 * would have to be rehashed at the shorter length. */
		if (size - e->block * STORE_BLOCK_SIZE < STORE_BLOCK_SIZE) {
			struct idset_ent *ie;
			pthread_mutex_lock(&f->snap->lock);
			ie = idset_find(&f->snap->set, e->id);
			uint32_t rl = ie ? ie->loc.raw_len : 0;
			pthread_mutex_unlock(&f->snap->lock);
			if (ie && ie->state != IDSET_PENDING && rl != size - e->block * STORE_BLOCK_SIZE)
				return err_set(-EINVAL, "'%s': size %" PRIu64 " cuts a block written whole", m->path,
					       size);
		}
		f->ents[o++] = *e;
		for (unsigned p = 0; p < CHUNK_PAGES; p++) {
			uint64_t ps = e->block * STORE_BLOCK_SIZE + p * STORE_PAGE_SIZE;
			if ((e->mask & (1u << p)) && ps < size)
				m->allocated += MIN((uint64_t)STORE_PAGE_SIZE, size - ps);
		}
	}
	r = leaf_set_final(f->leaves, size, m->hash);
	if (r < 0)
		return r;
	m->size = size;
	m->ents = f->ents;
	m->nents = o;
	f->ents = NULL;
	return 0;
}

static void wfile_free(struct wfile *f)
{
	struct chunk_store *cs = to_cs(f->snap->base.store);
	partials_free(f);
	free(f->parts);
	free(f->flushed);
	if (f->pack)
		pack_give(cs, f->pack);
	cs_cctx_put(cs, f->cctx);
	free(f->zbuf);
	leaf_set_free(f->leaves);
	free(f->ents);
	free(f);
}

static int chunk_file_close_w(struct wfile *f)
{
	struct wsnap *w = f->snap;
	struct wmeta m = { 0 };
	int r = f->error;

	if (!r) {
		pthread_mutex_lock(&w->lock);
		m.path = w->files[f->idx].path;
		pthread_mutex_unlock(&w->lock);
		r = finish_file(f, &m);
		if (r < 0)
			fail_file(f, r);
	}
	pthread_mutex_lock(&w->lock);
	if (r >= 0) {
		m.path = w->files[f->idx].path;
		m.closed = true;
		w->files[f->idx] = m;
	} else {
		free(m.ents);
	}
	w->open_files--;
	pthread_mutex_unlock(&w->lock);
	wfile_free(f);
	return r;
}

static int cmp_meta(const void *a, const void *b)
{
	return strcmp(((const struct wmeta *)a)->path, ((const struct wmeta *)b)->path);
}

/* Import: every file must be what the incoming manifest says. */
static int verify_import(struct wsnap *w)
{
	struct manifest m = { 0 };
	char hex[2 * STORE_HASH_LEN + 1];
	size_t i = 0, j = 0;
	int r;

	if (!w->manifest)
		return err_set(-EBADMSG, "snapshot '%s': no %s", w->name, STORE_MANIFEST);
	r = manifest_parse(w->manifest, w->manifest_len, &m);
	if (r < 0)
		return r;
	/* Both lists are sorted by path: walk them together. */
	while (i < w->nfiles || j < m.nfiles) {
		if (i < w->nfiles && !strcmp(w->files[i].path, STORE_MANIFEST)) {
			i++;
			continue;
		}
		int c = i == w->nfiles ? 1 : j == m.nfiles ? -1 : strcmp(w->files[i].path, m.files[j].path);
		if (c < 0) {
			r = err_set(-EBADMSG, "'%s': not listed in the manifest", w->files[i].path);
			goto out;
		}
		if (c > 0) {
			r = err_set(-EBADMSG, "'%s': listed in the manifest but missing", m.files[j].path);
			goto out;
		}
		if (w->files[i].size != m.files[j].size) {
			r = err_set(-EBADMSG, "'%s': size %" PRIu64 ", the manifest says %" PRIu64, w->files[i].path,
				    w->files[i].size, m.files[j].size);
			goto out;
		}
		if (memcmp(w->files[i].hash, m.files[j].hash, STORE_HASH_LEN)) {
			store_hash_hex(w->files[i].hash, hex);
			r = err_set(-EBADMSG, "'%s': hash %s does not match the manifest", w->files[i].path, hex);
			goto out;
		}
		i++;
		j++;
	}
out:
	manifest_clear(&m);
	return r;
}

static int cmp_ent_id(const void *a, const void *b)
{
	return memcmp((*(struct idset_ent *const *)a)->id, (*(struct idset_ent *const *)b)->id, STORE_HASH_LEN);
}

static _noreturn_ void crash(const char *where)
{
	log_debug("fault injected: crash %s", where);
	_exit(99);
}

static int chunk_snap_commit(struct store_snap *sw)
{
	struct wsnap *w = (struct wsnap *)sw;
	struct chunk_store *cs = to_cs(sw->store);
	struct index_batch *b = NULL;
	struct snaprec rec = { 0 };
	struct buf rb = { 0 };
	_cleanup_free_ char *mtext = NULL;
	_cleanup_free_ uint8_t *skey = NULL;
	const char *mt;
	size_t skl, mlen;
	uint8_t (*nids)[STORE_HASH_LEN] = NULL;
	struct chunk_loc *nlocs = NULL;
	bool *nfound = NULL;
	struct idset_ent **newe = NULL;
	size_t nn = 0;
	int r;

	if (w->open_files)
		return err_set(-EBUSY, "snapshot '%s': %u files still open", w->name, w->open_files);
	if (w->error)
		return err_set(w->error, "snapshot '%s': a write failed before: %s", w->name, strerror(-w->error));
	if (w->nfiles)
		qsort(w->files, w->nfiles, sizeof(*w->files), cmp_meta);
	if (sw->flags & STORE_CREATE_IMPORT) {
		r = verify_import(w);
		if (r < 0)
			return r;
	}

	/* 1. Chunk bytes on disk before any index entry points at them. */
	uint64_t t0 = now_ns(), t1, t2, t3;
	if (fault_hit(FAULT_STORE_CRASH_BEFORE_PACK_FSYNC))
		crash("before pack fsync");
	for (size_t i = 0; i < w->npacks; i++) {
		r = pack_sync(cs, w->packs[i]);
		if (r < 0)
			return r;
	}
	/* New packs are new directory entries. */
	if (w->npacks && fsync(cs->packs_fd) < 0)
		return err_set(negerrno(), "%s/packs: fsync: %m", cs->dir);
	if (fault_hit(FAULT_STORE_CRASH_BEFORE_INDEX))
		crash("before index commit");

	/* 2. One batch, under the commit lock. */
	t1 = now_ns();
	b = index_batch_new();
	if (!b)
		return -ENOMEM;
	r = snap_key(w->name, &skey, &skl);
	if (r < 0)
		goto out;

	/* Every entry must name a chunk that is on disk; the stored bytes of
	 * each file count its chunks as they are in the packs. */
	for (size_t i = 0; i < w->nfiles; i++)
		for (size_t k = 0; k < w->files[i].nents; k++) {
			struct idset_ent *e = idset_find(&w->set, w->files[i].ents[k].id);
			if (!e || e->state == IDSET_PENDING) {
				r = err_set(-EIO, "snapshot '%s': chunk of '%s' never written", w->name,
					    w->files[i].path);
				goto out;
			}
			e->refs++;
			w->files[i].stored += e->loc.stored_len;
		}
	nids = malloc((w->set.n + 1) * sizeof(*nids));
	nlocs = malloc((w->set.n + 1) * sizeof(*nlocs));
	nfound = malloc((w->set.n + 1) * sizeof(*nfound));
	newe = malloc((w->set.n + 1) * sizeof(*newe));
	if (!nids || !nlocs || !nfound || !newe) {
		r = -ENOMEM;
		goto out;
	}
	/* New chunks in id order: RocksDB's memtable inserts keys that come
	 * in order at a fraction of the cost of random ones. */
	for (size_t i = 0; i < w->set.cap; i++)
		if (w->set.e[i].used && w->set.e[i].refs && w->set.e[i].state == IDSET_NEW)
			newe[nn++] = &w->set.e[i];
	if (nn)
		qsort(newe, nn, sizeof(*newe), cmp_ent_id);
	for (size_t i = 0; i < nn; i++)
		memcpy(nids[i], newe[i]->id, STORE_HASH_LEN);

	pthread_mutex_lock(&cs->commit_lock);
	{
		void *v;
		size_t vl;
		r = index_get(cs->idx, skey, skl, &v, &vl);
		if (r == 0) {
			free(v);
			r = err_set(-EEXIST, "snapshot '%s' exists", w->name);
			goto unlock;
		}
		if (r != -ENOENT)
			goto unlock;
	}
	/* A concurrent writer may have committed the same new chunk since we
	 * looked: the first committed copy stays, ours becomes dead bytes. */
	if (atomic_load(&cs->commits) != w->commits_seen) {
		r = index_get_locs(cs->idx, nn, (const uint8_t(*)[STORE_HASH_LEN])nids, nlocs, nfound);
		if (r < 0)
			goto unlock;
	} else {
		/* Nothing committed since this writer began, so nothing it
		 * found missing can have appeared: skip the second look. */
		memset(nfound, 0, (w->set.n + 1) * sizeof(*nfound));
	}
	for (size_t i = 0; i < nn; i++) {
		struct idset_ent *e = newe[i];
		if (nfound[i])
			continue;
		uint8_t k[CHUNK_KEY_LEN];
		chunk_key(k, KEY_CHUNK, e->id);
		index_batch_put(b, k, sizeof(k), &e->loc, sizeof(e->loc));
		rec.stored += rec_size(&e->loc);
	}
	/* References: counted later (chunks_load), not one merge per chunk
	 * here, where a re-ingest would spend most of its commit. */
	rec.snapid = cs->next_snapid;
	{
		uint8_t pk[9];
		pending_key(pk, rec.snapid);
		index_batch_put(b, pk, sizeof(pk), "", 0);
	}
	rec.created = time(NULL);
	rec.files = calloc(w->nfiles + 1, sizeof(*rec.files));
	if (!rec.files) {
		r = -ENOMEM;
		goto unlock;
	}
	for (size_t i = 0; i < w->nfiles; i++) {
		struct wmeta *m = &w->files[i];
		if (!strcmp(m->path, STORE_MANIFEST))
			continue; /* kept as the manifest text, not as a file */
		uint32_t fno = rec.nfiles;
		rec.files[rec.nfiles++] = (struct snaprec_file){
			.path = m->path, .size = m->size, .allocated = m->allocated, .stored = m->stored,
		};
		memcpy(rec.files[fno].hash, m->hash, STORE_HASH_LEN);
		rec.size += m->size;
		rec.allocated += m->allocated;
		/* Recipe segments: CHUNK_SEG_BLOCKS blocks a key. */
		for (size_t k = 0; k < m->nents;) {
			uint32_t seg = (uint32_t)(m->ents[k].block / CHUNK_SEG_BLOCKS);
			struct buf sb = { 0 };
			uint8_t key[RECIPE_KEY_LEN];
			for (; k < m->nents && m->ents[k].block / CHUNK_SEG_BLOCKS == seg; k++) {
				uint16_t bl = (uint16_t)(m->ents[k].block % CHUNK_SEG_BLOCKS);
				BUF_ADD(&sb, bl);
				buf_add(&sb, m->ents[k].id, STORE_HASH_LEN);
			}
			if (sb.oom) {
				free(sb.p);
				r = -ENOMEM;
				goto unlock;
			}
			recipe_key(key, rec.snapid, fno, seg);
			index_batch_put(b, key, sizeof(key), sb.p, sb.len);
			free(sb.p);
		}
	}
	if (sw->flags & STORE_CREATE_IMPORT) {
		mt = w->manifest;
		mlen = w->manifest_len;
	} else {
		struct manifest man = { .version = STORE_FORMAT_VERSION, .created = rec.created };
		man.files = calloc(rec.nfiles + 1, sizeof(*man.files));
		if (!man.files) {
			r = -ENOMEM;
			goto unlock;
		}
		for (uint32_t i = 0; i < rec.nfiles; i++) {
			man.files[i].path = rec.files[i].path;
			man.files[i].size = rec.files[i].size;
			memcpy(man.files[i].hash, rec.files[i].hash, STORE_HASH_LEN);
		}
		man.nfiles = rec.nfiles;
		r = manifest_format(&man, &mtext, &mlen);
		free(man.files); /* the paths are rec's */
		if (r < 0)
			goto unlock;
		mt = mtext;
	}
	{
		uint8_t mk[9];
		uint64_t next = rec.snapid + 1;
		mk[0] = KEY_MANIFEST;
		be64_put(mk + 1, rec.snapid);
		index_batch_put(b, mk, sizeof(mk), mt, mlen);
		index_batch_put(b, "N", 1, &next, sizeof(next));
	}
	r = snaprec_format(&rec, &rb);
	if (r < 0)
		goto unlock;
	index_batch_put(b, skey, skl, rb.p, rb.len);

	/* FAULT_STORE_CRASH_MID_BATCH: first hit just before the batch is
	 * written (the snapshot must be absent after), second hit right after
	 * the synced write returned (it must be present and whole). */
	if (fault_hit(FAULT_STORE_CRASH_MID_BATCH))
		crash("before the index batch");
	t2 = now_ns();
	r = index_write(cs->idx, b, true);
	if (r < 0)
		goto unlock;
	if (fault_hit(FAULT_STORE_CRASH_MID_BATCH))
		crash("after the index batch");
	for (size_t i = 0; i < nn; i++)
		if (!nfound[i])
			nlocs[i] = newe[i]->loc;
	index_known_put(cs->idx, nn, (const uint8_t(*)[STORE_HASH_LEN])nids, nlocs, NULL);
	cs->next_snapid = rec.snapid + 1;
	atomic_fetch_add(&cs->commits, 1);
	t3 = now_ns();
	log_debug("snapshot '%s' committed: %u files, %" PRIu64 " new bytes; pack sync %.3f s, batch of %zu %.3f s, write %.3f s",
		  w->name, rec.nfiles, rec.stored, (double)(t1 - t0) / 1e9, index_batch_count(b), (double)(t2 - t1) / 1e9,
		  (double)(t3 - t2) / 1e9);
unlock:
	pthread_mutex_unlock(&cs->commit_lock);
out:
	free(rec.files); /* paths belong to w->files */
	free(rb.p);
	free(nids);
	free(nlocs);
	free(nfound);
	free(newe);
	index_batch_free(b);
	if (r >= 0 && w->in_gc_lock) {
		w->in_gc_lock = false;
		cs_writer_leave(cs);
	}
	return r;
}

static void chunk_snap_close_w(struct wsnap *w)
{
	struct chunk_store *cs = to_cs(w->base.store);
	for (size_t i = 0; i < w->nfiles; i++) {
		free(w->files[i].path);
		free(w->files[i].ents);
	}
	free(w->files);
	free(w->packs);
	idset_clear(&w->set);
	free(w->manifest);
	free(w->name);
	pthread_mutex_destroy(&w->lock);
	if (w->in_gc_lock)
		cs_writer_leave(cs);
	free(w);
}

/* ---- reading --------------------------------------------------------------- */

static int chunk_snap_open(struct store *s, const char *name, unsigned flags, struct store_snap **ret)
{
	struct chunk_store *cs = to_cs(s);
	struct rsnap *rs = calloc(1, sizeof(*rs));
	uint8_t mk[9];
	void *v;
	int r;

	if (!rs)
		return -ENOMEM;
	rs->name = strdup(name);
	if (!rs->name) {
		free(rs);
		return -ENOMEM;
	}
	r = load_snaprec(cs, name, &rs->rec);
	if (r < 0)
		goto fail;
	mk[0] = KEY_MANIFEST;
	be64_put(mk + 1, rs->rec.snapid);
	r = index_get(cs->idx, mk, sizeof(mk), &v, &rs->manifest_len);
	if (r < 0) {
		if (r == -ENOENT)
			r = err_set(-EBADMSG, "snapshot '%s': manifest missing from the index", name);
		goto fail;
	}
	rs->manifest = v;
	store_hash_buf(rs->manifest, rs->manifest_len, rs->manifest_hash);
	*ret = &rs->base;
	return 0;
fail:
	snaprec_clear(&rs->rec);
	free(rs->name);
	free(rs);
	return r;
}

static void manifest_stat(struct rsnap *rs, struct store_stat *st)
{
	st->size = st->allocated = st->stored = rs->manifest_len;
	memcpy(st->hash, rs->manifest_hash, STORE_HASH_LEN);
}

static void file_stat_of(const struct snaprec_file *f, struct store_stat *st)
{
	st->size = f->size;
	st->allocated = f->allocated;
	st->stored = f->stored;
	memcpy(st->hash, f->hash, STORE_HASH_LEN);
}

static int chunk_snap_foreach_file(struct store_snap *sr,
				   int (*cb)(const char *path, const struct store_stat *st, void *ud), void *ud)
{
	struct rsnap *rs = (struct rsnap *)sr;
	struct store_stat st;
	bool mdone = false;
	int r;

	for (uint32_t i = 0; i <= rs->rec.nfiles; i++) {
		const char *p = i < rs->rec.nfiles ? rs->rec.files[i].path : NULL;
		if (!mdone && (!p || strcmp(STORE_MANIFEST, p) < 0)) {
			mdone = true;
			manifest_stat(rs, &st);
			r = cb(STORE_MANIFEST, &st, ud);
			if (r)
				return r;
		}
		if (!p)
			break;
		file_stat_of(&rs->rec.files[i], &st);
		r = cb(p, &st, ud);
		if (r)
			return r;
	}
	return 0;
}

static int find_file(struct rsnap *rs, const char *path)
{
	size_t lo = 0, hi = rs->rec.nfiles;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		int c = strcmp(rs->rec.files[mid].path, path);
		if (!c)
			return (int)mid;
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return -1;
}

static int chunk_snap_stat(struct store_snap *sr, const char *path, struct store_stat *ret)
{
	struct rsnap *rs = (struct rsnap *)sr;
	int i;

	if (!strcmp(path, STORE_MANIFEST)) {
		manifest_stat(rs, ret);
		return 0;
	}
	i = find_file(rs, path);
	if (i < 0)
		return err_set(-ENOENT, "snapshot '%s': no file '%s'", rs->name, path);
	file_stat_of(&rs->rec.files[i], ret);
	return 0;
}

static ssize_t pread_direct(void *ud, uint8_t *buf, size_t len, uint64_t off);

static int chunk_file_open(struct store_snap *sr, const char *path, struct store_file **ret)
{
	struct rsnap *rs = (struct rsnap *)sr;
	struct rfile *f;
	int i = -1;

	if (strcmp(path, STORE_MANIFEST)) {
		i = find_file(rs, path);
		if (i < 0)
			return err_set(-ENOENT, "snapshot '%s': no file '%s'", rs->name, path);
	}
	f = calloc(1, sizeof(*f));
	if (!f)
		return -ENOMEM;
	f->snap = rs;
	f->fileno = i;
	f->meta = i >= 0 ? &rs->rec.files[i] : NULL;
	f->cblock = UINT64_MAX;
	pthread_mutex_init(&f->lock, NULL);
	if (f->meta) {
		int r = ra_open(to_cs(rs->base.store), f->meta->size, pread_direct, f, &f->ra);
		if (r < 0) {
			pthread_mutex_destroy(&f->lock);
			free(f);
			return r;
		}
	}
	*ret = &f->base;
	return 0;
}

/* Makes segment seg of f's recipe decoded, with its chunks' locations
 * (one Get, one MultiGet). Called with f->lock held. */
static int seg_load(struct rfile *f, uint32_t seg, struct rseg **ret)
{
	struct chunk_store *cs = to_cs(f->snap->base.store);
	struct rseg *victim = NULL;
	uint8_t key[RECIPE_KEY_LEN];
	uint8_t(*ids)[STORE_HASH_LEN] = NULL;
	struct chunk_loc *locs = NULL;
	bool *found = NULL;
	struct rent *e = NULL;
	void *v = NULL;
	size_t vl = 0, n = 0;
	int r;

	for (unsigned i = 0; i < RSEG_SLOTS; i++)
		if (f->segs[i].valid && f->segs[i].seg == seg) {
			f->segs[i].used = ++f->tick;
			*ret = &f->segs[i];
			return 0;
		}
	for (unsigned i = 0; i < RSEG_SLOTS; i++)
		if (!victim || !f->segs[i].valid || f->segs[i].used < victim->used) {
			victim = &f->segs[i];
			if (!victim->valid)
				break;
		}
	recipe_key(key, f->snap->rec.snapid, (uint32_t)f->fileno, seg);
	r = index_get(cs->idx, key, sizeof(key), &v, &vl);
	if (r == -ENOENT)
		vl = 0; /* all holes */
	else if (r < 0)
		return r;
	if (vl % RECIPE_ENT_LEN) {
		r = err_set(-EBADMSG, "snapshot '%s' file '%s': damaged recipe segment %u", f->snap->name,
			    f->meta->path, seg);
		goto out;
	}
	n = vl / RECIPE_ENT_LEN;
	e = calloc(n + 1, sizeof(*e));
	ids = malloc((n + 1) * sizeof(*ids));
	locs = malloc((n + 1) * sizeof(*locs));
	found = malloc(n + 1);
	if (!e || !ids || !locs || !found) {
		r = -ENOMEM;
		goto out;
	}
	for (size_t k = 0; k < n; k++) {
		const uint8_t *p = (const uint8_t *)v + k * RECIPE_ENT_LEN;
		uint16_t b;
		memcpy(&b, p, 2);
		e[k].block = (uint64_t)seg * CHUNK_SEG_BLOCKS + b;
		memcpy(e[k].id, p + 2, STORE_HASH_LEN);
		memcpy(ids[k], p + 2, STORE_HASH_LEN);
		if (b >= CHUNK_SEG_BLOCKS || (k && e[k].block <= e[k - 1].block)) {
			r = err_set(-EBADMSG, "snapshot '%s' file '%s': damaged recipe segment %u", f->snap->name,
				    f->meta->path, seg);
			goto out;
		}
	}
	/* Through the cache: a snapshot just written is read back (cp -r
	 * out, a restore) without a RocksDB lookup per chunk. A location gc
	 * moved since is caught by read_ent and looked up in RocksDB. */
	r = index_find_chunks(cs->idx, n, (const uint8_t(*)[STORE_HASH_LEN])ids, locs, found);
	if (r < 0)
		goto out;
	for (size_t k = 0; k < n; k++) {
		e[k].loc = locs[k];
		e[k].missing = !found[k];
	}
	free(victim->ents);
	*victim = (struct rseg){ .valid = true, .seg = seg, .used = ++f->tick, .ents = TAKE_PTR(e), .n = n };
	*ret = victim;
	r = 0;
out:
	free(e);
	free(ids);
	free(locs);
	free(found);
	free(v);
	return r;
}

/* Index in s of the first entry with block >= block. */
static size_t seg_lower(const struct rseg *s, uint64_t block)
{
	return lower_bound_u64(s->ents, s->n, sizeof(*s->ents), offsetof(struct rent, block), block);
}

/* Copies the recipe entry of block into *out: 1, or 0 for a hole. With
 * f->lock held. */
static int ent_get(struct rfile *f, uint64_t block, struct rent *out)
{
	struct rseg *s;
	int r = seg_load(f, (uint32_t)(block / CHUNK_SEG_BLOCKS), &s);
	if (r < 0)
		return r;
	size_t i = seg_lower(s, block);
	if (i == s->n || s->ents[i].block != block)
		return 0;
	*out = s->ents[i];
	return 1;
}

/* Decodes the chunk of e into out. A location gc moved since it was
 * looked up is looked up again once. */
static int read_ent(struct rfile *f, const struct rent *e, uint8_t *out)
{
	struct chunk_store *cs = to_cs(f->snap->base.store);
	char hex[2 * STORE_HASH_LEN + 1];
	int r;

	if (!e->missing) {
		struct chunk_loc loc = e->loc;
		if (hot_get(cs->hot, e->id, loc.raw_len, out))
			return 0;
		r = pack_read_chunk(cs, &loc, e->id, out);
		if (r == 0)
			hot_offer(cs->hot, e->id, loc.raw_len, out);
		if (r != -ENOENT && r != -ESTALE)
			return r;
		bool found;
		r = index_get_locs(cs->idx, 1, (const uint8_t(*)[STORE_HASH_LEN])e->id, &loc, &found);
		if (r < 0)
			return r;
		if (found) {
			pthread_mutex_lock(&f->lock);
			for (unsigned i = 0; i < RSEG_SLOTS; i++) {
				struct rseg *s = &f->segs[i];
				size_t k = s->valid ? seg_lower(s, e->block) : 0;
				if (s->valid && k < s->n && s->ents[k].block == e->block)
					s->ents[k].loc = loc;
			}
			pthread_mutex_unlock(&f->lock);
			r = pack_read_chunk(cs, &loc, e->id, out);
			if (r != -ENOENT && r != -ESTALE)
				return r;
		}
	}
	store_hash_hex(e->id, hex);
	return err_set(-EIO, "snapshot '%s' file '%s' offset %" PRIu64 ": chunk %s is missing from the store",
		       f->snap->name, f->meta->path, e->block * STORE_BLOCK_SIZE, hex);
}

/* Reads the blocks from e on into out, up to len bytes, in up to
 * PACK_RUNS_MAX runs of records that lie back to back in a pack (holes
 * between them are zeroed), with their reads in flight together: returns
 * the bytes done, 0 when nothing qualifies or the read failed (the caller
 * then goes block by block, which reports damage precisely). */
static size_t read_run(struct rfile *f, const struct rent *e, uint8_t *out, uint64_t len)
{
	struct chunk_store *cs = to_cs(f->snap->base.store);
	struct chunk_loc locs[PACK_RUNS_MAX * PACK_RUN_MAX];
	uint8_t ids[PACK_RUNS_MAX * PACK_RUN_MAX][STORE_HASH_LEN];
	uint8_t *outs[PACK_RUNS_MAX * PACK_RUN_MAX];
	size_t cnt[PACK_RUNS_MAX], nruns = 0, m = 0;
	struct { uint64_t off, len; } holes[PACK_RUNS_MAX * PACK_RUN_MAX];
	size_t nholes = 0;
	uint64_t size = f->meta->size, done = 0, next = e->block;
	struct rseg *s;

	pthread_mutex_lock(&f->lock);
	if (seg_load(f, (uint32_t)(e->block / CHUNK_SEG_BLOCKS), &s) < 0) {
		pthread_mutex_unlock(&f->lock);
		return 0;
	}
	for (size_t k = seg_lower(s, e->block); k < s->n; k++) {
		const struct rent *x = &s->ents[k];
		uint64_t bstart = x->block * STORE_BLOCK_SIZE;
		uint64_t blen = MIN((uint64_t)STORE_BLOCK_SIZE, size - bstart);
		uint64_t gap = (x->block - next) * STORE_BLOCK_SIZE;
		bool joins;

		if (x->missing || done + gap + blen > len || x->loc.raw_len != blen)
			break;
		joins = nruns && gap == 0 && cnt[nruns - 1] < PACK_RUN_MAX && x->loc.pack == locs[m - 1].pack &&
			x->loc.offset == locs[m - 1].offset + rec_size(&locs[m - 1]);
		/* A record away from the one before is a read of its own:
		 * unless the hot cache has it. */
		if (!joins && hot_get(cs->hot, x->id, (uint32_t)blen, out + done + gap)) {
			if (gap) {
				holes[nholes].off = done;
				holes[nholes++].len = gap;
			}
			done += gap + blen;
			next = x->block + 1;
			continue;
		}
		if (!joins && nruns == PACK_RUNS_MAX)
			break;
		if (gap) {
			holes[nholes].off = done;
			holes[nholes++].len = gap;
			done += gap;
		}
		if (!joins)
			cnt[nruns++] = 0;
		cnt[nruns - 1]++;
		locs[m] = x->loc;
		memcpy(ids[m], x->id, STORE_HASH_LEN);
		outs[m++] = out + done;
		done += blen;
		next = x->block + 1;
	}
	pthread_mutex_unlock(&f->lock);
	if (nruns && pack_read_runs(cs, nruns, cnt, locs, (const uint8_t(*)[STORE_HASH_LEN])ids, outs) < 0)
		return 0;
	for (size_t k = 0, i = 0; k < nruns; i += cnt[k], k++)
		for (size_t j = i; cnt[k] <= HOT_RUN_MAX && j < i + cnt[k]; j++)
			hot_offer(cs->hot, ids[j], locs[j].raw_len, outs[j]);
	for (size_t i = 0; i < nholes; i++)
		memset(out + holes[i].off, 0, holes[i].len);
	return (size_t)done;
}

/* The direct read: [off, off + len), inside the file, block by block
 * and run by run, waiting for each read. Returns len or -errno with a
 * detail naming the chunk. */
static ssize_t pread_direct(void *ud, uint8_t *buf, size_t len, uint64_t off)
{
	struct rfile *f = ud;
	uint64_t size = f->meta->size, pos, end = off + len;
	int r;

	for (pos = off; pos < end;) {
		uint64_t block = pos / STORE_BLOCK_SIZE, bstart = block * STORE_BLOCK_SIZE;
		uint32_t in = (uint32_t)(pos - bstart);
		uint64_t blen = MIN((uint64_t)STORE_BLOCK_SIZE, size - bstart);
		size_t n = (size_t)MIN(blen - in, end - pos);
		struct rent e;

		pthread_mutex_lock(&f->lock);
		r = ent_get(f, block, &e);
		if (r > 0 && f->cblock == block && (in || n != blen)) {
			/* Sequential small reads: decoded once. */
			memcpy(buf + (pos - off), f->cache + in, n);
			pthread_mutex_unlock(&f->lock);
			pos += n;
			continue;
		}
		pthread_mutex_unlock(&f->lock);
		if (r < 0)
			return r;
		if (r == 0) {
			memset(buf + (pos - off), 0, n);
		} else if (in == 0 && n == blen && e.loc.raw_len == blen) {
			size_t m = read_run(f, &e, buf + (pos - off), end - pos);
			if (m) {
				pos += m;
				continue;
			}
			r = read_ent(f, &e, buf + (pos - off));
			if (r < 0)
				return r;
		} else {
			uint8_t tmp[STORE_BLOCK_SIZE];
			memset(tmp, 0, sizeof(tmp));
			r = read_ent(f, &e, tmp);
			if (r < 0)
				return r;
			memcpy(buf + (pos - off), tmp + in, n);
			pthread_mutex_lock(&f->lock);
			memcpy(f->cache, tmp, sizeof(tmp));
			f->cblock = block;
			pthread_mutex_unlock(&f->lock);
		}
		pos += n;
	}
	return (ssize_t)len;
}

static ssize_t chunk_file_pread(struct store_file *sf, void *vbuf, size_t len, uint64_t off)
{
	struct rfile *f = (struct rfile *)sf;
	uint64_t size;

	if (f->fileno < 0) {
		size = f->snap->manifest_len;
		if (off >= size)
			return 0;
		len = (size_t)MIN((uint64_t)len, size - off);
		memcpy(vbuf, f->snap->manifest + off, len);
		return (ssize_t)len;
	}
	size = f->meta->size;
	if (off >= size || !len)
		return 0;
	len = (size_t)MIN((uint64_t)len, size - off);
	if (len > SSIZE_MAX)
		len = SSIZE_MAX;
	if (f->ra)
		return ra_pread(f->ra, vbuf, len, off);
	return pread_direct(f, vbuf, len, off);
}

/* The first segment at or after seg that has a recipe key, or -ENOENT. */
static int next_seg(struct rfile *f, uint32_t seg, uint32_t *ret)
{
	struct chunk_store *cs = to_cs(f->snap->base.store);
	uint8_t prefix[RECIPE_KEY_LEN], start[RECIPE_KEY_LEN];
	struct index_iter *it;
	const uint8_t *k, *v;
	size_t kl, vl;
	int r;

	recipe_key(prefix, f->snap->rec.snapid, (uint32_t)f->fileno, 0);
	recipe_key(start, f->snap->rec.snapid, (uint32_t)f->fileno, seg);
	r = index_iter_new_at(cs->idx, prefix, 13, start, sizeof(start), &it);
	if (r < 0)
		return r;
	r = index_iter_next(it, &k, &kl, &v, &vl);
	if (r > 0 && kl == RECIPE_KEY_LEN)
		*ret = be32_get(k + 13);
	index_iter_free(it);
	return r > 0 ? 0 : r < 0 ? r : -ENOENT;
}

static int64_t seek_data(struct rfile *f, uint64_t off, uint64_t size)
{
	uint64_t page = off / STORE_PAGE_SIZE;
	uint32_t seg = (uint32_t)(off / STORE_BLOCK_SIZE / CHUNK_SEG_BLOCKS);
	uint32_t nsegs = (uint32_t)((size + (uint64_t)STORE_BLOCK_SIZE * CHUNK_SEG_BLOCKS - 1) /
				    ((uint64_t)STORE_BLOCK_SIZE * CHUNK_SEG_BLOCKS));
	bool first = true;
	int64_t r;

	for (;;) {
		struct rseg *s;
		/* The segment of off first: it is usually loaded already
		 * (cp asks SEEK_DATA and SEEK_HOLE around every extent it
		 * copies, and a RocksDB iterator costs more than the read).
		 * Past it, skip segments without a key with one seek. */
		if (!first) {
			r = next_seg(f, seg, &seg);
			if (r == -ENOENT)
				return -ENXIO;
			if (r < 0)
				return r;
		}
		first = false;
		pthread_mutex_lock(&f->lock);
		r = seg_load(f, seg, &s);
		if (r < 0) {
			pthread_mutex_unlock(&f->lock);
			return r;
		}
		for (size_t k = seg_lower(s, page / CHUNK_PAGES); k < s->n; k++) {
			const struct rent *e = &s->ents[k];
			for (unsigned p = 0; p < CHUNK_PAGES; p++) {
				uint64_t pg = e->block * CHUNK_PAGES + p;
				if (pg < page || !(e->loc.mask & (1u << p)))
					continue;
				pthread_mutex_unlock(&f->lock);
				uint64_t ps = pg * STORE_PAGE_SIZE;
				return ps >= size ? -ENXIO : (int64_t)MAX(ps, off);
			}
		}
		pthread_mutex_unlock(&f->lock);
		if ((uint64_t)seg + 1 >= nsegs)
			return -ENXIO;
		seg++;
	}
}

static int64_t seek_hole(struct rfile *f, uint64_t off, uint64_t size)
{
	/* Block by block: a missing entry or a clear page bit is a hole. */
	for (uint64_t block = off / STORE_BLOCK_SIZE;; block++) {
		uint64_t bstart = block * STORE_BLOCK_SIZE;
		struct rent e;
		int r;

		if (bstart >= size)
			return (int64_t)size;
		pthread_mutex_lock(&f->lock);
		r = ent_get(f, block, &e);
		pthread_mutex_unlock(&f->lock);
		if (r < 0)
			return r;
		if (r == 0)
			return (int64_t)MAX(bstart, off);
		for (unsigned p = 0; p < CHUNK_PAGES; p++) {
			uint64_t ps = bstart + p * STORE_PAGE_SIZE;
			if (ps >= size)
				return (int64_t)size;
			if (ps + STORE_PAGE_SIZE <= off)
				continue;
			if (!(e.loc.mask & (1u << p)))
				return (int64_t)MAX(ps, off);
		}
	}
}

static int64_t chunk_file_seek(struct store_file *sf, uint64_t off, int whence)
{
	struct rfile *f = (struct rfile *)sf;
	uint64_t size = f->fileno < 0 ? f->snap->manifest_len : f->meta->size;

	if (off >= size)
		return err_set(-ENXIO, "offset %" PRIu64 " at or beyond the end (%" PRIu64 ")", off, size);
	if (whence != SEEK_DATA && whence != SEEK_HOLE)
		return -EINVAL;
	if (f->fileno < 0)
		return whence == SEEK_DATA ? (int64_t)off : (int64_t)size;
	return whence == SEEK_DATA ? seek_data(f, off, size) : seek_hole(f, off, size);
}

static int chunk_file_stat(struct store_file *sf, struct store_stat *ret)
{
	if (sf->writing) {
		struct wfile *f = (struct wfile *)sf;
		memset(ret, 0, sizeof(*ret));
		ret->size = f->size_set ? f->size : f->end;
		if (f->is_manifest)
			ret->size = f->snap->manifest_len;
		return 0;
	}
	struct rfile *f = (struct rfile *)sf;
	if (f->fileno < 0)
		manifest_stat(f->snap, ret);
	else
		file_stat_of(f->meta, ret);
	return 0;
}

static int chunk_file_close(struct store_file *sf)
{
	if (sf->writing)
		return chunk_file_close_w((struct wfile *)sf);
	struct rfile *f = (struct rfile *)sf;
	ra_close(f->ra); /* first: its threads read through f */
	for (unsigned i = 0; i < RSEG_SLOTS; i++)
		free(f->segs[i].ents);
	pthread_mutex_destroy(&f->lock);
	free(f);
	return 0;
}

static void chunk_snap_close(struct store_snap *s)
{
	if (s->writing) {
		chunk_snap_close_w((struct wsnap *)s);
		return;
	}
	struct rsnap *rs = (struct rsnap *)s;
	snaprec_clear(&rs->rec);
	free(rs->manifest);
	free(rs->name);
	free(rs);
}

/* ---- managing -------------------------------------------------------------- */

static int chunk_foreach_snap(struct store *s, const char *prefix,
			      int (*cb)(const struct store_snap_info *info, void *ud), void *ud)
{
	struct chunk_store *cs = to_cs(s);
	_cleanup_free_ uint8_t *pk = NULL;
	struct index_iter *it;
	const uint8_t *k, *v;
	size_t pkl, kl, vl;
	int r;

	r = snap_key(prefix ? prefix : "", &pk, &pkl);
	if (r < 0)
		return r;
	r = index_iter_new(cs->idx, pk, pkl, &it);
	if (r < 0)
		return r;
	while ((r = index_iter_next(it, &k, &kl, &v, &vl)) > 0) {
		struct snaprec rec;
		_cleanup_free_ char *name = strndup((const char *)k + 1, kl - 1);
		if (!name) {
			r = -ENOMEM;
			break;
		}
		r = snaprec_parse(v, vl, &rec);
		if (r < 0) {
			r = err_set(r, "snapshot '%s': damaged snapshot record in the index", name);
			break;
		}
		struct store_snap_info info = {
			.name = name, .created = rec.created, .size = rec.size, .allocated = rec.allocated,
			.stored = rec.stored, .files = rec.nfiles + 1 /* the manifest */,
		};
		snaprec_clear(&rec);
		r = cb(&info, ud);
		if (r)
			break;
	}
	index_iter_free(it);
	return r;
}

struct refcount {
	struct idset set;
};

static int count_cb(uint64_t block, const uint8_t id[STORE_HASH_LEN], void *ud)
{
	struct refcount *rc = ud;
	struct idset_ent *e;
	bool added;
	int r = idset_add(&rc->set, id, &e, &added);
	if (r < 0)
		return r;
	e->refs++;
	return 0;
}

static int chunk_snap_delete(struct store *s, const char *name)
{
	struct chunk_store *cs = to_cs(s);
	struct refcount rc = { 0 };
	struct snaprec rec = { 0 };
	struct index_batch *b = NULL;
	_cleanup_free_ uint8_t *skey = NULL;
	size_t skl;
	int r;

	if (cs->read_only)
		return err_set(-EROFS, "store %s is open read-only", cs->dir);
	r = snap_key(name, &skey, &skl);
	if (r < 0)
		return r;
	pthread_mutex_lock(&cs->commit_lock);
	r = load_snaprec(cs, name, &rec);
	if (r < 0)
		goto out;
	b = index_batch_new();
	if (!b) {
		r = -ENOMEM;
		goto out;
	}
	uint8_t from[RECIPE_KEY_LEN], to[RECIPE_KEY_LEN], mk[9], pk[9];
	void *pv;
	size_t pvl;
	pending_key(pk, rec.snapid);
	r = index_get(cs->idx, pk, sizeof(pk), &pv, &pvl);
	if (r == 0) {
		/* Its references were never counted: nothing to subtract. */
		free(pv);
		index_batch_delete(b, pk, sizeof(pk));
	} else if (r == -ENOENT) {
		r = recipe_foreach_snap(cs->idx, rec.snapid, count_cb, &rc);
		if (r < 0)
			goto out;
		for (size_t i = 0; i < rc.set.cap; i++)
			if (rc.set.e[i].used)
				index_batch_add_ref(b, rc.set.e[i].id, -(int64_t)rc.set.e[i].refs);
	} else {
		goto out;
	}
	recipe_key(from, rec.snapid, 0, 0);
	recipe_key(to, rec.snapid + 1, 0, 0);
	index_batch_delete_range(b, from, sizeof(from), to, sizeof(to));
	mk[0] = KEY_MANIFEST;
	be64_put(mk + 1, rec.snapid);
	index_batch_delete(b, mk, sizeof(mk));
	index_batch_delete(b, skey, skl);
	r = index_write(cs->idx, b, true);
	if (r >= 0)
		log_debug("snapshot '%s' deleted", name);
out:
	pthread_mutex_unlock(&cs->commit_lock);
	index_batch_free(b);
	idset_clear(&rc.set);
	snaprec_clear(&rec);
	return r;
}

/* ---- small records ---------------------------------------------------------- */

static int chunk_meta_put(struct store *s, const char *key, const void *buf, size_t len)
{
	struct chunk_store *cs = to_cs(s);
	_cleanup_free_ uint8_t *k = NULL;
	struct index_batch *b;
	size_t kl;
	int r;

	if (cs->read_only)
		return err_set(-EROFS, "store %s is open read-only", cs->dir);
	r = name_key(KEY_META, key, &k, &kl);
	if (r < 0)
		return r;
	b = index_batch_new();
	if (!b)
		return -ENOMEM;
	/* One synced write: RocksDB applies it whole or not at all. */
	index_batch_put(b, k, kl, buf, len);
	r = index_write(cs->idx, b, true);
	index_batch_free(b);
	return r < 0 ? err_set(r, "store %s: cannot write record '%s'", cs->dir, key) : 0;
}

static int chunk_meta_get(struct store *s, const char *key, char **ret, size_t *ret_len)
{
	struct chunk_store *cs = to_cs(s);
	_cleanup_free_ uint8_t *k = NULL;
	void *v = NULL;
	size_t kl, vl;
	char *out;
	int r;

	r = name_key(KEY_META, key, &k, &kl);
	if (r < 0)
		return r;
	r = index_get(cs->idx, k, kl, &v, &vl);
	if (r == -ENOENT)
		return err_set(r, "store %s: no record '%s'", cs->dir, key);
	if (r < 0)
		return r;
	out = malloc(vl + 1);
	if (!out) {
		free(v);
		return -ENOMEM;
	}
	memcpy(out, v, vl);
	out[vl] = 0;
	free(v);
	*ret = out;
	*ret_len = vl;
	return 0;
}

const struct store_ops store_chunk_ops = {
	.close = chunk_close,
	.snap_create = chunk_snap_create,
	.file_create = chunk_file_create,
	.file_pwrite = chunk_file_pwrite,
	.file_pwrite_blocks = chunk_file_pwrite_blocks,
	.file_set_size = chunk_file_set_size,
	.snap_commit = chunk_snap_commit,
	.snap_open = chunk_snap_open,
	.snap_foreach_file = chunk_snap_foreach_file,
	.snap_stat = chunk_snap_stat,
	.file_open = chunk_file_open,
	.file_pread = chunk_file_pread,
	.file_seek = chunk_file_seek,
	.file_stat = chunk_file_stat,
	.file_close = chunk_file_close,
	.snap_close = chunk_snap_close,
	.foreach_snap = chunk_foreach_snap,
	.snap_delete = chunk_snap_delete,
	.stats = chunk_stats,
	.gc = chunk_gc,
	.fsck = chunk_fsck,
	.meta_put = chunk_meta_put,
	.meta_get = chunk_meta_get,
};
