/*
 * A program in a terminal whose master is held outside it (under tmux,
 * screen or ssh): stdin, stdout and stderr are a pty slave the caller
 * holds the master of. After restore they are that same terminal again,
 * reopened by its path: the same name, the settings and window size the
 * holder has now (the test changes the window while the target is away),
 * and a line the holder writes after the restore is read and answered.
 */
#include <sys/ioctl.h>
#include <termios.h>

#include "target.h"

#define CHECK(c) do { if (!(c)) target_verdict(0, "line %d: %s (%s)", __LINE__, #c, strerror(errno)); } while (0)

int main(int argc, char **argv)
{
	target_init(argc, argv, 0);
	char name[64], buf[64];
	struct winsize ws;

	CHECK(isatty(0) && ttyname_r(0, name, sizeof(name)) == 0);
	target_ready();
	target_wait_restored();

	CHECK(isatty(0) && isatty(1) && ttyname(0) && strcmp(ttyname(0), name) == 0);
	/* what the holder set while we were away */
	CHECK(ioctl(0, TIOCGWINSZ, &ws) == 0 && ws.ws_row == 51 && ws.ws_col == 161);
	ssize_t n = read(0, buf, sizeof(buf) - 1);
	CHECK(n == 6 && memcmp(buf, "hello\n", 6) == 0);
	CHECK(write(1, "got: hello\n", 11) == 11);
	target_pass();
}
