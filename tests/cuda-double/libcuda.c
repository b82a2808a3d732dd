/*
 * The test double of the CUDA driver (see cuda-double.h for what it
 * models and its knobs). Two sides in one library:
 *  - in a process with a context (the target): the "device memory",
 *    its state, and the driver thread that serves checkpoint requests;
 *  - in any process (ckpt, the daemon, the keeper): the checkpoint API,
 *    each call one datagram to the target's driver thread and its answer.
 * What must stay true: every change of the target's memory layout is made
 * by its own driver thread (as the real driver's thread does), and a
 * request's answer is sent only once its work is done, so that the caller
 * may freeze the target right after.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "tests/cuda-double/cuda-double.h"

#define EXPORT __attribute__((visibility("default")))
#define MAX_ALLOCS 64
/* fake device addresses: where allocations start, as a GPU's would */
#define DEVICE_BASE 0x7f0000000000ull
/* how long a caller waits for the driver thread to answer */
#define ANSWER_MS 30000

enum op { OP_GET_STATE, OP_LOCK, OP_CHECKPOINT, OP_RESTORE, OP_UNLOCK, OP_RESTORE_TID, OP_INIT, _OP_MAX };
static const char *const op_names[_OP_MAX] = { "get_state", "lock",        "checkpoint", "restore",
					       "unlock",    "restore_tid", "init" };

struct request {
	uint32_t op;
	uint32_t timeout_ms;
};

struct answer {
	int32_t result;
	int32_t value;
};

/* ---- knobs ---------------------------------------------------------- */

struct fail {
	int result;  /* 0: none */
	bool after;  /* done first, then fails */
	long nth;    /* only the N-th call; 0: every call */
	long calls;
};

static char dir[200] = "/tmp/cuda-double";
static struct fail fails[_OP_MAX];
static bool busy;
static bool keep_ctl; /* the checkpoint step leaves the control file open */
static int version = 12080;
static pthread_once_t knobs_once = PTHREAD_ONCE_INIT;

static void knobs_read(void)
{
	const char *e = getenv("CKPTFS_CUDA_DOUBLE_DIR");
	if (e && *e)
		snprintf(dir, sizeof(dir), "%s", e);
	e = getenv("CKPTFS_CUDA_DOUBLE_BUSY");
	busy = e && *e == '1';
	e = getenv("CKPTFS_CUDA_DOUBLE_KEEP_CTL");
	keep_ctl = e && *e == '1';
	e = getenv("CKPTFS_CUDA_DOUBLE_VERSION");
	if (e && *e)
		version = atoi(e);
#ifdef CUDA_DOUBLE_OLD
	version = 12020;
#endif
	e = getenv("CKPTFS_CUDA_DOUBLE_FAIL");
	while (e && *e) {
		size_t n = strcspn(e, "=");
		for (int i = 0; i < _OP_MAX && e[n] == '='; i++) {
			if (strlen(op_names[i]) != n || strncmp(e, op_names[i], n))
				continue;
			char *end;
			fails[i].result = (int)strtol(e + n + 1, &end, 10);
			for (;;) {
				if (!strncmp(end, "@after", 6)) {
					fails[i].after = true;
					end += 6;
				} else if (*end == '#') {
					fails[i].nth = strtol(end + 1, &end, 10);
				} else {
					break;
				}
			}
		}
		e = strchr(e, ',');
		e = e ? e + 1 : NULL;
	}
}

/* The result this call of op is to fail with, 0 if none. */
static int fail_now(enum op op, bool after)
{
	struct fail *f = &fails[op];
	pthread_once(&knobs_once, knobs_read);
	if (!f->result || f->after != after)
		return 0;
	long n = __atomic_add_fetch(&f->calls, 1, __ATOMIC_SEQ_CST);
	return !f->nth || f->nth == n ? f->result : 0;
}

/* ---- the target's side: device, state, driver thread ---------------- */

struct alloc {
	uint64_t dptr;  /* its device address; 0: a free slot */
	size_t len;     /* page-rounded */
	off_t off;      /* in the device file */
	void *dev;      /* the device mapping, while running or locked */
	void *host;     /* its copy in host memory, while checkpointed */
	void *resv;     /* while checkpointed: where dev was, kept PROT_NONE */
};

