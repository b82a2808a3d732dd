/*
 * AIO contexts (io_setup(2)): the ring the kernel maps into the process,
 * "/[aio] (deleted)" in its maps, whose address is the context's id.
 *
 * The ring's header (struct aio_ring of fs/aio.c: id, nr, head, tail,
 * magic, ...) is the process's view of the context: nr events fit, the
 * kernel writes completions at tail, the process reaps from head. The
 * kernel keeps a copy of tail of its own (and a count of the completions
 * not reaped, which decides how many requests may be submitted), which a
 * new context starts at 0. An empty ring (head = tail) saves nothing; one
 * with completed events not reaped saves its bytes (header and events).
 * Requests submitted and not completed yet are invisible from outside the
 * kernel (no /proc file shows them): they cannot be refused, and are not
 * there after a restore (docs/COVERAGE.md).
 *
 * Restore, by injection once every area of the image is mapped: io_setup()
 * with the number of events that gives a ring of nr events (the kernel
 * doubles the request, raises it to 4 per possible CPU, adds 2 and rounds
 * up to whole pages, fs/aio.c ioctx_alloc and aio_setup_ring), checked
 * against the image's nr (another CPU count can make it differ); then the
 * ring is moved to the old address with mremap(), which the kernel follows
 * (aio_ring_mremap: the id becomes the new address), and io_getevents()
 * on the old id tells that it names the context. Events waiting in the
 * ring come back through the kernel's own path, so that its tail and its
 * count agree with the ring: head reads of nothing (/dev/null, zero bytes)
 * are submitted and reaped, which brings head and tail to the old head;
 * then as many more are submitted and left completed, which brings tail
 * to the old tail with that many events counted as waiting; their slots
 * are then given the saved events' bytes.
 */
#include <fcntl.h>
#include <inttypes.h>
#include <linux/aio_abi.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>

#include "engine/engine-int.h"

#define AIO_RING_MAGIC_ 0xa10a10a1u

/* struct aio_ring's header, as fs/aio.c lays it out (32 bytes), followed
 * by nr struct io_event (32 bytes each). */
struct aio_head {
	uint32_t id, nr, head, tail, magic, compat, incompat, header_length;
};

#define AIO_EVENT_SIZE 32u

bool aio_is_ring(const struct vma *v)
{
	return v->shared && v->dev_major == 0 && !strcmp(v->path, "/[aio] (deleted)");
}

/* Reads the ring's header at start in pid through mem (an open
 * /proc/PID/mem) or, with mem -1, process_vm_readv. */
static int read_head(pid_t pid, int mem, uint64_t start, struct aio_head *h)
{
	ssize_t n;

	if (mem >= 0) {
		n = pread(mem, h, sizeof(*h), (off_t)start);
	} else {
		struct iovec l = { h, sizeof(*h) }, rm = { (void *)(uintptr_t)start, sizeof(*h) };
		n = process_vm_readv(pid, &l, 1, &rm, 1, 0);
	}
	if (n != (ssize_t)sizeof(*h))
		return err_set(n < 0 ? negerrno() : -EIO, "pid %d: cannot read the AIO ring at %" PRIx64 ": %m", pid,
			       start);
	return 0;
}

/* What the restore cannot give back, named. */
static int judge(pid_t pid, uint64_t start, uint64_t len, const struct aio_head *h)
{
	if (h->magic != AIO_RING_MAGIC_ || h->header_length != sizeof(*h) || h->nr < 2 ||
	    ((uint64_t)h->nr + 1) * AIO_EVENT_SIZE != len || h->head >= h->nr || h->tail >= h->nr)
		return err_set(-EOPNOTSUPP,
			       "pid %d: AIO context 0x%" PRIx64 ": a ring this version does not know (magic 0x%x, "
			       "%u events in %" PRIu64 " bytes): not supported",
			       pid, start, h->magic, h->nr, len);
	return 0;
}

int aio_capture(pid_t pid, int mem, struct vma *v)
{
	struct aio_head h;
	int r = read_head(pid, mem, v->start, &h);

	if (r < 0)
		return r;
	r = judge(pid, v->start, v->end - v->start, &h);
	if (r < 0)
		return r;
	v->aio_nr = h.nr;
	/* completed events wait: the whole ring is saved, header and all.
	 * The process is frozen: the kernel may still complete a request
	 * in flight meanwhile, which then is not in the copy */
	if (h.head != h.tail)
		return vma_add_run(v, 0, v->end - v->start);
	return 0;
}

