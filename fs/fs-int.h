/*
 * fs/ internals: the state of one ckptfs daemon, shared by its files.
 *
 *   main.c     options, mount, signals, the FUSE loop
 *   inode.c    the inode table: a node per name the kernel looked up
 *   ops.c      the FUSE low-level operations, dispatching on node kinds
 *   access.c   who may see and checkpoint which process
 *   snap.c     committed snapshots opened for browsing (a small cache)
 *   ctl.c      <pid>/ctl and <pid>/status: checkpoints through the engine
 *   policy.c   periodic checkpoints (`every 30s keep 5` in ctl): a timer
 *              thread, and the policies kept in the store
 *   restore.c  restore/<name>/: import writers, verification, restore
 *   readme.c   the /README text
 *   api.c      the REST API (libmicrohttpd, jansson, libarchive) on a
 *              Unix socket or TCP: the same acts with the same rules
 *
 * Locking: one mutex, fs->lock, protects the inode table, the snapshot
 * cache, the per-pid states and the list of restores (field comments say
 * so where it matters). It is never held across store or engine calls
 * that may block for long; those work on objects kept alive by a
 * reference count taken under the lock.
 *
 * Names in the store: a checkpoint of pid P is snapshot "P/N" (chunk
 * store) and a restore named X by uid U is "restore/U/X". The directory
 * backend (-o backend=dir, for tests and debugging) takes one component,
 * so there the names are "P.N" and "restore.U.X".
 */
#ifndef CKPTFS_FS_INT_H
#define CKPTFS_FS_INT_H

#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include "common/common.h"
#include "engine/engine.h"
#include "store/store.h"

/* Largest read and write the kernel sends us, and st_blksize, so that cp
 * moves 1 MiB at a time. */
#define FS_IO_SIZE (1024u * 1024)
/* Holes shorter than this are shown as data by SEEK_HOLE (ops.c, shown_hole). */
#define FS_MIN_HOLE (64u * 1024)

enum node_kind {
	NODE_ROOT,     /* / */
	NODE_README,   /* /README */
	NODE_PID,      /* /<pid>/ */
	NODE_CTL,      /* /<pid>/ctl */
	NODE_STATUS,   /* /<pid>/status */
	NODE_SNAP,     /* /<pid>/<n>/ and directories inside it (path "" at its root) */
	NODE_SNAP_FILE,/* a file inside a snapshot */
	NODE_RESTORE,  /* /restore/ */
	NODE_RDIR,     /* /restore/<name>/ and directories inside it */
	NODE_RFILE,    /* a file being copied into a restore */
	NODE_RSTATUS,  /* /restore/<name>/status */
	NODE_RCTL,     /* /restore/<name>/ctl */
	_NODE_KIND_MAX,
};

/* One name the kernel knows. Fields other than nlookup and the hash links
 * never change after creation, so an operation on an inode the kernel
 * holds may read them without the lock. */
struct node {
	fuse_ino_t ino;
	enum node_kind kind;
	pid_t pid;       /* PID, CTL, STATUS, SNAP, SNAP_FILE */
	uint32_t n;      /* SNAP, SNAP_FILE: snapshot number */
	uid_t uid;       /* RDIR, RFILE, RSTATUS, RCTL: who owns the restore */
	char *name;      /* RDIR, RFILE, RSTATUS, RCTL: the restore's name */
	char *path;      /* SNAP*, R*: path inside the snapshot, "" at its root */
	char *key;       /* unique: kind and fields above */
	uint64_t nlookup; /* fs->lock: the kernel's references */
	struct node *next_ino, *next_key; /* fs->lock */
};

#define FS_HASH_SIZE 4096

/* Progress and outcome of checkpoints of one pid (/<pid>/status). */
enum pid_state {
	PID_IDLE,
	PID_CHECKPOINTING,
	PID_FAILED,
	_PID_STATE_MAX,
};

struct pidstate {
	pid_t pid;
	enum pid_state state;       /* fs->lock, and so are all below */
	enum engine_phase phase;
	uint64_t done, total;
	unsigned round;              /* ENGINE_PHASE_PRECOPY: the round */
	bool periodic;               /* the running checkpoint is a policy's */
	uint32_t last_snap;          /* 0: none taken by this daemon */
	char last_error[512];
	char memory[400];            /* how the last checkpoint took memory (engine_dump_stats.memory_mode) */
	/* track.c: the tracking kept from its last checkpoint, NULL if none
	 * (while a checkpoint runs, that checkpoint has it) */
	struct engine_track *track;
	uint64_t track_bytes;        /* engine_track_bytes() of it */
	uint64_t track_used_ns;      /* when it was last kept (now_ns) */
	struct pidstate *next;
};

