/*
 * engine/netlock.c: the network lock of dumped TCP connections, as
 * nftables rules in a table of our own (see netlock-int.h).
 *
 * Why a firewall rule: between `ckpt dump --kill` and the restore the
 * connection has no socket; a packet of the peer (a retransmission, new
 * data, a keepalive) would be answered with a reset, and the peer would
 * drop the connection. Dropped instead, it is retransmitted with backoff
 * until the restored socket, which took the same sequence numbers back,
 * acknowledges it. The rules sit at the raw priority of the input and
 * output hooks: before connection tracking, and before the socket lookup
 * that would answer with the reset. Loopback traffic passes both hooks.
 *
 * The table is made in one transaction that starts with `create table`:
 * of two dumpers racing, one makes it whole and the other finds it made,
 * and the rules are never added twice; a dump makes it only when adding
 * its elements finds no table. Elements are added in one transaction
 * (all or nothing) and deleted in one, or one by one when that fails,
 * since deleting a missing element fails its whole transaction (both ends
 * of a loopback connection dumped together share theirs).
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>

#include "common/common.h"
#include "engine/engine.h"
#include "engine/netlock-int.h"

#ifdef HAVE_LIBNFTABLES
#include <nftables/libnftables.h>

#define TABLE "inet ckptfs"

static const char table_def[] =
	"create table " TABLE "\n"
	"add set " TABLE " conn4 { type ipv4_addr . inet_service . ipv4_addr . inet_service; }\n"
	"add set " TABLE " conn6 { type ipv6_addr . inet_service . ipv6_addr . inet_service; }\n"
	"add chain " TABLE " input { type filter hook input priority raw; policy accept; }\n"
	"add chain " TABLE " output { type filter hook output priority raw; policy accept; }\n"
	"add rule " TABLE " input ip saddr . tcp sport . ip daddr . tcp dport @conn4 drop\n"
	"add rule " TABLE " input ip6 saddr . tcp sport . ip6 daddr . tcp dport @conn6 drop\n"
	"add rule " TABLE " output ip saddr . tcp sport . ip daddr . tcp dport @conn4 drop\n"
	"add rule " TABLE " output ip6 saddr . tcp sport . ip6 daddr . tcp dport @conn6 drop\n";

/* Runs one nft command buffer in ctx. Returns 0, or -errno (EEXIST and
 * ENOENT as nft says them, -EIO otherwise) with nft's message in *msg
 * (malloc'd, may be NULL); out: what it printed (malloc'd), when asked. */
static int run(struct nft_ctx *ctx, const char *cmd, char **msg, char **out)
{
	if (msg)
		*msg = NULL;
	if (nft_run_cmd_from_buffer(ctx, cmd) != 0) {
		const char *e = nft_ctx_get_error_buffer(ctx);
		int r = !e ? -EIO : strstr(e, "File exists") ? -EEXIST : strstr(e, "No such file") ? -ENOENT
			: strstr(e, "Operation not permitted") ? -EPERM : -EIO;
		if (msg && e) {
			*msg = strdup(e);
			/* one line in our messages */
			for (char *p = *msg; p && *p; p++)
				if (*p == '\n')
					*p = *(p + 1) ? ' ' : 0;
		}
		return r;
	}
	if (out) {
		const char *o = nft_ctx_get_output_buffer(ctx);
		*out = strdup(o ? o : "");
		if (!*out)
			return -ENOMEM;
	}
	return 0;
}

/* A context whose output and errors we read; NULL when out of memory.
 * Made once per call of ours: making one reads nft's tables of names,
 * which costs more than a command. */
static struct nft_ctx *ctx_new(void)
{
	struct nft_ctx *ctx = nft_ctx_new(NFT_CTX_DEFAULT);

	if (ctx) {
		nft_ctx_buffer_output(ctx);
		nft_ctx_buffer_error(ctx);
	}
	return ctx;
}

static int table_make(struct nft_ctx *ctx)
{
	_cleanup_free_ char *msg = NULL;
	int r = run(ctx, table_def, &msg, NULL);

	if (r == -EEXIST)
		return 0;
	if (r < 0)
		return err_set(r, "network lock: cannot make nftables table %s: %s", TABLE, msg ? msg : "");
	return 0;
}

/* An IPv4-mapped IPv6 address as the IPv4 address its packets carry. */
static void addr_of(const struct sockaddr_storage *ss, int *family, char *buf, size_t len, unsigned *port)
{
	if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *s = (const void *)ss;
		*port = ntohs(s->sin6_port);
		if (IN6_IS_ADDR_V4MAPPED(&s->sin6_addr)) {
			*family = AF_INET;
			inet_ntop(AF_INET, &s->sin6_addr.s6_addr[12], buf, (socklen_t)len);
		} else {
			*family = AF_INET6;
			inet_ntop(AF_INET6, &s->sin6_addr, buf, (socklen_t)len);
		}
	} else {
		const struct sockaddr_in *s = (const void *)ss;
		*family = AF_INET;
		*port = ntohs(s->sin_port);
		inet_ntop(AF_INET, &s->sin_addr, buf, (socklen_t)len);
	}
}

#define ELEMENT_MAX 256

