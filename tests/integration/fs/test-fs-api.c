/*
 * The daemon's REST API through its real Unix socket, with curl as the
 * client: a checkpoint requested over HTTP, its job long-polled to the
 * end, the snapshot listed, described and deleted (and seen to come and
 * go in the mount too), the target still passing its own check; bad
 * input of every kind answered with a problem document and its status,
 * changing nothing; another user (nobody, through setpriv) refused what
 * is root's; the faults of the API's own paths (410, 411).
 */
#include <check.h>
#include <jansson.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/integration/fs/fs-harness.h"

#ifndef HAVE_ENGINE
#define HAVE_ENGINE 0
#endif

#define USER_UID 65534

static char sock[56];

/* Mounts with the API on a socket of the test's own, in a directory
 * under /tmp that every user can reach (H.base is 0700). */
static void mount_api(void)
{
	snprintf(sock, sizeof(sock), "/tmp/ckptfs-api-%s/api.sock", strrchr(H.base, '/') + 1);
	snprintf(H.opts, sizeof(H.opts), "api=%s", sock);
	harness_remount();
	ck_assert_msg(wait_file(sock, 5000), "no API socket %s", sock);
}

static void unmount_api(void)
{
	char dir[sizeof(sock)];

	/* exit 0: under the sanitizers, also no leak and no error */
	int st = harness_umount();
	if (st != 0) {
		char *log = sh_out("tail -40 '%s/daemon.log'", H.base);
		ck_abort_msg("the daemon exited %d; log:\n%s", st, log);
	}
	snprintf(dir, sizeof(dir), "%s", sock);
	*strrchr(dir, '/') = 0;
	sh("rm -rf '%s'", dir);
}

struct resp {
	int code;
	json_t *json; /* NULL when the body is not JSON */
	char *body;
};

static void resp_free(struct resp *r)
{
	json_decref(r->json);
	free(r->body);
}

/* One request with curl. body: NULL for none, else sent as it is;
 * as_user: run curl as nobody. */
static struct resp http_as(bool as_user, const char *method, const char *path, const char *body)
{
	char file[PATH_MAX];
	struct resp r = { 0 };
	char *out;

	snprintf(file, sizeof(file), "%s/body", H.work);
	if (body) {
		FILE *f = fopen(file, "we");
		ck_assert_ptr_nonnull(f);
		fputs(body, f);
		fclose(f);
		chmod(file, 0644);
	}
	out = sh_out("%s curl -sS --path-as-is --max-time 60 --unix-socket '%s' -X %s %s%s%s -w '\\n%%{http_code}' 'http://localhost%s'",
		     as_user ? "setpriv --reuid=65534 --regid=65534 --clear-groups" : "", sock, method,
		     body ? "-H 'Content-Type: application/json' --data-binary @- <'" : "", body ? file : "",
		     body ? "'" : "", path);
	char *nl = strrchr(out, '\n');
	ck_assert_msg(nl, "curl said: %s", out);
	r.code = atoi(nl + 1);
	*nl = 0;
	r.body = out;
	r.json = json_loads(out, JSON_DECODE_ANY, NULL);
	return r;
}

static struct resp http(const char *method, const char *path, const char *body)
{
	return http_as(false, method, path, body);
}

/* Asserts a problem document with this status whose detail has want. */
static void assert_problem(struct resp *r, int code, const char *want, const char *what)
{
	ck_assert_msg(r->code == code, "%s: status %d, want %d: %s", what, r->code, code, r->body);
	const char *d = json_string_value(json_object_get(r->json, "detail"));
	ck_assert_msg(d && json_integer_value(json_object_get(r->json, "status")) == code,
		      "%s: not a problem document: %s", what, r->body);
	ck_assert_msg(strstr(d, want), "%s: detail '%s' lacks '%s'", what, d, want);
}

static size_t count_snapshots(void)
{
	struct resp r = http("GET", "/v1/snapshots", NULL);
	ck_assert_int_eq(r.code, 200);
	size_t n = json_array_size(json_object_get(r.json, "snapshots"));
	resp_free(&r);
	return n;
}

/* Requests a checkpoint of pid; returns the job's id. */
static json_int_t start_checkpoint(pid_t pid, const char *body)
{
	char path[64];

	snprintf(path, sizeof(path), "/v1/processes/%d/checkpoints", pid);
	struct resp r = http("POST", path, body);
	ck_assert_msg(r.code == 202, "checkpoint: %d %s", r.code, r.body);
	json_int_t id = json_integer_value(json_object_get(r.json, "id"));
	ck_assert_int_gt(id, 0);
	resp_free(&r);
	return id;
}

/* Long-polls job id until it ends; returns the job. */
static struct resp wait_job(json_int_t id)
{
	char path[64];

	snprintf(path, sizeof(path), "/v1/jobs/%lld?wait=30", (long long)id);
	for (int i = 0; i < 10; i++) {
		struct resp r = http("GET", path, NULL);
		ck_assert_msg(r.code == 200, "job: %d %s", r.code, r.body);
		const char *st = json_string_value(json_object_get(r.json, "state"));
		if (st && strcmp(st, "running"))
			return r;
		resp_free(&r);
	}
	ck_abort_msg("job %lld never ended", (long long)id);
}

START_TEST(test_checkpoint_job)
{
	char dir[PATH_MAX], path[128], want[64];
	pid_t pid;

	mount_api();
	pid = target_start(dir);

	/* the target is among the processes */
	struct resp r = http("GET", "/v1/processes", NULL);
	ck_assert_int_eq(r.code, 200);
	bool seen = false;
	size_t i;
	json_t *p;
	json_array_foreach(json_object_get(r.json, "processes"), i, p)
		seen |= json_integer_value(json_object_get(p, "pid")) == pid;
	ck_assert_msg(seen, "pid %d not listed: %s", pid, r.body);
	resp_free(&r);

	json_int_t id = start_checkpoint(pid, "{\"mode\": \"run\"}");
	r = wait_job(id);
	snprintf(want, sizeof(want), "%d/1", pid);
	ck_assert_msg(!strcmp(json_string_value(json_object_get(r.json, "state")), "done") &&
			      !strcmp(json_string_value(json_object_get(r.json, "snapshot")) ?: "", want),
		      "job: %s", r.body);
	resp_free(&r);

	/* the same snapshot, through the API and the mount */
	ck_assert_int_eq(count_snapshots(), 1);
	snprintf(path, sizeof(path), "/v1/snapshots/%d/1", pid);
	r = http("GET", path, NULL);
	ck_assert_msg(r.code == 200, "%d %s", r.code, r.body);
	json_t *files = json_object_get(r.json, "files");
	ck_assert_msg(json_array_size(files) > 3, "files: %s", r.body);
	json_array_foreach(files, i, p) {
		char *sz = sh_out("stat -c %%s \"$MNT/%d/1/%s\"", pid, json_string_value(json_object_get(p, "path")));
		ck_assert_msg(strtoull(sz, NULL, 10) == (unsigned long long)json_integer_value(json_object_get(p, "size")),
			      "%s: size %s in the mount, %lld in the API", json_string_value(json_object_get(p, "path")),
			      sz, (long long)json_integer_value(json_object_get(p, "size")));
		free(sz);
	}
	resp_free(&r);

	/* the process kept running and passes its own check */
	char *v = target_verdict(dir);
	ck_assert_str_eq(v, "ok\n");
	free(v);

	/* metrics count it */
	char *m = sh_out("curl -sS --unix-socket '%s' http://localhost/metrics", sock);
	ck_assert_msg(strstr(m, "ckptfs_checkpoints_total{result=\"ok\"} 1\n") &&
			      strstr(m, "ckptfs_checkpoint_duration_seconds_count 1\n"),
		      "metrics:\n%s", m);
	free(m);

	/* the OpenAPI document is served */
	r = http("GET", "/v1/openapi.json", NULL);
	ck_assert_msg(r.code == 200 && json_object_get(json_object_get(r.json, "paths"), "/v1/jobs/{id}"), "%s",
		      r.body);
	resp_free(&r);

	r = http("DELETE", path, NULL);
	ck_assert_msg(r.code == 204, "delete: %d %s", r.code, r.body);
	resp_free(&r);
	ck_assert_int_eq(count_snapshots(), 0);
	ck_assert_int_ne(sh("test -e \"$MNT/%d/1\"", pid), 0);
	r = http("GET", path, NULL);
	assert_problem(&r, 404, "no such snapshot", "deleted snapshot");
	resp_free(&r);
	unmount_api();
}
END_TEST