/* A committed snapshot open for reading, with its file list. */
struct snap_file {
	char *path;
	struct store_stat st;
};

struct snapview {
	char *name;
	pid_t pid;
	uint32_t n;
	uid_t owner;
	struct store_snap *snap;
	struct snap_file *files; /* sorted by path, as the store lists them */
	size_t nfiles;
	unsigned refs;           /* fs->lock */
	bool dead;               /* fs->lock: deleted, drop at last put */
	uint64_t used;           /* fs->lock: LRU clock */
	struct snapview *next;   /* fs->lock */
};

/* Owners of snapshots, learnt from their `process` files. */
struct owner_ent {
	char *name;
	uid_t uid;
	struct owner_ent *next;
};

struct restore;
struct policy;
struct api;
struct handle;

/* Outcomes of the checkpoints this daemon ran (ctl, policies, API), for
 * the API's /metrics. */
#define FS_CKPT_BUCKETS 9
#define FS_CKPT_BUCKET_BOUNDS { 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60 }
struct fs_ckpt_stats {
	uint64_t ok, failed;
	uint64_t buckets[FS_CKPT_BUCKETS]; /* successful ones by duration, not cumulative */
	uint64_t sum_ns;
	uint64_t bytes;                    /* the engine's total of successful ones */
};

struct fs {
	struct store *store;
	char *store_dir;
	bool dir_backend;
	bool allow_other;
	unsigned pid_wait_ms; /* -o pid_wait: engine_restore_opts.pid_wait_ms for every restore */
	uid_t uid;   /* the daemon's own */
	gid_t gid;
	pid_t self;
	time_t started; /* every node's times: nothing here has its own */
	struct fuse_session *se;

	pthread_mutex_t lock;
	struct node *by_ino[FS_HASH_SIZE];  /* fs->lock */
	struct node *by_key[FS_HASH_SIZE];  /* fs->lock */
	struct pidstate *pids;              /* fs->lock */
	struct snapview *snaps;             /* fs->lock */
	size_t nsnaps;                      /* fs->lock */
	uint64_t clock;                     /* fs->lock */
	struct owner_ent *owners;           /* fs->lock */
	struct restore *restores;           /* fs->lock */
	unsigned restore_threads;           /* fs->lock: restore threads still running */
	unsigned ctl_jobs;                  /* fs->lock: ctl writes and periodic checkpoints still running */
	pthread_cond_t restore_done;        /* signalled when either drops */

	/* policy.c */
	struct policy *policies;            /* fs->lock */
	bool policy_quit;                   /* fs->lock: the timer thread is to end */
	pthread_cond_t policy_cond;         /* fs->lock: a checkpoint ended, a policy changed */
	pthread_mutex_t policy_save;        /* serializes writes of the policies' record */
	pthread_t policy_thread;
	bool policy_thread_started;
	char boot_id[40];                   /* this boot's, /proc/sys/kernel/random/boot_id */

	/* track.c */
	uint64_t track_budget;              /* -o track=SIZE: bytes all kept tracking may hold; 0: none kept */
	unsigned track_idle_s;              /* -o track_idle=SECONDS: dropped after this long unused */
	bool track_quit;                    /* fs->lock: the idle thread is to end */
	pthread_cond_t track_cond;          /* fs->lock: wakes the idle thread */
	pthread_t track_thread;
	bool track_thread_started;

	struct fs_ckpt_stats ckpt_stats;    /* fs->lock */
	struct api *api;                    /* api.c; NULL: no API */
	struct handle *handles;             /* fs->lock: ops.c's open files */
};

/* ---- inode.c ------------------------------------------------------------ */

/* Node parameters; unused fields zero / NULL. */
struct node_id {
	enum node_kind kind;
	pid_t pid;
	uint32_t n;
	uid_t uid;
	const char *name;
	const char *path;
};

/* The inode number a node with these parameters has (stable: derived from
 * the key), for readdir. */
fuse_ino_t node_ino_of(const struct node_id *id);
/* Finds or creates the node and takes one lookup reference. */
int node_get(struct fs *fs, const struct node_id *id, struct node **ret);
/* The node for ino, or NULL. Takes no reference: valid while the kernel
 * holds the inode (during an operation on it). */
struct node *node_find(struct fs *fs, fuse_ino_t ino);
/* Drops n kernel references; frees the node at zero (never the root). */
void node_forget(struct fs *fs, fuse_ino_t ino, uint64_t n);
void node_table_init(struct fs *fs);
void node_table_free(struct fs *fs);

