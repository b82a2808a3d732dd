/*
 * What target-cuda writes into its device memory, and what a test looks
 * for in a snapshot's gpu/hbm: a header line naming the size, then 64-bit
 * words that differ at every offset.
 */
#ifndef CKPTFS_CUDA_DOUBLE_PATTERN_H
#define CKPTFS_CUDA_DOUBLE_PATTERN_H

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define CUDA_DOUBLE_PATTERN_HEAD "cuda-double device memory, MiB "

static inline void cuda_double_pattern(uint8_t *buf, size_t len, size_t mib)
{
	for (size_t i = 0; i + 8 <= len; i += 8) {
		uint64_t w = (i / 8) * 0x9e3779b97f4a7c15ull ^ mib;
		memcpy(buf + i, &w, 8);
	}
	char head[64];
	int n = snprintf(head, sizeof(head), CUDA_DOUBLE_PATTERN_HEAD "%zu\n", mib);
	if (len >= (size_t)n)
		memcpy(buf, head, (size_t)n);
}

#endif
