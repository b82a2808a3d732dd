/*
 * gpu/ built without CUDA: every operation is unsupported.
 */
#include "common/common.h"
#include "gpu/gpu.h"

int gpu_probe(void)
{
	return err_set(-EOPNOTSUPP, "built without GPU support");
}

int gpu_get_state(pid_t pid, enum gpu_state *ret)
{
	return -EOPNOTSUPP;
}

int gpu_lock(pid_t pid, unsigned timeout_ms)
{
	return -EOPNOTSUPP;
}

int gpu_checkpoint(pid_t pid)
{
	return -EOPNOTSUPP;
}

int gpu_restore(pid_t pid)
{
	return -EOPNOTSUPP;
}

int gpu_unlock(pid_t pid)
{
	return -EOPNOTSUPP;
}

int gpu_release(pid_t pid)
{
	return -EOPNOTSUPP;
}

int gpu_restore_tid(pid_t pid, pid_t *ret)
{
	return -EOPNOTSUPP;
}

int gpu_describe(char **ret)
{
	return -EOPNOTSUPP;
}
