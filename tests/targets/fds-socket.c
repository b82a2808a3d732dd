/*
 * Sockets: a TCP listener on 127.0.0.1 (an ephemeral port) with
 * SO_REUSEADDR, a Unix stream listener on a path, a Unix stream socket pair
 * with bytes queued both ways and one direction shut down, an empty Unix
 * datagram pair, a datagram socket bound to SCRATCH.d and one connected to
 * it by name. After restore the listeners accept on the same addresses
 * and the pairs carry their bytes. The original must be gone (killed)
 * before the restore: its listeners hold the addresses.
 * Arguments: SCRATCH, a path for the Unix listener.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/un.h>

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
	struct sockaddr_in in = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	struct sockaddr_un un = { .sun_family = AF_UNIX };
	socklen_t len = sizeof(in);
	int one = 1, sv[2], dv[2];
	char buf[16];

	int l = socket(AF_INET, SOCK_STREAM, 0);
	setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(l, (void *)&in, sizeof(in)) < 0 || listen(l, 8) < 0 || getsockname(l, (void *)&in, &len) < 0)
		target_verdict(0, "tcp listen: %s", strerror(errno));
	at(l, 50);
	snprintf(un.sun_path, sizeof(un.sun_path), "%s", argv[3]);
	unlink(un.sun_path);
	l = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (bind(l, (void *)&un, sizeof(un)) < 0 || listen(l, 4) < 0)
		target_verdict(0, "unix listen: %s", strerror(errno));
	at(l, 51);
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0 || socketpair(AF_UNIX, SOCK_DGRAM, 0, dv) < 0)
		target_verdict(0, "socketpair");
	at(sv[0], 52);
	at(sv[1], 53);
	at(dv[0], 54);
	at(dv[1], 55);
	if (write(52, "to 53", 5) != 5 || write(53, "to 52", 5) != 5)
		target_verdict(0, "pair write");
	shutdown(52, SHUT_WR);
	struct sockaddr_un du = { .sun_family = AF_UNIX };
	snprintf(du.sun_path, sizeof(du.sun_path), "%s.d", argv[3]);
	unlink(du.sun_path);
	l = socket(AF_UNIX, SOCK_DGRAM, 0);
	int cl = socket(AF_UNIX, SOCK_DGRAM, 0);
	if (bind(l, (void *)&du, sizeof(du)) < 0 || connect(cl, (void *)&du, sizeof(du)) < 0)
		target_verdict(0, "dgram: %s", strerror(errno));
	at(cl, 56);
	at(l, 57);

	target_ready();
	target_wait_restored();

	struct sockaddr_in got;
	len = sizeof(got);
	CHECK(getsockname(50, (void *)&got, &len) == 0 && got.sin_port == in.sin_port);
	int c = socket(AF_INET, SOCK_STREAM, 0);
	CHECK(connect(c, (void *)&in, sizeof(in)) == 0);
	int a = accept(50, NULL, NULL);
	CHECK(a >= 0 && write(c, "t", 1) == 1 && read(a, buf, 1) == 1);
	close(a);
	close(c);
	c = socket(AF_UNIX, SOCK_STREAM, 0);
	CHECK(connect(c, (void *)&un, sizeof(un)) == 0);
	a = accept(51, NULL, NULL);
	CHECK(a >= 0 && fcntl(51, F_GETFD) == FD_CLOEXEC);
	close(a);
	close(c);
	CHECK(read(53, buf, sizeof(buf)) == 5 && memcmp(buf, "to 53", 5) == 0);
	CHECK(read(53, buf, sizeof(buf)) == 0);
	CHECK(read(52, buf, sizeof(buf)) == 5 && memcmp(buf, "to 52", 5) == 0);
	CHECK(send(55, "d", 1, 0) == 1 && recv(54, buf, sizeof(buf), 0) == 1 && buf[0] == 'd');
	CHECK(send(56, "dg", 2, 0) == 2 && recv(57, buf, sizeof(buf), 0) == 2 && !memcmp(buf, "dg", 2));
	unlink(un.sun_path);
	unlink(du.sun_path);
	target_pass();
}
