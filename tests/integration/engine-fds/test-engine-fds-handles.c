/*
 * Watchers and handles through the real tools (`ckpt dump`, `ckpt
 * restore`): pidfds of a tree (target-fds-pidfd: of its live child, of a
 * reaped child, of itself as a thread, of a process outside the tree),
 * dumped running, --kill and --stop, each restored target checking its
 * own; an outside process gone at restore refuses the restore, naming
 * it, with nothing left behind; the restore failing at the injected
 * faults of these kinds (412 a pidfd, 413 an epoll watch under a closed
 * number, target-fds-epoll, 414 an AIO context, target-fds-aio) leaves
 * nothing behind, and the same snapshot restores afterwards; an AIO ring
 * with completed events not reaped, wrapping around the ring, has them
 * back after the restore, in each dump mode.
 *
 * Needs root. The test is a child subreaper, so that restored processes
 * (and the target's outside process) become its children and are reaped
 * here.
 */
#include <check.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "common/common.h"
#include "tests/integration/ckpt-run.h"

static void setup(void)
{
	case_begin("fds-handles");
}

/* Starts tests/targets/target-NAME READY RESULT [SCRATCH [ARG]]. */
static pid_t spawn_arg(const char *name, bool scratch, const char *arg)
{
	char prog[64];
	snprintf(prog, sizeof(prog), "target-%s", name);
	return case_spawn(NULL, prog, -1, (const char *const[]){ scratch ? case_path("scratch") : NULL, arg, NULL },
			  10000);
}

static pid_t spawn(const char *name, bool scratch)
{
	return spawn_arg(name, scratch, NULL);
}

/* The processes of a tree (v, n), killed (by the dump or here) and
 * reaped one by one: the target's outside process, also our child, lives
 * on. */
static void end_tree(const pid_t *v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		kill(v[i], SIGKILL);
	for (size_t i = 0; i < n; i++)
		waitpid(v[i], NULL, 0);
}

/* The outside process target-fds-pidfd made (its pid in SCRATCH), or 0. */
static pid_t outside_pid(void)
{
	char *text = NULL;
	pid_t p = 0;

	if (read_file_full(case_path("scratch"), &text, NULL) == 0)
		p = atoi(text);
	free(text);
	return p;
}

/* Whatever is still ours (an outside process the target did not kill on
 * a failed path): killed and reaped. */
static void reap_rest(pid_t outside)
{
	if (outside > 0 && kill(outside, SIGKILL) == 0)
		waitpid(outside, NULL, 0);
	while (waitpid(-1, NULL, WNOHANG) > 0)
		;
}

/* The pids of the last tree dumped. */
static pid_t tree_v[16];
static size_t tree_n;

static pid_t dump_tree(const char *name, bool scratch, const char *mode)
{
	char p[32];
	pid_t *v = tree_v, pid = spawn(name, scratch);
	size_t n = tree_n = case_descendants(pid, v, ARRAY_SIZE(tree_v));
	int rc;

	snprintf(p, sizeof(p), "%d", pid);
	rc = mode ? case_ckpt(NULL, NULL, 0, "dump", mode, p, case_path("snap"))
		  : case_ckpt(NULL, NULL, 0, "dump", p, case_path("snap"), NULL);
	ck_assert_msg(rc == 0, "ckpt dump %s: %s", mode ? mode : "", case_ckpt_err());
	end_tree(v, n);
	return pid;
}

static void cycle(const char *name, bool scratch, const char *mode)
{
	char out[64];

	dump_tree(name, scratch, mode);
	pid_t outside = outside_pid();
	ck_assert_msg(case_ckpt(NULL, out, sizeof(out), "restore", case_path("snap"), NULL, NULL) == 0, "ckpt restore: %s",
		      case_ckpt_err());
	case_verdict(atoi(out));
	/* the restored target killed it through its pidfd */
	if (outside > 0) {
		int st;
		ck_assert_int_eq(waitpid(outside, &st, 0), outside);
		ck_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
	}
	reap_rest(0);
}

START_TEST(pidfd_running) { cycle("fds-pidfd", true, NULL); } END_TEST
START_TEST(epoll_tree_running) { cycle("fds-epoll-tree", false, NULL); } END_TEST
START_TEST(epoll_tree_kill) { cycle("fds-epoll-tree", false, "--kill"); } END_TEST
START_TEST(epoll_tree_stop) { cycle("fds-epoll-tree", false, "--stop"); } END_TEST
START_TEST(pidfd_kill) { cycle("fds-pidfd", true, "--kill"); } END_TEST
START_TEST(pidfd_stop) { cycle("fds-pidfd", true, "--stop"); } END_TEST

