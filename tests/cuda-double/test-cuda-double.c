/*
 * The CUDA path of ckptfs, on any machine: `ckpt dump` and `ckpt restore`
 * of target-cuda, with the test double of the CUDA driver
 * (cuda-double.h) first on LD_LIBRARY_PATH of ckpt, its keeper, the
 * target and this test. One TCase per row of docs/COVERAGE.md's CUDA
 * part: dumps (running, --kill, --stop) and restores; a failure at each
 * step, the driver's or ours, leaving the process running on its GPU and
 * passing its own check; what is refused; the dumper killed between the
 * lock and the give-back (the keeper gives the GPU back); gpu/hbm/, the
 * device memory's own files, also where the kernel merged it with an
 * area of the process.
 * Every test has its own directory, which is also the double's (its
 * devices and socket names), so tests never see each other's processes.
 */
#include <check.h>
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "common/common.h"
#include "gpu/gpu.h"
#include "tests/integration/ckpt-run.h"
#include "tests/cuda-double/pattern.h"

#define MIB 8

static const char *ckpt_bin, *target_bin, *old_driver;

static void setup(void)
{
	case_begin("cuda");
	/* before our own first call into the double, which reads it once */
	setenv("CKPTFS_CUDA_DOUBLE_DIR", case_dir, 1);
}

static bool exists(const char *p)
{
	return access(p, F_OK) == 0;
}

/* Starts target-cuda (env: "NAME=VALUE" for it, or NULL; mode: its
 * fourth argument, or NULL) and waits for it to be ready. */
static pid_t spawn_mode(const char *env, const char *mode)
{
	pid_t pid = case_fork_quiet(-1, case_path("target.log"));
	if (pid == 0) {
		if (env)
			putenv((char *)env);
		char mib[16];
		snprintf(mib, sizeof(mib), "%d", MIB);
		execl(target_bin, "target-cuda", case_path("ready"), case_path("result"), mib, mode, (char *)NULL);
		_exit(127);
	}
	case_wait_file(case_path("ready"), 30000);
	return pid;
}

static pid_t spawn(const char *env)
{
	return spawn_mode(env, NULL);
}

/* Runs ckpt with up to four arguments; env ("NAME=VALUE", or NULL) and
 * fault (CKPTFS_FAULT) for it alone; its stdout into out (may be NULL),
 * stderr into DIR/ckpt.err. Returns the wait status. */
static int ckpt_status(const char *env, const char *fault, char *out, size_t outlen, const char *a1,
		       const char *a2, const char *a3, const char *a4)
{
	return ckpt_run(ckpt_bin, case_path("ckpt.err"), env, fault, out, outlen, a1, a2, a3, a4);
}

static int ckpt(const char *env, const char *fault, const char *a1, const char *a2, const char *a3,
		const char *a4)
{
	int st = ckpt_status(env, fault, NULL, 0, a1, a2, a3, a4);
	ck_assert_msg(WIFEXITED(st), "ckpt ended by signal %d", WIFSIGNALED(st) ? WTERMSIG(st) : 0);
	return WEXITSTATUS(st);
}

static const char *ckpt_err(void)
{
	return ckpt_run_err(case_path("ckpt.err"));
}

/* ckpt dump [mode] PID DIR/snap, which must succeed (or fail: ok false). */
static void dump_as(const char *env, const char *fault, pid_t pid, const char *mode, const char *snap, bool ok)
{
	char p[16];
	snprintf(p, sizeof(p), "%d", pid);
	int rc = mode ? ckpt(env, fault, "dump", mode, p, case_path(snap)) : ckpt(env, fault, "dump", p, case_path(snap), NULL);
	if (ok)
		ck_assert_msg(rc == 0, "ckpt dump %s: %s", mode ? mode : "", ckpt_err());
	else
		ck_assert_msg(rc != 0 && !exists(case_path(snap)), "ckpt dump %s should have failed", mode ? mode : "");
}

static pid_t restore_as(const char *env, const char *snap)
{
	char out[64];
	int st = ckpt_status(env, NULL, out, sizeof(out), "restore", case_path(snap), NULL, NULL);
	ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "ckpt restore: %s", ckpt_err());
	return atoi(out);
}

