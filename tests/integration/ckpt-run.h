/*
 * What the tests that drive `ckpt` and targets share: run ckpt with its
 * output caught, read what it said, and take a restored target's verdict
 * (tests/targets/target.h's protocol: READY.restored, then RESULT).
 * Failures are Check assertions of the calling test.
 */
#ifndef CKPTFS_TESTS_CKPT_RUN_H
#define CKPTFS_TESTS_CKPT_RUN_H

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

#endif
