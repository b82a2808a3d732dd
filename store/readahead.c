/*
 * Read-ahead for chunk store readers: while a reader reads a file
 * sequentially, the next few MiB are read from the packs and decoded
 * (record checksums and every check of the direct path) by a small pool
 * of store threads, several units in flight at once, so that the caller
 * finds its bytes ready instead of waiting for the disk on every call.
 *
 * A file is cut into units of RA_UNIT bytes. A reader that reads where
 * its previous read ended (or near it: FUSE requests arrive a little out
 * of order) gets the units from its read on to RA_AHEAD past its end
 * queued, one slot each; a worker takes a queued slot, reads the unit
 * with the reader's own direct read into the slot's buffer, and marks it
 * ready or failed. The caller copies ready bytes, waits for a unit a
 * worker is reading, and reads itself, the direct way, whatever is not
 * ready: a unit still queued (it takes it over rather than wait behind
 * the pool), a unit that failed, a unit outside the window.
 *
 * What must stay true:
 *  - a prefetch failure is never reported: the worker's error detail
 *    stays on its own thread and the caller reads that unit again
 *    directly, which reports the exact chunk and reason for bytes it
 *    asked for, and nothing for bytes it did not;
 *  - a reader that is not sequential (two reads in a row that do not
 *    follow each other) queues nothing and pays one comparison a call;
 *  - memory is bounded: a reader holds at most RA_SLOTS unit buffers, a
 *    store at most RA_STORE_BUFS; buffers are kept in the pool for reuse
 *    (a fresh buffer's first touch costs page faults on every unit);
 *  - ra_close() returns once no worker touches the reader any more:
 *    queued units are cancelled, units being read are waited for.
 *
 * No io_uring: a ring per reader is a mapping (anon_inode:[io_uring]) in
 * the process, and the engine restores processes from inside the process
 * that reads; synchronous preads on several threads keep as many reads in
 * flight and decode beside the caller on the other cores.
 *
 * Locking: one mutex per store (pool->lock) guards the queue, every
 * slot's state and every reader's window; it is never held across a read
 * or a copy. Slot buffers are used outside it by exactly one side: the
 * worker while a slot is BUSY, copying callers while it is pinned.
 */
#include <inttypes.h>
#include <signal.h>

#include "store/chunk-int.h"

/* RA_UNIT (chunk-int.h), 1 MiB of file per unit: 64 blocks, one run of
 * records (PACK_RUN_MAX) when the file was written in one go. */
/* Units a reader may hold (queued, being read, ready): its memory bound,
 * 10 MiB. */
#define RA_SLOTS 10
/* How far past the end of the caller's read units are queued. */
#define RA_AHEAD (6ull << 20)
/* Unit buffers per store: 64 MiB, six readers at full depth; more
 * readers share them (a reader that finds none reads directly). */
#define RA_STORE_BUFS 64
/* Store threads reading ahead: each has one synchronous read in flight,
 * and the virtual disk here gave its best with several queued (two
 * readers: 4 threads 1.1-1.6 GB/s, 8 threads 1.5-1.9 GB/s of input in
 * the same runs). Each holds a 1 MiB read buffer (pack.c). */
#define RA_THREADS 8
#define RA_STACK (1u << 20)

enum slot_state {
	SLOT_FREE,
	SLOT_QUEUED, /* in the pool's queue */
	SLOT_BUSY,   /* a worker reads it */
	SLOT_READY,  /* buf holds the unit's bytes */
	SLOT_FAILED, /* the read failed: the caller reads it directly */
	_SLOT_MAX,
};

struct ra_slot {
	struct ra *ra;
	struct ra_slot *next; /* pool queue */
	enum slot_state state;
	unsigned pins;        /* callers copying out of buf */
	uint64_t unit;
	uint32_t len;         /* bytes of the unit (short at the end of the file) */
	uint32_t consumed;    /* bytes copied out: at len the slot is freed */
	uint8_t *buf;         /* RA_UNIT bytes, from the pool; NULL with dest */
	/* A unit inside the range of the call that queued it is read
	 * straight into the caller's buffer: no copy. Only that call
	 * (owner) uses it, and waits for it before it returns. */
	uint8_t *dest;
	const void *owner;
};

struct ra {
	struct ra_pool *pool;
	ra_read_fn read;
	void *ud;
	uint64_t size;
	pthread_cond_t cond;  /* a slot of this reader left BUSY or was unpinned */
	uint64_t last_end;    /* end of the previous read; UINT64_MAX: none */
	uint64_t next_unit;   /* first unit not queued yet */
	bool active;          /* reading sequentially: the window is kept */
	unsigned busy;        /* slots BUSY or pinned */
	uint64_t ahead, direct; /* bytes the caller found read ahead, read itself */
	struct ra_slot slots[RA_SLOTS];
};

