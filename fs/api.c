/*
 * The REST API: HTTP on a Unix socket (libmicrohttpd, one thread per
 * connection), JSON in and out (jansson).
 *
 * Every request acts as the mount would for the same user: the caller is
 * the peer of the connection (SO_PEERCRED), and the checks are the ones
 * the FUSE operations make (access.c, snapview owners). A checkpoint runs
 * through ctl_checkpoint() on a job thread counted with ctl's own
 * (ctl_job_spawn), so that unmounting waits for it as for a ctl write.
 *
 * Resources (docs/API.md, docs/openapi.json):
 *   GET    /v1/processes
 *   POST   /v1/processes/{pid}/checkpoints   {"mode": "run"|"kill"|"stop"}
 *   GET    /v1/jobs/{id}[?wait=SECONDS]
 *   GET    /v1/snapshots
 *   GET    /v1/snapshots/{pid}/{n}
 *   DELETE /v1/snapshots/{pid}/{n}
 *   GET    /v1/openapi.json
 *   GET    /metrics
 * Errors are RFC 9457 problem documents.
 */
#include <inttypes.h>
#include <jansson.h>
#include <microhttpd.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "fs/fs-int.h"

/* Largest request body taken: the API's bodies are a few fields. */
#define API_BODY_MAX (64u * 1024)
/* Longest long-poll of a job (?wait=). */
#define API_WAIT_MAX_S 60
/* A connection that sends or takes nothing for this long is closed. */
#define API_IDLE_S 30
#define API_CONN_MAX 512
/* Finished jobs kept for GET /v1/jobs/{id}; the oldest go first. */
#define API_JOBS_KEPT 1024

extern const char api_openapi[];
extern const size_t api_openapi_len;

struct api_job {
	uint64_t id;
	pid_t pid;
	uid_t caller;
	enum engine_after after;
	bool done;          /* api->lock, and so are all below */
	int result;
	uint32_t snap;
	char error[512];
	int64_t created, finished;
	struct api_job *next;
};

struct api {
	struct fs *fs;
	struct MHD_Daemon *mhd;
	char *path;          /* the socket's, unlinked at stop */
	pthread_mutex_t lock;
	pthread_cond_t cond; /* a job ended, or quit */
	bool quit;
	struct api_job *jobs; /* newest first */
	size_t njobs;
	uint64_t next_id;
	uint64_t requests[6]; /* by status class: 1xx..5xx, [0] unused */
};

/* One request's state between the calls MHD makes for it. */
struct req {
	char *body;
	size_t len;
	bool too_big;
	bool cred_ok;
	uid_t uid;
	pid_t peer;
};

static const char *const mode_names[] = {
	[ENGINE_AFTER_RUN] = "run",
	[ENGINE_AFTER_KILL] = "kill",
	[ENGINE_AFTER_STOP] = "stop",
};

static void count(struct api *a, unsigned status)
{
	pthread_mutex_lock(&a->lock);
	if (status >= 100 && status < 600)
		a->requests[status / 100]++;
	pthread_mutex_unlock(&a->lock);
}

static enum MHD_Result send_buf(struct api *a, struct MHD_Connection *c, unsigned status, const char *type,
				char *buf, size_t len)
{
	struct MHD_Response *resp = MHD_create_response_from_buffer(len, buf, MHD_RESPMEM_MUST_FREE);
	enum MHD_Result r;

	if (!resp) {
		free(buf);
		return MHD_NO;
	}
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, type);
	r = MHD_queue_response(c, status, resp);
	MHD_destroy_response(resp);
	count(a, status);
	return r;
}

/* Sends j (reference taken over) as the body. */
static enum MHD_Result send_json(struct api *a, struct MHD_Connection *c, unsigned status, json_t *j)
{
	char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
	size_t len;

	json_decref(j);
	if (!s)
		return MHD_NO;
	len = strlen(s);
	/* a newline, so that curl's output ends its line */
	char *t = realloc(s, len + 2);
	if (!t) {
		free(s);
		return MHD_NO;
	}
	t[len] = '\n';
	t[len + 1] = 0;
	return send_buf(a, c, status, "application/json", t, len + 1);
}

static const char *status_title(unsigned status)
{
	switch (status) {
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 409: return "Conflict";
	case 413: return "Content Too Large";
	case 422: return "Unprocessable Content";
	case 503: return "Service Unavailable";
	default:  return "Internal Server Error";
	}
}

