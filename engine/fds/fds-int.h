/*
 * engine/ private to the descriptor code (fds*.c): the in-memory image of
 * a descriptor table and the per-kind hooks.
 *
 * fds.c walks /proc/PID/fd, classifies each descriptor, finds shared open
 * file descriptions with kcmp(KCMP_FILE), writes and parses the `fds` text
 * file and orders the restore. The files fds-<kind>.c know one family of
 * kinds each: how to recognise it, capture it from a duplicate taken with
 * pidfd_getfd(2), print and parse its keys, and recreate it. fds-share.c
 * moves what the processes of a tree share into one image of its own.
 *
 * What must stay true:
 *  - capture never changes what the process sees: queued bytes are peeked
 *    (tee(2), MSG_PEEK), never consumed; our duplicates are closed before
 *    fds_capture() returns, so that the process never runs with a
 *    reference of ours (a held pipe write end would hide EOF from its
 *    reader);
 *  - everything fds_restore() needs is in memory: it runs in the new
 *    process with no descriptor of the store.
 */
#ifndef CKPTFS_ENGINE_FDS_INT_H
#define CKPTFS_ENGINE_FDS_INT_H

#include <stdbool.h>
#include <stdint.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>

#include "common/common.h"
#include "engine/engine.h"
#include "engine/fds/fds.h"

struct stat;
struct fd_pty;
struct fd_net;

enum fd_kind {
	FD_KIND_DUP,      /* shares the open file description of an earlier fd */
	FD_KIND_FILE,     /* regular file reachable by its path */
	FD_KIND_DIR,      /* directory */
	FD_KIND_DEV,      /* /dev/null, /dev/zero, /dev/full, /dev/random, /dev/urandom */
	FD_KIND_TTY,      /* a terminal: reopened by path, or /dev/null when gone */
	FD_KIND_DELETED,  /* regular file unlinked while open: content in the image */
	FD_KIND_MEMFD,    /* memfd_create(2) file: content, name and seals in the image */
	FD_KIND_PIPE_R,   /* read end of an anonymous pipe */
	FD_KIND_PIPE_W,   /* write end of an anonymous pipe */
	FD_KIND_FIFO,     /* named FIFO, reopened by path */
	FD_KIND_EVENTFD,
	FD_KIND_EPOLL,
	FD_KIND_TIMERFD,
	FD_KIND_SIGNALFD,
	FD_KIND_INOTIFY,     /* inotify instance: its watches by path */
	FD_KIND_TCP_LISTEN,  /* listening TCP socket, IPv4 or IPv6 */
	FD_KIND_UNIX_LISTEN, /* listening Unix stream or seqpacket socket */
	FD_KIND_UNIX_PAIR,   /* connected Unix socket whose peer is in the process */
	FD_KIND_UNIX_DGRAM,  /* Unix datagram socket, unconnected or connected to a named socket */
	FD_KIND_SHARED,      /* names open file description dup_of of the tree's shared image */
	FD_KIND_TCP,         /* established TCP connection, IPv4 or IPv6 (fds-tcp.c) */
	FD_KIND_UDP,         /* UDP socket, bound or connected, IPv4 or IPv6 (fds-tcp.c) */
	FD_KIND_PTMX,        /* pseudo-terminal master: the pair's settings and queued bytes */
	FD_KIND_PTS,         /* pseudo-terminal slave whose master is in the process or tree */
	FD_KIND_PIPE_RW,     /* an anonymous pipe opened read-write (through /proc/PID/fd) */
	FD_KIND_PIDFD,       /* pidfd_open(2) / CLONE_PIDFD: of a process in the tree, outside it, or dead */
	FD_KIND_FANOTIFY,    /* fanotify group: its flags and marks by path (fds-event.c) */
	FD_KIND_NETLINK,     /* netlink socket: protocol, port id, groups, options (fds-netlink.c) */
	FD_KIND_PACKET,      /* packet socket: protocol, interface, options, filter (fds-netlink.c) */
	_FD_KIND_MAX,
};