struct ra_pool {
	pthread_mutex_t lock;
	pthread_cond_t work;  /* the queue is not empty, or stop */
	struct ra_slot *head, *tail;
	uint8_t *bufs[RA_STORE_BUFS]; /* free unit buffers */
	unsigned nfree, nbufs;        /* free ones; all allocated */
	pthread_t threads[RA_THREADS];
	unsigned nthreads;
	bool stop;
	bool disabled;        /* CKPTFS_READAHEAD=0 */
	uint64_t units, failed; /* units the workers read, and failed */
};

static pthread_mutex_t create_lock = PTHREAD_MUTEX_INITIALIZER;

/* ---- the pool ---------------------------------------------------------------- */

static void *worker(void *arg)
{
	struct ra_pool *p = arg;

	pthread_mutex_lock(&p->lock);
	for (;;) {
		while (!p->head && !p->stop)
			pthread_cond_wait(&p->work, &p->lock);
		if (p->stop)
			break;
		struct ra_slot *s = p->head;
		p->head = s->next;
		if (!p->head)
			p->tail = NULL;
		s->next = NULL;
		s->state = SLOT_BUSY;
		struct ra *ra = s->ra;
		ra->busy++;
		pthread_mutex_unlock(&p->lock);

		ssize_t n = ra->read(ra->ud, s->dest ? s->dest : s->buf, s->len, s->unit * RA_UNIT);
		if (n != (ssize_t)s->len)
			log_debug("read-ahead of %u bytes at %" PRIu64 " failed, left to the reader: %s", s->len,
				  s->unit * RA_UNIT, n < 0 ? err_msg() : "short read");

		pthread_mutex_lock(&p->lock);
		s->state = n == (ssize_t)s->len ? SLOT_READY : SLOT_FAILED;
		p->units++;
		p->failed += s->state == SLOT_FAILED;
		ra->busy--;
		pthread_cond_broadcast(&ra->cond);
	}
	pthread_mutex_unlock(&p->lock);
	return NULL;
}

/* Starts the workers, with every signal blocked: they must never run a
 * handler of the daemon's. With p->lock held. Fewer (or none) is not an
 * error: a caller reads queued units itself when it reaches them. */
static void threads_start(struct ra_pool *p)
{
	sigset_t all, old;
	pthread_attr_t a;

	if (pthread_attr_init(&a) != 0)
		return;
	pthread_attr_setstacksize(&a, RA_STACK);
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	while (p->nthreads < RA_THREADS && pthread_create(&p->threads[p->nthreads], &a, worker, p) == 0)
		p->nthreads++;
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	pthread_attr_destroy(&a);
}

static struct ra_pool *pool_get(struct chunk_store *cs)
{
	struct ra_pool *p;

	pthread_mutex_lock(&create_lock);
	p = cs->ra;
	if (!p) {
		p = calloc(1, sizeof(*p));
		if (p) {
			const char *e = getenv("CKPTFS_READAHEAD");
			pthread_mutex_init(&p->lock, NULL);
			pthread_cond_init(&p->work, NULL);
			p->disabled = e && !strcmp(e, "0");
			cs->ra = p;
		}
	}
	pthread_mutex_unlock(&create_lock);
	return p;
}

void ra_pool_free(struct chunk_store *cs)
{
	struct ra_pool *p = cs->ra;

	if (!p)
		return;
	pthread_mutex_lock(&p->lock);
	p->stop = true;
	pthread_cond_broadcast(&p->work);
	pthread_mutex_unlock(&p->lock);
	for (unsigned i = 0; i < p->nthreads; i++)
		pthread_join(p->threads[i], NULL);
	for (unsigned i = 0; i < p->nfree; i++)
		free(p->bufs[i]);
	pthread_cond_destroy(&p->work);
	pthread_mutex_destroy(&p->lock);
	free(p);
	cs->ra = NULL;
}

void ra_pool_stats(struct chunk_store *cs, uint64_t *units, uint64_t *failed)
{
	struct ra_pool *p = pool_get(cs);

	*units = *failed = 0;
	if (!p)
		return;
	pthread_mutex_lock(&p->lock);
	*units = p->units;
	*failed = p->failed;
	pthread_mutex_unlock(&p->lock);
}

/* A unit buffer, or NULL when the store has RA_STORE_BUFS out. */
static uint8_t *buf_get(struct ra_pool *p)
{
	if (p->nfree)
		return p->bufs[--p->nfree];
	if (p->nbufs == RA_STORE_BUFS)
		return NULL;
	uint8_t *b = malloc(RA_UNIT);
	if (b)
		p->nbufs++;
	return b;
}

