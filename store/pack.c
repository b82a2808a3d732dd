/*
 * Pack files: append-only files packs/NNNNNNNN.pack of chunk records
 * (docs/FORMAT.md, "The chunk store"). Writers append through io_uring
 * with several 1 MiB buffers in flight, so that compressing the next
 * chunks overlaps the copy into the page cache; bytes are durable only
 * after pack_sync(), which a commit calls before it touches the index.
 * Readers read records through a cache of descriptors, runs of records
 * with synchronous O_DIRECT preads (the packs are not in the page cache,
 * and filling it costs more than the read; reads in flight together come
 * from the read-ahead threads, readahead.c), and check each record's
 * CRC32C before they trust it.
 *
 * What must stay true: a record's offset, once returned by pack_append,
 * is where its bytes land; a pack is never rewritten in place (gc copies
 * live records into a new pack and unlinks the old one).
 */
#include <dirent.h>
#include <fcntl.h>
#include <liburing.h>
#include <sys/stat.h>
#include <sys/uio.h>

#include "store/chunk-int.h"

#define PACK_BUFS 8
#define PACK_BUF_SIZE (1u << 20)
/* user_data of the writeback or early datasync request linked behind a
 * buffer's write. */
#define SFR_TAG 0x1000u

struct pack_writer {
	struct chunk_store *cs;
	uint32_t id;
	int fd;
	struct io_uring ring;
	bool have_ring;      /* else plain pwrite: io_uring may be forbidden (seccomp) */
	uint8_t *buf[PACK_BUFS];
	bool busy[PACK_BUFS]; /* submitted, not completed */
	size_t bufoff[PACK_BUFS];
	size_t buflen[PACK_BUFS];
	size_t wlen[PACK_BUFS];  /* bytes submitted (direct: whole pages) */
	uint64_t fileoff[PACK_BUFS];
	int cur;             /* buffer being filled, -1: none */
	unsigned inflight;
	uint64_t end;        /* logical end: bytes appended so far */
	int error;           /* sticky: first write error */
	/* O_DIRECT: writes go from our buffers to the disk, without the page
	 * cache's copy and bookkeeping, which cost more CPU than hashing on
	 * some machines. Writes must then cover whole 4 KiB pages, so the
	 * partial page at the end of what was written is carried into the
	 * next buffer and written again with what follows. */
	bool direct;
	uint8_t carry[STORE_PAGE_SIZE]; /* bytes of the page at ALIGN_DOWN(end) */
	uint64_t unsynced;   /* bytes submitted since the last early fdatasync */
};

/* O_DIRECT writes complete when the device has the bytes, which may still
 * be only in its volatile cache; the commit's fsync then waits for the
 * device to flush all of them at once (on the development machine's
 * virtual disk, 0.3 s for 550 MB after an ingest that took 0.8 s). A
 * datasync queued on the ring every so often flushes in the background
 * while ingest goes on, so that little is left for the commit. Only a
 * hint: the commit's fsync is still what makes the pack durable. */
#define PACK_EARLY_SYNC (64ull << 20)

/* ---- CRC32C ---------------------------------------------------------------
 * The record checksum must cost nothing next to zstd: SSE4.2's crc32
 * instruction does ~8 bytes a cycle; a table does the same job elsewhere. */

static uint32_t crc_table[8][256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_init(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;
		for (int k = 0; k < 8; k++)
			c = c & 1 ? (c >> 1) ^ 0x82f63b78u : c >> 1;
		crc_table[0][i] = c;
	}
	for (uint32_t i = 0; i < 256; i++)
		for (int t = 1; t < 8; t++)
			crc_table[t][i] = (crc_table[t - 1][i] >> 8) ^ crc_table[0][crc_table[t - 1][i] & 0xff];
}

static uint32_t crc32c_sw(uint32_t crc, const uint8_t *p, size_t len)
{
	pthread_once(&crc_once, crc_init);
	while (len >= 8) {
		uint64_t v;
		memcpy(&v, p, 8);
		v ^= crc;
		crc = crc_table[7][v & 0xff] ^ crc_table[6][(v >> 8) & 0xff] ^ crc_table[5][(v >> 16) & 0xff] ^
		      crc_table[4][(v >> 24) & 0xff] ^ crc_table[3][(v >> 32) & 0xff] ^
		      crc_table[2][(v >> 40) & 0xff] ^ crc_table[1][(v >> 48) & 0xff] ^ crc_table[0][v >> 56];
		p += 8;
		len -= 8;
	}
	while (len--)
		crc = (crc >> 8) ^ crc_table[0][(crc ^ *p++) & 0xff];
	return crc;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) static uint32_t crc32c_hw(uint32_t crc, const uint8_t *p, size_t len)
{
	uint64_t c = crc;
	while (len >= 8) {
		uint64_t v;
		memcpy(&v, p, 8);
		c = __builtin_ia32_crc32di(c, v);
		p += 8;
		len -= 8;
	}
	while (len--)
		c = __builtin_ia32_crc32qi((uint32_t)c, *p++);
	return (uint32_t)c;
}
#endif

