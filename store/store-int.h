/*
 * store/ internals shared by its files: the backend vtable that store.c
 * dispatches through, the file hash helpers (hash.c), name checks
 * (name.c) and the manifest text (manifest.c). Nothing outside store/
 * includes this header.
 */
#ifndef CKPTFS_STORE_INT_H
#define CKPTFS_STORE_INT_H

#include "common/common.h"
#include "store/store.h"

/* ---- backends ---------------------------------------------------------- */

/* A backend embeds these structs first in its own ones and casts back. */
struct store {
	const struct store_ops *ops;
	enum store_backend backend;
};

struct store_snap {
	struct store *store;
	bool writing;   /* created by store_snap_create (else opened) */
	bool committed; /* store_snap_commit succeeded */
	bool failed;    /* a commit failed: only close is allowed */
	unsigned flags; /* STORE_CREATE_* or STORE_OPEN_* */
	/* A view made by store_snap_at(): never handed to a backend; every
	 * call goes to parent with prefix "DIR/" before its path. */
	struct store_snap *parent;
	char *prefix;
};

struct store_file {
	struct store_snap *snap;
	bool writing;
};

/* Each backend implements every operation; one that does not apply
 * returns -EOPNOTSUPP. store.c validates names and paths, checks the
 * writer/reader state and handles NULLs before calling these. */
struct store_ops {
	void (*close)(struct store *s);

	int (*snap_create)(struct store *s, const char *name, unsigned flags, struct store_snap **ret);
	int (*file_create)(struct store_snap *w, const char *path, struct store_file **ret);
	int (*file_pwrite)(struct store_file *f, const void *buf, size_t len, uint64_t off);
	/* may be NULL: store_file_pwrite_blocks() then writes with file_pwrite */
	int (*file_pwrite_blocks)(struct store_file *f, const void *buf, size_t len, uint64_t off,
				  struct store_block *blocks);
	int (*file_set_size)(struct store_file *f, uint64_t size);
	int (*snap_commit)(struct store_snap *w);

	int (*snap_open)(struct store *s, const char *name, unsigned flags, struct store_snap **ret);
	int (*snap_foreach_file)(struct store_snap *r,
				 int (*cb)(const char *path, const struct store_stat *st, void *ud),
				 void *ud);
	int (*snap_stat)(struct store_snap *r, const char *path, struct store_stat *ret);
	int (*file_open)(struct store_snap *r, const char *path, struct store_file **ret);
	ssize_t (*file_pread)(struct store_file *f, void *buf, size_t len, uint64_t off);
	int64_t (*file_seek)(struct store_file *f, uint64_t off, int whence);
	int (*file_stat)(struct store_file *f, struct store_stat *ret);
	int (*file_close)(struct store_file *f);
	void (*snap_close)(struct store_snap *s);

	int (*foreach_snap)(struct store *s, const char *prefix,
			    int (*cb)(const struct store_snap_info *info, void *ud), void *ud);
	int (*snap_delete)(struct store *s, const char *name);
	int (*stats)(struct store *s, struct store_stats *ret);
	int (*gc)(struct store *s, struct store_gc_stats *ret);
	int (*fsck)(struct store *s, void (*report)(const char *object, const char *problem, void *ud),
		    void *ud);
	int (*meta_put)(struct store *s, const char *key, const void *buf, size_t len);
	int (*meta_get)(struct store *s, const char *key, char **ret, size_t *ret_len);
};

extern const struct store_ops store_dir_ops;   /* dir.c */
extern const struct store_ops store_chunk_ops; /* chunk.c */

/* chunk.c: opens the chunk store backend (store_open() calls it). */
int chunk_store_open(const char *dir, const struct store_options *o, struct store **ret);
/* dir.c: opens the directory backend (store_open_dir() calls it). */
int dir_store_open(const char *dir, struct store **ret);

/* ---- hashing (hash.c) ----------------------------------------------------
 *
 * The file hash is a two-level tree (see store_hash_fd() in store.h): a
 * leaf is SHA-256 of one STORE_BLOCK_SIZE block (the last one as long as
 * it is); the file hash is SHA-256 of the leaves in order. A chunk's id in
 * the chunk store is the leaf of the block it holds, so hashes computed
 * while ingesting serve both.
 */

/* SHA-256 of buf. Thread-safe. */
void hash_leaf(const void *buf, size_t len, uint8_t out[STORE_HASH_LEN]);
/* The leaf of an all-zero block of len bytes (len <= STORE_BLOCK_SIZE);
 * the full-block one is computed once. */
void hash_zero_leaf(size_t len, uint8_t out[STORE_HASH_LEN]);
/* True when len bytes at buf are all zero; fast (word at a time). */
bool buf_is_zero(const void *buf, size_t len);

/* Collects the leaves of one file as its blocks are written, in any order,
 * and sparsely: a block never set is a hole. Not thread-safe (one file is
 * written by one thread at a time). */
struct leaf_set;
int leaf_set_new(struct leaf_set **ret);
void leaf_set_free(struct leaf_set *l);
/* Records the leaf of block index `block` (replacing an earlier one). */
int leaf_set_put(struct leaf_set *l, uint64_t block, const uint8_t leaf[STORE_HASH_LEN]);
/* Forgets the leaf of a block (it became a hole again). */
void leaf_set_drop(struct leaf_set *l, uint64_t block);
/* The file hash of a file of `size` bytes: blocks without a leaf hash as
 * zeros. The caller must have put the last partial block's leaf computed
 * over its partial length, if it holds data. */
int leaf_set_final(struct leaf_set *l, uint64_t size, uint8_t out[STORE_HASH_LEN]);

/* ---- names (name.c) ------------------------------------------------------ */

/* Both set a detail naming the bad name; see store.h for the rules. */
int name_check(const char *name, unsigned max_components);
int path_check(const char *path);

/* ---- the manifest (manifest.c) -------------------------------------------
 *
 * Text, docs/FORMAT.md: first line "ckptfs-snapshot 1", then header lines,
 * then one line per file: "<hash hex> <size> <path>", sorted by path.
 */

struct manifest_entry {
	char *path;
	uint64_t size;
	uint8_t hash[STORE_HASH_LEN];
};

struct manifest {
	unsigned version;
	int64_t created; /* seconds since the epoch; 0 if absent */
	struct manifest_entry *files;
	size_t nfiles;
};

/* Formats m (entries sorted here) into a malloc'd NUL-terminated text. */
int manifest_format(struct manifest *m, char **ret, size_t *ret_len);
/* Parses text strictly: unknown version, bad syntax, invalid or duplicate
 * paths, absurd sizes all give -EBADMSG with a detail naming the line.
 * `text` need not be NUL-terminated. */
int manifest_parse(const char *text, size_t len, struct manifest *ret);
void manifest_clear(struct manifest *m);
/* The entry for path, or NULL (binary search; m must be sorted, as parsed
 * and formatted manifests are). */
const struct manifest_entry *manifest_find(const struct manifest *m, const char *path);

#endif
