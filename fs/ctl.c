/*
 * /<pid>/ctl and /<pid>/status.
 *
 * A write of one command line to ctl runs the checkpoint in the writing
 * thread and replies when the snapshot is durable (engine_dump commits
 * it) or failed; status tells the phase while it runs and the outcome
 * after. One checkpoint of a pid at a time: a second written to ctl gets
 * -EBUSY, while a periodic one (policy.c) and one written to ctl wait
 * for each other; any number of pids at once.
 *
 * The grammar (documented in --help and the README):
 *   checkpoint          snapshot; the process keeps running
 *   checkpoint kill     snapshot; SIGKILL once it is durable
 *   checkpoint stop     snapshot; left stopped once it is durable
 *   every D [keep K]    periodic checkpoints (policy.c)
 *   every off           no more of them
 *   untrack             drops the tracking kept since its last checkpoint (track.c)
 */
#include <inttypes.h>

#include <signal.h>

#include "fs/fs-int.h"

static const char *const state_names[_PID_STATE_MAX] = {
	[PID_IDLE] = "idle",
	[PID_CHECKPOINTING] = "checkpointing",
	[PID_FAILED] = "failed",
};

static struct pidstate *pidstate_locked(struct fs *fs, pid_t pid, bool create)
{
	struct pidstate *ps;

	for (ps = fs->pids; ps; ps = ps->next)
		if (ps->pid == pid)
			return ps;
	if (!create || !(ps = calloc(1, sizeof(*ps))))
		return NULL;
	ps->pid = pid;
	ps->next = fs->pids;
	fs->pids = ps;
	return ps;
}

bool ctl_progress(struct fs *fs, pid_t pid, enum engine_phase *phase, uint64_t *done, uint64_t *total)
{
	struct pidstate *ps;
	bool r;

	pthread_mutex_lock(&fs->lock);
	ps = pidstate_locked(fs, pid, false);
	r = ps && ps->state == PID_CHECKPOINTING;
	if (r && phase)
		*phase = ps->phase;
	if (r && done)
		*done = ps->done;
	if (r && total)
		*total = ps->total;
	pthread_mutex_unlock(&fs->lock);
	return r;
}

bool ctl_known(struct fs *fs, pid_t pid)
{
	bool r;

	pthread_mutex_lock(&fs->lock);
	r = pidstate_locked(fs, pid, false) != NULL;
	pthread_mutex_unlock(&fs->lock);
	return r;
}

static int max_n(pid_t pid, uint32_t n, const struct store_snap_info *info, void *ud)
{
	uint32_t *m = ud;
	if (n > *m)
		*m = n;
	return 0;
}

struct dump_ctx {
	struct fs *fs;
	struct pidstate *ps; /* lives until the daemon exits */
};

static void progress(const struct engine_progress *p, void *ud)
{
	struct dump_ctx *c = ud;

	pthread_mutex_lock(&c->fs->lock);
	c->ps->phase = p->phase;
	c->ps->done = p->done;
	c->ps->total = p->total;
	c->ps->round = p->round;
	pthread_mutex_unlock(&c->fs->lock);
}

#ifndef HAVE_ENGINE
#define HAVE_ENGINE 0
#endif

/* track: in and out, the tracking kept from pid's last checkpoint (see
 * engine_dump_opts.track); NULL: none kept. memory: how memory was taken. */
static int dump(struct fs *fs, pid_t pid, struct store_snap *w, enum engine_after after, struct dump_ctx *c,
		struct engine_track **track, char *memory, size_t memlen)
{
#if HAVE_ENGINE
	struct engine_dump_stats st = { 0 };
	struct engine_dump_opts o = {
		.after = after,
		.progress = progress,
		.ud = c,
		.stats = &st,
		.track = track,
	};
	int r = engine_dump(pid, w, &o);
	if (r >= 0)
		snprintf(memory, memlen, "%s", st.memory_mode);
	return r;
#else
	(void)track;
	(void)memory;
	(void)memlen;
	(void)progress;
	return err_set(-ENOSYS, "pid %d: this ckptfs was built without the engine", pid);
#endif
}

