/*
 * A file unlinked while open (its content must come back from the image)
 * and a memfd with content, a name, seals and an offset.
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
	unlink(file);
	dup2(fd, 20);
	close(fd);

	fd = memfd_create("fds-target", MFD_ALLOW_SEALING | MFD_CLOEXEC);
	if (fd < 0 || write(fd, pattern, 5000) != 5000)
		target_verdict(0, "memfd: %s", strerror(errno));
	fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW);
	lseek(fd, 100, SEEK_SET);
	dup3(fd, 21, O_CLOEXEC);
	close(fd);

	target_ready();
	target_wait_restored();

	CHECK(fstat(20, &st) == 0 && st.st_nlink == 0 && st.st_size == sizeof(pattern));
	CHECK((st.st_mode & 07777) == 0640 && lseek(20, 0, SEEK_CUR) == 3);
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