uint32_t crc32c(uint32_t crc, const void *buf, size_t len)
{
	crc = ~crc;
#if defined(__x86_64__)
	if (__builtin_cpu_supports("sse4.2"))
		return ~crc32c_hw(crc, buf, len);
#endif
	return ~crc32c_sw(crc, buf, len);
}

uint32_t rec_crc(const struct rec_hdr *h, const void *payload)
{
	struct rec_hdr c = *h;
	c.crc = 0;
	return crc32c(crc32c(0, &c, sizeof(c)), payload, h->stored_len);
}

size_t chunk_payload_len(uint32_t raw_len, unsigned mask)
{
	size_t n = 0;
	for (unsigned i = 0; i < CHUNK_PAGES; i++) {
		if (!(mask & (1u << i)) || i * STORE_PAGE_SIZE >= raw_len)
			continue;
		n += MIN(STORE_PAGE_SIZE, raw_len - i * STORE_PAGE_SIZE);
	}
	return n;
}

void pack_name(uint32_t id, char buf[32])
{
	snprintf(buf, 32, "%08x.pack", id);
}

/* ---- encoding -------------------------------------------------------------- */

/* True when a sample of the payload looks like uniformly random bytes
 * (compressed, encrypted, weights): zstd would spend its time finding
 * nothing. 256 bytes spread over the payload; random data shows ~162 (sd 5)
 * distinct values among them, text and code well under 100. */
static bool looks_random(const uint8_t *p, size_t len)
{
	uint8_t seen[256] = { 0 };
	unsigned distinct = 0;
	size_t step;

	if (len < 4096)
		return false;
	step = len / 256;
	for (size_t i = 0; i < 256; i++) {
		uint8_t c = p[i * step + (i % 7)];
		distinct += !seen[c];
		seen[c] = 1;
	}
	return distinct >= 148;
}

int chunk_encode(struct chunk_store *cs, ZSTD_CCtx *cctx, const uint8_t *block, uint32_t len, unsigned mask,
		 const uint8_t id[STORE_HASH_LEN], struct rec_hdr *h, uint8_t *out, const uint8_t **ret_payload)
{
	uint8_t packed[STORE_BLOCK_SIZE];
	const uint8_t *src = block;
	size_t plen = chunk_payload_len(len, mask), cap = ZSTD_compressBound(STORE_BLOCK_SIZE), z;

	/* Zero pages inside a block are cut out before compression, so they
	 * cost nothing even in a block that holds data. */
	if (plen != len) {
		size_t o = 0;
		for (unsigned i = 0; i < CHUNK_PAGES; i++) {
			if (!(mask & (1u << i)) || i * STORE_PAGE_SIZE >= len)
				continue;
			size_t n = MIN(STORE_PAGE_SIZE, len - i * STORE_PAGE_SIZE);
			memcpy(packed + o, block + i * STORE_PAGE_SIZE, n);
			o += n;
		}
		src = packed;
	}
	memset(h, 0, sizeof(*h));
	h->magic = REC_MAGIC;
	h->mask = (uint8_t)mask;
	h->raw_len = len;
	memcpy(h->id, id, STORE_HASH_LEN);

	z = looks_random(src, plen) ? plen : ZSTD_compressCCtx(cctx, out, cap, src, plen, cs->zstd_level);
	if (!ZSTD_isError(z) && z < plen) {
		h->codec = CHUNK_CODEC_ZSTD;
		h->stored_len = (uint32_t)z;
		*ret_payload = out;
	} else {
		/* Incompressible (or zstd failed: raw is always correct). */
		h->codec = CHUNK_CODEC_RAW;
		h->stored_len = (uint32_t)plen;
		if (src == packed) {
			memcpy(out, packed, plen);
			*ret_payload = out;
		} else {
			*ret_payload = block;
		}
	}
	h->crc = rec_crc(h, *ret_payload);
	return 0;
}

static void scatter(const struct rec_hdr *h, const uint8_t *src, uint8_t *out)
{
	size_t o = 0;
	for (unsigned i = 0; i < CHUNK_PAGES && i * STORE_PAGE_SIZE < h->raw_len; i++) {
		size_t n = MIN(STORE_PAGE_SIZE, h->raw_len - i * STORE_PAGE_SIZE);
		if (h->mask & (1u << i)) {
			memcpy(out + i * STORE_PAGE_SIZE, src + o, n);
			o += n;
		} else {
			memset(out + i * STORE_PAGE_SIZE, 0, n);
		}
	}
}

