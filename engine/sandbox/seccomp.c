/*
 * Seccomp filters (SECCOMP_MODE_FILTER). A dump reads every thread's
 * filters through the tracer (PTRACE_SECCOMP_GET_FILTER, which takes
 * CAP_SYS_ADMIN: the keeper does it), a restore installs them again by
 * injection as the very last step before the process runs, after its
 * credentials (a filter may forbid setuid), oldest first.
 *
 * In the kernel the filters of a process form a tree: each filter points
 * to the one installed before it, and threads created after a filter, or
 * synchronised with SECCOMP_FILTER_FLAG_TSYNC, point into the same chain.
 * The kernel shows no identity of a filter, so two filters are taken for
 * one when they have the same program, the same flags and the same
 * filter before them (true for every chain made by clone, fork or TSYNC;
 * two threads that each installed the same program on their own are
 * taken as one too, which changes nothing they can observe but that a
 * later TSYNC succeeds). Each such filter is stored once, seccomp/<n>,
 * naming its parent; each thread names its newest filter (regs/<tid>).
 *
 * A restore installs the filters every thread shares from one thread with
 * TSYNC (one chain again, so that the program's own later TSYNC works),
 * then each thread's own on top of them. A part shared by some threads
 * but not all is installed once per thread. SECCOMP_MODE_STRICT is
 * refused at dump (process.c).
 */
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/mman.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>

#include "engine/engine-int.h"

#ifndef PTRACE_SECCOMP_GET_FILTER
#define PTRACE_SECCOMP_GET_FILTER 0x420c
#endif
#ifndef PTRACE_GET_SECCOMP_METADATA
#define PTRACE_GET_SECCOMP_METADATA 0x420d
#endif
#ifndef PTRACE_O_SUSPEND_SECCOMP
#define PTRACE_O_SUSPEND_SECCOMP (1 << 21)
#endif

#define FILTER_MAX_INSNS 4096 /* BPF_MAXINSNS */

struct meta {
	uint64_t filter_off;
	uint64_t flags;
};

void seccomp_filters_free(struct seccomp_filter *f, size_t n)
{
	/* f is NULL while only `process` was read: n is the count expected */
	for (size_t i = 0; f && i < n; i++)
		free(f[i].insns);
	free(f);
}

/* The index of a filter equal to (parent, flags, prog), added if new. */
static int intern(struct proc_image *img, int32_t parent, uint32_t flags, void *insns, uint32_t len,
		  int32_t *ret)
{
	for (size_t i = 0; i < img->nfilters; i++) {
		const struct seccomp_filter *f = &img->filters[i];
		if (f->parent == parent && f->flags == flags && f->len == len &&
		    !memcmp(f->insns, insns, len * sizeof(struct sock_filter))) {
			free(insns);
			*ret = (int32_t)i;
			return 0;
		}
	}
	struct seccomp_filter *nf = realloc(img->filters, (img->nfilters + 1) * sizeof(*nf));
	if (!nf) {
		free(insns);
		return -ENOMEM;
	}
	img->filters = nf;
	nf[img->nfilters] = (struct seccomp_filter){ .parent = parent, .flags = flags, .len = len, .insns = insns };
	*ret = (int32_t)img->nfilters++;
	return 0;
}

int seccomp_capture(struct proc_image *img)
{
	for (size_t i = 0; i < img->nthreads; i++) {
		struct thread_image *t = &img->threads[i];
		int32_t at = -1;
		t->seccomp = -1;
		if (t->creds.seccomp_mode == 0)
			continue;
		if (t->creds.seccomp_mode != SECCOMP_MODE_FILTER)
			return err_set(-EOPNOTSUPP, "thread %d: seccomp mode %d (strict) is not supported", t->tid,
				       t->creds.seccomp_mode);
		/* index 0 is the oldest filter: the kernel counts back from
		 * the newest by the number of filters less the index */
		for (unsigned long k = 0;; k++) {
			long n = ptrace(PTRACE_SECCOMP_GET_FILTER, t->tid, (void *)k, NULL);
			if (n < 0 && errno == ENOENT && k > 0)
				break;
			if (n < 0)
				return err_set(negerrno(), "thread %d: PTRACE_SECCOMP_GET_FILTER %lu: %m%s", t->tid, k,
					       errno == EACCES ? " (reading seccomp filters takes CAP_SYS_ADMIN)" : "");
			if (n == 0 || n > FILTER_MAX_INSNS)
				return err_set(-EIO, "thread %d: seccomp filter %lu has %ld instructions", t->tid, k, n);
			struct sock_filter *p = calloc(n, sizeof(*p));
			if (!p)
				return -ENOMEM;
			if (ptrace(PTRACE_SECCOMP_GET_FILTER, t->tid, (void *)k, p) != n) {
				free(p);
				return err_set(negerrno(), "thread %d: PTRACE_SECCOMP_GET_FILTER %lu: %m", t->tid, k);
			}
			struct meta m = { .filter_off = k };
			if (ptrace(PTRACE_GET_SECCOMP_METADATA, t->tid, (void *)sizeof(m), &m) < 0)
				m.flags = 0; /* before Linux 4.16: no flags to know of */
			int r = intern(img, at, (uint32_t)m.flags, p, (uint32_t)n, &at);
			if (r < 0)
				return r;
		}
		t->seccomp = at;
	}
	return 0;
}