START_TEST(test_bad_input)
{
	char dir[PATH_MAX], path[128];
	pid_t pid;

	mount_api();
	pid = target_start(dir);
	snprintf(path, sizeof(path), "/v1/processes/%d/checkpoints", pid);

	static const struct {
		const char *body, *want;
	} bad[] = {
		{ "{", "not JSON" },
		{ "[1,2]", "a JSON object expected" },
		{ "{\"mode\": \"run\", \"extra\": 1}", "unknown field 'extra'" },
		{ "{\"mode\": \"run\", \"mode\": \"kill\"}", "not JSON" },
		{ "{\"mode\": \"freeze\"}", "mode must be" },
		{ "{\"mode\": 3}", "mode must be" },
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct resp r = http("POST", path, bad[i].body);
		assert_problem(&r, 400, bad[i].want, bad[i].body);
		resp_free(&r);
	}

	/* larger than the API takes */
	char *big = malloc(100 * 1024 + 32);
	ck_assert_ptr_nonnull(big);
	strcpy(big, "{\"mode\": \"");
	memset(big + 10, 'a', 100 * 1024);
	strcpy(big + 10 + 100 * 1024, "\"}");
	struct resp r = http("POST", path, big);
	assert_problem(&r, 413, "larger than", "oversized");
	resp_free(&r);
	free(big);

	const struct {
		const char *method, *path;
		int code;
		const char *want;
	} urls[] = {
		{ "POST", "/v1/processes/../checkpoints", 400, "not a pid" },
		{ "POST", "/v1/processes/abc/checkpoints", 400, "not a pid" },
		{ "POST", "/v1/processes/0012/checkpoints", 400, "not a pid" },
		{ "POST", "/v1/processes/99999999999/checkpoints", 400, "not a pid" },
		{ "POST", "/v1/processes/2147483646/checkpoints", 404, "no such process" },
		{ "GET", "/v1/snapshots/../1", 400, "not PID/N" },
		{ "GET", "/v1/snapshots/1/x", 400, "not PID/N" },
		{ "GET", "/v1/snapshots/1/2/3", 404, "no such resource" },
		{ "DELETE", "/v1/snapshots/2147483646/1", 404, "no such snapshot" },
		{ "GET", "/v1/jobs/999", 404, "no such job" },
		{ "GET", "/v1/jobs/x", 400, "not a job number" },
		{ "GET", "/v1/jobs/1?wait=soon", 400, "not a number of seconds" },
		{ "GET", "/v1/nothing", 404, "no such resource" },
		{ "GET", "/v2/processes", 404, "under /v1" },
		{ "DELETE", "/v1/processes", 405, "not allowed" },
		{ "GET", path, 405, "not allowed" },
	};
	for (size_t i = 0; i < sizeof(urls) / sizeof(urls[0]); i++) {
		r = http(urls[i].method, urls[i].path, NULL);
		assert_problem(&r, urls[i].code, urls[i].want, urls[i].path);
		resp_free(&r);
	}

	/* nothing changed: no snapshot, no checkpoint counted, and the
	 * target is as it was */
	ck_assert_int_eq(count_snapshots(), 0);
	char *m = sh_out("curl -sS --unix-socket '%s' http://localhost/metrics", sock);
	ck_assert_msg(strstr(m, "ckptfs_checkpoints_total{result=\"ok\"} 0\n") &&
			      strstr(m, "ckptfs_checkpoints_total{result=\"failed\"} 0\n"),
		      "metrics:\n%s", m);
	free(m);
	char *v = target_verdict(dir);
	ck_assert_str_eq(v, "ok\n");
	free(v);
	unmount_api();
}
END_TEST

START_TEST(test_other_user)
{
	char dir[PATH_MAX], path[128];
	pid_t pid;

	if (system("command -v setpriv >/dev/null") != 0) {
		printf("SKIP: no setpriv\n");
		return;
	}
	mount_api();
	pid = target_start(dir);
	json_int_t id = start_checkpoint(pid, NULL);
	struct resp r = wait_job(id);
	ck_assert_str_eq(json_string_value(json_object_get(r.json, "state")), "done");
	resp_free(&r);

	/* root's process: not listed for nobody, and refused */
	r = http_as(true, "GET", "/v1/processes", NULL);
	ck_assert_msg(r.code == 200, "%d %s", r.code, r.body);
	size_t i;
	json_t *p;
	json_array_foreach(json_object_get(r.json, "processes"), i, p)
		ck_assert_int_ne(json_integer_value(json_object_get(p, "pid")), pid);
	resp_free(&r);
	snprintf(path, sizeof(path), "/v1/processes/%d/checkpoints", pid);
	r = http_as(true, "POST", path, "{\"mode\":\"kill\"}");
	assert_problem(&r, 403, "not yours", "nobody checkpoints root's");
	resp_free(&r);

	/* root's snapshot and job */
	r = http_as(true, "GET", "/v1/snapshots", NULL);
	ck_assert_msg(r.code == 200 && json_array_size(json_object_get(r.json, "snapshots")) == 0, "%s", r.body);
	resp_free(&r);
	snprintf(path, sizeof(path), "/v1/snapshots/%d/1", pid);
	r = http_as(true, "GET", path, NULL);
	assert_problem(&r, 403, "not yours", "nobody reads root's snapshot");
	resp_free(&r);
	r = http_as(true, "DELETE", path, NULL);
	assert_problem(&r, 403, "not yours", "nobody deletes root's snapshot");
	resp_free(&r);
	snprintf(path, sizeof(path), "/v1/snapshots/%d/1/export", pid);
	r = http_as(true, "GET", path, NULL);
	assert_problem(&r, 403, "not yours", "nobody exports root's snapshot");
	resp_free(&r);
	snprintf(path, sizeof(path), "/v1/jobs/%lld", (long long)id);
	r = http_as(true, "GET", path, NULL);
	assert_problem(&r, 404, "no such job", "nobody reads root's job");
	resp_free(&r);

	/* nothing changed */
	ck_assert_int_eq(count_snapshots(), 1);
	ck_assert_int_eq(kill(pid, 0), 0);
	char *v = target_verdict(dir);
	ck_assert_str_eq(v, "ok\n");
	free(v);
	unmount_api();
}
END_TEST

/* Polls restore name (on socket at) until it leaves receiving,
 * verifying and restoring; returns its status line. */
