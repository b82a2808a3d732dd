/*
 * The file hash ("sha256-tree", docs/FORMAT.md): a leaf is SHA-256 of one
 * STORE_BLOCK_SIZE block, the last block as long as it is; the file hash
 * is SHA-256 of the concatenated leaves. An empty file has no leaves, so
 * its hash is SHA-256 of nothing.
 *
 * What must stay true: holes cost nothing but 32 bytes of outer hashing
 * per block. The leaf of an all-zero block is a constant computed once,
 * so a terabyte-sized sparse file never has its zeros hashed (or read).
 *
 * SHA-256 comes from OpenSSL's libcrypto (EVP), which uses the CPU's SHA
 * instructions where there are some. The digest method is fetched once
 * and each thread keeps one context, because fetching and allocating per
 * 16 KiB block costs a noticeable share of the hashing itself.
 */
#include <fcntl.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <sys/stat.h>

#include "store/store-int.h"

static EVP_MD *sha256;
static uint8_t zero_leaf_full[STORE_HASH_LEN];
static pthread_once_t hash_once = PTHREAD_ONCE_INIT;
static pthread_key_t ctx_key;

static void ctx_free(void *p)
{
	EVP_MD_CTX_free(p);
}

static void hash_init(void)
{
	static const uint8_t zeros[STORE_BLOCK_SIZE];
	unsigned n;

	sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
	/* Without SHA-256 the store cannot work at all; libcrypto always has
	 * it unless it is broken or in a FIPS mode without its provider. */
	if (!sha256)
		abort();
	if (pthread_key_create(&ctx_key, ctx_free) != 0)
		abort();
	if (!EVP_Digest(zeros, sizeof(zeros), zero_leaf_full, &n, sha256, NULL))
		abort();
}

/* The calling thread's digest context. NULL only on ENOMEM. */
static EVP_MD_CTX *thread_ctx(void)
{
	EVP_MD_CTX *c;

	pthread_once(&hash_once, hash_init);
	c = pthread_getspecific(ctx_key);
	if (!c) {
		c = EVP_MD_CTX_new();
		if (!c)
			return NULL;
		if (pthread_setspecific(ctx_key, c) != 0) {
			EVP_MD_CTX_free(c);
			return NULL;
		}
	}
	return c;
}

/* SHA-256 of buf through ctx; libcrypto fails here only when out of
 * memory, which is treated as fatal like any malloc failure inside a
 * function that cannot return one. */
static void digest(EVP_MD_CTX *c, const void *buf, size_t len, uint8_t out[STORE_HASH_LEN])
{
	if (!EVP_DigestInit_ex2(c, sha256, NULL) || !EVP_DigestUpdate(c, buf, len) ||
	    !EVP_DigestFinal_ex(c, out, NULL))
		abort();
}

void hash_leaf(const void *buf, size_t len, uint8_t out[STORE_HASH_LEN])
{
	EVP_MD_CTX *c = thread_ctx();
	unsigned n;

	if (c) {
		digest(c, buf, len, out);
		return;
	}
	if (!EVP_Digest(buf, len, out, &n, sha256, NULL))
		abort();
}

void hash_zero_leaf(size_t len, uint8_t out[STORE_HASH_LEN])
{
	static const uint8_t zeros[STORE_BLOCK_SIZE];

	pthread_once(&hash_once, hash_init);
	if (len >= STORE_BLOCK_SIZE) {
		memcpy(out, zero_leaf_full, STORE_HASH_LEN);
		return;
	}
	/* Only the last block of a file is short: computed on demand. */
	hash_leaf(zeros, len, out);
}

bool buf_is_zero(const void *buf, size_t len)
{
	const unsigned char *p = buf;

	/* Head bytes until 8-byte alignment, then 64 bytes per round with
	 * one branch, then the tail. memcpy keeps the loads well defined;
	 * the compiler turns it into plain loads. */
	while (len > 0 && ((uintptr_t)p & 7)) {
		if (*p)
			return false;
		p++;
		len--;
	}
	while (len >= 64) {
		uint64_t w[8];
		memcpy(w, p, 64);
		if (w[0] | w[1] | w[2] | w[3] | w[4] | w[5] | w[6] | w[7])
			return false;
		p += 64;
		len -= 64;
	}
	while (len >= 8) {
		uint64_t w;
		memcpy(&w, p, 8);
		if (w)
			return false;
		p += 8;
		len -= 8;
	}
	while (len > 0) {
		if (*p)
			return false;
		p++;
		len--;
	}
	return true;
}

