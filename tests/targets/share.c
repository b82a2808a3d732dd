/*
 * target-share: a parent and a child made with clone() that share what
 * threads usually share, checkpointed and restored as one tree.
 *
 *   MODE files: CLONE_FILES, one descriptor table. Before the checkpoint
 *   the parent opens DIR/share-a (fd 3) and the child DIR/share-b (fd 4):
 *   each sees the other's. After the restore the child opens DIR/share-c
 *   and closes fd 3; the parent must see share-c at the number the child
 *   got and find fd 3 closed; then the parent opens DIR/share-d, which
 *   takes fd 3 (the lowest free) and the child must see there, and both
 *   still see share-b at fd 4.
 *
 *   MODE fs: CLONE_FS, one cwd, root and umask. Before the checkpoint the
 *   parent goes into DIR/share-1 with umask 027. After the restore the
 *   child goes into DIR/share-2 with umask 077, which the parent must see;
 *   then the parent goes back into DIR/share-1 with umask 022, which the
 *   child must see.
 *
 * The child makes a grandchild with the same flag before the checkpoint;
 * after the restore it must share the table or context with both and see
 * the parent's last change.
 *
 * In both, kcmp() must say after the restore that they still share it
 * (so a restore that gave each a copy fails even before the other checks).
 * DIR is the directory of READY. The child reports by its exit status and
 * a line in shared memory; the parent writes the verdict.
 *
 * Command line: target-share READY RESULT files|fs
 */
#include <libgen.h>
#include <linux/kcmp.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>

#include "target.h"

struct talk {
	volatile int stage; /* 1: the child set up; 2: the child acted after the restore; 3: the parent did */
	volatile int fd;    /* the descriptor the child opened after the restore */
	char why[256];      /* the child's failure */
	char gwhy[256];     /* the grandchild's */
};

static struct talk *tk;
static char dir[PATH_MAX / 2];
static bool files;
static pid_t root;

static void path_of(char *out, const char *name)
{
	snprintf(out, PATH_MAX, "%s/%s", dir, name);
}

/* Waits (20 s at most) until the stage is reached. */
static bool wait_stage(int want)
{
	for (int i = 0; i < 20000 && tk->stage < want; i++) {
		struct timespec ts = { 0, 1000000 };
		nanosleep(&ts, NULL);
	}
	return tk->stage >= want;
}

/* fd is open on DIR/name */
static bool fd_is(int fd, const char *name)
{
	char link[64], got[PATH_MAX], want[PATH_MAX];
	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	ssize_t n = readlink(link, got, sizeof(got) - 1);
	if (n < 0)
		return false;
	got[n] = 0;
	path_of(want, name);
	return !strcmp(got, want);
}

static bool cwd_is(const char *name)
{
	char got[PATH_MAX], want[PATH_MAX];
	path_of(want, name);
	return getcwd(got, sizeof(got)) && !strcmp(got, want);
}

static unsigned umask_now(void)
{
	mode_t m = umask(0);
	umask(m);
	return m;
}

static int child_fail(const char *why)
{
	snprintf(tk->why, sizeof(tk->why), "child: %.200s", why);
	return 1;
}

static int grandchild_fail(const char *why)
{
	snprintf(tk->gwhy, sizeof(tk->gwhy), "grandchild: %.200s", why);
	return 1;
}

/* The child's child, made with the same flag: it shares the table or
 * context of all three, and sees the parent's last change. */
static int grandchild(void *arg)
{
	(void)arg;
	target_wait_restored();
	if (!wait_stage(3))
		return grandchild_fail("the parent never answered");
	int kind = files ? KCMP_FILES : KCMP_FS;
	if (syscall(SYS_kcmp, getppid(), getpid(), kind, 0, 0) != 0 || syscall(SYS_kcmp, root, getpid(), kind, 0, 0) != 0)
		return grandchild_fail("not sharing with the child and the parent after the restore");
	if (files ? !fd_is(3, "share-d") || !fd_is(4, "share-b") : !cwd_is("share-1") || umask_now() != 022)
		return grandchild_fail("the parent's last change is not seen");
	return 0;
}

