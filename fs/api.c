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
 *   GET    /v1/jobs/{id}/events              server-sent events: progress, then the result
 *   GET|PUT|DELETE /v1/processes/{pid}/policy {"every": "30s", "keep": 5}
 *   GET    /v1/snapshots
 *   GET    /v1/snapshots/{pid}/{n}
 *   DELETE /v1/snapshots/{pid}/{n}
 *   GET    /v1/snapshots/{pid}/{n}/export    the snapshot as a tar stream
 *   POST   /v1/restores?name=NAME            body: a tar stream (export's)
 *   POST   /v1/restores                      {"name": N, "snapshot": "P/N"}
 *   GET    /v1/restores/{name}               restore/<name>/status
 *   GET    /v1/openapi.json
 *   GET    /metrics
 * Errors are RFC 9457 problem documents.
 */
#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <microhttpd.h>
#include <ctype.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sys/un.h>

#include "fs/fs-int.h"

/* Largest request body taken: the API's bodies are a few fields. */
#define API_BODY_MAX (64u * 1024)
/* Longest long-poll of a job (?wait=). */
#define API_WAIT_MAX_S 60
/* A connection that sends or takes nothing for this long is closed. */
#define API_IDLE_S 30
#define API_CONN_MAX 512
/* Each connection's buffer: an export is sent in pieces of this size
 * (MHD's default, 32 KiB, made it 30 system calls a MiB) */
#define API_CONN_MEMORY (1024u * 1024)
/* A request's head and JSON body must arrive within this from the
 * connection's start (or its previous answer): a client that trickles
 * them a byte at a time is dropped, not served forever. Tar uploads are
 * bounded by API_IDLE_S between reads only: they are long by nature. */
#define API_REQ_DEADLINE_NS (10ull * 1000000000)
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

/* One connection, for the deadline above (api->lock). */
struct conn {
	int fd;
	uint64_t t0;     /* its start, or the end of its last answer */
	bool answering;  /* the request arrived whole (or is an upload) */
	bool dropped;
	struct conn *next;
};

/* One HTTP server: the Unix socket's, or TCP's. Both serve the same
 * jobs; only how a request's caller is known differs. */
struct listener {
	struct api *a;
	bool tcp;
	struct MHD_Daemon *mhd;
};

struct api {
	struct fs *fs;
	struct conn *conns;      /* lock */
	pthread_t watchdog;
	bool watchdog_started;
	struct listener lis[2];
	size_t nlis;
	char *path;          /* the Unix socket's, unlinked at stop; NULL without one */
	char *token;         /* TCP: the bearer token every request must carry */
	uid_t token_uid;     /* TCP: whom a request with it acts as: the token file's owner */
	pthread_mutex_t lock;
	pthread_mutex_t save_lock; /* serializes writes of the jobs' record; taken before lock */
	pthread_cond_t cond; /* a job ended, or quit */
	bool quit;
	struct api_job *jobs; /* newest first */
	size_t njobs;
	uint64_t next_id;
	uint64_t requests[6]; /* by status class: 1xx..5xx, [0] unused */
};

/* One request's state between the calls MHD makes for it. */
struct import;

struct req {
	char *body;
	size_t len;
	bool too_big;
	bool cred_ok;
	bool unauth;        /* TCP without the right token: 401 */
	uid_t uid;
	gid_t gid;
	pid_t peer;
	struct import *imp; /* a tar upload being read (POST /v1/restores?name=) */
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
	if (status == 401)
		MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
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

/* ---- the periodic policy ---------------------------------------------------- */

/* GET/PUT/DELETE /v1/processes/{pid}/policy: the policy `every D keep K`
 * written to /<pid>/ctl sets (policy.c), through ctl_command(), the
 * code a ctl line runs: the same checks, the same record, the same
 * status lines in the mount. */

static void iso_time(int64_t ms, char *buf, size_t len)
{
	time_t t = (time_t)(ms / 1000);
	struct tm tm;

	if (!gmtime_r(&t, &tm) || !strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm))
		snprintf(buf, len, "?");
}

static json_t *policy_json(pid_t pid, const struct policy_info *pi)
{
	char set[32], next[32], last[32], snap[48];
	json_t *o;

	iso_time(pi->set_ms, set, sizeof(set));
	o = json_pack("{s:i, s:s, s:I, s:i, s:s, s:i, s:s, s:I, s:I, s:i}", "pid", (int)pid, "every", pi->every,
		      "every_seconds", (json_int_t)(pi->every_ms / 1000), "keep", (int)pi->keep, "state",
		      pi->stopped ? "stopped" : pi->running ? "running" : "waiting", "uid", (int)pi->uid, "set", set,
		      "runs", (json_int_t)pi->runs, "failed", (json_int_t)pi->fails, "snapshots", (int)pi->nsnaps);
	if (!o)
		return NULL;
	if (pi->stopped) {
		json_object_set_new(o, "reason", json_string(pi->why));
	} else if (!pi->running) {
		iso_time(pi->next_ms, next, sizeof(next));
		json_object_set_new(o, "next", json_string(next));
	}
	if (pi->last_ms) {
		iso_time(pi->last_ms, last, sizeof(last));
		json_t *l = pi->last_ok ? json_pack("{s:s, s:s}", "at", last, "result", "ok")
					: json_pack("{s:s, s:s, s:s}", "at", last, "result", "failed", "error",
						    pi->last_error);
		if (l && pi->last_ok) {
			snprintf(snap, sizeof(snap), "%d/%" PRIu32, pid, pi->last_snap);
			json_object_set_new(l, "snapshot", json_string(snap));
		}
		json_object_set_new(o, "last", l);
	}
	return o;
}

/* May uid see and change pid's policy? As ctl: whoever may checkpoint
 * the process; with the process gone (or not theirs any more), the uid
 * that set the policy and root. False after a problem was sent (*res). */
static bool policy_access(struct api *a, struct MHD_Connection *c, struct req *q, pid_t pid,
			  struct policy_info *pi, bool *have, enum MHD_Result *res)
{
	uid_t owner;

	*have = policy_get(a->fs, pid, pi);
	if (access_pid(a->fs, q->uid, pid, &owner))
		return true;
	if (*have && access_owner(q->uid, pi->uid))
		return true;
	if (kill(pid, 0) < 0 && errno == ESRCH)
		*res = problem(a, c, 404, "pid %d: no such process%s", pid, *have ? "" : ", and no policy");
	else
		*res = problem(a, c, 403, "pid %d: not yours", pid);
	return false;
}

static enum MHD_Result policy_answer(struct api *a, struct MHD_Connection *c, pid_t pid, unsigned status)
{
	struct policy_info pi;

	if (!policy_get(a->fs, pid, &pi))
		return problem(a, c, 404, "pid %d: no policy", pid);
	return send_json(a, c, status, policy_json(pid, &pi));
}

static enum MHD_Result get_policy(struct api *a, struct MHD_Connection *c, struct req *q, pid_t pid)
{
	enum MHD_Result res = MHD_NO;
	struct policy_info pi;
	bool have;

	if (!policy_access(a, c, q, pid, &pi, &have, &res))
		return res;
	if (!have)
		return problem(a, c, 404, "pid %d: no policy (PUT one: {\"every\": \"30s\", \"keep\": 5})", pid);
	return send_json(a, c, 200, policy_json(pid, &pi));
}

/* A duration as `every` takes it: digits and one unit, nothing else (the
 * line is made of it: no room for more words). */
static bool every_ok(const char *s)
{
	size_t n = strlen(s);

	if (n < 2 || n > 12 || !strchr("smh", s[n - 1]))
		return false;
	for (size_t i = 0; i + 1 < n; i++)
		if (s[i] < '0' || s[i] > '9')
			return false;
	return true;
}

static enum MHD_Result put_policy(struct api *a, struct MHD_Connection *c, struct req *q, pid_t pid)
{
	const char *every = NULL, *k;
	json_int_t keep = 3;
	json_error_t jerr;
	json_t *body, *v;
	enum MHD_Result res = MHD_NO;
	struct policy_info pi;
	bool have;
	char line[96];
	int r;

	if (q->too_big)
		return problem(a, c, 413, "request body larger than %u bytes", API_BODY_MAX);
	body = json_loadb(q->body ? q->body : "", q->len, JSON_REJECT_DUPLICATES, &jerr);
	if (!body)
		return problem(a, c, 400, "body: not JSON: %s (line %d, column %d)", jerr.text, jerr.line, jerr.column);
	if (!json_is_object(body)) {
		json_decref(body);
		return problem(a, c, 400, "body: a JSON object expected");
	}
	json_object_foreach(body, k, v) {
		if (!strcmp(k, "every") && json_is_string(v)) {
			every = json_string_value(v);
		} else if (!strcmp(k, "keep") && json_is_integer(v)) {
			keep = json_integer_value(v);
		} else {
			res = problem(a, c, 400, "body: unknown field or wrong type: '%s' (known: every, a string; keep, a number)",
				      k);
			json_decref(body);
			return res;
		}
	}
	if (!every || !every_ok(every)) {
		res = problem(a, c, 400, "body: every must be a duration, a number and s, m or h (\"30s\", \"10m\", \"2h\")%s%s%s",
			      every ? ", not '" : "", every ? every : "", every ? "'" : "");
		json_decref(body);
		return res;
	}
	if (keep < 1 || keep > 1000) {
		json_decref(body);
		return problem(a, c, 400, "body: keep must be a number from 1 to 1000, not %lld", (long long)keep);
	}
	snprintf(line, sizeof(line), "every %s keep %lld", every, (long long)keep);
	json_decref(body);
	if (!policy_access(a, c, q, pid, &pi, &have, &res))
		return res;
	err_clear();
	r = ctl_command(a->fs, pid, q->uid, line, strlen(line));
	if (r < 0)
		return problem_errno(a, c, r, "policy");
	log_info("pid %d: policy '%s' set through the API by uid %u", pid, line, (unsigned)q->uid);
	return policy_answer(a, c, pid, have ? 200 : 201);
}

static enum MHD_Result delete_policy(struct api *a, struct MHD_Connection *c, struct req *q, pid_t pid)
{
	enum MHD_Result res = MHD_NO;
	struct policy_info pi;
	bool have;
	int r;

	if (!policy_access(a, c, q, pid, &pi, &have, &res))
		return res;
	if (!have)
		return problem(a, c, 404, "pid %d: no policy", pid);
	err_clear();
	r = ctl_command(a->fs, pid, q->uid, "every off", 9);
	if (r < 0)
		return problem_errno(a, c, r, "policy");
	return send_buf(a, c, 204, "application/json", NULL, 0);
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

/* Finished jobs are kept in the store (store_meta_put, record
 * "api-jobs", JSON), written after each one ends and read back when a
 * daemon starts on the store again, so that a job's result outlives a
 * restart as its snapshot does. A job running when the daemon was
 * killed (an orderly stop waits for running jobs) never ended, and is
 * not there. */
#define JOBS_KEY "api-jobs"
#define JOBS_FORMAT "ckptfs-api-jobs 1"

static void jobs_trim_locked(struct api *a);

static void jobs_save(struct api *a)
{
	json_t *arr = json_array(), *o;
	char *text = NULL;
	int r = -ENOMEM;

	pthread_mutex_lock(&a->save_lock);
	pthread_mutex_lock(&a->lock);
	for (struct api_job *j = a->jobs; arr && j; j = j->next) {
		if (!j->done)
			continue;
		json_array_append_new(arr, json_pack("{s:I, s:i, s:i, s:s, s:i, s:I, s:s, s:I, s:I}", "id",
						     (json_int_t)j->id, "pid", (int)j->pid, "caller", (int)j->caller,
						     "mode", mode_names[j->after], "result", j->result, "snapshot",
						     (json_int_t)j->snap, "error", j->error, "created",
						     (json_int_t)j->created, "finished", (json_int_t)j->finished));
	}
	o = arr ? json_pack("{s:s, s:I, s:o}", "format", JOBS_FORMAT, "next_id", (json_int_t)a->next_id, "jobs", arr)
		: NULL;
	pthread_mutex_unlock(&a->lock);
	text = o ? json_dumps(o, JSON_COMPACT) : NULL;
	json_decref(o);
	if (text)
		r = store_meta_put(a->fs->store, JOBS_KEY, text, strlen(text));
	pthread_mutex_unlock(&a->save_lock);
	if (r < 0)
		log_warn("API: cannot store the finished jobs (their results last until the daemon stops): %s",
			 *err_msg() ? err_msg() : strerror(-r));
	free(text);
}

/* Reads the finished jobs back (api_start, before any request). A record
 * that does not parse is named in the log and left: no job is read. */
static void jobs_load(struct api *a)
{
	_cleanup_free_ char *text = NULL;
	json_error_t jerr;
	json_int_t next = 0;
	const char *fmt = NULL;
	json_t *o, *arr = NULL, *v;
	size_t len, i;
	int r;

	r = store_meta_get(a->fs->store, JOBS_KEY, &text, &len);
	if (r == -ENOENT)
		return;
	if (r < 0) {
		log_warn("API: cannot read the store's record of jobs: %s", *err_msg() ? err_msg() : strerror(-r));
		return;
	}
	o = json_loadb(text, len, 0, &jerr);
	if (!o || json_unpack(o, "{s:s, s:I, s:o}", "format", &fmt, "next_id", &next, "jobs", &arr) < 0 ||
	    strcmp(fmt, JOBS_FORMAT) || !json_is_array(arr)) {
		log_warn("API: the store's record '" JOBS_KEY "' is not a " JOBS_FORMAT " record; no earlier job is served");
		json_decref(o);
		return;
	}
	struct api_job **tail = &a->jobs;
	json_array_foreach(arr, i, v) {
		json_int_t id, snap, created, finished;
		int pid, caller, result;
		const char *mode, *error;
		if (json_unpack(v, "{s:I, s:i, s:i, s:s, s:i, s:I, s:s, s:I, s:I}", "id", &id, "pid", &pid, "caller",
				&caller, "mode", &mode, "result", &result, "snapshot", &snap, "error", &error, "created",
				&created, "finished", &finished) < 0 || id <= 0)
			continue;
		struct api_job *j = calloc(1, sizeof(*j));
		if (!j)
			break;
		j->id = (uint64_t)id;
		j->pid = pid;
		j->caller = (uid_t)caller;
		j->after = !strcmp(mode, "kill") ? ENGINE_AFTER_KILL : !strcmp(mode, "stop") ? ENGINE_AFTER_STOP
											      : ENGINE_AFTER_RUN;
		j->done = true;
		j->result = result;
		j->snap = (uint32_t)snap;
		snprintf(j->error, sizeof(j->error), "%s", error);
		j->created = created;
		j->finished = finished;
		*tail = j;
		tail = &j->next;
		a->njobs++;
		if ((uint64_t)id > a->next_id)
			a->next_id = (uint64_t)id;
	}
	if (next > 0 && (uint64_t)next > a->next_id)
		a->next_id = (uint64_t)next;
	json_decref(o);
	jobs_trim_locked(a);
	if (a->njobs)
		log_info("API: %zu finished jobs from before, the next is %" PRIu64, a->njobs, a->next_id + 1);
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
	jobs_save(a);
	ctl_job_end(a->fs);
	return NULL;
}

/* Drops the oldest finished jobs beyond API_JOBS_KEPT (a->lock held). */
static void jobs_trim_locked(struct api *a)
{
	struct api_job **pp = &a->jobs;
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
		pp = &j->next;
	}
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
		jobs_save(a);
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

/* GET /v1/jobs/{id}/events: server-sent events. The stream is made by
 * MHD's content reader on the connection's own thread: it sends the
 * job's phase and bytes as they change (sampled every EVENTS_TICK_MS,
 * bytes at most every EVENTS_BYTES_MS), a comment when nothing was sent
 * for EVENTS_KEEPALIVE_S (so that the connection's idle bound never
 * ends a long phase), and the job itself, as GET /v1/jobs/{id} answers
 * it, in a last `result` event. The job is looked up by id each time:
 * it may be trimmed meanwhile, and then the stream just ends. */
#define EVENTS_TICK_MS 10
#define EVENTS_BYTES_MS 100
#define EVENTS_KEEPALIVE_S 15

struct events {
	struct api *a;
	uint64_t id;
	int phase;          /* the last phase sent; -1: none yet */
	uint64_t done, total;
	uint64_t out_ns;    /* when something was last sent */
	uint64_t bytes_ns;  /* when bytes were last sent */
	bool ended;         /* the result is queued: end after it */
	char *text;         /* what is still to send */
	size_t len, off;
};

static void events_put(struct events *ev, const char *event, json_t *o)
{
	char *d = o ? json_dumps(o, JSON_COMPACT) : NULL;

	json_decref(o);
	free(ev->text);
	ev->text = NULL;
	ev->len = ev->off = 0;
	if (!d)
		return;
	if (asprintf(&ev->text, "event: %s\ndata: %s\n\n", event, d) >= 0)
		ev->len = strlen(ev->text);
	else
		ev->text = NULL;
	free(d);
	ev->out_ns = now_ns();
}

/* Fills ev->text with the next thing to send; false: the stream ends. */
static bool events_next(struct events *ev)
{
	struct api *a = ev->a;

	for (;;) {
		pthread_mutex_lock(&a->lock);
		struct api_job *j = job_find_locked(a, ev->id);
		if (!j || a->quit) {
			pthread_mutex_unlock(&a->lock);
			return false;
		}
		if (j->done) {
			json_t *o = job_json(j);
			pthread_mutex_unlock(&a->lock);
			events_put(ev, "result", o);
			ev->ended = true;
			return ev->text != NULL;
		}
		pid_t pid = j->pid;
		pthread_mutex_unlock(&a->lock);

		enum engine_phase phase;
		uint64_t done, total, now = now_ns();
		if (ctl_progress(a->fs, pid, &phase, &done, &total) &&
		    ((int)phase != ev->phase ||
		     ((done != ev->done || total != ev->total) && now - ev->bytes_ns >= EVENTS_BYTES_MS * 1000000ull))) {
			json_t *o = json_pack("{s:I, s:s, s:s, s:I, s:I}", "id", (json_int_t)ev->id, "state", "running",
					      "phase", engine_phase_name(phase), "bytes_done", (json_int_t)done,
					      "bytes_total", (json_int_t)total);
			ev->phase = (int)phase;
			ev->done = done;
			ev->total = total;
			ev->bytes_ns = now;
			events_put(ev, "progress", o);
			return ev->text != NULL;
		}
		if (now - ev->out_ns >= EVENTS_KEEPALIVE_S * 1000000000ull) {
			free(ev->text);
			ev->text = strdup(": still running\n\n");
			ev->len = ev->text ? strlen(ev->text) : 0;
			ev->off = 0;
			ev->out_ns = now;
			return ev->text != NULL;
		}
		/* a job's end wakes this at once; progress is sampled */
		struct timespec until;
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_nsec += EVENTS_TICK_MS * 1000000;
		if (until.tv_nsec >= 1000000000) {
			until.tv_sec++;
			until.tv_nsec -= 1000000000;
		}
		pthread_mutex_lock(&a->lock);
		j = job_find_locked(a, ev->id);
		if (j && !j->done && !a->quit)
			pthread_cond_timedwait(&a->cond, &a->lock, &until);
		pthread_mutex_unlock(&a->lock);
	}
}

static ssize_t events_read(void *cls, uint64_t pos, char *buf, size_t max)
{
	struct events *ev = cls;

	(void)pos;
	if (ev->off == ev->len) {
		if (ev->ended || !events_next(ev))
			return MHD_CONTENT_READER_END_OF_STREAM;
	}
	size_t n = MIN(max, ev->len - ev->off);
	memcpy(buf, ev->text + ev->off, n);
	ev->off += n;
	return (ssize_t)n;
}

static void events_free(void *cls)
{
	struct events *ev = cls;

	free(ev->text);
	free(ev);
}

static enum MHD_Result get_job_events(struct api *a, struct MHD_Connection *c, struct req *q, const char *ids)
{
	struct MHD_Response *resp;
	struct events *ev;
	struct api_job *j;
	uint64_t id;
	enum MHD_Result res;

	if (!parse_num(ids, UINT64_MAX, &id))
		return problem(a, c, 400, "job '%s': not a job number", ids);
	pthread_mutex_lock(&a->lock);
	j = job_find_locked(a, id);
	bool mine = j && access_owner(q->uid, j->caller);
	pthread_mutex_unlock(&a->lock);
	if (!mine)
		return problem(a, c, 404, "job %" PRIu64 ": no such job", id);
	ev = calloc(1, sizeof(*ev));
	if (!ev)
		return problem(a, c, 500, "out of memory");
	*ev = (struct events){ .a = a, .id = id, .phase = -1, .out_ns = now_ns() };
	resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, events_read, ev, events_free);
	if (!resp) {
		events_free(ev);
		return MHD_NO;
	}
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "text/event-stream");
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
	res = MHD_queue_response(c, 200, resp);
	MHD_destroy_response(resp);
	count(a, 200);
	return res;
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

/* ---- export, import, restores --------------------------------------------- */

/* Restore names: what a directory under restore/ may be called, and no
 * more (no '/', no "..", no dot first). */
static bool restore_name_ok(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > 64 || s[0] == '.' || s[0] == '-')
		return false;
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)s[i]) && !strchr("._-", s[i]))
			return false;
	return true;
}

