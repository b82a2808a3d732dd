/*
 * engine/fds/fds-tcp.c: established TCP connections (IPv4 and IPv6),
 * through TCP repair mode, and UDP sockets.
 *
 * TCP. fds_check() refuses a connection in any state but ESTABLISHED,
 * naming it. At capture (the process frozen) of a process to be killed,
 * every connection of it is first put under the network lock
 * (netlock.c): from then on no packet of it is processed, so the queues,
 * sequence numbers and window read next stay consistent (what arrived
 * before was acknowledged and is in the receive queue we read). A process
 * that keeps its connections is not locked (read_unlocked()). Then our duplicate of each is put
 * in repair mode (TCP_REPAIR, per socket: the process's descriptor is the
 * same socket) and read: both queues whole (TCP_REPAIR_QUEUE, a MSG_PEEK
 * of SIOCINQ/SIOCOUTQ bytes: nothing is consumed), the sequence numbers
 * they start at (TCP_QUEUE_SEQ gives their ends), the options agreed at
 * the handshake (MSS clamp, window scales, SACK, timestamps), the
 * timestamp clock (TCP_TIMESTAMP) and the window (TCP_REPAIR_WINDOW).
 *
 * What must stay true: the process never runs with a socket of its in
 * repair mode (a write would fail). fds_release() takes each out of it
 * (TCP_REPAIR_OFF_NO_WP: nothing is sent) and lifts the lock before the
 * process runs again, or, once the process is killed, closes our
 * duplicate still in repair mode, which sends no FIN or reset, and leaves
 * the lock for the restore. fds_entry_free() does the former for an
 * image dropped on any failure path.
 *
 * Restore: a new socket in repair mode takes the sequence numbers, is
 * bound to the same local address and port (repair mode lets it share a
 * port with a listener) and connected to the same peer, which in repair
 * mode sends nothing and makes it ESTABLISHED at once; then the options,
 * the timestamp clock, the queues written back (the send queue counts as
 * sent: the retransmission timer sends it again), the window, and repair
 * off. The restorer lifts the lock once the process runs (fds_unlock()):
 * the peer's retransmissions then reach the new socket. A connection with
 * both ends in the restored tree is locked by the restore itself first
 * (fds_lock_inner()): its snapshot may have been taken without a lock.
 *
 * UDP: the bound address and the peer of a connected socket; datagrams
 * queued for reading are not kept (a peek cannot see past the first
 * without changing the socket, and a restore could not send them again
 * from their senders' addresses), as UDP may lose any datagram: the dump
 * says so, and the line records the receive buffer bytes they took
 * (`dropped=`).
 */
#include <arpa/inet.h>
#include <inttypes.h>
#include <linux/sock_diag.h>
#include <linux/sockios.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/ioctl.h>

#include "engine/fds/fds-int.h"
#include "engine/netlock-int.h"

static const char *const state_names[] = {
	[1] = "ESTABLISHED", [2] = "SYN_SENT",   [3] = "SYN_RECV",   [4] = "FIN_WAIT1",
	[5] = "FIN_WAIT2",   [6] = "TIME_WAIT",  [7] = "CLOSE",      [8] = "CLOSE_WAIT",
	[9] = "LAST_ACK",    [10] = "LISTEN",    [11] = "CLOSING",
};

static const char *fmt_addr(const struct sockaddr_storage *ss, char *buf, size_t len)
{
	char a[INET6_ADDRSTRLEN] = "?";

	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *s = (const void *)ss;
		inet_ntop(AF_INET, &s->sin_addr, a, sizeof(a));
		snprintf(buf, len, "%s:%u", a, ntohs(s->sin_port));
	} else {
		const struct sockaddr_in6 *s = (const void *)ss;
		inet_ntop(AF_INET6, &s->sin6_addr, a, sizeof(a));
		snprintf(buf, len, "[%s]:%u", a, ntohs(s->sin6_port));
	}
	return buf;
}

/* "TCP connection A -> B", for messages. */
static const char *conn_name(const struct fd_entry *e, char *buf, size_t len)
{
	char a[80], p[80];

	snprintf(buf, len, "%s %s -> %s", e->kind == FD_KIND_UDP ? "UDP socket" : "TCP connection",
		 fmt_addr(&e->addr, a, sizeof(a)), e->peerlen ? fmt_addr(&e->peer, p, sizeof(p)) : "(none)");
	return buf;
}

static int getint(int fd, int level, int opt, int *ret)
{
	socklen_t len = sizeof(*ret);

	return getsockopt(fd, level, opt, ret, &len) < 0 ? negerrno() : 0;
}

static int setint(int fd, int level, int opt, int v)
{
	return setsockopt(fd, level, opt, &v, sizeof(v)) < 0 ? negerrno() : 0;
}

