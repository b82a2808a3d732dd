/*
 * Periodic checkpoints: `every 30s keep 5` written to /<pid>/ctl.
 *
 * One timer thread serves every policy: it sleeps on fs->policy_cond
 * until the soonest one is due, then hands each due policy to a thread of
 * its own (counted with the ctl writes, so an unmount waits for it) that
 * takes the checkpoint through ctl_checkpoint(), the path a `checkpoint`
 * written to ctl takes: a periodic and a manual checkpoint of one pid
 * never run at once, whichever comes second waits. The next run is due
 * one interval after the last one ended, whatever its outcome.
 *
 * What must stay true:
 *  - a policy checkpoints only the process it was set on: pid, boot and
 *    start time (field 22 of /proc/PID/stat) are checked before every
 *    run, so a recycled pid, or a pid after a reboot, is never taken by
 *    mistake: the policy stops instead, saying why;
 *  - each run is checked against the access rules as the uid that set
 *    the policy, as if it wrote `checkpoint` itself;
 *  - only the policy's own snapshots are deleted (those beyond the newest
 *    `keep`): a checkpoint written to ctl is never deleted behind the
 *    user's back. The policy remembers its snapshots by number;
 *  - a periodic checkpoint keeps the process running (ENGINE_AFTER_RUN),
 *    and one that fails leaves it running as the engine guarantees;
 *  - the policies live in the store (store_meta_put, record "policies"),
 *    written after every change and every run, and are read back when a
 *    daemon mounts the store again. A policy stopped (its process
 *    exited) stays, with the reason, until `every off` or a new policy
 *    for that pid replaces it.
 *
 * Locking: the policy list and every field of a policy are fs->lock's.
 * `running` marks a policy a run thread owns: nobody frees it or runs it
 * again meanwhile (`every off` and a new `every` wait for the run to end).
 * The record is written under fs->policy_save, taken before fs->lock.
 */
#include <inttypes.h>

#include "fs/fs-int.h"

#define POLICY_KEY "policies"
#define POLICY_FORMAT "ckptfs-policies 1"
#define EVERY_MAX_MS (30ull * 24 * 3600 * 1000) /* 30 days */
#define KEEP_MAX 1000u
#define KEEP_DEFAULT 3u

struct policy {
	pid_t pid;
	char boot[40];          /* the boot the process started in */
	uint64_t start;         /* its start time, clock ticks after boot */
	uid_t uid;              /* who set it: each run is theirs */
	uint64_t every_ms;
	unsigned keep;
	int64_t set_ms;         /* when it was set (ms since the epoch) */
	int64_t last_ms;        /* when the last run ended; 0: none yet */
	int64_t next_ms;        /* when the next one is due */
	bool last_ok;
	uint32_t last_snap;     /* the last run's snapshot, if it succeeded */
	char last_error[512];   /* why it failed, if it did */
	uint64_t runs, fails;
	uint32_t *snaps;        /* the policy's snapshots, oldest first */
	size_t nsnaps, cap;
	bool stopped;           /* never runs again */
	char why[256];          /* why it stopped */
	bool running;           /* a run thread owns it */
	struct policy *next;
};

static int64_t now_ms(void)
{
	struct timespec t;

	clock_gettime(CLOCK_REALTIME, &t);
	return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static void fmt_time(int64_t ms, char *buf, size_t len)
{
	time_t t = (time_t)(ms / 1000);
	struct tm tm;

	if (!gmtime_r(&t, &tm) || !strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm))
		snprintf(buf, len, "%" PRId64, ms / 1000);
}

/* "30s", "10m", "2h": the largest unit that divides it. */
static void fmt_every(uint64_t ms, char *buf, size_t len)
{
	uint64_t s = ms / 1000;

	if (s % 3600 == 0)
		snprintf(buf, len, "%" PRIu64 "h", s / 3600);
	else if (s % 60 == 0)
		snprintf(buf, len, "%" PRIu64 "m", s / 60);
	else
		snprintf(buf, len, "%" PRIu64 "s", s);
}

/* ---- the grammar ------------------------------------------------------------- */

