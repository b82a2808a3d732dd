/*
 * engine/fds/fds-netlink.c: netlink and packet sockets, rebuilt from what
 * the kernel lets us read back.
 *
 * Netlink: protocol, type, the bound port id (getsockname; 0: never
 * bound), every multicast group (NETLINK_LIST_MEMBERSHIPS), the peer of a
 * connected one (getpeername), the SOL_NETLINK flags (NO_ENOBUFS, EXT_ACK,
 * CAP_ACK, PKTINFO, BROADCAST_ERROR, LISTEN_ALL_NSID, GET_STRICT_CHK) and
 * the buffer sizes. The port id is bound again as it was: a program that
 * knows its own (libmnl checks every answer against it) would otherwise
 * drop its answers, so a port id taken at restore fails the restore,
 * naming it. Messages queued for reading (answers, kernel notifications)
 * cannot be put back into a new socket: such a socket is refused at dump,
 * as is one in the middle of a dump request (sock_diag's CB_RUNNING), to
 * be taken again once the program has read them.
 *
 * Packet: type (raw or dgram), protocol, the interface it is bound to (by
 * name: refused at restore when that name is gone), the PACKET_* options
 * getsockopt reads back (version, auxdata, origdev, vnet header, loss,
 * timestamp, reserve, ignore outgoing, qdisc bypass, tx offset), the copy
 * threshold and multicast/promiscuous memberships (sock_diag), the
 * buffer sizes. Frames queued for reading are not kept (the kernel drops
 * frames of a slow reader as a matter of course; the dump says how many
 * bytes went). Rings (PACKET_RX_RING, PACKET_TX_RING: memory shared with
 * the kernel) and fanout groups are refused by name. The new socket is
 * made with protocol 0, which receives nothing, and bound to its
 * protocol and interface last, once its options and filter are in place.
 *
 * Both: a classic BPF filter (SO_ATTACH_FILTER) is read back with
 * SO_GET_FILTER and attached again, locked again if it was
 * (SO_LOCK_FILTER); an eBPF program (SO_ATTACH_BPF) has no such copy and
 * is refused.
 *
 * sock_diag answers for sockets of our network namespace only: a socket
 * it does not find is refused.
 */
#include <arpa/inet.h>
#include <inttypes.h>
#include <linux/filter.h>
#include <linux/if_packet.h>
#include <linux/netlink.h>
#include <linux/netlink_diag.h>
#include <linux/packet_diag.h>
#include <linux/rtnetlink.h>
#include <linux/sock_diag.h>
#include <net/if.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include "engine/fds/fds-int.h"

#ifndef SO_GET_FILTER
#define SO_GET_FILTER SO_ATTACH_FILTER
#endif
#ifndef PACKET_VNET_HDR_SZ
#define PACKET_VNET_HDR_SZ 24 /* Linux 6.2 */
#endif
#ifndef SO_LOCK_FILTER
#define SO_LOCK_FILTER 44
#endif

/* One packet membership (PACKET_ADD_MEMBERSHIP), count times. */
struct fd_pmember {
	char ifname[IF_NAMESIZE];
	unsigned type, count, alen;
	unsigned char addr[8];
};

struct fd_net {
	int protocol;     /* netlink: NETLINK_*; packet: the ethertype, host order */
	int sndbuf, rcvbuf;

	/* netlink */
	uint32_t portid;  /* 0: never bound */
	uint32_t *groups; /* group numbers, increasing */
	size_t n_groups;
	uint32_t dst_portid, dst_groups; /* connected: its peer (dst_groups as a mask) */
	unsigned opts;    /* bit i: nl_opts[i] set */

	/* packet */
	char ifname[IF_NAMESIZE]; /* "": not bound to an interface */
	int popt[11];     /* values of pkt_opts[] */
	unsigned copy_thresh;
	struct fd_pmember *members;
	size_t n_members;
	uint64_t dropped; /* frames queued at dump, not kept: receive buffer bytes they took */

	/* both */
	struct sock_filter *filter;
	size_t n_filter;
	bool filter_locked;
};

static const struct {
	int opt;
	const char *name;
} nl_opts[] = {
	{ NETLINK_NO_ENOBUFS, "no-enobufs" },       { NETLINK_EXT_ACK, "ext-ack" },
	{ NETLINK_CAP_ACK, "cap-ack" },             { NETLINK_PKTINFO, "pktinfo" },
	{ NETLINK_BROADCAST_ERROR, "broadcast-error" }, { NETLINK_LISTEN_ALL_NSID, "listen-all-nsid" },
	{ NETLINK_GET_STRICT_CHK, "strict-chk" },
};

/* PACKET_* options read and set as ints, in popt[] order; version first
 * (the others may depend on it). */
