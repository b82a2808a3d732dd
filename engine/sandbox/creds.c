/*
 * Credentials, per thread: user and group IDs (real, effective, saved,
 * filesystem), supplementary groups, the five capability sets,
 * securebits and no_new_privs. A dump reads them from
 * /proc/PID/task/TID/status (securebits by injection, process.c) and
 * writes them in regs/<tid>; a restore gives every thread its own back by
 * injection, as the last steps before the seccomp filters (seccomp.c).
 *
 * What must stay true: nobody gains power through a restore. The image's
 * credentials are applied only where the one who restores could have
 * granted them (creds_check(), before anything is built): root with
 * CAP_SETUID, CAP_SETGID and CAP_SETPCAP any ids; a user its own ids and
 * no capability it lacks; the daemon restoring for a user (set_creds)
 * that user's ids and, unless the user is root, no capability at all.
 * Nothing gets a capability the restorer does not hold. Every step is a
 * raw system call injected into the thread itself (credentials are per
 * thread; libc's set*id would broadcast to the others), and a step whose
 * value is already in place is skipped, so that a user's restore needs
 * no privilege. At the end every thread's credentials are read back and
 * compared with the image: what the kernel did not take fails the
 * restore, naming the thread and the field.
 */
#include <linux/capability.h>
#include <linux/securebits.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

#include "engine/engine-int.h"

#define CAP(n) (1ull << (n))

static const char *const id_names[4] = { "real", "effective", "saved", "filesystem" };

void creds_free(struct thread_creds *c)
{
	free(c->groups);
	c->groups = NULL;
	c->ngroups = 0;
}

static int parse_ids(const char *status, const char *key, uint32_t ids[4])
{
	const char *l = strstr(status, key);
	if (!l || sscanf(l + strlen(key), "%u %u %u %u", &ids[0], &ids[1], &ids[2], &ids[3]) != 4)
		return -EIO;
	return 0;
}

static int parse_hex(const char *status, const char *key, uint64_t *v)
{
	const char *l = strstr(status, key);
	if (!l || sscanf(l + strlen(key), "%" SCNx64, v) != 1)
		return -EIO;
	return 0;
}

/* The "Groups:" value: decimal IDs separated by spaces, maybe none. */
static int parse_groups(const char *s, size_t len, uint32_t **ret, size_t *ret_n)
{
	uint32_t *v = NULL;
	size_t n = 0;
	const char *end = s + len;
	while (s < end) {
		while (s < end && (*s == ' ' || *s == '\t'))
			s++;
		if (s >= end)
			break;
		char *e;
		errno = 0;
		unsigned long g = strtoul(s, &e, 10);
		if (e == s || errno || g > UINT32_MAX || (e < end && *e != ' ' && *e != '\t')) {
			free(v);
			return -EBADMSG;
		}
		uint32_t *nv = realloc(v, (n + 1) * sizeof(*v));
		if (!nv) {
			free(v);
			return -ENOMEM;
		}
		v = nv;
		v[n++] = (uint32_t)g;
		s = e;
	}
	*ret = v;
	*ret_n = n;
	return 0;
}

int creds_read(pid_t pid, pid_t tid, struct thread_creds *c)
{
	char path[96];
	_cleanup_free_ char *st = NULL;
	snprintf(path, sizeof(path), "/proc/%d/task/%d/status", pid, tid);
	int r = read_file_full(path, &st, NULL);
	if (r < 0)
		return err_set(r, "thread %d: cannot read %s", tid, path);
	creds_free(c);
	memset(c, 0, sizeof(*c));
	uint64_t nnp = 0, mode = 0, nf = 0;
	if (parse_ids(st, "\nUid:", c->uid) < 0 || parse_ids(st, "\nGid:", c->gid) < 0 ||
	    parse_hex(st, "\nCapInh:", &c->cap_inh) < 0 || parse_hex(st, "\nCapPrm:", &c->cap_prm) < 0 ||
	    parse_hex(st, "\nCapEff:", &c->cap_eff) < 0 || parse_hex(st, "\nCapBnd:", &c->cap_bnd) < 0 ||
	    parse_hex(st, "\nCapAmb:", &c->cap_amb) < 0 || parse_hex(st, "\nNoNewPrivs:", &nnp) < 0)
		return err_set(-EIO, "thread %d: no credentials in %s", tid, path);
	/* decimal, but 0, 1, 2 read the same in hex; absent without
	 * CONFIG_SECCOMP: no filters then */
	parse_hex(st, "\nSeccomp:", &mode);
	const char *f = strstr(st, "\nSeccomp_filters:");
	if (f)
		nf = strtoull(f + 17, NULL, 10);
	const char *g = strstr(st, "\nGroups:");
	if (!g)
		return err_set(-EIO, "thread %d: no Groups in %s", tid, path);
	g += 8;
	r = parse_groups(g, strcspn(g, "\n"), &c->groups, &c->ngroups);
	if (r < 0)
		return err_set(r, "thread %d: odd Groups in %s", tid, path);
	c->no_new_privs = nnp != 0;
	c->seccomp_mode = (int)mode;
	c->nfilters = (unsigned)nf;
	c->valid = true;
	return 0;
}

