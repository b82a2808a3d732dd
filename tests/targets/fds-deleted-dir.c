/*
 * Directories removed while held: the cwd (mode 0751, owned by 4242:4343
 * as root), the same directory open O_RDONLY (fd 10) and O_PATH (fd 11),
 * and another one (mode 0700) open O_RDONLY (fd 12) and O_PATH (fd 13).
 * After the restore each must be a removed directory again, with its
 * mode and owner, the cwd and fds 10 and 11 still one directory, fds 12
 * and 13 another:
 * getcwd() fails with ENOENT, /proc/self/cwd ends in " (deleted)", no
 * entry can be made in any of them, and nothing the restore made is left
 * beside SCRATCH.
 * With a fourth argument "tree", a child forked after the chdir holds
 * the same cwd (inherited, not shared) and checks it too; the parent's
 * verdict includes the child's.
 * Arguments: SCRATCH, a path the target may use as a prefix [tree].
 */
#include <dirent.h>
#include <libgen.h>
#include <sys/wait.h>

#include "target.h"

#define CHECK(c) do { if (!(c)) fail(__LINE__, #c); } while (0)

static bool child;

static _Noreturn void fail(int line, const char *what)
{
	if (child)
		_exit(line & 0xff ? line & 0xff : 1);
	target_verdict(0, "line %d: %s (errno %s)", line, what, strerror(errno));
}

static void check_removed(int fd, unsigned mode, uid_t uid, gid_t gid)
{
	struct stat st;

	CHECK(fstat(fd, &st) == 0 && S_ISDIR(st.st_mode) && st.st_nlink == 0);
	CHECK((st.st_mode & 07777) == mode && st.st_uid == uid && st.st_gid == gid);
}

static void check_cwd(uid_t uid, gid_t gid)
{
	char buf[4096];
	ssize_t n;

	errno = 0;
	CHECK(getcwd(buf, sizeof(buf)) == NULL && errno == ENOENT);
	int dot = open(".", O_PATH | O_CLOEXEC);
	check_removed(dot, 0751, uid, gid);
	close(dot);
	n = readlink("/proc/self/cwd", buf, sizeof(buf) - 1);
	CHECK(n > 10);
	buf[n] = 0;
	CHECK(strcmp(buf + n - 10, " (deleted)") == 0);
	CHECK(mkdir("sub", 0700) < 0 && errno == ENOENT);
}

int main(int argc, char **argv)
{
	target_init(argc, argv, 1);
	bool tree = argc > 4 && strcmp(argv[4], "tree") == 0;
	char d[4096], e[4096], parent[4096];
	uid_t uid = geteuid() == 0 ? 4242 : geteuid();
	gid_t gid = geteuid() == 0 ? 4343 : getegid();
	pid_t kid = -1;

	snprintf(d, sizeof(d), "%s.d", argv[3]);
	snprintf(e, sizeof(e), "%s.e", argv[3]);
	snprintf(parent, sizeof(parent), "%s", argv[3]);
	dirname(parent);
	CHECK(mkdir(d, 0700) == 0 && chown(d, uid, gid) == 0 && chmod(d, 0751) == 0);
	CHECK(mkdir(e, 0700) == 0);
	CHECK(chdir(d) == 0);
	CHECK(open(d, O_RDONLY | O_DIRECTORY) == 3 && dup2(3, 10) == 10 && close(3) == 0);
	CHECK(open(d, O_PATH | O_DIRECTORY | O_CLOEXEC) == 3 && dup3(3, 11, O_CLOEXEC) == 11 && close(3) == 0);
	CHECK(open(e, O_RDONLY | O_DIRECTORY) == 3 && dup2(3, 12) == 12 && close(3) == 0);
	CHECK(open(e, O_PATH | O_DIRECTORY) == 3 && dup2(3, 13) == 13 && close(3) == 0);
	CHECK(rmdir(d) == 0 && rmdir(e) == 0);
	if (tree) {
		kid = fork();
		CHECK(kid >= 0);
		if (kid == 0) {
			child = true;
			syscall(SYS_close_range, 3, ~0u, 0);
			target_wait_restored();
			check_cwd(uid, gid);
			_exit(0);
		}
	}

	target_ready();
	target_wait_restored();

	check_cwd(uid, gid);
	check_removed(10, 0751, uid, gid);
	check_removed(11, 0751, uid, gid);
	CHECK(fcntl(11, F_GETFL) & O_PATH);
	CHECK(fcntl(11, F_GETFD) == FD_CLOEXEC && fcntl(10, F_GETFD) == 0);
	/* one directory, as before */
	struct stat a, b, c;
	CHECK(stat(".", &a) == 0 && fstat(10, &b) == 0 && fstat(11, &c) == 0);
	CHECK(a.st_ino == b.st_ino && a.st_ino == c.st_ino && a.st_dev == b.st_dev);
	check_removed(12, 0700, geteuid(), getegid());
	CHECK(fstat(12, &a) == 0 && fstat(13, &b) == 0 && a.st_ino == b.st_ino && a.st_dev == b.st_dev);
	CHECK(openat(12, "x", O_CREAT | O_WRONLY | O_CLOEXEC, 0600) < 0 && errno == ENOENT);
	/* nothing of the restore's left beside where they were */
	DIR *dir = opendir(parent);
	CHECK(dir != NULL);
	for (struct dirent *de; (de = readdir(dir));)
		CHECK(!strstr(de->d_name, ".ckptfs-"));
	closedir(dir);
	if (tree) {
		int st;
		CHECK(waitpid(kid, &st, 0) == kid);
		if (!WIFEXITED(st) || WEXITSTATUS(st))
			target_verdict(0, "the child's check failed at line %d", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
	}
	target_pass();
}
