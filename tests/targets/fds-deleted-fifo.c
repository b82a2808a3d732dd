/*
 * FIFOs removed while open: one (mode 0640, owned by 4242:4343 as root)
 * open for reading (fd 10, O_NONBLOCK) and writing (fd 11) with 5000
 * bytes queued, another open read-write (fd 12) with 100 bytes queued.
 * After the restore each is a removed FIFO again with its mode and owner,
 * the queued bytes come out whole, fds 10 and 11 are still one FIFO (a
 * write to 11 is read from 10), and nothing the restore made is left
 * beside SCRATCH.
 * With a fourth argument "tree", a child holds a writer of its own (a
 * description opened through /proc) to the first FIFO, and writes "kid!"
 * through it once the parent has checked the rest: the parent must read
 * it from fd 10, one FIFO across the tree.
 * Arguments: SCRATCH, a path the target may use as a prefix [tree].
 */
#include <dirent.h>
#include <libgen.h>
#include <sys/wait.h>

#include "target.h"

#define CHECK(c) do { if (!(c)) target_verdict(0, "line %d: %s (errno %s)", __LINE__, #c, strerror(errno)); } while (0)

static char pattern[5000];

int main(int argc, char **argv)
{
	target_init(argc, argv, 1);
	char a[4096], b[4096], parent[4096], buf[8192];
	uid_t uid = geteuid() == 0 ? 4242 : geteuid();
	gid_t gid = geteuid() == 0 ? 4343 : getegid();
	struct stat st, st2;

	for (size_t i = 0; i < sizeof(pattern); i++)
		pattern[i] = (char)(i * 31 + 7);
	snprintf(a, sizeof(a), "%s.fifo", argv[3]);
	snprintf(b, sizeof(b), "%s.rw", argv[3]);
	snprintf(parent, sizeof(parent), "%s", argv[3]);
	dirname(parent);

	CHECK(mkfifo(a, 0600) == 0 && chown(a, uid, gid) == 0 && chmod(a, 0640) == 0);
	CHECK(open(a, O_RDONLY | O_NONBLOCK) == 3 && dup2(3, 10) == 10 && close(3) == 0);
	CHECK(open(a, O_WRONLY | O_CLOEXEC) == 3 && dup3(3, 11, O_CLOEXEC) == 11 && close(3) == 0);
	CHECK(write(11, pattern, sizeof(pattern)) == sizeof(pattern));
	CHECK(mkfifo(b, 0600) == 0);
	CHECK(open(b, O_RDWR) == 3 && dup2(3, 12) == 12 && close(3) == 0);
	CHECK(write(12, pattern, 100) == 100);
	CHECK(unlink(a) == 0 && unlink(b) == 0);
	bool tree = argc > 4 && strcmp(argv[4], "tree") == 0;
	char go[4096];
	snprintf(go, sizeof(go), "%s.go", argv[3]);
	pid_t kid = -1;
	if (tree) {
		kid = fork();
		CHECK(kid >= 0);
		if (kid == 0) {
			int w = open("/proc/self/fd/10", O_WRONLY | O_CLOEXEC);
			if (w < 0 || dup2(w, 13) != 13)
				_exit(2);
			syscall(SYS_close_range, 3, 12, 0);
			syscall(SYS_close_range, 14, ~0u, 0);
			target_wait_restored();
			while (access(go, F_OK) < 0)
				usleep(2000);
			_exit(write(13, "kid!", 4) == 4 ? 0 : 3);
		}
	}

	target_ready();
	target_wait_restored();

	CHECK(fstat(10, &st) == 0 && S_ISFIFO(st.st_mode) && st.st_nlink == 0);
	CHECK((st.st_mode & 07777) == 0640 && st.st_uid == uid && st.st_gid == gid);
	CHECK(fstat(11, &st2) == 0 && st2.st_ino == st.st_ino && st2.st_dev == st.st_dev);
	CHECK((fcntl(10, F_GETFL) & (O_ACCMODE | O_NONBLOCK)) == (O_RDONLY | O_NONBLOCK));
	CHECK((fcntl(11, F_GETFL) & (O_ACCMODE | O_NONBLOCK)) == O_WRONLY && fcntl(11, F_GETFD) == FD_CLOEXEC);
	CHECK(read(10, buf, sizeof(buf)) == sizeof(pattern) && memcmp(buf, pattern, sizeof(pattern)) == 0);
	CHECK(read(10, buf, sizeof(buf)) < 0 && errno == EAGAIN);
	CHECK(write(11, "more", 4) == 4 && read(10, buf, sizeof(buf)) == 4 && memcmp(buf, "more", 4) == 0);

	CHECK(fstat(12, &st) == 0 && S_ISFIFO(st.st_mode) && st.st_nlink == 0 && (st.st_mode & 07777) == 0600);
	CHECK((fcntl(12, F_GETFL) & O_ACCMODE) == O_RDWR);
	CHECK(read(12, buf, 100) == 100 && memcmp(buf, pattern, 100) == 0);

	if (tree) {
		int n = 0, wst;
		target_write_file(go, "go\n");
		for (int i = 0; i < 10000 && n <= 0; i++) {
			n = (int)read(10, buf, sizeof(buf));
			if (n <= 0)
				usleep(1000);
		}
		CHECK(n == 4 && memcmp(buf, "kid!", 4) == 0);
		CHECK(waitpid(kid, &wst, 0) == kid && WIFEXITED(wst) && WEXITSTATUS(wst) == 0);
	}
	DIR *d = opendir(parent);
	CHECK(d != NULL);
	for (struct dirent *de; (de = readdir(d));)
		CHECK(!strstr(de->d_name, ".ckptfs-"));
	closedir(d);
	target_pass();
}
