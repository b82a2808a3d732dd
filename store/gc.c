/*
 * Garbage collection and statistics of the chunk store.
 *
 * gc runs with the store to itself (no writer in flight: a writer may
 * have decided to reuse a chunk whose count is 0 right now) and:
 *   1. frees chunks whose reference count is 0: their index entries go;
 *   2. counts each pack's live bytes (records the index points at); the
 *      rest of a pack is dead: freed chunks, duplicates of racing writers,
 *      bytes of writers that aborted or crashed;
 *   3. rewrites packs that are mostly dead: their live records are copied
 *      verbatim (checked) into a new pack, which is fsynced with packs/;
 *   4. writes one synced index batch: the freed chunks out, the moved
 *      chunks at their new places;
 *   5. unlinks packs with no live bytes left, and fsyncs packs/.
 * A crash before 4 leaves the old state plus an unreferenced new pack;
 * after 4, old packs that nothing points at: the next gc removes either.
 */
#include <inttypes.h>
#include <sys/stat.h>

#include "store/chunk-int.h"

struct pending_walk {
	struct chunk_ent *v;
	size_t n;
};

static int pending_cb(uint64_t block, const uint8_t id[STORE_HASH_LEN], void *ud)
{
	struct pending_walk *pw = ud;
	struct chunk_ent *e = chunks_find(pw->v, pw->n, id);
	(void)block;
	/* No location: fsck names the recipe entry; gc has nothing to keep. */
	if (e) {
		e->refs++;
		e->pending++;
	}
	return 0;
}

int chunks_load(struct chunk_store *cs, struct chunk_ent **ret, size_t *n)
{
	struct chunk_ent *v = NULL;
	size_t cnt = 0, cap = 0;
	struct index_iter *it = NULL;
	const uint8_t *k, *val;
	size_t kl, vl;
	int r;
	char pfx = KEY_CHUNK;

	r = index_iter_new(cs->idx, &pfx, 1, &it);
	if (r < 0)
		return r;
	while ((r = index_iter_next(it, &k, &kl, &val, &vl)) > 0) {
		if (kl != CHUNK_KEY_LEN)
			continue;
		if (cnt == cap) {
			cap = cap ? cap * 2 : 1024;
			struct chunk_ent *nv = realloc(v, cap * sizeof(*nv));
			if (!nv) {
				r = -ENOMEM;
				goto fail;
			}
			v = nv;
		}
		memset(&v[cnt], 0, sizeof(v[0]));
		memcpy(v[cnt].id, k + 1, STORE_HASH_LEN);
		if (vl == sizeof(struct chunk_loc)) {
			memcpy(&v[cnt].loc, val, vl);
			v[cnt].has_loc = true;
		}
		cnt++;
	}
	if (r < 0)
		goto fail;
	index_iter_free(it);
	it = NULL;

	/* Counts, in the same id order: a merge join. */
	size_t nloc = cnt, j = 0;
	pfx = KEY_REF;
	r = index_iter_new(cs->idx, &pfx, 1, &it);
	if (r < 0)
		goto fail;
	while ((r = index_iter_next(it, &k, &kl, &val, &vl)) > 0) {
		int64_t refs = 0;
		if (kl != CHUNK_KEY_LEN)
			continue;
		if (vl == sizeof(refs))
			memcpy(&refs, val, sizeof(refs));
		while (j < nloc && memcmp(v[j].id, k + 1, STORE_HASH_LEN) < 0)
			j++;
		if (j < nloc && !memcmp(v[j].id, k + 1, STORE_HASH_LEN)) {
			v[j].refs = refs;
			continue;
		}
		if (cnt == cap) {
			cap = cap ? cap * 2 : 1024;
			struct chunk_ent *nv = realloc(v, cap * sizeof(*nv));
			if (!nv) {
				r = -ENOMEM;
				goto fail;
			}
			v = nv;
		}
		memset(&v[cnt], 0, sizeof(v[0]));
		memcpy(v[cnt].id, k + 1, STORE_HASH_LEN);
		v[cnt].refs = refs;
		cnt++;
	}
	if (r < 0)
		goto fail;
	index_iter_free(it);
	it = NULL;

	/* Snapshots committed since the last gc: their uses count too. */
	struct pending_walk pw = { .v = v, .n = cnt };
	pfx = KEY_PENDING;
	r = index_iter_new(cs->idx, &pfx, 1, &it);
	if (r < 0)
		goto fail;
	while ((r = index_iter_next(it, &k, &kl, &val, &vl)) > 0) {
		if (kl != 9)
			continue;
		r = recipe_foreach_snap(cs->idx, be64_get(k + 1), pending_cb, &pw);
		if (r < 0)
			goto fail;
	}
	if (r < 0)
		goto fail;
	index_iter_free(it);
	*ret = v;
	*n = cnt;
	return 0;
fail:
	index_iter_free(it);
	free(v);
	return r;
}

