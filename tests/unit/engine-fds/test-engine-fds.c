/*
 * engine/fds/: capture, text form and restore of descriptor tables.
 *
 * Each test forks a target that sets up descriptors of some kinds at known
 * numbers and stops itself. The test captures its table, turns it into
 * text and parses it back (the data files served from memory, or through
 * a directory snapshot), then restores it in a fresh forked process, which
 * checks through its own descriptors that it sees the same state and
 * reports by exit status (the failing line) and, above fds_max(), a report
 * pipe, which also shows that the restorer's own descriptors survive. The
 * target is then let run to check that capture changed nothing it sees.
 */
#include <arpa/inet.h>
#include <check.h>
#include <netinet/tcp.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/epoll.h>
#include <sys/fanotify.h>
#include <sys/file.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/timerfd.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <termios.h>
#include <linux/bpf.h>
#include <linux/if_packet.h>
#include <linux/netlink.h>
#include <net/if.h>
#include <linux/rtnetlink.h>

#include "common/common.h"
#include "engine/fds/fds-int.h"

static char tmpdir[64];
static char fpath[96];
static char fifo_path[96];
static char *report_page; /* restored process: where V() explains */
static uint16_t tcp_port, tcp6_port;
static char bigbuf[1024];

/* In a target or restored process: on failure, exit with the line. */
#define V(c)                                                      \
	do {                                                      \
		if (!(c)) {                                       \
			if (report_page)                          \
				snprintf(report_page, 4096, "line %d: %s", __LINE__, #c); \
			return __LINE__ % 250 + 1;                \
		}                                                 \
	} while (0)

static void setup_tmp(void)
{
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/ckptfs-fds-XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(tmpdir));
	snprintf(fpath, sizeof(fpath), "%s/file", tmpdir);
	snprintf(fifo_path, sizeof(fifo_path), "%s/fifo", tmpdir);
}

static void teardown_tmp(void)
{
	rm_rf(tmpdir);
}

/* Moves a fresh fd out of the way of the numbers the setups fill. */
static int hi(int fd)
{
	int r = fcntl(fd, F_DUPFD, 200);

	close(fd);
	return r;
}

static void pipe_hi(int p[2])
{
	if (pipe(p) < 0)
		_exit(91);
	p[0] = hi(p[0]);
	p[1] = hi(p[1]);
}

static void pair_hi(int type, int sv[2])
{
	if (socketpair(AF_UNIX, type, 0, sv) < 0)
		_exit(92);
	sv[0] = hi(sv[0]);
	sv[1] = hi(sv[1]);
}

/* Puts fd at number n (cloexec or not) and closes the original. */
static void at(int fd, int n, bool cloexec)
{
	if (fd == n) {
		fcntl(n, F_SETFD, cloexec ? FD_CLOEXEC : 0);
		return;
	}
	if (dup3(fd, n, cloexec ? O_CLOEXEC : 0) < 0)
		_exit(90);
	close(fd);
}

static bool is_open(int fd)
{
	return fcntl(fd, F_GETFD) >= 0;
}

/* Forks a target: stdio on /dev/null, nothing else open, then setup(),
 * then SIGSTOP; once continued it runs verify() (NULL: pause until
 * killed) and exits with its result. Returns once it is stopped. */
static pid_t start_target(void (*setup)(void), int (*verify)(void))
{
	pid_t pid = fork();
	int st;

	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		int null = open("/dev/null", O_RDWR);
		dup2(null, 0);
		dup2(null, 1);
		dup2(null, 2);
		syscall(SYS_close_range, 3, ~0u, 0);
		report_page = NULL;
		setup();
		raise(SIGSTOP);
		if (!verify)
			for (;;)
				pause();
		_exit(verify());
	}
	ck_assert_int_eq(waitpid(pid, &st, WUNTRACED), pid);
	ck_assert_msg(WIFSTOPPED(st), "target did not stop (status 0x%x)", st);
	return pid;
}

/* Lets a stopped target run its own check; returns its exit status. */
static int finish_target(pid_t pid)
{
	int st;

	kill(pid, SIGCONT);
	ck_assert_int_eq(waitpid(pid, &st, 0), pid);
	ck_assert_msg(WIFEXITED(st), "target died (status 0x%x)", st);
	return WEXITSTATUS(st);
}

static void kill_target(pid_t pid)
{
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
}

static int get_mem(const char *path, void **buf, uint64_t *len, void *ud)
{
	struct fd_image *cap = ud;
	int fd;

	if (sscanf(path, "fds-data/%d", &fd) != 1)
		return -ENOENT;
	struct fd_entry *e = fds_find(cap, fd);
	if (!e || !e->data_len)
		return -ENOENT;
	*buf = malloc(e->data_len);
	memcpy(*buf, e->data, e->data_len);
	*len = e->data_len;
	return 0;
}

/* Captured image -> text -> parsed image, as a restore would see it. */
static struct fd_image *roundtrip(struct fd_image *cap, char **text_out)
{
	char *text;
	size_t len;
	struct fd_image *img = NULL;
	int r;

	ck_assert_int_eq(fds_format(cap, &text, &len), 0);
	r = fds_parse(text, get_mem, cap, &img);
	ck_assert_msg(r == 0, "parse: %s\n%s", err_msg(), text);
	r = fds_host_check(img, false);
	ck_assert_msg(r == 0, "host check: %s", err_msg());
	if (text_out)
		*text_out = text;
	else
		free(text);
	return img;
}

static struct fd_image *capture(pid_t pid)
{
	struct fd_image *cap = NULL;
	int r = fds_check(pid);

	ck_assert_msg(r == 0, "check: %s", err_msg());
	r = fds_capture(pid, &cap);
	ck_assert_msg(r == 0, "capture: %s", err_msg());
	return cap;
}

/* Restores img in a fresh process that then runs verify(); returns its
 * exit status, with its report in msg. The report goes through a shared
 * page, as the engine core's does: after fds_restore() the process holds
 * nothing but the image's descriptors. A descriptor of ours open above
 * fds_max() before the restore shows that it is closed. */
static int restore_in_child(struct fd_image *img, int (*verify)(void), char *msg, size_t msglen)
{
	char *page = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	int st, extra;
	pid_t pid;

	ck_assert_ptr_ne(page, MAP_FAILED);
	extra = fcntl(0, F_DUPFD_CLOEXEC, fds_max(img) + 20);
	ck_assert_int_ge(extra, 0);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		report_page = page;
		int r = fds_restore(img, NULL, -1, -1);
		if (r < 0) {
			snprintf(page, 4096, "restore: %s", err_msg());
			_exit(100);
		}
		for (int fd = fds_max(img) + 1; fd < 1024; fd++)
			if (is_open(fd)) {
				snprintf(page, 4096, "fd %d above fds_max() is still open", fd);
				_exit(101);
			}
		_exit(verify ? verify() : 0);
	}
	close(extra);
	ck_assert_int_eq(waitpid(pid, &st, 0), pid);
	snprintf(msg, msglen, "%s", page);
	munmap(page, 4096);
	ck_assert_msg(WIFEXITED(st), "restored process died (status 0x%x)", st);
	return WEXITSTATUS(st);
}

#define RESTORE_OK(img, verify)                                                         \
	do {                                                                             \
		char _m[1024];                                                           \
		int _s = restore_in_child(img, verify, _m, sizeof(_m));                  \
		ck_assert_msg(_s == 0, "restored process: exit %d: %s", _s, _m);          \
	} while (0)

static off_t pos(int fd)
{
	return lseek(fd, 0, SEEK_CUR);
}

/* ---- regular files, devices, dups, cloexec ----------------------------------- */

static void files_setup(void)
{
	int fd = open(fpath, O_RDWR | O_APPEND);
	lseek(fd, 4, SEEK_SET);
	at(fd, 5, false);
	dup2(5, 6);                   /* shares description and offset */
	dup3(5, 7, O_CLOEXEC);        /* shares too, but close-on-exec */
	fd = open(fpath, O_RDONLY);
	lseek(fd, 10, SEEK_SET);
	at(fd, 8, true);
	at(open("/dev/null", O_WRONLY), 3, false);
	at(open("/dev/zero", O_RDONLY), 4, true);
	at(open(tmpdir, O_RDONLY | O_DIRECTORY), 9, false);
	at(open(fpath, O_PATH), 11, true);
}

static int files_verify_common(void)
{
	struct stat st;
	char buf[4];

	V(pos(5) == 4 && pos(8) == 10);
	V((fcntl(5, F_GETFL) & (O_ACCMODE | O_APPEND)) == (O_RDWR | O_APPEND));
	V(fcntl(5, F_GETFD) == 0 && fcntl(6, F_GETFD) == 0 && fcntl(7, F_GETFD) == FD_CLOEXEC);
	V(fcntl(8, F_GETFD) == FD_CLOEXEC && fcntl(3, F_GETFD) == 0 && fcntl(4, F_GETFD) == FD_CLOEXEC);
	V((fcntl(8, F_GETFL) & O_ACCMODE) == O_RDONLY);
	V(fstat(3, &st) == 0 && S_ISCHR(st.st_mode) && major(st.st_rdev) == 1 && minor(st.st_rdev) == 3);
	V((fcntl(3, F_GETFL) & O_ACCMODE) == O_WRONLY);
	V(read(4, buf, 4) == 4 && memcmp(buf, "\0\0\0\0", 4) == 0);
	V(fstat(9, &st) == 0 && S_ISDIR(st.st_mode));
	V(fcntl(11, F_GETFL) & O_PATH);
	V(read(8, buf, 2) == 2 && memcmp(buf, "ab", 2) == 0);
	/* One description: moving one moves the others. */
	V(lseek(6, 7, SEEK_SET) == 7 && pos(5) == 7 && pos(7) == 7);
	return 0;
}

static int files_verify_restored(void)
{
	struct stat a, b;

	V(!is_open(10));
	V(fstat(0, &a) == 0 && S_ISCHR(a.st_mode) && minor(a.st_rdev) == 3);
	V(fstat(5, &a) == 0 && stat(fpath, &b) == 0 && a.st_ino == b.st_ino);
	return files_verify_common();
}