static char *restore_wait_api(const char *at, const char *name)
{
	for (int i = 0; i < 600; i++) {
		char *s = sh_out("curl -sS --unix-socket '%s' http://localhost/v1/restores/%s", at, name);
		json_t *j = json_loads(s, 0, NULL);
		const char *st = json_string_value(json_object_get(j, "status"));
		if (st && strncmp(st, "receiving", 9) && strncmp(st, "verifying", 9) && strncmp(st, "restoring", 9)) {
			char *r = strdup(st);
			json_decref(j);
			free(s);
			return r;
		}
		json_decref(j);
		free(s);
		usleep(100 * 1000);
	}
	return strdup("never ended");
}

/* A checkpoint (kill) through the API, exported as a tar stream and
 * piped with curl into a second daemon's import (another mount and
 * store): the process runs again there, same pid, and passes its own
 * check. */
START_TEST(test_export_import)
{
	char dir[PATH_MAX], path[128], want[64], sock2[80];
	pid_t pid;

	mount_api();
	pid = target_start(dir);
	json_int_t id = start_checkpoint(pid, "{\"mode\":\"kill\"}");
	struct resp r = wait_job(id);
	ck_assert_msg(!strcmp(json_string_value(json_object_get(r.json, "state")), "done"), "%s", r.body);
	resp_free(&r);
	/* killed once its snapshot was durable; reaped here, its parent,
	 * so that the pid is free for the restore */
	ck_assert_int_eq(waitpid(pid, NULL, 0), pid);

	/* the second daemon */
	snprintf(sock2, sizeof(sock2), "%s", sock);
	strcpy(strrchr(sock2, '/'), "/b.sock");
	ck_assert_int_eq(sh("mkdir -p \"$WORK/m2\" && \"$CKPTFS\" -f -o store=\"$WORK/s2\",api=%s \"$WORK/m2\" "
			    ">\"$WORK/b.log\" 2>&1 & echo $! > \"$WORK/b.pid\"",
			    sock2),
			 0);
	ck_assert_msg(wait_file(sock2, 10000), "no second daemon");

	/* an export with one byte of a file changed arrives whole, and the
	 * restore's verification (as after cp -r) refuses it, naming the
	 * file */
	snprintf(path, sizeof(path), "/v1/snapshots/%d/1/export", pid);
	ck_assert_int_eq(sh("cd \"$WORK\" && curl -sS --fail --unix-socket '%s' -o x.tar http://localhost%s && "
			    "python3 -c \"import sys, tarfile\n"
			    "t = tarfile.open('x.tar')\n"
			    "m = [m for m in t.getmembers() if m.name.endswith('/maps')][0]\n"
			    "t.close(); f = open('x.tar', 'r+b'); f.seek(m.offset_data); b = f.read(1); f.seek(m.offset_data)\n"
			    "f.write(bytes([b[0] ^ 1])); f.close()\"",
			    sock, path),
			 0);
	char *out = sh_out("curl -sS --unix-socket '%s' -X POST -T \"$WORK/x.tar\" "
			   "'http://localhost/v1/restores?name=tampered' -w '\n%%{http_code}'",
			   sock2);
	ck_assert_msg(strstr(out, "\n422") && strstr(out, "/maps") && strstr(out, "refused: "),
		      "tampered import: %s", out);
	free(out);
	/* refused before the answer, and removed: nothing ran from it */
	out = sh_out("curl -sS --unix-socket '%s' http://localhost/v1/restores/tampered -w '\n%%{http_code}'", sock2);
	ck_assert_msg(strstr(out, "\n404"), "tampered restore: %s", out);
	free(out);
	ck_assert_int_ne(kill(pid, 0), 0);
	/* an export lacking one file the manifest names: 422 naming it */
	ck_assert_int_eq(sh("cd \"$WORK\" && curl -sS --fail --unix-socket '%s' -o y.tar http://localhost%s && "
			    "python3 -c \"import io, tarfile\n"
			    "src = tarfile.open('y.tar'); dst = tarfile.open('z.tar', 'w', format=tarfile.PAX_FORMAT)\n"
			    "for m in src.getmembers():\n"
			    "    if m.isfile() and not m.name.endswith('/process'):\n"
			    "        d = src.extractfile(m).read(); t = tarfile.TarInfo(m.name); t.size = len(d)\n"
			    "        dst.addfile(t, io.BytesIO(d))\n"
			    "dst.close()\"",
			    sock, path),
			 0);
	out = sh_out("curl -sS --unix-socket '%s' -X POST -T \"$WORK/z.tar\" "
		     "'http://localhost/v1/restores?name=short' -w '\n%%{http_code}'",
		     sock2);
	snprintf(want, sizeof(want), "%d/process", pid);
	ck_assert_msg(strstr(out, "\n422") && strstr(out, want) && strstr(out, "never arrived"), "short import: %s", out);
	free(out);
	ck_assert_int_ne(kill(pid, 0), 0);

	/* a client that goes away after 64 KiB: the daemon lets go of the
	 * stream (under the sanitizers, a leak of it makes the daemon exit
	 * otherwise at the unmount) and serves the next one */
	ck_assert_int_eq(sh("curl -sS --unix-socket '%s' http://localhost%s 2>/dev/null | head -c 65536 | wc -c | grep -qx 65536",
			    sock, path),
			 0);
	struct resp r2 = http("GET", "/v1/snapshots", NULL);
	ck_assert_int_eq(r2.code, 200);
	resp_free(&r2);

	/* the tar stream, piped */
	out = sh_out("curl -sS --fail --unix-socket '%s' http://localhost%s | "
			   "curl -sS --unix-socket '%s' -X POST -T - -H 'Content-Type: application/x-tar' "
			   "'http://localhost/v1/restores?name=moved' -w '\n%%{http_code}'",
			   sock, path, sock2);
	ck_assert_msg(strstr(out, "\n202"), "import: %s", out);
	free(out);
	char *st = restore_wait_api(sock2, "moved");
	snprintf(want, sizeof(want), "running pid=%d processes=1", pid);
	if (strcmp(st, want)) {
		char *log = sh_out("tail -20 \"$WORK/b.log\"");
		ck_abort_msg("restore: '%s', want '%s'; log:\n%s", st, want, log);
	}
	free(st);
	/* the same files arrived: the second mount lists the restore */
	ck_assert_int_eq(sh("test -d \"$WORK/m2/restore/moved/%d\"", pid), 0);
	char *v = target_verdict(dir);
	ck_assert_str_eq(v, "ok\n");
	free(v);
	sh("fusermount3 -u \"$WORK/m2\"; for i in $(seq 100); do kill -0 $(cat \"$WORK/b.pid\") 2>/dev/null || break; sleep 0.1; done");
	unmount_api();
}
END_TEST

/* GET /v1/jobs/{id}/events read with curl to its end while a checkpoint
 * of a target with 64 MiB more runs: progress events whose phases come
 * in the engine's order and whose bytes never go back, then one result
 * event, the job done with its snapshot, and the end of the stream. A
 * finished job's stream is its result alone; bad and unknown ids are
 * refused as GET /v1/jobs/{id} refuses them. */
