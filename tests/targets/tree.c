/*
 * target-tree: a process family of three generations, checkpointed and
 * restored as one.
 *
 *   R (this program, the root)
 *   ├── C (its own process group), reads G's numbers, sends R its own
 *   │   └── G (in C's group), sends C numbers
 *   ├── D joins C's process group (as the second command of a shell
 *   │   pipeline joins the first's): a group led by its sibling
 *   └── Z exits with status 7 at once and stays a zombie until R reaps
 *       it, after the restore
 *
 * All of them share memory made before the forks: shared anonymous memory
 * (each writes its mark there before the checkpoint; after the restore R
 * writes a token every other process must see) and a memfd mapped by R,
 * C and G (after the restore C writes a token R must see).
 *
 * G -> C and C -> R are pipes carrying 1, 2, 3, ... as 8-byte numbers,
 * one every millisecond; each reader checks that none is lost, repeated
 * or out of order, across the checkpoint too. Each process also holds
 * 1 MiB of its own pattern. After the restore each checks that its
 * parent, process group and session are what they were (the root leads
 * its own session and group once restored), its memory, and that at
 * least 50 more numbers came through. R then reaps Z (exit status 7),
 * closes its pipe, which ends C, which ends G, and each reports up by its
 * exit status; SCRATCH/why holds the first failure's reason.
 *
 * Command line: target-tree READY RESULT SCRATCH
 */
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>

#include "target.h"

#define MEM (1u << 20)
#define TOKEN 0x5eed5eed5eedull

struct shared {
	volatile uint64_t mark[4]; /* R, C, G, D: written before the checkpoint */
	volatile uint64_t token;   /* R writes it after the restore */
};

static const char *scratch;
static pid_t root_pid, c_pid;
static struct shared *sh;      /* shared anonymous memory */
static volatile uint64_t *mfd; /* a memfd's page: C's token after the restore */

static _Noreturn void fail(const char *who, const char *fmt, ...)
{
	char path[4096], buf[512];
	va_list ap;
	int n = snprintf(buf, sizeof(buf), "%s: ", who);
	va_start(ap, fmt);
	vsnprintf(buf + n, sizeof(buf) - n, fmt, ap);
	va_end(ap);
	snprintf(path, sizeof(path), "%s/why", scratch);
	/* the first reason wins */
	if (access(path, F_OK) < 0)
		target_write_file(path, buf);
	exit(1);
}

static uint8_t *pattern(uint8_t seed)
{
	uint8_t *m = malloc(MEM);
	if (!m)
		exit(3);
	for (size_t i = 0; i < MEM; i++)
		m[i] = (uint8_t)(i * 31 + seed);
	return m;
}

static void check_pattern(const char *who, const uint8_t *m, uint8_t seed)
{
	for (size_t i = 0; i < MEM; i++)
		if (m[i] != (uint8_t)(i * 31 + seed))
			fail(who, "memory differs at %zu", i);
}

static void ms(void)
{
	struct timespec ts = { 0, 1000000 };
	nanosleep(&ts, NULL);
}

/* Reads what has arrived; the numbers must follow each other. */
static long drain(const char *who, int fd, uint64_t *next)
{
	long got = 0;
	struct pollfd p = { fd, POLLIN, 0 };
	if (poll(&p, 1, 2) <= 0)
		return 0;
	uint64_t v[64];
	ssize_t n = read(fd, v, sizeof(v));
	if (n == 0)
		return -1;
	if (n < 0)
		return errno == EAGAIN || errno == EINTR ? 0 : -1;
	if (n % 8)
		fail(who, "read %zd bytes, not whole numbers", n);
	for (ssize_t i = 0; i < n / 8; i++, got++)
		if (v[i] != (*next)++)
			fail(who, "got %llu, expected %llu", (unsigned long long)v[i], (unsigned long long)*next - 1);
	return got;
}

