/*
 * engine: checkpoint and restore of Linux processes (x86-64).
 *
 * A dump stops the process only while it takes a consistent view of it
 * (threads, registers, memory layout, descriptors, a copy of its memory),
 * lets it run again, then writes the snapshot tree through store/. Most
 * of the copy is made before, while it runs (pre-copy, engine/precopy.c):
 * the freeze then copies only what it wrote since. A
 * restore reads a snapshot tree, rebuilds the process with the same PID and
 * thread IDs and lets it run. The engine never knows which store backend
 * it talks to.
 *
 * What must stay true:
 *  - a dump that fails leaves the process running as it was: no ptrace
 *    attachment, no code or descriptor of ours inside it; so does a
 *    caller that dies during engine_dump() (kill -9): a separate keeper
 *    process is the tracer and puts the process back, and gives a CUDA
 *    process its GPU back (engine/keeper.c);
 *  - a restore that fails kills whatever it half built; nothing
 *    half-restored runs;
 *  - nobody gains power through a restore: each thread gets back the
 *    credentials read from the image (ids, groups, capability sets,
 *    securebits, no_new_privs) only where the caller could have granted
 *    them (root: any ids and the capabilities it holds; a user: its own
 *    ids, no capability it lacks; set_creds: that user's ids, no
 *    capability unless uid 0), else the restore is refused before
 *    anything is built (-EPERM, naming the process, thread and id). An
 *    image without recorded credentials runs with the caller's (or
 *    set_creds'). Seccomp filters go back in last.
 *
 * Errors: -errno, with a detail in err_msg() naming the object and reason.
 */
#ifndef CKPTFS_ENGINE_H
#define CKPTFS_ENGINE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "store/store.h"

/* What happens to the process once its snapshot is durable. */
enum engine_after {
	ENGINE_AFTER_RUN,  /* it keeps running (it ran again as soon as its view was taken) */
	ENGINE_AFTER_KILL, /* SIGKILL once the snapshot is durable: migration, preemption */
	ENGINE_AFTER_STOP, /* left stopped (SIGSTOP) once the snapshot is durable */
	_ENGINE_AFTER_MAX,
};

enum engine_phase {
	ENGINE_PHASE_PREPARE,  /* before the freeze: the GPU's state into host memory, memory for the copy */
	ENGINE_PHASE_FREEZE,   /* stopping threads, taking the view */
	ENGINE_PHASE_WRITE,    /* writing memory and state to the store */
	ENGINE_PHASE_COMMIT,   /* making the snapshot durable */
	ENGINE_PHASE_READ,     /* restore: reading the snapshot */
	ENGINE_PHASE_RESTORE,  /* restore: building the process */
	ENGINE_PHASE_WAIT,     /* restore: waiting for a zombie holding the pid to be reaped */
	ENGINE_PHASE_PRECOPY,  /* copying memory while the processes run (round: which) */
	ENGINE_PHASE_RESUMED,  /* the view is taken, the processes run again */
	_ENGINE_PHASE_MAX,
};

struct engine_progress {
	enum engine_phase phase;
	uint64_t done;  /* bytes done in this phase (WAIT: ms waited) */
	uint64_t total; /* bytes in this phase, 0 if unknown (WAIT: ms it waits at most) */
	/* ENGINE_PHASE_WAIT only: the ID still held (the pid or a thread id),
	 * and the parent of its process, which has not reaped it yet, with
	 * its comm (valid during the call). */
	pid_t wait_id, wait_parent;
	const char *wait_parent_comm;
	unsigned round; /* ENGINE_PHASE_PRECOPY: the round, from 1 */
};

/* Times measured by a dump, for status and benchmarks. */
struct engine_dump_stats {
	uint64_t frozen_ns; /* the process did not run for this long */
	uint64_t total_ns;
	uint64_t memory_bytes; /* bytes of memory saved */
	uint64_t processes;    /* processes in the snapshot, zombies included */
	/* How memory was taken: pre-copied in precopy_rounds rounds
	 * (precopied), or the whole copy while frozen, and why (memory_mode,
	 * e.g. "pre-copy, 3 rounds" or "stop-and-copy: ..."). */
	bool precopied;
	unsigned precopy_rounds;
	uint64_t precopy_bytes; /* bytes copied while the processes ran */
	char memory_mode[400];
};

