/*
 * engine/ called from a long-lived process, as the daemon calls it:
 *  - engine_dump() with ENGINE_AFTER_KILL leaves no ptrace link behind:
 *    the target's real parent reaps it and sees SIGKILL; the caller holds
 *    no traced zombie; when the caller is the parent, its own waitpid()
 *    gets the status;
 *  - engine_restore() with set_creds gives a process of that user's back
 *    exactly its uid, gid and groups and no capability at all, in every
 *    thread, and it still runs to its own PASS verdict; a process of
 *    another user's (root's) is refused before anything is built;
 *  - a snapshot with gpu/info is refused before anything is built where
 *    no CUDA driver can be used.
 *
 * Needs root. The target is tests/targets' target-threads (8 threads),
 * run from a copy that the user of restore_creds can reach (exe-copy.h);
 * restore_creds runs it as that user.
 */
#include <check.h>
#include <dirent.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "common/common.h"
#include "engine/engine.h"
#include "gpu/gpu.h"
#include "store/store.h"
#include "tests/integration/ckpt-run.h"
#include "tests/integration/exe-copy.h"

/* the case's copy of target-threads, in a directory anyone can enter */
static char bin[PATH_MAX];
static pid_t restored; /* killed when a failed check ends the case */

static void kill_restored(void)
{
	if (restored > 0)
		kill(restored, SIGKILL);
}

static void setup(void)
{
	case_begin("engine-api");
	/* the restored target runs as nobody and writes its verdict here */
	ck_assert_int_eq(chmod(case_dir, 0777), 0);
	/* restore_creds maps the target's executable again as nobody, who
	 * may not reach the build directory: every case runs a copy, kept
	 * in the case's directory and removed with it */
	char exe[PATH_MAX + 32];
	snprintf(exe, sizeof(exe), "%s/target-threads", case_targets);
	ck_assert_int_eq(exe_copy(case_dir, (const char *const[]){ exe }, 1, bin), 0);
	char p[PATH_MAX + 16];
	snprintf(p, sizeof(p), "%s/store", case_dir);
	ck_assert_int_eq(mkdir(p, 0700), 0);
}

/* Execs target-threads (never returns). Its cwd is our temp dir, which
 * a restore as another user can enter. */
static _noreturn_ void exec_target(void)
{
	char exe[PATH_MAX];
	if (exe_copy_path(bin, "target-threads", exe) < 0)
		_exit(127);
	int n = open("/dev/null", O_RDWR);
	dup2(n, 0);
	dup2(n, 1);
	syscall(SYS_close_range, 3, ~0u, 0);
	if (chdir(case_dir) < 0)
		_exit(126);
	execl(exe, exe, case_path("ready"), case_path("result"), (char *)NULL);
	_exit(127);
}

/* Becomes nobody (65534, groups 65534 and 4242), then execs the target:
 * the process of a user the daemon restores for. */
static _noreturn_ void exec_target_as_nobody(void)
{
	gid_t groups[] = { 65534, 4242 };
	if (setgroups(2, groups) < 0 || setresgid(65534, 65534, 65534) < 0 || setresuid(65534, 65534, 65534) < 0)
		_exit(125);
	exec_target();
}

static int dump(pid_t pid, enum engine_after after)
{
	struct store *s = NULL;
	struct store_snap *w = NULL;
	struct engine_dump_opts o = { .after = after };
	int r = store_open_dir(case_path("store"), &s);
	ck_assert_int_eq(r, 0);
	r = store_snap_create(s, "1", 0, &w);
	ck_assert_int_eq(r, 0);
	r = engine_dump(pid, w, &o);
	ck_assert_msg(r == 0, "dump: %s: %s", strerror(-r), err_msg());
	store_snap_close(w);
	store_close(s);
	return r;
}

/* Starts the target (as nobody, or as we are), dumps it with --kill
 * into snapshot "1" and reaps it: *st is its wait status. */