/* A byte-range lock: type F_RDLCK or F_WRLCK, from start, len bytes (0: to
 * the end of the file, however far it grows), as in struct flock. */
struct fd_lock {
	short type;
	uint64_t start, len;
};

/* A data run of a sparse file: len bytes at offset off. */
struct fd_run {
	uint64_t off, len;
};

/* At most this many bytes of a deleted file's or memfd's data are kept
 * (held in memory at dump and restore); its size may be any. */
#define FDS_CONTENT_MAX (1ull << 30)
/* At most this many runs on a line; the rest of the file is one run. */
#define FDS_RUNS_MAX 1024

/* An epoll watch: the number it was added under; when that number was
 * closed or replaced since, via, the descriptor of the same table that
 * holds its file now, or shared, the id in the tree's shared image of the
 * description that holds it (another process of the tree holds it);
 * both -1 when the number itself still holds it. */
struct fd_watch {
	int tfd;
	uint32_t events;
	uint64_t data;
	int via;
	int shared;
	/* capture only: no descriptor of the process holds its file: another
	 * process of the tree must (fds_tree_check, fds_share); toff, its
	 * rank among the watches of number tfd, for kcmp */
	bool lost;
	unsigned toff;
};

/* An established TCP connection (fds-tcp.c): what repair mode reads and
 * sets. The queues' bytes are the entry's data: the receive queue's inq
 * bytes, then the send queue's outq. */
struct fd_tcp {
	uint32_t snd_seq;   /* sequence number of the first byte of the send queue */
	uint32_t rcv_seq;   /* ... of the receive queue (the next the process reads) */
	uint32_t inq, outq; /* bytes queued */
	int mss;            /* the MSS clamp agreed at the handshake */
	bool sack, tstamp, wscale;
	uint32_t snd_wscale, rcv_wscale;
	uint32_t timestamp; /* TCP_TIMESTAMP: the connection's timestamp clock */
	struct tcp_repair_window win;
	bool nodelay, keepalive;
	/* capture only */
	bool repair;        /* our duplicate (the process's socket) is in repair mode */
	bool locked;        /* its packets are dropped by the network lock */
	bool keep;          /* the process is killed: left in repair mode and locked */
};

/* An inotify watch: its number, mask, and the path of the inode watched. */
struct fd_iwatch {
	int wd;
	uint32_t mask;
	char *path;
};

/* A fanotify mark: what it is on (FAN_MARK_INODE, FAN_MARK_MOUNT or
 * FAN_MARK_FILESYSTEM), its user flags as fdinfo shows them (mflags:
 * FAN_MARK_IGNORED_SURV_MODIFY, FAN_MARK_EVICTABLE, FAN_MARK_IGNORE), its
 * masks, and a path naming the inode, a path of the mount, or a path of
 * the filesystem. */
struct fd_fmark {
	unsigned type;
	unsigned mflags;
	uint32_t mask, ignored;
	char *path;
};

/* One descriptor. Fields are meaningful for the kinds noted beside them. */
struct fd_entry {
	int fd;
	enum fd_kind kind;
	bool cloexec;
	unsigned flags;   /* status flags and access mode, as in fdinfo "flags:" minus O_CLOEXEC */
	uint64_t pos;     /* file, dir, deleted, memfd */
	int dup_of;       /* dup: the earlier fd sharing the description; shared: the id */

