/*
 * A descriptor kind the engine refuses: a TCP connection to itself on
 * 127.0.0.1 that one end has half closed (FIN_WAIT2 at that end,
 * CLOSE_WAIT at the other): only established connections are taken.
 * `ckpt dump` must fail naming the descriptor and its state and leave the
 * process running as it was; the test then tells this original
 * (READY.restored) to check that its connection still carries bytes the
 * way that is left open.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include "target.h"

#define CHECK(c) do { if (!(c)) target_verdict(0, "line %d: %s", __LINE__, #c); } while (0)

int main(int argc, char **argv)
{
	target_init(argc, argv, 0);
	struct sockaddr_in in = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(in);
	char buf[8];

	int l = socket(AF_INET, SOCK_STREAM, 0);
	if (bind(l, (void *)&in, sizeof(in)) < 0 || listen(l, 1) < 0 || getsockname(l, (void *)&in, &len) < 0)
		target_verdict(0, "listen: %s", strerror(errno));
	int c = socket(AF_INET, SOCK_STREAM, 0);
	if (connect(c, (void *)&in, sizeof(in)) < 0)
		target_verdict(0, "connect: %s", strerror(errno));
	int a = accept(l, NULL, NULL);
	if (a < 0 || write(c, "early", 5) != 5 || shutdown(c, SHUT_WR) < 0)
		target_verdict(0, "accept: %s", strerror(errno));
	struct tcp_info ti = { .tcpi_state = 4 };
	for (int i = 0; i < 5000 && ti.tcpi_state == 4; i++) {
		struct timespec ts = { 0, 200000 };
		len = sizeof(ti);
		getsockopt(c, IPPROTO_TCP, TCP_INFO, &ti, &len);
		nanosleep(&ts, NULL);
	}

	target_ready();
	target_wait_restored();

	CHECK(read(a, buf, sizeof(buf)) == 5 && memcmp(buf, "early", 5) == 0);
	CHECK(read(a, buf, sizeof(buf)) == 0);
	CHECK(write(a, "late", 4) == 4 && read(c, buf, sizeof(buf)) == 4 && memcmp(buf, "late", 4) == 0);
	target_pass();
}
