/*
 * The bytes the TCP targets and their peers in the tests send each other:
 * byte i of a stream is a function of i and of who sends it, so that a
 * byte lost, repeated or moved anywhere in a connection is seen.
 */
#ifndef CKPTFS_TCP_PATTERN_H
#define CKPTFS_TCP_PATTERN_H

#include <stddef.h>
#include <stdint.h>

#define TCP_PATTERN_TARGET 1
#define TCP_PATTERN_PEER 2
/* bytes the peer sends before the dump, left unread by the target */
#define TCP_PATTERN_FIRST (48 * 1024)
/* bytes the peer sends while the target is away (dumped, not restored) */
#define TCP_PATTERN_GAP (16 * 1024)
/* the target's whole stream */
#define TCP_PATTERN_TOTAL (16u << 20)

#define MIN_(a, b) ((a) < (b) ? (a) : (b))

static inline uint8_t tcp_pattern_byte(uint64_t i, int who)
{
	return (uint8_t)(i * (who == TCP_PATTERN_TARGET ? 7 : 13) + i / 251 + (uint64_t)who);
}

static inline void tcp_pattern_fill(char *buf, size_t len, uint64_t off, int who)
{
	for (size_t k = 0; k < len; k++)
		buf[k] = (char)tcp_pattern_byte(off + k, who);
}

/* The offset of the first wrong byte, or UINT64_MAX. */
static inline uint64_t tcp_pattern_check(const char *buf, size_t len, uint64_t off, int who)
{
	for (size_t k = 0; k < len; k++)
		if ((uint8_t)buf[k] != tcp_pattern_byte(off + k, who))
			return off + k;
	return UINT64_MAX;
}

#endif