static int parse_every(const char *w, uint64_t *ret)
{
	size_t len = strlen(w);
	uint64_t n, unit;
	char num[16];

	if (len < 2 || len - 1 >= sizeof(num))
		return err_set(-EINVAL, "every: '%s' is not a duration (a number and s, m or h: 30s, 10m, 2h)", w);
	switch (w[len - 1]) {
	case 's':
		unit = 1000;
		break;
	case 'm':
		unit = 60 * 1000;
		break;
	case 'h':
		unit = 3600 * 1000;
		break;
	default:
		return err_set(-EINVAL, "every: '%s' has no unit (s, m or h: 30s, 10m, 2h)", w);
	}
	memcpy(num, w, len - 1);
	num[len - 1] = 0;
	if (num[0] < '0' || num[0] > '9' || parse_u64(num, &n) < 0)
		return err_set(-EINVAL, "every: '%s' is not a duration (a number and s, m or h: 30s, 10m, 2h)", w);
	if (n == 0 || n > EVERY_MAX_MS / unit)
		return err_set(-EINVAL, "every: '%s' is out of range (1s to 720h)", w);
	*ret = n * unit;
	return 0;
}

int policy_parse(char **words, size_t n, struct ctl_cmd *cmd)
{
	uint64_t keep = KEEP_DEFAULT;
	int r;

	if (n == 0)
		return err_set(-EINVAL, "every takes a duration and 'keep K', or 'off' (every 30s keep 5)");
	if (!strcmp(words[0], "off")) {
		if (n > 1)
			return err_set(-EINVAL, "'every off' takes nothing more, not '%s'", words[1]);
		cmd->kind = CTL_EVERY_OFF;
		return 0;
	}
	r = parse_every(words[0], &cmd->every_ms);
	if (r < 0)
		return r;
	for (size_t i = 1; i < n; i++) {
		if (!strcmp(words[i], "kill") || !strcmp(words[i], "stop"))
			return err_set(-EINVAL,
				       "every: a periodic checkpoint keeps the process running; '%s' is for one "
				       "checkpoint ('checkpoint %s')",
				       words[i], words[i]);
		if (strcmp(words[i], "keep"))
			return err_set(-EINVAL, "every: unknown word '%s' (every D [keep K])", words[i]);
		if (i + 1 == n)
			return err_set(-EINVAL, "every: keep takes a number of snapshots (keep 5)");
		i++;
		if (words[i][0] < '0' || words[i][0] > '9' || parse_u64(words[i], &keep) < 0 || keep == 0 ||
		    keep > KEEP_MAX)
			return err_set(-EINVAL, "every: keep '%s' is not a number from 1 to %u", words[i], KEEP_MAX);
	}
	cmd->kind = CTL_EVERY;
	cmd->keep = (unsigned)keep;
	return 0;
}

/* ---- which process ------------------------------------------------------------- */

/* The start time of pid (field 22 of /proc/PID/stat): -ESRCH when there
 * is no such process, or only its zombie. */
static int proc_start(pid_t pid, uint64_t *ret)
{
	uint64_t f[PROC_STAT_FIELDS];
	int r = proc_stat_read(pid, 0, f);

	if (r < 0)
		return r == -ENOENT ? -ESRCH : r == -EBADMSG ? -EIO : r;
	if (f[3] == 'Z' || f[3] == 'X')
		return -ESRCH; /* exited; its parent has not reaped it yet */
	if (r < 22)
		return -EIO;
	*ret = f[22];
	return 0;
}

/* Whether p's process is still there: 0, or -ESRCH with the reason in
 * why. */
static int same_process(struct fs *fs, const struct policy *p, char *why, size_t len)
{
	uint64_t start;
	int r;

	if (strcmp(p->boot, fs->boot_id)) {
		snprintf(why, len, "the machine has restarted since it was set: process %d is gone", p->pid);
		return -ESRCH;
	}
	r = proc_start(p->pid, &start);
	if (r == -ESRCH) {
		snprintf(why, len, "process %d exited", p->pid);
		return r;
	}
	if (r < 0)
		return 0; /* cannot tell: the checkpoint will */
	if (start != p->start) {
		snprintf(why, len, "process %d exited; pid %d is another process now", p->pid, p->pid);
		return -ESRCH;
	}
	return 0;
}

/* ---- the record in the store ------------------------------------------------- */

/* One line of text: no newline inside. */
static void one_line(char *s)
{
	for (; *s; s++)
		if (*s == '\n' || *s == '\r')
			*s = ' ';
}

