/*
 * gpu/: the driver's checkpoint API on a real CUDA process. Each test runs
 * tests/gpu/cuda-target, moves it through lock, checkpoint (device memory
 * leaves the GPU), restore and unlock, then lets the target check its own
 * device memory. Skips (77) without a driver or a GPU.
 */
#include <check.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>

#include "common/common.h"
#include "gpu/gpu.h"

/* Where cuda-target is: CUDA_TARGET in the environment
 * (tools/gpu-check), else what the build made. */
#ifndef CUDA_TARGET
#define CUDA_TARGET NULL
#endif
static const char *cuda_target;

struct target {
	pid_t pid;
	FILE *in, *out;
};

static int target_start(struct target *t)
{
	int to[2], from[2];
	char line[128];

	if (pipe2(to, O_CLOEXEC) < 0 || pipe2(from, O_CLOEXEC) < 0)
		return -1;
	t->pid = fork();
	if (t->pid == 0) {
		dup2(to[0], 0);
		dup2(from[1], 1);
		execl(cuda_target, cuda_target, "64", (char *)NULL);
		_exit(127);
	}
	close(to[0]);
	close(from[1]);
	t->in = fdopen(to[1], "w");
	t->out = fdopen(from[0], "r");
	if (!fgets(line, sizeof(line), t->out))
		return -1;
	return strncmp(line, "ready", 5) == 0 ? 0 : -1;
}

static void target_verdict(struct target *t, char *line, size_t len)
{
	int st;
	fputs("go\n", t->in);
	fflush(t->in);
	if (!fgets(line, len, t->out))
		snprintf(line, len, "no verdict");
	line[strcspn(line, "\n")] = 0;
	waitpid(t->pid, &st, 0);
	fclose(t->in);
	fclose(t->out);
}

START_TEST(checkpoint_and_restore_device_memory)
{
	struct target t;
	enum gpu_state st;
	char v[128];

	ck_assert_int_eq(target_start(&t), 0);
	ck_assert_int_eq(gpu_get_state(t.pid, &st), 0);
	ck_assert_int_eq(st, GPU_STATE_RUNNING);
	ck_assert_int_eq(gpu_lock(t.pid, 10000), 0);
	ck_assert_int_eq(gpu_checkpoint(t.pid), 0);
	ck_assert_int_eq(gpu_get_state(t.pid, &st), 0);
	ck_assert_int_eq(st, GPU_STATE_CHECKPOINTED);
	ck_assert_int_eq(gpu_restore(t.pid), 0);
	ck_assert_int_eq(gpu_unlock(t.pid), 0);
	target_verdict(&t, v, sizeof(v));
	ck_assert_str_eq(v, "PASS");
}
END_TEST

START_TEST(injected_lock_failure_leaves_target_running)
{
	struct target t;
	enum gpu_state st;
	char v[128];

	setenv("CKPTFS_FAULT", "300", 1);
	fault_reload();
	ck_assert_int_eq(target_start(&t), 0);
	ck_assert_int_eq(gpu_lock(t.pid, 10000), -EIO);
	ck_assert_int_eq(gpu_get_state(t.pid, &st), 0);
	ck_assert_int_eq(st, GPU_STATE_RUNNING);
	target_verdict(&t, v, sizeof(v));
	ck_assert_str_eq(v, "PASS");
}
END_TEST

START_TEST(no_cuda_context_is_esrch)
{
	enum gpu_state st;
	int r = gpu_get_state(getpid(), &st);
	ck_assert_msg(r == -ESRCH || r == -EOPNOTSUPP, "got %d (%s)", r, err_msg());
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
	Suite *s = suite_create("gpu");
	TCase *tc = tcase_create("checkpoint");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, checkpoint_and_restore_device_memory);
	tcase_add_test(tc, injected_lock_failure_leaves_target_running);
	tcase_add_test(tc, no_cuda_context_is_esrch);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
