/*
 * engine/ private: the network lock (netlock.c). While a TCP connection
 * is out of any process (dumped in repair mode, its process killed, not
 * yet restored), a firewall rule drops every packet of it, both ways, so
 * that the peer sees no reset: its packets are lost and retransmitted
 * until the restored socket answers.
 *
 * The rules live in one nftables table, `inet ckptfs`, made on first use:
 * two sets of 4-tuples (conn4, conn6) and two base chains (input, output)
 * that drop what matches them. A connection is one element per
 * direction. Elements stay until netlock_del(): a dump that fails and a
 * restore that succeeds delete theirs; what a failed restore leaves is
 * listed by engine_netlock_list() and cleared by engine_netlock_clear()
 * (`ckpt netlock`).
 */
#ifndef CKPTFS_ENGINE_NETLOCK_INT_H
#define CKPTFS_ENGINE_NETLOCK_INT_H

#include <stddef.h>
#include <sys/socket.h>

/* One connection: its local and peer addresses (AF_INET or AF_INET6; an
 * IPv4-mapped IPv6 address counts as IPv4, as its packets are). */
struct netlock_conn {
	struct sockaddr_storage local, peer;
};

/* Drops the packets of every connection of c from now on (both
 * directions), in one transaction. -EOPNOTSUPP with a detail when this
 * build has no libnftables; -errno with nft's message otherwise. */
int netlock_add(const struct netlock_conn *c, size_t n);

/* Lets them through again; a connection that is not locked is no error.
 * Returns the first error, having tried every one. */
int netlock_del(const struct netlock_conn *c, size_t n);

#endif
