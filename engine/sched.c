// SPDX-License-Identifier: MIT
/*
 * A thread's scheduling and the per-thread prctl switches: kept, or the
 * dump refused up front, so that nothing runs quietly different after a
 * restore (docs/COVERAGE.md).
 *
 * Kept, per thread: the policy (other, batch, idle, fifo, rr) with its
 * nice value, real-time priority, reset-on-fork flag and utilization
 * clamps (sched_getattr from outside, any thread); the CPU affinity
 * (sched_getaffinity); the speculation controls, the TSC mode and the
 * machine-check policy (asked from inside: PR_GET_*). Per process: KSM
 * for the whole process (PR_SET_MEMORY_MERGE, /proc/PID/ksm_stat).
 *
 * All are set again from inside the new process while it still holds
 * the restorer's privileges and nothing more (before its own credentials
 * go in): a lower nice value or a real-time policy the restorer may not
 * set (CAP_SYS_NICE, RLIMIT_NICE, RLIMIT_RTPRIO) fails the restore,
 * naming it, as nobody gains power by a restore. The affinity is the one
 * setting that may not hold on another machine: where some of its CPUs
 * are missing the thread runs on those that are, and where none is, on
 * the restorer's; either way the restore says so (a warning), it does
 * not fail: a job moved to a smaller machine must come back.
 *
 * Refused before the process is touched: SCHED_DEADLINE (its admission
 * control and fork rules), an I/O flusher (PR_SET_IO_FLUSHER: reading it
 * back takes a privilege the process may lack; it shows as PF flags in
 * /proc/PID/task/TID/stat), x86 linear address masking (untag_mask in
 * /proc/PID/status), sealed areas (mseal: smaps "sl", checked with the
 * areas).
 */
#include <dirent.h>
#include <sched.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

#include "engine/engine-int.h"

#ifndef SCHED_FLAG_RESET_ON_FORK
#define SCHED_FLAG_RESET_ON_FORK 0x01
#endif
#ifndef SCHED_FLAG_UTIL_CLAMP_MIN
#define SCHED_FLAG_UTIL_CLAMP_MIN 0x20
#define SCHED_FLAG_UTIL_CLAMP_MAX 0x40
#endif
#ifndef SCHED_DEADLINE
#define SCHED_DEADLINE 6
#endif
#ifndef PR_SET_MEMORY_MERGE
#define PR_SET_MEMORY_MERGE 67
#endif
#ifndef PR_SPEC_L1D_FLUSH
#define PR_SPEC_L1D_FLUSH 2
#endif
#define PF_MEMALLOC_NOIO_ 0x00080000u
#define PF_LOCAL_THROTTLE_ 0x00100000u
#define UCLAMP_MAX_ 1024u

struct sched_attr_ {
	uint32_t size, policy;
	uint64_t flags;
	int32_t nice;
	uint32_t priority;
	uint64_t runtime, deadline, period;
	uint32_t util_min, util_max;
};

static const char *const policy_names[] = {
	[SCHED_OTHER] = "other", [SCHED_FIFO] = "fifo", [SCHED_RR] = "rr",
	[SCHED_BATCH] = "batch", [SCHED_IDLE] = "idle",
};

static const char *policy_name(uint32_t p)
{
	return p < ARRAY_SIZE(policy_names) && policy_names[p] ? policy_names[p] : NULL;
}

static int get_attr(pid_t tid, struct sched_attr_ *a)
{
	*a = (struct sched_attr_){ 0 };
	if (syscall(SYS_sched_getattr, tid, a, sizeof(*a), 0) < 0)
		return negerrno();
	return 0;
}

/* The flags field (9) of /proc/PID/task/TID/stat. */
static int task_flags(pid_t pid, pid_t tid, unsigned long *flags)
{
	uint64_t f[PROC_STAT_FIELDS];
	int r = proc_stat_read(pid, tid, f);
	if (r < 0)
		return r;
	if (r < 9)
		return -EBADMSG;
	*flags = (unsigned long)f[9];
	return 0;
}

/* One thread: refused where it runs under what a restore cannot give
 * back; 0 for "." and a thread gone meanwhile. */