/* A descendant failed: its reason, from SCRATCH/why. */
static _Noreturn void why_verdict(const char *who, int st)
{
	char path[4096], buf[512] = "no reason";
	snprintf(path, sizeof(path), "%s/why", scratch);
	FILE *f = fopen(path, "r");
	if (f && !fgets(buf, sizeof(buf), f))
		snprintf(buf, sizeof(buf), "no reason");
	target_verdict(0, "%s ended with 0x%x: %s", who, st, buf);
}

/* Waits (10 s at most) until *p holds want: a value another process
 * writes into memory we share. */
static bool see(volatile uint64_t *p, uint64_t want)
{
	for (int i = 0; i < 10000 && *p != want; i++)
		ms();
	return *p == want;
}

static void check_shared(const char *who)
{
	for (int i = 0; i < 4; i++)
		if (sh->mark[i] != 100u + (unsigned)i)
			fail(who, "shared memory: mark %d is %llu", i, (unsigned long long)sh->mark[i]);
	if (!see(&sh->token, TOKEN ^ (uint64_t)root_pid))
		fail(who, "shared memory: R's token did not arrive");
}

static void check_ids(const char *who, pid_t ppid, pid_t pgid, pid_t sid)
{
	if (getppid() != ppid)
		fail(who, "parent %d, expected %d", getppid(), ppid);
	if (getpgrp() != pgid)
		fail(who, "process group %d, expected %d", getpgrp(), pgid);
	if (getsid(0) != sid)
		fail(who, "session %d, expected %d", getsid(0), sid);
}

/* G: sends numbers to C until C goes away. */
static _Noreturn void grandchild(int out)
{
	uint8_t *m = pattern(3);
	uint64_t v = 1;
	sh->mark[2] = 102;
	for (;;) {
		if (write(out, &v, 8) != 8) {
			if (errno != EPIPE)
				fail("G", "write: %s", strerror(errno));
			break;
		}
		v++;
		ms();
	}
	/* C closed its end after the restore: check ourselves */
	check_ids("G", c_pid, c_pid, root_pid);
	check_pattern("G", m, 3);
	check_shared("G");
	exit(0);
}