START_TEST(test_job_events)
{
	static const char *const order[] = { "prepare", "pre-copy", "freeze", "resumed", "write", "commit" };
	char dir[PATH_MAX], want[64];
	pid_t pid;

	mount_api();
	setenv("FS_TARGET_MB", "64", 1);
	pid = target_start(dir);
	unsetenv("FS_TARGET_MB");
	ck_assert_int_eq(sh("cd \"$WORK\" && id=$(curl -sS --unix-socket '%s' -X POST -d '{}' "
			    "http://localhost/v1/processes/%d/checkpoints | sed -n 's/^{\"id\":\\([0-9]*\\),.*/\\1/p') && "
			    "echo $id > id && curl -sS -N --max-time 120 --unix-socket '%s' "
			    "http://localhost/v1/jobs/$id/events -D head > events",
			    sock, pid, sock),
			 0);
	char *head = sh_out("cat \"$WORK/head\"");
	ck_assert_msg(strstr(head, " 200") && strstr(head, "text/event-stream"), "%s", head);
	free(head);
	char *text = sh_out("cat \"$WORK/events\"");
	int last = -1, progress = 0, results = 0;
	long long done = -1;
	char *save = NULL, *ev_text = strdup(text);
	/* events are separated by a blank line; each has event: and data: */
	for (char *blk = ev_text; blk && *blk;) {
		char *end = strstr(blk, "\n\n");
		if (end)
			*end = 0;
		char *ev = NULL, *data = NULL;
		for (char *line = strtok_r(blk, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
			if (!strncmp(line, "event: ", 7))
				ev = line + 7;
			else if (!strncmp(line, "data: ", 6))
				data = line + 6;
		}
		ck_assert_msg(!results, "an event after the result: %s", text);
		if (ev) {
			json_t *j = json_loads(data ? data : "", 0, NULL);
			ck_assert_msg(j, "event %s: data not JSON: %s", ev, text);
			if (!strcmp(ev, "progress")) {
				const char *ph = json_string_value(json_object_get(j, "phase"));
				int k = -1;
				for (int i = 0; i < (int)(sizeof(order) / sizeof(order[0])); i++)
					if (ph && !strcmp(ph, order[i]))
						k = i;
				ck_assert_msg(k >= last, "phase '%s' out of order: %s", ph ? ph : "?", text);
				long long d = json_integer_value(json_object_get(j, "bytes_done"));
				if (k == last && !strcmp(ph, "write"))
					ck_assert_msg(d >= done, "bytes went back: %s", text);
				done = d;
				last = k;
				progress++;
			} else {
				ck_assert_msg(!strcmp(ev, "result"), "unknown event '%s': %s", ev, text);
				ck_assert_str_eq(json_string_value(json_object_get(j, "state")), "done");
				snprintf(want, sizeof(want), "%d/1", pid);
				ck_assert_str_eq(json_string_value(json_object_get(j, "snapshot")), want);
				results++;
			}
			json_decref(j);
		}
		blk = end ? end + 2 : NULL;
	}
	ck_assert_msg(progress > 0 && results == 1, "%d progress, %d results: %s", progress, results, text);
	free(ev_text);
	free(text);

	/* a finished job: the result alone */
	char *out = sh_out("curl -sS --max-time 30 --unix-socket '%s' http://localhost/v1/jobs/$(cat \"$WORK/id\")/events",
			   sock);
	ck_assert_msg(!strncmp(out, "event: result\ndata: {", 21) && strstr(out, "\"state\":\"done\"") &&
			      !strstr(out, "progress"),
		      "%s", out);
	free(out);
	/* the snapshot of the large target, exported and unpacked, is the
	 * mount's directory byte for byte */
	ck_assert_int_eq(sh("cd \"$WORK\" && curl -sS --fail --unix-socket '%s' -o big.tar http://localhost/v1/snapshots/%d/1/export && "
			    "mkdir big && tar xf big.tar -C big && diff -r big \"$MNT/%d/1\"",
			    sock, pid, pid),
			 0);
	struct resp r = http("GET", "/v1/jobs/0012/events", NULL);
	assert_problem(&r, 400, "not a job number", "events of 0012");
	resp_free(&r);
	r = http("GET", "/v1/jobs/999/events", NULL);
	assert_problem(&r, 404, "no such job", "events of 999");
	resp_free(&r);
	r = http("POST", "/v1/jobs/1/events", "{}");
	assert_problem(&r, 405, "not allowed", "POST events");
	resp_free(&r);
	char *v = target_verdict(dir);
	ck_assert_str_eq(v, "ok\n");
	free(v);
	unmount_api();
}
END_TEST

/* The periodic policy as a resource: a PUT is the `every` line of ctl
 * (seen in the mount's status and run by the daemon: snapshots come),
 * one set through ctl is the resource's, bad bodies are 400, nobody is
 * refused root's (403), DELETE is `every off`. */
START_TEST(test_policy)
{
	char dir[PATH_MAX], path[128];
	pid_t pid;

	mount_api();
	pid = target_start(dir);
	snprintf(path, sizeof(path), "/v1/processes/%d/policy", pid);
	struct resp r = http("GET", path, NULL);
	assert_problem(&r, 404, "no policy", "no policy yet");
	resp_free(&r);
	static const struct {
		const char *body, *want;
	} bad[] = {
		{ "{\"every\":\"0s\"}", "out of range" },
		{ "{\"every\":\"30\"}", "every must be a duration" },
		{ "{\"every\":\"1s keep 9\"}", "every must be a duration" },
		{ "{\"every\":30}", "wrong type: 'every'" },
		{ "{\"every\":\"1s\",\"keep\":0}", "keep must be a number from 1 to 1000" },
		{ "{\"every\":\"1s\",\"kill\":true}", "unknown field" },
		{ "{\"every\":\"1s\",\"every\":\"2s\"}", "not JSON" },
		{ "[]", "a JSON object expected" },
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		r = http("PUT", path, bad[i].body);
		assert_problem(&r, 400, bad[i].want, bad[i].body);
		resp_free(&r);
	}
	r = http_as(true, "PUT", path, "{\"every\":\"1s\"}");
	assert_problem(&r, 403, "not yours", "nobody's PUT");
	resp_free(&r);
	ck_assert_int_eq(sh("grep -qx 'policy: none' \"$MNT/%d/status\"", pid), 0);

	r = http("PUT", path, "{\"every\":\"1s\",\"keep\":2}");
	ck_assert_msg(r.code == 201, "PUT: %d %s", r.code, r.body);
	ck_assert_str_eq(json_string_value(json_object_get(r.json, "every")), "1s");
	ck_assert_int_eq(json_integer_value(json_object_get(r.json, "keep")), 2);
	resp_free(&r);
	/* the mount has it, and it runs: snapshots come, two kept */
	ck_assert_int_eq(sh("grep -qx 'policy: every 1s keep 2' \"$MNT/%d/status\"", pid), 0);
	json_int_t runs = 0;
	for (int i = 0; i < 600 && runs < 3; i++) {
		r = http("GET", path, NULL);
		ck_assert_msg(r.code == 200, "GET: %d %s", r.code, r.body);
		runs = json_integer_value(json_object_get(r.json, "runs"));
		resp_free(&r);
		if (runs < 3)
			usleep(100 * 1000);
	}
	ck_assert_msg(runs >= 3, "the policy ran %lld times", (long long)runs);
	r = http("GET", path, NULL);
	ck_assert_str_eq(json_string_value(json_object_get(json_object_get(r.json, "last"), "result")), "ok");
	ck_assert_int_eq(json_integer_value(json_object_get(r.json, "snapshots")), 2);
	resp_free(&r);
	r = http_as(true, "GET", path, NULL);
	assert_problem(&r, 403, "not yours", "nobody's GET");
	resp_free(&r);

	/* one set through ctl is the same policy */
	ck_assert_int_eq(sh("echo every 2h keep 4 > \"$MNT/%d/ctl\"", pid), 0);
	r = http("GET", path, NULL);
	ck_assert_msg(r.code == 200 && !strcmp(json_string_value(json_object_get(r.json, "every")), "2h") &&
			      json_integer_value(json_object_get(r.json, "keep")) == 4,
		      "%s", r.body);
	resp_free(&r);
	r = http("PUT", path, "{\"every\":\"10m\"}");
	ck_assert_msg(r.code == 200 && json_integer_value(json_object_get(r.json, "keep")) == 3, "%d %s", r.code,
		      r.body);
	resp_free(&r);
	ck_assert_int_eq(sh("grep -qx 'policy: every 10m keep 3' \"$MNT/%d/status\"", pid), 0);

	r = http_as(true, "DELETE", path, NULL);
	assert_problem(&r, 403, "not yours", "nobody's DELETE");
	resp_free(&r);
	r = http("DELETE", path, NULL);
	ck_assert_msg(r.code == 204, "DELETE: %d %s", r.code, r.body);
	resp_free(&r);
	ck_assert_int_eq(sh("grep -qx 'policy: none' \"$MNT/%d/status\"", pid), 0);
	r = http("DELETE", path, NULL);
	assert_problem(&r, 404, "no policy", "second DELETE");
	resp_free(&r);
	r = http("POST", path, "{}");
	assert_problem(&r, 405, "not allowed", "POST policy");
	resp_free(&r);
	r = http("GET", "/v1/processes/99999999/policy", NULL);
	ck_assert_int_eq(r.code, 404);
	resp_free(&r);
	char *v = target_verdict(dir);
	ck_assert_str_eq(v, "ok\n");
	free(v);
	unmount_api();
}
END_TEST

/* A finished job outlives a restart of the daemon on the same store:
 * its result, its events, its owner (nobody still gets 404), and the
 * numbering goes on after it. */
START_TEST(test_jobs_restart)
{
	char dir[PATH_MAX], want[64];
	pid_t pid;

	mount_api();
	pid = target_start(dir);
	json_int_t id = start_checkpoint(pid, NULL);
	struct resp r = wait_job(id);
	ck_assert_str_eq(json_string_value(json_object_get(r.json, "state")), "done");
	resp_free(&r);
	unmount_api();
	mount_api();
	char path[64];
	snprintf(path, sizeof(path), "/v1/jobs/%lld", (long long)id);
	r = http("GET", path, NULL);
	snprintf(want, sizeof(want), "%d/1", pid);
	ck_assert_msg(r.code == 200 && !strcmp(json_string_value(json_object_get(r.json, "state")), "done") &&
			      !strcmp(json_string_value(json_object_get(r.json, "snapshot")), want),
		      "after the restart: %d %s", r.code, r.body);
	resp_free(&r);
	r = http_as(true, "GET", path, NULL);
	assert_problem(&r, 404, "no such job", "nobody, after the restart");
	resp_free(&r);
	char *out = sh_out("curl -sS --max-time 30 --unix-socket '%s' http://localhost%s/events", sock, path);
	ck_assert_msg(!strncmp(out, "event: result\n", 14) && strstr(out, want), "%s", out);
	free(out);
	json_int_t id2 = start_checkpoint(pid, NULL);
	ck_assert_int_eq(id2, id + 1);
	r = wait_job(id2);
	resp_free(&r);
	char *v = target_verdict(dir);
	ck_assert_str_eq(v, "ok\n");
	free(v);
	unmount_api();
}
END_TEST

/* POST /v1/restores {name, snapshot}: a stored snapshot restored. */
START_TEST(test_restore_stored)
{
	char dir[PATH_MAX], body[128], want[64];
	pid_t pid;

	mount_api();
	pid = target_start(dir);
	json_int_t id = start_checkpoint(pid, "{\"mode\":\"kill\"}");
	struct resp r = wait_job(id);
	resp_free(&r);
	/* killed once its snapshot was durable; reaped here, its parent,
	 * so that the pid is free for the restore */
	ck_assert_int_eq(waitpid(pid, NULL, 0), pid);
	snprintf(body, sizeof(body), "{\"name\":\"again\",\"snapshot\":\"%d/1\"}", pid);
	r = http("POST", "/v1/restores", body);
	ck_assert_msg(r.code == 202, "%d %s", r.code, r.body);
	resp_free(&r);
	char *st = restore_wait_api(sock, "again");
	snprintf(want, sizeof(want), "running pid=%d processes=1", pid);
	ck_assert_msg(!strcmp(st, want), "restore: '%s', want '%s'", st, want);
	free(st);
	char *v = target_verdict(dir);
	ck_assert_str_eq(v, "ok\n");
	free(v);
	/* a second one by the same name */
	r = http("POST", "/v1/restores", body);
	assert_problem(&r, 409, "exists already", "same name");
	resp_free(&r);
	unmount_api();
}
END_TEST

/* Uploads that are not a snapshot's plain files: each refused with its
 * reason, and no restore is left behind. */
START_TEST(test_bad_tar)
{
	static const struct {
		const char *name, *py, *want;
		int code;
	} bad[] = {
		{ "symlink", "t=tarfile.TarInfo('a/link'); t.type=tarfile.SYMTYPE; t.linkname='/etc/passwd'; tf.addfile(t)",
		  "a/link: not a plain file", 422 },
		{ "hardlink", "add('a/f', b'x'); t=tarfile.TarInfo('a/h'); t.type=tarfile.LNKTYPE; t.linkname='a/f'; tf.addfile(t)",
		  "a/h: not a plain file", 422 },
		{ "device", "t=tarfile.TarInfo('a/null'); t.type=tarfile.CHRTYPE; t.devmajor=1; t.devminor=3; tf.addfile(t)",
		  "a/null: not a plain file", 422 },
		{ "fifo", "t=tarfile.TarInfo('p'); t.type=tarfile.FIFOTYPE; tf.addfile(t)", "p: not a plain file", 422 },
		{ "dotdot", "add('../evil', b'x')", "../evil: not a path inside", 422 },
		{ "inner_dotdot", "add('a/../../evil', b'x')", "not a path inside", 422 },
		{ "absolute", "add('/etc/evil', b'x')", "not a path inside", 422 },
		{ "twice", "add('a/f', b'x'); add('a/f', b'y')", "a/f: twice in the stream", 422 },
		{ "no_manifest", "add('a/f', b'x')", "manifest: never arrived", 422 },
	};
	char py[PATH_MAX], tar[PATH_MAX];

	mount_api();
	snprintf(py, sizeof(py), "%s/mk.py", H.work);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(tar, sizeof(tar), "%s/%s.tar", H.work, bad[i].name);
		FILE *f = fopen(py, "we");
		ck_assert_ptr_nonnull(f);
		fprintf(f, "import io, sys, tarfile\n"
			   "tf = tarfile.open(sys.argv[1], 'w', format=tarfile.GNU_FORMAT)\n"
			   "def add(n, d):\n"
			   "    t = tarfile.TarInfo(n); t.size = len(d); tf.addfile(t, io.BytesIO(d))\n"
			   "%s\n"
			   "tf.close()\n",
			bad[i].py);
		fclose(f);
		ck_assert_int_eq(sh("python3 '%s' '%s'", py, tar), 0);
		char *out = sh_out("curl -sS --unix-socket '%s' -X POST -T '%s' 'http://localhost/v1/restores?name=bad%zu' -w '\n%%{http_code}'",
				   sock, tar, i);
		char want_code[8];
		snprintf(want_code, sizeof(want_code), "\n%d", bad[i].code);
		ck_assert_msg(strstr(out, want_code) && strstr(out, bad[i].want), "%s: %s", bad[i].name, out);
		free(out);
	}

	/* a stream cut short, and one whose header promises more data than
	 * follows; not a tar at all */
	ck_assert_int_eq(sh("cd \"$WORK\" && mkdir -p src/a && head -c 300000 /dev/urandom > src/a/f && "
			    "tar cf whole.tar -C src a && head -c 150000 whole.tar > cut.tar && "
			    "head -c 10000 /dev/urandom > junk.tar"),
			 0);
	static const char *const cut[] = { "cut.tar", "junk.tar" };
	for (size_t i = 0; i < 2; i++) {
		char *out = sh_out("curl -sS --unix-socket '%s' -X POST -T \"$WORK/%s\" 'http://localhost/v1/restores?name=cut%zu' -w '\n%%{http_code}'",
				   sock, cut[i], i);
		ck_assert_msg(strstr(out, "\n422"), "%s: %s", cut[i], out);
		free(out);
	}

	/* names */
	static const char *const names[] = { "..", ".hidden", "a%2Fb", "-x", "" };
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		char *out = sh_out("curl -sS --unix-socket '%s' -X POST -T \"$WORK/whole.tar\" 'http://localhost/v1/restores?name=%s' -w '\n%%{http_code}'",
				   sock, names[i]);
		ck_assert_msg(strstr(out, "\n400") && strstr(out, "restore name"), "name '%s': %s", names[i], out);
		free(out);
	}
	struct resp r = http("GET", "/v1/restores/..", NULL);
	ck_assert_int_eq(r.code, 400);
	resp_free(&r);

	/* a connection dropped in the middle of an upload */
	sh("{ head -c 100000 \"$WORK/whole.tar\"; sleep 1; } | timeout 0.5 curl -sS --unix-socket '%s' -X POST -T - "
	   "'http://localhost/v1/restores?name=dropped' >/dev/null 2>&1",
	   sock);

	/* nothing is left: no restore in the mount, none by those names */
	for (int i = 0; i < 50; i++) {
		char *ls = sh_out("ls \"$MNT/restore\"");
		bool empty = !*ls;
		free(ls);
		if (empty)
			break;
		usleep(100 * 1000);
	}
	char *ls = sh_out("ls \"$MNT/restore\"");
	ck_assert_msg(!*ls, "left behind: %s", ls);
	free(ls);
	r = http("GET", "/v1/restores/bad0", NULL);
	assert_problem(&r, 404, "no such restore", "refused upload");
	resp_free(&r);
	unmount_api();
}
END_TEST