static int check_thread(pid_t pid, pid_t tid)
{
	if (tid <= 0)
		return 0;
	struct sched_attr_ a;
	int r = get_attr(tid, &a);
	if (r == -ESRCH)
		return 0;
	if (r < 0)
		return err_set(r, "thread %d: sched_getattr: %s", tid, strerror(-r));
	if (a.policy == SCHED_DEADLINE)
		return err_set(-EOPNOTSUPP, "thread %d of pid %d runs under SCHED_DEADLINE: not supported", tid, pid);
	if (!policy_name(a.policy))
		return err_set(-EOPNOTSUPP, "thread %d of pid %d: scheduling policy %u: not supported", tid, pid,
			       a.policy);
	unsigned long flags;
	if (task_flags(pid, tid, &flags) >= 0 &&
	    (flags & (PF_MEMALLOC_NOIO_ | PF_LOCAL_THROTTLE_)) == (PF_MEMALLOC_NOIO_ | PF_LOCAL_THROTTLE_))
		return err_set(-EOPNOTSUPP, "thread %d of pid %d is an I/O flusher (PR_SET_IO_FLUSHER): not supported",
			       tid, pid);
	return 0;
}

int sched_check(pid_t pid)
{
	char p[64];
	snprintf(p, sizeof(p), "/proc/%d/status", pid);
	_cleanup_free_ char *status = NULL;
	if (read_file_full(p, &status, NULL) >= 0) {
		const char *u = strstr(status, "\nuntag_mask:");
		unsigned long long m = u ? strtoull(u + 12, NULL, 16) : ~0ull;
		if (m != ~0ull)
			return err_set(-EOPNOTSUPP, "pid %d uses linear address masking (untag_mask %#llx): not supported",
				       pid, m);
	}
	snprintf(p, sizeof(p), "/proc/%d/task", pid);
	DIR *d = opendir(p);
	if (!d)
		return err_set(negerrno(), "pid %d: cannot list its threads: %m", pid);
	struct dirent *de;
	int r = 0;
	while (r >= 0 && (de = readdir(d)))
		r = check_thread(pid, atoi(de->d_name));
	closedir(d);
	return r;
}

int sched_capture(pid_t tid, struct thread_sched *s)
{
	struct sched_attr_ a;
	int r = get_attr(tid, &a);
	if (r < 0)
		return err_set(r, "thread %d: sched_getattr: %s", tid, strerror(-r));
	if (!policy_name(a.policy))
		return err_set(-EOPNOTSUPP, "thread %d: scheduling policy %u: not supported", tid, a.policy);
	s->policy = a.policy;
	s->reset_on_fork = a.flags & SCHED_FLAG_RESET_ON_FORK;
	s->nice = a.nice;
	s->rtprio = a.priority;
	s->util_min = a.util_min;
	s->util_max = a.util_max;
	CPU_ZERO(&s->cpus);
	if (sched_getaffinity(tid, sizeof(s->cpus), &s->cpus) < 0)
		return err_set(negerrno(), "thread %d: sched_getaffinity: %m", tid);
	s->valid = true;
	return 0;
}

/* "0-3,8" */
static void cpus_format(struct tbuf *b, const cpu_set_t *set)
{
	const char *sep = "";
	for (int i = 0; i < CPU_SETSIZE; i++) {
		if (!CPU_ISSET(i, set))
			continue;
		int j = i;
		while (j + 1 < CPU_SETSIZE && CPU_ISSET(j + 1, set))
			j++;
		if (j > i)
			tb_printf(b, "%s%d-%d", sep, i, j);
		else
			tb_printf(b, "%s%d", sep, i);
		sep = ",";
		i = j;
	}
}

static bool cpus_parse(const char *s, cpu_set_t *set)
{
	CPU_ZERO(set);
	while (*s) {
		char *e;
		long a = strtol(s, &e, 10), b = a;
		if (e == s || a < 0 || a >= CPU_SETSIZE)
			return false;
		if (*e == '-') {
			s = e + 1;
			b = strtol(s, &e, 10);
			if (e == s || b < a || b >= CPU_SETSIZE)
				return false;
		}
		for (long i = a; i <= b; i++)
			CPU_SET(i, set);
		if (*e == ',')
			e++;
		else if (*e && *e != '\n')
			return false;
		s = e;
		if (*s == '\n')
			break;
	}
	return CPU_COUNT(set) > 0;
}

void sched_format(struct tbuf *b, const struct thread_image *t)
{
	const struct thread_sched *s = &t->sched;
	if (s->valid) {
		tb_printf(b, "thread_sched %d %s nice=%d prio=%u util=%u-%u%s cpus=", t->tid, policy_name(s->policy),
			  s->nice, s->rtprio, s->util_min, s->util_max, s->reset_on_fork ? " reset_on_fork" : "");
		cpus_format(b, &s->cpus);
		tb_printf(b, "\n");
	}
	const struct thread_switches *w = &t->sw;
	if (w->spec[0] > 0 || w->spec[1] > 0 || w->spec[2] > 0 || w->tsc_sigsegv || w->mce) {
		tb_printf(b, "thread_prctl %d", t->tid);
		static const char *const spec[] = { "spec_store_bypass", "spec_indirect_branch", "spec_l1d_flush" };
		for (int i = 0; i < 3; i++)
			if (w->spec[i] > 0)
				tb_printf(b, " %s=0x%x", spec[i], (unsigned)w->spec[i]);
		if (w->tsc_sigsegv)
			tb_printf(b, " tsc=sigsegv");
		if (w->mce)
			tb_printf(b, " mce=%s", w->mce == 1 ? "late" : "early");
		tb_printf(b, "\n");
	}
}

