/*
 * engine/fds/fds-event.c: eventfd, epoll, timerfd and signalfd, all read from
 * /proc/PID/fdinfo/N, which shows their whole state.
 *
 * eventfd: the counter and the semaphore mode. timerfd: the clock, the
 * time left and the interval (fdinfo shows time left, relative, whatever
 * the settime flags), expirations not yet read (restored with
 * TFD_IOC_SET_TICKS after timerfd_settime, which clears them). signalfd:
 * the mask. epoll: every watch (descriptor number, events, data); each is
 * checked with kcmp(KCMP_EPOLL_TFD) to still watch the file open at that
 * number, since a watch outlives the number it was added under. Epoll
 * instances are recreated after every other descriptor is in place, and
 * watches are added under the restored numbers.
 */
#include <ctype.h>
#include <fcntl.h>
#include <linux/kcmp.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/signalfd.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>

#include "engine/fds/fds-int.h"

/* linux/timerfd.h clashes with sys/timerfd.h; Linux 3.17+. */
#ifndef TFD_IOC_SET_TICKS
#define TFD_IOC_SET_TICKS _IOW('T', 0, uint64_t)
#endif

int fds_event_classify(struct fd_image *img, struct fd_entry *e)
{
	if (strcmp(e->link, "anon_inode:[eventfd]") == 0)
		e->kind = FD_KIND_EVENTFD;
	else if (strcmp(e->link, "anon_inode:[eventpoll]") == 0)
		e->kind = FD_KIND_EPOLL;
	else if (strcmp(e->link, "anon_inode:[timerfd]") == 0)
		e->kind = FD_KIND_TIMERFD;
	else if (strcmp(e->link, "anon_inode:[signalfd]") == 0)
		e->kind = FD_KIND_SIGNALFD;
	else
		return 0;
	return 1;
}

static int capture_epoll(struct fd_image *img, struct fd_entry *e)
{
	for (const char *p = e->fdinfo; (p = strstr(p, "tfd:")); p++) {
		struct fd_watch w;
		struct kcmp_epoll_slot slot;
		unsigned long long data;
		struct fd_entry *t;
		unsigned toff = 0;
		int r;

		if (sscanf(p, "tfd: %d events: %x data: %llx", &w.tfd, &w.events, &data) != 3)
			return err_set(-EIO, "fd %d: epoll: cannot parse its fdinfo", e->fd);
		w.data = data;
		for (size_t i = 0; i < e->n_watches; i++)
			toff += e->watches[i].tfd == w.tfd;
		slot = (struct kcmp_epoll_slot){ .efd = (unsigned)e->fd, .tfd = (unsigned)w.tfd, .toff = toff };
		r = (int)syscall(SYS_kcmp, img->pid, img->pid, KCMP_EPOLL_TFD, w.tfd, &slot);
		if (r != 0)
			return err_set(-EOPNOTSUPP,
				       "fd %d: epoll watch on fd %d, which was closed or replaced since: not supported",
				       e->fd, w.tfd);
		t = fds_find(img, w.tfd);
		if (t && t->kind == FD_KIND_DUP)
			t = fds_find(img, t->dup_of);
		if (!t)
			return err_set(-EOPNOTSUPP, "fd %d: epoll watch on fd %d, which is not open: not supported",
				       e->fd, w.tfd);
		if (t->kind == FD_KIND_EPOLL)
			return err_set(-EOPNOTSUPP, "fd %d: epoll watching epoll fd %d: not supported", e->fd,
				       w.tfd);
		struct fd_watch *nw = realloc(e->watches, (e->n_watches + 1) * sizeof(*nw));
		if (!nw)
			return -ENOMEM;
		e->watches = nw;
		e->watches[e->n_watches++] = w;
	}
	return 0;
}

