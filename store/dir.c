/*
 * The directory backend (docs/FORMAT.md, "The snapshot directory"). Being
 * written: until then it opens nothing.
 */
#include "store/store-int.h"

int dir_store_open(const char *dir, struct store **ret)
{
	return err_set(-EOPNOTSUPP, "%s: the directory backend is not built yet", dir);
}
