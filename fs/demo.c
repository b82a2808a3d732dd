/*
 * ckptfs-demo: the process tools/demo checkpoints and restores. It counts
 * in its own memory, once a second, and writes "count N" to FILE (open,
 * write, close: it holds no descriptor but 0-2 while it waits), so that
 * after a restore the count visibly goes on from where the snapshot
 * left it.
 *
 *   ckptfs-demo FILE
 */
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	unsigned long count = 0;
	char line[64];

	if (argc != 2) {
		fprintf(stderr, "usage: ckptfs-demo FILE\n");
		return 2;
	}
	int null = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (null < 0)
		return 1;
	dup2(null, 0);
	dup2(null, 1);
	dup2(null, 2);
	for (int fd = 3; fd < 1024; fd++)
		close(fd);
	setsid();
	for (;;) {
		int n = snprintf(line, sizeof(line), "count %lu\n", ++count);
		int fd = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
		if (fd >= 0) {
			if (write(fd, line, (size_t)n) < 0) {
			}
			close(fd);
		}
		struct timespec ts = { 1, 0 };
		while (nanosleep(&ts, &ts) < 0)
			;
	}
}