/* "add"/"delete" element command of one connection, both directions. */
static int element(const char *verb, const struct netlock_conn *c, char *buf, size_t len)
{
	char l[INET6_ADDRSTRLEN], p[INET6_ADDRSTRLEN];
	unsigned lp, pp;
	int lf, pf;

	addr_of(&c->local, &lf, l, sizeof(l), &lp);
	addr_of(&c->peer, &pf, p, sizeof(p), &pp);
	if (lf != pf)
		return -EINVAL;
	int n = snprintf(buf, len, "%s element " TABLE " %s { %s . %u . %s . %u, %s . %u . %s . %u }\n", verb,
			 lf == AF_INET ? "conn4" : "conn6", l, lp, p, pp, p, pp, l, lp);
	return n > 0 && (size_t)n < len ? 0 : -ENAMETOOLONG;
}

/* One transaction of every connection's element command. */
static int elements(const char *verb, const struct netlock_conn *c, size_t n, char **ret)
{
	char *cmd = malloc(n * ELEMENT_MAX + 1);
	size_t len = 0;

	if (!cmd)
		return -ENOMEM;
	cmd[0] = 0;
	for (size_t i = 0; i < n; i++) {
		int r = element(verb, &c[i], cmd + len, ELEMENT_MAX);
		if (r < 0) {
			free(cmd);
			return err_set(r, "network lock: a connection between two address families");
		}
		len += strlen(cmd + len);
	}
	*ret = cmd;
	return 0;
}

int netlock_add(const struct netlock_conn *c, size_t n)
{
	_cleanup_free_ char *cmd = NULL, *msg = NULL;
	struct nft_ctx *ctx;
	int r;

	if (!n)
		return 0;
	if (fault_hit(FAULT_ENGINE_NETLOCK))
		return err_set(-EIO, "network lock: injected fault");
	r = elements("add", c, n, &cmd);
	if (r < 0)
		return r;
	ctx = ctx_new();
	if (!ctx)
		return -ENOMEM;
	/* the table is there but for the first dump since boot (or since
	 * a clear): made only when the add finds none */
	r = run(ctx, cmd, &msg, NULL);
	if (r == -ENOENT) {
		free(msg);
		msg = NULL;
		r = table_make(ctx);
		if (r < 0) {
			nft_ctx_free(ctx);
			return r; /* with table_make's detail */
		}
		r = run(ctx, cmd, &msg, NULL);
	}
	nft_ctx_free(ctx);
	if (r < 0)
		return err_set(r, "network lock: cannot add %zu connections to nftables table %s: %s", n, TABLE,
			       msg ? msg : "");
	return 0;
}

int netlock_del(const struct netlock_conn *c, size_t n)
{
	_cleanup_free_ char *cmd = NULL;
	struct nft_ctx *ctx;
	int first = 0, r;

	if (!n)
		return 0;
	ctx = ctx_new();
	if (!ctx)
		return -ENOMEM;
	/* all at once, the usual case; one by one when some are not there
	 * (a missing element fails its whole transaction) */
	r = elements("delete", c, n, &cmd);
	if (r >= 0)
		r = run(ctx, cmd, NULL, NULL);
	for (size_t i = 0; r < 0 && i < n; i++) {
		_cleanup_free_ char *msg = NULL;
		char one[ELEMENT_MAX];
		int q = element("delete", &c[i], one, sizeof(one));
		if (q >= 0)
			q = run(ctx, one, &msg, NULL);
		if (q == -ENOENT)
			continue; /* not locked, or the table is gone */
		if (q < 0 && !first)
			first = err_set(q, "network lock: cannot remove a connection from nftables table %s: %s",
					TABLE, msg ? msg : "");
	}
	nft_ctx_free(ctx);
	return first;
}

int engine_netlock_list(char **ret)
{
	_cleanup_free_ char *msg = NULL;
	char *out = NULL;
	struct nft_ctx *ctx = ctx_new();
	int r;

	if (!ctx)
		return -ENOMEM;
	r = run(ctx, "list table " TABLE "\n", &msg, &out);
	nft_ctx_free(ctx);

	if (r == -ENOENT) {
		*ret = strdup("");
		return *ret ? 0 : -ENOMEM;
	}
	if (r < 0)
		return err_set(r, "cannot list nftables table %s: %s", TABLE, msg ? msg : "");
	*ret = out;
	return 0;
}

int engine_netlock_clear(void)
{
	_cleanup_free_ char *msg = NULL;
	struct nft_ctx *ctx = ctx_new();
	int r;

	if (!ctx)
		return -ENOMEM;
	r = run(ctx, "delete table " TABLE "\n", &msg, NULL);
	nft_ctx_free(ctx);

	if (r == -ENOENT)
		return 0;
	return r < 0 ? err_set(r, "cannot delete nftables table %s: %s", TABLE, msg ? msg : "") : 0;
}

#else /* !HAVE_LIBNFTABLES */

int netlock_add(const struct netlock_conn *c, size_t n)
{
	return n ? err_set(-EOPNOTSUPP, "network lock: this build has no libnftables") : 0;
}

int netlock_del(const struct netlock_conn *c, size_t n)
{
	return 0;
}

int engine_netlock_list(char **ret)
{
	*ret = strdup("");
	return *ret ? 0 : -ENOMEM;
}

int engine_netlock_clear(void)
{
	return 0;
}

#endif
