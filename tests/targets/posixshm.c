/*
 * target-posixshm: a POSIX shared memory object (shm_open, a file in
 * /dev/shm) mapped by a parent and its child, checkpointed and restored
 * as one tree; the mapping must come back as the object itself, shared
 * with the other process and with anyone who opens the name, not as a
 * private copy of its bytes.
 *
 * The parent makes /ckptfs-target-<pid> (mode 0640, SIZE bytes), maps it
 * shared, fills it with a pattern, closes its descriptor and forks the
 * child, which inherits the mapping and writes its mark. After the
 * restore: the pattern and the mark are there; the parent writes a token
 * the child must see and the child one the parent must see; then the
 * parent opens the name again and maps it a second time: that view must
 * show both tokens (the mapping is the named object), and a byte written
 * through it must show in the first mapping. The parent unlinks the name
 * at the end.
 *
 * Command line: target-posixshm READY RESULT.
 */
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>

#include "target.h"

#define SIZE 20000
#define PATTERN(i) ((uint8_t)((i) * 13 + 5))

struct head {
	volatile uint64_t child_mark;   /* the child, before the checkpoint */
	volatile uint64_t parent_token; /* after the restore */
	volatile uint64_t child_token;
	volatile uint64_t child_done; /* 1: passed, 2: failed */
	volatile uint64_t probe;      /* written through the second view */
	char why[200];
};
#define DATA 512 /* the pattern from here on */

static char name[64];

static const char *check_pattern(const uint8_t *m)
{
	for (size_t i = DATA; i < SIZE; i++)
		if (m[i] != PATTERN(i))
			return "the pattern changed";
	return NULL;
}

static _Noreturn void child(uint8_t *m)
{
	struct head *h = (struct head *)m;
	const char *why = NULL;
	h->child_mark = 0xc0ffee;
	target_wait_restored();
	if (!target_wait_word(&h->parent_token, 0x70c3e, 30000))
		why = "the parent's token never came";
	if (!why)
		why = check_pattern(m);
	h->child_token = 0x5eed;
	if (!why && !target_wait_word(&h->probe, 0x9e0, 30000))
		why = "the byte written through the parent's new view never came";
	if (why)
		snprintf(h->why, sizeof(h->why), "%s", why);
	h->child_done = why ? 2 : 1;
	_exit(why ? 1 : 0);
}

/* The object opened again by its name: the same bytes as m. */
static const char *check_by_name(struct head *h)
{
	int fd = shm_open(name, O_RDWR, 0);
	if (fd < 0)
		return "shm_open of its name failed after the restore";
	struct stat st;
	if (fstat(fd, &st) < 0 || st.st_size != SIZE || (st.st_mode & 0777) != 0640) {
		close(fd);
		return "the object's size or mode changed";
	}
	struct head *v = mmap(NULL, SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	close(fd);
	if (v == MAP_FAILED)
		return "mmap of the object failed";
	const char *why = NULL;
	if (v->parent_token != 0x70c3e || v->child_token != 0x5eed)
		why = "the object opened by name does not hold the tokens: the mapping is not the object";
	else if (check_pattern((const uint8_t *)v))
		why = "the object opened by name does not hold the pattern";
	v->probe = 0x9e0;
	if (!why && h->probe != 0x9e0)
		why = "a byte written through the name is not seen in the restored mapping";
	munmap(v, SIZE);
	return why;
}

int main(int argc, char **argv)
{
	target_init(argc, argv, 0);
	snprintf(name, sizeof(name), "/ckptfs-target-%d", getpid());
	int fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL, 0640);
	if (fd < 0)
		target_verdict(0, "shm_open: %s", strerror(errno));
	fchmod(fd, 0640); /* whatever the umask */
	if (ftruncate(fd, SIZE) < 0) {
		shm_unlink(name);
		target_verdict(0, "ftruncate: %s", strerror(errno));
	}
	uint8_t *m = mmap(NULL, SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	close(fd);
	if (m == MAP_FAILED) {
		shm_unlink(name);
		target_verdict(0, "mmap: %s", strerror(errno));
	}
	struct head *h = (struct head *)m;
	for (size_t i = DATA; i < SIZE; i++)
		m[i] = PATTERN(i);
	pid_t c = fork();
	if (c < 0)
		target_verdict(0, "fork: %s", strerror(errno));
	if (c == 0)
		child(m);
	if (!target_wait_word(&h->child_mark, 0xc0ffee, 30000))
		target_verdict(0, "the child did not start");
	target_ready();
	target_wait_restored();

	const char *why = check_pattern(m);
	h->parent_token = 0x70c3e;
	if (!why && !target_wait_word(&h->child_token, 0x5eed, 30000))
		why = "the child's token never came";
	if (!why)
		why = check_by_name(h);
	if (!why && !target_wait_word(&h->child_done, 1, 30000))
		why = h->child_done == 2 ? h->why : "the child did not finish";
	int st;
	if (waitpid(c, &st, 0) != c || !WIFEXITED(st) || WEXITSTATUS(st))
		why = why ? why : "the child failed";
	shm_unlink(name);
	if (why)
		target_verdict(0, "%s", why);
	target_pass();
}
