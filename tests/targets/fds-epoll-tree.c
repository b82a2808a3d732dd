/*
 * An epoll instance watching a file its own process closed, held by
 * another process of the tree (a tree): the parent's epoll (fd 40)
 * watches the read end of pipe A added as fd 41; the child, forked then,
 * keeps its fd 41 and closes its copy of the epoll; the parent closes its
 * fd 41 and keeps the write end (42), through which one byte waits. Pipe
 * B (43 -> 44) is the parent's word to the child.
 *
 * After restore: the parent's epoll reports the watch with its data, and
 * the parent holds no fd 41; told through B, the child reads the byte
 * from its fd 41, closes it and exits 0; the watch is gone with the
 * file, and the parent's epoll reports nothing.
 */
#include <poll.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/wait.h>

#include "target.h"

#define CHECK(c) do { if (!(c)) target_verdict(0, "line %d: %s (errno %d)", __LINE__, #c, errno); } while (0)

static void at(int fd, int n)
{
	if (fd < 0 || dup3(fd, n, O_CLOEXEC) < 0)
		target_verdict(0, "setting up fd %d: %s", n, strerror(errno));
	close(fd);
}

int main(int argc, char **argv)
{
	target_init(argc, argv, 0);
	int a[2], b[2];
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = 0xa1 }, evs[4];

	CHECK(pipe(a) == 0 && pipe(b) == 0);
	at(epoll_create1(EPOLL_CLOEXEC), 40);
	at(a[0], 41);
	at(a[1], 42);
	at(b[1], 43);
	at(b[0], 44);
	CHECK(epoll_ctl(40, EPOLL_CTL_ADD, 41, &ev) == 0);
	pid_t child = fork();
	CHECK(child >= 0);
	if (child == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		close(40);
		close(42);
		close(43);
		char c = 0;
		struct pollfd p = { .fd = 44, .events = POLLIN };
		/* before and after the restore alike: it waits for the word */
		while (poll(&p, 1, -1) != 1)
			;
		if (read(44, &c, 1) != 1 || c != 'g')
			_exit(2);
		if (read(41, &c, 1) != 1 || c != 'x')
			_exit(3);
		close(41);
		_exit(0);
	}
	close(41);
	close(44);
	CHECK(write(42, "x", 1) == 1);
	CHECK(epoll_wait(40, evs, 4, 0) == 1 && evs[0].data.u64 == 0xa1);

	target_ready();
	target_wait_restored();

	CHECK(fcntl(41, F_GETFD) < 0 && errno == EBADF);
	CHECK(epoll_wait(40, evs, 4, 0) == 1 && evs[0].data.u64 == 0xa1 && (evs[0].events & EPOLLIN));
	int st;
	CHECK(write(43, "g", 1) == 1);
	CHECK(waitpid(child, &st, 0) == child);
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	CHECK(epoll_wait(40, evs, 4, 0) == 0);
	target_pass();
}
