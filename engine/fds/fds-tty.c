/*
 * engine/fds/fds-tty.c: pseudo-terminal pairs held inside the process or
 * tree (a terminal emulator, a tmux server, `script`), and the
 * controlling terminal a session has among them.
 *
 * A master (/dev/ptmx) is a `ptmx` line carrying the whole pair: the
 * slave's termios (TCGETS2 on the master reads the slave's), window size,
 * packet mode, lock, and the bytes queued in both directions. A slave
 * (/dev/pts/N) whose master is in the process, or in the tree
 * (fds_tty_tree()), is a `pts` line naming the pair by its number N at
 * dump; at restore it is opened from the new pair, whose number may
 * differ. A slave whose master is elsewhere stays a `tty` line, reopened
 * by its path (fds-file.c).
 *
 * Queued bytes. A tty cannot be peeked, so with the processes frozen we
 * read them out and put them straight back, before anything else can
 * happen; a dump that then fails leaves the pair as it was:
 *  - towards the master (what the slave wrote, in the master's read
 *    queue): read on our duplicate of the master, sized with FIONREAD,
 *    packet mode off meanwhile (a pending packet-mode status notice is
 *    refused: reading it consumes it);
 *  - towards the slave (what the master wrote, in the slave's line
 *    discipline): read on a slave of ours (TIOCGPTPEER, non-blocking, a
 *    description of its own). In canonical mode every complete line comes
 *    out by one read each; one not ending in '\n', VEOL or VEOL2 was ended
 *    by VEOF, and an empty read is a VEOF on an empty line: both are kept
 *    as `eof=` offsets. The partly typed line comes out once ICANON is
 *    turned off for a moment; turning it on again with nothing queued
 *    leaves the line discipline's line state clean.
 * Putting bytes back uses TIOCSTI, which hands one byte to the line
 * discipline synchronously (a write into the other side would reach it
 * later, from a work queue, possibly after the settings are back), under
 * settings that neither echo nor transform: ECHO*, ISIG, IEXTEN, ICRNL,
 * INLCR, IGNCR, ISTRIP off (IXON too where the bytes hold a start or stop
 * character), every editing character moved to a byte the queue does
 * not hold. The master's own termios is always raw,
 * so its queue takes the bytes as they are. TIOCSTI takes CAP_SYS_ADMIN
 * (in the initial user namespace); without it, the bytes go through the
 * other side (refill_slow()), each step waiting until the line discipline
 * has them before the settings change again.
 *
 * What is kept exactly: every queued byte, the line boundaries of a
 * canonical queue, VEOF marks, the partial line. What is not: the line
 * discipline's echo column (an erase after restore may move the cursor
 * by a wrong amount after a tab), a pending ^V (the next byte is taken
 * literally), and a queue that is full (4095 bytes: more may wait in the
 * kernel's flip buffer behind it, out of reach) is refused for now.
 */
#include <asm/termbits.h>
#include <ctype.h>
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>

#include "engine/fds/fds-int.h"

#define PTY_QUEUE_MAX 4095 /* N_TTY_BUF_SIZE - 1: a full line discipline queue */
#define MAX_EOFS 4096

struct fd_pty {
	struct termios2 t;
	struct winsize ws;
	bool pkt, locked;
	bool fresh;          /* no slave was ever opened: none is at restore either */
	uint64_t in_len;     /* data: in_len bytes towards the slave, then towards the master */
	uint64_t *eofs;      /* offsets into the slave's queue where a VEOF goes */
	size_t n_eofs;
	pid_t ctty_sid;      /* the slave is the controlling terminal of this session (0: none) */
	pid_t fg_pgid;       /* and this is its foreground group */
	/* capture only */
	dev_t pts_dev, pts_rdev; /* the slave's devpts and device number */
};

void fds_pty_free(struct fd_pty *p)
{
	if (!p)
		return;
	free(p->eofs);
	free(p);
}

static bool is_master(const struct stat *st)
{
	return S_ISCHR(st->st_mode) && major(st->st_rdev) == 5 && minor(st->st_rdev) == 2;
}

static bool is_pty_slave(const struct stat *st)
{
	return S_ISCHR(st->st_mode) && major(st->st_rdev) >= 136 && major(st->st_rdev) <= 143;
}

static int pty_number(dev_t rdev)
{
	return (int)((major(rdev) - 136) * 256 + minor(rdev));
}

/* Whether TIOCSTI works for us (CAP_SYS_ADMIN in the initial user
 * namespace, or dev.tty.legacy_tiocsti and a terminal of our own), tried
 * on a pair of our own: bytes read out of a terminal that could not be
 * put back would be lost. */
static bool sti_allowed(void)
{
	static int allowed = -1;
	_cleanup_close_ int m = -1;
	int zero = 0;

	if (allowed >= 0)
		return allowed;
	m = open("/dev/ptmx", O_RDWR | O_NOCTTY | O_CLOEXEC);
	allowed = m >= 0 && ioctl(m, TIOCSPTLCK, &zero) == 0 && ioctl(m, TIOCSTI, "x") == 0;
	return allowed;
}

int fds_tty_classify(struct fd_image *img, struct fd_entry *e)
{
	(void)img;
	if (e->link[0] != '/' || !S_ISCHR(e->st->st_mode))
		return 0;
	if (is_pty_slave(e->st)) {
		/* a tty line for fds-file.c, until its master is found */
		e->pty = pty_number(e->st->st_rdev) + 1;
		e->rdev_major = major(e->st->st_rdev);
		e->rdev_minor = minor(e->st->st_rdev);
		return 0;
	}
	if (!is_master(e->st))
		return 0;
	if (e->flags & O_PATH)
		return err_set(-EOPNOTSUPP, "fd %d: O_PATH descriptor of pseudo-terminal master %s: not supported",
			       e->fd, e->link);
	unsigned n;
	if (ioctl(e->dupfd, TIOCGPTN, &n) < 0)
		return err_set(negerrno(), "fd %d: %s: cannot read its pseudo-terminal number (TIOCGPTN)", e->fd,
			       e->link);
	e->kind = FD_KIND_PTMX;
	e->pty = (int)n;
	e->ptyst = calloc(1, sizeof(*e->ptyst));
	return e->ptyst ? 1 : -ENOMEM;
}