/* err_set(r, "PATH: DETAIL"), DETAIL what err_msg() says so far (or
 * strerror): err_set cannot be given err_msg() itself, which is the
 * buffer it writes. */
static int err_path(int r, const char *path)
{
	char why[256];

	snprintf(why, sizeof(why), "%s", *err_msg() ? err_msg() : strerror(-r));
	return err_set(r, "%s: %s", path, why);
}

/* The export: the snapshot directory as a pax tar stream, each file's
 * holes as a sparse map, so that they take no room in the stream nor on
 * the receiving side.
 *
 * The stream is planned before the answer starts: libarchive writes every
 * header (kept: a few hundred bytes a file, more for a long sparse map),
 * and for a file's data it is handed a marker instead of the bytes; what
 * it passes on of the marker (it writes unblocked, so it passes pointers
 * on as they are, leaving out the holes of the map) is noted as a piece
 * "bytes [off, off + len) of file i". The plan gives the stream's exact
 * length, sent as Content-Length (a client tells a stream that ended
 * early from a whole one by it), and the data is read from the store when
 * the connection asks for it, straight into the buffer MHD sends from:
 * the daemon copies each byte once, as a FUSE read does. (Before, a
 * reader thread copied it into a ring, and MHD's content reader from
 * the ring into its buffer, with the threads waking each other at every
 * piece: a third more CPU than cp -r through the mount.) */

