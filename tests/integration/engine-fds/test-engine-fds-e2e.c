/*
 * Descriptor targets (tests/targets/fds-*.c) through the real tools: each
 * is started, dumped with `ckpt dump` (running, --kill, --stop), its
 * original killed, restored with `ckpt restore`, told it was restored,
 * and its own verdict is checked. A target holding a half-closed TCP
 * connection must make the dump fail, naming the descriptor and its
 * state, and keep running as it was.
 *
 * Needs root. The test is a child subreaper, so that restored processes
 * become its children and are reaped here.
 */
#include <check.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "common/common.h"
#include "tests/integration/ckpt-run.h"

static void setup(void)
{
	case_begin("fds-e2e");
}

/* Starts tests/targets/target-NAME READY RESULT [SCRATCH]. */
static pid_t spawn(const char *name, bool scratch)
{
	char prog[64];
	snprintf(prog, sizeof(prog), "target-%s", name);
	return case_spawn(NULL, prog, -1, (const char *const[]){ scratch ? case_path("scratch") : NULL, NULL }, 10000);
}

/* Runs ckpt; stdout into out, stderr into DIR/ckpt.err. Returns the exit status. */
static int run_ckpt(char *out, size_t outlen, const char *a1, const char *a2, const char *a3, const char *a4)
{
	return case_ckpt(NULL, out, outlen, a1, a2, a3, a4);
}

static void cycle(const char *name, bool scratch, const char *mode)
{
	char p[32], out[64];
	int st, rc;
	pid_t pid = spawn(name, scratch);

	snprintf(p, sizeof(p), "%d", pid);
	rc = mode ? run_ckpt(NULL, 0, "dump", mode, p, case_path("snap")) : run_ckpt(NULL, 0, "dump", p, case_path("snap"), NULL);
	ck_assert_msg(rc == 0, "ckpt dump %s: %s", mode ? mode : "", case_ckpt_err());
	/* The original goes; its PID (and its listeners' addresses) with it. */
	if (!mode || strcmp(mode, "--kill"))
		kill(pid, SIGKILL);
	ck_assert_int_eq(waitpid(pid, &st, 0), pid);
	rc = run_ckpt(out, sizeof(out), "restore", case_path("snap"), NULL, NULL);
	ck_assert_msg(rc == 0, "ckpt restore: %s", case_ckpt_err());
	case_verdict(atoi(out));
}

