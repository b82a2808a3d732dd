/*
 * engine/fds/fds-socket.c: listening TCP and Unix sockets, and Unix socket
 * pairs. Established TCP connections and UDP sockets are fds-tcp.c's,
 * netlink and packet sockets fds-netlink.c's; every other socket is
 * refused by name.
 *
 * A pair is two Unix sockets, each the other's peer. When the other end is
 * not in the process, the end is still taken as one (peer_in false, its
 * peer's inode kept): in a tree the other end may be in another process,
 * and only the tree can tell (fds_tree_check(), which refuses an end
 * whose peer no process of the tree holds; fds_share() then moves both
 * ends into the shared image, where they are made as one pair).
 *
 * What is read where: family, type and listening state with getsockopt on
 * our duplicate; the bound address with getsockname; the backlog and the
 * number of connections waiting to be accepted, the peer of a Unix socket,
 * its queue length and shutdown state from sock_diag (netlink), in our
 * network namespace: a process in another one is refused.
 *
 * A Unix datagram socket that is unconnected, or connected to a named
 * socket outside the process (syslog's /dev/log), is bound again to its
 * own address if it had one and connected again to that name.
 *
 * A listening socket with connections waiting to be accepted is refused:
 * those are established connections. Bytes queued in a stream pair are
 * peeked (MSG_PEEK, not consumed) and sent again on restore; datagram and
 * seqpacket queues, names bound by relative paths or deleted since, and
 * connections made through a listener are fds-unix.c's. Queued
 * descriptors (SCM_RIGHTS) are refused. Socket options are not saved but
 * for SO_REUSEADDR and IPV6_V6ONLY of listening sockets and SO_PASSCRED
 * of Unix seqpacket and datagram sockets.
 */
#include <arpa/inet.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/sock_diag.h>
#include <linux/unix_diag.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "engine/fds/fds-int.h"

#define TCP_LISTEN_STATE 10

struct unix_info {
	uint32_t peer;   /* peer inode, 0 if none */
	uint32_t rqueue; /* bytes queued (or connections waiting, when listening) */
	uint32_t wqueue; /* backlog, when listening */
	int shutdown;
	char name[sizeof(((struct sockaddr_un *)0)->sun_path)];
	int namelen;     /* bytes of name (an abstract one starts with NUL) */
	uint32_t vfs_ino, vfs_dev; /* its socket file (0: none of its own), dev as the kernel's dev_t */
	bool found;
};

int fds_sock_diag(void *req, size_t len, bool dump, int (*cb)(struct nlmsghdr *h, void *ud), void *ud)
{
	_cleanup_close_ int fd = socket(AF_NETLINK, SOCK_DGRAM | SOCK_CLOEXEC, NETLINK_SOCK_DIAG);
	struct {
		struct nlmsghdr h;
		char body[64];
	} msg = { 0 };
	_Alignas(struct nlmsghdr) char buf[16384]; /* threads may capture at once: no static */
	int r;

	if (fd < 0)
		return negerrno();
	msg.h.nlmsg_len = NLMSG_LENGTH(len);
	msg.h.nlmsg_type = SOCK_DIAG_BY_FAMILY;
	msg.h.nlmsg_flags = NLM_F_REQUEST | (dump ? NLM_F_DUMP : 0);
	memcpy(msg.body, req, len);
	if (send(fd, &msg, msg.h.nlmsg_len, 0) < 0)
		return negerrno();
	for (;;) {
		ssize_t n = recv(fd, buf, sizeof(buf), 0);
		if (n < 0)
			return negerrno();
		if (n == 0)
			return -EIO;
		for (struct nlmsghdr *h = (void *)buf; NLMSG_OK(h, (size_t)n); h = NLMSG_NEXT(h, n)) {
			if (h->nlmsg_type == NLMSG_DONE)
				return 0;
			if (h->nlmsg_type == NLMSG_ERROR) {
				struct nlmsgerr *e = NLMSG_DATA(h);
				return e->error ? e->error : 0;
			}
			r = cb(h, ud);
			if (r)
				return r;
		}
		if (!dump)
			return 0;
	}
}

static int unix_cb(struct nlmsghdr *h, void *ud)
{
	struct unix_info *ui = ud;
	struct unix_diag_msg *m = NLMSG_DATA(h);
	int len = (int)(h->nlmsg_len - NLMSG_LENGTH(sizeof(*m)));

	ui->found = true;
	for (struct rtattr *a = (void *)(m + 1); RTA_OK(a, len); a = RTA_NEXT(a, len)) {
		if (a->rta_type == UNIX_DIAG_PEER)
			ui->peer = *(uint32_t *)RTA_DATA(a);
		else if (a->rta_type == UNIX_DIAG_RQLEN) {
			struct unix_diag_rqlen *q = RTA_DATA(a);
			ui->rqueue = q->udiag_rqueue;
			ui->wqueue = q->udiag_wqueue;
		} else if (a->rta_type == UNIX_DIAG_SHUTDOWN) {
			ui->shutdown = *(uint8_t *)RTA_DATA(a);
		} else if (a->rta_type == UNIX_DIAG_VFS) {
			struct unix_diag_vfs *v = RTA_DATA(a);
			ui->vfs_ino = v->udiag_vfs_ino;
			ui->vfs_dev = v->udiag_vfs_dev;
		} else if (a->rta_type == UNIX_DIAG_NAME) {
			ui->namelen = (int)MIN(RTA_PAYLOAD(a), sizeof(ui->name));
			memcpy(ui->name, RTA_DATA(a), (size_t)ui->namelen);
		}
	}
	return 1;
}

