/*
 * Built only where the CUDA toolkit's cuda.h is found: compares gpu/'s
 * own declarations of the driver API (driver-int.h) with cuda.h, so that
 * a change in the driver API breaks the build instead of a checkpoint.
 * Nothing here is linked into a program: every check is at compile time.
 */
#include <cuda.h>
#include <stddef.h>

#include "gpu/driver-int.h"

#define SAME_VALUE(ours, theirs) _Static_assert((int)(ours) == (int)(theirs), #ours " is not " #theirs " in cuda.h")

SAME_VALUE(GPU_CU_SUCCESS, CUDA_SUCCESS);
SAME_VALUE(GPU_CU_ERROR_INVALID_VALUE, CUDA_ERROR_INVALID_VALUE);
SAME_VALUE(GPU_CU_ERROR_OUT_OF_MEMORY, CUDA_ERROR_OUT_OF_MEMORY);
SAME_VALUE(GPU_CU_ERROR_NOT_INITIALIZED, CUDA_ERROR_NOT_INITIALIZED);
SAME_VALUE(GPU_CU_ERROR_NO_DEVICE, CUDA_ERROR_NO_DEVICE);
SAME_VALUE(GPU_CU_ERROR_OPERATING_SYSTEM, CUDA_ERROR_OPERATING_SYSTEM);
SAME_VALUE(GPU_CU_ERROR_ILLEGAL_STATE, CUDA_ERROR_ILLEGAL_STATE);
SAME_VALUE(GPU_CU_ERROR_NOT_FOUND, CUDA_ERROR_NOT_FOUND);
SAME_VALUE(GPU_CU_ERROR_NOT_READY, CUDA_ERROR_NOT_READY);
SAME_VALUE(GPU_CU_ERROR_NOT_PERMITTED, CUDA_ERROR_NOT_PERMITTED);
SAME_VALUE(GPU_CU_ERROR_NOT_SUPPORTED, CUDA_ERROR_NOT_SUPPORTED);
SAME_VALUE(GPU_CU_ERROR_TIMEOUT, CUDA_ERROR_TIMEOUT);
SAME_VALUE(GPU_CU_ERROR_UNKNOWN, CUDA_ERROR_UNKNOWN);
SAME_VALUE(GPU_CU_PROCESS_STATE_RUNNING, CU_PROCESS_STATE_RUNNING);
SAME_VALUE(GPU_CU_PROCESS_STATE_LOCKED, CU_PROCESS_STATE_LOCKED);
SAME_VALUE(GPU_CU_PROCESS_STATE_CHECKPOINTED, CU_PROCESS_STATE_CHECKPOINTED);
SAME_VALUE(GPU_CU_PROCESS_STATE_FAILED, CU_PROCESS_STATE_FAILED);

/* int stands for CUresult, CUprocessState and CUdevice in our table */
_Static_assert(sizeof(CUresult) == sizeof(int), "CUresult is not 32 bits");
_Static_assert(sizeof(CUprocessState) == sizeof(int), "CUprocessState is not 32 bits");
_Static_assert(__builtin_types_compatible_p(CUdevice, int), "CUdevice is not an int");

#define SAME_LAYOUT(ours, theirs)                                                             \
	_Static_assert(sizeof(ours) == sizeof(theirs), #ours " differs in size from " #theirs); \
	_Static_assert(_Alignof(ours) == _Alignof(theirs), #ours " differs in alignment from " #theirs)

SAME_LAYOUT(struct gpu_cu_lock_args, CUcheckpointLockArgs);
_Static_assert(offsetof(struct gpu_cu_lock_args, timeout_ms) == offsetof(CUcheckpointLockArgs, timeoutMs),
	       "CUcheckpointLockArgs.timeoutMs moved");
SAME_LAYOUT(struct gpu_cu_checkpoint_args, CUcheckpointCheckpointArgs);
SAME_LAYOUT(struct gpu_cu_restore_args, CUcheckpointRestoreArgs);
SAME_LAYOUT(struct gpu_cu_unlock_args, CUcheckpointUnlockArgs);
SAME_LAYOUT(struct gpu_cu_uuid, CUuuid);

/* each entry point's prototype in cuda.h, with cuda.h's types put into
 * our list: the same parameters and return type, in the same order */
#define SAME_TYPE(field, sym, ret, params)                                                      \
	_Static_assert(__builtin_types_compatible_p(__typeof__(&sym), ret(*) params),          \
		       #sym " in cuda.h is not what gpu/driver-int.h says");
GPU_CU_ENTRY_POINTS(SAME_TYPE, CUresult, CUprocessState, CUcheckpointLockArgs, CUcheckpointCheckpointArgs,
		    CUcheckpointRestoreArgs, CUcheckpointUnlockArgs, CUdevice, CUuuid)
