/*
 * SysV IPC objects of a tree: what identifies them (id, key, mode, owner,
 * size), read at the dump from /proc/sysvipc, written as the snapshot's
 * `ipc` file (docs/FORMAT.md), and at the restore found again or made
 * again with the same id.
 *
 * SysV objects live in the IPC namespace, not in a process: an object the
 * tree uses may still be there at the restore (the same host, the tree
 * killed and restored), shared with whoever else uses it; then it is
 * taken as it is. Where it is gone (another host, removed meanwhile) it is
 * made again with its id: the kernel takes the id of the next object from
 * /proc/sys/kernel/{shm,sem,msg}_next_id (CONFIG_CHECKPOINT_RESTORE) and
 * resets it once used. What must stay true: an id or key another object
 * holds is never taken over or touched; such a restore is refused naming
 * the holder, before any process exists.
 */
#include <sys/file.h>
#include <sys/ipc.h>
#include <sys/shm.h>

#include "engine/engine-int.h"

void ipc_image_free(struct ipc_image *img)
{
	free(img->shm);
	img->shm = NULL;
	img->nshm = 0;
}

/* Row id of /proc/sysvipc/shm: key shmid perms size cpid lpid nattch uid
 * gid ... (perms in octal, the rest decimal). */
static int shm_row(const char *table, int64_t id, struct ipc_shm *s)
{
	const char *l = strchr(table, '\n');
	while (l && *++l) {
		int key, shmid, cpid, lpid;
		unsigned mode, uid, gid;
		unsigned long long size, nattch;
		if (sscanf(l, "%d %d %o %llu %d %d %llu %u %u", &key, &shmid, &mode, &size, &cpid, &lpid, &nattch,
			   &uid, &gid) == 9 &&
		    shmid == id) {
			*s = (struct ipc_shm){ .id = shmid, .key = key, .mode = mode, .uid = uid, .gid = gid,
					       .size = size };
			return 0;
		}
		l = strchr(l, '\n');
	}
	return -ESRCH;
}

int ipc_capture(const struct shm_table *t, struct ipc_image *img)
{
	_cleanup_free_ char *table = NULL;
	bool any = false;
	for (size_t i = 0; i < t->n; i++)
		any |= t->v[i].sysv >= 0;
	if (!any)
		return 0;
	int r = read_file_full("/proc/sysvipc/shm", &table, NULL);
	if (r < 0)
		return err_set(r, "cannot read /proc/sysvipc/shm: %s", strerror(-r));
	for (size_t i = 0; i < t->n; i++) {
		struct ipc_shm s;
		if (t->v[i].sysv < 0)
			continue;
		if (shm_row(table, t->v[i].sysv, &s) < 0)
			return err_set(-ESRCH, "SysV shared memory id %" PRId64 " is mapped, but not in /proc/sysvipc/shm",
				       t->v[i].sysv);
		s.obj = (uint32_t)i;
		struct ipc_shm *nv = realloc(img->shm, (img->nshm + 1) * sizeof(*nv));
		if (!nv)
			return -ENOMEM;
		img->shm = nv;
		nv[img->nshm++] = s;
	}
	return 0;
}

char *ipc_format(const struct ipc_image *img)
{
	struct tbuf b = { 0 };
	for (size_t i = 0; i < img->nshm; i++) {
		const struct ipc_shm *s = &img->shm[i];
		tb_printf(&b, "shm obj=%" PRIu32 " id=%" PRId32 " key=0x%08" PRIx32 " mode=0%04o uid=%" PRIu32
			      " gid=%" PRIu32 " size=%" PRIu64 "\n",
			  s->obj, s->id, (uint32_t)s->key, s->mode, s->uid, s->gid, s->size);
	}
	return tb_take(&b);
}

int ipc_parse(const char *text, struct ipc_image *img)
{
	unsigned lineno = 0;
	for (const char *l = text; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
		struct ipc_shm s;
		unsigned key, mode;
		unsigned long long size;
		int k = 0;
		lineno++;
		if (*l == '\n')
			continue;
		if (sscanf(l, "shm obj=%" SCNu32 " id=%" SCNd32 " key=%x mode=%o uid=%" SCNu32 " gid=%" SCNu32
			      " size=%llu%n",
			   &s.obj, &s.id, &key, &mode, &s.uid, &s.gid, &size, &k) != 7 ||
		    (l[k] != '\n' && l[k] != 0 && l[k] != ' ') || s.id < 0 || s.obj >= ENGINE_MAX_SHM ||
		    mode > 07777 || !size)
			return err_set(-EBADMSG, "ipc line %u: not 'shm obj= id= key= mode= uid= gid= size='", lineno);
		s.key = (int32_t)key;
		s.mode = mode;
		s.size = size;
		for (size_t i = 0; i < img->nshm; i++)
			if (img->shm[i].obj == s.obj || img->shm[i].id == s.id)
				return err_set(-EBADMSG, "ipc line %u: shared memory object %u or id %d twice", lineno,
					       s.obj, s.id);
		struct ipc_shm *nv = realloc(img->shm, (img->nshm + 1) * sizeof(*nv));
		if (!nv)
			return -ENOMEM;
		img->shm = nv;
		nv[img->nshm++] = s;
	}
	return 0;
}

