/*
 * File locks, each held by its owner after restore: an exclusive flock on
 * SCRATCH.a through fd 10, whose description a forked child shares (fd 10
 * of the child too); an OFD write lock on bytes 10..29 of SCRATCH.b
 * (fd 11); POSIX locks of the process on SCRATCH.c (fd 12), a write lock
 * on bytes 0..4 and a read lock from 100 to the end of the file.
 *
 * After restore a probe (a process of its own, forked then) checks from
 * outside that each lock is held, with the right range, type and owner,
 * the parent releases them, and the probe finds them all free. The child
 * checks first that the flock is held (a fresh open of the file is kept
 * out), then that it is its own description's too (taking LOCK_EX again
 * through its fd 10 succeeds).
 * Arguments: SCRATCH, a path prefix the target may create files under.
 */
#include <sys/file.h>
#include <sys/wait.h>

#include "target.h"

static char pa[4096], pb[4096], pc[4096];

static void at(int fd, int n)
{
	if (fd < 0 || dup2(fd, n) < 0)
		target_verdict(0, "setting up fd %d: %s", n, strerror(errno));
	close(fd);
}

/* Bit n of the probe's exit status: check n failed. */
static int probe_held(pid_t owner)
{
	int bad = 0, a = open(pa, O_RDWR | O_CLOEXEC), b = open(pb, O_RDWR | O_CLOEXEC),
	    c = open(pc, O_RDWR | O_CLOEXEC);
	if (a < 0 || b < 0 || c < 0)
		return 1;
	/* flock: the held one is exclusive */
	if (flock(a, LOCK_SH | LOCK_NB) == 0 || errno != EWOULDBLOCK)
		bad |= 2;
	/* OFD: bytes 10..29 written-locked by a description (pid -1) */
	struct flock o = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 0 };
	if (fcntl(b, F_OFD_GETLK, &o) < 0 || o.l_type != F_WRLCK || o.l_start != 10 || o.l_len != 20 ||
	    o.l_pid != -1)
		bad |= 4;
	struct flock q = { .l_type = F_RDLCK, .l_whence = SEEK_SET, .l_start = 30, .l_len = 0 };
	if (fcntl(b, F_OFD_GETLK, &q) < 0 || q.l_type != F_UNLCK)
		bad |= 4;
	/* POSIX: 0..4 write, 100.. read, both the owner's; 5..99 free */
	struct flock p1 = { .l_type = F_RDLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 100 };
	if (fcntl(c, F_GETLK, &p1) < 0 || p1.l_type != F_WRLCK || p1.l_start != 0 || p1.l_len != 5 ||
	    p1.l_pid != owner)
		bad |= 8;
	struct flock p2 = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 5, .l_len = 0 };
	if (fcntl(c, F_GETLK, &p2) < 0 || p2.l_type != F_RDLCK || p2.l_start != 100 || p2.l_len != 0 ||
	    p2.l_pid != owner)
		bad |= 16;
	struct flock p3 = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 5, .l_len = 95 };
	if (fcntl(c, F_GETLK, &p3) < 0 || p3.l_type != F_UNLCK)
		bad |= 16;
	return bad;
}

static int probe_free(void)
{
	int bad = 0, a = open(pa, O_RDWR | O_CLOEXEC), b = open(pb, O_RDWR | O_CLOEXEC),
	    c = open(pc, O_RDWR | O_CLOEXEC);
	if (a < 0 || b < 0 || c < 0)
		return 1;
	if (flock(a, LOCK_EX | LOCK_NB) < 0)
		bad |= 2;
	struct flock o = { .l_type = F_WRLCK, .l_whence = SEEK_SET };
	if (fcntl(b, F_OFD_GETLK, &o) < 0 || o.l_type != F_UNLCK)
		bad |= 4;
	struct flock p = { .l_type = F_WRLCK, .l_whence = SEEK_SET };
	if (fcntl(c, F_GETLK, &p) < 0 || p.l_type != F_UNLCK)
		bad |= 8;
	return bad;
}

static int probe(int (*fn)(pid_t), pid_t owner)
{
	int st;
	pid_t p = fork();
	if (p == 0)
		_exit(fn(owner));
	if (p < 0 || waitpid(p, &st, 0) != p || !WIFEXITED(st))
		return 0x100;
	return WEXITSTATUS(st);
}

static int probe_free_(pid_t owner)
{
	(void)owner;
	return probe_free();
}

int main(int argc, char **argv)
{
	target_init(argc, argv, 1);
	snprintf(pa, sizeof(pa), "%s.a", argv[3]);
	snprintf(pb, sizeof(pb), "%s.b", argv[3]);
	snprintf(pc, sizeof(pc), "%s.c", argv[3]);

	at(open(pa, O_RDWR | O_CREAT | O_TRUNC, 0644), 10);
	at(open(pb, O_RDWR | O_CREAT | O_TRUNC, 0644), 11);
	at(open(pc, O_RDWR | O_CREAT | O_TRUNC, 0644), 12);
	struct flock o = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 10, .l_len = 20 };
	struct flock p1 = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 5 };
	struct flock p2 = { .l_type = F_RDLCK, .l_whence = SEEK_SET, .l_start = 100, .l_len = 0 };
	if (flock(10, LOCK_EX | LOCK_NB) < 0 || fcntl(11, F_OFD_SETLK, &o) < 0 || fcntl(12, F_SETLK, &p1) < 0 ||
	    fcntl(12, F_SETLK, &p2) < 0)
		target_verdict(0, "taking the locks: %s", strerror(errno));

	pid_t child = fork();
	if (child < 0)
		target_verdict(0, "fork: %s", strerror(errno));
	if (child == 0) {
		/* Only the shared description 10 stays. */
		close(11);
		close(12);
		target_wait_restored();
		/* Held first (through another description, which must be
		 * kept out), then ours: taking it again through 10 is no
		 * conflict only if 10 is the holder. In that order, as the
		 * second would take a lock that was not restored. */
		int fresh = open(pa, O_RDONLY | O_CLOEXEC);
		bool other_blocked = fresh >= 0 && flock(fresh, LOCK_SH | LOCK_NB) < 0 && errno == EWOULDBLOCK;
		close(fresh);
		bool shared = other_blocked && flock(10, LOCK_EX | LOCK_NB) == 0;
		_exit(shared ? 0 : 1);
	}
	target_ready();
	target_wait_restored();

	int st, bad;
	if (waitpid(child, &st, 0) != child || !WIFEXITED(st) || WEXITSTATUS(st))
		target_verdict(0, "child: the flock is not held by the description it shares with the parent (status 0x%x)", st);
	bad = probe(probe_held, getpid());
	if (bad)
		target_verdict(0, "probe of the held locks: 0x%x (2 flock, 4 OFD, 8/16 POSIX)", bad);
	struct flock un = { .l_type = F_UNLCK, .l_whence = SEEK_SET };
	if (flock(10, LOCK_UN) < 0 || fcntl(11, F_OFD_SETLK, &un) < 0 || fcntl(12, F_SETLK, &un) < 0)
		target_verdict(0, "releasing: %s", strerror(errno));
	bad = probe(probe_free_, 0);
	if (bad)
		target_verdict(0, "probe after release: 0x%x (2 flock, 4 OFD, 8 POSIX)", bad);
	target_pass();
}