struct cuda_double_ctx {
	int dummy;
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
/* all below under mu */
static struct cuda_double_ctx ctx_one;
static bool have_ctx, inited;
static int state = GPU_CU_PROCESS_STATE_RUNNING;
static struct alloc allocs[MAX_ALLOCS];
static off_t dev_size;
static uint64_t next_dptr = DEVICE_BASE;
static int calls_in_flight; /* the process's own CUDA calls under way */
static pid_t driver_tid;
/* The device's control file, open while the process has its GPU, as
 * driver 580 keeps /dev/nvidiactl and /dev/nvidia0 open and closes them
 * in the checkpoint step: here /dev/fuse, another character device that
 * a dump refuses (-1 where it cannot be opened). */
static int ctl_fd = -1;

static void ctl_open(void)
{
	if (ctl_fd < 0)
		ctl_fd = open("/dev/fuse", O_RDWR | O_CLOEXEC);
}

static void socket_name(pid_t pid, struct sockaddr_un *sa, socklen_t *len)
{
	memset(sa, 0, sizeof(*sa));
	sa->sun_family = AF_UNIX;
	/* abstract: nothing to clean up, free again once the process is gone */
	int n = snprintf(sa->sun_path + 1, sizeof(sa->sun_path) - 1, "ckptfs-cuda-double:%s:%d", dir, (int)pid);
	*len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + n);
}

static void dev_path(char *p, size_t len)
{
	snprintf(p, len, "%s/dev/nvidia-%d", dir, (int)getpid());
}

/* Maps every allocation from a fresh device file (at run time, or again
 * at restore: the same device addresses, wherever the mapping lands). */
