/*
 * Registers: the main thread spins in a loop of our own instructions with
 * known values in r12-r15 and in every ymm register (xmm without AVX)
 * while the dump comes; another thread polls for READY.restored and then
 * raises a flag in memory. The values read back after the loop must be
 * the ones loaded before: general registers and xstate restored exactly.
 */
#include <pthread.h>

#include "target.h"

static volatile int go;
static uint8_t vin[16][32] __attribute__((aligned(32)));
static uint8_t vout[16][32] __attribute__((aligned(32)));

static void *poller(void *arg)
{
	target_wait_restored();
	go = 1;
	return NULL;
}

#define LOADY(n) "vmovdqa " #n "*32(%[in]), %%ymm" #n "\n\t"
#define STOREY(n) "vmovdqa %%ymm" #n ", " #n "*32(%[out])\n\t"
#define LOADX(n) "movdqa " #n "*32(%[in]), %%xmm" #n "\n\t"
#define STOREX(n) "movdqa %%xmm" #n ", " #n "*32(%[out])\n\t"

__attribute__((target("avx"))) static void spin_avx(uint64_t g[4])
{
	asm volatile(LOADY(0) LOADY(1) LOADY(2) LOADY(3) LOADY(4) LOADY(5) LOADY(6) LOADY(7)
		     LOADY(8) LOADY(9) LOADY(10) LOADY(11) LOADY(12) LOADY(13) LOADY(14) LOADY(15)
		     "mov $0x1212121212121212, %%r12\n\t"
		     "mov $0x1313131313131313, %%r13\n\t"
		     "mov $0x1414141414141414, %%r14\n\t"
		     "mov $0x1515151515151515, %%r15\n\t"
		     "1: pause\n\t"
		     "cmpl $0, %[go]\n\t"
		     "je 1b\n\t"
		     STOREY(0) STOREY(1) STOREY(2) STOREY(3) STOREY(4) STOREY(5) STOREY(6) STOREY(7)
		     STOREY(8) STOREY(9) STOREY(10) STOREY(11) STOREY(12) STOREY(13) STOREY(14) STOREY(15)
		     "mov %%r12, 0(%[g])\n\t"
		     "mov %%r13, 8(%[g])\n\t"
		     "mov %%r14, 16(%[g])\n\t"
		     "mov %%r15, 24(%[g])\n\t"
		     "vzeroupper\n\t"
		     :
		     : [in] "r"(vin), [out] "r"(vout), [g] "r"(g), [go] "m"(go)
		     : "memory", "r12", "r13", "r14", "r15", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4",
		       "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13",
		       "xmm14", "xmm15");
}

static void spin_sse(uint64_t g[4])
{
	asm volatile(LOADX(0) LOADX(1) LOADX(2) LOADX(3) LOADX(4) LOADX(5) LOADX(6) LOADX(7)
		     LOADX(8) LOADX(9) LOADX(10) LOADX(11) LOADX(12) LOADX(13) LOADX(14) LOADX(15)
		     "mov $0x1212121212121212, %%r12\n\t"
		     "mov $0x1313131313131313, %%r13\n\t"
		     "mov $0x1414141414141414, %%r14\n\t"
		     "mov $0x1515151515151515, %%r15\n\t"
		     "1: pause\n\t"
		     "cmpl $0, %[go]\n\t"
		     "je 1b\n\t"
		     STOREX(0) STOREX(1) STOREX(2) STOREX(3) STOREX(4) STOREX(5) STOREX(6) STOREX(7)
		     STOREX(8) STOREX(9) STOREX(10) STOREX(11) STOREX(12) STOREX(13) STOREX(14) STOREX(15)
		     "mov %%r12, 0(%[g])\n\t"
		     "mov %%r13, 8(%[g])\n\t"
		     "mov %%r14, 16(%[g])\n\t"
		     "mov %%r15, 24(%[g])\n\t"
		     :
		     : [in] "r"(vin), [out] "r"(vout), [g] "r"(g), [go] "m"(go)
		     : "memory", "r12", "r13", "r14", "r15", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4",
		       "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13",
		       "xmm14", "xmm15");
}

int main(int argc, char **argv)
{
	target_init(argc, argv, 0);
	bool avx = __builtin_cpu_supports("avx");
	int width = avx ? 32 : 16;
	for (int r = 0; r < 16; r++)
		for (int b = 0; b < 32; b++)
			vin[r][b] = (uint8_t)(r * 17 + b * 3 + 1);
	pthread_t t;
	pthread_create(&t, NULL, poller, NULL);
	uint64_t g[4] = { 0 };
	target_ready();
	if (avx)
		spin_avx(g);
	else
		spin_sse(g);
	pthread_join(t, NULL);
	for (int r = 0; r < 16; r++)
		if (memcmp(vin[r], vout[r], width))
			target_verdict(0, "%s%d changed", avx ? "ymm" : "xmm", r);
	if (g[0] != 0x1212121212121212ull || g[1] != 0x1313131313131313ull ||
	    g[2] != 0x1414141414141414ull || g[3] != 0x1515151515151515ull)
		target_verdict(0, "r12-r15 changed");
	target_pass();
}
