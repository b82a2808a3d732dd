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
#include <sys/msg.h>
#include <sys/sem.h>
#include <sys/shm.h>

#include "engine/engine-int.h"

#ifndef MSG_COPY
#define MSG_COPY 040000
#endif

/* What msgsnd and msgrcv take: a message's type and bytes. */
struct msg_buf {
	long type;
	char text[];
};

/* semctl's fourth argument, which the caller defines */
union semun_ {
	int val;
	struct semid_ds *buf;
	unsigned short *array;
};

void ipc_image_free(struct ipc_image *img)
{
	for (size_t i = 0; i < img->nsem; i++)
		free(img->sem[i].val);
	for (size_t i = 0; i < img->nmsq; i++) {
		for (size_t k = 0; k < img->msq[i].n; k++)
			free(img->msq[i].m[k].data);
		free(img->msq[i].m);
	}
	free(img->shm);
	free(img->sem);
	free(img->msq);
	*img = (struct ipc_image){ 0 };
}

/* Appends a zeroed element of size sz to *v (n elements); NULL on ENOMEM. */
static void *grow(void *v, size_t *n, size_t sz, void **ret)
{
	char *nv = realloc(*(void **)v, (*n + 1) * sz);
	if (!nv)
		return NULL;
	*(void **)v = nv;
	memset(nv + *n * sz, 0, sz);
	*ret = nv + (*n)++ * sz;
	return *ret;
}

/* ---- dump ------------------------------------------------------------------ */

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

static int shm_capture(const struct shm_table *t, struct ipc_image *img)
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
		struct ipc_shm *s;
		if (t->v[i].sysv < 0)
			continue;
		if (!grow(&img->shm, &img->nshm, sizeof(*s), (void **)&s))
			return -ENOMEM;
		if (shm_row(table, t->v[i].sysv, s) < 0)
			return err_set(-ESRCH, "SysV shared memory id %" PRId64 " is mapped, but not in /proc/sysvipc/shm",
				       t->v[i].sysv);
		s->obj = (uint32_t)i;
	}
	return 0;
}

static bool in_tree(pid_t pid, const pid_t *pids, size_t n)
{
	for (size_t i = 0; pid > 0 && i < n; i++)
		if (pids[i] == pid)
			return true;
	return false;
}

/* Each row of /proc/sysvipc/NAME after the header, to fn. */
static int each_row(const char *name, int (*fn)(const char *row, const pid_t *pids, size_t n, struct ipc_image *img),
		    const pid_t *pids, size_t n, struct ipc_image *img)
{
	_cleanup_free_ char *table = NULL;
	char path[64];
	snprintf(path, sizeof(path), "/proc/sysvipc/%s", name);
	int r = read_file_full(path, &table, NULL);
	if (r < 0)
		return err_set(r, "cannot read %s: %s", path, strerror(-r));
	for (const char *l = strchr(table, '\n'); l && l[1] && r >= 0; l = strchr(l + 1, '\n'))
		r = fn(l + 1, pids, n, img);
	return r;
}

/* A row of /proc/sysvipc/sem: key semid perms nsems uid gid ... A set
 * belongs to the tree when one of its semaphores was last operated on by
 * a process of it (GETPID). A set removed meanwhile is skipped. */
static int sem_row(const char *l, const pid_t *pids, size_t n, struct ipc_image *img)
{
	int key, id;
	unsigned mode, uid, gid;
	unsigned long nsems;
	bool ours = false;
	if (sscanf(l, "%d %d %o %lu %u %u", &key, &id, &mode, &nsems, &uid, &gid) != 6 || !nsems || nsems > 65536)
		return 0;
	for (unsigned long k = 0; k < nsems && !ours; k++)
		ours = in_tree(semctl(id, (int)k, GETPID), pids, n);
	if (!ours)
		return 0;
	struct ipc_sem *s;
	if (!grow(&img->sem, &img->nsem, sizeof(*s), (void **)&s))
		return -ENOMEM;
	s->o = (struct ipc_obj){ .id = id, .key = key, .mode = mode & 0777, .uid = uid, .gid = gid };
	s->val = calloc(nsems, sizeof(*s->val));
	if (!s->val)
		return -ENOMEM;
	s->nsems = nsems;
	union semun_ arg = { .array = s->val };
	if (semctl(id, 0, GETALL, arg) < 0) {
		if (errno != EINVAL && errno != EIDRM)
			return err_set(negerrno(), "SysV semaphore set %d: GETALL: %m", id);
		free(s->val); /* removed meanwhile: nobody's any more */
		img->nsem--;
	}
	return 0;
}

