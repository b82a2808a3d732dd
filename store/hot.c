/*
 * The hot chunk cache: decoded blocks of the chunks that readers fetch
 * again and again. Deduplication makes one chunk stand for every copy of
 * a block (a page pattern repeated through a heap, the same text in many
 * buffers), and a reader of such a file meets that chunk's record at
 * every copy, far from the records around it: without the cache each
 * meeting is a read of its own from the disk (a 4 KiB O_DIRECT read for a
 * small record) and a decode. In the benchmark's 1 GiB snapshot, 10,800
 * of the 19,300 pack reads of a `cp -r` were 114 such records read again.
 *
 * A chunk is named by the SHA-256 of its bytes, so a cached block is
 * right for as long as the id exists: nothing here is ever invalidated,
 * not by gc moving the record, not by a snapshot being deleted.
 *
 * What gets in: a chunk read on its own or in a short run (HOT_RUN_MAX
 * records or fewer) is offered; it is kept from its second offer on, so
 * that data read once (most of any snapshot) passes by at the cost of one
 * tag compare and never evicts a hot block. A table of tags remembers
 * what was offered once.
 *
 * Memory: HOT_SETS sets of HOT_WAYS blocks, 16 MiB, allocated once and
 * touched only as blocks come in; the tags are 128 KiB.
 *
 * Locking: one mutex per set, held for the compare and the copy of one
 * block; taken inside a reader's file lock (chunk.c), never the other way.
 */
#include "store/chunk-int.h"

#define HOT_WAYS 4
#define HOT_SETS 256
#define HOT_SEEN 16384

struct hot_way {
	uint8_t id[STORE_HASH_LEN];
	uint32_t len; /* 0: empty */
	uint32_t used; /* the set's clock at the last hit: the least is evicted */
};

struct hot_set {
	pthread_mutex_t lock;
	uint32_t clock;
	struct hot_way w[HOT_WAYS];
};

struct hot {
	struct hot_set sets[HOT_SETS];
	uint8_t *data; /* HOT_SETS * HOT_WAYS blocks */
	_Atomic uint64_t seen[HOT_SEEN];
	atomic_uint_fast64_t hits, puts;
};

static uint64_t id_word(const uint8_t id[STORE_HASH_LEN], unsigned i)
{
	uint64_t v;
	memcpy(&v, id + 8 * i, sizeof(v));
	return v;
}

int hot_new(struct hot **ret)
{
	const char *e = getenv("CKPTFS_HOT_CACHE");
	struct hot *h;

	*ret = NULL;
	if (e && !strcmp(e, "0"))
		return 0;
	h = calloc(1, sizeof(*h));
	if (!h)
		return -ENOMEM;
	h->data = malloc((size_t)HOT_SETS * HOT_WAYS * STORE_BLOCK_SIZE);
	if (!h->data) {
		free(h);
		return -ENOMEM;
	}
	for (unsigned i = 0; i < HOT_SETS; i++)
		pthread_mutex_init(&h->sets[i].lock, NULL);
	*ret = h;
	return 0;
}

void hot_free(struct hot *h)
{
	if (!h)
		return;
	for (unsigned i = 0; i < HOT_SETS; i++)
		pthread_mutex_destroy(&h->sets[i].lock);
	free(h->data);
	free(h);
}

static struct hot_set *set_of(struct hot *h, const uint8_t id[STORE_HASH_LEN])
{
	return &h->sets[id_word(id, 0) % HOT_SETS];
}

static uint8_t *block_of(struct hot *h, const struct hot_set *s, unsigned way)
{
	return h->data + ((size_t)(s - h->sets) * HOT_WAYS + way) * STORE_BLOCK_SIZE;
}

bool hot_get(struct hot *h, const uint8_t id[STORE_HASH_LEN], uint32_t len, uint8_t *out)
{
	struct hot_set *s;

	if (!h)
		return false;
	s = set_of(h, id);
	pthread_mutex_lock(&s->lock);
	for (unsigned i = 0; i < HOT_WAYS; i++) {
		struct hot_way *w = &s->w[i];
		if (w->len == len && !memcmp(w->id, id, STORE_HASH_LEN)) {
			memcpy(out, block_of(h, s, i), len);
			w->used = ++s->clock;
			pthread_mutex_unlock(&s->lock);
			atomic_fetch_add_explicit(&h->hits, 1, memory_order_relaxed);
			return true;
		}
	}
	pthread_mutex_unlock(&s->lock);
	return false;
}

void hot_offer(struct hot *h, const uint8_t id[STORE_HASH_LEN], uint32_t len, const uint8_t *data)
{
	struct hot_set *s;
	struct hot_way *victim;
	uint64_t tag;

	if (!h || len == 0 || len > STORE_BLOCK_SIZE)
		return;
	/* The first offer only leaves a tag (never 0, the empty slot's). */
	tag = id_word(id, 2) | 1;
	if (atomic_exchange_explicit(&h->seen[id_word(id, 1) % HOT_SEEN], tag, memory_order_relaxed) != tag)
		return;
	s = set_of(h, id);
	pthread_mutex_lock(&s->lock);
	victim = &s->w[0];
	for (unsigned i = 0; i < HOT_WAYS; i++) {
		struct hot_way *w = &s->w[i];
		if (w->len == len && !memcmp(w->id, id, STORE_HASH_LEN)) {
			pthread_mutex_unlock(&s->lock);
			return; /* another reader put it meanwhile */
		}
		if (w->len == 0 || (victim->len && w->used < victim->used))
			victim = w;
	}
	memcpy(block_of(h, s, (unsigned)(victim - s->w)), data, len);
	memcpy(victim->id, id, STORE_HASH_LEN);
	victim->len = len;
	victim->used = ++s->clock;
	pthread_mutex_unlock(&s->lock);
	atomic_fetch_add_explicit(&h->puts, 1, memory_order_relaxed);
}

void hot_stats(const struct hot *h, uint64_t *hits, uint64_t *puts)
{
	*hits = h ? atomic_load(&h->hits) : 0;
	*puts = h ? atomic_load(&h->puts) : 0;
}