START_TEST(files)
{
	char *text;
	int fd = open(fpath, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
	ck_assert_int_eq(write_full(fd, "0123456789abcdef", 16), 0);
	close(fd);

	pid_t pid = start_target(files_setup, files_verify_common);
	struct fd_image *cap = capture(pid);
	struct fd_image *img = roundtrip(cap, &text);
	ck_assert_int_eq(fds_max(img), 11);
	ck_assert_msg(strstr(text, "6 dup of=5 cloexec=0\n") && strstr(text, "7 dup of=5 cloexec=1\n") &&
			      strstr(text, " pos=4 ") && strstr(text, "3 dev flags=01 cloexec=0 path=/dev/null"),
		      "unexpected text:\n%s", text);
	RESTORE_OK(img, files_verify_restored);
	/* The target still sees its offsets: capture changed nothing. */
	ck_assert_int_eq(finish_target(pid), 0);
	free(text);
	fds_free(img);
	fds_free(cap);
}
END_TEST

static void one_file_setup(void)
{
	at(open(fpath, O_RDWR), 3, false);
}

/* The restored fd 3 is the file at fpath, read-write, at offset 0. */
static int one_file_verify(void)
{
	struct stat a, b;

	V(fstat(3, &a) == 0 && stat(fpath, &b) == 0 && a.st_ino == b.st_ino && a.st_dev == b.st_dev);
	V((fcntl(3, F_GETFL) & O_ACCMODE) == O_RDWR);
	V(lseek(3, 0, SEEK_CUR) == 0);
	return 0;
}

/* Captures one_file_setup's table and parses it back, without the host
 * check: the tests change the file first. */
static struct fd_image *one_file_image(void (*setup)(void))
{
	pid_t pid = start_target(setup, NULL);
	struct fd_image *cap = capture(pid), *img = NULL;
	char *text;
	size_t len;

	kill_target(pid);
	ck_assert_int_eq(fds_format(cap, &text, &len), 0);
	ck_assert_msg(fds_parse(text, get_mem, cap, &img) == 0, "%s", err_msg());
	free(text);
	fds_free(cap);
	return img;
}

START_TEST(file_changed_is_refused)
{
	int fd = open(fpath, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
	ck_assert_int_eq(write_full(fd, "abc", 3), 0);
	struct fd_image *img = one_file_image(one_file_setup);
	ck_assert_int_eq(write_full(fd, "d", 1), 0);
	close(fd);

	/* A read-write file that grew: refused, naming the file, what
	 * changed and how to restore it anyway. */
	ck_assert_int_eq(fds_host_check(img, false), -ESTALE);
	ck_assert_msg(strstr(err_msg(), "fd 3: file ") && strstr(err_msg(), fpath) &&
			      strstr(err_msg(), "size 4, was 3") && strstr(err_msg(), "--accept-changed-files") &&
			      strstr(err_msg(), "accept-changed-files' in restore/NAME/ctl"),
		      "%s", err_msg());
	/* In the new process too, should the file change after the load. */
	char m[512];
	ck_assert_int_eq(restore_in_child(img, NULL, m, sizeof(m)), 100);
	ck_assert_msg(strstr(m, "fd 3: file ") && strstr(m, "size 4, was 3"), "%s", m);

	/* Accepted: the file as it is now, at the offset it had. */
	ck_assert_msg(fds_host_check(img, true) == 0, "%s", err_msg());
	ck_assert_int_eq(restore_in_child(img, one_file_verify, m, sizeof(m)), 0);

	/* Another file under the path, even of the same size: refused as
	 * replaced, and accepted with the option. */
	char other[128];
	snprintf(other, sizeof(other), "%s/other", tmpdir);
	fd = open(other, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
	ck_assert_int_eq(write_full(fd, "abc", 3), 0);
	close(fd);
	ck_assert_int_eq(rename(other, fpath), 0);
	ck_assert_int_eq(fds_host_check(img, false), -ESTALE);
	ck_assert_msg(strstr(err_msg(), "was replaced since the dump (inode ") &&
			      strstr(err_msg(), "--accept-changed-files"),
		      "%s", err_msg());
	ck_assert_int_eq(fds_host_check(img, true), 0);

	/* Gone: refused whatever the option says, naming it. */
	unlink(fpath);
	ck_assert_int_eq(fds_host_check(img, true), -ENOENT);
	ck_assert_msg(strstr(err_msg(), "fd 3: file ") && strstr(err_msg(), fpath) && strstr(err_msg(), "is gone"),
		      "%s", err_msg());
	fds_free(img);
}
END_TEST

/* A new mtime and nothing else (touch) is the same file. */
START_TEST(file_touched_is_restored)
{
	int fd = open(fpath, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
	ck_assert_int_eq(write_full(fd, "abc", 3), 0);
	close(fd);
	struct fd_image *img = one_file_image(one_file_setup);
	struct stat before, after;
	ck_assert_int_eq(stat(fpath, &before), 0);
	struct timespec ts[2] = { { 1000000000, 0 }, { 1000000000, 0 } };
	ck_assert_int_eq(utimensat(AT_FDCWD, fpath, ts, 0), 0);
	ck_assert_int_eq(stat(fpath, &after), 0);
	ck_assert_int_ne(after.st_mtim.tv_sec, before.st_mtim.tv_sec);

	ck_assert_msg(fds_host_check(img, false) == 0, "%s", err_msg());
	char m[512];
	ck_assert_msg(restore_in_child(img, one_file_verify, m, sizeof(m)) == 0, "%s", m);
	fds_free(img);
}
END_TEST

static void log_setup(void)
{
	at(open(fpath, O_WRONLY | O_APPEND), 3, false);
	if (write(3, "one\n", 4) != 4)
		_exit(93);
}

/* The restored log is at the end of what the file holds now, and what it
 * writes lands after it. */
static int log_verify(void)
{
	struct stat st;

	V(fstat(3, &st) == 0 && st.st_size == 8);
	V(lseek(3, 0, SEEK_CUR) == 8);
	V((fcntl(3, F_GETFL) & (O_ACCMODE | O_APPEND)) == (O_WRONLY | O_APPEND));
	V(write(3, "three\n", 6) == 6);
	return 0;
}

/* A log (O_WRONLY|O_APPEND) that grew after the dump is restored at its
 * new end without being accepted; a gone one is refused. */
START_TEST(log_grown_is_restored_at_its_end)
{
	int fd = open(fpath, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
	close(fd);
	struct fd_image *img = one_file_image(log_setup);
	fd = open(fpath, O_WRONLY | O_APPEND | O_CLOEXEC);
	ck_assert_int_eq(write_full(fd, "two\n", 4), 0);
	close(fd);

	ck_assert_msg(fds_host_check(img, false) == 0, "%s", err_msg());
	char m[512], *text = NULL;
	ck_assert_msg(restore_in_child(img, log_verify, m, sizeof(m)) == 0, "%s", m);
	ck_assert_int_eq(read_file_full(fpath, &text, NULL), 0);
	ck_assert_str_eq(text, "one\ntwo\nthree\n");
	free(text);

	unlink(fpath);
	ck_assert_int_eq(fds_host_check(img, false), -ENOENT);
	ck_assert_msg(strstr(err_msg(), "fd 3: file ") && strstr(err_msg(), fpath) && strstr(err_msg(), "is gone"),
		      "%s", err_msg());
	fds_free(img);
}
END_TEST

static int dev_null_verify(void)
{
	struct stat st;

	V(fstat(0, &st) == 0 && S_ISCHR(st.st_mode) && st.st_rdev == makedev(1, 3));
	V((fcntl(0, F_GETFL) & O_ACCMODE) == O_RDWR);
	return 0;
}

static char tty_log[128];

static int tty_log_verify(void)
{
	struct stat st;

	V(fstat(1, &st) == 0 && S_ISREG(st.st_mode) && (fcntl(1, F_GETFL) & O_APPEND));
	V(write(1, "to the terminal\n", 16) == 16);
	return 0;
}

START_TEST(gone_terminal_becomes_dev_null)
{
	struct fd_image *img = NULL;
	int r = fds_parse("0 tty flags=02 cloexec=0 path=/dev/pts/4095\n", NULL, NULL, &img);
	ck_assert_msg(r == 0, "%s", err_msg());
	ck_assert_int_eq(fds_host_check(img, false), 0);
	ck_assert(img->e[0].to_null);
	fds_free(img);
	/* With CKPTFS_TTY_LOG, what it writes lands in that file. */
	snprintf(tty_log, sizeof(tty_log), "%s/tty.log", tmpdir);
	setenv("CKPTFS_TTY_LOG", tty_log, 1);
	r = fds_parse("0 tty flags=02 cloexec=0 path=/dev/pts/4095\n1 dup of=0 cloexec=0\n", NULL, NULL, &img);
	ck_assert_int_eq(r, 0);
	ck_assert_int_eq(fds_host_check(img, false), 0);
	ck_assert_str_eq(img->e[0].tty_log, tty_log);
	char lm[256], *logged = NULL;
	ck_assert_int_eq(restore_in_child(img, tty_log_verify, lm, sizeof(lm)), 0);
	ck_assert_int_eq(read_file_full(tty_log, &logged, NULL), 0);
	ck_assert_str_eq(logged, "to the terminal\n");
	free(logged);
	unsetenv("CKPTFS_TTY_LOG");
	fds_free(img);
	r = fds_parse("0 tty flags=02 cloexec=0 path=/dev/tty\n", NULL, NULL, &img);
	ck_assert_int_eq(r, 0);
	ck_assert_int_eq(fds_host_check(img, false), 0);
	ck_assert(img->e[0].to_null);
	char m[256];
	ck_assert_int_eq(restore_in_child(img, dev_null_verify, m, sizeof(m)), 0);
	fds_free(img);
}
END_TEST

static char pts[64];

static void tty_setup(void)
{
	at(open(pts, O_RDWR | O_NOCTTY), 3, false);
}

static int tty_verify(void)
{
	char name[64];

	V(isatty(3) && ttyname_r(3, name, sizeof(name)) == 0 && strcmp(name, pts) == 0);
	V((fcntl(3, F_GETFL) & O_ACCMODE) == O_RDWR);
	return 0;
}

START_TEST(terminal_is_reopened)
{
	int m = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
	if (m < 0 || grantpt(m) < 0 || unlockpt(m) < 0 || ptsname_r(m, pts, sizeof(pts)) != 0) {
		/* Said, not hidden: a container without /dev/pts. */
		fprintf(stderr, "terminal_is_reopened: no pseudo-terminal here (%s), not run\n", strerror(errno));
		return;
	}
	char *text;
	pid_t pid = start_target(tty_setup, NULL);
	struct fd_image *cap = capture(pid);
	kill_target(pid);
	struct fd_image *img = roundtrip(cap, &text);
	ck_assert_msg(strstr(text, "3 tty flags=02 cloexec=0 path=/dev/pts/"), "%s", text);
	ck_assert(!img->e[3].to_null);
	RESTORE_OK(img, tty_verify);
	close(m);
	free(text);
	fds_free(img);
	fds_free(cap);
}
END_TEST

/* ---- pipes ------------------------------------------------------------------- */

static void pipes_setup(void)
{
	int p[2];

	pipe_hi(p);
	at(p[0], 3, false);
	at(p[1], 4, true);
	fcntl(3, F_SETPIPE_SZ, 131072);
	fcntl(3, F_SETFL, O_NONBLOCK);
	write(4, "hello pipe", 10);
	pipe_hi(p); /* write end at the lower number */
	write(p[1], "xyz", 3);
	at(p[1], 5, false);
	at(p[0], 6, false);
	pipe_hi(p); /* the writer is gone: bytes, then EOF */
	write(p[1], "eof", 3);
	close(p[1]);
	at(p[0], 7, false);
	pipe_hi(p); /* the reader is outside */
	at(p[1], 8, false);
	close(p[0]);
	/* A named FIFO, both ends, bytes queued. */
	mkfifo(fifo_path, 0600);
	at(open(fifo_path, O_RDONLY | O_NONBLOCK), 9, false);
	at(open(fifo_path, O_WRONLY), 10, true);
	write(10, "fifo!", 5);
	/* For the target's own check of its pipes: a free number. */
}

static int pipes_verify_target(void)
{
	char buf[32];

	V(read(3, buf, sizeof(buf)) == 10 && memcmp(buf, "hello pipe", 10) == 0);
	V(read(6, buf, sizeof(buf)) == 3 && memcmp(buf, "xyz", 3) == 0);
	V(read(7, buf, sizeof(buf)) == 3 && read(7, buf, sizeof(buf)) == 0);
	V(read(9, buf, sizeof(buf)) == 5 && memcmp(buf, "fifo!", 5) == 0);
	return 0;
}

static int pipes_verify_restored(void)
{
	char buf[32];
	struct stat st;

	V(fcntl(3, F_GETFL) & O_NONBLOCK);
	V(fcntl(3, F_GETPIPE_SZ) == 131072);
	V(fcntl(4, F_GETFD) == FD_CLOEXEC && fcntl(3, F_GETFD) == 0);
	V(read(3, buf, sizeof(buf)) == 10 && memcmp(buf, "hello pipe", 10) == 0);
	V(read(3, buf, sizeof(buf)) < 0 && errno == EAGAIN);
	V(write(4, "x", 1) == 1 && read(3, buf, sizeof(buf)) == 1 && buf[0] == 'x');
	V(read(6, buf, sizeof(buf)) == 3 && memcmp(buf, "xyz", 3) == 0);
	V(write(5, "k", 1) == 1 && read(6, buf, 1) == 1 && buf[0] == 'k');
	V(read(7, buf, sizeof(buf)) == 3 && memcmp(buf, "eof", 3) == 0);
	V(read(7, buf, sizeof(buf)) == 0);
	V(fstat(8, &st) == 0 && S_ISCHR(st.st_mode) && write(8, "gone", 4) == 4);
	V((fcntl(9, F_GETFL) & (O_ACCMODE | O_NONBLOCK)) == (O_RDONLY | O_NONBLOCK));
	V((fcntl(10, F_GETFL) & (O_ACCMODE | O_NONBLOCK)) == O_WRONLY && fcntl(10, F_GETFD) == FD_CLOEXEC);
	V(read(9, buf, sizeof(buf)) == 5 && memcmp(buf, "fifo!", 5) == 0);
	V(write(10, "again", 5) == 5 && read(9, buf, sizeof(buf)) == 5 && memcmp(buf, "again", 5) == 0);
	return 0;
}

START_TEST(pipes)
{
	char *text;
	pid_t pid = start_target(pipes_setup, pipes_verify_target);
	struct fd_image *cap = capture(pid);
	struct fd_image *img = roundtrip(cap, &text);
	ck_assert_msg(strstr(text, " queued=10 data=fds-data/3\n") && strstr(text, "8 pipe-w flags=01 cloexec=0 pipe=") &&
			      strstr(text, "9 fifo flags=04000 cloexec=0 path=/tmp/") && strstr(text, " queued=5 data=fds-data/9\n") &&
			      strstr(text, "10 fifo flags=01 cloexec=1 path=/tmp/"),
		      "unexpected text:\n%s", text);
	/* The original checks first: a FIFO is one object for both, and its
	 * bytes are refilled only once the original has drained it. */
	ck_assert_int_eq(finish_target(pid), 0);
	RESTORE_OK(img, pipes_verify_restored);
	free(text);
	fds_free(img);
	fds_free(cap);
}
END_TEST

/* Through a real snapshot: fds_write into the directory backend, commit,
 * open, fds_load. */
START_TEST(through_a_snapshot)
{
	char dir[128], *text;
	size_t len;
	struct store *st;
	struct store_snap *w, *r;
	struct fd_image *img = NULL;

	pid_t pid = start_target(pipes_setup, pipes_verify_target);
	struct fd_image *cap = capture(pid);
	snprintf(dir, sizeof(dir), "%s/snaps", tmpdir);
	ck_assert_int_eq(mkdir(dir, 0700), 0);
	ck_assert_int_eq(store_open_dir(dir, &st), 0);
	ck_assert_int_eq(store_snap_create(st, "1", 0, &w), 0);
	ck_assert_msg(fds_write(cap, w) == 0, "%s", err_msg());
	ck_assert_msg(store_snap_commit(w) == 0, "%s", err_msg());
	store_snap_close(w);
	ck_assert_int_eq(store_snap_open(st, "1", STORE_OPEN_VERIFY, &r), 0);
	ck_assert_int_eq(store_snap_read_all(r, "fds-data/3", &text, &len), 0);
	ck_assert_int_eq(len, 10);
	ck_assert_mem_eq(text, "hello pipe", 10);
	free(text);
	ck_assert_msg(fds_load(r, false, &img) == 0, "%s", err_msg());
	store_snap_close(r);
	store_close(st);
	ck_assert_int_eq(finish_target(pid), 0);
	RESTORE_OK(img, pipes_verify_restored);
	fds_free(img);
	fds_free(cap);
}
END_TEST

/* fds_load refuses data files that do not match the lines. */
START_TEST(load_is_strict)
{
	static const struct {
		const char *fds, *extra, *extra_data, *want;
	} cases[] = {
		{ "3 pipe-r flags=00 cloexec=0 pipe=7 size=65536 peer=out queued=4 data=fds-data/3\n", "fds-data/3",
		  "abc", "fds-data/3 holds 3 bytes, the line says 4" },
		{ "3 pipe-r flags=00 cloexec=0 pipe=7 size=65536 peer=out queued=3 data=fds-data/3\n", NULL, NULL,
		  "cannot read fds-data/3" },
		{ "3 pipe-r flags=00 cloexec=0 pipe=7 size=65536 peer=out queued=0\n", "fds-data/3", "abc",
		  "fds-data/3: no descriptor line names it" },
		{ "0 dev flags=02 cloexec=0 path=/dev/null rdev=1:3\n", "fds-data/x", "abc", "fds-data/x: not a data file name" },
	};
	char dir[128], name[8];
	struct store *st;
	struct store_snap *w, *r;

	snprintf(dir, sizeof(dir), "%s/snaps", tmpdir);
	ck_assert_int_eq(mkdir(dir, 0700), 0);
	ck_assert_int_eq(store_open_dir(dir, &st), 0);
	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		struct fd_image *img = NULL;
		snprintf(name, sizeof(name), "%zu", i);
		ck_assert_int_eq(store_snap_create(st, name, 0, &w), 0);
		ck_assert_int_eq(store_snap_put(w, "fds", cases[i].fds, strlen(cases[i].fds)), 0);
		if (cases[i].extra)
			ck_assert_int_eq(store_snap_put(w, cases[i].extra, cases[i].extra_data, strlen(cases[i].extra_data)), 0);
		ck_assert_int_eq(store_snap_commit(w), 0);
		store_snap_close(w);
		ck_assert_int_eq(store_snap_open(st, name, 0, &r), 0);
		int rc = fds_load(r, false, &img);
		ck_assert_msg(rc < 0 && strstr(err_msg(), cases[i].want), "case %zu: %d %s", i, rc, err_msg());
		ck_assert_ptr_null(img);
		store_snap_close(r);
	}
	store_close(st);
}
END_TEST

/* ---- eventfd, timerfd, signalfd, epoll ---------------------------------------- */

static void events_setup(void)
{
	uint64_t big = 0x100000000ull;
	struct itimerspec its = { .it_value = { 100, 0 }, .it_interval = { 3, 0 } };
	struct itimerspec once = { .it_value = { 0, 1000000 } };
	sigset_t set;
	int p[2];

	at(eventfd(7, EFD_SEMAPHORE), 3, false);
	at(eventfd(0, EFD_NONBLOCK), 4, true);
	write(4, &big, 8);
	at(timerfd_create(CLOCK_MONOTONIC, 0), 5, false);
	timerfd_settime(5, 0, &its, NULL);
	at(timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK), 9, false);
	timerfd_settime(9, 0, &once, NULL);
	/* a wall-clock deadline an hour ahead */
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	struct itimerspec wall = { .it_value = { now.tv_sec + 3600, 0 } };
	at(timerfd_create(CLOCK_REALTIME, 0), 11, false);
	timerfd_settime(11, TFD_TIMER_ABSTIME, &wall, NULL);
	usleep(20000);
	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	sigaddset(&set, SIGRTMIN + 1);
	at(signalfd(-1, &set, 0), 6, false);
	pipe_hi(p);
	at(p[0], 8, false);
	at(p[1], 10, false);
	write(10, "q", 1);
	at(epoll_create1(0), 7, true);
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = 0x1234 };
	epoll_ctl(7, EPOLL_CTL_ADD, 3, &ev);
	ev = (struct epoll_event){ .events = EPOLLIN | EPOLLET, .data.u64 = 42 };
	epoll_ctl(7, EPOLL_CTL_ADD, 8, &ev);
	ev = (struct epoll_event){ .events = EPOLLOUT, .data.u64 = 7 };
	epoll_ctl(7, EPOLL_CTL_ADD, 10, &ev);
}

static int events_verify(void)
{
	uint64_t v;
	struct itimerspec its;
	struct epoll_event evs[8];
	char buf[256];
	int n, seen = 0;

	V(read(3, &v, 8) == 8 && v == 1);
	V(read(3, &v, 8) == 8 && v == 1);
	V(read(4, &v, 8) == 8 && v == 0x100000000ull);
	V(read(4, &v, 8) < 0 && errno == EAGAIN);
	V(fcntl(4, F_GETFD) == FD_CLOEXEC);
	V(timerfd_gettime(5, &its) == 0 && its.it_value.tv_sec >= 60 && its.it_value.tv_sec < 100);
	V(its.it_interval.tv_sec == 3 && its.it_interval.tv_nsec == 0);
	V(read(9, &v, 8) == 8 && v == 1);
	V(timerfd_gettime(9, &its) == 0 && its.it_value.tv_sec == 0 && its.it_value.tv_nsec == 0);
	/* its deadline, not the time left at the dump (set to 100 s below) */
	V(timerfd_gettime(11, &its) == 0 && its.it_value.tv_sec > 3000 && its.it_value.tv_sec <= 3600);
	snprintf(buf, sizeof(buf), "/proc/self/fdinfo/6");
	char *info = NULL;
	V(read_file_full(buf, &info, NULL) == 0);
	snprintf(buf, sizeof(buf), "sigmask:\t%016llx", (1ull << (SIGUSR1 - 1)) | (1ull << (SIGRTMIN + 1 - 1)));
	V(strstr(info, buf));
	free(info);
	n = epoll_wait(7, evs, 8, 0);
	V(n == 3);
	for (int i = 0; i < n; i++) {
		if (evs[i].data.u64 == 0x1234 && (evs[i].events & EPOLLIN))
			seen |= 1;
		if (evs[i].data.u64 == 42 && (evs[i].events & EPOLLIN))
			seen |= 2;
		if (evs[i].data.u64 == 7 && (evs[i].events & EPOLLOUT))
			seen |= 4;
	}
	V(seen == 7);
	return 0;
}

START_TEST(events)
{
	char *text;
	pid_t pid = start_target(events_setup, NULL);
	struct fd_image *cap = capture(pid);
	kill_target(pid);
	struct fd_image *img = roundtrip(cap, &text);
	/* as if the restore came long after the dump: the time left read
	 * then is stale, the deadline is not */
	for (size_t i = 0; i < img->n; i++)
		if (img->e[i].fd == 11) {
			ck_assert(img->e[i].has_deadline);
			img->e[i].value = (struct timespec){ 100, 0 };
		}
	ck_assert_msg(strstr(text, "3 eventfd flags=02 cloexec=0 count=7 semaphore=1\n") &&
			      strstr(text, " watch=3:0x19:0x1234") && strstr(text, " ticks=1 "),
		      "unexpected text:\n%s", text);
	RESTORE_OK(img, events_verify);
	free(text);
	fds_free(img);
	fds_free(cap);
}
END_TEST

/* ---- memfd and deleted files --------------------------------------------------- */

static char pattern[10000];

static void memfd_setup(void)
{
	int fd = memfd_create("test-mem", MFD_ALLOW_SEALING);
	write(fd, pattern, sizeof(pattern));
	fcntl(fd, F_ADD_SEALS, F_SEAL_GROW | F_SEAL_SHRINK);
	lseek(fd, 100, SEEK_SET);
	at(fd, 3, false);
	fd = open(fpath, O_RDWR | O_CREAT, 0640);
	write(fd, "deleted content", 15);
	lseek(fd, 3, SEEK_SET);
	unlink(fpath);
	at(fd, 4, true);
}

static int memfd_verify(void)
{
	char link[128], buf[sizeof(pattern)];
	struct stat st;
	ssize_t n = readlink("/proc/self/fd/3", link, sizeof(link) - 1);

	V(n > 0);
	link[n] = 0;
	V(strcmp(link, "/memfd:test-mem (deleted)") == 0);
	V(fcntl(3, F_GET_SEALS) == (F_SEAL_GROW | F_SEAL_SHRINK));
	V(pos(3) == 100);
	V(pread(3, buf, sizeof(buf), 0) == sizeof(buf) && memcmp(buf, pattern, sizeof(buf)) == 0);
	V(fstat(4, &st) == 0 && st.st_nlink == 0 && st.st_size == 15 && (st.st_mode & 07777) == 0640);
	V(pos(4) == 3 && fcntl(4, F_GETFD) == FD_CLOEXEC);
	V(read(4, buf, 4) == 4 && memcmp(buf, "eted", 4) == 0);
	return 0;
}

START_TEST(memfd_and_deleted)
{
	for (size_t i = 0; i < sizeof(pattern); i++)
		pattern[i] = (char)(i * 7 + (i >> 8));
	pid_t pid = start_target(memfd_setup, memfd_verify);
	struct fd_image *cap = capture(pid);
	struct fd_image *img = roundtrip(cap, NULL);
	RESTORE_OK(img, memfd_verify);
	ck_assert_int_eq(finish_target(pid), 0);
	fds_free(img);
	fds_free(cap);
}
END_TEST

/* ---- sockets --------------------------------------------------------------------- */

static void sockets_setup(void)
{
	struct sockaddr_in in = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	struct sockaddr_un un = { .sun_family = AF_UNIX };
	int one = 1, sv[2];

	int fd = socket(AF_INET, SOCK_STREAM, 0);
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	bind(fd, (void *)&in, sizeof(in));
	listen(fd, 17);
	at(fd, 3, false);
	fd = socket(AF_UNIX, SOCK_STREAM, 0);
	snprintf(un.sun_path, sizeof(un.sun_path), "%s/sock", tmpdir);
	bind(fd, (void *)&un, sizeof(un));
	listen(fd, 5);
	at(fd, 4, true);
	pair_hi(SOCK_STREAM, sv);
	at(sv[0], 5, false);
	at(sv[1], 6, false);
	write(5, "pi", 2);
	write(5, "ng", 2);
	write(6, "pong", 4);
	shutdown(5, SHUT_WR);
	pair_hi(SOCK_DGRAM, sv);
	at(sv[0], 7, false);
	at(sv[1], 8, false);
	/* Datagram sockets: a client (lower number) connected to a bound
	 * one of ours, one connected to a socket outside, an unbound one. */
	struct sockaddr_un du = { .sun_family = AF_UNIX };
	snprintf(du.sun_path, sizeof(du.sun_path), "%s/dsock", tmpdir);
	fd = hi(socket(AF_UNIX, SOCK_DGRAM, 0));
	bind(fd, (void *)&du, sizeof(du));
	at(fd, 13, false);
	fd = hi(socket(AF_UNIX, SOCK_DGRAM, 0));
	connect(fd, (void *)&du, sizeof(du));
	at(fd, 12, false);
	snprintf(du.sun_path, sizeof(du.sun_path), "%s/outside", tmpdir);
	fd = hi(socket(AF_UNIX, SOCK_DGRAM, 0));
	connect(fd, (void *)&du, sizeof(du));
	at(fd, 14, false);
	at(hi(socket(AF_UNIX, SOCK_DGRAM, 0)), 15, false);
	/* More bytes queued than default buffers hold. */
	int big = 1 << 20;
	pair_hi(SOCK_STREAM, sv);
	setsockopt(sv[0], SOL_SOCKET, SO_SNDBUFFORCE, &big, sizeof(big));
	fcntl(sv[0], F_SETFL, O_NONBLOCK);
	for (int i = 0; i < 300; i++)
		write(sv[0], bigbuf, sizeof(bigbuf));
	at(sv[0], 10, false);
	at(sv[1], 11, false);
	/* IPv6, where the machine has ::1. */
	struct sockaddr_in6 in6 = { .sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT };
	fd = socket(AF_INET6, SOCK_STREAM | SOCK_NONBLOCK, 0);
	setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (bind(fd, (void *)&in6, sizeof(in6)) == 0 && listen(fd, 3) == 0)
		at(fd, 9, true);
	else
		close(fd);
}

static int sockets_verify(void)
{
	struct sockaddr_in in = { 0 };
	socklen_t len = sizeof(in);
	struct sockaddr_un un = { .sun_family = AF_UNIX };
	char buf[16];
	int v;

	V(getsockname(3, (void *)&in, &len) == 0 && ntohs(in.sin_port) == tcp_port);
	int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	V(connect(c, (void *)&in, sizeof(in)) == 0);
	int a = accept(3, NULL, NULL);
	V(a >= 0 && write(c, "t", 1) == 1 && read(a, buf, 1) == 1 && buf[0] == 't');
	len = sizeof(v);
	V(getsockopt(3, SOL_SOCKET, SO_REUSEADDR, &v, &len) == 0 && v == 1);

	c = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	snprintf(un.sun_path, sizeof(un.sun_path), "%s/sock", tmpdir);
	V(connect(c, (void *)&un, sizeof(un)) == 0);
	a = accept(4, NULL, NULL);
	V(a >= 0 && fcntl(4, F_GETFD) == FD_CLOEXEC);

	V(read(6, buf, sizeof(buf)) == 4 && memcmp(buf, "ping", 4) == 0);
	V(read(6, buf, sizeof(buf)) == 0); /* 5 shut its writing down */
	V(read(5, buf, sizeof(buf)) == 4 && memcmp(buf, "pong", 4) == 0);
	V(write(6, "z", 1) == 1 && read(5, buf, 1) == 1 && buf[0] == 'z');
	V(send(7, "d", 1, 0) == 1 && recv(8, buf, sizeof(buf), 0) == 1 && buf[0] == 'd');
	static char got[300 * sizeof(bigbuf)];
	V(fcntl(11, F_SETFL, O_NONBLOCK) == 0);
	size_t n = 0;
	for (ssize_t k; (k = read(11, got + n, sizeof(got) - n)) > 0;)
		n += (size_t)k;
	V(n == sizeof(got));
	for (size_t i = 0; i < n; i++)
		V(got[i] == bigbuf[i % sizeof(bigbuf)]);
	struct sockaddr_un pu;
	char want[108];
	len = sizeof(pu);
	snprintf(want, sizeof(want), "%s/dsock", tmpdir);
	V(getpeername(12, (void *)&pu, &len) == 0 && strcmp(pu.sun_path, want) == 0);
	V(send(12, "c", 1, 0) == 1 && recv(13, buf, sizeof(buf), 0) == 1 && buf[0] == 'c');
	len = sizeof(pu);
	snprintf(want, sizeof(want), "%s/outside", tmpdir);
	V(getpeername(14, (void *)&pu, &len) == 0 && strcmp(pu.sun_path, want) == 0);
	V(send(14, "o", 1, 0) == 1);
	len = sizeof(pu);
	V(getsockname(15, (void *)&pu, &len) == 0 && len == sizeof(sa_family_t));
	V(getpeername(15, (void *)&pu, &len) < 0 && errno == ENOTCONN);
	V(is_open(9) == (tcp6_port != 0));
	if (tcp6_port) {
		struct sockaddr_in6 in6 = { 0 };
		len = sizeof(in6);
		V(getsockname(9, (void *)&in6, &len) == 0 && in6.sin6_family == AF_INET6);
		V(ntohs(in6.sin6_port) == tcp6_port);
		len = sizeof(v);
		V(getsockopt(9, IPPROTO_IPV6, IPV6_V6ONLY, &v, &len) == 0 && v == 1);
		V((fcntl(9, F_GETFL) & O_NONBLOCK) && fcntl(9, F_GETFD) == FD_CLOEXEC);
		c = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
		V(connect(c, (void *)&in6, sizeof(in6)) == 0);
		V(accept(9, NULL, NULL) >= 0);
	}
	return 0;
}

START_TEST(sockets)
{
	char *text, got[4];
	struct sockaddr_un ou = { .sun_family = AF_UNIX };
	int outside = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);

	snprintf(ou.sun_path, sizeof(ou.sun_path), "%s/outside", tmpdir);
	ck_assert_int_eq(bind(outside, (void *)&ou, sizeof(ou)), 0);
	for (size_t i = 0; i < sizeof(bigbuf); i++)
		bigbuf[i] = (char)(i * 13 + 1);
	pid_t pid = start_target(sockets_setup, NULL);
	struct fd_image *cap = capture(pid);
	kill_target(pid);
	struct fd_image *img = roundtrip(cap, &text);
	struct fd_entry *e = fds_find(img, 3);
	ck_assert_int_eq(e->kind, FD_KIND_TCP_LISTEN);
	tcp_port = ntohs(((struct sockaddr_in *)&e->addr)->sin_port);
	e = fds_find(img, 9);
	tcp6_port = e ? ntohs(((struct sockaddr_in6 *)&e->addr)->sin6_port) : 0;
	if (!e)
		fprintf(stderr, "sockets: no IPv6 loopback here, IPv6 listener not tested\n");
	else
		ck_assert_msg(strstr(text, "9 tcp-listen flags=04002 cloexec=1 family=inet6 addr=::1 port="), "%s", text);
	ck_assert_msg(strstr(text, " queued=307200 data=fds-data/11\n"), "%s", text);
	ck_assert_msg(strstr(text, " backlog=17 reuseaddr=1 ") && strstr(text, " queued=4 data=fds-data/6\n") &&
			      strstr(text, " type=dgram "),
		      "unexpected text:\n%s", text);
	ck_assert_msg(strstr(text, "12 unix-dgram flags=02 cloexec=0 peer=/tmp/") &&
			      strstr(text, "13 unix-dgram flags=02 cloexec=0 path=/tmp/") &&
			      strstr(text, "15 unix-dgram flags=02 cloexec=0\n"),
		      "%s", text);
	/* The socket files of the dead listeners are in the way: replaced. */
	RESTORE_OK(img, sockets_verify);
	ck_assert_int_eq(recv(outside, got, sizeof(got), MSG_DONTWAIT), 1);
	ck_assert_int_eq(got[0], 'o');
	close(outside);
	free(text);
	fds_free(img);
	fds_free(cap);
}
END_TEST

/* ---- refusals ------------------------------------------------------------------------ */

static void half_closed_setup(void)
{
	struct sockaddr_in in = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(in);
	int l = socket(AF_INET, SOCK_STREAM, 0);

	bind(l, (void *)&in, sizeof(in));
	listen(l, 4);
	getsockname(l, (void *)&in, &len);
	int c = socket(AF_INET, SOCK_STREAM, 0);
	connect(c, (void *)&in, sizeof(in));
	int a = accept(l, NULL, NULL);
	/* half closed: FIN_WAIT2 here, CLOSE_WAIT at the other end */
	shutdown(c, SHUT_WR);
	struct tcp_info ti = { .tcpi_state = 4 };
	for (int i = 0; i < 5000 && ti.tcpi_state == 4; i++) {
		len = sizeof(ti);
		getsockopt(c, IPPROTO_TCP, TCP_INFO, &ti, &len);
		usleep(200);
	}
	at(l, 3, false);
	at(c, 4, false);
	at(a, 5, false);
}

/* Only ESTABLISHED connections are taken (fds-tcp.c); the others are
 * refused by their state, before the process is touched. */
START_TEST(half_closed_tcp_is_refused)
{
	pid_t pid = start_target(half_closed_setup, NULL);
	struct fd_image *cap = NULL;

	ck_assert_int_eq(fds_check(pid), -EOPNOTSUPP);
	ck_assert_msg(strncmp(err_msg(), "fd 4: TCP connection 127.0.0.1:", 31) == 0 &&
			      strstr(err_msg(), " -> 127.0.0.1:") && strstr(err_msg(), " in state FIN_WAIT2: not supported"),
		      "%s", err_msg());
	ck_assert_int_eq(fds_capture(pid, &cap), -EOPNOTSUPP);
	ck_assert_ptr_null(cap);
	kill_target(pid);
}
END_TEST

/* an inotify instance with an event not read */
static void inotify_setup(void)
{
	at(inotify_init1(0), 3, false);
	close(open(fpath, O_RDWR | O_CREAT | O_CLOEXEC, 0600));
	if (inotify_add_watch(3, fpath, IN_ATTRIB) != 1 || chmod(fpath, 0640) < 0)
		_exit(5);
}

/* an rtnetlink socket with the answer to a request not read */
static void netlink_setup(void)
{
	struct {
		struct nlmsghdr h;
		struct ifinfomsg i;
	} req = { .h = { .nlmsg_len = sizeof(req), .nlmsg_type = RTM_GETLINK, .nlmsg_flags = NLM_F_REQUEST },
		  .i = { .ifi_family = AF_UNSPEC, .ifi_index = 1 } };
	int s = socket(AF_NETLINK, SOCK_RAW, NETLINK_ROUTE);
	struct pollfd p = { .fd = s, .events = POLLIN };
	if (send(s, &req, sizeof(req), 0) != sizeof(req) || poll(&p, 1, 10000) != 1)
		_exit(5);
	at(s, 4, false);
}

/* an rtnetlink socket whose dump request has answers still to come */
static void netlink_dump_setup(void)
{
	struct {
		struct nlmsghdr h;
		struct ifinfomsg i;
	} req = { .h = { .nlmsg_len = sizeof(req), .nlmsg_type = RTM_GETLINK,
			 .nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP },
		  .i = { .ifi_family = AF_UNSPEC } };
	int s = socket(AF_NETLINK, SOCK_RAW, NETLINK_ROUTE);
	struct pollfd p = { .fd = s, .events = POLLIN };
	if (send(s, &req, sizeof(req), 0) != sizeof(req) || poll(&p, 1, 10000) != 1)
		_exit(5);
	at(s, 4, false);
}

/* packet sockets on lo: fd 4 with a receive ring, fd 5 in a fanout group */
static void packet_ring_setup(void)
{
	struct tpacket_req req = { .tp_block_size = 4096, .tp_block_nr = 1, .tp_frame_size = 2048, .tp_frame_nr = 2 };
	int s = socket(AF_PACKET, SOCK_RAW, htons(0x88b7));
	if (s < 0 || setsockopt(s, SOL_PACKET, PACKET_RX_RING, &req, sizeof(req)) < 0)
		_exit(5);
	at(s, 4, false);
}

static void packet_fanout_setup(void)
{
	int s = socket(AF_PACKET, SOCK_RAW, htons(0x88b7)), arg = 4242 | (PACKET_FANOUT_HASH << 16);
	if (s < 0 || setsockopt(s, SOL_PACKET, PACKET_FANOUT, &arg, sizeof(arg)) < 0)
		_exit(5);
	at(s, 5, false);
}

/* an rtnetlink socket with an eBPF program attached (returns 0: drops all) */
static void netlink_ebpf_setup(void)
{
	struct bpf_insn prog[] = {
		{ .code = BPF_ALU64 | BPF_MOV | BPF_K, .dst_reg = 0, .imm = 0 },
		{ .code = BPF_JMP | BPF_EXIT },
	};
	union bpf_attr a = { .prog_type = BPF_PROG_TYPE_SOCKET_FILTER, .insn_cnt = 2,
			     .insns = (uintptr_t)prog, .license = (uintptr_t)"GPL" };
	int p = (int)syscall(SYS_bpf, BPF_PROG_LOAD, &a, sizeof(a));
	int s = socket(AF_NETLINK, SOCK_RAW, NETLINK_ROUTE);
	if (p < 0 || s < 0 || setsockopt(s, SOL_SOCKET, SO_ATTACH_BPF, &p, sizeof(p)) < 0)
		_exit(5);
	close(p);
	at(s, 4, false);
}

/* a fanotify group with an event not read */
static void fanotify_setup(void)
{
	close(open(fpath, O_RDWR | O_CREAT | O_CLOEXEC, 0600));
	at(fanotify_init(FAN_CLASS_NOTIF, O_RDONLY), 3, false);
	if (fanotify_mark(3, FAN_MARK_ADD, FAN_MODIFY, AT_FDCWD, fpath) < 0)
		_exit(5);
	int f = open(fpath, O_WRONLY | O_CLOEXEC);
	if (write(f, "x", 1) != 1)
		_exit(5);
	close(f);
}

/* a permission group with a permission event in a mark: an event it read
 * and did not answer would show nowhere */
static void fanotify_perm_setup(void)
{
	close(open(fpath, O_RDWR | O_CREAT | O_CLOEXEC, 0600));
	at(fanotify_init(FAN_CLASS_CONTENT, O_RDONLY), 3, false);
	if (fanotify_mark(3, FAN_MARK_ADD, FAN_OPEN_PERM | FAN_CLOSE_WRITE, AT_FDCWD, fpath) < 0)
		_exit(5);
}

/* A read lease: state of the description no restore can take back. */
static void lease_setup(void)
{
	close(open(fpath, O_RDWR | O_CREAT | O_CLOEXEC, 0600));
	int fd = open(fpath, O_RDONLY);
	if (fcntl(fd, F_SETLEASE, F_RDLCK) < 0)
		_exit(5);
	at(fd, 3, false);
}

/* A flock on a file unlinked since: restored from the image as a new
 * inode, so nobody else could be kept out by its lock. */
static void deleted_flock_setup(void)
{
	int fd = open(fpath, O_RDWR | O_CREAT, 0600);
	if (flock(fd, LOCK_EX) < 0)
		_exit(5);
	unlink(fpath);
	at(fd, 3, false);
}

static void mapped_memfd_setup(void)
{
	/* a descriptor and a shared mapping are one file again after the
	 * restore, but a writable mapping of a memfd sealed against future
	 * writes cannot be made again after the seal */
	int fd = memfd_create("mapped", MFD_ALLOW_SEALING);
	ftruncate(fd, 4096);
	mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	fcntl(fd, F_ADD_SEALS, F_SEAL_FUTURE_WRITE);
	at(fd, 5, false);
}

static void epoll_stale_setup(void)
{
	int p[2];
	struct epoll_event ev = { .events = EPOLLIN };

	pipe_hi(p);
	at(epoll_create1(0), 3, false);
	at(p[0], 4, false);
	at(p[1], 5, false);
	epoll_ctl(3, EPOLL_CTL_ADD, 4, &ev);
	/* a process of its own (outside the process looked at) holds the
	 * file: the watch stays, under a number that is gone, and nothing of
	 * the process can give the restore that file */
	if (fork() == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		for (;;)
			pause();
	}
	close(4);
}

/* Watches whose numbers were closed (4: its file held at 6) and replaced
 * (5: a pipe read end, its number now an eventfd, the read end held at
 * 9), and a number closed above every descriptor (20, held at 8, the
 * write end): each watch restored under its number, with the file of its
 * holder, and the replaced number still the eventfd. */
static void epoll_closed_setup(void)
{
	int p[2], q[2];

	at(epoll_create1(0), 3, false);
	pipe_hi(p);
	at(p[0], 4, false);
	at(p[1], 7, false);
	pipe_hi(q);
	at(q[0], 5, false);
	at(q[1], 8, false);
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = 0x44 };
	epoll_ctl(3, EPOLL_CTL_ADD, 4, &ev);
	ev = (struct epoll_event){ .events = EPOLLIN, .data.u64 = 0x55 };
	epoll_ctl(3, EPOLL_CTL_ADD, 5, &ev);
	at(dup(8), 20, false);
	ev = (struct epoll_event){ .events = EPOLLOUT, .data.u64 = 0x20 };
	epoll_ctl(3, EPOLL_CTL_ADD, 20, &ev);
	close(20);
	at(dup(4), 6, false);
	close(4);
	at(dup(5), 9, false);
	at(eventfd(0, 0), 5, true);
	write(7, "a", 1);
	write(8, "b", 1);
}

