/*
 * Memory of every kind: heap (brk and malloc'd), private anonymous mmap
 * with holes, a private file mapping with some dirty pages (one of them
 * all zeros), a shared anonymous mapping, a PROT_NONE reservation, guard
 * pages, a populated area made PROT_NONE, a read-only private area, and
 * stack content; a shared file mapping (still writing through to the
 * file), a memfd mapping, a private mapping of a deleted file; and the
 * process's comm, cwd, umask and an rlimit. Checksums are computed before
 * and checked after.
 */
#include <libgen.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>

#include "target.h"

#define PG 4096

static void fill(uint8_t *p, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)(seed * 131 + i * 7 + (i >> 12));
}

int main(int argc, char **argv)
{
	target_init(argc, argv, 1);
	const char *file = argv[3]; /* a scratch file the target may create */
	volatile uint8_t stackbuf[16384];
	uint64_t h_stack, h_heap, h_anon, h_file, h_shared, h_none, h_ro;

	for (size_t i = 0; i < sizeof(stackbuf); i++)
		stackbuf[i] = (uint8_t)(i * 13 + 5);
	h_stack = target_hash((const void *)stackbuf, sizeof(stackbuf), 0);

	size_t heap_n = 3 << 20;
	uint8_t *heap = malloc(heap_n);
	uint8_t *small = sbrk(0);
	fill(heap, heap_n, 1);
	h_heap = target_hash(heap, heap_n, 0);

	/* anonymous, populated every other 4 pages */
	size_t anon_n = 256 * PG;
	uint8_t *anon = mmap(NULL, anon_n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	for (size_t i = 0; i < anon_n; i += 8 * PG)
		fill(anon + i, 4 * PG, (unsigned)i);
	h_anon = target_hash(anon, anon_n, 0);

	/* a private file mapping: 8 pages of file, pages 2 and 5 dirtied,
	 * page 6 set to zeros (a private page of zeros must stay zeros) */
	int fd = open(file, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	uint8_t fb[8 * PG];
	fill(fb, sizeof(fb), 42);
	if (fd < 0 || write(fd, fb, sizeof(fb)) != sizeof(fb))
		target_verdict(0, "cannot write %s", file);
	uint8_t *fmap = mmap(NULL, sizeof(fb), PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
	close(fd);
	memset(fmap + 2 * PG + 100, 0xAB, 3000);
	memset(fmap + 5 * PG, 0xCD, PG);
	memset(fmap + 6 * PG, 0, PG);
	h_file = target_hash(fmap, sizeof(fb), 0);

	/* shared anonymous */
	size_t sh_n = 16 * PG;
	uint8_t *sh = mmap(NULL, sh_n, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	fill(sh, 5 * PG, 7);
	h_shared = target_hash(sh, sh_n, 0);

	/* a PROT_NONE reservation with guard pages around a usable middle */
	size_t res_n = 1024 * PG;
	uint8_t *res = mmap(NULL, res_n, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	mprotect(res + PG, 10 * PG, PROT_READ | PROT_WRITE);
	fill(res + PG, 10 * PG, 9);

	/* populated, then made inaccessible */
	uint8_t *none = mmap(NULL, 4 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	fill(none, 4 * PG, 11);
	h_none = target_hash(none, 4 * PG, 0);
	mprotect(none, 4 * PG, PROT_NONE);

	/* populated, then read-only */
	uint8_t *ro = mmap(NULL, 4 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	fill(ro, 4 * PG, 13);
	mprotect(ro, 4 * PG, PROT_READ);
	h_ro = target_hash(ro, 4 * PG, 0);

	uint64_t h_res = target_hash(res + PG, 10 * PG, 0);

	/* a shared file mapping */
	char shpath[4096], delpath[4096], dirbuf[4096];
	snprintf(shpath, sizeof(shpath), "%s.shared", file);
	snprintf(delpath, sizeof(delpath), "%s.deleted", file);
	fd = open(shpath, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0 || ftruncate(fd, 2 * PG) < 0)
		target_verdict(0, "cannot create %s", shpath);
	char *shf = mmap(NULL, 2 * PG, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	close(fd);
	strcpy(shf + PG, "written before the dump");

	/* a memfd, mapped shared, its descriptor closed */
	fd = memfd_create("ckpt-test", MFD_CLOEXEC);
	if (fd < 0 || ftruncate(fd, 8 * PG) < 0)
		target_verdict(0, "memfd_create");
	uint8_t *mfd = mmap(NULL, 8 * PG, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	close(fd);
	fill(mfd + 2 * PG, 3 * PG, 21);
	uint64_t h_mfd = target_hash(mfd, 8 * PG, 0);

	/* a private mapping of a file deleted afterwards: clean pages too */
	fd = open(delpath, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	fill(fb, sizeof(fb), 77);
	if (fd < 0 || write(fd, fb, sizeof(fb)) != sizeof(fb))
		target_verdict(0, "cannot write %s", delpath);
	uint8_t *del = mmap(NULL, sizeof(fb), PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
	close(fd);
	unlink(delpath);
	del[3 * PG] ^= 0xff;
	uint64_t h_del = target_hash(del, sizeof(fb), 0);

	/* process state */
	prctl(PR_SET_NAME, "memtarget");
	snprintf(dirbuf, sizeof(dirbuf), "%s", file);
	if (chdir(dirname(dirbuf)) < 0)
		target_verdict(0, "chdir");
	char cwd0[4096];
	if (!getcwd(cwd0, sizeof(cwd0)))
		target_verdict(0, "getcwd");
	umask(027);
	struct rlimit rl;
	getrlimit(RLIMIT_NOFILE, &rl);
	rl.rlim_cur = 123;
	setrlimit(RLIMIT_NOFILE, &rl);

	target_ready();
	target_wait_restored();

	if (target_hash((const void *)stackbuf, sizeof(stackbuf), 0) != h_stack)
		target_verdict(0, "stack content changed");
	if (target_hash(heap, heap_n, 0) != h_heap)
		target_verdict(0, "heap changed");
	if (sbrk(0) != small)
		target_verdict(0, "brk moved");
	/* the heap still grows */
	void *more = malloc(1 << 20);
	memset(more, 1, 1 << 20);
	if (sbrk(4096) == (void *)-1)
		target_verdict(0, "brk cannot grow");
	if (target_hash(anon, anon_n, 0) != h_anon)
		target_verdict(0, "anonymous mapping changed");
	if (target_hash(fmap, sizeof(fb), 0) != h_file)
		target_verdict(0, "private file mapping changed");
	for (size_t i = 0; i < PG; i++)
		if (fmap[6 * PG + i])
			target_verdict(0, "private zero page of the file mapping came back non-zero");
	if (target_hash(sh, sh_n, 0) != h_shared)
		target_verdict(0, "shared mapping changed");
	if (target_hash(res + PG, 10 * PG, 0) != h_res)
		target_verdict(0, "middle of the reservation changed");
	if (target_hash(ro, 4 * PG, 0) != h_ro)
		target_verdict(0, "read-only area changed");
	mprotect(none, 4 * PG, PROT_READ);
	if (target_hash(none, 4 * PG, 0) != h_none)
		target_verdict(0, "PROT_NONE area changed");
	if (strcmp(shf + PG, "written before the dump"))
		target_verdict(0, "shared file mapping lost its content");
	strcpy(shf, "written after restore");
	msync(shf, 2 * PG, MS_SYNC);
	char back[32] = { 0 };
	fd = open(shpath, O_RDONLY | O_CLOEXEC);
	if (fd < 0 || pread(fd, back, 21, 0) != 21 || strcmp(back, "written after restore"))
		target_verdict(0, "shared file mapping no longer writes to its file");
	close(fd);
	if (target_hash(mfd, 8 * PG, 0) != h_mfd)
		target_verdict(0, "memfd mapping changed");
	if (target_hash(del, sizeof(fb), 0) != h_del)
		target_verdict(0, "mapping of the deleted file changed");
	char comm[32] = { 0 };
	prctl(PR_GET_NAME, comm);
	if (strcmp(comm, "memtarget"))
		target_verdict(0, "comm is '%s'", comm);
	char cwd1[4096];
	if (!getcwd(cwd1, sizeof(cwd1)) || strcmp(cwd0, cwd1))
		target_verdict(0, "cwd changed");
	mode_t um = umask(0);
	if (um != 027)
		target_verdict(0, "umask is %o", um);
	getrlimit(RLIMIT_NOFILE, &rl);
	if (rl.rlim_cur != 123)
		target_verdict(0, "RLIMIT_NOFILE is %lu", (unsigned long)rl.rlim_cur);
	/* protections survived: ro must not be writable, check via mincore-free probe */
	if (mprotect(ro, 4 * PG, PROT_READ | PROT_WRITE) < 0)
		target_verdict(0, "read-only area vanished");
	target_pass();
}
