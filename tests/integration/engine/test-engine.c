/*
 * engine/ against real processes: each target of tests/targets is started,
 * dumped with `ckpt dump` (running, --kill, --stop), restored with
 * `ckpt restore` once its PID is free, told it was restored, and its own
 * verdict is checked. Also: two dumps restored in reverse order, every
 * dump fault leaving the process running and intact, every restore fault
 * leaving nothing running, and a PID in use.
 *
 * Needs root (ptrace of processes that are not our children, clone3 with
 * set_tid, PR_SET_MM_MAP). The test process is a child subreaper, so
 * restored processes become its children and are reaped here.
 *
 * `test-engine` runs the main suite; `test-engine python` and
 * `test-engine pipe` run one case each, which skip (77) when python3 or
 * the descriptor support is missing; `test-engine die` kills the dumper
 * at every point of a dump (faults 220-226) and checks the target;
 * `test-engine pid` restores onto a PID still held: by a live process,
 * by a zombie reaped while the restore waits, by one never reaped in time;
 * `test-engine creds` restores threads with credentials and seccomp
 * filters of their own, and refuses a user's restore of root's process;
 * `test-engine attrs` restores oom_score_adj, prctl settings, membarrier
 * registrations, per-thread timer slack and parent-death signal, and
 * per-area madvise flags and locks.
 */
#include <check.h>
#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <linux/netlink.h>
#include <netinet/in.h>
#include <pwd.h>
#include <sched.h>
#include <grp.h>
#include <stdarg.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/msg.h>
#include <sys/sem.h>
#include <sys/shm.h>
#include <sys/socket.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "common/common.h"
#include "tests/integration/ckpt-run.h"


static void setup(void)
{
	case_begin("engine");
	char store[PATH_MAX + 16];
	snprintf(store, sizeof(store), "%s/store", case_dir);
	ck_assert_int_eq(mkdir(store, 0700), 0);
}

/* The pid of a target-sysv or target-ipc of this test: the SysV objects
 * it made (keys 0x5e, 0x5f, 0x5d and its pid) go with the test, even one
 * that failed before the target removed them. */
static pid_t sysv_target;
static int test_semid = -1; /* a set of the test's own */

static void teardown(void)
{
	case_end();
	if (test_semid >= 0)
		semctl(test_semid, 0, IPC_RMID);
	if (sysv_target) {
		key_t low = sysv_target & 0xffffff;
		int id;
		if ((id = shmget(0x5e000000 | low, 0, 0)) >= 0)
			shmctl(id, IPC_RMID, NULL);
		if ((id = semget(0x5f000000 | low, 0, 0)) >= 0)
			semctl(id, 0, IPC_RMID);
		if ((id = msgget(0x5d000000 | low, 0)) >= 0)
			msgctl(id, IPC_RMID, NULL);
		char name[64];
		snprintf(name, sizeof(name), "/dev/shm/ckptfs-target-%d", sysv_target);
		unlink(name);
	}
}

static bool file_exists(const char *p)
{
	return access(p, F_OK) == 0;
}

/* Starts a target (case_spawn); generous for a loaded 2-core machine. */
static pid_t spawn_argv(const char *interp, const char *prog, const char *const *extra)
{
	return case_spawn(interp, prog, -1, extra, 30000);
}

/* the same with up to two arguments (extra2 only after extra) */
static pid_t spawn_args(const char *interp, const char *prog, const char *extra, const char *extra2)
{
	const char *x[] = { extra, extra ? extra2 : NULL, NULL };
	return spawn_argv(interp, prog, x);
}

static pid_t spawn(const char *interp, const char *prog, const char *extra)
{
	return spawn_args(interp, prog, extra, NULL);
}

static void dump_with(const char *fault, pid_t pid, const char *mode, const char *snap)
{
	char p[32];
	snprintf(p, sizeof(p), "%d", pid);
	int rc = mode ? case_ckpt(fault, NULL, 0, "dump", mode, p, case_path(snap))
		      : case_ckpt(fault, NULL, 0, "dump", p, case_path(snap), NULL);
	ck_assert_msg(rc == 0, "ckpt dump %s failed: %s", mode ? mode : "", case_ckpt_err());
}

static void dump(pid_t pid, const char *mode, const char *snap)
{
	dump_with(NULL, pid, mode, snap);
}

/* Gets rid of the original so that its PID is free. */
static void kill_original(pid_t pid, const char *mode)
{
	int st;
	if (!mode || strcmp(mode, "--kill"))
		kill(pid, SIGKILL);
	ck_assert_int_eq(waitpid(pid, &st, 0), pid);
	ck_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
}

static pid_t restore(const char *snap)
{
	char out[64];
	int rc = case_ckpt(NULL, out, sizeof(out), "restore", case_path(snap), NULL, NULL);
	ck_assert_msg(rc == 0, "ckpt restore failed: %s", case_ckpt_err());
	return atoi(out);
}