/* A row of /proc/sysvipc/msg: key msqid perms cbytes qnum lspid lrpid uid
 * gid ... A queue belongs to the tree when its last send or receive was
 * by a process of it. Its messages are copied, not taken (MSG_COPY). */
static int msg_row(const char *l, const pid_t *pids, size_t n, struct ipc_image *img)
{
	int key, id, lspid, lrpid;
	unsigned mode, uid, gid;
	unsigned long long cbytes, qnum;
	struct msqid_ds ds;
	if (sscanf(l, "%d %d %o %llu %llu %d %d %u %u", &key, &id, &mode, &cbytes, &qnum, &lspid, &lrpid, &uid,
		   &gid) != 9 ||
	    (!in_tree(lspid, pids, n) && !in_tree(lrpid, pids, n)))
		return 0;
	if (msgctl(id, IPC_STAT, &ds) < 0)
		return errno == EINVAL || errno == EIDRM ? 0 /* removed meanwhile */
							 : err_set(negerrno(), "SysV message queue %d: IPC_STAT: %m", id);
	struct ipc_msq *q;
	if (!grow(&img->msq, &img->nmsq, sizeof(*q), (void **)&q))
		return -ENOMEM;
	q->o = (struct ipc_obj){ .id = id, .key = key, .mode = mode & 0777, .uid = uid, .gid = gid };
	q->qbytes = ds.msg_qbytes;
	/* a message is at most the queue's bytes */
	size_t max = MAX(ds.__msg_cbytes, 1);
	_cleanup_free_ struct msg_buf *buf = malloc(sizeof(*buf) + max);
	if (!buf)
		return -ENOMEM;
	for (size_t k = 0; k < ds.msg_qnum; k++) {
		ssize_t len = msgrcv(id, buf, max, (long)k, IPC_NOWAIT | MSG_COPY | MSG_NOERROR);
		if (len < 0 && errno == ENOSYS)
			return err_set(-EOPNOTSUPP, "SysV message queue %d: its messages cannot be read without "
				       "taking them (msgrcv MSG_COPY needs CONFIG_CHECKPOINT_RESTORE)", id);
		if (len < 0)
			return err_set(negerrno(), "SysV message queue %d: copying message %zu: %m", id, k);
		struct ipc_message *m;
		if (!grow(&q->m, &q->n, sizeof(*m), (void **)&m))
			return -ENOMEM;
		m->type = buf->type;
		m->len = (size_t)len;
		m->data = malloc(MAX(len, 1));
		if (!m->data)
			return -ENOMEM;
		memcpy(m->data, buf->text, len);
	}
	return 0;
}

int ipc_capture(const struct shm_table *t, const pid_t *pids, size_t n, struct ipc_image *img)
{
	int r = shm_capture(t, img);
	if (r >= 0)
		r = each_row("sem", sem_row, pids, n, img);
	if (r >= 0)
		r = each_row("msg", msg_row, pids, n, img);
	return r;
}

/* ---- the file ---------------------------------------------------------------- */

