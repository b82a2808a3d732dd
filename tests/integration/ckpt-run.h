/*
 * What the tests that drive `ckpt` and targets share: a scratch directory
 * per case, targets started quietly, ckpt run with its output caught, a
 * restored target's verdict taken (tests/targets/target.h's protocol:
 * READY.restored, then RESULT), and the suite's main. Failures are Check
 * assertions of the calling test.
 */
#ifndef CKPTFS_TESTS_CKPT_RUN_H
#define CKPTFS_TESTS_CKPT_RUN_H

#include <check.h>
#include <limits.h>
#include <stddef.h>
#include <sys/types.h>

/* Reads what a child writes into fd until it closes it, keeping the first
 * outlen - 1 bytes in out (NUL-terminated; out may be NULL), and closes fd. */
void ckpt_read_output(int fd, char *out, size_t outlen);

/* Runs bin (ckpt) with up to four arguments (NULL ends them); for it
 * alone env ("NAME=VALUE", or NULL) and CKPTFS_FAULT=fault (unset when
 * NULL); its stdout into out (as ckpt_read_output), its stderr into
 * err_path. Returns the wait status. */
int ckpt_run(const char *bin, const char *err_path, const char *env, const char *fault, char *out, size_t outlen,
	     const char *a1, const char *a2, const char *a3, const char *a4);

/* What err_path holds ("" if nothing); valid until the next call. */
const char *ckpt_run_err(const char *err_path);

/* Creates restored (READY.restored: the target may check itself now),
 * waits ms at most for pid to end (killed past that) and asserts that it
 * wrote "PASS\n" into result; who ("target") names it in the messages. Returns its
 * wait status. */
int verdict_wait(pid_t pid, const char *restored, const char *result, int ms, const char *who);

/* --- one case's directory and processes (a suite runs one case at a time) --- */

/* The case's scratch directory; CKPT and TARGETS of the environment (the
 * ckpt binary, the targets' directory), set by case_main. */
extern char case_dir[PATH_MAX];
extern const char *case_ckpt_bin, *case_targets;

/* Makes case_dir (/tmp/ckptfs-TAG-XXXXXX) and the test a child subreaper,
 * so that restored processes become its children; case_end removes it. */
void case_begin(const char *tag);
void case_end(void);

/* CASE_DIR/name; each result stays valid for the next 7 calls. */
char *case_path(const char *name);

/* Waits up to ms for p to exist. */
void case_wait_file(const char *p, int ms);

/* fork(); the child gets fd (or /dev/null when -1) on 0, 1 and 2, log
 * (appended, when not NULL) on 2, and no other descriptor (Check's own
 * files are not O_CLOEXEC): a process of the test's own to checkpoint. */
pid_t case_fork_quiet(int fd, const char *log);

/* Starts a target quietly (as case_fork_quiet; on /dev/null, its stderr
 * appended to CASE_DIR/target.log): argv[0] is prog in case_targets, or, with interp,
 * a script run by it; CASE_DIR/ready and CASE_DIR/result follow, then the
 * strings of extra up to a NULL (at most 4). Waits up to ready_ms for it
 * to be ready, then 20 ms for it to reach its waiting loop. */
pid_t case_spawn(const char *interp, const char *prog, int fd, const char *const *extra, int ready_ms);

/* ckpt_run() of case_ckpt_bin, stderr into CASE_DIR/ckpt.err: returns
 * the wait status. */
int case_ckpt_status(const char *fault, char *out, size_t outlen, const char *a1, const char *a2, const char *a3,
		     const char *a4);

/* The same; ckpt must exit: returns its exit status. */
int case_ckpt(const char *fault, char *out, size_t outlen, const char *a1, const char *a2, const char *a3,
	      const char *a4);

/* What the last ckpt wrote on stderr. */
const char *case_ckpt_err(void);

/* verdict_wait() of CASE_DIR/ready.restored and CASE_DIR/result, 15 s:
 * pid must say PASS and exit 0. */
void case_verdict(pid_t pid);

/* pid and every descendant of it (single-threaded targets: their
 * children are their main threads'), parents before children, at most
 * cap. */
size_t case_descendants(pid_t pid, pid_t *v, size_t cap);

/* A tree killed (by `ckpt dump --kill`): its root reaped, then the rest,
 * which came to us (a subreaper) and hold their pids until reaped. Every
 * one must be dead already: waiting for each ends. */
void case_reap_tree(pid_t root);

/* A tree left running or stopped: every process killed, then reaped. */
void case_kill_tree(pid_t root);

/* --- the suite --- */

struct case_def {
	const char *name;
	const TTest *t;
};

/* Checks what every such suite needs (root, CKPT and TARGETS: skipped
 * with 77 saying why_root, or 1), then runs the cases, each with setup
 * and teardown and timeout_s. Returns main's exit status. */
int case_main(const char *suite, const struct case_def *cases, size_t n, int timeout_s, void (*setup)(void),
	      void (*teardown)(void), const char *why_root);

/* The environment check alone, for a main that builds its own suite:
 * 0, or the exit status to return. */
int case_env(const char *why_root);

#endif