static int unix_info(uint64_t ino, struct unix_info *ret)
{
	struct unix_diag_req req = {
		.sdiag_family = AF_UNIX,
		.udiag_states = ~0u,
		.udiag_ino = (uint32_t)ino,
		.udiag_show = UDIAG_SHOW_PEER | UDIAG_SHOW_RQLEN | UDIAG_SHOW_NAME | UDIAG_SHOW_VFS,
		.udiag_cookie = { INET_DIAG_NOCOOKIE, INET_DIAG_NOCOOKIE },
	};
	int r;

	memset(ret, 0, sizeof(*ret));
	r = fds_sock_diag(&req, sizeof(req), false, unix_cb, ret);
	if (r < 0)
		return r;
	return ret->found ? 0 : -ENOENT;
}

struct tcp_listen_q {
	uint64_t ino;
	uint32_t backlog, waiting;
	bool found;
};

static int tcp_cb(struct nlmsghdr *h, void *ud)
{
	struct tcp_listen_q *q = ud;
	struct inet_diag_msg *m = NLMSG_DATA(h);

	if (m->idiag_inode != q->ino)
		return 0;
	q->found = true;
	q->waiting = m->idiag_rqueue;  /* listening: connections waiting */
	q->backlog = m->idiag_wqueue;  /* listening: the backlog */
	return 1;
}

static int tcp_listen_info(int family, uint64_t ino, struct tcp_listen_q *q)
{
	struct inet_diag_req_v2 req = {
		.sdiag_family = (uint8_t)family,
		.sdiag_protocol = IPPROTO_TCP,
		.idiag_states = 1u << TCP_LISTEN_STATE,
	};
	int r;

	memset(q, 0, sizeof(*q));
	q->ino = ino;
	r = fds_sock_diag(&req, sizeof(req), true, tcp_cb, q);
	if (r < 0)
		return r;
	return q->found ? 0 : -ENOENT;
}

static const char *fmt_inet(const struct sockaddr_storage *ss, char *buf, size_t len)
{
	char a[INET6_ADDRSTRLEN] = "?";

	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *s = (const void *)ss;
		inet_ntop(AF_INET, &s->sin_addr, a, sizeof(a));
		snprintf(buf, len, "%s:%u", a, ntohs(s->sin_port));
	} else if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *s = (const void *)ss;
		inet_ntop(AF_INET6, &s->sin6_addr, a, sizeof(a));
		snprintf(buf, len, "[%s]:%u", a, ntohs(s->sin6_port));
	} else {
		snprintf(buf, len, "?");
	}
	return buf;
}

static const char *type_name(int type)
{
	switch (type) {
	case SOCK_STREAM:
		return "stream";
	case SOCK_DGRAM:
		return "dgram";
	case SOCK_SEQPACKET:
		return "seqpacket";
	default:
		return NULL;
	}
}

static int getint(int fd, int level, int opt, int *ret)
{
	socklen_t len = sizeof(*ret);

	return getsockopt(fd, level, opt, ret, &len) < 0 ? negerrno() : 0;
}

static int classify_inet(struct fd_entry *e, int domain, int type, int acc)
{
	struct sockaddr_storage a = { 0 };
	socklen_t al = sizeof(a);
	char as[80];

	getsockname(e->dupfd, (void *)&a, &al);
	if (type == SOCK_STREAM && acc) {
		e->kind = FD_KIND_TCP_LISTEN;
		e->family = domain;
		e->type = type;
		memcpy(&e->addr, &a, sizeof(a));
		e->addrlen = al;
		return 1;
	}
	if (type == SOCK_STREAM || type == SOCK_DGRAM)
		return fds_tcp_classify(NULL, e, domain, type);
	return err_set(-EOPNOTSUPP, "fd %d: %s raw socket %s: not supported", e->fd,
		       domain == AF_INET ? "IPv4" : "IPv6", fmt_inet(&a, as, sizeof(as)));
}

