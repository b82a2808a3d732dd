/*
 * engine/ internal: the contract between the dump/restore core and the
 * file descriptor code (fds*.c). Private to engine/.
 *
 * Dump:    fds_check() before the process is touched (refuse unsupported
 *          kinds by name); fds_capture() while it is frozen; fds_write()
 *          after it runs again.
 * Restore: fds_load() in the restoring parent; fds_restore() in the new
 *          process, as ordinary C, before its memory is replaced: it opens
 *          or creates every descriptor at its number and closes every other.
 */
#ifndef CKPTFS_ENGINE_FDS_H
#define CKPTFS_ENGINE_FDS_H

#include <stdbool.h>
#include <sys/types.h>

#include "store/store.h"

struct fd_image; /* every descriptor of one process, captured or loaded */

/* Looks at pid's descriptors from /proc without touching the process
 * (an epoll watch on a number it closed, whose file none of its
 * descriptors holds, is for fds_check_tree()).
 * -EOPNOTSUPP with a detail naming the first descriptor whose kind is not
 * supported ("fd 5: established TCP socket 10.0.0.1:22 -> ...: not supported"). */
int fds_check(pid_t pid);

/* The checks only the whole tree allows, before any process of it is
 * touched (pids: every live process of the tree): a Unix socket pair whose
 * other end no process of the tree holds, an O_ASYNC owner outside the
 * tree, an epoll watch whose file no process of the tree holds.
 * fds_check() of each accepts those, as its process alone cannot tell.
 * -EOPNOTSUPP with a detail naming the pid and descriptor. */
int fds_check_tree(const pid_t *pids, size_t n);

/* Captures pid's descriptor table while all its threads are stopped
 * (queued pipe bytes, offsets, fdinfo state). Never changes what the
 * process sees: bytes are peeked, not consumed. */
int fds_capture(pid_t pid, struct fd_image **ret);

/* fds_capture() for a process that keeps its connections (it runs on,
 * or is left stopped): its TCP connections are not put under the network
 * lock, whose dropped packets would cost their peers a retransmission
 * timeout; their queues are read consistently all the same (fds-tcp.c). */
int fds_capture_running(pid_t pid, struct fd_image **ret);

/* Dump, after fds_capture(): the established TCP connections it holds in
 * repair mode, under the network lock (fds-tcp.c), are let go. killed
 * false: before the process runs again (or stays stopped), each leaves
 * repair mode and its lock is lifted; killed true: once the process is
 * killed, each is closed still in repair mode (no FIN, no reset) and its
 * lock stays for the restore. fds_free() does the former for an image
 * not released. Returns the first error of the lock (-errno, detail). */
int fds_release(struct fd_image *img, bool killed);

/* Dump, after fds_capture(): the TCP connections img holds in repair
 * mode and under the network lock, for the keeper (keeper_tcp_hold):
 * their descriptor numbers and 4-tuples, malloc'd (NULL and 0 when
 * none). */
struct netlock_conn;
int fds_held(struct fd_image *img, int **ret_fds, struct netlock_conn **ret_conns, size_t *ret_n);

/* Restore, before any process is made (lock true): the TCP connections
 * of imgs (n images, NULL ones skipped) whose other end is among them
 * too go under the network lock, so that the first end rebuilt sends
 * nothing the other, not yet rebuilt, would answer with a reset (a
 * snapshot dumped running has no lock of its own). fds_unlock() lifts it
 * once they run; a failed restore lifts it with lock false. -errno with a
 * detail. */
int fds_lock_inner(struct fd_image **imgs, size_t n, bool lock);

/* Restore, once the processes run: lifts the network lock of img's TCP
 * connections (NULL: none). -errno with a detail. */
int fds_unlock(struct fd_image *img);

/* An empty image (NULL when out of memory): what a process of a tree
 * that shares another's descriptor table (CLONE_FILES) holds as its own;
 * the other's image is the table. */
struct fd_image *fds_image_new(void);

/* Restore, before any process is made: the `memfd` and `deleted` lines
 * of img whose file is the tree's shared memory object id (made by the
 * restore from the areas that map it, dev and ino as `maps` shows them)
 * reopen that object instead of making a file of their own, so that the
 * descriptor and the mappings stay one file. Call for every area of the
 * tree with a shared object, on every image (the shared one too). */
void fds_shm_bind(struct fd_image *img, unsigned dev_major, unsigned dev_minor, uint64_t ino, uint32_t id);
/* Then: -EBADMSG naming the line when one whose content the areas hold
 * (content=shm) found no object. */
int fds_shm_check(struct fd_image *img);

/* A deleted directory made again (fds-file.c), for a descriptor or a
 * cwd: an empty directory made at a temporary name beside path (in its
 * parent, or in /tmp when that is gone), given mode, the owner uid:gid
 * (unless uid is -1) and times (NULL: the restore's), opened with flags
 * (O_RDONLY, O_PATH, ... ; O_DIRECTORY and O_CLOEXEC added) and removed,
 * so that the caller holds a deleted directory as the process did.
 * Returns the descriptor or -errno with a detail naming path; nothing is
 * left in the parent either way. */
