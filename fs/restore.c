/*
 * restore/<name>/: a snapshot copied in starts a restore by itself.
 *
 * mkdir restore/<name> opens an import writer on store snapshot
 * "restore/<uid>/<name>" (STORE_CREATE_IMPORT). Each file created inside
 * is written straight into it as its bytes arrive and is whole when its
 * last handle is released. The manifest is also kept in memory and
 * parsed once whole, so that status can say what is still missing and a
 * file that can never match (wrong size, not in the manifest, a name the
 * store refuses) fails the restore at once, naming it. When every file
 * the manifest names is whole with its size, a thread commits the writer,
 * which verifies every hash, and runs the engine's restore with the
 * credentials of the uid that made the directory.
 *
 * What must stay true: nothing runs from a snapshot that did not verify;
 * a bad copy changes no other snapshot (an aborted import writer
 * discards only its own data); the daemon keeps serving whatever arrives.
 *
 * Writes are answered before they are ingested (restore_write_begin(),
 * then the reply, then restore_write_end() on the thread that serves the
 * mount, main.c, from the request's own buffer): cp's write() returns at
 * once, so cp reads its next piece while the daemon hashes, looks up,
 * compresses and appends this one. The next request is read only after
 * that, so writes are ingested one at a time and in order. A write that
 * fails after its answer fails the restore (status names the file and the
 * reason); the next write, the flush at close() and the release see it.
 *
 * restore/<name>/ctl takes a line of words. `accept-changed-files` makes
 * the engine restore files that changed since the dump instead of
 * refusing them (engine_restore_opts.accept_changed_files); it is written
 * before or while the copy goes in. Once a restore failed in the engine,
 * its snapshot is verified and kept in the store: `retry` runs the
 * engine's restore again, with the options given so far and any on its
 * line (`retry accept-changed-files`), and so does a line of options
 * alone, since that is what the engine's refusal tells the user to write.
 * `lazy` makes the restore lazy (engine_restore_opts.lazy): the process
 * runs as soon as the pages it touches first are in, the helper serves
 * the rest (see below) and status shows `loaded: N of M bytes` meanwhile.
 *
 * The manifest parser is store/'s (store-int.h): the daemon must read an
 * incoming manifest before the store sees the snapshot whole, and one
 * parser of that format is safer than two.
 */
#include <fcntl.h>
#include <grp.h>
#include <inttypes.h>
#include <limits.h>
#include <pwd.h>
#include <signal.h>
#include <sys/wait.h>

#include "fs/fs-int.h"
#include "store/store-int.h"

#ifndef HAVE_ENGINE
#define HAVE_ENGINE 0
#endif

/* Files larger than the x86-64 user address space cannot be memory areas
 * or anything else a snapshot holds. */
#define RESTORE_MAX_FILE (1ull << 47)
#define RESTORE_MAX_MANIFEST (16u << 20)
/* How long a copy must be quiet before it is taken as complete. */
#define RESTORE_QUIET_NS (300ull * 1000 * 1000)

enum rstate {
	R_RECEIVING,
	R_VERIFYING,
	R_RESTORING,
	R_RUNNING,
	R_FAILED,
	R_STORED, /* committed by an earlier daemon: nothing runs from here */
	_R_STATE_MAX,
};

struct rfile {
	struct restore *rs;
	char *path;
	struct store_file *f; /* lock: open for writing; NULL once whole */
	pthread_mutex_t lock; /* serializes writes to f (one writer per file) */
	uint64_t size;        /* fs->lock: end of data written or set */
	bool whole;           /* fs->lock */
	unsigned opens;       /* fs->lock: FUSE handles open on it */
	char *buf;            /* manifest only: its bytes, kept to parse */
	size_t buflen;
	struct rfile *next;   /* fs->lock */
};

struct restore {
	struct fs *fs;
	char *name;
	uid_t uid;
	gid_t gid;
	char sname[320];          /* the store's name for it */
	struct store_snap *w;     /* the import writer until commit or abort */
	enum rstate state;        /* fs->lock, and all below */
	char why[768];
	pid_t pid;
	size_t processes;         /* running: the tree's, zombies included */
	struct rfile *files;
	char **dirs;
	size_t ndirs;
	struct manifest man;
	bool have_man;
	unsigned open_files;      /* rfiles with opens > 0 */
	char waiting[160];        /* restoring: whom the engine waits for, "" if nobody */
	bool thread;              /* the commit/restore thread runs */
	bool verified;            /* committed: a failed restore may run again (ctl retry) */
	bool accept_changed;      /* ctl accept-changed-files: passed to the engine */
	bool lazy;                /* ctl lazy: a lazy restore */
	uint64_t loaded, total;   /* lazy, running: bytes of its memory loaded so far, of total */
	bool removed;             /* rmdir'd: freed when nothing uses it */
	uint64_t activity;        /* now_ns() of the last create, write or release */
	struct restore *next;
};

static const char *const rstate_names[_R_STATE_MAX] = {
	[R_RECEIVING] = "receiving", [R_VERIFYING] = "verifying", [R_RESTORING] = "restoring",
	[R_RUNNING] = "running",     [R_FAILED] = "failed",       [R_STORED] = "stored",
};

static struct restore *find_locked(struct fs *fs, uid_t uid, const char *name)
{
	for (struct restore *rs = fs->restores; rs; rs = rs->next)
		if (rs->uid == uid && !rs->removed && !strcmp(rs->name, name))
			return rs;
	return NULL;
}

static void fail_locked(struct restore *rs, const char *fmt, ...) _printf_(2, 3);
static void fail_locked(struct restore *rs, const char *fmt, ...)
{
	va_list ap;

	if (rs->state == R_FAILED)
		return;
	rs->state = R_FAILED;
	va_start(ap, fmt);
	vsnprintf(rs->why, sizeof(rs->why), fmt, ap);
	va_end(ap);
	log_warn("restore %s: failed: %s", rs->name, rs->why);
}

static void rfile_free(struct rfile *f)
{
	if (!f)
		return;
	store_file_close(f->f);
	pthread_mutex_destroy(&f->lock);
	free(f->path);
	free(f->buf);
	free(f);
}

