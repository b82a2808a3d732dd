/*
 * The manifest: the text file that lists every other file of a snapshot
 * with its size and hash (docs/FORMAT.md, "The manifest and the file
 * hash"):
 *
 *   ckptfs-snapshot 1
 *   hash sha256-tree
 *   created 1764000000
 *   files 2
 *   <64 hex> 4096 maps
 *   <64 hex> 1048576 memory/00007f0000000000-00007f0000100000
 *
 * The parser is the gate every imported snapshot passes, so it is strict
 * and defensive: it reads only the `len` bytes it is given (the text is
 * not NUL-terminated and may hold NULs), accepts exactly one spelling of
 * each value, and names the line of the first thing it rejects.
 */
#include <inttypes.h>

#include "store/store-int.h"

/* Sizes above this are absurd (1 PiB) and rejected, so that sums and
 * block counts never overflow. */
#define MANIFEST_MAX_SIZE (1ull << 50)
/* A file line is at most 64 + 1 + 16 + 1 + 1024 bytes; header lines are
 * short. */
#define MANIFEST_MAX_LINE 2048
#define MANIFEST_MAX_FILES (1u << 24)
#define HASH_NAME "sha256-tree"

static int cmp_entry(const void *a, const void *b)
{
	return strcmp(((const struct manifest_entry *)a)->path, ((const struct manifest_entry *)b)->path);
}

void manifest_clear(struct manifest *m)
{
	if (!m)
		return;
	for (size_t i = 0; i < m->nfiles; i++)
		free(m->files[i].path);
	free(m->files);
	memset(m, 0, sizeof(*m));
}