/* ---- slots ----------------------------------------------------------------- */

static void dequeue(struct ra_pool *p, struct ra_slot *s)
{
	struct ra_slot **pp = &p->head, *prev = NULL;

	for (; *pp; prev = *pp, pp = &(*pp)->next)
		if (*pp == s) {
			*pp = s->next;
			if (p->tail == s)
				p->tail = prev;
			s->next = NULL;
			return;
		}
}

/* Frees a slot that is neither BUSY nor pinned; its buffer goes back. */
static void slot_free(struct ra_pool *p, struct ra_slot *s)
{
	if (s->state == SLOT_FREE)
		return;
	if (s->state == SLOT_QUEUED)
		dequeue(p, s);
	if (s->buf)
		p->bufs[p->nfree++] = s->buf;
	s->buf = s->dest = NULL;
	s->owner = NULL;
	s->state = SLOT_FREE;
}

static bool slot_idle(const struct ra_slot *s)
{
	return s->state != SLOT_FREE && s->state != SLOT_BUSY && !s->pins;
}

static struct ra_slot *slot_of(struct ra *ra, uint64_t unit)
{
	for (unsigned i = 0; i < RA_SLOTS; i++)
		if (ra->slots[i].state != SLOT_FREE && ra->slots[i].unit == unit)
			return &ra->slots[i];
	return NULL;
}

/* Drops what no read will want: everything (the reader jumped), or the
 * units wholly before unit `from`. */
static void drop(struct ra *ra, uint64_t from, bool all)
{
	for (unsigned i = 0; i < RA_SLOTS; i++) {
		struct ra_slot *s = &ra->slots[i];
		if (slot_idle(s) && (all || s->unit < from))
			slot_free(ra->pool, s);
	}
}

/* Queues the units from the one at pos to the one holding byte
 * end + RA_AHEAD - 1 that have no slot yet, as far as slots and the
 * store's buffers allow. Units wholly inside what is left of the call's
 * range, [pos, end), go straight into its buffer (buf is at off): the call
 * still meets them and waits for them before it returns. A unit the call
 * has passed (the file's short last unit, once pos is at end) must not:
 * it would be read into the buffer after the call returned. */
static void fill(struct ra *ra, uint64_t pos, uint64_t off, uint64_t end, uint8_t *buf, const void *owner)
{
	struct ra_pool *p = ra->pool;
	uint64_t stop = MIN(end + RA_AHEAD, ra->size);
	uint64_t u = MAX(ra->next_unit, pos / RA_UNIT), last = (stop - 1) / RA_UNIT;
	unsigned queued = 0;

	for (; u <= last; u++) {
		uint64_t ustart = u * RA_UNIT;
		uint32_t len = (uint32_t)MIN((uint64_t)RA_UNIT, ra->size - ustart);
		bool inside = ustart >= pos && ustart + len <= end; /* pos >= off */
		if (slot_of(ra, u))
			continue;
		struct ra_slot *s = NULL;
		for (unsigned i = 0; i < RA_SLOTS && !s; i++)
			if (ra->slots[i].state == SLOT_FREE)
				s = &ra->slots[i];
		if (!s)
			break;
		uint8_t *b = inside ? NULL : buf_get(p);
		if (!inside && !b)
			break;
		*s = (struct ra_slot){
			.ra = ra,
			.state = SLOT_QUEUED,
			.unit = u,
			.len = len,
			.buf = b,
			.dest = inside ? buf + (ustart - off) : NULL,
			.owner = inside ? owner : NULL,
		};
		if (p->tail)
			p->tail->next = s;
		else
			p->head = s;
		p->tail = s;
		queued++;
	}
	ra->next_unit = u;
	if (queued && p->nthreads < RA_THREADS && !p->stop)
		threads_start(p);
	while (queued--)
		pthread_cond_signal(&p->work);
}

/* Before a call returns early: no unit may still be read into its buffer. */
static void forget_call(struct ra *ra, const void *owner)
{
	struct ra_pool *p = ra->pool;

	for (;;) {
		bool busy = false;
		for (unsigned i = 0; i < RA_SLOTS; i++) {
			struct ra_slot *s = &ra->slots[i];
			if (s->state == SLOT_FREE || s->owner != owner)
				continue;
			if (s->state == SLOT_BUSY)
				busy = true;
			else
				slot_free(p, s);
		}
		if (!busy)
			return;
		pthread_cond_wait(&ra->cond, &p->lock);
	}
}

/* ---- readers ----------------------------------------------------------------- */