/* The process's CUDA state, as the driver tells it to us. */
static enum gpu_state state_of(pid_t pid)
{
	enum gpu_state st;
	int r = gpu_get_state(pid, &st);
	ck_assert_msg(r == 0, "pid %d: no CUDA state: %s", pid, err_msg());
	return st;
}

/* Waits (20 s at most) until pid's CUDA state is want. */
static void wait_state(pid_t pid, enum gpu_state want)
{
	enum gpu_state st = _GPU_STATE_MAX;
	for (int i = 0; i < 2000; i++) {
		if (gpu_get_state(pid, &st) == 0 && st == want)
			return;
		usleep(10000);
	}
	ck_abort_msg("pid %d: CUDA state %s, not %s", pid, gpu_state_name(st), gpu_state_name(want));
}

/* Tells pid it was restored (or may check itself) and takes its verdict. */
static void verdict(pid_t pid)
{
	verdict_wait(pid, case_path("ready.restored"), case_path("result"), 30000, "target-cuda");
}

/* Waits (20 s at most) for pid's group stop. */
static void assert_stopped(pid_t pid)
{
	char p[64], *st = NULL;
	snprintf(p, sizeof(p), "/proc/%d/stat", pid);
	for (int i = 0; i < 2000; i++) {
		free(st);
		st = NULL;
		if (read_file_full(p, &st, NULL) >= 0 && strstr(st, ") T "))
			break;
		usleep(10000);
	}
	ck_assert_msg(st && strstr(st, ") T "), "pid %d is not stopped: %s", pid, st);
	free(st);
}

static void kill_original(pid_t pid)
{
	int st;
	kill(pid, SIGKILL);
	ck_assert_int_eq(waitpid(pid, &st, 0), pid);
}

static void check_info(const char *snap, pid_t pid)
{
	char p[PATH_MAX + 64], *info = NULL;
	snprintf(p, sizeof(p), "%s/%d/gpu/info", case_path(snap), pid);
	ck_assert_msg(read_file_full(p, &info, NULL) >= 0, "no %d/gpu/info in the snapshot", pid);
	ck_assert_msg(strstr(info, "state_in_image: checkpointed\n") && strstr(info, "driver_version: 12080\n") &&
			      strstr(info, "device0_name: ckptfs CUDA driver double\n"),
		      "gpu/info: %s", info);
	free(info);
}

/* ---- dumps and restores -------------------------------------------- */

START_TEST(dump_running)
{
	pid_t pid = spawn(NULL);
	dump_as(NULL, NULL, pid, NULL, "s1", true);
	check_info("s1", pid);
	ck_assert_int_eq(state_of(pid), GPU_STATE_RUNNING);
	/* the original runs on with its device memory */
	verdict(pid);
}
END_TEST

/* A target dumped into DIR/s1 with --kill, and reaped. */
static pid_t spawn_dump_kill(void)
{
	pid_t pid = spawn(NULL);
	int st;
	dump_as(NULL, NULL, pid, "--kill", "s1", true);
	ck_assert_int_eq(waitpid(pid, &st, 0), pid);
	ck_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
	return pid;
}

START_TEST(dump_kill_restore)
{
	pid_t pid = spawn_dump_kill();
	check_info("s1", pid);
	ck_assert_int_eq(restore_as(NULL, "s1"), pid);
	ck_assert_int_eq(state_of(pid), GPU_STATE_RUNNING);
	verdict(pid);
}
END_TEST

/* A process that loaded the driver but never initialized CUDA, on a
 * host whose driver works: an ordinary dump (the driver says
 * CUDA_ERROR_NOT_INITIALIZED of it, as driver 580 does), no gpu/ in the
 * snapshot, and it restores. */
START_TEST(dump_no_cuda)
{
	char p[PATH_MAX + 64];
	int st;
	pid_t pid = spawn_mode(NULL, "nocuda");
	dump_as(NULL, NULL, pid, "--kill", "s1", true);
	ck_assert_int_eq(waitpid(pid, &st, 0), pid);
	snprintf(p, sizeof(p), "%s/%d/gpu", case_path("s1"), pid);
	ck_assert_msg(!exists(p), "%s in the snapshot of a process without CUDA", p);
	ck_assert_int_eq(restore_as(NULL, "s1"), pid);
	verdict(pid);
}
END_TEST

/* Left stopped and checkpointed on the GPU; given back by hand after
 * SIGCONT (as `cuda-checkpoint --toggle` would); and its snapshot
 * restores. */