struct engine_dump_opts {
	enum engine_after after;
	/* Called from the dumping thread; may be NULL. */
	void (*progress)(const struct engine_progress *p, void *ud);
	void *ud;
	struct engine_dump_stats *stats; /* filled on success if not NULL */
	/* A CUDA process's work is drained (cuCheckpointProcessLock) for at
	 * most this long before the dump gives up; 0: 10 s. */
	unsigned gpu_lock_timeout_ms;
	/* With ENGINE_AFTER_RUN, memory is pre-copied while the processes
	 * run unless this is set (engine/precopy.c): the freeze then takes
	 * only what they wrote meanwhile. */
	bool no_precopy;
	/* In and out, may be NULL: the tracking kept from the last dump of
	 * this process (engine/precopy.c). Given a *track, the dump takes it
	 * (*track becomes NULL) and, where it still holds (the same process,
	 * its areas where they were), starts from what was written since
	 * instead of a full first round, and hashes again only the blocks of
	 * its memory files those writes touched; else it drops it (the
	 * registration removed) and takes the full path, saying so in
	 * memory_mode. On success of a pre-copied dump of one process with
	 * ENGINE_AFTER_RUN, *track is the tracking kept for the next one:
	 * the process's areas stay registered for write protection, which
	 * costs it a minor fault at the first write to each page, until
	 * engine_track_free(). */
	struct engine_track **track;
};

/* Kept between two dumps of a process: our userfaultfd watching it (no
 * descriptor of ours is in the process), the copy of its memory and the
 * hashes of its memory files' blocks. */
struct engine_track;
pid_t engine_track_pid(const struct engine_track *t);
/* Bytes of our memory it holds. */
uint64_t engine_track_bytes(const struct engine_track *t);
/* Removes the registration (a piece at a time: about 1 s for 4 GiB) and
 * frees it all. Accepts NULL. Should the holder die instead, the kernel
 * closes the userfaultfd, which removes the registration all the same. */
void engine_track_free(struct engine_track *t);

struct engine_restore_opts {
	void (*progress)(const struct engine_progress *p, void *ud);
	void *ud;
	/* The user a privileged caller restores for (the daemon for a
	 * user): the caller needs CAP_CHECKPOINT_RESTORE (clone3 with
	 * set_tid, PR_SET_MM_MAP), CAP_SETUID, CAP_SETGID and CAP_SETPCAP;
	 * the new processes take uid, gid and groups (real, effective, saved
	 * and filesystem IDs) before they open anything of the image (cwd,
	 * descriptors, mapped files, rlimits are set with those rights) and
	 * keep only CAP_CHECKPOINT_RESTORE, CAP_SETUID, CAP_SETGID and
	 * CAP_SETPCAP while we still drive them. Each thread then gets the
	 * image's credentials, which must be that user's (its uid; its gid or
	 * groups; no capability unless uid is 0): else the restore is refused
	 * before anything is built. An image without recorded credentials
	 * runs with exactly uid, gid and groups and no capability at all
	 * (uid 0 keeps root's). Without set_creds the caller's own
	 * credentials are the limit. groups is borrowed for the call. */
	bool set_creds;
	uid_t uid;
	gid_t gid;
	const gid_t *groups;
	size_t ngroups;
	/* The pid or a thread id still held by a zombie (its parent has not
	 * reaped it yet: `checkpoint kill`, kill -9 a moment ago) or by a task
	 * on its way out is waited for this long before the restore fails;
	 * 0: 5 s; ENGINE_PID_WAIT_NONE: not at all. One held by a live task
	 * fails at once. */
	unsigned pid_wait_ms;
	/* Restore files that changed since the dump instead of refusing
	 * them: a file, directory or FIFO reopened by path that is another
	 * inode or, for a regular file, another size (a log, a regular file
	 * open O_WRONLY|O_APPEND, is never checked: it is reopened at its
	 * end), and a file mapped private whose size or mtime changed (its
	 * clean pages come from the file). A file that is gone is refused
	 * either way. */
	bool accept_changed_files;
	/* Filled on success when not NULL: how many processes the snapshot
	 * held (the root and its descendants, zombies included). */
	size_t *ret_processes;
	/* Lazy restore: the process runs once its registers, descriptors,
	 * small areas and the pages it touches first are in; the rest of
	 * its private anonymous memory is left to engine_lazy_serve(). On
	 * success *ret_lazy is the load still to serve, or NULL when nothing
	 * is left (a tree of processes, which is restored eagerly; small
	 * memory). The snapshot must stay open until engine_lazy_close(). */
	bool lazy;
	struct engine_lazy **ret_lazy;
};