int fds_socket_classify(struct fd_image *img, struct fd_entry *e)
{
	int domain, type, acc, r;
	struct unix_info ui;

	if (strncmp(e->link, "socket:[", 8) != 0)
		return 0;
	if ((r = getint(e->dupfd, SOL_SOCKET, SO_DOMAIN, &domain)) < 0 ||
	    (r = getint(e->dupfd, SOL_SOCKET, SO_TYPE, &type)) < 0 ||
	    (r = getint(e->dupfd, SOL_SOCKET, SO_ACCEPTCONN, &acc)) < 0)
		return err_set(r, "fd %d: %s: cannot read its family and type", e->fd, e->link);

	if (domain == AF_INET || domain == AF_INET6)
		return classify_inet(e, domain, type, acc);
	if (domain == AF_NETLINK || domain == AF_PACKET)
		return fds_net_classify(img, e, domain, type);
	if (domain != AF_UNIX)
		return err_set(-EOPNOTSUPP, "fd %d: %s socket (family %d): not supported", e->fd,
			       domain == AF_ALG ? "AF_ALG" : domain == AF_VSOCK ? "vsock" : domain == AF_XDP ? "XDP" :
			       domain == AF_BLUETOOTH ? "Bluetooth" : domain == AF_CAN ? "CAN" : "other", domain);
	if (!type_name(type))
		return err_set(-EOPNOTSUPP, "fd %d: Unix socket of type %d: not supported", e->fd, type);
	e->family = AF_UNIX;
	e->type = type;
	e->addrlen = sizeof(e->addr);
	if (getsockname(e->dupfd, (void *)&e->addr, &e->addrlen) < 0)
		return err_set(negerrno(), "fd %d: getsockname", e->fd);
	if (acc) {
		e->kind = FD_KIND_UNIX_LISTEN;
		return 1;
	}
	r = unix_info(e->st->st_ino, &ui);
	if (r < 0)
		return err_set(r == -ENOENT ? -EOPNOTSUPP : r,
			       "fd %d: Unix socket %s not found by sock_diag (another network namespace?)%s",
			       e->fd, e->link, r == -ENOENT ? ": not supported" : "");
	if (ui.peer) {
		char want[64];
		struct unix_info pi;
		bool inside = false;
		snprintf(want, sizeof(want), "socket:[%u]", ui.peer);
		for (size_t i = 0; i < img->n; i++)
			inside |= img->e[i].link && strcmp(img->e[i].link, want) == 0;
		r = unix_info(ui.peer, &pi);
		if (r < 0 && r != -ENOENT)
			return err_set(r, "fd %d: sock_diag of its peer socket:[%u]", e->fd, ui.peer);
		/* A pair: each is the other's peer (a datagram socket may be
		 * connected to one that is not connected back). The other end
		 * may be in another process of the tree: the tree decides. */
		if (r == 0 && pi.peer == e->st->st_ino) {
			e->kind = FD_KIND_UNIX_PAIR;
			e->id = MIN(e->st->st_ino, (uint64_t)ui.peer);
			e->peer_in = inside;
			e->peer_ino = ui.peer;
			return 1;
		}
		if (type != SOCK_DGRAM)
			return err_set(-EOPNOTSUPP,
				       "fd %d: Unix %s socket connected to socket:[%u]%s: not supported",
				       e->fd, type_name(type), ui.peer, inside ? "" : " outside the process");
		/* Connected to a socket by its name, if it has one. */
		if (r < 0 || pi.namelen == 0 || (pi.name[0] && pi.name[0] != '/'))
			return err_set(-EOPNOTSUPP,
				       "fd %d: Unix dgram socket connected to socket:[%u], which has no absolute name: "
				       "not supported",
				       e->fd, ui.peer);
		/* connected by a name that is gone: nothing to connect to again */
		struct stat pst;
		if (pi.name[0] && pi.vfs_ino &&
		    (lstat(pi.name, &pst) < 0 || pst.st_ino != pi.vfs_ino || !S_ISSOCK(pst.st_mode)))
			return err_set(-EOPNOTSUPP,
				       "fd %d: Unix dgram socket connected to %.*s, deleted since: not supported", e->fd,
				       pi.namelen, pi.name);
		struct sockaddr_un *pu = (void *)&e->peer;
		pu->sun_family = AF_UNIX;
		memcpy(pu->sun_path, pi.name, (size_t)pi.namelen);
		e->peerlen = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + (size_t)pi.namelen);
	} else if (type != SOCK_DGRAM) {
		return err_set(-EOPNOTSUPP, "fd %d: unconnected Unix %s socket: not supported", e->fd,
			       type_name(type));
	}
	e->kind = FD_KIND_UNIX_DGRAM;
	return 1;
}

/* Copies the stream bytes queued for reading on fd without consuming them.
 * checking: the process runs and may read meanwhile: look for queued
 * descriptors only, keep nothing. */
