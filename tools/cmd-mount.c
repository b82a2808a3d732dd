/*
 * ckpt checkpoint, ckpt ls, ckpt status: drive a mounted ckptfs with the
 * same file operations a person would use (write ctl, read status, list
 * directories), so that they need no privilege the mount does not give.
 * The mount is the one given with --mount or the first of type
 * fuse.ckptfs in /proc/mounts. `ckpt ls --store DIR` lists a store
 * without any mount.
 */
#include <dirent.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <sys/stat.h>

#include "common/common.h"
#include "store/store.h"
#include "tools/tools-int.h"

/* /proc/mounts escapes blanks and backslashes as \ooo. */
static void unescape(char *s)
{
	char *o = s;
	while (*s) {
		if (s[0] == '\\' && s[1] >= '0' && s[1] <= '7' && s[2] >= '0' && s[2] <= '7' && s[3] >= '0' &&
		    s[3] <= '7') {
			*o++ = (char)((s[1] - '0') * 64 + (s[2] - '0') * 8 + (s[3] - '0'));
			s += 4;
		} else {
			*o++ = *s++;
		}
	}
	*o = 0;
}

/* The mount point to use: given, or found in /proc/mounts. */
static int find_mount(const char *given, char **ret)
{
	_cleanup_fclose_ FILE *f = NULL;
	char line[4096];

	if (given) {
		*ret = strdup(given);
		return *ret ? 0 : -ENOMEM;
	}
	f = fopen("/proc/mounts", "re");
	if (!f)
		return negerrno();
	while (fgets(line, sizeof(line), f)) {
		char *save = NULL;
		char *dev = strtok_r(line, " ", &save);
		char *dir = strtok_r(NULL, " ", &save);
		char *type = strtok_r(NULL, " ", &save);
		if (dev && dir && type && !strcmp(type, "fuse.ckptfs")) {
			unescape(dir);
			*ret = strdup(dir);
			return *ret ? 0 : -ENOMEM;
		}
	}
	return -ENOENT;
}

static int mount_or_complain(const char *given, char **ret)
{
	int r = find_mount(given, ret);
	if (r == -ENOENT)
		fprintf(stderr, "ckpt: no ckptfs mount found in /proc/mounts; mount one (ckptfs /ckpt) or give --mount DIR\n");
	else if (r < 0)
		fprintf(stderr, "ckpt: cannot read /proc/mounts: %s\n", strerror(-r));
	return r;
}

/* Reads "key: value" from a status text into out (empty if absent). */
static void status_get(const char *text, const char *key, char *out, size_t len)
{
	size_t klen = strlen(key);

	out[0] = 0;
	for (const char *l = text; l && *l; l = strchr(l, '\n'), l = l ? l + 1 : NULL) {
		if (!strncmp(l, key, klen) && l[klen] == ':') {
			const char *v = l + klen + 1;
			const char *e = strchr(v, '\n');
			while (*v == ' ')
				v++;
			snprintf(out, len, "%.*s", (int)(e ? e - v : (ptrdiff_t)strlen(v)), v);
			return;
		}
	}
}

static int read_text(const char *path, char **ret)
{
	size_t len;
	return read_file_full(path, ret, &len);
}

/* ---- ckpt checkpoint ------------------------------------------------------- */

struct ctl_write {
	int fd;
	const char *cmd;
	int result; /* 0 or -errno */
	bool done;
	pthread_mutex_t lock;
};

static void *ctl_writer(void *arg)
{
	struct ctl_write *w = arg;
	int r = write_full(w->fd, w->cmd, strlen(w->cmd));

	pthread_mutex_lock(&w->lock);
	w->result = r;
	w->done = true;
	pthread_mutex_unlock(&w->lock);
	return NULL;
}

static const char checkpoint_usage[] =
	"Usage: ckpt checkpoint [--kill|--stop] [--mount DIR] PID\n"
	"       ckpt checkpoint --every D|off [--keep K] [--mount DIR] PID\n";

/* Prints the lines of a status text that start with one of keys. */
static void print_status_lines(const char *text, const char *const *keys, const char *indent)
{
	for (const char *const *k = keys; *k; k++) {
		char v[1024];

		status_get(text, *k, v, sizeof(v));
		if (*v)
			printf("%s%s: %s\n", indent, *k, v);
	}
}