static int dev_open(int *ret)
{
	char p[256];
	snprintf(p, sizeof(p), "%s/dev", dir);
	mkdir(dir, 0700);
	mkdir(p, 0700);
	dev_path(p, sizeof(p));
	int fd = open(p, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (fd < 0)
		return GPU_CU_ERROR_OPERATING_SYSTEM;
	*ret = fd;
	return 0;
}

static int map_alloc(int fd, struct alloc *a)
{
	/* back where it was, over the reservation, after a checkpoint */
	void *m = mmap(a->resv, a->len, PROT_READ | PROT_WRITE, MAP_SHARED | (a->resv ? MAP_FIXED : 0), fd, a->off);
	if (m == MAP_FAILED)
		return GPU_CU_ERROR_OUT_OF_MEMORY;
	a->dev = m;
	a->resv = NULL;
	return 0;
}

/* Work is done (at once, unless BUSY): lock waits for it. */
static bool work_pending(void)
{
	return busy || calls_in_flight > 0;
}

static int do_lock(unsigned timeout_ms)
{
	if (state != GPU_CU_PROCESS_STATE_RUNNING)
		return GPU_CU_ERROR_ILLEGAL_STATE;
	struct timespec end;
	clock_gettime(CLOCK_REALTIME, &end);
	end.tv_sec += timeout_ms / 1000;
	end.tv_nsec += (long)(timeout_ms % 1000) * 1000000;
	if (end.tv_nsec >= 1000000000) {
		end.tv_sec++;
		end.tv_nsec -= 1000000000;
	}
	while (work_pending()) {
		if (timeout_ms == 0) {
			pthread_cond_wait(&cond, &mu);
		} else if (pthread_cond_timedwait(&cond, &mu, &end) == ETIMEDOUT) {
			if (work_pending())
				return GPU_CU_ERROR_NOT_READY;
		}
	}
	state = GPU_CU_PROCESS_STATE_LOCKED;
	return 0;
}

static int do_checkpoint(void)
{
	char p[256];
	if (state != GPU_CU_PROCESS_STATE_LOCKED)
		return GPU_CU_ERROR_ILLEGAL_STATE;
	/* HOST_AT, read at each step (the target sets it once it has made
	 * room): the copies go one after the other from there, where the
	 * kernel merges them with the target's area just below, as it may
	 * merge a real driver's host mappings with their neighbours */
	const char *at = getenv("CKPTFS_CUDA_DOUBLE_HOST_AT");
	uintptr_t next = at && *at ? (uintptr_t)strtoull(at, NULL, 0) : 0;
	for (int i = 0; i < MAX_ALLOCS; i++) {
		struct alloc *a = &allocs[i];
		if (!a->dptr)
			continue;
		a->host = mmap((void *)next, a->len, PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS | (next ? MAP_FIXED_NOREPLACE : 0), -1, 0);
		if (next)
			next += a->len;
		if (a->host == MAP_FAILED) {
			a->host = NULL;
			for (int k = 0; k < i; k++)
				if (allocs[k].host) {
					munmap(allocs[k].host, allocs[k].len);
					allocs[k].host = NULL;
				}
			return GPU_CU_ERROR_OUT_OF_MEMORY;
		}
		memcpy(a->host, a->dev, a->len);
	}
	/* the device is free: nothing of it stays mapped or on disk. Its
	 * addresses stay reserved (PROT_NONE, private anonymous), as driver
	 * 580 leaves them: such an area is not device memory in host memory */
	for (int i = 0; i < MAX_ALLOCS; i++)
		if (allocs[i].dptr) {
			munmap(allocs[i].dev, allocs[i].len);
			void *r = mmap(allocs[i].dev, allocs[i].len, PROT_NONE,
				       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED_NOREPLACE, -1, 0);
			allocs[i].resv = r == MAP_FAILED ? NULL : r;
			allocs[i].dev = NULL;
		}
	dev_path(p, sizeof(p));
	unlink(p);
	if (ctl_fd >= 0 && !keep_ctl) {
		close(ctl_fd);
		ctl_fd = -1;
	}
	state = GPU_CU_PROCESS_STATE_CHECKPOINTED;
	return 0;
}

static int do_restore(void)
{
	int fd, r;
	if (state != GPU_CU_PROCESS_STATE_CHECKPOINTED)
		return GPU_CU_ERROR_ILLEGAL_STATE;
	r = dev_open(&fd);
	if (r)
		return r;
	if (ftruncate(fd, dev_size) < 0) {
		close(fd);
		return GPU_CU_ERROR_OUT_OF_MEMORY;
	}
	for (int i = 0; i < MAX_ALLOCS && !r; i++)
		if (allocs[i].dptr)
			r = map_alloc(fd, &allocs[i]);
	close(fd);
	if (r) {
		for (int i = 0; i < MAX_ALLOCS; i++)
			if (allocs[i].dev) {
				munmap(allocs[i].dev, allocs[i].len);
				allocs[i].dev = NULL;
			}
		return r;
	}
	for (int i = 0; i < MAX_ALLOCS; i++) {
		struct alloc *a = &allocs[i];
		if (!a->dptr)
			continue;
		memcpy(a->dev, a->host, a->len);
		munmap(a->host, a->len);
		a->host = NULL;
	}
	ctl_open();
	state = GPU_CU_PROCESS_STATE_LOCKED;
	return 0;
}

static int do_unlock(void)
{
	if (state != GPU_CU_PROCESS_STATE_LOCKED)
		return GPU_CU_ERROR_ILLEGAL_STATE;
	state = GPU_CU_PROCESS_STATE_RUNNING;
	pthread_cond_broadcast(&cond);
	return 0;
}

static struct answer serve(const struct request *q)
{
	struct answer a = { 0, 0 };
	pthread_mutex_lock(&mu);
	switch (q->op) {
	case OP_GET_STATE:
		a.value = state;
		break;
	case OP_LOCK:
		a.result = do_lock(q->timeout_ms);
		break;
	case OP_CHECKPOINT:
		a.result = do_checkpoint();
		break;
	case OP_RESTORE:
		a.result = do_restore();
		break;
	case OP_UNLOCK:
		a.result = do_unlock();
		break;
	case OP_RESTORE_TID:
		a.value = driver_tid;
		break;
	default:
		a.result = GPU_CU_ERROR_INVALID_VALUE;
	}
	pthread_mutex_unlock(&mu);
	return a;
}

/* The driver thread: answers requests, one at a time, for ever. Frozen
 * and restored with the process, it goes on from its recvfrom(). */
static void *driver_main(void *arg)
{
	int fd = (int)(intptr_t)arg;
	prctl(PR_SET_NAME, "cuda-double", 0, 0, 0);
	pthread_mutex_lock(&mu);
	driver_tid = (pid_t)syscall(SYS_gettid);
	pthread_cond_broadcast(&cond);
	pthread_mutex_unlock(&mu);
	for (;;) {
		struct request q;
		struct sockaddr_un from;
		socklen_t flen = sizeof(from);
		ssize_t n = recvfrom(fd, &q, sizeof(q), 0, (struct sockaddr *)&from, &flen);
		if (n < 0 && errno == EINTR)
			continue;
		if (n != (ssize_t)sizeof(q))
			continue;
		struct answer a = serve(&q);
		while (sendto(fd, &a, sizeof(a), MSG_NOSIGNAL, (struct sockaddr *)&from, flen) < 0 && errno == EINTR)
			;
	}
	return NULL;
}

/* The process's own CUDA calls wait while it is locked or checkpointed,
 * and count as submitted work while under way. Called with mu held. */
static int call_begin(void)
{
	if (!have_ctx)
		return GPU_CU_ERROR_INVALID_VALUE;
	while (state != GPU_CU_PROCESS_STATE_RUNNING)
		pthread_cond_wait(&cond, &mu);
	calls_in_flight++;
	return 0;
}

static void call_end(void)
{
	calls_in_flight--;
	pthread_cond_broadcast(&cond);
}

static struct alloc *find(uint64_t dptr, size_t len)
{
	for (int i = 0; i < MAX_ALLOCS; i++) {
		struct alloc *a = &allocs[i];
		if (a->dptr && dptr >= a->dptr && dptr - a->dptr <= a->len && len <= a->len - (dptr - a->dptr))
			return a;
	}
	return NULL;
}

/* ---- the calling side: one request, one answer ---------------------- */

#ifndef CUDA_DOUBLE_OLD
static int ask(pid_t pid, enum op op, unsigned timeout_ms, int32_t *value)
{
	struct sockaddr_un to, me = { .sun_family = AF_UNIX };
	socklen_t tolen;
	struct request q = { op, timeout_ms };
	struct answer a;
	int r;

	pthread_once(&knobs_once, knobs_read);
	if (!inited)
		return GPU_CU_ERROR_NOT_INITIALIZED;
	r = fail_now(op, false);
	if (r)
		return r;
	int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return GPU_CU_ERROR_OPERATING_SYSTEM;
	socket_name(pid, &to, &tolen);
	/* autobind: an abstract name of our own for the answer */
	if (bind(fd, (struct sockaddr *)&me, sizeof(sa_family_t)) < 0 ||
	    connect(fd, (struct sockaddr *)&to, tolen) < 0) {
		close(fd);
		/* no CUDA in pid: what driver 580.159.04 answers */
		return GPU_CU_ERROR_NOT_INITIALIZED;
	}
	if (send(fd, &q, sizeof(q), MSG_NOSIGNAL) != (ssize_t)sizeof(q)) {
		close(fd);
		return GPU_CU_ERROR_INVALID_VALUE;
	}
	struct pollfd p = { fd, POLLIN, 0 };
	int wait = ANSWER_MS + (op == OP_LOCK ? (int)timeout_ms : 0);
	do
		r = poll(&p, 1, wait);
	while (r < 0 && errno == EINTR);
	if (r <= 0 || recv(fd, &a, sizeof(a), 0) != (ssize_t)sizeof(a)) {
		close(fd);
		return GPU_CU_ERROR_TIMEOUT;
	}
	close(fd);
	if (value)
		*value = a.value;
	if (a.result)
		return a.result;
	return fail_now(op, true);
}
#endif

/* ---- entry points ----------------------------------------------------- */

EXPORT int cuInit(unsigned int flags)
{
	pthread_once(&knobs_once, knobs_read);
	int r = fail_now(OP_INIT, false);
	if (r)
		return r;
	pthread_mutex_lock(&mu);
	inited = true;
	pthread_mutex_unlock(&mu);
	return 0;
}

EXPORT int cuGetErrorName(int error, const char **name)
{
	static const struct {
		int r;
		const char *n;
	} names[] = {
		{ GPU_CU_SUCCESS, "CUDA_SUCCESS" },
		{ GPU_CU_ERROR_INVALID_VALUE, "CUDA_ERROR_INVALID_VALUE" },
		{ GPU_CU_ERROR_OUT_OF_MEMORY, "CUDA_ERROR_OUT_OF_MEMORY" },
		{ GPU_CU_ERROR_NOT_INITIALIZED, "CUDA_ERROR_NOT_INITIALIZED" },
		{ GPU_CU_ERROR_NO_DEVICE, "CUDA_ERROR_NO_DEVICE" },
		{ GPU_CU_ERROR_OPERATING_SYSTEM, "CUDA_ERROR_OPERATING_SYSTEM" },
		{ GPU_CU_ERROR_ILLEGAL_STATE, "CUDA_ERROR_ILLEGAL_STATE" },
		{ GPU_CU_ERROR_NOT_FOUND, "CUDA_ERROR_NOT_FOUND" },
		{ GPU_CU_ERROR_NOT_READY, "CUDA_ERROR_NOT_READY" },
		{ GPU_CU_ERROR_NOT_PERMITTED, "CUDA_ERROR_NOT_PERMITTED" },
		{ GPU_CU_ERROR_NOT_SUPPORTED, "CUDA_ERROR_NOT_SUPPORTED" },
		{ GPU_CU_ERROR_TIMEOUT, "CUDA_ERROR_TIMEOUT" },
		{ GPU_CU_ERROR_UNKNOWN, "CUDA_ERROR_UNKNOWN" },
	};
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (names[i].r == error) {
			*name = names[i].n;
			return 0;
		}
	*name = NULL;
	return GPU_CU_ERROR_INVALID_VALUE;
}

EXPORT int cuDriverGetVersion(int *v)
{
	pthread_once(&knobs_once, knobs_read);
	*v = version;
	return 0;
}

EXPORT int cuDeviceGetCount(int *n)
{
	*n = inited ? 1 : 0;
	return inited ? 0 : GPU_CU_ERROR_NOT_INITIALIZED;
}

EXPORT int cuDeviceGet(int *dev, int ordinal)
{
	if (!inited)
		return GPU_CU_ERROR_NOT_INITIALIZED;
	if (ordinal != 0)
		return GPU_CU_ERROR_INVALID_VALUE;
	*dev = 0;
	return 0;
}

EXPORT int cuDeviceGetName(char *name, int len, int dev)
{
	if (dev != 0 || len <= 0)
		return GPU_CU_ERROR_INVALID_VALUE;
	snprintf(name, (size_t)len, "ckptfs CUDA driver double");
	return 0;
}

EXPORT int cuDeviceGetUuid_v2(struct gpu_cu_uuid *u, int dev)
{
	static const char id[16] = "ckptfs-double-00";
	if (dev != 0)
		return GPU_CU_ERROR_INVALID_VALUE;
	memcpy(u->bytes, id, sizeof(id));
	return 0;
}

EXPORT int cuDevicePrimaryCtxRetain(struct cuda_double_ctx **ctx, int dev)
{
	int r = 0;
	if (!inited)
		return GPU_CU_ERROR_NOT_INITIALIZED;
	if (dev != 0)
		return GPU_CU_ERROR_INVALID_VALUE;
	pthread_mutex_lock(&mu);
	if (!have_ctx) {
		struct sockaddr_un sa;
		socklen_t len;
		pthread_t t;
		sigset_t all, old;
		int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
		socket_name(getpid(), &sa, &len);
		if (fd < 0 || bind(fd, (struct sockaddr *)&sa, len) < 0) {
			r = GPU_CU_ERROR_OPERATING_SYSTEM;
			if (fd >= 0)
				close(fd);
			goto out;
		}
		/* the driver thread takes no signal meant for the process */
		sigfillset(&all);
		pthread_sigmask(SIG_SETMASK, &all, &old);
		r = pthread_create(&t, NULL, driver_main, (void *)(intptr_t)fd) ? GPU_CU_ERROR_OPERATING_SYSTEM : 0;
		pthread_sigmask(SIG_SETMASK, &old, NULL);
		if (r) {
			close(fd);
			goto out;
		}
		/* its tid, for GetRestoreThreadId: the thread says it first */
		while (!driver_tid)
			pthread_cond_wait(&cond, &mu);
		ctl_open();
		have_ctx = true;
	}
out:
	pthread_mutex_unlock(&mu);
	if (!r)
		*ctx = &ctx_one;
	return r;
}

EXPORT int cuCtxSetCurrent(struct cuda_double_ctx *ctx)
{
	return ctx == &ctx_one ? 0 : GPU_CU_ERROR_INVALID_VALUE;
}

EXPORT int cuCtxSynchronize(void)
{
	pthread_mutex_lock(&mu);
	int r = call_begin();
	if (!r)
		call_end();
	pthread_mutex_unlock(&mu);
	return r;
}

EXPORT int cuMemAlloc_v2(unsigned long long *dptr, size_t bytes)
{
	int fd = -1;
	pthread_mutex_lock(&mu);
	int r = call_begin();
	if (r)
		goto out;
	struct alloc *a = NULL;
	for (int i = 0; i < MAX_ALLOCS && !a; i++)
		if (!allocs[i].dptr)
			a = &allocs[i];
	size_t len = (bytes + 4095) & ~(size_t)4095;
	if (!a || !bytes) {
		r = a ? GPU_CU_ERROR_INVALID_VALUE : GPU_CU_ERROR_OUT_OF_MEMORY;
		goto out_call;
	}
	r = dev_open(&fd);
	if (r)
		goto out_call;
	if (ftruncate(fd, dev_size + (off_t)len) < 0) {
		r = GPU_CU_ERROR_OUT_OF_MEMORY;
		goto out_call;
	}
	a->off = dev_size;
	a->len = len;
	r = map_alloc(fd, a);
	if (r)
		goto out_call;
	dev_size += (off_t)len;
	a->dptr = next_dptr;
	next_dptr += len + (1 << 20); /* a gap, as between real allocations */
	*dptr = a->dptr;
out_call:
	if (fd >= 0)
		close(fd);
	call_end();
out:
	pthread_mutex_unlock(&mu);
	return r;
}

EXPORT int cuMemFree_v2(unsigned long long dptr)
{
	pthread_mutex_lock(&mu);
	int r = call_begin();
	if (!r) {
		struct alloc *a = find(dptr, 0);
		if (a && a->dptr == dptr) {
			munmap(a->dev, a->len);
			memset(a, 0, sizeof(*a)); /* its part of the file stays: no reuse */
		} else {
			r = GPU_CU_ERROR_INVALID_VALUE;
		}
		call_end();
	}
	pthread_mutex_unlock(&mu);
	return r;
}

EXPORT int cuMemcpyHtoD_v2(unsigned long long dst, const void *src, size_t bytes)
{
	pthread_mutex_lock(&mu);
	int r = call_begin();
	if (!r) {
		struct alloc *a = find(dst, bytes);
		if (a)
			memcpy((char *)a->dev + (dst - a->dptr), src, bytes);
		else
			r = GPU_CU_ERROR_INVALID_VALUE;
		call_end();
	}
	pthread_mutex_unlock(&mu);
	return r;
}

EXPORT int cuMemcpyDtoH_v2(void *dst, unsigned long long src, size_t bytes)
{
	pthread_mutex_lock(&mu);
	int r = call_begin();
	if (!r) {
		struct alloc *a = find(src, bytes);
		if (a)
			memcpy(dst, (char *)a->dev + (src - a->dptr), bytes);
		else
			r = GPU_CU_ERROR_INVALID_VALUE;
		call_end();
	}
	pthread_mutex_unlock(&mu);
	return r;
}

#ifndef CUDA_DOUBLE_OLD
EXPORT int cuCheckpointProcessGetState(int pid, int *st)
{
	int32_t v = 0;
	int r = ask(pid, OP_GET_STATE, 0, &v);
	if (!r)
		*st = v;
	return r;
}

EXPORT int cuCheckpointProcessLock(int pid, struct gpu_cu_lock_args *a)
{
	return ask(pid, OP_LOCK, a ? a->timeout_ms : 0, NULL);
}

EXPORT int cuCheckpointProcessCheckpoint(int pid, struct gpu_cu_checkpoint_args *a)
{
	return ask(pid, OP_CHECKPOINT, 0, NULL);
}

EXPORT int cuCheckpointProcessRestore(int pid, struct gpu_cu_restore_args *a)
{
	return ask(pid, OP_RESTORE, 0, NULL);
}

EXPORT int cuCheckpointProcessUnlock(int pid, struct gpu_cu_unlock_args *a)
{
	return ask(pid, OP_UNLOCK, 0, NULL);
}

EXPORT int cuCheckpointProcessGetRestoreThreadId(int pid, int *tid)
{
	int32_t v = 0;
	int r = ask(pid, OP_RESTORE_TID, 0, &v);
	if (!r)
		*tid = v;
	return r;
}
#endif