int chunk_decode(struct chunk_store *cs, const struct rec_hdr *h, const uint8_t *payload, uint8_t *out)
{
	size_t plen = chunk_payload_len(h->raw_len, h->mask);

	if (h->codec == CHUNK_CODEC_RAW) {
		if (h->stored_len != plen)
			return -EIO;
		if (plen == h->raw_len)
			memcpy(out, payload, plen);
		else
			scatter(h, payload, out);
		return 0;
	}
	if (h->codec != CHUNK_CODEC_ZSTD)
		return -EIO;

	uint8_t tmp[STORE_BLOCK_SIZE];
	uint8_t *dst = plen == h->raw_len ? out : tmp;
	ZSTD_DCtx *d = cs_dctx_get(cs);
	if (!d)
		return -ENOMEM;
	/* Tell zstd the true room: given more, it may write past the end of a
	 * caller's buffer sized exactly to the chunk. */
	size_t z = ZSTD_decompressDCtx(d, dst, dst == tmp ? STORE_BLOCK_SIZE : plen, payload, h->stored_len);
	cs_dctx_put(cs, d);
	if (ZSTD_isError(z) || z != plen)
		return -EIO;
	if (dst == tmp)
		scatter(h, tmp, out);
	return 0;
}

/* ---- writers ------------------------------------------------------------------ */

static int reap_one(struct pack_writer *p, bool wait)
{
	struct io_uring_cqe *cqe;
	int r = wait ? io_uring_wait_cqe(&p->ring, &cqe) : io_uring_peek_cqe(&p->ring, &cqe);
	if (r < 0)
		return r == -EAGAIN ? 0 : r;
	uint64_t tag = io_uring_cqe_get_data64(cqe);
	int b = (int)tag, res = cqe->res;
	io_uring_cqe_seen(&p->ring, cqe);
	if (tag & SFR_TAG) {
		/* Only a hint to start writeback early; the commit's fsync is
		 * what makes the bytes durable, so its failure is ignored. */
		p->inflight--;
		return 1;
	}
	if (b < 0 || b >= PACK_BUFS || !p->busy[b])
		return err_set(-EIO, "pack %08x: stray completion", p->id);
	p->busy[b] = false;
	p->inflight--;
	if (res < 0) {
		if (!p->error)
			p->error = err_set(res, "pack %08x: write at offset %llu failed: %s", p->id,
					   (unsigned long long)p->fileoff[b], strerror(-res));
	} else if ((size_t)res < p->wlen[b] && p->direct) {
		if (!p->error)
			p->error = err_set(-EIO, "pack %08x: short write at offset %llu", p->id,
					   (unsigned long long)p->fileoff[b]);
	} else if ((size_t)res < p->wlen[b]) {
		/* Short write (disk full on the way, signals): finish it by hand. */
		int w = pwrite_full(p->fd, p->buf[b] + res, p->wlen[b] - (size_t)res,
				    (off_t)(p->fileoff[b] + (uint64_t)res));
		if (w < 0 && !p->error)
			p->error = err_set(w, "pack %08x: write at offset %llu failed: %s", p->id,
					   (unsigned long long)p->fileoff[b], strerror(-w));
	}
	return 1;
}

/* Submits the current buffer. final: the whole of it, the last page padded
 * with zeros (direct); else, with O_DIRECT, only its whole pages, the rest
 * being carried into the next buffer. */
static int submit_cur(struct pack_writer *p, bool final)
{
	int b = p->cur;
	size_t len;

	if (b < 0)
		return 0;
	len = p->buflen[b];
	if (p->direct) {
		size_t whole = ALIGN_DOWN(len, (size_t)STORE_PAGE_SIZE);
		memcpy(p->carry, p->buf[b] + whole, len - whole);
		if (final) {
			len = ALIGN_UP(len, (size_t)STORE_PAGE_SIZE);
			memset(p->buf[b] + p->buflen[b], 0, len - p->buflen[b]);
		} else {
			len = whole;
		}
	}
	p->cur = -1;
	p->wlen[b] = len;
	if (len == 0)
		return p->error;
	if (fault_hit(FAULT_STORE_PACK_WRITE)) {
		if (!p->error)
			p->error = err_set(-EIO, "pack %08x: write at offset %llu failed: injected fault", p->id,
					   (unsigned long long)p->fileoff[b]);
		return p->error;
	}
	if (!p->have_ring) {
		int r = pwrite_full(p->fd, p->buf[b], len, (off_t)p->fileoff[b]);
		if (r < 0 && !p->error)
			p->error = err_set(r, "pack %08x: write at offset %llu failed: %s", p->id,
					   (unsigned long long)p->fileoff[b], strerror(-r));
		else if (!p->direct)
			sync_file_range(p->fd, (off_t)p->fileoff[b], (off_t)len, SYNC_FILE_RANGE_WRITE);
		return p->error;
	}
	struct io_uring_sqe *sqe = io_uring_get_sqe(&p->ring), *sfr = NULL;
	if (!sqe)
		return err_set(-EIO, "pack %08x: submission queue full", p->id);
	io_uring_prep_write(sqe, p->fd, p->buf[b], (unsigned)len, p->fileoff[b]);
	io_uring_sqe_set_data64(sqe, (uint64_t)b);
	p->busy[b] = true;
	p->inflight++;
	/* Buffered: start writeback of the range as soon as it is written, so
	 * that the commit's fsync finds most of the pack on disk already
	 * instead of writing it all while the caller waits. */
	p->unsynced += len;
	if (!p->direct || p->unsynced >= PACK_EARLY_SYNC)
		sfr = io_uring_get_sqe(&p->ring);
	if (sfr) {
		sqe->flags |= IOSQE_IO_LINK;
		if (p->direct) {
			io_uring_prep_fsync(sfr, p->fd, IORING_FSYNC_DATASYNC);
			p->unsynced = 0;
		} else {
			io_uring_prep_sync_file_range(sfr, p->fd, (unsigned)len, p->fileoff[b], SYNC_FILE_RANGE_WRITE);
		}
		io_uring_sqe_set_data64(sfr, SFR_TAG | (uint64_t)b);
		p->inflight++;
	}
	int r = io_uring_submit(&p->ring);
	if (r < 0) {
		p->busy[b] = false;
		p->inflight -= sfr ? 2 : 1;
		if (!p->error)
			p->error = err_set(r, "pack %08x: io_uring submit: %s", p->id, strerror(-r));
	}
	return p->error;
}

