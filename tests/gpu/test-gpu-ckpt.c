/*
 * A CUDA process through `ckpt dump` and `ckpt restore`: tests/gpu's
 * cuda-target fills device memory and waits for a line on stdin (a FIFO
 * it holds open, which the restore opens again by its path); it is
 *  - dumped while it keeps running (the GPU is locked, checkpointed and
 *    given back around the freeze) and still finds its memory intact;
 *  - dumped with a GPU checkpoint failure injected: the dump fails and the
 *    process still runs on the GPU, memory intact;
 *  - dumped with --kill, restored with the same PID, and then finds its
 *    device memory intact: its own PASS decides.
 * gpu/info must be in the snapshot. Needs root and a GPU with a driver
 * that has the checkpoint API; skips (77) saying which is missing.
 */
#include <check.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "common/common.h"
#include "gpu/gpu.h"

/* Where cuda-target (and ckpt) are: CUDA_TARGET and CKPT in the
 * environment (tools/gpu-check), else what the build made. */
#ifndef CUDA_TARGET
#define CUDA_TARGET NULL
#endif
static const char *cuda_target, *ckpt_bin;

static char dir[PATH_MAX];

static char *path(const char *name)
{
	static char p[4][PATH_MAX + 64];
	static int k;
	k = (k + 1) % 4;
	snprintf(p[k], sizeof(p[k]), "%s/%s", dir, name);
	return p[k];
}

static void setup(void)
{
	snprintf(dir, sizeof(dir), "/tmp/ckptfs-gpu-XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(dir));
	ck_assert_int_eq(prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0), 0);
	ck_assert_int_eq(mkfifo(path("in"), 0600), 0);
}

static void teardown(void)
{
	rm_rf(dir);
}

/* Waits until the target's output file holds a line starting with want
 * (or FAIL/SKIP); returns that output, malloc'd. */
static char *wait_out(const char *want, int ms)
{
	char *text = NULL;
	for (int i = 0; i < ms / 10; i++) {
		free(text);
		text = NULL;
		if (read_file_full(path("out"), &text, NULL) >= 0 &&
		    (strstr(text, want) || strstr(text, "FAIL") || strstr(text, "SKIP")))
			return text;
		usleep(10000);
	}
	return text ? text : strdup("(no output)");
}

static pid_t target_start(void)
{
	pid_t pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		/* read-write: opening a FIFO so never waits for a writer,
		 * here or when the restore opens it again */
		int in = open(path("in"), O_RDWR);
		int out = open(path("out"), O_WRONLY | O_CREAT | O_APPEND, 0600);
		int err = open(path("err"), O_WRONLY | O_CREAT | O_APPEND, 0600);
		if (in < 0 || out < 0 || err < 0)
			_exit(126);
		dup2(in, 0);
		dup2(out, 1);
		dup2(err, 2);
		syscall(SYS_close_range, 3, ~0u, 0);
		execl(cuda_target, cuda_target, "64", (char *)NULL);
		_exit(127);
	}
	char *o = wait_out("ready", 60000);
	ck_assert_msg(strstr(o, "ready"), "cuda-target did not get ready: %s", o);
	free(o);
	return pid;
}

/* Tells the target to check its device memory; its verdict. */
static char *target_go(void)
{
	int fd = open(path("in"), O_WRONLY | O_CLOEXEC);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, "go\n", 3), 3);
	close(fd);
	return wait_out("PASS", 60000);
}

static int run_ckpt(const char *fault, const char *a1, const char *a2, const char *a3, const char *a4)
{
	pid_t pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		int err = open(path("ckpt.err"), O_WRONLY | O_CREAT | O_TRUNC, 0600);
		int n = open("/dev/null", O_RDWR);
		dup2(n, 1);
		dup2(err, 2);
		if (fault)
			setenv("CKPTFS_FAULT", fault, 1);
		else
			unsetenv("CKPTFS_FAULT");
		execl(ckpt_bin, "ckpt", a1, a2, a3, a4, (char *)NULL);
		_exit(127);
	}
	int st;
	ck_assert_int_eq(waitpid(pid, &st, 0), pid);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

static const char *ckpt_err(void)
{
	static char *e;
	free(e);
	e = NULL;
	if (read_file_full(path("ckpt.err"), &e, NULL) < 0)
		return "";
	return e;
}