int ra_open(struct chunk_store *cs, uint64_t size, ra_read_fn read, void *ud, struct ra **ret)
{
	struct ra_pool *p;
	struct ra *ra;

	*ret = NULL;
	/* A file of one unit or less has nothing to read ahead. */
	if (size <= RA_UNIT)
		return 0;
	p = pool_get(cs);
	if (!p)
		return -ENOMEM;
	if (p->disabled)
		return 0;
	ra = calloc(1, sizeof(*ra));
	if (!ra)
		return -ENOMEM;
	ra->pool = p;
	ra->read = read;
	ra->ud = ud;
	ra->size = size;
	ra->last_end = UINT64_MAX;
	pthread_cond_init(&ra->cond, NULL);
	*ret = ra;
	return 0;
}

void ra_close(struct ra *ra)
{
	if (!ra)
		return;
	struct ra_pool *p = ra->pool;
	pthread_mutex_lock(&p->lock);
	for (;;) {
		drop(ra, 0, true);
		if (!ra->busy)
			break;
		pthread_cond_wait(&ra->cond, &p->lock);
	}
	pthread_mutex_unlock(&p->lock);
	if (ra->ahead)
		log_debug("read-ahead: %" PRIu64 " bytes were ready, %" PRIu64 " read by the caller in the window",
			  ra->ahead, ra->direct);
	pthread_cond_destroy(&ra->cond);
	free(ra);
}

ssize_t ra_pread(struct ra *ra, uint8_t *buf, size_t len, uint64_t off)
{
	struct ra_pool *p = ra->pool;
	uint64_t end = off + len, pos = off;
	const char token = 0; /* this call, as the owner of units read into buf */
	bool seq;

	pthread_mutex_lock(&p->lock);
	/* Sequential: this read starts where the last one ended, or close
	 * to it (concurrent requests of one sequential reader, as FUSE
	 * sends them, arrive a little out of order). */
	seq = ra->last_end != UINT64_MAX && off <= ra->last_end + RA_UNIT && off + 2ull * RA_UNIT >= ra->last_end;
	if (!seq && ra->active) {
		drop(ra, 0, true);
		ra->next_unit = 0;
	}
	ra->active = seq;
	ra->last_end = seq ? MAX(ra->last_end, end) : end;
	if (!seq) {
		pthread_mutex_unlock(&p->lock);
		return ra->read(ra->ud, buf, len, off);
	}
	/* Units two behind are no use to anyone any more. */
	if (off / RA_UNIT >= 2)
		drop(ra, off / RA_UNIT - 1, false);
	fill(ra, pos, off, end, buf, &token);
	while (pos < end) {
		uint64_t u = pos / RA_UNIT, ustart = u * RA_UNIT;
		size_t n = (size_t)(MIN(end, ustart + RA_UNIT) - pos);
		struct ra_slot *s = slot_of(ra, u);

		/* Another call's unit, read into that call's buffer. */
		if (s && s->dest && s->owner != &token)
			s = NULL;
		if (s && s->state == SLOT_BUSY) {
			pthread_cond_wait(&ra->cond, &p->lock);
			continue;
		}
		if (s && s->state == SLOT_READY && s->dest) {
			/* Already in place. */
			slot_free(p, s);
			ra->ahead += n;
			pos += n;
			fill(ra, pos, off, end, buf, &token);
			continue;
		}
		if (s && s->state == SLOT_READY) {
			/* Copy outside the lock; the pin keeps the slot. */
			s->pins++;
			ra->busy++;
			pthread_mutex_unlock(&p->lock);
			memcpy(buf + (pos - off), s->buf + (pos - ustart), n);
			pthread_mutex_lock(&p->lock);
			s->pins--;
			ra->busy--;
			s->consumed += (uint32_t)n;
			ra->ahead += n;
			if (s->consumed >= s->len && !s->pins)
				slot_free(p, s);
			pthread_cond_broadcast(&ra->cond);
			pos += n;
			fill(ra, pos, off, end, buf, &token);
			continue;
		}
		/* Queued (take it over rather than wait behind the pool),
		 * failed (read again: the direct way names the damage, and
		 * only if it lies in what the caller asked for), or not in
		 * the window. */
		if (s && !s->pins)
			slot_free(p, s);
		pthread_mutex_unlock(&p->lock);
		ssize_t r = ra->read(ra->ud, buf + (pos - off), n, pos);
		pthread_mutex_lock(&p->lock);
		ra->direct += n;
		if (r < 0) {
			forget_call(ra, &token);
			pthread_mutex_unlock(&p->lock);
			return r;
		}
		pos += n;
		fill(ra, pos, off, end, buf, &token);
	}
	pthread_mutex_unlock(&p->lock);
	return (ssize_t)len;
}
