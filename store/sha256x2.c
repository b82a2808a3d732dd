/*
 * SHA-256 of two equal-length buffers at once, with the x86 SHA
 * extensions. One SHA-256 stream is bound by the latency of sha256rnds2
 * (each round pair depends on the previous one); two independent streams
 * interleaved keep the unit busy, which is what ingest needs: it hashes
 * every 16 KiB block of data, and hashing is its largest cost.
 *
 * The result is plain SHA-256 (FIPS 180-4); tests compare it with
 * libcrypto's on every length up to a block. Machines without the
 * extensions (or not x86-64) fall back to hash_leaf() twice.
 */
#include "store/chunk-int.h"

#if defined(__x86_64__)
#include <cpuid.h>
#include <immintrin.h>

static const uint32_t K[64] = {
	0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
	0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
	0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
	0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
	0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
	0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
	0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
	0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

static const uint32_t H0[8] = {
	0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
};

#define TGT __attribute__((target("sha,sse4.1,ssse3")))

/* The SHA instructions keep the state as two vectors: s0 = (a,b,e,f) and
 * s1 = (c,d,g,h), highest lane first. */
struct lane {
	__m128i s0, s1;
};

TGT static inline void lane_init(struct lane *l)
{
	__m128i abcd = _mm_loadu_si128((const __m128i *)&H0[0]);
	__m128i efgh = _mm_loadu_si128((const __m128i *)&H0[4]);
	__m128i badc = _mm_shuffle_epi32(abcd, 0xb1);
	__m128i hgfe = _mm_shuffle_epi32(efgh, 0x1b);
	l->s0 = _mm_alignr_epi8(badc, hgfe, 8);
	l->s1 = _mm_blend_epi16(hgfe, badc, 0xf0);
}

TGT static inline void lane_out(const struct lane *l, uint8_t out[32])
{
	const __m128i bswap = _mm_set_epi8(12, 13, 14, 15, 8, 9, 10, 11, 4, 5, 6, 7, 0, 1, 2, 3);
	__m128i abef = _mm_shuffle_epi32(l->s0, 0x1b);
	__m128i ghcd = _mm_shuffle_epi32(l->s1, 0xb1);
	__m128i abcd = _mm_blend_epi16(abef, ghcd, 0xf0);
	__m128i efgh = _mm_alignr_epi8(ghcd, abef, 8);
	_mm_storeu_si128((__m128i *)out, _mm_shuffle_epi8(abcd, bswap));
	_mm_storeu_si128((__m128i *)(out + 16), _mm_shuffle_epi8(efgh, bswap));
}

/* Four rounds of both lanes with message words m (K already added). */
#define ROUNDS4(ma, mb)                                                    \
	do {                                                               \
		a.s1 = _mm_sha256rnds2_epu32(a.s1, a.s0, ma);              \
		b.s1 = _mm_sha256rnds2_epu32(b.s1, b.s0, mb);              \
		a.s0 = _mm_sha256rnds2_epu32(a.s0, a.s1, _mm_shuffle_epi32(ma, 0x0e)); \
		b.s0 = _mm_sha256rnds2_epu32(b.s0, b.s1, _mm_shuffle_epi32(mb, 0x0e)); \
	} while (0)

/* Compresses n 64-byte blocks of each lane. */
TGT static void blocks2(struct lane *pa, struct lane *pb, const uint8_t *da, const uint8_t *db, size_t n)
{
	const __m128i bswap = _mm_set_epi8(12, 13, 14, 15, 8, 9, 10, 11, 4, 5, 6, 7, 0, 1, 2, 3);
	struct lane a = *pa, b = *pb;

	for (; n; n--, da += 64, db += 64) {
		struct lane sa = a, sb = b;
		__m128i wa[4], wb[4];

		for (int i = 0; i < 4; i++) {
			wa[i] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(da + 16 * i)), bswap);
			wb[i] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(db + 16 * i)), bswap);
		}
		/* Groups of four rounds; from group 4 on, the schedule:
		 * W[t..t+3] = msg2(msg1(W[t-16..], W[t-12..]) + W[t-7..t-4], W[t-4..]). */