int fds_tcp_classify(struct fd_image *img, struct fd_entry *e, int domain, int type)
{
	struct tcp_info ti = { 0 };
	socklen_t len = sizeof(ti);
	char name[200];
	int proto;

	e->family = domain;
	e->type = type;
	e->addrlen = sizeof(e->addr);
	e->peerlen = sizeof(e->peer);
	if (getsockname(e->dupfd, (void *)&e->addr, &e->addrlen) < 0)
		return err_set(negerrno(), "fd %d: getsockname", e->fd);
	if (getpeername(e->dupfd, (void *)&e->peer, &e->peerlen) < 0)
		e->peerlen = 0;
	if (type == SOCK_DGRAM) {
		if (getint(e->dupfd, SOL_SOCKET, SO_PROTOCOL, &proto) < 0 || proto != IPPROTO_UDP)
			return err_set(-EOPNOTSUPP, "fd %d: %s datagram socket of protocol %d: not supported", e->fd,
				       domain == AF_INET ? "IPv4" : "IPv6", proto);
		e->kind = FD_KIND_UDP;
		return 1;
	}
	if (getsockopt(e->dupfd, IPPROTO_TCP, TCP_INFO, &ti, &len) < 0)
		return err_set(negerrno(), "fd %d: TCP_INFO", e->fd);
	if (ti.tcpi_state != 1 || !e->peerlen) {
		unsigned s = ti.tcpi_state;
		if (s == 7 && !e->peerlen)
			return err_set(-EOPNOTSUPP, "fd %d: unconnected TCP socket %s: not supported", e->fd,
				       fmt_addr(&e->addr, name, sizeof(name)));
		return err_set(-EOPNOTSUPP, "fd %d: %s in state %s: not supported", e->fd,
			       conn_name(e, name, sizeof(name)),
			       s < ARRAY_SIZE(state_names) && state_names[s] ? state_names[s] : "?");
	}
	e->kind = FD_KIND_TCP;
	e->tcp = calloc(1, sizeof(*e->tcp));
	return e->tcp ? 1 : -ENOMEM;
}

static void to_lock(const struct fd_entry *e, struct netlock_conn *c)
{
	memset(c, 0, sizeof(*c));
	memcpy(&c->local, &e->addr, sizeof(e->addr));
	memcpy(&c->peer, &e->peer, sizeof(e->peer));
}

int fds_tcp_lock(struct fd_image *img)
{
	_cleanup_free_ struct netlock_conn *c = NULL;
	size_t n = 0;
	int r;

	for (size_t i = 0; i < img->n; i++)
		n += img->e[i].kind == FD_KIND_TCP;
	if (!n)
		return 0;
	c = calloc(n, sizeof(*c));
	if (!c)
		return -ENOMEM;
	n = 0;
	for (size_t i = 0; i < img->n; i++)
		if (img->e[i].kind == FD_KIND_TCP)
			to_lock(&img->e[i], &c[n++]);
	uint64_t t0 = now_ns();
	r = netlock_add(c, n);
	if (r < 0)
		return fds_err_prefix(r, "pid %d: %zu TCP connections", img->pid, n);
	log_debug("pid %d: %zu TCP connections locked in %" PRIu64 " us", img->pid, n, (now_ns() - t0) / 1000);
	for (size_t i = 0; i < img->n; i++)
		if (img->e[i].kind == FD_KIND_TCP)
			img->e[i].tcp->locked = true;
	return 0;
}

/* Peeks len bytes of the queue selected (TCP_REPAIR_QUEUE) into buf. */
static int peek_queue(struct fd_entry *e, int q, void *buf, uint32_t len)
{
	uint32_t got = 0;
	ssize_t n;

	if (!len)
		return 0;
	n = recv(e->dupfd, buf, len, MSG_PEEK | MSG_DONTWAIT);
	if (n >= 0)
		got = (uint32_t)n;
	if (n < 0 || got != len || fault_hit(FAULT_ENGINE_TCP_QUEUE))
		return err_set(n < 0 ? negerrno() : -EIO, "fd %d: could read %u of the %u bytes of its %s queue", e->fd,
			       got, len, q == TCP_RECV_QUEUE ? "receive" : "send");
	return 0;
}

static int queue_seq(struct fd_entry *e, int q, uint32_t *ret)
{
	int v, r;

	if ((r = setint(e->dupfd, IPPROTO_TCP, TCP_REPAIR_QUEUE, q)) < 0 ||
	    (r = getint(e->dupfd, IPPROTO_TCP, TCP_QUEUE_SEQ, &v)) < 0)
		return err_set(r, "fd %d: TCP_QUEUE_SEQ", e->fd);
	*ret = (uint32_t)v;
	return 0;
}

/* Without the lock, packets still come while the process is frozen: data
 * (rcv_nxt grows, the receive queue with it) and acknowledgements (the
 * send queue shrinks from its head). What the frozen process alone moves
 * stays: where it reads (copied_seq) and where it writes (write_seq). So
 * the receive queue's size is taken between two equal readings of its
 * end, and the send queue is what one peek (under the socket's lock)
 * still finds before write_seq. e->data holds room for both already. */
