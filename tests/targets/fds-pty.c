/*
 * Two pseudo-terminal pairs held whole by the process, as a terminal
 * emulator or `script` holds them.
 *
 * Pair A (master 40, slave 41 and its dup 42): canonical mode without
 * echo, 9600 baud, a window of 101x37 (707x333 pixels), packet mode on
 * the master. Queued towards the slave: two complete lines, a line ended
 * by VEOF (no newline) and a partly typed line; towards the master: what
 * the slave wrote, "\n" made "\r\n" by ONLCR.
 * Pair B (master 43, slave 44): raw, bytes including ^C queued towards
 * the slave.
 * Masters alone: 45, whose slave was never opened (its reads wait); 46,
 * whose slave was opened and closed (its reads end: EIO); 47, never
 * unlocked.
 *
 * After restore: the settings, the window, packet mode, every queued byte
 * with its line boundaries, the partial line completed by a later write,
 * both directions working again, and the names: the new slave's number
 * may differ, but ptsname(master) and ttyname(slave) agree.
 */
#include <poll.h>
#include <sys/ioctl.h>
#include <termios.h>

#include "target.h"

#define CHECK(c) do { if (!(c)) target_verdict(0, "line %d: %s (%s)", __LINE__, #c, strerror(errno)); } while (0)

static void at(int fd, int n)
{
	if (fd < 0 || dup3(fd, n, O_CLOEXEC) < 0)
		target_verdict(0, "setting up fd %d: %s", n, strerror(errno));
	close(fd);
}

static void pair(int m, int s)
{
	int fd = posix_openpt(O_RDWR | O_NOCTTY);
	if (fd < 0 || unlockpt(fd) < 0)
		target_verdict(0, "posix_openpt: %s", strerror(errno));
	at(fd, m);
	at(open(ptsname(m), O_RDWR | O_NOCTTY), s);
}

static void put(int fd, const char *s, size_t n)
{
	if (write(fd, s, n) != (ssize_t)n)
		target_verdict(0, "write to fd %d: %s", fd, strerror(errno));
}

/* Waits until fd has bytes to read (the line discipline works from a
 * queue). */
static void readable(int fd)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	CHECK(poll(&p, 1, 10000) == 1);
}

/* Reads what fd has now (non-blocking) into buf, NUL-terminated. */
static ssize_t take(int fd, char *buf, size_t n)
{
	ssize_t r = read(fd, buf, n - 1);
	buf[r > 0 ? r : 0] = 0;
	return r;
}

