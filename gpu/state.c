/* Names of GPU process states, shared by the CUDA and the stub builds. */
#include "gpu/gpu.h"

const char *gpu_state_name(enum gpu_state s)
{
	static const char *n[_GPU_STATE_MAX] = { "running", "locked", "checkpointed", "failed" };
	return s < _GPU_STATE_MAX ? n[s] : "unknown";
}