/* Makes an object with the id `want` through /proc/sys/kernel/NAME, which
 * the next get of that kind takes: make() is that get, returning the id
 * or -errno. One restore at a time (flock on the file: the daemon's
 * threads and every ckpt); another program's get in between would take
 * the id itself, and ours then gets another one: removed by drop(), and
 * refused. */
static int make_with_id(const char *name, int want, int (*make)(void *ud), void (*drop)(int id), void *ud)
{
	char path[64], num[16];
	snprintf(path, sizeof(path), "/proc/sys/kernel/%s", name);
	_cleanup_close_ int fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0)
		return err_set(negerrno(), "cannot open %s (a kernel without CONFIG_CHECKPOINT_RESTORE?): %m", path);
	if (flock(fd, LOCK_EX) < 0)
		return err_set(negerrno(), "flock %s: %m", path);
	int n = snprintf(num, sizeof(num), "%d", want);
	if (pwrite(fd, num, n, 0) != n)
		return err_set(negerrno(), "cannot write %d into %s: %m", want, path);
	int id = make(ud);
	/* a get that failed early leaves it set, for anyone's next one */
	if (pwrite(fd, "-1", 2, 0) != 2)
		log_debug("cannot reset %s: %m", path);
	if (id < 0)
		return err_set(id, "%s", strerror(-id));
	if (id != want) {
		drop(id);
		return err_set(-EEXIST, "id %d: the kernel gave id %d instead (%s: its slot is taken)", want, id, name);
	}
	return id;
}

static int shm_make_one(void *ud)
{
	const struct ipc_shm *s = ud;
	int id = shmget(s->key, s->size, IPC_CREAT | IPC_EXCL | (s->mode & 0777));
	return id < 0 ? negerrno() : id;
}

static void shm_drop(int id)
{
	shmctl(id, IPC_RMID, NULL);
}

int ipc_shm_get(const struct ipc_shm *s, bool *made)
{
	struct shmid_ds ds;
	*made = false;
	if (shmctl(s->id, IPC_STAT, &ds) >= 0) {
		if (ds.shm_perm.__key == s->key && ds.shm_segsz == s->size)
			return 0; /* still there: the host's, as it is */
		return err_set(-EEXIST,
			       "SysV shared memory id %d is held by another segment (key 0x%08x, %zu bytes), not the "
			       "snapshot's (key 0x%08x, %" PRIu64 " bytes)",
			       s->id, (unsigned)ds.shm_perm.__key, (size_t)ds.shm_segsz, (unsigned)s->key, s->size);
	}
	if (errno != EINVAL && errno != EIDRM)
		return err_set(negerrno(), "SysV shared memory id %d: shmctl: %m", s->id);
	int other = s->key != IPC_PRIVATE ? shmget(s->key, 0, 0) : -1;
	if (other >= 0)
		return err_set(-EEXIST, "SysV shared memory key 0x%08x is held by segment id %d, not the snapshot's id %d",
			       (unsigned)s->key, other, s->id);
	int id = make_with_id("shm_next_id", s->id, shm_make_one, shm_drop, (void *)s);
	if (id < 0) {
		char why[256];
		snprintf(why, sizeof(why), "%s", err_msg());
		return err_set(id, "SysV shared memory id %d (key 0x%08x, %" PRIu64 " bytes): %s", s->id,
			       (unsigned)s->key, s->size, why);
	}
	/* the snapshot's owner and mode (its creator is the restorer) */
	if (shmctl(id, IPC_STAT, &ds) < 0)
		goto fail;
	ds.shm_perm.uid = s->uid;
	ds.shm_perm.gid = s->gid;
	ds.shm_perm.mode = s->mode & 0777;
	if (shmctl(id, IPC_SET, &ds) < 0)
		goto fail;
	*made = true;
	return 0;
fail:;
	int r = err_set(negerrno(), "SysV shared memory id %d: setting its owner %u:%u: %m", id, s->uid, s->gid);
	shmctl(id, IPC_RMID, NULL);
	return r;
}

void ipc_shm_remove(const struct ipc_shm *s)
{
	if (shmctl(s->id, IPC_RMID, NULL) < 0)
		log_debug("SysV shared memory id %d: IPC_RMID: %m", s->id);
}