static const char *const policy_keys[] = { "policy", "next", "last", "runs", NULL };

/* ckpt checkpoint --every: one line to ctl, answered at once. */
static int set_policy(const char *mnt, uint64_t pid, const char *every, const char *keep)
{
	_cleanup_free_ char *ctl = NULL, *status = NULL, *line = NULL, *text = NULL;
	_cleanup_close_ int fd = -1;
	char err[512] = "";
	int r;

	if (asprintf(&ctl, "%s/%" PRIu64 "/ctl", mnt, pid) < 0 ||
	    asprintf(&status, "%s/%" PRIu64 "/status", mnt, pid) < 0 ||
	    asprintf(&line, "every %s%s%s\n", every, keep ? " keep " : "", keep ? keep : "") < 0)
		return EXIT_FAIL;
	fd = open(ctl, O_WRONLY | O_CLOEXEC);
	if (fd < 0) {
		fprintf(stderr, "ckpt: cannot open %s: %s\n", ctl, strerror(errno));
		return EXIT_FAIL;
	}
	r = write_full(fd, line, strlen(line));
	if (read_text(status, &text) >= 0)
		status_get(text, "last_error", err, sizeof(err));
	if (r < 0) {
		/* status says why, the errno's name first */
		fprintf(stderr, "ckpt: %" PRIu64 ": every %s: %s\n", pid, every,
			*err && strcmp(err, "-") ? err : strerror(-r));
		return EXIT_FAIL;
	}
	if (text)
		print_status_lines(text, policy_keys, "");
	return EXIT_OK;
}

int cmd_checkpoint(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "kill", no_argument, NULL, 'k' },
		{ "stop", no_argument, NULL, 's' },
		{ "every", required_argument, NULL, 'e' },
		{ "keep", required_argument, NULL, 'K' },
		{ "mount", required_argument, NULL, 'm' },
		{ "help", no_argument, NULL, 'h' },
		{},
	};
	const char *given = NULL, *cmd = "checkpoint\n", *every = NULL, *keep = NULL;
	_cleanup_free_ char *mnt = NULL, *ctl = NULL, *status = NULL;
	struct ctl_write w = { .fd = -1, .lock = PTHREAD_MUTEX_INITIALIZER };
	pthread_t t;
	uint64_t pid;
	int c;

	while ((c = getopt_long(argc, argv, "ksm:h", longopts, NULL)) != -1) {
		switch (c) {
		case 'k':
			cmd = "checkpoint kill\n";
			break;
		case 's':
			cmd = "checkpoint stop\n";
			break;
		case 'e':
			every = optarg;
			break;
		case 'K':
			keep = optarg;
			break;
		case 'm':
			given = optarg;
			break;
		case 'h':
			printf("%s"
			       "\n"
			       "Checkpoints PID through a mounted ckptfs (writes its ctl file) and\n"
			       "prints the new snapshot's directory. --kill kills the process once the\n"
			       "snapshot is durable, --stop leaves it stopped. A progress bar is drawn\n"
			       "on a terminal.\n"
			       "\n"
			       "--every D sets a policy instead: the daemon checkpoints PID every D\n"
			       "(30s, 10m, 2h: from 1s to 720h), the process running on, and deletes\n"
			       "the policy's own snapshots beyond the newest K (--keep K, 1 to 1000,\n"
			       "default 3; snapshots taken otherwise are never deleted). The policy is\n"
			       "kept in the store and resumes when the daemon mounts it again; it stops\n"
			       "when the process exits. --every off removes it. The policy's lines\n"
			       "(policy, next, last, runs) are printed; 'ckpt status PID' shows them.\n",
			       checkpoint_usage);
			return EXIT_OK;
		default:
			return EXIT_USAGE;
		}
	}
	if (optind + 1 != argc || parse_u64(argv[optind], &pid) < 0 || pid == 0 || pid > INT32_MAX) {
		fprintf(stderr, "%s", checkpoint_usage);
		return EXIT_USAGE;
	}
	if (keep && !every) {
		fprintf(stderr, "ckpt: --keep goes with --every\n%s", checkpoint_usage);
		return EXIT_USAGE;
	}
	if (every && strcmp(cmd, "checkpoint\n")) {
		fprintf(stderr, "ckpt: a periodic checkpoint keeps the process running: --every takes no --kill or --stop\n");
		return EXIT_USAGE;
	}
	if (every && keep && !strcmp(every, "off")) {
		fprintf(stderr, "ckpt: --every off takes no --keep\n");
		return EXIT_USAGE;
	}
	if (mount_or_complain(given, &mnt) < 0)
		return EXIT_FAIL;
	if (every)
		return set_policy(mnt, pid, every, keep);
	if (asprintf(&ctl, "%s/%" PRIu64 "/ctl", mnt, pid) < 0 ||
	    asprintf(&status, "%s/%" PRIu64 "/status", mnt, pid) < 0)
		return EXIT_FAIL;
	w.fd = open(ctl, O_WRONLY | O_CLOEXEC);
	if (w.fd < 0) {
		fprintf(stderr, "ckpt: cannot open %s: %s\n", ctl, strerror(errno));
		return EXIT_FAIL;
	}
	w.cmd = cmd;
	/* The write blocks until the snapshot is durable; meanwhile status
	 * says how far it is. */
	if (pthread_create(&t, NULL, ctl_writer, &w) != 0) {
		close(w.fd);
		return EXIT_FAIL;
	}
	for (;;) {
		bool done;
		pthread_mutex_lock(&w.lock);
		done = w.done;
		pthread_mutex_unlock(&w.lock);
		if (done)
			break;
		if (tools_interactive()) {
			_cleanup_free_ char *text = NULL;
			char phase[64], prog[32], total[32];
			uint64_t d = 0, tot = 0;
			if (read_text(status, &text) >= 0) {
				status_get(text, "phase", phase, sizeof(phase));
				status_get(text, "progress", prog, sizeof(prog));
				status_get(text, "total", total, sizeof(total));
				parse_u64(prog, &d);
				parse_u64(total, &tot);
				if (strcmp(phase, "-"))
					tools_progress(phase, d, tot, false);
			}
		}
		usleep(100 * 1000);
	}
	pthread_join(t, NULL);
	close(w.fd);

	_cleanup_free_ char *text = NULL;
	char last[32] = "", err[512] = "";
	if (read_text(status, &text) >= 0) {
		status_get(text, "last_snapshot", last, sizeof(last));
		status_get(text, "last_error", err, sizeof(err));
	}
	if (w.result < 0) {
		if (tools_interactive())
			fputc('\n', stderr);
		fprintf(stderr, "ckpt: checkpoint of %" PRIu64 " failed: %s%s%s\n", pid, strerror(-w.result),
			*err && strcmp(err, "-") ? ": " : "", *err && strcmp(err, "-") ? err : "");
		return EXIT_FAIL;
	}
	if (tools_interactive())
		tools_progress("done", 1, 1, true);
	printf("%s/%" PRIu64 "/%s\n", mnt, pid, last);
	return EXIT_OK;
}

