/*
 * gpu/ with the CUDA driver's checkpoint API (CUDA 12.8+, driver 550+).
 *
 * libcuda is loaded with dlopen on first use so that the daemon and the
 * command line run on machines without a driver; what we use of the
 * driver API is declared in driver-int.h (checked against the toolkit's
 * cuda.h where that is found), so this builds everywhere. The driver
 * does the work inside the target process (a restore thread of its
 * own), so the target's threads that the driver names must be running
 * while these calls are made: callers freeze the process only after
 * gpu_checkpoint() and thaw it before gpu_restore().
 *
 * A CUresult becomes an errno here, once, with the driver's name for it in
 * err_msg().
 */
#include <dlfcn.h>
#include <pthread.h>

#include "common/common.h"
#include "gpu/driver-int.h"
#include "gpu/gpu.h"

#define FIELD(field, sym, ret, params) ret(*field) params;
struct cuda_api {
	GPU_CU_OWN_ENTRY_POINTS(FIELD)
};
#undef FIELD

static struct cuda_api api;
static int api_err = -ENODEV;
static char api_why[256];
static pthread_once_t api_once = PTHREAD_ONCE_INIT;

static void api_load(void)
{
	void *h = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
	if (!h) {
		snprintf(api_why, sizeof(api_why), "cannot load libcuda.so.1: %s", dlerror());
		return;
	}
	/* the required ones first: a driver without them is too old */
	static const char *const names[] = {
#define NAME(field, sym, ret, params) #sym,
		GPU_CU_OWN_ENTRY_POINTS(NAME)
#undef NAME
	};
	void **slot = (void **)&api;
	_Static_assert(sizeof(api) == ARRAY_SIZE(names) * sizeof(void *), "one pointer per entry point");
	for (size_t i = 0; i < ARRAY_SIZE(names); i++) {
		slot[i] = dlsym(h, names[i]);
		if (!slot[i] && i < GPU_CU_REQUIRED) {
			snprintf(api_why, sizeof(api_why), "the CUDA driver has no %s (driver 550 or newer needed)",
				 names[i]);
			api_err = -EOPNOTSUPP;
			return;
		}
	}
	/* a driver from before CUDA 11.4 has only the first cuDeviceGetUuid */
	if (!api.device_uuid)
		*(void **)&api.device_uuid = dlsym(h, "cuDeviceGetUuid");
	/* cuCheckpointProcessRestore needs cuInit in the caller. */
	int r = api.init(0);
	if (r != GPU_CU_SUCCESS) {
		const char *n = "?";
		api.get_error_name(r, &n);
		snprintf(api_why, sizeof(api_why), "cuInit failed: %s", n);
		api_err = r == GPU_CU_ERROR_NO_DEVICE ? -ENODEV : -EIO;
		return;
	}
	api_err = 0;
}

static int api_get(void)
{
	pthread_once(&api_once, api_load);
	if (api_err)
		return err_set(api_err, "%s", api_why);
	return 0;
}

/* The one place a CUresult becomes an errno. */
static int cu_err(int r, pid_t pid, const char *what)
{
	const char *n = "?";
	int e;

	if (r == GPU_CU_SUCCESS)
		return 0;
	api.get_error_name(r, &n);
	switch (r) {
	case GPU_CU_ERROR_INVALID_VALUE:
		e = -ESRCH; /* no CUDA context in that process */
		break;
	case GPU_CU_ERROR_NOT_READY:
		e = -ETIMEDOUT; /* lock timeout */
		break;
	case GPU_CU_ERROR_ILLEGAL_STATE:
		e = -EBUSY;
		break;
	case GPU_CU_ERROR_NOT_SUPPORTED:
		e = -EOPNOTSUPP;
		break;
	case GPU_CU_ERROR_NOT_INITIALIZED:
	case GPU_CU_ERROR_NO_DEVICE:
		e = -ENODEV;
		break;
	default:
		e = -EIO;
	}
	return err_set(e, "pid %d: %s: %s", pid, what, n);
}

int gpu_probe(void)
{
	return api_get();
}

int gpu_get_state(pid_t pid, enum gpu_state *ret)
{
	int st;
	int r = api_get();
	if (r < 0)
		return r;
	r = api.get_state(pid, &st);
	/* A process that never initialized CUDA: NOT_INITIALIZED (driver
	 * 580.159.04; we did call cuInit), INVALID_VALUE elsewhere. Either
	 * way no CUDA in it, not a driver failure: every dump on a GPU host
	 * asks this of processes that do not use the GPU. */
	if (r == GPU_CU_ERROR_NOT_INITIALIZED)
		return err_set(-ESRCH, "pid %d: cuCheckpointProcessGetState: no CUDA in it (CUDA_ERROR_NOT_INITIALIZED)",
			       pid);
	r = cu_err(r, pid, "cuCheckpointProcessGetState");
	if (r < 0)
		return r;
	switch (st) {
	case GPU_CU_PROCESS_STATE_RUNNING:
		*ret = GPU_STATE_RUNNING;
		break;
	case GPU_CU_PROCESS_STATE_LOCKED:
		*ret = GPU_STATE_LOCKED;
		break;
	case GPU_CU_PROCESS_STATE_CHECKPOINTED:
		*ret = GPU_STATE_CHECKPOINTED;
		break;
	default:
		*ret = GPU_STATE_FAILED;
	}
	return 0;
}

