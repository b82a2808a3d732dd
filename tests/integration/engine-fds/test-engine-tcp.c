/*
 * Established TCP connections through `ckpt dump` and `ckpt restore`: the
 * test is the peer of target-fds-tcp's connection (IPv4 and IPv6 on the
 * loopback). With bytes in flight both ways, the target is dumped with
 * --kill; while it is away the peer writes more (the network lock drops
 * those packets: no reset, they are sent again later); after the restore
 * the target checks every byte it receives and the peer every byte of
 * the target's stream. A dump that fails at any step of the repair, or
 * that leaves the target running, leaves its connection working, checked
 * the same way on the original.
 *
 * Needs root (ptrace, TCP repair, nftables). The test is a child
 * subreaper, so that restored processes become its children.
 */
#include <arpa/inet.h>
#include <check.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "common/common.h"
#include "tests/integration/ckpt-run.h"
#include "tests/targets/tcp-pattern.h"

static void setup(void)
{
	case_begin("tcp");
}

static pid_t started; /* the target of the case, killed if it is left */

static void teardown(void)
{
	if (started > 0 && kill(started, SIGKILL) == 0)
		waitpid(started, NULL, 0);
	case_end();
}

/* The lock's listing, as `ckpt netlock` prints it. */
static const char *netlock(void)
{
	static char out[8192];

	ck_assert_msg(case_ckpt(NULL, out, sizeof(out), "netlock", NULL, NULL, NULL) == 0, "ckpt netlock: %s",
		      case_ckpt_err());
	return out;
}

static int write_file(const char *p, const char *text, size_t len)
{
	int fd = open(p, O_WRONLY | O_TRUNC | O_CLOEXEC);
	ssize_t n = fd < 0 ? -1 : write(fd, text, len);

	if (fd >= 0)
		close(fd);
	return n == (ssize_t)len ? 0 : -1;
}

struct conn {
	pid_t pid;
	int fd;     /* the peer's end */
	int port;   /* the target's port, as the lock lists it */
	char portstr[16];
};

static void send_pattern(int fd, uint64_t off, uint64_t len)
{
	char buf[4096];

	while (len) {
		size_t n = MIN(sizeof(buf), len);
		tcp_pattern_fill(buf, n, off, TCP_PATTERN_PEER);
		ck_assert_int_eq(send(fd, buf, n, MSG_NOSIGNAL), (ssize_t)n);
		off += n;
		len -= n;
	}
}

/* Starts target-fds-tcp connected to us; returns once its queues are full
 * both ways. expect: what it is to read after the restore. */
static void start(bool v6, uint64_t expect, struct conn *c)
{
	struct sockaddr_storage ss = { 0 };
	socklen_t len = v6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
	int l = socket(v6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	int small = 16384;
	char exe[PATH_MAX + 64], fam[4], port[16], exp[32];

	ck_assert_int_ge(l, 0);
	ss.ss_family = v6 ? AF_INET6 : AF_INET;
	if (v6)
		((struct sockaddr_in6 *)&ss)->sin6_addr = in6addr_loopback;
	else
		((struct sockaddr_in *)&ss)->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	/* a small window: the target's stream stays mostly unacknowledged */
	ck_assert_int_eq(setsockopt(l, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small)), 0);
	ck_assert_int_eq(bind(l, (void *)&ss, len), 0);
	ck_assert_int_eq(listen(l, 1), 0);
	ck_assert_int_eq(getsockname(l, (void *)&ss, &len), 0);
	snprintf(fam, sizeof(fam), "%d", v6 ? 6 : 4);
	snprintf(port, sizeof(port), "%u",
		 ntohs(v6 ? ((struct sockaddr_in6 *)&ss)->sin6_port : ((struct sockaddr_in *)&ss)->sin_port));
	snprintf(exp, sizeof(exp), "%lu", expect);
	snprintf(exe, sizeof(exe), "%s/target-fds-tcp", case_targets);
	/* not case_spawn: it is ready only once we have accepted it */
	c->pid = case_fork_quiet(-1, NULL);
	if (c->pid == 0) {
		execl(exe, exe, case_path("ready"), case_path("result"), fam, port, exp, (char *)NULL);
		_exit(127);
	}
	started = c->pid;
	struct pollfd p = { .fd = l, .events = POLLIN };
	ck_assert_msg(poll(&p, 1, 10000) == 1, "the target did not connect");
	len = sizeof(ss);
	c->fd = accept4(l, (void *)&ss, &len, SOCK_CLOEXEC);
	ck_assert_int_ge(c->fd, 0);
	close(l);
	c->port = ntohs(v6 ? ((struct sockaddr_in6 *)&ss)->sin6_port : ((struct sockaddr_in *)&ss)->sin_port);
	snprintf(c->portstr, sizeof(c->portstr), "%d", c->port);
	send_pattern(c->fd, 0, TCP_PATTERN_FIRST);
	case_wait_file(case_path("ready"), 10000);
}