#pragma GCC unroll 16
		for (int g = 0; g < 16; g++) {
			__m128i k = _mm_loadu_si128((const __m128i *)&K[4 * g]);
			if (g >= 4) {
				__m128i *xa = &wa[g & 3], *xb = &wb[g & 3];
				__m128i a1 = wa[(g - 1) & 3], a2 = wa[(g - 2) & 3], a3 = wa[(g - 3) & 3];
				__m128i b1 = wb[(g - 1) & 3], b2 = wb[(g - 2) & 3], b3 = wb[(g - 3) & 3];
				__m128i ta = _mm_add_epi32(_mm_sha256msg1_epu32(*xa, a3), _mm_alignr_epi8(a1, a2, 4));
				__m128i tb = _mm_add_epi32(_mm_sha256msg1_epu32(*xb, b3), _mm_alignr_epi8(b1, b2, 4));
				*xa = _mm_sha256msg2_epu32(ta, a1);
				*xb = _mm_sha256msg2_epu32(tb, b1);
			}
			__m128i ma = _mm_add_epi32(wa[g & 3], k), mb = _mm_add_epi32(wb[g & 3], k);
			ROUNDS4(ma, mb);
		}
		a.s0 = _mm_add_epi32(a.s0, sa.s0);
		a.s1 = _mm_add_epi32(a.s1, sa.s1);
		b.s0 = _mm_add_epi32(b.s0, sb.s0);
		b.s1 = _mm_add_epi32(b.s1, sb.s1);
	}
	*pa = a;
	*pb = b;
}

/* The padded end of a message of len bytes whose last len % 64 bytes are
 * at tail: one or two blocks into buf; returns how many. */
static size_t pad(const uint8_t *tail, size_t len, uint8_t buf[128])
{
	size_t r = len % 64, n = r < 56 ? 1 : 2;
	uint64_t bits = (uint64_t)len * 8;

	memset(buf, 0, 128);
	memcpy(buf, tail, r);
	buf[r] = 0x80;
	for (int i = 0; i < 8; i++)
		buf[n * 64 - 1 - i] = (uint8_t)(bits >> (8 * i));
	return n;
}

TGT static void sha256x2_ni(const uint8_t *a, const uint8_t *b, size_t len, uint8_t oa[32], uint8_t ob[32])
{
	struct lane la, lb;
	uint8_t ta[128], tb[128];
	size_t full = len / 64, n;

	lane_init(&la);
	lane_init(&lb);
	blocks2(&la, &lb, a, b, full);
	n = pad(a + full * 64, len, ta);
	pad(b + full * 64, len, tb);
	blocks2(&la, &lb, ta, tb, n);
	lane_out(&la, oa);
	lane_out(&lb, ob);
}

static bool cpu_has_sha(void)
{
	unsigned a, b, c, d;
	if (!__get_cpuid_count(7, 0, &a, &b, &c, &d) || !(b & (1u << 29)))
		return false;
	if (!__get_cpuid(1, &a, &b, &c, &d))
		return false;
	return (c & bit_SSE4_1) && (c & bit_SSSE3);
}

static bool have_ni;
static pthread_once_t ni_once = PTHREAD_ONCE_INIT;

static void ni_init(void)
{
	have_ni = cpu_has_sha() && !getenv("CKPTFS_NO_SHA_NI");
}
#endif

void chunk_hash2(const uint8_t *a, const uint8_t *b, size_t len, uint8_t oa[STORE_HASH_LEN],
		 uint8_t ob[STORE_HASH_LEN])
{
#if defined(__x86_64__)
	pthread_once(&ni_once, ni_init);
	if (have_ni) {
		sha256x2_ni(a, b, len, oa, ob);
		return;
	}
#endif
	hash_leaf(a, len, oa);
	hash_leaf(b, len, ob);
}