/* An RFC 9457 problem document. */
static enum MHD_Result __attribute__((format(printf, 4, 5)))
problem(struct api *a, struct MHD_Connection *c, unsigned status, const char *fmt, ...)
{
	char *detail = NULL, *s;
	va_list ap;
	json_t *j;

	va_start(ap, fmt);
	if (vasprintf(&detail, fmt, ap) < 0)
		detail = NULL;
	va_end(ap);
	j = json_pack("{s:s, s:s, s:i, s:s}", "type", "about:blank", "title", status_title(status), "status",
		      (int)status, "detail", detail ? detail : "");
	free(detail);
	s = j ? json_dumps(j, JSON_COMPACT) : NULL;
	json_decref(j);
	if (!s)
		return MHD_NO;
	size_t len = strlen(s);
	char *t = realloc(s, len + 2);
	if (!t) {
		free(s);
		return MHD_NO;
	}
	t[len] = '\n';
	t[len + 1] = 0;
	return send_buf(a, c, status, "application/problem+json", t, len + 1);
}

/* The HTTP status for an -errno from the daemon's own code. */
static unsigned errno_status(int r)
{
	switch (-r) {
	case EINVAL: return 400;
	case EPERM: case EACCES: return 403;
	case ENOENT: case ESRCH: return 404;
	case EBUSY: case EEXIST: return 409;
	case EFBIG: return 413;
	default: return 500;
	}
}

static enum MHD_Result problem_errno(struct api *a, struct MHD_Connection *c, int r, const char *what)
{
	const char *d = err_msg();
	return problem(a, c, errno_status(r), "%s: %s%s%s", what, strerror(-r), *d ? ": " : "", d);
}

/* A decimal number with nothing else, not above max. */
static bool parse_num(const char *s, uint64_t max, uint64_t *ret)
{
	if (!s || !*s || *s == '0' || strlen(s) > 20)
		return false;
	for (const char *p = s; *p; p++)
		if (*p < '0' || *p > '9')
			return false;
	return parse_u64(s, ret) >= 0 && *ret <= max;
}

/* ---- processes ----------------------------------------------------------- */

