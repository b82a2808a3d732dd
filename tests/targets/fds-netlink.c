/*
 * Netlink sockets: fd 70, rtnetlink (raw), bound by the kernel (port id:
 * the pid), in groups RTNLGRP_LINK (through bind), RTNLGRP_IPV4_IFADDR
 * and RTNLGRP_BRVLAN (33, past the 32 bits bind can name), with
 * NETLINK_NO_ENOBUFS and NETLINK_EXT_ACK set, and a classic BPF filter
 * that takes every message, locked; fd 71, generic netlink (dgram,
 * close-on-exec, non-blocking), bound by its first request (the pid
 * again: port ids are per protocol), NETLINK_CAP_ACK set; fd 72, a
 * sock_diag socket never bound (sock_diag lists bound sockets only).
 * After restore: the same port ids (fd 72 still none), groups, options
 * and filter; an RTM_GETLINK dump on fd 70 answers with
 * every link, "lo" among them, each answer addressed to its port; a
 * CTRL_CMD_GETFAMILY of "nlctrl" on fd 71 answers with its family id.
 */
#include <linux/filter.h>
#include <linux/genetlink.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <poll.h>
#include <sys/socket.h>

#include "target.h"

#define CHECK(c) do { if (!(c)) target_verdict(0, "line %d: %s", __LINE__, #c); } while (0)

#ifndef SO_GET_FILTER
#define SO_GET_FILTER SO_ATTACH_FILTER
#endif

static char buf[65536] __attribute__((aligned(8)));

static uint32_t port(int fd)
{
	struct sockaddr_nl sa;
	socklen_t len = sizeof(sa);
	CHECK(getsockname(fd, (void *)&sa, &len) == 0);
	return sa.nl_pid;
}

static int opt(int fd, int o)
{
	int v = -1;
	socklen_t len = sizeof(v);
	CHECK(getsockopt(fd, SOL_NETLINK, o, &v, &len) == 0);
	return v;
}

/* One receive on fd, waiting 10 s at most. */
static ssize_t recv_wait(int fd)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	CHECK(poll(&p, 1, 10000) == 1);
	ssize_t n = recv(fd, buf, sizeof(buf), 0);
	CHECK(n > 0);
	return n;
}

/* CTRL_CMD_GETFAMILY "nlctrl" on fd; the family id answered. */
static int genl_ctrl(int fd)
{
	struct {
		struct nlmsghdr h;
		struct genlmsghdr g;
		struct nlattr a;
		char name[8];
	} req = {
		.h = { .nlmsg_len = sizeof(req), .nlmsg_type = GENL_ID_CTRL, .nlmsg_flags = NLM_F_REQUEST, .nlmsg_seq = 7 },
		.g = { .cmd = CTRL_CMD_GETFAMILY, .version = 1 },
		.a = { .nla_len = NLA_HDRLEN + 7, .nla_type = CTRL_ATTR_FAMILY_NAME },
		.name = "nlctrl",
	};
	struct sockaddr_nl kernel = { .nl_family = AF_NETLINK };
	CHECK(sendto(fd, &req, sizeof(req), 0, (void *)&kernel, sizeof(kernel)) == sizeof(req));
	ssize_t n = recv_wait(fd);
	struct nlmsghdr *h = (void *)buf;
	CHECK(NLMSG_OK(h, (size_t)n) && h->nlmsg_type == GENL_ID_CTRL && h->nlmsg_seq == 7);
	int len = (int)(h->nlmsg_len - NLMSG_LENGTH(GENL_HDRLEN));
	for (struct nlattr *a = (void *)((char *)NLMSG_DATA(h) + GENL_HDRLEN); len >= (int)sizeof(*a) && a->nla_len >= NLA_HDRLEN;
	     len -= NLA_ALIGN(a->nla_len), a = (void *)((char *)a + NLA_ALIGN(a->nla_len)))
		if (a->nla_type == CTRL_ATTR_FAMILY_ID)
			return *(uint16_t *)((char *)a + NLA_HDRLEN);
	return -1;
}