int seccomp_write(struct store_snap *w, const struct proc_image *img)
{
	for (size_t i = 0; i < img->nfilters; i++) {
		const struct seccomp_filter *f = &img->filters[i];
		const struct sock_filter *p = f->insns;
		struct tbuf b = { 0 };
		char name[32];
		if (f->parent < 0)
			tb_printf(&b, "parent -\n");
		else
			tb_printf(&b, "parent %d\n", f->parent);
		tb_printf(&b, "flags 0x%x\n", f->flags);
		for (uint32_t k = 0; k < f->len; k++)
			tb_printf(&b, "insn 0x%04x %u %u 0x%08x\n", p[k].code, p[k].jt, p[k].jf, p[k].k);
		_cleanup_free_ char *text = tb_take(&b);
		if (!text)
			return -ENOMEM;
		snprintf(name, sizeof(name), "seccomp/%zu", i);
		int r = store_snap_put(w, name, text, strlen(text));
		if (r < 0)
			return r;
	}
	return 0;
}

static int parse_filter(const char *text, const char *name, size_t index, struct seccomp_filter *f)
{
	_cleanup_free_ char *copy = strdup(text);
	struct sock_filter *p = calloc(FILTER_MAX_INSNS, sizeof(*p));
	bool seen_parent = false;
	if (!copy || !p) {
		free(p);
		return -ENOMEM;
	}
	f->insns = p;
	f->len = 0;
	for (char *l = copy, *nl; l && *l; l = nl) {
		nl = strchr(l, '\n');
		if (nl)
			*nl++ = 0;
		unsigned code, jt, jf, k;
		int parent;
		char extra;
		if (!strcmp(l, "parent -")) {
			f->parent = -1;
			seen_parent = true;
		} else if (sscanf(l, "parent %d %c", &parent, &extra) == 1) {
			/* parents come first: no loop, no dangling index */
			if (parent < 0 || (size_t)parent >= index)
				return err_set(-EBADMSG, "%s: parent %d must name an earlier filter", name, parent);
			f->parent = parent;
			seen_parent = true;
		} else if (sscanf(l, "flags %x %c", &f->flags, &extra) == 1) {
		} else if (sscanf(l, "insn %x %u %u %x %c", &code, &jt, &jf, &k, &extra) == 4) {
			if (code > 0xffff || jt > 255 || jf > 255 || f->len == FILTER_MAX_INSNS)
				return err_set(-EBADMSG, "%s: bad instruction '%.40s'", name, l);
			p[f->len++] = (struct sock_filter){ (uint16_t)code, (uint8_t)jt, (uint8_t)jf, k };
		} else if (*l) {
			return err_set(-EBADMSG, "%s: malformed line '%.40s'", name, l);
		}
	}
	if (!seen_parent || !f->len)
		return err_set(-EBADMSG, "%s: 'parent' or instructions missing", name);
	/* the kernel checks the program itself when it is installed */
	if (f->flags & ~(uint32_t)SECCOMP_FILTER_FLAG_LOG)
		return err_set(-EBADMSG, "%s: unknown flags 0x%x", name, f->flags);
	return 0;
}

int seccomp_load(struct store_snap *snap, struct proc_image *img)
{
	/* img->nfilters came from `process`; every filter named there */
	size_t n = img->nfilters;
	img->nfilters = 0;
	if (n) {
		img->filters = calloc(n, sizeof(*img->filters));
		if (!img->filters)
			return -ENOMEM;
	}
	for (size_t i = 0; i < n; i++) {
		char name[32];
		_cleanup_free_ char *text = NULL;
		snprintf(name, sizeof(name), "seccomp/%zu", i);
		int r = store_snap_read_all(snap, name, &text, NULL);
		if (r < 0)
			return err_set(r, "%s: %s", name, strerror(-r));
		img->nfilters = i + 1;
		r = parse_filter(text, name, i, &img->filters[i]);
		if (r < 0)
			return r;
	}
	for (size_t i = 0; i < img->nthreads; i++)
		if (img->threads[i].seccomp >= (int32_t)n)
			return err_set(-EBADMSG, "regs/%d: seccomp filter %d is not in the snapshot",
				       img->threads[i].tid, img->threads[i].seccomp);
	return 0;
}

