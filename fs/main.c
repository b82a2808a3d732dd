/*
 * ckptfs: the daemon. Parses options, opens the store, mounts, runs the
 * FUSE loop (one thread) until SIGTERM, SIGINT or `fusermount3 -u`, then
 * unmounts and closes everything in order: restores still verifying are
 * waited for, then snapshots, then the store.
 *
 * The store is opened after fuse_daemonize(): its backends start threads
 * (RocksDB, io_uring), and threads do not survive the fork that
 * daemonizing does. It is also opened once before, to report a bad store
 * on the terminal instead of only in syslog.
 *
 * Under systemd (Type=notify) the daemon says READY=1 once the mount
 * answers a request, and STOPPING=1 as soon as it is told to end; see
 * notify() below.
 */
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/un.h>

#include "fs/fs-int.h"

struct config {
	char *store;
	char *backend;
	char *pid_wait;
	char *api;
	char *api_token;
	char *api_tcp;
	char *track;
	char *track_idle;
	int allow_other;
};

enum {
	KEY_ALLOW_OTHER,
};

static const struct fuse_opt config_opts[] = {
	{ "store=%s", offsetof(struct config, store), 0 },
	{ "backend=%s", offsetof(struct config, backend), 0 },
	{ "pid_wait=%s", offsetof(struct config, pid_wait), 0 },
	{ "api=%s", offsetof(struct config, api), 0 },
	{ "api_token=%s", offsetof(struct config, api_token), 0 },
	{ "api_tcp=%s", offsetof(struct config, api_tcp), 0 },
	{ "track=%s", offsetof(struct config, track), 0 },
	{ "track_idle=%s", offsetof(struct config, track_idle), 0 },
	FUSE_OPT_KEY("allow_other", KEY_ALLOW_OTHER),
	FUSE_OPT_END,
};

static int opt_proc(void *data, const char *arg, int key, struct fuse_args *outargs)
{
	struct config *c = data;

	if (key == KEY_ALLOW_OTHER) {
		c->allow_other = 1;
		return 1; /* keep it: it is a mount option too */
	}
	return 1;
}