static int format_locked(struct fs *fs, char **ret)
{
	_cleanup_fclose_ FILE *f = NULL;
	char *text = NULL;
	size_t len = 0;

	f = open_memstream(&text, &len);
	if (!f)
		return -ENOMEM;
	fprintf(f, POLICY_FORMAT "\n");
	for (struct policy *p = fs->policies; p; p = p->next) {
		fprintf(f,
			"policy pid=%d boot=%s start=%" PRIu64 " uid=%u every_ms=%" PRIu64 " keep=%u set=%" PRId64
			" last=%" PRId64 " ok=%d snap=%" PRIu32 " runs=%" PRIu64 " fails=%" PRIu64 " snaps=",
			p->pid, p->boot, p->start, (unsigned)p->uid, p->every_ms, p->keep, p->set_ms, p->last_ms,
			p->last_ok, p->last_snap, p->runs, p->fails);
		for (size_t i = 0; i < p->nsnaps; i++)
			fprintf(f, "%s%" PRIu32, i ? "," : "", p->snaps[i]);
		fprintf(f, "%s\n", p->nsnaps ? "" : "-");
		if (p->last_error[0])
			fprintf(f, "error %s\n", p->last_error);
		if (p->stopped)
			fprintf(f, "stopped %s\n", p->why);
	}
	if (fclose(f) != 0) {
		f = NULL;
		free(text);
		return -ENOMEM;
	}
	f = NULL;
	*ret = text;
	return 0;
}

/* Writes every policy to the store; returns once it is durable. */
static int save(struct fs *fs)
{
	_cleanup_free_ char *text = NULL;
	int r;

	pthread_mutex_lock(&fs->policy_save);
	pthread_mutex_lock(&fs->lock);
	r = format_locked(fs, &text);
	pthread_mutex_unlock(&fs->lock);
	if (r >= 0)
		r = store_meta_put(fs->store, POLICY_KEY, text, strlen(text));
	pthread_mutex_unlock(&fs->policy_save);
	if (r < 0)
		log_err_errno(r, "cannot store the periodic checkpoint policies: %s", err_msg());
	return r;
}

static int snaps_add(struct policy *p, uint32_t n)
{
	if (p->nsnaps == p->cap) {
		size_t cap = p->cap ? p->cap * 2 : 8;
		uint32_t *v = realloc(p->snaps, cap * sizeof(*v));
		if (!v)
			return -ENOMEM;
		p->snaps = v;
		p->cap = cap;
	}
	p->snaps[p->nsnaps++] = n;
	return 0;
}

static void snaps_drop_first(struct policy *p)
{
	memmove(p->snaps, p->snaps + 1, (p->nsnaps - 1) * sizeof(*p->snaps));
	p->nsnaps--;
}

static void policy_free_one(struct policy *p)
{
	if (p) {
		free(p->snaps);
		free(p);
	}
}

/* Parses "key=value ..." of a policy line. */
static int parse_policy(char *line, struct policy *p)
{
	char *save = NULL;
	unsigned seen = 0;

	for (char *w = strtok_r(line, " ", &save); w; w = strtok_r(NULL, " ", &save)) {
		char *v = strchr(w, '=');
		uint64_t x = 0;
		int64_t sx = 0;

		if (!v)
			return -EBADMSG;
		*v++ = 0;
		if (!strcmp(w, "boot")) {
			snprintf(p->boot, sizeof(p->boot), "%s", v);
			seen |= 1;
			continue;
		}
		if (!strcmp(w, "snaps")) {
			char *s2 = NULL;
			if (!strcmp(v, "-"))
				continue;
			for (char *n = strtok_r(v, ",", &s2); n; n = strtok_r(NULL, ",", &s2))
				if (parse_u64(n, &x) < 0 || x == 0 || x > UINT32_MAX || snaps_add(p, (uint32_t)x) < 0)
					return -EBADMSG;
			continue;
		}
		if (!strcmp(w, "set") || !strcmp(w, "last")) {
			if (sscanf(v, "%" SCNd64, &sx) != 1)
				return -EBADMSG;
			*(!strcmp(w, "set") ? &p->set_ms : &p->last_ms) = sx;
			continue;
		}
		if (parse_u64(v, &x) < 0)
			return -EBADMSG;
		if (!strcmp(w, "pid") && x > 0 && x <= INT32_MAX)
			p->pid = (pid_t)x, seen |= 2;
		else if (!strcmp(w, "start"))
			p->start = x, seen |= 4;
		else if (!strcmp(w, "uid"))
			p->uid = (uid_t)x, seen |= 8;
		else if (!strcmp(w, "every_ms") && x >= 1000 && x <= EVERY_MAX_MS)
			p->every_ms = x, seen |= 16;
		else if (!strcmp(w, "keep") && x >= 1 && x <= KEEP_MAX)
			p->keep = (unsigned)x, seen |= 32;
		else if (!strcmp(w, "ok"))
			p->last_ok = x != 0;
		else if (!strcmp(w, "snap") && x <= UINT32_MAX)
			p->last_snap = (uint32_t)x;
		else if (!strcmp(w, "runs"))
			p->runs = x;
		else if (!strcmp(w, "fails"))
			p->fails = x;
		else
			return -EBADMSG;
	}
	return seen == 63 ? 0 : -EBADMSG;
}

