/*
 * A CUDA process through the mount, with the test double of the CUDA
 * driver first on the daemon's LD_LIBRARY_PATH: `checkpoint kill` in its
 * ctl; its device memory read with `cat` from the snapshot's gpu/hbm/,
 * each file the size gpu/info's hbm line gives, none also in memory/;
 * `cp -r` of the snapshot out (`ckpt verify` takes the copy, its gpu/hbm/
 * the same bytes) and into restore/, and the restored process, its GPU
 * given back, passes its own check. The mount is tests/integration/fs's
 * harness; the double's directory is the run's.
 */
#include <check.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "common/common.h"
#include "tests/cuda-double/pattern.h"
#include "tests/integration/fs/fs-harness.h"

#define MIB 8
#define MIB_ARG "8"

START_TEST(mount_kill_restore)
{
	char ready[PATH_MAX], result[PATH_MAX], restored[PATH_MAX + 16];
	snprintf(ready, sizeof(ready), "%s/ready", H.work);
	snprintf(result, sizeof(result), "%s/result", H.work);
	snprintf(restored, sizeof(restored), "%s.restored", ready);
	pid_t pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		int n = open("/dev/null", O_RDWR);
		dup2(n, 0);
		dup2(n, 1);
		dup2(n, 2);
		syscall(SYS_close_range, 3, ~0u, 0);
		execl(getenv("CUDA_TARGET"), "target-cuda", ready, result, MIB_ARG, (char *)NULL);
		_exit(127);
	}
	H.targets[H.ntargets++] = pid; /* killed at teardown, restored or not */
	ck_assert_msg(wait_file(ready, 30000), "target-cuda did not get ready");
	ck_assert_int_eq(sh("echo 'checkpoint kill' > \"$MNT/%d/ctl\"", pid), 0);
	int st;
	ck_assert_int_eq(waitpid(pid, &st, 0), pid);
	ck_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
	ck_assert_msg(sh("grep -q '^hbm: ' \"$MNT/%d/1/%d/gpu/info\"", pid, pid) == 0, "no hbm line in gpu/info");
	/* each hbm line's file, as big as it says, and not also in memory/ */
	ck_assert_msg(sh("cd \"$MNT/%d/1/%d\" && ls gpu/hbm/ | grep -q . && grep '^hbm: ' gpu/info | "
			 "while read k range size file off; do [ \"$file\" = - ] && continue; "
			 "[ \"$file\" = gpu/hbm/$range ] && [ \"$(stat -c %%s \"$file\")\" = \"$size\" ] && "
			 "! [ -e memory/$range ] || exit 1; done",
			 pid, pid) == 0,
		      "gpu/hbm/ does not match gpu/info's hbm lines");
	/* read as plain bytes through the mount: the pattern, whole */
	ck_assert_int_eq(sh("cat \"$MNT/%d/1/%d\"/gpu/hbm/* > \"$WORK/hbm\"", pid, pid), 0);
	char p[PATH_MAX + 16];
	_cleanup_free_ char *hbm = NULL;
	size_t want_len = (size_t)MIB << 20, hbm_len = 0, found = 0;
	_cleanup_free_ uint8_t *want = malloc(want_len);
	cuda_double_pattern(want, want_len, MIB);
	snprintf(p, sizeof(p), "%s/hbm", H.work);
	ck_assert_int_ge(read_file_full(p, &hbm, &hbm_len), 0);
	for (size_t at = 0; at + want_len <= hbm_len; at += 4096)
		found += !memcmp(hbm + at, want, want_len);
	ck_assert_msg(found == 1, "the pattern is %zu times in gpu/hbm/'s %zu bytes", found, hbm_len);
	/* copied out whole: the copy verifies, its device memory the same */
	ck_assert_int_eq(sh("cp -r \"$MNT/%d/1\" \"$WORK/copy\" && \"$CKPT\" verify \"$WORK/copy\" >/dev/null && "
			    "cd \"$MNT/%d/1/%d/gpu/hbm\" && for f in *; do cmp -s \"$f\" \"$WORK/copy/%d/gpu/hbm/$f\" || exit 1; done",
			    pid, pid, pid, pid),
			 0);
	ck_assert_int_eq(sh("cp -r \"$MNT/%d/1\" \"$MNT/restore/r1\"", pid), 0);
	restore_assert_running("r1", pid, 1, 30000);
	/* restored: it checks its device memory (the verdict is renamed in
	 * place, whole) */
	int fd = open(restored, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
	ck_assert_int_ge(fd, 0);
	close(fd);
	ck_assert_msg(wait_file(result, 30000), "the restored pid %d left no verdict", pid);
	_cleanup_free_ char *res = NULL;
	read_file_full(result, &res, NULL);
	ck_assert_msg(res && !strcmp(res, "PASS\n"), "target-cuda says: %s", res ? res : "(nothing)");
}
END_TEST

int main(void)
{
	harness_require();
	if (!getenv("CUDA_TARGET")) {
		printf("CUDA_TARGET must name target-cuda (meson test does)\n");
		return 1;
	}
	harness_begin();
	/* the daemon, the target and we find the double's sockets there */
	setenv("CKPTFS_CUDA_DOUBLE_DIR", getenv("CKPTFS_TEST_RUN"), 1);
	Suite *s = suite_create("cuda-double-fs");
	harness_add(s, "mount_kill_restore", mount_kill_restore, 120);
	return harness_run(s);
}
