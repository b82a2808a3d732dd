/*
 * A log: a file open O_WRONLY|O_APPEND at fd 3 that the target appends
 * numbered lines to, one a millisecond, while it waits. It is dumped
 * while running and keeps appending until the test kills it, so the file
 * the restore finds is longer than the one dumped; the restore must
 * reopen it at its new end, not refuse it and not at the old offset.
 *
 * Before each line the target checks that its offset is the file's end
 * (it is the only writer, so anything else means its offset was put
 * back). Once restored it writes a few more lines, then reads the whole
 * log: every line whole and numbered one more than the last, except
 * exactly once where the restored process starts again from the number
 * it had at the dump (not above the original's last line); the last line
 * is its own last one.
 * Arguments: SCRATCH, a file path the target may create.
 */
#include "target.h"

#define LINE_LEN 14 /* "line 00000000\n" */

static int fd = 3;

#define CHECK(c) do { if (!(c)) target_verdict(0, "line %d: %s", __LINE__, #c); } while (0)

static void append(unsigned n)
{
	char buf[LINE_LEN + 1];
	struct stat st;
	off_t cur = lseek(fd, 0, SEEK_CUR);

	if (fstat(fd, &st) < 0 || cur != st.st_size)
		target_verdict(0, "before line %u: offset %ld, but the log holds %ld bytes", n, (long)cur,
			       (long)st.st_size);
	snprintf(buf, sizeof(buf), "line %08u\n", n);
	if (write(fd, buf, LINE_LEN) != LINE_LEN)
		target_verdict(0, "cannot append line %u: %s", n, strerror(errno));
}

int main(int argc, char **argv)
{
	target_init(argc, argv, 1);
	const char *file = argv[3];
	unsigned n = 0;

	int l = open(file, O_WRONLY | O_APPEND | O_CREAT | O_TRUNC, 0644);
	if (l < 0 || dup2(l, fd) != fd)
		target_verdict(0, "cannot open %s: %s", file, strerror(errno));
	if (l != fd)
		close(l);
	for (; n < 10; n++)
		append(n);
	target_ready();
	while (!target_restored()) {
		struct timespec ts = { 0, 1000000 };
		append(n++);
		nanosleep(&ts, NULL);
	}
	for (int i = 0; i < 10; i++)
		append(n++);

	/* Read it back through a descriptor of our own: fd 3 is write-only. */
	char *text = NULL;
	struct stat st;
	int r = open(file, O_RDONLY | O_CLOEXEC);
	CHECK(r >= 0 && fstat(r, &st) == 0 && st.st_size % LINE_LEN == 0);
	text = malloc((size_t)st.st_size + 1);
	CHECK(text && read(r, text, (size_t)st.st_size) == st.st_size);
	text[st.st_size] = 0;
	close(r);

	long lines = st.st_size / LINE_LEN, restarts = 0;
	unsigned prev = 0, top = 0;
	for (long i = 0; i < lines; i++) {
		const char *p = text + i * LINE_LEN;
		unsigned v;
		char nl;
		if (sscanf(p, "line %8u%c", &v, &nl) != 2 || nl != '\n' || strncmp(p, "line ", 5))
			target_verdict(0, "log line %ld is not whole: '%.*s'", i + 1, LINE_LEN - 1, p);
		if (i == 0 && v != 0)
			target_verdict(0, "the log starts with line %u", v);
		if (i > 0 && v != prev + 1) {
			/* The restored process goes on from where it was dumped,
			 * at or before the original's last line. */
			if (v > prev || restarts++)
				target_verdict(0, "log line %ld: %u after %u", i + 1, v, prev);
			top = prev;
		}
		prev = v;
	}
	if (restarts != 1)
		target_verdict(0, "the original appended nothing after the dump (%ld lines)", lines);
	if (prev != n - 1)
		target_verdict(0, "the log ends with line %u, the last one written is %u", prev, n - 1);
	if (top < 10)
		target_verdict(0, "the original's last line was %u", top);
	target_pass();
}