#define CYCLE_TESTS(name, target, scratch)                                          \
	START_TEST(name##_running) { cycle(target, scratch, NULL); } END_TEST        \
	START_TEST(name##_kill) { cycle(target, scratch, "--kill"); } END_TEST       \
	START_TEST(name##_stop) { cycle(target, scratch, "--stop"); } END_TEST

CYCLE_TESTS(file, "fds-file", true)
CYCLE_TESTS(deleted, "fds-deleted", true)
/* removed directories as cwd, O_RDONLY and O_PATH (target-fds-deleted-dir) */
CYCLE_TESTS(deleted_dir, "fds-deleted-dir", true)
/* memfd and deleted file mapped shared and held, a mapping made writable later (target-fds-mapped) */
CYCLE_TESTS(mapped, "fds-mapped", true)
/* removed FIFOs with queued bytes, one read-write (target-fds-deleted-fifo) */
CYCLE_TESTS(deleted_fifo, "fds-deleted-fifo", true)
/* a 4 GiB deleted file and a 2 GiB memfd, sparse (target-fds-sparse) */
CYCLE_TESTS(sparse, "fds-sparse", true)
/* one pipe through five descriptions, one read-write; a pipe held read-write only (target-fds-pipe-reopen) */
CYCLE_TESTS(pipe_reopen, "fds-pipe-reopen", true)
CYCLE_TESTS(pipe, "fds-pipe", true)
CYCLE_TESTS(event, "fds-event", false)
CYCLE_TESTS(socket, "fds-socket", true)
/* watches with their numbers, flags of two instances (target-fds-inotify) */
CYCLE_TESTS(inotify, "fds-inotify", true)
/* watches under closed and replaced numbers (target-fds-epoll) */
CYCLE_TESTS(epoll_closed, "fds-epoll", false)
/* two AIO contexts, used before and after (target-fds-aio) */
CYCLE_TESTS(aio, "fds-aio", true)

static off_t file_size(const char *p)
{
	struct stat st;

	return stat(p, &st) == 0 ? st.st_size : -1;
}

/* target-fds-log is dumped running and appends to its log after the
 * dump; the restore takes the longer log without being told to accept
 * it, at its end, and the target checks that the log is whole and in
 * order once it appended more. */
START_TEST(log_grown_after_dump)
{
	char p[32], out[64], *fds = NULL;
	int st, rc;
	pid_t pid = spawn("fds-log", true);

	snprintf(p, sizeof(p), "%d", pid);
	rc = run_ckpt(NULL, 0, "dump", p, case_path("snap"), NULL);
	ck_assert_msg(rc == 0, "ckpt dump: %s", case_ckpt_err());
	char fp[64];
	snprintf(fp, sizeof(fp), "snap/%d/fds", pid);
	ck_assert_int_eq(read_file_full(case_path(fp), &fds, NULL), 0);
	ck_assert_msg(strstr(fds, "3 file flags=02001 "), "fds: %s", fds);
	free(fds);
	/* Three more lines at least (a line a millisecond) before it goes. */
	off_t dumped = file_size(case_path("scratch"));
	for (int i = 0; i < 10000 && file_size(case_path("scratch")) < dumped + 3 * 14; i++)
		usleep(1000);
	ck_assert_int_ge(file_size(case_path("scratch")), dumped + 3 * 14);
	kill(pid, SIGKILL);
	ck_assert_int_eq(waitpid(pid, &st, 0), pid);
	rc = run_ckpt(out, sizeof(out), "restore", case_path("snap"), NULL, NULL);
	ck_assert_msg(rc == 0, "ckpt restore: %s", case_ckpt_err());
	case_verdict(atoi(out));
}
END_TEST

/* A file that is not a log (target-fds-file's O_RDWR|O_APPEND one) and
 * grew: the restore is refused, naming it and the option, and the option
 * restores it. */
START_TEST(changed_file_needs_the_option)
{
	char p[32], out[64];
	int st, rc;
	pid_t pid = spawn("fds-file", true);

	snprintf(p, sizeof(p), "%d", pid);
	rc = run_ckpt(NULL, 0, "dump", p, case_path("snap"), NULL);
	ck_assert_msg(rc == 0, "ckpt dump: %s", case_ckpt_err());
	kill(pid, SIGKILL);
	ck_assert_int_eq(waitpid(pid, &st, 0), pid);
	int fd = open(case_path("scratch"), O_WRONLY | O_APPEND | O_CLOEXEC);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, "more", 4), 4);
	close(fd);
	rc = run_ckpt(out, sizeof(out), "restore", case_path("snap"), NULL, NULL);
	ck_assert_int_ne(rc, 0);
	ck_assert_msg(strstr(case_ckpt_err(), case_path("scratch")) && strstr(case_ckpt_err(), "size 20, was 16") &&
			      strstr(case_ckpt_err(), "--accept-changed-files"),
		      "stderr: %s", case_ckpt_err());
	/* Refused before anything was built: the PID is free. */
	ck_assert(kill(pid, 0) < 0 && errno == ESRCH);
	rc = run_ckpt(out, sizeof(out), "restore", "--accept-changed-files", case_path("snap"), NULL);
	ck_assert_msg(rc == 0, "ckpt restore --accept-changed-files: %s", case_ckpt_err());
	/* Its restored target finds the four bytes too many at the end: it
	 * may or may not judge that; what counts here is that it runs. */
	pid_t r = atoi(out);
	ck_assert_int_eq(kill(r, 0), 0);
	kill(r, SIGKILL);
	waitpid(r, NULL, 0);
}
END_TEST

/* A tree killed by `ckpt dump --kill`: its root, then its children, which
 * came to us (the subreaper) and hold their pids until reaped. Every one
 * is dead already: waiting for each ends. */
static void reap_tree(pid_t root)
{
	int st;

	ck_assert_int_eq(waitpid(root, &st, 0), root);
	while (waitpid(-1, &st, 0) > 0)
		;
}

/* target-fds-lock (a tree: a flock on a description shared with a child,
 * an OFD range, two POSIX ranges): dumped with --kill, the image holds
 * each lock where it belongs, and the restored target checks them from a
 * probe and releases them. */
START_TEST(locks)
{
	char p[32], out[64], fp[64], *fds = NULL, *shared = NULL;
	pid_t pid = spawn("fds-lock", true);

	snprintf(p, sizeof(p), "%d", pid);
	ck_assert_msg(run_ckpt(NULL, 0, "dump", "--kill", p, case_path("snap")) == 0, "ckpt dump: %s", case_ckpt_err());
	reap_tree(pid);
	snprintf(fp, sizeof(fp), "snap/%d/fds", pid);
	ck_assert_int_eq(read_file_full(case_path(fp), &fds, NULL), 0);
	ck_assert_int_eq(read_file_full(case_path("snap/shared/fds"), &shared, NULL), 0);
	ck_assert_msg(strstr(shared, "scratch.a ") && strstr(shared, " flock=ex\n"), "shared/fds: %s", shared);
	ck_assert_msg(strstr(fds, "\n10 shared of=") && strstr(fds, " ofd=w:10:20\n") &&
			      strstr(fds, " posix=w:0:5,r:100:0\n"),
		      "fds: %s", fds);
	free(fds);
	free(shared);
	ck_assert_msg(run_ckpt(out, sizeof(out), "restore", case_path("snap"), NULL, NULL) == 0, "ckpt restore: %s",
		      case_ckpt_err());
	case_verdict(atoi(out));
}
END_TEST

/* Someone else holds a conflicting lock at restore: refused, naming the
 * file and the holder; once it lets go, the same snapshot restores. */
START_TEST(lock_held_elsewhere_fails_restore)
{
	char p[32], out[64];
	pid_t pid = spawn("fds-lock", true);

	snprintf(p, sizeof(p), "%d", pid);
	ck_assert_msg(run_ckpt(NULL, 0, "dump", "--kill", p, case_path("snap")) == 0, "ckpt dump: %s", case_ckpt_err());
	reap_tree(pid);
	int fd = open(case_path("scratch.a"), O_RDONLY | O_CLOEXEC);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(flock(fd, LOCK_SH | LOCK_NB), 0);
	ck_assert_int_ne(run_ckpt(out, sizeof(out), "restore", case_path("snap"), NULL, NULL), 0);
	snprintf(p, sizeof(p), "held by pid %d", getpid());
	ck_assert_msg(strstr(case_ckpt_err(), case_path("scratch.a")) && strstr(case_ckpt_err(), "flock LOCK_EX") &&
			      strstr(case_ckpt_err(), p),
		      "stderr: %s", case_ckpt_err());
	close(fd);
	ck_assert_msg(run_ckpt(out, sizeof(out), "restore", case_path("snap"), NULL, NULL) == 0, "ckpt restore: %s",
		      case_ckpt_err());
	case_verdict(atoi(out));
}
END_TEST

START_TEST(half_closed_tcp_refused)
{
	char p[32];
	pid_t pid = spawn("fds-refused", false);

	snprintf(p, sizeof(p), "%d", pid);
	ck_assert_int_ne(run_ckpt(NULL, 0, "dump", p, case_path("snap"), NULL), 0);
	ck_assert_msg(strstr(case_ckpt_err(), "TCP connection 127.0.0.1:") &&
			      strstr(case_ckpt_err(), " in state FIN_WAIT2: not supported"),
		      "stderr: %s", case_ckpt_err());
	/* Nothing was written and the original runs on, intact. */
	ck_assert_int_ne(access(case_path("snap/manifest"), F_OK), 0);
	case_verdict(pid);
}
END_TEST

int main(void)
{
	const struct case_def cases[] = {
		{ "file_running", file_running },       { "file_kill", file_kill },
		{ "file_stop", file_stop },             { "deleted_running", deleted_running },
		{ "deleted_kill", deleted_kill },       { "deleted_stop", deleted_stop },
		{ "deleted_dir_running", deleted_dir_running }, { "deleted_dir_kill", deleted_dir_kill },
		{ "deleted_dir_stop", deleted_dir_stop },       { "mapped_running", mapped_running },
		{ "mapped_kill", mapped_kill },                 { "mapped_stop", mapped_stop },
		{ "deleted_fifo_running", deleted_fifo_running }, { "deleted_fifo_kill", deleted_fifo_kill },
		{ "deleted_fifo_stop", deleted_fifo_stop },     { "sparse_running", sparse_running },
		{ "sparse_kill", sparse_kill },                 { "sparse_stop", sparse_stop },
		{ "pipe_reopen_running", pipe_reopen_running }, { "pipe_reopen_kill", pipe_reopen_kill },
		{ "pipe_reopen_stop", pipe_reopen_stop },
		{ "pipe_running", pipe_running },       { "pipe_kill", pipe_kill },
		{ "pipe_stop", pipe_stop },             { "event_running", event_running },
		{ "event_kill", event_kill },           { "event_stop", event_stop },
		{ "socket_running", socket_running },   { "socket_kill", socket_kill },
		{ "socket_stop", socket_stop },         { "half_closed_tcp_refused", half_closed_tcp_refused },
		{ "inotify_running", inotify_running }, { "inotify_kill", inotify_kill },
		{ "inotify_stop", inotify_stop },
		{ "epoll_closed_running", epoll_closed_running }, { "epoll_closed_kill", epoll_closed_kill },
		{ "epoll_closed_stop", epoll_closed_stop },
		{ "aio_running", aio_running },         { "aio_kill", aio_kill },
		{ "aio_stop", aio_stop },
		{ "log_grown_after_dump", log_grown_after_dump },
		{ "changed_file_needs_the_option", changed_file_needs_the_option },
		{ "locks", locks },
		{ "lock_held_elsewhere_fails_restore", lock_held_elsewhere_fails_restore },
	};

	return case_main("engine-fds-e2e", cases, ARRAY_SIZE(cases), 30, setup, case_end,
			 "ptrace, pidfd_getfd, clone3 set_tid");
}