static int comm_of(pid_t pid, char *buf, size_t size)
{
	char path[64];
	_cleanup_close_ int fd = -1;
	ssize_t n;

	snprintf(path, sizeof(path), "/proc/%d/comm", pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return negerrno();
	n = pread_full(fd, buf, size - 1, 0);
	if (n < 0)
		return (int)n;
	buf[n] = 0;
	if (n && buf[n - 1] == '\n')
		buf[n - 1] = 0;
	return 0;
}

static json_t *process_json(struct fs *fs, pid_t pid, uid_t uid)
{
	enum engine_phase phase;
	uint64_t done, total;
	char comm[64] = "";
	json_t *j;

	comm_of(pid, comm, sizeof(comm));
	bool running = ctl_progress(fs, pid, &phase, &done, &total);
	j = json_pack("{s:i, s:i, s:s, s:s}", "pid", (int)pid, "uid", (int)uid, "comm", comm, "state",
		      running ? "checkpointing" : "idle");
	if (j && running)
		json_object_set_new(j, "phase", json_string(engine_phase_name(phase)));
	return j;
}

struct plist {
	struct fs *fs;
	json_t *arr;
};

static int add_process(pid_t pid, void *ud)
{
	struct plist *l = ud;
	uid_t uid = 0;

	/* access_foreach_pid checked it; the owner is read again here */
	if (!access_pid(l->fs, 0, pid, &uid))
		return 0;
	json_array_append_new(l->arr, process_json(l->fs, pid, uid));
	return 0;
}

static enum MHD_Result get_processes(struct api *a, struct MHD_Connection *c, struct req *q)
{
	struct plist l = { a->fs, json_array() };
	int r;

	if (!l.arr)
		return MHD_NO;
	r = access_foreach_pid(a->fs, q->uid, add_process, &l);
	if (r < 0) {
		json_decref(l.arr);
		return problem_errno(a, c, r, "listing processes");
	}
	return send_json(a, c, 200, json_pack("{s:o}", "processes", l.arr));
}

/* ---- jobs ------------------------------------------------------------------ */

static json_t *job_json(struct api_job *j)
{
	json_t *o = json_pack("{s:I, s:s, s:i, s:s, s:s, s:I}", "id", (json_int_t)j->id, "kind", "checkpoint",
			      "pid", (int)j->pid, "mode", mode_names[j->after], "state",
			      !j->done ? "running" : j->result < 0 ? "failed" : "done", "created",
			      (json_int_t)j->created);
	if (!o)
		return NULL;
	if (j->done) {
		json_object_set_new(o, "finished", json_integer(j->finished));
		if (j->result < 0) {
			json_object_set_new(o, "error", json_string(j->error));
		} else {
			char id[64];
			snprintf(id, sizeof(id), "%d/%" PRIu32, j->pid, j->snap);
			json_object_set_new(o, "snapshot", json_string(id));
		}
	}
	return o;
}

/* Adds the engine's progress of a running job (outside api->lock: it
 * takes fs->lock). */
static void job_progress(struct api *a, json_t *o, pid_t pid)
{
	enum engine_phase phase;
	uint64_t done, total;

	if (!ctl_progress(a->fs, pid, &phase, &done, &total))
		return;
	json_object_set_new(o, "phase", json_string(engine_phase_name(phase)));
	json_object_set_new(o, "bytes_done", json_integer((json_int_t)done));
	json_object_set_new(o, "bytes_total", json_integer((json_int_t)total));
}

struct job_arg {
	struct api *a;
	struct api_job *j;
};

static void *job_run(void *arg)
{
	struct job_arg *ja = arg;
	struct api *a = ja->a;
	struct api_job *j = ja->j;
	uint32_t n = 0;
	uid_t owner = 0;
	int r;

	free(ja);
	err_clear();
	/* as ctl_command() does for a `checkpoint` line */
	if (!access_pid(a->fs, j->caller, j->pid, &owner))
		r = err_set(kill(j->pid, 0) < 0 && errno == ESRCH ? -ESRCH : -EPERM,
			    "pid %d: no such process, or not yours", j->pid);
	else
		r = ctl_checkpoint(a->fs, j->pid, owner, j->after, false, &n);
	const char *d = err_msg();
	pthread_mutex_lock(&a->lock);
	j->done = true;
	j->result = r;
	j->snap = n;
	j->finished = time(NULL);
	if (r < 0)
		snprintf(j->error, sizeof(j->error), "%s%s%s", strerror(-r), *d ? ": " : "", d);
	pthread_cond_broadcast(&a->cond);
	pthread_mutex_unlock(&a->lock);
	ctl_job_end(a->fs);
	return NULL;
}

/* Drops the oldest finished jobs beyond API_JOBS_KEPT (a->lock held). */
static void jobs_trim_locked(struct api *a)
{
	struct api_job **pp = &a->jobs, *last_keep = NULL;
	size_t i = 0;

	if (a->njobs <= API_JOBS_KEPT)
		return;
	for (; *pp; i++) {
		struct api_job *j = *pp;
		if (i >= API_JOBS_KEPT && j->done) {
			*pp = j->next;
			free(j);
			a->njobs--;
			continue;
		}
		last_keep = j;
		pp = &j->next;
	}
	(void)last_keep;
}

static enum MHD_Result post_checkpoint(struct api *a, struct MHD_Connection *c, struct req *q, pid_t pid)
{
	enum engine_after after = ENGINE_AFTER_RUN;
	json_error_t jerr;
	json_t *body = NULL;
	struct api_job *j;
	struct job_arg *ja;
	uid_t owner;
	int r;

	if (q->too_big)
		return problem(a, c, 413, "request body larger than %u bytes", API_BODY_MAX);
	if (q->len) {
		body = json_loadb(q->body, q->len, JSON_REJECT_DUPLICATES, &jerr);
		if (!body)
			return problem(a, c, 400, "body: not JSON: %s (line %d, column %d)", jerr.text, jerr.line,
				       jerr.column);
		if (!json_is_object(body)) {
			json_decref(body);
			return problem(a, c, 400, "body: a JSON object expected");
		}
		const char *k;
		json_t *v;
		json_object_foreach(body, k, v) {
			if (strcmp(k, "mode")) {
				enum MHD_Result res = problem(a, c, 400, "body: unknown field '%s' (known: mode)", k);
				json_decref(body);
				return res;
			}
			const char *m = json_string_value(v);
			if (m && !strcmp(m, "run"))
				after = ENGINE_AFTER_RUN;
			else if (m && !strcmp(m, "kill"))
				after = ENGINE_AFTER_KILL;
			else if (m && !strcmp(m, "stop"))
				after = ENGINE_AFTER_STOP;
			else {
				json_decref(body);
				return problem(a, c, 400, "body: mode must be \"run\", \"kill\" or \"stop\"");
			}
		}
		json_decref(body);
	}
	if (!access_pid(a->fs, q->uid, pid, &owner)) {
		if (kill(pid, 0) < 0 && errno == ESRCH)
			return problem(a, c, 404, "pid %d: no such process", pid);
		return problem(a, c, 403, "pid %d: not yours", pid);
	}
	/* ctl refuses a second checkpoint of one pid; so does this, before
	 * making a job for it. One that starts meanwhile makes the job fail
	 * with EBUSY, as a second ctl write would. */
	if (ctl_progress(a->fs, pid, NULL, NULL, NULL))
		return problem(a, c, 409, "pid %d: a checkpoint is already running", pid);
	if (fault_hit(FAULT_FS_API_JOB))
		return problem(a, c, 503, "pid %d: cannot start a checkpoint: injected fault", pid);

	j = calloc(1, sizeof(*j));
	ja = malloc(sizeof(*ja));
	if (!j || !ja) {
		free(j);
		free(ja);
		return problem(a, c, 500, "out of memory");
	}
	j->pid = pid;
	j->caller = q->uid;
	j->after = after;
	j->created = time(NULL);
	pthread_mutex_lock(&a->lock);
	j->id = ++a->next_id;
	j->next = a->jobs;
	a->jobs = j;
	a->njobs++;
	jobs_trim_locked(a);
	pthread_mutex_unlock(&a->lock);
	*ja = (struct job_arg){ a, j };
	r = ctl_job_spawn(a->fs, job_run, ja);
	if (r < 0) {
		free(ja);
		pthread_mutex_lock(&a->lock);
		j->done = true;
		j->result = r;
		j->finished = time(NULL);
		snprintf(j->error, sizeof(j->error), "%s: cannot start a thread", strerror(-r));
		pthread_mutex_unlock(&a->lock);
		return problem(a, c, 503, "pid %d: cannot start a checkpoint: %s", pid, strerror(-r));
	}
	log_info("pid %d: checkpoint (%s) requested through the API by uid %u: job %" PRIu64, pid,
		 mode_names[after], (unsigned)q->uid, j->id);

	pthread_mutex_lock(&a->lock);
	json_t *o = job_json(j);
	pthread_mutex_unlock(&a->lock);
	if (!o)
		return MHD_NO;
	char loc[64];
	snprintf(loc, sizeof(loc), "/v1/jobs/%" PRIu64, j->id);
	json_object_set_new(o, "href", json_string(loc));
	return send_json(a, c, 202, o);
}

static struct api_job *job_find_locked(struct api *a, uint64_t id)
{
	for (struct api_job *j = a->jobs; j; j = j->next)
		if (j->id == id)
			return j;
	return NULL;
}

static enum MHD_Result get_job(struct api *a, struct MHD_Connection *c, struct req *q, const char *ids)
{
	const char *w = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "wait");
	uint64_t id, wait = 0;
	struct api_job *j;

	if (!parse_num(ids, UINT64_MAX, &id))
		return problem(a, c, 400, "job '%s': not a job number", ids);
	if (w && strcmp(w, "0") && !parse_num(w, UINT32_MAX, &wait))
		return problem(a, c, 400, "wait: '%s' is not a number of seconds", w);
	wait = MIN(wait, (uint64_t)API_WAIT_MAX_S);

	struct timespec until;
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += (time_t)wait;
	pthread_mutex_lock(&a->lock);
	j = job_find_locked(a, id);
	/* another user's job is not there for the caller, as another user's
	 * snapshot is not in the mount */
	if (!j || !access_owner(q->uid, j->caller)) {
		pthread_mutex_unlock(&a->lock);
		return problem(a, c, 404, "job %" PRIu64 ": no such job", id);
	}
	while (!j->done && !a->quit && wait)
		if (pthread_cond_timedwait(&a->cond, &a->lock, &until) == ETIMEDOUT)
			break;
	json_t *o = job_json(j);
	bool running = !j->done;
	pid_t pid = j->pid;
	pthread_mutex_unlock(&a->lock);
	if (!o)
		return MHD_NO;
	if (running)
		job_progress(a, o, pid);
	return send_json(a, c, 200, o);
}

