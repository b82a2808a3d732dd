/*
 * The chunk store's private header, shared by chunk.c (the backend),
 * pack.c (pack files), index.c (RocksDB), gc.c, fsck.c and sha256x2.c
 * (hashing two blocks at once). The on-disk
 * layout it describes is documented in docs/FORMAT.md, "The chunk store";
 * a change to any struct marked "on disk" changes the format version.
 *
 * All on-disk integers are little-endian (the structs are written as they
 * are in memory; the store is built for x86-64 and arm64, both LE).
 *
 * Locks, outermost first:
 *   gc lock           writers hold it shared from snap_create to
 *                     commit/close, gc and fsck exclusive: gc never frees a
 *                     chunk that a writer in flight decided to reuse;
 *   commit_lock       one index commit, delete, gc or fsck at a time;
 *   snapshot mutex    a writer's chunk set, file list, pack list;
 *   pool_lock         the pools of pack writers and zstd contexts;
 *   fd_lock           the pack descriptors cache of readers;
 *   read-ahead lock   readahead.c: its queue, slots and windows; taken
 *                     alone, never with any lock above.
 */
#ifndef CKPTFS_STORE_CHUNK_INT_H
#define CKPTFS_STORE_CHUNK_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <zstd.h>

#include "store/store-int.h"

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "on-disk structs are little-endian as in memory");

#define CHUNK_FORMAT_VERSION 1
/* The index's version (key "V"). 2 added 'p' keys: an older build would
 * not count their snapshots' references and its gc would free their
 * chunks. A version 1 index is a valid version 2 one and is raised to 2
 * when opened for writing. */
#define CHUNK_INDEX_VERSION 2
#define CHUNK_PAGES (STORE_BLOCK_SIZE / STORE_PAGE_SIZE) /* pages per block: 4 */
#define CHUNK_MASK_FULL ((1u << CHUNK_PAGES) - 1)
/* Blocks per recipe segment key: a 1 TiB file is 16384 keys of 136 KiB. */
#define CHUNK_SEG_BLOCKS 4096u
/* A pack is closed for appending once it is this big. */
#define CHUNK_PACK_MAX (512ull << 20)
/* gc rewrites a pack whose live bytes are below this share (percent). */
#define CHUNK_GC_REWRITE_PCT 50

enum chunk_codec {
	CHUNK_CODEC_RAW = 0,
	CHUNK_CODEC_ZSTD = 1,
	_CHUNK_CODEC_MAX,
};

/* ---- on disk: packs (pack.c) ----------------------------------------- */

#define PACK_MAGIC "CKPTPACK"
#define PACK_HDR_SIZE 64
#define REC_MAGIC 0x52434b43u /* "CKCR" */

/* At offset 0 of every pack (on disk). */
struct pack_hdr {
	char magic[8];    /* PACK_MAGIC */
	uint32_t version; /* CHUNK_FORMAT_VERSION */
	uint32_t id;      /* the NNNNNNNN of its name */
	uint8_t reserved[48];
};

/* Before the stored bytes of every chunk (on disk). The payload is the
 * block's pages whose mask bit is set, in order (the last one cut at
 * raw_len), compressed as codec says. */
struct rec_hdr {
	uint32_t magic;      /* REC_MAGIC */
	uint8_t codec;       /* enum chunk_codec */
	uint8_t mask;        /* bit i: page i of the block is stored (not zero) */
	uint16_t reserved;
	uint32_t raw_len;    /* length of the block (STORE_BLOCK_SIZE but for a file's tail) */
	uint32_t stored_len; /* payload bytes following this header */
	uint32_t crc;        /* CRC32C of this header (crc as 0) and the payload */
	uint32_t reserved2;
	uint8_t id[STORE_HASH_LEN]; /* SHA-256 of the block's raw_len bytes */
};
_Static_assert(sizeof(struct rec_hdr) == 56, "record header is 56 bytes on disk");

/* Where a chunk lives: the value of index key 'c'+id (on disk). */
struct chunk_loc {
	uint32_t pack;
	uint32_t stored_len; /* payload bytes (the record is sizeof(rec_hdr) more) */
	uint64_t offset;     /* of the record header */
	uint32_t raw_len;
	uint8_t codec;
	uint8_t mask;
	uint16_t reserved;
};
_Static_assert(sizeof(struct chunk_loc) == 24, "location is 24 bytes on disk");

static inline uint64_t rec_size(const struct chunk_loc *l)
{
	return sizeof(struct rec_hdr) + l->stored_len;
}

