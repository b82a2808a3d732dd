/*
 * Unix sockets through the real tools (tests/targets/fds-unix.c and
 * fds-unix-tree.c): queued seqpacket and datagram messages, a connection
 * made through a listener, names bound by relative paths or deleted
 * since. Each target is dumped (running, --kill, --stop), restored, and
 * checks its own state. What must be refused (a descriptor in flight, a
 * relative name outside the working directory, a deleted path whose
 * directory is gone) fails the dump naming it, and the original runs on
 * with every message still queued; so does a dump that fails once the
 * queues are read (fault 430). A restore that fails half way (faults 431,
 * 432) leaves no socket file and no moved-aside file behind, and the next
 * restore succeeds.
 *
 * Needs root. The test is a child subreaper, so that restored processes
 * become its children and are reaped here.
 */
#include <check.h>
#include <dirent.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

#include "common/common.h"
#include "tests/integration/ckpt-run.h"

static void setup(void)
{
	case_begin("unix");
}

static pid_t spawn(const char *name, const char *mode)
{
	return case_spawn(NULL, name, -1, (const char *const[]){ case_path("scratch"), mode, NULL }, 10000);
}

/* Kills (when kill) and reaps every process of the snapshot's tree
 * (they are ours: the test is a subreaper); ms at most for each. */
static void tree_gone(bool kill_them, int ms)
{
	FILE *f = fopen(case_path("snap/tree"), "re");
	int pid, st;

	ck_assert_ptr_nonnull(f);
	while (fscanf(f, "%d %*d %*d %*d", &pid) == 1) {
		if (kill_them)
			kill(pid, SIGKILL);
		int i = 0;
		while (waitpid(pid, &st, WNOHANG) == 0 && i++ < ms) {
			struct timespec ts = { 0, 1000000 };
			nanosleep(&ts, NULL);
		}
	}
	fclose(f);
}

/* Dumps pid (mode: NULL, --kill or --stop) into CASE_DIR/snap; the
 * original tree is gone when this returns. */
static void dump(pid_t pid, const char *mode)
{
	char p[32];
	int rc;

	snprintf(p, sizeof(p), "%d", pid);
	rc = mode ? case_ckpt(NULL, NULL, 0, "dump", mode, p, case_path("snap"))
		  : case_ckpt(NULL, NULL, 0, "dump", p, case_path("snap"), NULL);
	ck_assert_msg(rc == 0, "ckpt dump %s: %s", mode ? mode : "", case_ckpt_err());
	tree_gone(!mode || strcmp(mode, "--kill"), 10000);
}

static void restore_ok(void)
{
	char out[64];

	ck_assert_msg(case_ckpt(NULL, out, sizeof(out), "restore", case_path("snap"), NULL, NULL) == 0,
		      "ckpt restore: %s", case_ckpt_err());
	case_verdict(atoi(out));
}

static void cycle(const char *target, const char *mode)
{
	dump(spawn(target, NULL), mode);
	restore_ok();
}

START_TEST(unix_running) { cycle("target-fds-unix", NULL); } END_TEST
START_TEST(unix_kill) { cycle("target-fds-unix", "--kill"); } END_TEST
START_TEST(unix_stop) { cycle("target-fds-unix", "--stop"); } END_TEST
START_TEST(tree_kill) { cycle("target-fds-unix-tree", "--kill"); } END_TEST
START_TEST(tree_running) { cycle("target-fds-unix-tree", NULL); } END_TEST

/* The dump fails naming what; nothing is written and the original,
 * told it was restored, finds everything as it was. */
static void refused(const char *mode, const char *fault, const char *want, const char *want2)
{
	char p[32];
	pid_t pid = spawn("target-fds-unix", mode);

	snprintf(p, sizeof(p), "%d", pid);
	ck_assert_int_ne(case_ckpt(fault, NULL, 0, "dump", p, case_path("snap"), NULL), 0);
	ck_assert_msg(strstr(case_ckpt_err(), want) && (!want2 || strstr(case_ckpt_err(), want2)), "stderr: %s",
		      case_ckpt_err());
	ck_assert_int_ne(access(case_path("snap/manifest"), F_OK), 0);
	case_verdict(pid);
}

START_TEST(rights_refused)
{
	refused("rights", NULL, "fd 63: descriptors queued in a Unix socket: not supported", NULL);
}
END_TEST

START_TEST(relative_elsewhere_refused)
{
	refused("elsewhere", NULL,
		"fd 60: Unix stream socket bound to relative path rel.sock, not found in the working directory /: "
		"not supported",
		NULL);
}
END_TEST

START_TEST(deleted_dir_refused)
{
	refused("gonedir", NULL, "fd 62: Unix dgram socket bound to ", "deleted with its directory: not supported");
}
END_TEST