#define XLIT UINT32_MAX

struct xpiece {
	uint64_t off;  /* XLIT: offset in lit; else the file offset */
	uint64_t len;
	uint32_t file; /* index in v->files, or XLIT */
};

/* Used by one thread at a time: the request's while it plans, then the
 * connection's (MHD calls export_read and export_free on it), or the
 * thread that writes the stream into the import's pipe. */
struct export {
	struct api *a;
	struct snapview *v;
	struct xpiece *p;
	size_t np, pcap;
	char *lit;            /* headers, padding, the archive's end */
	size_t nlit, litcap;
	uint64_t size;        /* the stream's length: the pieces' sum */
	/* planning */
	uint32_t feed_file;   /* whose data libarchive is fed */
	uint64_t feed_off;    /* the file offset export_mark stands for */
	uint64_t fed;         /* of it, bytes passed on as data */
	/* sending */
	size_t cur;           /* the piece being sent */
	uint64_t cur_off;     /* bytes of it sent */
	uint64_t pos;         /* bytes of the stream sent */
	struct store_file *f; /* file fno of the snapshot, open */
	uint32_t fno;
	bool failed;
	int fd;               /* the import's pipe, or -1 */
};

/* The marker fed to libarchive for file data: never read (bss: it costs
 * no memory). Should a libarchive copy the data it is given instead of
 * passing it on, the plan sees fewer bytes of the marker than the file
 * has data and refuses to export (export_file). */
static char export_mark[FS_IO_SIZE];

static void export_free(void *cls)
{
	struct export *x = cls;

	if (!x)
		return;
	store_file_close(x->f);
	if (x->v)
		snapview_put(x->a->fs, x->v);
	free(x->p);
	free(x->lit);
	free(x);
}

static int plan_piece(struct export *x, uint32_t file, uint64_t off, uint64_t len)
{
	struct xpiece *last = x->np ? &x->p[x->np - 1] : NULL;

	x->size += len;
	/* headers follow each other in lit; data the marker's calls cut */
	if (last && last->file == file && last->off + last->len == off) {
		last->len += len;
		return 0;
	}
	if (x->np == x->pcap) {
		size_t c = x->pcap ? 2 * x->pcap : 64;
		struct xpiece *t = realloc(x->p, c * sizeof(*t));
		if (!t)
			return -ENOMEM;
		x->p = t;
		x->pcap = c;
	}
	x->p[x->np++] = (struct xpiece){ .off = off, .len = len, .file = file };
	return 0;
}

/* libarchive's output while planning: the marker is data of the file
 * being fed; anything else (headers, padding) is kept as it is. */