static int child(void *arg)
{
	char p[PATH_MAX];
	(void)arg;
	if (files) {
		path_of(p, "share-b");
		if (open(p, O_RDONLY) != 4)
			return child_fail("share-b is not fd 4");
	}
	static char stack[64 * 1024] __attribute__((aligned(16)));
	pid_t g = clone(grandchild, stack + sizeof(stack), (files ? CLONE_FILES : CLONE_FS) | SIGCHLD, NULL);
	if (g < 0)
		return child_fail("clone of the grandchild failed");
	tk->stage = 1;
	target_wait_restored();
	if (syscall(SYS_kcmp, getppid(), getpid(), files ? KCMP_FILES : KCMP_FS, 0, 0) != 0)
		return child_fail(files ? "descriptor table no longer shared with the parent after the restore"
					: "filesystem context no longer shared with the parent after the restore");
	if (files) {
		if (!fd_is(3, "share-a") || !fd_is(4, "share-b"))
			return child_fail("fd 3 or 4 is not what it was");
		path_of(p, "share-c");
		tk->fd = open(p, O_RDONLY);
		if (tk->fd < 0 || close(3) < 0)
			return child_fail("open share-c / close fd 3 failed");
	} else {
		if (!cwd_is("share-1") || umask_now() != 027)
			return child_fail("cwd or umask not the parent's before the restore");
		path_of(p, "share-2");
		if (chdir(p) < 0)
			return child_fail("chdir share-2 failed");
		umask(077);
	}
	tk->stage = 2;
	if (!wait_stage(3))
		return child_fail("the parent never answered");
	if (files) {
		if (!fd_is(3, "share-d") || !fd_is(4, "share-b"))
			return child_fail("the parent's share-d is not in our table");
	} else if (!cwd_is("share-1") || umask_now() != 022) {
		return child_fail("the parent's chdir or umask not seen");
	}
	int st;
	if (waitpid(g, &st, 0) != g || !WIFEXITED(st) || WEXITSTATUS(st))
		return child_fail(tk->gwhy[0] ? tk->gwhy : "the grandchild failed");
	return 0;
}

int main(int argc, char **argv)
{
	char p[PATH_MAX];
	target_init(argc, argv, 1);
	files = !strcmp(argv[3], "files");
	if (!files && strcmp(argv[3], "fs"))
		target_verdict(0, "mode %s: neither files nor fs", argv[3]);
	snprintf(p, sizeof(p), "%s", argv[1]);
	snprintf(dir, sizeof(dir), "%s", dirname(p));
	tk = mmap(NULL, sizeof(*tk), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (tk == MAP_FAILED)
		target_verdict(0, "mmap: %s", strerror(errno));
	tk->fd = -1;
	if (files) {
		const char *names[] = { "share-a", "share-b", "share-c", "share-d" };
		for (size_t i = 0; i < 4; i++) {
			path_of(p, names[i]);
			int fd = open(p, O_WRONLY | O_CREAT, 0600);
			close(fd);
		}
		path_of(p, "share-a");
		if (open(p, O_RDONLY) != 3)
			target_verdict(0, "%s is not fd 3", p);
	} else {
		path_of(p, "share-1");
		mkdir(p, 0700);
		if (chdir(p) < 0)
			target_verdict(0, "chdir %s: %s", p, strerror(errno));
		path_of(p, "share-2");
		mkdir(p, 0700);
		umask(027);
	}
	root = getpid();
	static char stack[64 * 1024] __attribute__((aligned(16)));
	pid_t c = clone(child, stack + sizeof(stack), (files ? CLONE_FILES : CLONE_FS) | SIGCHLD, NULL);
	if (c < 0)
		target_verdict(0, "clone: %s", strerror(errno));
	if (!wait_stage(1))
		target_verdict(0, "the child did not set up");
	if (files && !fd_is(4, "share-b"))
		target_verdict(0, "the child's fd 4 is not in our table before the checkpoint");
	target_ready();
	target_wait_restored();

	if (syscall(SYS_kcmp, getpid(), c, files ? KCMP_FILES : KCMP_FS, 0, 0) != 0)
		target_verdict(0, "%s no longer shared with the child after the restore",
			       files ? "descriptor table" : "filesystem context");
	if (!wait_stage(2)) {
		kill(c, SIGKILL);
		target_verdict(0, "the child did not act after the restore: %s", tk->why);
	}
	if (files) {
		if (tk->fd < 0 || !fd_is(tk->fd, "share-c"))
			target_verdict(0, "the child's share-c (fd %d) is not in our table", tk->fd);
		if (fcntl(3, F_GETFD) >= 0 || errno != EBADF)
			target_verdict(0, "fd 3, closed by the child, is still open here");
		/* the lowest free number: the one the child closed */
		path_of(p, "share-d");
		int d = open(p, O_RDONLY);
		if (d != 3)
			target_verdict(0, "share-d is fd %d, not 3: the table is not the one the child changed", d);
	} else {
		if (!cwd_is("share-2"))
			target_verdict(0, "the child's chdir into share-2 is not seen here");
		if (umask_now() != 077)
			target_verdict(0, "the child's umask 077 is not seen here (0%o)", umask_now());
		path_of(p, "share-1");
		if (chdir(p) < 0)
			target_verdict(0, "chdir %s: %s", p, strerror(errno));
		umask(022);
	}
	tk->stage = 3;
	int st;
	if (waitpid(c, &st, 0) != c)
		target_verdict(0, "waitpid: %s", strerror(errno));
	if (!WIFEXITED(st) || WEXITSTATUS(st))
		target_verdict(0, "the child failed (status 0x%x): %s", st, tk->why);
	target_pass();
}
