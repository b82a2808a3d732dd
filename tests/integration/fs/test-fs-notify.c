/*
 * ckptfs under systemd, without systemd: the daemon is started with a
 * NOTIFY_SOCKET of the test's own (an abstract name, or a path) and must
 * say READY=1, with its MAINPID, only once the mount answers, STOPPING=1
 * when it is unmounted or sent SIGTERM, and never READY=1 when it fails.
 * The case "unit" runs the commands of the built ckptfs.service
 * (ExecStartPre=, ExecStart=, KillSignal=) as systemd would, on a temp
 * mount point and store instead of /ckpt and /var/lib/ckptfs: a stop and
 * start, and a crash and start, keep every snapshot.
 */
#include <check.h>
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/integration/fs/fs-harness.h"

#ifndef HAVE_ENGINE
#define HAVE_ENGINE 0
#endif

#define WAIT_MS 30000

/* The test's end of NOTIFY_SOCKET: bound, datagrams, with the name the
 * daemon is given (path, or '@' and the abstract name). */
struct listener {
	int fd;
	char name[sizeof(((struct sockaddr_un *)0)->sun_path)];
};

static void listen_notify(struct listener *l, bool abstract)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	socklen_t len;
	int n;

	l->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	ck_assert_int_ge(l->fd, 0);
	if (abstract)
		n = snprintf(l->name, sizeof(l->name), "@ckptfs-test-notify-%d", (int)getpid());
	else
		n = snprintf(l->name, sizeof(l->name), "%s/notify", H.base);
	ck_assert_msg(n > 0 && (size_t)n < sizeof(l->name), "socket name too long: %s", l->name);
	memcpy(a.sun_path, l->name, strlen(l->name));
	if (abstract)
		a.sun_path[0] = 0;
	len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(l->name));
	ck_assert_msg(bind(l->fd, (struct sockaddr *)&a, len) == 0, "bind %s: %s", l->name, strerror(errno));
}

/* The next datagram (malloc'd, NUL-terminated), or NULL after ms. */
static char *recv_notify(struct listener *l, unsigned ms)
{
	struct pollfd p = { .fd = l->fd, .events = POLLIN };
	char buf[4096];
	ssize_t n;

	if (poll(&p, 1, (int)ms) != 1)
		return NULL;
	n = recv(l->fd, buf, sizeof(buf) - 1, 0);
	ck_assert_int_ge(n, 0);
	buf[n] = 0;
	return strdup(buf);
}

/* Whether msg has the line "line" (KEY=VALUE messages, one a line). */
static bool has_line(const char *msg, const char *line)
{
	size_t n = strlen(line);

	for (const char *p = msg; p; p = strchr(p, '\n'), p = p ? p + 1 : NULL)
		if (!strncmp(p, line, n) && (p[n] == '\n' || !p[n]))
			return true;
	return false;
}

/* Starts "sh -c 'exec CMD'" (the pid is CMD's) with NOTIFY_SOCKET set and
 * its output in H.base/daemon.log; H.daemon, so that the teardown reaps
 * it whatever happens. */
static pid_t start_notified(const struct listener *l, const char *cmd)
{
	pid_t pid = fork();

	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		char log[PATH_MAX], *exec_cmd = NULL;
		FILE *f;

		snprintf(log, sizeof(log), "%s/daemon.log", H.base);
		f = freopen(log, "a", stderr);
		if (f)
			dup2(fileno(f), 1);
		setenv("NOTIFY_SOCKET", l->name, 1);
		if (asprintf(&exec_cmd, "exec %s", cmd) < 0)
			_exit(127);
		execl("/bin/sh", "sh", "-c", exec_cmd, (char *)NULL);
		_exit(127);
	}
	H.daemon = pid;
	return pid;
}

static pid_t start_daemon(const struct listener *l)
{
	char cmd[PATH_MAX * 3];

	snprintf(cmd, sizeof(cmd), "'%s' -f -o store='%s' '%s'", getenv("CKPTFS"), H.store, H.mnt);
	return start_notified(l, cmd);
}

/* Waits for READY=1 from pid: every message before it is something else,
 * and when it comes the mount is there and serves its README. */
static void expect_ready(struct listener *l, pid_t pid)
{
	char readme[PATH_MAX], mainpid[32];
	char *msg;

	snprintf(readme, sizeof(readme), "%s/README", H.mnt);
	snprintf(mainpid, sizeof(mainpid), "MAINPID=%d", (int)pid);
	while ((msg = recv_notify(l, WAIT_MS))) {
		if (has_line(msg, "READY=1"))
			break;
		ck_assert_msg(!has_line(msg, "STOPPING=1"), "STOPPING=1 before READY=1");
		free(msg);
	}
	ck_assert_msg(msg, "no READY=1 within %d s; see %s/daemon.log", WAIT_MS / 1000, H.base);
	ck_assert_msg(harness_mounted(H.mnt), "READY=1 came before the mount: '%s'", msg);
	ck_assert_msg(access(readme, R_OK) == 0, "READY=1 came, but %s: %s", readme, strerror(errno));
	ck_assert_msg(has_line(msg, mainpid), "READY=1 without %s: '%s'", mainpid, msg);
	free(msg);
}