/* ---- snapshots ------------------------------------------------------------- */

static int add_snap(pid_t pid, uint32_t n, const struct store_snap_info *info, void *ud)
{
	char id[64];

	snprintf(id, sizeof(id), "%d/%" PRIu32, pid, n);
	return json_array_append_new(ud, json_pack("{s:s, s:i, s:i, s:I, s:I, s:I, s:I, s:i}", "id", id, "pid",
						   (int)pid, "n", (int)n, "created", (json_int_t)info->created,
						   "size", (json_int_t)info->size, "allocated",
						   (json_int_t)info->allocated, "stored",
						   (json_int_t)info->stored, "files", (int)info->files)) < 0
		       ? -ENOMEM
		       : 0;
}

static enum MHD_Result get_snapshots(struct api *a, struct MHD_Connection *c, struct req *q)
{
	json_t *arr = json_array();
	int r;

	if (!arr)
		return MHD_NO;
	r = snap_foreach(a->fs, 0, q->uid, add_snap, arr);
	if (r < 0) {
		json_decref(arr);
		return problem_errno(a, c, r, "listing snapshots");
	}
	return send_json(a, c, 200, json_pack("{s:o}", "snapshots", arr));
}

/* Parses {pid}/{n} of a snapshot's path and opens it for the caller:
 * NULL after a problem was sent (*res). */