	char *path;       /* file, dir, dev, tty, deleted (where it was), unix-listen address */
	char *name;       /* memfd name (without "memfd:") */
	uint64_t ino;     /* file, dir, fifo: identity checked at restore */
	uint64_t size;    /* file: size at dump; deleted, memfd: content size; pipe: capacity */
	int64_t mtime_ns; /* file: recorded, not checked (a touch changes no content) */
	unsigned mode;    /* deleted, memfd: permission bits; unix-listen: its socket file's (with has_owner) */
	bool has_owner;   /* unix-listen bound to a path: mode, uid and gid of its socket file */
	uid_t uid;
	gid_t gid;
	bool has_times;   /* deleted, memfd, deleted dir: atime and mtime (with has_owner: uid, gid) */
	bool deleted;     /* dir, fifo: removed while open: made again empty and removed, with
			   * mode (and has_owner, has_times); unix-listen, unix-dgram,
			   * unix-pair: its path deleted since the bind (fds-unix.c) */
	bool is_cwd;      /* deleted dir: the process's cwd too: opened from it after the restore's
			   * chdir, so that both stay one directory */
	bool has_deadline; /* timerfd, absolute on a wall clock: when it expires (CLOCK_REALTIME) */
	struct timespec deadline;
	struct timespec atime, mtime;
	unsigned rdev_major, rdev_minor; /* dev */
	unsigned seals;   /* memfd */
	/* deleted, memfd: the file's device and inode at dump, as maps shows
	 * an area of it; at restore, shm_id (+1; 0: none) is the tree's
	 * shared memory object that an area mapping the same file made, which
	 * the line reopens instead of making a file of its own. content_shm:
	 * the areas of the process held all of it, saved there and not here */
	bool has_obj;
	unsigned obj_major, obj_minor;
	bool content_shm;
	uint32_t shm_id;

	uint64_t id;      /* pipe: pipe inode; unix-pair: inode of the lower-numbered end */
	bool peer_in;     /* pipe, unix-pair: the other end is in the process */
	uint64_t peer_ino; /* unix-pair, capture only: the other end's inode */

	/* O_ASYNC (flags): who gets the signal (F_GETOWN_EX) and which one
	 * (F_GETSIG, 0: SIGIO). owner_pid 0: nobody. Any kind. */
	int owner_type;   /* F_OWNER_TID, F_OWNER_PID, F_OWNER_PGRP */
	pid_t owner_pid;
	int sig;

	/* deleted, memfd: the file's data runs (SEEK_DATA, SEEK_HOLE), whose
	 * bytes are data back to back; holes between them are made again by
	 * ftruncate. NULL: data is the whole file, from offset 0. */
	struct fd_run *runs;
	size_t n_runs;

	/* Bytes owned by this line: queued pipe or socket bytes, file content.
	 * Written to data_path ("fds/<fd>.data") when data_len > 0. */
	void *data;
	uint64_t data_len;

	uint64_t count;   /* eventfd: the counter; inotify: how many watches */
	uint64_t dropped; /* udp: receive buffer bytes of the datagrams queued at dump (not kept) */
	bool semaphore;   /* eventfd */

	struct fd_watch *watches; /* epoll */
	size_t n_watches;

	struct fd_iwatch *iwatches; /* inotify, in increasing wd order */
	size_t n_iwatches;

	/* fanotify: fanotify_init's flags and event_f_flags; the marks in
	 * fdinfo's order (newest first); count is how many */
	unsigned fan_flags, fan_event_flags;
	struct fd_fmark *fmarks;
	size_t n_fmarks;

	struct fd_net *net; /* netlink, packet (fds-netlink.c) */

	int clockid;      /* timerfd */
	uint64_t ticks;
	unsigned settime_flags;
	struct timespec value, interval;

	uint64_t sigmask; /* signalfd: bit n-1 is signal n */

	/* pidfd (fds-pidfd.c): the process (or, with O_EXCL in flags,
	 * PIDFD_THREAD, the thread) it names, -1 once it was reaped; its
	 * start time (clock ticks after boot, /proc/PID/stat), to know it
	 * again at restore; in_tree: a process of the tree, made again with
	 * its pid by the restore (no start time to check). */
	pid_t of_pid;
	pid_t of_tgid;     /* capture only: the thread group of of_pid */
	uint64_t start;
	bool in_tree;

