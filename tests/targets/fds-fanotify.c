/*
 * fanotify: a notification group (fd 60, non-blocking, event files
 * O_RDONLY | O_LARGEFILE) with an inode mark on SCRATCH/f (FAN_MODIFY |
 * FAN_CLOSE_WRITE), a mount mark on SCRATCH, bound onto itself for a
 * mount of its own (FAN_OPEN), and an
 * inode mark on SCRATCH/ign whose ignored mask takes FAN_OPEN away
 * (surviving modification); a second group (fd 61, blocking,
 * close-on-exec) reporting directory handles and names
 * (FAN_REPORT_DFID_NAME) with an evictable mark on SCRATCH (FAN_CREATE)
 * and a filesystem mark on a tmpfs mounted at SCRATCH/t (FAN_CREATE).
 * After restore: each group's mark lines in fdinfo are the ones before
 * (masks, ignored masks, mark flags, the same inodes and mount), nothing
 * of the process's own queued in fd 61; on fd 60, opening ign raises
 * nothing and opening SCRATCH/other raises FAN_OPEN (the mount mark),
 * writing f FAN_MODIFY and FAN_CLOSE_WRITE (the inode mark) and nothing
 * else; on fd 61 a file made in SCRATCH raises FAN_CREATE with its name,
 * and so does one made in the tmpfs.
 * Events of other processes are skipped by pid. The mounts go with the
 * verdict.
 */
#include <sys/fanotify.h>
#include <sys/mount.h>
#include <sys/stat.h>

#include "target.h"

static char dir[4096];
static char *at_(const char *name);

/* The verdict, once the mounts in SCRATCH are gone. */
#define VERDICT(ok, ...)                                                          \
	do {                                                                      \
		umount2(at_("t"), MNT_DETACH);                                    \
		umount2(dir, MNT_DETACH);                                         \
		target_verdict(ok, __VA_ARGS__);                                  \
	} while (0)
#define CHECK(c) do { if (!(c)) VERDICT(0, "line %d: %s", __LINE__, #c); } while (0)

static char *at_(const char *name)
{
	static char p[4][4200];
	static int k;
	k = (k + 1) % 4;
	snprintf(p[k], sizeof(p[k]), "%s/%s", dir, name);
	return p[k];
}

/* fd's "fanotify " lines of fdinfo but its flags line, sorted, in out. */
static void marks(int fd, char *out, size_t len)
{
	char path[64], buf[8192], *lines[64];
	size_t n = 0;
	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", fd);
	int f = open(path, O_RDONLY | O_CLOEXEC);
	CHECK(f >= 0);
	ssize_t got = read(f, buf, sizeof(buf) - 1);
	close(f);
	CHECK(got > 0);
	buf[got] = 0;
	for (char *l = strtok(buf, "\n"); l && n < 64; l = strtok(NULL, "\n"))
		if (!strncmp(l, "fanotify ", 9) && strncmp(l, "fanotify flags:", 15))
			lines[n++] = l;
	for (size_t i = 1; i < n; i++)
		for (size_t j = i; j > 0 && strcmp(lines[j - 1], lines[j]) > 0; j--) {
			char *t = lines[j];
			lines[j] = lines[j - 1];
			lines[j - 1] = t;
		}
	out[0] = 0;
	for (size_t i = 0; i < n; i++)
		snprintf(out + strlen(out), len - strlen(out), "%s\n", lines[i]);
}

/* The next event of this process on fd 60 (10 s at most): its mask and
 * the path of its file. */
static void next_event(uint64_t *mask, char *path, size_t len)
{
	static char buf[8192] __attribute__((aligned(8)));
	static ssize_t have, off;
	for (;;) {
		if (off >= have) {
			have = -1;
			for (int i = 0; i < 10000; i++) {
				have = read(60, buf, sizeof(buf));
				if (have > 0)
					break;
				CHECK(errno == EAGAIN);
				struct timespec ts = { 0, 1000000 };
				nanosleep(&ts, NULL);
			}
			CHECK(have > 0);
			off = 0;
		}
		struct fanotify_event_metadata *m = (void *)(buf + off);
		off += m->event_len;
		CHECK(m->vers == FANOTIFY_METADATA_VERSION && !(m->mask & FAN_Q_OVERFLOW));
		bool mine = m->pid == getpid();
		if (mine) {
			char link[64];
			snprintf(link, sizeof(link), "/proc/self/fd/%d", m->fd);
			ssize_t k = readlink(link, path, len - 1);
			CHECK(k > 0);
			path[k] = 0;
			*mask = m->mask;
		}
		if (m->fd >= 0)
			close(m->fd);
		if (mine)
			return;
	}
}