static int read_unlocked(struct fd_entry *e)
{
	struct fd_tcp *t = e->tcp;
	uint32_t a, b, got = 0;
	int inq, r;

	for (int tries = 0;; tries++) {
		if ((r = queue_seq(e, TCP_RECV_QUEUE, &a)) < 0)
			return r;
		if (ioctl(e->dupfd, SIOCINQ, &inq) < 0 || inq < 0)
			return err_set(negerrno(), "fd %d: SIOCINQ", e->fd);
		if ((r = queue_seq(e, TCP_RECV_QUEUE, &b)) < 0)
			return r;
		if (a == b)
			break;
		if (tries == 100)
			return err_set(-EAGAIN, "fd %d: its receive queue kept growing while it was read", e->fd);
	}
	/* more may have come since SIOCOUTQ and SIOCINQ sized the buffer */
	if ((uint32_t)inq > t->inq) {
		void *p = realloc(e->data, (size_t)inq + t->outq + 1);
		if (!p)
			return -ENOMEM;
		e->data = p;
	}
	t->inq = (uint32_t)inq;
	t->rcv_seq = a;
	if ((r = peek_queue(e, TCP_RECV_QUEUE, e->data, t->inq)) < 0)
		return r;
	if ((r = queue_seq(e, TCP_SEND_QUEUE, &t->snd_seq)) < 0)
		return r;
	if (t->outq) {
		ssize_t n = recv(e->dupfd, (char *)e->data + t->inq, t->outq, MSG_PEEK | MSG_DONTWAIT);
		if (n < 0 && errno != EAGAIN)
			return err_set(negerrno(), "fd %d: could not read its send queue", e->fd);
		got = n > 0 ? (uint32_t)n : 0;
	}
	t->outq = got; /* acknowledged meanwhile: gone from the head */
	e->data_len = (uint64_t)t->inq + t->outq;
	return 0;
}

int fds_tcp_capture(struct fd_image *img, struct fd_entry *e)
{
	struct fd_tcp *t = e->tcp;
	struct tcp_info ti = { 0 };
	socklen_t len;
	int inq, outq, v, r;
	char name[200];

	if (e->kind == FD_KIND_UDP) {
		if (e->family == AF_INET6) {
			if ((r = getint(e->dupfd, IPPROTO_IPV6, IPV6_V6ONLY, &v)) < 0)
				return err_set(r, "fd %d: IPV6_V6ONLY", e->fd);
			e->v6only = v;
		}
		if ((r = getint(e->dupfd, SOL_SOCKET, SO_REUSEADDR, &v)) < 0)
			return err_set(r, "fd %d: SO_REUSEADDR", e->fd);
		e->reuseaddr = v;
		uint32_t mem[SK_MEMINFO_VARS] = { 0 };
		len = sizeof(mem);
		if (getsockopt(e->dupfd, SOL_SOCKET, SO_MEMINFO, mem, &len) < 0)
			return err_set(negerrno(), "fd %d: SO_MEMINFO", e->fd);
		e->dropped = mem[SK_MEMINFO_RMEM_ALLOC];
		if (e->dropped && !img->checking) {
			conn_name(e, name, sizeof(name));
			log_warn("fd %d: %s: datagrams queued and not read (%" PRIu64 " bytes of its receive buffer) "
				 "are not kept",
				 e->fd, name, e->dropped);
		}
		return 0;
	}
	/* fds_check: the state was checked by classify; nothing is touched */
	if (img->checking)
		return 0;
	conn_name(e, name, sizeof(name));
	if (fault_hit(FAULT_ENGINE_TCP_REPAIR))
		return err_set(-EIO, "fd %d: %s: repair mode: injected fault", e->fd, name);
	if ((r = setint(e->dupfd, IPPROTO_TCP, TCP_REPAIR, TCP_REPAIR_ON)) < 0)
		return err_set(r, "fd %d: %s: cannot enter TCP repair mode", e->fd, name);
	t->repair = true;

	len = sizeof(ti);
	if (getsockopt(e->dupfd, IPPROTO_TCP, TCP_INFO, &ti, &len) < 0)
		return err_set(negerrno(), "fd %d: TCP_INFO", e->fd);
	t->sack = ti.tcpi_options & TCPI_OPT_SACK;
	t->tstamp = ti.tcpi_options & TCPI_OPT_TIMESTAMPS;
	t->wscale = ti.tcpi_options & TCPI_OPT_WSCALE;
	t->snd_wscale = ti.tcpi_snd_wscale;
	t->rcv_wscale = ti.tcpi_rcv_wscale;
	/* in repair mode: the clamp agreed at the handshake, not the cache */
	if ((r = getint(e->dupfd, IPPROTO_TCP, TCP_MAXSEG, &t->mss)) < 0)
		return err_set(r, "fd %d: TCP_MAXSEG", e->fd);
	if (t->tstamp && (r = getint(e->dupfd, IPPROTO_TCP, TCP_TIMESTAMP, &v)) < 0)
		return err_set(r, "fd %d: TCP_TIMESTAMP", e->fd);
	t->timestamp = t->tstamp ? (uint32_t)v : 0;
	len = sizeof(t->win);
	if (getsockopt(e->dupfd, IPPROTO_TCP, TCP_REPAIR_WINDOW, &t->win, &len) < 0)
		return err_set(negerrno(), "fd %d: TCP_REPAIR_WINDOW", e->fd);
	if ((r = getint(e->dupfd, IPPROTO_TCP, TCP_NODELAY, &v)) < 0)
		return err_set(r, "fd %d: TCP_NODELAY", e->fd);
	t->nodelay = v;
	if ((r = getint(e->dupfd, SOL_SOCKET, SO_KEEPALIVE, &v)) < 0)
		return err_set(r, "fd %d: SO_KEEPALIVE", e->fd);
	t->keepalive = v;
	if ((r = getint(e->dupfd, SOL_SOCKET, SO_SNDBUF, &e->sndbuf)) < 0 ||
	    (r = getint(e->dupfd, SOL_SOCKET, SO_RCVBUF, &e->rcvbuf)) < 0)
		return err_set(r, "fd %d: SO_SNDBUF, SO_RCVBUF", e->fd);

	if (ioctl(e->dupfd, SIOCINQ, &inq) < 0 || ioctl(e->dupfd, SIOCOUTQ, &outq) < 0 || inq < 0 || outq < 0)
		return err_set(negerrno(), "fd %d: %s: cannot size its queues", e->fd, name);
	t->inq = (uint32_t)inq;
	t->outq = (uint32_t)outq;
	e->data_len = t->inq + (uint64_t)t->outq;
	e->data = malloc(e->data_len + 1);
	if (!e->data)
		return -ENOMEM;
	/* TCP_QUEUE_SEQ is where each queue ends: rcv_nxt, write_seq */
	if (t->locked) {
		if ((r = queue_seq(e, TCP_RECV_QUEUE, &t->rcv_seq)) < 0 ||
		    (r = peek_queue(e, TCP_RECV_QUEUE, e->data, t->inq)) < 0 ||
		    (r = queue_seq(e, TCP_SEND_QUEUE, &t->snd_seq)) < 0 ||
		    (r = peek_queue(e, TCP_SEND_QUEUE, (char *)e->data + t->inq, t->outq)) < 0)
			goto fail;
	} else {
		r = read_unlocked(e);
		if (r < 0)
			goto fail;
	}
	t->rcv_seq -= t->inq;
	t->snd_seq -= t->outq;
	if ((r = setint(e->dupfd, IPPROTO_TCP, TCP_REPAIR_QUEUE, TCP_NO_QUEUE)) < 0)
		goto fail;
	return 0;
fail:
	return fds_err_prefix(r, "%s", name);
}

