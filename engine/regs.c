/*
 * One thread's state: what ptrace reads directly from a stopped thread
 * (general registers, xstate, signal mask, pending signals, robust list,
 * rseq), and the text of regs/<tid> (docs/FORMAT.md): one "key value" a
 * line, so that `grep rip` over regs/ works.
 */
#include <elf.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/uio.h>

#include "engine/engine-int.h"


/* The general registers, in struct user_regs_struct order. */
#define REG(n) { #n, offsetof(struct user_regs_struct, n) }
static const struct {
	const char *name;
	size_t off;
} reg_names[] = {
	REG(r15), REG(r14), REG(r13), REG(r12), REG(rbp), REG(rbx), REG(r11),
	REG(r10), REG(r9), REG(r8), REG(rax), REG(rcx), REG(rdx), REG(rsi),
	REG(rdi), REG(orig_rax), REG(rip), REG(cs), REG(eflags), REG(rsp),
	REG(ss), REG(fs_base), REG(gs_base), REG(ds), REG(es), REG(fs), REG(gs),
};

/* Reads a queue of pending signals without dequeuing them. */
static int peek_pending(pid_t tid, bool shared, struct sig_pending **ret, size_t *ret_n)
{
	struct sig_pending *v = NULL;
	size_t n = 0;
	for (;;) {
		struct __ptrace_peeksiginfo_args a = {
			.off = n,
			.flags = shared ? PTRACE_PEEKSIGINFO_SHARED : 0,
			.nr = 1,
		};
		siginfo_t si;
		long k = ptrace(PTRACE_PEEKSIGINFO, tid, &a, &si);
		if (k < 0) {
			free(v);
			return err_set(negerrno(), "thread %d: PTRACE_PEEKSIGINFO: %m", tid);
		}
		if (k == 0)
			break;
		struct sig_pending *nv = realloc(v, (n + 1) * sizeof(*v));
		if (!nv) {
			free(v);
			return -ENOMEM;
		}
		v = nv;
		v[n].shared = shared;
		v[n].info = si;
		n++;
	}
	*ret = v;
	*ret_n = n;
	return 0;
}

int thread_capture(pid_t tid, struct thread_image *t)
{
	int r;

	t->tid = tid;
	if (fault_hit(FAULT_ENGINE_REGS))
		return err_set(-EIO, "thread %d: reading registers: injected fault", tid);
	r = regs_get(tid, &t->regs);
	if (r < 0)
		return r;

	t->xstate = malloc(ENGINE_XSTATE_MAX);
	if (!t->xstate)
		return -ENOMEM;
	struct iovec iov = { t->xstate, ENGINE_XSTATE_MAX };
	if (ptrace(PTRACE_GETREGSET, tid, (void *)NT_X86_XSTATE, &iov) < 0)
		return err_set(negerrno(), "thread %d: PTRACE_GETREGSET xstate: %m", tid);
	t->xstate_len = iov.iov_len;

	if (ptrace(PTRACE_GETSIGMASK, tid, (void *)sizeof(t->sigmask), &t->sigmask) < 0)
		return err_set(negerrno(), "thread %d: PTRACE_GETSIGMASK: %m", tid);

	void *head;
	size_t len;
	if (syscall(SYS_get_robust_list, tid, &head, &len) < 0)
		return err_set(negerrno(), "thread %d: get_robust_list: %m", tid);
	t->robust_head = (uintptr_t)head;
	t->robust_len = len;

	struct __ptrace_rseq_configuration rc = { 0 };
	long k = ptrace(PTRACE_GET_RSEQ_CONFIGURATION, tid, (void *)sizeof(rc), &rc);
	if (k < 0)
		return err_set(negerrno(), "thread %d: PTRACE_GET_RSEQ_CONFIGURATION: %m", tid);
	if (rc.rseq_abi_pointer) {
		t->has_rseq = true;
		t->rseq_addr = rc.rseq_abi_pointer;
		t->rseq_len = rc.rseq_abi_size;
		t->rseq_sig = rc.signature;
	}

	r = peek_pending(tid, false, &t->pending, &t->npending);
	if (r < 0)
		return r;

	char path[64];
	_cleanup_free_ char *comm = NULL;
	snprintf(path, sizeof(path), "/proc/%d/task/%d/comm", tid, tid);
	if (read_file_full(path, &comm, NULL) >= 0) {
		comm[strcspn(comm, "\n")] = 0;
		snprintf(t->comm, sizeof(t->comm), "%s", comm);
	}
	return 0;
}