static void usage(FILE *out, const char *prog)
{
	fprintf(out,
		"Usage: %s [OPTIONS] MOUNTPOINT\n"
		"\n"
		"Mounts ckptfs: checkpoint processes by writing to /<pid>/ctl, browse\n"
		"snapshots as directories, restore by copying one into /restore/<name>/.\n"
		"\n"
		"Options:\n"
		"  -f                     stay in the foreground, log to stderr (else syslog)\n"
		"  -d                     FUSE debug output (implies -f)\n"
		"  -s                     accepted for compatibility: one thread always serves\n"
		"                         requests, and checkpoints run on threads of their own\n"
		"  -o store=DIR           the chunk store (default: /var/lib/ckptfs for root,\n"
		"                         else $XDG_DATA_HOME/ckptfs or ~/.local/share/ckptfs)\n"
		"  -o backend=dir         keep snapshots as plain directories in DIR instead\n"
		"                         (testing and debugging)\n"
		"  -o allow_other         let other users in: each sees and checkpoints only\n"
		"                         the processes it may ptrace and its own snapshots\n"
		"                         and restores (needs root, or user_allow_other in\n"
		"                         /etc/fuse.conf)\n"
		"  -o pid_wait=SECONDS    how long a restore waits for a zombie holding its\n"
		"                         pid or a thread id to be reaped by its parent\n"
		"                         (default 5, 0: do not wait; fractions allowed);\n"
		"                         one held by a live process fails at once\n"
		"  -o api=PATH            the REST API's Unix socket (default: /run/ckptfs/\n"
		"                         api.sock for root, else $XDG_RUNTIME_DIR/ckptfs/\n"
		"                         api.sock); 'none': no API. Each request acts as its\n"
		"                         peer's uid would through the mount (docs/API.md,\n"
		"                         ckptfs-api(7)); or HOST:PORT: TCP instead, with\n"
		"  -o api_token=FILE      the bearer token every TCP request must carry (the\n"
		"                         file's first line); requests act as its owner\n"
		"  -o api_tcp=HOST:PORT   the API on TCP too, beside the Unix socket (the\n"
		"                         same jobs on both; needs api_token)\n"
		"  -o track=SIZE          after a checkpoint that leaves a process running,\n"
		"                         keep watching what it writes (a userfaultfd of the\n"
		"                         daemon's) with the copy of its memory and its\n"
		"                         blocks' hashes, so that its next checkpoint reads\n"
		"                         and hashes only what changed; the process takes a\n"
		"                         fault at the first write to each page after each\n"
		"                         checkpoint. SIZE bounds what all processes'\n"
		"                         tracking holds (K, M, G, T; 'on': 8G, or a quarter\n"
		"                         of the memory if less). Default: off\n"
		"  -o track_idle=SECONDS  tracking unused this long is dropped (default 600)\n"
		"  -h, --help             this text\n"
		"  -V, --version          versions of ckptfs and libfuse\n"
		"\n"
		"The tree:\n"
		"  README                 how to use the mount\n"
		"  <pid>/ctl              write one line: 'checkpoint' (the process keeps\n"
		"                         running), 'checkpoint kill' (killed once the snapshot\n"
		"                         is durable), 'checkpoint stop' (left stopped); the\n"
		"                         write returns when the snapshot is durable, or fails\n"
		"                         with an errno (EINVAL: bad command, ESRCH: no such\n"
		"                         process, EPERM: not yours, EBUSY: one is running);\n"
		"                         'every D [keep K]' (D: 30s, 10m, 2h; K 1-1000,\n"
		"                         default 3) checkpoints the running process every D,\n"
		"                         keeping the policy's newest K snapshots (others are\n"
		"                         never deleted); kept in the store, it resumes when\n"
		"                         the store is mounted again; 'every off' ends it;\n"
		"                         'untrack' drops the tracking kept (-o track)\n"
		"  <pid>/status           key: value lines: pid, state (idle|checkpointing|\n"
		"                         failed), phase, progress, total, last_snapshot,\n"
		"                         last_error, memory (incremental | pre-copy |\n"
		"                         stop-and-copy, and why), tracking (kept | none |\n"
		"                         off); policy (none | every D keep K |\n"
		"                         stopped: why), next, last (ok N at TIME |\n"
		"                         failed: why), runs\n"
		"  <pid>/<n>/             snapshot n, read-only, in the snapshot directory\n"
		"                         format; 'rm -r' deletes it\n"
		"  restore/<name>/        'cp -r SNAPSHOT restore/<name>' restores it once every\n"
		"                         file has arrived and verified; restore/<name>/status\n"
		"                         says receiving, verifying, restoring (with ': waiting\n"
		"                         for pid N to be reaped by its parent P (COMM)' while\n"
		"                         a zombie holds the pid), 'running pid=N processes=K' or\n"
		"                         'failed: FILE: REASON'; restore/<name>/ctl takes\n"
		"                         'accept-changed-files' (restore files that changed\n"
		"                         since the checkpoint; after a failure it runs the\n"
		"                         restore again), 'lazy' (the process runs as soon as\n"
		"                         the pages it touches first are in, the rest loads\n"
		"                         meanwhile: status adds 'loaded: N of M bytes') or\n"
		"                         'retry'\n"
		"\n"
		"Unmount with 'fusermount3 -u MOUNTPOINT' (or umount as root), or send\n"
		"SIGTERM to the daemon. Environment: CKPTFS_LOG=err|warn|info|debug;\n"
		"NOTIFY_SOCKET (systemd's, Type=notify: READY=1 once the mount answers).\n"
		"More: docs/FS.md, ckptfs(8).\n",
		prog);
}

/* systemd's readiness protocol (sd_notify(3)) without libsystemd: where
 * NOTIFY_SOCKET names an AF_UNIX socket (a path, or an abstract name
 * written with a leading '@'), each change of state is one datagram of
 * KEY=VALUE lines. notify_init() reads it once, before any thread starts,
 * and takes it out of the environment, so that nothing the daemon starts
 * (restore helpers, the processes they bring back) inherits it.
 * notify_lock orders READY=1 before STOPPING=1: a mount that is already
 * going away is never announced as ready. */
static struct sockaddr_un notify_addr;
static socklen_t notify_len; /* 0: nobody listens */
static pthread_mutex_t notify_lock = PTHREAD_MUTEX_INITIALIZER;
static bool notify_stopping; /* notify_lock */

static void notify_init(void)
{
	const char *e = getenv("NOTIFY_SOCKET");
	size_t n = e ? strlen(e) : 0;

	if (!e)
		return;
	if ((e[0] == '/' || e[0] == '@') && n > 1 && n < sizeof(notify_addr.sun_path)) {
		notify_addr.sun_family = AF_UNIX;
		memcpy(notify_addr.sun_path, e, n);
		if (e[0] == '@')
			notify_addr.sun_path[0] = 0; /* abstract: the length ends the name */
		notify_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
	} else {
		log_warn("NOTIFY_SOCKET '%s' is not an AF_UNIX socket; systemd will not hear from us", e);
	}
	unsetenv("NOTIFY_SOCKET");
}

