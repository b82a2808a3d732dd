/*
 * An established TCP connection to a peer the test runs (IPv4 or IPv6 on
 * the loopback), with bytes in flight both ways: it writes its stream
 * until its send queue is full (the peer reads nothing yet, so most of it
 * is unacknowledged), and leaves the peer's first bytes unread in its
 * receive queue. After the restore it reads everything the peer sent
 * (EXPECT bytes: those before the dump and those the peer wrote while it
 * was away), checking every byte, then writes the rest of its stream,
 * which the peer checks.
 *
 * Usage: target-fds-tcp READY RESULT 4|6 PORT EXPECT
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#include "target.h"
#include "tcp-pattern.h"

int main(int argc, char **argv)
{
	target_init(argc, argv, 3);
	bool v6 = strcmp(argv[3], "6") == 0;
	int port = atoi(argv[4]);
	uint64_t expect = strtoull(argv[5], NULL, 10), sent = 0, got = 0;
	struct sockaddr_storage ss = { 0 };
	socklen_t len;
	static char buf[65536];

	if (v6) {
		struct sockaddr_in6 *s = (void *)&ss;
		s->sin6_family = AF_INET6;
		s->sin6_port = htons((uint16_t)port);
		s->sin6_addr = in6addr_loopback;
		len = sizeof(*s);
	} else {
		struct sockaddr_in *s = (void *)&ss;
		s->sin_family = AF_INET;
		s->sin_port = htons((uint16_t)port);
		s->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		len = sizeof(*s);
	}
	int c = socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM, 0);
	int one = 1;
	if (c < 0 || connect(c, (void *)&ss, len) < 0)
		target_verdict(0, "connect: %s", strerror(errno));
	setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	/* our stream until the send queue is full */
	fcntl(c, F_SETFL, O_NONBLOCK);
	for (;;) {
		tcp_pattern_fill(buf, sizeof(buf), sent, TCP_PATTERN_TARGET);
		ssize_t n = write(c, buf, sizeof(buf));
		if (n < 0 && errno == EAGAIN)
			break;
		if (n <= 0)
			target_verdict(0, "write: %s", strerror(errno));
		sent += (uint64_t)n;
	}
	/* the peer's first bytes, left unread */
	int inq = 0;
	for (int i = 0; i < 10000 && inq < TCP_PATTERN_FIRST; i++) {
		struct timespec ts = { 0, 1000000 };
		ioctl(c, FIONREAD, &inq);
		nanosleep(&ts, NULL);
	}
	if (inq < TCP_PATTERN_FIRST)
		target_verdict(0, "only %d of the peer's first %d bytes came", inq, TCP_PATTERN_FIRST);

	target_ready();
	target_wait_restored();

	fcntl(c, F_SETFL, 0);
	while (got < expect) {
		ssize_t n = read(c, buf, MIN_(sizeof(buf), expect - got));
		if (n <= 0)
			target_verdict(0, "read after %lu of %lu bytes: %s", got, expect, n ? strerror(errno) : "EOF");
		uint64_t bad = tcp_pattern_check(buf, (size_t)n, got, TCP_PATTERN_PEER);
		if (bad != UINT64_MAX)
			target_verdict(0, "the peer's byte %lu is wrong", bad);
		got += (uint64_t)n;
	}
	while (sent < TCP_PATTERN_TOTAL) {
		size_t want = MIN_(sizeof(buf), TCP_PATTERN_TOTAL - sent);
		tcp_pattern_fill(buf, want, sent, TCP_PATTERN_TARGET);
		ssize_t n = write(c, buf, want);
		if (n <= 0)
			target_verdict(0, "write after the restore, at %lu: %s", sent, strerror(errno));
		sent += (uint64_t)n;
	}
	target_pass();
}