static const struct {
	int opt;
	const char *name;
} pkt_opts[] = {
	{ PACKET_VERSION, "version" },       { PACKET_AUXDATA, "auxdata" },
	{ PACKET_ORIGDEV, "origdev" },       { PACKET_VNET_HDR, "vnet-hdr" },
	{ PACKET_LOSS, "loss" },             { PACKET_TIMESTAMP, "timestamp" },
	{ PACKET_RESERVE, "reserve" },       { PACKET_IGNORE_OUTGOING, "ignore-outgoing" },
	{ PACKET_QDISC_BYPASS, "qdisc-bypass" }, { PACKET_TX_HAS_OFF, "tx-has-off" },
	{ PACKET_VNET_HDR_SZ, "vnet-hdr-sz" },
};

void fds_net_free(struct fd_net *n)
{
	if (!n)
		return;
	free(n->groups);
	free(n->members);
	free(n->filter);
	free(n);
}

static int getint(int fd, int level, int opt, int *ret)
{
	socklen_t len = sizeof(*ret);

	return getsockopt(fd, level, opt, ret, &len) < 0 ? negerrno() : 0;
}

int fds_net_classify(struct fd_image *img, struct fd_entry *e, int domain, int type)
{
	(void)img;
	if (domain == AF_PACKET && type != SOCK_RAW && type != SOCK_DGRAM)
		return err_set(-EOPNOTSUPP, "fd %d: packet socket of type %d (SOCK_PACKET): not supported", e->fd,
			       type);
	if (domain == AF_NETLINK && type != SOCK_RAW && type != SOCK_DGRAM)
		return err_set(-EOPNOTSUPP, "fd %d: netlink socket of type %d: not supported", e->fd, type);
	e->kind = domain == AF_NETLINK ? FD_KIND_NETLINK : FD_KIND_PACKET;
	e->family = domain;
	e->type = type;
	e->net = calloc(1, sizeof(*e->net));
	return e->net ? 1 : -ENOMEM;
}

/* ---- capture --------------------------------------------------------------- */

/* SO_GET_FILTER: the classic program attached, if any. */
static int capture_filter(struct fd_entry *e, const char *what)
{
	struct fd_net *n = e->net;
	socklen_t len = 0;
	int locked = 0;

	if (getsockopt(e->dupfd, SOL_SOCKET, SO_GET_FILTER, NULL, &len) < 0) {
		if (errno == EACCES)
			return err_set(-EOPNOTSUPP, "fd %d: %s socket with an eBPF program attached (SO_ATTACH_BPF), "
				       "which cannot be read back: not supported", e->fd, what);
		return err_set(negerrno(), "fd %d: %s socket: SO_GET_FILTER: %m", e->fd, what);
	}
	if (getint(e->dupfd, SOL_SOCKET, SO_LOCK_FILTER, &locked) < 0)
		return err_set(negerrno(), "fd %d: %s socket: SO_LOCK_FILTER: %m", e->fd, what);
	n->filter_locked = locked != 0;
	if (!len)
		return 0;
	/* the length asked and answered is in instructions, not bytes */
	n->filter = calloc(len, sizeof(*n->filter));
	if (!n->filter)
		return -ENOMEM;
	socklen_t got = len;
	if (getsockopt(e->dupfd, SOL_SOCKET, SO_GET_FILTER, n->filter, &got) < 0 || got != len)
		return err_set(-EOPNOTSUPP, "fd %d: %s socket: its filter changed while read: not supported", e->fd,
			       what);
	n->n_filter = len;
	return 0;
}

struct nl_diag {
	uint32_t ino;
	uint32_t rmem, flags;
	bool found;
};

static int nl_diag_cb(struct nlmsghdr *h, void *ud)
{
	struct nl_diag *d = ud;
	struct netlink_diag_msg *m = NLMSG_DATA(h);
	int len = (int)(h->nlmsg_len - NLMSG_LENGTH(sizeof(*m)));

	if (m->ndiag_ino != d->ino)
		return 0;
	d->found = true;
	for (struct rtattr *a = (void *)(m + 1); RTA_OK(a, len); a = RTA_NEXT(a, len)) {
		if (a->rta_type == NETLINK_DIAG_MEMINFO && RTA_PAYLOAD(a) >= sizeof(uint32_t) * (SK_MEMINFO_RMEM_ALLOC + 1))
			d->rmem = ((uint32_t *)RTA_DATA(a))[SK_MEMINFO_RMEM_ALLOC];
		else if (a->rta_type == NETLINK_DIAG_FLAGS && RTA_PAYLOAD(a) >= sizeof(uint32_t))
			d->flags = *(uint32_t *)RTA_DATA(a);
	}
	return 1;
}

