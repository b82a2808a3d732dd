/*
 * A real server keeps its clients through the mount: redis-server, with a
 * connected client of the test's own (a few lines of RESP over TCP), is
 * checkpointed with `checkpoint kill` in its ctl file, killed, and
 * restored by copying the snapshot into restore/. While it is away the
 * client sends a command (the network lock holds its packets: no reset);
 * after the restore the same connection gets its answer, and then the
 * answers to more commands that read what was written before the
 * checkpoint.
 *
 * Needs root, /dev/fuse, redis-server and nftables: skips (77) saying
 * which is missing.
 */
#include <arpa/inet.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "common/common.h"
#include "tests/integration/fs/fs-harness.h"

#define REDIS "/usr/bin/redis-server"

/* A free port on the loopback (bound and let go). */
static int free_port(void)
{
	struct sockaddr_in in = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(in);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(bind(fd, (void *)&in, sizeof(in)), 0);
	ck_assert_int_eq(getsockname(fd, (void *)&in, &len), 0);
	close(fd);
	return ntohs(in.sin_port);
}

static int client_connect(int port)
{
	struct sockaddr_in in = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
				  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd >= 0 && connect(fd, (void *)&in, sizeof(in)) == 0)
		return fd;
	if (fd >= 0)
		close(fd);
	return -1;
}

/* Sends one inline command and reads one reply (up to "\r\n", or a bulk
 * string's "$N\r\n...\r\n"), waiting ms at most. Returns the reply
 * (static) or NULL. */
static const char *command(int fd, const char *cmd, int ms)
{
	static char reply[512];
	size_t got = 0;
	char line[256];

	snprintf(line, sizeof(line), "%s\r\n", cmd);
	if (send(fd, line, strlen(line), MSG_NOSIGNAL) != (ssize_t)strlen(line))
		return NULL;
	for (;;) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		if (poll(&p, 1, ms) != 1)
			return NULL;
		ssize_t n = read(fd, reply + got, sizeof(reply) - 1 - got);
		if (n <= 0)
			return NULL;
		got += (size_t)n;
		reply[got] = 0;
		char *end = strstr(reply, "\r\n");
		if (!end)
			continue;
		/* a bulk string: its length line, then the bytes */
		if (reply[0] == '$' && atoi(reply + 1) >= 0 &&
		    got < (size_t)(end - reply) + 2 + (size_t)atoi(reply + 1) + 2)
			continue;
		return reply;
	}
}

/* Starts redis-server on port (no persistence); its pid. */
static pid_t redis_start(int port)
{
	char ports[16], log[PATH_MAX];
	pid_t pid;

	snprintf(ports, sizeof(ports), "%d", port);
	snprintf(log, sizeof(log), "%s/redis.log", H.work);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		int n = open("/dev/null", O_RDWR);
		dup2(n, 0);
		dup2(n, 1);
		dup2(n, 2);
		syscall(SYS_close_range, 3, ~0u, 0);
		execl(REDIS, "redis-server", "--port", ports, "--bind", "127.0.0.1", "--save", "", "--appendonly",
		      "no", "--protected-mode", "no", "--daemonize", "no", "--logfile", log, "--dir", H.work,
		      (char *)NULL);
		_exit(127);
	}
	if (H.ntargets < ARRAY_SIZE(H.targets))
		H.targets[H.ntargets++] = pid;
	return pid;
}

START_TEST(test_redis_keeps_its_client)
{
	int port = free_port(), fd = -1;
	pid_t pid = redis_start(port);
	const char *r;

	for (int i = 0; i < 10000 && fd < 0; i++) {
		fd = client_connect(port);
		if (fd < 0)
			usleep(1000);
	}
	ck_assert_msg(fd >= 0, "redis-server on port %d takes no connection", port);
	r = command(fd, "SET greeting hello", 10000);
	ck_assert_msg(r && !strcmp(r, "+OK\r\n"), "SET: %s", r ? r : "no answer");
	r = command(fd, "RPUSH list a b c", 10000);
	ck_assert_msg(r && !strcmp(r, ":3\r\n"), "RPUSH: %s", r ? r : "no answer");

	ck_assert_int_eq(sh("echo checkpoint kill > \"$MNT/%d/ctl\"", pid), 0);
	int st;
	ck_assert_int_eq(waitpid(pid, &st, 0), pid);
	ck_assert_int_eq(sh("grep -q ' tcp .* port=%d ' \"$MNT/%d/1/%d/fds\"", port, pid, pid), 0);
	/* away: the command's packets are held, not answered with a reset */
	char cmd[] = "INCR counter\r\n";
	ck_assert_int_eq(send(fd, cmd, strlen(cmd), MSG_NOSIGNAL), (ssize_t)strlen(cmd));
	ck_assert_int_eq(sh("cp -r \"$MNT/%d/1\" \"$MNT/restore/redis\"", pid), 0);
	restore_assert_running("redis", pid, 1, 30000);
	/* the answer to what was sent in the gap, on the same connection */
	char reply[64] = "";
	struct pollfd p = { .fd = fd, .events = POLLIN };
	ck_assert_msg(poll(&p, 1, 30000) == 1, "no answer to INCR after the restore");
	ck_assert_int_gt(read(fd, reply, sizeof(reply) - 1), 0);
	ck_assert_msg(!strcmp(reply, ":1\r\n"), "INCR: %s", reply);
	r = command(fd, "GET greeting", 10000);
	ck_assert_msg(r && !strcmp(r, "$5\r\nhello\r\n"), "GET: %s", r ? r : "no answer");
	r = command(fd, "LLEN list", 10000);
	ck_assert_msg(r && !strcmp(r, ":3\r\n"), "LLEN: %s", r ? r : "no answer");
	/* and a new client is served too */
	int fd2 = client_connect(port);
	ck_assert_int_ge(fd2, 0);
	r = command(fd2, "INCR counter", 10000);
	ck_assert_msg(r && !strcmp(r, ":2\r\n"), "INCR from a new client: %s", r ? r : "no answer");
	close(fd2);
	close(fd);
	/* nothing of the connection stays locked */
	char *lock = sh_out("\"$CKPT\" netlock");
	char want[32];
	snprintf(want, sizeof(want), ". %d .", port);
	ck_assert_msg(!strstr(lock, want), "still locked: %s", lock);
	free(lock);
	kill(pid, SIGKILL);
}
END_TEST

int main(void)
{
	harness_require();
	if (access(REDIS, X_OK) < 0) {
		printf("SKIP: %s is not installed (apt-get install redis-server)\n", REDIS);
		return 77;
	}
	if (getenv("CKPTFS_NO_NETLOCK")) {
		printf("SKIP: this build has no libnftables (no network lock for the client's connection)\n");
		return 77;
	}
	harness_begin();
	Suite *s = suite_create("fs-redis");
	harness_add(s, "redis_keeps_its_client", test_redis_keeps_its_client, 120);
	return harness_run(s);
}
