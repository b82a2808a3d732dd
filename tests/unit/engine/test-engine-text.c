/*
 * engine/ text codecs: maps, regs/TID and process survive a round trip,
 * and malformed input is refused with EBADMSG and a detail, never
 * half-parsed (a snapshot is verified before anything runs from it).
 */
#include <check.h>
#include <sys/mman.h>

#include "engine/engine-int.h"

START_TEST(maps_round_trip)
{
	const char *proc =
		"555555554000-555555556000 r-xp 00001000 fe:00 1234    /usr/bin/x y\n"
		"555555556000-555555558000 rw-p 00003000 fe:00 1234    /usr/bin/x y\n"
		"555555600000-555555700000 rw-p 00000000 00:00 0       [heap]\n"
		"7f0000000000-7f0000010000 rw-s 00000000 00:01 77      /memfd:buf (deleted)\n"
		"7f0000010000-7f0000020000 ---p 00000000 00:00 0 \n"
		"7ffff7fc1000-7ffff7fc5000 r--p 00000000 00:00 0       [vvar]\n"
		"7ffffffde000-7ffffffff000 rw-p 00000000 00:00 0       [stack]\n";
	struct vma *v = NULL;
	size_t n = 0;
	ck_assert_int_eq(maps_parse_proc(proc, &v, &n), 0);
	ck_assert_int_eq(n, 7);
	ck_assert_int_eq(v[0].kind, VMA_FILE_PRIVATE);
	ck_assert_str_eq(v[0].path, "/usr/bin/x y");
	ck_assert_int_eq(v[0].prot, PROT_READ | PROT_EXEC);
	ck_assert_int_eq(v[3].kind, VMA_SHMEM);
	ck_assert(v[3].shared);
	ck_assert_int_eq(v[4].kind, VMA_ANON);
	ck_assert_int_eq(v[5].kind, VMA_VVAR);
	ck_assert(v[6].growsdown);

	/* saved ranges and file identity go through the image text */
	struct proc_image img = { .vmas = v, .nvmas = n };
	v[1].fsize = 99;
	v[1].mtime_sec = 1700000000;
	v[1].mtime_nsec = 5;
	v[1].runs = malloc(2 * sizeof(struct mem_run));
	v[1].runs[0] = (struct mem_run){ 0, 4096 };
	v[1].runs[1] = (struct mem_run){ 8192 - 4096, 4096 };
	v[1].nruns = 1;
	v[1].saved = 4096;
	v[4].noreserve = true;
	v[4].advice = VMA_ADV_LOCKED | VMA_ADV_DONTFORK | VMA_ADV_HUGEPAGE;
	v[4].hbm = true; /* its bytes under gpu/hbm/ */
	char *text = maps_format(&img);
	ck_assert_ptr_nonnull(text);
	struct vma *w = NULL;
	size_t m = 0;
	ck_assert_msg(maps_parse_image(text, &w, &m) == 0, "%s", err_msg());
	ck_assert_int_eq(m, n);
	for (size_t i = 0; i < n; i++) {
		ck_assert_uint_eq(w[i].start, v[i].start);
		ck_assert_uint_eq(w[i].end, v[i].end);
		ck_assert_int_eq(w[i].kind, v[i].kind);
		ck_assert_int_eq(w[i].prot, v[i].prot);
		ck_assert_str_eq(w[i].path, v[i].path);
		ck_assert_uint_eq(w[i].saved, v[i].saved);
		ck_assert_int_eq(w[i].growsdown, v[i].growsdown);
		ck_assert_int_eq(w[i].noreserve, v[i].noreserve);
		ck_assert_uint_eq(w[i].advice, v[i].advice);
		ck_assert_int_eq(w[i].hbm, v[i].hbm);
	}
	ck_assert_ptr_nonnull(strstr(text, " advice=hugepage,dontfork,locked "));
	/* the file holding an area's bytes */
	char name[VMA_FILE_NAME_MAX];
	vma_file_name(&w[4], name, sizeof(name));
	ck_assert_str_eq(name, "gpu/hbm/00007f0000010000-00007f0000020000");
	vma_file_name(&w[6], name, sizeof(name));
	ck_assert_str_eq(name, "memory/00007ffffffde000-00007ffffffff000");
	ck_assert_uint_eq(w[1].fsize, 99);
	ck_assert_int_eq(w[1].mtime_nsec, 5);
	ck_assert_int_eq(w[1].nruns, 1);
	ck_assert_uint_eq(w[1].runs[0].len, 4096);
	free(text);
	vmas_free(w, m);
	/* a newer writer's advice words are ignored, the known ones kept */
	w = NULL;
	m = 0;
	ck_assert_int_eq(maps_parse_image("1000-2000 rw-p 00000000 00:00 0 kind=anon saved=0 advice=someday,dontdump\n",
					  &w, &m), 0);
	ck_assert_uint_eq(w[0].advice, VMA_ADV_DONTDUMP);
	vmas_free(w, m);
	vmas_free(v, n);
}
END_TEST