/* Reads what fd has queued, until it has no more (non-blocking, or
 * FIONREAD-sized when it may block). Appends to buf. */
static int drain(int fd, bool sized, char *buf, size_t cap, size_t *len)
{
	for (int guard = 0; guard < 10000; guard++) {
		int avail = 0;
		size_t want = cap - *len;
		if (sized) {
			if (ioctl(fd, FIONREAD, &avail) < 0)
				return negerrno();
			if (avail <= 0)
				return 0;
			want = MIN(want, (size_t)avail);
		}
		if (want == 0)
			return -EOVERFLOW;
		ssize_t n = read(fd, buf + *len, want);
		if (n < 0)
			return errno == EAGAIN ? 0 : negerrno();
		if (n == 0)
			return 0;
		*len += (size_t)n;
	}
	return -EIO;
}

static bool line_end(const struct termios2 *t, unsigned char c)
{
	return c == '\n' || (t->c_cc[VEOL] && c == t->c_cc[VEOL]) || (t->c_cc[VEOL2] && c == t->c_cc[VEOL2]);
}

/* The slave's queue, read out of the slave s of ours (non-blocking). */
static int drain_input(struct fd_pty *p, int s, char *buf, size_t cap, size_t *len)
{
	struct termios2 raw;
	int r;

	if (!(p->t.c_lflag & ICANON))
		return drain(s, false, buf, cap, len);
	/* one complete line a read */
	for (int guard = 0; guard < MAX_EOFS; guard++) {
		ssize_t n = read(s, buf + *len, cap - *len);
		if (n < 0) {
			if (errno == EAGAIN)
				break;
			return negerrno();
		}
		*len += (size_t)n;
		if (n == 0 || !line_end(&p->t, (unsigned char)buf[*len - 1])) {
			uint64_t *v = realloc(p->eofs, (p->n_eofs + 1) * sizeof(*v));
			if (!v)
				return -ENOMEM;
			p->eofs = v;
			p->eofs[p->n_eofs++] = *len;
		}
		if (*len == cap)
			return -EOVERFLOW;
	}
	/* the partial line: readable once ICANON is off */
	raw = p->t;
	raw.c_lflag &= ~(tcflag_t)ICANON;
	raw.c_cc[VMIN] = 0;
	raw.c_cc[VTIME] = 0;
	if (ioctl(s, TCSETS2, &raw) < 0)
		return negerrno();
	r = drain(s, false, buf, cap, len);
	if (ioctl(s, TCSETS2, &p->t) < 0 && r >= 0)
		r = negerrno();
	return r;
}

/* Settings under which bytes handed to the slave's line discipline are
 * queued as they are: no echo, no signal, no transformation, and every
 * editing character on a byte that data does not hold. */
static void refill_termios(const struct termios2 *t, const char *data, size_t len, struct termios2 *ret)
{
	bool seen[256] = { false };
	unsigned spare = 0;

	for (size_t i = 0; i < len; i++)
		seen[(unsigned char)data[i]] = true;
	seen['\n'] = seen[t->c_cc[VEOF]] = seen[t->c_cc[VEOL]] = seen[t->c_cc[VEOL2]] = true;
	while (spare < 255 && seen[spare])
		spare++;
	*ret = *t;
	ret->c_lflag &= ~(tcflag_t)(ECHO | ECHOE | ECHOK | ECHONL | ECHOCTL | ECHOPRT | ECHOKE | ISIG | IEXTEN);
	ret->c_iflag &= ~(tcflag_t)(ICRNL | INLCR | IGNCR | ISTRIP | IUCLC | PARMRK | IMAXBEL);
	const int edit[] = { VERASE, VKILL, VWERASE, VREPRINT, VLNEXT, VINTR, VQUIT, VSUSP, VDISCARD };
	for (size_t i = 0; i < ARRAY_SIZE(edit); i++)
		ret->c_cc[edit[i]] = (cc_t)spare;
	/* Flow control only where the bytes hold its characters: turning
	 * IXON off restarts output a ^S stopped. */
	if ((t->c_iflag & IXON) && ((t->c_cc[VSTART] && memchr(data, t->c_cc[VSTART], len)) ||
				    (t->c_cc[VSTOP] && memchr(data, t->c_cc[VSTOP], len))))
		ret->c_iflag &= ~(tcflag_t)IXON;
}

static int sti(int fd, const char *data, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (ioctl(fd, TIOCSTI, &data[i]) < 0)
			return negerrno();
	return 0;
}

/* Waits until fd's line discipline counts want bytes readable (FIONREAD):
 * what we wrote into the other side went through the kernel's flip
 * buffer, whose worker hands it on later. */
static int wait_queued(int fd, int want)
{
	for (int i = 0; i < 10000; i++) {
		int n;
		if (ioctl(fd, FIONREAD, &n) < 0)
			return negerrno();
		if (n == want)
			return 0;
		if (n > want)
			return -EIO;
		struct timespec ts = { 0, 500000 };
		nanosleep(&ts, NULL);
	}
	return -ETIMEDOUT;
}

static int write_all(int fd, const char *data, size_t len)
{
	for (size_t off = 0; off < len;) {
		ssize_t n = write(fd, data + off, len - off);
		if (n < 0 && errno == EAGAIN) {
			struct pollfd pf = { .fd = fd, .events = POLLOUT };
			poll(&pf, 1, 100);
			continue;
		}
		if (n < 0)
			return negerrno();
		off += (size_t)n;
	}
	return 0;
}