/* Tells the restored process it was restored; checks its verdict. */
static void verdict(pid_t pid)
{
	int st = verdict_wait(pid, case_path("ready.restored"), case_path("result"), 40000, "restored target");
	ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

/* Waits (10 s at most: a loaded 2-core machine) until pid is in state
 * ('T' a group stop, 'Z' a zombie) as /proc/PID/stat shows it. */
static void assert_state(pid_t pid, char state, const char *why)
{
	char p[64], want[8], *st = NULL;
	snprintf(p, sizeof(p), "/proc/%d/stat", pid);
	snprintf(want, sizeof(want), ") %c ", state);
	for (int i = 0; i < 10000; i++) {
		free(st);
		st = NULL;
		read_file_full(p, &st, NULL);
		if (st && strstr(st, want))
			break;
		usleep(1000);
	}
	ck_assert_msg(st && strstr(st, want), "%s: pid %d not in state %c: %s", why, pid, state, st);
	free(st);
}

static void assert_stopped(pid_t pid, const char *why)
{
	assert_state(pid, 'T', why);
}

static void cycle(const char *prog, const char *extra, const char *mode)
{
	pid_t pid = spawn(NULL, prog, extra);
	dump(pid, mode, "store/s1");
	if (mode && !strcmp(mode, "--stop"))
		assert_stopped(pid, "--stop");
	kill_original(pid, mode);
	verdict(restore("store/s1"));
}

#define CYCLE_TESTS(name, prog, extra)                                     \
	START_TEST(name##_running) { cycle(prog, extra, NULL); } END_TEST   \
	START_TEST(name##_kill) { cycle(prog, extra, "--kill"); } END_TEST  \
	START_TEST(name##_stop) { cycle(prog, extra, "--stop"); } END_TEST

CYCLE_TESTS(mem, "target-mem", case_path("mapped-file"))
CYCLE_TESTS(threads, "target-threads", NULL)
CYCLE_TESTS(sleep, "target-sleep", NULL)
CYCLE_TESTS(signals, "target-signals", NULL)
static void assert_untouched_n(pid_t pid, int nthreads);
/* Dumped running, its calls asked in batches, each ended by a SIGTRAP
 * the runner sends its own thread: the original goes on with its signal
 * state as it was (target-signals checks it itself: no SIGTRAP reached
 * its handler, every action, the mask, the pending signals). */
START_TEST(signals_original)
{
	pid_t pid = spawn(NULL, "target-signals", NULL);
	dump(pid, NULL, "store/s1");
	assert_untouched_n(pid, 1);
	verdict(pid);
}
END_TEST
/* The batch runner cannot be written into the process (fault 427): the
 * calls go one at a time, the dump succeeds, the original is let go and
 * the snapshot restores with its signal state. */
START_TEST(signals_no_runner)
{
	pid_t pid = spawn(NULL, "target-signals", NULL);
	char p[32];
	snprintf(p, sizeof(p), "%d", pid);
	ck_assert_msg(case_ckpt("427", NULL, 0, "dump", p, case_path("store/s1"), NULL) == 0, "%s", case_ckpt_err());
	assert_untouched_n(pid, 1);
	kill_original(pid, NULL);
	verdict(restore("store/s1"));
}
END_TEST
CYCLE_TESTS(regs, "target-regs", NULL)
/* oom_score_adj, subreaper, THP disable, membarrier registrations; per
 * thread timer slack and parent-death signal; and in a child (a tree),
 * supplementary groups, slack, oom_score_adj (target-attrs checks them) */
static void wait_gone(pid_t pid);

static void attrs_cycle(const char *mode)
{
	pid_t pid = spawn(NULL, "target-attrs", NULL);
	char p[64], *kids = NULL;
	snprintf(p, sizeof(p), "/proc/%d/task/%d/children", pid, pid);
	ck_assert_int_eq(read_file_full(p, &kids, NULL), 0);
	pid_t kid = atoi(kids);
	free(kids);
	ck_assert_int_gt(kid, 0);
	dump(pid, mode, "store/s1");
	if (mode && !strcmp(mode, "--stop"))
		assert_stopped(kid, "--stop");
	if (!mode || strcmp(mode, "--kill"))
		kill(pid, SIGKILL);
	kill(kid, SIGKILL);
	kill_original(pid, "--kill");
	wait_gone(kid);
	verdict(restore("store/s1"));
}

START_TEST(attrs_running) { attrs_cycle(NULL); } END_TEST
START_TEST(attrs_kill) { attrs_cycle("--kill"); } END_TEST
START_TEST(attrs_stop) { attrs_cycle("--stop"); } END_TEST
/* madvise flags and mlock per area (target-advice checks its VmFlags) */
CYCLE_TESTS(advice, "target-advice", NULL)
/* each thread's policy, nice, clamps, affinity, TSC and machine-check
 * modes, speculation control; KSM for the process (target-sched) */
CYCLE_TESTS(sched, "target-sched", NULL)

static void restore_fault_of(const char *prog, const char *fault);
/* A child that sets up with setup() what a restore cannot give back:
 * the dump is refused naming it (want), nothing stored, the child left
 * running as it was. */
static void refuse_child(int (*setup)(void), const char *want)
{
	pid_t pid = case_fork_quiet(-1, NULL);
	if (pid == 0) {
		const char *c = setup() == 0 ? "y" : "n";
		int fd = open(case_path("ready.tmp"), O_WRONLY | O_CREAT | O_TRUNC, 0600);
		if (fd < 0 || write(fd, c, 1) != 1 || close(fd) < 0 || rename(case_path("ready.tmp"), case_path("ready")) < 0)
			_exit(3);
		for (;;)
			pause();
	}
	case_wait_file(case_path("ready"), 30000);
	_cleanup_free_ char *c = NULL;
	ck_assert_int_eq(read_file_full(case_path("ready"), &c, NULL), 0);
	if (c[0] != 'y') {
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
		printf("not checked: this machine does not allow the setting for '%s'\n", want);
		return;
	}
	char p[32];
	snprintf(p, sizeof(p), "%d", pid);
	ck_assert_int_eq(case_ckpt(NULL, NULL, 0, "dump", p, case_path("store/bad"), NULL), 1);
	ck_assert_msg(strstr(case_ckpt_err(), want), "stderr: %s", case_ckpt_err());
	ck_assert(!file_exists(case_path("store/bad")));
	assert_untouched_n(pid, 1);
	kill_original(pid, NULL);
}

static int set_deadline(void)
{
	struct {
		uint32_t size, policy;
		uint64_t flags;
		int32_t nice;
		uint32_t priority;
		uint64_t runtime, deadline, period;
	} a = { sizeof(a), 6 /* SCHED_DEADLINE */, 0, 0, 0, 1000000, 100000000, 100000000 };
	return (int)syscall(SYS_sched_setattr, 0, &a, 0);
}

static int set_io_flusher(void)
{
	return prctl(57 /* PR_SET_IO_FLUSHER */, 1, 0, 0, 0);
}

static int seal_area(void)
{
	void *m = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	return m == MAP_FAILED ? -1 : (int)syscall(462 /* mseal */, m, 8192, 0);
}

START_TEST(refuse_deadline) { refuse_child(set_deadline, "SCHED_DEADLINE: not supported"); } END_TEST
START_TEST(refuse_io_flusher) { refuse_child(set_io_flusher, "I/O flusher (PR_SET_IO_FLUSHER): not supported"); } END_TEST
START_TEST(refuse_sealed) { refuse_child(seal_area, "is sealed (mseal): not supported"); } END_TEST
START_TEST(fault_restore_sched) { restore_fault_of("target-sched", "252"); } END_TEST

/* Credentials and seccomp filters, per thread (the targets check their
 * own after restore; target-creds writes as nobody into our dir). */
static void cycle_open(const char *prog, const char *mode)
{
	ck_assert_int_eq(chmod(case_dir, 0777), 0);
	cycle(prog, NULL, mode);
}

START_TEST(seccomp_running) { cycle_open("target-seccomp", NULL); } END_TEST
START_TEST(seccomp_kill) { cycle_open("target-seccomp", "--kill"); } END_TEST
START_TEST(creds_running) { cycle_open("target-creds", NULL); } END_TEST
START_TEST(creds_stop) { cycle_open("target-creds", "--stop"); } END_TEST

/* A user's restore (nobody, with CAP_CHECKPOINT_RESTORE as the one power
 * it has) of root's process is refused before anything is built, naming
 * the thread and the id; the same snapshot restores as root. */
START_TEST(user_restore_refuses_root_creds)
{
	if (access("/usr/bin/setpriv", X_OK) < 0) {
		printf("user_restore_refuses_root_creds: no setpriv; nothing to check\n");
		return;
	}
	char cmd[PATH_MAX * 3];
	/* a checkout closed to other users (docs/TESTING.md) */
	snprintf(cmd, sizeof(cmd), "setpriv --reuid=65534 --regid=65534 --clear-groups test -x '%s'", case_ckpt_bin);
	if (system(cmd) != 0) {
		printf("user_restore_refuses_root_creds: nobody cannot run %s; nothing to check\n", case_ckpt_bin);
		return;
	}
	ck_assert_int_eq(chmod(case_dir, 0777), 0);
	pid_t pid = spawn(NULL, "target-threads", NULL);
	dump(pid, NULL, "store/s1");
	kill_original(pid, NULL);
	/* the user may read the snapshot: only its credentials stop it */
	snprintf(cmd, sizeof(cmd),
		 "chmod -R a+rX '%s' && setpriv --reuid=65534 --regid=65534 --clear-groups "
		 "--inh-caps=+checkpoint_restore --ambient-caps=+checkpoint_restore '%s' restore '%s' "
		 ">/dev/null 2>'%s'",
		 case_path("store"), case_ckpt_bin, case_path("store/s1"), case_path("ckpt.err"));
	int st = system(cmd);
	ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) != 0, "nobody restored root's process");
	const char *e = case_ckpt_err();
	char want[64];
	snprintf(want, sizeof(want), "pid %d thread %d: its real uid 0", pid, pid);
	ck_assert_msg(strstr(e, want), "want '%s' in: %s", want, e);
	char p[64];
	snprintf(p, sizeof(p), "/proc/%d", pid);
	ck_assert_msg(access(p, F_OK) < 0, "pid %d was built", pid);
	verdict(restore("store/s1"));
}
END_TEST

START_TEST(bigmem_running)
{
	cycle("target-bigmem", "16", NULL);
}
END_TEST

/* Posix timers: IDs (with a gap), kinds, values and times left. */
START_TEST(posix_timers)
{
	cycle("target-ptimers", NULL, NULL);
}
END_TEST

/* The copy's memory is not reserved before the freeze (fault 206: a
 * machine short of memory): it is mapped as the copy goes, and the
 * snapshot is the same. */
START_TEST(bigmem_no_arena)
{
	pid_t pid = spawn(NULL, "target-bigmem", "16");
	dump_with("206", pid, NULL, "store/s1");
	kill_original(pid, NULL);
	verdict(restore("store/s1"));
}
END_TEST

/* The program computing with 1 GiB of mixed memory, dumped while
 * it runs and with --kill (the two write paths: copy in RAM, streamed). */
START_TEST(bigmem_1g_running)
{
	cycle("target-bigmem", "1024", NULL);
}
END_TEST

START_TEST(bigmem_1g_kill)
{
	cycle("target-bigmem", "1024", "--kill");
}
END_TEST

/* Two snapshots of one process; the later restored first, then the
 * earlier, each with the right state. */
START_TEST(dump_twice_restore_first_last)
{
	pid_t pid = spawn(NULL, "target-threads", NULL);
	dump(pid, NULL, "store/s1");
	usleep(100000);
	dump(pid, NULL, "store/s2");
	kill_original(pid, NULL);
	verdict(restore("store/s2"));
	unlink(case_path("result"));
	unlink(case_path("ready.restored"));
	verdict(restore("store/s1"));
}
END_TEST

/* The same with the memory target, whose shared file mapping was written
 * by the first restored process before the second restore. */
START_TEST(dump_twice_mem)
{
	pid_t pid = spawn(NULL, "target-mem", case_path("mapped-file"));
	dump(pid, NULL, "store/s1");
	dump(pid, "--kill", "store/s2");
	kill_original(pid, "--kill");
	verdict(restore("store/s2"));
	unlink(case_path("result"));
	unlink(case_path("ready.restored"));
	verdict(restore("store/s1"));
}
END_TEST

/* A process stopped (SIGSTOP) when dumped stays stopped, and is restored
 * stopped; SIGCONT lets it go on. */
START_TEST(stopped_stays_stopped)
{
	pid_t pid = spawn(NULL, "target-threads", NULL);
	kill(pid, SIGSTOP);
	assert_stopped(pid, "SIGSTOP");
	dump(pid, NULL, "store/s1");
	assert_stopped(pid, "after the dump");
	kill_original(pid, NULL);
	pid_t r = restore("store/s1");
	ck_assert_int_eq(r, pid);
	assert_stopped(r, "after the restore");
	kill(r, SIGCONT);
	verdict(r);
}
END_TEST

/* A restored process dumps and restores again, twice. */
START_TEST(redump_restored)
{
	pid_t pid = spawn(NULL, "target-threads", NULL);
	dump(pid, NULL, "store/s1");
	kill_original(pid, NULL);
	ck_assert_int_eq(restore("store/s1"), pid);
	usleep(50000);
	dump(pid, "--kill", "store/s2");
	kill_original(pid, "--kill");
	ck_assert_int_eq(restore("store/s2"), pid);
	usleep(50000);
	dump(pid, NULL, "store/s3");
	kill_original(pid, NULL);
	verdict(restore("store/s3"));
}
END_TEST

/* Calls fn with each thread's TID and /proc status text, until fn returns
 * true; a thread gone meanwhile is skipped. Returns the threads seen. */
static int each_task(pid_t pid, bool (*fn)(const char *tid, const char *status, void *ud), void *ud)
{
	char p[64];
	snprintf(p, sizeof(p), "/proc/%d/task", pid);
	DIR *d = opendir(p);
	ck_assert_ptr_nonnull(d);
	struct dirent *de;
	int n = 0;
	while ((de = readdir(d))) {
		char sp[384];
		_cleanup_free_ char *st = NULL;
		if (de->d_name[0] == '.')
			continue;
		snprintf(sp, sizeof(sp), "/proc/%d/task/%s/status", pid, de->d_name);
		if (read_file_full(sp, &st, NULL) < 0)
			continue;
		n++;
		if (fn(de->d_name, st, ud))
			break;
	}
	closedir(d);
	return n;
}

static bool traced_or_stopped(const char *status)
{
	return !strstr(status, "TracerPid:\t0\n") || strstr(status, "State:\tt") || strstr(status, "State:\tT");
}

static bool assert_free(const char *tid, const char *status, void *ud)
{
	ck_assert_msg(strstr(status, "TracerPid:\t0\n"), "thread %s still traced", tid);
	ck_assert_msg(!strstr(status, "State:\tt") && !strstr(status, "State:\tT"), "thread %s left stopped", tid);
	return false;
}

/* No thread of pid is traced or stopped, and it has nthreads. */
static void assert_untouched_n(pid_t pid, int nthreads)
{
	ck_assert_int_eq(each_task(pid, assert_free, NULL), nthreads);
}

static void assert_untouched(pid_t pid)
{
	assert_untouched_n(pid, 9); /* the threads target: main + 8 */
}

static void dump_fault_mode(const char *fault, const char *mode)
{
	pid_t pid = spawn(NULL, "target-threads", NULL);
	char p[32];
	snprintf(p, sizeof(p), "%d", pid);
	int rc = mode ? case_ckpt(fault, NULL, 0, "dump", mode, p, case_path("store/bad"))
		      : case_ckpt(fault, NULL, 0, "dump", p, case_path("store/bad"), NULL);
	ck_assert_msg(rc == 1, "dump with fault %s: exit %d", fault, rc);
	ck_assert_msg(strstr(case_ckpt_err(), "injected fault"), "no reason given: %s", case_ckpt_err());
	ck_assert(!file_exists(case_path("store/bad")));
	assert_untouched(pid);
	/* it still runs normally, and still dumps and restores correctly */
	dump(pid, NULL, "store/s1");
	kill_original(pid, NULL);
	verdict(restore("store/s1"));
}

static void dump_fault(const char *fault)
{
	dump_fault_mode(fault, NULL);
}

START_TEST(fault_seize) { dump_fault("200:3"); } END_TEST
/* --kill and --stop copy no memory into RAM: it is read while writing */
START_TEST(fault_memory_kill) { dump_fault_mode("202:5", "--kill"); } END_TEST
START_TEST(fault_commit_stop) { dump_fault_mode("205", "--stop"); } END_TEST
START_TEST(fault_regs) { dump_fault("201:2"); } END_TEST
/* the nine-thread target's third batch of injected calls (the process's,
 * then one a thread) ran and its stop is refused */
START_TEST(fault_batch) { dump_fault("423:3"); } END_TEST
START_TEST(fault_memory) { dump_fault("202:5"); } END_TEST
START_TEST(fault_fds) { dump_fault("203"); } END_TEST
START_TEST(fault_write) { dump_fault("204"); } END_TEST
START_TEST(fault_commit) { dump_fault("205"); } END_TEST

struct text {
	char *all;
	size_t len;
};

static bool add_sigblk(const char *tid, const char *status, void *ud)
{
	struct text *t = ud;
	const char *b = strstr(status, "SigBlk:");
	ck_assert_ptr_nonnull(b);
	int n = (int)strcspn(b, "\n");
	t->all = realloc(t->all, t->len + strlen(tid) + (size_t)n + 3);
	t->len += (size_t)sprintf(t->all + t->len, "%s %.*s\n", tid, n, b);
	return false;
}

/* Every thread's "SigBlk:" value, in /proc/PID/task order. */
static char *sigblk(pid_t pid)
{
	struct text t = { NULL, 0 };
	each_task(pid, add_sigblk, &t);
	return t.all;
}

/* The masks as they stay: a thread inside a handler has that signal
 * blocked until the handler returns, and the targets' interval timers
 * fire every 20 ms (a signal held while a thread was stopped comes the
 * moment it runs). Read until two reads 1 ms apart agree, or `want` is
 * read (not NULL): a mask is wrong only if it stays wrong. */
static char *sigblk_settled(pid_t pid, const char *want)
{
	char *cur = sigblk(pid);
	for (int i = 0; i < 200; i++) {
		if (want && !strcmp(cur, want))
			break;
		usleep(1000);
		char *next = sigblk(pid);
		bool same = !strcmp(cur, next);
		free(cur);
		cur = next;
		if (same && !want)
			break;
	}
	return cur;
}

static char *maps_of(pid_t pid)
{
	char p[64], *text = NULL;
	snprintf(p, sizeof(p), "/proc/%d/maps", pid);
	ck_assert_int_eq(read_file_full(p, &text, NULL), 0);
	return text;
}

static bool held(const char *tid, const char *status, void *ud)
{
	return *(bool *)ud = traced_or_stopped(status);
}

/* Waits (up to 10 s) until no thread of pid is traced or in a ptrace or
 * group stop: the keeper lets go once it sees the dumper dead. */
static void wait_let_go(pid_t pid)
{
	for (int i = 0; i < 10000; i++) {
		bool any = false;
		each_task(pid, held, &any);
		if (!any)
			return;
		usleep(1000);
	}
	ck_abort_msg("pid %d still traced or stopped 10 s after its dumper died", pid);
}

/* The dumper (`ckpt dump`) is SIGKILLed at the point fault names (220-226;
 * 221 and 222 fire in the keeper, which then kills the dumper and waits
 * for its death before going on). The target must run on as it was: not
 * traced, not stopped, every thread's signal mask as before, no mapping
 * more or less, no snapshot; then, told to check itself, it passes (its
 * turns or its timer's signals go on, its signal state is intact). */
static void dump_dies(const char *prog, const char *fault, const char *mode, int nthreads)
{
	pid_t pid = spawn(NULL, prog, NULL);
	char p[32];
	snprintf(p, sizeof(p), "%d", pid);
	char *blk0 = sigblk_settled(pid, NULL), *maps0 = maps_of(pid);
	int st = mode ? case_ckpt_status(fault, NULL, 0, "dump", mode, p, case_path("store/bad"))
		      : case_ckpt_status(fault, NULL, 0, "dump", p, case_path("store/bad"), NULL);
	ck_assert_msg(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "ckpt dump with fault %s: status 0x%x: %s",
		      fault, st, case_ckpt_err());
	wait_let_go(pid);
	ck_assert_msg(kill(pid, 0) == 0 && waitpid(pid, &st, WNOHANG) == 0, "pid %d is gone", pid);
	assert_untouched_n(pid, nthreads);
	char *blk1 = sigblk_settled(pid, blk0), *maps1 = maps_of(pid);
	ck_assert_msg(!strcmp(blk0, blk1), "signal masks changed:\n%s---\n%s", blk0, blk1);
	ck_assert_msg(!strcmp(maps0, maps1), "mappings changed:\n%s---\n%s", maps0, maps1);
	free(blk0);
	free(blk1);
	free(maps0);
	free(maps1);
	ck_assert(!file_exists(case_path("store/bad")));
	verdict(pid);
}

START_TEST(die_seized) { dump_dies("target-threads", "220", NULL, 9); } END_TEST
/* The calls asked from inside (process.c): the keeper maps a scratch
 * area (hit 1) and the batch runner (2), runs the process-wide batch (3),
 * each thread's (4 on), then unmaps the two. In the process-wide batch: */
START_TEST(die_inject) { dump_dies("target-signals", "221:3", NULL, 1); } END_TEST
/* the third thread's batch */
START_TEST(die_inject_thread) { dump_dies("target-threads", "221:6", NULL, 9); } END_TEST
/* the last one: the runner's munmap */
START_TEST(die_inject_munmap) { dump_dies("target-signals", "221:6", NULL, 1); } END_TEST
/* one call at a time (a process with seccomp filters: no batches there):
 * the scratch area's mmap, then the fourth rt_sigaction */
START_TEST(die_inject_one) { dump_dies("target-seccomp", "221:5", NULL, 2); } END_TEST
START_TEST(die_sigmask) { dump_dies("target-signals", "222", NULL, 1); } END_TEST
START_TEST(die_sigmask_threads) { dump_dies("target-threads", "222", NULL, 9); } END_TEST
START_TEST(die_memory) { dump_dies("target-signals", "223:2", NULL, 1); } END_TEST
/* streamed from the frozen process while written */
START_TEST(die_memory_kill) { dump_dies("target-signals", "223:2", "--kill", 1); } END_TEST
START_TEST(die_fds) { dump_dies("target-signals", "224", NULL, 1); } END_TEST
START_TEST(die_write) { dump_dies("target-signals", "225", NULL, 1); } END_TEST
START_TEST(die_commit_kill) { dump_dies("target-signals", "226", "--kill", 1); } END_TEST
START_TEST(die_commit_stop) { dump_dies("target-threads", "226", "--stop", 9); } END_TEST

static void restore_fault_of(const char *prog, const char *fault)
{
	pid_t pid = spawn(NULL, prog, NULL);
	dump(pid, "--kill", "store/s1");
	kill_original(pid, "--kill");
	int rc = case_ckpt(fault, NULL, 0, "restore", case_path("store/s1"), NULL, NULL);
	ck_assert_msg(rc == 1, "restore with fault %s: exit %d", fault, rc);
	ck_assert_msg(strstr(case_ckpt_err(), "injected fault"), "no reason given: %s", case_ckpt_err());
	/* what was half built was killed: reap it (we are its subreaper) */
	int st;
	pid_t w = waitpid(pid, &st, 0);
	ck_assert_msg(w == pid && WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL,
		      "half-restored pid %d not killed", pid);
	ck_assert(kill(pid, 0) < 0 && errno == ESRCH);
	verdict(restore("store/s1"));
}

static void restore_fault(const char *fault)
{
	restore_fault_of("target-threads", fault);
}

START_TEST(fault_restore_map) { restore_fault("210:3"); } END_TEST
/* the attributes (oom_score_adj, prctl, ...) and an area's advice */
START_TEST(fault_restore_attrs) { restore_fault("250"); } END_TEST
START_TEST(fault_restore_advice) { restore_fault_of("target-advice", "251:3"); } END_TEST
START_TEST(fault_restore_late) { restore_fault("211"); } END_TEST

/* /proc/PID/comm, without the newline (static buffer). */
static const char *comm_of(pid_t pid)
{
	static char comm[32];
	char p[64], *text = NULL;
	snprintf(p, sizeof(p), "/proc/%d/comm", pid);
	ck_assert_int_eq(read_file_full(p, &text, NULL), 0);
	text[strcspn(text, "\n")] = 0;
	snprintf(comm, sizeof(comm), "%s", text);
	free(text);
	return comm;
}

/* A live process on the PID is refused at once, by name: no waiting. */
START_TEST(restore_pid_in_use)
{
	pid_t pid = spawn(NULL, "target-mem", case_path("mapped-file"));
	dump(pid, NULL, "store/s1");
	uint64_t t0 = now_ns();
	int rc = case_ckpt(NULL, NULL, 0, "restore", case_path("store/s1"), NULL, NULL);
	uint64_t took = now_ns() - t0;
	ck_assert_int_eq(rc, 1);
	char want[96];
	snprintf(want, sizeof(want), "pid %d is in use by live process %s", pid, comm_of(pid));
	ck_assert_msg(strstr(case_ckpt_err(), want), "stderr: %s", case_ckpt_err());
	ck_assert_msg(!strstr(case_ckpt_err(), "waiting"), "it waited for a live process: %s", case_ckpt_err());
	/* had it waited, it would have taken the whole default bound (5 s) */
	ck_assert_msg(took < 5000000000ull, "refusing took %" PRIu64 " ms", took / 1000000);
	kill_original(pid, NULL);
}
END_TEST

/* Waits until pid is a zombie, as dump --kill leaves it for us, its
 * parent, to reap. */
static void assert_zombie(pid_t pid)
{
	assert_state(pid, 'Z', "zombie");
}

/* Starts ckpt in the background; its stdout comes through *out_fd, its
 * stderr goes to DIR/ckpt.err. fault: CKPTFS_FAULT value or NULL. */
static pid_t run_ckpt_bg_with(const char *fault, int *out_fd, const char *a1, const char *a2, const char *a3,
			      const char *a4)
{
	int fds[2];
	ck_assert_int_eq(pipe2(fds, O_CLOEXEC), 0);
	pid_t pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		int err = open(case_path("ckpt.err"), O_WRONLY | O_CREAT | O_TRUNC, 0600);
		dup2(fds[1], 1);
		dup2(err, 2);
		if (fault)
			setenv("CKPTFS_FAULT", fault, 1);
		else
			unsetenv("CKPTFS_FAULT");
		execl(case_ckpt_bin, "ckpt", a1, a2, a3, a4, (char *)NULL);
		_exit(127);
	}
	close(fds[1]);
	*out_fd = fds[0];
	return pid;
}

static pid_t run_ckpt_bg(int *out_fd, const char *a1, const char *a2, const char *a3, const char *a4)
{
	return run_ckpt_bg_with(NULL, out_fd, a1, a2, a3, a4);
}

/* What ckpt restore says while it waits for the zombie pid, whose parent
 * is us. */
static const char *waiting_line(pid_t pid)
{
	static char want[128];
	snprintf(want, sizeof(want), "waiting for pid %d to be reaped by its parent %d (%s)", pid, getpid(),
		 comm_of(getpid()));
	return want;
}

/* dump --kill leaves the target a zombie until we reap it: the restore
 * waits, says so, and goes on as soon as we do. */
START_TEST(restore_waits_for_zombie)
{
	pid_t pid = spawn(NULL, "target-threads", NULL);
	dump(pid, "--kill", "store/s1");
	assert_zombie(pid);
	int out;
	/* a bound far above what the test needs: the reap decides */
	pid_t ck = run_ckpt_bg(&out, "restore", "--pid-wait", "120", case_path("store/s1"));
	const char *want = waiting_line(pid);
	bool said = false;
	for (int i = 0; i < 30000 && !said; i++) {
		said = strstr(case_ckpt_err(), want) != NULL;
		if (!said)
			usleep(1000);
	}
	ck_assert_msg(said, "ckpt restore did not say '%s': %s", want, case_ckpt_err());
	/* still waiting: the zombie holds the pid */
	int st;
	ck_assert_int_eq(waitpid(ck, &st, WNOHANG), 0);
	assert_zombie(pid);
	kill_original(pid, "--kill");
	char buf[64] = "";
	ssize_t n, len = 0;
	while ((n = read(out, buf + len, sizeof(buf) - 1 - len)) > 0)
		len += n;
	buf[len] = 0;
	close(out);
	ck_assert_int_eq(waitpid(ck, &st, 0), ck);
	ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "ckpt restore failed (0x%x): %s", st, case_ckpt_err());
	ck_assert_int_eq(atoi(buf), pid);
	verdict(pid);
}
END_TEST

