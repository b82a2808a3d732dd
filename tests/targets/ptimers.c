/*
 * POSIX timers (timer_create) of every kind a restore makes again: a
 * periodic one on CLOCK_MONOTONIC signalling the process with a value, a
 * periodic one on CLOCK_REALTIME signalling the main thread, a periodic
 * one on CLOCK_BOOTTIME signalling a second thread (made again once that
 * thread exists), a one-shot
 * CLOCK_BOOTTIME one that notifies nobody and has 1000 s to run, and a
 * gap in the IDs (one timer deleted). After restore: the same IDs, the
 * deleted one still absent, the signals carry their timer's value and ID,
 * reach their thread and keep coming, the one-shot has less than 1000 s
 * left but not much less, and a new timer can still be made.
 */
#include <pthread.h>
#include <signal.h>

#include "target.h"

static volatile sig_atomic_t ticks1, ticks2, ticks3, bad;
static volatile pid_t helper;
static timer_t t1, t2, t3, t5, gone;

static void on_tick(int sig, siginfo_t *si, void *uc)
{
	if (si->si_code != SI_TIMER)
		bad = 1;
	else if (sig == SIGUSR1 && si->si_value.sival_int == 1234 && si->si_timerid == (int)(intptr_t)t1)
		ticks1++;
	else if (sig == SIGUSR2 && si->si_value.sival_int == 99 && si->si_timerid == (int)(intptr_t)t2)
		ticks2++;
	else if (sig == SIGRTMIN + 2 && si->si_value.sival_int == 7 && si->si_timerid == (int)(intptr_t)t5 &&
		 (pid_t)syscall(SYS_gettid) == helper)
		ticks3++;
	else
		bad = 2;
}

static void *helper_main(void *arg)
{
	sigset_t s;
	sigemptyset(&s);
	sigaddset(&s, SIGUSR1);
	pthread_sigmask(SIG_BLOCK, &s, NULL); /* the process's ticks go to main */
	helper = (pid_t)syscall(SYS_gettid);
	for (;;)
		pause();
	return NULL;
}

static void wait_ticks(int n1, int n2, int n3, const char *when)
{
	for (int k = 0; ticks1 < n1 || ticks2 < n2 || ticks3 < n3; k++) {
		if (k > 3000)
			target_verdict(0, "%s: the timers stopped (%d of %d, %d of %d, %d of %d ticks)", when,
				       (int)ticks1, n1, (int)ticks2, n2, (int)ticks3, n3);
		struct timespec ts = { 0, 1000000 };
		nanosleep(&ts, NULL);
	}
}

int main(int argc, char **argv)
{
	target_init(argc, argv, 0);
	struct sigaction sa = { .sa_sigaction = on_tick, .sa_flags = SA_SIGINFO | SA_RESTART };
	sigaction(SIGUSR1, &sa, NULL);
	sigaction(SIGUSR2, &sa, NULL);
	sigaction(SIGRTMIN + 2, &sa, NULL);
	pthread_t th;
	if (pthread_create(&th, NULL, helper_main, NULL) != 0)
		target_verdict(0, "pthread_create failed");
	while (!helper)
		usleep(1000);

	struct sigevent e1 = { .sigev_notify = SIGEV_SIGNAL, .sigev_signo = SIGUSR1 };
	e1.sigev_value.sival_int = 1234;
	struct sigevent e2 = { .sigev_notify = SIGEV_THREAD_ID, .sigev_signo = SIGUSR2 };
	e2.sigev_value.sival_int = 99;
	e2._sigev_un._tid = (pid_t)syscall(SYS_gettid);
	struct sigevent e3 = { .sigev_notify = SIGEV_NONE };
	struct sigevent e5 = { .sigev_notify = SIGEV_THREAD_ID, .sigev_signo = SIGRTMIN + 2 };
	e5.sigev_value.sival_int = 7;
	e5._sigev_un._tid = helper;
	if (timer_create(CLOCK_MONOTONIC, &e1, &t1) < 0 || timer_create(CLOCK_REALTIME, &e3, &gone) < 0 ||
	    timer_create(CLOCK_REALTIME, &e2, &t2) < 0 || timer_create(CLOCK_BOOTTIME, &e3, &t3) < 0 ||
	    timer_create(CLOCK_BOOTTIME, &e5, &t5) < 0)
		target_verdict(0, "timer_create: %s", strerror(errno));
	timer_delete(gone);
	struct itimerspec p1 = { { 0, 10000000 }, { 0, 10000000 } }, p2 = { { 0, 15000000 }, { 0, 15000000 } };
	struct itimerspec once = { { 0, 0 }, { 1000, 0 } };
	timer_settime(t1, 0, &p1, NULL);
	timer_settime(t2, 0, &p2, NULL);
	timer_settime(t3, 0, &once, NULL);
	struct itimerspec p5 = { { 0, 12000000 }, { 0, 12000000 } };
	timer_settime(t5, 0, &p5, NULL);
	wait_ticks(3, 3, 3, "before");
	target_ready();
	target_wait_restored();

	int n1 = ticks1, n2 = ticks2, n3 = ticks3;
	wait_ticks(n1 + 3, n2 + 3, n3 + 3, "after restore");
	if (bad)
		target_verdict(0, "a timer signal came with the wrong code, value or timer ID (%d)", (int)bad);
	struct itimerspec left;
	if (timer_gettime(t3, &left) < 0)
		target_verdict(0, "timer_gettime of the one-shot timer: %s", strerror(errno));
	if (left.it_value.tv_sec >= 1000 || left.it_value.tv_sec < 900 || left.it_interval.tv_sec)
		target_verdict(0, "the one-shot timer has %ld s left", (long)left.it_value.tv_sec);
	if (timer_gettime(t1, &left) < 0 || left.it_interval.tv_nsec != 10000000)
		target_verdict(0, "the periodic timer lost its interval");
	if (timer_gettime(gone, &left) == 0 || errno != EINVAL)
		target_verdict(0, "the deleted timer exists again");
	timer_t t4;
	if (timer_create(CLOCK_MONOTONIC, &e3, &t4) < 0)
		target_verdict(0, "a new timer: %s", strerror(errno));
	target_pass();
}
