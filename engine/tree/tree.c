/*
 * Process trees: which processes a checkpoint takes (a process and all
 * its descendants), how they hang together (parent, process group,
 * session; the dead ones not yet reaped), and the `tree` file that
 * records it (docs/FORMAT.md).
 *
 * What must stay true: a tree that parses is one a restore can build by
 * forking, parents before children, with every process group joined in
 * a session it belongs to. The restored root leads a new session and a
 * new process group (as a single restored process always did), so the
 * root's session and group, wherever they were, become the root's own;
 * every other session or group must be led by a process of the tree.
 * Processes that share a descriptor table (CLONE_FILES) or filesystem
 * context (CLONE_FS) are a subtree of the tree, whose first process has
 * its own: the restore forks each of the others from its parent with
 * the flag, so that the kernel shares them again.
 */
#include <dirent.h>
#include <linux/kcmp.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "engine/engine-int.h"

void tree_free(struct tree *t)
{
	free(t->v);
	t->v = NULL;
	t->n = 0;
}

int tree_find(const struct tree *t, pid_t pid)
{
	for (size_t i = 0; i < t->n; i++)
		if (t->v[i].pid == pid)
			return (int)i;
	return -1;
}

struct tree_node *tree_add(struct tree *t, pid_t pid)
{
	struct tree_node *v = realloc(t->v, (t->n + 1) * sizeof(*v));
	if (!v)
		return NULL;
	t->v = v;
	memset(&v[t->n], 0, sizeof(v[t->n]));
	v[t->n].pid = pid;
	return &v[t->n++];
}

int tree_node_read(pid_t pid, struct tree_node *n)
{
	uint64_t f[PROC_STAT_FIELDS];
	int nf = proc_stat_read(pid, 0, f);
	if (nf == -ENOENT)
		return err_set(-ESRCH, "pid %d: cannot read /proc/%d/stat", pid, pid);
	if (nf == -EBADMSG)
		return err_set(-EIO, "pid %d: odd /proc/PID/stat", pid);
	if (nf < 0)
		return err_set(nf, "pid %d: cannot read /proc/%d/stat", pid, pid);
	char state = (char)f[3];
	if (nf < 52)
		return err_set(-EIO, "pid %d: /proc/PID/stat has %d fields", pid, nf);
	/* what /proc/PID/stat does not tell (files, fs) is kcmp's */
	*n = (struct tree_node){ .pid = pid };
	n->ppid = (pid_t)f[4];
	n->pgid = (pid_t)f[5];
	n->sid = (pid_t)f[6];
	n->zombie = state == 'Z' || state == 'X';
	/* exit_code: the status as waitpid() would report it */
	n->exit_status = n->zombie ? (int)f[52] : 0;
	return 0;
}

int tree_children(pid_t pid, pid_t **ret, size_t *ret_n)
{
	char path[64];
	pid_t *v = NULL;
	size_t n = 0;

	snprintf(path, sizeof(path), "/proc/%d/task", pid);
	DIR *d = opendir(path);
	if (!d)
		return err_set(errno == ENOENT ? -ESRCH : negerrno(), "pid %d: cannot list threads: %m", pid);
	struct dirent *de;
	/* a child belongs to the thread that forked it: every thread's list */
	while ((de = readdir(d))) {
		_cleanup_free_ char *text = NULL;
		char p[96];
		if (de->d_name[0] == '.')
			continue;
		snprintf(p, sizeof(p), "/proc/%d/task/%.20s/children", pid, de->d_name);
		if (read_file_full(p, &text, NULL) < 0)
			continue; /* the thread ended */
		char *save = NULL;
		for (char *tok = strtok_r(text, " \n", &save); tok; tok = strtok_r(NULL, " \n", &save)) {
			uint64_t c;
			if (parse_u64(tok, &c) < 0 || !c || c > INT32_MAX)
				continue;
			pid_t *nv = realloc(v, (n + 1) * sizeof(*nv));
			if (!nv) {
				free(v);
				closedir(d);
				return -ENOMEM;
			}
			v = nv;
			v[n++] = (pid_t)c;
		}
	}
	closedir(d);
	*ret = v;
	*ret_n = n;
	return 0;
}

pid_t tree_sid(const struct tree *t, size_t i)
{
	return t->v[i].sid == t->v[0].sid ? t->v[0].pid : t->v[i].sid;
}

