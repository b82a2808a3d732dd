/*
 * Keeps writing while it is dumped (pre-copy), and checks after restore
 * that every byte it wrote before the freeze is there.
 *
 * TARGET READY RESULT MIB RATE: MIB MiB of mixed content (a quarter never
 * touched, a quarter pseudo-random, a quarter text, a quarter counters),
 * into which it writes RATE pages every millisecond (`fast`: as fast as
 * it can, a process that writes faster than any copy), each write
 * stamping a page picked pseudo-randomly with its sequence number (RATE
 * ending in `z`, as `20z`: every 64th write instead drops pages with
 * MADV_DONTNEED, a page, or every fourth time a whole 2 MiB aligned piece,
 * the memory given huge pages where the kernel has them; a dropped page
 * must come back as zeros, not as the copy taken before). After
 * restore it stops, replays the sequence up to the number it had reached
 * (in its restored memory) and compares every byte of every page with
 * what it must hold: the initial content with the last stamp written to
 * it. A page written before the freeze but saved from an older copy
 * fails. The pages of the write after the last one counted may or may
 * not hold it (the freeze may fall between a write and its count): they
 * are not compared.
 *
 * TARGET READY RESULT MIB RATE GIB: with, besides, a reservation of GIB
 * GiB (MAP_NORESERVE, like AddressSanitizer's shadow) of which it writes
 * one page in each GiB, checked after restore too.
 *
 * Creating READY.remap (removed by it once done) changes its areas the way
 * a program does between two checkpoints: the middle MiB of its memory
 * unmapped and mapped again in place with the same bytes, and a new
 * 2 MiB area of a known pattern, checked after restore too.
 *
 * It also watches its own clock, once a millisecond: while READY.gap is
 * absent it keeps the largest gap between two looks; creating
 * READY.reset (removed by it) starts a new measure, and READY.report
 * makes it write the largest gap (microseconds) since into READY.gap
 * (`ckpt bench freeze` reads the downtime it saw there).
 */
#include <sys/mman.h>

#include "common/mixed.h"
#include "target.h"

#define PAGE 4096ul

static uint64_t now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000ull + ts.tv_nsec / 1000;
}

static char reset_path[4096], report_path[4096], gap_path[4096], remap_path[4096];

#define EXTRA (2ul << 20)

/* The middle MiB of m (pages long) mapped again in place, same bytes, and
 * a new area of EXTRA bytes: its address. */