void creds_format(struct tbuf *b, const struct thread_creds *c)
{
	if (!c->valid)
		return;
	tb_printf(b, "uid %u %u %u %u\n", c->uid[0], c->uid[1], c->uid[2], c->uid[3]);
	tb_printf(b, "gid %u %u %u %u\n", c->gid[0], c->gid[1], c->gid[2], c->gid[3]);
	tb_printf(b, "groups");
	for (size_t i = 0; i < c->ngroups; i++)
		tb_printf(b, " %u", c->groups[i]);
	tb_printf(b, "%s\n", c->ngroups ? "" : " -");
	tb_printf(b, "cap_inh 0x%016" PRIx64 "\n", c->cap_inh);
	tb_printf(b, "cap_prm 0x%016" PRIx64 "\n", c->cap_prm);
	tb_printf(b, "cap_eff 0x%016" PRIx64 "\n", c->cap_eff);
	tb_printf(b, "cap_bnd 0x%016" PRIx64 "\n", c->cap_bnd);
	tb_printf(b, "cap_amb 0x%016" PRIx64 "\n", c->cap_amb);
	tb_printf(b, "securebits 0x%x\n", c->securebits);
	tb_printf(b, "no_new_privs %d\n", c->no_new_privs ? 1 : 0);
}

/* Which keys were seen, so that a thread has all or none. */
enum {
	SEEN_UID = 1 << 0,
	SEEN_GID = 1 << 1,
	SEEN_GROUPS = 1 << 2,
	SEEN_INH = 1 << 3,
	SEEN_PRM = 1 << 4,
	SEEN_EFF = 1 << 5,
	SEEN_BND = 1 << 6,
	SEEN_AMB = 1 << 7,
	SEEN_SECUREBITS = 1 << 8,
	SEEN_NNP = 1 << 9,
	SEEN_ALL = (1 << 10) - 1,
};

int creds_parse_line(const char *key, const char *val, struct thread_creds *c)
{
	static const struct {
		const char *key;
		size_t off;
		int bit;
	} caps[] = {
		{ "cap_inh", offsetof(struct thread_creds, cap_inh), SEEN_INH },
		{ "cap_prm", offsetof(struct thread_creds, cap_prm), SEEN_PRM },
		{ "cap_eff", offsetof(struct thread_creds, cap_eff), SEEN_EFF },
		{ "cap_bnd", offsetof(struct thread_creds, cap_bnd), SEEN_BND },
		{ "cap_amb", offsetof(struct thread_creds, cap_amb), SEEN_AMB },
	};
	/* the seen bits ride in seccomp_mode, unused in a restore */
	int *seen = &c->seccomp_mode;
	char extra;
	if (!strcmp(key, "uid") || !strcmp(key, "gid")) {
		uint32_t *ids = key[0] == 'u' ? c->uid : c->gid;
		if (sscanf(val, "%u %u %u %u %c", &ids[0], &ids[1], &ids[2], &ids[3], &extra) != 4)
			return -EBADMSG;
		*seen |= key[0] == 'u' ? SEEN_UID : SEEN_GID;
	} else if (!strcmp(key, "groups")) {
		creds_free(c);
		if (strcmp(val, "-") && parse_groups(val, strlen(val), &c->groups, &c->ngroups) < 0)
			return -EBADMSG;
		if (c->ngroups > 65536)
			return -EBADMSG;
		*seen |= SEEN_GROUPS;
	} else if (!strcmp(key, "securebits")) {
		if (sscanf(val, "%x %c", &c->securebits, &extra) != 1)
			return -EBADMSG;
		*seen |= SEEN_SECUREBITS;
	} else if (!strcmp(key, "no_new_privs")) {
		if (strcmp(val, "0") && strcmp(val, "1"))
			return -EBADMSG;
		c->no_new_privs = val[0] == '1';
		*seen |= SEEN_NNP;
	} else {
		for (size_t i = 0; i < ARRAY_SIZE(caps); i++) {
			if (strcmp(key, caps[i].key))
				continue;
			uint64_t *v = (uint64_t *)((char *)c + caps[i].off);
			if (sscanf(val, "%" SCNx64 " %c", v, &extra) != 1)
				return -EBADMSG;
			*seen |= caps[i].bit;
			return 1;
		}
		return 0;
	}
	return 1;
}