/* The memory a lazily restored process still waits for. */
struct engine_lazy;

/* Serves the process's missing pages until every page is in: faults
 * first, the rest in address order. progress (may be NULL) hears the
 * bytes loaded from time to time and at the end. Returns 0 once all is
 * loaded or the process is gone; -errno when a page could not be read:
 * the process and its process group were then killed (SIGKILL) and
 * err_msg() says why ("pid N killed: memory/...: ..."). */
int engine_lazy_serve(struct engine_lazy *l, void (*progress)(uint64_t loaded, uint64_t total, void *ud),
		      void *ud);
/* Bytes loaded so far of total (those loaded eagerly included); may be
 * called from another thread while engine_lazy_serve() runs. */
void engine_lazy_progress(const struct engine_lazy *l, uint64_t *loaded, uint64_t *total);
pid_t engine_lazy_pid(const struct engine_lazy *l);
/* Ends the load; a process not fully loaded is killed first (it could
 * not get its pages any more). Accepts NULL. */
void engine_lazy_close(struct engine_lazy *l);

#define ENGINE_PID_WAIT_DEFAULT_MS 5000u
#define ENGINE_PID_WAIT_NONE (~0u)

/* How a refusal of a changed file ends: the ways to accept it, in the
 * words of each front end. */
#define ENGINE_ACCEPT_HINT                                                                                   \
	"accept changed files to restore it anyway (ckpt restore --accept-changed-files, or "               \
	"'accept-changed-files' in restore/NAME/ctl)"

/* Checkpoints process pid with all its descendants (a tree: every
 * process frozen before any is read, all run again together) into the
 * snapshot being written, w, and commits it. The caller still closes w. */
int engine_dump(pid_t pid, struct store_snap *w, const struct engine_dump_opts *o);

/* Restores the snapshot r: one process, or a tree of them (the root with
 * its descendants, each with its PID and thread IDs, parents, process
 * groups and sessions; zombies as zombies). On success they run, the
 * root re-parented to init (or the nearest subreaper) in a session of
 * its own, and *ret_pid is the root's PID. */
int engine_restore(struct store_snap *r, const struct engine_restore_opts *o, pid_t *ret_pid);

/* Starts a keeper for the dumps to come now (engine/keeper.c), if none
 * is ready: each dump then takes it instead of starting a process of its
 * own while the target runs or is frozen, and gives it back once done
 * (a dump that runs meanwhile starts its own). A long-lived caller (the
 * daemon) calls it at start and after each dump, which starts one only
 * where the last one ended (a failed dump, a GPU it guards). A keeper
 * found dead when a dump needs it is replaced by one started then.
 * Returns its pid, or -errno with a detail. It ends when we do, or at
 * engine_keeper_ahead_end(). Thread-safe. */
pid_t engine_keeper_ahead(void);
void engine_keeper_ahead_end(void);

const char *engine_phase_name(enum engine_phase p);

/* The network lock that holds dumped TCP connections until their restore
 * (docs/COVERAGE.md): its nftables table as `nft list` prints it, "" when
 * there is none (*ret malloc'd); and the whole table removed, every held
 * connection let through (their peers then see a reset). -errno with a
 * detail. */
int engine_netlock_list(char **ret);
int engine_netlock_clear(void);

#endif