int aio_check(pid_t pid)
{
	char path[64];
	_cleanup_free_ char *text = NULL;
	int r;

	/* the rings only: what else the maps hold is the capture's to judge,
	 * as it always was (a GPU process's areas change at its checkpoint
	 * step, after this check) */
	snprintf(path, sizeof(path), "/proc/%d/maps", pid);
	r = read_file_full(path, &text, NULL);
	if (r < 0)
		return err_set(r, "pid %d: cannot read maps", pid);
	for (char *l = text, *nl; l && *l; l = nl) {
		unsigned long a, b;
		struct aio_head h;
		nl = strchr(l, '\n');
		if (nl)
			*nl++ = 0;
		size_t n = strlen(l), k = strlen(" /[aio] (deleted)");
		if (n < k || strcmp(l + n - k, " /[aio] (deleted)") || sscanf(l, "%lx-%lx", &a, &b) != 2 || a >= b)
			continue;
		r = read_head(pid, -1, a, &h);
		if (r >= 0)
			r = judge(pid, a, b - a, &h);
		if (r < 0)
			return r;
	}
	return 0;
}

static int peek(pid_t pid, uint64_t addr, void *buf, size_t len)
{
	struct iovec l = { buf, len }, rm = { (void *)(uintptr_t)addr, len };
	ssize_t n = process_vm_readv(pid, &l, 1, &rm, 1, 0);

	if (n != (ssize_t)len)
		return err_set(n < 0 ? negerrno() : -EIO, "restore of pid %d: cannot read at %" PRIx64 ": %m", pid, addr);
	return 0;
}

/* Scratch page layout for the reads of nothing: the path, then the
 * iocbs, their pointers, and room for their events. */
#define DUMMY_BATCH 32u
#define SCR_PATH 0u
#define SCR_IOCB 64u
#define SCR_PTRS (SCR_IOCB + DUMMY_BATCH * sizeof(struct iocb))
#define SCR_EVENTS (SCR_PTRS + DUMMY_BATCH * sizeof(uint64_t))

/* Submits n reads of nothing through context id in pid (fd its
 * /dev/null), reaping them when reap: each moves the kernel's tail (and,
 * reaped, the ring's head) one event on. */
static int dummies(struct ctx *c, pid_t pid, uint64_t id, int64_t fd, uint32_t n, bool reap)
{
	uint64_t scratch = restore_scratch(c);
	struct iocb cb[DUMMY_BATCH];
	uint64_t ptr[DUMMY_BATCH];
	int64_t got;
	int r;

	memset(cb, 0, sizeof(cb));
	for (uint32_t i = 0; i < DUMMY_BATCH; i++) {
		cb[i].aio_lio_opcode = IOCB_CMD_PREAD;
		cb[i].aio_fildes = (uint32_t)fd;
		ptr[i] = scratch + SCR_IOCB + i * sizeof(struct iocb);
	}
	r = restore_poke(c, scratch + SCR_IOCB, cb, sizeof(cb));
	if (r >= 0)
		r = restore_poke(c, scratch + SCR_PTRS, ptr, sizeof(ptr));
	while (r >= 0 && n) {
		uint32_t b = MIN(n, DUMMY_BATCH);
		r = restore_sys(c, pid, SYS_io_submit, id, b, scratch + SCR_PTRS, 0, 0, 0, &got,
				"io_submit of reads of nothing");
		if (r >= 0 && (uint64_t)got != b)
			r = err_set(-EIO, "restore of pid %d: AIO context 0x%" PRIx64 ": %ld of %u reads submitted", pid,
				    id, (long)got, b);
		if (r >= 0 && reap)
			r = restore_sys(c, pid, SYS_io_getevents, id, b, b, scratch + SCR_EVENTS, 0, 0, &got,
					"io_getevents of reads of nothing");
		if (r >= 0 && reap && (uint64_t)got != b)
			r = err_set(-EIO, "restore of pid %d: AIO context 0x%" PRIx64 ": %ld of %u reads reaped", pid, id,
				    (long)got, b);
		n -= b;
	}
	return r;
}

/* The saved events of v, between its saved head and tail, put back into
 * the new context at v->start through the kernel's path (above). */