int gpu_lock(pid_t pid, unsigned timeout_ms)
{
	struct gpu_cu_lock_args a = { .timeout_ms = timeout_ms };
	int r = api_get();
	if (r < 0)
		return r;
	if (fault_hit(FAULT_GPU_LOCK))
		return err_set(-EIO, "pid %d: injected GPU lock failure", pid);
	return cu_err(api.lock(pid, &a), pid, "cuCheckpointProcessLock");
}

int gpu_checkpoint(pid_t pid)
{
	struct gpu_cu_checkpoint_args a = { { 0 } };
	int r = api_get();
	if (r < 0)
		return r;
	if (fault_hit(FAULT_GPU_CHECKPOINT))
		return err_set(-EIO, "pid %d: injected GPU checkpoint failure", pid);
	return cu_err(api.checkpoint(pid, &a), pid, "cuCheckpointProcessCheckpoint");
}

int gpu_restore(pid_t pid)
{
	struct gpu_cu_restore_args a;
	int r = api_get();
	if (r < 0)
		return r;
	memset(&a, 0, sizeof(a));
	if (fault_hit(FAULT_GPU_RESTORE))
		return err_set(-EIO, "pid %d: injected GPU restore failure", pid);
	return cu_err(api.restore(pid, &a), pid, "cuCheckpointProcessRestore");
}

int gpu_unlock(pid_t pid)
{
	struct gpu_cu_unlock_args a = { { 0 } };
	int r = api_get();
	if (r < 0)
		return r;
	if (fault_hit(FAULT_GPU_UNLOCK))
		return err_set(-EIO, "pid %d: injected GPU unlock failure", pid);
	return cu_err(api.unlock(pid, &a), pid, "cuCheckpointProcessUnlock");
}

int gpu_release(pid_t pid)
{
	enum gpu_state st;
	int r = gpu_get_state(pid, &st);
	if (r < 0)
		return r;
	/* a driver call can fail for a passing reason (the process busy in
	 * a signal handler, memory short for a moment): a few tries, since a
	 * process left without its GPU is stuck */
	for (int i = 0; i < 3 && st == GPU_STATE_CHECKPOINTED; i++) {
		r = gpu_restore(pid);
		if (r >= 0)
			st = GPU_STATE_LOCKED;
	}
	for (int i = 0; i < 3 && st == GPU_STATE_LOCKED; i++) {
		r = gpu_unlock(pid);
		if (r >= 0)
			st = GPU_STATE_RUNNING;
	}
	return st == GPU_STATE_RUNNING ? 0 : r;
}

int gpu_restore_tid(pid_t pid, pid_t *ret)
{
	int tid = 0;
	int r = api_get();
	if (r < 0)
		return r;
	r = cu_err(api.restore_tid(pid, &tid), pid, "cuCheckpointProcessGetRestoreThreadId");
	if (r < 0)
		return r;
	*ret = tid;
	return 0;
}

int gpu_describe(char **ret)
{
	char buf[4096];
	size_t n = 0;
	int v, count = 0;
	int r = api_get();
	if (r < 0)
		return r;
#define ADD(...) n += (size_t)snprintf(buf + n, n < sizeof(buf) ? sizeof(buf) - n : 0, __VA_ARGS__)
	if (api.driver_version && api.driver_version(&v) == GPU_CU_SUCCESS)
		ADD("driver_version: %d\n", v);
	if (api.device_count && api.device_count(&count) == GPU_CU_SUCCESS)
		ADD("device_count: %d\n", count);
	for (int i = 0; i < count && i < 16 && api.device_get; i++) {
		int d;
		char name[256];
		struct gpu_cu_uuid u;
		if (api.device_get(&d, i) != GPU_CU_SUCCESS)
			continue;
		if (api.device_name && api.device_name(name, sizeof(name), d) == GPU_CU_SUCCESS) {
			name[strcspn(name, "\n")] = 0;
			ADD("device%d_name: %s\n", i, name);
		}
		if (api.device_uuid && api.device_uuid(&u, d) == GPU_CU_SUCCESS) {
			const unsigned char *b = (const unsigned char *)u.bytes;
			ADD("device%d_uuid: GPU-", i);
			for (int k = 0; k < 16; k++)
				ADD("%02x%s", b[k], k == 3 || k == 5 || k == 7 || k == 9 ? "-" : "");
			ADD("\n");
		}
	}
#undef ADD
	if (n >= sizeof(buf))
		return err_set(-EOVERFLOW, "GPU description too long");
	char *t = strdup(buf);
	if (!t)
		return -ENOMEM;
	*ret = t;
	return 0;
}