/* Reads len bytes off the master (the echo of what we wrote), waiting
 * for them. */
static int swallow(int m, size_t len)
{
	char buf[512];

	while (len) {
		struct pollfd pf = { .fd = m, .events = POLLIN };
		if (poll(&pf, 1, 5000) != 1)
			return -ETIMEDOUT;
		int avail = 0;
		if (ioctl(m, FIONREAD, &avail) < 0)
			return negerrno();
		ssize_t n = read(m, buf, MIN((size_t)MAX(avail, 1), MIN(len, sizeof(buf))));
		if (n <= 0)
			return n < 0 ? negerrno() : -EIO;
		len -= (size_t)n;
	}
	return 0;
}

/* The same without TIOCSTI: the bytes go through the other side (into
 * the master for the slave's queue, into the slave for the master's) and
 * each step waits until the line discipline has them, before the
 * settings change again. In canonical mode FIONREAD counts complete lines
 * only: the partly typed line after them is written with ECHO on (and no
 * output processing), and its echo, one byte a byte, read off the
 * master, says it arrived. The settings in between are refill_termios()'s,
 * with OPOST off. */
static int refill_slow(int m, int s, const struct fd_pty *p, const char *data, size_t in_len, size_t out_len)
{
	struct termios2 quiet;
	bool canon = p->t.c_lflag & ICANON;
	size_t at = 0, lines = canon ? 0 : in_len;
	int r;

	refill_termios(&p->t, data, in_len, &quiet);
	quiet.c_oflag &= ~(tcflag_t)OPOST;
	if (ioctl(s, TCSETS2, &quiet) < 0)
		return negerrno();
	for (size_t i = 0; canon && i < in_len; i++)
		if (line_end(&p->t, (unsigned char)data[i]))
			lines = i + 1;
	if (p->n_eofs)
		lines = MAX(lines, (size_t)p->eofs[p->n_eofs - 1]);
	/* complete lines (all of it when not canonical), VEOF marks between */
	r = 0;
	for (size_t k = 0; k <= p->n_eofs && r >= 0; k++) {
		size_t to = k < p->n_eofs ? p->eofs[k] : lines;
		r = write_all(m, data + at, to - at);
		at = to;
		if (r >= 0 && k < p->n_eofs)
			r = write_all(m, (const char *)&p->t.c_cc[VEOF], 1);
	}
	if (r >= 0)
		r = wait_queued(s, (int)lines);
	/* the partial line, seen through its echo */
	if (r >= 0 && in_len > lines) {
		struct termios2 echo = quiet;
		echo.c_lflag |= ECHO;
		r = ioctl(s, TCSETS2, &echo) < 0 ? negerrno() : 0;
		if (r >= 0)
			r = write_all(m, data + lines, in_len - lines);
		if (r >= 0)
			r = swallow(m, in_len - lines);
		if (r >= 0 && ioctl(s, TCSETS2, &quiet) < 0)
			r = negerrno();
	}
	if (r >= 0 && out_len) {
		int before = 0;
		r = ioctl(m, FIONREAD, &before) < 0 ? negerrno() : 0;
		if (r >= 0)
			r = write_all(s, data + in_len, out_len);
		if (r >= 0)
			r = wait_queued(m, before + (int)out_len);
	}
	if (ioctl(s, TCSETS2, &p->t) < 0 && r >= 0)
		r = negerrno();
	return r;
}

/* Hands the slave's queue back to it (s: a slave), VEOF marks included,
 * then the master's (m), and puts the settings t back: with TIOCSTI
 * where we may, else through the other side. */
static int refill(int m, int s, const struct fd_pty *p, const char *data, size_t in_len, size_t out_len)
{
	struct termios2 quiet;
	size_t at = 0;
	int r = 0;

	if (!in_len && !p->n_eofs && !out_len)
		return 0;
	if (s >= 0 && (!sti_allowed() || fault_hit(FAULT_ENGINE_PTY_NO_STI)))
		return refill_slow(m, s, p, data, in_len, out_len);
	if (in_len || p->n_eofs) {
		refill_termios(&p->t, data, in_len, &quiet);
		if (ioctl(s, TCSETS2, &quiet) < 0)
			return negerrno();
		for (size_t k = 0; k <= p->n_eofs && r >= 0; k++) {
			size_t to = k < p->n_eofs ? p->eofs[k] : in_len;
			r = sti(s, data + at, to - at);
			at = to;
			if (r >= 0 && k < p->n_eofs)
				r = sti(s, (const char *)&p->t.c_cc[VEOF], 1);
		}
		if (ioctl(s, TCSETS2, &p->t) < 0 && r >= 0)
			r = negerrno();
	}
	if (r >= 0 && out_len)
		r = sti(m, data + in_len, out_len);
	return r;
}

/* Whether a slave of e's pair was ever opened: one closed since (the master
 * reads end of input: POLLHUP), or one open now, in the process or in any
 * process we see. Then a slave of ours, opened and closed, leaves the pair
 * as it was; a pair never opened would read end of input afterwards, so
 * it is not touched (and nothing queued towards its slave is kept: there
 * is no reader). */
/* Whether process pid (a /proc name) has want open. */
static bool holds(const char *pid, const char *want)
{
	char path[600], link[64];
	DIR *d;
	struct dirent *fe;
	bool found = false;

	snprintf(path, sizeof(path), "/proc/%s/fd", pid);
	d = opendir(path);
	while (d && !found && (fe = readdir(d))) {
		snprintf(path, sizeof(path), "/proc/%s/fd/%s", pid, fe->d_name);
		ssize_t n = readlink(path, link, sizeof(link) - 1);
		found = n > 0 && (link[n] = 0, strcmp(link, want) == 0);
	}
	if (d)
		closedir(d);
	return found;
}

