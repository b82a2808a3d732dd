/*
 * The inode table. A node exists for every name the kernel holds a
 * reference to (lookup count > 0) and for the root. Inode numbers are a
 * hash of the node's key, so that readdir can report them without
 * creating nodes and a name keeps its number across forget and lookup.
 * Two keys hashing alike get the next free number; only readdir's d_ino
 * can then be off, which nothing relies on.
 */
#include <inttypes.h>

#include "fs/fs-int.h"

static uint64_t hash64(const char *s)
{
	/* FNV-1a then a final mix: cheap and good enough for a few thousand
	 * keys. */
	uint64_t h = 0xcbf29ce484222325ull;
	for (; *s; s++) {
		h ^= (unsigned char)*s;
		h *= 0x100000001b3ull;
	}
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdull;
	h ^= h >> 33;
	return h;
}

static char *key_of(const struct node_id *id)
{
	char *k = NULL;
	int r;

	switch (id->kind) {
	case NODE_ROOT:
		r = asprintf(&k, "/");
		break;
	case NODE_README:
		r = asprintf(&k, "README");
		break;
	case NODE_RESTORE:
		r = asprintf(&k, "restore");
		break;
	case NODE_PID:
	case NODE_CTL:
	case NODE_STATUS:
		r = asprintf(&k, "%d:%d", id->kind, id->pid);
		break;
	case NODE_SNAP:
	case NODE_SNAP_FILE:
		r = asprintf(&k, "%d:%d/%" PRIu32 "/%s", id->kind, id->pid, id->n, id->path ? id->path : "");
		break;
	default:
		r = asprintf(&k, "%d:%u/%s/%s", id->kind, (unsigned)id->uid, id->name ? id->name : "",
			     id->path ? id->path : "");
		break;
	}
	return r < 0 ? NULL : k;
}

static fuse_ino_t ino_of_key(const char *key)
{
	uint64_t h = hash64(key);
	/* 0 is invalid and 1 is the root. */
	return h < 2 ? h + 2 : h;
}

fuse_ino_t node_ino_of(const struct node_id *id)
{
	_cleanup_free_ char *k = NULL;

	if (id->kind == NODE_ROOT)
		return FUSE_ROOT_ID;
	k = key_of(id);
	return k ? ino_of_key(k) : 2;
}

static struct node *find_ino_locked(struct fs *fs, fuse_ino_t ino)
{
	for (struct node *n = fs->by_ino[ino % FS_HASH_SIZE]; n; n = n->next_ino)
		if (n->ino == ino)
			return n;
	return NULL;
}

static void node_free(struct node *n)
{
	if (!n)
		return;
	free(n->name);
	free(n->path);
	free(n->key);
	free(n);
}

static struct node *node_new(const struct node_id *id, char *key)
{
	struct node *n = calloc(1, sizeof(*n));
	if (!n)
		return NULL;
	n->kind = id->kind;
	n->pid = id->pid;
	n->n = id->n;
	n->uid = id->uid;
	n->key = key;
	n->name = id->name ? strdup(id->name) : NULL;
	n->path = strdup(id->path ? id->path : "");
	if ((id->name && !n->name) || !n->path) {
		n->key = NULL;
		node_free(n);
		return NULL;
	}
	return n;
}

int node_get(struct fs *fs, const struct node_id *id, struct node **ret)
{
	_cleanup_free_ char *key = key_of(id);
	struct node *n;
	size_t kb;

	if (!key)
		return -ENOMEM;
	kb = hash64(key) % FS_HASH_SIZE;

	pthread_mutex_lock(&fs->lock);
	for (n = fs->by_key[kb]; n; n = n->next_key)
		if (!strcmp(n->key, key))
			break;
	if (!n) {
		fuse_ino_t ino = id->kind == NODE_ROOT ? FUSE_ROOT_ID : ino_of_key(key);

		n = node_new(id, key);
		if (!n) {
			pthread_mutex_unlock(&fs->lock);
			return -ENOMEM;
		}
		key = NULL;
		while (find_ino_locked(fs, ino))
			ino = ino + 1 < 2 ? 2 : ino + 1;
		n->ino = ino;
		n->next_key = fs->by_key[kb];
		fs->by_key[kb] = n;
		n->next_ino = fs->by_ino[ino % FS_HASH_SIZE];
		fs->by_ino[ino % FS_HASH_SIZE] = n;
	}
	n->nlookup++;
	pthread_mutex_unlock(&fs->lock);
	*ret = n;
	return 0;
}

struct node *node_find(struct fs *fs, fuse_ino_t ino)
{
	struct node *n;

	pthread_mutex_lock(&fs->lock);
	n = find_ino_locked(fs, ino);
	pthread_mutex_unlock(&fs->lock);
	return n;
}

static void unlink_locked(struct fs *fs, struct node *n)
{
	struct node **p;

	for (p = &fs->by_ino[n->ino % FS_HASH_SIZE]; *p; p = &(*p)->next_ino)
		if (*p == n) {
			*p = n->next_ino;
			break;
		}
	for (p = &fs->by_key[hash64(n->key) % FS_HASH_SIZE]; *p; p = &(*p)->next_key)
		if (*p == n) {
			*p = n->next_key;
			break;
		}
}

void node_forget(struct fs *fs, fuse_ino_t ino, uint64_t count)
{
	struct node *n;

	if (ino == FUSE_ROOT_ID)
		return;
	pthread_mutex_lock(&fs->lock);
	n = find_ino_locked(fs, ino);
	if (n) {
		n->nlookup = n->nlookup > count ? n->nlookup - count : 0;
		if (n->nlookup == 0)
			unlink_locked(fs, n);
		else
			n = NULL;
	}
	pthread_mutex_unlock(&fs->lock);
	node_free(n);
}

void node_table_init(struct fs *fs)
{
	struct node_id root = { .kind = NODE_ROOT };
	struct node *n;

	/* The root lives as long as the table; its count never reaches 0. */
	if (node_get(fs, &root, &n) < 0)
		abort();
}

void node_table_free(struct fs *fs)
{
	for (size_t i = 0; i < FS_HASH_SIZE; i++) {
		struct node *n = fs->by_ino[i];
		while (n) {
			struct node *next = n->next_ino;
			node_free(n);
			n = next;
		}
		fs->by_ino[i] = NULL;
		fs->by_key[i] = NULL;
	}
}
