/*
 * Terminal targets through the real tools (`ckpt dump`, `ckpt restore`):
 * pseudo-terminal pairs held whole by a process (target-fds-pty) or by a
 * tree with a session whose controlling terminal is one of them
 * (target-fds-pty-tree), and a slave whose master the test itself holds
 * (target-fds-pty-out, as a program under tmux or ssh). Each restored
 * target checks its own state; a dump failing at fault 260 or 261 leaves
 * the queued bytes where they were, which the original then checks; a
 * restore failing at 262 leaves nothing behind, and the snapshot restores
 * afterwards.
 *
 * Needs root. The test is a child subreaper, so that restored processes
 * become its children and are reaped here.
 */
#include <check.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <termios.h>

#include "common/common.h"
#include "tests/integration/ckpt-run.h"

static void setup(void)
{
	case_begin("fds-tty");
}

/* Starts tests/targets/target-NAME READY RESULT with stdin, stdout and
 * stderr on tty_fd (or /dev/null when -1). */
static pid_t spawn(const char *name, int tty_fd)
{
	char prog[64];
	snprintf(prog, sizeof(prog), "target-%s", name);
	return case_spawn(NULL, prog, tty_fd, NULL, 10000);
}

static void cycle(const char *name, const char *mode)
{
	char p[32], out[64];
	int rc;
	pid_t pid = spawn(name, -1);

	snprintf(p, sizeof(p), "%d", pid);
	rc = mode ? case_ckpt(NULL, NULL, 0, "dump", mode, p, case_path("snap"))
		  : case_ckpt(NULL, NULL, 0, "dump", p, case_path("snap"), NULL);
	ck_assert_msg(rc == 0, "ckpt dump %s: %s", mode ? mode : "", case_ckpt_err());
	if (!mode || strcmp(mode, "--kill"))
		case_kill_tree(pid);
	else
		case_reap_tree(pid);
	rc = case_ckpt(NULL, out, sizeof(out), "restore", case_path("snap"), NULL, NULL);
	ck_assert_msg(rc == 0, "ckpt restore: %s", case_ckpt_err());
	case_verdict(atoi(out));
}

START_TEST(pty_running) { cycle("fds-pty", NULL); } END_TEST
START_TEST(pty_kill) { cycle("fds-pty", "--kill"); } END_TEST
START_TEST(pty_stop) { cycle("fds-pty", "--stop"); } END_TEST
START_TEST(session_running) { cycle("fds-pty-tree", NULL); } END_TEST
START_TEST(session_kill) { cycle("fds-pty-tree", "--kill"); } END_TEST
START_TEST(session_stop) { cycle("fds-pty-tree", "--stop"); } END_TEST

/* The image says what was kept: settings, window, packet mode, queued
 * bytes and where VEOF went; the slave is a pts line of its pair. */
START_TEST(pty_image)
{
	char p[32], fp[64], *fds = NULL;
	pid_t pid = spawn("fds-pty", -1);

	snprintf(p, sizeof(p), "%d", pid);
	ck_assert_msg(case_ckpt(NULL, NULL, 0, "dump", p, case_path("snap"), NULL) == 0, "ckpt dump: %s", case_ckpt_err());
	snprintf(fp, sizeof(fp), "snap/%d/fds", pid);
	ck_assert_int_eq(read_file_full(case_path(fp), &fds, NULL), 0);
	ck_assert_msg(strstr(fds, "\n40 ptmx flags=02 ") && strstr(fds, " rows=37 cols=101 xpixel=707 ypixel=333 pkt=1 locked=0 in=26 out=11 eof=13 ") &&
			      strstr(fds, "\n41 pts flags=04002 cloexec=1 pty=") && strstr(fds, "\n42 dup of=41"),
		      "fds: %s", fds);
	free(fds);
	/* the original still has it all: it checks itself */
	case_verdict(pid);
}
END_TEST

/* The session's pair is in shared/fds, with the session and its
 * foreground group; the master, held by R and S, is one shared line. */