static int refill(struct ctx *c, pid_t pid, const struct vma *v)
{
	uint64_t len = v->end - v->start, scratch = restore_scratch(c);
	_cleanup_free_ uint8_t *ring = malloc(len);
	struct aio_head h, now;
	int64_t fd = -1, ign;
	int r;

	if (!ring)
		return -ENOMEM;
	r = restore_area_bytes(c, v, ring);
	if (r < 0)
		return r;
	memcpy(&h, ring, sizeof(h));
	if (h.magic != AIO_RING_MAGIC_ || h.nr != v->aio_nr || h.head >= h.nr || h.tail >= h.nr)
		return err_set(-EBADMSG, "memory file of AIO ring %" PRIx64 "-%" PRIx64 ": not a ring of %u events",
			       v->start, v->end, v->aio_nr);
	uint32_t waiting = (h.tail + h.nr - h.head) % h.nr;
	r = restore_poke(c, scratch + SCR_PATH, "/dev/null", sizeof("/dev/null"));
	if (r >= 0)
		r = restore_sys(c, pid, SYS_openat, AT_FDCWD, scratch + SCR_PATH, O_RDONLY | O_CLOEXEC, 0, 0, 0, &fd,
				"/dev/null");
	if (r >= 0)
		r = dummies(c, pid, v->start, fd, h.head, true);
	if (r >= 0)
		r = dummies(c, pid, v->start, fd, waiting, false);
	if (fd >= 0)
		restore_sys(c, pid, SYS_close, (uint64_t)fd, 0, 0, 0, 0, 0, &ign, "close");
	if (r >= 0)
		r = peek(pid, v->start, &now, sizeof(now));
	if (r >= 0 && (now.head != h.head || now.tail != h.tail))
		r = err_set(-EIO,
			    "restore of pid %d: AIO context 0x%" PRIx64 ": head %u tail %u after the reads of nothing, "
			    "not %u and %u",
			    pid, v->start, now.head, now.tail, h.head, h.tail);
	/* the events' bytes, in one or two runs (the ring wraps) */
	for (uint32_t k = h.head; r >= 0 && k != h.tail;) {
		uint32_t end = k < h.tail ? h.tail : h.nr;
		uint64_t off = sizeof(h) + (uint64_t)k * AIO_EVENT_SIZE;
		r = restore_poke(c, v->start + off, ring + off, (uint64_t)(end - k) * AIO_EVENT_SIZE);
		k = end % h.nr;
	}
	return r;
}

int aio_restore(struct ctx *c, pid_t pid, const struct vma *v)
{
	uint64_t len = v->end - v->start, scratch = restore_scratch(c);
	int64_t got, ign;
	struct aio_head h;
	uint64_t id = 0;
	int r;

	if (v->aio_nr < 2 || ((uint64_t)v->aio_nr + 1) * AIO_EVENT_SIZE != len)
		return err_set(-EBADMSG, "maps: AIO ring %" PRIx64 "-%" PRIx64 " with aio-nr=%u", v->start, v->end,
			       v->aio_nr);
	r = restore_poke(c, scratch, &id, sizeof(id)); /* io_setup wants *ctxp 0 */
	if (r >= 0)
		r = restore_sys(c, pid, SYS_io_setup, (v->aio_nr - 2) / 2, scratch, 0, 0, 0, 0, &ign, "io_setup");
	if (r >= 0)
		r = peek(pid, scratch, &id, sizeof(id));
	if (r < 0)
		return r;
	/* made, not yet where it belongs: the process is killed on failure,
	 * and the context with it */
	if (fault_hit(FAULT_ENGINE_AIO_RESTORE))
		return err_set(-EIO, "restore of pid %d: AIO context 0x%" PRIx64 ": injected fault", pid, v->start);
	r = peek(pid, id, &h, sizeof(h));
	if (r >= 0 && h.nr != v->aio_nr)
		r = err_set(-EOPNOTSUPP,
			    "restore of pid %d: AIO context 0x%" PRIx64 ": a new ring holds %u events here, %u at the "
			    "checkpoint (another number of CPUs?)",
			    pid, v->start, h.nr, v->aio_nr);
	if (r >= 0)
		r = restore_sys(c, pid, SYS_mremap, id, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, v->start, 0, &got,
				"mremap of an AIO ring");
	if (r >= 0 && (uint64_t)got != v->start)
		r = err_set(-EIO, "restore of pid %d: AIO ring moved to %" PRIx64 ", not %" PRIx64, pid, (uint64_t)got,
			    v->start);
	/* the kernel followed the ring: its address is the context's id */
	if (r >= 0)
		r = restore_sys(c, pid, SYS_io_getevents, v->start, 0, 0, 0, 0, 0, &ign,
				"io_getevents on the moved AIO context");
	if (r >= 0 && v->saved)
		r = refill(c, pid, v);
	if (r >= 0 && v->prot != (PROT_READ | PROT_WRITE))
		r = restore_sys(c, pid, SYS_mprotect, v->start, len, v->prot, 0, 0, 0, &ign, "mprotect of an AIO ring");
	return r;
}