/* ---- ckpt ls ------------------------------------------------------------------ */

static bool all_digits(const char *s)
{
	if (!*s)
		return false;
	for (; *s; s++)
		if (*s < '0' || *s > '9')
			return false;
	return true;
}

/* Sums the sizes and data bytes of the files under dir. */
static void du(const char *dir, uint64_t *size, uint64_t *data, unsigned *files)
{
	DIR *d = opendir(dir);
	struct dirent *de;

	if (!d)
		return;
	while ((de = readdir(d))) {
		_cleanup_free_ char *p = NULL;
		struct stat st;
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (asprintf(&p, "%s/%s", dir, de->d_name) < 0 || lstat(p, &st) < 0)
			continue;
		if (S_ISDIR(st.st_mode)) {
			du(p, size, data, files);
		} else {
			*size += (uint64_t)st.st_size;
			*data += (uint64_t)st.st_blocks * 512;
			(*files)++;
		}
	}
	closedir(d);
}

static int cmp_num(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return (x > y) - (x < y);
}

static int list_numeric(const char *dir, uint64_t **ret, size_t *n)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	uint64_t *v = NULL;
	size_t cap = 0;

	*n = 0;
	if (!d)
		return negerrno();
	while ((de = readdir(d))) {
		uint64_t x;
		if (!all_digits(de->d_name) || parse_u64(de->d_name, &x) < 0)
			continue;
		if (*n == cap) {
			cap = cap ? cap * 2 : 64;
			uint64_t *nv = realloc(v, cap * sizeof(*v));
			if (!nv)
				break;
			v = nv;
		}
		v[(*n)++] = x;
	}
	closedir(d);
	qsort(v, *n, sizeof(*v), cmp_num);
	*ret = v;
	return 0;
}