/* Takes our duplicate out of repair mode, without a window probe. */
static void repair_off(struct fd_entry *e)
{
	if (e->dupfd >= 0 && e->tcp->repair &&
	    setint(e->dupfd, IPPROTO_TCP, TCP_REPAIR, TCP_REPAIR_OFF_NO_WP) < 0)
		log_debug_errno(negerrno(), "fd %d: cannot leave TCP repair mode", e->fd);
	e->tcp->repair = false;
}

void fds_tcp_free(struct fd_entry *e)
{
	struct netlock_conn c;

	if (!e->tcp)
		return;
	if (!e->tcp->keep) {
		repair_off(e);
		if (e->tcp->locked) {
			to_lock(e, &c);
			if (netlock_del(&c, 1) < 0)
				log_debug("%s", err_msg());
		}
	}
	free(e->tcp);
	e->tcp = NULL;
}

int fds_tcp_release(struct fd_image *img, bool killed)
{
	_cleanup_free_ struct netlock_conn *c = calloc(img->n + 1, sizeof(*c));
	size_t n = 0;

	if (!c)
		return -ENOMEM;
	for (size_t i = 0; i < img->n; i++) {
		struct fd_entry *e = &img->e[i];
		if (e->kind != FD_KIND_TCP || !e->tcp)
			continue;
		if (killed) {
			/* closed in repair mode: no FIN, no reset; the lock
			 * holds the peer's packets until the restore */
			e->tcp->keep = true;
		} else {
			repair_off(e);
			if (e->tcp->locked)
				to_lock(e, &c[n++]);
			e->tcp->locked = false;
		}
		if (e->dupfd >= 0)
			close(e->dupfd);
		e->dupfd = -1;
	}
	return netlock_del(c, n);
}