static bool parse_sched_line(struct thread_sched *s, const char *val)
{
	char pol[16];
	int n = 0;
	*s = (struct thread_sched){ 0 };
	if (sscanf(val, "%15s nice=%d prio=%u util=%u-%u %n", pol, &s->nice, &s->rtprio, &s->util_min, &s->util_max,
		   &n) != 5)
		return false;
	const char *p = val + n;
	if (!strncmp(p, "reset_on_fork ", 14)) {
		s->reset_on_fork = true;
		p += 14;
	}
	if (strncmp(p, "cpus=", 5) || !cpus_parse(p + 5, &s->cpus))
		return false;
	for (uint32_t i = 0; i < ARRAY_SIZE(policy_names); i++)
		if (policy_names[i] && !strcmp(pol, policy_names[i]))
			s->policy = i, s->valid = true;
	return s->valid && s->nice >= -20 && s->nice <= 19 && s->rtprio <= 99 && s->util_min <= s->util_max &&
	       s->util_max <= UCLAMP_MAX_;
}

static bool parse_prctl_line(struct thread_switches *w, const char *val)
{
	static const char *const spec[] = { "spec_store_bypass=", "spec_indirect_branch=", "spec_l1d_flush=" };
	for (const char *p = val + strspn(val, " "); *p && *p != '\n'; p += strspn(p, " ")) {
		size_t n = strcspn(p, " \n");
		char word[64];
		if (n >= sizeof(word))
			return false;
		memcpy(word, p, n);
		word[n] = 0;
		p += n;
		bool ok = false;
		if (!strcmp(word, "tsc=sigsegv"))
			ok = w->tsc_sigsegv = true;
		else if (!strcmp(word, "mce=late"))
			w->mce = 1, ok = true;
		else if (!strcmp(word, "mce=early"))
			w->mce = 2, ok = true;
		for (int i = 0; i < 3 && !ok; i++) {
			size_t l = strlen(spec[i]);
			char *e;
			if (strncmp(word, spec[i], l))
				continue;
			w->spec[i] = (int32_t)strtol(word + l, &e, 16);
			ok = e != word + l && !*e && w->spec[i] > 0 && w->spec[i] < 64;
		}
		if (!ok)
			return false;
	}
	return true;
}

int sched_parse(struct proc_image *img, const char *key, const char *val, bool *known)
{
	bool is_sched = !strcmp(key, "thread_sched");
	*known = is_sched || !strcmp(key, "thread_prctl");
	if (!*known)
		return 0;
	char *e;
	long tid = strtol(val, &e, 10);
	if (e == val || *e != ' ')
		return -EBADMSG;
	for (size_t i = 0; i < img->nthreads; i++) {
		struct thread_image *t = &img->threads[i];
		if (t->tid != tid)
			continue;
		bool ok = is_sched ? parse_sched_line(&t->sched, e + 1) : parse_prctl_line(&t->sw, e + 1);
		return ok ? 0 : -EBADMSG;
	}
	return -EBADMSG; /* a thread the 'threads' line does not name */
}

/* The affinity the thread has now, against the one it had: a warning
 * where CPUs are missing here. */
static void affinity_warn(pid_t pid, pid_t tid, const cpu_set_t *want)
{
	cpu_set_t now;
	if (sched_getaffinity(tid, sizeof(now), &now) < 0 || CPU_EQUAL(&now, want))
		return;
	struct tbuf a = { 0 }, b = { 0 };
	cpus_format(&a, want);
	cpus_format(&b, &now);
	_cleanup_free_ char *was = tb_take(&a), *is = tb_take(&b);
	log_warn("restore of pid %d: thread %d had CPU affinity %s, not all of them here: it runs on %s", pid, tid,
		 was ? was : "?", is ? is : "?");
}