static ssize_t plan_write(struct archive *ar, void *ud, const void *buf, size_t len)
{
	struct export *x = ud;
	const char *b = buf;
	int r;

	if (b >= export_mark && b < export_mark + sizeof(export_mark)) {
		r = plan_piece(x, x->feed_file, x->feed_off + (uint64_t)(b - export_mark), len);
		x->fed += len;
	} else {
		if (x->nlit + len > x->litcap) {
			size_t c = MAX(2 * x->litcap, x->nlit + len);
			char *t = realloc(x->lit, c);
			if (!t) {
				archive_set_error(ar, ENOMEM, "out of memory");
				return -1;
			}
			x->lit = t;
			x->litcap = c;
		}
		memcpy(x->lit + x->nlit, buf, len);
		r = plan_piece(x, XLIT, x->nlit, len);
		x->nlit += len;
	}
	if (r < 0) {
		archive_set_error(ar, ENOMEM, "out of memory");
		return -1;
	}
	return (ssize_t)len;
}

struct xrange {
	uint64_t off, len;
};

static int range_add(struct xrange **r, size_t *n, size_t *cap, uint64_t off, uint64_t len)
{
	if (*n == *cap) {
		size_t c = *cap ? 2 * *cap : 8;
		struct xrange *t = realloc(*r, c * sizeof(*t));
		if (!t)
			return -ENOMEM;
		*r = t;
		*cap = c;
	}
	(*r)[(*n)++] = (struct xrange){ off, len };
	return 0;
}

/* The sparse map of sf: its data ranges, every hole of the store left
 * out. *ret is NULL and *n 0 for a file of holes only. */
static int export_map(struct export *x, const struct snap_file *sf, struct xrange **ret, size_t *n)
{
	struct store_file *f = NULL;
	uint64_t size = sf->st.size, off = 0;
	size_t cap = 0;
	int r;

	r = store_file_open(x->v->snap, sf->path, &f);
	if (r < 0)
		return err_path(r, sf->path);
	while (off < size) {
		int64_t d = store_file_seek(f, off, SEEK_DATA);
		if (d == -ENXIO)
			break;
		int64_t h = d < 0 ? d : store_file_seek(f, (uint64_t)d, SEEK_HOLE);
		if (h < 0) {
			r = err_set((int)h, "%s: cannot find its data: %s", sf->path, strerror((int)-h));
			goto out;
		}
		r = range_add(ret, n, &cap, (uint64_t)d, (uint64_t)(h - d));
		if (r < 0)
			goto out;
		off = (uint64_t)h;
	}
	r = 0;
out:
	store_file_close(f);
	return r;
}

/* Feeds len bytes of an entry's data to libarchive: its pax writer
 * takes a sparse entry's data up to the next edge of its map in one
 * call and says so with a short count. */
static int ar_write_all(struct archive *ar, const char *path, const void *buf, size_t len)
{
	while (len) {
		la_ssize_t w = archive_write_data(ar, buf, len);
		if (w <= 0)
			return err_set(-EIO, "%s: %s", path, archive_error_string(ar) ?: "the tar writer took nothing");
		buf = (const char *)buf + w;
		len -= (size_t)w;
	}
	return 0;
}

/* Plans file i of the snapshot as one pax entry: its header, and its
 * data as pieces to read when they are sent. */
static int export_file(struct export *x, struct archive *ar, struct archive_entry *e, uint32_t i)
{
	const struct snap_file *sf = &x->v->files[i];
	uint64_t size = sf->st.size, data = size;
	_cleanup_free_ struct xrange *m = NULL;
	size_t nm = 0;
	int r;

	archive_entry_clear(e);
	archive_entry_set_pathname(e, sf->path);
	archive_entry_set_filetype(e, AE_IFREG);
	archive_entry_set_perm(e, 0600);
	archive_entry_set_size(e, (la_int64_t)size);
	archive_entry_set_mtime(e, x->a->fs->started, 0);
	if (sf->st.allocated < size) {
		r = export_map(x, sf, &m, &nm);
		if (r < 0)
			return r;
		data = 0;
		for (size_t k = 0; k < nm; k++) {
			archive_entry_sparse_add_entry(e, (la_int64_t)m[k].off, (la_int64_t)m[k].len);
			data += m[k].len;
		}
		/* a file of holes only still needs an entry for its size */
		if (nm == 0)
			archive_entry_sparse_add_entry(e, (la_int64_t)size, 0);
	}
	if (archive_write_header(ar, e) != ARCHIVE_OK)
		return err_set(-EIO, "%s: %s", sf->path, archive_error_string(ar));
	/* The pax writer takes the whole logical file and passes on what
	 * its sparse map holds. */
	x->feed_file = i;
	x->fed = 0;
	for (uint64_t off = 0; off < size;) {
		size_t n = (size_t)MIN(size - off, (uint64_t)sizeof(export_mark));
		x->feed_off = off;
		r = ar_write_all(ar, sf->path, export_mark, n);
		if (r < 0)
			return r;
		off += n;
	}
	if (x->fed != data)
		return err_set(-EIO, "%s: the tar writer passed on %" PRIu64 " of its %" PRIu64 " bytes of data as they were",
			       sf->path, x->fed, data);
	return 0;
}

/* Plans the whole stream (the store's metadata only: no file data is
 * read). */
static int export_plan(struct export *x)
{
	struct archive *ar = archive_write_new();
	struct archive_entry *e = archive_entry_new();
	int r = 0;

	if (!ar || !e || archive_write_set_format_pax_restricted(ar) != ARCHIVE_OK ||
	    archive_write_set_bytes_per_block(ar, 0) != ARCHIVE_OK ||
	    archive_write_open(ar, x, NULL, plan_write, NULL) != ARCHIVE_OK) {
		r = err_set(-ENOMEM, "cannot start the tar stream");
		goto out;
	}
	for (size_t i = 0; i < x->v->nfiles && r >= 0; i++)
		r = export_file(x, ar, e, (uint32_t)i);
	if (r >= 0 && archive_write_close(ar) != ARCHIVE_OK)
		r = err_set(-EIO, "%s", archive_error_string(ar));
out:
	archive_entry_free(e);
	if (ar)
		archive_write_free(ar);
	return r;
}

/* Fills buf with up to max bytes of the stream from where it stands,
 * reading the data from the store into buf itself. Returns the bytes, 0
 * at the end, or -errno with the detail in err_msg(). */
static ssize_t export_fill(struct export *x, char *buf, size_t max)
{
	size_t done = 0;

	while (done < max && x->cur < x->np) {
		const struct xpiece *p = &x->p[x->cur];
		size_t n = (size_t)MIN(p->len - x->cur_off, (uint64_t)(max - done));

		if (p->file == XLIT) {
			memcpy(buf + done, x->lit + p->off + x->cur_off, n);
		} else {
			const char *path = x->v->files[p->file].path;
			ssize_t r;
			if (!x->f || x->fno != p->file) {
				store_file_close(x->f);
				x->f = NULL;
				r = store_file_open(x->v->snap, path, &x->f);
				if (r < 0)
					return err_path((int)r, path);
				x->fno = p->file;
			}
			if (x->pos + done >= x->size / 2 && fault_hit(FAULT_FS_API_EXPORT_READ))
				r = err_set(-EIO, "injected fault");
			else
				r = store_file_pread(x->f, buf + done, n, p->off + x->cur_off);
			if (r == 0)
				return err_set(-EIO, "%s: shorter than its size", path);
			if (r < 0)
				return err_path((int)r, path);
			n = (size_t)r;
		}
		done += n;
		x->cur_off += n;
		if (x->cur_off == p->len) {
			x->cur++;
			x->cur_off = 0;
		}
	}
	x->pos += done;
	return (ssize_t)done;
}

/* MHD's content reader: the next piece of the stream, read into the
 * buffer MHD sends from. A failure ends the stream short of its
 * Content-Length: the client sees a truncated tar (and the importer
 * refuses it), never a whole-looking wrong one. */
static ssize_t export_read(void *cls, uint64_t pos, char *buf, size_t max)
{
	struct export *x = cls;
	ssize_t n;

	if (x->failed)
		return MHD_CONTENT_READER_END_WITH_ERROR;
	err_clear();
	n = pos == x->pos ? export_fill(x, buf, max)
			  : err_set(-EIO, "asked for byte %" PRIu64 " of the stream at byte %" PRIu64, pos, x->pos);
	if (n > 0)
		return n;
	if (n == 0)
		return MHD_CONTENT_READER_END_OF_STREAM;
	log_warn("snapshot %d/%" PRIu32 ": export ended early: %s", x->v->pid, x->v->n, err_msg());
	x->failed = true;
	return MHD_CONTENT_READER_END_WITH_ERROR;
}