int fds_held(struct fd_image *img, int **ret_fds, struct netlock_conn **ret_conns, size_t *ret_n)
{
	_cleanup_free_ int *fds = NULL;
	_cleanup_free_ struct netlock_conn *c = NULL;
	size_t n = 0;

	*ret_fds = NULL;
	*ret_conns = NULL;
	*ret_n = 0;
	for (size_t i = 0; i < img->n; i++)
		n += img->e[i].kind == FD_KIND_TCP && img->e[i].tcp && img->e[i].tcp->repair;
	if (!n)
		return 0;
	fds = calloc(n, sizeof(*fds));
	c = calloc(n, sizeof(*c));
	if (!fds || !c)
		return -ENOMEM;
	n = 0;
	for (size_t i = 0; i < img->n; i++) {
		struct fd_entry *e = &img->e[i];
		if (e->kind != FD_KIND_TCP || !e->tcp || !e->tcp->repair)
			continue;
		fds[n] = e->fd;
		to_lock(e, &c[n++]);
	}
	*ret_fds = TAKE_PTR(fds);
	*ret_conns = TAKE_PTR(c);
	*ret_n = n;
	return 0;
}

static bool same_addr(const struct sockaddr_storage *a, const struct sockaddr_storage *b)
{
	if (a->ss_family != b->ss_family)
		return false;
	if (a->ss_family == AF_INET) {
		const struct sockaddr_in *x = (const void *)a, *y = (const void *)b;
		return x->sin_port == y->sin_port && x->sin_addr.s_addr == y->sin_addr.s_addr;
	}
	const struct sockaddr_in6 *x = (const void *)a, *y = (const void *)b;
	return x->sin6_port == y->sin6_port && !memcmp(&x->sin6_addr, &y->sin6_addr, sizeof(x->sin6_addr));
}

int fds_lock_inner(struct fd_image **imgs, size_t n, bool lock)
{
	struct netlock_conn *c = NULL;
	size_t nc = 0, cap = 0;
	int r;

	for (size_t i = 0; i < n; i++)
		for (size_t j = 0; imgs[i] && j < imgs[i]->n; j++) {
			struct fd_entry *e = &imgs[i]->e[j];
			bool inner = false;
			if (e->kind != FD_KIND_TCP)
				continue;
			for (size_t k = 0; k < n && !inner; k++)
				for (size_t m = 0; imgs[k] && m < imgs[k]->n && !inner; m++) {
					struct fd_entry *o = &imgs[k]->e[m];
					inner = o->kind == FD_KIND_TCP && same_addr(&o->addr, &e->peer) &&
						same_addr(&o->peer, &e->addr);
				}
			if (!inner)
				continue;
			if (nc == cap) {
				struct netlock_conn *g = realloc(c, (cap = cap ? 2 * cap : 8) * sizeof(*c));
				if (!g) {
					free(c);
					return -ENOMEM;
				}
				c = g;
			}
			to_lock(e, &c[nc++]);
		}
	r = lock ? netlock_add(c, nc) : netlock_del(c, nc);
	free(c);
	return r;
}

int fds_tcp_unlock(struct fd_image *img)
{
	_cleanup_free_ struct netlock_conn *c = calloc(img->n + 1, sizeof(*c));
	size_t n = 0;

	if (!c)
		return -ENOMEM;
	for (size_t i = 0; i < img->n; i++)
		if (img->e[i].kind == FD_KIND_TCP)
			to_lock(&img->e[i], &c[n++]);
	return netlock_del(c, n);
}

/* ---- text ---------------------------------------------------------------- */

static void put_addr(struct fds_buf *b, const char *akey, const char *pkey, const struct sockaddr_storage *ss)
{
	char a[INET6_ADDRSTRLEN] = "";

	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *s = (const void *)ss;
		inet_ntop(AF_INET, &s->sin_addr, a, sizeof(a));
		fds_printf(b, " %s=%s %s=%u", akey, a, pkey, ntohs(s->sin_port));
	} else {
		const struct sockaddr_in6 *s = (const void *)ss;
		inet_ntop(AF_INET6, &s->sin6_addr, a, sizeof(a));
		fds_printf(b, " %s=%s %s=%u", akey, a, pkey, ntohs(s->sin6_port));
	}
}

void fds_tcp_print(struct fd_entry *e, struct fds_buf *b)
{
	const struct fd_tcp *t = e->tcp;

	fds_printf(b, " family=%s", e->family == AF_INET ? "inet" : "inet6");
	put_addr(b, "addr", "port", &e->addr);
	if (e->peerlen)
		put_addr(b, "peer-addr", "peer-port", &e->peer);
	if (e->kind == FD_KIND_UDP) {
		fds_printf(b, " reuseaddr=%d v6only=%d", e->reuseaddr, e->v6only);
		if (e->dropped)
			fds_printf(b, " dropped=%" PRIu64, e->dropped);
		return;
	}
	fds_printf(b, " snd-seq=%u rcv-seq=%u inq=%u outq=%u mss=%d sack=%d ts=%d timestamp=%u", t->snd_seq,
		   t->rcv_seq, t->inq, t->outq, t->mss, t->sack, t->tstamp, t->timestamp);
	if (t->wscale)
		fds_printf(b, " snd-wscale=%u rcv-wscale=%u", t->snd_wscale, t->rcv_wscale);
	fds_printf(b, " snd-wl1=%u snd-wnd=%u max-window=%u rcv-wnd=%u rcv-wup=%u nodelay=%d keepalive=%d",
		   t->win.snd_wl1, t->win.snd_wnd, t->win.max_window, t->win.rcv_wnd, t->win.rcv_wup, t->nodelay,
		   t->keepalive);
	fds_printf(b, " sndbuf=%d rcvbuf=%d", e->sndbuf, e->rcvbuf);
}

