/*
 * 8 threads taking turns on one mutex and condition variable, strictly
 * round-robin: after restore the turns go on, every thread's count is
 * within one of the others', and the counts add up to the total.
 */
#include <pthread.h>

#include "target.h"

#define N 8

static pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static long total, per[N];
static int stop;

static void *worker(void *arg)
{
	long i = (long)arg;
	char name[16];
	snprintf(name, sizeof(name), "worker-%ld", i);
	pthread_setname_np(pthread_self(), name);
	pthread_mutex_lock(&m);
	for (;;) {
		while (total % N != i && !stop)
			pthread_cond_wait(&cv, &m);
		if (stop)
			break;
		total++;
		per[i]++;
		pthread_cond_broadcast(&cv);
	}
	pthread_mutex_unlock(&m);
	return NULL;
}

static long get_total(void)
{
	pthread_mutex_lock(&m);
	long t = total;
	pthread_mutex_unlock(&m);
	return t;
}

static void msleep(int ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
	nanosleep(&ts, NULL);
}

int main(int argc, char **argv)
{
	target_init(argc, argv, 0);
	pthread_t t[N];
	for (long i = 0; i < N; i++)
		pthread_create(&t[i], NULL, worker, (void *)i);
	while (get_total() < 10000)
		msleep(1);
	target_ready();
	target_wait_restored();
	for (int i = 0; i < N; i++) {
		char name[16], want[16];
		snprintf(want, sizeof(want), "worker-%d", i);
		pthread_getname_np(t[i], name, sizeof(name));
		if (strcmp(name, want))
			target_verdict(0, "thread %d is named '%s'", i, name);
	}
	long at = get_total();
	for (int k = 0; get_total() < at + 2000; k++) {
		if (k > 20000)
			target_verdict(0, "threads made no progress after restore (%ld turns)", get_total() - at);
		msleep(1);
	}
	pthread_mutex_lock(&m);
	stop = 1;
	pthread_cond_broadcast(&cv);
	pthread_mutex_unlock(&m);
	for (int i = 0; i < N; i++)
		pthread_join(t[i], NULL);
	long sum = 0;
	for (int i = 0; i < N; i++) {
		sum += per[i];
		if (labs(per[i] - per[0]) > 1)
			target_verdict(0, "thread %d took %ld turns, thread 0 %ld", i, per[i], per[0]);
	}
	if (sum != total)
		target_verdict(0, "counts add up to %ld, total is %ld", sum, total);
	target_pass();
}
