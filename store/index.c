/*
 * The chunk store's index: RocksDB through its C API, and an in-memory
 * set of chunk ids that writers use to avoid asking RocksDB twice.
 *
 * RocksDB errors come back as strings; they are turned into -EIO (or
 * -EBUSY for a lock held elsewhere) with the string as the detail, here,
 * once. Reference counts are int64 values under 'r' keys, changed only by
 * the "add" merge operator below: a commit adds without reading, so
 * committing a snapshot that reuses a million chunks costs a million
 * small writes and no reads.
 */
#include <rocksdb/c.h>

#include "store/chunk-int.h"

struct index {
	rocksdb_t *db;
	rocksdb_options_t *opts;
	rocksdb_block_based_table_options_t *topts;
	rocksdb_cache_t *cache;
	rocksdb_filterpolicy_t *filter; /* owned by topts once set */
	rocksdb_mergeoperator_t *merge; /* owned by opts once set */
	rocksdb_readoptions_t *ropts;
	rocksdb_writeoptions_t *wsync, *wnosync;

	pthread_rwlock_t known_lock;
	struct known_ent *known; /* KNOWN_SETS * KNOWN_WAYS; NULL until the first put */
};

/* A chunk id and where the index says it is; loc.raw_len 0: empty. */
struct known_ent {
	uint8_t id[STORE_HASH_LEN];
	struct chunk_loc loc;
};
#define KNOWN_SETS (1u << 17)
#define KNOWN_WAYS 2

struct index_batch {
	rocksdb_writebatch_t *wb;
};

struct index_iter {
	rocksdb_iterator_t *it;
	uint8_t *prefix;
	size_t plen;
	uint8_t *start; /* first key to seek to; NULL: the prefix */
	size_t slen;
	bool started;
};

static int rerr(char *e, const char *what)
{
	int r = -EIO;
	if (strstr(e, "lock") || strstr(e, "Resource temporarily unavailable"))
		r = -EBUSY;
	err_set(r, "index: %s: %s", what, e);
	rocksdb_free(e);
	return r;
}

/* ---- the "add" merge operator ---------------------------------------- */

static int64_t get_i64(const char *p, size_t len)
{
	int64_t v = 0;
	if (len == sizeof(v))
		memcpy(&v, p, sizeof(v));
	return v;
}

static char *merge_full(void *st, const char *key, size_t klen, const char *existing, size_t elen,
			const char *const *ops, const size_t *oplens, int nops, unsigned char *ok, size_t *rlen)
{
	int64_t sum = existing ? get_i64(existing, elen) : 0;
	for (int i = 0; i < nops; i++)
		sum += get_i64(ops[i], oplens[i]);
	char *out = malloc(sizeof(sum));
	if (!out) {
		*ok = 0;
		return NULL;
	}
	memcpy(out, &sum, sizeof(sum));
	*rlen = sizeof(sum);
	*ok = 1;
	return out;
}

static char *merge_partial(void *st, const char *key, size_t klen, const char *const *ops, const size_t *oplens,
			   int nops, unsigned char *ok, size_t *rlen)
{
	return merge_full(st, key, klen, NULL, 0, ops, oplens, nops, ok, rlen);
}

static void merge_delete(void *st, const char *v, size_t len)
{
	free((void *)v);
}

static const char *merge_name(void *st)
{
	return "ckptfs.add64";
}

static void merge_destroy(void *st)
{
}

/* ---- open / close -------------------------------------------------------- */

