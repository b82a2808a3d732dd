/*
 * engine_dump(): checkpoint a process with all its descendants (a tree;
 * one process is a tree of one) into a snapshot being written.
 *
 * Two steps, kept apart so that a copy-on-write view can later replace the
 * copy in step 1 without touching step 2:
 *  1. freeze and take a consistent view. Every process is checked first,
 *     untouched (what is refused is refused here, naming it). Then they
 *     are frozen parents first: a stopped process has the children it will
 *     have, so each process's children are listed once it is frozen (one
 *     born meanwhile is checked then). Only once all are frozen is any of
 *     them read by us: /proc state, descriptors (and what several share,
 *     fds_share), the memory layout and a copy of the pages to save in our
 *     RAM (memory several share, once). Each keeper reads its own
 *     process's registers and injected queries as soon as it has stopped
 *     it: that state is the process's own and cannot change while it is
 *     stopped. With ENGINE_AFTER_RUN they all run again right after this
 *     (the frozen time reported is this step, from the first seize to the
 *     last thaw: it grows with the bytes copied, at process_vm_readv
 *     speed, with up to 4 threads copying);
 *  2. write the `tree` file, the identities of the SysV objects the tree
 *     uses (`ipc`, ipc.c), each process's files in its directory,
 *     shared/, and commit through store/.
 * With --kill/--stop the processes stay frozen until the commit, so that
 * nothing they do after the view is lost, and are then killed or left
 * stopped; memory then goes straight from each process to the store
 * through reused buffers, without a copy in RAM. Every failure detaches
 * every thread of every process and leaves them running as they were.
 *
 * We are not the tracer: a keeper process per process of the tree,
 * forked and executed before the freeze, seizes its threads on our word,
 * captures what needs a tracer (registers, masks, the injected queries)
 * and holds them stopped until our next word (keeper.c).
 * Should we die at any moment (kill -9, the OOM killer), it puts every
 * thread back and lets go; the process is only killed or left stopped on
 * our word, sent once the snapshot is durable.
 *
 * A CUDA process (gpu/ finds a context in it) is locked on the GPU and
 * checkpointed there before any thread is seized: the driver's own thread
 * inside it does that work and must run. Its device memory is then in its
 * host memory, which the ordinary memory capture saves: the areas the
 * checkpoint step made (the maps before and after it compared) under
 * gpu/hbm/ instead of memory/, split from areas the kernel merged them
 * with. Once the view is taken and it is to run on, it is thawed first
 * and given its GPU back (restore, unlock); every failure does the same,
 * and should we die meanwhile its keeper, told before the lock, does it
 * (keeper.c). gpu/info records the driver and devices, and those areas.
 * With --stop it is left stopped and checkpointed on the GPU (its device
 * memory stays in host memory, the GPU is free).
 */
#include <signal.h>
#include <sys/ptrace.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>

#include "engine/engine-int.h"
#include "engine/fds/fds.h"
#include "engine/netlock-int.h"
#include "gpu/gpu.h"

const char *engine_phase_name(enum engine_phase p)
{
	static const char *const names[_ENGINE_PHASE_MAX] = {
		[ENGINE_PHASE_PREPARE] = "prepare", [ENGINE_PHASE_FREEZE] = "freeze",
		[ENGINE_PHASE_WRITE] = "write",
		[ENGINE_PHASE_COMMIT] = "commit",   [ENGINE_PHASE_READ] = "read",
		[ENGINE_PHASE_RESTORE] = "restore", [ENGINE_PHASE_WAIT] = "wait",
		[ENGINE_PHASE_PRECOPY] = "pre-copy", [ENGINE_PHASE_RESUMED] = "resumed",
	};
	return p < _ENGINE_PHASE_MAX ? names[p] : "?";
}

static void progress(const struct engine_dump_opts *o, enum engine_phase ph, uint64_t done, uint64_t total)
{
	if (o && o->progress) {
		struct engine_progress p = { .phase = ph, .done = done, .total = total };
		o->progress(&p, o->ud);
	}
}

/* POSIX locks on a file the process maps: refused (fds-lock.c). */
static int check_mapped_locks(const struct proc_image *img, struct fd_image *fds)
{
	_cleanup_free_ uint64_t *dev = calloc(img->nvmas + 1, sizeof(*dev));
	_cleanup_free_ uint64_t *ino = calloc(img->nvmas + 1, sizeof(*ino));
	size_t n = 0;
	if (!dev || !ino)
		return -ENOMEM;
	for (size_t i = 0; i < img->nvmas; i++)
		if (img->vmas[i].kind == VMA_FILE_PRIVATE || img->vmas[i].kind == VMA_FILE_SHARED) {
			dev[n] = makedev(img->vmas[i].dev_major, img->vmas[i].dev_minor);
			ino[n++] = img->vmas[i].ino;
		}
	return fds_check_mapped_locks(fds, dev, ino, n);
}

/* Step 1: everything that needs the process stopped. The keeper has
 * stopped every thread and captures the tracer's part meanwhile; /proc
 * state, descriptors and memory we read ourselves. */
static int take_view(pid_t pid, struct keeper *k, struct proc_image *img, struct fd_image **fds, bool own_fds,
		     bool lock, bool copy, struct copy_arena *arena, struct shm_table *shm, const struct hbm_ranges *hbm,
		     struct precopy *pc, uint64_t *bytes)
{
	int r;

	/* first: until it is read, the keeper may be blocked sending it */
	uint64_t t1 = now_ns();
	r = keeper_recv_view(k, img);
	if (r < 0)
		return r;
	uint64_t t2 = now_ns();
	r = process_capture_proc(pid, img);
	if (r < 0)
		return r;
	/* the same kernel's vDSO as ours: a restore compares it with its own */
	if (vdso_hash())
		snprintf(img->vdso, sizeof(img->vdso), "%s", vdso_hash());

