/*
 * What the ckptfs integration tests share: a real daemon mounted on a
 * temporary directory with a temporary store, driven with shell commands
 * as a user would. Every test mounts in its setup; the unmount runs from
 * atexit() too, so that a failing assertion (which exits the forked test)
 * still leaves no mount behind, and main() sweeps what a timeout left.
 */
#ifndef CKPTFS_FS_HARNESS_H
#define CKPTFS_FS_HARNESS_H

#include <check.h>
#include <stdbool.h>
#include <sys/types.h>

struct harness {
	char base[256];  /* the test's temp dir */
	char mnt[300];   /* base/mnt */
	char store[300]; /* base/store */
	char work[300];  /* base/work: scratch for copies and targets */
	pid_t daemon;
	pid_t targets[64]; /* started by target_start, killed at teardown */
	unsigned ntargets;
	bool dir_backend;
	char opts[192];  /* more -o options for the daemon (set before mounting) */
};

extern struct harness H;

/* Exits 77 with the reason when the tests cannot run here (not root, no
 * /dev/fuse, no fusermount3, binaries missing). */
void harness_require(void);
/* For a test that runs programs as another user: points each environment
 * variable named in vars (NULL-terminated: "CKPTFS", "CKPT", "FS_TARGET")
 * at a copy of the program it names, in a fresh directory that every user
 * can reach (see tests/integration/exe-copy.h), so that the test passes
 * from a checkout others cannot enter. Call it before starting any of
 * them; everything after runs the copies. They are removed by
 * harness_teardown(), at exit, or by harness_sweep(). Returns 0 or -errno
 * (what failed is on stderr). */
int harness_exes_for_others(const char *const *vars);
/* Makes the test's temp dirs H.base, H.mnt and H.work, names H.store
 * (not made), and
 * has harness_teardown() run at exit. Asserts on failure. */
void harness_dirs(void);
/* Makes the temp dirs and mounts ckptfs (chunk store; the directory
 * backend when the chunk store is not built). Asserts on failure. */
void harness_mount(void);
/* Mounts again on the same store (after a crash or unmount). */
void harness_remount(void);
/* Unmounts (fusermount3 -u, then -uz) and reaps the daemon; returns the
 * daemon's exit status, -1 if it had to be killed. Idempotent. */
int harness_umount(void);
/* Unmounts and removes the temp dir. */
void harness_teardown(void);
/* Makes the run's temp dir (every test's dir goes inside). main() calls
 * it first, and harness_sweep() last: it kills the targets, unmounts the
 * mounts and removes the dirs that a test dying early left behind. */
void harness_begin(void);
void harness_sweep(void);
/* Adds a case of its own to s: mounted before it (harness_mount),
 * unmounted and removed after it, with its own timeout in seconds. */
void harness_add(Suite *s, const char *name, const TTest *t, int timeout);
/* The same, for a case that starts its daemon itself: only the temp
 * dirs before it (harness_dirs); H.daemon, when set, is unmounted and
 * reaped after it. */
void harness_add_unmounted(Suite *s, const char *name, const TTest *t, int timeout);
/* Runs s, then harness_sweep(); returns main()'s exit code. */
int harness_run(Suite *s);

/* Whether dir is a ckptfs mount (fuse.ckptfs in /proc/mounts). */
bool harness_mounted(const char *dir);

/* Runs a shell command (printf format) with MNT, STORE, WORK, CKPT set in
 * its environment; returns its exit status (or 128+signal). */
int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Same, returns its stdout (malloc'd, NUL-terminated; "" on failure). */
char *sh_out(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Starts fs-target in a fresh dir under WORK; returns its pid (waits for
 * its addr file). dir receives the directory (PATH_MAX). */
pid_t target_start(char *dir);
/* The same, the target holding file (which must exist) open read-write
 * at fd 3 while it waits. */
pid_t target_start_file(char *dir, const char *file);
/* Kills and reaps a target. */
void target_kill(pid_t pid);
/* Waits up to ms for path to exist; true if it does. */
bool wait_file(const char *path, unsigned ms);
/* Polls restore/NAME/status until it leaves receiving/verifying/
 * restoring (waiting for a pid included) or ms pass; returns its first
 * line (malloc'd). */
char *restore_wait(const char *name, unsigned ms);
/* Waits (ms at most) until restore/NAME is no longer on its way and
 * asserts it runs pid with that many processes; else shows the daemon's
 * log. */
void restore_assert_running(const char *name, pid_t pid, int processes, unsigned ms);
/* Tells the fs-target in dir to check itself and returns its verdict
 * ("ok
" when its memory survived; malloc'd), or what is known when it
 * gives none within 5 s. */
char *target_verdict(const char *dir);
/* Snapshot n of pid copied out of the mount and verified, pid killed,
 * the copy restored through restore/back: it runs with the same pid and
 * the target (its directory dir) passes its own check. */
void restore_copy_verdict(pid_t pid, long n, const char *dir);

#endif
