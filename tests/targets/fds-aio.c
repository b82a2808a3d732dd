/*
 * AIO contexts (io_setup, raw system calls): two, of 16 and 300 events
 * (rings of one and of several pages), each having submitted and reaped
 * reads of SCRATCH (fd 40, a file of a known pattern) before the
 * checkpoint. After restore: each context id is the same and still the
 * address of its ring, whose header (size, magic) is as before with no
 * event waiting; reads submitted on each are completed and reaped with
 * the right bytes; the contexts can be destroyed.
 * Arguments: SCRATCH, a path the target may create; then "unreaped":
 * the small context's head is brought to the ring's last slot, and three
 * more reads are completed and left in the ring, wrapping around; after
 * restore they are where a library reaping in user space finds them,
 * io_getevents() gives them with their data and buffers, and the ring
 * takes as many reads again as it holds.
 */
#include <linux/aio_abi.h>

#include "target.h"

#define CHECK(c) do { if (!(c)) target_verdict(0, "line %d: %s (errno %d)", __LINE__, #c, errno); } while (0)

struct ring_head {
	unsigned id, nr, head, tail, magic, compat, incompat, header_length;
};

static long io_setup_(unsigned n, aio_context_t *ctx)
{
	return syscall(SYS_io_setup, n, ctx);
}

static long io_submit_(aio_context_t ctx, long n, struct iocb **v)
{
	return syscall(SYS_io_submit, ctx, n, v);
}

static long io_getevents_(aio_context_t ctx, long min, long max, struct io_event *ev)
{
	struct timespec ts = { 10, 0 };
	return syscall(SYS_io_getevents, ctx, min, max, ev, &ts);
}

static char expect(uint64_t off)
{
	return (char)('a' + off % 23);
}

/* n reads of 100 bytes at offsets base, base + 1000, ... through ctx,
 * completed, reaped and checked. */
static void reads(aio_context_t ctx, int n, uint64_t base)
{
	static char buf[8][100];
	struct iocb cb[8], *v[8];
	struct io_event ev[8];

	for (int i = 0; i < n; i++) {
		memset(&cb[i], 0, sizeof(cb[i]));
		cb[i].aio_lio_opcode = IOCB_CMD_PREAD;
		cb[i].aio_fildes = 40;
		cb[i].aio_buf = (uint64_t)(uintptr_t)buf[i];
		cb[i].aio_nbytes = sizeof(buf[i]);
		cb[i].aio_offset = (int64_t)(base + 1000 * (uint64_t)i);
		cb[i].aio_data = 0x100 + (uint64_t)i;
		v[i] = &cb[i];
	}
	CHECK(io_submit_(ctx, n, v) == n);
	CHECK(io_getevents_(ctx, n, n, ev) == n);
	for (int i = 0; i < n; i++) {
		uint64_t k = ev[i].data - 0x100;
		CHECK(k < (uint64_t)n && ev[i].res == 100 && ev[i].obj == (uint64_t)(uintptr_t)&cb[k]);
		for (int j = 0; j < 100; j++)
			CHECK(buf[k][j] == expect(cb[k].aio_offset + (uint64_t)j));
	}
}

/* Whether /proc/self/maps shows the ring "/[aio] (deleted)" at ctx. */
static int ring_at(aio_context_t ctx)
{
	char line[512];
	int found = 0;
	FILE *f = fopen("/proc/self/maps", "re");
	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f)) {
		unsigned long a;
		if (sscanf(line, "%lx-", &a) == 1 && a == ctx && strstr(line, "/[aio] (deleted)"))
			found = 1;
	}
	fclose(f);
	return found;
}

int main(int argc, char **argv)
{
	target_init(argc, argv, 1);
	static char data[64 * 1024];
	aio_context_t small = 0, big = 0;

	for (size_t i = 0; i < sizeof(data); i++)
		data[i] = expect(i);
	int fd = open(argv[3], O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	CHECK(fd >= 0 && write(fd, data, sizeof(data)) == (ssize_t)sizeof(data));
	CHECK(dup3(fd, 40, O_CLOEXEC) == 40);
	close(fd);

	CHECK(io_setup_(16, &small) == 0 && ring_at(small));
	CHECK(io_setup_(300, &big) == 0 && ring_at(big));
	reads(small, 3, 0);
	reads(big, 5, 7);
	reads(big, 2, 11);
	struct ring_head hs = *(struct ring_head *)small, hb = *(struct ring_head *)big;
	CHECK(hs.head == hs.tail && hb.head == hb.tail && hb.nr > hs.nr);
	bool unreaped = argc > 4 && !strcmp(argv[4], "unreaped");
	static char three[3][10];
	struct iocb cb[3], *v[3];
	if (unreaped) {
		/* the small ring's head brought to its last slot, then three
		 * reads completed and left there: they wrap around */
		struct ring_head *r = (struct ring_head *)small;
		while (r->head != r->nr - 1) {
			unsigned k = r->nr - 1 - r->head;
			reads(small, k > 8 ? 8 : (int)k, 1);
		}
		for (int i = 0; i < 3; i++) {
			cb[i] = (struct iocb){ .aio_lio_opcode = IOCB_CMD_PREAD, .aio_fildes = 40,
					       .aio_buf = (uint64_t)(uintptr_t)three[i], .aio_nbytes = sizeof(three[i]),
					       .aio_offset = 5 + 100 * i, .aio_data = 0x200 + (uint64_t)i };
			v[i] = &cb[i];
		}
		/* a buffered read completes in io_submit */
		CHECK(io_submit_(small, 3, v) == 3);
		CHECK(r->tail == 2 && r->head == r->nr - 1);
	}

	target_ready();
	target_wait_restored();

	if (unreaped) {
		/* read where a library reaping in user space reads them */
		struct ring_head *r = (struct ring_head *)small;
		struct io_event *ring = (struct io_event *)(r + 1), ev[3];
		CHECK(r->tail == 2 && r->head == r->nr - 1);
		CHECK(ring[r->head].data == 0x200 && ring[r->head].obj == (uint64_t)(uintptr_t)&cb[0] &&
		      ring[r->head].res == 10);
		CHECK(io_getevents_(small, 3, 3, ev) == 3);
		for (int i = 0; i < 3; i++) {
			CHECK(ev[i].data == 0x200 + (uint64_t)i && ev[i].obj == (uint64_t)(uintptr_t)&cb[i] && ev[i].res == 10);
			for (int j = 0; j < 10; j++)
				CHECK(three[i][j] == expect(5 + 100 * (uint64_t)i + (uint64_t)j));
		}
		CHECK(r->head == 2 && r->tail == 2);
		/* the whole ring usable again: as many reads as it holds, in batches */
		for (unsigned n = 0; n < r->nr; n += 8)
			reads(small, 8, n);
	}
	CHECK(ring_at(small) && ring_at(big));
	struct ring_head *s = (struct ring_head *)small, *b = (struct ring_head *)big;
	CHECK(s->magic == hs.magic && s->nr == hs.nr && s->head == s->tail);
	CHECK(b->magic == hb.magic && b->nr == hb.nr && b->head == b->tail);
	reads(small, 4, 3);
	reads(big, 8, 5);
	CHECK(syscall(SYS_io_destroy, small) == 0);
	CHECK(syscall(SYS_io_destroy, big) == 0);
	target_pass();
}