/* The stream into the import's pipe (a restore of a stored snapshot),
 * on a thread of its own; it closes the pipe (the end of the stream). */
static void *export_pipe(void *arg)
{
	struct export *x = arg;
	struct fs *fs = x->a->fs;
	char *buf = malloc(FS_IO_SIZE);
	ssize_t n = buf ? 0 : err_set(-ENOMEM, "out of memory");

	err_clear();
	while (buf) {
		n = export_fill(x, buf, FS_IO_SIZE);
		if (n <= 0)
			break;
		int r = write_full(x->fd, buf, (size_t)n);
		if (r < 0) {
			n = err_set(r, "the import stopped reading: %s", strerror(-r));
			break;
		}
	}
	if (n < 0)
		log_warn("snapshot %d/%" PRIu32 ": export ended early: %s", x->v->pid, x->v->n, err_msg());
	close(x->fd);
	free(buf);
	export_free(x);
	ctl_job_end(fs);
	return NULL;
}

/* A planned export of v (taken over, also on failure), or NULL with
 * the reason in err_msg(). */
static struct export *export_new(struct api *a, struct snapview *v)
{
	struct export *x = calloc(1, sizeof(*x));

	if (!x) {
		snapview_put(a->fs, v);
		err_set(-ENOMEM, "out of memory");
		return NULL;
	}
	x->a = a;
	x->v = v;
	x->fd = -1;
	err_clear();
	if (export_plan(x) < 0) {
		export_free(x);
		return NULL;
	}
	return x;
}

/* A Unix socket's send buffer (208 KiB unless net.core.wmem_default
 * says otherwise) holds a fifth of what export_read fills at a time: MHD
 * sent each fill in pieces, waiting in poll() for the client to read
 * each, and the client waited while the next was read from the store.
 * With room for a whole fill, the client reads one while the next is
 * read. TCP sizes its buffers itself, and a fixed size would end that. */
static void export_sndbuf(struct MHD_Connection *c)
{
	const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
	int dom = 0, size = FS_IO_SIZE; /* the kernel doubles it: its bookkeeping counts too */
	socklen_t len = sizeof(dom);

	if (!ci || getsockopt(ci->connect_fd, SOL_SOCKET, SO_DOMAIN, &dom, &len) < 0 || dom != AF_UNIX)
		return;
	/* FORCE passes net.core.wmem_max (CAP_NET_ADMIN); without it, what
	 * wmem_max allows */
	if (setsockopt(ci->connect_fd, SOL_SOCKET, SO_SNDBUFFORCE, &size, sizeof(size)) < 0)
		(void)setsockopt(ci->connect_fd, SOL_SOCKET, SO_SNDBUF, &size, sizeof(size));
}

static enum MHD_Result get_export(struct api *a, struct MHD_Connection *c, struct req *q, const char *ps,
				  const char *ns)
{
	enum MHD_Result res = MHD_NO;
	struct snapview *v = snap_open(a, c, q, ps, ns, &res);
	struct MHD_Response *resp;
	struct export *x;

	if (!v)
		return res;
	x = export_new(a, v);
	if (!x)
		return problem(a, c, 500, "snapshot %s/%s: cannot export: %s", ps, ns, err_msg());
	/* the tar is read from the store as it is sent: nothing of the
	 * snapshot's data is held in memory or on disk */
	resp = MHD_create_response_from_callback(x->size, FS_IO_SIZE, export_read, x, export_free);
	if (!resp) {
		export_free(x);
		return MHD_NO;
	}
	export_sndbuf(c);
	char disp[96];
	snprintf(disp, sizeof(disp), "attachment; filename=\"%s-%s.tar\"", ps, ns);
	MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/x-tar");
	MHD_add_response_header(resp, "Content-Disposition", disp);
	res = MHD_queue_response(c, 200, resp);
	MHD_destroy_response(resp);
	count(a, 200);
	return res;
}

/* An upload being unpacked into restore/<name>/: the request's handler
 * writes the body into a pipe, a thread reads the tar from it. */
struct import {
	struct api *a;
	uid_t uid;
	gid_t gid;
	char name[72];
	int wfd, rfd;
	pthread_t thread;
	bool started;
	int result;         /* the thread's */
	unsigned status;    /* its HTTP status when it failed */
	char why[600];
	char *wbuf;         /* FS_IO_SIZE: writes gathered for the store */
};

static int make_dirs(struct import *im, const char *path, bool self)
{
	char buf[1100];
	size_t n = strlen(path);
	int r;

	if (n >= sizeof(buf))
		return -ENAMETOOLONG;
	memcpy(buf, path, n + 1);
	for (char *s = buf; (s = strchr(s, '/')); s++) {
		*s = 0;
		r = restore_subdir(im->a->fs, im->uid, im->name, buf);
		*s = '/';
		if (r < 0 && r != -EEXIST)
			return r;
	}
	if (self) {
		r = restore_subdir(im->a->fs, im->uid, im->name, buf);
		if (r < 0 && r != -EEXIST)
			return r;
	}
	return 0;
}

/* Unpacks one tar stream into the restore; refuses (422) anything that
 * is not a plain file or directory inside it, and a stream that ends
 * early or whose data does not match its headers. */
static int import_tar(struct import *im)
{
	struct archive *ar = archive_read_new();
	struct archive_entry *e;
	int r = 0, ar_r;

	if (!ar)
		return -ENOMEM;
	archive_read_support_format_tar(ar);
	if (archive_read_open_fd(ar, im->rfd, FS_IO_SIZE) != ARCHIVE_OK) {
		r = err_set(-EINVAL, "not a tar stream: %s", archive_error_string(ar));
		goto out;
	}
	while ((ar_r = archive_read_next_header(ar, &e)) == ARCHIVE_OK) {
		const char *path = archive_entry_pathname(e);
		char clean[1100];
		size_t n;

		if (!path)
			path = "";
		while (!strncmp(path, "./", 2))
			path += 2;
		n = strlen(path);
		if (n >= sizeof(clean)) {
			r = err_set(-EINVAL, "%.64s...: path too long", path);
			goto out;
		}
		memcpy(clean, path, n + 1);
		bool dir = archive_entry_filetype(e) == AE_IFDIR;
		if (dir && n && clean[n - 1] == '/')
			clean[--n] = 0;
		if (dir && n == 0)
			continue;
		if (archive_entry_hardlink(e) || archive_entry_symlink(e) ||
		    (!dir && archive_entry_filetype(e) != AE_IFREG)) {
			r = err_set(-EINVAL, "%s: not a plain file or directory (links and devices are refused)", clean);
			goto out;
		}
		if (store_path_valid(clean) < 0) {
			r = err_set(-EINVAL, "%s: not a path inside a snapshot: %s", clean, err_msg());
			goto out;
		}
		if (dir) {
			r = make_dirs(im, clean, true);
			if (r < 0) {
				r = err_set(r, "%s: %s", clean, strerror(-r));
				goto out;
			}
			continue;
		}
		if (!archive_entry_size_is_set(e) || archive_entry_size(e) < 0) {
			r = err_set(-EINVAL, "%s: no size", clean);
			goto out;
		}
		uint64_t size = (uint64_t)archive_entry_size(e);
		struct rfile *rf = NULL;
		r = make_dirs(im, clean, false);
		if (r >= 0)
			r = restore_create(im->a->fs, im->uid, im->name, clean, &rf);
		if (r < 0) {
			r = err_set(r == -EEXIST ? -EINVAL : r, "%s: %s", clean,
				    r == -EEXIST ? "twice in the stream" : strerror(-r));
			goto out;
		}
		const void *buf;
		size_t len;
		la_int64_t off;
		int br;
		/* libarchive hands out pieces cut at its own block edges; the
		 * store's fast path takes block-aligned writes, so pieces are
		 * gathered into runs of up to FS_IO_SIZE first */
		uint64_t woff = 0;
		size_t wlen = 0;
		while ((br = archive_read_data_block(ar, &buf, &len, &off)) == ARCHIVE_OK) {
			if (off < 0 || (uint64_t)off + len > size) {
				r = err_set(-EINVAL, "%s: data beyond its size of %" PRIu64 " bytes", clean, size);
				break;
			}
			while (len) {
				if (wlen && ((uint64_t)off != woff + wlen || wlen == FS_IO_SIZE)) {
					r = restore_write(rf, im->wbuf, wlen, woff);
					wlen = 0;
					if (r < 0)
						break;
				}
				if (!wlen)
					woff = (uint64_t)off;
				size_t n = MIN(len, FS_IO_SIZE - wlen);
				memcpy(im->wbuf + wlen, buf, n);
				wlen += n;
				buf = (const char *)buf + n;
				len -= n;
				off += (la_int64_t)n;
			}
			if (r < 0)
				break;
		}
		if (r >= 0 && wlen)
			r = restore_write(rf, im->wbuf, wlen, woff);
		if (r < 0 && !*err_msg())
			err_set(r, "%s", strerror(-r));
		if (r < 0)
			r = err_set(r, "%s: %s", clean, err_msg());
		if (r >= 0 && br != ARCHIVE_EOF)
			r = err_set(-EINVAL, "%s: %s", clean, archive_error_string(ar) ?: "cannot read its data");
		if (r >= 0)
			r = restore_extend(rf, size);
		int rr = restore_release(im->a->fs, rf);
		if (r >= 0 && rr < 0)
			r = err_path(rr, clean);
		if (r < 0)
			goto out;
	}
	if (ar_r != ARCHIVE_EOF)
		r = err_set(-EINVAL, "the tar stream: %s", archive_error_string(ar) ?: "malformed");
out:
	archive_read_free(ar);
	return r;
}