/* A zombie not reaped within --pid-wait fails the restore with a reason
 * naming it and its parent; nothing is left of the attempt, and a restore
 * after the reap succeeds. */
START_TEST(restore_zombie_not_reaped)
{
	pid_t pid = spawn(NULL, "target-threads", NULL);
	char target_comm[32];
	snprintf(target_comm, sizeof(target_comm), "%s", comm_of(pid));
	dump(pid, "--kill", "store/s1");
	assert_zombie(pid);
	uint64_t t0 = now_ns();
	int rc = case_ckpt(NULL, NULL, 0, "restore", "--pid-wait", "1", case_path("store/s1"));
	uint64_t took = now_ns() - t0;
	ck_assert_msg(rc == 1, "restore past a zombie: exit %d: %s", rc, case_ckpt_err());
	ck_assert_msg(strstr(case_ckpt_err(), waiting_line(pid)), "no waiting line: %s", case_ckpt_err());
	char want[160];
	snprintf(want, sizeof(want), "pid %d is in use by a zombie (%s) that its parent %d (", pid, target_comm,
		 getpid());
	snprintf(want + strlen(want), sizeof(want) - strlen(want), "%s) did not reap", comm_of(getpid()));
	ck_assert_msg(strstr(case_ckpt_err(), want), "want '%s' in: %s", want, case_ckpt_err());
	ck_assert_msg(took >= 1000000000ull, "gave up after %" PRIu64 " ms, before the bound", took / 1000000);
	/* the zombie is still ours and nothing else is: no half-built
	 * process was left (we are every orphan's subreaper) */
	assert_zombie(pid);
	kill_original(pid, "--kill");
	int st;
	ck_assert_int_eq(waitpid(-1, &st, WNOHANG), -1);
	ck_assert_int_eq(errno, ECHILD);
	verdict(restore("store/s1"));
}
END_TEST

/* A process someone else traces is refused, by name, and left alone. */
START_TEST(dump_refuses_traced)
{
	pid_t pid = spawn(NULL, "target-mem", case_path("mapped-file"));
	ck_assert_int_eq(ptrace(PTRACE_SEIZE, pid, NULL, NULL), 0);
	char p[32], want[64];
	snprintf(p, sizeof(p), "%d", pid);
	ck_assert_int_eq(case_ckpt(NULL, NULL, 0, "dump", p, case_path("store/bad"), NULL), 1);
	snprintf(want, sizeof(want), "already traced by pid %d", getpid());
	ck_assert_msg(strstr(case_ckpt_err(), want), "stderr: %s", case_ckpt_err());
	ck_assert(!file_exists(case_path("store/bad")));
	/* let go: a tracee must be stopped to be detached */
	int st;
	ck_assert_int_eq(ptrace(PTRACE_INTERRUPT, pid, NULL, NULL), 0);
	ck_assert_int_eq(waitpid(pid, &st, __WALL), pid);
	ck_assert_int_eq(ptrace(PTRACE_DETACH, pid, NULL, NULL), 0);
	dump(pid, NULL, "store/s1");
	kill_original(pid, NULL);
	verdict(restore("store/s1"));
}
END_TEST

/* A descriptor of a refused kind (a raw IPv4 socket) fails the dump
 * before the process is touched, naming the descriptor. */
START_TEST(dump_refuses_raw_socket)
{
	pid_t pid = case_fork_quiet(-1, NULL);
	if (pid == 0) {
		int s = socket(AF_INET, SOCK_RAW, IPPROTO_ICMP);
		if (s != 3)
			_exit(2);
		execl("/bin/sleep", "sleep", "30", (char *)NULL);
		_exit(127);
	}
	char fd3[64], *link = NULL;
	snprintf(fd3, sizeof(fd3), "/proc/%d/fd/3", pid);
	/* generous: exec on a loaded 2-core machine can take seconds */
	for (int i = 0; i < 20000; i++) {
		char buf[64] = "";
		ssize_t n = readlink(fd3, buf, sizeof(buf) - 1);
		char exe[64], eb[64] = "";
		snprintf(exe, sizeof(exe), "/proc/%d/exe", pid);
		ssize_t m = readlink(exe, eb, sizeof(eb) - 1);
		if (n > 0 && m > 0 && strstr(eb, "sleep")) {
			link = strdup(buf);
			break;
		}
		usleep(1000);
	}
	ck_assert_msg(link && strstr(link, "socket:"), "no socket at fd 3");
	free(link);
	char p[32];
	snprintf(p, sizeof(p), "%d", pid);
	ck_assert_int_eq(case_ckpt(NULL, NULL, 0, "dump", p, case_path("store/bad"), NULL), 1);
	ck_assert_msg(strstr(case_ckpt_err(), "fd 3"), "stderr: %s", case_ckpt_err());
	ck_assert(!file_exists(case_path("store/bad")));
	char sp[64], *st = NULL;
	snprintf(sp, sizeof(sp), "/proc/%d/status", pid);
	ck_assert_int_eq(read_file_full(sp, &st, NULL), 0);
	ck_assert(strstr(st, "TracerPid:\t0\n"));
	ck_assert(!strstr(st, "State:\tt") && !strstr(st, "State:\tT"));
	free(st);
	kill_original(pid, NULL);
}
END_TEST

/* An image from a kernel with another vDSO is refused (the manifest
 * check is skipped so that the edited file gets that far). */
START_TEST(restore_refuses_other_vdso)
{
	pid_t pid = spawn(NULL, "target-mem", case_path("mapped-file"));
	dump(pid, "--kill", "store/s1");
	kill_original(pid, "--kill");
	char *text = NULL, proc[64];
	snprintf(proc, sizeof(proc), "store/s1/%d/process", pid);
	ck_assert_int_eq(read_file_full(case_path(proc), &text, NULL), 0);
	char *h = strstr(text, "\nvdso sha256:");
	ck_assert_ptr_nonnull(h);
	h[13] = h[13] == '0' ? '1' : '0';
	int fd = open(case_path(proc), O_WRONLY | O_CLOEXEC);
	ck_assert_int_eq(write_full(fd, text, strlen(text)), 0);
	close(fd);
	free(text);
	ck_assert_int_eq(case_ckpt(NULL, NULL, 0, "restore", "--no-verify", case_path("store/s1"), NULL), 1);
	ck_assert_msg(strstr(case_ckpt_err(), "another kernel"), "stderr: %s", case_ckpt_err());
	ck_assert(kill(pid, 0) < 0 && errno == ESRCH);
}
END_TEST

/* A posix timer aimed at a thread the snapshot does not have: the
 * restore is refused saying so before anything is built. */
START_TEST(restore_refuses_timer_of_unknown_thread)
{
	pid_t pid = spawn(NULL, "target-ptimers", NULL);
	dump(pid, "--kill", "store/s1");
	kill_original(pid, "--kill");
	char *text = NULL, proc[64];
	snprintf(proc, sizeof(proc), "store/s1/%d/process", pid);
	ck_assert_int_eq(read_file_full(case_path(proc), &text, NULL), 0);
	char *t = strstr(text, " thread:");
	ck_assert_ptr_nonnull(t);
	/* the same length: a TID no thread of it has */
	for (char *d = t + 8; *d >= '0' && *d <= '9'; d++)
		*d = '9';
	int fd = open(case_path(proc), O_WRONLY | O_TRUNC | O_CLOEXEC);
	ck_assert_int_eq(write_full(fd, text, strlen(text)), 0);
	close(fd);
	free(text);
	ck_assert_int_eq(case_ckpt(NULL, NULL, 0, "restore", "--no-verify", case_path("store/s1"), NULL), 1);
	ck_assert_msg(strstr(case_ckpt_err(), "not in the snapshot"), "stderr: %s", case_ckpt_err());
	ck_assert(kill(pid, 0) < 0 && errno == ESRCH);
}
END_TEST

/* What a dump cannot bring back is refused before the process is
 * touched: a posix timer, a child process. The process runs on. */
static void refused(pid_t pid, const char *want)
{
	char p[32];
	snprintf(p, sizeof(p), "%d", pid);
	ck_assert_int_eq(case_ckpt(NULL, NULL, 0, "dump", p, case_path("store/bad"), NULL), 1);
	ck_assert_msg(strstr(case_ckpt_err(), want), "stderr: %s", case_ckpt_err());
	ck_assert(!file_exists(case_path("store/bad")));
	ck_assert_int_eq(kill(pid, 0), 0);
}

START_TEST(dump_refuses_posix_timer)
{
	pid_t pid = spawn(NULL, "target-timer", NULL);
	refused(pid, "runs on clock");
	/* still running: it finishes when told */
	int fd = open(case_path("ready.restored"), O_WRONLY | O_CREAT, 0600);
	close(fd);
	int st;
	ck_assert_int_eq(waitpid(pid, &st, 0), pid);
	ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}
END_TEST

/* Every descendant of pid, parents first (pid not included). */
static size_t descendants(pid_t pid, pid_t *out, size_t max)
{
	size_t n = 0;
	pid_t todo[64];
	size_t nt = 0;
	todo[nt++] = pid;
	while (nt) {
		pid_t p = todo[--nt];
		char ch[96], *text = NULL;
		snprintf(ch, sizeof(ch), "/proc/%d/task/%d/children", p, p);
		if (read_file_full(ch, &text, NULL) < 0)
			continue;
		for (char *tok = strtok(text, " \n"); tok; tok = strtok(NULL, " \n"))
			if (n < max && nt < 64) {
				out[n++] = atoi(tok);
				todo[nt++] = atoi(tok);
			}
		free(text);
	}
	return n;
}

/* Waits until pid is gone (reaped by whoever was its parent; we are a
 * subreaper: the orphans are ours). */
static void wait_gone(pid_t pid)
{
	char p[64];
	snprintf(p, sizeof(p), "/proc/%d", pid);
	for (int i = 0; i < 20000 && access(p, F_OK) == 0; i++) {
		waitpid(-1, NULL, WNOHANG);
		usleep(1000);
	}
	ck_assert_msg(access(p, F_OK) < 0, "pid %d is still there", pid);
}

static char *proc_stat(pid_t pid)
{
	char p[64], *st = NULL;
	snprintf(p, sizeof(p), "/proc/%d/stat", pid);
	ck_assert_int_eq(read_file_full(p, &st, NULL), 0);
	return st;
}

/* ppid, pgid and sid of pid from /proc/PID/stat */
static void ids_of(pid_t pid, int *ppid, int *pgid, int *sid)
{
	char *st = proc_stat(pid), state;
	ck_assert_int_eq(sscanf(strrchr(st, ')') + 2, "%c %d %d %d", &state, ppid, pgid, sid), 4);
	free(st);
}

/* A shell and its background child come back as a tree: the same pids,
 * the child still the shell's, both in the restored root's session and
 * group. */
