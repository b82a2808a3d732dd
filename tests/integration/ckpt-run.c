/* See ckpt-run.h. */
#include <check.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
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
