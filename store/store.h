/*
 * store: the snapshot tree.
 *
 * A snapshot is a tree of named files (`process`, `maps`, `memory/<a>-<b>`,
 * `regs/<tid>`, `gpu/hbm`, ...) plus a `manifest` that the store writes
 * itself. Everything above this module writes and reads snapshots only
 * through this interface and never knows which backend holds them:
 *
 *  - the directory backend: each snapshot is a plain directory in the
 *    snapshot directory format (docs/FORMAT.md): sparse files with real
 *    holes, the manifest written last;
 *  - the chunk store: a store directory with pack files of zstd-compressed,
 *    deduplicated chunks and a RocksDB index (docs/FORMAT.md).
 *
 * What must stay true:
 *  - a snapshot is durable or absent: store_snap_commit() returns once
 *    data, then index (or manifest and rename) are synced; a crash at any
 *    point leaves every older snapshot whole;
 *  - readers see only committed snapshots, which never change;
 *  - all-zero 4 KiB pages are holes: never stored, read back as zeros,
 *    reported by SEEK_HOLE;
 *  - every name coming in (snapshot names, file paths) is validated here:
 *    no "..", no empty or "." components, no leading '/', bounded length.
 *
 * Errors: every call returns >= 0 on success and -errno on failure, and on
 * failure records a detail naming the object and the reason (err_msg() in
 * common/common.h). Nothing here prints except debug logs.
 *
 * Threads: a struct store is thread-safe. Several snapshots may be written
 * at once from several threads. Within one snapshot being written,
 * different files may be written concurrently from different threads; one
 * file is written by one thread at a time. Readers may pread one file from
 * several threads at once.
 */
#ifndef CKPTFS_STORE_H
#define CKPTFS_STORE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

struct store;      /* a backend instance */
struct store_snap; /* a snapshot being written, or a committed one open for reading */
struct store_file; /* one file of a snapshot, open for writing or for reading */

enum store_backend {
	STORE_BACKEND_DIR,
	STORE_BACKEND_CHUNK,
	_STORE_BACKEND_MAX,
};

/* The file name the store reserves for the manifest it writes. */
#define STORE_MANIFEST "manifest"
/* First line of every manifest; the number is the format version. Version
 * 2 added process trees (a `tree` file, a directory per process, shared/);
 * version 1 snapshots (one process, its files at the top) are still read. */
#define STORE_FORMAT_NAME "ckptfs-snapshot"
#define STORE_FORMAT_VERSION 2
#define STORE_FORMAT_VERSION_MIN 1
/* Size of the blocks the file hash and the chunk store cut files into. */
#define STORE_BLOCK_SIZE (16u * 1024)
#define STORE_PAGE_SIZE 4096u
/* Bytes of a hash (SHA-256). */
#define STORE_HASH_LEN 32

struct store_options {
	int zstd_level;  /* 0: the default (1); negative levels allowed */
	bool read_only;  /* open without taking the write lock */
};

struct store_stat {
	uint64_t size;      /* logical size in bytes */
	uint64_t allocated; /* bytes that are data, not holes (multiple of 4 KiB but for the tail) */
	uint64_t stored;    /* bytes the backend spends on it (compressed, before dedup) */
	uint8_t hash[STORE_HASH_LEN]; /* file hash, see store_hash_*() */
};

struct store_snap_info {
	const char *name;   /* borrowed: valid during the callback */
	int64_t created;    /* seconds since the epoch */
	uint64_t size;      /* sum of the files' logical sizes */
	uint64_t allocated; /* sum of their data bytes */
	uint64_t stored;    /* bytes added to the store by this snapshot (new chunks) */
	uint32_t files;
};

struct store_stats {
	uint64_t snapshots;
	uint64_t chunks;
	uint64_t chunk_bytes;  /* uncompressed bytes of all live chunks */
	uint64_t stored_bytes; /* compressed bytes of all live chunks */
	uint64_t pack_bytes;   /* bytes of all pack files, dead ones included */
	uint64_t packs;
};

struct store_gc_stats {
	uint64_t chunks_freed;
	uint64_t bytes_freed;     /* pack bytes given back to the filesystem */
	uint64_t packs_rewritten;
	uint64_t packs_deleted;
};

/* ---- opening a store ----------------------------------------------------- */

/* Opens the chunk store at dir, creating it (mode 0700) if absent. Takes
 * the store's lock: a second process opening the same store for writing
 * gets -EBUSY with a detail naming the holder. o may be NULL. */
int store_open(const char *dir, const struct store_options *o, struct store **ret);

/* Opens the directory backend rooted at dir: snapshot NAME is the
 * directory dir/NAME. dir must exist. */