START_TEST(tree_shell_job)
{
	pid_t pid = case_fork_quiet(-1, NULL);
	if (pid == 0) {
		execl("/bin/sh", "sh", "-c", "sleep 1000 & wait", (char *)NULL);
		_exit(127);
	}
	pid_t kids[8];
	size_t nk = 0;
	for (int i = 0; i < 5000 && nk == 0; i++) {
		nk = descendants(pid, kids, 8);
		if (!nk)
			usleep(1000);
	}
	ck_assert_msg(nk == 1, "no child appeared");
	pid_t child = kids[0];
	dump(pid, "--kill", "store/s1");
	kill_original(pid, "--kill");
	wait_gone(child);
	char *tree = NULL, want[128];
	ck_assert_int_eq(read_file_full(case_path("store/s1/tree"), &tree, NULL), 0);
	snprintf(want, sizeof(want), "\n%d %d ", child, pid);
	ck_assert_msg(!strncmp(tree, "", 0) && atoi(tree) == pid && strstr(tree, want), "tree: %s", tree);
	free(tree);
	ck_assert_int_eq(restore("store/s1"), pid);
	int ppid, pgid, sid;
	ids_of(pid, &ppid, &pgid, &sid);
	ck_assert_int_eq(pgid, pid);
	ck_assert_int_eq(sid, pid);
	ids_of(child, &ppid, &pgid, &sid);
	ck_assert_int_eq(ppid, pid);
	ck_assert_int_eq(pgid, pid);
	ck_assert_int_eq(sid, pid);
	char *st = proc_stat(child);
	ck_assert_msg(strstr(st, "(sleep)"), "child: %s", st);
	free(st);
	/* the child first: the shell's wait then returns and it exits */
	kill(child, SIGKILL);
	wait_gone(child);
	wait_gone(pid);
}
END_TEST

/* target-tree: three generations, a group led by a sibling, a zombie,
 * pipes between them. Starts it; kids: its descendants. */
static pid_t tree_spawn(pid_t *kids, size_t *nk)
{
	char scratch[PATH_MAX + 64];
	snprintf(scratch, sizeof(scratch), "%s", case_path("scratch"));
	ck_assert_int_eq(mkdir(scratch, 0700), 0);
	pid_t pid = spawn(NULL, "target-tree", scratch);
	*nk = descendants(pid, kids, 16);
	ck_assert_msg(*nk == 4, "%zu descendants, expected 4", *nk);
	return pid;
}

static bool is_zombie(pid_t pid)
{
	char *st = proc_stat(pid);
	bool z = strstr(st, ") Z ");
	free(st);
	return z;
}

static void tree_dump_restore(pid_t pid, const pid_t *kids, size_t nk, const char *mode)
{
	dump(pid, mode, "store/s1");
	if (mode && !strcmp(mode, "--stop"))
		for (size_t i = 0; i < nk; i++)
			if (!is_zombie(kids[i]))
				assert_stopped(kids[i], "--stop");
	/* the whole original tree goes, the root first (its children would
	 * end it otherwise): its pids are the restore's */
	if (!mode || strcmp(mode, "--kill"))
		kill(pid, SIGKILL);
	for (size_t i = 0; i < nk; i++)
		kill(kids[i], SIGKILL);
	kill_original(pid, "--kill");
	for (size_t i = 0; i < nk; i++)
		wait_gone(kids[i]);
	char *tree = NULL;
	ck_assert_int_eq(read_file_full(case_path("store/s1/tree"), &tree, NULL), 0);
	ck_assert_msg(strstr(tree, " zombie exit=7\n"), "tree: %s", tree);
	free(tree);
	verdict(restore("store/s1"));
}

static void tree_cycle(const char *mode)
{
	pid_t kids[16];
	size_t nk;
	pid_t pid = tree_spawn(kids, &nk);
	tree_dump_restore(pid, kids, nk, mode);
}

START_TEST(tree_running) { tree_cycle(NULL); } END_TEST
START_TEST(tree_kill) { tree_cycle("--kill"); } END_TEST
START_TEST(tree_stop) { tree_cycle("--stop"); } END_TEST

/* A dump that fails once every process of the tree is frozen (fault 203
 * on the second process's descriptors; the first process had two hits)
 * lets every process go as it was and writes nothing: the tree then
 * dumps, restores and passes its own checks, its pipes intact. */
START_TEST(tree_fault_dump)
{
	pid_t kids[16];
	size_t nk;
	pid_t pid = tree_spawn(kids, &nk);
	char p[32];
	snprintf(p, sizeof(p), "%d", pid);
	int rc = case_ckpt("203:3", NULL, 0, "dump", p, case_path("store/bad"), NULL);
	ck_assert_msg(rc == 1, "dump with fault 203:3: exit %d", rc);
	ck_assert_msg(strstr(case_ckpt_err(), "injected fault"), "no reason given: %s", case_ckpt_err());
	ck_assert(!file_exists(case_path("store/bad")));
	/* every thread of every process: not traced, not stopped */
	assert_untouched_n(pid, 1);
	for (size_t i = 0; i < nk; i++)
		if (!is_zombie(kids[i]))
			assert_untouched_n(kids[i], 1);
	tree_dump_restore(pid, kids, nk, "--kill");
}
END_TEST

/* A POSIX lock on a file the process also maps would be dropped by the
 * restore (mapping the file opens and closes it in the process): refused
 * by name, the process left as it was. */
START_TEST(dump_refuses_posix_lock_on_mapped_file)
{
	char file[PATH_MAX + 64];
	snprintf(file, sizeof(file), "%s", case_path("locked"));
	pid_t pid = case_fork_quiet(-1, NULL);
	if (pid == 0) {
		int fd = open(file, O_RDWR | O_CREAT, 0600);
		struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 1 };
		if (fd != 3 || ftruncate(fd, 4096) < 0 || fcntl(fd, F_SETLK, &fl) < 0 ||
		    mmap(NULL, 4096, PROT_READ, MAP_SHARED, fd, 0) == MAP_FAILED)
			_exit(2);
		int r = open(case_path("ready"), O_WRONLY | O_CREAT, 0600);
		close(r);
		for (;;)
			pause();
	}
	case_wait_file(case_path("ready"), 30000);
	char p[32];
	snprintf(p, sizeof(p), "%d", pid);
	ck_assert_int_eq(case_ckpt(NULL, NULL, 0, "dump", p, case_path("store/bad"), NULL), 1);
	ck_assert_msg(strstr(case_ckpt_err(), "POSIX locks on a file the process also maps"), "stderr: %s", case_ckpt_err());
	ck_assert(!file_exists(case_path("store/bad")));
	assert_untouched_n(pid, 1);
	/* still its lock */
	int fd = open(file, O_RDWR | O_CLOEXEC);
	struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 1 };
	ck_assert_int_eq(fcntl(fd, F_GETLK, &fl), 0);
	ck_assert_int_eq(fl.l_pid, pid);
	close(fd);
	kill_original(pid, NULL);
}
END_TEST

/* A child in vfork() (it shares its parent's memory until it execs) is
 * refused before anything is touched, naming both: the processes run on,
 * untraced, not stopped. */
START_TEST(tree_refuses_vfork)
{
	pid_t pid = case_fork_quiet(-1, NULL);
	if (pid == 0) {
		if (vfork() == 0) {
			/* raw: nothing of the parent's stack may change */
			for (;;)
				syscall(SYS_pause);
		}
		_exit(0);
	}
	pid_t kids[4];
	size_t nk = 0;
	for (int i = 0; i < 20000 && nk == 0; i++) {
		nk = descendants(pid, kids, 4);
		if (!nk)
			usleep(1000);
	}
	ck_assert_msg(nk == 1, "no vfork child appeared");
	char p[32];
	snprintf(p, sizeof(p), "%d", pid);
	ck_assert_int_eq(case_ckpt(NULL, NULL, 0, "dump", p, case_path("store/bad"), NULL), 1);
	ck_assert_msg(strstr(case_ckpt_err(), "share one address space"), "stderr: %s", case_ckpt_err());
	ck_assert(!file_exists(case_path("store/bad")));
	assert_untouched_n(pid, 1);
	assert_untouched_n(kids[0], 1);
	kill(kids[0], SIGKILL);
	int st;
	ck_assert_int_eq(waitpid(pid, &st, 0), pid);
	ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}
END_TEST

/* target-share: a parent and its clone() child sharing one descriptor
 * table (files) or filesystem context (fs). The tree file must say so,
 * and the restored pair checks that it still shares it: a change by one
 * is seen by the other. */
/* Starts prog (a parent with n descendants), dumps it into store/s1
 * (mode) and gets rid of all; the descendants' pids into kids[n]. */
static pid_t family_dump(const char *prog, const char *extra, const char *mode, size_t n, pid_t *kids)
{
	pid_t pid = spawn(NULL, prog, extra);
	sysv_target = pid;
	size_t nk = descendants(pid, kids, n);
	ck_assert_msg(nk == n, "%zu descendants, expected %zu", nk, n);
	dump(pid, mode, "store/s1");
	if (!mode || strcmp(mode, "--kill"))
		kill(pid, SIGKILL);
	for (size_t i = 0; i < n; i++)
		kill(kids[i], SIGKILL);
	kill_original(pid, "--kill");
	for (size_t i = 0; i < n; i++)
		wait_gone(kids[i]);
	return pid;
}

static pid_t pair_dump(const char *prog, const char *extra, const char *mode, pid_t *child)
{
	return family_dump(prog, extra, mode, 1, child);
}

static void share_cycle(const char *what, const char *mode)
{
	pid_t kids[2];
	pid_t pid = family_dump("target-share", what, mode, 2, kids);
	/* the child's and grandchild's lines name the parent they share with */
	char *tree = NULL, want[64];
	ck_assert_int_eq(read_file_full(case_path("store/s1/tree"), &tree, NULL), 0);
	for (size_t i = 0; i < 2; i++) {
		snprintf(want, sizeof(want), "\n%d %d ", kids[i], i ? kids[0] : pid);
		char *line = strstr(tree, want);
		ck_assert_msg(line, "tree: %s (no line for %d)", tree, kids[i]);
		snprintf(want, sizeof(want), " %s=%d\n", what, pid);
		char *hit = strstr(line + 1, want), *eol = strchr(line + 1, '\n');
		ck_assert_msg(hit && hit + strlen(want) - 1 == eol, "tree: %s (%d's line does not end in '%s')", tree,
			      kids[i], want);
	}
	free(tree);
	verdict(restore("store/s1"));
}

START_TEST(share_files_running) { share_cycle("files", NULL); } END_TEST
START_TEST(share_files_kill) { share_cycle("files", "--kill"); } END_TEST
START_TEST(share_fs_running) { share_cycle("fs", NULL); } END_TEST
START_TEST(share_fs_stop) { share_cycle("fs", "--stop"); } END_TEST

static int pause_forever(void *arg)
{
	(void)arg;
	for (;;)
		pause();
	return 0;
}

/* Two children sharing one descriptor table that their parent left
 * (unshare) cannot be forked again that way: refused before anything is
 * touched, naming them and the parent; all three run on untraced. */
START_TEST(tree_refuses_files_without_parent)
{
	pid_t pid = case_fork_quiet(-1, NULL);
	if (pid == 0) {
		static char stacks[2][16384] __attribute__((aligned(16)));
		for (int i = 0; i < 2; i++)
			if (clone(pause_forever, stacks[i] + sizeof(stacks[i]), CLONE_FILES | SIGCHLD, NULL) < 0)
				_exit(2);
		if (unshare(CLONE_FILES) < 0)
			_exit(3);
		int r = open(case_path("ready"), O_WRONLY | O_CREAT, 0600);
		close(r);
		for (;;)
			pause();
	}
	case_wait_file(case_path("ready"), 30000);
	pid_t kids[4];
	size_t nk = descendants(pid, kids, 4);
	ck_assert_msg(nk == 2, "%zu children, expected 2", nk);
	char p[32];
	snprintf(p, sizeof(p), "%d", pid);
	ck_assert_int_eq(case_ckpt(NULL, NULL, 0, "dump", p, case_path("store/bad"), NULL), 1);
	char want[128];
	snprintf(want, sizeof(want), "shares its descriptor table (CLONE_FILES) with pid %d, but its parent %d does not",
		 kids[0], pid);
	ck_assert_msg(strstr(case_ckpt_err(), want), "stderr: %s (not '%s')", case_ckpt_err(), want);
	ck_assert(!file_exists(case_path("store/bad")));
	assert_untouched_n(pid, 1);
	for (size_t i = 0; i < nk; i++) {
		assert_untouched_n(kids[i], 1);
		kill(kids[i], SIGKILL);
	}
	kill_original(pid, NULL);
}
END_TEST

/* target-posixshm: a POSIX shared memory object (/dev/shm) mapped by a
 * parent and its child. It is a file: the restore maps the object by its
 * name again, shared with both processes and with whoever opens the name
 * (the target checks that through a second view). */
static void posixshm_cycle(const char *mode)
{
	pid_t child;
	pid_t pid = pair_dump("target-posixshm", NULL, mode, &child);
	char *maps = NULL, want[64], rel[64];
	snprintf(want, sizeof(want), "/dev/shm/ckptfs-target-%d", pid);
	snprintf(rel, sizeof(rel), "store/s1/%d/maps", pid);
	ck_assert_int_eq(read_file_full(case_path(rel), &maps, NULL), 0);
	ck_assert_msg(strstr(maps, "kind=file-shared") && strstr(maps, want), "maps: %s (no file-shared %s)", maps,
		      want);
	free(maps);
	ck_assert_int_eq(restore("store/s1"), pid);
	verdict(pid);
}

START_TEST(posixshm_kill) { posixshm_cycle("--kill"); } END_TEST
START_TEST(posixshm_running) { posixshm_cycle(NULL); } END_TEST

/* The object gone, as on a host that does not have it: the restore fails
 * naming it and leaves nothing running. */
START_TEST(posixshm_removed)
{
	pid_t child;
	pid_t pid = pair_dump("target-posixshm", NULL, "--kill", &child);
	char name[64];
	snprintf(name, sizeof(name), "/dev/shm/ckptfs-target-%d", pid);
	ck_assert_int_eq(unlink(name), 0);
	ck_assert_int_eq(case_ckpt(NULL, NULL, 0, "restore", case_path("store/s1"), NULL, NULL), 1);
	ck_assert_msg(strstr(case_ckpt_err(), name), "stderr: %s (does not name %s)", case_ckpt_err(), name);
	/* what the restore made is killed (and reaped: no zombie stays) */
	wait_gone(pid);
	wait_gone(child);
}
END_TEST

/* target-sysv: a SysV segment attached three times by a parent and its
 * child. Dumped (mode), the originals gone; its id from the snapshot's
 * `ipc` file. */