/* A snapshot (format 2) has a directory per process: PID/gpu/info. */
static void check_info(const char *snap, pid_t pid)
{
	char p[PATH_MAX + 64];
	char *info = NULL;
	snprintf(p, sizeof(p), "%s/%d/gpu/info", path(snap), pid);
	ck_assert_msg(read_file_full(p, &info, NULL) >= 0, "no gpu/info in the snapshot");
	ck_assert_msg(strstr(info, "state_in_image: checkpointed\n") && strstr(info, "driver_version: "), "gpu/info: %s",
		      info);
	free(info);
}

START_TEST(dump_running)
{
	pid_t pid = target_start();
	char p[16];
	snprintf(p, sizeof(p), "%d", pid);
	ck_assert_msg(run_ckpt(NULL, "dump", p, path("s1"), NULL) == 0, "ckpt dump: %s", ckpt_err());
	check_info("s1", pid);
	enum gpu_state st;
	ck_assert_int_eq(gpu_get_state(pid, &st), 0);
	ck_assert_int_eq(st, GPU_STATE_RUNNING);
	char *v = target_go();
	ck_assert_msg(strstr(v, "PASS"), "after a dump: %s", v);
	free(v);
	int s;
	ck_assert_int_eq(waitpid(pid, &s, 0), pid);
}
END_TEST

START_TEST(dump_fault_leaves_gpu_running)
{
	pid_t pid = target_start();
	char p[16], fault[16];
	snprintf(p, sizeof(p), "%d", pid);
	snprintf(fault, sizeof(fault), "%d", FAULT_GPU_CHECKPOINT);
	ck_assert_int_ne(run_ckpt(fault, "dump", p, path("s1"), NULL), 0);
	ck_assert_msg(access(path("s1"), F_OK) < 0, "a failed dump left a snapshot");
	enum gpu_state st;
	ck_assert_int_eq(gpu_get_state(pid, &st), 0);
	ck_assert_int_eq(st, GPU_STATE_RUNNING);
	char *v = target_go();
	ck_assert_msg(strstr(v, "PASS"), "after a failed dump: %s", v);
	free(v);
	int s;
	ck_assert_int_eq(waitpid(pid, &s, 0), pid);
}
END_TEST

START_TEST(dump_kill_restore)
{
	pid_t pid = target_start();
	char p[16];
	int s;
	snprintf(p, sizeof(p), "%d", pid);
	ck_assert_msg(run_ckpt(NULL, "dump", "--kill", p, path("s1")) == 0, "ckpt dump --kill: %s", ckpt_err());
	ck_assert_int_eq(waitpid(pid, &s, 0), pid);
	ck_assert(WIFSIGNALED(s) && WTERMSIG(s) == SIGKILL);
	check_info("s1", pid);
	ck_assert_msg(run_ckpt(NULL, "restore", path("s1"), NULL, NULL) == 0, "ckpt restore: %s", ckpt_err());
	enum gpu_state st;
	ck_assert_int_eq(gpu_get_state(pid, &st), 0);
	ck_assert_int_eq(st, GPU_STATE_RUNNING);
	char *v = target_go();
	ck_assert_msg(strstr(v, "PASS"), "after the restore: %s", v);
	free(v);
	ck_assert_int_eq(waitpid(pid, &s, 0), pid);
	ck_assert(WIFEXITED(s) && WEXITSTATUS(s) == 0);
}
END_TEST

int main(void)
{
	int r = gpu_probe();
	if (r < 0) {
		printf("SKIP: no usable CUDA driver or GPU here: %s\n", err_msg());
		return 77;
	}
	cuda_target = getenv("CUDA_TARGET") ? getenv("CUDA_TARGET") : CUDA_TARGET;
	if (!cuda_target) {
		printf("SKIP: no cuda-target (built without cuda.h): name one in CUDA_TARGET (tools/gpu-check does)\n");
		return 77;
	}
	ckpt_bin = getenv("CKPT") ? getenv("CKPT") : CKPT;
	if (geteuid() != 0) {
		printf("SKIP: needs root (ptrace, clone3 with set_tid, PR_SET_MM_MAP)\n");
		return 77;
	}
	Suite *su = suite_create("gpu-ckpt");
	const char *names[] = { "dump_running", "dump_fault_leaves_gpu_running", "dump_kill_restore" };
	const TTest *tests[] = { dump_running, dump_fault_leaves_gpu_running, dump_kill_restore };
	for (size_t i = 0; i < ARRAY_SIZE(tests); i++) {
		TCase *tc = tcase_create(names[i]);
		tcase_add_checked_fixture(tc, setup, teardown);
		tcase_set_timeout(tc, 180);
		tcase_add_test(tc, tests[i]);
		suite_add_tcase(su, tc);
	}
	SRunner *sr = srunner_create(su);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