static int capture_netlink(struct fd_image *img, struct fd_entry *e)
{
	struct fd_net *n = e->net;
	struct sockaddr_nl sa = { 0 }, pa = { 0 };
	socklen_t sl = sizeof(sa), pl = sizeof(pa);
	int r;

	if ((r = getint(e->dupfd, SOL_SOCKET, SO_PROTOCOL, &n->protocol)) < 0 ||
	    getsockname(e->dupfd, (void *)&sa, &sl) < 0 || getpeername(e->dupfd, (void *)&pa, &pl) < 0)
		return err_set(r < 0 ? r : negerrno(), "fd %d: netlink socket: cannot read its protocol and "
			       "addresses", e->fd);
	n->portid = sa.nl_pid;
	n->dst_portid = pa.nl_pid;
	n->dst_groups = pa.nl_groups;

	struct nl_diag d = { .ino = (uint32_t)e->st->st_ino };
	struct netlink_diag_req req = {
		.sdiag_family = AF_NETLINK,
		.sdiag_protocol = (uint8_t)n->protocol,
		.ndiag_show = NDIAG_SHOW_MEMINFO | NDIAG_SHOW_FLAGS,
	};
	r = fds_sock_diag(&req, sizeof(req), true, nl_diag_cb, &d);
	if (r < 0)
		return err_set(r, "fd %d: netlink socket (protocol %d): sock_diag: %s", e->fd, n->protocol,
			       strerror(-r));
	/* sock_diag lists bound sockets only; one never bound (no port id)
	 * has received nothing: sending would have bound it */
	if (!d.found && n->portid)
		return err_set(-EOPNOTSUPP, "fd %d: netlink socket (protocol %d, port %u) not found by sock_diag "
			       "(another network namespace?): not supported", e->fd, n->protocol, n->portid);
	if (d.flags & NDIAG_FLAG_CB_RUNNING)
		return err_set(-EOPNOTSUPP, "fd %d: netlink socket (protocol %d, port %u) in the middle of a dump "
			       "request: not supported; checkpoint again once its answers are read", e->fd,
			       n->protocol, n->portid);
	if (d.rmem)
		return err_set(-EOPNOTSUPP, "fd %d: netlink socket (protocol %d, port %u) with %u bytes of messages "
			       "not read yet (a new socket cannot be given them): not supported; checkpoint again "
			       "once they are read", e->fd, n->protocol, n->portid, d.rmem);

	/* the groups: a bitmap of u32 words, as long as the highest group */
	socklen_t gl = 0;
	if (getsockopt(e->dupfd, SOL_NETLINK, NETLINK_LIST_MEMBERSHIPS, NULL, &gl) < 0)
		return err_set(negerrno(), "fd %d: netlink socket: NETLINK_LIST_MEMBERSHIPS: %m", e->fd);
	if (gl) {
		_cleanup_free_ uint32_t *bits = calloc(1, gl);
		socklen_t gl2 = gl;
		if (!bits)
			return -ENOMEM;
		if (getsockopt(e->dupfd, SOL_NETLINK, NETLINK_LIST_MEMBERSHIPS, bits, &gl2) < 0)
			return err_set(negerrno(), "fd %d: netlink socket: NETLINK_LIST_MEMBERSHIPS: %m", e->fd);
		for (size_t w = 0; w < MIN(gl, gl2) / sizeof(uint32_t); w++)
			for (unsigned b = 0; b < 32; b++) {
				if (!(bits[w] & (1u << b)))
					continue;
				uint32_t *ng = realloc(n->groups, (n->n_groups + 1) * sizeof(*ng));
				if (!ng)
					return -ENOMEM;
				n->groups = ng;
				n->groups[n->n_groups++] = (uint32_t)(w * 32 + b + 1);
			}
	}
	for (size_t i = 0; i < ARRAY_SIZE(nl_opts); i++) {
		int v = 0;
		if ((r = getint(e->dupfd, SOL_NETLINK, nl_opts[i].opt, &v)) < 0)
			return err_set(r, "fd %d: netlink socket: cannot read %s", e->fd, nl_opts[i].name);
		if (v)
			n->opts |= 1u << i;
	}
	return capture_filter(e, "netlink");
}

struct pkt_diag {
	uint32_t ino;
	bool found, ring, fanout;
	struct packet_diag_info info;
	struct packet_diag_mclist *mc;
	size_t n_mc;
	uint32_t rmem;
	int err;
};

static int pkt_diag_cb(struct nlmsghdr *h, void *ud)
{
	struct pkt_diag *d = ud;
	struct packet_diag_msg *m = NLMSG_DATA(h);
	int len = (int)(h->nlmsg_len - NLMSG_LENGTH(sizeof(*m)));

	if (m->pdiag_ino != d->ino)
		return 0;
	d->found = true;
	for (struct rtattr *a = (void *)(m + 1); RTA_OK(a, len); a = RTA_NEXT(a, len)) {
		switch (a->rta_type) {
		case PACKET_DIAG_INFO:
			memcpy(&d->info, RTA_DATA(a), MIN(RTA_PAYLOAD(a), sizeof(d->info)));
			break;
		case PACKET_DIAG_MCLIST:
			d->n_mc = RTA_PAYLOAD(a) / sizeof(*d->mc);
			d->mc = malloc(d->n_mc * sizeof(*d->mc) + 1);
			if (!d->mc)
				d->err = -ENOMEM;
			else
				memcpy(d->mc, RTA_DATA(a), d->n_mc * sizeof(*d->mc));
			break;
		case PACKET_DIAG_RX_RING:
		case PACKET_DIAG_TX_RING:
			d->ring = true;
			break;
		case PACKET_DIAG_FANOUT:
			d->fanout = true;
			break;
		case PACKET_DIAG_MEMINFO:
			if (RTA_PAYLOAD(a) >= sizeof(uint32_t) * (SK_MEMINFO_RMEM_ALLOC + 1))
				d->rmem = ((uint32_t *)RTA_DATA(a))[SK_MEMINFO_RMEM_ALLOC];
			break;
		}
	}
	return 1;
}