START_TEST(session_image)
{
	char p[32], fp[64], want[64], *shared = NULL, *fds = NULL;
	pid_t pid = spawn("fds-pty-tree", -1), v[8];

	ck_assert_int_eq(case_descendants(pid, v, ARRAY_SIZE(v)), 3);
	snprintf(p, sizeof(p), "%d", pid);
	ck_assert_msg(case_ckpt(NULL, NULL, 0, "dump", p, case_path("snap"), NULL) == 0, "ckpt dump: %s", case_ckpt_err());
	ck_assert_int_eq(read_file_full(case_path("snap/shared/fds"), &shared, NULL), 0);
	snprintf(want, sizeof(want), " ctty=%d fg=%d", v[1], v[2]);
	ck_assert_msg(strstr(shared, " ptmx flags=02 ") && strstr(shared, want) && strstr(shared, " pts flags=02 "),
		      "shared/fds: %s", shared);
	snprintf(fp, sizeof(fp), "snap/%d/fds", v[1]);
	ck_assert_int_eq(read_file_full(case_path(fp), &fds, NULL), 0);
	ck_assert_msg(strstr(fds, "\n40 shared of=") && strstr(fds, "\n41 shared of="), "%s: %s", fp, fds);
	free(shared);
	free(fds);
	/* the original, dumped running, has it all still */
	case_verdict(pid);
}
END_TEST

/* A pty the test holds the master of, as tmux would; the slave goes to
 * the target's stdin, stdout and stderr. Returns the master; the slave's
 * name in name. */
static int holder_pty(char *name, size_t len)
{
	struct winsize ws = { .ws_row = 50, .ws_col = 160 };
	int m = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);

	ck_assert_int_ge(m, 0);
	ck_assert_int_eq(unlockpt(m), 0);
	ck_assert_int_eq(ptsname_r(m, name, len), 0);
	ck_assert_int_eq(ioctl(m, TIOCSWINSZ, &ws), 0);
	return m;
}

static pid_t spawn_on(const char *name, const char *target)
{
	int s = open(name, O_RDWR | O_NOCTTY | O_CLOEXEC);

	ck_assert_int_ge(s, 0);
	pid_t pid = spawn(target, s);
	close(s);
	return pid;
}

/* Reads the master until it holds want (10 s at most). */
static void master_wait(int m, const char *want)
{
	char buf[512] = "";
	size_t len = 0;
	struct pollfd p = { .fd = m, .events = POLLIN };

	while (!strstr(buf, want) && len + 1 < sizeof(buf) && poll(&p, 1, 10000) == 1) {
		ssize_t n = read(m, buf + len, sizeof(buf) - 1 - len);
		if (n < 0 && errno == EIO)
			continue; /* no slave open for a moment */
		ck_assert_int_gt(n, 0);
		len += (size_t)n;
		buf[len] = 0;
	}
	ck_assert_msg(strstr(buf, want), "the master read '%s', not '%s'", buf, want);
}

/* Reopened by its path: the same terminal, the holder's settings, and
 * both ways working (running: the original killed after the dump). */
static void outside(const char *target, const char *mode)
{
	char name[64], p[32], out[64];
	int m = holder_pty(name, sizeof(name));
	pid_t pid = spawn_on(name, target);
	struct winsize ws = { .ws_row = 51, .ws_col = 161 };

	snprintf(p, sizeof(p), "%d", pid);
	ck_assert_msg((mode ? case_ckpt(NULL, NULL, 0, "dump", mode, p, case_path("snap"))
			    : case_ckpt(NULL, NULL, 0, "dump", p, case_path("snap"), NULL)) == 0,
		      "ckpt dump: %s", case_ckpt_err());
	if (!mode)
		case_kill_tree(pid);
	else
		case_reap_tree(pid);
	ck_assert_int_eq(ioctl(m, TIOCSWINSZ, &ws), 0);
	ck_assert_msg(case_ckpt(NULL, out, sizeof(out), "restore", case_path("snap"), NULL, NULL) == 0, "ckpt restore: %s",
		      case_ckpt_err());
	pid = atoi(out);
	ck_assert_int_eq(write(m, "hello\n", 6), 6);
	/* its own verdict first: it says what it missed */
	case_verdict(pid);
	master_wait(m, "got: hello\r\n");
	close(m);
}