int main(int argc, char **argv)
{
	target_init(argc, argv, 1);
	snprintf(dir, sizeof(dir), "%s", argv[3]);
	mkdir(dir, 0700);
	/* a mount of its own (SCRATCH bound onto itself): a mount mark
	 * elsewhere sees every open of every process, the dumper's too, and
	 * a group with events queued is refused */
	CHECK(mount(dir, dir, NULL, MS_BIND, NULL) == 0);
	const char *names[] = { "f", "ign", "other" };
	for (int i = 0; i < 3; i++) {
		int f = open(at_(names[i]), O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
		CHECK(f >= 0);
		close(f);
	}

	int g = fanotify_init(FAN_CLASS_NOTIF | FAN_NONBLOCK, O_RDONLY | O_LARGEFILE);
	CHECK(g >= 0 && dup2(g, 60) == 60);
	close(g);
	CHECK(fanotify_mark(60, FAN_MARK_ADD, FAN_MODIFY | FAN_CLOSE_WRITE, AT_FDCWD, at_("f")) == 0);
	CHECK(fanotify_mark(60, FAN_MARK_ADD | FAN_MARK_MOUNT, FAN_OPEN, AT_FDCWD, dir) == 0);
	CHECK(fanotify_mark(60, FAN_MARK_ADD | FAN_MARK_IGNORED_MASK | FAN_MARK_IGNORED_SURV_MODIFY, FAN_OPEN,
			    AT_FDCWD, at_("ign")) == 0);
	CHECK(mkdir(at_("t"), 0700) == 0 && mount("tmpfs", at_("t"), "tmpfs", 0, "size=1m") == 0);
	g = fanotify_init(FAN_CLASS_NOTIF | FAN_CLOEXEC | FAN_REPORT_DFID_NAME, O_RDONLY);
	CHECK(g >= 0 && dup3(g, 61, O_CLOEXEC) == 61);
	close(g);
	CHECK(fanotify_mark(61, FAN_MARK_ADD | FAN_MARK_EVICTABLE, FAN_CREATE | FAN_ONDIR, AT_FDCWD, dir) == 0);
	/* a filesystem of its own (a tmpfs at SCRATCH/t, made before the
	 * group) for a filesystem mark: one on the machine's would see every
	 * process's files */
	CHECK(fanotify_mark(61, FAN_MARK_ADD | FAN_MARK_FILESYSTEM, FAN_CREATE, AT_FDCWD, at_("t")) == 0);
	/* what our own opens queued on the mount mark, read away */
	char buf[8192] __attribute__((aligned(8)));
	while (read(60, buf, sizeof(buf)) > 0)
		;
	CHECK(errno == EAGAIN);
	static char before60[4096], before61[4096], after[4096];
	marks(60, before60, sizeof(before60));
	marks(61, before61, sizeof(before61));
	CHECK(strstr(before60, "mnt_id:") && strstr(before60, "ignored_mask:20"));
	CHECK(strstr(before61, "fanotify sdev:"));

	target_ready();
	target_wait_restored();

	CHECK((fcntl(60, F_GETFL) & O_NONBLOCK) && !(fcntl(60, F_GETFD) & FD_CLOEXEC));
	CHECK(!(fcntl(61, F_GETFL) & O_NONBLOCK) && (fcntl(61, F_GETFD) & FD_CLOEXEC));
	marks(60, after, sizeof(after));
	if (strcmp(after, before60))
		VERDICT(0, "fd 60's marks were\n%swith the restore\n%s", before60, after);
	marks(61, after, sizeof(after));
	if (strcmp(after, before61))
		VERDICT(0, "fd 61's marks were\n%swith the restore\n%s", before61, after);

	/* ign's open is ignored: our first event is other's */
	int f = open(at_("ign"), O_RDONLY | O_CLOEXEC);
	CHECK(f >= 0);
	close(f);
	f = open(at_("other"), O_RDONLY | O_CLOEXEC);
	CHECK(f >= 0);
	close(f);
	uint64_t mask;
	char path[4200];
	/* the restore may have opened files of its own as this process
	 * (the program's mappings) once the group was back: skipped */
	do
		next_event(&mask, path, sizeof(path));
	while (strncmp(path, dir, strlen(dir)));
	if (strcmp(path, at_("other")) || mask != FAN_OPEN)
		VERDICT(0, "first event in the scratch directory: 0x%lx on %s", (unsigned long)mask, path);
	/* f: opened (the mount mark), written and closed (its own mark) */
	f = open(at_("f"), O_WRONLY | O_CLOEXEC);
	CHECK(f >= 0 && write(f, "x", 1) == 1);
	close(f);
	uint64_t seen = 0;
	while (!(seen & FAN_CLOSE_WRITE)) {
		next_event(&mask, path, sizeof(path));
		if (strcmp(path, at_("f")))
			VERDICT(0, "event 0x%lx on %s, not on f", (unsigned long)mask, path);
		seen |= mask;
	}
	if (seen != (FAN_OPEN | FAN_MODIFY | FAN_CLOSE_WRITE))
		VERDICT(0, "f's events: 0x%lx", (unsigned long)seen);

	/* fd 61: a file made in the directory, by name */
	f = open(at_("made"), O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
	CHECK(f >= 0);
	close(f);
	ssize_t n = read(61, buf, sizeof(buf));
	CHECK(n > 0);
	struct fanotify_event_metadata *m = (void *)buf;
	CHECK(m->mask == FAN_CREATE && m->fd == FAN_NOFD && m->pid == getpid());
	struct fanotify_event_info_fid *fid = (void *)(m + 1);
	CHECK(fid->hdr.info_type == FAN_EVENT_INFO_TYPE_DFID_NAME);
	struct file_handle *h = (void *)fid->handle;
	const char *name = (const char *)(h->f_handle + h->handle_bytes);
	if (strcmp(name, "made"))
		VERDICT(0, "FAN_CREATE for '%s'", name);
	CHECK(n == m->event_len);
	/* and one in the tmpfs, through the filesystem mark */
	f = open(at_("t/fs"), O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
	CHECK(f >= 0);
	close(f);
	n = read(61, buf, sizeof(buf));
	CHECK(n > 0 && n == m->event_len && m->mask == FAN_CREATE && m->pid == getpid());
	h = (void *)fid->handle;
	name = (const char *)(h->f_handle + h->handle_bytes);
	if (strcmp(name, "fs"))
		VERDICT(0, "FAN_CREATE in the tmpfs for '%s'", name);
	VERDICT(1, "%s", "");
}