/* Whether a descendant of pid holds want: where a terminal emulator's
 * or tmux server's slaves are, looked at before the whole of /proc. */
static bool descendant_holds(pid_t pid, const char *want)
{
	pid_t v[256];
	size_t n = 0;

	v[n++] = pid;
	for (size_t i = 0; i < n; i++) {
		char path[96], name[16];
		_cleanup_free_ char *text = NULL;
		snprintf(name, sizeof(name), "%d", v[i]);
		if (i > 0 && holds(name, want))
			return true;
		snprintf(path, sizeof(path), "/proc/%d/task/%d/children", v[i], v[i]);
		if (read_file_full(path, &text, NULL) < 0)
			continue;
		for (char *t = text, *end; *t && n < ARRAY_SIZE(v); t = end) {
			long c = strtol(t, &end, 10);
			if (end == t)
				break;
			v[n++] = (pid_t)c;
		}
	}
	return false;
}

static bool slave_was_opened(struct fd_image *img, const struct fd_entry *e)
{
	struct pollfd pf = { .fd = e->dupfd, .events = POLLIN };
	char want[64];
	DIR *d;
	struct dirent *pe;
	bool found = false;

	if (poll(&pf, 1, 0) > 0 && (pf.revents & POLLHUP))
		return true;
	for (size_t i = 0; i < img->n; i++)
		if (img->e[i].kind == FD_KIND_TTY && img->e[i].pty == e->pty + 1)
			return true;
	snprintf(want, sizeof(want), "/dev/pts/%d", e->pty);
	if (descendant_holds(img->pid, want))
		return true;
	d = opendir("/proc");
	if (!d)
		return true; /* cannot tell: as before */
	while (!found && (pe = readdir(d)))
		found = pe->d_name[0] >= '1' && pe->d_name[0] <= '9' && holds(pe->d_name, want);
	closedir(d);
	return found;
}

/* Converts the tty lines of img that are the slave of e into pts lines. */
static void adopt_slaves(struct fd_image *img, const struct fd_entry *e)
{
	for (size_t i = 0; i < img->n; i++) {
		struct fd_entry *s = &img->e[i];
		if (s->kind != FD_KIND_TTY || !s->pty || s->sdev != e->ptyst->pts_dev ||
		    makedev(s->rdev_major, s->rdev_minor) != e->ptyst->pts_rdev)
			continue;
		s->kind = FD_KIND_PTS;
		s->pty = e->pty;
	}
}

