/*
 * Descriptors of files: a regular file opened O_RDWR|O_APPEND at offset 4,
 * shared by a dup and a close-on-exec dup; a second open of it read-only at
 * offset 10; its directory; an O_PATH descriptor; /dev/null, /dev/zero and
 * /dev/urandom. After restore every offset, flag and sharing must hold.
 * Arguments: SCRATCH, a file path the target may create.
 */
#include <sys/sysmacros.h>

#include "target.h"

static void at(int fd, int n, int cloexec)
{
	if (fd < 0 || dup3(fd, n, cloexec ? O_CLOEXEC : 0) < 0)
		target_verdict(0, "setting up fd %d: %s", n, strerror(errno));
	close(fd);
}

#define CHECK(c) do { if (!(c)) target_verdict(0, "line %d: %s", __LINE__, #c); } while (0)

int main(int argc, char **argv)
{
	target_init(argc, argv, 1);
	const char *file = argv[3];
	char dir[4096], buf[4];
	struct stat st;

	snprintf(dir, sizeof(dir), "%s", file);
	*(strrchr(dir, '/') ? strrchr(dir, '/') : dir) = 0;
	int fd = open(file, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0 || write(fd, "0123456789abcdef", 16) != 16)
		target_verdict(0, "cannot write %s", file);
	close(fd);

	fd = open(file, O_RDWR | O_APPEND);
	lseek(fd, 4, SEEK_SET);
	at(fd, 10, 0);
	dup2(10, 11);
	dup3(10, 12, O_CLOEXEC);
	fd = open(file, O_RDONLY);
	lseek(fd, 10, SEEK_SET);
	at(fd, 13, 1);
	at(open(dir[0] ? dir : ".", O_RDONLY | O_DIRECTORY), 14, 0);
	at(open(file, O_PATH), 15, 1);
	at(open("/dev/null", O_WRONLY), 16, 0);
	at(open("/dev/zero", O_RDONLY), 17, 0);
	at(open("/dev/urandom", O_RDONLY | O_NONBLOCK), 18, 0);

	target_ready();
	target_wait_restored();

	CHECK(lseek(10, 0, SEEK_CUR) == 4 && lseek(13, 0, SEEK_CUR) == 10);
	CHECK((fcntl(10, F_GETFL) & (O_ACCMODE | O_APPEND)) == (O_RDWR | O_APPEND));
	CHECK(fcntl(10, F_GETFD) == 0 && fcntl(11, F_GETFD) == 0 && fcntl(12, F_GETFD) == FD_CLOEXEC);
	CHECK(fcntl(13, F_GETFD) == FD_CLOEXEC && (fcntl(13, F_GETFL) & O_ACCMODE) == O_RDONLY);
	CHECK(lseek(11, 7, SEEK_SET) == 7 && lseek(10, 0, SEEK_CUR) == 7 && lseek(12, 0, SEEK_CUR) == 7);
	CHECK(read(13, buf, 2) == 2 && memcmp(buf, "ab", 2) == 0);
	CHECK(write(10, "!", 1) == 1 && pread(13, buf, 1, 16) == 1 && buf[0] == '!');
	CHECK(fstat(14, &st) == 0 && S_ISDIR(st.st_mode));
	CHECK(fcntl(15, F_GETFL) & O_PATH);
	CHECK(fstat(16, &st) == 0 && S_ISCHR(st.st_mode) && st.st_rdev == makedev(1, 3));
	CHECK((fcntl(16, F_GETFL) & O_ACCMODE) == O_WRONLY && write(16, "x", 1) == 1);
	CHECK(read(17, buf, 4) == 4 && !memcmp(buf, "\0\0\0\0", 4));
	CHECK(fstat(18, &st) == 0 && st.st_rdev == makedev(1, 9) && (fcntl(18, F_GETFL) & O_NONBLOCK));
	CHECK(fcntl(19, F_GETFD) < 0 && fcntl(9, F_GETFD) < 0);
	target_pass();
}