int store_open_dir(const char *dir, struct store **ret);

/* Closes a store; all its snapshots must be closed. Accepts NULL. */
void store_close(struct store *s);

enum store_backend store_backend(struct store *s);

/* The default chunk store directory: /var/lib/ckptfs for root, else
 * $XDG_DATA_HOME/ckptfs or ~/.local/share/ckptfs. Returns a malloc'd
 * string or NULL on ENOMEM. */
char *store_default_path(void);

/* Returns 0 when name is a valid snapshot name (components of
 * [A-Za-z0-9._-@+], '/' separated, none "." or "..", at most 255 bytes),
 * else -EINVAL with a detail. The directory backend takes one component. */
int store_name_valid(const char *name);

/* Returns 0 when path is a valid file path inside a snapshot (same rules,
 * at most 8 components, at most 1024 bytes), else -EINVAL with a detail. */
int store_path_valid(const char *path);

/* ---- writing a snapshot ------------------------------------------------- */

enum {
	/* The snapshot arrives from outside (cp -r into restore/, ckpt import):
	 * it carries its own `manifest`, written like any other file; commit
	 * verifies every file against it (names, sizes, hashes, nothing
	 * missing, nothing extra) and fails with -EBADMSG naming the first file
	 * that does not match. */
	STORE_CREATE_IMPORT = 1u << 0,
};

/* Starts snapshot `name`. Fails with -EEXIST if a committed snapshot has
 * that name. Nothing is visible to readers before store_snap_commit(). */
int store_snap_create(struct store *s, const char *name, unsigned flags, struct store_snap **ret);

/* Creates file `path` in a snapshot being written (its parents implicitly).
 * -EEXIST if created before in this snapshot. The file starts empty. */
int store_file_create(struct store_snap *w, const char *path, struct store_file **ret);

/* Writes len bytes at off. Zero pages become holes. Writes aligned to
 * STORE_BLOCK_SIZE are the fast path; unaligned ones are buffered until
 * their block is complete or the file is closed. A byte range should be
 * written once; writing it again replaces it. */
int store_file_pwrite(struct store_file *f, const void *buf, size_t len, uint64_t off);

/* What a writer may remember of one STORE_BLOCK_SIZE block it wrote, to
 * write the same bytes again without their hash being computed again. */
struct store_block {
	uint8_t id[STORE_HASH_LEN]; /* the block's hash (its chunk id) */
	uint8_t mask;               /* its pages that are not zero; 0: a hole */
	bool known;                 /* id and mask hold for the bytes given */
};

/* Writes like store_file_pwrite(), for whole blocks only: off and len
 * multiples of STORE_BLOCK_SIZE (else -EINVAL), blocks[i] describing the
 * block at off + i * STORE_BLOCK_SIZE. A block whose entry is known is
 * taken as it says, neither hashed nor looked at for zero pages: the
 * caller vouches that the bytes are the ones the entry was filled for
 * (a chunk no longer in the store is written again from buf). The others
 * are hashed, and their entries filled and marked known. Returns 1 when
 * the entries are filled; 0 when the backend names no blocks (the
 * directory backend): the bytes are written, the entries untouched. */
int store_file_pwrite_blocks(struct store_file *f, const void *buf, size_t len, uint64_t off,
			     struct store_block *blocks);

/* Sets the logical size (never-written ranges read as zeros). Without it
 * the size is the end of the last write. */
int store_file_set_size(struct store_file *f, uint64_t size);

/* Shorthand: create `path`, write buf, close. */
int store_snap_put(struct store_snap *w, const char *path, const void *buf, size_t len);

/* Makes the snapshot durable and visible. Every file must be closed. On
 * failure nothing becomes visible and the writer can only be closed. */
int store_snap_commit(struct store_snap *w);

/* ---- reading a snapshot ------------------------------------------------- */

enum {
	/* Directory backend: hash every file and compare with the manifest at
	 * open (-EBADMSG naming the first mismatch). The chunk store verifies
	 * chunks as they are read and ignores this flag. */
	STORE_OPEN_VERIFY = 1u << 0,
};

/* Opens committed snapshot `name`. -ENOENT if there is none. The directory
 * backend always checks the manifest's syntax, that every file it names is
 * there with its size and that no other file is; -EBADMSG names the file. */
int store_snap_open(struct store *s, const char *name, unsigned flags, struct store_snap **ret);

/* Calls cb for every file, `manifest` included, in byte order of path.
 * A non-zero return from cb stops the walk and is returned. */
int store_snap_foreach_file(struct store_snap *r,
			    int (*cb)(const char *path, const struct store_stat *st, void *ud),
			    void *ud);

