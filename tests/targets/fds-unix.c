/*
 * Unix sockets with state beyond the pair: messages queued on a
 * seqpacket pair (one of them empty) and a datagram pair (its receiver
 * with SO_PASSCRED), datagrams queued on a socket bound to SCRATCH.q, a
 * connection accepted from a listener at SCRATCH.l (bytes queued both
 * ways), a listener and a datagram socket bound to paths deleted since
 * (SCRATCH.del, SCRATCH.ddel), a listener and a datagram socket bound
 * by relative names from the working directory (the scratch directory),
 * a seqpacket connection accepted from a listener at an abstract name,
 * and a datagram pair one end of which is bound to an abstract name.
 * After restore every message comes back whole and in order, the names
 * answer as before (getsockname, getpeername), the deleted paths are
 * still absent, and the listeners take connections.
 * Arguments: SCRATCH, a path in a directory of the test's, and a mode.
 * Modes that add what a dump must refuse: "rights" (a descriptor in
 * flight on a datagram pair, 62 and 63, behind a plain message),
 * "elsewhere" (a socket bound by a relative name in a directory that is
 * not the working directory), "gonedir" (a socket bound to a path deleted
 * with its directory), "many" (4097 messages queued on a seqpacket pair,
 * 62 and 63), "peergone" (63 connected by name to 62, whose path is
 * deleted since). Other modes: "peekoff" (51 peeks at an offset of its own:
 * a failed dump leaves it at 0), "deldir" (a datagram socket bound to
 * SCRATCH.dir/s, deleted since: the test removes the directory before a
 * restore). A dump that fails must leave all of it as it was: told
 * "restored" then, the original passes the same checks.
 */
#include <libgen.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "target.h"

#define CHECK(c) do { if (!(c)) target_verdict(0, "line %d: %s", __LINE__, #c); } while (0)

static struct sockaddr_un name(const char *base, const char *suffix)
{
	struct sockaddr_un un = { .sun_family = AF_UNIX };
	snprintf(un.sun_path, sizeof(un.sun_path), "%s%s", base, suffix);
	unlink(un.sun_path);
	return un;
}

static void at(int fd, int n)
{
	if (fd < 0 || dup3(fd, n, 0) < 0)
		target_verdict(0, "setting up fd %d: %s", n, strerror(errno));
	close(fd);
}

static int bound(int type, const struct sockaddr_un *un)
{
	int fd = socket(AF_UNIX, type, 0);
	if (fd < 0 || bind(fd, (const void *)un, sizeof(*un)) < 0 || (type != SOCK_DGRAM && listen(fd, 4) < 0))
		target_verdict(0, "bind %s: %s", un->sun_path, strerror(errno));
	return fd;
}

static void sendstr(int fd, const char *s)
{
	if (send(fd, s, strlen(s), 0) != (ssize_t)strlen(s))
		target_verdict(0, "send '%s': %s", s, strerror(errno));
}

/* The next message on fd is exactly s. */
static void expect(int fd, const char *s, int line)
{
	char buf[256];
	ssize_t n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
	if (n != (ssize_t)strlen(s) || memcmp(buf, s, strlen(s)) != 0)
		target_verdict(0, "line %d: fd %d: '%s' expected, got %zd bytes%s%s", line, fd, s, n,
			       n < 0 ? ": " : "", n < 0 ? strerror(errno) : "");
}
#define EXPECT(fd, s) expect(fd, s, __LINE__)

static bool name_is(int fd, bool peer, const char *want)
{
	struct sockaddr_un un;
	socklen_t len = sizeof(un);
	if ((peer ? getpeername : getsockname)(fd, (void *)&un, &len) < 0)
		return false;
	return len > offsetof(struct sockaddr_un, sun_path) && strcmp(un.sun_path, want) == 0;
}

static void connects(int l, const struct sockaddr_un *un)
{
	int c = socket(AF_UNIX, SOCK_STREAM, 0);
	CHECK(connect(c, (const void *)un, sizeof(*un)) == 0);
	int a = accept(l, NULL, NULL);
	CHECK(a >= 0 && write(c, "x", 1) == 1);
	close(a);
	close(c);
}

