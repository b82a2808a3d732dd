/*
 * Tracking kept from one checkpoint of a process to the next
 * (engine_dump_opts.track, engine/precopy.c): after a pre-copied
 * checkpoint the daemon may keep the userfaultfd watching the process
 * (ours only: nothing of ours is in the process), the copy of its memory
 * and the hashes of its memory files' blocks, so that the next
 * checkpoint reads only the pages written since and hashes again only
 * the blocks they touch.
 *
 * What must stay true:
 *  - it is bounded: all of it together holds at most -o track=SIZE bytes
 *    of our memory; one that would pass it drops the least recently used
 *    others first, then itself;
 *  - it goes when unused for -o track_idle, when its process is gone,
 *    when the user writes `untrack` to ctl, and when the daemon ends;
 *    should the daemon die instead, the kernel closes the userfaultfd,
 *    which removes every registration from the process;
 *  - dropping one removes the registration (a piece at a time, ~1 s for
 *    4 GiB), never under fs->lock.
 */
#include <inttypes.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include "fs/fs-int.h"

#ifndef HAVE_ENGINE
#define HAVE_ENGINE 0
#endif

static void drop(struct engine_track *t)
{
#if HAVE_ENGINE
	engine_track_free(t);
#else
	(void)t;
#endif
}

int track_options(struct fs *fs, const char *budget, const char *idle)
{
	/* Off unless asked for: the process pays a fault at the first
	 * write to each page after every checkpoint, which costs 57-91 us
	 * on the machine it was measured on (docs/PERFORMANCE.md). "on": 8
	 * GiB, or a quarter of the machine's memory if less: the copies are
	 * the daemon's own memory, as large as the tracked areas. */
	fs->track_budget = 0;
	fs->track_idle_s = FS_TRACK_IDLE_DEFAULT_S;
	if (budget && !strcmp(budget, "on")) {
		long pages = sysconf(_SC_PHYS_PAGES), psize = sysconf(_SC_PAGESIZE);
		fs->track_budget = FS_TRACK_BUDGET_ON;
		if (pages > 0 && psize > 0)
			fs->track_budget = MIN(fs->track_budget, (uint64_t)pages * (uint64_t)psize / 4);
	} else if (budget) {
		char *end;
		errno = 0;
		double v = strtod(budget, &end);
		uint64_t m = 1;
		switch (*end) {
		case 'k': case 'K': m = 1ull << 10; end++; break;
		case 'm': case 'M': m = 1ull << 20; end++; break;
		case 'g': case 'G': m = 1ull << 30; end++; break;
		case 't': case 'T': m = 1ull << 40; end++; break;
		}
		if (!strcmp(budget, "off"))
			v = 0, end = (char *)"";
		if (errno || end == budget || *end || !(v >= 0 && v * m < 1e18))
			return err_set(-EINVAL, "track: '%s' is not a size (on, off, 0, or a number with K, M, G or T)",
				       budget);
		fs->track_budget = (uint64_t)(v * m);
	}
	if (idle) {
		char *end;
		errno = 0;
		unsigned long v = strtoul(idle, &end, 10);
		if (errno || end == idle || *end || v < 1 || v > 86400)
			return err_set(-EINVAL, "track_idle: '%s' is not a number of seconds from 1 to 86400", idle);
		fs->track_idle_s = (unsigned)v;
	}
	return 0;
}

struct engine_track *track_take(struct fs *fs, struct pidstate *ps)
{
	pthread_mutex_lock(&fs->lock);
	struct engine_track *t = ps->track;
	ps->track = NULL;
	ps->track_bytes = 0;
	pthread_mutex_unlock(&fs->lock);
	return t;
}

void track_keep(struct fs *fs, struct pidstate *ps, struct engine_track *t)
{
	struct engine_track *gone[64];
	size_t ngone = 0;

	if (!t)
		return;
#if HAVE_ENGINE
	uint64_t bytes = engine_track_bytes(t);
#else
	uint64_t bytes = 0;
#endif
	pthread_mutex_lock(&fs->lock);
	if (bytes > fs->track_budget) {
		pthread_mutex_unlock(&fs->lock);
		log_info("pid %d: tracking not kept: it holds %" PRIu64 " MiB, more than -o track=%" PRIu64 " MiB",
			 ps->pid, bytes >> 20, fs->track_budget >> 20);
		drop(t);
		return;
	}
	for (;;) {
		uint64_t held = bytes;
		struct pidstate *lru = NULL;
		for (struct pidstate *o = fs->pids; o; o = o->next) {
			if (!o->track || o == ps)
				continue;
			held += o->track_bytes;
			if (!lru || o->track_used_ns < lru->track_used_ns)
				lru = o;
		}
		if (held <= fs->track_budget || !lru || ngone == ARRAY_SIZE(gone))
			break;
		log_info("pid %d: tracking dropped to keep pid %d's within -o track", lru->pid, ps->pid);
		gone[ngone++] = lru->track;
		lru->track = NULL;
		lru->track_bytes = 0;
	}
	/* still too much (64 dropped at once): this one goes */
	uint64_t held = bytes;
	for (struct pidstate *o = fs->pids; o; o = o->next)
		if (o->track && o != ps)
			held += o->track_bytes;
	struct engine_track *self = NULL;
	if (held > fs->track_budget) {
		self = t;
		log_info("pid %d: tracking not kept: -o track=%" PRIu64 " MiB is taken", ps->pid,
			 fs->track_budget >> 20);
	} else {
		ps->track = t;
		ps->track_bytes = bytes;
		ps->track_used_ns = now_ns();
	}
	pthread_mutex_unlock(&fs->lock);
	for (size_t i = 0; i < ngone; i++)
		drop(gone[i]);
	drop(self);
}

