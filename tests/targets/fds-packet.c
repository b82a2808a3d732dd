/*
 * Packet sockets on the loopback interface, for ethertype 0x88b5 (local
 * experimental): fd 80 raw, PACKET_AUXDATA and PACKET_IGNORE_OUTGOING set,
 * a classic BPF filter that takes only frames whose first payload byte is
 * 0xa5, a multicast membership (01:00:5e:00:00:fb on lo); fd 81 dgram,
 * TPACKET_V2, non-blocking, close-on-exec. After restore: both bound to lo
 * for 0x88b5 again, the options, the filter and the membership
 * (/proc/net/dev_mcast) there; fd 81 sends two frames on lo, one the
 * filter drops and one it takes: fd 80 receives only the second, whole,
 * with its auxiliary data, fd 81 both, in order.
 *
 * With CKPTFS_TARGET_IFACE=NAME in its environment it also holds fd 82,
 * dgram, bound to interface NAME (the test's, which it may take away
 * and make again under that name, with another index): after restore
 * fd 82 is bound to the interface that has that name now.
 */
#include <arpa/inet.h>
#include <linux/filter.h>
#include <linux/if_packet.h>
#include <net/ethernet.h>
#include <net/if.h>
#include <poll.h>
#include <sys/socket.h>

#include "target.h"

#define CHECK(c) do { if (!(c)) target_verdict(0, "line %d: %s", __LINE__, #c); } while (0)

#ifndef SO_GET_FILTER
#define SO_GET_FILTER SO_ATTACH_FILTER
#endif
#define PROTO 0x88b5

static struct sock_filter prog[] = {
	BPF_STMT(BPF_LD | BPF_B | BPF_ABS, 14),
	BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0xa5, 0, 1),
	BPF_STMT(BPF_RET | BPF_K, 0xffff),
	BPF_STMT(BPF_RET | BPF_K, 0),
};
static const unsigned char mcast[6] = { 0x01, 0x00, 0x5e, 0x00, 0x00, 0xfb };

static int popt(int fd, int o)
{
	int v = -1;
	socklen_t len = sizeof(v);
	CHECK(getsockopt(fd, SOL_PACKET, o, &v, &len) == 0);
	return v;
}

static void bound(int fd, int lo)
{
	struct sockaddr_ll sa;
	socklen_t len = sizeof(sa);
	CHECK(getsockname(fd, (void *)&sa, &len) == 0);
	if (sa.sll_ifindex != lo || ntohs(sa.sll_protocol) != PROTO)
		target_verdict(0, "fd %d bound to interface %d protocol 0x%x", fd, sa.sll_ifindex, ntohs(sa.sll_protocol));
}

/* Whether lo has our multicast address (/proc/net/dev_mcast). */
static bool has_mcast(void)
{
	char buf[16384];
	int f = open("/proc/net/dev_mcast", O_RDONLY | O_CLOEXEC);
	CHECK(f >= 0);
	ssize_t n = read(f, buf, sizeof(buf) - 1);
	close(f);
	CHECK(n >= 0);
	buf[n] = 0;
	for (char *l = strtok(buf, "\n"); l; l = strtok(NULL, "\n")) {
		char ifn[32], addr[64];
		if (sscanf(l, "%*d %31s %*d %*d %63s", ifn, addr) == 2 && !strcmp(ifn, "lo") &&
		    !strcmp(addr, "01005e0000fb"))
			return true;
	}
	return false;
}

static ssize_t recv_wait(int fd, void *buf, size_t len, struct msghdr *mh)
{
	struct pollfd p = { .fd = fd, .events = POLLIN };
	CHECK(poll(&p, 1, 10000) == 1);
	if (mh) {
		struct iovec iov = { buf, len };
		mh->msg_iov = &iov;
		mh->msg_iovlen = 1;
		return recvmsg(fd, mh, MSG_DONTWAIT);
	}
	return recv(fd, buf, len, MSG_DONTWAIT);
}