	if (fault_hit(FAULT_ENGINE_FDS))
		return err_set(-EIO, "pid %d: capturing descriptors: injected fault", pid);
	/* a table shared with an earlier process of the tree is in its
	 * image; this one's own is empty */
	/* its TCP connections under the network lock only when it is to be
	 * killed: one that runs on (or stays stopped) keeps them */
	if (own_fds)
		r = lock ? fds_capture(pid, fds) : fds_capture_running(pid, fds);
	else
		r = (*fds = fds_image_new()) ? 0 : -ENOMEM;
	if (r < 0)
		return r;
	/* its TCP connections are in repair mode and locked: should we die
	 * before we let them go, the keeper does */
	{
		_cleanup_free_ int *tfds = NULL;
		_cleanup_free_ struct netlock_conn *conns = NULL;
		size_t n;
		r = fds_held(*fds, &tfds, &conns, &n);
		if (r >= 0)
			r = keeper_tcp_hold(k, tfds, conns, n);
		if (r < 0)
			return r;
		if (n && fault_hit(FAULT_ENGINE_DIE_TCP))
			raise(SIGKILL);
	}
	r = memory_capture(pid, img, copy, arena, shm, hbm, pc, bytes);
	if (r >= 0)
		r = check_mapped_locks(img, *fds);
	log_debug("pid %d: tracer's view received after %" PRIu64 " us, memory copy %" PRIu64 " us", pid,
		  (t2 - t1) / 1000, (now_ns() - t2) / 1000);
	return r;
}

static int write_image(struct store_snap *w, const struct proc_image *img, struct fd_image *fds,
		       const struct engine_dump_opts *o)
{
	_cleanup_free_ char *proc = process_format(img);
	int r;
	if (!proc)
		return -ENOMEM;
	r = store_snap_put(w, "process", proc, strlen(proc));
	if (r < 0)
		return r;
	for (size_t i = 0; i < img->nthreads; i++) {
		_cleanup_free_ char *t = thread_format(&img->threads[i]);
		char name[32];
		if (!t)
			return -ENOMEM;
		snprintf(name, sizeof(name), "regs/%d", img->threads[i].tid);
		r = store_snap_put(w, name, t, strlen(t));
		if (r < 0)
			return r;
	}
	r = seccomp_write(w, img);
	if (r < 0)
		return r;
	r = fds_write(fds, w);
	if (r < 0)
		return r;
	return memory_write(w, img, img->pid, o);
}

/* How far a dump has taken the process's CUDA state. */
enum gpu_hold {
	GPU_HOLD_NONE,         /* not a CUDA process, or given back */
	GPU_HOLD_LOCKED,       /* cuCheckpointProcessLock done */
	GPU_HOLD_CHECKPOINTED, /* device memory moved into host memory */
};

/* Ranges of plain private anonymous areas in after (no name: not [heap]
 * or [stack], which grow by themselves meanwhile; not PROT_NONE: driver
 * 580 keeps the device's addresses reserved so, holding nothing) that no
 * private anonymous area covered in before (unmapped then, or a device's
 * mapping): what the checkpoint step made, page-aligned, one piece per
 * area of after. */
static int hbm_diff(const struct vma *before, size_t nb, const struct vma *after, size_t na, struct hbm_ranges *ret)
{
	for (size_t i = 0; i < na; i++) {
		if (after[i].kind != VMA_ANON || after[i].shared || after[i].path[0] || !after[i].prot)
			continue;
		uint64_t s = after[i].start, e = after[i].end;
		while (s < e) {
			/* the next part of [s, e) covered before, if any */
			uint64_t cs = e, ce = e;
			for (size_t k = 0; k < nb; k++)
				if (before[k].kind == VMA_ANON && !before[k].shared && before[k].end > s &&
				    before[k].start < cs) {
					cs = MAX(before[k].start, s);
					ce = MIN(before[k].end, e);
				}
			if (cs > s) {
				void *nv = realloc(ret->v, (ret->n + 1) * sizeof(*ret->v));
				if (!nv)
					return -ENOMEM;
				ret->v = nv;
				ret->v[ret->n][0] = s;
				ret->v[ret->n][1] = cs;
				ret->n++;
			}
			s = ce;
		}
	}
	return 0;
}

/* True when pid has an NVIDIA device file mapped or open: a GPU process. */
static bool uses_nvidia(pid_t pid)
{
	char p[64];
	_cleanup_free_ char *maps = NULL;
	snprintf(p, sizeof(p), "/proc/%d/maps", pid);
	return read_file_full(p, &maps, NULL) >= 0 && strstr(maps, "/dev/nvidia");
}

/* Gives the GPU back to a process that is not frozen (the driver's
 * thread inside it does the work): CHECKPOINTED -> LOCKED -> RUNNING;
 * then its keeper, which guarded it meanwhile, may end. */
static int gpu_give_back(pid_t pid, enum gpu_hold *hold, struct keeper *k)
{
	int r = 0;
	if (*hold != GPU_HOLD_NONE) {
		r = gpu_release(pid);
		if (r < 0) {
			char why[512];
			snprintf(why, sizeof(why), "%s", err_msg());
			r = err_set(r, "pid %d: giving its GPU back failed: %s", pid, why);
		}
	}
	*hold = GPU_HOLD_NONE;
	keeper_gpu_done(k);
	return r;
}

/* Before any thread is seized: a CUDA process is locked and checkpointed
 * on the GPU, its keeper k (started, not yet seizing) guarding it should
 * we die. Not a CUDA process, or no driver here and no NVIDIA device in
 * the process: nothing to do. On failure the process is RUNNING on the
 * GPU as it was. */
