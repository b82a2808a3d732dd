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
#include <linux/if_tun.h>
#include <linux/netlink.h>
#include <net/if.h>
#include <sys/ioctl.h>
#include <sys/file.h>
#include <sys/socket.h>
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
/* marks by path with their masks and flags, two groups (target-fds-fanotify) */
CYCLE_TESTS(fanotify, "fds-fanotify", true)
/* port ids, groups, options, a filter; requests answered (target-fds-netlink) */
CYCLE_TESTS(netlink, "fds-netlink", false)
/* bound to lo, options, a filter, a membership; frames after (target-fds-packet) */
CYCLE_TESTS(packet, "fds-packet", false)

/* A restore step of a descriptor kind failing (CKPTFS_FAULT=fault): the
 * restore fails naming what, no process is left with the target's pid,
 * and the same snapshot restores afterwards, the target passing its own
 * checks. */
static void restore_fault(const char *name, bool scratch, const char *fault, const char *what)
{
	char p[32], out[64];
	int st;
	pid_t pid = spawn(name, scratch);

	snprintf(p, sizeof(p), "%d", pid);
	ck_assert_msg(run_ckpt(NULL, 0, "dump", "--kill", p, case_path("snap")) == 0, "ckpt dump: %s", case_ckpt_err());
	ck_assert_int_eq(waitpid(pid, &st, 0), pid);
	st = case_ckpt_status(fault, NULL, 0, "restore", case_path("snap"), NULL, NULL);
	ck_assert(WIFEXITED(st) && WEXITSTATUS(st) != 0);
	ck_assert_msg(strstr(case_ckpt_err(), what) && strstr(case_ckpt_err(), "injected fault"), "stderr: %s", case_ckpt_err());
	/* the failed process, killed, came to us (a subreaper): reaped here */
	for (int i = 0; i < 10000 && kill(pid, 0) == 0; i++) {
		while (waitpid(-1, &st, WNOHANG) > 0)
			;
		usleep(1000);
	}
	ck_assert_msg(kill(pid, 0) < 0 && errno == ESRCH, "pid %d is there after a failed restore", pid);
	ck_assert_msg(run_ckpt(out, sizeof(out), "restore", case_path("snap"), NULL, NULL) == 0, "ckpt restore: %s",
		      case_ckpt_err());
	case_verdict(atoi(out));
}

START_TEST(fanotify_restore_fails) { restore_fault("fds-fanotify", true, "424", "fd 60: fanotify inode mark on "); }
END_TEST

/* As cycle(), for a target that forks: a dump that leaves the tree
 * running or stopped is followed by the kill of every process of it,
 * and each (they come to us) is reaped before the restore. */
static void tree_cycle(const char *name, bool scratch, const char *mode)
{
	char p[32], out[64];
	pid_t pid = spawn(name, scratch);

	snprintf(p, sizeof(p), "%d", pid);
	ck_assert_msg((mode ? run_ckpt(NULL, 0, "dump", mode, p, case_path("snap"))
			    : run_ckpt(NULL, 0, "dump", p, case_path("snap"), NULL)) == 0,
		      "ckpt dump %s: %s", mode ? mode : "", case_ckpt_err());
	if (!mode || strcmp(mode, "--kill"))
		case_kill_tree(pid);
	else
		case_reap_tree(pid);
	ck_assert_msg(run_ckpt(out, sizeof(out), "restore", case_path("snap"), NULL, NULL) == 0, "ckpt restore: %s",
		      case_ckpt_err());
	case_verdict(atoi(out));
}

/* one inotify instance, a parent's and its child's (target-fds-inotify-tree) */
START_TEST(inotify_tree_running) { tree_cycle("fds-inotify-tree", true, NULL); } END_TEST
START_TEST(inotify_tree_kill) { tree_cycle("fds-inotify-tree", true, "--kill"); } END_TEST
START_TEST(inotify_tree_stop) { tree_cycle("fds-inotify-tree", true, "--stop"); } END_TEST

