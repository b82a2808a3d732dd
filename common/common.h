/*
 * common: logging, cleanup helpers, fault injection, small macros.
 *
 * Depends on nothing but libc; every other module may include it. The
 * library code of other modules never prints except through log_*(), and
 * logs once, where an outcome is decided (see STYLE.md).
 */
#ifndef CKPTFS_COMMON_H
#define CKPTFS_COMMON_H

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- macros ------------------------------------------------------------ */

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))
#define ALIGN_UP(x, a) (((x) + ((a) - 1)) & ~((typeof(x))(a) - 1))
#define ALIGN_DOWN(x, a) ((x) & ~((typeof(x))(a) - 1))
#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)
#define _unused_ __attribute__((unused))
#define _printf_(a, b) __attribute__((format(printf, a, b)))
#define _noreturn_ __attribute__((noreturn))

/* Returns -errno of the last libc failure; never 0 (a libc that failed
 * without setting errno still yields an error). */
static inline int negerrno(void)
{
	return errno > 0 ? -errno : -EIO;
}

/* ---- cleanup ----------------------------------------------------------- */

static inline void freep(void *p)
{
	free(*(void **)p);
}

static inline void closep(int *fd)
{
	if (*fd >= 0) {
		int saved = errno;
		close(*fd);
		errno = saved;
	}
}

static inline void fclosep(FILE **f)
{
	if (*f)
		fclose(*f);
}

#define _cleanup_(f) __attribute__((cleanup(f)))
#define _cleanup_free_ _cleanup_(freep)
#define _cleanup_close_ _cleanup_(closep)
#define _cleanup_fclose_ _cleanup_(fclosep)

/* Hands a pointer (or fd) out of a cleanup scope: returns it and clears the
 * variable so the cleanup handler does nothing. */
#define TAKE_PTR(p)                        \
	({                                 \
		typeof(p) _tp = (p);       \
		(p) = NULL;                \
		_tp;                       \
	})
#define TAKE_FD(fd)                        \
	({                                 \
		int _tf = (fd);            \
		(fd) = -1;                 \
		_tf;                       \
	})

/* Declares a cleanup function `NAMEp(type **)` calling `func(*p)` when set. */
#define DEFINE_TRIVIAL_CLEANUP_FUNC(type, func)       \
	static inline void func##p(type *p)           \
	{                                             \
		if (*p)                               \
			func(*p);                     \
	}

/* ---- logging ----------------------------------------------------------- */

enum log_level {
	LOG_LEVEL_ERR,
	LOG_LEVEL_WARN,
	LOG_LEVEL_INFO,
	LOG_LEVEL_DEBUG,
	_LOG_LEVEL_MAX,
};

enum log_target {
	LOG_TARGET_STDERR,
	LOG_TARGET_SYSLOG,
	_LOG_TARGET_MAX,
};

/* Process-wide settings; call before threads start. The level also comes
 * from CKPTFS_LOG=err|warn|info|debug when log_setup_env() is called. */
void log_set_level(enum log_level level);
void log_set_target(enum log_target target, const char *ident);
void log_setup_env(void);
enum log_level log_get_level(void);

/* Writes one line. With err != 0 appends ": strerror(-err)". Returns err so
 * that `return log_err_errno(r, ...)` passes the error on. Thread-safe. */
int log_msg(enum log_level level, int err, const char *fmt, ...) _printf_(3, 4);

#define log_err(...) log_msg(LOG_LEVEL_ERR, 0, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_LEVEL_WARN, 0, __VA_ARGS__)
#define log_info(...) log_msg(LOG_LEVEL_INFO, 0, __VA_ARGS__)
#define log_debug(...)                                            \
	do {                                                      \
		if (unlikely(log_get_level() >= LOG_LEVEL_DEBUG)) \
			log_msg(LOG_LEVEL_DEBUG, 0, __VA_ARGS__); \
	} while (0)
#define log_err_errno(e, ...) log_msg(LOG_LEVEL_ERR, (e), __VA_ARGS__)
#define log_warn_errno(e, ...) log_msg(LOG_LEVEL_WARN, (e), __VA_ARGS__)
#define log_debug_errno(e, ...) log_msg(LOG_LEVEL_DEBUG, (e), __VA_ARGS__)

/* ---- error detail ------------------------------------------------------
 *
 * An -errno says what kind of failure; the detail says which object and
 * why ("memory/7f..: hash mismatch"). A failing function may record one
 * per thread with err_set(); whoever logs or reports the outcome reads it
 * with err_msg(). Like errno, it is only meaningful right after a failure.
 */