int creds_parse_done(const char *name, const struct thread_creds *c)
{
	struct thread_creds *m = (struct thread_creds *)c;
	int seen = m->seccomp_mode;
	m->seccomp_mode = 0;
	if (!seen)
		return 0;
	if (seen != SEEN_ALL)
		return err_set(-EBADMSG,
			       "%s: credentials incomplete: uid, gid, groups, cap_inh, cap_prm, cap_eff, cap_bnd, "
			       "cap_amb, securebits and no_new_privs go together",
			       name);
	if ((c->cap_eff & ~c->cap_prm) || (c->cap_amb & ~(c->cap_prm & c->cap_inh)))
		return err_set(-EBADMSG, "%s: capability sets the kernel never makes (effective or ambient "
					 "beyond permitted)",
			       name);
	m->valid = true;
	return 0;
}

/* ---- who may grant what --------------------------------------------------- */

int creds_grant_init(const struct engine_restore_opts *o, struct creds_grant *g)
{
	memset(g, 0, sizeof(*g));
	int r = creds_read(getpid(), (pid_t)syscall(SYS_gettid), &g->own);
	if (r < 0)
		return r;
	int sb = prctl(PR_GET_SECUREBITS, 0, 0, 0, 0);
	g->own.securebits = sb < 0 ? 0 : (uint32_t)sb;
	uint64_t need = CAP(CAP_SETUID) | CAP(CAP_SETGID) | CAP(CAP_SETPCAP);
	bool powers = (g->own.cap_eff & need) == need;
	g->sys_admin = g->own.cap_eff & CAP(CAP_SYS_ADMIN);
	if (!o || !o->set_creds) {
		g->any = powers;
		return 0;
	}
	/* The user it restores for: its ids and login groups, no capability
	 * unless it is root. The new process keeps CAP_SETUID, CAP_SETGID
	 * and CAP_SETPCAP while we drive it (creds_take in restore.c), so
	 * that it can narrow itself to what the image says. */
	g->set_creds = true;
	for (int i = 0; i < 4; i++) {
		g->own.uid[i] = o->uid;
		g->own.gid[i] = o->gid;
	}
	creds_free(&g->own);
	if (o->ngroups) {
		g->own.groups = calloc(o->ngroups, sizeof(*g->own.groups));
		if (!g->own.groups)
			return -ENOMEM;
		for (size_t i = 0; i < o->ngroups; i++)
			g->own.groups[i] = o->groups[i];
		g->own.ngroups = o->ngroups;
	}
	if (o->uid != 0) {
		g->own.cap_inh = g->own.cap_prm = g->own.cap_eff = g->own.cap_amb = 0;
		g->sys_admin = false;
	}
	return 0;
}

void creds_grant_free(struct creds_grant *g)
{
	creds_free(&g->own);
}

static bool in(uint32_t v, const uint32_t *set, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (set[i] == v)
			return true;
	return false;
}

static bool same_groups(const struct thread_creds *a, const struct thread_creds *b)
{
	if (a->ngroups != b->ngroups)
		return false;
	for (size_t i = 0; i < a->ngroups; i++)
		if (!in(a->groups[i], b->groups, b->ngroups))
			return false;
	return true;
}