START_TEST(dump_stop)
{
	pid_t pid = spawn(NULL);
	dump_as(NULL, NULL, pid, "--stop", "s1", true);
	assert_stopped(pid);
	/* the double's driver thread answers only while the process runs */
	kill(pid, SIGCONT);
	ck_assert_int_eq(state_of(pid), GPU_STATE_CHECKPOINTED);
	ck_assert_int_eq(gpu_restore(pid), 0);
	ck_assert_int_eq(gpu_unlock(pid), 0);
	ck_assert_int_eq(state_of(pid), GPU_STATE_RUNNING);
	/* the same process dumps again, and its first snapshot restores */
	dump_as(NULL, NULL, pid, NULL, "s2", true);
	kill_original(pid);
	ck_assert_int_eq(restore_as(NULL, "s1"), pid);
	verdict(pid);
}
END_TEST

/* ---- a failure at each step ---------------------------------------- */

/* The dump fails (env for ckpt: the driver's failure; fault: ours), the
 * process is RUNNING on its GPU and passes its own check. */
static void dump_fails(const char *target_env, const char *env, const char *fault, const char *mode,
		       const char *want)
{
	pid_t pid = spawn(target_env);
	dump_as(env, fault, pid, mode, "bad", false);
	ck_assert_msg(strstr(ckpt_err(), want), "the reason should name %s: %s", want, ckpt_err());
	ck_assert_int_eq(state_of(pid), GPU_STATE_RUNNING);
	verdict(pid);
}

START_TEST(fail_lock)
{
	dump_fails(NULL, "CKPTFS_CUDA_DOUBLE_FAIL=lock=999", NULL, NULL, "CUDA_ERROR_UNKNOWN");
}
END_TEST

START_TEST(fail_lock_after)
{
	/* locked, then an error: unlocked again */
	dump_fails(NULL, "CKPTFS_CUDA_DOUBLE_FAIL=lock=999@after", NULL, NULL, "cuCheckpointProcessLock");
}
END_TEST

START_TEST(fail_lock_timeout)
{
	dump_fails("CKPTFS_CUDA_DOUBLE_BUSY=1", NULL, NULL, NULL, "CUDA_ERROR_NOT_READY");
}
END_TEST

START_TEST(fail_checkpoint)
{
	dump_fails(NULL, "CKPTFS_CUDA_DOUBLE_FAIL=checkpoint=2", NULL, NULL, "CUDA_ERROR_OUT_OF_MEMORY");
}
END_TEST

START_TEST(fail_checkpoint_after)
{
	/* checkpointed, then an error: restored and unlocked */
	dump_fails(NULL, "CKPTFS_CUDA_DOUBLE_FAIL=checkpoint=999@after", NULL, "--kill", "CUDA_ERROR_UNKNOWN");
}
END_TEST

START_TEST(fault_gpu_lock)
{
	dump_fails(NULL, NULL, "300", NULL, "injected GPU lock failure");
}
END_TEST

START_TEST(fault_gpu_checkpoint)
{
	dump_fails(NULL, NULL, "301", NULL, "injected GPU checkpoint failure");
}
END_TEST

/* our failures once the GPU is checkpointed: seize, memory, write, commit */
START_TEST(fault_seize) { dump_fails(NULL, NULL, "200", NULL, "injected"); } END_TEST
START_TEST(fault_memory) { dump_fails(NULL, NULL, "202:3", NULL, "injected"); } END_TEST
START_TEST(fault_memory_kill) { dump_fails(NULL, NULL, "202:3", "--kill", "injected"); } END_TEST
START_TEST(fault_write) { dump_fails(NULL, NULL, "204", NULL, "injected"); } END_TEST
START_TEST(fault_commit_stop) { dump_fails(NULL, NULL, "205", "--stop", "injected"); } END_TEST

/* The give-back's restore or unlock fails once: tried again, the dump
 * succeeds and the process runs on. */
static void give_back_fails_once(const char *env, const char *fault)
{
	pid_t pid = spawn(NULL);
	dump_as(env, fault, pid, NULL, "s1", true);
	ck_assert_int_eq(state_of(pid), GPU_STATE_RUNNING);
	verdict(pid);
}