static int gpu_take(pid_t pid, const struct engine_dump_opts *o, bool stopped, struct keeper *k,
		    enum gpu_hold *hold, bool *used, struct hbm_ranges *hbm)
{
	enum gpu_state st;
	struct vma *before = NULL, *after = NULL;
	size_t nb = 0, na = 0;
	int r;

	*hold = GPU_HOLD_NONE;
	*used = false;
	r = gpu_probe();
	if (r < 0) {
		if (uses_nvidia(pid)) {
			char why[512];
			snprintf(why, sizeof(why), "%s", err_msg());
			return err_set(-EOPNOTSUPP,
				       "pid %d uses an NVIDIA GPU, but the CUDA checkpoint API cannot be used here: %s",
				       pid, why);
		}
		err_clear(); /* not our failure: no later one should read it */
		return 0;
	}
	/* the driver's thread in it can neither lock nor answer while it is
	 * stopped */
	if (stopped && uses_nvidia(pid))
		return err_set(-EBUSY, "pid %d is stopped (SIGSTOP): a CUDA process must run to be locked", pid);
	r = gpu_get_state(pid, &st);
	if (r == -ESRCH) {
		err_clear();
		return 0; /* no CUDA context in it */
	}
	if (r < 0)
		return r;
	if (st != GPU_STATE_RUNNING)
		return err_set(-EBUSY, "pid %d: its CUDA state is %s, not running (another checkpoint?)", pid,
			       gpu_state_name(st));
	if (stopped)
		return err_set(-EBUSY, "pid %d is stopped (SIGSTOP): a CUDA process must run to be locked", pid);
	*used = true;
	/* the maps before and after the checkpoint step tell where it put
	 * device memory */
	r = maps_read(pid, &before, &nb);
	if (r < 0)
		return r;
	r = keeper_gpu_hold(k);
	if (r < 0)
		goto out;
	r = gpu_lock(pid, o && o->gpu_lock_timeout_ms ? o->gpu_lock_timeout_ms : 10000);
	if (r < 0) {
		/* a lock that failed half-way would leave it locked */
		char why[512];
		snprintf(why, sizeof(why), "%s", err_msg());
		*hold = GPU_HOLD_LOCKED;
		gpu_give_back(pid, hold, k);
		r = err_set(r, "%s", why);
		goto out;
	}
	*hold = GPU_HOLD_LOCKED;
	if (fault_hit(FAULT_GPU_DIE_LOCKED))
		raise(SIGKILL);
	r = gpu_checkpoint(pid);
	if (r < 0) {
		/* it may have got as far as CHECKPOINTED: gpu_release asks */
		char why[512];
		snprintf(why, sizeof(why), "%s", err_msg());
		gpu_give_back(pid, hold, k);
		r = err_set(r, "%s", why);
		goto out;
	}
	*hold = GPU_HOLD_CHECKPOINTED;
	if (fault_hit(FAULT_GPU_DIE_CHECKPOINTED))
		raise(SIGKILL);
	r = maps_read(pid, &after, &na);
	if (r >= 0)
		r = hbm_diff(before, nb, after, na, hbm);
out:
	vmas_free(before, nb);
	vmas_free(after, na);
	return r;
}

/* gpu/info: the state the image holds, the machine it came from, and
 * where device memory is: an hbm line for each area the checkpoint step
 * made (memory_capture split them out and marked them), naming its
 * gpu/hbm/ file. Its bytes are there alone, not also in memory/
 * (docs/FORMAT.md). */
static int gpu_write_info(struct store_snap *w, pid_t pid, const struct proc_image *img)
{
	_cleanup_free_ char *dev = NULL, *text = NULL;
	size_t len = 0;
	int r = gpu_describe(&dev);
	if (r < 0)
		log_debug("pid %d: no GPU description: %s", pid, err_msg());
	FILE *f = open_memstream(&text, &len);
	if (!f)
		return -ENOMEM;
	fprintf(f, "state_at_dump: running\nstate_in_image: checkpointed\n%s", dev ? dev : "");
	for (size_t i = 0; i < img->nvmas; i++) {
		const struct vma *v = &img->vmas[i];
		char name[VMA_FILE_NAME_MAX];
		if (!v->hbm)
			continue;
		vma_file_name(v, name, sizeof(name));
		fprintf(f, "hbm: %016" PRIx64 "-%016" PRIx64 " %" PRIu64, v->start, v->end, v->end - v->start);
		if (v->saved) /* else every page was zero: nothing saved */
			fprintf(f, " %s 0\n", name);
		else
			fprintf(f, " - 0\n");
	}
	if (fclose(f) != 0 || !text)
		return -ENOMEM;
	return store_snap_put(w, "gpu/info", text, len);
}

/* One process of the tree being dumped. */
struct pdump {
	struct proc_image img;
	struct fd_image *fds;
	struct keeper k;
	enum gpu_hold gpu;
	bool gpu_used;
	struct hbm_ranges hbm; /* where the checkpoint step put device memory */
	bool checked; /* process_check and fds_check passed */
	bool fds_later; /* a GPU process: fds_check after the checkpoint step */
	bool gone;    /* reaped by its parent after we first saw it: not in the snapshot */
	uint64_t bytes;
	struct precopy *pc; /* its memory pre-copied, tracked until the thaw */
};

/* Adds pid to the tree (and its slot in *p); NULL on ENOMEM. */
static struct tree_node *tree_grow(struct tree *t, struct pdump **p, pid_t pid)
{
	struct pdump *np = realloc(*p, (t->n + 1) * sizeof(**p));
	if (!np)
		return NULL;
	*p = np;
	memset(&np[t->n], 0, sizeof(np[t->n]));
	np[t->n].k.fd = -1;
	return tree_add(t, pid);
}

