/*
 * Computes over SIZE MiB of mixed memory (argument 3): a quarter zeros,
 * a quarter pseudo-random, a quarter repeated text, a quarter a counter
 * pattern. It keeps swapping random words (the sum of all words stays the
 * same) while it waits; after restore the sum must still match. With a
 * fourth argument `random`, the sum after restore visits the pages in a
 * random order (a lazy restore's faults then race its fill in address
 * order).
 */
#include "target.h"

static uint64_t rng = 88172645463325252ull;
static uint64_t next(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

static uint64_t sum(const uint64_t *w, size_t n)
{
	uint64_t s = 0;
	for (size_t i = 0; i < n; i++)
		s += w[i] * 2654435761u + (w[i] >> 32);
	return s;
}

int main(int argc, char **argv)
{
	target_init(argc, argv, 1);
	size_t bytes = strtoull(argv[3], NULL, 10) << 20;
	size_t n = bytes / 8, q = n / 4;
	uint64_t *w = malloc(bytes);
	if (!w)
		target_verdict(0, "no memory");
	memset(w, 0, q * 8);
	for (size_t i = q; i < 2 * q; i++)
		w[i] = next();
	static const char text[] = "the quick brown fox jumps over the lazy dog. ";
	for (size_t i = 0; i < q * 8; i++)
		((char *)(w + 2 * q))[i] = text[i % (sizeof(text) - 1)];
	for (size_t i = 3 * q; i < n; i++)
		w[i] = i / 512;
	uint64_t s0 = sum(w, n);
	target_ready();
	while (!target_restored()) {
		for (int k = 0; k < 10000; k++) {
			size_t a = next() % n, b = next() % n;
			uint64_t t = w[a];
			w[a] = w[b];
			w[b] = t;
		}
		struct timespec ts = { 0, 1000000 };
		nanosleep(&ts, NULL);
	}
	uint64_t s1 = 0;
	if (argc > 4 && !strcmp(argv[4], "random")) {
		/* the same sum, a page at a time in a random order */
		size_t pages = n / 512;
		uint32_t *order = malloc(pages * sizeof(*order));
		if (!order)
			target_verdict(0, "no memory");
		for (size_t i = 0; i < pages; i++)
			order[i] = (uint32_t)i;
		for (size_t i = pages; i > 1; i--) {
			size_t j = next() % i;
			uint32_t t = order[i - 1];
			order[i - 1] = order[j];
			order[j] = t;
		}
		for (size_t i = 0; i < pages; i++)
			s1 += sum(w + (size_t)order[i] * 512, 512);
		s1 += sum(w + pages * 512, n - pages * 512);
		free(order);
	} else {
		s1 = sum(w, n);
	}
	if (s1 != s0)
		target_verdict(0, "memory sum changed");
	target_pass();
}
