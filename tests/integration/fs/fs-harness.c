/*
 * The harness of the ckptfs integration tests (see fs-harness.h).
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tests/integration/exe-copy.h"
#include "tests/integration/fs/fs-harness.h"

struct harness H;
static bool atexit_done;
/* The copies of harness_exes_for_others(), "" when none. */
static char exes[PATH_MAX];

static const char *env_or(const char *name, const char *def)
{
	const char *v = getenv(name);
	return v && *v ? v : def;
}

void harness_require(void)
{
	if (geteuid() != 0) {
		printf("SKIP: the ckptfs integration tests need root (ptrace of targets, mounts)\n");
		exit(77);
	}
	if (access("/dev/fuse", R_OK | W_OK) != 0) {
		printf("SKIP: no usable /dev/fuse: %s\n", strerror(errno));
		exit(77);
	}
	if (system("command -v fusermount3 >/dev/null 2>&1") != 0) {
		printf("SKIP: fusermount3 is not installed\n");
		exit(77);
	}
	if (access(env_or("CKPTFS", ""), X_OK) != 0 || access(env_or("CKPT", ""), X_OK) != 0) {
		printf("SKIP: $CKPTFS and $CKPT must name the built binaries\n");
		exit(77);
	}
}

static void exes_remove(void)
{
	exe_copy_remove(exes);
}

int harness_exes_for_others(const char *const *vars)
{
	const char *paths[8] = { 0 };
	size_t n = 0;
	char copy[PATH_MAX];
	const char *run;
	int r;

	if (exes[0])
		return -EEXIST;
	for (; vars[n]; n++) {
		if (n == sizeof(paths) / sizeof(paths[0]))
			return -E2BIG;
		paths[n] = getenv(vars[n]);
		if (!paths[n] || !*paths[n]) {
			fprintf(stderr, "$%s is not set\n", vars[n]);
			return -EINVAL;
		}
	}
	/* Inside the run's dir where there is one: harness_sweep() then
	 * removes them even after a failed assertion, which leaves with
	 * _exit() and no atexit handler. The run's dir opens to others for
	 * that (as allow_other opens it for the user's files). */
	run = getenv("CKPTFS_TEST_RUN");
	if (run && *run && chmod(run, 0755) < 0)
		return -errno;
	r = exe_copy(run && *run ? run : NULL, paths, n, exes);
	if (r < 0)
		return r;
	atexit(exes_remove);
	for (size_t i = 0; i < n; i++) {
		r = exe_copy_path(exes, paths[i], copy);
		if (r < 0)
			return r;
		if (setenv(vars[i], copy, 1) < 0)
			return -errno;
	}
	return 0;
}

static void sleep_ms(unsigned ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000 };
	nanosleep(&ts, NULL);
}

bool harness_mounted(const char *dir)
{
	FILE *f = fopen("/proc/mounts", "re");
	char line[4096];
	bool found = false;

	if (!f)
		return false;
	while (!found && fgets(line, sizeof(line), f)) {
		char dev[1024], mnt[1024], type[256];
		if (sscanf(line, "%1023s %1023s %255s", dev, mnt, type) == 3 && !strcmp(mnt, dir) &&
		    !strcmp(type, "fuse.ckptfs"))
			found = true;
	}
	fclose(f);
	return found;
}

static pid_t start_daemon(bool dir_backend)
{
	char opt[768];
	pid_t pid;

	snprintf(opt, sizeof(opt), "store=%s%s%s%s", H.store, dir_backend ? ",backend=dir" : "", H.opts[0] ? "," : "",
		 H.opts);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		char log[400];
		snprintf(log, sizeof(log), "%s/daemon.log", H.base);
		int fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
		if (fd >= 0) {
			dup2(fd, 2);
			dup2(fd, 1);
		}
		execl(getenv("CKPTFS"), "ckptfs", "-f", "-o", opt, H.mnt, (char *)NULL);
		_exit(127);
	}
	return pid;
}

static bool mount_with(bool dir_backend)
{
	int status;

	char readme[400];

	/* A dead mount left on the directory (kill -9) goes first. */
	for (int i = 0; i < 100 && harness_mounted(H.mnt); i++) {
		char cmd[1024];
		snprintf(cmd, sizeof(cmd), "fusermount3 -uz '%s' 2>/dev/null", H.mnt);
		if (system(cmd) != 0)
			sleep_ms(10);
	}
	snprintf(readme, sizeof(readme), "%s/README", H.mnt);
	H.daemon = start_daemon(dir_backend);
	H.dir_backend = dir_backend;
	for (int i = 0; i < 500; i++) {
		if (harness_mounted(H.mnt) && access(readme, R_OK) == 0)
			return true;
		if (waitpid(H.daemon, &status, WNOHANG) == H.daemon) {
			H.daemon = 0;
			return false;
		}
		sleep_ms(10);
	}
	return false;
}

static void at_exit(void)
{
	harness_teardown();
}