int index_open(const char *path, bool read_only, struct index **ret)
{
	struct index *x = calloc(1, sizeof(*x));
	char *e = NULL;
	int r;

	if (!x)
		return -ENOMEM;
	pthread_rwlock_init(&x->known_lock, NULL);
	x->opts = rocksdb_options_create();
	rocksdb_options_set_create_if_missing(x->opts, !read_only);
	rocksdb_options_set_paranoid_checks(x->opts, 1);
	rocksdb_options_set_info_log_level(x->opts, 3 /* error */);
	rocksdb_options_set_keep_log_file_num(x->opts, 2);
	rocksdb_options_set_max_background_jobs(x->opts, 2);
	rocksdb_options_set_max_open_files(x->opts, 256);
	/* Keys and values are hashes and offsets: compressing them wastes CPU. */
	rocksdb_options_set_compression(x->opts, rocksdb_no_compression);
	x->merge = rocksdb_mergeoperator_create(NULL, merge_destroy, merge_full, merge_partial, merge_delete,
						merge_name);
	rocksdb_options_set_merge_operator(x->opts, x->merge);
	x->topts = rocksdb_block_based_options_create();
	/* A dedup lookup of a chunk the store lacks must not touch the disk. */
	x->filter = rocksdb_filterpolicy_create_bloom_full(10);
	rocksdb_block_based_options_set_filter_policy(x->topts, x->filter);
	x->cache = rocksdb_cache_create_lru(64 << 20);
	rocksdb_block_based_options_set_block_cache(x->topts, x->cache);
	rocksdb_options_set_block_based_table_factory(x->opts, x->topts);
	x->ropts = rocksdb_readoptions_create();
	x->wsync = rocksdb_writeoptions_create();
	rocksdb_writeoptions_set_sync(x->wsync, 1);
	x->wnosync = rocksdb_writeoptions_create();

	if (read_only)
		x->db = rocksdb_open_for_read_only(x->opts, path, 0, &e);
	else
		x->db = rocksdb_open(x->opts, path, &e);
	if (e) {
		r = rerr(e, path);
		index_close(x);
		return r;
	}
	*ret = x;
	return 0;
}

void index_close(struct index *x)
{
	if (!x)
		return;
	if (x->db)
		rocksdb_close(x->db);
	if (x->ropts)
		rocksdb_readoptions_destroy(x->ropts);
	if (x->wsync)
		rocksdb_writeoptions_destroy(x->wsync);
	if (x->wnosync)
		rocksdb_writeoptions_destroy(x->wnosync);
	if (x->opts)
		rocksdb_options_destroy(x->opts); /* and the merge operator */
	if (x->topts)
		rocksdb_block_based_options_destroy(x->topts); /* and the filter */
	if (x->cache)
		rocksdb_cache_destroy(x->cache);
	free(x->known);
	pthread_rwlock_destroy(&x->known_lock);
	free(x);
}

/* ---- reads ----------------------------------------------------------------- */

int index_get(struct index *x, const void *key, size_t klen, void **ret, size_t *ret_len)
{
	char *e = NULL, *v;
	size_t vl = 0;
	void *out;

	v = rocksdb_get(x->db, x->ropts, key, klen, &vl, &e);
	if (e)
		return rerr(e, "get");
	if (!v)
		return -ENOENT;
	/* rocksdb_free and free are the same allocator on Linux, but copy so
	 * that callers need not know. One extra byte keeps text NUL-ended. */
	out = malloc(vl + 1);
	if (!out) {
		rocksdb_free(v);
		return -ENOMEM;
	}
	memcpy(out, v, vl);
	((char *)out)[vl] = 0;
	rocksdb_free(v);
	*ret = out;
	*ret_len = vl;
	return 0;
}

