/*
 * Tracking kept between checkpoints (fs/track.c, engine/precopy.c)
 * through a real mount: target-precopy, which keeps stamping pages, is
 * checkpointed several times through ctl; from the second on the
 * checkpoint starts from what it wrote since ("memory: incremental") and
 * the last snapshot, restored, passes the target's own check of every
 * page. A changed layout (an area mapped again in place, a new one)
 * falls back to the full pre-copy and says why; `untrack`, the idle
 * time, the budget, no -o track (the default), the daemon killed and the faults
 * 238-242 each leave the target running with no area registered (no
 * `uw` in its smaps) and no userfaultfd, and its check passes. Every wait
 * is for a condition with a generous bound; no case asserts a timing.
 */
#include <check.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/integration/fs/fs-harness.h"

#define WAIT_MS 30000

static char *status_of(pid_t pid)
{
	return sh_out("cat \"$MNT/%d/status\" 2>/dev/null", pid);
}

/* Waits until pid's status has a line starting with prefix. */
static void wait_status(pid_t pid, const char *prefix)
{
	char want[256];
	snprintf(want, sizeof(want), "\n%s", prefix);
	for (unsigned i = 0; i < WAIT_MS / 100; i++) {
		char *s = status_of(pid);
		bool ok = strstr(s, want) != NULL;
		free(s);
		if (ok)
			return;
		usleep(100 * 1000);
	}
	char *s = status_of(pid);
	ck_abort_msg("status never said '%s':\n%s", prefix, s);
}

static void assert_status(pid_t pid, const char *prefix)
{
	char want[256];
	snprintf(want, sizeof(want), "\n%s", prefix);
	char *s = status_of(pid);
	ck_assert_msg(strstr(s, want), "status lacks '%s':\n%s", prefix, s);
	free(s);
}

static void ctl(pid_t pid, const char *line, bool ok)
{
	char *s = sh_out("{ echo '%s' > \"$MNT/%d/ctl\"; } 2>&1; echo rc=$?", line, pid);
	if (ok) {
		char *st = status_of(pid);
		char *log = sh_out("tail -20 '%s/daemon.log'", H.base);
		ck_assert_msg(strstr(s, "rc=0"), "'%s': %s\nstatus:\n%s\nlog:\n%s", line, s, st, log);
		free(st);
		free(log);
	} else {
		ck_assert_msg(!strstr(s, "rc=0"), "'%s' succeeded", line);
	}
	free(s);
}

/* target-precopy of 64 MiB writing 20 pages a millisecond, in a fresh
 * dir (dir: PATH_MAX) under WORK. */
static pid_t start_writer(char *dir)
{
	static int count;
	char ready[PATH_MAX + 16], result[PATH_MAX + 16], exe[PATH_MAX];

	snprintf(dir, PATH_MAX, "%s/w%d", H.work, count++);
	ck_assert_int_eq(mkdir(dir, 0755), 0);
	snprintf(ready, sizeof(ready), "%s/ready", dir);
	snprintf(result, sizeof(result), "%s/result", dir);
	snprintf(exe, sizeof(exe), "%s/target-precopy", getenv("TARGETS"));
	pid_t pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		int n = open("/dev/null", O_RDWR);
		dup2(n, 0);
		dup2(n, 1);
		setsid();
		execl(exe, "target-precopy", ready, result, "64", "20", (char *)NULL);
		_exit(127);
	}
	if (H.ntargets < sizeof(H.targets) / sizeof(H.targets[0]))
		H.targets[H.ntargets++] = pid;
	ck_assert_msg(wait_file(ready, 20000), "target-precopy did not start");
	return pid;
}

/* Whether pid has an area registered with a userfaultfd, or one open. */
static bool tracked(pid_t pid)
{
	return sh("grep -q '^VmFlags:.* uw' /proc/%d/smaps || ls -l /proc/%d/fd | grep -q userfaultfd", pid, pid) == 0;
}

static void wait_untracked(pid_t pid)
{
	for (unsigned i = 0; i < WAIT_MS / 50 && tracked(pid); i++)
		usleep(50 * 1000);
	ck_assert_msg(!tracked(pid), "pid %d still has an area registered (uw) or a userfaultfd", pid);
	ck_assert_int_eq(kill(pid, 0), 0);
}

/* Tells the target in dir to check its memory and waits for its verdict:
 * a restored one checks what the restore gave it, a running one what it
 * holds after the tracking came and went. */