static void restore_free(struct restore *rs)
{
	if (!rs)
		return;
	while (rs->files) {
		struct rfile *f = rs->files;
		rs->files = f->next;
		rfile_free(f);
	}
	store_snap_close(rs->w);
	for (size_t i = 0; i < rs->ndirs; i++)
		free(rs->dirs[i]);
	free(rs->dirs);
	if (rs->have_man)
		manifest_clear(&rs->man);
	free(rs->name);
	free(rs);
}

/* Drops a failed or removed restore's writer once no file is open on it
 * (a writer is closed only after its files). Returns what the caller
 * frees outside the lock. */
static struct store_snap *settle_locked(struct fs *fs, struct restore *rs, struct restore **free_rs)
{
	struct store_snap *w = NULL;

	*free_rs = NULL;
	if (rs->open_files || rs->thread)
		return NULL;
	if ((rs->state == R_FAILED || rs->removed) && rs->w)
		w = TAKE_PTR(rs->w);
	if (rs->removed) {
		for (struct restore **p = &fs->restores; *p; p = &(*p)->next)
			if (*p == rs) {
				*p = rs->next;
				break;
			}
		*free_rs = rs;
	}
	return w;
}

static void settle(struct fs *fs, struct restore *rs)
{
	struct restore *f;
	struct store_snap *w;

	pthread_mutex_lock(&fs->lock);
	w = settle_locked(fs, rs, &f);
	pthread_mutex_unlock(&fs->lock);
	store_snap_close(w);
	restore_free(f);
}

/* ---- the restore itself ---------------------------------------------------- */

/*
 * The restore runs in a helper process: this binary again, exec'd with
 * --restore-helper. The engine forks the future process from its caller,
 * and a child of the daemon would inherit the daemon's threads' state and
 * mappings (the store's io_uring rings, FUSE buffers) and its locks; a
 * fresh process has none of them. The helper opens the store read-only,
 * opens the snapshot and calls the engine with the credentials of the
 * user who asked: the engine keeps ours for the steps that need them,
 * opens everything of the image with the user's, and gives each thread
 * the image's credentials only where that user could have held them
 * (refusing the snapshot otherwise). It reports on stdout, a line
 * each: "wait ID PARENT COMM" while the engine waits for a zombie holding
 * the pid or a thread id to be reaped (its parent and the parent's comm),
 * "restoring" once it goes on, and last "pid N PROCESSES" or "error ERRNO
 * MESSAGE". A lazy restore says "pid N PROCESSES" once the process runs,
 * then "loaded BYTES TOTAL" lines while it serves the process's memory,
 * and last "done", or "error ERRNO MESSAGE" when a page could not be read
 * (the process was killed). The helper ignores SIGPIPE: a daemon that
 * goes away meanwhile does not end the load; a helper that dies does,
 * and its guardian kills the process (engine/lazy.c).
 * A crash in there costs the daemon nothing but that restore.
 */
static void helper_progress(const struct engine_progress *p, void *ud)
{
	static bool waited;
	static pid_t last_id, last_parent;
	(void)ud;
	if (p->phase == ENGINE_PHASE_WAIT) {
		/* once per ID and parent: the engine reports every 100 ms */
		if (!waited || p->wait_id != last_id || p->wait_parent != last_parent) {
			char comm[17];
			snprintf(comm, sizeof(comm), "%s", p->wait_parent_comm);
			for (char *c = comm; *c; c++)
				if (*c == '\n')
					*c = ' ';
			printf("wait %d %d %s\n", p->wait_id, p->wait_parent, comm);
			fflush(stdout);
		}
		waited = true;
		last_id = p->wait_id;
		last_parent = p->wait_parent;
	} else if (waited) {
		printf("restoring\n");
		fflush(stdout);
		waited = false;
	}
}

/* The helper's last line for a failure: "error ERRNO MESSAGE". */
static void helper_error(int rc)
{
	char msg[600];
	snprintf(msg, sizeof(msg), "%s", *err_msg() ? err_msg() : strerror(-rc));
	for (char *c = msg; *c; c++)
		if (*c == '\n')
			*c = ' ';
	printf("error %d %s\n", -rc, msg);
}

#if HAVE_ENGINE
static void helper_loaded(uint64_t loaded, uint64_t total, void *ud)
{
	(void)ud;
	printf("loaded %" PRIu64 " %" PRIu64 "\n", loaded, total);
	fflush(stdout);
}
#endif

int restore_helper_main(int argc, char **argv)
{
	struct store *s = NULL;
	struct store_snap *r = NULL;
	struct store_options o = { .read_only = true };
	uint64_t uid, gid;
	pid_t pid = 0;
	int rc;

	uint64_t wait_ms;
	bool accept = false, lazy = false, bad = argc < 8;

	/* ckptfs --restore-helper BACKEND STORE NAME UID GID PID_WAIT_MS [accept-changed-files] [lazy] */
	for (int i = 8; i < argc; i++) {
		if (!*argv[i])
			continue; /* a word left out */
		if (!strcmp(argv[i], "accept-changed-files"))
			accept = true;
		else if (!strcmp(argv[i], "lazy"))
			lazy = true;
		else
			bad = true;
	}
	if (bad || parse_u64(argv[5], &uid) < 0 || parse_u64(argv[6], &gid) < 0 ||
	    parse_u64(argv[7], &wait_ms) < 0 || wait_ms > UINT_MAX) {
		printf("error %d bad helper arguments\n", EINVAL);
		return 2;
	}
	rc = !strcmp(argv[2], "dir") ? store_open_dir(argv[3], &s) : store_open(argv[3], &o, &s);
	if (rc >= 0)
		rc = store_snap_open(s, argv[4], 0, &r);
	struct engine_restore_opts eo = {
		.uid = (uid_t)uid,
		.gid = (gid_t)gid,
		.pid_wait_ms = (unsigned)wait_ms,
		.progress = helper_progress,
		.accept_changed_files = accept,
		.lazy = lazy,
	};
	struct engine_lazy *load = NULL;
	eo.ret_lazy = &load;
	signal(SIGPIPE, SIG_IGN);
	gid_t groups[64];
	if (rc >= 0 && (uid != getuid() || gid != getgid())) {
		/* The restored process runs as the caller, with the caller's
		 * login groups; the engine needs our privileges to build it
		 * (same PID, PR_SET_MM_MAP) and drops the new process to the
		 * caller's before it opens or runs anything. The store is open read-only: nothing in it changes
		 * whatever the image says. */
		struct passwd *pw = getpwuid((uid_t)uid);
		int n = ARRAY_SIZE(groups);
		eo.set_creds = true;
		eo.groups = groups;
		if (pw && getgrouplist(pw->pw_name, (gid_t)gid, groups, &n) >= 0) {
			eo.ngroups = (size_t)n;
		} else {
			groups[0] = (gid_t)gid;
			eo.ngroups = 1;
		}
	}
	size_t procs = 1;
	eo.ret_processes = &procs;
#if HAVE_ENGINE
	if (rc >= 0)
		rc = engine_restore(r, &eo, &pid);
#else
	(void)eo;
	if (rc >= 0)
		rc = err_set(-ENOSYS, "this ckptfs was built without the engine");
#endif
	if (rc < 0) {
		helper_error(rc);
	} else {
		printf("pid %d %zu\n", pid, procs);
	}
	fflush(stdout);
#if HAVE_ENGINE
	if (load) {
		rc = engine_lazy_serve(load, helper_loaded, NULL);
		if (rc < 0)
			helper_error(rc);
		else
			printf("done\n");
		fflush(stdout);
		engine_lazy_close(load);
	} else if (lazy && rc >= 0) {
		/* nothing was left to load */
		printf("done\n");
		fflush(stdout);
	}
#endif
	store_snap_close(r);
	store_close(s);
	return rc < 0 ? 1 : 0;
}

