/*
 * Fault injection by number (CKPTFS_FAULT), so tests reach error paths.
 * The variable is parsed once; counting hits is atomic so that sites in
 * worker threads fire exactly on the K-th hit.
 */
#include <pthread.h>
#include <stdatomic.h>

#include "common/common.h"

#define FAULT_SLOTS 16

struct fault_slot {
	int id;
	long nth;               /* fire on this hit only; 0: every hit */
	atomic_long hits;
};

static struct fault_slot slots[FAULT_SLOTS];
static int nslots;
static pthread_once_t once = PTHREAD_ONCE_INIT;

static void parse(void)
{
	const char *e = getenv("CKPTFS_FAULT");
	nslots = 0;
	while (e && *e && nslots < FAULT_SLOTS) {
		char *end;
		long id = strtol(e, &end, 10), nth = 0;
		if (end == e)
			break;
		if (*end == ':')
			nth = strtol(end + 1, &end, 10);
		slots[nslots].id = (int)id;
		slots[nslots].nth = nth;
		atomic_store(&slots[nslots].hits, 0);
		nslots++;
		e = *end == ',' ? end + 1 : end;
		if (*end != ',')
			break;
	}
}

void fault_reload(void)
{
	parse();
}

bool fault_hit(enum fault_id id)
{
	pthread_once(&once, parse);
	for (int i = 0; i < nslots; i++) {
		if (slots[i].id != (int)id)
			continue;
		long n = atomic_fetch_add(&slots[i].hits, 1) + 1;
		if (slots[i].nth == 0 || slots[i].nth == n) {
			log_debug("fault %d injected (hit %ld)", (int)id, n);
			return true;
		}
	}
	return false;
}