static void assert_passes(const char *dir)
{
	char path[PATH_MAX + 32];
	snprintf(path, sizeof(path), "%s/ready.restored", dir);
	int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
	ck_assert_int_ge(fd, 0);
	close(fd);
	snprintf(path, sizeof(path), "%s/result", dir);
	ck_assert_msg(wait_file(path, 60000), "no verdict from the target in %s", dir);
	char *v = sh_out("cat '%s'", path);
	ck_assert_msg(!strcmp(v, "PASS\n"), "the target says: %s", v);
	free(v);
}

/* Kills pid, restores its snapshot n through restore/ and has it check
 * itself. */
static void restore_passes(pid_t pid, int n, const char *dir)
{
	target_kill(pid);
	ck_assert_int_eq(sh("cp -r \"$MNT/%d/%d\" \"$MNT/restore/back\"", pid, n), 0);
	restore_assert_running("back", pid, 1, 30000);
	assert_passes(dir);
}

START_TEST(test_incremental)
{
	char dir[PATH_MAX];
	pid_t pid = start_writer(dir);

	ctl(pid, "checkpoint", true);
	assert_status(pid, "memory: pre-copy, ");
	assert_status(pid, "tracking: kept, ");
	ck_assert(tracked(pid));
	/* it writes meanwhile: each next one reads what it wrote since */
	ctl(pid, "checkpoint", true);
	assert_status(pid, "memory: incremental, ");
	ctl(pid, "checkpoint", true);
	assert_status(pid, "memory: incremental, ");
	assert_status(pid, "tracking: kept, ");
	restore_passes(pid, 3, dir);
}
END_TEST

START_TEST(test_maps_changed)
{
	char dir[PATH_MAX], path[PATH_MAX + 16];
	pid_t pid = start_writer(dir);

	ctl(pid, "checkpoint", true);
	assert_status(pid, "tracking: kept, ");
	snprintf(path, sizeof(path), "%s/ready.remap", dir);
	ck_assert_int_eq(sh("touch '%s'", path), 0);
	for (int i = 0; i < 1000 && access(path, F_OK) == 0; i++)
		usleep(10 * 1000);
	ck_assert_msg(access(path, F_OK) < 0, "the target did not change its areas");
	ctl(pid, "checkpoint", true);
	assert_status(pid, "memory: pre-copy, ");
	char *s = status_of(pid);
	ck_assert_msg(strstr(s, "incremental tracking dropped: ") && strstr(s, "the areas changed"), "%s", s);
	free(s);
	/* tracked afresh: the next is incremental again */
	ctl(pid, "checkpoint", true);
	assert_status(pid, "memory: incremental, ");
	restore_passes(pid, 3, dir);
}
END_TEST

START_TEST(test_untrack)
{
	char dir[PATH_MAX];
	pid_t pid = start_writer(dir);

	ctl(pid, "checkpoint", true);
	ck_assert(tracked(pid));
	ctl(pid, "untrack", true);
	assert_status(pid, "tracking: none");
	wait_untracked(pid);
	ctl(pid, "untrack extra", false);
	ctl(pid, "checkpoint", true);
	assert_status(pid, "memory: pre-copy, ");
	restore_passes(pid, 2, dir);
}
END_TEST

/* Without -o track: nothing kept; -o track=1M: too small for 64 MiB. */
static void not_kept(const char *opts, const char *line)
{
	char dir[PATH_MAX];
	snprintf(H.opts, sizeof(H.opts), "%s", opts);
	harness_mount();
	pid_t pid = start_writer(dir);
	ctl(pid, "checkpoint", true);
	assert_status(pid, line);
	wait_untracked(pid);
	ctl(pid, "checkpoint", true);
	assert_status(pid, "memory: pre-copy, ");
	wait_untracked(pid);
	assert_passes(dir);
}

START_TEST(test_off) { not_kept("", "tracking: off"); }
END_TEST

START_TEST(test_budget) { not_kept("track=1M", "tracking: none"); }
END_TEST

/* The directory backend names no blocks: the copies and the rounds are
 * kept, every block is hashed again; the snapshot is as whole. */
START_TEST(test_dir_backend)
{
	char dir[PATH_MAX];
	snprintf(H.opts, sizeof(H.opts), "track=on,backend=dir");
	harness_mount();
	pid_t pid = start_writer(dir);
	ctl(pid, "checkpoint", true);
	ctl(pid, "checkpoint", true);
	assert_status(pid, "memory: incremental, ");
	restore_passes(pid, 2, dir);
}
END_TEST

START_TEST(test_idle)
{
	char dir[PATH_MAX];
	snprintf(H.opts, sizeof(H.opts), "track=on,track_idle=1");
	harness_mount();
	pid_t pid = start_writer(dir);
	ctl(pid, "checkpoint", true);
	wait_status(pid, "tracking: none");
	wait_untracked(pid);
	assert_passes(dir);
}
END_TEST