static int sysv_dump(const char *mode, pid_t *ret_pid, pid_t *ret_child)
{
	pid_t pid = pair_dump("target-sysv", NULL, mode, ret_child);
	char *ipc = NULL;
	int id = -1;
	ck_assert_int_eq(read_file_full(case_path("store/s1/ipc"), &ipc, NULL), 0);
	ck_assert_msg(sscanf(ipc, "shm obj=%*u id=%d key=%*x mode=0640 ", &id) == 1, "ipc: %s", ipc);
	free(ipc);
	*ret_pid = pid;
	return id;
}

/* The segment is still there (same host): the restored tree attaches it. */
static void sysv_cycle(const char *mode)
{
	pid_t pid, child;
	int id = sysv_dump(mode, &pid, &child);
	struct shmid_ds ds;
	ck_assert_msg(shmctl(id, IPC_STAT, &ds) == 0 && ds.shm_nattch == 0, "segment %d is not there unattached", id);
	ck_assert_int_eq(restore("store/s1"), pid);
	verdict(pid);
}

START_TEST(sysv_kill) { sysv_cycle("--kill"); } END_TEST
START_TEST(sysv_running) { sysv_cycle(NULL); } END_TEST

/* The segment is gone, as on another host: made again with its id, key,
 * mode and bytes. */
START_TEST(sysv_removed)
{
	pid_t pid, child;
	int id = sysv_dump("--kill", &pid, &child);
	ck_assert_int_eq(shmctl(id, IPC_RMID, NULL), 0);
	ck_assert_int_eq(restore("store/s1"), pid);
	verdict(pid);
}
END_TEST

/* Its id held by another segment: refused by name, nothing built, the
 * other segment untouched; once that one is gone the restore makes it. */
START_TEST(sysv_id_taken)
{
	pid_t pid, child;
	int id = sysv_dump("--kill", &pid, &child);
	ck_assert_int_eq(shmctl(id, IPC_RMID, NULL), 0);
	int fd = open("/proc/sys/kernel/shm_next_id", O_WRONLY | O_CLOEXEC);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_gt(dprintf(fd, "%d", id), 0);
	close(fd);
	int other = shmget(IPC_PRIVATE, 4096, IPC_CREAT | 0600);
	ck_assert_msg(other == id, "the other segment got id %d, not %d", other, id);
	char p[64], want[96];
	snprintf(p, sizeof(p), "%s", case_path("store/s1"));
	int rc = case_ckpt(NULL, NULL, 0, "restore", p, NULL, NULL);
	snprintf(want, sizeof(want), "SysV shared memory id %d is held by another segment", id);
	ck_assert_msg(rc == 1 && strstr(case_ckpt_err(), want), "restore: exit %d, %s", rc, case_ckpt_err());
	ck_assert_msg(kill(pid, 0) < 0 && errno == ESRCH, "pid %d exists", pid);
	struct shmid_ds ds;
	ck_assert_int_eq(shmctl(other, IPC_STAT, &ds), 0);
	ck_assert_int_eq(ds.shm_segsz, 4096);
	ck_assert_int_eq(shmctl(other, IPC_RMID, NULL), 0);
	ck_assert_int_eq(restore("store/s1"), pid);
	verdict(pid);
}
END_TEST

/* target-ipc: a semaphore set and a message queue the tree last used,
 * the child blocked in semop. A set the test itself last used is not the
 * tree's and is not in the snapshot. Dumped with --kill; with removed, both
 * objects are removed before the restore, as on another host. */
static void ipc_cycle(bool removed, bool taken)
{
	int mine = test_semid = semget(IPC_PRIVATE, 1, IPC_CREAT | 0600);
	struct sembuf up = { 0, 1, 0 };
	ck_assert_int_ge(mine, 0);
	ck_assert_int_eq(semop(mine, &up, 1), 0);
	pid_t child;
	pid_t pid = pair_dump("target-ipc", NULL, "--kill", &child);
	char *ipc = NULL, want[64];
	int semid = -1, msqid = -1;
	ck_assert_int_eq(read_file_full(case_path("store/s1/ipc"), &ipc, NULL), 0);
	char *sem = strstr(ipc, "sem id="), *msg = strstr(ipc, "msg id=");
	ck_assert_msg(sem && sscanf(sem, "sem id=%d key=%*x mode=00640 ", &semid) == 1 && strstr(sem, " values=3,0,7\n"),
		      "ipc: %s", ipc);
	ck_assert_msg(msg && sscanf(msg, "msg id=%d ", &msqid) == 1 && strstr(msg, " m=1:"), "ipc: %s", ipc);
	snprintf(want, sizeof(want), "sem id=%d ", mine);
	ck_assert_msg(!strstr(ipc, want), "the test's own set is in the snapshot: %s", ipc);
	free(ipc);
	ck_assert_int_eq(semctl(mine, 0, IPC_RMID), 0);
	test_semid = -1;
	if (removed) {
		ck_assert_int_eq(semctl(semid, 0, IPC_RMID), 0);
		ck_assert_int_eq(msgctl(msqid, IPC_RMID, NULL), 0);
	}
	if (taken) {
		/* the queue's id held by another queue: refused by name, the
		 * set made before it removed again, nothing built */
		int fd = open("/proc/sys/kernel/msg_next_id", O_WRONLY | O_CLOEXEC);
		ck_assert_int_ge(fd, 0);
		ck_assert_int_gt(dprintf(fd, "%d", msqid), 0);
		close(fd);
		int other = msgget(IPC_PRIVATE, IPC_CREAT | 0600);
		ck_assert_msg(other == msqid, "the other queue got id %d, not %d", other, msqid);
		int rc = case_ckpt(NULL, NULL, 0, "restore", case_path("store/s1"), NULL, NULL);
		snprintf(want, sizeof(want), "SysV message queue id %d is held by another one", msqid);
		ck_assert_msg(rc == 1 && strstr(case_ckpt_err(), want), "restore: exit %d, %s", rc, case_ckpt_err());
		ck_assert_msg(kill(pid, 0) < 0 && errno == ESRCH, "pid %d exists", pid);
		struct semid_ds ds;
		ck_assert_msg(semctl(semid, 0, IPC_STAT, &ds) < 0, "the set made by the refused restore is still there");
		ck_assert_int_eq(msgctl(other, IPC_RMID, NULL), 0);
	}
	ck_assert_int_eq(restore("store/s1"), pid);
	verdict(pid);
}

/* A restore that fails once every process is built (fault 211) removes
 * the SysV objects it made; the next one makes them again. */
START_TEST(ipc_fault_restore)
{
	pid_t pid, child;
	int shmid = sysv_dump("--kill", &pid, &child);
	ck_assert_int_eq(shmctl(shmid, IPC_RMID, NULL), 0);
	int rc = case_ckpt("211", NULL, 0, "restore", case_path("store/s1"), NULL, NULL);
	ck_assert_msg(rc == 1 && strstr(case_ckpt_err(), "injected fault"), "restore: exit %d, %s", rc, case_ckpt_err());
	wait_gone(pid);
	wait_gone(child);
	struct shmid_ds ds;
	ck_assert_msg(shmctl(shmid, IPC_STAT, &ds) < 0 && errno == EINVAL, "segment %d is still there", shmid);
	ck_assert_int_eq(restore("store/s1"), pid);
	verdict(pid);
}
END_TEST

START_TEST(ipc_removed) { ipc_cycle(true, false); } END_TEST
START_TEST(ipc_kept) { ipc_cycle(false, false); } END_TEST
START_TEST(ipc_id_taken) { ipc_cycle(true, true); } END_TEST

/* A restore that fails part-way (fault 211 in the second process, the
 * first one built whole) kills every process it made: none of the
 * tree's pids is left; the next restore passes. */
START_TEST(tree_fault_restore)
{
	pid_t kids[16];
	size_t nk;
	pid_t pid = tree_spawn(kids, &nk);
	dump(pid, "--kill", "store/s1");
	for (size_t i = 0; i < nk; i++)
		kill(kids[i], SIGKILL);
	kill_original(pid, "--kill");
	for (size_t i = 0; i < nk; i++)
		wait_gone(kids[i]);
	int rc = case_ckpt("211:2", NULL, 0, "restore", case_path("store/s1"), NULL, NULL);
	ck_assert_msg(rc == 1, "restore with fault 211:2: exit %d", rc);
	ck_assert_msg(strstr(case_ckpt_err(), "injected fault"), "no reason given: %s", case_ckpt_err());
	wait_gone(pid);
	for (size_t i = 0; i < nk; i++)
		wait_gone(kids[i]);
	verdict(restore("store/s1"));
}
END_TEST

/* A snapshot of format 1 (one process, its files at the top, no tree
 * file) still restores: made here from a new one by moving its process's
 * files up and writing the manifest as version 1 wrote it. */
START_TEST(format1_snapshot_restores)
{
	pid_t pid = spawn(NULL, "target-threads", NULL);
	dump(pid, "--kill", "store/s1");
	kill_original(pid, "--kill");
	char cmd[PATH_MAX * 2];
	snprintf(cmd, sizeof(cmd),
		 "cd '%s' && mv %d/* . && rmdir %d && rm tree && n=$(wc -l < manifest) && "
		 "sed -i -e '1s/ 2$/ 1/' -e '/ tree$/d' -e 's# %d/# #' -e \"s/^files .*/files $((n - 5))/\" manifest && "
		 "head -1 manifest | grep -qx 'ckptfs-snapshot 1' && test -f process && test ! -e tree",
		 case_path("store/s1"), pid, pid, pid);
	ck_assert_msg(system(cmd) == 0, "%s", cmd);
	verdict(restore("store/s1"));
}
END_TEST


/* A private file mapping's file changed since the dump: the restore is
 * refused, naming the file and the option, and nothing runs; with
 * --accept-changed-files it runs, and its mapped pages (the file's first
 * eight, which the appended byte leaves alone) are what it had. */
START_TEST(restore_refuses_changed_file)
{
	pid_t pid = spawn(NULL, "target-mem", case_path("mapped-file"));
	dump(pid, "--kill", "store/s1");
	kill_original(pid, "--kill");
	int fd = open(case_path("mapped-file"), O_WRONLY | O_APPEND | O_CLOEXEC);
	ck_assert_int_eq(write_full(fd, "x", 1), 0);
	close(fd);
	ck_assert_int_eq(case_ckpt(NULL, NULL, 0, "restore", case_path("store/s1"), NULL, NULL), 1);
	ck_assert_msg(strstr(case_ckpt_err(), "changed since the checkpoint") && strstr(case_ckpt_err(), "mapped-file") &&
			      strstr(case_ckpt_err(), "--accept-changed-files"),
		      "stderr: %s", case_ckpt_err());
	int st;
	pid_t w = waitpid(pid, &st, 0); /* the half-built one, killed */
	ck_assert(w == pid && WIFSIGNALED(st));
	ck_assert(kill(pid, 0) < 0 && errno == ESRCH);
	char out[64];
	int rc = case_ckpt(NULL, out, sizeof(out), "restore", "--accept-changed-files", case_path("store/s1"), NULL);
	ck_assert_msg(rc == 0, "ckpt restore --accept-changed-files: %s", case_ckpt_err());
	verdict(atoi(out));
}
END_TEST

START_TEST(python_running)
{
	pid_t pid = spawn("/usr/bin/python3", "python.py", NULL);
	dump(pid, NULL, "store/s1");
	kill_original(pid, NULL);
	verdict(restore("store/s1"));
}
END_TEST

/* A Python multiprocessing pool, a tree with threads, pipes and
 * semaphores in shared memory: the same pool works after the restore. */
START_TEST(python_pool_running)
{
	pid_t pid = spawn("/usr/bin/python3", "python-pool.py", NULL);
	pid_t kids[16];
	size_t nk = descendants(pid, kids, 16);
	ck_assert_msg(nk >= 3, "%zu descendants, expected the 3 workers", nk);
	dump(pid, NULL, "store/s1");
	kill(pid, SIGKILL);
	for (size_t i = 0; i < nk; i++)
		kill(kids[i], SIGKILL);
	kill_original(pid, "--kill");
	for (size_t i = 0; i < nk; i++)
		wait_gone(kids[i]);
	verdict(restore("store/s1"));
}
END_TEST

START_TEST(pipe_read_running)
{
	cycle("target-pipe", NULL, NULL);
}
END_TEST

/* ---- PostgreSQL: a real server's tree ------------------------------------ */

/* The newest installed PostgreSQL's bin directory, or NULL. */
static const char *pg_bin(void)
{
	static char bin[128];
	DIR *d = opendir("/usr/lib/postgresql");
	int best = 0;
	struct dirent *de;
	while (d && (de = readdir(d))) {
		char p[160];
		int v = atoi(de->d_name);
		snprintf(p, sizeof(p), "/usr/lib/postgresql/%d/bin/initdb", v);
		if (v > best && access(p, X_OK) == 0) {
			best = v;
			snprintf(bin, sizeof(bin), "/usr/lib/postgresql/%d/bin", v);
		}
	}
	if (d)
		closedir(d);
	return best ? bin : NULL;
}

/* Runs a shell command as uid/gid (the postgres user); returns its exit
 * status, its output (first 4 KiB) in out when not NULL. */
