/*
 * Per-area advice and locks: what madvise() and mlock() set on an area,
 * which /proc/PID/maps does not show and smaps's VmFlags does. A dump
 * records them as the `advice=` annotation of `maps` (docs/FORMAT.md); a
 * restore sets them again from inside the process once the area's bytes
 * are in, so that a locked area is locked with its content and a
 * RLIMIT_MEMLOCK too small for it fails the restore, naming the area,
 * instead of running the process unlocked.
 */
#include <sys/mman.h>
#include <sys/syscall.h>

#include "engine/engine-int.h"

#ifndef MLOCK_ONFAULT
#define MLOCK_ONFAULT 0x01
#endif

static const struct {
	const char *vmflag, *name;
	uint32_t bit;
	int madv; /* -1: a lock */
} advice[] = {
	{ "hg", "hugepage", VMA_ADV_HUGEPAGE, MADV_HUGEPAGE },
	{ "nh", "nohugepage", VMA_ADV_NOHUGEPAGE, MADV_NOHUGEPAGE },
	{ "dd", "dontdump", VMA_ADV_DONTDUMP, MADV_DONTDUMP },
	{ "dc", "dontfork", VMA_ADV_DONTFORK, MADV_DONTFORK },
	{ "wf", "wipeonfork", VMA_ADV_WIPEONFORK, MADV_WIPEONFORK },
	{ "mg", "mergeable", VMA_ADV_MERGEABLE, MADV_MERGEABLE },
	{ "sr", "sequential", VMA_ADV_SEQUENTIAL, MADV_SEQUENTIAL },
	{ "rr", "random", VMA_ADV_RANDOM, MADV_RANDOM },
	{ "lo", "locked", VMA_ADV_LOCKED, -1 },
	{ "lf", "lockonfault", VMA_ADV_LOCKONFAULT, -1 },
};

uint32_t vma_advice_from_vmflags(const char *line)
{
	uint32_t a = 0;
	const char *p = strchr(line, ':');
	if (!p)
		return 0;
	/* two-letter words separated by spaces */
	for (p++; *p;) {
		while (*p == ' ')
			p++;
		size_t n = strcspn(p, " \n");
		for (size_t i = 0; n == 2 && i < ARRAY_SIZE(advice); i++)
			if (!strncmp(p, advice[i].vmflag, 2))
				a |= advice[i].bit;
		p += n;
	}
	return a;
}

void vma_advice_format(struct tbuf *b, const struct vma *v)
{
	const char *sep = " advice=";
	for (size_t i = 0; i < ARRAY_SIZE(advice); i++) {
		if (v->advice & advice[i].bit) {
			tb_printf(b, "%s%s", sep, advice[i].name);
			sep = ",";
		}
	}
}

/* Unknown words (a newer writer's) are ignored, as unknown annotations are. */
int vma_advice_parse(struct vma *v, const char *val)
{
	for (const char *p = val; *p;) {
		size_t n = strcspn(p, ",");
		for (size_t i = 0; i < ARRAY_SIZE(advice); i++)
			if (strlen(advice[i].name) == n && !strncmp(p, advice[i].name, n))
				v->advice |= advice[i].bit;
		p += n;
		if (*p == ',')
			p++;
	}
	return 0;
}

int vma_advice_apply(struct ctx *c, pid_t pid, const struct vma *v, bool lazy)
{
	uint64_t len = v->end - v->start;
	char what[96];
	int r;

	/* the kernel's own areas (vDSO, vvar) carry dd and the like by
	 * themselves: only areas the restore maps get advice */
	if (v->kind != VMA_ANON && v->kind != VMA_DELETED && v->kind != VMA_FILE_PRIVATE &&
	    v->kind != VMA_FILE_SHARED && v->kind != VMA_SHMEM)
		return 0;

	if (v->advice && fault_hit(FAULT_ENGINE_RESTORE_ADVICE))
		return err_set(-EIO, "area %lx-%lx: injected fault setting its advice", (unsigned long)v->start,
			       (unsigned long)v->end);
	for (size_t i = 0; i < ARRAY_SIZE(advice); i++) {
		if (!(v->advice & advice[i].bit) || advice[i].madv < 0)
			continue;
		snprintf(what, sizeof(what), "madvise(%s) of area %lx-%lx", advice[i].name, (unsigned long)v->start,
			 (unsigned long)v->end);
		r = restore_sys(c, pid, SYS_madvise, v->start, len, (uint64_t)advice[i].madv, 0, 0, 0, NULL, what);
		if (r < 0)
			return r;
	}
	if (!(v->advice & (VMA_ADV_LOCKED | VMA_ADV_LOCKONFAULT)))
		return 0;
	/* A lazily loaded area is locked on fault: locking it whole now would
	 * fault every page in before the loader serves them; its pages are
	 * locked as they arrive (docs/COVERAGE.md). */
	bool onfault = (v->advice & VMA_ADV_LOCKONFAULT) || lazy;
	snprintf(what, sizeof(what), "mlock of area %lx-%lx (%lu KiB; RLIMIT_MEMLOCK?)", (unsigned long)v->start,
		 (unsigned long)v->end, (unsigned long)(len >> 10));
	return restore_sys(c, pid, SYS_mlock2, v->start, len, onfault ? MLOCK_ONFAULT : 0, 0, 0, 0, NULL, what);
}