int main(int argc, char **argv)
{
	target_init(argc, argv, 0);
	struct termios t;
	struct winsize ws = { .ws_row = 37, .ws_col = 101, .ws_xpixel = 707, .ws_ypixel = 333 }, w2;
	char buf[256];
	int on = 1, v;

	pair(40, 41);
	at(dup(41), 42);
	CHECK(tcgetattr(41, &t) == 0);
	t.c_lflag |= ICANON;
	t.c_lflag &= ~(tcflag_t)(ECHO | ECHOE | ECHOK | ECHOCTL | ECHOKE);
	t.c_oflag |= OPOST | ONLCR;
	cfsetispeed(&t, B9600);
	cfsetospeed(&t, B9600);
	CHECK(tcsetattr(41, TCSANOW, &t) == 0);
	CHECK(ioctl(40, TIOCSWINSZ, &ws) == 0);
	CHECK(ioctl(40, TIOCPKT, &on) == 0);
	CHECK(fcntl(41, F_SETFL, O_NONBLOCK) == 0);
	/* towards the slave: what a user typed; ^D ends "eofl" without a newline */
	put(40, "line one\neofl\004line two\npart", 27);
	/* towards the master */
	put(41, "hello out\n", 10);

	pair(43, 44);
	CHECK(tcgetattr(44, &t) == 0);
	cfmakeraw(&t);
	CHECK(tcsetattr(44, TCSANOW, &t) == 0);
	CHECK(fcntl(44, F_SETFL, O_NONBLOCK) == 0);
	put(43, "raw\003bytes", 9);

	at(posix_openpt(O_RDWR | O_NOCTTY | O_NONBLOCK), 45);
	CHECK(unlockpt(45) == 0);
	at(posix_openpt(O_RDWR | O_NOCTTY | O_NONBLOCK), 46);
	CHECK(unlockpt(46) == 0);
	close(open(ptsname(46), O_RDWR | O_NOCTTY));
	at(posix_openpt(O_RDWR | O_NOCTTY), 47);

	/* the line discipline takes them from a queue: wait until it has */
	readable(41);
	readable(44);
	struct pollfd pm = { .fd = 40, .events = POLLIN };
	CHECK(poll(&pm, 1, 10000) == 1);

	target_ready();
	target_wait_restored();

	CHECK(tcgetattr(41, &t) == 0);
	CHECK((t.c_lflag & ICANON) && !(t.c_lflag & ECHO) && (t.c_oflag & ONLCR));
	CHECK(cfgetospeed(&t) == B9600 && cfgetispeed(&t) == B9600);
	CHECK(ioctl(41, TIOCGWINSZ, &w2) == 0);
	CHECK(w2.ws_row == 37 && w2.ws_col == 101 && w2.ws_xpixel == 707 && w2.ws_ypixel == 333);
	CHECK(ioctl(40, TIOCGPKT, &v) == 0 && v == 1);
	CHECK(ioctl(40, TIOCGPTLCK, &v) == 0 && v == 0);

	/* one line a read, the VEOF-ended one without its ^D */
	CHECK(take(41, buf, sizeof(buf)) == 9 && strcmp(buf, "line one\n") == 0);
	CHECK(take(42, buf, sizeof(buf)) == 4 && strcmp(buf, "eofl") == 0);
	CHECK(take(41, buf, sizeof(buf)) == 9 && strcmp(buf, "line two\n") == 0);
	/* "part" is still being typed: no line yet */
	CHECK(take(41, buf, sizeof(buf)) < 0 && errno == EAGAIN);
	put(40, "ial\n", 4);
	readable(41);
	CHECK(take(41, buf, sizeof(buf)) == 8 && strcmp(buf, "partial\n") == 0);

	/* packet mode: a TIOCPKT_DATA byte, then what the slave wrote */
	CHECK(take(40, buf, sizeof(buf)) == 12 && buf[0] == TIOCPKT_DATA && strcmp(buf + 1, "hello out\r\n") == 0);
	/* ONLCR writes "again" and "\r\n" apart: the master may see them
	 * in two reads, each with its TIOCPKT_DATA byte */
	put(41, "again\n", 6);
	char got[64] = "";
	for (size_t len = 0; len < 7;) {
		CHECK(poll(&pm, 1, 10000) == 1);
		ssize_t n = take(40, buf, sizeof(buf));
		CHECK(n > 1 && buf[0] == TIOCPKT_DATA && len + (size_t)n - 1 < sizeof(got));
		memcpy(got + len, buf + 1, (size_t)n - 1);
		len += (size_t)n - 1;
	}
	CHECK(strcmp(got, "again\r\n") == 0);

	CHECK(take(44, buf, sizeof(buf)) == 9 && memcmp(buf, "raw\003bytes", 9) == 0);
	CHECK(take(44, buf, sizeof(buf)) < 0 && errno == EAGAIN);

	CHECK(read(45, buf, sizeof(buf)) < 0 && errno == EAGAIN);
	CHECK(read(46, buf, sizeof(buf)) < 0 && errno == EIO);
	CHECK(ioctl(45, TIOCGPTLCK, &v) == 0 && v == 0);
	CHECK(ioctl(47, TIOCGPTLCK, &v) == 0 && v == 1);

	/* the number may have changed; the names agree */
	char name[64];
	CHECK(ptsname_r(40, name, sizeof(name)) == 0);
	CHECK(ttyname(41) && strcmp(ttyname(41), name) == 0);
	CHECK(ptsname_r(43, name, sizeof(name)) == 0);
	CHECK(ttyname(44) && strcmp(ttyname(44), name) == 0);
	target_pass();
}