static int epoll_closed_verify(void)
{
	struct epoll_event evs[8];
	int n, seen = 0;

	V(!is_open(4) && !is_open(20));
	V(fcntl(5, F_GETFD) == FD_CLOEXEC);
	uint64_t v = 3;
	V(write(5, &v, 8) == 8 && read(5, &v, 8) == 8 && v == 3); /* still the eventfd */
	n = epoll_wait(3, evs, 8, 0);
	V(n == 3);
	for (int i = 0; i < n; i++)
		seen |= evs[i].data.u64 == 0x44 && (evs[i].events & EPOLLIN) ? 1
			: evs[i].data.u64 == 0x55 && (evs[i].events & EPOLLIN) ? 2
			: evs[i].data.u64 == 0x20 && (evs[i].events & EPOLLOUT) ? 4 : 0;
	V(seen == 7);
	/* the kernel knows them by their numbers: 4 can be added again
	 * now (another file), 6's file can be added too (another number) */
	struct epoll_event ev = { .events = EPOLLIN };
	V(epoll_ctl(3, EPOLL_CTL_ADD, 6, &ev) == 0);
	/* the watch under 4 goes once its file does */
	char c;
	V(read(6, &c, 1) == 1 && c == 'a');
	V(epoll_ctl(3, EPOLL_CTL_DEL, 6, NULL) == 0);
	close(6);
	close(7);
	n = epoll_wait(3, evs, 8, 0);
	for (int i = 0; i < n; i++)
		V(evs[i].data.u64 != 0x44);
	return 0;
}