int fds_tty_capture(struct fd_image *img, struct fd_entry *e)
{
	struct fd_pty *p = e->ptyst;
	_cleanup_close_ int s = -1;
	_cleanup_free_ char *buf = NULL;
	size_t in_len = 0, out_len = 0;
	int lk = 0, pkt = 0, r, q, avail;

	if (e->kind == FD_KIND_PTS || e->kind == FD_KIND_TTY)
		return 0;
	if (ioctl(e->dupfd, TIOCGPTLCK, &lk) < 0 || ioctl(e->dupfd, TIOCGPKT, &pkt) < 0 ||
	    ioctl(e->dupfd, TCGETS2, &p->t) < 0 || ioctl(e->dupfd, TIOCGWINSZ, &p->ws) < 0)
		return err_set(negerrno(), "fd %d: pseudo-terminal master of /dev/pts/%d: cannot read its settings",
			       e->fd, e->pty);
	p->locked = lk;
	p->pkt = pkt;
	/* TCSETS2 leaves the line discipline as it is: another one (N_HDLC,
	 * a serial protocol's, set with TIOCSETD) would be lost */
	if (p->t.c_line != 0)
		return err_set(-EOPNOTSUPP,
			       "fd %d: pseudo-terminal /dev/pts/%d runs line discipline %u, not N_TTY: not supported",
			       e->fd, e->pty, p->t.c_line);
	if (p->pkt) {
		struct pollfd pf = { .fd = e->dupfd, .events = POLLPRI };
		if (poll(&pf, 1, 0) > 0 && (pf.revents & POLLPRI))
			return err_set(-EBUSY,
				       "fd %d: pseudo-terminal master of /dev/pts/%d: a packet-mode status notice "
				       "is waiting to be read: not supported (try again)",
				       e->fd, e->pty);
	}
	if (p->locked) {
		/* never unlocked: no slave can be open, and its queue is out
		 * of our reach too */
		for (size_t i = 0; i < img->n; i++)
			if (img->e[i].kind == FD_KIND_TTY && img->e[i].pty == e->pty + 1)
				return err_set(-EOPNOTSUPP,
					       "fd %d: pseudo-terminal /dev/pts/%d is locked again while fd %d holds "
					       "its slave: not supported",
					       e->fd, e->pty, img->e[i].fd);
		return 0;
	}
	/* The process runs during fds_check: it may read meanwhile. */
	if (img->checking)
		return 0;
	p->pts_rdev = makedev(136 + (unsigned)e->pty / 256, (unsigned)e->pty % 256);
	p->fresh = !slave_was_opened(img, e);
	if (!p->fresh) {
		s = (int)ioctl(e->dupfd, TIOCGPTPEER, O_RDWR | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
		if (s < 0)
			return err_set(negerrno(), "fd %d: pseudo-terminal master of /dev/pts/%d: cannot open its slave",
				       e->fd, e->pty);
		struct stat st;
		if (fstat(s, &st) < 0)
			return err_set(negerrno(), "fd %d: fstat of /dev/pts/%d", e->fd, e->pty);
		p->pts_dev = st.st_dev;
		p->pts_rdev = st.st_rdev;
		adopt_slaves(img, e);
	}

	if (ioctl(e->dupfd, FIONREAD, &avail) < 0)
		return err_set(negerrno(), "fd %d: FIONREAD", e->fd);
	if (avail >= PTY_QUEUE_MAX)
		return err_set(-EBUSY, "fd %d: pseudo-terminal /dev/pts/%d: its output queue is full (%d bytes, "
				       "more may wait behind it): not supported",
			       e->fd, e->pty, avail);
	avail = 0;
	if (s >= 0 && ioctl(s, FIONREAD, &avail) < 0)
		return err_set(negerrno(), "fd %d: FIONREAD of /dev/pts/%d", e->fd, e->pty);
	if (avail >= PTY_QUEUE_MAX)
		return err_set(-EBUSY, "fd %d: pseudo-terminal /dev/pts/%d: its input queue is full (%d bytes, "
				       "more may wait behind it): not supported",
			       e->fd, e->pty, avail);

	size_t cap = 2 * (PTY_QUEUE_MAX + 1) + MAX_EOFS;
	buf = malloc(cap);
	if (!buf)
		return -ENOMEM;
	/* From here on the queues are out: whatever happens, they go back. */
	/* Packet mode off meanwhile: master reads without a status byte,
	 * and the slave's settings changed back and forth (IXON) leave no
	 * status notice behind (none was pending: checked above, and turning
	 * it on again clears what we caused). */
	int off = 0, on = p->pkt;
	if (p->pkt && ioctl(e->dupfd, TIOCPKT, &off) < 0)
		return err_set(negerrno(), "fd %d: pseudo-terminal /dev/pts/%d: cannot turn packet mode off", e->fd,
			       e->pty);
	r = s < 0 ? 0 : drain_input(p, s, buf, cap / 2, &in_len);
	/* with the slave's bytes out: they must go back all the same */
	if (r >= 0 && fault_hit(FAULT_ENGINE_PTY_DRAIN))
		r = -EIO;
	if (r >= 0)
		r = drain(e->dupfd, true, buf + in_len, cap / 2, &out_len);
	q = refill(e->dupfd, s, p, buf, in_len, out_len);
	if (p->pkt && ioctl(e->dupfd, TIOCPKT, &on) < 0 && q >= 0)
		q = negerrno();
	if (r >= 0 && fault_hit(FAULT_ENGINE_PTY_CAPTURE))
		r = -EIO;
	if (q < 0)
		return err_set(q, "fd %d: pseudo-terminal /dev/pts/%d: cannot put its %zu+%zu queued bytes back", e->fd,
			       e->pty, in_len, out_len);
	if (r < 0)
		return err_set(r, "fd %d: pseudo-terminal /dev/pts/%d: cannot read its queued bytes", e->fd, e->pty);
	p->in_len = in_len;
	e->data_len = in_len + out_len;
	if (e->data_len)
		e->data = TAKE_PTR(buf);
	return 0;
}

void fds_tty_print(struct fd_entry *e, struct fds_buf *b)
{
	const struct fd_pty *p = e->ptyst;

	fds_printf(b, " pty=%d", e->pty);
	if (e->kind != FD_KIND_PTMX)
		return;
	fds_printf(b, " iflag=0x%x oflag=0x%x cflag=0x%x lflag=0x%x line=%u cc=", p->t.c_iflag, p->t.c_oflag,
		   p->t.c_cflag, p->t.c_lflag, p->t.c_line);
	for (int i = 0; i < NCCS; i++)
		fds_printf(b, "%02x", p->t.c_cc[i]);
	fds_printf(b, " ispeed=%u ospeed=%u rows=%u cols=%u xpixel=%u ypixel=%u pkt=%d locked=%d in=%lu out=%lu",
		   p->t.c_ispeed, p->t.c_ospeed, p->ws.ws_row, p->ws.ws_col, p->ws.ws_xpixel, p->ws.ws_ypixel,
		   p->pkt, p->locked, p->in_len, e->data_len - p->in_len);
	for (size_t i = 0; i < p->n_eofs; i++)
		fds_printf(b, "%s%lu", i ? "," : " eof=", p->eofs[i]);
	if (p->fresh)
		fds_printf(b, " fresh=1");
	fds_tty_print_ctty(e, b);
}

static int kv_u32(struct fd_line *l, const char *key, uint64_t max, uint64_t *ret)
{
	int r = fds_kv_u64(l, key, ret);

	if (r >= 0 && *ret > max)
		return fds_bad(l, "%s=%lu: out of range", key, *ret);
	return r;
}

static int kv_flag(struct fd_line *l, const char *key, tcflag_t *ret)
{
	uint64_t v;
	int r = fds_kv_hex(l, key, &v);

	if (r >= 0 && v > UINT32_MAX)
		return fds_bad(l, "%s=0x%lx: out of range", key, v);
	*ret = (tcflag_t)v;
	return r;
}

int fds_tty_parse(struct fd_entry *e, struct fd_line *l)
{
	struct fd_pty *p;
	uint64_t v, in, out;
	const char *cc, *eof;
	int r;

	if ((r = kv_u32(l, "pty", INT32_MAX, &v)) < 0)
		return r;
	e->pty = (int)v;
	if (e->kind != FD_KIND_PTMX)
		return 0;
	if ((e->flags & O_ACCMODE) == O_RDONLY || (e->flags & O_ACCMODE) == 3)
		return fds_bad(l, "flags=0%o: a master is opened for writing", e->flags);
	p = e->ptyst = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	if ((r = kv_flag(l, "iflag", &p->t.c_iflag)) < 0 || (r = kv_flag(l, "oflag", &p->t.c_oflag)) < 0 ||
	    (r = kv_flag(l, "cflag", &p->t.c_cflag)) < 0 || (r = kv_flag(l, "lflag", &p->t.c_lflag)) < 0)
		return r;
	if ((r = kv_u32(l, "line", 255, &v)) < 0)
		return r;
	p->t.c_line = (cc_t)v;
	if ((r = fds_kv_req(l, "cc", &cc)) < 0)
		return r;
	if (strlen(cc) != 2 * NCCS)
		return fds_bad(l, "cc=%s: not %d hex bytes", cc, NCCS);
	for (int i = 0; i < NCCS; i++) {
		unsigned x;
		if (sscanf(cc + 2 * i, "%2x", &x) != 1)
			return fds_bad(l, "cc=%s: not %d hex bytes", cc, NCCS);
		p->t.c_cc[i] = (cc_t)x;
	}
	if ((r = kv_u32(l, "ispeed", UINT32_MAX, &v)) < 0)
		return r;
	p->t.c_ispeed = (speed_t)v;
	if ((r = kv_u32(l, "ospeed", UINT32_MAX, &v)) < 0)
		return r;
	p->t.c_ospeed = (speed_t)v;
	const char *ws[] = { "rows", "cols", "xpixel", "ypixel" };
	unsigned short *wv[] = { &p->ws.ws_row, &p->ws.ws_col, &p->ws.ws_xpixel, &p->ws.ws_ypixel };
	for (size_t i = 0; i < ARRAY_SIZE(ws); i++) {
		if ((r = kv_u32(l, ws[i], UINT16_MAX, &v)) < 0)
			return r;
		*wv[i] = (unsigned short)v;
	}
	if ((r = fds_kv_bool(l, "pkt", &p->pkt)) < 0 || (r = fds_kv_bool(l, "locked", &p->locked)) < 0 ||
	    (r = fds_kv_u64(l, "in", &in)) < 0 || (r = fds_kv_u64(l, "out", &out)) < 0)
		return r;
	if (in > PTY_QUEUE_MAX || out > PTY_QUEUE_MAX)
		return fds_bad(l, "in=%lu out=%lu: above a terminal queue's %d bytes", in, out, PTY_QUEUE_MAX);
	p->in_len = in;
	e->data_len = in + out;
	eof = fds_kv(l, "eof");
	if (eof) {
		if (!(p->t.c_lflag & ICANON))
			return fds_bad(l, "eof= without ICANON in lflag");
		for (const char *s = eof; *s;) {
			char *end;
			if (p->n_eofs == MAX_EOFS || !isdigit((unsigned char)*s))
				return fds_bad(l, "eof=%s: not increasing offsets", eof);
			errno = 0;
			unsigned long long o = strtoull(s, &end, 10);
			if (errno || o > in || (p->n_eofs && o < p->eofs[p->n_eofs - 1]) || (*end && *end != ','))
				return fds_bad(l, "eof=%s: not increasing offsets up to in=%lu", eof, in);
			uint64_t *nv = realloc(p->eofs, (p->n_eofs + 1) * sizeof(*nv));
			if (!nv)
				return -ENOMEM;
			p->eofs = nv;
			p->eofs[p->n_eofs++] = o;
			s = *end ? end + 1 : end;
		}
	}
	if (fds_kv_has(l, "fresh")) {
		if ((r = fds_kv_bool(l, "fresh", &p->fresh)) < 0)
			return r;
		if (p->fresh && (in || p->n_eofs))
			return fds_bad(l, "fresh=1 (no slave ever opened) with bytes queued towards the slave");
	}
	return fds_tty_parse_ctty(e, l);
}

static struct fd_entry *master_of(struct fd_image *img, int pty)
{
	for (size_t i = 0; i < img->n; i++)
		if (img->e[i].kind == FD_KIND_PTMX && img->e[i].pty == pty)
			return &img->e[i];
	return NULL;
}

int fds_tty_validate(struct fd_image *img)
{
	for (size_t i = 0; i < img->n; i++) {
		struct fd_entry *e = &img->e[i], *m;
		if (e->kind != FD_KIND_PTS && e->kind != FD_KIND_PTMX)
			continue;
		m = master_of(img, e->pty);
		if (!m)
			return err_set(-EBADMSG, "fds: fd %d: pts of pty=%d, but no ptmx line holds it", e->fd, e->pty);
		if (e->kind == FD_KIND_PTMX && m != e)
			return err_set(-EBADMSG, "fds: fd %d: a second ptmx line for pty=%d (a dup is a dup line)",
				       e->fd, e->pty);
		if (e->kind == FD_KIND_PTS && (m->ptyst->locked || m->ptyst->fresh))
			return err_set(-EBADMSG, "fds: fd %d: pts of pty=%d, which is %s", e->fd, e->pty,
				       m->ptyst->locked ? "locked" : "fresh (no slave ever opened)");
	}
	return 0;
}

/* A new pair with e's settings and queued bytes: the master in
 * e->tmp_other, a slave in e->tmp_peer, both above `above`. */
static int pair_make(struct fd_entry *e, int above)
{
	const struct fd_pty *p = e->ptyst;
	_cleanup_close_ int m = -1, s = -1;
	int zero = 0, on, r;

	m = open("/dev/ptmx", (int)(e->flags & O_ACCMODE) | O_NOCTTY | O_CLOEXEC);
	if (m < 0)
		return err_set(negerrno(), "fd %d: cannot open /dev/ptmx", e->fd);
	if (ioctl(m, TIOCSPTLCK, &zero) < 0)
		return err_set(negerrno(), "fd %d: cannot unlock the new pseudo-terminal", e->fd);
	/* a pair whose slave was never opened stays so: reads on its master
	 * wait, where they end (EIO) once a slave was closed */
	if (!p->fresh) {
		s = (int)ioctl(m, TIOCGPTPEER, O_RDWR | O_NOCTTY | O_NONBLOCK | O_CLOEXEC);
		if (s < 0)
			return err_set(negerrno(), "fd %d: cannot open the new pseudo-terminal's slave", e->fd);
	}
	if (ioctl(m, TIOCSWINSZ, &p->ws) < 0)
		return err_set(negerrno(), "fd %d: cannot set the window size %ux%u", e->fd, p->ws.ws_col, p->ws.ws_row);
	/* on the master: the slave's settings (tty_mode_ioctl) */
	if (ioctl(m, TCSETS2, &p->t) < 0)
		return err_set(negerrno(), "fd %d: cannot set the terminal's settings (TCSETS2)", e->fd);
	if (fault_hit(FAULT_ENGINE_PTY_RESTORE))
		return err_set(-EIO, "fd %d: refilling the pseudo-terminal: injected fault", e->fd);
	r = refill(m, s, p, e->data, p->in_len, e->data_len - p->in_len);
	if (r < 0)
		return err_set(r, "fd %d: cannot put the %lu queued bytes back into the pseudo-terminal%s", e->fd,
			       e->data_len, r == -EPERM || r == -EIO ? " (TIOCSTI takes CAP_SYS_ADMIN)" : "");
	on = p->pkt;
	if (on && ioctl(m, TIOCPKT, &on) < 0)
		return err_set(negerrno(), "fd %d: cannot set packet mode", e->fd);
	on = 1;
	if (p->locked && ioctl(m, TIOCSPTLCK, &on) < 0)
		return err_set(negerrno(), "fd %d: cannot lock the pseudo-terminal", e->fd);
	r = fds_move_above(TAKE_FD(m), above);
	if (r < 0)
		return err_set(r, "fd %d: cannot move the new master", e->fd);
	e->tmp_other = r;
	if (p->locked || p->fresh)
		return 0; /* no slave is open: it is locked, or never was */
	r = fds_move_above(TAKE_FD(s), above);
	if (r < 0)
		return err_set(r, "fd %d: cannot move the new slave", e->fd);
	e->tmp_peer = r;
	return 0;
}

int fds_tty_open(struct fd_image *img, struct fd_entry *e, int above)
{
	struct fd_entry *m = e->kind == FD_KIND_PTMX ? e : master_of(img, e->pty);
	char proc[64];
	int r, fd;

	if (!m)
		return err_set(-EBADMSG, "fd %d: pts of pty=%d without its master", e->fd, e->pty);
	if (m->tmp_other < 0 && m->tmp_peer < 0) {
		r = pair_make(m, above);
		if (r < 0)
			return r;
	}
	if (e == m) {
		if (m->tmp_other < 0)
			return err_set(-EBADMSG, "fd %d: ptmx opened twice", e->fd);
		return TAKE_FD(m->tmp_other);
	}
	if (m->tmp_peer < 0)
		return err_set(-EBADMSG, "fd %d: pts of pty=%d, whose master is locked", e->fd, e->pty);
	/* A description of its own, with the line's access mode, on the
	 * new pair's slave: the number may differ from pty=. */
	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", m->tmp_peer);
	fd = open(proc, (int)(e->flags & ~(unsigned)(O_CREAT | O_EXCL | O_TRUNC)) | O_NOCTTY | O_CLOEXEC);
	if (fd < 0)
		return err_set(negerrno(), "fd %d: cannot open the new slave of pty=%d", e->fd, e->pty);
	return fd;
}

bool fds_tty_must_share(const struct fd_entry *e)
{
	return (e->kind == FD_KIND_PTMX || e->kind == FD_KIND_TTY) && e->ptyst && e->ptyst->ctty_sid;
}

void fds_tty_print_ctty(const struct fd_entry *e, struct fds_buf *b)
{
	if (e->ptyst && e->ptyst->ctty_sid)
		fds_printf(b, " ctty=%d fg=%d", e->ptyst->ctty_sid, e->ptyst->fg_pgid);
}

int fds_tty_parse_ctty(struct fd_entry *e, struct fd_line *l)
{
	uint64_t v;
	int r;

	if (!fds_kv_has(l, "ctty"))
		return 0;
	if (!e->ptyst && !(e->ptyst = calloc(1, sizeof(*e->ptyst))))
		return -ENOMEM;
	if ((r = kv_u32(l, "ctty", INT32_MAX, &v)) < 0)
		return r;
	e->ptyst->ctty_sid = (pid_t)v;
	if ((r = kv_u32(l, "fg", INT32_MAX, &v)) < 0)
		return r;
	e->ptyst->fg_pgid = (pid_t)v;
	if (!e->ptyst->ctty_sid || !e->ptyst->fg_pgid)
		return fds_bad(l, "ctty=%d fg=%d: not a session and a group", e->ptyst->ctty_sid, e->ptyst->fg_pgid);
	return 0;
}

/* sid, tty_nr and tpgid of /proc/PID/stat */
static int read_stat_tty(pid_t pid, pid_t *sid, unsigned *tty_nr, pid_t *tpgid)
{
	uint64_t f[PROC_STAT_FIELDS];
	int r = proc_stat_read(pid, 0, f);

	if (r < 0)
		return r;
	if (r < 8)
		return -EBADMSG;
	*sid = (pid_t)f[6];
	*tty_nr = (unsigned)f[7];
	*tpgid = (pid_t)f[8];
	return 0;
}

/* A slave of a pair outside the tree that is the controlling terminal of
 * a session led in the tree: its first tty line carries the session and
 * its foreground group, and moves to shared/fds, reopened by path before
 * the leader forks. */
static int outside_ctty(struct fd_image **imgs, size_t n, pid_t sid, unsigned nr, pid_t tpgid)
{
	for (size_t i = 0; i < n; i++)
		for (size_t j = 0; j < imgs[i]->n; j++) {
			struct fd_entry *e = &imgs[i]->e[j];
			if (e->kind != FD_KIND_TTY || !e->pty || (unsigned)makedev(e->rdev_major, e->rdev_minor) != nr)
				continue;
			if (!e->ptyst && !(e->ptyst = calloc(1, sizeof(*e->ptyst))))
				return -ENOMEM;
			e->ptyst->ctty_sid = sid;
			e->ptyst->fg_pgid = tpgid > 0 ? tpgid : sid;
			return 0;
		}
	return 0;
}

int fds_tty_tree(struct fd_image **imgs, const pid_t *pids, size_t n)
{
	/* pty= names a pair across the tree: two devpts instances (a
	 * container's and the host's) could give two pairs one number */
	for (size_t i = 0; i < n; i++)
		for (size_t j = 0; j < imgs[i]->n; j++) {
			const struct fd_entry *e = &imgs[i]->e[j];
			if (e->kind != FD_KIND_PTMX || !e->ptyst->pts_dev)
				continue;
			for (size_t k = 0; k < n; k++)
				for (size_t l = 0; l < imgs[k]->n; l++) {
					const struct fd_entry *f = &imgs[k]->e[l];
					if (f->kind == FD_KIND_PTMX && f->pty == e->pty && f->ptyst->pts_dev &&
					    f->ptyst->pts_dev != e->ptyst->pts_dev)
						return err_set(-EOPNOTSUPP,
							       "pid %d fd %d and pid %d fd %d: two pseudo-terminal pairs "
							       "numbered %d in two devpts instances: not supported",
							       pids[i], e->fd, pids[k], f->fd, e->pty);
				}
		}
	for (size_t i = 0; i < n; i++)
		for (size_t j = 0; j < imgs[i]->n; j++) {
			struct fd_entry *e = &imgs[i]->e[j];
			if (e->kind != FD_KIND_PTMX || !e->ptyst || !e->ptyst->pts_rdev)
				continue;
			for (size_t k = 0; k < n; k++)
				if (k != i)
					adopt_slaves(imgs[k], e);
			/* a session led in the tree whose controlling terminal
			 * is this slave gets it back */
			for (size_t k = 0; k < n; k++) {
				pid_t sid, tpgid;
				unsigned nr;
				if (read_stat_tty(pids[k], &sid, &nr, &tpgid) < 0)
					continue; /* a zombie's table is empty anyway */
				if (sid != pids[k] || nr != e->ptyst->pts_rdev)
					continue;
				e->ptyst->ctty_sid = sid;
				e->ptyst->fg_pgid = tpgid > 0 ? tpgid : sid;
			}
		}
	for (size_t k = 0; k < n; k++) {
		pid_t sid, tpgid;
		unsigned nr;
		bool inside = false;
		if (read_stat_tty(pids[k], &sid, &nr, &tpgid) < 0 || sid != pids[k] || major(nr) < 136 ||
		    major(nr) > 143)
			continue;
		for (size_t i = 0; i < n && !inside; i++)
			for (size_t j = 0; j < imgs[i]->n && !inside; j++)
				inside = imgs[i]->e[j].kind == FD_KIND_PTMX && imgs[i]->e[j].ptyst->ctty_sid == sid;
		int r = inside ? 0 : outside_ctty(imgs, n, sid, nr, tpgid);
		if (r < 0)
			return r;
	}
	return 0;
}

/* A new description of the slave whose master is shared line m. */
static int ctty_slave(struct fd_image *shared, int base, pid_t sid, struct fd_entry **ret)
{
	for (size_t i = 0; shared && i < shared->n; i++) {
		struct fd_entry *m = &shared->e[i];
		if ((m->kind != FD_KIND_PTMX && m->kind != FD_KIND_TTY) || !m->ptyst || m->ptyst->ctty_sid != sid)
			continue;
		*ret = m;
		if (m->kind == FD_KIND_TTY) {
			/* reopened by path (or replaced: then not a terminal) */
			int s = fcntl(base + (int)i, F_DUPFD_CLOEXEC, 0);
			return s < 0 ? err_set(negerrno(), "fd %d: dup", base + (int)i) : s;
		}
		int s = (int)ioctl(base + (int)i, TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC);
		if (s < 0)
			return err_set(negerrno(), "pty=%d: cannot open its new slave for session %d", m->pty, sid);
		return s;
	}
	return -ENOENT;
}

int fds_ctty_take(struct fd_image *shared, int base, pid_t sid, pid_t *ret_fg)
{
	struct fd_entry *m;
	int s = ctty_slave(shared, base, sid, &m), r = 0;

	*ret_fg = 0;
	if (s == -ENOENT)
		return 0;
	if (s < 0)
		return s;
	if (ioctl(s, TIOCSCTTY, 0) == 0) {
		*ret_fg = m->ptyst->fg_pgid;
	} else if (m->kind == FD_KIND_TTY) {
		/* A terminal outside: still the one of the session dumped
		 * (EPERM: it runs on), or gone (ENOTTY: /dev/null). The
		 * session goes on without one, as a restore did before. */
		log_warn("session %d: %s is not made its controlling terminal again: %s", sid, m->path,
			 errno == EPERM ? "it is still the controlling terminal of another session (the one dumped?)"
					: strerror(errno));
	} else {
		r = err_set(negerrno(), "pty=%d: cannot make it the controlling terminal of session %d", m->pty, sid);
	}
	close(s);
	return r;
}

int fds_ctty_foreground(struct fd_image *shared, int base, pid_t sid, pid_t pgid)
{
	struct fd_entry *m;
	int s = ctty_slave(shared, base, sid, &m), r = 0;

	if (s < 0)
		return s == -ENOENT ? 0 : s;
	if (ioctl(s, TIOCSPGRP, &pgid) < 0)
		r = err_set(negerrno(), "session %d: cannot make group %d the foreground group of its terminal", sid,
			    pgid);
	close(s);
	return r;
}