/* Tells the target (original or restored) to check, reads its whole
 * stream checking every byte, and takes its verdict. */
static void finish(pid_t pid, struct conn *c)
{
	static char buf[65536];
	uint64_t got = 0;

	int fd = open(case_path("ready.restored"), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
	ck_assert_int_ge(fd, 0);
	close(fd);
	while (got < TCP_PATTERN_TOTAL) {
		struct pollfd p = { .fd = c->fd, .events = POLLIN };
		ck_assert_msg(poll(&p, 1, 30000) == 1, "nothing from the target after %lu bytes", got);
		ssize_t n = read(c->fd, buf, sizeof(buf));
		ck_assert_msg(n > 0, "read after %lu bytes: %s", got, n ? strerror(errno) : "EOF");
		uint64_t bad = tcp_pattern_check(buf, (size_t)n, got, TCP_PATTERN_TARGET);
		ck_assert_msg(bad == UINT64_MAX, "the target's byte %lu is wrong", bad);
		got += (uint64_t)n;
	}
	int st = verdict_wait(pid, case_path("ready.restored"), case_path("result"), 30000, "target");
	ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	close(c->fd);
}

static void kill_restore(bool v6)
{
	struct conn c;
	char p[32], out[64], *fds = NULL;
	int st;

	start(v6, TCP_PATTERN_FIRST + TCP_PATTERN_GAP, &c);
	snprintf(p, sizeof(p), "%d", c.pid);
	ck_assert_msg(case_ckpt(NULL, NULL, 0, "dump", "--kill", p, case_path("snap")) == 0, "ckpt dump: %s", case_ckpt_err());
	ck_assert_int_eq(waitpid(c.pid, &st, 0), c.pid);
	/* the image: both queues, whole */
	snprintf(out, sizeof(out), "snap/%d/fds", c.pid);
	ck_assert_int_eq(read_file_full(case_path(out), &fds, NULL), 0);
	ck_assert_msg(strstr(fds, " tcp ") && strstr(fds, " inq=49152 ") && !strstr(fds, " outq=0 "), "fds: %s",
		      fds);
	free(fds);
	/* held: the peer writes into the gap and sees no reset */
	ck_assert_msg(strstr(netlock(), c.portstr), "not locked: %s", netlock());
	send_pattern(c.fd, TCP_PATTERN_FIRST, TCP_PATTERN_GAP);
	ck_assert_msg(case_ckpt(NULL, out, sizeof(out), "restore", case_path("snap"), NULL, NULL) == 0, "ckpt restore: %s",
		      case_ckpt_err());
	ck_assert_msg(!strstr(netlock(), c.portstr), "still locked: %s", netlock());
	finish(atoi(out), &c);
}

START_TEST(tcp4_kill_restore) { kill_restore(false); } END_TEST
START_TEST(tcp6_kill_restore) { kill_restore(true); } END_TEST

/* Dumped and left running: the connection works on, out of repair mode,
 * unlocked. */
START_TEST(tcp_dump_running)
{
	struct conn c;
	char p[32];

	start(false, TCP_PATTERN_FIRST, &c);
	snprintf(p, sizeof(p), "%d", c.pid);
	ck_assert_msg(case_ckpt(NULL, NULL, 0, "dump", p, case_path("snap"), NULL) == 0, "ckpt dump: %s", case_ckpt_err());
	ck_assert_msg(!strstr(netlock(), c.portstr), "still locked: %s", netlock());
	/* read without the lock, whole all the same */
	char fp[64], *fds = NULL;
	snprintf(fp, sizeof(fp), "snap/%d/fds", c.pid);
	ck_assert_int_eq(read_file_full(case_path(fp), &fds, NULL), 0);
	ck_assert_msg(strstr(fds, " tcp ") && strstr(fds, " inq=49152 ") && !strstr(fds, " outq=0 "), "fds: %s",
		      fds);
	free(fds);
	finish(c.pid, &c);
}
END_TEST

/* A dump --kill failing at the lock, in repair mode, or reading a queue:
 * nothing written, the original runs on with its connection working. */
static void fails(const char *fault, const char *what)
{
	struct conn c;
	char p[32];

	start(false, TCP_PATTERN_FIRST, &c);
	snprintf(p, sizeof(p), "%d", c.pid);
	ck_assert_int_ne(case_ckpt(fault, NULL, 0, "dump", "--kill", p, case_path("snap")), 0);
	ck_assert_msg(strstr(case_ckpt_err(), what), "stderr: %s", case_ckpt_err());
	ck_assert_int_ne(access(case_path("snap/manifest"), F_OK), 0);
	ck_assert_msg(!strstr(netlock(), c.portstr), "still locked: %s", netlock());
	finish(c.pid, &c);
}

START_TEST(tcp_dump_fails_lock) { fails("280", "network lock: injected fault"); } END_TEST
START_TEST(tcp_dump_fails_repair) { fails("281", "repair mode: injected fault"); } END_TEST
START_TEST(tcp_dump_fails_queue) { fails("282", "bytes of its receive queue"); } END_TEST

/* The dumper killed (kill -9) with the connection in repair mode and
 * locked: its keeper takes it out of repair mode and lifts the lock
 * before the process runs on, and the connection works. */
START_TEST(tcp_dumper_dies)
{
	struct conn c;
	char p[32];

	start(false, TCP_PATTERN_FIRST, &c);
	snprintf(p, sizeof(p), "%d", c.pid);
	int st = case_ckpt_status("284", NULL, 0, "dump", "--kill", p, case_path("snap"));
	ck_assert_msg(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "ckpt dump: status 0x%x: %s", st, case_ckpt_err());
	/* the keeper lets go once it sees its dumper gone */
	for (int i = 0; i < 10000 && strstr(netlock(), c.portstr); i += 50)
		usleep(50000);
	ck_assert_msg(!strstr(netlock(), c.portstr), "still locked: %s", netlock());
	finish(c.pid, &c);
}
END_TEST

/* A restore failing as it writes the queues back: the lock stays, the
 * peer still waits, and a second restore brings the connection back. */
START_TEST(tcp_restore_fails_then_succeeds)
{
	struct conn c;
	char p[32], out[64];
	int st;

	start(false, TCP_PATTERN_FIRST, &c);
	snprintf(p, sizeof(p), "%d", c.pid);
	ck_assert_msg(case_ckpt(NULL, NULL, 0, "dump", "--kill", p, case_path("snap")) == 0, "ckpt dump: %s", case_ckpt_err());
	ck_assert_int_eq(waitpid(c.pid, &st, 0), c.pid);
	ck_assert_int_ne(case_ckpt("283", out, sizeof(out), "restore", case_path("snap"), NULL, NULL), 0);
	ck_assert_msg(strstr(case_ckpt_err(), "TCP connection 127.0.0.1:") && strstr(case_ckpt_err(), "injected fault"),
		      "stderr: %s", case_ckpt_err());
	ck_assert_msg(strstr(netlock(), c.portstr), "not locked: %s", netlock());
	/* the process it made was killed and came to us: its pid is free
	 * once reaped */
	while (waitpid(-1, &st, 0) > 0)
		;
	ck_assert_msg(case_ckpt(NULL, out, sizeof(out), "restore", case_path("snap"), NULL, NULL) == 0, "ckpt restore: %s",
		      case_ckpt_err());
	ck_assert_msg(!strstr(netlock(), c.portstr), "still locked: %s", netlock());
	finish(atoi(out), &c);
}
END_TEST

/* The image's local address changed to one this host lacks (as on
 * another host): refused before anything is made, naming the
 * connection; the lock still holds it, and the image as dumped restores. */
START_TEST(tcp_restore_elsewhere_refused)
{
	struct conn c;
	char p[32], out[64], fp[64], *fds = NULL;
	int st;

	start(false, TCP_PATTERN_FIRST, &c);
	snprintf(p, sizeof(p), "%d", c.pid);
	ck_assert_msg(case_ckpt(NULL, NULL, 0, "dump", "--kill", p, case_path("snap")) == 0, "ckpt dump: %s", case_ckpt_err());
	ck_assert_int_eq(waitpid(c.pid, &st, 0), c.pid);
	snprintf(fp, sizeof(fp), "snap/%d/fds", c.pid);
	ck_assert_int_eq(read_file_full(case_path(fp), &fds, NULL), 0);
	char *a = strstr(fds, " addr=127.0.0.1 ");
	ck_assert_ptr_nonnull(a);
	memcpy(a, " addr=10.99.8.7 ", 16); /* same length: only the hash differs */
	ck_assert_int_eq(write_file(case_path(fp), fds, strlen(fds)), 0);
	ck_assert_int_ne(case_ckpt(NULL, out, sizeof(out), "restore", "--no-verify", case_path("snap"), NULL), 0);
	ck_assert_msg(strstr(case_ckpt_err(), "TCP connection 10.99.8.7:") &&
			      strstr(case_ckpt_err(), "its local address is not on this host"),
		      "stderr: %s", case_ckpt_err());
	/* refused before any process was made: its pid is free */
	ck_assert(kill(c.pid, 0) < 0 && errno == ESRCH);
	ck_assert_msg(strstr(netlock(), c.portstr), "not locked: %s", netlock());
	memcpy(a, " addr=127.0.0.1 ", 16);
	ck_assert_int_eq(write_file(case_path(fp), fds, strlen(fds)), 0);
	free(fds);
	ck_assert_msg(case_ckpt(NULL, out, sizeof(out), "restore", case_path("snap"), NULL, NULL) == 0, "ckpt restore: %s",
		      case_ckpt_err());
	finish(atoi(out), &c);
}
END_TEST

/* Starts tests/targets/target-NAME READY RESULT on /dev/null and waits
 * (20 s at most) until it is ready. */
static pid_t spawn_quiet(const char *name)
{
	char prog[64];
	snprintf(prog, sizeof(prog), "target-%s", name);
	return case_spawn(NULL, prog, -1, NULL, 20000);
}

/* Both ends in one tree (target-fds-tcp-tree: parent and child, the
 * parent still listening on the connection's port), bytes in flight both
 * ways: dumped with --kill (under the network lock), or left running
 * (without it: the queues read consistently while packets still come)
 * and then killed, and restored; the tree checks every byte. */
static void tree_cycle(bool running)
{
	char p[32], out[64];
	int st;

	pid_t pid = spawn_quiet("fds-tcp-tree");
	snprintf(p, sizeof(p), "%d", pid);
	ck_assert_msg(case_ckpt(NULL, NULL, 0, "dump", running ? p : "--kill", running ? case_path("snap") : p,
			       running ? NULL : case_path("snap")) == 0,
		      "ckpt dump: %s", case_ckpt_err());
	/* the root, then its child, which came to us */
	if (running)
		case_kill_tree(pid);
	else
		case_reap_tree(pid);
	ck_assert_msg(case_ckpt(NULL, out, sizeof(out), "restore", case_path("snap"), NULL, NULL) == 0, "ckpt restore: %s",
		      case_ckpt_err());
	st = verdict_wait(atoi(out), case_path("ready.restored"), case_path("result"), 30000, "target");
	ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

START_TEST(tcp_tree_kill_restore) { tree_cycle(false); } END_TEST
START_TEST(tcp_tree_running_restore) { tree_cycle(true); } END_TEST

/* target-fds-udp: dumped (running, --kill, --stop), the original
 * killed, restored; it checks its sockets itself. */
static void udp_cycle(const char *mode)
{
	char p[32], out[64];
	int st;

	pid_t pid = spawn_quiet("fds-udp");
	snprintf(p, sizeof(p), "%d", pid);
	ck_assert_msg(case_ckpt(NULL, NULL, 0, "dump", p, case_path("snap"), mode) == 0, "ckpt dump: %s", case_ckpt_err());
	if (!mode || strcmp(mode, "--kill"))
		kill(pid, SIGKILL);
	ck_assert_int_eq(waitpid(pid, &st, 0), pid);
	ck_assert_msg(case_ckpt(NULL, out, sizeof(out), "restore", case_path("snap"), NULL, NULL) == 0, "ckpt restore: %s",
		      case_ckpt_err());
	st = verdict_wait(atoi(out), case_path("ready.restored"), case_path("result"), 15000, "target");
	ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

START_TEST(udp_running) { udp_cycle(NULL); } END_TEST
START_TEST(udp_kill) { udp_cycle("--kill"); } END_TEST
START_TEST(udp_stop) { udp_cycle("--stop"); } END_TEST

int main(void)
{
	const struct case_def cases[] = {
		{ "tcp4_kill_restore", tcp4_kill_restore },
		{ "tcp6_kill_restore", tcp6_kill_restore },
		{ "tcp_dump_running", tcp_dump_running },
		{ "tcp_dump_fails_lock", tcp_dump_fails_lock },
		{ "tcp_dump_fails_repair", tcp_dump_fails_repair },
		{ "tcp_dump_fails_queue", tcp_dump_fails_queue },
		{ "tcp_dumper_dies", tcp_dumper_dies },
		{ "tcp_restore_fails_then_succeeds", tcp_restore_fails_then_succeeds },
		{ "tcp_restore_elsewhere_refused", tcp_restore_elsewhere_refused },
		{ "tcp_tree_kill_restore", tcp_tree_kill_restore },
		{ "tcp_tree_running_restore", tcp_tree_running_restore },
		{ "udp_running", udp_running },
		{ "udp_kill", udp_kill },
		{ "udp_stop", udp_stop },
	};

	if (getenv("CKPTFS_NO_NETLOCK")) {
		printf("skipped: this build has no libnftables (no network lock)\n");
		return 77;
	}
	return case_main("engine-tcp", cases, ARRAY_SIZE(cases), 60, setup, teardown, "ptrace, TCP repair mode, nftables");
}