struct chunk_ent *chunks_find(struct chunk_ent *v, size_t n, const uint8_t id[STORE_HASH_LEN])
{
	/* Entries with a location come first, sorted by id. */
	size_t lo = 0, hi = n;
	while (hi > lo && !v[hi - 1].has_loc)
		hi--;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		int c = memcmp(v[mid].id, id, STORE_HASH_LEN);
		if (!c)
			return &v[mid];
		if (c < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

struct pack_use {
	uint32_t id;
	uint64_t size, live;
	bool rewrite, remove;
};

static struct pack_use *find_pack(struct pack_use *p, size_t n, uint32_t id)
{
	size_t lo = 0, hi = n;
	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		if (p[mid].id == id)
			return &p[mid];
		if (p[mid].id < id)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

static int packs_load(struct chunk_store *cs, struct pack_use **ret, size_t *n)
{
	uint32_t *ids;
	size_t cnt;
	int r = pack_list(cs, &ids, &cnt);
	if (r < 0)
		return r;
	struct pack_use *p = calloc(cnt + 1, sizeof(*p));
	if (!p) {
		free(ids);
		return -ENOMEM;
	}
	for (size_t i = 0; i < cnt; i++) {
		char name[32];
		struct stat st;
		p[i].id = ids[i];
		pack_name(ids[i], name);
		if (fstatat(cs->packs_fd, name, &st, 0) == 0)
			p[i].size = (uint64_t)st.st_size;
	}
	free(ids);
	*ret = p;
	*n = cnt;
	return 0;
}

/* Deletes every 'p' key into b. */
static int pending_drop(struct chunk_store *cs, struct index_batch *b)
{
	struct index_iter *it;
	const uint8_t *k, *v;
	size_t kl, vl;
	char pfx = KEY_PENDING;
	int r = index_iter_new(cs->idx, &pfx, 1, &it);
	if (r < 0)
		return r;
	while ((r = index_iter_next(it, &k, &kl, &v, &vl)) > 0)
		index_batch_delete(b, k, kl);
	index_iter_free(it);
	return r;
}

int chunk_gc(struct store *s, struct store_gc_stats *ret)
{
	struct chunk_store *cs = to_cs(s);
	struct chunk_ent *ch = NULL;
	struct pack_use *pk = NULL;
	struct pack_writer *nw = NULL;
	struct index_batch *b = NULL;
	size_t nch = 0, npk = 0;
	uint64_t written = 0;
	uint32_t new_id = 0;
	int r;

	memset(ret, 0, sizeof(*ret));
	if (cs->read_only)
		return err_set(-EROFS, "store %s is open read-only", cs->dir);
	cs_exclusive_enter(cs);
	pthread_mutex_lock(&cs->commit_lock);
	/* Packs left open for appending are plain files from here on. */
	pack_pool_drain(cs);

	r = chunks_load(cs, &ch, &nch);
	if (r < 0)
		goto out;
	r = packs_load(cs, &pk, &npk);
	if (r < 0)
		goto out;
	b = index_batch_new();
	if (!b) {
		r = -ENOMEM;
		goto out;
	}

	/* The pending snapshots' uses become counts in the same batch. */
	r = pending_drop(cs, b);
	if (r < 0)
		goto out;

	/* 1, 2: free what nobody references, count what is live. */
	for (size_t i = 0; i < nch; i++) {
		uint8_t k[CHUNK_KEY_LEN];
		if (ch[i].pending > 0)
			index_batch_add_ref(b, ch[i].id, ch[i].pending);
		if (ch[i].refs > 0 && ch[i].has_loc) {
			struct pack_use *p = find_pack(pk, npk, ch[i].loc.pack);
			if (p)
				p->live += rec_size(&ch[i].loc);
			continue;
		}
		if (ch[i].refs > 0)
			continue; /* referenced but lost: fsck's business, not gc's */
		if (ch[i].has_loc) {
			chunk_key(k, KEY_CHUNK, ch[i].id);
			index_batch_delete(b, k, sizeof(k));
			ret->chunks_freed++;
		}
		chunk_key(k, KEY_REF, ch[i].id);
		index_batch_delete(b, k, sizeof(k));
	}
	for (size_t i = 0; i < npk; i++) {
		uint64_t dead = pk[i].size > PACK_HDR_SIZE ? pk[i].size - PACK_HDR_SIZE - MIN(pk[i].live, pk[i].size - PACK_HDR_SIZE) : 0;
		if (!pk[i].live)
			pk[i].remove = true;
		else if (dead && pk[i].live * 100 < (pk[i].size - PACK_HDR_SIZE) * CHUNK_GC_REWRITE_PCT)
			pk[i].rewrite = true;
	}

	/* 3: copy live records out of mostly dead packs. */
	for (size_t i = 0; i < nch; i++) {
		struct pack_use *p;
		struct rec_hdr h;
		uint8_t payload[STORE_BLOCK_SIZE];
		uint64_t off;
		uint8_t k[CHUNK_KEY_LEN];

		if (ch[i].refs <= 0 || !ch[i].has_loc)
			continue;
		p = find_pack(pk, npk, ch[i].loc.pack);
		if (!p || !p->rewrite)
			continue;
		if (!nw) {
			r = pack_writer_new(cs, &nw);
			if (r < 0)
				goto out;
			new_id = pack_writer_id(nw);
		}
		r = pack_read_record(cs, &ch[i].loc, ch[i].id, &h, payload);
		if (r == -ESTALE || r == -ENOENT) {
			char hex[2 * STORE_HASH_LEN + 1];
			store_hash_hex(ch[i].id, hex);
			r = err_set(-EIO, "chunk %s: not where the index says (pack %08x); run fsck", hex,
				    ch[i].loc.pack);
		}
		if (r < 0)
			goto out;
		r = pack_append(nw, &h, payload, &off);
		if (r < 0)
			goto out;
		ch[i].loc.pack = new_id;
		ch[i].loc.offset = off;
		chunk_key(k, KEY_CHUNK, ch[i].id);
		index_batch_put(b, k, sizeof(k), &ch[i].loc, sizeof(ch[i].loc));
	}
	if (nw) {
		written = pack_writer_size(nw);
		r = pack_writer_close(nw);
		nw = NULL;
		if (r < 0)
			goto out;
		r = pack_sync(cs, new_id);
		if (r < 0)
			goto out;
		if (fsync(cs->packs_fd) < 0) {
			r = err_set(negerrno(), "%s/packs: fsync: %m", cs->dir);
			goto out;
		}
		if (fault_hit(FAULT_STORE_GC_CRASH)) {
			log_debug("fault injected: crash in gc before the index switch");
			_exit(99);
		}
	}

	/* 4: the switch. */
	if (index_batch_count(b)) {
		r = index_write(cs->idx, b, true);
		/* Cached locations may be gone or moved now. */
		index_known_clear(cs->idx);
		if (r < 0)
			goto out;
	}

	/* 5: packs nothing points at any more. */
	bool unlinked = false;
	for (size_t i = 0; i < npk; i++) {
		char name[32];
		if (!pk[i].remove && !pk[i].rewrite)
			continue;
		pack_name(pk[i].id, name);
		pack_fd_forget(cs, pk[i].id);
		if (unlinkat(cs->packs_fd, name, 0) < 0) {
			r = err_set(negerrno(), "pack %s: cannot remove: %m", name);
			goto out;
		}
		unlinked = true;
		ret->bytes_freed += pk[i].size;
		if (pk[i].rewrite)
			ret->packs_rewritten++;
		else
			ret->packs_deleted++;
	}
	if (unlinked && fsync(cs->packs_fd) < 0) {
		r = err_set(negerrno(), "%s/packs: fsync: %m", cs->dir);
		goto out;
	}
	ret->bytes_freed = ret->bytes_freed > written ? ret->bytes_freed - written : 0;
	log_debug("gc: %" PRIu64 " chunks freed, %" PRIu64 " packs deleted, %" PRIu64 " rewritten",
		  ret->chunks_freed, ret->packs_deleted, ret->packs_rewritten);
	r = 0;
out:
	if (nw)
		pack_writer_close(nw);
	index_batch_free(b);
	free(ch);
	free(pk);
	pthread_mutex_unlock(&cs->commit_lock);
	cs_exclusive_leave(cs);
	return r;
}

int chunk_stats(struct store *s, struct store_stats *ret)
{
	struct chunk_store *cs = to_cs(s);
	struct chunk_ent *ch = NULL;
	struct pack_use *pk = NULL;
	struct index_iter *it;
	const uint8_t *k, *v;
	size_t nch, npk, kl, vl;
	char pfx = KEY_SNAP;
	int r;

	memset(ret, 0, sizeof(*ret));
	r = index_iter_new(cs->idx, &pfx, 1, &it);
	if (r < 0)
		return r;
	while ((r = index_iter_next(it, &k, &kl, &v, &vl)) > 0)
		ret->snapshots++;
	index_iter_free(it);
	if (r < 0)
		return r;
	r = chunks_load(cs, &ch, &nch);
	if (r < 0)
		return r;
	for (size_t i = 0; i < nch; i++) {
		if (!ch[i].has_loc || ch[i].refs <= 0)
			continue;
		ret->chunks++;
		ret->chunk_bytes += ch[i].loc.raw_len;
		ret->stored_bytes += rec_size(&ch[i].loc);
	}
	free(ch);
	r = packs_load(cs, &pk, &npk);
	if (r < 0)
		return r;
	for (size_t i = 0; i < npk; i++)
		ret->pack_bytes += pk[i].size;
	ret->packs = npk;
	free(pk);
	return 0;
}