START_TEST(fail_restore_once) { give_back_fails_once("CKPTFS_CUDA_DOUBLE_FAIL=restore=999#1", NULL); } END_TEST
START_TEST(fail_unlock_once) { give_back_fails_once("CKPTFS_CUDA_DOUBLE_FAIL=unlock=999#1", NULL); } END_TEST
START_TEST(fault_gpu_restore) { give_back_fails_once(NULL, "302:1"); } END_TEST
START_TEST(fault_gpu_unlock) { give_back_fails_once(NULL, "303:1"); } END_TEST

/* A restore of s1 with env for ckpt fails naming want; nothing runs
 * (what was made was killed: we are its subreaper), and a second restore
 * works. */
static void restore_fails(const char *env, const char *want)
{
	pid_t pid = spawn_dump_kill();
	int st = ckpt_status(env, NULL, NULL, 0, "restore", case_path("s1"), NULL, NULL);
	ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) != 0, "the restore should have failed");
	ck_assert_msg(strstr(ckpt_err(), want), "the reason should say %s: %s", want, ckpt_err());
	if (waitpid(pid, &st, 0) == pid)
		ck_assert(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
	ck_assert_msg(kill(pid, 0) < 0 && errno == ESRCH, "a failed restore left pid %d", pid);
	ck_assert_int_eq(restore_as(NULL, "s1"), pid);
	verdict(pid);
}

/* The restore's cuCheckpointProcessRestore fails. */
START_TEST(restore_fails_gpu)
{
	restore_fails("CKPTFS_CUDA_DOUBLE_FAIL=restore=999", "cuCheckpointProcessRestore");
}
END_TEST

/* ---- refusals ------------------------------------------------------ */

/* Refused before the process is touched; it runs on. */
static void refused(pid_t pid, const char *env, const char *want)
{
	dump_as(env, NULL, pid, NULL, "bad", false);
	ck_assert_msg(strstr(ckpt_err(), want), "the reason should say %s: %s", want, ckpt_err());
}

START_TEST(refuse_no_driver)
{
	pid_t pid = spawn(NULL);
	refused(pid, "CKPTFS_CUDA_DOUBLE_FAIL=init=100", "uses an NVIDIA GPU, but the CUDA checkpoint API cannot");
	ck_assert_int_eq(state_of(pid), GPU_STATE_RUNNING);
	verdict(pid);
}
END_TEST

START_TEST(refuse_old_driver)
{
	static char env[PATH_MAX + 32];
	snprintf(env, sizeof(env), "LD_LIBRARY_PATH=%s", old_driver);
	pid_t pid = spawn(NULL);
	refused(pid, env, "has no cuCheckpointProcessGetState");
	ck_assert_int_eq(state_of(pid), GPU_STATE_RUNNING);
	verdict(pid);
}
END_TEST

START_TEST(refuse_locked)
{
	pid_t pid = spawn(NULL);
	ck_assert_int_eq(gpu_lock(pid, 10000), 0);
	refused(pid, NULL, "its CUDA state is locked, not running");
	ck_assert_int_eq(state_of(pid), GPU_STATE_LOCKED);
	ck_assert_int_eq(gpu_checkpoint(pid), 0);
	refused(pid, NULL, "its CUDA state is checkpointed, not running");
	ck_assert_int_eq(gpu_restore(pid), 0);
	ck_assert_int_eq(gpu_unlock(pid), 0);
	verdict(pid);
}
END_TEST

START_TEST(refuse_stopped)
{
	pid_t pid = spawn(NULL);
	kill(pid, SIGSTOP);
	refused(pid, NULL, "is stopped (SIGSTOP): a CUDA process must run");
	kill(pid, SIGCONT);
	ck_assert_int_eq(state_of(pid), GPU_STATE_RUNNING);
	verdict(pid);
}
END_TEST

/* The device's control file still open after the checkpoint step (a
 * driver that does not close it): the dump refuses it then, before the
 * freeze, and the process gets its GPU back and runs on. While it runs
 * with its GPU, that open character device is no reason to refuse:
 * every other dump here shows it. */
START_TEST(refuse_device_file_after_checkpoint)
{
	dump_fails("CKPTFS_CUDA_DOUBLE_KEEP_CTL=1", NULL, NULL, NULL, "after its GPU checkpoint step: fd ");
}
END_TEST

