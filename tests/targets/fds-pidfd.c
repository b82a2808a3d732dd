/*
 * pidfds (a tree: the target and one child): fd 40 a PIDFD_NONBLOCK pidfd
 * of its live child (in the tree), fd 41 a pidfd of a child that exited
 * and was reaped (dead), fd 42 a PIDFD_THREAD pidfd of itself, fd 44 a
 * pidfd of a child that exited and was not reaped (a zombie); with
 * SCRATCH, fd 43 a pidfd of a process outside the tree (a grandchild
 * whose parent exited, so that it went to the test, the subreaper),
 * whose pid it writes into SCRATCH. The child holds fd 50, a pidfd of its
 * parent, an AIO context it used once on /dev/zero (fd 51), and the
 * write end of a pipe to it (47 -> 48).
 *
 * After restore: 40 names the child by its pid and stays non-blocking
 * (waitid gives EAGAIN while it lives); signalled through 40 the child
 * dies and is waited for through it. 41 reads as dead as before the
 * checkpoint: POLLIN, pidfd_send_signal() and waitid() fail as they did.
 * 42 names the process itself, as a thread pidfd. 44, of a child left a
 * zombie, names it, reads as exited, and waits for it with its status.
 * 43 names the outside
 * process, alive, which it then kills through it. The child finds that
 * its fd 50 names its restored parent and that its AIO context reads
 * /dev/zero again, and says so through the pipe before its parent kills
 * it.
 * Arguments: [SCRATCH].
 */
#include <linux/aio_abi.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>

#include "target.h"

#ifndef PIDFD_THREAD
#define PIDFD_THREAD O_EXCL
#endif

#define CHECK(c) do { if (!(c)) target_verdict(0, "line %d: %s (errno %d)", __LINE__, #c, errno); } while (0)

static int pidfd_open_(pid_t pid, unsigned flags)
{
	return (int)syscall(SYS_pidfd_open, pid, flags);
}

static int send_sig(int fd, int sig)
{
	return (int)syscall(SYS_pidfd_send_signal, fd, sig, NULL, 0);
}

static void at(int fd, int n)
{
	if (fd < 0 || dup3(fd, n, O_CLOEXEC) < 0)
		target_verdict(0, "setting up fd %d: %s", n, strerror(errno));
	close(fd);
}

/* "Pid:" and "flags:" of one of our descriptors. */
static void info(int fd, int *pid, unsigned *flags)
{
	char p[64], buf[4096];
	snprintf(p, sizeof(p), "/proc/self/fdinfo/%d", fd);
	int f = open(p, O_RDONLY | O_CLOEXEC);
	ssize_t n = f < 0 ? -1 : read(f, buf, sizeof(buf) - 1);
	if (f >= 0)
		close(f);
	if (n <= 0)
		target_verdict(0, "cannot read %s", p);
	buf[n] = 0;
	char *a = strstr(buf, "flags:"), *b = strstr(buf, "\nPid:");
	if (!a || !b || sscanf(a + 6, "%o", flags) != 1 || sscanf(b + 5, "%d", pid) != 1)
		target_verdict(0, "%s: no flags or Pid", p);
}

/* An 8-byte read of fd 51 (/dev/zero) through AIO context ctx,
 * submitted and reaped: 0 when the bytes came, zeros. */
static int zero_read(aio_context_t ctx)
{
	static uint64_t buf;
	struct iocb cb = { .aio_lio_opcode = IOCB_CMD_PREAD, .aio_fildes = 51, .aio_buf = (uint64_t)(uintptr_t)&buf,
			   .aio_nbytes = sizeof(buf), .aio_data = 7 }, *v = &cb;
	struct io_event ev;
	struct timespec ts = { 10, 0 };

	buf = ~0ull;
	if (syscall(SYS_io_submit, ctx, 1, &v) != 1 || syscall(SYS_io_getevents, ctx, 1, 1, &ev, &ts) != 1)
		return -1;
	return ev.data == 7 && ev.res == sizeof(buf) && buf == 0 ? 0 : -1;
}

static int readable(int fd, int ms)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	return poll(&p, 1, ms) == 1 && (p.revents & POLLIN);
}