/* TCP with a bearer token: none, a wrong one and a right one; the token
 * acts as its file's owner (root here). */
START_TEST(test_tcp_token)
{
	char tok[40], out_path[64];
	int port = 20000 + (int)(getpid() % 20000);

	/* short, for H.opts */
	snprintf(tok, sizeof(tok), "/tmp/ckptfs-api-%s", strrchr(H.base, '/') + 1);
	ck_assert_int_eq(sh("mkdir -p '%s' && umask 077 && echo 0123456789abcdef0123 > '%s/t'", tok, tok), 0);
	strcat(tok, "/t");
	snprintf(H.opts, sizeof(H.opts), "api=127.0.0.1:%d,api_token=%s", port, tok);
	if (strlen(H.opts) >= sizeof(H.opts) - 1) {
		printf("SKIP: the test's path is too long for its options\n");
		return;
	}
	harness_remount();
	snprintf(out_path, sizeof(out_path), "http://127.0.0.1:%d/v1/processes", port);
	static const struct {
		const char *header;
		const char *want;
	} cases[] = {
		{ "", "\n401" },
		{ "-H 'Authorization: Bearer nope'", "\n401" },
		{ "-H 'Authorization: Bearer 0123456789abcdef012'", "\n401" },
		{ "-H 'Authorization: Basic 0123456789abcdef0123'", "\n401" },
		{ "-H 'Authorization: Bearer 0123456789abcdef0123'", "\n200" },
	};
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		char *out = sh_out("for i in $(seq 50); do curl -sS %s -w '\n%%{http_code}' '%s' 2>/dev/null && break; sleep 0.1; done",
				   cases[i].header, out_path);
		ck_assert_msg(strstr(out, cases[i].want), "%s: %s", cases[i].header, out);
		if (strstr(cases[i].want, "401"))
			ck_assert_msg(strstr(out, "bearer token"), "%s: %s", cases[i].header, out);
		free(out);
	}
	/* refused requests change nothing: a checkpoint without the token */
	char *out = sh_out("curl -sS -X POST -w '\n%%{http_code}' 'http://127.0.0.1:%d/v1/processes/1/checkpoints'", port);
	ck_assert_msg(strstr(out, "\n401"), "%s", out);
	free(out);
	ck_assert_int_ne(sh("ls \"$MNT/1\" | grep -q '^[0-9]'"), 0);
	ck_assert_int_eq(harness_umount(), 0);
	/* TCP without a token file does not start */
	out = sh_out("timeout 30 \"$CKPTFS\" -f -o store=\"$STORE\",api=127.0.0.1:%d \"$MNT\" 2>&1; echo rc=$?", port);
	ck_assert_msg(strstr(out, "api_token") && !strstr(out, "rc=0"), "%s", out);
	free(out);
	*strrchr(tok, '/') = 0;
	sh("rm -rf '%s'", tok);
}
END_TEST