static void *import_run(void *arg)
{
	struct import *im = arg;
	char drain[4096];

	err_clear();
	im->result = import_tar(im);
	if (im->result < 0) {
		snprintf(im->why, sizeof(im->why), "%s", err_msg());
		im->status = im->result == -EINVAL ? 422 : errno_status(im->result);
	}
	/* whatever follows is read and dropped, so that the upload ends
	 * and the client gets its answer */
	while (read(im->rfd, drain, sizeof(drain)) > 0)
		;
	return NULL;
}

static enum MHD_Result import_begin(struct api *a, struct MHD_Connection *c, struct req *q, const char *name)
{
	struct import *im;
	int p[2], r;

	if (!name || !restore_name_ok(name))
		return problem(a, c, 400, "restore name '%s': letters, digits, '.', '_', '-', not first '.' or '-', at most 64",
			       name ? name : "");
	im = calloc(1, sizeof(*im));
	if (!im || !(im->wbuf = malloc(FS_IO_SIZE))) {
		free(im);
		return MHD_NO;
	}
	im->a = a;
	im->uid = q->uid;
	im->gid = q->gid;
	im->wfd = im->rfd = -1;
	snprintf(im->name, sizeof(im->name), "%s", name);
	err_clear();
	r = restore_mkdir(a->fs, q->uid, q->gid, name);
	if (r < 0) {
		free(im->wbuf);
		free(im);
		if (r == -EEXIST)
			return problem(a, c, 409, "restore %s: exists already", name);
		return problem_errno(a, c, r, name);
	}
	/* ?options=accept-changed-files,lazy: restore/<name>/ctl's words */
	const char *opts = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "options");
	if (opts && *opts) {
		char line[128];
		snprintf(line, sizeof(line), "%s", opts);
		for (char *s = line; *s; s++)
			if (*s == ',')
				*s = ' ';
		r = restore_ctl(a->fs, q->uid, name, line, strlen(line));
		if (r < 0) {
			restore_rmdir(a->fs, q->uid, name);
			free(im->wbuf);
			free(im);
			return problem(a, c, 400, "restore %s: options '%s': %s", name, opts,
				       *err_msg() ? err_msg() : strerror(-r));
		}
	}
	if (pipe2(p, O_CLOEXEC) < 0 ||
	    (im->rfd = p[0], im->wfd = p[1], fcntl(p[1], F_SETPIPE_SZ, (int)FS_IO_SIZE), pthread_create(&im->thread, NULL, import_run, im) != 0)) {
		if (im->rfd >= 0) {
			close(im->rfd);
			close(im->wfd);
		}
		restore_rmdir(a->fs, q->uid, name);
		free(im->wbuf);
		free(im);
		return problem(a, c, 503, "restore %s: cannot start the import", name);
	}
	im->started = true;
	q->imp = im;
	return MHD_YES;
}

/* Ends the import: the stream is closed, the thread joined; *ok says
 * whether every file arrived. On failure the restore is removed: a
 * refused upload leaves nothing. */
static bool import_end(struct api *a, struct import *im)
{
	if (im->wfd >= 0)
		close(im->wfd);
	im->wfd = -1;
	if (im->started)
		pthread_join(im->thread, NULL);
	im->started = false;
	close(im->rfd);
	im->rfd = -1;
	if (im->result < 0 || im->status) {
		restore_rmdir(a->fs, im->uid, im->name);
		return false;
	}
	return true;
}

static json_t *restore_json(struct api *a, uid_t uid, const char *name)
{
	_cleanup_free_ char *text = NULL;
	size_t len;
	char href[128];

	if (restore_status(a->fs, uid, name, &text, &len) < 0)
		return NULL;
	char *nl = strchr(text, '\n');
	snprintf(href, sizeof(href), "/v1/restores/%s", name);
	json_t *o = json_pack("{s:s, s:s%, s:s, s:s}", "name", name, "status", text,
			      nl ? (size_t)(nl - text) : len, "text", text, "href", href);
	return o;
}

static enum MHD_Result import_finish(struct api *a, struct MHD_Connection *c, struct req *q)
{
	struct import *im = q->imp;
	enum MHD_Result res;

	q->imp = NULL;
	bool ok = import_end(a, im);
	if (ok) {
		/* The answer says whether the snapshot verified: the restore
		 * checks names, sizes and every hash (as after cp -r) once the
		 * copy is whole and quiet; this waits for that verdict, however
		 * long hashing a large snapshot takes (the connection's idle
		 * bound is lifted meanwhile: nothing is sent until then). A
		 * refused one is removed, as a refused upload is. */
		MHD_set_connection_option(c, MHD_CONNECTION_OPTION_TIMEOUT, 0u);
		err_clear();
		int r = restore_wait_verified(a->fs, im->uid, im->name);
		if (r < 0) {
			snprintf(im->why, sizeof(im->why), "refused: %s", err_msg());
			im->status = r == -EINVAL ? 422 : errno_status(r);
			restore_rmdir(a->fs, im->uid, im->name);
			ok = false;
		}
	}
	if (!ok) {
		log_warn("restore %s: upload refused: %s", im->name, im->why);
		res = problem(a, c, im->status ? im->status : 500, "restore %s: %s", im->name, im->why);
	} else {
		log_info("restore %s: tar stream received through the API from uid %u", im->name, (unsigned)im->uid);
		json_t *o = restore_json(a, im->uid, im->name);
		res = o ? send_json(a, c, 202, o) : problem(a, c, 500, "restore %s: no status", im->name);
	}
	free(im->wbuf);
	free(im);
	return res;
}

/* POST /v1/restores {"name": N, "snapshot": "P/N"}: the stored
 * snapshot's files copied into restore/N/, as cp -r would. */
static enum MHD_Result post_restore_snapshot(struct api *a, struct MHD_Connection *c, struct req *q)
{
	const char *name = NULL, *snap = NULL, *k;
	json_error_t jerr;
	json_t *body, *v;
	char ps[16], ns[16];