START_TEST(epoll_closed_number)
{
	char *text;
	pid_t pid = start_target(epoll_closed_setup, NULL);
	struct fd_image *cap = capture(pid);
	kill_target(pid);
	struct fd_image *img = roundtrip(cap, &text);
	ck_assert_msg(strstr(text, "3 epoll flags=02 cloexec=0 ") && strstr(text, " watch=4:0x19:0x44:6") &&
			      strstr(text, " watch=5:0x19:0x55:9") && strstr(text, " watch=20:0x1c:0x20:8"),
		      "unexpected text:\n%s", text);
	RESTORE_OK(img, epoll_closed_verify);
	free(text);
	fds_free(img);
	fds_free(cap);
}
END_TEST

static void scm_rights_setup(void)
{
	int sv[2], one = open("/dev/null", O_RDONLY);
	char cbuf[CMSG_SPACE(sizeof(int))] = { 0 };
	struct iovec iov = { .iov_base = "x", .iov_len = 1 };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof(cbuf) };
	struct cmsghdr *c = CMSG_FIRSTHDR(&mh);

	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &one, sizeof(int));
	pair_hi(SOCK_STREAM, sv);
	write(sv[0], "ab", 2);
	sendmsg(sv[0], &mh, 0);
	close(one);
	at(sv[0], 3, false);
	at(sv[1], 4, false);
}

static uint16_t *shared_port; /* a MAP_SHARED page: the target tells its port */

static void backlog_setup(void)
{
	struct sockaddr_in in = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(in);
	int l = socket(AF_INET, SOCK_STREAM, 0);

	bind(l, (void *)&in, sizeof(in));
	listen(l, 4);
	getsockname(l, (void *)&in, &len);
	*shared_port = ntohs(in.sin_port);
	at(l, 3, false);
}

START_TEST(listener_with_waiting_connection_is_refused)
{
	shared_port = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	ck_assert_ptr_ne(shared_port, MAP_FAILED);
	pid_t pid = start_target(backlog_setup, NULL);
	struct sockaddr_in in = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
				  .sin_port = htons(*shared_port) };
	int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	/* The kernel completes the handshake for the stopped target. */
	ck_assert_int_eq(connect(c, (void *)&in, sizeof(in)), 0);
	ck_assert_int_eq(fds_check(pid), -EOPNOTSUPP);
	ck_assert_msg(strstr(err_msg(), "fd 3: listening TCP socket 127.0.0.1:") &&
			      strstr(err_msg(), "with 1 connections waiting to be accepted: not supported"),
		      "%s", err_msg());
	close(c);
	kill_target(pid);
	munmap(shared_port, 4096);
}
END_TEST

static void expect_refused(void (*setup)(void), const char *what)
{
	pid_t pid = start_target(setup, NULL);
	struct fd_image *cap = NULL;

	ck_assert_int_eq(fds_check(pid), -EOPNOTSUPP);
	ck_assert_msg(strstr(err_msg(), what) && strstr(err_msg(), ": not supported"), "%s", err_msg());
	ck_assert_int_eq(fds_capture(pid, &cap), -EOPNOTSUPP);
	ck_assert_ptr_null(cap);
	kill_target(pid);
}

START_TEST(other_kinds_are_refused)
{
	expect_refused(lease_setup, "fd 3: /tmp/");
	ck_assert_msg(strstr(err_msg(), ": LEASE held (lease or delegation)"), "%s", err_msg());
	expect_refused(deleted_flock_setup, "fd 3: /tmp/");
	ck_assert_msg(strstr(err_msg(), "(deleted): FLOCK lock on a 'deleted' descriptor, which is not reopened by its path"),
		      "%s", err_msg());
	/* the file of a watch whose number was closed, held by a process
	 * outside: only the tree can tell that none of it holds it */
	{
		char want[160];
		struct fd_image *cap = NULL, *sh = NULL;
		pid_t pid = start_target(epoll_stale_setup, NULL);
		ck_assert_msg(fds_check(pid) == 0, "%s", err_msg());
		ck_assert_int_eq(fds_check_tree(&pid, 1), -EOPNOTSUPP);
		snprintf(want, sizeof(want),
			 "pid %d fd 3: epoll watches fd 4, closed or replaced since, and its file is held by no other "
			 "descriptor of the process or of its tree: not supported", pid);
		ck_assert_msg(strstr(err_msg(), want), "%s", err_msg());
		ck_assert_int_eq(fds_capture(pid, &cap), 0);
		ck_assert_int_eq(fds_share(&cap, &pid, 1, &sh), -EOPNOTSUPP);
		ck_assert_ptr_null(sh);
		/* nor can its image be written without that pass */
		char *text;
		size_t len;
		ck_assert_int_eq(fds_format(cap, &text, &len), -EOPNOTSUPP);
		fds_free(cap);
		kill_target(pid);
	}
	expect_refused(scm_rights_setup, "fd 4: descriptors queued in a Unix socket");
	expect_refused(mapped_memfd_setup, "fd 5: /memfd:mapped (deleted) is sealed against future writes "
					   "(F_SEAL_FUTURE_WRITE) and mapped shared and writable at 0x");

	/* queued inotify events cannot be put back into a new instance */
	expect_refused(inotify_setup, "fd 3: inotify with 16 bytes of events not read yet");
	expect_refused(fanotify_setup, "fd 3: fanotify group with 24 bytes of events not read yet");
	expect_refused(fanotify_perm_setup, "fd 3: fanotify permission group with permission events (mask 0x10008) on /tmp/");
	/* nor messages queued in a netlink socket */
	expect_refused(netlink_setup, "fd 4: netlink socket (protocol 0, port ");
	ck_assert_msg(strstr(err_msg(), " bytes of messages not read yet"), "%s", err_msg());
	expect_refused(packet_ring_setup, "fd 4: packet socket on any interface with a ring (PACKET_RX_RING");
	expect_refused(packet_fanout_setup, "fd 5: packet socket on any interface in a fanout group");
	expect_refused(netlink_ebpf_setup, "fd 4: netlink socket with an eBPF program attached (SO_ATTACH_BPF)");
	expect_refused(netlink_dump_setup, "fd 4: netlink socket (protocol 0, port ");
	ck_assert_msg(strstr(err_msg(), ") in the middle of a dump request"), "%s", err_msg());
}
END_TEST

/* ---- pidfds -------------------------------------------------------------------- */

static pid_t test_pid; /* the test process, outside every target's tree */

/* 3: a pidfd of a reaped child; 4: a PIDFD_NONBLOCK pidfd of the test
 * process (outside the tree, alive). */
static void pidfd_setup(void)
{
	pid_t c = fork();
	if (c == 0)
		_exit(0);
	at((int)syscall(SYS_pidfd_open, c, 0), 3, false);
	waitpid(c, NULL, 0);
	at((int)syscall(SYS_pidfd_open, test_pid, O_NONBLOCK), 4, true);
}

static int pidfd_info(int fd, int *pid, unsigned *flags)
{
	char p[64], *text = NULL;
	snprintf(p, sizeof(p), "/proc/self/fdinfo/%d", fd);
	if (read_file_full(p, &text, NULL) < 0)
		return -1;
	const char *a = strstr(text, "flags:"), *b = strstr(text, "\nPid:");
	int ok = a && b && sscanf(a + 6, "%o", flags) == 1 && sscanf(b + 5, "%d", pid) == 1;
	free(text);
	return ok ? 0 : -1;
}

static int pidfd_verify(void)
{
	int pid;
	unsigned fl;
	struct pollfd p = { .fd = 3, .events = POLLIN };

	V(pidfd_info(3, &pid, &fl) == 0 && pid == -1);
	V(poll(&p, 1, 0) == 1 && (p.revents & POLLIN));
	V(syscall(SYS_pidfd_send_signal, 3, 0, NULL, 0) < 0 && errno == ESRCH);
	V(pidfd_info(4, &pid, &fl) == 0 && pid == test_pid && (fl & O_NONBLOCK));
	V(fcntl(4, F_GETFD) == FD_CLOEXEC);
	V(syscall(SYS_pidfd_send_signal, 4, 0, NULL, 0) == 0);
	p.fd = 4;
	V(poll(&p, 1, 0) == 0);
	return 0;
}

START_TEST(pidfd_lines)
{
	char *text, want[96];
	test_pid = getpid();
	pid_t pid = start_target(pidfd_setup, NULL);
	struct fd_image *cap = capture(pid);
	kill_target(pid);
	struct fd_image *img = roundtrip(cap, &text);
	snprintf(want, sizeof(want), "\n4 pidfd flags=04002 cloexec=1 pid=%d start=", test_pid);
	ck_assert_msg(strstr(text, "\n3 pidfd flags=02 cloexec=0 pid=-1\n") && strstr(text, want) &&
			      strstr(text, " tree=0\n"),
		      "unexpected text:\n%s", text);
	RESTORE_OK(img, pidfd_verify);
	/* the outside process as another one (another start time): refused
	 * at load, naming the descriptor and the pid */
	struct fd_entry *e = fds_find(img, 4);
	e->start++;
	ck_assert_int_eq(fds_host_check(img, false), -ESRCH);
	snprintf(want, sizeof(want), "fd 4: pidfd of pid %d, outside the process tree: that process is gone", test_pid);
	ck_assert_msg(strstr(err_msg(), want), "%s", err_msg());
	free(text);
	fds_free(img);
	fds_free(cap);
}
END_TEST

static volatile pid_t thread_tid;

static void *thread_main(void *arg)
{
	(void)arg;
	thread_tid = (pid_t)syscall(SYS_gettid);
	for (;;)
		pause();
	return NULL;
}