pid_t tree_pgid(const struct tree *t, size_t i)
{
	return t->v[i].pgid == t->v[0].pgid ? t->v[0].pid : t->v[i].pgid;
}

char *tree_format(const struct tree *t)
{
	struct tbuf b = { 0 };
	for (size_t i = 0; i < t->n; i++) {
		const struct tree_node *n = &t->v[i];
		tb_printf(&b, "%d %d %d %d", n->pid, n->ppid, n->pgid, n->sid);
		if (n->zombie && WIFSIGNALED(n->exit_status))
			tb_printf(&b, " zombie signal=%d", WTERMSIG(n->exit_status));
		else if (n->zombie)
			tb_printf(&b, " zombie exit=%d", WEXITSTATUS(n->exit_status));
		if (n->files)
			tb_printf(&b, " files=%d", n->files);
		if (n->fs)
			tb_printf(&b, " fs=%d", n->fs);
		tb_printf(&b, "\n");
	}
	return tb_take(&b);
}

static const char *const shared_what[2] = {
	"its filesystem context, cwd and umask (CLONE_FS)",
	"its descriptor table (CLONE_FILES)",
};

/* Process i shares its descriptor table (files) or filesystem context
 * (!files) with process `with` (0: nobody): that one must be a live
 * process listed before it, with its own, and i's parent must be it or
 * share it too, so that forking i from its parent with the flag shares
 * it again. */
static int check_shared_with(const struct tree *t, size_t i, bool files)
{
	const struct tree_node *n = &t->v[i];
	pid_t with = files ? n->files : n->fs;
	if (!with)
		return 0;
	int g = tree_find(t, with);
	if (n->zombie || g < 0 || (size_t)g >= i || t->v[g].zombie || (files ? t->v[g].files : t->v[g].fs))
		return err_set(-EBADMSG, "tree: pid %d shares %s with %d, not a live process with its own listed before it",
			       n->pid, shared_what[files], with);
	int p = tree_find(t, n->ppid);
	pid_t parents = p < 0 ? -1 : files ? t->v[p].files : t->v[p].fs;
	if (n->ppid != with && parents != with)
		return err_set(-EOPNOTSUPP,
			       "pid %d shares %s with pid %d, but its parent %d does not: a restore cannot make that by "
			       "forking: not supported",
			       n->pid, shared_what[files], with, n->ppid);
	return 0;
}

int tree_check(const struct tree *t)
{
	if (!t->n || t->v[0].zombie)
		return err_set(-EBADMSG, "tree: the first line must be a live process, the root");
	for (size_t i = 0; i < t->n; i++) {
		const struct tree_node *n = &t->v[i];
		int p = tree_find(t, n->ppid);
		if (tree_find(t, n->pid) != (int)i)
			return err_set(-EBADMSG, "tree: pid %d is listed twice", n->pid);
		int r = check_shared_with(t, i, true);
		if (r >= 0)
			r = check_shared_with(t, i, false);
		if (r < 0)
			return r;
		if (i == 0)
			continue;
		/* parents first: a restore forks each process from its parent */
		if (p < 0 || (size_t)p >= i || t->v[p].zombie)
			return err_set(-EBADMSG, "tree: the parent %d of pid %d is not a live process listed before it",
				       n->ppid, n->pid);
		pid_t sid = tree_sid(t, i), pgid = tree_pgid(t, i);
		/* a session is inherited, or made by its leader with setsid() */
		if (sid != n->pid && sid != tree_sid(t, p))
			return err_set(-EOPNOTSUPP,
				       "tree: pid %d is in session %d, neither its own nor its parent's: not supported",
				       n->pid, n->sid);
		if (sid == n->pid && pgid != n->pid)
			return err_set(-EBADMSG, "tree: session leader %d is not its group's leader", n->pid);
		/* a group is joined in its own session, after its leader made it */
		int g = tree_find(t, pgid);
		if (g < 0 || tree_pgid(t, g) != pgid || tree_sid(t, g) != sid)
			return err_set(-EOPNOTSUPP,
				       "tree: pid %d is in process group %d, whose leader is not in its session in the "
				       "snapshot: not supported",
				       n->pid, n->pgid);
	}
	return 0;
}

/* The word fmt (" key=%d%n") at *rest, if there, into *ret and past it;
 * -EBADMSG for a pid that is not one. */