static int run_as(uid_t uid, gid_t gid, char *out, size_t outlen, const char *fmt, ...) _printf_(5, 6);
static int run_as(uid_t uid, gid_t gid, char *out, size_t outlen, const char *fmt, ...)
{
	char cmd[2048];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	int p[2];
	ck_assert_int_eq(pipe2(p, O_CLOEXEC), 0);
	pid_t c = fork();
	ck_assert_int_ge(c, 0);
	if (c == 0) {
		int n = open("/dev/null", O_RDONLY);
		dup2(n, 0);
		dup2(p[1], 1);
		dup2(p[1], 2);
		/* from "/": a checkout may be where that user cannot enter */
		if (setgroups(0, NULL) < 0 || setresgid(gid, gid, gid) < 0 || setresuid(uid, uid, uid) < 0 ||
		    chdir("/") < 0)
			_exit(125);
		execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
		_exit(127);
	}
	close(p[1]);
	ckpt_read_output(p[0], out, outlen);
	int st;
	ck_assert_int_eq(waitpid(c, &st, 0), c);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* A TCP port on 127.0.0.1 nobody listens on now. */
static int free_port(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t l = sizeof(a);
	int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	ck_assert_int_ge(s, 0);
	ck_assert_int_eq(bind(s, (struct sockaddr *)&a, sizeof(a)), 0);
	ck_assert_int_eq(getsockname(s, (struct sockaddr *)&a, &l), 0);
	close(s);
	return ntohs(a.sin_port);
}

/* A PostgreSQL server (the postmaster and its background processes, as
 * the postgres user, with System V and anonymous shared memory, pipes,
 * Unix and TCP listening sockets, latches) with a table of 1000 rows is
 * checkpointed (--kill, or running and then killed), every process of
 * it gone; restored as root, the same postmaster pid runs as postgres,
 * the rows are there, a new connection (a backend forked by the
 * restored postmaster) inserts one more, and it shuts down cleanly, its
 * System V segment detached without a complaint in its log. With
 * remove_segment the segment is removed before the restore, which makes
 * it again. */
static void postgres_cycle(const char *mode, bool remove_segment)
{
	const char *bin = pg_bin();
	struct passwd *pw = getpwnam("postgres");
	if (!bin || !pw) {
		printf("postgres_cycle: PostgreSQL is not installed (postgresql package): nothing to check\n");
		return;
	}
	uid_t u = pw->pw_uid;
	gid_t g = pw->pw_gid;
	char pg[PATH_MAX + 16], out[4096];
	_Static_assert(sizeof(pg) + 32 < PATH_MAX + 64, "pidfile fits");
	snprintf(pg, sizeof(pg), "%s", case_path("pg"));
	ck_assert_int_eq(mkdir(pg, 0700), 0);
	ck_assert_int_eq(chown(pg, u, g), 0);
	/* the test's directory must be reachable by postgres */
	ck_assert_int_eq(chmod(case_path(""), 0755), 0);
	int port = free_port();
	ck_assert_msg(run_as(u, g, out, sizeof(out), "%s/initdb -D %s/data -A trust", bin, pg) == 0, "initdb: %s", out);
	ck_assert_msg(run_as(u, g, out, sizeof(out),
			     "%s/pg_ctl -D %s/data -l %s/log -w -t 60 -o '-p %d -k %s -c listen_addresses=127.0.0.1' start",
			     bin, pg, pg, port, pg) == 0,
		      "pg_ctl start: %s", out);
	char psql[PATH_MAX + 128];
	snprintf(psql, sizeof(psql), "%s/psql -X -h %s -p %d -U postgres -tAc", bin, pg, port);
	ck_assert_msg(run_as(u, g, out, sizeof(out), "%s 'create table t(x int); insert into t select generate_series(1, 1000)'",
			     psql) == 0,
		      "psql: %s", out);
	char pidfile[PATH_MAX + 64], *text = NULL;
	snprintf(pidfile, sizeof(pidfile), "%s/data/postmaster.pid", pg);
	ck_assert_int_eq(read_file_full(pidfile, &text, NULL), 0);
	pid_t pm = atoi(text);
	free(text);
	pid_t kids[32];
	size_t nk = descendants(pm, kids, 32);
	ck_assert_msg(nk >= 3, "the postmaster has %zu children", nk);

	dump(pm, mode, "store/s1");
	if (!mode || strcmp(mode, "--kill")) {
		kill(pm, SIGKILL);
		for (size_t i = 0; i < nk; i++)
			kill(kids[i], SIGKILL);
	}
	wait_gone(pm);
	for (size_t i = 0; i < nk; i++)
		wait_gone(kids[i]);
	if (remove_segment) {
		/* as on another host: its System V segment is made again */
		char *ipc = NULL;
		int id = -1;
		ck_assert_int_eq(read_file_full(case_path("store/s1/ipc"), &ipc, NULL), 0);
		ck_assert_msg(sscanf(ipc, "shm obj=%*u id=%d ", &id) == 1, "ipc: %s", ipc);
		free(ipc);
		ck_assert_int_eq(shmctl(id, IPC_RMID, NULL), 0);
	}
	ck_assert_int_eq(restore("store/s1"), pm);
	char st[64], *status = NULL;
	snprintf(st, sizeof(st), "/proc/%d/status", pm);
	ck_assert_int_eq(read_file_full(st, &status, NULL), 0);
	char want[64];
	snprintf(want, sizeof(want), "\nUid:\t%u\t%u\t%u\t%u\n", u, u, u, u);
	ck_assert_msg(strstr(status, want), "the postmaster's credentials: %s", status);
	free(status);
	ck_assert_msg(run_as(u, g, out, sizeof(out), "%s 'select count(*), sum(x) from t'", psql) == 0, "psql: %s", out);
	ck_assert_msg(!strcmp(out, "1000|500500\n"), "after the restore: %s", out);
	ck_assert_msg(run_as(u, g, out, sizeof(out), "%s 'insert into t values (1001); select count(*) from t'", psql) == 0,
		      "psql: %s", out);
	ck_assert_msg(strstr(out, "1001\n"), "after an insert: %s", out);
	ck_assert_msg(run_as(u, g, out, sizeof(out), "%s/pg_ctl -D %s/data -m fast -w -t 60 stop", bin, pg) == 0,
		      "pg_ctl stop: %s", out);
	wait_gone(pm);
	/* its System V segment came back as itself: detached at shutdown
	 * without a "shmdt(ADDR) failed" */
	char logf[PATH_MAX + 32], *log = NULL;
	snprintf(logf, sizeof(logf), "%s/log", pg);
	ck_assert_int_eq(read_file_full(logf, &log, NULL), 0);
	ck_assert_msg(strstr(log, "database system is shut down"), "no clean shutdown in the log: %s", log);
	ck_assert_msg(!strstr(log, "shmdt"), "the log: %s", log);
	free(log);
}

START_TEST(postgres_kill) { postgres_cycle("--kill", false); } END_TEST
START_TEST(postgres_running) { postgres_cycle(NULL, false); } END_TEST
START_TEST(postgres_segment_removed) { postgres_cycle("--kill", true); } END_TEST

/* ---- nginx: a master and its workers, a listener they share, channels ----
 *
 * nginx -c CONF: the master (root) daemonizes, re-parented to us (the
 * subreaper), and forks two workers running as www-data (or as us when
 * there is no such user). Each worker talks to the master over a Unix
 * socket pair made before the fork, the master's end with O_ASYNC to
 * itself; all three share the listening socket. */

#define NGINX "/usr/sbin/nginx"

/* Whether something listens on the port: a bind of our own says. */
static bool port_free(int port)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int one = 1, fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	bool ok = bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
	close(fd);
	return ok;
}

/* GET / over HTTP/1.0; true when the answer is 200 with nginx's "hello". */
static bool http_hello(int port)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	struct timeval tv = { 5, 0 };
	char buf[1024];
	size_t n = 0;
	ssize_t k;
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return false;
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	static const char req[] = "GET / HTTP/1.0\r\nHost: localhost\r\n\r\n";
	if (connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0 || write(fd, req, sizeof(req) - 1) != sizeof(req) - 1) {
		close(fd);
		return false;
	}
	while (n < sizeof(buf) - 1 && (k = read(fd, buf + n, sizeof(buf) - 1 - n)) > 0)
		n += (size_t)k;
	close(fd);
	buf[n] = 0;
	return !strncmp(buf, "HTTP/1.1 200 ", 13) && strstr(buf, "\r\n\r\nhello\n");
}

struct nginx {
	int port;
	pid_t master, workers[2];
	char user[32];
	uid_t uid; /* the workers' */
};

static uid_t uid_of(pid_t pid)
{
	char p[64];
	_cleanup_free_ char *st = NULL;
	snprintf(p, sizeof(p), "/proc/%d/status", pid);
	if (read_file_full(p, &st, NULL) < 0 || !strstr(st, "\nUid:"))
		return (uid_t)-1;
	return (uid_t)strtoul(strstr(st, "\nUid:") + 5, NULL, 10);
}

/* The master's two children, in pid order. */
static void nginx_workers(pid_t master, pid_t w[2])
{
	char p[64];
	_cleanup_free_ char *ch = NULL;
	int n = 0;
	snprintf(p, sizeof(p), "/proc/%d/task/%d/children", master, master);
	for (int i = 0; i < 10000 && n < 2; i++) {
		free(ch);
		ch = NULL;
		n = read_file_full(p, &ch, NULL) < 0 ? 0 : sscanf(ch, "%d %d", &w[0], &w[1]);
		if (n < 2)
			usleep(1000);
	}
	ck_assert_msg(n == 2, "nginx master %d: no two workers (%s)", master, ch ? ch : "?");
	if (w[0] > w[1]) {
		pid_t t = w[0];
		w[0] = w[1];
		w[1] = t;
	}
}

static void nginx_start(struct nginx *g)
{
	char conf[PATH_MAX + 64], text[1024], *pidtext = NULL;
	struct passwd *pw = getpwnam("www-data");
	int st;

	snprintf(g->user, sizeof(g->user), "%s", pw ? "www-data" : "root");
	g->uid = pw ? pw->pw_uid : 0;
	g->port = free_port();
	snprintf(conf, sizeof(conf), "%s", case_path("nginx.conf"));
	snprintf(text, sizeof(text),
		 "worker_processes 2; user %s; pid %s; error_log %s;\n"
		 "events { worker_connections 64; }\n"
		 "http { access_log off; server { listen 127.0.0.1:%d; location / { return 200 \"hello\\n\"; } } }\n",
		 g->user, case_path("nginx.pid"), case_path("error.log"), g->port);
	FILE *f = fopen(conf, "we");
	ck_assert_ptr_nonnull(f);
	ck_assert_int_eq(fputs(text, f) >= 0 && fclose(f) == 0, 1);
	pid_t pid = case_fork_quiet(-1, NULL);
	if (pid == 0) {
		execl(NGINX, "nginx", "-c", conf, "-p", case_dir, (char *)NULL);
		_exit(127);
	}
	/* it daemonizes: this one returns once the master runs */
	ck_assert_int_eq(waitpid(pid, &st, 0), pid);
	ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "nginx failed to start (status 0x%x)", st);
	case_wait_file(case_path("nginx.pid"), 10000);
	ck_assert_int_eq(read_file_full(case_path("nginx.pid"), &pidtext, NULL), 0);
	g->master = atoi(pidtext);
	free(pidtext);
	ck_assert_int_gt(g->master, 0);
	nginx_workers(g->master, g->workers);
	bool up = false;
	for (int i = 0; i < 100 && !up; i++) {
		up = http_hello(g->port);
		if (!up)
			usleep(50000);
	}
	ck_assert_msg(up, "nginx on port %d does not answer", g->port);
	/* a worker drops to its user a moment after it is forked */
	for (int i = 0; i < 2; i++) {
		for (int k = 0; k < 10000 && uid_of(g->workers[i]) != g->uid; k++)
			usleep(1000);
		ck_assert_msg(uid_of(g->workers[i]) == g->uid, "worker %d runs as uid %u, not %s's", g->workers[i],
			      uid_of(g->workers[i]), g->user);
	}
}

/* Reaps pid (a child of ours, as the subreaper), waiting at most ms. */
static bool reap(pid_t pid, int ms, int *status)
{
	for (int i = 0; i < ms; i++) {
		pid_t r = waitpid(pid, status, WNOHANG);
		if (r == pid)
			return true;
		if (r < 0 && errno != EINTR)
			return false;
		usleep(1000);
	}
	return false;
}

/* Dumps nginx (mode "--kill" or NULL: it runs on, then is killed), makes
 * sure none of it is left and the port is free, restores it, and checks it
 * as the same processes, serving, stopping cleanly through its channels. */
static void nginx_cycle(const char *mode)
{
	struct nginx g;
	char pids[32];
	int st;

	nginx_start(&g);
	uid_t wuid = g.uid;
	snprintf(pids, sizeof(pids), "%d", g.master);
	/* Just started, the master may still have channel descriptors on
	 * their way to a worker (SCM_RIGHTS), which a dump refuses, leaving
	 * nginx as it was: then again, until they have arrived. */
	int rc;
	for (int i = 0;; i++) {
		rc = mode ? case_ckpt(NULL, NULL, 0, "dump", mode, pids, case_path("snap"))
			  : case_ckpt(NULL, NULL, 0, "dump", pids, case_path("snap"), NULL);
		if (rc == 0 || i == 100 || !strstr(case_ckpt_err(), "descriptors queued in a Unix socket"))
			break;
		usleep(50000);
	}
	ck_assert_msg(rc == 0, "ckpt dump %s of nginx failed: %s", mode ? mode : "", case_ckpt_err());
	if (!mode) {
		/* it ran on: still serving, then gone at our hand */
		ck_assert(http_hello(g.port));
		ck_assert_int_eq(kill(g.master, SIGKILL), 0);
		kill(g.workers[0], SIGKILL);
		kill(g.workers[1], SIGKILL);
	}
	/* the master was our child (it daemonized), the workers are once it
	 * is gone: all three reaped, nothing of them left */
	ck_assert_msg(reap(g.master, 10000, &st) && WIFSIGNALED(st), "nginx master %d not killed", g.master);
	for (int i = 0; i < 2; i++)
		ck_assert_msg(reap(g.workers[i], 10000, &st), "nginx worker %d not gone", g.workers[i]);
	ck_assert_msg(port_free(g.port), "port %d still held after the dump", g.port);
	ck_assert(!http_hello(g.port));

	pid_t root = restore("snap");
	ck_assert_int_eq(root, g.master);
	pid_t w[2];
	nginx_workers(root, w);
	ck_assert_msg(w[0] == g.workers[0] && w[1] == g.workers[1], "workers %d %d, were %d %d", w[0], w[1],
		      g.workers[0], g.workers[1]);
	for (int i = 0; i < 2; i++)
		ck_assert_msg(uid_of(w[i]) == wuid && uid_of(w[i]) != (uid_t)-1, "worker %d runs as uid %u, not %u (%s)",
			      w[i], uid_of(w[i]), wuid, g.user);
	ck_assert_int_eq(uid_of(root), 0);
	/* several requests: both workers accept on the shared listener */
	for (int i = 0; i < 10; i++)
		ck_assert_msg(http_hello(g.port), "request %d after the restore: no hello", i);

	/* SIGQUIT: the master tells each worker over its channel to finish,
	 * then exits once both have */
	ck_assert_int_eq(kill(root, SIGQUIT), 0);
	ck_assert_msg(reap(root, 20000, &st), "nginx master %d did not exit after SIGQUIT", root);
	ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "nginx master: status 0x%x", st);
	for (int i = 0; i < 2; i++)
		ck_assert_msg(kill(w[i], 0) < 0 || reap(w[i], 5000, &st), "worker %d still there", w[i]);
	ck_assert(port_free(g.port));
}

START_TEST(nginx_kill)
{
	nginx_cycle("--kill");
}
END_TEST

START_TEST(nginx_running)
{
	nginx_cycle(NULL);
}
END_TEST

/* ---- lazy restore ---------------------------------------------------------- */

/* The first line ckpt writes to fd (restore: the pid), as a number. */
static pid_t read_pid_line(int fd)
{
	char buf[64];
	size_t len = 0;
	while (len < sizeof(buf) - 1 && read(fd, buf + len, 1) == 1 && buf[len] != '\n')
		len++;
	buf[len] = 0;
	return atoi(buf);
}

/* Starts `ckpt restore --lazy` of store/s1 (with fault armed, or none)
 * and returns once it said the pid, which must be want's; *ck: ckpt. */