static void obj_format(struct tbuf *b, const char *kind, const struct ipc_obj *o)
{
	tb_printf(b, "%s id=%" PRId32 " key=0x%08" PRIx32 " mode=0%04o uid=%" PRIu32 " gid=%" PRIu32, kind, o->id,
		  (uint32_t)o->key, o->mode, o->uid, o->gid);
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
	for (size_t i = 0; i < img->nsem; i++) {
		const struct ipc_sem *s = &img->sem[i];
		obj_format(&b, "sem", &s->o);
		for (size_t k = 0; k < s->nsems; k++)
			tb_printf(&b, "%s%u", k ? "," : " values=", s->val[k]);
		tb_printf(&b, "\n");
	}
	for (size_t i = 0; i < img->nmsq; i++) {
		const struct ipc_msq *q = &img->msq[i];
		obj_format(&b, "msg", &q->o);
		tb_printf(&b, " qbytes=%" PRIu64, q->qbytes);
		for (size_t k = 0; k < q->n; k++) {
			tb_printf(&b, " m=%" PRId64 ":", q->m[k].type);
			tb_hex(&b, q->m[k].data, q->m[k].len);
		}
		tb_printf(&b, "\n");
	}
	return tb_take(&b);
}

/* One key=value word of a sem or msg line into q (NULL for sem) or s. */
static int parse_word(const char *k, const char *v, struct ipc_obj *o, struct ipc_sem *s, struct ipc_msq *q,
		      unsigned *seen)
{
	uint64_t x;
	static const char *const common[] = { "id", "key", "mode", "uid", "gid" };
	for (unsigned i = 0; i < ARRAY_SIZE(common); i++) {
		if (strcmp(k, common[i]))
			continue;
		char *end;
		errno = 0;
		x = strtoull(v, &end, i == 1 ? 16 : i == 2 ? 8 : 10);
		if (errno || *end || !*v || x > (i == 1 ? UINT32_MAX : i == 2 ? 0777 : INT32_MAX))
			return -EINVAL;
		if (i == 0)
			o->id = (int32_t)x;
		else if (i == 1)
			o->key = (int32_t)(uint32_t)x;
		else if (i == 2)
			o->mode = (uint32_t)x;
		else if (i == 3)
			o->uid = (uint32_t)x;
		else
			o->gid = (uint32_t)x;
		*seen |= 1u << i;
		return 0;
	}
	if (s && !strcmp(k, "values")) {
		for (const char *p = v; *p; p += strcspn(p, ",") + (p[strcspn(p, ",")] == ',')) {
			uint16_t *nv;
			char *end;
			x = strtoul(p, &end, 10);
			if (end == p || (*end && *end != ',') || x > 32767 || s->nsems >= 65536)
				return -EINVAL;
			nv = realloc(s->val, (s->nsems + 1) * sizeof(*nv));
			if (!nv)
				return -ENOMEM;
			s->val = nv;
			s->val[s->nsems++] = (uint16_t)x;
		}
		*seen |= 1u << 5;
		return s->nsems ? 0 : -EINVAL;
	}
	if (q && !strcmp(k, "qbytes")) {
		*seen |= 1u << 5;
		return parse_u64(v, &q->qbytes);
	}
	if (q && !strcmp(k, "m")) {
		struct ipc_message *m;
		char *end;
		long long type = strtoll(v, &end, 10);
		if (end == v || *end != ':' || type <= 0)
			return -EINVAL;
		if (!grow(&q->m, &q->n, sizeof(*m), (void **)&m))
			return -ENOMEM;
		m->type = type;
		m->data = malloc(strlen(end + 1) / 2 + 1);
		if (!m->data)
			return -ENOMEM;
		return unhex(end + 1, m->data, strlen(end + 1) / 2, &m->len);
	}
	return 0; /* a newer key */
}