/* ---- access.c ----------------------------------------------------------- */

/* True when the process exists, is not a kernel thread nor the daemon,
 * and caller uid may checkpoint it (root: all; others: their real uid).
 * *owner receives the process's real uid. */
bool access_pid(struct fs *fs, uid_t caller, pid_t pid, uid_t *owner);
/* True when uid may see an object owned by owner. */
static inline bool access_owner(uid_t caller, uid_t owner)
{
	return caller == 0 || caller == owner;
}
/* Calls cb for every process visible to caller. */
int access_foreach_pid(struct fs *fs, uid_t caller, int (*cb)(pid_t pid, void *ud), void *ud);

/* ---- snap.c -------------------------------------------------------------- */

/* Store names of checkpoint snapshots and of restores (see top). */
int fs_snap_name(struct fs *fs, pid_t pid, uint32_t n, char *buf, size_t len);
int fs_restore_name(struct fs *fs, uid_t uid, const char *name, char *buf, size_t len);
/* Parses a store name made by fs_snap_name(); false for others. */
bool fs_snap_name_parse(struct fs *fs, const char *s, pid_t *pid, uint32_t *n);
/* Calls cb for each committed snapshot of pid (pid 0: of every pid)
 * visible to caller, oldest first per pid. */
int snap_foreach(struct fs *fs, pid_t pid, uid_t caller,
		 int (*cb)(pid_t pid, uint32_t n, const struct store_snap_info *info, void *ud), void *ud);
/* The owner recorded in a snapshot (the uid of the process it holds);
 * root when it cannot be read, so that only root sees it. */
uid_t snap_owner(struct fs *fs, const char *name);
void snap_owner_set(struct fs *fs, const char *name, uid_t uid);
/* Opens (or finds in the cache) snapshot pid/n, reference taken.
 * -ENOENT if absent. */
int snapview_get(struct fs *fs, pid_t pid, uint32_t n, struct snapview **ret);
void snapview_put(struct fs *fs, struct snapview *v);
/* Deletes snapshot pid/n from the store and the cache. */
int snapview_delete(struct fs *fs, pid_t pid, uint32_t n);
/* Looks path up in v: 1 for a file (*ret set), 2 for a directory, 0 absent. */
int snapview_lookup(struct snapview *v, const char *path, const struct snap_file **ret);
/* Calls cb for each direct child of directory dir ("" = root) once. */
int snapview_list(struct snapview *v, const char *dir,
		  int (*cb)(const char *child, const struct snap_file *f, void *ud), void *ud);
void snap_cache_free(struct fs *fs);

/* ---- ctl.c ---------------------------------------------------------------- */

/* One line written to ctl, parsed. */
enum ctl_kind {
	CTL_CHECKPOINT,
	CTL_EVERY,
	CTL_EVERY_OFF,
	CTL_UNTRACK,
	_CTL_KIND_MAX,
};

struct ctl_cmd {
	enum ctl_kind kind;
	enum engine_after after; /* CHECKPOINT */
	uint64_t every_ms;       /* EVERY */
	unsigned keep;           /* EVERY */
};

/* Runs one ctl command line for pid on behalf of caller; returns when the
 * snapshot is durable. -EINVAL for a bad command. */
int ctl_command(struct fs *fs, pid_t pid, uid_t caller, const char *line, size_t len);
/* Checkpoints pid as ctl's `checkpoint` does; owner: the uid its snapshot
 * belongs to. Waits while a checkpoint of pid runs when either is
 * periodic; -EBUSY when both are not. *ret_n: the new snapshot's number. */
int ctl_checkpoint(struct fs *fs, pid_t pid, uid_t owner, enum engine_after after, bool periodic,
		   uint32_t *ret_n);
/* Keeps a keeper started for the checkpoints (engine_keeper_ahead), so
 * that a checkpoint starts no process: at mount, and after each
 * checkpoint (where that one ended). ctl_keeper_end() at unmount. */
void ctl_keeper_ahead(void);
void ctl_keeper_end(void);
/* True while a checkpoint of pid runs; its phase and progress then go
 * to the pointers that are not NULL. */
bool ctl_progress(struct fs *fs, pid_t pid, enum engine_phase *phase, uint64_t *done, uint64_t *total);
/* The text of /<pid>/status into a malloc'd buffer. */
int ctl_status(struct fs *fs, pid_t pid, char **ret, size_t *ret_len);
/* True while a checkpoint of pid runs or pid has state here. */
bool ctl_known(struct fs *fs, pid_t pid);
void ctl_free(struct fs *fs);
/* Waits until every ctl write being run has been answered and every
 * periodic checkpoint has ended (ops.c). */