static int check_thread(pid_t pid, const struct thread_image *t, const struct creds_grant *g)
{
	const struct thread_creds *c = &t->creds, *own = &g->own;
	/* the caps the new process holds while we drive it */
	bool setpcap = g->any || g->set_creds || (own->cap_eff & CAP(CAP_SETPCAP));

	if (!g->any) {
		for (int i = 0; i < 4; i++) {
			/* a user moves among its own real, effective and
			 * saved IDs (and its fs ID); the daemon's user is one */
			size_t n = g->set_creds ? 1 : (i == 3 ? 4 : 3);
			if (!in(c->uid[i], own->uid, n))
				return err_set(-EPERM,
					       "pid %d thread %d: its %s uid %u is not the restoring user's (%u): "
					       "only root restores another user's process",
					       pid, t->tid, id_names[i], c->uid[i], own->uid[0]);
			bool gid_ok = in(c->gid[i], own->gid, n) ||
				      (g->set_creds && in(c->gid[i], own->groups, own->ngroups));
			if (!gid_ok)
				return err_set(-EPERM,
					       "pid %d thread %d: its %s gid %u is not one of the restoring user's",
					       pid, t->tid, id_names[i], c->gid[i]);
		}
		if (g->set_creds) {
			/* fewer groups than the user's login groups: fine */
			for (size_t i = 0; i < c->ngroups; i++)
				if (!in(c->groups[i], own->groups, own->ngroups) && c->groups[i] != own->gid[0])
					return err_set(-EPERM,
						       "pid %d thread %d: supplementary group %u is not the restoring "
						       "user's",
						       pid, t->tid, c->groups[i]);
		} else if (!same_groups(c, own)) {
			/* setgroups() takes CAP_SETGID, even to drop one */
			for (size_t i = 0; i < c->ngroups; i++)
				if (!in(c->groups[i], own->groups, own->ngroups))
					return err_set(-EPERM,
						       "pid %d thread %d: supplementary group %u is not the restoring "
						       "user's",
						       pid, t->tid, c->groups[i]);
			return err_set(-EPERM,
				       "pid %d thread %d: its supplementary groups differ from the restoring user's, "
				       "and changing them takes CAP_SETGID",
				       pid, t->tid);
		}
	}
	static const struct {
		const char *name;
		size_t off;
	} sets[] = {
		{ "permitted", offsetof(struct thread_creds, cap_prm) },
		{ "effective", offsetof(struct thread_creds, cap_eff) },
		{ "inheritable", offsetof(struct thread_creds, cap_inh) },
		{ "ambient", offsetof(struct thread_creds, cap_amb) },
		{ "bounding", offsetof(struct thread_creds, cap_bnd) },
	};
	for (size_t i = 0; i < ARRAY_SIZE(sets); i++) {
		uint64_t want = *(const uint64_t *)((const char *)c + sets[i].off);
		/* the kernel lets a thread add to its inheritable set what
		 * it has permitted; the bounding set only shrinks */
		uint64_t have = i == 4 ? own->cap_bnd : i == 2 ? own->cap_prm | own->cap_inh : own->cap_prm;
		uint64_t extra = want & ~have;
		if (extra)
			return err_set(-EPERM,
				       "pid %d thread %d: its %s capabilities 0x%" PRIx64
				       " include 0x%" PRIx64 ", which the restorer%s does not hold",
				       pid, t->tid, sets[i].name, want, extra, g->set_creds ? "'s user" : "");
	}
	if (!setpcap && c->cap_bnd != own->cap_bnd)
		return err_set(-EPERM,
			       "pid %d thread %d: its bounding set 0x%" PRIx64 " differs from the restorer's 0x%" PRIx64
			       ", and dropping from it takes CAP_SETPCAP",
			       pid, t->tid, c->cap_bnd, own->cap_bnd);
	if (!setpcap && c->securebits != own->securebits)
		return err_set(-EPERM,
			       "pid %d thread %d: its securebits 0x%x differ from the restorer's 0x%x, and setting "
			       "them takes CAP_SETPCAP",
			       pid, t->tid, c->securebits, own->securebits);
	if (t->seccomp >= 0 && !c->no_new_privs && !g->sys_admin)
		return err_set(-EPERM,
			       "pid %d thread %d: it has seccomp filters but not no_new_privs; installing them "
			       "again takes CAP_SYS_ADMIN",
			       pid, t->tid);
	return 0;
}

int creds_check(const struct proc_image *img, const struct creds_grant *g)
{
	for (size_t i = 0; i < img->nthreads; i++) {
		const struct thread_image *t = &img->threads[i];
		if (!t->creds.valid)
			continue;
		int r = check_thread(img->pid, t, g);
		if (r < 0)
			return r;
	}
	return 0;
}