/* ---- the outer hash ------------------------------------------------------ */

struct tree {
	EVP_MD_CTX *ctx;
};

static int tree_begin(struct tree *t)
{
	pthread_once(&hash_once, hash_init);
	t->ctx = EVP_MD_CTX_new();
	if (!t->ctx)
		return -ENOMEM;
	if (!EVP_DigestInit_ex2(t->ctx, sha256, NULL)) {
		EVP_MD_CTX_free(t->ctx);
		return -ENOMEM;
	}
	return 0;
}

static void tree_add(struct tree *t, const uint8_t leaf[STORE_HASH_LEN])
{
	if (!EVP_DigestUpdate(t->ctx, leaf, STORE_HASH_LEN))
		abort();
}

/* Feeds `count` full zero-block leaves: the constant, many at a time, so
 * that a huge hole costs one update call per 2048 blocks (32 MiB). */
static uint8_t zero_leaves[2048 * STORE_HASH_LEN];
static pthread_once_t zero_leaves_once = PTHREAD_ONCE_INIT;

static void zero_leaves_init(void)
{
	for (size_t i = 0; i < 2048; i++)
		memcpy(zero_leaves + i * STORE_HASH_LEN, zero_leaf_full, STORE_HASH_LEN);
}

static void tree_add_zeros(struct tree *t, uint64_t count)
{
	pthread_once(&zero_leaves_once, zero_leaves_init);
	while (count > 0) {
		uint64_t n = MIN(count, 2048);
		if (!EVP_DigestUpdate(t->ctx, zero_leaves, n * STORE_HASH_LEN))
			abort();
		count -= n;
	}
}

static void tree_end(struct tree *t, uint8_t out[STORE_HASH_LEN])
{
	if (!EVP_DigestFinal_ex(t->ctx, out, NULL))
		abort();
	EVP_MD_CTX_free(t->ctx);
	t->ctx = NULL;
}

static void tree_abort(struct tree *t)
{
	EVP_MD_CTX_free(t->ctx);
	t->ctx = NULL;
}

/* The leaf of one block's bytes: zeros take the constant. */
static void block_leaf(const void *buf, size_t len, uint8_t out[STORE_HASH_LEN])
{
	if (buf_is_zero(buf, len))
		hash_zero_leaf(len, out);
	else
		hash_leaf(buf, len, out);
}

void store_hash_buf(const void *buf, size_t len, uint8_t out[STORE_HASH_LEN])
{
	const uint8_t *p = buf;
	uint8_t leaf[STORE_HASH_LEN];
	struct tree t;

	if (tree_begin(&t) < 0)
		abort();
	for (size_t off = 0; off < len; off += STORE_BLOCK_SIZE) {
		block_leaf(p + off, MIN(len - off, (size_t)STORE_BLOCK_SIZE), leaf);
		tree_add(&t, leaf);
	}
	tree_end(&t, out);
}

#define HASH_READ_SIZE (1u << 20) /* a multiple of STORE_BLOCK_SIZE */