START_TEST(maps_refuses_garbage)
{
	static const char *bad[] = {
		"zzzz\n",
		/* no kind */
		"1000-2000 rw-p 00000000 00:00 0 saved=0\n",
		/* saves more than its size */
		"1000-2000 rw-p 00000000 00:00 0 kind=anon saved=8192\n",
		/* out of order */
		"3000-4000 rw-p 00000000 00:00 0 kind=anon saved=0\n"
		"1000-2000 rw-p 00000000 00:00 0 kind=anon saved=0\n",
		/* a file area without a path */
		"1000-2000 rw-p 00000000 00:00 0 kind=file-private saved=0\n",
		/* pages outside the area */
		"1000-2000 rw-p 00000000 00:00 0 kind=file-private saved=4096 pages=1000+1000 /x\n",
		/* unaligned */
		"1000-2800 rw-p 00000000 00:00 0 kind=anon saved=0\n",
		/* bytes in a place this reader does not know */
		"1000-2000 rw-p 00000000 00:00 0 kind=anon saved=4096 at=gpu/other\n",
		/* device memory only in private anonymous areas */
		"1000-2000 rw-s 00000000 00:01 7 kind=shmem saved=4096 at=gpu/hbm /memfd:x (deleted)\n",
		"1000-2000 rw-p 00000000 fe:00 7 kind=file-private saved=0 at=gpu/hbm /x\n",
	};
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		struct vma *v = NULL;
		size_t n = 0;
		err_clear();
		ck_assert_msg(maps_parse_image(bad[i], &v, &n) == -EBADMSG, "accepted: %s", bad[i]);
		ck_assert_str_ne(err_msg(), "");
	}
}
END_TEST

START_TEST(regs_round_trip)
{
	struct thread_image t = { .tid = 4321, .sigmask = 0x5000, .robust_head = 0x7f00, .robust_len = 24 };
	strcpy(t.comm, "worker 1");
	t.regs.rip = 0x401000;
	t.regs.orig_rax = (unsigned long long)-1;
	t.regs.rax = (unsigned long long)-ENGINE_ERESTARTSYS;
	t.regs.fs_base = 0x7ffff7d8a740;
	t.has_rseq = true;
	t.rseq_addr = 0x7ffff7d8ae00;
	t.rseq_len = 32;
	t.rseq_sig = 0x53053053;
	t.altstack_flags = SS_DISABLE;
	t.xstate_len = 1024;
	t.xstate = calloc(1, 1024);
	for (int i = 0; i < 1024; i++)
		t.xstate[i] = (uint8_t)(i * 7);
	t.npending = 1;
	t.pending = calloc(1, sizeof(*t.pending));
	t.pending[0].info.si_signo = SIGTERM;
	t.pending[0].info.si_code = -6;

	char *text = thread_format(&t);
	ck_assert_ptr_nonnull(text);
	ck_assert_ptr_nonnull(strstr(text, "\nrip 0x401000\n"));
	struct thread_image u = { 0 };
	ck_assert_msg(thread_parse(text, "regs/4321", &u) == 0, "%s", err_msg());
	ck_assert_int_eq(u.tid, 4321);
	ck_assert_str_eq(u.comm, "worker 1");
	ck_assert(!memcmp(&u.regs, &t.regs, sizeof(t.regs)));
	ck_assert_uint_eq(u.sigmask, 0x5000);
	ck_assert_uint_eq(u.rseq_sig, 0x53053053);
	ck_assert_int_eq(u.xstate_len, 1024);
	ck_assert(!memcmp(u.xstate, t.xstate, 1024));
	ck_assert_int_eq(u.npending, 1);
	ck_assert_int_eq(u.pending[0].info.si_signo, SIGTERM);
	ck_assert_int_eq(u.pending[0].info.si_code, -6);

	/* a missing register is refused, naming it */
	char *cut = strstr(text, "rsp 0x");
	memcpy(cut, "xxx", 3);
	struct thread_image z = { 0 };
	ck_assert_int_eq(thread_parse(text, "regs/4321", &z), -EBADMSG);
	ck_assert_ptr_nonnull(strstr(err_msg(), "rsp"));
	thread_image_free(&z);
	free(text);
	thread_image_free(&u);
	thread_image_free(&t);
}
END_TEST