int main(int argc, char **argv)
{
	target_init(argc, argv, 0);
	const char *scratch = argc > 3 ? argv[3] : NULL;
	siginfo_t si;
	int pid, sig_err, wait_err;
	unsigned fl;

	int word[2];
	CHECK(pipe(word) == 0);
	at(word[0], 48);
	at(word[1], 47);
	pid_t child = fork();
	CHECK(child >= 0);
	if (child == 0) {
		/* the child's own pidfd, of its parent: after restore it names
		 * the restored parent; its word says so before it is killed */
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		close(48);
		pid_t parent = getppid();
		at(pidfd_open_(parent, 0), 50);
		/* and an AIO context of its own, used once, on /dev/zero */
		aio_context_t ctx = 0;
		at(open("/dev/zero", O_RDONLY), 51);
		bool aio = syscall(SYS_io_setup, 4, &ctx) == 0 && zero_read(ctx) == 0;
		target_wait_restored();
		info(50, &pid, &fl);
		char w = pid == parent && getppid() == parent && send_sig(50, 0) == 0 && !readable(50, 0) ? 'k' : 'f';
		if (!aio || zero_read(ctx) != 0)
			w = 'a';
		if (write(47, &w, 1) != 1)
			_exit(3);
		for (;;)
			pause();
	}
	close(47);
	at(pidfd_open_(child, O_NONBLOCK), 40);

	pid_t gone = fork();
	CHECK(gone >= 0);
	if (gone == 0)
		_exit(7);
	at(pidfd_open_(gone, 0), 41);
	CHECK(waitpid(gone, NULL, 0) == gone);
	/* what a reaped process's pidfd says, to be said again */
	CHECK(send_sig(41, 0) < 0);
	sig_err = errno;
	CHECK(waitid(P_PIDFD, 41, &si, WEXITED | WNOHANG) < 0);
	wait_err = errno;
	CHECK(readable(41, 0));

	at(pidfd_open_(getpid(), PIDFD_THREAD), 42);

	/* a child that exited and was not reaped: a zombie of the tree */
	pid_t zombie = fork();
	CHECK(zombie >= 0);
	if (zombie == 0)
		_exit(5);
	at(pidfd_open_(zombie, 0), 44);
	CHECK(readable(44, 10000));

	pid_t outside = 0;
	if (scratch) {
		int p[2];
		CHECK(pipe2(p, O_CLOEXEC) == 0);
		pid_t x = fork();
		CHECK(x >= 0);
		if (x == 0) {
			pid_t y = fork();
			if (y == 0) {
				for (;;)
					pause();
			}
			if (write(p[1], &y, sizeof(y)) != sizeof(y))
				_exit(1);
			_exit(0);
		}
		CHECK(read(p[0], &outside, sizeof(outside)) == sizeof(outside));
		CHECK(waitpid(x, NULL, 0) == x);
		close(p[0]);
		close(p[1]);
		at(pidfd_open_(outside, 0), 43);
		char text[32];
		snprintf(text, sizeof(text), "%d\n", outside);
		target_write_file(scratch, text);
	}

	target_ready();
	target_wait_restored();

	/* the child's word on its pidfd of us */
	char w = 0;
	struct pollfd pw = { .fd = 48, .events = POLLIN };
	CHECK(poll(&pw, 1, 10000) == 1 && read(48, &w, 1) == 1);
	CHECK(w == 'k');

	/* the live child, non-blocking */
	info(40, &pid, &fl);
	CHECK(pid == child);
	CHECK(fl & O_NONBLOCK);
	CHECK(!(fl & PIDFD_THREAD));
	CHECK(!readable(40, 0));
	CHECK(waitid(P_PIDFD, 40, &si, WEXITED) < 0 && errno == EAGAIN);
	CHECK(send_sig(40, SIGTERM) == 0);
	CHECK(readable(40, 10000));
	memset(&si, 0, sizeof(si));
	CHECK(waitid(P_PIDFD, 40, &si, WEXITED) == 0);
	CHECK(si.si_pid == child && si.si_code == CLD_KILLED && si.si_status == SIGTERM);

	/* the reaped one */
	info(41, &pid, &fl);
	CHECK(pid == -1);
	CHECK(!(fl & (O_NONBLOCK | PIDFD_THREAD)));
	CHECK(readable(41, 0));
	CHECK(send_sig(41, 0) < 0 && errno == sig_err);
	CHECK(waitid(P_PIDFD, 41, &si, WEXITED | WNOHANG) < 0 && errno == wait_err);

	/* itself, as a thread */
	info(42, &pid, &fl);
	CHECK(pid == getpid());
	CHECK(fl & PIDFD_THREAD);
	CHECK(send_sig(42, 0) == 0);

	/* the zombie, waited for through its pidfd as it would have been */
	info(44, &pid, &fl);
	CHECK(pid == zombie);
	CHECK(readable(44, 0));
	memset(&si, 0, sizeof(si));
	CHECK(waitid(P_PIDFD, 44, &si, WEXITED) == 0);
	CHECK(si.si_pid == zombie && si.si_code == CLD_EXITED && si.si_status == 5);
	info(44, &pid, &fl);
	CHECK(pid == -1);

	if (outside) {
		info(43, &pid, &fl);
		CHECK(pid == outside);
		CHECK(!readable(43, 0));
		CHECK(send_sig(43, SIGKILL) == 0);
		CHECK(readable(43, 10000));
	}
	target_pass();
}