/* A restore by root without CAP_SYS_ADMIN (dropped from the bounding
 * set by setpriv) cannot make target-fds-fanotify's groups: refused
 * before anything is built, naming the descriptor and the capability;
 * with it, the same snapshot restores. */
START_TEST(fanotify_restore_needs_cap)
{
	char p[32], out[64];
	int st;

	if (access("/usr/bin/setpriv", X_OK) < 0) {
		printf("fanotify_restore_needs_cap: skipped: no /usr/bin/setpriv\n");
		return;
	}
	pid_t pid = spawn("fds-fanotify", true);
	snprintf(p, sizeof(p), "%d", pid);
	ck_assert_msg(run_ckpt(NULL, 0, "dump", "--kill", p, case_path("snap")) == 0, "ckpt dump: %s", case_ckpt_err());
	ck_assert_int_eq(waitpid(pid, &st, 0), pid);
	st = ckpt_run("/usr/bin/setpriv", case_path("ckpt.err"), NULL, NULL, NULL, 0, "--bounding-set=-sys_admin", case_ckpt_bin,
		      "restore", case_path("snap"));
	ck_assert(WIFEXITED(st) && WEXITSTATUS(st) != 0);
	ck_assert_msg(strstr(case_ckpt_err(), "fd 60: fanotify group (flags 0x1) cannot be made here: Operation not "
					 "permitted (it takes CAP_SYS_ADMIN)"),
		      "stderr: %s", case_ckpt_err());
	ck_assert_msg(kill(pid, 0) < 0 && errno == ESRCH, "pid %d is there after a refused restore", pid);
	ck_assert_msg(run_ckpt(out, sizeof(out), "restore", case_path("snap"), NULL, NULL) == 0, "ckpt restore: %s",
		      case_ckpt_err());
	case_verdict(atoi(out));
}
END_TEST

START_TEST(netlink_restore_fails)
{
	restore_fault("fds-netlink", false, "425", "fd 70: netlink socket (protocol 0): cannot join group 1 again");
}
END_TEST

/* target-fds-netlink's rtnetlink port id (its pid) held by a socket of
 * ours at restore: the restore fails naming the port id (the program may
 * know it: it is not changed), and succeeds once it is given back. */
START_TEST(netlink_port_taken)
{
	char p[32], want[96], out[64];
	int st;
	pid_t pid = spawn("fds-netlink", false);

	snprintf(p, sizeof(p), "%d", pid);
	ck_assert_msg(run_ckpt(NULL, 0, "dump", "--kill", p, case_path("snap")) == 0, "ckpt dump: %s", case_ckpt_err());
	ck_assert_int_eq(waitpid(pid, &st, 0), pid);
	int s = socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE);
	struct sockaddr_nl sa = { .nl_family = AF_NETLINK, .nl_pid = (uint32_t)pid };
	ck_assert_int_eq(bind(s, (void *)&sa, sizeof(sa)), 0);
	ck_assert_int_ne(run_ckpt(NULL, 0, "restore", case_path("snap"), NULL, NULL), 0);
	snprintf(want, sizeof(want), "fd 70: netlink socket (protocol 0): cannot bind port id %d again", pid);
	ck_assert_msg(strstr(case_ckpt_err(), want) && strstr(case_ckpt_err(), "another socket of that protocol holds it"),
		      "stderr: %s", case_ckpt_err());
	for (int i = 0; i < 10000 && kill(pid, 0) == 0; i++) {
		while (waitpid(-1, &st, WNOHANG) > 0)
			;
		usleep(1000);
	}
	close(s);
	ck_assert_msg(run_ckpt(out, sizeof(out), "restore", case_path("snap"), NULL, NULL) == 0, "ckpt restore: %s",
		      case_ckpt_err());
	case_verdict(atoi(out));
}
END_TEST