/* The image says which is which: the child in the tree, the reaped one,
 * the outside one with its start time. */
START_TEST(pidfd_image)
{
	char fp[64], want[96], *fds = NULL;
	pid_t pid = dump_tree("fds-pidfd", true, "--kill");
	pid_t outside = outside_pid();

	snprintf(fp, sizeof(fp), "snap/%d/fds", pid);
	ck_assert_int_eq(read_file_full(case_path(fp), &fds, NULL), 0);
	snprintf(want, sizeof(want), "\n43 pidfd flags=02 cloexec=1 pid=%d start=", outside);
	ck_assert_msg(strstr(fds, "\n40 pidfd flags=04002 cloexec=1 pid=") && strstr(fds, " tree=1\n41 pidfd") &&
			      strstr(fds, "\n41 pidfd flags=02 cloexec=1 pid=-1\n") &&
			      strstr(fds, "\n42 pidfd flags=0202 cloexec=1 pid=") && strstr(fds, want) &&
			      strstr(fds, " tree=0\n"),
		      "fds: %s", fds);
	free(fds);
	reap_rest(outside);
}
END_TEST

/* The parent's watch names the pipe's read end, which the child holds,
 * by its id in shared/fds. */
START_TEST(epoll_tree_image)
{
	char fp[64], *fds = NULL, *shared = NULL;
	pid_t pid = dump_tree("fds-epoll-tree", false, "--kill");

	snprintf(fp, sizeof(fp), "snap/%d/fds", pid);
	ck_assert_int_eq(read_file_full(case_path(fp), &fds, NULL), 0);
	ck_assert_int_eq(read_file_full(case_path("snap/shared/fds"), &shared, NULL), 0);
	ck_assert_msg(strstr(fds, "\n40 epoll flags=02 cloexec=1 watch=41:0x19:0xa1:s") && !strstr(fds, "\n41 "),
		      "fds: %s", fds);
	ck_assert_msg(strstr(shared, " pipe-r ") && strstr(shared, " pipe-w "), "shared/fds: %s", shared);
	free(fds);
	free(shared);
}
END_TEST

/* The outside process is gone by the restore: refused before anything
 * is made, naming the descriptor and the pid; the tree's pids stay free. */
START_TEST(pidfd_outside_gone_refused)
{
	char out[64], want[96];
	pid_t pid = dump_tree("fds-pidfd", true, "--kill");
	pid_t outside = outside_pid();

	ck_assert_int_gt(outside, 0);
	reap_rest(outside);
	ck_assert_int_ne(case_ckpt(NULL, out, sizeof(out), "restore", case_path("snap"), NULL, NULL), 0);
	snprintf(want, sizeof(want), "fd 43: pidfd of pid %d, outside the process tree: that process is gone", outside);
	ck_assert_msg(strstr(case_ckpt_err(), want), "stderr: %s", case_ckpt_err());
	ck_assert(kill(pid, 0) < 0 && errno == ESRCH);
}
END_TEST

/* Reopening a pidfd fails (fault 412): the restore fails naming it,
 * nothing it made lives on, and the same snapshot restores afterwards. */
START_TEST(pidfd_restore_fault)
{
	char out[64];
	pid_t pid = dump_tree("fds-pidfd", true, "--kill");
	pid_t outside = outside_pid();

	ck_assert_int_ne(case_ckpt("412", out, sizeof(out), "restore", case_path("snap"), NULL, NULL), 0);
	/* the root's fd 40 or the child's fd 50, whichever comes first */
	ck_assert_msg((strstr(case_ckpt_err(), "fd 40: pidfd of pid ") || strstr(case_ckpt_err(), "fd 50: pidfd of pid ")) &&
			      strstr(case_ckpt_err(), ": injected fault"),
		      "stderr: %s", case_ckpt_err());
	/* what the failed restore made is dead and came to us */
	for (size_t k = 0; k < tree_n; k++)
		waitpid(tree_v[k], NULL, 0);
	ck_assert(kill(pid, 0) < 0 && errno == ESRCH);
	ck_assert_msg(case_ckpt(NULL, out, sizeof(out), "restore", case_path("snap"), NULL, NULL) == 0, "ckpt restore: %s",
		      case_ckpt_err());
	case_verdict(atoi(out));
	ck_assert_int_eq(waitpid(outside, NULL, 0), outside);
	reap_rest(0);
}
END_TEST

/* Adding an epoll watch under a closed number fails once the number is
 * borrowed (fault 413): the restore fails naming the instance and the
 * number, and the same snapshot restores afterwards. */