/* Sends one datagram to NOTIFY_SOCKET, if set; a lost message is logged
 * (debug) and changes nothing else: the daemon serves its mount either way. */
static void __attribute__((format(printf, 1, 2))) notify(const char *fmt, ...)
{
	_cleanup_free_ char *msg = NULL;
	_cleanup_close_ int fd = -1;
	va_list ap;
	int n;

	if (!notify_len)
		return;
	va_start(ap, fmt);
	n = vasprintf(&msg, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || sendto(fd, msg, (size_t)n, MSG_NOSIGNAL, (struct sockaddr *)&notify_addr, notify_len) < 0)
		log_debug("NOTIFY_SOCKET: cannot send '%s': %s", msg, strerror(errno));
}

struct ready_probe {
	pthread_t thread;
	const char *mountpoint; /* borrowed from main() */
	const char *store;
};

/* Says READY=1 once the mount answers: the first request on it waits for
 * the kernel's INIT, which only the session loop answers, so a statfs()
 * that returns a FUSE filesystem has been served by this daemon. When the
 * loop ends first, unmounting aborts the connection and the call fails
 * (ENOTCONN): no READY=1 then. */
static void *ready_probe(void *arg)
{
	struct ready_probe *p = arg;
	struct statfs st;

	if (statfs(p->mountpoint, &st) < 0 || st.f_type != 0x65735546 /* FUSE_SUPER_MAGIC */)
		return NULL;
	pthread_mutex_lock(&notify_lock);
	if (!notify_stopping)
		notify("READY=1\nMAINPID=%d\nSTATUS=mounted on %s, store %s", (int)getpid(), p->mountpoint,
		       p->store);
	pthread_mutex_unlock(&notify_lock);
	return NULL;
}

static int open_store(struct fs *fs)
{
	int r;

	if (fs->dir_backend) {
		r = mkdir_p(fs->store_dir, 0700);
		if (r >= 0)
			r = store_open_dir(fs->store_dir, &fs->store);
	} else {
		r = store_open(fs->store_dir, NULL, &fs->store);
	}
	if (r < 0) {
		log_err_errno(r, "cannot open the store '%s': %s", fs->store_dir, err_msg());
		notify("STATUS=cannot open the store %s: %s\nERRNO=%d", fs->store_dir, err_msg(), -r);
	}
	return r;
}

/* The kernel sizes its read-ahead on a FUSE mount by the mount's bdi,
 * which starts at the system default (128 KiB) and which max_readahead in
 * the INIT reply may only lower. With 128 KiB a sequential reader (cp -r of
 * a snapshot) reaches us as ~230 KiB requests, each a synchronous store
 * read; at FS_IO_SIZE the same copy makes a quarter as many and runs ~25%
 * faster (docs/PERFORMANCE.md, "The filesystem"). Only root may raise it;
 * otherwise the default stays, and nothing else changes. */