/* 3: a PIDFD_THREAD pidfd of a thread of the process, not its main one */
static void pidfd_thread_setup(void)
{
	pthread_t t;
	if (pthread_create(&t, NULL, thread_main, NULL) != 0)
		_exit(90);
	while (!thread_tid)
		usleep(1000);
	at((int)syscall(SYS_pidfd_open, thread_tid, O_EXCL), 3, false);
}

START_TEST(pidfd_of_own_thread_is_refused)
{
	expect_refused(pidfd_thread_setup, "fd 3: pidfd of thread ");
	ck_assert_msg(strstr(err_msg(), " of the process itself (threads are made after the descriptors)"), "%s",
		      err_msg());
}
END_TEST

/* ---- process trees: descriptions shared across processes ----------------------- */

static char *tree_page;     /* MAP_SHARED: pids, steps and reports between processes */
#define TREE_CHILD ((volatile pid_t *)(tree_page + 4000))
#define TREE_STEP ((volatile int *)(tree_page + 4008))
#define TREE_BASE 100

/* In a target: forks a child that runs in_child() and stops itself, waits
 * until it is stopped and tells the test its pid. */
static void fork_stopped_child(void (*in_child)(void))
{
	int st;
	pid_t c = fork();

	if (c < 0)
		_exit(93);
	if (c == 0) {
		in_child();
		raise(SIGSTOP);
		for (;;)
			pause();
	}
	if (waitpid(c, &st, WUNTRACED) != c || !WIFSTOPPED(st))
		_exit(94);
	*TREE_CHILD = c;
}

static void tree_in_child(void)
{
	close(4);     /* the child reads, the parent writes */
	dup2(3, 6);   /* a dup of its own of the inherited file */
}

/* Parent: 3 the file (offset 10), 4 the pipe's write end, 7 an eventfd.
 * Child: 3 and 7 inherited, 5 the pipe's read end, 6 a dup of 3. 0-2 are
 * one /dev/null description for both. 7 bytes wait in the pipe. */
static void tree_setup(void)
{
	int p[2];

	at(open(fpath, O_RDWR | O_CREAT, 0600), 3, false);
	write(3, "0123456789", 10);
	pipe_hi(p);
	at(p[1], 4, false);
	at(p[0], 5, true);
	write(4, "queued!", 7);
	at(eventfd(5, EFD_NONBLOCK), 7, false);
	fork_stopped_child(tree_in_child);
	close(5);
}

static bool tree_wait_step(int want)
{
	for (int i = 0; i < 5000; i++) {
		if (__atomic_load_n(TREE_STEP, __ATOMIC_SEQ_CST) >= want)
			return true;
		usleep(1000);
	}
	return false;
}

/* Exactly the image's numbers are open: nothing of the shared base, nothing
 * of the restorer. */
static int only_image_fds(struct fd_image *img)
{
	for (int fd = 0; fd < 1024; fd++)
		if (is_open(fd) != (fds_find(img, fd) != NULL)) {
			snprintf(report_page, 2048, "fd %d is %s", fd, is_open(fd) ? "open, not in the image" : "not open");
			return 200;
		}
	return 0;
}

static int tree_child_verify(void)
{
	struct pollfd pfd = { .fd = 5, .events = POLLIN };
	char buf[32];
	uint64_t v;

	V(fcntl(5, F_GETFD) == FD_CLOEXEC && fcntl(3, F_GETFD) == 0 && fcntl(6, F_GETFD) == 0);
	V(pos(3) == 10 && pos(6) == 10);
	V(read(5, buf, sizeof(buf)) == 7 && memcmp(buf, "queued!", 7) == 0);
	/* The parent's write end is there: no bytes, no hang-up. */
	V(poll(&pfd, 1, 0) == 0);
	V(read(7, &v, sizeof(v)) == sizeof(v) && v == 5);
	__atomic_store_n(TREE_STEP, 1, __ATOMIC_SEQ_CST);
	V(tree_wait_step(2));
	/* The parent wrote at the file's one offset. */
	V(pos(3) == 12 && pos(6) == 12);
	V(read(5, buf, sizeof(buf)) == 4 && memcmp(buf, "more", 4) == 0);
	/* The parent closed its end, the last writer anywhere: end of file. */
	V(poll(&pfd, 1, 5000) == 1 && (pfd.revents & POLLHUP));
	V(read(5, buf, sizeof(buf)) == 0);
	V(write(6, "C", 1) == 1);
	return 0;
}

static int tree_parent_verify(pid_t child)
{
	uint64_t v;
	int st;

	V(tree_wait_step(1));
	V(pos(3) == 10);
	V(write(3, "AB", 2) == 2);
	V(write(4, "more", 4) == 4);
	V(close(4) == 0);
	__atomic_store_n(TREE_STEP, 2, __ATOMIC_SEQ_CST);
	V(waitpid(child, &st, 0) == child);
	V(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	/* The child's write moved this offset too. */
	V(pos(3) == 13);
	/* One eventfd: the child took its count. */
	V(read(7, &v, sizeof(v)) < 0 && errno == EAGAIN);
	return 0;
}

static int restore_tree_with(struct fd_image *sh, struct fd_image *pimg, struct fd_image *cimg, pid_t old,
			     int (*child_verify)(void), int (*parent_verify)(pid_t));

/* As the tree's restore does it: the shared descriptions opened once, a
 * fork, each process restoring its own table over the inherited ones. */
static int restore_tree(struct fd_image *sh, struct fd_image *pimg, struct fd_image *cimg)
{
	return restore_tree_with(sh, pimg, cimg, 0, tree_child_verify, tree_parent_verify);
}

static char *format(struct fd_image *img)
{
	char *text;
	size_t len;

	ck_assert_int_eq(fds_format(img, &text, &len), 0);
	return text;
}

/* Writes the images into one snapshot of a directory store, each through
 * a view of its directory (shared/, parent/, child/) as a tree's dump
 * does, and loads them back the same way. */
static void through_snapshot(const char *dir, struct fd_image **imgs, const char *const *names,
			     struct fd_image **back, int n)
{
	struct store *st;
	struct store_snap *w, *r, *v;
	char *text;
	size_t len;

	ck_assert_int_eq(store_open_dir(dir, &st), 0);
	ck_assert_int_eq(store_snap_create(st, "1", 0, &w), 0);
	for (int i = 0; i < n; i++) {
		ck_assert_int_eq(store_snap_at(w, names[i], &v), 0);
		ck_assert_msg(fds_write(imgs[i], v) == 0, "%s", err_msg());
		store_snap_close(v);
	}
	ck_assert_msg(store_snap_commit(w) == 0, "%s", err_msg());
	store_snap_close(w);
	ck_assert_int_eq(store_snap_open(st, "1", STORE_OPEN_VERIFY, &r), 0);
	ck_assert_int_eq(store_snap_read_all(r, "shared/fds-data/4", &text, &len), 0);
	ck_assert_int_eq(len, 7);
	free(text);
	for (int i = 0; i < n; i++) {
		ck_assert_int_eq(store_snap_at(r, names[i], &v), 0);
		ck_assert_msg(fds_load(v, false, &back[i]) == 0, "%s: %s", names[i], err_msg());
		store_snap_close(v);
	}
	store_snap_close(r);
	store_close(st);
}

START_TEST(tree_shares_descriptions)
{
	char dir[128], *text, *ptext, *ctext;
	struct fd_image *sh = NULL, *loaded[3], *parsed;

	tree_page = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	ck_assert_ptr_ne(tree_page, MAP_FAILED);
	pid_t pp = start_target(tree_setup, NULL), pc = *TREE_CHILD;
	struct fd_image *cap[2] = { capture(pp), capture(pc) };
	pid_t pids[2] = { pp, pc };
	ck_assert_msg(fds_share(cap, pids, 2, &sh) == 0, "share: %s", err_msg());
	kill_target(pc);
	kill_target(pp);

	text = format(sh);
	ptext = format(cap[0]);
	ctext = format(cap[1]);
	ck_assert_int_eq(fds_count(sh), 5);
	static const char head[] = "0 dev flags=02 cloexec=1 path=/dev/null rdev=1:3\n1 file flags=02 cloexec=1 path=";
	ck_assert_msg(strncmp(text, head, strlen(head)) == 0 &&
			      strstr(text, " pos=10 ") && strstr(text, "\n2 pipe-w flags=01 cloexec=1 pipe=") &&
			      strstr(text, "\n3 eventfd flags=04002 cloexec=1 count=5 semaphore=0\n") &&
			      strstr(text, "\n4 pipe-r flags=00 cloexec=1 pipe=") &&
			      strstr(text, " peer=in queued=7 data=fds-data/4\n") && !strstr(text, "peer=out"),
		      "unexpected shared text:\n%s", text);
	ck_assert_str_eq(ptext, "0 shared of=0 cloexec=0\n1 dup of=0 cloexec=0\n2 dup of=0 cloexec=0\n"
				"3 shared of=1 cloexec=0\n4 shared of=2 cloexec=0\n7 shared of=3 cloexec=0\n");
	ck_assert_str_eq(ctext, "0 shared of=0 cloexec=0\n1 dup of=0 cloexec=0\n2 dup of=0 cloexec=0\n"
				"3 shared of=1 cloexec=0\n5 shared of=4 cloexec=1\n6 dup of=3 cloexec=0\n"
				"7 shared of=3 cloexec=0\n");

	/* Text and back, and through one directory snapshot. */
	static const char *const names[3] = { "shared", "parent", "child" };
	struct fd_image *all[3] = { sh, cap[0], cap[1] };
	const char *texts[3] = { text, ptext, ctext };
	snprintf(dir, sizeof(dir), "%s/snaps", tmpdir);
	ck_assert_int_eq(mkdir(dir, 0700), 0);
	through_snapshot(dir, all, names, loaded, 3);
	for (int i = 0; i < 3; i++) {
		char *again;
		parsed = roundtrip(all[i], &again);
		ck_assert_str_eq(again, texts[i]);
		free(again);
		fds_free(parsed);
		again = format(loaded[i]);
		ck_assert_str_eq(again, texts[i]);
		free(again);
	}
	ck_assert_int_eq(fds_validate_shared(loaded[1], loaded[0]), 0);
	ck_assert_int_eq(fds_validate_shared(loaded[2], loaded[0]), 0);

	memset(tree_page, 0, 4096);
	int s = restore_tree(loaded[0], loaded[1], loaded[2]);
	ck_assert_msg(s == 0, "restored parent: exit %d: %s; child: %s", s, tree_page, tree_page + 2048);
	char *content = NULL;
	ck_assert_int_eq(read_file_full(fpath, &content, NULL), 0);
	ck_assert_str_eq(content, "0123456789ABC");
	free(content);
	for (int i = 0; i < 3; i++)
		fds_free(loaded[i]);
	free(text);
	free(ptext);
	free(ctext);
	fds_free(sh);
	fds_free(cap[0]);
	fds_free(cap[1]);
	munmap(tree_page, 4096);
}
END_TEST

/* ---- process trees: a socket pair between them, O_ASYNC to the parent --------- */

#define ASYNC_SIG (SIGRTMIN + 1)

/* As restore_tree(), with the processes' own checks, and with the O_ASYNC
 * owner that named the dumped parent (old, when > 0) made to name the
 * restored one: this restore cannot give it its pid again, as the
 * engine's does. */
static int restore_tree_with(struct fd_image *sh, struct fd_image *pimg, struct fd_image *cimg, pid_t old,
			     int (*child_verify)(void), int (*parent_verify)(pid_t))
{
	int st, r;
	pid_t pid = fork();

	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		report_page = tree_page;
		for (size_t i = 0; old > 0 && i < sh->n; i++)
			if (sh->e[i].owner_pid == old)
				sh->e[i].owner_pid = getpid();
		for (size_t i = 0; old > 0 && i < pimg->n; i++)
			if (pimg->e[i].owner_pid == old)
				pimg->e[i].owner_pid = getpid();
		r = fds_open_shared(sh, TREE_BASE, -1);
		if (r < 0) {
			snprintf(report_page, 2048, "open shared: %s", err_msg());
			_exit(100);
		}
		pid_t c = fork();
		if (c == 0) {
			report_page = tree_page + 2048;
			r = fds_restore(cimg, sh, TREE_BASE, -1);
			if (r < 0) {
				snprintf(report_page, 1900, "child restore: %s", err_msg());
				_exit(100);
			}
			r = only_image_fds(cimg);
			_exit(r ? r : child_verify());
		}
		r = fds_restore(pimg, sh, TREE_BASE, -1);
		if (r < 0) {
			snprintf(report_page, 2048, "parent restore: %s", err_msg());
			kill(c, SIGKILL);
			_exit(100);
		}
		r = only_image_fds(pimg);
		if (r)
			kill(c, SIGKILL);
		r = r ? r : parent_verify(c);
		if (r)
			kill(c, SIGKILL);
		_exit(r);
	}
	ck_assert_int_eq(waitpid(pid, &st, 0), pid);
	ck_assert_msg(WIFEXITED(st), "restored parent died (status 0x%x)", st);
	return WEXITSTATUS(st);
}

/* Captures the stopped parent and its child, shares, and restores them
 * through the text form; returns the shared image's text. */
static char *tree_cycle(pid_t pp, pid_t pc, int (*child_verify)(void), int (*parent_verify)(pid_t))
{
	struct fd_image *sh = NULL, *back[3];
	char *text;

	struct fd_image *cap[2] = { capture(pp), capture(pc) };
	pid_t pids[2] = { pp, pc };
	ck_assert_msg(fds_tree_check(cap, pids, 2) == 0, "tree check: %s", err_msg());
	ck_assert_msg(fds_share(cap, pids, 2, &sh) == 0, "share: %s", err_msg());
	kill_target(pc);
	kill_target(pp);
	text = format(sh);
	back[0] = roundtrip(sh, NULL);
	back[1] = roundtrip(cap[0], NULL);
	back[2] = roundtrip(cap[1], NULL);
	ck_assert_msg(fds_validate_shared(back[1], back[0]) == 0 && fds_validate_shared(back[2], back[0]) == 0,
		      "%s", err_msg());
	memset(tree_page, 0, 4096);
	int s = restore_tree_with(back[0], back[1], back[2], pp, child_verify, parent_verify);
	ck_assert_msg(s == 0, "restored parent: exit %d: %s; child: %s\nshared:\n%s", s, tree_page, tree_page + 2048,
		      text);
	for (int i = 0; i < 3; i++)
		fds_free(back[i]);
	fds_free(sh);
	fds_free(cap[0]);
	fds_free(cap[1]);
	return text;
}

static void pair_in_child(void)
{
	close(3);
	write(4, "pong!", 5); /* queued at the parent's end */
}

/* Parent: 3, one end of a stream pair, 4 bytes queued for the child.
 * Child: 4, the other end, 5 bytes queued for the parent. Made before the
 * fork, as nginx makes its channels: both held both ends at first. */
static void pair_setup(void)
{
	int sv[2];

	pair_hi(SOCK_STREAM, sv);
	at(sv[0], 3, false);
	at(sv[1], 4, false);
	write(3, "ping", 4);
	fork_stopped_child(pair_in_child);
	close(4);
}

static int pair_child_verify(void)
{
	struct pollfd pfd = { .fd = 4, .events = POLLIN };
	char buf[16];

	V(read(4, buf, sizeof(buf)) == 4 && memcmp(buf, "ping", 4) == 0);
	__atomic_store_n(TREE_STEP, 1, __ATOMIC_SEQ_CST);
	V(poll(&pfd, 1, 5000) == 1 && read(4, buf, sizeof(buf)) == 4 && memcmp(buf, "more", 4) == 0);
	/* The parent closed its end, the last one: end of file. One pair. */
	V(poll(&pfd, 1, 5000) == 1 && read(4, buf, sizeof(buf)) == 0);
	return 0;
}

static int pair_parent_verify(pid_t child)
{
	char buf[16];
	int st;

	V(read(3, buf, sizeof(buf)) == 5 && memcmp(buf, "pong!", 5) == 0);
	V(tree_wait_step(1));
	V(write(3, "more", 4) == 4);
	V(close(3) == 0);
	V(waitpid(child, &st, 0) == child && WIFEXITED(st) && WEXITSTATUS(st) == 0);
	return 0;
}

