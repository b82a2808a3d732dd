/*
 * ckptfs run by a normal user (nobody), through fusermount3: the user
 * mounts and sees their own processes only; a checkpoint and a restore
 * work where the daemon has CAP_CHECKPOINT_RESTORE, and otherwise fail
 * with a permission error that status spells out, as docs/FS.md says.
 *
 * Where /dev/fuse is not open to everyone (0600 in some containers and CI
 * machines; Debian's default is 0666), the test makes it so for itself
 * alone, without changing the host: in a private mount namespace it
 * bind-mounts a 0666 node of the same device (10, 229) over /dev/fuse.
 * Everything after runs in that namespace: the daemon as the user, the
 * setuid fusermount3 it calls (which opens /dev/fuse too), the shell
 * commands. Skips (77) where even that is not possible (no
 * CAP_SYS_ADMIN, a nodev temp dir) or no setuid fusermount3 mounts.
 *
 * The user runs copies of ckptfs, ckpt and fs-target in a directory of
 * their reach (exe-copy.h), not the build's: a checkout in a directory
 * of mode 0700 is no reason to skip.
 */
#include <check.h>
#include <limits.h>
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/common.h"
#include "tests/integration/fs/fs-harness.h"

#define USER_UID 65534

static char base[64];
static char devdir[64];

/* Makes /dev/fuse open to the user in a mount namespace of our own (see
 * the top). 0 done or not needed, else why not, printed. */