/* What a dump refuses, read from /proc while the process still runs
 * untouched; and whether it is stopped, read before we seize it (a traced
 * stop shows as 't' afterwards). */
static int check_one(pid_t pid, struct pdump *d)
{
	int r = process_check(pid);
	if (r < 0)
		return r;
	/* A GPU process holds the driver's device files open (/dev/nvidiactl,
	 * /dev/nvidia0: character devices) until the checkpoint step closes
	 * them (driver 580.159.04): its descriptors are checked after that
	 * step, still before the freeze (check_fds_later). */
	d->fds_later = uses_nvidia(pid);
	if (!d->fds_later) {
		r = fds_check(pid);
		if (r < 0)
			return r;
	}
	uint64_t f[PROC_STAT_FIELDS];
	if (proc_stat_read(pid, 0, f) >= 3)
		d->img.stopped = f[3] == 'T';
	d->checked = true;
	return 0;
}

/* Adds the children of t->v[i] that t lacks, and marks gone those it
 * lists that are no longer children (reaped meanwhile). */
static int add_children(struct tree *t, struct pdump **p, size_t i)
{
	_cleanup_free_ pid_t *ch = NULL;
	size_t n;
	pid_t parent = t->v[i].pid;
	int r = tree_children(parent, &ch, &n);
	if (r < 0)
		return r;
	for (size_t j = i + 1; j < t->n; j++) {
		bool still = false;
		for (size_t c = 0; c < n && !still; c++)
			still = ch[c] == t->v[j].pid;
		if (t->v[j].ppid == parent && !still)
			(*p)[j].gone = true;
	}
	for (size_t c = 0; c < n; c++) {
		if (tree_find(t, ch[c]) >= 0)
			continue;
		struct tree_node node;
		r = tree_node_read(ch[c], &node);
		if (r == -ESRCH)
			continue; /* reaped already */
		if (r < 0)
			return r;
		struct tree_node *x = tree_grow(t, p, ch[c]);
		if (!x)
			return -ENOMEM;
		*x = node;
	}
	return 0;
}

/* What only threads may share, shared by processes of the tree: refused;
 * who shares a descriptor table or filesystem context: noted in t. */
static int check_sharing(struct tree *t, const struct pdump *p)
{
	_cleanup_free_ bool *skip = calloc(t->n, sizeof(*skip));
	if (!skip)
		return -ENOMEM;
	for (size_t i = 0; i < t->n; i++)
		skip[i] = p[i].gone;
	return tree_check_sharing(t, skip);
}

/* Descriptions that several processes of the tree use, and pipes between
 * them, move into *shared (stored once, in shared/fds), and each process
 * names them (fds-share.c). */
static int share_fds(const struct tree *t, struct pdump *p, struct fd_image **shared)
{
	_cleanup_free_ struct fd_image **imgs = calloc(t->n, sizeof(*imgs));
	_cleanup_free_ pid_t *pids = calloc(t->n, sizeof(*pids));
	size_t n = 0;
	if (!imgs || !pids)
		return -ENOMEM;
	for (size_t i = 0; i < t->n; i++) {
		if (t->v[i].zombie || p[i].gone)
			continue;
		imgs[n] = p[i].fds;
		pids[n++] = t->v[i].pid;
	}
	return fds_share(imgs, pids, n, shared);
}

/* The pids of the tree's processes still there (zombies too with
 * zombies) into a new array *ret; their number, or -ENOMEM. */
/* Whether process i of the tree is one tree_pids() lists. */
static bool tree_listed(const struct tree *t, const struct pdump *p, bool zombies, size_t i)
{
	return (zombies || !t->v[i].zombie) && !p[i].gone;
}

static ssize_t tree_pids(const struct tree *t, const struct pdump *p, bool zombies, pid_t **ret)
{
	size_t n = 0;
	*ret = calloc(t->n, sizeof(**ret));
	if (!*ret)
		return -ENOMEM;
	for (size_t i = 0; i < t->n; i++)
		if (tree_listed(t, p, zombies, i))
			(*ret)[n++] = t->v[i].pid;
	return (ssize_t)n;
}

/* What no process's fds_check() can tell alone: the other end of a socket
 * pair, an O_ASYNC owner, in another process of the tree. */
static int check_fds_tree(const struct tree *t, const struct pdump *p)
{
	_cleanup_free_ pid_t *pids = NULL;
	ssize_t n = tree_pids(t, p, false, &pids);
	return n < 0 ? (int)n : fds_check_tree(pids, n);
}

/* Whether a process of the tree has its descriptors checked after the
 * GPU checkpoint step. */
static bool any_fds_later(const struct tree *t, const struct pdump *p)
{
	for (size_t i = 0; i < t->n; i++)
		if (!t->v[i].zombie && !p[i].gone && p[i].fds_later)
			return true;
	return false;
}

/* Once every GPU process is checkpointed on its GPU (the driver closed
 * its device files), the descriptor checks left for them: their own, and
 * the tree's, which needs every table. Still before the freeze: a refusal
 * gives the GPU back and leaves them running. */
static int check_fds_later(const struct tree *t, const struct pdump *p)
{
	if (!any_fds_later(t, p))
		return 0;
	for (size_t i = 0; i < t->n; i++) {
		if (t->v[i].zombie || p[i].gone || !p[i].fds_later)
			continue;
		int r = fds_check(t->v[i].pid);
		/* one that maps the device without CUDA (GetState said so)
		 * had no step: its refusal as any process's */
		if (r < 0 && !p[i].gpu_used)
			return r;
		if (r < 0) {
			char why[512];
			snprintf(why, sizeof(why), "%s", err_msg());
			return err_set(r, "pid %d, after its GPU checkpoint step: %s", t->v[i].pid, why);
		}
	}
	return check_fds_tree(t, p);
}