static int peek_stream(struct fd_entry *e, uint32_t queued, bool checking)
{
	char ctl[CMSG_SPACE(sizeof(int) * 4)];
	struct iovec iov;
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl,
			     .msg_controllen = sizeof(ctl) };
	ssize_t n;

	e->data = malloc(queued + 1);
	if (!e->data)
		return -ENOMEM;
	iov = (struct iovec){ .iov_base = e->data, .iov_len = queued + 1 };
	n = recvmsg(e->dupfd, &mh, MSG_PEEK | MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
	if (n < 0 && checking && errno == EAGAIN)
		n = 0; /* read meanwhile */
	if (n < 0)
		return err_set(negerrno(), "fd %d: cannot peek its queued bytes", e->fd);
	for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c))
		if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
			/* We were handed descriptors while peeking: drop them. */
			int *fds = (int *)CMSG_DATA(c);
			size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
			for (size_t i = 0; i < k; i++)
				close(fds[i]);
			return err_set(-EOPNOTSUPP, "fd %d: descriptors queued in a Unix socket: not supported",
				       e->fd);
		}
	if (mh.msg_flags & MSG_CTRUNC)
		return err_set(-EOPNOTSUPP, "fd %d: descriptors queued in a Unix socket: not supported", e->fd);
	if (checking) {
		free(e->data);
		e->data = NULL;
		return 0;
	}
	/* A peek stops where senders change; all or nothing. */
	if ((uint64_t)n != queued)
		return err_set(-EOPNOTSUPP, "fd %d: could peek %zd of %u queued bytes: not supported", e->fd, n,
			       queued);
	e->data_len = queued;
	return 0;
}

int fds_socket_capture(struct fd_image *img, struct fd_entry *e)
{
	char as[80];
	int v, r;

	switch (e->kind) {
	case FD_KIND_TCP_LISTEN: {
		struct tcp_listen_q q;
		r = tcp_listen_info(e->family, e->st->st_ino, &q);
		if (r < 0)
			return err_set(r == -ENOENT ? -EOPNOTSUPP : r,
				       "fd %d: listening TCP socket %s not found by sock_diag (another network "
				       "namespace?)",
				       e->fd, fmt_inet(&e->addr, as, sizeof(as)));
		if (q.waiting)
			return err_set(-EOPNOTSUPP,
				       "fd %d: listening TCP socket %s with %u connections waiting to be accepted: "
				       "not supported",
				       e->fd, fmt_inet(&e->addr, as, sizeof(as)), q.waiting);
		e->backlog = (int)q.backlog;
		if ((r = getint(e->dupfd, SOL_SOCKET, SO_REUSEADDR, &v)) < 0)
			return err_set(r, "fd %d: SO_REUSEADDR", e->fd);
		e->reuseaddr = v;
		if (e->family == AF_INET6) {
			if ((r = getint(e->dupfd, IPPROTO_IPV6, IPV6_V6ONLY, &v)) < 0)
				return err_set(r, "fd %d: IPV6_V6ONLY", e->fd);
			e->v6only = v;
		}
		return 0;
	}
	case FD_KIND_UNIX_LISTEN: {
		struct unix_info ui;
		r = unix_info(e->st->st_ino, &ui);
		if (r < 0)
			return err_set(r == -ENOENT ? -EOPNOTSUPP : r,
				       "fd %d: listening Unix socket not found by sock_diag", e->fd);
		if (ui.rqueue)
			return err_set(-EOPNOTSUPP,
				       "fd %d: listening Unix socket with %u connections waiting to be accepted: "
				       "not supported",
				       e->fd, ui.rqueue);
		e->backlog = (int)ui.wqueue;
		const struct sockaddr_un *un = (const void *)&e->addr;
		if (e->addrlen <= offsetof(struct sockaddr_un, sun_path) + 1)
			return err_set(-EOPNOTSUPP, "fd %d: listening Unix socket without an address: not supported",
				       e->fd);
		if ((r = fds_unix_name(img, e, ui.vfs_ino, ui.vfs_dev)) < 0)
			return r;
		/* who may connect: the socket file's owner and mode (a server
		 * makes it 0777, or its own user's), made again at restore */
		struct stat fst;
		char sp[PATH_MAX + sizeof(un->sun_path) + 2];
		snprintf(sp, sizeof(sp), "%s%s%.*s", e->dir ? e->dir : "", e->dir ? "/" : "",
			 (int)sizeof(un->sun_path), un->sun_path);
		if (un->sun_path[0] && !e->deleted && lstat(sp, &fst) == 0 && S_ISSOCK(fst.st_mode)) {
			e->has_owner = true;
			e->mode = fst.st_mode & 07777;
			e->uid = fst.st_uid;
			e->gid = fst.st_gid;
		}
		return 0;
	}
	case FD_KIND_UNIX_DGRAM: {
		struct unix_info ui;
		r = unix_info(e->st->st_ino, &ui);
		if (r < 0)
			return err_set(r, "fd %d: Unix socket: sock_diag", e->fd);
		if ((r = fds_unix_name(img, e, ui.vfs_ino, ui.vfs_dev)) < 0)
			return r;
		/* rqueue is the first datagram's length: a zero-length one
		 * shows none, the peek tells */
		return fds_unix_peek(e, img->checking);
	}
	case FD_KIND_UNIX_PAIR: {
		struct unix_info ui;
		r = unix_info(e->st->st_ino, &ui);
		if (r < 0)
			return err_set(r, "fd %d: Unix socket: sock_diag", e->fd);
		e->shutdown = ui.shutdown & 3;
		/* Queued stream bytes count against the sender's buffer: the
		 * refill needs the sizes the process had. */
		if ((r = getint(e->dupfd, SOL_SOCKET, SO_SNDBUF, &e->sndbuf)) < 0 ||
		    (r = getint(e->dupfd, SOL_SOCKET, SO_RCVBUF, &e->rcvbuf)) < 0)
			return err_set(r, "fd %d: Unix socket: buffer sizes", e->fd);
		if ((r = fds_unix_name(img, e, ui.vfs_ino, ui.vfs_dev)) < 0)
			return r;
		if (e->type != SOCK_STREAM)
			return fds_unix_peek(e, img->checking);
		if (!ui.rqueue)
			return 0;
		return peek_stream(e, ui.rqueue, img->checking);
	}
	default:
		return -EINVAL;
	}
}

