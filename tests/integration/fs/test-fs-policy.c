/*
 * Periodic checkpoints through a real mount: `every 1s keep 2` written to
 * a target's ctl. Policy snapshots come and the oldest go, a manual one
 * stays, the newest restores and passes the target's own check; the
 * policy survives an unmount and runs again on the same store; bad lines
 * are refused with their reason in status; `every off` ends it; a target
 * that exits stops it with the reason, and so does a process restored
 * on the same pid (another start time); `ckpt checkpoint --every` and
 * `ckpt status` drive and show it. Every wait is for a condition, with a
 * generous bound; no case asserts a timing.
 */
#include <check.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/integration/fs/fs-harness.h"

#ifndef HAVE_ENGINE
#define HAVE_ENGINE 0
#endif

#define WAIT_MS 30000

static char *status_of(pid_t pid)
{
	return sh_out("cat \"$MNT/%d/status\" 2>/dev/null", pid);
}

/* The number after "key: " in pid's status; -1 when absent. */
static long status_num(pid_t pid, const char *key)
{
	char *s = status_of(pid), want[64], *p;
	long v = -1;

	snprintf(want, sizeof(want), "\n%s: ", key);
	p = strstr(s, want);
	if (p)
		v = strtol(p + strlen(want), NULL, 10);
	free(s);
	return v;
}

/* Waits until pid's policy has taken at least n checkpoints. */
static void wait_runs(pid_t pid, long n)
{
	for (unsigned i = 0; i < WAIT_MS / 100; i++) {
		if (status_num(pid, "runs") >= n)
			return;
		usleep(100 * 1000);
	}
	char *s = status_of(pid);
	char *log = sh_out("tail -20 '%s/daemon.log'", H.base);
	ck_abort_msg("fewer than %ld periodic checkpoints:\n%s\ndaemon log:\n%s", n, s, log);
}

/* Waits until pid's status has the line (whole). */
static void wait_line(pid_t pid, const char *line)
{
	for (unsigned i = 0; i < WAIT_MS / 100; i++) {
		if (sh("grep -qxF '%s' \"$MNT/%d/status\"", line, pid) == 0)
			return;
		usleep(100 * 1000);
	}
	char *s = status_of(pid);
	ck_abort_msg("status never said '%s':\n%s", line, s);
}

/* The snapshot numbers of pid, as "1 5 6 ". */
static char *snapshots(pid_t pid)
{
	return sh_out("ls \"$MNT/%d\" | grep '^[0-9]*$' | sort -n | tr '\\n' ' '", pid);
}

static void ctl_ok(pid_t pid, const char *line)
{
	char *s = sh_out("{ echo '%s' > \"$MNT/%d/ctl\"; } 2>&1; echo rc=$?", line, pid);
	ck_assert_msg(strstr(s, "rc=0"), "'%s': %s", line, s);
	free(s);
}

/* ---- without the engine ---------------------------------------------------------- */

START_TEST(test_bad_lines)
{
	static const struct {
		const char *line, *reason;
	} bad[] = {
		{ "every", "every takes a duration" },
		{ "every 0s", "out of range" },
		{ "every 10", "no unit" },
		{ "every 10x", "no unit" },
		{ "every s", "not a duration" },
		{ "every -5s", "not a duration" },
		{ "every 721h", "out of range" },
		{ "every 5s keep", "keep takes a number" },
		{ "every 5s keep 0", "not a number from 1 to 1000" },
		{ "every 5s keep two", "not a number from 1 to 1000" },
		{ "every 5s keep 1001", "not a number from 1 to 1000" },
		{ "every 5s kill", "keeps the process running" },
		{ "every 10m keep 3 stop", "keeps the process running" },
		{ "every 5s often", "unknown word 'often'" },
		{ "every off now", "takes nothing more" },
	};
	char dir[PATH_MAX];
	pid_t pid = target_start(dir);

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char *s = sh_out("{ echo '%s' > \"$MNT/%d/ctl\"; } 2>&1; echo rc=$?", bad[i].line, pid);
		/* The write fails (dash says "I/O error" whatever the errno);
		 * status names EINVAL and the reason. */
		ck_assert_msg(strstr(s, "rc=1"), "'%s': %s", bad[i].line, s);
		free(s);
		s = status_of(pid);
		ck_assert_msg(strstr(s, "last_error: Invalid argument: ") && strstr(s, bad[i].reason),
			      "'%s': status:\n%s", bad[i].line, s);
		/* Nothing was set. */
		ck_assert_msg(strstr(s, "\npolicy: none\n") && strstr(s, "\nstate: idle\n"), "'%s': status:\n%s",
			      bad[i].line, s);
		free(s);
	}
	/* A good one is shown as set; off takes it away. */
	ctl_ok(pid, "every 2h keep 4");
	wait_line(pid, "policy: every 2h keep 4");
	ck_assert_int_eq(sh("grep -q '^next: 20[0-9-]*T[0-9:]*Z (in [0-9]* s)$' \"$MNT/%d/status\"", pid), 0);
	ck_assert_int_eq(sh("grep -qx 'last: -' \"$MNT/%d/status\"", pid), 0);
	ctl_ok(pid, "every 90m");
	wait_line(pid, "policy: every 90m keep 3");
	ctl_ok(pid, "every off");
	wait_line(pid, "policy: none");
	wait_line(pid, "next: -");
	/* Off twice is no error. */
	ctl_ok(pid, "every off");
}
END_TEST