	int family;       /* sockets: AF_INET, AF_INET6, AF_UNIX */
	int type;         /* sockets: SOCK_STREAM, ... */
	int backlog;
	bool reuseaddr, v6only;
	struct sockaddr_storage addr;  /* bound address (unix: addrlen 2 when unbound) */
	socklen_t addrlen;
	struct sockaddr_storage peer;  /* unix-dgram: the named socket it is connected to; tcp, udp: the peer */
	socklen_t peerlen;             /* 0: not connected */
	int shutdown;     /* unix-pair: SHUT_RD=1 bit, SHUT_WR=2 bit as in unix_diag */
	int sndbuf, rcvbuf; /* unix-pair: SO_SNDBUF, SO_RCVBUF as getsockopt shows them */
	/* Unix sockets (fds-unix.c): the lengths of the messages queued for
	 * reading (seqpacket, dgram; their bytes are data, in order); SO_PASSCRED;
	 * a path name bound relative to dir (deleted: above). */
	uint32_t *msgs;
	size_t n_msgs;
	bool passcred;
	char *dir;

	/* File locks (fds-lock.c): flock and OFD locks are the description's,
	 * POSIX locks the process's, taken through this descriptor. */
	int flock;        /* LOCK_SH, LOCK_EX, or 0: none */
	struct fd_lock *ofd;
	size_t n_ofd;
	struct fd_lock *posix; /* also on a `shared` line: never in the shared image */
	size_t n_posix;

	struct fd_tcp *tcp; /* tcp */

	bool to_null;     /* tty: gone at load, replaced by /dev/null or tty_log */
	char *tty_log;    /* tty: CKPTFS_TTY_LOG, the file that replaces it, or NULL */

	/* ptmx, pts (fds-tty.c): the pair's number at dump (/dev/pts/N); a
	 * pts line is opened from its ptmx line's pair. tty: a pty slave's
	 * number + 1 (0: not a pty slave), to find its master in a tree. */
	int pty;
	struct fd_pty *ptyst; /* ptmx: settings, and the queued bytes' layout in data */

	/* capture only */
	int dupfd;        /* our pidfd_getfd(2) duplicate, -1 once closed */
	char *link;       /* readlink of /proc/PID/fd/N */
	char *fdinfo;     /* the whole /proc/PID/fdinfo/N */
	struct stat *st;
	uint64_t sdev, sino; /* st_dev, st_ino of st, kept for fds_share() */

	/* restore only */
	int tmp_other;    /* pipe, pair: the other end, created with this one, not yet placed;
			   * ptmx: the master, made early for a pts line, not yet placed */
	int tmp_peer;     /* ptmx: a slave of ours, held until every pts line is opened;
			   * reopened pipe: its write end, the same */
	int placed;       /* the number this line's description is at once opened (its fd, or
			   * the shared image's base + id), -1 before */
};

struct fd_image {
	struct fd_entry *e; /* sorted by fd */
	size_t n;
	pid_t pid;          /* capture only */
	int pidfd;          /* capture only */
	bool checking;      /* fds_check: the process runs; refuse by state, copy nothing */
	bool accept_changed; /* restore only: files and FIFOs that changed since the dump are
			      * restored anyway (engine_restore_opts.accept_changed_files) */
	int shm_base;       /* restore only: the tree's shared memory object k at shm_base + k (-1: none) */
	int shared_base;    /* restore only: where the tree's shared descriptions are (fds_restore) */
};

/* A key=value pair of one parsed line. */
struct fd_kv {
	const char *key;
	const char *val;
	bool used;
};

struct fd_line {
	struct fd_kv kv[64];
	size_t n;
	int fd;
	const char *kind;
	unsigned lineno;
};

/* ---- fds.c: helpers for the kind files ---------------------------------- */