/* Reads the record into fs->policies (empty when there is none). */
static int load(struct fs *fs)
{
	_cleanup_free_ char *text = NULL;
	struct policy **tail = &fs->policies, *last = NULL;
	char *line, *save = NULL;
	size_t len;
	int r, lineno = 0;

	r = store_meta_get(fs->store, POLICY_KEY, &text, &len);
	if (r == -ENOENT)
		return 0;
	if (r < 0)
		return r;
	for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		lineno++;
		if (lineno == 1) {
			if (strcmp(line, POLICY_FORMAT))
				return err_set(-EBADMSG, "store record '" POLICY_KEY "': '%s', not '" POLICY_FORMAT "'",
					       line);
			continue;
		}
		if (!strncmp(line, "policy ", 7)) {
			struct policy *p = calloc(1, sizeof(*p));
			if (!p)
				return -ENOMEM;
			if (parse_policy(line + 7, p) < 0) {
				policy_free_one(p);
				return err_set(-EBADMSG, "store record '" POLICY_KEY "': line %d does not parse", lineno);
			}
			*tail = last = p;
			tail = &p->next;
		} else if (last && !strncmp(line, "error ", 6)) {
			snprintf(last->last_error, sizeof(last->last_error), "%s", line + 6);
		} else if (last && !strncmp(line, "stopped ", 8)) {
			last->stopped = true;
			snprintf(last->why, sizeof(last->why), "%s", line + 8);
		} else {
			return err_set(-EBADMSG, "store record '" POLICY_KEY "': line %d does not parse", lineno);
		}
	}
	return 0;
}

/* ---- setting and removing -------------------------------------------------------- */

static struct policy *find_locked(struct fs *fs, pid_t pid)
{
	for (struct policy *p = fs->policies; p; p = p->next)
		if (p->pid == pid)
			return p;
	return NULL;
}

/* Waits until no run thread owns pid's policy; returns it, or NULL. */
static struct policy *find_idle_locked(struct fs *fs, pid_t pid)
{
	struct policy *p;

	while ((p = find_locked(fs, pid)) && p->running)
		pthread_cond_wait(&fs->policy_cond, &fs->lock);
	return p;
}

static void unlink_locked(struct fs *fs, struct policy *p)
{
	for (struct policy **q = &fs->policies; *q; q = &(*q)->next)
		if (*q == p) {
			*q = p->next;
			return;
		}
}

