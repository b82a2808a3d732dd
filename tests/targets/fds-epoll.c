/*
 * An epoll instance (fd 40) still watching files whose descriptors were
 * closed or replaced: the read end of pipe A added as fd 41, then moved
 * to fd 43 (41 closed); the read end of pipe B added as fd 42, then moved
 * to fd 45 and 42 reused for an eventfd (the eventfd added too, under
 * 42, a second watch of one number). Bytes wait in both pipes.
 *
 * After restore: epoll_wait reports the three watches with their data;
 * the kernel still knows the pipes' watches by their old numbers (adding
 * fd 43 and 45, the same files under their own numbers, succeeds; one
 * more add under 42 is refused, EEXIST for the eventfd's own); once pipe
 * A's read end is closed, its watch is gone; 42 is still the eventfd.
 */
#include <sys/epoll.h>
#include <sys/eventfd.h>

#include "target.h"

#define CHECK(c) do { if (!(c)) target_verdict(0, "line %d: %s (errno %d)", __LINE__, #c, errno); } while (0)

static void at(int fd, int n)
{
	if (fd < 0 || dup3(fd, n, O_CLOEXEC) < 0)
		target_verdict(0, "setting up fd %d: %s", n, strerror(errno));
	close(fd);
}

static int add(int ep, int fd, uint32_t events, uint64_t data)
{
	struct epoll_event ev = { .events = events, .data.u64 = data };
	return epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
}

/* Which of the data values 0xa, 0xb, 0xe epoll_wait reports, as bits. */
static int ready(void)
{
	struct epoll_event evs[8];
	int n = epoll_wait(40, evs, 8, 0), seen = 0;
	for (int i = 0; i < n; i++)
		seen |= evs[i].data.u64 == 0xa ? 1 : evs[i].data.u64 == 0xb ? 2 : evs[i].data.u64 == 0xe ? 4 : 8;
	return seen;
}

int main(int argc, char **argv)
{
	target_init(argc, argv, 0);
	int a[2], b[2];
	uint64_t one = 1;

	CHECK(pipe(a) == 0 && pipe(b) == 0);
	at(epoll_create1(EPOLL_CLOEXEC), 40);
	at(a[0], 41);
	at(a[1], 44);
	at(b[0], 42);
	at(b[1], 46);
	CHECK(add(40, 41, EPOLLIN, 0xa) == 0);
	CHECK(add(40, 42, EPOLLIN, 0xb) == 0);
	at(dup(41), 43);
	close(41);
	at(dup(42), 45);
	at(eventfd(0, EFD_NONBLOCK), 42);
	CHECK(add(40, 42, EPOLLIN, 0xe) == 0);
	CHECK(write(44, "a", 1) == 1 && write(46, "b", 1) == 1 && write(42, &one, 8) == 8);
	CHECK(ready() == 7);

	target_ready();
	target_wait_restored();

	CHECK(fcntl(41, F_GETFD) < 0 && errno == EBADF);
	CHECK(ready() == 7);
	CHECK(add(40, 43, EPOLLIN, 0x43) == 0);
	CHECK(add(40, 45, EPOLLIN, 0x45) == 0);
	CHECK(add(40, 42, EPOLLIN, 0) < 0 && errno == EEXIST);
	uint64_t v = 0;
	CHECK(read(42, &v, 8) == 8 && v == 1); /* still the eventfd */
	CHECK(epoll_ctl(40, EPOLL_CTL_DEL, 43, NULL) == 0);
	close(43); /* pipe A's read end, the last holder: its watch under 41 goes */
	CHECK(ready() == 2 + 8); /* 0xb, and 0x45 for the same pipe under 45 */
	target_pass();
}
