/*
 * One pipe held through several open file descriptions: its read end
 * (fd 10) and write end (fd 11), a second description of the read end
 * reopened through /proc with O_NONBLOCK (fd 12), a second of the write
 * end (fd 13), one read-write (fd 14); 1000 bytes queued. And a pipe
 * held only read-write (fd 15), 50 bytes queued. After the restore the
 * five are still one pipe (what is written through any writer is read
 * through any reader), each with its own access mode and flags, the
 * bytes whole; the read-write one reads what it wrote.
 * With a fourth argument "tree", a child forked before the restore holds
 * a description of its own of the first pipe, read-write (fd 16, opened
 * after the fork): once the parent has checked the rest it writes "kid!"
 * through it, which the parent must read from fd 10.
 * Arguments: SCRATCH (unused) [tree].
 */
#include <sys/wait.h>

#include "target.h"

#define CHECK(c) do { if (!(c)) target_verdict(0, "line %d: %s (errno %s)", __LINE__, #c, strerror(errno)); } while (0)

static char pattern[1000];

static void at(int fd, int n)
{
	CHECK(fd >= 0 && dup2(fd, n) == n && close(fd) == 0);
}

static int reopen(int fd, int flags)
{
	char p[64];
	snprintf(p, sizeof(p), "/proc/self/fd/%d", fd);
	return open(p, flags);
}

static void pass_through(int w, int r, const char *what)
{
	char buf[16];
	CHECK(write(w, what, strlen(what)) == (ssize_t)strlen(what));
	CHECK(read(r, buf, sizeof(buf)) == (ssize_t)strlen(what) && memcmp(buf, what, strlen(what)) == 0);
}

int main(int argc, char **argv)
{
	target_init(argc, argv, 1);
	int p[2], q[2];
	char buf[2048];
	struct stat a, b;

	for (size_t i = 0; i < sizeof(pattern); i++)
		pattern[i] = (char)(i * 11 + 3);
	CHECK(pipe(p) == 0);
	at(p[0], 10);
	at(p[1], 11);
	at(reopen(10, O_RDONLY | O_NONBLOCK), 12);
	at(reopen(11, O_WRONLY), 13);
	at(reopen(10, O_RDWR), 14);
	CHECK(write(11, pattern, sizeof(pattern)) == sizeof(pattern));
	CHECK(pipe(q) == 0);
	at(reopen(q[0], O_RDWR), 15);
	CHECK(close(q[0]) == 0 && close(q[1]) == 0);
	CHECK(write(15, pattern, 50) == 50);
	bool tree = argc > 4 && strcmp(argv[4], "tree") == 0;
	char go[4096];
	snprintf(go, sizeof(go), "%s.go", argv[3]);
	pid_t kid = -1;
	if (tree) {
		kid = fork();
		CHECK(kid >= 0);
		if (kid == 0) {
			int w = reopen(10, O_RDWR);
			if (w < 0 || dup2(w, 16) != 16)
				_exit(2);
			syscall(SYS_close_range, 3, 15, 0);
			syscall(SYS_close_range, 17, ~0u, 0);
			target_wait_restored();
			while (access(go, F_OK) < 0)
				usleep(2000);
			_exit(write(16, "kid!", 4) == 4 ? 0 : 3);
		}
	}

	target_ready();
	target_wait_restored();

	CHECK(fstat(10, &a) == 0 && S_ISFIFO(a.st_mode));
	for (int fd = 11; fd <= 14; fd++)
		CHECK(fstat(fd, &b) == 0 && b.st_ino == a.st_ino && b.st_dev == a.st_dev);
	CHECK((fcntl(10, F_GETFL) & (O_ACCMODE | O_NONBLOCK)) == O_RDONLY);
	CHECK((fcntl(11, F_GETFL) & (O_ACCMODE | O_NONBLOCK)) == O_WRONLY);
	CHECK((fcntl(12, F_GETFL) & (O_ACCMODE | O_NONBLOCK)) == (O_RDONLY | O_NONBLOCK));
	CHECK((fcntl(13, F_GETFL) & (O_ACCMODE | O_NONBLOCK)) == O_WRONLY);
	CHECK((fcntl(14, F_GETFL) & (O_ACCMODE | O_NONBLOCK)) == O_RDWR);
	/* separate descriptions: flags of one are not the other's */
	CHECK(fcntl(13, F_SETFL, O_NONBLOCK) == 0 && !(fcntl(11, F_GETFL) & O_NONBLOCK));
	CHECK(fcntl(13, F_SETFL, 0) == 0);
	CHECK(read(12, buf, sizeof(buf)) == sizeof(pattern) && memcmp(buf, pattern, sizeof(pattern)) == 0);
	CHECK(read(12, buf, sizeof(buf)) < 0 && errno == EAGAIN);
	pass_through(13, 10, "b");
	pass_through(14, 12, "c");
	pass_through(11, 14, "d");

	CHECK(fstat(15, &b) == 0 && S_ISFIFO(b.st_mode) && b.st_ino != a.st_ino);
	CHECK((fcntl(15, F_GETFL) & O_ACCMODE) == O_RDWR);
	CHECK(read(15, buf, sizeof(buf)) == 50 && memcmp(buf, pattern, 50) == 0);
	pass_through(15, 15, "e");
	if (tree) {
		int n = 0, wst;
		target_write_file(go, "go\n");
		CHECK(fcntl(10, F_SETFL, O_NONBLOCK) == 0);
		for (int i = 0; i < 10000 && n <= 0; i++) {
			n = (int)read(10, buf, sizeof(buf));
			if (n <= 0)
				usleep(1000);
		}
		CHECK(n == 4 && memcmp(buf, "kid!", 4) == 0);
		CHECK(waitpid(kid, &wst, 0) == kid && WIFEXITED(wst) && WEXITSTATUS(wst) == 0);
	}
	target_pass();
}