/* -o api=PATH,api_tcp=HOST:PORT: the socket and TCP at once, each with
 * its own way of knowing the caller (peer credentials, the token), one
 * set of jobs: a checkpoint asked for over TCP is followed over the
 * socket. api=HOST:PORT with api_tcp= too is refused. */
START_TEST(test_socket_and_tcp)
{
	char tok[40];
	int port = 20000 + (int)((getpid() + 7) % 20000);

	snprintf(tok, sizeof(tok), "/tmp/ckptfs-api-%s", strrchr(H.base, '/') + 1);
	ck_assert_int_eq(sh("mkdir -p '%s' && umask 077 && echo 0123456789abcdef0123 > '%s/t'", tok, tok), 0);
	strcat(tok, "/t");
	snprintf(sock, sizeof(sock), "/tmp/ckptfs-api-%s/api.sock", strrchr(H.base, '/') + 1);
	snprintf(H.opts, sizeof(H.opts), "api=%s,api_tcp=127.0.0.1:%d,api_token=%s", sock, port, tok);
	harness_remount();
	ck_assert_msg(wait_file(sock, 5000), "no API socket %s", sock);
	struct resp r = http("GET", "/v1/processes", NULL);
	ck_assert_msg(r.code == 200, "socket: %d %s", r.code, r.body);
	resp_free(&r);
	char *out = sh_out("for i in $(seq 50); do curl -sS -w '\n%%{http_code}' 'http://127.0.0.1:%d/v1/processes' "
			   "2>/dev/null && break; sleep 0.1; done",
			   port);
	ck_assert_msg(strstr(out, "\n401") && strstr(out, "bearer token"), "TCP without the token: %s", out);
	free(out);
	out = sh_out("curl -sS -H 'Authorization: Bearer 0123456789abcdef0123' -w '\n%%{http_code}' "
		     "'http://127.0.0.1:%d/v1/processes'",
		     port);
	ck_assert_msg(strstr(out, "\n200") && strstr(out, "\"processes\""), "TCP with the token: %s", out);
	free(out);
	if (HAVE_ENGINE) {
		char dir[PATH_MAX], want[64];
		pid_t pid = target_start(dir);
		out = sh_out("curl -sS -H 'Authorization: Bearer 0123456789abcdef0123' -X POST -d '{}' "
			     "'http://127.0.0.1:%d/v1/processes/%d/checkpoints'",
			     port, pid);
		json_t *j = json_loads(out, 0, NULL);
		json_int_t id = json_integer_value(json_object_get(j, "id"));
		ck_assert_msg(id > 0, "TCP checkpoint: %s", out);
		json_decref(j);
		free(out);
		r = wait_job(id);
		snprintf(want, sizeof(want), "%d/1", pid);
		ck_assert_msg(!strcmp(json_string_value(json_object_get(r.json, "state")), "done") &&
				      !strcmp(json_string_value(json_object_get(r.json, "snapshot")), want),
			      "the job over the socket: %s", r.body);
		resp_free(&r);
		char *v = target_verdict(dir);
		ck_assert_str_eq(v, "ok\n");
		free(v);
	}
	ck_assert_int_eq(harness_umount(), 0);
	ck_assert_msg(access(sock, F_OK) != 0, "the socket stayed after the unmount");
	/* api=HOST:PORT is TCP already: a second TCP listener is refused */
	out = sh_out("timeout 30 \"$CKPTFS\" -f -o store=\"$STORE\",api=127.0.0.1:%d,api_tcp=127.0.0.1:%d,api_token=%s "
		     "\"$MNT\" 2>&1; echo rc=$?",
		     port, port + 1, tok);
	ck_assert_msg(strstr(out, "is TCP already") && !strstr(out, "rc=0"), "%s", out);
	free(out);
	ck_assert(!harness_mounted(H.mnt));
	*strrchr(tok, '/') = 0;
	sh("rm -rf '%s'", tok);
}
END_TEST