uint32_t crc32c(uint32_t crc, const void *buf, size_t len);
/* The record checksum: CRC32C of h (its crc field as 0) then payload. */
uint32_t rec_crc(const struct rec_hdr *h, const void *payload);

/* Bytes of the uncompressed payload of a block of raw_len with mask. */
size_t chunk_payload_len(uint32_t raw_len, unsigned mask);

/* ---- index keys (index.c) -------------------------------------------------
 *
 *   "V"                         format version (u32)
 *   "N"                         next snapshot id (u64)
 *   'c' id[32]                  struct chunk_loc
 *   'r' id[32]                  int64 reference count (merge operator: add)
 *   'p' snapid(be64)            empty: the snapshot's references are not
 *                               in the 'r' counts yet (chunks_load adds them)
 *   's' name                    snapshot record (chunk.c: snaprec_*)
 *   'm' snapid(be64)            the snapshot's manifest text
 *   'f' snapid(be64) file(be32) seg(be32)
 *                               recipe segment: entries of u16 block within
 *                               the segment + id[32], ascending
 */
#define KEY_CHUNK 'c'
#define KEY_REF 'r'
#define KEY_PENDING 'p'
#define KEY_SNAP 's'
#define KEY_MANIFEST 'm'
#define KEY_RECIPE 'f'
#define KEY_META 'a'
#define CHUNK_KEY_LEN (1 + STORE_HASH_LEN)
#define RECIPE_KEY_LEN 17
#define RECIPE_ENT_LEN (2 + STORE_HASH_LEN)

struct index;
struct index_batch;
struct index_iter;

int index_open(const char *path, bool read_only, struct index **ret);
void index_close(struct index *x);
/* -ENOENT when absent; *ret malloc'd (free()). */
int index_get(struct index *x, const void *key, size_t klen, void **ret, size_t *ret_len);
/* Looks up n chunk ids at once; found[i] and locs[i] filled. */
int index_get_locs(struct index *x, size_t n, const uint8_t (*ids)[STORE_HASH_LEN], struct chunk_loc *locs,
		   bool *found);

/* The same through the index's cache of chunks it has (writers' dedup
 * lookups): a hit costs no RocksDB lookup; what RocksDB finds is cached. */
int index_find_chunks(struct index *x, size_t n, const uint8_t (*ids)[STORE_HASH_LEN], struct chunk_loc *locs,
		      bool *found);
/* Caches the locations of chunks now in the index (those with skip[i] or
 * a zero raw_len are left out; skip may be NULL). */
void index_known_put(struct index *x, size_t n, const uint8_t (*ids)[STORE_HASH_LEN], const struct chunk_loc *locs,
		     const bool *skip);
/* Forgets every cached location: gc, after it moved or freed chunks. */
void index_known_clear(struct index *x);

struct index_batch *index_batch_new(void);
void index_batch_free(struct index_batch *b);
void index_batch_put(struct index_batch *b, const void *k, size_t kl, const void *v, size_t vl);
void index_batch_delete(struct index_batch *b, const void *k, size_t kl);
void index_batch_delete_range(struct index_batch *b, const void *from, size_t fl, const void *to, size_t tl);
void index_batch_add_ref(struct index_batch *b, const uint8_t id[STORE_HASH_LEN], int64_t delta);
size_t index_batch_count(struct index_batch *b);
/* Writes the batch atomically; sync: the WAL is fdatasync'ed first. */
int index_write(struct index *x, struct index_batch *b, bool sync);

/* Iterates keys starting with prefix, in order. next: 1 with key/value
 * (valid until the next call), 0 at the end, -errno. */
int index_iter_new(struct index *x, const void *prefix, size_t plen, struct index_iter **ret);
/* The same, starting at the first key >= start (which has the prefix). */
int index_iter_new_at(struct index *x, const void *prefix, size_t plen, const void *start, size_t slen,
		      struct index_iter **ret);
int index_iter_next(struct index_iter *it, const uint8_t **k, size_t *kl, const uint8_t **v, size_t *vl);
void index_iter_free(struct index_iter *it);

