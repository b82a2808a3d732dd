/*
 * Per-process and per-thread settings that only the process itself reads
 * (docs/COVERAGE.md, "Process attributes"): oom_score_adj 321 (raised: no
 * privilege needed), the child-subreaper flag, THP disabled, membarrier
 * registered for private and global expedited barriers, memory-deny-
 * write-execute (PR_MDWE_REFUSE_EXEC_GAIN); the main thread
 * with timer slack 123456 ns and parent-death signal SIGURG, a second
 * thread with 7777 ns and SIGWINCH; loginuid 4242 where it was unset (both ignored by default: a signal
 * sent when a restored process's parent goes must not end the test for
 * the wrong reason). After restore each thread checks its own, the main
 * thread the process's, and that a private expedited barrier works (one
 * fails with EPERM without the registration). A child (the tree path)
 * takes supplementary groups 99 and 4242, timer slack 4444 and
 * oom_score_adj 456 and checks them after the restore, telling the
 * parent by its exit status.
 */
#include <linux/membarrier.h>
#include <grp.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>

#include <limits.h>
#include <signal.h>

#include "target.h"

#define SLACK_MAIN 123456
#define SLACK_SECOND 7777
#define OOM 321

static volatile int stage;
static char second_fail[256];

/* The calling thread's slack and parent-death signal against the wanted
 * ones; "" or what differs. */
static const char *thread_check(long slack, int sig, char *buf, size_t len)
{
	long s = prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0);
	int d = -1;
	if (prctl(PR_GET_PDEATHSIG, &d, 0, 0, 0) < 0)
		d = -1;
	if (s != slack || d != sig)
		snprintf(buf, len, "timer slack %ld (want %ld), parent-death signal %d (want %d)", s, slack, d, sig);
	else
		buf[0] = 0;
	return buf;
}

static void *second(void *arg)
{
	(void)arg;
	if (prctl(PR_SET_TIMERSLACK, SLACK_SECOND, 0, 0, 0) < 0 || prctl(PR_SET_PDEATHSIG, SIGWINCH, 0, 0, 0) < 0)
		snprintf(second_fail, sizeof(second_fail), "second thread: prctl: %s", strerror(errno));
	__atomic_store_n(&stage, 1, __ATOMIC_SEQ_CST);
	while (__atomic_load_n(&stage, __ATOMIC_SEQ_CST) != 2) {
		struct timespec ts = { 0, 2000000 };
		nanosleep(&ts, NULL);
	}
	if (!second_fail[0])
		thread_check(SLACK_SECOND, SIGWINCH, second_fail, sizeof(second_fail));
	__atomic_store_n(&stage, 3, __ATOMIC_SEQ_CST);
	return NULL;
}

static int oom_now(void)
{
	char b[32] = "";
	int fd = open("/proc/self/oom_score_adj", O_RDONLY | O_CLOEXEC);
	if (fd < 0 || read(fd, b, sizeof(b) - 1) < 0)
		return INT_MIN;
	close(fd);
	return atoi(b);
}

/* The child: 0, or which check failed. */
static int child(void)
{
	gid_t want[2] = { 99, 4242 }, got[8];
	if (syscall(SYS_setgroups, 2, want) < 0 || prctl(PR_SET_TIMERSLACK, 4444, 0, 0, 0) < 0)
		return 10;
	int fd = open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
	if (fd < 0 || write(fd, "456", 3) != 3)
		return 11;
	close(fd);
	target_wait_restored();
	int n = getgroups(8, got);
	if (n != 2 || got[0] != 99 || got[1] != 4242)
		return 12;
	if (prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0) != 4444)
		return 13;
	if (oom_now() != 456)
		return 14;
	return 0;
}

