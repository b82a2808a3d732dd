/* See ckpt-run.h. */
#include <check.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/common.h"
#include "tests/integration/ckpt-run.h"

void ckpt_read_output(int fd, char *out, size_t outlen)
{
	size_t len = 0;
	char buf[512];
	ssize_t n;
	while ((n = read(fd, buf, sizeof(buf))) > 0)
		if (out && len + (size_t)n < outlen) {
			memcpy(out + len, buf, (size_t)n);
			len += (size_t)n;
		}
	if (out)
		out[len] = 0;
	close(fd);
}

int ckpt_run(const char *bin, const char *err_path, const char *env, const char *fault, char *out, size_t outlen,
	     const char *a1, const char *a2, const char *a3, const char *a4)
{
	int fds[2];
	ck_assert_int_eq(pipe2(fds, O_CLOEXEC), 0);
	pid_t pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		int err = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
		dup2(fds[1], 1);
		dup2(err, 2);
		if (env)
			putenv((char *)env);
		if (fault)
			setenv("CKPTFS_FAULT", fault, 1);
		else
			unsetenv("CKPTFS_FAULT");
		execl(bin, "ckpt", a1, a2, a3, a4, (char *)NULL);
		_exit(127);
	}
	close(fds[1]);
	ckpt_read_output(fds[0], out, outlen);
	int st;
	ck_assert_int_eq(waitpid(pid, &st, 0), pid);
	return st;
}

const char *ckpt_run_err(const char *err_path)
{
	static char *text;
	free(text);
	text = NULL;
	if (read_file_full(err_path, &text, NULL) < 0)
		return "";
	return text;
}

int verdict_wait(pid_t pid, const char *restored, const char *result, int ms, const char *who)
{
	int st = 0;
	pid_t w = 0;
	int fd = open(restored, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
	ck_assert_int_ge(fd, 0);
	close(fd);
	for (int i = 0; i < ms && w == 0; i++) {
		w = waitpid(pid, &st, WNOHANG);
		if (!w)
			usleep(1000);
	}
	if (w == 0)
		kill(pid, SIGKILL);
	ck_assert_msg(w == pid, "%s %d did not finish", who, pid);
	char *res = NULL;
	read_file_full(result, &res, NULL);
	ck_assert_msg(res, "pid %d left no verdict (status 0x%x)", pid, st);
	ck_assert_msg(!strcmp(res, "PASS\n"), "%s %d says: %s", who, pid, res);
	free(res);
	return st;
}

char case_dir[PATH_MAX];
const char *case_ckpt_bin, *case_targets;

void case_begin(const char *tag)
{
	snprintf(case_dir, sizeof(case_dir), "/tmp/ckptfs-%s-XXXXXX", tag);
	ck_assert_ptr_nonnull(mkdtemp(case_dir));
	ck_assert_int_eq(prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0), 0);
}

void case_end(void)
{
	rm_rf(case_dir);
}

char *case_path(const char *name)
{
	static char p[8][PATH_MAX + 64];
	static int k;
	k = (k + 1) % 8;
	snprintf(p[k], sizeof(p[k]), "%s/%s", case_dir, name);
	return p[k];
}

void case_wait_file(const char *p, int ms)
{
	for (int i = 0; i < ms && access(p, F_OK) < 0; i++)
		usleep(1000);
	ck_assert_msg(access(p, F_OK) == 0, "%s did not appear", p);
}

pid_t case_fork_quiet(int fd, const char *log)
{
	pid_t pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		int n = fd >= 0 ? fd : open("/dev/null", O_RDWR);
		int l = log ? open(log, O_WRONLY | O_CREAT | O_APPEND, 0600) : -1;
		dup2(n, 0);
		dup2(n, 1);
		dup2(l >= 0 ? l : n, 2);
		syscall(SYS_close_range, 3, ~0u, 0);
	}
	return pid;
}