static int capture_packet(struct fd_image *img, struct fd_entry *e)
{
	struct fd_net *n = e->net;
	struct sockaddr_ll sa = { 0 };
	socklen_t sl = sizeof(sa);
	char ifn[IF_NAMESIZE];
	int r;

	if (getsockname(e->dupfd, (void *)&sa, &sl) < 0)
		return err_set(negerrno(), "fd %d: packet socket: getsockname: %m", e->fd);
	n->protocol = ntohs(sa.sll_protocol);
	if (sa.sll_ifindex) {
		if (!if_indextoname((unsigned)sa.sll_ifindex, ifn))
			return err_set(-EOPNOTSUPP, "fd %d: packet socket bound to interface %d, which has no name here "
				       "(another network namespace?): not supported", e->fd, sa.sll_ifindex);
		snprintf(n->ifname, sizeof(n->ifname), "%s", ifn);
	}

	_cleanup_(freep) struct packet_diag_mclist *mc = NULL;
	struct pkt_diag d = { .ino = (uint32_t)e->st->st_ino };
	struct packet_diag_req req = {
		.sdiag_family = AF_PACKET,
		.pdiag_show = PACKET_SHOW_INFO | PACKET_SHOW_MCLIST | PACKET_SHOW_RING_CFG | PACKET_SHOW_FANOUT |
			      PACKET_SHOW_MEMINFO,
	};
	r = fds_sock_diag(&req, sizeof(req), true, pkt_diag_cb, &d);
	mc = d.mc;
	if (r >= 0)
		r = d.err;
	if (r < 0)
		return err_set(r, "fd %d: packet socket: sock_diag: %s", e->fd, strerror(-r));
	if (!d.found)
		return err_set(-EOPNOTSUPP, "fd %d: packet socket not found by sock_diag (another network namespace?): "
			       "not supported", e->fd);
	const char *on = n->ifname[0] ? n->ifname : "any interface";
	if (d.ring)
		return err_set(-EOPNOTSUPP, "fd %d: packet socket on %s with a ring (PACKET_RX_RING or "
			       "PACKET_TX_RING: memory it shares with the kernel): not supported", e->fd, on);
	if (d.fanout)
		return err_set(-EOPNOTSUPP, "fd %d: packet socket on %s in a fanout group (PACKET_FANOUT): not "
			       "supported", e->fd, on);
	n->copy_thresh = d.info.pdi_copy_thresh;
	n->dropped = d.rmem;
	for (size_t i = 0; i < d.n_mc; i++) {
		struct packet_diag_mclist *m = &mc[i];
		struct fd_pmember pm = { .type = m->pdmc_type, .count = m->pdmc_count, .alen = m->pdmc_alen };
		if (m->pdmc_alen > sizeof(pm.addr) || !if_indextoname(m->pdmc_index, ifn))
			return err_set(-EOPNOTSUPP, "fd %d: packet socket with a membership on interface %u (address "
				       "length %u): not supported", e->fd, m->pdmc_index, m->pdmc_alen);
		snprintf(pm.ifname, sizeof(pm.ifname), "%s", ifn);
		memcpy(pm.addr, m->pdmc_addr, m->pdmc_alen);
		struct fd_pmember *nm = realloc(n->members, (n->n_members + 1) * sizeof(*nm));
		if (!nm)
			return -ENOMEM;
		n->members = nm;
		n->members[n->n_members++] = pm;
	}
	for (size_t i = 0; i < ARRAY_SIZE(pkt_opts); i++) {
		r = getint(e->dupfd, SOL_PACKET, pkt_opts[i].opt, &n->popt[i]);
		/* vnet-hdr-sz: Linux 6.2 */
		if (r == -ENOPROTOOPT && pkt_opts[i].opt == PACKET_VNET_HDR_SZ)
			n->popt[i] = -1;
		else if (r < 0)
			return err_set(r, "fd %d: packet socket: cannot read %s", e->fd, pkt_opts[i].name);
	}
	if (n->dropped && !img->checking)
		log_warn("fd %d: packet socket on %s: frames queued and not read (%" PRIu64 " bytes of its receive "
			 "buffer) are not kept", e->fd, on, n->dropped);
	return capture_filter(e, "packet");
}