static uint8_t *remap(uint8_t *m, size_t pages)
{
	size_t len = 1ul << 20, off = (pages * PAGE / 2) & ~(len - 1);
	uint8_t *keep = malloc(len);
	if (!keep || off + len > pages * PAGE)
		target_verdict(0, "remap: no memory, or too small");
	memcpy(keep, m + off, len);
	if (munmap(m + off, len) < 0 ||
	    mmap(m + off, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0) != m + off)
		target_verdict(0, "remap: %m");
	memcpy(m + off, keep, len);
	free(keep);
	uint8_t *x = mmap(NULL, EXTRA, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (x == MAP_FAILED)
		target_verdict(0, "remap: %m");
	for (size_t i = 0; i < EXTRA; i++)
		x[i] = (uint8_t)(i * 7 + i / PAGE);
	return x;
}

#define DROP_EVERY 64
#define HUGE (2ul << 20)

/* The pages op k drops, when it is a drop: [*first, *first + *n) */
static bool drop_range(uint8_t *m, size_t pages, uint64_t k, size_t *first, size_t *n)
{
	if (k % DROP_EVERY)
		return false;
	uintptr_t base = ((uintptr_t)m + HUGE - 1) & ~(HUGE - 1), end = (uintptr_t)m + pages * PAGE;
	size_t pieces = end > base ? (end - base) / HUGE : 0;
	if (k / DROP_EVERY % 4 == 0 && pieces) {
		*first = (base - (uintptr_t)m) / PAGE + mix64(k) % pieces * (HUGE / PAGE);
		*n = HUGE / PAGE;
	} else {
		*first = mix64(k) % pages;
		*n = 1;
	}
	return true;
}

int main(int argc, char **argv)
{
	target_init(argc, argv, 2);
	size_t pages = (strtoull(argv[3], NULL, 10) << 20) / PAGE;
	bool fast = !strcmp(argv[4], "fast");
	char *unit = NULL;
	uint64_t rate = fast ? 0 : strtoull(argv[4], &unit, 10);
	bool drops = unit && *unit == 'z';
	snprintf(reset_path, sizeof(reset_path), "%s.reset", argv[1]);
	snprintf(report_path, sizeof(report_path), "%s.report", argv[1]);
	snprintf(gap_path, sizeof(gap_path), "%s.gap", argv[1]);
	snprintf(remap_path, sizeof(remap_path), "%s.remap", argv[1]);
	uint8_t *extra = NULL;
	uint8_t *m = mmap(NULL, pages * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (m == MAP_FAILED)
		target_verdict(0, "no memory");
	if (drops)
		madvise(m, pages * PAGE, MADV_HUGEPAGE);
	size_t gib = argc > 5 ? strtoull(argv[5], NULL, 10) : 0;
	uint8_t *res = NULL;
	if (gib) {
		res = mmap(NULL, gib << 30, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		if (res == MAP_FAILED)
			target_verdict(0, "cannot reserve %zu GiB", gib);
		for (size_t g = 0; g < gib; g++)
			memset(res + (g << 30), (int)(g % 255) + 1, PAGE);
	}
	for (size_t p = pages / 4; p < pages; p++)
		mixed_page((uint64_t *)(m + p * PAGE), p, pages);
	/* volatile: the restored process reads what the dump saved */
	volatile uint64_t seq = 0;
	uint64_t last = now_us(), gap = 0;
	target_ready();
	while (!target_restored()) {
		uint64_t n = fast ? 65536 : rate;
		for (uint64_t i = 0; i < n; i++) {
			uint64_t k = seq + 1;
			size_t first, n;
			if (drops && drop_range(m, pages, k, &first, &n)) {
				if (madvise(m + first * PAGE, n * PAGE, MADV_DONTNEED) < 0)
					target_verdict(0, "MADV_DONTNEED: %m");
				seq = k;
				continue;
			}
			size_t p = mix64(k) % pages;
			uint64_t *w = (uint64_t *)(m + p * PAGE);
			w[0] = k;
			w[1] = k ^ p;
			seq = k;
		}
		uint64_t t = now_us();
		if (t - last > gap)
			gap = t - last;
		last = t;
		if (access(reset_path, F_OK) == 0) {
			unlink(reset_path);
			gap = 0;
		}
		if (!extra && access(remap_path, F_OK) == 0) {
			extra = remap(m, pages);
			unlink(remap_path);
		}
		if (access(report_path, F_OK) == 0) {
			char g[32];
			snprintf(g, sizeof(g), "%llu\n", (unsigned long long)gap);
			unlink(report_path);
			target_write_file(gap_path, g);
		}
		if (!fast) {
			struct timespec ts = { 0, 1000000 };
			nanosleep(&ts, NULL);
		}
	}
	/* the last stamp of every page, replayed, and whether it was dropped
	 * before (zeros under the stamp) */
	const uint64_t UNSURE = UINT64_MAX;
	uint64_t *stamp = calloc(pages, sizeof(*stamp));
	uint8_t *dropped = calloc(pages, 1);
	uint64_t *want = malloc(PAGE);
	if (!stamp || !dropped || !want)
		target_verdict(0, "no memory");
	for (uint64_t k = 1; k <= seq + 1; k++) {
		size_t first, n;
		if (drops && drop_range(m, pages, k, &first, &n)) {
			for (size_t i = 0; i < n; i++) {
				stamp[first + i] = k > seq ? UNSURE : 0;
				dropped[first + i] = 1;
			}
		} else {
			stamp[mix64(k) % pages] = k > seq ? UNSURE : k;
		}
	}
	for (size_t p = 0; p < pages; p++) {
		if (stamp[p] == UNSURE)
			continue;
		mixed_page(want, p, pages);
		if (dropped[p])
			memset(want, 0, PAGE);
		if (stamp[p]) {
			want[0] = stamp[p];
			want[1] = stamp[p] ^ p;
		}
		if (memcmp(want, m + p * PAGE, PAGE))
			target_verdict(0, "page %zu of %zu: not what was written (stamp %llu, found %llu, %llu writes)",
				       p, pages, (unsigned long long)stamp[p],
				       (unsigned long long)((uint64_t *)(m + p * PAGE))[0], (unsigned long long)seq);
	}
	for (size_t i = 0; extra && i < EXTRA; i++)
		if (extra[i] != (uint8_t)(i * 7 + i / PAGE))
			target_verdict(0, "the area mapped later: byte %zu is %d", i, extra[i]);
	for (size_t g = 0; g < gib; g++)
		for (size_t i = 0; i < 2 * PAGE; i++)
			if (res[(g << 30) + i] != (i < PAGE ? (int)(g % 255) + 1 : 0))
				target_verdict(0, "reservation: GiB %zu, byte %zu is %d", g, i, res[(g << 30) + i]);
	target_pass();
}
