/*
 * Files that are descriptors and shared mappings at once, and a mapping
 * whose protection may be raised:
 *  - SCRATCH.map, a file opened O_RDWR, mapped MAP_SHARED with PROT_READ
 *    only: after the restore, mprotect(PROT_WRITE) must succeed and a
 *    write through the mapping reach the file;
 *  - a memfd (fd 20) mapped MAP_SHARED and PROT_WRITE, and a deleted file
 *    (fd 21) the same: after the restore, what is written through the
 *    descriptor is seen through the mapping and back (one file, not two);
 *  - a memfd mapped shared whose descriptor was closed, and a deleted file
 *    the same: their bytes are still there.
 * With a fourth argument "tree", a child forked once all is set up holds
 * the same descriptors and mappings (inherited: one description, one
 * object across the tree); once the parent has checked the rest it
 * writes through its fd 20, and the parent must see it in its mapping.
 * Arguments: SCRATCH, a path the target may use as a prefix [tree].
 */
#include <sys/mman.h>
#include <sys/wait.h>

#include "target.h"

#define CHECK(c) do { if (!(c)) target_verdict(0, "line %d: %s (errno %s)", __LINE__, #c, strerror(errno)); } while (0)

#define LEN (64 * 4096)

static void fill(uint8_t *p, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)(i * 13 + seed + (i >> 12));
}

static bool same(const uint8_t *p, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i++)
		if (p[i] != (uint8_t)(i * 13 + seed + (i >> 12)))
			return false;
	return true;
}

/* A file of LEN bytes at fd (pattern seed), mapped shared and writable. */
static uint8_t *mapped(int fd, unsigned seed)
{
	static uint8_t buf[LEN];

	fill(buf, LEN, seed);
	CHECK(pwrite(fd, buf, LEN, 0) == LEN);
	uint8_t *p = mmap(NULL, LEN, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	CHECK(p != MAP_FAILED);
	return p;
}

/* One file behind fd and p: a write through each is seen through the other. */
static void check_one_file(int fd, uint8_t *p, unsigned seed)
{
	uint8_t b = 0;

	CHECK(same(p, LEN, seed));
	CHECK(pwrite(fd, "A", 1, 5000) == 1 && p[5000] == 'A');
	p[7000] = 'B';
	CHECK(pread(fd, &b, 1, 7000) == 1 && b == 'B');
}

int main(int argc, char **argv)
{
	target_init(argc, argv, 1);
	char file[4096];

	/* read-only view of a file open for writing */
	snprintf(file, sizeof(file), "%s.map", argv[3]);
	int fd = open(file, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	CHECK(fd >= 0 && ftruncate(fd, 4096) == 0 && pwrite(fd, "before", 6, 0) == 6);
	char *ro = mmap(NULL, 4096, PROT_READ, MAP_SHARED, fd, 0);
	CHECK(ro != MAP_FAILED);
	close(fd);

	int mfd = memfd_create("fds-mapped", MFD_CLOEXEC);
	CHECK(mfd >= 0 && ftruncate(mfd, LEN) == 0);
	uint8_t *mp = mapped(mfd, 1);
	CHECK(dup2(mfd, 20) == 20 && close(mfd) == 0);

	snprintf(file, sizeof(file), "%s.del", argv[3]);
	int dfd = open(file, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
	CHECK(dfd >= 0 && unlink(file) == 0);
	uint8_t *dp = mapped(dfd, 2);
	CHECK(dup2(dfd, 21) == 21 && close(dfd) == 0);

	/* mappings alone */
	int x = memfd_create("fds-mapped-alone", MFD_CLOEXEC);
	CHECK(x >= 0 && ftruncate(x, LEN) == 0);
	uint8_t *mp2 = mapped(x, 3);
	close(x);
	snprintf(file, sizeof(file), "%s.del2", argv[3]);
	x = open(file, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	CHECK(x >= 0 && unlink(file) == 0);
	uint8_t *dp2 = mapped(x, 4);
	close(x);

	bool tree = argc > 4 && strcmp(argv[4], "tree") == 0;
	char go[4096];
	snprintf(go, sizeof(go), "%s.go", argv[3]);
	pid_t kid = -1;
	if (tree) {
		kid = fork();
		CHECK(kid >= 0);
		if (kid == 0) {
			target_wait_restored();
			while (access(go, F_OK) < 0)
				usleep(2000);
			_exit(pwrite(20, "K", 1, 9000) == 1 && mp[9001] == 'L' ? 0 : 3);
		}
	}

	target_ready();
	target_wait_restored();

	CHECK(memcmp(ro, "before", 6) == 0);
	CHECK(mprotect(ro, 4096, PROT_READ | PROT_WRITE) == 0);
	memcpy(ro, "after!", 6);
	snprintf(file, sizeof(file), "%s.map", argv[3]);
	char b[6] = { 0 };
	fd = open(file, O_RDONLY | O_CLOEXEC);
	CHECK(fd >= 0 && pread(fd, b, 6, 0) == 6 && memcmp(b, "after!", 6) == 0);
	close(fd);

	check_one_file(20, mp, 1);
	check_one_file(21, dp, 2);
	struct stat st;
	CHECK(fstat(21, &st) == 0 && st.st_nlink == 0 && (st.st_mode & 07777) == 0640 && st.st_size == LEN);
	/* on the filesystem it was on, not in memory */
	struct stat here;
	CHECK(stat(file, &here) == 0 && here.st_dev == st.st_dev);
	CHECK(same(mp2, LEN, 3) && same(dp2, LEN, 4));
	if (tree) {
		int wst;
		mp[9001] = 'L';
		target_write_file(go, "go\n");
		CHECK(waitpid(kid, &wst, 0) == kid && WIFEXITED(wst) && WEXITSTATUS(wst) == 0);
		CHECK(mp[9000] == 'K');
	}
	target_pass();
}
