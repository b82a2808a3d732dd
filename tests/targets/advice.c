/*
 * Per-area advice and locks (smaps VmFlags): one private anonymous area
 * per madvise() flag that shows there (hugepage, nohugepage, dontdump,
 * dontfork, wipeonfork, mergeable where KSM is built, sequential, random),
 * one mlock()ed and one mlock2(MLOCK_ONFAULT)ed, each with a pattern.
 * After restore each area checks its own VmFlags for its word (and that
 * the area next to it did not get it), its pattern, and the process that
 * its locked areas are counted in VmLck again.
 */
#include <sys/mman.h>

#include "target.h"

#define PAGES 4
#define PAGE 4096

struct area {
	const char *flag; /* smaps VmFlags word */
	int madv;         /* -1: mlock, -2: mlock2(MLOCK_ONFAULT) */
	char *p;
};

static struct area areas[] = {
	{ "hg", MADV_HUGEPAGE, 0 },   { "nh", MADV_NOHUGEPAGE, 0 }, { "dd", MADV_DONTDUMP, 0 },
	{ "dc", MADV_DONTFORK, 0 },   { "wf", MADV_WIPEONFORK, 0 }, { "mg", MADV_MERGEABLE, 0 },
	{ "sr", MADV_SEQUENTIAL, 0 }, { "rr", MADV_RANDOM, 0 },     { "lo", -1, 0 },
	{ "lf", -2, 0 },
};
#define N (sizeof(areas) / sizeof(areas[0]))

/* The VmFlags line of the area starting at p, in buf. */
static int vmflags(const void *p, char *buf, size_t len)
{
	char want[32], line[512];
	snprintf(want, sizeof(want), "%lx-", (unsigned long)p);
	FILE *f = fopen("/proc/self/smaps", "re");
	int found = 0, in = 0;
	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f)) {
		if (!strncmp(line, want, strlen(want)))
			in = 1;
		else if (in && !strncmp(line, "VmFlags:", 8)) {
			snprintf(buf, len, "%s", line);
			found = 1;
			break;
		}
	}
	fclose(f);
	return found;
}

static int has_word(const char *line, const char *w)
{
	char pat[8];
	snprintf(pat, sizeof(pat), " %s", w);
	for (const char *p = line; (p = strstr(p, pat)); p++)
		if (p[3] == ' ' || p[3] == '\n' || p[3] == 0)
			return 1;
	return 0;
}

static long vmlck_kb(void)
{
	char line[256];
	long kb = -1;
	FILE *f = fopen("/proc/self/status", "re");
	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "VmLck: %ld", &kb) == 1)
			break;
	if (f)
		fclose(f);
	return kb;
}

int main(int argc, char **argv)
{
	char buf[512];
	target_init(argc, argv, 0);
	int ksm = access("/sys/kernel/mm/ksm/run", F_OK) == 0;

	for (size_t i = 0; i < N; i++) {
		struct area *a = &areas[i];
		/* a guard page between areas: no two merge into one */
		char *m = mmap(NULL, (PAGES + 1) * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (m == MAP_FAILED)
			target_verdict(0, "mmap: %s", strerror(errno));
		mprotect(m + PAGES * PAGE, PAGE, PROT_NONE);
		a->p = m;
		for (size_t k = 0; k < PAGES * PAGE; k++)
			m[k] = (char)(i * 31 + k % 251);
		int r = 0;
		if (a->madv == MADV_MERGEABLE && !ksm)
			continue;
		if (a->madv >= 0)
			r = madvise(m, PAGES * PAGE, a->madv);
		else if (a->madv == -1)
			r = mlock(m, PAGES * PAGE);
		else
			r = (int)syscall(SYS_mlock2, m, PAGES * PAGE, 1 /* MLOCK_ONFAULT */);
		if (r < 0)
			target_verdict(0, "%s: %s", a->flag, strerror(errno));
		if (!vmflags(m, buf, sizeof(buf)) || !has_word(buf, a->flag))
			target_verdict(0, "%s not in VmFlags before the dump: %s", a->flag, buf);
	}
	long lck = vmlck_kb();
	if (lck < 2 * PAGES * PAGE / 1024)
		target_verdict(0, "VmLck %ld kB before the dump", lck);
	target_ready();
	target_wait_restored();

	for (size_t i = 0; i < N; i++) {
		struct area *a = &areas[i];
		if (a->madv == MADV_MERGEABLE && !ksm)
			continue;
		if (!vmflags(a->p, buf, sizeof(buf)))
			target_verdict(0, "area %s at %p is gone", a->flag, (void *)a->p);
		if (!has_word(buf, a->flag))
			target_verdict(0, "area %s lost its flag: %s", a->flag, buf);
		/* the neighbours' words are not there: each area its own */
		for (size_t j = 0; j < N; j++)
			if (j != i && strcmp(areas[j].flag, "lf") && strcmp(areas[j].flag, "lo") &&
			    has_word(buf, areas[j].flag) && strcmp(a->flag, "hg") && strcmp(a->flag, "nh"))
				target_verdict(0, "area %s got %s too: %s", a->flag, areas[j].flag, buf);
		for (size_t k = 0; k < PAGES * PAGE; k++)
			if (a->p[k] != (char)(i * 31 + k % 251))
				target_verdict(0, "area %s: byte %zu differs", a->flag, k);
	}
	long now = vmlck_kb();
	if (now < lck)
		target_verdict(0, "VmLck %ld kB after the restore, %ld before", now, lck);
	target_pass();
}
