/*
 * pids_wait_free(): the IDs a restore gives its process and threads must be
 * free in the kernel, or clone3(set_tid) fails with EEXIST.
 *
 * An ID can be held three ways:
 *  - by a live process or thread: it stays held; refused at once;
 *  - by a zombie: a process that ended (`checkpoint kill`, kill -9) and
 *    that its parent has not reaped yet. A slow parent (a container's
 *    init, a busy shell) can take a second or more; we wait for it, up to
 *    a bound, and say whom we wait for;
 *  - by a dying task: SIGKILL is pending and it is on its way out (its
 *    threads are still being torn down), or a thread that exited and that
 *    the kernel releases by itself (a thread never waits for a reaper; a
 *    dead thread leaves nothing once released). Waited for the same way.
 *
 * Everything is read from /proc/ID/status, which exists for thread IDs
 * too (not listed in /proc, but open-able): State, Tgid, PPid, Threads and
 * the pending sets. A leader that called pthread_exit() while its other
 * threads run shows state Z as well; it is a live process, told apart by
 * its thread count (a zombie's is 1) and by having no SIGKILL pending.
 *
 * Polled every PIDWAIT_POLL_MS: the kernel has no way to wait for another
 * process's child to be reaped (a pidfd polls readable at exit, not at
 * the reap).
 */
#include <fcntl.h>

#include "engine/engine-int.h"

#define PIDWAIT_POLL_MS 10
/* How often the waiting callback hears that the wait goes on. */
#define PIDWAIT_REPORT_MS 100

enum id_state {
	ID_FREE,
	ID_LIVE,  /* held by a live task: it will not go by itself */
	ID_DYING, /* a zombie, or a task on its way out */
};

struct id_info {
	enum id_state state;
	char task_state; /* 'Z', 'R', ... */
	pid_t tgid, ppid;
	unsigned threads;
	char comm[17];
};

/* "SigPnd:\t0000000000000100": SIGKILL (bit 8) in a pending set. */
static bool sigkill_pending(const char *hex)
{
	uint64_t v = strtoull(hex, NULL, 16);
	return v & (1ull << (SIGKILL - 1));
}

/* Classifies ID from /proc/ID/status. A task that goes away while we read
 * it is free: a later round (or clone3's EEXIST) sees anything else. */
static int id_inspect(pid_t id, struct id_info *ret)
{
	char path[64];
	_cleanup_free_ char *text = NULL;
	bool killed = false;

	memset(ret, 0, sizeof(*ret));
	snprintf(path, sizeof(path), "/proc/%d/status", id);
	int r = read_file_full(path, &text, NULL);
	if (r == -ENOENT || r == -ESRCH) {
		ret->state = ID_FREE;
		return 0;
	}
	if (r < 0)
		return err_set(r, "id %d: cannot read %s: %s", id, path, strerror(-r));
	for (char *line = text, *next; line && *line; line = next) {
		next = strchr(line, '\n');
		if (next)
			*next++ = 0;
		if (!strncmp(line, "Name:\t", 6))
			snprintf(ret->comm, sizeof(ret->comm), "%s", line + 6);
		else if (!strncmp(line, "State:\t", 7))
			ret->task_state = line[7];
		else if (!strncmp(line, "Tgid:\t", 6))
			ret->tgid = (pid_t)atoi(line + 6);
		else if (!strncmp(line, "PPid:\t", 6))
			ret->ppid = (pid_t)atoi(line + 6);
		else if (!strncmp(line, "Threads:\t", 9))
			ret->threads = (unsigned)atoi(line + 9);
		else if (!strncmp(line, "SigPnd:\t", 8) || !strncmp(line, "ShdPnd:\t", 8))
			killed |= sigkill_pending(line + 8);
	}
	if (!ret->task_state) {
		/* released between open and read: nothing left to show */
		ret->state = ID_FREE;
		return 0;
	}
	bool dead = ret->task_state == 'Z' || ret->task_state == 'X';
	if (killed)
		ret->state = ID_DYING;
	else if (dead && (ret->tgid != id || ret->threads <= 1))
		/* a zombie process, or a thread the kernel is releasing */
		ret->state = ID_DYING;
	else
		/* alive, or a leader that exited while its threads run on */
		ret->state = ID_LIVE;
	return 0;
}