pid_t case_spawn(const char *interp, const char *prog, int fd, const char *const *extra, int ready_ms)
{
	char exe[PATH_MAX + 64];
	snprintf(exe, sizeof(exe), "%s/%s", case_targets, prog);
	pid_t pid = case_fork_quiet(fd, fd < 0 ? case_path("target.log") : NULL);
	if (pid == 0) {
		char *argv[9] = { 0 };
		int a = 0;
		if (interp)
			argv[a++] = (char *)interp;
		argv[a++] = exe;
		argv[a++] = case_path("ready");
		argv[a++] = case_path("result");
		for (int i = 0; extra && extra[i] && i < 4; i++)
			argv[a++] = (char *)extra[i];
		execv(argv[0], argv);
		_exit(127);
	}
	case_wait_file(case_path("ready"), ready_ms);
	usleep(20000); /* into its waiting loop */
	return pid;
}

int case_ckpt_status(const char *fault, char *out, size_t outlen, const char *a1, const char *a2, const char *a3,
		     const char *a4)
{
	return ckpt_run(case_ckpt_bin, case_path("ckpt.err"), NULL, fault, out, outlen, a1, a2, a3, a4);
}

int case_ckpt(const char *fault, char *out, size_t outlen, const char *a1, const char *a2, const char *a3,
	      const char *a4)
{
	int st = case_ckpt_status(fault, out, outlen, a1, a2, a3, a4);
	ck_assert_msg(WIFEXITED(st), "ckpt ended by signal %d", WIFSIGNALED(st) ? WTERMSIG(st) : 0);
	return WEXITSTATUS(st);
}

const char *case_ckpt_err(void)
{
	return ckpt_run_err(case_path("ckpt.err"));
}

void case_verdict(pid_t pid)
{
	int st = verdict_wait(pid, case_path("ready.restored"), case_path("result"), 15000, "target");
	ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

size_t case_descendants(pid_t pid, pid_t *v, size_t cap)
{
	size_t n = 0;

	if (!cap)
		return 0;
	v[n++] = pid;
	for (size_t i = 0; i < n; i++) {
		char p[96], *text = NULL;
		snprintf(p, sizeof(p), "/proc/%d/task/%d/children", v[i], v[i]);
		if (read_file_full(p, &text, NULL) < 0)
			continue;
		for (char *t = strtok(text, " \n"); t && n < cap; t = strtok(NULL, " \n"))
			v[n++] = atoi(t);
		free(text);
	}
	return n;
}

void case_reap_tree(pid_t root)
{
	int st;

	ck_assert_int_eq(waitpid(root, &st, 0), root);
	while (waitpid(-1, &st, 0) > 0)
		;
}

void case_kill_tree(pid_t root)
{
	pid_t v[64];
	size_t n = case_descendants(root, v, sizeof(v) / sizeof(v[0]));

	for (size_t i = 0; i < n; i++)
		kill(v[i], SIGKILL);
	case_reap_tree(root);
}

int case_env(const char *why_root)
{
	if (geteuid() != 0) {
		printf("skipped: needs root (%s)\n", why_root);
		return 77;
	}
	case_ckpt_bin = getenv("CKPT");
	case_targets = getenv("TARGETS");
	if (!case_ckpt_bin || !case_targets) {
		printf("CKPT and TARGETS must name the ckpt binary and the targets' directory\n");
		return 1;
	}
	return 0;
}

int case_main(const char *suite, const struct case_def *cases, size_t n, int timeout_s, void (*setup)(void),
	      void (*teardown)(void), const char *why_root)
{
	int r = case_env(why_root);
	if (r)
		return r;
	Suite *s = suite_create(suite);
	for (size_t i = 0; i < n; i++) {
		TCase *tc = tcase_create(cases[i].name);
		tcase_add_checked_fixture(tc, setup, teardown);
		tcase_set_timeout(tc, timeout_s);
		tcase_add_test(tc, cases[i].t);
		suite_add_tcase(s, tc);
	}
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