void thread_image_free(struct thread_image *t)
{
	free(t->xstate);
	free(t->pending);
	creds_free(&t->creds);
	t->xstate = NULL;
	t->pending = NULL;
}

void tb_printf(struct tbuf *b, const char *fmt, ...)
{
	va_list ap;
	if (b->oom)
		return;
	for (;;) {
		va_start(ap, fmt);
		int n = vsnprintf(b->p ? b->p + b->len : NULL, b->p ? b->cap - b->len : 0, fmt, ap);
		va_end(ap);
		if (n < 0) {
			b->oom = true;
			return;
		}
		if (b->p && b->len + n < b->cap) {
			b->len += n;
			return;
		}
		size_t nc = MAX(b->cap * 2, b->len + n + 256);
		char *np = realloc(b->p, nc);
		if (!np) {
			b->oom = true;
			return;
		}
		b->p = np;
		b->cap = nc;
	}
}

void tb_hex(struct tbuf *b, const void *data, size_t len)
{
	static const char hx[] = "0123456789abcdef";
	const uint8_t *d = data;
	for (size_t i = 0; i < len && !b->oom; i++) {
		char two[3] = { hx[d[i] >> 4], hx[d[i] & 15], 0 };
		tb_printf(b, "%s", two);
	}
}

char *tb_take(struct tbuf *b)
{
	if (b->oom) {
		free(b->p);
		return NULL;
	}
	return b->p ? b->p : strdup("");
}

static void format_pending(struct tbuf *b, const struct sig_pending *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		tb_printf(b, "%s %d ", p[i].shared ? "sigpending_shared" : "sigpending",
			  p[i].info.si_signo);
		tb_hex(b, &p[i].info, sizeof(siginfo_t));
		tb_printf(b, "\n");
	}
}

char *thread_format(const struct thread_image *t)
{
	struct tbuf b = { 0 };
	tb_printf(&b, "tid %d\n", t->tid);
	tb_printf(&b, "comm %s\n", t->comm);
	for (size_t i = 0; i < ARRAY_SIZE(reg_names); i++)
		tb_printf(&b, "%s 0x%llx\n", reg_names[i].name,
			  *(unsigned long long *)((char *)&t->regs + reg_names[i].off));
	tb_printf(&b, "sigmask 0x%" PRIx64 "\n", t->sigmask);
	tb_printf(&b, "robust_list 0x%" PRIx64 " %" PRIu64 "\n", t->robust_head, t->robust_len);
	if (t->has_rseq)
		tb_printf(&b, "rseq 0x%" PRIx64 " %u 0x%x\n", t->rseq_addr, t->rseq_len, t->rseq_sig);
	tb_printf(&b, "tid_address 0x%" PRIx64 "\n", t->tid_address);
	tb_printf(&b, "sigaltstack 0x%" PRIx64 " %" PRIu64 " %d\n", t->altstack_sp,
		  t->altstack_size, t->altstack_flags);
	format_pending(&b, t->pending, t->npending);
	creds_format(&b, &t->creds);
	if (t->seccomp >= 0)
		tb_printf(&b, "seccomp %d\n", t->seccomp);
	tb_printf(&b, "xstate ");
	tb_hex(&b, t->xstate, t->xstate_len);
	tb_printf(&b, "\n");
	return tb_take(&b);
}

int unhex(const char *s, uint8_t *out, size_t max, size_t *ret_len)
{
	size_t n = strlen(s);
	if (n % 2 || n / 2 > max)
		return -EINVAL;
	for (size_t i = 0; i < n / 2; i++) {
		unsigned v;
		if (sscanf(s + 2 * i, "%2x", &v) != 1)
			return -EINVAL;
		out[i] = v;
	}
	*ret_len = n / 2;
	return 0;
}

static int add_pending(struct sig_pending **v, size_t *n, bool shared, const char *rest)
{
	int sig;
	char hex[2 * sizeof(siginfo_t) + 1];
	size_t len;
	if (sscanf(rest, "%d %256s", &sig, hex) != 2)
		return -EINVAL;
	struct sig_pending *nv = realloc(*v, (*n + 1) * sizeof(**v));
	if (!nv)
		return -ENOMEM;
	*v = nv;
	nv[*n].shared = shared;
	if (unhex(hex, (uint8_t *)&nv[*n].info, sizeof(siginfo_t), &len) < 0 || len != sizeof(siginfo_t))
		return -EINVAL;
	if (nv[*n].info.si_signo != sig || sig < 1 || sig > ENGINE_NSIG)
		return -EINVAL;
	(*n)++;
	return 0;
}