START_TEST(epoll_restore_fault)
{
	char out[64];
	pid_t pid = dump_tree("fds-epoll", false, "--kill");

	ck_assert_int_ne(case_ckpt("413", out, sizeof(out), "restore", case_path("snap"), NULL, NULL), 0);
	/* the kernel lists watches in its own order: either one comes first */
	ck_assert_msg(strstr(case_ckpt_err(), "fd 40: epoll: watch on fd 41 (file of fd 43): injected fault") ||
			      strstr(case_ckpt_err(), "fd 40: epoll: watch on fd 42 (file of fd 45): injected fault"),
		      "stderr: %s", case_ckpt_err());
	for (size_t k = 0; k < tree_n; k++)
		waitpid(tree_v[k], NULL, 0);
	ck_assert(kill(pid, 0) < 0 && errno == ESRCH);
	ck_assert_msg(case_ckpt(NULL, out, sizeof(out), "restore", case_path("snap"), NULL, NULL) == 0, "ckpt restore: %s",
		      case_ckpt_err());
	case_verdict(atoi(out));
	reap_rest(0);
}
END_TEST

/* Completed AIO events not reaped, wrapping around the ring
 * (target-fds-aio unreaped): they are there after the restore, in each
 * dump mode. */
static void cycle_unreaped(const char *mode)
{
	char p[32], out[64];
	pid_t pid = spawn_arg("fds-aio", true, "unreaped");

	snprintf(p, sizeof(p), "%d", pid);
	int rc = mode ? case_ckpt(NULL, NULL, 0, "dump", mode, p, case_path("snap"))
		      : case_ckpt(NULL, NULL, 0, "dump", p, case_path("snap"), NULL);
	ck_assert_msg(rc == 0, "ckpt dump %s: %s", mode ? mode : "", case_ckpt_err());
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
	ck_assert_msg(case_ckpt(NULL, out, sizeof(out), "restore", case_path("snap"), NULL, NULL) == 0, "ckpt restore: %s",
		      case_ckpt_err());
	case_verdict(atoi(out));
}

START_TEST(aio_unreaped_running) { cycle_unreaped(NULL); } END_TEST
START_TEST(aio_unreaped_kill) { cycle_unreaped("--kill"); } END_TEST
START_TEST(aio_unreaped_stop) { cycle_unreaped("--stop"); } END_TEST

/* The ring made again, not yet moved (fault 414): the restore fails
 * naming the context, nothing it made lives on, and the same snapshot
 * restores afterwards. */
START_TEST(aio_restore_fault)
{
	char out[64];
	pid_t pid = dump_tree("fds-aio", true, "--kill");

	ck_assert_int_ne(case_ckpt("414", out, sizeof(out), "restore", case_path("snap"), NULL, NULL), 0);
	ck_assert_msg(strstr(case_ckpt_err(), ": AIO context 0x") && strstr(case_ckpt_err(), ": injected fault"), "stderr: %s",
		      case_ckpt_err());
	for (size_t k = 0; k < tree_n; k++)
		waitpid(tree_v[k], NULL, 0);
	ck_assert(kill(pid, 0) < 0 && errno == ESRCH);
	ck_assert_msg(case_ckpt(NULL, out, sizeof(out), "restore", case_path("snap"), NULL, NULL) == 0, "ckpt restore: %s",
		      case_ckpt_err());
	case_verdict(atoi(out));
	reap_rest(0);
}
END_TEST

int main(void)
{
	const struct case_def cases[] = {
		{ "pidfd_running", pidfd_running },
		{ "pidfd_kill", pidfd_kill },
		{ "pidfd_stop", pidfd_stop },
		{ "pidfd_image", pidfd_image },
		{ "epoll_tree_running", epoll_tree_running },
		{ "epoll_tree_kill", epoll_tree_kill },
		{ "epoll_tree_stop", epoll_tree_stop },
		{ "epoll_tree_image", epoll_tree_image },
		{ "pidfd_outside_gone_refused", pidfd_outside_gone_refused },
		{ "pidfd_restore_fault", pidfd_restore_fault },
		{ "epoll_restore_fault", epoll_restore_fault },
		{ "aio_unreaped_running", aio_unreaped_running },
		{ "aio_unreaped_kill", aio_unreaped_kill },
		{ "aio_unreaped_stop", aio_unreaped_stop },
		{ "aio_restore_fault", aio_restore_fault },
	};

	return case_main("engine-fds-handles", cases, ARRAY_SIZE(cases), 40, setup, case_end,
			 "ptrace, pidfd_getfd, clone3 set_tid");
}