/* Writes a Unix address as `<key>=path` or `<key>-abstract=name`; nothing
 * for an unnamed one. */
static void print_unix(struct fds_buf *b, const char *key, const char *akey,
		       const struct sockaddr_storage *ss, socklen_t len)
{
	const struct sockaddr_un *un = (const void *)ss;
	size_t off = offsetof(struct sockaddr_un, sun_path);

	if (len <= off)
		return;
	if (un->sun_path[0])
		fds_put_path(b, key, un->sun_path, strnlen(un->sun_path, len - off));
	else if (len > off + 1)
		fds_put_path(b, akey, un->sun_path + 1, len - off - 1);
}

/* Reads what print_unix wrote. Returns 1 when an address was there, 0
 * when not (an unnamed socket), -EBADMSG on a bad one. */
static int parse_unix(struct fd_line *l, const char *key, const char *akey, struct sockaddr_storage *ss,
		      socklen_t *len)
{
	struct sockaddr_un *un = (void *)ss;
	size_t off = offsetof(struct sockaddr_un, sun_path);
	char buf[sizeof(un->sun_path) + 1];
	const char *v = fds_kv(l, key);
	bool abstract = !v;
	ssize_t n;

	if (!v)
		v = fds_kv(l, akey);
	if (!v)
		return 0;
	n = fds_unescape(v, buf, sizeof(buf) - (abstract ? 1 : 0));
	/* a relative path comes with the directory it was bound in */
	if (n <= 0 || (!abstract && ((buf[0] != '/' && !fds_kv_has(l, "dir")) || strlen(buf) != (size_t)n)))
		return fds_bad(l, "%s=: not a socket address", abstract ? akey : key);
	memset(ss, 0, sizeof(*ss));
	un->sun_family = AF_UNIX;
	memcpy(un->sun_path + (abstract ? 1 : 0), buf, (size_t)n);
	/* A path is passed with its NUL; an abstract name is exact. */
	*len = (socklen_t)(off + (size_t)n + 1);
	return 1;
}

void fds_socket_print(struct fd_entry *e, struct fds_buf *b)
{
	char a[INET6_ADDRSTRLEN] = "";
	const struct sockaddr_un *un = (const void *)&e->addr;
	size_t off = offsetof(struct sockaddr_un, sun_path);

	switch (e->kind) {
	case FD_KIND_TCP_LISTEN:
		if (e->family == AF_INET) {
			const struct sockaddr_in *s = (const void *)&e->addr;
			inet_ntop(AF_INET, &s->sin_addr, a, sizeof(a));
			fds_printf(b, " family=inet addr=%s port=%u", a, ntohs(s->sin_port));
		} else {
			const struct sockaddr_in6 *s = (const void *)&e->addr;
			inet_ntop(AF_INET6, &s->sin6_addr, a, sizeof(a));
			fds_printf(b, " family=inet6 addr=%s port=%u", a, ntohs(s->sin6_port));
		}
		fds_printf(b, " backlog=%d reuseaddr=%d v6only=%d", e->backlog, e->reuseaddr, e->v6only);
		break;
	case FD_KIND_UNIX_LISTEN:
		fds_printf(b, " type=%s", type_name(e->type));
		if (un->sun_path[0])
			fds_put_path(b, "path", un->sun_path, strnlen(un->sun_path, e->addrlen - off));
		else
			fds_put_path(b, "abstract", un->sun_path + 1, e->addrlen - off - 1);
		fds_printf(b, " backlog=%d", e->backlog);
		if (e->has_owner)
			fds_printf(b, " mode=0%o uid=%u gid=%u", e->mode, (unsigned)e->uid, (unsigned)e->gid);
		fds_unix_print(e, b);
		break;
	case FD_KIND_UNIX_PAIR:
		fds_printf(b, " type=%s pair=%lu shutdown=%d sndbuf=%d rcvbuf=%d queued=%lu", type_name(e->type),
			   e->id, e->shutdown, e->sndbuf, e->rcvbuf, e->data_len);
		print_unix(b, "path", "abstract", &e->addr, e->addrlen);
		fds_unix_print(e, b);
		break;
	case FD_KIND_UNIX_DGRAM:
		print_unix(b, "path", "abstract", &e->addr, e->addrlen);
		if (e->peerlen)
			print_unix(b, "peer", "peer-abstract", &e->peer, e->peerlen);
		if (e->data_len || e->n_msgs)
			fds_printf(b, " queued=%lu", e->data_len);
		fds_unix_print(e, b);
		break;
	case FD_KIND_TCP:
	case FD_KIND_UDP:
		fds_tcp_print(e, b);
		break;
	case FD_KIND_NETLINK:
	case FD_KIND_PACKET:
		fds_net_print(e, b);
		break;
	default:
		break;
	}
}