/* Records the detail for this thread and returns err. */
int err_set(int err, const char *fmt, ...) _printf_(2, 3);
/* The last detail recorded on this thread, or "" (never NULL). */
const char *err_msg(void);
void err_clear(void);

/* ---- fault injection ----------------------------------------------------
 *
 * Tests reach error paths by number, as CRIU does: CKPTFS_FAULT=N (or a
 * comma-separated list, each optionally "N:K" to fire on the K-th hit only)
 * makes fault_hit(N) return true. A site that fires logs it at debug level.
 * Numbers are listed here so that they stay unique; docs/TESTING.md says
 * what each does.
 */
enum fault_id {
	FAULT_NONE = 0,
	/* store/ 100-199 */
	FAULT_STORE_PACK_WRITE = 100,       /* a pack write fails (EIO) */
	FAULT_STORE_CRASH_BEFORE_PACK_FSYNC = 101, /* _exit before packs are fsynced */
	FAULT_STORE_CRASH_BEFORE_INDEX = 102, /* _exit after pack fsync, before index commit */
	FAULT_STORE_CRASH_MID_BATCH = 103,  /* _exit with the index batch half written */
	FAULT_STORE_DIR_WRITE = 110,        /* a snapshot-directory write fails (EIO) */
	FAULT_STORE_CRASH_BEFORE_MANIFEST = 111, /* _exit before the manifest is written */
	FAULT_STORE_CRASH_BEFORE_RENAME = 112, /* _exit before the snapshot directory is renamed in place */
	FAULT_STORE_DIR_DIRECT = 113,       /* an O_DIRECT snapshot-directory write is refused (EINVAL) */
	FAULT_STORE_GC_CRASH = 120,         /* _exit in gc after new packs, before the index switch */
	/* engine/ 200-299 */
	FAULT_ENGINE_SEIZE = 200,           /* seizing a thread fails */
	FAULT_ENGINE_REGS = 201,            /* reading registers fails */
	FAULT_ENGINE_MEMORY = 202,          /* reading memory fails */
	FAULT_ENGINE_FDS = 203,             /* capturing descriptors fails */
	FAULT_ENGINE_WRITE = 204,           /* writing the image fails */
	FAULT_ENGINE_COMMIT = 205,          /* the snapshot commit fails */
	FAULT_ENGINE_ARENA = 206,           /* no memory for the copy before the freeze (it maps as it goes) */
	FAULT_ENGINE_RESTORE_MAP = 210,     /* restore: mapping memory fails */
	FAULT_ENGINE_RESTORE_LATE = 211,    /* restore: failure after threads were created */
	FAULT_ENGINE_LAZY_UFFD = 212,       /* lazy restore: making the userfaultfd fails */
	FAULT_ENGINE_LAZY_READ = 213,       /* lazy restore: reading a page to load fails (EIO) */
	/* gpu/ 300-399 */
	FAULT_GPU_LOCK = 300,
	FAULT_GPU_CHECKPOINT = 301,
	FAULT_GPU_RESTORE = 302,            /* cuCheckpointProcessRestore fails */
	FAULT_GPU_UNLOCK = 303,             /* cuCheckpointProcessUnlock fails */
	FAULT_GPU_DIE_LOCKED = 310,         /* dumper killed (SIGKILL) once the GPU is locked */
	FAULT_GPU_DIE_CHECKPOINTED = 311,   /* dumper killed once the GPU is checkpointed */
	FAULT_GPU_HBM_WRITE = 312,          /* writing a gpu/hbm/ file fails (EIO) */
	FAULT_GPU_DIE_HBM_WRITE = 313,      /* dumper killed while writing a gpu/hbm/ file */
	/* fs/ 400-499 */
	FAULT_FS_CTL = 400,
	FAULT_FS_API_LISTEN = 410,          /* the API's socket cannot be set up (EIO): the mount goes on without it */
	FAULT_FS_API_JOB = 411,             /* the API cannot start a checkpoint job (503) */
	FAULT_FS_API_EXPORT_READ = 433,     /* an export's store read fails half way: the stream ends short */
	/* engine/: watchers and handles (pidfds, epoll, AIO), 412-417 */
	FAULT_ENGINE_PIDFD_RESTORE = 412,   /* restore: reopening a pidfd fails */
	FAULT_ENGINE_EPOLL_VIA = 413,       /* restore: an epoll watch under a closed number fails, that number borrowed */
	FAULT_ENGINE_AIO_RESTORE = 414,     /* restore: an AIO context made again, not yet moved to its address */
	FAULT_KEEPER_AHEAD_GONE = 415,      /* dump: the keeper started ahead is found dead (killed at the hand-over) */
	FAULT_ENGINE_PRECOPY_LATE = 416,    /* pre-copy: the freeze comes 300 ms after the last round (the process
					     * writes and drops pages meanwhile) */
	FAULT_ENGINE_PRECOPY_LONG_WALK = 417, /* pre-copy: the freeze walks every page table entry, as on a kernel
					       * whose short walk misses dropped pages */
	/* engine/, descriptors and directories in odd states (numbers given out from 418) */
	FAULT_ENGINE_DELETED_DIR = 418,     /* restore: a deleted directory made again, once opened (it is removed) */
	FAULT_ENGINE_DELETED_FIFO = 419,    /* restore: a deleted FIFO made again, once opened (it is removed) */
	FAULT_ENGINE_SPARSE_FILL = 420,     /* restore: writing a data run of a deleted file or memfd fails (EIO) */
	FAULT_ENGINE_SHM_FD = 421,          /* restore: a descriptor of a mapped memfd or deleted file cannot reopen its object */
	FAULT_ENGINE_PIPE_REOPEN = 422,     /* restore: another description of a pipe cannot be reopened */
	/* engine/: the dumper dies (SIGKILL) while the keeper holds the target */
	FAULT_ENGINE_DIE_SEIZED = 220,      /* dumper: once every thread is stopped */
	FAULT_ENGINE_DIE_INJECT = 221,      /* keeper kills the dumper: an injected call's registers set */
	FAULT_ENGINE_DIE_SIGMASK = 222,     /* keeper kills the dumper: every signal blocked */
	FAULT_ENGINE_DIE_MEMORY = 223,      /* dumper: copying memory */
	FAULT_ENGINE_DIE_FDS = 224,         /* dumper: capturing descriptors */
	FAULT_ENGINE_DIE_WRITE = 225,       /* dumper: writing memory files */
	FAULT_ENGINE_DIE_COMMIT = 226,      /* dumper: just before the commit */
	FAULT_ENGINE_DIE_LAZY = 227,        /* lazy restore: the loader dies before its first copy */
	FAULT_ENGINE_PRECOPY_UFFD = 230,    /* pre-copy: the injected userfaultfd() fails */
	FAULT_ENGINE_PRECOPY_TAKE = 231,    /* pre-copy: taking it out (pidfd_getfd) fails, made already */
	FAULT_ENGINE_PRECOPY_REGISTER = 232, /* pre-copy: registering an area fails */
	FAULT_ENGINE_PRECOPY_COPY = 233,    /* pre-copy: reading pages into the copy fails */
	FAULT_ENGINE_PRECOPY_UNTRACK = 234, /* pre-copy: removing the protection piece by piece fails */
	FAULT_ENGINE_DIE_PRECOPY_UFFD = 235, /* keeper kills the dumper: the userfaultfd made in the target */
	FAULT_ENGINE_DIE_PRECOPY = 236,     /* dumper: during a pre-copy round, the process tracked */
	FAULT_ENGINE_PRECOPY_DIVERGE = 237, /* pre-copy: every round counts as leaving as much as the last */
	FAULT_ENGINE_TRACK_RESUME = 238,    /* kept tracking: checking it still holds fails (the full path) */
	FAULT_ENGINE_TRACK_ROUND = 239,     /* kept tracking: the first round from it fails (the full path) */
	FAULT_ENGINE_TRACK_KEEP = 240,      /* kept tracking: keeping it after a dump fails (it is removed) */
	FAULT_ENGINE_TRACK_WRITE = 241,     /* kept tracking: writing a memory file with the kept hashes fails (EIO) */
	FAULT_ENGINE_TRACK_DIE_DROP = 242,  /* kept tracking: the holder killed (SIGKILL) as it drops it */
	FAULT_ENGINE_RESTORE_ATTRS = 250,   /* restore: setting the process attributes fails */
	FAULT_ENGINE_RESTORE_ADVICE = 251,  /* restore: setting an area's advice or lock fails */
	FAULT_ENGINE_RESTORE_SCHED = 252,   /* restore: setting a thread's scheduling fails */
	FAULT_ENGINE_PTY_DRAIN = 260,       /* dump: reading a pty's queues fails once the slave's are out */
	FAULT_ENGINE_PTY_CAPTURE = 261,     /* dump: a pty's capture fails once its queues are read and put back */
	FAULT_ENGINE_PTY_RESTORE = 262,     /* restore: refilling a new pty fails */
	FAULT_ENGINE_PTY_NO_STI = 263,      /* dump and restore: as without TIOCSTI: queued pty bytes go through the other side */
	FAULT_ENGINE_NETLOCK = 280,         /* dump: the network lock of TCP connections cannot be added */
	FAULT_ENGINE_TCP_REPAIR = 281,      /* dump: a TCP connection's state cannot be read (in repair mode) */
	FAULT_ENGINE_TCP_QUEUE = 282,       /* dump: a TCP connection's queues cannot be read (in repair mode) */
	FAULT_ENGINE_TCP_RESTORE = 283,     /* restore: a TCP connection's queues cannot be written back */
	FAULT_ENGINE_DIE_TCP = 284,         /* dumper killed holding TCP connections in repair mode, locked */
	FAULT_ENGINE_UNIX_PEEK = 430,       /* dump: reading a Unix socket's queued messages fails once all are read */
	FAULT_ENGINE_UNIX_REFILL = 431,     /* restore: writing a Unix socket's queued messages back fails half way */
	FAULT_ENGINE_UNIX_NAME = 432,       /* restore: a step fails once a Unix socket's name is bound (a deleted or
					     * moved-aside path, a listener made for a connection) */
	FAULT_ENGINE_INJECT_BATCH = 423,    /* dump: a batch of injected calls ran, its stop is refused (the keeper) */
	FAULT_ENGINE_INJECT_RUNNER = 427,   /* dump: the batch runner cannot be written: the calls go one at a time */
	FAULT_ENGINE_FANOTIFY_MARK = 424,   /* restore: adding a fanotify group's last mark fails */
	FAULT_ENGINE_NETLINK_GROUP = 425,   /* restore: joining a netlink socket's multicast group fails */
	FAULT_ENGINE_PACKET_BIND = 426,     /* restore: binding a packet socket to its interface fails */
	_FAULT_MAX,
};