static int parse_pid_word(const char **rest, const char *fmt, pid_t *ret)
{
	int v, k = 0;
	if (sscanf(*rest, fmt, &v, &k) != 1 || !k)
		return 0;
	if (v <= 0)
		return -EBADMSG;
	*ret = v;
	*rest += k;
	return 0;
}

int tree_parse(const char *text, struct tree *t)
{
	_cleanup_free_ char *copy = strdup(text);
	unsigned lineno = 0;
	if (!copy)
		return -ENOMEM;
	for (char *l = copy, *nl; l && *l; l = nl) {
		nl = strchr(l, '\n');
		if (nl)
			*nl++ = 0;
		lineno++;
		int pid, ppid, pgid, sid, code, k = 0;
		char more[32] = "";
		int got = sscanf(l, "%d %d %d %d%n", &pid, &ppid, &pgid, &sid, &k);
		if (got != 4 || pid <= 0 || ppid < 0 || pgid <= 0 || sid <= 0)
			return err_set(-EBADMSG, "tree line %u: not 'pid ppid pgid sid'", lineno);
		struct tree_node *n = tree_add(t, pid);
		if (!n)
			return -ENOMEM;
		n->ppid = ppid;
		n->pgid = pgid;
		n->sid = sid;
		const char *rest = l + k;
		if (sscanf(rest, " zombie %31s%n", more, &k) == 1) {
			n->zombie = true;
			if (sscanf(more, "exit=%d", &code) == 1 && code >= 0 && code <= 255)
				n->exit_status = code << 8;
			else if (sscanf(more, "signal=%d", &code) == 1 && code >= 1 && code < ENGINE_NSIG)
				n->exit_status = code;
			else
				return err_set(-EBADMSG, "tree line %u: a zombie needs exit=N or signal=N", lineno);
			rest += k;
		}
		/* files=PID fs=PID, in this order, each at most once */
		if (parse_pid_word(&rest, " files=%d%n", &n->files) < 0 || parse_pid_word(&rest, " fs=%d%n", &n->fs) < 0)
			return err_set(-EBADMSG, "tree line %u: bad files= or fs=", lineno);
		if (*rest)
			return err_set(-EBADMSG, "tree line %u: unknown words '%s'", lineno, rest);
	}
	return tree_check(t);
}

int tree_check_sharing(struct tree *t, const bool *skip)
{
	/* what a restore cannot make between two processes */
	static const struct {
		int type;
		const char *what;
	} refused[] = {
		{ KCMP_VM, "one address space (CLONE_VM without CLONE_THREAD, or a vfork() not yet followed by exec)" },
		/* the kernel shares handlers only with the address space
		 * (CLONE_SIGHAND needs CLONE_VM): refused above already */
		{ KCMP_SIGHAND, "one table of signal handlers (CLONE_SIGHAND)" },
	};
	for (size_t j = 0; j < t->n; j++)
		t->v[j].files = t->v[j].fs = 0;
	for (size_t j = 0; j < t->n; j++) {
		struct tree_node *b = &t->v[j];
		if (b->zombie || (skip && skip[j]))
			continue;
		for (size_t i = 0; i < j; i++) {
			const struct tree_node *a = &t->v[i];
			if (a->zombie || (skip && skip[i]))
				continue;
			for (size_t k = 0; k < ARRAY_SIZE(refused); k++) {
				long r = syscall(SYS_kcmp, a->pid, b->pid, refused[k].type, 0, 0);
				if (r == 0)
					return err_set(-EOPNOTSUPP, "pids %d and %d share %s: not supported", a->pid,
						       b->pid, refused[k].what);
				if (r < 0 && errno != ESRCH)
					return err_set(negerrno(), "pids %d and %d: kcmp: %m", a->pid, b->pid);
			}
			/* the first one met with the same table or context:
			 * every process before j is already named by its first */
			if (!b->files && syscall(SYS_kcmp, a->pid, b->pid, KCMP_FILES, 0, 0) == 0)
				b->files = a->files ? a->files : a->pid;
			if (!b->fs && syscall(SYS_kcmp, a->pid, b->pid, KCMP_FS, 0, 0) == 0)
				b->fs = a->fs ? a->fs : a->pid;
		}
	}
	/* a restore forks a sharing process from its parent with the flag */
	for (size_t j = 0; j < t->n; j++) {
		int r = check_shared_with(t, j, true);
		if (r >= 0)
			r = check_shared_with(t, j, false);
		if (r < 0)
			return r;
	}
	return 0;
}