int store_snap_stat(struct store_snap *r, const char *path, struct store_stat *ret);

/* Reads a whole small file into a NUL-terminated malloc'd buffer (text
 * files: process, maps, regs/..., the manifest). -EFBIG above 64 MiB. */
int store_snap_read_all(struct store_snap *r, const char *path, char **ret, size_t *ret_len);

/* Opens file `path` of a committed snapshot. The file stays valid until it
 * is closed; the snapshot must outlive it. */
int store_file_open(struct store_snap *r, const char *path, struct store_file **ret);

/* Reads up to len bytes at off; short only at end of file. Holes read as
 * zeros. Returns the count or -errno (-EIO with a detail on damage). */
ssize_t store_file_pread(struct store_file *f, void *buf, size_t len, uint64_t off);

/* lseek(2)'s SEEK_DATA / SEEK_HOLE: the next data (hole) offset at or after
 * off. -ENXIO if off >= size, or for SEEK_DATA when only holes follow. A
 * hole at the end of the file is reported at size. */
int64_t store_file_seek(struct store_file *f, uint64_t off, int whence);

int store_file_stat(struct store_file *f, struct store_stat *ret);

/* Closes a file. For a file being written this finishes it (flushes
 * buffered blocks, computes its hash) and reports errors of that; the file
 * is closed whatever it returns. Accepts NULL. */
int store_file_close(struct store_file *f);

/* A view of directory `dir` of snapshot s (being written or read): paths
 * given to the view are taken inside dir ("process" is "dir/process"),
 * foreach_file lists only dir's files, without the prefix. A view cannot
 * be committed; it must be closed (store_snap_close, which leaves s
 * alone) before s is. Process trees write each process's files through a
 * view of its directory with the code that writes one process. */
int store_snap_at(struct store_snap *s, const char *dir, struct store_snap **ret);

/* Closes a snapshot. A writer not committed is aborted: everything it
 * wrote is discarded (chunk bytes already in packs are reclaimed by gc).
 * Accepts NULL. */
void store_snap_close(struct store_snap *w);

/* ---- managing snapshots --------------------------------------------------- */

/* Calls cb for every committed snapshot whose name starts with prefix
 * (NULL: all), in byte order of name. */
int store_foreach_snap(struct store *s, const char *prefix,
		       int (*cb)(const struct store_snap_info *info, void *ud), void *ud);

/* Deletes a committed snapshot atomically; its chunks lose a reference. */
int store_snap_delete(struct store *s, const char *name);

/* ---- small records ------------------------------------------------------- */

/* A few bytes of the caller's own kept beside the snapshots (the daemon's
 * periodic checkpoint policies). key follows the snapshot name rules with
 * one component; a record holds at most STORE_META_MAX bytes. put
 * replaces the record atomically and returns once it is durable (the old
 * one or the new one survives a crash, whole); len 0 is a record of no
 * bytes, not a deletion. get returns -ENOENT when there is none, else a
 * malloc'd copy, NUL-terminated. Neither is a snapshot: listing, gc and
 * fsck do not see them. */
#define STORE_META_MAX (1u << 20)
int store_meta_put(struct store *s, const char *key, const void *buf, size_t len);
int store_meta_get(struct store *s, const char *key, char **ret, size_t *ret_len);

/* Chunk store only (-EOPNOTSUPP otherwise). */
int store_stats(struct store *s, struct store_stats *ret);
/* Frees chunks nobody references and rewrites packs that are mostly dead.
 * Waits for writers in flight. ret may be NULL. */
int store_gc(struct store *s, struct store_gc_stats *ret);
/* Re-reads every chunk and recipe; calls report once per problem with the
 * object's name and what is wrong. Returns the number of problems, or
 * -errno if the check itself could not run. */
int store_fsck(struct store *s, void (*report)(const char *object, const char *problem, void *ud),
	       void *ud);

/* ---- hashing -------------------------------------------------------------- */

/* The file hash (manifest name "sha256-tree"): SHA-256 over the sequence of
 * SHA-256 digests of the file's STORE_BLOCK_SIZE blocks, the last block as
 * long as it is. Holes hash like zeros, but a zero block's digest is a
 * constant, so sparse files hash at the speed of their data.
 * Hashes an open file descriptor's whole content. */
int store_hash_fd(int fd, uint8_t out[STORE_HASH_LEN]);
/* Hashes a memory buffer (a whole file's content). */
void store_hash_buf(const void *buf, size_t len, uint8_t out[STORE_HASH_LEN]);
/* Lowercase hex of a hash into out (65 bytes). */
void store_hash_hex(const uint8_t h[STORE_HASH_LEN], char out[2 * STORE_HASH_LEN + 1]);

#endif