int index_get_locs(struct index *x, size_t n, const uint8_t (*ids)[STORE_HASH_LEN], struct chunk_loc *locs,
		   bool *found)
{
	enum { BATCH = 256 };
	uint8_t keys[BATCH][CHUNK_KEY_LEN];
	const char *kp[BATCH];
	size_t kl[BATCH], vl[BATCH];
	char *vals[BATCH], *errs[BATCH];
	int r = 0;

	for (size_t base = 0; base < n; base += BATCH) {
		size_t m = MIN((size_t)BATCH, n - base);
		for (size_t i = 0; i < m; i++) {
			chunk_key(keys[i], KEY_CHUNK, ids[base + i]);
			kp[i] = (const char *)keys[i];
			kl[i] = CHUNK_KEY_LEN;
		}
		rocksdb_multi_get(x->db, x->ropts, m, kp, kl, vals, vl, errs);
		for (size_t i = 0; i < m; i++) {
			found[base + i] = false;
			if (errs[i]) {
				if (!r)
					r = rerr(errs[i], "multi-get");
				else
					rocksdb_free(errs[i]);
			} else if (vals[i]) {
				if (vl[i] == sizeof(struct chunk_loc)) {
					memcpy(&locs[base + i], vals[i], sizeof(struct chunk_loc));
					found[base + i] = true;
				} else if (!r) {
					char hex[2 * STORE_HASH_LEN + 1];
					store_hash_hex(ids[base + i], hex);
					r = err_set(-EIO, "index: chunk %s: location record of %zu bytes", hex, vl[i]);
				}
			}
			if (vals[i])
				rocksdb_free(vals[i]);
		}
		if (r)
			return r;
	}
	return 0;
}

/* ---- chunks known to be in the index -----------------------------------------
 * Writing data the store already has costs a lookup per block, and a
 * RocksDB lookup of a key still in the memtable (a skip list) is about a
 * microsecond: a fifth of the CPU of ingesting the same GiB again. So the
 * index keeps a cache of id -> location for chunks it has: two ways per
 * set, the set picked by the id's first bytes, a full set dropping its
 * older entry; 128k sets make 15 MiB, allocated at the first use. Commits
 * put the locations they wrote, lookups the ones they found. Only gc moves
 * or frees chunks, and it empties the cache after its batch, before any
 * pack goes; a commit never replaces a location. */

static struct known_ent *known_set(struct index *x, const uint8_t id[STORE_HASH_LEN])
{
	uint64_t h;
	memcpy(&h, id, sizeof(h));
	return &x->known[(h & (KNOWN_SETS - 1)) * KNOWN_WAYS];
}

/* known_lock held for writing. */
static void known_put_locked(struct index *x, const uint8_t id[STORE_HASH_LEN], const struct chunk_loc *loc)
{
	struct known_ent *e = known_set(x, id);
	size_t w = 0;
	for (; w < KNOWN_WAYS; w++)
		if (!e[w].loc.raw_len || !memcmp(e[w].id, id, STORE_HASH_LEN))
			break;
	if (w == KNOWN_WAYS) {
		memmove(&e[1], &e[0], (KNOWN_WAYS - 1) * sizeof(*e));
		w = 0;
	}
	memcpy(e[w].id, id, STORE_HASH_LEN);
	e[w].loc = *loc;
}

void index_known_put(struct index *x, size_t n, const uint8_t (*ids)[STORE_HASH_LEN], const struct chunk_loc *locs,
		     const bool *skip)
{
	pthread_rwlock_wrlock(&x->known_lock);
	if (!x->known)
		x->known = calloc((size_t)KNOWN_SETS * KNOWN_WAYS, sizeof(*x->known));
	for (size_t i = 0; x->known && i < n; i++)
		if (!(skip && skip[i]) && locs[i].raw_len)
			known_put_locked(x, ids[i], &locs[i]);
	pthread_rwlock_unlock(&x->known_lock);
}

void index_known_clear(struct index *x)
{
	pthread_rwlock_wrlock(&x->known_lock);
	free(x->known);
	x->known = NULL;
	pthread_rwlock_unlock(&x->known_lock);
}