/* The SysV objects the tree uses (ipc.c): its processes, zombies too,
 * may be the last to have used one. */
static int capture_ipc(const struct tree *t, const struct pdump *p, const struct shm_table *shm,
		       struct ipc_image *ipc)
{
	_cleanup_free_ pid_t *pids = NULL;
	ssize_t n = tree_pids(t, p, true, &pids);
	return n < 0 ? (int)n : ipc_capture(shm, pids, n, ipc);
}

/* Rounds of pre-copy before the view. */
#define PRECOPY_MAX_ROUNDS 8
/* Rounds that stopped shrinking the work (a process writing about as fast
 * as a round goes) still end in the freeze when what they leave is at most
 * this share of what was tracked: the freeze copies it, at most a 32nd of
 * a stop-and-copy's copy. At 4 GiB writing a tenth of it a second, rounds
 * of 13-20 ms leave 5-8 MiB each time, never the 4 MiB of convergence. */
#define PRECOPY_STALL_SHARE 32

/* Pre-copies the memory of every process of the tree while they run:
 * round after round until one leaves little for the freeze. Returns
 * true when that happened; else (tracking unavailable, a failure, a
 * process that writes faster than we copy) every process's tracking is
 * removed, and mode says why the dump copies everything while frozen. */
static bool precopy_tree(const struct tree *t, struct pdump *p, const struct engine_dump_opts *o,
			 struct precopy **kept, bool *resumed, char *dropped, size_t droppedlen, char *mode,
			 size_t modelen, unsigned *ret_rounds, uint64_t *ret_bytes)
{
	uint64_t tracked = 0, prev = UINT64_MAX, dirty = 0, copied = 0;
	unsigned round = 0;
	size_t live = 0;
	bool converged = false, diverge = false, stalled = false;
	char why[256] = "";

	/* the tracking kept from the last checkpoint, where it still holds:
	 * its first round copies what was written since */
	*resumed = false;
	if (*kept) {
		int r = t->n == 1 && !p[0].img.stopped ? precopy_resume(*kept, t->v[0].pid)
						       : err_set(-ESTALE, "pid %d: now a tree of processes, or stopped",
								 t->v[0].pid);
		if (r >= 0) {
			p[0].pc = *kept;
			*kept = NULL;
			*resumed = true;
			live = 1;
		} else {
			snprintf(dropped, droppedlen, "%s", err_msg());
			err_clear();
			/* its registration removed before the areas are registered
			 * again; its mirrors serve again where an area is unchanged */
			precopy_untrack_wait(*kept);
		}
	}
fresh:
	for (size_t i = 0; i < t->n && !*resumed; i++) {
		/* a stopped process writes nothing meanwhile */
		if (t->v[i].zombie || p[i].gone || p[i].img.stopped)
			continue;
		int r = precopy_start(t->v[i].pid, &p[i].k, i == 0 ? *kept : NULL, &p[i].pc);
		if (i == 0 && *kept) {
			precopy_free(*kept);
			*kept = NULL;
		}
		if (r == -ENOENT) { /* nothing big enough in it: copied while frozen */
			err_clear();
			continue;
		}
		if (r < 0) {
			snprintf(why, sizeof(why), "%s", err_msg());
			err_clear();
			goto fallback;
		}
		live++;
	}
	if (!live) {
		snprintf(why, sizeof(why), "no private anonymous area of 1 MiB or more, mostly populated, to pre-copy");
		goto fallback;
	}
	while (!converged && round < PRECOPY_MAX_ROUNDS) {
		round++;
		dirty = 0;
		for (size_t i = 0; i < t->n; i++) {
			if (!p[i].pc)
				continue;
			int r = precopy_round(p[i].pc);
			if (r >= 0 && *resumed && round == 1 && fault_hit(FAULT_ENGINE_TRACK_ROUND))
				r = err_set(-EIO, "pid %d: the first round from the kept tracking: injected fault",
					    t->v[i].pid);
			if (r < 0 && *resumed && round == 1) {
				/* the kept tracking did not hold (an area mapped
				 * again in place is no longer registered): the full
				 * path, from a fresh registration */
				snprintf(dropped, droppedlen, "%s", err_msg());
				err_clear();
				precopy_untrack_wait(p[i].pc);
				*kept = p[i].pc;
				p[i].pc = NULL;
				*resumed = false;
				live = 0;
				round = 0;
				copied = 0;
				prev = UINT64_MAX;
				goto fresh;
			}
			if (r < 0) {
				snprintf(why, sizeof(why), "pre-copy round %u: %s", round, err_msg());
				err_clear();
				goto fallback;
			}
			dirty += precopy_dirty(p[i].pc);
		}
		copied += dirty;
		if (round == 1)
			tracked = dirty;
		if (o && o->progress) {
			struct engine_progress pr = { .phase = ENGINE_PHASE_PRECOPY, .done = dirty,
						      .total = round == 1 ? dirty : tracked, .round = round };
			o->progress(&pr, o->ud);
		}
		if (round == 2 && fault_hit(FAULT_ENGINE_DIE_PRECOPY))
			raise(SIGKILL);
		/* a process that writes faster than we copy, made up: one
		 * thread here cannot outwrite the copy */
		if (fault_hit(FAULT_ENGINE_PRECOPY_DIVERGE)) {
			dirty = MAX(dirty, prev == UINT64_MAX ? dirty : prev);
			diverge = true;
		}
		/* kept tracking: the first round was already of what was written since */
		converged = (round > 1 || *resumed) && precopy_done(dirty);
		/* a round that no longer shrinks the work: it writes as fast as we copy */
		if (!converged && round >= 3 && dirty > prev / 10 * 9)
			break;
		prev = dirty;
	}
	uint64_t whole = 0;
	for (size_t i = 0; i < t->n; i++)
		whole += precopy_tracked(p[i].pc);
	if (!converged && !diverge && round >= 3 && dirty <= whole / PRECOPY_STALL_SHARE)
		converged = stalled = true;
	if (!converged) {
		snprintf(why, sizeof(why),
			 "pre-copy did not converge (%u rounds, %" PRIu64 " MiB written during the last)", round,
			 dirty >> 20);
		goto fallback;
	}
	for (size_t i = 0; i < t->n; i++)
		if (p[i].pc)
			precopy_read_smaps(p[i].pc);
	if (fault_hit(FAULT_ENGINE_PRECOPY_LATE))
		usleep(300000);
	char left[64] = "";
	if (stalled)
		snprintf(left, sizeof(left), ", %" PRIu64 " MiB left to the freeze", (dirty + (1 << 20) - 1) >> 20);
	if (*dropped)
		snprintf(mode, modelen, "pre-copy, %u rounds%s (incremental tracking dropped: %s)", round, left, dropped);
	else
		snprintf(mode, modelen, "pre-copy, %u rounds%s", round, left);
	*ret_rounds = round;
	*ret_bytes = copied;
	return true;
fallback:
	for (size_t i = 0; i < t->n; i++) {
		precopy_free(p[i].pc);
		p[i].pc = NULL;
	}
	*resumed = false;
	snprintf(mode, modelen, "stop-and-copy: %s", why);
	log_info("pid %d: %s", t->v[0].pid, mode);
	*ret_rounds = round;
	*ret_bytes = 0;
	return false;
}