void harness_dirs(void)
{
	const char *run = getenv("CKPTFS_TEST_RUN");
	snprintf(H.base, sizeof(H.base), "%s/t.XXXXXX", run && *run ? run : "/tmp");
	ck_assert_ptr_nonnull(mkdtemp(H.base));
	snprintf(H.mnt, sizeof(H.mnt), "%s/mnt", H.base);
	snprintf(H.store, sizeof(H.store), "%s/store", H.base);
	snprintf(H.work, sizeof(H.work), "%s/work", H.base);
	ck_assert_int_eq(mkdir(H.mnt, 0755), 0);
	ck_assert_int_eq(mkdir(H.work, 0755), 0);
	if (!atexit_done) {
		atexit(at_exit);
		atexit_done = true;
	}
}

void harness_mount(void)
{
	harness_dirs();
	/* The chunk store is the daemon's own; the directory backend
	 * stands in where the chunk store is not built. */
	if (!mount_with(false)) {
		ck_assert_msg(mount_with(true), "ckptfs did not mount; see %s/daemon.log", H.base);
		fprintf(stderr, "note: chunk store unavailable, testing with -o backend=dir\n");
	}
}

void harness_remount(void)
{
	ck_assert_msg(mount_with(H.dir_backend), "ckptfs did not mount again; see %s/daemon.log", H.base);
}

int harness_umount(void)
{
	int status = 0, ret = -1;
	char cmd[1024];

	if (!H.mnt[0])
		return 0;
	if (harness_mounted(H.mnt)) {
		snprintf(cmd, sizeof(cmd), "fusermount3 -u '%s' 2>/dev/null || fusermount3 -uz '%s' 2>/dev/null", H.mnt,
			 H.mnt);
		if (system(cmd) != 0) {
		}
	}
	if (H.daemon > 0) {
		for (int i = 0; i < 500; i++) {
			pid_t r = waitpid(H.daemon, &status, WNOHANG);
			if (r == H.daemon) {
				ret = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
				H.daemon = 0;
				break;
			}
			if (r < 0) {
				H.daemon = 0;
				break;
			}
			sleep_ms(10);
		}
		if (H.daemon > 0) {
			kill(H.daemon, SIGKILL);
			waitpid(H.daemon, NULL, 0);
			H.daemon = 0;
			snprintf(cmd, sizeof(cmd), "fusermount3 -uz '%s' 2>/dev/null", H.mnt);
			if (system(cmd) != 0) {
			}
		}
	}
	return ret;
}

void harness_teardown(void)
{
	char cmd[1024];

	if (!H.base[0])
		return;
	harness_umount();
	/* Targets left behind by a failed test (a restored one has the
	 * same pid). */
	for (unsigned i = 0; i < H.ntargets; i++)
		kill(H.targets[i], SIGKILL);
	H.ntargets = 0;
	exes_remove();
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", H.base);
	if (system(cmd) != 0) {
	}
	H.base[0] = 0;
	H.mnt[0] = 0;
}

void harness_begin(void)
{
	static char run[64];

	snprintf(run, sizeof(run), "/tmp/ckptfs-test.XXXXXX");
	if (!mkdtemp(run)) {
		printf("cannot make a temp dir: %s\n", strerror(errno));
		exit(1);
	}
	setenv("CKPTFS_TEST_RUN", run, 1);
}

void harness_sweep(void)
{
	const char *run = getenv("CKPTFS_TEST_RUN");
	char cmd[1024];

	if (!run || !*run)
		return;
	/* What a test that died before its teardown left: its targets (by
	 * the pids they wrote), its mounts, its files. */
	snprintf(cmd, sizeof(cmd),
		 "for a in %s/*/work/*/addr; do test -s \"$a\" && kill -9 $(cut -d' ' -f2 \"$a\") 2>/dev/null; done; "
		 "grep ' fuse.ckptfs ' /proc/mounts | cut -d' ' -f2 | grep '^%s/' | while read m; do fusermount3 -uz \"$m\"; done; "
		 "rm -rf %s",
		 run, run, run);
	if (system(cmd) != 0) {
	}
}