static struct snapview *snap_open(struct api *a, struct MHD_Connection *c, struct req *q, const char *ps,
				  const char *ns, enum MHD_Result *res)
{
	uint64_t pid, n;
	struct snapview *v;
	int r;

	if (!parse_num(ps, INT32_MAX, &pid) || !parse_num(ns, UINT32_MAX, &n)) {
		*res = problem(a, c, 400, "snapshot '%s/%s': not PID/N", ps, ns);
		return NULL;
	}
	r = snapview_get(a->fs, (pid_t)pid, (uint32_t)n, &v);
	if (r == -ENOENT) {
		*res = problem(a, c, 404, "snapshot %s/%s: no such snapshot", ps, ns);
		return NULL;
	}
	if (r < 0) {
		*res = problem_errno(a, c, r, "snapshot");
		return NULL;
	}
	if (!access_owner(q->uid, v->owner)) {
		snapview_put(a->fs, v);
		*res = problem(a, c, 403, "snapshot %s/%s: not yours", ps, ns);
		return NULL;
	}
	return v;
}

static enum MHD_Result get_snapshot(struct api *a, struct MHD_Connection *c, struct req *q, const char *ps,
				    const char *ns)
{
	enum MHD_Result res = MHD_NO;
	struct snapview *v = snap_open(a, c, q, ps, ns, &res);
	uint64_t size = 0, alloc = 0, stored = 0;
	json_t *files, *o;
	char id[64];

	if (!v)
		return res;
	files = json_array();
	for (size_t i = 0; files && i < v->nfiles; i++) {
		const struct store_stat *st = &v->files[i].st;
		size += st->size;
		alloc += st->allocated;
		stored += st->stored;
		json_array_append_new(files, json_pack("{s:s, s:I, s:I}", "path", v->files[i].path, "size",
						       (json_int_t)st->size, "allocated",
						       (json_int_t)st->allocated));
	}
	snprintf(id, sizeof(id), "%d/%" PRIu32, v->pid, v->n);
	o = json_pack("{s:s, s:i, s:i, s:i, s:I, s:I, s:I, s:o}", "id", id, "pid", (int)v->pid, "n", (int)v->n,
		      "owner", (int)v->owner, "size", (json_int_t)size, "allocated", (json_int_t)alloc, "stored",
		      (json_int_t)stored, "files", files);
	snapview_put(a->fs, v);
	return send_json(a, c, 200, o);
}

static enum MHD_Result delete_snapshot(struct api *a, struct MHD_Connection *c, struct req *q, const char *ps,
				       const char *ns)
{
	enum MHD_Result res = MHD_NO;
	struct snapview *v = snap_open(a, c, q, ps, ns, &res);
	pid_t pid;
	uint32_t n;
	int r;

	if (!v)
		return res;
	pid = v->pid;
	n = v->n;
	snapview_put(a->fs, v);
	err_clear();
	/* as rmdir of /<pid>/<n> in the mount */
	r = snapview_delete(a->fs, pid, n);
	if (r < 0) {
		log_err_errno(r, "snapshot %d/%" PRIu32 ": cannot delete: %s", pid, n, err_msg());
		return problem_errno(a, c, r, "snapshot");
	}
	/* The kernel keeps snapshot entries for a while (they never change
	 * while they exist): tell it this one is gone, so that the mount
	 * agrees with the API at once. From this thread, not the FUSE
	 * loop's, as the call requires. */
	char name[16];
	struct node_id pid_dir = { .kind = NODE_PID, .pid = pid };
	int len = snprintf(name, sizeof(name), "%" PRIu32, n);
	fuse_lowlevel_notify_inval_entry(a->fs->se, node_ino_of(&pid_dir), name, (size_t)len);
	log_info("snapshot %d/%" PRIu32 " deleted through the API by uid %u", pid, n, (unsigned)q->uid);
	return send_buf(a, c, 204, "application/json", NULL, 0);
}

