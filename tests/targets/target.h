/*
 * What every target program shares (CRIU's zdtm pattern): set up some
 * state, say "ready", wait until the test says the process was restored,
 * check the state, write the verdict.
 *
 * Command line of every target: TARGET READY RESULT [ARGS...]
 *  - READY is created once the state is set up; the test then dumps;
 *  - the test creates READY.restored after the restore (only the restored
 *    process may see it: the original is killed first, or stopped);
 *  - RESULT receives "PASS\n" or "FAIL: reason\n"; the exit status is 0
 *    or 1 accordingly.
 * Targets hold no descriptors but 0, 1 and 2 while they wait, so that they
 * can be checkpointed whatever descriptor kinds a build supports.
 */
#ifndef CKPTFS_TARGET_H
#define CKPTFS_TARGET_H

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static const char *target_ready_path, *target_result_path;

/* Waits, ms milliseconds at most, until the word *w (in memory another
 * process writes) is want; whether it came. */
static inline bool target_wait_word(volatile uint64_t *w, uint64_t want, int ms)
{
	for (int i = 0; i < ms && *w != want; i++) {
		struct timespec ts = { 0, 1000000 };
		nanosleep(&ts, NULL);
	}
	return *w == want;
}

static inline void target_init(int argc, char **argv, int nargs)
{
	if (argc < 3 + nargs) {
		fprintf(stderr, "usage: %s READY RESULT (%d more arguments)\n", argv[0], nargs);
		exit(2);
	}
	target_ready_path = argv[1];
	target_result_path = argv[2];
	/* whatever the caller leaked: see above */
	syscall(SYS_close_range, 3, ~0u, 0);
}

static inline void target_write_file(const char *path, const char *text)
{
	char tmp[4096];
	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		exit(3);
	if (write(fd, text, strlen(text)) < 0)
		exit(3);
	close(fd);
	rename(tmp, path);
}

static inline __attribute__((format(printf, 2, 3))) _Noreturn void target_verdict(int ok, const char *fmt, ...)
{
	char buf[1024] = "PASS\n";
	if (!ok) {
		va_list ap;
		int n = snprintf(buf, sizeof(buf), "FAIL: ");
		va_start(ap, fmt);
		vsnprintf(buf + n, sizeof(buf) - n - 1, fmt, ap);
		va_end(ap);
		strcat(buf, "\n");
	}
	target_write_file(target_result_path, buf);
	exit(ok ? 0 : 1);
}

static inline _Noreturn void target_pass(void)
{
	target_verdict(1, "%s", "");
}

static inline void target_ready(void)
{
	target_write_file(target_ready_path, "ready\n");
}

static inline int target_restored(void)
{
	char p[4096];
	snprintf(p, sizeof(p), "%s.restored", target_ready_path);
	return access(p, F_OK) == 0;
}

/* Polls for READY.restored every 2 ms (in nanosleep, which the dump
 * interrupts and the restore must resume). */
static inline void target_wait_restored(void)
{
	while (!target_restored()) {
		struct timespec ts = { 0, 2000000 };
		nanosleep(&ts, NULL);
	}
}

/* FNV-1a, 64 bits: a cheap checksum for memory contents. */
static inline uint64_t target_hash(const void *p, size_t n, uint64_t h)
{
	const uint8_t *b = p;
	if (!h)
		h = 1469598103934665603ull;
	for (size_t i = 0; i < n; i++)
		h = (h ^ b[i]) * 1099511628211ull;
	return h;
}

#endif