static void parent_comm(pid_t ppid, char *buf, size_t len)
{
	char path[64];
	_cleanup_free_ char *text = NULL;

	snprintf(path, sizeof(path), "/proc/%d/comm", ppid);
	if (ppid <= 0 || read_file_full(path, &text, NULL) < 0) {
		snprintf(buf, len, "?");
		return;
	}
	text[strcspn(text, "\n")] = 0;
	snprintf(buf, len, "%s", text);
}

/* The error for an ID held by a live task. */
static int refuse_live(pid_t id, const struct id_info *in)
{
	if (in->tgid && in->tgid != id) {
		char comm[17];
		parent_comm(in->tgid, comm, sizeof(comm));
		return err_set(-EEXIST, "thread id %d is in use by a thread of live pid %d (%s)", id, in->tgid,
			       comm);
	}
	if (in->task_state == 'Z')
		return err_set(-EEXIST, "pid %d is in use by live process %s: its main thread exited, %u others run",
			       id, in->comm, in->threads - 1);
	return err_set(-EEXIST, "pid %d is in use by live process %s", id, in->comm);
}

/* The error for an ID still held by a dying task when we stop waiting. */
static int refuse_dying(pid_t id, const struct id_info *in, unsigned timeout_ms)
{
	char comm[17], after[48] = "";
	parent_comm(in->ppid, comm, sizeof(comm));
	if (timeout_ms)
		snprintf(after, sizeof(after), " within %g s", timeout_ms / 1000.0);
	if (in->tgid && in->tgid != id)
		return err_set(-EEXIST, "thread id %d is in use by an exiting thread of pid %d that did not go%s",
			       id, in->tgid, after);
	if (in->task_state == 'Z')
		return err_set(-EEXIST, "pid %d is in use by a zombie (%s) that its parent %d (%s) did not reap%s",
			       id, in->comm, in->ppid, comm, after);
	return err_set(-EEXIST, "pid %d is in use by process %s, killed but not yet gone%s", id, in->comm,
		       after);
}

int pids_wait_free(const pid_t *ids, size_t n, unsigned timeout_ms,
		   void (*waiting)(const struct pid_wait *w, void *ud), void *ud)
{
	uint64_t start = now_ns();
	uint64_t last_report = 0;
	pid_t last_id = 0, last_parent = 0;
	size_t i = 0;

	/* IDs found free stay behind us: a free ID can be taken again by a
	 * new process while we wait, but clone3 catches that as EEXIST
	 * either way, and the wait is only to spare a restore the common
	 * case of a zombie about to be reaped. */
	while (i < n) {
		struct id_info in;
		int r = id_inspect(ids[i], &in);
		if (r < 0)
			return r;
		if (in.state == ID_FREE) {
			i++;
			continue;
		}
		if (in.state == ID_LIVE)
			return refuse_live(ids[i], &in);

		uint64_t now = now_ns();
		unsigned waited = (unsigned)MIN((now - start) / 1000000, (uint64_t)UINT_MAX);
		if (waited >= timeout_ms)
			return refuse_dying(ids[i], &in, timeout_ms);
		if (waiting && (ids[i] != last_id || in.ppid != last_parent ||
				now - last_report >= PIDWAIT_REPORT_MS * 1000000ull)) {
			struct pid_wait w = {
				.id = ids[i],
				.parent = in.ppid,
				.zombie = in.task_state == 'Z',
				.waited_ms = waited,
				.timeout_ms = timeout_ms,
			};
			parent_comm(in.ppid, w.parent_comm, sizeof(w.parent_comm));
			waiting(&w, ud);
			last_id = ids[i];
			last_parent = in.ppid;
			last_report = now;
		}
		log_debug("id %d: held by %s %s (state %c), parent %d; waited %u ms", ids[i],
			  in.tgid == ids[i] ? "process" : "a thread of", in.comm, in.task_state, in.ppid, waited);
		struct timespec ts = { 0, PIDWAIT_POLL_MS * 1000000L };
		while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
			;
	}
	return 0;
}
