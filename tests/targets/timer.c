/*
 * Holds a posix timer (timer_create), which the engine refuses: the dump
 * must fail naming it and leave this process running. Never restored.
 */
#include <signal.h>

#include "target.h"

int main(int argc, char **argv)
{
	target_init(argc, argv, 0);
	timer_t t;
	struct sigevent ev = { .sigev_notify = SIGEV_NONE };
	if (timer_create(CLOCK_MONOTONIC, &ev, &t) < 0)
		target_verdict(0, "timer_create: %s", strerror(errno));
	target_ready();
	target_wait_restored();
	target_pass();
}
