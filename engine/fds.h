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

/* Looks at pid's descriptors from /proc without touching the process.
 * -EOPNOTSUPP with a detail naming the first descriptor whose kind is not
 * supported ("fd 5: established TCP socket 10.0.0.1:22 -> ...: not supported"). */
int fds_check(pid_t pid);

/* Captures pid's descriptor table while all its threads are stopped
 * (queued pipe bytes, offsets, fdinfo state). Never changes what the
 * process sees: bytes are peeked, not consumed. */
int fds_capture(pid_t pid, struct fd_image **ret);

/* Writes the `fds` text file and whatever data files it names into w. */
int fds_write(struct fd_image *img, struct store_snap *w);

/* Reads `fds` (and its data files) from a snapshot and validates it:
 * numbers, kinds, paths; then checks the host: a file, directory or FIFO
 * reopened by path must still be there and be the one dumped (-ESTALE
 * naming it and what changed), unless accept_changed. */
int fds_load(struct store_snap *r, bool accept_changed, struct fd_image **ret);

/* Runs in the new process, before its memory is replaced, with all signals
 * blocked: makes the descriptor table exactly the image's. Returns -errno
 * with a detail; the caller then reports and the process is killed. */
int fds_restore(struct fd_image *img);

/* Highest descriptor number the image uses, or -1: the restore keeps its
 * own working descriptors above it. */
int fds_max(struct fd_image *img);

void fds_free(struct fd_image *img);

#endif