static void lazy_start(const char *fault, pid_t want, pid_t *ck)
{
	int out;
	*ck = run_ckpt_bg_with(fault, &out, "restore", "--lazy", case_path("store/s1"), NULL);
	pid_t got = read_pid_line(out);
	close(out);
	ck_assert_msg(got == want, "ckpt restore --lazy said pid %d, not %d: %s", got, want, case_ckpt_err());
}

/* The exit status of ckpt, which must exit. */
static int ckpt_exit(pid_t ck)
{
	int st;
	ck_assert_int_eq(waitpid(ck, &st, 0), ck);
	ck_assert_msg(WIFEXITED(st), "ckpt ended by signal %d", WIFSIGNALED(st) ? WTERMSIG(st) : 0);
	return WEXITSTATUS(st);
}

/* pid, restored from store/s1, was killed (SIGKILL) before it could say
 * anything; a plain restore of the same snapshot then works. */
static void assert_killed_then_restores(pid_t pid)
{
	int st;
	ck_assert_msg(waitpid(pid, &st, 0) == pid && WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL,
		      "pid %d not killed (status 0x%x)", pid, st);
	ck_assert_msg(!file_exists(case_path("result")), "pid %d ran on to a verdict", pid);
	verdict(restore("store/s1"));
}

/* target-bigmem of size MiB (with extra, may be NULL) dumped into store/s1
 * (mode: NULL running, or --kill) and gone: its pid. */
static pid_t bigmem_snapshot(const char *size, const char *extra, const char *mode)
{
	pid_t pid = spawn_args(NULL, "target-bigmem", size, extra);
	dump(pid, mode, "store/s1");
	kill_original(pid, mode);
	return pid;
}

/* 512 MiB of checksummed memory restored lazily: told at once that it was
 * restored, the target sums every page in a random order while the fill
 * goes in address order; ckpt exits once all is loaded. */
START_TEST(lazy_bigmem)
{
	pid_t pid = bigmem_snapshot("512", "random", "--kill"), ck;
	lazy_start(NULL, pid, &ck);
	verdict(pid);
	ck_assert_msg(ckpt_exit(ck) == 0, "ckpt restore --lazy failed: %s", case_ckpt_err());
	ck_assert_msg(strstr(case_ckpt_err(), "loaded "), "no progress said: %s", case_ckpt_err());
}
END_TEST

/* While its memory still loads, the process forks a child that reads it
 * all, drops a range (DONTNEED) and moves the whole buffer (mremap): the
 * child and the moved buffer both hold the right bytes. */
START_TEST(lazy_events)
{
	pid_t pid = bigmem_snapshot("512", "events", "--kill"), ck;
	lazy_start(NULL, pid, &ck);
	verdict(pid);
	ck_assert_msg(ckpt_exit(ck) == 0, "ckpt restore --lazy failed: %s", case_ckpt_err());
}
END_TEST

/* A child of pid's, killed with it, comes to us (the subreaper): reaped
 * within 10 s, so that its pid is free for the next restore. */
static void reap_one(pid_t pid)
{
	int st;
	pid_t z = 0;
	for (int i = 0; i < 10000 && z <= 0; i++) {
		z = waitpid(-1, &st, WNOHANG);
		if (z <= 0)
			usleep(1000);
	}
	ck_assert_msg(z > 0, "the child of pid %d was not reaped", pid);
}

/* A tree: parent and child each with 256 MiB of their own, loaded each
 * through its own userfaultfd; both check their sums, ckpt says the
 * load of both together. */
START_TEST(lazy_tree)
{
	pid_t pid = bigmem_snapshot("256", "tree", "--kill"), ck;
	reap_one(pid);
	lazy_start(NULL, pid, &ck);
	verdict(pid);
	ck_assert_msg(ckpt_exit(ck) == 0, "ckpt restore --lazy failed: %s", case_ckpt_err());
	ck_assert_msg(strstr(case_ckpt_err(), "loaded "), "no progress said: %s", case_ckpt_err());
}
END_TEST

/* A page of the tree's snapshot that cannot be read (fault 213 on the
 * 20th read, in either process's load): every process of the tree is
 * killed, with the reason; a plain restore then works. */
START_TEST(lazy_tree_read_fault)
{
	pid_t pid = bigmem_snapshot("64", "tree", "--kill"), ck;
	reap_one(pid);
	lazy_start("213:20", pid, &ck);
	ck_assert_int_eq(ckpt_exit(ck), 1);
	const char *e = case_ckpt_err();
	ck_assert_msg(strstr(e, "killed") && strstr(e, "memory/") && strstr(e, "injected fault"),
		      "no reason given: %s", e);
	int st;
	ck_assert_msg(waitpid(pid, &st, 0) == pid && WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL,
		      "pid %d not killed (status 0x%x)", pid, st);
	reap_one(pid);
	ck_assert_msg(!file_exists(case_path("result")), "pid %d ran on to a verdict", pid);
	verdict(restore("store/s1"));
}
END_TEST

/* Lazily restored while it still runs, with its random swaps going on
 * during the load. */
START_TEST(lazy_bigmem_running)
{
	pid_t pid = bigmem_snapshot("256", NULL, NULL), ck;
	lazy_start(NULL, pid, &ck);
	ck_assert_msg(ckpt_exit(ck) == 0, "ckpt restore --lazy failed: %s", case_ckpt_err());
	verdict(pid);
}
END_TEST

/* A page of the snapshot that cannot be read (fault 213 on the 20th
 * read) kills the process with the reason; it never runs on. */
START_TEST(lazy_read_fault)
{
	pid_t pid = bigmem_snapshot("128", NULL, "--kill"), ck;
	lazy_start("213:20", pid, &ck);
	ck_assert_int_eq(ckpt_exit(ck), 1);
	const char *e = case_ckpt_err();
	ck_assert_msg(strstr(e, "killed") && strstr(e, "memory/") && strstr(e, "injected fault"),
		      "no reason given: %s", e);
	assert_killed_then_restores(pid);
}
END_TEST

/* The userfaultfd cannot be made (fault 212): the restore fails, saying
 * so, and what it built is killed. */
START_TEST(lazy_uffd_fault)
{
	pid_t pid = bigmem_snapshot("64", NULL, "--kill");
	int rc = case_ckpt("212", NULL, 0, "restore", "--lazy", case_path("store/s1"), NULL);
	ck_assert_int_eq(rc, 1);
	ck_assert_msg(strstr(case_ckpt_err(), "userfaultfd: injected fault"), "no reason given: %s", case_ckpt_err());
	assert_killed_then_restores(pid);
}
END_TEST

/* The loader dies before its first copy (fault 227): the guardian kills
 * the process rather than let it run on with zero pages. */
START_TEST(lazy_loader_dies)
{
	pid_t pid = bigmem_snapshot("64", NULL, "--kill"), ck;
	lazy_start("227", pid, &ck);
	int st;
	ck_assert_int_eq(waitpid(ck, &st, 0), ck);
	ck_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
	/* told it was restored, it would sum zeros and fail: it must be dead */
	int fd = open(case_path("ready.restored"), O_WRONLY | O_CREAT, 0600);
	close(fd);
	assert_killed_then_restores(pid);
}
END_TEST


/* ---- pre-copy (engine/precopy.c) ---------------------------------------- */

static bool uffd_left(pid_t pid, char *why, size_t len)
{
	char p[64];
	snprintf(p, sizeof(p), "/proc/%d/fd", pid);
	DIR *d = opendir(p);
	ck_assert_ptr_nonnull(d);
	struct dirent *de;
	bool found = false;
	while (!found && (de = readdir(d))) {
		char fp[384], link[256] = "";
		snprintf(fp, sizeof(fp), "%s/%s", p, de->d_name);
		ssize_t n = readlink(fp, link, sizeof(link) - 1);
		if (n > 0 && strstr(link, "userfaultfd")) {
			snprintf(why, len, "fd %s is %s", de->d_name, link);
			found = true;
		}
	}
	closedir(d);
	_cleanup_free_ char *smaps = NULL;
	snprintf(p, sizeof(p), "/proc/%d/smaps", pid);
	ck_assert_int_eq(read_file_full(p, &smaps, NULL), 0);
	for (char *l = strstr(smaps, "VmFlags:"); !found && l; l = strstr(l + 1, "VmFlags:")) {
		size_t n = strcspn(l, "\n");
		char line[256];
		snprintf(line, sizeof(line), "%.*s", (int)MIN(n, sizeof(line) - 1), l);
		if (strstr(line, " uw")) {
			snprintf(why, len, "an area is still registered for write protection: %s", line);
			found = true;
		}
	}
	return found;
}

/* No userfaultfd in pid, no area of it registered (smaps "uw"), within
 * 10 s (a dumper that died has its descriptors closed as it exits). */
static void assert_no_uffd(pid_t pid)
{
	char why[512] = "";
	for (int i = 0; i < 10000 && uffd_left(pid, why, sizeof(why)); i++)
		usleep(1000);
	ck_assert_msg(!uffd_left(pid, why, sizeof(why)), "pid %d: %s", pid, why);
}

/* target-precopy of mib MiB writing rate pages a millisecond ("fast"),
 * dumped running with flag (NULL or --no-pre-copy); the last line of
 * ckpt must name how memory was taken (want); no tracking stays in it;
 * restored, it finds every byte it wrote before the freeze. */
static void precopy_cycle(const char *mib, const char *rate, const char *flag, const char *fault, const char *want)
{
	pid_t pid = spawn_args(NULL, "target-precopy", mib, rate);
	char p[32];
	snprintf(p, sizeof(p), "%d", pid);
	int rc = flag ? case_ckpt(fault, NULL, 0, "dump", flag, p, case_path("store/s1"))
		      : case_ckpt(fault, NULL, 0, "dump", p, case_path("store/s1"), NULL);
	ck_assert_msg(rc == 0, "ckpt dump failed: %s", case_ckpt_err());
	ck_assert_msg(strstr(case_ckpt_err(), want), "dump does not say '%s': %s", want, case_ckpt_err());
	assert_untouched_n(pid, 1);
	assert_no_uffd(pid);
	kill_original(pid, NULL);
	verdict(restore("store/s1"));
}

START_TEST(precopy_writer) { precopy_cycle("64", "20", NULL, NULL, "memory: pre-copy, "); } END_TEST
/* A writer faster than the copy: one thread here dirties pages slower
 * than we copy them (each first write after the protection is a fault),
 * so fault 237 makes every round count as leaving as much as the one
 * before; the writer runs as fast as it can all the same. */
START_TEST(precopy_fast_falls_back)
{
	precopy_cycle("64", "fast", NULL, "237", "memory: stop-and-copy: pre-copy did not converge");
}
END_TEST
/* A writer that also drops pages (MADV_DONTNEED: single pages and whole
 * 2 MiB pieces, huge pages where it gets them) after they were copied,
 * and goes on for 300 ms between the last round and the freeze (fault
 * 416): the freeze's short walk (written pages only) must read them
 * again, zeros, not save the copy taken before; and the same through the
 * whole walk of every entry (fault 417, as on a kernel whose short walk
 * misses dropped pages). */
START_TEST(precopy_drops) { precopy_cycle("64", "20z", NULL, "416", "memory: pre-copy, "); } END_TEST
START_TEST(precopy_drops_long_walk) { precopy_cycle("64", "20z", NULL, "416,417", "memory: pre-copy, "); } END_TEST
START_TEST(precopy_off) { precopy_cycle("64", "20", "--no-pre-copy", NULL, "memory: stop-and-copy: pre-copy turned off"); } END_TEST
/* "N MiB of memory" (or KiB, B) of ckpt's last line, in bytes */
static double dumped_bytes(const char *err)
{
	const char *m = strstr(err, " of memory");
	ck_assert_msg(m, "no size in: %s", err);
	const char *b = m;
	while (b > err && b[-1] != ',' && b[-1] != ':')
		b--;
	double v = strtod(b, NULL);
	const char *u = strpbrk(b, "KMG");
	if (u && u < m)
		v *= *u == 'K' ? 1024.0 : *u == 'M' ? 1048576.0 : 1073741824.0;
	return v;
}

/* A quarter of the area never touched, and a 256 GiB reservation with
 * four pages in it: pre-copy saves no more than the copy while frozen
 * (a page it protects before it was ever touched is no page to save),
 * leaves the reservation to the frozen copy (protecting it page by page
 * would take minutes and gigabytes of page tables), and the restored
 * process finds all it had. */
START_TEST(precopy_sparse)
{
	const char *args[] = { "64", "0", "256", NULL };
	pid_t pid = spawn_argv(NULL, "target-precopy", args);
	char p[32];
	snprintf(p, sizeof(p), "%d", pid);
	ck_assert_msg(case_ckpt(NULL, NULL, 0, "dump", "--no-pre-copy", p, case_path("store/s0")) == 0, "%s", case_ckpt_err());
	double frozen = dumped_bytes(case_ckpt_err());
	ck_assert_msg(case_ckpt(NULL, NULL, 0, "dump", p, case_path("store/s1"), NULL) == 0, "%s", case_ckpt_err());
	ck_assert_msg(strstr(case_ckpt_err(), "memory: pre-copy, "), "not pre-copied: %s", case_ckpt_err());
	double pre = dumped_bytes(case_ckpt_err());
	ck_assert_msg(pre <= frozen * 1.01, "pre-copy saved %.0f bytes, the frozen copy %.0f", pre, frozen);
	assert_untouched_n(pid, 1);
	assert_no_uffd(pid);
	kill_original(pid, NULL);
	verdict(restore("store/s1"));
}
END_TEST

/* the areas of a process that does not write are pre-copied in two rounds */
START_TEST(precopy_bigmem) { cycle("target-bigmem", "64", NULL); } END_TEST

/* A fault in pre-copy: the dump falls back to the copy while frozen (or,
 * frozen, fails), the process runs on untouched with no userfaultfd and
 * no protection, and its own check of everything it wrote passes: its
 * writes went on normally. */
static void precopy_fault(const char *fault, bool fails, const char *want)
{
	pid_t pid = spawn_args(NULL, "target-precopy", "64", "20");
	char p[32];
	snprintf(p, sizeof(p), "%d", pid);
	int rc = case_ckpt(fault, NULL, 0, "dump", p, case_path("store/s1"), NULL);
	if (fails) {
		ck_assert_msg(rc == 1, "dump with fault %s: exit %d", fault, rc);
		ck_assert(!file_exists(case_path("store/s1")));
	} else {
		ck_assert_msg(rc == 0, "dump with fault %s failed: %s", fault, case_ckpt_err());
	}
	ck_assert_msg(strstr(case_ckpt_err(), want), "fault %s: the dump does not say '%s': %s", fault, want,
		      case_ckpt_err());
	assert_untouched_n(pid, 1);
	assert_no_uffd(pid);
	verdict(pid);
}

