/*
 * Credentials per thread (run as root). The main thread becomes nobody
 * (uid and gid 65534, groups 65534 and 4242) keeping CAP_NET_BIND_SERVICE
 * permitted, effective, inheritable and ambient, with CAP_SYS_MODULE out
 * of its bounding set and securebits KEEP_CAPS|NOROOT; the second thread
 * becomes uid 65534, gid 4242, group 4242, with CAP_NET_RAW permitted
 * only, securebits KEEP_CAPS and no_new_privs. Raw system calls: libc's
 * set*id would change every thread. After restore each thread checks its
 * own ids, groups, capability sets, bounding set, ambient set,
 * securebits and no_new_privs, and the process its dumpable flag, as they
 * were. READY and RESULT's directory must be writable by nobody.
 */
#include <linux/capability.h>
#include <linux/securebits.h>
#include <pthread.h>
#include <sys/prctl.h>

#include "target.h"

#define BIT(c) (1ull << (c))

struct want {
	uid_t uid;
	gid_t gid;
	gid_t groups[2];
	int ngroups;
	uint64_t prm, eff, inh, amb;
	int bnd_dropped; /* a capability out of the bounding set, or -1 */
	int securebits;
	int nnp;
};

static const struct want main_want = {
	65534, 65534, { 4242, 65534 }, 2,
	BIT(CAP_NET_BIND_SERVICE), BIT(CAP_NET_BIND_SERVICE), BIT(CAP_NET_BIND_SERVICE), BIT(CAP_NET_BIND_SERVICE),
	CAP_SYS_MODULE, SECBIT_KEEP_CAPS | SECBIT_NOROOT, 0,
};
static const struct want second_want = {
	65534, 4242, { 4242 }, 1, BIT(CAP_NET_RAW), 0, 0, 0, -1, SECBIT_KEEP_CAPS, 1,
};

static volatile int stage;
static uint64_t bounding; /* the bounding set we started with */
static char second_fail[512];

static int capset_raw(uint64_t eff, uint64_t prm, uint64_t inh)
{
	struct __user_cap_header_struct h = { _LINUX_CAPABILITY_VERSION_3, 0 };
	struct __user_cap_data_struct d[2] = {
		{ (uint32_t)eff, (uint32_t)prm, (uint32_t)inh },
		{ (uint32_t)(eff >> 32), (uint32_t)(prm >> 32), (uint32_t)(inh >> 32) },
	};
	return (int)syscall(SYS_capset, &h, d);
}

/* Makes the calling thread what w says; "" or what failed. */
static const char *become(const struct want *w)
{
	if (w->bnd_dropped >= 0 && prctl(PR_CAPBSET_DROP, w->bnd_dropped, 0, 0, 0) < 0)
		return "PR_CAPBSET_DROP";
	if (prctl(PR_SET_SECUREBITS, w->securebits, 0, 0, 0) < 0)
		return "PR_SET_SECUREBITS";
	if (syscall(SYS_setgroups, w->ngroups, w->groups) < 0)
		return "setgroups";
	if (syscall(SYS_setresgid, w->gid, w->gid, w->gid) < 0)
		return "setresgid";
	if (syscall(SYS_setresuid, w->uid, w->uid, w->uid) < 0)
		return "setresuid";
	if (capset_raw(w->eff, w->prm, w->inh) < 0)
		return "capset";
	for (int c = 0; c < 64; c++)
		if ((w->amb & BIT(c)) && prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, c, 0, 0) < 0)
			return "PR_CAP_AMBIENT_RAISE";
	if (w->nnp && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		return "PR_SET_NO_NEW_PRIVS";
	return "";
}