int policy_set(struct fs *fs, pid_t pid, uid_t caller, uint64_t every_ms, unsigned keep)
{
	struct policy *p = calloc(1, sizeof(*p)), *old;
	char a[32];
	int r;

	if (!p)
		return -ENOMEM;
	r = proc_start(pid, &p->start);
	if (r < 0) {
		policy_free_one(p);
		return err_set(r, "pid %d: cannot read its start time", pid);
	}
	p->pid = pid;
	snprintf(p->boot, sizeof(p->boot), "%s", fs->boot_id);
	p->uid = caller;
	p->every_ms = every_ms;
	p->keep = keep;
	p->set_ms = now_ms();
	p->next_ms = p->set_ms + (int64_t)every_ms;

	pthread_mutex_lock(&fs->lock);
	old = find_idle_locked(fs, pid);
	if (old) {
		/* The same process's policy changes: its snapshots stay its
		 * own, and the new keep applies to them at the next run. Those
		 * of a process that is gone are left alone. */
		if (!old->stopped && old->start == p->start && !strcmp(old->boot, p->boot)) {
			p->snaps = TAKE_PTR(old->snaps);
			p->nsnaps = old->nsnaps;
			p->cap = old->cap;
			p->runs = old->runs;
			p->fails = old->fails;
			p->last_ms = old->last_ms;
			p->last_ok = old->last_ok;
			p->last_snap = old->last_snap;
			memcpy(p->last_error, old->last_error, sizeof(p->last_error));
		}
		unlink_locked(fs, old);
		policy_free_one(old);
	}
	p->next = fs->policies;
	fs->policies = p;
	pthread_cond_broadcast(&fs->policy_cond);
	pthread_mutex_unlock(&fs->lock);

	r = save(fs);
	fmt_every(every_ms, a, sizeof(a));
	if (r < 0)
		return err_set(r, "pid %d: the policy runs, but could not be stored: %s", pid, err_msg());
	log_info("pid %d: checkpoint every %s, keep %u", pid, a, keep);
	return 0;
}

int policy_off(struct fs *fs, pid_t pid, uid_t caller, bool may_checkpoint)
{
	struct policy *p;

	pthread_mutex_lock(&fs->lock);
	p = find_idle_locked(fs, pid);
	if (!may_checkpoint && (!p || (caller != 0 && caller != p->uid))) {
		pthread_mutex_unlock(&fs->lock);
		return p ? err_set(-EPERM, "pid %d: the policy is not yours", pid)
			 : err_set(-ESRCH, "pid %d: no such process, and no policy", pid);
	}
	if (p)
		unlink_locked(fs, p);
	pthread_cond_broadcast(&fs->policy_cond);
	pthread_mutex_unlock(&fs->lock);
	if (!p)
		return 0;
	policy_free_one(p);
	log_info("pid %d: periodic checkpoints off", pid);
	return save(fs);
}

/* ---- status --------------------------------------------------------------------- */

char *policy_status(struct fs *fs, pid_t pid)
{
	char every[32], when[32], next[96] = "-", last[700] = "-", *text = NULL;
	char policy[400] = "none";
	uint64_t runs = 0, fails = 0;
	struct policy *p;

	pthread_mutex_lock(&fs->lock);
	p = find_locked(fs, pid);
	if (p) {
		fmt_every(p->every_ms, every, sizeof(every));
		if (p->stopped)
			snprintf(policy, sizeof(policy), "stopped: %s (was every %s keep %u)", p->why, every, p->keep);
		else
			snprintf(policy, sizeof(policy), "every %s keep %u", every, p->keep);
		if (p->running) {
			snprintf(next, sizeof(next), "now (running)");
		} else if (!p->stopped) {
			int64_t in = p->next_ms - now_ms();
			fmt_time(p->next_ms, when, sizeof(when));
			snprintf(next, sizeof(next), "%s (in %" PRId64 " s)", when, in > 0 ? (in + 999) / 1000 : 0);
		}
		if (p->last_ms) {
			fmt_time(p->last_ms, when, sizeof(when));
			if (p->last_ok)
				snprintf(last, sizeof(last), "ok %" PRIu32 " at %s", p->last_snap, when);
			else
				snprintf(last, sizeof(last), "failed: %s (at %s)", p->last_error, when);
		}
		runs = p->runs;
		fails = p->fails;
	}
	pthread_mutex_unlock(&fs->lock);
	if (asprintf(&text,
		     "policy: %s\n"
		     "next: %s\n"
		     "last: %s\n"
		     "runs: %" PRIu64 " ok, %" PRIu64 " failed\n",
		     policy, next, last, runs, fails) < 0)
		return NULL;
	return text;
}

