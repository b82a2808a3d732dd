/*
 * A CUDA process to checkpoint, built against the test double of the
 * driver (cuda-double.h): it plays the part of tests/gpu's cuda-target
 * where there is no GPU. Command line: READY RESULT [MIB [merge|nocuda]]
 * (target.h). It allocates MIB MiB of "device memory" (default 8) and a
 * small second allocation, writes a pattern into the first
 * (cuda_double_pattern: a test finds it again in gpu/hbm), says ready,
 * and keeps working on the second (a counter copied in and out, its CUDA
 * calls waiting while the process is locked or checkpointed) until
 * READY.restored appears; then it reads the first back and checks every
 * byte, works on, and says PASS.
 * With "nocuda" it calls no CUDA at all (a process of a GPU host that
 * does not use the GPU): the pattern stays in host memory, checked after.
 * With "merge" it also maps an area of its own, with a pattern, leaving
 * room just above it where the double's checkpoint step maps the host
 * copies (CKPTFS_CUDA_DOUBLE_HOST_AT): the kernel merges them into one
 * area, which a dump must split again; it checks that area too.
 */
#include <sys/mman.h>

#include "tests/cuda-double/cuda-double.h"
#include "tests/cuda-double/pattern.h"
#include "tests/targets/target.h"

static void check(int r, const char *what)
{
	if (r) {
		const char *n = NULL;
		cuGetErrorName(r, &n);
		target_verdict(0, "%s: %s (%d)", what, n ? n : "?", r);
	}
}

/* One round of work: the counter to the device and back. */
static void work(unsigned long long scratch, uint64_t *count)
{
	uint64_t back = 0;
	(*count)++;
	check(cuMemcpyHtoD_v2(scratch, count, sizeof(*count)), "cuMemcpyHtoD (work)");
	check(cuMemcpyDtoH_v2(&back, scratch, sizeof(back)), "cuMemcpyDtoH (work)");
	if (back != *count)
		target_verdict(0, "work: wrote %llu, read back %llu", (unsigned long long)*count,
			       (unsigned long long)back);
}

#define NEIGHBOUR (64u << 10)

static uint8_t neighbour_byte(size_t i)
{
	return (uint8_t)(i * 7 ^ i >> 12 ^ 0x5a);
}

/* Our area just below room bytes left free for the double's host copies
 * (CKPTFS_CUDA_DOUBLE_HOST_AT points there). */
static uint8_t *make_room(size_t room)
{
	char at[32];
	uint8_t *p = mmap(NULL, NEIGHBOUR + room, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED || munmap(p + NEIGHBOUR, room) < 0)
		target_verdict(0, "no room for the host copies: %s", strerror(errno));
	for (size_t i = 0; i < NEIGHBOUR; i++)
		p[i] = neighbour_byte(i);
	snprintf(at, sizeof(at), "%p", (void *)(p + NEIGHBOUR));
	setenv("CKPTFS_CUDA_DOUBLE_HOST_AT", at, 1);
	return p;
}

int main(int argc, char **argv)
{
	target_init(argc, argv, 0);
	size_t mib = argc > 3 ? strtoul(argv[3], NULL, 10) : 8, len = mib << 20;
	struct cuda_double_ctx *ctx;
	unsigned long long big, scratch;
	int dev;
	uint64_t count = 0;
	uint8_t *buf = malloc(len), *back = malloc(len), *nb = NULL;
	bool merge = argc > 4 && !strcmp(argv[4], "merge");

	if (!buf || !back)
		target_verdict(0, "no memory for %zu MiB", mib);
	if (argc > 4 && !strcmp(argv[4], "nocuda")) {
		/* the driver loaded, never called: the pattern in host memory */
		cuda_double_pattern(buf, len, mib);
		target_ready();
		target_wait_restored();
		cuda_double_pattern(back, len, mib);
		if (memcmp(buf, back, len))
			target_verdict(0, "host memory differs");
		target_pass();
	}
	check(cuInit(0), "cuInit");
	check(cuDeviceGet(&dev, 0), "cuDeviceGet");
	check(cuDevicePrimaryCtxRetain(&ctx, dev), "cuDevicePrimaryCtxRetain");
	check(cuCtxSetCurrent(ctx), "cuCtxSetCurrent");
	check(cuMemAlloc_v2(&big, len), "cuMemAlloc");
	check(cuMemAlloc_v2(&scratch, 4096), "cuMemAlloc (scratch)");
	cuda_double_pattern(buf, len, mib);
	check(cuMemcpyHtoD_v2(big, buf, len), "cuMemcpyHtoD");
	memset(buf, 0, len); /* the device holds the only copy */
	work(scratch, &count);
	/* last before ready: nothing of ours is mapped into the room after */
	if (merge)
		nb = make_room(len + 4096);
	target_ready();
	while (!target_restored()) {
		struct timespec ts = { 0, 2000000 };
		work(scratch, &count);
		nanosleep(&ts, NULL);
	}
	check(cuMemcpyDtoH_v2(back, big, len), "cuMemcpyDtoH after the restore");
	cuda_double_pattern(buf, len, mib);
	for (size_t i = 0; i < len; i++)
		if (buf[i] != back[i])
			target_verdict(0, "device memory differs at byte %zu of %zu", i, len);
	for (size_t i = 0; nb && i < NEIGHBOUR; i++)
		if (nb[i] != neighbour_byte(i))
			target_verdict(0, "the area below the host copies differs at byte %zu", i);
	for (int i = 0; i < 100; i++)
		work(scratch, &count);
	check(cuCtxSynchronize(), "cuCtxSynchronize");
	target_pass();
}