static pid_t dumped_target(bool as_nobody, int *st)
{
	pid_t t = fork();
	ck_assert_int_ge(t, 0);
	if (t == 0) {
		if (as_nobody)
			exec_target_as_nobody();
		exec_target();
	}
	case_wait_file(case_path("ready"), 10000);
	usleep(50000);
	dump(t, ENGINE_AFTER_KILL);
	ck_assert_int_eq(waitpid(t, st, 0), t);
	return t;
}

/* No thread of pid is traced by anyone any more, and we have no child
 * of that pid to wait for. */
static void check_no_trace(pid_t pid)
{
	ck_assert_int_eq(waitpid(pid, NULL, __WALL | WNOHANG), -1);
	ck_assert_int_eq(errno, ECHILD);
	char p[64];
	_cleanup_free_ char *st = NULL;
	snprintf(p, sizeof(p), "/proc/%d/status", pid);
	if (read_file_full(p, &st, NULL) >= 0) {
		const char *t = strstr(st, "TracerPid:\t");
		ck_assert_ptr_nonnull(t);
		ck_assert_msg(atoi(t + 11) == 0, "pid %d is still traced by %d", pid, atoi(t + 11));
	}
}

/* The target's parent is a process of its own, which reaps it after the
 * dump: the case of the daemon killing somebody else's child. */
START_TEST(kill_parent_reaps)
{
	int pfd[2], go[2];
	ck_assert_int_eq(pipe2(pfd, O_CLOEXEC), 0);
	ck_assert_int_eq(pipe2(go, O_CLOEXEC), 0);
	pid_t parent = fork();
	ck_assert_int_ge(parent, 0);
	if (parent == 0) {
		pid_t t = fork();
		if (t == 0)
			exec_target();
		if (write(pfd[1], &t, sizeof(t)) != sizeof(t))
			_exit(3);
		char c;
		if (read(go[0], &c, 1) != 1)
			_exit(4);
		/* an engine that left its tracee behind blocks this for ever */
		alarm(10);
		int st;
		if (waitpid(t, &st, 0) != t)
			_exit(5);
		_exit(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL ? 0 : 6);
	}
	close(pfd[1]);
	close(go[0]);
	pid_t t;
	ck_assert_int_eq(read(pfd[0], &t, sizeof(t)), sizeof(t));
	case_wait_file(case_path("ready"), 10000);
	usleep(50000);

	dump(t, ENGINE_AFTER_KILL);
	check_no_trace(t);
	ck_assert_int_eq(write(go[1], "g", 1), 1);
	int st;
	ck_assert_int_eq(waitpid(parent, &st, 0), parent);
	ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "the parent could not reap its killed child (status %#x)",
		      st);
	char p[64];
	snprintf(p, sizeof(p), "/proc/%d", t);
	ck_assert_msg(access(p, F_OK) < 0, "pid %d is still there", t);
	ck_assert_int_eq(waitpid(-1, NULL, __WALL | WNOHANG), -1);
	ck_assert_int_eq(errno, ECHILD);
}
END_TEST

/* We are the target's parent: our own waitpid() gets its status. */
START_TEST(kill_own_child)
{
	int st;
	pid_t t = dumped_target(false, &st);
	ck_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
	check_no_trace(t);
	ck_assert_int_eq(waitpid(-1, NULL, __WALL | WNOHANG), -1);
	ck_assert_int_eq(errno, ECHILD);
}
END_TEST

static void status_line(const char *st, const char *key, char *out, size_t len)
{
	const char *l = strstr(st, key);
	ck_assert_msg(l, "no %s", key);
	l += strlen(key);
	size_t n = strcspn(l, "\n");
	snprintf(out, len, "%.*s", (int)n, l);
}

