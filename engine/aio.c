/*
 * AIO contexts (io_setup(2)): the ring the kernel maps into the process,
 * "/[aio] (deleted)" in its maps, whose address is the context's id.
 *
 * The ring's header (struct aio_ring of fs/aio.c: id, nr, head, tail,
 * magic, ...) is the process's view of the context: nr events fit, the
 * kernel writes completions at tail, the process reaps from head. The
 * kernel keeps a copy of tail of its own, which a new context starts at
 * 0: a ring whose completed events are not all reaped (head != tail)
 * cannot be handed to a new context as it is, and is refused, naming it.
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
 * on the old id tells that it names the context. The new ring is empty
 * (head = tail = 0), as the image's was.
 */
#include <fcntl.h>
#include <inttypes.h>
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
	if (h->magic != AIO_RING_MAGIC_ || h->header_length != sizeof(*h) || !h->nr ||
	    ((uint64_t)h->nr + 1) * AIO_EVENT_SIZE != len || h->head >= h->nr || h->tail >= h->nr)
		return err_set(-EOPNOTSUPP,
			       "pid %d: AIO context 0x%" PRIx64 ": a ring this version does not know (magic 0x%x, "
			       "%u events in %" PRIu64 " bytes): not supported",
			       pid, start, h->magic, h->nr, len);
	if (h->head != h->tail)
		return err_set(-EOPNOTSUPP,
			       "pid %d: AIO context 0x%" PRIx64 " with %u completed events not reaped yet (a new "
			       "context cannot be given them): not supported; checkpoint again once they are reaped",
			       pid, start, (h->tail + h->nr - h->head) % h->nr);
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
	return 0;
}

int aio_check(pid_t pid)
{
	struct vma *v = NULL;
	size_t n = 0;
	int r = maps_read(pid, &v, &n);

	if (r < 0)
		return r;
	for (size_t i = 0; i < n && r >= 0; i++) {
		struct aio_head h;
		if (v[i].kind != VMA_AIO)
			continue;
		r = read_head(pid, -1, v[i].start, &h);
		if (r >= 0)
			r = judge(pid, v[i].start, v[i].end - v[i].start, &h);
	}
	vmas_free(v, n);
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
	if (r < 0)
		return r;
	struct iovec l = { &id, sizeof(id) }, rm = { (void *)(uintptr_t)scratch, sizeof(id) };
	if (process_vm_readv(pid, &l, 1, &rm, 1, 0) != (ssize_t)sizeof(id))
		return err_set(negerrno(), "restore of pid %d: AIO context 0x%" PRIx64 ": cannot read its new id: %m",
			       pid, v->start);
	/* made, not yet where it belongs: the process is killed on failure,
	 * and the context with it */
	if (fault_hit(FAULT_ENGINE_AIO_RESTORE))
		return err_set(-EIO, "restore of pid %d: AIO context 0x%" PRIx64 ": injected fault", pid, v->start);
	r = read_head(pid, -1, id, &h);
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
	if (r >= 0 && v->prot != (PROT_READ | PROT_WRITE))
		r = restore_sys(c, pid, SYS_mprotect, v->start, len, v->prot, 0, 0, 0, &ign, "mprotect of an AIO ring");
	return r;
}