/* ---- giving them back (a restore, by injection) ------------------------- */

static unsigned cap_last(void)
{
	static unsigned last;
	if (!last) {
		_cleanup_free_ char *s = NULL;
		last = read_file_full("/proc/sys/kernel/cap_last_cap", &s, NULL) >= 0 ? (unsigned)atoi(s) : 40;
		if (last < CAP_LAST_CAP || last > 63)
			last = CAP_LAST_CAP;
	}
	return last;
}

/* A thread's credentials now, securebits asked from inside. */
static int current(struct ctx *c, pid_t pid, pid_t tid, struct thread_creds *cur)
{
	int64_t sb;
	int r = creds_read(pid, tid, cur);
	if (r < 0)
		return r;
	r = restore_sys(c, tid, SYS_prctl, PR_GET_SECUREBITS, 0, 0, 0, 0, 0, &sb, "PR_GET_SECUREBITS");
	if (r < 0)
		return r;
	cur->securebits = (uint32_t)sb;
	return 0;
}

static int capset(struct ctx *c, pid_t tid, uint64_t eff, uint64_t prm, uint64_t inh)
{
	struct {
		struct __user_cap_header_struct h;
		struct __user_cap_data_struct d[2];
	} caps = {
		.h = { .version = _LINUX_CAPABILITY_VERSION_3 },
		.d = {
			{ (uint32_t)eff, (uint32_t)prm, (uint32_t)inh },
			{ (uint32_t)(eff >> 32), (uint32_t)(prm >> 32), (uint32_t)(inh >> 32) },
		},
	};
	uint64_t at = restore_scratch(c);
	int r = restore_poke(c, at, &caps, sizeof(caps));
	if (r >= 0)
		r = restore_sys(c, tid, SYS_capset, at, at + sizeof(caps.h), 0, 0, 0, 0, NULL, "capset");
	return r;
}

