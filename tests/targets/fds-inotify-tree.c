/*
 * One inotify instance shared by a parent and its child (inherited across
 * fork): the parent made it (fd 50, non-blocking) with a watch on
 * SCRATCH/a (wd 1); the child, through the same instance, added one on
 * SCRATCH/b (wd 2) before the dump. After restore the two still hold one
 * instance: kcmp finds one open file description; the child adds a watch
 * on SCRATCH/c and gets wd 3 (the numbers are the instance's), then makes
 * a file in b; the parent reads that event (wd 2, the child's watch) and,
 * once the child says its watch is in, one for a file it makes in c (wd
 * 3); a file made in a shows as wd 1. The child's verdict is its exit
 * status, the parent's the target's.
 *
 * The other kinds of engine/fds/fds-event.c and fds-netlink.c are shared
 * the same way: a fanotify group (fd 60, an inode mark on SCRATCH/f for
 * FAN_CLOSE_WRITE), an rtnetlink socket (fd 70, its port id the
 * parent's pid) and a packet socket (fd 80, dgram, 0x88b6 on lo). After
 * restore each is one description in both (kcmp); the child writes f,
 * sends an RTM_GETLINK request and a frame on lo through them, and the
 * parent reads the event (the child's pid), the answer (to the parent's
 * port id) and the frame.
 */
#include <arpa/inet.h>
#include <linux/if_packet.h>
#include <linux/kcmp.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <net/if.h>
#include <poll.h>
#include <signal.h>
#include <sys/fanotify.h>
#include <sys/inotify.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include "target.h"

#define CHECK(c) do { if (!(c)) target_verdict(0, "line %d: %s", __LINE__, #c); } while (0)

static char dir[4096];
/* shared: 1 the child is ready; after restore 3 the parent compared
 * descriptors (the child must still hold its own), 2 the child's new
 * watch is in */
static volatile uint64_t *word;

static char *at_(const char *name)
{
	static char p[4][4200];
	static int k;
	k = (k + 1) % 4;
	snprintf(p[k], sizeof(p[k]), "%s/%s", dir, name);
	return p[k];
}