START_TEST(tree_socket_pair)
{
	tree_page = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	ck_assert_ptr_ne(tree_page, MAP_FAILED);
	pid_t pp = start_target(pair_setup, NULL), pc = *TREE_CHILD;
	char *text = tree_cycle(pp, pc, pair_child_verify, pair_parent_verify);
	/* Both ends in the shared image, each with what it had to read. */
	ck_assert_msg(strstr(text, " unix-pair flags=02 cloexec=1 type=stream pair=") &&
			      strstr(text, " queued=5 data=fds-data/") && strstr(text, " queued=4 data=fds-data/"),
		      "unexpected shared text:\n%s", text);
	free(text);
	munmap(tree_page, 4096);
}
END_TEST

static void async_in_child(void)
{
	/* keeps 3, the parent's end (one description, with its owner), and 4 */
}

/* Parent: 3, a pair end with O_ASYNC, its signals (ASYNC_SIG) to the
 * parent's pid, shared with the child. Child: 3, and 4, the other end. */
static void async_setup(void)
{
	int sv[2];

	pair_hi(SOCK_STREAM, sv);
	at(sv[0], 3, false);
	at(sv[1], 4, false);
	fcntl(3, F_SETOWN, getpid());
	fcntl(3, F_SETSIG, ASYNC_SIG);
	fcntl(3, F_SETFL, O_ASYNC | O_NONBLOCK);
	fork_stopped_child(async_in_child);
	close(4);
}

static int async_child_verify(void)
{
	V(tree_wait_step(1));
	V(write(4, "x", 1) == 1);
	return 0;
}

static int async_parent_verify(pid_t child)
{
	struct f_owner_ex o;
	sigset_t set;
	siginfo_t si;
	struct timespec ts = { 5, 0 };
	char c;
	int st;

	sigemptyset(&set);
	sigaddset(&set, ASYNC_SIG);
	V(sigprocmask(SIG_BLOCK, &set, NULL) == 0);
	V(fcntl(3, F_GETOWN_EX, &o) == 0 && o.type == F_OWNER_PID && o.pid == getpid());
	V(fcntl(3, F_GETSIG) == ASYNC_SIG);
	V((fcntl(3, F_GETFL) & (O_ASYNC | O_NONBLOCK)) == (O_ASYNC | O_NONBLOCK));
	__atomic_store_n(TREE_STEP, 1, __ATOMIC_SEQ_CST);
	/* The child's write signals us, naming the descriptor. */
	V(sigtimedwait(&set, &si, &ts) == ASYNC_SIG && si.si_fd == 3);
	V(read(3, &c, 1) == 1 && c == 'x');
	V(waitpid(child, &st, 0) == child && WIFEXITED(st) && WEXITSTATUS(st) == 0);
	return 0;
}

START_TEST(tree_async_owner)
{
	char want[64];

	tree_page = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	ck_assert_ptr_ne(tree_page, MAP_FAILED);
	pid_t pp = start_target(async_setup, NULL), pc = *TREE_CHILD;
	char *text = tree_cycle(pp, pc, async_child_verify, async_parent_verify);
	snprintf(want, sizeof(want), " queued=0 owner=pid:%d sig=%d\n", pp, ASYNC_SIG);
	ck_assert_msg(strstr(text, " unix-pair flags=024002 cloexec=1 type=stream pair=") && strstr(text, want),
		      "unexpected shared text:\n%s", text);
	free(text);
	munmap(tree_page, 4096);
}
END_TEST

/* Signals to the test itself, a pair end whose other end is in a process
 * outside the tree: each process's check takes them, the tree refuses. */
static void async_outside_setup(void)
{
	int p[2];
	pipe_hi(p);
	at(p[0], 3, false);
	at(p[1], 4, false);
	fcntl(3, F_SETOWN, getppid());
	fcntl(3, F_SETSIG, SIGWINCH); /* the test ignores it when the pipe closes */
	fcntl(3, F_SETFL, O_ASYNC);
}

static void outside_in_child(void)
{
	close(3);
}

static void pair_outside_setup(void)
{
	int sv[2];

	pair_hi(SOCK_SEQPACKET, sv);
	at(sv[0], 3, false);
	at(sv[1], 4, false);
	fork_stopped_child(outside_in_child);
	close(4);
}

START_TEST(tree_refuses_what_is_outside)
{
	char want[128];
	struct fd_image *cap, *sh = NULL;

	tree_page = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	ck_assert_ptr_ne(tree_page, MAP_FAILED);
	pid_t pid = start_target(async_outside_setup, NULL);
	cap = capture(pid);
	ck_assert_int_eq(fds_check_tree(&pid, 1), -EOPNOTSUPP);
	snprintf(want, sizeof(want), "pid %d fd 3: O_ASYNC signals go to process %d, outside the process tree", pid,
		 getpid());
	ck_assert_msg(strstr(err_msg(), want), "%s", err_msg());
	ck_assert_int_eq(fds_share(&cap, &pid, 1, &sh), -EOPNOTSUPP);
	ck_assert_ptr_null(sh);
	fds_free(cap);
	kill_target(pid);

	pid = start_target(pair_outside_setup, NULL);
	pid_t child = *TREE_CHILD;
	cap = capture(pid);
	ck_assert_int_eq(fds_check_tree(&pid, 1), -EOPNOTSUPP);
	snprintf(want, sizeof(want), "pid %d fd 3: Unix seqpacket socket connected to socket:[", pid);
	ck_assert_msg(strstr(err_msg(), want) && strstr(err_msg(), "] outside the process tree: not supported"), "%s",
		      err_msg());
	ck_assert_int_eq(fds_share(&cap, &pid, 1, &sh), -EOPNOTSUPP);
	/* With the child, the tree holds both ends. */
	pid_t both[2] = { pid, child };
	ck_assert_msg(fds_check_tree(both, 2) == 0, "%s", err_msg());
	fds_free(cap);
	kill(child, SIGKILL);
	kill_target(pid);
	munmap(tree_page, 4096);
}
END_TEST

static void nothing(void)
{
}

static void tree_epoll_setup(void)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = 4 };

	at(eventfd(0, 0), 4, false);
	at(epoll_create1(0), 3, false);
	epoll_ctl(3, EPOLL_CTL_ADD, 4, &ev);
	fork_stopped_child(nothing);
}

START_TEST(tree_shared_epoll_is_refused)
{
	char want[128], *before[2], *after;
	struct fd_image *sh = NULL;

	tree_page = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	ck_assert_ptr_ne(tree_page, MAP_FAILED);
	pid_t pp = start_target(tree_epoll_setup, NULL), pc = *TREE_CHILD;
	struct fd_image *cap[2] = { capture(pp), capture(pc) };
	pid_t pids[2] = { pp, pc };
	before[0] = format(cap[0]);
	before[1] = format(cap[1]);
	ck_assert_int_eq(fds_share(cap, pids, 2, &sh), -EOPNOTSUPP);
	ck_assert_ptr_null(sh);
	snprintf(want, sizeof(want), "pid %d fd 3, pid %d fd 3: one epoll instance shared by processes", pp, pc);
	ck_assert_msg(strstr(err_msg(), want), "%s", err_msg());
	/* Refused before anything moved. */
	for (int i = 0; i < 2; i++) {
		after = format(cap[i]);
		ck_assert_str_eq(after, before[i]);
		free(after);
		free(before[i]);
	}
	/* One process alone shares nothing with itself: an empty image, the
	 * table as it was. */
	before[0] = format(cap[0]);
	ck_assert_msg(fds_share(cap, pids, 1, &sh) == 0, "%s", err_msg());
	ck_assert_int_eq(fds_count(sh), 0);
	after = format(cap[0]);
	ck_assert_str_eq(after, before[0]);
	free(after);
	free(before[0]);
	fds_free(sh);
	kill_target(pc);
	kill_target(pp);
	fds_free(cap[0]);
	fds_free(cap[1]);
	munmap(tree_page, 4096);
}
END_TEST

/* 3: a pidfd of the parent itself, inherited by its child: one pidfd of
 * a process of the tree, shared by two of them */
static void tree_pidfd_setup(void)
{
	at((int)syscall(SYS_pidfd_open, getpid(), 0), 3, false);
	fork_stopped_child(nothing);
}

START_TEST(tree_shared_pidfd_is_refused)
{
	char want[160];
	struct fd_image *sh = NULL;

	tree_page = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	ck_assert_ptr_ne(tree_page, MAP_FAILED);
	pid_t pp = start_target(tree_pidfd_setup, NULL), pc = *TREE_CHILD;
	struct fd_image *cap[2] = { capture(pp), capture(pc) };
	pid_t pids[2] = { pp, pc };
	/* each alone: the parent's own, the child's its parent's (not yet
	 * known to be of the tree: the tree's pass tells) */
	ck_assert(fds_find(cap[0], 3)->in_tree && !fds_find(cap[1], 3)->in_tree);
	ck_assert_int_eq(fds_share(cap, pids, 2, &sh), -EOPNOTSUPP);
	ck_assert_ptr_null(sh);
	snprintf(want, sizeof(want), "pid %d fd 3, pid %d fd 3: one pidfd of pid %d, a process of the tree, shared by processes",
		 pp, pc, pp);
	ck_assert_msg(strstr(err_msg(), want), "%s", err_msg());
	kill_target(pc);
	kill_target(pp);
	fds_free(cap[0]);
	fds_free(cap[1]);
	munmap(tree_page, 4096);
}
END_TEST

/* A `shared` line names an id of the shared image; the shared image is
 * numbered 0, 1, 2, ... and holds nothing that names a process's numbers. */
START_TEST(shared_lines_are_checked)
{
	struct fd_image *img = NULL, *sh = NULL, *bad = NULL;
	int fd;

	ck_assert_msg(fds_parse("3 shared of=1 cloexec=1\n4 dup of=3 cloexec=0\n", NULL, NULL, &img) == 0, "%s",
		      err_msg());
	ck_assert_int_eq(fds_parse("0 dev flags=02 cloexec=1 path=/dev/null rdev=1:3\n", NULL, NULL, &sh), 0);
	ck_assert_int_eq(fds_validate_shared(img, sh), -EBADMSG);
	ck_assert_msg(strstr(err_msg(), "fd 3: shared of=1, but the shared image has 1"), "%s", err_msg());
	fds_free(sh);
	ck_assert_int_eq(fds_parse("0 dev flags=02 cloexec=1 path=/dev/null rdev=1:3\n"
				   "2 dev flags=02 cloexec=1 path=/dev/null rdev=1:3\n", NULL, NULL, &bad), 0);
	ck_assert_int_eq(fds_validate_shared(NULL, bad), -EBADMSG);
	ck_assert_int_eq(fds_open_shared(bad, TREE_BASE, -1), -EBADMSG);
	fds_free(bad);
	ck_assert_int_eq(fds_parse("0 shared of=0 cloexec=1\n", NULL, NULL, &bad), 0);
	ck_assert_int_eq(fds_validate_shared(NULL, bad), -EBADMSG);
	fds_free(bad);
	ck_assert_int_eq(fds_parse("3 shared of=x cloexec=1\n", NULL, NULL, &bad), -EBADMSG);
	/* A base that is not above the image is refused before anything is
	 * closed; so is a base whose numbers are taken. */
	ck_assert_int_eq(fds_restore(img, NULL, -1, -1), -EINVAL);
	ck_assert_int_eq(fds_restore(img, NULL, 4, -1), -EINVAL);
	ck_assert_int_eq(fds_parse("0 dev flags=02 cloexec=1 path=/dev/null rdev=1:3\n"
				   "1 dev flags=02 cloexec=1 path=/dev/null rdev=1:3\n", NULL, NULL, &sh), 0);
	fd = fcntl(0, F_DUPFD_CLOEXEC, TREE_BASE + 1);
	ck_assert_int_eq(fd, TREE_BASE + 1);
	ck_assert_int_eq(fds_open_shared(sh, TREE_BASE, -1), -EBUSY);
	ck_assert_msg(!is_open(TREE_BASE), "fd %d left open", TREE_BASE);
	close(fd);
	ck_assert_msg(fds_open_shared(sh, TREE_BASE, -1) == 0, "%s", err_msg());
	ck_assert(is_open(TREE_BASE) && is_open(TREE_BASE + 1) && fcntl(TREE_BASE, F_GETFD) == FD_CLOEXEC);
	close(TREE_BASE);
	close(TREE_BASE + 1);
	fds_free(sh);
	fds_free(img);
}
END_TEST

/* ---- fault injection: a failed capture leaves everything as it was ---------------- */

static int count_fds(void)
{
	int n = 0;
	for (int fd = 0; fd < 1024; fd++)
		n += is_open(fd);
	return n;
}

START_TEST(capture_fault_changes_nothing)
{
	pid_t pid = start_target(pipes_setup, pipes_verify_target);
	struct fd_image *cap = NULL;
	int before = count_fds();

	setenv("CKPTFS_FAULT", "203", 1);
	fault_reload();
	ck_assert_int_eq(fds_capture(pid, &cap), -EIO);
	unsetenv("CKPTFS_FAULT");
	fault_reload();
	ck_assert_ptr_null(cap);
	ck_assert_int_eq(count_fds(), before);
	ck_assert_int_eq(finish_target(pid), 0);
}
END_TEST

/* ---- terminals: what a capture refuses before reading anything ------------------- */

#define PTY_FILL 6000

/* A raw pair with more bytes written towards the slave than its queue
 * holds: the rest waits in the kernel's flip buffer. */
static void pty_full_setup(void)
{
	struct termios t;
	char b[PTY_FILL];
	int m = posix_openpt(O_RDWR | O_NOCTTY), q = 0;

	if (m < 0 || unlockpt(m) < 0 || dup2(m, 3) != 3)
		_exit(90);
	int s = open(ptsname(3), O_RDWR | O_NOCTTY | O_NONBLOCK);
	if (s < 0 || dup2(s, 4) != 4 || tcgetattr(4, &t) < 0)
		_exit(91);
	cfmakeraw(&t);
	tcsetattr(4, TCSANOW, &t);
	for (int i = 0; i < PTY_FILL; i++)
		b[i] = (char)(i % 251);
	if (write(3, b, sizeof(b)) != (ssize_t)sizeof(b))
		_exit(92);
	for (int i = 0; i < 10000 && q < 4095; i++) {
		usleep(1000);
		ioctl(4, FIONREAD, &q);
	}
}

/* Every byte is still there, in order. */
static int pty_full_verify(void)
{
	char b[PTY_FILL];
	size_t n = 0;
	struct pollfd p = { .fd = 4, .events = POLLIN };

	while (n < sizeof(b) && poll(&p, 1, 5000) == 1) {
		ssize_t k = read(4, b + n, sizeof(b) - n);
		if (k <= 0)
			return 1;
		n += (size_t)k;
	}
	for (size_t i = 0; i < n; i++)
		if (b[i] != (char)(i % 251))
			return 2;
	return n == sizeof(b) ? 0 : 3;
}

/* Packet mode with a status notice not yet read (IXON turned off on the
 * slave: TIOCPKT_NOSTOP). */
static void pty_pkt_setup(void)
{
	struct termios t;
	int m = posix_openpt(O_RDWR | O_NOCTTY | O_NONBLOCK), on = 1;

	if (m < 0 || unlockpt(m) < 0 || dup2(m, 3) != 3 || ioctl(3, TIOCPKT, &on) < 0)
		_exit(90);
	int s = open(ptsname(3), O_RDWR | O_NOCTTY);
	if (s < 0 || dup2(s, 4) != 4 || tcgetattr(4, &t) < 0)
		_exit(91);
	t.c_iflag &= ~(tcflag_t)IXON;
	tcsetattr(4, TCSANOW, &t);
}

static int pty_pkt_verify(void)
{
	unsigned char c = 0;

	return read(3, &c, 1) == 1 && (c & TIOCPKT_NOSTOP) ? 0 : 1;
}

START_TEST(pty_refusals)
{
	struct { void (*setup)(void); int (*verify)(void); const char *what; } cases[] = {
		{ pty_full_setup, pty_full_verify, "its input queue is full (4095 bytes" },
		{ pty_pkt_setup, pty_pkt_verify, "a packet-mode status notice is waiting to be read" },
	};

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		pid_t pid = start_target(cases[i].setup, cases[i].verify);
		struct fd_image *cap = NULL;
		ck_assert_int_eq(fds_capture(pid, &cap), -EBUSY);
		ck_assert_msg(strstr(err_msg(), cases[i].what), "%s", err_msg());
		ck_assert_ptr_null(cap);
		/* nothing was read: the target finds it all */
		ck_assert_int_eq(finish_target(pid), 0);
	}
}
END_TEST

