/*
 * An established TCP connection between two processes of one tree, both
 * ends inside: the parent listens on 127.0.0.1 (and keeps listening: the
 * accepted connection shares its port), the child connects. With bytes
 * in flight both ways (the child writes until its send queue is full, the
 * parent's bytes wait unread in the child's receive queue), both are
 * dumped together. After the restore the child reads and checks the
 * parent's bytes, then writes the rest of its stream; the parent checks
 * every byte of it, the child's exit status, and that the listener still
 * takes a new connection.
 *
 * Usage: target-fds-tcp-tree READY RESULT
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include "target.h"
#include "tcp-pattern.h"

static char buf[65536];

/* The child: returns its exit status (0: all checked). */
static int child(struct sockaddr_in *in)
{
	uint64_t sent = 0, got = 0;
	int c = socket(AF_INET, SOCK_STREAM, 0);

	if (c < 0 || connect(c, (void *)in, sizeof(*in)) < 0)
		return 10;
	fcntl(c, F_SETFL, O_NONBLOCK);
	for (;;) {
		tcp_pattern_fill(buf, sizeof(buf), sent, TCP_PATTERN_TARGET);
		ssize_t n = write(c, buf, sizeof(buf));
		if (n < 0 && errno == EAGAIN)
			break;
		if (n <= 0)
			return 11;
		sent += (uint64_t)n;
	}
	/* the parent's bytes stay queued until after the restore */
	int inq = 0;
	for (int i = 0; i < 10000 && inq < TCP_PATTERN_FIRST; i++) {
		struct timespec ts = { 0, 1000000 };
		ioctl(c, FIONREAD, &inq);
		nanosleep(&ts, NULL);
	}
	if (inq < TCP_PATTERN_FIRST)
		return 12;
	/* the file the test makes after the restore (a word from the
	 * parent would queue behind its pattern) */
	target_wait_restored();
	fcntl(c, F_SETFL, 0);
	while (got < TCP_PATTERN_FIRST) {
		ssize_t n = read(c, buf, MIN_(sizeof(buf), TCP_PATTERN_FIRST - got));
		if (n <= 0 || tcp_pattern_check(buf, (size_t)n, got, TCP_PATTERN_PEER) != UINT64_MAX)
			return 13;
		got += (uint64_t)n;
	}
	while (sent < TCP_PATTERN_TOTAL) {
		size_t want = MIN_(sizeof(buf), TCP_PATTERN_TOTAL - sent);
		tcp_pattern_fill(buf, want, sent, TCP_PATTERN_TARGET);
		ssize_t n = write(c, buf, want);
		if (n <= 0)
			return 14;
		sent += (uint64_t)n;
	}
	return 0;
}

int main(int argc, char **argv)
{
	target_init(argc, argv, 0);
	struct sockaddr_in in = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(in);
	int small = 16384, st;
	uint64_t got = 0;

	int l = socket(AF_INET, SOCK_STREAM, 0);
	/* a small window: the child's stream stays mostly unacknowledged */
	setsockopt(l, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
	if (bind(l, (void *)&in, sizeof(in)) < 0 || listen(l, 4) < 0 || getsockname(l, (void *)&in, &len) < 0)
		target_verdict(0, "listen: %s", strerror(errno));
	pid_t pid = fork();
	if (pid < 0)
		target_verdict(0, "fork: %s", strerror(errno));
	if (pid == 0) {
		close(l);
		_exit(child(&in));
	}
	int a = accept(l, NULL, NULL);
	if (a < 0)
		target_verdict(0, "accept: %s", strerror(errno));
	tcp_pattern_fill(buf, TCP_PATTERN_FIRST, 0, TCP_PATTERN_PEER);
	if (write(a, buf, TCP_PATTERN_FIRST) != TCP_PATTERN_FIRST)
		target_verdict(0, "write: %s", strerror(errno));
	/* ready once the child's queues are full: its send queue stops
	 * growing when ours and its are full */
	int outq = -1, last = -2;
	for (int i = 0; i < 10000 && outq != last; i++) {
		struct timespec ts = { 0, 20000000 };
		last = outq;
		nanosleep(&ts, NULL);
		ioctl(a, FIONREAD, &outq);
	}

	target_ready();
	target_wait_restored();

	while (got < TCP_PATTERN_TOTAL) {
		ssize_t n = read(a, buf, sizeof(buf));
		if (n <= 0)
			target_verdict(0, "read after %lu bytes: %s", got, n ? strerror(errno) : "EOF");
		uint64_t bad = tcp_pattern_check(buf, (size_t)n, got, TCP_PATTERN_TARGET);
		if (bad != UINT64_MAX)
			target_verdict(0, "the child's byte %lu is wrong", bad);
		got += (uint64_t)n;
	}
	if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
		target_verdict(0, "the child ended with status 0x%x", st);
	/* the listener shares its port with the restored connection */
	int c = socket(AF_INET, SOCK_STREAM, 0);
	if (connect(c, (void *)&in, sizeof(in)) < 0 || accept(l, NULL, NULL) < 0)
		target_verdict(0, "the listener takes no new connection: %s", strerror(errno));
	target_pass();
}
