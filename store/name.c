/*
 * Name checks for everything that enters the store from outside: snapshot
 * names and file paths inside a snapshot. Both end up as directory
 * entries (directory backend) or index keys (chunk store) and, once a
 * snapshot is copied out, as paths on someone's disk; so the rules are
 * strict enough that a name can never step out of its place: a small
 * character set, no empty, "." or ".." components, no leading or trailing
 * '/', bounded lengths.
 */
#include <limits.h>

#include "store/store-int.h"

#define NAME_MAX_LEN 255
#define PATH_MAX_LEN 1024
#define PATH_MAX_COMPONENTS 8
/* One component; also what Linux accepts for one directory entry. */
#define COMPONENT_MAX_LEN 255

static bool char_ok(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '.' || c == '_' || c == '-' || c == '@' || c == '+';
}

/* The detail quotes the name only when it is printable and short, so a
 * hostile name cannot fill a log line with control characters. */
static int bad(const char *what, const char *s, const char *why)
{
	bool printable = strlen(s) <= 128;
	for (const char *p = s; printable && *p; p++)
		printable = (unsigned char)*p >= 0x20 && (unsigned char)*p < 0x7f;
	if (printable)
		return err_set(-EINVAL, "invalid %s '%s': %s", what, s, why);
	return err_set(-EINVAL, "invalid %s: %s", what, why);
}

static int check(const char *s, const char *what, size_t max_len, unsigned max_components)
{
	unsigned ncomp = 0;
	size_t len;

	if (!s)
		return err_set(-EINVAL, "invalid %s: none given", what);
	len = strlen(s);
	if (len == 0)
		return bad(what, s, "empty");
	if (len > max_len)
		return bad(what, s, "too long");
	if (s[0] == '/')
		return bad(what, s, "absolute");

	for (const char *c = s; *c;) {
		const char *end = strchrnul(c, '/');
		size_t n = end - c;

		if (n == 0)
			return bad(what, s, "empty component");
		if (n > COMPONENT_MAX_LEN)
			return bad(what, s, "component too long");
		if ((n == 1 && c[0] == '.') || (n == 2 && c[0] == '.' && c[1] == '.'))
			return bad(what, s, "'.' or '..' component");
		for (const char *p = c; p < end; p++)
			if (!char_ok(*p))
				return bad(what, s, "character outside [A-Za-z0-9._@+-]");
		if (++ncomp > max_components)
			return bad(what, s, "too many components");
		if (*end == '/' && end[1] == 0)
			return bad(what, s, "trailing '/'");
		c = *end ? end + 1 : end;
	}
	return 0;
}

int name_check(const char *name, unsigned max_components)
{
	return check(name, "snapshot name", NAME_MAX_LEN, max_components);
}

int path_check(const char *path)
{
	return check(path, "path", PATH_MAX_LEN, PATH_MAX_COMPONENTS);
}
