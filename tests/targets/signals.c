/*
 * Signal state: handlers with flags and masks (SIGTRAP's must never run:
 * a dump's batches end with a SIGTRAP its tracer takes), an ignored signal, an
 * alternate signal stack used by a handler, a blocked mask, a signal
 * pending on the thread and one pending on the process, and an interval
 * timer that keeps ticking.
 */
#include <signal.h>
#include <sys/time.h>

#include "target.h"

#ifndef SA_RESTORER
#define SA_RESTORER 0x04000000
#endif

static volatile sig_atomic_t ticks, usr1_on_alt, usr1_count, traps;
static char altstack[65536];

static void on_alrm(int s)
{
	ticks++;
}

static void on_usr1(int s, siginfo_t *si, void *uc)
{
	char here;
	usr1_count++;
	usr1_on_alt = &here >= altstack && &here < altstack + sizeof(altstack);
}

static void on_trap(int s)
{
	traps++;
}

static int same_action(int sig, const struct sigaction *want)
{
	struct sigaction cur;
	sigaction(sig, NULL, &cur);
	return cur.sa_handler == want->sa_handler &&
	       (cur.sa_flags & ~SA_RESTORER) == (want->sa_flags & ~SA_RESTORER) &&
	       !memcmp(&cur.sa_mask, &want->sa_mask, 8);
}

int main(int argc, char **argv)
{
	target_init(argc, argv, 0);
	struct sigaction usr1 = { 0 }, alrm = { 0 }, ign = { 0 }, trap = { 0 };
	usr1.sa_sigaction = on_usr1;
	usr1.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESTART;
	sigaddset(&usr1.sa_mask, SIGUSR2);
	sigaddset(&usr1.sa_mask, SIGWINCH);
	alrm.sa_handler = on_alrm;
	alrm.sa_flags = SA_RESTART;
	ign.sa_handler = SIG_IGN;
	sigaction(SIGUSR1, &usr1, NULL);
	sigaction(SIGALRM, &alrm, NULL);
	sigaction(SIGUSR2, &ign, NULL);
	trap.sa_handler = on_trap;
	sigaction(SIGTRAP, &trap, NULL);

	stack_t ss = { .ss_sp = altstack, .ss_size = sizeof(altstack) };
	sigaltstack(&ss, NULL);

	sigset_t block;
	sigemptyset(&block);
	sigaddset(&block, SIGTERM);
	sigaddset(&block, SIGINT);
	sigaddset(&block, SIGRTMIN + 3);
	sigprocmask(SIG_BLOCK, &block, NULL);
	raise(SIGTERM);                       /* pending on the thread */
	kill(getpid(), SIGINT);               /* pending on the process */
	union sigval sv = { .sival_int = 4242 };
	sigqueue(getpid(), SIGRTMIN + 3, sv); /* queued with a value */

	struct itimerval it = { { 0, 20000 }, { 0, 20000 } };
	setitimer(ITIMER_REAL, &it, NULL);
	while (ticks < 3)
		pause();
	target_ready();
	target_wait_restored();

	int t0 = ticks;
	for (int k = 0; ticks < t0 + 3; k++) {
		if (k > 2000)
			target_verdict(0, "the interval timer stopped ticking");
		struct timespec ts = { 0, 1000000 };
		nanosleep(&ts, NULL);
	}
	if (!same_action(SIGUSR1, &usr1) || !same_action(SIGALRM, &alrm) || !same_action(SIGUSR2, &ign) ||
	    !same_action(SIGTRAP, &trap))
		target_verdict(0, "a sigaction changed");
	if (traps)
		target_verdict(0, "SIGTRAP reached its handler %d times", (int)traps);
	stack_t cur;
	sigaltstack(NULL, &cur);
	if (cur.ss_sp != altstack || cur.ss_size != sizeof(altstack) || cur.ss_flags)
		target_verdict(0, "sigaltstack changed");
	sigset_t mask, pend;
	sigprocmask(SIG_BLOCK, NULL, &mask);
	if (!sigismember(&mask, SIGTERM) || !sigismember(&mask, SIGINT) || sigismember(&mask, SIGUSR1))
		target_verdict(0, "signal mask changed");
	sigpending(&pend);
	if (!sigismember(&pend, SIGTERM) || !sigismember(&pend, SIGINT) || !sigismember(&pend, SIGRTMIN + 3))
		target_verdict(0, "pending signals lost");
	siginfo_t si;
	sigset_t rt;
	sigemptyset(&rt);
	sigaddset(&rt, SIGRTMIN + 3);
	struct timespec zero = { 0, 0 };
	if (sigtimedwait(&rt, &si, &zero) != SIGRTMIN + 3 || si.si_value.sival_int != 4242)
		target_verdict(0, "queued signal lost its value");
	raise(SIGUSR1);
	if (usr1_count != 1 || !usr1_on_alt)
		target_verdict(0, "SIGUSR1 handler did not run on the alternate stack");
	target_pass();
}