static int fuse_for_user(void)
{
	char node[96];
	struct statvfs sv;
	struct stat st;

	if (stat("/dev/fuse", &st) < 0) {
		printf("SKIP: no /dev/fuse: %s\n", strerror(errno));
		return -1;
	}
	if ((st.st_mode & 0006) == 0006)
		return 0;
	snprintf(devdir, sizeof(devdir), "/tmp/ckptfs-fusedev.XXXXXX");
	if (!mkdtemp(devdir)) {
		printf("SKIP: cannot make a temp dir: %s\n", strerror(errno));
		return -1;
	}
	if (statvfs(devdir, &sv) < 0 || (sv.f_flag & ST_NODEV)) {
		printf("SKIP: /dev/fuse is %04o and %s is nodev: nowhere to make a device node\n",
		       (unsigned)(st.st_mode & 07777), devdir);
		return -1;
	}
	/* Private propagation first: the bind mount, and the FUSE mounts
	 * after it, stay in this namespace. */
	if (unshare(CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0) {
		printf("SKIP: /dev/fuse is %04o and no private mount namespace: %s\n",
		       (unsigned)(st.st_mode & 07777), strerror(errno));
		return -1;
	}
	snprintf(node, sizeof(node), "%s/fuse", devdir);
	if (mknod(node, S_IFCHR | 0666, st.st_rdev) < 0 || chmod(node, 0666) < 0 ||
	    mount(node, "/dev/fuse", NULL, MS_BIND, NULL) < 0) {
		printf("SKIP: /dev/fuse is %04o and a 0666 node cannot be bound over it: %s\n",
		       (unsigned)(st.st_mode & 07777), strerror(errno));
		return -1;
	}
	return 0;
}

static void fuse_for_user_cleanup(void)
{
	char node[96];

	if (!devdir[0])
		return;
	snprintf(node, sizeof(node), "%s/fuse", devdir);
	unlink(node);
	rmdir(devdir);
}

/* Runs a shell command as the normal user, in base. */
static int as_user(const char *fmt, const char *arg)
{
	char cmd[4096], inner[3072];
	snprintf(inner, sizeof(inner), fmt, arg ? arg : "");
	snprintf(cmd, sizeof(cmd),
		 "cd %s && setpriv --reuid=%d --regid=%d --clear-groups env B=%s CKPTFS='%s' CKPT='%s' T='%s' sh -c '%s'",
		 base, USER_UID, USER_UID, base, getenv("CKPTFS"), getenv("CKPT"), getenv("FS_TARGET"), inner);
	int s = system(cmd);
	return WIFEXITED(s) ? WEXITSTATUS(s) : 128;
}

static void user_unmount(void)
{
	char cmd[512];
	/* The target, by its pid (a restored one has the same). */
	snprintf(cmd, sizeof(cmd),
		 "fusermount3 -uz %s/m 2>/dev/null; test -s %s/t/addr && kill -9 $(cut -d' ' -f2 %s/t/addr) 2>/dev/null; rm -rf %s",
		 base, base, base, base);
	if (system(cmd) != 0) {
	}
}

static bool user_mount(void)
{
	if (as_user("mkdir -p $B/m $B/t && ($CKPTFS -f -o store=$B/store $B/m > $B/log 2>&1 &) ; "
		    "for i in $(seq 300); do test -e $B/m/README && exit 0; sleep 0.01; done; exit 1", NULL) == 0)
		return true;
	return false;
}

/* A fresh directory of the user's for a case. */
static void fresh_base(void)
{
	ck_assert_ptr_nonnull(mkdtemp(strcpy(base, "/tmp/ckptfs-user.XXXXXX")));
	ck_assert_int_eq(chown(base, USER_UID, USER_UID), 0);
}

/* The user's daemon: checkpoint, cp -r out, restore. With capable (the
 * daemon's copy has CAP_CHECKPOINT_RESTORE, as README says a user's
 * daemon needs) both must work; without, each may fail with EPERM, which
 * status must spell out. */
static void user_roundtrip(bool capable)
{
	char *out;

	ck_assert(user_mount());
	/* The user sees their own process, not others' (init). */
	ck_assert_int_eq(as_user("($T $B/t &) ; for i in $(seq 300); do test -s $B/t/addr && break; sleep 0.01; done; "
				 "P=$(cut -d\" \" -f2 $B/t/addr); ls $B/m | grep -qx $P && grep -q ckptfs $B/m/README",
				 NULL),
			 0);
	ck_assert_int_ne(as_user("test -e $B/m/1", NULL), 0);
	/* Checkpoint: the engine reads /proc/PID/map_files, which takes
	 * CAP_CHECKPOINT_RESTORE; without it the write fails and status
	 * says why (docs/FS.md). */
	if (as_user("P=$(cut -d\" \" -f2 $B/t/addr); echo checkpoint > $B/m/$P/ctl 2>/dev/null", NULL) != 0) {
		ck_assert_msg(!capable, "the capable daemon's checkpoint failed");
		ck_assert_int_eq(as_user("P=$(cut -d\" \" -f2 $B/t/addr); grep -q \"^last_error: Operation not permitted\" $B/m/$P/status", NULL), 0);
		printf("note: ckptfs has no CAP_CHECKPOINT_RESTORE here: the checkpoint was refused with EPERM, "
		       "as documented; checkpoint and restore were not tried\n");
		return;
	}
	ck_assert_int_eq(as_user("P=$(cut -d\" \" -f2 $B/t/addr); "
				 "grep -q \"^rip 0x\" $B/m/$P/1/$P/regs/* && cp -r $B/m/$P/1 $B/copy && $CKPT verify $B/copy >/dev/null",
				 NULL),
			 0);
	/* Restore: works with CAP_CHECKPOINT_RESTORE, else says why. The
	 * original goes first, reaped by us (its subreaper) so that its PID
	 * is free: init need not reap promptly. */
	char addr[128];
	int tpid = 0;
	snprintf(addr, sizeof(addr), "%s/t/addr", base);
	FILE *a = fopen(addr, "re");
	ck_assert_ptr_nonnull(a);
	ck_assert_int_eq(fscanf(a, "%*s %d", &tpid), 1);
	fclose(a);
	ck_assert_int_eq(as_user("kill -9 $(cut -d\" \" -f2 $B/t/addr)", NULL), 0);
	ck_assert_int_eq(waitpid(tpid, NULL, 0), tpid);
	ck_assert_int_eq(as_user("cp -r $B/copy $B/m/restore/r && "
				 "for i in $(seq 200); do s=$(head -1 $B/m/restore/r/status); "
				 "case $s in receiving|verifying|restoring) sleep 0.05;; *) break;; esac; done; "
				 "echo \"$s\" > $B/rstatus",
				 NULL),
			 0);
	char path[128];
	snprintf(path, sizeof(path), "cat %s/rstatus", base);
	FILE *p = popen(path, "r");
	char line[512] = "";
	ck_assert_ptr_nonnull(p);
	if (!fgets(line, sizeof(line), p))
		line[0] = 0;
	pclose(p);
	out = line;
	char want[64];
	snprintf(want, sizeof(want), "running pid=%d processes=1", tpid);
	if (capable) {
		/* back with its pid, as the user it was */
		char st[64], *status = NULL, uid[64];
		ck_assert_msg(!strncmp(out, want, strlen(want)), "restore by the capable daemon: '%s'", out);
		snprintf(st, sizeof(st), "/proc/%d/status", tpid);
		ck_assert_int_eq(read_file_full(st, &status, NULL), 0);
		snprintf(uid, sizeof(uid), "\nUid:\t%d\t%d\t%d\t%d\n", USER_UID, USER_UID, USER_UID, USER_UID);
		ck_assert_msg(strstr(status, uid), "the restored process: %s", status);
		free(status);
	}
	ck_assert_msg(!strncmp(out, "running pid=", 12) ||
			      (!strncmp(out, "failed: ", 8) &&
			       (strstr(out, "not permitted") || strstr(out, "EPERM") || strstr(out, "ermission"))),
		      "restore as a normal user: '%s'", out);
	printf("note: restore as uid %d: %s", USER_UID, out);
}

START_TEST(test_user_roundtrip)
{
	fresh_base();
	user_roundtrip(false);
	user_unmount();
}
END_TEST

START_TEST(test_user_roundtrip_capable)
{
	char cmd[PATH_MAX + 64];
	snprintf(cmd, sizeof(cmd), "setcap cap_checkpoint_restore+ep '%s'", getenv("CKPTFS"));
	if (system("command -v setcap >/dev/null") != 0 || system(cmd) != 0) {
		printf("note: no setcap here (libcap2-bin): the capable daemon was not tried\n");
		return;
	}
	fresh_base();
	user_roundtrip(true);
	user_unmount();
}
END_TEST

int main(void)
{
	harness_require();
	/* the user's processes are orphans (started with "&" in a subshell):
	 * we reap them, not init (see the restore in the test) */
	if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) < 0)
		return 1;
	if (fuse_for_user() < 0) {
		fuse_for_user_cleanup();
		return 77;
	}
	atexit(fuse_for_user_cleanup);
	if (harness_exes_for_others((const char *const[]){ "CKPTFS", "CKPT", "FS_TARGET", NULL }) < 0) {
		printf("SKIP: cannot copy the programs where uid %d can run them (see stderr)\n", USER_UID);
		return 77;
	}
	snprintf(base, sizeof(base), "/tmp/ckptfs-user.XXXXXX");
	if (!mkdtemp(base))
		return 1;
	if (chown(base, USER_UID, USER_UID) < 0 || system("command -v setpriv >/dev/null") != 0) {
		printf("SKIP: cannot prepare a directory for uid %d or no setpriv\n", USER_UID);
		return 77;
	}
	if (!user_mount()) {
		char cmd[256];
		snprintf(cmd, sizeof(cmd), "cat %s/log", base);
		printf("SKIP: a normal user cannot mount FUSE here (/dev/fuse or fusermount3): ");
		fflush(stdout);
		if (system(cmd) != 0) {
		}
		user_unmount();
		return 77;
	}
	user_unmount();

	Suite *s = suite_create("fs-user");
	TCase *tc = tcase_create("user_roundtrip");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_user_roundtrip);
	suite_add_tcase(s, tc);
	TCase *tc2 = tcase_create("user_roundtrip_capable");
	tcase_set_timeout(tc2, 60);
	tcase_add_test(tc2, test_user_roundtrip_capable);
	suite_add_tcase(s, tc2);
	SRunner *sr = srunner_create(s);
	srunner_set_fork_status(sr, CK_NOFORK);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	user_unmount();
	return failed ? 1 : 0;
}