/* C: reads G, sends R, in its own group. */
static _Noreturn void child(int out)
{
	int p[2];
	c_pid = getpid();
	if (setpgid(0, 0) < 0 || pipe(p) < 0)
		exit(3);
	pid_t g = fork();
	if (g == 0) {
		close(p[0]);
		close(out);
		grandchild(p[1]);
	}
	close(p[1]);
	fcntl(p[0], F_SETFL, O_NONBLOCK);
	uint8_t *m = pattern(2);
	uint64_t next = 1, v = 1;
	sh->mark[1] = 101;
	long after = -1;
	bool r_gone = false;
	/* until R has closed its end and 50 numbers came from G since the
	 * restore */
	while (!r_gone || after < 50) {
		long k = drain("C", p[0], &next);
		if (k < 0)
			fail("C", "G's pipe ended early");
		if (after < 0 && target_restored()) {
			after = 0;
			*mfd = TOKEN ^ (uint64_t)getpid();
		} else if (after >= 0) {
			after += k;
		}
		if (r_gone)
			continue;
		if (write(out, &v, 8) != 8) {
			if (errno != EPIPE)
				fail("C", "write: %s", strerror(errno));
			r_gone = true;
		}
		v++;
		ms();
	}
	check_ids("C", root_pid, getpid(), root_pid);
	check_pattern("C", m, 2);
	check_shared("C");
	close(p[0]);
	int st;
	if (waitpid(g, &st, 0) != g || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
		exit(1);
	exit(0);
}

/* D: in C's group; checks itself once restored. */
static _Noreturn void sibling(void)
{
	uint8_t *m = pattern(4);
	if (setpgid(0, c_pid) < 0)
		exit(3);
	sh->mark[3] = 103;
	target_wait_restored();
	check_ids("D", root_pid, c_pid, root_pid);
	check_pattern("D", m, 4);
	check_shared("D");
	exit(0);
}

/* R's exit, whatever the verdict: a failure must not leave its family
 * behind (C's end takes G's). Forked children inherit the handler. */
static pid_t d_pid;
static void end_family(void)
{
	if (getpid() != root_pid)
		return;
	if (c_pid > 0)
		kill(c_pid, SIGKILL);
	if (d_pid > 0)
		kill(d_pid, SIGKILL);
}

int main(int argc, char **argv)
{
	target_init(argc, argv, 1);
	scratch = argv[3];
	signal(SIGPIPE, SIG_IGN);
	root_pid = getpid();
	sh = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	int mf = memfd_create("tree-shared", MFD_CLOEXEC);
	if (sh == MAP_FAILED || mf < 0 || ftruncate(mf, 8192) < 0)
		return 3;
	/* mapped from its second page; the descriptor is not kept */
	mfd = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, mf, 4096);
	close(mf);
	if (mfd == MAP_FAILED)
		return 3;
	sh->mark[0] = 100;
	int p[2];
	if (pipe(p) < 0)
		return 3;
	c_pid = fork();
	if (c_pid == 0) {
		close(p[0]);
		child(p[1]);
	}
	close(p[1]);
	fcntl(p[0], F_SETFL, O_NONBLOCK);
	/* as a shell does: the parent makes the child's group too, so that
	 * D can join it whichever of them runs first */
	if (setpgid(c_pid, c_pid) < 0 && errno != EACCES)
		return 3;
	pid_t d = fork();
	if (d == 0) {
		close(p[0]);
		sibling();
	}
	d_pid = d;
	atexit(end_family);
	pid_t z = fork();
	if (z == 0)
		_exit(7);
	/* Z dead but not reaped, G there, numbers flowing: ready */
	siginfo_t si;
	if (waitid(P_PID, z, &si, WEXITED | WNOWAIT) < 0)
		return 3;
	/* D in C's group, and every mark there, before we say ready */
	while (getpgid(d) != c_pid || sh->mark[1] != 101 || sh->mark[2] != 102 || sh->mark[3] != 103) {
		siginfo_t ci = { 0 }, di = { 0 };
		waitid(P_PID, c_pid, &ci, WEXITED | WNOHANG | WNOWAIT);
		waitid(P_PID, d, &di, WEXITED | WNOHANG | WNOWAIT);
		if (ci.si_pid || di.si_pid)
			target_verdict(0, "C or D ended before the checkpoint");
		ms();
	}
	uint8_t *m = pattern(1);
	uint64_t next = 1;
	while (next < 100)
		if (drain("R", p[0], &next) < 0)
			target_verdict(0, "C's pipe ended before ready");
	target_ready();
	while (!target_restored())
		if (drain("R", p[0], &next) < 0)
			target_verdict(0, "C's pipe ended");
	long after = 0;
	while (after < 50) {
		long k = drain("R", p[0], &next);
		if (k < 0)
			target_verdict(0, "C's pipe ended after the restore");
		after += k;
	}
	/* restored: the root leads a session and group of its own */
	if (getsid(0) != getpid() || getpgrp() != getpid())
		target_verdict(0, "root: session %d, group %d, expected %d", getsid(0), getpgrp(), getpid());
	check_pattern("R", m, 1);
	sh->token = TOKEN ^ (uint64_t)getpid();
	if (!see(mfd, TOKEN ^ (uint64_t)c_pid))
		target_verdict(0, "shared memfd: C's token did not arrive");
	for (int i = 0; i < 4; i++)
		if (sh->mark[i] != 100u + (unsigned)i)
			target_verdict(0, "shared memory: mark %d is %llu", i, (unsigned long long)sh->mark[i]);
	int st;
	if (waitpid(z, &st, WNOHANG) != z)
		target_verdict(0, "the zombie %d is not there to reap", z);
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 7)
		target_verdict(0, "the zombie's status is 0x%x, not exit 7", st);
	if (waitpid(d, &st, 0) != d)
		target_verdict(0, "waitpid D: %s", strerror(errno));
	d_pid = 0;
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
		why_verdict("D", st);
	close(p[0]);
	if (waitpid(c_pid, &st, 0) != c_pid)
		target_verdict(0, "waitpid C: %s", strerror(errno));
	c_pid = 0;
	if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
		why_verdict("C", st);
	target_pass();
}