void ctl_keeper_ahead(void)
{
#if HAVE_ENGINE
	pid_t r = engine_keeper_ahead();
	if (r < 0)
		log_warn("cannot start a keeper ahead (%s): the next checkpoint starts its own", err_msg());
#endif
}

void ctl_keeper_end(void)
{
#if HAVE_ENGINE
	engine_keeper_ahead_end();
#endif
}

/* Splits one line written to ctl into words: a trailing newline (echo) is
 * fine, anything after it is not. */
static int split_line(const char *line, size_t len, char *buf, size_t size, char **words, size_t max,
		      size_t *n)
{
	char *save = NULL, *w;

	if (len >= size)
		return err_set(-EINVAL, "command too long");
	memcpy(buf, line, len);
	buf[len] = 0;
	if (len && buf[len - 1] == '\n')
		buf[--len] = 0;
	if (strchr(buf, '\n') || memchr(buf, 0, len))
		return err_set(-EINVAL, "one command line per write");
	*n = 0;
	for (w = strtok_r(buf, " \t", &save); w; w = strtok_r(NULL, " \t", &save)) {
		if (*n == max)
			return err_set(-EINVAL, "too many words");
		words[(*n)++] = w;
	}
	return 0;
}

static int parse_command(const char *line, size_t len, struct ctl_cmd *cmd)
{
	char buf[128], *words[5];
	size_t n = 0;
	int r;

	r = split_line(line, len, buf, sizeof(buf), words, ARRAY_SIZE(words), &n);
	if (r < 0)
		return r;
	if (n && !strcmp(words[0], "every"))
		return policy_parse(words + 1, n - 1, cmd);
	if (n && !strcmp(words[0], "untrack")) {
		if (n > 1)
			return err_set(-EINVAL, "untrack takes nothing more");
		cmd->kind = CTL_UNTRACK;
		return 0;
	}
	if (n == 0 || strcmp(words[0], "checkpoint"))
		return err_set(-EINVAL, "unknown command '%s' (try: checkpoint [kill|stop], every D [keep K], every off, untrack)",
			       n ? words[0] : "");
	cmd->kind = CTL_CHECKPOINT;
	if (n == 1)
		cmd->after = ENGINE_AFTER_RUN;
	else if (n == 2 && !strcmp(words[1], "kill"))
		cmd->after = ENGINE_AFTER_KILL;
	else if (n == 2 && !strcmp(words[1], "stop"))
		cmd->after = ENGINE_AFTER_STOP;
	else
		return err_set(-EINVAL, "checkpoint takes 'kill' or 'stop', not '%s'", words[1]);
	return 0;
}

/* Records why a command failed where status shows it. */
static void note_error(struct fs *fs, struct pidstate *ps, int r)
{
	const char *d = err_msg();

	pthread_mutex_lock(&fs->lock);
	snprintf(ps->last_error, sizeof(ps->last_error), "%s%s%s", strerror(-r), *d ? ": " : "", d);
	pthread_mutex_unlock(&fs->lock);
}

static struct pidstate *pidstate_get(struct fs *fs, pid_t pid)
{
	struct pidstate *ps;

	pthread_mutex_lock(&fs->lock);
	ps = pidstate_locked(fs, pid, true);
	pthread_mutex_unlock(&fs->lock);
	return ps;
}

