/*
 * A terminal session inside the tree, as a terminal emulator runs a
 * shell: the root R holds the master (fd 40, inherited by S: one
 * description held by two processes); its child S starts a
 * session whose controlling terminal is the slave (fd 41, opened without
 * O_NOCTTY); S's child G, in a group of its own, is the foreground group.
 * A line R wrote before the dump waits unread in the slave's queue, its
 * echo in the master's.
 *
 * After restore: S leads its session and the slave is its controlling
 * terminal, G's group is the foreground one, /dev/tty opens to the slave
 * in both (and G's /dev/tty descriptor, held across the dump, is that
 * terminal again), the window size is kept; G reads the queued line and one R
 * writes now, and answers; R reads the echoes and the answer. S and G
 * exit with 0 or the line of the check that failed; R gives the verdict.
 */
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <termios.h>

#include "target.h"

#define CHECK(c) do { if (!(c)) target_verdict(0, "line %d: %s (%s)", __LINE__, #c, strerror(errno)); } while (0)
/* in S and G: the exit status says which check failed */
#define CHILD_CHECK(c) do { if (!(c)) _exit(__LINE__ % 256 ? __LINE__ % 256 : 1); } while (0)

static volatile uint64_t *word; /* shared: 1 once G is the foreground group */

/* /dev/tty is the terminal fd is on (TIOCGDEV: the device behind it; a
 * stat of /dev/tty says 5:0) */
static bool same_tty(int t, int fd)
{
	struct stat b;
	unsigned dev = 0;

	return t >= 0 && ioctl(t, TIOCGDEV, &dev) == 0 && fstat(fd, &b) == 0 &&
	       dev == (unsigned)(major(b.st_rdev) << 8 | minor(b.st_rdev));
}

static bool dev_tty_is(int fd)
{
	int t = open("/dev/tty", O_RDWR | O_CLOEXEC);
	bool ok = same_tty(t, fd);
	if (t >= 0)
		close(t);
	return ok;
}

static _Noreturn void g_main(pid_t s)
{
	char buf[64];

	close(40);
	/* held open, as less(1) and ssh(1) hold it to ask the user */
	int t = open("/dev/tty", O_RDWR | O_CLOEXEC);
	CHILD_CHECK(t >= 0 && dup3(t, 42, O_CLOEXEC) == 42);
	close(t);
	setpgid(0, 0);
	while (*word != 1)
		usleep(1000);
	target_wait_restored();
	CHILD_CHECK(getsid(0) == s && getpgrp() == getpid());
	CHILD_CHECK(tcgetpgrp(41) == getpgrp());
	CHILD_CHECK(dev_tty_is(41));
	CHILD_CHECK(same_tty(42, 41));
	/* canonical: one line a read, the one queued before the dump first */
	CHILD_CHECK(read(41, buf, sizeof(buf)) == 7 && memcmp(buf, "queued\n", 7) == 0);
	CHILD_CHECK(read(41, buf, sizeof(buf)) == 5 && memcmp(buf, "ping\n", 5) == 0);
	CHILD_CHECK(write(41, "pong\n", 5) == 5);
	_exit(0);
}

static _Noreturn void s_main(void)
{
	struct winsize ws;
	int st;

	CHILD_CHECK(setsid() == getpid());
	int fd = open(ptsname(40), O_RDWR | O_CLOEXEC); /* no O_NOCTTY: our controlling terminal */
	CHILD_CHECK(fd >= 0 && dup3(fd, 41, O_CLOEXEC) == 41);
	close(fd);
	/* S keeps R's master too: one description held by two processes */
	pid_t g = fork();
	CHILD_CHECK(g >= 0);
	if (g == 0)
		g_main(getppid());
	setpgid(g, g);
	CHILD_CHECK(tcsetpgrp(41, g) == 0);
	*word = 1;
	target_wait_restored();
	CHILD_CHECK(getsid(0) == getpid() && tcgetsid(41) == getpid());
	CHILD_CHECK(tcgetpgrp(41) == g);
	CHILD_CHECK(dev_tty_is(41));
	/* the master it shares with R is its terminal's, renumbered or not */
	CHILD_CHECK(ptsname(40) && ttyname(41) && strcmp(ptsname(40), ttyname(41)) == 0);
	CHILD_CHECK(ioctl(41, TIOCGWINSZ, &ws) == 0 && ws.ws_row == 42 && ws.ws_col == 132);
	CHILD_CHECK(waitpid(g, &st, 0) == g);
	_exit(WIFEXITED(st) ? WEXITSTATUS(st) : 200);
}

/* Reads from the master until buf holds want (10 s at most). */
static bool master_has(char *buf, size_t cap, const char *want)
{
	size_t len = strlen(buf);
	struct pollfd p = { .fd = 40, .events = POLLIN };

	while (!strstr(buf, want) && len + 1 < cap && poll(&p, 1, 10000) == 1) {
		ssize_t n = read(40, buf + len, cap - 1 - len);
		if (n <= 0)
			return false;
		len += (size_t)n;
		buf[len] = 0;
	}
	return strstr(buf, want) != NULL;
}

int main(int argc, char **argv)
{
	target_init(argc, argv, 0);
	struct winsize ws = { .ws_row = 42, .ws_col = 132 };
	char out[256] = "";
	int st;

	word = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	CHECK(word != MAP_FAILED);
	int m = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
	CHECK(m >= 0 && unlockpt(m) == 0 && dup3(m, 40, O_CLOEXEC) == 40);
	close(m);
	CHECK(ioctl(40, TIOCSWINSZ, &ws) == 0);
	pid_t s = fork();
	CHECK(s >= 0);
	if (s == 0)
		s_main();
	CHECK(target_wait_word(word, 1, 10000));
	/* typed before the dump, unread: the line in the slave's queue,
	 * its echo in ours */
	CHECK(write(40, "queued\n", 7) == 7);
	struct pollfd p = { .fd = 40, .events = POLLIN };
	CHECK(poll(&p, 1, 10000) == 1);

	target_ready();
	target_wait_restored();
	CHECK(write(40, "ping\n", 5) == 5);
	if (!master_has(out, sizeof(out), "pong\r\n")) {
		/* the session gone first says why */
		int e = errno;
		if (waitpid(s, &st, 0) == s && (!WIFEXITED(st) || WEXITSTATUS(st)))
			target_verdict(0, "the session (S, G) failed: status 0x%x (exit code: the line of its check)", st);
		target_verdict(0, "no answer on the master: '%s' (%s)", out, strerror(e));
	}
	CHECK(strcmp(out, "queued\r\nping\r\npong\r\n") == 0);
	CHECK(waitpid(s, &st, 0) == s);
	if (!WIFEXITED(st) || WEXITSTATUS(st))
		target_verdict(0, "the session (S, G) failed: status 0x%x (exit code: the line of its check)", st);
	target_pass();
}