static int parse_addr(struct fd_line *l, int family, const char *akey, const char *pkey,
		      struct sockaddr_storage *ss, socklen_t *len)
{
	const char *v;
	uint64_t port;
	int r;

	if ((r = fds_kv_req(l, akey, &v)) < 0 || (r = fds_kv_u64(l, pkey, &port)) < 0)
		return r;
	if (port > 65535)
		return fds_bad(l, "%s=%lu: out of range", pkey, port);
	memset(ss, 0, sizeof(*ss));
	if (family == AF_INET) {
		struct sockaddr_in *s = (void *)ss;
		s->sin_family = AF_INET;
		s->sin_port = htons((uint16_t)port);
		if (inet_pton(AF_INET, v, &s->sin_addr) != 1)
			return fds_bad(l, "%s=%s: not an IPv4 address", akey, v);
		*len = sizeof(*s);
	} else {
		struct sockaddr_in6 *s = (void *)ss;
		s->sin6_family = AF_INET6;
		s->sin6_port = htons((uint16_t)port);
		if (inet_pton(AF_INET6, v, &s->sin6_addr) != 1)
			return fds_bad(l, "%s=%s: not an IPv6 address", akey, v);
		*len = sizeof(*s);
	}
	return 0;
}

static int kv_u32(struct fd_line *l, const char *key, uint32_t *ret)
{
	uint64_t u;
	int r = fds_kv_u64(l, key, &u);

	if (r < 0)
		return r;
	if (u > UINT32_MAX)
		return fds_bad(l, "%s=%lu: out of range", key, u);
	*ret = (uint32_t)u;
	return 0;
}

int fds_tcp_parse(struct fd_entry *e, struct fd_line *l)
{
	struct fd_tcp *t;
	uint32_t u = 0;
	int r;

	if ((r = fds_kv_family(l, &e->family)) < 0)
		return r;
	if ((r = parse_addr(l, e->family, "addr", "port", &e->addr, &e->addrlen)) < 0)
		return r;
	if (fds_kv_has(l, "peer-addr") || e->kind == FD_KIND_TCP) {
		if ((r = parse_addr(l, e->family, "peer-addr", "peer-port", &e->peer, &e->peerlen)) < 0)
			return r;
	}
	if (e->kind == FD_KIND_UDP) {
		e->type = SOCK_DGRAM;
		if ((r = fds_kv_bool(l, "reuseaddr", &e->reuseaddr)) < 0 ||
		    (r = fds_kv_bool(l, "v6only", &e->v6only)) < 0 ||
		    (r = fds_kv_u64_opt(l, "dropped", 0, &e->dropped)) < 0)
			return r;
		return 0;
	}
	e->type = SOCK_STREAM;
	t = e->tcp = calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	if ((r = kv_u32(l, "snd-seq", &t->snd_seq)) < 0 || (r = kv_u32(l, "rcv-seq", &t->rcv_seq)) < 0 ||
	    (r = kv_u32(l, "inq", &t->inq)) < 0 || (r = kv_u32(l, "outq", &t->outq)) < 0 ||
	    (r = kv_u32(l, "mss", &u)) < 0 || (r = fds_kv_bool(l, "sack", &t->sack)) < 0 ||
	    (r = fds_kv_bool(l, "ts", &t->tstamp)) < 0 || (r = kv_u32(l, "timestamp", &t->timestamp)) < 0 ||
	    (r = kv_u32(l, "snd-wl1", &t->win.snd_wl1)) < 0 || (r = kv_u32(l, "snd-wnd", &t->win.snd_wnd)) < 0 ||
	    (r = kv_u32(l, "max-window", &t->win.max_window)) < 0 ||
	    (r = kv_u32(l, "rcv-wnd", &t->win.rcv_wnd)) < 0 || (r = kv_u32(l, "rcv-wup", &t->win.rcv_wup)) < 0 ||
	    (r = fds_kv_bool(l, "nodelay", &t->nodelay)) < 0 || (r = fds_kv_bool(l, "keepalive", &t->keepalive)) < 0)
		return r;
	if (u == 0 || u > 65535)
		return fds_bad(l, "mss=%u: out of range", u);
	uint32_t sb, rb;
	if ((r = kv_u32(l, "sndbuf", &sb)) < 0 || (r = kv_u32(l, "rcvbuf", &rb)) < 0)
		return r;
	if (sb > INT32_MAX || rb > INT32_MAX)
		return fds_bad(l, "sndbuf= or rcvbuf= out of range");
	e->sndbuf = (int)sb;
	e->rcvbuf = (int)rb;
	t->mss = (int)u;
	if (fds_kv_has(l, "snd-wscale")) {
		if ((r = kv_u32(l, "snd-wscale", &t->snd_wscale)) < 0 || (r = kv_u32(l, "rcv-wscale", &t->rcv_wscale)) < 0)
			return r;
		if (t->snd_wscale > 14 || t->rcv_wscale > 14)
			return fds_bad(l, "a window scale above 14");
		t->wscale = true;
	}
	if ((uint64_t)t->inq + t->outq > (64u << 20))
		return fds_bad(l, "inq=%u outq=%u: too large", t->inq, t->outq);
	e->data_len = (uint64_t)t->inq + t->outq;
	return 0;
}