/* The value of fdinfo line "key:" of e (whitespace skipped), or NULL. */
const char *fds_info(const struct fd_entry *e, const char *key);
/* Looks up (and marks used) key in a parsed line; NULL when absent. */
const char *fds_kv(struct fd_line *l, const char *key);
/* Whether key is there (not yet used), without using it. */
bool fds_kv_has(const struct fd_line *l, const char *key);
/* mode=0... : octal permission bits (required). */
int fds_kv_mode(struct fd_line *l, unsigned *ret);
/* Like fds_kv but absent is -EBADMSG with a detail naming the line. */
int fds_kv_req(struct fd_line *l, const char *key, const char **ret);
int fds_kv_u64(struct fd_line *l, const char *key, uint64_t *ret);
int fds_kv_u64_opt(struct fd_line *l, const char *key, uint64_t def, uint64_t *ret);
int fds_kv_hex(struct fd_line *l, const char *key, uint64_t *ret);
int fds_kv_bool(struct fd_line *l, const char *key, bool *ret);
/* family=inet|inet6 (required): AF_INET or AF_INET6. */
int fds_kv_family(struct fd_line *l, int *ret);
int fds_kv_path(struct fd_line *l, const char *key, char **ret);
int fds_kv_ts(struct fd_line *l, const char *key, struct timespec *ret);
/* Records "<fmt>: <previous detail>" (or just <fmt> when there is none)
 * and returns r. */
int fds_err_prefix(int r, const char *fmt, ...) _printf_(2, 3);
/* -EBADMSG naming the line: "fds line N (fd F): ..." */
int fds_bad(struct fd_line *l, const char *fmt, ...) _printf_(2, 3);

/* Appends to a growing text buffer (fds_write). */
struct fds_buf {
	char *p;
	size_t len, cap;
	int err;
};
void fds_printf(struct fds_buf *b, const char *fmt, ...) _printf_(2, 3);
/* Appends key=value with the value escaped (bytes outside 0x21..0x7e, '\\'
 * and '=' as \xHH) so that a line splits on spaces. */
void fds_put_path(struct fds_buf *b, const char *key, const char *val, size_t len);
/* Decodes an escaped value; returns the length or -EINVAL. */
ssize_t fds_unescape(const char *in, char *out, size_t outsz);

/* Moves fd to a number above `above`, O_CLOEXEC; closes the old one.
 * Returns the new fd or -errno (fd closed either way). */
int fds_move_above(int fd, int above);
/* Reads everything from fd (a pipe or file read from its current data)
 * into a malloc'd buffer, at most max bytes. */
int fds_copy_content(int fd, uint64_t size, void **ret);
/* Writes content into a fresh file fd (pwrite, skipping zero pages). */
int fds_fill_content(int fd, const void *data, uint64_t size);

/* ---- per kind ------------------------------------------------------------ */

/* fds-file.c: file, dir, dev, tty, deleted, memfd. Classify returns 1 when
 * the entry is one of its kinds (kind set), 0 when not, -errno to refuse. */
int fds_file_classify(struct fd_image *img, struct fd_entry *e);
int fds_file_capture(struct fd_image *img, struct fd_entry *e);
void fds_file_print(struct fd_entry *e, struct fds_buf *b);
int fds_file_parse(struct fd_entry *e, struct fd_line *l);
int fds_file_check_host(struct fd_image *img, struct fd_entry *e);
int fds_file_open(struct fd_image *img, struct fd_entry *e);
/* A regular file opened write-only with O_APPEND: a log, reopened at its
 * end whatever it became (fds-file.c). */
bool fds_file_is_log(const struct fd_entry *e);

/* fds-pipe.c */
int fds_pipe_classify(struct fd_image *img, struct fd_entry *e);
int fds_pipe_capture(struct fd_image *img, struct fd_entry *e);
void fds_pipe_print(struct fd_entry *e, struct fds_buf *b);
int fds_pipe_parse(struct fd_entry *e, struct fd_line *l);
int fds_pipe_open(struct fd_image *img, struct fd_entry *e, int above);
/* Cross-line rules of a parsed table: both ends of a pipe agree. */
int fds_pipe_validate(struct fd_image *img);
/* fds_load(): a FIFO must still be there. */
int fds_pipe_check_host(struct fd_image *img, struct fd_entry *e);