int main(int argc, char **argv)
{
	target_init(argc, argv, 0);
	int one = 1;

	int s = socket(AF_NETLINK, SOCK_RAW, NETLINK_ROUTE);
	CHECK(s >= 0 && dup2(s, 70) == 70);
	close(s);
	struct sockaddr_nl sa = { .nl_family = AF_NETLINK, .nl_groups = RTMGRP_LINK };
	CHECK(bind(70, (void *)&sa, sizeof(sa)) == 0);
	int g = RTNLGRP_IPV4_IFADDR;
	CHECK(setsockopt(70, SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, &g, sizeof(g)) == 0);
	g = 33;
	CHECK(setsockopt(70, SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, &g, sizeof(g)) == 0);
	CHECK(setsockopt(70, SOL_NETLINK, NETLINK_NO_ENOBUFS, &one, sizeof(one)) == 0);
	CHECK(setsockopt(70, SOL_NETLINK, NETLINK_EXT_ACK, &one, sizeof(one)) == 0);
	struct sock_filter all[] = { BPF_STMT(BPF_RET | BPF_K, 0xffffffff) };
	struct sock_fprog prog = { .len = 1, .filter = all };
	CHECK(setsockopt(70, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof(prog)) == 0);
	CHECK(setsockopt(70, SOL_SOCKET, SO_LOCK_FILTER, &one, sizeof(one)) == 0);
	uint32_t port70 = port(70);
	CHECK(port70 == (uint32_t)getpid());

	s = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, NETLINK_GENERIC);
	CHECK(s >= 0 && dup3(s, 71, O_CLOEXEC) == 71);
	close(s);
	CHECK(setsockopt(71, SOL_NETLINK, NETLINK_CAP_ACK, &one, sizeof(one)) == 0);
	CHECK(genl_ctrl(71) == GENL_ID_CTRL);
	uint32_t port71 = port(71);
	CHECK(port71 != 0);
	s = socket(AF_NETLINK, SOCK_RAW, NETLINK_SOCK_DIAG);
	CHECK(s >= 0 && dup2(s, 72) == 72);
	close(s);
	CHECK(port(72) == 0);

	target_ready();
	target_wait_restored();

	CHECK(port(70) == port70 && port(71) == port71 && port(72) == 0);
	uint32_t bits[4] = { 0 };
	socklen_t len = sizeof(bits);
	CHECK(getsockopt(70, SOL_NETLINK, NETLINK_LIST_MEMBERSHIPS, bits, &len) == 0);
	if (bits[0] != ((1u << (RTNLGRP_LINK - 1)) | (1u << (RTNLGRP_IPV4_IFADDR - 1))) || bits[1] != 1)
		target_verdict(0, "fd 70's groups: 0x%x 0x%x", bits[0], bits[1]);
	len = sizeof(bits);
	CHECK(getsockopt(71, SOL_NETLINK, NETLINK_LIST_MEMBERSHIPS, bits, &len) == 0 && len == 0);
	CHECK(opt(70, NETLINK_NO_ENOBUFS) == 1 && opt(70, NETLINK_EXT_ACK) == 1 && opt(70, NETLINK_CAP_ACK) == 0);
	CHECK(opt(71, NETLINK_CAP_ACK) == 1 && opt(71, NETLINK_NO_ENOBUFS) == 0 && opt(71, NETLINK_EXT_ACK) == 0);
	CHECK((fcntl(71, F_GETFL) & O_NONBLOCK) && (fcntl(71, F_GETFD) & FD_CLOEXEC) && !(fcntl(70, F_GETFD) & FD_CLOEXEC));
	int lk = 0;
	len = sizeof(lk);
	CHECK(getsockopt(70, SOL_SOCKET, SO_LOCK_FILTER, &lk, &len) == 0 && lk == 1);
	struct sock_filter got[4];
	len = 4;
	CHECK(getsockopt(70, SOL_SOCKET, SO_GET_FILTER, got, &len) == 0 && len == 1 &&
	      !memcmp(got, all, sizeof(all)));

	/* a request and its answers */
	struct {
		struct nlmsghdr h;
		struct ifinfomsg i;
	} req = { .h = { .nlmsg_len = sizeof(req), .nlmsg_type = RTM_GETLINK,
			 .nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP, .nlmsg_seq = 42 },
		  .i = { .ifi_family = AF_UNSPEC } };
	CHECK(send(70, &req, sizeof(req), 0) == sizeof(req));
	bool lo = false, done = false;
	while (!done) {
		ssize_t n = recv_wait(70);
		for (struct nlmsghdr *h = (void *)buf; NLMSG_OK(h, (size_t)n); h = NLMSG_NEXT(h, n)) {
			if (h->nlmsg_seq != 42)
				continue; /* a notification of a group */
			CHECK(h->nlmsg_pid == port70 && h->nlmsg_type != NLMSG_ERROR);
			if (h->nlmsg_type == NLMSG_DONE) {
				done = true;
				break;
			}
			CHECK(h->nlmsg_type == RTM_NEWLINK);
			struct ifinfomsg *ifi = NLMSG_DATA(h);
			int alen = (int)(h->nlmsg_len - NLMSG_LENGTH(sizeof(*ifi)));
			for (struct rtattr *a = IFLA_RTA(ifi); RTA_OK(a, alen); a = RTA_NEXT(a, alen))
				if (a->rta_type == IFLA_IFNAME && !strcmp(RTA_DATA(a), "lo"))
					lo = true;
		}
	}
	CHECK(lo);
	CHECK(genl_ctrl(71) == GENL_ID_CTRL);
	target_pass();
}