START_TEST(refuse_restore_without_driver)
{
	restore_fails("CKPTFS_CUDA_DOUBLE_FAIL=init=100",
		      "the snapshot holds CUDA state (gpu/info) but this machine has no usable");
}
END_TEST

/* ---- the dumper killed while it holds the GPU ----------------------- */

/* ckpt dump is SIGKILLed at fault (310: just locked, 311: just
 * checkpointed, 220: every thread frozen, 223: copying memory): the
 * keeper lets the threads go and gives the GPU back. */
static void dumper_dies(const char *fault, const char *mode)
{
	pid_t pid = spawn(NULL);
	char p[16];
	snprintf(p, sizeof(p), "%d", pid);
	int st = mode ? ckpt_status(NULL, fault, NULL, 0, "dump", mode, p, case_path("bad"))
		      : ckpt_status(NULL, fault, NULL, 0, "dump", p, case_path("bad"), NULL);
	ck_assert_msg(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL, "ckpt dump with fault %s: status 0x%x: %s", fault,
		      st, ckpt_err());
	wait_state(pid, GPU_STATE_RUNNING);
	ck_assert_msg(kill(pid, 0) == 0 && waitpid(pid, &st, WNOHANG) == 0, "pid %d is gone", pid);
	ck_assert(!exists(case_path("bad")));
	verdict(pid);
}

START_TEST(die_locked) { dumper_dies("310", NULL); } END_TEST
START_TEST(die_checkpointed) { dumper_dies("311", NULL); } END_TEST
START_TEST(die_seized) { dumper_dies("220", NULL); } END_TEST
START_TEST(die_memory_kill) { dumper_dies("223:2", "--kill"); } END_TEST

/* ---- gpu/hbm ------------------------------------------------------- */

struct range {
	unsigned long long s, e;
};

/* The [start, end) of each "START-END" name in directory d (NULL when
 * it does not exist) into r (room for max); how many. */
static size_t dir_ranges(const char *d, struct range *r, size_t max)
{
	DIR *dh = opendir(d);
	size_t n = 0;
	if (!dh)
		return 0;
	for (struct dirent *e; (e = readdir(dh));) {
		if (e->d_name[0] == '.')
			continue;
		ck_assert_msg(n < max && sscanf(e->d_name, "%llx-%llx", &r[n].s, &r[n].e) == 2, "%s/%s", d,
			      e->d_name);
		n++;
	}
	closedir(dh);
	return n;
}

/* Device memory in snapshot snap of pid, checked every way a reader
 * meets it: each hbm line of gpu/info names the file gpu/hbm/START-END
 * (offset 0), which holds exactly its bytes, read as plain bytes; its
 * size is the line's; gpu/hbm/ holds nothing else; its area is one line
 * of maps with at=gpu/hbm; no memory/ file overlaps it (not stored
 * twice). Exactly one area holds the pattern target-cuda wrote, whole,
 * and it is returned in *ret. */