START_TEST(precopy_fault_uffd) { precopy_fault("230", false, "stop-and-copy: pid"); } END_TEST
START_TEST(precopy_fault_take) { precopy_fault("231", false, "taking its userfaultfd"); } END_TEST
START_TEST(precopy_fault_register) { precopy_fault("232", false, "registering"); } END_TEST
START_TEST(precopy_fault_copy) { precopy_fault("233:3", false, "stop-and-copy: pre-copy round"); } END_TEST
START_TEST(precopy_fault_untrack) { precopy_fault("234", false, "memory: pre-copy, "); } END_TEST

/* The dumper dies: while the userfaultfd is in the process (the keeper
 * closes it there), and in the middle of pre-copy (the kernel closes
 * ours, which removes the protection). */
static void precopy_dies(const char *fault)
{
	pid_t pid = spawn_args(NULL, "target-precopy", "64", "20");
	char p[32];
	snprintf(p, sizeof(p), "%d", pid);
	char *maps0 = maps_of(pid);
	int st = case_ckpt_status(fault, NULL, 0, "dump", p, case_path("store/bad"), NULL);
	ck_assert_msg(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "ckpt dump with fault %s: status 0x%x: %s",
		      fault, st, case_ckpt_err());
	wait_let_go(pid);
	assert_untouched_n(pid, 1);
	assert_no_uffd(pid);
	char *maps1 = maps_of(pid);
	ck_assert_msg(!strcmp(maps0, maps1), "mappings changed:\n%s---\n%s", maps0, maps1);
	free(maps0);
	free(maps1);
	ck_assert(!file_exists(case_path("store/bad")));
	verdict(pid);
}

START_TEST(precopy_die_uffd) { precopy_dies("235"); } END_TEST
START_TEST(precopy_die_round) { precopy_dies("236"); } END_TEST

static TCase *tc(const char *name, const TTest *t, int timeout)
{
	TCase *c = tcase_create(name);
	tcase_add_checked_fixture(c, setup, teardown);
	tcase_set_timeout(c, timeout);
	tcase_add_test(c, t);
	return c;
}

int main(int argc, char **argv)
{
	const char *only = argc > 1 ? argv[1] : NULL;
	int r = case_env("ptrace of non-children, clone3 set_tid, PR_SET_MM_MAP");
	if (r)
		return r;
	Suite *s = suite_create("engine");
	if (only && !strcmp(only, "python")) {
		if (access("/usr/bin/python3", X_OK) < 0) {
			printf("skipped: /usr/bin/python3 is not installed\n");
			return 77;
		}
		suite_add_tcase(s, tc("python_running", python_running, 60));
		suite_add_tcase(s, tc("python_pool_running", python_pool_running, 120));
	} else if (only && !strcmp(only, "precopy")) {
		suite_add_tcase(s, tc("precopy_writer", precopy_writer, 90));
		suite_add_tcase(s, tc("precopy_fast_falls_back", precopy_fast_falls_back, 90));
		suite_add_tcase(s, tc("precopy_off", precopy_off, 90));
		suite_add_tcase(s, tc("precopy_drops", precopy_drops, 90));
		suite_add_tcase(s, tc("precopy_drops_long_walk", precopy_drops_long_walk, 90));
		suite_add_tcase(s, tc("precopy_bigmem", precopy_bigmem, 90));
		suite_add_tcase(s, tc("precopy_sparse", precopy_sparse, 120));
		suite_add_tcase(s, tc("precopy_fault_uffd", precopy_fault_uffd, 90));
		suite_add_tcase(s, tc("precopy_fault_take", precopy_fault_take, 90));
		suite_add_tcase(s, tc("precopy_fault_register", precopy_fault_register, 90));
		suite_add_tcase(s, tc("precopy_fault_copy", precopy_fault_copy, 90));
		suite_add_tcase(s, tc("precopy_fault_untrack", precopy_fault_untrack, 90));
		suite_add_tcase(s, tc("precopy_die_uffd", precopy_die_uffd, 90));
		suite_add_tcase(s, tc("precopy_die_round", precopy_die_round, 90));
	} else if (only && !strcmp(only, "die")) {
		suite_add_tcase(s, tc("die_seized", die_seized, 60));
		suite_add_tcase(s, tc("die_inject", die_inject, 60));
		suite_add_tcase(s, tc("die_inject_thread", die_inject_thread, 60));
		suite_add_tcase(s, tc("die_inject_munmap", die_inject_munmap, 60));
		suite_add_tcase(s, tc("die_inject_one", die_inject_one, 60));
		suite_add_tcase(s, tc("die_sigmask", die_sigmask, 60));
		suite_add_tcase(s, tc("die_sigmask_threads", die_sigmask_threads, 60));
		suite_add_tcase(s, tc("die_memory", die_memory, 60));
		suite_add_tcase(s, tc("die_memory_kill", die_memory_kill, 60));
		suite_add_tcase(s, tc("die_fds", die_fds, 60));
		suite_add_tcase(s, tc("die_write", die_write, 60));
		suite_add_tcase(s, tc("die_commit_kill", die_commit_kill, 60));
		suite_add_tcase(s, tc("die_commit_stop", die_commit_stop, 60));
	} else if (only && !strcmp(only, "tree")) {
		suite_add_tcase(s, tc("tree_shell_job", tree_shell_job, 60));
		suite_add_tcase(s, tc("format1_snapshot_restores", format1_snapshot_restores, 60));
		suite_add_tcase(s, tc("tree_running", tree_running, 90));
		suite_add_tcase(s, tc("tree_kill", tree_kill, 90));
		suite_add_tcase(s, tc("tree_stop", tree_stop, 90));
		suite_add_tcase(s, tc("tree_fault_dump", tree_fault_dump, 90));
		suite_add_tcase(s, tc("tree_fault_restore", tree_fault_restore, 90));
		suite_add_tcase(s, tc("tree_refuses_vfork", tree_refuses_vfork, 60));
		suite_add_tcase(s, tc("share_files_running", share_files_running, 60));
		suite_add_tcase(s, tc("share_files_kill", share_files_kill, 60));
		suite_add_tcase(s, tc("share_fs_running", share_fs_running, 60));
		suite_add_tcase(s, tc("share_fs_stop", share_fs_stop, 60));
		suite_add_tcase(s, tc("tree_refuses_files_without_parent", tree_refuses_files_without_parent, 60));
		suite_add_tcase(s, tc("posixshm_kill", posixshm_kill, 60));
		suite_add_tcase(s, tc("posixshm_running", posixshm_running, 60));
		suite_add_tcase(s, tc("posixshm_removed", posixshm_removed, 60));
		suite_add_tcase(s, tc("sysv_kill", sysv_kill, 60));
		suite_add_tcase(s, tc("sysv_running", sysv_running, 60));
		suite_add_tcase(s, tc("sysv_removed", sysv_removed, 60));
		suite_add_tcase(s, tc("sysv_id_taken", sysv_id_taken, 60));
		suite_add_tcase(s, tc("ipc_removed", ipc_removed, 60));
		suite_add_tcase(s, tc("ipc_kept", ipc_kept, 60));
		suite_add_tcase(s, tc("ipc_id_taken", ipc_id_taken, 60));
		suite_add_tcase(s, tc("ipc_fault_restore", ipc_fault_restore, 60));
		suite_add_tcase(s, tc("dump_refuses_posix_lock_on_mapped_file", dump_refuses_posix_lock_on_mapped_file, 60));
	} else if (only && !strcmp(only, "nginx")) {
		if (access(NGINX, X_OK) < 0) {
			printf("skipped: %s is not installed (apt-get install nginx-light)\n", NGINX);
			return 77;
		}
		suite_add_tcase(s, tc("nginx_kill", nginx_kill, 90));
		suite_add_tcase(s, tc("nginx_running", nginx_running, 90));
	} else if (only && !strcmp(only, "attrs")) {
		suite_add_tcase(s, tc("attrs_running", attrs_running, 60));
		suite_add_tcase(s, tc("attrs_kill", attrs_kill, 60));
		suite_add_tcase(s, tc("attrs_stop", attrs_stop, 60));
		suite_add_tcase(s, tc("advice_running", advice_running, 60));
		suite_add_tcase(s, tc("advice_kill", advice_kill, 60));
		suite_add_tcase(s, tc("advice_stop", advice_stop, 60));
		suite_add_tcase(s, tc("fault_restore_attrs", fault_restore_attrs, 60));
		suite_add_tcase(s, tc("fault_restore_advice", fault_restore_advice, 60));
		suite_add_tcase(s, tc("sched_running", sched_running, 60));
		suite_add_tcase(s, tc("sched_kill", sched_kill, 60));
		suite_add_tcase(s, tc("sched_stop", sched_stop, 60));
		suite_add_tcase(s, tc("refuse_deadline", refuse_deadline, 60));
		suite_add_tcase(s, tc("refuse_io_flusher", refuse_io_flusher, 60));
		suite_add_tcase(s, tc("refuse_sealed", refuse_sealed, 60));
		suite_add_tcase(s, tc("fault_restore_sched", fault_restore_sched, 60));
	} else if (only && !strcmp(only, "creds")) {
		suite_add_tcase(s, tc("seccomp_running", seccomp_running, 60));
		suite_add_tcase(s, tc("seccomp_kill", seccomp_kill, 60));
		suite_add_tcase(s, tc("creds_running", creds_running, 60));
		suite_add_tcase(s, tc("creds_stop", creds_stop, 60));
		suite_add_tcase(s, tc("user_restore_refuses_root_creds", user_restore_refuses_root_creds, 60));
	} else if (only && !strcmp(only, "postgres")) {
		if (!pg_bin() || !getpwnam("postgres")) {
			printf("skipped: PostgreSQL is not installed (the postgresql package; ./setup --deps installs it)\n");
			return 77;
		}
		suite_add_tcase(s, tc("postgres_kill", postgres_kill, 180));
		suite_add_tcase(s, tc("postgres_running", postgres_running, 180));
		suite_add_tcase(s, tc("postgres_segment_removed", postgres_segment_removed, 180));
	} else if (only && !strcmp(only, "pid")) {
		suite_add_tcase(s, tc("restore_pid_in_use", restore_pid_in_use, 60));
		suite_add_tcase(s, tc("restore_waits_for_zombie", restore_waits_for_zombie, 120));
		suite_add_tcase(s, tc("restore_zombie_not_reaped", restore_zombie_not_reaped, 120));
	} else if (only && !strcmp(only, "lazy")) {
		suite_add_tcase(s, tc("lazy_bigmem", lazy_bigmem, 120));
		suite_add_tcase(s, tc("lazy_bigmem_running", lazy_bigmem_running, 120));
		suite_add_tcase(s, tc("lazy_events", lazy_events, 120));
		suite_add_tcase(s, tc("lazy_tree", lazy_tree, 120));
		suite_add_tcase(s, tc("lazy_tree_read_fault", lazy_tree_read_fault, 120));
		suite_add_tcase(s, tc("lazy_read_fault", lazy_read_fault, 90));
		suite_add_tcase(s, tc("lazy_uffd_fault", lazy_uffd_fault, 90));
		suite_add_tcase(s, tc("lazy_loader_dies", lazy_loader_dies, 90));
	} else if (only && !strcmp(only, "pipe")) {
		if (getenv("ENGINE_FDS_FALLBACK")) {
			printf("skipped: this build has no descriptor support (pipes): engine/fds/fds-fallback.c only\n");
			return 77;
		}
		suite_add_tcase(s, tc("pipe_read_running", pipe_read_running, 60));
	} else {
		suite_add_tcase(s, tc("mem_running", mem_running, 60));
		suite_add_tcase(s, tc("mem_kill", mem_kill, 60));
		suite_add_tcase(s, tc("mem_stop", mem_stop, 60));
		suite_add_tcase(s, tc("threads_running", threads_running, 60));
		suite_add_tcase(s, tc("threads_kill", threads_kill, 60));
		suite_add_tcase(s, tc("threads_stop", threads_stop, 60));
		suite_add_tcase(s, tc("sleep_running", sleep_running, 60));
		suite_add_tcase(s, tc("sleep_kill", sleep_kill, 60));
		suite_add_tcase(s, tc("sleep_stop", sleep_stop, 60));
		suite_add_tcase(s, tc("signals_running", signals_running, 60));
		suite_add_tcase(s, tc("signals_original", signals_original, 60));
		suite_add_tcase(s, tc("signals_no_runner", signals_no_runner, 60));
		suite_add_tcase(s, tc("signals_kill", signals_kill, 60));
		suite_add_tcase(s, tc("signals_stop", signals_stop, 60));
		suite_add_tcase(s, tc("regs_running", regs_running, 60));
		suite_add_tcase(s, tc("regs_kill", regs_kill, 60));
		suite_add_tcase(s, tc("regs_stop", regs_stop, 60));
		suite_add_tcase(s, tc("bigmem_running", bigmem_running, 90));
		suite_add_tcase(s, tc("bigmem_no_arena", bigmem_no_arena, 90));
		suite_add_tcase(s, tc("posix_timers", posix_timers, 60));
		suite_add_tcase(s, tc("bigmem_1g_running", bigmem_1g_running, 240));
		suite_add_tcase(s, tc("bigmem_1g_kill", bigmem_1g_kill, 240));
		suite_add_tcase(s, tc("dump_twice_restore_first_last", dump_twice_restore_first_last, 60));
		suite_add_tcase(s, tc("dump_twice_mem", dump_twice_mem, 60));
		suite_add_tcase(s, tc("redump_restored", redump_restored, 60));
		suite_add_tcase(s, tc("stopped_stays_stopped", stopped_stays_stopped, 60));
		suite_add_tcase(s, tc("fault_seize", fault_seize, 60));
		suite_add_tcase(s, tc("fault_regs", fault_regs, 60));
		suite_add_tcase(s, tc("fault_batch", fault_batch, 60));
		suite_add_tcase(s, tc("fault_memory", fault_memory, 60));
		suite_add_tcase(s, tc("fault_memory_kill", fault_memory_kill, 60));
		suite_add_tcase(s, tc("fault_commit_stop", fault_commit_stop, 60));
		suite_add_tcase(s, tc("fault_fds", fault_fds, 60));
		suite_add_tcase(s, tc("fault_write", fault_write, 60));
		suite_add_tcase(s, tc("fault_commit", fault_commit, 60));
		suite_add_tcase(s, tc("fault_restore_map", fault_restore_map, 60));
		suite_add_tcase(s, tc("fault_restore_late", fault_restore_late, 60));
		suite_add_tcase(s, tc("dump_refuses_traced", dump_refuses_traced, 60));
		suite_add_tcase(s, tc("dump_refuses_raw_socket", dump_refuses_raw_socket, 60));
		suite_add_tcase(s, tc("restore_refuses_other_vdso", restore_refuses_other_vdso, 60));
		suite_add_tcase(s, tc("dump_refuses_posix_timer", dump_refuses_posix_timer, 60));
		suite_add_tcase(s, tc("restore_refuses_timer_of_unknown_thread", restore_refuses_timer_of_unknown_thread,
				      60));
		suite_add_tcase(s, tc("restore_refuses_changed_file", restore_refuses_changed_file, 60));
	}
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
