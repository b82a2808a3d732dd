/*
 * Files in odd states through the real tools, where the plain cycle of
 * test-engine-fds-e2e.c does not reach: a tree holding a removed
 * directory as cwd, and each new restore step failing by fault injection
 * (CKPTFS_FAULT, docs/TESTING.md): the restore fails naming the object,
 * leaves nothing of its own beside the files it made again, and the same
 * snapshot restores afterwards, the target passing its own checks.
 *
 * Needs root. The test is a child subreaper, so that restored processes
 * (and a killed tree's children) become its children and are reaped here.
 */
#include <check.h>
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "common/common.h"
#include "tests/integration/ckpt-run.h"

static char dir[PATH_MAX];
static const char *ckpt_bin, *targets;

static void setup(void)
{
	snprintf(dir, sizeof(dir), "/tmp/ckptfs-odd-XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(dir));
	ck_assert_int_eq(prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0), 0);
}

static void teardown(void)
{
	rm_rf(dir);
}

static char *path(const char *name)
{
	static char p[4][PATH_MAX + 64];
	static int k;

	k = (k + 1) % 4;
	snprintf(p[k], sizeof(p[k]), "%s/%s", dir, name);
	return p[k];
}

static void wait_file(const char *p, int ms)
{
	for (int i = 0; i < ms && access(p, F_OK) < 0; i++)
		usleep(1000);
	ck_assert_msg(access(p, F_OK) == 0, "%s did not appear", p);
}

/* Starts tests/targets/target-NAME READY RESULT SCRATCH [ARG]. */
static pid_t spawn(const char *name, const char *arg)
{
	char exe[PATH_MAX + 64];
	pid_t pid;

	snprintf(exe, sizeof(exe), "%s/target-%s", targets, name);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		int n = open("/dev/null", O_RDWR);
		dup2(n, 0);
		dup2(n, 1);
		dup2(n, 2);
		syscall(SYS_close_range, 3, ~0u, 0);
		execl(exe, exe, path("ready"), path("result"), path("scratch"), arg, (char *)NULL);
		_exit(127);
	}
	wait_file(path("ready"), 10000);
	return pid;
}

static int run_ckpt(const char *fault, char *out, size_t outlen, const char *a1, const char *a2, const char *a3,
		    const char *a4)
{
	int st = ckpt_run(ckpt_bin, path("ckpt.err"), NULL, fault, out, outlen, a1, a2, a3, a4);
	ck_assert(WIFEXITED(st));
	return WEXITSTATUS(st);
}

static const char *ckpt_err(void)
{
	return ckpt_run_err(path("ckpt.err"));
}

/* Dumps pid with --kill and reaps it and whatever children it had. */
static void dump_kill(pid_t pid)
{
	char p[32];
	int st;

	snprintf(p, sizeof(p), "%d", pid);
	ck_assert_msg(run_ckpt(NULL, NULL, 0, "dump", "--kill", p, path("snap")) == 0, "ckpt dump: %s", ckpt_err());
	ck_assert_int_eq(waitpid(pid, &st, 0), pid);
	while (waitpid(-1, &st, WNOHANG) > 0)
		;
}