int index_find_chunks(struct index *x, size_t n, const uint8_t (*ids)[STORE_HASH_LEN], struct chunk_loc *locs,
		      bool *found)
{
	enum { BATCH = 256 };
	uint8_t miss_ids[BATCH][STORE_HASH_LEN];
	struct chunk_loc miss_locs[BATCH];
	bool miss_found[BATCH], miss_skip[BATCH];
	size_t miss_at[BATCH];
	int r;

	for (size_t base = 0; base < n; base += BATCH) {
		size_t m = MIN((size_t)BATCH, n - base), nm = 0;
		pthread_rwlock_rdlock(&x->known_lock);
		for (size_t i = base; i < base + m; i++) {
			found[i] = false;
			if (x->known) {
				const struct known_ent *e = known_set(x, ids[i]);
				for (size_t w = 0; w < KNOWN_WAYS; w++)
					if (e[w].loc.raw_len && !memcmp(e[w].id, ids[i], STORE_HASH_LEN)) {
						locs[i] = e[w].loc;
						found[i] = true;
						break;
					}
			}
			if (!found[i]) {
				memcpy(miss_ids[nm], ids[i], STORE_HASH_LEN);
				miss_at[nm++] = i;
			}
		}
		pthread_rwlock_unlock(&x->known_lock);
		if (!nm)
			continue;
		r = index_get_locs(x, nm, (const uint8_t(*)[STORE_HASH_LEN])miss_ids, miss_locs, miss_found);
		if (r < 0)
			return r;
		for (size_t j = 0; j < nm; j++) {
			found[miss_at[j]] = miss_found[j];
			miss_skip[j] = !miss_found[j];
			if (miss_found[j])
				locs[miss_at[j]] = miss_locs[j];
		}
		index_known_put(x, nm, (const uint8_t(*)[STORE_HASH_LEN])miss_ids, miss_locs, miss_skip);
	}
	return 0;
}

/* ---- batches ------------------------------------------------------------- */

struct index_batch *index_batch_new(void)
{
	struct index_batch *b = malloc(sizeof(*b));
	if (!b)
		return NULL;
	b->wb = rocksdb_writebatch_create();
	return b;
}

void index_batch_free(struct index_batch *b)
{
	if (!b)
		return;
	rocksdb_writebatch_destroy(b->wb);
	free(b);
}

void index_batch_put(struct index_batch *b, const void *k, size_t kl, const void *v, size_t vl)
{
	rocksdb_writebatch_put(b->wb, k, kl, v, vl);
}

void index_batch_delete(struct index_batch *b, const void *k, size_t kl)
{
	rocksdb_writebatch_delete(b->wb, k, kl);
}

void index_batch_delete_range(struct index_batch *b, const void *from, size_t fl, const void *to, size_t tl)
{
	rocksdb_writebatch_delete_range(b->wb, from, fl, to, tl);
}

void index_batch_add_ref(struct index_batch *b, const uint8_t id[STORE_HASH_LEN], int64_t delta)
{
	uint8_t k[CHUNK_KEY_LEN];
	chunk_key(k, KEY_REF, id);
	rocksdb_writebatch_merge(b->wb, (const char *)k, sizeof(k), (const char *)&delta, sizeof(delta));
}

size_t index_batch_count(struct index_batch *b)
{
	return (size_t)rocksdb_writebatch_count(b->wb);
}

int index_write(struct index *x, struct index_batch *b, bool sync)
{
	char *e = NULL;
	rocksdb_write(x->db, sync ? x->wsync : x->wnosync, b->wb, &e);
	if (e)
		return rerr(e, "write");
	return 0;
}

/* ---- iterators ----------------------------------------------------------- */

int index_iter_new_at(struct index *x, const void *prefix, size_t plen, const void *start, size_t slen,
		      struct index_iter **ret)
{
	int r = index_iter_new(x, prefix, plen, ret);
	if (r < 0)
		return r;
	(*ret)->start = malloc(slen ? slen : 1);
	if (!(*ret)->start) {
		index_iter_free(*ret);
		return -ENOMEM;
	}
	memcpy((*ret)->start, start, slen);
	(*ret)->slen = slen;
	return 0;
}