int store_hash_fd(int fd, uint8_t out[STORE_HASH_LEN])
{
	_cleanup_free_ uint8_t *buf = NULL;
	uint8_t leaf[STORE_HASH_LEN];
	uint64_t size, off = 0;
	/* [data, hole): the data extent at or after off, as far as known. */
	uint64_t data = 0, hole = 0;
	struct stat st;
	struct tree t;
	int r;

	if (fstat(fd, &st) < 0)
		return negerrno();
	if (!S_ISREG(st.st_mode))
		return -EINVAL;
	size = st.st_size;
	buf = malloc(HASH_READ_SIZE);
	if (!buf)
		return -ENOMEM;
	r = tree_begin(&t);
	if (r < 0)
		return r;

	while (off < size) {
		if (hole <= off) {
			off_t d = lseek(fd, off, SEEK_DATA);
			if (d < 0 && errno == ENXIO) {
				d = size; /* only a hole follows */
			} else if (d < 0 && errno == EINVAL) {
				d = off; /* no hole support: all data */
			} else if (d < 0) {
				r = negerrno();
				goto fail;
			}
			data = MIN((uint64_t)d, size);
			if (data < size) {
				off_t h = lseek(fd, data, SEEK_HOLE);
				hole = h < 0 ? size : MIN((uint64_t)h, size);
			} else {
				hole = size;
			}
			if (hole <= data)
				hole = size; /* inconsistent answer: read the rest */
		}

		/* Whole blocks before the one that holds `data` are holes. */
		uint64_t skip = ALIGN_DOWN(data, STORE_BLOCK_SIZE);
		if (skip > off) {
			uint64_t whole = (skip - off) / STORE_BLOCK_SIZE;
			tree_add_zeros(&t, whole);
			off = skip;
			continue;
		}
		if (data >= size) {
			/* Only a hole is left: full zero blocks, then the tail. */
			uint64_t rest = size - off;
			tree_add_zeros(&t, rest / STORE_BLOCK_SIZE);
			if (rest % STORE_BLOCK_SIZE) {
				hash_zero_leaf(rest % STORE_BLOCK_SIZE, leaf);
				tree_add(&t, leaf);
			}
			off = size;
			break;
		}

		/* Read from off (block aligned) up to the block that holds the
		 * end of this extent, at most HASH_READ_SIZE. */
		uint64_t want = MIN((uint64_t)HASH_READ_SIZE, ALIGN_UP(hole, STORE_BLOCK_SIZE) - off);
		want = MIN(want, size - off);
		ssize_t n = pread_full(fd, buf, want, off);
		if (n < 0) {
			r = n;
			goto fail;
		}
		if ((uint64_t)n < want) {
			/* Shrunk under us: hash what the size said, as zeros
			 * past the end, rather than loop forever. */
			memset(buf + n, 0, want - n);
		}
		for (uint64_t o = 0; o < want; o += STORE_BLOCK_SIZE) {
			block_leaf(buf + o, MIN(want - o, (uint64_t)STORE_BLOCK_SIZE), leaf);
			tree_add(&t, leaf);
		}
		off += want;
	}
	tree_end(&t, out);
	return 0;
fail:
	tree_abort(&t);
	return r;
}

void store_hash_hex(const uint8_t h[STORE_HASH_LEN], char out[2 * STORE_HASH_LEN + 1])
{
	static const char digits[] = "0123456789abcdef";
	for (size_t i = 0; i < STORE_HASH_LEN; i++) {
		out[2 * i] = digits[h[i] >> 4];
		out[2 * i + 1] = digits[h[i] & 15];
	}
	out[2 * STORE_HASH_LEN] = 0;
}

/* ---- leaf sets ------------------------------------------------------------
 *
 * A file's leaves, collected as its blocks are written. Files are written
 * front to back nearly always, so the set is a sorted array that grows by
 * appending. Writes out of order are appended too and the array is marked
 * unsorted; a stable sort that keeps the last entry per block (a drop is an
 * entry with the DEAD bit) restores order before the final hash, or when
 * the array has grown to twice its size at the last sort (rewrites of the
 * same blocks cannot grow it without bound). Memory: 40 bytes per data
 * block, nothing per hole.
 */

#define LEAF_DEAD (1ull << 63)

struct leaf_ent {
	uint64_t block; /* | LEAF_DEAD for a drop */
	uint8_t leaf[STORE_HASH_LEN];
};

struct leaf_set {
	struct leaf_ent *e;
	size_t n, cap;
	bool sorted;     /* e is strictly increasing by block, without DEAD entries... */
	bool has_dead;   /* ...except DEAD ones marked in place while sorted */
	size_t compact_at;
};

int leaf_set_new(struct leaf_set **ret)
{
	struct leaf_set *l = calloc(1, sizeof(*l));
	if (!l)
		return -ENOMEM;
	l->sorted = true;
	l->compact_at = 1024;
	*ret = l;
	return 0;
}

void leaf_set_free(struct leaf_set *l)
{
	if (!l)
		return;
	free(l->e);
	free(l);
}

static inline uint64_t blk(const struct leaf_ent *e)
{
	return e->block & ~LEAF_DEAD;
}

/* Index of block in a sorted set, or -1. */
static ssize_t find_sorted(const struct leaf_set *l, uint64_t block)
{
	size_t lo = 0, hi = l->n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		uint64_t b = blk(&l->e[mid]);
		if (b == block)
			return mid;
		if (b < block)
			lo = mid + 1;
		else
			hi = mid;
	}
	return -1;
}

/* Stable merge sort by block, then keeps the last entry of each block and
 * removes drops. */
