/*
 * Computes over SIZE MiB of mixed memory (argument 3): a quarter zeros,
 * a quarter pseudo-random, a quarter repeated text, a quarter a counter
 * pattern. It keeps swapping random words (the sum of all words stays the
 * same) while it waits; after restore the sum must still match. With a
 * fourth argument `random`, the sum after restore visits the pages in a
 * random order (a lazy restore's faults then race its fill in address
 * order). With `events`, it first does to its memory what a process may
 * do while a lazy restore still loads it: a child forked sums it too and
 * tells the sum of the first quarter, which the parent dropped meanwhile
 * (madvise DONTNEED: zeros from then on), and the whole buffer is moved
 * elsewhere (mremap) before the sum; it swaps no words while it waits.
 * With `tree`, a child forked before the checkpoint changes every
 * seventh word of its copy and checks its own sum after restore (a tree
 * restored lazily: each process's memory loads on its own); the parent
 * waits for its verdict.
 */
#include <sys/mman.h>
#include <sys/wait.h>

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
	pid_t kid = -1;
	if (argc > 4 && !strcmp(argv[4], "tree")) {
		kid = fork();
		if (kid < 0)
			target_verdict(0, "fork: %s", strerror(errno));
		if (kid == 0) {
			for (size_t i = 0; i < n; i += 7)
				w[i] ^= 0x5a5a5a5a5a5a5a5aull;
			uint64_t c0 = sum(w, n);
			while (!target_restored()) {
				struct timespec ts = { 0, 1000000 };
				nanosleep(&ts, NULL);
			}
			_exit(sum(w, n) == c0 ? 0 : 1);
		}
	}
	target_ready();
	/* events: no swaps, so that a lazy restore is still loading when
	 * the events come */
	bool events = argc > 4 && !strcmp(argv[4], "events");
	while (!target_restored()) {
		for (int k = 0; k < 10000 && !events; k++) {
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
	} else if (events) {
		/* malloc's large blocks are mappings of their own, a header
		 * before w: page-aligned from there */
		uintptr_t base = (uintptr_t)w & ~4095ul, len = ((uintptr_t)(w + n) - base + 4095) & ~4095ul;
		uintptr_t z = ((uintptr_t)w + 4095) & ~4095ul, zend = (uintptr_t)(w + q) & ~4095ul;
		uint64_t *zw = (uint64_t *)z, dropped = 0;
		size_t zn = (zend - z) / 8;
		int p[2];
		if (pipe(p) < 0)
			target_verdict(0, "pipe: %s", strerror(errno));
		pid_t c = fork();
		if (c == 0) {
			uint64_t part = sum(zw, zn);
			if (write(p[1], &part, sizeof(part)) != sizeof(part))
				_exit(2);
			_exit(sum(w, n) == s0 ? 0 : 1);
		}
		if (madvise(zw, zend - z, MADV_DONTNEED) < 0)
			target_verdict(0, "madvise: %s", strerror(errno));
		void *to = mmap(NULL, len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (to == MAP_FAILED)
			target_verdict(0, "mmap: %s", strerror(errno));
		void *moved = mremap((void *)base, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, to);
		if (moved != to)
			target_verdict(0, "mremap: %s", strerror(errno));
		w = (uint64_t *)((uintptr_t)moved + ((uintptr_t)w - base));
		s1 = sum(w, n);
		int st;
		if (read(p[0], &dropped, sizeof(dropped)) != sizeof(dropped) || waitpid(c, &st, 0) != c ||
		    !WIFEXITED(st) || WEXITSTATUS(st))
			target_verdict(0, "the child forked after restore found another sum (0x%x)", st);
		/* the dropped range reads zero, which sums to 0 */
		s1 += dropped;
	} else {
		s1 = sum(w, n);
	}
	if (s1 != s0)
		target_verdict(0, "memory sum changed");
	int st;
	if (kid > 0 && (waitpid(kid, &st, 0) != kid || !WIFEXITED(st) || WEXITSTATUS(st)))
		target_verdict(0, "the child found another sum after restore (0x%x)", st);
	target_pass();
}