int creds_apply_ids(struct ctx *c, pid_t pid, const struct thread_image *t)
{
	const struct thread_creds *w = &t->creds;
	struct thread_creds cur = { 0 };
	uint64_t at = restore_scratch(c);
	int r;

	if (!w->valid)
		return 0;
	r = current(c, pid, t->tid, &cur);
	if (r < 0)
		goto out;
	if (!same_groups(w, &cur)) {
		if (w->ngroups * sizeof(uint32_t) > RESTORE_SCRATCH_SIZE) {
			r = err_set(-E2BIG, "thread %d: %zu supplementary groups", t->tid, w->ngroups);
			goto out;
		}
		r = w->ngroups ? restore_poke(c, at, w->groups, w->ngroups * sizeof(uint32_t)) : 0;
		if (r >= 0)
			r = restore_sys(c, t->tid, SYS_setgroups, w->ngroups, at, 0, 0, 0, 0, NULL, "setgroups");
		if (r < 0)
			goto out;
	}
	if (memcmp(w->gid, cur.gid, sizeof(w->gid))) {
		r = restore_sys(c, t->tid, SYS_setresgid, w->gid[0], w->gid[1], w->gid[2], 0, 0, 0, NULL,
				"setresgid");
		/* returns the old fs gid, never an error: checked at the end */
		if (r >= 0)
			r = restore_sys(c, t->tid, SYS_setfsgid, w->gid[3], 0, 0, 0, 0, 0, NULL, "setfsgid");
		if (r < 0)
			goto out;
	}
	/* The inheritable set first, while the permitted set is still ours:
	 * an ambient capability must be in both. */
	if (w->cap_inh != cur.cap_inh) {
		r = capset(c, t->tid, cur.cap_eff, cur.cap_prm, w->cap_inh);
		if (r < 0)
			goto out;
		cur.cap_inh = w->cap_inh;
	}
	if (w->cap_amb != cur.cap_amb) {
		r = restore_sys(c, t->tid, SYS_prctl, PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0, 0, NULL,
				"PR_CAP_AMBIENT_CLEAR_ALL");
		for (unsigned k = 0; r >= 0 && k <= cap_last(); k++)
			if (w->cap_amb & CAP(k))
				r = restore_sys(c, t->tid, SYS_prctl, PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, k, 0, 0, 0,
						NULL, "PR_CAP_AMBIENT_RAISE");
		if (r < 0)
			goto out;
	}
	if (memcmp(w->uid, cur.uid, sizeof(w->uid))) {
		/* Leaving uid 0 would clear the permitted, effective and
		 * ambient sets (and a new fs uid the file capabilities):
		 * with SECBIT_NO_SETUID_FIXUP the kernel leaves them as they
		 * are, and the image's are set below. A thread without
		 * CAP_SETPCAP (a user's restore) holds none to lose. */
		uint32_t keep = SECBIT_NO_SETUID_FIXUP | SECBIT_KEEP_CAPS;
		if ((cur.cap_eff & CAP(CAP_SETPCAP)) && (cur.securebits & keep) != keep) {
			r = restore_sys(c, t->tid, SYS_prctl, PR_SET_SECUREBITS, cur.securebits | keep, 0, 0, 0, 0,
					NULL, "PR_SET_SECUREBITS");
			if (r < 0)
				goto out;
			cur.securebits |= keep;
		}
		r = restore_sys(c, t->tid, SYS_setresuid, w->uid[0], w->uid[1], w->uid[2], 0, 0, 0, NULL,
				"setresuid");
		if (r >= 0)
			r = restore_sys(c, t->tid, SYS_setfsuid, w->uid[3], 0, 0, 0, 0, 0, NULL, "setfsuid");
		if (r < 0)
			goto out;
	}
	for (unsigned k = 0; k <= cap_last(); k++)
		if ((cur.cap_bnd & CAP(k)) && !(w->cap_bnd & CAP(k))) {
			r = restore_sys(c, t->tid, SYS_prctl, PR_CAPBSET_DROP, k, 0, 0, 0, 0, NULL, "PR_CAPBSET_DROP");
			if (r < 0)
				goto out;
		}
	if (w->securebits != cur.securebits) {
		r = restore_sys(c, t->tid, SYS_prctl, PR_SET_SECUREBITS, w->securebits, 0, 0, 0, 0, NULL,
				"PR_SET_SECUREBITS");
		if (r < 0)
			goto out;
	}
	/* before the filters: a thread with no_new_privs may install them
	 * without CAP_SYS_ADMIN; it only ever restricts exec */
	if (w->no_new_privs && !cur.no_new_privs)
		r = restore_sys(c, t->tid, SYS_prctl, PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0, 0, NULL, "PR_SET_NO_NEW_PRIVS");
out:
	creds_free(&cur);
	if (r < 0 && !strstr(err_msg(), "thread"))
		err_set(r, "thread %d: credentials: %s", t->tid, strerror(-r));
	return r;
}

int creds_apply_caps(struct ctx *c, pid_t pid, const struct thread_image *t)
{
	const struct thread_creds *w = &t->creds;
	struct thread_creds cur = { 0 };
	if (!w->valid)
		return 0;
	int r = creds_read(pid, t->tid, &cur);
	if (r >= 0 && (cur.cap_eff != w->cap_eff || cur.cap_prm != w->cap_prm || cur.cap_inh != w->cap_inh))
		r = capset(c, t->tid, w->cap_eff, w->cap_prm, w->cap_inh);
	creds_free(&cur);
	return r;
}

int creds_verify(pid_t pid, const struct thread_image *t)
{
	const struct thread_creds *w = &t->creds;
	struct thread_creds cur = { 0 };
	const char *what = NULL;
	if (!w->valid)
		return 0;
	int r = creds_read(pid, t->tid, &cur);
	if (r < 0)
		return r;
	if (memcmp(w->uid, cur.uid, sizeof(w->uid)))
		what = "uids";
	else if (memcmp(w->gid, cur.gid, sizeof(w->gid)))
		what = "gids";
	else if (!same_groups(w, &cur))
		what = "supplementary groups";
	else if (w->cap_inh != cur.cap_inh || w->cap_prm != cur.cap_prm || w->cap_eff != cur.cap_eff)
		what = "capabilities";
	else if (w->cap_bnd != cur.cap_bnd)
		what = "bounding set";
	else if (w->cap_amb != cur.cap_amb)
		what = "ambient capabilities";
	else if (w->no_new_privs && !cur.no_new_privs)
		what = "no_new_privs"; /* one more than the image (a restorer with it) only restricts exec */
	creds_free(&cur);
	if (what)
		return err_set(-EPERM, "restore of pid %d: thread %d did not get back its %s", pid, t->tid, what);
	return 0;
}
