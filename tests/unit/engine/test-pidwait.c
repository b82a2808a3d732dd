/*
 * engine/tree/pidwait.c: pids_wait_free() against real tasks of our own (no
 * root needed): a free ID passes; a zombie child is waited for, reported
 * with us as the parent, and passes once reaped (by a thread of ours
 * meanwhile) or fails at the bound naming it; a live child, a live thread
 * and a leader that exited while its thread runs on (state Z too) are
 * refused at once, unreported.
 */
#include <check.h>
#include <pthread.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "engine/engine-int.h"

struct seen {
	unsigned calls;
	struct pid_wait last;
};

static void on_wait(const struct pid_wait *w, void *ud)
{
	struct seen *s = ud;
	s->calls++;
	s->last = *w;
}

static pid_t zombie(void)
{
	pid_t pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0)
		_exit(0);
	/* a zombie once it exited: WNOWAIT looks without reaping */
	siginfo_t si;
	ck_assert_int_eq(waitid(P_PID, (id_t)pid, &si, WEXITED | WNOWAIT), 0);
	return pid;
}

static pid_t sleeper(void)
{
	pid_t pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		pause();
		_exit(0);
	}
	return pid;
}

static void reap(pid_t pid)
{
	ck_assert_int_eq(waitpid(pid, NULL, 0), pid);
}

START_TEST(free_id)
{
	pid_t pid = zombie();
	reap(pid);
	struct seen s = { 0 };
	ck_assert_int_eq(pids_wait_free(&pid, 1, 1000, on_wait, &s), 0);
	ck_assert_int_eq(s.calls, 0);
}
END_TEST

START_TEST(zombie_times_out)
{
	pid_t z = zombie();
	/* a free ID first, then the zombie */
	pid_t gone = zombie();
	reap(gone);
	pid_t ids[2] = { gone, z };
	struct seen s = { 0 };
	uint64_t t0 = now_ns();
	int r = pids_wait_free(ids, 2, 200, on_wait, &s);
	uint64_t took = now_ns() - t0;
	ck_assert_int_eq(r, -EEXIST);
	char want[128];
	snprintf(want, sizeof(want), "pid %d is in use by a zombie", z);
	ck_assert_msg(strstr(err_msg(), want), "%s", err_msg());
	snprintf(want, sizeof(want), "its parent %d (", getpid());
	ck_assert_msg(strstr(err_msg(), want), "%s", err_msg());
	ck_assert_msg(strstr(err_msg(), "within 0.2 s"), "%s", err_msg());
	ck_assert_msg(took >= 200000000ull, "gave up after %llu ns", (unsigned long long)took);
	ck_assert_uint_ge(s.calls, 1);
	ck_assert_int_eq(s.last.id, z);
	ck_assert_int_eq(s.last.parent, getpid());
	ck_assert(s.last.zombie);
	ck_assert_uint_eq(s.last.timeout_ms, 200);
	/* 0: no wait at all, the same refusal */
	s.calls = 0;
	ck_assert_int_eq(pids_wait_free(&z, 1, 0, on_wait, &s), -EEXIST);
	ck_assert_int_eq(s.calls, 0);
	ck_assert_msg(strstr(err_msg(), "did not reap") && !strstr(err_msg(), "within"), "%s", err_msg());
	reap(z);
}
END_TEST

static void *reap_when_told(void *arg)
{
	pid_t pid = *(pid_t *)arg;
	return (void *)(intptr_t)waitpid(pid, NULL, 0);
}

static pid_t reap_target;
static pthread_t reaper;

/* The reap happens from the callback's first call: the wait saw the
 * zombie, and it must then see the ID free. */
static void reap_on_wait(const struct pid_wait *w, void *ud)
{
	on_wait(w, ud);
	if (((struct seen *)ud)->calls == 1)
		ck_assert_int_eq(pthread_create(&reaper, NULL, reap_when_told, &reap_target), 0);
}