static void raise_readahead(const char *mountpoint)
{
	_cleanup_free_ char *info = NULL, *path = NULL;
	_cleanup_close_ int fd = -1;
	char dev[32] = "", val[32];
	size_t len;
	char *line, *save = NULL;
	int n;

	if (read_file_full("/proc/self/mountinfo", &info, &len) < 0)
		return;
	/* "ID PARENT MAJ:MIN ROOT MOUNTPOINT ...": the last mount on our
	 * mount point is ours. */
	for (line = strtok_r(info, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char mdev[32], mnt[PATH_MAX];

		if (sscanf(line, "%*u %*u %31s %*s %4095s", mdev, mnt) == 2 && strcmp(mnt, mountpoint) == 0)
			memcpy(dev, mdev, sizeof(dev));
	}
	if (!dev[0] || asprintf(&path, "/sys/class/bdi/%s/read_ahead_kb", dev) < 0)
		return;
	fd = open(path, O_WRONLY | O_CLOEXEC);
	n = snprintf(val, sizeof(val), "%u\n", FS_IO_SIZE / 1024);
	if (fd < 0 || write_full(fd, val, (size_t)n) < 0)
		log_debug("read-ahead of %s stays at the default (%s not writable)", mountpoint, path);
}

int main(int argc, char **argv)
{
	struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
	struct fuse_cmdline_opts opts = { 0 };
	struct config conf = { 0 };
	struct fs *fs = NULL;
	struct ready_probe probe = { 0 };
	bool probing = false;
	int ret = 1, r;

	log_set_target(LOG_TARGET_STDERR, "ckptfs");
	log_setup_env();
	if (argc > 1 && !strcmp(argv[1], "--restore-helper"))
		return restore_helper_main(argc, argv);
	notify_init();

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--"))
			break;
		if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
			usage(stdout, argv[0]);
			return 0;
		}
		if (!strcmp(argv[i], "-V") || !strcmp(argv[i], "--version")) {
			printf("ckptfs " CKPTFS_VERSION "\n");
			printf("libfuse %s (API %d)\n", fuse_pkgversion(), FUSE_USE_VERSION);
			return 0;
		}
	}
	if (fuse_opt_parse(&args, &conf, config_opts, opt_proc) != 0)
		return 2;
	if (fuse_parse_cmdline(&args, &opts) != 0)
		return 2;
	if (!opts.mountpoint) {
		usage(stderr, argv[0]);
		goto out_args;
	}

	fs = calloc(1, sizeof(*fs));
	if (!fs)
		goto out_args;
	pthread_mutex_init(&fs->lock, NULL);
	pthread_cond_init(&fs->restore_done, NULL);
	pthread_cond_init(&fs->policy_cond, NULL);
	pthread_cond_init(&fs->track_cond, NULL);
	pthread_mutex_init(&fs->policy_save, NULL);
	fs->uid = getuid();
	fs->started = time(NULL);
	fs->gid = getgid();
	fs->allow_other = conf.allow_other;
	fs->dir_backend = conf.backend && !strcmp(conf.backend, "dir");
	if (conf.backend && !fs->dir_backend && strcmp(conf.backend, "chunk")) {
		log_err("unknown backend '%s' (chunk or dir)", conf.backend);
		goto out_fs;
	}
	if (conf.pid_wait) {
		char *end;
		errno = 0;
		double sec = strtod(conf.pid_wait, &end);
		/* an hour is more than any parent should need; the bound keeps
		 * the milliseconds clear of ENGINE_PID_WAIT_NONE */
		if (errno || end == conf.pid_wait || *end || !(sec >= 0 && sec <= 3600)) {
			log_err("pid_wait: '%s' is not a number of seconds from 0 to 3600", conf.pid_wait);
			goto out_fs;
		}
		fs->pid_wait_ms = sec == 0 ? ENGINE_PID_WAIT_NONE : MAX(1u, (unsigned)(sec * 1000 + 0.5));
	}
	if (track_options(fs, conf.track, conf.track_idle) < 0) {
		log_err("%s", err_msg());
		goto out_fs;
	}
	fs->store_dir = conf.store ? strdup(conf.store) : store_default_path();
	if (!fs->store_dir)
		goto out_fs;
	if (fs->store_dir[0] != '/') {
		/* Daemonizing changes to /: keep the store where it was meant. */
		char cwd[PATH_MAX], *abs = NULL;
		if (!getcwd(cwd, sizeof(cwd)) || asprintf(&abs, "%s/%s", cwd, fs->store_dir) < 0)
			goto out_fs;
		free(fs->store_dir);
		fs->store_dir = abs;
	}
	node_table_init(fs);

	/* Report a store that cannot be opened here, on the terminal. */
	if (!opts.foreground) {
		if (open_store(fs) < 0)
			goto out_fs;
		store_close(fs->store);
		fs->store = NULL;
	}

	/* The kernel checks modes (the daemon sets owners and 0700 where a
	 * thing is someone's); the fstype reads fuse.ckptfs in /proc/mounts,
	 * which is how `ckpt` finds a mount. */
	if (fuse_opt_add_arg(&args, "-odefault_permissions,fsname=ckptfs,subtype=ckptfs") != 0)
		goto out_fs;
	fs->se = fuse_session_new(&args, &fs_ops, sizeof(fs_ops), fs);
	if (!fs->se)
		goto out_fs;
	if (fuse_set_signal_handlers(fs->se) != 0)
		goto out_session;
	if (fuse_session_mount(fs->se, opts.mountpoint) != 0)
		goto out_signals;
	raise_readahead(opts.mountpoint);
	if (!opts.foreground)
		log_set_target(LOG_TARGET_SYSLOG, "ckptfs");
	if (fuse_daemonize(opts.foreground) != 0)
		goto out_unmount;
	fs->self = getpid();
	if (open_store(fs) < 0)
		goto out_unmount;
	log_info("mounted on %s, store %s (%s)", opts.mountpoint, fs->store_dir,
		 fs->dir_backend ? "directories" : "chunk store");
	if (track_start(fs) < 0) {
		log_err("%s", err_msg());
		goto out_unmount;
	}
	/* Periodic checkpoints resume: their policies are in the store. */
	if (policy_start(fs) < 0) {
		log_err("%s", err_msg());
		goto out_unmount;
	}

	/* The API (api.c). One named with -o api= or api_tcp= must work;
	 * the default socket is a convenience, and a second daemon finding
	 * it taken (or a user without a runtime dir) mounts without it. */
	{
		bool sock = !conf.api || strcmp(conf.api, "none");
		_cleanup_free_ char *path = !sock ? NULL : conf.api ? strdup(conf.api) : api_default_path();
		if (path || conf.api_tcp) {
			r = api_start(fs, path, conf.api_tcp, conf.api_token, &fs->api);
			if (r < 0 && path && !conf.api && conf.api_tcp) {
				/* the default socket is taken: TCP, asked for, alone */
				log_warn("no API socket: %s; TCP only", err_msg());
				err_clear();
				r = api_start(fs, NULL, conf.api_tcp, conf.api_token, &fs->api);
			}
			if (r < 0 && (conf.api || conf.api_tcp)) {
				log_err_errno(r, "%s", err_msg());
				goto out_policy;
			}
			if (r < 0)
				log_warn("no API: %s", err_msg());
		}
	}

	/* One thread serves every request. With a pool of them (libfuse's
	 * multithreaded loop, 8 idle), the kernel gave each request to the
	 * thread that had waited longest, so every request woke another
	 * thread: cp -r of 1 GiB out of the mount took 1.3-1.4 daemon CPU-s
	 * and ran at 0.77-0.86 GB/s, against 1.0-1.1 CPU-s and 0.89-1.00 GB/s
	 * with one (docs/PERFORMANCE.md). What takes long is not done on it:
	 * a ctl write runs the checkpoint on a thread of its own (ops.c), a
	 * restore its commit and process (restore.c), the store its
	 * read-ahead and pack writes. */
	/* the first checkpoint's keeper, ready before anyone asks (ctl.c) */
	ctl_keeper_ahead();
	if (notify_len) {
		probe.mountpoint = opts.mountpoint;
		probe.store = fs->store_dir;
		probing = pthread_create(&probe.thread, NULL, ready_probe, &probe) == 0;
		if (!probing)
			log_warn("cannot start a thread to tell systemd the mount is ready");
	}
	r = fuse_session_loop(fs->se);
	pthread_mutex_lock(&notify_lock);
	notify_stopping = true;
	notify("STOPPING=1\nSTATUS=unmounting %s: finishing the checkpoints under way", opts.mountpoint);
	pthread_mutex_unlock(&notify_lock);
	/* No periodic checkpoint starts any more; those under way and
	 * checkpoints written to ctl finish (and are answered) first. */
	api_stop(fs->api);
	policy_stop(fs);
	ctl_jobs_wait(fs);
	ctl_keeper_end();
	/* every process we watch gets its memory back unwatched */
	track_stop(fs);
	/* The loop returns the number of the signal that ended it: an
	 * orderly end like an unmount. */
	ret = r == 0 || r == SIGTERM || r == SIGINT || r == SIGHUP ? 0 : 1;
	log_info("unmounting %s", opts.mountpoint);
	goto out_unmount;

