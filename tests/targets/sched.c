/*
 * Each thread's scheduling and prctl switches (docs/COVERAGE.md, "Process
 * attributes"), set differently in three threads:
 *   main:   SCHED_OTHER nice 5 with reset-on-fork, bound to CPU 0, the
 *           store-bypass speculation disabled where this kernel lets a
 *           process choose (PR_SPEC_PRCTL), KSM for the whole process
 *           (PR_SET_MEMORY_MERGE) where it has KSM;
 *   second: SCHED_BATCH nice 3, bound to the last CPU, utilization
 *           clamped to 128-512 where the kernel has clamping, RDTSC
 *           faulting (PR_SET_TSC: the thread reads no clock after it),
 *           machine-check kill early;
 *   third:  SCHED_FIFO priority 5 (SCHED_IDLE where real-time is not
 *           allowed here).
 * After restore each thread checks its own with sched_getattr,
 * sched_getaffinity and prctl, the main thread the process's.
 */
#include <pthread.h>
#include <sched.h>
#include <sys/prctl.h>

#include "target.h"

#ifndef PR_SET_MEMORY_MERGE
#define PR_SET_MEMORY_MERGE 67
#define PR_GET_MEMORY_MERGE 68
#endif
#define FLAG_RESET_ON_FORK 0x01
#define FLAG_UTIL_MIN 0x20
#define FLAG_UTIL_MAX 0x40

struct attr {
	uint32_t size, policy;
	uint64_t flags;
	int32_t nice;
	uint32_t priority;
	uint64_t runtime, deadline, period;
	uint32_t util_min, util_max;
};

struct want {
	struct attr a;
	int cpu;
	bool tsc, mce, spec;
	char fail[256];
};

static struct want w[3];
static volatile int stage;
static int last_cpu;
static bool have_clamp, have_ksm;

static int set_attr(const struct attr *a)
{
	struct attr x = *a;
	x.size = sizeof(x);
	return (int)syscall(SYS_sched_setattr, 0, &x, 0);
}

static void bind(int cpu, struct want *me)
{
	cpu_set_t s;
	CPU_ZERO(&s);
	CPU_SET(cpu, &s);
	if (sched_setaffinity(0, sizeof(s), &s) < 0)
		snprintf(me->fail, sizeof(me->fail), "sched_setaffinity %d: %s", cpu, strerror(errno));
	me->cpu = cpu;
}

/* The calling thread's settings against me; "" or what differs. */
static void check(struct want *me, const char *who)
{
	struct attr a = { 0 };
	if (syscall(SYS_sched_getattr, 0, &a, sizeof(a), 0) < 0) {
		snprintf(me->fail, sizeof(me->fail), "%s: sched_getattr: %s", who, strerror(errno));
		return;
	}
	if (a.policy != me->a.policy || a.nice != me->a.nice || a.priority != me->a.priority ||
	    (a.flags & FLAG_RESET_ON_FORK) != (me->a.flags & FLAG_RESET_ON_FORK)) {
		snprintf(me->fail, sizeof(me->fail), "%s: policy %u nice %d priority %u flags %#llx (want %u %d %u %#llx)",
			 who, a.policy, a.nice, a.priority, (unsigned long long)a.flags, me->a.policy, me->a.nice,
			 me->a.priority, (unsigned long long)me->a.flags);
		return;
	}
	if ((me->a.flags & FLAG_UTIL_MIN) && (a.util_min != me->a.util_min || a.util_max != me->a.util_max)) {
		snprintf(me->fail, sizeof(me->fail), "%s: utilization clamp %u-%u (want %u-%u)", who, a.util_min,
			 a.util_max, me->a.util_min, me->a.util_max);
		return;
	}
	cpu_set_t s;
	if (me->cpu >= 0 &&
	    (sched_getaffinity(0, sizeof(s), &s) < 0 || CPU_COUNT(&s) != 1 || !CPU_ISSET(me->cpu, &s))) {
		snprintf(me->fail, sizeof(me->fail), "%s: affinity %d CPUs (want only CPU %d)", who, CPU_COUNT(&s),
			 me->cpu);
		return;
	}
	int tsc = 0;
	if (me->tsc && (prctl(PR_GET_TSC, &tsc, 0, 0, 0) < 0 || tsc != PR_TSC_SIGSEGV)) {
		snprintf(me->fail, sizeof(me->fail), "%s: TSC mode %d (want SIGSEGV)", who, tsc);
		return;
	}
	if (me->mce && prctl(PR_MCE_KILL_GET, 0, 0, 0, 0) != PR_MCE_KILL_EARLY) {
		snprintf(me->fail, sizeof(me->fail), "%s: machine-check kill policy not early", who);
		return;
	}
	if (me->spec) {
		int v = prctl(PR_GET_SPECULATION_CTRL, PR_SPEC_STORE_BYPASS, 0, 0, 0);
		if (v < 0 || !(v & PR_SPEC_DISABLE))
			snprintf(me->fail, sizeof(me->fail), "%s: store bypass speculation %#x (want disabled)", who, v);
	}
}