void ctl_jobs_wait(struct fs *fs);
/* Runs fn(arg) on a detached thread counted in fs->ctl_jobs; fn calls
 * ctl_job_end() last. -errno when no thread could start (arg is the
 * caller's again). */
int ctl_job_spawn(struct fs *fs, void *(*fn)(void *), void *arg);
void ctl_job_end(struct fs *fs);

/* ---- policy.c -------------------------------------------------------------- */

/* Parses the words after `every` into cmd (-EINVAL with the reason). */
int policy_parse(char **words, size_t n, struct ctl_cmd *cmd);
/* Sets pid's policy for caller (who may checkpoint pid: checked before),
 * replacing one it had, and stores it; returns once it is durable. */
int policy_set(struct fs *fs, pid_t pid, uid_t caller, uint64_t every_ms, unsigned keep);
/* Removes pid's policy (none: nothing to do), after a periodic
 * checkpoint of it that runs has ended. Without may_checkpoint (the
 * process is gone, or is not caller's now) only root and the uid that
 * set it may: -EPERM, or -ESRCH when there is no policy to remove. */
int policy_off(struct fs *fs, pid_t pid, uid_t caller, bool may_checkpoint);
/* The policy's lines of /<pid>/status (malloc'd; NULL on ENOMEM). */
char *policy_status(struct fs *fs, pid_t pid);
/* What the API shows of a policy: a copy, taken under fs->lock. */
struct policy_info {
	uid_t uid;              /* who set it */
	uint64_t every_ms;
	char every[32];         /* as `every` takes it: 30s, 10m, 2h */
	unsigned keep;
	int64_t set_ms, next_ms, last_ms; /* ms since the epoch; last 0: no run yet */
	bool running, stopped, last_ok;
	char why[256];          /* stopped: why */
	uint32_t last_snap;
	char last_error[512];
	uint64_t runs, fails;
	size_t nsnaps;          /* its snapshots kept now */
};
/* pid's policy into *ret: false when it has none. */
bool policy_get(struct fs *fs, pid_t pid, struct policy_info *ret);
/* Reads the policies from the store and starts the timer thread. */
int policy_start(struct fs *fs);
/* Ends the timer thread (periodic checkpoints under way go on: wait for
 * them with ctl_jobs_wait) and, after that, frees the policies. */
void policy_stop(struct fs *fs);
void policy_free(struct fs *fs);

/* ---- track.c --------------------------------------------------------------- */

/* -o track=on: this budget, or a quarter of the machine's memory if
 * less; without -o track nothing is kept. */
#define FS_TRACK_BUDGET_ON (8ull << 30)
#define FS_TRACK_IDLE_DEFAULT_S 600u
/* Parses -o track=SIZE (on, off, 0, or N with K, M, G, T) and -o
 * track_idle=SECONDS into fs; -EINVAL with the reason. Either may be NULL. */
int track_options(struct fs *fs, const char *budget, const char *idle);
/* The tracking kept for pid's next checkpoint, taken out of ps (NULL:
 * none, or keeping is off). */
struct engine_track *track_take(struct fs *fs, struct pidstate *ps);
/* After a checkpoint of ps->pid: keeps t (may be NULL) for the next one
 * where the budget allows (older ones of other pids dropped first,
 * least recently used first), else drops it. */
void track_keep(struct fs *fs, struct pidstate *ps, struct engine_track *t);
/* ctl's `untrack`: drops pid's tracking, if any, waiting for a
 * checkpoint of it that runs to end first. */
int track_drop(struct fs *fs, pid_t pid);
/* The tracking line of /<pid>/status ("tracking: ..."), into buf. */
void track_status(struct fs *fs, pid_t pid, char *buf, size_t len);
/* The thread that drops tracking unused for track_idle_s, and that of
 * processes gone. */
int track_start(struct fs *fs);
/* Ends it and drops every tracking kept (the processes lose their
 * registration). Idempotent. */
void track_stop(struct fs *fs);

/* ---- restore.c ------------------------------------------------------------ */

/* A file of a restore being written, as an open FUSE file holds it. */
struct rfile;

int restore_mkdir(struct fs *fs, uid_t uid, gid_t gid, const char *name);
/* Removes restore name: aborts it when still receiving, deletes the
 * committed snapshot otherwise (a running process is not touched). */
