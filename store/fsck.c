/*
 * fsck of the chunk store: re-reads everything and names what is wrong.
 *
 *  - every chunk the index knows: its record is where the index says, its
 *    checksum holds, it decodes, and its bytes hash to its id;
 *  - every snapshot: its record parses, its manifest agrees with it, every
 *    block of every file names a chunk the index has, the chunk has the
 *    length the block must have, and the file hash recomputed from the
 *    chunk ids is the one recorded;
 *  - every reference count equals the number of recipe entries using it.
 *
 * Runs with the store to itself, like gc, so that counts are not caught
 * half way through a commit. Bytes in packs that nothing references are
 * not problems: they are what a crashed or aborted writer leaves, and gc
 * takes them back.
 */
#include <inttypes.h>

#include "store/chunk-int.h"

struct fsck {
	struct chunk_store *cs;
	void (*report)(const char *object, const char *problem, void *ud);
	void *ud;
	int problems;
	struct chunk_ent *ch;
	size_t nch;
	uint64_t *uses; /* per ch entry: recipe entries seen */
	bool *bad;      /* per ch entry: already reported damaged */
};

static void problem(struct fsck *k, const char *object, const char *fmt, ...) _printf_(3, 4);
static void problem(struct fsck *k, const char *object, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	k->problems++;
	k->report(object, msg, k->ud);
}

static void check_chunks(struct fsck *k)
{
	uint8_t out[STORE_BLOCK_SIZE], h[STORE_HASH_LEN];
	char obj[128], hex[2 * STORE_HASH_LEN + 1], name[32];

	for (size_t i = 0; i < k->nch; i++) {
		struct chunk_ent *c = &k->ch[i];
		if (!c->has_loc)
			continue;
		store_hash_hex(c->id, hex);
		snprintf(obj, sizeof(obj), "chunk %s", hex);
		pack_name(c->loc.pack, name);
		err_clear();
		int r = pack_read_chunk(k->cs, &c->loc, c->id, out);
		if (r == -ENOENT) {
			problem(k, obj, "pack %s is missing", name);
		} else if (r == -ESTALE) {
			problem(k, obj, "pack %s offset %" PRIu64 " holds another chunk", name, c->loc.offset);
		} else if (r < 0) {
			problem(k, obj, "%s", *err_msg() ? err_msg() : strerror(-r));
		} else {
			hash_leaf(out, c->loc.raw_len, h);
			if (memcmp(h, c->id, STORE_HASH_LEN)) {
				problem(k, obj, "pack %s offset %" PRIu64 ": content does not hash to the chunk's id", name,
					c->loc.offset);
				r = -EIO;
			}
		}
		if (r < 0)
			k->bad[i] = true;
	}
}

struct file_walk {
	struct fsck *k;
	const char *snap;
	const struct snaprec_file *f;
	struct leaf_set *leaves;
	uint64_t last_block;
	bool any;
	int reported;
};

static int walk_cb(uint64_t block, const uint8_t id[STORE_HASH_LEN], void *ud)
{
	struct file_walk *w = ud;
	char obj[1400], hex[2 * STORE_HASH_LEN + 1];
	uint64_t start = block * STORE_BLOCK_SIZE;

	snprintf(obj, sizeof(obj), "snapshot '%s' file '%s'", w->snap, w->f->path);
	if (w->any && block <= w->last_block) {
		problem(w->k, obj, "recipe out of order at block %" PRIu64, block);
		return 0;
	}
	w->any = true;
	w->last_block = block;
	if (start >= w->f->size) {
		problem(w->k, obj, "block %" PRIu64 " beyond the file's size %" PRIu64, block, w->f->size);
		return 0;
	}
	int r = leaf_set_put(w->leaves, block, id);
	if (r < 0)
		return r;
	struct chunk_ent *c = chunks_find(w->k->ch, w->k->nch, id);
	if (!c) {
		store_hash_hex(id, hex);
		/* Many blocks of a file may lack chunks; name the first few. */
		if (w->reported++ < 8)
			problem(w->k, obj, "offset %" PRIu64 ": chunk %s is missing from the store", start, hex);
		else
			w->k->problems++;
		return 0;
	}
	w->k->uses[c - w->k->ch]++;
	if (c->loc.raw_len != MIN((uint64_t)STORE_BLOCK_SIZE, w->f->size - start)) {
		store_hash_hex(id, hex);
		problem(w->k, obj, "offset %" PRIu64 ": chunk %s is %u bytes, the block %" PRIu64, start, hex,
			c->loc.raw_len, MIN((uint64_t)STORE_BLOCK_SIZE, w->f->size - start));
	}
	return 0;
}