int main(int argc, char **argv)
{
	target_init(argc, argv, 0);
	int lo = (int)if_nametoindex("lo"), one = 1;
	CHECK(lo > 0);
	struct sockaddr_ll sa = { .sll_family = AF_PACKET, .sll_protocol = htons(PROTO), .sll_ifindex = lo };

	int s = socket(AF_PACKET, SOCK_RAW, 0);
	CHECK(s >= 0 && dup2(s, 80) == 80);
	close(s);
	CHECK(setsockopt(80, SOL_PACKET, PACKET_AUXDATA, &one, sizeof(one)) == 0);
	CHECK(setsockopt(80, SOL_PACKET, PACKET_IGNORE_OUTGOING, &one, sizeof(one)) == 0);
	struct sock_fprog fp = { .len = 4, .filter = prog };
	CHECK(setsockopt(80, SOL_SOCKET, SO_ATTACH_FILTER, &fp, sizeof(fp)) == 0);
	CHECK(bind(80, (void *)&sa, sizeof(sa)) == 0);
	struct packet_mreq mr = { .mr_ifindex = lo, .mr_type = PACKET_MR_MULTICAST, .mr_alen = 6 };
	memcpy(mr.mr_address, mcast, 6);
	CHECK(setsockopt(80, SOL_PACKET, PACKET_ADD_MEMBERSHIP, &mr, sizeof(mr)) == 0);

	s = socket(AF_PACKET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, htons(PROTO));
	CHECK(s >= 0 && dup3(s, 81, O_CLOEXEC) == 81);
	close(s);
	int v2 = TPACKET_V2;
	CHECK(setsockopt(81, SOL_PACKET, PACKET_VERSION, &v2, sizeof(v2)) == 0);
	CHECK(bind(81, (void *)&sa, sizeof(sa)) == 0);
	CHECK(has_mcast());
	const char *other = getenv("CKPTFS_TARGET_IFACE");
	if (other) {
		struct sockaddr_ll oa = { .sll_family = AF_PACKET, .sll_protocol = htons(PROTO),
					  .sll_ifindex = (int)if_nametoindex(other) };
		s = socket(AF_PACKET, SOCK_DGRAM, 0);
		CHECK(oa.sll_ifindex > 0 && s >= 0 && dup2(s, 82) == 82 && bind(82, (void *)&oa, sizeof(oa)) == 0);
		close(s);
	}

	target_ready();
	target_wait_restored();

	bound(80, lo);
	bound(81, lo);
	if (other)
		bound(82, (int)if_nametoindex(other));
	CHECK(popt(80, PACKET_AUXDATA) == 1 && popt(80, PACKET_IGNORE_OUTGOING) == 1 && popt(80, PACKET_VERSION) == 0);
	CHECK(popt(81, PACKET_VERSION) == TPACKET_V2 && popt(81, PACKET_AUXDATA) == 0);
	CHECK((fcntl(81, F_GETFL) & O_NONBLOCK) && (fcntl(81, F_GETFD) & FD_CLOEXEC) && !(fcntl(80, F_GETFD) & FD_CLOEXEC));
	struct sock_filter got[8];
	socklen_t len = 8;
	CHECK(getsockopt(80, SOL_SOCKET, SO_GET_FILTER, got, &len) == 0 && len == 4 && !memcmp(got, prog, sizeof(prog)));
	len = 0;
	CHECK(getsockopt(81, SOL_SOCKET, SO_GET_FILTER, NULL, &len) == 0 && len == 0);
	if (!has_mcast())
		target_verdict(0, "lo lacks the multicast address of fd 80's membership");

	/* two frames on lo: the filter drops the first */
	struct sockaddr_ll to = { .sll_family = AF_PACKET, .sll_protocol = htons(PROTO), .sll_ifindex = lo,
				  .sll_halen = 6 };
	char bad[32] = { 0x5a, 'n', 'o' }, good[32] = { (char)0xa5, 'r', 'e', 's', 't', 'o', 'r', 'e', 'd' };
	CHECK(sendto(81, bad, sizeof(bad), 0, (void *)&to, sizeof(to)) == sizeof(bad));
	CHECK(sendto(81, good, sizeof(good), 0, (void *)&to, sizeof(to)) == sizeof(good));

	char buf[256], ctl[256];
	struct msghdr mh = { .msg_control = ctl, .msg_controllen = sizeof(ctl) };
	ssize_t n = recv_wait(80, buf, sizeof(buf), &mh);
	CHECK(n == ETH_HLEN + (ssize_t)sizeof(good));
	struct ether_header *eh = (void *)buf;
	CHECK(ntohs(eh->ether_type) == PROTO && !memcmp(buf + ETH_HLEN, good, sizeof(good)));
	bool aux = false;
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c))
		aux |= c->cmsg_level == SOL_PACKET && c->cmsg_type == PACKET_AUXDATA;
	CHECK(aux);
	n = recv_wait(81, buf, sizeof(buf), NULL);
	CHECK(n == (ssize_t)sizeof(bad) && !memcmp(buf, bad, sizeof(bad)));
	n = recv_wait(81, buf, sizeof(buf), NULL);
	CHECK(n == (ssize_t)sizeof(good) && !memcmp(buf, good, sizeof(good)));
	/* nothing more for the filtered socket */
	CHECK(recv(80, buf, sizeof(buf), MSG_DONTWAIT) < 0 && errno == EAGAIN);
	target_pass();
}