int ctl_checkpoint(struct fs *fs, pid_t pid, uid_t owner, enum engine_after after, bool periodic,
		   uint32_t *ret_n)
{
	struct store_snap *w = NULL;
	struct dump_ctx c = { .fs = fs };
	uint32_t n = 0;
	char name[64];
	int r;

	pthread_mutex_lock(&fs->lock);
	c.ps = pidstate_locked(fs, pid, true);
	if (!c.ps) {
		pthread_mutex_unlock(&fs->lock);
		return -ENOMEM;
	}
	/* Two written to ctl: the second is refused, as it always was. A
	 * periodic one and one written to ctl: the second waits for the
	 * first, so that neither the user nor the timer is turned away. */
	while (c.ps->state == PID_CHECKPOINTING) {
		if (!periodic && !c.ps->periodic) {
			pthread_mutex_unlock(&fs->lock);
			return err_set(-EBUSY, "pid %d: a checkpoint is already running", pid);
		}
		pthread_cond_wait(&fs->policy_cond, &fs->lock);
	}
	c.ps->state = PID_CHECKPOINTING;
	c.ps->periodic = periodic;
	c.ps->phase = ENGINE_PHASE_PREPARE;
	c.ps->done = c.ps->total = 0;
	pthread_mutex_unlock(&fs->lock);

	uint64_t t0 = now_ns();
	if (fault_hit(FAULT_FS_CTL)) {
		r = err_set(-EIO, "pid %d: injected fault", pid);
		goto out;
	}
	/* Numbers continue after the highest one in the store, whoever made
	 * it; the busy state above keeps two writers of one pid apart. */
	r = snap_foreach(fs, pid, 0, max_n, &n);
	if (r < 0)
		goto out;
	n++;
	r = fs_snap_name(fs, pid, n, name, sizeof(name));
	if (r < 0)
		goto out;
	r = store_snap_create(fs->store, name, 0, &w);
	if (r < 0)
		goto out;
	/* where the tracking is kept: from the last checkpoint, for the next */
	struct engine_track *track = fs->track_budget && after == ENGINE_AFTER_RUN ? track_take(fs, c.ps) : NULL;
	char memory[sizeof(c.ps->memory)] = "";
	r = dump(fs, pid, w, after, &c, fs->track_budget && after == ENGINE_AFTER_RUN ? &track : NULL, memory,
		 sizeof(memory));
	track_keep(fs, c.ps, track);
	/* engine_dump() leaves no ptrace link behind, --kill included: the
	 * killed process's parent reaps it, not us */
	store_snap_close(w);
	/* the keeper it took is back for the next, or (ended) replaced now */
	ctl_keeper_ahead();
	if (r >= 0)
		snap_owner_set(fs, name, owner);

out:
	pthread_mutex_lock(&fs->lock);
	if (r < 0) {
		const char *d = err_msg();
		fs->ckpt_stats.failed++;
		c.ps->state = PID_FAILED;
		snprintf(c.ps->last_error, sizeof(c.ps->last_error), "%s%s%s", strerror(-r), *d ? ": " : "", d);
	} else {
		static const double bounds[FS_CKPT_BUCKETS] = FS_CKPT_BUCKET_BOUNDS;
		uint64_t ns = now_ns() - t0;
		size_t b = 0;
		while (b < FS_CKPT_BUCKETS - 1 && (double)ns / 1e9 > bounds[b])
			b++;
		if ((double)ns / 1e9 <= bounds[b])
			fs->ckpt_stats.buckets[b]++;
		fs->ckpt_stats.ok++;
		fs->ckpt_stats.sum_ns += ns;
		fs->ckpt_stats.bytes += c.ps->total;
		c.ps->state = PID_IDLE;
		c.ps->last_snap = n;
		snprintf(c.ps->memory, sizeof(c.ps->memory), "%s", memory);
		c.ps->last_error[0] = 0;
	}
	c.ps->periodic = false;
	pthread_cond_broadcast(&fs->policy_cond);
	pthread_mutex_unlock(&fs->lock);
	if (r < 0) {
		log_err_errno(r, "pid %d: %scheckpoint failed: %s", pid, periodic ? "periodic " : "", err_msg());
		return r;
	}
	log_info("pid %d: %scheckpoint %s taken in %" PRIu64 " ms", pid, periodic ? "periodic " : "", name,
		 (now_ns() - t0) / 1000000);
	*ret_n = n;
	return 0;
}