/* The calling thread against w; "" or what differs. */
static const char *check(const struct want *w)
{
	static char why[256];
	uid_t r, e, s;
	gid_t gr, ge, gs, g[8];
	if (syscall(SYS_getresuid, &r, &e, &s) < 0 || r != w->uid || e != w->uid || s != w->uid ||
	    syscall(SYS_setfsuid, -1) != (long)w->uid) {
		snprintf(why, sizeof(why), "uids %u %u %u, want %u", r, e, s, w->uid);
		return why;
	}
	if (syscall(SYS_getresgid, &gr, &ge, &gs) < 0 || gr != w->gid || ge != w->gid || gs != w->gid ||
	    syscall(SYS_setfsgid, -1) != (long)w->gid) {
		snprintf(why, sizeof(why), "gids %u %u %u, want %u", gr, ge, gs, w->gid);
		return why;
	}
	long n = syscall(SYS_getgroups, 8, g);
	if (n != w->ngroups || memcmp(g, w->groups, n * sizeof(gid_t))) {
		snprintf(why, sizeof(why), "%ld groups (first %u), want %d", n, n > 0 ? g[0] : 0, w->ngroups);
		return why;
	}
	struct __user_cap_header_struct h = { _LINUX_CAPABILITY_VERSION_3, 0 };
	struct __user_cap_data_struct d[2];
	if (syscall(SYS_capget, &h, d) < 0)
		return "capget";
	uint64_t eff = d[0].effective | (uint64_t)d[1].effective << 32;
	uint64_t prm = d[0].permitted | (uint64_t)d[1].permitted << 32;
	uint64_t inh = d[0].inheritable | (uint64_t)d[1].inheritable << 32;
	if (eff != w->eff || prm != w->prm || inh != w->inh) {
		snprintf(why, sizeof(why), "caps eff %#llx prm %#llx inh %#llx, want %#llx %#llx %#llx",
			 (unsigned long long)eff, (unsigned long long)prm, (unsigned long long)inh,
			 (unsigned long long)w->eff, (unsigned long long)w->prm, (unsigned long long)w->inh);
		return why;
	}
	for (int c = 0; c <= CAP_LAST_CAP; c++) {
		if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_IS_SET, c, 0, 0) != !!(w->amb & BIT(c))) {
			snprintf(why, sizeof(why), "ambient capability %d is %s", c, w->amb & BIT(c) ? "not set" : "set");
			return why;
		}
		bool in = (bounding & BIT(c)) && c != w->bnd_dropped;
		if (prctl(PR_CAPBSET_READ, c, 0, 0, 0) != in) {
			snprintf(why, sizeof(why), "bounding set: capability %d is %s", c,
				 in ? "out" : "in it");
			return why;
		}
	}
	int sb = prctl(PR_GET_SECUREBITS, 0, 0, 0, 0);
	if (sb != w->securebits) {
		snprintf(why, sizeof(why), "securebits %#x, want %#x", sb, w->securebits);
		return why;
	}
	if (prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) != w->nnp)
		return w->nnp ? "no_new_privs is not set" : "no_new_privs is set";
	return "";
}

static void *second(void *arg)
{
	(void)arg;
	const char *w = become(&second_want);
	if (!*w)
		w = check(&second_want);
	if (*w)
		snprintf(second_fail, sizeof(second_fail), "second thread, setting up: %s", w);
	stage = 1;
	while (stage < 2) {
		struct timespec ts = { 0, 2000000 };
		nanosleep(&ts, NULL);
	}
	w = check(&second_want);
	if (*w)
		snprintf(second_fail, sizeof(second_fail), "second thread: %s", w);
	return NULL;
}

int main(int argc, char **argv)
{
	target_init(argc, argv, 0);
	if (getuid() != 0)
		target_verdict(0, "must start as root");
	for (int c = 0; c <= CAP_LAST_CAP; c++)
		if (prctl(PR_CAPBSET_READ, c, 0, 0, 0) == 1)
			bounding |= BIT(c);
	pthread_t t;
	pthread_create(&t, NULL, second, NULL);
	while (stage < 1)
		usleep(1000);
	if (second_fail[0])
		target_verdict(0, "%s", second_fail);
	const char *w = become(&main_want);
	if (!*w)
		w = check(&main_want);
	if (*w)
		target_verdict(0, "main thread, setting up: %s", w);
	/* the change of uid made the process not dumpable; so it stays */
	int dumpable = prctl(PR_GET_DUMPABLE, 0, 0, 0, 0);
	target_ready();
	target_wait_restored();
	w = check(&main_want);
	if (*w)
		target_verdict(0, "main thread: %s", w);
	if (prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) != dumpable)
		target_verdict(0, "dumpable is %d, was %d", prctl(PR_GET_DUMPABLE, 0, 0, 0, 0), dumpable);
	stage = 2;
	pthread_join(t, NULL);
	if (second_fail[0])
		target_verdict(0, "%s", second_fail);
	target_pass();
}
