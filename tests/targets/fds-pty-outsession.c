/*
 * A session on a terminal whose master is held outside the tree (a login
 * shell in a tmux pane or an ssh session): stdin, stdout and stderr are a
 * pty slave the caller holds the master of; the target starts a session
 * with it as controlling terminal and a child G in a group of its own,
 * the foreground one.
 *
 * After restore (the original gone, which let go of the terminal): the
 * target leads its session again on that same terminal, reopened by path,
 * G's group is the foreground one, /dev/tty opens; G reads a line the
 * holder writes and answers. G exits with 0 or the line of its failed
 * check.
 */
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <termios.h>

#include "target.h"

#define CHECK(c) do { if (!(c)) target_verdict(0, "line %d: %s (%s)", __LINE__, #c, strerror(errno)); } while (0)
#define CHILD_CHECK(c) do { if (!(c)) _exit(__LINE__ % 256 ? __LINE__ % 256 : 1); } while (0)

int main(int argc, char **argv)
{
	target_init(argc, argv, 0);
	volatile uint64_t *word = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	char name[64], buf[64];
	int st;

	CHECK(word != MAP_FAILED && ttyname_r(0, name, sizeof(name)) == 0);
	CHECK(setsid() == getpid());
	int t = open(name, O_RDWR | O_CLOEXEC); /* no O_NOCTTY: our controlling terminal now */
	CHECK(t >= 0 && tcgetsid(t) == getpid());
	close(t);
	pid_t g = fork();
	CHECK(g >= 0);
	if (g == 0) {
		setpgid(0, 0);
		while (*word != 1)
			usleep(1000);
		target_wait_restored();
		CHILD_CHECK(tcgetpgrp(0) == getpgrp());
		CHILD_CHECK(read(0, buf, sizeof(buf)) == 6 && memcmp(buf, "hello\n", 6) == 0);
		CHILD_CHECK(write(1, "got: hello\n", 11) == 11);
		_exit(0);
	}
	setpgid(g, g);
	CHECK(tcsetpgrp(0, g) == 0);
	*word = 1;
	target_ready();
	target_wait_restored();

	CHECK(getsid(0) == getpid() && tcgetsid(0) == getpid());
	CHECK(tcgetpgrp(0) == g);
	CHECK(ttyname(0) && strcmp(ttyname(0), name) == 0);
	t = open("/dev/tty", O_RDWR | O_CLOEXEC);
	CHECK(t >= 0);
	close(t);
	CHECK(waitpid(g, &st, 0) == g);
	if (!WIFEXITED(st) || WEXITSTATUS(st))
		target_verdict(0, "G failed: status 0x%x (exit code: the line of its check)", st);
	target_pass();
}