int ctl_command(struct fs *fs, pid_t pid, uid_t caller, const char *line, size_t len)
{
	struct ctl_cmd cmd = { 0 };
	struct pidstate *ps;
	uint32_t n;
	uid_t owner = 0;
	bool may;
	int r;

	r = parse_command(line, len, &cmd);
	may = access_pid(fs, caller, pid, &owner);
	/* The policy of a process that is gone is removed by whoever set
	 * it (or root). */
	if (r >= 0 && cmd.kind == CTL_EVERY_OFF && !may)
		return policy_off(fs, pid, caller, false);
	if (!may)
		return err_set(kill(pid, 0) < 0 && errno == ESRCH ? -ESRCH : -EPERM,
			       "pid %d: no such process, or not yours", pid);
	if (r >= 0) {
		switch (cmd.kind) {
		case CTL_CHECKPOINT:
			return ctl_checkpoint(fs, pid, owner, cmd.after, false, &n);
		case CTL_EVERY:
			r = policy_set(fs, pid, caller, cmd.every_ms, cmd.keep);
			break;
		case CTL_EVERY_OFF:
			r = policy_off(fs, pid, caller, true);
			break;
		case CTL_UNTRACK:
			r = track_drop(fs, pid);
			break;
		default:
			r = -EINVAL;
			break;
		}
	}
	if (r < 0) {
		ps = pidstate_get(fs, pid);
		if (ps)
			note_error(fs, ps, r);
		log_warn_errno(r, "pid %d: ctl: %s", pid, err_msg());
	}
	return r;
}

int ctl_status(struct fs *fs, pid_t pid, char **ret, size_t *ret_len)
{
	struct pidstate s = { .pid = pid, .state = PID_IDLE };
	bool running = false;
	uint32_t newest = 0;
	char *text = NULL;
	int len;

	pthread_mutex_lock(&fs->lock);
	struct pidstate *ps = pidstate_locked(fs, pid, false);
	if (ps) {
		s = *ps;
		running = ps->state == PID_CHECKPOINTING;
	}
	pthread_mutex_unlock(&fs->lock);
	/* The newest snapshot in the store, this daemon's or an older one's. */
	snap_foreach(fs, pid, 0, max_n, &newest);
	if (!s.last_snap)
		s.last_snap = newest;

	char phase[64], tracking[128];
	track_status(fs, pid, tracking, sizeof(tracking));
	if (running && s.phase == ENGINE_PHASE_PRECOPY)
		snprintf(phase, sizeof(phase), "%s round %u", engine_phase_name(s.phase), s.round);
	else
		snprintf(phase, sizeof(phase), "%s", running ? engine_phase_name(s.phase) : "-");
	len = asprintf(&text,
		       "pid: %d\n"
		       "state: %s\n"
		       "phase: %s\n"
		       "progress: %" PRIu64 "\n"
		       "total: %" PRIu64 "\n"
		       "last_snapshot: %" PRIu32 "\n"
		       "last_error: %s\n"
		       "memory: %s\n"
		       "%s",
		       pid, state_names[s.state],
		       phase,
		       running ? s.done : 0, running ? s.total : 0,
		       s.last_snap,
		       s.last_error[0] ? s.last_error : "-",
		       s.memory[0] ? s.memory : "-",
		       tracking);
	if (len < 0)
		return -ENOMEM;
	/* The periodic policy's lines follow. */
	_cleanup_free_ char *pol = policy_status(fs, pid);
	char *all = NULL;
	if (!pol || asprintf(&all, "%s%s", text, pol) < 0) {
		free(text);
		return -ENOMEM;
	}
	free(text);
	*ret = all;
	*ret_len = strlen(all);
	return 0;
}

void ctl_free(struct fs *fs)
{
	while (fs->pids) {
		struct pidstate *ps = fs->pids;
		fs->pids = ps->next;
		free(ps);
	}
}