int fds_net_capture(struct fd_image *img, struct fd_entry *e)
{
	int r = e->kind == FD_KIND_NETLINK ? capture_netlink(img, e) : capture_packet(img, e);
	if (r < 0)
		return r;
	if ((r = getint(e->dupfd, SOL_SOCKET, SO_SNDBUF, &e->net->sndbuf)) < 0 ||
	    (r = getint(e->dupfd, SOL_SOCKET, SO_RCVBUF, &e->net->rcvbuf)) < 0)
		return err_set(r, "fd %d: buffer sizes", e->fd);
	return 0;
}

/* ---- the fds line ------------------------------------------------------------ */

void fds_net_print(struct fd_entry *e, struct fds_buf *b)
{
	const struct fd_net *n = e->net;

	fds_printf(b, " type=%s", e->type == SOCK_RAW ? "raw" : "dgram");
	fds_printf(b, e->kind == FD_KIND_NETLINK ? " protocol=%d" : " protocol=0x%04x", n->protocol);
	if (e->kind == FD_KIND_NETLINK) {
		fds_printf(b, " port=%u", n->portid);
		for (size_t i = 0; i < n->n_groups; i++)
			fds_printf(b, "%s%u", i ? "," : " groups=", n->groups[i]);
		if (n->dst_portid || n->dst_groups)
			fds_printf(b, " dst-port=%u dst-groups=0x%x", n->dst_portid, n->dst_groups);
		for (size_t i = 0, k = 0; i < ARRAY_SIZE(nl_opts); i++)
			if (n->opts & (1u << i))
				fds_printf(b, "%s%s", k++ ? "," : " options=", nl_opts[i].name);
	} else {
		if (n->ifname[0])
			fds_put_path(b, "interface", n->ifname, strlen(n->ifname));
		for (size_t i = 0; i < ARRAY_SIZE(pkt_opts); i++)
			fds_printf(b, " %s=%d", pkt_opts[i].name, n->popt[i]);
		fds_printf(b, " copy-thresh=%u", n->copy_thresh);
		for (size_t i = 0; i < n->n_members; i++) {
			const struct fd_pmember *m = &n->members[i];
			char key[32];
			if (i)
				snprintf(key, sizeof(key), "member%zu", i);
			else
				snprintf(key, sizeof(key), "member");
			fds_put_path(b, key, m->ifname, strlen(m->ifname));
			fds_printf(b, ":%u:%u:", m->type, m->count);
			for (unsigned k = 0; k < m->alen; k++)
				fds_printf(b, "%02x", m->addr[k]);
		}
		if (n->dropped)
			fds_printf(b, " dropped=%" PRIu64, n->dropped);
	}
	if (n->n_filter) {
		fds_printf(b, " filter=");
		for (size_t i = 0; i < n->n_filter; i++) {
			const struct sock_filter *f = &n->filter[i];
			fds_printf(b, "%s%x:%x:%x:%x", i ? "," : "", f->code, f->jt, f->jf, f->k);
		}
	}
	/* locked without a filter: none can be attached */
	if (n->n_filter || n->filter_locked)
		fds_printf(b, " filter-locked=%d", n->filter_locked);
	fds_printf(b, " sndbuf=%d rcvbuf=%d", n->sndbuf, n->rcvbuf);
}

static int parse_int(struct fd_line *l, const char *key, int lo, int hi, int *ret)
{
	const char *v;
	int r = fds_kv_req(l, key, &v);
	char *end;

	if (r < 0)
		return r;
	errno = 0;
	long x = strtol(v, &end, 10);
	if (errno || end == v || *end || x < lo || x > hi)
		return fds_bad(l, "%s=%s: not a number from %d to %d", key, v, lo, hi);
	*ret = (int)x;
	return 0;
}

static int parse_filter(struct fd_line *l, struct fd_net *n)
{
	const char *v = fds_kv(l, "filter");
	int r;

	if (fds_kv_has(l, "filter-locked") && (r = fds_kv_bool(l, "filter-locked", &n->filter_locked)) < 0)
		return r;
	if (!v)
		return 0;
	for (const char *p = v; *p;) {
		unsigned code, jt, jf, k;
		int used = 0;
		if (sscanf(p, "%x:%x:%x:%x%n", &code, &jt, &jf, &k, &used) != 4 || code > 0xffff || jt > 0xff ||
		    jf > 0xff || (p[used] && p[used] != ','))
			return fds_bad(l, "filter=: not CODE:JT:JF:K,... in hex");
		if (n->n_filter == BPF_MAXINSNS)
			return fds_bad(l, "filter=: more than %d instructions", BPF_MAXINSNS);
		struct sock_filter *nf = realloc(n->filter, (n->n_filter + 1) * sizeof(*nf));
		if (!nf)
			return -ENOMEM;
		n->filter = nf;
		n->filter[n->n_filter++] = (struct sock_filter){ (uint16_t)code, (uint8_t)jt, (uint8_t)jf, k };
		p += used + (p[used] == ',');
	}
	if (!n->n_filter)
		return fds_bad(l, "filter= without instructions");
	return 0;
}