int index_iter_new(struct index *x, const void *prefix, size_t plen, struct index_iter **ret)
{
	struct index_iter *it = calloc(1, sizeof(*it));
	if (!it)
		return -ENOMEM;
	it->prefix = malloc(plen ? plen : 1);
	if (!it->prefix) {
		free(it);
		return -ENOMEM;
	}
	memcpy(it->prefix, prefix, plen);
	it->plen = plen;
	it->it = rocksdb_create_iterator(x->db, x->ropts);
	*ret = it;
	return 0;
}

int index_iter_next(struct index_iter *it, const uint8_t **k, size_t *kl, const uint8_t **v, size_t *vl)
{
	char *e = NULL;

	if (!it->started) {
		if (it->start)
			rocksdb_iter_seek(it->it, (const char *)it->start, it->slen);
		else
			rocksdb_iter_seek(it->it, (const char *)it->prefix, it->plen);
		it->started = true;
	} else {
		rocksdb_iter_next(it->it);
	}
	if (!rocksdb_iter_valid(it->it)) {
		rocksdb_iter_get_error(it->it, &e);
		if (e)
			return rerr(e, "iterate");
		return 0;
	}
	*k = (const uint8_t *)rocksdb_iter_key(it->it, kl);
	if (*kl < it->plen || memcmp(*k, it->prefix, it->plen))
		return 0;
	*v = (const uint8_t *)rocksdb_iter_value(it->it, vl);
	return 1;
}

void index_iter_free(struct index_iter *it)
{
	if (!it)
		return;
	rocksdb_iter_destroy(it->it);
	free(it->prefix);
	free(it->start);
	free(it);
}

/* ---- idset: open addressing on the id's first 8 bytes ----------------------
 * Ids are SHA-256 digests, uniformly spread, so their first bytes are as
 * good a hash as any; an attacker who controls memory contents still
 * cannot aim at slots without breaking SHA-256 preimages. */

static size_t slot_of(const uint8_t id[STORE_HASH_LEN], size_t cap)
{
	uint64_t h;
	memcpy(&h, id, sizeof(h));
	return (size_t)h & (cap - 1);
}

struct idset_ent *idset_find(struct idset *s, const uint8_t id[STORE_HASH_LEN])
{
	if (!s->cap)
		return NULL;
	for (size_t i = slot_of(id, s->cap);; i = (i + 1) & (s->cap - 1)) {
		struct idset_ent *e = &s->e[i];
		if (!e->used)
			return NULL;
		if (!memcmp(e->id, id, STORE_HASH_LEN))
			return e;
	}
}

static int grow(struct idset *s)
{
	size_t cap = s->cap ? s->cap * 2 : 1024;
	struct idset_ent *n = calloc(cap, sizeof(*n));
	if (!n)
		return -ENOMEM;
	for (size_t j = 0; j < s->cap; j++) {
		if (!s->e[j].used)
			continue;
		size_t i = slot_of(s->e[j].id, cap);
		while (n[i].used)
			i = (i + 1) & (cap - 1);
		n[i] = s->e[j];
	}
	free(s->e);
	s->e = n;
	s->cap = cap;
	return 0;
}

int idset_add(struct idset *s, const uint8_t id[STORE_HASH_LEN], struct idset_ent **ret, bool *added)
{
	struct idset_ent *e = idset_find(s, id);
	if (e) {
		*ret = e;
		*added = false;
		return 0;
	}
	/* Up to 3/4 full: ids are uniform, so linear probes stay short. */
	if ((s->n + 1) * 4 > s->cap * 3) {
		int r = grow(s);
		if (r < 0)
			return r;
	}
	size_t i = slot_of(id, s->cap);
	while (s->e[i].used)
		i = (i + 1) & (s->cap - 1);
	e = &s->e[i];
	memset(e, 0, sizeof(*e));
	memcpy(e->id, id, STORE_HASH_LEN);
	e->used = true;
	s->n++;
	*ret = e;
	*added = true;
	return 0;
}

void idset_clear(struct idset *s)
{
	free(s->e);
	s->e = NULL;
	s->cap = s->n = 0;
}