	if (q->too_big)
		return problem(a, c, 413, "request body larger than %u bytes", API_BODY_MAX);
	body = json_loadb(q->body ? q->body : "", q->len, JSON_REJECT_DUPLICATES, &jerr);
	if (!body)
		return problem(a, c, 400, "body: not JSON: %s", jerr.text);
	if (!json_is_object(body)) {
		json_decref(body);
		return problem(a, c, 400, "body: a JSON object expected");
	}
	json_object_foreach(body, k, v) {
		if (!strcmp(k, "name") && json_is_string(v))
			name = json_string_value(v);
		else if (!strcmp(k, "snapshot") && json_is_string(v))
			snap = json_string_value(v);
		else {
			enum MHD_Result res = problem(a, c, 400, "body: unknown field or not a string: '%s' (known: name, snapshot)", k);
			json_decref(body);
			return res;
		}
	}
	if (!name || !snap || sscanf(snap, "%15[0-9]/%15[0-9]", ps, ns) != 2 ||
	    strlen(ps) + strlen(ns) + 1 != strlen(snap)) {
		json_decref(body);
		return problem(a, c, 400, "body: name and snapshot (\"PID/N\") are needed");
	}
	enum MHD_Result res = MHD_NO;
	struct snapview *sv = snap_open(a, c, q, ps, ns, &res);
	if (!sv) {
		json_decref(body);
		return res;
	}
	if (!restore_name_ok(name)) {
		snapview_put(a->fs, sv);
		res = problem(a, c, 400, "restore name '%s': letters, digits, '.', '_', '-', not first '.' or '-', at most 64",
			      name);
		json_decref(body);
		return res;
	}
	/* the export's tar stream, read back by the import: one path for
	 * both, and for the upload */
	struct export *x = export_new(a, sv);
	if (!x) {
		res = problem(a, c, 500, "snapshot %s: cannot export: %s", snap, err_msg());
		json_decref(body);
		return res;
	}
	struct req sub = *q;
	sub.imp = NULL;
	res = import_begin(a, c, &sub, name);
	if (!sub.imp) {
		export_free(x);
		json_decref(body);
		return res;
	}
	x->fd = sub.imp->wfd;
	sub.imp->wfd = -1; /* the export closes it */
	if (ctl_job_spawn(a->fs, export_pipe, x) < 0) {
		close(x->fd);
		export_free(x);
		sub.imp->result = -EAGAIN;
		snprintf(sub.imp->why, sizeof(sub.imp->why), "cannot start a thread");
	}
	json_decref(body);
	q->imp = sub.imp;
	return import_finish(a, c, q);
}

static enum MHD_Result get_restore(struct api *a, struct MHD_Connection *c, struct req *q, const char *name)
{
	if (!restore_name_ok(name))
		return problem(a, c, 400, "restore name '%s': not a restore name", name);
	json_t *o = restore_json(a, q->uid, name);
	if (!o)
		return problem(a, c, 404, "restore %s: no such restore", name);
	return send_json(a, c, 200, o);
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

/* ---- the deadline of a request's arrival ------------------------------------ */

static void on_connection(void *cls, struct MHD_Connection *c, void **socket_context,
			  enum MHD_ConnectionNotificationCode code)
{
	struct api *a = ((struct listener *)cls)->a;
	struct conn *k = *socket_context;

	if (code == MHD_CONNECTION_NOTIFY_STARTED) {
		const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
		k = calloc(1, sizeof(*k));
		if (!k || !ci) {
			free(k);
			return; /* unwatched: the idle bound still holds */
		}
		k->fd = ci->connect_fd;
		k->t0 = now_ns();
		pthread_mutex_lock(&a->lock);
		k->next = a->conns;
		a->conns = k;
		pthread_mutex_unlock(&a->lock);
		*socket_context = k;
		return;
	}
	if (!k)
		return;
	/* closed: MHD closes the fd after this returns, so the watchdog,
	 * which shuts fds down under the lock, never touches a reused one */
	pthread_mutex_lock(&a->lock);
	for (struct conn **pp = &a->conns; *pp; pp = &(*pp)->next)
		if (*pp == k) {
			*pp = k->next;
			break;
		}
	pthread_mutex_unlock(&a->lock);
	free(k);
	*socket_context = NULL;
}

static struct conn *conn_of(struct MHD_Connection *c)
{
	const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
	return ci ? ci->socket_context : NULL;
}

static void conn_answering(struct api *a, struct MHD_Connection *c, bool on)
{
	struct conn *k = conn_of(c);

	if (!k)
		return;
	pthread_mutex_lock(&a->lock);
	k->answering = on;
	if (!on)
		k->t0 = now_ns();
	pthread_mutex_unlock(&a->lock);
}

static void *watchdog(void *arg)
{
	struct api *a = arg;
	struct timespec until;

	pthread_mutex_lock(&a->lock);
	while (!a->quit) {
		uint64_t now = now_ns();
		for (struct conn *k = a->conns; k; k = k->next) {
			if (k->answering || k->dropped || now - k->t0 < API_REQ_DEADLINE_NS)
				continue;
			/* MHD's own thread sees the end of the stream and
			 * closes the connection */
			shutdown(k->fd, SHUT_RDWR);
			k->dropped = true;
			log_info("API: a request not whole after %llu s dropped",
				 (unsigned long long)(API_REQ_DEADLINE_NS / 1000000000));
		}
		clock_gettime(CLOCK_REALTIME, &until);
		until.tv_nsec += 250 * 1000000;
		if (until.tv_nsec >= 1000000000) {
			until.tv_sec++;
			until.tv_nsec -= 1000000000;
		}
		pthread_cond_timedwait(&a->cond, &a->lock, &until);
	}
	pthread_mutex_unlock(&a->lock);
	return NULL;
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

/* Compares in time that does not depend on where they differ. */
static bool token_equal(const char *given, const char *token)
{
	size_t n = strlen(token), m = strlen(given);
	unsigned char d = (unsigned char)(n != m);

	for (size_t i = 0; i < n; i++)
		d |= (unsigned char)(token[i] ^ (i < m ? given[i] : 0));
	return d == 0;
}

static bool peer_cred(struct MHD_Connection *c, struct req *q)
{
	const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
	struct ucred uc;
	socklen_t len = sizeof(uc);

	if (!ci || getsockopt(ci->connect_fd, SOL_SOCKET, SO_PEERCRED, &uc, &len) < 0)
		return false;
	q->uid = uc.uid;
	q->gid = uc.gid;
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
	bool put = !strcmp(method, "PUT");

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
		if (n == 4 && !strcmp(p[3], "policy")) {
			uint64_t pid;
			if (!get && !put && !del)
				goto not_allowed;
			if (!parse_num(p[2], INT32_MAX, &pid))
				return problem(a, c, 400, "process '%s': not a pid", p[2]);
			if (get)
				return get_policy(a, c, q, (pid_t)pid);
			return put ? put_policy(a, c, q, (pid_t)pid) : delete_policy(a, c, q, (pid_t)pid);
		}
	}
	if (!strcmp(p[1], "jobs") && n == 3) {
		if (!get)
			goto not_allowed;
		return get_job(a, c, q, p[2]);
	}
	if (!strcmp(p[1], "jobs") && n == 4 && !strcmp(p[3], "events")) {
		if (!get)
			goto not_allowed;
		return get_job_events(a, c, q, p[2]);
	}
	if (!strcmp(p[1], "snapshots")) {
		if (n == 2) {
			if (!get)
				goto not_allowed;
			return get_snapshots(a, c, q);
		}
		if (n == 5 && !strcmp(p[4], "export")) {
			if (!get)
				goto not_allowed;
			return get_export(a, c, q, p[2], p[3]);
		}
		if (n == 4) {
			if (get)
				return get_snapshot(a, c, q, p[2], p[3]);
			if (del)
				return delete_snapshot(a, c, q, p[2], p[3]);
			goto not_allowed;
		}
	}
	if (!strcmp(p[1], "restores")) {
		if (n == 2 && post)
			return q->imp ? import_finish(a, c, q) : post_restore_snapshot(a, c, q);
		if (n == 3 && get)
			return get_restore(a, c, q, p[2]);
		if (n <= 3)
			goto not_allowed;
	}
	return problem(a, c, 404, "no such resource '%s'", url);

not_allowed:
	return problem(a, c, 405, "%s is not allowed on '%s'", method, url);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method,
				  const char *version, const char *upload, size_t *upload_size, void **con_cls)
{
	struct listener *l = cls;
	struct api *a = l->a;
	struct req *q = *con_cls;

	if (!q) {
		q = calloc(1, sizeof(*q));
		if (!q)
			return MHD_NO;
		if (l->tcp) {
			/* no peer credentials on TCP: the token stands for
			 * its file's owner */
			const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_AUTHORIZATION);
			q->unauth = !h || strncmp(h, "Bearer ", 7) || !token_equal(h + 7, a->token);
			q->cred_ok = !q->unauth;
			q->uid = a->token_uid;
			q->gid = a->token_uid;
		} else {
			q->cred_ok = peer_cred(c, q);
		}
		*con_cls = q;
		/* A tar upload streams into its restore as it comes; anything
		 * else is a small JSON body. */
		const char *name = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "name");
		if (q->cred_ok && !strcmp(method, "POST") && !strcmp(url, "/v1/restores") && name) {
			conn_answering(a, c, true);
			return import_begin(a, c, q, name);
		}
		return MHD_YES;
	}
	if (*upload_size && q->imp) {
		if (q->imp->wfd >= 0 && write_full(q->imp->wfd, upload, *upload_size) < 0) {
			/* the import has stopped reading: it failed; the
			 * rest of the upload is dropped */
			close(q->imp->wfd);
			q->imp->wfd = -1;
		}
		*upload_size = 0;
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
	conn_answering(a, c, true);
	if (q->unauth)
		return problem(a, c, 401, "a bearer token is needed (Authorization: Bearer TOKEN), and no good one came");
	if (!q->cred_ok)
		return problem(a, c, 403, "cannot tell who is calling (SO_PEERCRED)");
	err_clear();
	return route(a, c, q, url, method);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode t)
{
	struct req *q = *con_cls;
	struct api *a = ((struct listener *)cls)->a;

	conn_answering(a, c, false);
	if (q) {
		/* an upload cut short: what arrived is dropped with its restore */
		if (q->imp) {
			q->imp->result = q->imp->result < 0 ? q->imp->result : -ECONNABORTED;
			import_end(a, q->imp);
			log_warn("restore %s: upload ended before its end; nothing kept", q->imp->name);
			free(q->imp->wbuf);
			free(q->imp);
		}
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

/* HOST:PORT ([v6]:PORT too): a TCP listener. Anything else is a path. */
static bool is_tcp(const char *spec)
{
	const char *colon = strrchr(spec, ':');
	uint64_t port;

	return spec[0] != '/' && colon && parse_u64(colon + 1, &port) >= 0 && port > 0 && port < 65536;
}

static int listen_tcp(const char *spec, int *ret)
{
	_cleanup_free_ char *host = strdup(spec);
	struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE | AI_NUMERICSERV }, *ai = NULL;
	char *colon;
	int fd, r, one = 1;

	if (!host)
		return -ENOMEM;
	colon = strrchr(host, ':');
	*colon = 0;
	char *h = host;
	if (h[0] == '[' && colon > h && colon[-1] == ']') {
		h++;
		colon[-1] = 0;
	}
	r = getaddrinfo(*h ? h : NULL, colon + 1, &hints, &ai);
	if (r != 0)
		return err_set(-EINVAL, "api address '%s': %s", spec, gai_strerror(r));
	fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0) {
		r = err_set(negerrno(), "api address '%s': %m", spec);
		freeaddrinfo(ai);
		return r;
	}
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, 128) < 0) {
		r = err_set(negerrno(), "api address '%s': %m", spec);
		close(fd);
		freeaddrinfo(ai);
		return r;
	}
	/* Anyone who can reach it and holds the token acts as its owner:
	 * beyond this host, that is the network's business too. */
	bool loopback = (ai->ai_family == AF_INET &&
			 (ntohl(((struct sockaddr_in *)ai->ai_addr)->sin_addr.s_addr) >> 24) == 127) ||
			(ai->ai_family == AF_INET6 && IN6_IS_ADDR_LOOPBACK(&((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr));
	if (!loopback)
		log_warn("API on %s listens beyond loopback: the bearer token travels in clear text (no TLS); "
			 "keep it to a network you trust", spec);
	freeaddrinfo(ai);
	*ret = fd;
	return 0;
}

/* Reads the token: the file's first line, at least 16 bytes; its owner
 * is whom requests with it act as. */
static int read_token(const char *file, char **ret, uid_t *owner)
{
	_cleanup_free_ char *buf = NULL;
	struct stat st;
	size_t len;
	int r;

	if (!file)
		return err_set(-EINVAL, "-o api=HOST:PORT needs -o api_token=FILE");
	r = read_file_full(file, &buf, &len);
	if (r < 0 || stat(file, &st) < 0)
		return err_set(r < 0 ? r : negerrno(), "api_token '%s': cannot read it", file);
	buf[strcspn(buf, "\r\n")] = 0;
	if (strlen(buf) < 16)
		return err_set(-EINVAL, "api_token '%s': shorter than 16 characters", file);
	if (st.st_mode & 0077)
		log_warn("api_token '%s' can be read by others than its owner (mode %04o)", file,
			 (unsigned)(st.st_mode & 07777));
	*owner = st.st_uid;
	*ret = TAKE_PTR(buf);
	return 0;
}

/* Starts l's HTTP server on fd (taken over). */
static int listener_start(struct listener *l, int fd, const char *spec)
{
	l->mhd = MHD_start_daemon(MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_POLL,
				  0, NULL, NULL, on_request, l,
				  MHD_OPTION_LISTEN_SOCKET, fd,
				  MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)API_IDLE_S,
				  MHD_OPTION_CONNECTION_LIMIT, (unsigned)API_CONN_MAX,
				  MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)API_CONN_MEMORY,
				  MHD_OPTION_NOTIFY_COMPLETED, on_completed, l,
				  MHD_OPTION_NOTIFY_CONNECTION, on_connection, l,
				  MHD_OPTION_END);
	if (!l->mhd) {
		close(fd);
		return err_set(-EIO, "api %s '%s': cannot start the HTTP server", l->tcp ? "address" : "socket", spec);
	}
	log_info("API on %s%s", l->tcp ? "tcp " : "", spec);
	return 0;
}