/* True when fault `id` is armed in CKPTFS_FAULT for this hit. Cheap when
 * nothing is armed. Thread-safe. */
bool fault_hit(enum fault_id id);

/* Re-reads CKPTFS_FAULT (tests that set it after start). */
void fault_reload(void);

/* ---- small helpers ------------------------------------------------------ */

/* Writes all of buf, retrying short writes and EINTR. Returns 0 or -errno. */
int write_full(int fd, const void *buf, size_t len);
/* Like pread/pwrite but loops until all is done; a read at EOF returns the
 * count read so far. Returns bytes or -errno. */
ssize_t pread_full(int fd, void *buf, size_t len, off_t off);
int pwrite_full(int fd, const void *buf, size_t len, off_t off);
/* Reads a whole (small) file into a NUL-terminated malloc'd buffer. */
int read_file_full(const char *path, char **ret, size_t *ret_len);
/* The fields of /proc/PID/stat (or /proc/PID/task/TID/stat when tid > 0)
 * by their number in proc(5): f[3] the state letter, f[4] the parent,
 * f[22] the start time, ..., up to f[PROC_STAT_FIELDS - 1]; fields the
 * kernel does not show are 0, negative ones wrap (cast them back). The
 * name (field 2) may hold spaces and parentheses: the fields are read
 * after its last ')'. Returns the number of the last field read, -ENOENT
 * when there is no such process, -EBADMSG when the file is malformed. */
#define PROC_STAT_FIELDS 53
int proc_stat_read(pid_t pid, pid_t tid, uint64_t f[PROC_STAT_FIELDS]);
/* fsyncs the directory that contains path (or path itself if a dir). */
int fsync_dir(const char *dir);
/* mkdir -p with mode. */
int mkdir_p(const char *path, mode_t mode);
/* rm -rf; returns 0 when path does not exist. */
int rm_rf(const char *path);
/* Monotonic time in nanoseconds. */
uint64_t now_ns(void);
/* Parses a non-negative decimal integer that must fill the whole string. */
int parse_u64(const char *s, uint64_t *ret);
/* Human readable size ("1.5 GiB") into buf. */
const char *fmt_bytes(uint64_t n, char *buf, size_t len);

#endif