int main(int argc, char **argv)
{
	char buf[256];
	target_init(argc, argv, 0);
	pid_t kid = fork();
	if (kid < 0)
		target_verdict(0, "fork: %s", strerror(errno));
	if (kid == 0)
		_exit(child());

	int fd = open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
	if (fd < 0 || write(fd, "321", 3) != 3)
		target_verdict(0, "setting oom_score_adj: %s", strerror(errno));
	close(fd);
	/* free while unset (as login does); a set one stays as it is */
	char lu[32] = "";
	int lfd = open("/proc/self/loginuid", O_RDWR | O_CLOEXEC);
	if (lfd >= 0 && read(lfd, lu, sizeof(lu) - 1) > 0 && !strcmp(lu, "4294967295") &&
	    pwrite(lfd, "4242", 4, 0) != 4)
		target_verdict(0, "setting loginuid: %s", strerror(errno));
	if (lfd >= 0)
		close(lfd);
	char want_lu[32] = "";
	int rfd = open("/proc/self/loginuid", O_RDONLY | O_CLOEXEC);
	if (rfd >= 0 && read(rfd, want_lu, sizeof(want_lu) - 1) < 0)
		want_lu[0] = 0;
	if (rfd >= 0)
		close(rfd);
	if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) < 0 || prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0) < 0 ||
	    prctl(PR_SET_TIMERSLACK, SLACK_MAIN, 0, 0, 0) < 0 || prctl(PR_SET_PDEATHSIG, SIGURG, 0, 0, 0) < 0)
		target_verdict(0, "prctl: %s", strerror(errno));
	/* memory-deny-write-execute (Linux 6.3+), after the fork: the child
	 * would inherit it */
	if (prctl(65 /* PR_SET_MDWE */, 1 /* PR_MDWE_REFUSE_EXEC_GAIN */, 0, 0, 0) < 0)
		target_verdict(0, "PR_SET_MDWE: %s", strerror(errno));
	if (syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) < 0 ||
	    syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED, 0, 0) < 0)
		target_verdict(0, "membarrier register: %s", strerror(errno));
	pthread_t th;
	if (pthread_create(&th, NULL, second, NULL))
		target_verdict(0, "pthread_create");
	while (__atomic_load_n(&stage, __ATOMIC_SEQ_CST) != 1) {
		struct timespec ts = { 0, 1000000 };
		nanosleep(&ts, NULL);
	}
	if (second_fail[0])
		target_verdict(0, "%s", second_fail);
	/* the child's settings are in place before the dump */
	for (int i = 0; i < 10000; i++) {
		char p[64], t[32] = "";
		snprintf(p, sizeof(p), "/proc/%d/oom_score_adj", kid);
		int f = open(p, O_RDONLY | O_CLOEXEC);
		if (f >= 0 && read(f, t, sizeof(t) - 1) > 0 && atoi(t) == 456) {
			close(f);
			break;
		}
		if (f >= 0)
			close(f);
		struct timespec ts = { 0, 1000000 };
		nanosleep(&ts, NULL);
	}
	target_ready();
	target_wait_restored();

	int st;
	if (waitpid(kid, &st, 0) != kid || !WIFEXITED(st) || WEXITSTATUS(st))
		target_verdict(0, "the child's check failed: status 0x%x (10-11: setup, 12 groups, 13 timer slack, 14 oom_score_adj)", st);
	__atomic_store_n(&stage, 2, __ATOMIC_SEQ_CST);
	pthread_join(th, NULL);
	if (second_fail[0])
		target_verdict(0, "second thread: %s", second_fail);
	if (thread_check(SLACK_MAIN, SIGURG, buf, sizeof(buf))[0])
		target_verdict(0, "main thread: %s", buf);
	int oom = oom_now();
	if (oom != OOM)
		target_verdict(0, "oom_score_adj %d, want %d", oom, OOM);
	char now_lu[32] = "";
	rfd = open("/proc/self/loginuid", O_RDONLY | O_CLOEXEC);
	if (rfd >= 0 && read(rfd, now_lu, sizeof(now_lu) - 1) < 0)
		now_lu[0] = 0;
	if (rfd >= 0)
		close(rfd);
	if (strcmp(now_lu, want_lu))
		target_verdict(0, "loginuid %s, want %s", now_lu, want_lu);
	if (prctl(66 /* PR_GET_MDWE */, 0, 0, 0, 0) != 1)
		target_verdict(0, "memory-deny-write-execute %d, want 1", prctl(66, 0, 0, 0, 0));
	void *wx = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (wx == MAP_FAILED || mprotect(wx, 4096, PROT_READ | PROT_EXEC) == 0)
		target_verdict(0, "a writable area became executable: memory-deny-write-execute is not in force");
	int sub = -1;
	if (prctl(PR_GET_CHILD_SUBREAPER, &sub, 0, 0, 0) < 0 || sub != 1)
		target_verdict(0, "child subreaper %d, want 1", sub);
	int thp = prctl(PR_GET_THP_DISABLE, 0, 0, 0, 0);
	if (thp != 1)
		target_verdict(0, "THP disable %d, want 1", thp);
	long reg = syscall(SYS_membarrier, 1 << 9 /* MEMBARRIER_CMD_GET_REGISTRATIONS */, 0, 0);
	long want = MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED | MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED;
	if (reg >= 0 && (reg & want) != want)
		target_verdict(0, "membarrier registrations 0x%lx, want 0x%lx", reg, want);
	if (syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) < 0)
		target_verdict(0, "private expedited membarrier: %s", strerror(errno));
	target_pass();
}