START_TEST(zombie_reaped_meanwhile)
{
	reap_target = zombie();
	struct seen s = { 0 };
	/* a bound far above what the test needs: the reap decides */
	ck_assert_int_eq(pids_wait_free(&reap_target, 1, 60000, reap_on_wait, &s), 0);
	ck_assert_uint_ge(s.calls, 1);
	ck_assert_int_eq(s.last.parent, getpid());
	void *ret;
	ck_assert_int_eq(pthread_join(reaper, &ret), 0);
	ck_assert_int_eq((pid_t)(intptr_t)ret, reap_target);
}
END_TEST

START_TEST(live_refused_at_once)
{
	pid_t pid = sleeper();
	struct seen s = { 0 };
	ck_assert_int_eq(pids_wait_free(&pid, 1, 60000, on_wait, &s), -EEXIST);
	ck_assert_int_eq(s.calls, 0);
	char want[64];
	snprintf(want, sizeof(want), "pid %d is in use by live process", pid);
	ck_assert_msg(strstr(err_msg(), want), "%s", err_msg());
	kill(pid, SIGKILL);
	reap(pid);
}
END_TEST

static void *park(void *arg)
{
	pid_t *tid = arg;
	__atomic_store_n(tid, (pid_t)syscall(SYS_gettid), __ATOMIC_SEQ_CST);
	pause();
	return NULL;
}

START_TEST(live_thread_refused_at_once)
{
	pid_t tid = 0;
	pthread_t t;
	ck_assert_int_eq(pthread_create(&t, NULL, park, &tid), 0);
	for (int i = 0; i < 10000 && !__atomic_load_n(&tid, __ATOMIC_SEQ_CST); i++)
		usleep(1000);
	ck_assert_int_gt(tid, 0);
	struct seen s = { 0 };
	ck_assert_int_eq(pids_wait_free(&tid, 1, 60000, on_wait, &s), -EEXIST);
	ck_assert_int_eq(s.calls, 0);
	char want[96];
	snprintf(want, sizeof(want), "thread id %d is in use by a thread of live pid %d", tid, getpid());
	ck_assert_msg(strstr(err_msg(), want), "%s", err_msg());
}
END_TEST

/* The leader called pthread_exit(): /proc shows it as Z, yet its thread
 * runs on and nobody's reap would free the pid. */
START_TEST(exited_leader_refused_at_once)
{
	int p[2];
	ck_assert_int_eq(pipe(p), 0);
	pid_t pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		pthread_t t;
		pid_t tid = 0;
		if (pthread_create(&t, NULL, park, &tid) != 0)
			_exit(1);
		ssize_t k = write(p[1], "x", 1);
		(void)k;
		pthread_exit(NULL);
	}
	char c;
	ck_assert_int_eq(read(p[0], &c, 1), 1);
	/* until the leader has exited, it is just live */
	char path[64], *st = NULL;
	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	for (int i = 0; i < 10000; i++) {
		free(st);
		st = NULL;
		read_file_full(path, &st, NULL);
		if (st && strstr(st, ") Z "))
			break;
		usleep(1000);
	}
	ck_assert_msg(st && strstr(st, ") Z "), "leader not exited: %s", st);
	free(st);
	struct seen s = { 0 };
	ck_assert_int_eq(pids_wait_free(&pid, 1, 60000, on_wait, &s), -EEXIST);
	ck_assert_int_eq(s.calls, 0);
	ck_assert_msg(strstr(err_msg(), "its main thread exited"), "%s", err_msg());
	kill(pid, SIGKILL);
	reap(pid);
}
END_TEST

static TCase *tc(const char *name, const TTest *t)
{
	TCase *c = tcase_create(name);
	tcase_set_timeout(c, 60);
	tcase_add_test(c, t);
	return c;
}

int main(void)
{
	Suite *s = suite_create("engine-pidwait");
	suite_add_tcase(s, tc("free_id", free_id));
	suite_add_tcase(s, tc("zombie_times_out", zombie_times_out));
	suite_add_tcase(s, tc("zombie_reaped_meanwhile", zombie_reaped_meanwhile));
	suite_add_tcase(s, tc("live_refused_at_once", live_refused_at_once));
	suite_add_tcase(s, tc("live_thread_refused_at_once", live_thread_refused_at_once));
	suite_add_tcase(s, tc("exited_leader_refused_at_once", exited_leader_refused_at_once));
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