int engine_pending_parse(struct sig_pending **v, size_t *n, bool shared, const char *rest)
{
	return add_pending(v, n, shared, rest);
}

char *engine_pending_format(const struct sig_pending *p, size_t n)
{
	struct tbuf b = { 0 };
	format_pending(&b, p, n);
	return tb_take(&b);
}

int thread_parse(const char *text, const char *name, struct thread_image *t)
{
	_cleanup_free_ char *copy = strdup(text);
	bool seen_regs[ARRAY_SIZE(reg_names)] = { 0 };
	bool seen_tid = false;
	if (!copy)
		return -ENOMEM;
	t->seccomp = -1;
	for (char *l = copy, *nl; l && *l; l = nl) {
		nl = strchr(l, '\n');
		if (nl)
			*nl++ = 0;
		char *sp = strchr(l, ' ');
		if (!sp)
			return err_set(-EBADMSG, "%s: malformed line '%.40s'", name, l);
		*sp = 0;
		const char *key = l, *val = sp + 1;
		int ok = 1;
		bool found = false;
		for (size_t i = 0; i < ARRAY_SIZE(reg_names); i++)
			if (!strcmp(key, reg_names[i].name)) {
				unsigned long long v;
				ok = sscanf(val, "%llx", &v) == 1;
				*(unsigned long long *)((char *)&t->regs + reg_names[i].off) = v;
				seen_regs[i] = true;
				found = true;
			}
		if (found) {
		} else if (!strcmp(key, "tid")) {
			ok = sscanf(val, "%d", &t->tid) == 1 && t->tid > 0;
			seen_tid = true;
		} else if (!strcmp(key, "comm")) {
			snprintf(t->comm, sizeof(t->comm), "%s", val);
		} else if (!strcmp(key, "sigmask")) {
			ok = sscanf(val, "%" SCNx64, &t->sigmask) == 1;
		} else if (!strcmp(key, "robust_list")) {
			ok = sscanf(val, "%" SCNx64 " %" SCNu64, &t->robust_head, &t->robust_len) == 2;
		} else if (!strcmp(key, "rseq")) {
			ok = sscanf(val, "%" SCNx64 " %u %x", &t->rseq_addr, &t->rseq_len, &t->rseq_sig) == 3;
			t->has_rseq = true;
		} else if (!strcmp(key, "tid_address")) {
			ok = sscanf(val, "%" SCNx64, &t->tid_address) == 1;
		} else if (!strcmp(key, "sigaltstack")) {
			ok = sscanf(val, "%" SCNx64 " %" SCNu64 " %d", &t->altstack_sp,
				    &t->altstack_size, &t->altstack_flags) == 3;
		} else if (!strcmp(key, "sigpending")) {
			ok = add_pending(&t->pending, &t->npending, false, val) == 0;
		} else if (!strcmp(key, "xstate")) {
			free(t->xstate);
			t->xstate = malloc(ENGINE_XSTATE_MAX);
			if (!t->xstate)
				return -ENOMEM;
			ok = unhex(val, t->xstate, ENGINE_XSTATE_MAX, &t->xstate_len) == 0 &&
			     t->xstate_len >= 512 + 64;
		} else if (!strcmp(key, "seccomp")) {
			ok = sscanf(val, "%d", &t->seccomp) == 1 && t->seccomp >= 0;
		} else {
			/* credentials; unknown keys of a newer minor format
			 * are ignored */
			int c = creds_parse_line(key, val, &t->creds);
			ok = c >= 0;
		}
		if (!ok)
			return err_set(-EBADMSG, "%s: bad value for '%s'", name, key);
	}
	if (!seen_tid || !t->xstate)
		return err_set(-EBADMSG, "%s: 'tid' or 'xstate' missing", name);
	for (size_t i = 0; i < ARRAY_SIZE(reg_names); i++)
		if (!seen_regs[i])
			return err_set(-EBADMSG, "%s: register '%s' missing", name, reg_names[i].name);
	return creds_parse_done(name, &t->creds);
}

int peek_shared_pending(pid_t pid, struct proc_image *img)
{
	return peek_pending(pid, true, &img->pending, &img->npending);
}