/* Waits for STOPPING=1 (and no READY=1 after it), then for pid to exit 0
 * with the mount gone. */
static void expect_stopped(struct listener *l, pid_t pid)
{
	char *msg;
	int status;

	while ((msg = recv_notify(l, WAIT_MS))) {
		ck_assert_msg(!has_line(msg, "READY=1"), "READY=1 again while stopping: '%s'", msg);
		if (has_line(msg, "STOPPING=1"))
			break;
		free(msg);
	}
	ck_assert_msg(msg, "no STOPPING=1 within %d s", WAIT_MS / 1000);
	free(msg);
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	H.daemon = 0;
	ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "ckptfs ended with status 0x%x", status);
	ck_assert_msg(!harness_mounted(H.mnt), "still mounted after ckptfs ended");
}

/* A daemon told of an abstract or a path socket says READY=1, then
 * STOPPING=1 when unmounted (sig 0) or sent sig. */
static void ready_then_stopping(bool abstract, int sig)
{
	struct listener l;
	pid_t pid;

	listen_notify(&l, abstract);
	pid = start_daemon(&l);
	expect_ready(&l, pid);
	if (sig)
		ck_assert_int_eq(kill(pid, sig), 0);
	else
		ck_assert_int_eq(sh("fusermount3 -u \"$MNT\""), 0);
	expect_stopped(&l, pid);
	close(l.fd);
}

START_TEST(test_ready_then_stopping_at_unmount)
{
	ready_then_stopping(true, 0);
}
END_TEST

START_TEST(test_path_socket_and_sigterm)
{
	ready_then_stopping(false, SIGTERM);
}
END_TEST

START_TEST(test_no_ready_on_failure)
{
	struct listener l;
	char *msg;
	pid_t pid;
	int status;
	bool said_why = false;

	/* A store that cannot be opened: a regular file. */
	ck_assert_int_eq(sh("echo x > \"$STORE\""), 0);
	listen_notify(&l, true);
	pid = start_daemon(&l);
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	H.daemon = 0;
	ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) != 0, "ckptfs on a bad store: status 0x%x", status);
	while ((msg = recv_notify(&l, 0))) {
		ck_assert_msg(!has_line(msg, "READY=1"), "READY=1 from a daemon that failed: '%s'", msg);
		said_why |= strstr(msg, "STATUS=cannot open the store") && strstr(msg, "ERRNO=");
		free(msg);
	}
	ck_assert_msg(said_why, "no STATUS= and ERRNO= for the store that cannot be opened");
	close(l.fd);
}
END_TEST

/* ckptfs.service's commands, read from the built unit, its paths put
 * onto the test's (the ExecStart binary the built one). */
struct unit {
	char *pre[8]; /* ExecStartPre=, '-' first where a failure is ignored */
	unsigned npre;
	char *start;
	int kill_signal;
	bool notify_type;
};

/* s with each "from" that ends a word (a space or the end after it)
 * replaced by "to"; frees s. */
static char *replace(char *s, const char *from, const char *to, bool word)
{
	size_t n = strlen(from), cap = strlen(s) * 2 + strlen(to) * 8 + 1, o = 0;
	char *out = malloc(cap);

	ck_assert_ptr_nonnull(out);
	for (const char *p = s; *p;) {
		if (!strncmp(p, from, n) && (!word || p[n] == ' ' || !p[n]) && o + strlen(to) < cap - 1) {
			o += (size_t)sprintf(out + o, "%s", to);
			p += n;
		} else if (o < cap - 1) {
			out[o++] = *p++;
		} else {
			break;
		}
	}
	out[o] = 0;
	free(s);
	return out;
}

static char *unit_paths(const char *line)
{
	char *s = strdup(line), *sp;

	ck_assert_ptr_nonnull(s);
	/* ExecStart=BINDIR/ckptfs ...: the built daemon instead. */
	sp = strchr(s, ' ');
	if (sp && sp - s >= 7 && !strncmp(sp - 7, "/ckptfs", 7)) {
		char *t = NULL;
		ck_assert_int_ge(asprintf(&t, "%s%s", getenv("CKPTFS"), sp), 0);
		free(s);
		s = t;
	}
	s = replace(s, "/var/lib/ckptfs", H.store, false);
	return replace(s, "/ckpt", H.mnt, true);
}