int restore_rmdir(struct fs *fs, uid_t uid, const char *name);
bool restore_exists(struct fs *fs, uid_t uid, const char *name);
int restore_foreach(struct fs *fs, uid_t uid, int (*cb)(const char *name, void *ud), void *ud);
/* Inside restore name: 1 file (size in *size), 2 directory, 0 absent. */
int restore_lookup(struct fs *fs, uid_t uid, const char *name, const char *path, uint64_t *size);
int restore_list(struct fs *fs, uid_t uid, const char *name, const char *dir,
		 int (*cb)(const char *child, bool is_dir, uint64_t size, void *ud), void *ud);
int restore_subdir(struct fs *fs, uid_t uid, const char *name, const char *path);
int restore_create(struct fs *fs, uid_t uid, const char *name, const char *path, struct rfile **ret);
/* A write in two steps, so that it can be answered before it is
 * ingested: begin (before the answer; -EIO once the restore has failed),
 * then end (after it, on the same thread) ingests the bytes, buf NULL
 * when the answer could not be sent. A failure in end fails the restore,
 * and reaches the writer at its next write or flush. restore_write() does
 * both, for a caller that answers afterwards. */
int restore_write_begin(struct rfile *f, size_t len, uint64_t off);
int restore_write_end(struct rfile *f, const void *buf, size_t len, uint64_t off);
int restore_write(struct rfile *f, const void *buf, size_t len, uint64_t off);
/* -EIO when the restore has failed (close() then reports it). */
int restore_flush(struct rfile *f);
int restore_truncate(struct rfile *f, uint64_t size);
/* Grows the file to size if it is smaller (a hole at its end). */
int restore_extend(struct rfile *f, uint64_t size);
int restore_truncate_path(struct fs *fs, uid_t uid, const char *name, const char *path, uint64_t size);
/* Closes the file: it is whole now; may start the restore. */
int restore_release(struct fs *fs, struct rfile *f);
int restore_status(struct fs *fs, uid_t uid, const char *name, char **ret, size_t *ret_len);
/* Waits until restore name, whose files are all closed, is verified or
 * refused: 0 once it verified (restoring, running, or failed in the
 * engine after that); -EINVAL with err_msg() naming the file and the
 * reason when its verification refused it or a file the manifest names
 * (or the manifest) never came; -ENOENT when it was removed. */
int restore_wait_verified(struct fs *fs, uid_t uid, const char *name);
/* One line written to restore/<name>/ctl (see restore.c): options for the
 * engine's restore, or a retry of one that failed. Returns at once; the
 * outcome shows in status. -EINVAL for a word it does not know or nothing
 * to retry, -EBUSY while the restore runs or once the process runs. */
int restore_ctl(struct fs *fs, uid_t uid, const char *name, const char *buf, size_t len);
/* main() of `ckptfs --restore-helper ...` (see restore.c). */
int restore_helper_main(int argc, char **argv);
/* Waits for restore threads and frees everything. */
void restore_free_all(struct fs *fs);

/* ---- api.c --------------------------------------------------------------- */

/* The API's socket when no -o api= names one: /run/ckptfs/api.sock for
 * root, $XDG_RUNTIME_DIR/ckptfs/api.sock for others (NULL: none). */
char *api_default_path(void);
/* Listens on spec and tcp_spec and serves the API on threads of its
 * own, the same jobs on both. spec: a Unix socket's path (made 0666 in
 * a directory made 0755; a stale one replaced, -EADDRINUSE when a daemon
 * answers on it), HOST:PORT for TCP instead, or NULL; tcp_spec: HOST:PORT
 * of a TCP listener beside the socket, or NULL. On TCP every request
 * must carry the bearer token read from token_file and acts as that
 * file's owner. Nothing listens after a failure. */
int api_start(struct fs *fs, const char *spec, const char *tcp_spec, const char *token_file, struct api **ret);
/* Stops serving (long polls end) and removes the socket; jobs under way
 * go on (ctl_jobs_wait waits for them), then api_free. */
void api_stop(struct api *a);
void api_free(struct api *a);

/* ---- readme.c ------------------------------------------------------------- */

extern const char fs_readme[];
size_t fs_readme_len(void);

/* ---- ops.c ----------------------------------------------------------------- */

extern const struct fuse_lowlevel_ops fs_ops;
/* Frees the handles of files still open when the FUSE loop has ended
 * (no release will come for them); before restore_free_all() and
 * snap_cache_free(), whose objects they hold. */
void fs_handles_free(struct fs *fs);

#endif
