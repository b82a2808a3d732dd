/*
 * A process to checkpoint through the mount: it maps 8 MiB, writes a known
 * pattern into the first MiB and one page in the middle (the rest stays
 * untouched: holes in the snapshot), records the area's address in
 * DIR/addr, and waits. When DIR/go appears it checks its memory, writes
 * "ok" or what was wrong to DIR/verdict and exits: run again after a
 * restore, that verdict is the restored process's own.
 *
 *   fs-target DIR [FILE]
 *
 * It holds no descriptor while waiting (stdio goes to /dev/null) so that
 * it asks nothing of the engine beyond memory and registers; given FILE,
 * it holds that one open read-write at fd 3, and its verdict also checks
 * that fd 3 is still FILE.
 *
 * FS_TARGET_MB=N in its environment maps N MiB more, filled with a
 * pattern that compresses poorly, with zero pages alone and in runs
 * (holes of the snapshot, short and long), and checks them too: a
 * checkpoint that takes a while, for the tests that watch one run.
 */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define AREA (8u << 20)
#define DATA (1u << 20)
#define MID (4u << 20)
/* Zero pages inside the data: a hole of the store shorter than the
 * mount shows as one (FS_MIN_HOLE). */
#define SMALL (DATA / 2)
#define SMALL_LEN (16u << 10)

static unsigned char pattern(size_t i)
{
	return (unsigned char)((i * 7 + 3) ^ (i >> 12));
}

static void put(const char *dir, const char *name, const char *text)
{
	char path[4096], tmp[4096];
	int fd;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	snprintf(tmp, sizeof(tmp), "%s/.%s.tmp", dir, name);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		_exit(3);
	if (write(fd, text, strlen(text)) < 0)
		_exit(3);
	close(fd);
	rename(tmp, path);
}

static unsigned char big_pattern(size_t i)
{
	/* holes of every length: zero pages alone, in short runs and a
	 * 192 KiB run in each MiB, as a process's heap has them */
	size_t page = i / 4096, in_mib = i % (1u << 20);
	if (page % 7 == 3 || page % 13 < 3 || (in_mib >= (512u << 10) && in_mib < (704u << 10)))
		return 0;
	uint64_t x = (i / 8 + 1) * 0x9e3779b97f4a7c15ull;
	return (unsigned char)((x ^ (x >> 29)) >> (8 * (i % 8)));
}

int main(int argc, char **argv)
{
	char path[4096], buf[128];
	unsigned char *a, *big = NULL;
	size_t big_len = 0;
	int fd;

	if (argc != 2 && argc != 3)
		return 2;
	/* A PROT_NONE page on each side keeps the kernel from merging the
	 * area with a neighbour: the snapshot names it by these bounds. */
	a = mmap(NULL, AREA + 2 * 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (a == MAP_FAILED)
		return 1;
	a += 4096;
	if (mprotect(a, AREA, PROT_READ | PROT_WRITE) < 0)
		return 1;
	for (size_t i = 0; i < DATA; i++)
		a[i] = pattern(i);
	for (size_t i = 0; i < 4096; i++)
		a[MID + i] = pattern(MID + i);
	memset(a + SMALL, 0, SMALL_LEN);
	if (getenv("FS_TARGET_MB")) {
		big_len = (size_t)atoi(getenv("FS_TARGET_MB")) << 20;
		big = mmap(NULL, big_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (big == MAP_FAILED)
			return 1;
		for (size_t i = 0; i < big_len; i++)
			big[i] = big_pattern(i);
	}

	fd = open("/dev/null", O_RDWR);
	dup2(fd, 0);
	dup2(fd, 1);
	dup2(fd, 2);
	/* Whatever the caller leaked stays out of the snapshot. */
	for (int i = 3; i < 1024; i++)
		close(i);
	if (argc == 3 && open(argv[2], O_RDWR) != 3)
		return 4;
	setsid();

	snprintf(buf, sizeof(buf), "%lx-%lx %d\n", (unsigned long)(uintptr_t)a,
		 (unsigned long)(uintptr_t)(a + AREA), (int)getpid());
	put(argv[1], "addr", buf);

	snprintf(path, sizeof(path), "%s/go", argv[1]);
	for (;;) {
		struct timespec ts = { 0, 20 * 1000 * 1000 };
		nanosleep(&ts, NULL);
		if (access(path, F_OK) == 0)
			break;
	}
	for (size_t i = 0; i < AREA; i++) {
		unsigned char want = (i < DATA && (i < SMALL || i >= SMALL + SMALL_LEN)) || (i >= MID && i < MID + 4096) ? pattern(i) : 0;
		if (a[i] != want) {
			snprintf(buf, sizeof(buf), "bad byte at offset %zu: %u, want %u\n", i, a[i], want);
			put(argv[1], "verdict", buf);
			return 1;
		}
	}
	for (size_t i = 0; i < big_len; i++) {
		if (big[i] != big_pattern(i)) {
			snprintf(buf, sizeof(buf), "bad byte at offset %zu of the large area\n", i);
			put(argv[1], "verdict", buf);
			return 1;
		}
	}
	if (argc == 3) {
		struct stat held, now;
		if (fstat(3, &held) < 0 || stat(argv[2], &now) < 0 || held.st_ino != now.st_ino ||
		    (fcntl(3, F_GETFL) & O_ACCMODE) != O_RDWR) {
			put(argv[1], "verdict", "fd 3 is not the file it held\n");
			return 1;
		}
	}
	put(argv[1], "verdict", "ok\n");
	return 0;
}