static void check_creds(pid_t pid, pid_t tid)
{
	char p[96], v[128];
	_cleanup_free_ char *st = NULL;
	snprintf(p, sizeof(p), "/proc/%d/task/%d/status", pid, tid);
	ck_assert_int_ge(read_file_full(p, &st, NULL), 0);
	status_line(st, "\nUid:\t", v, sizeof(v));
	ck_assert_str_eq(v, "65534\t65534\t65534\t65534");
	status_line(st, "\nGid:\t", v, sizeof(v));
	ck_assert_str_eq(v, "65534\t65534\t65534\t65534");
	status_line(st, "\nGroups:\t", v, sizeof(v));
	ck_assert_str_eq(v, "4242 65534 "); /* sorted by the kernel */
	static const char *caps[] = { "\nCapInh:\t", "\nCapPrm:\t", "\nCapEff:\t", "\nCapAmb:\t" };
	for (size_t i = 0; i < ARRAY_SIZE(caps); i++) {
		status_line(st, caps[i], v, sizeof(v));
		ck_assert_msg(!strcmp(v, "0000000000000000"), "thread %d: %s %s", tid, caps[i] + 1, v);
	}
}


/* A process of nobody's (65534, groups 65534 and 4242), restored for
 * nobody by root (the daemon's allow_other restore). */
