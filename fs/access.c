/*
 * Who may see and checkpoint which process.
 *
 * The kernel's rule for ptrace (PTRACE_MODE_ATTACH_REALCREDS) compares the
 * caller's real uid with all of the target's uids, and also looks at
 * capabilities, dumpability and Yama. The daemon approximates it: root
 * may checkpoint every process; any other user the processes whose real
 * uid is theirs. The engine's own ptrace, done with the daemon's
 * credentials, is the final word on what can be captured. Kernel threads
 * and the daemon itself are never shown: neither can be checkpointed.
 */
#include <dirent.h>
#include <fcntl.h>

#include "fs/fs-int.h"

/* Reads the real uid ("Uid:" line) and whether pid is a kernel thread. */
static int proc_info(pid_t pid, uid_t *uid, bool *kthread)
{
	char path[64], buf[4096];
	_cleanup_close_ int fd = -1;
	ssize_t n;
	char *p;

	snprintf(path, sizeof(path), "/proc/%d/status", pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return negerrno();
	n = pread_full(fd, buf, sizeof(buf) - 1, 0);
	if (n < 0)
		return (int)n;
	buf[n] = 0;
	p = strstr(buf, "\nUid:");
	if (!p)
		return -EIO;
	*uid = (uid_t)strtoul(p + 5, NULL, 10);
	/* Kernel threads have no memory map: no VmSize line; and their
	 * parent is kthreadd (pid 2) or they are kthreadd. */
	*kthread = !strstr(buf, "\nVmSize:") &&
		   (pid == 2 || strstr(buf, "\nPPid:\t2\n") || strstr(buf, "\nPPid:\t0\n"));
	return 0;
}

bool access_pid(struct fs *fs, uid_t caller, pid_t pid, uid_t *owner)
{
	uid_t uid;
	bool kthread;

	if (pid <= 0 || pid == fs->self)
		return false;
	if (proc_info(pid, &uid, &kthread) < 0 || kthread)
		return false;
	if (owner)
		*owner = uid;
	/* A daemon that is not root cannot ptrace other users' processes,
	 * whoever asks. */
	if (fs->uid != 0 && uid != fs->uid)
		return false;
	return access_owner(caller, uid);
}

int access_foreach_pid(struct fs *fs, uid_t caller, int (*cb)(pid_t pid, void *ud), void *ud)
{
	DIR *d = opendir("/proc");
	struct dirent *de;
	int r = 0;

	if (!d)
		return negerrno();
	while ((de = readdir(d))) {
		uint64_t v;

		if (parse_u64(de->d_name, &v) < 0 || v == 0 || v > INT32_MAX)
			continue;
		if (!access_pid(fs, caller, (pid_t)v, NULL))
			continue;
		r = cb((pid_t)v, ud);
		if (r)
			break;
	}
	closedir(d);
	return r;
}
