/*
 * Holds a posix timer that signals a thread other than the main one,
 * which the engine refuses (it makes timers again before the other
 * threads exist): the dump must fail naming it and leave this process
 * running. Never restored.
 */
#include <pthread.h>
#include <signal.h>

#include "target.h"

static volatile pid_t other;

static void *idle(void *arg)
{
	other = (pid_t)syscall(SYS_gettid);
	for (;;)
		pause();
	return NULL;
}

int main(int argc, char **argv)
{
	target_init(argc, argv, 0);
	pthread_t th;
	if (pthread_create(&th, NULL, idle, NULL) != 0)
		target_verdict(0, "pthread_create failed");
	while (!other)
		usleep(1000);
	timer_t t;
	struct sigevent ev = { .sigev_notify = SIGEV_THREAD_ID, .sigev_signo = SIGURG };
	ev._sigev_un._tid = other;
	if (timer_create(CLOCK_MONOTONIC, &ev, &t) < 0)
		target_verdict(0, "timer_create: %s", strerror(errno));
	target_ready();
	target_wait_restored();
	target_pass();
}