bool policy_get(struct fs *fs, pid_t pid, struct policy_info *ret)
{
	struct policy *p;

	pthread_mutex_lock(&fs->lock);
	p = find_locked(fs, pid);
	if (p) {
		*ret = (struct policy_info){
			.uid = p->uid, .every_ms = p->every_ms, .keep = p->keep, .set_ms = p->set_ms,
			.next_ms = p->next_ms, .last_ms = p->last_ms, .running = p->running, .stopped = p->stopped,
			.last_ok = p->last_ok, .last_snap = p->last_snap, .runs = p->runs, .fails = p->fails,
			.nsnaps = p->nsnaps,
		};
		fmt_every(p->every_ms, ret->every, sizeof(ret->every));
		snprintf(ret->why, sizeof(ret->why), "%s", p->why);
		snprintf(ret->last_error, sizeof(ret->last_error), "%s", p->last_error);
	}
	pthread_mutex_unlock(&fs->lock);
	return p != NULL;
}

/* ---- running ---------------------------------------------------------------------- */

/* Stops p (fs->lock held) and says why in the log. */
static void stop_locked(struct policy *p, const char *why)
{
	p->stopped = true;
	snprintf(p->why, sizeof(p->why), "%s", why);
	log_info("pid %d: periodic checkpoints stopped: %s", p->pid, why);
}

/* Deletes p's snapshots beyond its newest `keep`, oldest first. p is
 * owned by the caller's run (running), so it stays. */
static void prune(struct fs *fs, struct policy *p)
{
	pthread_mutex_lock(&fs->lock);
	while (p->nsnaps > p->keep) {
		uint32_t n = p->snaps[0];
		int r;

		pthread_mutex_unlock(&fs->lock);
		err_clear();
		r = snapview_delete(fs, p->pid, n);
		pthread_mutex_lock(&fs->lock);
		if (r < 0 && r != -ENOENT) {
			/* Kept on the list: the next run tries again. */
			log_warn_errno(r, "pid %d: cannot delete periodic snapshot %" PRIu32 ": %s", p->pid, n,
				       err_msg());
			break;
		}
		if (r >= 0)
			log_info("pid %d: periodic snapshot %" PRIu32 " deleted (keep %u)", p->pid, n, p->keep);
		snaps_drop_first(p);
	}
	pthread_mutex_unlock(&fs->lock);
}

struct run {
	struct fs *fs;
	struct policy *p;
};

static void *run_thread(void *arg)
{
	struct run *job = arg;
	struct fs *fs = job->fs;
	struct policy *p = job->p;
	char why[256] = "";
	uid_t owner = 0;
	uint32_t n = 0;
	int r;

	free(job);
	err_clear();
	/* p->pid, boot, start and uid never change while it runs. */
	r = same_process(fs, p, why, sizeof(why));
	if (r >= 0 && !access_pid(fs, p->uid, p->pid, &owner)) {
		snprintf(why, sizeof(why), "uid %u may no longer checkpoint process %d", (unsigned)p->uid, p->pid);
		r = -EPERM;
	}
	if (r < 0) {
		pthread_mutex_lock(&fs->lock);
		stop_locked(p, why);
		goto out;
	}
	r = ctl_checkpoint(fs, p->pid, owner, ENGINE_AFTER_RUN, true, &n);
	if (r < 0) {
		const char *d = err_msg();
		char err[512];

		snprintf(err, sizeof(err), "%s%s%s", strerror(-r), *d ? ": " : "", d);
		one_line(err);
		/* A process that exited under the checkpoint ends its policy. */
		bool gone = same_process(fs, p, why, sizeof(why)) < 0;
		pthread_mutex_lock(&fs->lock);
		p->last_ok = false;
		memcpy(p->last_error, err, sizeof(p->last_error));
		p->fails++;
		if (gone)
			stop_locked(p, why);
	} else {
		pthread_mutex_lock(&fs->lock);
		r = snaps_add(p, n);
		p->last_ok = true;
		p->last_snap = n;
		p->last_error[0] = 0;
		p->runs++;
		pthread_mutex_unlock(&fs->lock);
		if (r < 0)
			log_err("pid %d: out of memory: periodic snapshot %" PRIu32 " will not be deleted", p->pid, n);
		prune(fs, p);
		pthread_mutex_lock(&fs->lock);
	}
	p->last_ms = now_ms();
	p->next_ms = p->last_ms + (int64_t)p->every_ms;
out:
	pthread_mutex_unlock(&fs->lock);
	save(fs);
	pthread_mutex_lock(&fs->lock);
	p->running = false;
	pthread_cond_broadcast(&fs->policy_cond);
	pthread_mutex_unlock(&fs->lock);
	ctl_job_end(fs);
	return NULL;
}