int main(int argc, char **argv)
{
	target_init(argc, argv, 1);
	const char *s = argv[3];
	char dir[4096];
	int sv[2];

	snprintf(dir, sizeof(dir), "%s", s);
	const char *home = dirname(dir);
	if (chdir(home) < 0)
		target_verdict(0, "chdir: %s", strerror(errno));

	/* 50, 51: seqpacket pair, three messages to 51 (one empty), one to 50 */
	if (socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv) < 0)
		target_verdict(0, "socketpair");
	at(sv[0], 50);
	at(sv[1], 51);
	sendstr(50, "first");
	sendstr(50, "");
	sendstr(50, "third, longer than the others");
	sendstr(51, "back");
	/* 52, 53: datagram pair, 53 with SO_PASSCRED */
	if (socketpair(AF_UNIX, SOCK_DGRAM, 0, sv) < 0)
		target_verdict(0, "socketpair");
	at(sv[0], 52);
	at(sv[1], 53);
	setsockopt(53, SOL_SOCKET, SO_PASSCRED, &(int){ 1 }, sizeof(int));
	sendstr(52, "d1");
	sendstr(52, "d2");
	/* 54: bound to SCRATCH.q, two datagrams queued from an unbound
	 * socket of ours, closed since */
	struct sockaddr_un q = name(s, ".q");
	at(bound(SOCK_DGRAM, &q), 54);
	int tx = socket(AF_UNIX, SOCK_DGRAM, 0);
	CHECK(connect(tx, (void *)&q, sizeof(q)) == 0);
	sendstr(tx, "q1");
	sendstr(tx, "q2");
	close(tx);
	/* 55: listener at SCRATCH.l; 56 connected to it, 57 accepted */
	struct sockaddr_un l = name(s, ".l");
	at(bound(SOCK_STREAM, &l), 55);
	int c = socket(AF_UNIX, SOCK_STREAM, 0);
	CHECK(connect(c, (void *)&l, sizeof(l)) == 0);
	at(c, 56);
	at(accept(55, NULL, NULL), 57);
	sendstr(56, "to server");
	sendstr(57, "to client");
	/* 58: listener, 59: datagram socket with a message, paths deleted */
	struct sockaddr_un del = name(s, ".del"), ddel = name(s, ".ddel");
	at(bound(SOCK_STREAM, &del), 58);
	at(bound(SOCK_DGRAM, &ddel), 59);
	tx = socket(AF_UNIX, SOCK_DGRAM, 0);
	CHECK(sendto(tx, "gone", 4, 0, (void *)&ddel, sizeof(ddel)) == 4);
	close(tx);
	unlink(del.sun_path);
	unlink(ddel.sun_path);
	/* 60: listener, 61: datagram socket, bound by relative names */
	struct sockaddr_un rl = name("rel.sock", ""), rd = name("rel.dgram", "");
	at(bound(SOCK_STREAM, &rl), 60);
	at(bound(SOCK_DGRAM, &rd), 61);
	tx = socket(AF_UNIX, SOCK_DGRAM, 0);
	CHECK(sendto(tx, "rel", 3, 0, (void *)&rd, sizeof(rd)) == 3);
	close(tx);

	/* 64: listener at an abstract name; 65 connected to it, 66 accepted */
	struct sockaddr_un ab = { .sun_family = AF_UNIX };
	socklen_t ablen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 +
				      (size_t)snprintf(ab.sun_path + 1, sizeof(ab.sun_path) - 1, "ckptfs-unix-%d", getpid()));
	int al = socket(AF_UNIX, SOCK_SEQPACKET, 0);
	if (bind(al, (void *)&ab, ablen) < 0 || listen(al, 4) < 0)
		target_verdict(0, "abstract bind: %s", strerror(errno));
	at(al, 64);
	c = socket(AF_UNIX, SOCK_SEQPACKET, 0);
	CHECK(connect(c, (void *)&ab, ablen) == 0);
	at(c, 65);
	at(accept(64, NULL, NULL), 66);
	sendstr(65, "abstract");

	/* 67, 68: datagram pair, 67 bound to an abstract name of its own */
	struct sockaddr_un db = { .sun_family = AF_UNIX };
	socklen_t dblen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 +
				      (size_t)snprintf(db.sun_path + 1, sizeof(db.sun_path) - 1, "ckptfs-dg-%d", getpid()));
	if (socketpair(AF_UNIX, SOCK_DGRAM, 0, sv) < 0 || bind(sv[0], (void *)&db, dblen) < 0)
		target_verdict(0, "named datagram pair: %s", strerror(errno));
	at(sv[0], 67);
	at(sv[1], 68);
	sendstr(68, "named");

	const char *mode = argc > 4 ? argv[4] : "";
	if (strcmp(mode, "rights") == 0) {
		if (socketpair(AF_UNIX, SOCK_DGRAM, 0, sv) < 0)
			target_verdict(0, "socketpair");
		at(sv[0], 62);
		at(sv[1], 63);
		int nul = open("/dev/null", O_RDONLY);
		_Alignas(struct cmsghdr) char c[CMSG_SPACE(sizeof(int))] = { 0 };
		struct iovec v = { "fd", 2 };
		struct msghdr m = { .msg_iov = &v, .msg_iovlen = 1, .msg_control = c, .msg_controllen = sizeof(c) };
		struct cmsghdr *h = CMSG_FIRSTHDR(&m);
		h->cmsg_level = SOL_SOCKET;
		h->cmsg_type = SCM_RIGHTS;
		h->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(h), &nul, sizeof(int));
		/* not first: the check while the process runs sees a plain
		 * message, the capture of the frozen process the descriptor */
		sendstr(62, "plain");
		if (sendmsg(62, &m, 0) != 2)
			target_verdict(0, "SCM_RIGHTS: %s", strerror(errno));
		close(nul);
	} else if (strcmp(mode, "elsewhere") == 0) {
		struct sockaddr_un o = name("other.sock", "");
		at(bound(SOCK_DGRAM, &o), 62);
		if (chdir("/") < 0)
			target_verdict(0, "chdir /");
	} else if (strcmp(mode, "peergone") == 0) {
		/* 63 connected by name to 62, whose path is deleted since */
		struct sockaddr_un pg = name(s, ".pg");
		at(bound(SOCK_DGRAM, &pg), 62);
		tx = socket(AF_UNIX, SOCK_DGRAM, 0);
		if (connect(tx, (void *)&pg, sizeof(pg)) < 0)
			target_verdict(0, "connect: %s", strerror(errno));
		at(tx, 63);
		unlink(pg.sun_path);
	} else if (strcmp(mode, "many") == 0) {
		/* more messages than a dump reads: 4097 of one byte */
		if (socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv) < 0)
			target_verdict(0, "socketpair");
		at(sv[0], 62);
		at(sv[1], 63);
		setsockopt(62, SOL_SOCKET, SO_SNDBUFFORCE, &(int){ 16 << 20 }, sizeof(int));
		for (int i = 0; i < 4097; i++)
			sendstr(62, "m");
	} else if (strcmp(mode, "peekoff") == 0) {
		/* a peek offset of its own, which a failed dump must leave */
		setsockopt(51, SOL_SOCKET, SO_PEEK_OFF, &(int){ 0 }, sizeof(int));
	} else if (strcmp(mode, "deldir") == 0) {
		char d[4096];
		snprintf(d, sizeof(d), "%s.dir", s);
		mkdir(d, 0700);
		struct sockaddr_un g = name(d, "/s");
		at(bound(SOCK_DGRAM, &g), 62);
		unlink(g.sun_path);
	} else if (strcmp(mode, "gonedir") == 0) {
		char d[4096];
		snprintf(d, sizeof(d), "%s.dir", s);
		mkdir(d, 0700);
		struct sockaddr_un g = name(d, "/s");
		at(bound(SOCK_DGRAM, &g), 62);
		unlink(g.sun_path);
		rmdir(d);
	}

	target_ready();
	target_wait_restored();

	if (strcmp(mode, "elsewhere") == 0 && chdir(home) < 0)
		target_verdict(0, "chdir back");
	if (strcmp(mode, "peergone") == 0) {
		CHECK(send(63, "pg", 2, 0) == 2);
		EXPECT(62, "pg");
	}
	if (strcmp(mode, "many") == 0) {
		for (int i = 0; i < 4097; i++)
			EXPECT(63, "m");
		CHECK(recv(63, sv, 1, MSG_DONTWAIT) < 0 && errno == EAGAIN);
	}
	if (strcmp(mode, "deldir") == 0) {
		struct stat dst;
		char g[4096];
		snprintf(g, sizeof(g), "%s.dir/s", s);
		CHECK(name_is(62, false, g) && lstat(g, &dst) < 0 && errno == ENOENT);
	}
	if (strcmp(mode, "rights") == 0) {
		char b[4];
		_Alignas(struct cmsghdr) char c[CMSG_SPACE(sizeof(int))];
		struct iovec v = { b, sizeof(b) };
		struct msghdr m = { .msg_iov = &v, .msg_iovlen = 1, .msg_control = c, .msg_controllen = sizeof(c) };
		EXPECT(63, "plain");
		CHECK(recvmsg(63, &m, MSG_DONTWAIT) == 2 && CMSG_FIRSTHDR(&m) &&
		      CMSG_FIRSTHDR(&m)->cmsg_type == SCM_RIGHTS);
	}

	if (strcmp(mode, "peekoff") == 0) {
		int off = -2;
		socklen_t ol = sizeof(off);
		CHECK(getsockopt(51, SOL_SOCKET, SO_PEEK_OFF, &off, &ol) == 0 && off == 0);
		setsockopt(51, SOL_SOCKET, SO_PEEK_OFF, &(int){ -1 }, sizeof(int));
	}
	EXPECT(51, "first");
	EXPECT(51, "");
	EXPECT(51, "third, longer than the others");
	EXPECT(50, "back");
	CHECK(recv(51, sv, 1, MSG_DONTWAIT) < 0 && errno == EAGAIN);

	/* the credentials of a refilled datagram are the restored process's */
	char buf[16];
	_Alignas(struct cmsghdr) char ctl[CMSG_SPACE(sizeof(struct ucred))];
	struct iovec iov = { buf, sizeof(buf) };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl, .msg_controllen = sizeof(ctl) };
	CHECK(recvmsg(53, &mh, MSG_DONTWAIT) == 2 && !memcmp(buf, "d1", 2));
	struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
	CHECK(cm && cm->cmsg_type == SCM_CREDENTIALS && ((struct ucred *)CMSG_DATA(cm))->pid == getpid());
	EXPECT(53, "d2");
	CHECK(send(53, "up", 2, 0) == 2);
	EXPECT(52, "up");

	EXPECT(54, "q1");
	EXPECT(54, "q2");
	CHECK(name_is(54, false, q.sun_path));

	CHECK(name_is(57, false, l.sun_path) && name_is(56, true, l.sun_path));
	EXPECT(57, "to server");
	EXPECT(56, "to client");
	CHECK(write(56, "y", 1) == 1 && read(57, buf, 1) == 1 && buf[0] == 'y');
	connects(55, &l);

	struct stat st;
	CHECK(name_is(58, false, del.sun_path) && lstat(del.sun_path, &st) < 0 && errno == ENOENT);
	CHECK(name_is(59, false, ddel.sun_path) && lstat(ddel.sun_path, &st) < 0 && errno == ENOENT);
	EXPECT(59, "gone");

	CHECK(name_is(60, false, "rel.sock") && name_is(61, false, "rel.dgram"));
	connects(60, &rl);
	EXPECT(61, "rel");

	struct sockaddr_un got;
	socklen_t gl = sizeof(got);
	CHECK(getsockname(66, (void *)&got, &gl) == 0 && gl == ablen && !memcmp(&got, &ab, ablen));
	gl = sizeof(got);
	CHECK(getpeername(65, (void *)&got, &gl) == 0 && gl == ablen && !memcmp(&got, &ab, ablen));
	EXPECT(66, "abstract");
	c = socket(AF_UNIX, SOCK_SEQPACKET, 0);
	CHECK(connect(c, (void *)&ab, ablen) == 0 && accept(64, NULL, NULL) >= 0);
	gl = sizeof(got);
	CHECK(getsockname(67, (void *)&got, &gl) == 0 && gl == dblen && !memcmp(&got, &db, dblen));
	gl = sizeof(got);
	CHECK(getpeername(68, (void *)&got, &gl) == 0 && gl == dblen && !memcmp(&got, &db, dblen));
	EXPECT(67, "named");
	CHECK(send(67, "back", 4, 0) == 4);
	EXPECT(68, "back");

	unlink(q.sun_path);
	unlink(l.sun_path);
	unlink("rel.sock");
	unlink("rel.dgram");
	target_pass();
}