/* ---- metrics --------------------------------------------------------------- */

static enum MHD_Result get_metrics(struct api *a, struct MHD_Connection *c)
{
	static const double bounds[FS_CKPT_BUCKETS] = FS_CKPT_BUCKET_BOUNDS;
	struct fs_ckpt_stats s;
	struct store_stats ss = { 0 };
	uint64_t req[6];
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);

	if (!f)
		return MHD_NO;
	pthread_mutex_lock(&a->fs->lock);
	s = a->fs->ckpt_stats;
	pthread_mutex_unlock(&a->fs->lock);
	pthread_mutex_lock(&a->lock);
	memcpy(req, a->requests, sizeof(req));
	pthread_mutex_unlock(&a->lock);
	bool have_store = store_stats(a->fs->store, &ss) >= 0;

	fprintf(f, "# HELP ckptfs_checkpoints_total Checkpoints taken by this daemon (ctl, policies, API), by result.\n"
		   "# TYPE ckptfs_checkpoints_total counter\n"
		   "ckptfs_checkpoints_total{result=\"ok\"} %" PRIu64 "\n"
		   "ckptfs_checkpoints_total{result=\"failed\"} %" PRIu64 "\n",
		s.ok, s.failed);
	fprintf(f, "# HELP ckptfs_checkpoint_duration_seconds Time from start to durable snapshot of successful checkpoints.\n"
		   "# TYPE ckptfs_checkpoint_duration_seconds histogram\n");
	uint64_t cum = 0;
	for (size_t i = 0; i < FS_CKPT_BUCKETS; i++) {
		cum += s.buckets[i];
		fprintf(f, "ckptfs_checkpoint_duration_seconds_bucket{le=\"%g\"} %" PRIu64 "\n", bounds[i], cum);
	}
	fprintf(f, "ckptfs_checkpoint_duration_seconds_bucket{le=\"+Inf\"} %" PRIu64 "\n"
		   "ckptfs_checkpoint_duration_seconds_sum %.6f\n"
		   "ckptfs_checkpoint_duration_seconds_count %" PRIu64 "\n",
		s.ok, (double)s.sum_ns / 1e9, s.ok);
	fprintf(f, "# HELP ckptfs_checkpoint_bytes_total Bytes of snapshot files written by successful checkpoints.\n"
		   "# TYPE ckptfs_checkpoint_bytes_total counter\n"
		   "ckptfs_checkpoint_bytes_total %" PRIu64 "\n",
		s.bytes);
	if (have_store) {
		fprintf(f, "# HELP ckptfs_store_snapshots Snapshots in the store.\n"
			   "# TYPE ckptfs_store_snapshots gauge\n"
			   "ckptfs_store_snapshots %" PRIu64 "\n"
			   "# HELP ckptfs_store_chunk_bytes Uncompressed bytes of the store's live chunks.\n"
			   "# TYPE ckptfs_store_chunk_bytes gauge\n"
			   "ckptfs_store_chunk_bytes %" PRIu64 "\n"
			   "# HELP ckptfs_store_stored_bytes Compressed bytes of the store's live chunks.\n"
			   "# TYPE ckptfs_store_stored_bytes gauge\n"
			   "ckptfs_store_stored_bytes %" PRIu64 "\n"
			   "# HELP ckptfs_store_pack_bytes Bytes of the store's pack files, dead chunks included.\n"
			   "# TYPE ckptfs_store_pack_bytes gauge\n"
			   "ckptfs_store_pack_bytes %" PRIu64 "\n",
			ss.snapshots, ss.chunk_bytes, ss.stored_bytes, ss.pack_bytes);
	}
	fprintf(f, "# HELP ckptfs_api_requests_total API requests answered, by status class.\n"
		   "# TYPE ckptfs_api_requests_total counter\n");
	for (int i = 1; i < 6; i++)
		fprintf(f, "ckptfs_api_requests_total{code=\"%dxx\"} %" PRIu64 "\n", i, req[i]);
	if (fclose(f) != 0) {
		free(buf);
		return MHD_NO;
	}
	return send_buf(a, c, 200, "text/plain; version=0.0.4", buf, len);
}