static int compact(struct leaf_set *l)
{
	struct leaf_ent *tmp, *a, *b;
	size_t n = l->n, out = 0;

	if (!l->sorted && n > 1) {
		tmp = malloc(n * sizeof(*tmp));
		if (!tmp)
			return -ENOMEM;
		a = l->e;
		b = tmp;
		for (size_t w = 1; w < n; w *= 2) {
			for (size_t lo = 0; lo < n; lo += 2 * w) {
				size_t mid = MIN(lo + w, n), hi = MIN(lo + 2 * w, n);
				size_t i = lo, j = mid, k = lo;
				while (i < mid && j < hi)
					b[k++] = blk(&a[j]) < blk(&a[i]) ? a[j++] : a[i++];
				while (i < mid)
					b[k++] = a[i++];
				while (j < hi)
					b[k++] = a[j++];
			}
			struct leaf_ent *s = a;
			a = b;
			b = s;
		}
		if (a != l->e)
			memcpy(l->e, a, n * sizeof(*a));
		free(tmp);
	}
	for (size_t i = 0; i < n; i++) {
		if (i + 1 < n && blk(&l->e[i + 1]) == blk(&l->e[i]))
			continue; /* a later entry for the same block wins */
		if (l->e[i].block & LEAF_DEAD)
			continue;
		l->e[out++] = l->e[i];
	}
	l->n = out;
	l->sorted = true;
	l->has_dead = false;
	l->compact_at = MAX(2 * out, (size_t)1024);
	return 0;
}

static int append(struct leaf_set *l, uint64_t block, const uint8_t *leaf)
{
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 64;
		struct leaf_ent *e = realloc(l->e, cap * sizeof(*e));
		if (!e)
			return -ENOMEM;
		l->e = e;
		l->cap = cap;
	}
	l->e[l->n].block = block;
	if (leaf)
		memcpy(l->e[l->n].leaf, leaf, STORE_HASH_LEN);
	else
		memset(l->e[l->n].leaf, 0, STORE_HASH_LEN);
	l->n++;
	return 0;
}

int leaf_set_put(struct leaf_set *l, uint64_t block, const uint8_t leaf[STORE_HASH_LEN])
{
	int r;

	if (block & LEAF_DEAD)
		return -EFBIG;
	if (l->sorted) {
		if (l->n == 0 || blk(&l->e[l->n - 1]) < block)
			return append(l, block, leaf);
		ssize_t i = find_sorted(l, block);
		if (i >= 0) {
			l->e[i].block = block; /* revives a dropped one */
			memcpy(l->e[i].leaf, leaf, STORE_HASH_LEN);
			return 0;
		}
		l->sorted = false;
	}
	r = append(l, block, leaf);
	if (r < 0)
		return r;
	if (l->n >= l->compact_at)
		return compact(l);
	return 0;
}

void leaf_set_drop(struct leaf_set *l, uint64_t block)
{
	if (l->sorted) {
		ssize_t i = find_sorted(l, block);
		if (i >= 0) {
			l->e[i].block |= LEAF_DEAD;
			l->has_dead = true;
		}
		return;
	}
	/* Unsorted: a drop entry; if it cannot be recorded (ENOMEM), sort
	 * now and mark in place, which needs no memory beyond the sort's. */
	if (append(l, block | LEAF_DEAD, NULL) < 0) {
		if (compact(l) == 0)
			leaf_set_drop(l, block);
		return;
	}
	if (l->n >= l->compact_at)
		compact(l); /* on ENOMEM it stays unsorted, which is still right */
}

int leaf_set_final(struct leaf_set *l, uint64_t size, uint8_t out[STORE_HASH_LEN])
{
	uint64_t nblocks = (size + STORE_BLOCK_SIZE - 1) / STORE_BLOCK_SIZE, next = 0;
	uint8_t leaf[STORE_HASH_LEN];
	struct tree t;
	int r;

	if (!l->sorted || l->has_dead) {
		r = compact(l);
		if (r < 0)
			return r;
	}
	r = tree_begin(&t);
	if (r < 0)
		return r;
	for (size_t i = 0; i < l->n && l->e[i].block < nblocks; i++) {
		uint64_t b = l->e[i].block;
		if (b > next)
			tree_add_zeros(&t, b - next);
		tree_add(&t, l->e[i].leaf);
		next = b + 1;
	}
	if (next < nblocks) {
		uint64_t tail = size % STORE_BLOCK_SIZE;
		if (tail == 0) {
			tree_add_zeros(&t, nblocks - next);
		} else {
			/* The last block is short and a hole: its leaf is over
			 * its own length. */
			tree_add_zeros(&t, nblocks - next - 1);
			hash_zero_leaf(tail, leaf);
			tree_add(&t, leaf);
		}
	}
	tree_end(&t, out);
	return 0;
}