/* A sem or msg line (l is modified). */
static int parse_obj(char *l, struct ipc_image *img, unsigned lineno)
{
	struct ipc_sem *s = NULL;
	struct ipc_msq *q = NULL;
	struct ipc_obj *o;
	unsigned seen = 0;
	char *save = NULL, *w = strtok_r(l, " ", &save);
	if (!strcmp(w, "sem") && grow(&img->sem, &img->nsem, sizeof(*s), (void **)&s))
		o = &s->o;
	else if (!strcmp(w, "msg") && grow(&img->msq, &img->nmsq, sizeof(*q), (void **)&q))
		o = &q->o;
	else
		return -ENOMEM;
	while ((w = strtok_r(NULL, " ", &save))) {
		char *eq = strchr(w, '=');
		if (!eq)
			return err_set(-EBADMSG, "ipc line %u: '%.40s' is not key=value", lineno, w);
		*eq = 0;
		int r = parse_word(w, eq + 1, o, s, q, &seen);
		if (r < 0)
			return r == -ENOMEM ? r : err_set(-EBADMSG, "ipc line %u: bad %s=", lineno, w);
	}
	if (seen != 0x3f)
		return err_set(-EBADMSG, "ipc line %u: needs id= key= mode= uid= gid= and %s", lineno,
			       s ? "values=" : "qbytes=");
	return 0;
}

static int parse_shm(const char *l, struct ipc_image *img, unsigned lineno)
{
	struct ipc_shm s;
	unsigned key, mode;
	unsigned long long size;
	int k = 0;
	if (sscanf(l, "shm obj=%" SCNu32 " id=%" SCNd32 " key=%x mode=%o uid=%" SCNu32 " gid=%" SCNu32 " size=%llu%n",
		   &s.obj, &s.id, &key, &mode, &s.uid, &s.gid, &size, &k) != 7 ||
	    (l[k] != 0 && l[k] != ' ') || s.id < 0 || s.obj >= ENGINE_MAX_SHM || mode > 07777 || !size)
		return err_set(-EBADMSG, "ipc line %u: not 'shm obj= id= key= mode= uid= gid= size='", lineno);
	s.key = (int32_t)key;
	s.mode = mode;
	s.size = size;
	for (size_t i = 0; i < img->nshm; i++)
		if (img->shm[i].obj == s.obj || img->shm[i].id == s.id)
			return err_set(-EBADMSG, "ipc line %u: shared memory object %u or id %d twice", lineno, s.obj,
				       s.id);
	struct ipc_shm *nv;
	if (!grow(&img->shm, &img->nshm, sizeof(*nv), (void **)&nv))
		return -ENOMEM;
	*nv = s;
	return 0;
}

int ipc_parse(const char *text, struct ipc_image *img)
{
	_cleanup_free_ char *copy = strdup(text);
	unsigned lineno = 0;
	int r = 0;
	if (!copy)
		return -ENOMEM;
	for (char *l = copy, *nl; l && *l && r >= 0; l = nl) {
		nl = strchr(l, '\n');
		if (nl)
			*nl++ = 0;
		lineno++;
		if (!strncmp(l, "shm ", 4))
			r = parse_shm(l, img, lineno);
		else if (!strncmp(l, "sem ", 4) || !strncmp(l, "msg ", 4))
			r = parse_obj(l, img, lineno);
		else if (*l)
			r = err_set(-EBADMSG, "ipc line %u: unknown kind '%.10s'", lineno, l);
	}
	/* an id twice within a kind cannot be made twice */
	for (size_t i = 0; i < img->nsem && r >= 0; i++)
		for (size_t j = i + 1; j < img->nsem && r >= 0; j++)
			if (img->sem[i].o.id == img->sem[j].o.id)
				r = err_set(-EBADMSG, "ipc: semaphore set %d twice", img->sem[i].o.id);
	for (size_t i = 0; i < img->nmsq && r >= 0; i++)
		for (size_t j = i + 1; j < img->nmsq && r >= 0; j++)
			if (img->msq[i].o.id == img->msq[j].o.id)
				r = err_set(-EBADMSG, "ipc: message queue %d twice", img->msq[i].o.id);
	return r;
}

/* ---- restore ----------------------------------------------------------------- */

