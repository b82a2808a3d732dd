/*
 * A minimal stand-in for the descriptor code (engine/fds/), linked only
 * while that code is absent: every function here is weak and is replaced
 * as a whole when the real implementation is linked in.
 *
 * It accepts a process only when its descriptors are 0, 1 and 2 and each
 * points at /dev/null, a regular file or a terminal; anything else is
 * refused by name. On restore it opens /dev/null on 0, 1 and 2 (the
 * original files and terminals are NOT reopened) and closes every other
 * descriptor.
 */
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#include "engine/engine-int.h"
#include "engine/fds/fds.h"

struct fd_image {
	int n;
	char *lines;
};

__attribute__((weak)) int fds_check(pid_t pid)
{
	char dir[64];
	snprintf(dir, sizeof(dir), "/proc/%d/fd", pid);
	DIR *d = opendir(dir);
	if (!d)
		return err_set(negerrno(), "pid %d: cannot list descriptors: %m", pid);
	struct dirent *de;
	int r = 0;
	while ((de = readdir(d)) && r == 0) {
		uint64_t fd;
		char path[384], target[PATH_MAX];
		struct stat st;
		if (parse_u64(de->d_name, &fd) < 0)
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		ssize_t n = readlink(path, target, sizeof(target) - 1);
		target[n > 0 ? n : 0] = 0;
		if (fd > 2) {
			r = err_set(-EOPNOTSUPP, "fd %d (%s): only descriptors 0-2 are supported by this build",
				    (int)fd, target);
			break;
		}
		if (stat(path, &st) < 0 ||
		    !(S_ISREG(st.st_mode) || !strcmp(target, "/dev/null") ||
		      (S_ISCHR(st.st_mode) && (!strncmp(target, "/dev/pts/", 9) || !strncmp(target, "/dev/tty", 8)))))
			r = err_set(-EOPNOTSUPP, "fd %d (%s): kind not supported by this build", (int)fd, target);
	}
	closedir(d);
	return r;
}

/* Only 0-2 on files and terminals pass fds_check(): nothing to match
 * across the tree. */
__attribute__((weak)) int fds_check_tree(const pid_t *pids, size_t n)
{
	return 0;
}

__attribute__((weak)) int fds_capture(pid_t pid, struct fd_image **ret)
{
	struct fd_image *img = calloc(1, sizeof(*img));
	struct tbuf b = { 0 };
	if (!img)
		return -ENOMEM;
	for (int fd = 0; fd <= 2; fd++) {
		char path[64], target[PATH_MAX];
		snprintf(path, sizeof(path), "/proc/%d/fd/%d", pid, fd);
		ssize_t n = readlink(path, target, sizeof(target) - 1);
		if (n < 0)
			continue;
		target[n] = 0;
		tb_printf(&b, "%d devnull %s\n", fd, target);
		img->n++;
	}
	img->lines = tb_take(&b);
	if (!img->lines) {
		free(img);
		return -ENOMEM;
	}
	*ret = img;
	return 0;
}

__attribute__((weak)) int fds_write(struct fd_image *img, struct store_snap *w)
{
	return store_snap_put(w, "fds", img->lines, strlen(img->lines));
}

__attribute__((weak)) int fds_load(struct store_snap *r, bool accept_changed, struct fd_image **ret)
{
	struct fd_image *img = calloc(1, sizeof(*img));
	size_t len;
	if (!img)
		return -ENOMEM;
	int q = store_snap_read_all(r, "fds", &img->lines, &len);
	if (q < 0) {
		free(img);
		return q;
	}
	*ret = img;
	return 0;
}

__attribute__((weak)) int fds_restore(struct fd_image *img, struct fd_image *shared, int shared_base, int keep_from)
{
	for (int fd = 0; fd <= 2; fd++) {
		int n = open("/dev/null", O_RDWR);
		if (n < 0)
			return err_set(negerrno(), "fd %d: cannot open /dev/null: %m", fd);
		if (n != fd) {
			if (dup2(n, fd) < 0)
				return err_set(negerrno(), "fd %d: dup2: %m", fd);
			close(n);
		}
	}
	if (syscall(SYS_close_range, 3, keep_from > 3 ? (unsigned)keep_from - 1 : ~0u, 0) < 0)
		return err_set(negerrno(), "close_range: %m");
	return 0;
}

__attribute__((weak)) int fds_max(struct fd_image *img)
{
	return 2;
}

__attribute__((weak)) int fds_count(struct fd_image *img)
{
	return img ? img->n : 0;
}

/* Descriptors 0-2 on /dev/null come back as /dev/null anyway: nothing is
 * shared. */
__attribute__((weak)) int fds_share(struct fd_image **imgs, const pid_t *pids, size_t n, struct fd_image **ret)
{
	struct fd_image *img = calloc(1, sizeof(*img));

	if (!img || !(img->lines = strdup(""))) {
		free(img);
		return -ENOMEM;
	}
	*ret = img;
	return 0;
}

__attribute__((weak)) int fds_validate_shared(struct fd_image *img, struct fd_image *shared)
{
	return fds_count(shared) ? err_set(-EOPNOTSUPP, "shared descriptors: not supported by this build") : 0;
}

__attribute__((weak)) int fds_open_shared(struct fd_image *shared, int base, int shm_base)
{
	return fds_validate_shared(NULL, shared);
}

/* No memfd or deleted-file lines here: nothing to bind. */
__attribute__((weak)) void fds_shm_bind(struct fd_image *img, unsigned dev_major, unsigned dev_minor, uint64_t ino,
					uint32_t id)
{
}

__attribute__((weak)) int fds_shm_check(struct fd_image *img)
{
	return 0;
}

/* A removed cwd is not made again by this build. */
__attribute__((weak)) int fds_deleted_dir_open(const char *path, unsigned mode, uid_t uid, gid_t gid,
					       const struct timespec *times, int flags)
{
	return err_set(-EOPNOTSUPP, "deleted directory %s: not supported by this build", path);
}

__attribute__((weak)) struct fd_image *fds_image_new(void)
{
	return calloc(1, sizeof(struct fd_image));
}

__attribute__((weak)) void fds_free(struct fd_image *img)
{
	if (img) {
		free(img->lines);
		free(img);
	}
}

__attribute__((weak)) int fds_check_mapped_locks(struct fd_image *img, const uint64_t *dev, const uint64_t *ino,
						 size_t n)
{
	return 0;
}

/* Nothing is ever held in TCP repair mode here: nothing to let go. */
__attribute__((weak)) int fds_release(struct fd_image *img, bool killed)
{
	return 0;
}

__attribute__((weak)) int fds_unlock(struct fd_image *img)
{
	return 0;
}

__attribute__((weak)) int fds_held(struct fd_image *img, int **ret_fds, struct netlock_conn **ret_conns,
				   size_t *ret_n)
{
	*ret_fds = NULL;
	*ret_conns = NULL;
	*ret_n = 0;
	return 0;
}

__attribute__((weak)) int fds_capture_running(pid_t pid, struct fd_image **ret)
{
	return fds_capture(pid, ret);
}

__attribute__((weak)) int fds_lock_inner(struct fd_image **imgs, size_t n, bool lock)
{
	return 0;
}

__attribute__((weak)) int fds_ctty_take(struct fd_image *shared, int base, pid_t sid, pid_t *ret_fg)
{
	*ret_fg = 0;
	return 0;
}

__attribute__((weak)) int fds_ctty_foreground(struct fd_image *shared, int base, pid_t sid, pid_t pgid)
{
	return 0;
}
