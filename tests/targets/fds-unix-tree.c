/*
 * Unix sockets between the two processes of a tree: a seqpacket pair
 * made before the fork with messages queued both ways, a connection the
 * parent accepted from its listener at SCRATCH.l and the child made (bytes
 * queued both ways), and datagrams the child sent to the parent's socket
 * bound to SCRATCH.q. After restore each process finds its messages whole
 * and in order and the connection's names (the listener's path) as before;
 * the parent then checks the child's verdict (its exit status).
 * Arguments: SCRATCH, a path in a directory of the test's.
 */
#include <stddef.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>

#include "target.h"

#define CHECK(c) do { if (!(c)) fail(__LINE__, #c); } while (0)

static bool child;

static _Noreturn void fail(int line, const char *what)
{
	if (child) {
		fprintf(stderr, "child: line %d: %s\n", line, what);
		_exit(1);
	}
	target_verdict(0, "line %d: %s", line, what);
}

static void at(int fd, int n)
{
	if (fd < 0 || dup3(fd, n, 0) < 0)
		fail(__LINE__, "setting up a descriptor");
	close(fd);
}

static void sendstr(int fd, const char *s)
{
	if (send(fd, s, strlen(s), 0) != (ssize_t)strlen(s))
		fail(__LINE__, s);
}

static bool next_is(int fd, const char *s)
{
	char buf[256];
	ssize_t n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
	return n == (ssize_t)strlen(s) && memcmp(buf, s, strlen(s)) == 0;
}

static bool name_is(int fd, bool peer, const char *want)
{
	struct sockaddr_un un;
	socklen_t len = sizeof(un);
	if ((peer ? getpeername : getsockname)(fd, (void *)&un, &len) < 0)
		return false;
	return len > offsetof(struct sockaddr_un, sun_path) && strcmp(un.sun_path, want) == 0;
}

int main(int argc, char **argv)
{
	target_init(argc, argv, 1);
	struct sockaddr_un l = { .sun_family = AF_UNIX }, q = { .sun_family = AF_UNIX };
	char done[4096];
	int sv[2], st;

	snprintf(l.sun_path, sizeof(l.sun_path), "%s.l", argv[3]);
	snprintf(q.sun_path, sizeof(q.sun_path), "%s.q", argv[3]);
	snprintf(done, sizeof(done), "%s.child", argv[3]);
	unlink(l.sun_path);
	unlink(q.sun_path);
	unlink(done);
	if (socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv) < 0)
		fail(__LINE__, "socketpair");
	int ls = socket(AF_UNIX, SOCK_STREAM, 0), qs = socket(AF_UNIX, SOCK_DGRAM, 0);
	if (bind(ls, (void *)&l, sizeof(l)) < 0 || listen(ls, 4) < 0 || bind(qs, (void *)&q, sizeof(q)) < 0)
		fail(__LINE__, "bind");
	pid_t pid = fork();
	if (pid < 0)
		fail(__LINE__, "fork");
	if (pid == 0) {
		child = true;
		close(sv[0]);
		close(ls);
		close(qs);
		at(sv[1], 50);
		int c = socket(AF_UNIX, SOCK_STREAM, 0), tx = socket(AF_UNIX, SOCK_DGRAM, 0);
		if (connect(c, (void *)&l, sizeof(l)) < 0)
			fail(__LINE__, "connect");
		at(c, 51);
		sendstr(50, "to parent");
		sendstr(51, "to server");
		if (sendto(tx, "q1", 2, 0, (void *)&q, sizeof(q)) != 2 || sendto(tx, "q2", 2, 0, (void *)&q, sizeof(q)) != 2)
			fail(__LINE__, "sendto");
		close(tx);
		target_write_file(done, "done\n");
		target_wait_restored();
		CHECK(next_is(50, "to child 1"));
		CHECK(next_is(50, "to child 2"));
		CHECK(name_is(51, true, l.sun_path));
		CHECK(next_is(51, "to client"));
		_exit(0);
	}
	close(sv[1]);
	at(sv[0], 50);
	at(ls, 52);
	at(qs, 53);
	at(accept(52, NULL, NULL), 51);
	sendstr(50, "to child 1");
	sendstr(50, "to child 2");
	sendstr(51, "to client");
	for (int i = 0; i < 10000 && access(done, F_OK) < 0; i++) {
		struct timespec ts = { 0, 1000000 };
		nanosleep(&ts, NULL);
	}
	CHECK(access(done, F_OK) == 0);

	target_ready();
	target_wait_restored();

	CHECK(next_is(50, "to parent"));
	CHECK(name_is(51, false, l.sun_path));
	CHECK(next_is(51, "to server"));
	CHECK(next_is(53, "q1"));
	CHECK(next_is(53, "q2"));
	CHECK(waitpid(pid, &st, 0) == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0);
	unlink(l.sun_path);
	unlink(q.sun_path);
	unlink(done);
	target_pass();
}