/* A client that sends its request a byte a second is dropped within
 * the daemon's bound, while other clients are answered meanwhile. */
START_TEST(test_slow_client)
{
	char py[PATH_MAX];

	mount_api();
	snprintf(py, sizeof(py), "%s/slow.py", H.work);
	FILE *f = fopen(py, "we");
	ck_assert_ptr_nonnull(f);
	fprintf(f, "import socket, sys, time\n"
		   "s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.settimeout(0.1)\n"
		   "req = b'POST /v1/processes/1/checkpoints HTTP/1.1\\r\\nHost: x\\r\\nContent-Length: 40\\r\\n\\r\\n' + b'{' * 40\n"
		   "for i, b in enumerate(req):\n"
		   "    try:\n"
		   "        s.send(bytes([b]))\n"
		   "        if s.recv(100) == b'': print('dropped after', i + 1, 'bytes'); sys.exit(0)\n"
		   "    except socket.timeout: pass\n"
		   "    except OSError: print('dropped after', i + 1, 'bytes'); sys.exit(0)\n"
		   "    time.sleep(1)\n"
		   "print('never dropped')\n");
	fclose(f);
	ck_assert_int_eq(sh("python3 '%s' '%s' > \"$WORK/slow.out\" 2>&1 &", py, sock), 0);
	/* others are served while it trickles */
	for (int i = 0; i < 20; i++) {
		struct resp r = http("GET", "/v1/snapshots", NULL);
		ck_assert_int_eq(r.code, 200);
		resp_free(&r);
		usleep(100 * 1000);
	}
	char *out = NULL;
	for (int i = 0; i < 900; i++) {
		free(out);
		out = sh_out("cat \"$WORK/slow.out\"");
		if (*out)
			break;
		usleep(100 * 1000);
	}
	ck_assert_msg(strstr(out, "dropped after"), "slow client: '%s'", out);
	free(out);
	/* and nothing was checkpointed */
	ck_assert_int_eq(count_snapshots(), 0);
	unmount_api();
}
END_TEST

/* 50 clients polling a job's status while 4 checkpoints and an export
 * run: every request answered 200, every checkpoint done, the export
 * whole, every target passing its check. */
START_TEST(test_load)
{
	char dirs[4][PATH_MAX];
	pid_t pids[4];

	mount_api();
	for (int i = 0; i < 4; i++)
		pids[i] = target_start(dirs[i]);
	json_int_t first = start_checkpoint(pids[0], NULL);
	struct resp r = wait_job(first);
	resp_free(&r);

	/* run to its end with system() and read after: the run takes a
	 * while, and a read of popen()'s pipe can end early when a signal
	 * interrupts it */
	sh("{ S='%s'; cd \"$WORK\"; "
		"for i in $(seq 50); do (for j in $(seq 20); do "
		"curl -s -o /dev/null -w '%%{http_code}\\n' --unix-socket $S 'http://localhost/v1/jobs/%lld'; "
		"done > codes.$i) & done; "
		"for p in %d %d %d %d; do curl -s --unix-socket $S -X POST -d '{}' "
		"http://localhost/v1/processes/$p/checkpoints > post.$p & done; "
		"curl -s --fail --unix-socket $S -o x.tar http://localhost/v1/snapshots/%d/1/export; echo export=$?; "
		"wait; cat codes.* | sort | uniq -c | tr -s ' '; } > \"$WORK/load.out\" 2>&1",
	   sock, (long long)first, pids[0], pids[1], pids[2], pids[3], pids[0]);
	char *out = sh_out("cat \"$WORK/load.out\"");
	/* one line of codes: all 1000 answered 200 */
	ck_assert_msg(!strcmp(out, "export=0\n 1000 200\n"), "requests: %s", out);
	free(out);
	for (int i = 0; i < 4; i++) {
		char *post = sh_out("cat \"$WORK/post.%d\"", pids[i]);
		json_t *j = json_loads(post, 0, NULL);
		ck_assert_msg(j && json_integer_value(json_object_get(j, "id")) > 0, "post %d: %s", pids[i], post);
		r = wait_job(json_integer_value(json_object_get(j, "id")));
		ck_assert_msg(!strcmp(json_string_value(json_object_get(r.json, "state")), "done"), "%s", r.body);
		resp_free(&r);
		json_decref(j);
		free(post);
	}
	/* the export holds every file of the snapshot */
	char path[64];
	snprintf(path, sizeof(path), "/v1/snapshots/%d/1", pids[0]);
	r = http("GET", path, NULL);
	size_t nfiles = json_array_size(json_object_get(r.json, "files"));
	resp_free(&r);
	char *n = sh_out("tar tf \"$WORK/x.tar\" | wc -l");
	ck_assert_msg((size_t)atol(n) == nfiles, "export: %s entries, snapshot %zu files", n, nfiles);
	free(n);
	/* and their bytes: unpacked (sparse entries and all), the tree is
	 * the mount's snapshot directory, file by file */
	ck_assert_int_eq(sh("mkdir \"$WORK/x\" && tar xf \"$WORK/x.tar\" -C \"$WORK/x\" && diff -r \"$WORK/x\" \"$MNT/%d/1\"",
			    pids[0]),
			 0);
	for (int i = 0; i < 4; i++) {
		char *v = target_verdict(dirs[i]);
		ck_assert_str_eq(v, "ok\n");
		free(v);
	}
	unmount_api();
}
END_TEST

/* 411: a job cannot start; the request says so and the target is as it
 * was. */
START_TEST(test_fault_job)
{
	char dir[PATH_MAX], path[128];
	pid_t pid;

	setenv("CKPTFS_FAULT", "411", 1);
	mount_api();
	unsetenv("CKPTFS_FAULT");
	pid = target_start(dir);
	snprintf(path, sizeof(path), "/v1/processes/%d/checkpoints", pid);
	struct resp r = http("POST", path, "{}");
	assert_problem(&r, 503, "cannot start a checkpoint", "fault 411");
	resp_free(&r);
	ck_assert_int_eq(count_snapshots(), 0);
	char *v = target_verdict(dir);
	ck_assert_str_eq(v, "ok\n");
	free(v);
	unmount_api();
}
END_TEST