static void ls_pid(const char *mnt, uint64_t pid, bool *header)
{
	_cleanup_free_ char *dir = NULL;
	_cleanup_free_ uint64_t *snaps = NULL;
	size_t n = 0;

	if (asprintf(&dir, "%s/%" PRIu64, mnt, pid) < 0 || list_numeric(dir, &snaps, &n) < 0)
		return;
	for (size_t i = 0; i < n; i++) {
		_cleanup_free_ char *sd = NULL;
		uint64_t size = 0, data = 0;
		unsigned files = 0;
		char a[32], b[32];
		struct stat st;

		if (asprintf(&sd, "%s/%" PRIu64, dir, snaps[i]) < 0 || stat(sd, &st) < 0)
			continue;
		du(sd, &size, &data, &files);
		if (!*header) {
			printf("%-16s %6s %10s %10s  %s\n", "SNAPSHOT", "FILES", "SIZE", "DATA", "PATH");
			*header = true;
		}
		char name[48];
		snprintf(name, sizeof(name), "%" PRIu64 "/%" PRIu64, pid, snaps[i]);
		printf("%-16s %6u %10s %10s  %s\n", name, files, fmt_bytes(size, a, sizeof(a)),
		       fmt_bytes(data, b, sizeof(b)), sd);
	}
}

static int print_snap(const struct store_snap_info *info, void *ud)
{
	char a[32], b[32], c[32];
	printf("%-24s %6u %10s %10s %10s\n", info->name, info->files, fmt_bytes(info->size, a, sizeof(a)),
	       fmt_bytes(info->allocated, b, sizeof(b)), fmt_bytes(info->stored, c, sizeof(c)));
	return 0;
}

int cmd_ls(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "mount", required_argument, NULL, 'm' },
		{ "store", required_argument, NULL, 'S' },
		{ "help", no_argument, NULL, 'h' },
		{},
	};
	const char *given = NULL, *store_dir = NULL;
	_cleanup_free_ char *mnt = NULL;
	bool header = false;
	int c;

	while ((c = getopt_long(argc, argv, "m:S:h", longopts, NULL)) != -1) {
		switch (c) {
		case 'm':
			given = optarg;
			break;
		case 'S':
			store_dir = optarg;
			break;
		case 'h':
			printf("Usage: ckpt ls [--mount DIR] [PID...]\n"
			       "       ckpt ls --store DIR\n"
			       "\n"
			       "Lists the snapshots a mounted ckptfs shows you (of the given pids, or\n"
			       "all), with their file count, logical size and data bytes; or, with\n"
			       "--store, every snapshot in a chunk store, without a mount.\n");
			return EXIT_OK;
		default:
			return EXIT_USAGE;
		}
	}
	if (store_dir) {
		struct store *s = NULL;
		struct store_options o = { .read_only = true };
		int r = store_open(store_dir, &o, &s);
		if (r < 0) {
			fprintf(stderr, "ckpt: cannot open store %s: %s\n", store_dir, *err_msg() ? err_msg() : strerror(-r));
			return EXIT_FAIL;
		}
		printf("%-24s %6s %10s %10s %10s\n", "SNAPSHOT", "FILES", "SIZE", "DATA", "STORED");
		r = store_foreach_snap(s, NULL, print_snap, NULL);
		store_close(s);
		return r < 0 ? EXIT_FAIL : EXIT_OK;
	}
	if (mount_or_complain(given, &mnt) < 0)
		return EXIT_FAIL;
	if (optind < argc) {
		for (int i = optind; i < argc; i++) {
			uint64_t pid;
			if (parse_u64(argv[i], &pid) < 0) {
				fprintf(stderr, "ckpt: '%s' is not a pid\n", argv[i]);
				return EXIT_USAGE;
			}
			ls_pid(mnt, pid, &header);
		}
	} else {
		_cleanup_free_ uint64_t *pids = NULL;
		size_t n = 0;
		if (list_numeric(mnt, &pids, &n) < 0) {
			fprintf(stderr, "ckpt: cannot list %s: %s\n", mnt, strerror(errno));
			return EXIT_FAIL;
		}
		for (size_t i = 0; i < n; i++)
			ls_pid(mnt, pids[i], &header);
	}
	if (!header)
		fprintf(stderr, "no snapshots\n");
	return EXIT_OK;
}