static void hbm_check(const char *snap, pid_t pid, struct range *ret)
{
	char p[PATH_MAX + 64], *info = NULL, *maps = NULL;
	struct range hbm[16], mem[256], files[16];
	size_t nhbm = 0, nfiles, nmem, found = 0, want_len = (size_t)MIB << 20;
	_cleanup_free_ uint8_t *want = malloc(want_len);

	cuda_double_pattern(want, want_len, MIB);
	snprintf(p, sizeof(p), "%s/%d/gpu/info", case_path(snap), pid);
	ck_assert_int_ge(read_file_full(p, &info, NULL), 0);
	snprintf(p, sizeof(p), "%s/%d/maps", case_path(snap), pid);
	ck_assert_int_ge(read_file_full(p, &maps, NULL), 0);
	size_t nfile_lines = 0;
	for (char *l = strstr(info, "\nhbm: "); l; l = strstr(l + 1, "\nhbm: ")) {
		unsigned long long s, e, size, off;
		char file[128], name[128];
		ck_assert_int_eq(sscanf(l, "\nhbm: %llx-%llx %llu %127s %llu", &s, &e, &size, file, &off), 5);
		ck_assert_int_eq(e - s, size);
		ck_assert_uint_lt(nhbm, ARRAY_SIZE(hbm));
		hbm[nhbm++] = (struct range){ s, e };
		snprintf(name, sizeof(name), "gpu/hbm/%016llx-%016llx", s, e);
		char f[PATH_MAX + 256];
		snprintf(f, sizeof(f), "%s/%d/%s", case_path(snap), pid, name);
		/* "- 0" (every page zero, nothing saved) would be no device
		 * memory of target-cuda's, which all holds data: an area that
		 * only reserves addresses, say */
		ck_assert_msg(strcmp(file, "-"), "hbm %llx-%llx saved nothing: %s", s, e, info);
		nfile_lines++;
		ck_assert_msg(!strcmp(file, name) && off == 0, "hbm line names %s %llu, not %s 0", file, off, name);
		_cleanup_free_ char *bytes = NULL;
		size_t len = 0;
		ck_assert_msg(read_file_full(f, &bytes, &len) >= 0, "no %s", f);
		ck_assert_msg(len == size, "%s: %zu bytes, gpu/info says %llu", name, len, size);
		/* the area may hold other allocations too: the pattern's page */
		for (size_t at = 0; at + want_len <= size; at += 4096)
			if (!memcmp(bytes + at, want, want_len)) {
				found++;
				*ret = (struct range){ s, e };
			}
	}
	/* its line in maps, marked */
	size_t nat = 0;
	for (char *l = maps; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
		unsigned long long s, e;
		char *nl = strchr(l, '\n');
		bool at = strstr(l, " at=gpu/hbm ") && (!nl || strstr(l, " at=gpu/hbm ") < nl);
		ck_assert_int_eq(sscanf(l, "%llx-%llx", &s, &e), 2);
		nat += at;
		for (size_t i = 0; i < nhbm; i++)
			if (s < hbm[i].e && hbm[i].s < e)
				ck_assert_msg(at && s == hbm[i].s && e == hbm[i].e && !strncmp(strchr(l, ' '), " rw-p ", 6),
					      "maps: %llx-%llx, hbm %llx-%llx is not an area of its own, rw-p, marked at=gpu/hbm",
					      s, e, hbm[i].s, hbm[i].e);
	}
	ck_assert_msg(nat == nhbm, "maps has %zu areas at=gpu/hbm, gpu/info %zu hbm lines", nat, nhbm);
	snprintf(p, sizeof(p), "%s/%d/gpu/hbm", case_path(snap), pid);
	nfiles = dir_ranges(p, files, ARRAY_SIZE(files));
	ck_assert_msg(nfiles == nfile_lines, "gpu/hbm/ holds %zu files, gpu/info names %zu", nfiles, nfile_lines);
	snprintf(p, sizeof(p), "%s/%d/memory", case_path(snap), pid);
	nmem = dir_ranges(p, mem, ARRAY_SIZE(mem));
	ck_assert_uint_gt(nmem, 0);
	for (size_t i = 0; i < nmem; i++)
		for (size_t k = 0; k < nhbm; k++)
			ck_assert_msg(mem[i].e <= hbm[k].s || hbm[k].e <= mem[i].s,
				      "memory/%016llx-%016llx holds device memory %llx-%llx too", mem[i].s, mem[i].e,
				      hbm[k].s, hbm[k].e);
	ck_assert_msg(found == 1, "%zu hbm areas hold the %d MiB pattern: %s", found, MIB, info);
	free(info);
	free(maps);
}

/* Device memory under gpu/hbm/ of a snapshot of a running process (its
 * bytes from the copy in RAM), and the snapshot restores. */
START_TEST(hbm_shows_device_memory)
{
	struct range r;
	pid_t pid = spawn(NULL);
	dump_as(NULL, NULL, pid, NULL, "s1", true);
	hbm_check("s1", pid, &r);
	ck_assert_int_eq(ckpt(NULL, NULL, "verify", case_path("s1"), NULL, NULL), 0);
	kill_original(pid);
	ck_assert_int_eq(restore_as(NULL, "s1"), pid);
	ck_assert_int_eq(state_of(pid), GPU_STATE_RUNNING);
	verdict(pid);
}
END_TEST

/* The host copies mapped right above an area of the target's: the kernel
 * merges them into one area (seen in the process, left checkpointed by
 * --stop), which the snapshot splits: the device memory in gpu/hbm/, the
 * target's own part in memory/. Restored, the target finds both. */