struct timespec;
int fds_deleted_dir_open(const char *path, unsigned mode, uid_t uid, gid_t gid, const struct timespec *times,
			 int flags);

/* Writes the `fds` text file and whatever data files it names into w. */
int fds_write(struct fd_image *img, struct store_snap *w);

/* Reads `fds` (and its data files) from a snapshot and validates it:
 * numbers, kinds, paths; then checks the host: a file, directory or FIFO
 * reopened by path must still be there and be the one dumped (-ESTALE
 * naming it and what changed), unless accept_changed. */
int fds_load(struct store_snap *r, bool accept_changed, struct fd_image **ret);

/* Runs in the new process, before its memory is replaced, with all signals
 * blocked: makes the descriptor table exactly the image's. A `shared` line
 * is dup3()'d from descriptor shared_base + its id, which the process
 * inherited from fds_open_shared() in the one that forked the tree;
 * shared_base must be above fds_max(img), or -1 when the image has no
 * `shared` line (a single process). shared is the tree's shared image
 * (NULL: none): the O_ASYNC owner of a shared description is set here, by
 * the processes that hold it, since it names a process of the tree and
 * every process of it must exist by now (F_SETOWN_EX fails otherwise). Every descriptor above fds_max() is
 * closed at the end, the shared ones included, but those from keep_from
 * up when keep_from >= 0 (above fds_max(): the shared memory objects the
 * core maps afterwards and then closes). Returns -errno with a detail;
 * the caller then reports and the process is killed. */
int fds_restore(struct fd_image *img, struct fd_image *shared, int shared_base, int keep_from);

/* Highest descriptor number the image uses, or -1: the restore keeps its
 * own working descriptors above it. */
int fds_max(struct fd_image *img);

/* Number of lines of the image: for a tree's shared image, the number of
 * shared open file descriptions (ids 0..count-1). */
int fds_count(struct fd_image *img);

/* ---- process trees ------------------------------------------------------------
 *
 * A tree's snapshot holds one image per process and one shared image (the
 * `fds` format, the first number of a line being an id, not a descriptor
 * number) of what several processes share: open file descriptions
 * inherited across fork, and pipes whose ends are in different processes.
 * A process's image names a shared description with a `shared of=<id>`
 * line. */

/* Dump, once every process of the tree is frozen and fds_capture()d
 * (imgs[i] of pids[i], i < n): moves every open file description used by
 * several processes (kcmp(KCMP_FILE)), and every end of each pipe whose
 * ends are in different processes, into a new image *ret, ids 0.. in the
 * order of imgs and descriptor numbers, and turns each descriptor of them
 * into a `shared` line. A process's dups of such a descriptor stay dups.
 * The description holding the file of an epoll watch whose number its
 * process closed, held by another process, moves too, and the watch
 * names its id. Returns -EOPNOTSUPP naming the pids and descriptors for
 * what cannot be shared (an epoll instance, whose watches name one
 * process's descriptors; a pidfd of a process of the tree), or for such
 * a watch whose file no process holds; the images are then unchanged. *ret is empty when nothing
 * is shared; it is the caller's, to fds_write() and fds_free(). */
int fds_share(struct fd_image **imgs, const pid_t *pids, size_t n, struct fd_image **ret);

/* Restore, after fds_load() of every image: -EBADMSG with a detail unless
 * shared is a shared image (ids 0..n-1 in order, no dup, shared or epoll
 * line) and every `shared` line of img (NULL: none checked) names one of
 * its ids. */
int fds_validate_shared(struct fd_image *img, struct fd_image *shared);

/* Restore, in the process that forks the whole tree, before any process of
 * it exists: opens every shared description (queued pipe bytes, offsets,
 * status flags) at descriptor base + id, O_CLOEXEC. base must be above
 * every process's fds_max(), and base .. base + fds_count() - 1 free
 * (-EBUSY otherwise) and below RLIMIT_NOFILE; the shared memory objects
 * at shm_base (-1: none), as for fds_restore()'s keep_from. On failure
 * nothing of it stays open. */
int fds_open_shared(struct fd_image *shared, int base, int shm_base);

/* Restore, in a session leader just after setsid(), before it forks:
 * when the shared image (inherited at base + id) holds the pseudo-terminal
 * whose slave was session sid's controlling terminal, makes it this
 * session's (TIOCSCTTY) and sets *ret_fg to the foreground group it had
 * (as numbered at dump); otherwise *ret_fg is 0. Children forked
 * afterwards share it. */
int fds_ctty_take(struct fd_image *shared, int base, pid_t sid, pid_t *ret_fg);
/* Then, once every group of the tree exists: makes pgid the foreground
 * group of that terminal (TIOCSPGRP). */
int fds_ctty_foreground(struct fd_image *shared, int base, pid_t sid, pid_t pgid);

/* Dump, after fds_capture(): refuses (-EOPNOTSUPP, naming the fd) a POSIX
 * lock of the process on a file it also maps (dev[k], ino[k]: st_dev and
 * st_ino of its mapped files), which the restore would lose. */
int fds_check_mapped_locks(struct fd_image *img, const uint64_t *dev, const uint64_t *ino, size_t n);

void fds_free(struct fd_image *img);

#endif