static void wait_stage(int s)
{
	while (__atomic_load_n(&stage, __ATOMIC_SEQ_CST) < s) {
		struct timespec ts = { 0, 2000000 };
		nanosleep(&ts, NULL);
	}
}

static void *second(void *arg)
{
	struct want *me = &w[1];
	(void)arg;
	me->a = (struct attr){ .policy = SCHED_BATCH, .nice = 3 };
	if (set_attr(&me->a) < 0)
		snprintf(me->fail, sizeof(me->fail), "second: SCHED_BATCH: %s", strerror(errno));
	struct attr c = me->a;
	c.flags = FLAG_UTIL_MIN | FLAG_UTIL_MAX;
	c.util_min = 128;
	c.util_max = 512;
	if (set_attr(&c) == 0) {
		me->a = c;
		have_clamp = true;
	}
	bind(last_cpu, me);
	if (prctl(PR_SET_TSC, PR_TSC_SIGSEGV, 0, 0, 0) < 0 || prctl(PR_MCE_KILL, PR_MCE_KILL_SET, PR_MCE_KILL_EARLY, 0, 0) < 0)
		snprintf(me->fail, sizeof(me->fail), "second: prctl: %s", strerror(errno));
	me->tsc = me->mce = true;
	__atomic_fetch_add(&stage, 1, __ATOMIC_SEQ_CST);
	wait_stage(10);
	if (!me->fail[0])
		check(me, "second thread");
	__atomic_fetch_add(&stage, 1, __ATOMIC_SEQ_CST);
	return NULL;
}

static void *third(void *arg)
{
	struct want *me = &w[2];
	(void)arg;
	me->cpu = -1;
	me->a = (struct attr){ .policy = SCHED_FIFO, .priority = 5 };
	if (set_attr(&me->a) < 0) {
		me->a = (struct attr){ .policy = SCHED_IDLE };
		if (set_attr(&me->a) < 0)
			snprintf(me->fail, sizeof(me->fail), "third: SCHED_IDLE: %s", strerror(errno));
	}
	__atomic_fetch_add(&stage, 1, __ATOMIC_SEQ_CST);
	wait_stage(10);
	if (!me->fail[0])
		check(me, "third thread");
	__atomic_fetch_add(&stage, 1, __ATOMIC_SEQ_CST);
	return NULL;
}

int main(int argc, char **argv)
{
	target_init(argc, argv, 0);
	last_cpu = (int)sysconf(_SC_NPROCESSORS_ONLN) - 1;
	struct want *me = &w[0];
	me->a = (struct attr){ .policy = SCHED_OTHER, .nice = 5, .flags = FLAG_RESET_ON_FORK };
	if (set_attr(&me->a) < 0)
		target_verdict(0, "main: nice 5 with reset-on-fork: %s", strerror(errno));
	bind(0, me);
	me->spec = prctl(PR_SET_SPECULATION_CTRL, PR_SPEC_STORE_BYPASS, PR_SPEC_DISABLE, 0, 0) == 0;
	have_ksm = prctl(PR_SET_MEMORY_MERGE, 1, 0, 0, 0) == 0;
	pthread_t t2, t3;
	if (pthread_create(&t2, NULL, second, NULL) || pthread_create(&t3, NULL, third, NULL))
		target_verdict(0, "pthread_create");
	wait_stage(2);
	for (int i = 0; i < 3; i++)
		if (w[i].fail[0])
			target_verdict(0, "before: %s", w[i].fail);
	target_ready();
	target_wait_restored();
	__atomic_store_n(&stage, 10, __ATOMIC_SEQ_CST);
	check(me, "main thread");
	wait_stage(12);
	pthread_join(t2, NULL);
	pthread_join(t3, NULL);
	for (int i = 0; i < 3; i++)
		if (w[i].fail[0])
			target_verdict(0, "%s", w[i].fail);
	if (have_ksm && prctl(PR_GET_MEMORY_MERGE, 0, 0, 0, 0) != 1)
		target_verdict(0, "KSM for the whole process is off");
	target_verdict(1, "kept: nice, batch, %s, reset-on-fork, affinity, TSC, MCE%s%s%s",
		       w[2].a.policy == SCHED_FIFO ? "fifo" : "idle", have_clamp ? ", clamps" : "",
		       me->spec ? ", speculation" : "", have_ksm ? ", KSM" : "");
}