static int check_snapshot(struct fsck *k, const char *name, const uint8_t *v, size_t vl)
{
	struct snaprec rec;
	char obj[300];
	int r;

	snprintf(obj, sizeof(obj), "snapshot '%s'", name);
	r = snaprec_parse(v, vl, &rec);
	if (r < 0) {
		problem(k, obj, "snapshot record does not parse");
		return r == -ENOMEM ? r : 0;
	}
	/* The manifest must say what the record says. */
	{
		uint8_t mk[9];
		void *mt;
		size_t ml;
		mk[0] = KEY_MANIFEST;
		be64_put(mk + 1, rec.snapid);
		r = index_get(k->cs->idx, mk, sizeof(mk), &mt, &ml);
		if (r == -ENOENT) {
			problem(k, obj, "manifest missing");
		} else if (r < 0) {
			goto out;
		} else {
			struct manifest m = { 0 };
			if (manifest_parse(mt, ml, &m) < 0) {
				problem(k, obj, "manifest does not parse: %s", err_msg());
			} else if (m.nfiles != rec.nfiles) {
				problem(k, obj, "manifest lists %zu files, the snapshot has %u", m.nfiles, rec.nfiles);
			} else {
				for (uint32_t i = 0; i < rec.nfiles; i++) {
					const struct manifest_entry *e = manifest_find(&m, rec.files[i].path);
					if (!e || e->size != rec.files[i].size ||
					    memcmp(e->hash, rec.files[i].hash, STORE_HASH_LEN)) {
						problem(k, obj, "manifest disagrees about '%s'", rec.files[i].path);
						break;
					}
				}
			}
			manifest_clear(&m);
			free(mt);
		}
	}
	for (uint32_t i = 0; i < rec.nfiles; i++) {
		struct file_walk w = { .k = k, .snap = name, .f = &rec.files[i] };
		uint8_t h[STORE_HASH_LEN];
		char fobj[1400];

		snprintf(fobj, sizeof(fobj), "snapshot '%s' file '%s'", name, rec.files[i].path);
		r = leaf_set_new(&w.leaves);
		if (r < 0)
			goto out;
		r = recipe_foreach(k->cs->idx, rec.snapid, i, walk_cb, &w);
		if (r == -EBADMSG) {
			problem(k, fobj, "%s", err_msg());
			r = 0;
		} else if (r == 0 && !w.reported) {
			r = leaf_set_final(w.leaves, rec.files[i].size, h);
			if (r == 0 && memcmp(h, rec.files[i].hash, STORE_HASH_LEN))
				problem(k, fobj, "its chunks do not make the file hash recorded");
		}
		leaf_set_free(w.leaves);
		if (r < 0)
			goto out;
	}
	r = 0;
out:
	snaprec_clear(&rec);
	return r;
}

int chunk_fsck(struct store *s, void (*report)(const char *object, const char *problem, void *ud), void *ud)
{
	struct chunk_store *cs = to_cs(s);
	struct fsck k = { .cs = cs, .report = report, .ud = ud };
	struct index_iter *it = NULL;
	const uint8_t *key, *v;
	size_t kl, vl;
	char pfx = KEY_SNAP, obj[128], hex[2 * STORE_HASH_LEN + 1];
	int r;

	/* No writer, no delete: counts and recipes are read as of one moment. */
	cs_exclusive_enter(cs);
	pthread_mutex_lock(&cs->commit_lock);
	r = chunks_load(cs, &k.ch, &k.nch);
	if (r < 0)
		goto out;
	k.uses = calloc(k.nch + 1, sizeof(*k.uses));
	k.bad = calloc(k.nch + 1, sizeof(*k.bad));
	if (!k.uses || !k.bad) {
		r = -ENOMEM;
		goto out;
	}
	check_chunks(&k);

	r = index_iter_new(cs->idx, &pfx, 1, &it);
	if (r < 0)
		goto out;
	while ((r = index_iter_next(it, &key, &kl, &v, &vl)) > 0) {
		_cleanup_free_ char *name = strndup((const char *)key + 1, kl - 1);
		if (!name) {
			r = -ENOMEM;
			goto out;
		}
		r = check_snapshot(&k, name, v, vl);
		if (r < 0)
			goto out;
	}
	if (r < 0)
		goto out;

	for (size_t i = 0; i < k.nch; i++) {
		struct chunk_ent *c = &k.ch[i];
		store_hash_hex(c->id, hex);
		snprintf(obj, sizeof(obj), "chunk %s", hex);
		if (!c->has_loc) {
			if (c->refs != 0)
				problem(&k, obj, "reference count %" PRId64 " but no location", c->refs);
			continue;
		}
		/* A count above the uses only keeps bytes alive; below, gc
		 * would free a chunk still in use: both are reported. */
		if (c->refs >= 0 && (uint64_t)c->refs != k.uses[i])
			problem(&k, obj, "reference count %" PRId64 ", recipes use it %" PRIu64 " times", c->refs,
				k.uses[i]);
		else if (c->refs < 0)
			problem(&k, obj, "negative reference count %" PRId64, c->refs);
	}
	r = k.problems;
out:
	index_iter_free(it);
	free(k.ch);
	free(k.uses);
	free(k.bad);
	pthread_mutex_unlock(&cs->commit_lock);
	cs_exclusive_leave(cs);
	return r;
}
