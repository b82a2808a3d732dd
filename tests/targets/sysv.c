/*
 * target-sysv: a SysV shared memory segment used by a parent and its
 * child, checkpointed and restored as one tree; the segment must come
 * back as itself, not as some other shared memory with its bytes.
 *
 * The parent makes a segment of SIZE bytes (key 0x5e<pid>, mode 0640),
 * attaches it twice (read-write, and read-only elsewhere) and fills it
 * with a pattern; it forks the child, which inherits both attaches and
 * writes its mark. After the restore each checks, by the segment's own
 * means: shmget(key) gives the same id, IPC_STAT says the size, the mode
 * and 4 attaches; the pattern and the child's mark are
 * there; the parent writes a token the child must see, the child one the
 * parent must see through both its attaches; then every attach is taken
 * away with shmdt(), which must succeed (it fails on memory that is not a
 * SysV attach). The parent removes the segment at the end.
 *
 * Command line: target-sysv READY RESULT; the snapshot's `ipc` file names
 * the segment (the test removes it between the dump and the restore, or
 * takes its id, in some cases).
 */
#include <signal.h>
#include <sys/ipc.h>
#include <sys/shm.h>
#include <sys/wait.h>

#include "target.h"

#define SIZE 10000
#define PATTERN(i) ((uint8_t)((i) * 7 + 3))

struct head {
	volatile uint64_t child_mark;   /* the child, before the checkpoint */
	volatile uint64_t parent_token; /* after the restore */
	volatile uint64_t child_token;
	volatile uint64_t child_done; /* 1: passed, 2: failed */
	char why[200];
};
#define DATA 512 /* the pattern from here on */

static key_t key;
static int shmid;
static const uint8_t *ro; /* the read-only attach */

/* Checks the segment as the kernel sees it; NULL when right. */
static const char *check_segment(int nattch)
{
	static char why[160];
	struct shmid_ds ds;
	int id = shmget(key, 0, 0);
	if (id != shmid) {
		snprintf(why, sizeof(why), "shmget(key 0x%x) gives %d, not %d", (unsigned)key, id, shmid);
		return why;
	}
	if (shmctl(shmid, IPC_STAT, &ds) < 0)
		return "IPC_STAT failed";
	if (ds.shm_segsz != SIZE || (ds.shm_perm.mode & 0777) != 0640 || (int)ds.shm_nattch != nattch) {
		snprintf(why, sizeof(why), "size %zu mode 0%o attaches %d, not %d 0640 %d", (size_t)ds.shm_segsz,
			 ds.shm_perm.mode & 0777, (int)ds.shm_nattch, SIZE, nattch);
		return why;
	}
	return NULL;
}

static const char *check_pattern(const uint8_t *m)
{
	for (size_t i = DATA; i < SIZE; i++)
		if (m[i] != PATTERN(i))
			return "the pattern changed";
	return NULL;
}

static _Noreturn void child(uint8_t *rw)
{
	struct head *h = (struct head *)rw;
	const char *why = NULL;
	h->child_mark = 0xc0ffee;
	target_wait_restored();
	/* the parent's check of 4 attaches comes first: wait for its token */
	if (!target_wait_word(&h->parent_token, 0x70c3e, 20000))
		why = "the parent's token never came";
	if (!why)
		why = check_pattern(rw);
	h->child_token = 0x5eed;
	if (why)
		snprintf(h->why, sizeof(h->why), "%s", why);
	h->child_done = why ? 2 : 1;
	/* the last touch of the segment: reported by the exit status */
	if (shmdt(rw) < 0 || shmdt(ro) < 0)
		_exit(3);
	_exit(why ? 1 : 0);
}

int main(int argc, char **argv)
{
	target_init(argc, argv, 0);
	key = (key_t)(0x5e000000 | (getpid() & 0xffffff));
	shmid = shmget(key, SIZE, IPC_CREAT | IPC_EXCL | 0640);
	if (shmid < 0)
		target_verdict(0, "shmget: %s", strerror(errno));
	uint8_t *rw = shmat(shmid, NULL, 0);
	ro = shmat(shmid, NULL, SHM_RDONLY);
	if (rw == (void *)-1 || ro == (void *)-1) {
		shmctl(shmid, IPC_RMID, NULL);
		target_verdict(0, "shmat: %s", strerror(errno));
	}
	struct head *h = (struct head *)rw;
	const struct head *hro = (const struct head *)ro;
	for (size_t i = DATA; i < SIZE; i++)
		rw[i] = PATTERN(i);
	pid_t c = fork();
	if (c < 0)
		target_verdict(0, "fork: %s", strerror(errno));
	if (c == 0)
		child(rw);
	if (!target_wait_word(&h->child_mark, 0xc0ffee, 20000))
		target_verdict(0, "the child did not start");
	target_ready();
	target_wait_restored();

	const char *why = check_segment(4);
	if (!why)
		why = check_pattern(rw);
	if (!why)
		why = check_pattern(ro);
	h->parent_token = 0x70c3e;
	if (!why && !target_wait_word(&h->child_done, 1, 20000))
		why = h->child_done == 2 ? h->why : "the child did not finish";
	if (!why && (h->child_token != 0x5eed || hro->child_token != 0x5eed))
		why = "the child's token is not seen through both attaches";
	int st;
	if (waitpid(c, &st, 0) != c || !WIFEXITED(st) || WEXITSTATUS(st))
		why = why                                   ? why
		      : WIFEXITED(st) && WEXITSTATUS(st) == 3 ? "the child's shmdt failed: not a SysV attach"
							      : "the child failed";
	if (!why)
		why = check_segment(2);
	if (!why && (shmdt(ro) < 0 || shmdt(rw) < 0))
		why = "shmdt failed: not a SysV attach";
	if (!why)
		why = check_segment(0);
	shmctl(shmid, IPC_RMID, NULL);
	if (why)
		target_verdict(0, "%s", why);
	target_pass();
}
