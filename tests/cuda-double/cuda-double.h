/*
 * A test double of the CUDA driver (libcuda.so.1), built under tests/ and
 * never installed: the tests put its directory first on LD_LIBRARY_PATH
 * of ckpt and of the target, so that gpu/cuda.c and the target load it
 * instead of NVIDIA's. It implements the entry points gpu/ loads
 * (gpu/driver-int.h) with the checkpoint API's documented states and
 * transitions, and the few a target needs to hold "device memory".
 *
 * The "device" of a process is a file, DIR/dev/nvidia-<pid>, mapped
 * shared (so /proc/PID/maps names it as a GPU process's maps name
 * /dev/nvidia*); a driver thread inside the process (named
 * "cuda-double") serves the checkpoint API's requests, which another
 * process's instance sends to it as datagrams on an abstract Unix socket
 * named after DIR and the pid:
 *
 *   running --lock--> locked --checkpoint--> checkpointed
 *   checkpointed --restore--> locked --unlock--> running
 *
 * lock waits for submitted work (at most timeoutMs, else
 * CUDA_ERROR_NOT_READY) and from then on blocks the process's own CUDA
 * calls until unlock; checkpoint copies each allocation into a fresh
 * anonymous mapping the driver thread makes, unmaps the device (keeping
 * its addresses reserved PROT_NONE, as driver 580 does) and deletes its
 * file; restore makes the device again, maps it where it was, copies back
 * (the same device addresses) and unmaps those host copies. While the
 * process has its GPU it holds /dev/fuse open, closed by checkpoint and
 * opened again by restore, as driver 580 holds /dev/nvidiactl: a
 * character device a dump refuses. A request in a wrong
 * state answers CUDA_ERROR_ILLEGAL_STATE; a pid without CUDA,
 * CUDA_ERROR_NOT_INITIALIZED (as driver 580.159.04 does). GetRestoreThreadId gives the driver thread's
 * tid.
 *
 * Knobs, read by each process's instance from its own environment:
 *   CKPTFS_CUDA_DOUBLE_DIR      the directory of devices and the socket
 *                               namespace (default /tmp/cuda-double)
 *   CKPTFS_CUDA_DOUBLE_FAIL     CALL=RESULT[@after][#N],...: CALL (init,
 *                               get_state, lock, checkpoint, restore,
 *                               unlock, restore_tid) returns RESULT (a
 *                               CUresult number) instead of being done;
 *                               @after: done first, then fails; #N: only
 *                               the N-th call fails
 *   CKPTFS_CUDA_DOUBLE_BUSY     1: the target's submitted work never ends
 *                               (a lock times out)
 *   CKPTFS_CUDA_DOUBLE_VERSION  what cuDriverGetVersion says (12080)
 *   CKPTFS_CUDA_DOUBLE_KEEP_CTL 1: checkpoint leaves /dev/fuse open
 *   CKPTFS_CUDA_DOUBLE_HOST_AT  0xADDR, read at each checkpoint step: the
 *                               host copies are mapped there, one after
 *                               the other (MAP_FIXED_NOREPLACE), instead
 *                               of where the kernel likes
 * The same source built with CUDA_DOUBLE_OLD is a driver from before the
 * checkpoint API (old/libcuda.so.1: no cuCheckpointProcess*, 12020).
 *
 * What a target calls besides gpu/'s entry points, declared here in the
 * driver's own spelling.
 */
#ifndef CKPTFS_CUDA_DOUBLE_H
#define CKPTFS_CUDA_DOUBLE_H

#include <stddef.h>

#include "gpu/driver-int.h"

struct cuda_double_ctx;

int cuInit(unsigned int flags);
int cuDeviceGet(int *dev, int ordinal);
int cuDevicePrimaryCtxRetain(struct cuda_double_ctx **ctx, int dev);
int cuCtxSetCurrent(struct cuda_double_ctx *ctx);
int cuMemAlloc_v2(unsigned long long *dptr, size_t bytes);
int cuMemFree_v2(unsigned long long dptr);
int cuMemcpyHtoD_v2(unsigned long long dst, const void *src, size_t bytes);
int cuMemcpyDtoH_v2(void *dst, unsigned long long src, size_t bytes);
int cuCtxSynchronize(void);
int cuGetErrorName(int error, const char **name);

#endif