/* ---- dispatch -------------------------------------------------------------- */

/* Splits url into at most max '/'-separated parts (after the leading
 * one); returns the count, -1 when there are more or one is empty. */
static int split_url(char *url, char **parts, int max)
{
	int n = 0;
	char *p = url;

	if (*p != '/')
		return -1;
	p++;
	if (!*p)
		return 0;
	while (p) {
		char *s = strchr(p, '/');
		if (s)
			*s++ = 0;
		if (!*p || n == max)
			return -1;
		parts[n++] = p;
		p = s;
	}
	return n;
}

static bool peer_cred(struct MHD_Connection *c, struct req *q)
{
	const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
	struct ucred uc;
	socklen_t len = sizeof(uc);

	if (!ci || getsockopt(ci->connect_fd, SOL_SOCKET, SO_PEERCRED, &uc, &len) < 0)
		return false;
	q->uid = uc.uid;
	q->peer = uc.pid;
	return true;
}

static enum MHD_Result route(struct api *a, struct MHD_Connection *c, struct req *q, const char *url,
			     const char *method)
{
	char buf[512], *p[8];
	int n;
	bool get = !strcmp(method, "GET") || !strcmp(method, "HEAD");
	bool post = !strcmp(method, "POST");
	bool del = !strcmp(method, "DELETE");

	if (strlen(url) >= sizeof(buf))
		return problem(a, c, 404, "no such resource");
	strcpy(buf, url);
	n = split_url(buf, p, ARRAY_SIZE(p));
	if (n == 1 && !strcmp(p[0], "metrics")) {
		if (!get)
			goto not_allowed;
		return get_metrics(a, c);
	}
	if (n < 2 || strcmp(p[0], "v1"))
		return problem(a, c, 404, "no such resource '%s' (the API is under /v1)", url);
	if (n == 2 && !strcmp(p[1], "openapi.json")) {
		if (!get)
			goto not_allowed;
		char *doc = malloc(api_openapi_len);
		if (!doc)
			return MHD_NO;
		memcpy(doc, api_openapi, api_openapi_len);
		return send_buf(a, c, 200, "application/json", doc, api_openapi_len);
	}
	if (!strcmp(p[1], "processes")) {
		if (n == 2) {
			if (!get)
				goto not_allowed;
			return get_processes(a, c, q);
		}
		if (n == 4 && !strcmp(p[3], "checkpoints")) {
			uint64_t pid;
			if (!post)
				goto not_allowed;
			if (!parse_num(p[2], INT32_MAX, &pid))
				return problem(a, c, 400, "process '%s': not a pid", p[2]);
			return post_checkpoint(a, c, q, (pid_t)pid);
		}
	}
	if (!strcmp(p[1], "jobs") && n == 3) {
		if (!get)
			goto not_allowed;
		return get_job(a, c, q, p[2]);
	}
	if (!strcmp(p[1], "snapshots")) {
		if (n == 2) {
			if (!get)
				goto not_allowed;
			return get_snapshots(a, c, q);
		}
		if (n == 4) {
			if (get)
				return get_snapshot(a, c, q, p[2], p[3]);
			if (del)
				return delete_snapshot(a, c, q, p[2], p[3]);
			goto not_allowed;
		}
	}
	return problem(a, c, 404, "no such resource '%s'", url);

not_allowed:
	return problem(a, c, 405, "%s is not allowed on '%s'", method, url);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
				  const char *version, const char *upload, size_t *upload_size, void **con_cls)
{
	struct api *a = cls;
	struct req *q = *con_cls;

	if (!q) {
		q = calloc(1, sizeof(*q));
		if (!q)
			return MHD_NO;
		q->cred_ok = peer_cred(c, q);
		*con_cls = q;
		return MHD_YES;
	}
	if (*upload_size) {
		/* bodies are kept whole up to API_BODY_MAX; a larger one is
		 * read to its end (so that the answer reaches the client) and
		 * dropped */
		if (!q->too_big && q->len + *upload_size > API_BODY_MAX) {
			q->too_big = true;
			free(q->body);
			q->body = NULL;
			q->len = 0;
		}
		if (!q->too_big) {
			char *b = realloc(q->body, q->len + *upload_size);
			if (!b)
				return MHD_NO;
			memcpy(b + q->len, upload, *upload_size);
			q->body = b;
			q->len += *upload_size;
		}
		*upload_size = 0;
		return MHD_YES;
	}
	if (!q->cred_ok)
		return problem(a, c, 403, "cannot tell who is calling (SO_PEERCRED)");
	err_clear();
	return route(a, c, q, url, method);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode t)
{
	struct req *q = *con_cls;

	if (q) {
		free(q->body);
		free(q);
	}
	*con_cls = NULL;
}