static int parse_ifname(struct fd_line *l, const char *v, char *out)
{
	char buf[IF_NAMESIZE + 1];
	ssize_t k = fds_unescape(v, buf, sizeof(buf));

	if (k <= 0 || (size_t)k >= IF_NAMESIZE || strlen(buf) != (size_t)k)
		return fds_bad(l, "'%s': not an interface name", v);
	memcpy(out, buf, (size_t)k + 1);
	return 0;
}

int fds_net_parse(struct fd_entry *e, struct fd_line *l)
{
	struct fd_net *n = e->net = calloc(1, sizeof(*e->net));
	const char *v;
	int r;

	if (!n)
		return -ENOMEM;
	e->family = e->kind == FD_KIND_NETLINK ? AF_NETLINK : AF_PACKET;
	if ((r = fds_kv_req(l, "type", &v)) < 0)
		return r;
	if (!strcmp(v, "raw"))
		e->type = SOCK_RAW;
	else if (!strcmp(v, "dgram"))
		e->type = SOCK_DGRAM;
	else
		return fds_bad(l, "type=%s: not raw or dgram", v);
	if (e->kind == FD_KIND_NETLINK) {
		r = parse_int(l, "protocol", 0, 31, &n->protocol);
	} else {
		uint64_t p;
		if ((r = fds_kv_hex(l, "protocol", &p)) >= 0 && p > 0xffff)
			r = fds_bad(l, "protocol=0x%lx: not an ethertype", p);
		n->protocol = (int)p;
	}
	if (r < 0 || (r = parse_int(l, "sndbuf", 0, INT32_MAX, &n->sndbuf)) < 0 ||
	    (r = parse_int(l, "rcvbuf", 0, INT32_MAX, &n->rcvbuf)) < 0 || (r = parse_filter(l, n)) < 0)
		return r;
	if (e->kind == FD_KIND_NETLINK) {
		uint64_t u;
		if ((r = fds_kv_u64(l, "port", &u)) < 0)
			return r;
		if (u > UINT32_MAX)
			return fds_bad(l, "port=%lu: out of range", u);
		n->portid = (uint32_t)u;
		if ((v = fds_kv(l, "groups"))) {
			for (const char *p = v; *p;) {
				char *end;
				unsigned long g = strtoul(p, &end, 10);
				if (end == p || g == 0 || g > 1024 || (*end && *end != ',') ||
				    (n->n_groups && g <= n->groups[n->n_groups - 1]))
					return fds_bad(l, "groups=%s: not increasing group numbers", v);
				uint32_t *ng = realloc(n->groups, (n->n_groups + 1) * sizeof(*ng));
				if (!ng)
					return -ENOMEM;
				n->groups = ng;
				n->groups[n->n_groups++] = (uint32_t)g;
				p = end + (*end == ',');
			}
		}
		if (fds_kv_has(l, "dst-port")) {
			uint64_t m;
			if ((r = fds_kv_u64(l, "dst-port", &u)) < 0 || (r = fds_kv_hex(l, "dst-groups", &m)) < 0)
				return r;
			if (u > UINT32_MAX || m > UINT32_MAX)
				return fds_bad(l, "dst-port= or dst-groups= out of range");
			n->dst_portid = (uint32_t)u;
			n->dst_groups = (uint32_t)m;
		}
		if ((v = fds_kv(l, "options"))) {
			_cleanup_free_ char *copy = strdup(v);
			char *save = NULL;
			if (!copy)
				return -ENOMEM;
			for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
				size_t i = 0;
				while (i < ARRAY_SIZE(nl_opts) && strcmp(t, nl_opts[i].name))
					i++;
				if (i == ARRAY_SIZE(nl_opts))
					return fds_bad(l, "options=: unknown netlink option '%s'", t);
				n->opts |= 1u << i;
			}
		}
		if (n->n_groups && !n->portid)
			return fds_bad(l, "groups= without a port");
		return 0;
	}
	if ((v = fds_kv(l, "interface")) && (r = parse_ifname(l, v, n->ifname)) < 0)
		return r;
	for (size_t i = 0; i < ARRAY_SIZE(pkt_opts); i++)
		if ((r = parse_int(l, pkt_opts[i].name, -1, INT32_MAX, &n->popt[i])) < 0)
			return r;
	uint64_t u;
	if ((r = fds_kv_u64(l, "copy-thresh", &u)) < 0)
		return r;
	if (u > UINT32_MAX)
		return fds_bad(l, "copy-thresh=%lu: out of range", u);
	n->copy_thresh = (unsigned)u;
	if ((r = fds_kv_u64_opt(l, "dropped", 0, &n->dropped)) < 0)
		return r;
	/* one membership a key (parse_line() refuses a key twice): member,
	 * member1, member2, ... */
	for (int k = 0;; k++) {
		char key[24];
		if (k)
			snprintf(key, sizeof(key), "member%d", k);
		else
			snprintf(key, sizeof(key), "member");
		if (!(v = fds_kv(l, key)))
			break;
		struct fd_pmember m = { 0 };
		const char *c = strchr(v, ':');
		char name[64];
		int used = 0;
		if (!c || (size_t)(c - v) >= sizeof(name))
			return fds_bad(l, "%s=%s: not IF:TYPE:COUNT:ADDR", key, v);
		memcpy(name, v, (size_t)(c - v));
		name[c - v] = 0;
		if ((r = parse_ifname(l, name, m.ifname)) < 0)
			return r;
		if (sscanf(c + 1, "%u:%u:%n", &m.type, &m.count, &used) != 2 || !used || !m.count || m.count > 65536)
			return fds_bad(l, "%s=%s: not IF:TYPE:COUNT:ADDR", key, v);
		const char *hex = c + 1 + used;
		size_t hl = strlen(hex);
		if (hl % 2 || hl / 2 > sizeof(m.addr))
			return fds_bad(l, "%s=%s: bad address", key, v);
		for (size_t i = 0; i < hl / 2; i++) {
			unsigned x;
			if (sscanf(hex + 2 * i, "%2x", &x) != 1)
				return fds_bad(l, "%s=%s: bad address", key, v);
			m.addr[i] = (unsigned char)x;
		}
		m.alen = (unsigned)(hl / 2);
		struct fd_pmember *nm = realloc(n->members, (n->n_members + 1) * sizeof(*nm));
		if (!nm)
			return -ENOMEM;
		n->members = nm;
		n->members[n->n_members++] = m;
	}
	return 0;
}