static inline void be64_put(uint8_t *p, uint64_t v)
{
	for (int i = 7; i >= 0; i--, v >>= 8)
		p[i] = (uint8_t)v;
}
static inline uint64_t be64_get(const uint8_t *p)
{
	uint64_t v = 0;
	for (int i = 0; i < 8; i++)
		v = v << 8 | p[i];
	return v;
}
static inline void be32_put(uint8_t *p, uint32_t v)
{
	for (int i = 3; i >= 0; i--, v >>= 8)
		p[i] = (uint8_t)v;
}
static inline uint32_t be32_get(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static inline void chunk_key(uint8_t k[CHUNK_KEY_LEN], char type, const uint8_t id[STORE_HASH_LEN])
{
	k[0] = (uint8_t)type;
	memcpy(k + 1, id, STORE_HASH_LEN);
}
static inline void recipe_key(uint8_t k[RECIPE_KEY_LEN], uint64_t snapid, uint32_t file, uint32_t seg)
{
	k[0] = KEY_RECIPE;
	be64_put(k + 1, snapid);
	be32_put(k + 9, file);
	be32_put(k + 13, seg);
}

/* ---- an in-memory set of chunk ids (index.c) ----------------------------- */

struct idset_ent {
	uint8_t id[STORE_HASH_LEN];
	struct chunk_loc loc;
	uint32_t refs;  /* recipe entries of the snapshot that use it */
	uint8_t state;  /* IDSET_* */
	bool used;
};

enum {
	IDSET_OLD = 1,     /* committed in the index before */
	IDSET_PENDING = 2, /* new: being written by some file of the snapshot */
	IDSET_NEW = 3,     /* new: written, loc valid */
};

struct idset {
	struct idset_ent *e;
	size_t cap, n; /* cap a power of two */
};

/* The entry for id, or NULL. */
struct idset_ent *idset_find(struct idset *s, const uint8_t id[STORE_HASH_LEN]);
/* Finds or adds id (zeroed fields but id and used); *added says which. */
int idset_add(struct idset *s, const uint8_t id[STORE_HASH_LEN], struct idset_ent **ret, bool *added);
void idset_clear(struct idset *s);

/* ---- the store (chunk.c) --------------------------------------------------- */

struct pack_writer;

struct pack_fd {
	int fd;   /* -1: not open */
	int dfd;  /* the same pack opened O_DIRECT, for runs; -1: the filesystem has none */
	int refs; /* readers using fd, plus 1 while cached; fd_lock */
	bool gone;
};

struct chunk_store {
	struct store base;
	char *dir;
	int dir_fd;
	int packs_fd;   /* DIR/packs, for fsync and openat */
	int lock_fd;
	bool read_only;
	int zstd_level;
	struct index *idx;

	/* The gc lock: writers in flight (shared) against gc and fsck
	 * (exclusive). Reader-preferring, so that one thread may hold two
	 * writers at once without deadlocking against a waiting gc. */
	pthread_mutex_t gc_mutex;
	pthread_cond_t gc_cond;
	unsigned gc_writers;  /* gc_mutex */
	bool gc_exclusive;    /* gc_mutex */

	pthread_mutex_t commit_lock;
	uint64_t next_snapid; /* commit_lock */
	atomic_uint_fast64_t commits; /* changed under commit_lock: snapshot commits so far */

	pthread_mutex_t pool_lock;
	struct pack_writer **pool; /* pool_lock: packs open for appending, not in use */
	size_t npool, apool;
	ZSTD_CCtx **cctx;          /* pool_lock */
	size_t ncctx, acctx;
	ZSTD_DCtx **dctx;          /* pool_lock */
	size_t ndctx, adctx;
	atomic_uint next_pack;

	pthread_mutex_t fd_lock;
	struct pack_fd **fds; /* fd_lock: by pack id */
	size_t nfds;

	struct ra_pool *ra;   /* read-ahead threads and buffers; made at first use */
	struct hot *hot;      /* decoded chunks read again and again; NULL: none */
};

static inline struct chunk_store *to_cs(struct store *s)
{
	return (struct chunk_store *)s;
}

void cs_writer_enter(struct chunk_store *cs);
void cs_writer_leave(struct chunk_store *cs);
void cs_exclusive_enter(struct chunk_store *cs);
void cs_exclusive_leave(struct chunk_store *cs);

ZSTD_CCtx *cs_cctx_get(struct chunk_store *cs);
void cs_cctx_put(struct chunk_store *cs, ZSTD_CCtx *c);
ZSTD_DCtx *cs_dctx_get(struct chunk_store *cs);
void cs_dctx_put(struct chunk_store *cs, ZSTD_DCtx *d);

/* ---- packs (pack.c) -------------------------------------------------------- */

/* Creates packs/NNNNNNNN.pack with the next pack id and its header. */
int pack_writer_new(struct chunk_store *cs, struct pack_writer **ret);
/* Appends one record (header + payload) and returns its offset. The
 * bytes go out through io_uring; they are on disk only after pack_sync. */
int pack_append(struct pack_writer *p, const struct rec_hdr *h, const void *payload, uint64_t *ret_off);
/* Waits until every write submitted so far has completed. */
int pack_flush(struct pack_writer *p);
uint32_t pack_writer_id(const struct pack_writer *p);
uint64_t pack_writer_size(const struct pack_writer *p);
/* Flushes and closes; returns the flush error. Accepts NULL. */
int pack_writer_close(struct pack_writer *p);

/* Takes a pack writer from the store's pool or makes a new one. */
int pack_take(struct chunk_store *cs, struct pack_writer **ret);
/* Flushes p and gives it back to the pool (or closes it when full or
 * failed). Returns the flush error. */
int pack_give(struct chunk_store *cs, struct pack_writer *p);
/* Closes every pooled writer (gc does before it looks at packs). */
void pack_pool_drain(struct chunk_store *cs);

/* fsyncs pack `id` (data and size). */
int pack_sync(struct chunk_store *cs, uint32_t id);
void pack_name(uint32_t id, char buf[32]);
/* Lists pack ids in packs/ (sorted); *ret malloc'd. */
int pack_list(struct chunk_store *cs, uint32_t **ret, size_t *n);

/* Reads and checks the record at loc for chunk id: header, lengths,
 * checksum. With out: decodes it into out (raw_len bytes, zero pages
 * filled). Returns 0, -ENOENT when the pack is gone, -ESTALE when the
 * record there is another chunk, -EIO on damage (detail set). */
int pack_read_chunk(struct chunk_store *cs, const struct chunk_loc *loc, const uint8_t id[STORE_HASH_LEN],
		    uint8_t *out);
/* Reads the record at loc whole (header into h, payload into payload,
 * which holds STORE_BLOCK_SIZE bytes) and checks it like pack_read_chunk. */
int pack_read_record(struct chunk_store *cs, const struct chunk_loc *loc, const uint8_t id[STORE_HASH_LEN],
		     struct rec_hdr *h, uint8_t *payload);
#define PACK_RUN_MAX 64
/* Reads nruns runs of records and decodes each record into outs[i]
 * (raw_len bytes). Run k is cnt[k] (<= PACK_RUN_MAX) records that lie
 * back to back in one pack: the next cnt[k] entries of locs, ids and
 * outs. Read O_DIRECT where the pack allows, buffered else. Any failure (a gap, damage) returns < 0
 * without a useful detail: the caller then reads chunk by chunk with
 * pack_read_chunk, which names the problem. */
#define PACK_RUNS_MAX 4
int pack_read_runs(struct chunk_store *cs, size_t nruns, const size_t *cnt, const struct chunk_loc *locs,
		   const uint8_t (*ids)[STORE_HASH_LEN], uint8_t *const *outs);
/* Forgets a cached descriptor of a pack gc deleted. */
void pack_fd_forget(struct chunk_store *cs, uint32_t id);
void pack_fds_close(struct chunk_store *cs);

/* Encodes one block into a record: header h and payload (in out, which
 * holds ZSTD_compressBound(STORE_BLOCK_SIZE) bytes); *ret_payload points
 * at out or into block. */
int chunk_encode(struct chunk_store *cs, ZSTD_CCtx *cctx, const uint8_t *block, uint32_t len, unsigned mask,
		 const uint8_t id[STORE_HASH_LEN], struct rec_hdr *h, uint8_t *out, const uint8_t **ret_payload);
/* Decodes a checked payload into out (h->raw_len bytes). */
int chunk_decode(struct chunk_store *cs, const struct rec_hdr *h, const uint8_t *payload, uint8_t *out);

/* ---- read-ahead (readahead.c) ---------------------------------------------- */

struct ra;
/* The reader's direct read: len bytes at off, all inside the file;
 * returns len or -errno with a detail (on the calling thread). */
typedef ssize_t (*ra_read_fn)(void *ud, uint8_t *buf, size_t len, uint64_t off);
/* Read-ahead for one reader of a file of `size` bytes whose direct read
 * is read(ud, ...). *ret is NULL (and 0 returned) when there is nothing
 * to gain: a small file, or CKPTFS_READAHEAD=0. */
int ra_open(struct chunk_store *cs, uint64_t size, ra_read_fn read, void *ud, struct ra **ret);
/* Reads len bytes at off (inside the file) through the window; what is
 * not ready is read with the direct read, whose error is returned. Safe
 * from several threads at once. */
ssize_t ra_pread(struct ra *ra, uint8_t *buf, size_t len, uint64_t off);
/* Cancels queued units and waits for those being read. Accepts NULL. */
void ra_close(struct ra *ra);
/* Stops the store's read-ahead threads (every reader closed). */
void ra_pool_free(struct chunk_store *cs);
/* Units the store's threads have read ahead so far, and how many of those
 * failed (and were left to the reader): for tests. */
void ra_pool_stats(struct chunk_store *cs, uint64_t *units, uint64_t *failed);
/* Bytes of file a read-ahead unit covers. */
#define RA_UNIT (1u << 20)

/* ---- the hot chunk cache (hot.c) ------------------------------------------ */

/* Records in a run this short or shorter are offered to the cache. */
#define HOT_RUN_MAX 8
struct hot;
/* *ret NULL (and 0) with CKPTFS_HOT_CACHE=0. */
int hot_new(struct hot **ret);
void hot_free(struct hot *h);
/* Copies the decoded block of chunk id (len bytes) into out: true when
 * it is cached. Accepts a NULL h. */
bool hot_get(struct hot *h, const uint8_t id[STORE_HASH_LEN], uint32_t len, uint8_t *out);
/* A chunk just read and checked (len decoded bytes at data): kept from
 * its second offer on. Accepts a NULL h. */
void hot_offer(struct hot *h, const uint8_t id[STORE_HASH_LEN], uint32_t len, const uint8_t *data);
/* Blocks served from the cache and blocks put in it so far: for tests. */
void hot_stats(const struct hot *h, uint64_t *hits, uint64_t *puts);

/* ---- hashing two blocks at once (sha256x2.c) ----------------------------- */

/* SHA-256 of a and of b, both len bytes: hash_leaf() of each, about twice
 * as fast where the CPU has the SHA extensions. CKPTFS_NO_SHA_NI=1 in the
 * environment forces the one-at-a-time path (tests compare both). */
void chunk_hash2(const uint8_t *a, const uint8_t *b, size_t len, uint8_t oa[STORE_HASH_LEN],
		 uint8_t ob[STORE_HASH_LEN]);

/* ---- snapshot records (chunk.c) ------------------------------------------- */

struct snaprec_file {
	char *path;
	uint64_t size, allocated, stored;
	uint8_t hash[STORE_HASH_LEN];
};

struct snaprec {
	uint64_t snapid;
	int64_t created;
	uint64_t size, allocated, stored;
	struct snaprec_file *files; /* sorted by path; file number = index */
	uint32_t nfiles;
};

int snaprec_parse(const uint8_t *v, size_t len, struct snaprec *ret);
void snaprec_clear(struct snaprec *r);

/* Calls cb for every (block, id) of a file's recipe, in block order. */
int recipe_foreach(struct index *x, uint64_t snapid, uint32_t file,
		   int (*cb)(uint64_t block, const uint8_t id[STORE_HASH_LEN], void *ud), void *ud);
/* The same for every file of the snapshot (file by file). */
int recipe_foreach_snap(struct index *x, uint64_t snapid,
			int (*cb)(uint64_t block, const uint8_t id[STORE_HASH_LEN], void *ud), void *ud);
void pending_key(uint8_t key[9], uint64_t snapid);

/* Every chunk of the index with its reference count, by id (gc.c): the
 * 'r' count plus the uses by snapshots whose references are still
 * pending ('p'), which are also in pending. An entry with has_loc false
 * is a count without a location. */
struct chunk_ent {
	uint8_t id[STORE_HASH_LEN];
	struct chunk_loc loc;
	int64_t refs;
	int64_t pending;
	bool has_loc;
};
int chunks_load(struct chunk_store *cs, struct chunk_ent **ret, size_t *n);
struct chunk_ent *chunks_find(struct chunk_ent *v, size_t n, const uint8_t id[STORE_HASH_LEN]);

/* gc.c, fsck.c: the vtable entries. */
int chunk_gc(struct store *s, struct store_gc_stats *ret);
int chunk_fsck(struct store *s, void (*report)(const char *object, const char *problem, void *ud), void *ud);
int chunk_stats(struct store *s, struct store_stats *ret);


#endif