/* ---- with the engine ---------------------------------------------------------------- */

START_TEST(test_runs_and_prunes)
{
	char dir[PATH_MAX], want[64];
	pid_t pid = target_start(dir);
	char *s;
	long last;

	/* A checkpoint written to ctl: the policy never deletes it. */
	ctl_ok(pid, "checkpoint");
	ctl_ok(pid, "every 1s keep 2");
	s = status_of(pid);
	ck_assert_msg(strstr(s, "\npolicy: every 1s keep 2\n") && strstr(s, "\nnext: 20"), "%s", s);
	free(s);
	wait_runs(pid, 4);
	/* Off returns once a periodic checkpoint under way has ended: what
	 * is left afterwards stays. */
	ctl_ok(pid, "every off");
	s = status_of(pid);
	ck_assert_msg(strstr(s, "\npolicy: none\n") && strstr(s, "\nnext: -\n"), "%s", s);
	free(s);
	last = status_num(pid, "last_snapshot");
	ck_assert_int_ge(last, 5);
	snprintf(want, sizeof(want), "1 %ld %ld ", last - 1, last);
	s = snapshots(pid);
	ck_assert_msg(!strcmp(s, want), "snapshots '%s', want '%s'", s, want);
	free(s);

	/* The newest comes back and passes the target's own check. */
	restore_copy_verdict(pid, last, dir);
	/* Off stopped it: the checkpoints above, the copy and the restore
	 * took well over a second, and nothing was added meanwhile. */
	s = snapshots(pid);
	ck_assert_msg(!strcmp(s, want), "snapshots after off '%s', want '%s'", s, want);
	free(s);
}
END_TEST

START_TEST(test_survives_remount)
{
	char dir[PATH_MAX], want[64];
	pid_t pid = target_start(dir);
	long runs, last;
	char *s;

	ctl_ok(pid, "every 1s keep 2");
	wait_runs(pid, 2);
	ck_assert_int_eq(harness_umount(), 0);
	harness_remount();
	/* Read back from the store, with its count and its snapshots. */
	s = status_of(pid);
	ck_assert_msg(strstr(s, "\npolicy: every 1s keep 2\n") && strstr(s, "\nlast: ok "), "%s", s);
	free(s);
	runs = status_num(pid, "runs");
	ck_assert_int_ge(runs, 2);
	/* It runs again, and prunes what the first daemon took. */
	wait_runs(pid, runs + 3);
	ctl_ok(pid, "every off");
	last = status_num(pid, "last_snapshot");
	snprintf(want, sizeof(want), "%ld %ld ", last - 1, last);
	s = snapshots(pid);
	ck_assert_msg(!strcmp(s, want), "snapshots '%s', want '%s'", s, want);
	free(s);
	s = target_verdict(dir);
	ck_assert_str_eq(s, "ok\n");
	free(s);
}
END_TEST

START_TEST(test_target_exits)
{
	char dir[PATH_MAX], line[128];
	pid_t pid = target_start(dir);
	char *s;

	ctl_ok(pid, "every 1s keep 2");
	wait_runs(pid, 1);
	target_kill(pid);
	snprintf(line, sizeof(line), "policy: stopped: process %d exited (was every 1s keep 2)", pid);
	wait_line(pid, line);
	wait_line(pid, "next: -");
	/* Its snapshots stay, and so does the reason, after a remount too. */
	ck_assert_int_eq(harness_umount(), 0);
	harness_remount();
	wait_line(pid, line);
	/* Whoever set it removes it. */
	ctl_ok(pid, "every off");
	wait_line(pid, "policy: none");
	s = snapshots(pid);
	ck_assert_msg(*s, "no snapshots left");
	free(s);
}
END_TEST