int fds_event_capture(struct fd_image *img, struct fd_entry *e)
{
	const char *v;
	unsigned long long a, b, c, d;

	switch (e->kind) {
	case FD_KIND_EVENTFD: {
		unsigned sem;
		v = fds_info(e, "eventfd-count");
		if (!v || sscanf(v, "%llx", &a) != 1)
			return err_set(-EIO, "fd %d: eventfd: no count in fdinfo", e->fd);
		e->count = a;
		/* Shown since Linux 6.6; before, the mode cannot be told. */
		v = fds_info(e, "eventfd-semaphore");
		if (!v || sscanf(v, "%u", &sem) != 1)
			return err_set(-EOPNOTSUPP, "fd %d: eventfd: this kernel does not show its semaphore mode: "
						    "not supported", e->fd);
		e->semaphore = sem != 0;
		return 0;
	}
	case FD_KIND_EPOLL:
		return capture_epoll(img, e);
	case FD_KIND_TIMERFD: {
		int clk;
		unsigned long long ticks;
		unsigned fl;
		if (!(v = fds_info(e, "clockid")) || sscanf(v, "%d", &clk) != 1 ||
		    !(v = fds_info(e, "ticks")) || sscanf(v, "%llu", &ticks) != 1 ||
		    !(v = fds_info(e, "settime flags")) || sscanf(v, "%o", &fl) != 1 ||
		    !(v = fds_info(e, "it_value")) || sscanf(v, "(%llu, %llu)", &a, &b) != 2 ||
		    !(v = fds_info(e, "it_interval")) || sscanf(v, "(%llu, %llu)", &c, &d) != 2)
			return err_set(-EIO, "fd %d: timerfd: cannot parse its fdinfo", e->fd);
		e->clockid = clk;
		e->ticks = ticks;
		e->settime_flags = fl;
		e->value = (struct timespec){ .tv_sec = (time_t)a, .tv_nsec = (long)b };
		e->interval = (struct timespec){ .tv_sec = (time_t)c, .tv_nsec = (long)d };
		/* a wall-clock deadline stays that deadline, however long until
		 * the restore: the time left is read against now */
		if ((fl & TFD_TIMER_ABSTIME) && (clk == CLOCK_REALTIME || clk == CLOCK_REALTIME_ALARM) && (a || b)) {
			struct timespec now;
			clock_gettime(CLOCK_REALTIME, &now);
			e->deadline.tv_sec = now.tv_sec + (time_t)a;
			e->deadline.tv_nsec = now.tv_nsec + (long)b;
			if (e->deadline.tv_nsec >= 1000000000) {
				e->deadline.tv_sec++;
				e->deadline.tv_nsec -= 1000000000;
			}
			e->has_deadline = true;
		}
		return 0;
	}
	case FD_KIND_SIGNALFD:
		v = fds_info(e, "sigmask");
		if (!v || sscanf(v, "%llx", &a) != 1)
			return err_set(-EIO, "fd %d: signalfd: no sigmask in fdinfo", e->fd);
		e->sigmask = a;
		return 0;
	default:
		return -EINVAL;
	}
}

void fds_event_print(struct fd_entry *e, struct fds_buf *b)
{
	switch (e->kind) {
	case FD_KIND_EVENTFD:
		fds_printf(b, " count=%lu semaphore=%d", e->count, e->semaphore);
		break;
	case FD_KIND_EPOLL:
		for (size_t i = 0; i < e->n_watches; i++)
			fds_printf(b, " watch=%d:0x%x:0x%lx", e->watches[i].tfd, e->watches[i].events,
				   e->watches[i].data);
		break;
	case FD_KIND_TIMERFD:
		fds_printf(b, " clock=%d ticks=%lu settime=0x%x value=%ld.%09ld interval=%ld.%09ld",
			   e->clockid, e->ticks, e->settime_flags, e->value.tv_sec, e->value.tv_nsec,
			   e->interval.tv_sec, e->interval.tv_nsec);
		if (e->has_deadline)
			fds_printf(b, " deadline=%ld.%09ld", (long)e->deadline.tv_sec, e->deadline.tv_nsec);
		break;
	case FD_KIND_SIGNALFD:
		fds_printf(b, " mask=0x%lx", e->sigmask);
		break;
	default:
		break;
	}
}

static int parse_watch(struct fd_entry *e, struct fd_line *l, const char *v)
{
	struct fd_watch w;
	unsigned long long data;
	int tfd, n = 0;

	if (sscanf(v, "%d:0x%x:0x%llx%n", &tfd, &w.events, &data, &n) != 3 || v[n] || tfd < 0 ||
	    !isdigit((unsigned char)v[0]))
		return fds_bad(l, "watch=%s: not FD:0xEVENTS:0xDATA", v);
	w.tfd = tfd;
	w.data = data;
	struct fd_watch *nw = realloc(e->watches, (e->n_watches + 1) * sizeof(*nw));
	if (!nw)
		return -ENOMEM;
	e->watches = nw;
	e->watches[e->n_watches++] = w;
	return 0;
}

int fds_event_parse(struct fd_entry *e, struct fd_line *l)
{
	uint64_t u;
	const char *v;
	int r;

	switch (e->kind) {
	case FD_KIND_EVENTFD:
		if ((r = fds_kv_u64(l, "count", &e->count)) < 0 || (r = fds_kv_bool(l, "semaphore", &e->semaphore)) < 0)
			return r;
		if (e->count >= UINT64_MAX - 1)
			return fds_bad(l, "count=%lu: above the eventfd maximum", e->count);
		return 0;
	case FD_KIND_EPOLL:
		while ((v = fds_kv(l, "watch"))) {
			r = parse_watch(e, l, v);
			if (r < 0)
				return r;
		}
		return 0;
	case FD_KIND_TIMERFD:
		if ((r = fds_kv_u64(l, "clock", &u)) < 0)
			return r;
		if (u != CLOCK_REALTIME && u != CLOCK_MONOTONIC && u != CLOCK_BOOTTIME &&
		    u != CLOCK_REALTIME_ALARM && u != CLOCK_BOOTTIME_ALARM)
			return fds_bad(l, "clock=%lu: not a timerfd clock", u);
		e->clockid = (int)u;
		if ((r = fds_kv_u64(l, "ticks", &e->ticks)) < 0 || (r = fds_kv_hex(l, "settime", &u)) < 0)
			return r;
		if (u & ~(uint64_t)(TFD_TIMER_ABSTIME | TFD_TIMER_CANCEL_ON_SET))
			return fds_bad(l, "settime=0x%lx: unknown flags", u);
		e->settime_flags = (unsigned)u;
		if ((r = fds_kv_ts(l, "value", &e->value)) < 0 || (r = fds_kv_ts(l, "interval", &e->interval)) < 0)
			return r;
		if (e->value.tv_nsec >= 1000000000 || e->interval.tv_nsec >= 1000000000)
			return fds_bad(l, "nanoseconds out of range");
		if (fds_kv_has(l, "deadline")) {
			if ((r = fds_kv_ts(l, "deadline", &e->deadline)) < 0)
				return r;
			if (e->deadline.tv_nsec >= 1000000000)
				return fds_bad(l, "nanoseconds out of range");
			e->has_deadline = true;
		}
		return 0;
	case FD_KIND_SIGNALFD:
		return fds_kv_hex(l, "mask", &e->sigmask);
	default:
		return -EINVAL;
	}
}