const struct manifest_entry *manifest_find(const struct manifest *m, const char *path)
{
	size_t lo = 0, hi = m->nfiles;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = strcmp(path, m->files[mid].path);
		if (c == 0)
			return &m->files[mid];
		if (c < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return NULL;
}

/* True when some proper prefix of path (at a '/') is itself an entry: a
 * path cannot be both a file and a directory. */
static const char *file_parent(const struct manifest *m, const char *path)
{
	char buf[1025];
	size_t len = strlen(path);

	if (len >= sizeof(buf))
		return NULL;
	memcpy(buf, path, len + 1);
	for (size_t i = 0; i < len; i++) {
		if (buf[i] != '/')
			continue;
		buf[i] = 0;
		const struct manifest_entry *e = manifest_find(m, buf);
		buf[i] = '/';
		if (e)
			return e->path;
	}
	return NULL;
}

static bool reserved(const char *path)
{
	return !strcmp(path, STORE_MANIFEST) || !strncmp(path, STORE_MANIFEST "/", strlen(STORE_MANIFEST) + 1);
}

int manifest_format(struct manifest *m, char **ret, size_t *ret_len)
{
	_cleanup_free_ char *text = NULL;
	size_t cap, len = 0;
	char hex[2 * STORE_HASH_LEN + 1];
	int n;

	if (m->nfiles > MANIFEST_MAX_FILES)
		return err_set(-E2BIG, "manifest: %zu files, at most %u", m->nfiles, MANIFEST_MAX_FILES);
	if (m->nfiles > 0)
		qsort(m->files, m->nfiles, sizeof(*m->files), cmp_entry);
	for (size_t i = 0; i < m->nfiles; i++) {
		int r = path_check(m->files[i].path);
		if (r < 0)
			return r;
		if (reserved(m->files[i].path))
			return err_set(-EINVAL, "manifest: '%s' is reserved", m->files[i].path);
		if (i > 0 && !strcmp(m->files[i - 1].path, m->files[i].path))
			return err_set(-EINVAL, "manifest: '%s' listed twice", m->files[i].path);
		if (m->files[i].size > MANIFEST_MAX_SIZE)
			return err_set(-EFBIG, "manifest: '%s' too large", m->files[i].path);
		const char *parent = file_parent(m, m->files[i].path);
		if (parent)
			return err_set(-EINVAL, "manifest: '%s' is a file and a directory", parent);
	}

	cap = 128 + m->nfiles * (2 * STORE_HASH_LEN + 24);
	for (size_t i = 0; i < m->nfiles; i++)
		cap += strlen(m->files[i].path);
	text = malloc(cap);
	if (!text)
		return -ENOMEM;
	n = snprintf(text, cap, "%s %u\nhash %s\ncreated %" PRId64 "\nfiles %zu\n", STORE_FORMAT_NAME,
		     (unsigned)STORE_FORMAT_VERSION, HASH_NAME, MAX(m->created, (int64_t)0), m->nfiles);
	len = n;
	for (size_t i = 0; i < m->nfiles; i++) {
		store_hash_hex(m->files[i].hash, hex);
		n = snprintf(text + len, cap - len, "%s %" PRIu64 " %s\n", hex, m->files[i].size,
			     m->files[i].path);
		len += n;
	}
	m->version = STORE_FORMAT_VERSION;
	if (ret_len)
		*ret_len = len;
	*ret = TAKE_PTR(text);
	return 0;
}

/* ---- parsing ------------------------------------------------------------- */

struct line {
	const char *p;
	size_t len;
	unsigned no;
};

/* Decimal without sign, leading zeros or spaces. */
static bool parse_dec(const char *p, size_t len, uint64_t max, uint64_t *ret)
{
	uint64_t v = 0;

	if (len == 0 || len > 20 || (len > 1 && p[0] == '0'))
		return false;
	for (size_t i = 0; i < len; i++) {
		if (p[i] < '0' || p[i] > '9')
			return false;
		unsigned d = p[i] - '0';
		if (v > (max - d) / 10)
			return false;
		v = v * 10 + d;
	}
	*ret = v;
	return true;
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1; /* uppercase is rejected: one spelling per hash */
}

static bool parse_hash(const char *p, uint8_t out[STORE_HASH_LEN])
{
	for (size_t i = 0; i < STORE_HASH_LEN; i++) {
		int hi = hexval(p[2 * i]), lo = hexval(p[2 * i + 1]);
		if (hi < 0 || lo < 0)
			return false;
		out[i] = hi << 4 | lo;
	}
	return true;
}

static bool is_file_line(const struct line *l)
{
	if (l->len < 2 * STORE_HASH_LEN + 1 || l->p[2 * STORE_HASH_LEN] != ' ')
		return false;
	for (size_t i = 0; i < 2 * STORE_HASH_LEN; i++)
		if (!((l->p[i] >= '0' && l->p[i] <= '9') || (l->p[i] >= 'a' && l->p[i] <= 'f') ||
		      (l->p[i] >= 'A' && l->p[i] <= 'F')))
			return false;
	return true;
}

static bool key_is(const struct line *l, size_t klen, const char *key)
{
	return strlen(key) == klen && !memcmp(l->p, key, klen);
}

/* A printable copy of (part of) a line for details. */
static const char *show(const char *p, size_t len, char *buf, size_t size)
{
	size_t n = 0;
	for (size_t i = 0; i < len && n + 4 < size; i++)
		buf[n++] = (unsigned char)p[i] >= 0x20 && (unsigned char)p[i] < 0x7f ? p[i] : '?';
	if (len > 0 && n < len && n + 4 <= size) {
		memcpy(buf + n, "...", 3);
		n += 3;
	}
	buf[n] = 0;
	return buf;
}

struct parse {
	struct manifest m;
	size_t cap;
	bool have_hash, have_created, have_files, in_files;
	uint64_t files_declared;
};

static int parse_header(struct parse *ps, const struct line *l)
{
	char shown[96];
	const char *sp = memchr(l->p, ' ', l->len);
	size_t klen, vlen;
	const char *v;
	uint64_t u;

	if (!sp)
		return err_set(-EBADMSG, "manifest line %u: '%s' is neither 'key value' nor a file", l->no,
			       show(l->p, l->len, shown, sizeof(shown)));
	klen = sp - l->p;
	v = sp + 1;
	vlen = l->len - klen - 1;
	if (klen == 0 || klen > 32)
		return err_set(-EBADMSG, "manifest line %u: bad key", l->no);
	for (size_t i = 0; i < klen; i++)
		if (!((l->p[i] >= 'a' && l->p[i] <= 'z') || (i > 0 && l->p[i] == '-')))
			return err_set(-EBADMSG, "manifest line %u: bad key '%s'", l->no,
				       show(l->p, klen, shown, sizeof(shown)));
	for (size_t i = 0; i < vlen; i++)
		if ((unsigned char)v[i] < 0x20 || (unsigned char)v[i] >= 0x7f)
			return err_set(-EBADMSG, "manifest line %u: control or non-ASCII byte in value",
				       l->no);

	if (key_is(l, klen, "hash")) {
		if (ps->have_hash)
			return err_set(-EBADMSG, "manifest line %u: 'hash' given twice", l->no);
		if (vlen != strlen(HASH_NAME) || memcmp(v, HASH_NAME, vlen))
			return err_set(-EBADMSG, "manifest line %u: hash '%s' not supported (only " HASH_NAME ")",
				       l->no, show(v, vlen, shown, sizeof(shown)));
		ps->have_hash = true;
	} else if (key_is(l, klen, "created")) {
		if (ps->have_created)
			return err_set(-EBADMSG, "manifest line %u: 'created' given twice", l->no);
		if (!parse_dec(v, vlen, INT64_MAX, &u))
			return err_set(-EBADMSG, "manifest line %u: bad time '%s'", l->no,
				       show(v, vlen, shown, sizeof(shown)));
		ps->m.created = (int64_t)u;
		ps->have_created = true;
	} else if (key_is(l, klen, "files")) {
		if (ps->have_files)
			return err_set(-EBADMSG, "manifest line %u: 'files' given twice", l->no);
		if (!parse_dec(v, vlen, MANIFEST_MAX_FILES, &u))
			return err_set(-EBADMSG, "manifest line %u: bad file count '%s'", l->no,
				       show(v, vlen, shown, sizeof(shown)));
		ps->files_declared = u;
		ps->have_files = true;
	}
	/* Other keys are information a later writer added without changing
	 * what a reader must do (an incompatible change bumps the version):
	 * skipped. */
	return 0;
}

static int parse_file(struct parse *ps, const struct line *l)
{
	char shown[96];
	const char *p = l->p + 2 * STORE_HASH_LEN + 1, *end = l->p + l->len, *sp;
	struct manifest_entry e = {};
	char *path;
	int r;

	if (!parse_hash(l->p, e.hash))
		return err_set(-EBADMSG, "manifest line %u: hash must be lowercase hex", l->no);
	sp = memchr(p, ' ', end - p);
	if (!sp)
		return err_set(-EBADMSG, "manifest line %u: expected '<hash> <size> <path>'", l->no);
	if (!parse_dec(p, sp - p, MANIFEST_MAX_SIZE, &e.size))
		return err_set(-EBADMSG, "manifest line %u: bad size '%s' (decimal, at most 2^50)", l->no,
			       show(p, sp - p, shown, sizeof(shown)));
	p = sp + 1;
	if (memchr(p, 0, end - p))
		return err_set(-EBADMSG, "manifest line %u: NUL byte in path", l->no);
	path = strndup(p, end - p);
	if (!path)
		return -ENOMEM;
	r = path_check(path);
	if (r < 0) {
		char why[256];
		snprintf(why, sizeof(why), "%s", err_msg());
		free(path);
		return err_set(-EBADMSG, "manifest line %u: %s", l->no, why);
	}
	if (reserved(path)) {
		err_set(-EBADMSG, "manifest line %u: '%s' is reserved", l->no, path);
		free(path);
		return -EBADMSG;
	}
	if (ps->m.nfiles > 0) {
		int c = strcmp(ps->m.files[ps->m.nfiles - 1].path, path);
		if (c >= 0) {
			err_set(-EBADMSG, "manifest line %u: '%s' %s", l->no, path,
				c == 0 ? "listed twice" : "out of order (files are sorted by path)");
			free(path);
			return -EBADMSG;
		}
	}
	if (ps->m.nfiles >= MANIFEST_MAX_FILES || (ps->have_files && ps->m.nfiles >= ps->files_declared)) {
		free(path);
		return err_set(-EBADMSG, "manifest line %u: more files than the header's 'files %" PRIu64 "'",
			       l->no, ps->files_declared);
	}
	if (ps->m.nfiles == ps->cap) {
		size_t cap = ps->cap ? ps->cap * 2 : 16;
		struct manifest_entry *f = realloc(ps->m.files, cap * sizeof(*f));
		if (!f) {
			free(path);
			return -ENOMEM;
		}
		ps->m.files = f;
		ps->cap = cap;
	}
	e.path = path;
	ps->m.files[ps->m.nfiles++] = e;
	return 0;
}

int manifest_parse(const char *text, size_t len, struct manifest *ret)
{
	struct parse ps = {};
	char shown[96];
	size_t pos = 0;
	unsigned no = 0;
	int r;

	if (len == 0)
		return err_set(-EBADMSG, "manifest is empty");
	while (pos < len) {
		const char *nl = memchr(text + pos, '\n', len - pos);
		struct line l = { text + pos, 0, ++no };

		if (!nl) {
			r = err_set(-EBADMSG, "manifest line %u: no final newline (truncated?)", no);
			goto fail;
		}
		l.len = nl - l.p;
		pos += l.len + 1;
		if (l.len > MANIFEST_MAX_LINE) {
			r = err_set(-EBADMSG, "manifest line %u: longer than %u bytes", no, MANIFEST_MAX_LINE);
			goto fail;
		}
		if (l.len > 0 && l.p[l.len - 1] == '\r') {
			r = err_set(-EBADMSG, "manifest line %u: carriage return (lines end with \\n only)", no);
			goto fail;
		}

		if (no == 1) {
			size_t nlen = strlen(STORE_FORMAT_NAME);
			uint64_t v;
			if (l.len <= nlen + 1 || memcmp(l.p, STORE_FORMAT_NAME " ", nlen + 1)) {
				r = err_set(-EBADMSG, "manifest line 1: '%s' is not '" STORE_FORMAT_NAME " <version>'",
					    show(l.p, l.len, shown, sizeof(shown)));
				goto fail;
			}
			if (!parse_dec(l.p + nlen + 1, l.len - nlen - 1, UINT32_MAX, &v)) {
				r = err_set(-EBADMSG, "manifest line 1: bad format version '%s'",
					    show(l.p + nlen + 1, l.len - nlen - 1, shown, sizeof(shown)));
				goto fail;
			}
			if (v < STORE_FORMAT_VERSION_MIN || v > STORE_FORMAT_VERSION) {
				r = err_set(-EBADMSG,
					    "manifest line 1: format version %" PRIu64 " not supported (this reads versions %u to %u)",
					    v, (unsigned)STORE_FORMAT_VERSION_MIN, (unsigned)STORE_FORMAT_VERSION);
				goto fail;
			}
			ps.m.version = v;
			continue;
		}
		if (l.len == 0) {
			r = err_set(-EBADMSG, "manifest line %u: empty line", no);
			goto fail;
		}
		if (is_file_line(&l)) {
			if (!ps.in_files) {
				/* Header done: what a reader needs must be there. */
				if (!ps.have_hash || !ps.have_files) {
					r = err_set(-EBADMSG, "manifest line %u: header lacks '%s'", no,
						    !ps.have_hash ? "hash" : "files");
					goto fail;
				}
				ps.in_files = true;
			}
			r = parse_file(&ps, &l);
		} else if (ps.in_files) {
			r = err_set(-EBADMSG, "manifest line %u: '%s' is not '<hash> <size> <path>'", no,
				    show(l.p, l.len, shown, sizeof(shown)));
		} else {
			r = parse_header(&ps, &l);
		}
		if (r < 0)
			goto fail;
	}
	if (!ps.have_hash || !ps.have_files) {
		r = err_set(-EBADMSG, "manifest: header lacks '%s'", !ps.have_hash ? "hash" : "files");
		goto fail;
	}
	if (ps.m.nfiles != ps.files_declared) {
		r = err_set(-EBADMSG, "manifest: %zu files listed, header says %" PRIu64 " (truncated?)",
			    ps.m.nfiles, ps.files_declared);
		goto fail;
	}
	for (size_t i = 0; i < ps.m.nfiles; i++) {
		const char *parent = file_parent(&ps.m, ps.m.files[i].path);
		if (parent) {
			r = err_set(-EBADMSG, "manifest: '%s' is a file and the directory of '%s'", parent,
				    ps.m.files[i].path);
			goto fail;
		}
	}
	*ret = ps.m;
	return 0;
fail:
	manifest_clear(&ps.m);
	return r;
}
