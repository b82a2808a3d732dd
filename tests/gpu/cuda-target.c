/*
 * A CUDA process to checkpoint: fills device memory with a pattern, says
 * "ready" on stdout, waits for a line on stdin, copies the memory back and
 * says "PASS" if every byte survived, else "FAIL: why". It talks to the
 * driver through dlopen like ckptfs does, so it builds without the CUDA
 * toolkit's libraries. argv[1]: MiB of device memory (default 64).
 */
#include <cuda.h>
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SYM(h, name) dlsym(h, name)

int main(int argc, char **argv)
{
	size_t mib = argc > 1 ? strtoul(argv[1], NULL, 10) : 64, len = mib << 20;
	void *h = dlopen("libcuda.so.1", RTLD_NOW);
	if (!h) {
		printf("SKIP: no libcuda.so.1\n");
		return 77;
	}
	CUresult (*init)(unsigned) = SYM(h, "cuInit");
	CUresult (*dev_get)(CUdevice *, int) = SYM(h, "cuDeviceGet");
	CUresult (*retain)(CUcontext *, CUdevice) = SYM(h, "cuDevicePrimaryCtxRetain");
	CUresult (*set_cur)(CUcontext) = SYM(h, "cuCtxSetCurrent");
	CUresult (*alloc)(CUdeviceptr *, size_t) = SYM(h, "cuMemAlloc_v2");
	CUresult (*htod)(CUdeviceptr, const void *, size_t) = SYM(h, "cuMemcpyHtoD_v2");
	CUresult (*dtoh)(void *, CUdeviceptr, size_t) = SYM(h, "cuMemcpyDtoH_v2");
	CUdevice dev;
	CUcontext ctx;
	CUdeviceptr d;
	uint64_t *buf = malloc(len), *back = malloc(len);
	char line[64];

	if (!init || !dev_get || !retain || !set_cur || !alloc || !htod || !dtoh || !buf || !back) {
		printf("FAIL: driver symbols or memory missing\n");
		return 1;
	}
	if (init(0) || dev_get(&dev, 0) || retain(&ctx, dev) || set_cur(ctx) || alloc(&d, len)) {
		printf("SKIP: no usable GPU\n");
		return 77;
	}
	for (size_t i = 0; i < len / 8; i++)
		buf[i] = i * 0x9e3779b97f4a7c15ull ^ mib;
	if (htod(d, buf, len)) {
		printf("FAIL: cuMemcpyHtoD\n");
		return 1;
	}
	printf("ready\n");
	fflush(stdout);
	if (!fgets(line, sizeof(line), stdin))
		return 1;
	if (dtoh(back, d, len)) {
		printf("FAIL: cuMemcpyDtoH after restore\n");
		return 1;
	}
	if (memcmp(buf, back, len)) {
		printf("FAIL: device memory differs after restore\n");
		return 1;
	}
	printf("PASS\n");
	return 0;
}