/* ---- the socket -------------------------------------------------------------- */

static int listen_unix(const char *path, int *ret)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	_cleanup_close_ int fd = -1;
	_cleanup_free_ char *dir = NULL;
	char *slash;
	int r;

	if (strlen(path) >= sizeof(sa.sun_path))
		return err_set(-ENAMETOOLONG, "api socket '%s': path too long", path);
	strcpy(sa.sun_path, path);
	dir = strdup(path);
	if (!dir)
		return -ENOMEM;
	slash = strrchr(dir, '/');
	if (slash && slash != dir) {
		*slash = 0;
		/* 0755: any user may reach the socket; what it may do is
		 * decided per request by who it is */
		r = mkdir_p(dir, 0755);
		if (r < 0)
			return err_set(r, "api socket: cannot make directory '%s'", dir);
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return negerrno();
	/* A socket left by a daemon that died is replaced; one that answers
	 * belongs to a daemon that runs. */
	{
		_cleanup_close_ int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (probe >= 0 && connect(probe, (struct sockaddr *)&sa, sizeof(sa)) == 0)
			return err_set(-EADDRINUSE, "api socket '%s': another daemon listens on it", path);
	}
	if (unlink(path) < 0 && errno != ENOENT)
		return err_set(negerrno(), "api socket '%s': cannot remove the old one", path);
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		return err_set(negerrno(), "api socket '%s': bind: %m", path);
	if (chmod(path, 0666) < 0 || listen(fd, 128) < 0) {
		r = err_set(negerrno(), "api socket '%s': %m", path);
		unlink(path);
		return r;
	}
	*ret = fd;
	fd = -1;
	return 0;
}

char *api_default_path(void)
{
	const char *rt = getenv("XDG_RUNTIME_DIR");
	char *p = NULL;

	if (getuid() == 0)
		return strdup("/run/ckptfs/api.sock");
	if (rt && *rt == '/' && asprintf(&p, "%s/ckptfs/api.sock", rt) >= 0)
		return p;
	return NULL;
}

int api_start(struct fs *fs, const char *path, struct api **ret)
{
	struct api *a;
	int fd = -1, r;

	if (fault_hit(FAULT_FS_API_LISTEN))
		return err_set(-EIO, "api socket '%s': injected fault", path);
	r = listen_unix(path, &fd);
	if (r < 0)
		return r;
	a = calloc(1, sizeof(*a));
	if (!a || !(a->path = strdup(path))) {
		free(a);
		close(fd);
		unlink(path);
		return -ENOMEM;
	}
	a->fs = fs;
	pthread_mutex_init(&a->lock, NULL);
	pthread_cond_init(&a->cond, NULL);
	a->mhd = MHD_start_daemon(MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL,
				  0, NULL, NULL, on_request, a,
				  MHD_OPTION_LISTEN_SOCKET, fd,
				  MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)API_IDLE_S,
				  MHD_OPTION_CONNECTION_LIMIT, (unsigned)API_CONN_MAX,
				  MHD_OPTION_NOTIFY_COMPLETED, on_completed, a,
				  MHD_OPTION_END);
	if (!a->mhd) {
		close(fd);
		unlink(path);
		free(a->path);
		pthread_cond_destroy(&a->cond);
		pthread_mutex_destroy(&a->lock);
		free(a);
		return err_set(-EIO, "api socket '%s': cannot start the HTTP server", path);
	}
	log_info("API on %s", path);
	*ret = a;
	return 0;
}

void api_stop(struct api *a)
{
	if (!a || !a->mhd)
		return;
	/* long polls end now */
	pthread_mutex_lock(&a->lock);
	a->quit = true;
	pthread_cond_broadcast(&a->cond);
	pthread_mutex_unlock(&a->lock);
	MHD_stop_daemon(a->mhd);
	a->mhd = NULL;
	unlink(a->path);
}

void api_free(struct api *a)
{
	if (!a)
		return;
	api_stop(a);
	while (a->jobs) {
		struct api_job *j = a->jobs;
		a->jobs = j->next;
		free(j);
	}
	free(a->path);
	pthread_cond_destroy(&a->cond);
	pthread_mutex_destroy(&a->lock);
	free(a);
}