/* Starts a run of p (fs->lock held). */
static void start_locked(struct fs *fs, struct policy *p)
{
	struct run *job = malloc(sizeof(*job));
	int r = job ? 0 : -ENOMEM;

	p->running = true;
	if (job) {
		*job = (struct run){ fs, p };
		/* ctl_job_spawn takes fs->lock to count the job. */
		pthread_mutex_unlock(&fs->lock);
		r = ctl_job_spawn(fs, run_thread, job);
		pthread_mutex_lock(&fs->lock);
	}
	if (r < 0) {
		free(job);
		p->running = false;
		/* Tried again in a second: a thread may be free by then. */
		p->next_ms = now_ms() + 1000;
		log_err_errno(r, "pid %d: cannot start a periodic checkpoint", p->pid);
	}
}

static void *timer_thread(void *arg)
{
	struct fs *fs = arg;

	pthread_mutex_lock(&fs->lock);
	while (!fs->policy_quit) {
		int64_t now = now_ms(), soonest = INT64_MAX;
		struct policy *p;
		bool started = false;

		for (p = fs->policies; p; p = p->next) {
			if (p->stopped || p->running)
				continue;
			if (p->next_ms <= now) {
				/* start_locked drops the lock a moment: the list
				 * may change, so look again from the start. */
				start_locked(fs, p);
				started = true;
				break;
			}
			soonest = MIN(soonest, p->next_ms);
		}
		if (started)
			continue;
		if (soonest == INT64_MAX) {
			pthread_cond_wait(&fs->policy_cond, &fs->lock);
		} else {
			struct timespec ts = { .tv_sec = soonest / 1000, .tv_nsec = (soonest % 1000) * 1000000 };
			pthread_cond_timedwait(&fs->policy_cond, &fs->lock, &ts);
		}
	}
	pthread_mutex_unlock(&fs->lock);
	return NULL;
}

int policy_start(struct fs *fs)
{
	_cleanup_free_ char *boot = NULL;
	bool changed = false;
	size_t len;
	int r;

	if (read_file_full("/proc/sys/kernel/random/boot_id", &boot, &len) >= 0) {
		one_line(boot);
		boot[strcspn(boot, " ")] = 0;
		snprintf(fs->boot_id, sizeof(fs->boot_id), "%s", boot);
	} else {
		snprintf(fs->boot_id, sizeof(fs->boot_id), "unknown");
	}
	r = load(fs);
	if (r < 0) {
		/* The snapshots are still served; no policy runs from a
		 * record that does not read whole, until a new policy
		 * replaces the record. */
		log_err_errno(r, "periodic checkpoints not resumed: %s", err_msg());
		policy_free(fs);
	}
	/* The schedule resumes from the last run's end (or the setting),
	 * at once where that is past; a process that is gone stops its
	 * policy now, saying why. */
	int64_t now = now_ms();
	for (struct policy *p = fs->policies; p; p = p->next) {
		char why[256];

		if (p->stopped)
			continue;
		if (same_process(fs, p, why, sizeof(why)) < 0) {
			stop_locked(p, why);
			changed = true;
			continue;
		}
		p->next_ms = MAX(now, (p->last_ms ? p->last_ms : p->set_ms) + (int64_t)p->every_ms);
		log_info("pid %d: periodic checkpoints resumed", p->pid);
	}
	if (changed)
		save(fs);
	r = -pthread_create(&fs->policy_thread, NULL, timer_thread, fs);
	if (r < 0)
		return err_set(r, "cannot start the policy timer thread");
	fs->policy_thread_started = true;
	return 0;
}

void policy_stop(struct fs *fs)
{
	if (!fs->policy_thread_started)
		return;
	pthread_mutex_lock(&fs->lock);
	fs->policy_quit = true;
	pthread_cond_broadcast(&fs->policy_cond);
	pthread_mutex_unlock(&fs->lock);
	pthread_join(fs->policy_thread, NULL);
	fs->policy_thread_started = false;
}

void policy_free(struct fs *fs)
{
	while (fs->policies) {
		struct policy *p = fs->policies;
		fs->policies = p->next;
		policy_free_one(p);
	}
}