static int parse_type(struct fd_line *l, int *ret)
{
	const char *v;
	int r = fds_kv_req(l, "type", &v);

	if (r < 0)
		return r;
	if (strcmp(v, "stream") == 0)
		*ret = SOCK_STREAM;
	else if (strcmp(v, "seqpacket") == 0)
		*ret = SOCK_SEQPACKET;
	else if (strcmp(v, "dgram") == 0)
		*ret = SOCK_DGRAM;
	else
		return fds_bad(l, "type=%s: not stream, seqpacket or dgram", v);
	return 0;
}

int fds_socket_parse(struct fd_entry *e, struct fd_line *l)
{
	const char *v;
	uint64_t u;
	int r;

	switch (e->kind) {
	case FD_KIND_TCP_LISTEN: {
		uint64_t port;
		if ((r = fds_kv_family(l, &e->family)) < 0)
			return r;
		if ((r = fds_kv_req(l, "addr", &v)) < 0 || (r = fds_kv_u64(l, "port", &port)) < 0)
			return r;
		if (port > 65535)
			return fds_bad(l, "port=%lu: out of range", port);
		if (e->family == AF_INET) {
			struct sockaddr_in *s = (void *)&e->addr;
			s->sin_family = AF_INET;
			s->sin_port = htons((uint16_t)port);
			if (inet_pton(AF_INET, v, &s->sin_addr) != 1)
				return fds_bad(l, "addr=%s: not an IPv4 address", v);
			e->addrlen = sizeof(*s);
		} else {
			struct sockaddr_in6 *s = (void *)&e->addr;
			s->sin6_family = AF_INET6;
			s->sin6_port = htons((uint16_t)port);
			if (inet_pton(AF_INET6, v, &s->sin6_addr) != 1)
				return fds_bad(l, "addr=%s: not an IPv6 address", v);
			e->addrlen = sizeof(*s);
		}
		if ((r = fds_kv_u64(l, "backlog", &u)) < 0 || (r = fds_kv_bool(l, "reuseaddr", &e->reuseaddr)) < 0 ||
		    (r = fds_kv_bool(l, "v6only", &e->v6only)) < 0)
			return r;
		if (u > INT32_MAX)
			return fds_bad(l, "backlog=%lu: out of range", u);
		e->backlog = (int)u;
		e->type = SOCK_STREAM;
		return 0;
	}
	case FD_KIND_UNIX_LISTEN: {
		struct sockaddr_un *un = (void *)&e->addr;
		size_t off = offsetof(struct sockaddr_un, sun_path);
		char buf[sizeof(un->sun_path) + 1];
		ssize_t n;
		bool abstract = false;
		if ((r = parse_type(l, &e->type)) < 0)
			return r;
		if (e->type == SOCK_DGRAM)
			return fds_bad(l, "a listening socket cannot be dgram");
		v = fds_kv(l, "path");
		if (!v) {
			v = fds_kv(l, "abstract");
			abstract = true;
		}
		if (!v)
			return fds_bad(l, "unix-listen needs path= or abstract=");
		n = fds_unescape(v, buf, sizeof(buf) - (abstract ? 1 : 0));
		if (n <= 0 || (!abstract && ((buf[0] != '/' && !fds_kv_has(l, "dir")) || strlen(buf) != (size_t)n)))
			return fds_bad(l, "%s=: not a socket address", abstract ? "abstract" : "path");
		un->sun_family = AF_UNIX;
		memcpy(un->sun_path + (abstract ? 1 : 0), buf, (size_t)n);
		e->addrlen = (socklen_t)(off + (size_t)n + (abstract ? 1 : 1));
		if (!abstract)
			e->path = strdup(buf);
		if ((r = fds_kv_u64(l, "backlog", &u)) < 0)
			return r;
		if (u > INT32_MAX)
			return fds_bad(l, "backlog=%lu: out of range", u);
		e->backlog = (int)u;
		e->family = AF_UNIX;
		if (fds_kv_has(l, "mode")) {
			uint64_t uid, gid;
			if ((r = fds_kv_mode(l, &e->mode)) < 0 || (r = fds_kv_u64(l, "uid", &uid)) < 0 ||
			    (r = fds_kv_u64(l, "gid", &gid)) < 0)
				return r;
			if (uid >= UINT32_MAX || gid >= UINT32_MAX || abstract)
				return fds_bad(l, "uid= or gid= out of range, or an owner for an abstract socket");
			e->has_owner = true;
			e->uid = (uid_t)uid;
			e->gid = (gid_t)gid;
		}
		return fds_unix_parse(e, l);
	}
	case FD_KIND_UNIX_DGRAM:
		e->family = AF_UNIX;
		e->type = SOCK_DGRAM;
		e->addr.ss_family = AF_UNIX;
		e->addrlen = sizeof(sa_family_t);
		if ((r = parse_unix(l, "path", "abstract", &e->addr, &e->addrlen)) < 0 ||
		    (r = parse_unix(l, "peer", "peer-abstract", &e->peer, &e->peerlen)) < 0)
			return r;
		if (r == 0)
			e->peerlen = 0;
		if ((r = fds_kv_u64_opt(l, "queued", 0, &e->data_len)) < 0)
			return r;
		if (e->data_len > (64u << 20))
			return fds_bad(l, "queued=%lu: too large", e->data_len);
		if ((r = fds_unix_parse(e, l)) < 0)
			return r;
		if (e->data_len && !e->n_msgs)
			return fds_bad(l, "queued= without msgs=");
		if (e->n_msgs && e->addrlen <= sizeof(sa_family_t))
			return fds_bad(l, "messages queued on an unnamed dgram socket");
		return 0;
	case FD_KIND_UNIX_PAIR:
		if ((r = parse_type(l, &e->type)) < 0 || (r = fds_kv_u64(l, "pair", &e->id)) < 0 ||
		    (r = fds_kv_u64(l, "shutdown", &u)) < 0 || (r = fds_kv_u64(l, "queued", &e->data_len)) < 0)
			return r;
		if (u > 3)
			return fds_bad(l, "shutdown=%lu: not 0 to 3", u);
		e->shutdown = (int)u;
		if ((r = fds_kv_u64(l, "sndbuf", &u)) < 0)
			return r;
		if (u > INT32_MAX)
			return fds_bad(l, "sndbuf=%lu: out of range", u);
		e->sndbuf = (int)u;
		if ((r = fds_kv_u64(l, "rcvbuf", &u)) < 0)
			return r;
		if (u > INT32_MAX)
			return fds_bad(l, "rcvbuf=%lu: out of range", u);
		e->rcvbuf = (int)u;
		if (e->data_len > (64u << 20))
			return fds_bad(l, "queued=%lu: too large", e->data_len);
		e->family = AF_UNIX;
		e->addr.ss_family = AF_UNIX;
		e->addrlen = sizeof(sa_family_t);
		if ((r = parse_unix(l, "path", "abstract", &e->addr, &e->addrlen)) < 0 ||
		    (r = fds_unix_parse(e, l)) < 0)
			return r;
		if (e->data_len && e->type != SOCK_STREAM && !e->n_msgs)
			return fds_bad(l, "queued bytes in a %s pair without msgs=", type_name(e->type));
		return 0;
	case FD_KIND_TCP:
	case FD_KIND_UDP:
		return fds_tcp_parse(e, l);
	case FD_KIND_NETLINK:
	case FD_KIND_PACKET:
		return fds_net_parse(e, l);
	default:
		return -EINVAL;
	}
}