START_TEST(outside_running) { outside("fds-pty-out", NULL); } END_TEST
START_TEST(outside_kill) { outside("fds-pty-out", "--kill"); } END_TEST
/* a session led in the tree on it: its controlling terminal again */
START_TEST(outside_session_running) { outside("fds-pty-outsession", NULL); } END_TEST
START_TEST(outside_session_kill) { outside("fds-pty-outsession", "--kill"); } END_TEST

/* The fd of the restored pid says what it became. */
static void fd0_is(pid_t pid, const char *want)
{
	char p[64], link[PATH_MAX];
	snprintf(p, sizeof(p), "/proc/%d/fd/0", pid);
	ssize_t n = readlink(p, link, sizeof(link) - 1);
	ck_assert_int_gt(n, 0);
	link[n] = 0;
	ck_assert_msg(strcmp(link, want) == 0, "fd 0 is %s, not %s", link, want);
}

/* The holder is gone at restore (its pty with it), or its number went to
 * another pty meanwhile: /dev/null, with a warning saying which. Never
 * the stranger's terminal. */
static void outside_lost(bool reused)
{
	char name[64], again[64], p[32], out[64];
	int m = holder_pty(name, sizeof(name)), m2 = -1;
	pid_t pid = spawn_on(name, "fds-pty-out");

	snprintf(p, sizeof(p), "%d", pid);
	ck_assert_msg(case_ckpt(NULL, NULL, 0, "dump", "--kill", p, case_path("snap")) == 0, "ckpt dump: %s", case_ckpt_err());
	case_reap_tree(pid);
	close(m);
	if (reused) {
		/* devpts hands out the lowest free number: ours again, unless
		 * another program took it meanwhile */
		for (int i = 0; i < 100; i++) {
			m2 = holder_pty(again, sizeof(again));
			if (strcmp(again, name) == 0)
				break;
			close(m2);
			m2 = -1;
		}
		if (m2 < 0) {
			printf("%s was not handed out again: the reuse case is not shown\n", name);
			return;
		}
	}
	ck_assert_msg(case_ckpt(NULL, out, sizeof(out), "restore", case_path("snap"), NULL, NULL) == 0, "ckpt restore: %s",
		      case_ckpt_err());
	pid = atoi(out);
	ck_assert_msg(strstr(case_ckpt_err(), reused ? "is another terminal now" : "is gone") &&
			      strstr(case_ckpt_err(), "restored as /dev/null"),
		      "stderr: %s", case_ckpt_err());
	fd0_is(pid, "/dev/null");
	kill(pid, SIGKILL);
	case_reap_tree(pid);
	if (m2 >= 0)
		close(m2);
}

START_TEST(outside_gone) { outside_lost(false); } END_TEST
START_TEST(outside_number_reused) { outside_lost(true); } END_TEST

/* A dump failing with the queues read out (260) or read and put back
 * (261) leaves them as they were: the original checks them itself. */
static void dump_fails(const char *fault)
{
	char p[32];
	pid_t pid = spawn("fds-pty", -1);

	snprintf(p, sizeof(p), "%d", pid);
	ck_assert_int_ne(case_ckpt(fault, NULL, 0, "dump", p, case_path("snap"), NULL), 0);
	ck_assert_msg(strstr(case_ckpt_err(), "pseudo-terminal /dev/pts/"), "stderr: %s", case_ckpt_err());
	ck_assert_int_ne(access(case_path("snap/manifest"), F_OK), 0);
	case_verdict(pid);
}

START_TEST(dump_fails_draining) { dump_fails("260"); } END_TEST