int sched_apply(struct ctx *c, pid_t pid, const struct thread_image *t)
{
	const struct thread_sched *s = &t->sched;
	const struct thread_switches *w = &t->sw;
	uint64_t scratch = restore_scratch(c);
	int r;

	if (fault_hit(FAULT_ENGINE_RESTORE_SCHED))
		return err_set(-EIO, "restore of pid %d: thread %d: injected fault setting its scheduling", pid, t->tid);
	if (s->valid) {
		struct sched_attr_ cur;
		if ((r = get_attr(t->tid, &cur)) < 0)
			return err_set(r, "restore of pid %d: thread %d: sched_getattr: %s", pid, t->tid, strerror(-r));
		bool same = cur.policy == s->policy && cur.nice == s->nice && cur.priority == s->rtprio &&
			    !!(cur.flags & SCHED_FLAG_RESET_ON_FORK) == s->reset_on_fork && cur.util_min == s->util_min &&
			    cur.util_max == s->util_max;
		if (!same) {
			struct sched_attr_ a = {
				.size = sizeof(a),
				.policy = s->policy,
				.flags = (s->reset_on_fork ? SCHED_FLAG_RESET_ON_FORK : 0) | SCHED_FLAG_UTIL_CLAMP_MIN |
					 SCHED_FLAG_UTIL_CLAMP_MAX,
				.nice = s->nice,
				.priority = s->rtprio,
				.util_min = s->util_min,
				.util_max = s->util_max,
			};
			/* clamps only where they differ: a kernel without them
			 * refuses the flags (EOPNOTSUPP) */
			if (s->util_min == cur.util_min && s->util_max == cur.util_max)
				a.flags &= ~(uint64_t)(SCHED_FLAG_UTIL_CLAMP_MIN | SCHED_FLAG_UTIL_CLAMP_MAX);
			char what[128];
			snprintf(what, sizeof(what), "thread %d: sched_setattr %s nice %d priority %u%s", t->tid,
				 policy_name(s->policy), s->nice, s->rtprio,
				 s->nice < cur.nice || s->policy == SCHED_FIFO || s->policy == SCHED_RR
					 ? " (takes CAP_SYS_NICE or RLIMIT_NICE/RLIMIT_RTPRIO of the restorer)"
					 : "");
			if ((r = restore_poke(c, scratch, &a, sizeof(a))) < 0 ||
			    (r = restore_sys(c, t->tid, SYS_sched_setattr, 0, scratch, 0, 0, 0, 0, NULL, what)) < 0)
				return r;
		}
		cpu_set_t now;
		if (sched_getaffinity(t->tid, sizeof(now), &now) < 0)
			return err_set(negerrno(), "restore of pid %d: thread %d: sched_getaffinity: %m", pid, t->tid);
		if (!CPU_EQUAL(&now, &s->cpus)) {
			if ((r = restore_poke(c, scratch, &s->cpus, sizeof(s->cpus))) < 0)
				return r;
			r = restore_sys(c, t->tid, SYS_sched_setaffinity, 0, sizeof(s->cpus), scratch, 0, 0, 0, NULL,
					"sched_setaffinity");
			/* EINVAL: none of its CPUs here; it keeps the restorer's */
			if (r == -EINVAL)
				err_clear();
			else if (r < 0)
				return r;
			affinity_warn(pid, t->tid, &s->cpus);
		}
	}
	for (int i = 0; i < 3; i++) {
		if (w->spec[i] <= 0)
			continue;
		/* the strongest the thread asked for; one it cannot have here
		 * fails the restore rather than run it less protected */
		uint64_t v = w->spec[i] & PR_SPEC_FORCE_DISABLE	  ? PR_SPEC_FORCE_DISABLE
			     : w->spec[i] & PR_SPEC_DISABLE_NOEXEC ? PR_SPEC_DISABLE_NOEXEC
								   : PR_SPEC_DISABLE;
		char what[96];
		snprintf(what, sizeof(what), "thread %d: PR_SET_SPECULATION_CTRL %d 0x%x", t->tid, i, (unsigned)v);
		if ((r = restore_sys(c, t->tid, SYS_prctl, PR_SET_SPECULATION_CTRL, (uint64_t)i, v, 0, 0, 0, NULL,
				     what)) < 0)
			return r;
	}
	if (w->tsc_sigsegv &&
	    (r = restore_sys(c, t->tid, SYS_prctl, PR_SET_TSC, PR_TSC_SIGSEGV, 0, 0, 0, 0, NULL, "PR_SET_TSC")) < 0)
		return r;
	if (w->mce && (r = restore_sys(c, t->tid, SYS_prctl, PR_MCE_KILL, PR_MCE_KILL_SET,
				       w->mce == 1 ? PR_MCE_KILL_LATE : PR_MCE_KILL_EARLY, 0, 0, 0, NULL,
				       "PR_MCE_KILL")) < 0)
		return r;
	return 0;
}