/* 433: a store read fails half way through an export: the stream ends
 * short of its Content-Length (curl says so), the daemon says why,
 * naming the snapshot, a restore of the snapshot (the same stream, into
 * the import) fails without running anything, and the process, which
 * goes on running, passes its own check. */
START_TEST(test_fault_export)
{
	char dir[PATH_MAX], body[128], want[64];
	unsigned long long size = 0, length = 0;
	pid_t pid;

	setenv("CKPTFS_FAULT", "433", 1);
	mount_api();
	unsetenv("CKPTFS_FAULT");
	pid = target_start(dir);
	json_int_t id = start_checkpoint(pid, "{\"mode\": \"run\"}");
	struct resp r = wait_job(id);
	ck_assert_msg(!strcmp(json_string_value(json_object_get(r.json, "state")), "done"), "%s", r.body);
	resp_free(&r);

	char *out = sh_out("cd \"$WORK\" && curl -sS --unix-socket '%s' -D h.txt -o f.tar "
			   "http://localhost/v1/snapshots/%d/1/export 2>/dev/null; echo rc=$?; stat -c %%s f.tar; "
			   "sed -n 's/^Content-Length: \\([0-9]*\\).*/\\1/p' h.txt",
			   sock, pid);
	/* 18: CURLE_PARTIAL_FILE, fewer bytes than announced */
	ck_assert_msg(sscanf(out, "rc=18\n%llu\n%llu", &size, &length) == 2 && size < length,
		      "export with a read failing: %s", out);
	free(out);
	snprintf(want, sizeof(want), "snapshot %d/1: export ended early", pid);
	out = sh_out("cat '%s/daemon.log'", H.base);
	ck_assert_msg(strstr(out, want) && strstr(out, "injected fault"), "log: %s", out);
	free(out);

	snprintf(body, sizeof(body), "{\"name\":\"cut\",\"snapshot\":\"%d/1\"}", pid);
	r = http("POST", "/v1/restores", body);
	ck_assert_msg(r.code == 422, "restore of a stream cut short: %d %s", r.code, r.body);
	resp_free(&r);
	r = http("GET", "/v1/restores/cut", NULL);
	ck_assert_msg(r.code == 404, "restore of a stream cut short: %d %s", r.code, r.body);
	resp_free(&r);

	ck_assert_int_eq(count_snapshots(), 1);
	ck_assert_int_eq(kill(pid, 0), 0);
	char *v = target_verdict(dir);
	ck_assert_str_eq(v, "ok\n");
	free(v);
	unmount_api();
}
END_TEST

/* 410: the socket named with -o api= cannot be set up: the daemon says
 * why and does not stay mounted. */
START_TEST(test_fault_listen)
{
	char *out = sh_out("CKPTFS_FAULT=410 timeout 30 \"$CKPTFS\" -f -o store=\"$STORE\",api=%s/api.sock \"$MNT\" 2>&1; echo rc=$?",
			   H.base);
	ck_assert_msg(strstr(out, "injected fault") && !strstr(out, "rc=0"), "%s", out);
	ck_assert(!harness_mounted(H.mnt));
	free(out);
	/* a bad path, without faults */
	out = sh_out("timeout 30 \"$CKPTFS\" -f -o store=\"$STORE\",api=%s/%0200d/api.sock \"$MNT\" 2>&1; echo rc=$?",
		     H.base, 0);
	ck_assert_msg(strstr(out, "api socket") && !strstr(out, "rc=0"), "%s", out);
	ck_assert(!harness_mounted(H.mnt));
	free(out);
}
END_TEST

/* SIGTERM while files of the mount are open (a directory listing, a
 * status and the README held by a shell, a file half copied into a
 * restore): the kernel sends no release for them, and the daemon still
 * exits 0, freeing their handles (under the sanitizers, a leak makes it
 * exit otherwise). */
START_TEST(test_sigterm_open)
{
	mount_api();
	ck_assert_int_eq(sh("mkdir \"$MNT/restore/half\""), 0);
	ck_assert_int_eq(sh("cd \"$MNT\" && { sleep 600 3<README 4<restore/half/status 5>restore/half/manifest 6<. & "
			    "echo $! > \"$WORK/holder.pid\"; }"),
			 0);
	/* the holder has them open once they are listed in its fd dir */
	bool open = false;
	for (int i = 0; i < 500 && !open; i++) {
		open = sh("test -e /proc/$(cat \"$WORK/holder.pid\")/fd/6") == 0;
		if (!open)
			usleep(10 * 1000);
	}
	ck_assert_msg(open, "the holder did not open the files");
	ck_assert_int_eq(kill(H.daemon, SIGTERM), 0);
	int st = -1;
	for (int i = 0; i < 3000; i++) {
		pid_t r = waitpid(H.daemon, &st, WNOHANG);
		if (r == H.daemon)
			break;
		st = -1;
		usleep(10 * 1000);
	}
	sh("kill $(cat \"$WORK/holder.pid\")");
	if (st == -1) {
		kill(H.daemon, SIGKILL);
		waitpid(H.daemon, NULL, 0);
	}
	H.daemon = 0;
	sh("fusermount3 -uz \"$MNT\" 2>/dev/null");
	char *log = sh_out("tail -30 '%s/daemon.log'", H.base);
	ck_assert_msg(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0, "the daemon ended with %#x; log:\n%s", st,
		      log);
	free(log);
	*strrchr(sock, '/') = 0;
	sh("rm -rf '%s'", sock);
}
END_TEST

int main(void)
{
	Suite *s;

	harness_require();
	if (system("command -v curl >/dev/null") != 0) {
		printf("SKIP: no curl\n");
		return 77;
	}
	s = suite_create("fs-api");
	harness_add_unmounted(s, "bad_input", test_bad_input, 120);
	harness_add_unmounted(s, "fault_listen", test_fault_listen, 60);
	harness_add_unmounted(s, "bad_tar", test_bad_tar, 120);
	harness_add_unmounted(s, "tcp_token", test_tcp_token, 60);
	harness_add_unmounted(s, "socket_and_tcp", test_socket_and_tcp, 120);
	harness_add_unmounted(s, "slow_client", test_slow_client, 120);
	harness_add_unmounted(s, "sigterm_open", test_sigterm_open, 120);
	if (HAVE_ENGINE) {
		harness_add_unmounted(s, "checkpoint_job", test_checkpoint_job, 120);
		harness_add_unmounted(s, "other_user", test_other_user, 120);
		harness_add_unmounted(s, "fault_job", test_fault_job, 120);
		harness_add_unmounted(s, "fault_export", test_fault_export, 120);
		harness_add_unmounted(s, "export_import", test_export_import, 180);
		harness_add_unmounted(s, "restore_stored", test_restore_stored, 120);
		harness_add_unmounted(s, "load", test_load, 240);
		harness_add_unmounted(s, "job_events", test_job_events, 180);
		harness_add_unmounted(s, "policy", test_policy, 180);
		harness_add_unmounted(s, "jobs_restart", test_jobs_restart, 180);
	} else {
		printf("note: the engine is not built: the cases that checkpoint are skipped\n");
		(void)test_checkpoint_job, (void)test_other_user, (void)test_fault_job, (void)test_fault_export,
			(void)test_export_import,
			(void)test_restore_stored, (void)test_load, (void)test_job_events, (void)test_policy, (void)test_jobs_restart;
	}
	return harness_run(s);
}