static struct fd_entry *pair_partner(struct fd_image *img, struct fd_entry *e, int *count)
{
	struct fd_entry *found = NULL;

	*count = 0;
	for (size_t i = 0; i < img->n; i++) {
		struct fd_entry *o = &img->e[i];
		if (o != e && o->kind == FD_KIND_UNIX_PAIR && o->id == e->id) {
			found = o;
			(*count)++;
		}
	}
	return found;
}

int fds_socket_validate(struct fd_image *img)
{
	for (size_t i = 0; i < img->n; i++) {
		struct fd_entry *e = &img->e[i];
		int count;
		if (e->kind != FD_KIND_UNIX_PAIR)
			continue;
		struct fd_entry *o = pair_partner(img, e, &count);
		if (count != 1 || o->type != e->type)
			return err_set(-EBADMSG, "fds: fd %d: pair=%lu: not exactly two matching ends", e->fd, e->id);
	}
	return 0;
}

static int open_listen(struct fd_entry *e)
{
	_cleanup_close_ int fd = -1;
	char as[120];
	int one = 1, v;

	if (e->family == AF_UNIX)
		return fds_unix_open_listen(e);
	fd = socket(e->family, e->type | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return err_set(negerrno(), "fd %d: socket", e->fd);
	fmt_inet(&e->addr, as, sizeof(as));
	/* Connections of the old socket in TIME_WAIT must not block the
	 * port; the saved value is put back after listen. */
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0)
		return err_set(negerrno(), "fd %d: SO_REUSEADDR", e->fd);
	v = e->v6only;
	if (e->family == AF_INET6 && setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v, sizeof(v)) < 0)
		return err_set(negerrno(), "fd %d: IPV6_V6ONLY", e->fd);
	if (bind(fd, (const void *)&e->addr, e->addrlen) < 0)
		return err_set(negerrno(), "fd %d: cannot bind TCP socket %s again", e->fd, as);
	if (listen(fd, e->backlog) < 0)
		return err_set(negerrno(), "fd %d: cannot listen on %s again", e->fd, as);
	v = e->reuseaddr;
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &v, sizeof(v)) < 0)
		return err_set(negerrno(), "fd %d: SO_REUSEADDR", e->fd);
	return TAKE_FD(fd);
}

