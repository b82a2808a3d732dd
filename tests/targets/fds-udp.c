/*
 * UDP sockets, IPv4 and IPv6: for each family one bound to the loopback
 * and not connected, and one connected to it. A datagram waits unread in
 * each bound socket at the dump: it is not kept (docs/COVERAGE.md). After
 * the restore every socket has its address back, and each connected one
 * reaches its bound one, which sees it come from the same address.
 *
 * Usage: target-fds-udp READY RESULT
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "target.h"

struct pair {
	int bound, conn;
	struct sockaddr_storage ba, ca; /* their addresses before the dump */
};

static void make(int family, struct pair *p)
{
	struct sockaddr_storage ss = { 0 };
	socklen_t len = family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);

	ss.ss_family = (sa_family_t)family;
	if (family == AF_INET)
		((struct sockaddr_in *)&ss)->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	else
		((struct sockaddr_in6 *)&ss)->sin6_addr = in6addr_loopback;
	p->bound = socket(family, SOCK_DGRAM, 0);
	p->conn = socket(family, SOCK_DGRAM, 0);
	if (p->bound < 0 || p->conn < 0 || bind(p->bound, (void *)&ss, len) < 0 ||
	    getsockname(p->bound, (void *)&p->ba, &len) < 0 || connect(p->conn, (void *)&p->ba, len) < 0 ||
	    getsockname(p->conn, (void *)&p->ca, &len) < 0)
		target_verdict(0, "family %d: %s", family, strerror(errno));
	if (send(p->conn, "old", 3, 0) != 3)
		target_verdict(0, "send: %s", strerror(errno));
}

static void check(const char *name, struct pair *p)
{
	struct sockaddr_storage ss, from;
	socklen_t len = sizeof(ss), flen = sizeof(from);
	char buf[8];

	if (getsockname(p->bound, (void *)&ss, &len) < 0 || memcmp(&ss, &p->ba, len) != 0)
		target_verdict(0, "%s: the bound socket's address changed", name);
	len = sizeof(ss);
	if (getsockname(p->conn, (void *)&ss, &len) < 0 || memcmp(&ss, &p->ca, len) != 0)
		target_verdict(0, "%s: the connected socket's address changed", name);
	len = sizeof(ss);
	if (getpeername(p->conn, (void *)&ss, &len) < 0 || memcmp(&ss, &p->ba, len) != 0)
		target_verdict(0, "%s: the connected socket's peer changed", name);
	if (send(p->conn, "new", 3, 0) != 3)
		target_verdict(0, "%s: send: %s", name, strerror(errno));
	ssize_t n = recvfrom(p->bound, buf, sizeof(buf), 0, (void *)&from, &flen);
	if (n != 3 || memcmp(buf, "new", 3) != 0)
		target_verdict(0, "%s: received %zd bytes '%.*s', not 'new'", name, n, n > 0 ? (int)n : 0, buf);
	if (flen != len || memcmp(&from, &p->ca, flen) != 0)
		target_verdict(0, "%s: the datagram came from another address", name);
}

int main(int argc, char **argv)
{
	struct pair v4, v6;

	target_init(argc, argv, 0);
	make(AF_INET, &v4);
	make(AF_INET6, &v6);
	target_ready();
	target_wait_restored();
	check("IPv4", &v4);
	check("IPv6", &v6);
	target_pass();
}