/* ---- restore -------------------------------------------------------------- */

int fds_tcp_check_host(struct fd_image *img, struct fd_entry *e)
{
	_cleanup_close_ int fd = -1;
	struct sockaddr_storage a;
	char name[200];

	if (e->kind != FD_KIND_TCP && e->kind != FD_KIND_UDP)
		return 0;
	/* the local address must be this host's: port 0 asks for no port */
	memcpy(&a, &e->addr, sizeof(a));
	if (a.ss_family == AF_INET)
		((struct sockaddr_in *)&a)->sin_port = 0;
	else
		((struct sockaddr_in6 *)&a)->sin6_port = 0;
	fd = socket(e->family, e->type | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return err_set(negerrno(), "fd %d: socket", e->fd);
	if (bind(fd, (void *)&a, e->addrlen) < 0 && errno == EADDRNOTAVAIL)
		return err_set(-EADDRNOTAVAIL,
			       "fd %d: %s: its local address is not on this host: the connection cannot be restored here",
			       e->fd, conn_name(e, name, sizeof(name)));
	return 0;
}

static int send_queue(int fd, int q, const char *data, uint32_t len)
{
	int r = setint(fd, IPPROTO_TCP, TCP_REPAIR_QUEUE, q);

	if (r < 0)
		return r;
	for (uint32_t off = 0; off < len;) {
		ssize_t n = send(fd, data + off, len - off, MSG_DONTWAIT | MSG_NOSIGNAL);
		if (n <= 0)
			return n < 0 ? negerrno() : -EIO;
		off += (uint32_t)n;
	}
	return 0;
}

/* Room for a queue of len bytes written back in repair mode (which
 * waits for buffer space like any write): at least the size shown at
 * dump, at least twice the bytes (their skbs' overhead). The FORCE
 * variant passes the sysctl maximum; the kernel doubles what is asked. */
static int set_room(int fd, int opt, int force, int shown, uint32_t len)
{
	uint64_t want = MAX((uint64_t)shown, 2 * (uint64_t)len + 65536);
	int v = (int)MIN(want / 2, (uint64_t)INT32_MAX / 2);

	if (setsockopt(fd, SOL_SOCKET, force, &v, sizeof(v)) < 0 && setsockopt(fd, SOL_SOCKET, opt, &v, sizeof(v)) < 0)
		return negerrno();
	return 0;
}

static int open_udp(struct fd_entry *e)
{
	_cleanup_close_ int fd = socket(e->family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	char name[200];
	bool bound;

	if (fd < 0)
		return err_set(negerrno(), "fd %d: socket", e->fd);
	conn_name(e, name, sizeof(name));
	if (e->family == AF_INET6 && setint(fd, IPPROTO_IPV6, IPV6_V6ONLY, e->v6only) < 0)
		return err_set(negerrno(), "fd %d: IPV6_V6ONLY", e->fd);
	if (e->reuseaddr && setint(fd, SOL_SOCKET, SO_REUSEADDR, 1) < 0)
		return err_set(negerrno(), "fd %d: SO_REUSEADDR", e->fd);
	bound = e->family == AF_INET ? ((struct sockaddr_in *)&e->addr)->sin_port
				     : ((struct sockaddr_in6 *)&e->addr)->sin6_port;
	if (bound && bind(fd, (void *)&e->addr, e->addrlen) < 0)
		return err_set(negerrno(), "fd %d: %s: cannot bind it again", e->fd, name);
	if (e->peerlen && connect(fd, (void *)&e->peer, e->peerlen) < 0)
		return err_set(negerrno(), "fd %d: %s: cannot connect it again", e->fd, name);
	return TAKE_FD(fd);
}

int fds_tcp_open(struct fd_image *img, struct fd_entry *e)
{
	const struct fd_tcp *t = e->tcp;
	_cleanup_close_ int fd = -1;
	struct tcp_repair_opt opts[4];
	unsigned n = 0;
	char name[200];
	int r;

	if (e->kind == FD_KIND_UDP)
		return open_udp(e);
	conn_name(e, name, sizeof(name));
	fd = socket(e->family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return err_set(negerrno(), "fd %d: socket", e->fd);
	if ((r = setint(fd, IPPROTO_TCP, TCP_REPAIR, TCP_REPAIR_ON)) < 0)
		return err_set(r, "fd %d: %s: cannot enter TCP repair mode", e->fd, name);
	/* where the queues start, before connect makes the connection */
	if ((r = setint(fd, IPPROTO_TCP, TCP_REPAIR_QUEUE, TCP_SEND_QUEUE)) < 0 ||
	    (r = setint(fd, IPPROTO_TCP, TCP_QUEUE_SEQ, (int)t->snd_seq)) < 0 ||
	    (r = setint(fd, IPPROTO_TCP, TCP_REPAIR_QUEUE, TCP_RECV_QUEUE)) < 0 ||
	    (r = setint(fd, IPPROTO_TCP, TCP_QUEUE_SEQ, (int)t->rcv_seq)) < 0)
		return err_set(r, "fd %d: %s: cannot set its sequence numbers", e->fd, name);
	if (bind(fd, (void *)&e->addr, e->addrlen) < 0)
		return err_set(negerrno(), "fd %d: %s: cannot bind its local address again", e->fd, name);
	/* in repair mode: no handshake, ESTABLISHED at once. EADDRNOTAVAIL:
	 * the same connection exists (the original runs on) */
	if (connect(fd, (void *)&e->peer, e->peerlen) < 0)
		return err_set(negerrno(), "fd %d: %s: cannot connect it again%s", e->fd, name,
			       errno == EADDRNOTAVAIL ? " (is the original still there?)" : "");
	opts[n++] = (struct tcp_repair_opt){ TCPOPT_MAXSEG, (uint32_t)t->mss };
	if (t->wscale)
		opts[n++] = (struct tcp_repair_opt){ TCPOPT_WINDOW, t->snd_wscale | (t->rcv_wscale << 16) };
	if (t->sack)
		opts[n++] = (struct tcp_repair_opt){ TCPOPT_SACK_PERMITTED, 0 };
	if (t->tstamp)
		opts[n++] = (struct tcp_repair_opt){ TCPOPT_TIMESTAMP, 0 };
	if (setsockopt(fd, IPPROTO_TCP, TCP_REPAIR_OPTIONS, opts, n * sizeof(opts[0])) < 0)
		return err_set(negerrno(), "fd %d: %s: cannot set its TCP options", e->fd, name);
	if (t->tstamp && (r = setint(fd, IPPROTO_TCP, TCP_TIMESTAMP, (int)t->timestamp)) < 0)
		return err_set(r, "fd %d: %s: cannot set its timestamp clock", e->fd, name);
	if ((r = set_room(fd, SO_SNDBUF, SO_SNDBUFFORCE, e->sndbuf, t->outq)) < 0 ||
	    (r = set_room(fd, SO_RCVBUF, SO_RCVBUFFORCE, e->rcvbuf, t->inq)) < 0)
		return err_set(r, "fd %d: %s: cannot size its buffers", e->fd, name);
	if (fault_hit(FAULT_ENGINE_TCP_RESTORE))
		return err_set(-EIO, "fd %d: %s: writing its queues back: injected fault", e->fd, name);
	if ((r = send_queue(fd, TCP_RECV_QUEUE, e->data, t->inq)) < 0 ||
	    (r = send_queue(fd, TCP_SEND_QUEUE, (const char *)e->data + t->inq, t->outq)) < 0 ||
	    (r = setint(fd, IPPROTO_TCP, TCP_REPAIR_QUEUE, TCP_NO_QUEUE)) < 0)
		return err_set(r, "fd %d: %s: cannot write its queues back (%u and %u bytes)", e->fd, name, t->inq,
			       t->outq);
	if (setsockopt(fd, IPPROTO_TCP, TCP_REPAIR_WINDOW, &t->win, sizeof(t->win)) < 0)
		return err_set(negerrno(), "fd %d: %s: cannot set its window", e->fd, name);
	if ((t->nodelay && setint(fd, IPPROTO_TCP, TCP_NODELAY, 1) < 0) ||
	    (t->keepalive && setint(fd, SOL_SOCKET, SO_KEEPALIVE, 1) < 0))
		return err_set(negerrno(), "fd %d: %s: cannot set TCP_NODELAY or SO_KEEPALIVE", e->fd, name);
	/* the window probe this sends is dropped by the lock, which the
	 * restorer lifts once the process runs */
	if ((r = setint(fd, IPPROTO_TCP, TCP_REPAIR, TCP_REPAIR_OFF)) < 0)
		return err_set(r, "fd %d: %s: cannot leave TCP repair mode", e->fd, name);
	return TAKE_FD(fd);
}