/* ---- strict parsing --------------------------------------------------------------- */

START_TEST(parse_is_strict)
{
	static const char *bad[] = {
		"3 file flags=0 cloexec=0 path=/x pos=0 ino=1 size=0\n",              /* mtime missing */
		"3 file flags=0 cloexec=0 path=/x pos=0 ino=1 size=0 mtime=0 foo=1\n", /* unknown key */
		"3 dev flags=0 cloexec=0 path=/dev/null rdev=1:3\n2 dev flags=0 cloexec=0 path=/dev/null rdev=1:3\n",
		"3 dup of=4 cloexec=0\n",
		"3 dev flags=0 cloexec=2 path=/dev/null rdev=1:3\n",
		"3 dev flags=0 cloexec=0 path=/dev/null rdev=8:0\n",
		"3 dev flags=0 cloexec=0 path=/dev/null rdev=1:3",                       /* no newline */
		"3 dev  flags=0 cloexec=0 path=/dev/null rdev=1:3\n",
		"3 pipe-r flags=0 cloexec=0 pipe=5 size=65536 peer=in queued=0\n",      /* no write end */
		"3 pipe-r flags=0 cloexec=0 pipe=5 size=65536 peer=out queued=4\n",     /* data= missing */
		"3 socket flags=0 cloexec=0\n",
		"3 eventfd flags=0 cloexec=0 count=-1 semaphore=0\n",
		"3 epoll flags=0 cloexec=0 watch=4:0x1:0x0\n",                          /* fd 4 absent */
		"3 dev flags=0 cloexec=0 path=relative rdev=1:3\n",
		"3 dev flags=0 cloexec=0 path=/dev/null rdev=1:3 flags=0\n",
		"x dev flags=0 cloexec=0 path=/dev/null rdev=1:3\n",
		"3 pidfd flags=02 cloexec=0 pid=0 start=1 tree=0\n",
		"3 pidfd flags=02 cloexec=0 pid=5 tree=0\n",                             /* start missing */
		"3 pidfd flags=01002 cloexec=0 pid=-1\n",                                /* not a pidfd's flags */
		"3 pidfd flags=02 cloexec=0 pid=-1 start=4\n",
		"3 eventfd flags=02 cloexec=0 count=0 semaphore=0\n4 epoll flags=0 cloexec=0 watch=5:0x1:0x0:4\n",
		"3 eventfd flags=02 cloexec=0 count=0 semaphore=0\n4 epoll flags=0 cloexec=0 watch=5:0x1:0x0:x\n",
		"3 eventfd flags=02 cloexec=0 count=0 semaphore=0\n4 epoll flags=0 cloexec=0 watch=3:0x1:0x0:3\n",
	};
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		struct fd_image *img = NULL;
		int r = fds_parse(bad[i], get_mem, NULL, &img);
		ck_assert_msg(r == -EBADMSG, "accepted (%d): %s", r, bad[i]);
		ck_assert_ptr_null(img);
		ck_assert_msg(strncmp(err_msg(), "fds", 3) == 0, "detail: %s", err_msg());
	}
	struct fd_image *img = NULL;
	ck_assert_int_eq(fds_parse("", NULL, NULL, &img), 0);
	ck_assert_int_eq(fds_max(img), -1);
	fds_free(img);
}
END_TEST

/* tcp and udp lines (fds-tcp.c) round-trip and are strict. */
#define TCP_LINE(fam, a, p, extra)                                                                         \
	"3 tcp flags=02 cloexec=0 family=" fam " addr=" a " port=80 peer-addr=" p " peer-port=51234 "       \
	"snd-seq=4294967295 rcv-seq=7 inq=0 outq=0 mss=1460 sack=1 ts=1 timestamp=99" extra " snd-wl1=7 "    \
	"snd-wnd=65536 max-window=65536 rcv-wnd=65536 rcv-wup=7 nodelay=1 keepalive=0 sndbuf=87040 rcvbuf=131072\n"
START_TEST(inet_lines)
{
	static const char *good[] = {
		TCP_LINE("inet", "127.0.0.1", "10.1.2.3", " snd-wscale=7 rcv-wscale=9"),
		TCP_LINE("inet6", "::1", "fd00::2", ""),
		"3 udp flags=02 cloexec=0 family=inet addr=0.0.0.0 port=53 reuseaddr=1 v6only=0\n",
		"3 udp flags=02 cloexec=0 family=inet6 addr=::1 port=4000 peer-addr=::1 peer-port=4001 reuseaddr=0 v6only=1\n",
	};
	static const char *bad[] = {
		TCP_LINE("inet", "::1", "10.1.2.3", ""),                              /* family and address */
		TCP_LINE("inet", "127.0.0.1", "10.1.2.3", " snd-wscale=15 rcv-wscale=1"), /* scale above 14 */
		TCP_LINE("inet", "127.0.0.1", "10.1.2.3", " snd-wscale=7"),             /* one scale */
		TCP_LINE("inet", "127.0.0.1", "10.1.2.3", " data=fds-data/3"),          /* no bytes to hold */
		"3 tcp flags=02 cloexec=0 family=inet addr=127.0.0.1 port=80\n",       /* no peer, no state */
		"3 udp flags=02 cloexec=0 family=inet addr=0.0.0.0 port=65536 reuseaddr=1 v6only=0\n",
	};
	for (size_t i = 0; i < ARRAY_SIZE(good); i++) {
		struct fd_image *img = NULL;
		char *text = NULL;
		size_t len;
		ck_assert_msg(fds_parse(good[i], get_mem, NULL, &img) == 0, "%s: %s", good[i], err_msg());
		ck_assert_int_eq(fds_format(img, &text, &len), 0);
		ck_assert_str_eq(text, good[i]);
		free(text);
		fds_free(img);
	}
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		struct fd_image *img = NULL;
		int r = fds_parse(bad[i], get_mem, NULL, &img);
		ck_assert_msg(r == -EBADMSG, "accepted (%d): %s", r, bad[i]);
		ck_assert_ptr_null(img);
	}
}
END_TEST

/* Files in odd states: removed directories and FIFOs, sparse and mapped
 * files, pipes with several descriptions round-trip; what cannot be is
 * refused naming the line. */
#define TIMES " uid=0 gid=0 atime=1.000000002 mtime=3.000000004"
START_TEST(odd_lines)
{
	static const char *good[] = {
		"3 dir flags=0200000 cloexec=0 path=/tmp/x pos=0 ino=5 deleted=1 cwd=1 mode=0751 uid=4242 gid=4343 "
		"atime=1.000000002 mtime=3.000000004\n"
		"4 dir flags=010200000 cloexec=1 path=/tmp/y pos=0 ino=6 deleted=1 mode=0700" TIMES "\n",
		"3 fifo flags=04000 cloexec=0 path=/tmp/f ino=9 size=65536 queued=0 deleted=1 mode=0640 uid=1 gid=2\n",
		"3 deleted flags=02 cloexec=0 path=/tmp/d pos=0 size=4294967296 mode=0600" TIMES
		" dev=fe:0 ino=7 runs=none\n",
		"3 memfd flags=02 cloexec=0 name=m pos=0 size=8192 mode=0777 seals=0x1" TIMES " dev=0:1 ino=8 content=shm\n",
		"3 pipe-r flags=00 cloexec=0 pipe=5 size=65536 peer=in queued=0\n"
		"4 pipe-r flags=04000 cloexec=0 pipe=5 size=65536 peer=in queued=0\n"
		"5 pipe-w flags=01 cloexec=0 pipe=5 size=65536 peer=in\n"
		"6 pipe-rw flags=02 cloexec=0 pipe=5 size=65536 peer=in queued=0\n"
		"7 pipe-rw flags=02 cloexec=0 pipe=6 size=65536 peer=in queued=0\n",
	};
	static const char *bad[] = {
		/* runs overlapping, beyond the size; too big without runs */
		"3 deleted flags=02 cloexec=0 path=/tmp/d pos=0 size=8192 mode=0600" TIMES " runs=0+800,400+10\n",
		"3 deleted flags=02 cloexec=0 path=/tmp/d pos=0 size=8192 mode=0600" TIMES " runs=1000+2000\n",
		"3 deleted flags=02 cloexec=0 path=/tmp/d pos=0 size=2147483648 mode=0600" TIMES "\n",
		"3 memfd flags=02 cloexec=0 name=m pos=0 size=8192 mode=0777 seals=0x1" TIMES " dev=0:1 ino=8 content=x\n",
		"3 memfd flags=02 cloexec=0 name=m pos=0 size=8192 mode=0777 seals=0x1" TIMES " dev=zz ino=8\n",
		/* a removed directory without its mode, a FIFO without its owner */
		"3 dir flags=0200000 cloexec=0 path=/tmp/x pos=0 ino=5 deleted=1\n",
		"3 fifo flags=04000 cloexec=0 path=/tmp/f ino=9 size=65536 queued=0 deleted=1 mode=0640\n",
		/* read-write without its access mode; the side of a reopened pipe wrong */
		"3 pipe-rw flags=00 cloexec=0 pipe=5 size=65536 peer=in queued=0\n",
		"3 pipe-r flags=00 cloexec=0 pipe=5 size=65536 peer=in queued=0\n"
		"4 pipe-r flags=00 cloexec=0 pipe=5 size=65536 peer=in queued=0\n",
	};
	for (size_t i = 0; i < ARRAY_SIZE(good); i++) {
		struct fd_image *img = NULL;
		char *text = NULL;
		size_t len;
		ck_assert_msg(fds_parse(good[i], get_mem, NULL, &img) == 0, "%s: %s", good[i], err_msg());
		ck_assert_int_eq(fds_format(img, &text, &len), 0);
		ck_assert_str_eq(text, good[i]);
		free(text);
		fds_free(img);
	}
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		struct fd_image *img = NULL;
		int r = fds_parse(bad[i], get_mem, NULL, &img);
		ck_assert_msg(r == -EBADMSG, "accepted (%d): %s", r, bad[i]);
		ck_assert_ptr_null(img);
	}
	/* content=shm with no area of its file: refused before anything */
	struct fd_image *img = NULL;
	ck_assert_int_eq(fds_parse(good[3], get_mem, NULL, &img), 0);
	fds_shm_bind(img, 0, 1, 9, 0);
	ck_assert_int_eq(fds_shm_check(img), -EBADMSG);
	ck_assert_msg(strstr(err_msg(), "fd 3: content=shm, but no shared memory area maps its file"), "%s", err_msg());
	fds_shm_bind(img, 0, 1, 8, 0);
	ck_assert_int_eq(fds_shm_check(img), 0);
	fds_free(img);
}
END_TEST

static int get_abcd(const char *path, void **buf, uint64_t *len, void *ud)
{
	(void)path;
	(void)ud;
	*buf = strdup("abcd");
	*len = 4;
	return *buf ? 0 : -ENOMEM;
}

/* Unix lines with queued messages, relative and deleted names round-trip
 * (fds-unix.c), and are strict. */
START_TEST(unix_lines)
{
	static const char *good[] = {
		"3 unix-dgram flags=02 cloexec=0 path=/run/x.sock queued=4 msgs=1,0,3 data=fds-data/3\n",
		"3 unix-dgram flags=02 cloexec=0 path=rel.sock queued=4 dir=/tmp/d passcred=1 msgs=4 data=fds-data/3\n",
		"3 unix-dgram flags=02 cloexec=0 path=/tmp/gone.sock deleted=1\n",
		"3 unix-listen flags=02 cloexec=0 type=stream path=/tmp/a.sock backlog=4 deleted=1\n",
		"3 unix-listen flags=02 cloexec=0 type=seqpacket path=a.sock backlog=4 mode=0755 uid=0 gid=0 dir=/tmp\n",
		"3 unix-pair flags=02 cloexec=0 type=seqpacket pair=3 shutdown=0 sndbuf=1 rcvbuf=1 queued=4 "
		"path=/tmp/l.sock msgs=2,2 data=fds-data/3\n"
		"4 unix-pair flags=02 cloexec=0 type=seqpacket pair=3 shutdown=0 sndbuf=1 rcvbuf=1 queued=0\n",
	};
	static const char *bad[] = {
		"3 unix-dgram flags=02 cloexec=0 path=rel.sock\n",                               /* no dir= */
		"3 unix-dgram flags=02 cloexec=0 path=/x queued=4 msgs=1,2 data=fds-data/3\n",   /* sum */
		"3 unix-dgram flags=02 cloexec=0 path=/x queued=4 data=fds-data/3\n",            /* no msgs= */
		"3 unix-dgram flags=02 cloexec=0 queued=4 msgs=4 data=fds-data/3\n",             /* unnamed */
		"3 unix-dgram flags=02 cloexec=0 abstract=x deleted=1\n",                        /* no path */
		"3 unix-dgram flags=02 cloexec=0 path=a dir=tmp\n",                              /* dir relative */
		"3 unix-dgram flags=02 cloexec=0 path=/x queued=4 msgs=4,x data=fds-data/3\n",   /* not a list */
		"3 unix-pair flags=02 cloexec=0 type=stream pair=3 shutdown=0 sndbuf=1 rcvbuf=1 queued=4 msgs=4 "
		"data=fds-data/3\n4 unix-pair flags=02 cloexec=0 type=stream pair=3 shutdown=0 sndbuf=1 rcvbuf=1 "
		"queued=0\n",                                                                  /* msgs= on a stream */
		"3 unix-pair flags=02 cloexec=0 type=dgram pair=3 shutdown=0 sndbuf=1 rcvbuf=1 queued=4 "
		"data=fds-data/3\n4 unix-pair flags=02 cloexec=0 type=dgram pair=3 shutdown=0 sndbuf=1 rcvbuf=1 "
		"queued=0\n",                                                                  /* no msgs= */
	};
	for (size_t i = 0; i < ARRAY_SIZE(good); i++) {
		struct fd_image *img = NULL;
		char *text = NULL;
		size_t len;
		ck_assert_msg(fds_parse(good[i], get_abcd, NULL, &img) == 0, "%s: %s", good[i], err_msg());
		ck_assert_int_eq(fds_format(img, &text, &len), 0);
		ck_assert_str_eq(text, good[i]);
		free(text);
		fds_free(img);
	}
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		struct fd_image *img = NULL;
		int r = fds_parse(bad[i], get_abcd, NULL, &img);
		ck_assert_msg(r == -EBADMSG, "accepted (%d): %s", r, bad[i]);
		ck_assert_ptr_null(img);
	}
}
END_TEST

/* A packet socket on lo for 0x88b7 (fd 3) with a frame queued. */
static void packet_queued_setup(void)
{
	struct sockaddr_ll sa = { .sll_family = AF_PACKET, .sll_protocol = htons(0x88b7),
				  .sll_ifindex = (int)if_nametoindex("lo"), .sll_halen = 6 };
	int s = socket(AF_PACKET, SOCK_DGRAM, htons(0x88b7));
	if (s < 0 || bind(s, (void *)&sa, sizeof(sa)) < 0 || sendto(s, "frame", 5, 0, (void *)&sa, sizeof(sa)) != 5)
		_exit(5);
	struct pollfd p = { .fd = s, .events = POLLIN };
	if (poll(&p, 1, 10000) != 1)
		_exit(6);
	at(s, 3, false);
}

static int packet_queued_verify(void)
{
	struct sockaddr_ll sa;
	socklen_t len = sizeof(sa);
	char buf[64];
	V(getsockname(3, (void *)&sa, &len) == 0 && sa.sll_ifindex == (int)if_nametoindex("lo") &&
	  sa.sll_protocol == htons(0x88b7));
	V(recv(3, buf, sizeof(buf), MSG_DONTWAIT) < 0 && errno == EAGAIN);
	return 0;
}

/* Frames queued for a packet socket are not kept: the line says how many
 * bytes went, and the restored socket is bound as it was, its queue
 * empty. */
START_TEST(packet_queue_not_kept)
{
	pid_t pid = start_target(packet_queued_setup, NULL);
	struct fd_image *cap = capture(pid);
	char *text = NULL, msg[256];
	size_t len;

	kill_target(pid);
	ck_assert_int_eq(fds_format(cap, &text, &len), 0);
	ck_assert_msg(strstr(text, "3 packet flags=02 cloexec=0 type=dgram protocol=0x88b7 interface=lo ") &&
			      strstr(text, " dropped="),
		      "%s", text);
	struct fd_image *img = NULL;
	ck_assert_msg(fds_parse(text, get_mem, cap, &img) == 0, "%s", err_msg());
	ck_assert_msg(restore_in_child(img, packet_queued_verify, msg, sizeof(msg)) == 0, "%s", msg);
	free(text);
	fds_free(img);
	fds_free(cap);
}
END_TEST