START_TEST(process_round_trip)
{
	struct proc_image p = { .pid = 77, .umask = 022, .personality = 0x8 };
	strcpy(p.comm, "python3");
	p.exe = strdup("/usr/bin/python3.11");
	p.cwd = strdup("/home/a b");
	p.cmdline = strdup("python3 x.py");
	p.creds = strdup("Uid: 0 0 0 0");
	p.nthreads = 2;
	p.threads = calloc(2, sizeof(*p.threads));
	p.threads[0].tid = 77;
	p.threads[1].tid = 78;
	p.mm.brk = 0x555555600000;
	p.rlim[RLIMIT_NOFILE].rlim_cur = 1024;
	p.rlim[RLIMIT_NOFILE].rlim_max = RLIM_INFINITY;
	p.has_sigact = true;
	p.sigact[SIGUSR1] = (struct ksigaction){ 0x401234, 0x14000004, 0x7f0000001000, 0x800 };
	p.itimer[0].it_interval.tv_usec = 20000;
	p.auxv_len = 16;
	p.auxv = calloc(1, 16);
	p.auxv[0] = 6;
	p.stopped = true;
	p.attrs = (struct proc_attrs){ -500, 1, 3, 0x14, 4242, 1, 1 };
	p.threads[1].timerslack = 7777;
	p.threads[0].sched = (struct thread_sched){ .valid = true, .policy = SCHED_BATCH, .nice = 7, .util_max = 1024 };
	CPU_SET(0, &p.threads[0].sched.cpus);
	CPU_SET(2, &p.threads[0].sched.cpus);
	CPU_SET(3, &p.threads[0].sched.cpus);
	p.threads[1].sched = (struct thread_sched){ .valid = true, .policy = SCHED_RR, .rtprio = 10,
						    .reset_on_fork = true, .util_min = 100, .util_max = 900 };
	CPU_SET(1, &p.threads[1].sched.cpus);
	p.threads[1].sw = (struct thread_switches){ .spec = { 0x5, 0, 0x9 }, .tsc_sigsegv = true, .mce = 2 };
	p.threads[1].pdeathsig = SIGURG;
	memset(p.vdso, 'a', 64);
	char *text = process_format(&p);
	ck_assert_ptr_nonnull(text);
	struct proc_image q = { 0 };
	ck_assert_msg(process_parse(text, &q) == 0, "%s", err_msg());
	ck_assert_int_eq(q.pid, 77);
	ck_assert_str_eq(q.cwd, "/home/a b");
	ck_assert_int_eq(q.nthreads, 2);
	ck_assert_int_eq(q.threads[1].tid, 78);
	ck_assert_uint_eq(q.mm.brk, 0x555555600000);
	ck_assert_uint_eq(q.rlim[RLIMIT_NOFILE].rlim_max, RLIM_INFINITY);
	ck_assert_uint_eq(q.sigact[SIGUSR1].flags, 0x14000004);
	ck_assert_int_eq(q.itimer[0].it_interval.tv_usec, 20000);
	ck_assert_int_eq(q.auxv_len, 16);
	ck_assert_int_eq(q.umask, 022);
	ck_assert(q.stopped);
	ck_assert_int_eq(strlen(q.vdso), 64);
	ck_assert_int_eq(q.attrs.oom_score_adj, -500);
	ck_assert_int_eq(q.attrs.child_subreaper, 1);
	ck_assert_int_eq(q.attrs.thp_disable, 3);
	ck_assert_int_eq(q.attrs.membarrier, 0x14);
	ck_assert_int_eq(q.attrs.loginuid, 4242);
	ck_assert_int_eq(q.attrs.mdwe, 1);
	ck_assert_int_eq(q.threads[0].timerslack, 0);
	ck_assert_int_eq(q.threads[1].timerslack, 7777);
	ck_assert_int_eq(q.threads[1].pdeathsig, SIGURG);
	ck_assert_int_eq(q.attrs.memory_merge, 1);
	ck_assert(q.threads[0].sched.valid);
	ck_assert_int_eq(q.threads[0].sched.policy, SCHED_BATCH);
	ck_assert_int_eq(q.threads[0].sched.nice, 7);
	ck_assert(!q.threads[0].sched.reset_on_fork);
	ck_assert_int_eq(CPU_COUNT(&q.threads[0].sched.cpus), 3);
	ck_assert(CPU_ISSET(0, &q.threads[0].sched.cpus) && CPU_ISSET(3, &q.threads[0].sched.cpus));
	ck_assert_msg(strstr(text, "thread_sched 77 batch nice=7 prio=0 util=0-1024 cpus=0,2-3\n"), "%s", text);
	ck_assert_int_eq(q.threads[1].sched.policy, SCHED_RR);
	ck_assert_int_eq(q.threads[1].sched.rtprio, 10);
	ck_assert(q.threads[1].sched.reset_on_fork);
	ck_assert_int_eq(q.threads[1].sched.util_min, 100);
	ck_assert_int_eq(q.threads[1].sched.util_max, 900);
	ck_assert(CPU_ISSET(1, &q.threads[1].sched.cpus) && CPU_COUNT(&q.threads[1].sched.cpus) == 1);
	ck_assert_int_eq(q.threads[1].sw.spec[0], 0x5);
	ck_assert_int_eq(q.threads[1].sw.spec[1], 0);
	ck_assert_int_eq(q.threads[1].sw.spec[2], 0x9);
	ck_assert(q.threads[1].sw.tsc_sigsegv);
	ck_assert_int_eq(q.threads[1].sw.mce, 2);
	ck_assert(!q.threads[0].sw.tsc_sigsegv && !q.threads[0].sw.mce);
	free(text);
	proc_image_free(&q);

	/* an older snapshot: nothing recorded, nothing set by a restore */
	struct proc_image o = { 0 };
	ck_assert_int_eq(process_parse("pid 5\nexe /x\ncwd /\nthreads 5\nmm 0 0 0 0 0 0 0 0 0 0 0\n", &o), 0);
	ck_assert_int_eq(o.attrs.oom_score_adj, INT32_MIN);
	ck_assert_int_eq(o.attrs.child_subreaper, -1);
	ck_assert_int_eq(o.attrs.thp_disable, -1);
	ck_assert_int_eq(o.attrs.membarrier, -1);
	ck_assert_int_eq(o.attrs.loginuid, -1);
	ck_assert_int_eq(o.attrs.memory_merge, -1);
	ck_assert(!o.threads[0].sched.valid);
	proc_image_free(&o);
	/* bad scheduling lines */
	static const char *const bad[] = {
		"thread_sched 5 deadline nice=0 prio=0 util=0-1024 cpus=0\n",
		"thread_sched 5 other nice=30 prio=0 util=0-1024 cpus=0\n",
		"thread_sched 5 other nice=0 prio=0 util=0-1024 cpus=\n",
		"thread_sched 5 other nice=0 prio=0 util=0-2000 cpus=0\n",
		"thread_prctl 5 tsc=maybe\n",
		"thread_prctl 5 spec_store_bypass=zz\n",
		"thread_prctl 6 mce=late\n",
	};
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		struct proc_image x = { 0 };
		char t[256];
		snprintf(t, sizeof(t), "pid 5\nexe /x\ncwd /\nthreads 5\n%smm 0 0 0 0 0 0 0 0 0 0 0\n", bad[i]);
		ck_assert_msg(process_parse(t, &x) == -EBADMSG, "accepted: %s", bad[i]);
		proc_image_free(&x);
	}
	/* settings for a thread the snapshot does not have */
	struct proc_image u = { 0 };
	ck_assert_int_eq(process_parse("pid 5\nexe /x\ncwd /\nthreads 5\nthread_attrs 6 50000 0\n"
				       "mm 0 0 0 0 0 0 0 0 0 0 0\n", &u),
			 -EBADMSG);
	proc_image_free(&u);

	/* the leader must come first */
	struct proc_image r = { 0 };
	ck_assert_int_eq(process_parse("pid 5\nexe /x\ncwd /\nthreads 6 5\nmm 0 0 0 0 0 0 0 0 0 0 0\n", &r),
			 -EBADMSG);
	proc_image_free(&r);
	proc_image_free(&p);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("engine-text");
	TCase *c = tcase_create("maps_round_trip");
	tcase_add_test(c, maps_round_trip);
	suite_add_tcase(s, c);
	c = tcase_create("maps_refuses_garbage");
	tcase_add_test(c, maps_refuses_garbage);
	suite_add_tcase(s, c);
	c = tcase_create("regs_round_trip");
	tcase_add_test(c, regs_round_trip);
	suite_add_tcase(s, c);
	c = tcase_create("process_round_trip");
	tcase_add_test(c, process_round_trip);
	suite_add_tcase(s, c);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