START_TEST(peer_name_deleted_refused)
{
	refused("peergone", NULL, "fd 63: Unix dgram socket connected to ", "scratch.pg, deleted since: not supported");
}
END_TEST

START_TEST(too_many_messages_refused)
{
	refused("many", NULL, "fd 63: more than 4096 messages or 64 MiB queued in a Unix seqpacket socket: not supported",
		NULL);
}
END_TEST

START_TEST(peek_fault_keeps_messages)
{
	refused(NULL, "430:4", "reading its queued messages (injected)", NULL);
}
END_TEST

START_TEST(peek_fault_keeps_peek_offset)
{
	refused("peekoff", "430:2", "fd 51: reading its queued messages (injected)", NULL);
}
END_TEST

/* Nothing of a failed restore is left in the case directory: no
 * socket file at a deleted path, nothing moved aside. */
static void nothing_left(void)
{
	struct stat st;
	DIR *d = opendir(case_dir);
	struct dirent *de;

	ck_assert_ptr_nonnull(d);
	while ((de = readdir(d)))
		ck_assert_msg(!strstr(de->d_name, "ckpt-aside"), "left behind: %s", de->d_name);
	closedir(d);
	ck_assert_msg(lstat(case_path("scratch.del"), &st) < 0 && lstat(case_path("scratch.ddel"), &st) < 0,
		      "a deleted path was left bound");
}

static void restore_fails(const char *fault, const char *want)
{
	char out[64];

	ck_assert_int_ne(case_ckpt(fault, out, sizeof(out), "restore", case_path("snap"), NULL, NULL), 0);
	ck_assert_msg(strstr(case_ckpt_err(), want), "stderr: %s", case_ckpt_err());
	/* the half-made process is gone, and ours to reap */
	tree_gone(false, 10000);
	nothing_left();
}

START_TEST(refill_fault)
{
	dump(spawn("target-fds-unix", NULL), "--kill");
	restore_fails("431", "cannot refill the messages queued in its socket pair");
	restore_ok();
}
END_TEST

START_TEST(name_faults)
{
	struct stat st;

	dump(spawn("target-fds-unix", NULL), "--kill");
	/* 1: the connection made through a listener at scratch.l, first of
	 * all; the stale socket file there moved aside and put back */
	restore_fails("432", "connection through");
	ck_assert_msg(lstat(case_path("scratch.l"), &st) == 0 && S_ISSOCK(st.st_mode), "scratch.l not put back");
	/* 6: the listener bound to a deleted path (hits 2 and 3: the abstract
	 * connection and the named datagram pair, made early too; 4: fd 54, 5:
	 * fd 55) */
	restore_fails("432:6", "fd 58: Unix listener");
	/* 7: the datagram socket bound to a deleted path, refilled */
	restore_fails("432:7", "fd 59: Unix dgram socket");
	restore_ok();
}
END_TEST

/* A deleted path's directory that is gone by the restore: the restore
 * fails naming the path; made again, the restore passes. */
START_TEST(deleted_dir_gone_at_restore)
{
	dump(spawn("target-fds-unix", "deldir"), "--kill");
	ck_assert_int_eq(rmdir(case_path("scratch.dir")), 0);
	restore_fails(NULL, "fd 62: Unix dgram socket: cannot bind ");
	ck_assert_msg(strstr(case_ckpt_err(), "scratch.dir/s again: its directory is gone"), "stderr: %s",
		      case_ckpt_err());
	ck_assert_int_eq(mkdir(case_path("scratch.dir"), 0700), 0);
	restore_ok();
}
END_TEST

int main(void)
{
	const struct case_def cases[] = {
		{ "unix_running", unix_running },
		{ "unix_kill", unix_kill },
		{ "unix_stop", unix_stop },
		{ "tree_kill", tree_kill },
		{ "tree_running", tree_running },
		{ "rights_refused", rights_refused },
		{ "relative_elsewhere_refused", relative_elsewhere_refused },
		{ "deleted_dir_refused", deleted_dir_refused },
		{ "deleted_dir_gone_at_restore", deleted_dir_gone_at_restore },
		{ "too_many_messages_refused", too_many_messages_refused },
		{ "peer_name_deleted_refused", peer_name_deleted_refused },
		{ "peek_fault_keeps_messages", peek_fault_keeps_messages },
		{ "peek_fault_keeps_peek_offset", peek_fault_keeps_peek_offset },
		{ "refill_fault", refill_fault },
		{ "name_faults", name_faults },
	};

	return case_main("engine-unix", cases, ARRAY_SIZE(cases), 60, setup, case_end,
			 "ptrace, pidfd_getfd, clone3 set_tid");
}