START_TEST(hbm_split_merged_area)
{
	struct range r, live = { 0, 0 };
	char p[PATH_MAX + 64], *maps = NULL;
	pid_t pid = spawn_mode(NULL, "merge");
	dump_as(NULL, NULL, pid, "--stop", "s1", true);
	assert_stopped(pid);
	hbm_check("s1", pid, &r);
	/* the process's area holding it, as the kernel has it */
	snprintf(p, sizeof(p), "/proc/%d/maps", pid);
	ck_assert_int_ge(read_file_full(p, &maps, NULL), 0);
	for (char *l = maps; l && *l && !live.e; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL)
		if (sscanf(l, "%llx-%llx", &live.s, &live.e) == 2 && !(live.s <= r.s && r.s < live.e))
			live.e = 0;
	ck_assert_msg(live.e, "no area of pid %d holds %llx:\n%s", pid, r.s, maps);
	ck_assert_msg(live.s < r.s && r.e <= live.e,
		      "gpu/hbm/ has %llx-%llx, the process the area %llx-%llx: not split from the area below "
		      "(or the kernel did not merge them)",
		      r.s, r.e, live.s, live.e);
	/* the target's own part: in memory/ */
	snprintf(p, sizeof(p), "%s/%d/memory/%016llx-%016llx", case_path("s1"), pid, live.s, r.s);
	ck_assert_msg(exists(p), "no %s", p);
	free(maps);
	kill_original(pid);
	ck_assert_int_eq(restore_as(NULL, "s1"), pid);
	ck_assert_int_eq(state_of(pid), GPU_STATE_RUNNING);
	verdict(pid);
}
END_TEST

/* Writing a gpu/hbm/ file fails (fault 312), with --kill (the process
 * frozen and checkpointed meanwhile): it runs on with its GPU. */
START_TEST(fault_hbm_write)
{
	dump_fails(NULL, NULL, "312", "--kill", "gpu/hbm/");
}
END_TEST

/* The dumper dies writing a gpu/hbm/ file (fault 313): the keeper lets
 * the process go and gives its GPU back. */
START_TEST(die_hbm_write) { dumper_dies("313", "--kill"); } END_TEST

static TCase *tc(const char *name, const TTest *t, int timeout)
{
	TCase *c = tcase_create(name);
	tcase_add_checked_fixture(c, setup, case_end);
	tcase_set_timeout(c, timeout);
	tcase_add_test(c, t);
	return c;
}

int main(void)
{
	if (geteuid() != 0) {
		printf("SKIP: needs root (ptrace, clone3 with set_tid, PR_SET_MM_MAP)\n");
		return 77;
	}
	ckpt_bin = getenv("CKPT");
	target_bin = getenv("CUDA_TARGET");
	old_driver = getenv("CUDA_DOUBLE_OLD");
	if (!ckpt_bin || !target_bin || !old_driver) {
		printf("CKPT, CUDA_TARGET and CUDA_DOUBLE_OLD must be set (meson test does)\n");
		return 1;
	}
	Suite *s = suite_create("cuda-double");
#define T(name, timeout) suite_add_tcase(s, tc(#name, name, timeout))
	T(dump_running, 60);
	T(dump_kill_restore, 60);
	T(dump_stop, 90);
	T(dump_no_cuda, 60);
	T(fail_lock, 60);
	T(fail_lock_after, 60);
	T(fail_lock_timeout, 60);
	T(fail_checkpoint, 60);
	T(fail_checkpoint_after, 60);
	T(fault_gpu_lock, 60);
	T(fault_gpu_checkpoint, 60);
	T(fault_seize, 60);
	T(fault_memory, 60);
	T(fault_memory_kill, 60);
	T(fault_write, 60);
	T(fault_commit_stop, 60);
	T(fail_restore_once, 60);
	T(fail_unlock_once, 60);
	T(fault_gpu_restore, 60);
	T(fault_gpu_unlock, 60);
	T(restore_fails_gpu, 90);
	T(refuse_no_driver, 60);
	T(refuse_old_driver, 60);
	T(refuse_locked, 60);
	T(refuse_stopped, 60);
	T(refuse_restore_without_driver, 90);
	T(refuse_device_file_after_checkpoint, 60);
	T(die_locked, 60);
	T(die_checkpointed, 60);
	T(die_seized, 60);
	T(die_memory_kill, 60);
	T(hbm_shows_device_memory, 60);
	T(hbm_split_merged_area, 90);
	T(fault_hbm_write, 60);
	T(die_hbm_write, 60);
#undef T
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