static void touch(const char *p)
{
	int f = open(p, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
	CHECK(f >= 0);
	close(f);
}

/* The next event on fd 50 (10 s at most). */
static void next_event(int *wd, uint32_t *mask, char *name, size_t len)
{
	static char buf[4096] __attribute__((aligned(8)));
	static ssize_t have, off;
	if (off >= have) {
		for (int i = 0; i < 10000; i++) {
			have = read(50, buf, sizeof(buf));
			if (have > 0)
				break;
			CHECK(errno == EAGAIN);
			struct timespec ts = { 0, 1000000 };
			nanosleep(&ts, NULL);
		}
		CHECK(have > 0);
		off = 0;
	}
	struct inotify_event *ev = (struct inotify_event *)(buf + off);
	*wd = ev->wd;
	*mask = ev->mask;
	snprintf(name, len, "%s", ev->len ? ev->name : "");
	off += (ssize_t)sizeof(*ev) + ev->len;
}

/* The child: its exit status says what failed (0: nothing). */
static int child(void)
{
	/* gone with the parent: a dump that leaves the tree running is
	 * followed by the parent's kill */
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (inotify_add_watch(50, at_("b"), IN_CREATE) != 2)
		return 10;
	*word = 1;
	target_wait_restored();
	if (!target_wait_word(word, 3, 10000))
		return 13;
	if (inotify_add_watch(50, at_("c"), IN_CREATE) != 3)
		return 11;
	int f = open(at_("f"), O_WRONLY | O_CLOEXEC);
	if (f < 0 || write(f, "x", 1) != 1)
		return 14;
	close(f);
	struct {
		struct nlmsghdr h;
		struct ifinfomsg i;
	} req = { .h = { .nlmsg_len = sizeof(req), .nlmsg_type = RTM_GETLINK, .nlmsg_flags = NLM_F_REQUEST,
			 .nlmsg_seq = 99 },
		  .i = { .ifi_family = AF_UNSPEC, .ifi_index = (int)if_nametoindex("lo") } };
	if (send(70, &req, sizeof(req), 0) != sizeof(req))
		return 15;
	struct sockaddr_ll to = { .sll_family = AF_PACKET, .sll_protocol = htons(0x88b6),
				  .sll_ifindex = (int)if_nametoindex("lo"), .sll_halen = 6 };
	if (sendto(80, "child", 5, 0, (void *)&to, sizeof(to)) != 5)
		return 16;
	*word = 2;
	f = open(at_("b/x"), O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
	if (f < 0)
		return 12;
	close(f);
	return 0;
}

int main(int argc, char **argv)
{
	target_init(argc, argv, 1);
	snprintf(dir, sizeof(dir), "%s", argv[3]);
	mkdir(dir, 0700);
	CHECK(mkdir(at_("a"), 0700) == 0 && mkdir(at_("b"), 0700) == 0 && mkdir(at_("c"), 0700) == 0);
	word = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	CHECK(word != MAP_FAILED);
	int in = inotify_init1(IN_NONBLOCK);
	CHECK(in >= 0 && dup2(in, 50) == 50);
	close(in);
	CHECK(inotify_add_watch(50, at_("a"), IN_CREATE) == 1);
	touch(at_("f"));
	int g = fanotify_init(FAN_CLASS_NOTIF | FAN_NONBLOCK, O_RDONLY);
	CHECK(g >= 0 && dup2(g, 60) == 60);
	close(g);
	CHECK(fanotify_mark(60, FAN_MARK_ADD, FAN_CLOSE_WRITE, AT_FDCWD, at_("f")) == 0);
	int s = socket(AF_NETLINK, SOCK_RAW, NETLINK_ROUTE);
	struct sockaddr_nl sa = { .nl_family = AF_NETLINK };
	CHECK(s >= 0 && dup2(s, 70) == 70 && bind(70, (void *)&sa, sizeof(sa)) == 0);
	close(s);
	s = socket(AF_PACKET, SOCK_DGRAM | SOCK_NONBLOCK, htons(0x88b6));
	struct sockaddr_ll la = { .sll_family = AF_PACKET, .sll_protocol = htons(0x88b6),
				  .sll_ifindex = (int)if_nametoindex("lo") };
	CHECK(s >= 0 && dup2(s, 80) == 80 && bind(80, (void *)&la, sizeof(la)) == 0);
	close(s);
	pid_t c = fork();
	CHECK(c >= 0);
	if (c == 0)
		_exit(child());
	CHECK(target_wait_word(word, 1, 10000));

	target_ready();
	target_wait_restored();

	static const int shared[] = { 50, 60, 70, 80 };
	for (int i = 0; i < 4; i++) {
		long k = syscall(SYS_kcmp, getpid(), c, KCMP_FILE, shared[i], shared[i]);
		if (k != 0)
			target_verdict(0, "kcmp of fd %d with the child's: %ld (%s)", shared[i], k,
				       k < 0 ? strerror(errno) : "another description");
	}
	*word = 3;
	int wd;
	uint32_t mask;
	char name[256];
	/* the child's watch, read here (the child's next one is in by then) */
	next_event(&wd, &mask, name, sizeof(name));
	if (wd != 2 || !(mask & IN_CREATE) || strcmp(name, "x"))
		target_verdict(0, "first event: wd %d mask 0x%x name '%s'", wd, mask, name);
	CHECK(*word == 2);
	touch(at_("c/y"));
	next_event(&wd, &mask, name, sizeof(name));
	if (wd != 3 || strcmp(name, "y"))
		target_verdict(0, "event in c: wd %d name '%s'", wd, name);
	touch(at_("a/z"));
	next_event(&wd, &mask, name, sizeof(name));
	if (wd != 1 || strcmp(name, "z"))
		target_verdict(0, "event in a: wd %d name '%s'", wd, name);
	/* what the child did through the others, by then */
	static char buf[8192] __attribute__((aligned(8)));
	ssize_t n = read(60, buf, sizeof(buf));
	struct fanotify_event_metadata *m = (void *)buf;
	CHECK(n > 0 && m->mask == FAN_CLOSE_WRITE && m->pid == c);
	close(m->fd);
	struct pollfd p = { .fd = 70, .events = POLLIN };
	CHECK(poll(&p, 1, 10000) == 1);
	n = recv(70, buf, sizeof(buf), 0);
	struct nlmsghdr *h = (void *)buf;
	CHECK(n > 0 && h->nlmsg_seq == 99 && h->nlmsg_type == RTM_NEWLINK && h->nlmsg_pid == (uint32_t)getpid());
	p.fd = 80;
	CHECK(poll(&p, 1, 10000) == 1);
	n = recv(80, buf, sizeof(buf), 0);
	CHECK(n >= 5 && !memcmp(buf, "child", 5));
	int st;
	CHECK(waitpid(c, &st, 0) == c);
	if (!WIFEXITED(st) || WEXITSTATUS(st))
		target_verdict(0, "the child: status 0x%x", st);
	target_pass();
}