int fds_net_check_host(struct fd_image *img, struct fd_entry *e)
{
	(void)img;
	if (e->kind != FD_KIND_PACKET)
		return 0;
	int fd = socket(AF_PACKET, e->type | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		int r = negerrno();
		return err_set(r, "fd %d: packet socket cannot be made here: %s%s", e->fd, strerror(-r),
			       r == -EPERM ? " (it takes CAP_NET_RAW)" : "");
	}
	close(fd);
	if (e->net->ifname[0] && !if_nametoindex(e->net->ifname))
		return err_set(-ENODEV, "fd %d: packet socket bound to interface %s, which is not on this host",
			       e->fd, e->net->ifname);
	for (size_t i = 0; i < e->net->n_members; i++)
		if (!if_nametoindex(e->net->members[i].ifname))
			return err_set(-ENODEV, "fd %d: packet socket with a membership on interface %s, which is not "
				       "on this host", e->fd, e->net->members[i].ifname);
	return 0;
}

/* ---- restore ------------------------------------------------------------------ */

/* A buffer size as getsockopt showed it (the kernel doubles what
 * setsockopt asks); the FORCE variant (CAP_NET_ADMIN) passes the sysctl
 * maximum. Best effort, as for Unix pairs. */
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

static int set_filter(struct fd_entry *e, int fd, const char *what)
{
	struct fd_net *n = e->net;
	struct sock_fprog prog = { .len = (unsigned short)n->n_filter, .filter = n->filter };
	int one = 1;

	if (n->n_filter && setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof(prog)) < 0)
		return err_set(negerrno(), "fd %d: %s socket: cannot attach its filter (%zu instructions) again: %m",
			       e->fd, what, n->n_filter);
	if (n->filter_locked && setsockopt(fd, SOL_SOCKET, SO_LOCK_FILTER, &one, sizeof(one)) < 0)
		return err_set(negerrno(), "fd %d: %s socket: SO_LOCK_FILTER: %m", e->fd, what);
	return 0;
}

static int open_netlink(struct fd_entry *e)
{
	struct fd_net *n = e->net;
	_cleanup_close_ int fd = socket(AF_NETLINK, e->type | SOCK_CLOEXEC, n->protocol);
	int one = 1;

	if (fd < 0)
		return err_set(negerrno(), "fd %d: netlink socket of protocol %d: %m", e->fd, n->protocol);
	for (size_t i = 0; i < ARRAY_SIZE(nl_opts); i++)
		if ((n->opts & (1u << i)) && setsockopt(fd, SOL_NETLINK, nl_opts[i].opt, &one, sizeof(one)) < 0)
			return err_set(negerrno(), "fd %d: netlink socket: cannot set %s: %m", e->fd, nl_opts[i].name);
	set_buf(fd, SO_SNDBUF, SO_SNDBUFFORCE, n->sndbuf);
	set_buf(fd, SO_RCVBUF, SO_RCVBUFFORCE, n->rcvbuf);
	int r = set_filter(e, fd, "netlink");
	if (r < 0)
		return r;
	if (n->portid) {
		struct sockaddr_nl sa = { .nl_family = AF_NETLINK, .nl_pid = n->portid };
		if (bind(fd, (void *)&sa, sizeof(sa)) < 0) {
			r = negerrno();
			return err_set(r, "fd %d: netlink socket (protocol %d): cannot bind port id %u again: %s%s", e->fd,
				       n->protocol, n->portid, strerror(-r),
				       r == -EADDRINUSE ? " (another socket of that protocol holds it; the program may "
							  "know its port id, so it is not changed)" : "");
		}
	}
	for (size_t i = 0; i < n->n_groups; i++) {
		int g = (int)n->groups[i];
		if (fault_hit(FAULT_ENGINE_NETLINK_GROUP))
			return err_set(-EIO, "fd %d: netlink socket (protocol %d): cannot join group %d again: injected "
				       "fault", e->fd, n->protocol, g);
		if (setsockopt(fd, SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, &g, sizeof(g)) < 0)
			return err_set(negerrno(), "fd %d: netlink socket (protocol %d): cannot join group %d again: %m",
				       e->fd, n->protocol, g);
	}
	if (n->dst_portid || n->dst_groups) {
		struct sockaddr_nl da = { .nl_family = AF_NETLINK, .nl_pid = n->dst_portid, .nl_groups = n->dst_groups };
		if (connect(fd, (void *)&da, sizeof(da)) < 0)
			return err_set(negerrno(), "fd %d: netlink socket: cannot connect to port %u groups 0x%x again: %m",
				       e->fd, n->dst_portid, n->dst_groups);
	}
	return TAKE_FD(fd);
}