START_TEST(packet_restore_fails)
{
	restore_fault("fds-packet", false, "426", "fd 80: packet socket on lo: cannot bind it again");
}
END_TEST

/* A tap interface of ours named name (gone when the descriptor is
 * closed). */
static int tap(const char *name)
{
	struct ifreq ifr = { .ifr_flags = IFF_TAP | IFF_NO_PI };
	int fd = open("/dev/net/tun", O_RDWR | O_CLOEXEC);

	ck_assert_msg(fd >= 0, "/dev/net/tun: %s", strerror(errno));
	snprintf(ifr.ifr_name, sizeof(ifr.ifr_name), "%s", name);
	ck_assert_msg(ioctl(fd, TUNSETIFF, &ifr) == 0, "TUNSETIFF %s: %s", name, strerror(errno));
	return fd;
}

/* target-fds-packet with a socket bound to a tap interface of ours,
 * which is gone at restore: the restore is refused naming the
 * descriptor and the interface, and succeeds once an interface of that
 * name is back (another index: the socket is bound to it by name). */
START_TEST(packet_interface_gone)
{
	char p[32], out[64];
	int st;
	int t = tap("ckptfs-pk0");

	setenv("CKPTFS_TARGET_IFACE", "ckptfs-pk0", 1);
	pid_t pid = spawn("fds-packet", false);
	unsetenv("CKPTFS_TARGET_IFACE");
	snprintf(p, sizeof(p), "%d", pid);
	ck_assert_msg(run_ckpt(NULL, 0, "dump", "--kill", p, case_path("snap")) == 0, "ckpt dump: %s", case_ckpt_err());
	ck_assert_int_eq(waitpid(pid, &st, 0), pid);
	close(t);
	ck_assert_int_ne(run_ckpt(NULL, 0, "restore", case_path("snap"), NULL, NULL), 0);
	ck_assert_msg(strstr(case_ckpt_err(), "fd 82: packet socket bound to interface ckptfs-pk0, which is not on this host"),
		      "stderr: %s", case_ckpt_err());
	ck_assert_msg(kill(pid, 0) < 0 && errno == ESRCH, "pid %d is there after a refused restore", pid);
	t = tap("ckptfs-pk0");
	ck_assert_msg(run_ckpt(out, sizeof(out), "restore", case_path("snap"), NULL, NULL) == 0, "ckpt restore: %s",
		      case_ckpt_err());
	case_verdict(atoi(out));
	close(t);
}
END_TEST

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
	case_reap_tree(pid);
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
	case_reap_tree(pid);
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
		{ "fanotify_running", fanotify_running }, { "fanotify_kill", fanotify_kill },
		{ "fanotify_stop", fanotify_stop },     { "fanotify_restore_fails", fanotify_restore_fails },
		{ "fanotify_restore_needs_cap", fanotify_restore_needs_cap },
		{ "netlink_running", netlink_running }, { "netlink_kill", netlink_kill },
		{ "netlink_stop", netlink_stop },       { "netlink_restore_fails", netlink_restore_fails },
		{ "netlink_port_taken", netlink_port_taken },
		{ "packet_running", packet_running },   { "packet_kill", packet_kill },
		{ "packet_stop", packet_stop },         { "packet_restore_fails", packet_restore_fails },
		{ "packet_interface_gone", packet_interface_gone },
		{ "inotify_tree_running", inotify_tree_running }, { "inotify_tree_kill", inotify_tree_kill },
		{ "inotify_tree_stop", inotify_tree_stop },
		{ "log_grown_after_dump", log_grown_after_dump },
		{ "changed_file_needs_the_option", changed_file_needs_the_option },
		{ "locks", locks },
		{ "lock_held_elsewhere_fails_restore", lock_held_elsewhere_fails_restore },
	};

	return case_main("engine-fds-e2e", cases, ARRAY_SIZE(cases), 30, setup, case_end,
			 "ptrace, pidfd_getfd, clone3 set_tid");
}
