/*
 * Pipes inside the process with bytes queued in them: one with a larger
 * capacity and a non-blocking read end, one whose write end has the lower
 * number; and a named FIFO with bytes queued, read end non-blocking.
 * After restore the bytes must be there, once, and the ends joined again.
 * Arguments: SCRATCH, a path for the FIFO.
 */
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
	target_init(argc, argv, 1);
	int p[2], q[2];
	char buf[64];

	if (pipe2(p, O_CLOEXEC) < 0 || pipe2(q, O_CLOEXEC) < 0)
		target_verdict(0, "pipe: %s", strerror(errno));
	/* Our numbers are far from the ones pipe2 gave. */
	at(p[0], 30);
	at(p[1], 31);
	at(q[1], 32); /* write end below its read end */
	at(q[0], 33);
	fcntl(30, F_SETPIPE_SZ, 1 << 18);
	fcntl(30, F_SETFL, O_NONBLOCK);
	if (write(31, "queued in the pipe", 18) != 18 || write(32, "second", 6) != 6)
		target_verdict(0, "cannot fill the pipes");
	unlink(argv[3]);
	if (mkfifo(argv[3], 0600) < 0)
		target_verdict(0, "mkfifo %s: %s", argv[3], strerror(errno));
	at(open(argv[3], O_RDONLY | O_NONBLOCK), 34);
	at(open(argv[3], O_WRONLY), 35);
	if (write(35, "fifo bytes", 10) != 10)
		target_verdict(0, "cannot fill the FIFO");

	target_ready();
	target_wait_restored();

	CHECK(fcntl(30, F_GETPIPE_SZ) == 1 << 18 && (fcntl(30, F_GETFL) & O_NONBLOCK));
	CHECK(read(30, buf, sizeof(buf)) == 18 && memcmp(buf, "queued in the pipe", 18) == 0);
	CHECK(read(30, buf, sizeof(buf)) < 0 && errno == EAGAIN);
	CHECK(write(31, "more", 4) == 4 && read(30, buf, sizeof(buf)) == 4 && memcmp(buf, "more", 4) == 0);
	CHECK(read(33, buf, 6) == 6 && memcmp(buf, "second", 6) == 0);
	close(32);
	CHECK(read(33, buf, sizeof(buf)) == 0); /* the only writer is gone: EOF */
	CHECK(read(34, buf, sizeof(buf)) == 10 && memcmp(buf, "fifo bytes", 10) == 0);
	CHECK(write(35, "ok", 2) == 2 && read(34, buf, sizeof(buf)) == 2);
	unlink(argv[3]);
	target_pass();
}