/* fds-event.c: eventfd, epoll, timerfd, signalfd. fds_epoll_holder():
 * where in another process of the tree (imgs[k]->e[m], *ret_k and
 * *ret_m) the file of lost watch w of epoll e of process i is held; 0,
 * or -ENOENT. */
int fds_event_classify(struct fd_image *img, struct fd_entry *e);
int fds_event_capture(struct fd_image *img, struct fd_entry *e);
void fds_event_print(struct fd_entry *e, struct fds_buf *b);
int fds_event_parse(struct fd_entry *e, struct fd_line *l);
int fds_event_open(struct fd_image *img, struct fd_entry *e);
int fds_epoll_holder(struct fd_image **imgs, const pid_t *pids, size_t n, size_t i, const struct fd_entry *e,
		     const struct fd_watch *w, size_t *ret_k, size_t *ret_m);

/* fds-pidfd.c. fds_pidfd_tree(): at dump, over a tree's images (capture
 * or check), marks the pidfds naming one of pids in_tree, and refuses
 * one naming a thread of the tree other than a main thread (threads are
 * made after the descriptors). fds_pidfd_check_host(): at load, an
 * outside process must still be the one dumped. */
int fds_pidfd_classify(struct fd_image *img, struct fd_entry *e);
int fds_pidfd_capture(struct fd_image *img, struct fd_entry *e);
void fds_pidfd_print(struct fd_entry *e, struct fds_buf *b);
int fds_pidfd_parse(struct fd_entry *e, struct fd_line *l);
int fds_pidfd_check_host(struct fd_image *img, struct fd_entry *e);
int fds_pidfd_open(struct fd_image *img, struct fd_entry *e);
int fds_pidfd_tree(struct fd_image **imgs, const pid_t *pids, size_t n);
/* Cross-line rules: a fanotify line's data file holds its marks. */
int fds_event_validate(struct fd_image *img);
/* fds_load(): a fanotify group can be made here (fanotify_init takes
 * CAP_SYS_ADMIN for most flags): -EPERM naming the descriptor if not. */
int fds_event_check_host(struct fd_image *img, struct fd_entry *e);

/* fds-file.c: where a removed directory or FIFO is made again: beside
 * where it was (the same filesystem), in /tmp when that directory is gone
 * too. out gets "DIR/.NAME.ckptfs-", to which the caller adds a unique
 * suffix. */
int fds_temp_beside(const char *path, char *out, size_t len);

/* fds-socket.c */
int fds_socket_classify(struct fd_image *img, struct fd_entry *e);
int fds_socket_capture(struct fd_image *img, struct fd_entry *e);
void fds_socket_print(struct fd_entry *e, struct fds_buf *b);
int fds_socket_parse(struct fd_entry *e, struct fd_line *l);
int fds_socket_open(struct fd_image *img, struct fd_entry *e, int above);
/* Cross-line rules: both ends of a socket pair agree. */
int fds_socket_validate(struct fd_image *img);

/* fds-unix.c: queued messages, names and connections of Unix sockets
 * (fds-socket.c calls these). Peek: e's queued messages (seqpacket,
 * dgram) into data and msgs, not consumed; checking: the first only, for
 * descriptors in flight. Name: at capture, whether e's path is deleted
 * or relative (vfs_ino, vfs_dev: its socket file per sock_diag, vfs_ino
 * 0: it has none of its own), -EOPNOTSUPP naming what cannot be made
 * again. Print and parse: the keys msgs= dir= deleted= passcred=.
 * Open: a Unix listener or datagram socket made again (bound, refilled,
 * deleted again); a connected pair through a listener when an end has a
 * name (sv[0] for a, sv[1] for b), plain socketpair() otherwise; refill
 * sends e's queued messages (or bytes) on fd, the other end. */
