/*
 * Holds a posix timer on the thread's own CPU clock, which the engine
 * refuses (a restored thread's CPU clock starts again at zero and the
 * kernel takes no such timer for another thread): the dump must fail
 * naming it and leave this process running. Never restored.
 */
#include <signal.h>

#include "target.h"

int main(int argc, char **argv)
{
	target_init(argc, argv, 0);
	timer_t t;
	struct sigevent ev = { .sigev_notify = SIGEV_NONE };
	if (timer_create(CLOCK_THREAD_CPUTIME_ID, &ev, &t) < 0)
		target_verdict(0, "timer_create: %s", strerror(errno));
	target_ready();
	target_wait_restored();
	target_pass();
}