static int run(char **out, const char *fmt, va_list ap)
{
	char *cmd = NULL, *full = NULL;
	int status;

	if (vasprintf(&cmd, fmt, ap) < 0)
		return -1;
	if (asprintf(&full, "MNT='%s' STORE='%s' WORK='%s' CKPT='%s'; export MNT STORE WORK CKPT; %s", H.mnt,
		     H.store, H.work, env_or("CKPT", "ckpt"), cmd) < 0) {
		free(cmd);
		return -1;
	}
	free(cmd);
	if (!out) {
		status = system(full);
	} else {
		FILE *p = popen(full, "r");
		size_t len = 0, cap = 4096;
		char *buf = malloc(cap);
		if (!p || !buf) {
			free(buf);
			free(full);
			*out = strdup("");
			return -1;
		}
		for (;;) {
			size_t n = fread(buf + len, 1, cap - len - 1, p);
			len += n;
			if (n == 0)
				break;
			if (cap - len < 2) {
				cap *= 2;
				buf = realloc(buf, cap);
			}
		}
		buf[len] = 0;
		*out = buf;
		status = pclose(p);
	}
	free(full);
	if (status < 0)
		return -1;
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

int sh(const char *fmt, ...)
{
	va_list ap;
	int r;

	va_start(ap, fmt);
	r = run(NULL, fmt, ap);
	va_end(ap);
	return r;
}

char *sh_out(const char *fmt, ...)
{
	va_list ap;
	char *out = NULL;

	va_start(ap, fmt);
	run(&out, fmt, ap);
	va_end(ap);
	return out;
}

bool wait_file(const char *path, unsigned ms)
{
	for (unsigned i = 0; i < ms / 10 + 1; i++) {
		if (access(path, F_OK) == 0)
			return true;
		sleep_ms(10);
	}
	return false;
}

pid_t target_start(char *dir)
{
	return target_start_file(dir, NULL);
}

pid_t target_start_file(char *dir, const char *file)
{
	static int count;
	char addr[PATH_MAX];
	pid_t pid;

	snprintf(dir, PATH_MAX, "%s/t%d", H.work, count++);
	ck_assert_int_eq(mkdir(dir, 0755), 0);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		execl(getenv("FS_TARGET"), "fs-target", dir, file, (char *)NULL);
		_exit(127);
	}
	if (H.ntargets < sizeof(H.targets) / sizeof(H.targets[0]))
		H.targets[H.ntargets++] = pid;
	snprintf(addr, sizeof(addr), "%s/addr", dir);
	ck_assert_msg(wait_file(addr, 5000), "the target did not start");
	return pid;
}

void target_kill(pid_t pid)
{
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
}

char *restore_wait(const char *name, unsigned ms)
{
	char path[600];
	char *line = NULL;

	snprintf(path, sizeof(path), "%s/restore/%s/status", H.mnt, name);
	for (unsigned i = 0; i < ms / 20 + 1; i++) {
		FILE *f = fopen(path, "re");
		char buf[1024] = "";
		if (f) {
			if (!fgets(buf, sizeof(buf), f))
				buf[0] = 0;
			fclose(f);
		}
		buf[strcspn(buf, "\n")] = 0;
		free(line);
		line = strdup(buf);
		/* "restoring: waiting for pid N ..." goes on too */
		if (strcmp(buf, "receiving") && strcmp(buf, "verifying") && strncmp(buf, "restoring", 9) && *buf)
			break;
		sleep_ms(20);
	}
	return line;
}

char *target_verdict(const char *dir)
{
	char path[PATH_MAX + 16];

	snprintf(path, sizeof(path), "%s/go", dir);
	ck_assert_int_eq(sh("touch '%s'", path), 0);
	snprintf(path, sizeof(path), "%s/verdict", dir);
	if (!wait_file(path, 5000))
		return sh_out("echo no verdict; ls %s; grep -E 'State|Tracer|Sig' /proc/$(cut -d' ' -f2 %s/addr)/status", dir, dir);
	return sh_out("cat '%s'", path);
}

void restore_assert_running(const char *name, pid_t pid, int processes, unsigned ms)
{
	char want[96];
	char *s = restore_wait(name, ms);

	snprintf(want, sizeof(want), "running pid=%d processes=%d", pid, processes);
	if (strcmp(s, want)) {
		char *log = sh_out("grep -A40 -m1 ERROR '%s/daemon.log' || tail -20 '%s/daemon.log'", H.base, H.base);
		ck_abort_msg("restore status '%s', want '%s'; daemon log:\n%s", s, want, log);
	}
	free(s);
}

void restore_copy_verdict(pid_t pid, long n, const char *dir)
{
	ck_assert_int_eq(sh("cp -r \"$MNT/%d/%ld\" \"$WORK/copy\" && \"$CKPT\" verify \"$WORK/copy\" >/dev/null", pid, n),
			 0);
	target_kill(pid);
	ck_assert_int_eq(sh("cp -r \"$WORK/copy\" \"$MNT/restore/back\""), 0);
	restore_assert_running("back", pid, 1, 20000);
	char *s = target_verdict(dir);
	ck_assert_str_eq(s, "ok\n");
	free(s);
}

static void case_setup(void)
{
	harness_mount();
}

static void add_case(Suite *s, const char *name, const TTest *t, int timeout, SFun setup)
{
	TCase *tc = tcase_create(name);

	tcase_add_checked_fixture(tc, setup, harness_teardown);
	tcase_set_timeout(tc, timeout);
	tcase_add_test(tc, t);
	suite_add_tcase(s, tc);
}

void harness_add(Suite *s, const char *name, const TTest *t, int timeout)
{
	add_case(s, name, t, timeout, case_setup);
}

void harness_add_unmounted(Suite *s, const char *name, const TTest *t, int timeout)
{
	add_case(s, name, t, timeout, harness_dirs);
}

int harness_run(Suite *s)
{
	SRunner *sr = srunner_create(s);
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	harness_sweep();
	return failed ? 1 : 0;
}