int fds_unix_peek(struct fd_entry *e, bool checking);
int fds_unix_name(struct fd_image *img, struct fd_entry *e, uint64_t vfs_ino, uint64_t vfs_dev);
void fds_unix_print(const struct fd_entry *e, struct fds_buf *b);
int fds_unix_parse(struct fd_entry *e, struct fd_line *l);
int fds_unix_open_listen(struct fd_entry *e);
int fds_unix_open_dgram(struct fd_entry *e);
int fds_unix_pair(const struct fd_entry *a, const struct fd_entry *b, int sv[2]);
int fds_unix_refill(int fd, const struct fd_entry *e);
/* fds_restore(): made before the other descriptors (a pair through a
 * listener takes the listener's name for a moment). */
bool fds_unix_early(const struct fd_entry *e);

/* fds-tcp.c: established TCP connections and UDP sockets. Classify is
 * called by fds_socket_classify() for an IPv4 or IPv6 socket that is not
 * listening: 1 when it is one of them, -EOPNOTSUPP naming it otherwise (a
 * TCP socket in another state). fds_tcp_lock(): at capture, before any
 * capture, every connection of img under the network lock. Release: each
 * out of repair mode and unlocked (killed false) or left so, our
 * duplicate closed (killed true). fds_tcp_free(): from fds_entry_free(),
 * what release would do with killed false. Unlock: at restore, the lock
 * of img's connections lifted. */
int fds_tcp_classify(struct fd_image *img, struct fd_entry *e, int domain, int type);
int fds_tcp_lock(struct fd_image *img);
int fds_tcp_capture(struct fd_image *img, struct fd_entry *e);
void fds_tcp_print(struct fd_entry *e, struct fds_buf *b);
int fds_tcp_parse(struct fd_entry *e, struct fd_line *l);
int fds_tcp_check_host(struct fd_image *img, struct fd_entry *e);
int fds_tcp_open(struct fd_image *img, struct fd_entry *e);
int fds_tcp_release(struct fd_image *img, bool killed);
int fds_tcp_unlock(struct fd_image *img);
void fds_tcp_free(struct fd_entry *e);
/* fds-socket.c: sends one sock_diag request (a dump when dump) and calls
 * cb for each reply message until NLMSG_DONE, an error, or cb returns
 * non-zero (returned). */
struct nlmsghdr;
int fds_sock_diag(void *req, size_t len, bool dump, int (*cb)(struct nlmsghdr *h, void *ud), void *ud);

/* fds-netlink.c: netlink and packet sockets. Classify is called by
 * fds_socket_classify() for either family: 1, or -EOPNOTSUPP naming what
 * is refused. check_host: a packet socket can be made here (-EPERM
 * without CAP_NET_RAW) and its interfaces are here by name (-ENODEV
 * naming the one that is not). */
int fds_net_classify(struct fd_image *img, struct fd_entry *e, int domain, int type);
int fds_net_capture(struct fd_image *img, struct fd_entry *e);
void fds_net_print(struct fd_entry *e, struct fds_buf *b);
int fds_net_parse(struct fd_entry *e, struct fd_line *l);
int fds_net_check_host(struct fd_image *img, struct fd_entry *e);
int fds_net_open(struct fd_entry *e);
void fds_net_free(struct fd_net *n);

/* fds-tty.c: pseudo-terminal pairs. Classify returns 1 for a master
 * (ptmx), 0 for the rest (a pty slave stays a `tty` line until
 * fds_tty_capture() of its master, frozen, finds it in the process and
 * makes it a `pts` line; fds_share() does the same across a tree). */
