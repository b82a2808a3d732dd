/*
 * eventfd (semaphore and plain, a count above 32 bits), timerfd (armed with
 * an interval, and one expired with an unread expiration), signalfd (a
 * mask with a real-time signal), and an epoll instance watching some of
 * them and a pipe. After restore: counts, time left, mask, and the events
 * epoll reports with their data.
 */
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>

#include "target.h"

#define CHECK(c) do { if (!(c)) target_verdict(0, "line %d: %s", __LINE__, #c); } while (0)

/* Moves fd to number n, keeping its close-on-exec flag. */
static void at(int fd, int n)
{
	if (fd < 0 || dup3(fd, n, fcntl(fd, F_GETFD) & FD_CLOEXEC ? O_CLOEXEC : 0) < 0)
		target_verdict(0, "setting up fd %d: %s", n, strerror(errno));
	close(fd);
}

int main(int argc, char **argv)
{
	target_init(argc, argv, 0);
	uint64_t v = 0x100000005ull;
	struct itimerspec its = { .it_value = { 300, 0 }, .it_interval = { 5, 0 } };
	struct itimerspec once = { .it_value = { 0, 1000000 } };
	struct epoll_event evs[8], ev;
	sigset_t set;
	int p[2];

	at(eventfd(3, EFD_SEMAPHORE | EFD_CLOEXEC), 40);
	at(eventfd(0, EFD_NONBLOCK), 41);
	if (write(41, &v, 8) != 8)
		target_verdict(0, "eventfd write");
	at(timerfd_create(CLOCK_MONOTONIC, 0), 42);
	timerfd_settime(42, 0, &its, NULL);
	at(timerfd_create(CLOCK_BOOTTIME, TFD_NONBLOCK), 43);
	timerfd_settime(43, 0, &once, NULL);
	sigemptyset(&set);
	sigaddset(&set, SIGUSR2);
	sigaddset(&set, SIGRTMIN + 3);
	at(signalfd(-1, &set, SFD_NONBLOCK), 44);
	if (pipe(p) < 0)
		target_verdict(0, "pipe");
	at(p[0], 45);
	at(p[1], 46);
	if (write(46, "e", 1) != 1)
		target_verdict(0, "pipe write");
	at(epoll_create1(EPOLL_CLOEXEC), 47);
	ev = (struct epoll_event){ .events = EPOLLIN, .data.u64 = 0xfeed0040 };
	epoll_ctl(47, EPOLL_CTL_ADD, 40, &ev);
	ev = (struct epoll_event){ .events = EPOLLIN | EPOLLET, .data.u64 = 0xfeed0045 };
	epoll_ctl(47, EPOLL_CTL_ADD, 45, &ev);
	ev = (struct epoll_event){ .events = EPOLLIN, .data.u64 = 0xfeed0042 };
	epoll_ctl(47, EPOLL_CTL_ADD, 42, &ev); /* not ready */
	usleep(20000); /* timer 43 expires */

	target_ready();
	target_wait_restored();

	int n = epoll_wait(47, evs, 8, 0), seen = 0;
	for (int i = 0; i < n; i++)
		seen |= evs[i].data.u64 == 0xfeed0040 ? 1 : evs[i].data.u64 == 0xfeed0045 ? 2 : 4;
	CHECK(n == 2 && seen == 3);
	CHECK(fcntl(47, F_GETFD) == FD_CLOEXEC && fcntl(40, F_GETFD) == FD_CLOEXEC);
	CHECK(read(40, &v, 8) == 8 && v == 1 && read(40, &v, 8) == 8 && v == 1);
	CHECK(read(41, &v, 8) == 8 && v == 0x100000005ull && read(41, &v, 8) < 0 && errno == EAGAIN);
	CHECK(timerfd_gettime(42, &its) == 0 && its.it_value.tv_sec > 0 && its.it_value.tv_sec < 300);
	CHECK(its.it_interval.tv_sec == 5 && its.it_interval.tv_nsec == 0);
	CHECK(read(43, &v, 8) == 8 && v == 1 && read(43, &v, 8) < 0 && errno == EAGAIN);
	CHECK(fcntl(44, F_GETFL) & O_NONBLOCK);
	sigprocmask(SIG_BLOCK, &set, NULL);
	raise(SIGRTMIN + 3);
	struct signalfd_siginfo si;
	CHECK(read(44, &si, sizeof(si)) == sizeof(si) && (int)si.ssi_signo == SIGRTMIN + 3);
	raise(SIGUSR2);
	CHECK(read(44, &si, sizeof(si)) == sizeof(si) && si.ssi_signo == SIGUSR2);
	target_pass();
}