START_TEST(restore_creds)
{
	int st;
	pid_t t = dumped_target(true, &st);

	struct store *s = NULL;
	struct store_snap *r = NULL;
	gid_t groups[] = { 65534, 4242 };
	struct engine_restore_opts o = {
		.set_creds = true, .uid = 65534, .gid = 65534, .groups = groups, .ngroups = 2,
	};
	pid_t pid = 0;
	ck_assert_int_eq(store_open_dir(case_path("store"), &s), 0);
	ck_assert_int_eq(store_snap_open(s, "1", 0, &r), 0);
	int q = engine_restore(r, &o, &pid);
	ck_assert_msg(q == 0, "restore: %s: %s", strerror(-q), err_msg());
	restored = pid;
	atexit(kill_restored);
	ck_assert_int_eq(pid, t);
	store_snap_close(r);
	store_close(s);

	/* every thread: 8 workers and the main one */
	char p[64];
	snprintf(p, sizeof(p), "/proc/%d/task", pid);
	DIR *d = opendir(p);
	ck_assert_ptr_nonnull(d);
	struct dirent *de;
	int n = 0;
	while ((de = readdir(d)))
		if (de->d_name[0] != '.') {
			check_creds(pid, atoi(de->d_name));
			n++;
		}
	closedir(d);
	ck_assert_int_eq(n, 9);
	_cleanup_free_ char *pstat = NULL;
	snprintf(p, sizeof(p), "/proc/%d/status", pid);
	ck_assert_int_ge(read_file_full(p, &pstat, NULL), 0);
	ck_assert_msg(!strstr(pstat, "NoNewPrivs:\t1"), "no_new_privs was not asked for");

	/* it runs as nobody: its verdict file is nobody's */
	int fd = open(case_path("ready.restored"), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
	ck_assert_int_ge(fd, 0);
	close(fd);
	ck_assert_int_eq(waitpid(pid, &st, 0), pid);
	restored = 0;
	_cleanup_free_ char *res = NULL;
	ck_assert_int_ge(read_file_full(case_path("result"), &res, NULL), 0);
	ck_assert_str_eq(res, "PASS\n");
	struct stat sb;
	ck_assert_int_eq(stat(case_path("result"), &sb), 0);
	ck_assert_int_eq(sb.st_uid, 65534);
	ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}
END_TEST

/* Root's process, restored for nobody: refused before anything is built,
 * naming the process, the thread and the id. */
START_TEST(restore_creds_refuses_other_user)
{
	int st;
	pid_t t = dumped_target(false, &st);

	struct store *s = NULL;
	struct store_snap *r = NULL;
	gid_t groups[] = { 65534 };
	struct engine_restore_opts o = {
		.set_creds = true, .uid = 65534, .gid = 65534, .groups = groups, .ngroups = 1,
	};
	pid_t pid = 0;
	ck_assert_int_eq(store_open_dir(case_path("store"), &s), 0);
	ck_assert_int_eq(store_snap_open(s, "1", 0, &r), 0);
	int q = engine_restore(r, &o, &pid);
	char want[96];
	snprintf(want, sizeof(want), "pid %d thread %d: its real uid 0 is not the restoring user's (65534)", t, t);
	ck_assert_msg(q == -EPERM && strstr(err_msg(), want), "restore: %d: %s", q, err_msg());
	char p[64];
	snprintf(p, sizeof(p), "/proc/%d", t);
	ck_assert_msg(access(p, F_OK) < 0, "pid %d was built", t);
	store_snap_close(r);
	store_close(s);
}
END_TEST

struct copy {
	struct store_snap *from, *to;
};

/* Copies one file of a snapshot into another, sparse as it is. */
static int copy_file(const char *name, const struct store_stat *st, void *ud)
{
	struct copy *c = ud;
	struct store_file *in, *out;
	static char buf[1 << 16];
	if (!strcmp(name, "manifest"))
		return 0;
	ck_assert_int_eq(store_file_open(c->from, name, &in), 0);
	ck_assert_int_eq(store_file_create(c->to, name, &out), 0);
	for (uint64_t off = 0; off < st->size;) {
		ssize_t n = store_file_pread(in, buf, sizeof(buf), off);
		ck_assert_int_gt(n, 0);
		ck_assert_int_eq(store_file_pwrite(out, buf, n, off), 0);
		off += n;
	}
	ck_assert_int_eq(store_file_set_size(out, st->size), 0);
	store_file_close(out);
	store_file_close(in);
	return 0;
}

/* A snapshot that says it holds CUDA state is refused, before anything
 * is built, where no driver can be used (this machine, unless it has
 * one: then the case skips itself). */
START_TEST(restore_refuses_gpu_without_driver)
{
	if (gpu_probe() == 0) {
		printf("restore_refuses_gpu_without_driver: a CUDA driver is here; nothing to check\n");
		return;
	}
	int st;
	pid_t t = dumped_target(false, &st);

	struct store *s = NULL;
	struct copy c = { 0 };
	ck_assert_int_eq(store_open_dir(case_path("store"), &s), 0);
	ck_assert_int_eq(store_snap_open(s, "1", 0, &c.from), 0);
	ck_assert_int_eq(store_snap_create(s, "2", 0, &c.to), 0);
	ck_assert_int_eq(store_snap_foreach_file(c.from, copy_file, &c), 0);
	const char *info = "state_at_dump: running\nstate_in_image: checkpointed\n";
	char gi[64];
	snprintf(gi, sizeof(gi), "%d/gpu/info", t);
	ck_assert_int_eq(store_snap_put(c.to, gi, info, strlen(info)), 0);
	ck_assert_int_eq(store_snap_commit(c.to), 0);
	store_snap_close(c.to);
	store_snap_close(c.from);

	struct store_snap *r = NULL;
	pid_t pid = 0;
	ck_assert_int_eq(store_snap_open(s, "2", 0, &r), 0);
	int q = engine_restore(r, NULL, &pid);
	ck_assert_msg(q < 0 && strstr(err_msg(), "no usable CUDA driver"), "restore: %d: %s", q, err_msg());
	char p[64];
	snprintf(p, sizeof(p), "/proc/%d", t);
	ck_assert_msg(access(p, F_OK) < 0, "pid %d runs", t);
	/* the same image without gpu/info comes back */
	store_snap_close(r);
	ck_assert_int_eq(store_snap_open(s, "1", 0, &r), 0);
	q = engine_restore(r, NULL, &pid);
	ck_assert_msg(q == 0, "restore: %s", err_msg());
	kill(pid, SIGKILL);
	ck_assert_int_eq(waitpid(pid, &st, 0), pid);
	store_snap_close(r);
	store_close(s);
}
END_TEST

int main(void)
{
	const struct case_def cases[] = {
		{ "kill_parent_reaps", kill_parent_reaps },
		{ "kill_own_child", kill_own_child },
		{ "restore_creds", restore_creds },
		{ "restore_creds_refuses_other_user", restore_creds_refuses_other_user },
		{ "restore_refuses_gpu_without_driver", restore_refuses_gpu_without_driver },
	};
	return case_main("engine-api", cases, ARRAY_SIZE(cases), 60, setup, case_end,
			 "ptrace, clone3 with set_tid, PR_SET_MM_MAP");
}
