/*
 * Deleted files above 1 GiB, sparse: a file of 4 GiB (fd 20) with three
 * data runs (at 0, at 1.5 GiB, and the last bytes) and 1.5 GiB allocated
 * but never written (from 2 GiB: no data, it reads zeros), and a memfd of 2 GiB
 * (fd 21) with one run in the middle. After the restore each has its
 * size, its runs' bytes, zeros in its holes, which are holes still
 * (SEEK_DATA finds the runs, the blocks used stay small), and its offset.
 * Arguments: SCRATCH, a path the target may use as a prefix.
 */
#include <sys/mman.h>

#include "target.h"

#define CHECK(c) do { if (!(c)) target_verdict(0, "line %d: %s (errno %s)", __LINE__, #c, strerror(errno)); } while (0)

#define GIB (1ull << 30)
#define RUN 65536

struct run {
	uint64_t off;
	unsigned seed;
};

static const struct run file_runs[] = { { 0, 1 }, { 3 * GIB / 2, 2 }, { 4 * GIB - RUN, 3 } };
static const struct run memfd_runs[] = { { GIB, 4 } };

static void pattern(char *buf, unsigned seed)
{
	for (size_t i = 0; i < RUN; i++)
		buf[i] = (char)(i * 7 + seed * 13 + (i >> 10));
}

static void write_runs(int fd, const struct run *r, size_t n, uint64_t size)
{
	char buf[RUN];

	CHECK(ftruncate(fd, (off_t)size) == 0);
	for (size_t i = 0; i < n; i++) {
		pattern(buf, r[i].seed);
		CHECK(pwrite(fd, buf, RUN, (off_t)r[i].off) == RUN);
	}
}

static void check_runs(int fd, const struct run *r, size_t n, uint64_t size)
{
	char buf[RUN], got[RUN];
	struct stat st;

	CHECK(fstat(fd, &st) == 0 && (uint64_t)st.st_size == size && st.st_nlink == 0);
	/* holes kept: a few runs' worth of blocks, not gigabytes */
	CHECK((uint64_t)st.st_blocks * 512 < 64ull << 20);
	for (size_t i = 0; i < n; i++) {
		pattern(buf, r[i].seed);
		CHECK(pread(fd, got, RUN, (off_t)r[i].off) == RUN && memcmp(got, buf, RUN) == 0);
		CHECK(lseek(fd, (off_t)(i ? r[i - 1].off + RUN : 0), SEEK_DATA) == (off_t)r[i].off);
	}
	/* a hole reads zeros, and so does space allocated but never written */
	CHECK(pread(fd, got, 4096, (off_t)(GIB / 2)) == 4096);
	for (size_t i = 0; i < 4096; i++)
		CHECK(got[i] == 0);
	CHECK(size < 3 * GIB || pread(fd, got, 4096, (off_t)(3 * GIB)) == 4096);
	for (size_t i = 0; size >= 3 * GIB && i < 4096; i++)
		CHECK(got[i] == 0);
}

int main(int argc, char **argv)
{
	target_init(argc, argv, 1);
	char file[4096];

	snprintf(file, sizeof(file), "%s.sparse", argv[3]);
	int fd = open(file, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	CHECK(fd >= 0 && unlink(file) == 0);
	write_runs(fd, file_runs, 3, 4 * GIB);
	/* space allocated and never written (as a database preallocates):
	 * more blocks than 1 GiB, no data; it reads zeros */
	CHECK(fallocate(fd, 0, (off_t)(2 * GIB), (off_t)(3 * GIB / 2)) == 0 || errno == EOPNOTSUPP);
	CHECK(lseek(fd, (off_t)(3 * GIB), SEEK_SET) == (off_t)(3 * GIB));
	CHECK(dup2(fd, 20) == 20 && close(fd) == 0);

	fd = memfd_create("fds-sparse", MFD_CLOEXEC);
	CHECK(fd >= 0);
	write_runs(fd, memfd_runs, 1, 2 * GIB);
	CHECK(dup3(fd, 21, O_CLOEXEC) == 21 && close(fd) == 0);

	target_ready();
	target_wait_restored();

	/* first: SEEK_DATA below moves it */
	CHECK(lseek(20, 0, SEEK_CUR) == (off_t)(3 * GIB));
	check_runs(20, file_runs, 3, 4 * GIB);
	check_runs(21, memfd_runs, 1, 2 * GIB);
	target_pass();
}