static int open_packet(struct fd_entry *e)
{
	struct fd_net *n = e->net;
	/* protocol 0: receives nothing until the bind below */
	_cleanup_close_ int fd = socket(AF_PACKET, e->type | SOCK_CLOEXEC, 0);
	const char *on = n->ifname[0] ? n->ifname : "any interface";
	int r;

	if (fd < 0)
		return err_set(negerrno(), "fd %d: packet socket: %m%s", e->fd,
			       errno == EPERM ? " (it takes CAP_NET_RAW)" : "");
	for (size_t i = 0; i < ARRAY_SIZE(pkt_opts); i++) {
		int v = n->popt[i], cur = 0;
		/* set only what differs from a new socket's: some (vnet
		 * header size) are refused where unsupported */
		if (v < 0 || (getint(fd, SOL_PACKET, pkt_opts[i].opt, &cur) == 0 && cur == v))
			continue;
		if (setsockopt(fd, SOL_PACKET, pkt_opts[i].opt, &v, sizeof(v)) < 0)
			return err_set(negerrno(), "fd %d: packet socket on %s: cannot set %s to %d: %m", e->fd, on,
				       pkt_opts[i].name, v);
	}
	if (n->copy_thresh && setsockopt(fd, SOL_PACKET, PACKET_COPY_THRESH, &n->copy_thresh,
					 sizeof(n->copy_thresh)) < 0)
		return err_set(negerrno(), "fd %d: packet socket on %s: PACKET_COPY_THRESH: %m", e->fd, on);
	set_buf(fd, SO_SNDBUF, SO_SNDBUFFORCE, n->sndbuf);
	set_buf(fd, SO_RCVBUF, SO_RCVBUFFORCE, n->rcvbuf);
	if ((r = set_filter(e, fd, "packet")) < 0)
		return r;
	int ifindex = 0;
	if (n->ifname[0] && !(ifindex = (int)if_nametoindex(n->ifname)))
		return err_set(-ENODEV, "fd %d: packet socket bound to interface %s, which is not on this host", e->fd,
			       n->ifname);
	struct sockaddr_ll sa = { .sll_family = AF_PACKET, .sll_protocol = htons((uint16_t)n->protocol),
				  .sll_ifindex = ifindex };
	if (fault_hit(FAULT_ENGINE_PACKET_BIND))
		return err_set(-EIO, "fd %d: packet socket on %s: cannot bind it again: injected fault", e->fd, on);
	if ((n->protocol || ifindex) && bind(fd, (void *)&sa, sizeof(sa)) < 0)
		return err_set(negerrno(), "fd %d: packet socket: cannot bind it to %s, protocol 0x%04x, again: %m",
			       e->fd, on, n->protocol);
	for (size_t i = 0; i < n->n_members; i++) {
		const struct fd_pmember *m = &n->members[i];
		struct packet_mreq mr = { .mr_ifindex = (int)if_nametoindex(m->ifname), .mr_type = (unsigned short)m->type,
					  .mr_alen = (unsigned short)m->alen };
		memcpy(mr.mr_address, m->addr, m->alen);
		for (unsigned k = 0; k < m->count; k++)
			if (setsockopt(fd, SOL_PACKET, PACKET_ADD_MEMBERSHIP, &mr, sizeof(mr)) < 0)
				return err_set(negerrno(), "fd %d: packet socket: cannot add its membership (type %u) on "
					       "%s again: %m", e->fd, m->type, m->ifname);
	}
	return TAKE_FD(fd);
}

int fds_net_open(struct fd_entry *e)
{
	return e->kind == FD_KIND_NETLINK ? open_netlink(e) : open_packet(e);
}