out_policy:
	policy_stop(fs);
	ctl_jobs_wait(fs);
out_unmount:
	fuse_session_unmount(fs->se);
	/* The probe's statfs() has returned by now: answered, or failed
	 * with the connection the unmount aborted. */
	if (probing)
		pthread_join(probe.thread, NULL);
out_signals:
	fuse_remove_signal_handlers(fs->se);
out_session:
	fuse_session_destroy(fs->se);
out_fs:
	if (fs) {
		track_stop(fs);
		api_free(fs->api);
		fs_handles_free(fs);
		restore_free_all(fs);
		snap_cache_free(fs);
		policy_free(fs);
		ctl_free(fs);
		node_table_free(fs);
		store_close(fs->store);
		free(fs->store_dir);
		pthread_cond_destroy(&fs->restore_done);
		pthread_cond_destroy(&fs->policy_cond);
		pthread_cond_destroy(&fs->track_cond);
		pthread_mutex_destroy(&fs->policy_save);
		pthread_mutex_destroy(&fs->lock);
		free(fs);
	}
out_args:
	free(opts.mountpoint);
	free(conf.store);
	free(conf.backend);
	free(conf.pid_wait);
	free(conf.api);
	free(conf.api_token);
	free(conf.api_tcp);
	free(conf.track);
	free(conf.track_idle);
	fuse_opt_free_args(&args);
	return ret;
}