/* ---- restore ------------------------------------------------------------ */

/* Thread t's chain, oldest first, into v (at most nfilters long). */
static size_t chain(const struct proc_image *img, const struct thread_image *t, int32_t *v)
{
	size_t n = 0;
	for (int32_t f = t->seccomp; f >= 0 && n < img->nfilters; f = img->filters[f].parent)
		v[n++] = f;
	for (size_t i = 0; i < n / 2; i++) {
		int32_t x = v[i];
		v[i] = v[n - 1 - i];
		v[n - 1 - i] = x;
	}
	return n;
}

static int install(struct ctx *c, pid_t tid, const struct seccomp_filter *f, uint64_t at, bool tsync)
{
	struct sock_fprog prog = { .len = (unsigned short)f->len, .filter = (void *)(uintptr_t)(at + 16) };
	int64_t ret;
	int r = restore_poke(c, at, &prog, sizeof(prog));
	if (r >= 0)
		r = restore_poke(c, at + 16, f->insns, f->len * sizeof(struct sock_filter));
	if (r >= 0)
		r = restore_sys(c, tid, SYS_seccomp, SECCOMP_SET_MODE_FILTER,
				f->flags | (tsync ? SECCOMP_FILTER_FLAG_TSYNC : 0), at, 0, 0, 0, &ret,
				"seccomp(SECCOMP_SET_MODE_FILTER)");
	if (r >= 0 && ret > 0)
		r = err_set(-EBUSY, "thread %d: seccomp TSYNC failed on thread %ld", tid, (long)ret);
	return r;
}

int seccomp_install(struct ctx *c, const struct proc_image *img, unsigned ptrace_opts)
{
	size_t nt = img->nthreads, common = SIZE_MAX;
	uint32_t biggest = 0;
	uint64_t area = 0, area_len = 0;
	int64_t got;
	int r = 0;

	if (!img->nfilters)
		return 0;
	_cleanup_free_ int32_t *chains = calloc(nt * img->nfilters, sizeof(int32_t));
	_cleanup_free_ size_t *len = calloc(nt, sizeof(size_t));
	if (!chains || !len)
		return -ENOMEM;
	for (size_t i = 0; i < nt; i++) {
		len[i] = chain(img, &img->threads[i], chains + i * img->nfilters);
		size_t k = 0;
		while (k < len[i] && k < len[0] && chains[i * img->nfilters + k] == chains[k])
			k++;
		common = MIN(common, k);
	}
	for (size_t i = 0; i < img->nfilters; i++)
		biggest = MAX(biggest, img->filters[i].len);

	/* Our calls after this one must not meet the filters (munmap of our
	 * pages, the thread's capability sets): suspended for as long as we
	 * trace the threads, where we may (CAP_SYS_ADMIN). Otherwise they
	 * pass through the filters as the process's own calls would. */
	for (size_t i = 0; i < nt; i++)
		if (ptrace(PTRACE_SETOPTIONS, img->threads[i].tid, NULL,
			   (void *)(uintptr_t)(ptrace_opts | PTRACE_O_SUSPEND_SECCOMP)) < 0) {
			log_debug("thread %d: PTRACE_O_SUSPEND_SECCOMP: %m; the filters see our last calls",
				  img->threads[i].tid);
			break;
		}

	uint64_t at = restore_scratch(c);
	size_t need = 16 + (size_t)biggest * sizeof(struct sock_filter);
	if (need > RESTORE_SCRATCH_SIZE) {
		area_len = ALIGN_UP(need, 4096ul);
		r = restore_sys(c, img->pid, SYS_mmap, 0, area_len, PROT_READ | PROT_WRITE,
				MAP_PRIVATE | MAP_ANONYMOUS, (uint64_t)-1, 0, &got, "mmap for a seccomp filter");
		if (r < 0)
			return r;
		area = at = (uint64_t)got;
	}
	/* What every thread shares, once, from the leader, synchronised to
	 * the others (TSYNC also gives them its no_new_privs, which they
	 * have alike when they share filters made that way). */
	for (size_t k = 0; k < common && r >= 0; k++)
		r = install(c, img->pid, &img->filters[chains[k]], at, nt > 1);
	for (size_t i = 0; i < nt && r >= 0; i++)
		for (size_t k = common; k < len[i] && r >= 0; k++)
			r = install(c, img->threads[i].tid, &img->filters[chains[i * img->nfilters + k]], at, false);
	if (area) {
		int q = restore_sys(c, img->pid, SYS_munmap, area, area_len, 0, 0, 0, 0, NULL,
				    "munmap after the seccomp filters");
		if (r >= 0)
			r = q;
	}
	return r;
}