/* Without TIOCSTI (fault 263: as for a dumper or restorer lacking
 * CAP_SYS_ADMIN), queued bytes go back through the other side of the
 * pair: the original, dumped running, still has them all, and so has the
 * restore of a --kill dump. */
static void without_sti(const char *target)
{
	char p[32], out[64];
	pid_t pid = spawn(target, -1);

	snprintf(p, sizeof(p), "%d", pid);
	ck_assert_msg(case_ckpt("263", NULL, 0, "dump", p, case_path("snap"), NULL) == 0, "ckpt dump: %s", case_ckpt_err());
	/* the original checks itself: its queues went back */
	case_verdict(pid);
	unlink(case_path("ready.restored"));
	unlink(case_path("result"));
	unlink(case_path("ready"));
	rm_rf(case_path("snap"));
	pid = spawn(target, -1);
	snprintf(p, sizeof(p), "%d", pid);
	ck_assert_msg(case_ckpt("263", NULL, 0, "dump", "--kill", p, case_path("snap")) == 0, "ckpt dump --kill: %s",
		      case_ckpt_err());
	case_reap_tree(pid);
	ck_assert_msg(case_ckpt("263", out, sizeof(out), "restore", case_path("snap"), NULL, NULL) == 0, "ckpt restore: %s",
		      case_ckpt_err());
	case_verdict(atoi(out));
}

START_TEST(pty_without_sti) { without_sti("fds-pty"); } END_TEST
START_TEST(session_without_sti) { without_sti("fds-pty-tree"); } END_TEST
START_TEST(dump_fails_after_capture) { dump_fails("261"); } END_TEST

/* A restore failing while the new pair is filled: an error naming the
 * descriptor, and the same snapshot restores afterwards. */
START_TEST(restore_fails_refilling)
{
	char p[32], out[64];
	pid_t pid = spawn("fds-pty", -1);

	snprintf(p, sizeof(p), "%d", pid);
	ck_assert_msg(case_ckpt(NULL, NULL, 0, "dump", "--kill", p, case_path("snap")) == 0, "ckpt dump: %s", case_ckpt_err());
	case_reap_tree(pid);
	ck_assert_int_ne(case_ckpt("262", out, sizeof(out), "restore", case_path("snap"), NULL, NULL), 0);
	ck_assert_msg(strstr(case_ckpt_err(), "fd 40: refilling the pseudo-terminal: injected fault"), "stderr: %s",
		      case_ckpt_err());
	/* what the failed restore made is dead and came to us: reaped */
	int st;
	while (waitpid(-1, &st, 0) > 0)
		;
	ck_assert_msg(case_ckpt(NULL, out, sizeof(out), "restore", case_path("snap"), NULL, NULL) == 0, "ckpt restore: %s",
		      case_ckpt_err());
	case_verdict(atoi(out));
}
END_TEST

int main(void)
{
	const struct case_def cases[] = {
		{ "pty_running", pty_running },
		{ "pty_kill", pty_kill },
		{ "pty_stop", pty_stop },
		{ "pty_image", pty_image },
		{ "session_running", session_running },
		{ "session_kill", session_kill },
		{ "session_stop", session_stop },
		{ "session_image", session_image },
		{ "outside_running", outside_running },
		{ "outside_kill", outside_kill },
		{ "outside_session_running", outside_session_running },
		{ "outside_session_kill", outside_session_kill },
		{ "outside_gone", outside_gone },
		{ "outside_number_reused", outside_number_reused },
		{ "dump_fails_draining", dump_fails_draining },
		{ "pty_without_sti", pty_without_sti },
		{ "session_without_sti", session_without_sti },
		{ "dump_fails_after_capture", dump_fails_after_capture },
		{ "restore_fails_refilling", restore_fails_refilling },
	};

	return case_main("engine-fds-tty", cases, ARRAY_SIZE(cases), 30, setup, case_end, "ptrace, pidfd_getfd, clone3 set_tid, TIOCSTI");
}
