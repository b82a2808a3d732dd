/*
 * gpu: CUDA process checkpoint through the driver's checkpoint API
 * (cuCheckpointProcess*), loaded from libcuda with dlopen at run time so
 * that ckptfs runs on machines without a GPU. Built without CUDA (meson
 * -Dgpu=disabled), every call returns -EOPNOTSUPP.
 *
 * Errors: -errno; -ENODEV when the driver or a GPU is missing, -ESRCH when
 * the process has no CUDA context. A CUresult becomes an errno here, once,
 * with the driver's name for it in err_msg().
 */
#ifndef CKPTFS_GPU_H
#define CKPTFS_GPU_H

#include <stdbool.h>
#include <sys/types.h>

enum gpu_state {
	GPU_STATE_RUNNING,
	GPU_STATE_LOCKED,
	GPU_STATE_CHECKPOINTED,
	GPU_STATE_FAILED,
	_GPU_STATE_MAX,
};

/* 0 when the driver's checkpoint API can be used here, else -errno. */
int gpu_probe(void);
/* The state of pid's CUDA context; -ESRCH if it has none. */
int gpu_get_state(pid_t pid, enum gpu_state *ret);
/* RUNNING -> LOCKED: waits for submitted work (timeout_ms 0: no limit). */
int gpu_lock(pid_t pid, unsigned timeout_ms);
/* LOCKED -> CHECKPOINTED: device memory moves into the process's host memory. */
int gpu_checkpoint(pid_t pid);
/* CHECKPOINTED -> LOCKED. */
int gpu_restore(pid_t pid);
/* LOCKED -> RUNNING. */
int gpu_unlock(pid_t pid);
/* Gives pid its GPU back from where a checkpoint left it, as the
 * driver tells: CHECKPOINTED -> (restore) LOCKED -> (unlock) RUNNING;
 * nothing when RUNNING. Each step is tried up to 3 times. pid must not be
 * frozen: its driver thread does the work. 0 once it is RUNNING. */
int gpu_release(pid_t pid);
/* The driver thread inside pid that must run while the rest is frozen. */
int gpu_restore_tid(pid_t pid, pid_t *ret);
const char *gpu_state_name(enum gpu_state s);
/* This machine's driver and devices, as "key: value" lines for a
 * snapshot's gpu/info: driver_version (cuDriverGetVersion's number,
 * e.g. 12080), device_count, then device<N>_name and device<N>_uuid
 * ("GPU-xxxxxxxx-xxxx-...") for each device the driver shows. A field
 * the driver cannot give is left out. *ret is malloc'd, the caller's to
 * free; errors as gpu_probe(). */
int gpu_describe(char **ret);

#endif