/* Makes p->cur a buffer with room, waiting for a completion if all are in
 * flight. */
static int next_buf(struct pack_writer *p)
{
	for (;;) {
		for (int b = 0; b < PACK_BUFS; b++) {
			if (p->busy[b])
				continue;
			if (!p->buf[b]) {
				p->buf[b] = aligned_alloc(4096, PACK_BUF_SIZE);
				if (!p->buf[b])
					return -ENOMEM;
			}
			p->cur = b;
			if (p->direct) {
				p->fileoff[b] = ALIGN_DOWN(p->end, (uint64_t)STORE_PAGE_SIZE);
				p->buflen[b] = (size_t)(p->end - p->fileoff[b]);
				memcpy(p->buf[b], p->carry, p->buflen[b]);
			} else {
				p->fileoff[b] = p->end;
				p->buflen[b] = 0;
			}
			return 0;
		}
		int r = reap_one(p, true);
		if (r < 0)
			return r;
	}
}

int pack_writer_new(struct chunk_store *cs, struct pack_writer **ret)
{
	struct pack_writer *p = calloc(1, sizeof(*p));
	char name[32];
	struct pack_hdr h = { .magic = PACK_MAGIC, .version = CHUNK_FORMAT_VERSION };
	int r;

	if (!p)
		return -ENOMEM;
	p->cs = cs;
	p->cur = -1;
	p->fd = -1;
	/* Ids only grow and are never reused, so a reader holding an old
	 * location can tell a deleted pack (ENOENT) from a live one. */
	for (;;) {
		p->id = atomic_fetch_add(&cs->next_pack, 1);
		pack_name(p->id, name);
		p->fd = openat(cs->packs_fd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
		if (p->fd >= 0)
			break;
		if (errno != EEXIST) {
			r = err_set(negerrno(), "pack %s: cannot create: %m", name);
			free(p);
			return r;
		}
	}
	h.id = p->id;
	/* O_DIRECT where the filesystem has it (not tmpfs); the header then
	 * goes out with the first records. */
	if (!getenv("CKPTFS_PACK_BUFFERED")) {
		int fl = fcntl(p->fd, F_GETFL);
		p->direct = fl >= 0 && fcntl(p->fd, F_SETFL, fl | O_DIRECT) == 0;
	}
	if (p->direct) {
		memcpy(p->carry, &h, sizeof(h));
	} else {
		r = pwrite_full(p->fd, &h, sizeof(h), 0);
		if (r < 0) {
			err_set(r, "pack %s: cannot write header: %s", name, strerror(-r));
			goto fail;
		}
	}
	p->end = sizeof(h);
	p->have_ring = io_uring_queue_init(2 * PACK_BUFS, &p->ring, 0) == 0;
	/* Not into a process forked meanwhile (a restore). */
	if (p->have_ring && io_uring_ring_dontfork(&p->ring) < 0) {
		io_uring_queue_exit(&p->ring);
		p->have_ring = false;
	}
	log_debug("pack %s: created (%s%s)", name, p->have_ring ? "io_uring" : "pwrite", p->direct ? ", O_DIRECT" : "");
	*ret = p;
	return 0;
fail:
	close(p->fd);
	unlinkat(cs->packs_fd, name, 0);
	free(p);
	return r;
}

int pack_append(struct pack_writer *p, const struct rec_hdr *h, const void *payload, uint64_t *ret_off)
{
	size_t need = sizeof(*h) + h->stored_len;
	int r;

	if (p->error)
		return p->error;
	if (p->have_ring)
		while (p->inflight && reap_one(p, false) > 0)
			;
	if (p->cur >= 0 && p->buflen[p->cur] + need > PACK_BUF_SIZE) {
		r = submit_cur(p, false);
		if (r < 0)
			return r;
	}
	if (p->cur < 0) {
		r = next_buf(p);
		if (r < 0)
			return r;
	}
	uint8_t *d = p->buf[p->cur] + p->buflen[p->cur];
	memcpy(d, h, sizeof(*h));
	memcpy(d + sizeof(*h), payload, h->stored_len);
	p->buflen[p->cur] += need;
	*ret_off = p->end;
	p->end += need;
	return 0;
}

int pack_flush(struct pack_writer *p)
{
	int r = submit_cur(p, true);
	while (p->have_ring && p->inflight) {
		int q = reap_one(p, true);
		if (q < 0) {
			if (!p->error)
				p->error = err_set(q, "pack %08x: io_uring wait: %s", p->id, strerror(-q));
			break;
		}
	}
	return p->error ? p->error : r;
}

uint32_t pack_writer_id(const struct pack_writer *p)
{
	return p->id;
}

uint64_t pack_writer_size(const struct pack_writer *p)
{
	return p->end;
}

int pack_writer_close(struct pack_writer *p)
{
	int r;
	if (!p)
		return 0;
	r = pack_flush(p);
	if (p->have_ring)
		io_uring_queue_exit(&p->ring);
	close(p->fd);
	for (int b = 0; b < PACK_BUFS; b++)
		free(p->buf[b]);
	free(p);
	return r;
}

int pack_take(struct chunk_store *cs, struct pack_writer **ret)
{
	pthread_mutex_lock(&cs->pool_lock);
	if (cs->npool) {
		*ret = cs->pool[--cs->npool];
		pthread_mutex_unlock(&cs->pool_lock);
		return 0;
	}
	pthread_mutex_unlock(&cs->pool_lock);
	return pack_writer_new(cs, ret);
}

int pack_give(struct chunk_store *cs, struct pack_writer *p)
{
	int r = pack_flush(p);
	if (r < 0 || p->end >= CHUNK_PACK_MAX)
		goto close;
	pthread_mutex_lock(&cs->pool_lock);
	if (cs->npool == cs->apool) {
		size_t n = cs->apool ? cs->apool * 2 : 4;
		struct pack_writer **np = realloc(cs->pool, n * sizeof(*np));
		if (!np) {
			pthread_mutex_unlock(&cs->pool_lock);
			goto close;
		}
		cs->pool = np;
		cs->apool = n;
	}
	cs->pool[cs->npool++] = p;
	pthread_mutex_unlock(&cs->pool_lock);
	return 0;
close:
	pack_writer_close(p);
	return r;
}

void pack_pool_drain(struct chunk_store *cs)
{
	pthread_mutex_lock(&cs->pool_lock);
	while (cs->npool)
		pack_writer_close(cs->pool[--cs->npool]);
	pthread_mutex_unlock(&cs->pool_lock);
}

int pack_sync(struct chunk_store *cs, uint32_t id)
{
	char name[32];
	_cleanup_close_ int fd = -1;

	pack_name(id, name);
	fd = openat(cs->packs_fd, name, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return err_set(negerrno(), "pack %s: cannot open to sync: %m", name);
	/* fsync, not fdatasync: the pack grew, its size is metadata. */
	if (fsync(fd) < 0)
		return err_set(negerrno(), "pack %s: fsync: %m", name);
	return 0;
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return x < y ? -1 : x > y;
}

int pack_list(struct chunk_store *cs, uint32_t **ret, size_t *n)
{
	int fd = openat(cs->packs_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return err_set(negerrno(), "%s/packs: %m", cs->dir);
	DIR *d = fdopendir(fd);
	if (!d) {
		close(fd);
		return -ENOMEM;
	}
	uint32_t *v = NULL;
	size_t cnt = 0, cap = 0;
	struct dirent *de;
	while ((de = readdir(d))) {
		char *end;
		unsigned long id = strtoul(de->d_name, &end, 16);
		if (end != de->d_name + 8 || strcmp(end, ".pack") || id > UINT32_MAX)
			continue;
		if (cnt == cap) {
			cap = cap ? cap * 2 : 64;
			uint32_t *nv = realloc(v, cap * sizeof(*v));
			if (!nv) {
				free(v);
				closedir(d);
				return -ENOMEM;
			}
			v = nv;
		}
		v[cnt++] = (uint32_t)id;
	}
	closedir(d);
	if (cnt)
		qsort(v, cnt, sizeof(*v), cmp_u32);
	*ret = v;
	*n = cnt;
	return 0;
}

/* ---- readers ------------------------------------------------------------------ */

static void pf_free(struct pack_fd *pf)
{
	close(pf->fd);
	if (pf->dfd >= 0)
		close(pf->dfd);
	free(pf);
}

static int fd_get(struct chunk_store *cs, uint32_t id, struct pack_fd **ret)
{
	int r = 0;

	pthread_mutex_lock(&cs->fd_lock);
	if (id >= cs->nfds) {
		size_t n = MAX((size_t)id + 1, cs->nfds * 2);
		struct pack_fd **nf = realloc(cs->fds, n * sizeof(*nf));
		if (!nf) {
			r = -ENOMEM;
			goto out;
		}
		memset(nf + cs->nfds, 0, (n - cs->nfds) * sizeof(*nf));
		cs->fds = nf;
		cs->nfds = n;
	}
	struct pack_fd *pf = cs->fds[id];
	if (!pf) {
		char name[32];
		pack_name(id, name);
		int fd = openat(cs->packs_fd, name, O_RDONLY | O_CLOEXEC);
		if (fd < 0) {
			r = errno == ENOENT ? -ENOENT : err_set(negerrno(), "pack %s: cannot open: %m", name);
			goto out;
		}
		pf = calloc(1, sizeof(*pf));
		if (!pf) {
			close(fd);
			r = -ENOMEM;
			goto out;
		}
		pf->fd = fd;
		/* Runs are read O_DIRECT: the packs were written so, and filling
		 * the page cache costs more CPU than the read itself here
		 * (memory we would read once and then drop). */
		pf->dfd = openat(cs->packs_fd, name, O_RDONLY | O_CLOEXEC | O_DIRECT);
		pf->refs = 1; /* the cache's */
		cs->fds[id] = pf;
	}
	pf->refs++;
	*ret = pf;
out:
	pthread_mutex_unlock(&cs->fd_lock);
	return r;
}

static void fd_put(struct chunk_store *cs, struct pack_fd *pf)
{
	pthread_mutex_lock(&cs->fd_lock);
	if (--pf->refs == 0) {
		pf_free(pf);
	}
	pthread_mutex_unlock(&cs->fd_lock);
}

void pack_fd_forget(struct chunk_store *cs, uint32_t id)
{
	pthread_mutex_lock(&cs->fd_lock);
	if (id < cs->nfds && cs->fds[id]) {
		struct pack_fd *pf = cs->fds[id];
		cs->fds[id] = NULL;
		if (--pf->refs == 0)
			pf_free(pf);
	}
	pthread_mutex_unlock(&cs->fd_lock);
}

void pack_fds_close(struct chunk_store *cs)
{
	for (size_t i = 0; i < cs->nfds; i++) {
		if (cs->fds[i]) {
			pf_free(cs->fds[i]);
		}
	}
	free(cs->fds);
	cs->fds = NULL;
	cs->nfds = 0;
}

/* Records the detail of a damaged record: "pack P offset O (chunk C): why".
 * Formatted only on failure: the read path runs per 16 KiB. */
static int rec_err(int err, const struct chunk_loc *loc, const uint8_t id[STORE_HASH_LEN], const char *fmt, ...)
	_printf_(4, 5);
static int rec_err(int err, const struct chunk_loc *loc, const uint8_t id[STORE_HASH_LEN], const char *fmt, ...)
{
	char name[32], hex[2 * STORE_HASH_LEN + 1], why[256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	pack_name(loc->pack, name);
	store_hash_hex(id, hex);
	return err_set(err, "pack %s offset %llu (chunk %s): %s", name, (unsigned long long)loc->offset, hex, why);
}

static int check_hdr(const struct chunk_loc *loc, const uint8_t id[STORE_HASH_LEN], const struct rec_hdr *h,
		     const uint8_t *payload, ssize_t n)
{
	if (n >= 0 && (size_t)n < sizeof(*h) + loc->stored_len)
		return rec_err(-EIO, loc, id, "record truncated: pack ends after %zd of %zu bytes", n,
			       sizeof(*h) + loc->stored_len);
	if (h->magic != REC_MAGIC)
		return rec_err(-EIO, loc, id, "no record header there");
	if (memcmp(h->id, id, STORE_HASH_LEN))
		return -ESTALE;
	if (h->stored_len != loc->stored_len || h->raw_len != loc->raw_len || h->codec != loc->codec ||
	    h->mask != loc->mask)
		return rec_err(-EIO, loc, id, "record header disagrees with the index");
	if (rec_crc(h, payload) != h->crc)
		return rec_err(-EIO, loc, id, "checksum mismatch");
	return 0;
}

static int read_rec(struct chunk_store *cs, const struct chunk_loc *loc, const uint8_t id[STORE_HASH_LEN],
		    struct rec_hdr *h, uint8_t *payload)
{
	struct pack_fd *pf = NULL;
	struct iovec iov[2];
	ssize_t n;
	int r;

	if (loc->stored_len > STORE_BLOCK_SIZE || loc->raw_len > STORE_BLOCK_SIZE || !loc->raw_len)
		return rec_err(-EIO, loc, id, "bad location in the index");
	r = fd_get(cs, loc->pack, &pf);
	if (r < 0)
		return r;
	iov[0] = (struct iovec){ h, sizeof(*h) };
	iov[1] = (struct iovec){ payload, loc->stored_len };
	n = preadv(pf->fd, iov, 2, (off_t)loc->offset);
	if (n < 0)
		r = rec_err(negerrno(), loc, id, "read: %m");
	fd_put(cs, pf);
	if (r < 0)
		return r;
	if ((size_t)n < sizeof(*h))
		memset(h, 0, sizeof(*h));
	return check_hdr(loc, id, h, payload, n);
}

int pack_read_record(struct chunk_store *cs, const struct chunk_loc *loc, const uint8_t id[STORE_HASH_LEN],
		     struct rec_hdr *h, uint8_t *payload)
{
	return read_rec(cs, loc, id, h, payload);
}

int pack_read_chunk(struct chunk_store *cs, const struct chunk_loc *loc, const uint8_t id[STORE_HASH_LEN],
		    uint8_t *out)
{
	struct rec_hdr h;
	uint8_t payload[STORE_BLOCK_SIZE];
	bool direct;
	int r;

	/* A whole raw block goes straight into the caller's buffer: no copy. */
	direct = out && loc->codec == CHUNK_CODEC_RAW && loc->mask == CHUNK_MASK_FULL &&
		 loc->stored_len == loc->raw_len;
	r = read_rec(cs, loc, id, &h, direct ? out : payload);
	if (r < 0 || !out || direct)
		return r;
	r = chunk_decode(cs, &h, payload, out);
	if (r < 0)
		return rec_err(-EIO, loc, id, "cannot decode (codec %u)", h.codec);
	return 0;
}

/* ---- reading runs of records ---------------------------------------------
 * A file written in one go lies in its pack as consecutive records, and a
 * syscall costs more than copying 16 KiB (much more in some VMs): a
 * sequential read takes up to PACK_RUN_MAX records in one preadv. */

static pthread_key_t run_key;
static pthread_once_t run_once = PTHREAD_ONCE_INIT;

/* A thread's run buffer: the records of one run and the page each end
 * shares with its neighbours, page aligned for O_DIRECT. */
#define RUN_BUF_LEN (ALIGN_UP((size_t)PACK_RUN_MAX * (sizeof(struct rec_hdr) + STORE_BLOCK_SIZE), \
			      (size_t)STORE_PAGE_SIZE) + 2 * (size_t)STORE_PAGE_SIZE)

static void run_init(void)
{
	if (pthread_key_create(&run_key, free) != 0)
		abort();
}

static uint8_t *run_buf(void)
{
	void *b;

	pthread_once(&run_once, run_init);
	b = pthread_getspecific(run_key);
	if (b)
		return b;
	if (posix_memalign(&b, STORE_PAGE_SIZE, RUN_BUF_LEN) != 0)
		return NULL;
	if (pthread_setspecific(run_key, b) != 0) {
		free(b);
		return NULL;
	}
	return b;
}

/* Checks and decodes record i of a run whose bytes are in memory at rec. */
static int run_rec(struct chunk_store *cs, const struct chunk_loc *loc, const uint8_t id[STORE_HASH_LEN],
		   const uint8_t *rec, uint8_t *out)
{
	struct rec_hdr h;
	int r;

	memcpy(&h, rec, sizeof(h));
	r = check_hdr(loc, id, &h, rec + sizeof(h), (ssize_t)(sizeof(h) + loc->stored_len));
	if (r < 0)
		return r;
	return chunk_decode(cs, &h, rec + sizeof(h), out);
}

/* Reads n records that lie back to back in one pack with one preadv and
 * decodes each into outs[i]: the way without O_DIRECT. */
static int read_run_buffered(struct chunk_store *cs, size_t n, const struct chunk_loc *locs,
			     const uint8_t (*ids)[STORE_HASH_LEN], uint8_t *const *outs)
{
	struct rec_hdr hdrs[PACK_RUN_MAX];
	struct iovec iov[2 * PACK_RUN_MAX];
	struct pack_fd *pf = NULL;
	uint8_t *scratch;
	size_t total = 0;
	bool direct[PACK_RUN_MAX];
	ssize_t got;
	int r;

	if (n == 0 || n > PACK_RUN_MAX)
		return -EINVAL;
	scratch = run_buf();
	if (!scratch)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		const struct chunk_loc *l = &locs[i];
		if (l->pack != locs[0].pack || l->stored_len > STORE_BLOCK_SIZE || l->raw_len > STORE_BLOCK_SIZE ||
		    l->offset != locs[0].offset + total)
			return -EINVAL;
		total += sizeof(struct rec_hdr) + l->stored_len;
	}
	r = fd_get(cs, locs[0].pack, &pf);
	if (r < 0)
		return r;
	for (size_t i = 0; i < n; i++) {
		const struct chunk_loc *l = &locs[i];
		direct[i] = l->codec == CHUNK_CODEC_RAW && l->mask == CHUNK_MASK_FULL && l->stored_len == l->raw_len;
		iov[2 * i] = (struct iovec){ &hdrs[i], sizeof(hdrs[i]) };
		iov[2 * i + 1] = (struct iovec){ direct[i] ? outs[i] : scratch + i * STORE_BLOCK_SIZE, l->stored_len };
	}
	got = preadv(pf->fd, iov, (int)(2 * n), (off_t)locs[0].offset);
	fd_put(cs, pf);
	/* Anything unusual: the caller reads chunk by chunk, which says
	 * exactly what is wrong where. */
	if (got != (ssize_t)total)
		return -EIO;
	for (size_t i = 0; i < n; i++) {
		const uint8_t *payload = direct[i] ? outs[i] : scratch + i * STORE_BLOCK_SIZE;
		r = check_hdr(&locs[i], ids[i], &hdrs[i], payload, (ssize_t)(sizeof(struct rec_hdr) + locs[i].stored_len));
		if (r < 0)
			return r;
		if (!direct[i]) {
			r = chunk_decode(cs, &hdrs[i], payload, outs[i]);
			if (r < 0)
				return r;
		}
	}
	return 0;
}

/* ---- several runs a call ------------------------------------------------------
 * Up to PACK_RUNS_MAX runs, each read with one synchronous O_DIRECT pread
 * into a page-aligned per-thread buffer and decoded from there. Reads in
 * flight together come from the store's read-ahead threads
 * (readahead.c), each doing this on its own unit of the file: an
 * io_uring per call cost more to set up than its overlap saved, and one
 * kept per thread or reader is a mapping the engine's restore would find
 * in its own process. */

static pthread_key_t runs_key;
static pthread_once_t runs_once = PTHREAD_ONCE_INIT;

static void runs_init(void)
{
	if (pthread_key_create(&runs_key, free) != 0)
		abort();
}

/* The thread's direct-read buffer: RUN_BUF_LEN bytes, page aligned. */
static uint8_t *runs_buf(void)
{
	void *b;

	pthread_once(&runs_once, runs_init);
	b = pthread_getspecific(runs_key);
	if (b)
		return b;
	if (posix_memalign(&b, STORE_PAGE_SIZE, RUN_BUF_LEN) != 0)
		return NULL;
	if (pthread_setspecific(runs_key, b) != 0) {
		free(b);
		return NULL;
	}
	return b;
}

int pack_read_runs(struct chunk_store *cs, size_t nruns, const size_t *cnt, const struct chunk_loc *locs,
		   const uint8_t (*ids)[STORE_HASH_LEN], uint8_t *const *outs)
{
	struct pack_fd *pf[PACK_RUNS_MAX] = { NULL };
	uint64_t start[PACK_RUNS_MAX], need[PACK_RUNS_MAX];
	size_t first[PACK_RUNS_MAX];
	uint8_t *buf;
	bool buffered = false;
	int r = 0;

	if (nruns == 0 || nruns > PACK_RUNS_MAX)
		return -EINVAL;
	for (size_t k = 0, i = 0; k < nruns; i += cnt[k], k++) {
		uint64_t total = 0;
		if (cnt[k] == 0 || cnt[k] > PACK_RUN_MAX)
			return -EINVAL;
		first[k] = i;
		for (size_t j = i; j < i + cnt[k]; j++) {
			const struct chunk_loc *l = &locs[j];
			if (l->pack != locs[i].pack || l->stored_len > STORE_BLOCK_SIZE ||
			    l->raw_len > STORE_BLOCK_SIZE || l->offset != locs[i].offset + total)
				return -EINVAL;
			total += sizeof(struct rec_hdr) + l->stored_len;
		}
		start[k] = ALIGN_DOWN(locs[i].offset, (uint64_t)STORE_PAGE_SIZE);
		need[k] = locs[i].offset + total - start[k];
	}
	for (size_t k = 0; k < nruns; k++) {
		r = fd_get(cs, locs[first[k]].pack, &pf[k]);
		if (r < 0)
			goto out;
		buffered |= pf[k]->dfd < 0;
	}
	buf = buffered ? NULL : runs_buf();
	if (!buffered && !buf) {
		r = -ENOMEM;
		goto out;
	}
	for (size_t k = 0; k < nruns && r == 0; k++) {
		if (buffered) {
			/* No O_DIRECT here (tmpfs before Linux 6.6): one
			 * buffered preadv a run. */
			r = read_run_buffered(cs, cnt[k], &locs[first[k]], &ids[first[k]], &outs[first[k]]);
			continue;
		}
		ssize_t got = pread(pf[k]->dfd, buf, (size_t)ALIGN_UP(need[k], (uint64_t)STORE_PAGE_SIZE),
				    (off_t)start[k]);
		if (got < (ssize_t)need[k]) {
			r = -EIO;
			break;
		}
		for (size_t j = first[k]; j < first[k] + cnt[k] && r == 0; j++)
			r = run_rec(cs, &locs[j], ids[j], buf + (locs[j].offset - start[k]), outs[j]);
	}
out:
	for (size_t k = 0; k < nruns; k++)
		if (pf[k])
			fd_put(cs, pf[k]);
	return r;
}