static int open_timerfd(struct fd_entry *e)
{
	_cleanup_close_ int fd = timerfd_create(e->clockid, TFD_CLOEXEC);
	struct itimerspec its = { .it_value = e->value, .it_interval = e->interval };
	int flags = 0;

	if (fd < 0)
		return err_set(negerrno(), "fd %d: timerfd_create clock %d", e->fd, e->clockid);
	if (its.it_value.tv_sec || its.it_value.tv_nsec) {
		if (e->has_deadline && (e->settime_flags & TFD_TIMER_ABSTIME)) {
			/* the wall-clock time it was set for; past, it fires at
			 * once and counts the intervals missed, as it would have */
			its.it_value = e->deadline;
			flags = (int)e->settime_flags;
		} else if (e->settime_flags & TFD_TIMER_ABSTIME) {
			/* Same time left; absolute again so that clock changes
			 * (and CANCEL_ON_SET) act as they did. */
			struct timespec now;
			if (clock_gettime(e->clockid, &now) < 0)
				return err_set(negerrno(), "fd %d: clock_gettime %d", e->fd, e->clockid);
			its.it_value.tv_sec += now.tv_sec;
			its.it_value.tv_nsec += now.tv_nsec;
			if (its.it_value.tv_nsec >= 1000000000) {
				its.it_value.tv_sec++;
				its.it_value.tv_nsec -= 1000000000;
			}
			flags = (int)e->settime_flags;
		}
		if (timerfd_settime(fd, flags, &its, NULL) < 0)
			return err_set(negerrno(), "fd %d: timerfd_settime", e->fd);
	}
	/* After settime, which clears the count of expirations. */
	if (e->ticks && ioctl(fd, TFD_IOC_SET_TICKS, &e->ticks) < 0)
		return err_set(negerrno(), "fd %d: timerfd: cannot restore %lu expirations", e->fd, e->ticks);
	return TAKE_FD(fd);
}

int fds_event_open(struct fd_image *img, struct fd_entry *e)
{
	int fd;

	switch (e->kind) {
	case FD_KIND_EVENTFD:
		fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK | (e->semaphore ? EFD_SEMAPHORE : 0));
		if (fd < 0)
			return err_set(negerrno(), "fd %d: eventfd", e->fd);
		/* write(2) takes the full 64-bit count, eventfd(2)'s argument does not. */
		if (e->count && write(fd, &e->count, sizeof(e->count)) != sizeof(e->count)) {
			int r = negerrno();
			close(fd);
			return err_set(r, "fd %d: eventfd: cannot set the count %lu", e->fd, e->count);
		}
		return fd;
	case FD_KIND_TIMERFD:
		return open_timerfd(e);
	case FD_KIND_SIGNALFD: {
		sigset_t set;
		sigemptyset(&set);
		for (int sig = 1; sig <= 64; sig++)
			if (e->sigmask & (1ull << (sig - 1)))
				sigaddset(&set, sig);
		fd = signalfd(-1, &set, SFD_CLOEXEC);
		if (fd < 0)
			return err_set(negerrno(), "fd %d: signalfd mask 0x%lx", e->fd, e->sigmask);
		return fd;
	}
	case FD_KIND_EPOLL:
		fd = epoll_create1(EPOLL_CLOEXEC);
		if (fd < 0)
			return err_set(negerrno(), "fd %d: epoll_create1", e->fd);
		for (size_t i = 0; i < e->n_watches; i++) {
			struct epoll_event ev = { .events = e->watches[i].events, .data.u64 = e->watches[i].data };
			if (epoll_ctl(fd, EPOLL_CTL_ADD, e->watches[i].tfd, &ev) < 0) {
				int r = negerrno();
				close(fd);
				return err_set(r, "fd %d: epoll: cannot watch fd %d (events 0x%x)", e->fd,
					       e->watches[i].tfd, e->watches[i].events);
			}
		}
		return fd;
	default:
		return -EINVAL;
	}
}