static void unit_read(struct unit *u)
{
	const char *path = getenv("CKPTFS_UNIT");
	char line[1024];
	FILE *f;

	ck_assert_msg(path && (f = fopen(path, "re")), "cannot read $CKPTFS_UNIT '%s'", path ? path : "");
	memset(u, 0, sizeof(*u));
	u->kill_signal = SIGTERM; /* systemd's default */
	while (fgets(line, sizeof(line), f)) {
		line[strcspn(line, "\n")] = 0;
		if (!strncmp(line, "ExecStartPre=", 13) && u->npre < 8)
			u->pre[u->npre++] = unit_paths(line + 13);
		else if (!strncmp(line, "ExecStart=", 10))
			u->start = unit_paths(line + 10);
		else if (!strcmp(line, "Type=notify"))
			u->notify_type = true;
		else if (!strncmp(line, "KillSignal=", 11))
			u->kill_signal = !strcmp(line + 11, "SIGINT") ? SIGINT : !strcmp(line + 11, "SIGHUP") ? SIGHUP :
					 !strcmp(line + 11, "SIGTERM") ? SIGTERM : 0;
	}
	fclose(f);
	ck_assert_msg(u->start && u->notify_type, "%s: no ExecStart= or not Type=notify", path);
	ck_assert_msg(u->kill_signal, "%s: a KillSignal= ckptfs does not end on", path);
}

/* systemctl start: StateDirectory=, each ExecStartPre= in turn, then
 * ExecStart=, started once READY=1 came. */
static pid_t unit_start(const struct unit *u, struct listener *l)
{
	pid_t pid;

	mkdir(H.store, 0700);
	for (unsigned i = 0; i < u->npre; i++) {
		bool may_fail = u->pre[i][0] == '-';
		char *out = sh_out("%s 2>&1 && echo ok", u->pre[i] + may_fail);

		ck_assert_msg(may_fail || strstr(out, "ok\n"), "ExecStartPre=%s failed: %s", u->pre[i], out);
		free(out);
	}
	pid = start_notified(l, u->start);
	expect_ready(l, pid);
	return pid;
}

/* systemctl stop: KillSignal= to the main process only (KillMode=process),
 * which must say STOPPING=1, unmount and exit 0. */
static void unit_stop(const struct unit *u, struct listener *l, pid_t pid)
{
	/* The kernel sends the release of a file closed just before (the
	 * ctl written to) in the background; a daemon ended before it came
	 * leaves that handle unfreed, which ASan counts as a leak (op_open's
	 * handle in fs/ops.c). The daemon serves requests in order on one
	 * thread: once a statfs (never cached by the kernel, and opening
	 * nothing) is answered, earlier releases were. */
	ck_assert_int_eq(sh("stat -f \"$MNT\" >/dev/null"), 0);
	ck_assert_int_eq(kill(pid, u->kill_signal), 0);
	expect_stopped(l, pid);
}

START_TEST(test_unit)
{
	struct unit u;
	struct listener l;
	char dir[PATH_MAX];
	pid_t daemon, target;

	unit_read(&u);
	listen_notify(&l, true);
	daemon = unit_start(&u, &l);
	target = target_start(dir);
	ck_assert_int_eq(sh("echo checkpoint > \"$MNT/%d/ctl\" && echo checkpoint > \"$MNT/%d/ctl\"", (int)target,
			    (int)target),
			 0);

	/* systemctl restart */
	unit_stop(&u, &l, daemon);
	daemon = unit_start(&u, &l);
	ck_assert_int_eq(sh("test \"$(ls \"$MNT/%d\" | grep -x '[0-9]*' | tr '\\n' ' ')\" = '1 2 '", (int)target), 0);
	ck_assert_int_eq(sh("\"$CKPT\" verify \"$MNT/%d/2\" >/dev/null", (int)target), 0);

	/* A crash (Restart=on-failure starts it again): the dead mount it
	 * leaves is cleared by ExecStartPre=, the snapshots are all there. */
	ck_assert_int_eq(kill(daemon, SIGKILL), 0);
	ck_assert_int_eq(waitpid(daemon, NULL, 0), daemon);
	H.daemon = 0;
	daemon = unit_start(&u, &l);
	ck_assert_int_eq(sh("\"$CKPT\" verify \"$MNT/%d/1\" >/dev/null && \"$CKPT\" verify \"$MNT/%d/2\" >/dev/null",
			    (int)target, (int)target),
			 0);
	unit_stop(&u, &l, daemon);
	target_kill(target);
	close(l.fd);
	for (unsigned i = 0; i < u.npre; i++)
		free(u.pre[i]);
	free(u.start);
}
END_TEST

int main(void)
{
	Suite *s;

	harness_require();
	harness_begin();
	s = suite_create("fs-notify");
	harness_add_unmounted(s, "ready_then_stopping_at_unmount", test_ready_then_stopping_at_unmount, 60);
	harness_add_unmounted(s, "path_socket_and_sigterm", test_path_socket_and_sigterm, 60);
	harness_add_unmounted(s, "no_ready_on_failure", test_no_ready_on_failure, 60);
	if (HAVE_ENGINE)
		harness_add_unmounted(s, "unit", test_unit, 180);
	return harness_run(s);
}
