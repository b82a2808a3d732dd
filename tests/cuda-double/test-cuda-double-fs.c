/*
 * A CUDA process through the mount, with the test double of the CUDA
 * driver first on the daemon's LD_LIBRARY_PATH: `checkpoint kill` in its
 * ctl (gpu/info with its hbm lines in the snapshot), `cp -r` of the
 * snapshot into restore/, and the restored process, its GPU given back,
 * passes its own check. The mount is tests/integration/fs's harness.
 */
#include <check.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "common/common.h"
#include "tests/integration/fs/fs-harness.h"

static char dir[PATH_MAX]; /* the target's files and the double's */

static char *path(const char *name)
{
	static char p[2][PATH_MAX + 64];
	static int k;
	k = (k + 1) % 2;
	snprintf(p[k], sizeof(p[k]), "%s/%s", dir, name);
	return p[k];
}

static void setup(void)
{
	snprintf(dir, sizeof(dir), "/tmp/ckptfs-cuda-fs-XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(dir));
	ck_assert_int_eq(prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0), 0);
	/* the daemon reads it from the environment it starts with */
	setenv("CKPTFS_CUDA_DOUBLE_DIR", dir, 1);
	harness_mount();
}

static void teardown(void)
{
	harness_teardown();
	rm_rf(dir);
}

/* Waits (30 s at most) until p exists. */
static bool wait_for(const char *p)
{
	for (int i = 0; i < 3000 && access(p, F_OK) < 0; i++)
		usleep(10000);
	return access(p, F_OK) == 0;
}

START_TEST(mount_kill_restore)
{
	pid_t pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		int n = open("/dev/null", O_RDWR);
		dup2(n, 0);
		dup2(n, 1);
		dup2(n, 2);
		syscall(SYS_close_range, 3, ~0u, 0);
		execl(getenv("CUDA_TARGET"), "target-cuda", path("ready"), path("result"), "8", (char *)NULL);
		_exit(127);
	}
	ck_assert_msg(wait_for(path("ready")), "target-cuda did not get ready");
	ck_assert_int_eq(sh("echo 'checkpoint kill' > \"$MNT/%d/ctl\"", pid), 0);
	int st;
	ck_assert_int_eq(waitpid(pid, &st, 0), pid);
	ck_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
	ck_assert_msg(sh("grep -q '^hbm: ' \"$MNT/%d/1/%d/gpu/info\"", pid, pid) == 0, "no hbm line in gpu/info");
	ck_assert_int_eq(sh("cp -r \"$MNT/%d/1\" \"$MNT/restore/r1\"", pid), 0);
	char want[64];
	snprintf(want, sizeof(want), "running pid=%d", pid);
	char *status = NULL;
	for (int i = 0; i < 3000; i++) {
		free(status);
		status = sh_out("cat \"$MNT/restore/r1/status\"");
		if (strstr(status, want) || strstr(status, "failed"))
			break;
		usleep(10000);
	}
	ck_assert_msg(strstr(status, want), "restore/r1/status: %s", status);
	free(status);
	/* restored: it checks its device memory */
	int fd = open(path("ready.restored"), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
	ck_assert_int_ge(fd, 0);
	close(fd);
	ck_assert_msg(wait_for(path("result")), "the restored pid %d left no verdict", pid);
	char *res = NULL;
	for (int i = 0; i < 100 && (!res || !strchr(res, '\n')); i++) {
		free(res);
		res = NULL;
		read_file_full(path("result"), &res, NULL);
		usleep(10000);
	}
	ck_assert_msg(res && !strcmp(res, "PASS\n"), "target-cuda says: %s", res ? res : "(nothing)");
	free(res);
	waitpid(pid, &st, 0);
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
	Suite *s = suite_create("cuda-double-fs");
	TCase *tc = tcase_create("mount_kill_restore");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, mount_kill_restore);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	harness_sweep();
	return failed ? 1 : 0;
}