int fds_tty_classify(struct fd_image *img, struct fd_entry *e);
int fds_tty_capture(struct fd_image *img, struct fd_entry *e);
void fds_tty_print(struct fd_entry *e, struct fds_buf *b);
int fds_tty_parse(struct fd_entry *e, struct fd_line *l);
int fds_tty_open(struct fd_image *img, struct fd_entry *e, int above);
/* Cross-line rules: every pts line has its ptmx line in the same image. */
int fds_tty_validate(struct fd_image *img);
/* fds_share(): a `tty` line of one process whose master is a ptmx line of
 * another becomes a `pts` line; records on each master whose slave is the
 * controlling terminal of a session led in the tree that session and its
 * foreground group. Returns whether the pty numbered pty must move to
 * the shared image even when one process holds it all (a controlling
 * terminal: the session leader takes it before forking). */
int fds_tty_tree(struct fd_image **imgs, const pid_t *pids, size_t n);
bool fds_tty_must_share(const struct fd_entry *e);
/* ctty= fg= of a ptmx or tty line (fds-file.c prints and parses tty lines) */
void fds_tty_print_ctty(const struct fd_entry *e, struct fds_buf *b);
int fds_tty_parse_ctty(struct fd_entry *e, struct fd_line *l);
void fds_pty_free(struct fd_pty *p);

/* fds-lock.c. Capture: the locks fdinfo lists for e (its description's and
 * its process's), -EOPNOTSUPP naming the descriptor for a lease, a
 * mandatory lock or a lock on a kind not reopened by path. Print and parse
 * the flock=, ofd= and posix= keys (parse: any line but dup). Restore:
 * fds_lock_take_desc() on the description just opened, as fd (any
 * number); fds_lock_take_posix() once the table is final, in the process
 * that owns them. Both take without waiting: -EBUSY naming the file, the
 * lock and its holder when it is held by someone else. */
int fds_lock_capture(struct fd_image *img, struct fd_entry *e);
void fds_lock_print(const struct fd_entry *e, struct fds_buf *b);
int fds_lock_parse(struct fd_entry *e, struct fd_line *l);
int fds_lock_take_desc(const struct fd_entry *e, int fd);
int fds_lock_take_posix(struct fd_image *img, struct fd_image *shared);

/* fds-share.c: what only the whole tree can tell, over the images of
 * its processes (capture or check): the other end of every Unix socket
 * pair is held by one of them, every O_ASYNC owner is one of them (a
 * process, a group one of them leads, a main thread), and the file of an
 * epoll watch whose number no descriptor of its process holds any more
 * is held by another of them. -EOPNOTSUPP naming the pid, descriptor and
 * what is outside. */
int fds_tree_check(struct fd_image **imgs, const pid_t *pids, size_t n);

/* The kind's name in the `fds` file ("pipe-r"), and back. */
const char *fds_kind_name(enum fd_kind k);
int fds_kind_from_name(const char *s);

/* The entry for fd, or NULL. */
struct fd_entry *fds_find(struct fd_image *img, int fd);

/* A zeroed entry appended to an image (fd numbers are the caller's to
 * keep increasing); NULL when out of memory. */
struct fd_entry *fds_image_add(struct fd_image *img);
/* Frees what the entry owns and closes its descriptors; not the entry. */
void fds_entry_free(struct fd_entry *e);

/* The host checks of fds_load(): files changed or gone (an error, but a
 * changed one is restored anyway when accept_changed), terminals gone
 * (replaced by /dev/null, with a warning). Records accept_changed in img
 * for fds_restore(), which checks again on what it opens. */
int fds_host_check(struct fd_image *img, bool accept_changed);

/* In-memory text form, for tests and fds_write. */
int fds_format(struct fd_image *img, char **ret, size_t *ret_len);
/* Parses text; data files are fetched through get(path, &buf, &len, ud). */
int fds_parse(const char *text, int (*get)(const char *path, void **buf, uint64_t *len, void *ud),
	      void *ud, struct fd_image **ret);

#endif