/* Sets a buffer size as getsockopt showed it (the kernel doubles what
 * setsockopt asks); the FORCE variant (CAP_NET_ADMIN) passes the sysctl
 * maximum. Best effort: a refill that does not fit is the error. */
static void set_buf(int fd, int opt, int force, int shown)
{
	int v = shown / 2, got;

	if (!shown)
		return;
	if (setsockopt(fd, SOL_SOCKET, opt, &v, sizeof(v)) == 0 && getint(fd, SOL_SOCKET, opt, &got) == 0 &&
	    got >= shown)
		return;
	setsockopt(fd, SOL_SOCKET, force, &v, sizeof(v));
}

static int open_pair(struct fd_image *img, struct fd_entry *e, int above)
{
	int count, sv[2], r;
	struct fd_entry *o = pair_partner(img, e, &count);

	if (!o)
		return err_set(-EBADMSG, "fd %d: pair=%lu: the other end is missing", e->fd, e->id);
	if (o->tmp_other >= 0)
		return TAKE_FD(o->tmp_other);
	if ((r = fds_unix_pair(e, o, sv)) < 0)
		return r;
	if (e->passcred)
		setsockopt(sv[0], SOL_SOCKET, SO_PASSCRED, &(int){ 1 }, sizeof(int));
	if (o->passcred)
		setsockopt(sv[1], SOL_SOCKET, SO_PASSCRED, &(int){ 1 }, sizeof(int));
	set_buf(sv[0], SO_SNDBUF, SO_SNDBUFFORCE, e->sndbuf);
	set_buf(sv[0], SO_RCVBUF, SO_RCVBUFFORCE, e->rcvbuf);
	set_buf(sv[1], SO_SNDBUF, SO_SNDBUFFORCE, o->sndbuf);
	set_buf(sv[1], SO_RCVBUF, SO_RCVBUFFORCE, o->rcvbuf);
	/* What e had queued was sent by o, and the other way round. */
	if ((r = fds_unix_refill(sv[1], e)) < 0 || (r = fds_unix_refill(sv[0], o)) < 0) {
		r = err_set(r, "fd %d: cannot refill the %s queued in its socket pair", e->fd,
			    e->type == SOCK_STREAM ? "bytes" : "messages");
		goto fail;
	}
	if ((e->shutdown && shutdown(sv[0], e->shutdown - 1) < 0) ||
	    (o->shutdown && shutdown(sv[1], o->shutdown - 1) < 0)) {
		r = err_set(negerrno(), "fd %d: cannot shut its socket pair down again", e->fd);
		goto fail;
	}
	r = fds_move_above(sv[1], above);
	if (r < 0) {
		close(sv[0]);
		return err_set(r, "fd %d: cannot move the other end of the pair", e->fd);
	}
	e->tmp_other = r;
	return sv[0];
fail:
	close(sv[0]);
	close(sv[1]);
	return r;
}

int fds_socket_open(struct fd_image *img, struct fd_entry *e, int above)
{
	switch (e->kind) {
	case FD_KIND_TCP_LISTEN:
	case FD_KIND_UNIX_LISTEN:
		return open_listen(e);
	case FD_KIND_UNIX_PAIR:
		return open_pair(img, e, above);
	case FD_KIND_UNIX_DGRAM:
		return fds_unix_open_dgram(e);
	case FD_KIND_TCP:
	case FD_KIND_UDP:
		return fds_tcp_open(img, e);
	case FD_KIND_NETLINK:
	case FD_KIND_PACKET:
		return fds_net_open(e);
	default:
		return -EINVAL;
	}
}