/* ---- ckpt status ------------------------------------------------------------------ */

int cmd_status(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "mount", required_argument, NULL, 'm' },
		{ "help", no_argument, NULL, 'h' },
		{},
	};
	const char *given = NULL;
	_cleanup_free_ char *mnt = NULL;
	int c;

	while ((c = getopt_long(argc, argv, "m:h", longopts, NULL)) != -1) {
		switch (c) {
		case 'm':
			given = optarg;
			break;
		case 'h':
			printf("Usage: ckpt status [--mount DIR] [PID...]\n"
			       "\n"
			       "Shows the checkpoint state of the given pids (all pids with snapshots,\n"
			       "a checkpoint running or a periodic policy, without arguments), each\n"
			       "policy's lines (policy, next, last, runs) under its pid, and the\n"
			       "restores under restore/, from a mounted ckptfs.\n");
			return EXIT_OK;
		default:
			return EXIT_USAGE;
		}
	}
	if (mount_or_complain(given, &mnt) < 0)
		return EXIT_FAIL;
	printf("mount: %s\n", mnt);

	_cleanup_free_ uint64_t *pids = NULL;
	size_t n = 0;
	if (optind < argc) {
		n = (size_t)(argc - optind);
		pids = calloc(n, sizeof(*pids));
		if (!pids)
			return EXIT_FAIL;
		for (size_t i = 0; i < n; i++)
			if (parse_u64(argv[optind + (int)i], &pids[i]) < 0) {
				fprintf(stderr, "ckpt: '%s' is not a pid\n", argv[optind + (int)i]);
				return EXIT_USAGE;
			}
	} else if (list_numeric(mnt, &pids, &n) < 0) {
		fprintf(stderr, "ckpt: cannot list %s: %s\n", mnt, strerror(errno));
		return EXIT_FAIL;
	}
	printf("%-8s %-14s %-8s %12s %9s  %s\n", "PID", "STATE", "PHASE", "PROGRESS", "LAST", "LAST ERROR");
	for (size_t i = 0; i < n; i++) {
		_cleanup_free_ char *path = NULL, *text = NULL;
		char state[32], phase[32], prog[32], last[32], err[512];
		uint64_t d = 0;

		if (asprintf(&path, "%s/%" PRIu64 "/status", mnt, pids[i]) < 0 || read_text(path, &text) < 0)
			continue;
		status_get(text, "state", state, sizeof(state));
		status_get(text, "phase", phase, sizeof(phase));
		status_get(text, "progress", prog, sizeof(prog));
		status_get(text, "last_snapshot", last, sizeof(last));
		status_get(text, "last_error", err, sizeof(err));
		parse_u64(prog, &d);
		char policy[512];
		status_get(text, "policy", policy, sizeof(policy));
		bool has_policy = *policy && strcmp(policy, "none");
		/* Without arguments, only pids with something to say. */
		if (optind >= argc && !strcmp(state, "idle") && !strcmp(last, "0") && !has_policy)
			continue;
		char pb[32];
		printf("%-8" PRIu64 " %-14s %-8s %12s %9s  %s\n", pids[i], state, phase, fmt_bytes(d, pb, sizeof(pb)),
		       last, err);
		/* A periodic policy: its lines, under its pid. */
		if (has_policy)
			print_status_lines(text, policy_keys, "         ");
	}

	/* Restores in progress or done. */
	_cleanup_free_ char *rdir = NULL;
	DIR *d;
	if (asprintf(&rdir, "%s/restore", mnt) >= 0 && (d = opendir(rdir))) {
		struct dirent *de;
		bool header = false;
		while ((de = readdir(d))) {
			_cleanup_free_ char *path = NULL, *text = NULL;
			if (de->d_name[0] == '.')
				continue;
			if (asprintf(&path, "%s/%s/status", rdir, de->d_name) < 0 || read_text(path, &text) < 0)
				continue;
			if (!header) {
				printf("\n%-20s %s\n", "RESTORE", "STATUS");
				header = true;
			}
			char *nl = strchr(text, '\n');
			if (nl)
				*nl = 0;
			printf("%-20s %s\n", de->d_name, text);
		}
		closedir(d);
	}
	return EXIT_OK;
}