/* A UDP socket on 127.0.0.1 (fd 3) with a datagram of its own queued. */
static void udp_queued_setup(void)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(sa);
	int s = socket(AF_INET, SOCK_DGRAM, 0);
	if (s < 0 || bind(s, (void *)&sa, sizeof(sa)) < 0 || getsockname(s, (void *)&sa, &len) < 0 ||
	    sendto(s, "datagram", 8, 0, (void *)&sa, sizeof(sa)) != 8)
		_exit(5);
	struct pollfd p = { .fd = s, .events = POLLIN };
	if (poll(&p, 1, 10000) != 1)
		_exit(6);
	at(s, 3, false);
}

static int udp_queued_verify(void)
{
	struct sockaddr_in sa;
	socklen_t len = sizeof(sa);
	char buf[64];
	V(getsockname(3, (void *)&sa, &len) == 0 && sa.sin_addr.s_addr == htonl(INADDR_LOOPBACK) && sa.sin_port);
	V(recv(3, buf, sizeof(buf), MSG_DONTWAIT) < 0 && errno == EAGAIN);
	return 0;
}

/* Datagrams queued for a UDP socket are not kept: the line says how many
 * bytes of its buffer went (and the dump warns), the restored socket is
 * bound as it was, its queue empty. */
START_TEST(udp_queue_not_kept)
{
	pid_t pid = start_target(udp_queued_setup, NULL);
	struct fd_image *cap = capture(pid);
	char *text = NULL, msg[256];
	size_t len;

	kill_target(pid);
	ck_assert_int_eq(fds_format(cap, &text, &len), 0);
	ck_assert_msg(strstr(text, "3 udp flags=02 cloexec=0 family=inet addr=127.0.0.1 ") && strstr(text, " dropped="),
		      "%s", text);
	struct fd_image *img = NULL;
	ck_assert_msg(fds_parse(text, get_mem, cap, &img) == 0, "%s", err_msg());
	ck_assert_msg(restore_in_child(img, udp_queued_verify, msg, sizeof(msg)) == 0, "%s", msg);
	free(text);
	fds_free(img);
	fds_free(cap);
}
END_TEST

/* fanotify, netlink and packet lines round-trip; bad ones are refused. */
#define FAN_MARKS "mark=mount mflags=0x0 mask=0x20 ignored=0x0 path=/tmp\nmark=inode mflags=0x40 mask=0x0 ignored=0x20 path=/tmp/a\\x20b\n"
#define FAN_LINE(marks, size) "3 fanotify flags=04002 cloexec=0 init=0x2 event-flags=0x8000 marks=" marks " size=" size " data=fds-data/3\n"
#define PKT_OPTS "version=1 auxdata=1 origdev=0 vnet-hdr=0 loss=0 timestamp=0 reserve=0 ignore-outgoing=1 qdisc-bypass=0 tx-has-off=0 vnet-hdr-sz=-1 copy-thresh=0"
static const char *fan_data;

static int get_fan(const char *path, void **buf, uint64_t *len, void *ud)
{
	(void)ud;
	if (strcmp(path, "fds-data/3"))
		return -ENOENT;
	*buf = strdup(fan_data);
	*len = strlen(fan_data);
	return 0;
}

START_TEST(netfan_lines)
{
	static const char *good[] = {
		FAN_LINE("2", "116"),
		"4 netlink flags=02 cloexec=0 type=raw protocol=0 port=4242 groups=1,5,33 dst-port=0 dst-groups=0x1 "
		"options=no-enobufs,ext-ack filter=6:0:0:ffffffff filter-locked=1 sndbuf=212992 rcvbuf=212992\n",
		"4 netlink flags=04002 cloexec=1 type=dgram protocol=16 port=0 sndbuf=4096 rcvbuf=4096\n",
		"4 netlink flags=02 cloexec=0 type=raw protocol=9 port=77 filter-locked=1 sndbuf=4096 rcvbuf=4096\n",
		"5 packet flags=02 cloexec=0 type=dgram protocol=0x88b5 interface=lo " PKT_OPTS
		" member=lo:0:1:01005e0000fb member1=eth0:1:2: dropped=100 sndbuf=212992 rcvbuf=212992\n",
		"5 packet flags=02 cloexec=0 type=raw protocol=0x0003 " PKT_OPTS " filter=28:0:0:c,15:0:1:800,6:0:0:ffff,"
		"6:0:0:0 filter-locked=0 sndbuf=212992 rcvbuf=212992\n",
	};
	static const char *bad[] = {
		FAN_LINE("1", "116"),                                                           /* 2 marks in its data */
		FAN_LINE("0", "116"),                                                           /* marks without size */
		"4 netlink flags=02 cloexec=0 type=raw protocol=0 port=1 groups=5,1 sndbuf=1 rcvbuf=1\n", /* order */
		"4 netlink flags=02 cloexec=0 type=raw protocol=32 port=1 sndbuf=1 rcvbuf=1\n",
		"4 netlink flags=02 cloexec=0 type=raw protocol=0 port=0 groups=1 sndbuf=1 rcvbuf=1\n",  /* no port */
		"4 netlink flags=02 cloexec=0 type=raw protocol=0 port=1 options=bogus sndbuf=1 rcvbuf=1\n",
		"4 netlink flags=02 cloexec=0 type=seqpacket protocol=0 port=1 sndbuf=1 rcvbuf=1\n",
		"5 packet flags=02 cloexec=0 type=raw protocol=0x10000 " PKT_OPTS " sndbuf=1 rcvbuf=1\n",
		"5 packet flags=02 cloexec=0 type=raw protocol=0x3 " PKT_OPTS " filter=6:0:0 sndbuf=1 rcvbuf=1\n",
		"5 packet flags=02 cloexec=0 type=raw protocol=0x3 " PKT_OPTS " member=lo:0:0:aa sndbuf=1 rcvbuf=1\n",
		"5 packet flags=02 cloexec=0 type=raw protocol=0x3 version=1 sndbuf=1 rcvbuf=1\n", /* options missing */
	};
	for (size_t i = 0; i < ARRAY_SIZE(good); i++) {
		struct fd_image *img = NULL;
		char *text = NULL;
		size_t len;
		fan_data = FAN_MARKS;
		ck_assert_msg(fds_parse(good[i], get_fan, NULL, &img) == 0, "%s: %s", good[i], err_msg());
		ck_assert_int_eq(fds_format(img, &text, &len), 0);
		ck_assert_str_eq(text, good[i]);
		free(text);
		fds_free(img);
	}
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		struct fd_image *img = NULL;
		fan_data = FAN_MARKS;
		int r = fds_parse(bad[i], get_fan, NULL, &img);
		ck_assert_msg(r == -EBADMSG, "accepted (%d): %s", r, bad[i]);
		ck_assert_ptr_null(img);
	}
	/* a mark line that is not one */
	struct fd_image *img = NULL;
	fan_data = "mark=mntns mflags=0x0 mask=0x20 ignored=0x0 path=/tmp\nmark=inode mflags=0x0 mask=0x2 ignored=0x0 path=/x\n";
	ck_assert_int_eq(fds_parse(FAN_LINE("2", "105"), get_fan, NULL, &img), -EBADMSG);
	ck_assert_msg(strstr(err_msg(), "fd 3: fanotify: mark=mntns: not inode, mount or filesystem"), "%s", err_msg());
}
END_TEST

/* ptmx and pts lines round-trip, and what cannot be a pair is refused. */
#define PTMX_AT(fd) #fd " ptmx flags=02 cloexec=0 pty=7 iflag=0x500 oflag=0x5 cflag=0xbd lflag=0x8a3b line=0 " \
	     "cc=031c7f150400010011131a00120f1716000000 ispeed=38400 ospeed=38400 rows=24 cols=80 xpixel=0 " \
	     "ypixel=0 pkt=1 locked=0 in=0 out=0"
#define PTMX PTMX_AT(3)
START_TEST(pty_lines)
{
	static const char good[] = PTMX " ctty=40 fg=41\n4 pts flags=04002 cloexec=1 pty=7\n5 dup of=4 cloexec=0\n";
	static const char *bad[] = {
		"3 pts flags=02 cloexec=0 pty=7\n",                                  /* no master */
		PTMX "\n" PTMX_AT(4) "\n",                                          /* two masters of one pair */
		"3 ptmx flags=02 cloexec=0 pty=7 iflag=0x500 oflag=0x5 cflag=0xbd lflag=0x8a3b line=0 cc=03 "
		"ispeed=38400 ospeed=38400 rows=24 cols=80 xpixel=0 ypixel=0 pkt=1 locked=0 in=0 out=0\n", /* cc short */
		"3 ptmx flags=02 cloexec=0 pty=7 iflag=0x500 oflag=0x5 cflag=0xbd lflag=0x0 line=0 "
		"cc=031c7f150400010011131a00120f1716000000 ispeed=38400 ospeed=38400 rows=24 cols=80 xpixel=0 "
		"ypixel=0 pkt=1 locked=0 in=0 out=0 eof=0\n", /* eof= without ICANON */
		PTMX " ctty=40\n",                                                   /* ctty= without fg= */
		"3 ptmx flags=02 cloexec=0 pty=7 iflag=0x500 oflag=0x5 cflag=0xbd lflag=0x8a3b line=0 "
		"cc=031c7f150400010011131a00120f1716000000 ispeed=38400 ospeed=38400 rows=24 cols=80 xpixel=0 "
		"ypixel=0 pkt=1 locked=1 in=0 out=0\n4 pts flags=02 cloexec=0 pty=7\n", /* a slave of a locked pair */
		"3 ptmx flags=02 cloexec=0 pty=7 iflag=0x500 oflag=0x5 cflag=0xbd lflag=0x8a3b line=0 "
		"cc=031c7f150400010011131a00120f1716000000 ispeed=38400 ospeed=38400 rows=24 cols=80 xpixel=0 "
		"ypixel=0 pkt=1 locked=0 in=5000 out=0\n", /* above a queue */
		"3 ptmx flags=00 cloexec=0 pty=7 iflag=0x500 oflag=0x5 cflag=0xbd lflag=0x8a3b line=0 "
		"cc=031c7f150400010011131a00120f1716000000 ispeed=38400 ospeed=38400 rows=24 cols=80 xpixel=0 "
		"ypixel=0 pkt=1 locked=0 in=0 out=0\n", /* read-only master */
	};
	struct fd_image *img = NULL;
	char *text = NULL;
	size_t len;

	ck_assert_msg(fds_parse(good, NULL, NULL, &img) == 0, "%s", err_msg());
	ck_assert_int_eq(fds_format(img, &text, &len), 0);
	ck_assert_str_eq(text, good);
	free(text);
	fds_free(img);
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		img = NULL;
		int r = fds_parse(bad[i], get_mem, NULL, &img);
		ck_assert_msg(r == -EBADMSG, "accepted (%d): %s", r, bad[i]);
		ck_assert_ptr_null(img);
	}
}
END_TEST

/* The lock keys round-trip, stay where they may be, and are strict. */
START_TEST(lock_keys)
{
	static const char *good = "3 file flags=02 cloexec=0 path=/x pos=0 ino=1 size=0 mtime=0 flock=ex ofd=w:10:20\n"
				  "4 shared of=0 cloexec=0 posix=w:0:5,r:100:0\n";
	static const char *bad[] = {
		"3 file flags=02 cloexec=0 path=/x pos=0 ino=1 size=0 mtime=0 flock=up\n",
		"3 file flags=02 cloexec=0 path=/x pos=0 ino=1 size=0 mtime=0 ofd=x:1:2\n",
		"3 file flags=02 cloexec=0 path=/x pos=0 ino=1 size=0 mtime=0 posix=w:1:2,\n",
		"3 file flags=02 cloexec=0 path=/x pos=0 ino=1 size=0 mtime=0 posix=w:1\n",
		"3 file flags=02 cloexec=0 path=/x pos=0 ino=1 size=0 mtime=0 posix=w:9223372036854775807:2\n",
		"3 dev flags=02 cloexec=0 path=/dev/null rdev=1:3 flock=ex\n",  /* not reopened by path */
		"3 shared of=0 cloexec=0 flock=ex\n",                            /* the description's */
		"3 file flags=02 cloexec=0 path=/x pos=0 ino=1 size=0 mtime=0\n4 dup of=3 cloexec=0 posix=w:0:1\n",
	};
	struct fd_image *img = NULL, *sh = NULL;
	char *text = NULL;
	size_t len;

	ck_assert_msg(fds_parse(good, NULL, NULL, &img) == 0, "%s", err_msg());
	ck_assert_int_eq(fds_format(img, &text, &len), 0);
	ck_assert_str_eq(text, good);
	free(text);
	/* POSIX locks are a process's: never in a tree's shared image. */
	ck_assert_int_eq(fds_parse("0 file flags=02 cloexec=1 path=/x pos=0 ino=1 size=0 mtime=0 posix=w:0:1\n", NULL,
				   NULL, &sh), 0);
	ck_assert_int_eq(fds_validate_shared(img, sh), -EBADMSG);
	fds_free(sh);
	fds_free(img);
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		img = NULL;
		int r = fds_parse(bad[i], NULL, NULL, &img);
		ck_assert_msg(r == -EBADMSG, "accepted (%d): %s", r, bad[i]);
		ck_assert_ptr_null(img);
	}
}
END_TEST

static Suite *suite(void)
{
	Suite *s = suite_create("engine-fds");
	struct {
		const char *name;
		const TTest *t;
	} cases[] = {
		{ "files", files },
		{ "file_changed_is_refused", file_changed_is_refused },
		{ "file_touched_is_restored", file_touched_is_restored },
		{ "log_grown_is_restored_at_its_end", log_grown_is_restored_at_its_end },
		{ "gone_terminal_becomes_dev_null", gone_terminal_becomes_dev_null },
		{ "terminal_is_reopened", terminal_is_reopened },
		{ "pipes", pipes },
		{ "through_a_snapshot", through_a_snapshot },
		{ "load_is_strict", load_is_strict },
		{ "events", events },
		{ "memfd_and_deleted", memfd_and_deleted },
		{ "sockets", sockets },
		{ "half_closed_tcp_is_refused", half_closed_tcp_is_refused },
		{ "inet_lines", inet_lines },
		{ "unix_lines", unix_lines },
		{ "odd_lines", odd_lines },
		{ "netfan_lines", netfan_lines },
		{ "packet_queue_not_kept", packet_queue_not_kept },
		{ "udp_queue_not_kept", udp_queue_not_kept },
		{ "listener_with_waiting_connection_is_refused", listener_with_waiting_connection_is_refused },
		{ "other_kinds_are_refused", other_kinds_are_refused },
		{ "epoll_closed_number", epoll_closed_number },
		{ "pidfd_lines", pidfd_lines },
		{ "pidfd_of_own_thread_is_refused", pidfd_of_own_thread_is_refused },
		{ "tree_shares_descriptions", tree_shares_descriptions },
		{ "tree_shared_epoll_is_refused", tree_shared_epoll_is_refused },
		{ "tree_shared_pidfd_is_refused", tree_shared_pidfd_is_refused },
		{ "tree_socket_pair", tree_socket_pair },
		{ "tree_async_owner", tree_async_owner },
		{ "tree_refuses_what_is_outside", tree_refuses_what_is_outside },
		{ "shared_lines_are_checked", shared_lines_are_checked },
		{ "capture_fault_changes_nothing", capture_fault_changes_nothing },
		{ "parse_is_strict", parse_is_strict },
		{ "pty_lines", pty_lines },
		{ "pty_refusals", pty_refusals },
		{ "lock_keys", lock_keys },
	};

	for (size_t i = 0; i < ARRAY_SIZE(cases); i++) {
		TCase *tc = tcase_create(cases[i].name);
		tcase_add_checked_fixture(tc, setup_tmp, teardown_tmp);
		tcase_set_timeout(tc, 30);
		tcase_add_test(tc, cases[i].t);
		suite_add_tcase(s, tc);
	}
	return s;
}

int main(void)
{
	if (geteuid() != 0) {
		printf("skip: capturing descriptors with pidfd_getfd needs root\n");
		return 77;
	}
	SRunner *sr = srunner_create(suite());
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