/* Nobody gains power: a restore for a user makes only objects of its own. */
static int owner_check(const struct engine_restore_opts *o, const char *what, int id, uint32_t uid, uint32_t gid)
{
	if (o && o->set_creds && o->uid != 0 && (uid != o->uid || gid != o->gid))
		return err_set(-EPERM, "%s %d belongs to %u:%u: a restore for uid %u cannot make it", what, id, uid, gid,
			       (unsigned)o->uid);
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

int ipc_shm_get(const struct ipc_shm *s, const struct engine_restore_opts *o, bool *made)
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
	int q = owner_check(o, "SysV shared memory id", s->id, s->uid, s->gid);
	if (q < 0)
		return q;
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

/* What a semaphore set and a message queue are made and found with. */
struct kind {
	const char *what;    /* for messages: "SysV semaphore set" */
	const char *next_id; /* in /proc/sys/kernel */
	/* IPC_STAT of id into perm and, for a set, its number of semaphores */
	int (*stat)(int id, struct ipc_perm *perm, size_t *count);
	int (*by_key)(key_t key); /* the id of the object with key, or -1 */
	int (*make)(void *ud);    /* for make_with_id() */
	void (*drop)(int id);
	/* gives the new object id the owner and mode of o, and fills it */
	int (*fill)(int id, const struct ipc_obj *o, void *ud);
};

/* Object o (count semaphores; 0 for a queue), described by ud for the
 * kind's callbacks: the host's, or made. */
static int obj_get(const struct kind *k, struct ipc_obj *o, size_t count, void *ud, const struct engine_restore_opts *opts)
{
	struct ipc_perm perm;
	size_t have = 0;
	o->made = false;
	int r = k->stat(o->id, &perm, &have);
	if (r >= 0) {
		if (perm.__key == o->key && have == count)
			return 0; /* still there: the host's, as it is */
		return err_set(-EEXIST, "%s id %d is held by another one (key 0x%08x), not the snapshot's (key 0x%08x)",
			       k->what, o->id, (unsigned)perm.__key, (unsigned)o->key);
	}
	if (r != -EINVAL && r != -EIDRM)
		return err_set(r, "%s id %d: IPC_STAT: %s", k->what, o->id, strerror(-r));
	int other = o->key != IPC_PRIVATE ? k->by_key(o->key) : -1;
	if (other >= 0)
		return err_set(-EEXIST, "%s key 0x%08x is held by id %d, not the snapshot's id %d", k->what,
			       (unsigned)o->key, other, o->id);
	r = owner_check(opts, k->what, o->id, o->uid, o->gid);
	if (r < 0)
		return r;
	int id = make_with_id(k->next_id, o->id, k->make, k->drop, ud);
	if (id < 0) {
		char why[256];
		snprintf(why, sizeof(why), "%s", err_msg());
		return err_set(id, "%s id %d (key 0x%08x): %s", k->what, o->id, (unsigned)o->key, why);
	}
	r = k->fill(id, o, ud);
	if (r < 0) {
		k->drop(id);
		return r;
	}
	o->made = true;
	return 0;
}

static int sem_stat(int id, struct ipc_perm *perm, size_t *count)
{
	struct semid_ds ds;
	union semun_ arg = { .buf = &ds };
	if (semctl(id, 0, IPC_STAT, arg) < 0)
		return negerrno();
	*perm = ds.sem_perm;
	*count = ds.sem_nsems;
	return 0;
}

static int sem_by_key(key_t key)
{
	return semget(key, 0, 0);
}

static int sem_make(void *ud)
{
	const struct ipc_sem *s = ud;
	int id = semget(s->o.key, (int)s->nsems, IPC_CREAT | IPC_EXCL | (s->o.mode & 0777));
	return id < 0 ? negerrno() : id;
}

static void sem_drop(int id)
{
	semctl(id, 0, IPC_RMID);
}

static int sem_fill(int id, const struct ipc_obj *o, void *ud)
{
	const struct ipc_sem *s = ud;
	struct semid_ds ds;
	union semun_ arg = { .buf = &ds };
	if (semctl(id, 0, IPC_STAT, arg) < 0)
		return err_set(negerrno(), "SysV semaphore set %d: IPC_STAT: %m", id);
	ds.sem_perm.uid = o->uid;
	ds.sem_perm.gid = o->gid;
	ds.sem_perm.mode = o->mode;
	if (semctl(id, 0, IPC_SET, arg) < 0)
		return err_set(negerrno(), "SysV semaphore set %d: setting its owner %u:%u: %m", id, o->uid, o->gid);
	arg.array = s->val;
	if (semctl(id, 0, SETALL, arg) < 0)
		return err_set(negerrno(), "SysV semaphore set %d: SETALL: %m", id);
	return 0;
}

static int msg_stat(int id, struct ipc_perm *perm, size_t *count)
{
	struct msqid_ds ds;
	if (msgctl(id, IPC_STAT, &ds) < 0)
		return negerrno();
	*perm = ds.msg_perm;
	*count = 0;
	return 0;
}

static int msg_by_key(key_t key)
{
	return msgget(key, 0);
}

static int msg_make(void *ud)
{
	const struct ipc_msq *q = ud;
	int id = msgget(q->o.key, IPC_CREAT | IPC_EXCL | (q->o.mode & 0777));
	return id < 0 ? negerrno() : id;
}

static void msg_drop(int id)
{
	msgctl(id, IPC_RMID, NULL);
}

/* The limit first (the messages must fit), then the messages in order. */
static int msg_fill(int id, const struct ipc_obj *o, void *ud)
{
	const struct ipc_msq *q = ud;
	struct msqid_ds ds;
	size_t max = 1;
	if (msgctl(id, IPC_STAT, &ds) < 0)
		return err_set(negerrno(), "SysV message queue %d: IPC_STAT: %m", id);
	ds.msg_perm.uid = o->uid;
	ds.msg_perm.gid = o->gid;
	ds.msg_perm.mode = o->mode;
	ds.msg_qbytes = q->qbytes;
	if (msgctl(id, IPC_SET, &ds) < 0)
		return err_set(negerrno(), "SysV message queue %d: setting its owner %u:%u and limit %" PRIu64 ": %m", id,
			       o->uid, o->gid, q->qbytes);
	for (size_t k = 0; k < q->n; k++)
		max = MAX(max, q->m[k].len);
	_cleanup_free_ struct msg_buf *buf = malloc(sizeof(*buf) + max);
	if (!buf)
		return -ENOMEM;
	for (size_t k = 0; k < q->n; k++) {
		buf->type = (long)q->m[k].type;
		memcpy(buf->text, q->m[k].data, q->m[k].len);
		if (msgsnd(id, buf, q->m[k].len, IPC_NOWAIT) < 0)
			return err_set(negerrno(), "SysV message queue %d: message %zu of %zu: %m", id, k + 1, q->n);
	}
	return 0;
}

static const struct kind sem_kind = { "SysV semaphore set", "sem_next_id", sem_stat, sem_by_key,
				      sem_make, sem_drop, sem_fill };
static const struct kind msg_kind = { "SysV message queue", "msg_next_id", msg_stat, msg_by_key,
				      msg_make, msg_drop, msg_fill };

int ipc_objects_get(struct ipc_image *img, const struct engine_restore_opts *o)
{
	int r = 0;
	for (size_t i = 0; i < img->nsem && r >= 0; i++)
		r = obj_get(&sem_kind, &img->sem[i].o, img->sem[i].nsems, &img->sem[i], o);
	for (size_t i = 0; i < img->nmsq && r >= 0; i++)
		r = obj_get(&msg_kind, &img->msq[i].o, 0, &img->msq[i], o);
	if (r < 0)
		ipc_drop_made(img);
	return r;
}

void ipc_drop_made(struct ipc_image *img)
{
	for (size_t i = 0; i < img->nsem; i++)
		if (img->sem[i].o.made)
			sem_drop(img->sem[i].o.id);
	for (size_t i = 0; i < img->nmsq; i++)
		if (img->msq[i].o.made)
			msg_drop(img->msq[i].o.id);
	for (size_t i = 0; i < img->nsem; i++)
		img->sem[i].o.made = false;
	for (size_t i = 0; i < img->nmsq; i++)
		img->msq[i].o.made = false;
}