/* Restores the snapshot and takes the target's verdict. */
static void restore_pass(void)
{
	char out[64];

	ck_assert_msg(run_ckpt(NULL, out, sizeof(out), "restore", path("snap"), NULL, NULL) == 0, "ckpt restore: %s",
		      ckpt_err());
	int st = verdict_wait(atoi(out), path("ready.restored"), path("result"), 15000, "target");
	ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

/* The restore with fault N fails, saying want, and leaves no temporary
 * name of its own in the test's directory. */
static void restore_fails(const char *fault, const char *want, pid_t pid)
{
	char out[64];

	ck_assert_int_ne(run_ckpt(fault, out, sizeof(out), "restore", path("snap"), NULL, NULL), 0);
	ck_assert_msg(strstr(ckpt_err(), want) && strstr(ckpt_err(), "injected fault"), "stderr: %s", ckpt_err());
	DIR *d = opendir(dir);
	ck_assert_ptr_nonnull(d);
	for (struct dirent *de; (de = readdir(d));)
		ck_assert_msg(!strstr(de->d_name, ".ckptfs-"), "left behind: %s", de->d_name);
	closedir(d);
	/* everything it made is gone (killed, and reaped here, its
	 * subreaper): the pid is free again */
	for (int i = 0; i < 5000 && kill(pid, 0) == 0; i++) {
		while (waitpid(-1, NULL, WNOHANG) > 0)
			;
		usleep(1000);
	}
	ck_assert(kill(pid, 0) < 0 && errno == ESRCH);
}

/* A parent and its child both in a removed directory (inherited, not
 * shared): each gets one back and checks it. */
START_TEST(deleted_dir_tree)
{
	pid_t pid = spawn("fds-deleted-dir", "tree");

	dump_kill(pid);
	restore_pass();
}
END_TEST

START_TEST(fault_deleted_dir)
{
	pid_t pid = spawn("fds-deleted-dir", NULL);

	dump_kill(pid);
	restore_fails("418", "deleted directory ", pid);
	restore_pass();
}
END_TEST

/* A removed FIFO held by a parent and, through a description of its
 * own, by its child: made once for both. */
START_TEST(deleted_fifo_tree)
{
	pid_t pid = spawn("fds-deleted-fifo", "tree");

	dump_kill(pid);
	restore_pass();
}
END_TEST

START_TEST(fault_deleted_fifo)
{
	pid_t pid = spawn("fds-deleted-fifo", NULL);

	dump_kill(pid);
	restore_fails("419", "deleted FIFO ", pid);
	restore_pass();
}
END_TEST

/* fds-sparse: writing the second data run of its 4 GiB deleted file
 * fails: the half-written unnamed file goes with the failed restore */
START_TEST(fault_sparse_fill)
{
	pid_t pid = spawn("fds-sparse", NULL);

	dump_kill(pid);
	restore_fails("420:2", "data run 2 of 3 at ", pid);
	restore_pass();
}
END_TEST

/* One pipe through descriptions of a parent and, one of them its own
 * (read-write, reopened through /proc), of its child: made once. */
START_TEST(pipe_reopen_tree)
{
	pid_t pid = spawn("fds-pipe-reopen", "tree");

	dump_kill(pid);
	restore_pass();
}
END_TEST

/* fds-pipe-reopen: the third description of its pipe cannot be opened */
START_TEST(fault_pipe_reopen)
{
	pid_t pid = spawn("fds-pipe-reopen", NULL);

	dump_kill(pid);
	restore_fails("422:3", "fd 12: pipe:[", pid);
	restore_pass();
}
END_TEST

/* A memfd and a deleted file held and mapped shared by a parent and its
 * child (inherited): one file for both descriptors and both mappings. */
START_TEST(mapped_tree)
{
	pid_t pid = spawn("fds-mapped", "tree");

	dump_kill(pid);
	restore_pass();
}
END_TEST

/* fds-mapped: a memfd and a deleted file held and mapped shared */
START_TEST(fault_shm_fd)
{
	pid_t pid = spawn("fds-mapped", NULL);

	dump_kill(pid);
	restore_fails("421", "fd 20: cannot reopen the shared memory object of fds-mapped", pid);
	restore_pass();
}
END_TEST

int main(void)
{
	struct {
		const char *name;
		const TTest *t;
	} cases[] = {
		{ "deleted_dir_tree", deleted_dir_tree },
		{ "fault_deleted_dir", fault_deleted_dir },
		{ "fault_shm_fd", fault_shm_fd },
		{ "fault_deleted_fifo", fault_deleted_fifo },
		{ "deleted_fifo_tree", deleted_fifo_tree },
		{ "fault_sparse_fill", fault_sparse_fill },
		{ "fault_pipe_reopen", fault_pipe_reopen },
		{ "pipe_reopen_tree", pipe_reopen_tree },
		{ "mapped_tree", mapped_tree },
	};

	if (geteuid() != 0) {
		printf("skipped: needs root (ptrace, pidfd_getfd, clone3 set_tid)\n");
		return 77;
	}
	ckpt_bin = getenv("CKPT");
	targets = getenv("TARGETS");
	if (!ckpt_bin || !targets) {
		printf("CKPT and TARGETS must name the ckpt binary and the targets' directory\n");
		return 1;
	}
	Suite *s = suite_create("engine-oddfiles");
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		TCase *tc = tcase_create(cases[i].name);
		tcase_add_checked_fixture(tc, setup, teardown);
		tcase_set_timeout(tc, 60);
		tcase_add_test(tc, cases[i].t);
		suite_add_tcase(s, tc);
	}
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