/* The pid is the same, the process is not: `checkpoint kill` and a
 * restore bring back the pid with a new start time. The daemon that
 * mounts the store next stops the policy instead of checkpointing it. */
START_TEST(test_same_pid_another_process)
{
	char dir[PATH_MAX], line[160];
	pid_t pid = target_start(dir);
	char *s;

	ctl_ok(pid, "every 1h keep 2");
	ctl_ok(pid, "checkpoint kill");
	ck_assert_int_eq(waitpid(pid, NULL, 0), pid);
	ck_assert_int_eq(sh("cp -r \"$MNT/%d/1\" \"$MNT/restore/back\"", pid), 0);
	restore_assert_running("back", pid, 1, 20000);
	ck_assert_int_eq(harness_umount(), 0);
	harness_remount();
	snprintf(line, sizeof(line),
		 "policy: stopped: process %d exited; pid %d is another process now (was every 1h keep 2)", pid, pid);
	wait_line(pid, line);
	s = snapshots(pid);
	ck_assert_str_eq(s, "1 ");
	free(s);
	s = target_verdict(dir);
	ck_assert_str_eq(s, "ok\n");
	free(s);
}
END_TEST

START_TEST(test_ckpt_tool)
{
	char dir[PATH_MAX];
	pid_t pid = target_start(dir);
	char *s;

	s = sh_out("\"$CKPT\" checkpoint --mount \"$MNT\" --every 1s --keep 3 %d", pid);
	ck_assert_msg(strstr(s, "policy: every 1s keep 3\n") && strstr(s, "next: "), "%s", s);
	free(s);
	wait_runs(pid, 1);
	s = sh_out("\"$CKPT\" status --mount \"$MNT\"");
	ck_assert_msg(strstr(s, "policy: every 1s keep 3\n") && strstr(s, "last: ok "), "%s", s);
	free(s);
	/* Bad input: the daemon's reason, or the tool's own. */
	s = sh_out("\"$CKPT\" checkpoint --mount \"$MNT\" --every 5x %d 2>&1; echo rc=$?", pid);
	ck_assert_msg(strstr(s, "no unit") && strstr(s, "rc=1"), "%s", s);
	free(s);
	s = sh_out("\"$CKPT\" checkpoint --mount \"$MNT\" --keep 2 %d 2>&1; echo rc=$?", pid);
	ck_assert_msg(strstr(s, "--keep goes with --every") && strstr(s, "rc=2"), "%s", s);
	free(s);
	s = sh_out("\"$CKPT\" checkpoint --mount \"$MNT\" --kill --every 1s %d 2>&1; echo rc=$?", pid);
	ck_assert_msg(strstr(s, "keeps the process running") && strstr(s, "rc=2"), "%s", s);
	free(s);
	/* The policy above is untouched by them. */
	wait_line(pid, "policy: every 1s keep 3");
	s = sh_out("\"$CKPT\" checkpoint --mount \"$MNT\" --every off %d", pid);
	ck_assert_msg(strstr(s, "policy: none\n"), "%s", s);
	free(s);
	s = sh_out("\"$CKPT\" status --mount \"$MNT\" %d", pid);
	ck_assert_msg(!strstr(s, "policy:"), "%s", s);
	free(s);
	s = target_verdict(dir);
	ck_assert_str_eq(s, "ok\n");
	free(s);
}
END_TEST

int main(void)
{
	Suite *s;

	harness_require();
	harness_begin();
	s = suite_create("fs-policy");
	harness_add(s, "bad_lines", test_bad_lines, 60);
	if (HAVE_ENGINE) {
		harness_add(s, "runs_and_prunes", test_runs_and_prunes, 120);
		harness_add(s, "survives_remount", test_survives_remount, 120);
		harness_add(s, "target_exits", test_target_exits, 120);
		harness_add(s, "same_pid_another_process", test_same_pid_another_process, 120);
		harness_add(s, "ckpt_tool", test_ckpt_tool, 120);
	} else {
		printf("note: the engine is not built: the cases that checkpoint are skipped\n");
		(void)test_runs_and_prunes, (void)test_survives_remount, (void)test_target_exits, (void)test_ckpt_tool;
		(void)test_same_pid_another_process;
	}
	return harness_run(s);
}