int api_start(struct fs *fs, const char *spec, const char *tcp_spec, const char *token_file, struct api **ret)
{
	_cleanup_free_ char *token = NULL;
	const char *path = NULL;
	uid_t token_uid = 0;
	struct api *a;
	int ufd = -1, tfd = -1, r;

	/* -o api=HOST:PORT alone: TCP instead of the socket */
	if (spec && is_tcp(spec)) {
		if (tcp_spec)
			return err_set(-EINVAL, "api=%s is TCP already; api_tcp=%s would be a second one", spec, tcp_spec);
		tcp_spec = spec;
	} else {
		path = spec;
	}
	if (tcp_spec && !is_tcp(tcp_spec))
		return err_set(-EINVAL, "api_tcp '%s': not HOST:PORT", tcp_spec);
	if (fault_hit(FAULT_FS_API_LISTEN))
		return err_set(-EIO, "api socket '%s': injected fault", path ? path : tcp_spec);
	if (tcp_spec) {
		r = read_token(token_file, &token, &token_uid);
		if (r < 0)
			return r;
	}
	if (path) {
		r = listen_unix(path, &ufd);
		if (r < 0)
			return r;
	}
	if (tcp_spec) {
		r = listen_tcp(tcp_spec, &tfd);
		if (r < 0)
			goto err_close;
	}
	a = calloc(1, sizeof(*a));
	if (!a || (path && !(a->path = strdup(path)))) {
		free(a);
		r = -ENOMEM;
		goto err_close;
	}
	a->token = TAKE_PTR(token);
	a->token_uid = token_uid;
	a->fs = fs;
	pthread_mutex_init(&a->lock, NULL);
	pthread_mutex_init(&a->save_lock, NULL);
	pthread_cond_init(&a->cond, NULL);
	jobs_load(a);
	if (path) {
		a->lis[a->nlis] = (struct listener){ .a = a };
		r = listener_start(&a->lis[a->nlis], ufd, path);
		ufd = -1;
		if (r < 0)
			goto err_free;
		a->nlis++;
	}
	if (tcp_spec) {
		a->lis[a->nlis] = (struct listener){ .a = a, .tcp = true };
		r = listener_start(&a->lis[a->nlis], tfd, tcp_spec);
		tfd = -1;
		if (r < 0)
			goto err_free;
		a->nlis++;
	}
	a->watchdog_started = pthread_create(&a->watchdog, NULL, watchdog, a) == 0;
	if (!a->watchdog_started)
		log_warn("API: no thread to drop slow requests; only the idle bound holds");
	*ret = a;
	return 0;

err_free:
	api_free(a);
	return r;
err_close:
	if (ufd >= 0) {
		close(ufd);
		unlink(path);
	}
	if (tfd >= 0)
		close(tfd);
	return r;
}

void api_stop(struct api *a)
{
	if (!a)
		return;
	/* long polls and event streams end now */
	pthread_mutex_lock(&a->lock);
	a->quit = true;
	pthread_cond_broadcast(&a->cond);
	pthread_mutex_unlock(&a->lock);
	if (a->watchdog_started)
		pthread_join(a->watchdog, NULL);
	a->watchdog_started = false;
	for (size_t i = 0; i < a->nlis; i++)
		MHD_stop_daemon(a->lis[i].mhd);
	a->nlis = 0;
	if (a->path)
		unlink(a->path);
	free(a->path);
	a->path = NULL;
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
	if (a->token)
		explicit_bzero(a->token, strlen(a->token));
	free(a->token);
	pthread_cond_destroy(&a->cond);
	pthread_mutex_destroy(&a->save_lock);
	pthread_mutex_destroy(&a->lock);
	free(a);
}
