/*
 * A file unlinked while open (its content must come back from the image)
 * and a memfd with content, a name, seals and an offset; the file owned
 * by 4242:4343 (as root: else left the caller's) with an atime and mtime
 * of its own, the memfd with an mtime of its own; both checked after the
 * restore, with fstat as the program sees them.
 * Arguments: SCRATCH, a file path the target may create (and unlinks).
 */
#include <sys/mman.h>

#include "target.h"

#define CHECK(c) do { if (!(c)) target_verdict(0, "line %d: %s", __LINE__, #c); } while (0)

static char pattern[20000];

int main(int argc, char **argv)
{
	target_init(argc, argv, 1);
	const char *file = argv[3];
	char buf[sizeof(pattern)], link[256];
	struct stat st;

	for (size_t i = 0; i < sizeof(pattern); i++)
		pattern[i] = (char)(i * 7 + (i >> 9));
	memset(pattern + 8192, 0, 4096); /* a zero page in the middle */

	int fd = open(file, O_RDWR | O_CREAT | O_TRUNC, 0640);
	if (fd < 0 || write(fd, pattern, sizeof(pattern)) != sizeof(pattern))
		target_verdict(0, "cannot write %s", file);
	lseek(fd, 3, SEEK_SET);
	uid_t owner = geteuid() == 0 ? 4242 : geteuid();
	gid_t group = geteuid() == 0 ? 4343 : getegid();
	if (fchown(fd, owner, group) < 0 || fchmod(fd, 0640) < 0)
		target_verdict(0, "fchown: %s", strerror(errno));
	struct timespec times[2] = { { 1000000000, 123456789 }, { 1200000000, 987654321 } };
	if (futimens(fd, times) < 0)
		target_verdict(0, "futimens: %s", strerror(errno));
	unlink(file);
	dup2(fd, 20);
	close(fd);

	fd = memfd_create("fds-target", MFD_ALLOW_SEALING | MFD_CLOEXEC);
	if (fd < 0 || write(fd, pattern, 5000) != 5000)
		target_verdict(0, "memfd: %s", strerror(errno));
	fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW);
	lseek(fd, 100, SEEK_SET);
	struct timespec mtimes[2] = { { 0, UTIME_OMIT }, { 1300000000, 5 } };
	if (futimens(fd, mtimes) < 0)
		target_verdict(0, "futimens memfd: %s", strerror(errno));
	dup3(fd, 21, O_CLOEXEC);
	close(fd);

	target_ready();
	target_wait_restored();

	CHECK(fstat(20, &st) == 0 && st.st_nlink == 0 && st.st_size == sizeof(pattern));
	CHECK((st.st_mode & 07777) == 0640 && lseek(20, 0, SEEK_CUR) == 3);
	CHECK(st.st_uid == owner && st.st_gid == group);
	CHECK(st.st_atim.tv_sec == 1000000000 && st.st_atim.tv_nsec == 123456789);
	CHECK(st.st_mtim.tv_sec == 1200000000 && st.st_mtim.tv_nsec == 987654321);
	CHECK(fstat(21, &st) == 0 && st.st_mtim.tv_sec == 1300000000 && st.st_mtim.tv_nsec == 5);
	CHECK(pread(20, buf, sizeof(buf), 0) == sizeof(buf) && memcmp(buf, pattern, sizeof(buf)) == 0);
	CHECK(write(20, "w", 1) == 1 && pread(20, buf, 1, 3) == 1 && buf[0] == 'w');

	ssize_t n = readlink("/proc/self/fd/21", link, sizeof(link) - 1);
	CHECK(n > 0);
	link[n] = 0;
	CHECK(strcmp(link, "/memfd:fds-target (deleted)") == 0);
	CHECK(fcntl(21, F_GETFD) == FD_CLOEXEC && lseek(21, 0, SEEK_CUR) == 100);
	CHECK(fcntl(21, F_GET_SEALS) == (F_SEAL_SHRINK | F_SEAL_GROW));
	CHECK(pread(21, buf, 5000, 0) == 5000 && memcmp(buf, pattern, 5000) == 0);
	CHECK(ftruncate(21, 10) < 0 && errno == EPERM);
	target_pass();
}
