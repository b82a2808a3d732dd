/*
 * engine/fds/fds-store.c: the descriptor table in a snapshot: `fds` and the
 * data files it names (fds-data/<fd>), through store/'s interface. Apart
 * from fds.c so that the descriptor code links without a store backend.
 */
#include "engine/fds/fds-int.h"

int fds_write(struct fd_image *img, struct store_snap *w)
{
	_cleanup_free_ char *text = NULL;
	size_t len;
	int r;

	r = fds_format(img, &text, &len);
	if (r < 0)
		return err_set(r, "fds: cannot format the descriptor table");
	for (size_t i = 0; i < img->n; i++) {
		struct fd_entry *e = &img->e[i];
		char path[64];
		if (!e->data_len)
			continue;
		snprintf(path, sizeof(path), "fds-data/%d", e->fd);
		r = store_snap_put(w, path, e->data, e->data_len);
		if (r < 0)
			return r;
	}
	return store_snap_put(w, "fds", text, len);
}

static int get_data(const char *path, void **buf, uint64_t *len, void *ud)
{
	struct store_snap *r = ud;
	struct store_file *f = NULL;
	struct store_stat st;
	_cleanup_free_ char *b = NULL;
	ssize_t n;
	int ret;

	ret = store_file_open(r, path, &f);
	if (ret < 0)
		return ret;
	ret = store_file_stat(f, &st);
	if (ret < 0)
		goto out;
	if (st.size > (1ull << 30)) {
		ret = err_set(-EFBIG, "%s: %lu bytes, too large", path, st.size);
		goto out;
	}
	b = malloc(st.size ? st.size : 1);
	if (!b) {
		ret = -ENOMEM;
		goto out;
	}
	n = store_file_pread(f, b, st.size, 0);
	if (n < 0) {
		ret = (int)n;
		goto out;
	}
	if ((uint64_t)n != st.size) {
		ret = err_set(-EIO, "%s: short read", path);
		goto out;
	}
	*buf = TAKE_PTR(b);
	*len = st.size;
out:
	store_file_close(f);
	return ret;
}

/* Every data file must belong to a line: a stray one means the image was
 * put together wrongly. */
static int check_stray(const char *path, const struct store_stat *st, void *ud)
{
	struct fd_image *img = ud;
	uint64_t fd;

	if (strncmp(path, "fds-data/", 9) != 0)
		return 0;
	if (parse_u64(path + 9, &fd) < 0 || fd > INT32_MAX)
		return err_set(-EBADMSG, "fds: %s: not a data file name", path);
	struct fd_entry *e = fds_find(img, (int)fd);
	if (!e || !e->data_len)
		return err_set(-EBADMSG, "fds: %s: no descriptor line names it", path);
	return 0;
}

int fds_load(struct store_snap *r, bool accept_changed, struct fd_image **ret)
{
	_cleanup_free_ char *text = NULL;
	struct fd_image *img = NULL;
	size_t len;
	int rr;

	rr = store_snap_read_all(r, "fds", &text, &len);
	if (rr < 0)
		return fds_err_prefix(rr, "fds: cannot read the descriptor table");
	if (strlen(text) != len)
		return err_set(-EBADMSG, "fds: holds a NUL byte");
	rr = fds_parse(text, get_data, r, &img);
	if (rr < 0)
		return rr;
	rr = store_snap_foreach_file(r, check_stray, img);
	if (rr < 0) {
		fds_free(img);
		return rr;
	}
	/* Host checks now, in the restorer, where the outcome can be
	 * reported. */
	rr = fds_host_check(img, accept_changed);
	if (rr < 0) {
		fds_free(img);
		return rr;
	}
	*ret = img;
	return 0;
}