/* Writes process i's files into directory "<pid>/" of w. */
static int write_process(struct store_snap *w, pid_t pid, struct pdump *d, const struct engine_dump_opts *o)
{
	struct store_snap *v;
	char dir[16];
	snprintf(dir, sizeof(dir), "%d", pid);
	int r = store_snap_at(w, dir, &v);
	if (r < 0)
		return r;
	r = write_image(v, &d->img, d->fds, o);
	if (r >= 0 && d->gpu_used)
		r = gpu_write_info(v, pid, &d->img);
	store_snap_close(v);
	return r;
}

/* fds_release() of every image of the tree; the first error. */
static int release_fds(const struct tree *t, struct pdump *p, struct fd_image *shared, bool killed)
{
	int r = fds_release(shared, killed);

	for (size_t i = 0; i < t->n; i++) {
		int q = fds_release(p[i].fds, killed);
		if (q < 0 && r >= 0)
			r = q;
	}
	return r;
}

int engine_dump(pid_t pid, struct store_snap *w, const struct engine_dump_opts *o)
{
	struct tree t = { 0 };
	struct pdump *p = NULL;
	struct fd_image *shared = NULL;
	struct shm_table shm = { 0 };
	struct ipc_image ipc = { 0 };
	struct copy_arena arena = { 0 }; /* the tree's copy, carved from one reservation */
	enum engine_after after = o ? o->after : ENGINE_AFTER_RUN;
	uint64_t t0 = now_ns(), tf0 = 0, tf1 = 0, bytes = 0, pre_bytes = 0;
	bool copy = after == ENGINE_AFTER_RUN, precopied = false, resumed = false, keep = false;
	unsigned rounds = 0;
	char mode[400], dropped[256] = "";
	/* the tracking kept from the last dump: ours now, whatever happens */
	struct precopy *kept = o && o->track ? track_unwrap(*o->track) : NULL;
	int r;

	if (o && o->track)
		*o->track = NULL;

	if (pid == getpid()) {
		r = err_set(-EINVAL, "pid %d: cannot checkpoint ourselves", pid);
		goto out;
	}
	/* 1. The tree as it is, each process checked, before anything is
	 * touched: what a dump refuses is refused here, naming it. */
	struct tree_node *root = tree_grow(&t, &p, pid);
	if (!root) {
		r = -ENOMEM;
		goto out;
	}
	r = tree_node_read(pid, root);
	if (r < 0)
		goto out;
	if (root->zombie) {
		r = err_set(-ESRCH, "pid %d has exited (a zombie)", pid);
		goto out;
	}
	for (size_t i = 0; i < t.n; i++) {
		if (t.v[i].zombie)
			continue;
		r = check_one(t.v[i].pid, &p[i]);
		if (r >= 0)
			r = add_children(&t, &p, i);
		if ((r == -ESRCH || r == -ENOENT) && i > 0) {
			p[i].gone = true; /* ended and reaped meanwhile */
			err_clear();
			continue;
		}
		if (r < 0)
			goto out;
	}
	r = tree_check(&t);
	if (r >= 0)
		r = check_sharing(&t, p);
	/* with a GPU process, once its device files are closed */
	if (r >= 0 && !any_fds_later(&t, p))
		r = check_fds_tree(&t, p);
	if (r < 0)
		goto out;

	progress(o, ENGINE_PHASE_PREPARE, 0, 0);
	/* every keeper forked and executed now, while the tree runs: each
	 * seizes its process on our word. The keepers trace them, not us:
	 * should we die from here on, each puts its process back and lets
	 * go, and gives back a GPU we took (keeper.c). */
	for (size_t i = 0; i < t.n; i++) {
		if (t.v[i].zombie || p[i].gone)
			continue;
		r = keeper_start(t.v[i].pid, &p[i].k);
		if (r < 0)
			goto out;
	}
	/* before the seize: a CUDA process's driver thread must run meanwhile,
	 * and the copy's memory is faulted in while the processes run */
	for (size_t i = 0; i < t.n; i++) {
		if (t.v[i].zombie || p[i].gone)
			continue;
		r = gpu_take(t.v[i].pid, o, p[i].img.stopped, &p[i].k, &p[i].gpu, &p[i].gpu_used, &p[i].hbm);
		if (r < 0)
			goto out;
	}
	r = check_fds_later(&t, p);
	if (r < 0)
		goto out;
	/* pre-copy (after the GPU's checkpoint step, which writes host
	 * memory); --kill and --stop keep them frozen until the commit
	 * anyway, and stream memory straight to the store */
	if (!copy)
		snprintf(mode, sizeof(mode), "stop-and-copy: the processes stay frozen until the snapshot is durable");
	else if (o && o->no_precopy)
		snprintf(mode, sizeof(mode), "stop-and-copy: pre-copy turned off");
	else
		precopied = precopy_tree(&t, p, o, &kept, &resumed, dropped, sizeof(dropped), mode, sizeof(mode),
					 &rounds, &pre_bytes);
	if (copy) {
		_cleanup_free_ pid_t *pids = NULL;
		_cleanup_free_ uint64_t *known = calloc(t.n, sizeof(*known));
		ssize_t np = tree_pids(&t, p, false, &pids);
		/* a pre-copied process's tracked areas are in its mirrors: the
		 * rest from the smaps read once it converged, not from another
		 * walk of every page table entry (smaps_rollup: 20-40 ms at 4
		 * GiB, while it writes on) */
		for (size_t j = 0, k = 0; known && j < t.n; j++)
			if (tree_listed(&t, p, false, j))
				known[k++] = precopy_frozen_bytes(p[j].pc);
		if (np >= 0 && known)
			copy_arena_reserve(pids, np, known, &arena);
	}

	/* 2. Freeze, parents first: once a process is stopped its children
	 * are the ones it will have, so each is listed once its parent is
	 * frozen. */
	progress(o, ENGINE_PHASE_FREEZE, 0, 0);
	for (size_t i = 0; i < t.n; i++) {
		if (p[i].gone)
			continue;
		if (!t.v[i].zombie) {
			if (!p[i].checked) {
				/* born after the first look: checked now, untouched */
				r = check_one(t.v[i].pid, &p[i]);
				if (r >= 0 && uses_nvidia(t.v[i].pid))
					r = err_set(-EBUSY, "pid %d, a GPU process, was started during the checkpoint",
						    t.v[i].pid);
				if (r < 0)
					goto out;
			}
			r = p[i].k.pid ? 0 : keeper_start(t.v[i].pid, &p[i].k);
			if (r >= 0)
				r = keeper_wait_seized(&p[i].k);
			if (r < 0) {
				/* it may have died before the seize: then it is a
				 * zombie of a frozen parent, or gone */
				struct tree_node now;
				char why[512];
				snprintf(why, sizeof(why), "%s", err_msg());
				keeper_finish(&p[i].k, KEEPER_THAW);
				if (i > 0 && tree_node_read(t.v[i].pid, &now) >= 0 && now.zombie &&
				    now.ppid == t.v[i].ppid) {
					t.v[i] = now;
					err_clear();
					continue;
				}
				r = err_set(r, "%s", why);
				goto out;
			}
		}
		if (!tf0)
			tf0 = now_ns();
		if (fault_hit(FAULT_ENGINE_DIE_SEIZED))
			raise(SIGKILL);
		if (t.v[i].zombie)
			continue;
		r = add_children(&t, &p, i);
		if (r < 0)
			goto out;
	}
	r = tree_check(&t);
	if (r >= 0)
		r = check_sharing(&t, p);
	if (r < 0)
		goto out;

	/* 3. Every process is frozen: now each is read. A copy in RAM only
	 * when they run again before the write. */
	for (size_t i = 0; i < t.n; i++) {
		if (t.v[i].zombie || p[i].gone)
			continue;
		r = take_view(t.v[i].pid, &p[i].k, &p[i].img, &p[i].fds, !t.v[i].files, after == ENGINE_AFTER_KILL,
			      copy, &arena, &shm, &p[i].hbm, p[i].pc, &p[i].bytes);
		if (r < 0)
			goto out;
		bytes += p[i].bytes;
	}
	copy_arena_release(&arena);
	if (shm.n > ENGINE_MAX_SHM) {
		r = err_set(-EOPNOTSUPP, "pid %d: its tree maps %zu shared memory objects, more than %u", pid, shm.n,
			    ENGINE_MAX_SHM);
		goto out;
	}
	/* while they are all frozen and alive: kcmp compares their tables */
	r = share_fds(&t, p, &shared);
	if (r >= 0)
		r = capture_ipc(&t, p, &shm, &ipc);
	if (r < 0)
		goto out;
	if (copy) {
		/* not one runs with a TCP connection in repair mode */
		r = release_fds(&t, p, shared, false);
		if (r < 0)
			goto out;
		/* they run again together */
		for (size_t i = 0; i < t.n; i++) {
			if (t.v[i].zombie || p[i].gone)
				continue;
			r = keeper_finish(&p[i].k, KEEPER_THAW);
			if (r < 0)
				goto out;
		}
		tf1 = now_ns();
		progress(o, ENGINE_PHASE_RESUMED, 0, 0);
		for (size_t i = 0; i < t.n; i++) {
			if (t.v[i].zombie || p[i].gone)
				continue;
			r = gpu_give_back(t.v[i].pid, &p[i].gpu, &p[i].k);
			if (r < 0)
				goto out;
		}
		/* one process pre-copied, asked to: its tracking stays for the
		 * next dump, which starts from what it writes meanwhile */
		keep = o && o->track && precopied && t.n == 1 && p[0].pc;
		if (keep && fault_hit(FAULT_ENGINE_TRACK_KEEP)) {
			log_info("pid %d: keeping the tracking: injected fault; removed", pid);
			keep = false;
		}
		/* running again: else the tracking goes, a piece at a time; the
		 * mirrors stay for the write */
		for (size_t i = 0; i < t.n && !keep; i++)
			precopy_untrack(p[i].pc);
		if (resumed)
			snprintf(mode, sizeof(mode), "incremental, %" PRIu64 " MiB read in %u rounds",
				 precopy_read_bytes(p[0].pc) >> 20, rounds);
	}

	/* 4. Write: the tree, then each process in its directory. */
	progress(o, ENGINE_PHASE_WRITE, 0, bytes);
	{
		struct tree live = { 0 };
		for (size_t i = 0; i < t.n; i++) {
			if (p[i].gone)
				continue;
			struct tree_node *x = tree_add(&live, t.v[i].pid);
			if (!x) {
				tree_free(&live);
				r = -ENOMEM;
				goto out;
			}
			*x = t.v[i];
		}
		_cleanup_free_ char *text = tree_format(&live);
		tree_free(&live);
		r = text ? store_snap_put(w, "tree", text, strlen(text)) : -ENOMEM;
		if (r < 0)
			goto out;
	}
	if (ipc.nshm || ipc.nsem || ipc.nmsq) {
		_cleanup_free_ char *text = ipc_format(&ipc);
		r = text ? store_snap_put(w, "ipc", text, strlen(text)) : -ENOMEM;
		if (r < 0)
			goto out;
	}
	for (size_t i = 0; i < t.n; i++) {
		if (t.v[i].zombie || p[i].gone)
			continue;
		r = write_process(w, t.v[i].pid, &p[i], o);
		if (r < 0)
			goto out;
	}
	if (fds_count(shared) > 0) {
		struct store_snap *v;
		r = store_snap_at(w, "shared", &v);
		if (r >= 0) {
			r = fds_write(shared, v);
			store_snap_close(v);
		}
		if (r < 0)
			goto out;
	}
	progress(o, ENGINE_PHASE_COMMIT, 0, 0);
	if (fault_hit(FAULT_ENGINE_COMMIT)) {
		r = err_set(-EIO, "pid %d: commit: injected fault", pid);
		goto out;
	}
	/* with --kill: dying here, before the snapshot is durable, must
	 * leave every process running */
	if (fault_hit(FAULT_ENGINE_DIE_COMMIT))
		raise(SIGKILL);
	r = store_snap_commit(w);
	if (r < 0)
		goto out;

	/* Durable: only now may the keepers kill or stop them, children
	 * first. Should we die before a word, its process runs on, and the
	 * snapshot is there too. */
	for (size_t k = t.n; k-- > 0 && after != ENGINE_AFTER_RUN;) {
		if (t.v[k].zombie || p[k].gone)
			continue;
		/* a killed process lets go of its GPU; a stopped CUDA process
		 * stays checkpointed on it: its driver thread cannot run in a
		 * group stop */
		r = keeper_finish(&p[k].k, after == ENGINE_AFTER_KILL ? KEEPER_KILL : KEEPER_STOP);
		p[k].gpu = GPU_HOLD_NONE;
		if (r < 0)
			goto out;
	}
	/* killed: their TCP connections close in repair mode, silently, and
	 * stay locked for the restore; stopped: they keep them, working */
	if (after != ENGINE_AFTER_RUN) {
		r = release_fds(&t, p, shared, after == ENGINE_AFTER_KILL);
		if (r < 0)
			goto out;
	}
	if (!tf1)
		tf1 = now_ns();
	if (keep && track_wrap(p[0].pc, o->track) >= 0)
		p[0].pc = NULL;
	size_t in_snapshot = 0;
	for (size_t i = 0; i < t.n; i++)
		in_snapshot += !p[i].gone;
	if (o && o->stats) {
		o->stats->frozen_ns = tf1 - tf0;
		o->stats->total_ns = now_ns() - t0;
		o->stats->memory_bytes = bytes;
		o->stats->processes = in_snapshot;
		o->stats->precopied = precopied;
		o->stats->precopy_rounds = rounds;
		o->stats->precopy_bytes = pre_bytes;
		snprintf(o->stats->memory_mode, sizeof(o->stats->memory_mode), "%s", mode);
	}
	log_debug("pid %d: dumped %zu processes, %" PRIu64 " bytes of memory, frozen %" PRIu64 " us, %s", pid,
		  in_snapshot, bytes, (tf1 - tf0) / 1000, mode);
	r = 0;
out:
	/* before any thaw: out of repair mode, unlocked (a no-op once done) */
	if (r < 0)
		release_fds(&t, p, shared, false);
	for (size_t i = 0; i < t.n; i++) {
		struct pdump *d = &p[i];
		/* the detail of the failure survives the keeper's ending */
		if (d->k.pid) {
			char why[512];
			snprintf(why, sizeof(why), "%s", err_msg());
			keeper_finish(&d->k, KEEPER_THAW);
			err_set(r, "%s", why);
		}
		/* thawed first: the driver's thread does the restore */
		if (d->gpu != GPU_HOLD_NONE) {
			char why[512];
			snprintf(why, sizeof(why), "%s", err_msg());
			if (gpu_give_back(t.v[i].pid, &d->gpu, &d->k) < 0) {
				char more[512];
				snprintf(more, sizeof(more), "%s", err_msg());
				err_set(r, "%s; and %s", why, more);
			} else {
				err_set(r, "%s", why);
			}
		}
		keeper_gpu_done(&d->k);
		precopy_free(d->pc);
		free(d->hbm.v);
		if (d->fds)
			fds_free(d->fds);
		proc_image_free(&d->img);
	}
	precopy_free(kept);
	if (shared)
		fds_free(shared);
	shm_table_free(&shm);
	ipc_image_free(&ipc);
	copy_arena_release(&arena);
	free(p);
	tree_free(&t);
	return r;
}
