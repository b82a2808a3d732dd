/*
 * The mixed content that the freeze benchmark's target (tools/bench-freeze.c)
 * and the pre-copy test target (tests/targets/precopy.c) fill their memory
 * with, the same in both so that a figure and a test speak of the same
 * memory: a quarter zero pages, a quarter pseudo-random words, a quarter
 * repeated text, a quarter counters. Header only: the targets are built
 * without the project's libraries.
 */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define MIXED_PAGE 4096ul

/* A 64-bit mixing function (the finalizer of MurmurHash3). */
static inline uint64_t mix64(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdull;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ull;
	x ^= x >> 33;
	return x;
}

/* Writes into w the content page p of a pages-page region starts with. */
static inline void mixed_page(uint64_t *w, size_t p, size_t pages)
{
	static const char text[] = "the quick brown fox jumps over the lazy dog. ";
	size_t q = pages / 4;
	if (p < q) {
		memset(w, 0, MIXED_PAGE);
	} else if (p < 2 * q) {
		uint64_t s = mix64(p + 1);
		for (size_t i = 0; i < MIXED_PAGE / 8; i++)
			w[i] = s = mix64(s);
	} else if (p < 3 * q) {
		for (size_t i = 0; i < MIXED_PAGE; i++)
			((char *)w)[i] = text[(p * MIXED_PAGE + i) % (sizeof(text) - 1)];
	} else {
		for (size_t i = 0; i < MIXED_PAGE / 8; i++)
			w[i] = p * 512 + i;
	}
}