int track_drop(struct fs *fs, pid_t pid)
{
	struct engine_track *t = NULL;

	pthread_mutex_lock(&fs->lock);
	for (struct pidstate *ps = fs->pids; ps; ps = ps->next) {
		if (ps->pid != pid)
			continue;
		/* a checkpoint that runs has it: once it ended, it is back */
		while (ps->state == PID_CHECKPOINTING)
			pthread_cond_wait(&fs->policy_cond, &fs->lock);
		t = ps->track;
		ps->track = NULL;
		ps->track_bytes = 0;
	}
	pthread_mutex_unlock(&fs->lock);
	if (t)
		log_info("pid %d: tracking dropped (untrack)", pid);
	drop(t);
	return 0;
}

void track_status(struct fs *fs, pid_t pid, char *buf, size_t len)
{
	snprintf(buf, len, "tracking: %s\n", fs->track_budget ? "none" : "off (no -o track)");
	pthread_mutex_lock(&fs->lock);
	for (struct pidstate *ps = fs->pids; ps; ps = ps->next)
		if (ps->pid == pid && ps->track)
			snprintf(buf, len, "tracking: kept, %" PRIu64 " MiB, idle %" PRIu64 " s\n", ps->track_bytes >> 20,
				 (uint64_t)((now_ns() - ps->track_used_ns) / 1000000000ull));
	pthread_mutex_unlock(&fs->lock);
}

/* Takes out of fs the tracking unused for the idle time, or of a process
 * gone, or all of it (all); up to max into gone; returns how many. */
static size_t take_stale(struct fs *fs, bool all, struct engine_track **gone, size_t max)
{
	size_t n = 0;
	uint64_t now = now_ns();
	for (struct pidstate *ps = fs->pids; ps && n < max; ps = ps->next) {
		if (!ps->track)
			continue;
		bool idle = now - ps->track_used_ns > (uint64_t)fs->track_idle_s * 1000000000ull;
		bool dead = kill(ps->pid, 0) < 0 && errno == ESRCH;
		if (!all && !idle && !dead)
			continue;
		if (!all)
			log_info("pid %d: tracking dropped: %s", ps->pid, dead ? "the process is gone" : "unused");
		gone[n++] = ps->track;
		ps->track = NULL;
		ps->track_bytes = 0;
	}
	return n;
}

static void *idle_thread(void *arg)
{
	struct fs *fs = arg;
	struct engine_track *gone[16];

	pthread_mutex_lock(&fs->lock);
	while (!fs->track_quit) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += 1;
		pthread_cond_timedwait(&fs->track_cond, &fs->lock, &ts);
		if (fs->track_quit)
			break;
		size_t n = take_stale(fs, false, gone, ARRAY_SIZE(gone));
		if (!n)
			continue;
		pthread_mutex_unlock(&fs->lock);
		for (size_t i = 0; i < n; i++)
			drop(gone[i]);
		pthread_mutex_lock(&fs->lock);
	}
	pthread_mutex_unlock(&fs->lock);
	return NULL;
}

int track_start(struct fs *fs)
{
	if (!fs->track_budget)
		return 0;
	int r = -pthread_create(&fs->track_thread, NULL, idle_thread, fs);
	if (r < 0)
		return err_set(r, "cannot start the thread that drops idle tracking");
	fs->track_thread_started = true;
	return 0;
}

void track_stop(struct fs *fs)
{
	struct engine_track *gone[16];
	size_t n;

	pthread_mutex_lock(&fs->lock);
	fs->track_quit = true;
	pthread_cond_broadcast(&fs->track_cond);
	pthread_mutex_unlock(&fs->lock);
	if (fs->track_thread_started)
		pthread_join(fs->track_thread, NULL);
	fs->track_thread_started = false;
	do {
		pthread_mutex_lock(&fs->lock);
		n = take_stale(fs, true, gone, ARRAY_SIZE(gone));
		pthread_mutex_unlock(&fs->lock);
		for (size_t i = 0; i < n; i++)
			drop(gone[i]);
	} while (n);
}
