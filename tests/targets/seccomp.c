/*
 * Seccomp filters in two threads: with no_new_privs set, the main thread
 * installs one filter for both (TSYNC) that makes getppid() fail with
 * EPERM; the second thread then adds one of its own on top that makes it
 * fail with EACCES (the newest filter wins among equal actions, so the
 * order of the two is visible). After restore each thread checks that
 * getppid() still fails as it did, that calls no filter names work, and
 * that /proc shows the same mode, filter count and no_new_privs.
 */
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <stddef.h>
#include <sys/prctl.h>

#include "target.h"

static volatile int stage; /* 1: the thread's filter is in; 2: restored, check */
static char thread_fail[512];
static pid_t thread_tid;

static long sc_filter(unsigned flags, int err)
{
	struct sock_filter f[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_getppid, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | (err & SECCOMP_RET_DATA)),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog p = { sizeof(f) / sizeof(f[0]), f };
	return syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags, &p);
}

/* "" when tid's status says Seccomp: 2, Seccomp_filters: n, NoNewPrivs: 1 */
static const char *proc_check(pid_t tid, int n)
{
	static char why[256];
	char path[64], buf[4096], want[64];
	snprintf(path, sizeof(path), "/proc/self/task/%d/status", tid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t len = fd < 0 ? -1 : read(fd, buf, sizeof(buf) - 1);
	if (fd >= 0)
		close(fd);
	if (len <= 0)
		return "cannot read status";
	buf[len] = 0;
	snprintf(want, sizeof(want), "\nSeccomp_filters:\t%d\n", n);
	if (!strstr(buf, "\nSeccomp:\t2\n") || !strstr(buf, want) || !strstr(buf, "\nNoNewPrivs:\t1\n")) {
		const char *s = strstr(buf, "\nSeccomp");
		snprintf(why, sizeof(why), "thread %d: want 2 and %d filters and no_new_privs, status says %.60s", tid,
			 n, s ? s + 1 : "no Seccomp line");
		return why;
	}
	return "";
}

/* "" when getppid() fails with err and getpid()/gettid() work */
static const char *calls_check(int err)
{
	static char why[128];
	errno = 0;
	long r = syscall(SYS_getppid);
	if (r != -1 || errno != err) {
		snprintf(why, sizeof(why), "getppid() gave %ld errno %d, want -1 errno %d", r, errno, err);
		return why;
	}
	if (syscall(SYS_getpid) <= 0 || syscall(SYS_gettid) <= 0 || getuid() != 0)
		return "an unfiltered call failed";
	return "";
}

static void *second(void *arg)
{
	(void)arg;
	thread_tid = (pid_t)syscall(SYS_gettid);
	while (stage < 1)
		usleep(1000);
	if (sc_filter(0, EACCES) < 0)
		snprintf(thread_fail, sizeof(thread_fail), "second filter: %s", strerror(errno));
	stage = 2;
	while (stage < 3) {
		struct timespec ts = { 0, 2000000 };
		nanosleep(&ts, NULL);
	}
	const char *w = calls_check(EACCES);
	if (!*w)
		w = proc_check(thread_tid, 2);
	if (*w && !thread_fail[0])
		snprintf(thread_fail, sizeof(thread_fail), "second thread: %s", w);
	return NULL;
}

int main(int argc, char **argv)
{
	target_init(argc, argv, 0);
	pthread_t t;
	pthread_create(&t, NULL, second, NULL);
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		target_verdict(0, "PR_SET_NO_NEW_PRIVS: %s", strerror(errno));
	/* every thread shares it: the second had no no_new_privs of its own,
	 * TSYNC gives it ours */
	if (sc_filter(SECCOMP_FILTER_FLAG_TSYNC, EPERM) != 0)
		target_verdict(0, "TSYNC filter: %s", strerror(errno));
	stage = 1;
	while (stage < 2)
		usleep(1000);
	if (thread_fail[0])
		target_verdict(0, "%s", thread_fail);
	/* the setup is what the checks after restore expect */
	const char *w = calls_check(EPERM);
	if (!*w)
		w = proc_check((pid_t)syscall(SYS_gettid), 1);
	if (!*w)
		w = proc_check(thread_tid, 2);
	if (*w)
		target_verdict(0, "before the dump: %s", w);
	target_ready();
	target_wait_restored();
	w = calls_check(EPERM);
	if (!*w)
		w = proc_check((pid_t)syscall(SYS_gettid), 1);
	if (*w)
		target_verdict(0, "main thread: %s", w);
	stage = 3;
	pthread_join(t, NULL);
	if (thread_fail[0])
		target_verdict(0, "%s", thread_fail);
	target_pass();
}
