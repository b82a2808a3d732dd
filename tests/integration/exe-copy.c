/*
 * Copies of programs where every user can run them (see exe-copy.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/xattr.h>
#include <unistd.h>

#include "common/common.h"
#include "tests/integration/exe-copy.h"

/* Copies one file's bytes, then its mode and capabilities: a write after
 * the capabilities were set would clear them. */
static int copy_one(const char *from, const char *to)
{
	_cleanup_close_ int in = -1, out = -1;
	static char buf[1 << 16];
	char caps[256];
	ssize_t n;
	int r;

	in = open(from, O_RDONLY | O_CLOEXEC);
	if (in < 0)
		return negerrno();
	out = open(to, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0755);
	if (out < 0)
		return negerrno();
	while ((n = read(in, buf, sizeof(buf))) != 0) {
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return negerrno();
		}
		r = write_full(out, buf, n);
		if (r < 0)
			return r;
	}
	/* the umask may have narrowed the mode open() was given */
	if (fchmod(out, 0755) < 0)
		return negerrno();
	n = fgetxattr(in, "security.capability", caps, sizeof(caps));
	if (n < 0)
		return errno == ENODATA || errno == ENOTSUP ? 0 : negerrno();
	if (fsetxattr(out, "security.capability", caps, n, 0) < 0)
		return negerrno();
	return 0;
}

int exe_copy_path(const char *dir, const char *path, char *ret)
{
	const char *base = strrchr(path, '/');
	int n = snprintf(ret, PATH_MAX, "%s/%s", dir, base ? base + 1 : path);
	return n < PATH_MAX ? 0 : -ENAMETOOLONG;
}

/* Whether every user can enter dir: each directory from / down to it
 * searchable by others. 0, or -EACCES naming the first one that is not. */
static int open_to_others(const char *dir)
{
	char p[PATH_MAX];
	struct stat st;

	snprintf(p, sizeof(p), "%s", dir);
	for (char *slash = p;; *slash = '/') {
		slash = strchr(slash + 1, '/');
		if (slash)
			*slash = 0;
		if (stat(p, &st) < 0)
			return negerrno();
		if (!(st.st_mode & S_IXOTH)) {
			fprintf(stderr, "exe_copy: other users cannot enter '%s' (mode %04o)\n", p,
				(unsigned)(st.st_mode & 07777));
			return -EACCES;
		}
		if (!slash)
			return 0;
	}
}

int exe_copy(const char *parent, const char *const *paths, size_t n, char *dir)
{
	char tmp[PATH_MAX], to[PATH_MAX];
	struct statvfs sv;
	int r = 0;

	if (!parent)
		parent = "/tmp";
	if ((size_t)snprintf(tmp, sizeof(tmp), "%s/ckptfs-exe.XXXXXX", parent) >= sizeof(tmp))
		return -ENAMETOOLONG;
	if (!mkdtemp(tmp)) {
		r = negerrno();
		fprintf(stderr, "exe_copy: cannot make a directory under '%s': %s\n", parent, strerror(-r));
		return r;
	}
	/* mkdtemp makes it 0700: the point is that others can enter */
	if (chmod(tmp, 0755) < 0) {
		r = negerrno();
		fprintf(stderr, "exe_copy: cannot chmod '%s': %s\n", tmp, strerror(-r));
		goto err_remove;
	}
	r = open_to_others(tmp);
	if (r < 0)
		goto err_remove;
	if (statvfs(tmp, &sv) == 0 && (sv.f_flag & ST_NOEXEC)) {
		r = -EACCES;
		fprintf(stderr, "exe_copy: '%s' is on a noexec mount: no program can run from there\n", tmp);
		goto err_remove;
	}
	for (size_t i = 0; i < n; i++) {
		r = exe_copy_path(tmp, paths[i], to);
		if (r >= 0)
			r = copy_one(paths[i], to);
		if (r < 0) {
			fprintf(stderr, "exe_copy: cannot copy '%s' to '%s': %s\n", paths[i], to, strerror(-r));
			goto err_remove;
		}
	}
	snprintf(dir, PATH_MAX, "%s", tmp);
	return 0;

err_remove:
	rm_rf(tmp);
	return r;
}

void exe_copy_remove(char *dir)
{
	if (!dir || !dir[0])
		return;
	rm_rf(dir);
	dir[0] = 0;
}
