/*
 * inotify: an instance (fd 50, non-blocking) watching SCRATCH/a (create
 * and delete, wd 1), SCRATCH/f (attributes, wd 3: wd 2, on SCRATCH/b, was
 * removed) and SCRATCH itself (moves, wd 4), and a second instance (fd
 * 51, blocking, close-on-exec) watching SCRATCH/b once (IN_ONESHOT, wd 1).
 * After restore: nothing queued; a file made in a, f's mode changed and
 * a renamed in SCRATCH each come with the number the target knows; a new
 * watch gets the next number (5); a change in b shows on fd 51, once.
 */
#include <sys/inotify.h>
#include <sys/stat.h>

#include "target.h"

#define CHECK(c) do { if (!(c)) target_verdict(0, "line %d: %s", __LINE__, #c); } while (0)

static char dir[4096];

static char *at_(const char *name)
{
	static char p[4][4200];
	static int k;
	k = (k + 1) % 4;
	snprintf(p[k], sizeof(p[k]), "%s/%s", dir, name);
	return p[k];
}

/* The next event on fd (blocking for at most 10 s): wd and mask; name
 * copied into name. */
static void next_event(int fd, int *wd, uint32_t *mask, char *name, size_t len)
{
	/* one buffer for each of fds 50 and 51 */
	static char bufs[2][4096] __attribute__((aligned(8)));
	static ssize_t haves[2], offs[2];
	int k = fd - 50;
	char *buf = bufs[k];
	ssize_t *have = &haves[k], *off = &offs[k];
	if (*off >= *have) {
		for (int i = 0; i < 10000; i++) {
			*have = read(fd, buf, sizeof(bufs[k]));
			if (*have > 0)
				break;
			CHECK(errno == EAGAIN);
			struct timespec ts = { 0, 1000000 };
			nanosleep(&ts, NULL);
		}
		CHECK(*have > 0);
		*off = 0;
	}
	struct inotify_event *ev = (struct inotify_event *)(buf + *off);
	*wd = ev->wd;
	*mask = ev->mask;
	snprintf(name, len, "%s", ev->len ? ev->name : "");
	*off += (ssize_t)sizeof(*ev) + ev->len;
}

int main(int argc, char **argv)
{
	target_init(argc, argv, 1);
	snprintf(dir, sizeof(dir), "%s", argv[3]);
	mkdir(dir, 0700);
	CHECK(mkdir(at_("a"), 0700) == 0 && mkdir(at_("b"), 0700) == 0);
	int f = open(at_("f"), O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
	CHECK(f >= 0);
	close(f);

	int in = inotify_init1(IN_NONBLOCK);
	CHECK(in >= 0 && dup2(in, 50) == 50);
	close(in);
	CHECK(inotify_add_watch(50, at_("a"), IN_CREATE | IN_DELETE) == 1);
	CHECK(inotify_add_watch(50, at_("b"), IN_CREATE) == 2);
	CHECK(inotify_add_watch(50, at_("f"), IN_ATTRIB) == 3);
	CHECK(inotify_rm_watch(50, 2) == 0);
	CHECK(inotify_add_watch(50, dir, IN_MOVED_FROM | IN_MOVED_TO | IN_ONLYDIR) == 4);
	int in2 = inotify_init1(IN_CLOEXEC);
	CHECK(in2 >= 0 && dup3(in2, 51, O_CLOEXEC) == 51);
	close(in2);
	CHECK(inotify_add_watch(51, at_("b"), IN_CREATE | IN_ONESHOT) == 1);
	/* the IN_IGNORED of wd 2, read: nothing queued at the dump */
	int wd;
	uint32_t mask;
	char name[256];
	next_event(50, &wd, &mask, name, sizeof(name));
	CHECK(wd == 2 && (mask & IN_IGNORED));

	target_ready();
	target_wait_restored();

	CHECK((fcntl(50, F_GETFL) & O_NONBLOCK) && !(fcntl(50, F_GETFD) & FD_CLOEXEC));
	CHECK(!(fcntl(51, F_GETFL) & O_NONBLOCK) && (fcntl(51, F_GETFD) & FD_CLOEXEC));
	char tmp[16];
	CHECK(read(50, tmp, sizeof(tmp)) < 0 && errno == EAGAIN); /* nothing of the restore's own */
	f = open(at_("a/new"), O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
	CHECK(f >= 0);
	close(f);
	next_event(50, &wd, &mask, name, sizeof(name));
	CHECK(wd == 1 && (mask & IN_CREATE) && !strcmp(name, "new"));
	CHECK(chmod(at_("f"), 0640) == 0);
	next_event(50, &wd, &mask, name, sizeof(name));
	CHECK(wd == 3 && (mask & IN_ATTRIB));
	CHECK(rename(at_("a"), at_("a2")) == 0);
	next_event(50, &wd, &mask, name, sizeof(name));
	CHECK(wd == 4 && (mask & IN_MOVED_FROM) && !strcmp(name, "a"));
	next_event(50, &wd, &mask, name, sizeof(name));
	CHECK(wd == 4 && (mask & IN_MOVED_TO) && !strcmp(name, "a2"));
	CHECK(inotify_add_watch(50, at_("b"), IN_DELETE) == 5);
	f = open(at_("b/x"), O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
	CHECK(f >= 0);
	close(f);
	CHECK(fcntl(51, F_SETFL, O_NONBLOCK) == 0);
	next_event(51, &wd, &mask, name, sizeof(name));
	CHECK(wd == 1 && (mask & IN_CREATE) && !strcmp(name, "x"));
	target_pass();
}