/* One line of the helper's progress: what status shows while it waits. */
static void helper_line(struct restore *rs, const char *line)
{
	int id, parent, n = 0;
	uint64_t loaded, total;

	pthread_mutex_lock(&rs->fs->lock);
	if (sscanf(line, "wait %d %d %n", &id, &parent, &n) == 2 && n)
		snprintf(rs->waiting, sizeof(rs->waiting), "waiting for pid %d to be reaped by its parent %d (%s)",
			 id, parent, line + n);
	else if (!strcmp(line, "restoring"))
		rs->waiting[0] = 0;
	else if (sscanf(line, "loaded %" SCNu64 " %" SCNu64, &loaded, &total) == 2)
		rs->loaded = loaded, rs->total = total;
	pthread_mutex_unlock(&rs->fs->lock);
}

static int running_line(struct restore *rs, const char *line, pid_t *ret_pid, size_t *ret_processes);

static int run_helper(struct fs *fs, struct restore *rs, bool accept_changed, bool lazy, pid_t *ret_pid,
		      size_t *ret_processes)
{
	const char *sname = rs->sname;
	uid_t uid = rs->uid;
	gid_t gid = rs->gid;
	char suid[16], sgid[16], swait[16], out[1024];
	int p[2], status, rc;
	size_t len = 0;
	pid_t child;

	if (fs->uid != 0 && uid != fs->uid)
		return err_set(-EPERM, "the daemon runs as uid %u and cannot restore for uid %u",
			       (unsigned)fs->uid, (unsigned)uid);
	snprintf(suid, sizeof(suid), "%u", (unsigned)uid);
	snprintf(sgid, sizeof(sgid), "%u", (unsigned)gid);
	snprintf(swait, sizeof(swait), "%u", fs->pid_wait_ms);
	if (pipe2(p, O_CLOEXEC) < 0)
		return negerrno();
	child = fork();
	if (child < 0) {
		rc = negerrno();
		close(p[0]);
		close(p[1]);
		return rc;
	}
	if (child == 0) {
		/* Only async-signal-safe calls between fork and exec. */
		if (dup2(p[1], STDOUT_FILENO) < 0)
			_exit(127);
		execl("/proc/self/exe", "ckptfs", "--restore-helper", fs->dir_backend ? "dir" : "chunk",
		      fs->store_dir, sname, suid, sgid, swait, accept_changed ? "accept-changed-files" : "",
		      lazy ? "lazy" : "", (char *)NULL);
		_exit(127);
	}
	close(p[1]);
	/* Progress lines come while it works and are taken as they come;
	 * the last line is the answer. */
	for (;;) {
		ssize_t n = read(p[0], out + len, sizeof(out) - 1 - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += (size_t)n;
		out[len] = 0;
		char *nl;
		while ((nl = strchr(out, '\n')) && (!strncmp(out, "wait ", 5) || !strncmp(out, "restoring\n", 10) ||
						     !strncmp(out, "loaded ", 7) || (lazy && !strncmp(out, "pid ", 4)))) {
			*nl = 0;
			/* lazy: it runs from here, while its memory loads */
			if (!strncmp(out, "pid ", 4) && running_line(rs, out, ret_pid, ret_processes) < 0)
				break;
			helper_line(rs, out);
			len -= (size_t)(nl + 1 - out);
			memmove(out, nl + 1, len + 1);
		}
		if (len == sizeof(out) - 1)
			break;
	}
	out[len] = 0;
	close(p[0]);
	while (waitpid(child, &status, 0) < 0 && errno == EINTR)
		;
	out[strcspn(out, "\n")] = 0;
	if (!strncmp(out, "pid ", 4))
		return running_line(rs, out, ret_pid, ret_processes);
	if (lazy && !strcmp(out, "done") && *ret_pid)
		return 0;
	if (!strncmp(out, "error ", 6)) {
		char *end;
		long e = strtol(out + 6, &end, 10);
		if (e <= 0 || e > 4095)
			e = EIO;
		return err_set((int)-e, "%s", *end ? end + 1 : "restore failed");
	}
	if (WIFSIGNALED(status))
		return err_set(-EIO, "the restore helper died of signal %d", WTERMSIG(status));
	return err_set(-EIO, "the restore helper failed (exit status %d)", WEXITSTATUS(status));
}

/* "pid N PROCESSES": the process runs (a lazy one, with its memory still
 * loading: status says how much is in from then on). */
static int running_line(struct restore *rs, const char *line, pid_t *ret_pid, size_t *ret_processes)
{
	int v = 0, n = 0;
	size_t k = 0;
	if (sscanf(line + 4, "%d %zu%n", &v, &k, &n) != 2 || v <= 0 || !k || line[4 + n])
		return err_set(-EIO, "the restore helper said '%s'", line);
	*ret_pid = (pid_t)v;
	*ret_processes = k;
	pthread_mutex_lock(&rs->fs->lock);
	if (rs->lazy) {
		rs->state = R_RUNNING;
		rs->pid = (pid_t)v;
		rs->processes = k;
		rs->waiting[0] = 0;
		log_info("restore %s: running as pid %d, its memory loading", rs->name, v);
	}
	pthread_mutex_unlock(&rs->fs->lock);
	return 0;
}

static int complete_locked(struct restore *rs);

/* Runs the engine's restore of the committed snapshot (state restoring)
 * and records the outcome; returns with fs->lock held. */
static void run_engine(struct restore *rs)
{
	struct fs *fs = rs->fs;
	pid_t pid = 0;
	bool accept, lazy;
	int r;

	pthread_mutex_lock(&fs->lock);
	accept = rs->accept_changed;
	lazy = rs->lazy;
	rs->loaded = rs->total = 0;
	pthread_mutex_unlock(&fs->lock);

	size_t procs = 0;
	r = run_helper(fs, rs, accept, lazy, &pid, &procs);
	pthread_mutex_lock(&fs->lock);
	rs->waiting[0] = 0;
	if (r < 0) {
		fail_locked(rs, "%s", *err_msg() ? err_msg() : strerror(-r));
	} else {
		rs->state = R_RUNNING;
		rs->pid = pid;
		rs->processes = procs;
		log_info("restore %s: running as pid %d (%zu processes)", rs->name, pid, rs->processes);
	}
}

/* The end of a restore thread, fs->lock held: released here. */
static void thread_done_locked(struct restore *rs)
{
	struct fs *fs = rs->fs;

	rs->thread = false;
	fs->restore_threads--;
	pthread_cond_broadcast(&fs->restore_done);
	pthread_mutex_unlock(&fs->lock);
	settle(fs, rs);
}

static void *restore_thread(void *arg)
{
	struct restore *rs = arg;
	struct fs *fs = rs->fs;
	int r;

	/* cp -r creates files in directory order: the manifest's files may
	 * all be there while one it does not name is still to come. Wait
	 * until the copy has been quiet for RESTORE_QUIET_NS, then decide
	 * again. */
	pthread_mutex_lock(&fs->lock);
	for (;;) {
		uint64_t idle = now_ns() - rs->activity;
		if (idle >= RESTORE_QUIET_NS)
			break;
		pthread_mutex_unlock(&fs->lock);
		usleep((useconds_t)((RESTORE_QUIET_NS - idle) / 1000 + 1000));
		pthread_mutex_lock(&fs->lock);
	}
	if (rs->removed || complete_locked(rs) != 1) {
		/* Failed, removed, or a file is open again: a later release
		 * decides anew. */
		goto out;
	}
	rs->state = R_VERIFYING;
	pthread_mutex_unlock(&fs->lock);

	/* Every file is closed and nothing writes any more: the writer is
	 * this thread's alone. Commit verifies names, sizes and hashes
	 * against the manifest and names the first file that fails. */
	r = store_snap_commit(rs->w);
	store_snap_close(rs->w);
	rs->w = NULL;
	if (r < 0) {
		pthread_mutex_lock(&fs->lock);
		fail_locked(rs, "%s", *err_msg() ? err_msg() : strerror(-r));
		goto out;
	}
	pthread_mutex_lock(&fs->lock);
	rs->state = R_RESTORING;
	rs->verified = true;
	pthread_mutex_unlock(&fs->lock);

	run_engine(rs);
out:
	thread_done_locked(rs);
	return NULL;
}

/* ctl retry: the snapshot verified before; only the engine runs again. */
static void *retry_thread(void *arg)
{
	struct restore *rs = arg;

	run_engine(rs);
	thread_done_locked(rs);
	return NULL;
}

static struct rfile *rfile_find_locked(struct restore *rs, const char *path)
{
	for (struct rfile *f = rs->files; f; f = f->next)
		if (!strcmp(f->path, path))
			return f;
	return NULL;
}

/* Whether the copy is complete (1), can never be (-1: failed) or goes
 * on (0). fs->lock held. */
static int complete_locked(struct restore *rs)
{
	if (rs->state != R_RECEIVING)
		return rs->state == R_FAILED ? -1 : 0;
	if (!rs->have_man)
		return 0;
	for (struct rfile *f = rs->files; f; f = f->next) {
		const struct manifest_entry *e;

		if (!strcmp(f->path, STORE_MANIFEST))
			continue;
		e = manifest_find(&rs->man, f->path);
		if (!e) {
			fail_locked(rs, "%s: not named in the manifest", f->path);
			return -1;
		}
		if (f->whole && e->size != f->size) {
			fail_locked(rs, "%s: %" PRIu64 " bytes arrived, the manifest says %" PRIu64, f->path,
				    f->size, e->size);
			return -1;
		}
	}
	for (size_t i = 0; i < rs->man.nfiles; i++) {
		struct rfile *f = rfile_find_locked(rs, rs->man.files[i].path);
		if (!f || !f->whole)
			return 0;
	}
	return rs->open_files ? 0 : 1;
}

/* Starts fn(rs) on a thread of its own. fs->lock held. */
static void start_thread_locked(struct fs *fs, struct restore *rs, void *(*fn)(void *))
{
	pthread_t t;
	pthread_attr_t attr;

	rs->thread = true;
	fs->restore_threads++;
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	if (pthread_create(&t, &attr, fn, rs) != 0) {
		rs->thread = false;
		fs->restore_threads--;
		fail_locked(rs, "cannot start the restore thread");
	}
	pthread_attr_destroy(&attr);
}

/* Starts the commit/restore thread once the copy looks complete. fs->lock
 * held. */
static void check_locked(struct fs *fs, struct restore *rs)
{

	rs->activity = now_ns();
	if (rs->thread || complete_locked(rs) != 1)
		return;
	start_thread_locked(fs, rs, restore_thread);
}

int restore_wait_verified(struct fs *fs, uid_t uid, const char *name)
{
	for (;;) {
		pthread_mutex_lock(&fs->lock);
		struct restore *rs = find_locked(fs, uid, name);
		int r = 1;
		if (!rs) {
			r = err_set(-ENOENT, "removed meanwhile");
		} else if (rs->verified || rs->state == R_RESTORING || rs->state == R_RUNNING) {
			r = 0;
		} else if (rs->state == R_FAILED) {
			r = err_set(-EINVAL, "%s", rs->why);
		} else if (rs->state == R_RECEIVING && !rs->thread && !rs->open_files) {
			/* every file was released and no thread took the copy:
			 * it lacks what the manifest names (or the manifest) */
			const char *missing = STORE_MANIFEST;
			for (size_t i = 0; rs->have_man && i < rs->man.nfiles; i++) {
				struct rfile *f = rfile_find_locked(rs, rs->man.files[i].path);
				if (!f || !f->whole) {
					missing = rs->man.files[i].path;
					break;
				}
			}
			r = err_set(-EINVAL, "%s: %s", missing,
				    rs->have_man ? "named in the manifest, never arrived" : "never arrived");
		}
		pthread_mutex_unlock(&fs->lock);
		if (r <= 0)
			return r;
		/* verification hashes every file: seconds for large snapshots */
		usleep(20 * 1000);
	}
}

/* ---- the tree ------------------------------------------------------------- */

static int stored_exists(struct fs *fs, const char *sname);

int restore_mkdir(struct fs *fs, uid_t uid, gid_t gid, const char *name)
{
	struct restore *rs;
	int r;

	if (!strcmp(name, "status"))
		return -EINVAL;
	rs = calloc(1, sizeof(*rs));
	if (!rs)
		return -ENOMEM;
	rs->fs = fs;
	rs->uid = uid;
	rs->gid = gid;
	rs->name = strdup(name);
	if (!rs->name) {
		free(rs);
		return -ENOMEM;
	}
	r = fs_restore_name(fs, uid, name, rs->sname, sizeof(rs->sname));
	if (r < 0) {
		restore_free(rs);
		return r;
	}
	pthread_mutex_lock(&fs->lock);
	if (find_locked(fs, uid, name)) {
		pthread_mutex_unlock(&fs->lock);
		restore_free(rs);
		return -EEXIST;
	}
	pthread_mutex_unlock(&fs->lock);

	r = store_snap_create(fs->store, rs->sname, STORE_CREATE_IMPORT, &rs->w);
	if (r < 0) {
		log_warn_errno(r, "restore %s: cannot start: %s", name, err_msg());
		restore_free(rs);
		return r;
	}
	pthread_mutex_lock(&fs->lock);
	if (find_locked(fs, uid, name)) {
		pthread_mutex_unlock(&fs->lock);
		restore_free(rs);
		return -EEXIST;
	}
	rs->next = fs->restores;
	fs->restores = rs;
	pthread_mutex_unlock(&fs->lock);
	log_info("restore %s: receiving (uid %u)", name, (unsigned)uid);
	return 0;
}

int restore_rmdir(struct fs *fs, uid_t uid, const char *name)
{
	struct restore *rs;
	char sname[320];
	bool delete_stored;
	int r;

	pthread_mutex_lock(&fs->lock);
	rs = find_locked(fs, uid, name);
	if (rs && (rs->thread || rs->open_files)) {
		pthread_mutex_unlock(&fs->lock);
		return -EBUSY;
	}
	if (rs) {
		/* Once committed the snapshot is in the store: remove it
		 * there too. The restored process does not depend on it. */
		delete_stored = rs->state == R_RESTORING || rs->state == R_RUNNING || rs->state == R_STORED ||
				(rs->state == R_FAILED && !rs->w);
		rs->removed = true;
	}
	pthread_mutex_unlock(&fs->lock);

	r = fs_restore_name(fs, uid, name, sname, sizeof(sname));
	if (r < 0)
		return r;
	if (!rs) {
		if (stored_exists(fs, sname) <= 0)
			return -ENOENT;
		delete_stored = true;
	} else {
		settle(fs, rs);
	}
	if (delete_stored) {
		r = store_snap_delete(fs->store, sname);
		if (r < 0 && r != -ENOENT)
			return r;
	}
	return 0;
}

struct exists_ctx {
	const char *name;
	bool found;
};

static int exists_cb(const struct store_snap_info *info, void *ud)
{
	struct exists_ctx *c = ud;
	if (!strcmp(info->name, c->name))
		c->found = true;
	return 0;
}

static int stored_exists(struct fs *fs, const char *sname)
{
	struct exists_ctx c = { sname, false };
	int r = store_foreach_snap(fs->store, sname, exists_cb, &c);
	return r < 0 ? r : c.found;
}

/* A restore committed by an earlier daemon shows as "stored". */
static struct restore *find_or_stored(struct fs *fs, uid_t uid, const char *name)
{
	struct restore *rs;
	char sname[320];

	pthread_mutex_lock(&fs->lock);
	rs = find_locked(fs, uid, name);
	pthread_mutex_unlock(&fs->lock);
	if (rs)
		return rs;
	if (fs_restore_name(fs, uid, name, sname, sizeof(sname)) < 0 || stored_exists(fs, sname) <= 0)
		return NULL;
	rs = calloc(1, sizeof(*rs));
	if (!rs || !(rs->name = strdup(name))) {
		free(rs);
		return NULL;
	}
	rs->fs = fs;
	rs->uid = uid;
	rs->state = R_STORED;
	memcpy(rs->sname, sname, sizeof(sname));
	pthread_mutex_lock(&fs->lock);
	struct restore *other = find_locked(fs, uid, name);
	if (other) {
		pthread_mutex_unlock(&fs->lock);
		restore_free(rs);
		return other;
	}
	rs->next = fs->restores;
	fs->restores = rs;
	pthread_mutex_unlock(&fs->lock);
	return rs;
}

bool restore_exists(struct fs *fs, uid_t uid, const char *name)
{
	return find_or_stored(fs, uid, name) != NULL;
}

struct list_stored {
	struct fs *fs;
	size_t skip;
	int (*cb)(const char *name, void *ud);
	void *ud;
};

static int list_stored_cb(const struct store_snap_info *info, void *ud)
{
	struct list_stored *c = ud;
	const char *name = info->name + c->skip;
	bool mem;

	pthread_mutex_lock(&c->fs->lock);
	mem = false;
	for (struct restore *rs = c->fs->restores; rs; rs = rs->next)
		if (!rs->removed && !strcmp(rs->sname, info->name))
			mem = true;
	pthread_mutex_unlock(&c->fs->lock);
	return mem ? 0 : c->cb(name, c->ud);
}

int restore_foreach(struct fs *fs, uid_t uid, int (*cb)(const char *name, void *ud), void *ud)
{
	char prefix[64];
	char **names = NULL;
	size_t n = 0;
	int r = 0;

	/* Collect under the lock, call outside it. */
	pthread_mutex_lock(&fs->lock);
	for (struct restore *rs = fs->restores; rs; rs = rs->next)
		n += rs->uid == uid && !rs->removed;
	names = calloc(n + 1, sizeof(*names));
	n = 0;
	for (struct restore *rs = fs->restores; names && rs; rs = rs->next)
		if (rs->uid == uid && !rs->removed)
			names[n++] = strdup(rs->name);
	pthread_mutex_unlock(&fs->lock);
	if (!names)
		return -ENOMEM;
	for (size_t i = 0; i < n && !r; i++)
		if (names[i])
			r = cb(names[i], ud);
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
	if (r)
		return r;

	snprintf(prefix, sizeof(prefix), fs->dir_backend ? "restore.%u." : "restore/%u/", (unsigned)uid);
	struct list_stored c = { fs, strlen(prefix), cb, ud };
	r = store_foreach_snap(fs->store, prefix, list_stored_cb, &c);
	return r;
}

static bool is_dir_locked(struct restore *rs, const char *path)
{
	size_t len = strlen(path);

	for (size_t i = 0; i < rs->ndirs; i++)
		if (!strcmp(rs->dirs[i], path))
			return true;
	for (struct rfile *f = rs->files; f; f = f->next)
		if (!strncmp(f->path, path, len) && f->path[len] == '/')
			return true;
	return false;
}

int restore_lookup(struct fs *fs, uid_t uid, const char *name, const char *path, uint64_t *size)
{
	struct restore *rs = find_or_stored(fs, uid, name);
	int r = 0;

	if (!rs)
		return 0;
	if (!*path)
		return 2;
	pthread_mutex_lock(&fs->lock);
	struct rfile *f = rfile_find_locked(rs, path);
	if (f) {
		*size = f->size;
		r = 1;
	} else if (is_dir_locked(rs, path)) {
		r = 2;
	}
	pthread_mutex_unlock(&fs->lock);
	return r;
}

struct child {
	char *name;
	bool is_dir;
	uint64_t size;
};

static void add_child(struct child **v, size_t *n, const char *name, size_t len, bool is_dir, uint64_t size)
{
	struct child *c;

	for (size_t i = 0; i < *n; i++)
		if (strlen((*v)[i].name) == len && !strncmp((*v)[i].name, name, len))
			return;
	c = realloc(*v, (*n + 1) * sizeof(**v));
	if (!c)
		return;
	*v = c;
	c[*n].name = strndup(name, len);
	c[*n].is_dir = is_dir;
	c[*n].size = size;
	if (c[*n].name)
		(*n)++;
}

int restore_list(struct fs *fs, uid_t uid, const char *name, const char *dir,
		 int (*cb)(const char *child, bool is_dir, uint64_t size, void *ud), void *ud)
{
	struct restore *rs = find_or_stored(fs, uid, name);
	struct child *v = NULL;
	size_t n = 0, dlen = strlen(dir);
	int r = 0;

	if (!rs)
		return -ENOENT;
	pthread_mutex_lock(&fs->lock);
	/* Paths under dir: "dir/child..." or, at the root, "child...". */
	for (struct rfile *f = rs->files; f; f = f->next) {
		const char *p = f->path;
		if (dlen) {
			if (strncmp(p, dir, dlen) || p[dlen] != '/')
				continue;
			p += dlen + 1;
		}
		const char *slash = strchr(p, '/');
		add_child(&v, &n, p, slash ? (size_t)(slash - p) : strlen(p), slash != NULL, f->size);
	}
	for (size_t i = 0; i < rs->ndirs; i++) {
		const char *p = rs->dirs[i];
		if (dlen) {
			if (strncmp(p, dir, dlen) || p[dlen] != '/')
				continue;
			p += dlen + 1;
		}
		const char *slash = strchr(p, '/');
		add_child(&v, &n, p, slash ? (size_t)(slash - p) : strlen(p), true, 0);
	}
	pthread_mutex_unlock(&fs->lock);
	for (size_t i = 0; i < n; i++) {
		if (!r)
			r = cb(v[i].name, v[i].is_dir, v[i].size, ud);
		free(v[i].name);
	}
	free(v);
	return r;
}

int restore_subdir(struct fs *fs, uid_t uid, const char *name, const char *path)
{
	struct restore *rs;
	char *copy;
	int r;

	r = store_path_valid(path);
	if (r < 0)
		return r;
	pthread_mutex_lock(&fs->lock);
	rs = find_locked(fs, uid, name);
	if (!rs) {
		r = -ENOENT;
	} else if (rs->state != R_RECEIVING) {
		r = -EROFS;
	} else if (rfile_find_locked(rs, path) || is_dir_locked(rs, path)) {
		r = -EEXIST;
	} else if (!(copy = strdup(path))) {
		r = -ENOMEM;
	} else {
		char **d = realloc(rs->dirs, (rs->ndirs + 1) * sizeof(*d));
		if (!d) {
			free(copy);
			r = -ENOMEM;
		} else {
			rs->dirs = d;
			rs->dirs[rs->ndirs++] = copy;
		}
	}
	pthread_mutex_unlock(&fs->lock);
	return r;
}

int restore_create(struct fs *fs, uid_t uid, const char *name, const char *path, struct rfile **ret)
{
	struct restore *rs;
	struct rfile *f;
	int r;

	pthread_mutex_lock(&fs->lock);
	rs = find_locked(fs, uid, name);
	if (!rs) {
		pthread_mutex_unlock(&fs->lock);
		return -ENOENT;
	}
	if (rs->state != R_RECEIVING) {
		pthread_mutex_unlock(&fs->lock);
		return rs->state == R_FAILED ? -EIO : -EROFS;
	}
	if (rfile_find_locked(rs, path) || is_dir_locked(rs, path)) {
		pthread_mutex_unlock(&fs->lock);
		return -EEXIST;
	}
	f = calloc(1, sizeof(*f));
	if (!f || !(f->path = strdup(path))) {
		pthread_mutex_unlock(&fs->lock);
		free(f);
		return -ENOMEM;
	}
	pthread_mutex_init(&f->lock, NULL);
	f->rs = rs;
	f->opens = 1;
	rs->open_files++;
	rs->activity = now_ns();
	f->next = rs->files;
	rs->files = f;
	pthread_mutex_unlock(&fs->lock);

	/* The writer stays valid: a restore with open files is neither
	 * committed nor aborted. */
	r = store_file_create(rs->w, path, &f->f);
	if (r < 0) {
		pthread_mutex_lock(&fs->lock);
		fail_locked(rs, "%s: %s", path, *err_msg() ? err_msg() : strerror(-r));
		pthread_mutex_unlock(&fs->lock);
		restore_release(fs, f);
		return r;
	}
	*ret = f;
	return 0;
}

int restore_write_begin(struct rfile *f, size_t len, uint64_t off)
{
	struct restore *rs = f->rs;
	struct fs *fs = rs->fs;
	int r = 0;

	pthread_mutex_lock(&fs->lock);
	if (rs->state == R_FAILED) {
		r = -EIO;
	} else {
		/* What the kernel is told by the answer; status and stat
		 * agree with it from now on (a failure makes it moot). */
		if (off <= RESTORE_MAX_FILE && len <= RESTORE_MAX_FILE - off && off + len > f->size)
			f->size = off + len;
	}
	pthread_mutex_unlock(&fs->lock);
	return r;
}

/* Ingests one write: the manifest's bytes are also kept to parse, and
 * every file's go to the store. Errors fail the restore. */
static int write_now(struct rfile *f, const void *buf, size_t len, uint64_t off)
{
	struct restore *rs = f->rs;
	struct fs *fs = rs->fs;
	int r = 0;

	if (off > RESTORE_MAX_FILE || len > RESTORE_MAX_FILE - off) {
		pthread_mutex_lock(&fs->lock);
		fail_locked(rs, "%s: absurd size", f->path);
		pthread_mutex_unlock(&fs->lock);
		return -EFBIG;
	}
	pthread_mutex_lock(&f->lock);
	if (!f->f) {
		r = -EROFS;
	} else if (!strcmp(f->path, STORE_MANIFEST)) {
		/* Keep the manifest's bytes to parse them once it is whole. */
		if (off + len > RESTORE_MAX_MANIFEST) {
			r = -EFBIG;
		} else {
			if (off + len > f->buflen) {
				char *b = realloc(f->buf, off + len);
				if (!b) {
					r = -ENOMEM;
					goto out;
				}
				memset(b + f->buflen, 0, off + len - f->buflen);
				f->buf = b;
				f->buflen = off + len;
			}
			memcpy(f->buf + off, buf, len);
		}
	}
	if (r >= 0)
		r = store_file_pwrite(f->f, buf, len, off);
out:
	pthread_mutex_unlock(&f->lock);
	if (r < 0) {
		pthread_mutex_lock(&fs->lock);
		fail_locked(rs, "%s: %s", f->path,
			    r == -EFBIG ? "too large" : *err_msg() ? err_msg() : strerror(-r));
		pthread_mutex_unlock(&fs->lock);
	}
	return r;
}

int restore_write_end(struct rfile *f, const void *buf, size_t len, uint64_t off)
{
	struct fs *fs = f->rs->fs;
	bool skip;

	pthread_mutex_lock(&fs->lock);
	skip = f->rs->state == R_FAILED;
	pthread_mutex_unlock(&fs->lock);
	if (skip)
		return -EIO;
	return buf ? write_now(f, buf, len, off) : 0;
}

int restore_write(struct rfile *f, const void *buf, size_t len, uint64_t off)
{
	int r = restore_write_begin(f, len, off);

	return r < 0 ? r : restore_write_end(f, buf, len, off);
}

int restore_flush(struct rfile *f)
{
	struct fs *fs = f->rs->fs;
	int r;

	pthread_mutex_lock(&fs->lock);
	r = f->rs->state == R_FAILED ? -EIO : 0;
	pthread_mutex_unlock(&fs->lock);
	return r;
}

int restore_truncate(struct rfile *f, uint64_t size)
{
	struct restore *rs = f->rs;
	struct fs *fs = rs->fs;
	int r;

	if (size > RESTORE_MAX_FILE) {
		pthread_mutex_lock(&fs->lock);
		fail_locked(rs, "%s: absurd size %" PRIu64, f->path, size);
		pthread_mutex_unlock(&fs->lock);
		return -EFBIG;
	}
	pthread_mutex_lock(&f->lock);
	if (!f->f) {
		r = -EROFS;
	} else {
		if (!strcmp(f->path, STORE_MANIFEST) && size < f->buflen)
			f->buflen = size;
		r = store_file_set_size(f->f, size);
	}
	pthread_mutex_unlock(&f->lock);
	if (r >= 0) {
		pthread_mutex_lock(&fs->lock);
		f->size = size;
		pthread_mutex_unlock(&fs->lock);
	}
	return r;
}

int restore_extend(struct rfile *f, uint64_t size)
{
	struct fs *fs = f->rs->fs;
	bool grow;

	pthread_mutex_lock(&fs->lock);
	grow = size > f->size;
	pthread_mutex_unlock(&fs->lock);
	return grow ? restore_truncate(f, size) : 0;
}

int restore_truncate_path(struct fs *fs, uid_t uid, const char *name, const char *path, uint64_t size)
{
	struct restore *rs;
	struct rfile *f = NULL;

	pthread_mutex_lock(&fs->lock);
	rs = find_locked(fs, uid, name);
	if (rs)
		f = rfile_find_locked(rs, path);
	/* Only a file still open may change (cp's ftruncate comes with its
	 * handle; an O_TRUNC open of a new file is a no-op). */
	if (f && f->opens == 0)
		f = NULL;
	pthread_mutex_unlock(&fs->lock);
	if (!f)
		return size == 0 ? 0 : -EROFS;
	return restore_truncate(f, size);
}

int restore_release(struct fs *fs, struct rfile *f)
{
	struct restore *rs = f->rs;
	struct store_file *sf = NULL;
	int r = 0;

	pthread_mutex_lock(&fs->lock);
	if (--f->opens > 0) {
		pthread_mutex_unlock(&fs->lock);
		return 0;
	}
	pthread_mutex_unlock(&fs->lock);

	pthread_mutex_lock(&f->lock);
	sf = TAKE_PTR(f->f);
	pthread_mutex_unlock(&f->lock);
	if (sf)
		r = store_file_close(sf);

	pthread_mutex_lock(&fs->lock);
	rs->open_files--;
	if (r < 0) {
		fail_locked(rs, "%s: %s", f->path, *err_msg() ? err_msg() : strerror(-r));
	} else if (sf && rs->state == R_RECEIVING) {
		f->whole = true;
		if (!strcmp(f->path, STORE_MANIFEST)) {
			int pr = manifest_parse(f->buf ? f->buf : "", f->buflen, &rs->man);
			if (pr < 0)
				fail_locked(rs, "manifest: %s", *err_msg() ? err_msg() : strerror(-pr));
			else
				rs->have_man = true;
		}
	}
	check_locked(fs, rs);
	pthread_mutex_unlock(&fs->lock);
	settle(fs, rs);
	return r;
}

int restore_status(struct fs *fs, uid_t uid, const char *name, char **ret, size_t *ret_len)
{
	struct restore *rs = find_or_stored(fs, uid, name);
	char *text = NULL;
	size_t len = 0;
	FILE *out;

	if (!rs)
		return -ENOENT;
	out = open_memstream(&text, &len);
	if (!out)
		return -ENOMEM;
	pthread_mutex_lock(&fs->lock);
	switch (rs->state) {
	case R_RUNNING:
		fprintf(out, "running pid=%d processes=%zu\n", rs->pid, rs->processes);
		if (rs->lazy && rs->total)
			fprintf(out, "loaded: %" PRIu64 " of %" PRIu64 " bytes\n", rs->loaded, rs->total);
		break;
	case R_FAILED:
		fprintf(out, "failed: %s\n", rs->why);
		break;
	case R_RECEIVING: {
		unsigned shown = 0, missing = 0;
		fprintf(out, "receiving\n");
		if (!rs->have_man) {
			fprintf(out, "missing: %s\n", STORE_MANIFEST);
			break;
		}
		for (size_t i = 0; i < rs->man.nfiles; i++) {
			struct rfile *f = rfile_find_locked(rs, rs->man.files[i].path);
			if (f && f->whole)
				continue;
			missing++;
			if (shown++ < 32)
				fprintf(out, "missing: %s\n", rs->man.files[i].path);
		}
		if (missing > shown)
			fprintf(out, "missing: ... and %u more\n", missing - shown);
		break;
	}
	case R_RESTORING:
		if (rs->waiting[0]) {
			fprintf(out, "restoring: %s\n", rs->waiting);
			break;
		}
		/* fall through */
	default:
		fprintf(out, "%s\n", rstate_names[rs->state]);
		break;
	}
	pthread_mutex_unlock(&fs->lock);
	if (fclose(out) != 0) {
		free(text);
		return -ENOMEM;
	}
	*ret = text;
	*ret_len = len;
	return 0;
}

int restore_ctl(struct fs *fs, uid_t uid, const char *name, const char *buf, size_t len)
{
	char line[256], *save = NULL;
	bool retry = false, accept = false, lazy = false, any = false;
	struct restore *rs;
	int r = 0;

	if (len >= sizeof(line))
		return -EINVAL;
	memcpy(line, buf, len);
	line[len] = 0;
	for (char *w = strtok_r(line, " \t\n", &save); w; w = strtok_r(NULL, " \t\n", &save)) {
		if (!strcmp(w, "retry") && !any)
			retry = true;
		else if (!strcmp(w, "accept-changed-files"))
			accept = true;
		else if (!strcmp(w, "lazy"))
			lazy = true;
		else
			return -EINVAL;
		any = true;
	}
	if (!any)
		return -EINVAL;

	pthread_mutex_lock(&fs->lock);
	rs = find_locked(fs, uid, name);
	if (!rs) {
		r = -ENOENT;
	} else if (rs->state == R_RECEIVING || rs->state == R_VERIFYING) {
		/* Read by the restore thread when the engine starts. */
		if (retry) {
			r = -EINVAL;
		} else {
			rs->accept_changed |= accept;
			rs->lazy |= lazy;
		}
	} else if (rs->state == R_FAILED && rs->verified && !rs->thread) {
		rs->accept_changed |= accept;
		rs->lazy |= lazy;
		rs->state = R_RESTORING;
		rs->why[0] = 0;
		log_info("restore %s: retried%s", rs->name, rs->accept_changed ? ", accepting changed files" : "");
		start_thread_locked(fs, rs, retry_thread);
	} else if (rs->state == R_FAILED || rs->state == R_STORED) {
		/* A copy that failed is no snapshot to run; one an earlier
		 * daemon committed has no one to run it for. */
		r = -EINVAL;
	} else {
		r = -EBUSY;
	}
	pthread_mutex_unlock(&fs->lock);
	return r;
}

void restore_free_all(struct fs *fs)
{
	pthread_mutex_lock(&fs->lock);
	while (fs->restore_threads)
		pthread_cond_wait(&fs->restore_done, &fs->lock);
	struct restore *list = fs->restores;
	fs->restores = NULL;
	pthread_mutex_unlock(&fs->lock);
	while (list) {
		struct restore *next = list->next;
		restore_free(list);
		list = next;
	}
}
