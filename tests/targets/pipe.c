/*
 * The main thread is blocked in read() from a pipe when the dump comes;
 * after restore a second thread writes into the pipe and the read must
 * return those bytes. Needs the descriptor support (pipes).
 */
#include <pthread.h>

#include "target.h"

static int p[2];

static void *writer(void *arg)
{
	target_wait_restored();
	if (write(p[1], "after restore", 13) != 13)
		target_verdict(0, "write to the pipe failed");
	return NULL;
}

int main(int argc, char **argv)
{
	target_init(argc, argv, 0);
	char buf[64] = { 0 };
	if (pipe(p) < 0)
		target_verdict(0, "pipe: %s", strerror(errno));
	pthread_t t;
	pthread_create(&t, NULL, writer, NULL);
	target_ready();
	ssize_t n = read(p[0], buf, sizeof(buf) - 1);
	if (n != 13 || strcmp(buf, "after restore"))
		target_verdict(0, "read returned %zd '%s' (%s)", n, buf, n < 0 ? strerror(errno) : "");
	pthread_join(t, NULL);
	target_pass();
}
