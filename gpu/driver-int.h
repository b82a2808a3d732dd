/*
 * The part of the CUDA driver API that gpu/ uses, declared here so that
 * gpu/cuda.c builds everywhere, with or without the CUDA toolkit: the
 * CUresult values we name, the process states, the checkpoint API's
 * argument structs, CUuuid, and the type of every entry point loaded with
 * dlsym. Written from NVIDIA's public documentation of the driver API
 * (CUDA 12.8, "Checkpointing" section). Where the toolkit's cuda.h is
 * found at build time, driver-check.c compares all of it with cuda.h and
 * breaks the build on any difference; tests/cuda-double implements the
 * same entry points for the tests.
 *
 * Names carry our prefix: a CUresult is an int (the driver's enum is
 * 32 bits), a CUprocessState too, a CUdevice an int.
 */
#ifndef CKPTFS_GPU_DRIVER_INT_H
#define CKPTFS_GPU_DRIVER_INT_H

#include <stdint.h>

/* CUresult: the values gpu/ tells apart. */
enum gpu_cu_result {
	GPU_CU_SUCCESS = 0,
	GPU_CU_ERROR_INVALID_VALUE = 1,
	GPU_CU_ERROR_OUT_OF_MEMORY = 2,
	GPU_CU_ERROR_NOT_INITIALIZED = 3,
	GPU_CU_ERROR_NO_DEVICE = 100,
	GPU_CU_ERROR_OPERATING_SYSTEM = 304,
	GPU_CU_ERROR_ILLEGAL_STATE = 401,
	GPU_CU_ERROR_NOT_FOUND = 500,
	GPU_CU_ERROR_NOT_READY = 600,
	GPU_CU_ERROR_NOT_PERMITTED = 800,
	GPU_CU_ERROR_NOT_SUPPORTED = 801,
	GPU_CU_ERROR_TIMEOUT = 909,
	GPU_CU_ERROR_UNKNOWN = 999,
	_GPU_CU_RESULT_MAX,
};

/* CUprocessState: a process's CUDA state for the checkpoint API. */
enum gpu_cu_process_state {
	GPU_CU_PROCESS_STATE_RUNNING = 0,
	GPU_CU_PROCESS_STATE_LOCKED = 1,
	GPU_CU_PROCESS_STATE_CHECKPOINTED = 2,
	GPU_CU_PROCESS_STATE_FAILED = 3,
	_GPU_CU_PROCESS_STATE_MAX,
};

/* CUcheckpointLockArgs: timeoutMs 0 waits without limit. */
struct gpu_cu_lock_args {
	unsigned int timeout_ms;
	unsigned int reserved0;
	uint64_t reserved1[7];
};

/* CUcheckpointCheckpointArgs, CUcheckpointRestoreArgs,
 * CUcheckpointUnlockArgs: 64 bytes each, zero for what gpu/ asks. */
struct gpu_cu_checkpoint_args {
	uint64_t reserved[8];
};
struct gpu_cu_restore_args {
	uint64_t reserved[8];
};
struct gpu_cu_unlock_args {
	uint64_t reserved[8];
};

/* CUuuid */
struct gpu_cu_uuid {
	char bytes[16];
};

/*
 * Every entry point gpu/ loads, once: X(field, symbol, return type,
 * parameter list), with the types that differ between our names and
 * cuda.h's as macro parameters, so that cuda.c builds its table of
 * pointers from it and driver-check.c compares each with cuda.h's
 * prototype. The first eight are required (the checkpoint API), the
 * others optional (what gpu/info says of the machine).
 */
#define GPU_CU_ENTRY_POINTS(X, RESULT, STATE, LOCK, CKPT, RESTORE, UNLOCK, DEVICE, UUID) \
	X(init, cuInit, RESULT, (unsigned int))                                            \
	X(get_error_name, cuGetErrorName, RESULT, (RESULT, const char **))                 \
	X(get_state, cuCheckpointProcessGetState, RESULT, (int, STATE *))                 \
	X(lock, cuCheckpointProcessLock, RESULT, (int, LOCK *))                           \
	X(checkpoint, cuCheckpointProcessCheckpoint, RESULT, (int, CKPT *))               \
	X(restore, cuCheckpointProcessRestore, RESULT, (int, RESTORE *))                  \
	X(unlock, cuCheckpointProcessUnlock, RESULT, (int, UNLOCK *))                     \
	X(restore_tid, cuCheckpointProcessGetRestoreThreadId, RESULT, (int, int *))       \
	X(driver_version, cuDriverGetVersion, RESULT, (int *))                            \
	X(device_count, cuDeviceGetCount, RESULT, (int *))                                \
	X(device_get, cuDeviceGet, RESULT, (DEVICE *, int))                               \
	X(device_name, cuDeviceGetName, RESULT, (char *, int, DEVICE))                    \
	X(device_uuid, cuDeviceGetUuid_v2, RESULT, (UUID *, DEVICE))

/* The list above with gpu/'s own types. */
#define GPU_CU_OWN_ENTRY_POINTS(X)                                                                   \
	GPU_CU_ENTRY_POINTS(X, int, int, struct gpu_cu_lock_args, struct gpu_cu_checkpoint_args, \
			    struct gpu_cu_restore_args, struct gpu_cu_unlock_args, int, struct gpu_cu_uuid)

/* How many of them are required: the first ones, up to restore_tid. */
#define GPU_CU_REQUIRED 8

#endif
