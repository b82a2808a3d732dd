/*
 * The main thread is inside nanosleep() (restarted by the kernel through
 * restart_syscall) and a second thread inside clock_nanosleep() with an
 * absolute deadline (-ERESTARTNOHAND) when the dump comes: after restore
 * both sleeps complete with 0, not EINTR, and not before their time.
 */
#include <pthread.h>

#include "target.h"

static struct timespec abs_deadline;
static int abs_ret = -1;

static double mono(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

static void *abs_sleeper(void *arg)
{
	abs_ret = clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &abs_deadline, NULL);
	return NULL;
}

int main(int argc, char **argv)
{
	target_init(argc, argv, 0);
	pthread_t t;
	clock_gettime(CLOCK_MONOTONIC, &abs_deadline);
	abs_deadline.tv_sec += 2;
	pthread_create(&t, NULL, abs_sleeper, NULL);
	double t0 = mono();
	struct timespec d = { 1, 500000000 }, rem = { 0, 0 };
	target_ready();
	int r = nanosleep(&d, &rem);
	int e = errno;
	double slept = mono() - t0;
	if (r != 0)
		target_verdict(0, "nanosleep returned %d (%s)", r, strerror(e));
	if (slept < 1.5)
		target_verdict(0, "nanosleep returned after %.3f s of 1.5", slept);
	pthread_join(t, NULL);
	if (abs_ret != 0)
		target_verdict(0, "clock_nanosleep returned %d", abs_ret);
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	if (now.tv_sec < abs_deadline.tv_sec)
		target_verdict(0, "clock_nanosleep woke up early");
	target_wait_restored();
	target_pass();
}
