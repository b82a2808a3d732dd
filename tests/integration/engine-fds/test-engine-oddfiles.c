/*
 * Files in odd states through the real tools, where the plain cycle of
 * test-engine-fds-e2e.c does not reach: trees holding a removed
 * directory as cwd, a removed FIFO, a pipe through descriptions of their
 * own, a mapped memfd and deleted file; and each new restore step
 * failing by fault injection
 * (CKPTFS_FAULT, docs/TESTING.md): the restore fails naming the object,
 * leaves nothing of its own beside the files it made again, and the same
 * snapshot restores afterwards, the target passing its own checks.
 *
 * Needs root. The test is a child subreaper, so that restored processes
 * (and a killed tree's children) become its children and are reaped here.
 */
#include <check.h>
#include <dirent.h>
#include <signal.h>
#include <sys/wait.h>

#include "common/common.h"
#include "tests/integration/ckpt-run.h"

static void setup(void)
{
	case_begin("odd");
}

/* Starts tests/targets/target-NAME READY RESULT SCRATCH [ARG]. */
static pid_t spawn(const char *name, const char *arg)
{
	char prog[64];
	snprintf(prog, sizeof(prog), "target-%s", name);
	return case_spawn(NULL, prog, -1, (const char *const[]){ case_path("scratch"), arg, NULL }, 10000);
}

/* Dumps pid with --kill and reaps it and whatever children it had. */
static void dump_kill(pid_t pid)
{
	char p[32];
	int st;

	snprintf(p, sizeof(p), "%d", pid);
	ck_assert_msg(case_ckpt(NULL, NULL, 0, "dump", "--kill", p, case_path("snap")) == 0, "ckpt dump: %s",
		      case_ckpt_err());
	ck_assert_int_eq(waitpid(pid, &st, 0), pid);
	while (waitpid(-1, &st, WNOHANG) > 0)
		;
}

/* Restores the snapshot and takes the target's verdict. */
static void restore_pass(void)
{
	char out[64];

	ck_assert_msg(case_ckpt(NULL, out, sizeof(out), "restore", case_path("snap"), NULL, NULL) == 0,
		      "ckpt restore: %s", case_ckpt_err());
	case_verdict(atoi(out));
}

/* The restore with fault N fails, saying want, and leaves no temporary
 * name of its own in the case's directory. */
static void restore_fails(const char *fault, const char *want, pid_t pid)
{
	char out[64];

	ck_assert_int_ne(case_ckpt(fault, out, sizeof(out), "restore", case_path("snap"), NULL, NULL), 0);
	ck_assert_msg(strstr(case_ckpt_err(), want) && strstr(case_ckpt_err(), "injected fault"), "stderr: %s",
		      case_ckpt_err());
	DIR *d = opendir(case_dir);
	ck_assert_ptr_nonnull(d);
	for (struct dirent *de; (de = readdir(d));)
		ck_assert_msg(!strstr(de->d_name, ".ckptfs-"), "left behind: %s", de->d_name);
	closedir(d);
	/* everything it made is gone (killed, and reaped here, its
	 * subreaper): the pid is free again */
	for (int i = 0; i < 5000 && kill(pid, 0) == 0; i++) {
		while (waitpid(-1, NULL, WNOHANG) > 0)
			;
		usleep(1000);
	}
	ck_assert(kill(pid, 0) < 0 && errno == ESRCH);
}

/* A parent and its child both in a removed directory (inherited, not
 * shared): each gets one back and checks it. */
START_TEST(deleted_dir_tree)
{
	pid_t pid = spawn("fds-deleted-dir", "tree");

	dump_kill(pid);
	restore_pass();
}
END_TEST

START_TEST(fault_deleted_dir)
{
	pid_t pid = spawn("fds-deleted-dir", NULL);

	dump_kill(pid);
	restore_fails("418", "deleted directory ", pid);
	restore_pass();
}
END_TEST

/* A removed FIFO held by a parent and, through a description of its
 * own, by its child: made once for both. */
START_TEST(deleted_fifo_tree)
{
	pid_t pid = spawn("fds-deleted-fifo", "tree");

	dump_kill(pid);
	restore_pass();
}
END_TEST

START_TEST(fault_deleted_fifo)
{
	pid_t pid = spawn("fds-deleted-fifo", NULL);

	dump_kill(pid);
	restore_fails("419", "deleted FIFO ", pid);
	restore_pass();
}
END_TEST

/* fds-sparse: writing the second data run of its 4 GiB deleted file
 * fails: the half-written unnamed file goes with the failed restore */
START_TEST(fault_sparse_fill)
{
	pid_t pid = spawn("fds-sparse", NULL);

	dump_kill(pid);
	restore_fails("420:2", "data run 2 of 3 at ", pid);
	restore_pass();
}
END_TEST

/* One pipe through descriptions of a parent and, one of them its own
 * (read-write, reopened through /proc), of its child: made once. */
START_TEST(pipe_reopen_tree)
{
	pid_t pid = spawn("fds-pipe-reopen", "tree");

	dump_kill(pid);
	restore_pass();
}
END_TEST

/* fds-pipe-reopen: the third description of its pipe cannot be opened */
START_TEST(fault_pipe_reopen)
{
	pid_t pid = spawn("fds-pipe-reopen", NULL);

	dump_kill(pid);
	restore_fails("422:3", "fd 12: pipe:[", pid);
	restore_pass();
}
END_TEST

/* A memfd and a deleted file held and mapped shared by a parent and its
 * child (inherited): one file for both descriptors and both mappings. */
START_TEST(mapped_tree)
{
	pid_t pid = spawn("fds-mapped", "tree");

	dump_kill(pid);
	restore_pass();
}
END_TEST

/* fds-mapped: a memfd and a deleted file held and mapped shared */
START_TEST(fault_shm_fd)
{
	pid_t pid = spawn("fds-mapped", NULL);

	dump_kill(pid);
	restore_fails("421", "fd 20: cannot reopen the shared memory object of fds-mapped", pid);
	restore_pass();
}
END_TEST

int main(void)
{
	const struct case_def cases[] = {
		{ "deleted_dir_tree", deleted_dir_tree },
		{ "fault_deleted_dir", fault_deleted_dir },
		{ "fault_shm_fd", fault_shm_fd },
		{ "fault_deleted_fifo", fault_deleted_fifo },
		{ "deleted_fifo_tree", deleted_fifo_tree },
		{ "fault_sparse_fill", fault_sparse_fill },
		{ "fault_pipe_reopen", fault_pipe_reopen },
		{ "pipe_reopen_tree", pipe_reopen_tree },
		{ "mapped_tree", mapped_tree },
	};

	return case_main("engine-oddfiles", cases, ARRAY_SIZE(cases), 60, setup, case_end,
			 "ptrace, pidfd_getfd, clone3 set_tid");
}