/* The daemon killed while it keeps the tracking: the kernel closes its
 * userfaultfd, which removes the registration. */
START_TEST(test_daemon_killed)
{
	char dir[PATH_MAX];
	pid_t pid = start_writer(dir);

	ctl(pid, "checkpoint", true);
	ck_assert(tracked(pid));
	kill(H.daemon, SIGKILL);
	wait_untracked(pid);
	assert_passes(dir);
}
END_TEST

/* A fault in the daemon (CKPTFS_FAULT set when it starts). */
static pid_t mount_fault(const char *fault, char *dir)
{
	setenv("CKPTFS_FAULT", fault, 1);
	harness_mount();
	unsetenv("CKPTFS_FAULT");
	return start_writer(dir);
}

/* 238, 239: the kept tracking does not hold: the full path, saying why. */
static void fault_falls_back(const char *fault, const char *why)
{
	char dir[PATH_MAX];
	pid_t pid = mount_fault(fault, dir);
	ctl(pid, "checkpoint", true);
	ctl(pid, "checkpoint", true);
	assert_status(pid, "memory: pre-copy, ");
	char *s = status_of(pid);
	ck_assert_msg(strstr(s, "incremental tracking dropped: ") && strstr(s, why), "%s", s);
	free(s);
	restore_passes(pid, 2, dir);
}

START_TEST(test_fault_resume) { fault_falls_back("238", "resuming the tracking: injected fault"); }
END_TEST

START_TEST(test_fault_round) { fault_falls_back("239", "the first round from the kept tracking: injected fault"); }
END_TEST

/* 240: keeping it fails: removed, the checkpoint stands. */
START_TEST(test_fault_keep)
{
	char dir[PATH_MAX];
	pid_t pid = mount_fault("240", dir);
	ctl(pid, "checkpoint", true);
	assert_status(pid, "tracking: none");
	wait_untracked(pid);
	restore_passes(pid, 1, dir);
}
END_TEST

/* 241: writing with the kept hashes fails: the checkpoint fails, the
 * tracking goes with it, the next one takes the full path. */
START_TEST(test_fault_write)
{
	char dir[PATH_MAX];
	pid_t pid = mount_fault("241", dir);
	ctl(pid, "checkpoint", true);
	ctl(pid, "checkpoint", false);
	assert_status(pid, "state: failed");
	char *s = status_of(pid);
	ck_assert_msg(strstr(s, "write with the kept hashes: injected fault"), "%s", s);
	free(s);
	assert_status(pid, "tracking: none");
	wait_untracked(pid);
	ctl(pid, "checkpoint", true);
	assert_status(pid, "memory: pre-copy, ");
	/* the failed one left no snapshot: this is the second */
	restore_passes(pid, 2, dir);
}
END_TEST

/* 242: the daemon dies as it drops the tracking (untrack). */
START_TEST(test_fault_die_drop)
{
	char dir[PATH_MAX];
	pid_t pid = mount_fault("242", dir);
	ctl(pid, "checkpoint", true);
	ck_assert(tracked(pid));
	sh("echo untrack > \"$MNT/%d/ctl\" 2>/dev/null", pid);
	ck_assert_int_eq(waitpid(H.daemon, NULL, 0), H.daemon);
	H.daemon = 0;
	wait_untracked(pid);
	assert_passes(dir);
}
END_TEST

int main(void)
{
	Suite *s;

	harness_require();
	harness_begin();
	/* every case mounts with it, but those that set their own */
	snprintf(H.opts, sizeof(H.opts), "track=on");
	s = suite_create("fs-track");
	harness_add(s, "incremental", test_incremental, 180);
	harness_add(s, "maps_changed", test_maps_changed, 180);
	harness_add(s, "untrack", test_untrack, 180);
	harness_add_unmounted(s, "off", test_off, 180);
	harness_add_unmounted(s, "budget", test_budget, 180);
	harness_add_unmounted(s, "idle", test_idle, 180);
	harness_add_unmounted(s, "dir_backend", test_dir_backend, 180);
	harness_add(s, "daemon_killed", test_daemon_killed, 180);
	harness_add_unmounted(s, "fault_resume", test_fault_resume, 180);
	harness_add_unmounted(s, "fault_round", test_fault_round, 180);
	harness_add_unmounted(s, "fault_keep", test_fault_keep, 180);
	harness_add_unmounted(s, "fault_write", test_fault_write, 180);
	harness_add_unmounted(s, "fault_die_drop", test_fault_die_drop, 180);
	return harness_run(s);
}
